//! Each workspace's lifecycle record (when it was last in use and why, whether it is held, its
//! lifetime's extension, the destroy notices posted for it, its own policy override) and the
//! fleet's policies, with the commands that change them. Recorded by `apply` (a user's start,
//! an agent's activity report, an admin's change, a policy's action), never by a clock: the time
//! is the proposal's or the agent's.
//!
//! Not here: the policies' decisions (`crate::policy`), which `apply` asks before a destroy.

use std::collections::{BTreeMap, BTreeSet};

use nexus_protocol::clock::Timestamp;
use nexus_protocol::debug::{Actor, EventKind};
use nexus_protocol::error::ErrorCode;
use nexus_protocol::message::{DesiredRun, LifecycleView};
use nexus_protocol::model::{Activity, ActivityKind, WorkspaceState};
use nexus_protocol::policy::{
    POLICY_SECS_MAX, PoliciesView, Policy, PolicyPatch, PolicyScope, Secs,
};
use nexus_protocol::{HostId, WorkspaceName};
use serde::{Deserialize, Serialize};

use super::{Origin, Outcome, Records, State, WorkspaceRecord, reject};
use crate::policy::{self, Subject};

/// What a workspace's lifecycle policies go by. Part of its record, so part of the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// When it was last in use, and how.
    pub last_activity: Activity,
    /// Exempt from every automatic action (`nexus workspace hold`).
    pub held: bool,
    /// How long admins pushed its lifetime out by, in seconds.
    pub extended_secs: u64,
    /// The destroy notices posted for it (ids in [`super::Notices`]) and when, oldest first.
    pub notices: Vec<(u64, Timestamp)>,
    /// Its own override of its host's and the cluster's policy.
    pub policy: PolicyPatch,
}

/// The fleet's policies: the cluster's, and each host's override of it (a workspace's own is in
/// its [`Lifecycle`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Policies {
    pub cluster: Policy,
    pub hosts: BTreeMap<HostId, PolicyPatch>,
}

/// The policies and the workspaces as the policy loop looks at them ([`State::policy_copy`]).
#[derive(Debug)]
pub struct PolicyCopy {
    policies: Policies,
    workspaces: Records,
}

impl PolicyCopy {
    /// Every workspace as its policies see it, with the policy in force on it.
    pub fn subjects(&self) -> impl Iterator<Item = (Subject, Policy)> + '_ {
        self.workspaces
            .iter()
            .map(|(name, w)| (w.subject(name), policy_in_force(&self.policies, w)))
    }
}

/// The policy in force on `workspace`: its override over its host's over the cluster's.
fn policy_in_force(policies: &Policies, workspace: &WorkspaceRecord) -> Policy {
    let host = policies
        .hosts
        .get(&workspace.host)
        .copied()
        .unwrap_or_default();
    workspace.lifecycle.policy.over(host.over(policies.cluster))
}

impl Lifecycle {
    /// A new workspace's: in use since its creation.
    pub fn created(at: Timestamp) -> Lifecycle {
        Lifecycle {
            last_activity: Activity {
                at,
                kind: ActivityKind::Created,
            },
            held: false,
            extended_secs: 0,
            notices: Vec::new(),
            policy: PolicyPatch::default(),
        }
    }

    /// Whether `activity` is newer than what is recorded, so that [`Lifecycle::touch`] keeps it.
    pub fn is_older_than(&self, activity: &Activity) -> bool {
        activity.at > self.last_activity.at
    }

    /// Keeps `activity` if it is newer than what is recorded (reports may come late or twice).
    pub fn touch(&mut self, activity: Activity) -> bool {
        if self.is_older_than(&activity) {
            self.last_activity = activity;
            true
        } else {
            false
        }
    }
}

impl WorkspaceRecord {
    /// What the policies see of it.
    pub fn subject(&self, name: &WorkspaceName) -> Subject {
        Subject {
            name: name.clone(),
            owner: self.owner.clone(),
            created_at: self.created_at,
            running: self.desired == DesiredRun::Running,
            destroying: self.state == WorkspaceState::Destroying,
            held: self.lifecycle.held,
            last_activity: self.lifecycle.last_activity,
            extended_secs: self.lifecycle.extended_secs,
            notices: self.lifecycle.notices.clone(),
        }
    }
}

