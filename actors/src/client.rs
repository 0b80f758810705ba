//! A client of a cloud's gateway, for the cloud's actors and for tools:
//! sign a record, submit it, and wait for the receipt with its proof; and
//! query the chains the gateway follows remotely — the same things
//! `federact ledger` reads from store files (tips, blocks, transactions,
//! VM histories, provenance).
//!
//! Query answers come from a validator through the gateway, and neither is
//! trusted: the client checks every block's certificate and every record's
//! inclusion proof against the chain's validator set from the federation
//! configuration ([`LedgerClient::with_federation`]). What a proof cannot
//! show is completeness: a lying validator can leave records out of a
//! history (it cannot add or alter any).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use federact_config::{Federation, NodeId, NodeKey};
use federact_federation::Transport;
use federact_ledger::cert::ValidatorSet;
use federact_ledger::hash::Hash;
use federact_ledger::proof::CrossChainProof;
use federact_ledger::record::Record;
use federact_ledger::store::{CommittedTx, IndexedRecord, TxLocation};
use federact_ledger::tx::{Transaction, TxId};

use crate::clock::{now_micros, now_ms};
use crate::error::ActorError;
use crate::wire::{
    self, CertifiedBlock, GatewayRequest, GatewayResponse, LedgerAnswer, LedgerQuery, Receipt,
};

/// The chains a gateway follows, with the validator sets that check
/// answers about them.
#[derive(Debug, Clone)]
struct Chains {
    /// The gateway's local chain.
    local: String,
    /// The consortium chain, if the federation has one.
    consortium: Option<String>,
    /// Validator set per chain id.
    sets: BTreeMap<String, ValidatorSet>,
}

/// Records found by a query, each checked against its inclusion proof.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordSet {
    /// The records, ordered by block time, then chain, height, position.
    pub records: Vec<IndexedRecord>,
    /// A validator had more matching records than one answer carries.
    pub truncated: bool,
}

/// How long `submit` waits for a commit by default.
pub const SUBMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The nonces a client (and its clones) hands out, and which of its
/// submissions are in flight.
///
/// Concurrent submissions of one author must reach the chain in nonce order
/// (a later nonce committing first makes an earlier one stale). Each
/// submission names the nonce of the client's previous one while that one
/// is still in flight, and the gateway passes them on in that order (see
/// `federact_actors::order`), so any number of concurrent `submit`s commit.
#[derive(Debug, Default)]
struct Sequence {
    /// The last nonce handed out.
    last: u64,
    /// The last nonce handed out to an ordered submission.
    last_ordered: u64,
    /// Ordered submissions in flight, by their (highest) nonce.
    in_flight: std::collections::BTreeSet<u64>,
}

impl Sequence {
    /// `n` consecutive nonces above every earlier one (microseconds since
    /// the epoch at least, so a restarted author never reuses one).
    fn take(&mut self, n: u64) -> std::ops::RangeInclusive<u64> {
        let first = now_micros().max(self.last.saturating_add(1));
        self.last = first.saturating_add(n.saturating_sub(1));
        first..=self.last
    }
}

/// An ordered submission in flight; leaving the set when dropped (answered,
/// failed or cancelled).
struct InFlight {
    sequence: Arc<std::sync::Mutex<Sequence>>,
    nonce: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut s) = self.sequence.lock() {
            s.in_flight.remove(&self.nonce);
        }
    }
}

/// Signs and submits records through one gateway.
#[derive(Clone)]
pub struct LedgerClient {
    transport: Transport,
    key: NodeKey,
    gateway: NodeId,
    sequence: Arc<std::sync::Mutex<Sequence>>,
    timeout: Duration,
    chains: Option<Arc<Chains>>,
}

impl LedgerClient {
    /// A client that signs as `key` and talks to `gateway` over `transport`.
    pub fn new(transport: Transport, key: NodeKey, gateway: NodeId) -> Self {
        LedgerClient {
            transport,
            key,
            gateway,
            sequence: Arc::default(),
            timeout: SUBMIT_TIMEOUT,
            chains: None,
        }
    }

