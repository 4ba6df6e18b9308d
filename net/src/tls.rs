//! TLS 1.3 for validator links: each node's self-signed Ed25519 certificate, the rustls server
//! and client configurations, the certificate verifiers that admit only genesis validators, and
//! the two facts the authentication handshake reads from a finished TLS session (the peer's node
//! id and the session's exporter key).
//!
//! Identity is the certificate's key, never its names or dates. The genesis file pins every
//! validator's Ed25519 key, so a certificate is acceptable iff it is a single self-signed leaf
//! whose SubjectPublicKeyInfo is an Ed25519 key listed in genesis (and, when dialing, the key of
//! the validator we meant to reach). Names are not checked because they name nothing here: every
//! node uses the same fixed name. Dates are not checked because they add nothing to a pinned key
//! and a node with a wrong clock must not be cut off from the chain. The certificate's own
//! self-signature is not checked either: it proves nothing that the TLS 1.3 `CertificateVerify`
//! signature does not, and that one is always verified for real, with the ring provider, against
//! the key in the certificate. That signature is what proves the peer holds the key.
//!
//! Architecture Invariant: every configuration built here is TLS 1.3 only, with mandatory client
//! authentication, no session resumption (no tickets, no session cache) and no 0-RTT, and uses
//! the ring provider passed in explicitly (never a process-wide default provider).
//!
//! After the TLS handshake the `handshake` module runs the challenge-response bound to this
//! session through [`exporter_key`] with [`EXPORTER_LABEL`].

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::NoServerSessionStorage;
use rustls::{
    CertificateError, ClientConfig, CommonState, ConnectionCommon, DigitallySignedStruct, DistinguishedName,
    OtherError, ServerConfig, SignatureScheme, SupportedProtocolVersion,
};
use std::collections::BTreeSet;
use std::sync::Arc;
use tinychain_core::crypto::Keypair;
use tinychain_core::types::{Address, NodeId};
use tracing::{debug, warn};

/// The one name every node certificate carries (subject common name and DNS SAN), and the server
/// name a dialer asks for. Verifiers ignore it: identity is the key.
pub const CERTIFICATE_NAME: &str = "tinychain-node";

// The exporter label and key size are the handshake's: one definition, so they cannot drift.
pub use crate::handshake::{EXPORTER_KEY_BYTES, EXPORTER_LABEL};

/// The only protocol version any configuration here offers or accepts.
const PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// An Ed25519 public key is 32 bytes (RFC 8032).
const ED25519_KEY_BYTES: usize = 32;

/// Certificates are valid from 1975 to 4096: validity dates carry no meaning here (see the
/// module docs), and a wide window keeps any clock from mattering.
const VALIDITY_FIRST_YEAR: i32 = 1975;
const VALIDITY_LAST_YEAR: i32 = 4096;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TlsError {
    #[error("could not encode the node key as PKCS#8: {reason}")]
    PrivateKeyEncoding { reason: String },
    #[error("could not generate the node certificate: {source}")]
    CertificateGeneration { source: rcgen::Error },
    #[error("the certificate is not DER X.509: {reason}")]
    CertificateParse { reason: String },
    #[error("the certificate is followed by {count} trailing bytes")]
    CertificateTrailingBytes { count: usize },
    #[error("the certificate key algorithm is {algorithm}, not Ed25519 (1.3.101.112)")]
    NotEd25519 { algorithm: String },
    #[error("the Ed25519 key's algorithm identifier carries parameters, which RFC 8410 forbids")]
    Ed25519ParametersPresent,
    #[error("the Ed25519 key is {length} bytes with {unused_bits} unused bits, not 32 whole bytes")]
    BadEd25519KeyLength { length: usize, unused_bits: u8 },
    #[error("the peer sent {count} intermediate certificates; only a self-signed leaf is accepted")]
    UnexpectedIntermediates { count: usize },
    #[error("{node_id} is not a genesis validator")]
    NotAValidator { node_id: NodeId },
    #[error("dialed {expected} but reached {got}")]
    UnexpectedPeer { expected: NodeId, got: NodeId },
    #[error("TLS 1.2 signatures are refused: links are TLS 1.3 only")]
    Tls12Refused,
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    #[error("could not build the TLS configuration: {source}")]
    Configuration { source: rustls::Error },
    #[error("could not derive the exporter key: {source}")]
    Exporter { source: rustls::Error },
}

/// A node's self-signed certificate and the PKCS#8 private key it was made from.
/// `Debug` never prints the private key (rustls-pki-types elides it).
#[derive(Debug)]
pub struct NodeCertificate {
    pub certificate: CertificateDer<'static>,
    pub private_key: PrivateKeyDer<'static>,
}

