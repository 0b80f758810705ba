//! The gateway actor: its cloud's single entry point to the chains.
//!
//! It accepts signed transactions from the cloud's actors and tools, routes
//! each to the local chain or the consortium by its record
//! (`Record::route`), submits it to every validator of that chain (so
//! whichever proposes next has it, and one faulty validator cannot drop
//! it), follows the committed blocks of both chains — verifying each
//! certificate itself, trusting no validator — and answers waiting
//! submitters with a receipt carrying the inclusion proof. As relay it
//! delivers consortium records that concern its cloud to the local chain,
//! as `Relayed` transactions with a cross-chain proof the local validators
//! check ([`crate::relay`] decides which).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use federact_config::{Federation, NodeId, NodeKey};
use federact_federation::{Inbox, Incoming, Responder, Transport};
use federact_ledger::cert::ValidatorSet;
use federact_ledger::error::ErrorChain;
use federact_ledger::proof::CrossChainProof;
use federact_ledger::record::{Record, Route};
use federact_ledger::store::CursorStore;
use federact_ledger::tx::{Transaction, TxId};

use crate::clock::{now_micros, now_ms};
use crate::error::ActorError;
use crate::order::ArrivalOrder;
use crate::relay::RelayCore;
use crate::wire::{
    self, CertifiedBlock, GatewayRequest, GatewayResponse, LedgerQuery, Receipt, Refusal, TxStatus,
    ValidatorOneWay, ValidatorRequest, ValidatorResponse,
};

/// Ledger queries relayed at once, at most (each may hold a large answer).
const QUERIES_MAX: usize = 64;
/// Transactions waiting for their commit, at most.
const WAITING_MAX: usize = 200_000;
/// Most submitters waiting for one transaction (the same signed
/// transaction sent again by its author or relayed by others).
const WAITERS_PER_TX_MAX: usize = 64;
/// Out-of-order blocks buffered per chain, at most.
const AHEAD_MAX: usize = 1024;
/// Transactions per submit batch to validators.
const BATCH_MAX: usize = 1024;
/// Transactions queued for one validator, at most: beyond, the oldest
/// batches are not sent to it (a validator that stopped answering; the
/// others have them).
const LANE_QUEUE_TXS_MAX: usize = 65_536;
/// Transactions one submit request to a validator carries, at most (the
/// validator's own bound is 4096).
const REQUEST_TXS_MAX: usize = 4096;
/// How long a batch may wait for more transactions.
const BATCH_WINDOW: Duration = Duration::from_millis(1);
/// How long a submitted transaction may stay uncommitted before the
/// gateway asks the validators why (and again after as long, until it
/// commits or is refused).
const COMMIT_DEADLINE: Duration = Duration::from_secs(3);
/// Validator request timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often followed chains are checked for gaps and lost subscriptions.
const FOLLOW_CHECK: Duration = Duration::from_millis(500);
/// Blocks a validator pushes to a new follower by itself.
const FOLLOW_BACKFILL: u64 = 256;
/// Blocks fetched after a follow's backfill, when the chain is ahead of it.
const FOLLOW_FETCH: u64 = 64;
/// Blocks a gateway behind its chain fetches at once.
const CATCH_UP_WINDOW: u64 = 256;
/// The transport inbox capacity of a gateway.
pub const INBOX_CAPACITY: usize = 8192;
/// Relayed deliveries not yet committed on the local chain, at most: at
/// the bound the gateway stops processing consortium blocks (they wait in
/// order, then are fetched again) until deliveries settle. Nothing is
/// dropped: the persisted cursor only passes heights whose deliveries all
/// committed, so every record is still delivered exactly once.
const RELAY_PENDING_MAX: usize = 8192;
/// Traced transactions whose `gateway.submit` span stays open until their
/// commit, at most (beyond it, new ones are traced without waiting).
const TRACED_MAX: usize = 4096;

/// Who waits for a transaction.
enum Waiter {
    Remote(Responder),
    Local(oneshot::Sender<GatewayResponse>),
    /// One transaction of a [`GatewayRequest::SubmitMany`].
    Part(Rc<RefCell<Collector>>, usize),
}

/// Gathers the answers to the transactions of one `SubmitMany` request and
/// sends them together once each has its answer.
struct Collector {
    responder: Option<Responder>,
    answers: Vec<Option<Result<Receipt, String>>>,
    left: usize,
}

impl Collector {
    fn new(responder: Responder, n: usize) -> Rc<RefCell<Collector>> {
        Rc::new(RefCell::new(Collector {
            responder: Some(responder),
            answers: vec![None; n],
            left: n,
        }))
    }

    fn settle(&mut self, index: usize, answer: Result<Receipt, String>) {
        let Some(slot) = self.answers.get_mut(index) else {
            return;
        };
        if slot.is_some() {
            return;
        }
        *slot = Some(answer);
        self.left -= 1;
        if self.left > 0 {
            return;
        }
        let Some(r) = self.responder.take() else {
            return;
        };
        let all = std::mem::take(&mut self.answers)
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err("no answer".into())))
            .collect();
        let body = wire::encode(&GatewayResponse::Receipts(all));
        actix::spawn(async move {
            let _ = r.respond(body).await;
        });
    }
}

impl Waiter {
    fn answer(self, response: GatewayResponse) {
        match self {
            Waiter::Remote(r) => {
                let body = wire::encode(&response);
                actix::spawn(async move {
                    let _ = r.respond(body).await;
                });
            }
            Waiter::Local(tx) => {
                let _ = tx.send(response);
            }
            Waiter::Part(c, i) => {
                let answer = match response {
                    GatewayResponse::Receipt(r) => Ok(r),
                    GatewayResponse::Refused(why) => Err(why),
                    other => Err(format!("unexpected answer {other:?}")),
                };
                c.borrow_mut().settle(i, answer);
            }
        }
    }
}

/// A submit batch whose validator replies are still coming in.
struct SubmitBatch {
    chain_id: String,
    /// Its `Submit` request, encoded once for every validator, until every
    /// validator's lane sent it.
    body: bytes::Bytes,
    /// Its transactions, until every lane sent them (a lane that sends it
    /// with others encodes them together).
    txs: Vec<Transaction>,
    /// Lanes that have not sent it yet.
    unsent: usize,
    /// The `gateway.flush` span its requests run in.
    span: tracing::Span,
    ids: Vec<TxId>,
    /// `Some(waiter)` until a validator admits the transaction.
    waiters: Vec<Option<Option<Waiter>>>,
    /// The first refusal reason seen per transaction.
    reasons: Vec<Option<String>>,
    /// Per transaction: validators that refused it as a relayed record
    /// already delivered.
    delivered_votes: Vec<usize>,
    replies_left: usize,
    /// A validator was sent it and gave no answer (timed out after the
    /// request went out, connection lost, answer unreadable): it may hold
    /// the transactions nobody reported on, so their silence is not a
    /// refusal.
    maybe_admitted: bool,
}

/// Why a validator's lane has no admission results for a batch.
#[derive(Debug, Clone, Copy)]
enum NoResults {
    /// The batch never reached the validator (unreachable, refused
    /// stream, dropped from an overfull queue).
    NotSent,
    /// The batch was sent and no usable answer came back: the validator
    /// may have admitted any of its transactions.
    Unanswered,
}

/// One relayed delivery whose record has not committed on the local chain
/// yet. The chain delivers a consortium transaction at most once (keyed by
/// `source`), so the gateway may submit a delivery again, with a fresh nonce
/// and so a new transaction id, whenever the validators lost the previous
/// one; whichever commits first settles it.
struct Delivery {
    /// The consortium transaction delivered.
    source: TxId,
    /// Its cross-chain proof (to sign a new delivery with).
    proof: Box<CrossChainProof>,
    /// The relayed transaction last submitted for it.
    tx_id: TxId,
    /// When it was last submitted or asked about (ms).
    asked_ms: u64,
}

/// What a gateway learnt about one transaction from a status probe.
enum Probed {
    /// Some validator holds it pending, or fewer than f+1 report it
    /// committed (its block will come): wait.
    Wait,
    /// At least f+1 validators report it committed.
    Committed,
    /// A validator's rules refused it when a block was built.
    Refused(String),
    /// Every validator that answered has never seen it (or forgot it).
    Lost,
}

