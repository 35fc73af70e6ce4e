//! Each workspace's recent events: what changed, who did it, under which request, and why; and
//! the workspace's *cause*, the request that last changed what its host should do with it (the
//! agent's work on it is traced under that request's id).
//!
//! The other rooms call the recorders here where `apply` changes a workspace: a change someone
//! asked for ([`State::record_asked`]: created, wanted, restart, repair, switch, which also
//! becomes the cause), what its agent reports ([`State::record_reported`], under the cause), and
//! what the failure detector decides ([`State::record_detected`]). A workspace keeps its newest
//! [`EVENTS_KEPT`] events, numbered from 1, and they go when it is forgotten. Deterministic like
//! every table: the time is the proposal's, and texts are cut to [`EVENT_TEXT_BYTES`] so that a
//! history's size is bounded.
//!
//! Not here: the changes themselves (`workspaces`, `reports`, `hosts`, `ports`), nor who may read
//! the events (the service).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use nexus_protocol::clock::Timestamp;
use nexus_protocol::debug::{Actor, EventKind, RequestRecord, WorkspaceEvent};
use nexus_protocol::error::{ErrorDetail, WireError};
use nexus_protocol::identity::Identity;
use nexus_protocol::message::DesiredRun;
use nexus_protocol::model::WorkspaceState;
use nexus_protocol::{HostId, RequestId, WorkspaceName};
use serde::{Deserialize, Serialize};

use super::{Origin, Outcome, State};

/// How many events a workspace keeps: the newest; older ones are dropped (their sequence
/// numbers leave a gap).
pub const EVENTS_KEPT: usize = 64;

/// The longest reason, or error message, an event keeps (a report's message may be 1 KiB, and
/// each workspace keeps [`EVENTS_KEPT`] events in every replica's memory and every snapshot).
pub const EVENT_TEXT_BYTES: usize = 512;

/// The most events a [`RequestRecord`] carries: the oldest, so that a trace keeps its start. A
/// request touches at most a host's or a cleanup's workspaces, so this is seldom reached; it
/// bounds the answer's frame.
pub const RECORD_EVENTS_MAX: usize = 4_096;

/// One workspace's recent events, oldest first, and its cause.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct History {
    /// The sequence number of the newest event recorded (kept or not).
    last_seq: u64,
    /// The request that last changed what the workspace's host should do with it.
    cause: Option<RequestId>,
    /// Shared between copies of the table (same bytes under serde): while a snapshot's or the
    /// policy loop's copy is held, a change to one workspace copies the table's node it lies in,
    /// and with it every neighbour's history; shared, those copies are counts, and only the
    /// changed workspace's events are copied.
    events: Arc<VecDeque<Kept>>,
}

impl History {
    pub fn cause(&self) -> Option<RequestId> {
        self.cause
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// How many events are kept.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The kept events' sequence numbers, oldest first.
    pub fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.events.iter().map(|e| e.seq)
    }

    /// The events, oldest first, as the protocol carries them: `host` is the workspace's (an
    /// event keeps no copy of it).
    pub fn events(&self, host: &HostId) -> Vec<WorkspaceEvent> {
        self.events.iter().map(|kept| kept.expand(host)).collect()
    }

    /// The request ids the kept events carry.
    fn requests(&self) -> impl Iterator<Item = RequestId> + '_ {
        self.events.iter().filter_map(|e| e.request_id())
    }
}

/// One event as the state keeps it, compact: every replica holds up to [`EVENTS_KEPT`] of these
/// per workspace, in memory and in each snapshot. What the workspace's record says already (its
/// host, so its agent) is not repeated; texts are boxed apart, as most events have none.
/// Expanded into a [`WorkspaceEvent`] when read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Kept {
    seq: u64,
    at: Timestamp,
    /// A [`RequestId`]'s bytes: 17 where an `Option<RequestId>` takes 32.
    request: Option<[u8; 16]>,
    actor: Who,
    kind: What,
    notes: Option<Box<Notes>>,
}

/// [`Actor`], with the workspace's own agent implied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Who {
    /// The agent of the workspace's host.
    HostAgent,
    Detector,
    Other(Box<Actor>),
}

/// [`EventKind`], with the workspace's own host implied.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
enum What {
    /// Placed on the workspace's host.
    Created,
    Wanted(DesiredRun),
    State {
        from: WorkspaceState,
        to: WorkspaceState,
    },
    Restart,
    Repair {
        generation: u64,
    },
    PortsReassigned,
    Held,
    Released,
    Extended {
        by_secs: u64,
    },
    Noticed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Notes {
    reason: Option<String>,
    error: Option<WireError>,
}

impl Kept {
    fn request_id(&self) -> Option<RequestId> {
        self.request
            .map(|bytes| RequestId::from_u128(u128::from_be_bytes(bytes)))
    }

