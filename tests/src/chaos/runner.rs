//! A campaign: coordinators in network namespaces of their own, hollow hosts and a Docker agent,
//! clients through the CLI's library, and the nemesis's plan carried out against them; then
//! everything healed, the final state read, and the history judged.
//!
//! This module does the I/O; the plan ([`super::nemesis`]), the judgement ([`super::linear`],
//! [`super::invariants`]) and the summary ([`super::measure`]) are pure.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use nexus_protocol::message::{AdminRequest, Request, Response};
use nexus_protocol::model::HostStatus;
use nexus_protocol::{HostId, WorkspaceName};

use super::clients::{self, ClientConfig};
use super::engine::{Engine, EngineConfig};
use super::history::{FinalState, History, Op, OpKind, Outcome, Recorder};
use super::invariants::{self, HostCapacity, InvariantViolation};
use super::linear::{self, CheckConfig};
use super::measure::{Class, Injected, Summary, Timed};
use super::members::{self, Members, Wait};
use super::nemesis::{self, Fault, Kind, PlanOptions, Target};
use super::net::{self, Host, Net, Slow};
use crate::cluster::admin_to_leader;
use crate::fleet::{FleetOptions, HollowFleet};
use crate::pki::TestPki;
use crate::process::AgentProcess;

/// What a campaign runs.
#[derive(Debug, Clone)]
pub struct CampaignOptions {
    pub seed: u64,
    /// How long faults are injected; healing and checking come after.
    pub length: Duration,
    /// Coordinators: 3 to 7.
    pub coordinators: usize,
    pub kinds: Vec<Kind>,
    pub hollow_hosts: usize,
    /// Whether a Docker agent on a private engine joins the fleet (needs `dockerd`).
    pub docker: bool,
    pub clients: usize,
    /// Keep the campaign's directory (logs, history) here, whatever the outcome.
    pub keep: Option<PathBuf>,
}

impl CampaignOptions {
    pub fn new(seed: u64, length: Duration) -> CampaignOptions {
        CampaignOptions {
            seed,
            length,
            coordinators: 3,
            kinds: Kind::ALL.to_vec(),
            hollow_hosts: 6,
            docker: true,
            clients: 6,
            keep: None,
        }
    }
}

/// What a campaign saw.
#[derive(Debug)]
pub struct Campaign {
    pub options: CampaignOptions,
    pub summary: Summary,
    /// Every violation found, printable with the history around it; empty when clean.
    pub violations: Vec<String>,
    /// Where its logs and history are, when kept.
    pub kept: Option<PathBuf>,
}

impl Campaign {
    pub fn clean(&self) -> bool {
        self.violations.is_empty()
    }
}

/// The coordinators' flags: a host is down after 2 s of silence, as in the Docker suites. They
/// log at `info` (debug logs of a 30-minute campaign fill the disk) unless `NEXUS_CHAOS_LOG`
/// says otherwise.
const COORDINATOR_FLAGS: &[&str] = &["--host-ttl", "2"];

/// How long the fleet has, after every fault is healed and the final state read, to have every
/// workspace running on exactly one host.
const SETTLE: Duration = Duration::from_secs(60);

/// How long the final reads may take, every name read and the whole list.
const FINAL_READS: Duration = Duration::from_secs(60);

/// How long the nemesis looks for the leader before it picks a member anyway.
const LOOK_FOR_LEADER: Duration = Duration::from_secs(2);

/// A slowed link: 200 kbit/s, a packet dropped rather than queued for more than 200 ms.
const SLOW: Slow = Slow {
    rate_kbit: 200,
    max_queue: Duration::from_millis(200),
};

