//! The challenge-response that authenticates a peer after TLS, as pure functions over plain
//! data. This module owns the handshake messages, their encoding, the bytes a node signs and
//! every check that admits a peer; it does no I/O and never touches rustls.
//!
//! Driver contract (the TLS code carries it out, under the 5 s handshake deadline):
//! 1. `let ours = start(&local, random_nonce())`; send `encode_hello(&ours)` in one frame; read
//!    one frame (at most [`HANDSHAKE_MESSAGE_BYTES_MAX`]) and `decode_hello` it into `theirs`.
//! 2. Derive `K`: the TLS exporter of this session with label [`EXPORTER_LABEL`], context
//!    [`exporter_context`]`(chain_id, genesis_hash)`, 32 bytes of output.
//! 3. `respond(&local, &ours, &theirs, &K)`; send `encode_proof(&proof)`; read and
//!    `decode_proof` the peer's.
//! 4. `finish(..)` with the key in the peer's TLS certificate; `Ok(peer)` admits the link.
//!
//! On any error the driver closes the link without telling the peer why: the error is for local
//! logs only.
//!
//! Why it holds: the signature covers `K`, which differs per TLS session, so a proof relayed or
//! replayed from another session fails; it covers the signer's role tag, so a proof reflected back
//! to its signer fails; it covers both nonces and both node ids, so neither side can reuse it for
//! another peer; and its domain tag ([`HANDSHAKE_TAG`]) differs from those of transfers, blocks
//! and reports, so no handshake signature is valid for anything else.

use serde::{Deserialize, Serialize};
use tinychain_core::codec::{self, HANDSHAKE_TAG};
use tinychain_core::crypto::{verify_strict, Keypair};
use tinychain_core::types::{Hash, NodeId, Signature};

/// The protocol version; a peer announcing another is refused. Version 3 added
/// `Message::Links` (and relaying by the sender's links), version 2 `Message::Transfers`.
pub const PROTOCOL_VERSION: u16 = 3;

/// The TLS exporter label both sides derive `K` with.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-tinychain-auth-v1";

/// Bytes of exporter output (`K`).
pub const EXPORTER_KEY_BYTES: usize = 32;

/// Largest encoded `Hello` or `Proof` accepted (and the frame limit to read them with): far above
/// an honest hello (74 bytes plus the chain id, which genesis caps at 32 bytes).
pub const HANDSHAKE_MESSAGE_BYTES_MAX: u32 = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("peer speaks handshake version {got}, we speak {expected}")]
    WrongVersion { expected: u16, got: u16 },
    // Debug formatting quotes and escapes the peer's chain id: it is untrusted text.
    #[error("peer is on chain {got:?}, we are on {expected:?}")]
    WrongChain { expected: String, got: String },
    #[error("peer's certificate key {certificate} differs from the node id {claimed} it claims")]
    CertificateMismatch { certificate: NodeId, claimed: NodeId },
    #[error("peer {node} is not a validator")]
    NotAValidator { node: NodeId },
    #[error("peer claims our own node id {node}")]
    SelfConnection { node: NodeId },
    #[error("peer {node} is already connected")]
    AlreadyConnected { node: NodeId },
    #[error("peer {node}'s handshake signature does not verify")]
    BadSignature { node: NodeId },
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
}

/// Step 1: each side's announcement.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    pub chain_id: String,
    pub node_id: NodeId,
    /// 32 fresh random bytes (see [`random_nonce`]).
    pub nonce: [u8; 32],
}

/// Step 3: the signature over [`proof_signing_bytes`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proof {
    pub signature: Signature,
}

/// Which end of the TLS connection a node is: the dialer is the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

impl Role {
    /// The role tag in the signed bytes.
    pub fn tag(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
        }
    }

    /// The role of the other end.
    pub fn peer(self) -> Role {
        match self {
            Role::Client => Role::Server,
            Role::Server => Role::Client,
        }
    }
}

/// What a node brings to a handshake.
#[derive(Clone, Copy, Debug)]
pub struct Local<'a> {
    pub key: &'a Keypair,
    pub chain_id: &'a str,
    pub role: Role,
}

