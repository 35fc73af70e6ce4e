//! A one-node coordinator in the test's own process, with its Raft node at hand: for tests and
//! benchmarks that must put workspaces on a host before the workspace API and the scheduler
//! exist (they come with the Workspaces issue). Everything else is real: RocksDB on disk, QUIC
//! with mTLS, and agents connect to it as they would to a `nexus-coordinator` process.

use std::net::SocketAddr;

use nexus_coordinator::cluster::{Cluster, Consistency};
use nexus_coordinator::config::Args;
use nexus_coordinator::state::{Command, State};
use nexus_protocol::identity::Role;
use nexus_protocol::message::DesiredRun;
use nexus_protocol::model::{PortBinding, WorkspaceSpec};
use nexus_protocol::{HostId, NodeId, RequestId, WireError, WorkspaceName};
use tokio::sync::oneshot;

use crate::pki::{self, TestPki};
use crate::process::free_port;

#[derive(Debug)]
pub struct InProcessCoordinator {
    pub address: SocketAddr,
    pub cluster: Cluster,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl InProcessCoordinator {
    /// Starts node 1 of a one-node cluster on a free loopback port, with its data in the PKI's
    /// scratch space.
    pub async fn start(pki: &TestPki) -> InProcessCoordinator {
        InProcessCoordinator::start_on(pki, ([127, 0, 0, 1], free_port()).into()).await
    }

    /// Starts it on `address`, with the data of any earlier run from the same PKI's scratch
    /// space (as after a restart).
    pub async fn start_on(pki: &TestPki, address: SocketAddr) -> InProcessCoordinator {
        pki.issue(&pki::coordinator(1));
        let config = nexus_coordinator::Config::from_args(Args {
            node_id: Some(NodeId::new(1).expect("1 is a node id")),
            listen: Some(address),
            data_dir: Some(pki.scratch("coordinator-1")),
            tls_dir: Some(pki.dir().to_path_buf()),
            // Not the default port: tests run side by side.
            http_listen: Some("off".parse().expect("`off` is a listen setting")),
            ..Args::default()
        })
        .expect("a coordinator config");
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready, started) = oneshot::channel();
        let task = tokio::spawn(nexus_coordinator::run_with(
            config,
            async move {
                let _ = stopped.await;
            },
            move |address, cluster| {
                let _ = ready.send((address, cluster));
            },
        ));
        let (address, cluster) = started.await.expect("the coordinator started");
        // Wait for it to lead (a one-node cluster elects itself).
        crate::eventually(
            "the coordinator to lead",
            std::time::Duration::from_secs(20),
            || async { cluster.require_leader().await.ok() },
        )
        .await;
        InProcessCoordinator {
            address,
            cluster,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Commits `command` as an admin would.
    pub async fn propose(&self, command: Command) -> Result<(), WireError> {
        self.cluster
            .propose(
                RequestId::random(),
                pki::user("harness", Role::Admin),
                command,
            )
            .await
    }

    /// Reads the leader's state.
    pub async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&State) -> T + Send + 'static,
    ) -> T {
        self.cluster
            .read(Consistency::Linearizable, read)
            .await
            .expect("a read of the state")
    }

    /// Places a workspace on `host` with these (container, host) ports, running `command`.
    pub async fn place(
        &self,
        host: &HostId,
        name: &str,
        image: &str,
        ports: &[(u16, u16)],
        command: &[&str],
    ) -> Result<(), WireError> {
        let containers: Vec<u16> = ports.iter().map(|&(container, _)| container).collect();
        let spec = WorkspaceSpec {
            image: image.into(),
            ports: nexus_fixtures::ports(&containers),
            command: nexus_fixtures::command(command),
            host: Some(host.clone()),
            ..nexus_fixtures::spec(name)
        };
        self.propose(Command::CreateWorkspace {
            spec,
            owner: "harness".parse().expect("a user name"),
            host: host.clone(),
            ports: ports
                .iter()
                .map(|&(container, host)| PortBinding { container, host })
                .collect(),
        })
        .await
    }

    pub async fn set_run(&self, name: &str, run: DesiredRun) -> Result<(), WireError> {
        self.propose(Command::SetDesiredRun {
            name: WorkspaceName::new(name).expect("a workspace name"),
            run,
        })
        .await
    }

    pub async fn destroy(&self, name: &str) -> Result<(), WireError> {
        self.propose(Command::DestroyWorkspace {
            name: WorkspaceName::new(name).expect("a workspace name"),
        })
        .await
    }

    /// Stops it and waits until it has.
    pub async fn stop(mut self) {
        self.shut().await;
    }

    async fn shut(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for InProcessCoordinator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