/// The submit batches on their way to one validator, in the order the
/// gateway flushed them. The validator must admit them in that order
/// (concurrent requests are concurrent QUIC streams, which may arrive in
/// any order, and a later nonce committing first makes an earlier one
/// stale; see [`crate::order`]), so one request is in flight per validator
/// and, like Nagle's algorithm, everything queued meanwhile leaves in the
/// next one (up to [`REQUEST_TXS_MAX`] transactions): under load, requests
/// grow instead of queueing, and the validator is never idle waiting for
/// the gateway. Sequence numbers that the validator would reorder by were
/// the alternative: several requests in flight, but a validator holding
/// requests (and timing out a lost one) per gateway, for no gain on the
/// validator's single thread, which admits one request at a time anyway.
#[derive(Default)]
struct Lane {
    in_flight: bool,
    queue: VecDeque<u64>,
    /// Transactions in `queue`.
    queued_txs: usize,
}

/// One chain the gateway follows.
struct Followed {
    /// Per validator (same index as `validators`).
    lanes: Vec<Lane>,
    chain_id: String,
    actor: Arc<str>,
    set: ValidatorSet,
    validators: Vec<NodeId>,
    /// Highest height verified and processed in order.
    height: u64,
    /// Verified blocks above `height + 1`, waiting for the gap to fill.
    ahead: BTreeMap<u64, CertifiedBlock>,
    /// Transactions to submit, with their waiters.
    outbox: Vec<(Transaction, Option<Waiter>)>,
    flush_scheduled: bool,
    last_progress_ms: u64,
    /// Rotates which validators are followed.
    follow_offset: usize,
    /// Highest tip a followed validator reported.
    known_tip: u64,
    /// When the last follow requests went out.
    last_follow_ms: u64,
    /// Validators that answered the last follow requests.
    follow_replies: usize,
    /// Rotates which validator answers queries first.
    query_offset: usize,
    /// Catch-up block fetches not answered yet.
    fetches_in_flight: usize,
    /// The highest height the last follow request brings by itself.
    follow_covers: u64,
}

/// What it takes to start a gateway.
pub struct GatewaySetup {
    /// This node's key (the author of relayed transactions).
    pub key: NodeKey,
    /// The federation.
    pub federation: Federation,
    /// This gateway's cloud.
    pub cloud: String,
    /// The node's transport.
    pub transport: Transport,
    /// Directory for the gateway's own state (relay cursor).
    pub dir: std::path::PathBuf,
}

/// Counters of a gateway.
#[derive(Debug, Clone, Default)]
pub struct GatewayCounters {
    /// Transactions accepted from submitters.
    pub submitted: u64,
    /// Transactions refused (routing, admission, rules).
    pub refused: u64,
    /// Blocks whose certificate did not verify.
    pub bad_blocks: u64,
    /// Consortium records delivered to the local chain.
    pub relayed: u64,
    /// Relayed deliveries settled: committed on the local chain, or refused
    /// by it as already delivered.
    pub relays_settled: u64,
    /// Times the gateway stopped processing consortium blocks because
    /// [`RELAY_PENDING_MAX`] relayed deliveries were pending.
    pub relay_paused: u64,
    /// Relayed deliveries submitted again because the local validators had
    /// lost them (restart, mempool drop) or refused them for a reason other
    /// than "already delivered".
    pub relays_resubmitted: u64,
    /// Messages that did not decode.
    pub malformed: u64,
    /// Submit requests to validators that failed (unreachable, timed out).
    pub submit_failures: u64,
    /// Submissions no validator admitted or refused while one that was
    /// sent them stayed silent: their submitters wait for the probe of
    /// overdue transactions instead of being told "refused".
    pub unanswered_held: u64,
    /// Submissions passed on before their author's earlier one arrived
    /// (it was lost on the way or came too late; see [`crate::order`]).
    pub unordered: u64,
}

/// The gateway actor.
pub struct GatewayActor {
    key: NodeKey,
    cloud: String,
    transport: Transport,
    local: Followed,
    consortium: Option<Followed>,
    /// Per waiting transaction: its chain, its submitters, when it was
    /// first submitted (commit latency) and when the validators were last
    /// asked about it (ms).
    waiting: HashMap<TxId, (String, Vec<Waiter>, u64, u64)>,
    /// Ledger queries relayed and not answered yet (at most [`QUERIES_MAX`]).
    queries_in_flight: usize,
    relay: Option<RelayCore>,
    cursor: CursorStore,
    /// Relayed consortium heights whose deliveries have not all committed
    /// (at most [`RELAY_PENDING_MAX`] deliveries, see `relay_full`).
    relay_pending: BTreeMap<u64, Vec<Delivery>>,
    /// Deliveries in `relay_pending`.
    relay_pending_count: usize,
    /// Consortium blocks wait because the relay is full.
    relay_paused: bool,
    batches: HashMap<u64, SubmitBatch>,
    next_batch: u64,
    nonce: u64,
    inbox: Option<Inbox>,
    counters: GatewayCounters,
    /// This cloud's servers by name (migration destinations, issue 8).
    servers: HashMap<String, NodeId>,
    /// Open `gateway.submit` spans of traced transactions (submitters that
    /// propagated a trace context), ended at commit or refusal, with the
    /// time they were opened.
    traced: HashMap<TxId, (tracing::Span, u64)>,
    metrics: crate::metrics::Metrics,
    /// Submissions waiting for their author's earlier ones.
    order: ArrivalOrder<Vec<(Transaction, Option<Waiter>)>>,
}

const RELAY_CURSOR: &str = "relay.consortium.delivered";
/// Transactions one status probe asks a validator about, at most.
const PROBE_MAX: usize = 1024;

impl GatewayActor {
    /// Builds the gateway and registers it on the transport.
    pub fn new(setup: GatewaySetup) -> Result<GatewayActor, ActorError> {
        let fed = &setup.federation;
        let follow = |spec: &federact_config::ChainSpec| Followed {
            chain_id: spec.id().to_string(),
            actor: wire::validator_actor(spec.id()).into(),
            set: ValidatorSet::from_spec(spec),
            validators: spec.validators().to_vec(),
            lanes: spec.validators().iter().map(|_| Lane::default()).collect(),
            height: 0,
            ahead: BTreeMap::new(),
            outbox: Vec::new(),
            flush_scheduled: false,
            last_progress_ms: 0,
            follow_offset: 0,
            known_tip: 0,
            last_follow_ms: 0,
            follow_replies: 0,
            query_offset: 0,
            fetches_in_flight: 0,
            follow_covers: 0,
        };
        let local_spec = fed
            .local_chain(&setup.cloud)
            .ok_or_else(|| ActorError::Config {
                detail: format!("cloud `{}` has no local chain", setup.cloud),
            })?;
        let local = follow(local_spec);
        let consortium = fed.consortium().map(follow);
        let cursor = CursorStore::open(&setup.dir.join("cursors"))?;
        let delivered = cursor.get(RELAY_CURSOR)?;
        let relay = consortium
            .as_ref()
            .map(|_| RelayCore::new(fed, &setup.cloud, 1));
        let inbox = setup
            .transport
            .register(wire::GATEWAY_ACTOR, INBOX_CAPACITY)?;
        info!(cloud = %setup.cloud, relay_delivered = delivered, "gateway starting");
        let servers = fed
            .nodes_with_role(&setup.cloud, federact_config::Role::Server)
            .map(|n| (n.name().to_string(), n.id()))
            .collect();
        Ok(GatewayActor {
            servers,
            key: setup.key,
            cloud: setup.cloud,
            transport: setup.transport,
            local,
            consortium,
            waiting: HashMap::new(),
            queries_in_flight: 0,
            relay,
            cursor,
            relay_pending: BTreeMap::new(),
            relay_pending_count: 0,
            relay_paused: false,
            batches: HashMap::new(),
            next_batch: 0,
            nonce: 0,
            inbox: Some(inbox),
            counters: GatewayCounters::default(),
            traced: HashMap::new(),
            metrics: crate::metrics::Metrics::global(),
            order: ArrivalOrder::default(),
        })
    }

    fn chain_mut(&mut self, chain_id: &str) -> Option<&mut Followed> {
        if self.local.chain_id == chain_id {
            Some(&mut self.local)
        } else {
            self.consortium.as_mut().filter(|c| c.chain_id == chain_id)
        }
    }

    /// A submission arrived: passes it on in its author's order (see
    /// [`crate::order`]), with the held ones it unblocked.
    fn arrive(
        &mut self,
        after: Option<u64>,
        group: Vec<(Transaction, Option<Waiter>)>,
        ctx: &mut Context<Self>,
    ) {
        let Some(author) = group.first().map(|(tx, _)| *tx.author()) else {
            return;
        };
        let last_nonce = group
            .iter()
            .filter(|(tx, _)| *tx.author() == author)
            .map(|(tx, _)| tx.nonce())
            .max()
            .unwrap_or(0);
        let ready = self
            .order
            .handle_arrival(author, after, last_nonce, group, now_ms());
        for group in ready {
            for (tx, waiter) in group {
                self.submit(tx, waiter, ctx);
            }
        }
    }

