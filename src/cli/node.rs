//! `tinychain node --home DIR`: runs one validator from its home directory until Ctrl-C or
//! SIGTERM. Loads and checks the home (key, config, genesis), sets up logging, and hands the
//! driver its options; a bad home fails before anything listens, with the file and field named.

use anyhow::Context;
use std::path::PathBuf;
use tinychain_node::config::{parse_log_filter, Config, LogFormat, RpcAdmin};
use tinychain_node::driver::{self, DriverOptions};
use tinychain_node::home::{Home, Loaded};
use tinychain_node::rpc::{AdminAccess, RpcConfig};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The node's home directory (made by `tinychain init` or `tinychain testnet init`).
    #[arg(long, env = "TINYCHAIN_HOME")]
    pub home: PathBuf,
    /// Record every input the node's core gets (time, messages, peer events, metric samples,
    /// submitted transfers, what storage answered) by appending it to FILE, for
    /// `tinychain replay FILE --home DIR`. Costs little CPU; the log grows about 6 KB per block
    /// idle and about 0.6 KB per transfer under load (docs/record-format.md).
    #[arg(long, value_name = "FILE", env = "TINYCHAIN_RECORD")]
    pub record: Option<PathBuf>,
}

/// Installs the log subscriber: RUST_LOG if set, else the config's `log.level`.
pub fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => parse_log_filter(&directives)
            .map_err(|reason| anyhow::anyhow!("RUST_LOG={directives:?} is not a valid log filter: {reason}"))?,
        _ => parse_log_filter(&config.log.level).map_err(|reason| {
            anyhow::anyhow!("config.toml: log.level: {:?} is not a valid log filter: {reason}", config.log.level)
        })?,
    };
    // Colours only on a terminal: log files and journald get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let installed = match config.log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // A second init (tests running several nodes in one process) keeps the first subscriber.
    let _ = installed;
    Ok(())
}

/// The driver's options from a loaded home.
pub fn driver_options(loaded: Loaded) -> DriverOptions {
    let database = loaded.database_path();
    let Loaded { config, genesis, key, .. } = loaded;
    let admin = match config.rpc.admin {
        RpcAdmin::Loopback => AdminAccess::Loopback,
        RpcAdmin::Any => AdminAccess::Any,
        RpcAdmin::Off => AdminAccess::Off,
    };
    DriverOptions {
        genesis,
        key,
        database,
        p2p_listen: config.p2p.listen,
        seeds: config.p2p.seeds.clone(),
        rpc: Some(RpcConfig {
            listen: config.rpc.listen,
            admin,
            body_bytes_max: config.rpc.body_bytes_max,
            connections_max: config.rpc.connections_max,
        }),
        metrics_interval_ms: config.metrics.sample_interval_ms,
        metrics_window: 5,
        link_capacity_mbit: config.metrics.link_capacity_mbit,
        mempool: config.mempool.to_core(),
        record: None,
    }
}

/// Resolves when the process gets Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(stream) => stream,
            Err(_) => {
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let loaded = Home::load(&args.home).with_context(|| format!("cannot start a node from {}", args.home.display()))?;
    init_logging(&loaded.config)?;
    let options = DriverOptions { record: args.record.clone(), ..driver_options(loaded) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tinychain")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(driver::run(options, shutdown_signal(), |started| {
        tracing::info!(p2p = %started.p2p, rpc = ?started.rpc, tip = started.tip, "listening");
    }))?;
    Ok(())
}
