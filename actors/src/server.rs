//! The server actor (one per server node): hosts function instances the
//! orchestrator placed here, enforces the configured capacity (instances
//! and calls in flight), deactivates idle instances (scale to zero,
//! handing their snapshot to the orchestrator) and reports its load.
//!
//! Also [`Invoker`], the caller's side: locate an instance through the
//! cloud's orchestrator (cached), call it on its server.
//!
//! # Live migration (issue 8)
//! On the orchestrator's `Migrate`, the server freezes the instance: calls
//! already queued to it run, later ones are buffered (counted in flight, at
//! most a quarter of the call slots per instance; beyond, `Busy`);
//! the instance's snapshot (taken after every queued call) is written to a
//! file and handed to the node's migration actor, which runs BASICS with
//! it as the image. Completed → the instance is dropped and the buffered
//! calls answered `NotHere`, so callers re-locate (the orchestrator holds
//! them until the destination hosts it); aborted → the buffered calls run
//! here in arrival order. On `Adopt`, a destination server waits for its
//! side of the migration to complete, checks the kept image against the
//! vm id and the names, and restores the instance from it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use tracing::{debug, warn};

use federact_config::NodeId;
use federact_federation::{Inbox, Incoming, Transport, TransportError};

use federact_ledger::hash::Hash;
use federact_ledger::record::{Record, Scope};

use crate::client::LedgerClient;
use crate::function::{
    check_names, entity_name, Call, Deactivate, FunctionError, FunctionRegistry, InstanceActor,
    Snapshot, SNAPSHOT_BYTES_MAX,
};
use crate::offload_check::{check_result, spot_checked, OffloadChecks, OffloadCounters, Rejection};
use crate::placement::{InstanceHeat, ServerLoad, FUNCTIONS_MAX, HEAT_MAX};
use crate::wire::{
    self, OrchestratorOneWay, OrchestratorRequest, OrchestratorResponse, ServerRequest,
    ServerResponse, ORCHESTRATOR_ACTOR, SERVER_ACTOR,
};

/// A server's limits and timers.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Most instances hosted at once.
    pub instances_max: u32,
    /// Most calls in flight (queued or running) over all instances.
    pub inflight_max: u32,
    /// An instance with no call for this long is deactivated.
    pub idle: Duration,
    /// How long one call may take.
    pub call_timeout: Duration,
    /// How often the load is reported to the orchestrator.
    pub report_every: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            instances_max: 1024,
            inflight_max: 4096,
            idle: Duration::from_secs(60),
            call_timeout: Duration::from_secs(10),
            report_every: Duration::from_millis(250),
        }
    }
}

/// Rough memory an instance holds beyond its state, for load reports.
const INSTANCE_BYTES_ESTIMATE: u64 = 16 << 10;
/// First wait before a task that found no free slot anywhere asks again.
const TASK_RETRY_FIRST: Duration = Duration::from_millis(20);
/// Longest wait between two such attempts.
const TASK_RETRY_MAX: Duration = Duration::from_millis(500);
/// Capacity of the server's transport inbox.
const INBOX_CAPACITY: usize = 4096;

/// A call that arrived while its instance was frozen for a migration.
type Buffered = (Bytes, tokio::sync::oneshot::Sender<ServerResponse>);

struct Instance {
    addr: Addr<InstanceActor>,
    inflight: u32,
    last_used: Instant,
    /// Calls since the last heat report.
    calls: u32,
    /// `Some` while the instance migrates: the calls buffered meanwhile.
    frozen: Option<Vec<Buffered>>,
}

impl Instance {
    fn new(addr: Addr<InstanceActor>) -> Self {
        Instance {
            addr,
            inflight: 0,
            last_used: Instant::now(),
            calls: 0,
            frozen: None,
        }
    }
}

/// How long a destination server waits for its side of a migration it is
/// asked to adopt to end (the orchestrator asks once the source's side
/// completed, so this covers the destination's own commits).
pub const ADOPT_WAIT: Duration = Duration::from_secs(120);
/// How long an adopt waits for a migration this server never heard of.
const ADOPT_UNKNOWN_WAIT: Duration = Duration::from_secs(3);

/// Hosts function instances on one server node.
pub struct ServerActor {
    transport: Transport,
    ledger: Option<LedgerClient>,
    task_seq: u64,
    orchestrator: Option<NodeId>,
    registry: FunctionRegistry,
    limits: ServerLimits,
    instances: HashMap<(String, String), Instance>,
    inflight: u32,
    /// Offloaded tasks this server accepted and has not run yet: each holds
    /// a call slot (counted in `inflight`) until its `RunTask` arrives or
    /// the call timeout passes, so a server cannot accept more than it has
    /// room for.
    reserved: HashMap<Hash, Instant>,
    inbox: Option<Inbox>,
    /// The node's migration actor and its directory (issue 8).
    migration: Option<(Addr<crate::migration::MigrationActor>, PathBuf)>,
    /// Serialises the provenance submissions of auditable calls: one
    /// author's transactions then reach the chain in nonce order (racing
    /// submissions of one author can be refused as stale).
    audit_turn: Arc<tokio::sync::Mutex<()>>,
    /// When this server started (ms since the epoch), in its load reports.
    started_ms: u64,
    /// How results of tasks offloaded from here are checked (issue 11).
    checks: OffloadChecks,
    /// What those checks counted.
    offload_counters: Arc<OffloadCounters>,
    /// This server's secret for choosing which offloaded results to spot
    /// check (see [`spot_checked`]); drawn at start, never shared.
    spot_salt: [u8; 32],
}

impl ServerActor {
    /// A server that hosts `registry`'s functions and reports to
    /// `orchestrator`. Registers its transport actor.
    pub fn new(
        transport: Transport,
        orchestrator: Option<NodeId>,
        registry: FunctionRegistry,
        limits: ServerLimits,
    ) -> Result<Self, TransportError> {
        let inbox = transport.register(SERVER_ACTOR, INBOX_CAPACITY)?;
        Ok(ServerActor {
            transport,
            ledger: None,
            task_seq: 0,
            orchestrator,
            registry,
            limits,
            instances: HashMap::new(),
            inflight: 0,
            reserved: HashMap::new(),
            inbox: Some(inbox),
            migration: None,
            audit_turn: Arc::default(),
            started_ms: crate::clock::now_ms(),
            checks: OffloadChecks::default(),
            offload_counters: Arc::default(),
            spot_salt: rand::random(),
        })
    }

    /// Checks the results of tasks offloaded from here with `checks`
    /// (and, for the fault suite, cheats as an executor if it says so).
    pub fn with_offload_checks(mut self, checks: OffloadChecks) -> Self {
        self.checks = checks;
        self
    }

    /// The offload checks' counters (shared: read them while it runs).
    pub fn offload_counters(&self) -> Arc<OffloadCounters> {
        self.offload_counters.clone()
    }

    /// Migrates instances through `actor` (the node's migration actor),
    /// writing outgoing snapshots under `dir` (`DATA_DIR/migration`).
    pub fn with_migration(
        mut self,
        actor: Option<Addr<crate::migration::MigrationActor>>,
        dir: PathBuf,
    ) -> Self {
        self.migration = actor.map(|a| (a, dir));
        self
    }

