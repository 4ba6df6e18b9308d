//! The one list of JSON-RPC methods: their names, their params (by name, in positional order)
//! and which are admin-only. The server registers `Method::ALL`, its parser reads
//! `Method::param_names`, and clients name methods through `Query::method`/`Command::method`.

/// A JSON-RPC method a node answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    Status,
    GetBlock,
    GetHeader,
    GetTx,
    GetAccount,
    GetHistory,
    GetMempool,
    GetElection,
    GetPeers,
    EstimateFee,
    SubmitTx,
    SubmitTxs,
    AddPeer,
    RemovePeer,
}

impl Method {
    /// Every method, in the order `docs/rpc.md` documents them.
    pub const ALL: [Method; 14] = [
        Method::Status,
        Method::GetBlock,
        Method::GetHeader,
        Method::GetTx,
        Method::GetAccount,
        Method::GetHistory,
        Method::GetMempool,
        Method::GetElection,
        Method::GetPeers,
        Method::EstimateFee,
        Method::SubmitTx,
        Method::SubmitTxs,
        Method::AddPeer,
        Method::RemovePeer,
    ];

    /// The method's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Status => "status",
            Method::GetBlock => "get_block",
            Method::GetHeader => "get_header",
            Method::GetTx => "get_tx",
            Method::GetAccount => "get_account",
            Method::GetHistory => "get_history",
            Method::GetMempool => "get_mempool",
            Method::GetElection => "get_election",
            Method::GetPeers => "get_peers",
            Method::EstimateFee => "estimate_fee",
            Method::SubmitTx => "submit_tx",
            Method::SubmitTxs => "submit_txs",
            Method::AddPeer => "add_peer",
            Method::RemovePeer => "remove_peer",
        }
    }

    /// The method called `name`, if a node has one.
    pub fn from_name(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|method| method.as_str() == name)
    }

    /// The params' names, in the order they take by position. `get_block` and `get_header`
    /// take one of their two (a height or a hash), never both.
    pub fn param_names(self) -> &'static [&'static str] {
        match self {
            Method::Status | Method::GetPeers | Method::EstimateFee => &[],
            Method::GetBlock | Method::GetHeader => &["height", "hash"],
            Method::GetTx => &["id"],
            Method::GetAccount => &["address", "at"],
            Method::GetHistory => &["address", "limit", "before_height"],
            Method::GetMempool => &["limit"],
            Method::GetElection => &["height"],
            Method::SubmitTx => &["tx"],
            Method::SubmitTxs => &["txs"],
            Method::AddPeer | Method::RemovePeer => &["addr"],
        }
    }

    /// Whether only an admin client may call it (the node's `rpc.admin` setting): the methods
    /// that change which peers the node dials.
    pub fn is_admin(self) -> bool {
        matches!(self, Method::AddPeer | Method::RemovePeer)
    }

    /// Whether calling it changes the node (a `Command`) rather than only reading it (a `Query`).
    pub fn is_command(self) -> bool {
        matches!(self, Method::SubmitTx | Method::SubmitTxs | Method::AddPeer | Method::RemovePeer)
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_read_back() {
        for method in Method::ALL {
            assert_eq!(Method::from_name(method.as_str()), Some(method));
            assert_eq!(Method::ALL.iter().filter(|other| other.as_str() == method.as_str()).count(), 1);
        }
        assert_eq!(Method::from_name("no_such_method"), None);
        assert!(Method::ALL.iter().all(|method| !method.is_admin() || method.is_command()), "admin methods act");
    }
}
