//! Peer requests larger than a frame, in pieces: pure, no I/O. The sender cuts a request's
//! encoding ([`nexus_protocol::codec::encode_payload`] of a `PeerRequest`) with [`split`]; the
//! receiver hands each piece to an [`Assembler`], which yields the whole once the last piece is
//! in.
//!
//! The assembler is the bound on what other coordinators can make this one hold: one transfer in
//! flight per sender (a new transfer from a sender replaces its old one), a transfer's declared
//! total bounded, the totals of every transfer in flight bounded together, pieces only in order
//! (no gap, no overlap, no change of total), and a transfer that makes no progress for a while
//! dropped. Memory grows with the bytes that arrived, never with what a piece claims.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nexus_protocol::error::{ErrorCode, WireError};

/// The most bytes of a request in one piece.
pub const MAX_CHUNK: usize = 4 << 20;
/// Room left in a frame for what wraps a piece (the request's envelope and the piece's numbers).
const ENVELOPE: usize = 1 << 10;

/// The size of the pieces sent over connections whose frames hold `max_frame_len` bytes:
/// [`MAX_CHUNK`], or less when the frames are small (half a frame, so a piece with its envelope
/// always fits).
pub fn chunk_size(max_frame_len: usize) -> usize {
    (max_frame_len / 2).clamp(ENVELOPE, MAX_CHUNK)
}

/// `bytes` as pieces of at most `chunk` bytes, each with its offset: the pieces in order, none
/// empty (no piece at all for empty bytes).
pub fn split(bytes: &[u8], chunk: usize) -> impl Iterator<Item = (u64, &[u8])> {
    bytes.chunks(chunk.max(1)).scan(0u64, |offset, piece| {
        let at = *offset;
        *offset += piece.len() as u64;
        Some((at, piece))
    })
}

/// One piece as it arrived (`PeerRequest::Chunk`'s fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece<'a> {
    pub transfer: u64,
    pub offset: u64,
    pub total: u64,
    pub bytes: &'a [u8],
}

/// What an assembler holds at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The largest request, in bytes.
    pub max_total: u64,
    /// The sum of the totals of every transfer in flight.
    pub max_in_flight: u64,
    /// A transfer that got no piece for this long is dropped.
    pub idle: Duration,
}

impl Default for Bounds {
    /// 2 GiB in flight in all (a snapshot of 250,000 workspaces is a few hundred MiB), and a
    /// minute without a piece: the sender waits for each piece's answer at most 30 s.
    fn default() -> Bounds {
        Bounds {
            max_total: 2 << 30,
            max_in_flight: 2 << 30,
            idle: Duration::from_secs(60),
        }
    }
}

/// What a piece did.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// More pieces are to come.
    More,
    /// That was the last piece: the whole request's bytes.
    Whole(Vec<u8>),
}

/// Why a piece was refused. Its sender's transfer in flight, if any, is dropped with it: the
/// sender starts over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("an empty piece of transfer {transfer}")]
    Empty { transfer: u64 },
    #[error(
        "a piece of transfer {transfer} at {offset} with {len} bytes runs past its total of {total}"
    )]
    PastTotal {
        transfer: u64,
        offset: u64,
        len: usize,
        total: u64,
    },
    #[error("a request of {total} bytes in pieces; at most {max}")]
    TooLarge { total: u64, max: u64 },
    #[error(
        "{in_flight} bytes of other requests in pieces are in flight; {total} more would pass {max}"
    )]
    Busy {
        total: u64,
        in_flight: u64,
        max: u64,
    },
    #[error("a piece at {offset} of transfer {transfer}, which is not in flight (it starts at 0)")]
    Unknown { transfer: u64, offset: u64 },
    #[error("a piece of transfer {transfer} says its total is {total}, not {was}")]
    TotalChanged { transfer: u64, total: u64, was: u64 },
    #[error("a piece of transfer {transfer} at {offset}; the next one starts at {expected}")]
    OutOfOrder {
        transfer: u64,
        offset: u64,
        expected: u64,
    },
}

