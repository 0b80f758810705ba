//! The crate's error types.
//!
//! Two kinds are kept apart (see STYLE.md):
//! - [`LedgerError`] is an environment failure — sled I/O, corruption of
//!   files on disk, a missing genesis. It is the `Err` of store operations.
//! - The verdict types — [`RecordError`], [`TxError`], [`RuleError`],
//!   [`ProofError`], [`BlockError`] — say why a record, transaction, proof or
//!   block is not acceptable. They are expected outcomes of checking input
//!   from peers, and are returned as values (inside `Ok` for store calls).
//!
//! Node ids in errors are boxed: a `NodeId` holds a decompressed curve point
//! (192 bytes) and would make every `Result` carrying these errors that large.

use std::path::PathBuf;

use federact_config::{ChainKind, NodeId};

use crate::cert::CertError;
use crate::codec::DecodeError;
use crate::hash::Hash;
use crate::record::{EntityKind, Route, Scope};

/// An environment failure of the chain store: I/O, corruption, missing or
/// mismatched genesis. Never caused by a peer's input alone.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The storage engine failed (disk I/O, lock held by another process).
    #[error("storage error while {context}")]
    Storage {
        /// What the store was doing.
        context: String,
        /// The engine's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A file-system operation failed.
    #[error("I/O error on {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Bytes on disk do not decode or contradict each other.
    #[error("store corrupt: {what} (key {key}): {detail}")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// The key, in hex.
        key: String,
        /// What is wrong.
        detail: String,
    },
    /// The directory holds no chain and no genesis was given to create one.
    #[error("{dir} holds no chain and no genesis was given")]
    NoGenesis {
        /// The store directory.
        dir: PathBuf,
    },
    /// The genesis given differs from the one the store was created with.
    #[error("{dir} was created for chain {stored}, not {given}")]
    GenesisMismatch {
        /// The store directory.
        dir: PathBuf,
        /// The stored genesis' chain id (and digest).
        stored: String,
        /// The given genesis' chain id (and digest).
        given: String,
    },
    /// A genesis cannot be built or is inconsistent.
    #[error("invalid genesis for chain {chain_id}: {detail}")]
    InvalidGenesis {
        /// The chain.
        chain_id: String,
        /// What is wrong.
        detail: String,
    },
}

/// Why a record is malformed regardless of chain state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// A name field is empty.
    #[error("field {field} is empty")]
    Empty {
        /// The field.
        field: &'static str,
    },
    /// A string field is longer than its limit.
    #[error("field {field} is {len} bytes, limit {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A name contains a control character.
    #[error("field {field} contains a control character")]
    ControlCharacter {
        /// The field.
        field: &'static str,
    },
    /// A migration's scope does not match its clouds.
    #[error("scope {scope:?} does not match clouds {source_cloud} -> {destination_cloud}")]
    ScopeMismatch {
        /// Declared scope.
        scope: Scope,
        /// Source cloud.
        source_cloud: String,
        /// Destination cloud.
        destination_cloud: String,
    },
    /// A migration's source and destination are the same server.
    #[error("migration source and destination are the same server")]
    SameSite,
    /// A membership record lists too many or repeated roles.
    #[error("{len} roles listed (at most 4 distinct)")]
    TooManyRoles {
        /// Number listed.
        len: usize,
    },
}

/// Why a transaction fails stateless verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    /// The encoding is larger than the configured limit.
    #[error("transaction encoding is {len} bytes, limit {max}")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a transaction.
    #[error("malformed transaction: {0}")]
    Malformed(DecodeError),
    /// The signature does not verify for the author over the signed bytes.
    #[error("bad signature on tx {tx_id} by {author}")]
    BadSignature {
        /// The transaction id.
        tx_id: Hash,
        /// The claimed author.
        author: Box<NodeId>,
    },
    /// The author may not write to this chain.
    #[error("author {author} may not write to this chain")]
    UnknownAuthor {
        /// The author.
        author: Box<NodeId>,
    },
    /// The author key is a small-order (weak) point.
    #[error("author key {author} is weak")]
    WeakAuthorKey {
        /// The author.
        author: Box<NodeId>,
    },
    /// The record is malformed.
    #[error("record malformed: {0}")]
    Record(#[from] RecordError),
}

