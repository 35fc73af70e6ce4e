//! How many new connections a server works on at once. A handshake (QUIC, TLS with both sides'
//! certificates, then the hello) costs a server far more CPU than a request; when thousands of
//! clients connect at once (a fleet started together, or every agent returning to a new leader
//! after a failover), a server that takes them all splits its CPU among all of them, each
//! handshake outlives its client's patience (5 s), and the server spends its time on handshakes
//! nobody waits for any more: on two cores, 2,000 handshakes a second were abandoned that way.
//!
//! So a server works on a bounded number at once and ignores a client's first packet beyond it:
//! no answer, no state, almost no CPU. The client's QUIC sends that packet again after about a
//! second (and again after that, within its handshake timeout), by which time places have freed.
//! Ignoring rather than refusing keeps the retry in QUIC, at QUIC's pace: a refusal sends the
//! client's whole link into its backoff and on to the next coordinator.
//!
//! The bound follows how long handshakes take ([`Limit`]): it grows by one with each handshake
//! done within [`TARGET`] and halves (at most once per [`TARGET`]) when one took longer, between
//! [`FLOOR`] and the configured most. A fixed bound was tried first: 256 broke the collapse at
//! 20,000 hosts but slowed a 5,000-host fleet-up from 17 s to 44 s, because while the clients'
//! own process was slow, 256 places completed fewer handshakes a second than the server could.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A handshake done within this long says the server keeps up: a fifth of a client's patience.
const TARGET: Duration = Duration::from_secs(1);
/// The bound never falls below this many handshakes under way.
const FLOOR: usize = 32;
/// Where the bound starts.
const START: usize = 256;

/// The handshakes under way on one server, its bound, and the new connections it ignored.
#[derive(Debug)]
pub(crate) struct Admission {
    under_way: AtomicUsize,
    ignored: AtomicU64,
    /// The bound in force, read at each new connection ([`Limit::now`]).
    bound: AtomicUsize,
    limit: Mutex<Limit>,
}

/// One handshake's place among those under way, given back when dropped (once its hello is
/// done, or it failed), with how long it took.
#[derive(Debug)]
pub(crate) struct Slot {
    admission: Arc<Admission>,
    since: Instant,
}

impl Admission {
    /// With a bound of at most `most` handshakes under way (at least [`FLOOR`], unless `most`
    /// is lower).
    pub(crate) fn new(most: usize) -> Arc<Admission> {
        let limit = Limit::new(most);
        Arc::new(Admission {
            under_way: AtomicUsize::new(0),
            ignored: AtomicU64::new(0),
            bound: AtomicUsize::new(limit.now),
            limit: Mutex::new(limit),
        })
    }

    /// A place for one more handshake, unless the bound's worth are under way already: the
    /// caller then ignores the connection, and it is counted.
    pub(crate) fn enter(self: &Arc<Admission>) -> Option<Slot> {
        let bound = self.bound.load(Ordering::Relaxed);
        let taken = self
            .under_way
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                (now < bound).then_some(now + 1)
            });
        match taken {
            Ok(_) => Some(Slot {
                admission: self.clone(),
                since: Instant::now(),
            }),
            Err(_) => {
                self.ignored.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// The handshakes under way now.
    pub(crate) fn under_way(&self) -> usize {
        self.under_way.load(Ordering::Acquire)
    }

    /// The bound in force now.
    pub(crate) fn bound(&self) -> usize {
        self.bound.load(Ordering::Relaxed)
    }

    /// Whether connections were ignored since [`Admission::take_ignored`] last took them.
    pub(crate) fn has_ignored(&self) -> bool {
        self.ignored.load(Ordering::Relaxed) > 0
    }

    /// The connections ignored since the last call (what a log line says, so that thousands
    /// ignored a second make one line).
    pub(crate) fn take_ignored(&self) -> u64 {
        self.ignored.swap(0, Ordering::Relaxed)
    }

    fn done(&self, took: Duration, at: Instant) {
        let mut limit = self
            .limit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        limit.after(took, at);
        self.bound.store(limit.now, Ordering::Relaxed);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.under_way.fetch_sub(1, Ordering::AcqRel);
        let at = Instant::now();
        self.admission.done(at.duration_since(self.since), at);
    }
}

/// The bound on handshakes under way, as the handshakes done move it: one place more per
/// handshake that keeps up (which doubles it every handshake's time, as TCP's slow start, not its
/// additive increase), half as many when one does not (the same reason as TCP's: keep the queue
/// short while using what capacity there is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Limit {
    pub(crate) now: usize,
    floor: usize,
    most: usize,
    /// When it was last halved.
    cut: Option<Instant>,
}

