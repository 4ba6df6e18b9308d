//! Target `keystore`: a wallet file's bytes (`wallet.json`), checked as `Keystore::open` checks
//! them; every key sealed with cheap argon2 parameters is then opened with the passphrase
//! "fuzz" (the seed corpus holds real wallets sealed under it, so the decryption path is
//! reached). Keys with costly parameters are not opened: argon2 at up to 4 GiB is the file
//! owner's choice, not a bug.
//!
//! Oracle beyond "no panic": a key that opens has the address its entry claims.

use std::path::PathBuf;
use tinychain_wallet::keystore::{KdfParams, Keystore};

/// The passphrase the seed wallets are sealed under.
pub const PASSPHRASE: &str = "fuzz";

/// The costliest parameters this target derives a key with.
fn is_cheap(params: KdfParams) -> bool {
    params.memory_kib <= 64 && params.iterations <= 2 && params.parallelism <= 2
}

pub fn run(data: &[u8]) -> String {
    let keystore = match Keystore::from_file_bytes(PathBuf::from("wallet.json"), data.to_vec()) {
        Ok(keystore) => keystore,
        Err(error) => return format!("refused: {error}"),
    };
    let mut opened = 0;
    for (name, address) in keystore.entries() {
        let params = keystore.kdf_params(&name).expect("a listed key exists");
        if !is_cheap(params) {
            continue;
        }
        if let Ok(key) = keystore.key(&name, PASSPHRASE) {
            assert_eq!(key.address(), address, "an opened key has the address its entry claims");
            opened += 1;
        }
    }
    format!("{} keys, {opened} opened", keystore.entries().len())
}
