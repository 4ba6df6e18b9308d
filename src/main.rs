//! The `tinychain` binary: a thin main over the node crate's command line. Errors are printed
//! once, with their context chain, and exit with status 1.

fn main() -> std::process::ExitCode {
    match tinychain_node::cli::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
