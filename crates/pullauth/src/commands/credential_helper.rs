//! `pullauth credential-helper` (also `docker-credential-pullauth`): Docker's
//! credential-helper protocol answered from ecs.config, so that `docker
//! pull`, compose and buildx on the instance use the agent's credentials.
//!
//! Docker runs `docker-credential-<name> get` with a server URL on stdin and
//! reads `{"ServerURL","Username","Secret"}` from stdout; an identity token
//! goes as the username `<token>`. When nothing applies, a helper prints
//! `credentials not found in native keychain` and exits 1, and Docker pulls
//! anonymously. Errors also go to stdout, where Docker quotes them.
//!
//! Only host-level keys can answer: the protocol passes a server URL, never
//! the repository, so a key limited to a namespace cannot be chosen. Wildcard
//! keys answer the hosts they match, ranked as for pulls. `get`'s stdout
//! holds the secret, which is the protocol's purpose; stderr, the logs and
//! error messages never do.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use anyhow::Context;
use pullauth_agent::helper::NOT_FOUND;
use pullauth_config::AUTH_DATA;
use pullauth_resolve::{
    Credentials, EcrRegistry, HostPattern, RegistryTable, ServerLookup, helper_server, masked,
};
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::{load, say, say_bytes};
use crate::cli::{ConfigArgs, CredentialHelperArgs, HelperAction};
use crate::exit::{self, UsageError};

/// The env file read when neither `--env-file` nor [`ENV_FILE_VAR`] names
/// one, if it exists: where the ECS agent reads its configuration.
pub const DEFAULT_ENV_FILE: &str = "/etc/ecs/ecs.config";

/// Names the env file when Docker runs the helper (it passes no arguments).
pub const ENV_FILE_VAR: &str = "PULLAUTH_ENV_FILE";

/// The longest server URL read from stdin.
pub const MAX_SERVER_URL: usize = 4096;

/// How long `get` waits for the server URL on stdin (Docker writes it at
/// once; a client that never does must not hold the helper).
pub const STDIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The username that tells Docker the secret is an identity token.
const TOKEN_USERNAME: &str = "<token>";

pub fn run(args: &CredentialHelperArgs) -> anyhow::Result<ExitCode> {
    let result = match args.action {
        HelperAction::Get => get(args),
        HelperAction::List => list(args),
        HelperAction::Store => Err(read_only(args, "store credentials (docker login)")),
        HelperAction::Erase => Err(read_only(args, "erase credentials (docker logout)")),
    };
    if let Err(err) = &result {
        // Docker quotes a helper's stdout in its error; messages never hold
        // a secret. main prints the same to stderr.
        let _ = say(format!("pullauth: {err:#}"));
    }
    result
}

/// The configuration sources: `--env-file`, else `$PULLAUTH_ENV_FILE`,
/// else [`DEFAULT_ENV_FILE`] if it exists, else none (the process
/// environment and `ECS_AGENT_CONFIG_FILE_PATH` only).
fn config_args(args: &CredentialHelperArgs) -> ConfigArgs {
    let env_file = args
        .env_file
        .clone()
        .or_else(|| {
            std::env::var_os(ENV_FILE_VAR)
                .filter(|path| !path.is_empty())
                .map(PathBuf::from)
        })
        .or_else(|| {
            let default = Path::new(DEFAULT_ENV_FILE);
            default.exists().then(|| default.to_path_buf())
        });
    ConfigArgs {
        env_file,
        env_file_optional: false,
    }
}

fn get(args: &CredentialHelperArgs) -> anyhow::Result<ExitCode> {
    let server_url = read_server_url(std::io::stdin(), STDIN_TIMEOUT)?;
    let (_config, table) = load(&config_args(args))?;
    let found = table.for_server_url(&server_url).map_err(|reason| {
        UsageError(format!(
            "the server URL on stdin ({}) is not a registry: {reason}",
            masked(&server_url)
        ))
    })?;
    for note in notes(&table, &found) {
        eprintln!("pullauth: {note}");
    }
    let Some(entry) = found.entry else {
        tracing::debug!(server = %found.host, "credential helper: no host-level key");
        say(NOT_FOUND)?;
        return Ok(ExitCode::from(exit::FAILED));
    };
    let (username, secret) = match helper_secret(&entry.credentials) {
        Ok(answer) => answer,
        Err(why) => {
            eprintln!(
                "pullauth: key {:?} for {} holds {why}; answering that there are no credentials",
                entry.key.written, found.host
            );
            say(NOT_FOUND)?;
            return Ok(ExitCode::from(exit::FAILED));
        }
    };
    tracing::debug!(
        server = %found.host,
        key = %entry.key.written,
        username,
        "credential helper: answering with the host-level key"
    );
    say_bytes(&answer_json(&server_url, username, secret)?)?;
    Ok(ExitCode::SUCCESS)
}

