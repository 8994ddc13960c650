//! Prometheus metrics. Labels are error classes only: no image, key or
//! user names, so nothing here can carry a secret or grow without bound.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Every metric the agent exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub pulls_started: Counter,
    pub pulls_succeeded: Counter,
    pub pulls_failed: Family<Vec<(String, String)>, Counter>,
    /// Requests that joined a pull already in flight instead of starting one.
    pub pulls_shared: Counter,
    pub pull_retries: Counter,
    pub pull_duration: Histogram,
    pub registry_keys: Gauge,
    pub config_reloads: Counter,
    pub config_reload_failures: Counter,
    pub tasks_submitted: Counter,
    /// Polls of the cluster's services by the follower.
    pub prefetch_polls: Counter,
    /// Polls that could not read the services, by AWS error class.
    pub prefetch_poll_failures: Family<Vec<(String, String)>, Counter>,
    /// Polls that ECS throttled (after the SDK's retries).
    pub prefetch_throttles: Counter,
    /// Prefetch pulls started by the follower (each also counts as a pull).
    pub prefetch_pulls: Counter,
    /// Prefetch pulls that failed (credentials or the pull itself).
    pub prefetch_pull_failures: Counter,
    /// Prefetched images found gone from the engine (removed by someone
    /// else: the ECS agent's cleanup, a prune).
    pub prefetch_images_removed: Counter,
    /// Prefetched images pullauth removed because nothing names them.
    pub prefetch_images_cleaned: Counter,
    /// `serve --follow-plan`: seconds since the plan followed was last
    /// confirmed by a publisher (grows while the publisher is gone).
    pub prefetch_plan_age_seconds: Gauge,
    /// `serve --follow-cluster --publish`: publishes by outcome (`written`,
    /// `confirmed`, `unchanged`, `newer-plan-kept`, `failed`).
    pub prefetch_plan_publishes: Family<Vec<(String, String)>, Counter>,
    /// Connections open now, by server (`introspection`, `control`).
    connections_open: Family<Vec<(String, String)>, Gauge>,
    /// Most connections open at once since start, by server: at most the
    /// limit, by construction.
    connections_open_max: Family<Vec<(String, String)>, Gauge>,
    /// The cap on open connections, by server.
    connection_limit: Family<Vec<(String, String)>, Gauge>,
    /// Idle connections closed to make room for a new one, by server.
    connections_evicted: Family<Vec<(String, String)>, Counter>,
}