    /// Records offload completions through `ledger`.
    pub fn with_ledger(mut self, ledger: Option<LedgerClient>) -> Self {
        self.ledger = ledger;
        self
    }

    fn load(&self) -> ServerLoad {
        let mut functions = self.registry.names();
        functions.truncate(FUNCTIONS_MAX);
        ServerLoad {
            instances: u32::try_from(self.instances.len()).unwrap_or(u32::MAX),
            instances_max: self.limits.instances_max,
            inflight: self.inflight,
            inflight_max: self.limits.inflight_max,
            memory_bytes: self.instances.len() as u64 * INSTANCE_BYTES_ESTIMATE,
            functions,
            started_ms: self.started_ms,
        }
    }

    fn report(&mut self) {
        let Some(orch) = self.orchestrator else {
            return;
        };
        let body = wire::encode(&OrchestratorOneWay::Load(self.load()));
        let mut heat: Vec<InstanceHeat> = self
            .instances
            .iter_mut()
            .filter(|(_, i)| i.calls > 0)
            .map(|((name, key), i)| InstanceHeat {
                name: name.clone(),
                key: key.clone(),
                calls: std::mem::take(&mut i.calls),
            })
            .collect();
        heat.sort_by_key(|h| std::cmp::Reverse(h.calls));
        heat.truncate(HEAT_MAX);
        let heat = wire::encode(&OrchestratorOneWay::Heat(heat));
        let t = self.transport.clone();
        actix::spawn(async move {
            if let Err(e) = t.send(orch, ORCHESTRATOR_ACTOR, body).await {
                debug!(error = %e, "load report not sent");
            }
            let _ = t.send(orch, ORCHESTRATOR_ACTOR, heat).await;
        });
    }

    /// Frees the slots of accepted tasks whose `RunTask` never came.
    fn expire_reservations(&mut self) {
        let timeout = self.limits.call_timeout;
        let before = self.reserved.len();
        self.reserved.retain(|_, at| at.elapsed() < timeout);
        let expired = u32::try_from(before - self.reserved.len()).unwrap_or(u32::MAX);
        self.inflight = self.inflight.saturating_sub(expired);
    }

    fn handle_request(
        &mut self,
        from: NodeId,
        req: ServerRequest,
    ) -> ResponseActFuture<Self, ServerResponse> {
        self.expire_reservations();
        match req {
            ServerRequest::Invoke { name, key, payload } => {
                self.invoke(from, name, key, Bytes::from(payload))
            }
            ServerRequest::Host {
                name,
                key,
                snapshot,
            } => {
                let r = self.host(name, key, snapshot);
                Box::pin(fut::ready(r))
            }
            ServerRequest::Task { name, payload } => {
                let deadline = Instant::now() + self.limits.call_timeout;
                self.task_until(name, Bytes::from(payload), deadline, TASK_RETRY_FIRST)
            }
            ServerRequest::Accept { task_id, name } => {
                let ok = self.registry.contains(&name)
                    && self.inflight < self.limits.inflight_max
                    && !self.reserved.contains_key(&task_id);
                if ok {
                    self.inflight += 1;
                    self.reserved.insert(task_id, Instant::now());
                }
                Box::pin(fut::ready(if ok {
                    ServerResponse::Accepted
                } else {
                    ServerResponse::Failed(FunctionError::Busy)
                }))
            }
            ServerRequest::RunTask {
                task_id,
                name,
                payload,
                scope,
            } => self.run_task(task_id, name, Bytes::from(payload), scope),
            ServerRequest::Migrate {
                name,
                key,
                destination,
                migration_id,
                tamper,
            } => self.migrate(name, key, destination, migration_id, tamper),
            ServerRequest::Adopt {
                name,
                key,
                migration_id,
            } => self.adopt(name, key, migration_id),
        }
    }

    /// Runs `payload` on a fresh instance of `name` (counted in flight).
    fn run_fresh(&mut self, name: &str, payload: Bytes) -> ResponseActFuture<Self, ServerResponse> {
        let function = match self.registry.activate(name, None) {
            Ok(f) => f,
            Err(e) => return Box::pin(fut::ready(ServerResponse::Failed(e))),
        };
        self.inflight += 1;
        let addr = InstanceActor::new(String::new(), function).start();
        let timeout = self.limits.call_timeout;
        let call = async move {
            let r = match tokio::time::timeout(timeout, addr.send(Call(payload))).await {
                Ok(Ok(Ok(out))) => ServerResponse::Output(out.to_vec()),
                Ok(Ok(Err(e))) => ServerResponse::Failed(e),
                Ok(Err(_)) => ServerResponse::Failed(FunctionError::Transport {
                    detail: "instance stopped".into(),
                }),
                Err(_) => ServerResponse::Failed(FunctionError::Timeout {
                    timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                }),
            };
            let _ = addr.send(Deactivate).await;
            r
        };
        Box::pin(call.into_actor(self).map(|r, act, _| {
            act.inflight = act.inflight.saturating_sub(1);
            r
        }))
    }

