//! A federation of real OS processes (`federact node` per node) over
//! loopback QUIC: every chain commits what the gateways submit, SIGTERM
//! shuts nodes down cleanly, and afterwards `federact ledger verify` passes
//! on every validator's store and all validators of a chain hold identical
//! blocks.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use federact::actors::LedgerClient;
use federact::config::{write_local_federation, Federation, NodeConfig, Topology};
use federact::federation::{Membership, Transport};
use federact::ledger::hash::Hash;
use federact::ledger::record::{Record, Scope, Site};
use federact::ledger::store::ChainStore;

fn federact() -> Command {
    Command::new(env!("CARGO_BIN_EXE_federact"))
}

struct Nodes(Vec<(String, Child)>);

impl Nodes {
    fn terminate(&mut self) {
        for (_, child) in &self.0 {
            // SIGTERM: the node flushes its stores and closes its connections.
            // SAFETY: kill(2) on a child we spawned and have not yet reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        for (name, child) in &mut self.0 {
            let status = child.wait().expect("wait");
            assert!(status.success(), "node {name} exited with {status}");
        }
        self.0.clear();
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_nodes(dir: &Path, fed: &Federation, skip: &str) -> Nodes {
    let mut nodes = Vec::new();
    for n in fed
        .nodes()
        .iter()
        .filter(|n| n.name() != skip && n.roles().runs_actors())
    {
        let cfg = dir.join("nodes").join(format!("{}.toml", n.name()));
        let log = std::fs::File::create(dir.join(format!("{}.log", n.name()))).unwrap();
        let child = federact()
            .args(["node", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn federact node");
        nodes.push((n.name().to_string(), child));
    }
    Nodes(nodes)
}

#[test]
fn processes_commit_relay_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let topo = Topology {
        clouds: 2,
        servers_per_cloud: 1,
        local_validators: 4,
        inter_validators: 4,
    };
    let written = write_local_federation(dir.path(), &topo, false).unwrap();
    let fed = Federation::load(&written.federation_file).unwrap();
    // The test itself plays server c1-server-1 (a member key), so that node
    // is not started as a process.
    let me = "c1-server-1";
    let mut nodes = start_nodes(dir.path(), &fed, me);

    let cfg = NodeConfig::load(&dir.path().join("nodes").join(format!("{me}.toml"))).unwrap();
    let key = cfg.load_key().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let receipts = rt.block_on(async {
        let transport = Transport::bind(
            &key,
            Membership::from_federation(&fed),
            *fed.transport(),
            cfg.spec().listen(),
        )
        .await
        .unwrap();
        let gateway = fed.gateway("cloud-1").unwrap().id();
        let client = LedgerClient::new(transport.clone(), key, gateway)
            .with_timeout(Duration::from_secs(60));
        let mut receipts = Vec::new();
        for i in 0..5u64 {
            let r = client
                .submit(Record::ProvData {
                    data_digest: Hash::of(&i.to_be_bytes()),
                    generated_by: "p".into(),
                    used_by: None,
                })
                .await
                .expect("local record commits");
            receipts.push(r);
        }
        let inter = client
            .submit(Record::Indication {
                migration_id: Hash::of(b"m"),
                vm_id: Hash::of(b"vm"),
                source: Site {
                    cloud: "cloud-1".into(),
                    server: me.into(),
                },
                destination: Site {
                    cloud: "cloud-2".into(),
                    server: "c2-server-1".into(),
                },
                scope: Scope::Inter,
            })
            .await
            .expect("consortium record commits");
        receipts.push(inter);
        // The relay delivers the Indication to cloud-2's chain: wait (bounded)
        // until cloud-2's gateway sees its local chain commit it.
        let gw2 = fed.gateway("cloud-2").unwrap().id();
        let probe = LedgerClient::new(transport.clone(), cfg.load_key().unwrap(), gw2)
            .with_timeout(Duration::from_secs(5));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let heights = probe.status().await.unwrap_or_default();
            if heights.iter().any(|(c, h)| c == "cloud-2.local" && *h >= 1) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "relay to cloud-2 within 60 s: {heights:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        transport.close().await;
        receipts
    });
    assert!(receipts.iter().all(|r| r.height >= 1 && r.proof.is_some()));
    assert_eq!(receipts.last().unwrap().chain_id, "consortium");

    // Remote queries through the running gateway, answers checked by the CLI.
    let via = dir.path().join("nodes").join("c1-server-1.toml");
    let query = |args: &[&str]| -> serde_json::Value {
        let out = federact()
            .arg("ledger")
            .args(args)
            .arg("--via")
            .arg(&via)
            .arg("--json")
            .output()
            .expect("run federact ledger");
        assert!(
            out.status.success(),
            "federact ledger {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON")
    };
    let first = &receipts[0];
    let tx = query(&["tx", "--id", &first.tx_id.to_string()]);
    assert_eq!(tx["chain_id"], "cloud-1.local");
    assert_eq!(tx["height"], first.height);
    let history = query(&["history", "--vm", &Hash::of(b"vm").to_string()]);
    let chains: Vec<&str> = history
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["chain_id"].as_str())
        .collect();
    assert!(chains.contains(&"consortium"), "{history}");
    let block = query(&["show", "--height", &first.height.to_string()]);
    assert_eq!(block["header"]["height"], first.height);
    nodes.terminate();

    for chain in fed.chains() {
        let mut tips = Vec::new();
        let mut first: Option<Vec<Hash>> = None;
        for v in chain.validator_names() {
            let store_dir = dir
                .path()
                .join("data")
                .join(v)
                .join("chains")
                .join(chain.id())
                .join("chain");
            let out = federact()
                .args(["ledger", "verify"])
                .arg(&store_dir)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{v}/{}: {}",
                chain.id(),
                String::from_utf8_lossy(&out.stdout)
            );
            let store = ChainStore::open(&store_dir, None).unwrap();
            let ids: Vec<Hash> = (1..=store.tip().height)
                .map(|h| store.block(h).unwrap().unwrap().id())
                .collect();
            tips.push(ids.len());
            // Validators may stop a block apart; the common prefix is identical.
            match &first {
                None => first = Some(ids),
                Some(f) => {
                    let n = f.len().min(ids.len());
                    assert_eq!(f[..n], ids[..n], "validators of {} disagree", chain.id());
                }
            }
        }
        // A quorum committed every block the gateways saw; a validator may
        // be a block behind when SIGTERM arrives.
        let committed = tips.iter().filter(|&&t| t >= 1).count();
        assert!(
            committed >= chain.quorum(),
            "chain {} committed: {tips:?}",
            chain.id()
        );
    }
}
