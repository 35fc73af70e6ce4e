//! A backup file of the replicated state: what it holds and how it is checked. Pure: bytes in,
//! bytes out; where the files live and when they are made is the coordinator's business, and
//! reading one from disk the caller's.
//!
//! ```text
//! offset      size  what
//! 0           8     magic "NXBACKUP"
//! 8           2     file format, big-endian (FORMAT)
//! 10          4     header length H, big-endian
//! 14          H     the header (bincode: BackupHeader)
//! 14+H        8     payload length P, big-endian
//! 22+H        P     the payload: the state machine's snapshot bytes
//! 22+H+P      32    SHA-256 of every byte before it
//! ```
//!
//! The magic and the format come first and are read before anything else, so a file from a
//! newer Nexus is refused as such (`BACKUP_VERSION_UNSUPPORTED`) even when the rest of its layout
//! is unknown here. Then the lengths (a short file is truncated, a long one has trailing bytes),
//! then the checksum over everything, and only then is the header decoded: nothing in a file that
//! fails its checksum is believed.

use crate::codec;
use crate::error::{ErrorCode, WireError};
use crate::hash::{self, Sha256};
pub use crate::model::{BackupHeader, BackupInfo, BackupSchedule};

/// The file's opening bytes.
pub const MAGIC: [u8; 8] = *b"NXBACKUP";
/// The file format this build writes and reads.
pub const FORMAT: u16 = 1;
/// A backup file's name ends in this.
pub const EXTENSION: &str = "nxbackup";
/// The largest header a reader accepts (the header is small: ids, numbers and counts).
pub const MAX_HEADER_LEN: u32 = 64 << 10;

const PREFIX_LEN: usize = 8 + 2 + 4;
const PAYLOAD_LEN_LEN: usize = 8;
const DIGEST_LEN: usize = 32;

/// Why bytes are not a backup this build can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupError {
    #[error("not a Nexus backup (it does not start with {MAGIC:?})")]
    NotABackup,
    #[error("the backup is truncated: {have} of {want} bytes")]
    Truncated { have: u64, want: u64 },
    #[error("the backup has {0} bytes after its checksum")]
    Trailing(u64),
    #[error("the backup's checksum does not match: it was changed or damaged after it was written")]
    Checksum,
    #[error("the backup's header is damaged: {0}")]
    Header(String),
    #[error("the backup is in file format {found}; this Nexus reads format {FORMAT} and older")]
    FileFormat { found: u16 },
    #[error("the backup holds state format {found}; this Nexus reads state format {supported}")]
    StateFormat { found: u32, supported: u32 },
    #[error("cannot write the backup: {0}")]
    Encode(String),
}

impl BackupError {
    pub fn code(&self) -> ErrorCode {
        match self {
            BackupError::FileFormat { .. } | BackupError::StateFormat { .. } => {
                ErrorCode::BackupVersionUnsupported
            }
            BackupError::Encode(_) => ErrorCode::Internal,
            _ => ErrorCode::BackupCorrupt,
        }
    }

    pub fn to_wire(&self) -> WireError {
        WireError::new(self.code(), self.to_string())
    }
}

/// A backup file: header and payload, sealed with their checksum.
pub fn encode(header: &BackupHeader, payload: &[u8]) -> Result<Vec<u8>, BackupError> {
    let header_bytes =
        codec::encode_payload(header).map_err(|e| BackupError::Encode(e.to_string()))?;
    let header_len = u32::try_from(header_bytes.len())
        .ok()
        .filter(|len| *len <= MAX_HEADER_LEN)
        .ok_or_else(|| BackupError::Encode("the header is too large".to_string()))?;
    let mut file = Vec::with_capacity(
        PREFIX_LEN + header_bytes.len() + PAYLOAD_LEN_LEN + payload.len() + DIGEST_LEN,
    );
    file.extend_from_slice(&MAGIC);
    file.extend_from_slice(&FORMAT.to_be_bytes());
    file.extend_from_slice(&header_len.to_be_bytes());
    file.extend_from_slice(&header_bytes);
    file.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    file.extend_from_slice(payload);
    let digest = hash::sha256(&file);
    file.extend_from_slice(&digest);
    Ok(file)
}

