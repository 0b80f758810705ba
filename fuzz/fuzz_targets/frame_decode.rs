//! Fuzzes the transport's frame decoder (`federact_federation::frame`).
//!
//! Any byte stream must decode to envelopes, a partial frame, or a specific
//! `FrameError` — never a panic, never an allocation past the frame limit —
//! and every envelope that decodes must survive an encode/decode round trip.
//!
//! The check itself is `checks::frame_decode` (`fuzz/checks.rs`), which the stable
//! replay test `tests/fuzz_smoke.rs` runs on every CI build as well.

#![no_main]

#[path = "../checks.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    checks::frame_decode(data);
});
