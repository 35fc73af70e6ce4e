//! The lifecycle policies' vocabulary: what stops an idle workspace and destroys an old one, and
//! the durations they are written in (`30s`, `24h`, `7d`; `0` turns a policy off).
//!
//! Not here: the decisions (the coordinator's `policy` module), nor where the policies are kept.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::error::InvalidValue;
use crate::id::{HostId, WorkspaceName};

/// The longest a policy duration may be: about 100 years, so that no sum of them overflows.
pub const POLICY_SECS_MAX: u64 = 100 * 365 * 86_400;

/// What a workspace's lifecycle policies are. Durations in seconds; `0` turns that one off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Stop a running workspace unused for this long.
    pub inactive_stop_after_secs: u64,
    /// Destroy a workspace this long after its creation (plus what admins extended it by).
    pub max_lifetime_secs: u64,
    /// The first notice before a destroy: this long before it.
    pub first_notice_secs: u64,
    /// The last notice before a destroy: this long before it.
    pub last_notice_secs: u64,
}

impl Default for Policy {
    /// The operations spec's: stop after 7 days idle, destroy after 30 days, warned 24 h and
    /// 1 h before.
    fn default() -> Policy {
        Policy {
            inactive_stop_after_secs: 7 * 86_400,
            max_lifetime_secs: 30 * 86_400,
            first_notice_secs: 86_400,
            last_notice_secs: 3_600,
        }
    }
}

impl Policy {
    /// The two notices' leads, the longer first (whichever way they were set).
    pub fn leads_secs(&self) -> (u64, u64) {
        let (a, b) = (self.first_notice_secs, self.last_notice_secs);
        (a.max(b), a.min(b))
    }

    /// The shortest duration in force (none: `None`), which paces the policy loop.
    pub fn shortest_secs(&self) -> Option<u64> {
        let mut durations = vec![self.inactive_stop_after_secs];
        if self.max_lifetime_secs > 0 {
            durations.extend([
                self.max_lifetime_secs,
                self.first_notice_secs,
                self.last_notice_secs,
            ]);
        }
        durations.into_iter().filter(|&secs| secs > 0).min()
    }
}

/// A change of policy, or an override of it: each `Some` replaces that value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PolicyPatch {
    pub inactive_stop_after_secs: Option<u64>,
    pub max_lifetime_secs: Option<u64>,
    pub first_notice_secs: Option<u64>,
    pub last_notice_secs: Option<u64>,
}

impl PolicyPatch {
    fn values(&self) -> [(&'static str, Option<u64>); 4] {
        [
            ("inactive-stop-after", self.inactive_stop_after_secs),
            ("max-lifetime", self.max_lifetime_secs),
            ("first-notice", self.first_notice_secs),
            ("last-notice", self.last_notice_secs),
        ]
    }

    pub fn is_empty(&self) -> bool {
        self.values().iter().all(|(_, value)| value.is_none())
    }

    /// The first value past [`POLICY_SECS_MAX`], as a message.
    pub fn check(&self) -> Result<(), InvalidValue> {
        for (name, value) in self.values() {
            if let Some(secs) = value
                && secs > POLICY_SECS_MAX
            {
                return Err(InvalidValue(format!(
                    "{name} {} is longer than {}",
                    Secs(secs),
                    Secs(POLICY_SECS_MAX)
                )));
            }
        }
        Ok(())
    }

    /// `base` with this patch's values in place of its own.
    pub fn over(self, base: Policy) -> Policy {
        Policy {
            inactive_stop_after_secs: self
                .inactive_stop_after_secs
                .unwrap_or(base.inactive_stop_after_secs),
            max_lifetime_secs: self.max_lifetime_secs.unwrap_or(base.max_lifetime_secs),
            first_notice_secs: self.first_notice_secs.unwrap_or(base.first_notice_secs),
            last_notice_secs: self.last_notice_secs.unwrap_or(base.last_notice_secs),
        }
    }

    /// This patch with `newer`'s values where it has them.
    pub fn merge(self, newer: PolicyPatch) -> PolicyPatch {
        PolicyPatch {
            inactive_stop_after_secs: newer
                .inactive_stop_after_secs
                .or(self.inactive_stop_after_secs),
            max_lifetime_secs: newer.max_lifetime_secs.or(self.max_lifetime_secs),
            first_notice_secs: newer.first_notice_secs.or(self.first_notice_secs),
            last_notice_secs: newer.last_notice_secs.or(self.last_notice_secs),
        }
    }
}

/// Where a policy change applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyScope {
    /// Every workspace without an override.
    Cluster,
    /// The workspaces of one host (over the cluster's).
    Host(HostId),
    /// One workspace (over its host's and the cluster's).
    Workspace(WorkspaceName),
}

