//! The per-user sync daemon: it runs a user's sync sessions in the background, so that they
//! outlive the command that started them, and answers the `nexus workspace sync` commands over a
//! Unix socket (one JSON request per line, one JSON answer per line).
//!
//! Each session is a task. It connects to the workspace's agent and watches the local directory,
//! a burst of events coalesced into one cycle. It hears of changes on the workspace's side from
//! the agent itself: beside the session a task holds a `WaitChange` open, which the agent answers
//! as soon as its watcher counts a change (or after 25 s), and the session then cycles as it does
//! for a local event. It still looks at the workspace's side every 10 s as a safety net, and
//! every 500 ms while the agent cannot be waited on (one older than `WaitChange`, or a wait that
//! failed). It saves what both sides agree on whenever that changes, so a daemon started again
//! carries on without copying anything again. Each session measures its initial sync and each
//! change's latency (`nexus_sync::measure`) and reports them, with its state, to the agent, which
//! exports them as metrics; another task beside the connection sends those reports, so they never
//! slow a cycle, and an agent too old to take them is simply not sent any more.
//!
//! The rooms:
//! - `control`: the messages on the socket, and how a message makes a line;
//! - `server`: the socket server, which starts, asks and stops sessions;
//! - `session`: one session's loop;
//! - `saved`: where the daemon keeps its socket, its log and its sessions' files, and those files;
//! - `client`: asking a running daemon.

mod client;
mod control;
mod saved;
mod server;
mod session;

use std::sync::{Mutex, MutexGuard, PoisonError};

pub use client::ask;
pub use control::{ConflictView, Control, ControlAnswer, SessionConfig, SessionStatus};
pub use saved::{LOG_MAX_BYTES, Paths};
pub use server::{DaemonError, run};

/// Locks a session's status even when a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each update is a single assignment: a panic cannot leave one half-made.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
