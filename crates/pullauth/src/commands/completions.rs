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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand name, at any depth, from the clap definitions.
    fn names(command: &clap::Command, out: &mut Vec<String>) {
        for sub in command.get_subcommands() {
            out.push(sub.get_name().to_owned());
            names(sub, out);
        }
    }

    #[test]
    fn bash_script_completes_every_subcommand() {
        let mut all = Vec::new();
        names(&Cli::command(), &mut all);
        assert!(all.len() >= 10, "{all:?}");
        let mut script = Vec::new();
        generate(
            Generator::Bash,
            &mut Cli::command(),
            "pullauth",
            &mut script,
        );
        let script = String::from_utf8(script).expect("UTF-8");
        for name in &all {
            assert!(script.contains(name.as_str()), "{name} missing");
        }
    }
}
