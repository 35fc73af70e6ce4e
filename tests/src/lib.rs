//! The harness for Nexus' end-to-end tests: fresh PKIs, our binaries started as real processes on
//! free loopback ports with their own data dirs, and cleanup when a test ends (processes are
//! killed with SIGKILL on drop; temporary directories are removed).
//!
//! The binaries are the ones cargo built next to the test executable (`target/<profile>/`);
//! `cargo nextest run --workspace` builds them because each binary crate has integration tests.

// A harness fails the test by panicking.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

pub mod backups;
pub mod chaos;
pub mod cluster;
pub mod docker;
pub mod docker_fleet;
pub mod etcd;
pub mod exposition;
pub mod fleet;
pub mod http;
pub mod inproc;
pub mod monitoring;
pub mod pki;
pub mod process;
pub mod prometheus;
pub mod stand_in;
pub mod systemd;

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it returns `Some`, or fails the test after `limit` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if started.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
