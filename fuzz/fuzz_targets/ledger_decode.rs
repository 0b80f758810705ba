//! Fuzzes the ledger's decoders with arbitrary bytes: transactions, blocks,
//! cross-chain proofs and genesis records must decode or fail with an error,
//! never panic, and whatever decodes must survive verification, the rules and
//! an encode/decode round trip without panicking.
//!
//! The check itself is `checks::ledger_decode` (`fuzz/checks.rs`), which the stable
//! replay test `tests/fuzz_smoke.rs` runs on every CI build as well.

#![no_main]

#[path = "../checks.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    checks::ledger_decode(data);
});
