//! Node homes, config files, genesis assembly and local testnets, through the public API the
//! `init`, `genesis assemble` and `testnet` commands use.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tinychain::setup::{self, AssembleOptions, InitOptions, SetupError, TestnetOptions};
use tinychain_node::config::{self, Config};
use tinychain_node::home::{self, Home, HomeError, Overwrite};
use tinychain_wallet::keystore::Keystore;

fn init_options(dir: &Path, name: &str, port: u16) -> InitOptions {
    let mut config = Config::default();
    config.p2p.listen = format!("127.0.0.1:{port}").parse().unwrap();
    config.rpc.listen = format!("127.0.0.1:{}", port + 1).parse().unwrap();
    InitOptions {
        dir: dir.to_path_buf(),
        name: name.to_string(),
        p2p_addr: format!("127.0.0.1:{port}"),
        config,
        genesis: None,
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

/// Three homes and a genesis assembled from their validator.json files, copied into each.
fn three_validator_network(root: &Path) -> (Vec<Home>, tinychain_core::genesis::Genesis) {
    let mut homes = Vec::new();
    for index in 0..3u16 {
        let name = format!("validator-{index}");
        let initialized = setup::init_home(&init_options(&root.join(&name), &name, 27_740 + 2 * index)).unwrap();
        homes.push(initialized.home);
    }
    let files: Vec<PathBuf> = homes.iter().map(Home::validator_path).collect();
    let genesis = setup::assemble_genesis(&AssembleOptions {
        chain_id: "setup-test".into(),
        validators: setup::load_validator_entries(&files).unwrap(),
        allocations: vec![
            setup::parse_allocation(&format!("{}=12.5", home::load_key(&homes[0]).unwrap().address())).unwrap()
        ],
        block_interval_ms: Some(500),
        producer_timeout_ms: None,
        block_transfers_max: None,
        genesis_time_ms: 1_700_000_000_000,
    })
    .unwrap();
    let out = root.join("genesis.json");
    home::write_genesis(&out, &genesis, Overwrite::Refuse).unwrap();
    for home in &homes {
        std::fs::copy(&out, home.genesis_path()).unwrap();
    }
    (homes, genesis)
}

#[test]
fn init_writes_every_file_with_a_private_key() {
    let root = tempfile::tempdir().unwrap();
    let options = init_options(&root.path().join("home"), "alpha", 27_700);
    let initialized = setup::init_home(&options).unwrap();
    let home = &initialized.home;

    assert_eq!(mode(&home.key_path()), 0o600);
    for public in [home.config_path(), home.certificate_path(), home.validator_path()] {
        assert_eq!(mode(&public) & 0o077, 0o044, "{}", public.display());
    }
    let key = home::load_key(home).unwrap();
    assert_eq!(key.address(), initialized.id);
    let entry = home::load_validator_entry(&home.validator_path()).unwrap();
    assert_eq!(entry, initialized.validator);
    assert_eq!((entry.id, entry.name.as_str(), entry.addr.as_str()), (key.address(), "alpha", "127.0.0.1:27700"));
    assert_eq!(home::load_config(&home.config_path()).unwrap(), options.config);
    let written = std::fs::read_to_string(home.config_path()).unwrap();
    assert!(written.lines().filter(|line| line.starts_with('#')).count() > 20, "config.toml has no comments");
    let certificate = std::fs::read_to_string(home.certificate_path()).unwrap();
    assert_eq!(certificate, home::certificate_pem(&key).unwrap());
    assert!(certificate.starts_with("-----BEGIN CERTIFICATE-----\n"));
    assert!(!home.genesis_path().exists(), "no genesis was given");
    // Nothing was left behind by the atomic writes.
    let names: BTreeSet<String> = std::fs::read_dir(&home.dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let expected: BTreeSet<String> =
        ["config.toml", "node.crt", "node.key", "validator.json"].iter().map(|name| name.to_string()).collect();
    assert_eq!(names, expected);
}

#[test]
fn init_twice_refuses_and_leaves_every_file_unchanged() {
    let root = tempfile::tempdir().unwrap();
    let options = init_options(&root.path().join("home"), "alpha", 27_702);
    setup::init_home(&options).unwrap();
    let before = snapshot(&options.dir);
    let error = setup::init_home(&InitOptions { name: "beta".into(), ..options.clone() }).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, SetupError::HomeExists { .. }), "{message}");
    assert!(message.contains("node.key") && message.contains(&options.dir.display().to_string()), "{message}");
    assert_eq!(snapshot(&options.dir), before);

    // One file left over is enough to refuse: a half-removed home is not re-keyed.
    std::fs::remove_file(Home::new(&options.dir).config_path()).unwrap();
    std::fs::remove_file(Home::new(&options.dir).certificate_path()).unwrap();
    std::fs::remove_file(Home::new(&options.dir).validator_path()).unwrap();
    let before = snapshot(&options.dir);
    assert!(matches!(setup::init_home(&options), Err(SetupError::HomeExists { .. })));
    assert_eq!(snapshot(&options.dir), before);
}

#[test]
fn init_refuses_bad_names_and_addresses_before_writing_anything() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("home");
    let bad_name = InitOptions { name: "has space".into(), ..init_options(&dir, "x", 27_704) };
    assert!(setup::init_home(&bad_name).unwrap_err().to_string().contains("\"has space\""));
    let bad_addr = InitOptions { p2p_addr: "nohost".into(), ..init_options(&dir, "x", 27_704) };
    assert!(setup::init_home(&bad_addr).unwrap_err().to_string().contains("\"nohost\""));
    assert!(!dir.exists());
}