    /// A stateless task: run here if a call slot is free, else offload
    /// (MEC task sharing): the orchestrator commits `OffloadRequested` and
    /// `OffloadAccepted` and names the executor; the payload goes from here
    /// to the executor only.
    fn task(&mut self, name: String, payload: Bytes) -> ResponseActFuture<Self, ServerResponse> {
        if !self.registry.contains(&name) {
            return Box::pin(fut::ready(ServerResponse::Failed(
                FunctionError::UnknownFunction { name },
            )));
        }
        if self.inflight < self.limits.inflight_max {
            return self.run_fresh(&name, payload);
        }
        let Some(orch) = self.orchestrator else {
            return Box::pin(fut::ready(ServerResponse::Failed(FunctionError::Busy)));
        };
        // One fresh task id per attempt: an executor that accepted and then
        // failed (crashed, unreachable, busy) leaves its contract on the
        // ledger without an `OffloadCompleted`; the retry is a new contract
        // for the same task digest, so the ledger shows what happened.
        let me = self.transport.id();
        let mut task_ids = Vec::with_capacity(OFFLOAD_ATTEMPTS);
        for _ in 0..OFFLOAD_ATTEMPTS {
            self.task_seq += 1;
            task_ids.push(Hash::of_parts(&[
                me.as_bytes(),
                &self.task_seq.to_be_bytes(),
                &crate::clock::now_micros().to_be_bytes(),
            ]));
        }
        let task_digest = Hash::of_parts(&[name.as_bytes(), b"/", &payload]);
        let t = self.transport.clone();
        let timeout = self.limits.call_timeout;
        // Results are checked against the executor's committed completion
        // when this server can verify proofs (a ledger client with the
        // federation's validator sets); see `offload_check`.
        let verifier = self.ledger.clone().filter(LedgerClient::verifies);
        let counters = self.offload_counters.clone();
        let (spot, spot_salt) = (self.checks.spot_check, self.spot_salt);
        let (name2, payload2) = (name.clone(), payload.clone());
        let work = async move {
            let mut last = FunctionError::NoCapacity { name: name.clone() };
            for task_id in task_ids {
                let done = match offload_once(
                    &t,
                    orch,
                    task_id,
                    task_digest,
                    &name,
                    &payload,
                    timeout,
                )
                .await
                {
                    Ok(done) => done,
                    Err((e, retry)) => {
                        if !retry {
                            return Err(e);
                        }
                        warn!(task = %task_id.short(), error = %e, "offloaded task failed at its executor; offloading again");
                        crate::metrics::Metrics::global().offload("executor_failed");
                        last = e;
                        continue;
                    }
                };
                let (output, proof, executor, task_id, scope) = match done {
                    Offloaded::Done {
                        output,
                        proof,
                        executor,
                        task_id,
                        scope,
                    } => (output, proof, executor, task_id, scope),
                    Offloaded::Answer(r) => return Ok(Checked::Answer(r)),
                };
                let Some(verifier) = &verifier else {
                    return Ok(Checked::Answer(ServerResponse::Output(output)));
                };
                // A result that checks out may still be spot-checked; one
                // whose digest differs from the committed one is rerun here.
                let (committed, spot_check) = match check_result(
                    verifier,
                    &executor,
                    &task_id,
                    scope,
                    &output,
                    proof.as_deref(),
                ) {
                    Ok(committed) => {
                        OffloadCounters::bump(&counters.verified);
                        if !spot_checked(&task_id, spot, &spot_salt) {
                            return Ok(Checked::Answer(ServerResponse::Output(output)));
                        }
                        OffloadCounters::bump(&counters.spot_checks);
                        (committed, true)
                    }
                    Err(Rejection::DigestMismatch {
                        committed,
                        received,
                    }) => {
                        OffloadCounters::bump(&counters.digest_mismatches);
                        crate::metrics::Metrics::global().offload("result_rejected");
                        warn!(task = %task_id.short(), executor = %executor.short(), committed = %committed.short(), received = %received.short(), "offloaded result does not match its committed digest; rejected, running it here");
                        (committed, false)
                    }
                    Err(e @ Rejection::Unproven(_)) => {
                        // No proven completion: not taken; a new contract.
                        OffloadCounters::bump(&counters.unproven);
                        crate::metrics::Metrics::global().offload("result_unproven");
                        warn!(task = %task_id.short(), executor = %executor.short(), error = %e, "offloaded result refused; offloading again");
                        last = FunctionError::ResultRejected {
                            reason: e.to_string(),
                        };
                        continue;
                    }
                };
                return Ok(Checked::Rerun(Rerun {
                    received: output,
                    committed,
                    task_id,
                    scope,
                    executor,
                    spot_check,
                }));
            }
            Err(last)
        };
        Box::pin(work.into_actor(self).then(
            move |r: Result<Checked, FunctionError>,
                  act,
                  _|
                  -> ResponseActFuture<Self, ServerResponse> {
                match r {
                    Err(e) => Box::pin(fut::ready(ServerResponse::Failed(e))),
                    Ok(Checked::Answer(r)) => Box::pin(fut::ready(r)),
                    Ok(Checked::Rerun(rerun)) => act.rerun_and_dispute(name2, payload2, rerun),
                }
            },
        ))
    }

    /// Runs an offloaded task here again after its executor's result was
    /// rejected or for a spot check of a verified one ([`Rerun`]), beyond
    /// this server's call slots (the result is owed to the caller, and a
    /// cheating executor must not be able to deny it). If the own result
    /// differs from the received one, commits `OffloadDisputed` and
    /// answers the own result; a dispute that does not commit fails the
    /// task (this server answers nothing the ledger cannot account for).
    fn rerun_and_dispute(
        &mut self,
        name: String,
        payload: Bytes,
        rerun: Rerun,
    ) -> ResponseActFuture<Self, ServerResponse> {
        let Rerun {
            received,
            committed,
            task_id,
            scope,
            executor,
            spot_check,
        } = rerun;
        let ledger = self.ledger.clone();
        let counters = self.offload_counters.clone();
        Box::pin(self.run_fresh(&name, payload).then(move |r, act, _| {
            let work = async move {
                let own = match r {
                    ServerResponse::Output(own) => own,
                    // A spot check that could not run leaves the verified
                    // result standing.
                    _ if spot_check => return ServerResponse::Output(received),
                    other => return other,
                };
                let received_digest = Hash::of(&received);
                let expected_digest = Hash::of(&own);
                if spot_check {
                    if received_digest == expected_digest {
                        return ServerResponse::Output(received);
                    }
                    OffloadCounters::bump(&counters.spot_mismatches);
                    crate::metrics::Metrics::global().offload("spot_check_failed");
                    warn!(task = %task_id.short(), executor = %executor.short(), committed = %committed.short(), "spot check: the executor's committed result differs from this server's; disputing");
                }
                OffloadCounters::bump(&counters.reexecuted);
                let dispute = Record::OffloadDisputed {
                    task_id,
                    received_digest,
                    expected_digest,
                    scope,
                };
                let Some(ledger) = ledger else {
                    return ServerResponse::Output(own);
                };
                match ledger.submit(dispute).await {
                    Ok(_) => {
                        OffloadCounters::bump(&counters.disputes_recorded);
                        crate::metrics::Metrics::global().offload("disputed");
                        ServerResponse::Output(own)
                    }
                    Err(e) => ServerResponse::Failed(FunctionError::ResultRejected {
                        reason: format!(
                            "executor {} answered a result that is not its committed one, and the dispute was not recorded: {e}",
                            executor.short()
                        ),
                    }),
                }
            };
            work.into_actor(act)
        }))
    }

    /// [`Self::task`], waiting for room while no server anywhere has a
    /// free slot: it asks again after `backoff` (doubling up to
    /// [`TASK_RETRY_MAX`]) until `deadline`. A momentarily full federation
    /// is backpressure (latency), not an error; past the deadline the
    /// caller gets `NoCapacity`.
    fn task_until(
        &mut self,
        name: String,
        payload: Bytes,
        deadline: Instant,
        backoff: Duration,
    ) -> ResponseActFuture<Self, ServerResponse> {
        let again = (name.clone(), payload.clone());
        Box::pin(self.task(name, payload).then(
            move |r, act, _| -> ResponseActFuture<Self, ServerResponse> {
                match r {
                    ServerResponse::Failed(FunctionError::NoCapacity { .. })
                        if Instant::now() + backoff < deadline =>
                    {
                        let (name, payload) = again;
                        let next = (backoff * 2).min(TASK_RETRY_MAX);
                        Box::pin(
                            tokio::time::sleep(backoff)
                                .into_actor(act)
                                .then(move |(), act, _| {
                                    act.task_until(name, payload, deadline, next)
                                }),
                        )
                    }
                    other => Box::pin(fut::ready(other)),
                }
            },
        ))
    }

