//! The nemesis's plan: which faults a campaign injects, when, on whom and for how long, drawn
//! from its seed. Pure: the runner ([`super::runner`]) resolves targets that depend on the moment
//! (the leader) and does the I/O; the same seed always gives the same plan, so a failing campaign
//! can be replayed.
//!
//! Two phases alternate, as Jepsen's combined nemeses do: a fault on its own (injected, held,
//! healed, then a quiet spell in which the cluster must recover and writes must succeed again),
//! and mixed faults (two of different kinds overlapping). Every fault is healed before the next
//! quiet spell, and the plan ends with everything healed.

use std::fmt;
use std::time::Duration;

use super::rng::SplitMix64;

/// The kinds of fault, each a way production breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// SIGKILL of a coordinator, restarted when healed.
    Kill,
    /// SIGSTOP of a coordinator (often the leader), SIGCONT when healed: it wakes up believing
    /// it still leads.
    Pause,
    /// The leader cut off from everyone: the other members and the clients.
    IsolateLeader,
    /// The members split into a majority and a minority, each keeping some clients.
    Partition,
    /// Two sides that each see one middle member but not each other.
    Bridge,
    /// Packets from one member to another dropped, the other way delivered.
    OneWay,
    /// A share of one member's packets lost.
    Loss,
    /// One member's link throttled.
    Slow,
    /// One member restarted with its wall clock skewed.
    Skew,
    /// One member's data directory full.
    DiskFull,
    /// An agent killed mid-operation and started again.
    AgentKill,
    /// The container engine killed under the Docker agent and started again.
    EngineKill,
}

impl Kind {
    pub const ALL: [Kind; 12] = [
        Kind::Kill,
        Kind::Pause,
        Kind::IsolateLeader,
        Kind::Partition,
        Kind::Bridge,
        Kind::OneWay,
        Kind::Loss,
        Kind::Slow,
        Kind::Skew,
        Kind::DiskFull,
        Kind::AgentKill,
        Kind::EngineKill,
    ];

    /// The kinds that act on the network between coordinators.
    pub const NETWORK: [Kind; 6] = [
        Kind::IsolateLeader,
        Kind::Partition,
        Kind::Bridge,
        Kind::OneWay,
        Kind::Loss,
        Kind::Slow,
    ];

