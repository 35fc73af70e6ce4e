//! The agent's own requests to the coordinators (a credential for a fetch or a pull, a
//! worktree's facts), sent over the link's current session with the leader.
//!
//! The link hands each registered session's connection to the [`Asker`] and takes it back when
//! the session ends; a request made between sessions waits for the next one, up to its deadline.

use std::time::Duration;

use nexus_protocol::RequestId;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::message::{Request, Response};
use nexus_protocol::transport::Connection;
use tokio::sync::watch;

/// A handle on the link's session, cheap to clone.
#[derive(Debug, Clone)]
pub struct Asker {
    current: watch::Sender<Option<Connection>>,
}

impl Default for Asker {
    fn default() -> Asker {
        Asker {
            current: watch::Sender::new(None),
        }
    }
}

impl Asker {
    /// The link's session is up on `connection`, or (with `None`) is gone. The link calls it;
    /// tests too, to stand in for a link.
    pub fn connected(&self, connection: Option<Connection>) {
        self.current.send_replace(connection);
    }

    /// The link's sessions as they come and go, for what follows the leader's session itself
    /// (the deny list's subscription).
    pub fn sessions(&self) -> watch::Receiver<Option<Connection>> {
        self.current.subscribe()
    }

    /// Sends `request` over the current session (waiting for one if none is up), within
    /// `deadline` in all.
    pub async fn ask(&self, request: Request, deadline: Duration) -> Result<Response, WireError> {
        let started = tokio::time::Instant::now();
        let mut current = self.current.subscribe();
        let connection =
            match tokio::time::timeout(deadline, current.wait_for(Option::is_some)).await {
                Ok(Ok(connection)) => connection.clone(),
                _ => None,
            };
        let Some(connection) = connection else {
            return Err(WireError::new(
                ErrorCode::NetworkError,
                format!(
                    "the agent has no session with the coordinators (waited {} ms)",
                    deadline.as_millis()
                ),
            ));
        };
        let left = deadline.saturating_sub(started.elapsed());
        connection
            .request_with(
                RequestId::random(),
                request,
                left.max(Duration::from_millis(1)),
            )
            .await
    }
}

/// What a subscription over the link's session does once its watch there ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The session changed: follow on the new one.
    Changed,
    /// Subscribe again (on the same session, or a newer one) after [`RESUBSCRIBE`].
    Retry,
    /// Wait for the next session.
    AwaitSession,
}

/// The pause before a subscription is asked again.
pub const RESUBSCRIBE: Duration = Duration::from_secs(1);

/// A subscription the agent keeps with the leader over the link's session: what it asks, and
/// what it does with each value pushed. [`follow_sessions`] does the rest.
pub trait Subscription: Sync {
    /// What it follows, for the log: `the deny list`.
    const WHAT: &'static str;

    /// The request that subscribes.
    fn request(&self) -> Request;

    /// Whether a coordinator that answers `code` does not publish it (not asked again on this
    /// session).
    fn unsupported(&self, code: ErrorCode) -> bool {
        code == ErrorCode::Unsupported
    }

    /// Takes one pushed value in; gives back an answer of another kind.
    fn take(
        &self,
        response: Response,
    ) -> impl std::future::Future<Output = Result<(), Response>> + Send;
}

/// Follows `subscription` on one session's `connection` until its watch ends or `sessions`
/// changes; says what to do next.
async fn watch_on<S: Subscription>(
    subscription: &S,
    connection: &Connection,
    sessions: &mut watch::Receiver<Option<Connection>>,
) -> Next {
    let what = S::WHAT;
    let mut watch = match connection.subscribe(subscription.request()).await {
        Ok(watch) => watch,
        Err(error) => {
            tracing::warn!(code = %error.code, "cannot follow {what}: {}", error.message);
            return Next::Retry;
        }
    };
    loop {
        let next = tokio::select! {
            next = watch.next() => next,
            // A new session (or none): this one's subscription is done with.
            _ = sessions.changed() => return Next::Changed,
        };
        match next {
            Some(Ok(response)) => {
                if let Err(other) = subscription.take(response).await {
                    tracing::warn!(
                        "the coordinator answered the watch of {what} with {other:?}; not following it on this session"
                    );
                    return Next::AwaitSession;
                }
            }
            Some(Err(error)) if subscription.unsupported(error.code) => {
                tracing::info!("the coordinator does not publish {what}: {}", error.message);
                return Next::AwaitSession;
            }
            Some(Err(error)) => {
                tracing::debug!(code = %error.code, "the watch of {what} ended: {}", error.message);
                return Next::Retry;
            }
            None => return Next::Retry,
        }
    }
}

/// Follows `subscription` (the deny list, the trusted CAs) across the link's sessions until
/// `shutdown` completes.
pub async fn follow_sessions(
    asker: &Asker,
    shutdown: impl std::future::Future<Output = ()>,
    subscription: &impl Subscription,
) {
    tokio::pin!(shutdown);
    let mut sessions = asker.sessions();
    loop {
        let session = sessions.borrow_and_update().clone();
        let next = match session {
            Some(connection) => tokio::select! {
                next = watch_on(subscription, &connection, &mut sessions) => next,
                () = &mut shutdown => return,
            },
            None => Next::AwaitSession,
        };
        match next {
            Next::Changed => {}
            Next::Retry => tokio::select! {
                () = tokio::time::sleep(RESUBSCRIBE) => {}
                () = &mut shutdown => return,
            },
            Next::AwaitSession => tokio::select! {
                changed = sessions.changed() => if changed.is_err() { return },
                () = &mut shutdown => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_without_a_session_fails_at_its_deadline() {
        let asker = Asker::default();
        let error = asker
            .ask(Request::Ping, Duration::from_millis(20))
            .await
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::NetworkError);
    }
}
