//! The wallet keystore: named Ed25519 keys in one file, each sealed under a passphrase.
//!
//! A wallet is a directory `DIR` holding `DIR/wallet.json` (format in `docs/wallet-format.md`).
//! Each key is sealed on its own: its 32-byte secret is encrypted with XChaCha20-Poly1305 under
//! a key derived from the passphrase by argon2id with a fresh random salt, and a fresh random
//! nonce. Names and addresses are stored in clear, so listing a wallet needs no passphrase.
//!
//! Contract:
//! - The AEAD's associated data binds the format version, the key's name and its address, so an
//!   entry whose ciphertext was swapped with another's, or that was renamed, fails to decrypt.
//!   After decrypting, the secret must derive the stored address, or the entry is damaged.
//! - Every untrusted value in the file is checked when it is opened (`Keystore::open`): a damaged
//!   file is an error naming the file and the field, never a panic, and argon2 parameters beyond
//!   `KDF_MEMORY_KIB_MAX` / `KDF_ITERATIONS_MAX` / `KDF_PARALLELISM_MAX` are refused before any
//!   memory is allocated for them.
//! - Reading never writes. A wrong passphrase or a damaged file leaves the file byte for byte as
//!   it was. Writes are atomic: a temporary file in the same directory (mode 0600) is written,
//!   fsynced, renamed over `wallet.json`, and the directory is fsynced. A wallet changed on disk
//!   by someone else since it was opened is not overwritten (`ChangedOnDisk`).
//! - The file is created with mode 0600 and a directory created for it with mode 0700.
//! - Secrets pass through `zeroize::Zeroizing` buffers where this module holds them.

use std::io::Write;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use tinychain_core::crypto::Keypair;
use tinychain_core::types::Address;
use zeroize::Zeroizing;

/// The file inside a wallet directory.
pub const WALLET_FILE_NAME: &str = "wallet.json";
/// The only format version this code reads and writes.
pub const WALLET_FORMAT_VERSION: u32 = 1;
/// Key names are 1..=KEY_NAME_CHARS_MAX characters of `[a-zA-Z0-9_-]`.
pub const KEY_NAME_CHARS_MAX: usize = 32;
/// Largest argon2 memory cost accepted from a file or a caller: 4 GiB. A damaged file must not
/// make `key` allocate more than this.
pub const KDF_MEMORY_KIB_MAX: u32 = 4 * 1024 * 1024;
/// Largest argon2 iteration count accepted (an unlock would take minutes beyond this).
pub const KDF_ITERATIONS_MAX: u32 = 64;
/// Largest argon2 parallelism accepted.
pub const KDF_PARALLELISM_MAX: u32 = 64;
/// Largest wallet file read, so a damaged or hostile file cannot exhaust memory while parsing.
pub const WALLET_FILE_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Length of the random argon2 salt, fresh for every sealing.
pub const SALT_BYTES: usize = 16;
/// Length of the XChaCha20-Poly1305 nonce, fresh for every sealing.
pub const NONCE_BYTES: usize = 24;
/// Length of a sealed secret: 32 bytes of ciphertext and the 16-byte Poly1305 tag.
pub const CIPHERTEXT_BYTES: usize = 32 + 16;

const KDF_ALGORITHM: &str = "argon2id";
const CIPHER_ALGORITHM: &str = "xchacha20poly1305";
/// The prefix of the AEAD associated data; see `associated_data`.
const ASSOCIATED_DATA_DOMAIN: &[u8] = b"tinychain-wallet";

/// The argon2id cost parameters of one sealed key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory cost in KiB (argon2 `m`).
    pub memory_kib: u32,
    /// Number of passes over the memory (argon2 `t`).
    pub iterations: u32,
    /// Lanes (argon2 `p`).
    pub parallelism: u32,
}

impl KdfParams {
    /// What `generate`, `add` and `import_hex` use: 64 MiB, 3 passes, 1 lane (OWASP's argon2id
    /// guidance is 19 MiB and 2 passes at least; this is deliberately above it).
    pub const DEFAULT: KdfParams = KdfParams { memory_kib: 64 * 1024, iterations: 3, parallelism: 1 };

    /// The cheapest parameters argon2 accepts (8 KiB, 1 pass). Only for tests and throwaway
    /// development wallets: a passphrase under these parameters is easy to brute-force.
    pub const INSECURE_FAST: KdfParams = KdfParams { memory_kib: 8, iterations: 1, parallelism: 1 };

