//! The whole fleet's checks (`nexus admin health-check`), from what the coordinators and agents
//! said (or why they did not). Pure: the facts and the time come in.
//!
//! | check | ok | warn | fail |
//! |---|---|---|---|
//! | `quorum` | the leader hears from every voter | it hears from a majority only | no leader, or no majority |
//! | `agent H` | `/readyz` passes | its endpoint is unknown | a check fails, it does not answer, the host is down |
//! | `engine H` | the agent's `engine` check passes | not reported | it fails |
//! | `certificates D` | every certificate of daemon D lasts 30 days more | one expires within 30 days, its expiry is unknown, or the daemon did not say (its own check says why) | one expires within 7 days, or has expired |
//! | `disk H` | 15 % or more of the data dir's disk is free | under 15 %, or no stats yet | under 5 % |
//!
//! (The disk's limits are the defaults of [`DiskLimits`]; `--disk-warn-below` and
//! `--disk-fail-below` change them.)
//! | `orphans H` | the agent runs no container of a workspace it is not told to run | it runs some (after a restore from an older backup: `nexus admin workspace orphans`), or it cannot tell | — |
//! | `workspaces` | none failed or lost | some failed | some lost (their host is down) |

use nexus_protocol::HostId;
use nexus_protocol::clock::Timestamp;
use nexus_protocol::debug::CertificateInfo;
use nexus_protocol::message::{ClusterStatus, HostView, MemberRole, OrphanView};
use nexus_protocol::model::{HostStatus, WorkspaceState, WorkspaceView};

use super::{Check, Status, cut};
use crate::output;

/// Certificates closer to their end than these warn, and fail.
pub const CERT_WARN_DAYS: i64 = 30;
pub const CERT_FAIL_DAYS: i64 = 7;
/// A disk with less free than these, in percent, warns, and fails.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiskLimits {
    pub warn_below: f64,
    pub fail_below: f64,
}

impl Default for DiskLimits {
    fn default() -> Self {
        Self {
            warn_below: 15.0,
            fail_below: 5.0,
        }
    }
}
/// The most workspaces a check names.
const NAMED: usize = 10;
const DETAIL: usize = 200;

/// What one agent said, or why it did not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentFacts {
    pub host: HostId,
    /// Its `/readyz?verbose` text.
    pub readiness: Result<String, String>,
    pub certificates: Result<Vec<CertificateInfo>, String>,
    /// Its orphan containers (see `nexus admin workspace orphans`).
    pub orphans: Result<Vec<OrphanView>, String>,
}

/// Everything the checks look at.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// The cluster as the leader (or, without one, the coordinator asked) sees it.
    pub status: Result<ClusterStatus, String>,
    /// Each coordinator's certificates, by a name (`coordinator-2`).
    pub coordinators: Vec<(String, Result<Vec<CertificateInfo>, String>)>,
    pub hosts: Result<Vec<HostView>, String>,
    /// The agents asked; a host without an entry has no known endpoint.
    pub agents: Vec<AgentFacts>,
    pub workspaces: Result<Vec<WorkspaceView>, String>,
}

/// Whether the cluster has a leader that hears from a quorum of voters, and the counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quorum {
    pub ok: bool,
    pub voters: usize,
    pub healthy: usize,
    pub quorum: usize,
}

pub fn quorum(status: &ClusterStatus) -> Quorum {
    let voters: Vec<_> = status
        .members
        .iter()
        .filter(|m| m.role != MemberRole::Learner)
        .collect();
    let healthy = voters.iter().filter(|m| m.healthy).count();
    let quorum = voters.len() / 2 + 1;
    let leading = status.leader == Some(status.node);
    Quorum {
        ok: leading && healthy >= quorum,
        voters: voters.len(),
        healthy,
        quorum,
    }
}

/// Every check, in order: the quorum, each host's agent, engine and disk, each daemon's
/// certificates, the workspaces.
pub fn judge(facts: &Facts, disk: DiskLimits, now: Timestamp) -> Vec<Check> {
    let mut checks = vec![quorum_check(&facts.status)];
    match &facts.hosts {
        Err(why) => checks.push(Check::new(
            "hosts",
            None,
            Status::Fail,
            format!("cannot list the hosts: {}", cut(why, DETAIL)),
        )),
        Ok(hosts) => {
            for host in hosts {
                let agent = facts.agents.iter().find(|a| a.host == host.info.host_id);
                checks.extend(agent_checks(host, agent, now));
                checks.extend(agent.and_then(orphans_check));
                checks.push(disk_check(host, disk));
            }
        }
    }
    for (name, certificates) in &facts.coordinators {
        checks.push(certificates_check(name, certificates, now));
    }
    for agent in &facts.agents {
        checks.push(certificates_check(
            &format!("agent-{}", agent.host),
            &agent.certificates,
            now,
        ));
    }
    checks.push(workspaces_check(&facts.workspaces));
    checks
}

