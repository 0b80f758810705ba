//! `federact bench actors`: invocation throughput and latency of bare
//! actix messages, a function instance on the caller's own server (no QUIC
//! hop) and one on another server (loopback QUIC with mutual TLS), all in
//! one run over an embedded federation, so the three are measured side by
//! side on the same machine state.
//!
//! Closed loop at several concurrencies gives throughput and the latency
//! of back-to-back calls; an open-loop run at a fixed rate (500 calls/s by
//! default, the rate of the Dapr actors figure) gives the tail latency a
//! client sees at a given load.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use actix::prelude::*;
use anyhow::{bail, Context as _};
use clap::Args;
use federact::config::{write_local_federation, Topology};
use federact_actors::loadgen::{closed_loop, open_loop, ClosedRun, RateStep};
use federact_actors::{Bytes, EmbeddedFederation, Function, FunctionError, Invoker, NodeOptions};

use super::report::{f, Axes, Report, Series};
use super::{bar, CommonArgs};

/// Arguments of `federact bench actors`.
#[derive(Debug, Args)]
pub struct ActorsArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Calls per measured point (default 5,000 with --quick, else 50,000).
    #[arg(long)]
    calls: Option<usize>,
    /// Concurrent callers, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128")]
    concurrency: Vec<usize>,
    /// Payload bytes per call.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Fixed rate of the open-loop run, calls/s.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Seconds of the open-loop run (default 5 with --quick, else 30).
    #[arg(long)]
    secs: Option<f64>,
}