    /// Checks the parameters are within argon2's minima and this module's maxima.
    /// The error text names the offending parameter.
    pub fn check(&self) -> Result<(), String> {
        if self.parallelism == 0 || self.parallelism > KDF_PARALLELISM_MAX {
            return Err(format!("p = {} is outside 1..={KDF_PARALLELISM_MAX}", self.parallelism));
        }
        if self.iterations == 0 || self.iterations > KDF_ITERATIONS_MAX {
            return Err(format!("t = {} is outside 1..={KDF_ITERATIONS_MAX}", self.iterations));
        }
        let memory_kib_min = 8 * self.parallelism;
        if self.memory_kib < memory_kib_min || self.memory_kib > KDF_MEMORY_KIB_MAX {
            return Err(format!(
                "m_kib = {} is outside {memory_kib_min}..={KDF_MEMORY_KIB_MAX} (at least 8 KiB per lane, at most 4 GiB)",
                self.memory_kib
            ));
        }
        Ok(())
    }
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams::DEFAULT
    }
}

/// Everything that can go wrong with a wallet. Messages name the file, key or value and say
/// what to do; none ever contains a secret or a passphrase.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    #[error("no wallet at {}: create one first (it would be this file)", path.display())]
    NotFound { path: PathBuf },
    #[error("a wallet already exists at {}: refusing to overwrite it", path.display())]
    AlreadyExists { path: PathBuf },
    #[error("wallet file {} is damaged: {detail}; it was left untouched (restore it from a backup)", path.display())]
    Damaged { path: PathBuf, detail: String },
    #[error("wallet file {} has format version {version}; this program reads version {WALLET_FORMAT_VERSION} only", path.display())]
    UnsupportedVersion { path: PathBuf, version: u64 },
    #[error(
        "cannot decrypt key {name:?} in {}: the passphrase is wrong, or the entry was altered; the file was left untouched",
        path.display()
    )]
    WrongPassphrase { path: PathBuf, name: String },
    #[error("no key named {name:?} in {}; its keys are: {}", path.display(), list_names(known))]
    UnknownKey { path: PathBuf, name: String, known: Vec<String> },
    #[error("a key named {name:?} already exists in {}; choose another name", path.display())]
    DuplicateName { path: PathBuf, name: String },
    #[error(
        "key name {name:?} is not allowed: a name is 1 to {KEY_NAME_CHARS_MAX} characters of a-z, A-Z, 0-9, '_' and '-'"
    )]
    BadName { name: String },
    #[error("not a secret key: {detail}")]
    BadSecret { detail: String },
    #[error("refusing these argon2id parameters: {detail}")]
    BadKdfParams { detail: String },
    #[error(
        "wallet file {} changed on disk since it was opened (another wallet command?); nothing was written, run the command again",
        path.display()
    )]
    ChangedOnDisk { path: PathBuf },
    #[error("wallet I/O on {}: {detail}", path.display())]
    Io { path: PathBuf, detail: String },
    #[error("the operating system's random number generator failed: {detail}")]
    Random { detail: String },
    /// The caller's passphrase source failed (no terminal to prompt on, two typed passphrases
    /// differ, ...); the source says why.
    #[error(transparent)]
    Passphrase(Box<dyn std::error::Error + Send + Sync + 'static>),
}

fn list_names(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".to_string()
    } else {
        names.join(", ")
    }
}

/// One sealed key, checked: every field is of the right shape and length.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SealedKey {
    name: String,
    address: Address,
    kdf: KdfParams,
    salt: [u8; SALT_BYTES],
    nonce: [u8; NONCE_BYTES],
    ciphertext: [u8; CIPHERTEXT_BYTES],
}

/// An open wallet: where it lives and its checked contents. Holds no secret.
#[derive(Clone, Debug)]
pub struct Keystore {
    /// `DIR/wallet.json`.
    path: PathBuf,
    /// The entries in file order.
    keys: Vec<SealedKey>,
    /// The file's bytes as last read or written, to notice a change by another process.
    file_bytes: Vec<u8>,
}

