//! A linearizability checker for the workspace registry: Wing & Gong's search with porcupine's
//! optimisations. Pure: it takes a [`History`] and returns a [`Report`]; no clock, no I/O.
//!
//! - **P-compositionality**: a map of registers is linearizable when each register is, so each
//!   workspace name is checked on its own (lists, which read every name, are left to the
//!   invariants).
//! - **Memoisation**: a search state is the set of operations linearized so far (a bitset) and the
//!   model's state; one seen before is not explored again.
//! - **Unknown operations** complete at infinity (any later operation may precede them) and may
//!   also never take effect.
//! - **A budget** of search steps per name: a name whose search runs out is reported
//!   [`Undecided`], never counted as linearizable.
//!
//! The model of one name is nondeterministic: a workspace being destroyed disappears when its
//! agent reports it gone, whenever that is. The checker follows the set of states the model may
//! be in (porcupine's power-set construction for nondeterministic models); there are four.
//!
//! | state | create | destroy | stop / start | read observes |
//! |---|---|---|---|---|
//! | absent | ok → present, running | `WORKSPACE_NOT_FOUND` | `WORKSPACE_NOT_FOUND` | absent |
//! | present(run) | `WORKSPACE_ALREADY_EXISTS` | ok → destroying | ok → present(stopped / running) | present(run) |
//! | destroying | `WORKSPACE_ALREADY_EXISTS` | ok (stays) | `INVALID_ARGUMENT` (being destroyed) | destroying |
//!
//! and destroying may become absent at any moment. These are the coordinator's own answers
//! (`state::workspaces`: `create`, `destroy`, `set_desired_run`; `service::workspaces`: a change
//! is refused `WORKSPACE_NOT_FOUND` by the read before it is proposed). Besides, any operation may
//! be refused with no effect for a reason the model does not track: `RESOURCE_EXHAUSTED` (no
//! host fits, a full queue), `PORT_CONFLICT`, `PERMISSION_DENIED`, `AUTHENTICATION_FAILED`,
//! `VERSION_MISMATCH`, `UNSUPPORTED`, and `INVALID_ARGUMENT` for a create or destroy (a check of
//! the request). A change that took effect but was answered with a definite error has no
//! linearization, and so is a violation: e.g. a create answered `WORKSPACE_NOT_FOUND` (the
//! coordinator's answer when the workspace it created was destroyed before it answered) or a
//! destroy answered `WORKSPACE_NOT_FOUND` while the workspace still existed.

use std::collections::HashSet;
use std::fmt;

use nexus_protocol::WorkspaceName;
use nexus_protocol::error::ErrorCode;

use super::history::{History, Observed, Op, OpId, OpKind, Outcome, Run};

/// How hard to look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckConfig {
    /// The most search steps for one name before it is reported [`Undecided`].
    pub step_budget: u64,
}

impl Default for CheckConfig {
    fn default() -> CheckConfig {
        CheckConfig {
            step_budget: 10_000_000,
        }
    }
}

/// What the checker found, name by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// How many names were checked.
    pub names: usize,
    /// How many operations were checked (lists are not).
    pub ops: usize,
    /// Names with no linearization.
    pub violations: Vec<Violation>,
    /// Names whose search ran out of budget: neither proven nor refuted.
    pub undecided: Vec<Undecided>,
}

impl Report {
    /// Whether every name was proven linearizable.
    pub fn is_linearizable(&self) -> bool {
        self.violations.is_empty() && self.undecided.is_empty()
    }

    /// The report for people, with each violation's operations from `history`.
    pub fn render(&self, history: &History) -> String {
        let mut text = format!(
            "linearizability: {} names, {} operations, {} violations, {} undecided\n",
            self.names,
            self.ops,
            self.violations.len(),
            self.undecided.len()
        );
        for violation in &self.violations {
            text.push_str(&violation.render(history));
        }
        for undecided in &self.undecided {
            text.push_str(&format!("{undecided}\n"));
        }
        text
    }
}

