//! Setting a network up: a new node home (`tinychain init`), a genesis assembled from the
//! validators' `validator.json` files (`tinychain genesis assemble`), a whole local testnet in one
//! directory (`init_testnet`, read back by `load_testnet`) with its development wallet.
//!
//! Contract: nothing here overwrites a key, and a testnet directory is only ever created whole:
//! `testnet.json` is written last, so its presence means every home, the genesis and the dev
//! wallet are in place. Amounts are parsed exactly with integer arithmetic (no floats).

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tinychain_core::crypto::Keypair;
use tinychain_core::genesis::{Allocation, Genesis, GenesisError, Parameters, ValidatorEntry};
use tinychain_core::types::{Address, Amount, NodeId, UNITS_PER_COIN};
use tinychain_node::config::Config;
use tinychain_node::home::{self, FileMode, Home, HomeError, Overwrite};
use tinychain_wallet::amount::{parse_amount, AmountError};
use tinychain_wallet::keystore::{KdfParams, Keystore, KeystoreError};

pub const TESTNET_FILE: &str = "testnet.json";
pub const TESTNET_NODES_MAX: usize = 16;
pub const TESTNET_BASE_PORT_DEFAULT: u16 = 7740;
pub const TESTNET_CHAIN_ID_DEFAULT: &str = "tinychain-local";
/// The development wallet's key name and its genesis allocation.
pub const DEV_KEY_NAME: &str = "dev";
pub const DEV_ALLOCATION: Amount = 1_000_000 * UNITS_PER_COIN;
/// The development wallet's passphrase: empty (the wallet is for local testnets only).
pub const DEV_WALLET_PASSPHRASE: &str = "";
/// Without an explicit producer timeout, an explicit block interval gets this many intervals
/// (DESIGN.md's defaults: 2 s blocks, 10 s timeout).
pub const PRODUCER_TIMEOUT_INTERVALS_DEFAULT: u64 = 5;
pub const VALIDATOR_NAME_BYTES_MAX: usize = 64;

/// Why a home, a genesis or a testnet could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error(transparent)]
    Amount(#[from] AmountError),
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    #[error(
        "home {dir} already holds {files}; init only writes a home where these files are absent (keys are never overwritten)"
    )]
    HomeExists { dir: PathBuf, files: String },
    #[error("cannot create directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("validator name {name:?}: {reason}")]
    BadName { name: String, reason: String },
    #[error("validator address {addr:?}: {reason}")]
    BadAddress { addr: String, reason: String },
    #[error("allocation {text:?}: {reason}")]
    BadAllocation { text: String, reason: String },
    #[error("{second} repeats the validator {what} of {first}: {value}")]
    DuplicateValidatorFile { first: PathBuf, second: PathBuf, what: &'static str, value: String },
    #[error("the assembled genesis is invalid: {0}")]
    InvalidGenesis(#[from] GenesisError),
    #[error("testnet option {field}: {reason}")]
    BadTestnetOption { field: &'static str, reason: String },
    #[error(
        "{path} already exists: {dir} holds a testnet; run it again as it is, or delete the directory for a new one"
    )]
    TestnetExists { dir: PathBuf, path: PathBuf },
    #[error("{path} does not exist: {dir} holds no testnet (create one with init_testnet / `tinychain testnet`)")]
    NoTestnet { dir: PathBuf, path: PathBuf },
    #[error("{path}: node {name}'s home {home} does not exist; delete {dir} and create the testnet again")]
    TestnetHomeMissing { dir: PathBuf, path: PathBuf, name: String, home: PathBuf },
    #[error("{path}: {reason}")]
    BadTestnetFile { path: PathBuf, reason: String },
}

// ---------------------------------------------------------------------------------------------
// One home

/// What `tinychain init` writes.
#[derive(Clone, Debug)]
pub struct InitOptions {
    pub dir: PathBuf,
    /// The validator's name in the genesis (unique in the chain).
    pub name: String,
    /// The `host:port` other validators dial (this node's genesis `addr`).
    pub p2p_addr: String,
    /// Written to config.toml (with comments).
    pub config: Config,
    /// A genesis file to validate and copy in as genesis.json.
    pub genesis: Option<PathBuf>,
}

/// A home `init_home` created.
#[derive(Clone, Debug)]
pub struct InitializedHome {
    pub home: Home,
    pub id: NodeId,
    /// What validator.json holds.
    pub validator: ValidatorEntry,
    /// Whether the copied genesis lists this node (false when no genesis was given).
    pub is_validator_of_genesis: bool,
}

