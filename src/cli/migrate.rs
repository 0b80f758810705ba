//! `federact migrate --config NODE.toml --image FILE --from CLOUD/SERVER
//! --to CLOUD/SERVER`: notarise the move of a VM image file between two
//! servers with the BASICS protocol.
//!
//! The tool joins the federation as the node of `--config` (on an
//! ephemeral port), asks the source server's migration actor to migrate
//! `FILE` (a path on the source server's disk), and prints the outcome with
//! the records committed. Not wired into `federact` yet: the lead adds
//! `Command::Migrate(migrate::MigrateArgs)` → `migrate::run(&args)`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use federact::config::NodeConfig;
use federact_actors::migration::migrate_image;
use federact_federation::{Membership, Transport, TransportOptions};
use federact_ledger::record::Site;

/// Arguments of `federact migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The node configuration whose key the tool uses.
    #[arg(long)]
    pub config: PathBuf,
    /// The image file, as a path on the source server.
    #[arg(long)]
    pub image: String,
    /// The source server, `CLOUD/SERVER`.
    #[arg(long)]
    pub from: String,
    /// The destination server, `CLOUD/SERVER`.
    #[arg(long)]
    pub to: String,
    /// How long to wait for the migration to complete, in seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout_s: u64,
}

fn site(arg: &str, flag: &str) -> anyhow::Result<Site> {
    match arg.split_once('/') {
        Some((c, s)) if !c.is_empty() && !s.is_empty() => Ok(Site::new(c, s)),
        _ => bail!("{flag} {arg}: expected CLOUD/SERVER"),
    }
}

/// Runs `federact migrate`.
pub fn run(args: &MigrateArgs) -> anyhow::Result<()> {
    let cfg = NodeConfig::load(&args.config)?;
    let key = cfg.load_key()?;
    let from = site(&args.from, "--from")?;
    let to = site(&args.to, "--to")?;
    let fed = cfg.federation();
    let source = fed
        .node(&from.server)
        .filter(|n| n.cloud() == from.cloud)
        .with_context(|| format!("--from {}: no such server", args.from))?
        .id();
    let system = actix::System::new();
    system.block_on(async move {
        let transport = Transport::bind(
            &key,
            Membership::from_federation(fed),
            TransportOptions::from(*fed.transport()),
            "127.0.0.1:0".parse()?,
        )
        .await
        .context("binding the tool's endpoint")?;
        let result = migrate_image(
            &transport,
            source,
            &args.image,
            to,
            Duration::from_secs(args.timeout_s),
        )
        .await;
        transport.close().await;
        let report = result?;
        println!(
            "migration {} of vm {}: {} in {} ms ({} bytes)",
            report.migration_id,
            report.vm_id,
            if report.completed {
                "completed"
            } else {
                "aborted"
            },
            report.elapsed_ms,
            report.bytes
        );
        if let Some(r) = &report.reason {
            println!("  reason: {r}");
        }
        for (kind, chain, height) in &report.records {
            println!("  {kind} on {chain} at height {height}");
        }
        anyhow::Ok(())
    })
}
