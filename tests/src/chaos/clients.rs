//! The campaign's workload: concurrent clients that create, destroy, stop, start, read and list
//! workspaces of a small pool of names (so that they contend), through the client library the
//! `nexus` CLI uses (`nexus_cli::settings::Settings` and its `Client`: the same connection to the
//! first coordinator that answers, the same `NOT_LEADER` redirects and retries under one request
//! id). Every operation is recorded in a [`Recorder`] as invoked and completed.
//!
//! One user for all clients: each sees (and contends on) the others' workspaces. The choices are
//! drawn from a seeded [`SplitMix64`], one stream per client, so a seed replays the same schedule
//! of requests (not the same timing).
//!
//! Not here: faults (the nemeses), judging the history (`linear`, `invariants`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nexus_cli::settings::{Client, Settings};
use nexus_protocol::WorkspaceName;
use nexus_protocol::error::ErrorCode;
use nexus_protocol::identity::{Identity, Role};
use nexus_protocol::message::{DesiredRun, Request, Response, WorkspaceRequest};
use nexus_protocol::model::{PortSpec, ResourceClass, WorkspaceSpec, WorkspaceState};
use tokio::sync::watch;

use super::history::{Call, FinalState, Observed, Outcome, Recorder, Run};
use super::rng::SplitMix64;
use crate::pki::TestPki;

/// The user every client acts as.
pub const USER: &str = "chaos";

/// The workload's settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The coordinators, any IPs; the client tries them in order. Each coordinator's certificate
    /// must name the IP it is reached at (the client checks the server's name against the
    /// address it dialled).
    pub coordinators: Vec<SocketAddr>,
    /// The user's files: CA certificate, certificate, key.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// How many clients run at once (client numbers `0..clients`; the final reads use
    /// `clients`).
    pub clients: usize,
    pub seed: u64,
    /// The names the clients contend on.
    pub names: Vec<WorkspaceName>,
    /// What a create asks for, but its name.
    pub spec: SpecTemplate,
    /// The most one operation may take, retries included; then it is unknown.
    pub op_limit: Duration,
    /// The most a client waits between two operations (a random part of it).
    pub think: Duration,
}

/// The workspace every create asks for: one spec, its name aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecTemplate {
    pub image: String,
    pub class: ResourceClass,
    /// The command to run; empty for the image's.
    pub command: Vec<String>,
    /// Container ports to publish (each gets a host port: what the port invariant watches).
    pub ports: Vec<u16>,
}

impl Default for SpecTemplate {
    /// A small workspace publishing port 8080. Any image does on hollow hosts; a Docker agent
    /// needs one it has (the runner's choice).
    fn default() -> SpecTemplate {
        SpecTemplate {
            image: "dev:latest".into(),
            class: ResourceClass::Small,
            command: Vec::new(),
            ports: vec![8080],
        }
    }
}

impl SpecTemplate {
    /// The spec of a create of `name`.
    pub fn spec(&self, name: &WorkspaceName) -> WorkspaceSpec {
        WorkspaceSpec {
            name: name.clone(),
            image: self.image.clone(),
            class: self.class,
            ports: self
                .ports
                .iter()
                .map(|container| PortSpec {
                    container: *container,
                })
                .collect(),
            env: BTreeMap::new(),
            labels: BTreeMap::new(),
            command: self.command.clone(),
            host: None,
            repo: None,
        }
    }
}

/// `count` workspace names, `w-00` and on.
pub fn names(count: usize) -> Vec<WorkspaceName> {
    (0..count)
        .map(|i| WorkspaceName::new(format!("w-{i:02}")).expect("a valid workspace name"))
        .collect()
}

impl ClientConfig {
    /// A workload of 8 clients on 12 names as [`USER`], whose certificate is issued once here
    /// (from `pki`), against `coordinators`; a 10 s limit per operation.
    pub fn new(pki: &TestPki, coordinators: Vec<SocketAddr>, seed: u64) -> ClientConfig {
        let user = crate::pki::user(USER, Role::User);
        let (cert, key) = pki.paths(&user);
        if !cert.exists() {
            pki.issue(&user);
        }
        ClientConfig {
            coordinators,
            ca: pki.ca_cert_path(),
            cert,
            key,
            clients: 8,
            seed,
            names: names(12),
            spec: SpecTemplate::default(),
            op_limit: Duration::from_secs(10),
            think: Duration::from_millis(20),
        }
    }

    /// The user's identity.
    pub fn identity() -> Identity {
        crate::pki::user(USER, Role::User)
    }