/// Runs one campaign to its end. Errors are the harness's (a namespace it could not make);
/// what Nexus did wrong is in [`Campaign::violations`].
pub async fn run(options: CampaignOptions) -> anyhow::Result<Campaign> {
    anyhow::ensure!(
        (3..=7).contains(&options.coordinators),
        "--coordinators must be between 3 and 7, not {}",
        options.coordinators
    );
    // What campaigns killed before they could clean up (a SIGKILLed test) goes first.
    let _ = net::sweep(net::PREFIX);
    let _ = members::sweep_mounts();
    let pki = Arc::new(TestPki::new());
    let tag = format!("c{}", options.seed % 1000);
    let mut net = Net::create(&tag).context("making the campaign's network")?;
    // `NEXUS_CHAOS_LOG=debug` to replay a seed with the coordinators' debug logs.
    let filter = std::env::var("NEXUS_CHAOS_LOG").unwrap_or_else(|_| "info".into());
    let flags: Vec<&str> = COORDINATOR_FLAGS
        .iter()
        .copied()
        .chain(["--log-filter", filter.as_str()])
        .collect();
    let mut members = Members::start(&pki, &mut net, options.coordinators, &flags)
        .await
        .context("starting the coordinators")?;
    let addresses = members.addresses();
    let fleet = HollowFleet::start(
        &pki,
        &addresses,
        &FleetOptions {
            prefix: format!("chaos{}", std::process::id()),
            hosts: options.hollow_hosts,
            heartbeat_interval: Duration::from_millis(500),
            start_latency: Duration::from_millis(20),
            ..FleetOptions::default()
        },
    )
    .await;
    let mut docker = if options.docker {
        Some(DockerHost::start(&pki, &addresses).await?)
    } else {
        None
    };
    let capacities = capacities(
        &pki,
        &members,
        fleet.hosts.len() + usize::from(docker.is_some()),
    )
    .await
    .context("reading the hosts' capacities")?;

    let mut config = ClientConfig::new(&pki, addresses.clone(), options.seed);
    config.clients = options.clients;
    config.spec.image = crate::docker::TEST_IMAGE.into();
    config.spec.command = vec!["sleep".into(), "1000000".into()];
    let started = Instant::now();
    let recorder = Recorder::starting_at(started);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let clients = tokio::spawn(clients::run(config.clone(), recorder.clone(), stopped));

    let plan = nemesis::plan(&PlanOptions::new(
        options.seed,
        options.length,
        options.kinds.clone(),
    ));
    let mut injected = Vec::new();
    let mut active: Vec<Active> = Vec::new();
    let mut nemesis = Nemesis {
        pki: &pki,
        members: &mut members,
        net: &mut net,
        docker: docker.as_mut(),
    };
    for event in timeline(&plan) {
        tokio::time::sleep_until((started + event.at).into()).await;
        match event.action {
            Action::Inject(index) => {
                let fault = &plan[index];
                let on = nemesis
                    .inject(fault)
                    .await
                    .with_context(|| format!("injecting {}", fault.kind))?;
                let at = started.elapsed();
                match on {
                    Some(on) => {
                        tracing::info!(kind = %fault.kind, ?on, ?at, "injected");
                        active.push(Active { index, on, at });
                    }
                    None => tracing::info!(kind = %fault.kind, "nothing to inject it on"),
                }
            }
            Action::Heal(index) => {
                let Some(position) = active.iter().position(|a| a.index == index) else {
                    continue;
                };
                let fault = active.remove(position);
                let kind = plan[index].kind;
                nemesis
                    .heal(kind, fault.on)
                    .await
                    .with_context(|| format!("healing {kind}"))?;
                // Healing the network clears every rule; the faults still held are made again.
                if Kind::NETWORK.contains(&kind) {
                    for other in &active {
                        if Kind::NETWORK.contains(&plan[other.index].kind) {
                            nemesis.network(&plan[other.index], other.on)?;
                        }
                    }
                }
                let healed = started.elapsed();
                tracing::info!(%kind, ?healed, "healed");
                injected.push(Injected {
                    kind,
                    on: fault.on,
                    at: fault.at,
                    healed,
                });
            }
        }
    }
    // Everything healed, whatever the plan left (nothing, by its contract). A cluster that
    // cannot be made whole again (a member that no longer starts) is a finding, not the
    // harness's failure: it is reported with the rest, and the history is still judged.
    let mut violations = Vec::new();
    if let Err(error) = nemesis.heal_everything().await {
        violations.push(format!("the cluster could not be healed: {error:#}"));
    }
    let faults_over = started.elapsed();
    let _ = stop.send(true);
    clients.await.context("the clients' task")?;

    // The final state, as the healed cluster answers it, and the hosts' own view of it.
    let end = clients::final_reads(&config, &recorder, FINAL_READS).await;
    let history = recorder.history();
    let report = linear::check(&history, &CheckConfig::default());
    if !report.is_linearizable() {
        violations.push(report.render(&history));
    }
    for broken in invariants::check_snapshots(&history, &capacities) {
        violations.push(explain(&broken, &history));
    }
    for broken in settle(&history, &end, &fleet, docker.as_ref()).await {
        violations.push(explain(&broken, &history));
    }
    let timed: Vec<Timed> = history.ops.iter().map(timed).collect();
    let summary = Summary::of(&timed, &injected, faults_over);

    let kept = match &options.keep {
        Some(dir) => Some(keep(
            dir,
            &history,
            &members,
            docker.as_ref(),
            &summary,
            &injected,
        )?),
        None if !violations.is_empty() => {
            let dir = std::env::temp_dir().join(format!(
                "nexus-chaos-seed{}-{}",
                options.seed,
                std::process::id()
            ));
            Some(keep(
                &dir,
                &history,
                &members,
                docker.as_ref(),
                &summary,
                &injected,
            )?)
        }
        None => None,
    };
    drop(fleet);
    drop(docker);
    drop(members);
    drop(net);
    Ok(Campaign {
        options,
        summary,
        violations,
        kept,
    })
}