impl ChunkError {
    /// The error the sender is told: a request larger than this node takes is an invalid
    /// argument, too much in flight is a retry later, anything else breaks the protocol.
    pub fn to_wire(&self) -> WireError {
        let code = match self {
            ChunkError::TooLarge { .. } => ErrorCode::InvalidArgument,
            ChunkError::Busy { .. } => ErrorCode::ResourceExhausted,
            _ => ErrorCode::ProtocolError,
        };
        WireError::new(code, self.to_string())
    }
}

#[derive(Debug)]
struct Transfer {
    id: u64,
    total: u64,
    bytes: Vec<u8>,
    last: Instant,
}

/// Transfers in flight, one per sender (`K`: who sent it, as its certificate says).
#[derive(Debug)]
pub struct Assembler<K> {
    bounds: Bounds,
    transfers: BTreeMap<K, Transfer>,
}

impl<K: Ord + Clone> Assembler<K> {
    pub fn new(bounds: Bounds) -> Assembler<K> {
        Assembler {
            bounds,
            transfers: BTreeMap::new(),
        }
    }

    /// Takes `piece` from `from` at `now`. A piece at offset 0 starts a transfer (dropping the
    /// sender's older one: a sender sends one at a time, so that one was abandoned); any other
    /// continues the sender's transfer in flight, exactly where it stands.
    pub fn take(
        &mut self,
        from: &K,
        piece: Piece<'_>,
        now: Instant,
    ) -> Result<Progress, ChunkError> {
        self.expire(now);
        let result = self.step(from, piece, now);
        if result.is_err() {
            self.transfers.remove(from);
        }
        result
    }

    fn step(&mut self, from: &K, piece: Piece<'_>, now: Instant) -> Result<Progress, ChunkError> {
        let Piece {
            transfer,
            offset,
            total,
            bytes,
        } = piece;
        if bytes.is_empty() {
            return Err(ChunkError::Empty { transfer });
        }
        if total > self.bounds.max_total {
            return Err(ChunkError::TooLarge {
                total,
                max: self.bounds.max_total,
            });
        }
        let len = bytes.len();
        if offset.checked_add(len as u64).is_none_or(|end| end > total) {
            return Err(ChunkError::PastTotal {
                transfer,
                offset,
                len,
                total,
            });
        }
        if offset == 0 {
            self.transfers.remove(from);
            let in_flight: u64 = self.transfers.values().map(|t| t.total).sum();
            if in_flight.saturating_add(total) > self.bounds.max_in_flight {
                return Err(ChunkError::Busy {
                    total,
                    in_flight,
                    max: self.bounds.max_in_flight,
                });
            }
            self.transfers.insert(
                from.clone(),
                Transfer {
                    id: transfer,
                    total,
                    bytes: Vec::new(),
                    last: now,
                },
            );
        }
        let Some(current) = self.transfers.get_mut(from).filter(|t| t.id == transfer) else {
            return Err(ChunkError::Unknown { transfer, offset });
        };
        if current.total != total {
            return Err(ChunkError::TotalChanged {
                transfer,
                total,
                was: current.total,
            });
        }
        let expected = current.bytes.len() as u64;
        if offset != expected {
            return Err(ChunkError::OutOfOrder {
                transfer,
                offset,
                expected,
            });
        }
        current.bytes.extend_from_slice(bytes);
        current.last = now;
        if current.bytes.len() as u64 == total {
            let whole = self
                .transfers
                .remove(from)
                .map(|t| t.bytes)
                .unwrap_or_default();
            return Ok(Progress::Whole(whole));
        }
        Ok(Progress::More)
    }

