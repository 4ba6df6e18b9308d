//! A node's `config.toml`: where it listens, who it dials first, what its RPC serves, how often it
//! samples its metrics, its mempool limits, logging and where its database lives.
//!
//! Contract: every field has a default (an empty file is a valid config), unknown fields are
//! refused (a typo must not silently fall back to a default), and [`load_config`] returns a
//! [`ConfigError`] whose message names the file, the field path and what is wrong, e.g.
//! `config.toml: rpc.listen: "127.0.0.1:99999" is not a socket address (host:port)`.
//! [`Config::to_commented_toml`] writes a config with a comment on every field; a test keeps it in
//! step with the structs. `docs/config.md` documents the same fields for operators.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tinychain_core::mempool::MempoolConfig;
use tinychain_core::types::{amount_serde, Amount};
use tinychain_net::discovery::PeerAddr;

/// DESIGN.md's peer-to-peer port.
pub const P2P_PORT_DEFAULT: u16 = 7740;
/// DESIGN.md's JSON-RPC port.
pub const RPC_PORT_DEFAULT: u16 = 7741;
/// sysinfo needs at least 200 ms between two CPU refreshes for a meaningful reading.
pub const METRICS_SAMPLE_INTERVAL_MS_MIN: u64 = 250;
pub const METRICS_SAMPLE_INTERVAL_MS_MAX: u64 = 60_000;
pub const RPC_BODY_BYTES_MIN: u32 = 1024;
pub const RPC_BODY_BYTES_MAX: u32 = 16 * 1024 * 1024;
pub const RPC_CONNECTIONS_MAX: u32 = 10_000;
pub const LINK_CAPACITY_MBIT_MAX: u64 = 1_000_000;

/// The whole `config.toml`. `Config::default()` is what an empty file means.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub p2p: P2pSection,
    pub rpc: RpcSection,
    pub metrics: MetricsSection,
    pub mempool: MempoolSection,
    pub log: LogSection,
    pub storage: StorageSection,
}

/// `[p2p]`: the validator-to-validator TLS transport.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct P2pSection {
    /// The address the node accepts peer connections on. Default `0.0.0.0:7740`.
    #[serde(with = "socket_address")]
    pub listen: SocketAddr,
    /// Extra `host:port` addresses to dial at start, on top of the validators' addresses in the
    /// genesis file, each checked when the file is read. Default empty.
    pub seeds: Vec<PeerAddr>,
}

impl Default for P2pSection {
    fn default() -> Self {
        P2pSection { listen: SocketAddr::from(([0, 0, 0, 0], P2P_PORT_DEFAULT)), seeds: Vec::new() }
    }
}

/// Who may call the RPC's admin methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RpcAdmin {
    /// Only clients connecting from a loopback address (127.0.0.0/8, ::1).
    Loopback,
    /// Every client that can reach `rpc.listen`.
    Any,
    /// Nobody: admin methods are not served.
    Off,
}

impl RpcAdmin {
    pub fn as_str(self) -> &'static str {
        match self {
            RpcAdmin::Loopback => "loopback",
            RpcAdmin::Any => "any",
            RpcAdmin::Off => "off",
        }
    }
}

/// `[rpc]`: the JSON-RPC 2.0 server over HTTP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RpcSection {
    /// The address the JSON-RPC server listens on. Default `127.0.0.1:7741` (this machine only).
    #[serde(with = "socket_address")]
    pub listen: SocketAddr,
    /// Who may call admin methods: "loopback" (default), "any" or "off".
    pub admin: RpcAdmin,
    /// Largest request body accepted, in bytes. Default 262144 (256 KiB).
    pub body_bytes_max: u32,
    /// Most concurrent HTTP connections. Default 64.
    pub connections_max: u32,
}

impl Default for RpcSection {
    fn default() -> Self {
        RpcSection {
            listen: SocketAddr::from(([127, 0, 0, 1], RPC_PORT_DEFAULT)),
            admin: RpcAdmin::Loopback,
            body_bytes_max: 256 * 1024,
            connections_max: 64,
        }
    }
}

