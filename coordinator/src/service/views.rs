//! The answers' shapes: the state (and the leader's soft state) turned into the views the
//! protocol carries. Pure functions of what they are given; no requests are answered here.

use std::collections::BTreeMap;
use std::time::Duration;

use nexus_protocol::message::{
    ClusterStatus, FleetStats, HostLimits, HostView, LimitsView, MemberRole, MemberView,
    WorkspaceDetail,
};
use nexus_protocol::model::WorkspaceView;
use nexus_protocol::{HostId, NodeId};

use super::liveness::Liveness;
use crate::cluster::NodeView;
use crate::scheduler::is_in_flight;
use crate::state::{State, WorkspaceRecord};

/// `admin status` from a node's view: members' roles, health (heard from within `window`) and
/// replication progress.
pub fn cluster_status(
    view: &NodeView,
    addresses: &BTreeMap<NodeId, String>,
    window: Duration,
) -> ClusterStatus {
    let members = view
        .members
        .iter()
        .map(|member| {
            let me = member.id == view.id;
            let heard = view.last_heard.get(&member.id).copied();
            let role = if me {
                view.role
            } else if view.leader == Some(member.id) {
                MemberRole::Leader
            } else if !member.voter {
                MemberRole::Learner
            } else {
                MemberRole::Follower
            };
            MemberView {
                id: member.id,
                addr: addresses.get(&member.id).cloned().unwrap_or_default(),
                role,
                healthy: me || heard.is_some_and(|ago| ago < window),
                last_contact_ms: if me {
                    Some(0)
                } else {
                    heard.map(|ago| u64::try_from(ago.as_millis()).unwrap_or(u64::MAX))
                },
                matched_index: member.matched,
            }
        })
        .collect();
    ClusterStatus {
        node: view.id,
        leader: view.leader,
        term: view.term,
        commit_index: view.commit_index,
        applied_index: view.applied_index,
        members,
    }
}

pub(super) fn limits_view(state: &State) -> LimitsView {
    LimitsView {
        cluster: state.cluster_limits(),
        hosts: state
            .hosts()
            .keys()
            .map(|host| HostLimits {
                host: host.clone(),
                overrides: state.host_overrides(host),
                effective: state.limits_for(host),
            })
            .collect(),
    }
}

pub(super) fn fleet_stats(state: &State) -> FleetStats {
    let mut hosts = BTreeMap::new();
    let mut stats = FleetStats {
        hosts: Vec::new(),
        workspaces: Vec::new(),
        cpu_promised_millis: 0,
        cpu_capacity_millis: 0,
        memory_promised_bytes: 0,
        memory_capacity_bytes: 0,
        ports_allocated: u64::try_from(state.ports().len()).unwrap_or(u64::MAX),
        ports_total: 0,
        operations_in_flight: state
            .workspaces()
            .values()
            .filter(|w| is_in_flight(w.state))
            .count() as u64,
    };
    for (id, host) in state.hosts() {
        *hosts.entry(host.status).or_insert(0) += 1;
        let (cpu, memory) = state.reserved_on(id);
        let (cpu_capacity, memory_capacity) = state.capacity_of(id);
        stats.cpu_promised_millis += cpu;
        stats.memory_promised_bytes += memory;
        stats.cpu_capacity_millis += cpu_capacity;
        stats.memory_capacity_bytes += memory_capacity;
        stats.ports_total += u64::from(host.info.port_range.len());
    }
    let mut workspaces = BTreeMap::new();
    for workspace in state.workspaces().values() {
        *workspaces.entry(workspace.state).or_insert(0) += 1;
    }
    stats.hosts = hosts.into_iter().collect();
    stats.workspaces = workspaces.into_iter().collect();
    stats
}

pub(super) fn host_views(state: &State, liveness: &BTreeMap<HostId, Liveness>) -> Vec<HostView> {
    state
        .hosts()
        .iter()
        .map(|(id, record)| {
            let live = liveness.get(id);
            HostView {
                info: record.info.clone(),
                status: record.status,
                workspaces: state.workspaces_on(id),
                stats: live.and_then(|l| l.stats),
                last_heartbeat: live.map(|l| l.at),
            }
        })
        .collect()
}

/// A workspace as users see it.
pub(super) fn view_of(record: &WorkspaceRecord) -> WorkspaceView {
    WorkspaceView {
        name: record.spec.name.clone(),
        owner: record.owner.clone(),
        state: record.state,
        host: Some(record.host.clone()),
        image: record.spec.image.clone(),
        class: record.spec.class,
        ports: record.ports.clone(),
        created_at: record.created_at,
    }
}

pub(super) fn detail_of(record: &WorkspaceRecord) -> WorkspaceDetail {
    WorkspaceDetail {
        view: view_of(record),
        spec: record.spec.clone(),
        desired: record.desired,
        generation: record.generation,
        updated_at: record.updated_at,
        last_error: record.last_error.clone(),
        port_reassigned: record.port_reassigned,
    }
}
