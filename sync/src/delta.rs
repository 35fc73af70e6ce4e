//! Delta transfer for a changed file, as rsync does it: the side that has the old version sends
//! the signature of its blocks (a rolling checksum and a strong hash of each); the side with the
//! new version finds those blocks in it, at any offset, and sends only references to them and
//! the bytes in between; the first side rebuilds the new version from its old blocks and those
//! bytes, and checks the result against the new version's digest before using it. Pure:
//! bytes in, bytes out.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::tree::Digest;

/// Files smaller than this go whole: a signature would cost about as much.
pub const WORTH_A_DELTA: u64 = 64 << 10;

/// What the old version holds, block by block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub block_size: u32,
    /// Per full block: the rolling checksum and the first 16 bytes of its SHA-256. A shorter
    /// last block is not listed; its bytes travel as literals if they are still there.
    pub blocks: Vec<(u32, [u8; 16])>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `count` blocks of the old version, from block `first`.
    Copy {
        first: u32,
        count: u32,
    },
    Literal(#[serde(with = "serde_bytes")] Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    #[error("the delta refers to block {0}, which the old version does not have")]
    NoSuchBlock(u64),
    #[error("the rebuilt file does not match its digest")]
    Mismatch,
}

/// The block size for a file of `len` bytes: about its square root (rsync's choice, which
/// balances the signature's size against the literal bytes a change costs), within 1–64 KiB.
pub fn block_size_for(len: u64) -> u32 {
    let root = (len as f64).sqrt() as u64;
    let rounded = root.div_ceil(1024) * 1024;
    u32::try_from(rounded.clamp(1 << 10, 64 << 10)).unwrap_or(64 << 10)
}

/// The signature of `old`.
pub fn signature(old: &[u8]) -> Signature {
    let block_size = block_size_for(old.len() as u64);
    let blocks = old
        .chunks_exact(block_size as usize)
        .map(|block| (Rolling::of(block).value(), strong(block)))
        .collect();
    Signature { block_size, blocks }
}

/// The operations that turn the old version (known by its signature) into `new`.
pub fn delta(signature: &Signature, new: &[u8]) -> Vec<Op> {
    let size = signature.block_size as usize;
    let mut ops = Vec::new();
    if size == 0 || signature.blocks.is_empty() || new.len() < size {
        if !new.is_empty() {
            ops.push(Op::Literal(new.to_vec()));
        }
        return ops;
    }
    let mut by_weak: HashMap<u32, Vec<u32>> = HashMap::new();
    for (index, (weak, _)) in signature.blocks.iter().enumerate() {
        by_weak
            .entry(*weak)
            .or_default()
            .push(u32::try_from(index).unwrap_or(u32::MAX));
    }
    let mut literal_from = 0;
    let mut at = 0;
    let mut rolling = Rolling::of(&new[..size]);
    loop {
        let found = by_weak.get(&rolling.value()).and_then(|candidates| {
            let hash = strong(&new[at..at + size]);
            candidates
                .iter()
                .copied()
                .find(|&i| signature.blocks[i as usize].1 == hash)
        });
        if let Some(index) = found {
            if literal_from < at {
                ops.push(Op::Literal(new[literal_from..at].to_vec()));
            }
            push_copy(&mut ops, index);
            at += size;
            literal_from = at;
            if at + size > new.len() {
                break;
            }
            rolling = Rolling::of(&new[at..at + size]);
            continue;
        }
        if at + size >= new.len() {
            break;
        }
        rolling.roll(new[at], new[at + size], size);
        at += 1;
    }
    if literal_from < new.len() {
        ops.push(Op::Literal(new[literal_from..].to_vec()));
    }
    ops
}

/// Extends the last copy when `index` follows it, else starts a new one.
fn push_copy(ops: &mut Vec<Op>, index: u32) {
    if let Some(Op::Copy { first, count }) = ops.last_mut()
        && u64::from(*first) + u64::from(*count) == u64::from(index)
    {
        *count += 1;
        return;
    }
    ops.push(Op::Copy {
        first: index,
        count: 1,
    });
}

/// Rebuilds the new version from `old`, its block size and `ops`, and checks it against
/// `digest`.
pub fn patch(
    old: &[u8],
    block_size: u32,
    ops: &[Op],
    digest: &Digest,
) -> Result<Vec<u8>, DeltaError> {
    let size = block_size as usize;
    let mut new = Vec::new();
    for op in ops {
        match op {
            Op::Literal(bytes) => new.extend_from_slice(bytes),
            Op::Copy { first, count } => {
                let start = u64::from(*first) * u64::from(block_size);
                let end = start + u64::from(*count) * u64::from(block_size);
                if size == 0 || end > old.len() as u64 {
                    return Err(DeltaError::NoSuchBlock(
                        u64::from(*first) + u64::from(*count),
                    ));
                }
                new.extend_from_slice(&old[start as usize..end as usize]);
            }
        }
    }
    if crate::scan::digest_bytes(&new) == *digest {
        Ok(new)
    } else {
        Err(DeltaError::Mismatch)
    }
}

