//! `federact drain --config NODE.toml CLOUD/SERVER`: ask the cloud's
//! orchestrator to migrate every function instance of a server to other
//! servers of the cloud (live, with the BASICS protocol; each move is on
//! the cloud's chain) and to place nothing more there.
//!
//! The tool joins the federation as the node of `--config` (a node of the
//! same cloud: the orchestrator refuses drains from other clouds), on an
//! ephemeral port, and prints how many instances moved and which stayed.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use federact::config::NodeConfig;
use federact_actors::orchestrator::drain_server;
use federact_federation::{Membership, Transport, TransportOptions};

/// Arguments of `federact drain`.
#[derive(Debug, clap::Args)]
pub struct DrainArgs {
    /// A node configuration of the server's cloud, whose key the tool uses.
    #[arg(long)]
    pub config: PathBuf,
    /// How long to wait for every migration, in seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout_s: u64,
    /// The server to drain, `CLOUD/SERVER`.
    pub server: String,
}

/// Runs `federact drain`.
pub fn run(args: &DrainArgs) -> anyhow::Result<()> {
    let cfg = NodeConfig::load(&args.config)?;
    let key = cfg.load_key()?;
    let Some((cloud, server)) = args
        .server
        .split_once('/')
        .filter(|(c, s)| !c.is_empty() && !s.is_empty())
    else {
        bail!("{}: expected CLOUD/SERVER", args.server);
    };
    let fed = cfg.federation();
    if cfg.spec().cloud() != cloud {
        bail!(
            "{} is a node of {}, not of {cloud}: use a node configuration of {cloud}",
            args.config.display(),
            cfg.spec().cloud()
        );
    }
    fed.node(server)
        .filter(|n| n.cloud() == cloud)
        .with_context(|| format!("{}: no such server", args.server))?;
    let orchestrator = fed
        .orchestrator(cloud)
        .with_context(|| format!("cloud {cloud} has no orchestrator"))?
        .id();
    let listen = std::net::SocketAddr::new(cfg.spec().listen().ip(), 0);
    let system = actix::System::new();
    system.block_on(async move {
        let transport = Transport::bind(
            &key,
            Membership::from_federation(fed),
            TransportOptions::from(*fed.transport()),
            listen,
        )
        .await
        .context("binding the tool's endpoint")?;
        let result = drain_server(
            &transport,
            orchestrator,
            server,
            Duration::from_secs(args.timeout_s),
        )
        .await;
        transport.close().await;
        let (moved, failed) = result.with_context(|| format!("draining {}", args.server))?;
        println!("{}: {moved} instance(s) migrated away", args.server);
        for f in &failed {
            println!("  stayed: {f}");
        }
        if !failed.is_empty() {
            bail!("{} instance(s) could not be moved", failed.len());
        }
        anyhow::Ok(())
    })
}