/// Why a cross-chain proof does not prove its transaction committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The proof is from another chain than expected.
    #[error("proof is from chain {got}, expected {expected}")]
    WrongChain {
        /// Expected source chain.
        expected: String,
        /// The header's chain.
        got: String,
    },
    /// The certificate does not certify the header with the source's validators.
    #[error("commit certificate invalid: {0}")]
    Certificate(CertError),
    /// The transaction bytes are not what the proof claims was committed.
    #[error("record altered: carried tx hashes to {computed}, proof claims {claimed}")]
    AlteredRecord {
        /// The tx id the proof claims.
        claimed: Hash,
        /// The id of the carried bytes.
        computed: Hash,
    },
    /// The Merkle path does not lead from the tx id to the header's tx_root.
    #[error("Merkle path for leaf {index} of {leaf_count} does not reach the tx root")]
    BadMerklePath {
        /// Claimed leaf index.
        index: u32,
        /// Claimed leaf count.
        leaf_count: u32,
    },
    /// The carried transaction does not decode.
    #[error("carried transaction malformed: {0}")]
    MalformedTx(DecodeError),
    /// The carried transaction's signature is bad.
    #[error("carried transaction signature invalid: {0}")]
    BadTx(TxError),
}

/// Why a transaction may not be applied given the chain's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The nonce was already used by this author.
    #[error("nonce {nonce} of {author} replayed (last {last})")]
    NonceReplayed {
        /// Author.
        author: Box<NodeId>,
        /// The tx's nonce.
        nonce: u64,
        /// The author's last committed nonce.
        last: u64,
    },
    /// The nonce is lower than the author's last one.
    #[error("nonce {nonce} of {author} out of order (last {last})")]
    NonceOutOfOrder {
        /// Author.
        author: Box<NodeId>,
        /// The tx's nonce.
        nonce: u64,
        /// The author's last committed nonce.
        last: u64,
    },
    /// The record belongs on another kind of chain.
    #[error("{record} routes to the {route:?} chain, this is a {chain:?} chain")]
    WrongChain {
        /// Record kind.
        record: &'static str,
        /// Where it belongs.
        route: Route,
        /// This chain's kind.
        chain: ChainKind,
    },
    /// A device or container joins while joined.
    #[error("entity {entity} already joined")]
    AlreadyJoined {
        /// The entity.
        entity: String,
    },
    /// A device or container leaves without having joined.
    #[error("entity {entity} has not joined")]
    NotJoined {
        /// The entity.
        entity: String,
    },
    /// A leave names another kind than the join.
    #[error("entity {entity} joined as {joined:?}, leaves as {got:?}")]
    EntityKindMismatch {
        /// The entity.
        entity: String,
        /// Kind at join.
        joined: EntityKind,
        /// Kind at leave.
        got: EntityKind,
    },
    /// Data already left its producer.
    #[error("data {data} already left its producer")]
    DataAlreadyLeft {
        /// The data digest.
        data: Hash,
    },
    /// Data is used before it left its producer.
    #[error("data {data} used before it left its producer")]
    DataNotLeft {
        /// The data digest.
        data: Hash,
    },
    /// A use names another producer than the one the data left.
    #[error("data {data} left {recorded}, use claims producer {claimed}")]
    DataProducerMismatch {
        /// The data digest.
        data: Hash,
        /// Recorded producer.
        recorded: String,
        /// Claimed producer.
        claimed: String,
    },
    /// A task is requested twice.
    #[error("task {task} already requested")]
    DuplicateTask {
        /// The task.
        task: Hash,
    },
    /// An accept for a task never requested.
    #[error("task {task} accepted without a request")]
    AcceptWithoutRequest {
        /// The task.
        task: Hash,
    },
    /// A second executor for a task.
    #[error("task {task} already accepted by {executor}")]
    AlreadyAccepted {
        /// The task.
        task: Hash,
        /// The first executor.
        executor: Box<NodeId>,
    },
    /// A completion for a task not accepted.
    #[error("task {task} completed without being accepted")]
    CompleteWithoutAccept {
        /// The task.
        task: Hash,
    },
    /// A second completion.
    #[error("task {task} already completed")]
    AlreadyCompleted {
        /// The task.
        task: Hash,
    },
    /// An offload record's scope differs from the request's.
    #[error("task {task} requested with scope {requested:?}, record says {got:?}")]
    OffloadScopeMismatch {
        /// The task.
        task: Hash,
        /// Scope of the request.
        requested: Scope,
        /// Scope of this record.
        got: Scope,
    },
    /// A migration id is indicated twice.
    #[error("migration {migration} already recorded")]
    DuplicateMigration {
        /// The migration.
        migration: Hash,
    },
    /// The vm is already being migrated.
    #[error("vm {vm} is already in flight in migration {migration}")]
    VmInFlight {
        /// The vm.
        vm: Hash,
        /// The migration in flight.
        migration: Hash,
    },
    /// A confirmation without a committed indication.
    #[error("confirmation of migration {migration} without an indication")]
    ConfirmationWithoutIndication {
        /// The migration.
        migration: Hash,
    },
    /// A confirmation in the same block as its indication (the destination
    /// must have seen the indication committed).
    #[error("indication of migration {migration} is not committed before height {height}")]
    IndicationNotCommitted {
        /// The migration.
        migration: Hash,
        /// Height being checked.
        height: u64,
    },
    /// The record names another vm than the migration's indication.
    #[error("migration {migration} is of vm {expected}, record names {got}")]
    VmIdMismatch {
        /// The migration.
        migration: Hash,
        /// The indication's vm.
        expected: Hash,
        /// The record's vm.
        got: Hash,
    },
    /// The confirmation's scope differs from the indication's.
    #[error("migration {migration} indicated with scope {indicated:?}, confirmed with {got:?}")]
    MigrationScopeMismatch {
        /// The migration.
        migration: Hash,
        /// Indication scope.
        indicated: Scope,
        /// Confirmation scope.
        got: Scope,
    },
    /// A second confirmation.
    #[error("migration {migration} already confirmed")]
    AlreadyConfirmed {
        /// The migration.
        migration: Hash,
    },
    /// An accepting confirmation with an observed hash that is not the vm id.
    #[error("migration {migration} accepted with observed hash {observed}, vm id is {vm}")]
    ConfirmationHashMismatch {
        /// The migration.
        migration: Hash,
        /// The vm id.
        vm: Hash,
        /// The observed hash.
        observed: Hash,
    },
    /// This chain's genesis names no consortium to check proofs against.
    #[error("no consortium validator set in this chain's genesis")]
    NoConsortium,
    /// The cross-chain proof is invalid.
    #[error("cross-chain proof invalid: {0}")]
    Proof(ProofError),
    /// The proof carries something else than the consortium's confirmation.
    #[error("proof carries {got}, expected an accepting Confirmation")]
    ProofNotConfirmation {
        /// The carried record kind.
        got: &'static str,
    },
    /// The proven confirmation rejected the migration.
    #[error("proven confirmation of migration {migration} is a rejection")]
    ProofNotAccepted {
        /// The migration.
        migration: Hash,
    },
    /// The proven confirmation is for another migration or vm.
    #[error("proven confirmation is for migration {proven_migration} vm {proven_vm}")]
    ProofMismatch {
        /// Its migration.
        proven_migration: Hash,
        /// Its vm.
        proven_vm: Hash,
    },
    /// Arrival / Leave recorded twice for a migration on this chain.
    #[error("{record} of migration {migration} already recorded on this chain")]
    MigrationAlreadyRecorded {
        /// Record kind.
        record: &'static str,
        /// The migration.
        migration: Hash,
    },
    /// The consortium transaction was already delivered.
    #[error("consortium tx {tx} already delivered")]
    AlreadyDelivered {
        /// The source tx id.
        tx: Hash,
    },
    /// The node is already a consortium member.
    #[error("node {node} is already a member")]
    AlreadyMember {
        /// The node.
        node: Box<NodeId>,
    },
    /// A dispute of a task whose contract has no committed completion
    /// (nothing to dispute yet: the requester holds no proven result).
    #[error("dispute of task {task} before its completion")]
    DisputeBeforeCompletion {
        /// The task.
        task: Hash,
    },
    /// A dispute by someone other than the task's requester.
    #[error("dispute of task {task} by {author}, not its requester")]
    DisputeByNonRequester {
        /// The task.
        task: Hash,
        /// The dispute's author.
        author: Box<NodeId>,
    },
    /// A second dispute of one task.
    #[error("task {task} already disputed")]
    AlreadyDisputed {
        /// The task.
        task: Hash,
    },
    /// A dispute whose digests all agree with the committed result.
    #[error("dispute of task {task} names no discrepancy: committed, received and recomputed digests are equal")]
    DisputeWithoutDiscrepancy {
        /// The task.
        task: Hash,
    },
}

