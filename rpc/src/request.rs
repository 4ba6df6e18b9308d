//! What a client asks, as typed values: `Query` for the read-only methods, `Command` for the
//! three that change the node. Both serialise to the JSON-RPC `method` and `params` (by name) a
//! client sends; the node parses params itself (`tinychain_node::query::parse_request`), by
//! name or by position, naming the param that is wrong, into these same values.

use crate::method::Method;
use serde::{Serialize, Serializer};
use tinychain_core::types::{Address, Hash, Height, Transfer};

/// `get_history`: transfers returned when the client gives no limit, and the most it may ask for.
pub const HISTORY_LIMIT_DEFAULT: usize = 50;
pub const HISTORY_LIMIT_MAX: usize = 500;
/// `get_mempool`: transfers listed when the client gives no limit, and the most it may ask for.
pub const MEMPOOL_LIMIT_DEFAULT: usize = 100;
pub const MEMPOOL_LIMIT_MAX: usize = 1_000;
/// Largest encoded transfer `submit_tx` decodes (a transfer with a 32-byte chain id encodes to
/// under 200 bytes).
pub const TRANSFER_BYTES_MAX: u64 = 1_024;
/// Most transfers one `submit_txs` call takes (the request body limit, 256 KiB by default, fits
/// about 700 transfers of a 14-character chain id).
pub const SUBMIT_TXS_MAX: usize = 1_000;

/// Which canonical block a client names (`get_block`, `get_header`): `{"height": n}` or
/// `{"hash": hex}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockSelector {
    Height(Height),
    Hash(Hash),
}

/// Which state `get_account` reads: after the tip, or after the latest final block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountAt {
    #[default]
    Tip,
    Final,
}

/// A read-only method call, params checked. Serialises as `{"method": .., "params": {..}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "method", content = "params", rename_all = "snake_case")]
pub enum Query {
    Status,
    GetBlock(BlockSelector),
    GetHeader(BlockSelector),
    GetTx {
        id: Hash,
    },
    GetAccount {
        address: Address,
        at: AccountAt,
    },
    GetHistory {
        address: Address,
        limit: usize,
        before_height: Option<Height>,
    },
    GetMempool {
        limit: usize,
    },
    /// `None`: the live election for the block after the tip.
    GetElection {
        height: Option<Height>,
    },
    GetPeers,
    EstimateFee,
}

impl Query {
    pub fn method(&self) -> Method {
        match self {
            Query::Status => Method::Status,
            Query::GetBlock(_) => Method::GetBlock,
            Query::GetHeader(_) => Method::GetHeader,
            Query::GetTx { .. } => Method::GetTx,
            Query::GetAccount { .. } => Method::GetAccount,
            Query::GetHistory { .. } => Method::GetHistory,
            Query::GetMempool { .. } => Method::GetMempool,
            Query::GetElection { .. } => Method::GetElection,
            Query::GetPeers => Method::GetPeers,
            Query::EstimateFee => Method::EstimateFee,
        }
    }
}

/// A method call that changes the node, params checked. Serialises as
/// `{"method": .., "params": {..}}`.
///
/// `Addr` holds a peer address (`host:port`): text for a client, the transport's checked
/// address type on the node, whose parser checks an address once, where it enters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "method", content = "params", rename_all = "snake_case")]
pub enum Command<Addr = String> {
    /// Admit a signed transfer to the mempool (`tx`: the hex of its binary encoding).
    SubmitTx {
        #[serde(serialize_with = "transfer_hex")]
        tx: Transfer,
    },
    /// Admit many signed transfers, each answered on its own (`txs`: the hex of each one's
    /// binary encoding; at most `SUBMIT_TXS_MAX`).
    SubmitTxs {
        #[serde(serialize_with = "transfers_hex")]
        txs: Vec<Transfer>,
    },
    /// Add an address to dial. Admin.
    AddPeer { addr: Addr },
    /// Forget an address. Admin.
    RemovePeer { addr: Addr },
}