/// A backup file read and checked: its header, its payload (a slice of the file) and its
/// checksum in hex. `state_format` is the newest state format the caller reads.
pub fn decode(file: &[u8], state_format: u32) -> Result<Decoded<'_>, BackupError> {
    let layout = layout(file)?;
    let digest = &file[layout.digest_at..];
    let mut hash = Sha256::default();
    hash.update(&file[..layout.digest_at]);
    if hash.finish() != digest {
        return Err(BackupError::Checksum);
    }
    let header: BackupHeader = codec::decode(&file[PREFIX_LEN..layout.header_end])
        .map_err(|e| BackupError::Header(e.to_string()))?;
    if header.state_format > state_format {
        return Err(BackupError::StateFormat {
            found: header.state_format,
            supported: state_format,
        });
    }
    Ok(Decoded {
        header,
        payload: &file[layout.payload_at..layout.digest_at],
        sha256: hash::hex(digest),
    })
}

/// The header of a backup file from its first bytes (at least [`HEADER_READ_LEN`] of them, or the
/// whole file if it is shorter), **without** checking the checksum: for listing a directory of
/// large files cheaply. Nothing read this way is trusted; [`decode`] is what checks.
pub fn peek_header(start: &[u8]) -> Result<BackupHeader, BackupError> {
    if start.len() < MAGIC.len() || start[..MAGIC.len()] != MAGIC {
        return Err(BackupError::NotABackup);
    }
    if start.len() < PREFIX_LEN {
        return Err(BackupError::Truncated {
            have: start.len() as u64,
            want: PREFIX_LEN as u64,
        });
    }
    let format = u16::from_be_bytes([start[8], start[9]]);
    if format > FORMAT {
        return Err(BackupError::FileFormat { found: format });
    }
    let header_len = u32::from_be_bytes([start[10], start[11], start[12], start[13]]);
    if header_len > MAX_HEADER_LEN {
        return Err(BackupError::Header(format!(
            "a header of {header_len} bytes (at most {MAX_HEADER_LEN})"
        )));
    }
    let header_end = PREFIX_LEN + header_len as usize;
    if start.len() < header_end {
        return Err(BackupError::Truncated {
            have: start.len() as u64,
            want: header_end as u64,
        });
    }
    codec::decode(&start[PREFIX_LEN..header_end]).map_err(|e| BackupError::Header(e.to_string()))
}

/// How many of a file's first bytes [`peek_header`] needs at most.
pub const HEADER_READ_LEN: usize = PREFIX_LEN + MAX_HEADER_LEN as usize;

/// The length of the checksum that ends every backup file.
pub const DIGEST_BYTES: usize = DIGEST_LEN;

/// A backup file, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<'a> {
    pub header: BackupHeader,
    pub payload: &'a [u8],
    pub sha256: String,
}

/// Where a file's parts are, from its lengths; refuses what is not a backup of a known format
/// and what is shorter or longer than its lengths say.
struct Layout {
    header_end: usize,
    payload_at: usize,
    digest_at: usize,
}

