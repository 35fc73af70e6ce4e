//! The agent's link to the coordinators: one loop that connects to a coordinator, registers the
//! host, and heartbeats until the connection fails; then it backs off (exponentially, with jitter,
//! so a thousand agents that lost the same coordinator do not return in step) and tries the next
//! coordinator in the list.
//!
//! Losing the link never touches workspaces: what runs keeps running.

use std::time::Duration;

use nexus_protocol::RequestId;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::id::random_u64;
use nexus_protocol::identity::IdentityKind;
use nexus_protocol::message::{AgentRequest, Request, Response};
use nexus_protocol::model::HostInfo;
use nexus_protocol::transport::{Connector, resolve};

use crate::config::Config;

/// The first retry waits about this long; each failure doubles it up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Link {
    connector: Connector,
    config: Config,
    info: HostInfo,
    sequence: u64,
    failures: u32,
}

impl Link {
    pub fn new(connector: Connector, config: Config, info: HostInfo) -> Link {
        Link {
            connector,
            config,
            info,
            sequence: 0,
            failures: 0,
        }
    }

    /// Keeps the link up until `shutdown` completes.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut index = 0usize;
        loop {
            let target = self.config.coordinators[index % self.config.coordinators.len()].clone();
            tokio::select! {
                error = self.session(&target) => {
                    self.failures = self.failures.saturating_add(1);
                    tracing::warn!(coordinator = %target, code = %error.code, failures = self.failures, "coordinator link lost: {}", error.message);
                    index = index.wrapping_add(1);
                }
                () = &mut shutdown => return,
            }
            let delay = backoff(self.failures, random_u64());
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = &mut shutdown => return,
            }
        }
    }

    /// One connection's life: connect, register, heartbeat. Returns only with the error that ended
    /// it.
    async fn session(&mut self, target: &str) -> WireError {
        let (address, server_name) = match resolve(target).await {
            Ok(resolved) => resolved,
            Err(error) => return error,
        };
        let connection = match self
            .connector
            .connect(address, &server_name, &[IdentityKind::Coordinator])
            .await
        {
            Ok(connection) => connection,
            Err(error) => return error,
        };
        match connection
            .request(Request::Agent(AgentRequest::Register(self.info.clone())))
            .await
        {
            Ok(Response::Registered { .. }) => {}
            Ok(other) => return unexpected(&other),
            Err(error) => return error,
        }
        tracing::info!(coordinator = %connection.server(), %address, "registered");
        self.failures = 0;
        // A coordinator killed outright sends nothing, so a heartbeat must not wait out the
        // connection's idle timeout: two intervals (at least 2 s) is plenty for a live one.
        let deadline = (self.config.heartbeat_interval * 2).max(Duration::from_secs(2));
        let mut ticker = tokio::time::interval(self.config.heartbeat_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            self.sequence += 1;
            let heartbeat = AgentRequest::Heartbeat {
                sequence: self.sequence,
                stats: None,
            };
            match connection
                .request_with(RequestId::random(), Request::Agent(heartbeat), deadline)
                .await
            {
                Ok(Response::Ack) => {}
                Ok(other) => return unexpected(&other),
                Err(error) => return error,
            }
        }
    }
}

fn unexpected(response: &Response) -> WireError {
    WireError::new(
        ErrorCode::ProtocolError,
        format!("unexpected answer from the coordinator: {response:?}"),
    )
}

/// The wait after `failures` consecutive failures: exponential from [`FIRST_BACKOFF`] up to
/// [`MAX_BACKOFF`], then jittered to between half and all of that, from `random`.
pub fn backoff(failures: u32, random: u64) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let ceiling = FIRST_BACKOFF.saturating_mul(1 << exponent).min(MAX_BACKOFF);
    let ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    let half = ceiling_ms / 2;
    Duration::from_millis(half + random % (half + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        assert_eq!(backoff(1, 0), Duration::from_millis(100));
        assert_eq!(
            backoff(1, u64::MAX),
            Duration::from_millis(100 + u64::MAX % 101)
        );
        assert!(backoff(1, 100) <= FIRST_BACKOFF);
        assert_eq!(backoff(3, 0), Duration::from_millis(400));
        for failures in [10, 100, u32::MAX] {
            for random in [0, 7, u64::MAX] {
                let wait = backoff(failures, random);
                assert!(
                    wait >= MAX_BACKOFF / 2 && wait <= MAX_BACKOFF,
                    "{failures} {random} {wait:?}"
                );
            }
        }
        // Zero failures (a clean end) still waits a little rather than spinning.
        assert!(backoff(0, 0) > Duration::ZERO);
    }
}
