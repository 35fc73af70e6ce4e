//! The answers' shapes: the state (and the leader's soft state) turned into the views the
//! protocol carries. Pure functions of what they are given; no requests are answered here.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::Duration;

use nexus_protocol::message::{
    ClusterStatus, FleetStats, HostLimits, HostView, LimitsView, MemberRole, MemberView,
    WorkspaceDetail,
};
use nexus_protocol::model::WorkspaceView;
use nexus_protocol::{HostId, NodeId, WorkspaceName};

use super::liveness::Liveness;
use crate::cluster::NodeView;
use crate::scheduler::is_in_flight;
use crate::state::{Map, State, WorkspaceRecord};

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
            .workspaces_by_state()
            .filter(|(state, _)| is_in_flight(*state))
            .map(|(_, count)| count)
            .sum(),
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

/// The most records one page looks at: a page of one user's workspaces in a large fleet ends there,
/// with the last one looked at as its next, rather than walking the whole fleet at once.
pub(super) const PAGE_SCAN_MAX: usize = 20_000;

/// A page of `records` in name order after `after`: up to `limit` of those `visible` lets
/// through, and the name to ask after next, `None` when no record follows.
pub(super) fn list_page<'a, T>(
    records: &'a Map<WorkspaceName, T>,
    after: Option<&WorkspaceName>,
    limit: usize,
    visible: impl Fn(&T) -> bool,
) -> (Vec<&'a T>, Option<WorkspaceName>) {
    let start = after.map_or(Bound::Unbounded, Bound::Excluded);
    let mut page = Vec::new();
    let mut last: Option<&WorkspaceName> = None;
    for (scanned, (name, record)) in records
        .range::<_, WorkspaceName>((start, Bound::Unbounded))
        .enumerate()
    {
        if page.len() >= limit || scanned >= PAGE_SCAN_MAX {
            return (page, last.cloned());
        }
        last = Some(name);
        if visible(record) {
            page.push(record);
        }
    }
    (page, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: usize) -> Map<WorkspaceName, usize> {
        (0..n)
            .map(|i| (format!("w{i:06}").parse().unwrap(), i))
            .collect()
    }

    /// Every page in turn, as `list_page` gives them.
    fn walk(
        records: &Map<WorkspaceName, usize>,
        limit: usize,
        visible: impl Fn(&usize) -> bool + Copy,
    ) -> (Vec<usize>, usize) {
        let (mut seen, mut pages, mut after) = (Vec::new(), 0, None);
        loop {
            let (page, next) = list_page(records, after.as_ref(), limit, visible);
            assert!(page.len() <= limit);
            seen.extend(page.into_iter().copied());
            pages += 1;
            match next {
                Some(next) => after = Some(next),
                None => return (seen, pages),
            }
        }
    }

    #[test]
    fn pages_give_every_record_once_in_order() {
        for (n, limit) in [(0, 3), (1, 1), (9, 3), (10, 3), (7, 100), (5, 5)] {
            let all = records(n);
            let (seen, pages) = walk(&all, limit, |_| true);
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "{n} by {limit}");
            assert_eq!(pages, n.div_ceil(limit).max(1), "{n} by {limit}");
        }
    }

    #[test]
    fn a_filtered_walk_stops_each_page_at_the_scan_limit_and_misses_nothing() {
        let all = records(PAGE_SCAN_MAX * 2 + 10);
        let (seen, pages) = walk(&all, 50, |i| i % 1_000 == 7);
        let wanted: Vec<usize> = (0..all.len()).filter(|i| i % 1_000 == 7).collect();
        assert_eq!(seen, wanted);
        assert_eq!(pages, 3, "one page per scan limit, the last one short");
        let (page, next) = list_page(&all, None, 50, |_| false);
        assert!(page.is_empty());
        assert_eq!(
            next,
            Some(format!("w{:06}", PAGE_SCAN_MAX - 1).parse().unwrap())
        );
    }
}