/// One name's history has no linearization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub name: WorkspaceName,
    /// The longest linearizable prefix the search found, in linearization order.
    pub linearized: Vec<OpId>,
    /// The states the model could be in after that prefix.
    pub states: Vec<ModelState>,
    /// The operation that had to come next (it completed before every operation still left
    /// was invoked, or was the first left to complete) and could not.
    pub blocked: OpId,
    /// The operations that could have been linearized after the prefix instead (invoked before
    /// `blocked` completed); none of them leads anywhere either.
    pub candidates: Vec<OpId>,
}

impl Violation {
    /// Every operation the violation names: the prefix's, the blocked one and the candidates.
    pub fn ops(&self) -> Vec<OpId> {
        let mut ops: Vec<OpId> = self.linearized.clone();
        ops.push(self.blocked);
        ops.extend(&self.candidates);
        ops.sort();
        ops.dedup();
        ops
    }

    /// The violation for people: the prefix, the states it leaves, the blocked operation and the
    /// operations around it.
    pub fn render(&self, history: &History) -> String {
        let line = |id: &OpId| match history.op(*id) {
            Some(op) => format!("    {op}\n"),
            None => format!("    {id} (not in this history)\n"),
        };
        let mut text = format!("not linearizable: workspace {}\n", self.name);
        text.push_str("  longest linearizable prefix:\n");
        self.linearized
            .iter()
            .for_each(|id| text.push_str(&line(id)));
        let states: Vec<String> = self.states.iter().map(ToString::to_string).collect();
        text.push_str(&format!(
            "  model states after it: {}\n",
            states.join(" | ")
        ));
        text.push_str("  cannot come next:\n");
        text.push_str(&line(&self.blocked));
        self.candidates
            .iter()
            .filter(|id| **id != self.blocked)
            .for_each(|id| text.push_str(&line(id)));
        text.push_str("  around it:\n");
        text.push_str(&history.around(self.blocked, 6));
        text
    }
}

/// One name's search ran out of budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecided {
    pub name: WorkspaceName,
    pub ops: usize,
    pub steps: u64,
}

impl fmt::Display for Undecided {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "undecided: workspace {} ({} operations) after {} search steps",
            self.name, self.ops, self.steps
        )
    }
}

/// One name's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    Violation(Violation),
    Undecided(Undecided),
}

/// A state of one name's model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ModelState {
    Absent,
    Present(Run),
    /// Being destroyed; may become absent at any moment.
    Destroying,
}

impl fmt::Display for ModelState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModelState::Absent => "absent",
            ModelState::Present(Run::Running) => "present, running",
            ModelState::Present(Run::Stopped) => "present, stopped",
            ModelState::Destroying => "destroying",
        })
    }
}

/// Checks every name of `history` on its own.
pub fn check(history: &History, config: &CheckConfig) -> Report {
    let mut by_name: std::collections::BTreeMap<&WorkspaceName, Vec<&Op>> = Default::default();
    for op in &history.ops {
        if let Some(name) = op.name() {
            by_name.entry(name).or_default().push(op);
        }
    }
    let mut report = Report {
        names: by_name.len(),
        ..Report::default()
    };
    for (name, ops) in by_name {
        report.ops += ops.len();
        match check_name(name, &ops, config) {
            Verdict::Linearizable => {}
            Verdict::Violation(violation) => report.violations.push(violation),
            Verdict::Undecided(undecided) => report.undecided.push(undecided),
        }
    }
    report
}

/// Checks the operations of one name (all of them on `name`; lists are ignored), starting from
/// an absent workspace.
pub fn check_name(name: &WorkspaceName, ops: &[&Op], config: &CheckConfig) -> Verdict {
    let ops: Vec<&Op> = ops
        .iter()
        .copied()
        .filter(|op| op.kind() != OpKind::List)
        .collect();
    Search::new(&ops).run(name, config)
}

// The model: sets of states as bitmasks.

