//! Configuration for pullauth, read the way the ECS agent reads it.
//!
//! Three sources are layered, highest first:
//! 1. `--env-file` (the ecs.config format, see [`envfile`]),
//! 2. the process environment,
//! 3. the JSON file named by `ECS_AGENT_CONFIG_FILE_PATH`, which only fills
//!    what the first two leave unset.
//!
//! [`Config::load`] turns them into typed, validated settings once; each
//! setting remembers where it came from ([`Origin`]) so that `pullauth check`
//! and every error can say so. `ECS_ENGINE_AUTH_DATA` never leaves a
//! [`SecretString`]; parsing it into registry credentials is the job of
//! `pullauth-resolve`.

pub mod duration;
pub mod ecs_agent;
pub mod envfile;
pub mod shown;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub use secrecy::{ExposeSecret, SecretString};

pub use duration::{DurationError, GoDuration};
pub use ecs_agent::{EcsAgentSettings, EcsAgentWarning};
pub use envfile::{EnvFile, EnvFileError};
pub use shown::Found;

/// `ECS_ENGINE_AUTH_TYPE`: how `ECS_ENGINE_AUTH_DATA` is shaped.
pub const AUTH_TYPE: &str = "ECS_ENGINE_AUTH_TYPE";
/// `ECS_ENGINE_AUTH_DATA`: JSON map from registry key to credentials.
pub const AUTH_DATA: &str = "ECS_ENGINE_AUTH_DATA";
/// Path of the agent's JSON configuration file.
pub const CONFIG_FILE_PATH: &str = "ECS_AGENT_CONFIG_FILE_PATH";
/// Directory for persistent state.
pub const DATA_DIR: &str = "ECS_DATADIR";
/// Cluster name reported by `/v1/metadata`.
pub const CLUSTER: &str = "ECS_CLUSTER";
/// One of [`PullBehavior`].
pub const PULL_BEHAVIOR: &str = "ECS_IMAGE_PULL_BEHAVIOR";
/// Upper bound for one whole image pull.
pub const PULL_TIMEOUT: &str = "ECS_IMAGE_PULL_TIMEOUT";
/// How long the agent keeps a finished task before removing it.
pub const TASK_CLEANUP_WAIT: &str = "ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION";
/// Upper bound for a pull that makes no progress.
pub const PULL_INACTIVITY_TIMEOUT: &str = "ECS_IMAGE_PULL_INACTIVITY_TIMEOUT";
/// One of [`LogLevel`].
pub const LOG_LEVEL: &str = "ECS_LOGLEVEL";
/// One of [`LogFormat`].
pub const LOG_FORMAT: &str = "ECS_LOG_OUTPUT_FORMAT";

/// `on` (default) or `off`: whether images on Amazon ECR registry hosts get
/// automatic ECR credentials when no other source applies.
pub const ECR: &str = "PULLAUTH_ECR";
/// `on` or `off` (default): whether `pullauth serve` follows the cluster's
/// services and keeps their images pulled (as `--follow-cluster` does).
pub const PREFETCH: &str = "PULLAUTH_PREFETCH";
/// Comma-separated service names: prefetch only these services' images.
pub const PREFETCH_SERVICES: &str = "PULLAUTH_PREFETCH_SERVICES";
/// Comma-separated task definitions (`family` or `family:revision`) to
/// prefetch as well; alone (without services), only these.
pub const PREFETCH_TASK_DEFINITIONS: &str = "PULLAUTH_PREFETCH_TASK_DEFINITIONS";
/// How often serve polls the cluster's services (default: pullauth-poll's
/// `DEFAULT_INTERVAL`, sized for 10,000 instances).
pub const PREFETCH_INTERVAL: &str = "PULLAUTH_PREFETCH_INTERVAL";
/// How long after start (or a reload) serve's first poll may come: drawn
/// uniformly from `[0, spread]` (default: the interval). A fleet that may
/// start cold sizes it with pullauth-poll's `cold_start_spread`.
pub const PREFETCH_STARTUP_SPREAD: &str = "PULLAUTH_PREFETCH_STARTUP_SPREAD";
/// Upper bound for one AWS call (ECR token, secret, role, S3 object, ECS
/// read): every attempt, back-off and credentials lookup included.
pub const AWS_TIMEOUT: &str = "PULLAUTH_AWS_TIMEOUT";
/// `on` (default) or `off`: whether the follower removes the images it
/// prefetched once nothing names them for `PULLAUTH_PREFETCH_REMOVE_AFTER`.
pub const PREFETCH_REMOVE: &str = "PULLAUTH_PREFETCH_REMOVE";
/// How long a prefetched image nothing names any more stays (default 6h).
pub const PREFETCH_REMOVE_AFTER: &str = "PULLAUTH_PREFETCH_REMOVE_AFTER";
/// The disk budget, in MiB, of the images prefetch pulled: at or above it
/// further prefetch pulls are skipped (default 10240; `0`: no budget).
pub const PREFETCH_DISK_BUDGET_MIB: &str = "PULLAUTH_PREFETCH_DISK_BUDGET_MIB";
/// Where the local ECS agent's introspection API answers (`GET
/// /v1/metadata` names this container instance, whose attributes decide
/// `memberOf` constraints).
pub const ECS_AGENT_URI: &str = "PULLAUTH_ECS_AGENT_URI";
/// Default of [`ECS_AGENT_URI`]: the ECS agent's introspection port.
pub const DEFAULT_ECS_AGENT_URI: &str = "http://127.0.0.1:51678";
/// Default of [`PREFETCH_REMOVE_AFTER`].
pub const DEFAULT_PREFETCH_REMOVE_AFTER: Duration = Duration::from_secs(6 * 3600);
/// Default of [`PREFETCH_DISK_BUDGET_MIB`]: a third of the ECS-optimized
/// AMI's 30 GiB root volume.
pub const DEFAULT_PREFETCH_DISK_BUDGET_MIB: u64 = 10 * 1024;

/// The cluster the agent reports when `ECS_CLUSTER` is unset, as the ECS agent does.
pub const DEFAULT_CLUSTER: &str = "default";
/// The ECS agent's default for `ECS_IMAGE_PULL_TIMEOUT`.
pub const DEFAULT_PULL_TIMEOUT: Duration = Duration::from_secs(2 * 60 * 60);
/// The ECS agent's default for `ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION`.
pub const DEFAULT_TASK_CLEANUP_WAIT: Duration = Duration::from_secs(3 * 60 * 60);
/// The ECS agent's default for `ECS_IMAGE_PULL_INACTIVITY_TIMEOUT`.
pub const DEFAULT_PULL_INACTIVITY_TIMEOUT: Duration = Duration::from_secs(60);
/// The default for `PULLAUTH_AWS_TIMEOUT` (pullauth-aws's
/// `OPERATION_TIMEOUT`; a test in the pullauth crate holds them equal).
pub const DEFAULT_AWS_TIMEOUT: Duration = Duration::from_secs(20);

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A line of the `--env-file`.
    EnvFile { path: PathBuf, line: usize },
    /// The process environment.
    Process,
    /// The JSON file named by `ECS_AGENT_CONFIG_FILE_PATH`.
    ConfigFile { path: PathBuf },
    /// Not set anywhere: the built-in default.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::EnvFile { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::Process => f.write_str("process environment"),
            Origin::ConfigFile { path } => write!(f, "{}", path.display()),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// A validated value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    pub value: T,
    pub origin: Origin,
}

/// The two shapes of `ECS_ENGINE_AUTH_DATA` the ECS agent accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    /// `{"key": {"username", "password", "email"}}`.
    Docker,
    /// `{"key": {"auth": base64("user:password"), "email"}}`, as `docker login` writes.
    Dockercfg,
}

