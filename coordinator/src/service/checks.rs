//! What a request must be to be served: who may send it (by the identity in the caller's
//! certificate) and what it may hold (bounds on what agents report and users ask for). Checks
//! only; nothing here reads the state or answers a request.

use nexus_protocol::error::{ErrorCode, ErrorDetail, WireError};
use nexus_protocol::identity::IdentityKind;
use nexus_protocol::message::ObservedWorkspace;
use nexus_protocol::model::{WorkspaceSpec, WorkspaceState};
use nexus_protocol::transport::Peer;

/// At most this many entries in one report or stats message: a host holds 50 workspaces by
/// default, so more is a confused or hostile agent.
const MAX_ENTRIES: usize = 1_000;

/// The largest report, encoded, that becomes a Raft entry: a hostile or confused agent must not
/// put an entry in the log that the peers' frames cannot carry, nor grow the state without bound.
const MAX_REPORT_BYTES: usize = 1 << 20;
/// Per workspace: an error's message and output lines as stored in the state.
const MAX_MESSAGE_BYTES: usize = 4 << 10;
const MAX_LAST_LINES: usize = 50;
const MAX_PORTS: usize = 64;

/// The longest image reference a workspace may name.
const MAX_IMAGE_LEN: usize = 512;

pub(super) fn require(peer: &Peer, kinds: &[IdentityKind]) -> Result<(), WireError> {
    if kinds.contains(&peer.identity.kind()) {
        return Ok(());
    }
    let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    Err(denied(
        peer,
        &format!("this request needs the role {}", names.join(" or ")),
    ))
}

pub(super) fn denied(peer: &Peer, why: &str) -> WireError {
    WireError::new(
        ErrorCode::PermissionDenied,
        format!("{} may not do this: {why}", peer.identity),
    )
}

/// An agent's endpoint as it may say it: HOST:PORT, short, with a port.
pub(super) fn check_endpoint(address: &str) -> Result<(), WireError> {
    let port = address
        .rsplit_once(':')
        .and_then(|(host, port)| (!host.is_empty()).then_some(port))
        .and_then(|port| port.parse::<u16>().ok());
    if address.len() > 255 || port.is_none_or(|port| port == 0) {
        return Err(WireError::new(
            ErrorCode::InvalidArgument,
            format!("{address:.64?} is not HOST:PORT"),
        ));
    }
    Ok(())
}

/// Refuses a report an honest agent would not send: states only the coordinator sets, or fields
/// beyond what the state keeps.
pub(super) fn check_report(observed: &[ObservedWorkspace]) -> Result<(), WireError> {
    let invalid = |why: String| Err(WireError::new(ErrorCode::InvalidArgument, why));
    for report in observed {
        if !matches!(
            report.state,
            WorkspaceState::Starting
                | WorkspaceState::Running
                | WorkspaceState::Stopping
                | WorkspaceState::Stopped
                | WorkspaceState::Failed
                | WorkspaceState::Gone
        ) {
            return invalid(format!(
                "an agent may not report workspace {} {}: the coordinator sets that state",
                report.name, report.state
            ));
        }
        if report.ports.len() > MAX_PORTS {
            return invalid(format!("{} ports for {}", report.ports.len(), report.name));
        }
        if let Some(error) = &report.error {
            let lines = match &error.detail {
                Some(ErrorDetail::ContainerExited { last_lines, .. }) => last_lines.as_slice(),
                _ => &[],
            };
            if error.message.len() > MAX_MESSAGE_BYTES
                || lines.len() > MAX_LAST_LINES
                || lines.iter().any(|line| line.len() > MAX_MESSAGE_BYTES)
            {
                return invalid(format!(
                    "the error reported for {} is too long",
                    report.name
                ));
            }
        }
    }
    let limit = nexus_protocol::codec::CodecConfig::new(MAX_REPORT_BYTES).unwrap_or_default();
    if nexus_protocol::codec::encode(&observed, limit).is_err() {
        return invalid(format!("a report larger than {MAX_REPORT_BYTES} bytes"));
    }
    Ok(())
}

/// Refuses a spec no host could run, before it reaches the scheduler.
/// A `file://` repository is read from the host's own disk by its agent, which runs as root (any
/// repository there, other workspaces' mirrors included): only an admin may name one.
pub(super) fn check_repo_access(spec: &WorkspaceSpec, admin: bool) -> Result<(), WireError> {
    match &spec.repo {
        Some(repo) if repo.url.starts_with("file://") && !admin => Err(WireError::new(
            ErrorCode::PermissionDenied,
            "only an admin may create a workspace from a file:// repository (it is read from the host's disk as root); use the repository's https:// or ssh:// URL",
        )),
        _ => Ok(()),
    }
}

pub(super) fn check_spec(spec: &WorkspaceSpec) -> Result<(), WireError> {
    let invalid = |why: String| Err(WireError::new(ErrorCode::InvalidArgument, why));
    if spec.image.trim().is_empty() || spec.image.len() > MAX_IMAGE_LEN {
        return invalid(format!(
            "the image must be named (at most {MAX_IMAGE_LEN} characters)"
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for port in &spec.ports {
        if port.container == 0 || !seen.insert(port.container) {
            return invalid(format!(
                "container port {} is zero or given twice",
                port.container
            ));
        }
    }
    if let Some(key) = spec
        .env
        .keys()
        .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
    {
        return invalid(format!("invalid environment variable name {key:?}"));
    }
    if let Some(repo) = &spec.repo {
        repo.check()
            .map_err(|e| WireError::new(ErrorCode::InvalidArgument, e.0))?;
    }
    let bytes = crate::placer::spec_bytes(spec);
    if bytes > crate::placer::MAX_SPEC_BYTES {
        return invalid(format!(
            "the spec takes {bytes} bytes (image, environment, labels and command); at most {}",
            crate::placer::MAX_SPEC_BYTES
        ));
    }
    Ok(())
}

pub(super) fn too_many(entries: usize) -> Result<(), WireError> {
    if entries > MAX_ENTRIES {
        return Err(WireError::new(
            ErrorCode::InvalidArgument,
            format!("{entries} entries in one message; at most {MAX_ENTRIES}"),
        ));
    }
    Ok(())
}
