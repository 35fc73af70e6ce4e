//! The roster note (`State::take_roster_changed`), which lets a heartbeat skip reading the state
//! while the hosts in the fleet and their being down are unchanged.

use nexus_protocol::identity::{Identity, Role};

use super::tests::{create, h, host};
use super::*;

/// The roster note moves exactly when a heartbeat's question (is the host in the fleet, and is
/// it down?) may have a new answer, and not for the fleet's everyday writes.
#[test]
fn the_roster_changes_with_hosts_coming_going_failing_and_returning_only() {
    let admin = Identity::User {
        name: UserName::new("alice").unwrap(),
        role: Role::Admin,
    };
    let mut state = State::default();
    assert!(state.take_roster_changed(), "a new state knows nothing");
    assert!(!state.take_roster_changed());
    let steps = [
        (Command::RegisterHost(host("h1", 20000, 20010)), true),
        (Command::RegisterHost(host("h1", 20000, 20020)), false),
        (create("a", "h1", &[]), false),
        (
            Command::SetHostStatus {
                host: h("h1"),
                status: HostStatus::Draining,
            },
            false,
        ),
        (
            Command::SetHostStatus {
                host: h("h1"),
                status: HostStatus::Down,
            },
            true,
        ),
        (Command::HostReturned { host: h("h1") }, true),
        (Command::HostReturned { host: h("h1") }, false),
        (Command::RegisterHost(host("h2", 20000, 20010)), true),
        (
            Command::RemoveHost {
                host: h("h2"),
                force: false,
                by: "alice".into(),
            },
            true,
        ),
    ];
    for (i, (command, moves)) in steps.into_iter().enumerate() {
        let proposal = Proposal {
            request_id: RequestId::from_u128(i as u128 + 1),
            at: Timestamp(1_000 + i as u64),
            proposer: admin.clone(),
            command,
        };
        assert_eq!(state.apply(&proposal), Outcome::Applied, "step {i}");
        assert_eq!(state.take_roster_changed(), moves, "step {i}");
    }
}
