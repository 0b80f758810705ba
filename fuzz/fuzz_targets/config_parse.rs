//! Fuzzes the federation file parser with arbitrary text: it must load or
//! fail with a located error, never panic, and whatever loads must have a
//! consistent view of its nodes and chains.
//!
//! The check itself is `checks::config_parse` (`fuzz/checks.rs`), which the stable
//! replay test `tests/fuzz_smoke.rs` runs on every CI build as well.

#![no_main]

#[path = "../checks.rs"]
mod checks;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    checks::config_parse(data);
});