#[test]
fn the_default_template_is_the_default_config() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("config.toml");
    std::fs::write(&path, Config::default().to_commented_toml()).unwrap();
    assert_eq!(config::load_config(&path).unwrap(), Config::default());
    std::fs::write(&path, "").unwrap();
    assert_eq!(config::load_config(&path).unwrap(), Config::default());
}

#[test]
fn bad_configs_name_the_file_the_field_and_the_problem() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("config.toml");
    let cases = [
        (
            "[rpc]\nlisten = \"127.0.0.1:99999\"\n",
            "rpc.listen: \"127.0.0.1:99999\" is not a socket address (host:port)",
        ),
        ("[p2p]\nlisen = \"0.0.0.0:7740\"\n", "p2p.lisen: unknown field"),
        ("[rpc]\nbody_bytes_max = \"big\"\n", "rpc.body_bytes_max: invalid type"),
        ("[metrics]\nsample_interval_ms = 100\n", "metrics.sample_interval_ms: 100 is out of range"),
        ("[rpc]\nconnections_max = 0\n", "rpc.connections_max: 0 is out of range"),
        ("[log]\nformat = \"xml\"\n", "log.format: unknown variant"),
        ("[mempool]\ntxs_max = 10\nper_sender_max = 11\n", "mempool.per_sender_max: 11 is out of range"),
    ];
    for (text, expected) in cases {
        std::fs::write(&path, text).unwrap();
        let message = config::load_config(&path).unwrap_err().to_string();
        assert!(message.starts_with(&format!("{}: ", path.display())), "{message}");
        assert!(message.contains(expected), "{text:?} gave {message:?}; expected {expected:?}");
    }
    std::fs::write(&path, "# a comment\n[rpc]\nbody_bytes_max = \"big\"\n").unwrap();
    assert!(config::load_config(&path).unwrap_err().to_string().contains("(line 3)"));
    let missing = root.path().join("missing.toml");
    let message = config::load_config(&missing).unwrap_err().to_string();
    assert!(message.contains("cannot read config file") && message.contains("missing.toml"), "{message}");
}

#[test]
fn an_assembled_genesis_is_valid_and_every_home_loads() {
    let root = tempfile::tempdir().unwrap();
    let (homes, genesis) = three_validator_network(root.path());
    assert_eq!(genesis.validate(), Ok(()));
    assert_eq!(genesis.validators.len(), 3);
    assert_eq!(genesis.allocations[0].amount, 1_250_000_000);
    assert_eq!((genesis.parameters.block_interval_ms, genesis.parameters.producer_timeout_ms), (500, 2_500));
    for (index, home) in homes.iter().enumerate() {
        let loaded = Home::load(&home.dir).unwrap();
        assert_eq!(loaded.genesis, genesis);
        assert_eq!(loaded.genesis.validator_index(&loaded.node_id()), Some(index));
        assert_eq!(loaded.database_path(), home.dir.join("data/chain.redb"));
        assert_eq!(loaded.home, *home);
    }
    // The written file names the validators in the order of the --validator files.
    let names: Vec<&str> = genesis.validators.iter().map(|validator| validator.name.as_str()).collect();
    assert_eq!(names, ["validator-0", "validator-1", "validator-2"]);
}

