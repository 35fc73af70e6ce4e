//! Properties of the codec over generated input: arbitrary bytes never panic the decoders and
//! never make them allocate past the limit; valid messages round-trip.

// Tests fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use nexus_protocol::codec::{self, CodecConfig};
use nexus_protocol::message::{Request, RequestFrame, WorkspaceRequest};
use nexus_protocol::model::{PortSpec, ResourceClass, WorkspaceSpec};
use nexus_protocol::{RequestId, WorkspaceName};
use proptest::prelude::*;

fn valid_frame() -> Vec<u8> {
    let spec = WorkspaceSpec {
        class: ResourceClass::Large,
        ports: nexus_fixtures::ports(&[80, 443]),
        env: BTreeMap::from([("A".into(), "1".into())]),
        ..nexus_fixtures::spec("api")
    };
    let frame = RequestFrame {
        request_id: RequestId::from_u128(9),
        request: Request::Workspace(WorkspaceRequest::Create(spec)),
    };
    codec::encode(&frame, CodecConfig::default()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        codec::decode_untrusted(&data, CodecConfig::default());
        codec::decode_untrusted(&data, CodecConfig::new(64).unwrap());
    }

    #[test]
    fn mutated_frames_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut frame = valid_frame();
        for (index, byte) in flips {
            let at = index.index(frame.len());
            frame[at] = byte;
        }
        codec::decode_untrusted(&frame, CodecConfig::default());
    }

    #[test]
    fn truncated_frames_are_incomplete_not_errors(cut in 0usize..60) {
        let frame = valid_frame();
        let cut = cut.min(frame.len() - 1);
        prop_assert!(codec::split_frame(&frame[..cut], CodecConfig::default()).unwrap().is_none());
    }

    #[test]
    fn requests_round_trip(
        name in "[a-z][a-z0-9-]{0,61}[a-z0-9]",
        image in "\\PC{0,40}",
        ports in proptest::collection::vec(any::<u16>(), 0..10),
        env in proptest::collection::btree_map("[A-Z_]{1,8}", "\\PC{0,16}", 0..5),
        id in any::<u128>(),
    ) {
        let spec = WorkspaceSpec {
            name: WorkspaceName::new(name).unwrap(),
            image,
            class: ResourceClass::Small,
            ports: ports.into_iter().map(|container| PortSpec { container }).collect(),
            env,
            labels: BTreeMap::new(),
            command: vec![],
            host: None,
            repo: None,
        };
        let message = RequestFrame {
            request_id: RequestId::from_u128(id),
            request: Request::Workspace(WorkspaceRequest::Create(spec)),
        };
        let frame = codec::encode(&message, CodecConfig::default()).unwrap();
        let (payload, consumed) = codec::split_frame(&frame, CodecConfig::default()).unwrap().unwrap();
        prop_assert_eq!(consumed, frame.len());
        prop_assert_eq!(codec::decode::<RequestFrame>(payload).unwrap(), message);
    }
}
