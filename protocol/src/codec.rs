//! Frames on the wire: a 4-byte big-endian payload length, then the payload. Payloads are bincode 2
//! (serde, standard config: little-endian varints).
//!
//! - Frames are bounded by [`CodecConfig::max_frame_len`] (16 MiB by default). A longer length
//!   prefix is refused before anything is allocated. A frame that never travels (a coordinator's
//!   snapshot of its state, on its own disk) may use [`CodecConfig::local`], bounded only by what
//!   the 4-byte header can say ([`MAX_LOCAL_FRAME_LEN`]).
//! - Decoding never panics, and bincode may claim no more memory than a limit sized to the
//!   payload (a lying string length in a small frame cannot allocate gigabytes).
//! - The handshake's payloads start with a fixed magic and a big-endian `u16` protocol version
//!   before the bincode body, so a peer of any version can read the version even when it cannot
//!   read the body: a mismatch is always reported as such.
//!
//! - A message's byte fields (file contents, payloads, Raft messages) are marked to travel as one
//!   run of bytes (`serde_bytes`, and `message::byte_runs` for a list of them): serde would otherwise
//!   take a `Vec<u8>` one element at a time. The encoding is the same either way (a length, then
//!   the bytes), so the mark changes no byte on the wire; only the cost.
//!
//! The core ([`encode`], [`decode`], [`split_frame`]) is sans-IO; [`read_frame`] and
//! [`write_frame`] are thin async wrappers for streams.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{ErrorCode, WireError};

const HEADER_LEN: usize = 4;

/// The default bound on a frame's payload.
pub const DEFAULT_MAX_FRAME_LEN: usize = 16 << 20;
/// No configuration of a connection may raise the bound above this.
pub const HARD_MAX_FRAME_LEN: usize = 256 << 20;
/// The bound of [`CodecConfig::local`]: the largest length the 4-byte header can say (4 GiB - 1).
pub const MAX_LOCAL_FRAME_LEN: usize = u32::MAX as usize;

/// The magic that opens a client's hello payload.
pub const HELLO_MAGIC: [u8; 4] = *b"NXHI";
/// The magic that opens a server's hello reply payload.
pub const HELLO_REPLY_MAGIC: [u8; 4] = *b"NXOK";
/// The magic that opens an enrolment request, sent instead of a hello by a client without a
/// certificate (`join::EnrolRequest`).
pub const ENROL_MAGIC: [u8; 4] = *b"NXEN";
/// The magic that opens the answer to an enrolment (`Result<join::Issued, WireError>`).
pub const ENROL_REPLY_MAGIC: [u8; 4] = *b"NXEA";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecConfig {
    max_frame_len: usize,
}

impl CodecConfig {
    pub fn new(max_frame_len: usize) -> Result<CodecConfig, CodecError> {
        if max_frame_len == 0 || max_frame_len > HARD_MAX_FRAME_LEN {
            return Err(CodecError::BadConfig(format!(
                "max frame length {max_frame_len} must be between 1 and {HARD_MAX_FRAME_LEN} bytes"
            )));
        }
        Ok(CodecConfig { max_frame_len })
    }

    /// For frames that stay on this machine's disk and never reach a connection (a snapshot of
    /// the replicated state): bounded by the header alone, [`MAX_LOCAL_FRAME_LEN`]. Larger data
    /// travels between processes in pieces, each a frame of its own.
    pub fn local() -> CodecConfig {
        CodecConfig {
            max_frame_len: MAX_LOCAL_FRAME_LEN,
        }
    }

    pub fn max_frame_len(self) -> usize {
        self.max_frame_len
    }
}