impl AuthType {
    /// Every accepted spelling, for messages.
    pub const ALLOWED: &'static str = "\"docker\" or \"dockercfg\"";

    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::Docker => "docker",
            AuthType::Dockercfg => "dockercfg",
        }
    }
}

impl FromStr for AuthType {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "docker" => Ok(AuthType::Docker),
            "dockercfg" => Ok(AuthType::Dockercfg),
            _ => Err(()),
        }
    }
}

/// When to contact the registry, as `ECS_IMAGE_PULL_BEHAVIOR` in the ECS agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullBehavior {
    /// Pull; if the pull fails, use a cached image (with a warning).
    #[default]
    Default,
    /// Pull; if the pull fails, fail.
    Always,
    /// Pull only if this host has not pulled the image successfully before.
    Once,
    /// Use the local image if present; pull only when it is missing.
    PreferCached,
}

impl PullBehavior {
    pub const ALLOWED: &'static str = "default, always, once, prefer-cached";

    pub fn as_str(self) -> &'static str {
        match self {
            PullBehavior::Default => "default",
            PullBehavior::Always => "always",
            PullBehavior::Once => "once",
            PullBehavior::PreferCached => "prefer-cached",
        }
    }
}

impl FromStr for PullBehavior {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "default" => Ok(PullBehavior::Default),
            "always" => Ok(PullBehavior::Always),
            "once" => Ok(PullBehavior::Once),
            "prefer-cached" => Ok(PullBehavior::PreferCached),
            _ => Err(()),
        }
    }
}

/// `ECS_LOGLEVEL`, with the ECS agent's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum LogLevel {
    Debug,
    #[default]
    Info,
    Warn,
    Error,
    /// The agent's "critical"; pullauth logs it as error.
    Crit,
    /// No logging at all.
    None,
}

impl LogLevel {
    pub const ALLOWED: &'static str = "debug, info, warn, error, crit, none";
}

impl FromStr for LogLevel {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_lowercase().as_str() {
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warn" => Ok(LogLevel::Warn),
            "error" => Ok(LogLevel::Error),
            "crit" => Ok(LogLevel::Crit),
            "none" | "off" => Ok(LogLevel::None),
            _ => Err(()),
        }
    }
}

/// `ECS_LOG_OUTPUT_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Logfmt,
    Json,
}

impl LogFormat {
    pub const ALLOWED: &'static str = "logfmt, json";
}

impl FromStr for LogFormat {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_lowercase().as_str() {
            "logfmt" => Ok(LogFormat::Logfmt),
            "json" => Ok(LogFormat::Json),
            _ => Err(()),
        }
    }
}

/// Engine authentication as configured: validated type, raw (secret) data.
#[derive(Debug, Clone)]
pub struct EngineAuth {
    pub kind: Setting<AuthType>,
    /// The JSON text of `ECS_ENGINE_AUTH_DATA`; it holds passwords.
    pub data: SecretString,
    pub data_origin: Origin,
}

/// Why the configuration cannot be used. Every variant is a usage error
/// (exit status 2); none quotes a value that could be a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    EnvFile(#[from] EnvFileError),
    #[error(
        "{AUTH_TYPE}{} ({origin}) is not a supported type{}; use {}{}",
        found.assignment(),
        found.note(),
        AuthType::ALLOWED,
        found.hint()
    )]
    UnknownAuthType { found: Found, origin: Origin },
    #[error(
        "{AUTH_TYPE} ({origin}) looks like the JSON of {AUTH_DATA}: are the two variables \
         swapped? Set {AUTH_TYPE} to {} and {AUTH_DATA} to the JSON",
        AuthType::ALLOWED
    )]
    AuthTypeIsJson { origin: Origin },
    #[error(
        "{AUTH_TYPE} ({type_origin}) holds JSON and {AUTH_DATA}={:?} ({data_origin}) holds a \
         type: the two variables are swapped",
        data.as_str()
    )]
    Swapped {
        type_origin: Origin,
        data: AuthType,
        data_origin: Origin,
    },
    #[error(
        "{AUTH_DATA}={:?} ({origin}) is a type, not the JSON of registry credentials: are \
         {AUTH_TYPE} and {AUTH_DATA} swapped?",
        found.as_str()
    )]
    DataIsTypeName { found: AuthType, origin: Origin },
    #[error(
        "{AUTH_TYPE} ({origin}) holds its type followed by {AUTH_DATA}=...: {AUTH_TYPE} and \
         {AUTH_DATA} must be on separate lines{}",
        if matches!(origin, Origin::EnvFile { .. }) {
            "; put each KEY=VALUE on a line of its own"
        } else {
            " (separate variables)"
        }
    )]
    OneLinePaste { origin: Origin },
    #[error(
        "{AUTH_TYPE} is set ({origin}) but {AUTH_DATA} is not; set both, or neither for anonymous pulls"
    )]
    TypeWithoutData { origin: Origin },
    #[error(
        "{AUTH_DATA} is set ({origin}) but {AUTH_TYPE} is not; set {AUTH_TYPE} to {}",
        AuthType::ALLOWED
    )]
    DataWithoutType { origin: Origin },
    #[error(
        "{var}{} ({origin}) is not valid{}; expected {expected}{}",
        found.assignment(),
        found.note(),
        found.hint()
    )]
    InvalidValue {
        var: &'static str,
        found: Found,
        origin: Origin,
        expected: &'static str,
    },
    #[error(
        "{var} ({origin}) holds {} after its value: a second variable on the same line{}",
        pasted.as_deref().map_or_else(|| "another KEY=...".to_owned(), |name| format!("{name}=...")),
        if matches!(origin, Origin::EnvFile { .. }) {
            "; put each KEY=VALUE on a line of its own"
        } else {
            " (set each variable on its own)"
        }
    )]
    PastedAssignment {
        var: &'static str,
        /// The pasted variable's name, when it is one pullauth knows the
        /// shape of (`ECS_`, `AWS_`, `DOCKER_`, `PULLAUTH_`); never a value.
        pasted: Option<String>,
        origin: Origin,
    },
    #[error("cannot read {CONFIG_FILE_PATH} file {path}")]
    ConfigFileRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{CONFIG_FILE_PATH} file {path} is not a valid JSON object (line {line}, column {column})"
    )]
    ConfigFileSyntax {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    #[error("{CONFIG_FILE_PATH} file {path}: field {field:?} must be {expected}")]
    ConfigFileField {
        path: PathBuf,
        field: &'static str,
        expected: &'static str,
    },
}

/// The raw variables from every source, before validation.
#[derive(Debug, Default)]
pub struct Sources {
    env_file: Option<EnvFile>,
    process: HashMap<String, SecretString>,
    config_file: Option<(PathBuf, HashMap<&'static str, SecretString>)>,
}

/// Fields of the agent's JSON config file that pullauth reads, with the
/// variable each one stands for.
const CONFIG_FILE_FIELDS: &[(&str, &str)] = &[
    ("EngineAuthType", AUTH_TYPE),
    ("EngineAuthData", AUTH_DATA),
    ("Cluster", CLUSTER),
    ("DataDir", DATA_DIR),
];

impl Sources {
    /// Reads `env_file` (if given), the process environment, and the JSON
    /// config file if one is named.
    pub fn gather(env_file: Option<&Path>) -> Result<Sources, ConfigError> {
        let env_file = env_file.map(EnvFile::read).transpose()?;
        Sources::with_env_file(env_file)
    }