/// Creates a node home: a new key (node.key, 0600), its certificate (node.crt), config.toml,
/// validator.json, and genesis.json when one is given. Refuses, writing nothing, if any of these
/// files already exists.
pub fn init_home(options: &InitOptions) -> Result<InitializedHome, SetupError> {
    check_validator_name(&options.name)?;
    tinychain_node::config::check_host_port(&options.p2p_addr)
        .map_err(|reason| SetupError::BadAddress { addr: options.p2p_addr.clone(), reason })?;
    options.config.validate().map_err(|invalid| {
        SetupError::Home(HomeError::Config(tinychain_node::config::ConfigError::Invalid {
            path: Home::new(&options.dir).config_path(),
            invalid,
        }))
    })?;
    let genesis = options.genesis.as_deref().map(home::load_genesis).transpose()?;
    let home = Home::new(&options.dir);
    let mut planned = vec![home.key_path(), home.certificate_path(), home.config_path(), home.validator_path()];
    if genesis.is_some() {
        planned.push(home.genesis_path());
    }
    let present: Vec<String> = planned
        .iter()
        .filter(|path| path.symlink_metadata().is_ok())
        .filter_map(|path| path.file_name().map(|name| name.to_string_lossy().into_owned()))
        .collect();
    if !present.is_empty() {
        return Err(SetupError::HomeExists { dir: home.dir.clone(), files: present.join(", ") });
    }
    create_dir(&home.dir)?;
    let key = home::generate_key()?;
    // The key first: if anything after it fails, init can be re-run only after the operator
    // removes the partial home, which is safer than ever writing a second key.
    home::write_key_file(&home.key_path(), &key)?;
    let pem = home::certificate_pem(&key)?;
    home::write_file_atomically(&home.certificate_path(), pem.as_bytes(), FileMode::Public, Overwrite::Refuse)?;
    home::write_file_atomically(
        &home.config_path(),
        options.config.to_commented_toml().as_bytes(),
        FileMode::Public,
        Overwrite::Refuse,
    )?;
    let validator = ValidatorEntry { id: key.address(), name: options.name.clone(), addr: options.p2p_addr.clone() };
    home::write_validator_entry(&home.validator_path(), &validator, Overwrite::Refuse)?;
    let mut is_validator_of_genesis = false;
    if let Some(genesis) = &genesis {
        home::write_genesis(&home.genesis_path(), genesis, Overwrite::Refuse)?;
        is_validator_of_genesis = genesis.validator_index(&key.address()).is_some();
    }
    Ok(InitializedHome { home, id: key.address(), validator, is_validator_of_genesis })
}

