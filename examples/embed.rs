//! A small service embedding a whole federation in one process: registers
//! a function on every server, calls it, and prints where the placement
//! was recorded.
//!
//! `cargo run --example embed`

use std::time::Duration;

use federact_actors::{
    Bytes, EmbeddedFederation, Function, FunctionError, NodeOptions, ServerLimits,
};
use federact_config::{write_local_federation, Topology};

/// Greets and counts greetings per instance key.
#[derive(Default)]
struct Greeter {
    greeted: u64,
}

impl Function for Greeter {
    fn call(&mut self, key: &str, payload: Bytes) -> Result<Bytes, FunctionError> {
        self.greeted += 1;
        let who = String::from_utf8_lossy(&payload);
        Ok(Bytes::from(format!(
            "hello {who} from {key} (#{})",
            self.greeted
        )))
    }
    fn snapshot(&self) -> Vec<u8> {
        self.greeted.to_be_bytes().to_vec()
    }
    fn restore(bytes: &[u8]) -> Result<Self, FunctionError> {
        let a: [u8; 8] = bytes.try_into().map_err(|_| FunctionError::Restore {
            detail: "expected 8 bytes".into(),
        })?;
        Ok(Greeter {
            greeted: u64::from_be_bytes(a),
        })
    }
}

#[actix_rt::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let topo = Topology {
        clouds: 1,
        servers_per_cloud: 2,
        local_validators: 1,
        inter_validators: 0,
    };
    write_local_federation(dir.path(), &topo, false)?;
    let options = NodeOptions::default()
        .function::<Greeter>("greeter")
        .server_limits(ServerLimits {
            idle: Duration::from_secs(1),
            ..ServerLimits::default()
        });
    let fed = EmbeddedFederation::start_with(dir.path(), options).await?;
    let invoker = fed
        .node("c1-server-1")
        .and_then(|n| n.invoker())
        .ok_or_else(|| anyhow::anyhow!("no invoker"))?;

    let t = std::time::Instant::now();
    let out = invoker.invoke("greeter", "alice", "world").await?;
    println!(
        "{} (first call, placed and recorded: {:?})",
        String::from_utf8_lossy(&out),
        t.elapsed()
    );
    let t = std::time::Instant::now();
    let out = invoker.invoke("greeter", "alice", "again").await?;
    println!(
        "{} (warm call: {:?})",
        String::from_utf8_lossy(&out),
        t.elapsed()
    );

    // Scale to zero, then continue from the saved state.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let out = invoker.invoke("greeter", "alice", "after idle").await?;
    println!(
        "{} (reactivated from its snapshot)",
        String::from_utf8_lossy(&out)
    );

    let client = fed
        .node("c1-server-1")
        .and_then(|n| n.ledger_client())
        .ok_or_else(|| anyhow::anyhow!("no gateway"))?;
    println!("chain heights: {:?}", client.status().await?);
    fed.shutdown().await;
    Ok(())
}
