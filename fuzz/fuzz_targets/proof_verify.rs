//! Fuzzes cross-chain proof verification (`federact_ledger::proof`) with
//! arbitrary edits of genuine proofs: whatever decodes is verified without
//! panicking, and no edit makes a proof of something the validators did
//! not commit verify.
//!
//! The check itself is `checks::proof_verify` (`fuzz/checks.rs`), which the
//! stable replay test `tests/fuzz_smoke.rs` runs on every CI build as well.

#![no_main]

#[path = "../checks.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    checks::proof_verify(data);
});
