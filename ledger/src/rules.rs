//! Deterministic validation rules: whether a transaction may be applied
//! given the chain's state, as pure functions.
//!
//! The state the rules need is a small key–value map ([`StateKey`] →
//! [`StateValue`]) read through the [`ChainState`] trait. The sled store
//! provides it by prefetching exactly the keys a block's transactions read
//! ([`keys_read`]); [`MemState`] is the in-memory model. Rules never write
//! to the base state: they write to an [`Overlay`], so a whole block is
//! checked by applying its transactions in order to one overlay, and the
//! overlay's writes are what a commit persists.
//!
//! The rules (each violation is a [`RuleError`] variant):
//! - nonces strictly increase per author (gaps allowed);
//! - a record is on the chain its [`Record::route`] names;
//! - provenance (TOM Table II): a device or container joins before it
//!   leaves and cannot join twice while joined; data leaves its producer
//!   once and must have left before it is used;
//! - offloading: accept after request, complete after accept, one executor;
//! - migration: a vm has at most one migration in flight per chain; a
//!   confirmation needs an indication committed in an earlier block with the
//!   same vm id; `Arrival` / `Leave` need the consortium's accepting
//!   confirmation proven by a valid cross-chain proof, once per migration;
//! - relaying: a consortium transaction is delivered at most once;
//! - membership: a node joins once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use federact_config::{ChainKind, NodeId, Role};

use crate::block::{check_header, check_link, Block, Genesis, Tip};
use crate::cert::CommitCertificate;
use crate::error::{BlockError, RuleError};
use crate::hash::Hash;
use crate::record::{EntityKind, IdProof, Record, Requirements, Route, Scope, Site};
use crate::tx::Transaction;

/// A piece of chain state the rules read or write.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StateKey {
    /// An author's last nonce.
    Nonce(NodeId),
    /// A device or container, by name.
    Entity(String),
    /// A piece of data, by digest.
    Data(Hash),
    /// An offload contract, by task id.
    Offload(Hash),
    /// A migration, by migration id.
    Migration(Hash),
    /// The migration a vm is in (absent when none).
    VmInFlight(Hash),
    /// A consortium transaction delivered here, by its tx id.
    Delivered(Hash),
    /// A consortium member.
    Member(NodeId),
    /// An offload dispute, by task id (appended last: state written before
    /// it stays decodable).
    OffloadDispute(Hash),
}

/// The value stored under a [`StateKey`] (the variant matches the key's).
///
/// Values are short-lived (read, changed, encoded), so the size difference
/// between variants does not matter; boxing the large ones would only add
/// allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateValue {
    /// Last nonce.
    Nonce(u64),
    /// An entity's provenance state.
    Entity(EntityState),
    /// Data that left its producer.
    Data(DataState),
    /// An offload contract.
    Offload(OffloadContract),
    /// A migration.
    Migration(MigrationState),
    /// The migration id in flight.
    VmInFlight(Hash),
    /// Height at which it was delivered.
    Delivered(u64),
    /// A member.
    Member(MemberState),
    /// Height at which the task's result was disputed.
    OffloadDispute(u64),
}

/// A device's or container's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityState {
    /// What it is.
    pub kind: EntityKind,
    /// Joined (true) or left (false).
    pub joined: bool,
    /// The identity evidence of its last join.
    pub id_proof: IdProof,
    /// Height of the last change.
    pub height: u64,
}

/// Data that left its producer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataState {
    /// The producer.
    pub generated_by: String,
    /// Height at which it left.
    pub height: u64,
}

/// An offload contract as it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffloadContract {
    /// Who asked.
    pub requester: NodeId,
    /// The task's digest.
    pub task_digest: Hash,
    /// What it needs.
    pub requirements: Requirements,
    /// Local or cross-cloud.
    pub scope: Scope,
    /// The executor, once accepted.
    pub executor: Option<NodeId>,
    /// The result digest, once completed.
    pub result_digest: Option<Hash>,
    /// Height of the request.
    pub requested_at: u64,
    /// Height of the acceptance.
    pub accepted_at: Option<u64>,
    /// Height of the completion.
    pub completed_at: Option<u64>,
}

/// Where a migration stands on this chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MigrationStatus {
    /// Indicated, awaiting confirmation.
    Indicated,
    /// Confirmed (accepted or rejected).
    Confirmed {
        /// Whether the destination accepted.
        accepted: bool,
    },
    /// The vm left this cloud (source local chain).
    Left,
    /// The vm arrived in this cloud (destination local chain).
    Arrived,
}

/// A migration as this chain knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationState {
    /// The vm.
    pub vm_id: Hash,
    /// Local or inter.
    pub scope: Scope,
    /// Source (known where indicated).
    pub source: Option<Site>,
    /// Destination (known where indicated).
    pub destination: Option<Site>,
    /// Where it stands.
    pub status: MigrationStatus,
    /// Height of the last change.
    pub height: u64,
}

/// A consortium member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberState {
    /// Its cloud.
    pub cloud: String,
    /// Its roles.
    pub roles: Vec<Role>,
    /// Height it joined at.
    pub height: u64,
}

/// Read access to a chain's state.
pub trait ChainState {
    /// The value under `key`, if any.
    fn get(&self, key: &StateKey) -> Option<StateValue>;
}

/// The in-memory model of chain state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemState(pub BTreeMap<StateKey, StateValue>);

impl MemState {
    /// Applies an overlay's writes.
    pub fn apply(&mut self, delta: StateDelta) {
        for (k, v) in delta {
            match v {
                Some(v) => {
                    self.0.insert(k, v);
                }
                None => {
                    self.0.remove(&k);
                }
            }
        }
    }
}

