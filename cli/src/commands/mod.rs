//! One module per command group. Each takes parsed arguments and the output format, talks to
//! whom it must, and prints its result; errors go back to `main` for rendering.

pub mod admin;
pub mod backup;
pub mod bundle;
pub mod ca;
pub mod config;
pub mod credentials;
pub mod events;
pub mod health;
pub mod host;
pub mod login;
pub mod logs;
pub mod maintenance;
pub mod mutagen;
pub mod notice;
pub mod orphans;
pub mod ping;
pub mod pki;
pub mod policies;
pub mod repair;
pub mod repo_view;
pub mod restore;
pub mod security;
pub mod sync;
pub mod trace;
pub mod up;
pub mod workspace;
pub mod worktree;
