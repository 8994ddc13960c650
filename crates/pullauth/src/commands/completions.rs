//! `pullauth completions SHELL`: a completion script from the clap definitions.

use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::{Shell as Generator, generate};

use crate::cli::{Cli, CompletionsArgs, Shell};

pub fn run(args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    let generator = match args.shell {
        Shell::Bash => Generator::Bash,
        Shell::Zsh => Generator::Zsh,
        Shell::Fish => Generator::Fish,
    };
    let mut script = Vec::new();
    generate(generator, &mut Cli::command(), "pullauth", &mut script);
    super::say_bytes(&script)?;
    Ok(ExitCode::SUCCESS)
}