/// A validator name: 1 to 64 characters of ASCII letters, digits, '-', '_' and '.'.
pub fn check_validator_name(name: &str) -> Result<(), SetupError> {
    let bad = |reason: &str| Err(SetupError::BadName { name: name.to_string(), reason: reason.to_string() });
    if name.is_empty() || name.len() > VALIDATOR_NAME_BYTES_MAX {
        return bad("must be 1 to 64 characters");
    }
    if !name.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte)) {
        return bad("may only hold ASCII letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

/// This machine's host name, or None when the system does not say.
pub fn host_name() -> Option<String> {
    sysinfo::System::host_name().ok().filter(|name| !name.is_empty() && !name.contains(char::is_whitespace))
}

/// The name `init` uses without `--name`: the host name's first label, else "node".
pub fn default_validator_name() -> String {
    host_name()
        .and_then(|host| host.split('.').next().map(str::to_string))
        .filter(|name| check_validator_name(name).is_ok())
        .unwrap_or_else(|| "node".to_string())
}

/// The address other validators dial without `--p2p-addr`: `<host name or 127.0.0.1>:port`.
pub fn default_p2p_addr(port: u16) -> String {
    let host = host_name().unwrap_or_else(|| "127.0.0.1".to_string());
    format!("{host}:{port}")
}

// ---------------------------------------------------------------------------------------------
// Genesis assembly

/// What `tinychain genesis assemble` builds a genesis from.
#[derive(Clone, Debug)]
pub struct AssembleOptions {
    pub chain_id: String,
    pub validators: Vec<ValidatorEntry>,
    pub allocations: Vec<Allocation>,
    pub block_interval_ms: Option<u64>,
    /// Without it: `PRODUCER_TIMEOUT_INTERVALS_DEFAULT` × the block interval when an interval is
    /// given, else the default.
    pub producer_timeout_ms: Option<u64>,
    /// Without it: the default (`limits::BLOCK_TRANSFERS_MAX_DEFAULT`).
    pub block_transfers_max: Option<u32>,
    pub genesis_time_ms: u64,
}

/// Builds a genesis and validates it. Every other parameter keeps its default.
pub fn assemble_genesis(options: &AssembleOptions) -> Result<Genesis, SetupError> {
    let genesis = Genesis {
        chain_id: options.chain_id.clone(),
        genesis_time_ms: options.genesis_time_ms,
        validators: options.validators.clone(),
        allocations: options.allocations.clone(),
        parameters: parameters_with(
            options.block_interval_ms,
            options.producer_timeout_ms,
            options.block_transfers_max,
        ),
    };
    genesis.validate()?;
    Ok(genesis)
}

/// Default parameters with the given block interval, producer timeout and block size.
pub fn parameters_with(
    block_interval_ms: Option<u64>,
    producer_timeout_ms: Option<u64>,
    block_transfers_max: Option<u32>,
) -> Parameters {
    let mut parameters = Parameters::default();
    if let Some(interval) = block_interval_ms {
        parameters.block_interval_ms = interval;
        parameters.producer_timeout_ms = interval.saturating_mul(PRODUCER_TIMEOUT_INTERVALS_DEFAULT);
    }
    if let Some(timeout) = producer_timeout_ms {
        parameters.producer_timeout_ms = timeout;
    }
    if let Some(transfers) = block_transfers_max {
        parameters.block_transfers_max = transfers;
    }
    parameters
}

/// Reads validator.json files, refusing an id or a name that two files share (naming both).
pub fn load_validator_entries(paths: &[PathBuf]) -> Result<Vec<ValidatorEntry>, SetupError> {
    let mut entries: Vec<(PathBuf, ValidatorEntry)> = Vec::with_capacity(paths.len());
    for path in paths {
        let entry = home::load_validator_entry(path)?;
        check_validator_name(&entry.name)?;
        tinychain_node::config::check_host_port(&entry.addr).map_err(|reason| SetupError::BadAddress {
            addr: entry.addr.clone(),
            reason: format!("in {}: {reason}", path.display()),
        })?;
        for (first, earlier) in &entries {
            let duplicate = |what, value: String| SetupError::DuplicateValidatorFile {
                first: first.clone(),
                second: path.clone(),
                what,
                value,
            };
            if earlier.id == entry.id {
                return Err(duplicate("id", entry.id.to_string()));
            }
            if earlier.name == entry.name {
                return Err(duplicate("name", entry.name.clone()));
            }
        }
        entries.push((path.clone(), entry));
    }
    Ok(entries.into_iter().map(|(_, entry)| entry).collect())
}

/// Parses `ADDRESS=AMOUNT_TC` (e.g. `tc1...=1000.5`).
pub fn parse_allocation(text: &str) -> Result<Allocation, SetupError> {
    let bad = |reason: String| SetupError::BadAllocation { text: text.to_string(), reason };
    let Some((address, amount)) = text.split_once('=') else {
        return Err(bad("write ADDRESS=AMOUNT_TC, e.g. tc1...=1000".to_string()));
    };
    let address: Address = address.trim().parse().map_err(|error| bad(format!("bad address: {error}")))?;
    let amount = parse_amount(amount.trim()).map_err(|error| bad(error.to_string()))?;
    Ok(Allocation { address, amount })
}

// ---------------------------------------------------------------------------------------------
// Local testnet

/// A local testnet: N validators on 127.0.0.1 in one directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestnetOptions {
    pub dir: PathBuf,
    /// 1 to 16.
    pub nodes: usize,
    /// Node i (0-based) gets p2p port `base_port + 2i` and RPC port `base_port + 2i + 1`.
    pub base_port: u16,
    pub block_interval_ms: Option<u64>,
    pub producer_timeout_ms: Option<u64>,
    pub block_transfers_max: Option<u32>,
    pub chain_id: String,
}

impl Default for TestnetOptions {
    fn default() -> Self {
        TestnetOptions {
            dir: PathBuf::from("testnet"),
            nodes: 4,
            base_port: TESTNET_BASE_PORT_DEFAULT,
            block_interval_ms: None,
            producer_timeout_ms: None,
            block_transfers_max: None,
            chain_id: TESTNET_CHAIN_ID_DEFAULT.to_string(),
        }
    }
}

/// A testnet's files, as `testnet.json` lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestnetLayout {
    /// The testnet directory (absolute).
    pub dir: PathBuf,
    pub nodes: Vec<TestnetNode>,
    /// `dir/genesis.json`; each home holds a copy.
    pub genesis_path: PathBuf,
    /// `dir/wallet`: the development keystore, holding the key "dev" under an empty passphrase.
    pub wallet_dir: PathBuf,
}