    fn expand(&self, host: &HostId) -> WorkspaceEvent {
        let actor = match &self.actor {
            Who::HostAgent => Actor::Identity(Identity::Agent(host.clone())),
            Who::Detector => Actor::Detector,
            Who::Other(actor) => (**actor).clone(),
        };
        let kind = match self.kind {
            What::Created => EventKind::Created { host: host.clone() },
            What::Wanted(run) => EventKind::Wanted(run),
            What::State { from, to } => EventKind::State { from, to },
            What::Restart => EventKind::Restart,
            What::Repair { generation } => EventKind::Repair { generation },
            What::PortsReassigned => EventKind::PortsReassigned,
            What::Held => EventKind::Held,
            What::Released => EventKind::Released,
            What::Extended { by_secs } => EventKind::Extended { by_secs },
            What::Noticed => EventKind::Noticed,
        };
        let (reason, error) = match self.notes.as_deref() {
            Some(notes) => (notes.reason.clone(), notes.error.clone()),
            None => (None, None),
        };
        WorkspaceEvent {
            seq: self.seq,
            at: self.at,
            actor,
            request_id: self.request_id(),
            kind,
            reason,
            error,
        }
    }
}

/// An event before it is numbered and timed.
struct Change {
    actor: Who,
    request_id: Option<RequestId>,
    kind: What,
    reason: Option<String>,
    error: Option<WireError>,
}

impl State {
    /// The request that last changed what `name`'s host should do with it (create, start, stop,
    /// restart, repair, switch, destroy), for tracing the agent's work under that request's id.
    pub fn cause_of(&self, name: &WorkspaceName) -> Option<RequestId> {
        self.events.get(name)?.cause
    }

    /// `name`'s history, if it is a workspace.
    pub fn history_of(&self, name: &WorkspaceName) -> Option<&History> {
        self.events.get(name)
    }

    /// `name`'s events, oldest first, if it is a workspace.
    pub fn events_of(&self, name: &WorkspaceName) -> Option<Vec<WorkspaceEvent>> {
        let host = &self.workspaces.get(name)?.host;
        Some(self.events.get(name)?.events(host))
    }

    /// What the state remembers of request `id`: when it was proposed and its outcome (while the
    /// journal holds it), and the events that carry its id, in time order (the first
    /// [`RECORD_EVENTS_MAX`]). Costs that request's workspaces, through the index of events by
    /// request.
    pub fn request_record(&self, id: RequestId) -> Option<RequestRecord> {
        let (at, outcome) = self.journal.get(&id)?;
        let mut events: Vec<(WorkspaceName, WorkspaceEvent)> = Vec::new();
        for name in self.names_with_events_of(id) {
            let (Some(history), Some(workspace)) =
                (self.events.get(name), self.workspaces.get(name))
            else {
                continue;
            };
            let carrying = history.events.iter().filter(|e| e.request_id() == Some(id));
            events.extend(carrying.map(|e| (name.clone(), e.expand(&workspace.host))));
        }
        events.sort_by(|a, b| (a.1.at, &a.0, a.1.seq).cmp(&(b.1.at, &b.0, b.1.seq)));
        events.truncate(RECORD_EVENTS_MAX);
        Some(RequestRecord {
            at: *at,
            rejected: match outcome {
                Outcome::Applied => None,
                Outcome::Rejected(error) => Some(WireError::clone(error)),
            },
            events,
        })
    }

    /// A change someone asked for (created, wanted, restart, repair, switch): by the proposer,
    /// under its request, which becomes the workspace's cause.
    pub(super) fn record_asked(
        &mut self,
        name: &WorkspaceName,
        origin: Origin<'_>,
        kind: EventKind,
        reason: Option<String>,
    ) {
        let change = Change {
            actor: Who::Other(Box::new(Actor::Identity(origin.proposer.clone()))),
            request_id: Some(origin.request_id),
            kind: What::from(kind),
            reason,
            error: None,
        };
        self.push(name, origin.at, change);
        if let Some(history) = self.events.get_mut(name) {
            history.cause = Some(origin.request_id);
        }
    }

    /// What the agent of `name`'s host reported of it (a state change, or its ports moved after a
    /// conflict it reported), under the workspace's cause: the agent works on what that request
    /// asked. The reason is the error's message, unless one is given.
    pub(super) fn record_reported(
        &mut self,
        name: &WorkspaceName,
        at: Timestamp,
        kind: EventKind,
        reason: Option<String>,
        error: Option<&WireError>,
    ) {
        let change = Change {
            actor: Who::HostAgent,
            request_id: self.cause_of(name),
            kind: What::from(kind),
            reason: reason.or_else(|| error.map(|e| e.message.clone())),
            error: error.map(slim),
        };
        self.push(name, at, change);
    }

    /// What the failure detector's decision (a host down, or back) did to `name`, under the
    /// proposal that carried it; the cause stays.
    pub(super) fn record_detected(
        &mut self,
        name: &WorkspaceName,
        origin: Origin<'_>,
        kind: EventKind,
        reason: String,
    ) {
        let change = Change {
            actor: Who::Detector,
            request_id: Some(origin.request_id),
            kind: What::from(kind),
            reason: Some(reason),
            error: None,
        };
        self.push(name, origin.at, change);
    }

