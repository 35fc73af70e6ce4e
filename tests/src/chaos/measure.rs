//! What a campaign measured, from its history and the faults it injected: operations by kind and
//! outcome, faults by kind, how long writes were unavailable around each kind of fault, and the
//! slowest operations. Pure: numbers of times, no clock.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::nemesis::Kind;

/// One operation as the summary sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timed {
    pub kind: &'static str,
    /// Whether it changes the registry (create, destroy, stop, start).
    pub write: bool,
    pub invoked: Duration,
    /// `None`: never answered.
    pub completed: Option<Duration>,
    pub class: Class,
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Ok,
    Failed,
    Unknown,
}

/// A fault as it was carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    pub kind: Kind,
    /// The coordinator it acted on (by index), if any.
    pub on: Option<usize>,
    pub at: Duration,
    pub healed: Duration,
}

/// Counts of one kind of operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Outcomes {
    pub ok: usize,
    pub failed: usize,
    pub unknown: usize,
}

/// What one kind of fault did to writes, at its worst.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Unavailability {
    pub injected: usize,
    /// The longest stretch without an acknowledged write that overlapped a fault of this kind.
    #[serde(serialize_with = "millis")]
    pub longest_gap: Duration,
    /// The longest wait, after such a fault was healed, for the first write asked after the
    /// heal to be acknowledged.
    #[serde(serialize_with = "millis")]
    pub longest_recovery: Duration,
}

/// The slowest answered operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Slowest {
    pub kind: &'static str,
    #[serde(serialize_with = "millis")]
    pub took: Duration,
    #[serde(serialize_with = "millis")]
    pub invoked: Duration,
}

/// A campaign's numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub operations: BTreeMap<&'static str, Outcomes>,
    pub faults: BTreeMap<&'static str, Unavailability>,
    pub slowest: Slowest,
    /// Answered operations that took more than 5 s (the aim: none through a single fault).
    pub over_five_seconds: usize,
    /// How long faults were injected for.
    #[serde(serialize_with = "millis")]
    pub length: Duration,
}

const FIVE_SECONDS: Duration = Duration::from_secs(5);

impl Summary {
    pub fn of(operations: &[Timed], faults: &[Injected], length: Duration) -> Summary {
        let mut summary = Summary {
            length,
            ..Summary::default()
        };
        for op in operations {
            let counts = summary.operations.entry(op.kind).or_default();
            match op.class {
                Class::Ok => counts.ok += 1,
                Class::Failed => counts.failed += 1,
                Class::Unknown => counts.unknown += 1,
            }
            if let Some(completed) = op.completed {
                let took = completed.saturating_sub(op.invoked);
                if took > summary.slowest.took {
                    summary.slowest = Slowest {
                        kind: op.kind,
                        took,
                        invoked: op.invoked,
                    };
                }
                if took > FIVE_SECONDS {
                    summary.over_five_seconds += 1;
                }
            }
        }
        let mut acknowledged: Vec<Duration> = operations
            .iter()
            .filter(|op| op.write && op.class == Class::Ok)
            .filter_map(|op| op.completed)
            .collect();
        acknowledged.sort_unstable();
        for fault in faults {
            let worst = summary.faults.entry(fault.kind.name()).or_default();
            worst.injected += 1;
            worst.longest_gap = worst.longest_gap.max(gap_over(&acknowledged, fault));
            if let Some(recovery) = recovery_after(operations, fault.healed) {
                worst.longest_recovery = worst.longest_recovery.max(recovery);
            }
        }
        summary
    }
}

/// The longest stretch between consecutive acknowledged writes (sorted completion times) that
/// overlaps the fault's window.
fn gap_over(acknowledged: &[Duration], fault: &Injected) -> Duration {
    let before = acknowledged.partition_point(|t| *t <= fault.at);
    let start = before.saturating_sub(1);
    let after = acknowledged.partition_point(|t| *t <= fault.healed);
    // Up to the first acknowledgement after the heal (or the window's end if none came).
    let window = &acknowledged[start..(after + 1).min(acknowledged.len())];
    let mut longest = Duration::ZERO;
    let mut previous = window.first().copied().unwrap_or(fault.at).min(fault.at);
    for time in window {
        longest = longest.max(time.saturating_sub(previous));
        previous = *time;
    }
    if after >= acknowledged.len() {
        longest = longest.max(fault.healed.saturating_sub(previous));
    }
    longest
}

