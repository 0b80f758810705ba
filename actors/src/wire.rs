//! Messages actors exchange over the QUIC transport, and the actor
//! addresses they are sent to. Bodies are encoded with the ledger's
//! canonical codec and decoded with a size limit; a body that does not
//! decode is refused and counted, never trusted.

use serde::{Deserialize, Serialize};

use federact_ledger::block::Block;
use federact_ledger::cert::CommitCertificate;
use federact_ledger::codec::{self, DecodeError};
use federact_ledger::consensus::Message;
use federact_ledger::proof::CrossChainProof;
use federact_ledger::tx::{Transaction, TxId};

/// Largest body any actor message may have (a block of the largest allowed
/// size plus its certificate fits).
pub const BODY_BYTES_MAX: usize = 24 << 20;

/// The transport address of the validator of `chain_id` on a node.
pub fn validator_actor(chain_id: &str) -> String {
    format!("validator/{chain_id}")
}

/// Longest actor address a follower may name.
pub const ACTOR_NAME_MAX: usize = 64;

/// The transport address of a cloud's gateway.
pub const GATEWAY_ACTOR: &str = "gateway";

/// What validators send each other and their followers without waiting for
/// an answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ValidatorOneWay {
    /// A consensus message (proposal, vote, status).
    Consensus(Message<Block>),
    /// A committed block with its certificate, pushed to followers.
    Committed(Box<CertifiedBlock>),
}

/// A committed block and its commit certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifiedBlock {
    /// The block.
    pub block: Block,
    /// Its certificate.
    pub certificate: CommitCertificate,
}

/// Requests a validator answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ValidatorRequest {
    /// Admit these transactions to the mempool.
    Submit(Vec<Transaction>),
    /// The committed block at a height, with its certificate.
    FetchBlock {
        /// The height.
        height: u64,
    },
    /// Push every block committed from `from_height` on to the sender's
    /// actor `actor` (at most [`ACTOR_NAME_MAX`] bytes).
    Follow {
        /// First height wanted.
        from_height: u64,
        /// The follower's actor address on its node.
        actor: String,
    },
    /// The status of a transaction.
    TxStatus {
        /// Its id.
        id: TxId,
    },
    /// The chain's tip height.
    Tip,
    /// A question about the chain's committed contents (remote `federact
    /// ledger`); answered with [`ValidatorResponse::Answer`].
    Query(LedgerQuery),
    /// The statuses of up to [`TX_STATUS_MAX`] transactions at once (a
    /// gateway's probe of its overdue transactions); answered with
    /// [`ValidatorResponse::TxStatuses`], in order. Longer lists are
    /// answered for their first [`TX_STATUS_MAX`] ids only.
    TxStatuses(Vec<TxId>),
}

/// Transaction ids one [`ValidatorRequest::TxStatuses`] is answered for.
pub const TX_STATUS_MAX: usize = 4096;

/// Why a validator did not admit a submitted transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// A relayed record whose consortium transaction `source` this chain
    /// delivered before: a gateway that sees f+1 of these knows its
    /// delivery is settled (typed, so no reason text can pass for it).
    AlreadyDelivered {
        /// The consortium transaction.
        source: TxId,
    },
    /// Any other reason (signature, stale nonce, full mempool, a relayed
    /// record's proof), as text for the submitter.
    Other(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::AlreadyDelivered { source } => write!(
                f,
                "relayed record refused: consortium tx {source} already delivered"
            ),
            Refusal::Other(why) => f.write_str(why),
        }
    }
}

/// Answers of a validator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ValidatorResponse {
    /// Per submitted transaction, in order: admitted, or why not.
    Submitted(Vec<Result<(), Refusal>>),
    /// The block, if committed.
    Block(Option<Box<CertifiedBlock>>),
    /// Following from this height (the validator's tip + 1 at most).
    Following {
        /// The validator's tip height now.
        tip: u64,
    },
    /// A transaction's status.
    TxStatus(TxStatus),
    /// The tip height.
    Tip(u64),
    /// The answer to a [`ValidatorRequest::Query`].
    Answer(LedgerAnswer),
    /// Per id of a [`ValidatorRequest::TxStatuses`], in order: its status.
    TxStatuses(Vec<TxStatus>),
}

/// Where a transaction stands at one validator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxStatus {
    /// Never seen (or forgotten).
    Unknown,
    /// Waiting in the mempool.
    Pending,
    /// Committed at this height and position.
    Committed {
        /// Height.
        height: u64,
        /// Position in the block.
        index: u32,
    },
    /// Refused by the chain's rules when a block was built.
    Refused(String),
}

