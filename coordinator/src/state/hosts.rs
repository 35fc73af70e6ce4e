//! The hosts table: registering a host, its status (an admin's word, or `Down` while it is
//! silent, which loses its workspaces until it returns), and what each host holds and can take
//! (its usage, capacity, operations in flight, and the fit rules asked of it).
//!
//! Removing a host (`nexus admin host remove`) forgets it and, with `force`, its workspaces, and
//! shuts its agent's certificates out (the deny list, `security`).
//!
//! Not here: the fit rules themselves (`crate::fit`), the limits in force on a host (`limits`),
//! and the heartbeats that decide a host is down (the service's soft state).

use std::collections::{BTreeMap, BTreeSet};

use nexus_protocol::clock::Timestamp;
use nexus_protocol::debug::EventKind;
use nexus_protocol::error::ErrorCode;
use nexus_protocol::identity::Identity;
use nexus_protocol::model::{HostInfo, HostStatus, ResourceClass, WorkspaceState};
use nexus_protocol::{HostId, WorkspaceName};

use super::{HostRecord, Map, Origin, Outcome, State, reject};
use crate::fit::{HostFacts, Unfit};

impl State {
    /// Every known host, by id.
    pub fn hosts(&self) -> &Map<HostId, HostRecord> {
        &self.hosts
    }

    /// Every host's id, in order.
    pub fn host_ids(&self) -> &[HostId] {
        &self.host_ids
    }

    /// How many workspaces `host` holds (every state but gone).
    pub fn workspaces_on(&self, host: &HostId) -> u32 {
        self.usage.get(host).map_or(0, |u| u.workspaces)
    }

    /// What `host`'s workspaces are promised: (CPU millis, memory bytes), by their classes.
    pub fn reserved_on(&self, host: &HostId) -> (u64, u64) {
        let usage = self.usage.get(host).copied().unwrap_or_default();
        (usage.cpu_millis, usage.memory_bytes)
    }

    /// What `host` may be promised: (CPU millis, memory bytes), its own times its overcommit.
    pub fn capacity_of(&self, host: &HostId) -> (u64, u64) {
        self.facts(host).map_or((0, 0), |facts| facts.capacity())
    }

