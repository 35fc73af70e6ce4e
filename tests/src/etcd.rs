//! Debian's etcd as a peer to measure Nexus beside: three `etcd` members on loopback (their
//! defaults: 100 ms heartbeats, 1 s election timeout), each with a data directory of its own in a
//! temporary directory, driven through etcd's v3 JSON gateway over plain HTTP ([`crate::http`]).
//! Members are killed with SIGKILL and restarted on the same data, as the harness does with
//! coordinators. Not a client of etcd for anything but the benchmark's writes and checks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::http::post_json;
use crate::process::{Process, free_tcp_port};

/// A member's place in the cluster: its name and where it listens.
#[derive(Debug, Clone)]
pub struct EtcdMember {
    pub name: String,
    /// The client URL's address (the JSON gateway).
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub data_dir: PathBuf,
}

/// What a member says of itself and its leader (`/v3/maintenance/status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdStatus {
    /// Its member id, as etcd prints it (a decimal string).
    pub member_id: String,
    pub leader: String,
    pub raft_term: u64,
    /// etcd's version, as the member reports it.
    pub version: String,
}

impl EtcdStatus {
    pub fn leads(&self) -> bool {
        self.member_id == self.leader
    }
}

/// Three etcd members on loopback. Dropping it kills them.
#[derive(Debug)]
pub struct EtcdCluster {
    pub members: Vec<EtcdMember>,
    running: Vec<Option<Process>>,
    initial_cluster: String,
    spawns: usize,
    /// The members' data and logs; removed on drop.
    dir: tempfile::TempDir,
}

/// How long one request to a member may take before it counts as unanswered.
const REQUEST_LIMIT: Duration = Duration::from_secs(2);

impl EtcdCluster {
    /// Starts `size` members and waits (up to 30 s) until one leads.
    pub async fn start(size: usize) -> EtcdCluster {
        let dir = tempfile::Builder::new()
            .prefix("nexus-etcd-")
            .tempdir()
            .expect("a temporary directory");
        let members: Vec<EtcdMember> = (1..=size)
            .map(|n| EtcdMember {
                name: format!("e{n}"),
                client: ([127, 0, 0, 1], free_tcp_port()).into(),
                peer: ([127, 0, 0, 1], free_tcp_port()).into(),
                data_dir: dir.path().join(format!("e{n}")),
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            running: members.iter().map(|_| None).collect(),
            members,
            initial_cluster,
            spawns: 0,
            dir,
        };
        for index in 0..size {
            cluster.spawn(index);
        }
        cluster.leader(Duration::from_secs(30)).await;
        cluster
    }

    fn spawn(&mut self, index: usize) {
        // A log per run of a member, kept apart.
        self.spawns += 1;
        let member = &self.members[index];
        let args: Vec<String> = [
            "--name",
            &member.name,
            "--data-dir",
            &member.data_dir.display().to_string(),
            "--listen-client-urls",
            &format!("http://{}", member.client),
            "--advertise-client-urls",
            &format!("http://{}", member.client),
            "--listen-peer-urls",
            &format!("http://{}", member.peer),
            "--initial-advertise-peer-urls",
            &format!("http://{}", member.peer),
            "--initial-cluster",
            &self.initial_cluster,
            "--initial-cluster-token",
            "nexus-bench",
            // Ignored once the data directory holds a member: a restart rejoins from it.
            "--initial-cluster-state",
            "new",
            "--log-level",
            "warn",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let log = self
            .dir
            .path()
            .join(format!("{}-{}.log", member.name, self.spawns));
        self.running[index] = Some(Process::spawn_program(&binary(), &args, log));
    }

    /// SIGKILL of member `index`.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut process) = self.running[index].take() {
            process.kill();
        }
    }

    /// Starts member `index` again on its data, and waits until it answers.
    pub async fn restart(&mut self, index: usize) {
        self.spawn(index);
        let client = self.members[index].client;
        crate::eventually("a restarted etcd member", Duration::from_secs(30), || {
            status(client)
        })
        .await;
    }

