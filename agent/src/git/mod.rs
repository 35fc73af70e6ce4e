//! Git on the host: one bare mirror per repository, a worktree per workspace.
//!
//! - [`layout`]: where mirrors, worktrees and the host's records of them live (the contract
//!   every part below shares);
//! - [`run`]: running `git` with a credential in its environment only, bounded in time, its
//!   failures classified into GIT_AUTH_FAILED or GIT_FAILED;
//! - [`mirror`]: the mirrors, fetched one at a time each, and a base resolved in them;
//! - [`worktree`]: a workspace's worktree made, kept across restarts, and removed;
//! - [`status`]: how a worktree stands (dirty files, ahead, behind);
//! - [`host`]: all of it as the reconciler and the endpoint use it, with the leader asked for
//!   credentials and told the facts;
//! - [`verify`]: `worktree verify [--repair]`: what is wrong with each worktree, and its mending.

pub mod host;
pub mod layout;
pub mod mirror;
pub mod run;
pub mod status;
pub mod verify;
pub mod worktree;

#[cfg(test)]
mod tests;
