//! Applying a restore: a backup's state replaces this one, except what belongs to the running
//! cluster rather than to the backup.

use nexus_protocol::backup::BackupHeader;
use nexus_protocol::error::ErrorCode;

use super::{Origin, Outcome, State, reject};

impl State {
    pub(super) fn restore(
        &mut self,
        _origin: Origin<'_>,
        _header: &BackupHeader,
        _state: &[u8],
    ) -> Outcome {
        reject(
            ErrorCode::Unsupported,
            "restoring a backup is not built yet",
        )
    }
}