    /// Routes, queues for submission, and registers the waiter.
    fn submit(&mut self, tx: Transaction, waiter: Option<Waiter>, ctx: &mut Context<Self>) {
        let chain_id = match tx.record().route() {
            Route::Local => self.local.chain_id.clone(),
            Route::Consortium => match &self.consortium {
                Some(c) => c.chain_id.clone(),
                None => {
                    self.counters.refused += 1;
                    self.metrics.tx_rejected("consortium", "no_consortium");
                    self.end_traced(&tx.id(), Some("no consortium chain"), None);
                    if let Some(w) = waiter {
                        w.answer(GatewayResponse::Refused(
                            "the record belongs on the consortium chain, and this federation has none".into(),
                        ));
                    }
                    return;
                }
            },
        };
        self.counters.submitted += 1;
        self.metrics.tx_submitted(&chain_id, 1);
        if let Some((span, _)) = self.traced.get(&tx.id()) {
            span.record("chain", chain_id.as_str());
        }
        let Some(chain) = self.chain_mut(&chain_id) else {
            return;
        };
        chain.outbox.push((tx, waiter));
        if chain.outbox.len() >= BATCH_MAX {
            self.flush(&chain_id, ctx);
        } else if !chain.flush_scheduled {
            chain.flush_scheduled = true;
            let id = chain_id.clone();
            ctx.run_later(BATCH_WINDOW, move |act, ctx| act.flush(&id, ctx));
        }
    }

    /// Sends a chain's queued transactions to all its validators. Each
    /// transaction is settled by the first validator that admits it (a slow
    /// or dead validator delays nobody); it is refused only when every
    /// validator refused it or could not be reached.
    fn flush(&mut self, chain_id: &str, ctx: &mut Context<Self>) {
        let Some(chain) = self.chain_mut(chain_id) else {
            return;
        };
        chain.flush_scheduled = false;
        if chain.outbox.is_empty() {
            return;
        }
        let outbox = std::mem::take(&mut chain.outbox);
        let validators = chain.validators.clone();
        // A request carries one trace context, so every traced transaction
        // starts a batch of its own (the untraced ones after it ride along):
        // each trace then reaches the validators' `validator.submit` spans.
        let mut segments: Vec<Vec<(Transaction, Option<Waiter>)>> = Vec::new();
        for item in outbox {
            let traced = self.traced.contains_key(&item.0.id());
            match segments.last_mut() {
                Some(seg) if !traced => seg.push(item),
                _ => segments.push(vec![item]),
            }
        }
        for segment in segments {
            self.queue_batch(chain_id, &validators, segment, ctx);
        }
    }

    /// Makes one submit batch of `batch` and queues it on every validator's
    /// lane.
    fn queue_batch(
        &mut self,
        chain_id: &str,
        validators: &[NodeId],
        batch: Vec<(Transaction, Option<Waiter>)>,
        ctx: &mut Context<Self>,
    ) {
        let (txs, waiters): (Vec<Transaction>, Vec<Option<Waiter>>) = batch.into_iter().unzip();
        let ids: Vec<TxId> = txs.iter().map(Transaction::id).collect();
        let n = ids.len();
        // Its requests carry the context of its traced transaction, which
        // `flush` put first and alone (the others are untraced).
        let flush_span = match ids.first().and_then(|id| self.traced.get(id)) {
            Some((parent, _)) => tracing::info_span!(
                parent: parent,
                "gateway.flush",
                chain = chain_id,
                txs = ids.len(),
            ),
            None => tracing::Span::none(),
        };
        // Transactions share their parts (an `Arc`): cloning is cheap.
        let body = wire::encode(&ValidatorRequest::Submit(txs.clone()));
        self.next_batch += 1;
        let batch_id = self.next_batch;
        self.batches.insert(
            batch_id,
            SubmitBatch {
                chain_id: chain_id.to_string(),
                body,
                txs,
                unsent: validators.len(),
                span: flush_span,
                reasons: vec![None; ids.len()],
                delivered_votes: vec![0; ids.len()],
                waiters: waiters.into_iter().map(Some).collect(),
                ids,
                replies_left: validators.len(),
                maybe_admitted: false,
            },
        );
        for lane in 0..validators.len() {
            if let Some(l) = self.chain_mut(chain_id).and_then(|c| c.lanes.get_mut(lane)) {
                l.queue.push_back(batch_id);
                l.queued_txs += n;
            }
            // A validator that stopped answering does not hold the
            // gateway's memory: its oldest batches are not sent to it.
            while let Some(old) = self.lane_overflow(chain_id, lane) {
                self.lane_sent(old);
                self.on_submitted(old, Err(NoResults::NotSent));
            }
            self.pump(chain_id, lane, ctx);
        }
    }

    /// Takes the oldest batch off validator `lane`'s queue if the queue
    /// holds more than [`LANE_QUEUE_TXS_MAX`] transactions (and more than
    /// that one batch).
    fn lane_overflow(&mut self, chain_id: &str, lane: usize) -> Option<u64> {
        let l = self.chain_mut(chain_id)?.lanes.get_mut(lane)?;
        if l.queued_txs <= LANE_QUEUE_TXS_MAX || l.queue.len() <= 1 {
            return None;
        }
        let old = l.queue.pop_front()?;
        let k = self.batches.get(&old).map_or(0, |b| b.ids.len());
        if let Some(l) = self.chain_mut(chain_id).and_then(|c| c.lanes.get_mut(lane)) {
            l.queued_txs = l.queued_txs.saturating_sub(k);
        }
        Some(old)
    }

    /// Notes that one more lane is done with sending batch `batch_id` (its
    /// transactions are dropped once every lane is).
    fn lane_sent(&mut self, batch_id: u64) {
        if let Some(b) = self.batches.get_mut(&batch_id) {
            b.unsent = b.unsent.saturating_sub(1);
            if b.unsent == 0 {
                b.body = bytes::Bytes::new();
                b.txs = Vec::new();
            }
        }
    }

    /// Sends the batches queued for validator `lane` of a chain, as one
    /// request, if no request to it is in flight (see [`Lane`]).
    fn pump(&mut self, chain_id: &str, lane: usize, ctx: &mut Context<Self>) {
        let (peer, actor, queued) = {
            let Some(chain) = self.chain_mut(chain_id) else {
                return;
            };
            let Some(&peer) = chain.validators.get(lane) else {
                return;
            };
            let actor = chain.actor.clone();
            let Some(l) = chain.lanes.get_mut(lane) else {
                return;
            };
            if l.in_flight {
                return;
            }
            (peer, actor, std::mem::take(&mut l.queue))
        };
        // Take batches from the front while they fit one request (the
        // first always does: a batch is at most BATCH_MAX).
        let mut taken: Vec<(u64, usize)> = Vec::new();
        let mut total = 0usize;
        let mut rest = queued;
        while let Some(&b) = rest.front() {
            let (k, traced) = self
                .batches
                .get(&b)
                .map_or((0, false), |b| (b.ids.len(), !b.span.is_disabled()));
            // A request runs in its first batch's span: a traced batch
            // leads a request of its own, so its trace reaches the validator.
            if !taken.is_empty() && (total + k > REQUEST_TXS_MAX || traced) {
                break;
            }
            rest.pop_front();
            // A batch leaves `batches` only once every lane answered or
            // dropped it, and it leaves each lane's queue first; a missing
            // one is skipped all the same.
            if self.batches.contains_key(&b) {
                taken.push((b, k));
                total += k;
            }
        }
        if let Some(l) = self.chain_mut(chain_id).and_then(|c| c.lanes.get_mut(lane)) {
            l.queue = rest;
            l.queued_txs = l.queued_txs.saturating_sub(total);
            l.in_flight = !taken.is_empty();
        }
        let Some(&(first, _)) = taken.first() else {
            return;
        };
        let body = if taken.len() == 1 {
            self.batches.get(&first).map(|b| b.body.clone())
        } else {
            // Several batches in one request: their transactions encoded
            // together.
            let all: Vec<Transaction> = taken
                .iter()
                .filter_map(|(b, _)| self.batches.get(b))
                .flat_map(|b| b.txs.iter().cloned())
                .collect();
            Some(wire::encode(&ValidatorRequest::Submit(all)))
        };
        let body = body.unwrap_or_default();
        let span = self
            .batches
            .get(&first)
            .map(|b| b.span.clone())
            .unwrap_or_else(tracing::Span::none);
        for (b, _) in &taken {
            self.lane_sent(*b);
        }
        let t = self.transport.clone();
        let fut = async move { t.request(peer, &actor, body, REQUEST_TIMEOUT).await };
        let fut = tracing::Instrument::instrument(fut, span);
        let chain_id = chain_id.to_string();
        ctx.spawn(fut.into_actor(self).map(move |reply, act, ctx| {
            if let Some(l) = act.chain_mut(&chain_id).and_then(|c| c.lanes.get_mut(lane)) {
                l.in_flight = false;
            }
            let results = match reply.map(|b| wire::decode::<ValidatorResponse>(&b)) {
                Ok(Ok(ValidatorResponse::Submitted(r))) if r.len() == total => Ok(r),
                Ok(_) => {
                    act.counters.malformed += 1;
                    Err(NoResults::Unanswered)
                }
                // Whether the request may have reached the validator (it
                // then may hold the batches' transactions).
                Err(e) if e.may_have_reached() => {
                    act.counters.submit_failures += 1;
                    debug!(chain = %chain_id, error = %e, "submit to a validator unanswered");
                    Err(NoResults::Unanswered)
                }
                Err(e) => {
                    act.counters.submit_failures += 1;
                    debug!(chain = %chain_id, error = %e, "submit to a validator failed");
                    Err(NoResults::NotSent)
                }
            };
            match results {
                Ok(r) => {
                    let mut r = r.into_iter();
                    for (b, k) in taken {
                        act.on_submitted(b, Ok(r.by_ref().take(k).collect()));
                    }
                }
                Err(why) => {
                    for (b, _) in taken {
                        act.on_submitted(b, Err(why));
                    }
                }
            }
            // Refusals as already delivered may have settled deliveries.
            act.resume_relay(ctx);
            act.pump(&chain_id, lane, ctx);
        }));
    }

