//! Peer discovery: which addresses a node knows for each validator, where they came from, which
//! it shares and which it persists. Pure data and rules, no I/O: the peer policy (`policy`) asks
//! it what to dial and tells it what a dial found out.
//!
//! Sources, in the order of trust: the genesis file (each validator's `addr`), addresses saved by
//! an earlier run ([`PeerStore`]), seeds and manual additions (bare `host:port`, DNS names
//! allowed, whose validator is unknown until dialed), and peer exchange (`Wire::Peers` from an
//! authenticated validator). An address is *verified* once this node dialed it and authenticated
//! the validator it was filed under.
//!
//! Rules:
//! - Only genesis validators are ever filed; entries for anyone else, or for ourselves, are
//!   ignored. Learning an address never admits anyone: the TLS verifiers do that.
//! - A node shares (peer exchange) only genesis and verified addresses, so an address a peer
//!   made up is not passed on; it persists only verified addresses that are not in genesis.
//! - At most [`ADDRESSES_PER_VALIDATOR_MAX`] per validator: a new one evicts an unverified
//!   exchanged address first, never a genesis one.
//! - A seed or manual address waits in the unidentified list until a dial names its validator.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use tinychain_core::genesis::Genesis;
use tinychain_core::types::NodeId;
use tracing::{debug, warn};

/// Longest address text accepted: a DNS name is at most 253 bytes, then ':' and a 5-digit port.
pub const PEER_ADDRESS_BYTES_MAX: usize = 253 + 1 + 5;

/// Addresses a node keeps per validator, and so shares at most per validator.
pub const ADDRESSES_PER_VALIDATOR_MAX: usize = 8;

/// Where a validator can be reached: its node id and a `host:port` (the host may be a DNS name).
/// Peer exchange sends lists of these (`wire::Wire::Peers`) and the peer store keeps them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerAddress {
    pub id: NodeId,
    pub addr: String,
}

/// Where the node keeps the addresses it learned, so a restart does not depend on genesis and
/// seeds alone. The node implements it on its redb `peers` table: `saved` is what the table held
/// at start, and `save` replaces the table's contents with the list it is given.
///
/// `save` is called from the connection manager's task (the policy's `SavePeers` order) with the
/// full list of verified, non-genesis addresses (sorted, small) every time that list changes,
/// which is rare (a new address verified, or one removed). Keep it quick: a redb commit (~0.2 ms)
/// is fine; anything slower should hand the list to another thread.
pub struct PeerStore {
    pub saved: Vec<PeerAddress>,
    pub save: SavePeers,
}

/// Replaces the stored peer addresses with the list given.
pub type SavePeers = Box<dyn FnMut(&[PeerAddress]) + Send>;

impl PeerStore {
    pub fn new(saved: Vec<PeerAddress>, save: impl FnMut(&[PeerAddress]) + Send + 'static) -> PeerStore {
        PeerStore { saved, save: Box::new(save) }
    }

    /// Nothing saved and nothing kept: for tests and nodes without storage.
    pub fn none() -> PeerStore {
        PeerStore::new(Vec::new(), |_| {})
    }
}

impl std::fmt::Debug for PeerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerStore").field("saved", &self.saved.len()).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("the address is empty")]
    Empty,
    #[error("the address is {length} bytes, above the {max}-byte limit")]
    TooLong { length: usize, max: usize },
    #[error("the address {addr:?} is not host:port")]
    NotHostPort { addr: String },
    #[error("the address {addr:?} has no valid port (1-65535)")]
    BadPort { addr: String },
    #[error("the host of {addr:?} has characters a host name or IP address cannot have")]
    BadHost { addr: String },
}

/// A peer address that passed the one rule for peer addresses (`check_peer_address`): a DNS
/// name, an IPv4 address or a bracketed IPv6 address, then a port from 1 to 65535. The config's
/// seeds, `add_peer` and the transport's commands carry this type, so an address is checked once,
/// where it enters, and never again. Resolving it is the dialer's business.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct PeerAddr(String);

