//! A node's home directory: its layout, reading every file a node needs, and writing the files
//! `tinychain init` creates.
//!
//! ```text
//! HOME/config.toml      the node's configuration (`crate::config`)
//! HOME/genesis.json     the chain's genesis (the same file on every node)
//! HOME/node.key         the node's Ed25519 secret key, JSON {"id":"tc1..","secret":"<hex>"}, mode 0600
//! HOME/node.crt         the self-signed TLS certificate (PEM) made from the key, for operators
//! HOME/validator.json   this node's genesis entry {"id","name","addr"} for whoever assembles the genesis
//! HOME/data/chain.redb  the database (`storage.path` in config.toml), written by the node
//! ```
//!
//! Contract: [`Home::load`] checks everything a node needs before it starts (config valid,
//! genesis valid, key readable by its owner only and listed as a validator of the genesis) and
//! every [`HomeError`] names the file and what is wrong. Files are written atomically (a
//! temporary file in the same directory, then a rename), and a key is never overwritten.

use crate::config::{Config, ConfigError};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use tinychain_core::crypto::Keypair;
use tinychain_core::genesis::{Genesis, GenesisError, ValidatorEntry};
use tinychain_core::types::NodeId;
use zeroize::Zeroize;

pub use crate::config::load_config;

pub const CONFIG_FILE: &str = "config.toml";
pub const GENESIS_FILE: &str = "genesis.json";
pub const KEY_FILE: &str = "node.key";
pub const CERTIFICATE_FILE: &str = "node.crt";
pub const VALIDATOR_FILE: &str = "validator.json";
pub const DATA_DIR: &str = "data";

/// A node's home directory. Only paths: nothing is read until [`Home::load`] or a `load_*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Home {
    pub dir: PathBuf,
}

/// Everything a node needs to start, read from its home and checked.
#[derive(Debug)]
pub struct Loaded {
    pub home: Home,
    pub config: Config,
    pub genesis: Genesis,
    pub key: Keypair,
}

/// Why a home, or one of its files, cannot be used. Every message names the path.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("home directory {path} does not exist; create it with `tinychain init --home {path}`")]
    NoHome { path: PathBuf },
    #[error("{path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} already exists; refusing to overwrite it")]
    AlreadyExists { path: PathBuf },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "{path}: {}{message}",
        if field.is_empty() || field == "." || field == "?" { "not valid JSON: ".to_string() } else { format!("{field}: ") }
    )]
    Json { path: PathBuf, field: String, message: String },
    #[error("{path}: {source}")]
    InvalidGenesis { path: PathBuf, source: GenesisError },
    #[error("{path}: \"secret\" must be 64 hex digits (32 bytes)")]
    BadSecret { path: PathBuf },
    #[error("{path}: the secret key belongs to {derived}, but the file says \"id\": \"{claimed}\"")]
    KeyIdMismatch { path: PathBuf, claimed: NodeId, derived: NodeId },
    #[error("{path} can be read by other users (mode {mode:o}); the node key must be private: run `chmod 600 {path}`")]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error(
        "this node's key {id} ({key_path}) is not a validator of the genesis {genesis_path} ({validators} \
         validators); the genesis must be assembled from this home's validator.json"
    )]
    NotAValidator { id: NodeId, key_path: PathBuf, genesis_path: PathBuf, validators: usize },
    #[error("cannot read 32 random bytes from the operating system for a new key: {reason}")]
    Randomness { reason: String },
    #[error("cannot make the TLS certificate for {id}: {reason}")]
    Certificate { id: NodeId, reason: String },
}

impl Home {
    pub fn new(dir: impl Into<PathBuf>) -> Home {
        Home { dir: dir.into() }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join(CONFIG_FILE)
    }

    pub fn genesis_path(&self) -> PathBuf {
        self.dir.join(GENESIS_FILE)
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.join(KEY_FILE)
    }

    pub fn certificate_path(&self) -> PathBuf {
        self.dir.join(CERTIFICATE_FILE)
    }