impl ChainState for MemState {
    fn get(&self, key: &StateKey) -> Option<StateValue> {
        self.0.get(key).cloned()
    }
}

/// Writes of a block: `None` deletes. Ordered, so applying it is deterministic.
pub type StateDelta = BTreeMap<StateKey, Option<StateValue>>;

/// Pending writes over a base state.
pub struct Overlay<'a> {
    base: &'a dyn ChainState,
    writes: StateDelta,
}

impl<'a> Overlay<'a> {
    /// An empty overlay over `base`.
    pub fn new(base: &'a dyn ChainState) -> Self {
        Overlay {
            base,
            writes: BTreeMap::new(),
        }
    }
    /// The pending writes.
    pub fn into_delta(self) -> StateDelta {
        self.writes
    }
    fn put(&mut self, key: StateKey, value: StateValue) {
        self.writes.insert(key, Some(value));
    }
    fn delete(&mut self, key: StateKey) {
        self.writes.insert(key, None);
    }
}

impl ChainState for Overlay<'_> {
    fn get(&self, key: &StateKey) -> Option<StateValue> {
        match self.writes.get(key) {
            Some(v) => v.clone(),
            None => self.base.get(key),
        }
    }
}

/// The state keys `tx` reads: what the store prefetches before checking it.
pub fn keys_read(tx: &Transaction) -> Vec<StateKey> {
    let mut keys = vec![StateKey::Nonce(*tx.author())];
    match tx.record() {
        Record::OffloadRequested { task_id, .. }
        | Record::OffloadAccepted { task_id, .. }
        | Record::OffloadCompleted { task_id, .. } => keys.push(StateKey::Offload(*task_id)),
        Record::OffloadDisputed { task_id, .. } => {
            keys.push(StateKey::Offload(*task_id));
            keys.push(StateKey::OffloadDispute(*task_id));
        }
        Record::ProvIdCreate { entity, .. } | Record::ProvIdDelete { entity, .. } => {
            keys.push(StateKey::Entity(entity.clone()))
        }
        Record::ProvData { data_digest, .. } => keys.push(StateKey::Data(*data_digest)),
        Record::ProvOrch { .. } => {}
        Record::Indication {
            migration_id,
            vm_id,
            ..
        }
        | Record::Confirmation {
            migration_id,
            vm_id,
            ..
        } => {
            keys.push(StateKey::Migration(*migration_id));
            keys.push(StateKey::VmInFlight(*vm_id));
        }
        Record::Arrival { migration_id, .. } | Record::Leave { migration_id, .. } => {
            keys.push(StateKey::Migration(*migration_id))
        }
        Record::Relayed { proof } => keys.push(StateKey::Delivered(proof.tx_id)),
        Record::MemberJoin { node, .. } => keys.push(StateKey::Member(*node)),
    }
    keys
}

/// Where a transaction is being applied.
#[derive(Debug, Clone, Copy)]
pub struct RuleContext<'a> {
    /// The chain's genesis (kind, consortium validators).
    pub genesis: &'a Genesis,
    /// Height of the block the transaction is in.
    pub height: u64,
}

macro_rules! typed_get {
    ($name:ident, $arg:ty, $val:ident, $out:ty, |$k:ident| $key:expr) => {
        fn $name(s: &dyn ChainState, $k: $arg) -> Option<$out> {
            match s.get(&$key) {
                Some(StateValue::$val(v)) => Some(v),
                _ => None,
            }
        }
    };
}

typed_get!(get_nonce, &NodeId, Nonce, u64, |k| StateKey::Nonce(*k));
typed_get!(get_entity, &str, Entity, EntityState, |k| StateKey::Entity(
    k.to_string()
));
typed_get!(get_data, &Hash, Data, DataState, |k| StateKey::Data(*k));
typed_get!(get_offload, &Hash, Offload, OffloadContract, |k| {
    StateKey::Offload(*k)
});
typed_get!(get_migration, &Hash, Migration, MigrationState, |k| {
    StateKey::Migration(*k)
});
typed_get!(get_in_flight, &Hash, VmInFlight, Hash, |k| {
    StateKey::VmInFlight(*k)
});
typed_get!(get_delivered, &Hash, Delivered, u64, |k| {
    StateKey::Delivered(*k)
});
typed_get!(get_member, &NodeId, Member, MemberState, |k| {
    StateKey::Member(*k)
});
typed_get!(get_dispute, &Hash, OffloadDispute, u64, |k| {
    StateKey::OffloadDispute(*k)
});

/// The nonce rule alone: `nonce` must exceed the author's `last`.
pub fn check_nonce(author: &NodeId, nonce: u64, last: u64) -> Result<(), RuleError> {
    if nonce > last {
        Ok(())
    } else if nonce == last {
        Err(RuleError::NonceReplayed {
            author: Box::new(*author),
            nonce,
            last,
        })
    } else {
        Err(RuleError::NonceOutOfOrder {
            author: Box::new(*author),
            nonce,
            last,
        })
    }
}