/// The agent's orphans: none is ok, any is a warning that names a few and the command that
/// lists them. Not judged when the agent did not answer at all (its own check says so).
fn orphans_check(agent: &AgentFacts) -> Option<Check> {
    agent.readiness.as_ref().ok()?;
    let target = Some(agent.host.to_string());
    let orphans = match &agent.orphans {
        Ok(orphans) => orphans,
        Err(why) => {
            return Some(Check::new(
                "orphans",
                target,
                Status::Warn,
                format!("cannot tell: {}", cut(why, DETAIL)),
            ));
        }
    };
    if orphans.is_empty() {
        return Some(Check::new("orphans", target, Status::Ok, "none"));
    }
    let mut names: Vec<&str> = orphans.iter().map(|o| o.container.as_str()).collect();
    let more = names.len().saturating_sub(NAMED);
    names.truncate(NAMED);
    let mut text = names.join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    Some(Check::new(
        "orphans",
        target,
        Status::Warn,
        format!(
            "{} container(s) of workspaces the coordinators do not name, left running: {text} \
             (`nexus admin workspace orphans --host {}`)",
            orphans.len(),
            agent.host
        ),
    ))
}

fn quorum_check(status: &Result<ClusterStatus, String>) -> Check {
    let status = match status {
        Ok(status) => status,
        Err(why) => {
            return Check::new(
                "quorum",
                None,
                Status::Fail,
                format!("no coordinator answered: {}", cut(why, DETAIL)),
            );
        }
    };
    let q = quorum(status);
    let leader = status.leader.map_or("none".to_string(), |l| l.to_string());
    let detail = format!(
        "leader {leader}, {} of {} voters healthy (quorum {}), term {}",
        q.healthy, q.voters, q.quorum, status.term
    );
    if q.ok && q.healthy == q.voters {
        return Check::new("quorum", None, Status::Ok, detail);
    }
    if q.ok {
        return Check::new(
            "quorum",
            None,
            Status::Warn,
            format!("a voter is not heard from: {detail}"),
        );
    }
    let why = if status.leader.is_none() {
        "no leader".to_string()
    } else if status.leader != Some(status.node) {
        format!("the leader {leader} could not be reached")
    } else {
        "no majority".to_string()
    };
    Check::new("quorum", None, Status::Fail, format!("{why}: {detail}"))
}

/// One line of a `/readyz?verbose` answer: the check's name and its failure, if any.
fn readiness_lines(text: &str) -> Vec<(&str, Option<&str>)> {
    text.lines()
        .filter_map(|line| {
            if let Some(rest) = line.strip_prefix("[+]") {
                return Some((rest.strip_suffix(" ok").unwrap_or(rest), None));
            }
            let rest = line.strip_prefix("[-]")?;
            let (name, why) = rest.split_once(" failed: ").unwrap_or((rest, ""));
            Some((name, Some(why)))
        })
        .collect()
}

fn agent_checks(host: &HostView, agent: Option<&AgentFacts>, now: Timestamp) -> Vec<Check> {
    let target = Some(host.info.host_id.to_string());
    if host.status == HostStatus::Down {
        let detail = format!(
            "the host is down (last heartbeat {})",
            output::ago(host.last_heartbeat, now)
        );
        return vec![Check::new("agent", target, Status::Fail, detail)];
    }
    let Some(agent) = agent else {
        return vec![Check::new(
            "agent",
            target,
            Status::Warn,
            "not asked: the leader knows no endpoint for it (its --listen is off, or it has not said yet)",
        )];
    };
    let text = match &agent.readiness {
        Ok(text) => text,
        Err(why) => {
            return vec![Check::new(
                "agent",
                target,
                Status::Fail,
                format!("did not answer: {}", cut(why, DETAIL)),
            )];
        }
    };
    let lines = readiness_lines(text);
    let failures: Vec<String> = lines
        .iter()
        .filter_map(|(name, why)| why.map(|why| format!("{name}: {why}")))
        .collect();
    let ready = if failures.is_empty() && text.contains("check passed") {
        Check::new("agent", target.clone(), Status::Ok, "ready")
    } else {
        let detail = if failures.is_empty() {
            "not ready".to_string()
        } else {
            cut(&failures.join("; "), DETAIL)
        };
        Check::new("agent", target.clone(), Status::Fail, detail)
    };
    let engine = match lines.iter().find(|(name, _)| *name == "engine") {
        Some((_, None)) => Check::new("engine", target, Status::Ok, "answers"),
        Some((_, Some(why))) => Check::new("engine", target, Status::Fail, cut(why, DETAIL)),
        None => Check::new(
            "engine",
            target,
            Status::Warn,
            "the agent did not report it",
        ),
    };
    vec![ready, engine]
}