    pub fn validator_path(&self) -> PathBuf {
        self.dir.join(VALIDATOR_FILE)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join(DATA_DIR)
    }

    /// The database file with the default `storage.path`; [`Loaded::database_path`] honours
    /// the config.
    pub fn database_path(&self) -> PathBuf {
        self.resolve(&crate::config::StorageSection::default().path)
    }

    /// A path from the config: relative paths are relative to the home directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.dir.join(path)
        }
    }

    /// Reads and checks everything a node needs: the config, the genesis, the key (private, and
    /// a validator of the genesis). Warns when node.crt is missing or is not the key's
    /// certificate (the node rebuilds the certificate from the key, so it still starts).
    pub fn load(dir: impl Into<PathBuf>) -> Result<Loaded, HomeError> {
        let home = Home::new(dir);
        match std::fs::metadata(&home.dir) {
            Ok(metadata) if metadata.is_dir() => {}
            Ok(_) => return Err(HomeError::NotADirectory { path: home.dir.clone() }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(HomeError::NoHome { path: home.dir.clone() })
            }
            Err(source) => return Err(HomeError::Read { path: home.dir.clone(), source }),
        }
        let config = load_config(&home.config_path())?;
        let genesis = load_genesis(&home.genesis_path())?;
        let key = load_key(&home)?;
        let id = key.address();
        let Some(index) = genesis.validator_index(&id) else {
            return Err(HomeError::NotAValidator {
                id,
                key_path: home.key_path(),
                genesis_path: home.genesis_path(),
                validators: genesis.validators.len(),
            });
        };
        check_certificate_file(&home, &key);
        let entry = &genesis.validators[index];
        let advertised_port = entry.addr.rsplit_once(':').and_then(|(_, port)| port.parse::<u16>().ok());
        if advertised_port.is_some_and(|port| port != config.p2p.listen.port()) {
            tracing::warn!(
                genesis_addr = %entry.addr,
                p2p_listen = %config.p2p.listen,
                "this node's address in the genesis has another port than p2p.listen: peers may not reach it"
            );
        }
        Ok(Loaded { home, config, genesis, key })
    }
}

impl Loaded {
    /// The database file: `storage.path` from the config, relative to the home.
    pub fn database_path(&self) -> PathBuf {
        self.home.resolve(&self.config.storage.path)
    }

    /// This node's id (its key's public key, also its account address).
    pub fn node_id(&self) -> NodeId {
        self.key.address()
    }
}

fn check_certificate_file(home: &Home, key: &Keypair) {
    let path = home.certificate_path();
    let expected = match certificate_pem(key) {
        Ok(pem) => pem,
        Err(error) => {
            tracing::warn!(%error, "cannot rebuild the node certificate to compare with node.crt");
            return;
        }
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if text == expected => {}
        Ok(_) => tracing::warn!(
            path = %path.display(),
            "node.crt is not this node key's certificate; the node uses the one made from node.key"
        ),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read node.crt; the node makes its certificate from node.key")
        }
    }
}

/// The key file's JSON form.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    id: NodeId,
    secret: String,
}

/// A new node key from 32 bytes of operating-system randomness.
pub fn generate_key() -> Result<Keypair, HomeError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|error| HomeError::Randomness { reason: error.to_string() })?;
    let key = Keypair::from_secret_bytes(&secret);
    secret.zeroize();
    Ok(key)
}

/// Reads the home's node.key (see [`load_key_file`]).
pub fn load_key(home: &Home) -> Result<Keypair, HomeError> {
    load_key_file(&home.key_path())
}