impl Limit {
    pub(crate) fn new(most: usize) -> Limit {
        let floor = FLOOR.min(most);
        Limit {
            now: START.clamp(floor, most),
            floor,
            most,
            cut: None,
        }
    }

    /// After a handshake that took `took`, done at `at`: one more place if it was within
    /// [`TARGET`]; half as many if not, unless the bound was halved less than [`TARGET`] ago (the
    /// handshakes that end just after a cut began before it).
    pub(crate) fn after(&mut self, took: Duration, at: Instant) {
        if took <= TARGET {
            self.now = (self.now + 1).min(self.most);
            return;
        }
        if self
            .cut
            .is_some_and(|cut| at.saturating_duration_since(cut) < TARGET)
        {
            return;
        }
        self.now = (self.now / 2).max(self.floor);
        self.cut = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_is_given_while_fewer_than_the_bound_are_under_way_and_back_when_dropped() {
        let admission = Admission::new(2);
        assert_eq!(admission.bound(), 2);
        let first = admission.enter().expect("room for one");
        let second = admission.enter().expect("room for two");
        assert_eq!(admission.under_way(), 2);
        assert!(admission.enter().is_none(), "a third is ignored");
        assert!(admission.enter().is_none(), "and a fourth");
        drop(first);
        assert_eq!(admission.under_way(), 1);
        let third = admission.enter().expect("room again once one is done");
        drop((second, third));
        assert_eq!(admission.under_way(), 0);
        assert_eq!(admission.take_ignored(), 2);
        assert_eq!(admission.take_ignored(), 0, "taken");
    }

    #[test]
    fn a_bound_of_zero_takes_nothing() {
        let admission = Admission::new(0);
        assert!(admission.enter().is_none());
        assert_eq!(admission.under_way(), 0);
    }

    #[test]
    fn the_bound_starts_at_256_within_the_floor_and_the_most() {
        assert_eq!(Limit::new(4_096).now, 256);
        assert_eq!(Limit::new(100).now, 100);
        assert_eq!(Limit::new(8).now, 8);
    }

    #[test]
    fn fast_handshakes_raise_the_bound_by_one_each_up_to_the_most() {
        let at = Instant::now();
        let mut limit = Limit::new(258);
        for _ in 0..5 {
            limit.after(Duration::from_millis(40), at);
        }
        assert_eq!(limit.now, 258);
        limit.after(TARGET, at);
        assert_eq!(limit.now, 258, "the target itself is fast enough");
    }

    #[test]
    fn a_slow_handshake_halves_the_bound_at_most_once_per_target_and_never_below_the_floor() {
        let start = Instant::now();
        let slow = TARGET + Duration::from_millis(1);
        let mut limit = Limit::new(4_096);
        limit.after(slow, start);
        assert_eq!(limit.now, 128);
        // Others that were under way when it was cut end slow too: no further cut yet.
        limit.after(slow, start + TARGET / 2);
        assert_eq!(limit.now, 128);
        limit.after(slow, start + TARGET);
        assert_eq!(limit.now, 64);
        for second in 2..10 {
            limit.after(slow, start + TARGET * second);
        }
        assert_eq!(limit.now, FLOOR);
        // Fast again: it grows back one place a handshake.
        limit.after(Duration::from_millis(10), start + TARGET * 10);
        assert_eq!(limit.now, FLOOR + 1);
    }
}
