//! The agent's suites, one module per capability, in one test binary: a binary each cost CI's
//! two cores a link of the whole agent apiece (docs/decisions.md, "One test binary for the
//! end-to-end suites"). nextest still runs every test in a process of its own; a suite's tests
//! are named `<suite>::<test>` (`cargo nextest run -p nexus-agent docker::`).

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod security;

mod activity;
mod credential_checks;
mod docker;
mod enrolment;
mod flags;
mod hollow;
mod maintenance;
mod orphans;
mod renewal;
mod traces;
mod worktree_verify;
mod worktrees;
