//! The wallet keystore against its contract (`wallet/src/keystore.rs`, `docs/wallet-format.md`):
//! round trips, several keys, wrong passphrases and damaged files leave the file untouched,
//! file modes, names, import/export, and an independent decryption that follows the document.
//! Every test uses `KdfParams::INSECURE_FAST` except `default_params_round_trip_and_unlock_time`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use proptest::prelude::*;
use tinychain_core::crypto::Keypair;
use tinychain_core::types::Address;
use tinychain_wallet::keystore::{KdfParams, Keystore, KeystoreError, KDF_MEMORY_KIB_MAX, WALLET_FILE_NAME};

const FAST: KdfParams = KdfParams::INSECURE_FAST;

fn wallet_dir(temporary: &tempfile::TempDir) -> PathBuf {
    temporary.path().join("wallet")
}

fn wallet_file(dir: &Path) -> PathBuf {
    dir.join(WALLET_FILE_NAME)
}

fn keypair(seed: u8) -> Keypair {
    Keypair::from_secret_bytes(&[seed; 32])
}

/// A wallet with keys "alice" (secret [1; 32]) and "bob" (secret [2; 32]), both under "pw".
fn two_key_wallet(dir: &Path) -> Keystore {
    let mut wallet = Keystore::create(dir).unwrap();
    wallet.add_with_params("alice", &keypair(1), "pw", FAST).unwrap();
    wallet.add_with_params("bob", &keypair(2), "pw", FAST).unwrap();
    wallet
}

fn read_json(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(wallet_file(dir)).unwrap()).unwrap()
}

fn write_json(dir: &Path, value: &serde_json::Value) {
    std::fs::write(wallet_file(dir), serde_json::to_vec_pretty(value).unwrap()).unwrap();
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|entry| entry.unwrap().file_name().into_string().unwrap()).collect();
    // The advisory lock file guarding writes is not part of the wallet's content.
    names.retain(|name| name != tinychain_wallet::keystore::LOCK_FILE_NAME);
    names.sort();
    names
}

#[test]
fn generate_then_reopen_decrypts_the_same_key() {
    let temporary = tempfile::tempdir().unwrap();
    let dir = wallet_dir(&temporary);
    assert!(!Keystore::exists(&dir));
    let mut wallet = Keystore::create(&dir).unwrap();
    assert!(Keystore::exists(&dir));
    assert!(wallet.entries().is_empty());

    let address = wallet.generate_with_params("main", "correct horse", FAST).unwrap();
    let exported = wallet.export_hex("main", "correct horse").unwrap();

    let reopened = Keystore::open(&dir).unwrap();
    assert_eq!(reopened.entries(), vec![("main".to_string(), address)]);
    assert_eq!(reopened.address("main").unwrap(), address);
    let key = reopened.key("main", "correct horse").unwrap();
    assert_eq!(key.address(), address);
    assert_eq!(*reopened.export_hex("main", "correct horse").unwrap(), *exported);
    assert_eq!(hex::encode(key.secret_bytes()), *exported);
    // The key signs like the original.
    let signature = key.sign(b"message");
    assert!(tinychain_core::crypto::verify_strict(&address, b"message", &signature));
}

#[test]
fn generated_keys_differ() {
    let temporary = tempfile::tempdir().unwrap();
    let mut wallet = Keystore::create(&wallet_dir(&temporary)).unwrap();
    let first = wallet.generate_with_params("one", "pw", FAST).unwrap();
    let second = wallet.generate_with_params("two", "pw", FAST).unwrap();
    assert_ne!(first, second);
}

#[test]
fn default_params_round_trip_and_unlock_time() {
    let temporary = tempfile::tempdir().unwrap();
    let dir = wallet_dir(&temporary);
    let mut wallet = Keystore::create(&dir).unwrap();
    let address = wallet.generate("default", "pw").unwrap();
    let kdf = &read_json(&dir)["keys"][0]["kdf"];
    assert_eq!(kdf["algorithm"], "argon2id");
    assert_eq!(kdf["m_kib"], 65536);
    assert_eq!(kdf["t"], 3);
    assert_eq!(kdf["p"], 1);
    assert_eq!(KdfParams::default(), KdfParams { memory_kib: 65536, iterations: 3, parallelism: 1 });

    let reopened = Keystore::open(&dir).unwrap();
    let started = std::time::Instant::now();
    let key = reopened.key("default", "pw").unwrap();
    let unlock_ms = started.elapsed().as_millis();
    println!("keystore: one unlock with default argon2id params (m=64 MiB, t=3, p=1) took {unlock_ms} ms");
    assert_eq!(key.address(), address);
    assert!(matches!(reopened.key("default", "wrong"), Err(KeystoreError::WrongPassphrase { .. })));
}

