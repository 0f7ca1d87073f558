//! The `tether` command: serve, audit, keys, credentials and the demo.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
