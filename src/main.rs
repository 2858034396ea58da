//! `masklm`: parse, dispatch, print the error chain, exit 0 / 1 (runtime) / 2 (usage).

use clap::Parser;

fn main() {
    let cli = masklm::cli::Cli::parse();
    if let Err(err) = masklm::cli::run(cli) {
        eprintln!("error: {err:#}");
        std::process::exit(masklm::error::exit_code(&err));
    }
}