#[test]
fn several_keys_keep_their_order_and_their_own_passphrases() {
    let temporary = tempfile::tempdir().unwrap();
    let dir = wallet_dir(&temporary);
    let mut wallet = Keystore::create(&dir).unwrap();
    let names = ["zeta", "alpha", "m-1", "Key_2"];
    for (index, name) in names.iter().enumerate() {
        let passphrase = format!("passphrase {index}");
        wallet.add_with_params(name, &keypair(index as u8 + 10), &passphrase, FAST).unwrap();
    }
    let reopened = Keystore::open(&dir).unwrap();
    let entries = reopened.entries();
    assert_eq!(entries.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(), names);
    for (index, (name, address)) in entries.iter().enumerate() {
        assert_eq!(*address, keypair(index as u8 + 10).address());
        let key = reopened.key(name, &format!("passphrase {index}")).unwrap();
        assert_eq!(key.address(), *address);
        // Another key's passphrase does not open this one.
        let other = format!("passphrase {}", (index + 1) % names.len());
        assert!(matches!(reopened.key(name, &other), Err(KeystoreError::WrongPassphrase { .. })));
    }
}

#[test]
fn each_sealing_uses_a_fresh_salt_and_nonce() {
    let temporary = tempfile::tempdir().unwrap();
    let dir = wallet_dir(&temporary);
    let mut wallet = Keystore::create(&dir).unwrap();
    // The same key under the same passphrase twice.
    wallet.add_with_params("first", &keypair(7), "pw", FAST).unwrap();
    wallet.add_with_params("second", &keypair(7), "pw", FAST).unwrap();
    let json = read_json(&dir);
    let (first, second) = (&json["keys"][0], &json["keys"][1]);
    assert_ne!(first["kdf"]["salt"], second["kdf"]["salt"]);
    assert_ne!(first["cipher"]["nonce"], second["cipher"]["nonce"]);
    assert_ne!(first["ciphertext"], second["ciphertext"]);
    assert_eq!(first["address"], second["address"]);
}

#[test]
fn wrong_passphrase_is_a_clear_error_and_leaves_the_file_unchanged() {
    let temporary = tempfile::tempdir().unwrap();
    let dir = wallet_dir(&temporary);
    two_key_wallet(&dir);
    let before = std::fs::read(wallet_file(&dir)).unwrap();

    let wallet = Keystore::open(&dir).unwrap();
    let error = wallet.key("alice", "not the passphrase").unwrap_err();
    assert!(matches!(&error, KeystoreError::WrongPassphrase { name, .. } if name == "alice"), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("\"alice\"") && message.contains("passphrase is wrong"), "{message}");
    assert!(message.contains(WALLET_FILE_NAME), "{message}");
    assert!(matches!(wallet.export_hex("bob", ""), Err(KeystoreError::WrongPassphrase { .. })));

    assert_eq!(std::fs::read(wallet_file(&dir)).unwrap(), before);
    assert_eq!(files_in(&dir), vec![WALLET_FILE_NAME.to_string()]);
}

#[test]
fn unknown_key_lists_the_known_names() {
    let temporary = tempfile::tempdir().unwrap();
    let dir = wallet_dir(&temporary);
    let wallet = two_key_wallet(&dir);
    let error = wallet.key("carol", "pw").unwrap_err();
    match &error {
        KeystoreError::UnknownKey { name, known, .. } => {
            assert_eq!(name, "carol");
            assert_eq!(known, &vec!["alice".to_string(), "bob".to_string()]);
        }
        other => panic!("expected UnknownKey, got {other:?}"),
    }
    assert!(error.to_string().contains("alice, bob"), "{error}");
    assert!(matches!(wallet.address("carol"), Err(KeystoreError::UnknownKey { .. })));
}

