//! The `tinychain` binary: a thin main over the command line (`tinychain::cli`). Errors are printed
//! once, with their context chain, and exit with status 1. Output piped into a reader that stops
//! early (`tinychain sim ... | head`) ends the program quietly, as other Unix tools do.

fn main() -> std::process::ExitCode {
    restore_default_sigpipe();
    match tinychain::cli::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Rust starts programs with SIGPIPE ignored, so a write to a closed pipe fails and `println!`
/// panics ("Broken pipe"). Back to the default, the process simply ends.
fn restore_default_sigpipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL installs no handler
    // code of ours, so there is nothing that could run in a signal context.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}