/// Requests a gateway answers (from its cloud's actors and from tools).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum GatewayRequest {
    /// Route a signed transaction to its chain; answer when it commits (or
    /// is refused) if `wait`, else once a validator admitted it.
    Submit {
        /// The transaction.
        tx: Transaction,
        /// Wait for the commit.
        wait: bool,
        /// The nonce of the author's previous submission, if that one was
        /// still in flight: the gateway passes this one on only after it
        /// (see [`crate::order`]).
        after: Option<u64>,
    },
    /// The gateway's view of its chains.
    Status,
    /// Route each of up to 1024 signed transactions to its chain and
    /// answer once every one committed or was refused
    /// ([`GatewayResponse::Receipts`], in order): one request for many
    /// transactions, for clients that submit at high rates.
    SubmitMany {
        /// The transactions, in nonce order per author.
        txs: Vec<Transaction>,
        /// As for [`GatewayRequest::Submit`], for the first transaction.
        after: Option<u64>,
    },
    /// Ask a validator of `chain_id` (one the gateway follows) `query`;
    /// answered with [`GatewayResponse::Answer`]. The gateway only relays:
    /// the client checks every proof in the answer itself.
    Query {
        /// The chain asked about.
        chain_id: String,
        /// The question.
        query: LedgerQuery,
    },
}

/// Answers of a gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum GatewayResponse {
    /// Committed (or admitted, without `wait`).
    Receipt(Receipt),
    /// Refused, with the reason.
    Refused(String),
    /// Heights of the chains the gateway follows.
    Status(Vec<(String, u64)>),
    /// The answer to a [`GatewayRequest::Query`], as a validator gave it.
    Answer(LedgerAnswer),
    /// Per transaction of a [`GatewayRequest::SubmitMany`], in order: its
    /// receipt, or why it was refused.
    Receipts(Vec<Result<Receipt, String>>),
}

/// Longest entity name a provenance query may carry.
pub const ENTITY_BYTES_MAX: usize = 256;

/// Proven records one answer carries, at most (the rest is reported as
/// truncated; a record's proof holds its block header and certificate).
pub const ANSWER_RECORDS_MAX: usize = 512;

/// A question about one chain's committed contents: what `federact ledger`
/// answers from store files, asked of a running validator. Every answer
/// carries what a client needs to check it against the chain's validator
/// set, so whoever relays it (the gateway) need not be trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerQuery {
    /// The latest committed block with its certificate.
    Tip,
    /// The committed block at `height` with its certificate.
    Block {
        /// The height (1 or more: the genesis is in the configuration).
        height: u64,
    },
    /// A committed transaction with its inclusion proof.
    Tx {
        /// Its id.
        id: TxId,
    },
    /// Every migration record of a vm on the chain, in commit order.
    VmHistory {
        /// The vm id (sha256 of the image).
        vm_id: federact_ledger::hash::Hash,
    },
    /// Every provenance record mentioning an entity, in commit order.
    Provenance {
        /// A device or container name, an activity, or a data digest in
        /// hex (at most [`ENTITY_BYTES_MAX`] bytes).
        entity: String,
    },
}

/// A validator's answer to a [`LedgerQuery`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LedgerAnswer {
    /// The block asked for (`None`: not committed yet).
    Block(Option<Box<CertifiedBlock>>),
    /// The transaction's inclusion proof (`None`: not committed).
    Tx(Option<Box<CrossChainProof>>),
    /// One inclusion proof per matching record, in commit order.
    Records {
        /// The proofs (the record is the proven transaction's).
        proofs: Vec<CrossChainProof>,
        /// More records matched than [`ANSWER_RECORDS_MAX`].
        truncated: bool,
    },
    /// The question could not be answered (bad question, store error).
    Failed(String),
}

/// Proof that a transaction committed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Receipt {
    /// The chain.
    pub chain_id: String,
    /// The transaction id.
    pub tx_id: TxId,
    /// Height of its block (0 when only admitted).
    pub height: u64,
    /// Inclusion proof with the block's certificate, when committed.
    pub proof: Option<Box<CrossChainProof>>,
}

/// Encodes an actor message.
pub fn encode<T: Serialize>(msg: &T) -> bytes::Bytes {
    bytes::Bytes::from(codec::encode(msg))
}

/// Decodes an actor message from a peer, with the size limit.
pub fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    codec::decode(body, BODY_BYTES_MAX)
}

/// The transport address of a server's function host.
pub const SERVER_ACTOR: &str = "server";

/// The transport address of a cloud's orchestrator.
pub const ORCHESTRATOR_ACTOR: &str = "orchestrator";

