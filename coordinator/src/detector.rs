//! The failure detector's decision: which hosts the leader marks down, or why it holds off.
//!
//! [`decide`] is a pure function of the time, the hosts, when each was last heard from, what the
//! detector remembers from its earlier looks ([`Memory`]) and the [`Policy`]. It reads no clock,
//! takes no lock and proposes nothing; the loop that sleeps, reads the state, calls it and
//! proposes the markings through Raft is
//! [`Service::detect_failures`](crate::service::Service::detect_failures).
//!
//! The rules, on the leader only:
//!
//! - A host silent for longer than the TTL is marked down (its workspaces become lost).
//! - A node that has just become leader first grants every host two TTLs from that moment, since
//!   heartbeats went to the old leader and an agent needs time to notice (up to its heartbeat
//!   deadline) and to reconnect: a failover never marks a live host down. (Nomad does the same
//!   with its `failover_heartbeat_ttl`, five minutes by default.) A heartbeat heard before the
//!   election does not count.
//! - A host that registers later is granted a full TTL from when this leader first sees it
//!   (registering is not a heartbeat).
//! - A host this leader has not heard from yet is not counted silent while other hosts are still
//!   arriving: its silence counts from the latest first heartbeat this leader heard from any host
//!   (an *arrival*), if that is later. While a large fleet comes up, or reconnects after a
//!   failover, a host's first heartbeat queues behind thousands of other agents' handshakes and
//!   registrations; a queue that still moves says the host is waiting its turn, not dead. This
//!   grace is bounded: at most [`Policy::arrival_limit`] past the TTL the host would otherwise
//!   have had, so a steady trickle of new hosts cannot hide a dead one for ever. A host heard
//!   once is judged by the TTL alone, with one exception: within [`Policy::arrival_limit`] of the
//!   election, while hosts keep arriving, its silence too counts from the latest arrival. A
//!   fleet returning to a new leader is a crowd of handshakes; a host whose first session with
//!   this leader broke in it (a heartbeat late while the leader's CPU went to the crowd) queues
//!   behind the same crowd again, for as long as the crowd lasts. At 20,000 hosts such hosts
//!   were marked down 14–16 s after their last heartbeat and back within 3 s; given one TTL
//!   more, they were marked two to three TTLs after it, still while hosts arrived, and were back
//!   within a second (docs/benchmarks.md). A host that dies while the fleet returns is then
//!   marked down one TTL after the last arrival (at most [`Policy::arrival_limit`] after the
//!   election); one that dies after the last arrival, within one TTL. (Nomad grants every host
//!   five minutes after an election, and stretches every host's TTL with the size of the fleet;
//!   this keeps the TTL of the hosts it has heard outside a return.)
//! - Hosts already down are not looked at. Draining and cordoned hosts are watched like ready
//!   ones.
//! - When most of the fleet falls silent at once (more than [`MASS_SILENCE_SHARE`] of the hosts,
//!   counting those this detector marked down within the last two TTLs but not hosts down for
//!   longer, and more than [`MASS_SILENCE_MIN`] hosts), the fault is far more likely on the
//!   leader than on all those hosts: an overloaded leader whose heartbeats queue, or a partition
//!   between it and them. The detector then holds off until the silence shrinks below that share
//!   (Kubernetes stops evicting in a zone more than 55 % unready for the same reason). A real
//!   outage of most of a fleet is then not marked down until most of it is back or replaced;
//!   that is the price. Hosts down for longer (retired, switched off) are not counted: they would
//!   keep the share high for ever and hold every later marking off.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use nexus_protocol::HostId;
use nexus_protocol::clock::Timestamp;
use nexus_protocol::model::HostStatus;

/// The share of the fleet silent at once (counting the hosts the detector marked down lately)
/// above which the failure detector holds off.
pub const MASS_SILENCE_SHARE: f64 = 0.55;
/// Below this many silent hosts the detector never holds off: a small fleet's outage is real.
pub const MASS_SILENCE_MIN: usize = 10;