type States = u8;
const ABSENT: States = 1;
const RUNNING: States = 2;
const STOPPED: States = 4;
const DESTROYING: States = 8;
const ALL_STATES: [(States, ModelState); 4] = [
    (ABSENT, ModelState::Absent),
    (RUNNING, ModelState::Present(Run::Running)),
    (STOPPED, ModelState::Present(Run::Stopped)),
    (DESTROYING, ModelState::Destroying),
];

/// A workspace being destroyed may be gone already.
fn settle(states: States) -> States {
    if states & DESTROYING != 0 {
        states | ABSENT
    } else {
        states
    }
}

/// What the state machine does with a change in `state`: the new state, or the code it refuses
/// it with. Reads are not changes.
fn apply(kind: OpKind, state: States) -> Result<States, ErrorCode> {
    let present = state & (RUNNING | STOPPED) != 0;
    match kind {
        OpKind::Create if state == ABSENT => Ok(RUNNING),
        OpKind::Create => Err(ErrorCode::WorkspaceAlreadyExists),
        OpKind::Destroy if state == ABSENT => Err(ErrorCode::WorkspaceNotFound),
        OpKind::Destroy => Ok(DESTROYING),
        OpKind::Stop | OpKind::Start if state == ABSENT => Err(ErrorCode::WorkspaceNotFound),
        OpKind::Stop | OpKind::Start if state == DESTROYING => Err(ErrorCode::InvalidArgument),
        OpKind::Stop if present => Ok(STOPPED),
        OpKind::Start if present => Ok(RUNNING),
        _ => Ok(state),
    }
}

/// A refusal that leaves the workspace as it was, whatever its state.
fn refused_anywhere(kind: OpKind, code: ErrorCode) -> bool {
    match code {
        ErrorCode::ResourceExhausted
        | ErrorCode::PortConflict
        | ErrorCode::PermissionDenied
        | ErrorCode::AuthenticationFailed
        | ErrorCode::VersionMismatch
        | ErrorCode::Unsupported => true,
        // A create's or destroy's request checks; a stop or start is refused so only while the
        // workspace is being destroyed (the model's own answer).
        ErrorCode::InvalidArgument => matches!(kind, OpKind::Create | OpKind::Destroy),
        ErrorCode::WorkspaceNotFound | ErrorCode::WorkspaceAlreadyExists => false,
        // Not a definite code: no effect claimed, none checked.
        _ => !super::history::is_definite(code),
    }
}

/// The states after `op` from one state `state` (a single bit); empty if `op`'s outcome is
/// impossible there.
fn step_one(op: &Op, state: States) -> States {
    let kind = op.kind();
    if kind == OpKind::Read {
        return match &op.outcome {
            Outcome::Ok(Observed::Absent) if state == ABSENT => state,
            Outcome::Ok(Observed::Present(Run::Running)) if state == RUNNING => state,
            Outcome::Ok(Observed::Present(Run::Stopped)) if state == STOPPED => state,
            Outcome::Ok(Observed::Destroying) if state == DESTROYING => state,
            Outcome::Ok(_) => 0,
            Outcome::Failed(_) | Outcome::Unknown(..) => state,
        };
    }
    let answer = apply(kind, state);
    match (&op.outcome, answer) {
        (Outcome::Ok(_), Ok(next)) => next,
        (Outcome::Ok(_), Err(_)) => 0,
        (Outcome::Failed(code), Err(refusal)) if *code == refusal => state,
        (Outcome::Failed(code), _) if refused_anywhere(kind, *code) => state,
        (Outcome::Failed(_), _) => 0,
        // It took effect here, or it did not (now, or ever).
        (Outcome::Unknown(..), Ok(next)) => state | next,
        (Outcome::Unknown(..), Err(_)) => state,
    }
}

/// The states after `op` from any of `states`.
fn step(op: &Op, states: States) -> States {
    let states = settle(states);
    ALL_STATES
        .iter()
        .filter(|(bit, _)| states & bit != 0)
        .fold(0, |next, (bit, _)| next | step_one(op, *bit))
}

