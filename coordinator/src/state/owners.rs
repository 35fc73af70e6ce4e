//! A user's change of workspaces checked against their owner at apply ([`Command::Owned`]).
//!
//! The coordinator that takes a user's change reads the workspace first (is it there, is it
//! theirs) and proposes after; the entry can still commit seconds later, when a retried write's
//! first attempt is carried by the next leader. By then the name may belong to another user's
//! new workspace. So the entry says whose change it is (its proposer), and applying it checks
//! again: on every replica alike, from the state the entries before it left.

use nexus_protocol::WorkspaceName;
use nexus_protocol::error::ErrorCode;
use nexus_protocol::identity::{Identity, Role};

use super::{Command, Origin, Outcome, State, reject};

/// What a proposer may change.
enum Whose<'a> {
    /// An admin's: any workspace.
    Any,
    /// A user's: their own.
    Of(&'a Identity),
}

impl State {
    /// Applies `change` if the proposer owns every workspace it names (an admin owns all): a
    /// change of one workspace that is another's is refused `PERMISSION_DENIED`, as the
    /// coordinator's own check before proposing refuses it; a cleanup leaves others' out. A
    /// workspace that is not there is the change's own to answer.
    pub(super) fn as_owner(&mut self, origin: Origin<'_>, change: &Command) -> Outcome {
        let whose = match origin.proposer {
            Identity::User {
                role: Role::Admin, ..
            } => Whose::Any,
            user @ Identity::User { .. } => Whose::Of(user),
            other => {
                return reject(
                    ErrorCode::PermissionDenied,
                    format!("{other} may not do this: only users' changes are checked as theirs"),
                );
            }
        };
        match change {
            Command::DestroyWorkspace { name }
            | Command::RestartWorkspace { name }
            | Command::RepairWorkspace { name }
            | Command::SetDesiredRun { name, .. }
            | Command::SwitchWorkspace { name, .. }
            | Command::HoldWorkspace { name, .. } => {
                if self.owns(&whose, name) == Some(false) {
                    return reject(
                        ErrorCode::PermissionDenied,
                        format!(
                            "{} may not do this: workspace {name} is not theirs",
                            origin.proposer
                        ),
                    );
                }
                self.execute(origin, change)
            }
            Command::DestroyStopped { names } => {
                let names = names
                    .iter()
                    .filter(|name| self.owns(&whose, name) != Some(false))
                    .cloned()
                    .collect();
                self.execute(origin, &Command::DestroyStopped { names })
            }
            _ => reject(
                ErrorCode::InvalidArgument,
                "only a change of workspaces is checked against their owner",
            ),
        }
    }

    /// Whether `whose` may change workspace `name`; `None` when there is no such workspace.
    fn owns(&self, whose: &Whose<'_>, name: &WorkspaceName) -> Option<bool> {
        let workspace = self.workspaces.get(name)?;
        Some(match whose {
            Whose::Any => true,
            Whose::Of(Identity::User { name: user, .. }) => &workspace.owner == user,
            Whose::Of(_) => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use nexus_protocol::message::DesiredRun;
    use nexus_protocol::model::WorkspaceState;
    use nexus_protocol::{NodeId, RequestId, UserName};

    use super::super::tests::{create, h, host, observed, w};
    use super::super::{Proposal, Timestamp};
    use super::*;

    /// A state and the next request's number, applying commands as one proposer or another.
    struct Log {
        state: State,
        next: u128,
    }

    impl Log {
        fn by(&mut self, proposer: &Identity, command: Command) -> Option<ErrorCode> {
            self.next += 1;
            let proposal = Proposal {
                request_id: RequestId::from_u128(self.next),
                at: Timestamp(1_000 + self.next as u64),
                proposer: proposer.clone(),
                command,
            };
            super::super::tests::apply_checked(&mut self.state, &proposal)
        }

        fn run_of(&self, name: &str) -> (DesiredRun, WorkspaceState) {
            let workspace = &self.state.workspaces()[&w(name)];
            (workspace.desired, workspace.state)
        }
    }

    fn user(name: &str, role: Role) -> Identity {
        Identity::User {
            name: UserName::new(name).unwrap(),
            role,
        }
    }

    fn owned(command: Command) -> Command {
        Command::Owned(Box::new(command))
    }

    #[test]
    fn a_users_change_applies_only_to_workspaces_they_own() {
        let (alice, bob) = (user("alice", Role::User), user("bob", Role::User));
        let root = user("root", Role::Admin);
        let mut log = Log {
            state: State::default(),
            next: 0,
        };
        assert_eq!(
            log.by(&root, Command::RegisterHost(host("h1", 20000, 20010))),
            None
        );
        // Alice's (the fixture's owner).
        assert_eq!(log.by(&root, create("api", "h1", &[])), None);
        let stop = |name| Command::SetDesiredRun {
            name: w(name),
            run: DesiredRun::Stopped,
        };
        // Another user's late change of a workspace now alice's is refused, and changes nothing.
        for change in [
            Command::DestroyWorkspace { name: w("api") },
            stop("api"),
            Command::RestartWorkspace { name: w("api") },
            Command::RepairWorkspace { name: w("api") },
            Command::SwitchWorkspace {
                owner: UserName::new("bob").unwrap(),
                name: w("api"),
            },
            Command::HoldWorkspace {
                name: w("api"),
                held: true,
            },
        ] {
            assert_eq!(
                log.by(&bob, owned(change.clone())),
                Some(ErrorCode::PermissionDenied),
                "{change:?}"
            );
        }
        assert_eq!(
            log.run_of("api"),
            (DesiredRun::Running, WorkspaceState::Scheduled)
        );
        // Unchecked, the same change would have applied (a member of an older build proposes so).
        assert_eq!(log.by(&bob, stop("api")), None);
        assert_eq!(
            log.by(&bob, owned(stop("api"))),
            Some(ErrorCode::PermissionDenied)
        );
        // Its owner's change applies, and an admin's.
        assert_eq!(log.by(&alice, owned(stop("api"))), None);
        let generation = log.state.workspaces()[&w("api")].generation;
        let stopped = Command::RecordObserved {
            host: h("h1"),
            observed: vec![observed("api", generation, WorkspaceState::Stopped)],
        };
        assert_eq!(log.by(&Identity::Agent(h("h1")), stopped), None);
        // A cleanup leaves others' workspaces out, and takes the proposer's own.
        let cleanup = || {
            owned(Command::DestroyStopped {
                names: vec![w("api"), w("nobody")],
            })
        };
        assert_eq!(log.by(&bob, cleanup()), None);
        assert_eq!(log.run_of("api").1, WorkspaceState::Stopped);
        assert_eq!(log.by(&root, cleanup()), None);
        assert_eq!(log.run_of("api").1, WorkspaceState::Destroying);
        // A workspace that is not there is the change's own answer.
        assert_eq!(
            log.by(&bob, owned(Command::DestroyWorkspace { name: w("nobody") })),
            Some(ErrorCode::WorkspaceNotFound)
        );
        // Only users' changes are checked as theirs, and only changes of workspaces.
        let coordinator = Identity::Coordinator(NodeId::new(1).unwrap());
        assert_eq!(
            log.by(&coordinator, owned(stop("api"))),
            Some(ErrorCode::PermissionDenied)
        );
        assert_eq!(
            log.by(
                &root,
                owned(Command::RegisterHost(host("h2", 20000, 20010)))
            ),
            Some(ErrorCode::InvalidArgument)
        );
        assert!(log.state.hosts().get(&h("h2")).is_none());
    }
}
