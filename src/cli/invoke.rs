//! `federact invoke --config NODE.toml NAME KEY PAYLOAD`: call a function
//! instance from the command line, as the node whose configuration is given.
//!
//! Wiring (in `cli/mod.rs`): `mod invoke;`, a `Command::Invoke(invoke::InvokeArgs)`
//! variant ("Call a function instance (placed on first call) and print its
//! result") and `Command::Invoke(args) => invoke::run(&args)`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use federact::actors::Invoker;
use federact::config::NodeConfig;

/// Arguments of `federact invoke`.
#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// A node configuration of the cloud to call from (its key signs the
    /// connection; e.g. DIR/nodes/c1-server-1.toml).
    #[arg(long)]
    config: PathBuf,
    /// Seconds to wait for the result (a first call waits for the
    /// placement's ledger commits).
    #[arg(long, default_value_t = 30)]
    timeout_s: u64,
    /// The function's name.
    name: String,
    /// The instance key.
    key: String,
    /// The payload (UTF-8, passed as bytes).
    payload: String,
}

/// Calls the instance and prints the result (lossy UTF-8) on stdout.
pub fn run(args: &InvokeArgs) -> anyhow::Result<()> {
    let cfg = NodeConfig::load(&args.config)?;
    let key = cfg.load_key()?;
    let system = actix::System::new();
    system.block_on(async move {
        let invoker = Invoker::connect(&cfg, key)
            .await
            .context("connecting to the federation")?
            .with_timeout(Duration::from_secs(args.timeout_s));
        let result = invoker
            .invoke(&args.name, &args.key, args.payload.clone().into_bytes())
            .await;
        invoker.close().await;
        let out = result.with_context(|| format!("invoking {}/{}", args.name, args.key))?;
        println!("{}", String::from_utf8_lossy(&out));
        anyhow::Ok(())
    })
}