    /// Executes an accepted offloaded task and commits `OffloadCompleted`
    /// (sha256 of the result) before answering the requester.
    fn run_task(
        &mut self,
        task_id: Hash,
        name: String,
        payload: Bytes,
        scope: Scope,
    ) -> ResponseActFuture<Self, ServerResponse> {
        // The slot reserved on acceptance passes to the run.
        if self.reserved.remove(&task_id).is_some() {
            self.inflight = self.inflight.saturating_sub(1);
        }
        let ledger = self.ledger.clone();
        let adversary = self.checks.adversary;
        let counters = self.offload_counters.clone();
        Box::pin(self.run_fresh(&name, payload).then(move |r, act, _| {
            let work = async move {
                let ServerResponse::Output(out) = r else {
                    return r;
                };
                // The fault suite's cheat: commit or answer a wrong result.
                let (committed, answered) = match adversary {
                    Some(cheat) => {
                        OffloadCounters::bump(&counters.cheats_served);
                        cheat.cheat(out)
                    }
                    None => (out.clone(), out),
                };
                let Some(ledger) = ledger else {
                    return ServerResponse::TaskDone {
                        output: answered,
                        proof: None,
                    };
                };
                let record = Record::OffloadCompleted {
                    task_id,
                    result_digest: Hash::of(&committed),
                    scope,
                };
                let proof = match ledger.submit(record).await {
                    Ok(receipt) => {
                        crate::metrics::Metrics::global().offload("completed");
                        receipt.proof
                    }
                    Err(e) => {
                        warn!(task = %task_id.short(), error = %e, "offload completion not recorded");
                        None
                    }
                };
                ServerResponse::TaskDone {
                    output: answered,
                    proof,
                }
            };
            work.into_actor(act)
        }))
    }

    fn invoke(
        &mut self,
        caller: NodeId,
        name: String,
        key: String,
        payload: Bytes,
    ) -> ResponseActFuture<Self, ServerResponse> {
        let full = self.inflight >= self.limits.inflight_max;
        // An auditable function's provenance: digests taken now, records
        // committed after the call and before the output leaves.
        let audit = match (&self.ledger, self.registry.is_auditable(&name)) {
            (Some(ledger), true) => {
                self.task_seq += 1;
                let call = Hash::of_parts(&[
                    self.transport.id().as_bytes(),
                    &self.task_seq.to_be_bytes(),
                    &crate::clock::now_micros().to_be_bytes(),
                ]);
                Some((
                    (ledger.clone(), self.audit_turn.clone()),
                    entity_name(&name, &key),
                    caller,
                    call,
                    Hash::of_parts(&[call.as_bytes(), b"in", &payload]),
                ))
            }
            _ => None,
        };
        let id = (name, key);
        let Some(inst) = self.instances.get_mut(&id) else {
            return Box::pin(fut::ready(ServerResponse::NotHere));
        };
        // A migrating instance buffers at most a quarter of the server's
        // call slots: a long migration must not starve the other instances.
        let buffer_full = inst
            .frozen
            .as_ref()
            .is_some_and(|b| b.len() as u32 >= (self.limits.inflight_max / 4).max(1));
        if full || buffer_full {
            return Box::pin(fut::ready(ServerResponse::Failed(FunctionError::Busy)));
        }
        inst.inflight += 1;
        inst.calls = inst.calls.saturating_add(1);
        inst.last_used = Instant::now();
        self.inflight += 1;
        let call: std::pin::Pin<Box<dyn std::future::Future<Output = ServerResponse>>> =
            match inst.frozen.as_mut() {
                Some(buffer) => {
                    // Migrating: answered when the migration ends (run here
                    // if it aborts, `NotHere` if it completes).
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    buffer.push((payload, tx));
                    Box::pin(async move { rx.await.unwrap_or(ServerResponse::NotHere) })
                }
                // Queued to the instance now, in the handler: a snapshot
                // asked for later is taken after this call.
                None => Box::pin(call_instance(
                    inst.addr.send(Call(payload)),
                    self.limits.call_timeout,
                )),
            };
        // An auditable call's output leaves only once its provenance is on
        // the ledger (in this server's submission order).
        let call = async move {
            match (call.await, audit) {
                (
                    ServerResponse::Output(out),
                    Some(((ledger, turn), entity, caller, call, input)),
                ) => {
                    // A tokio mutex, held across the submissions on
                    // purpose: it orders them (FIFO), nothing else.
                    let _turn = turn.lock().await;
                    match record_provenance(&ledger, &entity, caller, call, input, &out).await {
                        Ok(()) => ServerResponse::Output(out),
                        Err(reason) => {
                            warn!(%entity, %reason, "auditable call's provenance not recorded; output withheld");
                            ServerResponse::Failed(FunctionError::Audit { reason })
                        }
                    }
                }
                (r, _) => r,
            }
        };
        Box::pin(call.into_actor(self).map(move |r, act, _| {
            act.inflight = act.inflight.saturating_sub(1);
            if let Some(inst) = act.instances.get_mut(&id) {
                inst.inflight = inst.inflight.saturating_sub(1);
                inst.last_used = Instant::now();
            }
            r
        }))
    }

    fn host(&mut self, name: String, key: String, snapshot: Option<Vec<u8>>) -> ServerResponse {
        if let Err(e) = check_names(&name, &key) {
            return ServerResponse::Failed(e);
        }
        let id = (name, key);
        if self.instances.contains_key(&id) {
            return ServerResponse::Hosted;
        }
        if self.instances.len() >= self.limits.instances_max as usize {
            return ServerResponse::Failed(FunctionError::NoCapacity { name: id.0 });
        }
        let function = match self.registry.activate(&id.0, snapshot.as_deref()) {
            Ok(f) => f,
            Err(e) => return ServerResponse::Failed(e),
        };
        debug!(function = %id.0, key = %id.1, restored = snapshot.is_some(), "instance activated");
        let addr = InstanceActor::new(id.1.clone(), function).start();
        self.instances.insert(id, Instance::new(addr));
        ServerResponse::Hosted
    }