/// A fault the runner holds, and on which member (its index) it acts.
#[derive(Debug)]
struct Active {
    index: usize,
    on: Option<usize>,
    at: Duration,
}

enum Action {
    Inject(usize),
    Heal(usize),
}

struct Event {
    at: Duration,
    action: Action,
}

/// The plan as injections and heals in time order (a heal before an injection at the same
/// moment).
fn timeline(plan: &[Fault]) -> Vec<Event> {
    let mut events: Vec<Event> = plan
        .iter()
        .enumerate()
        .flat_map(|(index, fault)| {
            [
                Event {
                    at: fault.at,
                    action: Action::Inject(index),
                },
                Event {
                    at: fault.healed_at(),
                    action: Action::Heal(index),
                },
            ]
        })
        .collect();
    events.sort_by_key(|event| (event.at, matches!(event.action, Action::Inject(_))));
    events
}

/// The nemesis at work: what it acts on.
struct Nemesis<'a> {
    pki: &'a TestPki,
    members: &'a mut Members,
    net: &'a mut Net,
    docker: Option<&'a mut DockerHost>,
}

impl Nemesis<'_> {
    /// Where a fault's target is at this moment: a member's index (`None` for the fleet).
    async fn resolve(&self, target: Target) -> Option<usize> {
        let count = self.members.len();
        let leader = match target {
            Target::Fleet => return None,
            // A quick look: a leader that takes long to show is as good as none.
            _ => self
                .members
                .leader(self.pki, LOOK_FOR_LEADER)
                .await
                .ok()
                .map(|(index, _)| index),
        };
        match target {
            Target::Fleet => None,
            Target::Leader => Some(leader.unwrap_or(0)),
            Target::Follower(n) => {
                let followers: Vec<usize> = (0..count).filter(|i| Some(*i) != leader).collect();
                Some(followers[n % followers.len()])
            }
        }
    }

    /// Injects `fault`: `Some(member)` it acted on (`Some(None)`: the fleet), or `None` when
    /// there was nothing to act on (no Docker agent).
    async fn inject(&mut self, fault: &Fault) -> anyhow::Result<Option<Option<usize>>> {
        let on = self.resolve(fault.target).await;
        match (fault.kind, on) {
            (Kind::Kill, Some(member)) => self.members.kill(member),
            (Kind::Pause, Some(member)) => self.members.pause(member)?,
            (Kind::Skew, Some(member)) => {
                self.members
                    .restart_with(self.pki, member, fault.amount, Wait::No)
                    .await?;
            }
            (Kind::DiskFull, Some(member)) => {
                self.members.fill_disk(member)?;
            }
            (kind, _) if Kind::NETWORK.contains(&kind) => self.network(fault, on)?,
            (Kind::AgentKill, _) => match self.docker.as_deref_mut() {
                Some(docker) => docker.kill_agent(),
                None => return Ok(None),
            },
            (Kind::EngineKill, _) => match self.docker.as_deref_mut() {
                Some(docker) => docker.engine.kill(),
                None => return Ok(None),
            },
            (kind, _) => anyhow::bail!("{kind} needs a coordinator to act on"),
        }
        Ok(Some(on))
    }

    /// Makes a network fault's rules (again, after another's heal cleared them).
    fn network(&mut self, fault: &Fault, on: Option<usize>) -> anyhow::Result<()> {
        let count = self.members.len();
        let member = on.unwrap_or(0);
        // The others, counted round from the member after it.
        let others: Vec<usize> = (1..count).map(|step| (member + step) % count).collect();
        let amount = usize::try_from(fault.amount.unsigned_abs()).unwrap_or(0);
        match fault.kind {
            Kind::IsolateLeader => self.net.isolate(member),
            // The largest minority, the member first, cut from the rest; the clients see both.
            Kind::Partition => {
                let minority: Vec<usize> = std::iter::once(member)
                    .chain(others.iter().copied())
                    .take((count - 1) / 2)
                    .collect();
                let majority: Vec<usize> = (0..count).filter(|i| !minority.contains(i)).collect();
                let hosts = |group: Vec<usize>| group.into_iter().map(Host::Node).collect();
                self.net.partition(&[hosts(minority), hosts(majority)])
            }
            // The member in the middle; the others split into two sides that see only it.
            Kind::Bridge => {
                let (left, right) = others.split_at(others.len() / 2);
                let hosts =
                    |side: &[usize]| side.iter().copied().map(Host::Node).collect::<Vec<_>>();
                self.net
                    .bridge_partition(&hosts(left), member, &hosts(right))
            }
            Kind::OneWay => self.net.drop_one_way(
                Host::Node(member),
                Host::Node(others[amount % others.len()]),
            ),
            Kind::Loss => self.net.loss(member, u8::try_from(amount).unwrap_or(30)),
            Kind::Slow => self.net.slow(member, SLOW),
            kind => anyhow::bail!("{kind} is not a network fault"),
        }
    }

    /// Undoes a fault on what it acted on.
    async fn heal(&mut self, kind: Kind, on: Option<usize>) -> anyhow::Result<()> {
        match (kind, on) {
            (Kind::Kill | Kind::Skew, Some(member)) => {
                self.members
                    .restart_with(self.pki, member, 0, Wait::No)
                    .await
            }
            (Kind::Pause, Some(member)) => self.members.resume(member),
            (Kind::DiskFull, Some(member)) => self.members.free_disk(member),
            (kind, _) if Kind::NETWORK.contains(&kind) => self.net.heal(),
            (Kind::AgentKill | Kind::EngineKill, _) => {
                if let Some(docker) = self.docker.as_deref_mut() {
                    docker.heal()?;
                }
                Ok(())
            }
            (kind, on) => anyhow::bail!("cannot heal {kind} on {on:?}"),
        }
    }

    /// Everything as it was: the network whole, every member running unpaused on its true clock
    /// with room on its disk and answering, the engine and the agent up.
    async fn heal_everything(&mut self) -> anyhow::Result<()> {
        self.net.heal()?;
        for member in 0..self.members.len() {
            self.members.free_disk(member)?;
            if self.members.paused(member) {
                self.members.resume(member)?;
            }
            if !self.members.running(member) || self.members.skew_of(member) != 0 {
                self.members
                    .restart_with(self.pki, member, 0, Wait::UntilAnswering)
                    .await?;
            }
        }
        if let Some(docker) = self.docker.as_deref_mut() {
            docker.heal()?;
        }
        self.members
            .leader(self.pki, Duration::from_secs(30))
            .await?;
        Ok(())
    }
}

