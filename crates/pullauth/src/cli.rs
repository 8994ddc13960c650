//! Command-line arguments, parsed by clap and turned into validated types
//! by each command.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Image-pull authentication for ECS container instances: reads
/// ECS_ENGINE_AUTH_TYPE / ECS_ENGINE_AUTH_DATA as the ECS agent does and
/// pulls through the Docker Engine with the right registry credentials.
#[derive(Debug, Parser)]
#[command(name = "pullauth", version = crate::facts::VERSION, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration and list each registry key with its username.
    Check(ConfigArgs),
    /// Show which registry, repository, key and username apply to images;
    /// with --explain, why each configured key applies or not.
    Resolve(ResolveArgs),
    /// Pull images through the Docker Engine with the resolved credentials.
    Pull(PullArgs),
    /// Pull the images the cluster's ECS services run, each with the
    /// credentials ECS would use (repositoryCredentials with the task
    /// definition's execution role, else ecs.config keys, helpers, ECR), so
    /// that tasks placed on this instance start from cached images.
    Prefetch(PrefetchArgs),
    /// Ask each image's registry, through the engine, whether the resolved
    /// credentials may read it, without pulling it.
    Verify(VerifyArgs),
    /// Run the agent: pull images for tasks, keep state, answer introspection.
    Serve(ServeArgs),
    /// Talk to a running agent.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Produce configuration from other tools' files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Answer Docker's credential-helper protocol from ecs.config, so that
    /// `docker pull`, compose and buildx use the agent's credentials.
    ///
    /// Install it as `docker-credential-pullauth` (a symlink to pullauth) and
    /// set `"credsStore": "pullauth"` or a `credHelpers` entry in the Docker
    /// CLI's config.json; Docker then runs `docker-credential-pullauth get`
    /// with the server URL on stdin. `get` PRINTS THE REGISTRY SECRET on
    /// stdout: that is the protocol. Only host-level keys answer (the
    /// protocol passes a server URL, not a repository); `store` and `erase`
    /// refuse, since the credentials are edited in ecs.config.
    CredentialHelper(CredentialHelperArgs),
    /// Print a shell completion script to stdout.
    Completions(CompletionsArgs),
    /// Print the man page (roff) of pullauth and its subcommands to stdout.
    Man,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print ECS_ENGINE_AUTH_TYPE / ECS_ENGINE_AUTH_DATA lines made from a Docker
    /// config.json, ready to append to /etc/ecs/ecs.config.
    ///
    /// The lines go to stdout and HOLD THE REGISTRY CREDENTIALS: printing them is
    /// this command's purpose (as it is `credential-helper get`'s). Redirect them
    /// to a file only root can read (e.g. `>> /etc/ecs/ecs.config`). Nothing
    /// secret is written to stderr. Registries whose credentials a credsStore or
    /// credHelpers program keeps are left out and named on stderr.
    FromDocker(FromDockerArgs),
}

#[derive(Debug, Args)]
pub struct FromDockerArgs {
    /// The Docker config.json (default: $DOCKER_CONFIG/config.json, else
    /// ~/.docker/config.json).
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Validate the produced data as `pullauth check` would; print nothing and
    /// exit 2 if it is invalid.
    #[arg(long)]
    pub check: bool,
}

/// The operations of Docker's credential-helper protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HelperAction {
    /// Read a server URL on stdin; print {"ServerURL","Username","Secret"}.
    Get,
    /// Print `{"<server URL>": "<username>", ...}` for every host-level key.
    List,
    /// Refused (exit 1): pullauth never writes credentials.
    Store,
    /// Refused (exit 1): pullauth never removes credentials.
    Erase,
}

#[derive(Debug, Args)]
pub struct CredentialHelperArgs {
    /// An ecs.config-style file (default: $PULLAUTH_ENV_FILE, else
    /// /etc/ecs/ecs.config when it exists, else only the process
    /// environment and ECS_AGENT_CONFIG_FILE_PATH).
    #[arg(long, value_name = "FILE|s3://BUCKET/KEY")]
    pub env_file: Option<PathBuf>,
    /// The protocol operation, as Docker passes it.
    #[arg(value_enum)]
    pub action: HelperAction,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// An ecs.config-style file (KEY=VALUE lines); its values override the
    /// environment. `s3://bucket/key` reads an S3 object with the default AWS
    /// credential chain, at start and at every SIGHUP (it is not watched).
    #[arg(long, value_name = "FILE|s3://BUCKET/KEY")]
    pub env_file: Option<PathBuf>,
    /// A missing --env-file is not an error: the process environment alone is
    /// used (the container image's default, so that `docker run --env-file`
    /// without a mounted file keeps working). Not for s3:// env files.
    #[arg(long, requires = "env_file")]
    pub env_file_optional: bool,
}