/// Checks `tx` against the state in `overlay` and, if it is allowed, writes
/// its effects to `overlay`. On error nothing is written. Stateless checks
/// (signature, size, shape) are not repeated here: see
/// [`Transaction::verify`] and [`Block::check_body`].
pub fn apply_tx(
    overlay: &mut Overlay<'_>,
    ctx: &RuleContext<'_>,
    tx: &Transaction,
) -> Result<(), RuleError> {
    let author = tx.author();
    let last = get_nonce(overlay, author).unwrap_or(0);
    check_nonce(author, tx.nonce(), last)?;
    let record = tx.record();
    let on_local = ctx.genesis.kind == ChainKind::Local;
    if (record.route() == Route::Local) != on_local {
        return Err(RuleError::WrongChain {
            record: record.kind(),
            route: record.route(),
            chain: ctx.genesis.kind,
        });
    }
    let h = ctx.height;
    let mut writes: Vec<(StateKey, Option<StateValue>)> = Vec::with_capacity(3);
    match record {
        Record::OffloadRequested {
            task_id,
            requester,
            task_digest,
            requirements,
            scope,
        } => {
            if get_offload(overlay, task_id).is_some() {
                return Err(RuleError::DuplicateTask { task: *task_id });
            }
            let c = OffloadContract {
                requester: *requester,
                task_digest: *task_digest,
                requirements: *requirements,
                scope: *scope,
                executor: None,
                result_digest: None,
                requested_at: h,
                accepted_at: None,
                completed_at: None,
            };
            writes.push((StateKey::Offload(*task_id), Some(StateValue::Offload(c))));
        }
        Record::OffloadAccepted {
            task_id,
            executor,
            scope,
        } => {
            let mut c = get_offload(overlay, task_id)
                .ok_or(RuleError::AcceptWithoutRequest { task: *task_id })?;
            check_offload_scope(task_id, &c, *scope)?;
            if let Some(e) = c.executor {
                return Err(RuleError::AlreadyAccepted {
                    task: *task_id,
                    executor: Box::new(e),
                });
            }
            c.executor = Some(*executor);
            c.accepted_at = Some(h);
            writes.push((StateKey::Offload(*task_id), Some(StateValue::Offload(c))));
        }
        Record::OffloadCompleted {
            task_id,
            result_digest,
            scope,
        } => {
            let mut c = get_offload(overlay, task_id)
                .ok_or(RuleError::CompleteWithoutAccept { task: *task_id })?;
            check_offload_scope(task_id, &c, *scope)?;
            if c.executor.is_none() {
                return Err(RuleError::CompleteWithoutAccept { task: *task_id });
            }
            if c.result_digest.is_some() {
                return Err(RuleError::AlreadyCompleted { task: *task_id });
            }
            c.result_digest = Some(*result_digest);
            c.completed_at = Some(h);
            writes.push((StateKey::Offload(*task_id), Some(StateValue::Offload(c))));
        }
        Record::OffloadDisputed {
            task_id,
            received_digest,
            expected_digest,
            scope,
        } => {
            let c = get_offload(overlay, task_id)
                .ok_or(RuleError::DisputeBeforeCompletion { task: *task_id })?;
            check_offload_scope(task_id, &c, *scope)?;
            if c.requester != *author {
                return Err(RuleError::DisputeByNonRequester {
                    task: *task_id,
                    author: Box::new(*author),
                });
            }
            let Some(committed) = c.result_digest else {
                return Err(RuleError::DisputeBeforeCompletion { task: *task_id });
            };
            if get_dispute(overlay, task_id).is_some() {
                return Err(RuleError::AlreadyDisputed { task: *task_id });
            }
            if committed == *received_digest && received_digest == expected_digest {
                return Err(RuleError::DisputeWithoutDiscrepancy { task: *task_id });
            }
            writes.push((
                StateKey::OffloadDispute(*task_id),
                Some(StateValue::OffloadDispute(h)),
            ));
        }
        Record::ProvIdCreate {
            kind,
            entity,
            id_proof,
        } => {
            if get_entity(overlay, entity).is_some_and(|e| e.joined) {
                return Err(RuleError::AlreadyJoined {
                    entity: entity.clone(),
                });
            }
            let e = EntityState {
                kind: *kind,
                joined: true,
                id_proof: id_proof.clone(),
                height: h,
            };
            writes.push((
                StateKey::Entity(entity.clone()),
                Some(StateValue::Entity(e)),
            ));
        }
        Record::ProvIdDelete { kind, entity } => {
            let mut e = match get_entity(overlay, entity) {
                Some(e) if e.joined => e,
                _ => {
                    return Err(RuleError::NotJoined {
                        entity: entity.clone(),
                    })
                }
            };
            if e.kind != *kind {
                return Err(RuleError::EntityKindMismatch {
                    entity: entity.clone(),
                    joined: e.kind,
                    got: *kind,
                });
            }
            e.joined = false;
            e.height = h;
            writes.push((
                StateKey::Entity(entity.clone()),
                Some(StateValue::Entity(e)),
            ));
        }
        Record::ProvData {
            data_digest,
            generated_by,
            used_by,
        } => {
            let left = get_data(overlay, data_digest);
            match (used_by, left) {
                (None, Some(_)) => {
                    return Err(RuleError::DataAlreadyLeft { data: *data_digest });
                }
                (None, None) => {
                    let d = DataState {
                        generated_by: generated_by.clone(),
                        height: h,
                    };
                    writes.push((StateKey::Data(*data_digest), Some(StateValue::Data(d))));
                }
                (Some(_), None) => return Err(RuleError::DataNotLeft { data: *data_digest }),
                (Some(_), Some(d)) => {
                    if &d.generated_by != generated_by {
                        return Err(RuleError::DataProducerMismatch {
                            data: *data_digest,
                            recorded: d.generated_by,
                            claimed: generated_by.clone(),
                        });
                    }
                }
            }
        }
        Record::ProvOrch { .. } => {}
        Record::Indication {
            migration_id,
            vm_id,
            source,
            destination,
            scope,
        } => {
            if get_migration(overlay, migration_id).is_some() {
                return Err(RuleError::DuplicateMigration {
                    migration: *migration_id,
                });
            }
            if let Some(m) = get_in_flight(overlay, vm_id) {
                return Err(RuleError::VmInFlight {
                    vm: *vm_id,
                    migration: m,
                });
            }
            let m = MigrationState {
                vm_id: *vm_id,
                scope: *scope,
                source: Some(source.clone()),
                destination: Some(destination.clone()),
                status: MigrationStatus::Indicated,
                height: h,
            };
            writes.push((
                StateKey::Migration(*migration_id),
                Some(StateValue::Migration(m)),
            ));
            writes.push((
                StateKey::VmInFlight(*vm_id),
                Some(StateValue::VmInFlight(*migration_id)),
            ));
        }
        Record::Confirmation {
            migration_id,
            vm_id,
            accepted,
            observed_hash,
            scope,
            ..
        } => {
            let mut m = get_migration(overlay, migration_id).ok_or(
                RuleError::ConfirmationWithoutIndication {
                    migration: *migration_id,
                },
            )?;
            if m.status != MigrationStatus::Indicated {
                return Err(match m.status {
                    MigrationStatus::Confirmed { .. } => RuleError::AlreadyConfirmed {
                        migration: *migration_id,
                    },
                    _ => RuleError::ConfirmationWithoutIndication {
                        migration: *migration_id,
                    },
                });
            }
            if m.height >= h {
                return Err(RuleError::IndicationNotCommitted {
                    migration: *migration_id,
                    height: h,
                });
            }
            if &m.vm_id != vm_id {
                return Err(RuleError::VmIdMismatch {
                    migration: *migration_id,
                    expected: m.vm_id,
                    got: *vm_id,
                });
            }
            if m.scope != *scope {
                return Err(RuleError::MigrationScopeMismatch {
                    migration: *migration_id,
                    indicated: m.scope,
                    got: *scope,
                });
            }
            if *accepted && observed_hash != vm_id {
                return Err(RuleError::ConfirmationHashMismatch {
                    migration: *migration_id,
                    vm: *vm_id,
                    observed: *observed_hash,
                });
            }
            m.status = MigrationStatus::Confirmed {
                accepted: *accepted,
            };
            m.height = h;
            writes.push((
                StateKey::Migration(*migration_id),
                Some(StateValue::Migration(m)),
            ));
            if get_in_flight(overlay, vm_id) == Some(*migration_id) {
                writes.push((StateKey::VmInFlight(*vm_id), None));
            }
        }
        Record::Arrival {
            migration_id,
            vm_id,
            proof,
        }
        | Record::Leave {
            migration_id,
            vm_id,
            proof,
        } => {
            if get_migration(overlay, migration_id).is_some() {
                return Err(RuleError::MigrationAlreadyRecorded {
                    record: record.kind(),
                    migration: *migration_id,
                });
            }
            let cons = ctx
                .genesis
                .consortium
                .as_ref()
                .ok_or(RuleError::NoConsortium)?;
            let proven = proof
                .verify(&cons.validators, &cons.chain_id)
                .map_err(RuleError::Proof)?;
            match proven.record() {
                Record::Confirmation {
                    migration_id: pm,
                    vm_id: pv,
                    accepted,
                    ..
                } => {
                    if pm != migration_id || pv != vm_id {
                        return Err(RuleError::ProofMismatch {
                            proven_migration: *pm,
                            proven_vm: *pv,
                        });
                    }
                    if !accepted {
                        return Err(RuleError::ProofNotAccepted {
                            migration: *migration_id,
                        });
                    }
                }
                other => {
                    return Err(RuleError::ProofNotConfirmation { got: other.kind() });
                }
            }
            let status = if matches!(record, Record::Leave { .. }) {
                MigrationStatus::Left
            } else {
                MigrationStatus::Arrived
            };
            let m = MigrationState {
                vm_id: *vm_id,
                scope: Scope::Inter,
                source: None,
                destination: None,
                status,
                height: h,
            };
            writes.push((
                StateKey::Migration(*migration_id),
                Some(StateValue::Migration(m)),
            ));
        }
        Record::Relayed { proof } => {
            if get_delivered(overlay, &proof.tx_id).is_some() {
                return Err(RuleError::AlreadyDelivered { tx: proof.tx_id });
            }
            let cons = ctx
                .genesis
                .consortium
                .as_ref()
                .ok_or(RuleError::NoConsortium)?;
            proof
                .verify(&cons.validators, &cons.chain_id)
                .map_err(RuleError::Proof)?;
            writes.push((
                StateKey::Delivered(proof.tx_id),
                Some(StateValue::Delivered(h)),
            ));
        }
        Record::MemberJoin { node, cloud, roles } => {
            if get_member(overlay, node).is_some() {
                return Err(RuleError::AlreadyMember {
                    node: Box::new(*node),
                });
            }
            let m = MemberState {
                cloud: cloud.clone(),
                roles: roles.clone(),
                height: h,
            };
            writes.push((StateKey::Member(*node), Some(StateValue::Member(m))));
        }
    }
    overlay.put(StateKey::Nonce(*author), StateValue::Nonce(tx.nonce()));
    for (k, v) in writes {
        match v {
            Some(v) => overlay.put(k, v),
            None => overlay.delete(k),
        }
    }
    Ok(())
}