    /// The CLI's connection settings for these files and coordinators.
    pub fn settings(&self) -> Settings {
        Settings {
            coordinators: self.coordinators.iter().map(ToString::to_string).collect(),
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            request_id: None,
        }
    }
}

/// Runs `config.clients` clients until `stop` turns true (or its sender is dropped); each
/// finishes the operation it is in (within `op_limit`) first. Every operation is recorded.
pub async fn run(config: ClientConfig, recorder: Recorder, stop: watch::Receiver<bool>) {
    let root = SplitMix64::new(config.seed);
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..config.clients {
        let rng = root.fork(client as u64);
        let (config, recorder, stop) = (config.clone(), recorder.clone(), stop.clone());
        tasks.spawn(one_client(client, config, recorder, rng, stop));
    }
    while tasks.join_next().await.is_some() {}
}

/// What one operation's choice was: the request, and how its answer reads.
fn choose(rng: &mut SplitMix64, config: &ClientConfig) -> Call {
    let index = rng.below(config.names.len() as u64) as usize;
    let name = config.names[index].clone();
    // 25% create, 24% destroy, 12% stop, 12% start, 24% read, 3% list.
    match rng.below(100) {
        0..25 => Call::Create(name),
        25..49 => Call::Destroy(name),
        49..61 => Call::Stop(name),
        61..73 => Call::Start(name),
        73..97 => Call::Read(name),
        _ => Call::List,
    }
}

async fn one_client(
    client: usize,
    config: ClientConfig,
    recorder: Recorder,
    mut rng: SplitMix64,
    stop: watch::Receiver<bool>,
) {
    let settings = config.settings();
    // As the CLI's workspace commands ask.
    let mut connection = settings
        .client()
        .map(|client| client.with_first_attempt(nexus_cli::settings::FIRST_ATTEMPT));
    loop {
        if *stop.borrow() || stop.has_changed().is_err() {
            return;
        }
        let call = choose(&mut rng, &config);
        let pending = recorder.invoke(client, call.clone());
        let outcome = match &mut connection {
            Ok(cli) => perform(cli, &config, &call).await,
            // The credentials did not load: every operation fails the same definite way.
            Err(error) => Outcome::of_error(error.error.code, error.error.message.clone()),
        };
        pending.complete(outcome);
        let think = config.think.as_millis() as u64;
        if think > 0 {
            tokio::time::sleep(Duration::from_millis(rng.below(think + 1))).await;
        }
    }
}

/// The request `call` makes.
fn request(config: &ClientConfig, call: &Call) -> Request {
    let workspace = match call {
        Call::Create(name) => WorkspaceRequest::Create(config.spec.spec(name)),
        Call::Destroy(name) => WorkspaceRequest::Destroy(name.clone()),
        Call::Stop(name) => WorkspaceRequest::Stop(name.clone()),
        Call::Start(name) => WorkspaceRequest::Start(name.clone()),
        Call::Read(name) => WorkspaceRequest::Describe(name.clone()),
        Call::List => WorkspaceRequest::List,
    };
    Request::Workspace(workspace)
}

/// Sends `call` (with the CLI client's own retries under one request id) and reads its answer.
async fn perform(client: &mut Client<'_>, config: &ClientConfig, call: &Call) -> Outcome {
    let answer = tokio::time::timeout(
        config.op_limit,
        client.request(request(config, call), config.op_limit),
    )
    .await;
    match answer {
        Err(_) => Outcome::Unknown(
            ErrorCode::Timeout,
            format!("no answer within {:?}", config.op_limit),
        ),
        Ok(Ok(response)) => outcome_of(call, response),
        Ok(Err(error)) => {
            if matches!(call, Call::Read(_)) && error.error.code == ErrorCode::WorkspaceNotFound {
                Outcome::Ok(Observed::Absent)
            } else {
                Outcome::of_error(error.error.code, error.error.message.clone())
            }
        }
    }
}

/// How a successful answer to `call` reads.
fn outcome_of(call: &Call, response: Response) -> Outcome {
    match (call, response) {
        (
            Call::Create(_) | Call::Destroy(_) | Call::Stop(_) | Call::Start(_),
            Response::Workspace(_),
        ) => Outcome::Ok(Observed::Done),
        (Call::Read(_), Response::WorkspaceDetail(detail)) => {
            Outcome::Ok(observed(detail.view.state, detail.desired))
        }
        (Call::List, Response::Workspaces(views)) => Outcome::Ok(Observed::Listed(views)),
        (_, other) => Outcome::Unknown(
            ErrorCode::ProtocolError,
            format!("unexpected answer {other:?}"),
        ),
    }
}

