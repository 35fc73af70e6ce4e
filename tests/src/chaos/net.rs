//! A campaign's private network: one Linux bridge in the root namespace and, per node, a network
//! namespace joined to it by a veth pair, and the faults a nemesis makes on it (partitions, one-way
//! loss, random loss, a slow link), each idempotent and all undone by [`Net::heal`].
//!
//! Not here: the processes that run in the namespaces (see `members`), and any schedule of faults.
//!
//! Layout, for a campaign whose subnet is `10.197.N.0/24` (N from the process id, see
//! [`Net::create`]):
//! - the bridge `nxb<pid hex>-<seq>` carries `10.197.N.1`: processes of the root namespace (the
//!   clients, hollow agents, a Docker agent) reach the nodes from that address;
//! - node `i` is the namespace `nxc-<tag>-<pid>-<seq>-<i>` whose `eth0` has `10.197.N.(10+i)`, a
//!   default route through the bridge's address, and `lo` up; its peer `nxv<pid hex>-<seq>-<i>`
//!   is a port of the bridge;
//! - forwarding between the bridge's ports is allowed by a rule at the top of the root
//!   namespace's `FORWARD` chain, commented `nexus-chaos-<pid>`: with `br_netfilter` loaded
//!   (Docker loads it) bridged frames pass through `FORWARD`, whose policy Docker sets to DROP.
//!
//! Faults are a model ([`Faults`]) rendered into each node's own `filter` table at once, with
//! `iptables-restore` (the namespace is ours alone, so its whole table is ours): applying a fault
//! twice changes nothing, and faults combine as a union of blocked links. The root namespace is
//! never given a fault rule; a cut between a node and the root is made in the node's namespace
//! (`INPUT` from, and `OUTPUT` to, the bridge's address).
//!
//! There is no `sch_netem` on these machines' kernels, so there is no added delay: [`Net::slow`]
//! is a token-bucket rate limit (`tc qdisc tbf`) on both ends of a node's link. A packet waits
//! only behind the packets queued before it: an isolated packet goes at once, and a stream of
//! packets of `s` bytes at rate `r` goes one every `s / r` (measured: see [`Net::slow`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};

/// One end of a link a fault can cut: a node, or the root namespace (the campaign's clients and
/// agents, which reach the nodes from the bridge's address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Host {
    Node(usize),
    Root,
}

impl From<usize> for Host {
    fn from(index: usize) -> Host {
        Host::Node(index)
    }
}

/// A node's place on the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNet {
    /// The network namespace, for `ip netns exec`.
    pub ns: String,
    pub ip: Ipv4Addr,
}

/// The faults in force: what [`Net::heal`] clears.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Directed links whose packets are dropped: `(from, to)`.
    pub blocked: BTreeSet<(Host, Host)>,
    /// Per node, the probability (percent) that each packet into or out of it is dropped.
    pub loss: BTreeMap<usize, u8>,
    /// Per node, a rate limit on its link, both ways.
    pub slow: BTreeMap<usize, Slow>,
}

/// A rate limit on a node's link (see [`Net::slow`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slow {
    /// Kilobits a second, each way.
    pub rate_kbit: u32,
    /// The longest a packet may wait in the queue before it is dropped instead.
    pub max_queue: Duration,
}

/// A campaign's network. Dropping it removes the namespaces, veths, bridge and root rule.
#[derive(Debug)]
pub struct Net {
    tag: String,
    seq: u32,
    subnet: u8,
    bridge: String,
    nodes: BTreeMap<usize, NodeNet>,
    faults: Faults,
    /// The rule that lets the bridge forward, as `iptables` arguments after the chain.
    forward_rule: Vec<String>,
}

/// How many nodes a network holds at most (interface names must fit in 15 characters).
pub const MAX_NODES: usize = 100;

/// Where nodes' addresses start: node `i` is `10.197.N.(FIRST_HOST + i)`.
const FIRST_HOST: u8 = 10;

/// The prefix of everything a campaign makes: namespaces, mount sources, rule comments.
pub const PREFIX: &str = "nxc-";
const BRIDGE_PREFIX: &str = "nxb";
const VETH_PREFIX: &str = "nxv";

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