/// Requests a server answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ServerRequest {
    /// Call instance `key` of function `name` (hosted here).
    Invoke {
        /// The function.
        name: String,
        /// The instance key.
        key: String,
        /// The payload.
        payload: Vec<u8>,
    },
    /// Host instance `key` of `name` (from the orchestrator, after the
    /// placement committed), restoring `snapshot` if any.
    Host {
        /// The function.
        name: String,
        /// The instance key.
        key: String,
        /// The state it had when last deactivated.
        snapshot: Option<Vec<u8>>,
    },
    /// Run a stateless task of function `name` (on a fresh instance) here,
    /// or offload it through the orchestrator if this server is saturated.
    Task {
        /// The function.
        name: String,
        /// The payload.
        payload: Vec<u8>,
    },
    /// Would this server execute offloaded task `task_id` of `name` now?
    Accept {
        /// The task.
        task_id: federact_ledger::hash::Hash,
        /// The function.
        name: String,
    },
    /// Execute offloaded task `task_id` (accepted before) and record its
    /// completion.
    RunTask {
        /// The task.
        task_id: federact_ledger::hash::Hash,
        /// The function.
        name: String,
        /// The payload (sent by the requester only).
        payload: Vec<u8>,
        /// The scope of the offload contract.
        scope: federact_ledger::record::Scope,
    },
    /// Migrate hosted instance `key` of `name` to `destination` under
    /// `migration_id` (from the cloud's orchestrator): freeze it (calls
    /// are buffered), snapshot it to a file and run the BASICS protocol;
    /// answered `Migrated` when it ends. Completed → the instance is
    /// dropped here and buffered calls get `NotHere` (they re-locate);
    /// aborted → it resumes here with its buffered calls.
    Migrate {
        /// The function.
        name: String,
        /// The instance key.
        key: String,
        /// The destination server.
        destination: federact_ledger::record::Site,
        /// The migration id.
        migration_id: federact_ledger::hash::Hash,
        /// Test hook: flip one byte of the image in transit.
        tamper: bool,
    },
    /// Host instance `key` of `name` from the image migration
    /// `migration_id` brought here (from the cloud's orchestrator); the
    /// server waits (bounded) for its side of the migration to complete.
    Adopt {
        /// The function.
        name: String,
        /// The instance key.
        key: String,
        /// The migration that brought it.
        migration_id: federact_ledger::hash::Hash,
    },
}

impl ServerRequest {
    /// The request's kind, for span and log fields.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerRequest::Invoke { .. } => "invoke",
            ServerRequest::Host { .. } => "host",
            ServerRequest::Task { .. } => "task",
            ServerRequest::Accept { .. } => "accept",
            ServerRequest::RunTask { .. } => "run_task",
            ServerRequest::Migrate { .. } => "migrate",
            ServerRequest::Adopt { .. } => "adopt",
        }
    }
}

/// Answers of a server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ServerResponse {
    /// The call's output.
    Output(Vec<u8>),
    /// The call (or hosting) failed.
    Failed(crate::function::FunctionError),
    /// The instance is not hosted here (ask the orchestrator again).
    NotHere,
    /// Hosted.
    Hosted,
    /// This server accepts the offloaded task.
    Accepted,
    /// An instance migration ended (completed or aborted).
    Migrated(MigrationReport),
    /// An offloaded task's result with the inclusion proof of the
    /// executor's `OffloadCompleted` (none if it could not be committed):
    /// the requester checks one against the other
    /// ([`crate::offload_check`]).
    TaskDone {
        /// The result.
        output: Vec<u8>,
        /// The completion's proof.
        proof: Option<Box<federact_ledger::proof::CrossChainProof>>,
    },
}

/// Requests an orchestrator answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum OrchestratorRequest {
    /// Where instance `key` of `name` lives, placing it if it is not active.
    Locate {
        /// The function.
        name: String,
        /// The instance key.
        key: String,
    },
    /// A server deactivated an idle instance; keep its state.
    Deactivated {
        /// The function.
        name: String,
        /// The instance key.
        key: String,
        /// Its state (at most [`crate::function::SNAPSHOT_BYTES_MAX`]).
        snapshot: Vec<u8>,
    },
    /// A saturated server asks for task `task_id` to run elsewhere; the
    /// answer names the executor (`Located`) once `OffloadRequested` and
    /// `OffloadAccepted` committed.
    Offload {
        /// The task.
        task_id: federact_ledger::hash::Hash,
        /// Digest of the function name and payload (the payload itself
        /// goes to the executor only).
        task_digest: federact_ledger::hash::Hash,
        /// The function.
        name: String,
    },
    /// Another cloud's orchestrator asks whether one of this cloud's
    /// servers accepts task `task_id` (answered `Located(executor)`); the
    /// asking orchestrator records the contract on the consortium.
    OffloadAbroad {
        /// The task.
        task_id: federact_ledger::hash::Hash,
        /// The function.
        name: String,
    },
    /// Migrate active instance `key` of `name` (of this cloud) to server
    /// `destination` (of this or another cloud); answered `Migrated`.
    /// Only from nodes of the orchestrator's cloud.
    Migrate {
        /// The function.
        name: String,
        /// The instance key.
        key: String,
        /// The destination server.
        destination: federact_ledger::record::Site,
    },
    /// Migrate every instance of server `server` (of this cloud) to other
    /// servers and place nothing more there; answered `Drained`. Only from
    /// nodes of the orchestrator's cloud.
    Drain {
        /// The server's name.
        server: String,
    },
    /// Another cloud's orchestrator moved instance `key` of `name` to this
    /// cloud's server `server` (migration `migration_id` completed): record
    /// it here and have the server host it; answered `Located(server)`.
    Adopt {
        /// The function.
        name: String,
        /// The instance key.
        key: String,
        /// This cloud's server that received it.
        server: federact_config::NodeId,
        /// The migration.
        migration_id: federact_ledger::hash::Hash,
    },
}

