//! `amikey`: the CLI. argv → library → exit code.

fn main() -> std::process::ExitCode {
    amikey::cli::main()
}
