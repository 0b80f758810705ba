//! The validator actor: one per (node, chain). It owns the chain's sled
//! store, its vote write-ahead log and its mempool, and drives the pure
//! Tendermint core (`federact_ledger::consensus`): every handler turns a
//! message into a core input, drains the core's effects, and carries them
//! out — sends over QUIC, timers, fsyncs, commits. Proposals are built and
//! checked by `federact_ledger::chain`, not here.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;
use tracing::{debug, info, warn};

use federact_config::{ChainSpec, NodeId, NodeKey};
use federact_federation::{Inbox, Incoming, Transport};
use federact_ledger::block::{Block, Genesis};
use federact_ledger::cert::{CommitCertificate, ValidatorSet};
use federact_ledger::chain::{build_block, candidates, ProposalSlot};
use federact_ledger::consensus::{Consensus, ConsensusParams, Effect, Message};
use federact_ledger::error::{ErrorChain, LedgerError, RuleError};
use federact_ledger::mempool::{Mempool, MempoolLimits};
use federact_ledger::proof::CrossChainProof;
use federact_ledger::record::Record;
use federact_ledger::rules::{apply_tx, Overlay, RuleContext};
use federact_ledger::store::{ChainStore, IndexedRecord, VoteWal};
use federact_ledger::tx::{verify_batch, Transaction, TxId};

use crate::clock::now_ms;
use crate::error::ActorError;
use crate::wire::{
    self, CertifiedBlock, LedgerAnswer, LedgerQuery, Refusal, TxStatus, ValidatorOneWay,
    ValidatorRequest, ValidatorResponse,
};

/// Followers (gateways, tools) one validator pushes blocks to, at most.
const FOLLOWERS_MAX: usize = 64;
/// Blocks pushed to a new follower at once; it fetches older ones itself.
const FOLLOW_BACKFILL_MAX: u64 = 256;
/// Refusal reasons remembered for `TxStatus`.
const REFUSED_MAX: usize = 16_384;
/// Transactions one `Submit` may carry.
const SUBMIT_BATCH_MAX: usize = 4096;
/// The inbox capacity of a validator on the transport.
pub const INBOX_CAPACITY: usize = 4096;
/// Time a block fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Counters of what a validator refused and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ValidatorCounters {
    /// Messages that did not decode.
    pub malformed: u64,
    /// Transactions refused at admission.
    pub tx_refused: u64,
    /// Transactions admitted.
    pub tx_admitted: u64,
    /// Blocks committed.
    pub blocks_committed: u64,
    /// Equivocation evidence seen.
    pub evidence: u64,
}

/// What it takes to start a validator.
pub struct ValidatorSetup {
    /// This node's key.
    pub key: NodeKey,
    /// The chain.
    pub chain: ChainSpec,
    /// The chain's genesis (from the federation).
    pub genesis: Genesis,
    /// The store directory of this chain on this node.
    pub dir: std::path::PathBuf,
    /// The node's transport.
    pub transport: Transport,
    /// Mempool bounds.
    pub mempool: MempoolLimits,
}

/// The validator actor.
pub struct ValidatorActor {
    me: NodeId,
    chain_id: String,
    actor: Arc<str>,
    core: Consensus<Block>,
    store: ChainStore,
    wal: VoteWal,
    mempool: Mempool,
    transport: Transport,
    peers: Vec<NodeId>,
    followers: BTreeMap<NodeId, Arc<str>>,
    refused: HashMap<TxId, String>,
    refused_order: VecDeque<TxId>,
    inbox: Option<Inbox>,
    counters: ValidatorCounters,
    /// Trace contexts of admitted transactions whose submit was traced, so
    /// their commit gets a `validator.commit` span in the same trace
    /// (bounded: the oldest are forgotten first).
    traced: HashMap<TxId, federact_federation::trace::TraceContext>,
    traced_order: VecDeque<TxId>,
    metrics: crate::metrics::Metrics,
    /// One `consensus.round` span per (height, round), sampled.
    rounds: crate::round_trace::RoundTracer,
}

/// Traced transactions a validator remembers until their commit.
const TRACED_MAX: usize = 4096;