impl Default for CodecConfig {
    fn default() -> CodecConfig {
        CodecConfig {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("the stream ended inside a frame")]
    Truncated,
    #[error("cannot decode message: {0}")]
    Decode(String),
    #[error("cannot encode message: {0}")]
    Encode(String),
    #[error("not a Nexus handshake (bad magic)")]
    BadMagic,
    #[error("{0}")]
    BadConfig(String),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl CodecError {
    /// The error a peer is told about when its bytes are refused.
    pub fn to_wire(&self) -> WireError {
        let code = match self {
            CodecError::Io(_) => ErrorCode::NetworkError,
            CodecError::Encode(_) | CodecError::BadConfig(_) => ErrorCode::Internal,
            _ => ErrorCode::ProtocolError,
        };
        WireError::new(code, self.to_string())
    }
}

/// Encodes `message` as one whole frame (header and payload).
pub fn encode<T: Serialize>(message: &T, config: CodecConfig) -> Result<Vec<u8>, CodecError> {
    let mut frame = vec![0u8; HEADER_LEN];
    bincode::serde::encode_into_std_write(message, &mut frame, bincode::config::standard())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    seal(frame, config)
}

/// Encodes `message` as a bare payload (no frame header), for a message carried inside another
/// (a sync session's requests inside `HostRequest::Sync`). [`decode`] reads it back.
pub fn encode_payload<T: Serialize>(message: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(message, bincode::config::standard())
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Writes the header of a frame whose payload follows the first `HEADER_LEN` bytes.
fn seal(mut frame: Vec<u8>, config: CodecConfig) -> Result<Vec<u8>, CodecError> {
    let len = frame.len() - HEADER_LEN;
    if len > config.max_frame_len {
        return Err(CodecError::FrameTooLarge {
            len,
            max: config.max_frame_len,
        });
    }
    let header = u32::try_from(len).map_err(|_| CodecError::FrameTooLarge {
        len,
        max: config.max_frame_len,
    })?;
    frame[..HEADER_LEN].copy_from_slice(&header.to_be_bytes());
    Ok(frame)
}

/// Decodes one message from a whole payload. Trailing bytes are an error: a payload is exactly one
/// message.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CodecError> {
    let (message, read) = decode_bounded(payload).map_err(|e| CodecError::Decode(e.to_string()))?;
    if read != payload.len() {
        return Err(CodecError::Decode(format!(
            "{} trailing bytes after the message",
            payload.len() - read
        )));
    }
    Ok(message)
}

/// How many times its encoded size a message may claim while decoding. bincode charges every
/// primitive its in-memory size (a `u128` varint-encoded in one byte claims 16), and every string
/// or byte buffer its length (which must be in the payload).
const CLAIM_RATIO: usize = 16;

/// bincode with a claim limit of [`CLAIM_RATIO`] times the top of the payload's size class, so any
/// honest message fits, while a lying length prefix fails before allocating more than that.
fn decode_bounded<T: DeserializeOwned>(
    payload: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    use bincode::serde::decode_from_slice;
    let standard = bincode::config::standard();
    match payload.len() {
        0..=0xFFFF => decode_from_slice(payload, standard.with_limit::<{ CLAIM_RATIO << 16 }>()),
        0x1_0000..=0xF_FFFF => {
            decode_from_slice(payload, standard.with_limit::<{ CLAIM_RATIO << 20 }>())
        }
        0x10_0000..=0xFF_FFFF => {
            decode_from_slice(payload, standard.with_limit::<{ CLAIM_RATIO << 24 }>())
        }
        0x100_0000..=HARD_MAX_FRAME_LEN => decode_from_slice(
            payload,
            standard.with_limit::<{ HARD_MAX_FRAME_LEN.saturating_mul(CLAIM_RATIO) }>(),
        ),
        // Only local frames and pieced-together peer requests (bounded by their assembler) are
        // this large: no frame on a connection is.
        _ => decode_from_slice(
            payload,
            standard.with_limit::<{ MAX_LOCAL_FRAME_LEN.saturating_mul(CLAIM_RATIO) }>(),
        ),
    }
}

/// Finds the first whole frame in `buffer`: `Ok(Some((payload, consumed)))`, or `Ok(None)` when
/// more bytes are needed. An oversized length is an error as soon as the header is in.
pub fn split_frame(
    buffer: &[u8],
    config: CodecConfig,
) -> Result<Option<(&[u8], usize)>, CodecError> {
    let Some(header) = buffer.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = checked_len(*header, config)?;
    let end = HEADER_LEN + len;
    Ok(buffer.get(HEADER_LEN..end).map(|payload| (payload, end)))
}

fn checked_len(header: [u8; HEADER_LEN], config: CodecConfig) -> Result<usize, CodecError> {
    let len = usize::try_from(u32::from_be_bytes(header)).unwrap_or(usize::MAX);
    if len > config.max_frame_len {
        return Err(CodecError::FrameTooLarge {
            len,
            max: config.max_frame_len,
        });
    }
    Ok(len)
}

/// Encodes a handshake payload: magic, version, then the bincode body, framed.
pub fn encode_versioned<T: Serialize>(
    magic: [u8; 4],
    version: u16,
    body: &T,
    config: CodecConfig,
) -> Result<Vec<u8>, CodecError> {
    let mut frame = vec![0u8; HEADER_LEN];
    frame.extend_from_slice(&magic);
    frame.extend_from_slice(&version.to_be_bytes());
    bincode::serde::encode_into_std_write(body, &mut frame, bincode::config::standard())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    seal(frame, config)
}

/// Reads a handshake payload's version and returns it with the still-encoded body, so the caller
/// can refuse a version it does not speak before it tries to read the body.
pub fn split_versioned(magic: [u8; 4], payload: &[u8]) -> Result<(u16, &[u8]), CodecError> {
    let rest = payload.strip_prefix(&magic).ok_or(CodecError::BadMagic)?;
    let (version, body) = rest.split_first_chunk::<2>().ok_or(CodecError::BadMagic)?;
    Ok((u16::from_be_bytes(*version), body))
}

/// Reads one frame's payload. `Ok(None)` when the stream ends cleanly before a frame starts.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    config: CodecConfig,
) -> Result<Option<Vec<u8>>, CodecError> {
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        let read = reader.read(&mut header[filled..]).await?;
        if read == 0 {
            return if filled == 0 {
                Ok(None)
            } else {
                Err(CodecError::Truncated)
            };
        }
        filled += read;
    }
    let len = checked_len(header, config)?;
    let mut payload = vec![0u8; len];
    reader
        .read_exact(&mut payload)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => CodecError::Truncated,
            _ => CodecError::Io(e),
        })?;
    Ok(Some(payload))
}

