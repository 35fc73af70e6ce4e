//! Requests in one QUIC datagram each, answered in one: for small requests asked again and again
//! whose loss is no harm, heartbeats above all. A request on a stream costs a server a stream
//! opened, accepted, given a task, answered and closed, with the packets that go with it; in a
//! datagram it costs one packet each way and no task when the handler answers at once. At
//! 5,000 agents heartbeating every 5 s that difference was most of a coordinator's idle load.
//!
//! Datagrams are unreliable: a request or answer lost on the way is an answer that never comes,
//! and the caller asks again (an agent asks on a stream). A server answers each in a datagram
//! (a quiet one only when it fails, below): the handler's answer, or an error with a stable code
//! (a request it cannot read, a subscription, more than [`IN_FLIGHT`] at once, an answer too
//! large for a datagram). A request whose answer does not come at once is finished in a task of
//! its own.
//!
//! A request may also be sent *quietly* ([`QUIET`] before its frame): the server answers it only
//! when it fails. The client takes the server's QUIC acknowledgement of a packet after the send,
//! with none of its own declared lost meanwhile, as the sign that it arrived, so a heartbeat that
//! goes well costs the server one packet in and one acknowledgement out, where an answered one
//! costs a third (the client's acknowledgement of the answer). QUIC acknowledges in its own task,
//! so this says the server's endpoint is alive, not that its application took the request: a
//! client that must know asks aloud now and then. A server of an earlier version cannot read the
//! marker and answers `PROTOCOL_ERROR`: ask aloud then.

use std::time::Duration;

use super::{connection_error, timeout};
use crate::codec;
use crate::error::{ErrorCode, WireError};
use crate::id::RequestId;
use crate::message::{Request, RequestFrame, Response, ResponseFrame};

/// Requests one connection may have a server working on at once by datagram; more are refused
/// with `RESOURCE_EXHAUSTED` (a heartbeat is one at a time).
pub const IN_FLIGHT: usize = 4;

/// Room for datagrams received and not yet read, per connection: a datagram request is under a
/// kilobyte, and a flood beyond this is dropped by QUIC, not held.
pub(super) const RECEIVE_BUFFER: usize = 64 * 1024;

/// The id of an answer to a datagram whose request could not be read.
pub(super) const UNREADABLE: RequestId = RequestId::from_u128(0);

/// The first byte of a quiet request, before its frame: a varint's reserved discriminant, so no
/// frame starts with it and a server that does not know the marker fails to read the request
/// (its id, a `u128`) rather than misreading it.
pub(super) const QUIET: u8 = 0xFF;

/// A client's first look for the server's acknowledgement (a quiet request) or a loss (one
/// answered), after which it looks at twice the wait each time: a server acknowledges within its
/// `max_ack_delay` (QUIC's default 25 ms) and a round trip.
const FIRST_LOOK: Duration = Duration::from_millis(30);

/// The longest wait between a quiet client's looks.
const LONGEST_LOOK: Duration = Duration::from_millis(480);

/// When a client next looks at its connection's acknowledgements and losses: [`FIRST_LOOK`]
/// after the send, then at twice the wait each time, up to [`LONGEST_LOOK`].
struct Looks {
    wait: Duration,
    next: tokio::time::Instant,
}

impl Looks {
    fn from_now() -> Looks {
        Looks {
            wait: FIRST_LOOK,
            next: tokio::time::Instant::now() + FIRST_LOOK,
        }
    }

    /// The look after this one.
    fn later(&mut self) {
        self.wait = (self.wait * 2).min(LONGEST_LOOK);
        self.next += self.wait;
    }
}

/// A datagram request as a server reads it: its frame, and whether the client wants an answer
/// only when the request fails.
pub(super) fn read(datagram: &[u8]) -> (Result<RequestFrame, codec::CodecError>, bool) {
    match datagram.split_first() {
        Some((&QUIET, frame)) => (codec::decode(frame), true),
        _ => (codec::decode(datagram), false),
    }
}

/// Sends `result` as the answer to `request_id`, or an error when it does not fit a datagram.
/// A connection gone meanwhile is no one's loss: the client's wait ends with it.
pub(super) fn answer(
    conn: &quinn::Connection,
    request_id: RequestId,
    result: Result<Response, WireError>,
) {
    let result = result.map_err(|e| e.or_request_id(request_id));
    let max = conn.max_datagram_size().unwrap_or(0);
    let encoded = codec::encode_payload(&ResponseFrame { request_id, result })
        .ok()
        .filter(|payload| payload.len() <= max);
    let payload = match encoded {
        Some(payload) => payload,
        None => {
            let error = WireError::new(
                ErrorCode::Unsupported,
                "the answer does not fit a datagram: ask on a stream",
            )
            .with_request_id(request_id);
            match codec::encode_payload(&ResponseFrame {
                request_id,
                result: Err(error),
            }) {
                Ok(payload) if payload.len() <= max => payload,
                _ => return,
            }
        }
    };
    if let Err(error) = conn.send_datagram(payload.into()) {
        tracing::debug!("a datagram's answer was not sent: {error}");
    }
}

