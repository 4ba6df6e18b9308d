//! The `tinychain` binary: a thin main over the command line (`tinychain::cli`). Errors are printed
//! once, with their context chain, and exit with status 1.

fn main() -> std::process::ExitCode {
    match tinychain::cli::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