fn list(args: &CredentialHelperArgs) -> anyhow::Result<ExitCode> {
    let (_config, table) = load(&config_args(args))?;
    let mut listed = BTreeMap::new();
    let mut left_out = 0usize;
    for entry in table.entries() {
        let usable = helper_secret(&entry.credentials).ok();
        match (&entry.key.host, entry.key.namespace.is_empty(), usable) {
            (HostPattern::Exact(host), true, Some((username, _))) => {
                listed.insert(helper_server(host), username);
            }
            _ => left_out += 1,
        }
    }
    if left_out > 0 {
        eprintln!(
            "pullauth: {left_out} key(s) left out of the list: only a host-level key with a \
             password or identity token is listed (wildcard keys still answer `get` for the \
             hosts they match)"
        );
    }
    say(serde_json::to_string(&listed).context("encoding the list")?)?;
    Ok(ExitCode::SUCCESS)
}

/// `store` and `erase`: pullauth never changes the configuration. Stdin (a
/// secret, for `store`) is not read.
fn read_only(args: &CredentialHelperArgs, what: &str) -> anyhow::Error {
    let file = config_args(args)
        .env_file
        .map_or_else(|| DEFAULT_ENV_FILE.to_owned(), |p| p.display().to_string());
    anyhow::anyhow!(
        "docker-credential-pullauth cannot {what}: it answers from ecs.config and never writes \
         it; edit {AUTH_DATA} in {file} instead (`pullauth config from-docker` converts a \
         docker login)"
    )
}

/// Username and secret as the protocol carries them, or what the key holds
/// instead that the protocol cannot carry.
fn helper_secret(credentials: &Credentials) -> Result<(&str, &SecretString), &'static str> {
    if credentials.registry_token.is_some() {
        return Err("a registry token, which the credential-helper protocol cannot carry");
    }
    if let Some(token) = &credentials.identity_token {
        return Ok((TOKEN_USERNAME, token));
    }
    match (&credentials.username, &credentials.password) {
        (Some(username), Some(password)) => Ok((username, password)),
        _ => Err("no username and password"),
    }
}

/// What `get` prints. Not `Debug`: it borrows the secret.
#[derive(Serialize)]
struct Answer<'a> {
    #[serde(rename = "ServerURL")]
    server_url: &'a str,
    #[serde(rename = "Username")]
    username: &'a str,
    #[serde(rename = "Secret")]
    secret: &'a str,
}

/// The `get` answer with a newline, in a buffer that is zeroed on drop and
/// sized so that it never reallocates (JSON escapes a byte in at most six).
fn answer_json(
    server_url: &str,
    username: &str,
    secret: &SecretString,
) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let secret = secret.expose_secret();
    let capacity = 64 + 6 * (server_url.len() + username.len() + secret.len());
    let mut out = Zeroizing::new(Vec::with_capacity(capacity));
    let answer = Answer {
        server_url,
        username,
        secret,
    };
    serde_json::to_writer(&mut *out, &answer).context("encoding the answer")?;
    out.push(b'\n');
    Ok(out)
}

/// What stderr says about keys that apply to the host but that the protocol
/// cannot use, and about sources pullauth uses for its own pulls only.
fn notes(table: &RegistryTable, found: &ServerLookup<'_>) -> Vec<String> {
    let host = &found.host;
    let mut notes = Vec::new();
    if !found.namespace_keys.is_empty() {
        let keys: Vec<String> = found
            .namespace_keys
            .iter()
            .map(|e| format!("{:?}", e.key.written))
            .collect();
        let instead = match found.entry {
            Some(entry) => format!("answering with the host-level key {:?}", entry.key.written),
            None => format!(
                "add a key for {host} without a path for Docker, or pull with `pullauth pull`"
            ),
        };
        notes.push(format!(
            "{host} has keys limited to a namespace ({}), which Docker cannot use through a \
             credential helper: the protocol passes only the server URL, not the repository; \
             {instead}",
            keys.join(", ")
        ));
    }
    if found.entry.is_none() {
        if let Some(helper) = table.helper_for(host) {
            notes.push(format!(
                "{AUTH_DATA} sends {host} to credential helper {helper:?}, which pullauth's \
                 helper does not call: name docker-credential-{helper} for {host} in Docker's \
                 credHelpers"
            ));
        } else if EcrRegistry::parse(host).is_ok() {
            notes.push(format!(
                "{host} is an ECR registry: pullauth fetches ECR tokens for its own pulls only; \
                 use docker-credential-ecr-login for it in Docker's credHelpers"
            ));
        }
    }
    notes
}

