//! Answering a `DaemonLogs` request (both daemons serve it alike): the newest matching records
//! of this daemon's log in one response, or, when the query follows, a subscription whose first
//! frame is that backlog (possibly empty) and whose next frames are the records written after.
//!
//! Files are read on tokio's blocking threads; a follower polls its file every
//! [`FOLLOW_POLL`] and ends when the client goes away.

use std::time::Duration;

use tokio::sync::mpsc;

use super::file::LogFiles;
use super::read::{Follower, Matcher, backlog};
use crate::debug::LogQuery;
use crate::error::{ErrorCode, WireError};
use crate::message::Response;
use crate::transport::{Reply, Update};

/// How often a followed log is looked at for new lines.
pub const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// The answer to a `DaemonLogs(query)` about the log in `files`.
pub async fn answer(files: LogFiles, query: LogQuery) -> Reply {
    let matcher = match Matcher::new(&query) {
        Ok(matcher) => matcher,
        Err(bad) => return Reply::Once(Err(bad.to_wire())),
    };
    if !query.follow {
        let read = tokio::task::spawn_blocking({
            let files = files.clone();
            move || backlog(&files, &matcher)
        })
        .await;
        return Reply::Once(match read {
            Ok(Ok(found)) => {
                if found.skipped > 0 {
                    tracing::debug!(
                        skipped = found.skipped,
                        "log lines that are not records were skipped"
                    );
                }
                Ok(Response::LogRecords(found.records))
            }
            Ok(Err(error)) => Err(unreadable(&files, &error)),
            Err(_) => Err(WireError::new(
                ErrorCode::Internal,
                "reading the log failed",
            )),
        });
    }
    let (frames, receiver) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || follow(&files, matcher, &frames));
    Reply::Stream(receiver)
}

fn follow(files: &LogFiles, matcher: Matcher, frames: &mpsc::Sender<Update>) {
    let found = match backlog(files, &matcher) {
        Ok(found) => found,
        Err(error) => {
            let _ = frames.blocking_send(Box::new(Err(unreadable(files, &error))));
            return;
        }
    };
    if frames
        .blocking_send(Box::new(Ok(Response::LogRecords(found.records))))
        .is_err()
    {
        return;
    }
    let mut follower = Follower::new(files.clone(), matcher, found.reader);
    while !frames.is_closed() {
        match follower.poll() {
            Ok(records) if records.is_empty() => std::thread::sleep(FOLLOW_POLL),
            Ok(records) => {
                if frames
                    .blocking_send(Box::new(Ok(Response::LogRecords(records))))
                    .is_err()
                {
                    return;
                }
            }
            Err(error) => {
                let _ = frames.blocking_send(Box::new(Err(unreadable(files, &error))));
                return;
            }
        }
    }
}

fn unreadable(files: &LogFiles, error: &std::io::Error) -> WireError {
    WireError::new(
        ErrorCode::Internal,
        format!("cannot read the log in {}: {error}", files.dir().display()),
    )
}
