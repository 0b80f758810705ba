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
//!
//! Then the cost of tracing, measured side by side in the same run and
//! federation: the same two instance paths with OpenTelemetry export off
//! (what a node without an OTLP endpoint runs: a `warn` log filter, no
//! OpenTelemetry layer), on with every trace sampled (ratio 1.0) and on at
//! ratio 0.01 (parent-based: the caller's `invoke` span decides, the
//! server's spans follow), exporting over OTLP/gRPC to a real receiver in
//! the same process. `INVOKE_BENCH_TELEMETRY=0` skips this part;
//! `INVOKE_BENCH_ROUNDS=N` sets the rounds (default 3).
//!
//! One run (`INVOKE_BENCH_ROUNDS=5`, the shared 2-core box under other
//! sessions' builds, so absolute figures are low and noisy; ratios are
//! between variants measured in alternating rounds):
//!
//! | variant               | path                | seq calls/s | cost  | 32 concurrent/s | cost  |
//! |-----------------------|---------------------|-------------|-------|-----------------|-------|
//! | export off            | same server         | 182 255     | —     | 236 217         | —     |
//! | export off            | other server (QUIC) | 6 561       | —     | 23 436          | —     |
//! | export on, ratio 1.0  | same server         | 39 820      | 78.2% | 35 094          | 85.1% |
//! | export on, ratio 1.0  | other server (QUIC) | 4 492       | 31.5% | 13 002          | 44.5% |
//! | export on, ratio 0.01 | same server         | 141 627     | 22.3% | 149 597         | 36.7% |
//! | export on, ratio 0.01 | other server (QUIC) | 5 934       | 9.6%  | 23 396          | 0.2%  |
//!
//! Provenance on (auditable function, three ledger commits per call,
//! single-validator chain): about 10 calls/s, p50 ≈ 100 ms, against
//! 156 574/s (same server) and 6 505/s (QUIC) without, in the same run.

use std::time::{Duration, Instant};

use actix::prelude::*;
use federact_actors::telemetry::{Sampling, TelemetryConfig, TelemetryPipeline};
use federact_actors::{Bytes, EmbeddedFederation, Function, FunctionError, Invoker, NodeOptions};
use federact_config::{write_local_federation, Topology};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::Layer as _;

#[path = "../tests/support/otlp_receiver.rs"]
#[allow(dead_code)]
mod otlp_receiver;

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
    name: String,
    seq_per_s: f64,
    p50_us: u128,
    p99_us: u128,
    conc_per_s: f64,
}

const CONCURRENCY: usize = 32;

async fn measure<F, Fut>(name: impl Into<String>, calls: usize, f: F) -> Row
where
    F: Fn() -> Fut + Clone,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..calls / 10 {
        f().await;
    }
    let mut lat = Vec::with_capacity(calls);
    let start = Instant::now();
    for _ in 0..calls {
        let t = Instant::now();
        f().await;
        lat.push(t.elapsed());
    }
    let seq = start.elapsed();
    lat.sort();
    let pct = |p: usize| lat[(lat.len() * p / 100).min(lat.len() - 1)].as_micros();
    let start = Instant::now();
    let per = calls / CONCURRENCY;
    let workers = (0..CONCURRENCY).map(|_| {
        let f = f.clone();
        async move {
            for _ in 0..per {
                f().await;
            }
        }
    });
    futures::future::join_all(workers).await;
    let conc = start.elapsed();
    Row {
        name: name.into(),
        seq_per_s: calls as f64 / seq.as_secs_f64(),
        p50_us: pct(50),
        p99_us: pct(99),
        conc_per_s: (per * CONCURRENCY) as f64 / conc.as_secs_f64(),
    }
}

