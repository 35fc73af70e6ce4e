//! A session's heartbeats: every interval, with the latest host stats, in a QUIC datagram the
//! leader answers only when it fails (on a stream when one goes unacknowledged), each
//! acknowledged within a deadline or the session ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nexus_protocol::RequestId;
use nexus_protocol::error::{ErrorCode, WireError};
use nexus_protocol::message::{AgentRequest, Request, Response};
use nexus_protocol::transport::Connection;
use tokio::sync::watch;

use super::{Monitor, unexpected};
use crate::sampler::Sample;

/// One session's heartbeats as its report loop follows them: the number of the last one sent,
/// of the last one the leader answered (the session's first, number 0, is answered before the
/// loops start), and of the first whose answer a refused report waits for (0: none). A quiet
/// heartbeat's acknowledgement by QUIC says it arrived, not that the leader took it, so it is
/// not an answer: while one is wanted, heartbeats are asked aloud.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Beats {
    pub(super) sent: u64,
    pub(super) acknowledged: u64,
    pub(super) wanted: u64,
}

impl Beats {
    /// A report was refused at `refused`: the answer to a heartbeat sent after it is wanted.
    pub(super) fn want_answer_after(&mut self, refused: Beats) {
        self.wanted = self.wanted.max(refused.sent + 1);
    }

    /// Whether a refused report waits for an answer.
    pub(super) fn answer_wanted(self) -> bool {
        self.acknowledged < self.wanted
    }

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
    // In quiet datagrams until the coordinator shows it takes none.
    let mut carrier = Carrier::Quiet;
    let mut lost = connection.lost_packets();
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
        let lost_since = connection.lost_packets() > lost;
        let aloud = aloud(sequence, *beats.borrow(), lost_since);
        let result = carrier
            .beat(connection, sequence, &samples, deadline, aloud)
            .await;
        lost = connection.lost_packets();
        match result {
            Ok(Beat { rtt, answered }) => {
                healthy.store(true, Ordering::Relaxed);
                monitor.acknowledged(rtt);
                if answered {
                    beats.send_modify(|beats| beats.acknowledged = sequence);
                }
            }
            Err(error) => return error,
        }
    }
}

/// Every this many heartbeats one goes aloud: QUIC acknowledges in a task of its own, so a
/// leader whose application is stuck would acknowledge quiet heartbeats for ever (a minute at the
/// default interval).
const ALOUD_EVERY: u64 = 12;

/// Whether heartbeat number `sequence` asks for an answer: when a refused report waits for one,
/// when a packet of the session was lost since the last heartbeat (a quiet one may then have been
/// counted through on another packet's acknowledgement, so this one goes where a loss is asked
/// again), and every [`ALOUD_EVERY`]th.
pub(super) fn aloud(sequence: u64, beats: Beats, lost_since: bool) -> bool {
    beats.answer_wanted() || lost_since || sequence.is_multiple_of(ALOUD_EVERY)
}

/// A heartbeat that went through: its round trip, and whether the leader answered it (a quiet
/// one is only acknowledged by QUIC; its round trip is QUIC's estimate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Beat {
    rtt: Duration,
    answered: bool,
}

/// How a session's heartbeats travel after its first. In a quiet datagram each, which the
/// leader answers only when it fails ([`Connection::request_datagram_quietly`]): one packet in
/// and QUIC's acknowledgement out, where a stream costs the leader a stream's packets and a
/// task. Asked aloud in a datagram when an answer is wanted ([`Beats`]), or when the
/// coordinator cannot read quiet ones (an earlier version); on a stream when it takes no
/// datagrams. A heartbeat whose datagram (or its acknowledgement) is lost is asked again on a
/// stream within the same deadline, so a lost packet never ends a session. Answered datagrams
/// left unanswered [`UNANSWERED_DATAGRAMS`] times in a row (a coordinator of an earlier version
/// reads none) move the session's heartbeats to streams; quiet ones never do, since a
/// coordinator that cannot take them says so, and a loss counts a quiet heartbeat unacknowledged:
/// a lossy link would otherwise move sessions to streams, the leader's dearest carrier, for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carrier {
    Quiet,
    /// Datagrams answered aloud, with the number of heartbeats in a row whose datagram went
    /// unanswered.
    Datagram {
        unanswered: u32,
    },
    Stream,
}

/// Heartbeats in a row whose datagram went unanswered before a session's heartbeats go on
/// streams.
const UNANSWERED_DATAGRAMS: u32 = 2;

impl Carrier {
    /// One heartbeat, acknowledged within `deadline`, and answered when `aloud`.
    async fn beat(
        &mut self,
        connection: &Connection,
        sequence: u64,
        samples: &watch::Receiver<Option<Sample>>,
        deadline: Duration,
        aloud: bool,
    ) -> Result<Beat, WireError> {
        let sent = tokio::time::Instant::now();
        let rest = || deadline.saturating_sub(sent.elapsed());
        if *self == Carrier::Quiet
            && !aloud
            && let Some(beat) = self.quietly(connection, sequence, samples, rest()).await?
        {
            return Ok(beat);
        }
        if matches!(self, Carrier::Quiet | Carrier::Datagram { .. })
            && let Some(beat) = self
                .in_datagram(connection, sequence, samples, rest())
                .await?
        {
            return Ok(beat);
        }
        answered(beat(connection, sequence, samples, rest()).await)
    }

