//! Shared helpers for the transport integration tests: local clusters on
//! `127.0.0.1:0`, echo actors, a raw quinn client that can speak the framing
//! wrongly.

#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use federact_config::{NodeId, NodeKey};
use federact_federation::{Incoming, Member, Membership, Transport, TransportOptions};

pub const TIMEOUT: Duration = Duration::from_secs(10);

pub fn key(i: u8) -> NodeKey {
    NodeKey::from_seed(&[i.wrapping_add(1); 32])
}

pub struct Cluster {
    pub keys: Vec<NodeKey>,
    pub nodes: Vec<Transport>,
    pub membership: Membership,
}

impl Cluster {
    pub fn id(&self, i: usize) -> NodeId {
        self.keys[i].id()
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.membership.get(&self.id(i)).unwrap().addr
    }
}

/// Binds `n` sockets first (so every address is known), then starts one
/// transport per socket with the full membership.
pub async fn cluster(n: usize, options: TransportOptions) -> Cluster {
    let keys: Vec<NodeKey> = (0..n as u8).map(key).collect();
    let sockets: Vec<UdpSocket> = (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let membership =
        Membership::new(
            keys.iter()
                .zip(&sockets)
                .enumerate()
                .map(|(i, (k, s))| Member {
                    id: k.id(),
                    addr: s.local_addr().unwrap(),
                    name: format!("n{i}"),
                }),
        );
    let mut nodes = Vec::new();
    for (k, s) in keys.iter().zip(sockets) {
        nodes.push(
            Transport::bind_socket(k, membership.clone(), options.clone(), s)
                .await
                .unwrap(),
        );
    }
    Cluster {
        keys,
        nodes,
        membership,
    }
}

/// Registers `actor` on `t` and answers every request with
/// `prefix ++ body`; one-way bodies are forwarded to the returned channel.
pub fn echo(
    t: &Transport,
    actor: &str,
    prefix: &'static [u8],
) -> tokio::sync::mpsc::UnboundedReceiver<(NodeId, Bytes)> {
    let mut inbox = t.register(actor, 1024).unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(item) = inbox.recv().await {
            match item {
                Incoming::Request {
                    body, responder, ..
                } => {
                    let mut out = prefix.to_vec();
                    out.extend_from_slice(&body);
                    tokio::spawn(async move {
                        let _ = responder.respond(out.into()).await;
                    });
                }
                Incoming::OneWay { from, body, .. } => {
                    let _ = tx.send((from, body));
                }
                Incoming::Transfer { receiver, .. } => receiver.reject(),
            }
        }
    });
    rx
}

/// Polls `cond` until it holds or `TIMEOUT` passes (for counters updated by
/// background tasks: no fixed sleep decides the outcome).
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A TLS client that accepts any server and presents `key`'s certificate
/// (or none), offering `alpn`: for talking to a node outside the transport's
/// rules.
pub fn raw_client(key: Option<&NodeKey>, alpn: &[u8]) -> quinn::Endpoint {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
    let mut tls = match key {
        Some(key) => {
            let pkcs8 = PrivatePkcs8KeyDer::from(key.to_pkcs8_der());
            let pair =
                rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519).unwrap();
            let cert = rcgen::CertificateParams::new(vec!["x".into()])
                .unwrap()
                .self_signed(&pair)
                .unwrap();
            let der: CertificateDer<'static> = cert.der().clone();
            builder
                .with_client_auth_cert(vec![der], PrivateKeyDer::Pkcs8(pkcs8))
                .unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![alpn.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    endpoint
}

#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("tls12".into()))
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        vec![rustls::SignatureScheme::ED25519]
    }
}