impl ValidatorActor {
    /// Opens the store and WAL, restores the core, and registers on the
    /// transport. Call inside an actix system; then `.start()`.
    pub fn new(setup: ValidatorSetup) -> Result<ValidatorActor, ActorError> {
        let chain_id = setup.chain.id().to_string();
        let store = ChainStore::open(&setup.dir.join("chain"), Some(&setup.genesis))?;
        let wal = VoteWal::open(&setup.dir.join("wal"))?;
        let height = store.tip().height + 1;
        let entries = wal.entries::<Block>(height)?;
        let set = ValidatorSet::from_spec(&setup.chain);
        let me = setup.key.id();
        let peers = set
            .validators()
            .iter()
            .copied()
            .filter(|v| *v != me)
            .collect();
        let params = ConsensusParams::from(setup.chain.params());
        let core = Consensus::new(
            chain_id.clone(),
            set,
            setup.key,
            params,
            height,
            entries,
            now_ms(),
        )
        .map_err(|e| ActorError::NotAValidator {
            chain: chain_id.clone(),
            node: *e.0,
        })?;
        let actor: Arc<str> = wire::validator_actor(&chain_id).into();
        let inbox = setup.transport.register(&actor, INBOX_CAPACITY)?;
        info!(chain = %chain_id, height, "validator starting");
        Ok(ValidatorActor {
            me,
            chain_id,
            actor,
            core,
            store,
            wal,
            mempool: Mempool::new(setup.mempool),
            transport: setup.transport,
            peers,
            followers: BTreeMap::new(),
            refused: HashMap::new(),
            refused_order: VecDeque::new(),
            inbox: Some(inbox),
            counters: ValidatorCounters::default(),
            traced: HashMap::new(),
            traced_order: VecDeque::new(),
            metrics: crate::metrics::Metrics::global(),
            rounds: crate::round_trace::RoundTracer::new(),
        })
    }