/// The exporter context: the chain id's bytes, then the 32-byte genesis hash. The hash has a
/// fixed length at the end, so the concatenation is unambiguous.
pub fn exporter_context(chain_id: &str, genesis_hash: &Hash) -> Vec<u8> {
    let mut context = Vec::with_capacity(chain_id.len() + genesis_hash.0.len());
    context.extend_from_slice(chain_id.as_bytes());
    context.extend_from_slice(&genesis_hash.0);
    context
}

/// Fresh nonce bytes from the operating system. The only impure function here; callers pass its
/// result to [`start`] so the handshake itself stays deterministic and testable.
///
/// Panics if the OS has no randomness to give: a node cannot authenticate safely without it,
/// and the operator must act.
pub fn random_nonce() -> [u8; 32] {
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).expect("the operating system provides randomness");
    nonce
}

/// Step 1: our hello.
pub fn start(local: &Local, nonce: [u8; 32]) -> Hello {
    Hello { version: PROTOCOL_VERSION, chain_id: local.chain_id.to_string(), node_id: local.key.address(), nonce }
}

/// The bytes a proof signs: `encode((HANDSHAKE_TAG, chain_id, signer role tag, K, client nonce,
/// server nonce, client node id, server node id))`, i.e. `str(tag) ‖ str(chain_id) ‖
/// str(role) ‖ K[32] ‖ client_nonce[32] ‖ server_nonce[32] ‖ client_id[32] ‖ server_id[32]`.
pub fn proof_signing_bytes(
    chain_id: &str,
    signer: Role,
    exporter_key: &[u8; EXPORTER_KEY_BYTES],
    client: &Hello,
    server: &Hello,
) -> Vec<u8> {
    codec::encode(&(
        HANDSHAKE_TAG,
        chain_id,
        signer.tag(),
        exporter_key,
        &client.nonce,
        &server.nonce,
        &client.node_id,
        &server.node_id,
    ))
}

/// Our hello and theirs, as (client's, server's).
fn client_and_server<'h>(role: Role, ours: &'h Hello, theirs: &'h Hello) -> (&'h Hello, &'h Hello) {
    match role {
        Role::Client => (ours, theirs),
        Role::Server => (theirs, ours),
    }
}

/// Checks the peer's hello against ours: same version and chain, and not our own node id.
fn check_hello(local: &Local, ours: &Hello, theirs: &Hello) -> Result<(), HandshakeError> {
    // Our own hello is not input: a mismatch is a bug in the driver.
    assert_eq!(ours.node_id, local.key.address(), "our hello carries our node id");
    assert_eq!(ours.chain_id, local.chain_id, "our hello carries our chain id");
    if theirs.version != PROTOCOL_VERSION {
        return Err(HandshakeError::WrongVersion { expected: PROTOCOL_VERSION, got: theirs.version });
    }
    if theirs.chain_id != local.chain_id {
        return Err(HandshakeError::WrongChain { expected: local.chain_id.to_string(), got: theirs.chain_id.clone() });
    }
    if theirs.node_id == ours.node_id {
        return Err(HandshakeError::SelfConnection { node: theirs.node_id });
    }
    Ok(())
}

/// Step 3: checks the peer's hello (version, chain, not ourselves) and signs our proof for this
/// session.
pub fn respond(
    local: &Local,
    ours: &Hello,
    theirs: &Hello,
    exporter_key: &[u8; EXPORTER_KEY_BYTES],
) -> Result<Proof, HandshakeError> {
    check_hello(local, ours, theirs)?;
    let (client, server) = client_and_server(local.role, ours, theirs);
    let signature = local.key.sign(&proof_signing_bytes(local.chain_id, local.role, exporter_key, client, server));
    Ok(Proof { signature })
}

