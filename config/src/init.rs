//! Writes a ready-to-run local federation: keys, one config file per node and
//! a top-level `federation.toml`, on loopback addresses with free UDP ports.
//!
//! The defaults reproduce BASICS' Table I topology (4 clouds, 4 local
//! validators each, 12 inter validators spread evenly over the clouds) plus
//! one orchestrator, one gateway and two servers per cloud, and a client
//! identity per cloud for tools (`federact invoke`, `migrate`, `status`).

use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};

use crate::error::InitError;
use crate::federation::{ChainParams, ConsensusTimeouts};
use crate::identity::NodeKey;

/// The shape of a generated local federation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    /// Number of clouds.
    pub clouds: usize,
    /// Servers per cloud.
    pub servers_per_cloud: usize,
    /// Local validators per cloud.
    pub local_validators: usize,
    /// Inter (consortium) validators, spread round-robin over the clouds.
    pub inter_validators: usize,
}

impl Default for Topology {
    /// BASICS Table I: 4 clouds, 4 local validators each, 12 inter validators.
    fn default() -> Self {
        Topology {
            clouds: 4,
            servers_per_cloud: 2,
            local_validators: 4,
            inter_validators: 12,
        }
    }
}

impl Topology {
    /// Total number of nodes this topology makes.
    pub fn node_count(&self) -> usize {
        self.clouds * (3 + self.servers_per_cloud + self.local_validators) + self.inter_validators
    }

    fn check(&self) -> Result<(), InitError> {
        let bad = |m: &str| Err(InitError::Topology(m.to_string()));
        if self.clouds == 0 || self.clouds > 256 {
            return bad("--clouds must be from 1 to 256");
        }
        if self.local_validators == 0 {
            return bad("--local-validators must be at least 1: every cloud runs its own chain");
        }
        if self.clouds > 1 && self.inter_validators == 0 {
            return bad("--inter-validators must be at least 1 when there are several clouds: they run the consortium chain");
        }
        if self.node_count() > 4096 {
            return bad("at most 4096 nodes");
        }
        Ok(())
    }
}

/// The chain parameters `federact init` writes unless told otherwise:
/// BASICS' 16 transactions per block, a 20 ms batch timeout, 4 MiB blocks,
/// no empty blocks, and round-0 timeouts for a LAN (400/200/200 ms, +200
/// ms per round).
pub fn default_chain_params() -> ChainParams {
    ChainParams {
        block_size_txs: 16,
        block_bytes_max: 4 << 20,
        batch_timeout_ms: 20,
        empty_blocks: false,
        timeouts: ConsensusTimeouts {
            propose_ms: 400,
            prevote_ms: 200,
            precommit_ms: 200,
            delta_ms: 200,
        },
    }
}

/// A chain table's parameter lines.
fn chain_params_toml(p: &ChainParams) -> String {
    let t = &p.timeouts;
    format!(
        "block_size_txs = {}\nblock_bytes_max = {}\nbatch_timeout_ms = {}\nempty_blocks = {}\ntimeouts = {{ propose_ms = {}, prevote_ms = {}, precommit_ms = {}, delta_ms = {} }}\n",
        p.block_size_txs,
        p.block_bytes_max,
        p.batch_timeout_ms,
        p.empty_blocks,
        t.propose_ms,
        t.prevote_ms,
        t.precommit_ms,
        t.delta_ms
    )
}

/// What [`write_local_federation`] wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// The top-level federation file.
    pub federation_file: PathBuf,
    /// One config file per node, with the node's name.
    pub node_files: Vec<(String, PathBuf)>,
}

/// The name of cloud `i` (0-based).
pub fn cloud_name(i: usize) -> String {
    format!("cloud-{}", i + 1)
}

/// The id of cloud `i`'s local chain.
pub fn local_chain_id(i: usize) -> String {
    format!("cloud-{}.local", i + 1)
}

/// The id of the consortium chain written by `init`.
pub const CONSORTIUM_CHAIN_ID: &str = "consortium";

struct PlannedNode {
    name: String,
    cloud: usize,
    roles: &'static str,
}

/// Writes keys, node files and `federation.toml` for `topo` under `dir`,
/// with [`default_chain_params`]. Refuses to touch an existing
/// federation unless `force`.
pub fn write_local_federation(
    dir: &Path,
    topo: &Topology,
    force: bool,
) -> Result<Written, InitError> {
    write_local_federation_with(dir, topo, &default_chain_params(), force)
}