/// `[metrics]`: the CPU and network sampling behind this node's metric reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// Time between two samples of CPU and network usage, in ms. Default 1000, at least 250.
    pub sample_interval_ms: u64,
    /// The link speed network usage is measured against, in Mbit/s: the reported network
    /// per-mille is bytes per second over this capacity. Default 100.
    pub link_capacity_mbit: u64,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection { sample_interval_ms: 1_000, link_capacity_mbit: 100 }
    }
}

/// `[mempool]`: this node's pending-transfer pool (local policy, not consensus).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MempoolSection {
    /// Most pending transfers held. Default `tinychain_core::limits::MEMPOOL_TXS_MAX`.
    pub txs_max: usize,
    /// Most pending transfers from one account. Default `MEMPOOL_TXS_PER_SENDER_MAX`.
    pub per_sender_max: usize,
    /// Smallest fee admitted, as a string of base units (1 TC = "100000000"). Default "0".
    #[serde(with = "amount_serde")]
    pub min_fee: Amount,
}

impl Default for MempoolSection {
    fn default() -> Self {
        let core = MempoolConfig::default();
        MempoolSection { txs_max: core.txs_max, per_sender_max: core.per_sender_max, min_fee: core.min_fee }
    }
}

impl MempoolSection {
    /// The core's mempool configuration these settings describe.
    pub fn to_core(&self) -> MempoolConfig {
        MempoolConfig { txs_max: self.txs_max, per_sender_max: self.per_sender_max, min_fee: self.min_fee }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// `[log]`: what is logged and how.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// A tracing filter: a level ("error", "warn", "info", "debug", "trace") or directives such as
    /// "info,tinychain_net=debug". The RUST_LOG environment variable overrides it. Default "info".
    pub level: String,
    /// "text" (default) or "json".
    pub format: LogFormat,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection { level: "info".to_string(), format: LogFormat::Text }
    }
}

/// `[storage]`: the redb database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    /// The database file; a relative path is relative to the node's home directory.
    /// Default "data/chain.redb".
    pub path: PathBuf,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection { path: PathBuf::from("data/chain.redb") }
    }
}

/// One field of a config that parsed but is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidConfig {
    /// The field's path, e.g. `rpc.listen`.
    pub field: String,
    pub reason: String,
}

/// Why a config file could not be used. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The TOML did not parse, or a field has the wrong type, an unknown name or a bad value.
    #[error("{path}: {}{message}{}", field_prefix(field), line_suffix(*line))]
    Parse { path: PathBuf, field: String, line: Option<usize>, message: String },
    #[error("{path}: {invalid}")]
    Invalid { path: PathBuf, invalid: InvalidConfig },
}

fn field_prefix(field: &str) -> String {
    if field.is_empty() || field == "." {
        String::new()
    } else {
        format!("{field}: ")
    }
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|line| format!(" (line {line})")).unwrap_or_default()
}

