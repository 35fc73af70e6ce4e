//! Applying a CA rotation's commands: it waits for the coordinators named and every host in the
//! state; a host removed is no longer waited for; late or early steps are refused identically on
//! every replica; the record survives a snapshot; a restore keeps the running cluster's.

use nexus_protocol::backup::BackupHeader;
use nexus_protocol::ca_rotation::CaPhase;
use nexus_protocol::identity::{Identity, Role};
use nexus_protocol::model::PortRange;
use nexus_protocol::seal::Sealed;

use super::*;

struct Log {
    state: State,
    next: u128,
}

impl Log {
    fn at(&mut self, secs: u64, command: Command) -> Option<ErrorCode> {
        self.next += 1;
        let proposal = Proposal {
            request_id: RequestId::from_u128(self.next),
            at: Timestamp::from_millis(secs * 1000),
            proposer: Identity::User {
                name: "root".parse().unwrap(),
                role: Role::Admin,
            },
            command,
        };
        super::tests::apply_checked(&mut self.state, &proposal)
    }

    fn phase(&self) -> Option<CaPhase> {
        self.state.ca_rotations().current().map(|r| r.phase)
    }
}

fn node(id: u64) -> NodeId {
    NodeId::new(id).unwrap()
}

fn agent(host: &str) -> Identity {
    Identity::Agent(host.parse().unwrap())
}

fn register(host: &str) -> Command {
    Command::RegisterHost(HostInfo {
        port_range: PortRange::new(20_000, 20_100).unwrap(),
        ..nexus_fixtures::host(host)
    })
}

fn start(new_ca: &str) -> Command {
    Command::StartCaRotation {
        new: NewCa {
            old_ca_pem: "-----BEGIN CERTIFICATE-----\nb2xk\n-----END CERTIFICATE-----\n".into(),
            old_ca: "old".into(),
            new_ca_pem: "-----BEGIN CERTIFICATE-----\nbmV3\n-----END CERTIFICATE-----\n".into(),
            new_ca: new_ca.into(),
            sealed_key: Sealed {
                key_id: "k1".into(),
                nonce: vec![0; 12],
                ciphertext: vec![7; 32],
            },
        },
        coordinators: vec![node(1), node(2)],
        by: "admin root".into(),
    }
}

fn step(identity: Identity, new_ca: &str, step: CaStep) -> Command {
    Command::CaProgress {
        identity,
        new_ca: new_ca.into(),
        step,
    }
}

fn started() -> Log {
    let mut log = Log {
        state: State::default(),
        next: 0,
    };
    assert_eq!(log.at(1, register("h1")), None);
    assert_eq!(log.at(1, register("h2")), None);
    assert_eq!(log.at(10, start("new")), None);
    log
}

#[test]
fn a_rotation_waits_for_the_coordinators_named_and_every_host() {
    let mut log = started();
    let parties: Vec<Identity> = log
        .state
        .ca_rotations()
        .current()
        .unwrap()
        .parties
        .iter()
        .cloned()
        .collect();
    assert_eq!(
        parties,
        [
            Identity::Coordinator(node(1)),
            Identity::Coordinator(node(2)),
            agent("h1"),
            agent("h2")
        ]
    );
    assert_eq!(
        log.at(11, start("other")),
        Some(ErrorCode::CaRotationInProgress)
    );
    for party in &parties {
        assert_eq!(log.at(12, step(party.clone(), "new", CaStep::Trusts)), None);
    }
    assert_eq!(log.phase(), Some(CaPhase::Reissue));
    // A late step of another rotation is refused, the same on every replica.
    assert_eq!(
        log.at(13, step(agent("h1"), "other", CaStep::Reissued)),
        Some(ErrorCode::NoCaRotation)
    );
    for party in parties {
        assert_eq!(log.at(14, step(party, "new", CaStep::Reissued)), None);
    }
    assert_eq!(log.phase(), None);
    assert_eq!(log.state.ca_rotations().last().unwrap().new_ca, "new");
    assert_eq!(
        log.at(15, Command::FinishCaRotation { by: "root".into() }),
        Some(ErrorCode::NoCaRotation)
    );
}

#[test]
fn a_host_removed_is_no_longer_waited_for() {
    let mut log = started();
    for party in [
        Identity::Coordinator(node(1)),
        Identity::Coordinator(node(2)),
        agent("h1"),
    ] {
        assert_eq!(log.at(11, step(party, "new", CaStep::Trusts)), None);
    }
    assert_eq!(log.phase(), Some(CaPhase::Trust));
    let remove = Command::RemoveHost {
        host: "h2".parse().unwrap(),
        force: false,
        by: "root".into(),
    };
    assert_eq!(log.at(12, remove), None);
    assert_eq!(log.phase(), Some(CaPhase::Reissue));
    assert!(
        log.state
            .ca_rotations()
            .current()
            .unwrap()
            .sealed_key
            .is_none()
    );
}

#[test]
fn the_record_survives_a_snapshot_and_a_restore_keeps_the_running_one() {
    let log = started();
    let bytes = log.state.to_snapshot().unwrap();
    let read = State::from_snapshot(&bytes).unwrap();
    assert_eq!(read.ca_rotations(), log.state.ca_rotations());

    // A backup made before the rotation brings back neither the old CA nor forgets this one.
    let mut running = started();
    let backup = State::default();
    let restore = Command::Restore {
        header: BackupHeader {
            id: "b1".into(),
            cluster: "ab".repeat(32),
            node: node(1),
            index: 5,
            term: 2,
            created_at: Timestamp::from_millis(1_000),
            software: "test".into(),
            state_format: STATE_FORMAT,
            counts: vec![],
        },
        state: backup.to_snapshot().unwrap(),
    };
    let before = running.state.ca_rotations().clone();
    assert_eq!(running.at(20, restore), None);
    assert_eq!(running.state.ca_rotations(), &before);
}