fn model_states(states: States) -> Vec<ModelState> {
    let states = settle(states);
    ALL_STATES
        .iter()
        .filter(|(bit, _)| states & bit != 0)
        .map(|(_, state)| *state)
        .collect()
}

// The search: porcupine's `checkSingle` over a doubly linked list of call and return entries.

/// One end of an operation: its call (invocation) or its return (completion).
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The operation's index in the search's `ops`.
    op: usize,
    call: bool,
}

struct Search<'a> {
    ops: Vec<&'a Op>,
    /// Entries in time order, index 0 a head sentinel; `prev`/`next` link the live ones.
    entries: Vec<Entry>,
    prev: Vec<usize>,
    next: Vec<usize>,
    /// Each operation's call and return entry.
    call_of: Vec<usize>,
    return_of: Vec<usize>,
}

const NONE: usize = usize::MAX;

/// The best (longest) prefix seen, for a violation's report.
struct Best {
    linearized: Vec<usize>,
    states: States,
    blocked: usize,
    candidates: Vec<usize>,
}

impl<'a> Search<'a> {
    fn new(ops: &[&'a Op]) -> Search<'a> {
        let ops = ops.to_vec();
        // (time, return after call at the same time, op, call)
        let mut events: Vec<(u128, bool, usize, bool)> = Vec::with_capacity(ops.len() * 2);
        for (index, op) in ops.iter().enumerate() {
            events.push((op.invoked.as_nanos(), false, index, true));
            let end = match (&op.outcome, op.completed) {
                (Outcome::Unknown(..), _) | (_, None) => u128::MAX,
                (_, Some(at)) => at.as_nanos().max(op.invoked.as_nanos()),
            };
            events.push((end, true, index, false));
        }
        events.sort();
        let mut entries = vec![Entry {
            op: NONE,
            call: false,
        }];
        let mut call_of = vec![0; ops.len()];
        let mut return_of = vec![0; ops.len()];
        for (_, _, op, call) in events {
            if call {
                call_of[op] = entries.len();
            } else {
                return_of[op] = entries.len();
            }
            entries.push(Entry { op, call });
        }
        let count = entries.len();
        let prev = (0..count)
            .map(|i| i.checked_sub(1).unwrap_or(NONE))
            .collect();
        let next = (0..count)
            .map(|i| if i + 1 < count { i + 1 } else { NONE })
            .collect();
        Search {
            ops,
            entries,
            prev,
            next,
            call_of,
            return_of,
        }
    }

    fn unlink(&mut self, entry: usize) {
        let (prev, next) = (self.prev[entry], self.next[entry]);
        self.next[prev] = next;
        if next != NONE {
            self.prev[next] = prev;
        }
    }

    fn relink(&mut self, entry: usize) {
        let (prev, next) = (self.prev[entry], self.next[entry]);
        self.next[prev] = entry;
        if next != NONE {
            self.prev[next] = entry;
        }
    }

    /// Takes operation `op`'s call and return out of the list.
    fn lift(&mut self, op: usize) {
        self.unlink(self.call_of[op]);
        self.unlink(self.return_of[op]);
    }

    /// Puts them back (in the reverse order of [`Search::lift`]).
    fn unlift(&mut self, op: usize) {
        self.relink(self.return_of[op]);
        self.relink(self.call_of[op]);
    }

    /// The operations whose calls come before `entry` in the live list.
    fn calls_before(&self, entry: usize) -> Vec<usize> {
        let mut found = Vec::new();
        let mut at = self.next[0];
        while at != NONE && at != entry {
            if self.entries[at].call {
                found.push(self.entries[at].op);
            }
            at = self.next[at];
        }
        found
    }

    fn run(mut self, name: &WorkspaceName, config: &CheckConfig) -> Verdict {
        let words = self.ops.len().div_ceil(64);
        let mut linearized = vec![0u64; words];
        let mut seen: HashSet<(Vec<u64>, States)> = HashSet::new();
        let mut states: States = ABSENT;
        // The operations linearized, in order, with the states before each.
        let mut stack: Vec<(usize, States)> = Vec::new();
        let mut best: Option<Best> = None;
        let mut steps: u64 = 0;
        let mut entry = self.next[0];
        while self.next[0] != NONE {
            steps += 1;
            if steps > config.step_budget {
                return Verdict::Undecided(Undecided {
                    name: name.clone(),
                    ops: self.ops.len(),
                    steps,
                });
            }
            let Entry { op, call } = self.entries[entry];
            if call {
                let after = step(self.ops[op], states);
                if after != 0 {
                    let (word, bit) = (op / 64, 1u64 << (op % 64));
                    linearized[word] |= bit;
                    if seen.insert((linearized.clone(), after)) {
                        stack.push((op, states));
                        states = after;
                        self.lift(op);
                        entry = self.next[0];
                        continue;
                    }
                    linearized[word] &= !bit;
                }
                entry = self.next[entry];
                continue;
            }
            // A return: its operation must have been linearized by now. Back up.
            if best
                .as_ref()
                .is_none_or(|best| stack.len() > best.linearized.len())
            {
                best = Some(Best {
                    linearized: stack.iter().map(|(op, _)| *op).collect(),
                    states,
                    blocked: op,
                    candidates: self.calls_before(entry),
                });
            }
            let Some((top, before)) = stack.pop() else {
                return Verdict::Violation(self.violation(name, best));
            };
            linearized[top / 64] &= !(1u64 << (top % 64));
            states = before;
            self.unlift(top);
            entry = self.next[self.call_of[top]];
            if entry == NONE {
                // Cannot happen: a call is always followed by its own return.
                return Verdict::Violation(self.violation(name, best));
            }
        }
        Verdict::Linearizable
    }

    fn violation(&self, name: &WorkspaceName, best: Option<Best>) -> Violation {
        let id = |op: usize| self.ops[op].id;
        let best = best.unwrap_or(Best {
            linearized: Vec::new(),
            states: ABSENT,
            blocked: 0,
            candidates: Vec::new(),
        });
        Violation {
            name: name.clone(),
            linearized: best.linearized.iter().map(|op| id(*op)).collect(),
            states: model_states(best.states),
            blocked: id(best.blocked),
            candidates: best.candidates.iter().map(|op| id(*op)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::chaos::history::{Call, History, Op, OpId};

    const W: &str = "w";

    fn w() -> WorkspaceName {
        W.parse().unwrap()
    }

    /// An operation on `w` by `client`, from `from` to `to` (seconds; `None`: never completed).
    fn op(
        client: usize,
        call: fn(WorkspaceName) -> Call,
        from: u64,
        to: Option<u64>,
        outcome: Outcome,
    ) -> Op {
        Op {
            id: OpId(0),
            client,
            call: call(w()),
            invoked: Duration::from_secs(from),
            completed: to.map(Duration::from_secs),
            outcome,
        }
    }

    fn ok() -> Outcome {
        Outcome::Ok(Observed::Done)
    }
    fn seen(observed: Observed) -> Outcome {
        Outcome::Ok(observed)
    }
    fn failed(code: ErrorCode) -> Outcome {
        Outcome::Failed(code)
    }
    fn unknown() -> Outcome {
        Outcome::Unknown(ErrorCode::Timeout, "no answer".into())
    }
    const RUNNING: Observed = Observed::Present(Run::Running);
    const STOPPED: Observed = Observed::Present(Run::Stopped);

    fn verdict(ops: Vec<Op>) -> (History, Report) {
        let history = History::from_ops(ops);
        let report = check(&history, &CheckConfig::default());
        (history, report)
    }

    #[track_caller]
    fn passes(ops: Vec<Op>) {
        let (history, report) = verdict(ops);
        assert!(report.is_linearizable(), "{}", report.render(&history));
    }

    /// Fails, with `blocked` the operation that cannot come next.
    #[track_caller]
    fn fails(ops: Vec<Op>, blocked: usize) -> String {
        let (history, report) = verdict(ops);
        assert!(report.undecided.is_empty(), "{}", report.render(&history));
        assert_eq!(report.violations.len(), 1, "{}", report.render(&history));
        let text = report.render(&history);
        assert_eq!(report.violations[0].blocked, OpId(blocked), "{text}");
        text
    }

    #[test]
    fn a_workspace_life_in_sequence_passes() {
        passes(vec![
            op(0, Call::Read, 0, Some(1), seen(Observed::Absent)),
            op(0, Call::Create, 2, Some(3), ok()),
            op(0, Call::Read, 4, Some(5), seen(RUNNING)),
            op(
                0,
                Call::Create,
                6,
                Some(7),
                failed(ErrorCode::WorkspaceAlreadyExists),
            ),
            op(0, Call::Stop, 8, Some(9), ok()),
            op(0, Call::Read, 10, Some(11), seen(STOPPED)),
            op(0, Call::Start, 12, Some(13), ok()),
            op(0, Call::Read, 14, Some(15), seen(RUNNING)),
            op(0, Call::Destroy, 16, Some(17), ok()),
            op(0, Call::Read, 18, Some(19), seen(Observed::Destroying)),
            op(
                0,
                Call::Stop,
                20,
                Some(21),
                failed(ErrorCode::InvalidArgument),
            ),
            op(
                0,
                Call::Create,
                22,
                Some(23),
                failed(ErrorCode::WorkspaceAlreadyExists),
            ),
            op(0, Call::Read, 24, Some(25), seen(Observed::Absent)),
            op(
                0,
                Call::Destroy,
                26,
                Some(27),
                failed(ErrorCode::WorkspaceNotFound),
            ),
            op(
                0,
                Call::Start,
                28,
                Some(29),
                failed(ErrorCode::WorkspaceNotFound),
            ),
            op(0, Call::Create, 30, Some(31), ok()),
            op(
                0,
                Call::Create,
                32,
                Some(33),
                failed(ErrorCode::WorkspaceAlreadyExists),
            ),
            op(0, Call::Read, 34, Some(35), seen(RUNNING)),
        ]);
    }

    #[test]
    fn a_read_concurrent_with_a_create_may_see_either() {
        for observed in [Observed::Absent, RUNNING] {
            passes(vec![
                op(0, Call::Create, 0, Some(10), ok()),
                op(1, Call::Read, 1, Some(2), seen(observed)),
                op(1, Call::Read, 11, Some(12), seen(RUNNING)),
            ]);
        }
    }

    #[test]
    fn a_lost_acknowledged_create_fails() {
        let text = fails(
            vec![
                op(0, Call::Create, 0, Some(1), ok()),
                op(1, Call::Read, 2, Some(3), seen(Observed::Absent)),
            ],
            1,
        );
        assert!(
            text.contains("model states after it: present, running"),
            "{text}"
        );
    }

    #[test]
    fn a_create_refused_that_exists_fails() {
        fails(
            vec![
                op(
                    0,
                    Call::Create,
                    0,
                    Some(1),
                    failed(ErrorCode::ResourceExhausted),
                ),
                op(1, Call::Read, 2, Some(3), seen(RUNNING)),
            ],
            1,
        );
        // The same refusal with nothing seen after it is fine.
        passes(vec![
            op(
                0,
                Call::Create,
                0,
                Some(1),
                failed(ErrorCode::ResourceExhausted),
            ),
            op(1, Call::Read, 2, Some(3), seen(Observed::Absent)),
        ]);
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_destroy_fails() {
        fails(
            vec![
                op(0, Call::Create, 0, Some(1), ok()),
                op(0, Call::Destroy, 2, Some(3), ok()),
                op(1, Call::Read, 4, Some(5), seen(RUNNING)),
            ],
            2,
        );
        // Destroying, then gone, is what a destroy allows; but gone never comes back.
        passes(vec![
            op(0, Call::Create, 0, Some(1), ok()),
            op(0, Call::Destroy, 2, Some(3), ok()),
            op(1, Call::Read, 4, Some(5), seen(Observed::Destroying)),
            op(1, Call::Read, 6, Some(7), seen(Observed::Absent)),
        ]);
        fails(
            vec![
                op(0, Call::Create, 0, Some(1), ok()),
                op(0, Call::Destroy, 2, Some(3), ok()),
                op(1, Call::Read, 4, Some(5), seen(Observed::Absent)),
                op(1, Call::Read, 6, Some(7), seen(Observed::Destroying)),
            ],
            3,
        );
    }

    #[test]
    fn two_concurrent_creates_both_acknowledged_fail() {
        fails(
            vec![
                op(0, Call::Create, 0, Some(2), ok()),
                op(1, Call::Create, 1, Some(3), ok()),
            ],
            1,
        );
        // One of them refused is the right answer.
        passes(vec![
            op(0, Call::Create, 0, Some(2), ok()),
            op(
                1,
                Call::Create,
                1,
                Some(3),
                failed(ErrorCode::WorkspaceAlreadyExists),
            ),
        ]);
    }

    #[test]
    fn an_unknown_create_may_be_seen_later_or_never() {
        passes(vec![
            op(0, Call::Create, 0, None, unknown()),
            op(1, Call::Read, 5, Some(6), seen(Observed::Absent)),
            op(1, Call::Read, 7, Some(8), seen(RUNNING)),
        ]);
        passes(vec![
            op(0, Call::Create, 0, Some(1), unknown()),
            op(1, Call::Read, 5, Some(6), seen(Observed::Absent)),
            op(1, Call::Read, 7, Some(8), seen(Observed::Absent)),
        ]);
        // But an unknown create cannot take effect twice.
        fails(
            vec![
                op(0, Call::Create, 0, Some(1), unknown()),
                op(1, Call::Read, 2, Some(3), seen(RUNNING)),
                op(1, Call::Destroy, 4, Some(5), ok()),
                op(1, Call::Read, 6, Some(7), seen(Observed::Absent)),
                op(1, Call::Read, 8, Some(9), seen(RUNNING)),
            ],
            4,
        );
    }

    #[test]
    fn a_change_that_took_effect_but_was_answered_an_error_fails() {
        // Destroyed (the later read shows it), but answered not found while it existed.
        fails(
            vec![
                op(0, Call::Create, 0, Some(1), ok()),
                op(
                    0,
                    Call::Destroy,
                    2,
                    Some(3),
                    failed(ErrorCode::WorkspaceNotFound),
                ),
                op(1, Call::Read, 4, Some(5), seen(Observed::Destroying)),
            ],
            1,
        );
        // Stopped on a workspace being destroyed.
        fails(
            vec![
                op(0, Call::Create, 0, Some(1), ok()),
                op(0, Call::Destroy, 2, Some(3), ok()),
                op(0, Call::Stop, 4, Some(5), ok()),
            ],
            2,
        );
        // A create answered not found (created, then destroyed before the answer): the change
        // happened, the answer says it did not.
        fails(
            vec![op(
                0,
                Call::Create,
                0,
                Some(1),
                failed(ErrorCode::WorkspaceNotFound),
            )],
            0,
        );
    }

    #[test]
    fn a_former_incarnations_state_on_a_new_one_fails() {
        // Seen against a real cluster (see the report of `chaos_checker`): destroyed, created
        // again, then read as being destroyed with no destroy since.
        fails(
            vec![
                op(0, Call::Create, 0, Some(1), ok()),
                op(0, Call::Destroy, 2, Some(3), ok()),
                op(1, Call::Read, 4, Some(5), seen(Observed::Destroying)),
                op(2, Call::Create, 6, Some(7), ok()),
                op(0, Call::Stop, 8, Some(9), ok()),
                op(1, Call::Read, 10, Some(11), seen(Observed::Destroying)),
            ],
            5,
        );
    }

    #[test]
    fn a_stop_racing_a_destroy_may_be_refused_either_way() {
        for refusal in [ErrorCode::InvalidArgument, ErrorCode::WorkspaceNotFound] {
            passes(vec![
                op(0, Call::Create, 0, Some(1), ok()),
                op(0, Call::Destroy, 2, Some(6), ok()),
                op(1, Call::Stop, 3, Some(7), failed(refusal)),
                op(1, Call::Read, 8, Some(9), seen(Observed::Absent)),
            ]);
        }
    }

    #[test]
    fn names_are_checked_apart_and_lists_ignored() {
        let other: WorkspaceName = "v".parse().unwrap();
        let mut on_other = op(1, Call::Read, 2, Some(3), seen(Observed::Absent));
        on_other.call = Call::Read(other);
        let mut list = op(2, Call::Read, 0, Some(9), seen(Observed::Listed(vec![])));
        list.call = Call::List;
        let (history, report) =
            verdict(vec![op(0, Call::Create, 0, Some(1), ok()), on_other, list]);
        assert!(report.is_linearizable(), "{}", report.render(&history));
        assert_eq!((report.names, report.ops), (2, 2));
    }

    #[test]
    fn a_search_out_of_budget_is_undecided_not_ok() {
        // Twelve overlapping stops and starts after a create, then a read no order explains:
        // proving that takes thousands of steps.
        let mut ops = vec![op(0, Call::Create, 0, Some(1), ok())];
        for client in 0..12 {
            let call: fn(WorkspaceName) -> Call = if client % 2 == 0 {
                Call::Stop
            } else {
                Call::Start
            };
            ops.push(op(client, call, 2, Some(100), ok()));
        }
        ops.push(op(
            13,
            Call::Read,
            200,
            Some(201),
            seen(Observed::Destroying),
        ));
        let history = History::from_ops(ops);
        let tight = check(&history, &CheckConfig { step_budget: 20 });
        assert_eq!(tight.undecided.len(), 1, "{}", tight.render(&history));
        assert!(tight.violations.is_empty());
        assert!(!tight.is_linearizable());
        assert!(
            tight
                .render(&history)
                .contains("undecided: workspace w (14 operations)")
        );
        let full = check(&history, &CheckConfig::default());
        assert_eq!(full.violations.len(), 1, "{}", full.render(&history));
        assert_eq!(full.violations[0].blocked, OpId(13));
    }

    #[test]
    fn a_long_concurrent_history_is_decided() {
        // 12 clients, 600 operations on one name, overlapping heavily: memoisation keeps it
        // quick. Built as a real execution: each op takes effect at its midpoint.
        let mut ops = Vec::new();
        let mut state = ModelState::Absent;
        let mut rng = 0x1234_5678_u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for i in 0..600u64 {
            let client = (i % 12) as usize;
            let kind = next() % 5;
            let call: fn(WorkspaceName) -> Call = match kind {
                0 => Call::Create,
                1 => Call::Destroy,
                2 => Call::Stop,
                3 => Call::Start,
                _ => Call::Read,
            };
            let from = i * 10;
            let to = from + 120;
            let probe = Op {
                id: OpId(0),
                client,
                call: call(w()),
                invoked: Duration::from_millis(from),
                completed: Some(Duration::from_millis(to)),
                outcome: ok(),
            };
            // Where destroying, it is gone at once (the agent is quick).
            if state == ModelState::Destroying {
                state = ModelState::Absent;
            }
            let bit = ALL_STATES.iter().find(|(_, s)| *s == state).unwrap().0;
            let outcome = if probe.kind() == OpKind::Read {
                seen(match state {
                    ModelState::Absent => Observed::Absent,
                    ModelState::Present(run) => Observed::Present(run),
                    ModelState::Destroying => Observed::Destroying,
                })
            } else {
                match apply(probe.kind(), bit) {
                    Ok(after) => {
                        state = ALL_STATES.iter().find(|(b, _)| *b == after).unwrap().1;
                        ok()
                    }
                    Err(code) => failed(code),
                }
            };
            ops.push(Op { outcome, ..probe });
        }
        passes(ops);
    }
}
