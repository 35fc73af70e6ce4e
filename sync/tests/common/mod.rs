//! An in-memory model of a sync session: plan, apply each change to its side's tree (only if
//! that side still holds what was planned against), record agreements, repeat until quiet.

// Tests fail by panicking.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code,
    unreachable_pub
)]

use nexus_sync::{Conflict, Digest, Entry, Mode, Side, Tree, reconcile};

pub fn path(p: &str) -> nexus_sync::RelPath {
    p.parse().unwrap()
}

pub fn file(content: u8) -> Entry {
    Entry::File {
        digest: Digest([content; 32]),
        size: u64::from(content),
        executable: false,
    }
}

pub struct Session {
    pub ancestor: Tree,
    pub alpha: Tree,
    pub beta: Tree,
    pub mode: Mode,
    pub conflicts: Vec<Conflict>,
}

impl Session {
    pub fn new(ancestor: Tree, alpha: Tree, beta: Tree, mode: Mode) -> Session {
        Session {
            ancestor,
            alpha,
            beta,
            mode,
            conflicts: Vec::new(),
        }
    }

    /// One cycle; `between` may edit the sides after the plan and before the changes land.
    /// Answers how many changes were applied.
    pub fn cycle(&mut self, between: impl FnOnce(&mut Tree, &mut Tree)) -> usize {
        let mut plan = reconcile(&self.ancestor, &self.alpha, &self.beta, self.mode);
        between(&mut self.alpha, &mut self.beta);
        let safe = matches!(self.mode, Mode::TwoWaySafe | Mode::OneWaySafe);
        let mut applied = 0;
        for change in plan.changes.clone() {
            // No edit lost: a safe mode replaces only what the ancestor already had (an
            // unchanged side) or nothing at all.
            if safe {
                assert!(
                    change.expected.is_empty()
                        || change.expected == self.ancestor.subtree(&change.path),
                    "a safe mode overwrote a change at {}: {change:?}",
                    change.path
                );
            }
            if self.mode != Mode::TwoWaySafe && self.mode != Mode::TwoWayResolved {
                assert_eq!(change.side, Side::Beta, "a one-way mode changed alpha");
            }
            let target = match change.side {
                Side::Alpha => &mut self.alpha,
                Side::Beta => &mut self.beta,
            };
            if target
                .apply(&change.path, &change.expected, &change.desired)
                .is_ok()
            {
                plan.applied(&change);
                applied += 1;
            }
        }
        self.ancestor = plan.ancestor;
        self.conflicts = plan.conflicts;
        self.alpha.check().unwrap();
        self.beta.check().unwrap();
        applied
    }

    /// Cycles until a plan has nothing to do; panics if that takes more than `limit`.
    pub fn settle(&mut self, limit: usize) {
        for _ in 0..limit {
            let plan = reconcile(&self.ancestor, &self.alpha, &self.beta, self.mode);
            if plan.is_quiet() {
                self.ancestor = plan.ancestor;
                self.conflicts = plan.conflicts;
                return;
            }
            self.cycle(|_, _| {});
        }
        panic!(
            "no quiet after {limit} cycles:\nancestor {:?}\nalpha {:?}\nbeta {:?}",
            self.ancestor, self.alpha, self.beta
        );
    }
}