    /// A client for tools: binds its own endpoint (ephemeral port) as the
    /// node of `config`, signs with `key`, talks to the gateway of the
    /// node's cloud, and checks answers against `config`'s federation.
    /// Close it with [`LedgerClient::close`].
    pub async fn connect(
        config: &federact_config::NodeConfig,
        key: NodeKey,
    ) -> Result<LedgerClient, ActorError> {
        let fed = config.federation();
        let spec = config.spec();
        let gateway =
            fed.gateway(spec.cloud())
                .map(|g| g.id())
                .ok_or_else(|| ActorError::Config {
                    detail: format!("cloud `{}` has no gateway", spec.cloud()),
                })?;
        let membership = federact_federation::Membership::from_federation(fed);
        let options = federact_federation::TransportOptions::from(*fed.transport());
        let addr = std::net::SocketAddr::new(config.bind_addr().ip(), 0);
        let transport = Transport::bind(&key, membership, options, addr).await?;
        Ok(LedgerClient::new(transport, key, gateway).with_federation(fed))
    }

    /// The client's transport (e.g. to probe peers with the same endpoint).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Closes the client's endpoint (for [`LedgerClient::connect`]).
    pub async fn close(&self) {
        self.transport.close().await;
    }

    /// Takes the chains the gateway follows and their validator sets from
    /// `federation`, so the client can query them and check the answers.
    /// Without it, queries fail with [`ActorError::Config`].
    pub fn with_federation(mut self, federation: &Federation) -> Self {
        let cloud = federation.node_by_id(&self.gateway).map(|n| n.cloud());
        let local = cloud.and_then(|c| federation.local_chain(c));
        self.chains = local.map(|local| {
            let consortium = federation.consortium();
            let sets = std::iter::once(local)
                .chain(consortium)
                .map(|spec| (spec.id().to_string(), ValidatorSet::from_spec(spec)))
                .collect();
            Arc::new(Chains {
                local: local.id().to_string(),
                consortium: consortium.map(|c| c.id().to_string()),
                sets,
            })
        });
        self
    }

    /// Changes how long a submit waits.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Signs `record` with the next nonce (microseconds since the epoch, so
    /// a restarted author never reuses one).
    pub fn sign(&self, record: Record) -> Transaction {
        let nonce = *self.lock_sequence().take(1).start();
        Transaction::sign(record, &self.key, nonce, now_ms(), crate::trace_id_now())
    }

    fn lock_sequence(&self) -> std::sync::MutexGuard<'_, Sequence> {
        // The lock guards plain numbers: a panic elsewhere cannot have left
        // them inconsistent.
        self.sequence
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Signs `records` with consecutive nonces as one ordered submission:
    /// returns them, the nonce of the previous ordered submission still in
    /// flight (the gateway passes this one on after it), and the guard that
    /// marks this one in flight.
    fn sign_ordered(&self, records: Vec<Record>) -> (Vec<Transaction>, Option<u64>, InFlight) {
        let (nonces, after, last) = {
            let mut s = self.lock_sequence();
            let nonces = s.take(records.len().max(1) as u64);
            let after = (!s.in_flight.is_empty()).then_some(s.last_ordered);
            let last = *nonces.end();
            s.last_ordered = last;
            s.in_flight.insert(last);
            (nonces, after, last)
        };
        let guard = InFlight {
            sequence: self.sequence.clone(),
            nonce: last,
        };
        let trace_id = crate::trace_id_now();
        let txs = records
            .into_iter()
            .zip(nonces)
            .map(|(r, n)| Transaction::sign(r, &self.key, n, now_ms(), trace_id))
            .collect();
        (txs, after, guard)
    }

