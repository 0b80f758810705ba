//! The federation's configuration: clouds, nodes and their roles, chains and
//! their validator sets, transport limits and telemetry.
//!
//! [`Federation::load`] parses TOML into raw, span-carrying structs, then
//! checks every cross-reference and turns them into types that can only hold a
//! valid federation (fields are private; the only way in is the parser). Each
//! problem is a [`ConfigError`] naming file, line, column and what to change.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::error::{ConfigError, ConfigErrorKind, Location};
use crate::identity::NodeId;

/// The roles a node can play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Hosts function instances and executes offloaded tasks.
    Server,
    /// Places instances and brokers offloads for its cloud.
    Orchestrator,
    /// Its cloud's single entry point to the chains; relays between them.
    Gateway,
    /// Runs consensus for one or more chains.
    Validator,
    /// An identity for operators and tools (`federact invoke`, `migrate`,
    /// `status`): a member that may connect and submit, and runs no actor.
    Client,
}

impl Role {
    /// All roles, in display order.
    pub const ALL: [Role; 5] = [
        Role::Server,
        Role::Orchestrator,
        Role::Gateway,
        Role::Validator,
        Role::Client,
    ];

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// The role's lowercase name as written in TOML.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Orchestrator => "orchestrator",
            Role::Gateway => "gateway",
            Role::Validator => "validator",
            Role::Client => "client",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Roles(u8);

impl Roles {
    /// Whether the set holds `role`.
    pub fn contains(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    /// Adds a role.
    pub fn insert(&mut self, role: Role) {
        self.0 |= role.bit();
    }

    /// The roles in display order.
    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |r| self.contains(*r))
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether a node with these roles runs any actor (a node that is only
    /// a [`Role::Client`] is an identity for tools, not a process to run).
    pub fn runs_actors(self) -> bool {
        self.iter().any(|r| r != Role::Client)
    }
}

impl FromIterator<Role> for Roles {
    fn from_iter<I: IntoIterator<Item = Role>>(iter: I) -> Self {
        let mut r = Roles::default();
        for role in iter {
            r.insert(role);
        }
        r
    }
}

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.iter().map(Role::as_str).collect();
        f.write_str(&names.join(","))
    }
}

/// Whether a chain is one cloud's own or the consortium shared by all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainKind {
    /// A cloud's local chain, run by that cloud's validators.
    Local,
    /// The consortium chain, run by the inter validators of all clouds.
    Consortium,
}

/// Consensus timeouts of a chain (Tendermint: `timeout(r) = base + r * delta`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsensusTimeouts {
    /// Wait for a proposal in round 0.
    pub propose_ms: u64,
    /// Wait after 2f+1 prevotes for any value in round 0.
    pub prevote_ms: u64,
    /// Wait after 2f+1 precommits for any value in round 0.
    pub precommit_ms: u64,
    /// Added to each timeout per round, so rounds grow until the network is timely.
    pub delta_ms: u64,
}

impl Default for ConsensusTimeouts {
    fn default() -> Self {
        ConsensusTimeouts {
            propose_ms: 1000,
            prevote_ms: 500,
            precommit_ms: 500,
            delta_ms: 500,
        }
    }
}

/// Block production parameters of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainParams {
    /// Maximum transactions per block (BASICS Table I: 16).
    pub block_size_txs: u32,
    /// Maximum encoded bytes of a block's transactions.
    pub block_bytes_max: u64,
    /// A proposer with fewer than `block_size_txs` waits at most this long.
    pub batch_timeout_ms: u64,
    /// Whether to commit blocks with no transactions.
    pub empty_blocks: bool,
    /// Consensus timeouts.
    pub timeouts: ConsensusTimeouts,
}

/// A chain: who validates it and how it makes blocks.
#[derive(Debug, Clone)]
pub struct ChainSpec {
    id: String,
    kind: ChainKind,
    cloud: Option<String>,
    validators: Vec<NodeId>,
    validator_names: Vec<String>,
    fault_tolerance: u32,
    params: ChainParams,
}