/// The first line of `input` (at most [`MAX_SERVER_URL`] bytes, waiting at
/// most `timeout`), trimmed. The reading thread is left behind on timeout:
/// the process ends soon after.
fn read_server_url<R: Read + Send + 'static>(
    input: R,
    timeout: Duration,
) -> anyhow::Result<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = Vec::new();
        let read = BufReader::new(input.take(MAX_SERVER_URL as u64 + 1))
            .read_until(b'\n', &mut line)
            .map(|_| line);
        let _ = sender.send(read);
    });
    let line = match receiver.recv_timeout(timeout) {
        Ok(read) => read.context("reading the server URL from stdin")?,
        Err(RecvTimeoutError::Timeout) => {
            return Err(UsageError(format!(
                "no server URL arrived on stdin within {} s (Docker writes it and closes stdin)",
                timeout.as_secs()
            ))
            .into());
        }
        Err(RecvTimeoutError::Disconnected) => anyhow::bail!("the stdin reader stopped"),
    };
    let line = line.strip_suffix(b"\n").unwrap_or(&line);
    if line.len() > MAX_SERVER_URL {
        return Err(UsageError(format!(
            "the server URL on stdin is longer than {MAX_SERVER_URL} bytes"
        ))
        .into());
    }
    let line = std::str::from_utf8(line)
        .map_err(|_| UsageError("the server URL on stdin is not UTF-8".into()))?;
    let url = line.trim();
    if url.is_empty() {
        return Err(UsageError(
            "no server URL on stdin: `get` reads the registry (e.g. registry.example.com:5000)"
                .into(),
        )
        .into());
    }
    Ok(url.to_owned())
}

#[cfg(test)]
mod tests {
    use pullauth_config::AuthType;
    use rstest::rstest;

    use super::*;

    const CANARY: &str = "Canary7pw";

