//! `tinychain genesis assemble`: builds a genesis file for a multi-server network from the
//! `validator.json` each validator's `tinychain init` wrote, validates it and writes it.
//! (`tinychain check-genesis FILE` shows a genesis; there is no separate `genesis show`.)

use crate::setup::{self, AssembleOptions};
use std::path::PathBuf;
use tinychain_node::home::{self, Overwrite};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Build and validate a genesis from validators' validator.json files and write it.
    Assemble(AssembleArgs),
}

#[derive(Debug, clap::Args)]
pub struct AssembleArgs {
    /// The chain id: 1 to 32 characters of a-z, 0-9, '-', '_' or '.'.
    #[arg(long)]
    pub chain_id: String,
    /// A validator.json written by `tinychain init` (repeat for each validator; order is kept).
    #[arg(long = "validator", value_name = "FILE", required = true, num_args = 1..)]
    pub validators: Vec<PathBuf>,
    /// An initial balance, in TC with up to 8 decimals (repeatable), e.g. tc1...=1000.5.
    #[arg(long = "alloc", value_name = "ADDRESS=AMOUNT_TC")]
    pub allocations: Vec<String>,
    /// Time between blocks, in ms [default: 2000].
    #[arg(long)]
    pub block_interval_ms: Option<u64>,
    /// Time after which the next-ranked validator may produce, in ms [default: 5 × the block
    /// interval when --block-interval-ms is given, else 10000].
    #[arg(long)]
    pub producer_timeout_ms: Option<u64>,
    /// Most transfers in one block [default: 10000, sized for the default 2 s interval]. With a
    /// much shorter interval lower it (2500 at 200 ms on a 2-core test machine), or under
    /// overload a full block can take longer than the producer timeout to pass through the
    /// network: fallback producers, short reorganisations, finality lagging.
    #[arg(long, value_name = "N")]
    pub block_transfers_max: Option<u32>,
    /// The genesis timestamp, in ms since the Unix epoch [default: now].
    #[arg(long)]
    pub genesis_time_ms: Option<u64>,
    /// Where to write the genesis file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
}

pub fn run(command: &Command) -> anyhow::Result<()> {
    match command {
        Command::Assemble(args) => assemble(args),
    }
}

fn assemble(args: &AssembleArgs) -> anyhow::Result<()> {
    let validators = setup::load_validator_entries(&args.validators)?;
    let allocations =
        args.allocations.iter().map(|text| setup::parse_allocation(text)).collect::<Result<Vec<_>, _>>()?;
    let genesis = setup::assemble_genesis(&AssembleOptions {
        chain_id: args.chain_id.clone(),
        validators,
        allocations,
        block_interval_ms: args.block_interval_ms,
        producer_timeout_ms: args.producer_timeout_ms,
        block_transfers_max: args.block_transfers_max,
        genesis_time_ms: args.genesis_time_ms.unwrap_or_else(tinychain_node::driver::now_unix_ms),
    })?;
    let overwrite = if args.force { Overwrite::Replace } else { Overwrite::Refuse };
    home::write_genesis(&args.out, &genesis, overwrite).map_err(|error| match error {
        home::HomeError::AlreadyExists { path } => {
            anyhow::anyhow!("{} already exists; pass --force to replace it", path.display())
        }
        other => anyhow::Error::new(other),
    })?;
    println!("wrote {}", args.out.display());
    super::check_genesis::print_summary(&genesis);
    println!();
    println!("Next: copy {} to every validator's home as genesis.json.", args.out.display());
    Ok(())
}