    /// The kinds that act on processes and disks.
    pub const PROCESSES: [Kind; 6] = [
        Kind::Kill,
        Kind::Pause,
        Kind::Skew,
        Kind::DiskFull,
        Kind::AgentKill,
        Kind::EngineKill,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Pause => "pause",
            Kind::IsolateLeader => "isolate-leader",
            Kind::Partition => "partition",
            Kind::Bridge => "bridge",
            Kind::OneWay => "one-way",
            Kind::Loss => "loss",
            Kind::Slow => "slow",
            Kind::Skew => "skew",
            Kind::DiskFull => "disk-full",
            Kind::AgentKill => "agent-kill",
            Kind::EngineKill => "engine-kill",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Whether the fault needs a coordinator to act on (and so cannot overlap another that
    /// also restarts or stops one: two down of three would be no fault of Nexus's).
    fn takes_a_member_down(self) -> bool {
        matches!(
            self,
            Kind::Kill | Kind::Pause | Kind::Skew | Kind::DiskFull | Kind::IsolateLeader
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whom a fault acts on, resolved by the runner at the moment it is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Whichever member leads then (a random one if none does).
    Leader,
    /// A member that does not lead then: the n-th follower, counted round.
    Follower(usize),
    /// No coordinator: an agent or the engine.
    Fleet,
}

/// One fault of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub kind: Kind,
    pub target: Target,
    /// When it is injected, from the campaign's start.
    pub at: Duration,
    /// How long it is held before it is healed.
    pub hold: Duration,
    /// A number the kind uses: the share of packets lost (percent), the clock's skew
    /// (seconds, signed), the peer of a one-way drop (which follower).
    pub amount: i64,
}

impl Fault {
    pub fn healed_at(&self) -> Duration {
        self.at + self.hold
    }
}

/// What the plan is drawn from.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub seed: u64,
    /// The whole campaign; no fault is held past it.
    pub length: Duration,
    /// The kinds to draw from.
    pub kinds: Vec<Kind>,
    /// Quiet before the first fault, for the clients' first operations.
    pub warm_up: Duration,
    /// How long a fault is held: at least the first, less than the second.
    pub hold: (Duration, Duration),
    /// The quiet spell after each fault (or mixed pair) is healed.
    pub quiet: (Duration, Duration),
}

impl PlanOptions {
    pub fn new(seed: u64, length: Duration, kinds: Vec<Kind>) -> PlanOptions {
        PlanOptions {
            seed,
            length,
            kinds,
            warm_up: Duration::from_secs(3),
            hold: (Duration::from_secs(2), Duration::from_secs(7)),
            quiet: (Duration::from_secs(3), Duration::from_secs(6)),
        }
    }
}

/// The plan for a campaign: faults in the order they are injected. Every fault heals before the
/// campaign's end; a mixed pair's faults are of different kinds, and at most one of them takes
/// a coordinator down.
pub fn plan(options: &PlanOptions) -> Vec<Fault> {
    let mut rng = SplitMix64::new(options.seed);
    let mut faults = Vec::new();
    if options.kinds.is_empty() {
        return faults;
    }
    let mut now = options.warm_up;
    let mut round = 0u64;
    loop {
        round += 1;
        // Every third round mixes two faults, once there are two kinds to mix.
        let mixed = round.is_multiple_of(3) && options.kinds.len() > 1;
        let first = draw(&mut rng, options, now, None);
        let mut end = first.healed_at();
        let mut round_faults = vec![first];
        if mixed {
            let taken = round_faults[0].kind;
            let others: Vec<Kind> = options
                .kinds
                .iter()
                .copied()
                .filter(|kind| *kind != taken)
                .filter(|kind| !(kind.takes_a_member_down() && taken.takes_a_member_down()))
                .collect();
            if !others.is_empty() {
                let offset = between(&mut rng, Duration::ZERO, round_faults[0].hold);
                let second = draw(&mut rng, options, now + offset, Some(&others));
                end = end.max(second.healed_at());
                round_faults.push(second);
            }
        }
        let quiet = between(&mut rng, options.quiet.0, options.quiet.1);
        if end + quiet > options.length {
            break;
        }
        faults.extend(round_faults);
        now = end + quiet;
    }
    faults
}

fn draw(rng: &mut SplitMix64, options: &PlanOptions, at: Duration, only: Option<&[Kind]>) -> Fault {
    let kinds = only.unwrap_or(&options.kinds);
    let kind = kinds[below(rng, kinds.len())];
    let hold = between(rng, options.hold.0, options.hold.1);
    let follower = below(rng, 1_000);
    let (target, amount) = match kind {
        // A paused or killed member is the leader half the time: the interesting case.
        Kind::Kill | Kind::Pause => {
            if below(rng, 2) == 0 {
                (Target::Leader, 0)
            } else {
                (Target::Follower(follower), 0)
            }
        }
        Kind::IsolateLeader => (Target::Leader, 0),
        Kind::Partition | Kind::Bridge => (Target::Follower(follower), 0),
        // Which follower the drop is towards; from the leader half the time.
        Kind::OneWay => {
            let to = i64::try_from(below(rng, 1_000)).unwrap_or(0);
            if below(rng, 2) == 0 {
                (Target::Leader, to)
            } else {
                (Target::Follower(follower), to)
            }
        }
        Kind::Loss => (
            Target::Follower(follower),
            i64::try_from(20 + below(rng, 40)).unwrap_or(20),
        ),
        Kind::Slow => (Target::Leader, 0),
        // Ahead or behind by up to two minutes: within the certificates' tolerance.
        Kind::Skew => {
            let seconds = i64::try_from(10 + below(rng, 110)).unwrap_or(10);
            let sign = if below(rng, 2) == 0 { 1 } else { -1 };
            (Target::Follower(follower), sign * seconds)
        }
        Kind::DiskFull => (Target::Follower(follower), 0),
        Kind::AgentKill | Kind::EngineKill => (Target::Fleet, 0),
    };
    Fault {
        kind,
        target,
        at,
        hold,
        amount,
    }
}

/// A number in `0..n`.
fn below(rng: &mut SplitMix64, n: usize) -> usize {
    usize::try_from(rng.below(u64::try_from(n).unwrap_or(u64::MAX))).unwrap_or(0)
}

/// A duration in `[low, high)`, to the millisecond.
fn between(rng: &mut SplitMix64, low: Duration, high: Duration) -> Duration {
    let span = high.saturating_sub(low).as_millis();
    let span = usize::try_from(span).unwrap_or(usize::MAX).max(1);
    low + Duration::from_millis(below(rng, span) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(seed: u64, seconds: u64, kinds: &[Kind]) -> PlanOptions {
        PlanOptions::new(seed, Duration::from_secs(seconds), kinds.to_vec())
    }

    #[test]
    fn the_same_seed_gives_the_same_plan_and_another_seed_another() {
        let a = plan(&options(7, 600, &Kind::ALL));
        assert_eq!(a, plan(&options(7, 600, &Kind::ALL)));
        assert_ne!(a, plan(&options(8, 600, &Kind::ALL)));
    }

    #[test]
    fn every_fault_heals_within_the_campaign_and_every_kind_is_drawn() {
        for seed in 0..50 {
            let faults = plan(&options(seed, 1_800, &Kind::ALL));
            assert!(!faults.is_empty());
            for fault in &faults {
                assert!(fault.at >= Duration::from_secs(3), "{fault:?}");
                assert!(fault.healed_at() <= Duration::from_secs(1_800), "{fault:?}");
                assert!(fault.hold >= Duration::from_secs(2), "{fault:?}");
            }
            for kind in Kind::ALL {
                assert!(faults.iter().any(|f| f.kind == kind), "seed {seed}: {kind}");
            }
        }
    }

    #[test]
    fn overlapping_faults_differ_in_kind_and_take_at_most_one_member_down() {
        let mut overlaps = 0;
        for seed in 0..50 {
            let faults = plan(&options(seed, 600, &Kind::ALL));
            for (i, a) in faults.iter().enumerate() {
                for b in &faults[i + 1..] {
                    if b.at < a.healed_at() && a.at < b.healed_at() {
                        overlaps += 1;
                        assert_ne!(a.kind, b.kind);
                        assert!(!(a.kind.takes_a_member_down() && b.kind.takes_a_member_down()));
                    }
                }
            }
        }
        assert!(overlaps > 0, "no mixed faults were drawn");
    }

    #[test]
    fn a_plan_of_one_kind_holds_only_it_and_none_holds_nothing() {
        let faults = plan(&options(3, 120, &[Kind::Pause]));
        assert!(faults.iter().all(|f| f.kind == Kind::Pause));
        assert!(!faults.is_empty());
        assert!(plan(&options(3, 120, &[])).is_empty());
        // Too short for one fault and its quiet spell: nothing.
        assert!(plan(&options(3, 4, &Kind::ALL)).is_empty());
    }

    #[test]
    fn kinds_parse_from_their_names() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.name()), Some(kind));
        }
        assert_eq!(Kind::parse("meteor"), None);
    }
}
