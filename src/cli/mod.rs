//! Command-line interface: argument types and one `run` per subcommand.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use federact::config::{
    default_chain_params, write_local_federation_with, ChainParams, Federation, NodeKey, Topology,
};

mod bench;
mod demo;
mod drain;
mod invoke;
mod ledger;
mod migrate;
mod node;
mod up;

/// federact: serverless actors across a federation of clouds that do not
/// trust each other, with placements, offloads and migrations on ledgers.
#[derive(Debug, Parser)]
#[command(name = "federact", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a whole federation in this process and a scenario that shows every capability.
    Demo(demo::DemoArgs),
    /// Generate a node key (ed25519, PKCS#8 PEM, mode 0600) and print its public id.
    Keygen {
        /// Where to write the key file.
        #[arg(long)]
        out: PathBuf,
        /// Overwrite an existing key file.
        #[arg(long)]
        force: bool,
    },
    /// Write a ready-to-run local federation (keys, node configs, federation.toml).
    Init(InitArgs),
    /// Work with federation configuration files.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Inspect and verify chain stores offline.
    #[command(subcommand)]
    Ledger(ledger::LedgerCmd),
    /// Call a function instance in a running federation (activating it if needed).
    Invoke(invoke::InvokeArgs),
    /// Migrate a VM image file between servers with the BASICS protocol (notarised on the ledgers).
    Migrate(migrate::MigrateArgs),
    /// Start every node of a federation (from `federact init`) as its own process, until ctrl-c.
    Up(up::UpArgs),
    /// Show a running federation's chain heights and which nodes answer.
    Status(up::StatusArgs),
    /// Migrate every function instance of a server to other servers of its cloud (live, BASICS).
    Drain(drain::DrainArgs),
    /// Benchmark this machine's federation and write a report (summary.md, CSV, SVG plots).
    #[command(subcommand)]
    Bench(bench::BenchCmd),
    /// Run one node with the roles its configuration gives it, until ctrl-c or SIGTERM.
    Node {
        /// The node's configuration file (e.g. DIR/nodes/c1-gateway.toml).
        #[arg(long)]
        config: PathBuf,
        /// A server's limit of calls in flight (beyond it, tasks offload).
        #[arg(long)]
        inflight_max: Option<u32>,
        /// A server's migration protocol timeout in seconds (snapshot to
        /// confirmation; past it the migration is rejected on the ledger).
        #[arg(long)]
        migration_timeout_s: Option<u64>,
        /// The fraction (0 to 1) of a server's offloaded tasks whose
        /// verified result it re-executes to compare (a spot check; a
        /// disagreement is disputed on the ledger).
        #[arg(long, default_value_t = 0.0)]
        offload_spot_check: f64,
        /// Fault tests only: the server cheats on the offloaded tasks it
        /// runs (`tamper-result`, `wrong-digest` or `wrong-result`).
        #[arg(long, hide = true)]
        offload_adversary: Option<String>,
    },
}

#[derive(Debug, Args)]
struct InitArgs {
    /// Directory to write the federation into.
    #[arg(long)]
    dir: PathBuf,
    /// Number of clouds (BASICS Table I: 4).
    #[arg(long, default_value_t = 4)]
    clouds: usize,
    /// Servers per cloud.
    #[arg(long, default_value_t = 2)]
    servers_per_cloud: usize,
    /// Local validators per cloud (BASICS Table I: 4).
    #[arg(long, default_value_t = 4)]
    local_validators: usize,
    /// Inter validators running the consortium chain, spread over the clouds (BASICS Table I: 12).
    #[arg(long, default_value_t = 12)]
    inter_validators: usize,
    /// Most transactions per block, on every chain (BASICS Table I: 16).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    block_size_txs: u32,
    /// How long a proposer waits to fill a block, in ms, on every chain.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    batch_timeout_ms: u64,
    /// Overwrite an existing federation in DIR (its keys are replaced).
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Check a federation file and print a one-screen summary.
    Check {
        /// The federation file (e.g. DIR/federation.toml).
        file: PathBuf,
    },
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Keygen { out, force } => {
            let key = NodeKey::generate();
            key.write_file(&out, force)?;
            println!("{}", key.id());
            eprintln!(
                "wrote {} (mode 0600); the line above is its public id",
                out.display()
            );
            Ok(())
        }
        Command::Init(a) => {
            let topo = Topology {
                clouds: a.clouds,
                servers_per_cloud: a.servers_per_cloud,
                local_validators: a.local_validators,
                inter_validators: a.inter_validators,
            };
            let params = ChainParams {
                block_size_txs: a.block_size_txs,
                batch_timeout_ms: a.batch_timeout_ms,
                ..default_chain_params()
            };
            let written = write_local_federation_with(&a.dir, &topo, &params, a.force)?;
            let fed = Federation::load(&written.federation_file)
                .context("the federation just written does not load")?;
            print!("{}", fed.summary());
            println!(
                "\nwrote {} ({} node configs in {}, keys in {})",
                written.federation_file.display(),
                written.node_files.len(),
                a.dir.join("nodes").display(),
                a.dir.join("keys").display()
            );
            Ok(())
        }
        Command::Demo(args) => demo::run(&args),
        Command::Up(args) => up::run_up(&args),
        Command::Status(args) => up::run_status(&args),
        Command::Node {
            config,
            inflight_max,
            migration_timeout_s,
            offload_spot_check,
            offload_adversary,
        } => node::run(
            &config,
            inflight_max,
            migration_timeout_s,
            node::OffloadArgs {
                spot_check: offload_spot_check,
                adversary: offload_adversary,
            },
        ),
        Command::Ledger(cmd) => ledger::run(cmd),
        Command::Migrate(args) => migrate::run(&args),
        Command::Invoke(args) => invoke::run(&args),
        Command::Drain(args) => drain::run(&args),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Config(ConfigCmd::Check { file }) => {
            let fed = Federation::load(&file)?;
            print!("{}", fed.summary());
            println!("\n{}: ok", file.display());
            Ok(())
        }
    }
}