fn disk_check(host: &HostView, limits: DiskLimits) -> Check {
    let target = Some(host.info.host_id.to_string());
    let Some(stats) = host.stats.as_ref().filter(|s| s.disk_total_bytes > 0) else {
        return Check::new(
            "disk",
            target,
            Status::Warn,
            "no disk stats from its agent yet",
        );
    };
    let free = stats.disk_total_bytes.saturating_sub(stats.disk_used_bytes);
    #[allow(clippy::cast_precision_loss)]
    let percent = free as f64 * 100.0 / stats.disk_total_bytes as f64;
    let status = if percent < limits.fail_below {
        Status::Fail
    } else if percent < limits.warn_below {
        Status::Warn
    } else {
        Status::Ok
    };
    Check::new(
        "disk",
        target,
        status,
        format!(
            "{percent:.1}% free ({} of {})",
            output::bytes(free),
            output::bytes(stats.disk_total_bytes)
        ),
    )
}

fn certificates_check(
    daemon: &str,
    certificates: &Result<Vec<CertificateInfo>, String>,
    now: Timestamp,
) -> Check {
    let target = Some(daemon.to_string());
    let certificates = match certificates {
        Ok(certificates) => certificates,
        // Unknown, not known bad: the daemon's reachability is its own check's.
        Err(why) => {
            return Check::new(
                "certificates",
                target,
                Status::Warn,
                format!("cannot read them: {}", cut(why, DETAIL)),
            );
        }
    };
    let now_seconds = i64::try_from(now.as_millis() / 1_000).unwrap_or(i64::MAX);
    let mut status = Status::Ok;
    let mut parts = Vec::new();
    for certificate in certificates {
        let Some(not_after) = certificate.not_after else {
            status = status.max(Status::Warn);
            parts.push(format!("{}: expiry unknown", certificate.certificate));
            continue;
        };
        let left = not_after - now_seconds;
        let days = left.div_euclid(86_400);
        let date = output::rfc3339(Timestamp::from_millis(
            u64::try_from(not_after).unwrap_or(0).saturating_mul(1_000),
        ));
        let date = date.split('T').next().unwrap_or(&date).to_string();
        let (this, text) = if left <= 0 {
            (
                Status::Fail,
                format!("{} expired on {date}", certificate.certificate),
            )
        } else if days < CERT_FAIL_DAYS {
            (
                Status::Fail,
                format!("{} expires in {days} d ({date})", certificate.certificate),
            )
        } else if days < CERT_WARN_DAYS {
            (
                Status::Warn,
                format!("{} expires in {days} d ({date})", certificate.certificate),
            )
        } else {
            (
                Status::Ok,
                format!("{} expires in {days} d ({date})", certificate.certificate),
            )
        };
        status = status.max(this);
        parts.push(text);
    }
    if parts.is_empty() {
        return Check::new("certificates", target, Status::Warn, "none reported");
    }
    Check::new("certificates", target, status, parts.join(", "))
}