/// Why a block may not be committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The block is for another chain.
    #[error("block is for chain {got}, this is {expected}")]
    WrongChain {
        /// This chain.
        expected: String,
        /// The block's chain.
        got: String,
    },
    /// The height is not tip + 1.
    #[error("block height {got}, expected {expected}")]
    WrongHeight {
        /// Expected height.
        expected: u64,
        /// The block's height.
        got: u64,
    },
    /// prev_hash is not the tip's id.
    #[error("block {height} links to {got}, tip is {expected}")]
    BrokenLink {
        /// Height.
        height: u64,
        /// The tip's id.
        expected: Hash,
        /// The block's prev_hash.
        got: Hash,
    },
    /// tx_root is not the Merkle root of the txs.
    #[error("block {height} tx_root {got} but txs hash to {expected}")]
    TxRootMismatch {
        /// Height.
        height: u64,
        /// Computed root.
        expected: Hash,
        /// Header's root.
        got: Hash,
    },
    /// The header names another proposer than the round-robin one.
    #[error("block {height} round {round} proposed by {got}, expected {expected}")]
    WrongProposer {
        /// Height.
        height: u64,
        /// Round.
        round: u32,
        /// Expected proposer.
        expected: Box<NodeId>,
        /// Header's proposer.
        got: Box<NodeId>,
    },
    /// The timestamp is before the previous block's.
    #[error("block {height} timestamp {got} ms before previous {prev} ms")]
    TimeWentBack {
        /// Height.
        height: u64,
        /// Previous block's timestamp.
        prev: u64,
        /// This block's timestamp.
        got: u64,
    },
    /// Too many transactions.
    #[error("block {height} has {count} txs, limit {max}")]
    TooManyTxs {
        /// Height.
        height: u64,
        /// Count.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// Encoding too large.
    #[error("block {height} is {len} bytes, limit {max}")]
    TooLarge {
        /// Height.
        height: u64,
        /// Encoded length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The commit certificate does not certify the block.
    #[error("block {height} certificate invalid: {source}")]
    Certificate {
        /// Height.
        height: u64,
        /// Why.
        source: CertError,
    },
    /// A transaction fails stateless verification.
    #[error("block {height} tx {index} ({tx_id}): {source}")]
    Tx {
        /// Height.
        height: u64,
        /// Position in the block.
        index: usize,
        /// Its id.
        tx_id: Hash,
        /// Why.
        source: Box<TxError>,
    },
    /// A transaction breaks a validation rule.
    #[error("block {height} tx {index} ({tx_id}): {source}")]
    Rule {
        /// Height.
        height: u64,
        /// Position in the block.
        index: usize,
        /// Its id.
        tx_id: Hash,
        /// Why.
        source: Box<RuleError>,
    },
    /// A transaction appears twice.
    #[error("block {height} tx {index} ({tx_id}) already committed or repeated")]
    DuplicateTx {
        /// Height.
        height: u64,
        /// Position in the block.
        index: usize,
        /// Its id.
        tx_id: Hash,
    },
}

/// Displays an error followed by each of its sources, `outer: inner: ...`,
/// for log lines: a [`LedgerError`]'s own message names the operation
/// ("storage error while flushing") and only its source says why (`No space
/// left on device`).
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod chain_tests {
    use super::*;

    #[test]
    fn error_chain_prints_the_io_cause_of_a_storage_error() {
        let e = LedgerError::Io {
            path: PathBuf::from("/data/wal"),
            source: std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device"),
        };
        assert_eq!(
            ErrorChain(&e).to_string(),
            "I/O error on /data/wal: No space left on device"
        );
    }
}