    /// Submits `record` and waits until it commits (receipt with inclusion
    /// proof) or is refused.
    ///
    /// Runs in a `ledger.submit` span (record kind, tx id, then the chain
    /// and height it committed at); the transaction carries the span's trace
    /// id, so the ledger record links back to this trace.
    pub async fn submit(&self, record: Record) -> Result<Receipt, ActorError> {
        use tracing::Instrument;
        let span = crate::telemetry::sampled_root(|| {
            tracing::info_span!(
                "ledger.submit",
                federact.root = true,
                record = record.kind(),
                tx.id = tracing::field::Empty,
                chain = tracing::field::Empty,
                height = tracing::field::Empty,
            )
        });
        let (tx, after, in_flight) = {
            let _entered = span.enter();
            let (mut txs, after, in_flight) = self.sign_ordered(vec![record]);
            (txs.remove(0), after, in_flight)
        };
        if !span.is_disabled() {
            span.record("tx.id", tracing::field::display(tx.id()));
        }
        let result = self
            .send_submit(tx, true, after)
            .instrument(span.clone())
            .await;
        drop(in_flight);
        match &result {
            Ok(r) => {
                span.record("chain", r.chain_id.as_str());
                span.record("height", r.height);
            }
            Err(e) => crate::telemetry::record_error(&span, e),
        }
        result
    }

    /// Submits an already signed transaction; with `wait`, until it commits.
    /// It is not ordered with this client's other submissions.
    pub async fn submit_tx(&self, tx: Transaction, wait: bool) -> Result<Receipt, ActorError> {
        self.send_submit(tx, wait, None).await
    }

    async fn send_submit(
        &self,
        tx: Transaction,
        wait: bool,
        after: Option<u64>,
    ) -> Result<Receipt, ActorError> {
        let body = wire::encode(&GatewayRequest::Submit { tx, wait, after });
        let reply = self
            .transport
            .request(self.gateway, wire::GATEWAY_ACTOR, body, self.timeout)
            .await?;
        match wire::decode::<GatewayResponse>(&reply) {
            Ok(GatewayResponse::Receipt(r)) => Ok(r),
            Ok(GatewayResponse::Refused(reason)) => Err(ActorError::Refused { reason }),
            Ok(other) => Err(ActorError::Malformed {
                peer: self.gateway,
                detail: format!("unexpected answer {other:?}"),
            }),
            Err(e) => Err(ActorError::Malformed {
                peer: self.gateway,
                detail: e.to_string(),
            }),
        }
    }

    /// Signs `records` and submits them in one request (at most 1024);
    /// answers, in order, once each committed (receipt with proof) or was
    /// refused. For clients that submit at high rates: one round trip and
    /// one response for the lot instead of one per record.
    ///
    /// Runs in a `ledger.submit_many` span (records, then how many
    /// committed and were refused), as [`LedgerClient::submit`] does; the
    /// transactions carry its trace id, and the gateway opens a
    /// `gateway.submit` span per transaction in the same trace.
    pub async fn submit_many(
        &self,
        records: Vec<Record>,
    ) -> Result<Vec<Result<Receipt, ActorError>>, ActorError> {
        use tracing::Instrument;
        let n = records.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let span = crate::telemetry::sampled_root(|| {
            tracing::info_span!(
                "ledger.submit_many",
                federact.root = true,
                records = n,
                committed = tracing::field::Empty,
                refused = tracing::field::Empty,
            )
        });
        let (txs, after, in_flight) = {
            let _entered = span.enter();
            self.sign_ordered(records)
        };
        let result = self.send_many(txs, after).instrument(span.clone()).await;
        drop(in_flight);
        match &result {
            Ok(r) => {
                let committed = r.iter().filter(|a| a.is_ok()).count();
                span.record("committed", committed);
                span.record("refused", r.len() - committed);
            }
            Err(e) => crate::telemetry::record_error(&span, e),
        }
        result
    }