/// A Docker agent on a private engine, in the root namespace.
#[derive(Debug)]
struct DockerHost {
    engine: Engine,
    /// The agent's host id.
    host: String,
    pki: Arc<TestPki>,
    addresses: Vec<SocketAddr>,
    flags: Vec<String>,
    agent: Option<AgentProcess>,
}

/// The agent goes first: alive, it would make ready networks on the engine while the engine
/// removes its networks on the way out, and their bridges would outlive it.
impl Drop for DockerHost {
    fn drop(&mut self) {
        self.kill_agent();
    }
}

impl DockerHost {
    async fn start(pki: &Arc<TestPki>, addresses: &[SocketAddr]) -> anyhow::Result<DockerHost> {
        let engine = tokio::task::spawn_blocking(|| {
            Engine::start(
                EngineConfig {
                    live_restore: false,
                },
                &[crate::docker::TEST_IMAGE],
            )
        })
        .await
        .context("starting the private engine")??;
        let pid = std::process::id();
        let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
        // Host ports above the Docker suites' (22000-29999), spread by process id.
        let low = 30_000 + (pid % 100) * 20;
        let flags = vec![
            "--runtime".to_string(),
            "docker".into(),
            "--docker-socket".into(),
            engine.socket().display().to_string(),
            "--port-range".into(),
            format!("{low}-{}", low + 19),
            // Workspaces' networks apart from the machine's engine and the Docker suites': a
            // /20 of 10.195.0.0/16 (sixteen /24s, one a workspace).
            "--network-pool".into(),
            network_pool(pid, &routes),
        ];
        let mut host = DockerHost {
            engine,
            host: format!("chaosd-{pid}"),
            pki: pki.clone(),
            addresses: addresses.to_vec(),
            flags,
            agent: None,
        };
        host.start_agent();
        Ok(host)
    }