#[test]
fn create_refuses_an_existing_wallet_and_open_reports_a_missing_one() {
    let temporary = tempfile::tempdir().unwrap();
    let dir = wallet_dir(&temporary);
    assert!(matches!(Keystore::open(&dir), Err(KeystoreError::NotFound { .. })));
    two_key_wallet(&dir);
    let before = std::fs::read(wallet_file(&dir)).unwrap();
    let error = Keystore::create(&dir).unwrap_err();
    assert!(matches!(error, KeystoreError::AlreadyExists { .. }), "{error:?}");
    assert_eq!(std::fs::read(wallet_file(&dir)).unwrap(), before);
}

#[cfg(unix)]
#[test]
fn file_is_0600_and_directory_0700_and_no_temporary_file_remains() {
    use std::os::unix::fs::PermissionsExt;
    let temporary = tempfile::tempdir().unwrap();
    let dir = temporary.path().join("nested").join("wallet");
    let mut wallet = Keystore::create(&dir).unwrap();
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&wallet_file(&dir)), 0o600);
    wallet.add_with_params("a", &keypair(1), "pw", FAST).unwrap();
    wallet.add_with_params("b", &keypair(2), "pw", FAST).unwrap();
    assert_eq!(mode(&wallet_file(&dir)), 0o600, "the rewritten file keeps mode 0600");
    assert_eq!(files_in(&dir), vec![WALLET_FILE_NAME.to_string()]);
}

#[test]
fn duplicate_and_bad_names_are_refused_and_nothing_is_written() {
    let temporary = tempfile::tempdir().unwrap();
    let dir = wallet_dir(&temporary);
    let mut wallet = two_key_wallet(&dir);
    let before = std::fs::read(wallet_file(&dir)).unwrap();

    let error = wallet.add_with_params("alice", &keypair(9), "pw", FAST).unwrap_err();
    assert!(matches!(&error, KeystoreError::DuplicateName { name, .. } if name == "alice"), "{error:?}");

    let too_long = "a".repeat(33);
    for bad in ["", "has space", "dot.name", "slash/", "ünï", "tab\t", too_long.as_str()] {
        let error = wallet.add_with_params(bad, &keypair(9), "pw", FAST).unwrap_err();
        assert!(matches!(&error, KeystoreError::BadName { name } if name == bad), "{bad:?}: {error:?}");
        assert!(error.to_string().contains("1 to 32 characters"), "{error}");
    }
    for good in ["x", "A-b_9", "a".repeat(32).as_str()] {
        wallet.add_with_params(good, &keypair(9), "pw", FAST).unwrap();
    }
    assert_eq!(Keystore::open(&dir).unwrap().entries().len(), 5);
    assert_ne!(std::fs::read(wallet_file(&dir)).unwrap(), before);
}

#[test]
fn failed_add_leaves_the_wallet_unchanged_in_memory() {
    let temporary = tempfile::tempdir().unwrap();
    let dir = wallet_dir(&temporary);
    let mut wallet = two_key_wallet(&dir);
    let absurd = KdfParams { memory_kib: KDF_MEMORY_KIB_MAX + 1, iterations: 1, parallelism: 1 };
    let error = wallet.add_with_params("carol", &keypair(3), "pw", absurd).unwrap_err();
    assert!(matches!(error, KeystoreError::BadKdfParams { .. }), "{error:?}");
    assert_eq!(wallet.entries().len(), 2);
    wallet.add_with_params("carol", &keypair(3), "pw", FAST).unwrap();
    assert_eq!(wallet.entries().len(), 3);
}

#[test]
fn import_and_export_round_trip() {
    let temporary = tempfile::tempdir().unwrap();
    let dir = wallet_dir(&temporary);
    let mut wallet = Keystore::create(&dir).unwrap();
    let secret_hex = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    // RFC 8032 test 1: this secret's public key.
    let expected = Address(
        hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a").unwrap().try_into().unwrap(),
    );
    let address = wallet.import_hex_with_params("rfc", secret_hex, "pw", FAST).unwrap();
    assert_eq!(address, expected);
    assert_eq!(*Keystore::open(&dir).unwrap().export_hex("rfc", "pw").unwrap(), secret_hex);

    // Whitespace, upper case and a 0x prefix are accepted; the export is canonical.
    let padded = format!("  0x{}\n", secret_hex.to_uppercase());
    assert_eq!(wallet.import_hex_with_params("again", &padded, "pw2", FAST).unwrap(), expected);
    assert_eq!(*wallet.export_hex("again", "pw2").unwrap(), secret_hex);

    // An exported key imports into another wallet as the same key.
    let other_temporary = tempfile::tempdir().unwrap();
    let mut other = Keystore::create(&wallet_dir(&other_temporary)).unwrap();
    let exported = wallet.export_hex("rfc", "pw").unwrap();
    assert_eq!(other.import_hex_with_params("copy", &exported, "other", FAST).unwrap(), expected);
}

