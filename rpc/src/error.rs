//! The error codes a node answers with: JSON-RPC's `code` numbers.

/// JSON-RPC error codes a node answers with. The -326xx/-327xx ones are JSON-RPC 2.0's own;
/// -32007 and -32010 are the jsonrpsee server's (request too big, batch too big).
pub mod code {
    /// The block, height or transfer asked for does not exist.
    pub const NOT_FOUND: i32 = -32001;
    /// `submit_tx`: the node did not admit the transfer.
    pub const TX_REJECTED: i32 = -32002;
    /// An admin method called by a client that is not allowed to.
    pub const ADMIN_ONLY: i32 = -32003;
    /// The request body is larger than the node accepts.
    pub const OVERSIZED_REQUEST: i32 = -32007;
    /// More calls in one batch than the node answers.
    pub const BATCH_TOO_BIG: i32 = -32010;
    pub const PARSE_ERROR: i32 = -32700;
    pub const INVALID_REQUEST: i32 = -32600;
    pub const METHOD_NOT_FOUND: i32 = -32601;
    pub const INVALID_PARAMS: i32 = -32602;
    pub const INTERNAL_ERROR: i32 = -32603;
}