fn check_offload_scope(task: &Hash, c: &OffloadContract, got: Scope) -> Result<(), RuleError> {
    if c.scope != got {
        return Err(RuleError::OffloadScopeMismatch {
            task: *task,
            requested: c.scope,
            got,
        });
    }
    Ok(())
}

/// Applies every transaction of `block` in order to one overlay over
/// `state`; returns the block's state writes, or the first violation.
/// Only the rules: pair with [`Block::check_body`] and a header check, or use
/// [`check_block`] / [`check_proposal`].
pub fn apply_block(
    genesis: &Genesis,
    state: &dyn ChainState,
    block: &Block,
) -> Result<StateDelta, BlockError> {
    let ctx = RuleContext {
        genesis,
        height: block.header.height,
    };
    let mut overlay = Overlay::new(state);
    for (index, tx) in block.txs.iter().enumerate() {
        apply_tx(&mut overlay, &ctx, tx).map_err(|source| BlockError::Rule {
            height: block.header.height,
            index,
            tx_id: tx.id(),
            source: Box::new(source),
        })?;
    }
    Ok(overlay.into_delta())
}

/// Everything a validator checks of a proposed block before voting: it
/// extends `tip`, its body matches its header and limits, every signature
/// verifies (batched), and every transaction passes the rules in order.
pub fn check_proposal(
    genesis: &Genesis,
    tip: &Tip,
    state: &dyn ChainState,
    block: &Block,
) -> Result<StateDelta, BlockError> {
    check_proposal_with(genesis, tip, state, block, &|_| false)
}

