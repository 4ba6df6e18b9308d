//! `tinychain init --home DIR`: creates one node's home (key, certificate, config.toml and
//! validator.json, plus genesis.json with `--genesis`) and says what to do next. Refuses a home
//! that already holds any of these files; a key is never overwritten.

use crate::setup::{self, InitOptions};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use tinychain_node::config::{Config, P2P_PORT_DEFAULT};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The node's home directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub home: PathBuf,
    /// This validator's name in the genesis, unique in the chain [default: this machine's host
    /// name, or "node"].
    #[arg(long)]
    pub name: Option<String>,
    /// The address other validators dial to reach this node (its genesis `addr`)
    /// [default: <host name or 127.0.0.1>:<p2p-listen port>].
    #[arg(long, value_name = "HOST:PORT")]
    pub p2p_addr: Option<String>,
    /// The address this node accepts validator connections on (config.toml `p2p.listen`).
    #[arg(long, value_name = "IP:PORT", default_value = "0.0.0.0:7740")]
    pub p2p_listen: SocketAddr,
    /// The address the JSON-RPC server listens on (config.toml `rpc.listen`).
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:7741")]
    pub rpc_listen: SocketAddr,
    /// A genesis file to validate and copy into the home as genesis.json.
    #[arg(long, value_name = "FILE")]
    pub genesis: Option<PathBuf>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let mut config = Config::default();
    config.p2p.listen = args.p2p_listen;
    config.rpc.listen = args.rpc_listen;
    let port = if args.p2p_listen.port() == 0 { P2P_PORT_DEFAULT } else { args.p2p_listen.port() };
    let options = InitOptions {
        dir: args.home.clone(),
        name: args.name.clone().unwrap_or_else(setup::default_validator_name),
        p2p_addr: args.p2p_addr.clone().unwrap_or_else(|| setup::default_p2p_addr(port)),
        config,
        genesis: args.genesis.clone(),
    };
    let initialized =
        setup::init_home(&options).with_context(|| format!("cannot initialise home {}", args.home.display()))?;
    let home = &initialized.home;
    println!("created node home {}", home.dir.display());
    println!("node id     {}", initialized.id);
    println!("name        {}", initialized.validator.name);
    println!("p2p addr    {} (what other validators dial)", initialized.validator.addr);
    println!("files       {} (secret, mode 0600)", home.key_path().display());
    println!("            {}", home.certificate_path().display());
    println!("            {}", home.config_path().display());
    println!("            {}", home.validator_path().display());
    println!();
    match &args.genesis {
        Some(_) if initialized.is_validator_of_genesis => {
            println!("genesis.json copied in. Start the node: tinychain node --home {}", home.dir.display());
        }
        Some(genesis) => {
            println!(
                "warning: the genesis {} does not list this new key, so the node cannot start with it.",
                genesis.display()
            );
            println!(
                "Next: send {} to whoever assembles the genesis; then replace {} with the new genesis.json.",
                home.validator_path().display(),
                home.genesis_path().display()
            );
        }
        None => {
            println!("Next:");
            println!("  1. send {} to whoever assembles the genesis", home.validator_path().display());
            println!(
                "     (tinychain genesis assemble --chain-id ID --validator validator.json... --out genesis.json);"
            );
            println!("  2. put the genesis.json you get back in {}", home.dir.display());
            println!("  3. start the node: tinychain node --home {}", home.dir.display());
        }
    }
    Ok(())
}