impl Config {
    /// Checks ranges and addresses; the error names the field.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let invalid = |field: &str, reason: String| Err(InvalidConfig { field: field.to_string(), reason });
        if self.p2p.listen.port() == 0 {
            return invalid("p2p.listen", format!("{} has port 0; peers need a fixed port to dial", self.p2p.listen));
        }
        if self.rpc.listen.port() == 0 {
            return invalid("rpc.listen", format!("{} has port 0; clients need a fixed port", self.rpc.listen));
        }
        if self.rpc.listen == self.p2p.listen {
            return invalid("rpc.listen", format!("{} is also p2p.listen; use two different ports", self.rpc.listen));
        }
        if !(RPC_BODY_BYTES_MIN..=RPC_BODY_BYTES_MAX).contains(&self.rpc.body_bytes_max) {
            return invalid(
                "rpc.body_bytes_max",
                format!(
                    "{} is out of range: must be between {RPC_BODY_BYTES_MIN} and {RPC_BODY_BYTES_MAX}",
                    self.rpc.body_bytes_max
                ),
            );
        }
        if !(1..=RPC_CONNECTIONS_MAX).contains(&self.rpc.connections_max) {
            return invalid(
                "rpc.connections_max",
                format!("{} is out of range: must be between 1 and {RPC_CONNECTIONS_MAX}", self.rpc.connections_max),
            );
        }
        let interval = self.metrics.sample_interval_ms;
        if !(METRICS_SAMPLE_INTERVAL_MS_MIN..=METRICS_SAMPLE_INTERVAL_MS_MAX).contains(&interval) {
            return invalid(
                "metrics.sample_interval_ms",
                format!(
                    "{interval} is out of range: must be between {METRICS_SAMPLE_INTERVAL_MS_MIN} and \
                     {METRICS_SAMPLE_INTERVAL_MS_MAX} (CPU usage needs at least 200 ms between samples)"
                ),
            );
        }
        if !(1..=LINK_CAPACITY_MBIT_MAX).contains(&self.metrics.link_capacity_mbit) {
            return invalid(
                "metrics.link_capacity_mbit",
                format!(
                    "{} is out of range: must be between 1 and {LINK_CAPACITY_MBIT_MAX}",
                    self.metrics.link_capacity_mbit
                ),
            );
        }
        let txs_limit = tinychain_core::limits::MEMPOOL_TXS_MAX;
        if !(1..=txs_limit).contains(&self.mempool.txs_max) {
            return invalid(
                "mempool.txs_max",
                format!("{} is out of range: must be between 1 and {txs_limit}", self.mempool.txs_max),
            );
        }
        if !(1..=self.mempool.txs_max).contains(&self.mempool.per_sender_max) {
            return invalid(
                "mempool.per_sender_max",
                format!(
                    "{} is out of range: must be between 1 and mempool.txs_max ({})",
                    self.mempool.per_sender_max, self.mempool.txs_max
                ),
            );
        }
        if let Err(reason) = check_log_filter(&self.log.level) {
            return invalid("log.level", format!("{:?} is not a log filter: {reason}", self.log.level));
        }
        if self.storage.path.as_os_str().is_empty() {
            return invalid("storage.path", "is empty; name the database file, e.g. \"data/chain.redb\"".to_string());
        }
        Ok(())
    }

    /// Parses and validates config text; `path` is only used to name the file in errors.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let parse_error = |field: String, error: &toml::de::Error| ConfigError::Parse {
            path: path.to_path_buf(),
            field,
            line: error.span().map(|span| line_of(text, span.start)),
            message: error.message().trim_end().to_string(),
        };
        let deserializer = toml::Deserializer::parse(text).map_err(|error| parse_error(String::new(), &error))?;
        let config: Config = serde_path_to_error::deserialize(deserializer)
            .map_err(|error| parse_error(error.path().to_string(), error.inner()))?;
        config.validate().map_err(|invalid| ConfigError::Invalid { path: path.to_path_buf(), invalid })?;
        Ok(config)
    }

    /// This config as TOML with a comment on every field saying what it does and its default.
    /// Parsing the output gives back `self`.
    pub fn to_commented_toml(&self) -> String {
        let defaults = Config::default();
        let string = |text: &str| toml::Value::String(text.to_string()).to_string();
        let seeds =
            toml::Value::Array(self.p2p.seeds.iter().map(|seed| toml::Value::String(seed.to_string())).collect());
        let storage_path = string(&self.storage.path.to_string_lossy());
        format!(
            r#"# tinychain node configuration. Every field is optional: a missing field takes the default
# shown in its comment. Unknown fields are errors. Reference: docs/config.md.

[p2p]
# Address this node accepts validator connections on (host:port). Other validators dial the
# address in this node's genesis entry, which must reach this socket.
# Default "{p2p_listen_default}".
listen = {p2p_listen}
# Extra "host:port" addresses to dial at start, on top of the validators listed in genesis.json.
# Default [].
seeds = {seeds}

[rpc]
# Address the JSON-RPC server listens on. Keep it on 127.0.0.1 unless a firewall or proxy
# protects it. Default "{rpc_listen_default}".
listen = {rpc_listen}
# Who may call admin methods: "loopback" (clients on this machine), "any", or "off".
# Default "{admin_default}".
admin = {admin}
# Largest request body accepted, in bytes ({body_min} to {body_max}). Default {body_default}.
body_bytes_max = {body}
# Most concurrent HTTP connections (1 to {connections_limit}). Default {connections_default}.
connections_max = {connections}

[metrics]
# Time between two samples of CPU and network usage, in ms ({interval_min} to {interval_max}; CPU
# usage needs at least 200 ms between samples). Default {interval_default}.
sample_interval_ms = {interval}
# Link speed the network usage is measured against, in Mbit/s: the reported network per-mille is
# bytes per second over this capacity (1 to {link_limit}). Default {link_default}.
link_capacity_mbit = {link}

[mempool]
# Most pending transfers this node holds (1 to {txs_limit}). Default {txs_default}.
txs_max = {txs}
# Most pending transfers from one account (1 to txs_max). Default {per_sender_default}.
per_sender_max = {per_sender}
# Smallest fee this node admits, as a string of base units (1 TC = "100000000").
# Default "{min_fee_default}".
min_fee = {min_fee}

[log]
# A level ("error", "warn", "info", "debug", "trace") or tracing directives such as
# "info,tinychain_net=debug". The RUST_LOG environment variable overrides it.
# Default "{level_default}".
level = {level}
# "text" for human-readable lines or "json" for one JSON object per line. Default "{format_default}".
format = {format}

[storage]
# The redb database file; a relative path is relative to this node's home directory.
# Default "{storage_default}".
path = {storage_path}
"#,
            p2p_listen_default = defaults.p2p.listen,
            p2p_listen = string(&self.p2p.listen.to_string()),
            seeds = seeds,
            rpc_listen_default = defaults.rpc.listen,
            rpc_listen = string(&self.rpc.listen.to_string()),
            admin_default = defaults.rpc.admin.as_str(),
            admin = string(self.rpc.admin.as_str()),
            body_min = RPC_BODY_BYTES_MIN,
            body_max = RPC_BODY_BYTES_MAX,
            body_default = defaults.rpc.body_bytes_max,
            body = self.rpc.body_bytes_max,
            connections_limit = RPC_CONNECTIONS_MAX,
            connections_default = defaults.rpc.connections_max,
            connections = self.rpc.connections_max,
            interval_min = METRICS_SAMPLE_INTERVAL_MS_MIN,
            interval_max = METRICS_SAMPLE_INTERVAL_MS_MAX,
            interval_default = defaults.metrics.sample_interval_ms,
            interval = self.metrics.sample_interval_ms,
            link_limit = LINK_CAPACITY_MBIT_MAX,
            link_default = defaults.metrics.link_capacity_mbit,
            link = self.metrics.link_capacity_mbit,
            txs_limit = tinychain_core::limits::MEMPOOL_TXS_MAX,
            txs_default = defaults.mempool.txs_max,
            txs = self.mempool.txs_max,
            per_sender_default = defaults.mempool.per_sender_max,
            per_sender = self.mempool.per_sender_max,
            min_fee_default = defaults.mempool.min_fee,
            min_fee = string(&self.mempool.min_fee.to_string()),
            level_default = defaults.log.level,
            level = string(&self.log.level),
            format_default = defaults.log.format.as_str(),
            format = string(self.log.format.as_str()),
            storage_default = defaults.storage.path.display(),
            storage_path = storage_path,
        )
    }
}