/// Step 4: checks the peer's hello and proof and returns the authenticated peer's node id.
///
/// The peer must: speak our version on our chain; claim the node id its TLS certificate holds
/// (`peer_certificate_key`); be a validator; not be us; have signed this session's bytes with the
/// peer's role tag (strict verification); and not be connected already. `is_connected` is asked
/// last, once the peer is authenticated; the caller still registers the link atomically (two
/// simultaneous handshakes with one peer can both pass here), and its tie-break rule decides
/// which link survives.
#[allow(clippy::too_many_arguments)] // Each argument is a distinct fact the caller owns.
pub fn finish(
    local: &Local,
    ours: &Hello,
    theirs: &Hello,
    exporter_key: &[u8; EXPORTER_KEY_BYTES],
    proof: &Proof,
    peer_certificate_key: &NodeId,
    is_validator: impl Fn(&NodeId) -> bool,
    is_connected: impl Fn(&NodeId) -> bool,
) -> Result<NodeId, HandshakeError> {
    check_hello(local, ours, theirs)?;
    let peer = theirs.node_id;
    if peer != *peer_certificate_key {
        return Err(HandshakeError::CertificateMismatch { certificate: *peer_certificate_key, claimed: peer });
    }
    if !is_validator(&peer) {
        return Err(HandshakeError::NotAValidator { node: peer });
    }
    let (client, server) = client_and_server(local.role, ours, theirs);
    let signed = proof_signing_bytes(local.chain_id, local.role.peer(), exporter_key, client, server);
    if !verify_strict(&peer, &signed, &proof.signature) {
        return Err(HandshakeError::BadSignature { node: peer });
    }
    if is_connected(&peer) {
        return Err(HandshakeError::AlreadyConnected { node: peer });
    }
    Ok(peer)
}

pub fn encode_hello(hello: &Hello) -> Vec<u8> {
    codec::encode(hello)
}

/// Decodes a peer's hello: at most [`HANDSHAKE_MESSAGE_BYTES_MAX`] bytes, all of them used.
pub fn decode_hello(bytes: &[u8]) -> Result<Hello, HandshakeError> {
    decode("hello", bytes)
}

pub fn encode_proof(proof: &Proof) -> Vec<u8> {
    codec::encode(proof)
}

/// Decodes a peer's proof (exactly 64 bytes), rejecting trailing bytes.
pub fn decode_proof(bytes: &[u8]) -> Result<Proof, HandshakeError> {
    decode("proof", bytes)
}