#[test]
fn bad_secrets_are_refused_without_echoing_them() {
    let temporary = tempfile::tempdir().unwrap();
    let mut wallet = Keystore::create(&wallet_dir(&temporary)).unwrap();
    let cases = [
        ("", "got 0 characters"),
        ("abcdef", "got 6 characters"),
        (&"7".repeat(66)[..], "got 66 characters"),
        (&format!("{}zz", "7".repeat(62))[..], "not a hex digit"),
    ];
    for (input, expected) in cases {
        let error = wallet.import_hex_with_params("k", input, "pw", FAST).unwrap_err();
        assert!(matches!(error, KeystoreError::BadSecret { .. }), "{input:?}: {error:?}");
        let message = error.to_string();
        assert!(message.contains(expected), "{input:?}: {message}");
        if input.len() > 4 {
            assert!(!message.contains(input), "the secret must not be echoed: {message}");
        }
    }
    assert!(wallet.entries().is_empty());
}

/// A change to a wallet's JSON, for table-driven damage tests.
type Damage = fn(&mut serde_json::Value);

/// Opening a damaged file fails with `Damaged`, a message naming the file and `needle`, and the
/// file unchanged.
fn assert_open_fails_as_damaged(dir: &Path, needle: &str) {
    let before = std::fs::read(wallet_file(dir)).unwrap();
    let error = Keystore::open(dir).unwrap_err();
    assert!(matches!(error, KeystoreError::Damaged { .. }), "{needle}: {error:?}");
    let message = error.to_string();
    assert!(message.contains(WALLET_FILE_NAME), "{message}");
    assert!(message.contains(needle), "expected {needle:?} in: {message}");
    assert_eq!(std::fs::read(wallet_file(dir)).unwrap(), before);
}

#[test]
fn truncated_or_malformed_files_are_damaged() {
    let temporary = tempfile::tempdir().unwrap();
    let dir = wallet_dir(&temporary);
    two_key_wallet(&dir);
    let good = std::fs::read(wallet_file(&dir)).unwrap();

    std::fs::write(wallet_file(&dir), &good[..good.len() / 2]).unwrap();
    assert_open_fails_as_damaged(&dir, "not a wallet file");
    std::fs::write(wallet_file(&dir), b"").unwrap();
    assert_open_fails_as_damaged(&dir, "not a wallet file");
    std::fs::write(wallet_file(&dir), [&good[..], b"{}"].concat()).unwrap();
    assert_open_fails_as_damaged(&dir, "trailing data");

    // Field-level damage, each named by its path.
    let original: serde_json::Value = serde_json::from_slice(&good).unwrap();
    let table: Vec<(&str, Damage, &str)> = vec![
        ("missing field", |json| drop(json["keys"][1].as_object_mut().unwrap().remove("ciphertext")), "keys[1]"),
        ("unknown field", |json| json["keys"][0]["extra"] = 1.into(), "extra"),
        ("bad name", |json| json["keys"][1]["name"] = "no spaces".into(), "keys[1].name"),
        ("duplicate name", |json| json["keys"][1]["name"] = "alice".into(), "appears twice"),
        ("bad address", |json| json["keys"][0]["address"] = "tc1qqqq".into(), "keys[0].address"),
        ("kdf algorithm", |json| json["keys"][0]["kdf"]["algorithm"] = "scrypt".into(), "keys[0].kdf.algorithm"),
        ("cipher algorithm", |json| json["keys"][0]["cipher"]["algorithm"] = "aes".into(), "keys[0].cipher.algorithm"),
        ("short salt", |json| json["keys"][0]["kdf"]["salt"] = "00ff".into(), "keys[0].kdf.salt"),
        ("non-hex nonce", |json| json["keys"][1]["cipher"]["nonce"] = "zz".repeat(24).into(), "keys[1].cipher.nonce"),
        ("long ciphertext", |json| json["keys"][0]["ciphertext"] = "00".repeat(49).into(), "keys[0].ciphertext"),
        (
            "memory bomb",
            |json| json["keys"][0]["kdf"]["m_kib"] = (KDF_MEMORY_KIB_MAX + 1).into(),
            "keys[0].kdf.m_kib = 4194305",
        ),
        ("huge t", |json| json["keys"][1]["kdf"]["t"] = u32::MAX.into(), "keys[1].kdf.t = "),
        ("zero p", |json| json["keys"][0]["kdf"]["p"] = 0.into(), "keys[0].kdf.p = 0"),
        ("m below 8 per lane", |json| json["keys"][0]["kdf"]["p"] = 4.into(), "keys[0].kdf.m_kib = 8 is outside 32..="),
        ("negative m", |json| json["keys"][0]["kdf"]["m_kib"] = (-1).into(), "keys[0].kdf.m_kib"),
        ("keys not a list", |json| json["keys"] = "none".into(), "keys"),
    ];
    for (description, damage, needle) in table {
        let mut json = original.clone();
        damage(&mut json);
        write_json(&dir, &json);
        println!("case: {description}");
        assert_open_fails_as_damaged(&dir, needle);
    }
}