    /// Carries out the core's effects until it has none left.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        loop {
            let effects = self.core.poll_effects();
            if effects.is_empty() {
                self.rounds.observe(&self.chain_id, &self.core);
                return;
            }
            for effect in effects {
                self.perform(effect, ctx);
            }
        }
    }

    fn perform(&mut self, effect: Effect<Block>, ctx: &mut Context<Self>) {
        match effect {
            Effect::Persist(entry) => {
                self.rounds.own_entry(&entry);
                if let Err(e) = self.wal.append(&entry) {
                    // Without a durable vote we must not send it: stop.
                    warn!(chain = %self.chain_id, error = %ErrorChain(&e), "vote WAL write failed; validator stops");
                    ctx.stop();
                }
            }
            Effect::Broadcast(msg) => {
                let body = wire::encode(&ValidatorOneWay::Consensus(msg));
                for peer in self.peers.clone() {
                    self.send(peer, body.clone());
                }
            }
            Effect::SendTo(peer, msg) => {
                self.send(peer, wire::encode(&ValidatorOneWay::Consensus(msg)));
            }
            Effect::ScheduleTimeout { timeout, at_ms } => {
                let delay = Duration::from_millis(at_ms.saturating_sub(now_ms()));
                ctx.run_later(delay, move |act, ctx| {
                    act.rounds.timeout_fired(&timeout, act.core.step());
                    act.core.handle_timeout(now_ms(), timeout);
                    act.drive(ctx);
                });
            }
            Effect::BuildValue {
                height,
                round,
                max_txs,
                max_bytes,
            } => {
                let tip = self.store.tip();
                let picked = candidates(&self.mempool, max_txs, max_bytes);
                let built = build_block(
                    ProposalSlot {
                        genesis: self.store.genesis(),
                        tip: &tip,
                        round,
                        proposer: self.me,
                        now_ms: now_ms(),
                    },
                    picked,
                    &self.store,
                );
                for (id, why) in built.refused {
                    self.mempool.remove(&id);
                    self.remember_refusal(id, why.to_string());
                }
                self.core
                    .handle_value_built(now_ms(), height, round, built.block);
            }
            Effect::ValidateValue {
                height,
                round,
                value,
            } => {
                // Transactions identical (signature included) to ones in our
                // mempool were verified at admission: don't verify them twice.
                let mempool = &self.mempool;
                let verified = |tx: &Transaction| {
                    mempool
                        .get(&tx.id())
                        .is_some_and(|m| m.signature() == tx.signature())
                };
                let valid = match self.store.check_proposal_with(&value, &verified) {
                    Ok(Ok(())) => true,
                    Ok(Err(e)) => {
                        warn!(chain = %self.chain_id, height, error = %e, "proposal refused");
                        false
                    }
                    Err(e) => {
                        warn!(chain = %self.chain_id, height, error = %ErrorChain(&e), "store error checking a proposal");
                        false
                    }
                };
                self.rounds.proposal_checked(height, round, valid);
                self.core
                    .handle_value_validity(now_ms(), height, value.id(), valid);
            }
            Effect::RequestBlock { peer, height } => {
                let transport = self.transport.clone();
                let actor = self.actor.clone();
                let body = wire::encode(&ValidatorRequest::FetchBlock { height });
                let fut = async move { transport.request(peer, &actor, body, FETCH_TIMEOUT).await };
                ctx.spawn(fut.into_actor(self).map(move |reply, act, ctx| {
                    let Ok(bytes) = reply else { return };
                    match wire::decode::<ValidatorResponse>(&bytes) {
                        Ok(ValidatorResponse::Block(Some(b))) => {
                            let b = *b;
                            act.core
                                .handle_block_fetched(now_ms(), b.block, b.certificate);
                            act.drive(ctx);
                        }
                        Ok(_) => {}
                        Err(_) => act.counters.malformed += 1,
                    }
                }));
            }
            Effect::Decide { value, certificate } => {
                let span = self
                    .rounds
                    .decided(&certificate, value.txs.len(), &self.core);
                let _entered = span.enter();
                self.commit(value, certificate, ctx);
            }
            Effect::Evidence(evidence) => {
                self.counters.evidence += 1;
                warn!(chain = %self.chain_id, ?evidence, "equivocation evidence");
            }
        }
    }

    fn commit(&mut self, block: Block, cert: CommitCertificate, ctx: &mut Context<Self>) {
        let height = block.header.height;
        // The body was checked when the proposal was validated (or the
        // certificate proves a quorum did); signatures are not re-verified,
        // neither the transactions' nor the certificate's (our core built
        // it from votes it verified, or verified a fetched one whole).
        match self.store.commit_decided(&block, &cert) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                // A quorum certified a block our rules refuse: a bug or a
                // Byzantine quorum. Stop rather than diverge.
                warn!(chain = %self.chain_id, height, error = %e, "certified block refused by the rules; validator stops");
                ctx.stop();
                return;
            }
            Err(e) => {
                warn!(chain = %self.chain_id, height, error = %ErrorChain(&e), "commit failed; validator stops");
                ctx.stop();
                return;
            }
        }
        self.counters.blocks_committed += 1;
        self.metrics.block_height(&self.chain_id, height);
        self.metrics
            .tx_committed(&self.chain_id, block.txs.len() as u64);
        if !self.traced.is_empty() {
            for tx in &block.txs {
                if let Some(cx) = self.traced.remove(&tx.id()) {
                    let span = crate::telemetry::continue_trace(
                        tracing::info_span!(
                            "validator.commit",
                            chain = self.chain_id.as_str(),
                            height,
                            round = block.header.round,
                            tx.id = %tx.id(),
                        ),
                        &cx,
                    );
                    drop(span);
                }
            }
        }
        self.mempool.remove_committed(&block.txs);
        if let Err(e) = self.wal.prune_below(height + 1) {
            warn!(chain = %self.chain_id, error = %ErrorChain(&e), "WAL prune failed");
        }
        debug!(chain = %self.chain_id, height, txs = block.txs.len(), "committed");
        if !self.followers.is_empty() {
            let body = wire::encode(&ValidatorOneWay::Committed(Box::new(CertifiedBlock {
                block,
                certificate: cert,
            })));
            for (f, actor) in self.followers.clone() {
                self.send_to(f, actor, body.clone());
            }
        }
        self.core.handle_txs_available(
            now_ms(),
            self.mempool.len() as u64,
            self.mempool.bytes() as u64,
        );
    }

    fn send(&self, peer: NodeId, body: Bytes) {
        self.send_to(peer, self.actor.clone(), body);
    }

    fn send_to(&self, peer: NodeId, actor: Arc<str>, body: Bytes) {
        let transport = self.transport.clone();
        actix::spawn(async move {
            if let Err(e) = transport.send(peer, &actor, body).await {
                debug!(peer = %peer.short(), error = %e, "send failed");
            }
        });
    }

    fn remember_refusal(&mut self, id: TxId, why: String) {
        if self.refused.len() >= REFUSED_MAX {
            if let Some(old) = self.refused_order.pop_front() {
                self.refused.remove(&old);
            }
        }
        if self.refused.insert(id, why).is_none() {
            self.refused_order.push_back(id);
        }
    }

    /// Admits a batch of transactions: size and signatures (batched), the
    /// author's committed nonce, then the mempool's bounds.
    fn admit(&mut self, txs: Vec<Transaction>) -> Vec<Result<(), Refusal>> {
        let policy = self.store.genesis().tx_policy();
        let mut out: Vec<Result<(), Refusal>> = vec![Ok(()); txs.len()];
        let batch_ok = verify_batch(&txs, &policy).is_ok();
        let other = |e: &dyn std::fmt::Display| Refusal::Other(e.to_string());
        for (i, tx) in txs.into_iter().enumerate() {
            let result = (|| {
                if !batch_ok {
                    tx.verify(&policy).map_err(|e| other(&e))?;
                }
                let last = self.store.last_nonce(tx.author()).map_err(|e| other(&e))?;
                if matches!(tx.record(), Record::Relayed { .. }) {
                    self.check_relayed(&tx)?;
                }
                self.mempool.insert(tx, last).map_err(|e| other(&e))
            })();
            match &result {
                Ok(()) => self.counters.tx_admitted += 1,
                Err(_) => self.counters.tx_refused += 1,
            }
            out[i] = result;
        }
        out
    }

    /// A relayed record is checked at admission with the chain's own rules
    /// against the committed state: its chain, its cross-chain proof against
    /// the consortium's validator set from the genesis (forged certificate,
    /// wrong Merkle path, altered record), and that the consortium
    /// transaction was not delivered before (replay). Refusing it here
    /// answers the submitter at once, instead of when a proposer drops it
    /// (only that proposer would know why). Block building checks it again:
    /// two deliveries of one record may both wait here until one commits.
    fn check_relayed(&self, tx: &Transaction) -> Result<(), Refusal> {
        let tip = self.store.tip();
        let ctx = RuleContext {
            genesis: self.store.genesis(),
            height: tip.height + 1,
        };
        let mut overlay = Overlay::new(&self.store);
        apply_tx(&mut overlay, &ctx, tx).map_err(|e| match e {
            RuleError::AlreadyDelivered { tx } => Refusal::AlreadyDelivered { source: tx },
            e => Refusal::Other(format!("relayed record refused: {e}")),
        })
    }

    fn tx_status(&self, id: &TxId) -> TxStatus {
        if self.mempool.contains(id) {
            return TxStatus::Pending;
        }
        if let Ok(Some(loc)) = self.store.tx_location(id) {
            return TxStatus::Committed {
                height: loc.height,
                index: loc.index,
            };
        }
        match self.refused.get(id) {
            Some(why) => TxStatus::Refused(why.clone()),
            None => TxStatus::Unknown,
        }
    }

    fn certified(&self, height: u64) -> Option<CertifiedBlock> {
        let block = self.store.block(height).ok()??;
        let certificate = self.store.certificate(height).ok()??;
        Some(CertifiedBlock { block, certificate })
    }

    fn remember_traced(&mut self, id: TxId, cx: federact_federation::trace::TraceContext) {
        // The order queue bounds both: ids of committed transactions leave
        // `traced` at commit but stay queued until they age out here.
        while self.traced_order.len() >= TRACED_MAX {
            if let Some(old) = self.traced_order.pop_front() {
                self.traced.remove(&old);
            }
        }
        if self.traced.insert(id, cx).is_none() {
            self.traced_order.push_back(id);
        }
    }

    /// `trace`: the submitter's context when it was tracing (then a
    /// `Submit` is handled in a `validator.submit` span, see the stream
    /// handler, and its admitted transactions' commits are traced too).
    fn handle_request(
        &mut self,
        from: NodeId,
        req: ValidatorRequest,
        trace: Option<&federact_federation::trace::TraceContext>,
        ctx: &mut Context<Self>,
    ) -> ValidatorResponse {
        match req {
            ValidatorRequest::Submit(txs) => {
                if txs.len() > SUBMIT_BATCH_MAX {
                    return ValidatorResponse::Submitted(vec![
                        Err(Refusal::Other(format!(
                            "batch of {} transactions exceeds {SUBMIT_BATCH_MAX}",
                            txs.len()
                        )));
                        txs.len()
                    ]);
                }
                let traced = trace.as_ref().map(|cx| {
                    (
                        (*cx).clone(),
                        txs.iter().map(Transaction::id).collect::<Vec<_>>(),
                    )
                });
                let results = self.admit(txs);
                for r in &results {
                    if r.is_err() {
                        self.metrics.tx_rejected(&self.chain_id, "admission");
                    }
                }
                if let Some((cx, ids)) = traced {
                    for (id, r) in ids.into_iter().zip(&results) {
                        if r.is_ok() {
                            self.remember_traced(id, cx.clone());
                        }
                    }
                }
                self.core.handle_txs_available(
                    now_ms(),
                    self.mempool.len() as u64,
                    self.mempool.bytes() as u64,
                );
                self.drive(ctx);
                ValidatorResponse::Submitted(results)
            }
            ValidatorRequest::FetchBlock { height } => {
                ValidatorResponse::Block(self.certified(height).map(Box::new))
            }
            ValidatorRequest::Follow { from_height, actor } => {
                let tip = self.store.tip().height;
                let fits =
                    self.followers.len() < FOLLOWERS_MAX || self.followers.contains_key(&from);
                if fits && !actor.is_empty() && actor.len() <= wire::ACTOR_NAME_MAX {
                    let actor: Arc<str> = actor.into();
                    self.followers.insert(from, actor.clone());
                    let end = tip.min(from_height.saturating_add(FOLLOW_BACKFILL_MAX));
                    for h in from_height.max(1)..=end {
                        if let Some(b) = self.certified(h) {
                            let body = wire::encode(&ValidatorOneWay::Committed(Box::new(b)));
                            self.send_to(from, actor.clone(), body);
                        }
                    }
                }
                ValidatorResponse::Following { tip }
            }
            ValidatorRequest::TxStatus { id } => ValidatorResponse::TxStatus(self.tx_status(&id)),
            ValidatorRequest::TxStatuses(ids) => ValidatorResponse::TxStatuses(
                ids.iter()
                    .take(wire::TX_STATUS_MAX)
                    .map(|id| self.tx_status(id))
                    .collect(),
            ),
            ValidatorRequest::Tip => ValidatorResponse::Tip(self.store.tip().height),
            ValidatorRequest::Query(q) => ValidatorResponse::Answer(self.answer(q)),
        }
    }

    /// Answers a ledger query from the store, with the proofs a client
    /// needs to check it.
    fn answer(&self, query: LedgerQuery) -> LedgerAnswer {
        let result = match query {
            LedgerQuery::Tip => Ok(LedgerAnswer::Block(
                self.certified(self.store.tip().height).map(Box::new),
            )),
            LedgerQuery::Block { height } => {
                Ok(LedgerAnswer::Block(self.certified(height).map(Box::new)))
            }
            LedgerQuery::Tx { id } => self
                .store
                .tx(&id)
                .map(|t| LedgerAnswer::Tx(t.map(|t| Box::new(t.proof)))),
            LedgerQuery::VmHistory { vm_id } => self
                .store
                .vm_history(&vm_id)
                .and_then(|entries| self.prove(entries)),
            LedgerQuery::Provenance { entity } => {
                if entity.len() > wire::ENTITY_BYTES_MAX {
                    return LedgerAnswer::Failed(format!(
                        "entity of {} bytes exceeds {}",
                        entity.len(),
                        wire::ENTITY_BYTES_MAX
                    ));
                }
                self.store
                    .provenance(&entity)
                    .and_then(|entries| self.prove(entries))
            }
        };
        result.unwrap_or_else(|e| {
            warn!(chain = %self.chain_id, error = %ErrorChain(&e), "store error answering a query");
            LedgerAnswer::Failed(format!("store error: {e}"))
        })
    }

    /// Inclusion proofs of indexed records (at most
    /// [`wire::ANSWER_RECORDS_MAX`]), reading each block once.
    fn prove(&self, entries: Vec<IndexedRecord>) -> Result<LedgerAnswer, LedgerError> {
        let truncated = entries.len() > wire::ANSWER_RECORDS_MAX;
        let mut by_height: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for e in entries.iter().take(wire::ANSWER_RECORDS_MAX) {
            by_height
                .entry(e.height)
                .or_default()
                .push(e.index as usize);
        }
        let mut proofs = Vec::new();
        for (height, indices) in by_height {
            let (Some(block), Some(cert)) =
                (self.store.block(height)?, self.store.certificate(height)?)
            else {
                continue;
            };
            proofs.extend(
                CrossChainProof::build_many(&block, &cert, &indices)
                    .into_iter()
                    .map(|(_, p)| p),
            );
        }
        Ok(LedgerAnswer::Records { proofs, truncated })
    }

    /// Counters so far.
    pub fn counters(&self) -> &ValidatorCounters {
        &self.counters
    }
}