/// How long after `healed` the first write invoked after it was acknowledged.
fn recovery_after(operations: &[Timed], healed: Duration) -> Option<Duration> {
    operations
        .iter()
        .filter(|op| op.write && op.class == Class::Ok && op.invoked >= healed)
        .filter_map(|op| op.completed)
        .min()
        .map(|completed| completed.saturating_sub(healed))
}

fn millis<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "operations over {:.0?}:", self.length)?;
        writeln!(
            f,
            "  {:<10} {:>8} {:>8} {:>8}",
            "kind", "ok", "failed", "unknown"
        )?;
        for (kind, counts) in &self.operations {
            writeln!(
                f,
                "  {kind:<10} {:>8} {:>8} {:>8}",
                counts.ok, counts.failed, counts.unknown
            )?;
        }
        writeln!(f, "faults:")?;
        writeln!(
            f,
            "  {:<15} {:>8} {:>16} {:>20}",
            "kind", "injected", "longest gap", "longest recovery"
        )?;
        for (kind, worst) in &self.faults {
            writeln!(
                f,
                "  {kind:<15} {:>8} {:>14}ms {:>18}ms",
                worst.injected,
                worst.longest_gap.as_millis(),
                worst.longest_recovery.as_millis()
            )?;
        }
        writeln!(
            f,
            "slowest operation: {} in {} ms (asked at {:.1} s); {} took more than 5 s",
            self.slowest.kind,
            self.slowest.took.as_millis(),
            self.slowest.invoked.as_secs_f64(),
            self.over_five_seconds
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(seconds: f64) -> Duration {
        Duration::from_secs_f64(seconds)
    }

    fn write(invoked: f64, completed: f64, class: Class) -> Timed {
        Timed {
            kind: "create",
            write: true,
            invoked: s(invoked),
            completed: Some(s(completed)),
            class,
        }
    }

    fn fault(at: f64, healed: f64) -> Injected {
        Injected {
            kind: Kind::Pause,
            on: Some(0),
            at: s(at),
            healed: s(healed),
        }
    }

    #[test]
    fn the_gap_spans_the_fault_from_the_last_write_before_to_the_first_after() {
        let ops = [
            write(0.0, 1.0, Class::Ok),
            write(1.0, 2.0, Class::Ok),
            write(2.0, 9.0, Class::Unknown),
            write(2.5, 7.5, Class::Ok),
            write(8.0, 8.4, Class::Ok),
            write(9.0, 9.2, Class::Ok),
        ];
        let summary = Summary::of(&ops, &[fault(3.0, 6.0)], s(10.0));
        let pause = summary.faults["pause"];
        assert_eq!(pause.injected, 1);
        // Acknowledged at 2.0, then at 7.5: a gap of 5.5 s over the fault.
        assert_eq!(pause.longest_gap, s(5.5));
        // Healed at 6.0; the first write asked after it (at 8.0) was acknowledged at 8.4.
        assert_eq!(
            pause.longest_recovery,
            Duration::from_secs_f64(8.4) - s(6.0)
        );
        assert_eq!(summary.operations["create"].ok, 5);
        assert_eq!(summary.operations["create"].unknown, 1);
        assert_eq!(summary.slowest.took, s(7.0));
        // 7 s (the unknown one); 5.0 s exactly is not over.
        assert_eq!(summary.over_five_seconds, 1);
    }

    #[test]
    fn no_write_after_the_heal_counts_the_gap_to_the_heal() {
        let ops = [write(0.0, 1.0, Class::Ok), write(1.0, 3.0, Class::Failed)];
        let summary = Summary::of(&ops, &[fault(2.0, 6.0)], s(6.0));
        assert_eq!(summary.faults["pause"].longest_gap, s(5.0));
        assert_eq!(summary.faults["pause"].longest_recovery, Duration::ZERO);
        assert_eq!(summary.operations["create"].failed, 1);
    }

    #[test]
    fn writes_straight_through_a_fault_leave_a_small_gap() {
        let ops: Vec<Timed> = (0..100)
            .map(|i| write(f64::from(i) * 0.1, f64::from(i) * 0.1 + 0.05, Class::Ok))
            .collect();
        let summary = Summary::of(&ops, &[fault(3.0, 5.0)], s(10.0));
        let gap = summary.faults["pause"].longest_gap;
        assert!(gap <= s(0.11) && gap >= s(0.09), "{gap:?}");
    }
}