#[test]
fn an_unknown_version_is_refused_by_name() {
    let temporary = tempfile::tempdir().unwrap();
    let dir = wallet_dir(&temporary);
    two_key_wallet(&dir);
    let mut json = read_json(&dir);
    json["version"] = 2.into();
    write_json(&dir, &json);
    let error = Keystore::open(&dir).unwrap_err();
    assert!(matches!(error, KeystoreError::UnsupportedVersion { version: 2, .. }), "{error:?}");
    assert!(error.to_string().contains("version 2"), "{error}");
}

/// Damage that keeps the file well-formed is caught when decrypting: `key` fails for `name`,
/// and the file is unchanged.
fn assert_key_fails(dir: &Path, name: &str) -> KeystoreError {
    let before = std::fs::read(wallet_file(dir)).unwrap();
    let wallet = Keystore::open(dir).unwrap();
    let error = wallet.key(name, "pw").unwrap_err();
    assert!(wallet.export_hex(name, "pw").is_err());
    assert_eq!(std::fs::read(wallet_file(dir)).unwrap(), before);
    error
}

#[test]
fn tampered_entries_fail_to_decrypt() {
    let temporary = tempfile::tempdir().unwrap();
    let dir = wallet_dir(&temporary);
    two_key_wallet(&dir);
    let original = read_json(&dir);
    let flip_hex_digit = |text: &str, index: usize| {
        let mut bytes = text.as_bytes().to_vec();
        bytes[index] = if bytes[index] == b'0' { b'1' } else { b'0' };
        String::from_utf8(bytes).unwrap()
    };

    // A flipped ciphertext byte, in the body and in the tag.
    for index in [0, 63, 95] {
        let mut json = original.clone();
        let text = json["keys"][0]["ciphertext"].as_str().unwrap().to_string();
        json["keys"][0]["ciphertext"] = flip_hex_digit(&text, index).into();
        write_json(&dir, &json);
        let error = assert_key_fails(&dir, "alice");
        assert!(matches!(error, KeystoreError::WrongPassphrase { .. }), "{error:?}");
        assert!(error.to_string().contains("or the entry was altered"), "{error}");
    }

    // A flipped nonce or salt byte.
    for field in [("cipher", "nonce"), ("kdf", "salt")] {
        let mut json = original.clone();
        let text = json["keys"][1][field.0][field.1].as_str().unwrap().to_string();
        json["keys"][1][field.0][field.1] = flip_hex_digit(&text, 5).into();
        write_json(&dir, &json);
        assert!(matches!(assert_key_fails(&dir, "bob"), KeystoreError::WrongPassphrase { .. }));
    }

    // Other argon2 parameters than those the key was sealed with.
    let mut json = original.clone();
    json["keys"][0]["kdf"]["t"] = 2.into();
    write_json(&dir, &json);
    assert!(matches!(assert_key_fails(&dir, "alice"), KeystoreError::WrongPassphrase { .. }));

    // Swapped ciphertexts (with their nonces and salts): the associated data binds the name and
    // address, so neither entry decrypts, although both share the passphrase.
    let mut json = original.clone();
    let alice_sealed =
        (json["keys"][0]["kdf"].clone(), json["keys"][0]["cipher"].clone(), json["keys"][0]["ciphertext"].clone());
    let bob_sealed =
        (json["keys"][1]["kdf"].clone(), json["keys"][1]["cipher"].clone(), json["keys"][1]["ciphertext"].clone());
    (json["keys"][0]["kdf"], json["keys"][0]["cipher"], json["keys"][0]["ciphertext"]) = bob_sealed;
    (json["keys"][1]["kdf"], json["keys"][1]["cipher"], json["keys"][1]["ciphertext"]) = alice_sealed;
    write_json(&dir, &json);
    assert!(matches!(assert_key_fails(&dir, "alice"), KeystoreError::WrongPassphrase { .. }));
    assert!(matches!(assert_key_fails(&dir, "bob"), KeystoreError::WrongPassphrase { .. }));

    // Swapped names (each entry keeps its address and sealed key): a renamed entry fails.
    let mut json = original.clone();
    json["keys"][0]["name"] = "bob".into();
    json["keys"][1]["name"] = "alice".into();
    write_json(&dir, &json);
    assert!(matches!(assert_key_fails(&dir, "alice"), KeystoreError::WrongPassphrase { .. }));
    // A rename to a name of the same length fails as well (the name itself is bound, not only
    // its length).
    let mut json = original.clone();
    json["keys"][0]["name"] = "carol".into();
    write_json(&dir, &json);
    assert!(matches!(assert_key_fails(&dir, "carol"), KeystoreError::WrongPassphrase { .. }));

    // Another valid address on an entry (so `list` would show the wrong account) fails too.
    let mut json = original.clone();
    json["keys"][0]["address"] = keypair(99).address().to_string().into();
    write_json(&dir, &json);
    assert!(matches!(assert_key_fails(&dir, "alice"), KeystoreError::WrongPassphrase { .. }));

    // The untouched file still opens both keys.
    write_json(&dir, &original);
    let wallet = Keystore::open(&dir).unwrap();
    assert_eq!(wallet.key("alice", "pw").unwrap().address(), keypair(1).address());
    assert_eq!(wallet.key("bob", "pw").unwrap().address(), keypair(2).address());
}

