//! A client of a cloud's gateway, for the cloud's actors and for tools:
//! sign a record, submit it, and wait for the receipt with its proof.

use std::time::Duration;

use federact_config::{NodeId, NodeKey};
use federact_federation::Transport;
use federact_ledger::record::Record;
use federact_ledger::tx::Transaction;

use crate::clock::{now_micros, now_ms};
use crate::error::ActorError;
use crate::wire::{self, GatewayRequest, GatewayResponse, Receipt};

/// How long `submit` waits for a commit by default.
pub const SUBMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Signs and submits records through one gateway.
#[derive(Clone)]
pub struct LedgerClient {
    transport: Transport,
    key: NodeKey,
    gateway: NodeId,
    nonce: std::sync::Arc<std::sync::atomic::AtomicU64>,
    timeout: Duration,
}

impl LedgerClient {
    /// A client that signs as `key` and talks to `gateway` over `transport`.
    pub fn new(transport: Transport, key: NodeKey, gateway: NodeId) -> Self {
        LedgerClient {
            transport,
            key,
            gateway,
            nonce: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0)),
            timeout: SUBMIT_TIMEOUT,
        }
    }

    /// Changes how long a submit waits.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Signs `record` with the next nonce (microseconds since the epoch, so
    /// a restarted author never reuses one).
    pub fn sign(&self, record: Record) -> Transaction {
        use std::sync::atomic::Ordering;
        let now = now_micros();
        let prev = self.nonce.fetch_max(now, Ordering::Relaxed);
        let nonce = if prev >= now {
            self.nonce.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            now
        };
        Transaction::sign(record, &self.key, nonce, now_ms(), crate::trace_id_now())
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
        let tx = {
            let _entered = span.enter();
            self.sign(record)
        };
        if !span.is_disabled() {
            span.record("tx.id", tracing::field::display(tx.id()));
        }
        let result = self.submit_tx(tx, true).instrument(span.clone()).await;
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
    pub async fn submit_tx(&self, tx: Transaction, wait: bool) -> Result<Receipt, ActorError> {
        let body = wire::encode(&GatewayRequest::Submit { tx, wait });
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
}