/// An instance key whose instance the orchestrator placed on (or off) the
/// invoker's own node.
async fn key_on(invoker: &Invoker, function: &str, local: bool) -> String {
    for i in 0..64 {
        let key = format!("bench-{i}");
        invoker
            .invoke(function, &key, Bytes::new())
            .await
            .expect("placed");
        if invoker.is_local(function, &key) == local {
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
    let options = NodeOptions::default()
        .function::<Echo>("echo")
        .auditable_function::<Echo>("echo-audited");
    let fed = EmbeddedFederation::start_with(dir.path(), options)
        .await
        .expect("federation");
    let invoker = fed
        .node("c1-server-1")
        .and_then(|n| n.invoker())
        .expect("invoker");
    let local_key = key_on(&invoker, "echo", true).await;
    let remote_key = key_on(&invoker, "echo", false).await;
    let audited_local = key_on(&invoker, "echo-audited", true).await;
    let audited_remote = key_on(&invoker, "echo-audited", false).await;
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
        ("instance, same server", local_key.clone()),
        ("instance, other server (QUIC)", remote_key.clone()),
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
    // Provenance on: the same function registered auditable, so each call
    // commits three ProvData records on the local chain before answering
    // (fewer calls: each waits for three commits). Distinct payloads, as
    // distinct inputs are the common case.
    let audited_calls = (calls / 50).max(20);
    for (name, key) in [
        ("same server, provenance on", audited_local),
        ("other server, provenance on", audited_remote),
    ] {
        let inv = invoker.clone();
        let n = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        rows.push(
            measure(name, audited_calls, move || {
                let (inv, key, n) = (inv.clone(), key.clone(), n.clone());
                async move {
                    let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let p = Bytes::from(i.to_be_bytes().to_vec());
                    inv.invoke("echo-audited", &key, p).await.expect("call");
                }
            })
            .await,
        );
    }
    println!("\n{calls} calls per row ({audited_calls} with provenance on), 64-byte payload, {CONCURRENCY} concurrent callers for the last column\n");
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
            "| {:<30} | {:>12.0} | {:>8} | {:>8} | {:>16.0} |",
            r.name, r.seq_per_s, r.p50_us, r.p99_us, r.conc_per_s
        );
    }
    if std::env::var("INVOKE_BENCH_TELEMETRY").as_deref() != Ok("0") {
        telemetry_cost(&invoker, &local_key, &remote_key, &payload, calls).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    fed.shutdown().await;
}

/// The same invocations with export off, at ratio 1.0 and at 0.01, each
/// under its own subscriber (set as the default of this thread, where the
/// embedded federation's actors run too). Repeated rounds alternate the
/// variants so drift on the shared machine hits all of them alike; the
/// table reports each variant's median over the rounds.
async fn telemetry_cost(
    invoker: &Invoker,
    local_key: &str,
    remote_key: &str,
    payload: &Bytes,
    calls: usize,
) {
    let receiver = otlp_receiver::OtlpReceiver::start_grpc()
        .await
        .expect("receiver");
    let rounds: usize = std::env::var("INVOKE_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let variants: [(&str, Option<f64>); 3] = [
        ("export off", None),
        ("export on, ratio 1.0", Some(1.0)),
        ("export on, ratio 0.01", Some(0.01)),
    ];
    // results[variant][path] = per-round (seq/s, concurrent/s)
    let mut results = vec![vec![Vec::new(); 2]; variants.len()];
    let mut exported = vec![0u64; variants.len()];
    for _ in 0..rounds {
        for (v, (_, ratio)) in variants.iter().enumerate() {
            let pipeline = ratio.map(|r| {
                let mut cfg =
                    TelemetryConfig::new("invoke-bench").with_endpoint(receiver.endpoint());
                cfg.sampling = Sampling::ParentBasedRatio(r);
                cfg.export_metrics = false;
                TelemetryPipeline::build(&cfg)
                    .expect("pipeline")
                    .expect("an endpoint is set")
            });
            let fmt = tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(tracing_subscriber::EnvFilter::new("warn"));
            let otel = pipeline.as_ref().map(|p| {
                p.layer()
                    .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
            });
            let subscriber = tracing_subscriber::registry().with(fmt).with(otel);
            let guard = tracing::subscriber::set_default(subscriber);
            for (i, key) in [local_key, remote_key].into_iter().enumerate() {
                let (inv, p, key) = (invoker.clone(), payload.clone(), key.to_string());
                let row = measure("", calls, move || {
                    let (inv, p, key) = (inv.clone(), p.clone(), key.clone());
                    async move {
                        inv.invoke("echo", &key, p).await.expect("call");
                    }
                })
                .await;
                results[v][i].push((row.seq_per_s, row.conc_per_s));
            }
            drop(guard);
            if let Some(p) = pipeline {
                let stats = tokio::task::spawn_blocking(move || {
                    let stats = p.stats();
                    let _ = p.shutdown();
                    stats
                })
                .await
                .expect("shutdown");
                exported[v] += stats.spans_exported;
            }
        }
    }
    let median = |xs: &[f64]| {
        let mut xs = xs.to_vec();
        xs.sort_by(|a, b| a.total_cmp(b));
        xs[xs.len() / 2]
    };
    println!(
        "\ntracing cost: {calls} calls per row, median of {rounds} alternating rounds; cost = throughput lost vs export off\n"
    );
    println!(
        "| {:<24} | {:<18} | {:>12} | {:>6} | {:>16} | {:>6} | {:>14} |",
        "variant", "path", "seq calls/s", "cost", "concurrent/s", "cost", "spans exported"
    );
    println!(
        "|{:-<26}|{:-<20}|{:->14}|{:->8}|{:->18}|{:->8}|{:->16}|",
        "", "", "", "", "", "", ""
    );
    let paths = ["same server", "other server (QUIC)"];
    for (v, (name, _)) in variants.iter().enumerate() {
        for (i, path) in paths.iter().enumerate() {
            let seq = median(&results[v][i].iter().map(|r| r.0).collect::<Vec<_>>());
            let conc = median(&results[v][i].iter().map(|r| r.1).collect::<Vec<_>>());
            let seq0 = median(&results[0][i].iter().map(|r| r.0).collect::<Vec<_>>());
            let conc0 = median(&results[0][i].iter().map(|r| r.1).collect::<Vec<_>>());
            println!(
                "| {:<24} | {:<18} | {:>12.0} | {:>5.1}% | {:>16.0} | {:>5.1}% | {:>14} |",
                name,
                path,
                seq,
                100.0 * (1.0 - seq / seq0),
                conc,
                100.0 * (1.0 - conc / conc0),
                if i == 0 {
                    exported[v].to_string()
                } else {
                    String::new()
                }
            );
        }
    }
    let _ = receiver.received().spans.len();
}
