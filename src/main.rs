//! The `tinychain` binary: a thin main over the node crate's command line.

fn main() -> anyhow::Result<()> {
    tinychain_node::cli::main()
}
