//! tinychain-rpc: the JSON-RPC 2.0 schema of a tinychain node, written once and used by both
//! sides: the node's server (`tinychain-node`) and every client (`tinychain-wallet`, the
//! `tinychain` command line, tests). `docs/rpc.md` documents the same schema for people, and
//! `tests/docs.rs` checks that it names every method and every answer field.
//!
//! - `method`: the one list of methods (`Method::ALL`), their names, params and the admin rule.
//! - `request`: what a client asks, typed: a read-only `Query` or a `Command` that changes the
//!   node, and the limits on what it may ask for.
//! - `answer`: one answer type per method (and `GET /health`), serialised by the node and
//!   deserialised by clients.
//! - `error`: the error codes, and the `data.code` names that say why in a form a client can
//!   branch on.

pub mod answer;
pub mod error;
pub mod method;
pub mod request;

pub use answer::*;
pub use error::{code, data_code, ErrorData};
pub use method::Method;
pub use request::{
    AccountAt, BlockSelector, Command, Query, HISTORY_LIMIT_DEFAULT, HISTORY_LIMIT_MAX, MEMPOOL_LIMIT_DEFAULT,
    MEMPOOL_LIMIT_MAX, SUBMIT_TXS_MAX, TRANSFER_BYTES_MAX,
};