fn workspaces_check(workspaces: &Result<Vec<WorkspaceView>, String>) -> Check {
    let workspaces = match workspaces {
        Ok(workspaces) => workspaces,
        Err(why) => {
            return Check::new(
                "workspaces",
                None,
                Status::Fail,
                format!("cannot list them: {}", cut(why, DETAIL)),
            );
        }
    };
    let named = |state: WorkspaceState| {
        let names: Vec<String> = workspaces
            .iter()
            .filter(|w| w.state == state)
            .map(|w| w.name.to_string())
            .collect();
        let more = names.len().saturating_sub(NAMED);
        let mut text = names
            .iter()
            .take(NAMED)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if more > 0 {
            text.push_str(&format!(" and {more} more"));
        }
        (names.len(), text)
    };
    let (lost, lost_names) = named(WorkspaceState::Lost);
    let (failed, failed_names) = named(WorkspaceState::Failed);
    let mut parts = Vec::new();
    if lost > 0 {
        parts.push(format!("{lost} lost (their host is down): {lost_names}"));
    }
    if failed > 0 {
        parts.push(format!(
            "{failed} failed (`nexus admin workspace inspect NAME`): {failed_names}"
        ));
    }
    let status = if lost > 0 {
        Status::Fail
    } else if failed > 0 {
        Status::Warn
    } else {
        Status::Ok
    };
    let detail = if parts.is_empty() {
        format!("{} workspace(s), none failed or lost", workspaces.len())
    } else {
        parts.join("; ")
    };
    Check::new("workspaces", None, status, detail)
}

#[cfg(test)]
mod tests {
    use nexus_fixtures as fixtures;
    use nexus_protocol::NodeId;
    use nexus_protocol::message::MemberView;
    use nexus_protocol::model::HostStats;

    use super::*;

    const DAY: i64 = 86_400;
    const NOW_SECONDS: i64 = 1_800_000_000;
    const NOW: Timestamp = Timestamp(1_800_000_000_000);

    fn member(id: u64, role: MemberRole, healthy: bool) -> MemberView {
        MemberView {
            id: NodeId::new(id).unwrap(),
            addr: format!("127.0.0.1:{}", 7400 + id),
            role,
            healthy,
            last_contact_ms: Some(10),
            matched_index: Some(5),
        }
    }

    fn status(leader: Option<u64>, node: u64, healthy: [bool; 3]) -> ClusterStatus {
        ClusterStatus {
            node: NodeId::new(node).unwrap(),
            leader: leader.map(|l| NodeId::new(l).unwrap()),
            term: 4,
            commit_index: 9,
            applied_index: 9,
            members: vec![
                member(1, MemberRole::Leader, healthy[0]),
                member(2, MemberRole::Follower, healthy[1]),
                member(3, MemberRole::Follower, healthy[2]),
                member(4, MemberRole::Learner, false),
            ],
        }
    }

    /// A host with `free_percent` of its disk free (no stats above 100).
    fn host(id: &str, status: HostStatus, free_percent: u64) -> HostView {
        HostView {
            info: fixtures::host(id),
            status,
            workspaces: 0,
            stats: (free_percent <= 100).then(|| HostStats {
                disk_total_bytes: 1_000,
                disk_used_bytes: 1_000 - free_percent * 10,
                ..HostStats::default()
            }),
            last_heartbeat: Some(Timestamp(NOW.0 - 3_000)),
        }
    }

    fn certificates(days: &[Option<i64>]) -> Vec<CertificateInfo> {
        days.iter()
            .zip(["node", "ca"])
            .map(|(days, which)| CertificateInfo {
                certificate: which.into(),
                subject: None,
                not_after: days.map(|d| NOW_SECONDS + d * DAY + 60),
            })
            .collect()
    }

    const READY: &str = "[+]registered ok\n[+]heartbeat ok\n[+]engine ok\nreadyz check passed\n";
    const ENGINE_DOWN: &str = "[+]registered ok\n[+]heartbeat ok\n[-]engine failed: the Docker engine at /var/run/docker.sock does not answer\nreadyz check failed\n";

    fn agent(id: &str, readiness: Result<&str, &str>, certs: &[Option<i64>]) -> AgentFacts {
        AgentFacts {
            host: id.parse().unwrap(),
            readiness: readiness.map(String::from).map_err(String::from),
            certificates: Ok(certificates(certs)),
            orphans: Ok(vec![]),
        }
    }

    fn workspace(name: &str, state: WorkspaceState) -> WorkspaceView {
        WorkspaceView {
            name: name.parse().unwrap(),
            owner: "ada".parse().unwrap(),
            state,
            host: "h1".parse().ok(),
            image: "dev:latest".into(),
            class: nexus_protocol::model::ResourceClass::Small,
            ports: vec![],
            created_at: Timestamp(0),
        }
    }

