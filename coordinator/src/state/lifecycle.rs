//! Each workspace's lifecycle record: when it was last in use and why, which the lifecycle
//! policies read. Recorded by `apply` (a user's start, an agent's activity report), never by a
//! clock: the time is the proposal's or the agent's.
//!
//! Not here: the policies' decisions (`crate::policy`), nor the commands a policy proposes.

use nexus_protocol::WorkspaceName;
use nexus_protocol::clock::Timestamp;
use nexus_protocol::model::{Activity, ActivityKind};
use serde::{Deserialize, Serialize};

use super::{Outcome, State};

/// What a workspace's lifecycle policies go by. Part of its record, so part of the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// When it was last in use, and how.
    pub last_activity: Activity,
}

impl Lifecycle {
    /// A new workspace's: in use since its creation.
    pub fn created(at: Timestamp) -> Lifecycle {
        Lifecycle {
            last_activity: Activity {
                at,
                kind: ActivityKind::Created,
            },
        }
    }

    /// Keeps `activity` if it is newer than what is recorded (reports may come late or twice).
    pub fn touch(&mut self, activity: Activity) -> bool {
        if activity.at > self.last_activity.at {
            self.last_activity = activity;
            true
        } else {
            false
        }
    }
}

impl State {
    /// Records what agents saw their workspaces used for. A workspace no longer known is
    /// skipped: its report crossed its destroy.
    pub(super) fn record_activity(&mut self, activity: &[(WorkspaceName, Activity)]) -> Outcome {
        for (name, activity) in activity {
            if let Some(workspace) = self.workspaces.get_mut(name) {
                workspace.lifecycle.touch(*activity);
            }
        }
        Outcome::Applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: u64, kind: ActivityKind) -> Activity {
        Activity {
            at: Timestamp::from_millis(millis),
            kind,
        }
    }

    #[test]
    fn only_newer_activity_is_kept() {
        let mut lifecycle = Lifecycle::created(Timestamp::from_millis(10));
        assert!(lifecycle.touch(at(20, ActivityKind::Exec)));
        assert!(!lifecycle.touch(at(15, ActivityKind::Logs)));
        assert!(!lifecycle.touch(at(20, ActivityKind::Logs)));
        assert_eq!(lifecycle.last_activity, at(20, ActivityKind::Exec));
    }
}