/// [`check_proposal`], skipping signatures `already_verified` vouches for
/// (see [`Block::check_body_with`]).
pub fn check_proposal_with(
    genesis: &Genesis,
    tip: &Tip,
    state: &dyn ChainState,
    block: &Block,
    already_verified: &dyn Fn(&Transaction) -> bool,
) -> Result<StateDelta, BlockError> {
    check_link(genesis, tip, &block.header)?;
    block.check_body_with(&genesis.limits, &genesis.tx_policy(), already_verified)?;
    apply_block(genesis, state, block)
}

/// [`check_proposal`] plus the commit certificate: what must hold before a
/// block is committed.
pub fn check_block(
    genesis: &Genesis,
    tip: &Tip,
    state: &dyn ChainState,
    block: &Block,
    cert: &CommitCertificate,
) -> Result<StateDelta, BlockError> {
    check_header(genesis, tip, &block.header, cert)?;
    block.check_body(&genesis.limits, &genesis.tx_policy())?;
    apply_block(genesis, state, block)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::tests::{certify, genesis, next_block};
    use crate::block::ConsortiumRef;
    use crate::error::ProofError;
    use crate::proof::tests::{committed, set};
    use crate::proof::CrossChainProof;
    use crate::tx::tests::key;
    use federact_config::NodeKey;

    /// A chain model: genesis, state, height; applies records as txs of
    /// author `key(1)` with increasing nonces, one block per call.
    struct Chain {
        g: Genesis,
        state: MemState,
        height: u64,
        nonce: u64,
    }

    impl Chain {
        fn local() -> Chain {
            let cons = ConsortiumRef {
                chain_id: "cons".into(),
                validators: set(),
            };
            Chain::new(genesis("local", ChainKind::Local, Some(cons)))
        }
        fn consortium() -> Chain {
            Chain::new(genesis("cons", ChainKind::Consortium, None))
        }
        fn new(g: Genesis) -> Chain {
            Chain {
                g,
                state: MemState::default(),
                height: 0,
                nonce: 0,
            }
        }
        /// Applies `records` as one block; all-or-nothing.
        fn block(&mut self, records: Vec<Record>) -> Result<(), RuleError> {
            let k = key(1);
            let txs: Vec<_> = records
                .into_iter()
                .enumerate()
                .map(|(i, r)| Transaction::sign(r, &k, self.nonce + 1 + i as u64, 0, None))
                .collect();
            let n = txs.len() as u64;
            let b = Block::new(
                &self.g.chain_id,
                self.height + 1,
                Hash::ZERO,
                k.id(),
                0,
                0,
                txs,
            );
            match apply_block(&self.g, &self.state, &b) {
                Ok(delta) => {
                    self.state.apply(delta);
                    self.height += 1;
                    self.nonce += n;
                    Ok(())
                }
                Err(BlockError::Rule { source, .. }) => Err(*source),
                Err(e) => panic!("unexpected {e}"),
            }
        }
        fn one(&mut self, r: Record) -> Result<(), RuleError> {
            self.block(vec![r])
        }
    }

    fn h(s: &str) -> Hash {
        Hash::of(s.as_bytes())
    }

    fn join(kind: EntityKind, e: &str) -> Record {
        Record::ProvIdCreate {
            kind,
            entity: e.into(),
            id_proof: IdProof {
                digest: h(e),
                attested_by: key(1).id(),
            },
        }
    }

    fn leave(kind: EntityKind, e: &str) -> Record {
        Record::ProvIdDelete {
            kind,
            entity: e.into(),
        }
    }

    fn data(d: &str, by: &str, used: Option<&str>) -> Record {
        Record::ProvData {
            data_digest: h(d),
            generated_by: by.into(),
            used_by: used.map(str::to_string),
        }
    }

    #[test]
    fn provenance_state_machine() {
        use EntityKind::*;
        let mut c = Chain::local();
        // A leave before a join.
        assert_eq!(
            c.one(leave(Container, "c1")),
            Err(RuleError::NotJoined {
                entity: "c1".into()
            })
        );
        c.one(join(Container, "c1")).unwrap();
        assert_eq!(
            c.one(join(Container, "c1")),
            Err(RuleError::AlreadyJoined {
                entity: "c1".into()
            })
        );
        assert_eq!(
            c.one(leave(Device, "c1")),
            Err(RuleError::EntityKindMismatch {
                entity: "c1".into(),
                joined: Container,
                got: Device
            })
        );
        c.one(leave(Container, "c1")).unwrap();
        assert!(matches!(
            c.one(leave(Container, "c1")),
            Err(RuleError::NotJoined { .. })
        ));
        // Rejoin after leaving is fine; join and leave in one block too.
        c.block(vec![join(Device, "c1"), leave(Device, "c1")])
            .unwrap();
        // Data: used before it left, then left, then used.
        assert_eq!(
            c.one(data("d", "sensor", Some("analyser"))),
            Err(RuleError::DataNotLeft { data: h("d") })
        );
        c.one(data("d", "sensor", None)).unwrap();
        assert_eq!(
            c.one(data("d", "sensor", None)),
            Err(RuleError::DataAlreadyLeft { data: h("d") })
        );
        assert!(matches!(
            c.one(data("d", "other", Some("analyser"))),
            Err(RuleError::DataProducerMismatch { .. })
        ));
        c.one(data("d", "sensor", Some("analyser"))).unwrap();
        c.one(Record::ProvOrch {
            deployed: "c1".into(),
            location: "s1".into(),
        })
        .unwrap();
    }

    #[test]
    fn a_failing_block_changes_nothing() {
        let mut c = Chain::local();
        let before = c.state.clone();
        assert!(c
            .block(vec![
                join(EntityKind::Device, "d"),
                join(EntityKind::Device, "d")
            ])
            .is_err());
        assert_eq!(c.state, before);
    }

    fn requested(t: &str, scope: Scope) -> Record {
        Record::OffloadRequested {
            task_id: h(t),
            requester: key(2).id(),
            task_digest: h("code"),
            requirements: Requirements {
                cpu_millis: 500,
                memory_mb: 64,
                deadline_ms: 1000,
            },
            scope,
        }
    }

    fn accepted(t: &str, exec: u8, scope: Scope) -> Record {
        Record::OffloadAccepted {
            task_id: h(t),
            executor: key(exec).id(),
            scope,
        }
    }

    fn completed(t: &str, scope: Scope) -> Record {
        Record::OffloadCompleted {
            task_id: h(t),
            result_digest: h("result"),
            scope,
        }
    }

    #[test]
    fn offload_ordering() {
        let l = Scope::Local;
        let mut c = Chain::local();
        assert_eq!(
            c.one(accepted("t", 3, l)),
            Err(RuleError::AcceptWithoutRequest { task: h("t") })
        );
        assert_eq!(
            c.one(completed("t", l)),
            Err(RuleError::CompleteWithoutAccept { task: h("t") })
        );
        c.one(requested("t", l)).unwrap();
        assert_eq!(
            c.one(requested("t", l)),
            Err(RuleError::DuplicateTask { task: h("t") })
        );
        assert_eq!(
            c.one(completed("t", l)),
            Err(RuleError::CompleteWithoutAccept { task: h("t") })
        );
        c.one(accepted("t", 3, l)).unwrap();
        assert_eq!(
            c.one(accepted("t", 4, l)),
            Err(RuleError::AlreadyAccepted {
                task: h("t"),
                executor: Box::new(key(3).id())
            })
        );
        c.one(completed("t", l)).unwrap();
        assert_eq!(
            c.one(completed("t", l)),
            Err(RuleError::AlreadyCompleted { task: h("t") })
        );
        // Request, accept and complete in one block.
        c.block(vec![
            requested("u", l),
            accepted("u", 3, l),
            completed("u", l),
        ])
        .unwrap();
        // Cross-cloud contracts live on the consortium, with a consistent scope.
        let i = Scope::Inter;
        assert!(matches!(
            c.one(requested("v", i)),
            Err(RuleError::WrongChain { .. })
        ));
        let mut cons = Chain::consortium();
        cons.one(requested("v", i)).unwrap();
        assert!(matches!(
            cons.one(accepted("v", 3, Scope::Local)),
            Err(RuleError::WrongChain { .. })
        ));
        let mut local = Chain::local();
        local.one(requested("w", l)).unwrap();
        local.state.0.insert(
            StateKey::Offload(h("x")),
            StateValue::Offload(OffloadContract {
                scope: Scope::Inter,
                ..match local.state.get(&StateKey::Offload(h("w"))) {
                    Some(StateValue::Offload(o)) => o,
                    _ => unreachable!(),
                }
            }),
        );
        assert!(matches!(
            local.one(accepted("x", 3, l)),
            Err(RuleError::OffloadScopeMismatch { .. })
        ));
    }

    fn disputed(t: &str, received: &str, expected: &str, scope: Scope) -> Record {
        Record::OffloadDisputed {
            task_id: h(t),
            received_digest: h(received),
            expected_digest: h(expected),
            scope,
        }
    }

    #[test]
    fn offload_dispute_only_by_the_requester_of_a_completed_task_with_a_discrepancy() {
        let l = Scope::Local;
        let mut c = Chain::local();
        // The model's author is key(1): make it the requester of "t".
        let mine = |t: &str| match requested(t, l) {
            Record::OffloadRequested {
                task_id,
                task_digest,
                requirements,
                scope,
                ..
            } => Record::OffloadRequested {
                task_id,
                requester: key(1).id(),
                task_digest,
                requirements,
                scope,
            },
            _ => unreachable!(),
        };
        assert_eq!(
            c.one(disputed("t", "x", "result", l)),
            Err(RuleError::DisputeBeforeCompletion { task: h("t") })
        );
        c.one(mine("t")).unwrap();
        c.one(accepted("t", 3, l)).unwrap();
        // Accepted, not completed: the requester holds no proven result.
        assert_eq!(
            c.one(disputed("t", "x", "result", l)),
            Err(RuleError::DisputeBeforeCompletion { task: h("t") })
        );
        c.one(completed("t", l)).unwrap();
        assert!(matches!(
            c.one(disputed("t", "x", "result", Scope::Inter)),
            Err(RuleError::WrongChain { .. })
        ));
        // Committed, received and recomputed all "result": nothing to dispute.
        assert_eq!(
            c.one(disputed("t", "result", "result", l)),
            Err(RuleError::DisputeWithoutDiscrepancy { task: h("t") })
        );
        // A tampered result (received differs from committed) ...
        c.one(disputed("t", "tampered", "result", l)).unwrap();
        assert_eq!(
            c.one(disputed("t", "tampered", "result", l)),
            Err(RuleError::AlreadyDisputed { task: h("t") })
        );
        // ... and a spot check (committed = received, recomputed differs).
        c.one(mine("u")).unwrap();
        c.one(accepted("u", 3, l)).unwrap();
        c.one(completed("u", l)).unwrap();
        c.one(disputed("u", "result", "right", l)).unwrap();
        // Someone else's task: "v" is requested by key(2).
        c.one(requested("v", l)).unwrap();
        c.one(accepted("v", 3, l)).unwrap();
        c.one(completed("v", l)).unwrap();
        assert_eq!(
            c.one(disputed("v", "x", "result", l)),
            Err(RuleError::DisputeByNonRequester {
                task: h("v"),
                author: Box::new(key(1).id())
            })
        );
    }

    fn indication(m: &str, vm: &str, scope: Scope) -> Record {
        let dst_cloud = if scope == Scope::Local { "a" } else { "b" };
        Record::Indication {
            migration_id: h(m),
            vm_id: h(vm),
            source: Site::new("a", "s1"),
            destination: Site::new(dst_cloud, "s2"),
            scope,
        }
    }

    fn confirmation(m: &str, vm: &str, ok: bool, seen: &str, scope: Scope) -> Record {
        Record::Confirmation {
            migration_id: h(m),
            vm_id: h(vm),
            accepted: ok,
            observed_hash: h(seen),
            reason: (!ok).then(|| "hash mismatch".to_string()),
            scope,
        }
    }

    #[test]
    fn migration_ordering() {
        let l = Scope::Local;
        let mut c = Chain::local();
        assert_eq!(
            c.one(confirmation("m", "vm", true, "vm", l)),
            Err(RuleError::ConfirmationWithoutIndication { migration: h("m") })
        );
        // Indication and confirmation in the same block: not yet committed.
        assert!(matches!(
            c.block(vec![
                indication("m", "vm", l),
                confirmation("m", "vm", true, "vm", l)
            ]),
            Err(RuleError::IndicationNotCommitted { .. })
        ));
        c.one(indication("m", "vm", l)).unwrap();
        assert_eq!(
            c.one(indication("m", "vm2", l)),
            Err(RuleError::DuplicateMigration { migration: h("m") })
        );
        assert_eq!(
            c.one(indication("m2", "vm", l)),
            Err(RuleError::VmInFlight {
                vm: h("vm"),
                migration: h("m")
            })
        );
        assert!(matches!(
            c.one(confirmation("m", "other", true, "other", l)),
            Err(RuleError::VmIdMismatch { .. })
        ));
        assert!(matches!(
            c.one(confirmation("m", "vm", true, "tampered", l)),
            Err(RuleError::ConfirmationHashMismatch { .. })
        ));
        c.one(confirmation("m", "vm", true, "vm", l)).unwrap();
        assert_eq!(
            c.one(confirmation("m", "vm", false, "x", l)),
            Err(RuleError::AlreadyConfirmed { migration: h("m") })
        );
        // The vm is free again; a rejected migration frees it too.
        c.one(indication("m2", "vm", l)).unwrap();
        c.one(confirmation("m2", "vm", false, "tampered", l))
            .unwrap();
        c.one(indication("m3", "vm", l)).unwrap();
        // Inter migrations belong on the consortium.
        assert!(matches!(
            c.one(indication("m4", "vm4", Scope::Inter)),
            Err(RuleError::WrongChain { .. })
        ));
        let mut cons = Chain::consortium();
        cons.one(indication("m4", "vm4", Scope::Inter)).unwrap();
        assert!(matches!(
            cons.one(confirmation("m4", "vm4", true, "vm4", l)),
            Err(RuleError::WrongChain { .. })
        ));
    }

    fn proof_of(r: Record) -> Box<CrossChainProof> {
        let (b, c) = committed(vec![r]);
        Box::new(CrossChainProof::build(&b, &c, 0).unwrap())
    }

    #[test]
    fn arrival_and_leave_need_the_consortium_confirmation() {
        let i = Scope::Inter;
        let good = proof_of(confirmation("m", "vm", true, "vm", i));
        let leave = |proof| Record::Leave {
            migration_id: h("m"),
            vm_id: h("vm"),
            proof,
        };
        let arrival = |proof| Record::Arrival {
            migration_id: h("m"),
            vm_id: h("vm"),
            proof,
        };
        let mut c = Chain::local();
        // Rejection, other migration, not a confirmation, forged proof.
        assert_eq!(
            c.one(leave(proof_of(confirmation("m", "vm", false, "x", i)))),
            Err(RuleError::ProofNotAccepted { migration: h("m") })
        );
        assert!(matches!(
            c.one(leave(proof_of(confirmation("m9", "vm", true, "vm", i)))),
            Err(RuleError::ProofMismatch { .. })
        ));
        assert!(matches!(
            c.one(leave(proof_of(indication("m", "vm", i)))),
            Err(RuleError::ProofNotConfirmation { got: "Indication" })
        ));
        let mut forged = good.clone();
        forged.certificate.signatures.truncate(1);
        assert!(matches!(
            c.one(leave(forged)),
            Err(RuleError::Proof(ProofError::Certificate(_)))
        ));
        c.one(leave(good.clone())).unwrap();
        assert!(matches!(
            c.one(leave(good.clone())),
            Err(RuleError::MigrationAlreadyRecorded {
                record: "Leave",
                ..
            })
        ));
        let mut dest = Chain::local();
        dest.one(arrival(good.clone())).unwrap();
        // A chain whose genesis names no consortium cannot check proofs.
        let mut lonely = Chain::new(genesis("solo", ChainKind::Local, None));
        assert_eq!(lonely.one(arrival(good)), Err(RuleError::NoConsortium));
    }

    #[test]
    fn relayed_records_are_delivered_once_and_must_verify() {
        let p = proof_of(requested("t", Scope::Inter));
        let mut c = Chain::local();
        c.one(Record::Relayed { proof: p.clone() }).unwrap();
        assert_eq!(
            c.one(Record::Relayed { proof: p.clone() }),
            Err(RuleError::AlreadyDelivered { tx: p.tx_id })
        );
        let mut bad = p;
        bad.header.chain_id = "elsewhere".into();
        bad.tx_id = Hash::ZERO;
        assert!(matches!(
            c.one(Record::Relayed { proof: bad }),
            Err(RuleError::Proof(ProofError::WrongChain { .. }))
        ));
        assert!(matches!(
            Chain::consortium().one(Record::Relayed {
                proof: proof_of(requested("t", Scope::Inter))
            }),
            Err(RuleError::WrongChain { .. })
        ));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Mutated encodings of a valid block (with a relayed proof inside)
        /// decode or fail cleanly, and whatever decodes goes through every
        /// check without panicking (the fuzz target's property, in `cargo test`).
        #[test]
        fn mutated_blocks_never_panic(
            muts in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 1..8),
            cut in proptest::prelude::any::<usize>(),
        ) {
            let c = Chain::local();
            let p = proof_of(requested("t", Scope::Inter));
            let txs = vec![
                Transaction::sign(join(EntityKind::Device, "d"), &key(1), 1, 0, None),
                Transaction::sign(Record::Relayed { proof: p }, &key(1), 2, 0, None),
                Transaction::sign(indication("m", "vm", Scope::Local), &key(1), 3, 0, None),
            ];
            let b = next_block(&c.g, &c.g.tip(), txs);
            let mut bytes = b.encode();
            for (at, v) in muts {
                let n = bytes.len();
                bytes[at % n] ^= v;
            }
            if cut % 4 == 0 {
                bytes.truncate(cut % (bytes.len() + 1));
            }
            if let Ok(block) = Block::decode(&bytes, 1 << 20) {
                let g = c.g.clone();
                let _ = check_proposal(&g, &g.tip(), &c.state, &block);
                let _ = check_block(&g, &g.tip(), &c.state, &block, &certify(&block.header, 0));
            }
            for tx in bytes.windows(64).take(4) {
                let _ = Transaction::decode(tx, 1 << 16);
            }
        }
    }

    #[test]
    fn membership_joins_once() {
        let mut c = Chain::consortium();
        let j = Record::MemberJoin {
            node: NodeKey::from_seed(&[77; 32]).id(),
            cloud: "a".into(),
            roles: vec![Role::Gateway],
        };
        c.one(j.clone()).unwrap();
        assert!(matches!(c.one(j), Err(RuleError::AlreadyMember { .. })));
    }

    #[test]
    fn nonces_must_increase() {
        let a = key(1).id();
        check_nonce(&a, 1, 0).unwrap();
        check_nonce(&a, 9, 3).unwrap();
        assert_eq!(
            check_nonce(&a, 3, 3),
            Err(RuleError::NonceReplayed {
                author: Box::new(a),
                nonce: 3,
                last: 3
            })
        );
        assert_eq!(
            check_nonce(&a, 2, 3),
            Err(RuleError::NonceOutOfOrder {
                author: Box::new(a),
                nonce: 2,
                last: 3
            })
        );
        // In a block: a replayed tx is refused, even inside one block.
        let g = genesis("local", ChainKind::Local, None);
        let tx = Transaction::sign(join(EntityKind::Device, "d"), &key(1), 1, 0, None);
        let tx2 = Transaction::sign(join(EntityKind::Device, "e"), &key(1), 1, 0, None);
        let b = next_block(&g, &g.tip(), vec![tx, tx2]);
        assert!(matches!(
            apply_block(&g, &MemState::default(), &b),
            Err(BlockError::Rule {
                index: 1,
                source,
                ..
            }) if matches!(*source, RuleError::NonceReplayed { .. })
        ));
    }

    #[test]
    fn check_block_combines_header_body_and_rules() {
        let g = genesis("local", ChainKind::Local, None);
        let tip = g.tip();
        let txs = vec![
            Transaction::sign(join(EntityKind::Device, "d"), &key(1), 1, 0, None),
            Transaction::sign(leave(EntityKind::Device, "d"), &key(1), 2, 0, None),
        ];
        let b = next_block(&g, &tip, txs);
        let cert = certify(&b.header, 0);
        let delta = check_block(&g, &tip, &MemState::default(), &b, &cert).unwrap();
        assert!(delta.contains_key(&StateKey::Entity("d".into())));
        check_proposal(&g, &tip, &MemState::default(), &b).unwrap();
        let mut keys: Vec<_> = b.txs.iter().flat_map(keys_read).collect();
        keys.dedup();
        assert_eq!(
            keys,
            vec![
                StateKey::Nonce(key(1).id()),
                StateKey::Entity("d".into()),
                StateKey::Nonce(key(1).id()),
                StateKey::Entity("d".into())
            ]
        );
    }
}
