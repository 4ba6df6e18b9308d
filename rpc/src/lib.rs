//! tinychain-rpc: the JSON-RPC 2.0 schema of a tinychain node, written once and used by both
//! sides: the node's server (`tinychain-node`) and every client (`tinychain-wallet`, the
//! `tinychain` command line, tests). It owns the method names, the limits clients may ask for,
//! and the error codes. `docs/rpc.md` documents the same schema for people.

/// `get_history`: transfers returned when the client gives no limit, and the most it may ask for.
pub const HISTORY_LIMIT_DEFAULT: usize = 50;
pub const HISTORY_LIMIT_MAX: usize = 500;
/// `get_mempool`: transfers listed when the client gives no limit, and the most it may ask for.
pub const MEMPOOL_LIMIT_DEFAULT: usize = 100;
pub const MEMPOOL_LIMIT_MAX: usize = 1_000;
/// Largest encoded transfer `submit_tx` decodes (a transfer with a 32-byte chain id encodes to
/// under 200 bytes).
pub const TRANSFER_BYTES_MAX: u64 = 1_024;

/// Every method a node answers.
pub const METHODS: &[&str] = &[
    "status",
    "get_block",
    "get_header",
    "get_tx",
    "get_account",
    "get_history",
    "get_mempool",
    "get_election",
    "get_peers",
    "estimate_fee",
    "submit_tx",
    "add_peer",
    "remove_peer",
];

/// The methods only an admin client may call (the node's `rpc.admin` setting).
pub const ADMIN_METHODS: &[&str] = &["add_peer", "remove_peer"];

/// JSON-RPC error codes a node answers with. The -326xx/-327xx ones are JSON-RPC 2.0's own.
pub mod code {
    /// The block, height or transfer asked for does not exist.
    pub const NOT_FOUND: i32 = -32001;
    /// `submit_tx`: the node did not admit the transfer; `data.code` says why.
    pub const TX_REJECTED: i32 = -32002;
    /// An admin method called by a client that is not allowed to.
    pub const ADMIN_ONLY: i32 = -32003;
    /// The request body is larger than the node accepts.
    pub const OVERSIZED_REQUEST: i32 = -32007;
    pub const PARSE_ERROR: i32 = -32700;
    pub const INVALID_REQUEST: i32 = -32600;
    pub const METHOD_NOT_FOUND: i32 = -32601;
    pub const INVALID_PARAMS: i32 = -32602;
    pub const INTERNAL_ERROR: i32 = -32603;
}
