//! Requests in one QUIC datagram each, answered in one: for small requests asked again and again
//! whose loss is no harm, heartbeats above all. A request on a stream costs a server a stream
//! opened, accepted, given a task, answered and closed, with the packets that go with it; in a
//! datagram it costs one packet each way and no task when the handler answers at once. At
//! 5,000 agents heartbeating every 5 s that difference was most of a coordinator's idle load.
//!
//! Datagrams are unreliable: a request or answer lost on the way is an answer that never comes,
//! and the caller asks again (an agent asks on a stream). A server answers each in a datagram:
//! the handler's answer, or an error with a stable code (a request it cannot read, a
//! subscription, more than [`IN_FLIGHT`] at once, an answer too large for a datagram). A request
//! whose answer does not come at once is finished in a task of its own.

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

/// The client's side: sends `request` in a datagram and reads datagrams until its answer comes,
/// for up to `limit`. `turn` makes a connection's exchanges one at a time, so an answer is read
/// by the exchange it belongs to (one that arrives after its exchange gave up is dropped).
pub(super) async fn exchange(
    conn: &quinn::Connection,
    turn: &tokio::sync::Mutex<()>,
    request_id: RequestId,
    request: Request,
    limit: Duration,
) -> Result<Response, WireError> {
    let unsupported = |why: &str| {
        WireError::new(ErrorCode::Unsupported, format!("{why}: ask on a stream"))
            .with_request_id(request_id)
    };
    let Some(max) = conn.max_datagram_size() else {
        return Err(unsupported("the server takes no datagrams"));
    };
    let payload = codec::encode_payload(&RequestFrame {
        request_id,
        request,
    })
    .map_err(|e| e.to_wire().with_request_id(request_id))?;
    if payload.len() > max {
        return Err(unsupported(&format!(
            "the request ({} bytes) does not fit a datagram ({max} bytes)",
            payload.len()
        )));
    }
    let exchange = async {
        let _turn = turn.lock().await;
        conn.send_datagram(payload.into()).map_err(|e| {
            use quinn::SendDatagramError as E;
            match e {
                E::ConnectionLost(lost) => connection_error(&lost),
                E::UnsupportedByPeer | E::Disabled => unsupported("the server takes no datagrams"),
                E::TooLarge => unsupported("the request does not fit a datagram"),
            }
        })?;
        loop {
            let datagram = conn
                .read_datagram()
                .await
                .map_err(|e| connection_error(&e))?;
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
    };
    match tokio::time::timeout(limit, exchange).await {
        Ok(result) => result.map_err(|e| e.or_request_id(request_id)),
        Err(_) => Err(timeout("a datagram's answer", limit).with_request_id(request_id)),
    }
}