/// Answers of an orchestrator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum OrchestratorResponse {
    /// The instance lives on this server.
    Located(federact_config::NodeId),
    /// It could not be located or placed.
    Failed(crate::function::FunctionError),
    /// Done.
    Ack,
    /// The task goes to `executor` in another cloud, under the consortium
    /// contract `task_id` (scope `Inter`).
    OffloadedAbroad {
        /// The executor.
        executor: federact_config::NodeId,
        /// The task id of the consortium contract.
        task_id: federact_ledger::hash::Hash,
    },
    /// An instance migration ended (completed or aborted, see the report).
    Migrated(MigrationReport),
    /// A drain ended: instances moved, and those that did not, with why.
    Drained {
        /// Instances migrated away.
        moved: u32,
        /// `name/key: reason` of each instance that stayed.
        failed: Vec<String>,
    },
}

/// What servers send their orchestrator without waiting for an answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum OrchestratorOneWay {
    /// A periodic load report.
    Load(crate::placement::ServerLoad),
    /// Calls per hosted instance since the previous report (the hottest
    /// first, at most [`crate::placement::HEAT_MAX`]), for load balancing.
    Heat(Vec<crate::placement::InstanceHeat>),
}

// ---- Migration (issue 8) ----

/// The transport address of a server's migration actor.
pub const MIGRATION_ACTOR: &str = "migration";

/// What precedes an image on a migration transfer stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferHeader {
    /// The migration.
    pub migration_id: federact_ledger::hash::Hash,
    /// The vm id the source claims (the destination trusts only the
    /// committed indication's).
    pub vm_id: federact_ledger::hash::Hash,
    /// Where it leaves from.
    pub source: federact_ledger::record::Site,
    /// Where it goes (must be the receiving server).
    pub destination: federact_ledger::record::Site,
    /// The image's size in bytes.
    pub bytes: u64,
}

/// Requests a migration actor answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MigrationRequest {
    /// Migrate the image file `image` (a path on the source server) to
    /// `destination`; answered when the migration completes or aborts.
    MigrateImage {
        /// The image file on the source server's disk.
        image: String,
        /// The destination server.
        destination: federact_ledger::record::Site,
        /// Test hook: flip one byte of the image in transit.
        tamper: bool,
    },
    /// How a (recently) finished migration ended on this server.
    Outcome {
        /// The migration.
        migration_id: federact_ledger::hash::Hash,
    },
}

/// Answers of a migration actor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MigrationResponse {
    /// The migration ended (completed or aborted).
    Done(MigrationReport),
    /// Not found among running or recently finished migrations.
    Unknown,
    /// The migration could not start (limit, bad file, unknown site).
    Failed(String),
}

/// How one migration went, as seen by one side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationReport {
    /// The migration.
    pub migration_id: federact_ledger::hash::Hash,
    /// sha256 of the image.
    pub vm_id: federact_ledger::hash::Hash,
    /// Whether it completed (else aborted, with `reason`).
    pub completed: bool,
    /// Why it aborted.
    pub reason: Option<String>,
    /// Image bytes transferred.
    pub bytes: u64,
    /// From the request (source) or first contact (destination) to the end.
    pub elapsed_ms: u64,
    /// The records this side saw committed: (record kind, chain, height).
    pub records: Vec<(String, String, u64)>,
}

/// One-way messages between migration actors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MigrationOneWay {
    /// A protocol notice with its proof (verified by the receiver).
    Notice {
        /// The migration.
        migration_id: federact_ledger::hash::Hash,
        /// The notice.
        notice: federact_ledger::migration::Notice<Box<CrossChainProof>>,
    },
}
