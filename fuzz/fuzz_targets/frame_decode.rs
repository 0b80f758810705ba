//! Fuzzes the transport's frame decoder (`federact_federation::frame`).
//!
//! Any byte stream must decode to envelopes, a partial frame, or a specific
//! `FrameError` — never a panic, never an allocation past the frame limit —
//! and every envelope that decodes must survive an encode/decode round trip.

#![no_main]

use std::sync::OnceLock;

use federact_config::{NodeId, NodeKey};
use federact_federation::frame::{self, EnvelopeRef};
use libfuzzer_sys::fuzz_target;

const MAX: u32 = 1 << 16;

fn peer() -> &'static NodeId {
    static PEER: OnceLock<NodeId> = OnceLock::new();
    PEER.get_or_init(|| NodeKey::from_seed(&[1; 32]).id())
}

fuzz_target!(|data: &[u8]| {
    let peer = peer();
    let mut rest = data;
    while let Ok(Some((env, used))) = frame::decode(rest, MAX, peer) {
        assert!(used > frame::PREFIX_LEN && used <= rest.len());
        assert_eq!(env.from, *peer);
        let again = frame::encode(
            &EnvelopeRef {
                from: &env.from,
                to: &env.to,
                correlation: env.correlation,
                kind: env.kind,
                trace: &env.trace,
                body: &env.body,
            },
            MAX,
        )
        .expect("a decoded envelope re-encodes within the limit");
        let (back, n) = frame::decode(&again, MAX, peer)
            .expect("re-encoded envelope decodes")
            .expect("re-encoded envelope is whole");
        assert_eq!(n, again.len());
        assert_eq!(back, env);
        rest = &rest[used..];
    }
});