    fn host(&self) -> String {
        self.host.clone()
    }

    fn start_agent(&mut self) {
        let flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        self.agent = Some(AgentProcess::start(
            &self.pki,
            &self.host(),
            &self.addresses,
            &flags,
        ));
    }

    fn kill_agent(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            agent.process.kill();
        }
    }

    /// The engine and the agent running again, whatever was killed.
    fn heal(&mut self) -> anyhow::Result<()> {
        if !self.engine.answers() {
            self.engine.restart()?;
        }
        if self
            .agent
            .as_mut()
            .is_none_or(|agent| agent.process.exited().is_some())
        {
            self.start_agent();
        }
        Ok(())
    }

    /// The workspaces whose containers run on the engine.
    fn running(&self) -> Vec<WorkspaceName> {
        let out = self
            .engine
            .cli()
            .args(["ps", "--format", "{{.Label \"nexus.workspace\"}}"])
            .output();
        let Ok(out) = out else { return Vec::new() };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|name| WorkspaceName::new(name.trim()).ok())
            .collect()
    }
}

/// Every host's capacity, once `hosts` hosts are ready, as the leader answers.
async fn capacities(
    pki: &TestPki,
    members: &Members,
    hosts: usize,
) -> anyhow::Result<Vec<HostCapacity>> {
    let (leader, _) = members.leader(pki, Duration::from_secs(20)).await?;
    let address = members.address(leader);
    let started = Instant::now();
    let views = loop {
        let answer = admin_to_leader(pki, address, Request::Admin(AdminRequest::Hosts)).await;
        if let Ok(Response::Hosts(views)) = &answer
            && views.len() == hosts
            && views.iter().all(|h| h.status == HostStatus::Ready)
        {
            break views.clone();
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "{hosts} hosts were not ready within 60 s: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    match admin_to_leader(pki, address, Request::Admin(AdminRequest::Limits)).await {
        Ok(Response::Limits(limits)) => Ok(invariants::capacities(&views, &limits)),
        other => anyhow::bail!("the limits: {other:?}"),
    }
}

/// The Docker host's pool of workspace networks, a /20 of 10.195.0.0/16: from the one the
/// process id picks, the first with the fewest kernel routes (`/proc/net/route`'s text) in it.
/// An engine that could not be cleaned up leaves its networks' bridges, each with the route to
/// its /24, and an agent never makes a network on a routed subnet.
fn network_pool(pid: u32, routes: &str) -> String {
    let mut taken = [0_usize; 16];
    for line in routes.lines().skip(1) {
        let Some(hex) = line.split_whitespace().nth(1) else {
            continue;
        };
        // The kernel prints the address as the integer its bytes in network order make here.
        let Ok(raw) = u32::from_str_radix(hex, 16) else {
            continue;
        };
        if let [10, 195, third, _] = raw.to_ne_bytes() {
            taken[usize::from(third / 16)] += 1;
        }
    }
    let first = (pid % 16) as usize;
    let block = (0..16)
        .map(|step| (first + step) % 16)
        .min_by_key(|&block| taken[block])
        .unwrap_or(first);
    format!("10.195.{}.0/20", block * 16)
}

/// Waits (up to [`SETTLE`]) until the end state holds as the hosts themselves report their
/// containers; what still fails then is a violation.
async fn settle(
    history: &History,
    end: &FinalState,
    fleet: &HollowFleet,
    docker: Option<&DockerHost>,
) -> Vec<InvariantViolation> {
    let started = Instant::now();
    loop {
        let mut containers = fleet.containers().await;
        if let Some(docker) = docker {
            let host = HostId::new(docker.host()).expect("a valid host id");
            for name in docker.running() {
                containers.entry(name).or_default().push(host.clone());
            }
        }
        let broken = invariants::check_final(history, end, &containers);
        if broken.is_empty() || started.elapsed() > SETTLE {
            return broken;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A broken invariant with the history around each operation it names.
fn explain(broken: &InvariantViolation, history: &History) -> String {
    let mut text = format!("{broken}\n");
    for id in broken.ops.iter().take(3) {
        text.push_str(&history.around(*id, 6));
    }
    text
}

/// An operation as the summary sees it.
fn timed(op: &Op) -> Timed {
    let kind = op.kind();
    Timed {
        kind: kind.as_str(),
        write: matches!(
            kind,
            OpKind::Create | OpKind::Destroy | OpKind::Stop | OpKind::Start
        ),
        invoked: op.invoked,
        completed: op.completed,
        class: match op.outcome {
            Outcome::Ok(_) => Class::Ok,
            Outcome::Failed(_) => Class::Failed,
            Outcome::Unknown(..) => Class::Unknown,
        },
    }
}

/// Writes the history, the faults as injected, the summary and every coordinator's logs (of
/// every start, in `coordinators/`) to `dir`.
fn keep(
    dir: &std::path::Path,
    history: &History,
    members: &Members,
    docker: Option<&DockerHost>,
    summary: &Summary,
    faults: &[Injected],
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))?;
    history
        .write_jsonl(&dir.join("history.jsonl"))
        .context("writing the history")?;
    std::fs::write(dir.join("summary.txt"), summary.to_string())?;
    let faults: String = faults
        .iter()
        .map(|fault| {
            format!(
                "{:>10.3} {:>10.3} {:<15} {}\n",
                fault.at.as_secs_f64(),
                fault.healed.as_secs_f64(),
                fault.kind.name(),
                fault.on.map_or("-".to_string(), |on| on.to_string())
            )
        })
        .collect();
    std::fs::write(
        dir.join("faults.txt"),
        format!(
            "{:>10} {:>10} {:<15} on\n{faults}",
            "at_s", "healed_s", "kind"
        ),
    )?;
    std::fs::write(dir.join("coordinators.log"), members.logs())?;
    // How much each member's data dir holds at the end (its disk growth over the campaign).
    let mut disk = String::new();
    for index in 0..members.len() {
        let bytes = dir_bytes(members.data_dir(index));
        disk.push_str(&format!("member {index}: {bytes} bytes\n"));
    }
    std::fs::write(dir.join("disk.txt"), disk)?;
    // Every start's log, not only the latest: what a member said before a fault restarted it
    // is what explains a stall that a later restart would hide.
    let starts = dir.join("coordinators");
    std::fs::create_dir_all(&starts)?;
    for entry in std::fs::read_dir(members.dir())?.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".log") {
            std::fs::copy(entry.path(), starts.join(&name))
                .with_context(|| format!("keeping {}", entry.path().display()))?;
        }
    }
    if let Some(docker) = docker {
        if let Some(agent) = &docker.agent {
            std::fs::write(dir.join("docker-agent.log"), agent.process.log())?;
        }
        let engine_log = docker.engine.dir().join("dockerd.log");
        let _ = std::fs::copy(engine_log, dir.join("dockerd.log"));
    }
    Ok(dir.to_path_buf())
}

/// The bytes of the files under `dir`, recursively (0 for what cannot be read).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => dir_bytes(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::network_pool;

    #[test]
    fn the_docker_hosts_pool_is_the_first_least_routed_20_from_the_pids() {
        let header = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n";
        // 10.195.193.0/24 and 10.195.200.0/24, as the kernel prints them on this machine.
        let route = |a: u8, b: u8, c: u8| {
            let raw = u32::from_ne_bytes([a, b, c, 0]);
            format!("br-x\t{raw:08X}\t00000000\t0001\t0\t0\t0\t00FFFFFF\n")
        };
        assert_eq!(network_pool(12, header), "10.195.192.0/20");
        let routes = format!(
            "{header}{}{}{}",
            route(10, 195, 193),
            route(10, 195, 200),
            route(10, 196, 208)
        );
        // 192-207 holds two; 208-223 is free (another /16's route does not count).
        assert_eq!(network_pool(12, &routes), "10.195.208.0/20");
        assert_eq!(network_pool(28, &routes), "10.195.208.0/20");
        assert_eq!(network_pool(3, &routes), "10.195.48.0/20");
    }
}