// ---- An independent reading of docs/wallet-format.md ---------------------------------------------

fn associated_data_as_documented(name: &str, address: &Address) -> Vec<u8> {
    let mut data = b"tinychain-wallet".to_vec();
    data.extend_from_slice(&1u32.to_le_bytes());
    data.push(name.len() as u8);
    data.extend_from_slice(name.as_bytes());
    data.extend_from_slice(&address.0);
    data
}

fn encryption_key_as_documented(passphrase: &str, kdf: &serde_json::Value) -> chacha20poly1305::Key {
    let number = |field: &str| u32::try_from(kdf[field].as_u64().unwrap()).unwrap();
    let params = argon2::Params::new(number("m_kib"), number("t"), number("p"), Some(32)).unwrap();
    let argon2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = hex::decode(kdf["salt"].as_str().unwrap()).unwrap();
    let mut key = [0u8; 32];
    argon2.hash_password_into(passphrase.as_bytes(), &salt, &mut key).unwrap();
    chacha20poly1305::Key::from(key)
}

#[test]
fn the_documented_format_decrypts_independently() {
    let temporary = tempfile::tempdir().unwrap();
    let dir = wallet_dir(&temporary);
    two_key_wallet(&dir);
    let json = read_json(&dir);
    assert_eq!(json["version"], 1);
    for (index, (name, seed)) in [("alice", 1u8), ("bob", 2u8)].into_iter().enumerate() {
        let entry = &json["keys"][index];
        assert_eq!(entry["name"], name);
        let address: Address = entry["address"].as_str().unwrap().parse().unwrap();
        assert_eq!(address, keypair(seed).address());
        assert_eq!(entry["cipher"]["algorithm"], "xchacha20poly1305");
        let cipher = chacha20poly1305::XChaCha20Poly1305::new(&encryption_key_as_documented("pw", &entry["kdf"]));
        let nonce: [u8; 24] = hex::decode(entry["cipher"]["nonce"].as_str().unwrap()).unwrap().try_into().unwrap();
        let ciphertext = hex::decode(entry["ciphertext"].as_str().unwrap()).unwrap();
        let aad = associated_data_as_documented(name, &address);
        let secret = cipher.decrypt(&nonce.into(), Payload { msg: &ciphertext, aad: &aad }).unwrap();
        assert_eq!(secret, vec![seed; 32]);
    }
}

