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

/// What one kind of fault did to writes, at its worst, when it was alone and when it overlapped
/// another (a mixed round).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Unavailability {
    pub injected: usize,
    pub alone: Worst,
    pub mixed: Worst,
}

/// The worst a set of faults did to writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Worst {
    pub injected: usize,
    /// The longest stretch without an acknowledged write that overlapped one of the faults.
    #[serde(serialize_with = "millis")]
    pub longest_gap: Duration,
    /// The longest wait, after one of the faults was healed, for the first write asked after
    /// the heal to be acknowledged.
    #[serde(serialize_with = "millis")]
    pub longest_recovery: Duration,
}

impl Worst {
    fn add(&mut self, gap: Duration, recovery: Option<Duration>) {
        self.injected += 1;
        self.longest_gap = self.longest_gap.max(gap);
        if let Some(recovery) = recovery {
            self.longest_recovery = self.longest_recovery.max(recovery);
        }
    }
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
    /// The slowest answered operation of all.
    pub slowest: Slowest,
    /// The slowest answered operation that overlapped no mixed round: the aim (5 s) is for it.
    pub slowest_single: Slowest,
    /// Answered operations that took more than 5 s (the aim: none through a single fault).
    pub over_five_seconds: usize,
    /// Of those, the ones that overlapped no mixed round.
    pub over_five_seconds_single: usize,
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
        let rounds = mixed_rounds(faults);
        for op in operations {
            let counts = summary.operations.entry(op.kind).or_default();
            match op.class {
                Class::Ok => counts.ok += 1,
                Class::Failed => counts.failed += 1,
                Class::Unknown => counts.unknown += 1,
            }
            if let Some(completed) = op.completed {
                let took = completed.saturating_sub(op.invoked);
                let single = !rounds
                    .iter()
                    .any(|(from, to)| op.invoked <= *to && completed >= *from);
                let slowest = Slowest {
                    kind: op.kind,
                    took,
                    invoked: op.invoked,
                };
                if took > summary.slowest.took {
                    summary.slowest = slowest;
                }
                if single && took > summary.slowest_single.took {
                    summary.slowest_single = slowest;
                }
                if took > FIVE_SECONDS {
                    summary.over_five_seconds += 1;
                    if single {
                        summary.over_five_seconds_single += 1;
                    }
                }
            }
        }
        let mut acknowledged: Vec<Duration> = operations
            .iter()
            .filter(|op| op.write && op.class == Class::Ok)
            .filter_map(|op| op.completed)
            .collect();
        acknowledged.sort_unstable();
        for (index, fault) in faults.iter().enumerate() {
            let worst = summary.faults.entry(fault.kind.name()).or_default();
            worst.injected += 1;
            let gap = gap_over(&acknowledged, fault);
            let recovery = recovery_after(operations, fault.healed);
            if overlaps_another(faults, index) {
                worst.mixed.add(gap, recovery);
            } else {
                worst.alone.add(gap, recovery);
            }
        }
        summary
    }
}

fn overlaps(a: &Injected, b: &Injected) -> bool {
    a.at <= b.healed && b.at <= a.healed
}

fn overlaps_another(faults: &[Injected], index: usize) -> bool {
    faults
        .iter()
        .enumerate()
        .any(|(other, fault)| other != index && overlaps(fault, &faults[index]))
}

