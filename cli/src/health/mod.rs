//! Pure judgements of health, from facts gathered elsewhere (`commands::health`): one
//! workspace's verdict ([`workspace`]) and the whole fleet's checks ([`fleet`]). Each judgement
//! is a list of [`Check`]s, each ok, warn or fail; their JSON and table are built here, pinned
//! by the tests beside them.
//!
//! Exit codes (a contract, see docs/cli.md): 0 when nothing is wrong, [`EXIT_DEGRADED`] for a
//! workspace that is degraded, [`EXIT_FAILED`] for an unhealthy workspace or a fleet check that
//! failed. Both stay below the error codes' exits (10 and up) and away from 1 and 2 (a crash,
//! and a usage error).

pub mod fleet;
pub mod workspace;

use serde_json::{Value, json};

use crate::output;

/// A workspace is degraded: it works, but something needs a look.
pub const EXIT_DEGRADED: u8 = 3;
/// A workspace is unhealthy, or a fleet check failed.
pub const EXIT_FAILED: u8 = 4;

/// How a check came out, least severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One check: what was looked at (a kind and, when there are several, which one), how it came
/// out and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub kind: &'static str,
    pub target: Option<String>,
    pub status: Status,
    pub detail: String,
}

impl Check {
    pub fn new(
        kind: &'static str,
        target: Option<String>,
        status: Status,
        detail: impl Into<String>,
    ) -> Check {
        Check {
            kind,
            target,
            status,
            detail: detail.into(),
        }
    }

    /// `kind target`, or the kind alone.
    pub fn name(&self) -> String {
        match &self.target {
            Some(target) => format!("{} {target}", self.kind),
            None => self.kind.to_string(),
        }
    }
}

/// The worst status among `checks` (ok when there are none).
pub fn worst(checks: &[Check]) -> Status {
    checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok)
}

/// How many checks came out ok, warn and fail.
pub fn counts(checks: &[Check]) -> [usize; 3] {
    let count = |status| checks.iter().filter(|c| c.status == status).count();
    [count(Status::Ok), count(Status::Warn), count(Status::Fail)]
}

/// `[{"check", "target", "status", "detail"}]`.
pub fn checks_json(checks: &[Check]) -> Value {
    Value::Array(
        checks
            .iter()
            .map(|c| {
                json!({
                    "check": c.kind,
                    "target": c.target,
                    "status": c.status.as_str(),
                    "detail": c.detail,
                })
            })
            .collect(),
    )
}

/// A table of `checks`: CHECK, STATUS, DETAIL.
pub fn checks_table(checks: &[Check]) -> String {
    output::table(
        &["CHECK", "STATUS", "DETAIL"],
        checks
            .iter()
            .map(|c| vec![c.name(), c.status.as_str().to_string(), c.detail.clone()])
            .collect(),
    )
}

/// `text`, cut to `max` characters with an ellipsis: a detail stays on one table line.
pub fn cut(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let kept: String = one_line.chars().take(max.saturating_sub(1)).collect();
    format!("{kept}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_check_counts_and_details_stay_on_one_line() {
        let checks = vec![
            Check::new("quorum", None, Status::Ok, "fine"),
            Check::new("disk", Some("h1".into()), Status::Warn, "low"),
        ];
        assert_eq!(worst(&checks), Status::Warn);
        assert_eq!(worst(&[]), Status::Ok);
        assert_eq!(counts(&checks), [1, 1, 0]);
        assert_eq!(checks[1].name(), "disk h1");
        assert_eq!(
            checks_json(&checks)[1],
            json!({"check": "disk", "target": "h1", "status": "warn", "detail": "low"})
        );
        assert_eq!(cut("a\nb  c", 10), "a b c");
        assert_eq!(cut("abcdefghij", 5), "abcd…");
    }
}
