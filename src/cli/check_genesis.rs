//! `tinychain check-genesis FILE`: validates a genesis file and prints what it defines.

use std::path::PathBuf;
use tinychain_core::genesis::{genesis_block, Genesis};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path to the genesis JSON file.
    pub file: PathBuf,
    /// Print the summary as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Reads and validates a genesis file; the error names the file and, where it can, the field.
pub fn load(path: &std::path::Path) -> anyhow::Result<Genesis> {
    Ok(tinychain_node::home::load_genesis(path)?)
}

/// Shows an amount of base units in tinycoins with up to 8 decimals.
fn coins(amount: u64) -> String {
    format!("{} TC", tinychain_wallet::amount::format_amount(amount))
}

/// Prints what a genesis defines: chain id, genesis hash, validators, allocations and timing
/// (also after `tinychain genesis assemble` writes one).
pub fn print_summary(genesis: &Genesis) {
    let (block, _) = genesis_block(genesis);
    println!("chain id      {}", genesis.chain_id);
    println!("genesis hash  {}", tinychain_core::validate::block_hash(&block.header));
    println!("validators    {} (finality needs votes from {})", genesis.validators.len(), genesis.quorum());
    for validator in &genesis.validators {
        println!("  {:<12} {}  {}", validator.name, validator.id, validator.addr);
    }
    let total = genesis.allocations.iter().map(|allocation| allocation.amount).fold(0u64, u64::saturating_add);
    println!("allocations   {} accounts, {} in all", genesis.allocations.len(), coins(total));
    let parameters = &genesis.parameters;
    println!(
        "blocks        every {} ms; fallback after {} ms per rank; reward {}",
        parameters.block_interval_ms,
        parameters.producer_timeout_ms,
        coins(parameters.block_reward)
    );
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let genesis = load(&args.file)?;
    if args.json {
        let (block, _) = genesis_block(&genesis);
        let summary = serde_json::json!({
            "chain_id": genesis.chain_id,
            "genesis_hash": tinychain_core::validate::block_hash(&block.header).to_string(),
            "validators": genesis.validators.len(),
            "quorum": genesis.quorum(),
            "allocations": genesis.allocations.len(),
            "parameters": genesis.parameters,
        });
        println!("{summary}");
        return Ok(());
    }
    println!("genesis file {} is valid", args.file.display());
    print_summary(&genesis);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coins_show_up_to_eight_decimals_exactly() {
        assert_eq!(coins(0), "0 TC");
        assert_eq!(coins(150_000_000), "1.5 TC");
        assert_eq!(coins(1), "0.00000001 TC");
        assert_eq!(coins(1_000_000 * tinychain_core::types::UNITS_PER_COIN), "1000000 TC");
    }

    #[test]
    fn load_names_the_file_and_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("genesis.json");
        let mut genesis = tinychain_core::testkit::fast_genesis(2, 1);
        genesis.parameters.producer_timeout_ms = 1;
        std::fs::write(&path, serde_json::to_string(&genesis).unwrap()).unwrap();
        let error = format!("{:#}", load(&path).unwrap_err());
        assert!(error.contains("genesis.json"), "{error}");
        assert!(error.contains("parameters.producer_timeout_ms"), "{error}");
        std::fs::write(&path, "{ not json").unwrap();
        let error = format!("{:#}", load(&path).unwrap_err());
        assert!(error.contains("genesis.json: not valid JSON") && error.contains("line 1"), "{error}");
        let missing = dir.path().join("missing.json");
        let error = format!("{:#}", load(&missing).unwrap_err());
        assert!(error.contains("missing.json"), "{error}");
    }
}