/// What a read of a workspace in `state`, wanted `desired`, observed.
pub fn observed(state: WorkspaceState, desired: DesiredRun) -> Observed {
    match (state, desired) {
        (WorkspaceState::Destroying | WorkspaceState::Gone, _) | (_, DesiredRun::Absent) => {
            Observed::Destroying
        }
        (_, DesiredRun::Running) => Observed::Present(Run::Running),
        (_, DesiredRun::Stopped) => Observed::Present(Run::Stopped),
    }
}

/// After healing: reads every name until the cluster answers it (a name read as being destroyed
/// is read again, until it is gone), then lists everything; all within `limit`, every attempt
/// recorded (as client `config.clients`), so the checkers see the final state as the last
/// operations of the history.
pub async fn final_reads(
    config: &ClientConfig,
    recorder: &Recorder,
    limit: Duration,
) -> FinalState {
    let deadline = Instant::now() + limit;
    let client_number = config.clients;
    let settings = config.settings();
    let mut state = FinalState::default();
    let mut client = match settings.client() {
        Ok(client) => client,
        Err(_) => return state,
    };
    let attempt = |call: Call, state: &mut FinalState| {
        let pending = recorder.invoke(client_number, call.clone());
        state.ops.push(pending.id());
        (pending, call)
    };
    for name in &config.names {
        state.reads.insert(name.clone(), None);
        while Instant::now() < deadline {
            let (pending, call) = attempt(Call::Read(name.clone()), &mut state);
            let outcome = perform(&mut client, config, &call).await;
            pending.complete(outcome.clone());
            match outcome {
                Outcome::Ok(Observed::Destroying) => {
                    state.reads.insert(name.clone(), Some(Observed::Destroying));
                }
                Outcome::Ok(observed) => {
                    state.reads.insert(name.clone(), Some(observed));
                    break;
                }
                Outcome::Failed(_) | Outcome::Unknown(..) => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    while Instant::now() < deadline {
        let (pending, call) = attempt(Call::List, &mut state);
        let outcome = perform(&mut client, config, &call).await;
        pending.complete(outcome.clone());
        if let Outcome::Ok(Observed::Listed(views)) = outcome {
            state.listed = Some(views);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::history::OpKind;

    #[test]
    fn the_mix_follows_the_brief_and_the_seed() {
        let config = ClientConfig {
            coordinators: vec![],
            ca: PathBuf::new(),
            cert: PathBuf::new(),
            key: PathBuf::new(),
            clients: 1,
            seed: 42,
            names: names(12),
            spec: SpecTemplate::default(),
            op_limit: Duration::from_secs(1),
            think: Duration::ZERO,
        };
        let mut counts: BTreeMap<OpKind, u32> = BTreeMap::new();
        let mut rng = SplitMix64::new(config.seed);
        let first: Vec<Call> = (0..10_000)
            .map(|_| choose(&mut rng, &config))
            .inspect(|call| *counts.entry(call.kind()).or_default() += 1)
            .collect();
        let share = |kind| f64::from(counts[&kind]) / 100.0;
        for (kind, percent) in [
            (OpKind::Create, 25.0),
            (OpKind::Destroy, 24.0),
            (OpKind::Stop, 12.0),
            (OpKind::Start, 12.0),
            (OpKind::Read, 24.0),
            (OpKind::List, 3.0),
        ] {
            assert!(
                (share(kind) - percent).abs() < 1.5,
                "{kind:?}: {}",
                share(kind)
            );
        }
        let mut again = SplitMix64::new(config.seed);
        let replay: Vec<Call> = (0..10_000).map(|_| choose(&mut again, &config)).collect();
        assert_eq!(first, replay);
    }

    #[test]
    fn reads_map_states_to_the_model() {
        use WorkspaceState as S;
        assert_eq!(
            observed(S::Running, DesiredRun::Running),
            Observed::Present(Run::Running)
        );
        assert_eq!(
            observed(S::Running, DesiredRun::Stopped),
            Observed::Present(Run::Stopped)
        );
        assert_eq!(
            observed(S::Destroying, DesiredRun::Stopped),
            Observed::Destroying
        );
        assert_eq!(
            observed(S::Failed, DesiredRun::Running),
            Observed::Present(Run::Running)
        );
    }
}