/// The policies as admins set them (`nexus admin limits`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoliciesView {
    pub cluster: Policy,
    pub hosts: Vec<(HostId, PolicyPatch)>,
    pub workspaces: Vec<(WorkspaceName, PolicyPatch)>,
}

/// What a policy will do to a workspace next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyAction {
    /// Stop it (inactivity).
    Stop,
    /// Tell its owner of the destroy to come.
    Notice,
    /// Destroy it (its lifetime is over, and its owner was told).
    Destroy,
    /// Take back notices of a destroy no longer due.
    Withdraw,
}

impl PolicyAction {
    pub const ALL: [PolicyAction; 4] = [
        PolicyAction::Stop,
        PolicyAction::Notice,
        PolicyAction::Destroy,
        PolicyAction::Withdraw,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyAction::Stop => "stop",
            PolicyAction::Notice => "notice",
            PolicyAction::Destroy => "destroy",
            PolicyAction::Withdraw => "withdraw",
        }
    }
}

impl fmt::Display for PolicyAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An automatic action to come, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextAction {
    pub action: PolicyAction,
    /// When it is due (it happens at the policy loop's next look after this).
    pub at: Timestamp,
    /// Why, in words: "inactive for 7 d".
    pub reason: String,
}

/// Seconds written the way policies are read: `7 d`, `24 h`, `90 s`. Whole units only where
/// they divide evenly (`36 h`, not `1.5 d`); days from two on (a day's lead reads `24 h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secs(pub u64);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0;
        if secs == 0 {
            return f.write_str("0 s");
        }
        for (unit, scale) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
            if secs.is_multiple_of(scale) && (unit != "d" || secs >= 2 * scale) {
                return write!(f, "{} {unit}", secs / scale);
            }
        }
        write!(f, "{secs} s")
    }
}

/// Parses a policy duration: `30s`, `15m`, `24h`, `7d`, or bare seconds; `0` is off.
pub fn parse_secs(value: &str) -> Result<u64, InvalidValue> {
    let value = value.trim();
    let (digits, scale) = match value.char_indices().last() {
        Some((at, c)) if c.is_ascii_alphabetic() => {
            let scale = match c {
                's' => 1,
                'm' => 60,
                'h' => 3_600,
                'd' => 86_400,
                other => {
                    return Err(InvalidValue(format!(
                        "unknown unit {other:?} in {value:?}: use s, m, h or d"
                    )));
                }
            };
            (&value[..at], scale)
        }
        _ => (value, 1),
    };
    let number: u64 = digits.trim().parse().map_err(|_| {
        InvalidValue(format!(
            "{value:?} is not a duration like 30s, 24h or 7d (0: off)"
        ))
    })?;
    let secs = number
        .checked_mul(scale)
        .filter(|&secs| secs <= POLICY_SECS_MAX)
        .ok_or_else(|| InvalidValue(format!("{value:?} is too long")))?;
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_in_whole_units() {
        for (text, secs) in [
            ("30s", 30),
            ("24h", 86_400),
            ("7d", 604_800),
            ("90", 90),
            ("0", 0),
        ] {
            assert_eq!(parse_secs(text).unwrap(), secs, "{text}");
        }
        for bad in ["", "7w", "d", "-1d", "99999999999999999d"] {
            assert!(parse_secs(bad).is_err(), "{bad}");
        }
        assert_eq!(Secs(604_800).to_string(), "7 d");
        assert_eq!(Secs(129_600).to_string(), "36 h");
        assert_eq!(Secs(86_400).to_string(), "24 h");
        assert_eq!(Secs(90).to_string(), "90 s");
        assert_eq!(Secs(120).to_string(), "2 m");
    }

    #[test]
    fn overrides_lie_over_the_cluster_policy() {
        let host = PolicyPatch {
            max_lifetime_secs: Some(0),
            ..PolicyPatch::default()
        };
        let workspace = PolicyPatch {
            inactive_stop_after_secs: Some(60),
            ..PolicyPatch::default()
        };
        let policy = workspace.over(host.over(Policy::default()));
        assert_eq!(policy.inactive_stop_after_secs, 60);
        assert_eq!(policy.max_lifetime_secs, 0);
        assert_eq!(policy.first_notice_secs, 86_400);
        assert_eq!(policy.shortest_secs(), Some(60));
        assert_eq!(host.merge(workspace).max_lifetime_secs, Some(0));
        assert!(
            PolicyPatch {
                max_lifetime_secs: Some(POLICY_SECS_MAX + 1),
                ..PolicyPatch::default()
            }
            .check()
            .is_err()
        );
    }
}
