//! The messages on the daemon's socket: what a `nexus workspace sync` command asks ([`Control`])
//! and what the daemon answers ([`ControlAnswer`]), one JSON document per line each way. A
//! daemon outlives the command that started it, so a newer CLI may ask an older daemon: the JSON
//! is a contract, pinned by the tests below. How the daemon acts on them is the server's.

use std::path::PathBuf;

use nexus_protocol::WorkspaceName;
use nexus_protocol::clock::Timestamp;
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
    /// When its last cycle ended without an error (both sides then agreed, but for conflicts
    /// and refused changes). Absent from an older daemon's answer.
    #[serde(default)]
    pub last_sync: Option<Timestamp>,
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

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;

    fn workspace() -> WorkspaceName {
        WorkspaceName::new("web").unwrap_or_else(|e| panic!("{e}"))
    }

    fn status() -> SessionStatus {
        SessionStatus {
            workspace: workspace(),
            local: "/home/ada/web".into(),
            mode: Mode::TwoWaySafe,
            state: "watching".into(),
            cycles: 3,
            changes: 2,
            conflicts: vec![ConflictView {
                path: "a.txt".into(),
                local: Some("file".into()),
                remote: None,
            }],
            last_error: None,
            refused: vec!["refused to write l/f: l is a symlink".into()],
            last_sync: Some(Timestamp::from_millis(1_700_000_000_000)),
        }
    }

    /// The message's line is `expect`, and it reads back as the same message.
    fn check<T>(message: &T, expect: Expect)
    where
        T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let line = to_line(message).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            line.ends_with('\n') && !line.trim_end().contains('\n'),
            "{line:?}"
        );
        expect.assert_eq(&line);
        let back: T = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&back, message);
    }

    #[test]
    fn controls_are_one_json_line_each_and_read_back() {
        check(
            &Control::Start(SessionConfig {
                workspace: workspace(),
                local: "/home/ada/web".into(),
                mode: Mode::OneWayReplica,
                ignore: vec!["*.o".into()],
                ignore_vcs: true,
                settings: Settings {
                    coordinators: vec!["127.0.0.1:7000".into()],
                    ca: "/pki/ca.pem".into(),
                    cert: "/pki/ada.pem".into(),
                    key: "/pki/ada.key".into(),
                    request_id: None,
                },
            }),
            expect![[r#"
                {"Start":{"workspace":"web","local":"/home/ada/web","mode":"OneWayReplica","ignore":["*.o"],"ignore_vcs":true,"settings":{"coordinators":["127.0.0.1:7000"],"ca":"/pki/ca.pem","cert":"/pki/ada.pem","key":"/pki/ada.key"}}}
            "#]],
        );
        check(
            &Control::Status,
            expect![[r#"
            "Status"
        "#]],
        );
        check(
            &Control::Flush(workspace()),
            expect![[r#"
            {"Flush":"web"}
        "#]],
        );
        check(
            &Control::Resolve {
                workspace: workspace(),
                path: "src/a.txt".parse().unwrap_or_else(|e| panic!("{e}")),
                keep: Side::Beta,
            },
            expect![[r#"
                {"Resolve":{"workspace":"web","path":"src/a.txt","keep":"Beta"}}
            "#]],
        );
        check(
            &Control::Pause(workspace()),
            expect![[r#"
            {"Pause":"web"}
        "#]],
        );
        check(
            &Control::Resume(workspace()),
            expect![[r#"
            {"Resume":"web"}
        "#]],
        );
        check(
            &Control::Stop(workspace()),
            expect![[r#"
            {"Stop":"web"}
        "#]],
        );
    }

    #[test]
    fn answers_are_one_json_line_each_and_read_back() {
        check(
            &ControlAnswer::Sessions(vec![status()]),
            expect![[r#"
            {"Sessions":[{"workspace":"web","local":"/home/ada/web","mode":"TwoWaySafe","state":"watching","cycles":3,"changes":2,"conflicts":[{"path":"a.txt","local":"file","remote":null}],"last_error":null,"refused":["refused to write l/f: l is a symlink"],"last_sync":1700000000000}]}
        "#]],
        );
        check(
            &ControlAnswer::Session(status()),
            expect![[r#"
            {"Session":{"workspace":"web","local":"/home/ada/web","mode":"TwoWaySafe","state":"watching","cycles":3,"changes":2,"conflicts":[{"path":"a.txt","local":"file","remote":null}],"last_error":null,"refused":["refused to write l/f: l is a symlink"],"last_sync":1700000000000}}
        "#]],
        );
        check(
            &ControlAnswer::error(ErrorCode::SyncPaused, "the sync of web is paused"),
            expect![[r#"
                {"Error":{"code":"SYNC_PAUSED","message":"the sync of web is paused"}}
            "#]],
        );
    }

    #[test]
    fn an_older_daemons_status_reads_without_a_last_sync() {
        let line = r#"{"Session":{"workspace":"web","local":"/w","mode":"TwoWaySafe","state":"watching","cycles":1,"changes":0,"conflicts":[],"last_error":null,"refused":[]}}"#;
        match serde_json::from_str::<ControlAnswer>(line) {
            Ok(ControlAnswer::Session(status)) => assert_eq!(status.last_sync, None),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_line_that_is_not_a_control_does_not_read_as_one() {
        for line in ["", "{}", "\"Launch\"", "{\"Flush\":\"not a name!\"}"] {
            assert!(serde_json::from_str::<Control>(line).is_err(), "{line}");
        }
    }
}
