//! `tinychain replay FILE --home DIR`: re-runs a record log written by `tinychain node --record
//! FILE` through the same core and driver code the simulator uses (`tinychain_sim::replay`),
//! checks that every call did exactly what it did when recorded, and otherwise prints the first
//! divergence with its context. `--trace OUT` writes the replay in the simulator's trace format.

use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;
use tinychain_node::home::{load_key, Home};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The record log (written by `tinychain node --record FILE`).
    pub file: PathBuf,
    /// The home directory of the node that recorded the log: the replay signs with its node key
    /// (the log never holds the secret key), so blocks and votes come out byte for byte.
    #[arg(long, env = "TINYCHAIN_HOME")]
    pub home: PathBuf,
    /// Also write the replay as a simulator trace (docs/sim-trace.md) to this file.
    #[arg(long, value_name = "OUT")]
    pub trace: Option<PathBuf>,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("cannot read the record log {}", args.file.display()))?;
    let key = load_key(&Home::new(&args.home))
        .with_context(|| format!("cannot read the node key of {}", args.home.display()))?;
    let report = tinychain_sim::replay::replay(&bytes, &key, args.trace.is_some())
        .with_context(|| format!("cannot replay {}", args.file.display()))?;
    if let Some(path) = &args.trace {
        let mut text = report.trace_lines.join("\n");
        text.push('\n');
        std::fs::write(path, text).with_context(|| format!("cannot write the trace to {}", path.display()))?;
    }
    let identical = report.divergence.is_none();
    let mut out = std::io::stdout().lock();
    if args.json {
        let json = serde_json::json!({
            "identical": identical,
            "sessions": report.sessions,
            "calls": report.calls,
            "actions": report.actions,
            "bytes": bytes.len(),
            "divergence": report.divergence.as_ref().map(|divergence| serde_json::json!({
                "entry": divergence.entry,
                "session": divergence.session,
                "call": divergence.call,
                "what": divergence.what,
                "context": divergence.context,
                "replayed": divergence.replayed,
            })),
            "stopped": report.stopped.as_ref().map(ToString::to_string),
        });
        let _ = writeln!(out, "{json}");
    } else {
        match &report.divergence {
            None => {
                let _ = writeln!(
                    out,
                    "identical: {} sessions, {} calls, {} actions replayed bit for bit ({} bytes of log)",
                    report.sessions,
                    report.calls,
                    report.actions,
                    bytes.len()
                );
            }
            Some(divergence) => {
                let _ = write!(out, "{divergence}");
            }
        }
        if let Some(stopped) = &report.stopped {
            let _ = writeln!(out, "note: {stopped}; everything before it was replayed");
        }
    }
    if identical {
        Ok(())
    } else {
        anyhow::bail!("the replay diverged from the recording")
    }
}