/// Writes one encoded frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &[u8],
) -> Result<(), CodecError> {
    writer.write_all(frame).await?;
    Ok(())
}

/// Feeds arbitrary bytes through every decoder a peer's bytes can reach, as the fuzz target and the
/// property tests do. Returns how many payloads decoded as something; never panics.
#[doc(hidden)]
pub fn decode_untrusted(data: &[u8], config: CodecConfig) -> usize {
    use crate::message::{Hello, HelloReply, RequestFrame, ResponseFrame};
    let mut decoded = 0;
    let mut rest = data;
    while let Ok(Some((payload, consumed))) = split_frame(rest, config) {
        decoded += usize::from(decode::<RequestFrame>(payload).is_ok());
        decoded += usize::from(decode::<ResponseFrame>(payload).is_ok());
        if let Ok((_, body)) = split_versioned(HELLO_MAGIC, payload) {
            decoded += usize::from(decode::<Hello>(body).is_ok());
        }
        if let Ok((_, body)) = split_versioned(HELLO_REPLY_MAGIC, payload) {
            decoded += usize::from(decode::<HelloReply>(body).is_ok());
        }
        if let Ok((_, body)) = split_versioned(ENROL_MAGIC, payload) {
            decoded += usize::from(decode::<crate::join::EnrolRequest>(body).is_ok());
        }
        if let Ok((_, body)) = split_versioned(ENROL_REPLY_MAGIC, payload) {
            decoded +=
                usize::from(decode::<Result<crate::join::Issued, crate::WireError>>(body).is_ok());
        }
        rest = &rest[consumed..];
    }
    // Whole data as one payload too, so the fuzzer reaches the decoders without learning framing.
    decoded += usize::from(decode::<RequestFrame>(data).is_ok());
    decoded += usize::from(decode::<ResponseFrame>(data).is_ok());
    decoded
}