/// Reads, parses and validates a config file. The error names the file, the field and the
/// problem (with the line for parse and type errors).
pub fn load_config(path: &Path) -> Result<Config, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    Config::from_toml_str(&text, path)
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&byte| byte == b'\n').count() + 1
}

/// A log filter as this config accepts it: comma-separated directives, each a level or
/// `target=level` (a stricter subset of tracing's syntax, so a typo such as "inf" is refused
/// instead of silently enabling a target named "inf").
pub fn check_log_filter(filter: &str) -> Result<(), String> {
    const LEVELS: &str = "off, error, warn, info, debug or trace";
    // tracing parses "" as a level (error): a directive must name one.
    let is_level = |text: &str| !text.is_empty() && text.parse::<tracing_subscriber::filter::LevelFilter>().is_ok();
    check_log_filter_characters(filter)?;
    if filter.trim().is_empty() {
        return Err(format!("it is empty; use {LEVELS}"));
    }
    for directive in filter.split(',').map(str::trim) {
        let valid = match directive.split_once('=') {
            Some((target, level)) => {
                !target.is_empty()
                    && target.bytes().all(|byte| byte.is_ascii_alphanumeric() || b"_:-".contains(&byte))
                    && is_level(level)
            }
            None => is_level(directive),
        };
        if !valid {
            return Err(format!("{directive:?} is neither a level ({LEVELS}) nor target=level"));
        }
    }
    parse_log_filter(filter).map(|_| ())
}