#[test]
fn assembly_refuses_a_validator_given_twice_naming_both_files() {
    let root = tempfile::tempdir().unwrap();
    let home = setup::init_home(&init_options(&root.path().join("a"), "a", 27_720)).unwrap().home;
    let copy = root.path().join("copy.json");
    std::fs::copy(home.validator_path(), &copy).unwrap();
    let message = setup::load_validator_entries(&[home.validator_path(), copy.clone()]).unwrap_err().to_string();
    assert!(message.contains("copy.json") && message.contains("a/validator.json"), "{message}");
    let message = setup::assemble_genesis(&AssembleOptions {
        chain_id: "Bad Chain".into(),
        validators: setup::load_validator_entries(&[home.validator_path()]).unwrap(),
        allocations: vec![],
        block_interval_ms: None,
        producer_timeout_ms: None,
        block_transfers_max: None,
        genesis_time_ms: 0,
    })
    .unwrap_err()
    .to_string();
    assert!(message.contains("chain_id \"Bad Chain\""), "{message}");
}

#[test]
fn a_genesis_without_this_key_is_refused_naming_the_key_and_the_genesis() {
    let root = tempfile::tempdir().unwrap();
    let (homes, _) = three_validator_network(root.path());
    let outsider = setup::init_home(&init_options(&root.path().join("outsider"), "outsider", 27_730)).unwrap();
    std::fs::copy(root.path().join("genesis.json"), outsider.home.genesis_path()).unwrap();
    let error = Home::load(&outsider.home.dir).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, HomeError::NotAValidator { .. }), "{message}");
    assert!(message.contains(&outsider.id.to_string()), "{message}");
    assert!(message.contains(&outsider.home.genesis_path().display().to_string()), "{message}");
    assert!(message.contains("not a validator"), "{message}");
    // The same genesis still loads where it belongs.
    assert!(Home::load(&homes[0].dir).is_ok());
}