    fn facts() -> Facts {
        Facts {
            status: Ok(status(Some(1), 1, [true, true, true])),
            coordinators: vec![(
                "coordinator-1".into(),
                Ok(certificates(&[Some(300), Some(3000)])),
            )],
            hosts: Ok(vec![host("h1", HostStatus::Ready, 50)]),
            agents: vec![agent("h1", Ok(READY), &[Some(200), Some(3000)])],
            workspaces: Ok(vec![workspace("web", WorkspaceState::Running)]),
        }
    }

    /// The status of the check named `name` when `change` is made to the healthy facts.
    fn check(name: &str, change: impl FnOnce(&mut Facts)) -> (Status, String) {
        let mut facts = facts();
        change(&mut facts);
        let checks = judge(&facts, DiskLimits::default(), NOW);
        let found = checks
            .iter()
            .find(|c| c.name() == name)
            .unwrap_or_else(|| panic!("no {name} in {checks:?}"));
        (found.status, found.detail.clone())
    }

    #[test]
    fn the_disk_limits_given_decide_the_disk_check() {
        let mut facts = facts();
        facts.hosts = Ok(vec![host("h1", HostStatus::Ready, 4)]);
        let disk = |limits| {
            let checks = judge(&facts, limits, NOW);
            checks
                .into_iter()
                .find(|c| c.name() == "disk h1")
                .unwrap()
                .status
        };
        let limits = |warn_below, fail_below| DiskLimits {
            warn_below,
            fail_below,
        };
        assert_eq!(disk(DiskLimits::default()), Status::Fail);
        assert_eq!(disk(limits(15.0, 3.0)), Status::Warn);
        assert_eq!(disk(limits(4.0, 0.0)), Status::Ok);
        assert_eq!(disk(limits(0.0, 0.0)), Status::Ok);
        assert_eq!(disk(limits(50.0, 4.5)), Status::Fail);
    }

    #[test]
    fn a_healthy_fleet_passes_every_check() {
        let checks = judge(&facts(), DiskLimits::default(), NOW);
        let names: Vec<String> = checks.iter().map(Check::name).collect();
        assert_eq!(
            names,
            [
                "quorum",
                "agent h1",
                "engine h1",
                "orphans h1",
                "disk h1",
                "certificates coordinator-1",
                "certificates agent-h1",
                "workspaces"
            ]
        );
        assert!(checks.iter().all(|c| c.status == Status::Ok), "{checks:#?}");
        assert_eq!(
            checks[0].detail,
            "leader 1, 3 of 3 voters healthy (quorum 2), term 4"
        );
        assert_eq!(checks[3].detail, "none");
        assert_eq!(checks[4].detail, "50.0% free (500 B of 1000 B)");
        assert_eq!(
            checks[5].detail,
            "node expires in 300 d (2027-11-11), ca expires in 3000 d (2035-04-03)"
        );
    }

