//! The recorded history of a fault campaign: every client operation with its invocation and
//! completion times (since the campaign's start) and what its client was answered. The checkers
//! ([`super::linear`], [`super::invariants`]) judge a [`History`]; they take it as a value and do
//! no I/O. The [`Recorder`] is the one place that reads the clock.
//!
//! Not here: sending the requests ([`super::clients`]) or judging the answers.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nexus_protocol::WorkspaceName;
use nexus_protocol::error::ErrorCode;
use nexus_protocol::model::WorkspaceView;

/// An operation's number in its history: the order of invocation, from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub usize);

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What a client asked, of one workspace name, or of all the user's workspaces ([`Call::List`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Create(WorkspaceName),
    Destroy(WorkspaceName),
    Stop(WorkspaceName),
    Start(WorkspaceName),
    /// The workspace as the cluster answers it (`WorkspaceRequest::Describe`, a linearizable
    /// read).
    Read(WorkspaceName),
    /// All the user's workspaces (a linearizable read). Not checked for linearizability; a
    /// snapshot for the invariants.
    List,
}

/// A [`Call`]'s kind, without its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpKind {
    Create,
    Destroy,
    Stop,
    Start,
    Read,
    List,
}

impl OpKind {
    /// Every kind, in a fixed order (for counting).
    pub const ALL: [OpKind; 6] = [
        OpKind::Create,
        OpKind::Destroy,
        OpKind::Stop,
        OpKind::Start,
        OpKind::Read,
        OpKind::List,
    ];

    /// Its lowercase name, as histories print it.
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Create => "create",
            OpKind::Destroy => "destroy",
            OpKind::Stop => "stop",
            OpKind::Start => "start",
            OpKind::Read => "read",
            OpKind::List => "list",
        }
    }
}

impl Call {
    /// Its kind.
    pub fn kind(&self) -> OpKind {
        match self {
            Call::Create(_) => OpKind::Create,
            Call::Destroy(_) => OpKind::Destroy,
            Call::Stop(_) => OpKind::Stop,
            Call::Start(_) => OpKind::Start,
            Call::Read(_) => OpKind::Read,
            Call::List => OpKind::List,
        }
    }

    /// The workspace it is about; `None` for a [`Call::List`].
    pub fn name(&self) -> Option<&WorkspaceName> {
        match self {
            Call::Create(name)
            | Call::Destroy(name)
            | Call::Stop(name)
            | Call::Start(name)
            | Call::Read(name) => Some(name),
            Call::List => None,
        }
    }
}

/// Whether a workspace should run, as a read shows it (its `DesiredRun`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Run {
    Running,
    Stopped,
}

/// What a successful answer showed.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// A change was done (a create, destroy, stop or start answered with the workspace). Its
    /// view is not kept: it shows the observed state, which lags the desired one, so it says
    /// nothing the model checks.
    Done,
    /// A read found no such workspace (`WORKSPACE_NOT_FOUND`).
    Absent,
    /// A read found the workspace, wanted running or stopped.
    Present(Run),
    /// A read found the workspace being destroyed (its state `Destroying`).
    Destroying,
    /// A list's workspaces, as the cluster answered them.
    Listed(Vec<WorkspaceView>),
}

/// How an operation ended for its client.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It happened; what the answer showed.
    Ok(Observed),
    /// A definite refusal: the change did not happen (see [`is_definite`]).
    Failed(ErrorCode),
    /// It may or may not have happened (a timeout, a lost connection, a leader lost under the
    /// proposal), or it never completed: the code and message the client saw.
    Unknown(ErrorCode, String),
}

impl Outcome {
    /// The outcome of an answer with the error `code`: [`Outcome::Failed`] when the code is
    /// definite ([`is_definite`]), else [`Outcome::Unknown`].
    pub fn of_error(code: ErrorCode, message: impl Into<String>) -> Outcome {
        if is_definite(code) {
            Outcome::Failed(code)
        } else {
            Outcome::Unknown(code, message.into())
        }
    }

    /// Whether the client was told it happened.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }

    /// Whether it may or may not have happened.
    pub fn is_unknown(&self) -> bool {
        matches!(self, Outcome::Unknown(..))
    }
}

