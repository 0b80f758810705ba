//! Invocation throughput and latency: bare actix messages, a function
//! instance on the caller's own server (no QUIC hop) and one on another
//! server over loopback QUIC, all in one run over an embedded federation.
//!
//! `CARGO_TARGET_DIR=... cargo bench -p federact-actors --bench invoke`
//! (`INVOKE_BENCH_CALLS=N` changes the number of calls per row).
//!
//! One run on the shared 2-core dev box (5000 calls, 64-byte payload):
//!
//! | path                          | seq calls/s | p50 µs | p99 µs | 32 concurrent calls/s |
//! |-------------------------------|-------------|--------|--------|-----------------------|
//! | bare actix message            | 1 431 420   | 0      | 0      | 4 429 313             |
//! | instance, same server         | 477 207     | 2      | 2      | 349 012               |
//! | instance, other server (QUIC) | 16 272      | 47     | 93     | 88 725                |

use std::time::Duration;

use actix::prelude::*;
use federact_actors::loadgen::closed_loop;
use federact_actors::{Bytes, EmbeddedFederation, Function, FunctionError, Invoker, NodeOptions};
use federact_config::{write_local_federation, Topology};

#[derive(Default)]
struct Echo(u64);

impl Function for Echo {
    fn call(&mut self, _: &str, payload: Bytes) -> Result<Bytes, FunctionError> {
        self.0 += 1;
        Ok(payload)
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.to_be_bytes().to_vec()
    }
    fn restore(_: &[u8]) -> Result<Self, FunctionError> {
        Ok(Echo::default())
    }
}

struct Bare;
impl Actor for Bare {
    type Context = Context<Self>;
}
#[derive(Message)]
#[rtype(result = "Bytes")]
struct Ping(Bytes);
impl Handler<Ping> for Bare {
    type Result = MessageResult<Ping>;
    fn handle(&mut self, m: Ping, _: &mut Context<Self>) -> Self::Result {
        MessageResult(m.0)
    }
}

struct Row {
    name: &'static str,
    seq_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    conc_per_s: f64,
}

const CONCURRENCY: usize = 32;

/// One caller back to back, then [`CONCURRENCY`] callers, with the shared
/// closed-loop driver (`federact_actors::loadgen`, also behind `federact
/// bench actors`).
async fn measure<F, Fut>(name: &'static str, calls: usize, f: F) -> Row
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    closed_loop(1, calls / 10, &f).await;
    let seq = closed_loop(1, calls, &f).await;
    let conc = closed_loop(CONCURRENCY, calls / CONCURRENCY, &f).await;
    Row {
        name,
        seq_per_s: seq.calls_per_s(),
        p50_us: seq.latencies.quantile_ms(0.5) * 1000.0,
        p99_us: seq.latencies.quantile_ms(0.99) * 1000.0,
        conc_per_s: conc.calls_per_s(),
    }
}

/// An instance key whose instance the orchestrator placed on (or off) the
/// invoker's own node.
async fn key_on(invoker: &Invoker, local: bool) -> String {
    for i in 0..64 {
        let key = format!("bench-{i}");
        invoker
            .invoke("echo", &key, Bytes::new())
            .await
            .expect("placed");
        if invoker.is_local("echo", &key) == local {
            return key;
        }
    }
    panic!(
        "no instance placed {}",
        if local { "locally" } else { "remotely" }
    );
}

#[actix_rt::main]
async fn main() {
    let calls: usize = std::env::var("INVOKE_BENCH_CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000);
    let dir = tempfile::tempdir().expect("tempdir");
    let topo = Topology {
        clouds: 1,
        servers_per_cloud: 2,
        local_validators: 1,
        inter_validators: 0,
    };
    write_local_federation(dir.path(), &topo, false).expect("init");
    let options = NodeOptions::default().function::<Echo>("echo");
    let fed = EmbeddedFederation::start_with(dir.path(), options)
        .await
        .expect("federation");
    let invoker = fed
        .node("c1-server-1")
        .and_then(|n| n.invoker())
        .expect("invoker");
    let local_key = key_on(&invoker, true).await;
    let remote_key = key_on(&invoker, false).await;
    let payload = Bytes::from(vec![7u8; 64]);

    let bare = Bare.start();
    let mut rows = Vec::new();
    {
        let (bare, p) = (bare.clone(), payload.clone());
        rows.push(
            measure("bare actix message", calls, move || {
                let (bare, p) = (bare.clone(), p.clone());
                async move {
                    let _ = bare.send(Ping(p)).await;
                }
            })
            .await,
        );
    }
    for (name, key) in [
        ("instance, same server", local_key),
        ("instance, other server (QUIC)", remote_key),
    ] {
        let (inv, p) = (invoker.clone(), payload.clone());
        rows.push(
            measure(name, calls, move || {
                let (inv, p, key) = (inv.clone(), p.clone(), key.clone());
                async move {
                    inv.invoke("echo", &key, p).await.expect("call");
                }
            })
            .await,
        );
    }
    println!("\n{calls} calls per row, 64-byte payload, {CONCURRENCY} concurrent callers for the last column\n");
    println!(
        "| {:<30} | {:>12} | {:>8} | {:>8} | {:>16} |",
        "path", "seq calls/s", "p50 µs", "p99 µs", "concurrent calls/s"
    );
    println!(
        "|{:-<32}|{:->14}|{:->10}|{:->10}|{:->18}|",
        "", "", "", "", ""
    );
    for r in rows {
        println!(
            "| {:<30} | {:>12.0} | {:>8.0} | {:>8.0} | {:>16.0} |",
            r.name, r.seq_per_s, r.p50_us, r.p99_us, r.conc_per_s
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    fed.shutdown().await;
}