    /// Source side of a live migration (see the module doc).
    fn migrate(
        &mut self,
        name: String,
        key: String,
        destination: federact_ledger::record::Site,
        migration_id: Hash,
        tamper: bool,
    ) -> ResponseActFuture<Self, ServerResponse> {
        let failed = |reason: &str| {
            Box::pin(fut::ready(ServerResponse::Failed(
                FunctionError::Placement {
                    reason: reason.to_string(),
                },
            ))) as ResponseActFuture<Self, ServerResponse>
        };
        let Some((migration, dir)) = self.migration.clone() else {
            return failed("this server runs no migration actor");
        };
        let id = (name, key);
        let Some(inst) = self.instances.get_mut(&id) else {
            return Box::pin(fut::ready(ServerResponse::NotHere));
        };
        if inst.frozen.is_some() {
            return failed("the instance is already migrating");
        }
        inst.frozen = Some(Vec::new());
        // Asked now, so it follows every call already queued.
        let snapshot = inst.addr.send(Snapshot);
        let path = dir.join("outgoing").join(format!("{migration_id}.img"));
        let (name, key) = id.clone();
        let image = path.clone();
        let work = async move {
            let state = snapshot
                .await
                .map_err(|_| "the instance stopped".to_string())?;
            let file = image.clone();
            tokio::task::spawn_blocking(move || {
                crate::migration::instance_image::write(&file, &name, &key, &state)
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("snapshot not written: {e}"))?;
            migration
                .send(crate::migration::MigrateSnapshot {
                    migration_id,
                    image,
                    destination,
                    tamper,
                })
                .await
                .map_err(|_| "migration actor stopped".to_string())?
                .map_err(|e| e.to_string())
        };
        Box::pin(work.into_actor(self).map(move |r, act, _| {
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!(error = %e, path = %path.display(), "outgoing snapshot not removed");
                }
            }
            match r {
                Ok(report) if report.completed => {
                    act.release(&id);
                    ServerResponse::Migrated(report)
                }
                Ok(report) => {
                    act.resume(&id);
                    ServerResponse::Migrated(report)
                }
                Err(reason) => {
                    act.resume(&id);
                    ServerResponse::Failed(FunctionError::Placement { reason })
                }
            }
        }))
    }

    /// The migration completed: drop the instance; buffered calls re-locate.
    fn release(&mut self, id: &(String, String)) {
        let Some(inst) = self.instances.remove(id) else {
            return;
        };
        for (_, tx) in inst.frozen.unwrap_or_default() {
            let _ = tx.send(ServerResponse::NotHere);
        }
        inst.addr.do_send(Deactivate);
        debug!(function = %id.0, key = %id.1, "instance migrated away");
    }

    /// The migration aborted: run the buffered calls here, in order.
    fn resume(&mut self, id: &(String, String)) {
        let timeout = self.limits.call_timeout;
        let Some(inst) = self.instances.get_mut(id) else {
            return;
        };
        for (payload, tx) in inst.frozen.take().unwrap_or_default() {
            let call = call_instance(inst.addr.send(Call(payload)), timeout);
            actix::spawn(async move {
                let _ = tx.send(call.await);
            });
        }
        debug!(function = %id.0, key = %id.1, "instance resumed after an aborted migration");
    }

    /// Destination side: host the instance a completed migration brought.
    fn adopt(
        &mut self,
        name: String,
        key: String,
        migration_id: Hash,
    ) -> ResponseActFuture<Self, ServerResponse> {
        let failed = |reason: String| {
            Box::pin(fut::ready(ServerResponse::Failed(
                FunctionError::Placement { reason },
            ))) as ResponseActFuture<Self, ServerResponse>
        };
        if let Err(e) = check_names(&name, &key) {
            return Box::pin(fut::ready(ServerResponse::Failed(e)));
        }
        let Some((migration, _)) = self.migration.clone() else {
            return failed("this server runs no migration actor".into());
        };
        if self.instances.contains_key(&(name.clone(), key.clone())) {
            return failed(format!("{name}/{key} is already hosted here"));
        }
        let registry = self.registry.clone();
        let (n, k) = (name.clone(), key.clone());
        let work = async move {
            let started = Instant::now();
            let report = loop {
                // Answered when the migration ends (no polling while it
                // runs); `None` while this server has not heard of it yet.
                let ended = tokio::time::timeout(
                    ADOPT_WAIT.saturating_sub(started.elapsed()),
                    migration.send(crate::migration::MigrationEnded(migration_id)),
                )
                .await;
                match ended {
                    Ok(Ok(Some(report))) => break report,
                    Ok(Ok(None)) if started.elapsed() <= ADOPT_UNKNOWN_WAIT => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Ok(Ok(None)) => {
                        return Err((None, format!("no migration {} here", migration_id.short())))
                    }
                    Ok(Err(_)) => return Err((None, "migration actor stopped".to_string())),
                    Err(_) => {
                        return Err((
                            None,
                            format!("migration {} still running", migration_id.short()),
                        ))
                    }
                }
            };
            if !report.completed {
                return Err((
                    None,
                    format!(
                        "migration {} did not complete: {}",
                        migration_id.short(),
                        report.reason.unwrap_or_default()
                    ),
                ));
            }
            let path = migration
                .send(crate::migration::ImagePath(report.vm_id))
                .await
                .map_err(|_| (None, "migration actor stopped".to_string()))?;
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|e| (None, format!("image {}: {e}", path.display())))?;
            // From here on a failure means the image can never be adopted:
            // it is removed with the failure (`Some(path)`).
            let unusable = |reason: String| (Some(path.clone()), reason);
            // The file is what the protocol verified, unless replaced since.
            if Hash::of(&bytes) != report.vm_id {
                return Err(unusable("the kept image does not match its vm id".into()));
            }
            let (in_name, in_key, state) =
                crate::migration::instance_image::parse(&bytes).map_err(unusable)?;
            if (in_name.as_str(), in_key.as_str()) != (n.as_str(), k.as_str()) {
                return Err(unusable(format!(
                    "the image holds {in_name}/{in_key}, not {n}/{k}"
                )));
            }
            let function = registry
                .activate(&n, Some(state))
                .map_err(|e| unusable(e.to_string()))?;
            Ok((function, path))
        };
        Box::pin(work.into_actor(self).map(move |r, act, _| {
            let id = (name, key);
            // Removed before the answer (one unlink): whoever hears
            // `Hosted` finds no image left behind.
            let remove = |path: PathBuf| {
                if let Err(e) = std::fs::remove_file(&path) {
                    warn!(error = %e, path = %path.display(), "received image not removed");
                }
            };
            match r {
                Ok((_, path)) if act.instances.contains_key(&id) => {
                    remove(path);
                    ServerResponse::Hosted
                }
                // The image stays: a later adopt may find room.
                Ok(_) if act.instances.len() >= act.limits.instances_max as usize => {
                    ServerResponse::Failed(FunctionError::NoCapacity { name: id.0 })
                }
                Ok((function, path)) => {
                    debug!(function = %id.0, key = %id.1, migration = %migration_id.short(), "instance adopted");
                    let addr = InstanceActor::new(id.1.clone(), function).start();
                    act.instances.insert(id, Instance::new(addr));
                    remove(path);
                    ServerResponse::Hosted
                }
                Err((unusable, reason)) => {
                    warn!(function = %id.0, key = %id.1, %reason, "adoption failed");
                    if let Some(path) = unusable {
                        remove(path);
                    }
                    ServerResponse::Failed(FunctionError::Placement { reason })
                }
            }
        }))
    }

    /// Deactivates instances idle for longer than `limits.idle`: removed
    /// from the table at once (later calls get `NotHere` and re-locate),
    /// then snapshotted, stopped and handed to the orchestrator.
    fn reap_idle(&mut self) {
        let now = Instant::now();
        let idle = self.limits.idle;
        let gone: Vec<(String, String)> = self
            .instances
            .iter()
            .filter(|(_, i)| {
                i.inflight == 0 && i.frozen.is_none() && now.duration_since(i.last_used) >= idle
            })
            .map(|(k, _)| k.clone())
            .collect();
        for id in gone {
            let Some(inst) = self.instances.remove(&id) else {
                continue;
            };
            let t = self.transport.clone();
            let orch = self.orchestrator;
            actix::spawn(async move {
                let snapshot = inst.addr.send(Snapshot).await.unwrap_or_default();
                let _ = inst.addr.send(Deactivate).await;
                let (name, key) = id;
                if snapshot.len() > SNAPSHOT_BYTES_MAX {
                    warn!(function = %name, key = %key, bytes = snapshot.len(), "snapshot too large: state dropped");
                }
                let snapshot = if snapshot.len() > SNAPSHOT_BYTES_MAX {
                    Vec::new()
                } else {
                    snapshot
                };
                let Some(orch) = orch else { return };
                let body = wire::encode(&OrchestratorRequest::Deactivated {
                    name,
                    key,
                    snapshot,
                });
                if let Err(e) = t
                    .request(orch, ORCHESTRATOR_ACTOR, body, Duration::from_secs(30))
                    .await
                {
                    warn!(error = %e, "deactivation not acknowledged");
                }
            });
        }
    }
}