/// The windows, from the first injection to the last heal, in which two or more faults
/// overlapped.
fn mixed_rounds(faults: &[Injected]) -> Vec<(Duration, Duration)> {
    let mut rounds: Vec<(Duration, Duration)> = Vec::new();
    for (index, fault) in faults.iter().enumerate() {
        if !overlaps_another(faults, index) {
            continue;
        }
        match rounds
            .iter_mut()
            .find(|(from, to)| fault.at <= *to && *from <= fault.healed)
        {
            Some(round) => {
                round.0 = round.0.min(fault.at);
                round.1 = round.1.max(fault.healed);
            }
            None => rounds.push((fault.at, fault.healed)),
        }
    }
    rounds
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
        writeln!(f, "faults (alone | in mixed rounds):")?;
        writeln!(
            f,
            "  {:<15} {:>8} {:>12} {:>12} {:>8} {:>12} {:>12}",
            "kind", "alone", "gap", "recovery", "mixed", "gap", "recovery"
        )?;
        for (kind, worst) in &self.faults {
            writeln!(
                f,
                "  {kind:<15} {:>8} {:>10}ms {:>10}ms {:>8} {:>10}ms {:>10}ms",
                worst.alone.injected,
                worst.alone.longest_gap.as_millis(),
                worst.alone.longest_recovery.as_millis(),
                worst.mixed.injected,
                worst.mixed.longest_gap.as_millis(),
                worst.mixed.longest_recovery.as_millis()
            )?;
        }
        writeln!(
            f,
            "slowest operation: {} in {} ms (asked at {:.1} s); {} took more than 5 s",
            self.slowest.kind,
            self.slowest.took.as_millis(),
            self.slowest.invoked.as_secs_f64(),
            self.over_five_seconds
        )?;
        writeln!(
            f,
            "outside mixed rounds: slowest {} in {} ms (asked at {:.1} s); {} took more than 5 s",
            self.slowest_single.kind,
            self.slowest_single.took.as_millis(),
            self.slowest_single.invoked.as_secs_f64(),
            self.over_five_seconds_single
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
        assert_eq!(pause.alone.longest_gap, s(5.5));
        assert_eq!(pause.mixed, Worst::default());
        // Healed at 6.0; the first write asked after it (at 8.0) was acknowledged at 8.4.
        assert_eq!(
            pause.alone.longest_recovery,
            Duration::from_secs_f64(8.4) - s(6.0)
        );
        assert_eq!(summary.operations["create"].ok, 5);
        assert_eq!(summary.operations["create"].unknown, 1);
        assert_eq!(summary.slowest.took, s(7.0));
        // 7 s (the unknown one); 5.0 s exactly is not over.
        assert_eq!(summary.over_five_seconds, 1);
        // No mixed round: the slowest single-fault operation is the slowest of all.
        assert_eq!(summary.over_five_seconds_single, 1);
        assert_eq!(summary.slowest_single, summary.slowest);
    }

    #[test]
    fn operations_through_a_mixed_round_are_told_apart_from_single_faults() {
        let ops = [
            // Through a fault on its own: 6 s.
            write(1.0, 7.0, Class::Ok),
            // Through the mixed round (20..31): 8 s, and one that only touches its end.
            write(22.0, 30.0, Class::Ok),
            write(30.5, 36.0, Class::Ok),
            // After everything: quick.
            write(40.0, 40.1, Class::Ok),
        ];
        let loss = Injected {
            kind: Kind::Loss,
            on: Some(1),
            at: s(25.0),
            healed: s(31.0),
        };
        let faults = [fault(2.0, 5.0), fault(20.0, 27.0), loss];
        let summary = Summary::of(&ops, &faults, s(41.0));
        assert_eq!(summary.over_five_seconds, 3);
        assert_eq!(summary.over_five_seconds_single, 1);
        assert_eq!(summary.slowest.took, s(8.0));
        assert_eq!(summary.slowest_single.took, s(6.0));
        let pause = summary.faults["pause"];
        assert_eq!(
            (pause.injected, pause.alone.injected, pause.mixed.injected),
            (2, 1, 1)
        );
        assert_eq!(summary.faults["loss"].mixed.injected, 1);
        assert_eq!(summary.faults["loss"].alone, Worst::default());
        // The lone pause (2..5): nothing acknowledged from its start until 7.0.
        assert_eq!(pause.alone.longest_gap, s(5.0));
        // The mixed pause (20..27): from 7.0 to 30.0.
        assert_eq!(pause.mixed.longest_gap, s(23.0));
    }

    #[test]
    fn no_write_after_the_heal_counts_the_gap_to_the_heal() {
        let ops = [write(0.0, 1.0, Class::Ok), write(1.0, 3.0, Class::Failed)];
        let summary = Summary::of(&ops, &[fault(2.0, 6.0)], s(6.0));
        assert_eq!(summary.faults["pause"].alone.longest_gap, s(5.0));
        assert_eq!(
            summary.faults["pause"].alone.longest_recovery,
            Duration::ZERO
        );
        assert_eq!(summary.operations["create"].failed, 1);
    }

    #[test]
    fn writes_straight_through_a_fault_leave_a_small_gap() {
        let ops: Vec<Timed> = (0..100)
            .map(|i| write(f64::from(i) * 0.1, f64::from(i) * 0.1 + 0.05, Class::Ok))
            .collect();
        let summary = Summary::of(&ops, &[fault(3.0, 5.0)], s(10.0));
        let gap = summary.faults["pause"].alone.longest_gap;
        assert!(gap <= s(0.11) && gap >= s(0.09), "{gap:?}");
    }
}