fn layout(file: &[u8]) -> Result<Layout, BackupError> {
    if file.len() < MAGIC.len() || file[..MAGIC.len()] != MAGIC {
        return Err(BackupError::NotABackup);
    }
    let truncated = |want: u64| BackupError::Truncated {
        have: file.len() as u64,
        want,
    };
    if file.len() < PREFIX_LEN {
        return Err(truncated(PREFIX_LEN as u64));
    }
    let format = u16::from_be_bytes([file[8], file[9]]);
    if format > FORMAT {
        return Err(BackupError::FileFormat { found: format });
    }
    if format == 0 {
        return Err(BackupError::Header("file format 0".to_string()));
    }
    let header_len = u32::from_be_bytes([file[10], file[11], file[12], file[13]]);
    if header_len > MAX_HEADER_LEN {
        return Err(BackupError::Header(format!(
            "a header of {header_len} bytes (at most {MAX_HEADER_LEN})"
        )));
    }
    let header_end = PREFIX_LEN + header_len as usize;
    let payload_at = header_end + PAYLOAD_LEN_LEN;
    if file.len() < payload_at {
        return Err(truncated(payload_at as u64));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&file[header_end..payload_at]);
    let payload_len = u64::from_be_bytes(len);
    let want = (payload_at as u64)
        .checked_add(payload_len)
        .and_then(|end| end.checked_add(DIGEST_LEN as u64))
        .ok_or_else(|| BackupError::Header(format!("a payload of {payload_len} bytes")))?;
    let have = file.len() as u64;
    if have < want {
        return Err(truncated(want));
    }
    if have > want {
        return Err(BackupError::Trailing(have - want));
    }
    Ok(Layout {
        header_end,
        payload_at,
        digest_at: file.len() - DIGEST_LEN,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::id::NodeId;

    const STATE_FORMAT: u32 = 4;

    fn header() -> BackupHeader {
        BackupHeader {
            id: "20261203T120000Z-i42".to_string(),
            cluster: "ab".repeat(32),
            node: NodeId::new(1).unwrap(),
            index: 42,
            term: 3,
            created_at: Timestamp::from_millis(1_796_299_200_000),
            software: "0.1.0".to_string(),
            state_format: STATE_FORMAT,
            counts: vec![("hosts".to_string(), 2), ("workspaces".to_string(), 3)],
        }
    }

    fn file() -> Vec<u8> {
        encode(&header(), b"the state's bytes").unwrap()
    }

    #[test]
    fn a_backup_reads_back_as_written() {
        let file = file();
        let decoded = decode(&file, STATE_FORMAT).unwrap();
        assert_eq!(decoded.header, header());
        assert_eq!(decoded.payload, b"the state's bytes");
        assert_eq!(decoded.sha256, hash::hex(&file[file.len() - 32..]));
        assert_eq!(decoded.header.count("workspaces"), 3);
        assert_eq!(decoded.header.count("events"), 0);
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let file = file();
        for at in 0..file.len() {
            let mut damaged = file.clone();
            damaged[at] ^= 0x01;
            let error = decode(&damaged, STATE_FORMAT).unwrap_err();
            // A flip in the format or a length can read as another format or size; every flip
            // is refused, and none is taken for a good backup.
            assert!(
                matches!(
                    error.code(),
                    ErrorCode::BackupCorrupt | ErrorCode::BackupVersionUnsupported
                ),
                "byte {at}: {error}"
            );
        }
    }

    #[test]
    fn a_flipped_payload_byte_fails_the_checksum() {
        let mut file = file();
        let at = file.len() - 40;
        file[at] ^= 0x80;
        assert_eq!(decode(&file, STATE_FORMAT), Err(BackupError::Checksum));
    }

    #[test]
    fn every_truncation_is_refused_as_corrupt() {
        let file = file();
        for len in 0..file.len() {
            let error = decode(&file[..len], STATE_FORMAT).unwrap_err();
            assert_eq!(
                error.code(),
                ErrorCode::BackupCorrupt,
                "{len} bytes: {error}"
            );
        }
        let mut longer = file.clone();
        longer.push(0);
        assert_eq!(decode(&longer, STATE_FORMAT), Err(BackupError::Trailing(1)));
    }

    #[test]
    fn a_newer_file_format_is_refused_before_its_layout_is_read() {
        let mut file = file();
        file[8..10].copy_from_slice(&(FORMAT + 1).to_be_bytes());
        file.truncate(20);
        let error = decode(&file, STATE_FORMAT).unwrap_err();
        assert_eq!(error, BackupError::FileFormat { found: FORMAT + 1 });
        assert_eq!(error.code(), ErrorCode::BackupVersionUnsupported);
    }

    #[test]
    fn a_newer_state_format_is_refused() {
        let file = file();
        let error = decode(&file, STATE_FORMAT - 1).unwrap_err();
        assert_eq!(
            error,
            BackupError::StateFormat {
                found: STATE_FORMAT,
                supported: STATE_FORMAT - 1
            }
        );
        assert_eq!(error.code(), ErrorCode::BackupVersionUnsupported);
    }

    #[test]
    fn something_else_is_not_a_backup() {
        assert_eq!(
            decode(b"PK\x03\x04 a zip file", STATE_FORMAT),
            Err(BackupError::NotABackup)
        );
        assert_eq!(decode(b"", STATE_FORMAT), Err(BackupError::NotABackup));
    }

    #[test]
    fn a_header_is_peeked_from_the_first_bytes_only() {
        let file = file();
        assert_eq!(peek_header(&file[..file.len() - 40]), Ok(header()));
        assert!(matches!(
            peek_header(&file[..20]),
            Err(BackupError::Truncated { .. })
        ));
        assert_eq!(peek_header(b"nothing"), Err(BackupError::NotABackup));
    }

    #[test]
    fn a_lying_header_length_is_refused_without_reading_it() {
        let mut file = file();
        file[10..14].copy_from_slice(&u32::MAX.to_be_bytes());
        let error = decode(&file, STATE_FORMAT).unwrap_err();
        assert!(matches!(error, BackupError::Header(_)), "{error}");
    }
}
