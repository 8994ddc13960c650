//! `pullauth`: image-pull authentication for ECS container instances.
//!
//! This binary only parses arguments, sets up logging and maps errors to
//! exit statuses; each command lives in its own file under `commands/`.

mod cli;
mod commands;
mod exit;
mod facts;
mod logging;
mod progress;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

/// The program name under which pullauth is a Docker credential helper
/// (Docker runs `docker-credential-<credsStore>`).
const HELPER_PROGRAM: &str = "docker-credential-pullauth";

fn main() -> ExitCode {
    let cli = cli::Cli::parse_from(arguments(std::env::args_os()));
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("pullauth: {err:#}");
            exit::code_for(&err)
        }
    }
}

/// The command line to parse: run as `docker-credential-pullauth ARGS` (a
/// symlink or a copy), pullauth is `pullauth credential-helper ARGS`.
fn arguments(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    let as_helper = args
        .first()
        .and_then(|program| Path::new(program).file_name())
        .is_some_and(|name| name == HELPER_PROGRAM);
    if as_helper {
        args.splice(0..1, ["pullauth".into(), "credential-helper".into()]);
    }
    args
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case::symlink_on_path(&["/usr/local/bin/docker-credential-pullauth", "get"], &["pullauth", "credential-helper", "get"])]
    #[case::bare_name(&["docker-credential-pullauth", "list"], &["pullauth", "credential-helper", "list"])]
    #[case::pullauth_itself(&["/usr/bin/pullauth", "check"], &["/usr/bin/pullauth", "check"])]
    #[case::other_helper_name(&["docker-credential-pullauth2", "get"], &["docker-credential-pullauth2", "get"])]
    #[case::no_arguments(&["docker-credential-pullauth"], &["pullauth", "credential-helper"])]
    fn helper_name_means_credential_helper(#[case] argv: &[&str], #[case] parsed: &[&str]) {
        let got = arguments(argv.iter().map(OsString::from));
        let want: Vec<OsString> = parsed.iter().map(OsString::from).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn docker_s_invocation_parses() {
        let cli = cli::Cli::try_parse_from(arguments(
            ["/tmp/x/docker-credential-pullauth", "get"].map(OsString::from),
        ))
        .expect("parses");
        assert!(matches!(
            cli.command,
            cli::Command::CredentialHelper(cli::CredentialHelperArgs {
                action: cli::HelperAction::Get,
                env_file: None,
            })
        ));
    }
}
