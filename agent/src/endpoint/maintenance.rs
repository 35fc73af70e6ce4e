//! A maintenance run on this host (`HostRequest::Maintain`), for an admin or a coordinator.

use nexus_protocol::error::WireError;
use nexus_protocol::identity::Identity;
use nexus_protocol::message::Response;
use nexus_protocol::transport::Peer;

use super::{Endpoint, is_admin};
use crate::runtime::Runtime;

impl<R: Runtime> Endpoint<R> {
    /// Counts maintenance runs in `metrics`.
    pub fn with_maintenance(
        mut self,
        metrics: nexus_telemetry::maintenance::MaintenanceMetrics,
    ) -> Endpoint<R> {
        self.maintenance = Some(metrics);
        self
    }

    /// A maintenance run ([`crate::maintenance`]), for an admin or a coordinator (the leader's
    /// schedule): with the worktrees' and credentials' requests, the only ones a coordinator may
    /// make here.
    pub(super) async fn maintain(
        &self,
        peer: &Peer,
        request: nexus_protocol::maintenance::MaintenanceRequest,
    ) -> Result<Response, WireError> {
        let coordinator = matches!(peer.identity, Identity::Coordinator(_));
        if !is_admin(peer) && !coordinator {
            return Err(crate::diagnostics::admins_only());
        }
        let host = self.host()?;
        let desired = self.desired.borrow().clone();
        let mut report = crate::maintenance::run(
            self.runtime.as_ref(),
            format!("agent-{host}"),
            desired.as_ref(),
            request,
        )
        .await;
        crate::maintenance::record(
            &mut report,
            self.maintenance.as_ref(),
            &peer.identity.to_string(),
        );
        Ok(Response::Maintained(report))
    }
}