    /// The client addresses of the members that run.
    pub fn live_clients(&self) -> Vec<SocketAddr> {
        self.members
            .iter()
            .zip(&self.running)
            .filter(|(_, process)| process.is_some())
            .map(|(member, _)| member.client)
            .collect()
    }

    /// The member that leads, as it says itself: its index and status.
    pub async fn leader(&self, limit: Duration) -> (usize, EtcdStatus) {
        crate::eventually("an etcd leader", limit, || async {
            for (index, member) in self.members.iter().enumerate() {
                if self.running[index].is_none() {
                    continue;
                }
                if let Some(status) = status(member.client).await
                    && status.leads()
                {
                    return Some((index, status));
                }
            }
            None
        })
        .await
    }

    /// Waits until every running member answers and names the same leader.
    pub async fn wait_healthy(&self, limit: Duration) {
        crate::eventually("every etcd member to follow one leader", limit, || async {
            let mut leaders = Vec::new();
            for client in self.live_clients() {
                leaders.push(status(client).await?.leader);
            }
            leaders.windows(2).all(|w| w[0] == w[1]).then_some(())
        })
        .await;
    }

    /// A member's log, for a failure's message.
    pub fn log(&self, index: usize) -> String {
        self.running[index]
            .as_ref()
            .map(Process::log)
            .unwrap_or_default()
    }
}

/// `/v3/maintenance/status` of the member at `client`, or `None` if it does not answer.
pub async fn status(client: SocketAddr) -> Option<EtcdStatus> {
    let (code, body) = post_json(client, "/v3/maintenance/status", "{}", REQUEST_LIMIT).await?;
    if code != 200 {
        return None;
    }
    let answer: Value = serde_json::from_str(&body).ok()?;
    // The gateway prints 64-bit integers as strings.
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    Some(EtcdStatus {
        member_id: text(&answer["header"]["member_id"])?,
        leader: text(&answer["leader"])?,
        raft_term: text(&answer["header"]["raft_term"])?.parse().ok()?,
        version: text(&answer["version"]).unwrap_or_default(),
    })
}

/// What became of one put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Acknowledged,
    /// The member answered with an error (no leader yet, a leader change).
    Refused,
    /// No answer within the limit, or no connection.
    Silent,
}

/// One put of `key` (its value: the key again) at the member at `client`, within `limit`. A put
/// of the same key and value twice leaves the same state, so a retry after an unanswered attempt
/// is safe.
pub async fn put(client: SocketAddr, key: &str, limit: Duration) -> PutOutcome {
    let body = json!({"key": STANDARD.encode(key), "value": STANDARD.encode(key)}).to_string();
    match post_json(client, "/v3/kv/put", &body, limit).await {
        Some((200, answer)) if answer.contains("\"header\"") => PutOutcome::Acknowledged,
        Some(_) => PutOutcome::Refused,
        None => PutOutcome::Silent,
    }
}

/// Every key under `prefix` the member at `client` holds: a linearizable read (through the
/// leader), or `serializable` from the member's own store as it has applied it.
pub async fn keys(client: SocketAddr, prefix: &str, serializable: bool) -> Option<Vec<String>> {
    // The range [prefix, prefix with its last byte + 1).
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut()? += 1;
    let body = json!({
        "key": STANDARD.encode(prefix),
        "range_end": STANDARD.encode(&end),
        "keys_only": true,
        "serializable": serializable,
    })
    .to_string();
    let (code, answer) = post_json(client, "/v3/kv/range", &body, Duration::from_secs(30)).await?;
    if code != 200 {
        return None;
    }
    let answer: Value = serde_json::from_str(&answer).ok()?;
    let kvs = match &answer["kvs"] {
        Value::Array(kvs) => kvs.clone(),
        // No key at all: the gateway leaves the field out.
        _ => Vec::new(),
    };
    kvs.iter()
        .map(|kv| {
            let raw = STANDARD.decode(kv["key"].as_str()?).ok()?;
            String::from_utf8(raw).ok()
        })
        .collect()
}

/// The etcd binary: `$NEXUS_ETCD`, else `etcd` on the `PATH` (Debian's `etcd-server`).
fn binary() -> PathBuf {
    std::env::var_os("NEXUS_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("etcd"))
}