    /// What the fit rules need of `host`, if it is known.
    pub fn facts(&self, host: &HostId) -> Option<HostFacts<'_>> {
        let record = self.hosts.get(host)?;
        Some(HostFacts {
            info: &record.info,
            status: record.status,
            limits: self.limits_for(host),
            usage: self.usage.get(host).copied().unwrap_or_default(),
        })
    }

    /// Whether `host` can take one more workspace of `class` with `ports` host ports; the first
    /// reason it cannot, if not. (An unknown host is the caller's to refuse.)
    pub fn unfit(
        &self,
        host: &HostId,
        class: ResourceClass,
        ports: u32,
        now: Timestamp,
    ) -> Option<Unfit> {
        self.facts(host)?
            .unfit(class, ports, || self.free_ports_on(host, now))
    }

    /// Whether `host` is known and below its workspace limit: what the `room` index keeps.
    fn has_room(&self, host: &HostId) -> bool {
        self.hosts.contains_key(host)
            && self.workspaces_on(host) < self.limits_for(host).max_workspaces_per_host
    }

    /// Puts `host` in the `room` index or takes it out, after its workspaces, its limits or its
    /// record changed.
    pub(super) fn recheck_room(&mut self, host: &HostId) {
        if !self.has_room(host) {
            self.room.remove(host);
        } else if !self.room.contains(host) {
            self.room.insert(host.clone());
        }
    }

    /// The `room` index, counted from the hosts.
    pub(super) fn room_index(&self) -> BTreeSet<HostId> {
        let hosts = self.hosts.keys();
        hosts.filter(|host| self.has_room(host)).cloned().collect()
    }

    /// How many of `host`'s workspaces are on their way somewhere (see
    /// [`crate::fit::is_in_flight`]).
    pub fn in_flight_on(&self, host: &HostId) -> u32 {
        self.tally.in_flight.get(host).copied().unwrap_or(0)
    }

    /// How many workspaces are in each state (every state, at zero too), without walking them.
    pub fn workspaces_by_state(&self) -> impl Iterator<Item = (WorkspaceState, u64)> + '_ {
        WorkspaceState::ALL.into_iter().zip(self.tally.by_state)
    }

    /// The `tally`, counted from the workspaces.
    pub(super) fn tally_index(&self) -> Tally {
        let mut tally = Tally::default();
        for workspace in self.workspaces.values() {
            tally.moved(&workspace.host, None, Some(workspace.state));
        }
        tally
    }

    /// Whether the roster (the hosts in the fleet, and which of them are down) changed since the
    /// last call: always, the first time.
    pub fn take_roster_changed(&mut self) -> bool {
        std::mem::replace(&mut self.roster_changed.0, false)
    }

    /// Adds a host, or updates the facts of a known one (its status is kept).
    pub(super) fn register_host(&mut self, at: Timestamp, info: &HostInfo) -> Outcome {
        if info.port_range.is_empty() || info.port_range.first == 0 {
            return reject(
                ErrorCode::InvalidArgument,
                format!("invalid port range {}", info.port_range),
            );
        }
        match self.hosts.get_mut(&info.host_id) {
            Some(host) => host.info = info.clone(),
            None => {
                let record = HostRecord {
                    info: info.clone(),
                    status: HostStatus::Ready,
                    admin_status: HostStatus::Ready,
                    registered_at: at,
                };
                self.hosts.insert(info.host_id.clone(), record);
                self.roster_changed.0 = true;
                if let Err(at) = self.host_ids.binary_search(&info.host_id) {
                    self.host_ids.insert(at, info.host_id.clone());
                }
                self.recheck_room(&info.host_id);
            }
        }
        Outcome::Applied
    }

    /// `Down` (the leader found the host silent) loses its workspaces; any other status is its
    /// admins' word.
    pub(super) fn set_host_status(
        &mut self,
        origin: Origin<'_>,
        host: &HostId,
        status: HostStatus,
    ) -> Outcome {
        let Some(record) = self.hosts.get_mut(host) else {
            return reject(ErrorCode::InvalidArgument, format!("no host {host}"));
        };
        if status == HostStatus::Down {
            record.status = HostStatus::Down;
            self.roster_changed.0 = true;
            self.mark_lost(host, true, origin);
        } else {
            // An admin's word holds from now on, and is what a down host returns to.
            record.admin_status = status;
            if record.status != HostStatus::Down {
                record.status = status;
            }
        }
        Outcome::Applied
    }

    /// A down host heartbeats again: it returns to the status its admins gave it, and its lost
    /// workspaces to what its agent reports.
    pub(super) fn host_returned(&mut self, origin: Origin<'_>, host: &HostId) -> Outcome {
        let Some(record) = self.hosts.get_mut(host) else {
            return reject(ErrorCode::InvalidArgument, format!("no host {host}"));
        };
        if record.status == HostStatus::Down {
            record.status = record.admin_status;
            self.roster_changed.0 = true;
            self.mark_lost(host, false, origin);
        }
        Outcome::Applied
    }

    /// Every workspace on a host that went down is lost (its files live there); when the host
    /// comes back they return to what their agent reports. Each change is the failure detector's
    /// event.
    fn mark_lost(&mut self, host: &HostId, down: bool, origin: Origin<'_>) {
        let mut changed = Vec::new();
        let names = self.on_host.get(host).into_iter().flatten();
        for name in names {
            let Some(workspace) = self.workspaces.get_mut(name) else {
                continue;
            };
            let from = workspace.state;
            if down && workspace.state != WorkspaceState::Destroying {
                workspace.state = WorkspaceState::Lost;
                workspace.updated_at = origin.at;
            } else if !down && workspace.state == WorkspaceState::Lost {
                workspace.state = WorkspaceState::Scheduled;
                workspace.updated_at = origin.at;
            }
            if workspace.state != from {
                self.tally.moved(host, Some(from), Some(workspace.state));
                changed.push((name.clone(), from, workspace.state));
            }
        }
        let reason = if down {
            format!("host {host} is down (silent past its TTL); its files live there")
        } else {
            format!("host {host} heartbeats again")
        };
        for (name, from, to) in changed {
            let kind = EventKind::State { from, to };
            self.record_detected(&name, origin, kind, reason.clone());
        }
    }
}

