//! The wire envelope: what one frame carries once a link is authenticated. This module owns the
//! `Wire` enum, its encoding and every check made on a decoded envelope.
//!
//! The payload of every frame after the handshake is one [`Wire`] value, encoded with the core's
//! codec (`tinychain_core::codec`: bincode 1.3.3, fixed-width integers, trailing bytes rejected)
//! and decoded with the frame limit as its byte limit. The core's messages travel inside
//! [`Wire::Core`]; the other variants belong to the network alone (liveness and peer exchange)
//! and never reach the core. A peer that sends a payload [`Wire::decode`] refuses has broken the
//! protocol: the link is closed and the peer scored down (see `policy`).

use crate::frame::{encode_frame, FRAME_BYTES_MAX};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tinychain_core::codec;
use tinychain_core::limits::VALIDATORS_MAX;
use tinychain_core::message::Message;

// The peer-exchange entry and its limits belong to the address book, which is built without the
// transport; they are named here too, where the envelope carries them.
pub use crate::discovery::{PeerAddress, ADDRESSES_PER_VALIDATOR_MAX, PEER_ADDRESS_BYTES_MAX};

/// Most entries in one [`Wire::Peers`]: an honest node never knows more than this many
/// shareable addresses.
pub const PEERS_PER_MESSAGE_MAX: usize = VALIDATORS_MAX * ADDRESSES_PER_VALIDATOR_MAX;

/// One frame's payload on an authenticated link.
// Lives only between decoding and dispatch, and is nearly always `Core`: no box.
#[allow(clippy::large_enum_variant)]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Wire {
    /// A message of the core, delivered to the driver as `NetEvent::MessageReceived`.
    Core(Message),
    /// Sent every ping interval by each end; answered with a `Pong` carrying the same number.
    Ping(u64),
    Pong(u64),
    /// Validator addresses the sender knows (peer exchange), sent once when a link comes up.
    Peers(Vec<PeerAddress>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("malformed wire payload: {reason}")]
    Malformed { reason: String },
    #[error("a peer list of {count} entries, above the {max}-entry limit")]
    TooManyPeers { count: usize, max: usize },
    #[error("a peer address of {length} bytes, above the {max}-byte limit")]
    AddressTooLong { length: usize, max: usize },
    #[error("the envelope encodes to {length} bytes, above the {max}-byte frame limit")]
    TooLarge { length: usize, max: usize },
}

impl Wire {
    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Wire::Core(message) => message.kind(),
            Wire::Ping(_) => "ping",
            Wire::Pong(_) => "pong",
            Wire::Peers(_) => "peers",
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes one payload: at most the frame limit, all bytes used, and no peer list or address
    /// larger than an honest node sends.
    pub fn decode(bytes: &[u8]) -> Result<Wire, WireError> {
        let wire: Wire = codec::decode_limited("wire envelope", bytes, u64::from(FRAME_BYTES_MAX))
            .map_err(|error| WireError::Malformed { reason: error.to_string() })?;
        if let Wire::Peers(peers) = &wire {
            if peers.len() > PEERS_PER_MESSAGE_MAX {
                return Err(WireError::TooManyPeers { count: peers.len(), max: PEERS_PER_MESSAGE_MAX });
            }
            if let Some(long) = peers.iter().find(|peer| peer.addr.len() > PEER_ADDRESS_BYTES_MAX) {
                return Err(WireError::AddressTooLong { length: long.addr.len(), max: PEER_ADDRESS_BYTES_MAX });
            }
        }
        Ok(wire)
    }

    /// The complete frame (length prefix and payload), shared so a broadcast encodes once.
    pub fn to_frame(&self) -> Result<Arc<[u8]>, WireError> {
        let payload = self.encode();
        let length = payload.len();
        encode_frame(&payload).map(Arc::from).map_err(|_| WireError::TooLarge { length, max: FRAME_BYTES_MAX as usize })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinychain_core::testkit::validator_key;
    use tinychain_core::types::{Checkpoint, Hash};

    fn status() -> Message {
        Message::Status {
            tip: Checkpoint { height: 4, hash: Hash([4; 32]) },
            finalized: Checkpoint { height: 2, hash: Hash([2; 32]) },
        }
    }

    #[test]
    fn every_variant_round_trips() {
        let peers = vec![PeerAddress { id: validator_key(0).address(), addr: "node0.example:7740".into() }];
        for wire in [Wire::Core(status()), Wire::Ping(7), Wire::Pong(u64::MAX), Wire::Peers(peers), Wire::Peers(vec![])]
        {
            assert_eq!(Wire::decode(&wire.encode()), Ok(wire.clone()), "{}", wire.kind());
        }
    }

    #[test]
    fn the_core_message_follows_a_four_byte_variant_index() {
        let bytes = Wire::Core(status()).encode();
        assert_eq!(&bytes[..4], &[0, 0, 0, 0]);
        assert_eq!(&bytes[4..], &status().encode()[..]);
        assert_eq!(Wire::Ping(1).encode(), [1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn trailing_bytes_and_garbage_are_refused() {
        let mut bytes = Wire::Ping(3).encode();
        bytes.push(0);
        assert!(matches!(Wire::decode(&bytes), Err(WireError::Malformed { .. })));
        for garbage in [&[][..], &[9, 0, 0, 0][..], &[0xff; 64][..], b"GET / HTTP/1.1\r\n"] {
            assert!(Wire::decode(garbage).is_err(), "{garbage:02x?}");
        }
    }

    #[test]
    fn a_peer_list_claiming_more_entries_than_bytes_is_refused_without_allocating() {
        let mut bytes = 3u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(matches!(Wire::decode(&bytes), Err(WireError::Malformed { .. })));
    }

    #[test]
    fn oversized_peer_lists_and_addresses_are_refused() {
        let id = validator_key(0).address();
        let many = vec![PeerAddress { id, addr: "a:1".into() }; PEERS_PER_MESSAGE_MAX + 1];
        assert_eq!(
            Wire::decode(&Wire::Peers(many).encode()),
            Err(WireError::TooManyPeers { count: PEERS_PER_MESSAGE_MAX + 1, max: PEERS_PER_MESSAGE_MAX })
        );
        let long = vec![PeerAddress { id, addr: "a".repeat(PEER_ADDRESS_BYTES_MAX + 1) }];
        assert!(matches!(Wire::decode(&Wire::Peers(long).encode()), Err(WireError::AddressTooLong { .. })));
    }

    #[test]
    fn frames_carry_the_payload_length() {
        let frame = Wire::Pong(9).to_frame().unwrap();
        let payload = Wire::Pong(9).encode();
        assert_eq!(&frame[..4], &(payload.len() as u32).to_be_bytes());
        assert_eq!(&frame[4..], &payload[..]);
    }
}