impl Net {
    /// Makes the bridge of a new network. `tag` names the campaign (letters and digits; cut to
    /// 8 characters); the names also carry this process's id, so [`sweep`] can tell a dead
    /// campaign's leftovers from a live one's.
    ///
    /// The subnet `10.197.N.0/24` takes `N = pid % 250`, or the next that no interface uses.
    pub fn create(tag: &str) -> anyhow::Result<Net> {
        let pid = std::process::id();
        let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed) % 100;
        let tag: String = tag
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(8)
            .collect::<String>()
            .to_ascii_lowercase();
        let tag = if tag.is_empty() { "net".into() } else { tag };
        let used = run("ip", &["-4", "-o", "addr", "show"])?;
        let first = u8::try_from((pid + seq) % 250).context("a subnet below 250")?;
        let subnet = (0..250u8)
            .map(|step| (first + step) % 250)
            .find(|n| !used.contains(&format!("10.197.{n}.")))
            .context("every subnet of 10.197.0.0/16 is in use")?;
        let bridge = format!("{BRIDGE_PREFIX}{pid:x}-{seq}");
        let net = Net {
            tag,
            seq,
            subnet,
            bridge: bridge.clone(),
            nodes: BTreeMap::new(),
            faults: Faults::default(),
            forward_rule: vec![
                "-i".into(),
                bridge.clone(),
                "-o".into(),
                bridge.clone(),
                "-m".into(),
                "comment".into(),
                "--comment".into(),
                format!("nexus-chaos-{pid}"),
                "-j".into(),
                "ACCEPT".into(),
            ],
        };
        // From here on, dropping `net` undoes whatever was made.
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", net.root_ip()),
                "dev",
                &bridge,
            ],
        )?;
        run("ip", &["link", "set", &bridge, "up"])?;
        let mut insert: Vec<&str> = vec!["-w", "-I", "FORWARD", "1"];
        insert.extend(net.forward_rule.iter().map(String::as_str));
        run("iptables", &insert)?;
        Ok(net)
    }

    /// The root namespace's address on this network: where nodes see the clients come from.
    pub fn root_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 197, self.subnet, 1)
    }

    /// The bridge's interface name.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// Makes node `index`'s namespace and link (or answers the one made before).
    pub fn add_node(&mut self, index: usize) -> anyhow::Result<NodeNet> {
        if let Some(node) = self.nodes.get(&index) {
            return Ok(node.clone());
        }
        if index >= MAX_NODES {
            bail!("node {index}: a network holds nodes 0..{MAX_NODES}");
        }
        let pid = std::process::id();
        let ns = format!("{PREFIX}{}-{pid}-{}-{index}", self.tag, self.seq);
        let outside = format!("{VETH_PREFIX}{pid:x}-{}-{index}", self.seq);
        let host = FIRST_HOST + u8::try_from(index).context("a small index")?;
        let ip = Ipv4Addr::new(10, 197, self.subnet, host);
        run("ip", &["netns", "add", &ns])?;
        let node = NodeNet { ns: ns.clone(), ip };
        // Recorded now, so that a failure below still removes the namespace on drop.
        self.nodes.insert(index, node.clone());
        run(
            "ip",
            &[
                "link", "add", &outside, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        )?;
        run(
            "ip",
            &["-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
        )?;
        run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
        run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        run(
            "ip",
            &[
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                &self.root_ip().to_string(),
            ],
        )?;
        run("ip", &["link", "set", &outside, "master", &self.bridge])?;
        run("ip", &["link", "set", &outside, "up"])?;
        Ok(node)
    }

    /// Node `index`'s place, if it was added.
    pub fn node(&self, index: usize) -> Option<&NodeNet> {
        self.nodes.get(&index)
    }

    /// The nodes added, by index.
    pub fn nodes(&self) -> &BTreeMap<usize, NodeNet> {
        &self.nodes
    }

    /// The faults in force.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Whether packets from `from` reach `to` (no block in force; loss aside).
    pub fn connected(&self, from: Host, to: Host) -> bool {
        !self.faults.blocked.contains(&(from, to))
    }

    /// Cuts every link between hosts of different groups, both ways. Each node must be in a
    /// group; the root (the clients) is in the group that names [`Host::Root`], or, named in
    /// none, reaches every node. Adds to the faults in force.
    pub fn partition(&mut self, groups: &[Vec<Host>]) -> anyhow::Result<()> {
        let mut group_of: BTreeMap<Host, usize> = BTreeMap::new();
        for (number, group) in groups.iter().enumerate() {
            for host in group {
                if group_of.insert(*host, number).is_some() {
                    bail!("{host:?} is in two groups of {groups:?}");
                }
            }
        }
        for index in self.nodes.keys() {
            if !group_of.contains_key(&Host::Node(*index)) {
                bail!("node {index} is in no group of {groups:?}");
            }
        }
        for (a, group_a) in &group_of {
            for (b, group_b) in &group_of {
                if group_a != group_b {
                    self.faults.blocked.insert((*a, *b));
                }
            }
        }
        self.apply()
    }

    /// Cuts node `index` from every other node and from the root, both ways.
    pub fn isolate(&mut self, index: usize) -> anyhow::Result<()> {
        self.require(index)?;
        let others = self
            .nodes
            .keys()
            .filter(|i| **i != index)
            .map(|i| Host::Node(*i))
            .chain([Host::Root]);
        for other in others {
            self.faults.blocked.insert((other, Host::Node(index)));
            self.faults.blocked.insert((Host::Node(index), other));
        }
        self.apply()
    }

    /// A bridge partition: every host of `a_side` and every host of `b_side` see `middle`, and
    /// no host of one side sees a host of the other.
    pub fn bridge_partition(
        &mut self,
        a_side: &[Host],
        middle: usize,
        b_side: &[Host],
    ) -> anyhow::Result<()> {
        self.require(middle)?;
        for a in a_side {
            for b in b_side {
                if a == b || *a == Host::Node(middle) || *b == Host::Node(middle) {
                    bail!("the sides {a_side:?} and {b_side:?} overlap each other or the middle");
                }
                self.faults.blocked.insert((*a, *b));
                self.faults.blocked.insert((*b, *a));
            }
        }
        self.apply()
    }

    /// Drops every packet from `from` to `to`; the other way is untouched.
    pub fn drop_one_way(&mut self, from: Host, to: Host) -> anyhow::Result<()> {
        if from == to {
            bail!("a one-way drop needs two hosts, not {from:?} twice");
        }
        self.faults.blocked.insert((from, to));
        self.apply()
    }

    /// Drops each packet into or out of node `index` with probability `percent` (0 clears it;
    /// the loss a round trip sees is about twice that for small values).
    pub fn loss(&mut self, index: usize, percent: u8) -> anyhow::Result<()> {
        self.require(index)?;
        if percent > 100 {
            bail!("a loss of {percent}% is more than all");
        }
        if percent == 0 {
            self.faults.loss.remove(&index);
        } else {
            self.faults.loss.insert(index, percent);
        }
        self.apply()
    }

    /// Limits node `index`'s link to `rate_kbit` each way, with a queue of at most `max_queue`
    /// (`tc qdisc tbf`, burst one full-size packet). There is no netem here, so no fixed delay:
    /// a packet waits behind those queued before it. Measured on 2 cores (UDP echo, the limit on
    /// one end): at 1 mbit a lone 100-byte packet's round trip was 0.02 ms and back-to-back
    /// 1200-byte ones 10 ms each; at 100 kbit, 0.06 ms and 99 ms; a burst of 20 1200-byte
    /// packets at 100 kbit took 1.9 s for the last. So it slows Raft's appends and snapshots
    /// and a busy link, not a heartbeat alone.
    pub fn slow(&mut self, index: usize, slow: Slow) -> anyhow::Result<()> {
        self.require(index)?;
        if slow.rate_kbit == 0 {
            bail!("a rate of 0 is a partition, not a slow link");
        }
        self.faults.slow.insert(index, slow);
        self.apply_slow(index)
    }

    /// Clears every fault: each node's filter table and rate limits.
    pub fn heal(&mut self) -> anyhow::Result<()> {
        let had_slow: Vec<usize> = self.faults.slow.keys().copied().collect();
        self.faults = Faults::default();
        self.apply()?;
        for index in had_slow {
            self.apply_slow(index)?;
        }
        Ok(())
    }

    fn require(&self, index: usize) -> anyhow::Result<()> {
        if self.nodes.contains_key(&index) {
            Ok(())
        } else {
            bail!("node {index} is not on this network")
        }
    }

    fn ip_of(&self, host: Host) -> Option<Ipv4Addr> {
        match host {
            Host::Root => Some(self.root_ip()),
            Host::Node(index) => self.nodes.get(&index).map(|n| n.ip),
        }
    }

    /// Writes every node's filter table from the model.
    fn apply(&self) -> anyhow::Result<()> {
        for (index, node) in &self.nodes {
            let table = self.filter_table(*index);
            run_with_input(
                "ip",
                &["netns", "exec", &node.ns, "iptables-restore", "-w"],
                &table,
            )?;
        }
        Ok(())
    }

    /// Node `index`'s whole filter table: drops of blocked links in, and (to the root, which
    /// has no rules of ours) out; then random loss on `eth0`.
    fn filter_table(&self, index: usize) -> String {
        let me = Host::Node(index);
        let mut rules = String::from(
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n",
        );
        for (from, to) in &self.faults.blocked {
            if *to == me
                && let Some(source) = self.ip_of(*from)
            {
                rules.push_str(&format!("-A INPUT -i eth0 -s {source} -j DROP\n"));
            }
            if *from == me && *to == Host::Root {
                rules.push_str(&format!(
                    "-A OUTPUT -o eth0 -d {} -j DROP\n",
                    self.root_ip()
                ));
            }
        }
        if let Some(percent) = self.faults.loss.get(&index) {
            let probability = f64::from(*percent) / 100.0;
            for (chain, direction) in [("INPUT", "-i"), ("OUTPUT", "-o")] {
                rules.push_str(&format!(
                    "-A {chain} {direction} eth0 -m statistic --mode random --probability {probability:.4} -j DROP\n"
                ));
            }
        }
        rules.push_str("COMMIT\n");
        rules
    }

    /// Sets or clears the rate limit of node `index` on both ends of its link.
    fn apply_slow(&self, index: usize) -> anyhow::Result<()> {
        let node = &self.nodes[&index];
        let outside = format!("{VETH_PREFIX}{:x}-{}-{index}", std::process::id(), self.seq);
        let ends: [(&[&str], &str); 2] = [(&["-n", &node.ns], "eth0"), (&[], &outside)];
        for (namespace, device) in ends {
            let mut args: Vec<&str> = namespace.to_vec();
            match self.faults.slow.get(&index) {
                Some(slow) => {
                    let rate = format!("{}kbit", slow.rate_kbit);
                    let latency = format!("{}ms", slow.max_queue.as_millis().max(1));
                    args.extend(["qdisc", "replace", "dev", device, "root", "tbf", "rate"]);
                    args.extend([rate.as_str(), "burst", "1600", "latency", &latency]);
                    run("tc", &args)?;
                }
                None => {
                    args.extend(["qdisc", "del", "dev", device, "root"]);
                    // No qdisc of ours there is what we want: ignore "no such qdisc".
                    let _ = run("tc", &args);
                }
            }
        }
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for node in self.nodes.values() {
            // Removing the namespace removes its end of the veth, and with it the pair.
            let _ = run("ip", &["netns", "del", &node.ns]);
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
        let mut delete: Vec<&str> = vec!["-w", "-D", "FORWARD"];
        delete.extend(self.forward_rule.iter().map(String::as_str));
        let _ = run("iptables", &delete);
    }
}

/// Removes what campaigns whose process no longer runs left behind: namespaces named
/// `<prefix>…-<pid>-<seq>-<i>`, bridges and veths `nxb<pid hex>-…`/`nxv<pid hex>-…`, and root
/// `FORWARD` rules commented `nexus-chaos-<pid>`. `prefix` is [`PREFIX`] for every campaign's.
/// Answers what it removed.
pub fn sweep(prefix: &str) -> anyhow::Result<Vec<String>> {
    let mut removed = Vec::new();
    let namespaces = run("ip", &["netns", "list"])?;
    for line in namespaces.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        // <tag>-<pid>-<seq>-<index>
        let fields: Vec<&str> = rest.rsplitn(4, '-').collect();
        if let [_, _, pid, _] = fields.as_slice()
            && let Ok(pid) = pid.parse::<u32>()
            && !alive(pid)
        {
            // Its coordinators outlive the campaign that started them: kill them first.
            let pids = run("ip", &["netns", "pids", name]).unwrap_or_default();
            for pid in pids.split_whitespace() {
                let _ = run("kill", &["-CONT", pid]);
                let _ = run("kill", &["-KILL", pid]);
            }
            run("ip", &["netns", "del", name])?;
            removed.push(format!("namespace {name}"));
        }
    }
    let links = run("ip", &["-o", "link", "show"])?;
    for line in links.lines() {
        // "12: nxb1a2b-0: <…" or "13: nxv1a2b-0-1@if2: <…"
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        let Some(rest) = name
            .strip_prefix(BRIDGE_PREFIX)
            .or_else(|| name.strip_prefix(VETH_PREFIX))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next() else {
            continue;
        };
        // A veth goes with its namespace, but the kernel removes it a moment later: one
        // listed here may be gone by now, so a failure is not an error.
        if let Ok(pid) = u32::from_str_radix(pid, 16)
            && !alive(pid)
            && run("ip", &["link", "del", name]).is_ok()
        {
            removed.push(format!("link {name}"));
        }
    }
    let forward = run("iptables", &["-w", "-S", "FORWARD"])?;
    for rule in forward.lines() {
        let Some(pid) = rule
            .split("nexus-chaos-")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !alive(pid)
            && let Some(spec) = rule.strip_prefix("-A ")
        {
            let mut args = vec!["-w", "-D"];
            args.extend(spec.split_whitespace().map(|a| a.trim_matches('"')));
            run("iptables", &args)?;
            removed.push(format!("rule {rule}"));
        }
    }
    Ok(removed)
}

/// Whether a process with this id runs (a zombie counts as gone).
pub(crate) fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.rsplit(") ").next().is_some_and(|s| s.starts_with('Z')))
}

/// Runs `program` with `args` and answers its standard output; a failure names the command and
/// its standard error.
pub(crate) fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program} {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Like [`run`], with `input` on the program's standard input.
fn run_with_input(program: &str, args: &[&str], input: &str) -> anyhow::Result<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {program} {}", args.join(" ")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .with_context(|| format!("writing to {program} {}", args.join(" ")))?;
    }
    let output = child
        .wait_with_output()
        .with_context(|| format!("waiting for {program} {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "{program} {} failed ({}): {}\ninput:\n{input}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