// ---- The file's JSON form ----------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WalletFileJson {
    version: u64,
    keys: Vec<KeyJson>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyJson {
    name: String,
    address: String,
    kdf: KdfJson,
    cipher: CipherJson,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfJson {
    algorithm: String,
    m_kib: u32,
    t: u32,
    p: u32,
    salt: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CipherJson {
    algorithm: String,
    nonce: String,
}

// ---- The API -----------------------------------------------------------------------------------

impl Keystore {
    /// Creates an empty wallet in `dir` (created with mode 0700 if missing; an existing
    /// directory's mode is left alone). Refuses if `dir/wallet.json` exists.
    pub fn create(dir: &Path) -> Result<Keystore, KeystoreError> {
        let path = dir.join(WALLET_FILE_NAME);
        if path.exists() {
            return Err(KeystoreError::AlreadyExists { path });
        }
        create_private_dir(dir)?;
        let keys = Vec::new();
        let file_bytes = encode_file(&keys);
        // A wallet created by someone else between the check above and here is not clobbered:
        // `write_atomically` with `expected: None` links the new file into place, which fails
        // if one appeared meanwhile.
        write_atomically(&path, &file_bytes, None)?;
        Ok(Keystore { path, keys, file_bytes })
    }

    /// Opens the wallet in `dir`: reads and checks the whole file (shape, version, names,
    /// addresses, parameter bounds), but not the passphrase.
    pub fn open(dir: &Path) -> Result<Keystore, KeystoreError> {
        let path = dir.join(WALLET_FILE_NAME);
        let file_bytes = read_wallet_file(&path)?;
        warn_if_readable_by_others(&path);
        Keystore::from_file_bytes(path, file_bytes)
    }

    /// Checks a wallet file's bytes exactly as `open` does (shape, version, names, addresses,
    /// parameter bounds), without touching the disk; `path` names the file in errors and is
    /// where a later save would write. For tools that hold the bytes already, and the fuzzer.
    pub fn from_file_bytes(path: PathBuf, file_bytes: Vec<u8>) -> Result<Keystore, KeystoreError> {
        let keys = decode_file(&path, &file_bytes)?;
        Ok(Keystore { path, keys, file_bytes })
    }

    /// Whether `dir` holds a wallet file (it is not opened or checked).
    pub fn exists(dir: &Path) -> bool {
        dir.join(WALLET_FILE_NAME).is_file()
    }

    /// The wallet file's path (`DIR/wallet.json`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The keys' names and addresses, in file order.
    pub fn entries(&self) -> Vec<(String, Address)> {
        self.keys.iter().map(|key| (key.name.clone(), key.address)).collect()
    }

    /// The argon2id parameters the key called `name` is sealed with: what opening it will cost.
    pub fn kdf_params(&self, name: &str) -> Result<KdfParams, KeystoreError> {
        Ok(self.find(name)?.kdf)
    }

    /// The address of the key called `name`.
    pub fn address(&self, name: &str) -> Result<Address, KeystoreError> {
        Ok(self.find(name)?.address)
    }

    /// Generates a new random key, seals it under `passphrase` with `KdfParams::DEFAULT`,
    /// saves the wallet and returns the key's address.
    pub fn generate(&mut self, name: &str, passphrase: &str) -> Result<Address, KeystoreError> {
        self.generate_with_params(name, passphrase, KdfParams::DEFAULT)
    }

    /// `generate` with explicit argon2id parameters (tests and development wallets).
    pub fn generate_with_params(
        &mut self,
        name: &str,
        passphrase: &str,
        params: KdfParams,
    ) -> Result<Address, KeystoreError> {
        let mut secret = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut secret[..]).map_err(|error| KeystoreError::Random { detail: error.to_string() })?;
        let key = Keypair::from_secret_bytes(&secret);
        self.add_with_params(name, &key, passphrase, params)?;
        Ok(key.address())
    }

    /// Seals `key` under `passphrase` with `KdfParams::DEFAULT` and saves the wallet.
    pub fn add(&mut self, name: &str, key: &Keypair, passphrase: &str) -> Result<(), KeystoreError> {
        self.add_with_params(name, key, passphrase, KdfParams::DEFAULT)
    }

    /// Seals `key` under `passphrase` with explicit argon2id parameters and saves the wallet.
    /// For tests and development wallets (`KdfParams::INSECURE_FAST`); use `add` otherwise.
    /// On any error the wallet, in memory and on disk, is unchanged.
    pub fn add_with_params(
        &mut self,
        name: &str,
        key: &Keypair,
        passphrase: &str,
        params: KdfParams,
    ) -> Result<(), KeystoreError> {
        check_name(name)?;
        if self.keys.iter().any(|existing| existing.name == name) {
            return Err(KeystoreError::DuplicateName { path: self.path.clone(), name: name.to_string() });
        }
        params.check().map_err(|detail| KeystoreError::BadKdfParams { detail })?;
        let secret = Zeroizing::new(key.secret_bytes());
        let sealed = seal(name, key.address(), &secret, passphrase, params)?;
        let mut keys = self.keys.clone();
        keys.push(sealed);
        self.save(keys)
    }

    /// Decrypts the key called `name` with `passphrase`.
    pub fn key(&self, name: &str, passphrase: &str) -> Result<Keypair, KeystoreError> {
        let sealed = self.find(name)?;
        let secret = unseal(&self.path, sealed, passphrase)?;
        Ok(Keypair::from_secret_bytes(&secret))
    }

    /// Imports a key from its 32-byte secret written as 64 hex digits (surrounding whitespace
    /// and a `0x` prefix are ignored), sealed under `passphrase` with `KdfParams::DEFAULT`.
    pub fn import_hex(&mut self, name: &str, secret_hex: &str, passphrase: &str) -> Result<Address, KeystoreError> {
        self.import_hex_with_params(name, secret_hex, passphrase, KdfParams::DEFAULT)
    }

    /// `import_hex` with explicit argon2id parameters (tests).
    pub fn import_hex_with_params(
        &mut self,
        name: &str,
        secret_hex: &str,
        passphrase: &str,
        params: KdfParams,
    ) -> Result<Address, KeystoreError> {
        let secret = parse_secret_hex(secret_hex)?;
        let key = Keypair::from_secret_bytes(&secret);
        self.add_with_params(name, &key, passphrase, params)?;
        Ok(key.address())
    }

    /// The 32-byte secret of the key called `name`, as 64 lowercase hex digits (what
    /// `import_hex` reads). Anyone holding this text holds the key.
    pub fn export_hex(&self, name: &str, passphrase: &str) -> Result<Zeroizing<String>, KeystoreError> {
        let sealed = self.find(name)?;
        let secret = unseal(&self.path, sealed, passphrase)?;
        Ok(Zeroizing::new(hex::encode(&secret[..])))
    }

    fn find(&self, name: &str) -> Result<&SealedKey, KeystoreError> {
        self.keys.iter().find(|key| key.name == name).ok_or_else(|| KeystoreError::UnknownKey {
            path: self.path.clone(),
            name: name.to_string(),
            known: self.keys.iter().map(|key| key.name.clone()).collect(),
        })
    }

    /// Writes `keys` as the wallet's new contents, then adopts them. Refuses if the file on
    /// disk is no longer what this `Keystore` last read or wrote.
    fn save(&mut self, keys: Vec<SealedKey>) -> Result<(), KeystoreError> {
        let file_bytes = encode_file(&keys);
        write_atomically(&self.path, &file_bytes, Some(&self.file_bytes))?;
        self.keys = keys;
        self.file_bytes = file_bytes;
        Ok(())
    }
}

// ---- Names and secrets -------------------------------------------------------------------------

fn is_valid_name(name: &str) -> bool {
    (1..=KEY_NAME_CHARS_MAX).contains(&name.len())
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
}

fn check_name(name: &str) -> Result<(), KeystoreError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(KeystoreError::BadName { name: name.to_string() })
    }
}