    /// One validator's answer to batch `batch_id`: its admission results,
    /// or why there are none.
    fn on_submitted(&mut self, batch_id: u64, answer: Result<Vec<Result<(), Refusal>>, NoResults>) {
        let Some(batch) = self.batches.get_mut(&batch_id) else {
            return;
        };
        batch.replies_left = batch.replies_left.saturating_sub(1);
        let results = match answer {
            Ok(r) if r.len() == batch.ids.len() => r,
            Ok(_) | Err(NoResults::Unanswered) => {
                batch.maybe_admitted = true;
                Vec::new()
            }
            Err(NoResults::NotSent) => Vec::new(),
        };
        let now = now_ms();
        let mut admitted = Vec::new();
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(()) => {
                    if let Some(w) = batch.waiters.get_mut(i).and_then(Option::take) {
                        admitted.push((batch.ids[i], w));
                    } else if let Some(slot) = batch.reasons.get_mut(i) {
                        // Admitted without a waiter: nothing to refuse later.
                        *slot = Some(String::new());
                    }
                }
                Err(e) => {
                    if matches!(e, Refusal::AlreadyDelivered { .. }) {
                        if let Some(v) = batch.delivered_votes.get_mut(i) {
                            *v += 1;
                        }
                    }
                    if let Some(slot) = batch.reasons.get_mut(i) {
                        slot.get_or_insert_with(|| e.to_string());
                    }
                }
            }
        }
        let chain_id = batch.chain_id.clone();
        let done = batch.replies_left == 0;
        for (id, w) in admitted {
            if let Some(w) = w {
                self.wait_for_commit(id, &chain_id, w, now);
            }
        }
        if done {
            let Some(batch) = self.batches.remove(&batch_id) else {
                return;
            };
            let mut settled = Vec::new();
            let one_honest = self.local.set.one_honest();
            for (((w, reason), id), votes) in batch
                .waiters
                .into_iter()
                .zip(batch.reasons)
                .zip(batch.ids)
                .zip(batch.delivered_votes)
            {
                // No validator admitted or refused it, and one that was
                // sent it stayed silent: it may hold it, so the submitter
                // waits like one whose transaction was admitted, and the
                // probe of overdue transactions answers it (pending,
                // committed, refused or lost). Answering "refused" here
                // could make a submitter give up on a transaction that
                // commits (a migration's indication: the instance would
                // then run at both ends).
                let w = match w {
                    Some(Some(waiter)) if reason.is_none() && batch.maybe_admitted => {
                        self.counters.unanswered_held += 1;
                        self.wait_for_commit(id, &batch.chain_id, waiter, now);
                        continue;
                    }
                    other => other,
                };
                // Still holding its waiter: no validator admitted it.
                if let Some(w) = w {
                    self.counters.refused += 1;
                    let reason = reason.filter(|r| !r.is_empty());
                    self.metrics.tx_rejected(
                        &batch.chain_id,
                        if reason.is_some() {
                            "refused_by_validators"
                        } else {
                            "no_validator_reachable"
                        },
                    );
                    self.end_traced(
                        &id,
                        Some(reason.as_deref().unwrap_or("no validator reachable")),
                        None,
                    );
                    match w {
                        Some(w) => w.answer(GatewayResponse::Refused(
                            reason.unwrap_or_else(|| "no validator reachable".into()),
                        )),
                        // A relayed delivery that f+1 validators (one honest)
                        // refused as delivered before (e.g. across a gateway
                        // restart) is settled; any other stays pending, so
                        // the cursor does not pass it, and the next probe
                        // submits it again.
                        None if votes >= one_honest => settled.push(id),
                        None => {}
                    }
                }
            }
            if !settled.is_empty() {
                self.settle_deliveries(|d| settled.contains(&d.tx_id));
            }
        }
    }

    /// Keeps `w` waiting for transaction `id` to commit on `chain_id`: the
    /// block that commits it answers, or the probe of overdue transactions
    /// does. At most [`WAITING_MAX`] transactions wait, each for at most
    /// [`WAITERS_PER_TX_MAX`] submitters; past that the submitter is told
    /// the gateway is full.
    fn wait_for_commit(&mut self, id: TxId, chain_id: &str, w: Waiter, now: u64) {
        let full = match self.waiting.get(&id) {
            // The same signed transaction submitted again and again.
            Some((_, waiters, _, _)) => waiters.len() >= WAITERS_PER_TX_MAX,
            None => self.waiting.len() >= WAITING_MAX,
        };
        if full {
            self.metrics.tx_rejected(chain_id, "gateway_full");
            self.end_traced(&id, Some("gateway has too many waiting submitters"), None);
            w.answer(GatewayResponse::Refused(
                "gateway has too many waiting submitters".into(),
            ));
            return;
        }
        self.waiting
            .entry(id)
            .or_insert_with(|| (chain_id.to_string(), Vec::new(), now, now))
            .1
            .push(w);
    }

    /// Verifies and processes a block pushed or fetched from a validator.
    fn handle_block(&mut self, b: CertifiedBlock, ctx: &mut Context<Self>) {
        let chain_id = b.block.header.chain_id.clone();
        let Some(chain) = self.chain_mut(&chain_id) else {
            return;
        };
        let h = b.block.header.height;
        if h <= chain.height || chain.ahead.contains_key(&h) {
            return;
        }
        // `ahead` is bounded; when full, the lowest heights stay (the next
        // one to process is among them), higher ones are fetched again.
        if chain.ahead.len() >= AHEAD_MAX
            && chain.ahead.last_key_value().is_none_or(|(&top, _)| top < h)
        {
            return;
        }
        let header_ok = b.block.header.tx_root == federact_ledger::merkle::root(&b.block.tx_ids());
        if !header_ok
            || b.certificate
                .verify(&chain.set, &chain.chain_id, h, &b.block.id())
                .is_err()
        {
            self.counters.bad_blocks += 1;
            warn!(chain = %chain_id, height = h, "block with an invalid certificate or body ignored");
            return;
        }
        if chain.ahead.len() >= AHEAD_MAX {
            chain.ahead.pop_last();
        }
        chain.ahead.insert(h, b);
        self.process_in_order(&chain_id, ctx);
    }

    /// Processes a chain's buffered blocks in height order, while the next
    /// one is there (the consortium's only while the relay has room, see
    /// [`RELAY_PENDING_MAX`]); then fetches what the chain is behind.
    fn process_in_order(&mut self, chain_id: &str, ctx: &mut Context<Self>) {
        let chain_id = chain_id.to_string();
        let is_consortium = chain_id != self.local.chain_id;
        loop {
            if is_consortium && self.relay_full() {
                if !self.relay_paused {
                    self.relay_paused = true;
                    self.counters.relay_paused += 1;
                    info!(
                        pending = self.relay_pending_count,
                        "relay at its bound of pending deliveries: consortium blocks wait"
                    );
                }
                return;
            }
            let Some(chain) = self.chain_mut(&chain_id) else {
                return;
            };
            let next = chain.height + 1;
            let Some(b) = chain.ahead.remove(&next) else {
                break;
            };
            chain.height = next;
            chain.last_progress_ms = now_ms();
            self.apply_block(&chain_id, b, ctx);
        }
        self.catch_up(&chain_id, ctx);
        if !is_consortium {
            self.resume_relay(ctx);
        }
    }

    /// Whether [`RELAY_PENDING_MAX`] relayed deliveries are pending.
    fn relay_full(&self) -> bool {
        self.relay_pending_count >= RELAY_PENDING_MAX
    }

    /// Processes the consortium blocks that waited for the relay, once its
    /// deliveries settled below the bound.
    fn resume_relay(&mut self, ctx: &mut Context<Self>) {
        if !self.relay_paused || self.relay_full() {
            return;
        }
        self.relay_paused = false;
        if let Some(id) = self.consortium.as_ref().map(|c| c.chain_id.clone()) {
            info!(
                pending = self.relay_pending_count,
                "relay below its bound: consortium blocks resume"
            );
            self.process_in_order(&id, ctx);
        }
    }

    /// A gateway far behind its chain (restarted: it replays both chains
    /// from height 1, the relay needs the consortium's history) fetches the
    /// next [`CATCH_UP_WINDOW`] blocks as soon as it processed the previous
    /// ones. It used to wait for the periodic check to find the chain quiet
    /// (a second per follow backfill of 256 blocks: seconds for a long
    /// chain before a restarted gateway saw new commits).
    fn catch_up(&mut self, chain_id: &str, ctx: &mut Context<Self>) {
        let Some(chain) = self.chain_mut(chain_id) else {
            return;
        };
        // The blocks the last follow covers (its backfill and the fetches
        // after it) come by themselves.
        if chain.fetches_in_flight > 0
            || !chain.ahead.is_empty()
            || chain.known_tip <= chain.height
            || chain.height < chain.follow_covers
        {
            return;
        }
        let n = chain.validators.len();
        let k = chain.set.one_honest().min(n).max(1);
        let start = chain.height + 1;
        let end = chain.known_tip.min(chain.height + CATCH_UP_WINDOW);
        let offset = chain.follow_offset;
        let peers: Vec<NodeId> = (0..k)
            .filter_map(|i| chain.validators.get((offset + i) % n.max(1)).copied())
            .collect();
        chain.fetches_in_flight = (end + 1 - start) as usize;
        for (i, h) in (start..=end).enumerate() {
            // Spread over the followed validators (one of them is honest;
            // a block one withholds is fetched again after the check).
            let Some(&peer) = peers.get(i % peers.len().max(1)) else {
                continue;
            };
            self.fetch(chain_id, peer, h, true, ctx);
        }
    }

    fn apply_block(&mut self, chain_id: &str, b: CertifiedBlock, ctx: &mut Context<Self>) {
        let is_consortium = self
            .consortium
            .as_ref()
            .is_some_and(|c| c.chain_id == chain_id);
        self.notify_indications(&b);
        let ids = b.block.tx_ids();
        let answered: Vec<usize> = (0..ids.len())
            .filter(|i| self.waiting.contains_key(&ids[*i]))
            .collect();
        let height = b.block.header.height;
        self.metrics.block_height(chain_id, height);
        if !self.traced.is_empty() {
            for id in &ids {
                self.end_traced(id, None, Some(height));
            }
        }
        let now = now_ms();
        for (i, proof) in CrossChainProof::build_many(&b.block, &b.certificate, &answered) {
            if let Some((_, waiters, since, _)) = self.waiting.remove(&ids[i]) {
                self.metrics
                    .commit_latency(chain_id, now.saturating_sub(since) as f64);
                let receipt = Receipt {
                    chain_id: chain_id.to_string(),
                    tx_id: ids[i],
                    height: b.block.header.height,
                    proof: Some(Box::new(proof)),
                };
                for w in waiters {
                    w.answer(GatewayResponse::Receipt(receipt.clone()));
                }
            }
        }
        if !is_consortium {
            // Relayed records committing on the local chain (whichever
            // submission of a delivery it was) advance the cursor.
            if !self.relay_pending.is_empty() {
                let sources: std::collections::HashSet<TxId> = b
                    .block
                    .txs
                    .iter()
                    .filter_map(|tx| match tx.record() {
                        Record::Relayed { proof } => Some(proof.tx_id),
                        _ => None,
                    })
                    .collect();
                if !sources.is_empty() {
                    self.settle_deliveries(|d| sources.contains(&d.source));
                }
            }
            return;
        }
        let Some(relay) = self.relay.as_mut() else {
            return;
        };
        let Some(indices) = relay.handle_block(&b.block) else {
            return;
        };
        let delivered = self.cursor.get(RELAY_CURSOR).unwrap_or(0);
        if height <= delivered {
            return; // delivered before a restart
        }
        self.metrics.relay_lag(
            chain_id,
            &self.local.chain_id,
            height.saturating_sub(delivered),
        );
        // The deliveries of one consortium block: a root span per block (the
        // relayed records' own traces are named by their `trace_id`).
        let span = crate::telemetry::sampled_root(|| {
            tracing::info_span!(
                "relay.deliver",
                federact.root = true,
                source.chain = chain_id,
                source.height = height,
                destination.chain = self.local.chain_id.as_str(),
                records = indices.len(),
            )
        });
        let _entered = span.enter();
        let mut pending = Vec::new();
        for (_, proof) in CrossChainProof::build_many(&b.block, &b.certificate, &indices) {
            let proof = Box::new(proof);
            let tx = self.sign_delivery(proof.clone());
            pending.push(Delivery {
                source: proof.tx_id,
                proof,
                tx_id: tx.id(),
                asked_ms: now_ms(),
            });
            self.counters.relayed += 1;
            self.submit(tx, None, ctx);
        }
        self.relay_pending_count += pending.len();
        self.relay_pending.insert(height, pending);
        self.settle_deliveries(|_| false);
    }

    /// A relayed transaction delivering `proof`'s record, with the next
    /// nonce.
    fn sign_delivery(&mut self, proof: Box<CrossChainProof>) -> Transaction {
        let nonce = self.next_nonce();
        delivery_tx(&self.key, proof, nonce)
    }

    /// The next nonce of the gateway's own transactions (microseconds, so
    /// a restarted gateway never reuses one).
    fn next_nonce(&mut self) -> u64 {
        self.nonce = self.nonce.max(now_micros()).saturating_add(1);
        self.nonce
    }

    /// Submits a delivery again with a fresh nonce: the validators lost the
    /// previous submission or refused it for a reason other than "already
    /// delivered" (an out-of-order nonce, a full mempool). Delivered once
    /// all the same: the chain refuses a second delivery of one record.
    fn resubmit_delivery(&mut self, tx_id: &TxId, ctx: &mut Context<Self>) {
        let nonce = self.next_nonce();
        let Some(d) = self
            .relay_pending
            .values_mut()
            .flatten()
            .find(|d| d.tx_id == *tx_id)
        else {
            return;
        };
        let tx = delivery_tx(&self.key, d.proof.clone(), nonce);
        d.tx_id = tx.id();
        d.asked_ms = now_ms();
        info!(source = %d.source.short(), tx = %d.tx_id.short(), "relayed delivery lost by the local validators; submitted again");
        self.counters.relays_resubmitted += 1;
        self.submit(tx, None, ctx);
    }

    /// BASICS step 4: a committed `Indication` whose destination is a
    /// server of this cloud is pushed (retried while the server is
    /// unreachable, see [`send_notice_retrying`]) to that server's migration actor with
    /// its inclusion proof, so the destination learns of it even if the
    /// source never tells it (the server verifies the proof; the gateway is
    /// not trusted).
    fn notify_indications(&self, b: &CertifiedBlock) {
        let targets: Vec<(usize, NodeId)> = b
            .block
            .txs
            .iter()
            .enumerate()
            .filter_map(|(i, tx)| match tx.record() {
                Record::Indication { destination, .. } if destination.cloud == self.cloud => {
                    self.servers.get(&destination.server).map(|s| (i, *s))
                }
                _ => None,
            })
            .collect();
        if targets.is_empty() {
            return;
        }
        let indices: Vec<usize> = targets.iter().map(|(i, _)| *i).collect();
        for (i, proof) in CrossChainProof::build_many(&b.block, &b.certificate, &indices) {
            let Some(&(_, server)) = targets.iter().find(|(j, _)| *j == i) else {
                continue;
            };
            let Some(Record::Indication {
                migration_id,
                vm_id,
                ..
            }) = b.block.txs.get(i).map(|tx| tx.record())
            else {
                continue;
            };
            let body = wire::encode(&wire::MigrationOneWay::Notice {
                migration_id: *migration_id,
                notice: federact_ledger::migration::Notice::IndicationCommitted {
                    height: b.block.header.height,
                    vm_id: *vm_id,
                    proof: Box::new(proof),
                },
            });
            let t = self.transport.clone();
            actix::spawn(send_notice_retrying(t, server, *migration_id, body));
        }
    }

    /// Settles the pending deliveries `settled` picks, and advances the
    /// persisted relay cursor over consortium heights whose deliveries have
    /// all settled.
    fn settle_deliveries(&mut self, settled: impl Fn(&Delivery) -> bool) {
        if self.relay_pending.is_empty() {
            return;
        }
        let mut n = 0usize;
        for ds in self.relay_pending.values_mut() {
            let before = ds.len();
            ds.retain(|d| !settled(d));
            n += before - ds.len();
        }
        self.counters.relays_settled += n as u64;
        self.relay_pending_count = self.relay_pending_count.saturating_sub(n);
        let mut advanced = None;
        while let Some((&h, ds)) = self.relay_pending.iter().next() {
            if !ds.is_empty() {
                break;
            }
            self.relay_pending.remove(&h);
            advanced = Some(h);
        }
        if let Some(h) = advanced {
            if let Err(e) = self.cursor.set(RELAY_CURSOR, h) {
                warn!(error = %ErrorChain(&e), "relay cursor write failed");
            }
        }
    }

    /// Subscribes to the validators of a chain from the next height, and
    /// fetches any gap the validator's backfill does not cover. Each
    /// validator's answer is handled on its own (a dead one delays nothing).
    fn follow(&mut self, chain_id: &str, rotate: bool, ctx: &mut Context<Self>) {
        let Some(chain) = self.chain_mut(chain_id) else {
            return;
        };
        let from_height = chain.height + 1;
        // f+1 followed validators include an honest one; following all n
        // would decode every block n times. A stalled chain rotates the
        // choice (see `check`).
        let n = chain.validators.len();
        let k = chain.set.one_honest().min(n);
        if rotate {
            chain.follow_offset = (chain.follow_offset + k) % n.max(1);
        }
        chain.last_follow_ms = now_ms();
        chain.follow_replies = 0;
        chain.follow_covers = from_height + FOLLOW_BACKFILL + FOLLOW_FETCH;
        let start = chain.follow_offset;
        let validators: Vec<NodeId> = (0..k).map(|i| chain.validators[(start + i) % n]).collect();
        let actor = chain.actor.clone();
        let body = wire::encode(&ValidatorRequest::Follow {
            from_height,
            actor: wire::GATEWAY_ACTOR.to_string(),
        });
        for v in validators {
            let (t, a, b) = (self.transport.clone(), actor.clone(), body.clone());
            let fut = async move { t.request(v, &a, b, REQUEST_TIMEOUT).await };
            let chain_id = chain_id.to_string();
            ctx.spawn(fut.into_actor(self).map(move |r, act, ctx| {
                let Ok(Ok(ValidatorResponse::Following { tip })) =
                    r.map(|b| wire::decode::<ValidatorResponse>(&b))
                else {
                    return;
                };
                let Some(chain) = act.chain_mut(&chain_id) else {
                    return;
                };
                chain.known_tip = chain.known_tip.max(tip);
                chain.follow_replies += 1;
                let start = chain.height + 1 + FOLLOW_BACKFILL;
                let end = tip.min(start + FOLLOW_FETCH);
                if start > end {
                    return;
                }
                let missing: Vec<u64> = (start..=end)
                    .filter(|h| !chain.ahead.contains_key(h))
                    .collect();
                for h in missing {
                    act.fetch(&chain_id, v, h, false, ctx);
                }
            }));
        }
    }

    /// Fetches one block; `catching_up` when [`GatewayActor::catch_up`]
    /// counts it.
    fn fetch(
        &mut self,
        chain_id: &str,
        peer: NodeId,
        height: u64,
        catching_up: bool,
        ctx: &mut Context<Self>,
    ) {
        let Some(chain) = self.chain_mut(chain_id) else {
            return;
        };
        let actor = chain.actor.clone();
        let transport = self.transport.clone();
        let body = wire::encode(&ValidatorRequest::FetchBlock { height });
        let fut = async move { transport.request(peer, &actor, body, REQUEST_TIMEOUT).await };
        let id = chain_id.to_string();
        ctx.spawn(fut.into_actor(self).map(move |r, act, ctx| {
            if catching_up {
                if let Some(c) = act.chain_mut(&id) {
                    c.fetches_in_flight = c.fetches_in_flight.saturating_sub(1);
                }
            }
            if let Ok(Ok(ValidatorResponse::Block(Some(b)))) =
                r.map(|b| wire::decode::<ValidatorResponse>(&b))
            {
                act.handle_block(*b, ctx);
            }
        }));
    }

    /// Periodic: re-follow chains that made no progress (validators
    /// restarted and forgot us), and ask about submitters waiting too long.
    fn check(&mut self, ctx: &mut Context<Self>) {
        let now = now_ms();
        let mut chains = vec![self.local.chain_id.clone()];
        if let Some(c) = &self.consortium {
            chains.push(c.chain_id.clone());
        }
        self.resume_relay(ctx);
        for id in chains {
            // Consortium blocks wait for the relay on purpose: no stall.
            if self.relay_paused && id != self.local.chain_id {
                continue;
            }
            let Some(c) = self.chain_mut(&id) else {
                continue;
            };
            let quiet =
                now.saturating_sub(c.last_progress_ms) > 2 * FOLLOW_CHECK.as_millis() as u64;
            let behind = c.known_tip > c.height;
            let poll_due =
                now.saturating_sub(c.last_follow_ms) > 4 * FOLLOW_CHECK.as_millis() as u64;
            if quiet && behind {
                // Blocks exist that our followed validators do not push:
                // follow others (one of f+1 is honest).
                self.follow(&id, true, ctx);
            } else if quiet && poll_due {
                // Idle chain: refresh the subscription (validators that
                // restarted forgot it) and learn the tips; if none of the
                // followed validators answered last time, try others.
                let rotate = c.follow_replies == 0;
                self.follow(&id, rotate, ctx);
            }
        }
        for group in self.order.poll_expired(now) {
            for (tx, waiter) in group {
                self.submit(tx, waiter, ctx);
            }
        }
        self.counters.unordered = self.order.released_unordered();
        let deadline = COMMIT_DEADLINE.as_millis() as u64;
        // Transactions overdue for their commit, per chain: submitters'
        // and the relay's own deliveries (which nobody else waits for: a
        // delivery the validators lost would otherwise never commit).
        let mut overdue: BTreeMap<String, Vec<TxId>> = BTreeMap::new();
        for (id, (chain, _, _, asked)) in self.waiting.iter_mut() {
            if now.saturating_sub(*asked) > deadline {
                let ids = overdue.entry(chain.clone()).or_default();
                if ids.len() < PROBE_MAX {
                    *asked = now;
                    ids.push(*id);
                }
            }
        }
        let local = self.local.chain_id.clone();
        for d in self.relay_pending.values_mut().flatten() {
            if now.saturating_sub(d.asked_ms) > deadline {
                let ids = overdue.entry(local.clone()).or_default();
                if ids.len() < PROBE_MAX {
                    d.asked_ms = now;
                    ids.push(d.tx_id);
                }
            }
        }
        for (chain_id, ids) in overdue {
            self.probe(chain_id, ids, ctx);
        }
        // Traced transactions nobody waited for (or whose answer was lost)
        // end their span after twice the commit deadline.
        let stale: Vec<TxId> = self
            .traced
            .iter()
            .filter(|(_, (_, since))| now.saturating_sub(*since) > 2 * deadline)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.end_traced(&id, Some("no commit seen before the deadline"), None);
        }
    }

    /// Opens the `gateway.submit` span of a transaction whose submitter
    /// propagated a trace context; it stays open until the commit.
    fn trace_submit(&mut self, tx: &Transaction, cx: &federact_federation::trace::TraceContext) {
        if cx.is_empty() || self.traced.len() >= TRACED_MAX {
            return;
        }
        let span = crate::telemetry::continue_trace(
            tracing::info_span!(
                "gateway.submit",
                cloud = self.cloud.as_str(),
                record = tx.record().kind(),
                tx.id = %tx.id(),
                chain = tracing::field::Empty,
                height = tracing::field::Empty,
            ),
            cx,
        );
        if !span.is_disabled() {
            self.traced.insert(tx.id(), (span, now_ms()));
        }
    }

    /// Ends a traced transaction's span: committed at `height`, or failed
    /// with `failure`.
    fn end_traced(&mut self, id: &TxId, failure: Option<&str>, height: Option<u64>) {
        if let Some((span, _)) = self.traced.remove(id) {
            if let Some(h) = height {
                span.record("height", h);
            }
            if let Some(why) = failure {
                crate::telemetry::record_failure(&span, why);
            }
        }
    }

    /// Asks every validator of the chain, in one request each, about
    /// overdue transactions. A transaction the rules refuse is dropped by
    /// the proposer that tried to include it (only it knows why), so one
    /// refusal settles a submitter's; a transaction is lost only if every
    /// validator that answers has never seen it.
    fn probe(&mut self, chain_id: String, ids: Vec<TxId>, ctx: &mut Context<Self>) {
        let Some(chain) = self.chain_mut(&chain_id) else {
            return;
        };
        let peers = chain.validators.clone();
        let actor = chain.actor.clone();
        let one_honest = chain.set.one_honest();
        let transport = self.transport.clone();
        let n = ids.len();
        let body = wire::encode(&ValidatorRequest::TxStatuses(ids.clone()));
        let fut = async move {
            futures::future::join_all(peers.into_iter().map(|peer| {
                let (transport, actor, body) = (transport.clone(), actor.clone(), body.clone());
                async move {
                    let reply = transport.request(peer, &actor, body, REQUEST_TIMEOUT).await;
                    match reply.map(|b| wire::decode::<ValidatorResponse>(&b)) {
                        Ok(Ok(ValidatorResponse::TxStatuses(s))) if s.len() == n => Some(s),
                        _ => None,
                    }
                }
            }))
            .await
        };
        ctx.spawn(fut.into_actor(self).map(move |answers, act, ctx| {
            let answers: Vec<Vec<TxStatus>> = answers.into_iter().flatten().collect();
            for (i, id) in ids.iter().enumerate() {
                let statuses: Vec<&TxStatus> = answers.iter().filter_map(|a| a.get(i)).collect();
                let verdict = probed(&statuses, one_honest);
                act.on_probed(&chain_id, id, verdict, ctx);
            }
        }));
    }

    /// Acts on what a probe learnt about transaction `id` of `chain_id`.
    fn on_probed(&mut self, chain_id: &str, id: &TxId, verdict: Probed, ctx: &mut Context<Self>) {
        let is_delivery = chain_id == self.local.chain_id
            && self
                .relay_pending
                .values()
                .flatten()
                .any(|d| d.tx_id == *id);
        if is_delivery {
            match verdict {
                Probed::Wait => {}
                // Committed in a block this gateway processed before it
                // knew the delivery (its local chain ran ahead of the
                // consortium after a restart).
                Probed::Committed => self.settle_deliveries(|d| d.tx_id == *id),
                Probed::Refused(_) | Probed::Lost => self.resubmit_delivery(id, ctx),
            }
            self.resume_relay(ctx);
            return;
        }
        let why = match verdict {
            Probed::Wait => return,
            // Committed, and still waited for: the block may have been
            // applied before the validators' admission reply registered
            // the submitter (a fast chain under load), so no block will
            // answer; answer from the chain.
            Probed::Committed => return self.answer_from_chain(chain_id, *id, ctx),
            Probed::Refused(why) => why,
            Probed::Lost => "the transaction was lost by the validators (not pending, not committed); submit it again".into(),
        };
        if let Some((_, waiters, _, _)) = self.waiting.remove(id) {
            self.counters.refused += 1;
            self.metrics.tx_rejected(chain_id, "lost_or_refused");
            self.end_traced(id, Some(why.as_str()), None);
            for w in waiters {
                w.answer(GatewayResponse::Refused(why.clone()));
            }
        }
    }

    /// Answers the submitters of `id`, committed on `chain_id`, with a
    /// receipt whose proof a validator gives and this gateway checks
    /// against the chain's validator set (regression: a submitter
    /// registered after its block was applied waited for its timeout —
    /// e.g. an orchestrator's join "timed out after 30 s" although it had
    /// committed at once). If no validator gives a valid proof, the next
    /// probe asks again.
    fn answer_from_chain(&mut self, chain_id: &str, id: TxId, ctx: &mut Context<Self>) {
        let Some(chain) = self.chain_mut(chain_id) else {
            return;
        };
        let (peers, actor, set) = (
            chain.validators.clone(),
            chain.actor.clone(),
            chain.set.clone(),
        );
        let transport = self.transport.clone();
        let body = wire::encode(&ValidatorRequest::Query(LedgerQuery::Tx { id }));
        let chain_id = chain_id.to_string();
        let verify_on = chain_id.clone();
        let fut = async move {
            for peer in peers {
                let Ok(reply) = transport
                    .request(peer, &actor, body.clone(), REQUEST_TIMEOUT)
                    .await
                else {
                    continue;
                };
                if let Ok(ValidatorResponse::Answer(crate::wire::LedgerAnswer::Tx(Some(proof)))) =
                    wire::decode::<ValidatorResponse>(&reply)
                {
                    if proof.tx_id == id && proof.verify(&set, &verify_on).is_ok() {
                        return Some(proof);
                    }
                }
            }
            None
        };
        ctx.spawn(fut.into_actor(self).map(move |proof, act, _| {
            let Some(proof) = proof else {
                return;
            };
            if let Some((_, waiters, since, _)) = act.waiting.remove(&id) {
                let height = proof.header.height;
                act.metrics
                    .commit_latency(&chain_id, now_ms().saturating_sub(since) as f64);
                act.end_traced(&id, None, Some(height));
                let receipt = Receipt {
                    chain_id: chain_id.clone(),
                    tx_id: id,
                    height,
                    proof: Some(proof),
                };
                for w in waiters {
                    w.answer(GatewayResponse::Receipt(receipt.clone()));
                }
            }
        }));
    }

    /// Relays a ledger query to the validators of a followed chain, one at
    /// a time from a rotating start, until one answers. The answer goes
    /// back as the validator gave it: the client checks its proofs.
    fn query(
        &mut self,
        chain_id: String,
        query: LedgerQuery,
        waiter: Waiter,
        ctx: &mut Context<Self>,
    ) {
        if self.queries_in_flight >= QUERIES_MAX {
            waiter.answer(GatewayResponse::Refused(format!(
                "gateway has {QUERIES_MAX} queries in flight; ask again later"
            )));
            return;
        }
        let Some(chain) = self.chain_mut(&chain_id) else {
            waiter.answer(GatewayResponse::Refused(format!(
                "this gateway follows no chain `{chain_id}`"
            )));
            return;
        };
        let n = chain.validators.len();
        chain.query_offset = chain.query_offset.wrapping_add(1);
        let start = chain.query_offset;
        let order: Vec<NodeId> = (0..n).map(|i| chain.validators[(start + i) % n]).collect();
        let actor = chain.actor.clone();
        let transport = self.transport.clone();
        let body = wire::encode(&ValidatorRequest::Query(query));
        let fut = async move {
            let mut last = String::from("the chain has no validators");
            for v in order {
                match transport
                    .request(v, &actor, body.clone(), REQUEST_TIMEOUT)
                    .await
                {
                    Ok(reply) => match wire::decode::<ValidatorResponse>(&reply) {
                        Ok(ValidatorResponse::Answer(a)) => return GatewayResponse::Answer(a),
                        Ok(_) => last = format!("validator {} answered off the point", v.short()),
                        Err(e) => last = format!("validator {}: {e}", v.short()),
                    },
                    Err(e) => last = format!("validator {}: {e}", v.short()),
                }
            }
            GatewayResponse::Refused(format!("no validator of `{chain_id}` answered ({last})"))
        };
        self.queries_in_flight += 1;
        ctx.spawn(fut.into_actor(self).map(move |r, act, _| {
            act.queries_in_flight -= 1;
            waiter.answer(r)
        }));
    }

    fn status(&self) -> Vec<(String, u64)> {
        let mut out = vec![(self.local.chain_id.clone(), self.local.height)];
        if let Some(c) = &self.consortium {
            out.push((c.chain_id.clone(), c.height));
        }
        out
    }
}