/// How long a host may be silent before the leader marks it down: three heartbeats of 5 s, less
/// a second. A host that dies just after a heartbeat is then marked down within 15 s of its death
/// (the detector looks every 500 ms, and the marking commits in milliseconds); at 15 s, with a
/// look every second, the worst case was 16 s. It tolerates what 15 s did in practice: one lost
/// heartbeat and seconds of delay on the next (two lost in a row were never safe: the third lands
/// at the TTL itself).
pub const DEFAULT_HOST_TTL: Duration = Duration::from_secs(14);

/// The least the arrivals' grace lasts, whatever the TTL ([`Policy::arrival_limit`]).
pub const ARRIVAL_LIMIT_FLOOR: Duration = Duration::from_secs(600);

/// The longest the failure detector waits between two looks at the fleet.
const MAX_PERIOD: Duration = Duration::from_millis(500);

/// How the detector judges silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// How long a host may be silent before the leader marks it down.
    pub ttl: Duration,
}

impl Policy {
    /// How long the detector waits between two looks: a twentieth of the TTL, between 50 ms and
    /// 500 ms.
    pub fn period(&self) -> Duration {
        (self.ttl / 20).clamp(Duration::from_millis(50), MAX_PERIOD)
    }

    /// How long a host this detector marked down still counts towards a mass silence.
    fn recent(&self) -> Duration {
        self.ttl.saturating_mul(2)
    }

    /// The most that other hosts' arrivals extend the wait for a host never heard, and how long
    /// after an election a heard host waits on them: forty TTLs, and at least
    /// [`ARRIVAL_LIMIT_FLOOR`] (ten minutes; forty TTLs pass it from a TTL of 15 s). 20,000
    /// hollow hosts started at once took about ten minutes to be 98 % heard (docs/benchmarks.md);
    /// a real fleet starts at a tenth of that rate. How long a fleet takes to return depends on
    /// its size and the leader's CPU, not on the TTL: with a 9 s TTL, forty TTLs (six minutes)
    /// ended while 20,000 hosts still returned.
    pub fn arrival_limit(&self) -> Duration {
        self.ttl.saturating_mul(40).max(ARRIVAL_LIMIT_FLOOR)
    }
}

/// What the detector remembers between its looks, for as long as this node leads. A node that
/// stops leading forgets it all, and starts afresh when it leads again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Memory {
    /// When this node was first seen leading: silence counts from then at the earliest.
    pub leading_since: Timestamp,
    /// When this leader first saw each host that is not down.
    pub first_seen: BTreeMap<HostId, Timestamp>,
    /// The hosts this detector marked down lately, and when: part of the silence a burst makes.
    pub recent_downs: BTreeMap<HostId, Timestamp>,
    /// The hosts not down that this leader has heard from (since it took the lead).
    pub heard: BTreeSet<HostId>,
    /// When this leader last heard a host for the first time: the newest arrival.
    pub last_arrival: Option<Timestamp>,
}

/// What to do after one look at the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Mark these hosts down, in the order of their ids (none: nobody is silent too long).
    MarkDown(Vec<HostId>),
    /// Most of the fleet is silent at once: mark nobody down.
    HoldOff {
        /// The hosts silent beyond their TTL.
        silent: usize,
        /// The hosts this detector marked down within the last two TTLs.
        recently_down: usize,
        /// The hosts not down, and those marked down lately.
        fleet: usize,
    },
}