fn parse_secret_hex(secret_hex: &str) -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
    let trimmed = secret_hex.trim();
    let digits = trimmed.strip_prefix("0x").unwrap_or(trimmed);
    if digits.len() != 64 {
        // Never echo the text: it may be a secret with a typo.
        return Err(KeystoreError::BadSecret {
            detail: format!("expected 64 hex digits (a 32-byte secret), got {} characters", digits.len()),
        });
    }
    let mut secret = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(digits, &mut secret[..])
        .map_err(|_| KeystoreError::BadSecret { detail: "it holds a character that is not a hex digit".to_string() })?;
    Ok(secret)
}

// ---- Sealing -----------------------------------------------------------------------------------

/// The AEAD associated data of one entry: `"tinychain-wallet"`, the format version as 4 bytes
/// little-endian, the name's length as 1 byte, the name, and the address's 32 bytes.
fn associated_data(name: &str, address: &Address) -> Vec<u8> {
    assert!(name.len() <= KEY_NAME_CHARS_MAX, "names are checked before sealing or unsealing");
    let mut data = Vec::with_capacity(ASSOCIATED_DATA_DOMAIN.len() + 4 + 1 + name.len() + 32);
    data.extend_from_slice(ASSOCIATED_DATA_DOMAIN);
    data.extend_from_slice(&WALLET_FORMAT_VERSION.to_le_bytes());
    data.push(u8::try_from(name.len()).expect("names are at most 32 bytes"));
    data.extend_from_slice(name.as_bytes());
    data.extend_from_slice(&address.0);
    data
}