    /// A quiet heartbeat, within half of `deadline` (a stream gets the rest when it goes
    /// unacknowledged). `None` when the coordinator cannot take it: ask otherwise.
    async fn quietly(
        &mut self,
        connection: &Connection,
        sequence: u64,
        samples: &watch::Receiver<Option<Sample>>,
        deadline: Duration,
    ) -> Result<Option<Beat>, WireError> {
        let sent = tokio::time::Instant::now();
        let answer = connection
            .request_datagram_quietly(
                RequestId::random(),
                request(sequence, samples),
                deadline / 2,
            )
            .await;
        match answer {
            Ok(()) => {
                *self = self.with_unanswered(0);
                let rtt = connection.rtt();
                Ok(Some(Beat {
                    rtt,
                    answered: false,
                }))
            }
            Err(error) if error.code == ErrorCode::Timeout => {
                let rest = deadline.saturating_sub(sent.elapsed());
                self.on_a_stream(connection, sequence, samples, rest).await
            }
            Err(error) if error.code == ErrorCode::ProtocolError => {
                let server = connection.server();
                tracing::info!(
                    coordinator = %server,
                    "the coordinator cannot read quiet heartbeats ({}); asking aloud",
                    error.message
                );
                *self = Carrier::Datagram { unanswered: 0 };
                Ok(None)
            }
            Err(error) => self.refused(connection, error).map(|()| None),
        }
    }

    /// A heartbeat in a datagram answered aloud, within half of `deadline` (a stream gets the
    /// rest when it goes unanswered). `None` when the coordinator takes no datagrams.
    async fn in_datagram(
        &mut self,
        connection: &Connection,
        sequence: u64,
        samples: &watch::Receiver<Option<Sample>>,
        deadline: Duration,
    ) -> Result<Option<Beat>, WireError> {
        let sent = tokio::time::Instant::now();
        let answer = connection
            .request_datagram(
                RequestId::random(),
                request(sequence, samples),
                deadline / 2,
            )
            .await;
        match answer {
            Ok(Response::Ack) => {
                *self = self.with_unanswered(0);
                answered(Ok(sent.elapsed())).map(Some)
            }
            Ok(other) => Err(unexpected(&other)),
            Err(error) if error.code == ErrorCode::Timeout => {
                let rest = deadline.saturating_sub(sent.elapsed());
                self.on_a_stream(connection, sequence, samples, rest).await
            }
            Err(error) => self.refused(connection, error).map(|()| None),
        }
    }

    /// A datagram that went unanswered, counted, and the heartbeat asked on a stream within
    /// `rest`.
    async fn on_a_stream(
        &mut self,
        connection: &Connection,
        sequence: u64,
        samples: &watch::Receiver<Option<Sample>>,
        rest: Duration,
    ) -> Result<Option<Beat>, WireError> {
        let before = *self;
        *self = self.unanswered();
        if *self == Carrier::Stream && before != Carrier::Stream {
            tracing::info!(
                coordinator = %connection.server(),
                "{UNANSWERED_DATAGRAMS} heartbeats in a row went unanswered in datagrams; \
                 sending them on streams"
            );
        } else {
            tracing::debug!(
                sequence,
                "a heartbeat's datagram went unanswered; asking on a stream"
            );
        }
        answered(beat(connection, sequence, samples, rest).await).map(Some)
    }

    /// A datagram's failure: the session's heartbeats go on streams when it says the
    /// coordinator takes none, else the failure is the heartbeat's.
    fn refused(&mut self, connection: &Connection, error: WireError) -> Result<(), WireError> {
        if !datagrams_refused(&error) {
            return Err(error);
        }
        let server = connection.server();
        tracing::info!(
            coordinator = %server,
            "the coordinator takes no heartbeats in datagrams ({}); sending them on streams",
            error.message
        );
        *self = Carrier::Stream;
        Ok(())
    }

    /// The carrier after one more datagram in a row went unanswered: the same, or streams from
    /// [`UNANSWERED_DATAGRAMS`] answered ones on; quiet ones stay quiet.
    fn unanswered(self) -> Carrier {
        match self {
            Carrier::Datagram { unanswered } if unanswered + 1 >= UNANSWERED_DATAGRAMS => {
                Carrier::Stream
            }
            Carrier::Datagram { unanswered } => Carrier::Datagram {
                unanswered: unanswered + 1,
            },
            Carrier::Quiet | Carrier::Stream => self,
        }
    }

    fn with_unanswered(self, unanswered: u32) -> Carrier {
        match self {
            Carrier::Datagram { .. } => Carrier::Datagram { unanswered },
            Carrier::Quiet | Carrier::Stream => self,
        }
    }
}

/// A heartbeat answered after its round trip.
fn answered(rtt: Result<Duration, WireError>) -> Result<Beat, WireError> {
    rtt.map(|rtt| Beat {
        rtt,
        answered: true,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Answered datagrams left unanswered twice in a row move the session to streams; quiet ones
    /// never do (a loss counts as unacknowledged, and a lossy link would otherwise leave every
    /// session on streams).
    #[test]
    fn only_answered_datagrams_left_unanswered_move_a_session_to_streams() {
        let mut quiet = Carrier::Quiet;
        for _ in 0..10 {
            quiet = quiet.unanswered();
        }
        assert_eq!(quiet, Carrier::Quiet);
        let once = Carrier::Datagram { unanswered: 0 }.unanswered();
        assert_eq!(once, Carrier::Datagram { unanswered: 1 });
        assert_eq!(once.unanswered(), Carrier::Stream);
        assert_eq!(once.with_unanswered(0), Carrier::Datagram { unanswered: 0 });
        assert_eq!(Carrier::Stream.unanswered(), Carrier::Stream);
    }
}
