//! The snapshot's copy: what it keeps while the state goes on, and the bytes of the tables it
//! shares.

use nexus_protocol::error::ErrorDetail;
use nexus_protocol::identity::{Identity, Role};

use super::tests::{check, create, h, host, observed, w};
use super::*;

/// A snapshot's copy encodes as the state did when it was copied, whatever the state does after
/// (the copy shares the tables' unchanged parts, and a change copies its own); and those tables
/// encode as std's maps do, so the snapshot format is unchanged by them.
#[test]
fn a_snapshot_copy_keeps_the_state_as_it_was_copied() {
    let (_, mut state) = check(vec![
        Command::RegisterHost(host("h1", 20000, 20010)),
        create("a", "h1", &[(8080, 20001)]),
        create("b", "h1", &[]),
        Command::RecordObserved {
            host: h("h1"),
            observed: vec![observed("a", 1, WorkspaceState::Running)],
        },
    ]);
    let bytes = state.to_snapshot().unwrap();
    let copy = state.snapshot_copy();
    assert_eq!(copy.to_snapshot().unwrap(), bytes);
    for command in [
        create("c", "h1", &[(8080, 20002)]),
        Command::SetDesiredRun {
            name: w("a"),
            run: DesiredRun::Stopped,
        },
        Command::DestroyWorkspace { name: w("b") },
    ] {
        let proposal = Proposal {
            request_id: RequestId::random(),
            at: Timestamp(2_000),
            proposer: Identity::User {
                name: UserName::new("alice").unwrap(),
                role: Role::Admin,
            },
            command,
        };
        assert_eq!(state.apply(&proposal), Outcome::Applied);
    }
    assert_ne!(state.to_snapshot().unwrap(), bytes);
    assert_eq!(
        copy.to_snapshot().unwrap(),
        bytes,
        "the copy moved with the state"
    );

    fn encode<T: Serialize>(value: &T) -> Vec<u8> {
        nexus_protocol::codec::encode_payload(value).unwrap()
    }
    let pairs = [("x".to_string(), 1u32), ("y".to_string(), 2)];
    assert_eq!(
        encode(&pairs.iter().cloned().collect::<Map<String, u32>>()),
        encode(&pairs.iter().cloned().collect::<BTreeMap<_, _>>())
    );
    assert_eq!(
        encode(&pairs.iter().cloned().collect::<Set<(String, u32)>>()),
        encode(&pairs.iter().cloned().collect::<BTreeSet<_>>())
    );
}

/// The workspaces' records are kept behind pointers and a rejection's error boxed, to save
/// memory; both encode as the values themselves did inline, so snapshots (and the journal in
/// them) are the bytes they were.
#[test]
fn records_and_outcomes_behind_pointers_encode_as_they_did_inline() {
    fn encode<T: Serialize>(value: &T) -> Vec<u8> {
        nexus_protocol::codec::encode_payload(value).unwrap()
    }
    let (_, state) = check(vec![
        Command::RegisterHost(host("h1", 20000, 20010)),
        create("a", "h1", &[(8080, 20001)]),
        create("b", "h1", &[]),
    ]);
    let inline: BTreeMap<WorkspaceName, WorkspaceRecord> = state
        .workspaces()
        .iter()
        .map(|(name, record)| (name.clone(), record.clone()))
        .collect();
    assert_eq!(inline.len(), 2);
    assert_eq!(encode(state.workspaces()), encode(&inline));

    /// [`Outcome`] as it was, with the error inline.
    #[derive(Serialize)]
    enum Inline {
        Applied,
        Rejected(WireError),
    }
    let error = WireError::new(ErrorCode::PortConflict, "port 20001 on host h1 is taken")
        .with_detail(ErrorDetail::PortConflict { port: 20001 });
    assert_eq!(
        encode(&Outcome::rejected(error.clone())),
        encode(&Inline::Rejected(error))
    );
    assert_eq!(encode(&Outcome::Applied), encode(&Inline::Applied));
}