/// Reads a key file, refusing it when group or others may read it (on Unix) or when its "id"
/// is not the secret's public key.
pub fn load_key_file(path: &Path) -> Result<Keypair, HomeError> {
    check_private(path)?;
    let mut text =
        std::fs::read_to_string(path).map_err(|source| HomeError::Read { path: path.to_path_buf(), source })?;
    let parsed: Result<KeyFile, _> = parse_json(&text, path);
    text.zeroize();
    let mut file = parsed?;
    let mut secret = [0u8; 32];
    let decoded = hex::decode_to_slice(file.secret.trim(), &mut secret);
    file.secret.zeroize();
    decoded.map_err(|_| HomeError::BadSecret { path: path.to_path_buf() })?;
    let key = Keypair::from_secret_bytes(&secret);
    secret.zeroize();
    if key.address() != file.id {
        return Err(HomeError::KeyIdMismatch { path: path.to_path_buf(), claimed: file.id, derived: key.address() });
    }
    Ok(key)
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), HomeError> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(path).map_err(|source| HomeError::Read { path: path.to_path_buf(), source })?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(HomeError::KeyPermissions { path: path.to_path_buf(), mode });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<(), HomeError> {
    Ok(())
}

/// Writes a key file with mode 0600; refuses if the file exists.
pub fn write_key_file(path: &Path, key: &Keypair) -> Result<(), HomeError> {
    let mut file = KeyFile { id: key.address(), secret: hex::encode(key.secret_bytes()) };
    let mut text = serde_json::to_string_pretty(&file).expect("a key file serialises");
    text.push('\n');
    file.secret.zeroize();
    let written = write_file_atomically(path, text.as_bytes(), FileMode::Private, Overwrite::Refuse);
    text.zeroize();
    written
}

/// The node's self-signed TLS certificate, PEM-encoded (what node.crt holds).
pub fn certificate_pem(key: &Keypair) -> Result<String, HomeError> {
    let certificate = tinychain_net::tls::node_certificate(key)
        .map_err(|error| HomeError::Certificate { id: key.address(), reason: error.to_string() })?;
    Ok(pem_encode("CERTIFICATE", certificate.certificate.as_ref()))
}

/// Reads and validates a genesis file: JSON errors name the field path (`validators[2].id`),
/// then `Genesis::validate` names the field it rejects.
pub fn load_genesis(path: &Path) -> Result<Genesis, HomeError> {
    let text = std::fs::read_to_string(path).map_err(|source| HomeError::Read { path: path.to_path_buf(), source })?;
    let genesis: Genesis = parse_json(&text, path)?;
    genesis.validate().map_err(|source| HomeError::InvalidGenesis { path: path.to_path_buf(), source })?;
    Ok(genesis)
}

/// Writes a genesis file (pretty JSON) atomically.
pub fn write_genesis(path: &Path, genesis: &Genesis, overwrite: Overwrite) -> Result<(), HomeError> {
    let mut text = serde_json::to_string_pretty(genesis).expect("a genesis serialises");
    text.push('\n');
    write_file_atomically(path, text.as_bytes(), FileMode::Public, overwrite)
}

/// Reads a validator.json: one genesis entry {"id","name","addr"}.
pub fn load_validator_entry(path: &Path) -> Result<ValidatorEntry, HomeError> {
    let text = std::fs::read_to_string(path).map_err(|source| HomeError::Read { path: path.to_path_buf(), source })?;
    parse_json(&text, path)
}

/// Writes a validator.json atomically.
pub fn write_validator_entry(path: &Path, entry: &ValidatorEntry, overwrite: Overwrite) -> Result<(), HomeError> {
    let mut text = serde_json::to_string_pretty(entry).expect("a validator entry serialises");
    text.push('\n');
    write_file_atomically(path, text.as_bytes(), FileMode::Public, overwrite)
}

/// Parses JSON, naming the file, the field path and the line in the error.
pub fn parse_json<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T, HomeError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| HomeError::Json {
        path: path.to_path_buf(),
        field: error.path().to_string(),
        message: error.inner().to_string(),
    })?;
    deserializer.end().map_err(|error| HomeError::Json {
        path: path.to_path_buf(),
        field: String::new(),
        message: error.to_string(),
    })?;
    Ok(value)
}

/// Who may read a written file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileMode {
    /// 0600: secret keys.
    Private,
    /// 0644 (subject to the umask): everything else.
    Public,
}