/// Whether an error answer with `code` means the change did not happen (a definite refusal);
/// every other code leaves the outcome unknown.
///
/// The contract this follows (`protocol::error`, `cli::settings::Client::request_under`, the
/// coordinator's `service::workspaces` and `cluster::propose`): a client sends one request id
/// for every attempt, and the coordinator's journal answers a retried id with its first
/// outcome. So the last answer speaks for the request as a whole when it comes from the state
/// machine or from a check made before proposing:
///
/// - `WORKSPACE_NOT_FOUND`, `WORKSPACE_ALREADY_EXISTS`: the leader's linearizable read before
///   proposing, or the state machine's rejection; nothing was applied.
/// - `RESOURCE_EXHAUSTED` (no host fits, or the placer's queue is full), `PORT_CONFLICT`,
///   `INVALID_ARGUMENT` (a malformed request, or a change of a workspace being destroyed),
///   `PERMISSION_DENIED`, `AUTHENTICATION_FAILED`, `VERSION_MISMATCH`, `UNSUPPORTED`: refused
///   before or at apply.
///
/// Unknown, because the request may have reached a leader that proposed it:
///
/// - `TIMEOUT`, `NETWORK_ERROR`: the answer was lost, or the proposal was not confirmed in time;
///   the entry may still commit.
/// - `NOT_LEADER`: a leader that proposed and then lost its lead answers it too (the pending
///   proposal is dropped, but the entry may commit under the next leader). Only a node that never
///   proposed makes it definite, and the client cannot tell which.
/// - `INTERNAL` (a stopping node, a journal miss), `BACKEND_UNAVAILABLE`, `PROTOCOL_ERROR` (a
///   garbled answer) and every other code: when unsure, unknown is the safe classification. It
///   never makes a correct history fail; it only weakens what the checker can prove.
pub fn is_definite(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::WorkspaceNotFound
            | ErrorCode::WorkspaceAlreadyExists
            | ErrorCode::ResourceExhausted
            | ErrorCode::PortConflict
            | ErrorCode::InvalidArgument
            | ErrorCode::PermissionDenied
            | ErrorCode::AuthenticationFailed
            | ErrorCode::VersionMismatch
            | ErrorCode::Unsupported
    )
}

/// One operation: who asked what, when, and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    pub id: OpId,
    /// The client's number (a client runs one operation at a time).
    pub client: usize,
    pub call: Call,
    /// When it was invoked, since the campaign's start.
    pub invoked: Duration,
    /// When its answer came; `None` if it never completed (then it is [`Outcome::Unknown`]).
    /// The checker treats an unknown operation's completion as infinity, whatever this says.
    pub completed: Option<Duration>,
    pub outcome: Outcome,
}

impl Op {
    /// Its kind.
    pub fn kind(&self) -> OpKind {
        self.call.kind()
    }

    /// The workspace it is about; `None` for a list.
    pub fn name(&self) -> Option<&WorkspaceName> {
        self.call.name()
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name().map_or("*", WorkspaceName::as_str);
        let end = match self.completed {
            Some(at) => format!("{:.3}s", at.as_secs_f64()),
            None => "never".to_string(),
        };
        write!(
            f,
            "{} c{} {} {name} [{:.3}s..{end}] ",
            self.id,
            self.client,
            self.kind().as_str(),
            self.invoked.as_secs_f64()
        )?;
        match &self.outcome {
            Outcome::Ok(Observed::Done) => write!(f, "ok"),
            Outcome::Ok(Observed::Absent) => write!(f, "ok: absent"),
            Outcome::Ok(Observed::Present(Run::Running)) => write!(f, "ok: present, running"),
            Outcome::Ok(Observed::Present(Run::Stopped)) => write!(f, "ok: present, stopped"),
            Outcome::Ok(Observed::Destroying) => write!(f, "ok: destroying"),
            Outcome::Ok(Observed::Listed(views)) => write!(f, "ok: {} listed", views.len()),
            Outcome::Failed(code) => write!(f, "failed {code}"),
            Outcome::Unknown(code, message) => write!(f, "unknown {code}: {message}"),
        }
    }
}

/// A whole history, in invocation order (`ops[i].id == OpId(i)`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    pub ops: Vec<Op>,
}

impl History {
    /// A history of `ops`, renumbered in the order given (tests build histories by hand).
    pub fn from_ops(ops: Vec<Op>) -> History {
        let ops = ops
            .into_iter()
            .enumerate()
            .map(|(index, op)| Op {
                id: OpId(index),
                ..op
            })
            .collect();
        History { ops }
    }

    /// The operation `id`.
    pub fn op(&self, id: OpId) -> Option<&Op> {
        self.ops.get(id.0).filter(|op| op.id == id)
    }

    /// How many operations of `kind` ended as `Ok`.
    pub fn acknowledged(&self, kind: OpKind) -> usize {
        self.ops
            .iter()
            .filter(|op| op.kind() == kind && op.outcome.is_ok())
            .count()
    }

