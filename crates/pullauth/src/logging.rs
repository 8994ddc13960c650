//! Logging to stderr with tracing, as `ECS_LOGLEVEL` and
//! `ECS_LOG_OUTPUT_FORMAT` ask.

use pullauth_config::{LogFormat, LogLevel};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber. Our own crates log at `level`; libraries
/// only at warn and above, so that their debug output (HTTP requests with
/// headers) never reaches the log.
pub fn init(level: LogLevel, format: LogFormat) {
    let (ours, libraries) = levels(level);
    let filter = Targets::new()
        .with_default(libraries)
        .with_target("pullauth", ours)
        .with_target("pullauth_config", ours)
        .with_target("pullauth_resolve", ours)
        .with_target("pullauth_docker", ours)
        .with_target("pullauth_store", ours)
        .with_target("pullauth_agent", ours)
        .with_target("pullauth_aws", ours);
    // The AWS SDK prints ECR tokens at trace: its targets stay capped at
    // warn like every library, whatever ECS_LOGLEVEL says.
    let filter = pullauth_aws::SDK_LOG_TARGETS
        .iter()
        .fold(filter, |filter, target| {
            filter.with_target(*target, libraries)
        });
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Logfmt => registry
            .with(
                tracing_logfmt::builder()
                    .layer()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
}

/// The most our own crates and the libraries may log at `level`. Never
/// below debug, and libraries never below warn: the release build compiles
/// out trace events and the `log` crate's records (crates/pullauth's
/// Cargo.toml), which is only safe while this holds.
fn levels(level: LogLevel) -> (LevelFilter, LevelFilter) {
    let ours = match level {
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Error | LogLevel::Crit => LevelFilter::ERROR,
        LogLevel::None => LevelFilter::OFF,
    };
    (ours, ours.min(LevelFilter::WARN))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the release build's compile-time limits rely on: no
    /// ECS_LOGLEVEL asks for trace, or for library output below warn.
    #[test]
    fn no_level_enables_what_the_release_build_compiles_out() {
        for level in [
            LogLevel::Debug,
            LogLevel::Info,
            LogLevel::Warn,
            LogLevel::Error,
            LogLevel::Crit,
            LogLevel::None,
        ] {
            let (ours, libraries) = levels(level);
            assert!(ours <= LevelFilter::DEBUG, "{level:?}: {ours}");
            assert!(libraries <= LevelFilter::WARN, "{level:?}: {libraries}");
        }
        assert_eq!(levels(LogLevel::Debug).0, LevelFilter::DEBUG);
    }
}
