//! A user's current notices (an admin's maintenance window, a policy's warning about one of
//! their workspaces), printed on stderr once per command, never on stdout.
//!
//! Without a round trip of their own: the first connection a command makes to a coordinator
//! ([`crate::settings::Settings::connect`], which every command's coordinator requests go
//! through) also asks `WorkspaceRequest::Notices`, on a stream of its own beside the command's
//! first request, and the command prints them once its own work is done. By then the answer has
//! come (it left first); if it has not within [`WAIT`] of being asked, the command does not wait
//! for it (so a read that a follower answers during a failover, while the notices' read waits for
//! a leader, is not held back by them). A
//! coordinator that cannot answer (an older one, a failure) shows nothing, and says nothing.
//!
//! Asked only when [`enable`] was called: `main` does, for one command, unless
//! [`SILENCE`] is set (scripts) or the output is JSON and the command failed (stderr then holds
//! the error's JSON document, which tools parse).

use std::ffi::OsStr;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use nexus_protocol::RequestId;
use nexus_protocol::message::{Request, Response, WorkspaceRequest};
use nexus_protocol::model::Notice;
use nexus_protocol::transport::Connection;
use tokio::task::JoinHandle;

/// Set (to anything but empty or `0`) to print no notices: for scripts that read stderr.
pub const SILENCE: &str = "NEXUS_NO_NOTICES";

/// How long after asking a command that is done waits for its notices' answer, at most.
pub const WAIT: Duration = Duration::from_millis(300);

/// How long the notices' request may take on the wire.
const LIMIT: Duration = Duration::from_secs(5);

/// This command's notices: not asked yet, or under way.
#[derive(Debug, Default)]
enum Pending {
    #[default]
    Unasked,
    Asked(tokio::time::Instant, JoinHandle<Option<Vec<Notice>>>),
    Taken,
}

static PENDING: OnceLock<Mutex<Pending>> = OnceLock::new();

/// Whether `value` of [`SILENCE`] silences notices.
pub fn silenced(value: Option<&OsStr>) -> bool {
    value.is_some_and(|value| !value.is_empty() && value != "0")
}

/// Asks for this command's notices on the first connection it makes (once per process).
pub fn enable() {
    let _ = PENDING.set(Mutex::new(Pending::Unasked));
}

/// Called with every new coordinator connection: the first, when enabled, also asks for the
/// notices. Needs a Tokio runtime.
pub fn ask(connection: &Connection) {
    let Some(pending) = PENDING.get() else {
        return;
    };
    let mut pending = pending.lock().unwrap_or_else(PoisonError::into_inner);
    if !matches!(*pending, Pending::Unasked) {
        return;
    }
    let connection = connection.clone();
    let asked = tokio::time::Instant::now();
    *pending = Pending::Asked(
        asked,
        tokio::spawn(async move {
            let request = Request::Workspace(WorkspaceRequest::Notices);
            match connection
                .request_with(RequestId::random(), request, LIMIT)
                .await
            {
                Ok(Response::Notices(notices)) => Some(notices),
                Ok(_) | Err(_) => None,
            }
        }),
    );
}

/// The notices asked for, if their answer came within `wait` of their asking (or is there
/// now); once (later calls: none).
pub async fn collect(wait: Duration) -> Vec<Notice> {
    let Some(pending) = PENDING.get() else {
        return Vec::new();
    };
    let taken = std::mem::replace(
        &mut *pending.lock().unwrap_or_else(PoisonError::into_inner),
        Pending::Taken,
    );
    let Pending::Asked(asked, mut handle) = taken else {
        return Vec::new();
    };
    // An answer already there is taken even past the deadline: a timeout polls its future first.
    match tokio::time::timeout_at(asked + wait, &mut handle).await {
        Ok(Ok(Some(notices))) => notices,
        Ok(_) => Vec::new(),
        Err(_) => {
            handle.abort();
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_are_silenced_by_any_value_but_empty_or_zero() {
        assert!(!silenced(None));
        assert!(!silenced(Some(OsStr::new(""))));
        assert!(!silenced(Some(OsStr::new("0"))));
        assert!(silenced(Some(OsStr::new("1"))));
        assert!(silenced(Some(OsStr::new("yes"))));
    }
}
