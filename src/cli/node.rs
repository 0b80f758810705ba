//! `federact node --config FILE`: one node per process, hosting the
//! built-in functions ([`federact::builtin`]) on a server.

use std::path::Path;

use anyhow::Context;
use federact::actors::offload_check::{OffloadAdversary, OffloadChecks};
use federact::actors::{Node, NodeOptions, ServerLimits};
use federact::config::NodeConfig;

/// A server's offload result checks from the command line.
pub struct OffloadArgs {
    /// `--offload-spot-check`.
    pub spot_check: f64,
    /// `--offload-adversary` (fault tests only).
    pub adversary: Option<String>,
}

impl OffloadArgs {
    fn checks(&self) -> anyhow::Result<OffloadChecks> {
        if !(0.0..=1.0).contains(&self.spot_check) {
            anyhow::bail!(
                "--offload-spot-check {} is not a fraction between 0 and 1",
                self.spot_check
            );
        }
        let adversary = match &self.adversary {
            None => None,
            Some(s) => Some(OffloadAdversary::parse(s).ok_or_else(|| {
                let modes: Vec<&str> = OffloadAdversary::ALL.iter().map(|m| m.name()).collect();
                anyhow::anyhow!(
                    "--offload-adversary `{s}`: expected one of {}",
                    modes.join(", ")
                )
            })?),
        };
        Ok(OffloadChecks {
            spot_check: self.spot_check,
            adversary,
        })
    }
}

/// Runs the node until ctrl-c or SIGTERM, then shuts it down cleanly
/// (actors stop, stores flush, connections close).
pub fn run(
    config: &Path,
    inflight_max: Option<u32>,
    migration_timeout_s: Option<u64>,
    offload: OffloadArgs,
) -> anyhow::Result<()> {
    let checks = offload.checks()?;
    let cfg = NodeConfig::load(config)?;
    if !cfg.spec().roles().runs_actors() {
        anyhow::bail!(
            "node `{}` is a client identity (roles: {}): it runs no actors; use its configuration with `federact invoke`, `migrate` or `status`",
            cfg.spec().name(),
            cfg.spec().roles()
        );
    }
    let key = cfg.load_key()?;
    use federact::actors::telemetry::{init, TelemetryConfig};
    let telemetry =
        init(&TelemetryConfig::from_node_config(&cfg)?).context("starting telemetry")?;
    let system = actix::System::new();
    system.block_on(async move {
        let mut options = federact::builtin::register(NodeOptions::default());
        if let Some(max) = inflight_max {
            options = options.server_limits(ServerLimits {
                inflight_max: max,
                ..ServerLimits::default()
            });
        }
        if let Some(s) = migration_timeout_s {
            options.migration.protocol_timeout = std::time::Duration::from_secs(s);
        }
        if let Some(cheat) = checks.adversary {
            eprintln!(
                "node {}: ADVERSARY: cheats on offloaded tasks ({}) — fault tests only",
                cfg.spec().name(),
                cheat.name()
            );
        }
        options.offload = checks;
        let node = Node::start_with(&cfg, key, options)
            .await
            .context("starting the node")?;
        eprintln!(
            "node {} ({}) listening on {} with roles {}",
            cfg.spec().name(),
            cfg.spec().id(),
            cfg.spec().listen(),
            cfg.spec().roles()
        );
        let stopped = tokio::select! {
            _ = wait_for_signal() => Vec::new(),
            chains = watch_validators(&node) => chains,
        };
        eprintln!("node {}: shutting down", cfg.spec().name());
        node.shutdown().await;
        if !stopped.is_empty() {
            // Exit non-zero so a supervisor restarts the node once the cause
            // (e.g. a full disk) is fixed; the restarted validator catches up.
            anyhow::bail!(
                "node {}: the validator of {} stopped (see the log above, e.g. a storage error); exiting so the node can be restarted",
                cfg.spec().name(),
                stopped.join(", ")
            );
        }
        anyhow::Ok(())
    })?;
    // After the actix system: the exporter flushes on its own runtime. A
    // failed flush (backend down) loses telemetry, not the node's work.
    if let Err(e) = telemetry.shutdown() {
        eprintln!("telemetry: {e}");
    }
    Ok(())
}

/// Returns the chains whose validator stopped by itself, checking twice a
/// second (never returns while every validator runs).
async fn watch_validators(node: &Node) -> Vec<String> {
    loop {
        let stopped = node.stopped_validators();
        if !stopped.is_empty() {
            return stopped;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Resolves on ctrl-c or SIGTERM.
pub(crate) async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
