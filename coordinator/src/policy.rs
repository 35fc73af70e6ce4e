//! The lifecycle policies' decision: given each workspace's facts, the policy in force on it and
//! the time, what to do now (stop an idle one, warn of a destroy, destroy, take back a warning),
//! and what comes next (`nexus workspace inspect`). Pure: no clock, no I/O; the leader's loop
//! (`service::policies`) proposes what it decides, and `apply` asks it again before a destroy.
//!
//! A destroy is announced twice to the owner, each notice its lead before the destroy (24 h and
//! 1 h by default), and happens only once both were posted and their leads passed: a lifetime
//! turned on late, or a loop that was down, postpones the destroy rather than strikes without
//! warning. A held workspace is never touched.
//!
//! Not here: where the facts and policies are kept (`state`), nor the loop.

use std::borrow::Borrow;

use nexus_protocol::clock::Timestamp;
use nexus_protocol::model::Activity;
use nexus_protocol::policy::{NextAction, Policy, PolicyAction, Secs};
use nexus_protocol::{UserName, WorkspaceName};

/// One workspace as its policies see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub name: WorkspaceName,
    pub owner: UserName,
    pub created_at: Timestamp,
    /// Wanted running (a stop has something to stop).
    pub running: bool,
    /// Being destroyed already: nothing more to do.
    pub destroying: bool,
    pub held: bool,
    pub last_activity: Activity,
    /// How long admins extended its lifetime by.
    pub extended_secs: u64,
    /// The destroy notices posted for it, by id, with when, oldest first.
    pub notices: Vec<(u64, Timestamp)>,
}

/// What the loop proposes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Stop it: unused for `idle_for_secs` (apply checks that again).
    Stop {
        name: WorkspaceName,
        idle_for_secs: u64,
        reason: String,
    },
    /// Post this notice to its owner, shown until the destroy.
    Notice {
        name: WorkspaceName,
        owner: UserName,
        text: String,
        until: Timestamp,
    },
    Destroy {
        name: WorkspaceName,
        reason: String,
    },
    /// Clear these notices: the destroy they announced is no longer due then.
    Withdraw {
        name: WorkspaceName,
        ids: Vec<u64>,
    },
}

impl Action {
    pub fn kind(&self) -> PolicyAction {
        match self {
            Action::Stop { .. } => PolicyAction::Stop,
            Action::Notice { .. } => PolicyAction::Notice,
            Action::Destroy { .. } => PolicyAction::Destroy,
            Action::Withdraw { .. } => PolicyAction::Withdraw,
        }
    }

    pub fn workspace(&self) -> &WorkspaceName {
        match self {
            Action::Stop { name, .. }
            | Action::Notice { name, .. }
            | Action::Destroy { name, .. }
            | Action::Withdraw { name, .. } => name,
        }
    }
}

/// An action to come and when it is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Due {
    action: PolicyAction,
    at: Timestamp,
}

/// What to do now to each subject, under the policy in force on it. An action is due at its
/// time exactly.
pub fn decide<S: Borrow<Subject>>(
    subjects: impl IntoIterator<Item = (S, Policy)>,
    now: Timestamp,
) -> Vec<Action> {
    let mut actions = Vec::new();
    for (subject, policy) in subjects {
        let subject = subject.borrow();
        for due in plan(subject, &policy) {
            if due.at <= now {
                actions.push(materialize(subject, &policy, due.action, now));
            }
        }
    }
    actions
}

/// The next automatic action on `subject` and when, if any.
pub fn next(subject: &Subject, policy: &Policy) -> Option<NextAction> {
    let due = plan(subject, policy).into_iter().min_by_key(|due| due.at)?;
    let reason = match due.action {
        PolicyAction::Stop => inactive_reason(policy),
        PolicyAction::Notice | PolicyAction::Destroy => lifetime_reason(subject, policy),
        PolicyAction::Withdraw => "the destroy announced is no longer due".to_string(),
    };
    Some(NextAction {
        action: due.action,
        at: due.at,
        reason,
    })
}

/// Whether a destroy of `subject` is due at `now` (apply asks, so that a destroy decided before a
/// hold, an extension or a policy change is not carried out after it).
pub fn destroy_due(subject: &Subject, policy: &Policy, now: Timestamp) -> bool {
    plan(subject, policy)
        .iter()
        .any(|due| due.action == PolicyAction::Destroy && due.at <= now)
}