/// Refuses a log filter with characters outside printable ASCII. tracing-subscriber 0.3.23
/// panics on some of them instead of returning an error (its directive parser slices a string
/// inside a multi-byte whitespace such as U+00A0; found by the `text` fuzz target), and no
/// target, field or level needs them.
pub fn check_log_filter_characters(filter: &str) -> Result<(), String> {
    match filter.chars().find(|char| !(char.is_ascii_graphic() || *char == ' ')) {
        Some(char) => Err(format!("{char:?} is not allowed in a log filter (printable ASCII only)")),
        None => Ok(()),
    }
}

/// Parses a log filter in tracing's full syntax (what RUST_LOG may hold), after
/// `check_log_filter_characters`.
pub fn parse_log_filter(filter: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    check_log_filter_characters(filter)?;
    tracing_subscriber::EnvFilter::try_new(filter).map_err(|error| error.to_string())
}

/// Checks a `host:port` string by the transport's one rule for peer addresses
/// (`tinychain_net::discovery::check_peer_address`): a DNS name, an IPv4 address or a bracketed
/// IPv6 address, then a port from 1 to 65535. A DNS name is resolved when dialled.
pub fn check_host_port(text: &str) -> Result<PeerAddr, String> {
    PeerAddr::parse(text)
        .map_err(|error| format!("{error} (e.g. \"validator-1.example.org:7740\" or \"10.0.0.5:7740\")"))
}

/// Socket addresses as "host:port" strings, with an error message an operator can act on.
mod socket_address {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::net::SocketAddr;

