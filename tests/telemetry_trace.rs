//! One inter-cloud migration and one cross-cloud offload in a federation of
//! OS processes (`federact node` per node, loopback QUIC), every node
//! exporting OTLP to a real receiver (the official protobuf definitions,
//! `actors/tests/support/otlp_receiver.rs`) named in the federation's
//! `[telemetry]` section:
//! - the migration is one trace whose spans come from the source server,
//!   both gateways, validators of the consortium and of a local chain, and
//!   the destination server, with no orphan spans; the committed
//!   `Indication` carries that trace id;
//! - the offload is one trace from the requesting server through both
//!   orchestrators to the executor;
//! - committed-transaction metrics arrive;
//! - with the backend stopped, the nodes keep committing and every process
//!   exits within 2 s of SIGTERM.
//!
//! The two servers that host a function run in this test process (a
//! `federact node` process hosts none); they export as `test-servers`.

#[path = "../actors/tests/support/otlp_receiver.rs"]
#[allow(dead_code)]
mod otlp_receiver;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use federact::actors::migration::migrate_image;
use federact::actors::telemetry::{self, TelemetryConfig};
use federact::actors::{Bytes, Function, FunctionError, Node, NodeOptions, ServerLimits};
use federact::config::{write_local_federation, Federation, NodeConfig, Topology};
use federact::federation::{Membership, Transport};
use federact::ledger::hash::Hash;
use federact::ledger::record::{Record, Site};
use federact::ledger::store::ChainStore;

use otlp_receiver::{OtlpReceiver, Received, ReceivedSpan};

fn federact() -> Command {
    Command::new(env!("CARGO_BIN_EXE_federact"))
}

/// The function the in-test servers host: echoes its payload reversed.
#[derive(Default)]
struct Reverse;

impl Function for Reverse {
    fn call(&mut self, _key: &str, payload: Bytes) -> Result<Bytes, FunctionError> {
        Ok(Bytes::from(
            payload.iter().rev().copied().collect::<Vec<u8>>(),
        ))
    }
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
    fn restore(_: &[u8]) -> Result<Self, FunctionError> {
        Ok(Reverse)
    }
}

struct Nodes(Vec<(String, Child)>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_nodes(dir: &Path, fed: &Federation, skip: &[&str]) -> Nodes {
    let mut nodes = Vec::new();
    for n in fed
        .nodes()
        .iter()
        .filter(|n| !skip.contains(&n.name()) && n.roles().runs_actors())
    {
        let cfg = dir.join("nodes").join(format!("{}.toml", n.name()));
        let log = std::fs::File::create(dir.join(format!("{}.log", n.name()))).unwrap();
        let child = federact()
            .args(["node", "--config"])
            .arg(&cfg)
            .env(
                "RUST_LOG",
                std::env::var("FEDERACT_TEST_LOG").unwrap_or("warn".into()),
            )
            // Short export intervals so the test waits seconds, not the
            // production defaults.
            .env("OTEL_METRIC_EXPORT_INTERVAL", "500")
            .env("OTEL_BSP_SCHEDULE_DELAY", "200")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_SDK_DISABLED")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn federact node");
        nodes.push((n.name().to_string(), child));
    }
    Nodes(nodes)
}

fn service(s: &ReceivedSpan) -> &str {
    s.resource
        .get("service.name")
        .map(String::as_str)
        .unwrap_or("")
}

/// The spans of trace `trace_id`.
fn trace<'a>(r: &'a Received, trace_id: &str) -> Vec<&'a ReceivedSpan> {
    r.spans.iter().filter(|s| s.trace_id == trace_id).collect()
}

/// Spans of the trace whose parent was never received.
fn orphans<'a>(spans: &[&'a ReceivedSpan]) -> Vec<&'a ReceivedSpan> {
    let ids: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    spans
        .iter()
        .filter(|s| !s.parent_span_id.is_empty() && !ids.contains(s.parent_span_id.as_str()))
        .copied()
        .collect()
}

fn services<'a>(spans: &[&'a ReceivedSpan]) -> HashSet<&'a str> {
    spans.iter().map(|s| service(s)).collect()
}

fn describe(spans: &[&ReceivedSpan]) -> String {
    let mut out = String::new();
    for s in spans {
        out.push_str(&format!(
            "\n  {} {} span={} parent={}",
            service(s),
            s.name,
            s.span_id,
            s.parent_span_id
        ));
    }
    out
}

