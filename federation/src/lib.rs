//! # federact-federation
//!
//! The QUIC transport between federact nodes: one quinn endpoint per node,
//! mutual TLS with certificates made from node ed25519 keys and checked
//! against the federation membership, framed envelopes, request/response,
//! one-way messages, bulk transfers and W3C trace-context propagation.
//!
//! This crate knows nothing of actix or the ledger.
