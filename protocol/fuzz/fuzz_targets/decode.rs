//! Feeds arbitrary bytes to every decoder a peer can reach. Run with
//! `cargo +nightly fuzz run decode` from `protocol/` (see docs/protocol.md).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexus_protocol::codec::{CodecConfig, decode_untrusted};

fuzz_target!(|data: &[u8]| {
    decode_untrusted(data, CodecConfig::default());
    if let Ok(small) = CodecConfig::new(64) {
        decode_untrusted(data, small);
    }
});
