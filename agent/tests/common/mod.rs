//! What the agent's suites share: desired states to hand a reconciler, and driving passes until
//! it settles.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::sync::Arc;

use nexus_agent::cache::Cache;
use nexus_agent::reconcile::Reconciler;
use nexus_agent::runtime::Runtime;
use nexus_protocol::message::{Assignment, DesiredRun, DesiredState, ObservedWorkspace};
use nexus_protocol::model::{PortBinding, WorkspaceSpec};
use nexus_protocol::{HostId, WorkspaceName};
use tokio::sync::watch;

pub const IMAGE: &str = "nexus-test/busybox:latest";

/// A host id no other test (or test process) uses.
pub fn unique_host(test: &str) -> HostId {
    format!("t{}-{test}", std::process::id()).parse().unwrap()
}

pub fn name(value: &str) -> WorkspaceName {
    value.parse().unwrap()
}

pub fn assignment(
    workspace: &str,
    generation: u64,
    run: DesiredRun,
    ports: &[(u16, u16)],
    image: &str,
    command: &[&str],
) -> Assignment {
    Assignment {
        spec: WorkspaceSpec {
            image: image.into(),
            ports: nexus_fixtures::ports(&ports.iter().map(|&(c, _)| c).collect::<Vec<_>>()),
            env: BTreeMap::from([("NEXUS_TEST".into(), "1".into())]),
            command: nexus_fixtures::command(command),
            ..nexus_fixtures::spec(workspace)
        },
        owner: "ada".parse().unwrap(),
        generation,
        run,
        ports: ports
            .iter()
            .map(|&(container, host)| PortBinding { container, host })
            .collect(),
    }
}

pub fn desired(version: u64, assignments: Vec<Assignment>) -> DesiredState {
    DesiredState {
        version,
        assignments,
    }
}

pub struct Agent<R: Runtime> {
    pub reconciler: Reconciler<R>,
    pub reports: watch::Receiver<Vec<ObservedWorkspace>>,
}

impl<R: Runtime> Agent<R> {
    pub fn new(
        runtime: Arc<R>,
        host: &HostId,
        data_dir: &std::path::Path,
        max_ops: usize,
    ) -> Agent<R> {
        let (reconciler, reports) =
            Reconciler::new(runtime, host.clone(), max_ops, Cache::new(data_dir));
        Agent {
            reconciler,
            reports,
        }
    }

    /// Runs passes until one runs no step, and answers the last report. Fails the test if 20
    /// passes in a row still find work: a reconciler must settle.
    pub async fn settle(&mut self) -> Vec<ObservedWorkspace> {
        for _ in 0..20 {
            if !self.reconciler.pass().await {
                return self.report();
            }
        }
        panic!(
            "the reconciler did not settle in 20 passes: {:?}",
            self.report()
        );
    }

    pub fn report(&self) -> Vec<ObservedWorkspace> {
        self.reports.borrow().clone()
    }
}

/// The observed state of `workspace` in `report`.
pub fn observed<'a>(report: &'a [ObservedWorkspace], workspace: &str) -> &'a ObservedWorkspace {
    report
        .iter()
        .find(|o| o.name.as_str() == workspace)
        .unwrap_or_else(|| panic!("{workspace} is not in the report {report:?}"))
}