/// `FEDERACT_KEEP=1` keeps the federation's directory (node logs, stores)
/// and `FEDERACT_TEST_LOG` sets every process's log filter, for diagnosis.
#[test]
fn migration_and_offload_are_single_traces_across_processes() {
    let dir = tempfile::Builder::new()
        .disable_cleanup(std::env::var_os("FEDERACT_KEEP").is_some())
        .tempdir()
        .unwrap();
    eprintln!("federation in {}", dir.path().display());
    let topo = Topology {
        clouds: 2,
        servers_per_cloud: 2,
        local_validators: 1,
        inter_validators: 2,
    };
    let written = write_local_federation(dir.path(), &topo, false).unwrap();
    let in_test = ["c1-server-2", "c2-server-2"];

    let system = actix::System::new();
    let receiver = system.block_on(OtlpReceiver::start_grpc()).unwrap();
    // Point the whole federation at the receiver through its `[telemetry]`.
    let fed_text = std::fs::read_to_string(&written.federation_file).unwrap();
    let fed_text = fed_text.replace(
        "# otlp_endpoint = \"http://127.0.0.1:4317\"",
        &format!("otlp_endpoint = \"{}\"", receiver.endpoint()),
    );
    assert!(fed_text.contains(&receiver.endpoint()), "telemetry section");
    std::fs::write(&written.federation_file, fed_text).unwrap();
    let fed = Federation::load(&written.federation_file).unwrap();

    let mut nodes = start_nodes(dir.path(), &fed, &in_test);

    // This process: the two servers that host `reverse`, exporting as one
    // service. The requester (cloud-1) has no call room, so its task is
    // offloaded; cloud-1 has no other server with the function, so the
    // contract goes abroad to cloud-2's server.
    let mut tcfg = TelemetryConfig::for_embedded("test-servers", fed.telemetry()).unwrap();
    tcfg.batch_delay = Duration::from_millis(200);
    tcfg.metrics_interval = Duration::from_millis(500);
    // The backend is stopped on purpose below: its export errors are noise.
    tcfg.log_filter = std::env::var("FEDERACT_TEST_LOG")
        .unwrap_or("warn,opentelemetry_sdk=off,opentelemetry_otlp=off".into());
    let guard = telemetry::init(&tcfg).unwrap();

    let image = dir.path().join("vm.img");
    std::fs::write(&image, vec![7u8; 256 * 1024]).unwrap();
    let image_vm_id = Hash::of(&vec![7u8; 256 * 1024]);

    let (report, offloaded, after_outage, migration_trace_id) = system.block_on(async {
        let start = |name: &str, inflight_max: u32| {
            let cfg =
                NodeConfig::load(&dir.path().join("nodes").join(format!("{name}.toml"))).unwrap();
            let key = cfg.load_key().unwrap();
            let options = NodeOptions::default()
                .function::<Reverse>("reverse")
                .server_limits(ServerLimits {
                    inflight_max,
                    report_every: Duration::from_millis(100),
                    ..ServerLimits::default()
                });
            async move { Node::start_with(&cfg, key, options).await.unwrap() }
        };
        let requester = start("c1-server-2", 0).await;
        let executor = start("c2-server-2", 64).await;

        // The migration, asked of the source server's migration actor over
        // QUIC like `federact migrate` does, as cloud 1's client identity
        // (a second endpoint with a running node's key would supersede that
        // node's connections).
        let cfg = NodeConfig::load(&dir.path().join("nodes").join("c1-client.toml")).unwrap();
        let tool = Transport::bind(
            &cfg.load_key().unwrap(),
            Membership::from_federation(&fed),
            *fed.transport(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let source = fed.node("c1-server-1").unwrap().id();
        let report = migrate_image(
            &tool,
            source,
            image.to_str().unwrap(),
            Site::new("cloud-2", "c2-server-1"),
            Duration::from_secs(60),
        )
        .await
        .expect("the migration runs");
        tool.close().await;

        // The offload: a task on the saturated requester. Load reports may
        // still be on their way: retry (bounded) while nobody has room.
        let invoker = requester.invoker().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let offloaded = loop {
            match invoker.task("reverse", "abc").await {
                Ok(out) => break out,
                Err(e) => {
                    assert!(Instant::now() < deadline, "offload within 60 s: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };

        // Wait (bounded) for the migration's trace to be complete.
        let migration_trace = |r: &Received| -> Option<String> {
            r.spans
                .iter()
                .find(|s| {
                    s.name == "migration"
                        && service(s) == "c1-server-1"
                        && s.attributes.get("migration.side").map(String::as_str) == Some("source")
                })
                .map(|s| s.trace_id.clone())
        };
        let wanted = [
            "c1-server-1",
            "c1-gateway",
            "c2-gateway",
            "c2-server-1",
            "c1-validator-1",
            "c2-validator-1",
        ];
        let got = receiver
            .wait_until(Duration::from_secs(60), |r| {
                let Some(t) = migration_trace(r) else {
                    return false;
                };
                let spans = trace(r, &t);
                let names = services(&spans);
                wanted.iter().all(|w| names.contains(w))
                    && names.iter().any(|n| n.contains("-inter-"))
                    && orphans(&spans).is_empty()
                    && spans
                        .iter()
                        .any(|s| s.name == "migration" && service(s) == "c2-server-1")
            })
            .await;
        let received = match got {
            Ok(r) => r,
            Err(r) => {
                let t = migration_trace(&r).unwrap_or_default();
                let spans = trace(&r, &t);
                panic!(
                    "migration trace {t} incomplete: services {:?}, orphans {}; spans:{}",
                    services(&spans),
                    describe(&orphans(&spans)),
                    describe(&spans)
                );
            }
        };
        let t = migration_trace(&received).unwrap();
        let spans = trace(&received, &t);
        let names = services(&spans);
        assert!(names.len() >= 4);
        eprintln!(
            "migration trace {t}: {} spans from {} services {:?}",
            spans.len(),
            names.len(),
            names
        );
        // Each protocol step is a child span of the source's migration.
        for step in [
            "migration.snapshot",
            "migration.submit",
            "migration.transfer",
        ] {
            assert!(
                spans
                    .iter()
                    .any(|s| s.name == step && service(s) == "c1-server-1"),
                "step {step} in the trace:{}",
                describe(&spans)
            );
        }
        assert!(spans.iter().any(|s| s.name == "gateway.submit"
            && s.attributes.get("record").map(String::as_str) == Some("Indication")));

        // The offload's trace: requester → cloud-1 orchestrator → cloud-2
        // orchestrator → executor, no orphans.
        let got = receiver
            .wait_until(Duration::from_secs(30), |r| {
                let Some(task) = r
                    .spans
                    .iter()
                    .find(|s| s.name == "task" && service(s) == "test-servers")
                else {
                    return false;
                };
                let spans = trace(r, &task.trace_id);
                let names = services(&spans);
                names.contains("c1-orchestrator")
                    && names.contains("c2-orchestrator")
                    && spans.iter().any(|s| s.name == "offload")
                    && spans.iter().any(|s| s.name == "server.run_task")
                    && orphans(&spans).is_empty()
            })
            .await;
        if let Err(r) = got {
            let spans: Vec<&ReceivedSpan> = r
                .spans
                .iter()
                .filter(|s| service(s) == "test-servers" || s.name.starts_with("offload"))
                .collect();
            panic!("offload trace incomplete:{}", describe(&spans));
        }

        // Committed-transaction metrics from the validators.
        let got = receiver
            .wait_until(Duration::from_secs(30), |r| {
                r.points_named("federact.tx.committed")
                    .iter()
                    .any(|p| p.value >= 1.0 && p.resource.contains_key("service.name"))
                    && !r.points_named("federact.commit.latency").is_empty()
            })
            .await;
        assert!(got.is_ok(), "committed-tx metrics arrive");

        // Backend down: the federation keeps working.
        drop(receiver);
        let client = requester.ledger_client().unwrap();
        let after = client
            .submit(Record::ProvData {
                data_digest: Hash::of(b"after the backend stopped"),
                generated_by: "telemetry-test".into(),
                used_by: None,
            })
            .await
            .expect("commits with the backend down");

        requester.shutdown().await;
        executor.shutdown().await;
        (report, offloaded, after, t)
    });
    assert!(report.completed, "migration completed: {report:?}");
    assert_eq!(report.vm_id, image_vm_id);
    assert_eq!(&offloaded[..], b"cba");
    assert!(after_outage.height >= 1);

    // Every process exits within 2 s of SIGTERM, backend down.
    let signalled = Instant::now();
    for (_, child) in &nodes.0 {
        // SAFETY: kill(2) on a child we spawned and have not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }
    // Each process's own exit time: poll them all (bounded), not one after
    // the other.
    let mut slow = Vec::new();
    let mut left: Vec<(String, Child)> = std::mem::take(&mut nodes.0);
    while !left.is_empty() {
        let mut still = Vec::new();
        for (name, mut child) in left {
            match child.try_wait().expect("try_wait") {
                Some(status) => {
                    assert!(status.success(), "node {name} exited with {status}");
                    let took = signalled.elapsed();
                    if took >= Duration::from_secs(2) {
                        slow.push((name, took));
                    }
                }
                None => still.push((name, child)),
            }
        }
        left = still;
        if signalled.elapsed() > Duration::from_secs(30) {
            nodes.0 = left;
            panic!("nodes still running 30 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(slow.is_empty(), "nodes slower than 2 s to stop: {slow:?}");
    drop(guard);

    // The committed Indication names the migration's trace. The report
    // lists it when the source saw its own receipt; the destination's
    // confirmation may overtake that receipt (the migration then completes
    // without waiting for it), so the chains are searched either way.
    let tx = fed
        .chains()
        .iter()
        .find_map(|spec| {
            let v = &spec.validator_names()[0];
            let store = ChainStore::open(
                &dir.path()
                    .join("data")
                    .join(v)
                    .join("chains")
                    .join(spec.id())
                    .join("chain"),
                None,
            )
            .ok()?;
            store
                .vm_history(&report.vm_id)
                .unwrap()
                .iter()
                .filter_map(|r| store.block(r.height).unwrap())
                .flat_map(|b| b.txs)
                .find(|tx| {
                    matches!(tx.record(), Record::Indication { migration_id, .. }
                        if *migration_id == report.migration_id)
                })
        })
        .unwrap_or_else(|| panic!("the Indication is on a chain: {report:?}"));
    let trace_id: String = tx
        .trace_id()
        .expect("the Indication carries a trace id")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(trace_id, migration_trace_id);
}