    /// The operations on `name`, in invocation order.
    pub fn on(&self, name: &WorkspaceName) -> impl Iterator<Item = &Op> {
        self.ops.iter().filter(move |op| op.name() == Some(name))
    }

    /// The operations around `id` for a failure message: up to `radius` operations on the same
    /// workspace before it and after it (in invocation order), one a line, `id` marked `>`.
    /// A list (no name) is shown with its `radius` neighbours of any kind.
    pub fn around(&self, id: OpId, radius: usize) -> String {
        let Some(target) = self.op(id) else {
            return format!("no operation {id}\n");
        };
        let same: Vec<&Op> = match target.name() {
            Some(name) => self.on(name).collect(),
            None => self.ops.iter().collect(),
        };
        let at = same.iter().position(|op| op.id == id).unwrap_or(0);
        let first = at.saturating_sub(radius);
        let last = (at + radius + 1).min(same.len());
        let mut text = String::new();
        for op in &same[first..last] {
            let mark = if op.id == id { ">" } else { " " };
            text.push_str(&format!("{mark} {op}\n"));
        }
        text
    }

    /// Writes the history to `path`, one JSON object a line (times in milliseconds; `completed`
    /// null for an operation that never completed), for replay and reading.
    pub fn write_jsonl(&self, path: &Path) -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for op in &self.ops {
            serde_json::to_writer(&mut out, &op_json(op))?;
            out.write_all(b"\n")?;
        }
        out.flush()
    }
}

fn op_json(op: &Op) -> serde_json::Value {
    let millis = |at: Duration| at.as_secs_f64() * 1000.0;
    let (outcome, code, message, observed) = match &op.outcome {
        Outcome::Ok(observed) => ("ok", None, None, Some(observed_json(observed))),
        Outcome::Failed(code) => ("failed", Some(code.as_str()), None, None),
        Outcome::Unknown(code, message) => {
            ("unknown", Some(code.as_str()), Some(message.as_str()), None)
        }
    };
    serde_json::json!({
        "id": op.id.0,
        "client": op.client,
        "kind": op.kind().as_str(),
        "name": op.name().map(WorkspaceName::as_str),
        "invoked_ms": millis(op.invoked),
        "completed_ms": op.completed.map(millis),
        "outcome": outcome,
        "code": code,
        "message": message,
        "observed": observed,
    })
}

fn observed_json(observed: &Observed) -> serde_json::Value {
    match observed {
        Observed::Done => "done".into(),
        Observed::Absent => "absent".into(),
        Observed::Present(Run::Running) => "running".into(),
        Observed::Present(Run::Stopped) => "stopped".into(),
        Observed::Destroying => "destroying".into(),
        Observed::Listed(views) => serde_json::to_value(views).unwrap_or_default(),
    }
}

/// The cluster's state at the end, as read after healing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FinalState {
    /// Each name's last read that the cluster answered (`None`: none did within the limit).
    pub reads: BTreeMap<WorkspaceName, Option<Observed>>,
    /// The last list the cluster answered, if one did.
    pub listed: Option<Vec<WorkspaceView>>,
    /// Every operation the final reads made (all in the history too).
    pub ops: Vec<OpId>,
}

impl FinalState {
    /// Whether every name was read and the list answered.
    pub fn is_complete(&self) -> bool {
        self.listed.is_some() && self.reads.values().all(Option::is_some)
    }
}

/// Records operations as clients invoke and complete them. Cheap to clone; every clone records
/// into the same history.
#[derive(Debug, Clone)]
pub struct Recorder {
    inner: Arc<Mutex<Recording>>,
}

#[derive(Debug)]
struct Recording {
    start: Instant,
    /// Each operation, with its outcome once completed.
    ops: Vec<(Op, bool)>,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Recorder {
        Recorder::starting_at(Instant::now())
    }

    /// A recorder whose times count from `start` (the campaign's start, shared with the
    /// nemeses' log).
    pub fn starting_at(start: Instant) -> Recorder {
        Recorder {
            inner: Arc::new(Mutex::new(Recording {
                start,
                ops: Vec::new(),
            })),
        }
    }

    /// Records that `client` invokes `call` now; complete it through the returned handle.
    pub fn invoke(&self, client: usize, call: Call) -> Pending {
        let mut recording = self.lock();
        let id = OpId(recording.ops.len());
        let invoked = recording.start.elapsed();
        recording.ops.push((
            Op {
                id,
                client,
                call,
                invoked,
                completed: None,
                outcome: Outcome::Unknown(ErrorCode::Timeout, "never completed".into()),
            },
            false,
        ));
        Pending {
            recorder: self.clone(),
            id,
        }
    }

