//! A client of a running multi-process federation (started with
//! `federact up DIR`, e.g. by `examples/federation/small.sh`): connects as
//! cloud 1's client identity, calls a stateful function instance, migrates
//! a VM image from a server of cloud 1 to a server of cloud 2, and prints
//! the chain heights its gateways report.
//!
//! `cargo run --release --example multi_process -- DIR`

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use federact::actors::migration::migrate_image;
use federact::actors::{Invoker, LedgerClient};
use federact::config::{NodeConfig, Role};
use federact::ledger::record::Site;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .ok_or("usage: multi_process DIR (a federation started with `federact up DIR`)")?;
    let cfg = NodeConfig::load(&dir.join("nodes/c1-client.toml"))?;
    let key = cfg.load_key()?;
    let fed = cfg.federation().clone();
    let system = actix::System::new();
    system.block_on(async move {
        // Functions: the first call places the instance (recorded on cloud 1's chain).
        let invoker = Invoker::connect(&cfg, key.clone())
            .await?
            .with_timeout(Duration::from_secs(30));
        for delta in [5, 7, 30] {
            let total = invoker
                .invoke("counter", "example", delta.to_string())
                .await?;
            println!(
                "counter/example += {delta} → {}",
                String::from_utf8_lossy(&total)
            );
        }

        // A VM image migrated across clouds, notarised on the chains.
        let servers = |cloud: &str| -> Vec<String> {
            fed.nodes_with_role(cloud, Role::Server)
                .map(|n| n.name().to_string())
                .collect()
        };
        let (c1, c2) = (fed.clouds()[0].name(), fed.clouds()[1].name());
        let (from, to) = (servers(c1)[0].clone(), servers(c2)[0].clone());
        let image = dir.join("example-vm.img");
        let mut f = std::fs::File::create(&image)?;
        for i in 0..256u32 {
            f.write_all(&[i as u8; 4096])?;
        }
        drop(f);
        let source = fed.node(&from).ok_or("no source server")?.id();
        let report = migrate_image(
            invoker.transport(),
            source,
            &image.to_string_lossy(),
            Site::new(c2, to.clone()),
            Duration::from_secs(120),
        )
        .await?;
        println!(
            "vm {} {from} → {to}: completed = {} in {} ms; records: {:?}",
            report.vm_id.short(),
            report.completed,
            report.elapsed_ms,
            report.records
        );

        // What the gateway of cloud 1 has seen committed.
        let gateway = fed.gateway(c1).ok_or("no gateway")?.id();
        let ledger = LedgerClient::new(invoker.transport().clone(), key, gateway);
        for (chain, height) in ledger.status().await? {
            println!("{chain}: height {height}");
        }
        invoker.close().await;
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
