//! tinychain-node: what an operator runs. Today it holds the command line (`cli`), one module per
//! `tinychain` subcommand. Storage (redb), the event-loop driver over `tinychain-core`, JSON-RPC,
//! live metrics and the wallet commands arrive with their issues and live here too.

pub mod cli;