/// Decides, at `now`, which of `hosts` to mark down. `last_heard` says when a host's latest
/// heartbeat arrived, if this process has one; `memory` is as [`Memory::observe`] left it after
/// the previous look.
pub fn decide(
    now: Timestamp,
    hosts: &BTreeMap<HostId, HostStatus>,
    last_heard: impl Fn(&HostId) -> Option<Timestamp>,
    memory: &Memory,
    policy: &Policy,
) -> Decision {
    let watched = || {
        hosts
            .iter()
            .filter(|(_, status)| **status != HostStatus::Down)
            .map(|(host, _)| host)
    };
    let recently_down = memory
        .recent_downs
        .iter()
        .filter(|(host, at)| is_recent(now, **at, policy) && !is_watched(hosts, host))
        .count();
    let fleet = watched().count() + recently_down;
    let since = memory.leading_since;
    // The fleet may still be returning to this leader: a heard host that lost its session in
    // the crowd queues again behind the hosts still arriving.
    let returning = now.saturating_since(since) <= policy.arrival_limit();
    let silent: Vec<HostId> = watched()
        .filter(|host| {
            let seen = memory.first_seen.get(*host).copied().unwrap_or(now);
            // Heard from since this node took the lead: silence counts from then, or from a
            // later arrival while the fleet returns, up to the limit.
            if let Some(heard) = last_heard(host).filter(|at| *at >= since) {
                let own = heard.max(seen);
                // No cap needed: `returning` ends the arrivals' limit after the election, and the
                // host was heard after it.
                let queued = match memory.last_arrival {
                    Some(arrival) if returning => arrival.max(own),
                    _ => own,
                };
                return now.saturating_since(queued) > policy.ttl;
            }
            // Not yet: from one TTL after the election, so a host has two TTLs to notice the old
            // leader is gone and find this one; or from its first sighting. Then from the
            // latest arrival, as long as hosts keep arriving, up to the limit.
            let own = since.saturating_add(policy.ttl).max(seen);
            let queued = memory
                .last_arrival
                .map_or(own, |arrival| arrival.max(own))
                .min(own.saturating_add(policy.arrival_limit()));
            now.saturating_since(queued) > policy.ttl
        })
        .cloned()
        .collect();
    if mass_silence(silent.len() + recently_down, fleet) {
        return Decision::HoldOff {
            silent: silent.len(),
            recently_down,
            fleet,
        };
    }
    Decision::MarkDown(silent)
}

impl Memory {
    /// The memory of a node first seen leading at `leading_since`.
    pub fn new(leading_since: Timestamp) -> Memory {
        Memory {
            leading_since,
            first_seen: BTreeMap::new(),
            recent_downs: BTreeMap::new(),
            heard: BTreeSet::new(),
            last_arrival: None,
        }
    }

    /// Brings the memory up to a look at `now`: remembers when each host not down was first
    /// seen, which hosts this leader has heard from (`last_heard` as [`decide`] takes it) and
    /// the newest first heartbeat, and forgets hosts that went down or away, and markings that
    /// are no longer recent or whose host is back.
    pub fn observe(
        &mut self,
        now: Timestamp,
        hosts: &BTreeMap<HostId, HostStatus>,
        last_heard: impl Fn(&HostId) -> Option<Timestamp>,
        policy: &Policy,
    ) {
        self.recent_downs
            .retain(|host, at| is_recent(now, *at, policy) && !is_watched(hosts, host));
        // Looked at twice a second across the whole fleet: no allocation for a host already
        // known, and the forgetting below only when some host is no longer watched.
        let mut watched = 0;
        for (host, status) in hosts {
            if *status == HostStatus::Down {
                continue;
            }
            watched += 1;
            if !self.first_seen.contains_key(host) {
                self.first_seen.insert(host.clone(), now);
            }
            if self.heard.contains(host) {
                continue;
            }
            if let Some(at) = last_heard(host).filter(|at| *at >= self.leading_since) {
                self.heard.insert(host.clone());
                self.last_arrival = Some(self.last_arrival.map_or(at, |last| last.max(at)));
            }
        }
        // Every watched host is in `first_seen` now, and `heard` only ever holds hosts of
        // `first_seen`: more entries than watched hosts means some went down or away.
        if self.first_seen.len() > watched {
            self.first_seen.retain(|host, _| is_watched(hosts, host));
            self.heard.retain(|host| is_watched(hosts, host));
        }
    }

    /// How many hosts not down this leader has not heard from, as of the last
    /// [`Memory::observe`]: after a failover, the agents yet to reconnect.
    pub fn unheard(&self) -> usize {
        self.first_seen.len().saturating_sub(self.heard.len())
    }