/// The connection figures of one server, as [`Metrics::connections`] hands
/// them to it.
#[derive(Debug, Clone)]
pub struct ConnectionMetrics {
    /// Connections open now.
    pub open: Gauge,
    /// Most connections open at once since start.
    pub open_max: Gauge,
    /// The cap.
    pub limit: Gauge,
    /// Idle connections closed to make room.
    pub evicted: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("pullauth");
        let pulls_started = Counter::default();
        let pulls_succeeded = Counter::default();
        let pulls_failed = Family::<Vec<(String, String)>, Counter>::default();
        let pulls_shared = Counter::default();
        let pull_retries = Counter::default();
        // 50 ms to ~27 min.
        let pull_duration = Histogram::new(exponential_buckets(0.05, 2.0, 16));
        let registry_keys = Gauge::default();
        let config_reloads = Counter::default();
        let config_reload_failures = Counter::default();
        let tasks_submitted = Counter::default();
        let prefetch_polls = Counter::default();
        let prefetch_poll_failures = Family::<Vec<(String, String)>, Counter>::default();
        let prefetch_throttles = Counter::default();
        let prefetch_pulls = Counter::default();
        let prefetch_pull_failures = Counter::default();
        let prefetch_images_removed = Counter::default();
        let prefetch_images_cleaned = Counter::default();
        let prefetch_plan_age_seconds = Gauge::default();
        let prefetch_plan_publishes = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "prefetch_plan_age_seconds",
            "Seconds since the followed cluster plan was last confirmed by its publisher",
            prefetch_plan_age_seconds.clone(),
        );
        registry.register(
            "prefetch_plan_publishes",
            "Cluster plan publishes, by outcome",
            prefetch_plan_publishes.clone(),
        );
        let connections_open = Family::<Vec<(String, String)>, Gauge>::default();
        let connections_open_max = Family::<Vec<(String, String)>, Gauge>::default();
        let connection_limit = Family::<Vec<(String, String)>, Gauge>::default();
        let connections_evicted = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "connections_open",
            "Connections open now, by server",
            connections_open.clone(),
        );
        registry.register(
            "connections_open_max",
            "Most connections open at once since start, by server",
            connections_open_max.clone(),
        );
        registry.register(
            "connection_limit",
            "Most connections a server holds open at once",
            connection_limit.clone(),
        );
        registry.register(
            "connections_evicted",
            "Idle connections closed to make room for a new client at the limit, by server",
            connections_evicted.clone(),
        );
        registry.register(
            "prefetch_polls",
            "Polls of the cluster's ECS services",
            prefetch_polls.clone(),
        );
        registry.register(
            "prefetch_poll_failures",
            "Polls that could not read the cluster's services, by class",
            prefetch_poll_failures.clone(),
        );
        registry.register(
            "prefetch_throttles",
            "Polls throttled by ECS",
            prefetch_throttles.clone(),
        );
        registry.register(
            "prefetch_pulls",
            "Prefetch pulls started for the cluster's services",
            prefetch_pulls.clone(),
        );
        registry.register(
            "prefetch_pull_failures",
            "Prefetch pulls that failed",
            prefetch_pull_failures.clone(),
        );
        registry.register(
            "prefetch_images_removed",
            "Prefetched images found removed from the engine by someone else",
            prefetch_images_removed.clone(),
        );
        registry.register(
            "prefetch_images_cleaned",
            "Prefetched images pullauth removed because no followed service names them any more",
            prefetch_images_cleaned.clone(),
        );
        for class in pullauth_aws::ErrorClass::ALL {
            drop(
                prefetch_poll_failures
                    .get_or_create(&vec![("class".to_owned(), class.name().to_owned())]),
            );
        }
        registry.register(
            "pulls_started",
            "Image pulls sent to the engine",
            pulls_started.clone(),
        );
        registry.register(
            "pulls_succeeded",
            "Image pulls that finished",
            pulls_succeeded.clone(),
        );
        registry.register(
            "pulls_failed",
            "Image pulls that failed, by class",
            pulls_failed.clone(),
        );
        registry.register(
            "pulls_shared",
            "Pull requests that joined a pull already in flight",
            pulls_shared.clone(),
        );
        registry.register(
            "pull_retries",
            "Pull attempts retried after a transient failure",
            pull_retries.clone(),
        );
        registry.register(
            "pull_duration_seconds",
            "Time an image pull took",
            pull_duration.clone(),
        );
        registry.register(
            "registry_keys",
            "Registry keys configured",
            registry_keys.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads applied",
            config_reloads.clone(),
        );
        registry.register(
            "config_reload_failures",
            "Configuration reloads rejected (old configuration kept)",
            config_reload_failures.clone(),
        );
        registry.register(
            "tasks_submitted",
            "Tasks accepted on the control API",
            tasks_submitted.clone(),
        );
        // Export every class at zero so that alerts see the series from the start.
        for class in pullauth_docker::PullError::CLASSES {
            drop(pulls_failed.get_or_create(&vec![("class".to_owned(), class.to_owned())]));
        }
        Metrics {
            registry,
            pulls_started,
            pulls_succeeded,
            pulls_failed,
            pulls_shared,
            pull_retries,
            pull_duration,
            registry_keys,
            config_reloads,
            config_reload_failures,
            tasks_submitted,
            prefetch_polls,
            prefetch_poll_failures,
            prefetch_throttles,
            prefetch_pulls,
            prefetch_pull_failures,
            prefetch_images_removed,
            prefetch_images_cleaned,
            prefetch_plan_age_seconds,
            prefetch_plan_publishes,
            connections_open,
            connections_open_max,
            connection_limit,
            connections_evicted,
        }
    }

    /// The connection figures of the server named `server` (a fixed name,
    /// never a client's address), exported from now on.
    pub fn connections(&self, server: &str) -> ConnectionMetrics {
        let label = vec![("server".to_owned(), server.to_owned())];
        ConnectionMetrics {
            open: self.connections_open.get_or_create_owned(&label),
            open_max: self.connections_open_max.get_or_create_owned(&label),
            limit: self.connection_limit.get_or_create_owned(&label),
            evicted: self.connections_evicted.get_or_create_owned(&label),
        }
    }

    /// Counts a publish of the cluster plan under its outcome.
    pub fn plan_published(&self, outcome: &str) {
        self.prefetch_plan_publishes
            .get_or_create(&vec![("outcome".to_owned(), outcome.to_owned())])
            .inc();
    }

    /// Counts a poll that could not read the cluster under its class.
    pub fn prefetch_poll_failed(&self, class: &str) {
        self.prefetch_poll_failures
            .get_or_create(&vec![("class".to_owned(), class.to_owned())])
            .inc();
    }

    /// Counts a failed pull under its class.
    pub fn failed(&self, class: &str) {
        self.pulls_failed
            .get_or_create(&vec![("class".to_owned(), class.to_owned())])
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// [`Metrics::render_with_aws`] in the classic Prometheus text format
    /// (`text/plain; version=0.0.4`), for scrapers and tools that do not
    /// ask for OpenMetrics (`promtool check metrics`, older Prometheus).
    pub fn render_classic_with_aws(&self, aws: Option<&pullauth_aws::CountersSnapshot>) -> String {
        openmetrics_to_classic(&self.render_with_aws(aws))
    }

    /// [`Metrics::render`] plus the AWS counters (all zero while no pull
    /// has needed AWS): counts and failure classes only, never a value.
    pub fn render_with_aws(&self, aws: Option<&pullauth_aws::CountersSnapshot>) -> String {
        use std::fmt::Write as _;
        let text = self.render();
        let mut out = text.strip_suffix("# EOF\n").unwrap_or(&text).to_owned();
        let get = |f: fn(&pullauth_aws::CountersSnapshot) -> u64| aws.map_or(0, f);
        let counters: [(&str, &str, u64); 8] = [
            (
                "ecr_token_fetches",
                "ecr:GetAuthorizationToken calls started.",
                get(|c| c.ecr_token_fetches),
            ),
            (
                "ecr_cache_hits",
                "ECR credentials served from the cache.",
                get(|c| c.ecr_cache_hits),
            ),
            (
                "ecr_stale_served",
                "Cached ECR tokens served because their refresh failed.",
                get(|c| c.ecr_stale_served),
            ),
            (
                "role_assumptions",
                "sts:AssumeRole calls started.",
                get(|c| c.role_assumptions),
            ),
            (
                "secret_fetches",
                "secretsmanager:GetSecretValue calls started.",
                get(|c| c.secret_fetches),
            ),
            (
                "object_fetches",
                "s3:GetObject calls started.",
                get(|c| c.object_fetches),
            ),
            (
                "ecs_calls",
                "ECS read calls started (ListServices, DescribeServices, DescribeTaskDefinition).",
                get(|c| c.ecs_calls),
            ),
            (
                "task_definition_cache_hits",
                "Task definitions served from the cache by ARN.",
                get(|c| c.task_definition_cache_hits),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP pullauth_aws_{name} {help}");
            let _ = writeln!(out, "# TYPE pullauth_aws_{name} counter");
            let _ = writeln!(out, "pullauth_aws_{name}_total {value}");
        }
        let _ = writeln!(
            out,
            "# HELP pullauth_aws_failures Failed AWS calls, by class."
        );
        let _ = writeln!(out, "# TYPE pullauth_aws_failures counter");
        for class in pullauth_aws::ErrorClass::ALL {
            let value = aws.map_or(0, |c| c.failures_of(class));
            let _ = writeln!(
                out,
                "pullauth_aws_failures_total{{class=\"{}\"}} {value}",
                class.name()
            );
        }
        out.push_str("# EOF\n");
        out
    }
}

/// The media type of OpenMetrics text, as [`Metrics::render_with_aws`]
/// writes it.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The media type of the classic text format.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Rewrites OpenMetrics text (as prometheus-client writes it) in the classic
/// format. They differ in what the metadata names: OpenMetrics names a
/// counter's family (`# TYPE x counter`, samples `x_total`), the classic
/// format the sample (`# TYPE x_total counter`), and a classic parser
/// takes the family lines for another metric, leaving the samples untyped
/// and without help. Also: no `# UNIT`, no `# EOF`, no `_created`
/// samples, `info` and `stateset` as gauges, `unknown` as `untyped`.
pub fn openmetrics_to_classic(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len());
    let mut help: Option<(&str, &str)> = None;
    let mut counter: Option<&str> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (sample, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "gauge" | "histogram" | "summary" => (name.to_string(), kind),
                "stateset" => (name.to_string(), "gauge"),
                _ => (name.to_string(), "untyped"),
            };
            counter = (kind == "counter").then_some(name);
            if let Some((_, text)) = help.take().filter(|(n, _)| *n == name) {
                let _ = writeln!(out, "# HELP {sample} {text}");
            }
            let _ = writeln!(out, "# TYPE {sample} {kind}");
            continue;
        }
        if line.starts_with("# ") {
            // # UNIT, # EOF.
            continue;
        }
        if let Some(family) = counter
            && line
                .strip_prefix(family)
                .is_some_and(|rest| rest.starts_with("_created"))
        {
            continue;
        }
        // A sample: drop an exemplar (` # {...} value`), if any.
        let sample = line.split_once(" # ").map_or(line, |(sample, _)| sample);
        out.push_str(sample);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_classes_are_exported_before_any_failure() {
        let text = Metrics::new().render();
        for class in pullauth_docker::PullError::CLASSES {
            let series = format!("pullauth_pulls_failed_total{{class=\"{class}\"}} 0");
            assert!(
                text.lines().any(|l| l == series),
                "{series} missing from:\n{text}"
            );
        }
    }

    #[test]
    fn aws_counters_are_exported_before_aws_is_used() {
        let text = Metrics::new().render_with_aws(None);
        for series in [
            "pullauth_aws_ecr_token_fetches_total 0",
            "pullauth_aws_ecr_cache_hits_total 0",
            "pullauth_aws_secret_fetches_total 0",
            "pullauth_aws_failures_total{class=\"access_denied\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == series),
                "{series} missing from:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"));
        let classic = openmetrics_to_classic(&text);
        assert!(!classic.contains("# EOF"), "{classic}");
        assert!(
            classic.contains(
                "# HELP pullauth_pulls_started_total Image pulls sent to the engine.\n\
                 # TYPE pullauth_pulls_started_total counter\n\
                 pullauth_pulls_started_total 0\n"
            ),
            "{classic}"
        );
        assert!(
            classic.contains("# TYPE pullauth_registry_keys gauge\n"),
            "{classic}"
        );
        assert!(
            classic.contains("# TYPE pullauth_pull_duration_seconds histogram\n"),
            "{classic}"
        );
        assert_eq!(text.matches("# EOF").count(), 1);
    }

    #[test]
    fn connection_figures_are_exported_per_server() {
        let metrics = Metrics::new();
        let introspection = metrics.connections("introspection");
        let control = metrics.connections("control");
        introspection.limit.set(256);
        introspection.open.inc();
        introspection.open_max.set(1);
        control.evicted.inc();
        let classic = openmetrics_to_classic(&metrics.render_with_aws(None));
        for series in [
            "pullauth_connection_limit{server=\"introspection\"} 256",
            "pullauth_connections_open{server=\"introspection\"} 1",
            "pullauth_connections_open_max{server=\"introspection\"} 1",
            "pullauth_connections_open{server=\"control\"} 0",
            "pullauth_connections_evicted_total{server=\"control\"} 1",
            "pullauth_connections_evicted_total{server=\"introspection\"} 0",
            "# TYPE pullauth_connections_evicted_total counter",
        ] {
            assert!(
                classic.lines().any(|l| l == series),
                "{series} missing from:\n{classic}"
            );
        }
    }

    #[test]
    fn renders_every_metric() {
        let metrics = Metrics::new();
        metrics.pulls_started.inc();
        metrics.failed("auth");
        metrics.pull_duration.observe(0.2);
        let text = metrics.render();
        for name in [
            "pullauth_pulls_started_total 1",
            "pullauth_pulls_failed_total{class=\"auth\"} 1",
            "pullauth_pull_duration_seconds_bucket",
            "pullauth_registry_keys",
            "pullauth_config_reloads_total",
            "pullauth_config_reload_failures_total",
            "pullauth_pull_retries_total",
            "pullauth_pulls_succeeded_total",
            "pullauth_prefetch_polls_total 0",
            "pullauth_prefetch_poll_failures_total{class=\"throttled\"} 0",
            "pullauth_prefetch_throttles_total 0",
            "pullauth_prefetch_pulls_total 0",
            "pullauth_prefetch_images_removed_total 0",
            "pullauth_prefetch_images_cleaned_total 0",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
