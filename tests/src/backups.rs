//! Backup files damaged on purpose, for the suites that check every reader refuses them: the
//! offline restore, `admin backup inspect|verify FILE`, and the online restore. Each copy comes
//! with the code a reader that checks the cluster must refuse it with.

use nexus_protocol::backup::{self, FORMAT};
use nexus_protocol::error::ErrorCode;

/// How a copy was damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// One byte of the payload flipped: the checksum no longer matches.
    FlippedByte,
    /// The last 100 bytes cut off.
    Truncated,
    /// A file format newer than this build's (the layout is not even read).
    FutureFileFormat,
    /// A state format newer than this build's, sealed with a good checksum.
    FutureStateFormat,
    /// A good backup of another cluster (another CA), sealed with a good checksum.
    OtherCluster,
}

impl Damage {
    pub const ALL: [Damage; 5] = [
        Damage::FlippedByte,
        Damage::Truncated,
        Damage::FutureFileFormat,
        Damage::FutureStateFormat,
        Damage::OtherCluster,
    ];

    /// The code every reader refuses it with (a reader that checks the cluster, for
    /// [`Damage::OtherCluster`]).
    pub fn code(self) -> ErrorCode {
        match self {
            Damage::FlippedByte | Damage::Truncated => ErrorCode::BackupCorrupt,
            Damage::FutureFileFormat | Damage::FutureStateFormat => {
                ErrorCode::BackupVersionUnsupported
            }
            Damage::OtherCluster => ErrorCode::BackupClusterMismatch,
        }
    }
}

/// A copy of the good backup `file` with `damage`.
pub fn damaged(file: &[u8], damage: Damage) -> Vec<u8> {
    let decoded = backup::decode(file, u32::MAX).expect("a good backup to damage");
    let mut header = decoded.header.clone();
    match damage {
        Damage::FlippedByte => {
            let mut copy = file.to_vec();
            // Inside the payload: the length fields stay plausible, only the checksum fails.
            let at = copy.len() - 32 - decoded.payload.len() / 2 - 1;
            copy[at] ^= 0x20;
            copy
        }
        Damage::Truncated => file[..file.len().saturating_sub(100)].to_vec(),
        Damage::FutureFileFormat => {
            let mut copy = file.to_vec();
            copy[8..10].copy_from_slice(&(FORMAT + 1).to_be_bytes());
            copy
        }
        Damage::FutureStateFormat => {
            header.state_format += 1;
            backup::encode(&header, decoded.payload).expect("a backup")
        }
        Damage::OtherCluster => {
            header.cluster = "0f".repeat(32);
            backup::encode(&header, decoded.payload).expect("a backup")
        }
    }
}

/// Every damaged copy of `file`, each with the code it is refused with.
pub fn damaged_copies(file: &[u8]) -> Vec<(Damage, Vec<u8>, ErrorCode)> {
    Damage::ALL
        .into_iter()
        .map(|damage| (damage, damaged(file, damage), damage.code()))
        .collect()
}