    pub fn serialize<S: Serializer>(address: &SocketAddr, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(address)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "{text:?} is not a socket address (host:port), e.g. \"0.0.0.0:7740\" or \"[::1]:7741\""
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, Path::new("/home/n/config.toml"))
    }

    /// Found by the `text` fuzz target: tracing-subscriber's own parser panicked on this level
    /// (a tab, U+00A0, a vertical tab, a tab, then "0="), so loading such a config crashed.
    #[test]
    fn log_filter_with_a_non_breaking_space_is_refused_not_a_panic() {
        let filter = "\t\u{a0}\u{b}\t0=";
        let refused = check_log_filter(filter).unwrap_err();
        assert!(refused.contains("printable ASCII"), "{refused}");
        assert!(parse_log_filter(filter).is_err(), "the RUST_LOG path refuses it too");
        let text = "[log]\nlevel = \"\\t\\u00a0\\u000b\\t0=\"\n";
        let error = parse(text).unwrap_err().to_string();
        assert!(error.contains("log.level") && error.contains("printable ASCII"), "{error}");
        // An empty level is not a level, although tracing reads "" as "error".
        assert!(check_log_filter("tinychain=").is_err());
        assert!(check_log_filter("info,tinychain_net=debug").is_ok());
    }

    #[test]
    fn an_empty_file_is_the_default_config_and_the_default_is_valid() {
        assert_eq!(parse("").unwrap(), Config::default());
        assert_eq!(Config::default().validate(), Ok(()));
        assert_eq!(Config::default().p2p.listen.port(), 7740);
        assert_eq!(Config::default().rpc.listen.to_string(), "127.0.0.1:7741");
    }

    #[test]
    fn the_commented_template_parses_back_to_the_same_config() {
        let text = Config::default().to_commented_toml();
        assert_eq!(parse(&text).unwrap(), Config::default());
        // Every field changed: a field missing from the template would come back as its default.
        let changed = Config {
            p2p: P2pSection {
                listen: "10.0.0.5:9000".parse().unwrap(),
                seeds: vec!["seed.example.org:7740".parse().unwrap(), "[::1]:7740".parse().unwrap()],
            },
            rpc: RpcSection {
                listen: "[::1]:9001".parse().unwrap(),
                admin: RpcAdmin::Off,
                body_bytes_max: 4096,
                connections_max: 7,
            },
            metrics: MetricsSection { sample_interval_ms: 500, link_capacity_mbit: 1000 },
            mempool: MempoolSection { txs_max: 100, per_sender_max: 10, min_fee: 12345 },
            log: LogSection { level: "debug,tinychain_net=trace".into(), format: LogFormat::Json },
            storage: StorageSection { path: PathBuf::from("/var/lib/tiny \"chain\"/db.redb") },
        };
        assert_eq!(parse(&changed.to_commented_toml()).unwrap(), changed);
    }

    #[test]
    fn every_field_of_the_template_has_a_comment_above_it() {
        let text = Config::default().to_commented_toml();
        let lines: Vec<&str> = text.lines().collect();
        for (index, line) in lines.iter().enumerate() {
            if line.contains(" = ") && !line.starts_with('#') {
                assert!(index > 0 && lines[index - 1].starts_with('#'), "no comment above {line:?}");
            }
        }
    }

    #[test]
    fn errors_name_the_file_the_field_and_the_problem() {
        let cases = [
            (
                "[rpc]\nlisten = \"127.0.0.1:99999\"\n",
                "rpc.listen: \"127.0.0.1:99999\" is not a socket address (host:port)",
            ),
            ("[rpc]\nlistenn = \"127.0.0.1:7741\"\n", "rpc.listenn"),
            ("[metrics]\nsample_interval_ms = \"fast\"\n", "metrics.sample_interval_ms"),
            ("[metrics]\nsample_interval_ms = 100\n", "metrics.sample_interval_ms: 100 is out of range"),
            ("[mempool]\nmin_fee = 5\n", "mempool.min_fee"),
            ("[rpc]\nadmin = \"everyone\"\n", "rpc.admin"),
            ("[p2p]\nseeds = [\"nohost\"]\n", "p2p.seeds[0]: the address \"nohost\" is not host:port"),
            ("[log]\nlevel = \"loud!!\"\n", "log.level"),
            ("[p2p\n", "line 1"),
        ];
        for (text, expected) in cases {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.starts_with("/home/n/config.toml: "), "{error}");
            assert!(error.contains(expected), "{text:?} gave {error:?}, expected it to contain {expected:?}");
        }
        let error = parse("\n\n[rpc]\nconnections_max = -1\n").unwrap_err().to_string();
        assert!(error.contains("rpc.connections_max") && error.contains("(line 4)"), "{error}");
        let error = parse("[unknown]\n").unwrap_err().to_string();
        assert!(error.contains("unknown"), "{error}");
    }

    #[test]
    fn host_port_accepts_names_and_addresses_only_with_a_port() {
        for good in ["a.example.org:7740", "10.0.0.1:1", "[::1]:7740", "localhost:65535"] {
            assert_eq!(check_host_port(good).map(|addr| addr.to_string()), Ok(good.to_string()), "{good}");
        }
        for bad in ["", "host", "host:", ":7740", "host:0", "host:70000", "ho st:1", "-host:1"] {
            assert!(check_host_port(bad).is_err(), "{bad}");
        }
    }
}