    async fn send_many(
        &self,
        txs: Vec<Transaction>,
        after: Option<u64>,
    ) -> Result<Vec<Result<Receipt, ActorError>>, ActorError> {
        let n = txs.len();
        let body = wire::encode(&GatewayRequest::SubmitMany { txs, after });
        let reply = self
            .transport
            .request(self.gateway, wire::GATEWAY_ACTOR, body, self.timeout)
            .await?;
        match wire::decode::<GatewayResponse>(&reply) {
            Ok(GatewayResponse::Receipts(r)) if r.len() == n => Ok(r
                .into_iter()
                .map(|a| a.map_err(|reason| ActorError::Refused { reason }))
                .collect()),
            Ok(other) => Err(ActorError::Malformed {
                peer: self.gateway,
                detail: format!("unexpected answer to {n} submissions: {other:?}"),
            }),
            Err(e) => Err(ActorError::Malformed {
                peer: self.gateway,
                detail: e.to_string(),
            }),
        }
    }

    /// Heights of the chains the gateway follows.
    pub async fn status(&self) -> Result<Vec<(String, u64)>, ActorError> {
        let body = wire::encode(&GatewayRequest::Status);
        let reply = self
            .transport
            .request(self.gateway, wire::GATEWAY_ACTOR, body, self.timeout)
            .await?;
        match wire::decode::<GatewayResponse>(&reply) {
            Ok(GatewayResponse::Status(s)) => Ok(s),
            Ok(other) => Err(ActorError::Malformed {
                peer: self.gateway,
                detail: format!("unexpected answer {other:?}"),
            }),
            Err(e) => Err(ActorError::Malformed {
                peer: self.gateway,
                detail: e.to_string(),
            }),
        }
    }

    /// The chains the gateway follows (local first, then the consortium),
    /// as given by the federation.
    pub fn chains(&self) -> Result<Vec<String>, ActorError> {
        let c = self.chains_checked()?;
        Ok(std::iter::once(c.local.clone())
            .chain(c.consortium.clone())
            .collect())
    }

    /// The latest committed block of `chain_id` with its certificate,
    /// checked; `None` while the chain holds only its genesis.
    pub async fn tip(&self, chain_id: &str) -> Result<Option<CertifiedBlock>, ActorError> {
        match self.ask(chain_id, LedgerQuery::Tip).await? {
            LedgerAnswer::Block(b) => self.checked_block(chain_id, None, b),
            other => Err(self.off_point(chain_id, &other)),
        }
    }

    /// The committed block of `chain_id` at `height` with its certificate,
    /// checked; `None` if not committed yet.
    pub async fn block(
        &self,
        chain_id: &str,
        height: u64,
    ) -> Result<Option<CertifiedBlock>, ActorError> {
        match self.ask(chain_id, LedgerQuery::Block { height }).await? {
            LedgerAnswer::Block(b) => self.checked_block(chain_id, Some(height), b),
            other => Err(self.off_point(chain_id, &other)),
        }
    }

    /// Transaction `id` with where it committed and its inclusion proof,
    /// checked; looked up on the local chain, then the consortium. `None`
    /// if neither holds it.
    pub async fn transaction(&self, id: &TxId) -> Result<Option<CommittedTx>, ActorError> {
        for chain_id in self.chains()? {
            match self.ask(&chain_id, LedgerQuery::Tx { id: *id }).await? {
                LedgerAnswer::Tx(None) => continue,
                LedgerAnswer::Tx(Some(proof)) => {
                    let tx = self.check_proof(&chain_id, &proof)?;
                    if proof.tx_id != *id {
                        return Err(self.unverified(
                            &chain_id,
                            format!("asked for tx {id}, got a proof of {}", proof.tx_id),
                        ));
                    }
                    let location = TxLocation {
                        height: proof.header.height,
                        index: proof.path.index,
                    };
                    return Ok(Some(CommittedTx {
                        tx,
                        location,
                        proof: *proof,
                    }));
                }
                other => return Err(self.off_point(&chain_id, &other)),
            }
        }
        Ok(None)
    }

