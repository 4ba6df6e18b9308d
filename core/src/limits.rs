//! Every limit the core enforces, in one place, so an operator or reviewer can see them all.
//!
//! Consensus limits (those a block must respect) are chain parameters in the genesis file; the
//! constants here bound memory and work for untrusted input and are local policy: two nodes may
//! differ in them without disagreeing about the chain.

/// Largest encoded wire message the codec will decode. A block of `block_bytes_max` plus framing
/// must fit; a sync response carries several blocks but is cut to fit too.
pub const MESSAGE_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// Longest chain id accepted in a genesis file (bytes, ASCII).
pub const CHAIN_ID_BYTES_MAX: usize = 32;

/// Most validators a genesis may name. Election and vote tallies are linear in this.
pub const VALIDATORS_MAX: usize = 1024;

/// Default consensus limits, chosen by `cargo bench --bench core` (see ARCHITECTURE.md):
/// a 10,000-transfer block verifies in well under `block_interval_ms` on two cores.
pub const BLOCK_TRANSFERS_MAX_DEFAULT: u32 = 10_000;
/// Default byte bound on one encoded block (a transfer encodes to 168 bytes).
pub const BLOCK_BYTES_MAX_DEFAULT: u32 = 4 * 1024 * 1024;

/// Pending transfers the mempool holds in total; the lowest fee is evicted past this.
pub const MEMPOOL_TXS_MAX: usize = 50_000;
/// Pending transfers one sender may have queued (consecutive nonces).
pub const MEMPOOL_TXS_PER_SENDER_MAX: usize = 256;

/// Mempool sync (see `node`): ids in one `PoolAnnounce`, and ids asked for in one `GetPooled`
/// (one request in flight per peer). 4,096 ids are 128 KiB; 1,024 transfers about 170 KiB.
pub const POOL_ANNOUNCE_IDS_MAX: usize = 4_096;
pub const POOL_FETCH_IDS_MAX: usize = 1_024;
/// How long a `GetPooled` may stay unanswered before the node gives up syncing its mempool
/// with that peer (the bounded wait then decides when the node counts as synced).
pub const POOL_FETCH_TIMEOUT_MS: u64 = 5_000;

/// Transfers from peers held until their sender's earlier nonces arrive (they came out of
/// order); past this, such transfers are refused as before.
pub const GAPPED_TXS_MAX: usize = 10_000;

/// Evidence (see `evidence`): verified pieces held, one per offence, until committed and too old
/// to matter; headers watched for a second one on the same parent; votes watched per
/// validator for a conflicting one; and how far below the tip the watch looks.
pub const EVIDENCE_POOL_MAX: usize = 1_024;
pub const EVIDENCE_HEADERS_WATCHED_MAX: usize = 16_384;
pub const EVIDENCE_VOTES_WATCHED_PER_VALIDATOR_MAX: usize = 1_024;
pub const EVIDENCE_WATCH_BLOCKS: u64 = 1_024;

/// Reports held per validator that the chain has not recorded yet.
pub const REPORT_POOL_PER_VALIDATOR_MAX: usize = 16;

/// Blocks kept whose parent is unknown (waiting for sync), in total.
pub const ORPHAN_BLOCKS_MAX: usize = 256;

/// Side-branch blocks kept above the final block; past this the lowest are pruned.
pub const SIDE_BLOCKS_MAX: usize = 4_096;

/// Blocks sent in one sync response, and the bytes they may take together.
pub const SYNC_BLOCKS_PER_RESPONSE_MAX: usize = 64;
pub const SYNC_RESPONSE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// How long a sync request may stay unanswered before it is sent again (or to another peer).
pub const SYNC_RETRY_MS: u64 = 2_000;
/// Hashes in a block locator (exponentially spaced back from the tip).
pub const LOCATOR_HASHES_MAX: usize = 64;

/// Peers a node forwards a block, report or evidence to when it is not the message's origin
/// (and a transfer, while the sender's links are not known yet; see `node::relay`). The origin
/// sends to every peer; relays pass on what a dishonest origin sent to some peers only, and
/// without a bound every message would cost N^2 deliveries. Networks of up to this many + 1
/// validators relay to everyone.
pub const RELAY_FANOUT: usize = 6;

/// How long a node waits after a new link before telling its other peers (`Message::Links`),
/// so a node that comes up and links with everyone announces once, not once per link. Until
/// then peers believe the link is not there and relay to its far end: duplicates, never a gap.
/// A link that goes down is announced at once.
pub const LINKS_ANNOUNCE_DELAY_MS: u64 = 200;

/// Transfer gossip goes out in batches (`Message::Transfers`, see `node::relay`): a transfer a
/// client submitted waits at most `GOSSIP_BATCH_WINDOW_MS` for others to go with it (relayed
/// ones go at the end of their step), and one message carries at most
/// `GOSSIP_BATCH_TRANSFERS_MAX` (about 170 KiB; a node takes no more from one message). One
/// message per batch rather than per transfer: fewer frames, TLS records, system calls and
/// core steps on every link, for at most 20 ms at the first hop.
pub const GOSSIP_BATCH_WINDOW_MS: u64 = 20;
pub const GOSSIP_BATCH_TRANSFERS_MAX: usize = 1_024;

/// Message ids remembered to relay each gossiped message once.
pub const SEEN_MESSAGES_MAX: usize = 100_000;

/// Verified signatures remembered so a transfer checked in the mempool is not checked again.
pub const SIGNATURE_CACHE_ENTRIES_MAX: usize = 200_000;

/// Blocks the core keeps in memory below the final block (for RPC-free sync answers it reads
/// storage through the driver; this only bounds the in-memory tree).
pub const RECENT_FINAL_BLOCKS_KEPT: u64 = 64;