/// The argon2id-derived 32-byte encryption key.
fn derive_key(passphrase: &str, salt: &[u8], params: KdfParams) -> Result<Zeroizing<[u8; 32]>, String> {
    let argon2_params = argon2::Params::new(params.memory_kib, params.iterations, params.parallelism, Some(32))
        .map_err(|error| {
            format!(
                "argon2 refused m_kib = {}, t = {}, p = {}: {error}",
                params.memory_kib, params.iterations, params.parallelism
            )
        })?;
    let argon2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, argon2_params);
    let mut key = Zeroizing::new([0u8; 32]);
    argon2
        .hash_password_into(passphrase.as_bytes(), salt, &mut key[..])
        .map_err(|error| format!("argon2 failed: {error}"))?;
    Ok(key)
}

fn seal(
    name: &str,
    address: Address,
    secret: &[u8; 32],
    passphrase: &str,
    params: KdfParams,
) -> Result<SealedKey, KeystoreError> {
    let mut salt = [0u8; SALT_BYTES];
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut salt).map_err(|error| KeystoreError::Random { detail: error.to_string() })?;
    getrandom::fill(&mut nonce).map_err(|error| KeystoreError::Random { detail: error.to_string() })?;
    let key = derive_key(passphrase, &salt, params).map_err(|detail| KeystoreError::BadKdfParams { detail })?;
    let cipher = XChaCha20Poly1305::new(&chacha20poly1305::Key::from(*key));
    let aad = associated_data(name, &address);
    let sealed_bytes = cipher
        .encrypt(&XNonce::from(nonce), Payload { msg: &secret[..], aad: &aad })
        .expect("XChaCha20-Poly1305 encrypts any message far below its length limit");
    let ciphertext: [u8; CIPHERTEXT_BYTES] =
        sealed_bytes.as_slice().try_into().expect("a 32-byte secret seals to 32 bytes and a 16-byte tag");
    Ok(SealedKey { name: name.to_string(), address, kdf: params, salt, nonce, ciphertext })
}

fn unseal(path: &Path, sealed: &SealedKey, passphrase: &str) -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
    let damaged = |detail: String| KeystoreError::Damaged { path: path.to_path_buf(), detail };
    let key = derive_key(passphrase, &sealed.salt, sealed.kdf)
        .map_err(|detail| damaged(format!("key {:?}: {detail}", sealed.name)))?;
    let cipher = XChaCha20Poly1305::new(&chacha20poly1305::Key::from(*key));
    let aad = associated_data(&sealed.name, &sealed.address);
    let plaintext = Zeroizing::new(
        cipher
            .decrypt(&XNonce::from(sealed.nonce), Payload { msg: &sealed.ciphertext, aad: &aad })
            .map_err(|_| KeystoreError::WrongPassphrase { path: path.to_path_buf(), name: sealed.name.clone() })?,
    );
    let mut secret = Zeroizing::new([0u8; 32]);
    if plaintext.len() != secret.len() {
        return Err(damaged(format!("key {:?} decrypts to {} bytes, not 32", sealed.name, plaintext.len())));
    }
    secret.copy_from_slice(&plaintext);
    let derived = Keypair::from_secret_bytes(&secret).address();
    if derived != sealed.address {
        return Err(damaged(format!(
            "key {:?} decrypts to the secret of {derived}, but the entry says its address is {}",
            sealed.name, sealed.address
        )));
    }
    Ok(secret)
}

// ---- Encoding and decoding the file --------------------------------------------------------------

