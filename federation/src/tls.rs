//! Mutual TLS 1.3 against the membership: certificates made from node keys,
//! and the two allow-list verifiers.
//!
//! There is no CA. A node's certificate is self-signed by its ed25519 node
//! key; the TLS handshake's `CertificateVerify` proves the peer holds the
//! private key of the certificate's public key, and that public key *is* the
//! peer's [`NodeId`]. So verification is: parse the key out of the
//! certificate, then
//! - server side (`MemberVerifier`): the client's key must be a member;
//! - client side (`PeerVerifier`): the server's key must be exactly the
//!   node we dialed (and a member).
//!
//! Validity dates and names are ignored on purpose: identity is the key, and
//! revocation is removal from the membership. Session resumption is disabled
//! on both sides so every connection runs both verifiers against the current
//! membership (a resumed TLS 1.3 session would skip them). Only the ring
//! provider is used (see DEPENDENCIES.md, gotcha 1).

use std::sync::{Arc, Mutex, RwLock};

use federact_config::{NodeId, NodeKey};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::error::{RefusalReason, TransportError};
use crate::membership::Membership;

/// Inbound handshakes in progress at once, per endpoint.
pub const MAX_INCOMING_HANDSHAKES: usize = 1024;

/// The one ALPN protocol id federact speaks.
pub const ALPN: &[u8] = b"federact/1";

/// The membership as shared with the verifiers (swapped whole on update).
pub(crate) type SharedMembership = Arc<RwLock<Arc<Membership>>>;

