//! `nexus admin logs` on a coordinator: this node's own log records (admins only), read from its
//! log directory. A followed log is a subscription: the backlog, then what is written after.

use nexus_protocol::debug::LogQuery;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::identity::IdentityKind;
use nexus_protocol::logging::serve;
use nexus_protocol::transport::{Peer, Reply};

use super::Service;
use super::checks::require;

impl Service {
    /// The records of this node's log that `query` selects.
    pub(super) async fn daemon_logs(&self, peer: &Peer, query: LogQuery) -> Reply {
        if let Err(error) = require(peer, &[IdentityKind::Admin]) {
            return Reply::Once(Err(error));
        }
        let Some(files) = &self.logs else {
            return Reply::Once(Err(WireError::new(
                ErrorCode::Unsupported,
                "this coordinator keeps no log files (it runs inside another program)",
            )));
        };
        serve::answer(files.clone(), query).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use nexus_protocol::RequestId;
    use nexus_protocol::debug::{LogLevel, LogRecord};
    use nexus_protocol::identity::Role;
    use nexus_protocol::logging::{LogFiles, record};
    use nexus_protocol::message::{AdminRequest, Request, Response};
    use nexus_protocol::transport::Handler;

    use super::super::testing::{one_node, user};
    use super::*;

    fn query(follow: bool) -> LogQuery {
        LogQuery {
            since_us: None,
            until_us: None,
            min_level: LogLevel::Warn,
            grep: None,
            request: None,
            workspace: None,
            limit: 10,
            follow,
            spans_only: false,
        }
    }

    fn line(at_us: u64, level: LogLevel, message: &str) -> String {
        record::to_line(&LogRecord {
            at_us,
            level,
            target: "nexus_coordinator::service".into(),
            source: "coordinator-1".into(),
            request_id: None,
            workspace: None,
            message: message.into(),
            fields: vec![],
            span: None,
        })
    }

    fn messages(response: Response) -> Vec<String> {
        match response {
            Response::LogRecords(records) => records.into_iter().map(|r| r.message).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn admins_read_and_follow_this_nodes_log() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::for_source(dir.path(), "coordinator-1");
        std::fs::write(
            files.current(),
            line(1, LogLevel::Info, "quiet") + &line(2, LogLevel::Error, "loud"),
        )
        .unwrap();
        let (_dir, node, service) = one_node().await;
        let service = service.with_logs(files.clone());
        let admin = user(Role::Admin);
        let ask = |request| service.handle(&admin, RequestId::random(), request);
        let Reply::Once(Ok(answer)) =
            ask(Request::Admin(AdminRequest::DaemonLogs(query(false)))).await
        else {
            panic!("not one answer")
        };
        assert_eq!(messages(answer), vec!["loud"]);

        let Reply::Stream(mut frames) =
            ask(Request::Admin(AdminRequest::DaemonLogs(query(true)))).await
        else {
            panic!("not a stream")
        };
        let backlog = (*frames.recv().await.unwrap()).unwrap();
        assert_eq!(messages(backlog), vec!["loud"]);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(files.current())
            .unwrap();
        std::io::Write::write_all(&mut file, line(3, LogLevel::Warn, "later").as_bytes()).unwrap();
        let next = *tokio::time::timeout(Duration::from_secs(10), frames.recv())
            .await
            .unwrap()
            .unwrap();
        let next = next.unwrap();
        assert_eq!(messages(next), vec!["later"]);
        drop(frames);

        let mut bad = query(false);
        bad.grep = Some("(".into());
        let Reply::Once(Err(error)) = ask(Request::Admin(AdminRequest::DaemonLogs(bad))).await
        else {
            panic!("a bad pattern was run")
        };
        assert_eq!(error.code, ErrorCode::InvalidArgument);
        node.stop().await.unwrap();
    }

    #[tokio::test]
    async fn only_admins_read_a_coordinators_log() {
        let (dir, node, service) = one_node().await;
        let service = service.with_logs(LogFiles::for_source(dir.path(), "coordinator-1"));
        let request = Request::Admin(AdminRequest::DaemonLogs(query(false)));
        let Reply::Once(Err(error)) = service
            .handle(&user(Role::User), RequestId::random(), request)
            .await
        else {
            panic!("a user read the log")
        };
        assert_eq!(error.code, ErrorCode::PermissionDenied);
        node.stop().await.unwrap();
    }
}