/// [`write_local_federation`] with `params` for every chain (checked
/// when the written federation is loaded).
pub fn write_local_federation_with(
    dir: &Path,
    topo: &Topology,
    params: &ChainParams,
    force: bool,
) -> Result<Written, InitError> {
    topo.check()?;
    let federation_file = dir.join("federation.toml");
    if federation_file.exists() && !force {
        return Err(InitError::Exists(federation_file));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InitError::Io { path, source }
    };
    std::fs::create_dir_all(dir.join("keys")).map_err(io(&dir.join("keys")))?;
    std::fs::create_dir_all(dir.join("nodes")).map_err(io(&dir.join("nodes")))?;

    let mut plan = Vec::new();
    for c in 0..topo.clouds {
        let p = format!("c{}", c + 1);
        plan.push(PlannedNode {
            name: format!("{p}-gateway"),
            cloud: c,
            roles: r#"["gateway"]"#,
        });
        plan.push(PlannedNode {
            name: format!("{p}-orchestrator"),
            cloud: c,
            roles: r#"["orchestrator"]"#,
        });
        for s in 0..topo.servers_per_cloud {
            plan.push(PlannedNode {
                name: format!("{p}-server-{}", s + 1),
                cloud: c,
                roles: r#"["server"]"#,
            });
        }
        for v in 0..topo.local_validators {
            plan.push(PlannedNode {
                name: format!("{p}-validator-{}", v + 1),
                cloud: c,
                roles: r#"["validator"]"#,
            });
        }
    }
    for c in 0..topo.clouds {
        plan.push(PlannedNode {
            name: format!("c{}-client", c + 1),
            cloud: c,
            roles: r#"["client"]"#,
        });
    }
    let mut inter_names = Vec::new();
    for i in 0..topo.inter_validators {
        let c = i % topo.clouds;
        let k = i / topo.clouds + 1;
        let name = format!("c{}-inter-{k}", c + 1);
        inter_names.push(name.clone());
        plan.push(PlannedNode {
            name,
            cloud: c,
            roles: r#"["validator"]"#,
        });
    }

    let addrs = free_udp_ports(plan.len()).map_err(io(dir))?;

    let mut text = String::new();
    let _ = writeln!(
        text,
        "# A local federation written by `federact init`: {} clouds, {} servers and {} local validators per cloud, {} inter validators.\n\
         # Check it with `federact config check {}`.\n\n[federation]\nname = \"local\"\n",
        topo.clouds,
        topo.servers_per_cloud,
        topo.local_validators,
        topo.inter_validators,
        federation_file.display()
    );
    for c in 0..topo.clouds {
        let _ = writeln!(text, "[[clouds]]\nname = \"{}\"\n", cloud_name(c));
    }
    let mut node_files = Vec::new();
    for (node, addr) in plan.iter().zip(&addrs) {
        let key = NodeKey::generate();
        let key_rel = format!("keys/{}.key", node.name);
        key.write_file(&dir.join(&key_rel), force)?;
        let _ = writeln!(
            text,
            "[[nodes]]\nname = \"{}\"\ncloud = \"{}\"\nroles = {}\nlisten = \"{}\"\npublic_key = \"{}\"\nkey_file = \"{}\"\ndata_dir = \"data/{}\"\n",
            node.name,
            cloud_name(node.cloud),
            node.roles,
            addr,
            key.id(),
            key_rel,
            node.name
        );
        let node_file = dir.join("nodes").join(format!("{}.toml", node.name));
        let body = format!(
            "# Configuration of node `{}` ({}) in the federation ../federation.toml.\nfederation = \"../federation.toml\"\nnode = \"{}\"\n",
            node.name,
            node_file.display(),
            node.name
        );
        std::fs::write(&node_file, body).map_err(io(&node_file))?;
        node_files.push((node.name.clone(), node_file));
    }
    let chain_params = chain_params_toml(params);
    for c in 0..topo.clouds {
        let validators: Vec<String> = (0..topo.local_validators)
            .map(|v| format!("\"c{}-validator-{}\"", c + 1, v + 1))
            .collect();
        let _ = writeln!(
            text,
            "[[chains]]\nid = \"{}\"\nkind = \"local\"\ncloud = \"{}\"\nvalidators = [{}]\n{chain_params}",
            local_chain_id(c),
            cloud_name(c),
            validators.join(", ")
        );
    }
    if !inter_names.is_empty() {
        let validators: Vec<String> = inter_names.iter().map(|n| format!("\"{n}\"")).collect();
        let _ = writeln!(
            text,
            "[[chains]]\nid = \"{CONSORTIUM_CHAIN_ID}\"\nkind = \"consortium\"\nvalidators = [{}]\n{chain_params}",
            validators.join(", ")
        );
    }
    text.push_str("[transport]\nmax_frame_bytes = 16777216\nmax_concurrent_streams = 1024\n\n[telemetry]\n# otlp_endpoint = \"http://127.0.0.1:4317\"\nsampling_ratio = 1.0\n");
    std::fs::write(&federation_file, text).map_err(io(&federation_file))?;
    Ok(Written {
        federation_file,
        node_files,
    })
}

/// `n` distinct free UDP ports on 127.0.0.1, holding every socket until
/// all are chosen so none is handed out twice. They are picked below the
/// kernel's ephemeral range (above it if there is no room below): a port
/// the OS hands out for `:0` may be taken by any process's outgoing socket
/// between this check and the node's bind (seen in CI: "Address already in
/// use" while tests ran in parallel); ports outside the range are only ever
/// taken by name.
pub fn free_udp_ports(n: usize) -> std::io::Result<Vec<SocketAddr>> {
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            let mut it = t.split_whitespace().map(|x| x.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999));
    let (from, to) = if low > 11_000 {
        (10_000, low)
    } else {
        (high.saturating_add(1), u16::MAX)
    };
    let mut held = Vec::with_capacity(n);
    if to > from {
        let span = u32::from(to - from);
        for _ in 0..(20 * n + 1000) {
            if held.len() == n {
                break;
            }
            let port = from + (rand::random::<u32>() % span) as u16;
            if let Ok(s) = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], port))) {
                held.push(s);
            }
        }
    }
    while held.len() < n {
        held.push(UdpSocket::bind("127.0.0.1:0")?);
    }
    held.iter().map(|s| s.local_addr()).collect()
}