#[test]
fn home_load_names_what_is_wrong() {
    let root = tempfile::tempdir().unwrap();
    let (homes, _) = three_validator_network(root.path());
    let home = &homes[1];

    // A key others can read is refused.
    std::fs::set_permissions(home.key_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let message = Home::load(&home.dir).unwrap_err().to_string();
    assert!(message.contains("node.key") && message.contains("chmod 600"), "{message}");
    std::fs::set_permissions(home.key_path(), std::fs::Permissions::from_mode(0o600)).unwrap();

    // A genesis with a bad field names the file and the field path.
    let good = std::fs::read_to_string(home.genesis_path()).unwrap();
    let bad = good.replacen("\"id\": \"tc1", "\"id\": \"tc1x", 1);
    std::fs::write(home.genesis_path(), bad).unwrap();
    let message = Home::load(&home.dir).unwrap_err().to_string();
    assert!(message.contains("genesis.json: validators[0].id"), "{message}");
    // A genesis that parses but is invalid names the field too.
    let mut genesis: tinychain_core::genesis::Genesis = serde_json::from_str(&good).unwrap();
    genesis.parameters.producer_timeout_ms = 1;
    home::write_genesis(&home.genesis_path(), &genesis, Overwrite::Replace).unwrap();
    let message = Home::load(&home.dir).unwrap_err().to_string();
    assert!(message.contains("genesis.json: parameters.producer_timeout_ms"), "{message}");
    std::fs::write(home.genesis_path(), &good).unwrap();

    // A bad config names it.
    std::fs::write(home.config_path(), "[rpc]\nadmin = \"everyone\"\n").unwrap();
    let message = Home::load(&home.dir).unwrap_err().to_string();
    assert!(message.contains("config.toml: rpc.admin"), "{message}");

    let message = Home::load(root.path().join("nowhere")).unwrap_err().to_string();
    assert!(message.contains("nowhere") && message.contains("tinychain init"), "{message}");
}

#[test]
fn init_testnet_writes_the_exact_layout_and_funds_the_dev_wallet() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("net");
    let options = TestnetOptions {
        dir: dir.clone(),
        nodes: 4,
        base_port: 27_800,
        block_interval_ms: Some(300),
        producer_timeout_ms: Some(1_500),
        block_transfers_max: Some(3_000),
        chain_id: "tinychain-local".into(),
    };
    let layout = setup::init_testnet(&options).unwrap();
    assert_eq!(layout.nodes.len(), 4);
    assert_eq!(layout.genesis_path, dir.join("genesis.json"));
    assert_eq!(layout.wallet_dir, dir.join("wallet"));

    let text = std::fs::read_to_string(dir.join("testnet.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let object = value.as_object().unwrap();
    assert_eq!(object.keys().collect::<Vec<_>>(), ["nodes"]);
    let nodes = value["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 4);
    for (index, node) in nodes.iter().enumerate() {
        let keys: BTreeSet<&str> = node.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["name", "id", "p2p", "rpc", "home"]));
        let port = 27_800 + 2 * index;
        assert_eq!(node["name"], format!("node-{}", index + 1));
        assert_eq!(node["p2p"], format!("127.0.0.1:{port}"));
        assert_eq!(node["rpc"], format!("127.0.0.1:{}", port + 1));
        assert_eq!(node["home"], dir.join(format!("node-{}", index + 1)).display().to_string());
        assert!(node["id"].as_str().unwrap().starts_with("tc1"));
        assert_eq!(node["id"], layout.nodes[index].id.to_string());
    }

    let genesis = home::load_genesis(&layout.genesis_path).unwrap();
    assert_eq!(genesis.chain_id, "tinychain-local");
    assert_eq!((genesis.parameters.block_interval_ms, genesis.parameters.producer_timeout_ms), (300, 1_500));
    assert_eq!(genesis.parameters.block_transfers_max, 3_000);
    let keystore = Keystore::open(&layout.wallet_dir).unwrap();
    let dev = keystore.address("dev").unwrap();
    let dev_key = keystore.key("dev", setup::DEV_WALLET_PASSPHRASE).unwrap();
    assert_eq!(dev_key.address(), dev);
    assert_eq!(genesis.allocations.len(), 1);
    assert_eq!(genesis.allocations[0].address, dev);
    assert_eq!(tinychain_wallet::amount::format_amount(genesis.allocations[0].amount), "1000000");

    for (index, node) in layout.nodes.iter().enumerate() {
        let loaded = Home::load(&node.home).unwrap();
        assert_eq!(loaded.genesis, genesis);
        assert_eq!(loaded.node_id(), node.id);
        assert_eq!(loaded.config.p2p.listen, node.p2p);
        assert_eq!(loaded.config.rpc.listen, node.rpc);
        assert_eq!(genesis.validators[index].addr, node.p2p.to_string());
        assert_eq!(genesis.validators[index].name, node.name);
    }

    assert_eq!(setup::load_testnet(&dir).unwrap(), layout);
    let before = std::fs::read(dir.join("testnet.json")).unwrap();
    let error = setup::init_testnet(&options).unwrap_err();
    assert!(matches!(error, SetupError::TestnetExists { .. }), "{error}");
    assert_eq!(std::fs::read(dir.join("testnet.json")).unwrap(), before);
}

#[test]
fn load_testnet_says_what_is_missing() {
    let root = tempfile::tempdir().unwrap();
    let message = setup::load_testnet(root.path()).unwrap_err().to_string();
    assert!(message.contains("testnet.json") && message.contains("holds no testnet"), "{message}");

    let dir = root.path().join("net");
    let options = TestnetOptions { dir: dir.clone(), nodes: 1, base_port: 27_900, ..TestnetOptions::default() };
    let layout = setup::init_testnet(&options).unwrap();
    std::fs::remove_dir_all(&layout.nodes[0].home).unwrap();
    let message = setup::load_testnet(&dir).unwrap_err().to_string();
    assert!(message.contains("node-1") && message.contains("does not exist"), "{message}");
}
