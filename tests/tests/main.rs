//! The end-to-end suites, one module per capability, in one test binary: each suite was a
//! binary of its own, and linking forty binaries against the whole workspace cost CI more than a
//! minute of its two cores (docs/decisions.md, "One test binary for the end-to-end suites").
//! nextest still runs every test in a process of its own, so no suite shares state with another;
//! a suite's tests are named `<suite>::<test>` (`cargo nextest run -p nexus-tests cluster::`).

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod activity;
mod agent;
mod agent_monitoring;
mod agent_reports;
mod ansible;
mod architecture;
mod backups;
mod bench_smoke;
mod chaos;
mod chaos_checker;
mod chaos_net;
mod cli;
mod cluster;
mod config_reload;
mod configuration_doc;
mod coordinator_monitoring;
mod credentials;
mod daemon_logs;
mod debugging;
mod deploy_units;
mod docker_engine;
mod enrolment;
mod events;
mod fleet_security;
mod git_worktrees;
mod large_state;
mod listing;
mod maintenance;
mod monitoring;
mod packages;
mod policies;
mod processes;
mod request_ids;
mod restore;
mod scrape;
mod service_manager;
mod sync_reports;
mod transport;
mod waiting;
mod workspace_health;
mod workspaces;
mod worktree_verify;