impl ChainSpec {
    /// The chain id (unique in the federation).
    pub fn id(&self) -> &str {
        &self.id
    }
    /// Local or consortium.
    pub fn kind(&self) -> ChainKind {
        self.kind
    }
    /// The owning cloud of a local chain.
    pub fn cloud(&self) -> Option<&str> {
        self.cloud.as_deref()
    }
    /// Validator keys in proposer order.
    pub fn validators(&self) -> &[NodeId] {
        &self.validators
    }
    /// Validator node names, in the same order as [`ChainSpec::validators`].
    pub fn validator_names(&self) -> &[String] {
        &self.validator_names
    }
    /// f: the number of Byzantine validators tolerated (n >= 3f+1).
    pub fn fault_tolerance(&self) -> u32 {
        self.fault_tolerance
    }
    /// Votes needed to commit: 2f+1 when n = 3f+1, in general n - f.
    pub fn quorum(&self) -> usize {
        self.validators.len() - self.fault_tolerance as usize
    }
    /// Block production parameters.
    pub fn params(&self) -> &ChainParams {
        &self.params
    }
}

/// Limits of the QUIC transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportLimits {
    /// Largest accepted frame; larger ones are refused before being read.
    pub max_frame_bytes: u32,
    /// Concurrent bidirectional streams a peer may open.
    pub max_concurrent_streams: u32,
    /// Requests in flight per peer before backpressure applies.
    pub max_in_flight_per_peer: u32,
    /// Idle time after which a connection is closed.
    pub idle_timeout_ms: u64,
    /// Keep-alive interval.
    pub keep_alive_ms: u64,
}

impl Default for TransportLimits {
    fn default() -> Self {
        TransportLimits {
            max_frame_bytes: 16 << 20,
            max_concurrent_streams: 1024,
            max_in_flight_per_peer: 4096,
            idle_timeout_ms: 30_000,
            keep_alive_ms: 5_000,
        }
    }
}

/// Telemetry export settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Telemetry {
    /// OTLP endpoint (e.g. `http://127.0.0.1:4317`); none means no export.
    pub otlp_endpoint: Option<String>,
    /// `grpc` (default) or `http/protobuf`.
    pub otlp_protocol: Option<String>,
    /// Fraction of traces sampled, 0.0 to 1.0.
    pub sampling_ratio: Option<f64>,
}

/// One node of the federation.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    name: String,
    cloud: String,
    roles: Roles,
    listen: SocketAddr,
    id: NodeId,
    key_file: PathBuf,
    data_dir: PathBuf,
}

impl NodeSpec {
    /// Unique node name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The cloud the node belongs to.
    pub fn cloud(&self) -> &str {
        &self.cloud
    }
    /// Its roles.
    pub fn roles(&self) -> Roles {
        self.roles
    }
    /// QUIC listen address.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }
    /// Its public key.
    pub fn id(&self) -> NodeId {
        self.id
    }
    /// Its key file (absolute, or relative to the working directory if the
    /// federation file was given relative).
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }
    /// Its data directory (sled stores, received images).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// A cloud (an administrative domain with its own chain).
#[derive(Debug, Clone)]
pub struct Cloud {
    name: String,
}