pub(crate) fn current(m: &SharedMembership) -> Arc<Membership> {
    m.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// DER prefix of an ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE {
/// SEQUENCE { OID 1.3.101.112 }, BIT STRING (0 unused bits) } + 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The node id a certificate speaks for: its ed25519 public key.
pub fn node_id_of(cert: &CertificateDer<'_>) -> Result<NodeId, RefusalReason> {
    let ee = webpki::EndEntityCert::try_from(cert).map_err(|_| RefusalReason::BadCertificate)?;
    let spki = ee.subject_public_key_info();
    let raw: &[u8] = spki.as_ref();
    match raw.split_at_checked(ED25519_SPKI_PREFIX.len()) {
        Some((prefix, key)) if prefix == ED25519_SPKI_PREFIX => {
            NodeId::from_slice(key).map_err(|_| RefusalReason::BadCertificate)
        }
        _ => Err(RefusalReason::BadCertificate),
    }
}

/// A node's TLS identity: its certificate and private key.
pub(crate) struct Identity {
    pub(crate) cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Identity {
    /// Makes a fresh self-signed certificate for `key`. A random serial
    /// number makes each process instance's certificate distinct, which is
    /// how a peer tells a restarted node from a duplicate connection.
    pub(crate) fn new(key: &NodeKey) -> Result<Self, TransportError> {
        let tls = |e: rcgen::Error| TransportError::Tls(e.to_string());
        let pkcs8 = PrivatePkcs8KeyDer::from(key.to_pkcs8_der());
        let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)
            .map_err(tls)?;
        let mut params = rcgen::CertificateParams::new(vec!["federact".to_owned()]).map_err(tls)?;
        let mut serial = vec![0u8; 16];
        rand::fill(&mut serial[..]);
        if let Some(first) = serial.first_mut() {
            *first &= 0x7f; // positive INTEGER
        }
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        let cert = params.self_signed(&pair).map_err(tls)?;
        Ok(Identity {
            cert: cert.der().clone(),
            key: pkcs8,
        })
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(e: impl std::fmt::Display) -> TransportError {
    TransportError::Tls(e.to_string())
}

/// Server side: accepts a client certificate whose key is a member.
#[derive(Debug)]
pub(crate) struct MemberVerifier {
    membership: SharedMembership,
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for MemberVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Refusals are counted and logged with the peer address by the accept
        // loop, which sees the resulting TLS alert; the verifier has no
        // address to log.
        let id = node_id_of(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if current(&self.membership).contains(&id) {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is enabled, so rustls never calls this.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Client side: accepts only the node that was dialed. Remembers the key
/// that answered instead, for [`TransportError::WrongPeer`].
#[derive(Debug)]
pub(crate) struct PeerVerifier {
    expected: NodeId,
    membership: SharedMembership,
    algs: WebPkiSupportedAlgorithms,
    pub(crate) found: Mutex<Option<Result<NodeId, RefusalReason>>>,
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let found = node_id_of(end_entity);
        *self.found.lock().unwrap_or_else(|p| p.into_inner()) = Some(found);
        match found {
            Ok(id) if id == self.expected && current(&self.membership).contains(&id) => {
                Ok(ServerCertVerified::assertion())
            }
            Ok(_) => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
            Err(_) => Err(rustls::Error::InvalidCertificate(
                CertificateError::BadEncoding,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The endpoint's server configuration.
pub(crate) fn server_config(
    identity: &Identity,
    membership: SharedMembership,
    transport: Arc<quinn::TransportConfig>,
) -> Result<quinn::ServerConfig, TransportError> {
    let provider = provider();
    let verifier = Arc::new(MemberVerifier {
        membership,
        algs: provider.signature_verification_algorithms,
    });
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![identity.cert.clone()], identity.key())
        .map_err(tls_err)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    tls.max_early_data_size = 0;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(tls_err)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport);
    // A bound on handshakes in progress (quinn's default is 65536): members
    // are few, anything beyond this is noise or an attack.
    config.max_incoming(MAX_INCOMING_HANDSHAKES);
    Ok(config)
}

/// A client configuration that accepts only `expected`; the verifier is
/// returned so the dialer can tell who answered instead.
pub(crate) fn client_config(
    identity: &Identity,
    expected: NodeId,
    membership: SharedMembership,
    transport: Arc<quinn::TransportConfig>,
) -> Result<(quinn::ClientConfig, Arc<PeerVerifier>), TransportError> {
    let provider = provider();
    let verifier = Arc::new(PeerVerifier {
        expected,
        membership,
        algs: provider.signature_verification_algorithms,
        found: Mutex::new(None),
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_client_auth_cert(vec![identity.cert.clone()], identity.key())
        .map_err(tls_err)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.resumption = rustls::client::Resumption::disabled();
    tls.enable_early_data = false;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(tls_err)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport);
    Ok((config, verifier))
}

/// Maps a failed handshake (seen by the side that refused) to a reason, from
/// the TLS alert quinn reports (`CRYPTO_ERROR` = 0x100 + alert).
pub(crate) fn refusal_reason(err: &quinn::ConnectionError) -> RefusalReason {
    let quinn::ConnectionError::TransportError(e) = err else {
        return RefusalReason::Other;
    };
    let code = u64::from(e.code);
    match code.checked_sub(0x100) {
        // access_denied: ApplicationVerificationFailure from our verifiers.
        Some(49) => RefusalReason::UnknownKey,
        // decode_error / bad_certificate / unsupported_certificate.
        Some(50) | Some(42) | Some(43) => RefusalReason::BadCertificate,
        // certificate_required: no client certificate.
        Some(116) => RefusalReason::NoClientCertificate,
        // no_application_protocol.
        Some(120) => RefusalReason::AlpnMismatch,
        _ => RefusalReason::Other,
    }
}

/// A deterministic stateless-reset key derived from the node key, so a
/// restarted node can reset connections its previous instance held and peers
/// notice the restart at their next packet instead of at the idle timeout.
pub(crate) struct ResetKey {
    key: [u8; 32],
}

impl ResetKey {
    pub(crate) fn new(node: &NodeKey) -> Self {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"federact/1 stateless reset key");
        h.update(node.signing_key().to_bytes());
        let mut key = [0u8; 32];
        key.copy_from_slice(&h.finalize());
        ResetKey { key }
    }

    /// HMAC-SHA256 (RFC 2104) of `data`.
    fn hmac(&self, data: &[u8]) -> [u8; 32] {
        use sha2::Digest;
        let mut ipad = [0x36u8; 64];
        let mut opad = [0x5cu8; 64];
        for (i, k) in self.key.iter().enumerate() {
            ipad[i] ^= k;
            opad[i] ^= k;
        }
        let inner = sha2::Sha256::new()
            .chain_update(ipad)
            .chain_update(data)
            .finalize();
        let outer = sha2::Sha256::new()
            .chain_update(opad)
            .chain_update(inner)
            .finalize();
        let mut out = [0u8; 32];
        out.copy_from_slice(&outer);
        out
    }
}

impl quinn::crypto::HmacKey for ResetKey {
    fn sign(&self, data: &[u8], signature_out: &mut [u8]) {
        let mac = self.hmac(data);
        let n = signature_out.len().min(mac.len());
        signature_out[..n].copy_from_slice(&mac[..n]);
    }

    fn signature_len(&self) -> usize {
        32
    }

    fn verify(&self, data: &[u8], signature: &[u8]) -> Result<(), quinn::crypto::CryptoError> {
        let mac = self.hmac(data);
        // Constant-time comparison.
        let diff = mac
            .iter()
            .zip(signature.iter())
            .fold(u8::from(mac.len() != signature.len()), |acc, (a, b)| {
                acc | (a ^ b)
            });
        if diff == 0 {
            Ok(())
        } else {
            Err(quinn::crypto::CryptoError)
        }
    }
}

/// Random 8-byte connection ids, accepted without validation.
///
/// quinn's default generator signs its ids with a per-process random key
/// and silently drops packets whose id does not verify, so a restarted node
/// would never answer its predecessor's peers with a stateless reset. With
/// unvalidated ids every stray short-header packet gets a reset (rate
/// limited by quinn, and always smaller than the packet that caused it).
pub(crate) struct RandomCids;

impl quinn::ConnectionIdGenerator for RandomCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let mut bytes = [0u8; 8];
        rand::fill(&mut bytes[..]);
        quinn::ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<std::time::Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_key_is_the_node_id() {
        let key = NodeKey::from_seed(&[3; 32]);
        let id = Identity::new(&key).unwrap();
        assert_eq!(node_id_of(&id.cert), Ok(key.id()));
        // Each instance gets a distinct certificate.
        assert_ne!(Identity::new(&key).unwrap().cert, id.cert);
        assert_eq!(
            node_id_of(&CertificateDer::from(vec![0u8; 10])),
            Err(RefusalReason::BadCertificate)
        );
    }

    #[test]
    fn hmac_matches_rfc4231_case_2_shape() {
        // Same key gives same tags; verify accepts its own tags only.
        let k = ResetKey::new(&NodeKey::from_seed(&[9; 32]));
        let mut tag = [0u8; 32];
        quinn::crypto::HmacKey::sign(&k, b"cid", &mut tag);
        assert!(quinn::crypto::HmacKey::verify(&k, b"cid", &tag).is_ok());
        assert!(quinn::crypto::HmacKey::verify(&k, b"cie", &tag).is_err());
        assert!(quinn::crypto::HmacKey::verify(&k, b"cid", &tag[..31]).is_err());
    }
}