impl ConfigArgs {
    /// The env file to read now: `--env-file`, unless it is optional and
    /// absent. Asked again at every reload, so a file that appears is read.
    pub fn env_file(&self) -> Option<&std::path::Path> {
        let path = self.env_file.as_deref()?;
        if self.env_file_optional && !crate::facts::is_s3(path) && !path.exists() {
            return None;
        }
        Some(path)
    }
}

#[derive(Debug, Args)]
pub struct ResolveArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// One JSON object per image on stdout.
    #[arg(long)]
    pub json: bool,
    /// For each image, list every configured key, whether it applies and why
    /// not (another host or port, namespace, wildcard depth, beaten by a more
    /// specific key), and where the keys were written.
    #[arg(long)]
    pub explain: bool,
    /// Image references; `-` reads them from stdin, one a line.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PullBehaviorArg {
    Default,
    Always,
    Once,
    PreferCached,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// When to contact the registry (default: ECS_IMAGE_PULL_BEHAVIOR, else `default`).
    #[arg(long, value_enum)]
    pub pull_behavior: Option<PullBehaviorArg>,
    /// Print nothing but errors.
    #[arg(long, short, conflicts_with = "json")]
    pub quiet: bool,
    /// One JSON object per pulled image on stdout.
    #[arg(long)]
    pub json: bool,
    /// A Secrets Manager secret (ARN or name) holding {"username","password"}
    /// for every image, as a container's repositoryCredentials does: it
    /// beats ECS_ENGINE_AUTH_DATA and ECR.
    #[arg(long, value_name = "SECRET")]
    pub repository_credentials: Option<String>,
    /// The IAM role (ARN) whose credentials fetch the secret and ECR tokens,
    /// as a task's executionRoleArn (default: the AWS default chain).
    #[arg(long, value_name = "ROLE_ARN")]
    pub execution_role: Option<String>,
    /// Image references; `-` reads them from stdin, one a line.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PrefetchArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The ECS cluster (name or ARN; default: ECS_CLUSTER, else `default`).
    #[arg(long, value_name = "CLUSTER")]
    pub cluster: Option<String>,
    /// Only these services (repeat or separate with commas; default:
    /// PULLAUTH_PREFETCH_SERVICES, else every service of the cluster).
    #[arg(long = "service", value_name = "NAME", value_delimiter = ',')]
    pub services: Vec<String>,
    /// Task definitions to prefetch too (`family` for its latest revision,
    /// `family:revision` or an ARN; default: PULLAUTH_PREFETCH_TASK_DEFINITIONS).
    /// Without --service, only these: the services are not read.
    #[arg(
        long = "task-definition",
        value_name = "FAMILY[:REVISION]",
        value_delimiter = ','
    )]
    pub task_definitions: Vec<String>,
    /// List each image and the credential source it would use; pull nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Read the cluster once and write it to S3 as the cluster plan that
    /// `prefetch --plan` and `serve --follow-plan` follow; pull nothing.
    /// Written only when it changed, never over a plan read after this one
    /// (docs/operations.md, "A shared cluster plan").
    #[arg(long, value_name = "s3://BUCKET/KEY", conflicts_with_all = ["plan", "dry_run", "services", "task_definitions"])]
    pub publish: Option<String>,
    /// Pull what the cluster plan at this S3 location says for this
    /// instance, instead of reading ECS (placement is decided here, from
    /// the plan and this instance's facts).
    #[arg(long, value_name = "s3://BUCKET/KEY")]
    pub plan: Option<String>,
    /// With --plan: how long since its publisher confirmed it a plan may be
    /// and still be called current (older: used, with a warning naming its
    /// age).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "15m",
        requires = "plan"
    )]
    pub plan_max_age: String,
    /// When to contact the registry (default: ECS_IMAGE_PULL_BEHAVIOR, else `default`).
    #[arg(long, value_enum)]
    pub pull_behavior: Option<PullBehaviorArg>,
    /// How many image pulls may run at once (as serve's; one at a time
    /// when progress bars are drawn on a terminal).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub max_concurrent_pulls: u16,
    /// Print nothing but errors.
    #[arg(long, short, conflicts_with = "json")]
    pub quiet: bool,
    /// One JSON object per image on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// One JSON object per image on stdout.
    #[arg(long)]
    pub json: bool,
    /// A Secrets Manager secret (ARN or name) holding {"username","password"}
    /// for every image, as a container's repositoryCredentials does (as for
    /// `pull`).
    #[arg(long, value_name = "SECRET")]
    pub repository_credentials: Option<String>,
    /// The IAM role (ARN) whose credentials fetch the secret and ECR tokens,
    /// as a task's executionRoleArn (as for `pull`).
    #[arg(long, value_name = "ROLE_ARN")]
    pub execution_role: Option<String>,
    /// Image references; `-` reads them from stdin, one a line.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Introspection address (read-only HTTP).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:51678")]
    pub listen: String,
    /// Control socket (default: $ECS_DATADIR/pullauth.sock, else /var/run/pullauth.sock).
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
    /// How many image pulls may run at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub max_concurrent_pulls: usize,
    /// Do not reload when --env-file or the ECS_AGENT_CONFIG_FILE_PATH file
    /// changes; only SIGHUP reloads.
    #[arg(long)]
    pub no_watch: bool,
    /// Follow the cluster's ECS services (ECS_CLUSTER) and keep their images
    /// pulled, as PULLAUTH_PREFETCH=on does; PULLAUTH_PREFETCH_SERVICES,
    /// PULLAUTH_PREFETCH_TASK_DEFINITIONS and PULLAUTH_PREFETCH_INTERVAL
    /// apply, and a reload re-reads them.
    #[arg(long, conflicts_with = "follow_plan")]
    pub follow_cluster: bool,
    /// With --follow-cluster: also write what each poll reads to S3 as the
    /// cluster plan others follow (run on one or a few instances).
    #[arg(long, value_name = "s3://BUCKET/KEY", requires = "follow_cluster")]
    pub publish: Option<String>,
    /// Follow the cluster plan a publisher keeps at this S3 location
    /// (conditional GETs every --plan-interval, jittered) instead of
    /// reading ECS; PULLAUTH_PREFETCH_SERVICES and the removal and disk
    /// settings apply as for --follow-cluster.
    #[arg(long, value_name = "s3://BUCKET/KEY")]
    pub follow_plan: Option<String>,
    /// With --follow-plan: how often to ask S3 whether the plan changed.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "30s",
        requires = "follow_plan"
    )]
    pub plan_interval: String,
    /// With --follow-plan: a plan its publisher has not confirmed for
    /// longer than this is stale (said in the log, /v1/prefetch and
    /// /metrics; still followed unless --plan-fallback).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "15m",
        requires = "follow_plan"
    )]
    pub plan_max_age: String,
    /// With --follow-plan: while the plan is stale or missing, read ECS
    /// directly (as --follow-cluster), and go back to the plan once it is
    /// current.
    #[arg(long, requires = "follow_plan")]
    pub plan_fallback: bool,
    /// How long a client of either API may take to send a request head
    /// (also the keep-alive idle timeout); slower clients are dropped.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub client_header_timeout: String,
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Submit a task definition to the agent.
    Run(TaskRunArgs),
}

#[derive(Debug, Args)]
pub struct TaskRunArgs {
    /// The configuration `serve` reads: its ECS_DATADIR locates the control socket.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// The agent's control socket (default as for `serve`: $ECS_DATADIR/pullauth.sock
    /// from --env-file or the environment, else /var/run/pullauth.sock).
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
    /// Wait until every container reaches a final state; exit 1 if the task stopped.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (e.g. 90s, 10m).
    #[arg(long, value_name = "DURATION", default_value = "2h", requires = "wait")]
    pub wait_timeout: String,
    /// Task definition JSON: {"family": ..., "containerDefinitions": [...]}; `-` for stdin.
    #[arg(value_name = "TASKDEF.json")]
    pub taskdef: PathBuf,
}