fn encode_file(keys: &[SealedKey]) -> Vec<u8> {
    let file = WalletFileJson {
        version: u64::from(WALLET_FORMAT_VERSION),
        keys: keys
            .iter()
            .map(|key| KeyJson {
                name: key.name.clone(),
                address: key.address.to_string(),
                kdf: KdfJson {
                    algorithm: KDF_ALGORITHM.to_string(),
                    m_kib: key.kdf.memory_kib,
                    t: key.kdf.iterations,
                    p: key.kdf.parallelism,
                    salt: hex::encode(key.salt),
                },
                cipher: CipherJson { algorithm: CIPHER_ALGORITHM.to_string(), nonce: hex::encode(key.nonce) },
                ciphertext: hex::encode(key.ciphertext),
            })
            .collect(),
    };
    let mut bytes = serde_json::to_vec_pretty(&file).expect("plain strings and integers always serialize");
    bytes.push(b'\n');
    bytes
}

fn decode_file(path: &Path, bytes: &[u8]) -> Result<Vec<SealedKey>, KeystoreError> {
    let damaged = |detail: String| KeystoreError::Damaged { path: path.to_path_buf(), detail };
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let file: WalletFileJson = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|error| damaged(format!("not a wallet file: at `{}`: {}", error.path(), error.inner())))?;
    deserializer.end().map_err(|error| damaged(format!("trailing data after the wallet: {error}")))?;
    if file.version != u64::from(WALLET_FORMAT_VERSION) {
        return Err(KeystoreError::UnsupportedVersion { path: path.to_path_buf(), version: file.version });
    }
    let mut keys: Vec<SealedKey> = Vec::with_capacity(file.keys.len());
    for (index, entry) in file.keys.into_iter().enumerate() {
        let key = decode_key(index, entry).map_err(damaged)?;
        if keys.iter().any(|existing| existing.name == key.name) {
            return Err(damaged(format!("keys[{index}]: the name {:?} appears twice", key.name)));
        }
        keys.push(key);
    }
    Ok(keys)
}

fn decode_key(index: usize, entry: KeyJson) -> Result<SealedKey, String> {
    let field = |name: &str| format!("keys[{index}].{name}");
    if !is_valid_name(&entry.name) {
        return Err(format!(
            "{}: {:?} is not a key name (1 to {KEY_NAME_CHARS_MAX} characters of a-z, A-Z, 0-9, '_' and '-')",
            field("name"),
            entry.name
        ));
    }
    let address: Address = entry.address.parse().map_err(|error| format!("{}: {error}", field("address")))?;
    if entry.kdf.algorithm != KDF_ALGORITHM {
        return Err(format!("{}: {:?} is not {KDF_ALGORITHM:?}", field("kdf.algorithm"), entry.kdf.algorithm));
    }
    let kdf = KdfParams { memory_kib: entry.kdf.m_kib, iterations: entry.kdf.t, parallelism: entry.kdf.p };
    kdf.check().map_err(|detail| format!("{}.{detail}", field("kdf")))?;
    let salt: [u8; SALT_BYTES] =
        decode_hex_array(&entry.kdf.salt).map_err(|detail| format!("{}: {detail}", field("kdf.salt")))?;
    if entry.cipher.algorithm != CIPHER_ALGORITHM {
        return Err(format!("{}: {:?} is not {CIPHER_ALGORITHM:?}", field("cipher.algorithm"), entry.cipher.algorithm));
    }
    let nonce: [u8; NONCE_BYTES] =
        decode_hex_array(&entry.cipher.nonce).map_err(|detail| format!("{}: {detail}", field("cipher.nonce")))?;
    let ciphertext: [u8; CIPHERTEXT_BYTES] =
        decode_hex_array(&entry.ciphertext).map_err(|detail| format!("{}: {detail}", field("ciphertext")))?;
    Ok(SealedKey { name: entry.name, address, kdf, salt, nonce, ciphertext })
}

fn decode_hex_array<const N: usize>(text: &str) -> Result<[u8; N], String> {
    if text.len() != 2 * N {
        return Err(format!("expected {} hex digits ({N} bytes), found {} characters", 2 * N, text.len()));
    }
    let mut bytes = [0u8; N];
    hex::decode_to_slice(text, &mut bytes).map_err(|error| format!("not hex: {error}"))?;
    Ok(bytes)
}

// ---- Files -------------------------------------------------------------------------------------

fn io_error(path: &Path, what: &str, error: std::io::Error) -> KeystoreError {
    KeystoreError::Io { path: path.to_path_buf(), detail: format!("{what}: {error}") }
}