    #[test]
    fn each_check_warns_and_fails_at_its_thresholds() {
        type Change = Box<dyn FnOnce(&mut Facts)>;
        let cases: Vec<(&str, Change, Status, &str)> = vec![
            (
                "quorum",
                Box::new(|f| f.status = Ok(status(Some(1), 1, [true, true, false]))),
                Status::Warn,
                "a voter is not heard from: leader 1, 2 of 3 voters healthy (quorum 2), term 4",
            ),
            (
                "quorum",
                Box::new(|f| f.status = Ok(status(Some(1), 1, [true, false, false]))),
                Status::Fail,
                "no majority: leader 1, 1 of 3 voters healthy (quorum 2), term 4",
            ),
            (
                "quorum",
                Box::new(|f| f.status = Ok(status(None, 2, [false, true, true]))),
                Status::Fail,
                "no leader: leader none, 2 of 3 voters healthy (quorum 2), term 4",
            ),
            (
                "quorum",
                Box::new(|f| f.status = Ok(status(Some(1), 2, [true, true, true]))),
                Status::Fail,
                "the leader 1 could not be reached: leader 1, 3 of 3 voters healthy (quorum 2), term 4",
            ),
            (
                "quorum",
                Box::new(|f| f.status = Err("connection refused".into())),
                Status::Fail,
                "no coordinator answered: connection refused",
            ),
            (
                "agent h1",
                Box::new(|f| f.agents[0].readiness = Ok(ENGINE_DOWN.into())),
                Status::Fail,
                "engine: the Docker engine at /var/run/docker.sock does not answer",
            ),
            (
                "engine h1",
                Box::new(|f| f.agents[0].readiness = Ok(ENGINE_DOWN.into())),
                Status::Fail,
                "the Docker engine at /var/run/docker.sock does not answer",
            ),
            (
                "agent h1",
                Box::new(|f| f.agents[0].readiness = Err("timed out".into())),
                Status::Fail,
                "did not answer: timed out",
            ),
            (
                "agent h1",
                Box::new(|f| f.agents.clear()),
                Status::Warn,
                "not asked: the leader knows no endpoint for it (its --listen is off, or it has not said yet)",
            ),
            (
                "agent h1",
                Box::new(|f| f.hosts = Ok(vec![host("h1", HostStatus::Down, 50)])),
                Status::Fail,
                "the host is down (last heartbeat 3s ago)",
            ),
            (
                "orphans h1",
                Box::new(|f| {
                    f.agents[0].orphans = Ok(vec![OrphanView {
                        host: "h1".parse().unwrap(),
                        container: "nexus.h1.late.g1".into(),
                        workspace: "late".into(),
                        image: "dev:latest".into(),
                        state: "running".into(),
                    }])
                }),
                Status::Warn,
                "1 container(s) of workspaces the coordinators do not name, left running: \
                 nexus.h1.late.g1 (`nexus admin workspace orphans --host h1`)",
            ),
            (
                "orphans h1",
                Box::new(|f| f.agents[0].orphans = Err("not served".into())),
                Status::Warn,
                "cannot tell: not served",
            ),
            (
                "disk h1",
                Box::new(|f| f.hosts = Ok(vec![host("h1", HostStatus::Ready, 14)])),
                Status::Warn,
                "14.0% free (140 B of 1000 B)",
            ),
            (
                "disk h1",
                Box::new(|f| f.hosts = Ok(vec![host("h1", HostStatus::Ready, 15)])),
                Status::Ok,
                "15.0% free (150 B of 1000 B)",
            ),
            (
                "disk h1",
                Box::new(|f| f.hosts = Ok(vec![host("h1", HostStatus::Ready, 4)])),
                Status::Fail,
                "4.0% free (40 B of 1000 B)",
            ),
            (
                "disk h1",
                Box::new(|f| f.hosts = Ok(vec![host("h1", HostStatus::Cordoned, 500)])),
                Status::Warn,
                "no disk stats from its agent yet",
            ),
            (
                "certificates agent-h1",
                Box::new(|f| f.agents[0] = agent("h1", Ok(READY), &[Some(29), Some(3000)])),
                Status::Warn,
                "node expires in 29 d (2027-02-13), ca expires in 3000 d (2035-04-03)",
            ),
            (
                "certificates agent-h1",
                Box::new(|f| f.agents[0] = agent("h1", Ok(READY), &[Some(30), Some(6)])),
                Status::Fail,
                "node expires in 30 d (2027-02-14), ca expires in 6 d (2027-01-21)",
            ),
            (
                "certificates agent-h1",
                Box::new(|f| f.agents[0] = agent("h1", Ok(READY), &[Some(-2), None])),
                Status::Fail,
                "node expired on 2027-01-13, ca: expiry unknown",
            ),
            (
                "certificates coordinator-1",
                Box::new(|f| f.coordinators[0].1 = Err("not served yet".into())),
                Status::Warn,
                "cannot read them: not served yet",
            ),
            (
                "workspaces",
                Box::new(|f| {
                    f.workspaces = Ok(vec![
                        workspace("web", WorkspaceState::Failed),
                        workspace("api", WorkspaceState::Running),
                    ])
                }),
                Status::Warn,
                "1 failed (`nexus admin workspace inspect NAME`): web",
            ),
            (
                "workspaces",
                Box::new(|f| {
                    f.workspaces = Ok(vec![
                        workspace("web", WorkspaceState::Failed),
                        workspace("db", WorkspaceState::Lost),
                    ])
                }),
                Status::Fail,
                "1 lost (their host is down): db; 1 failed (`nexus admin workspace inspect NAME`): web",
            ),
        ];
        for (name, change, status, detail) in cases {
            assert_eq!(check(name, change), (status, detail.to_string()), "{name}");
        }
    }

    #[test]
    fn many_workspaces_are_named_up_to_a_bound() {
        let (status, detail) = check("workspaces", |f| {
            f.workspaces = Ok((0..12)
                .map(|n| workspace(&format!("w{n:02}"), WorkspaceState::Lost))
                .collect())
        });
        assert_eq!(status, Status::Fail);
        assert!(detail.ends_with("w09 and 2 more"), "{detail}");
    }
}