/// `request` encoded for a datagram (after [`QUIET`] when `quiet`), or why it cannot go in one.
fn encode(
    conn: &quinn::Connection,
    request_id: RequestId,
    request: Request,
    quiet: bool,
) -> Result<Vec<u8>, WireError> {
    let Some(max) = conn.max_datagram_size() else {
        return Err(unsupported(request_id, "the server takes no datagrams"));
    };
    let frame = RequestFrame {
        request_id,
        request,
    };
    let mut payload = Vec::new();
    if quiet {
        payload.push(QUIET);
    }
    payload.extend(
        codec::encode_payload(&frame).map_err(|e| e.to_wire().with_request_id(request_id))?,
    );
    if payload.len() > max {
        return Err(unsupported(
            request_id,
            &format!(
                "the request ({} bytes) does not fit a datagram ({max} bytes)",
                payload.len()
            ),
        ));
    }
    Ok(payload)
}

fn unsupported(request_id: RequestId, why: &str) -> WireError {
    WireError::new(ErrorCode::Unsupported, format!("{why}: ask on a stream"))
        .with_request_id(request_id)
}

fn send(
    conn: &quinn::Connection,
    request_id: RequestId,
    payload: Vec<u8>,
) -> Result<(), WireError> {
    conn.send_datagram(payload.into()).map_err(|e| {
        use quinn::SendDatagramError as E;
        match e {
            E::ConnectionLost(lost) => connection_error(&lost),
            E::UnsupportedByPeer | E::Disabled => {
                unsupported(request_id, "the server takes no datagrams")
            }
            E::TooLarge => unsupported(request_id, "the request does not fit a datagram"),
        }
    })
}

/// The client's side: sends `request` in a datagram and reads datagrams until its answer comes,
/// for up to `limit`, or until QUIC declares a packet of the connection's lost since the send
/// (maybe the request's: ask again at once, rather than wait out `limit` for an answer that
/// cannot come). `turn` makes a connection's exchanges one at a time, so an answer is read by
/// the exchange it belongs to (one that arrives after its exchange gave up is dropped).
pub(super) async fn exchange(
    conn: &quinn::Connection,
    turn: &tokio::sync::Mutex<()>,
    request_id: RequestId,
    request: Request,
    limit: Duration,
) -> Result<Response, WireError> {
    let payload = encode(conn, request_id, request, false)?;
    let exchange = async {
        let _turn = turn.lock().await;
        let before = Acks::of(conn);
        send(conn, request_id, payload)?;
        let mut looks = Looks::from_now();
        loop {
            tokio::select! {
                datagram = conn.read_datagram() => {
                    let datagram = datagram.map_err(|e| connection_error(&e))?;
                    let frame = match codec::decode::<ResponseFrame>(&datagram) {
                        Ok(frame) => frame,
                        Err(error) => {
                            tracing::debug!("dropped a datagram that is not an answer: {error}");
                            continue;
                        }
                    };
                    if frame.request_id == request_id || frame.request_id == UNREADABLE {
                        return frame.result;
                    }
                }
                () = tokio::time::sleep_until(looks.next) => {
                    if fate(before, Acks::of(conn)) == Some(Fate::Lost) {
                        return Err(WireError::new(
                            ErrorCode::Timeout,
                            "a packet was lost since the datagram went (maybe its own): ask again",
                        ));
                    }
                    looks.later();
                }
            }
        }
    };
    match tokio::time::timeout(limit, exchange).await {
        Ok(result) => result.map_err(|e| e.or_request_id(request_id)),
        Err(_) => Err(timeout("a datagram's answer", limit).with_request_id(request_id)),
    }
}

/// What a quiet client reads of its connection to learn a request's fate: the acknowledgements
/// it has received, and the packets of its own QUIC has declared lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Acks {
    received: u64,
    lost: u64,
}

impl Acks {
    fn of(conn: &quinn::Connection) -> Acks {
        let stats = conn.stats();
        Acks {
            received: stats.frame_rx.acks,
            lost: stats.path.lost_packets,
        }
    }
}

/// What became of a quiet request, as far as QUIC says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Acknowledged,
    /// A packet of the connection's was declared lost since the send: maybe the request's, whose
    /// probe's acknowledgement would otherwise pass for its own.
    Lost,
}

