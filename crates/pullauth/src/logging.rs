//! Logging to stderr with tracing, as `ECS_LOGLEVEL` and
//! `ECS_LOG_OUTPUT_FORMAT` ask.

use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex};

use pullauth_config::{LogFormat, LogLevel};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber. Our own crates log at `level`; libraries
/// only at warn and above, so that their debug output (HTTP requests with
/// headers) never reaches the log.
pub fn init(level: LogLevel, format: LogFormat) {
    let registry = tracing_subscriber::registry().with(targets(level));
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

/// What may be logged at `level`: our crates at `level`, libraries (the
/// AWS SDK's targets among them) at warn at most.
fn targets(level: LogLevel) -> Targets {
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
    pullauth_aws::SDK_LOG_TARGETS
        .iter()
        .fold(filter, |filter, target| {
            filter.with_target(*target, libraries)
        })
}

/// Events logged before [`init`] can run: the start-up read of an S3 env
/// file, whose own `ECS_LOGLEVEL` and `ECS_LOG_OUTPUT_FORMAT` say how to
/// log. They are held in memory (as a debug level would let them through)
/// and logged by [`HeldBack::replay`] once [`init`] has run, each at its
/// own level, so that they show as every other line does.
#[derive(Debug, Clone, Default)]
pub struct HeldBack {
    events: Arc<Mutex<Vec<Held>>>,
}

/// One held event: its level, target, message and fields as text (the
/// fields an event would log anyway: never a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    level: Level,
    target: String,
    text: String,
}

impl HeldBack {
    /// Runs `work` with this thread's events held here (and those of
    /// threads that take over this thread's dispatcher, as the S3 fetch's
    /// does).
    pub fn during<T>(&self, work: impl FnOnce() -> T) -> T {
        let subscriber = tracing_subscriber::registry()
            .with(targets(LogLevel::Debug))
            .with(Hold {
                events: Arc::clone(&self.events),
            });
        tracing::subscriber::with_default(subscriber, work)
    }

    /// Logs every held event through the current subscriber, at its level,
    /// naming the target it was logged at.
    pub fn replay(&self) {
        let held = std::mem::take(&mut *self.events.lock().unwrap_or_else(|p| p.into_inner()));
        for Held {
            level,
            target,
            text,
        } in held
        {
            match level {
                Level::ERROR => tracing::error!(from = %target, "{text}"),
                Level::WARN => tracing::warn!(from = %target, "{text}"),
                Level::INFO => tracing::info!(from = %target, "{text}"),
                Level::DEBUG => tracing::debug!(from = %target, "{text}"),
                _ => {}
            }
        }
    }
}

/// The layer that keeps events for [`HeldBack`].
struct Hold {
    events: Arc<Mutex<Vec<Held>>>,
}

impl<S: Subscriber> Layer<S> for Hold {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut text = Text::default();
        event.record(&mut text);
        let held = Held {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            text: text.message + &text.fields,
        };
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(held);
    }
}

/// An event's message, and ` name=value` for each other field.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
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

    fn held(back: &HeldBack) -> Vec<Held> {
        back.events.lock().expect("not poisoned").clone()
    }

    /// Events of the work are held, from its own thread and from a thread
    /// that takes over its dispatcher, as the S3 fetch's does; libraries'
    /// debug output is not.
    #[test]
    fn held_back_keeps_what_debug_would_log() {
        let back = HeldBack::default();
        back.during(|| {
            tracing::info!(target: "pullauth_aws", bucket = "b", "reading it there");
            tracing::debug!(target: "hyper", "a library's debug line");
            let dispatch = tracing::dispatcher::get_default(Clone::clone);
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    tracing::dispatcher::with_default(&dispatch, || {
                        tracing::debug!(target: "pullauth", "from the fetch thread");
                    })
                });
            });
        });
        assert_eq!(
            held(&back),
            [
                Held {
                    level: Level::INFO,
                    target: "pullauth_aws".into(),
                    text: "reading it there bucket=\"b\"".into(),
                },
                Held {
                    level: Level::DEBUG,
                    target: "pullauth".into(),
                    text: "from the fetch thread".into(),
                },
            ]
        );
    }

    /// Replay logs each held event at its own level, naming its target;
    /// what the subscriber then installed filters out stays out.
    #[test]
    fn replay_logs_each_event_at_its_level() {
        let first = HeldBack::default();
        first.during(|| {
            tracing::warn!(target: "pullauth_aws", "slow");
            tracing::debug!(target: "pullauth_aws", "detail");
        });
        let second = HeldBack::default();
        second.during(|| first.replay());
        let replayed = held(&second);
        assert_eq!(replayed.len(), 2, "{replayed:?}");
        assert_eq!(replayed[0].level, Level::WARN);
        assert_eq!(replayed[0].text, "slow from=pullauth_aws");
        assert_eq!(replayed[1].level, Level::DEBUG);
        assert!(held(&first).is_empty(), "replayed twice");
    }

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
