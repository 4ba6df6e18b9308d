//! tinychain-wallet: a tinychain wallet as a library any Rust program can use.
//!
//! - `keystore`: named Ed25519 keys in one encrypted file (argon2id + XChaCha20-Poly1305).
//! - `amount`: amounts in TC, parsed and shown exactly (no floating point).
//! - `client`: a blocking JSON-RPC client for one node, with timeouts.
//! - the operations (re-exported here): `balance`, `send`, `tx_status`, `wait_for_status`,
//!   `history`, and the key operations `new_key`, `import_key`, `export_key`, `list_keys`.
//!
//! Nothing in this crate parses a command line, reads an environment variable or prompts on a
//! terminal: a passphrase comes from a closure the caller gives, asked for only when a key must
//! be unlocked. The `tinychain wallet` command is one user of this crate.
//!
//! Sending 1.5 TC from the key "alice" of a wallet, and waiting until the transfer is final:
//!
//! ```no_run
//! use std::path::Path;
//! use std::time::Duration;
//! use tinychain_wallet::{amount, client::RpcClient, FeeChoice, SendRequest, WaitFor};
//! use zeroize::Zeroizing;
//!
//! # fn main() -> Result<(), tinychain_wallet::WalletError> {
//! let node = RpcClient::new("http://127.0.0.1:7741")?;
//! let request = SendRequest {
//!     from: Some("alice".to_string()),
//!     to: tinychain_wallet::parse_address("to", "tc1...")?,
//!     amount: amount::parse_amount("1.5").expect("an exact amount"),
//!     fee: FeeChoice::Auto,
//! };
//! let sent = tinychain_wallet::send(
//!     &node,
//!     Path::new("/home/alice/.tinychain/wallet"),
//!     &request,
//!     tinychain_wallet::MEMPOOL_SYNC_WAIT_DEFAULT,
//!     || {},
//!     || Ok(Zeroizing::new("alice's passphrase".to_string())),
//! )?;
//! let status = tinychain_wallet::wait_for_status(&node, &sent.id, WaitFor::Final, Duration::from_secs(60), |_| {})?;
//! println!("{} is {} at height {:?}", sent.id, status.state, status.height);
//! # Ok(())
//! # }
//! ```

pub mod amount;
pub mod client;
pub mod keystore;
mod operations;

pub use operations::*;
