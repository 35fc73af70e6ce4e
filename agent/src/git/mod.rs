//! Git on the host: one bare mirror per repository, a worktree per workspace.
//!
//! - [`layout`]: where mirrors, worktrees and the host's records of them live (the contract
//!   every part below shares);
//! - [`run`]: running `git` with a credential in its environment only, bounded in time, its
//!   failures classified into GIT_AUTH_FAILED or GIT_FAILED;
//! - [`verify`]: `worktree verify [--repair]`: what is wrong with each worktree, and its mending.

pub mod layout;
pub mod run;
pub mod verify;
