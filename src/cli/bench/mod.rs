//! `federact bench ledger|migration|actors`: Caliper-style and BASICS-style
//! benchmarks of a real federation on this machine, each writing a report
//! directory (`summary.md`, raw CSV, SVG plots).
//!
//! # Layout
//! - [`ledger`]: committed tx/s and submit → commit latency stepping the
//!   offered rate until saturation, CPU % and peak RSS per node role (nodes
//!   as OS processes), read throughput and latency.
//! - [`migration`]: BASICS' migration delay vs migration rate for local and
//!   inter-cloud migrations at block sizes 4 and 16, and the stability
//!   limit; delay vs local validators; delay and blocks vs clouds.
//! - [`actors`]: bare actix, same-server and other-server (QUIC) invocation
//!   throughput and latency in one run.
//! - [`report`]: the report directory; [`procs`]: node processes and /proc.
//!
//! The load drivers are `federact_actors::loadgen`, shared with the cargo
//! benches in `actors/benches`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

mod actors;
mod ledger;
mod migration;
mod procs;
mod report;

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Ledger throughput and latency (Caliper's metrics) on a chosen chain shape.
    Ledger(ledger::LedgerArgs),
    /// BASICS experiments: migration delay vs rate (stability limit), vs validators, vs clouds.
    Migration(migration::MigrationArgs),
    /// Invocation throughput and latency: bare actix, same server, other server over QUIC.
    Actors(actors::ActorsArgs),
}

/// Options every benchmark takes.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// The report directory (default: bench-reports/KIND-YYYYMMDD-HHMMSS).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The short version (about a minute); flags given explicitly still apply.
    #[arg(long)]
    quick: bool,
}

impl CommonArgs {
    fn out_dir(&self, kind: &str) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            let stamp: String = report::utc_now()
                .chars()
                .filter(|c| c.is_ascii_digit() || *c == ' ')
                .collect::<String>()
                .replace(' ', "-");
            PathBuf::from("bench-reports").join(format!("{kind}-{stamp}"))
        })
    }
}

/// Runs a benchmark.
pub fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let summary = match cmd {
        BenchCmd::Ledger(a) => ledger::run(&a)?,
        BenchCmd::Migration(a) => migration::run(&a)?,
        BenchCmd::Actors(a) => actors::run(&a)?,
    };
    eprintln!(
        "report: {} ({:.0} s)",
        summary.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A progress bar of `len` operations for one step.
fn bar(len: u64, msg: String) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>28} [{bar:30}] {pos}/{len} {elapsed_precise}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(msg);
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// Polls `f` until it returns true or `deadline` passes.
async fn wait_until<F, Fut>(deadline: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = std::time::Instant::now() + deadline;
    loop {
        if f().await {
            return true;
        }
        if std::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