    /// As [`Sources::gather`], with an env file already read and parsed
    /// (e.g. fetched from S3 and given to [`EnvFile::from_bytes`]).
    pub fn with_env_file(env_file: Option<EnvFile>) -> Result<Sources, ConfigError> {
        Sources::from_parts(
            env_file,
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// Builds the sources from an already parsed env file and the given
    /// process variables, then reads the JSON config file if one is named.
    pub fn from_parts(
        env_file: Option<EnvFile>,
        process: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Sources, ConfigError> {
        let mut sources = Sources {
            env_file,
            process: process
                .into_iter()
                .map(|(k, v)| (k, SecretString::from(v)))
                .collect(),
            config_file: None,
        };
        sources.refuse_pasted_assignment(CONFIG_FILE_PATH)?;
        if let Some((path, _)) = sources.lookup(CONFIG_FILE_PATH) {
            let path = PathBuf::from(path.expose_secret());
            sources.config_file = Some(read_config_file(&path)?);
        }
        Ok(sources)
    }

    /// The value of `var` and its origin, from the highest source that sets
    /// it to a non-empty value.
    pub fn lookup(&self, var: &str) -> Option<(&SecretString, Origin)> {
        if let Some(file) = &self.env_file
            && let Some((value, line)) = file.get(var)
            && !value.expose_secret().is_empty()
        {
            let origin = Origin::EnvFile {
                path: file.path.clone(),
                line,
            };
            return Some((value, origin));
        }
        if let Some(value) = self.process.get(var)
            && !value.expose_secret().is_empty()
        {
            return Some((value, Origin::Process));
        }
        if let Some((path, fields)) = &self.config_file
            && let Some(value) = fields.get(var)
            && !value.expose_secret().is_empty()
        {
            return Some((value, Origin::ConfigFile { path: path.clone() }));
        }
        None
    }

    /// `ECS_DATADIR` from the highest source that sets it. `serve` keeps its
    /// state and control socket there; `task run` finds the socket the same
    /// way, so both must read it through this one function.
    pub fn data_dir(&self) -> Option<Setting<PathBuf>> {
        self.plain(DATA_DIR).map(|s| Setting {
            value: PathBuf::from(s.value),
            origin: s.origin,
        })
    }

    /// Refuses a free-text variable (a name, a path: used and shown as
    /// written) whose value holds a second `NAME=` after whitespace, i.e. a
    /// `KEY=VALUE KEY=VALUE` line pasted whole, which may carry a secret.
    fn refuse_pasted_assignment(&self, var: &'static str) -> Result<(), ConfigError> {
        let Some((value, origin)) = self.lookup(var) else {
            return Ok(());
        };
        match pasted_assignment(value.expose_secret()) {
            None => Ok(()),
            Some(pasted) => Err(ConfigError::PastedAssignment {
                var,
                pasted,
                origin,
            }),
        }
    }

    /// A non-secret variable as plain text.
    fn plain(&self, var: &str) -> Option<Setting<String>> {
        self.lookup(var).map(|(value, origin)| Setting {
            value: value.expose_secret().trim().to_owned(),
            origin,
        })
    }

    /// An `on`/`off` switch, or the default.
    fn switch(&self, var: &'static str, default: bool) -> Result<Setting<bool>, ConfigError> {
        let Setting { value, origin } = self.parsed(var, Switch::ALLOWED, Switch(default))?;
        Ok(Setting {
            value: value.0,
            origin,
        })
    }

    /// A comma-separated list (blank items dropped), empty when unset.
    fn list(&self, var: &str) -> Setting<Vec<String>> {
        match self.plain(var) {
            None => Setting {
                value: Vec::new(),
                origin: Origin::Default,
            },
            Some(Setting { value, origin }) => Setting {
                value: value
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(str::to_owned)
                    .collect(),
                origin,
            },
        }
    }

    /// A variable parsed with `FromStr`, or the default.
    fn parsed<T: FromStr>(
        &self,
        var: &'static str,
        expected: &'static str,
        default: T,
    ) -> Result<Setting<T>, ConfigError> {
        match self.plain(var) {
            None => Ok(Setting {
                value: default,
                origin: Origin::Default,
            }),
            Some(Setting { value, origin }) => match value.parse() {
                Ok(parsed) => Ok(Setting {
                    value: parsed,
                    origin,
                }),
                Err(_) => Err(ConfigError::InvalidValue {
                    var,
                    found: Found::new(&value),
                    origin,
                    expected,
                }),
            },
        }
    }

    fn duration(
        &self,
        var: &'static str,
        default: Duration,
    ) -> Result<Setting<Duration>, ConfigError> {
        let default_nanos = i64::try_from(default.as_nanos()).unwrap_or(i64::MAX);
        let setting =
            self.parsed::<GoDuration>(var, DURATION_EXPECTED, GoDuration(default_nanos))?;
        // Go's syntax takes a sign; a time limit that is negative or zero
        // means nothing.
        let refuse = |expected| ConfigError::InvalidValue {
            var,
            found: self
                .plain(var)
                .map_or(Found::Token(String::new()), |s| Found::new(&s.value)),
            origin: setting.origin.clone(),
            expected,
        };
        match setting.value.0 {
            ..0 => Err(refuse(
                "a positive duration: a negative one is Go syntax but no time limit",
            )),
            0 => Err(refuse(DURATION_EXPECTED)),
            nanos => Ok(Setting {
                value: Duration::from_nanos(nanos.unsigned_abs()),
                origin: setting.origin,
            }),
        }
    }
}

/// What a duration variable takes (see [`duration`]).
const DURATION_EXPECTED: &str = "a positive duration in Go's syntax, such as 90s, 1m30s, 1.5h or 500ms \
     (units ns, us, ms, s, m, h; no spaces)";

fn read_config_file(
    path: &Path,
) -> Result<(PathBuf, HashMap<&'static str, SecretString>), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ConfigFileRead {
        path: path.to_owned(),
        source,
    })?;
    let text = SecretString::from(text);
    let syntax = |line, column| ConfigError::ConfigFileSyntax {
        path: path.to_owned(),
        line,
        column,
    };
    let value: serde_json::Value =
        serde_json::from_str(text.expose_secret()).map_err(|e| syntax(e.line(), e.column()))?;
    let serde_json::Value::Object(mut object) = value else {
        return Err(syntax(1, 1));
    };
    let mut fields = HashMap::new();
    for &(field, var) in CONFIG_FILE_FIELDS {
        let text = match object.remove(field) {
            None | Some(serde_json::Value::Null) => continue,
            Some(serde_json::Value::String(s)) => s,
            // The Go agent reads EngineAuthData as raw JSON: an object is the usual form.
            Some(value @ serde_json::Value::Object(_)) if var == AUTH_DATA => value.to_string(),
            Some(_) => {
                return Err(ConfigError::ConfigFileField {
                    path: path.to_owned(),
                    field,
                    expected: if var == AUTH_DATA {
                        "a JSON object or a string"
                    } else {
                        "a string"
                    },
                });
            }
        };
        fields.insert(var, SecretString::from(text));
    }
    Ok((path.to_owned(), fields))
}

/// Validates `ECS_ENGINE_AUTH_TYPE` and pairs it with `ECS_ENGINE_AUTH_DATA`.
///
/// The type is checked first, whether or not the data is set, because the
/// usual mistakes put the data into the type's variable: the two variables
/// swapped, or both pasted on one line. Those errors describe the mistake
/// without quoting the value, which then holds credentials.
fn engine_auth(
    kind: Option<Setting<String>>,
    data: Option<(&SecretString, Origin)>,
) -> Result<Option<EngineAuth>, ConfigError> {
    let data_type = data.as_ref().and_then(|(data, origin)| {
        data.expose_secret()
            .trim()
            .parse::<AuthType>()
            .ok()
            .map(|found| (found, origin.clone()))
    });
    let kind = match kind {
        None => None,
        Some(Setting { value, origin }) => match value.parse::<AuthType>() {
            Ok(parsed) => Some(Setting {
                value: parsed,
                origin,
            }),
            Err(()) if value.starts_with('{') => {
                return Err(match data_type {
                    Some((data, data_origin)) => ConfigError::Swapped {
                        type_origin: origin,
                        data,
                        data_origin,
                    },
                    None => ConfigError::AuthTypeIsJson { origin },
                });
            }
            Err(()) if is_one_line_paste(&value) => {
                return Err(ConfigError::OneLinePaste { origin });
            }
            Err(()) => {
                return Err(ConfigError::UnknownAuthType {
                    found: Found::new(&value),
                    origin,
                });
            }
        },
    };
    if let Some((found, origin)) = data_type {
        return Err(ConfigError::DataIsTypeName { found, origin });
    }
    match (kind, data) {
        (None, None) => Ok(None),
        (Some(kind), None) => Err(ConfigError::TypeWithoutData {
            origin: kind.origin,
        }),
        (None, Some((_, origin))) => Err(ConfigError::DataWithoutType { origin }),
        (Some(kind), Some((data, data_origin))) => Ok(Some(EngineAuth {
            kind,
            data: data.clone(),
            data_origin,
        })),
    }
}

/// `docker ECS_ENGINE_AUTH_DATA=...` or `dockercfg ECS_ENGINE_AUTH_DATA=...`:
/// the documentation's one-line example pasted as one line.
fn is_one_line_paste(value: &str) -> bool {
    value
        .split_once(char::is_whitespace)
        .is_some_and(|(first, rest)| {
            first.parse::<AuthType>().is_ok()
                && rest
                    .trim_start()
                    .starts_with(&format!("{AUTH_DATA}=") as &str)
        })
}

/// `Some(name)` when `value` holds `NAME=` after whitespace (a variable
/// pasted onto another's line): the name when it has a prefix of the
/// variables pullauth and its peers read, `None` inside for any other name.
fn pasted_assignment(value: &str) -> Option<Option<String>> {
    value.split_whitespace().skip(1).find_map(|word| {
        let (name, _) = word.split_once('=')?;
        let is_name = name.starts_with(|c: char| c.is_ascii_uppercase())
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !is_name {
            return None;
        }
        let known = ["ECS_", "AWS_", "DOCKER_", "PULLAUTH_"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
            && shown::is_token(name);
        Some(known.then(|| name.to_owned()))
    })
}

/// Everything pullauth reads from its environment, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Engine credentials, or `None` for anonymous pulls.
    pub engine_auth: Option<EngineAuth>,
    /// Where persistent state lives; `None` keeps it in memory.
    pub data_dir: Option<Setting<PathBuf>>,
    pub cluster: Setting<String>,
    pub pull_behavior: Setting<PullBehavior>,
    pub pull_timeout: Setting<Duration>,
    pub pull_inactivity_timeout: Setting<Duration>,
    /// Finished tasks older than this are removed from the agent's state.
    /// The ECS agent's variable, read as the ECS agent reads it: a value it
    /// ignores is a warning ([`EcsAgentSettings::ignored`]) and the default.
    pub task_cleanup_wait: Setting<Duration>,
    pub log_level: Setting<LogLevel>,
    pub log_format: Setting<LogFormat>,
    /// `PULLAUTH_ECR`: automatic ECR credentials for ECR hosts (default on).
    pub ecr: Setting<bool>,
    /// `PULLAUTH_PREFETCH`: serve follows the cluster's services (default off).
    pub prefetch: Setting<bool>,
    /// `PULLAUTH_PREFETCH_SERVICES`: the services to prefetch (empty: all).
    pub prefetch_services: Setting<Vec<String>>,
    /// `PULLAUTH_PREFETCH_TASK_DEFINITIONS`: task definitions to prefetch too.
    pub prefetch_task_definitions: Setting<Vec<String>>,
    /// `PULLAUTH_PREFETCH_INTERVAL`; `None`: the poller's default.
    pub prefetch_interval: Option<Setting<Duration>>,
    /// `PULLAUTH_PREFETCH_STARTUP_SPREAD`; `None`: one interval.
    pub prefetch_startup_spread: Option<Setting<Duration>>,
    /// `PULLAUTH_AWS_TIMEOUT`: the bound of each AWS call.
    pub aws_timeout: Setting<Duration>,
    /// `PULLAUTH_ECS_AGENT_URI`: the local ECS agent's introspection API.
    pub ecs_agent_uri: Setting<String>,
    /// `PULLAUTH_PREFETCH_REMOVE`: the follower removes what it prefetched
    /// once nothing names it (default on).
    pub prefetch_remove: Setting<bool>,
    /// `PULLAUTH_PREFETCH_REMOVE_AFTER`: after how long (default 6h).
    pub prefetch_remove_after: Setting<Duration>,
    /// `PULLAUTH_PREFETCH_DISK_BUDGET_MIB`: the prefetched images' budget in
    /// MiB; 0: none.
    pub prefetch_disk_budget_mib: Setting<u64>,
    /// The ECS agent's image cleanup and pull settings, which only warn
    /// (see [`ecs_agent`]).
    pub ecs_agent: EcsAgentSettings,
}

/// `on`/`off` (also `true`/`false`, `1`/`0`), for switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Switch(bool);

impl Switch {
    const ALLOWED: &'static str = "on or off";
}

impl FromStr for Switch {
    type Err = ();
    fn from_str(s: &str) -> Result<Switch, ()> {
        match s.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "1" => Ok(Switch(true)),
            "off" | "false" | "0" => Ok(Switch(false)),
            _ => Err(()),
        }
    }
}

impl Config {
    /// Reads every source (see the crate docs) and validates the result.
    pub fn load(env_file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::from_sources(&Sources::gather(env_file)?)
    }