#[test]
fn a_secret_that_does_not_derive_the_stored_address_is_damage() {
    // Seal alice's entry (name and address bound as documented) around bob's secret: it
    // decrypts, but the secret is not alice's, so the keystore must refuse it.
    let temporary = tempfile::tempdir().unwrap();
    let dir = wallet_dir(&temporary);
    two_key_wallet(&dir);
    let mut json = read_json(&dir);
    let entry = &json["keys"][0];
    let address: Address = entry["address"].as_str().unwrap().parse().unwrap();
    let cipher = chacha20poly1305::XChaCha20Poly1305::new(&encryption_key_as_documented("pw", &entry["kdf"]));
    let nonce: [u8; 24] = hex::decode(entry["cipher"]["nonce"].as_str().unwrap()).unwrap().try_into().unwrap();
    let aad = associated_data_as_documented("alice", &address);
    let forged = cipher.encrypt(&nonce.into(), Payload { msg: &[2u8; 32], aad: &aad }).unwrap();
    json["keys"][0]["ciphertext"] = hex::encode(forged).into();
    write_json(&dir, &json);

    let error = assert_key_fails(&dir, "alice");
    assert!(matches!(error, KeystoreError::Damaged { .. }), "{error:?}");
    assert!(error.to_string().contains("decrypts to the secret of"), "{error}");
}

// ---- Concurrent writers and the passphrase source ----------------------------------------------

#[test]
fn a_wallet_changed_on_disk_since_it_was_opened_is_not_overwritten() {
    let temporary = tempfile::tempdir().unwrap();
    let dir = wallet_dir(&temporary);
    two_key_wallet(&dir);
    let mut first = Keystore::open(&dir).unwrap();
    let mut second = Keystore::open(&dir).unwrap();
    first.add_with_params("carol", &keypair(3), "pw", FAST).unwrap();
    let after_first = std::fs::read(wallet_file(&dir)).unwrap();

    let error = second.add_with_params("dave", &keypair(4), "pw", FAST).unwrap_err();
    assert!(matches!(error, KeystoreError::ChangedOnDisk { .. }), "{error:?}");
    assert_eq!(std::fs::read(wallet_file(&dir)).unwrap(), after_first, "carol's key must not be lost");
    assert_eq!(second.entries().len(), 2);

    // Reopening sees carol and can add dave.
    let mut reopened = Keystore::open(&dir).unwrap();
    reopened.add_with_params("dave", &keypair(4), "pw", FAST).unwrap();
    let names: Vec<String> = Keystore::open(&dir).unwrap().entries().into_iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["alice", "bob", "carol", "dave"]);
}

// ---- Arbitrary input never panics ----------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_as_wallet_json_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let temporary = tempfile::tempdir().unwrap();
        let dir = temporary.path();
        std::fs::write(wallet_file(dir), &bytes).unwrap();
        if let Ok(wallet) = Keystore::open(dir) {
            for (name, _) in wallet.entries() {
                let _ = wallet.key(&name, "pw");
            }
        }
        prop_assert_eq!(std::fs::read(wallet_file(dir)).unwrap(), bytes);
    }

    #[test]
    fn a_corrupted_valid_wallet_never_panics_nor_changes(position in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let temporary = tempfile::tempdir().unwrap();
        let dir = wallet_dir(&temporary);
        two_key_wallet(&dir);
        let mut bytes = std::fs::read(wallet_file(&dir)).unwrap();
        let index = position.index(bytes.len());
        bytes[index] = byte;
        std::fs::write(wallet_file(&dir), &bytes).unwrap();
        if let Ok(wallet) = Keystore::open(&dir) {
            for (name, address) in wallet.entries() {
                // Any key that still decrypts is the genuine one for its address.
                if let Ok(key) = wallet.key(&name, "pw") {
                    prop_assert_eq!(key.address(), address);
                }
            }
        }
        prop_assert_eq!(std::fs::read(wallet_file(&dir)).unwrap(), bytes);
    }
}
