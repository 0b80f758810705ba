//! Fuzzes the federation file parser with arbitrary text: it must load or
//! fail with a located error, never panic, and whatever loads must have a
//! consistent view of its nodes and chains.

#![no_main]

use std::path::Path;

use federact_config::Federation;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Federation::parse(text, Path::new("fuzz/federation.toml")) {
        Ok(fed) => {
            for chain in fed.chains() {
                assert_eq!(chain.validators().len(), chain.validator_names().len());
                assert!(chain.quorum() <= chain.validators().len());
            }
            for node in fed.nodes() {
                assert!(fed.node(node.name()).is_some());
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