impl State {
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// The policies as admins set them, for `nexus admin limits`.
    pub fn policies_view(&self) -> PoliciesView {
        PoliciesView {
            cluster: self.policies.cluster,
            hosts: self
                .policies
                .hosts
                .iter()
                .map(|(host, patch)| (host.clone(), *patch))
                .collect(),
            workspaces: self
                .overridden
                .iter()
                .filter_map(|name| {
                    Some((name.clone(), self.workspaces.get(name)?.lifecycle.policy))
                })
                .collect(),
        }
    }

    /// The policy in force on a workspace: its override over its host's over the cluster's.
    pub fn policy_for(&self, workspace: &WorkspaceRecord) -> Policy {
        policy_in_force(&self.policies, workspace)
    }

    /// The shortest policy duration in force anywhere (cluster, a host, a workspace's
    /// override), which paces the policy loop. Cheap: it looks only at overridden workspaces'
    /// policies, through their index.
    pub fn shortest_policy_secs(&self) -> Option<u64> {
        let cluster = self.policies.cluster;
        let hosts = self
            .policies
            .hosts
            .values()
            .map(|patch| patch.over(cluster));
        let workspaces = self
            .overridden
            .iter()
            .filter_map(|name| self.workspaces.get(name))
            .map(|w| self.policy_for(w));
        std::iter::once(cluster)
            .chain(hosts)
            .chain(workspaces)
            .filter_map(|policy| policy.shortest_secs())
            .min()
    }

    /// What the policy loop looks at: the workspaces' map shared with the state, not copied (in
    /// constant time), and the policies copied (the cluster's and the few hosts' overrides), so
    /// that the loop looks at a million workspaces off the Raft thread.
    pub fn policy_copy(&self) -> PolicyCopy {
        PolicyCopy {
            policies: self.policies.clone(),
            workspaces: self.workspaces.map_copy(),
        }
    }