/// The fate of a quiet request sent at `before`, seen `now`: a loss outweighs an
/// acknowledgement, which may be another packet's. `None`: not known yet.
fn fate(before: Acks, now: Acks) -> Option<Fate> {
    if now.lost > before.lost {
        Some(Fate::Lost)
    } else if now.received > before.received {
        Some(Fate::Acknowledged)
    } else {
        None
    }
}

/// The client's side of a quiet request: sends `request` after [`QUIET`] and waits up to
/// `limit` for the server's QUIC to acknowledge a packet of this connection's, or for an answer,
/// which a server sends only when the request failed. `Ok` says the server's QUIC acknowledged
/// a packet after the send, none was lost, and no failure came back by then; it does not say the
/// server's application took the request. A loss is `TIMEOUT`, as no acknowledgement is: ask
/// again. A failure that comes after is the next quiet exchange's (a failed request's cause,
/// leadership lost or a host unknown, outlasts it): an earlier quiet request's late failure ends
/// this one; late answers that are not failures are dropped.
pub(super) async fn exchange_quietly(
    conn: &quinn::Connection,
    turn: &tokio::sync::Mutex<()>,
    request_id: RequestId,
    request: Request,
    limit: Duration,
) -> Result<(), WireError> {
    let payload = encode(conn, request_id, request, true)?;
    let deadline = tokio::time::Instant::now() + limit;
    let unacknowledged =
        || timeout("the acknowledgement of a quiet datagram", limit).with_request_id(request_id);
    let Ok(_turn) = tokio::time::timeout_at(deadline, turn.lock()).await else {
        return Err(unacknowledged());
    };
    let before = Acks::of(conn);
    send(conn, request_id, payload)?;
    let mut looks = Looks::from_now();
    loop {
        tokio::select! {
            datagram = conn.read_datagram() => {
                let datagram = datagram
                    .map_err(|e| connection_error(&e).with_request_id(request_id))?;
                match codec::decode::<ResponseFrame>(&datagram) {
                    Ok(ResponseFrame { request_id: id, result: Ok(_) }) if id == request_id => {
                        return Ok(());
                    }
                    Ok(ResponseFrame { result: Err(error), .. }) => {
                        return Err(error.or_request_id(request_id));
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::debug!("dropped a datagram that is not an answer: {error}");
                    }
                }
            }
            () = tokio::time::sleep_until(looks.next.min(deadline)) => {
                match fate(before, Acks::of(conn)) {
                    Some(Fate::Acknowledged) => return Ok(()),
                    Some(Fate::Lost) => return Err(unacknowledged()),
                    None if tokio::time::Instant::now() >= deadline => {
                        return Err(unacknowledged());
                    }
                    None => looks.later(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::AgentRequest;

    /// A quiet request is read as one by a server that knows the marker, and not at all by one
    /// that does not: it fails on the marker (a `u128`'s reserved discriminant) instead of
    /// misreading the frame.
    #[test]
    fn a_quiet_request_is_unreadable_without_the_marker() {
        let frame = RequestFrame {
            request_id: RequestId::random(),
            request: Request::Agent(AgentRequest::Heartbeat {
                sequence: 7,
                stats: None,
            }),
        };
        let mut quiet = vec![QUIET];
        quiet.extend(codec::encode_payload(&frame).unwrap());
        let (read, is_quiet) = read(&quiet);
        assert_eq!(read.unwrap(), frame);
        assert!(is_quiet);
        assert!(codec::decode::<RequestFrame>(&quiet).is_err());
        let (read, is_quiet) = super::read(&codec::encode_payload(&frame).unwrap());
        assert_eq!(read.unwrap(), frame);
        assert!(!is_quiet);
        // Every id's encoding starts with some other byte.
        for id in [0, 250, 251, u128::from(u64::MAX), u128::MAX] {
            let plain = codec::encode_payload(&RequestId::from_u128(id)).unwrap();
            assert_ne!(plain[0], QUIET, "{id}");
        }
    }

    /// An acknowledgement counts a quiet request through unless a packet was lost meanwhile:
    /// a lost request's probe is acknowledged too, and would otherwise pass for it.
    #[test]
    fn a_loss_outweighs_an_acknowledgement() {
        let before = Acks {
            received: 10,
            lost: 2,
        };
        assert_eq!(fate(before, before), None);
        let acknowledged = Acks {
            received: 11,
            ..before
        };
        assert_eq!(fate(before, acknowledged), Some(Fate::Acknowledged));
        let probed = Acks {
            received: 11,
            lost: 3,
        };
        assert_eq!(fate(before, probed), Some(Fate::Lost));
    }
}