/// Whether a destroy notice about `subject` is due at `now` (apply asks, so that a notice
/// proposed twice, or after a hold or the workspace's destroy, is not kept as a second one).
pub fn notice_due(subject: &Subject, policy: &Policy, now: Timestamp) -> bool {
    plan(subject, policy)
        .iter()
        .any(|due| due.action == PolicyAction::Notice && due.at <= now)
}

/// Every action to come on `subject`, with its time: at most one stop and one lifetime step.
fn plan(subject: &Subject, policy: &Policy) -> Vec<Due> {
    if subject.destroying {
        return Vec::new();
    }
    if subject.held {
        return withdraw_all(subject).into_iter().collect();
    }
    let mut plan = Vec::new();
    if subject.running && policy.inactive_stop_after_secs > 0 {
        plan.push(Due {
            action: PolicyAction::Stop,
            at: after(subject.last_activity.at, policy.inactive_stop_after_secs),
        });
    }
    plan.extend(lifetime_step(subject, policy));
    plan
}

/// The next step of the lifetime policy: the first notice, the last, then the destroy; or
/// taking notices back when their destroy moved later or went off.
fn lifetime_step(subject: &Subject, policy: &Policy) -> Option<Due> {
    if policy.max_lifetime_secs == 0 {
        return withdraw_all(subject);
    }
    let deadline = after(
        subject.created_at,
        policy
            .max_lifetime_secs
            .saturating_add(subject.extended_secs),
    );
    let (first, last) = policy.leads_secs();
    let first_due = before(deadline, first);
    let due = |action, at| Some(Due { action, at });
    match subject.notices.as_slice() {
        [] => due(PolicyAction::Notice, first_due),
        [(_, posted), ..] if *posted < first_due => withdraw_all(subject),
        [(_, first_at)] => {
            let announced = deadline.max(after(*first_at, first));
            due(PolicyAction::Notice, before(announced, last))
        }
        [(_, first_at), (_, last_at), ..] => {
            let at = deadline
                .max(after(*first_at, first))
                .max(after(*last_at, last));
            due(PolicyAction::Destroy, at)
        }
    }
}

fn withdraw_all(subject: &Subject) -> Option<Due> {
    let (_, at) = subject.notices.first()?;
    Some(Due {
        action: PolicyAction::Withdraw,
        at: *at,
    })
}

fn materialize(subject: &Subject, policy: &Policy, action: PolicyAction, now: Timestamp) -> Action {
    let name = subject.name.clone();
    match action {
        PolicyAction::Stop => Action::Stop {
            name,
            idle_for_secs: policy.inactive_stop_after_secs,
            reason: format!("stopped by policy: {}", inactive_reason(policy)),
        },
        PolicyAction::Notice => {
            let (first, last) = policy.leads_secs();
            let lead = if subject.notices.is_empty() {
                first
            } else {
                last
            };
            let text = format!(
                "{name} will be destroyed in {}: {}; `nexus workspace hold {name}` to keep it",
                Secs(lead),
                lifetime_reason(subject, policy),
            );
            Action::Notice {
                owner: subject.owner.clone(),
                name,
                text,
                until: after(now, lead),
            }
        }
        PolicyAction::Destroy => Action::Destroy {
            name,
            reason: format!("destroyed by policy: {}", lifetime_reason(subject, policy)),
        },
        PolicyAction::Withdraw => Action::Withdraw {
            name,
            ids: subject.notices.iter().map(|(id, _)| *id).collect(),
        },
    }
}

fn inactive_reason(policy: &Policy) -> String {
    format!("inactive for {}", Secs(policy.inactive_stop_after_secs))
}

fn lifetime_reason(subject: &Subject, policy: &Policy) -> String {
    if subject.extended_secs > 0 {
        format!(
            "lifetime {} (extended by {})",
            Secs(policy.max_lifetime_secs),
            Secs(subject.extended_secs)
        )
    } else {
        format!("lifetime {}", Secs(policy.max_lifetime_secs))
    }
}

fn after(at: Timestamp, secs: u64) -> Timestamp {
    Timestamp::from_millis(at.as_millis().saturating_add(secs.saturating_mul(1000)))
}

fn before(at: Timestamp, secs: u64) -> Timestamp {
    Timestamp::from_millis(at.as_millis().saturating_sub(secs.saturating_mul(1000)))
}

#[cfg(test)]
mod tests;
