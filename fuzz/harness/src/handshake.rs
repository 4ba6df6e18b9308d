//! Target `handshake`: the challenge-response after TLS, fed to the pure handshake functions
//! as validator 0 would run them. Two modes, picked by the first byte:
//! - raw: the rest split into a peer's `Hello` and `Proof` bytes, decoded, then answered;
//! - structured: an honest peer's hello and proof with fields changed, the wrong signer, the
//!   wrong certificate or the wrong session key.
//!
//! Oracle beyond "no panic": in structured mode `finish` admits the peer exactly when nothing
//! was changed and the peer is a validator that is neither us nor already connected; and a
//! decoded hello re-encodes to its bytes.

use crate::fixture::{Signer, VALIDATORS};
use crate::ByteFlip;
use tinychain_core::testkit::validator_key;
use tinychain_net::handshake::{
    decode_hello, decode_proof, encode_hello, finish, proof_signing_bytes, respond, start, Local, Proof, Role,
    EXPORTER_KEY_BYTES, PROTOCOL_VERSION,
};

const CHAIN_ID: &str = "tinychain-test";
const EXPORTER_KEY: [u8; EXPORTER_KEY_BYTES] = [7; EXPORTER_KEY_BYTES];

#[derive(arbitrary::Arbitrary, Debug)]
pub struct Input {
    /// We dial (client) or were dialled (server).
    pub we_dial: bool,
    pub our_nonce: [u8; 32],
    pub their_nonce: [u8; 32],
    /// Who the peer claims to be (validator 0 is us).
    pub claimed: Signer,
    /// Who really signs the proof.
    pub signer: Signer,
    /// Whose key is in the peer's TLS certificate.
    pub certificate: Signer,
    pub version: Option<u16>,
    pub chain_id: Option<String>,
    /// The peer signed with our role tag instead of its own (a reflected proof).
    pub wrong_role: bool,
    /// The peer's session key differs from ours (a relayed proof).
    pub exporter_flip: Option<ByteFlip>,
    /// The peer signed over other nonces than the ones exchanged.
    pub nonce_flip: Option<ByteFlip>,
    pub signature_flip: Option<ByteFlip>,
    pub already_connected: bool,
}

fn validators() -> Vec<tinychain_core::types::NodeId> {
    (0..VALIDATORS).map(|index| validator_key(index).address()).collect()
}

fn raw(data: &[u8]) -> String {
    let split = data.first().map_or(0, |byte| usize::from(*byte)).min(data.len().saturating_sub(1));
    let (hello_bytes, proof_bytes) = data.get(1..).unwrap_or_default().split_at(split);
    let theirs = match decode_hello(hello_bytes) {
        Ok(hello) => hello,
        Err(error) => return format!("bad hello: {error}"),
    };
    assert_eq!(encode_hello(&theirs), hello_bytes, "a decoded hello re-encodes to its bytes");
    let key = validator_key(0);
    let validators = validators();
    for role in [Role::Client, Role::Server] {
        let local = Local { key: &key, chain_id: CHAIN_ID, role };
        let ours = start(&local, [1; 32]);
        let _ = respond(&local, &ours, &theirs, &EXPORTER_KEY);
        if let Ok(proof) = decode_proof(proof_bytes) {
            let certificate = theirs.node_id;
            let _ = finish(
                &local,
                &ours,
                &theirs,
                &EXPORTER_KEY,
                &proof,
                &certificate,
                |id| validators.contains(id),
                |_| false,
            );
        }
    }
    "raw".to_string()
}

pub fn check(input: &Input) -> String {
    let key = validator_key(0);
    let role = if input.we_dial { Role::Client } else { Role::Server };
    let local = Local { key: &key, chain_id: CHAIN_ID, role };
    let ours = start(&local, input.our_nonce);
    let mut theirs =
        start(&Local { key: &input.claimed.key(), chain_id: CHAIN_ID, role: role.peer() }, input.their_nonce);
    if let Some(version) = input.version {
        theirs.version = version;
    }
    if let Some(chain_id) = &input.chain_id {
        theirs.chain_id = chain_id.clone();
    }
    // What the peer signs: its view of the session, changed as the input says.
    let mut their_exporter_key = EXPORTER_KEY;
    if let Some(flip) = input.exporter_flip {
        flip.apply(&mut their_exporter_key);
    }
    let (mut client, mut server) = match role {
        Role::Client => (ours.clone(), theirs.clone()),
        Role::Server => (theirs.clone(), ours.clone()),
    };
    if let Some(flip) = input.nonce_flip {
        flip.apply(&mut client.nonce);
        flip.apply(&mut server.nonce);
    }
    let signed_role = if input.wrong_role { role } else { role.peer() };
    let bytes = proof_signing_bytes(&theirs.chain_id, signed_role, &their_exporter_key, &client, &server);
    let mut proof = Proof { signature: input.signer.key().sign(&bytes) };
    if let Some(flip) = input.signature_flip {
        flip.apply(&mut proof.signature.0);
    }
    let responded = respond(&local, &ours, &theirs, &EXPORTER_KEY);
    let validators = validators();
    let finished = finish(
        &local,
        &ours,
        &theirs,
        &EXPORTER_KEY,
        &proof,
        &input.certificate.id(),
        |id| validators.contains(id),
        |_| input.already_connected,
    );
    let claimed = input.claimed.id();
    let honest = theirs.version == PROTOCOL_VERSION
        && theirs.chain_id == CHAIN_ID
        && claimed != key.address()
        && input.certificate.id() == claimed
        && validators.contains(&claimed)
        && input.signer.id() == claimed
        && !input.wrong_role
        && input.exporter_flip.is_none()
        && input.nonce_flip.is_none()
        && input.signature_flip.is_none()
        && !input.already_connected;
    match &finished {
        Ok(peer) => {
            assert!(honest, "admitted a peer that changed something: {input:?}");
            assert_eq!(*peer, claimed);
            assert!(responded.is_ok(), "we answer every hello we admit");
        }
        Err(error) => assert!(!honest, "refused an honest peer: {error}"),
    }
    match finished {
        Ok(_) => "admitted".to_string(),
        Err(error) => format!("refused: {error}"),
    }
}

pub fn run(data: &[u8]) -> String {
    crate::by_mode::<Input>(data, raw, check)
}