impl Actor for ServerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(INBOX_CAPACITY);
        if let Some(inbox) = self.inbox.take() {
            ctx.add_stream(crate::inbox_stream(inbox));
        }
        self.report();
        ctx.run_interval(self.limits.report_every, |act, _| {
            act.expire_reservations();
            act.report()
        });
        let tick = (self.limits.idle / 4).max(Duration::from_millis(20));
        ctx.run_interval(tick, |act, _| act.reap_idle());
    }
}

impl StreamHandler<Incoming> for ServerActor {
    fn handle(&mut self, item: Incoming, ctx: &mut Context<Self>) {
        match item {
            Incoming::Request {
                from,
                body,
                responder,
                trace,
                ..
            } => match wire::decode::<ServerRequest>(&body) {
                // Only the cloud's orchestrator places instances here (the
                // instance table is bounded by `instances_max`, and only
                // placements recorded on the ledger may fill it) or asks it
                // to accept an offload (an acceptance holds a call slot).
                Ok(
                    ServerRequest::Host { .. }
                    | ServerRequest::Migrate { .. }
                    | ServerRequest::Adopt { .. }
                    | ServerRequest::Accept { .. },
                ) if Some(from) != self.orchestrator => {
                    let r = ServerResponse::Failed(FunctionError::Placement {
                        reason: "only the cloud's orchestrator places instances".into(),
                    });
                    actix::spawn(async move {
                        let _ = responder.respond(wire::encode(&r)).await;
                    });
                }
                Ok(req) => {
                    let span = request_span(&req, &self.transport, &trace);
                    let f = self.handle_request(from, req).map(move |r, _, _| {
                        if let ServerResponse::Failed(e) = &r {
                            crate::telemetry::record_error(&tracing::Span::current(), e);
                        }
                        actix::spawn(async move {
                            let _ = responder.respond(wire::encode(&r)).await;
                        });
                    });
                    ctx.spawn(crate::telemetry::in_span(f, span));
                }
                Err(e) => {
                    let msg = format!("malformed request: {e}");
                    actix::spawn(async move {
                        let _ = responder.fail(&msg).await;
                    });
                }
            },
            Incoming::OneWay { .. } => {}
            Incoming::Transfer { receiver, .. } => receiver.reject(),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// What an executor answered to an offloaded task.
enum Offloaded {
    /// A result, to be checked against the completion's proof.
    Done {
        output: Vec<u8>,
        proof: Option<Box<federact_ledger::proof::CrossChainProof>>,
        executor: NodeId,
        task_id: Hash,
        scope: Scope,
    },
    /// Anything else (e.g. the function failed), passed on as it is.
    Answer(ServerResponse),
}

/// An offloaded task's result after its check.
enum Checked {
    /// Passed on to the caller.
    Answer(ServerResponse),
    /// To be run here too ([`ServerActor::rerun_and_dispute`]).
    Rerun(Rerun),
}

/// An offloaded result the requester runs again: one that does not match
/// its committed digest (rejected), or a verified one picked for a spot
/// check.
struct Rerun {
    /// What the executor answered.
    received: Vec<u8>,
    /// The digest its completion committed.
    committed: Hash,
    task_id: Hash,
    scope: Scope,
    executor: NodeId,
    /// A spot check (the result was verified) rather than a rejection.
    spot_check: bool,
}

/// Offload attempts per task (each a new contract) when accepted
/// executors fail.
const OFFLOAD_ATTEMPTS: usize = 3;

/// One offload attempt: the orchestrator commits the contract and names an
/// executor, which runs the task. `Err((e, true))`: the executor failed
/// after the contract (unreachable, crashed, busy) and another attempt may
/// succeed; `Err((e, false))`: final (no capacity, the function failed).
async fn offload_once(
    t: &Transport,
    orch: NodeId,
    task_id: Hash,
    task_digest: Hash,
    name: &str,
    payload: &Bytes,
    timeout: Duration,
) -> Result<Offloaded, (FunctionError, bool)> {
    let req = OrchestratorRequest::Offload {
        task_id,
        task_digest,
        name: name.to_string(),
    };
    let reply = t
        .request(orch, ORCHESTRATOR_ACTOR, wire::encode(&req), INVOKE_TIMEOUT)
        .await
        .map_err(|e| (transport_error(e), false))?;
    let (executor, task_id, scope) = match wire::decode::<OrchestratorResponse>(&reply) {
        Ok(OrchestratorResponse::Located(e)) => (e, task_id, Scope::Local),
        Ok(OrchestratorResponse::OffloadedAbroad { executor, task_id }) => {
            (executor, task_id, Scope::Inter)
        }
        Ok(OrchestratorResponse::Failed(e)) => return Err((e, false)),
        Ok(_) | Err(_) => {
            return Err((
                FunctionError::Transport {
                    detail: "unexpected answer to offload".into(),
                },
                false,
            ))
        }
    };
    debug!(task = %task_id.short(), executor = %executor.short(), "task offloaded");
    let run = ServerRequest::RunTask {
        task_id,
        name: name.to_string(),
        payload: payload.to_vec(),
        scope,
    };
    let reply = t
        .request(
            executor,
            SERVER_ACTOR,
            wire::encode(&run),
            timeout + INVOKE_TIMEOUT,
        )
        .await
        .map_err(|e| (transport_error(e), true))?;
    match wire::decode::<ServerResponse>(&reply) {
        Ok(ServerResponse::Failed(FunctionError::Busy)) => Err((FunctionError::Busy, true)),
        Ok(ServerResponse::TaskDone { output, proof }) => Ok(Offloaded::Done {
            output,
            proof,
            executor,
            task_id,
            scope,
        }),
        // An executor that answers without a proof (no ledger).
        Ok(ServerResponse::Output(output)) => Ok(Offloaded::Done {
            output,
            proof: None,
            executor,
            task_id,
            scope,
        }),
        Ok(r) => Ok(Offloaded::Answer(r)),
        Err(e) => Err((
            FunctionError::Transport {
                detail: e.to_string(),
            },
            false,
        )),
    }
}

/// Commits the provenance of one auditable call, in order (each record's
/// rule needs the one before it committed): the input left its producer
/// (the caller), the call used it, the call produced the output.
///
/// The call is a PROV activity named `function/key#CALL` (`CALL` a fresh
/// hash per call), and both digests are salted with it:
/// `sha256(CALL ‖ "in" ‖ input)` and `sha256(CALL ‖ "out" ‖ output)` (an
/// echo's input and output are still two items). So every call's data are
/// distinct items (the
/// chain rules let a data item leave its producer once, identical payloads
/// are common, and a refused duplicate would only show after the
/// gateway's commit deadline), and an auditor holding the bytes and the
/// record recomputes the digest.
async fn record_provenance(
    ledger: &LedgerClient,
    entity: &str,
    caller: NodeId,
    call: Hash,
    input: Hash,
    output: &[u8],
) -> Result<(), String> {
    let producer = caller.to_string();
    let activity = format!("{entity}#{call}");
    let records = [
        Record::ProvData {
            data_digest: input,
            generated_by: producer.clone(),
            used_by: None,
        },
        Record::ProvData {
            data_digest: input,
            generated_by: producer,
            used_by: Some(activity.clone()),
        },
        Record::ProvData {
            data_digest: Hash::of_parts(&[call.as_bytes(), b"out", output]),
            generated_by: activity,
            used_by: None,
        },
    ];
    for record in records {
        ledger.submit(record).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The span of a request a server handles: `invoke` (function, key,
/// server), `task`, `accept`, `run_task` (offloaded work) or `host`;
/// continuing the caller's trace. Disabled when the caller was not tracing
/// (untraced calls cost nothing here).
fn request_span(
    req: &ServerRequest,
    transport: &Transport,
    cx: &federact_federation::trace::TraceContext,
) -> tracing::Span {
    if cx.is_empty() {
        return tracing::Span::none();
    }
    let server = transport.id().short();
    let span = match req {
        ServerRequest::Invoke { name, key, .. } => {
            tracing::info_span!("server.invoke", function = name.as_str(), key = key.as_str(), server = %server)
        }
        ServerRequest::Host { name, key, .. } => {
            tracing::info_span!("server.host", function = name.as_str(), key = key.as_str(), server = %server)
        }
        ServerRequest::Task { name, .. } => {
            tracing::info_span!("server.task", function = name.as_str(), server = %server)
        }
        ServerRequest::Accept { task_id, name } => {
            tracing::info_span!("server.accept", task.id = %task_id, function = name.as_str(), server = %server)
        }
        ServerRequest::RunTask { task_id, name, .. } => {
            tracing::info_span!("server.run_task", task.id = %task_id, function = name.as_str(), server = %server)
        }
        ServerRequest::Migrate {
            name,
            key,
            migration_id,
            ..
        } => {
            tracing::info_span!("server.migrate", function = name.as_str(), key = key.as_str(), migration.id = %migration_id, server = %server)
        }
        ServerRequest::Adopt {
            name,
            key,
            migration_id,
        } => {
            tracing::info_span!("server.adopt", function = name.as_str(), key = key.as_str(), migration.id = %migration_id, server = %server)
        }
    };
    crate::telemetry::continue_trace(span, cx)
}

/// A request from this node's own process (no QUIC hop).
#[derive(Message)]
#[rtype(result = "ServerResponse")]
pub struct LocalRequest(pub ServerRequest);

impl Handler<LocalRequest> for ServerActor {
    type Result = ResponseActFuture<Self, ServerResponse>;
    fn handle(&mut self, msg: LocalRequest, _: &mut Context<Self>) -> Self::Result {
        let me = self.transport.id();
        self.handle_request(me, msg.0)
    }
}

/// A local request sent with the caller's span ([`Traced`]): handled like
/// [`LocalRequest`], in a child span, so what the server does for it (an
/// offload request to the orchestrator, ledger submissions) continues the
/// caller's trace across the mailbox.
///
/// [`Traced`]: crate::telemetry::Traced
impl Handler<crate::telemetry::Traced<LocalRequest>> for ServerActor {
    type Result = ResponseActFuture<Self, ServerResponse>;
    fn handle(
        &mut self,
        msg: crate::telemetry::Traced<LocalRequest>,
        _: &mut Context<Self>,
    ) -> Self::Result {
        let me = self.transport.id();
        if msg.span.is_disabled() {
            return self.handle_request(me, msg.msg.0);
        }
        let span =
            tracing::info_span!(parent: &msg.span, "server.local", request = msg.msg.0.kind());
        let f = {
            let _entered = span.enter();
            self.handle_request(me, msg.msg.0)
        };
        Box::pin(crate::telemetry::in_span(f, span))
    }
}

/// The server's current load.
#[derive(Message)]
#[rtype(result = "ServerLoad")]
pub struct Load;

impl Handler<Load> for ServerActor {
    type Result = MessageResult<Load>;
    fn handle(&mut self, _: Load, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.load())
    }
}

impl Handler<crate::node::Shutdown> for ServerActor {
    type Result = ();
    fn handle(&mut self, _: crate::node::Shutdown, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Awaits a call queued to an instance, bounded by `timeout`.
async fn call_instance(
    request: actix::dev::Request<InstanceActor, Call>,
    timeout: Duration,
) -> ServerResponse {
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(Ok(out))) => ServerResponse::Output(out.to_vec()),
        Ok(Ok(Err(e))) => ServerResponse::Failed(e),
        Ok(Err(_)) => ServerResponse::NotHere,
        Err(_) => ServerResponse::Failed(FunctionError::Timeout {
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        }),
    }
}

/// Most cached instance locations; the cache is cleared when full.
const LOCATION_CACHE_MAX: usize = 65_536;
/// How long an invocation may take by default (a first call waits for two
/// ledger commits).
pub const INVOKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Calls function instances from any node of a cloud: asks the cloud's
/// orchestrator where an instance lives (placing it on first call), caches
/// the answer, and calls the server. Cheap to clone.
#[derive(Clone)]
pub struct Invoker {
    transport: Transport,
    orchestrator: NodeId,
    local_server: Option<Addr<ServerActor>>,
    local_orchestrator: Option<Addr<crate::orchestrator::OrchestratorActor>>,
    cache: Arc<Mutex<HashMap<(String, String), NodeId>>>,
    timeout: Duration,
}

fn transport_error(e: TransportError) -> FunctionError {
    match e {
        TransportError::Timeout { timeout_ms, .. } => FunctionError::Timeout { timeout_ms },
        e => FunctionError::Transport {
            detail: e.to_string(),
        },
    }
}

impl Invoker {
    /// An invoker on `transport` whose cloud's orchestrator is `orchestrator`;
    /// `local_*` short-circuit QUIC when the target is this node.
    pub fn new(
        transport: Transport,
        orchestrator: NodeId,
        local_server: Option<Addr<ServerActor>>,
        local_orchestrator: Option<Addr<crate::orchestrator::OrchestratorActor>>,
    ) -> Self {
        Invoker {
            transport,
            orchestrator,
            local_server,
            local_orchestrator,
            cache: Arc::new(Mutex::new(HashMap::new())),
            timeout: INVOKE_TIMEOUT,
        }
    }

    /// An invoker for tools (`federact invoke`): a fresh endpoint on an
    /// OS-chosen port of the node's listen address, authenticated with the
    /// node's key, talking to the node's cloud's orchestrator. Must run
    /// inside an actix `System`. While it lives, peers see a second
    /// connection from that node; use a dedicated client node where that
    /// matters.
    pub async fn connect(
        config: &federact_config::NodeConfig,
        key: federact_config::NodeKey,
    ) -> Result<Invoker, crate::ActorError> {
        let fed = config.federation();
        let spec = config.spec();
        let orchestrator = fed
            .orchestrator(spec.cloud())
            .map(|o| o.id())
            .ok_or_else(|| crate::ActorError::Config {
                detail: format!("cloud `{}` has no orchestrator", spec.cloud()),
            })?;
        let membership = federact_federation::Membership::from_federation(fed);
        let options = federact_federation::TransportOptions::from(*fed.transport());
        let addr = std::net::SocketAddr::new(config.bind_addr().ip(), 0);
        let transport = Transport::bind(&key, membership, options, addr).await?;
        Ok(Invoker::new(transport, orchestrator, None, None))
    }

    /// The invoker's transport (e.g. to build a [`LedgerClient`] or start
    /// a migration with the same endpoint).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Closes the invoker's endpoint (for [`Invoker::connect`]).
    pub async fn close(&self) {
        self.transport.close().await;
    }

    /// Changes how long an invocation may take.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn cached(&self, id: &(String, String)) -> Option<NodeId> {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .copied()
    }

    fn remember(&self, id: (String, String), server: Option<NodeId>) {
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match server {
            Some(s) => {
                if c.len() >= LOCATION_CACHE_MAX {
                    c.clear();
                }
                c.insert(id, s);
            }
            None => {
                c.remove(&id);
            }
        }
    }

    /// Calls instance `key` of function `name` with `payload`, activating
    /// it on first call. Errors are typed: the function's own failure,
    /// capacity, timeout, transport.
    ///
    /// Runs in an `invoke` span (function, key); the call to the server
    /// carries it across QUIC.
    pub async fn invoke(
        &self,
        name: &str,
        key: &str,
        payload: impl Into<Bytes>,
    ) -> Result<Bytes, FunctionError> {
        use tracing::Instrument;
        let span = crate::telemetry::sampled_root(|| {
            tracing::info_span!("invoke", federact.root = true, function = name, key = key)
        });
        let result = self
            .invoke_untraced(name, key, payload.into())
            .instrument(span.clone())
            .await;
        if let Err(e) = &result {
            crate::telemetry::record_error(&span, e);
        }
        result
    }

    async fn invoke_untraced(
        &self,
        name: &str,
        key: &str,
        payload: Bytes,
    ) -> Result<Bytes, FunctionError> {
        check_names(name, key)?;
        let deadline = Instant::now() + self.timeout;
        let id = (name.to_string(), key.to_string());
        let timed_out = || FunctionError::Timeout {
            timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(timed_out());
            }
            let server = match self.cached(&id) {
                Some(s) => s,
                None => match self.locate(name, key, left).await {
                    Ok(s) => {
                        self.remember(id.clone(), Some(s));
                        s
                    }
                    // Servers report their load shortly after start: retry.
                    Err(FunctionError::NoCapacity { .. }) if left > Duration::from_millis(100) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            let req = ServerRequest::Invoke {
                name: id.0.clone(),
                key: id.1.clone(),
                payload: payload.to_vec(),
            };
            match self.call_server(server, req, left).await? {
                ServerResponse::Output(out) => return Ok(Bytes::from(out)),
                ServerResponse::Failed(e) => return Err(e),
                ServerResponse::NotHere => {
                    // Deactivated meanwhile: ask the orchestrator again.
                    self.remember(id.clone(), None);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                ServerResponse::Hosted
                | ServerResponse::Accepted
                | ServerResponse::Migrated(_)
                | ServerResponse::TaskDone { .. } => {
                    return Err(FunctionError::Transport {
                        detail: "unexpected answer".into(),
                    })
                }
            }
        }
    }

    /// Whether the cached location of instance (`name`, `key`) is this
    /// node (`false` when not cached).
    pub fn is_local(&self, name: &str, key: &str) -> bool {
        self.cached(&(name.to_string(), key.to_string())) == Some(self.transport.id())
    }

    /// Runs a stateless task of function `name` on this node's server
    /// (which offloads it when saturated). Fails if this node is not a server.
    pub async fn task(
        &self,
        name: &str,
        payload: impl Into<Bytes>,
    ) -> Result<Bytes, FunctionError> {
        if self.local_server.is_none() {
            return Err(FunctionError::Transport {
                detail: "tasks run on a server node".into(),
            });
        }
        self.task_at(self.transport.id(), name, payload).await
    }

    /// Hands a stateless task of function `name` to server `server` (an
    /// edge device's request reaching its server): the server runs it, or
    /// offloads it through its orchestrator when saturated.
    pub async fn task_at(
        &self,
        server: NodeId,
        name: &str,
        payload: impl Into<Bytes>,
    ) -> Result<Bytes, FunctionError> {
        use tracing::Instrument;
        let span = crate::telemetry::sampled_root(|| {
            tracing::info_span!("task", federact.root = true, function = name)
        });
        let result = self
            .task_untraced(server, name, payload.into())
            .instrument(span.clone())
            .await;
        if let Err(e) = &result {
            crate::telemetry::record_error(&span, e);
        }
        result
    }

    async fn task_untraced(
        &self,
        server: NodeId,
        name: &str,
        payload: Bytes,
    ) -> Result<Bytes, FunctionError> {
        check_names(name, "task")?;
        let req = ServerRequest::Task {
            name: name.to_string(),
            payload: payload.to_vec(),
        };
        match self.call_server(server, req, self.timeout).await? {
            ServerResponse::Output(out) => Ok(Bytes::from(out)),
            ServerResponse::Failed(e) => Err(e),
            other => Err(FunctionError::Transport {
                detail: format!("unexpected answer {other:?}"),
            }),
        }
    }

    async fn call_server(
        &self,
        server: NodeId,
        req: ServerRequest,
        timeout: Duration,
    ) -> Result<ServerResponse, FunctionError> {
        if server == self.transport.id() {
            if let Some(local) = &self.local_server {
                return local
                    .send(crate::telemetry::Traced::new(LocalRequest(req)))
                    .await
                    .map_err(|_| FunctionError::Transport {
                        detail: "local server stopped".into(),
                    });
            }
        }
        let reply = self
            .transport
            .request(server, SERVER_ACTOR, wire::encode(&req), timeout)
            .await
            .map_err(transport_error)?;
        wire::decode::<ServerResponse>(&reply).map_err(|e| FunctionError::Transport {
            detail: e.to_string(),
        })
    }

    async fn locate(
        &self,
        name: &str,
        key: &str,
        timeout: Duration,
    ) -> Result<NodeId, FunctionError> {
        let req = OrchestratorRequest::Locate {
            name: name.to_string(),
            key: key.to_string(),
        };
        let resp = match &self.local_orchestrator {
            Some(o) => o
                .send(crate::orchestrator::LocalOrchestratorRequest(req))
                .await
                .map_err(|_| FunctionError::Transport {
                    detail: "local orchestrator stopped".into(),
                })?,
            None => {
                let reply = self
                    .transport
                    .request(
                        self.orchestrator,
                        ORCHESTRATOR_ACTOR,
                        wire::encode(&req),
                        timeout,
                    )
                    .await
                    .map_err(transport_error)?;
                wire::decode::<OrchestratorResponse>(&reply).map_err(|e| {
                    FunctionError::Transport {
                        detail: e.to_string(),
                    }
                })?
            }
        };
        match resp {
            OrchestratorResponse::Located(s) => Ok(s),
            OrchestratorResponse::Failed(e) => Err(e),
            _ => Err(FunctionError::Transport {
                detail: "unexpected answer".into(),
            }),
        }
    }
}