    /// The `overridden` index, from the workspaces.
    pub(super) fn overrides_index(&self) -> BTreeSet<WorkspaceName> {
        self.workspaces
            .iter()
            .filter(|(_, w)| !w.lifecycle.policy.is_empty())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// `name`'s lifecycle for `nexus workspace inspect`, with its next automatic action.
    pub fn lifecycle_view(&self, name: &WorkspaceName) -> Option<LifecycleView> {
        let workspace = self.workspaces.get(name)?;
        let policy = self.policy_for(workspace);
        Some(LifecycleView {
            workspace: name.clone(),
            last_activity: workspace.lifecycle.last_activity,
            held: workspace.lifecycle.held,
            policy,
            policy_override: workspace.lifecycle.policy,
            extended_secs: workspace.lifecycle.extended_secs,
            next: policy::next(&workspace.subject(name), &policy),
        })
    }

    /// A user asked for `name` to run (start, restart, switch, repair): it is in use.
    pub(super) fn touch_started(&mut self, name: &WorkspaceName, at: Timestamp) {
        if let Some(workspace) = self.workspaces.get_mut(name) {
            workspace.lifecycle.touch(Activity {
                at,
                kind: ActivityKind::Start,
            });
        }
    }

    /// Changes the cluster's policy, or merges `patch` into a host's or a workspace's override.
    pub(super) fn set_policy(&mut self, scope: &PolicyScope, patch: &PolicyPatch) -> Outcome {
        if let Err(why) = patch.check() {
            return reject(ErrorCode::InvalidArgument, why.to_string());
        }
        match scope {
            PolicyScope::Cluster => self.policies.cluster = patch.over(self.policies.cluster),
            PolicyScope::Host(host) => {
                if !self.hosts.contains_key(host) {
                    return reject(ErrorCode::InvalidArgument, format!("no host {host}"));
                }
                let kept = self.policies.hosts.entry(host.clone()).or_default();
                *kept = kept.merge(*patch);
            }
            PolicyScope::Workspace(name) => {
                let Some(workspace) = self.workspaces.get_mut(name) else {
                    return reject(ErrorCode::WorkspaceNotFound, format!("no workspace {name}"));
                };
                workspace.lifecycle.policy = workspace.lifecycle.policy.merge(*patch);
                if workspace.lifecycle.policy.is_empty() {
                    self.overridden.remove(name);
                } else {
                    self.overridden.insert(name.clone());
                }
            }
        }
        Outcome::Applied
    }

    /// Holds `name` (exempt from every automatic action; its policy notices are cleared), or
    /// gives it back to its policies.
    pub(super) fn hold(&mut self, origin: Origin<'_>, name: &WorkspaceName, held: bool) -> Outcome {
        let Some(workspace) = self.workspaces.get_mut(name) else {
            return reject(ErrorCode::WorkspaceNotFound, format!("no workspace {name}"));
        };
        if workspace.lifecycle.held == held {
            return Outcome::Applied;
        }
        workspace.lifecycle.held = held;
        if held {
            self.clear_policy_notices(name);
        }
        let kind = if held {
            EventKind::Held
        } else {
            EventKind::Released
        };
        let actor = Actor::Identity(origin.proposer.clone());
        self.record_by(name, origin, actor, kind, None);
        Outcome::Applied
    }

    /// Pushes `name`'s lifetime out by `by_secs`; the notices of the destroy it postpones are
    /// cleared.
    pub(super) fn extend_lifetime(
        &mut self,
        origin: Origin<'_>,
        name: &WorkspaceName,
        by_secs: u64,
    ) -> Outcome {
        let Some(workspace) = self.workspaces.get_mut(name) else {
            return reject(ErrorCode::WorkspaceNotFound, format!("no workspace {name}"));
        };
        let extended = workspace.lifecycle.extended_secs.saturating_add(by_secs);
        if by_secs == 0 || extended > POLICY_SECS_MAX {
            return reject(
                ErrorCode::InvalidArgument,
                format!(
                    "an extension is more than 0 and at most {} in all",
                    Secs(POLICY_SECS_MAX)
                ),
            );
        }
        workspace.lifecycle.extended_secs = extended;
        self.clear_policy_notices(name);
        let actor = Actor::Identity(origin.proposer.clone());
        self.record_by(name, origin, actor, EventKind::Extended { by_secs }, None);
        Outcome::Applied
    }

    /// Stops those of `stops` still running, not held and idle at least their duration (the
    /// decision is checked again here, at the proposal's time: a start or a hold since wins).
    /// `by_policy`: the inactivity policy's, else the proposer's bulk stop.
    pub(super) fn stop_idle(
        &mut self,
        origin: Origin<'_>,
        stops: &[(WorkspaceName, u64)],
        by_policy: bool,
    ) -> Outcome {
        for (name, idle_for_secs) in stops {
            let Some(workspace) = self.workspaces.get_mut(name) else {
                continue;
            };
            let idle = origin
                .at
                .saturating_since(workspace.lifecycle.last_activity.at);
            if workspace.lifecycle.held
                || workspace.desired != DesiredRun::Running
                || workspace.state == WorkspaceState::Destroying
                || idle.as_secs() < *idle_for_secs
            {
                continue;
            }
            workspace.desired = DesiredRun::Stopped;
            workspace.restart_pending = false;
            workspace.updated_at = origin.at;
            let host = workspace.host.clone();
            self.bump(&host);
            let wanted = EventKind::Wanted(DesiredRun::Stopped);
            if by_policy {
                let reason = format!("stopped by policy: inactive for {}", Secs(*idle_for_secs));
                self.record_by(
                    name,
                    origin,
                    policy_actor("inactivity"),
                    wanted,
                    Some(reason),
                );
            } else {
                let reason = format!("stopped by an admin: idle for {}", Secs(*idle_for_secs));
                self.record_asked(name, origin, wanted, Some(reason));
            }
        }
        Outcome::Applied
    }

    /// Destroys `name` by the lifetime policy, if that is still due at the proposal's time (not
    /// held, extended or changed since the loop decided).
    pub(super) fn policy_destroy(
        &mut self,
        origin: Origin<'_>,
        name: &WorkspaceName,
        reason: &str,
    ) -> Outcome {
        let Some(workspace) = self.workspaces.get(name) else {
            return reject(ErrorCode::WorkspaceNotFound, format!("no workspace {name}"));
        };
        let policy = self.policy_for(workspace);
        if !policy::destroy_due(&workspace.subject(name), &policy, origin.at) {
            return reject(
                ErrorCode::InvalidArgument,
                format!("a destroy of {name} by policy is not due"),
            );
        }
        let Some(workspace) = self.workspaces.get_mut(name) else {
            return Outcome::Applied;
        };
        let from = workspace.state;
        workspace.state = WorkspaceState::Destroying;
        self.tally
            .moved(&workspace.host, Some(from), Some(workspace.state));
        workspace.desired = DesiredRun::Stopped;
        workspace.restart_pending = false;
        workspace.updated_at = origin.at;
        let host = workspace.host.clone();
        self.bump(&host);
        self.clear_policy_notices(name);
        let wanted = EventKind::Wanted(DesiredRun::Absent);
        self.record_by(
            name,
            origin,
            policy_actor("lifetime"),
            wanted,
            Some(reason.to_string()),
        );
        Outcome::Applied
    }

    /// A policy notice about `name` was posted: its record keeps the id and time, which the
    /// lifetime policy goes by, and its events the text.
    pub(super) fn noted(&mut self, origin: Origin<'_>, name: &WorkspaceName, id: u64, text: &str) {
        let Some(workspace) = self.workspaces.get_mut(name) else {
            return;
        };
        workspace.lifecycle.notices.push((id, origin.at));
        let reason = Some(text.to_string());
        self.record_by(
            name,
            origin,
            policy_actor("lifetime"),
            EventKind::Noticed,
            reason,
        );
    }

    /// Clears `name`'s policy notices (held, extended, destroyed).
    pub(super) fn clear_policy_notices(&mut self, name: &WorkspaceName) {
        let Some(workspace) = self.workspaces.get_mut(name) else {
            return;
        };
        let ids: Vec<u64> = workspace
            .lifecycle
            .notices
            .drain(..)
            .map(|(id, _)| id)
            .collect();
        self.clear_notices(&ids);
    }

    /// Records what `host`'s agent saw its workspaces used for. A workspace no longer known, or
    /// not on that host, is skipped: its report crossed its destroy, or an agent spoke for
    /// another host's workspace.
    pub(super) fn record_activity(
        &mut self,
        host: &HostId,
        activity: &[(WorkspaceName, Activity)],
    ) -> Outcome {
        for (name, activity) in activity {
            // Looked at before it is changed: a change moves the host's epoch, which a repeated
            // report is answered by, and most activity is not newer than what is kept.
            let newer = self.workspaces.get(name).is_some_and(|workspace| {
                &workspace.host == host && workspace.lifecycle.is_older_than(activity)
            });
            if newer && let Some(workspace) = self.workspaces.get_mut(name) {
                workspace.lifecycle.touch(*activity);
            }
        }
        Outcome::Applied
    }
}

fn policy_actor(name: &str) -> Actor {
    Actor::Policy(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: u64, kind: ActivityKind) -> Activity {
        Activity {
            at: Timestamp::from_millis(millis),
            kind,
        }
    }

    #[test]
    fn only_newer_activity_is_kept() {
        let mut lifecycle = Lifecycle::created(Timestamp::from_millis(10));
        assert!(lifecycle.touch(at(20, ActivityKind::Exec)));
        assert!(!lifecycle.touch(at(15, ActivityKind::Logs)));
        assert!(!lifecycle.touch(at(20, ActivityKind::Logs)));
        assert_eq!(lifecycle.last_activity, at(20, ActivityKind::Exec));
    }
}