/// A function that returns its payload and counts calls.
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
    fn restore(state: &[u8]) -> Result<Self, FunctionError> {
        let b: [u8; 8] = state.try_into().map_err(|_| FunctionError::Restore {
            detail: "echo state is 8 bytes".into(),
        })?;
        Ok(Echo(u64::from_be_bytes(b)))
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

const PATHS: [&str; 3] = [
    "bare actix message",
    "instance, same server",
    "instance, other server (QUIC)",
];

/// Runs the benchmark; returns the summary file.
pub fn run(a: &ActorsArgs) -> anyhow::Result<std::path::PathBuf> {
    let calls = a
        .calls
        .unwrap_or(if a.common.quick { 5_000 } else { 50_000 });
    let secs = a.secs.unwrap_or(if a.common.quick { 5.0 } else { 30.0 });
    if calls == 0 || a.concurrency.is_empty() || a.concurrency.contains(&0) || a.rate == 0 {
        bail!("--calls, --concurrency and --rate must be positive");
    }
    let out = a.common.out_dir("actors");
    let mut report = Report::create(&out, "federact bench actors")?;
    let work = tempfile::Builder::new()
        .prefix("federact-bench-actors-")
        .tempdir()?;
    let topo = Topology {
        clouds: 1,
        servers_per_cloud: 2,
        local_validators: 1,
        inter_validators: 0,
    };
    write_local_federation(work.path(), &topo, false)?;
    let system = actix::System::new();
    let (closed, open) = system.block_on(async {
        let options = NodeOptions::default().function::<Echo>("echo");
        let fed = EmbeddedFederation::start_with(work.path(), options).await?;
        let invoker = fed
            .node("c1-server-1")
            .and_then(|n| n.invoker())
            .context("c1-server-1 has no invoker")?;
        let r = measure(&invoker, a, calls, secs).await;
        fed.shutdown().await;
        r
    })?;
    write_report(&mut report, a, calls, secs, &closed, &open)?;
    report.finish()
}

/// An instance key the orchestrator placed on (`local`) or off the invoker's node.
async fn key_on(invoker: &Invoker, local: bool) -> anyhow::Result<String> {
    for i in 0..256 {
        let key = format!("bench-{i}");
        invoker
            .invoke("echo", &key, Bytes::new())
            .await
            .map_err(|e| anyhow::anyhow!("placing echo/{key}: {e}"))?;
        if invoker.is_local("echo", &key) == local {
            return Ok(key);
        }
    }
    bail!(
        "the orchestrator placed no instance {} in 256 tries",
        if local { "locally" } else { "remotely" }
    )
}

type Closed = Vec<(&'static str, ClosedRun)>;
type Open = Vec<(&'static str, RateStep)>;

async fn measure(
    invoker: &Invoker,
    a: &ActorsArgs,
    calls: usize,
    secs: f64,
) -> anyhow::Result<(Closed, Open)> {
    let local = key_on(invoker, true).await?;
    let remote = key_on(invoker, false).await?;
    let payload = Bytes::from(vec![7u8; a.payload]);
    let bare = Bare.start();
    let mut closed = Vec::new();
    for &c in &a.concurrency {
        let per = calls.div_ceil(c);
        for (i, name) in PATHS.iter().enumerate() {
            let pb = bar(1, format!("{name} ×{c}"));
            let call = |warm: usize| {
                let (bare, inv, p) = (bare.clone(), invoker.clone(), payload.clone());
                let key = if i == 1 {
                    local.clone()
                } else {
                    remote.clone()
                };
                closed_loop(c, warm, move || {
                    let (bare, inv, p, key) = (bare.clone(), inv.clone(), p.clone(), key.clone());
                    async move {
                        if i == 0 {
                            let _ = bare.send(Ping(p)).await;
                        } else if let Err(e) = inv.invoke("echo", &key, p).await {
                            tracing::warn!(error = %e, "bench call failed");
                        }
                    }
                })
            };
            call(per / 10 + 1).await;
            let run = call(per).await;
            pb.finish_and_clear();
            eprintln!(
                "{name:<30} ×{c:<4} {:>10.0} calls/s  p50 {:>8.1} µs  p99 {:>8.1} µs",
                run.calls_per_s(),
                run.latencies.quantile_ms(0.5) * 1000.0,
                run.latencies.quantile_ms(0.99) * 1000.0
            );
            closed.push((*name, run));
        }
    }
    let mut open = Vec::new();
    let seq = AtomicU64::new(0);
    for (name, key) in [(PATHS[1], &local), (PATHS[2], &remote)] {
        let total = (a.rate as f64 * secs).round() as u64;
        let pb = bar(total, format!("{name} at {}/s", a.rate));
        let step = open_loop(
            a.rate,
            Duration::from_secs_f64(secs),
            100_000,
            &seq,
            |_| {
                let (inv, p, key) = (invoker.clone(), payload.clone(), key.clone());
                async move {
                    inv.invoke("echo", &key, p)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
            },
            |n| pb.set_position(n),
        )
        .await;
        pb.finish_and_clear();
        if step.completed == 0 {
            bail!(
                "no call succeeded at {}/s on {name}: {}",
                a.rate,
                step.first_error.unwrap_or_default()
            );
        }
        open.push((name, step));
    }
    Ok((closed, open))
}

fn write_report(
    r: &mut Report,
    a: &ActorsArgs,
    calls: usize,
    secs: f64,
    closed: &Closed,
    open: &Open,
) -> anyhow::Result<()> {
    r.text(&format!(
        "Embedded federation (1 cloud, 2 servers, 1 validator; every node in this process on one actix thread), function `echo` returning its {}-byte payload. The caller runs on server c1-server-1; the remote instance is on c1-server-2, reached over loopback QUIC with mutual TLS.\n",
        a.payload
    ));
    r.text(&format!(
        "## Closed loop ({calls} calls per point, callers back to back)\n"
    ));
    let header = [
        "path",
        "concurrent callers",
        "calls/s",
        "avg µs",
        "p50 µs",
        "p99 µs",
        "max µs",
    ];
    let us = |x: f64| f(x * 1000.0, 1);
    let rows: Vec<Vec<String>> = closed
        .iter()
        .map(|(name, run)| {
            vec![
                name.to_string(),
                run.concurrency.to_string(),
                f(run.calls_per_s(), 0),
                us(run.latencies.mean_ms()),
                us(run.latencies.quantile_ms(0.5)),
                us(run.latencies.quantile_ms(0.99)),
                us(run.latencies.max_ms()),
            ]
        })
        .collect();
    r.table(&header, &rows);
    r.csv("closed_loop.csv", &header, &rows)?;
    let one = |i: usize| {
        closed
            .iter()
            .find(|(n, run)| *n == PATHS[i] && run.concurrency == 1)
            .map_or(0.0, |(_, run)| run.calls_per_s())
    };
    if one(0) > 0.0 && one(2) > 0.0 {
        r.text(&format!(
            "One caller: a same-server instance call costs {}× a bare actix message, an other-server call {}×.\n",
            f(one(0) / one(1).max(1e-9), 1),
            f(one(0) / one(2), 1)
        ));
    }
    r.text(&format!(
        "## Open loop at {} calls/s for {secs} s (Dapr actors anchor: p99 6.2 ms at 500 qps)\n",
        a.rate
    ));
    let oh = [
        "path",
        "offered/s",
        "completed",
        "failed",
        "avg ms",
        "p50 ms",
        "p99 ms",
        "max ms",
    ];
    let orows: Vec<Vec<String>> = open
        .iter()
        .map(|(name, s)| {
            vec![
                name.to_string(),
                s.offered_per_s.to_string(),
                s.completed.to_string(),
                s.failed.to_string(),
                f(s.latencies.mean_ms(), 3),
                f(s.latencies.quantile_ms(0.5), 3),
                f(s.latencies.quantile_ms(0.99), 3),
                f(s.latencies.max_ms(), 3),
            ]
        })
        .collect();
    r.table(&oh, &orows);
    r.csv("open_loop.csv", &oh, &orows)?;
    let series = |g: &dyn Fn(&ClosedRun) -> f64| -> Vec<Series> {
        PATHS
            .iter()
            .map(|p| Series {
                name: p.to_string(),
                points: closed
                    .iter()
                    .filter(|(n, _)| n == p)
                    .map(|(_, run)| (run.concurrency as f64, g(run).max(1e-3)))
                    .collect(),
            })
            .collect()
    };
    r.plot(
        "throughput.svg",
        "Invocation throughput vs concurrent callers",
        "concurrent callers",
        "calls/s (log)",
        &series(&|run| run.calls_per_s()),
        Axes::LogXY,
    )?;
    r.plot(
        "latency_p99.svg",
        "p99 invocation latency vs concurrent callers",
        "concurrent callers",
        "p99 µs (log)",
        &series(&|run| run.latencies.quantile_ms(0.99) * 1000.0),
        Axes::LogXY,
    )?;
    Ok(())
}
