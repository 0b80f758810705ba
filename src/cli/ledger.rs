//! `federact ledger …`: verify, inspect and query chain stores offline, or
//! query running chains remotely.
//!
//! Offline, every subcommand opens sled stores directly, so run it on a
//! stopped node (or a copy of its data directory): sled allows one process
//! per store. With `--via NODE.toml`, `show`, `tx`, `history` and
//! `provenance` ask the running gateway of that node's cloud instead (as
//! that node, on an ephemeral port) and check every answer against the
//! chain's validator set from the federation file: the gateway and the
//! validator that answers are not trusted.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use federact_actors::LedgerClient;
use federact_config::{Federation, NodeConfig};
use federact_ledger::block::Block;
use federact_ledger::hash::Hash;
use federact_ledger::record::{Record, Scope};
use federact_ledger::store::{ChainStore, CommittedTx, IndexedRecord};
use federact_ledger::tx::Transaction;
use federact_ledger::verify::{verify_store_against, Report};
use serde_json::{json, Value};

/// Blocks `ledger show` lists without `--height`.
const RECENT_BLOCKS: u64 = 10;

/// Offline ledger commands.
#[derive(Debug, clap::Subcommand)]
pub enum LedgerCmd {
    /// Re-check a chain store from its files: hashes, links, Merkle roots,
    /// transaction signatures and nonces, validation rules, commit
    /// certificates and cross-chain proofs. Prints the verified height and
    /// the first fault; exits non-zero on a fault.
    Verify {
        /// The chain store directory.
        dir: PathBuf,
        /// Also check the genesis against this federation file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a chain (genesis and recent blocks) or one block.
    Show {
        /// The chain store directory (or `--via`).
        #[arg(required_unless_present = "via")]
        dir: Option<PathBuf>,
        /// Show this block and its transactions.
        #[arg(long)]
        height: Option<u64>,
        /// Ask the running gateway of this node's cloud (e.g.
        /// DIR/nodes/c1-server-1.toml) instead of reading a store.
        #[arg(long, conflicts_with = "dir")]
        via: Option<PathBuf>,
        /// With `--via`: the chain (default: the node's cloud's local chain).
        #[arg(long, requires = "via")]
        chain: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A committed transaction by id, with where it is and its inclusion proof.
    Tx {
        /// Chain store directories to look in (or `--via`).
        #[arg(required_unless_present = "via")]
        dirs: Vec<PathBuf>,
        /// The transaction id (64 hex digits).
        #[arg(long)]
        id: String,
        /// Ask the running gateway of this node's cloud (its local chain,
        /// then the consortium).
        #[arg(long, conflicts_with = "dirs")]
        via: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every migration record of a vm, merged across chain stores (give the
    /// local chains and the consortium to see every hop).
    History {
        /// Chain store directories (or `--via`).
        #[arg(required_unless_present = "via")]
        dirs: Vec<PathBuf>,
        /// Ask the running gateway of this node's cloud (its local chain
        /// and the consortium).
        #[arg(long, conflicts_with = "dirs")]
        via: Option<PathBuf>,
        /// The vm id (64 hex digits: sha256 of the image).
        #[arg(long)]
        vm: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every provenance record mentioning an entity (a device or container
    /// name, an activity, or a data digest in hex).
    Provenance {
        /// The chain store directory (or `--via`).
        #[arg(required_unless_present = "via")]
        dir: Option<PathBuf>,
        /// Ask the running gateway of this node's cloud (its local chain
        /// and the consortium).
        #[arg(long, conflicts_with = "dir")]
        via: Option<PathBuf>,
        /// The entity.
        #[arg(long)]
        entity: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a ledger subcommand.
pub fn run(cmd: LedgerCmd) -> anyhow::Result<()> {
    match cmd {
        LedgerCmd::Verify { dir, config, json } => verify(&dir, config.as_deref(), json),
        LedgerCmd::Show {
            via: Some(via),
            chain,
            height,
            json,
            ..
        } => remote(&via, |c| remote_show(c, chain, height, json)),
        LedgerCmd::Show {
            dir: Some(dir),
            height,
            json,
            ..
        } => show(&dir, height, json),
        LedgerCmd::Show { .. } => bail!("give a chain store directory or --via NODE.toml"),
        LedgerCmd::Tx {
            via: Some(via),
            id,
            json,
            ..
        } => {
            let id = tx_id(&id)?;
            remote(&via, |c| async move {
                print_tx(c.transaction(&id).await?, &id, json)
            })
        }
        LedgerCmd::Tx { dirs, id, json, .. } => {
            let id = tx_id(&id)?;
            let mut found = None;
            for dir in &dirs {
                if let Some(t) = open(dir)?.tx(&id)? {
                    found = Some(t);
                    break;
                }
            }
            print_tx(found, &id, json)
        }
        LedgerCmd::History {
            via: Some(via),
            vm,
            json,
            ..
        } => {
            let vm_id = vm_id(&vm)?;
            remote(&via, |c| async move {
                let set = c.vm_history(&vm_id).await?;
                print_history(&set.records, &vm_id, "the gateway's chains", json)?;
                truncated_note(set.truncated);
                Ok(())
            })
        }
        LedgerCmd::History { dirs, vm, json, .. } => history(&dirs, &vm, json),
        LedgerCmd::Provenance {
            via: Some(via),
            entity,
            json,
            ..
        } => remote(&via, |c| async move {
            let set = c.provenance(&entity).await?;
            print_provenance(&set.records, &entity, "the gateway's chains", json)?;
            truncated_note(set.truncated);
            Ok(())
        }),
        LedgerCmd::Provenance {
            dir: Some(dir),
            entity,
            json,
            ..
        } => provenance(&dir, &entity, json),
        LedgerCmd::Provenance { .. } => {
            bail!("give a chain store directory or --via NODE.toml")
        }
    }
}

/// Runs `f` with a client of the gateway of `via`'s cloud, inside an actix
/// system, and closes the client's endpoint afterwards.
fn remote<F, Fut>(via: &Path, f: F) -> anyhow::Result<()>
where
    F: FnOnce(LedgerClient) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let cfg = NodeConfig::load(via)?;
    let key = cfg.load_key()?;
    let system = actix::System::new();
    system.block_on(async move {
        let client = LedgerClient::connect(&cfg, key)
            .await
            .context("connecting to the federation")?;
        let result = f(client.clone()).await;
        client.close().await;
        result
    })
}

fn truncated_note(truncated: bool) {
    if truncated {
        eprintln!(
            "note: a validator held more matching records than one answer carries; the list is cut"
        );
    }
}

fn tx_id(hex: &str) -> anyhow::Result<Hash> {
    Hash::from_hex(hex).with_context(|| format!("--id {hex}: expected 64 hex digits"))
}

fn vm_id(hex: &str) -> anyhow::Result<Hash> {
    Hash::from_hex(hex).with_context(|| format!("--vm {hex}: expected 64 hex digits"))
}

fn print_tx(found: Option<CommittedTx>, id: &Hash, json: bool) -> anyhow::Result<()> {
    let Some(t) = found else {
        bail!("transaction {id} is not committed on the chains asked");
    };
    let chain = &t.proof.header.chain_id;
    if json {
        let v = json!({
            "chain_id": chain,
            "height": t.location.height,
            "index": t.location.index,
            "block": t.proof.header.id(),
            "block_timestamp_ms": t.proof.header.timestamp_ms,
            "signatures": t.proof.certificate.signatures.len(),
            "merkle_path": t.proof.path.siblings.len(),
            "tx": tx_json(&t.tx),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("tx         {id}");
    println!(
        "committed  {chain} height {} position {} (block {})",
        t.location.height,
        t.location.index,
        t.proof.header.id()
    );
    println!(
        "proof      {} precommit signatures, {}-step Merkle path: checked",
        t.proof.certificate.signatures.len(),
        t.proof.path.siblings.len()
    );
    println!("author     {} nonce {}", t.tx.author(), t.tx.nonce());
    println!(
        "record     {}: {}",
        t.tx.record().kind(),
        detail(t.tx.record())
    );
    Ok(())
}

/// `show --via`: the chain's validators (from the federation file), its
/// checked tip and recent blocks, or one checked block.
async fn remote_show(
    client: LedgerClient,
    chain: Option<String>,
    height: Option<u64>,
    json: bool,
) -> anyhow::Result<()> {
    let chain = match chain {
        Some(c) => c,
        None => client.chains()?.remove(0),
    };
    if let Some(h) = height {
        let b = client
            .block(&chain, h)
            .await?
            .with_context(|| format!("no block at height {h} on {chain}"))?;
        if json {
            let v = json!({
                "id": b.block.id(),
                "header": b.block.header,
                "certificate": b.certificate,
                "txs": b.block.txs.iter().map(tx_json).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            print_block(&b.block, Some(b.certificate.signatures.len()));
        }
        return Ok(());
    }
    let tip = client.tip(&chain).await?;
    let tip_height = tip.as_ref().map_or(0, |b| b.block.header.height);
    let first = tip_height.saturating_sub(RECENT_BLOCKS - 1).max(1);
    let mut recent: Vec<Block> = tip.into_iter().map(|b| b.block).collect();
    for h in (first..tip_height).rev() {
        if let Some(b) = client.block(&chain, h).await? {
            recent.push(b.block);
        }
    }
    if json {
        let v = json!({
            "chain_id": chain,
            "tip": { "height": tip_height, "id": recent.first().map(|b| b.id()) },
            "recent": recent.iter().map(|b| json!({
                "height": b.header.height,
                "id": b.id(),
                "txs": b.txs.len(),
                "proposer": b.header.proposer,
                "round": b.header.round,
                "timestamp_ms": b.header.timestamp_ms,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("chain        {chain} (checked against its validator set)");
    println!("tip          height {tip_height}");
    print_recent(&recent);
    Ok(())
}

fn print_recent(recent: &[Block]) {
    if recent.is_empty() {
        return;
    }
    println!();
    println!(
        "{:>8}  {:<8}  {:>5}  {:<8}  {:>5}  {:>15}",
        "HEIGHT", "ID", "TXS", "PROPOSER", "ROUND", "TIME_MS"
    );
    for b in recent {
        println!(
            "{:>8}  {:<8}  {:>5}  {:<8}  {:>5}  {:>15}",
            b.header.height,
            b.id().short(),
            b.txs.len(),
            b.header.proposer.short(),
            b.header.round,
            b.header.timestamp_ms
        );
    }
}

fn open(dir: &Path) -> anyhow::Result<ChainStore> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    ChainStore::open(dir, None).with_context(|| {
        format!(
            "opening the chain store in {} (is a node still running on it?)",
            dir.display()
        )
    })
}

fn verify(dir: &Path, config: Option<&Path>, json: bool) -> anyhow::Result<()> {
    let federation = match config {
        Some(path) => Some(Federation::load(path)?),
        None => None,
    };
    let report: Report = verify_store_against(dir, federation.as_ref())
        .with_context(|| format!("verifying {}", dir.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "chain {}: verified {} of {} blocks ({} transactions)",
            report.chain_id, report.verified_height, report.tip_height, report.txs
        );
        match &report.fault {
            None => println!("no fault found"),
            Some(f) => println!("first fault: {f}"),
        }
    }
    match report.fault {
        None => Ok(()),
        Some(f) => bail!(
            "chain {} is faulty after height {}: {f}",
            report.chain_id,
            report.verified_height
        ),
    }
}

fn show(dir: &Path, height: Option<u64>, json: bool) -> anyhow::Result<()> {
    let store = open(dir)?;
    let g = store.genesis().clone();
    let tip = store.tip();
    if let Some(h) = height {
        let block = store
            .block(h)?
            .with_context(|| format!("no block at height {h} (tip is {})", tip.height))?;
        let cert = store.certificate(h)?;
        if json {
            let v = json!({
                "id": block.id(),
                "header": block.header,
                "certificate": cert,
                "txs": block.txs.iter().map(tx_json).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
        print_block(&block, cert.as_ref().map(|c| c.signatures.len()));
        return Ok(());
    }
    let first = tip.height.saturating_sub(RECENT_BLOCKS - 1).max(1);
    let mut recent = Vec::new();
    for h in (first..=tip.height).rev() {
        if let Some(b) = store.block(h)? {
            recent.push(b);
        }
    }
    if json {
        let v = json!({
            "genesis": g,
            "genesis_id": g.block().id(),
            "tip": { "height": tip.height, "id": tip.id, "timestamp_ms": tip.timestamp_ms },
            "recent": recent.iter().map(|b| json!({
                "height": b.header.height,
                "id": b.id(),
                "txs": b.txs.len(),
                "proposer": b.header.proposer,
                "round": b.header.round,
                "timestamp_ms": b.header.timestamp_ms,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("chain        {} ({:?})", g.chain_id, g.kind);
    if let Some(c) = &g.cloud {
        println!("cloud        {c}");
    }
    println!(
        "validators   n={} f={} quorum={}",
        g.validators.len(),
        g.validators.fault_tolerance(),
        g.validators.quorum()
    );
    for v in g.validators.validators() {
        println!("             {v}");
    }
    if let Some(c) = &g.consortium {
        println!(
            "consortium   {} (n={} f={})",
            c.chain_id,
            c.validators.len(),
            c.validators.fault_tolerance()
        );
    }
    println!(
        "writers      {}",
        if g.writers.is_empty() {
            "anyone".to_string()
        } else {
            g.writers.len().to_string()
        }
    );
    println!(
        "limits       {} txs/block, {} bytes/block, {} bytes/tx",
        g.limits.block_txs_max, g.limits.block_bytes_max, g.limits.tx_bytes_max
    );
    println!(
        "tip          height {} id {} at {} ms",
        tip.height, tip.id, tip.timestamp_ms
    );
    print_recent(&recent);
    Ok(())
}

fn print_block(block: &Block, signatures: Option<usize>) {
    let h = &block.header;
    println!("block      {} (height {})", block.id(), h.height);
    println!("chain      {}", h.chain_id);
    println!("prev       {}", h.prev_hash);
    println!("tx_root    {}", h.tx_root);
    println!("proposer   {} round {}", h.proposer, h.round);
    println!("time_ms    {}", h.timestamp_ms);
    match signatures {
        Some(n) => println!("certified  {n} precommit signatures"),
        None => println!("certified  no certificate (genesis)"),
    }
    if block.txs.is_empty() {
        return;
    }
    println!();
    println!(
        "{:>5}  {:<8}  {:<8}  {:>6}  {:<16}  DETAIL",
        "INDEX", "TX", "AUTHOR", "NONCE", "RECORD"
    );
    for (i, tx) in block.txs.iter().enumerate() {
        println!(
            "{:>5}  {:<8}  {:<8}  {:>6}  {:<16}  {}",
            i,
            tx.id().short(),
            tx.author().short(),
            tx.nonce(),
            tx.record().kind(),
            detail(tx.record())
        );
    }
}

fn tx_json(tx: &Transaction) -> Value {
    json!({
        "id": tx.id(),
        "author": tx.author(),
        "nonce": tx.nonce(),
        "timestamp_ms": tx.timestamp_ms(),
        "trace_id": tx.trace_id().map(hex16),
        "kind": tx.record().kind(),
        "record": record_json(tx.record()),
    })
}

fn hex16(id: [u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// A record as JSON, with a carried proof summarised (source chain, height,
/// tx id) instead of its raw bytes.
fn record_json(r: &Record) -> Value {
    match r.proof() {
        None => serde_json::to_value(r).unwrap_or(Value::Null),
        Some(p) => {
            let proof = json!({
                "source_chain": p.header.chain_id,
                "source_height": p.header.height,
                "source_block": p.header.id(),
                "tx_id": p.tx_id,
                "signatures": p.certificate.signatures.len(),
            });
            let mut v = json!({ "proof": proof });
            if let (Some(m), Some(vm)) = (r.migration_id(), r.vm_id()) {
                v["migration_id"] = json!(m);
                v["vm_id"] = json!(vm);
            }
            json!({ r.kind(): v })
        }
    }
}

/// A one-line human description of a record.
pub(crate) fn detail(r: &Record) -> String {
    let scope = |s: &Scope| match s {
        Scope::Local => "local",
        Scope::Inter => "inter",
    };
    match r {
        Record::OffloadRequested {
            task_id,
            requester,
            scope: s,
            ..
        } => format!(
            "task {} by {} ({})",
            task_id.short(),
            requester.short(),
            scope(s)
        ),
        Record::OffloadAccepted {
            task_id, executor, ..
        } => format!("task {} -> executor {}", task_id.short(), executor.short()),
        Record::OffloadCompleted {
            task_id,
            result_digest,
            ..
        } => format!("task {} result {}", task_id.short(), result_digest.short()),
        Record::ProvIdCreate { kind, entity, .. } => format!("{kind:?} {entity} joins"),
        Record::ProvIdDelete { kind, entity } => format!("{kind:?} {entity} leaves"),
        Record::ProvData {
            data_digest,
            generated_by,
            used_by,
        } => match used_by {
            None => format!("data {} left {generated_by}", data_digest.short()),
            Some(u) => format!(
                "data {} from {generated_by} used by {u}",
                data_digest.short()
            ),
        },
        Record::ProvOrch { deployed, location } => format!("{deployed} placed on {location}"),
        Record::Indication {
            migration_id,
            vm_id,
            source,
            destination,
            scope: s,
        } => format!(
            "migration {} vm {}: {}/{} -> {}/{} ({})",
            migration_id.short(),
            vm_id.short(),
            source.cloud,
            source.server,
            destination.cloud,
            destination.server,
            scope(s)
        ),
        Record::Confirmation {
            migration_id,
            accepted,
            observed_hash,
            reason,
            ..
        } => format!(
            "migration {} {} (seen {}){}",
            migration_id.short(),
            if *accepted { "accepted" } else { "REJECTED" },
            observed_hash.short(),
            reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        Record::Arrival {
            migration_id,
            proof,
            ..
        } => format!(
            "migration {} arrived (proof: {} height {})",
            migration_id.short(),
            proof.header.chain_id,
            proof.header.height
        ),
        Record::Leave {
            migration_id,
            proof,
            ..
        } => format!(
            "migration {} left (proof: {} height {})",
            migration_id.short(),
            proof.header.chain_id,
            proof.header.height
        ),
        Record::Relayed { proof } => format!(
            "relayed tx {} from {} height {}",
            proof.tx_id.short(),
            proof.header.chain_id,
            proof.header.height
        ),
        Record::MemberJoin { node, cloud, roles } => {
            let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
            format!("{} joins in {cloud} as {}", node.short(), roles.join(","))
        }
        Record::OffloadDisputed {
            task_id,
            received_digest,
            expected_digest,
            ..
        } => format!(
            "task {} result DISPUTED: received {}, recomputed {}",
            task_id.short(),
            received_digest.short(),
            expected_digest.short()
        ),
    }
}

fn entries_json(entries: &[IndexedRecord]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|e| {
                json!({
                    "chain_id": e.chain_id,
                    "height": e.height,
                    "index": e.index,
                    "tx_id": e.tx_id,
                    "block_timestamp_ms": e.block_timestamp_ms,
                    "author": e.author,
                    "trace_id": e.trace_id.map(hex16),
                    "kind": e.record.kind(),
                    "record": record_json(&e.record),
                })
            })
            .collect(),
    )
}

/// Every migration record of `vm_id` in `stores`, merged: hops on
/// different chains interleave by commit time; within a chain, by height
/// and position.
pub(crate) fn merged_history(
    stores: &[ChainStore],
    vm_id: &Hash,
) -> anyhow::Result<Vec<IndexedRecord>> {
    let mut entries = Vec::new();
    for store in stores {
        entries.extend(store.vm_history(vm_id)?);
    }
    entries.sort_by(|a, b| {
        (a.block_timestamp_ms, &a.chain_id, a.height, a.index).cmp(&(
            b.block_timestamp_ms,
            &b.chain_id,
            b.height,
            b.index,
        ))
    });
    Ok(entries)
}

/// Prints records as a table (time, chain, height, tx, record, detail).
pub(crate) fn print_entries(entries: &[IndexedRecord]) {
    println!(
        "{:>15}  {:<16}  {:>7}  {:<8}  {:<12}  DETAIL",
        "TIME_MS", "CHAIN", "HEIGHT", "TX", "RECORD"
    );
    for e in entries {
        println!(
            "{:>15}  {:<16}  {:>7}  {:<8}  {:<12}  {}",
            e.block_timestamp_ms,
            e.chain_id,
            e.height,
            e.tx_id.short(),
            e.record.kind(),
            detail(&e.record)
        );
    }
}

fn history(dirs: &[PathBuf], vm: &str, json: bool) -> anyhow::Result<()> {
    let vm_id = vm_id(vm)?;
    let stores = dirs
        .iter()
        .map(|d| open(d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let entries = merged_history(&stores, &vm_id)?;
    print_history(&entries, &vm_id, &format!("{} store(s)", dirs.len()), json)
}

fn print_history(
    entries: &[IndexedRecord],
    vm_id: &Hash,
    searched: &str,
    json: bool,
) -> anyhow::Result<()> {
    print_records(
        entries,
        json,
        &format!("no migration records of vm {vm_id} in {searched}"),
        &format!("vm {vm_id}"),
    )
}

/// Prints `entries` as JSON, or under `heading` with their count, or
/// `none` when there are none.
fn print_records(
    entries: &[IndexedRecord],
    json: bool,
    none: &str,
    heading: &str,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&entries_json(entries))?);
        return Ok(());
    }
    if entries.is_empty() {
        println!("{none}");
        return Ok(());
    }
    println!("{heading}: {} record(s)", entries.len());
    print_entries(entries);
    Ok(())
}

fn provenance(dir: &Path, entity: &str, json: bool) -> anyhow::Result<()> {
    let store = open(dir)?;
    let entries = store.provenance(entity)?;
    print_provenance(&entries, entity, &store.genesis().chain_id, json)
}

fn print_provenance(
    entries: &[IndexedRecord],
    entity: &str,
    searched: &str,
    json: bool,
) -> anyhow::Result<()> {
    print_records(
        entries,
        json,
        &format!("no provenance records of {entity} on {searched}"),
        entity,
    )
}