impl Cloud {
    /// Unique cloud name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A valid federation.
#[derive(Debug, Clone)]
pub struct Federation {
    name: String,
    source: PathBuf,
    clouds: Vec<Cloud>,
    nodes: Vec<NodeSpec>,
    chains: Vec<ChainSpec>,
    transport: TransportLimits,
    telemetry: Telemetry,
    by_id: HashMap<NodeId, usize>,
}

impl Federation {
    /// Reads and checks a federation file.
    pub fn load(path: &Path) -> Result<Federation, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            location: None,
            kind: Box::new(ConfigErrorKind::Io(e)),
        })?;
        Federation::parse(&text, path)
    }

    /// Checks federation TOML `text`; `path` names it in errors and anchors
    /// relative key-file and data-dir paths.
    pub fn parse(text: &str, path: &Path) -> Result<Federation, ConfigError> {
        let err = |span: Option<Range<usize>>, kind| ConfigError {
            file: path.to_path_buf(),
            location: span.map(|s| Location::of_offset(text, s.start)),
            kind: Box::new(kind),
        };
        let raw: RawFederation = toml::from_str(text)
            .map_err(|e| err(e.span(), ConfigErrorKind::Syntax(e.message().to_string())))?;
        let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let line_of = |span: Range<usize>| Location::of_offset(text, span.start).line;

        // Clouds.
        let mut clouds = Vec::new();
        let mut cloud_lines: BTreeMap<String, usize> = BTreeMap::new();
        for c in &raw.clouds {
            let name = c.name.get_ref().clone();
            if let Some(first_line) = cloud_lines.get(&name) {
                return Err(err(
                    Some(c.name.span()),
                    ConfigErrorKind::DuplicateCloud {
                        name,
                        first_line: *first_line,
                    },
                ));
            }
            cloud_lines.insert(name.clone(), line_of(c.name.span()));
            clouds.push(Cloud { name });
        }
        let known_clouds = || cloud_lines.keys().cloned().collect::<Vec<_>>().join(", ");

        // Nodes.
        let mut nodes: Vec<NodeSpec> = Vec::new();
        let mut node_index: HashMap<String, usize> = HashMap::new();
        let mut by_id: HashMap<NodeId, usize> = HashMap::new();
        let mut by_addr: Vec<(SocketAddr, usize)> = Vec::new();
        for n in &raw.nodes {
            let name = n.name.get_ref().clone();
            if let Some(&i) = node_index.get(&name) {
                let first_line = line_of(raw.nodes[i].name.span());
                return Err(err(
                    Some(n.name.span()),
                    ConfigErrorKind::DuplicateNodeName { name, first_line },
                ));
            }
            if !cloud_lines.contains_key(n.cloud.get_ref()) {
                return Err(err(
                    Some(n.cloud.span()),
                    ConfigErrorKind::UnknownCloud {
                        node: name,
                        cloud: n.cloud.get_ref().clone(),
                        known: known_clouds(),
                    },
                ));
            }
            let roles: Roles = n.roles.get_ref().iter().map(|r| *r.get_ref()).collect();
            if roles.is_empty() {
                return Err(err(
                    Some(n.roles.span()),
                    ConfigErrorKind::NoRoles { node: name },
                ));
            }
            let listen: SocketAddr = n.listen.get_ref().parse().map_err(|_| {
                err(
                    Some(n.listen.span()),
                    ConfigErrorKind::BadAddress {
                        node: name.clone(),
                        value: n.listen.get_ref().clone(),
                    },
                )
            })?;
            if let Some((_, other)) = by_addr.iter().find(|(a, _)| addresses_collide(*a, listen)) {
                return Err(err(
                    Some(n.listen.span()),
                    ConfigErrorKind::AddressCollision {
                        node: name,
                        other: nodes[*other].name.clone(),
                        addr: listen,
                    },
                ));
            }
            let Some(pk) = &n.public_key else {
                let role = roles.iter().next().map(Role::as_str).unwrap_or("server");
                return Err(err(
                    Some(n.name.span()),
                    ConfigErrorKind::MissingKey {
                        node: name,
                        role: role.to_string(),
                    },
                ));
            };
            let id: NodeId = pk.get_ref().parse().map_err(|_| {
                err(
                    Some(pk.span()),
                    ConfigErrorKind::BadPublicKey { node: name.clone() },
                )
            })?;
            if let Some(&other) = by_id.get(&id) {
                return Err(err(
                    Some(pk.span()),
                    ConfigErrorKind::DuplicateKey {
                        node: name,
                        other: nodes[other].name.clone(),
                    },
                ));
            }
            let key_file = match &n.key_file {
                Some(k) => base.join(k.get_ref()),
                None => base.join("keys").join(format!("{name}.key")),
            };
            let data_dir = match &n.data_dir {
                Some(d) => base.join(d.get_ref()),
                None => base.join("data").join(&name),
            };
            let idx = nodes.len();
            node_index.insert(name.clone(), idx);
            by_id.insert(id, idx);
            by_addr.push((listen, idx));
            nodes.push(NodeSpec {
                name,
                cloud: n.cloud.get_ref().clone(),
                roles,
                listen,
                id,
                key_file,
                data_dir,
            });
        }

        // Every cloud needs exactly one gateway and one orchestrator.
        for c in &raw.clouds {
            for role in [Role::Gateway, Role::Orchestrator] {
                let count = nodes
                    .iter()
                    .filter(|n| &n.cloud == c.name.get_ref() && n.roles.contains(role))
                    .count();
                if count != 1 {
                    return Err(err(
                        Some(c.name.span()),
                        ConfigErrorKind::RoleCount {
                            cloud: c.name.get_ref().clone(),
                            role: role.to_string(),
                            count,
                        },
                    ));
                }
            }
        }

        // Chains.
        let mut chains: Vec<ChainSpec> = Vec::new();
        let mut validating = vec![false; nodes.len()];
        for ch in &raw.chains {
            let id = ch.id.get_ref().clone();
            if chains.iter().any(|c| c.id == id) {
                return Err(err(
                    Some(ch.id.span()),
                    ConfigErrorKind::DuplicateChain { id },
                ));
            }
            let kind = *ch.kind.get_ref();
            let cloud = match (kind, &ch.cloud) {
                (ChainKind::Local, None) => return Err(err(
                    Some(ch.kind.span()),
                    ConfigErrorKind::ChainCloud {
                        chain: id,
                        problem:
                            "a local chain needs `cloud = \"NAME\"` naming the cloud it belongs to"
                                .into(),
                    },
                )),
                (ChainKind::Local, Some(c)) if !cloud_lines.contains_key(c.get_ref()) => {
                    return Err(err(
                        Some(c.span()),
                        ConfigErrorKind::ChainCloud {
                            chain: id,
                            problem: format!(
                                "unknown cloud `{}`; use one of: {}",
                                c.get_ref(),
                                known_clouds()
                            ),
                        },
                    ))
                }
                (ChainKind::Local, Some(c)) => Some(c.get_ref().clone()),
                (ChainKind::Consortium, Some(c)) => {
                    return Err(err(
                        Some(c.span()),
                        ConfigErrorKind::ChainCloud {
                            chain: id,
                            problem:
                                "the consortium chain belongs to no single cloud; remove `cloud`"
                                    .into(),
                        },
                    ))
                }
                (ChainKind::Consortium, None) => None,
            };
            if ch.validators.get_ref().is_empty() {
                return Err(err(
                    Some(ch.validators.span()),
                    ConfigErrorKind::NoValidators { chain: id },
                ));
            }
            let mut validators = Vec::new();
            let mut validator_names: Vec<String> = Vec::new();
            for v in ch.validators.get_ref() {
                let vname = v.get_ref();
                let Some(&i) = node_index.get(vname) else {
                    return Err(err(
                        Some(v.span()),
                        ConfigErrorKind::UnknownValidator {
                            chain: id,
                            node: vname.clone(),
                        },
                    ));
                };
                if validator_names.contains(vname) {
                    return Err(err(
                        Some(v.span()),
                        ConfigErrorKind::DuplicateValidator {
                            chain: id,
                            node: vname.clone(),
                        },
                    ));
                }
                let node = &nodes[i];
                if !node.roles.contains(Role::Validator) {
                    return Err(err(
                        Some(v.span()),
                        ConfigErrorKind::ValidatorWithoutRole {
                            chain: id,
                            node: vname.clone(),
                        },
                    ));
                }
                if let Some(c) = &cloud {
                    if &node.cloud != c {
                        return Err(err(
                            Some(v.span()),
                            ConfigErrorKind::ForeignValidator {
                                chain: id,
                                cloud: c.clone(),
                                node: vname.clone(),
                                node_cloud: node.cloud.clone(),
                            },
                        ));
                    }
                }
                validating[i] = true;
                validators.push(node.id);
                validator_names.push(vname.clone());
            }
            let n = validators.len();
            let max_f = ((n - 1) / 3) as u32;
            let fault_tolerance = match &ch.fault_tolerance {
                None => max_f,
                Some(f) => {
                    let fv = *f.get_ref();
                    let needed = 3 * fv as u64 + 1;
                    if (n as u64) < needed {
                        return Err(err(
                            Some(f.span()),
                            ConfigErrorKind::TooFewValidators {
                                chain: id,
                                n,
                                f: fv,
                                needed,
                            },
                        ));
                    }
                    fv
                }
            };
            let params = ChainParams {
                block_size_txs: ch
                    .block_size_txs
                    .as_ref()
                    .map(|s| *s.get_ref())
                    .unwrap_or(16),
                block_bytes_max: ch
                    .block_bytes_max
                    .as_ref()
                    .map(|s| *s.get_ref())
                    .unwrap_or(4 << 20),
                batch_timeout_ms: ch
                    .batch_timeout_ms
                    .as_ref()
                    .map(|s| *s.get_ref())
                    .unwrap_or(20),
                empty_blocks: ch.empty_blocks.unwrap_or(false),
                timeouts: ch.timeouts.unwrap_or_default(),
            };
            if let Some(s) = &ch.block_size_txs {
                check_range(&err, s, "block_size_txs", 1, 1_000_000)?;
            }
            if let Some(s) = &ch.block_bytes_max {
                check_range(&err, s, "block_bytes_max", 1024, 1 << 30)?;
            }
            if let Some(s) = &ch.batch_timeout_ms {
                check_range(&err, s, "batch_timeout_ms", 0, 600_000)?;
            }
            chains.push(ChainSpec {
                id,
                kind,
                cloud,
                validators,
                validator_names,
                fault_tolerance,
                params,
            });
        }
        let chains_span = raw.chains_span();
        for c in &raw.clouds {
            let count = chains
                .iter()
                .filter(|ch| ch.cloud.as_deref() == Some(c.name.get_ref()))
                .count();
            if count != 1 {
                return Err(err(
                    Some(c.name.span()),
                    ConfigErrorKind::LocalChainCount {
                        cloud: c.name.get_ref().clone(),
                        count,
                    },
                ));
            }
        }
        let consortia: Vec<_> = raw
            .chains
            .iter()
            .filter(|c| *c.kind.get_ref() == ChainKind::Consortium)
            .collect();
        if consortia.len() > 1 {
            return Err(err(
                Some(consortia[1].kind.span()),
                ConfigErrorKind::Consortium(
                    "more than one consortium chain; a federation has exactly one".into(),
                ),
            ));
        }
        if consortia.is_empty() && clouds.len() > 1 {
            return Err(err(
                chains_span,
                ConfigErrorKind::Consortium(format!(
                    "{} clouds but no consortium chain; add [[chains]] with kind = \"consortium\" and the inter validators",
                    clouds.len()
                )),
            ));
        }
        for (i, n) in nodes.iter().enumerate() {
            if n.roles.contains(Role::Validator) && !validating[i] {
                return Err(err(
                    Some(raw.nodes[i].roles.span()),
                    ConfigErrorKind::IdleValidator {
                        node: n.name.clone(),
                    },
                ));
            }
        }

        // Transport and telemetry.
        let transport = raw
            .transport
            .as_ref()
            .map(|t| *t.get_ref())
            .unwrap_or_default();
        if let Some(t) = &raw.transport {
            let checks: [(&str, u64, u64, u64); 3] = [
                (
                    "transport.max_frame_bytes",
                    transport.max_frame_bytes as u64,
                    1024,
                    1 << 30,
                ),
                (
                    "transport.max_concurrent_streams",
                    transport.max_concurrent_streams as u64,
                    1,
                    1 << 20,
                ),
                (
                    "transport.max_in_flight_per_peer",
                    transport.max_in_flight_per_peer as u64,
                    1,
                    1 << 24,
                ),
            ];
            for (field, v, lo, hi) in checks {
                if v < lo || v > hi {
                    return Err(err(
                        Some(t.span()),
                        ConfigErrorKind::OutOfRange {
                            field: field.into(),
                            value: v.to_string(),
                            expected: format!("use a value from {lo} to {hi}"),
                        },
                    ));
                }
            }
        }
        let telemetry = raw
            .telemetry
            .as_ref()
            .map(|t| t.get_ref().clone())
            .unwrap_or_default();
        if let (Some(t), Some(r)) = (&raw.telemetry, telemetry.sampling_ratio) {
            if !(0.0..=1.0).contains(&r) {
                return Err(err(
                    Some(t.span()),
                    ConfigErrorKind::OutOfRange {
                        field: "telemetry.sampling_ratio".into(),
                        value: r.to_string(),
                        expected: "use a fraction from 0.0 to 1.0".into(),
                    },
                ));
            }
        }

        Ok(Federation {
            name: raw
                .federation
                .map(|f| f.name)
                .unwrap_or_else(|| "federation".into()),
            source: path.to_path_buf(),
            clouds,
            nodes,
            chains,
            transport,
            telemetry,
            by_id,
        })
    }

    /// The federation's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The file it was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }
    /// Clouds in declaration order.
    pub fn clouds(&self) -> &[Cloud] {
        &self.clouds
    }
    /// Nodes in declaration order.
    pub fn nodes(&self) -> &[NodeSpec] {
        &self.nodes
    }
    /// Chains in declaration order.
    pub fn chains(&self) -> &[ChainSpec] {
        &self.chains
    }
    /// Transport limits.
    pub fn transport(&self) -> &TransportLimits {
        &self.transport
    }
    /// Telemetry settings.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }
    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name == name)
    }
    /// A node by public key: the membership check of the transport.
    pub fn node_by_id(&self, id: &NodeId) -> Option<&NodeSpec> {
        self.by_id.get(id).map(|&i| &self.nodes[i])
    }
    /// Whether `id` is a member.
    pub fn is_member(&self, id: &NodeId) -> bool {
        self.by_id.contains_key(id)
    }
    /// A chain by id.
    pub fn chain(&self, id: &str) -> Option<&ChainSpec> {
        self.chains.iter().find(|c| c.id == id)
    }
    /// The local chain of `cloud`.
    pub fn local_chain(&self, cloud: &str) -> Option<&ChainSpec> {
        self.chains
            .iter()
            .find(|c| c.cloud.as_deref() == Some(cloud))
    }
    /// The consortium chain (absent only in a single-cloud federation).
    pub fn consortium(&self) -> Option<&ChainSpec> {
        self.chains.iter().find(|c| c.kind == ChainKind::Consortium)
    }
    /// The nodes of `cloud` that have `role`.
    pub fn nodes_with_role<'a>(
        &'a self,
        cloud: &'a str,
        role: Role,
    ) -> impl Iterator<Item = &'a NodeSpec> + 'a {
        self.nodes
            .iter()
            .filter(move |n| n.cloud == cloud && n.roles.contains(role))
    }
    /// The gateway of `cloud`.
    pub fn gateway(&self, cloud: &str) -> Option<&NodeSpec> {
        self.nodes
            .iter()
            .find(|n| n.cloud == cloud && n.roles.contains(Role::Gateway))
    }
    /// The orchestrator of `cloud`.
    pub fn orchestrator(&self, cloud: &str) -> Option<&NodeSpec> {
        self.nodes
            .iter()
            .find(|n| n.cloud == cloud && n.roles.contains(Role::Orchestrator))
    }

    /// A one-screen human summary: clouds, nodes per role, chains with f.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "federation `{}`: {}, {}, {}",
            self.name,
            plural(self.clouds.len(), "cloud"),
            plural(self.nodes.len(), "node"),
            plural(self.chains.len(), "chain")
        );
        let _ = writeln!(
            s,
            "\n{:<16} {:>7} {:>13} {:>8} {:>10} {:>7}",
            "cloud", "servers", "orchestrators", "gateways", "validators", "clients"
        );
        for c in &self.clouds {
            let count = |r| self.nodes_with_role(&c.name, r).count();
            let _ = writeln!(
                s,
                "{:<16} {:>7} {:>13} {:>8} {:>10} {:>7}",
                c.name,
                count(Role::Server),
                count(Role::Orchestrator),
                count(Role::Gateway),
                count(Role::Validator),
                count(Role::Client)
            );
        }
        let _ = writeln!(
            s,
            "\n{:<22} {:<11} {:>10} {:>3} {:>7} {:>10} {:>10}",
            "chain", "kind", "validators", "f", "quorum", "block txs", "batch ms"
        );
        for ch in &self.chains {
            let kind = match ch.kind {
                ChainKind::Local => "local",
                ChainKind::Consortium => "consortium",
            };
            let _ = writeln!(
                s,
                "{:<22} {:<11} {:>10} {:>3} {:>7} {:>10} {:>10}",
                ch.id,
                kind,
                ch.validators.len(),
                ch.fault_tolerance,
                ch.quorum(),
                ch.params.block_size_txs,
                ch.params.batch_timeout_ms
            );
        }
        let _ = writeln!(
            s,
            "\ntransport: max frame {} bytes, {} streams per peer; telemetry: {}",
            self.transport.max_frame_bytes,
            self.transport.max_concurrent_streams,
            self.telemetry
                .otlp_endpoint
                .as_deref()
                .map(|e| format!("OTLP to {e}"))
                .unwrap_or_else(|| "no export".into())
        );
        s
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn check_range<T, E>(err: &E, v: &Spanned<T>, field: &str, lo: T, hi: T) -> Result<(), ConfigError>
where
    T: PartialOrd + fmt::Display + Copy,
    E: Fn(Option<Range<usize>>, ConfigErrorKind) -> ConfigError,
{
    let x = *v.get_ref();
    if x < lo || x > hi {
        return Err(err(
            Some(v.span()),
            ConfigErrorKind::OutOfRange {
                field: field.into(),
                value: x.to_string(),
                expected: format!("use a value from {lo} to {hi}"),
            },
        ));
    }
    Ok(())
}

