//! The `tinychain` binary: a thin main over the command line (`tinychain::cli`). Errors are printed
//! once, with their context chain, and exit with status 1.
//!
//! Output into a closed pipe (`tinychain sim ... | head`): `println!` panics when stdout's
//! reader has gone (Rust ignores SIGPIPE, so the write fails with EPIPE instead of killing the
//! process, which a node writing to a dead peer's socket relies on). That one panic ends the
//! command quietly, as a Unix tool ends when its reader leaves; any other panic is reported as
//! usual.

use std::any::Any;

/// Whether a panic is `println!`'s "failed printing to stdout: Broken pipe".
fn is_broken_pipe(payload: &(dyn Any + Send)) -> bool {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("");
    text.contains("failed printing to stdout") && text.contains("Broken pipe")
}

fn main() -> std::process::ExitCode {
    let report_panic = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !is_broken_pipe(info.payload()) {
            report_panic(info);
        }
    }));
    match std::panic::catch_unwind(tinychain::cli::main) {
        Ok(Ok(())) => std::process::ExitCode::SUCCESS,
        Ok(Err(error)) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
        // The reader of stdout left: nothing more can be said to it.
        Err(payload) if is_broken_pipe(&*payload) => std::process::ExitCode::SUCCESS,
        Err(payload) => std::panic::resume_unwind(payload),
    }
}