    /// Every migration record of `vm_id` on the local chain and the
    /// consortium (every hop the gateway's cloud can see), each checked.
    pub async fn vm_history(&self, vm_id: &Hash) -> Result<RecordSet, ActorError> {
        let vm = *vm_id;
        self.records(LedgerQuery::VmHistory { vm_id: vm }, move |r| {
            r.vm_id() == Some(&vm)
        })
        .await
    }

    /// Every provenance record mentioning `entity` (a device or container
    /// name, an activity, or a data digest in hex) on the local chain and
    /// the consortium, each checked.
    pub async fn provenance(&self, entity: &str) -> Result<RecordSet, ActorError> {
        let e = entity.to_string();
        self.records(
            LedgerQuery::Provenance {
                entity: entity.to_string(),
            },
            move |r| r.prov_entities().contains(&e),
        )
        .await
    }

    /// Asks every followed chain `query` and merges the proven records that
    /// satisfy `concerns` (a validator must not pass off unrelated ones).
    async fn records(
        &self,
        query: LedgerQuery,
        concerns: impl Fn(&Record) -> bool,
    ) -> Result<RecordSet, ActorError> {
        let mut out = RecordSet::default();
        for chain_id in self.chains()? {
            let (proofs, truncated) = match self.ask(&chain_id, query.clone()).await? {
                LedgerAnswer::Records { proofs, truncated } => (proofs, truncated),
                other => return Err(self.off_point(&chain_id, &other)),
            };
            out.truncated |= truncated;
            for proof in proofs {
                let tx = self.check_proof(&chain_id, &proof)?;
                if !concerns(tx.record()) {
                    return Err(self.unverified(
                        &chain_id,
                        format!(
                            "tx {} ({}) does not match the query",
                            proof.tx_id,
                            tx.record().kind()
                        ),
                    ));
                }
                out.records.push(IndexedRecord {
                    chain_id: chain_id.clone(),
                    height: proof.header.height,
                    index: proof.path.index,
                    tx_id: proof.tx_id,
                    block_timestamp_ms: proof.header.timestamp_ms,
                    author: *tx.author(),
                    trace_id: tx.trace_id(),
                    record: tx.record().clone(),
                });
            }
        }
        // Hops on different chains interleave by commit time; within a
        // chain, by height and position.
        out.records.sort_by(|a, b| {
            (a.block_timestamp_ms, &a.chain_id, a.height, a.index).cmp(&(
                b.block_timestamp_ms,
                &b.chain_id,
                b.height,
                b.index,
            ))
        });
        out.records
            .dedup_by(|a, b| a.chain_id == b.chain_id && a.tx_id == b.tx_id);
        Ok(out)
    }

    fn chains_checked(&self) -> Result<&Chains, ActorError> {
        self.chains.as_deref().ok_or_else(|| ActorError::Config {
            detail: "ledger queries need the federation's validator sets \
                     (LedgerClient::with_federation) to check answers"
                .into(),
        })
    }

    fn set(&self, chain_id: &str) -> Result<&ValidatorSet, ActorError> {
        self.chains_checked()?
            .sets
            .get(chain_id)
            .ok_or_else(|| ActorError::Config {
                detail: format!("the gateway does not follow chain `{chain_id}`"),
            })
    }

    /// Sends `query` about `chain_id` through the gateway.
    async fn ask(&self, chain_id: &str, query: LedgerQuery) -> Result<LedgerAnswer, ActorError> {
        self.set(chain_id)?;
        let body = wire::encode(&GatewayRequest::Query {
            chain_id: chain_id.to_string(),
            query,
        });
        let reply = self
            .transport
            .request(self.gateway, wire::GATEWAY_ACTOR, body, self.timeout)
            .await?;
        match wire::decode::<GatewayResponse>(&reply) {
            Ok(GatewayResponse::Answer(LedgerAnswer::Failed(reason))) => {
                Err(ActorError::Refused { reason })
            }
            Ok(GatewayResponse::Answer(a)) => Ok(a),
            Ok(GatewayResponse::Refused(reason)) => Err(ActorError::Refused { reason }),
            Ok(other) => Err(ActorError::Malformed {
                peer: self.gateway,
                detail: format!("unexpected answer {other:?}"),
            }),
            Err(e) => Err(ActorError::Malformed {
                peer: self.gateway,
                detail: e.to_string(),
            }),
        }
    }