/// The bytes a delta carries.
pub fn literal_bytes(ops: &[Op]) -> usize {
    ops.iter()
        .map(|op| match op {
            Op::Literal(bytes) => bytes.len(),
            Op::Copy { .. } => 0,
        })
        .sum()
}

fn strong(block: &[u8]) -> [u8; 16] {
    let digest = ring::digest::digest(&ring::digest::SHA256, block);
    let mut out = [0; 16];
    out.copy_from_slice(&digest.as_ref()[..16]);
    out
}

/// rsync's rolling checksum: two 16-bit sums over a window, updated in O(1) as it slides.
#[derive(Debug, Clone, Copy)]
struct Rolling {
    a: u32,
    b: u32,
}

impl Rolling {
    fn of(window: &[u8]) -> Rolling {
        let len = window.len() as u32;
        let mut rolling = Rolling { a: 0, b: 0 };
        for (i, &byte) in window.iter().enumerate() {
            rolling.a = rolling.a.wrapping_add(u32::from(byte));
            rolling.b = rolling
                .b
                .wrapping_add((len - i as u32).wrapping_mul(u32::from(byte)));
        }
        rolling
    }

    /// Slides the window one byte: `out` leaves at the front, `enter` joins at the back.
    fn roll(&mut self, out: u8, enter: u8, len: usize) {
        let (out, enter) = (u32::from(out), u32::from(enter));
        self.a = self.a.wrapping_sub(out).wrapping_add(enter);
        self.b = self
            .b
            .wrapping_sub((len as u32).wrapping_mul(out))
            .wrapping_add(self.a);
    }

    fn value(self) -> u32 {
        (self.a & 0xffff) | (self.b << 16)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn digest(bytes: &[u8]) -> Digest {
        crate::scan::digest_bytes(bytes)
    }

    #[test]
    fn the_rolling_checksum_slides_as_it_would_be_computed_afresh() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        let len = 700;
        let mut rolling = Rolling::of(&data[..len]);
        for at in 0..data.len() - len {
            rolling.roll(data[at], data[at + len], len);
            assert_eq!(
                rolling.value(),
                Rolling::of(&data[at + 1..at + 1 + len]).value()
            );
        }
    }

    #[test]
    fn a_small_edit_in_a_large_file_costs_little() {
        let old: Vec<u8> = (0..4_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let mut new = old.clone();
        new.splice(1_000_000..1_000_000, b"inserted here".iter().copied());
        new[3_000_000] ^= 0xff;
        let signature = signature(&old);
        let ops = delta(&signature, &new);
        let rebuilt = patch(&old, signature.block_size, &ops, &digest(&new));
        assert_eq!(rebuilt.as_deref(), Ok(&new[..]));
        // Two touched blocks (about 2 KiB each here) plus the insertion, not 4 MB.
        assert!(
            literal_bytes(&ops) < 3 * signature.block_size as usize,
            "{}",
            literal_bytes(&ops)
        );
    }

    #[test]
    fn a_wrong_delta_is_refused() {
        let old = vec![1u8; 10_000];
        let new = vec![2u8; 10_000];
        let signature = signature(&old);
        let ops = delta(&signature, &new);
        assert_eq!(
            patch(&old, signature.block_size, &ops, &digest(&old)),
            Err(DeltaError::Mismatch)
        );
        let beyond = [Op::Copy {
            first: 1_000,
            count: 1,
        }];
        assert!(matches!(
            patch(&old, signature.block_size, &beyond, &digest(&new)),
            Err(DeltaError::NoSuchBlock(_))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn any_new_version_is_rebuilt_exactly(
            old in proptest::collection::vec(0u8..4, 0..6_000),
            edits in proptest::collection::vec((0usize..6_000, 0usize..300, proptest::collection::vec(0u8..4, 0..300)), 0..5),
        ) {
            let mut new = old.clone();
            for (at, remove, insert) in edits {
                let at = at.min(new.len());
                let end = (at + remove).min(new.len());
                new.splice(at..end, insert);
            }
            let signature = signature(&old);
            let ops = delta(&signature, &new);
            let rebuilt = patch(&old, signature.block_size, &ops, &digest(&new));
            prop_assert_eq!(rebuilt.as_deref(), Ok(&new[..]));
        }
    }
}