/// Checks the length itself: bincode 1.3.3 ignores its byte limit when decoding from a slice
/// (bincode-org/bincode#299), so `decode_limited`'s limit alone would let a hello carry a
/// chain id as long as the frame.
fn decode<T: serde::de::DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, HandshakeError> {
    if bytes.len() > HANDSHAKE_MESSAGE_BYTES_MAX as usize {
        return Err(HandshakeError::Malformed {
            what,
            reason: format!("{} bytes, above the {HANDSHAKE_MESSAGE_BYTES_MAX}-byte limit", bytes.len()),
        });
    }
    codec::decode_limited(what, bytes, u64::from(HANDSHAKE_MESSAGE_BYTES_MAX))
        .map_err(|error| HandshakeError::Malformed { what, reason: error.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinychain_core::testkit::validator_key;

    const CHAIN: &str = "handshake-test";

    /// Validators 0..4 form the set; higher indices are outsiders.
    fn is_validator(node: &NodeId) -> bool {
        (0..4).any(|index| validator_key(index).address() == *node)
    }

    fn not_connected(_: &NodeId) -> bool {
        false
    }

    /// One TLS session: a client and a server, their hellos as sent, and the session's `K`.
    struct Session {
        client_key: Keypair,
        server_key: Keypair,
        client_hello: Hello,
        server_hello: Hello,
        exporter_key: [u8; 32],
    }

    impl Session {
        fn new(client_index: usize, server_index: usize) -> Session {
            let client_key = validator_key(client_index);
            let server_key = validator_key(server_index);
            let client_hello = start(&local(&client_key, Role::Client), [1; 32]);
            let server_hello = start(&local(&server_key, Role::Server), [2; 32]);
            Session { client_key, server_key, client_hello, server_hello, exporter_key: [0x4b; 32] }
        }

        fn client(&self) -> Local<'_> {
            local(&self.client_key, Role::Client)
        }

        fn server(&self) -> Local<'_> {
            local(&self.server_key, Role::Server)
        }

        fn client_proof(&self) -> Proof {
            respond(&self.client(), &self.client_hello, &self.server_hello, &self.exporter_key).unwrap()
        }

        fn server_proof(&self) -> Proof {
            respond(&self.server(), &self.server_hello, &self.client_hello, &self.exporter_key).unwrap()
        }

        /// The server's verdict on a client hello and proof as received, with the given
        /// certificate key, the set of validators 0..4 and no existing links.
        fn server_finish(
            &self,
            received_hello: &Hello,
            proof: &Proof,
            certificate_key: &NodeId,
        ) -> Result<NodeId, HandshakeError> {
            finish(
                &self.server(),
                &self.server_hello,
                received_hello,
                &self.exporter_key,
                proof,
                certificate_key,
                is_validator,
                not_connected,
            )
        }

        /// The client's verdict on the server's proof, with the server's real certificate key.
        fn client_finish(&self, proof: &Proof) -> Result<NodeId, HandshakeError> {
            finish(
                &self.client(),
                &self.client_hello,
                &self.server_hello,
                &self.exporter_key,
                proof,
                &self.server_key.address(),
                is_validator,
                not_connected,
            )
        }
    }

    fn local(key: &Keypair, role: Role) -> Local<'_> {
        Local { key, chain_id: CHAIN, role }
    }

    #[test]
    fn a_full_exchange_authenticates_both_ends() {
        let client_key = validator_key(0);
        let server_key = validator_key(1);
        let client = local(&client_key, Role::Client);
        let server = local(&server_key, Role::Server);
        let exporter_key = [0x5a; 32];

        // Every message crosses the wire encoding, as it would over TLS.
        let client_hello = start(&client, [1; 32]);
        let server_hello = start(&server, [2; 32]);
        let client_hello_received = decode_hello(&encode_hello(&client_hello)).unwrap();
        let server_hello_received = decode_hello(&encode_hello(&server_hello)).unwrap();
        assert_eq!(client_hello_received, client_hello);

        let client_proof = respond(&client, &client_hello, &server_hello_received, &exporter_key).unwrap();
        let server_proof = respond(&server, &server_hello, &client_hello_received, &exporter_key).unwrap();
        let client_proof_received = decode_proof(&encode_proof(&client_proof)).unwrap();
        let server_proof_received = decode_proof(&encode_proof(&server_proof)).unwrap();
        assert_eq!(encode_proof(&client_proof).len(), 64);

        let server_authenticated = finish(
            &server,
            &server_hello,
            &client_hello_received,
            &exporter_key,
            &client_proof_received,
            &client_key.address(),
            is_validator,
            not_connected,
        );
        let client_authenticated = finish(
            &client,
            &client_hello,
            &server_hello_received,
            &exporter_key,
            &server_proof_received,
            &server_key.address(),
            is_validator,
            not_connected,
        );
        assert_eq!(server_authenticated, Ok(client_key.address()));
        assert_eq!(client_authenticated, Ok(server_key.address()));
    }

    #[test]
    fn the_session_helper_succeeds_both_ways() {
        let session = Session::new(2, 3);
        assert_eq!(
            session.server_finish(&session.client_hello, &session.client_proof(), &session.client_key.address()),
            Ok(session.client_key.address())
        );
        assert_eq!(session.client_finish(&session.server_proof()), Ok(session.server_key.address()));
    }

    #[test]
    fn a_key_outside_the_validator_set_is_refused() {
        let session = Session::new(7, 1);
        let outsider = session.client_key.address();
        assert_eq!(
            session.server_finish(&session.client_hello, &session.client_proof(), &outsider),
            Err(HandshakeError::NotAValidator { node: outsider })
        );
        let session = Session::new(0, 7);
        let outsider = session.server_key.address();
        assert_eq!(
            session.client_finish(&session.server_proof()),
            Err(HandshakeError::NotAValidator { node: outsider })
        );
    }

    #[test]
    fn a_certificate_key_other_than_the_claimed_node_id_is_refused() {
        let session = Session::new(0, 1);
        let certificate = validator_key(2).address();
        assert_eq!(
            session.server_finish(&session.client_hello, &session.client_proof(), &certificate),
            Err(HandshakeError::CertificateMismatch { certificate, claimed: session.client_key.address() })
        );
    }

    #[test]
    fn a_proof_replayed_from_another_session_is_refused() {
        let earlier = Session::new(0, 1);
        let replayed = earlier.client_proof();
        // The same peers and even the same nonces, but a new TLS session and so a new K.
        let mut session = Session::new(0, 1);
        session.exporter_key = [0x77; 32];
        assert_eq!(
            session.server_finish(&session.client_hello, &replayed, &session.client_key.address()),
            Err(HandshakeError::BadSignature { node: session.client_key.address() })
        );
        assert_eq!(
            session.client_finish(&earlier.server_proof()),
            Err(HandshakeError::BadSignature { node: session.server_key.address() })
        );
    }

    #[test]
    fn a_reflected_proof_is_refused() {
        let session = Session::new(0, 1);
        // The server sends the client's own proof back.
        assert_eq!(
            session.client_finish(&session.client_proof()),
            Err(HandshakeError::BadSignature { node: session.server_key.address() })
        );
        // Roles swapped: the server signs this session's bytes under the client's role tag.
        let swapped = Proof {
            signature: session.server_key.sign(&proof_signing_bytes(
                CHAIN,
                Role::Client,
                &session.exporter_key,
                &session.client_hello,
                &session.server_hello,
            )),
        };
        assert_eq!(
            session.client_finish(&swapped),
            Err(HandshakeError::BadSignature { node: session.server_key.address() })
        );
        // A client that answers as a server is refused by the server the same way.
        let client_as_server = respond(
            &local(&session.client_key, Role::Server),
            &session.client_hello,
            &session.server_hello,
            &session.exporter_key,
        )
        .unwrap();
        assert_eq!(
            session.server_finish(&session.client_hello, &client_as_server, &session.client_key.address()),
            Err(HandshakeError::BadSignature { node: session.client_key.address() })
        );
    }

    #[test]
    fn a_peer_on_another_chain_is_refused() {
        let session = Session::new(0, 1);
        let mut foreign = session.client_hello.clone();
        foreign.chain_id = "other-chain".into();
        let expected = HandshakeError::WrongChain { expected: CHAIN.into(), got: "other-chain".into() };
        assert_eq!(
            respond(&session.server(), &session.server_hello, &foreign, &session.exporter_key),
            Err(expected.clone())
        );
        assert_eq!(
            session.server_finish(&foreign, &session.client_proof(), &session.client_key.address()),
            Err(expected)
        );
    }

    #[test]
    fn a_peer_on_another_version_is_refused() {
        let session = Session::new(0, 1);
        let mut newer = session.client_hello.clone();
        newer.version = PROTOCOL_VERSION + 1;
        let expected = HandshakeError::WrongVersion { expected: PROTOCOL_VERSION, got: PROTOCOL_VERSION + 1 };
        assert_eq!(
            respond(&session.server(), &session.server_hello, &newer, &session.exporter_key),
            Err(expected.clone())
        );
        assert_eq!(
            session.server_finish(&newer, &session.client_proof(), &session.client_key.address()),
            Err(expected)
        );
    }

    #[test]
    fn connecting_to_oneself_is_refused() {
        // A node that dialled its own address: both ends hold the same key.
        let session = Session::new(0, 0);
        let node = session.client_key.address();
        assert_eq!(
            respond(&session.client(), &session.client_hello, &session.server_hello, &session.exporter_key),
            Err(HandshakeError::SelfConnection { node })
        );
        let proof = Proof { signature: session.client_key.sign(b"anything") };
        assert_eq!(
            session.server_finish(&session.client_hello, &proof, &node),
            Err(HandshakeError::SelfConnection { node })
        );
    }

    #[test]
    fn an_already_connected_peer_is_refused_only_once_authenticated() {
        let session = Session::new(0, 1);
        let peer = session.client_key.address();
        let verdict = |proof: &Proof| {
            finish(
                &session.server(),
                &session.server_hello,
                &session.client_hello,
                &session.exporter_key,
                proof,
                &peer,
                is_validator,
                |node: &NodeId| *node == peer,
            )
        };
        assert_eq!(verdict(&session.client_proof()), Err(HandshakeError::AlreadyConnected { node: peer }));
        // A forged proof learns nothing about existing links.
        assert_eq!(verdict(&Proof { signature: Signature([0; 64]) }), Err(HandshakeError::BadSignature { node: peer }));
    }

    #[test]
    fn a_tampered_nonce_is_refused() {
        let session = Session::new(0, 1);
        let proof = session.client_proof();
        let mut tampered = session.client_hello.clone();
        tampered.nonce[31] ^= 1;
        assert_eq!(
            session.server_finish(&tampered, &proof, &session.client_key.address()),
            Err(HandshakeError::BadSignature { node: session.client_key.address() })
        );
        // The server's nonce, as the client saw it, is covered too.
        let mut client_view = Session::new(0, 1);
        client_view.server_hello.nonce[0] ^= 1;
        assert_eq!(
            client_view.client_finish(&session.server_proof()),
            Err(HandshakeError::BadSignature { node: session.server_key.address() })
        );
    }

    #[test]
    fn signing_bytes_have_the_documented_layout() {
        let session = Session::new(0, 1);
        let bytes = proof_signing_bytes(
            CHAIN,
            Role::Server,
            &session.exporter_key,
            &session.client_hello,
            &session.server_hello,
        );
        let mut expected = Vec::new();
        for text in [HANDSHAKE_TAG, CHAIN, "server"] {
            expected.extend_from_slice(&(text.len() as u64).to_le_bytes());
            expected.extend_from_slice(text.as_bytes());
        }
        expected.extend_from_slice(&session.exporter_key);
        expected.extend_from_slice(&[1; 32]);
        expected.extend_from_slice(&[2; 32]);
        expected.extend_from_slice(&session.client_key.address().0);
        expected.extend_from_slice(&session.server_key.address().0);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn exporter_context_is_the_chain_id_then_the_genesis_hash() {
        let context = exporter_context("abc", &Hash([9; 32]));
        assert_eq!(&context[..3], b"abc");
        assert_eq!(&context[3..], &[9; 32]);
        assert_eq!(EXPORTER_LABEL, b"EXPORTER-tinychain-auth-v1");
    }

    #[test]
    fn hello_encoding_has_the_documented_layout_and_rejects_trailing_bytes() {
        let hello = Session::new(0, 1).client_hello;
        let bytes = encode_hello(&hello);
        assert_eq!(bytes.len(), 2 + 8 + CHAIN.len() + 32 + 32);
        assert_eq!(&bytes[..2], &PROTOCOL_VERSION.to_le_bytes());
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(decode_hello(&trailing), Err(HandshakeError::Malformed { what: "hello", .. })));
        let mut trailing = encode_proof(&Proof { signature: Signature([3; 64]) });
        trailing.push(0);
        assert!(matches!(decode_proof(&trailing), Err(HandshakeError::Malformed { what: "proof", .. })));
    }

    #[test]
    fn oversized_and_overclaiming_hellos_are_refused() {
        // A chain id claiming 2^40 bytes in a 10-byte message.
        let mut bytes = PROTOCOL_VERSION.to_le_bytes().to_vec();
        bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(decode_hello(&bytes), Err(HandshakeError::Malformed { .. })));
        // A well-formed hello, but with a 2,000-byte chain id.
        let mut bytes = PROTOCOL_VERSION.to_le_bytes().to_vec();
        bytes.extend_from_slice(&2000u64.to_le_bytes());
        bytes.extend_from_slice(&[b'a'; 2000]);
        bytes.extend_from_slice(&[0; 64]);
        let result = decode_hello(&bytes);
        assert!(matches!(result, Err(HandshakeError::Malformed { .. })), "above the 1 KiB limit: {result:?}");
    }

    #[test]
    fn garbage_never_panics_the_decoders() {
        // A fixed xorshift stream: deterministic, and no extra dependency.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let session = Session::new(0, 1);
        let valid = [encode_hello(&session.client_hello), encode_proof(&session.client_proof())];
        for round in 0..4_000usize {
            let bytes: Vec<u8> = if round % 2 == 0 {
                let length = (next() % 200) as usize;
                (0..length).map(|_| next() as u8).collect()
            } else {
                // Mutations of valid encodings: a flipped byte, then a random cut.
                let mut bytes = valid[round % 4 / 2].clone();
                let index = (next() as usize) % bytes.len();
                bytes[index] ^= (next() as u8) | 1;
                bytes.truncate((next() as usize) % (bytes.len() + 1));
                bytes
            };
            if let Ok(hello) = decode_hello(&bytes) {
                // Whatever decodes goes through the checks without panicking either.
                let _ = session.server_finish(&hello, &session.client_proof(), &hello.node_id);
            }
            if let Ok(proof) = decode_proof(&bytes) {
                let _ = session.client_finish(&proof);
            }
        }
    }

    #[test]
    fn random_nonces_differ() {
        assert_ne!(random_nonce(), random_nonce());
    }
}