    /// Checks a block answer: the chain and height asked for, the
    /// certificate against the chain's validators, the body against the
    /// header's Merkle root, and every transaction's signature.
    fn checked_block(
        &self,
        chain_id: &str,
        height: Option<u64>,
        block: Option<Box<CertifiedBlock>>,
    ) -> Result<Option<CertifiedBlock>, ActorError> {
        let Some(b) = block else {
            return Ok(None);
        };
        let set = self.set(chain_id)?;
        let h = &b.block.header;
        if h.chain_id != chain_id {
            return Err(self.unverified(chain_id, format!("block of chain `{}`", h.chain_id)));
        }
        if let Some(want) = height.filter(|w| *w != h.height) {
            return Err(self.unverified(
                chain_id,
                format!("asked for height {want}, got {}", h.height),
            ));
        }
        b.certificate
            .verify(set, chain_id, h.height, &b.block.id())
            .map_err(|e| self.unverified(chain_id, format!("height {}: {e}", h.height)))?;
        if h.tx_root != federact_ledger::merkle::root(&b.block.tx_ids()) {
            return Err(self.unverified(
                chain_id,
                format!(
                    "height {}: the transactions do not match the header",
                    h.height
                ),
            ));
        }
        let txs: Vec<&Transaction> = b.block.txs.iter().collect();
        federact_ledger::tx::verify_signatures_batch(&txs).map_err(|(i, e)| {
            self.unverified(chain_id, format!("height {} tx {i}: {e}", h.height))
        })?;
        Ok(Some(*b))
    }

    /// Checks `proof` against the validator set of the chain it names
    /// (one of those the gateway follows) and returns the proven
    /// transaction: what a holder of a receipt from someone else (e.g. an
    /// offloaded task's executor) verifies before trusting it. Fails with
    /// [`ActorError::Config`] without [`LedgerClient::with_federation`] or
    /// for a chain not followed, [`ActorError::Unverified`] for a proof that
    /// does not verify.
    pub fn verify_proof(&self, proof: &CrossChainProof) -> Result<Transaction, ActorError> {
        self.check_proof(&proof.header.chain_id, proof)
    }

    /// Whether this client can check proofs
    /// ([`LedgerClient::with_federation`] was given).
    pub fn verifies(&self) -> bool {
        self.chains.is_some()
    }

    fn check_proof(
        &self,
        chain_id: &str,
        proof: &CrossChainProof,
    ) -> Result<Transaction, ActorError> {
        proof
            .verify(self.set(chain_id)?, chain_id)
            .map_err(|e| self.unverified(chain_id, format!("tx {}: {e}", proof.tx_id)))
    }

    fn unverified(&self, chain_id: &str, detail: String) -> ActorError {
        ActorError::Unverified {
            chain: chain_id.to_string(),
            peer: self.gateway,
            detail,
        }
    }

    fn off_point(&self, chain_id: &str, answer: &LedgerAnswer) -> ActorError {
        let kind = match answer {
            LedgerAnswer::Block(_) => "a block",
            LedgerAnswer::Tx(_) => "a transaction",
            LedgerAnswer::Records { .. } => "records",
            LedgerAnswer::Failed(_) => "a failure",
        };
        ActorError::Malformed {
            peer: self.gateway,
            detail: format!("a query about `{chain_id}` was answered with {kind}"),
        }
    }
}
