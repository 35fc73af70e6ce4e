//! The command line: the `--json` flag and one subcommand a scenario, with its flags and their
//! defaults. It parses only; `main` runs what it asks for.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::scenarios::{
    agent_idle, backup, debug, detect, failover, fleet, raft_writes, scrape, snapshot, start,
    status_failover, sync, transport,
};

/// What `nexus-bench` was asked: a scenario, and where to write its report as JSON.
#[derive(Debug, Parser)]
#[command(name = "nexus-bench", about = "Measure Nexus against real processes")]
pub(crate) struct Cli {
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub(crate) json: Option<PathBuf>,
    /// The log filter the daemons run with (their NEXUS_LOG). `info` is what they ship with;
    /// the tests run them at `debug`, which costs a busy coordinator more.
    #[arg(long, global = true, default_value = "info")]
    pub(crate) daemon_log: String,
    /// Keep the run's files (certificates, the daemons' data directories and logs) where they
    /// were made, and say where; without it they are removed when the run ends.
    #[arg(long, global = true)]
    pub(crate) keep_files: bool,
    #[command(subcommand)]
    pub(crate) scenario: Scenario,
}

/// The scenarios, one subcommand each. A variant's doc is its subcommand's help; its flags are
/// declared beside the scenario's code.
#[derive(Debug, Subcommand)]
pub(crate) enum Scenario {
    /// One real nexus-coordinator on loopback: connection setup (QUIC + mTLS + hello), request
    /// round trips, and throughput with concurrent streams on one connection.
    Transport(transport::Args),
    /// Three real coordinators on loopback (synced RocksDB): the latency of one write at a time
    /// (at the leader, and at a follower that forwards it), and throughput with many in flight
    /// (Raft batches them into shared appends and fsyncs).
    Raft(raft_writes::Args),
    /// Three real coordinators and a steady stream of writes: SIGKILL the leader, and time until
    /// a write sent after the kill is acknowledged; restart the killed node, let it catch up,
    /// repeat. Then check that every acknowledged write is in the state of every member. With
    /// `--against etcd`, three etcd members under a stream of their own, their kills alternating
    /// with Nexus's, measured and checked the same way.
    Failover(failover::Args),
    /// What `nexus admin status` answers right after the leader's SIGKILL, and how long it takes
    /// (spawn to exit), against three real coordinators; the same with every member up, before
    /// each kill.
    StatusFailover(status_failover::Args),
    /// Workspace start latency through the `nexus` CLI, on Docker: three real coordinators and
    /// one real agent. Each trial is one CLI invocation, timed from spawn to exit (the CLI waits
    /// until the agent reports the workspace running): create → running, warm start (stopped →
    /// running, the same container) and switch (stop one, start the other). With `--against
    /// docker`, the engine's own `docker network create` + `docker run -d`, `docker run -d`
    /// alone onto a network made beforehand, and `docker start`, interleaved trial by trial.
    /// Each timed step starts after 0.3 s of rest.
    Start(start::Args),
    /// File sync through a real agent (hollow runtime: the workspace's files directory is real)
    /// over QUIC with mTLS on loopback: the initial sync of a tree of N files, then the time of
    /// one sync cycle after a single-file change on the local side, over T trials. With
    /// `--against unison`, unison on a copy of the same tree (initial sync; one changed file each
    /// trial) and `rsync -a` for the one-way initial copy.
    Sync(sync::Args),
    /// Fleet-scale scheduling: three real coordinators and N hollow agents in this process (the
    /// real agent code on the simulated runtime, each with its own certificate and QUIC
    /// connection), then M workspace creates issued concurrently. Reports the placements
    /// committed per second, the time until every workspace runs as its agent reports it,
    /// create latency, the coordinators' CPU and memory, and the leader's heartbeat load (and,
    /// with `--full`, the load and log entries a second once every workspace runs); then
    /// checks that no host is over a limit and that no workspace is missing or doubled.
    Fleet(fleet::Args),
    /// Dead-host detection: three real coordinators and N hollow agents. First the leader is
    /// killed K times (hosts marked down meanwhile, until the new leader has heard every host
    /// again, are false downs: must be zero; how long the fleet took to return is printed); then
    /// a share of the hosts dies at once, and the time until each is marked down is measured.
    Detect(detect::Args),
    /// The agent's footprint: a real nexus-agent process (defaults: 5 s heartbeats, 10 s stats)
    /// with N running workspaces assigned by an in-process coordinator, then idle for a while:
    /// its resident memory and CPU over the idle window.
    AgentIdle(agent_idle::Args),
    /// Monitoring's cost: three real coordinators and N hollow agents; the leader's /metrics
    /// scraped S times in a row. Reports the scrape's latency and size, and the leader's CPU per
    /// scrape beyond its load without scrapes (measured over windows as long), stated as a share
    /// of a core at one scrape per interval.
    Scrape(scrape::Args),
    /// The debugging commands at fleet scale: three coordinators and N real agent processes
    /// (hollow runtime, each with its endpoint and log directory) after W creates; each command
    /// one real `nexus` process timed from spawn to exit: `admin logs --last 1h`, `admin trace`
    /// of a create, `admin support-bundle` of the whole fleet.
    Debug(debug::Args),
    /// The state of a large fleet as a snapshot: N hosts and M running workspaces built in this
    /// process from the log's commands, encoded and decoded; then (unless --in-process-only) three
    /// real coordinators given that fleet through their API, and a fourth added and timed until
    /// it serves every workspace, caught up from a snapshot larger than a frame.
    Snapshot(snapshot::Args),
    /// Backups at fleet scale: a state of N hosts and M workspaces made in this process and
    /// written as a backup file; three real coordinators restored from it (`nexus-coordinator
    /// restore`); then `nexus admin backup create`, `verify` and an online `restore` of it, each
    /// one real CLI process timed from spawn to exit, and a fourth member added, timed until its
    /// replica holds every workspace.
    Backup(backup::Args),
}