    /// Remembers that `hosts` were marked down at `now`.
    pub fn marked_down(&mut self, now: Timestamp, hosts: impl IntoIterator<Item = HostId>) {
        self.recent_downs
            .extend(hosts.into_iter().map(|host| (host, now)));
    }
}

/// Whether `silent` hosts of a fleet of `fleet` is a mass silence.
fn mass_silence(silent: usize, fleet: usize) -> bool {
    silent > MASS_SILENCE_MIN && silent as f64 > MASS_SILENCE_SHARE * fleet as f64
}

/// Whether a marking at `at` still counts at `now`.
fn is_recent(now: Timestamp, at: Timestamp, policy: &Policy) -> bool {
    now.saturating_since(at) <= policy.recent()
}

/// Whether `host` is one the detector watches: known, and not down.
fn is_watched(hosts: &BTreeMap<HostId, HostStatus>, host: &HostId) -> bool {
    hosts
        .get(host)
        .is_some_and(|status| *status != HostStatus::Down)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The TTL of every case, in milliseconds.
    const TTL: u64 = 10_000;
    /// When the leader of most cases took the lead: long before `NOW`.
    const LONG_AGO: u64 = 1_000;
    const NOW: u64 = 1_000_000;
    /// The arrivals' grace at this TTL: its floor, ten minutes (more than forty TTLs).
    const LIMIT: u64 = 600_000;

    /// One host as a case sees it: its name, its status, when this leader first saw it (none:
    /// in this very look) and when it was last heard from (none: never, by this process).
    type Host = (&'static str, HostStatus, Option<u64>, Option<u64>);

    struct Case {
        name: &'static str,
        leading_since: u64,
        now: u64,
        hosts: Vec<Host>,
        /// Hosts this detector marked down, and when.
        recent_downs: Vec<(&'static str, u64)>,
        /// When this leader last heard a host for the first time, if it has.
        arrival: Option<u64>,
        expected: Decision,
    }

    fn id(name: &str) -> HostId {
        HostId::new(name).unwrap()
    }

    /// Marking `names` down, in the order of their ids.
    fn mark_down(names: &[&str]) -> Decision {
        let mut ids: Vec<HostId> = names.iter().map(|name| id(name)).collect();
        ids.sort();
        Decision::MarkDown(ids)
    }

    /// `count` ready hosts named `{prefix}0`.., first seen long ago, last heard at `heard`.
    fn ready(prefix: &str, count: usize, heard: u64) -> Vec<Host> {
        (0..count)
            .map(|i| {
                let name: &'static str = format!("{prefix}{i}").leak();
                (name, HostStatus::Ready, Some(LONG_AGO), Some(heard))
            })
            .collect()
    }

    fn names(prefix: &str, count: usize) -> Vec<&'static str> {
        (0..count)
            .map(|i| -> &'static str { format!("{prefix}{i}").leak() })
            .collect()
    }

    fn check(case: &Case) {
        let hosts: BTreeMap<HostId, HostStatus> = case
            .hosts
            .iter()
            .map(|(name, status, _, _)| (id(name), *status))
            .collect();
        let heard: BTreeMap<HostId, Timestamp> = case
            .hosts
            .iter()
            .filter_map(|(name, _, _, heard)| Some((id(name), Timestamp::from_millis((*heard)?))))
            .collect();
        let leading_since = Timestamp::from_millis(case.leading_since);
        let memory = Memory {
            leading_since,
            heard: heard
                .iter()
                .filter(|(_, at)| **at >= leading_since)
                .map(|(host, _)| host.clone())
                .collect(),
            last_arrival: case.arrival.map(Timestamp::from_millis),
            first_seen: case
                .hosts
                .iter()
                .filter_map(|(name, _, seen, _)| Some((id(name), Timestamp::from_millis((*seen)?))))
                .collect(),
            recent_downs: case
                .recent_downs
                .iter()
                .map(|(name, at)| (id(name), Timestamp::from_millis(*at)))
                .collect(),
        };
        let policy = Policy {
            ttl: Duration::from_millis(TTL),
        };
        let decision = decide(
            Timestamp::from_millis(case.now),
            &hosts,
            |host| heard.get(host).copied(),
            &memory,
            &policy,
        );
        assert_eq!(decision, case.expected, "{}", case.name);
    }

    #[test]
    fn the_detector_marks_down_exactly_the_hosts_silent_too_long() {
        use HostStatus::{Cordoned, Down, Draining, Ready};
        let elected = NOW - 2 * TTL;
        let cases = vec![
            Case {
                name: "a fresh leader grants a host it never heard two TTLs",
                leading_since: elected,
                now: NOW,
                hosts: vec![("h1", Ready, Some(elected), None)],
                recent_downs: vec![],
                arrival: None,
                expected: mark_down(&[]),
            },
            Case {
                name: "past two TTLs from the election, a host never heard is down",
                leading_since: elected - 1,
                now: NOW,
                hosts: vec![("h1", Ready, Some(elected - 1), None)],
                recent_downs: vec![],
                arrival: None,
                expected: mark_down(&["h1"]),
            },
            Case {
                name: "a heartbeat since the election counts",
                leading_since: elected - 1,
                now: NOW,
                hosts: vec![("h1", Ready, Some(elected - 1), Some(NOW - 1))],
                recent_downs: vec![],
                arrival: None,
                expected: mark_down(&[]),
            },
            Case {
                name: "a heartbeat from before the election does not shorten the grace",
                leading_since: elected,
                now: NOW,
                hosts: vec![("h1", Ready, Some(elected), Some(elected - 1))],
                recent_downs: vec![],
                arrival: None,
                expected: mark_down(&[]),
            },
            Case {
                name: "a host heard within its TTL is alive",
                leading_since: LONG_AGO,
                now: NOW,
                hosts: vec![("h1", Ready, Some(LONG_AGO), Some(NOW - TTL / 2))],
                recent_downs: vec![],
                arrival: None,
                expected: mark_down(&[]),
            },
            Case {
                name: "a host silent for exactly its TTL is not yet down",
                leading_since: LONG_AGO,
                now: NOW,
                hosts: vec![("h1", Ready, Some(LONG_AGO), Some(NOW - TTL))],
                recent_downs: vec![],
                arrival: None,
                expected: mark_down(&[]),
            },
            Case {
                name: "a host silent past its TTL is down",
                leading_since: LONG_AGO,
                now: NOW,
                hosts: vec![
                    ("h1", Ready, Some(LONG_AGO), Some(NOW - TTL - 1)),
                    ("h2", Ready, Some(LONG_AGO), Some(NOW - 1)),
                ],
                recent_downs: vec![],
                arrival: None,
                expected: mark_down(&["h1"]),
            },
            Case {
                name: "a host first seen in this look has a full TTL",
                leading_since: LONG_AGO,
                now: NOW,
                hosts: vec![("h1", Ready, None, None)],
                recent_downs: vec![],
                arrival: None,
                expected: mark_down(&[]),
            },
            Case {
                name: "a host that registered late, with nobody arriving, has a TTL from when it was first seen",
                leading_since: LONG_AGO,
                now: NOW,
                hosts: vec![
                    ("h1", Ready, Some(NOW - TTL), None),
                    ("h2", Ready, Some(NOW - TTL - 1), None),
                ],
                recent_downs: vec![],
                arrival: Some(LONG_AGO),
                expected: mark_down(&["h2"]),
            },
            Case {
                name: "a host never heard waits its turn while other hosts still arrive",
                leading_since: LONG_AGO,
                now: NOW,
                hosts: vec![
                    ("h1", Ready, Some(NOW - 5 * TTL), None),
                    ("h2", Ready, Some(NOW - 5 * TTL), Some(NOW - TTL)),
                ],
                recent_downs: vec![],
                arrival: Some(NOW - TTL),
                expected: mark_down(&[]),
            },
            Case {
                name: "a TTL after the last arrival, a host never heard is down",
                leading_since: LONG_AGO,
                now: NOW,
                hosts: vec![
                    ("h1", Ready, Some(NOW - 5 * TTL), None),
                    ("h2", Ready, Some(NOW - 5 * TTL), Some(NOW)),
                ],
                recent_downs: vec![],
                arrival: Some(NOW - TTL - 1),
                expected: mark_down(&["h1"]),
            },
            Case {
                name: "arrivals extend the wait by the arrivals' limit at most",
                leading_since: LONG_AGO,
                now: NOW,
                hosts: vec![
                    ("h1", Ready, Some(NOW - LIMIT - TTL), None),
                    ("h2", Ready, Some(NOW - LIMIT - TTL - 1), None),
                ],
                recent_downs: vec![],
                arrival: Some(NOW),
                expected: mark_down(&["h2"]),
            },
            Case {
                name: "long after the election, arrivals do not help a host that was heard and went silent",
                leading_since: NOW - LIMIT - 1,
                now: NOW,
                hosts: vec![("h1", Ready, Some(LONG_AGO), Some(NOW - TTL - 1))],
                recent_downs: vec![],
                arrival: Some(NOW),
                expected: mark_down(&["h1"]),
            },
            Case {
                name: "while the fleet returns, a host heard and silent since waits on the arrivals",
                leading_since: NOW - LIMIT,
                now: NOW,
                hosts: vec![("h1", Ready, Some(LONG_AGO), Some(NOW - TTL - 1))],
                recent_downs: vec![],
                arrival: Some(NOW - 1),
                expected: mark_down(&[]),
            },
            Case {
                name: "while the fleet returns, a heard host lost in the crowd waits on every arrival",
                leading_since: elected - 5 * TTL,
                now: NOW,
                hosts: vec![
                    ("h1", Ready, Some(LONG_AGO), Some(NOW - 6 * TTL)),
                    ("h2", Ready, Some(LONG_AGO), Some(NOW - 2 * TTL)),
                ],
                recent_downs: vec![],
                arrival: Some(NOW - TTL),
                expected: mark_down(&[]),
            },
            Case {
                name: "a TTL after the last arrival, a heard host lost in the crowd is down",
                leading_since: elected - 5 * TTL,
                now: NOW,
                hosts: vec![
                    ("h1", Ready, Some(LONG_AGO), Some(NOW - 6 * TTL)),
                    ("h2", Ready, Some(LONG_AGO), Some(NOW - TTL / 2)),
                ],
                recent_downs: vec![],
                arrival: Some(NOW - TTL - 1),
                expected: mark_down(&["h1"]),
            },
            Case {
                name: "an arrival before a heard host's last heartbeat does not extend its wait",
                leading_since: elected,
                now: NOW,
                hosts: vec![("h1", Ready, Some(LONG_AGO), Some(NOW - TTL - 1))],
                recent_downs: vec![],
                arrival: Some(NOW - TTL - 2),
                expected: mark_down(&["h1"]),
            },
            Case {
                name: "after a failover, a host never heard has two TTLs or waits on the arrivals",
                leading_since: elected,
                now: NOW + TTL,
                hosts: vec![
                    ("h1", Ready, Some(elected), None),
                    ("h2", Ready, Some(elected), Some(NOW)),
                ],
                recent_downs: vec![],
                arrival: Some(NOW),
                expected: mark_down(&[]),
            },
            Case {
                name: "a host already down is not marked again",
                leading_since: LONG_AGO,
                now: NOW,
                hosts: vec![("h1", Down, None, Some(LONG_AGO))],
                recent_downs: vec![],
                arrival: None,
                expected: mark_down(&[]),
            },
            Case {
                name: "draining and cordoned hosts are watched like ready ones",
                leading_since: LONG_AGO,
                now: NOW,
                hosts: vec![
                    ("h1", Draining, Some(LONG_AGO), Some(LONG_AGO)),
                    ("h2", Cordoned, Some(LONG_AGO), Some(LONG_AGO)),
                ],
                recent_downs: vec![],
                arrival: None,
                expected: mark_down(&["h1", "h2"]),
            },
            Case {
                name: "ten silent hosts are never a mass silence",
                leading_since: LONG_AGO,
                now: NOW,
                hosts: ready("h", 10, LONG_AGO),
                recent_downs: vec![],
                arrival: None,
                expected: mark_down(&names("h", 10)),
            },
            Case {
                name: "eleven silent hosts of eleven are a mass silence: hold off",
                leading_since: LONG_AGO,
                now: NOW,
                hosts: ready("h", 11, LONG_AGO),
                recent_downs: vec![],
                arrival: None,
                expected: Decision::HoldOff {
                    silent: 11,
                    recently_down: 0,
                    fleet: 11,
                },
            },
            Case {
                name: "eleven silent hosts of twenty are not",
                leading_since: LONG_AGO,
                now: NOW,
                hosts: [ready("s", 11, LONG_AGO), ready("a", 9, NOW)].concat(),
                recent_downs: vec![],
                arrival: None,
                expected: mark_down(&names("s", 11)),
            },
            Case {
                name: "a fleet coming up: eleven hosts of twenty not yet heard while nine arrive are waiting, not down",
                leading_since: LONG_AGO,
                now: NOW,
                hosts: [
                    names("s", 11)
                        .into_iter()
                        .map(|name| (name, Ready, Some(NOW - 3 * TTL), None))
                        .collect(),
                    ready("a", 9, NOW),
                ]
                .concat(),
                recent_downs: vec![],
                arrival: Some(NOW - TTL / 2),
                expected: mark_down(&[]),
            },
            Case {
                name: "hosts marked down lately count towards a mass silence",
                leading_since: LONG_AGO,
                now: NOW,
                hosts: [
                    ready("s", 6, LONG_AGO),
                    ready("a", 2, NOW),
                    names("d", 6)
                        .into_iter()
                        .map(|name| (name, Down, None, Some(LONG_AGO)))
                        .collect(),
                ]
                .concat(),
                recent_downs: names("d", 6)
                    .into_iter()
                    .map(|name| (name, NOW - 2 * TTL))
                    .collect(),
                arrival: None,
                expected: Decision::HoldOff {
                    silent: 6,
                    recently_down: 6,
                    fleet: 14,
                },
            },
            Case {
                name: "hosts marked down more than two TTLs ago do not",
                leading_since: LONG_AGO,
                now: NOW,
                hosts: [
                    ready("s", 6, LONG_AGO),
                    ready("a", 2, NOW),
                    names("d", 6)
                        .into_iter()
                        .map(|name| (name, Down, None, Some(LONG_AGO)))
                        .collect(),
                ]
                .concat(),
                recent_downs: names("d", 6)
                    .into_iter()
                    .map(|name| (name, NOW - 2 * TTL - 1))
                    .collect(),
                arrival: None,
                expected: mark_down(&names("s", 6)),
            },
            Case {
                name: "a host marked down lately that is back counts as itself, not as down",
                leading_since: LONG_AGO,
                now: NOW,
                hosts: [
                    ready("s", 6, LONG_AGO),
                    ready("a", 2, NOW),
                    names("d", 6)
                        .into_iter()
                        .map(|name| (name, Ready, Some(LONG_AGO), Some(NOW)))
                        .collect(),
                ]
                .concat(),
                recent_downs: names("d", 6).into_iter().map(|name| (name, NOW)).collect(),
                arrival: None,
                expected: mark_down(&names("s", 6)),
            },
        ];
        for case in &cases {
            check(case);
        }
    }

    #[test]
    fn the_arrivals_grace_is_forty_ttls_and_never_under_ten_minutes() {
        let limit = |seconds| {
            Policy {
                ttl: Duration::from_secs(seconds),
            }
            .arrival_limit()
        };
        assert_eq!(limit(9), Duration::from_secs(600));
        assert_eq!(limit(14), Duration::from_secs(600));
        assert_eq!(limit(15), Duration::from_secs(600));
        assert_eq!(limit(20), Duration::from_secs(800));
        assert_eq!(
            Policy {
                ttl: Duration::from_millis(TTL)
            }
            .arrival_limit(),
            Duration::from_millis(LIMIT)
        );
    }

    #[test]
    fn the_memory_keeps_first_sightings_and_recent_markings_of_the_hosts_it_watches() {
        let policy = Policy {
            ttl: Duration::from_millis(TTL),
        };
        let at = Timestamp::from_millis;
        let mut memory = Memory::new(at(LONG_AGO));
        let hosts: BTreeMap<HostId, HostStatus> = [
            (id("ready"), HostStatus::Ready),
            (id("down"), HostStatus::Down),
        ]
        .into();
        memory.observe(at(NOW), &hosts, |_| None, &policy);
        assert_eq!(memory.first_seen, [(id("ready"), at(NOW))].into());
        // A later look keeps the first sighting.
        memory.observe(at(NOW + 1), &hosts, |_| None, &policy);
        assert_eq!(memory.first_seen, [(id("ready"), at(NOW))].into());
        memory.marked_down(at(NOW + 1), [id("down")]);
        memory.observe(at(NOW + 1 + 2 * TTL), &hosts, |_| None, &policy);
        assert_eq!(memory.recent_downs, [(id("down"), at(NOW + 1))].into());
        memory.observe(at(NOW + 2 + 2 * TTL), &hosts, |_| None, &policy);
        assert!(memory.recent_downs.is_empty());
        // A host that went away is forgotten; one that is back is watched, and no longer a
        // marking.
        memory.marked_down(at(NOW), [id("down")]);
        let back: BTreeMap<HostId, HostStatus> = [(id("down"), HostStatus::Ready)].into();
        memory.observe(at(NOW), &back, |_| None, &policy);
        assert_eq!(memory.first_seen, [(id("down"), at(NOW))].into());
        assert!(memory.recent_downs.is_empty());
    }

    #[test]
    fn the_memory_notes_each_hosts_first_heartbeat_under_this_leader() {
        let policy = Policy {
            ttl: Duration::from_millis(TTL),
        };
        let at = Timestamp::from_millis;
        let mut memory = Memory::new(at(LONG_AGO));
        let hosts: BTreeMap<HostId, HostStatus> = [
            (id("a"), HostStatus::Ready),
            (id("b"), HostStatus::Ready),
            (id("old"), HostStatus::Ready),
        ]
        .into();
        let heard: BTreeMap<HostId, Timestamp> = [
            (id("a"), at(NOW - 5)),
            (id("b"), at(NOW - 2)),
            // Heard by this process before it led: not an arrival.
            (id("old"), at(LONG_AGO - 1)),
        ]
        .into();
        memory.observe(at(NOW), &hosts, |host| heard.get(host).copied(), &policy);
        assert_eq!(memory.heard, [id("a"), id("b")].into());
        assert_eq!(memory.unheard(), 1, "old");
        assert_eq!(memory.last_arrival, Some(at(NOW - 2)));
        // A later heartbeat of a host already heard is no arrival.
        let later: BTreeMap<HostId, Timestamp> = [(id("a"), at(NOW + 50))].into();
        memory.observe(
            at(NOW + 50),
            &hosts,
            |host| later.get(host).copied(),
            &policy,
        );
        assert_eq!(memory.last_arrival, Some(at(NOW - 2)));
        // A host that went down is forgotten: when it returns, it arrives again.
        let down: BTreeMap<HostId, HostStatus> = [(id("a"), HostStatus::Down)].into();
        memory.observe(at(NOW + 60), &down, |_| None, &policy);
        assert!(memory.heard.is_empty());
        memory.observe(
            at(NOW + 70),
            &hosts,
            |host| later.get(host).copied(),
            &policy,
        );
        assert_eq!(memory.last_arrival, Some(at(NOW + 50)));
    }

    #[test]
    fn a_mass_silence_is_most_of_a_fleet_beyond_a_few_hosts() {
        assert!(!mass_silence(1, 1), "a one-host fleet's outage is real");
        assert!(!mass_silence(10, 10));
        assert!(mass_silence(11, 11));
        assert!(mass_silence(56, 100));
        assert!(!mass_silence(55, 100));
        assert!(
            !mass_silence(500, 5_000),
            "a rack of a large fleet is marked down"
        );
    }
}