fn read_wallet_file(path: &Path) -> Result<Vec<u8>, KeystoreError> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeystoreError::NotFound { path: path.to_path_buf() })
        }
        Err(error) => return Err(io_error(path, "cannot open", error)),
    };
    let mut bytes = Vec::new();
    file.take(WALLET_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| io_error(path, "cannot read", error))?;
    if bytes.len() as u64 > WALLET_FILE_BYTES_MAX {
        return Err(KeystoreError::Damaged {
            path: path.to_path_buf(),
            detail: format!("the file is larger than {WALLET_FILE_BYTES_MAX} bytes, far more than any wallet"),
        });
    }
    Ok(bytes)
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(metadata) = std::fs::metadata(path) {
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "wallet file is accessible to other users: chmod 600 it");
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

fn create_private_dir(dir: &Path) -> Result<(), KeystoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|error| io_error(dir, "cannot create the wallet directory", error))
}

/// Replaces `path` by `bytes` atomically. `expected` is what the file must still hold (it was
/// read or written by us); `None` means the file must not exist.
fn write_atomically(path: &Path, bytes: &[u8], expected: Option<&[u8]>) -> Result<(), KeystoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    // Check and replace under an exclusive lock, so two wallet commands writing at once cannot
    // both pass the check and the second silently drop the first one's key: the second gets
    // `ChangedOnDisk` instead. Held until this function returns.
    let _lock = lock_wallet_dir(dir)?;
    match (std::fs::read(path), expected) {
        (Ok(current), Some(expected)) if current == expected => {}
        (Ok(_), None) => return Err(KeystoreError::AlreadyExists { path: path.to_path_buf() }),
        (Ok(_), Some(_)) => return Err(KeystoreError::ChangedOnDisk { path: path.to_path_buf() }),
        (Err(error), Some(_)) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeystoreError::ChangedOnDisk { path: path.to_path_buf() })
        }
        (Err(error), None) if error.kind() == std::io::ErrorKind::NotFound => {}
        (Err(error), _) => return Err(io_error(path, "cannot read", error)),
    }

    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|error| KeystoreError::Random { detail: error.to_string() })?;
    let temporary_path = dir.join(format!(".{WALLET_FILE_NAME}.{}.tmp", hex::encode(suffix)));
    let result = write_temporary_then_rename(&temporary_path, path, bytes, expected.is_none());
    if result.is_err() {
        // Best effort: the temporary file holds only sealed data, but should not linger.
        let _ = std::fs::remove_file(&temporary_path);
    }
    result?;
    sync_dir(dir)
}

/// The lock file next to `wallet.json`: an exclusive advisory lock on it guards every write.
pub const LOCK_FILE_NAME: &str = ".wallet.lock";

fn lock_wallet_dir(dir: &Path) -> Result<std::fs::File, KeystoreError> {
    let lock_path = dir.join(LOCK_FILE_NAME);
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(&lock_path).map_err(|error| io_error(&lock_path, "cannot open", error))?;
    file.lock().map_err(|error| io_error(&lock_path, "cannot lock", error))?;
    Ok(file)
}

/// With `must_not_exist`, the new file is hard-linked into place instead of renamed, which fails
/// rather than replaces if `path` appeared meanwhile.
fn write_temporary_then_rename(
    temporary_path: &Path,
    path: &Path,
    bytes: &[u8],
    must_not_exist: bool,
) -> Result<(), KeystoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(temporary_path).map_err(|error| io_error(temporary_path, "cannot create", error))?;
    file.write_all(bytes).map_err(|error| io_error(temporary_path, "cannot write", error))?;
    file.sync_all().map_err(|error| io_error(temporary_path, "cannot fsync", error))?;
    drop(file);
    if must_not_exist {
        std::fs::hard_link(temporary_path, path).map_err(|error| match error.kind() {
            std::io::ErrorKind::AlreadyExists => KeystoreError::AlreadyExists { path: path.to_path_buf() },
            _ => io_error(path, "cannot link the new file into place", error),
        })?;
        std::fs::remove_file(temporary_path).map_err(|error| io_error(temporary_path, "cannot remove", error))
    } else {
        std::fs::rename(temporary_path, path)
            .map_err(|error| io_error(path, "cannot rename the new file into place", error))
    }
}

fn sync_dir(dir: &Path) -> Result<(), KeystoreError> {
    #[cfg(unix)]
    {
        let handle = std::fs::File::open(dir).map_err(|error| io_error(dir, "cannot open to fsync", error))?;
        handle.sync_all().map_err(|error| io_error(dir, "cannot fsync", error))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