/// What to do when the target file exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overwrite {
    Refuse,
    Replace,
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, then renames it over `path`, so
/// a crash leaves either the old file or the new one. With `Overwrite::Refuse` an existing
/// file is an error and is left untouched (the rename uses a hard link, which fails if the
/// target exists, so a concurrent writer cannot be clobbered either).
pub fn write_file_atomically(path: &Path, bytes: &[u8], mode: FileMode, overwrite: Overwrite) -> Result<(), HomeError> {
    let write_error = |source| HomeError::Write { path: path.to_path_buf(), source };
    if overwrite == Overwrite::Refuse && path.symlink_metadata().is_ok() {
        return Err(HomeError::AlreadyExists { path: path.to_path_buf() });
    }
    let file_name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let directory = path.parent().filter(|parent| !parent.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // Unique per process and per call, so two threads writing beside each other never share one.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let sequence = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temporary = directory.join(format!(".{file_name}.tmp-{}-{sequence}", std::process::id()));
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(match mode {
                FileMode::Private => 0o600,
                FileMode::Public => 0o644,
            });
        }
        let mut file = options.open(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        match overwrite {
            Overwrite::Replace => std::fs::rename(&temporary, path),
            Overwrite::Refuse => std::fs::hard_link(&temporary, path).and_then(|()| std::fs::remove_file(&temporary)),
        }
    })();
    if let Err(error) = result {
        let _ = std::fs::remove_file(&temporary);
        if error.kind() == std::io::ErrorKind::AlreadyExists {
            return Err(HomeError::AlreadyExists { path: path.to_path_buf() });
        }
        return Err(write_error(error));
    }
    if let Ok(directory) = std::fs::File::open(directory) {
        // Persist the rename itself; a failure here only weakens crash safety, so it is ignored.
        let _ = directory.sync_all();
    }
    Ok(())
}

/// PEM: base64 of the DER in 64-character lines between BEGIN and END lines (the `pem` crate).
fn pem_encode(label: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(label, der.to_vec()), config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_matches_known_base64() {
        assert_eq!(pem_encode("X", b""), "-----BEGIN X-----\n-----END X-----\n");
        assert_eq!(pem_encode("X", b"f"), "-----BEGIN X-----\nZg==\n-----END X-----\n");
        assert_eq!(pem_encode("X", b"fo"), "-----BEGIN X-----\nZm8=\n-----END X-----\n");
        assert_eq!(pem_encode("X", b"foobar"), "-----BEGIN X-----\nZm9vYmFy\n-----END X-----\n");
        let long = pem_encode("X", &[0xff; 48]);
        assert_eq!(long.lines().nth(1).unwrap(), "/".repeat(64));
    }

    #[test]
    fn atomic_write_refuses_an_existing_file_and_leaves_it_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        write_file_atomically(&path, b"one", FileMode::Public, Overwrite::Refuse).unwrap();
        let error = write_file_atomically(&path, b"two", FileMode::Public, Overwrite::Refuse).unwrap_err();
        assert!(matches!(error, HomeError::AlreadyExists { .. }), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        write_file_atomically(&path, b"three", FileMode::Public, Overwrite::Replace).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"three");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temporary files left behind");
    }

    #[test]
    fn key_file_round_trips_and_a_wrong_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let key = generate_key().unwrap();
        write_key_file(&path, &key).unwrap();
        assert_eq!(load_key_file(&path).unwrap().address(), key.address());
        let other = Keypair::from_secret_bytes(&[7; 32]);
        let text =
            std::fs::read_to_string(&path).unwrap().replace(&key.address().to_string(), &other.address().to_string());
        let forged = dir.path().join("forged.key");
        write_file_atomically(&forged, text.as_bytes(), FileMode::Private, Overwrite::Refuse).unwrap();
        let error = load_key_file(&forged).unwrap_err().to_string();
        assert!(error.contains("forged.key") && error.contains("belongs to"), "{error}");
    }
}