/// For a `Vec<u8>` field of a type encoded by this codec outside this crate:
/// `#[serde(with = "nexus_protocol::codec::bytes")]`. The same bytes on the wire as a plain
/// `Vec<u8>` (a length, then one byte per element), so stored and sent data stay readable, but
/// written and read at once instead of element by element through serde's sequence visitor:
/// a restore's 79 MB state took about a second each way.
pub mod bytes {
    pub use serde_bytes::{deserialize, serialize};
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::RequestId;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Plain {
        before: u64,
        data: Vec<u8>,
        after: String,
    }

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Bytes {
        before: u64,
        #[serde(with = "super::bytes")]
        data: Vec<u8>,
        after: String,
    }

    #[test]
    fn bytes_are_encoded_as_a_plain_vec_of_bytes_is() {
        for len in [0usize, 1, 250, 251, 65_536, 1 << 20] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
            let plain = Plain {
                before: 300,
                data: data.clone(),
                after: "x".into(),
            };
            let bytes = Bytes {
                before: 300,
                data,
                after: "x".into(),
            };
            for config in [CodecConfig::default(), CodecConfig::local()] {
                let encoded = encode(&plain, config).unwrap();
                assert_eq!(encoded, encode(&bytes, config).unwrap(), "{len} bytes");
                let (payload, _) = split_frame(&encoded, config).unwrap().unwrap();
                assert_eq!(decode::<Bytes>(payload).unwrap(), bytes);
            }
        }
    }
    use crate::message::{Request, RequestFrame};

    fn ping() -> RequestFrame {
        RequestFrame {
            request_id: RequestId::from_u128(1),
            request: Request::Ping,
        }
    }

    #[test]
    fn a_frame_round_trips_through_the_splitter() {
        let config = CodecConfig::default();
        let frame = encode(&ping(), config).unwrap();
        assert_eq!(split_frame(&frame[..3], config).unwrap(), None);
        assert_eq!(
            split_frame(&frame[..frame.len() - 1], config).unwrap(),
            None
        );
        let mut two = frame.clone();
        two.extend_from_slice(&frame);
        let (payload, consumed) = split_frame(&two, config).unwrap().unwrap();
        assert_eq!(consumed, frame.len());
        assert_eq!(decode::<RequestFrame>(payload).unwrap(), ping());
    }

    #[test]
    fn oversized_frames_are_refused_both_ways() {
        let config = CodecConfig::new(8).unwrap();
        let big = RequestFrame {
            request_id: RequestId::from_u128(u128::MAX),
            request: Request::Ping,
        };
        assert!(matches!(
            encode(&big, config),
            Err(CodecError::FrameTooLarge { max: 8, .. })
        ));
        let header = 9u32.to_be_bytes();
        assert!(matches!(
            split_frame(&header, config),
            Err(CodecError::FrameTooLarge { len: 9, max: 8 })
        ));
        assert!(CodecConfig::new(0).is_err());
        assert!(CodecConfig::new(HARD_MAX_FRAME_LEN + 1).is_err());
    }

    #[test]
    fn local_frames_are_bounded_by_their_header_alone() {
        // A header past the connections' hard bound waits for its payload instead of failing.
        let header = u32::try_from(HARD_MAX_FRAME_LEN + 1).unwrap().to_be_bytes();
        assert!(matches!(
            split_frame(&header, CodecConfig::local()),
            Ok(None)
        ));
        assert!(matches!(
            split_frame(&u32::MAX.to_be_bytes(), CodecConfig::local()),
            Ok(None)
        ));
        assert_eq!(CodecConfig::local().max_frame_len(), MAX_LOCAL_FRAME_LEN);
        let frame = encode(&"kept on disk", CodecConfig::local()).unwrap();
        let (payload, _) = split_frame(&frame, CodecConfig::local()).unwrap().unwrap();
        assert_eq!(decode::<String>(payload).unwrap(), "kept on disk");
    }

    #[test]
    fn a_local_frame_past_the_connections_bound_round_trips() {
        // Past 256 MiB: refused on a connection, kept on disk, and decoded back whole. (A string:
        // serde writes its bytes at once, where a `Vec<u8>` goes a byte at a time.)
        let big = "n".repeat(HARD_MAX_FRAME_LEN + 1);
        let wire = CodecConfig::new(HARD_MAX_FRAME_LEN).unwrap();
        assert!(matches!(
            encode(&big, wire),
            Err(CodecError::FrameTooLarge { .. })
        ));
        let frame = encode(&big, CodecConfig::local()).unwrap();
        let (payload, _) = split_frame(&frame, CodecConfig::local()).unwrap().unwrap();
        let back: String = decode(payload).unwrap();
        assert!(back == big, "the string came back whole");
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let frame = encode(&ping(), CodecConfig::default()).unwrap();
        let mut payload = frame[HEADER_LEN..].to_vec();
        payload.push(0);
        assert!(matches!(
            decode::<RequestFrame>(&payload),
            Err(CodecError::Decode(_))
        ));
    }

    #[test]
    fn a_lying_string_length_does_not_allocate() {
        // A String whose varint length says 2^40 bytes, in a 10-byte payload.
        let mut payload = vec![0xFD]; // varint marker for u64
        payload.extend_from_slice(&(1u64 << 40).to_le_bytes());
        let result = decode::<String>(&payload);
        assert!(matches!(result, Err(CodecError::Decode(_))), "{result:?}");
    }

    #[test]
    fn messages_dense_in_small_integers_decode_at_every_size() {
        // Each u128 is one byte on the wire and claims 16 while decoding: the worst case.
        for len in [10, 0xFFF0, 0x1_0000, 0xF_FF00, 0x10_0000] {
            let numbers = vec![1u128; len];
            let frame = encode(&numbers, CodecConfig::new(HARD_MAX_FRAME_LEN).unwrap()).unwrap();
            let (payload, _) = split_frame(&frame, CodecConfig::new(HARD_MAX_FRAME_LEN).unwrap())
                .unwrap()
                .unwrap();
            assert_eq!(
                decode::<Vec<u128>>(payload).unwrap().len(),
                len,
                "{len} numbers"
            );
        }
    }

    #[test]
    fn versions_are_read_before_bodies() {
        let config = CodecConfig::default();
        let frame = encode_versioned(HELLO_MAGIC, 42, &"future body", config).unwrap();
        let (payload, _) = split_frame(&frame, config).unwrap().unwrap();
        let (version, body) = split_versioned(HELLO_MAGIC, payload).unwrap();
        assert_eq!(version, 42);
        assert_eq!(decode::<String>(body).unwrap(), "future body");
        assert!(matches!(
            split_versioned(HELLO_REPLY_MAGIC, payload),
            Err(CodecError::BadMagic)
        ));
        assert!(matches!(
            split_versioned(HELLO_MAGIC, b"NXHI\x00"),
            Err(CodecError::BadMagic)
        ));
    }

    #[tokio::test]
    async fn async_reads_stop_at_the_limit_and_at_truncation() {
        let config = CodecConfig::new(16).unwrap();
        let frame = encode(&ping(), config).unwrap();
        let mut reader = &frame[..];
        assert!(read_frame(&mut reader, config).await.unwrap().is_some());
        assert!(read_frame(&mut reader, config).await.unwrap().is_none());
        let mut truncated = &frame[..frame.len() - 1];
        assert!(matches!(
            read_frame(&mut truncated, config).await,
            Err(CodecError::Truncated)
        ));
        let mut half_header = &frame[..2];
        assert!(matches!(
            read_frame(&mut half_header, config).await,
            Err(CodecError::Truncated)
        ));
        let huge = u32::MAX.to_be_bytes();
        let mut huge = &huge[..];
        assert!(matches!(
            read_frame(&mut huge, config).await,
            Err(CodecError::FrameTooLarge { .. })
        ));
    }
}