impl<Addr> Command<Addr> {
    pub fn method(&self) -> Method {
        match self {
            Command::SubmitTx { .. } => Method::SubmitTx,
            Command::SubmitTxs { .. } => Method::SubmitTxs,
            Command::AddPeer { .. } => Method::AddPeer,
            Command::RemovePeer { .. } => Method::RemovePeer,
        }
    }
}

/// `submit_txs`'s `txs`: each transfer as `submit_tx`'s `tx`.
fn transfers_hex<S: Serializer>(transfers: &[Transfer], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(transfers.iter().map(|transfer| hex::encode(tinychain_core::codec::encode(transfer))))
}

/// `submit_tx`'s `tx`: the hex of the transfer's binary encoding, the bytes its id and
/// signature cover.
fn transfer_hex<S: Serializer>(transfer: &Transfer, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&hex::encode(tinychain_core::codec::encode(transfer)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// One value of every query and command, and whether it is a command.
    fn every_call() -> Vec<(Method, Value, bool)> {
        let key = tinychain_core::crypto::Keypair::from_secret_bytes(&[1; 32]);
        let transfer = tinychain_core::validate::sign_transfer(&key, "c", Address([2; 32]), 5, 1, 0);
        let queries = [
            Query::Status,
            Query::GetBlock(BlockSelector::Height(4)),
            Query::GetHeader(BlockSelector::Hash(Hash([1; 32]))),
            Query::GetTx { id: Hash([2; 32]) },
            Query::GetAccount { address: Address([3; 32]), at: AccountAt::Final },
            Query::GetHistory { address: Address([3; 32]), limit: 7, before_height: Some(9) },
            Query::GetMempool { limit: 3 },
            Query::GetElection { height: None },
            Query::GetPeers,
            Query::EstimateFee,
        ];
        let commands: [Command; 4] = [
            Command::SubmitTx { tx: transfer.clone() },
            Command::SubmitTxs { txs: vec![transfer] },
            Command::AddPeer { addr: "a:1".into() },
            Command::RemovePeer { addr: "a:1".into() },
        ];
        let queries = queries.iter().map(|query| (query.method(), serde_json::to_value(query).unwrap(), false));
        let commands = commands.iter().map(|command| (command.method(), serde_json::to_value(command).unwrap(), true));
        queries.chain(commands).collect()
    }

    #[test]
    fn calls_serialise_to_their_method_and_params_by_the_names_the_node_parses() {
        let calls = every_call();
        for method in Method::ALL {
            assert!(calls.iter().any(|(called, _, _)| *called == method), "no call of {method}");
        }
        for (method, call, is_command) in calls {
            assert_eq!(call["method"], method.as_str(), "{call}");
            assert_eq!(method.is_command(), is_command, "{method}");
            match call.get("params") {
                None => assert!(method.param_names().is_empty(), "{call}"),
                Some(Value::Object(params)) => {
                    for name in params.keys() {
                        assert!(method.param_names().contains(&name.as_str()), "{method} has no param {name}");
                    }
                }
                Some(other) => panic!("{method}: params by name, got {other}"),
            }
        }
    }

    #[test]
    fn a_submitted_transfer_is_the_hex_of_its_encoding() {
        let key = tinychain_core::crypto::Keypair::from_secret_bytes(&[1; 32]);
        let transfer = tinychain_core::validate::sign_transfer(&key, "c", Address([2; 32]), 5, 1, 0);
        let call = serde_json::to_value(Command::<String>::SubmitTx { tx: transfer.clone() }).unwrap();
        let bytes = hex::decode(call["params"]["tx"].as_str().unwrap()).unwrap();
        assert_eq!(tinychain_core::codec::decode::<Transfer>("transfer", &bytes).unwrap(), transfer);
        assert!(bytes.len() as u64 <= TRANSFER_BYTES_MAX);
    }
}
