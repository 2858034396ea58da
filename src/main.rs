//! `masklm`: parse, dispatch, print the error chain, exit 0 / 1 (runtime) / 2 (usage).

use clap::Parser;

fn main() {
    // burn creates some state (optimizer moments on load) on `Device::default()`, which is wgpu
    // whenever wgpu is compiled in; keep that on the CPU unless the user says otherwise.
    if std::env::var_os("BURN_DEVICE").is_none() {
        // SAFETY: the first statement of main, before any other thread exists.
        unsafe { std::env::set_var("BURN_DEVICE", "flex") };
    }
    let cli = masklm::cli::Cli::parse();
    if let Err(err) = masklm::cli::run(cli) {
        eprintln!("error: {err:#}");
        std::process::exit(masklm::error::exit_code(&err));
    }
}