impl Actor for ValidatorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
        if let Some(inbox) = self.inbox.take() {
            ctx.add_stream(crate::inbox_stream(inbox));
        }
        self.drive(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.rounds.stop();
        if let Err(e) = self.store.flush() {
            warn!(chain = %self.chain_id, error = %ErrorChain(&e), "flush on stop failed");
        }
        info!(chain = %self.chain_id, height = self.store.tip().height, "validator stopped");
    }
}

impl StreamHandler<Incoming> for ValidatorActor {
    fn handle(&mut self, item: Incoming, ctx: &mut Context<Self>) {
        match item {
            Incoming::OneWay { from, body, .. } => match wire::decode::<ValidatorOneWay>(&body) {
                Ok(ValidatorOneWay::Consensus(msg)) => {
                    self.core.handle_message(now_ms(), &from, msg);
                    self.drive(ctx);
                }
                Ok(ValidatorOneWay::Committed(_)) => {}
                Err(_) => self.counters.malformed += 1,
            },
            Incoming::Request {
                from,
                body,
                responder,
                trace,
                ..
            } => {
                let reply = match wire::decode::<ValidatorRequest>(&body) {
                    Ok(req) if !trace.is_empty() && matches!(req, ValidatorRequest::Submit(_)) => {
                        let txs = match &req {
                            ValidatorRequest::Submit(txs) => txs.len(),
                            _ => 0,
                        };
                        let span = crate::telemetry::continue_trace(
                            tracing::info_span!(
                                "validator.submit",
                                chain = self.chain_id.as_str(),
                                txs,
                                peer = %from.short(),
                            ),
                            &trace,
                        );
                        let _entered = span.enter();
                        // Commits of these transactions become children of
                        // this span.
                        let own = federact_federation::trace::TraceContext::of_span(&span);
                        let traced = (!own.is_empty()).then_some(&own);
                        wire::encode(&self.handle_request(from, req, traced, ctx))
                    }
                    Ok(req) => wire::encode(&self.handle_request(from, req, None, ctx)),
                    Err(e) => {
                        self.counters.malformed += 1;
                        let msg = format!("malformed request: {e}");
                        actix::spawn(async move {
                            let _ = responder.fail(&msg).await;
                        });
                        return;
                    }
                };
                actix::spawn(async move {
                    let _ = responder.respond(reply).await;
                });
            }
            Incoming::Transfer { receiver, .. } => receiver.reject(),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        // The transport closed our inbox: the node is shutting down.
        ctx.stop();
    }
}

/// Asks a validator actor for its counters (tests, status).
#[derive(Message)]
#[rtype(result = "(u64, ValidatorCounters)")]
pub struct Counters;

impl Handler<Counters> for ValidatorActor {
    type Result = MessageResult<Counters>;
    fn handle(&mut self, _: Counters, _: &mut Context<Self>) -> Self::Result {
        MessageResult((self.store.tip().height, self.counters.clone()))
    }
}

/// Makes the consensus message type nameable by users of this module.
pub type ChainMessage = Message<Block>;