impl Clone for NodeCertificate {
    fn clone(&self) -> Self {
        NodeCertificate { certificate: self.certificate.clone(), private_key: self.private_key.clone_key() }
    }
}

/// Makes the self-signed X.509 certificate for a node key. The output is a pure function of the
/// key: fixed names and dates, a serial number derived from the public key, and Ed25519 signatures
/// are deterministic.
pub fn node_certificate(key: &Keypair) -> Result<NodeCertificate, TlsError> {
    use ed25519_dalek::pkcs8::EncodePrivateKey;

    let signing_key = ed25519_dalek::SigningKey::from_bytes(&key.secret_bytes());
    let pkcs8_document =
        signing_key.to_pkcs8_der().map_err(|error| TlsError::PrivateKeyEncoding { reason: error.to_string() })?;
    let pkcs8 = PrivatePkcs8KeyDer::from(pkcs8_document.as_bytes().to_vec());
    let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)
        .map_err(|source| TlsError::CertificateGeneration { source })?;

    let mut params = rcgen::CertificateParams::new(vec![CERTIFICATE_NAME.to_string()])
        .map_err(|source| TlsError::CertificateGeneration { source })?;
    let mut distinguished_name = rcgen::DistinguishedName::new();
    distinguished_name.push(rcgen::DnType::CommonName, CERTIFICATE_NAME);
    params.distinguished_name = distinguished_name;
    params.not_before = rcgen::date_time_ymd(VALIDITY_FIRST_YEAR, 1, 1);
    params.not_after = rcgen::date_time_ymd(VALIDITY_LAST_YEAR, 1, 1);
    let certificate =
        params.self_signed(&key_pair).map_err(|source| TlsError::CertificateGeneration { source })?.der().clone();

    let certified_key = certificate_key(&certificate).expect("rcgen writes a well-formed Ed25519 certificate");
    assert_eq!(certified_key, key.address(), "the node certificate must carry the node key");
    Ok(NodeCertificate { certificate, private_key: PrivateKeyDer::Pkcs8(pkcs8) })
}

/// The node id a certificate claims: its SubjectPublicKeyInfo must be a bare Ed25519 key
/// (OID 1.3.101.112, no parameters, 32 bytes). The certificate is untrusted input; this says
/// nothing about whether the peer holds the key (the TLS handshake signature proves that).
pub fn certificate_key(certificate: &CertificateDer<'_>) -> Result<NodeId, TlsError> {
    let (rest, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref())
        .map_err(|error| TlsError::CertificateParse { reason: error.to_string() })?;
    if !rest.is_empty() {
        return Err(TlsError::CertificateTrailingBytes { count: rest.len() });
    }
    let public_key_info = parsed.public_key();
    let algorithm = &public_key_info.algorithm;
    if algorithm.algorithm != x509_parser::oid_registry::OID_SIG_ED25519 {
        return Err(TlsError::NotEd25519 { algorithm: algorithm.algorithm.to_id_string() });
    }
    if algorithm.parameters.is_some() {
        return Err(TlsError::Ed25519ParametersPresent);
    }
    let bits = &public_key_info.subject_public_key;
    let key_bytes: &[u8] = bits.data.as_ref();
    let bad_length = TlsError::BadEd25519KeyLength { length: key_bytes.len(), unused_bits: bits.unused_bits };
    if bits.unused_bits != 0 {
        return Err(bad_length);
    }
    let key: [u8; ED25519_KEY_BYTES] = key_bytes.try_into().map_err(|_| bad_length)?;
    Ok(Address(key))
}

/// The server configuration for the listening side: presents `cert`, requires every client to
/// present a certificate whose key is in `validators`, and verifies the client's handshake
/// signature.
pub fn server_config(cert: &NodeCertificate, validators: Arc<BTreeSet<NodeId>>) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(ValidatorClientVerifier { validators, provider: Arc::clone(&provider) });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|source| TlsError::Configuration { source })?
        .with_client_cert_verifier(verifier)
        // This checks that the private key matches the certificate's key.
        .with_single_cert(vec![cert.certificate.clone()], cert.private_key.clone_key())
        .map_err(|source| TlsError::Configuration { source })?;
    // No resumption: neither a session cache nor tickets (the builder's ticketer already never
    // produces tickets; without tickets, TLS 1.3 "tickets" would be cache ids, so both go).
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.max_tls13_tickets = 0;
    // No 0-RTT, and no data sent before the client's Finished has been checked.
    config.max_early_data_size = 0;
    config.send_half_rtt_data = false;
    Ok(Arc::new(config))
}