    /// What `actor` (a policy, or a person's hold or extension) did to `name` without changing
    /// what its host should do, under the proposal that carried it; the cause stays.
    pub(super) fn record_by(
        &mut self,
        name: &WorkspaceName,
        origin: Origin<'_>,
        actor: Actor,
        kind: EventKind,
        reason: Option<String>,
    ) {
        let change = Change {
            actor: Who::Other(Box::new(actor)),
            request_id: Some(origin.request_id),
            kind: What::from(kind),
            reason,
            error: None,
        };
        self.push(name, origin.at, change);
    }

    /// `name` is forgotten: so are its events.
    pub(super) fn forget_events(&mut self, name: &WorkspaceName) {
        if let Some(history) = self.events.remove(name) {
            for id in history.requests() {
                self.events_by_request.remove(&(id, name.clone()));
            }
        }
    }

    /// The index of events by request, from the histories.
    pub(super) fn requests_index(&self) -> BTreeSet<(RequestId, WorkspaceName)> {
        self.events
            .iter()
            .flat_map(|(name, history)| history.requests().map(move |id| (id, name.clone())))
            .collect()
    }

    /// The workspaces holding events of request `id`.
    fn names_with_events_of(&self, id: RequestId) -> impl Iterator<Item = &WorkspaceName> {
        // The least workspace name: names start with a lowercase letter or a digit, and "0" is
        // the least of those (and a prefix of every other name that starts with it).
        let least = WorkspaceName::new("0").ok();
        least
            .into_iter()
            .flat_map(move |least| {
                self.events_by_request
                    .range((id, least)..)
                    .take_while(move |(of, _)| *of == id)
            })
            .map(|(_, name)| name)
    }

    /// Numbers, times and keeps one event of `name`, dropping the oldest beyond
    /// [`EVENTS_KEPT`] (and their index entries, when no event kept carries their request).
    fn push(&mut self, name: &WorkspaceName, at: Timestamp, change: Change) {
        let history = self.events.entry(name.clone()).or_default();
        let events = Arc::make_mut(&mut history.events);
        // Dropped before the new one is kept, so the queue never outgrows its first allocation.
        while events.len() >= EVENTS_KEPT {
            let Some(dropped) = events.pop_front() else {
                break;
            };
            if let Some(id) = dropped.request_id()
                && !events.iter().any(|e| e.request_id() == Some(id))
            {
                self.events_by_request.remove(&(id, name.clone()));
            }
        }
        history.last_seq += 1;
        if let Some(id) = change.request_id {
            self.events_by_request.insert((id, name.clone()));
        }
        let notes = (change.reason.is_some() || change.error.is_some()).then(|| {
            Box::new(Notes {
                reason: change.reason.map(|reason| cut(&reason)),
                error: change.error,
            })
        });
        // Room for one more at a time: most workspaces keep a handful of events, and a queue's
        // first allocation alone held four (a fifth doubled it to eight).
        if events.len() == events.capacity() {
            events.reserve_exact(1);
        }
        events.push_back(Kept {
            seq: history.last_seq,
            at,
            request: change.request_id.map(|id| id.as_u128().to_be_bytes()),
            actor: change.actor,
            kind: change.kind,
            notes,
        });
    }
}

impl From<EventKind> for What {
    fn from(kind: EventKind) -> What {
        match kind {
            EventKind::Created { .. } => What::Created,
            EventKind::Wanted(run) => What::Wanted(run),
            EventKind::State { from, to } => What::State { from, to },
            EventKind::Restart => What::Restart,
            EventKind::Repair { generation } => What::Repair { generation },
            EventKind::PortsReassigned => What::PortsReassigned,
            EventKind::Held => What::Held,
            EventKind::Released => What::Released,
            EventKind::Extended { by_secs } => What::Extended { by_secs },
            EventKind::Noticed => What::Noticed,
        }
    }
}

/// An error as an event keeps it: its message cut, and a crash's output lines left to the
/// workspace's last error (an event keeps the exit code).
fn slim(error: &WireError) -> WireError {
    let detail = match &error.detail {
        Some(ErrorDetail::ContainerExited {
            exit_code,
            oom_killed,
            ..
        }) => Some(ErrorDetail::ContainerExited {
            exit_code: *exit_code,
            oom_killed: *oom_killed,
            last_lines: Vec::new(),
        }),
        other => other.clone(),
    };
    WireError {
        code: error.code,
        message: cut(&error.message),
        detail,
        request_id: error.request_id,
    }
}

/// `text` cut to at most [`EVENT_TEXT_BYTES`] bytes, on a character boundary, marked when cut.
fn cut(text: &str) -> String {
    if text.len() <= EVENT_TEXT_BYTES {
        return text.to_string();
    }
    let mut end = EVENT_TEXT_BYTES - 3;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests;