    fn table() -> RegistryTable {
        let data = format!(
            r#"{{"registry.example.com:5000":{{"username":"alice","password":"{CANARY}"}},
                "https://index.docker.io/v1/":{{"username":"hub","password":"{CANARY}"}},
                "scoped.example.com/team":{{"username":"team","password":"{CANARY}"}},
                "mixed.example.com":{{"username":"host","password":"{CANARY}"}},
                "mixed.example.com/team":{{"username":"team","password":"{CANARY}"}},
                "*.wild.example.com":{{"username":"wild","password":"{CANARY}"}},
                "token.example.com":{{"identitytoken":"{CANARY}"}},
                "bearer.example.com":{{"registrytoken":"{CANARY}"}}}}"#
        );
        RegistryTable::from_auth_data(AuthType::Docker, &SecretString::from(data)).expect("valid")
    }

    /// `(username, secret)` for `server_url`, or `None` when `get` would say
    /// "not found".
    fn answer(table: &RegistryTable, server_url: &str) -> Option<(String, String)> {
        let found = table.for_server_url(server_url).expect("a server URL");
        let (username, secret) = helper_secret(&found.entry?.credentials).ok()?;
        Some((username.to_owned(), secret.expose_secret().to_owned()))
    }

    #[rstest]
    #[case::bare_host_port("registry.example.com:5000", Some("alice"))]
    #[case::https_prefix("https://registry.example.com:5000", Some("alice"))]
    #[case::trailing_v1("https://registry.example.com:5000/v1/", Some("alice"))]
    #[case::without_port("registry.example.com", None)]
    #[case::hub_legacy("https://index.docker.io/v1/", Some("hub"))]
    #[case::hub_short("docker.io", Some("hub"))]
    #[case::hub_registry_1("registry-1.docker.io", Some("hub"))]
    #[case::namespace_only_host("scoped.example.com", None)]
    #[case::host_key_beside_namespace_key("mixed.example.com", Some("host"))]
    #[case::wildcard("eu.wild.example.com", Some("wild"))]
    #[case::wildcard_is_one_label("a.b.wild.example.com", None)]
    #[case::identity_token("token.example.com", Some(TOKEN_USERNAME))]
    #[case::registry_token_cannot_be_carried("bearer.example.com", None)]
    #[case::unknown("other.example.com", None)]
    fn get_answers(#[case] server_url: &str, #[case] username: Option<&str>) {
        let got = answer(&table(), server_url);
        assert_eq!(got.as_ref().map(|(u, _)| u.as_str()), username);
        if let Some((_, secret)) = got {
            assert_eq!(secret, CANARY);
        }
    }

    #[rstest]
    #[case::namespace_only(
        "scoped.example.com",
        "scoped.example.com has keys limited to a namespace (\"scoped.example.com/team\")"
    )]
    #[case::beside_host_key(
        "mixed.example.com",
        "answering with the host-level key \"mixed.example.com\""
    )]
    #[case::ecr(
        "123456789012.dkr.ecr.us-east-1.amazonaws.com",
        "is an ECR registry: pullauth fetches ECR tokens for its own pulls only"
    )]
    fn notes_explain_what_the_protocol_cannot_use(#[case] server_url: &str, #[case] says: &str) {
        let table = table();
        let found = table.for_server_url(server_url).expect("a server URL");
        let notes = notes(&table, &found).join("\n");
        assert!(notes.contains(says), "{notes}");
        assert!(
            found.namespace_keys.is_empty() != notes.contains("only the server URL"),
            "{notes}"
        );
        assert!(!notes.contains(CANARY), "{notes}");
    }

    #[test]
    fn notes_name_a_configured_helper() {
        let data = r#"{"auths":{},"credHelpers":{"helped.example.com":"pass"}}"#;
        let table = RegistryTable::from_auth_data(AuthType::Docker, &SecretString::from(data))
            .expect("valid");
        let found = table.for_server_url("helped.example.com").expect("a URL");
        let notes = notes(&table, &found).join("\n");
        assert!(
            notes.contains("credential helper \"pass\"") && notes.contains("credHelpers"),
            "{notes}"
        );
        let plain = table.for_server_url("registry.example.com").expect("a URL");
        assert!(super::notes(&table, &plain).is_empty());
    }

    #[test]
    fn answer_is_the_protocols_json() {
        let json = answer_json(
            "https://index.docker.io/v1/",
            "hub",
            &SecretString::from("p\"w\\\u{1}"),
        )
        .expect("encodes");
        let value: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
        assert_eq!(
            value,
            serde_json::json!({
                "ServerURL": "https://index.docker.io/v1/",
                "Username": "hub",
                "Secret": "p\"w\\\u{1}",
            })
        );
        assert!(json.ends_with(b"}\n"));
    }

    #[rstest]
    #[case::bare(&b"registry.example.com:5000"[..], "registry.example.com:5000")]
    #[case::newline(&b"https://index.docker.io/v1/\n"[..], "https://index.docker.io/v1/")]
    #[case::crlf_and_spaces(&b"  r.example.com \r\n"[..], "r.example.com")]
    #[case::first_line_only(&b"a.example.com\nb.example.com\n"[..], "a.example.com")]
    fn reads_the_first_line(#[case] input: &'static [u8], #[case] url: &str) {
        assert_eq!(
            read_server_url(input, Duration::from_secs(5)).expect("read"),
            url
        );
    }

    #[rstest]
    #[case::empty(b"".to_vec(), "no server URL on stdin")]
    #[case::blank(b" \n".to_vec(), "no server URL on stdin")]
    #[case::not_utf8(b"r\xff.example.com".to_vec(), "not UTF-8")]
    #[case::too_long(vec![b'a'; MAX_SERVER_URL + 1], "longer than 4096 bytes")]
    fn rejects_bad_input_with_exit_2(#[case] input: Vec<u8>, #[case] says: &str) {
        let err = read_server_url(std::io::Cursor::new(input), Duration::from_secs(5))
            .expect_err("rejected");
        assert!(err.to_string().contains(says), "{err}");
        assert_eq!(
            format!("{:?}", exit::code_for(&err)),
            format!("{:?}", ExitCode::from(exit::USAGE))
        );
    }

    #[test]
    fn the_longest_server_url_is_accepted() {
        let mut input = vec![b'a'; MAX_SERVER_URL];
        input.push(b'\n');
        let url =
            read_server_url(std::io::Cursor::new(input), Duration::from_secs(5)).expect("accepted");
        assert_eq!(url.len(), MAX_SERVER_URL);
    }

    /// A client that never writes nor closes stdin.
    struct Silent;

    impl Read for Silent {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            std::thread::sleep(Duration::from_secs(3600));
            Ok(0)
        }
    }

    #[test]
    fn a_client_that_never_closes_stdin_does_not_hold_get() {
        let started = std::time::Instant::now();
        let err = read_server_url(Silent, Duration::from_millis(200)).expect_err("times out");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            err.to_string().contains("no server URL arrived on stdin"),
            "{err}"
        );
        assert_eq!(
            format!("{:?}", exit::code_for(&err)),
            format!("{:?}", ExitCode::from(exit::USAGE))
        );
    }

    #[test]
    fn default_env_file_is_documented_in_the_flag() {
        use clap::CommandFactory;
        let command = crate::cli::Cli::command();
        let helper = command
            .find_subcommand("credential-helper")
            .expect("subcommand");
        let help = helper
            .get_arguments()
            .find(|a| a.get_id() == "env_file")
            .and_then(|a| a.get_help())
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(
            help.contains(ENV_FILE_VAR) && help.contains(DEFAULT_ENV_FILE),
            "{help}"
        );
    }
}