/// Two listen addresses collide when ports match and the IPs are equal or one
/// of them is unspecified (0.0.0.0 / ::) and so covers the other.
fn addresses_collide(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFederation {
    federation: Option<RawMeta>,
    #[serde(default)]
    clouds: Vec<RawCloud>,
    #[serde(default)]
    nodes: Vec<RawNode>,
    #[serde(default)]
    chains: Vec<RawChain>,
    transport: Option<Spanned<TransportLimits>>,
    telemetry: Option<Spanned<Telemetry>>,
}

impl RawFederation {
    fn chains_span(&self) -> Option<Range<usize>> {
        self.chains.first().map(|c| c.id.span())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMeta {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCloud {
    name: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: Spanned<String>,
    cloud: Spanned<String>,
    roles: Spanned<Vec<Spanned<Role>>>,
    listen: Spanned<String>,
    public_key: Option<Spanned<String>>,
    key_file: Option<Spanned<String>>,
    data_dir: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChain {
    id: Spanned<String>,
    kind: Spanned<ChainKind>,
    cloud: Option<Spanned<String>>,
    validators: Spanned<Vec<Spanned<String>>>,
    fault_tolerance: Option<Spanned<u32>>,
    block_size_txs: Option<Spanned<u32>>,
    block_bytes_max: Option<Spanned<u64>>,
    batch_timeout_ms: Option<Spanned<u64>>,
    empty_blocks: Option<bool>,
    timeouts: Option<ConsensusTimeouts>,
}
