//! The `tinychain` command line: parses arguments with clap and dispatches to one module per
//! subcommand, so work on different subcommands does not collide.

mod check_genesis;
mod genesis;
mod init;
mod load;
mod node;
mod passphrase;
mod replay;
mod sim;
mod testnet;
mod wallet;

use clap::{Parser, Subcommand};

/// tinychain: a permissioned, account-based blockchain node with a metric-elected block
/// producer and Casper-FFG finality.
#[derive(Debug, Parser)]
#[command(
    name = "tinychain",
    version,
    about = "tinychain: a permissioned, account-based blockchain node with a metric-elected block producer and Casper-FFG finality.",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a genesis file: parse it, validate every field, and print its chain id, validators,
    /// allocations, parameters and genesis block hash (which every node of the chain must share).
    CheckGenesis(check_genesis::Args),
    /// Create one node's home directory: its node key, certificate, config.toml and the genesis
    /// entry (`validator.json`) to send to whoever assembles the genesis file.
    Init(init::Args),
    /// Assemble a genesis file for a multi-server network from the `validator.json` each
    /// validator's `tinychain init` wrote.
    #[command(subcommand)]
    Genesis(genesis::Command),
    /// Run one node from its home directory until Ctrl-C or SIGTERM.
    Node(node::Args),
    /// Run a local network of N nodes as separate processes on 127.0.0.1 (initialising it first
    /// if needed), printing each block as it is produced.
    Testnet(testnet::Args),
    /// The wallet: keys in an encrypted keystore, balances, sending coins and following them.
    Wallet(wallet::Args),
    /// Simulate a whole network on virtual time from one seed, with injected faults, checking
    /// safety after every step and liveness after the faults heal.
    Sim(sim::Args),
    /// Re-run a record log written by `tinychain node --record FILE` through the simulator's
    /// core and driver, checking that every action comes out identical; prints the first
    /// divergence otherwise.
    Replay(replay::Args),
    /// Load a network: fund accounts from a wallet key, submit signed transfers over every
    /// node at a set rate (or as fast as they take them) and report committed transfers/s,
    /// latency to committed and to final, rejections and the nodes' CPU.
    Load(load::Args),
}

/// Parses the process arguments and runs the chosen subcommand.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckGenesis(args) => check_genesis::run(&args),
        Command::Init(args) => init::run(&args),
        Command::Genesis(command) => genesis::run(&command),
        Command::Node(args) => node::run(&args),
        Command::Testnet(args) => testnet::run(&args),
        Command::Wallet(args) => wallet::run(&args),
        Command::Sim(args) => sim::run(&args),
        Command::Replay(args) => replay::run(&args),
        Command::Load(args) => load::run(&args),
    }
}