    /// The history so far. An operation not completed yet appears as
    /// [`Outcome::Unknown`] with no completion time.
    pub fn history(&self) -> History {
        History {
            ops: self.lock().ops.iter().map(|(op, _)| op.clone()).collect(),
        }
    }

    /// How many operations were invoked so far.
    pub fn len(&self) -> usize {
        self.lock().ops.len()
    }

    /// Whether no operation was invoked yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn complete(&self, id: OpId, outcome: Outcome) {
        let mut recording = self.lock();
        let at = recording.start.elapsed();
        if let Some((op, done)) = recording.ops.get_mut(id.0)
            && !*done
        {
            op.completed = Some(at);
            op.outcome = outcome;
            *done = true;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recording> {
        // A client that panicked mid-record leaves the history as it was: still worth checking.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder::new()
    }
}

/// An invoked operation awaiting its outcome. Dropped without [`Pending::complete`], the
/// operation stays unknown and never completed.
#[derive(Debug)]
#[must_use = "an operation never completed counts as unknown"]
pub struct Pending {
    recorder: Recorder,
    id: OpId,
}

impl Pending {
    /// The operation's id.
    pub fn id(&self) -> OpId {
        self.id
    }

    /// Records the outcome, at the time of this call.
    pub fn complete(self, outcome: Outcome) {
        self.recorder.complete(self.id, outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> WorkspaceName {
        text.parse().unwrap()
    }

    #[test]
    fn a_recorder_keeps_invocation_order_and_leaves_the_uncompleted_unknown() {
        let recorder = Recorder::new();
        let a = recorder.invoke(0, Call::Create(name("w")));
        let b = recorder.invoke(1, Call::Read(name("w")));
        let _never = recorder.invoke(2, Call::Destroy(name("w")));
        b.complete(Outcome::Ok(Observed::Absent));
        a.complete(Outcome::Ok(Observed::Done));
        let history = recorder.history();
        let kinds: Vec<_> = history.ops.iter().map(|op| (op.id.0, op.kind())).collect();
        assert_eq!(
            kinds,
            [(0, OpKind::Create), (1, OpKind::Read), (2, OpKind::Destroy)]
        );
        assert!(history.ops[0].completed.is_some());
        assert!(history.ops[2].completed.is_none());
        assert!(history.ops[2].outcome.is_unknown());
        assert_eq!(history.acknowledged(OpKind::Create), 1);
    }

    #[test]
    fn codes_split_into_definite_and_unknown() {
        let definite: Vec<_> = ErrorCode::ALL
            .into_iter()
            .filter(|code| is_definite(*code))
            .map(ErrorCode::as_str)
            .collect();
        assert_eq!(
            definite,
            [
                "WORKSPACE_NOT_FOUND",
                "WORKSPACE_ALREADY_EXISTS",
                "PORT_CONFLICT",
                "RESOURCE_EXHAUSTED",
                "PERMISSION_DENIED",
                "AUTHENTICATION_FAILED",
                "INVALID_ARGUMENT",
                "VERSION_MISMATCH",
                "UNSUPPORTED",
            ]
        );
        for code in [
            ErrorCode::Timeout,
            ErrorCode::NetworkError,
            ErrorCode::NotLeader,
        ] {
            assert!(Outcome::of_error(code, "x").is_unknown(), "{code}");
        }
    }

    #[test]
    fn around_shows_the_neighbours_on_the_same_name() {
        let recorder = Recorder::new();
        for i in 0..6 {
            let which = if i % 2 == 0 { "a" } else { "b" };
            recorder
                .invoke(i, Call::Read(name(which)))
                .complete(Outcome::Ok(Observed::Absent));
        }
        let history = recorder.history();
        let text = history.around(OpId(2), 1);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("  #0 c0 read a"), "{text}");
        assert!(lines[1].starts_with("> #2 c2 read a"), "{text}");
        assert!(lines[2].starts_with("  #4 c4 read a"), "{text}");
    }

    #[test]
    fn a_history_is_written_one_json_object_a_line() {
        let recorder = Recorder::new();
        recorder
            .invoke(0, Call::Create(name("w")))
            .complete(Outcome::of_error(ErrorCode::Timeout, "slow"));
        let _ = recorder.invoke(1, Call::List);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        recorder.history().write_jsonl(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["outcome"], "unknown");
        assert_eq!(lines[0]["code"], "TIMEOUT");
        assert_eq!(lines[1]["name"], serde_json::Value::Null);
        assert_eq!(lines[1]["completed_ms"], serde_json::Value::Null);
    }
}