impl PeerAddr {
    /// Checks `text` and keeps it as it was written.
    pub fn parse(text: &str) -> Result<PeerAddr, AddressError> {
        check_peer_address(text)?;
        Ok(PeerAddr(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for PeerAddr {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<PeerAddr, AddressError> {
        PeerAddr::parse(text)
    }
}

impl TryFrom<String> for PeerAddr {
    type Error = AddressError;

    fn try_from(text: String) -> Result<PeerAddr, AddressError> {
        check_peer_address(&text)?;
        Ok(PeerAddr(text))
    }
}

impl From<PeerAddr> for String {
    fn from(addr: PeerAddr) -> String {
        addr.0
    }
}

impl std::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks that text is a plausible `host:port`: a DNS name, an IPv4 address or a bracketed IPv6
/// address, then a port from 1 to 65535. Resolving it is the dialer's business. The one rule for
/// a peer address everywhere: the config's seeds, genesis entries, `add_peer` and discovery.
pub fn check_peer_address(addr: &str) -> Result<(), AddressError> {
    if addr.is_empty() {
        return Err(AddressError::Empty);
    }
    if addr.len() > PEER_ADDRESS_BYTES_MAX {
        return Err(AddressError::TooLong { length: addr.len(), max: PEER_ADDRESS_BYTES_MAX });
    }
    let not_host_port = || AddressError::NotHostPort { addr: addr.to_string() };
    let (host, port) = addr.rsplit_once(':').ok_or_else(not_host_port)?;
    // Digits only: `u16::from_str` would also take a leading '+'.
    let port_ok = !port.is_empty()
        && port.bytes().all(|byte| byte.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|port| port != 0);
    if !port_ok {
        return Err(AddressError::BadPort { addr: addr.to_string() });
    }
    if host.is_empty() {
        return Err(not_host_port());
    }
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner.strip_suffix(']').is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        // A DNS label never starts with '-' (and an option-like host is a typo).
        !host.starts_with('-') && host.bytes().all(|byte| byte.is_ascii_alphanumeric() || b".-_".contains(&byte))
    };
    if !host_ok {
        return Err(AddressError::BadHost { addr: addr.to_string() });
    }
    Ok(())
}

/// Where an address came from. Declared from most to least trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AddressSource {
    Genesis,
    Saved,
    Manual,
    Seed,
    Exchange,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownAddress {
    pub addr: String,
    pub source: AddressSource,
    pub verified: bool,
}

/// What an identification (a dial of an unidentified address) found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identified {
    /// The address is this validator's; `verified` if the TLS handshake proved it.
    Validator { id: NodeId, verified: bool },
    /// The address is ours.
    Ourselves,
}

/// Every address this node knows, per genesis validator, plus the unidentified ones.
#[derive(Clone, Debug)]
pub struct AddressBook {
    local: NodeId,
    /// Every genesis validator but ourselves, each with its addresses (oldest first).
    by_validator: BTreeMap<NodeId, Vec<KnownAddress>>,
    /// Seed and manual addresses whose validator is not known yet, in the order added.
    unidentified: Vec<(String, AddressSource)>,
    unidentified_max: usize,
}

impl AddressBook {
    /// The genesis addresses of every validator but `local`. Invalid genesis addresses are
    /// skipped with a warning (the validator can still dial us, or be learned elsewhere).
    pub fn new(genesis: &Genesis, local: NodeId, unidentified_max: usize) -> AddressBook {
        let mut book = AddressBook { local, by_validator: BTreeMap::new(), unidentified: Vec::new(), unidentified_max };
        for validator in &genesis.validators {
            if validator.id == local {
                continue;
            }
            book.by_validator.insert(validator.id, Vec::new());
            if let Err(error) = check_peer_address(&validator.addr) {
                warn!(validator = %validator.id, %error, "ignoring the genesis address of a validator");
                continue;
            }
            book.file(validator.id, &validator.addr, AddressSource::Genesis, false);
        }
        book
    }

    pub fn is_validator(&self, id: &NodeId) -> bool {
        self.by_validator.contains_key(id)
    }

    /// Every validator but ourselves, in id order.
    pub fn validators(&self) -> impl Iterator<Item = &NodeId> {
        self.by_validator.keys()
    }

    pub fn addresses_of(&self, id: &NodeId) -> &[KnownAddress] {
        self.by_validator.get(id).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The address to dial for the `attempt`-th time: each known address in turn.
    pub fn dial_address(&self, id: &NodeId, attempt: usize) -> Option<&str> {
        let addresses = self.addresses_of(id);
        (!addresses.is_empty()).then(|| addresses[attempt % addresses.len()].addr.as_str())
    }

    pub fn unidentified(&self) -> impl Iterator<Item = &str> {
        self.unidentified.iter().map(|(addr, _)| addr.as_str())
    }

    /// Is this address filed anywhere (under a validator or unidentified)?
    pub fn knows(&self, addr: &str) -> bool {
        self.unidentified.iter().any(|(known, _)| known == addr)
            || self.by_validator.values().flatten().any(|known| known.addr == addr)
    }

    /// Addresses saved by an earlier run: filed as verified (they were, when saved).
    pub fn load_saved(&mut self, saved: &[PeerAddress]) {
        for entry in saved {
            if let Err(error) = check_peer_address(&entry.addr) {
                debug!(%error, "ignoring a saved peer address");
                continue;
            }
            self.file(entry.id, &entry.addr, AddressSource::Saved, true);
        }
    }

    /// Adds a seed or manual address. Returns false if it was known already.
    pub fn add_unidentified(&mut self, addr: &PeerAddr, source: AddressSource) -> bool {
        if self.knows(addr.as_str()) {
            return false;
        }
        if self.unidentified.len() >= self.unidentified_max {
            warn!(%addr, max = self.unidentified_max, "ignoring an address: too many unidentified addresses");
            return false;
        }
        self.unidentified.push((addr.to_string(), source));
        true
    }

    /// Files an unidentified address under the validator a dial found there (or drops it, if it
    /// is ours). Returns true if the book changed.
    pub fn identify(&mut self, addr: &str, found: Identified) -> bool {
        let Some(position) = self.unidentified.iter().position(|(known, _)| known == addr) else {
            return false;
        };
        let (addr, source) = self.unidentified.remove(position);
        match found {
            Identified::Ourselves => {
                debug!(addr, "forgetting an address: it is our own");
            }
            Identified::Validator { id, verified } => {
                self.file(id, &addr, source, verified);
            }
        }
        true
    }

    /// A dial of `addr` authenticated `id`: the address, if still filed under `id`, is verified.
    /// (One removed while the dial was in flight stays removed.)
    pub fn mark_verified(&mut self, id: NodeId, addr: &str) -> bool {
        let Some(known) =
            self.by_validator.get_mut(&id).and_then(|addresses| addresses.iter_mut().find(|known| known.addr == addr))
        else {
            return false;
        };
        let changed = !known.verified;
        known.verified = true;
        changed
    }

    /// A dial of `addr`, filed under `expected`, reached another validator, `found`. The
    /// address moves to `found`, unless genesis put it under `expected` (genesis is kept:
    /// the validator may only have moved for a while).
    pub fn reached_another(&mut self, expected: NodeId, addr: &str, found: NodeId) -> bool {
        let Some(addresses) = self.by_validator.get_mut(&expected) else {
            return false;
        };
        let Some(position) = addresses.iter().position(|known| known.addr == addr) else {
            return false;
        };
        if addresses[position].source == AddressSource::Genesis {
            return false;
        }
        let moved = addresses.remove(position);
        if found != self.local {
            self.file(found, &moved.addr, moved.source, false);
        }
        true
    }

    /// Peer exchange: addresses an authenticated validator sent. Returns how many were new.
    pub fn learn(&mut self, entries: &[PeerAddress]) -> usize {
        let mut learned = 0;
        for entry in entries {
            if check_peer_address(&entry.addr).is_err() {
                debug!(addr = %entry.addr.escape_debug(), "ignoring an exchanged address: not host:port");
                continue;
            }
            let known = self.addresses_of(&entry.id).iter().any(|known| known.addr == entry.addr);
            if !known && self.file(entry.id, &entry.addr, AddressSource::Exchange, false) {
                learned += 1;
            }
        }
        learned
    }

    /// Forgets an address wherever it is filed (genesis ones included, until restart).
    pub fn remove(&mut self, addr: &str) -> bool {
        let before = self.unidentified.len();
        self.unidentified.retain(|(known, _)| known != addr);
        let mut removed = self.unidentified.len() != before;
        for addresses in self.by_validator.values_mut() {
            let before = addresses.len();
            addresses.retain(|known| known.addr != addr);
            removed |= addresses.len() != before;
        }
        removed
    }

    /// What this node tells peers (`Wire::Peers`): genesis and verified addresses.
    pub fn shareable(&self) -> Vec<PeerAddress> {
        self.entries(|known| known.verified || known.source == AddressSource::Genesis)
    }

    /// What the [`PeerStore`] keeps: verified addresses that genesis does not already give.
    pub fn persistent(&self) -> Vec<PeerAddress> {
        self.entries(|known| known.verified && known.source != AddressSource::Genesis)
    }

    fn entries(&self, keep: impl Fn(&KnownAddress) -> bool) -> Vec<PeerAddress> {
        let mut entries: Vec<PeerAddress> = self
            .by_validator
            .iter()
            .flat_map(|(id, addresses)| {
                addresses
                    .iter()
                    .filter(|known| keep(known))
                    .map(|known| PeerAddress { id: *id, addr: known.addr.clone() })
            })
            .collect();
        entries.sort();
        entries.dedup();
        entries
    }

    /// Files an address under a validator, or upgrades the entry already there (verified is
    /// never lost; the more trusted source wins). Returns true if the book changed.
    fn file(&mut self, id: NodeId, addr: &str, source: AddressSource, verified: bool) -> bool {
        if id == self.local {
            return false;
        }
        let Some(addresses) = self.by_validator.get_mut(&id) else {
            debug!(node = %id, "ignoring an address for a node outside genesis");
            return false;
        };
        if let Some(known) = addresses.iter_mut().find(|known| known.addr == addr) {
            let upgraded = KnownAddress {
                addr: known.addr.clone(),
                source: known.source.min(source),
                verified: known.verified || verified,
            };
            let changed = *known != upgraded;
            *known = upgraded;
            return changed;
        }
        if addresses.len() >= ADDRESSES_PER_VALIDATOR_MAX {
            // Evict the least trusted entry (latest source, unverified first, oldest first), if
            // it is less trusted than the newcomer; genesis entries are never evicted.
            let rank = |known: &KnownAddress| (known.source, !known.verified);
            let newcomer = (source, !verified);
            let victim = addresses
                .iter()
                .enumerate()
                .filter(|(_, known)| known.source != AddressSource::Genesis)
                .max_by_key(|(index, known)| (rank(known), std::cmp::Reverse(*index)))
                .map(|(index, known)| (index, rank(known)));
            match victim {
                Some((index, victim_rank)) if victim_rank >= newcomer => {
                    addresses.remove(index);
                }
                _ => return false,
            }
        }
        addresses.push(KnownAddress { addr: addr.to_string(), source, verified });
        true
    }
}

/// The validators a genesis names, as a set.
pub fn genesis_validators(genesis: &Genesis) -> BTreeSet<NodeId> {
    genesis.validators.iter().map(|validator| validator.id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinychain_core::testkit::{fast_genesis, seeded_key, validator_key};

    fn id(index: usize) -> NodeId {
        validator_key(index).address()
    }

    fn addr(text: &str) -> PeerAddr {
        PeerAddr::parse(text).unwrap()
    }

    fn book() -> AddressBook {
        AddressBook::new(&fast_genesis(4, 0), id(0), 4)
    }

    fn peer(index: usize, addr: &str) -> PeerAddress {
        PeerAddress { id: id(index), addr: addr.into() }
    }

    #[test]
    fn addresses_are_checked_as_host_port() {
        for good in ["127.0.0.1:7740", "node-1.example.org:1", "[::1]:7740", "localhost:65535", "a_b:9"] {
            assert_eq!(check_peer_address(good), Ok(()), "{good}");
        }
        let cases = [
            ("", AddressError::Empty),
            ("localhost", AddressError::NotHostPort { addr: "localhost".into() }),
            (":7740", AddressError::NotHostPort { addr: ":7740".into() }),
            ("host:0", AddressError::BadPort { addr: "host:0".into() }),
            ("host:65536", AddressError::BadPort { addr: "host:65536".into() }),
            ("host:+80", AddressError::BadPort { addr: "host:+80".into() }),
            ("ho st:80", AddressError::BadHost { addr: "ho st:80".into() }),
            ("[::1:80", AddressError::BadHost { addr: "[::1:80".into() }),
            ("::1:80", AddressError::BadHost { addr: "::1:80".into() }),
        ];
        for (addr, expected) in cases {
            assert_eq!(check_peer_address(addr), Err(expected), "{addr:?}");
        }
        let long = format!("{}:1", "a".repeat(PEER_ADDRESS_BYTES_MAX));
        assert!(matches!(check_peer_address(&long), Err(AddressError::TooLong { .. })));
    }

    #[test]
    fn genesis_addresses_are_filed_for_everyone_but_ourselves() {
        let book = book();
        assert_eq!(book.validators().count(), 3);
        assert!(!book.is_validator(&id(0)));
        assert_eq!(book.dial_address(&id(1), 0), Some("127.0.0.1:7741"));
        assert_eq!(book.dial_address(&id(1), 5), Some("127.0.0.1:7741"), "one address: every attempt uses it");
        let shared = book.shareable();
        assert_eq!(shared, {
            let mut expected = vec![peer(1, "127.0.0.1:7741"), peer(2, "127.0.0.1:7742"), peer(3, "127.0.0.1:7743")];
            expected.sort();
            expected
        });
        assert!(book.persistent().is_empty(), "genesis addresses are not persisted");
    }

    #[test]
    fn exchanged_addresses_are_dialed_but_not_shared_or_saved_until_verified() {
        let mut book = book();
        let outsider = PeerAddress { id: seeded_key("outsider", 0).address(), addr: "evil:1".into() };
        let learned = book.learn(&[
            peer(1, "moved.example:7741"),
            peer(0, "me.example:1"),
            outsider,
            peer(2, "not an address"),
            peer(1, "127.0.0.1:7741"),
        ]);
        assert_eq!(learned, 1, "only the new, valid address of another validator is learned");
        assert_eq!(book.dial_address(&id(1), 1), Some("moved.example:7741"));
        assert!(!book.shareable().contains(&peer(1, "moved.example:7741")));
        assert!(book.persistent().is_empty());

        assert!(book.mark_verified(id(1), "moved.example:7741"));
        assert!(book.shareable().contains(&peer(1, "moved.example:7741")));
        assert_eq!(book.persistent(), vec![peer(1, "moved.example:7741")]);
        assert!(!book.mark_verified(id(1), "moved.example:7741"), "no change the second time");
        assert!(!book.mark_verified(id(1), "never.example:1"), "an address not filed is not filed by verifying it");
        assert!(!book.knows("never.example:1"));
    }

    #[test]
    fn a_full_validator_list_evicts_unverified_exchanged_addresses_first_and_never_genesis() {
        let mut book = book();
        let exchanged: Vec<PeerAddress> = (0..20).map(|port| peer(1, &format!("x.example:{}", port + 1))).collect();
        book.learn(&exchanged);
        let addresses = book.addresses_of(&id(1));
        assert_eq!(addresses.len(), ADDRESSES_PER_VALIDATOR_MAX);
        assert_eq!(addresses[0].source, AddressSource::Genesis);
        // A newcomer displaces the oldest unverified exchanged address.
        assert_eq!(book.learn(&[peer(1, "newest.example:1")]), 1);
        assert_eq!(book.addresses_of(&id(1)).last().map(|known| known.addr.as_str()), Some("newest.example:1"));
        assert_eq!(book.addresses_of(&id(1))[0].source, AddressSource::Genesis);
        // A saved (verified) address displaces an unverified exchanged one too.
        book.load_saved(&[peer(1, "saved.example:1")]);
        assert!(book.addresses_of(&id(1)).iter().any(|known| known.addr == "saved.example:1" && known.verified));
        // Once every non-genesis entry is verified, an unverified newcomer is dropped.
        let filed: Vec<String> = book.addresses_of(&id(1)).iter().map(|known| known.addr.clone()).collect();
        for addr in &filed {
            book.mark_verified(id(1), addr);
        }
        assert_eq!(book.learn(&[peer(1, "late.example:1")]), 0);
        assert!(book.addresses_of(&id(1)).iter().all(|known| known.verified || known.source == AddressSource::Genesis));
    }

    #[test]
    fn unidentified_addresses_wait_for_a_dial_to_name_their_validator() {
        let mut book = book();
        assert!(book.add_unidentified(&addr("seed.example:7740"), AddressSource::Seed));
        assert!(!book.add_unidentified(&addr("seed.example:7740"), AddressSource::Seed), "known already");
        assert!(!book.add_unidentified(&addr("127.0.0.1:7741"), AddressSource::Manual), "a genesis address");
        assert!(PeerAddr::parse("nonsense").is_err(), "only a checked address reaches the book");
        assert_eq!(book.unidentified().collect::<Vec<_>>(), ["seed.example:7740"]);

        // A claim the TLS handshake did not prove is filed but not verified.
        assert!(book.identify("seed.example:7740", Identified::Validator { id: id(2), verified: false }));
        assert_eq!(book.unidentified().count(), 0);
        assert!(book.addresses_of(&id(2)).iter().any(|known| known.addr == "seed.example:7740" && !known.verified));
        assert!(book.persistent().is_empty());

        assert!(book.add_unidentified(&addr("me.example:7740"), AddressSource::Manual));
        assert!(book.identify("me.example:7740", Identified::Ourselves));
        assert!(!book.knows("me.example:7740"));

        for port in 1..=4 {
            assert!(book.add_unidentified(&addr(&format!("m.example:{port}")), AddressSource::Manual));
        }
        assert!(!book.add_unidentified(&addr("m.example:5"), AddressSource::Manual), "the cap holds");
    }

    #[test]
    fn an_address_that_answers_as_another_validator_moves_unless_genesis_put_it_there() {
        let mut book = book();
        book.learn(&[peer(1, "stale.example:1")]);
        assert!(book.reached_another(id(1), "stale.example:1", id(2)));
        assert!(book.addresses_of(&id(2)).iter().any(|known| known.addr == "stale.example:1"));
        assert!(!book.addresses_of(&id(1)).iter().any(|known| known.addr == "stale.example:1"));
        assert!(!book.reached_another(id(1), "127.0.0.1:7741", id(2)), "genesis is kept");
    }

    #[test]
    fn saved_addresses_load_as_verified_and_removal_forgets_everywhere() {
        let mut book = book();
        book.load_saved(&[peer(3, "saved.example:9"), peer(0, "me:1")]);
        assert_eq!(book.persistent(), vec![peer(3, "saved.example:9")]);
        assert!(book.remove("saved.example:9"));
        assert!(book.remove("127.0.0.1:7743"), "a genesis address can be removed too");
        assert_eq!(book.dial_address(&id(3), 0), None);
        assert!(!book.remove("saved.example:9"));
    }
}
