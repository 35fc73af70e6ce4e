//! A session's heartbeats: every interval, with the latest host stats, in a QUIC datagram (on a
//! stream when one goes unanswered), each acknowledged within a deadline or the session ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nexus_protocol::RequestId;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::message::{AgentRequest, Request, Response};
use nexus_protocol::transport::Connection;
use tokio::sync::watch;

use super::{Monitor, unexpected};
use crate::sampler::Sample;

/// One session's heartbeats as its report loop follows them: the number of the last one sent
/// and of the last one the leader acknowledged (the session's first, number 0, is acknowledged
/// before the loops start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Beats {
    pub(super) sent: u64,
    pub(super) acknowledged: u64,
}

impl Beats {
    /// Whether a heartbeat sent after `refused` (the beats when a report was refused) has been
    /// acknowledged. One already under way then does not count: the leader may have looked at
    /// the host's status before it was marked down, and so not returned it.
    pub(super) fn acknowledged_since(self, refused: Beats) -> bool {
        self.acknowledged > refused.sent
    }
}

pub(super) async fn heartbeat(
    connection: &Connection,
    mut interval: watch::Receiver<Duration>,
    deadline: Duration,
    samples: watch::Receiver<Option<Sample>>,
    healthy: &AtomicBool,
    monitor: &Monitor,
    beats: &watch::Sender<Beats>,
) -> WireError {
    let mut ticker = crate::reload::pace(*interval.borrow_and_update());
    ticker.tick().await;
    let mut sequence = 0u64;
    // In datagrams until the coordinator shows it takes none.
    let mut carrier = Carrier::Datagram { unanswered: 0 };
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            Ok(()) = interval.changed() => {
                // A reload changed the pace: the next beat one new interval from now.
                ticker = crate::reload::pace(*interval.borrow_and_update());
                ticker.tick().await;
                continue;
            }
        }
        monitor.beat();
        sequence += 1;
        beats.send_modify(|beats| beats.sent = sequence);
        match carrier.beat(connection, sequence, &samples, deadline).await {
            Ok(rtt) => {
                healthy.store(true, Ordering::Relaxed);
                monitor.acknowledged(rtt);
                beats.send_modify(|beats| beats.acknowledged = sequence);
            }
            Err(error) => return error,
        }
    }
}

/// How a session's heartbeats travel after its first. In a datagram each, which costs the
/// leader one packet each way instead of a stream ([`Connection::request_datagram`]); a
/// heartbeat whose datagram (or answer) is lost is asked again on a stream within the same
/// deadline, so a lost packet never ends a session. A coordinator that refuses datagrams, or
/// leaves [`UNANSWERED_DATAGRAMS`] in a row unanswered (an older one reads none), is asked on
/// streams for the rest of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carrier {
    /// With the number of heartbeats in a row whose datagram went unanswered.
    Datagram {
        unanswered: u32,
    },
    Stream,
}

/// Heartbeats in a row whose datagram went unanswered before a session's heartbeats go on
/// streams.
const UNANSWERED_DATAGRAMS: u32 = 2;

impl Carrier {
    /// One heartbeat, answered within `deadline`: its round trip.
    async fn beat(
        &mut self,
        connection: &Connection,
        sequence: u64,
        samples: &watch::Receiver<Option<Sample>>,
        deadline: Duration,
    ) -> Result<Duration, WireError> {
        if let Carrier::Datagram { unanswered } = *self {
            let sent = tokio::time::Instant::now();
            // Half the deadline: the stream gets the rest.
            let answer = connection
                .request_datagram(
                    RequestId::random(),
                    request(sequence, samples),
                    deadline / 2,
                )
                .await;
            match answer {
                Ok(Response::Ack) => {
                    *self = Carrier::Datagram { unanswered: 0 };
                    return Ok(sent.elapsed());
                }
                Ok(other) => return Err(unexpected(&other)),
                Err(error) if error.code == ErrorCode::Timeout => {
                    let unanswered = unanswered + 1;
                    *self = if unanswered < UNANSWERED_DATAGRAMS {
                        tracing::debug!(
                            sequence,
                            "a heartbeat's datagram went unanswered; asking on a stream"
                        );
                        Carrier::Datagram { unanswered }
                    } else {
                        tracing::info!(coordinator = %connection.server(), "{unanswered} heartbeats in a row went unanswered in datagrams; sending them on streams");
                        Carrier::Stream
                    };
                    let rest = deadline.saturating_sub(sent.elapsed());
                    return beat(connection, sequence, samples, rest).await;
                }
                Err(error) if datagrams_refused(&error) => {
                    tracing::info!(coordinator = %connection.server(), "the coordinator takes no heartbeats in datagrams ({}); sending them on streams", error.message);
                    *self = Carrier::Stream;
                }
                Err(error) => return Err(error),
            }
        }
        beat(connection, sequence, samples, deadline).await
    }
}

/// Whether a datagram's refusal says to ask on a stream instead: the coordinator takes no
/// datagrams, cannot read this one, or has too many under way.
fn datagrams_refused(error: &WireError) -> bool {
    matches!(
        error.code,
        ErrorCode::Unsupported | ErrorCode::ProtocolError | ErrorCode::ResourceExhausted
    )
}

/// One heartbeat on a stream, with the latest host stats, answered within `deadline`; answers
/// its round trip.
pub(super) async fn beat(
    connection: &Connection,
    sequence: u64,
    samples: &watch::Receiver<Option<Sample>>,
    deadline: Duration,
) -> Result<Duration, WireError> {
    let sent = tokio::time::Instant::now();
    match connection
        .request_with(RequestId::random(), request(sequence, samples), deadline)
        .await?
    {
        Response::Ack => Ok(sent.elapsed()),
        other => Err(unexpected(&other)),
    }
}

/// Heartbeat number `sequence`, with the latest host stats.
fn request(sequence: u64, samples: &watch::Receiver<Option<Sample>>) -> Request {
    let stats = samples.borrow().as_ref().map(|s| s.host);
    Request::Agent(AgentRequest::Heartbeat { sequence, stats })
}