    /// Drops the transfers that got no piece within the idle bound before `now`; answers how
    /// many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.transfers.len();
        let idle = self.bounds.idle;
        self.transfers
            .retain(|_, t| now.saturating_duration_since(t.last) < idle);
        before - self.transfers.len()
    }

    /// The transfers in flight.
    pub fn in_flight(&self) -> usize {
        self.transfers.len()
    }

    /// The bytes held by transfers in flight.
    pub fn held(&self) -> usize {
        self.transfers.values().map(|t| t.bytes.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    // Tests fail by panicking.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn pieces_fit_the_frames_they_travel_in() {
        for (frame, chunk) in [
            (16 << 20, 4 << 20),
            (256 << 20, 4 << 20),
            (1 << 20, 512 << 10),
            (4096, 2048),
            (100, 1024),
        ] {
            assert_eq!(chunk_size(frame), chunk, "frame of {frame} bytes");
        }
    }

    #[test]
    fn splitting_covers_every_byte_once_in_order() {
        let bytes: Vec<u8> = (0..=255).cycle().take(10_000).collect();
        for chunk in [1, 7, 4096, 9_999, 10_000, 10_001] {
            let pieces: Vec<(u64, &[u8])> = split(&bytes, chunk).collect();
            assert_eq!(pieces.len(), bytes.len().div_ceil(chunk), "chunk {chunk}");
            let mut expected = 0;
            for (offset, piece) in &pieces {
                assert_eq!(*offset, expected);
                assert!(!piece.is_empty() && piece.len() <= chunk);
                expected += piece.len() as u64;
            }
            let joined: Vec<u8> = pieces
                .iter()
                .flat_map(|(_, piece)| piece.iter().copied())
                .collect();
            assert_eq!(joined, bytes);
        }
        assert_eq!(split(&[], 4).count(), 0);
    }

    fn bounds() -> Bounds {
        Bounds {
            max_total: 100,
            max_in_flight: 150,
            idle: Duration::from_secs(60),
        }
    }

    fn piece(transfer: u64, offset: u64, total: u64, bytes: &[u8]) -> Piece<'_> {
        Piece {
            transfer,
            offset,
            total,
            bytes,
        }
    }

    /// A piece as a table gives it: sender, transfer, offset, total, length.
    type Row = (u8, u64, u64, u64, usize);

    /// Feeds `pieces` (sender, transfer, offset, total, length) in order, one second apart, and
    /// answers each one's outcome: "more", "whole N" (N bytes), or the error's variant.
    fn run(pieces: &[Row]) -> Vec<String> {
        let start = Instant::now();
        let mut assembler = Assembler::new(bounds());
        let data = [7u8; 200];
        pieces
            .iter()
            .enumerate()
            .map(|(i, &(from, transfer, offset, total, len))| {
                let now = start + Duration::from_secs(i as u64);
                match assembler.take(&from, piece(transfer, offset, total, &data[..len]), now) {
                    Ok(Progress::More) => "more".to_string(),
                    Ok(Progress::Whole(bytes)) => format!("whole {}", bytes.len()),
                    Err(error) => format!("{error:?}")
                        .split([' ', '{'])
                        .next()
                        .unwrap()
                        .to_string(),
                }
            })
            .collect()
    }

    #[test]
    fn pieces_in_order_make_the_whole_and_bad_sequences_are_refused() {
        let cases: &[(&str, &[Row], &[&str])] = &[
            ("one piece", &[(1, 9, 0, 10, 10)], &["whole 10"]),
            (
                "three pieces",
                &[(1, 9, 0, 25, 10), (1, 9, 10, 25, 10), (1, 9, 20, 25, 5)],
                &["more", "more", "whole 25"],
            ),
            (
                "two senders side by side",
                &[
                    (1, 9, 0, 20, 10),
                    (2, 9, 0, 20, 10),
                    (2, 9, 10, 20, 10),
                    (1, 9, 10, 20, 10),
                ],
                &["more", "more", "whole 20", "whole 20"],
            ),
            ("an empty piece", &[(1, 9, 0, 10, 0)], &["Empty"]),
            (
                "a total above the bound",
                &[(1, 9, 0, 101, 10)],
                &["TooLarge"],
            ),
            ("past the total", &[(1, 9, 0, 5, 10)], &["PastTotal"]),
            (
                "an offset that overflows",
                &[(1, 9, u64::MAX, 100, 10)],
                &["PastTotal"],
            ),
            ("no start", &[(1, 9, 10, 20, 10)], &["Unknown"]),
            (
                "a gap",
                &[(1, 9, 0, 30, 10), (1, 9, 20, 30, 10)],
                &["more", "OutOfOrder"],
            ),
            (
                "an overlap",
                &[(1, 9, 0, 30, 10), (1, 9, 5, 30, 10)],
                &["more", "OutOfOrder"],
            ),
            (
                "a piece sent twice",
                &[(1, 9, 0, 30, 10), (1, 9, 10, 30, 10), (1, 9, 10, 30, 10)],
                &["more", "more", "OutOfOrder"],
            ),
            (
                "a total that changes",
                &[(1, 9, 0, 30, 10), (1, 9, 10, 40, 10)],
                &["more", "TotalChanged"],
            ),
            (
                "another transfer's piece",
                &[(1, 9, 0, 30, 10), (1, 8, 10, 30, 10)],
                &["more", "Unknown"],
            ),
            (
                "a refusal drops the transfer",
                &[(1, 9, 0, 30, 10), (1, 9, 20, 30, 10), (1, 9, 10, 30, 10)],
                &["more", "OutOfOrder", "Unknown"],
            ),
            (
                "a new start replaces the sender's transfer",
                &[(1, 9, 0, 30, 10), (1, 8, 0, 20, 10), (1, 8, 10, 20, 10)],
                &["more", "more", "whole 20"],
            ),
            (
                "a piece of another sender's transfer",
                &[(1, 9, 0, 30, 10), (2, 9, 10, 30, 10), (1, 9, 10, 30, 20)],
                &["more", "Unknown", "whole 30"],
            ),
            (
                "too much in flight together",
                &[(1, 9, 0, 100, 10), (2, 9, 0, 60, 10), (2, 9, 0, 50, 10)],
                &["more", "Busy", "more"],
            ),
            (
                "a sender's restart does not count its old transfer",
                &[(1, 9, 0, 100, 10), (1, 8, 0, 100, 10), (1, 8, 10, 100, 90)],
                &["more", "more", "whole 100"],
            ),
        ];
        for (name, pieces, expected) in cases {
            assert_eq!(run(pieces), *expected, "{name}");
        }
    }

    #[test]
    fn abandoned_transfers_expire_and_free_their_room() {
        let start = Instant::now();
        let mut assembler = Assembler::new(bounds());
        let data = [1u8; 50];
        let more = assembler.take(&1u8, piece(9, 0, 100, &data), start);
        assert_eq!(more, Ok(Progress::More));
        assert_eq!((assembler.in_flight(), assembler.held()), (1, 50));
        assert_eq!(assembler.expire(start + Duration::from_secs(59)), 0);
        // A second sender's transfer does not fit beside the first...
        let busy = assembler.take(
            &2u8,
            piece(3, 0, 100, &data),
            start + Duration::from_secs(59),
        );
        assert!(matches!(busy, Err(ChunkError::Busy { .. })), "{busy:?}");
        // ... until the first is abandoned long enough.
        let later = start + Duration::from_secs(60);
        let more = assembler.take(&2u8, piece(3, 0, 100, &data), later);
        assert_eq!(more, Ok(Progress::More));
        assert_eq!((assembler.in_flight(), assembler.held()), (1, 50));
        let gone = assembler.take(&1u8, piece(9, 50, 100, &data), later);
        assert!(matches!(gone, Err(ChunkError::Unknown { .. })), "{gone:?}");
        assert_eq!(assembler.expire(later + Duration::from_secs(60)), 1);
        assert_eq!((assembler.in_flight(), assembler.held()), (0, 0));
    }

    #[test]
    fn errors_carry_stable_codes() {
        let too_large = ChunkError::TooLarge { total: 5, max: 4 }.to_wire();
        assert_eq!(too_large.code, ErrorCode::InvalidArgument);
        assert!(
            too_large.message.contains("at most 4"),
            "{}",
            too_large.message
        );
        let busy = ChunkError::Busy {
            total: 1,
            in_flight: 4,
            max: 4,
        };
        assert_eq!(busy.to_wire().code, ErrorCode::ResourceExhausted);
        let gap = ChunkError::OutOfOrder {
            transfer: 1,
            offset: 9,
            expected: 3,
        };
        assert_eq!(gap.to_wire().code, ErrorCode::ProtocolError);
    }
}