impl Actor for GatewayActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
        if let Some(inbox) = self.inbox.take() {
            ctx.add_stream(crate::inbox_stream(inbox));
        }
        let local = self.local.chain_id.clone();
        self.follow(&local, false, ctx);
        if let Some(c) = self.consortium.as_ref().map(|c| c.chain_id.clone()) {
            self.follow(&c, false, ctx);
        }
        ctx.run_interval(FOLLOW_CHECK, |act, ctx| act.check(ctx));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        info!(cloud = %self.cloud, "gateway stopped");
    }
}

impl StreamHandler<Incoming> for GatewayActor {
    fn handle(&mut self, item: Incoming, ctx: &mut Context<Self>) {
        match item {
            Incoming::OneWay { body, .. } => match wire::decode::<ValidatorOneWay>(&body) {
                Ok(ValidatorOneWay::Committed(b)) => self.handle_block(*b, ctx),
                Ok(ValidatorOneWay::Consensus(_)) => {}
                Err(_) => self.counters.malformed += 1,
            },
            Incoming::Request {
                body,
                responder,
                trace,
                ..
            } => match wire::decode::<GatewayRequest>(&body) {
                Ok(GatewayRequest::Submit { tx, wait, after }) => {
                    self.trace_submit(&tx, &trace);
                    if wait {
                        self.arrive(after, vec![(tx, Some(Waiter::Remote(responder)))], ctx);
                    } else {
                        let id = tx.id();
                        let chain = match tx.record().route() {
                            Route::Local => self.local.chain_id.clone(),
                            Route::Consortium => self
                                .consortium
                                .as_ref()
                                .map(|c| c.chain_id.clone())
                                .unwrap_or_default(),
                        };
                        self.arrive(after, vec![(tx, None)], ctx);
                        let r = GatewayResponse::Receipt(Receipt {
                            chain_id: chain,
                            tx_id: id,
                            height: 0,
                            proof: None,
                        });
                        Waiter::Remote(responder).answer(r);
                    }
                }
                Ok(GatewayRequest::SubmitMany { txs, after }) => {
                    if txs.len() > BATCH_MAX {
                        self.counters.refused += txs.len() as u64;
                        let why =
                            format!("batch of {} transactions exceeds {BATCH_MAX}", txs.len());
                        Waiter::Remote(responder)
                            .answer(GatewayResponse::Receipts(vec![Err(why); txs.len()]));
                        return;
                    }
                    if txs.is_empty() {
                        Waiter::Remote(responder).answer(GatewayResponse::Receipts(Vec::new()));
                        return;
                    }
                    for tx in &txs {
                        self.trace_submit(tx, &trace);
                    }
                    let collector = Collector::new(responder, txs.len());
                    let group = txs
                        .into_iter()
                        .enumerate()
                        .map(|(i, tx)| (tx, Some(Waiter::Part(collector.clone(), i))))
                        .collect();
                    self.arrive(after, group, ctx);
                }
                Ok(GatewayRequest::Status) => {
                    Waiter::Remote(responder).answer(GatewayResponse::Status(self.status()))
                }
                Ok(GatewayRequest::Query { chain_id, query }) => {
                    self.query(chain_id, query, Waiter::Remote(responder), ctx)
                }
                Err(e) => {
                    self.counters.malformed += 1;
                    let msg = format!("malformed request: {e}");
                    actix::spawn(async move {
                        let _ = responder.fail(&msg).await;
                    });
                }
            },
            Incoming::Transfer { receiver, .. } => receiver.reject(),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// The relayed transaction delivering `proof`'s record, signed by the
/// gateway's `key` with `nonce`.
fn delivery_tx(key: &NodeKey, proof: Box<CrossChainProof>, nonce: u64) -> Transaction {
    Transaction::sign(Record::Relayed { proof }, key, nonce, now_ms(), None)
}

/// What the statuses the validators gave for one transaction mean (see
/// [`Probed`]); `one_honest` is f+1 of the chain.
fn probed(statuses: &[&TxStatus], one_honest: usize) -> Probed {
    // A refusal first: only the proposer that dropped it knows why, while
    // the others may still hold it pending.
    if let Some(why) = statuses.iter().find_map(|s| match s {
        TxStatus::Refused(why) => Some(why.clone()),
        _ => None,
    }) {
        return Probed::Refused(why);
    }
    let committed = statuses
        .iter()
        .filter(|s| matches!(s, TxStatus::Committed { .. }))
        .count();
    if committed >= one_honest {
        Probed::Committed
    } else if committed > 0
        || statuses.iter().any(|s| **s == TxStatus::Pending)
        // Nobody answered: ask again later.
        || statuses.is_empty()
    {
        Probed::Wait
    } else {
        Probed::Lost
    }
}

/// Submits a transaction from inside the gateway's process and waits for
/// its commit (or refusal).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubmitLocal {
    /// The transaction.
    pub tx: Transaction,
    /// Where the answer goes.
    pub reply: oneshot::Sender<GatewayResponse>,
}

impl Handler<SubmitLocal> for GatewayActor {
    type Result = ();
    fn handle(&mut self, msg: SubmitLocal, ctx: &mut Context<Self>) {
        self.submit(msg.tx, Some(Waiter::Local(msg.reply)), ctx);
    }
}

/// The gateway's heights and counters.
#[derive(Message)]
#[rtype(result = "(Vec<(String, u64)>, GatewayCounters)")]
pub struct GatewayStatus;

impl Handler<GatewayStatus> for GatewayActor {
    type Result = MessageResult<GatewayStatus>;
    fn handle(&mut self, _: GatewayStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult((self.status(), self.counters.clone()))
    }
}

/// How long the gateway keeps re-sending an `Indication` notice to a
/// destination server it cannot reach (restarting, or its connection lost).
/// The destination is the only side that can still write the outcome if the
/// source dies, so one failed send must not lose the notice.
const NOTICE_RETRY_FOR: Duration = Duration::from_secs(120);

/// Sends an `Indication` notice to `server`'s migration actor, retrying
/// with backoff (250 ms doubling to 4 s) for [`NOTICE_RETRY_FOR`]. A
/// duplicate is harmless: the destination records an indication once.
async fn send_notice_retrying(
    t: Transport,
    server: NodeId,
    migration_id: federact_ledger::Hash,
    body: bytes::Bytes,
) {
    let deadline = Instant::now() + NOTICE_RETRY_FOR;
    let mut pause = Duration::from_millis(250);
    loop {
        match t.send(server, wire::MIGRATION_ACTOR, body.clone()).await {
            Ok(()) => return,
            Err(e) if Instant::now() + pause > deadline => {
                warn!(migration = %migration_id.short(), server = %server.short(), error = %ErrorChain(&e),
                    "indication notice to the destination not delivered; giving up");
                return;
            }
            Err(e) => {
                debug!(migration = %migration_id.short(), error = %e, "indication notice not sent; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(4));
            }
        }
    }
}

#[cfg(test)]
mod notice_tests {
    use super::*;
    use federact_federation::{Member, Membership, TransportOptions};
    use std::sync::atomic::Ordering::Relaxed;

    /// A destination server that cannot be reached when its `Indication`
    /// commits (restarting) still gets the notice once it is back: the
    /// first send fails, the retry delivers it.
    #[test]
    fn indication_notice_reaches_a_destination_that_was_down_at_the_first_send() {
        actix::System::new().block_on(async {
            let (gateway, server) = (NodeKey::generate(), NodeKey::generate());
            let sock_g = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            // Held, not served: datagrams to the server go unanswered.
            let sock_s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let membership = Membership::new([
                Member {
                    id: gateway.id(),
                    addr: sock_g.local_addr().unwrap(),
                    name: "gateway".into(),
                },
                Member {
                    id: server.id(),
                    addr: sock_s.local_addr().unwrap(),
                    name: "server".into(),
                },
            ]);
            let options = TransportOptions {
                connect_timeout: Duration::from_millis(300),
                ..TransportOptions::default()
            };
            let t = Transport::bind_socket(&gateway, membership.clone(), options.clone(), sock_g)
                .await
                .unwrap();
            let body = bytes::Bytes::from_static(b"indication notice");
            actix::spawn(send_notice_retrying(
                t.clone(),
                server.id(),
                federact_ledger::Hash::of(b"migration"),
                body.clone(),
            ));
            let deadline = Instant::now() + Duration::from_secs(60);
            while t.metrics().dials_failed.load(Relaxed) == 0 {
                assert!(Instant::now() < deadline, "the first send never failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let s = Transport::bind_socket(&server, membership, options, sock_s)
                .await
                .unwrap();
            let mut inbox = s.register(wire::MIGRATION_ACTOR, 8).unwrap();
            let got = tokio::time::timeout(Duration::from_secs(60), inbox.recv())
                .await
                .expect("the notice was not re-sent to the restarted server");
            match got {
                Some(Incoming::OneWay { from, body: b, .. }) => {
                    assert_eq!(from, gateway.id());
                    assert_eq!(b, body);
                }
                other => panic!("expected the one-way notice, got {other:?}"),
            }
        });
    }
}
