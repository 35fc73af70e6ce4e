//! The messages on the daemon's socket: what a `nexus workspace sync` command asks ([`Control`])
//! and what the daemon answers ([`ControlAnswer`]), one JSON document per line each way. A
//! daemon outlives the command that started it, so a newer CLI may ask an older daemon: the JSON
//! is a contract, pinned by the tests below. How the daemon acts on them is the server's.

use std::path::PathBuf;

use nexus_protocol::WorkspaceName;
use nexus_protocol::error::ErrorCode;
use nexus_sync::{Mode, RelPath, Side};
use serde::{Deserialize, Serialize};

use crate::settings::Settings;

/// What a session is asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionConfig {
    pub workspace: WorkspaceName,
    pub local: PathBuf,
    pub mode: Mode,
    pub ignore: Vec<String>,
    pub ignore_vcs: bool,
    pub settings: Settings,
}

/// A session as `sync status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStatus {
    pub workspace: WorkspaceName,
    pub local: PathBuf,
    pub mode: Mode,
    /// connecting, watching, paused or failing.
    pub state: String,
    pub cycles: u64,
    pub changes: u64,
    pub conflicts: Vec<ConflictView>,
    pub last_error: Option<String>,
    /// Changes refused for good (they would leave a root), most recent first.
    pub refused: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictView {
    pub path: String,
    pub local: Option<String>,
    pub remote: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    Start(SessionConfig),
    Status,
    Flush(WorkspaceName),
    Resolve {
        workspace: WorkspaceName,
        path: RelPath,
        keep: Side,
    },
    Pause(WorkspaceName),
    Resume(WorkspaceName),
    Stop(WorkspaceName),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlAnswer {
    Sessions(Vec<SessionStatus>),
    Session(SessionStatus),
    Error { code: ErrorCode, message: String },
}

impl ControlAnswer {
    pub(crate) fn error(code: ErrorCode, message: impl Into<String>) -> ControlAnswer {
        ControlAnswer::Error {
            code,
            message: message.into(),
        }
    }
}

/// A message as it goes on the socket: its JSON, then a newline.
pub(crate) fn to_line<T: Serialize>(message: &T) -> Result<String, serde_json::Error> {
    let mut line = serde_json::to_string(message)?;
    line.push('\n');
    Ok(line)
}
