//! # federact-actors
//!
//! The actix actors of the four node roles (server, orchestrator, gateway,
//! validator), driving the pure cores of `federact-ledger` over the transport
//! of `federact-federation`.

pub mod metrics;
pub mod telemetry;