    /// As [`Config::load`], with the env file already parsed (an S3 object:
    /// the caller fetches it, so this crate stays free of the AWS SDK).
    pub fn load_with(env_file: Option<EnvFile>) -> Result<Config, ConfigError> {
        Config::from_sources(&Sources::with_env_file(env_file)?)
    }

    /// The variables whose value differs in `new` but that a running agent
    /// cannot take without a restart: everything but the credentials
    /// (`ECS_ENGINE_AUTH_TYPE`/`_DATA`, the JSON file's auth data) and the
    /// pull settings (behavior, timeout, inactivity timeout), which a
    /// reload applies. Names only: a reload's log must not carry values.
    pub fn needs_restart(&self, new: &Config) -> Vec<&'static str> {
        let data_dir = |c: &Config| c.data_dir.as_ref().map(|d| d.value.clone());
        [
            (DATA_DIR, data_dir(self) != data_dir(new)),
            (CLUSTER, self.cluster.value != new.cluster.value),
            (
                TASK_CLEANUP_WAIT,
                self.task_cleanup_wait.value != new.task_cleanup_wait.value,
            ),
            (LOG_LEVEL, self.log_level.value != new.log_level.value),
            (LOG_FORMAT, self.log_format.value != new.log_format.value),
            (ECR, self.ecr.value != new.ecr.value),
            (AWS_TIMEOUT, self.aws_timeout.value != new.aws_timeout.value),
        ]
        .into_iter()
        .filter_map(|(var, changed)| changed.then_some(var))
        .collect()
    }

