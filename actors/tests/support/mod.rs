//! Shared helpers for the actors crate's integration tests.
#![allow(dead_code)] // each test binary uses a different subset

pub mod otlp_receiver;

use std::path::Path;
use std::time::{Duration, Instant};

use federact_config::{Federation, NodeKey};

/// A valid two-cloud federation (clouds `a` and `b`, each with a gateway,
/// orchestrator, server and four validators) with `telemetry` as its
/// `[telemetry]` section body (may be empty).
pub fn federation_with_telemetry(telemetry: &str) -> Federation {
    let key = |i: u8| NodeKey::from_seed(&[i; 32]).id().to_string();
    let mut s = String::from(
        "[federation]\nname = \"t\"\n\n[[clouds]]\nname = \"a\"\n\n[[clouds]]\nname = \"b\"\n\n",
    );
    let mut port = 7000;
    let mut k = 1u8;
    for cloud in ["a", "b"] {
        for (name, roles) in [
            ("gw", "\"gateway\""),
            ("orch", "\"orchestrator\""),
            ("srv", "\"server\""),
            ("v1", "\"validator\""),
            ("v2", "\"validator\""),
            ("v3", "\"validator\""),
            ("v4", "\"validator\""),
        ] {
            s += &format!(
                "[[nodes]]\nname = \"{cloud}-{name}\"\ncloud = \"{cloud}\"\nroles = [{roles}]\nlisten = \"127.0.0.1:{port}\"\npublic_key = \"{}\"\n\n",
                key(k)
            );
            port += 1;
            k += 1;
        }
    }
    s += "[[chains]]\nid = \"a.local\"\nkind = \"local\"\ncloud = \"a\"\nvalidators = [\"a-v1\", \"a-v2\", \"a-v3\", \"a-v4\"]\n\n";
    s += "[[chains]]\nid = \"b.local\"\nkind = \"local\"\ncloud = \"b\"\nvalidators = [\"b-v1\", \"b-v2\", \"b-v3\", \"b-v4\"]\n\n";
    s += "[[chains]]\nid = \"consortium\"\nkind = \"consortium\"\nvalidators = [\"a-v1\", \"b-v1\", \"a-v2\", \"b-v2\"]\nfault_tolerance = 1\n\n";
    if !telemetry.is_empty() {
        s += "[telemetry]\n";
        s += telemetry;
        s += "\n";
    }
    Federation::parse(&s, Path::new("fed.toml")).expect("test federation parses")
}

/// Polls `cond` every 50 ms until it holds or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
