//! The errors a node answers with: JSON-RPC's `code` numbers, and the `data.code` names that say
//! why in a form a client can branch on (the `message` is for people and may change).

use serde::{Deserialize, Serialize};

/// JSON-RPC error codes a node answers with. The -326xx/-327xx ones are JSON-RPC 2.0's own;
/// -32007 and -32010 are the jsonrpsee server's (request too big, batch too big), and -32009 is
/// jsonrpsee's "server is busy, try again later", which the node answers itself.
pub mod code {
    /// The block, height or transfer asked for does not exist.
    pub const NOT_FOUND: i32 = -32001;
    /// `submit_tx`: the node did not admit the transfer; `data.code` says why.
    pub const TX_REJECTED: i32 = -32002;
    /// An admin method called by a client that is not allowed to.
    pub const ADMIN_ONLY: i32 = -32003;
    /// The request body is larger than the node accepts.
    pub const OVERSIZED_REQUEST: i32 = -32007;
    /// The node is overloaded: its queue of calls was full, or the call waited in it too long.
    /// The node did not act on the call (a submit admitted nothing): send it again later.
    pub const BUSY: i32 = -32009;
    /// More calls in one batch than the node answers.
    pub const BATCH_TOO_BIG: i32 = -32010;
    pub const PARSE_ERROR: i32 = -32700;
    pub const INVALID_REQUEST: i32 = -32600;
    pub const METHOD_NOT_FOUND: i32 = -32601;
    pub const INVALID_PARAMS: i32 = -32602;
    pub const INTERNAL_ERROR: i32 = -32603;
}

/// `error.data` of every error the node itself answers (all but JSON-RPC's -32700, -32600 and
/// -32601 and the server's -32010, which come before a method runs): `{"code": "nonce_used"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorData {
    /// One of `data_code::ALL` (a newer node may add more).
    pub code: String,
}

/// The `data.code` names, stable snake_case; `docs/rpc.md` ("Error codes") gives each one's
/// meaning.
pub mod data_code {
    /// -32602: a param is missing, of the wrong type or out of range (the message names it).
    pub const INVALID_PARAMS: &str = "invalid_params";
    /// -32001.
    pub const NOT_FOUND: &str = "not_found";
    /// -32003.
    pub const ADMIN_ONLY: &str = "admin_only";
    /// -32007.
    pub const REQUEST_TOO_LARGE: &str = "request_too_large";

    // -32002, `submit_tx`: why the transfer was not admitted. All but `journal_full` are the
    // core's `TxRejection::code`s: a rule the transfer breaks on its own...
    pub const WRONG_CHAIN: &str = "wrong_chain";
    pub const ZERO_AMOUNT: &str = "zero_amount";
    pub const BAD_SIGNATURE: &str = "bad_signature";
    pub const WRONG_NONCE: &str = "wrong_nonce";
    pub const INSUFFICIENT_BALANCE: &str = "insufficient_balance";
    pub const AMOUNT_OVERFLOW: &str = "amount_overflow";
    pub const RECIPIENT_BALANCE_OVERFLOW: &str = "recipient_balance_overflow";
    // ...or the mempool's policy against what is pending...
    pub const DUPLICATE: &str = "duplicate";
    pub const NONCE_USED: &str = "nonce_used";
    pub const NONCE_GAP: &str = "nonce_gap";
    pub const FEE_TOO_LOW: &str = "fee_too_low";
    pub const REPLACEMENT_FEE_TOO_LOW: &str = "replacement_fee_too_low";
    pub const INSUFFICIENT_BALANCE_WITH_PENDING: &str = "insufficient_balance_with_pending";
    pub const PENDING_AMOUNT_OVERFLOW: &str = "pending_amount_overflow";
    pub const SENDER_QUEUE_FULL: &str = "sender_queue_full";
    pub const MEMPOOL_FULL: &str = "mempool_full";
    // ...or the node's pending-transfer journal.
    pub const JOURNAL_FULL: &str = "journal_full";

    /// -32009: the node is overloaded and did not act on the call; retry later.
    pub const BUSY: &str = "busy";

    // -32603: the node could not answer.
    pub const SHUTTING_DOWN: &str = "shutting_down";
    pub const NOT_ANSWERED: &str = "not_answered";
    pub const TIMED_OUT: &str = "timed_out";
    pub const STORAGE_FAILED: &str = "storage_failed";
    pub const TRANSPORT_STOPPED: &str = "transport_stopped";
    pub const INTERNAL: &str = "internal";

    /// Every name above.
    pub const ALL: &[&str] = &[
        INVALID_PARAMS,
        NOT_FOUND,
        ADMIN_ONLY,
        REQUEST_TOO_LARGE,
        WRONG_CHAIN,
        ZERO_AMOUNT,
        BAD_SIGNATURE,
        WRONG_NONCE,
        INSUFFICIENT_BALANCE,
        AMOUNT_OVERFLOW,
        RECIPIENT_BALANCE_OVERFLOW,
        DUPLICATE,
        NONCE_USED,
        NONCE_GAP,
        FEE_TOO_LOW,
        REPLACEMENT_FEE_TOO_LOW,
        INSUFFICIENT_BALANCE_WITH_PENDING,
        PENDING_AMOUNT_OVERFLOW,
        SENDER_QUEUE_FULL,
        MEMPOOL_FULL,
        JOURNAL_FULL,
        BUSY,
        SHUTTING_DOWN,
        NOT_ANSWERED,
        TIMED_OUT,
        STORAGE_FAILED,
        TRANSPORT_STOPPED,
        INTERNAL,
    ];
}

#[cfg(test)]
mod tests {
    use super::data_code;

    #[test]
    fn data_codes_are_distinct_snake_case() {
        for (index, name) in data_code::ALL.iter().enumerate() {
            assert!(name.bytes().all(|byte| byte.is_ascii_lowercase() || byte == b'_'), "{name}");
            assert!(!data_code::ALL[..index].contains(name), "{name} twice");
        }
    }
}