    /// Validates already gathered sources.
    pub fn from_sources(sources: &Sources) -> Result<Config, ConfigError> {
        for var in [CLUSTER, DATA_DIR] {
            sources.refuse_pasted_assignment(var)?;
        }
        let engine_auth = engine_auth(sources.plain(AUTH_TYPE), sources.lookup(AUTH_DATA))?;
        let pull_behavior =
            sources.parsed(PULL_BEHAVIOR, PullBehavior::ALLOWED, PullBehavior::Default)?;
        let ecs_agent = EcsAgentSettings::read(sources, pull_behavior.clone());
        Ok(Config {
            engine_auth,
            data_dir: sources.data_dir(),
            cluster: sources.plain(CLUSTER).unwrap_or_else(|| Setting {
                value: DEFAULT_CLUSTER.to_owned(),
                origin: Origin::Default,
            }),
            pull_behavior,
            pull_timeout: sources.duration(PULL_TIMEOUT, DEFAULT_PULL_TIMEOUT)?,
            pull_inactivity_timeout: sources
                .duration(PULL_INACTIVITY_TIMEOUT, DEFAULT_PULL_INACTIVITY_TIMEOUT)?,
            task_cleanup_wait: ecs_agent.task_cleanup_wait.clone(),
            log_level: sources.parsed(LOG_LEVEL, LogLevel::ALLOWED, LogLevel::Info)?,
            log_format: sources.parsed(LOG_FORMAT, LogFormat::ALLOWED, LogFormat::Logfmt)?,
            ecr: sources.switch(ECR, true)?,
            prefetch: sources.switch(PREFETCH, false)?,
            prefetch_services: sources.list(PREFETCH_SERVICES),
            prefetch_task_definitions: sources.list(PREFETCH_TASK_DEFINITIONS),
            prefetch_interval: match sources.plain(PREFETCH_INTERVAL) {
                None => None,
                Some(_) => Some(sources.duration(PREFETCH_INTERVAL, Duration::ZERO)?),
            },
            prefetch_startup_spread: match sources.plain(PREFETCH_STARTUP_SPREAD) {
                None => None,
                Some(_) => Some(sources.duration(PREFETCH_STARTUP_SPREAD, Duration::ZERO)?),
            },
            aws_timeout: sources.duration(AWS_TIMEOUT, DEFAULT_AWS_TIMEOUT)?,
            ecs_agent_uri: sources.plain(ECS_AGENT_URI).unwrap_or(Setting {
                value: DEFAULT_ECS_AGENT_URI.to_owned(),
                origin: Origin::Default,
            }),
            prefetch_remove: sources.switch(PREFETCH_REMOVE, true)?,
            prefetch_remove_after: sources
                .duration(PREFETCH_REMOVE_AFTER, DEFAULT_PREFETCH_REMOVE_AFTER)?,
            prefetch_disk_budget_mib: sources.parsed(
                PREFETCH_DISK_BUDGET_MIB,
                "a whole number of MiB (0: no budget)",
                DEFAULT_PREFETCH_DISK_BUDGET_MIB,
            )?,
            ecs_agent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const FILE: &str = "/etc/ecs/ecs.config";

    fn sources(file: &str, process: &[(&str, &str)]) -> Sources {
        let env_file = EnvFile::parse(file, Path::new(FILE)).expect("env file parses");
        Sources::from_parts(
            Some(env_file),
            process.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .expect("sources")
    }

    fn load(file: &str, process: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_sources(&sources(file, process))
    }

    #[test]
    fn nothing_set_means_anonymous_and_defaults() {
        let config = load("", &[]).expect("valid");
        assert!(config.engine_auth.is_none());
        assert_eq!(config.cluster.value, "default");
        assert_eq!(config.pull_behavior.value, PullBehavior::Default);
        assert_eq!(config.pull_timeout.value, DEFAULT_PULL_TIMEOUT);
        assert_eq!(
            config.pull_inactivity_timeout.value,
            DEFAULT_PULL_INACTIVITY_TIMEOUT
        );
        assert_eq!(config.pull_timeout.origin, Origin::Default);
        assert!(config.data_dir.is_none());
    }

    #[rstest]
    #[case::default("", true)]
    #[case::off("PULLAUTH_ECR=off", false)]
    #[case::false_("PULLAUTH_ECR=false", false)]
    #[case::on("PULLAUTH_ECR=ON", true)]
    fn ecr_switch(#[case] file: &str, #[case] on: bool) {
        assert_eq!(load(file, &[]).expect("valid").ecr.value, on);
    }

    #[test]
    fn prefetch_is_off_with_no_filters_by_default() {
        let config = load("", &[]).expect("valid");
        assert!(!config.prefetch.value);
        assert!(config.prefetch_services.value.is_empty());
        assert!(config.prefetch_task_definitions.value.is_empty());
    }

    #[test]
    fn prefetch_filters_are_comma_lists() {
        let config = load(
            "PULLAUTH_PREFETCH=on\nPULLAUTH_PREFETCH_SERVICES= web, ,worker \nPULLAUTH_PREFETCH_TASK_DEFINITIONS=batch:3\n",
            &[],
        )
        .expect("valid");
        assert!(config.prefetch.value);
        assert_eq!(config.prefetch_services.value, ["web", "worker"]);
        assert_eq!(config.prefetch_task_definitions.value, ["batch:3"]);
        assert!(config.prefetch_interval.is_none());
        let config = load("PULLAUTH_PREFETCH_INTERVAL=5m\n", &[]).expect("valid");
        assert_eq!(
            config.prefetch_interval.map(|s| s.value),
            Some(Duration::from_secs(300))
        );
        let e = load("PULLAUTH_PREFETCH_INTERVAL=0s\n", &[]).expect_err("zero");
        assert!(e.to_string().contains("PULLAUTH_PREFETCH_INTERVAL"), "{e}");
        assert!(config.prefetch_startup_spread.is_none());
        let config = load("PULLAUTH_PREFETCH_STARTUP_SPREAD=67m\n", &[]).expect("valid");
        assert_eq!(
            config.prefetch_startup_spread.map(|s| s.value),
            Some(Duration::from_secs(67 * 60))
        );
        let e = load("PULLAUTH_PREFETCH_STARTUP_SPREAD=soon\n", &[]).expect_err("not a duration");
        assert!(
            e.to_string().contains("PULLAUTH_PREFETCH_STARTUP_SPREAD"),
            "{e}"
        );
        let e = load("PULLAUTH_PREFETCH=sometimes", &[]).expect_err("invalid");
        assert!(e.to_string().contains("PULLAUTH_PREFETCH"), "{e}");
    }

    #[test]
    fn aws_timeout_is_a_positive_go_duration() {
        let config = load("", &[]).expect("valid");
        assert_eq!(config.aws_timeout.value, DEFAULT_AWS_TIMEOUT);
        assert_eq!(config.aws_timeout.origin, Origin::Default);
        let config = load("PULLAUTH_AWS_TIMEOUT=1.5s\n", &[]).expect("valid");
        assert_eq!(config.aws_timeout.value, Duration::from_millis(1500));
        for bad in ["0s", "-5s", "20"] {
            let e = load(&format!("PULLAUTH_AWS_TIMEOUT={bad}\n"), &[]).expect_err(bad);
            assert!(e.to_string().contains("PULLAUTH_AWS_TIMEOUT"), "{e}");
        }
    }

    #[test]
    fn ecr_switch_rejects_other_values() {
        let e = load("PULLAUTH_ECR=maybe", &[]).expect_err("invalid");
        assert!(e.to_string().contains("PULLAUTH_ECR"), "{e}");
    }

    #[test]
    fn env_file_overrides_process_environment() {
        let config = load(
            "ECS_CLUSTER=from-file\n",
            &[("ECS_CLUSTER", "from-process"), ("ECS_DATADIR", "/data")],
        )
        .expect("valid");
        assert_eq!(config.cluster.value, "from-file");
        assert_eq!(
            config.cluster.origin,
            Origin::EnvFile {
                path: FILE.into(),
                line: 1
            }
        );
        let data_dir = config.data_dir.expect("set");
        assert_eq!(data_dir.value, PathBuf::from("/data"));
        assert_eq!(data_dir.origin, Origin::Process);
    }

    #[test]
    fn crlf_does_not_break_the_auth_type() {
        // The ECS agent once rejected "docker\r" from a file written on Windows.
        let config = load(
            "ECS_ENGINE_AUTH_TYPE=docker\r\nECS_ENGINE_AUTH_DATA={}\r\n",
            &[],
        )
        .expect("valid");
        assert_eq!(
            config.engine_auth.expect("set").kind.value,
            AuthType::Docker
        );
    }

    #[test]
    fn empty_value_counts_as_unset() {
        let config = load("ECS_ENGINE_AUTH_TYPE=\nECS_ENGINE_AUTH_DATA=\n", &[]).expect("valid");
        assert!(config.engine_auth.is_none());
    }

    #[rstest]
    #[case::type_without_data("ECS_ENGINE_AUTH_TYPE=docker", "ECS_ENGINE_AUTH_DATA is not")]
    #[case::data_without_type("ECS_ENGINE_AUTH_DATA={}", "ECS_ENGINE_AUTH_TYPE is not")]
    #[case::unknown_type(
        "ECS_ENGINE_AUTH_TYPE=basic\nECS_ENGINE_AUTH_DATA={}",
        "use \"docker\" or \"dockercfg\""
    )]
    #[case::type_is_case_sensitive_like_the_agent(
        "ECS_ENGINE_AUTH_TYPE=Docker\nECS_ENGINE_AUTH_DATA={}",
        "is not a supported type"
    )]
    #[case::bad_behavior(
        "ECS_IMAGE_PULL_BEHAVIOR=sometimes",
        "default, always, once, prefer-cached"
    )]
    #[case::bad_timeout("ECS_IMAGE_PULL_TIMEOUT=soon", "ECS_IMAGE_PULL_TIMEOUT")]
    #[case::zero_timeout("ECS_IMAGE_PULL_INACTIVITY_TIMEOUT=0s", "positive duration")]
    #[case::bad_log_level("ECS_LOGLEVEL=loud", "debug, info, warn, error, crit, none")]
    #[case::bad_log_format("ECS_LOG_OUTPUT_FORMAT=xml", "logfmt, json")]
    fn rejects_inconsistent_configuration(#[case] file: &str, #[case] message: &str) {
        let err = load(file, &[]).expect_err("must fail");
        let text = err.to_string();
        assert!(text.contains(message), "{text}");
        assert!(
            text.contains("/etc/ecs/ecs.config:"),
            "names the origin: {text}"
        );
    }

    /// A password that must never appear in a message.
    const CANARY: &str = "Canary7pwQz";

    fn canary_json() -> String {
        format!(r#"{{"r.io":{{"username":"u","password":"{CANARY}"}}}}"#)
    }

    fn canary_auth_json() -> String {
        // "auth" is base64 of "u:Canary7pwQz"; the raw canary is also
        // present in a field beside it, so that a quoted value shows it.
        format!(r#"{{"r.io":{{"auth":"dTpDYW5hcnk3cHdReg==","email":"{CANARY}@x.io"}}}}"#)
    }

    /// The mistakes operators make with the two auth variables. Each row:
    /// the env file, text the message must hold, and where it must point.
    #[rstest]
    #[case::swapped(
        format!("ECS_ENGINE_AUTH_TYPE={}\nECS_ENGINE_AUTH_DATA=docker\n", canary_json()),
        "ECS_ENGINE_AUTH_TYPE (/etc/ecs/ecs.config:1) holds JSON and \
         ECS_ENGINE_AUTH_DATA=\"docker\" (/etc/ecs/ecs.config:2) holds a type: \
         the two variables are swapped"
    )]
    #[case::swapped_dockercfg_padded(
        format!("ECS_ENGINE_AUTH_DATA= dockercfg \nECS_ENGINE_AUTH_TYPE={}\n", canary_auth_json()),
        "ECS_ENGINE_AUTH_DATA=\"dockercfg\" (/etc/ecs/ecs.config:1) holds a type"
    )]
    #[case::json_in_type_without_data(
        format!("ECS_ENGINE_AUTH_TYPE={}\n", canary_json()),
        "ECS_ENGINE_AUTH_TYPE (/etc/ecs/ecs.config:1) looks like the JSON of \
         ECS_ENGINE_AUTH_DATA: are the two variables swapped?"
    )]
    #[case::json_in_type_beside_json_data(
        format!("ECS_ENGINE_AUTH_TYPE={}\nECS_ENGINE_AUTH_DATA={}\n", canary_json(), canary_json()),
        "looks like the JSON of ECS_ENGINE_AUTH_DATA: are the two variables swapped?"
    )]
    #[case::one_line_paste_dockercfg(
        format!("ECS_ENGINE_AUTH_TYPE=dockercfg ECS_ENGINE_AUTH_DATA={}\n", canary_auth_json()),
        "ECS_ENGINE_AUTH_TYPE (/etc/ecs/ecs.config:1) holds its type followed by \
         ECS_ENGINE_AUTH_DATA=...: ECS_ENGINE_AUTH_TYPE and ECS_ENGINE_AUTH_DATA must be on \
         separate lines; put each KEY=VALUE on a line of its own"
    )]
    #[case::one_line_paste_docker_tab_beside_data(
        format!(
            "ECS_ENGINE_AUTH_DATA={{}}\nECS_ENGINE_AUTH_TYPE=docker\tECS_ENGINE_AUTH_DATA={}\n",
            canary_json()
        ),
        "(/etc/ecs/ecs.config:2) holds its type followed by ECS_ENGINE_AUTH_DATA=...: \
         ECS_ENGINE_AUTH_TYPE and ECS_ENGINE_AUTH_DATA must be on separate lines"
    )]
    #[case::long_unknown_type(
        format!("ECS_ENGINE_AUTH_TYPE=basic:{CANARY}\nECS_ENGINE_AUTH_DATA={{}}\n"),
        "ECS_ENGINE_AUTH_TYPE (/etc/ecs/ecs.config:1) is not a supported type \
         (17 characters, not shown); use \"docker\" or \"dockercfg\""
    )]
    #[case::other_variable_pasted_after_type(
        format!("ECS_ENGINE_AUTH_TYPE=docker ECS_ENGINE_AUTH_PASSWORD={CANARY}\n"),
        "is not a supported type (43 characters, not shown)"
    )]
    #[case::short_unknown_type(
        "ECS_ENGINE_AUTH_TYPE=basic\nECS_ENGINE_AUTH_DATA={}\n".to_owned(),
        "ECS_ENGINE_AUTH_TYPE=\"basic\" (/etc/ecs/ecs.config:1) is not a supported type; \
         use \"docker\" or \"dockercfg\""
    )]
    #[case::data_is_type_without_type(
        "ECS_ENGINE_AUTH_DATA=docker\n".to_owned(),
        "ECS_ENGINE_AUTH_DATA=\"docker\" (/etc/ecs/ecs.config:1) is a type, not the JSON of \
         registry credentials: are ECS_ENGINE_AUTH_TYPE and ECS_ENGINE_AUTH_DATA swapped?"
    )]
    #[case::data_dir_with_auth_data_pasted_after(
        format!("ECS_DATADIR=/var/lib/ecs ECS_ENGINE_AUTH_DATA={}\n", canary_json()),
        "ECS_DATADIR (/etc/ecs/ecs.config:1) holds ECS_ENGINE_AUTH_DATA=... after its value: \
         a second variable on the same line; put each KEY=VALUE on a line of its own"
    )]
    #[case::cluster_with_auth_data_pasted_after(
        format!("ECS_CLUSTER=prod\tECS_ENGINE_AUTH_DATA={}\n", canary_json()),
        "ECS_CLUSTER (/etc/ecs/ecs.config:1) holds ECS_ENGINE_AUTH_DATA=... after its value"
    )]
    #[case::cluster_with_an_unknown_name_pasted_after(
        format!("ECS_CLUSTER=prod REGISTRY_PASSWORD={CANARY}\n"),
        "ECS_CLUSTER (/etc/ecs/ecs.config:1) holds another KEY=... after its value"
    )]
    fn auth_variable_mistakes_are_named_without_the_value(
        #[case] file: String,
        #[case] message: &str,
    ) {
        let err = load(&file, &[]).expect_err("must fail");
        let shown = format!("{err} {err:?}");
        assert!(err.to_string().contains(message), "{err}");
        assert!(!shown.contains(CANARY), "{shown}");
        assert!(!shown.contains("dTpDYW5hcnk3cHdReg"), "{shown}");
    }

    #[test]
    fn config_file_path_with_a_variable_pasted_after_is_refused_before_it_is_read() {
        let file = format!(
            "ECS_AGENT_CONFIG_FILE_PATH=/etc/ecs/x.json ECS_ENGINE_AUTH_DATA={}\n",
            canary_json()
        );
        let env_file = EnvFile::parse(&file, Path::new(FILE)).expect("env file parses");
        let err = Sources::from_parts(Some(env_file), []).expect_err("must fail");
        let shown = format!("{err} {err:?}");
        assert!(
            err.to_string().starts_with(
                "ECS_AGENT_CONFIG_FILE_PATH (/etc/ecs/ecs.config:1) holds ECS_ENGINE_AUTH_DATA=..."
            ),
            "{err}"
        );
        assert!(!shown.contains(CANARY), "{shown}");
    }

    #[rstest]
    #[case::plain("/var/lib/ecs/data", None)]
    #[case::spaces_without_assignment("/srv/my data", None)]
    #[case::equals_inside_a_word("/srv/a=b", None)]
    #[case::known("x ECS_ENGINE_AUTH_DATA={}", Some(Some("ECS_ENGINE_AUTH_DATA")))]
    #[case::aws("x AWS_SECRET_ACCESS_KEY=abc", Some(Some("AWS_SECRET_ACCESS_KEY")))]
    #[case::unknown_name_not_shown("x HUNTER2=pw", Some(None))]
    #[case::lowercase_is_not_a_variable("x key=value", None)]
    fn pasted_assignments_are_found(#[case] value: &str, #[case] found: Option<Option<&str>>) {
        assert_eq!(
            pasted_assignment(value),
            found.map(|name| name.map(str::to_owned))
        );
    }

    #[rstest]
    #[case::swapped(AUTH_TYPE, canary_json(), AUTH_DATA, "docker", "are swapped")]
    #[case::one_line(
        AUTH_TYPE,
        format!("dockercfg ECS_ENGINE_AUTH_DATA={}", canary_auth_json()),
        CLUSTER,
        "x",
        "(process environment) holds its type followed by ECS_ENGINE_AUTH_DATA=...: \
         ECS_ENGINE_AUTH_TYPE and ECS_ENGINE_AUTH_DATA must be on separate lines (separate variables)"
    )]
    fn auth_variable_mistakes_in_the_process_environment(
        #[case] first: &str,
        #[case] value: String,
        #[case] second: &str,
        #[case] second_value: &str,
        #[case] message: &str,
    ) {
        let err = load("", &[(first, &value), (second, second_value)]).expect_err("must fail");
        let shown = format!("{err} {err:?}");
        assert!(err.to_string().contains(message), "{err}");
        assert!(!shown.contains(CANARY), "{shown}");
    }

    /// Values that look like a mistake but are not one.
    #[rstest]
    #[case::docker_padded(
        "ECS_ENGINE_AUTH_TYPE= docker \nECS_ENGINE_AUTH_DATA={}\n",
        AuthType::Docker
    )]
    #[case::dockercfg_quoted(
        "ECS_ENGINE_AUTH_TYPE=\"dockercfg\"\nECS_ENGINE_AUTH_DATA={}\n",
        AuthType::Dockercfg
    )]
    #[case::data_mentions_a_type(
        "ECS_ENGINE_AUTH_TYPE=docker\nECS_ENGINE_AUTH_DATA={\"docker\":{}}\n",
        AuthType::Docker
    )]
    fn accepts_auth_variables_that_only_look_odd(#[case] file: &str, #[case] kind: AuthType) {
        let config = load(file, &[]).expect("valid");
        assert_eq!(config.engine_auth.expect("set").kind.value, kind);
    }

    /// The JSON (or a whole line) pasted into a variable that expects a
    /// word or a duration: the message describes the value, never shows it.
    #[rstest]
    #[case::json_in_pull_behavior(
        PULL_BEHAVIOR,
        canary_json(),
        "ECS_IMAGE_PULL_BEHAVIOR (/etc/ecs/ecs.config:1) is not valid (50 characters, not shown); \
         expected default, always, once, prefer-cached; the value looks like JSON, as \
         ECS_ENGINE_AUTH_DATA holds: is it set on the wrong variable?"
    )]
    #[case::json_in_timeout(
        PULL_TIMEOUT,
        canary_json(),
        "ECS_IMAGE_PULL_TIMEOUT (/etc/ecs/ecs.config:1) is not valid (50 characters, not shown); expected a positive duration"
    )]
    #[case::json_in_inactivity_timeout(
        PULL_INACTIVITY_TIMEOUT,
        canary_auth_json(),
        "looks like JSON"
    )]
    #[case::json_in_log_level(
        LOG_LEVEL,
        canary_json(),
        "ECS_LOGLEVEL (/etc/ecs/ecs.config:1) is not valid (50 characters, not shown)"
    )]
    #[case::json_in_log_format(LOG_FORMAT, canary_json(), "looks like JSON")]
    #[case::line_in_log_level(LOG_LEVEL, format!("debug ECS_ENGINE_AUTH_DATA={}", canary_json()), "(77 characters, not shown); expected debug")]
    #[case::secret_with_colon_in_timeout(PULL_TIMEOUT, format!("u:{CANARY}"), "(13 characters, not shown)")]
    fn pasted_values_are_not_quoted(
        #[case] var: &str,
        #[case] value: String,
        #[case] message: &str,
    ) {
        let err = load(&format!("{var}={value}\n"), &[]).expect_err("must fail");
        let shown = format!("{err} {err:?}");
        assert!(err.to_string().contains(message), "{err}");
        assert!(!shown.contains(CANARY), "{shown}");
        assert!(
            !shown.contains("looks like JSON") || value.starts_with('{'),
            "{shown}"
        );
    }

    /// A plain word that is simply wrong is quoted, so the operator sees it.
    #[rstest]
    #[case::behavior(
        PULL_BEHAVIOR,
        "sometimes",
        "ECS_IMAGE_PULL_BEHAVIOR=\"sometimes\" (/etc/ecs/ecs.config:1) is not valid; expected default"
    )]
    #[case::duration(
        PULL_TIMEOUT,
        "soon",
        "ECS_IMAGE_PULL_TIMEOUT=\"soon\" (/etc/ecs/ecs.config:1) is not valid; expected a positive duration"
    )]
    #[case::zero(
        PULL_INACTIVITY_TIMEOUT,
        "0s",
        "ECS_IMAGE_PULL_INACTIVITY_TIMEOUT=\"0s\""
    )]
    #[case::log_level(LOG_LEVEL, "loud", "ECS_LOGLEVEL=\"loud\"")]
    fn plain_wrong_words_are_quoted(#[case] var: &str, #[case] value: &str, #[case] message: &str) {
        let err = load(&format!("{var}={value}\n"), &[]).expect_err("must fail");
        assert!(err.to_string().contains(message), "{err}");
        assert!(!err.to_string().contains("not shown"), "{err}");
    }

    #[rstest]
    #[case::seconds("90s", 90)]
    #[case::minutes("1m", 60)]
    #[case::hours("2h", 7200)]
    #[case::compound("1h30m", 5400)]
    #[case::fraction("1.5h", 5400)]
    #[case::plus_sign("+90s", 90)]
    #[case::micro_sign("90000000µs", 90)]
    fn reads_go_durations(#[case] text: &str, #[case] seconds: u64) {
        let config = load(&format!("ECS_IMAGE_PULL_TIMEOUT={text}"), &[]).expect("valid");
        assert_eq!(config.pull_timeout.value, Duration::from_secs(seconds));
    }

    /// The bug this pins: a reload silently ignored changes it cannot apply.
    #[test]
    fn a_reload_names_every_changed_variable_that_needs_a_restart() {
        let before = load("ECS_CLUSTER=a\nECS_IMAGE_PULL_TIMEOUT=1m\n", &[]).expect("before");
        let same = load("ECS_CLUSTER=a\nECS_IMAGE_PULL_TIMEOUT=5m\n", &[]).expect("same");
        assert!(
            before.needs_restart(&same).is_empty(),
            "pull settings apply"
        );
        let after = load(
            "ECS_CLUSTER=b\nECS_DATADIR=/var/lib/x\nECS_LOGLEVEL=debug\n\
             ECS_LOG_OUTPUT_FORMAT=json\nECS_ENGINE_TASK_CLEANUP_WAIT_DURATION=1h\n\
             PULLAUTH_ECR=off\n",
            &[],
        )
        .expect("after");
        assert_eq!(
            before.needs_restart(&after),
            [
                DATA_DIR,
                CLUSTER,
                TASK_CLEANUP_WAIT,
                LOG_LEVEL,
                LOG_FORMAT,
                ECR
            ]
        );
    }

    /// The bug this pins: `2days` and `1 h` were accepted (humantime's
    /// grammar), though Go's `time.ParseDuration`, and so the ECS agent,
    /// refuses them.
    #[rstest]
    #[case::days("2days", "expected a positive duration in Go's syntax")]
    #[case::space("1 h", "expected a positive duration in Go's syntax")]
    #[case::no_unit("90", "expected a positive duration in Go's syntax")]
    #[case::negative("-5m", "a negative one is Go syntax but no time limit")]
    #[case::negative_zero("-0", "expected a positive duration")]
    fn refuses_what_go_refuses_and_what_no_limit_can_be(#[case] text: &str, #[case] needle: &str) {
        let err = load(&format!("ECS_IMAGE_PULL_TIMEOUT={text}"), &[]).expect_err("refused");
        let message = err.to_string();
        assert!(message.contains("ECS_IMAGE_PULL_TIMEOUT"), "{message}");
        assert!(message.contains(needle), "{message}");
    }

    #[test]
    fn auth_data_error_origin_does_not_include_the_value() {
        let err = load(
            "ECS_ENGINE_AUTH_DATA={\"r.io\":{\"password\":\"hunter2\"}}",
            &[],
        )
        .expect_err("must fail");
        assert!(!err.to_string().contains("hunter2"));
    }

    fn write_json(contents: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        std::fs::write(&path, contents).expect("write");
        (dir, path)
    }

    #[test]
    fn config_file_fills_what_env_leaves_unset() {
        let (_dir, path) = write_json(
            r#"{"Cluster":"json-cluster","EngineAuthType":"dockercfg",
                "EngineAuthData":{"r.io":{"auth":"dTpw"}},"DataDir":"/json"}"#,
        );
        let path_s = path.to_str().expect("utf8").to_owned();
        let config = load(
            "ECS_DATADIR=/file",
            &[("ECS_AGENT_CONFIG_FILE_PATH", path_s.as_str())],
        )
        .expect("valid");
        assert_eq!(config.cluster.value, "json-cluster");
        assert_eq!(
            config.cluster.origin,
            Origin::ConfigFile { path: path.clone() }
        );
        assert_eq!(config.data_dir.expect("set").value, PathBuf::from("/file"));
        let auth = config.engine_auth.expect("set");
        assert_eq!(auth.kind.value, AuthType::Dockercfg);
        let data: serde_json::Value =
            serde_json::from_str(auth.data.expose_secret()).expect("data is JSON");
        assert_eq!(data["r.io"]["auth"], "dTpw");
    }

    #[rstest]
    #[case::syntax("{\"Cluster\": \"secret-value", "line 1")]
    #[case::not_object("[1,2]", "not a valid JSON object")]
    #[case::wrong_field_type("{\"Cluster\": 3}", "\"Cluster\" must be a string")]
    fn config_file_errors_name_the_file(#[case] contents: &str, #[case] message: &str) {
        let (_dir, path) = write_json(contents);
        let path_s = path.to_str().expect("utf8").to_owned();
        let err = Sources::from_parts(
            None,
            [("ECS_AGENT_CONFIG_FILE_PATH".to_owned(), path_s.clone())],
        )
        .expect_err("must fail");
        let text = err.to_string();
        assert!(text.contains(message), "{text}");
        assert!(text.contains(&path_s), "{text}");
        assert!(!text.contains("secret-value"), "{text}");
    }

    #[test]
    fn task_cleanup_wait_defaults_to_three_hours_and_parses_go_durations() {
        let config = load("", &[]).expect("valid");
        assert_eq!(config.task_cleanup_wait.value, DEFAULT_TASK_CLEANUP_WAIT);
        assert_eq!(config.task_cleanup_wait.origin, Origin::Default);
        let config = load("ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION=1h30m", &[]).expect("valid");
        assert_eq!(config.task_cleanup_wait.value, Duration::from_secs(5400));
    }

    /// The bug this pins: pullauth refused (exit 2) an
    /// `ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION` the ECS agent accepts with a
    /// warning. It is the ECS agent's variable: the value it would ignore is
    /// a warning here too, and its default applies.
    #[rstest]
    #[case::zero("0s")]
    #[case::below_a_second("500ms")]
    #[case::negative("-1h")]
    #[case::not_go("3 hours")]
    fn task_cleanup_wait_the_ecs_agent_ignores_is_a_warning(#[case] value: &str) {
        let config = load(
            &format!("ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION={value}\n"),
            &[],
        )
        .expect("valid");
        assert_eq!(config.task_cleanup_wait.value, DEFAULT_TASK_CLEANUP_WAIT);
        assert_eq!(config.task_cleanup_wait.origin, Origin::Default);
        let ignored = &config.ecs_agent.ignored;
        assert_eq!(ignored.len(), 1, "{ignored:?}");
        assert_eq!(ignored[0].var, TASK_CLEANUP_WAIT);
    }
}
