//! Golden bytes of the sync engine's wire enums (`nexus_sync::endpoint`'s `Request` and `Answer`,
//! and the enums inside them), as the carrier and the agent encode them: a bare bincode payload
//! (`codec::encode_payload`). They live here because the engine's crate depends on no codec. A
//! failure means a change would break deployed agents or CLIs: make it a new variant at the end
//! of its enum, never an edit of an old one. Regenerate only on purpose, with
//! `UPDATE_EXPECT=1 cargo nextest run -p nexus-cli golden`.

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use expect_test::{Expect, expect};
use nexus_protocol::codec;
use nexus_sync::delta::{Op, Signature};
use nexus_sync::endpoint::{
    Answer, Content, Refusal, RefusalCode, Request, SessionReport, SyncState,
};
use nexus_sync::history::{Seen, Since, Version};
use nexus_sync::{Change, Digest, Entry, RelPath, Side, Tree};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Encodes `message`, compares the bytes with `expect`, and decodes them back to the same value.
fn check<T>(message: &T, expect: Expect)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let payload = codec::encode_payload(message).unwrap();
    expect.assert_eq(&hex(&payload));
    assert_eq!(&codec::decode::<T>(&payload).unwrap(), message);
}

fn path(p: &str) -> RelPath {
    p.parse().unwrap()
}

fn file() -> Entry {
    Entry::File {
        digest: Digest([0xab; 32]),
        size: 3,
        executable: true,
    }
}

fn link() -> Entry {
    Entry::Symlink { target: "f".into() }
}

fn tree() -> Tree {
    [
        (path("d"), Entry::Dir),
        (path("d/f"), file()),
        (path("l"), link()),
    ]
    .into_iter()
    .collect()
}

fn version() -> Version {
    Version {
        epoch: 1,
        number: 2,
    }
}

#[test]
fn requests() {
    check(
        &Request::Scan {
            ignore: vec!["*.o".into()],
            ignore_vcs: true,
        },
        expect!["0001032a2e6f01"],
    );
    check(
        &Request::Read {
            path: path("a"),
            offset: 1,
            len: 2,
        },
        expect!["0101610102"],
    );
    check(&Request::Signature { path: path("a") }, expect!["020161"]);
    check(
        &Request::Stage {
            path: path("a"),
            offset: 3,
            bytes: vec![9],
        },
        expect!["030161030109"],
    );
    check(
        &Request::ScanSince {
            ignore: vec![],
            ignore_vcs: false,
            since: Some(version()),
        },
        expect!["050000010102"],
    );
    check(
        &Request::WaitChange {
            seen: 5,
            within_ms: 300,
        },
        expect!["0605fb2c01"],
    );
    check(
        &Request::Report(SessionReport {
            session: 300,
            state: SyncState::Conflicted,
            conflicts: 2,
            initial_sync_ms: Some(1_500),
            latencies_ms: vec![40, 250],
        }),
        expect!["07fb2c01030201fbdc050228fa"],
    );
    check(
        &Request::Report(SessionReport {
            session: 1,
            state: SyncState::Watching,
            conflicts: 0,
            initial_sync_ms: None,
            latencies_ms: vec![],
        }),
        expect!["070100000000"],
    );
}

#[test]
fn sync_states_in_wire_order() {
    let encoded: Vec<String> = SyncState::ALL
        .iter()
        .map(|state| hex(&codec::encode_payload(state).unwrap()))
        .collect();
    expect![[r#"
        [
            "00",
            "01",
            "02",
            "03",
            "04",
        ]
    "#]]
    .assert_debug_eq(&encoded);
}

#[test]
fn an_apply_with_each_kind_of_entry_and_content() {
    let change = |side| Change {
        side,
        path: path("d"),
        expected: vec![(path("d"), Entry::Dir)],
        desired: vec![
            (path("d"), Entry::Dir),
            (path("d/f"), file()),
            (path("d/l"), link()),
        ],
    };
    check(
        &Request::Apply {
            change: change(Side::Beta),
            contents: BTreeMap::from([(path("d/f"), Content::Whole(vec![1, 2, 3]))]),
        },
        expect![
            "04010164010164010301640103642f6600abababababababababababababababababababababababababababababababab030103642f6c0201660103642f660003010203"
        ],
    );
    check(
        &Request::Apply {
            change: change(Side::Alpha),
            contents: BTreeMap::from([(
                path("d/f"),
                Content::Delta {
                    block_size: 4,
                    ops: vec![Op::Copy { first: 0, count: 1 }, Op::Literal(vec![7])],
                },
            )]),
        },
        expect![
            "04000164010164010301640103642f6600abababababababababababababababababababababababababababababababab030103642f6c0201660103642f66010402000001010107"
        ],
    );
}

#[test]
fn answers() {
    check(
        &Answer::Tree(tree()),
        expect![
            "000301640103642f6600abababababababababababababababababababababababababababababababab0301016c020166"
        ],
    );
    check(&Answer::Bytes(vec![1, 2]), expect!["01020102"]);
    check(
        &Answer::Signature(Signature {
            block_size: 4,
            blocks: vec![(6, [0xcd; 16])],
        }),
        expect!["02040106cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd"],
    );
    check(&Answer::Done, expect!["03"]);
    check(&Answer::Stale(path("a")), expect!["040161"]);
    check(&Answer::Refused("no".into()), expect!["05026e6f"]);
    check(&Answer::Unavailable("busy".into()), expect!["060462757379"]);
    check(
        &Answer::Since(Since {
            version: version(),
            seen: Seen::Whole(tree()),
        }),
        expect![
            "070102000301640103642f6600abababababababababababababababababababababababababababababababab0301016c020166"
        ],
    );
    check(
        &Answer::Since(Since {
            version: version(),
            seen: Seen::Changed(vec![
                (path("d"), vec![(path("d"), Entry::Dir)]),
                (path("x"), vec![]),
            ]),
        }),
        expect!["0701020102016401016401017800"],
    );
    check(&Answer::Changes(300), expect!["08fb2c01"]);
    check(
        &Answer::RefusedWithCode(Refusal::new(RefusalCode::TooLarge, "no")),
        expect!["0903026e6f"],
    );
}

#[test]
fn refusal_codes_in_wire_order() {
    let encoded: Vec<String> = RefusalCode::ALL
        .iter()
        .map(|code| hex(&codec::encode_payload(code).unwrap()))
        .collect();
    expect![[r#"
        [
            "00",
            "01",
            "02",
            "03",
            "04",
            "05",
            "06",
        ]
    "#]]
    .assert_debug_eq(&encoded);
}
