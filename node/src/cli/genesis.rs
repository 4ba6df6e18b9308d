//! (being written: see the node issue)

#[derive(Debug, clap::Subcommand)]
pub enum Command {}

pub fn run(command: &Command) -> anyhow::Result<()> {
    match *command {}
}