/// One node of a testnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestnetNode {
    /// "node-1", "node-2", ...
    pub name: String,
    pub id: NodeId,
    pub p2p: SocketAddr,
    pub rpc: SocketAddr,
    /// The node's home directory (absolute).
    pub home: PathBuf,
}

/// `testnet.json`: exactly `{"nodes":[{"name","id","p2p","rpc","home"}]}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestnetFile {
    nodes: Vec<TestnetNode>,
}

/// Creates a testnet in `options.dir`: homes `node-1..node-N`, one genesis (genesis time now)
/// listing them all and allocating `DEV_ALLOCATION` to the dev key, copied into every home, a
/// development wallet in `dir/wallet`, and `dir/testnet.json` last. Refuses a directory that
/// already holds a testnet (`load_testnet` reads one).
pub fn init_testnet(options: &TestnetOptions) -> Result<TestnetLayout, SetupError> {
    check_testnet_options(options)?;
    let dir = std::path::absolute(&options.dir)
        .map_err(|source| SetupError::CreateDir { path: options.dir.clone(), source })?;
    let testnet_path = dir.join(TESTNET_FILE);
    if testnet_path.symlink_metadata().is_ok() {
        return Err(SetupError::TestnetExists { dir, path: testnet_path });
    }
    create_dir(&dir)?;
    let mut nodes = Vec::with_capacity(options.nodes);
    for index in 0..options.nodes {
        let offset = u16::try_from(2 * index).expect("at most 16 nodes");
        let p2p = SocketAddr::from(([127, 0, 0, 1], options.base_port + offset));
        let rpc = SocketAddr::from(([127, 0, 0, 1], options.base_port + offset + 1));
        let name = format!("node-{}", index + 1);
        let mut config = Config::default();
        config.p2p.listen = p2p;
        config.rpc.listen = rpc;
        let initialized = init_home(&InitOptions {
            dir: dir.join(&name),
            name: name.clone(),
            p2p_addr: p2p.to_string(),
            config,
            genesis: None,
        })?;
        nodes.push(TestnetNode { name, id: initialized.id, p2p, rpc, home: initialized.home.dir });
    }
    let wallet_dir = dir.join("wallet");
    let dev_key = home::generate_key()?;
    let genesis = assemble_genesis(&AssembleOptions {
        chain_id: options.chain_id.clone(),
        validators: nodes
            .iter()
            .map(|node| ValidatorEntry { id: node.id, name: node.name.clone(), addr: node.p2p.to_string() })
            .collect(),
        allocations: vec![Allocation { address: dev_key.address(), amount: DEV_ALLOCATION }],
        block_interval_ms: options.block_interval_ms,
        producer_timeout_ms: options.producer_timeout_ms,
        block_transfers_max: options.block_transfers_max,
        genesis_time_ms: tinychain_node::driver::now_unix_ms(),
    })?;
    let genesis_path = dir.join(home::GENESIS_FILE);
    home::write_genesis(&genesis_path, &genesis, Overwrite::Refuse)?;
    for node in &nodes {
        home::write_genesis(&Home::new(&node.home).genesis_path(), &genesis, Overwrite::Refuse)?;
    }
    write_dev_wallet(&wallet_dir, &dev_key)?;
    let mut text =
        serde_json::to_string_pretty(&TestnetFile { nodes: nodes.clone() }).expect("testnet.json serialises");
    text.push('\n');
    home::write_file_atomically(&testnet_path, text.as_bytes(), FileMode::Public, Overwrite::Refuse)?;
    Ok(TestnetLayout { dir, nodes, genesis_path, wallet_dir })
}

