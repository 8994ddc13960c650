//! `pullauth`: image-pull authentication for ECS container instances.
//!
//! This binary only parses arguments, sets up logging and maps errors to
//! exit statuses; each command lives in its own file under `commands/`.

mod cli;
mod commands;
mod exit;
mod logging;
mod progress;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("pullauth: {err:#}");
            exit::code_for(&err)
        }
    }
}