/// The client configuration for dialing `expected_peer`: presents `cert`, accepts only a server
/// whose certificate key is in `validators` and equals `expected_peer`, and verifies the server's
/// handshake signature. Connect with [`peer_server_name`]. One configuration per dialed peer.
pub fn client_config(
    cert: &NodeCertificate,
    validators: Arc<BTreeSet<NodeId>>,
    expected_peer: NodeId,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(ValidatorServerVerifier { validators, expected_peer, provider: Arc::clone(&provider) });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .map_err(|source| TlsError::Configuration { source })?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![cert.certificate.clone()], cert.private_key.clone_key())
        .map_err(|source| TlsError::Configuration { source })?;
    config.resumption = Resumption::disabled();
    config.enable_early_data = false;
    // The server name means nothing (every node has the same one), so it is not sent.
    config.enable_sni = false;
    Ok(Arc::new(config))
}

/// The server name to pass to `TlsConnector::connect`. Verifiers ignore it.
pub fn peer_server_name() -> ServerName<'static> {
    ServerName::try_from(CERTIFICATE_NAME).expect("CERTIFICATE_NAME is a valid DNS name")
}

/// The peer's node id, read from the certificate it presented in a finished handshake. The
/// verifiers have already admitted that key; this only reads it back.
pub fn peer_node_id(conn: &CommonState) -> Result<NodeId, TlsError> {
    match conn.peer_certificates() {
        None | Some([]) => Err(TlsError::NoPeerCertificate),
        Some([leaf]) => certificate_key(leaf),
        Some([_, intermediates @ ..]) => Err(TlsError::UnexpectedIntermediates { count: intermediates.len() }),
    }
}

/// Keying material exported from a finished TLS 1.3 session (RFC 8446 section 7.5): both ends of
/// one session derive the same value, and any other session (a relay's, a replay's) a different
/// one. Fails while the handshake is still running.
pub fn exporter_key<Data>(
    conn: &ConnectionCommon<Data>,
    label: &[u8],
    context: &[u8],
) -> Result<[u8; EXPORTER_KEY_BYTES], TlsError> {
    conn.export_keying_material([0u8; EXPORTER_KEY_BYTES], label, Some(context))
        .map_err(|source| TlsError::Exporter { source })
}

/// Admits a peer certificate: a self-signed leaf alone, an Ed25519 key, a genesis validator, and
/// when dialing, the validator we meant to reach.
fn admit_certificate(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    validators: &BTreeSet<NodeId>,
    expected_peer: Option<NodeId>,
) -> Result<NodeId, TlsError> {
    if !intermediates.is_empty() {
        return Err(TlsError::UnexpectedIntermediates { count: intermediates.len() });
    }
    let node_id = certificate_key(end_entity)?;
    if !validators.contains(&node_id) {
        return Err(TlsError::NotAValidator { node_id });
    }
    if let Some(expected) = expected_peer {
        if node_id != expected {
            return Err(TlsError::UnexpectedPeer { expected, got: node_id });
        }
    }
    Ok(node_id)
}

/// Logs why a certificate was refused and wraps the reason so rustls sends a generic
/// `certificate_unknown` alert (no detail to the peer) while the local error keeps the reason.
fn refuse_certificate(side: &'static str, reason: TlsError) -> rustls::Error {
    match &reason {
        TlsError::UnexpectedPeer { expected, got } => {
            warn!(side, %expected, %got, "refusing peer: a different validator answered at this address");
        }
        _ => debug!(side, %reason, "refusing peer certificate"),
    }
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(reason))))
}

/// Verifies a TLS 1.3 `CertificateVerify` signature for real. rustls only asks after the
/// certificate was admitted, but the certificate is admitted again here (cheap, once per
/// handshake) so this function never accepts a key outside genesis on its own. The key is
/// Ed25519, and webpki refuses any signature scheme that does not match the key's algorithm.
fn verify_handshake_signature(
    side: &'static str,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    validators: &BTreeSet<NodeId>,
    expected_peer: Option<NodeId>,
    provider: &CryptoProvider,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    admit_certificate(cert, &[], validators, expected_peer).map_err(|reason| refuse_certificate(side, reason))?;
    rustls::crypto::verify_tls13_signature(message, cert, dss, &provider.signature_verification_algorithms)
        .inspect_err(|error| debug!(side, %error, scheme = ?dss.scheme, "refusing peer: bad handshake signature"))
}