fn check_testnet_options(options: &TestnetOptions) -> Result<(), SetupError> {
    let bad = |field, reason: String| Err(SetupError::BadTestnetOption { field, reason });
    if !(1..=TESTNET_NODES_MAX).contains(&options.nodes) {
        return bad(
            "nodes",
            format!("{} is out of range: a testnet has 1 to {TESTNET_NODES_MAX} nodes", options.nodes),
        );
    }
    let last_port = u32::from(options.base_port) + 2 * options.nodes as u32 - 1;
    if options.base_port == 0 || last_port > u32::from(u16::MAX) {
        return bad(
            "base_port",
            format!(
                "{} is out of range: {} nodes need ports {} to {last_port}, which must be between 1 and 65535",
                options.base_port, options.nodes, options.base_port
            ),
        );
    }
    Ok(())
}

/// The development wallet: a keystore holding the dev key under an EMPTY passphrase with the
/// cheapest KDF parameters. It guards nothing (anyone with the file can spend), which is the
/// point for a local testnet: scripts and the wallet commands can use it without prompting.
fn write_dev_wallet(wallet_dir: &Path, key: &Keypair) -> Result<(), SetupError> {
    let mut keystore = Keystore::create(wallet_dir)?;
    keystore.add_with_params(DEV_KEY_NAME, key, DEV_WALLET_PASSPHRASE, KdfParams::INSECURE_FAST)?;
    Ok(())
}

/// Reads `dir/testnet.json` back and checks every home exists.
pub fn load_testnet(dir: &Path) -> Result<TestnetLayout, SetupError> {
    let dir = std::path::absolute(dir).map_err(|source| SetupError::CreateDir { path: dir.to_path_buf(), source })?;
    let path = dir.join(TESTNET_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(SetupError::NoTestnet { dir, path });
        }
        Err(source) => return Err(SetupError::Home(HomeError::Read { path, source })),
    };
    let file: TestnetFile = home::parse_json(&text, &path)?;
    if !(1..=TESTNET_NODES_MAX).contains(&file.nodes.len()) {
        return Err(SetupError::BadTestnetFile {
            path,
            reason: format!("lists {} nodes; a testnet has 1 to {TESTNET_NODES_MAX}", file.nodes.len()),
        });
    }
    let mut nodes = file.nodes;
    for node in &mut nodes {
        node.home = dir.join(&node.home);
        if !node.home.is_dir() {
            return Err(SetupError::TestnetHomeMissing {
                dir: dir.clone(),
                path: path.clone(),
                name: node.name.clone(),
                home: node.home.clone(),
            });
        }
    }
    Ok(TestnetLayout { genesis_path: dir.join(home::GENESIS_FILE), wallet_dir: dir.join("wallet"), dir, nodes })
}

fn create_dir(path: &Path) -> Result<(), SetupError> {
    std::fs::create_dir_all(path).map_err(|source| SetupError::CreateDir { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_interval_scales_the_default_timeout() {
        assert_eq!(parameters_with(None, None, None), Parameters::default());
        let fast = parameters_with(Some(200), None, None);
        assert_eq!((fast.block_interval_ms, fast.producer_timeout_ms), (200, 1_000));
        assert_eq!(fast.block_transfers_max, Parameters::default().block_transfers_max);
        let both = parameters_with(Some(200), Some(700), Some(2_500));
        assert_eq!((both.block_interval_ms, both.producer_timeout_ms, both.block_transfers_max), (200, 700, 2_500));
    }

    #[test]
    fn allocations_parse_address_and_amount() {
        let address = Keypair::from_secret_bytes(&[3; 32]).address();
        let allocation = parse_allocation(&format!("{address}=2.5")).unwrap();
        assert_eq!(allocation, Allocation { address, amount: 250_000_000 });
        for bad in ["nothing".to_string(), format!("{address}=1.123456789"), "tc1bad=1".to_string()] {
            let error = parse_allocation(&bad).unwrap_err().to_string();
            assert!(error.contains(&format!("{bad:?}")), "{error}");
        }
    }

    #[test]
    fn testnet_options_are_checked() {
        let base = TestnetOptions::default();
        for (options, field) in [
            (TestnetOptions { nodes: 0, ..base.clone() }, "nodes"),
            (TestnetOptions { nodes: 17, ..base.clone() }, "nodes"),
            (TestnetOptions { base_port: 65_530, nodes: 4, ..base.clone() }, "base_port"),
        ] {
            let error = check_testnet_options(&options).unwrap_err().to_string();
            assert!(error.contains(field), "{error}");
        }
        assert!(check_testnet_options(&TestnetOptions { base_port: 65_528, nodes: 4, ..base }).is_ok());
    }
}