impl State {
    /// Takes a host out of the fleet and shuts its agent's certificates out. Refused while the
    /// host holds workspaces unless `force`, which forgets them with it (their files stay on the
    /// host, which no longer answers to the cluster).
    pub(super) fn remove_host(
        &mut self,
        origin: Origin<'_>,
        host: &HostId,
        force: bool,
        by: &str,
    ) -> Outcome {
        if !self.hosts.contains_key(host) {
            return reject(
                ErrorCode::InvalidArgument,
                format!("no host {host} is in the fleet: `nexus admin hosts` shows them"),
            );
        }
        let names: Vec<WorkspaceName> = self
            .on_host
            .get(host)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        if !names.is_empty() && !force {
            return reject(
                ErrorCode::InvalidArgument,
                format!(
                    "host {host} holds {} workspace(s) ({}): drain it (`nexus admin host drain {host}`) or destroy them first, or pass --force to forget them with the host",
                    names.len(),
                    names
                        .iter()
                        .take(5)
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        for name in &names {
            self.clear_policy_notices(name);
            self.forget_workspace(name);
        }
        self.hosts.remove(host);
        self.roster_changed.0 = true;
        if let Ok(at) = self.host_ids.binary_search(host) {
            self.host_ids.remove(at);
        }
        self.host_limits.remove(host);
        self.room.remove(host);
        self.policies.hosts.remove(host);
        self.foreign_ports.retain(|(on, _), _| on != host);
        // Its watch, if any, wakes to an empty desired state; the version keeps counting, so a
        // host re-admitted under the same id never sees an older version again.
        self.bump(host);
        let reason = if names.is_empty() {
            "host removed".to_string()
        } else {
            format!("host removed with {} workspace(s) (--force)", names.len())
        };
        self.deny(origin.at, &Identity::Agent(host.clone()), by, &reason)
    }

    /// Forgets a workspace and everything kept of it: its record, ports, usage, index entry and
    /// events. Its host's desired state is the caller's to bump.
    pub(super) fn forget_workspace(&mut self, name: &WorkspaceName) {
        let Some(gone) = self.workspaces.remove(name) else {
            return;
        };
        let host = &gone.host;
        self.tally.moved(host, Some(gone.state), None);
        for binding in &gone.ports {
            self.ports.remove(&(host.clone(), binding.host));
        }
        if let Some(usage) = self.usage.get_mut(host) {
            usage.remove(gone.spec.class);
            if usage.workspaces == 0 {
                self.usage.remove(host);
            }
        }
        self.recheck_room(host);
        if let Some(names) = self.on_host.get_mut(host) {
            names.remove(name);
            if names.is_empty() {
                self.on_host.remove(host);
            }
        }
        self.overridden.remove(name);
        self.forget_events(name);
    }
}

/// Whether the roster changed since the driver last looked ([`State::take_roster_changed`]):
/// true in a state just made, read or restored, since nothing is known of what changed.
#[derive(Debug, Clone)]
pub(super) struct RosterChanged(bool);

impl Default for RosterChanged {
    fn default() -> RosterChanged {
        RosterChanged(true)
    }
}

impl PartialEq for RosterChanged {
    fn eq(&self, _: &RosterChanged) -> bool {
        true
    }
}

/// What the state counts of its workspaces, kept wherever one comes, goes or changes state
/// ([`Tally::moved`]), so that what is asked of every workspace costs a lookup rather than a
/// walk: the scheduler's busy check, per host, on every placement; the metrics' count by state,
/// on every scrape (a walk of a million workspaces on the Raft thread). Derived like `on_host`:
/// counted afresh when a state is read or restored, and checked against a count by the
/// invariants.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Tally {
    /// Per host, how many of its workspaces are on their way somewhere
    /// ([`crate::fit::is_in_flight`]); a host with none has no entry.
    in_flight: BTreeMap<HostId, u32>,
    /// How many workspaces are in each state, in [`WorkspaceState::ALL`]'s order.
    by_state: [u64; WorkspaceState::ALL.len()],
}

impl Tally {
    /// Keeps the tally true across a workspace of `host` going from `from` to `to` (`None`: not
    /// there, before its creation or after its removal).
    pub(super) fn moved(
        &mut self,
        host: &HostId,
        from: Option<WorkspaceState>,
        to: Option<WorkspaceState>,
    ) {
        let slot = |state: WorkspaceState| WorkspaceState::ALL.iter().position(|s| *s == state);
        if let Some(count) = from.and_then(slot).map(|at| &mut self.by_state[at]) {
            *count = count.saturating_sub(1);
        }
        if let Some(count) = to.and_then(slot).map(|at| &mut self.by_state[at]) {
            *count += 1;
        }
        let counts = |state: Option<WorkspaceState>| state.is_some_and(crate::fit::is_in_flight);
        match (counts(from), counts(to)) {
            (false, true) => *self.in_flight.entry(host.clone()).or_insert(0) += 1,
            (true, false) => {
                if let Some(count) = self.in_flight.get_mut(host) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        self.in_flight.remove(host);
                    }
                }
            }
            _ => {}
        }
    }
}