/// The dialing side's check of the server: a genesis validator, and the one we meant to reach.
#[derive(Debug)]
struct ValidatorServerVerifier {
    validators: Arc<BTreeSet<NodeId>>,
    expected_peer: NodeId,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ValidatorServerVerifier {
    /// The server name, OCSP response and time are ignored: identity is the pinned key.
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        admit_certificate(end_entity, intermediates, &self.validators, Some(self.expected_peer))
            .map_err(|reason| refuse_certificate("dialer", reason))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(refuse_certificate("dialer", TlsError::Tls12Refused))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_handshake_signature(
            "dialer",
            message,
            cert,
            dss,
            &self.validators,
            Some(self.expected_peer),
            &self.provider,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The listening side's check of the client: a certificate is mandatory and its key must be a
/// genesis validator. Which validator it is, the challenge-response decides (no duplicate link,
/// not ourselves).
#[derive(Debug)]
struct ValidatorClientVerifier {
    validators: Arc<BTreeSet<NodeId>>,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for ValidatorClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No hints: there is no certificate authority, every node has exactly one certificate.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    /// The time is ignored: identity is the pinned key.
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        admit_certificate(end_entity, intermediates, &self.validators, None)
            .map_err(|reason| refuse_certificate("listener", reason))?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(refuse_certificate("listener", TlsError::Tls12Refused))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_handshake_signature("listener", message, cert, dss, &self.validators, None, &self.provider)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{AlertDescription, HandshakeKind, PeerIncompatible};
    use std::io;
    use std::time::Duration;
    use tinychain_core::testkit::{seeded_key, validator_key};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    /// Stands in for the handshake's exporter context (chain id and genesis hash).
    const CONTEXT: &[u8] = b"test-chain/genesis-hash";

    /// Every session in these tests is over in milliseconds; this only turns a hang into a failure.
    const SESSION_DEADLINE: Duration = Duration::from_secs(10);

    fn validator_set(count: usize) -> Arc<BTreeSet<NodeId>> {
        Arc::new((0..count).map(|index| validator_key(index).address()).collect())
    }

    fn certificate_for(key: &Keypair) -> NodeCertificate {
        node_certificate(key).expect("test keys make certificates")
    }

    fn outsider() -> Keypair {
        seeded_key("outsider", 0)
    }

    /// What one side saw of a session that completed and carried one byte each way.
    #[derive(Debug)]
    struct SideOutcome {
        peer: NodeId,
        exporter: [u8; EXPORTER_KEY_BYTES],
        handshake_kind: Option<HandshakeKind>,
    }

    fn side_outcome<Data>(conn: &ConnectionCommon<Data>) -> io::Result<SideOutcome> {
        Ok(SideOutcome {
            peer: peer_node_id(conn).map_err(io::Error::other)?,
            exporter: exporter_key(conn, EXPORTER_LABEL, CONTEXT).map_err(io::Error::other)?,
            handshake_kind: conn.handshake_kind(),
        })
    }

    /// Runs one real TLS session over loopback TCP. A side succeeds only if its handshake
    /// completed and it received the other side's byte: in TLS 1.3 the client finishes its
    /// handshake before the server has checked the client's certificate, so a refused client
    /// learns of it on its first read.
    async fn run_session(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
    ) -> (io::Result<SideOutcome>, io::Result<SideOutcome>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let address = listener.local_addr().expect("a bound listener has an address");
        let server_side = async move {
            let (tcp, _) = listener.accept().await?;
            let mut tls = TlsAcceptor::from(server).accept(tcp).await?;
            tls.write_all(b"s").await?;
            tls.flush().await?;
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await?;
            assert_eq!(&byte, b"c");
            side_outcome(tls.get_ref().1)
        };
        let client_side = async move {
            let tcp = TcpStream::connect(address).await?;
            let mut tls = TlsConnector::from(client).connect(peer_server_name(), tcp).await?;
            tls.write_all(b"c").await?;
            tls.flush().await?;
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await?;
            assert_eq!(&byte, b"s");
            side_outcome(tls.get_ref().1)
        };
        tokio::time::timeout(SESSION_DEADLINE, async { tokio::join!(server_side, client_side) })
            .await
            .expect("a loopback session ends well within the deadline")
    }

    fn rustls_error(error: &io::Error) -> Option<&rustls::Error> {
        error.get_ref()?.downcast_ref::<rustls::Error>()
    }

    /// The reason our verifier gave, if this error is a refusal by our verifier.
    fn refusal(error: &io::Error) -> Option<&TlsError> {
        match rustls_error(error)? {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(reason))) => {
                reason.downcast_ref::<TlsError>()
            }
            _ => None,
        }
    }

    #[tokio::test]
    async fn validators_authenticate_each_other_and_share_a_per_session_exporter_key() {
        let validators = validator_set(3);
        for (server_index, client_index) in [(0, 1), (1, 0)] {
            let server_key = validator_key(server_index);
            let client_key = validator_key(client_index);
            let server = server_config(&certificate_for(&server_key), Arc::clone(&validators)).expect("server config");
            let client = client_config(&certificate_for(&client_key), Arc::clone(&validators), server_key.address())
                .expect("client config");

            let (server_seen, client_seen) = run_session(Arc::clone(&server), Arc::clone(&client)).await;
            let server_seen = server_seen.expect("the server accepts a validator");
            let client_seen = client_seen.expect("the client accepts the validator it dialed");
            assert_eq!(server_seen.peer, client_key.address());
            assert_eq!(client_seen.peer, server_key.address());
            assert_eq!(server_seen.exporter, client_seen.exporter, "both ends of one session derive the same key");

            let (second_server_seen, second_client_seen) = run_session(server, client).await;
            let second_server_seen = second_server_seen.expect("the server accepts a second session");
            let second_client_seen = second_client_seen.expect("the client completes a second session");
            assert_eq!(second_server_seen.exporter, second_client_seen.exporter);
            assert_ne!(second_server_seen.exporter, server_seen.exporter, "another session derives another key");
        }
    }

    #[tokio::test]
    async fn server_refuses_a_client_whose_key_is_not_in_genesis() {
        let validators = validator_set(3);
        let server_key = validator_key(0);
        let outsider = outsider();
        let server = server_config(&certificate_for(&server_key), Arc::clone(&validators)).expect("server config");
        let client =
            client_config(&certificate_for(&outsider), validators, server_key.address()).expect("client config");

        let (server_seen, client_seen) = run_session(server, client).await;
        let server_error = server_seen.expect_err("the server refuses an outsider");
        assert_eq!(refusal(&server_error), Some(&TlsError::NotAValidator { node_id: outsider.address() }));
        let client_error = client_seen.expect_err("the outsider's session fails");
        assert_eq!(
            rustls_error(&client_error),
            Some(&rustls::Error::AlertReceived(AlertDescription::CertificateUnknown)),
            "the alert says nothing more: {client_error}"
        );
    }

    #[tokio::test]
    async fn dialer_refuses_a_validator_other_than_the_one_it_meant_to_reach() {
        let validators = validator_set(3);
        let intended = validator_key(0);
        let answering = validator_key(1);
        let client_key = validator_key(2);
        let server = server_config(&certificate_for(&answering), Arc::clone(&validators)).expect("server config");
        let client =
            client_config(&certificate_for(&client_key), validators, intended.address()).expect("client config");

        let (server_seen, client_seen) = run_session(server, client).await;
        let client_error = client_seen.expect_err("the dialer refuses the wrong validator");
        assert_eq!(
            refusal(&client_error),
            Some(&TlsError::UnexpectedPeer { expected: intended.address(), got: answering.address() })
        );
        assert!(server_seen.is_err(), "the server sees the dialer abort the handshake");
    }

    #[tokio::test]
    async fn dialer_refuses_a_server_whose_key_is_not_in_genesis_even_when_expected() {
        let validators = validator_set(3);
        let outsider = outsider();
        let server = server_config(&certificate_for(&outsider), Arc::clone(&validators)).expect("server config");
        let client =
            client_config(&certificate_for(&validator_key(0)), validators, outsider.address()).expect("client config");

        let (server_seen, client_seen) = run_session(server, client).await;
        let client_error = client_seen.expect_err("the dialer refuses an outsider");
        assert_eq!(refusal(&client_error), Some(&TlsError::NotAValidator { node_id: outsider.address() }));
        assert!(server_seen.is_err());
    }

    #[tokio::test]
    async fn server_refuses_a_client_that_presents_no_certificate() {
        let validators = validator_set(3);
        let server_key = validator_key(0);
        let server = server_config(&certificate_for(&server_key), Arc::clone(&validators)).expect("server config");
        // A client that checks the server like ours does but has no certificate to present.
        let verifier = Arc::new(ValidatorServerVerifier {
            validators,
            expected_peer: server_key.address(),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        });
        let client = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .expect("TLS 1.3 is supported")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();

        let (server_seen, client_seen) = run_session(server, Arc::new(client)).await;
        let server_error = server_seen.expect_err("client authentication is mandatory");
        assert_eq!(rustls_error(&server_error), Some(&rustls::Error::NoCertificatesPresented));
        assert!(client_seen.is_err());
    }

    /// An impostor holds a validator's certificate (it is public: sent in every handshake) but
    /// not its private key, and signs the handshake with its own key. Only the real check of the
    /// handshake signature stops it, in both directions.
    #[tokio::test]
    async fn a_copied_certificate_without_its_private_key_is_refused_both_ways() {
        let validators = validator_set(3);
        let victim = validator_key(0);
        let impostor = outsider();
        let provider = rustls::crypto::ring::default_provider();
        let impostor_signing_key = provider
            .key_provider
            .load_private_key(certificate_for(&impostor).private_key)
            .expect("ring loads an Ed25519 PKCS#8 key");
        // CertifiedKey::new does not check that the key matches the certificate, on purpose here.
        let stolen = Arc::new(rustls::sign::SingleCertAndKey::from(rustls::sign::CertifiedKey::new(
            vec![certificate_for(&victim).certificate],
            impostor_signing_key,
        )));

        // The impostor listens at the victim's address.
        let mut impostor_server =
            (*server_config(&certificate_for(&impostor), Arc::clone(&validators)).expect("server config")).clone();
        impostor_server.cert_resolver = Arc::clone(&stolen) as Arc<dyn rustls::server::ResolvesServerCert>;
        let honest_client =
            client_config(&certificate_for(&validator_key(1)), Arc::clone(&validators), victim.address())
                .expect("client config");
        let (server_seen, client_seen) = run_session(Arc::new(impostor_server), honest_client).await;
        let client_error = client_seen.expect_err("the dialer refuses a signature by the wrong key");
        assert!(
            matches!(
                rustls_error(&client_error),
                Some(rustls::Error::InvalidCertificate(CertificateError::BadSignature))
            ),
            "got {client_error}"
        );
        assert!(server_seen.is_err());

        // The impostor dials an honest validator.
        let honest_server =
            server_config(&certificate_for(&validator_key(1)), Arc::clone(&validators)).expect("server config");
        let mut impostor_client =
            (*client_config(&certificate_for(&impostor), Arc::clone(&validators), validator_key(1).address())
                .expect("client config"))
            .clone();
        impostor_client.client_auth_cert_resolver = stolen;
        let (server_seen, client_seen) = run_session(honest_server, Arc::new(impostor_client)).await;
        let server_error = server_seen.expect_err("the listener refuses a signature by the wrong key");
        assert!(
            matches!(
                rustls_error(&server_error),
                Some(rustls::Error::InvalidCertificate(CertificateError::BadSignature))
            ),
            "got {server_error}"
        );
        assert!(client_seen.is_err());
    }

    fn push_extension(extensions: &mut Vec<u8>, extension_type: u16, data: &[u8]) {
        extensions.extend_from_slice(&extension_type.to_be_bytes());
        extensions.extend_from_slice(&u16::try_from(data.len()).expect("small extension").to_be_bytes());
        extensions.extend_from_slice(data);
    }

    /// A minimal well-formed ClientHello record from a TLS 1.2-only client: legacy version 1.2,
    /// two TLS 1.2 ECDHE-GCM suites, null compression, signature_algorithms (which rustls needs
    /// before it looks at versions), supported_groups and ec_point_formats; with or without a
    /// supported_versions extension listing only TLS 1.2.
    fn tls12_client_hello(with_supported_versions: bool) -> Vec<u8> {
        let mut extensions = Vec::new();
        // signature_algorithms: ed25519, ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256.
        push_extension(&mut extensions, 0x000d, &[0x00, 0x06, 0x08, 0x07, 0x04, 0x03, 0x08, 0x04]);
        // supported_groups: x25519, secp256r1.
        push_extension(&mut extensions, 0x000a, &[0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]);
        // ec_point_formats: uncompressed.
        push_extension(&mut extensions, 0x000b, &[0x01, 0x00]);
        if with_supported_versions {
            // supported_versions: TLS 1.2 only.
            push_extension(&mut extensions, 0x002b, &[0x02, 0x03, 0x03]);
        }
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[0x42; 32]);
        body.push(0x00);
        // TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256.
        body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x2b, 0xc0, 0x2f]);
        body.extend_from_slice(&[0x01, 0x00]);
        body.extend_from_slice(&u16::try_from(extensions.len()).expect("small extensions").to_be_bytes());
        body.extend_from_slice(&extensions);
        let mut handshake = vec![0x01];
        handshake.extend_from_slice(&u32::try_from(body.len()).expect("small body").to_be_bytes()[1..]);
        handshake.extend_from_slice(&body);
        let mut record = vec![0x16, 0x03, 0x01];
        record.extend_from_slice(&u16::try_from(handshake.len()).expect("small handshake").to_be_bytes());
        record.extend_from_slice(&handshake);
        record
    }

    /// rustls cannot build a TLS 1.2 client here (the `tls12` feature is compiled out), so a
    /// hand-written TLS 1.2 ClientHello goes to the real server over TCP. The server gets past
    /// parsing to the version check (the error names the version rule, not a parse failure) and
    /// answers with a fatal protocol_version alert.
    #[tokio::test]
    async fn server_refuses_a_client_hello_that_offers_only_tls12() {
        let validators = validator_set(3);
        let server = server_config(&certificate_for(&validator_key(0)), validators).expect("server config");
        let cases = [
            (false, PeerIncompatible::SupportedVersionsExtensionRequired),
            (true, PeerIncompatible::Tls12NotOfferedOrEnabled),
        ];
        for (with_supported_versions, expected) in cases {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
            let address = listener.local_addr().expect("a bound listener has an address");
            let acceptor = TlsAcceptor::from(Arc::clone(&server));
            let server_side = async move {
                let (tcp, _) = listener.accept().await.expect("accept");
                acceptor.accept(tcp).await.map(|_| ())
            };
            let client_side = async move {
                let mut tcp = TcpStream::connect(address).await.expect("connect");
                tcp.write_all(&tls12_client_hello(with_supported_versions)).await.expect("send hello");
                let mut reply = Vec::new();
                tcp.read_to_end(&mut reply).await.expect("read the reply");
                reply
            };
            let (server_result, reply) =
                tokio::time::timeout(SESSION_DEADLINE, async { tokio::join!(server_side, client_side) })
                    .await
                    .expect("the refusal is immediate");
            let server_error = server_result.expect_err("a TLS 1.2-only hello is refused");
            assert_eq!(rustls_error(&server_error), Some(&rustls::Error::PeerIncompatible(expected)));
            // One plaintext alert record: type 21, any legacy version, length 2, fatal (2),
            // protocol_version (70).
            assert_eq!(reply.len(), 7, "reply {reply:02x?}");
            assert_eq!(reply[0], 0x15, "reply {reply:02x?}");
            assert_eq!(&reply[3..], &[0x00, 0x02, 0x02, 70], "reply {reply:02x?}");
        }
    }

    #[tokio::test]
    async fn a_second_connection_does_a_full_handshake_because_resumption_is_off() {
        let validators = validator_set(3);
        let server_key = validator_key(0);
        let server = server_config(&certificate_for(&server_key), Arc::clone(&validators)).expect("server config");
        let client = client_config(&certificate_for(&validator_key(1)), validators, server_key.address())
            .expect("client config");
        for attempt in 0..3 {
            let (server_seen, client_seen) = run_session(Arc::clone(&server), Arc::clone(&client)).await;
            let server_seen = server_seen.expect("the server accepts");
            let client_seen = client_seen.expect("the client completes");
            assert_eq!(server_seen.handshake_kind, Some(HandshakeKind::Full), "attempt {attempt}");
            assert_eq!(client_seen.handshake_kind, Some(HandshakeKind::Full), "attempt {attempt}");
        }
    }

    /// The test above would be vacuous if these sessions could not resume at all: with a session
    /// cache, tickets and a client session store switched back on, the same check sees resumption.
    #[tokio::test]
    async fn the_resumption_check_sees_resumption_when_it_is_switched_on() {
        let validators = validator_set(3);
        let server_key = validator_key(0);
        let mut server =
            (*server_config(&certificate_for(&server_key), Arc::clone(&validators)).expect("server config")).clone();
        server.session_storage = rustls::server::ServerSessionMemoryCache::new(16);
        server.send_tls13_tickets = 2;
        let mut client = (*client_config(&certificate_for(&validator_key(1)), validators, server_key.address())
            .expect("client config"))
        .clone();
        client.resumption = Resumption::default();
        let (server, client) = (Arc::new(server), Arc::new(client));

        let (_, first) = run_session(Arc::clone(&server), Arc::clone(&client)).await;
        assert_eq!(first.expect("first session").handshake_kind, Some(HandshakeKind::Full));
        let (_, second) = run_session(server, client).await;
        assert_eq!(second.expect("second session").handshake_kind, Some(HandshakeKind::Resumed));
    }

    #[test]
    fn configurations_send_no_tickets_and_accept_no_early_data() {
        let validators = validator_set(3);
        let certificate = certificate_for(&validator_key(0));
        let server = server_config(&certificate, Arc::clone(&validators)).expect("server config");
        assert!(!server.ticketer.enabled());
        assert_eq!(server.send_tls13_tickets, 0);
        assert_eq!(server.max_early_data_size, 0);
        assert!(!server.send_half_rtt_data);
        let client = client_config(&certificate, validators, validator_key(1).address()).expect("client config");
        assert!(!client.enable_early_data);
        assert!(client.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn node_certificate_is_deterministic_and_carries_the_node_key() {
        let key = validator_key(0);
        let first = certificate_for(&key);
        let second = certificate_for(&key);
        assert_eq!(first.certificate, second.certificate);
        assert_eq!(certificate_key(&first.certificate), Ok(key.address()));
        assert_ne!(certificate_for(&validator_key(1)).certificate, first.certificate);
    }

    #[test]
    fn certificate_key_rejects_non_ed25519_keys_and_malformed_certificates() {
        let ecdsa_key = rcgen::KeyPair::generate().expect("rcgen generates an ECDSA P-256 key");
        let ecdsa_certificate = rcgen::CertificateParams::new(vec![CERTIFICATE_NAME.to_string()])
            .expect("valid name")
            .self_signed(&ecdsa_key)
            .expect("self-sign");
        assert_eq!(
            certificate_key(ecdsa_certificate.der()),
            Err(TlsError::NotEd25519 { algorithm: "1.2.840.10045.2.1".to_string() })
        );

        let valid = certificate_for(&validator_key(0)).certificate.to_vec();
        let mut trailing = valid.clone();
        trailing.push(0x00);
        assert_eq!(
            certificate_key(&CertificateDer::from(trailing)),
            Err(TlsError::CertificateTrailingBytes { count: 1 })
        );
        let garbage: [&[u8]; 3] = [b"", b"not a certificate", &valid[..valid.len() / 2]];
        for bytes in garbage {
            let result = certificate_key(&CertificateDer::from(bytes.to_vec()));
            assert!(matches!(result, Err(TlsError::CertificateParse { .. })), "{bytes:02x?} gave {result:?}");
        }
    }

    #[test]
    fn verifiers_refuse_intermediates_and_outsiders_whatever_the_name_and_time() {
        let validators = validator_set(3);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let validator = certificate_for(&validator_key(0)).certificate;
        let other_validator = certificate_for(&validator_key(1)).certificate;
        let server_verifier = ValidatorServerVerifier {
            validators: Arc::clone(&validators),
            expected_peer: validator_key(0).address(),
            provider: Arc::clone(&provider),
        };
        let client_verifier = ValidatorClientVerifier { validators, provider };
        let odd_name = ServerName::try_from("not-the-name.example").expect("valid name");
        let epoch = UnixTime::since_unix_epoch(Duration::ZERO);

        assert!(server_verifier.verify_server_cert(&validator, &[], &odd_name, &[], epoch).is_ok());
        assert!(client_verifier.verify_client_cert(&validator, &[], epoch).is_ok());
        let chain = [other_validator.clone()];
        assert!(server_verifier.verify_server_cert(&validator, &chain, &odd_name, &[], epoch).is_err());
        assert!(client_verifier.verify_client_cert(&validator, &chain, epoch).is_err());
        let outsider = certificate_for(&outsider()).certificate;
        assert!(client_verifier.verify_client_cert(&outsider, &[], epoch).is_err());
        assert!(server_verifier.verify_server_cert(&other_validator, &[], &odd_name, &[], epoch).is_err());

        assert!(client_verifier.client_auth_mandatory());
        assert!(client_verifier.root_hint_subjects().is_empty());
        for schemes in [server_verifier.supported_verify_schemes(), client_verifier.supported_verify_schemes()] {
            assert!(schemes.contains(&SignatureScheme::ED25519));
        }
    }

    #[test]
    fn exporter_key_fails_before_the_handshake_completes() {
        let validators = validator_set(3);
        let server_key = validator_key(0);
        let client = client_config(&certificate_for(&validator_key(1)), validators, server_key.address())
            .expect("client config");
        let connection = rustls::ClientConnection::new(client, peer_server_name()).expect("client connection");
        assert!(matches!(exporter_key(&connection, EXPORTER_LABEL, CONTEXT), Err(TlsError::Exporter { .. })));
        assert_eq!(peer_node_id(&connection), Err(TlsError::NoPeerCertificate));
    }
}
