//! The ECS agent's own image settings, read from the same sources as
//! pullauth's, and what they mean for prefetched images.
//!
//! pullauth shares the instance with the ECS agent, which decides when a
//! task's image is pulled again ([`PULL_BEHAVIOR`](crate::PULL_BEHAVIOR))
//! and which images its automated cleanup deletes. Some combinations make
//! prefetching useless or make the two loop (the ECS agent deletes an image
//! pullauth then pulls again); [`EcsAgentSettings::warnings`] names them.
//!
//! These are the ECS agent's variables, not pullauth's: a value the ECS
//! agent would ignore is a warning here, never an error, and the settings
//! hold what the ECS agent then uses. The defaults and bounds are the ECS
//! agent's (`agent/config`): a value below a bound or that does not parse
//! is replaced by the default, as the ECS agent does.
//!
//! No warning quotes a value that could hold a secret: values are shown
//! only as [`Found`] allows, and the items of [`EXCLUDE_UNTRACKED_IMAGE`]
//! never.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::time::Duration;

use secrecy::ExposeSecret;

use crate::duration::GoDuration;
use crate::shown::Found;
use crate::{Origin, PullBehavior, Setting, Sources, TASK_CLEANUP_WAIT};

/// `true` turns the ECS agent's automated image cleanup off.
pub const DISABLE_IMAGE_CLEANUP: &str = "ECS_DISABLE_IMAGE_CLEANUP";
/// `true` lets the image cleanup also delete images no ECS task used.
pub const UNTRACKED_IMAGE_CLEANUP: &str = "ECS_ENABLE_UNTRACKED_IMAGE_CLEANUP";
/// Comma-separated `repository:tag` names the untracked cleanup keeps.
pub const EXCLUDE_UNTRACKED_IMAGE: &str = "ECS_EXCLUDE_UNTRACKED_IMAGE";
/// Time between two image cleanup cycles.
pub const IMAGE_CLEANUP_INTERVAL: &str = "ECS_IMAGE_CLEANUP_INTERVAL";
/// How long after the ECS agent first recorded an image (a task used it)
/// the image may be deleted.
pub const IMAGE_MINIMUM_CLEANUP_AGE: &str = "ECS_IMAGE_MINIMUM_CLEANUP_AGE";
/// How long after its *creation* (its build) an untracked image may be deleted.
pub const NON_ECS_IMAGE_MINIMUM_CLEANUP_AGE: &str = "NON_ECS_IMAGE_MINIMUM_CLEANUP_AGE";
/// The most images one cleanup cycle deletes.
pub const NUM_IMAGES_DELETE_PER_CYCLE: &str = "ECS_NUM_IMAGES_DELETE_PER_CYCLE";

/// A JSON object of custom attribute names and values the ECS agent
/// registers the container instance with (`{"stack": "prod"}`).
pub const INSTANCE_ATTRIBUTES: &str = "ECS_INSTANCE_ATTRIBUTES";

/// The ECS agent's default for [`IMAGE_CLEANUP_INTERVAL`].
pub const DEFAULT_IMAGE_CLEANUP_INTERVAL: Duration = Duration::from_secs(30 * 60);
/// Below this, the ECS agent ignores [`IMAGE_CLEANUP_INTERVAL`].
pub const MINIMUM_IMAGE_CLEANUP_INTERVAL: Duration = Duration::from_secs(10 * 60);
/// The ECS agent's default for [`IMAGE_MINIMUM_CLEANUP_AGE`].
pub const DEFAULT_IMAGE_MINIMUM_CLEANUP_AGE: Duration = Duration::from_secs(60 * 60);
/// The ECS agent's default for [`NON_ECS_IMAGE_MINIMUM_CLEANUP_AGE`].
pub const DEFAULT_NON_ECS_IMAGE_MINIMUM_CLEANUP_AGE: Duration = Duration::from_secs(60 * 60);
/// The ECS agent's default for [`NUM_IMAGES_DELETE_PER_CYCLE`].
pub const DEFAULT_NUM_IMAGES_DELETE_PER_CYCLE: u32 = 5;
/// Below this, the ECS agent ignores `ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION`.
pub const MINIMUM_TASK_CLEANUP_WAIT: Duration = Duration::from_secs(1);

/// How many prefetched images a warning names before it only counts.
const NAMED_IMAGES_MAX: usize = 10;

/// The ECS agent's image settings, as the ECS agent will use them. Its
/// `Debug` counts the exclusion list's items instead of showing them.
#[derive(Clone, PartialEq, Eq)]
pub struct EcsAgentSettings {
    /// `ECS_IMAGE_PULL_BEHAVIOR` (pullauth's own pulls read it too).
    pub pull_behavior: Setting<PullBehavior>,
    /// `ECS_DISABLE_IMAGE_CLEANUP`.
    pub image_cleanup_disabled: Setting<bool>,
    /// `ECS_ENABLE_UNTRACKED_IMAGE_CLEANUP`.
    pub untracked_image_cleanup: Setting<bool>,
    /// `ECS_EXCLUDE_UNTRACKED_IMAGE`, split as the ECS agent splits it (at
    /// commas, nothing trimmed; empty items dropped). Never shown: a
    /// mistyped line could put a secret here.
    pub untracked_exclusions: Setting<Vec<String>>,
    /// `ECS_IMAGE_CLEANUP_INTERVAL`.
    pub image_cleanup_interval: Setting<Duration>,
    /// `ECS_IMAGE_MINIMUM_CLEANUP_AGE` (zero when set negative: every image
    /// is then old enough).
    pub image_minimum_cleanup_age: Setting<Duration>,
    /// `NON_ECS_IMAGE_MINIMUM_CLEANUP_AGE` (zero when set negative).
    pub non_ecs_image_minimum_cleanup_age: Setting<Duration>,
    /// `ECS_NUM_IMAGES_DELETE_PER_CYCLE`.
    pub images_deleted_per_cycle: Setting<u32>,
    /// `ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION`: when the ECS agent removes
    /// a stopped task's containers (and so when their image becomes
    /// unused); pullauth keeps its finished tasks as long.
    pub task_cleanup_wait: Setting<Duration>,
    /// `ECS_INSTANCE_ATTRIBUTES`: the custom attributes the ECS agent
    /// registers this instance with (empty when unset or not a JSON object
    /// of strings). Placement decides `memberOf` on them without asking
    /// ECS; attributes put later (`PutAttributes`) are not among them.
    pub instance_attributes: Setting<BTreeMap<String, String>>,
    /// Values the ECS agent does not take as written.
    pub ignored: Vec<Ignored>,
}

impl fmt::Debug for EcsAgentSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = &self.untracked_exclusions;
        f.debug_struct("EcsAgentSettings")
            .field("pull_behavior", &self.pull_behavior)
            .field("image_cleanup_disabled", &self.image_cleanup_disabled)
            .field("untracked_image_cleanup", &self.untracked_image_cleanup)
            .field(
                "untracked_exclusions",
                &format_args!("<{} items> ({})", list.value.len(), list.origin),
            )
            .field("image_cleanup_interval", &self.image_cleanup_interval)
            .field("image_minimum_cleanup_age", &self.image_minimum_cleanup_age)
            .field(
                "non_ecs_image_minimum_cleanup_age",
                &self.non_ecs_image_minimum_cleanup_age,
            )
            .field("images_deleted_per_cycle", &self.images_deleted_per_cycle)
            .field("task_cleanup_wait", &self.task_cleanup_wait)
            .field(
                "instance_attributes",
                &format_args!(
                    "<{} attributes> ({})",
                    self.instance_attributes.value.len(),
                    self.instance_attributes.origin
                ),
            )
            .field("ignored", &self.ignored)
            .finish()
    }
}

/// A value of one of the ECS agent's variables that it does not use as
/// written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    pub var: &'static str,
    pub origin: Origin,
    /// The value as a message may show it.
    pub found: Found,
    pub problem: Problem,
}

/// What is wrong with an [`Ignored`] value, and so what the ECS agent does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Not Go's duration syntax: the default applies.
    NotADuration { default: Duration },
    /// Below the ECS agent's bound (zero included): the default applies.
    BelowMinimum {
        minimum: Duration,
        default: Duration,
    },
    /// Zero: the default applies.
    Zero { default: Duration },
    /// A negative minimum age: every image is old enough.
    NegativeAge,
    /// Not a Go boolean: `false` applies.
    NotABoolean,
    /// Not an integer: the default applies.
    NotAnInteger { default: u32 },
    /// An integer below 1: the default applies.
    BelowOne { default: u32 },
    /// Not a JSON object whose values are strings: the ECS agent does not
    /// start with it. `syntax_at` is where a value that is not JSON at all
    /// stopped parsing (`line L column C`, which quotes nothing of it);
    /// `None` for JSON of another shape.
    NotAnAttributeMap { syntax_at: Option<String> },
    /// `KEY=VALUE` pasted after the list (the name when it is one pullauth
    /// knows the shape of).
    PastedAssignment { pasted: Option<String> },
    /// Items (1-based) with spaces around them, which never match a tag.
    SpacesAroundItems { items: Vec<usize> },
}

/// Whether `ECS_EXCLUDE_UNTRACKED_IMAGE` keeps the prefetched images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exclusions {
    /// The variable is unset: no image is kept.
    Unset,
    /// The prefetched images are not known here (`check`): it lists this many.
    Unverified { listed: usize, origin: Origin },
    /// These prefetched images are not in the list.
    Missing {
        images: Vec<String>,
        prefetched: usize,
        origin: Origin,
    },
}

/// A combination of the ECS agent's settings that matters for prefetched
/// images, or one of its values it ignores. [`fmt::Display`] says what
/// happens, names every variable involved with its origin, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EcsAgentWarning {
    /// A value the ECS agent does not use as written.
    Ignored(Ignored),
    /// `default` or `always`: the ECS agent pulls again at every task start.
    PullsAgain { behavior: Setting<PullBehavior> },
    /// Untracked cleanup deletes prefetched images, which pullauth pulls again.
    UntrackedCleanupLoop {
        untracked: Origin,
        interval: Setting<Duration>,
        per_cycle: Setting<u32>,
        non_ecs_age: Setting<Duration>,
        exclusions: Exclusions,
    },
    /// The ECS agent's image cleanup does not run: nothing removes images.
    NoImageCleanup {
        /// Where `ECS_DISABLE_IMAGE_CLEANUP=true` is set.
        disabled: Option<Origin>,
        /// Where `ECS_IMAGE_PULL_BEHAVIOR=prefer-cached` is set.
        prefer_cached: Option<Origin>,
        /// Where `ECS_ENABLE_UNTRACKED_IMAGE_CLEANUP=true` is set, in vain.
        untracked: Option<Origin>,
    },
}

impl EcsAgentWarning {
    /// A stable code, for logs and JSON.
    pub fn code(&self) -> &'static str {
        match self {
            EcsAgentWarning::Ignored(_) => "ecs-agent-value-ignored",
            EcsAgentWarning::PullsAgain { .. } => "ecs-agent-pulls-again",
            EcsAgentWarning::UntrackedCleanupLoop { .. } => "untracked-cleanup-loop",
            EcsAgentWarning::NoImageCleanup { .. } => "no-image-cleanup",
        }
    }
}

impl EcsAgentSettings {
    /// Reads the ECS agent's variables from `sources`, as the ECS agent
    /// would use them; `pull_behavior` is pullauth's already validated one.
    pub fn read(sources: &Sources, pull_behavior: Setting<PullBehavior>) -> EcsAgentSettings {
        let mut ignored = Vec::new();
        let image_cleanup_disabled = boolean(sources, DISABLE_IMAGE_CLEANUP, &mut ignored);
        let untracked_image_cleanup = boolean(sources, UNTRACKED_IMAGE_CLEANUP, &mut ignored);
        let untracked_exclusions = exclusions(sources, &mut ignored);
        let image_cleanup_interval = duration(
            sources,
            IMAGE_CLEANUP_INTERVAL,
            DEFAULT_IMAGE_CLEANUP_INTERVAL,
            Bound::AtLeast(MINIMUM_IMAGE_CLEANUP_INTERVAL),
            &mut ignored,
        );
        let image_minimum_cleanup_age = duration(
            sources,
            IMAGE_MINIMUM_CLEANUP_AGE,
            DEFAULT_IMAGE_MINIMUM_CLEANUP_AGE,
            Bound::Age,
            &mut ignored,
        );
        let non_ecs_image_minimum_cleanup_age = duration(
            sources,
            NON_ECS_IMAGE_MINIMUM_CLEANUP_AGE,
            DEFAULT_NON_ECS_IMAGE_MINIMUM_CLEANUP_AGE,
            Bound::Age,
            &mut ignored,
        );
        let images_deleted_per_cycle = count(
            sources,
            NUM_IMAGES_DELETE_PER_CYCLE,
            DEFAULT_NUM_IMAGES_DELETE_PER_CYCLE,
            &mut ignored,
        );
        let task_cleanup_wait = duration(
            sources,
            TASK_CLEANUP_WAIT,
            crate::DEFAULT_TASK_CLEANUP_WAIT,
            Bound::AtLeast(MINIMUM_TASK_CLEANUP_WAIT),
            &mut ignored,
        );
        let instance_attributes = attributes(sources, &mut ignored);
        EcsAgentSettings {
            pull_behavior,
            image_cleanup_disabled,
            untracked_image_cleanup,
            untracked_exclusions,
            image_cleanup_interval,
            image_minimum_cleanup_age,
            non_ecs_image_minimum_cleanup_age,
            images_deleted_per_cycle,
            task_cleanup_wait,
            instance_attributes,
            ignored,
        }
    }

    /// Whether the ECS agent's periodic image cleanup runs at all: not when
    /// disabled, and not with `prefer-cached`, which turns it off.
    pub fn image_cleanup_runs(&self) -> bool {
        !self.image_cleanup_disabled.value && self.pull_behavior.value != PullBehavior::PreferCached
    }

    /// The warnings for these settings, each once, ignored values first.
    ///
    /// `prefetched` is what prefetch pulls, each image named as `docker
    /// images` lists it (see [`docker_repo_tag`]), when the caller knows it
    /// (`prefetch`, the follower); `None` (`check`) when it does not.
    pub fn warnings(&self, prefetched: Option<&[String]>) -> Vec<EcsAgentWarning> {
        let mut out: Vec<EcsAgentWarning> = self
            .ignored
            .iter()
            .cloned()
            .map(EcsAgentWarning::Ignored)
            .collect();
        if matches!(
            self.pull_behavior.value,
            PullBehavior::Default | PullBehavior::Always
        ) {
            out.push(EcsAgentWarning::PullsAgain {
                behavior: self.pull_behavior.clone(),
            });
        }
        let untracked = self
            .untracked_image_cleanup
            .value
            .then(|| self.untracked_image_cleanup.origin.clone());
        if !self.image_cleanup_runs() {
            let set_at = |on: bool, origin: &Origin| on.then(|| origin.clone());
            out.push(EcsAgentWarning::NoImageCleanup {
                disabled: set_at(
                    self.image_cleanup_disabled.value,
                    &self.image_cleanup_disabled.origin,
                ),
                prefer_cached: set_at(
                    self.pull_behavior.value == PullBehavior::PreferCached,
                    &self.pull_behavior.origin,
                ),
                untracked,
            });
        } else if let Some(untracked) = untracked
            && let Some(exclusions) = self.uncovered(prefetched)
        {
            out.push(EcsAgentWarning::UntrackedCleanupLoop {
                untracked,
                interval: self.image_cleanup_interval.clone(),
                per_cycle: self.images_deleted_per_cycle.clone(),
                non_ecs_age: self.non_ecs_image_minimum_cleanup_age.clone(),
                exclusions,
            });
        }
        out
    }

    /// What the exclusion list leaves to the untracked cleanup; `None`
    /// when it keeps every prefetched image.
    fn uncovered(&self, prefetched: Option<&[String]>) -> Option<Exclusions> {
        let list = &self.untracked_exclusions;
        if list.value.is_empty() {
            return Some(Exclusions::Unset);
        }
        let Some(prefetched) = prefetched else {
            return Some(Exclusions::Unverified {
                listed: list.value.len(),
                origin: list.origin.clone(),
            });
        };
        let kept: HashSet<&str> = list.value.iter().map(String::as_str).collect();
        let mut seen = HashSet::new();
        let distinct: Vec<&String> = prefetched
            .iter()
            .filter(|image| seen.insert(image.as_str()))
            .collect();
        let images: Vec<String> = distinct
            .iter()
            .filter(|image| !kept.contains(image.as_str()))
            .map(|image| (*image).clone())
            .collect();
        (!images.is_empty()).then(|| Exclusions::Missing {
            images,
            prefetched: distinct.len(),
            origin: list.origin.clone(),
        })
    }
}

/// An image's name as `docker images` lists it (its `RepoTags` entry), the
/// form `ECS_EXCLUDE_UNTRACKED_IMAGE` is compared with: Docker's familiar
/// name (`docker.io/` dropped, and `library/` in front of a one-component
/// path) and the tag. `domain` and `path` are Docker's normalization
/// (pullauth-resolve's `ImageRef::domain` and `ImageRef::path`).
pub fn docker_repo_tag(domain: &str, path: &str, tag: &str) -> String {
    let name = if domain == "docker.io" {
        match path.strip_prefix("library/") {
            Some(official) if !official.contains('/') => official.to_owned(),
            _ => path.to_owned(),
        }
    } else {
        format!("{domain}/{path}")
    };
    format!("{name}:{tag}")
}

/// Remembers the warnings already given, so that a long-running command
/// (the follower, across polls and reloads) gives each one once.
#[derive(Debug, Default)]
pub struct WarnedOnce {
    seen: HashSet<String>,
}

impl WarnedOnce {
    /// The warnings of `warnings` not given before.
    pub fn fresh(&mut self, warnings: Vec<EcsAgentWarning>) -> Vec<EcsAgentWarning> {
        warnings
            .into_iter()
            .filter(|w| self.seen.insert(w.to_string()))
            .collect()
    }
}

/// Go's `strconv.ParseBool`, as the ECS agent reads its switches.
fn go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn boolean(sources: &Sources, var: &'static str, ignored: &mut Vec<Ignored>) -> Setting<bool> {
    let Some(raw) = sources.plain(var) else {
        return default_setting(false);
    };
    match go_bool(&raw.value) {
        Some(value) => Setting {
            value,
            origin: raw.origin,
        },
        None => {
            ignored.push(Ignored {
                var,
                found: Found::new(&raw.value),
                origin: raw.origin,
                problem: Problem::NotABoolean,
            });
            default_setting(false)
        }
    }
}

/// The lower bound the ECS agent puts on a duration.
#[derive(Clone, Copy)]
enum Bound {
    /// Below this (zero and negative included), the default.
    AtLeast(Duration),
    /// Zero means the default; negative is taken (every image is old enough).
    Age,
}

fn duration(
    sources: &Sources,
    var: &'static str,
    default: Duration,
    bound: Bound,
    ignored: &mut Vec<Ignored>,
) -> Setting<Duration> {
    let Some(raw) = sources.plain(var) else {
        return default_setting(default);
    };
    let problem = match raw.value.parse::<GoDuration>() {
        Err(_) => Problem::NotADuration { default },
        Ok(GoDuration(nanos)) => {
            let value = Duration::from_nanos(nanos.max(0).unsigned_abs());
            match bound {
                Bound::AtLeast(minimum) if nanos < 0 || value < minimum => {
                    Problem::BelowMinimum { minimum, default }
                }
                Bound::Age if nanos == 0 => Problem::Zero { default },
                Bound::Age if nanos < 0 => {
                    ignored.push(Ignored {
                        var,
                        found: Found::new(&raw.value),
                        origin: raw.origin.clone(),
                        problem: Problem::NegativeAge,
                    });
                    return Setting {
                        value: Duration::ZERO,
                        origin: raw.origin,
                    };
                }
                _ => {
                    return Setting {
                        value,
                        origin: raw.origin,
                    };
                }
            }
        }
    };
    ignored.push(Ignored {
        var,
        found: Found::new(&raw.value),
        origin: raw.origin,
        problem,
    });
    default_setting(default)
}

/// Go's `strconv.Atoi`, as the ECS agent reads its counts; below 1, the default.
fn count(
    sources: &Sources,
    var: &'static str,
    default: u32,
    ignored: &mut Vec<Ignored>,
) -> Setting<u32> {
    let Some(raw) = sources.plain(var) else {
        return default_setting(default);
    };
    let digits = raw.value.strip_prefix(['+', '-']).unwrap_or(&raw.value);
    let problem = if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        Problem::NotAnInteger { default }
    } else {
        match raw.value.parse::<i64>() {
            Ok(n) if n >= 1 => {
                return Setting {
                    value: u32::try_from(n).unwrap_or(u32::MAX),
                    origin: raw.origin,
                };
            }
            Ok(_) => Problem::BelowOne { default },
            // More digits than Go's int holds: Atoi fails too.
            Err(_) => Problem::NotAnInteger { default },
        }
    };
    ignored.push(Ignored {
        var,
        found: Found::new(&raw.value),
        origin: raw.origin,
        problem,
    });
    default_setting(default)
}

fn exclusions(sources: &Sources, ignored: &mut Vec<Ignored>) -> Setting<Vec<String>> {
    let var = EXCLUDE_UNTRACKED_IMAGE;
    let Some((value, origin)) = sources.lookup(var) else {
        return default_setting(Vec::new());
    };
    let value = value.expose_secret().trim();
    if let Some(pasted) = crate::pasted_assignment(value) {
        ignored.push(Ignored {
            var,
            found: Found::new(value),
            origin: origin.clone(),
            problem: Problem::PastedAssignment { pasted },
        });
    }
    let items: Vec<&str> = value.split(',').collect();
    let spaced: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, item)| !item.trim().is_empty() && item.trim() != **item)
        .map(|(i, _)| i + 1)
        .collect();
    if !spaced.is_empty() {
        ignored.push(Ignored {
            var,
            found: Found::new(value),
            origin: origin.clone(),
            problem: Problem::SpacesAroundItems { items: spaced },
        });
    }
    Setting {
        value: items
            .into_iter()
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect(),
        origin,
    }
}

/// `ECS_INSTANCE_ATTRIBUTES` as the ECS agent reads it: Go's
/// `json.Unmarshal` into a `map[string]string`, where `null` (and an unset
/// or empty variable) is no attribute and anything else that is not an
/// object of strings stops the ECS agent.
fn attributes(sources: &Sources, ignored: &mut Vec<Ignored>) -> Setting<BTreeMap<String, String>> {
    let var = INSTANCE_ATTRIBUTES;
    let Some((value, origin)) = sources.lookup(var) else {
        return default_setting(BTreeMap::new());
    };
    let text = value.expose_secret();
    if text.is_empty() {
        return default_setting(BTreeMap::new());
    }
    match serde_json::from_str::<Option<BTreeMap<String, String>>>(text) {
        Ok(map) => Setting {
            value: map.unwrap_or_default(),
            origin,
        },
        Err(error) => {
            ignored.push(Ignored {
                var,
                found: Found::new(text),
                origin,
                problem: Problem::NotAnAttributeMap {
                    syntax_at: (error.is_syntax() || error.is_eof())
                        .then(|| format!("line {} column {}", error.line(), error.column())),
                },
            });
            default_setting(BTreeMap::new())
        }
    }
}

fn default_setting<T>(value: T) -> Setting<T> {
    Setting {
        value,
        origin: Origin::Default,
    }
}

/// A duration as the ECS agent's docs write them: `30m`, `1h30m`, `90s`,
/// `500ms`.
pub fn go_style(d: Duration) -> String {
    let total = d.as_secs();
    if d.is_zero() {
        return "0s".to_owned();
    }
    if total == 0 {
        return match d.subsec_millis() {
            0 => format!("{}ns", d.subsec_nanos()),
            ms => format!("{ms}ms"),
        };
    }
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// `VAR="value" (origin)`, or `VAR (origin)` for a value that is not shown
/// (its [`Found::note`] then follows the problem).
fn named(var: &str, found: &Found, origin: &Origin) -> String {
    format!("{var}{} ({origin})", found.assignment())
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let var = self.var;
        let named = named(var, &self.found, &self.origin);
        let note = self.found.note();
        match &self.problem {
            Problem::NotADuration { default } => write!(
                f,
                "{named} is not a duration in Go's syntax{note}{}; the ECS agent ignores it and \
                 uses {}: write it like 30m or 1h30m (units ns, us, ms, s, m, h; no spaces)",
                self.found.hint(),
                go_style(*default)
            ),
            Problem::BelowMinimum { minimum, default } => write!(
                f,
                "{named} is below the ECS agent's minimum of {}{note}; the ECS agent ignores it \
                 and uses {}: set at least {}, or remove the line",
                go_style(*minimum),
                go_style(*default),
                go_style(*minimum)
            ),
            Problem::Zero { default } => write!(
                f,
                "{named} is zero{note}; the ECS agent ignores it and uses {}: set a positive \
                 duration, or remove the line",
                go_style(*default)
            ),
            Problem::NegativeAge => write!(
                f,
                "{named} is negative{note}; the ECS agent then takes every image as old enough to \
                 delete: set a positive duration, or remove the line for the default"
            ),
            Problem::NotABoolean => write!(
                f,
                "{named} is not a boolean{note}{}; the ECS agent ignores it and uses false: set \
                 true or false",
                self.found.hint()
            ),
            Problem::NotAnInteger { default } => write!(
                f,
                "{named} is not an integer{note}{}; the ECS agent ignores it and uses {default}: \
                 set a whole number of at least 1",
                self.found.hint()
            ),
            Problem::BelowOne { default } => write!(
                f,
                "{named} is below 1{note}; the ECS agent ignores it and uses {default}: set a \
                 whole number of at least 1"
            ),
            Problem::NotAnAttributeMap { syntax_at } => write!(
                f,
                "{named} is not a JSON object of string values{note}: {}; the ECS agent does \
                 not start with it, and pullauth decides no memberOf constraint on custom \
                 attributes (their images are pulled): write one object on one line, such as \
                 {{\"team\": \"payments\"}}",
                syntax_at.as_ref().map_or_else(
                    || "it is JSON of another shape".to_owned(),
                    |at| format!("it is not JSON (it stops parsing at {at})")
                )
            ),
            Problem::PastedAssignment { pasted } => write!(
                f,
                "{var} ({}) holds {} after its value: a second variable on the same line, \
                 which the ECS agent reads as part of the list; put each KEY=VALUE on a line of \
                 its own",
                self.origin,
                pasted.as_deref().map_or_else(
                    || "another KEY=...".to_owned(),
                    |name| format!("{name}=...")
                ),
            ),
            Problem::SpacesAroundItems { items } => {
                let one = items.len() == 1;
                let list = items
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                write!(
                    f,
                    "{var} ({}): {} {list} {} spaces around {}; the ECS agent compares each item \
                     as written, so {} never {} an image: write the list without spaces, \
                     repository:tag,repository:tag",
                    self.origin,
                    if one { "item" } else { "items" },
                    if one { "has" } else { "have" },
                    if one { "it" } else { "them" },
                    if one { "it" } else { "they" },
                    if one { "matches" } else { "match" },
                )
            }
        }
    }
}

impl fmt::Display for EcsAgentWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EcsAgentWarning::Ignored(ignored) => ignored.fmt(f),
            EcsAgentWarning::PullsAgain { behavior } => write!(
                f,
                "{}={} ({}): the ECS agent pulls every image again when a task starts, so a \
                 prefetched image saves only the download of the layers that did not change, \
                 not the pull{}; set {}=prefer-cached for the ECS agent to start containers \
                 from the local image (see docs/operations.md, \"Sharing the instance with the \
                 ECS agent's cleanup\")",
                crate::PULL_BEHAVIOR,
                behavior.value.as_str(),
                behavior.origin,
                if behavior.value == PullBehavior::Always {
                    ", and a registry that cannot be reached fails the task although the image \
                     is here"
                } else {
                    ""
                },
                crate::PULL_BEHAVIOR,
            ),
            EcsAgentWarning::UntrackedCleanupLoop {
                untracked,
                interval,
                per_cycle,
                non_ecs_age,
                exclusions,
            } => {
                write!(
                    f,
                    "{UNTRACKED_IMAGE_CLEANUP}=true ({untracked}): every {} \
                     ({IMAGE_CLEANUP_INTERVAL}, {}) the ECS agent deletes up to {} \
                     ({NUM_IMAGES_DELETE_PER_CYCLE}, {}) images that no task on this instance \
                     has used and that were created more than {} ago \
                     ({NON_ECS_IMAGE_MINIMUM_CLEANUP_AGE}, {}; counted from the image's build, \
                     not its pull, so an image built long ago goes at the next cycle; \
                     {IMAGE_MINIMUM_CLEANUP_AGE} applies only to images a task used), unless \
                     {EXCLUDE_UNTRACKED_IMAGE} names one of its tags. A prefetched image that no \
                     task has started here yet is such an image: the ECS agent deletes it and \
                     pullauth pulls it again, in a loop. ",
                    go_style(interval.value),
                    interval.origin,
                    per_cycle.value,
                    per_cycle.origin,
                    go_style(non_ecs_age.value),
                    non_ecs_age.origin,
                )?;
                match exclusions {
                    Exclusions::Unset => write!(f, "{EXCLUDE_UNTRACKED_IMAGE} is unset")?,
                    Exclusions::Unverified { listed, origin } => write!(
                        f,
                        "{EXCLUDE_UNTRACKED_IMAGE} ({origin}) lists {}, but check does not know \
                         which images prefetch pulls (prefetch and the follower name those it \
                         misses)",
                        plural(*listed, "image", "images")
                    )?,
                    Exclusions::Missing {
                        images,
                        prefetched,
                        origin,
                    } => {
                        let named: Vec<&str> = images
                            .iter()
                            .take(NAMED_IMAGES_MAX)
                            .map(String::as_str)
                            .collect();
                        let more = images.len() - named.len();
                        write!(
                            f,
                            "{EXCLUDE_UNTRACKED_IMAGE} ({origin}) misses {} of the {prefetched} \
                             prefetched: {}{}",
                            plural(images.len(), "image", "images"),
                            named.join(", "),
                            if more > 0 {
                                format!(" and {more} more")
                            } else {
                                String::new()
                            }
                        )?;
                    }
                }
                write!(
                    f,
                    ". Add every prefetched image to {EXCLUDE_UNTRACKED_IMAGE} as `docker \
                     images` lists it (repository:tag, comma-separated, no spaces), or set \
                     {UNTRACKED_IMAGE_CLEANUP}=false"
                )
            }
            EcsAgentWarning::NoImageCleanup {
                disabled,
                prefer_cached,
                untracked,
            } => {
                let mut causes = Vec::new();
                if let Some(origin) = disabled {
                    causes.push(format!("{DISABLE_IMAGE_CLEANUP}=true ({origin})"));
                }
                if let Some(origin) = prefer_cached {
                    causes.push(format!(
                        "{}=prefer-cached ({origin}), which turns it off",
                        crate::PULL_BEHAVIOR
                    ));
                }
                write!(
                    f,
                    "the ECS agent's automated image cleanup does not run ({}): nothing on this \
                     instance removes images, prefetched or not{}, so every image pullauth \
                     prefetches stays until someone removes it and the disk fills with each new \
                     revision; bound it another way: prefetch only what this instance runs \
                     (PULLAUTH_PREFETCH_SERVICES), size the volume for it (`pullauth prefetch \
                     --dry-run`, `docker system df`), and see docs/operations.md, \"Sharing the \
                     instance with the ECS agent's cleanup\"",
                    causes.join(" and "),
                    match untracked {
                        Some(origin) => format!(
                            "; {UNTRACKED_IMAGE_CLEANUP}=true ({origin}) changes nothing, as the \
                             untracked cleanup runs only within it"
                        ),
                        None => String::new(),
                    }
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rstest::rstest;

    use super::*;
    use crate::{Config, EnvFile};

    const FILE: &str = "/etc/ecs/ecs.config";
    /// A password that must never appear in a warning.
    const CANARY: &str = "Canary7pwQz";

    fn sources(file: &str) -> Sources {
        let env_file = EnvFile::parse(file, Path::new(FILE)).expect("env file parses");
        Sources::from_parts(Some(env_file), []).expect("sources")
    }

    fn settings(file: &str) -> EcsAgentSettings {
        Config::from_sources(&sources(file))
            .expect("a valid configuration")
            .ecs_agent
    }

    fn at(line: usize) -> Origin {
        Origin::EnvFile {
            path: FILE.into(),
            line,
        }
    }

    fn codes(file: &str, prefetched: Option<&[String]>) -> Vec<&'static str> {
        settings(file)
            .warnings(prefetched)
            .iter()
            .map(EcsAgentWarning::code)
            .collect()
    }

    #[test]
    fn nothing_set_means_the_ecs_agents_defaults() {
        let s = settings("");
        assert!(!s.image_cleanup_disabled.value);
        assert!(!s.untracked_image_cleanup.value);
        assert!(s.untracked_exclusions.value.is_empty());
        assert_eq!(s.image_cleanup_interval.value, Duration::from_secs(1800));
        assert_eq!(s.image_minimum_cleanup_age.value, Duration::from_secs(3600));
        assert_eq!(
            s.non_ecs_image_minimum_cleanup_age.value,
            Duration::from_secs(3600)
        );
        assert_eq!(s.images_deleted_per_cycle.value, 5);
        assert_eq!(s.task_cleanup_wait.value, Duration::from_secs(3 * 3600));
        assert_eq!(s.image_cleanup_interval.origin, Origin::Default);
        assert!(s.ignored.is_empty());
        assert!(s.image_cleanup_runs());
    }

    #[test]
    fn values_as_written_are_taken_with_their_line() {
        let s = settings(
            "ECS_DISABLE_IMAGE_CLEANUP=False\nECS_ENABLE_UNTRACKED_IMAGE_CLEANUP=t\n\
             ECS_EXCLUDE_UNTRACKED_IMAGE=alpine:latest,,r.io/app:1\nECS_IMAGE_CLEANUP_INTERVAL=1h30m\n\
             ECS_IMAGE_MINIMUM_CLEANUP_AGE=2h\nNON_ECS_IMAGE_MINIMUM_CLEANUP_AGE=45m\n\
             ECS_NUM_IMAGES_DELETE_PER_CYCLE=+12\nECS_ENGINE_TASK_CLEANUP_WAIT_DURATION=10m\n",
        );
        assert!(s.ignored.is_empty(), "{:?}", s.ignored);
        assert_eq!(
            s.image_cleanup_disabled,
            Setting {
                value: false,
                origin: at(1)
            }
        );
        assert_eq!(
            s.untracked_image_cleanup,
            Setting {
                value: true,
                origin: at(2)
            }
        );
        assert_eq!(
            s.untracked_exclusions.value,
            ["alpine:latest", "r.io/app:1"]
        );
        assert_eq!(s.image_cleanup_interval.value, Duration::from_secs(5400));
        assert_eq!(s.image_cleanup_interval.origin, at(4));
        assert_eq!(s.image_minimum_cleanup_age.value, Duration::from_secs(7200));
        assert_eq!(
            s.non_ecs_image_minimum_cleanup_age.value,
            Duration::from_secs(2700)
        );
        assert_eq!(
            s.images_deleted_per_cycle,
            Setting {
                value: 12,
                origin: at(7)
            }
        );
        assert_eq!(s.task_cleanup_wait.value, Duration::from_secs(600));
    }

    /// Values the ECS agent ignores or changes: the setting is what the ECS
    /// agent uses, and the warning names the variable, line and problem.
    #[rstest]
    #[case::interval_not_a_duration(
        "ECS_IMAGE_CLEANUP_INTERVAL=30min",
        "ECS_IMAGE_CLEANUP_INTERVAL=\"30min\" (/etc/ecs/ecs.config:1) is not a duration in Go's \
         syntax; the ECS agent ignores it and uses 30m"
    )]
    #[case::interval_below_ten_minutes(
        "ECS_IMAGE_CLEANUP_INTERVAL=5m",
        "ECS_IMAGE_CLEANUP_INTERVAL=\"5m\" (/etc/ecs/ecs.config:1) is below the ECS agent's \
         minimum of 10m; the ECS agent ignores it and uses 30m: set at least 10m"
    )]
    #[case::interval_negative(
        "ECS_IMAGE_CLEANUP_INTERVAL=-1h",
        "is below the ECS agent's minimum of 10m"
    )]
    #[case::age_days(
        "ECS_IMAGE_MINIMUM_CLEANUP_AGE=2d",
        "ECS_IMAGE_MINIMUM_CLEANUP_AGE=\"2d\" (/etc/ecs/ecs.config:1) is not a duration in Go's \
         syntax; the ECS agent ignores it and uses 1h"
    )]
    #[case::age_zero(
        "NON_ECS_IMAGE_MINIMUM_CLEANUP_AGE=0",
        "NON_ECS_IMAGE_MINIMUM_CLEANUP_AGE=\"0\" (/etc/ecs/ecs.config:1) is zero; the ECS agent \
         ignores it and uses 1h"
    )]
    #[case::age_negative(
        "ECS_IMAGE_MINIMUM_CLEANUP_AGE=-5m",
        "ECS_IMAGE_MINIMUM_CLEANUP_AGE=\"-5m\" (/etc/ecs/ecs.config:1) is negative; the ECS agent \
         then takes every image as old enough to delete"
    )]
    #[case::count_word(
        "ECS_NUM_IMAGES_DELETE_PER_CYCLE=ten",
        "ECS_NUM_IMAGES_DELETE_PER_CYCLE=\"ten\" (/etc/ecs/ecs.config:1) is not an integer; the \
         ECS agent ignores it and uses 5"
    )]
    #[case::count_zero(
        "ECS_NUM_IMAGES_DELETE_PER_CYCLE=0",
        "ECS_NUM_IMAGES_DELETE_PER_CYCLE=\"0\" (/etc/ecs/ecs.config:1) is below 1; the ECS \
         agent ignores it and uses 5"
    )]
    #[case::count_fraction(
        "ECS_NUM_IMAGES_DELETE_PER_CYCLE=2.5",
        "ECS_NUM_IMAGES_DELETE_PER_CYCLE (/etc/ecs/ecs.config:1) is not an integer (3 characters, \
         not shown); the ECS agent ignores it and uses 5"
    )]
    #[case::bool_yes(
        "ECS_DISABLE_IMAGE_CLEANUP=yes",
        "ECS_DISABLE_IMAGE_CLEANUP=\"yes\" (/etc/ecs/ecs.config:1) is not a boolean; the ECS \
         agent ignores it and uses false: set true or false"
    )]
    #[case::bool_on(
        "ECS_ENABLE_UNTRACKED_IMAGE_CLEANUP=on",
        "ECS_ENABLE_UNTRACKED_IMAGE_CLEANUP=\"on\" (/etc/ecs/ecs.config:1) is not a boolean"
    )]
    #[case::task_cleanup_zero(
        "ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION=0s",
        "ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION=\"0s\" (/etc/ecs/ecs.config:1) is below the ECS \
         agent's minimum of 1s; the ECS agent ignores it and uses 3h"
    )]
    #[case::task_cleanup_word(
        "ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION=soon",
        "is not a duration in Go's syntax; the ECS agent ignores it and uses 3h"
    )]
    #[case::exclusion_spaces(
        "ECS_EXCLUDE_UNTRACKED_IMAGE=alpine:latest, r.io/app:1 ,r.io/b:2",
        "ECS_EXCLUDE_UNTRACKED_IMAGE (/etc/ecs/ecs.config:1): item 2 has spaces around it; the \
         ECS agent compares each item as written, so it never matches an image"
    )]
    fn values_the_ecs_agent_ignores_are_warnings(#[case] file: &str, #[case] message: &str) {
        let config = Config::from_sources(&sources(file)).expect("never an error");
        let warnings = config.ecs_agent.warnings(None);
        let ignored: Vec<String> = warnings
            .iter()
            .filter(|w| w.code() == "ecs-agent-value-ignored")
            .map(ToString::to_string)
            .collect();
        assert_eq!(ignored.len(), 1, "{ignored:?}");
        assert!(ignored[0].contains(message), "{}", ignored[0]);
    }

    fn interval_is_the_default(s: &EcsAgentSettings) -> bool {
        s.image_cleanup_interval
            == Setting {
                value: DEFAULT_IMAGE_CLEANUP_INTERVAL,
                origin: Origin::Default,
            }
    }

    fn age_is_the_default(s: &EcsAgentSettings) -> bool {
        s.image_minimum_cleanup_age.value == DEFAULT_IMAGE_MINIMUM_CLEANUP_AGE
    }

    fn age_is_zero_from_line_1(s: &EcsAgentSettings) -> bool {
        s.image_minimum_cleanup_age
            == Setting {
                value: Duration::ZERO,
                origin: at(1),
            }
    }

    fn count_is_five(s: &EcsAgentSettings) -> bool {
        s.images_deleted_per_cycle.value == 5
    }

    fn cleanup_runs(s: &EcsAgentSettings) -> bool {
        !s.image_cleanup_disabled.value && s.image_cleanup_runs()
    }

    fn task_cleanup_is_three_hours(s: &EcsAgentSettings) -> bool {
        s.task_cleanup_wait.value == crate::DEFAULT_TASK_CLEANUP_WAIT
    }

    #[rstest]
    #[case::interval("ECS_IMAGE_CLEANUP_INTERVAL=5m", interval_is_the_default)]
    #[case::age_zero("ECS_IMAGE_MINIMUM_CLEANUP_AGE=0s", age_is_the_default)]
    #[case::age_negative("ECS_IMAGE_MINIMUM_CLEANUP_AGE=-5m", age_is_zero_from_line_1)]
    #[case::count("ECS_NUM_IMAGES_DELETE_PER_CYCLE=-3", count_is_five)]
    #[case::boolean("ECS_DISABLE_IMAGE_CLEANUP=yes", cleanup_runs)]
    #[case::task_cleanup(
        "ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION=500ms",
        task_cleanup_is_three_hours
    )]
    fn ignored_values_hold_what_the_ecs_agent_uses(
        #[case] file: &str,
        #[case] holds: fn(&EcsAgentSettings) -> bool,
    ) {
        let s = settings(file);
        assert!(holds(&s), "{s:?}");
    }

    /// The combinations: which warnings (by code), for which settings.
    #[rstest]
    #[case::defaults("", &["ecs-agent-pulls-again"])]
    #[case::always("ECS_IMAGE_PULL_BEHAVIOR=always", &["ecs-agent-pulls-again"])]
    #[case::once("ECS_IMAGE_PULL_BEHAVIOR=once", &[])]
    #[case::prefer_cached("ECS_IMAGE_PULL_BEHAVIOR=prefer-cached", &["no-image-cleanup"])]
    #[case::disabled(
        "ECS_IMAGE_PULL_BEHAVIOR=once\nECS_DISABLE_IMAGE_CLEANUP=true",
        &["no-image-cleanup"]
    )]
    #[case::untracked_without_list(
        "ECS_IMAGE_PULL_BEHAVIOR=once\nECS_ENABLE_UNTRACKED_IMAGE_CLEANUP=true",
        &["untracked-cleanup-loop"]
    )]
    #[case::untracked_with_list_unverified(
        "ECS_IMAGE_PULL_BEHAVIOR=once\nECS_ENABLE_UNTRACKED_IMAGE_CLEANUP=true\nECS_EXCLUDE_UNTRACKED_IMAGE=a:1",
        &["untracked-cleanup-loop"]
    )]
    #[case::untracked_with_default_behavior(
        "ECS_ENABLE_UNTRACKED_IMAGE_CLEANUP=1",
        &["ecs-agent-pulls-again", "untracked-cleanup-loop"]
    )]
    #[case::untracked_but_cleanup_off(
        "ECS_IMAGE_PULL_BEHAVIOR=prefer-cached\nECS_ENABLE_UNTRACKED_IMAGE_CLEANUP=true",
        &["no-image-cleanup"]
    )]
    #[case::untracked_explicitly_off(
        "ECS_IMAGE_PULL_BEHAVIOR=once\nECS_ENABLE_UNTRACKED_IMAGE_CLEANUP=false",
        &[]
    )]
    #[case::bad_value_first(
        "ECS_IMAGE_PULL_BEHAVIOR=once\nECS_IMAGE_CLEANUP_INTERVAL=1d\nECS_ENABLE_UNTRACKED_IMAGE_CLEANUP=true",
        &["ecs-agent-value-ignored", "untracked-cleanup-loop"]
    )]
    fn combinations_give_their_warnings(#[case] file: &str, #[case] expected: &[&str]) {
        assert_eq!(codes(file, None), expected);
    }

    /// With the prefetched images known, the loop is reported only for the
    /// images the exclusion list misses, compared as the ECS agent compares.
    #[rstest]
    #[case::all_listed("a:1,r.io/b:2", &["a:1", "r.io/b:2", "a:1"], None)]
    #[case::one_missing("a:1", &["a:1", "r.io/b:2"], Some("misses 1 image of the 2 prefetched: r.io/b:2."))]
    #[case::not_normalized("docker.io/library/a:1", &["a:1"], Some("misses 1 image of the 1 prefetched: a:1."))]
    #[case::spaces_never_match("x:0, a:1", &["a:1"], Some("misses 1 image of the 1 prefetched: a:1."))]
    fn the_exclusion_list_is_compared_with_what_is_prefetched(
        #[case] list: &str,
        #[case] prefetched: &[&str],
        #[case] missing: Option<&str>,
    ) {
        let s = settings(&format!(
            "ECS_IMAGE_PULL_BEHAVIOR=once\nECS_ENABLE_UNTRACKED_IMAGE_CLEANUP=true\n\
             ECS_EXCLUDE_UNTRACKED_IMAGE={list}\n"
        ));
        let prefetched: Vec<String> = prefetched.iter().map(|s| (*s).to_owned()).collect();
        let loops: Vec<String> = s
            .warnings(Some(&prefetched))
            .iter()
            .filter(|w| w.code() == "untracked-cleanup-loop")
            .map(ToString::to_string)
            .collect();
        match missing {
            None => assert!(loops.is_empty(), "{loops:?}"),
            Some(text) => {
                assert_eq!(loops.len(), 1, "{loops:?}");
                assert!(loops[0].contains(text), "{}", loops[0]);
                assert!(
                    loops[0].contains("(/etc/ecs/ecs.config:3) misses"),
                    "{}",
                    loops[0]
                );
            }
        }
    }

    #[test]
    fn a_long_list_of_missing_images_is_cut() {
        let s = settings(
            "ECS_IMAGE_PULL_BEHAVIOR=once\nECS_ENABLE_UNTRACKED_IMAGE_CLEANUP=true\nECS_EXCLUDE_UNTRACKED_IMAGE=z:0\n",
        );
        let prefetched: Vec<String> = (0..13).map(|i| format!("r.io/app{i}:1")).collect();
        let text = s.warnings(Some(&prefetched))[0].to_string();
        assert!(
            text.contains("misses 13 images of the 13 prefetched: r.io/app0:1,"),
            "{text}"
        );
        assert!(text.contains("r.io/app9:1 and 3 more."), "{text}");
        assert!(!text.contains("r.io/app10:1"), "{text}");
    }

    /// The full text of each combination's warning: every variable with
    /// its origin, what happens, and what to do.
    #[rstest]
    #[case::pulls_again(
        "ECS_IMAGE_PULL_BEHAVIOR=default\n",
        "ECS_IMAGE_PULL_BEHAVIOR=default (/etc/ecs/ecs.config:1): the ECS agent pulls every image \
         again when a task starts, so a prefetched image saves only the download of the layers \
         that did not change, not the pull; set ECS_IMAGE_PULL_BEHAVIOR=prefer-cached for the \
         ECS agent to start containers from the local image (see docs/operations.md, \"Sharing \
         the instance with the ECS agent's cleanup\")"
    )]
    #[case::always_fails_offline(
        "ECS_IMAGE_PULL_BEHAVIOR=always\n",
        "not the pull, and a registry that cannot be reached fails the task although the image \
         is here; set ECS_IMAGE_PULL_BEHAVIOR=prefer-cached"
    )]
    #[case::untracked_loop(
        "ECS_IMAGE_PULL_BEHAVIOR=once\nECS_ENABLE_UNTRACKED_IMAGE_CLEANUP=true\n\
         ECS_IMAGE_CLEANUP_INTERVAL=15m\n",
        "ECS_ENABLE_UNTRACKED_IMAGE_CLEANUP=true (/etc/ecs/ecs.config:2): every 15m \
         (ECS_IMAGE_CLEANUP_INTERVAL, /etc/ecs/ecs.config:3) the ECS agent deletes up to 5 \
         (ECS_NUM_IMAGES_DELETE_PER_CYCLE, default) images that no task on this instance has \
         used and that were created more than 1h ago (NON_ECS_IMAGE_MINIMUM_CLEANUP_AGE, \
         default; counted from the image's build, not its pull, so an image built long ago goes \
         at the next cycle; ECS_IMAGE_MINIMUM_CLEANUP_AGE applies only to images a task used), \
         unless ECS_EXCLUDE_UNTRACKED_IMAGE names one of its tags. A prefetched image that no \
         task has started here yet is such an image: the ECS agent deletes it and pullauth \
         pulls it again, in a loop. ECS_EXCLUDE_UNTRACKED_IMAGE is unset. Add every prefetched \
         image to ECS_EXCLUDE_UNTRACKED_IMAGE as `docker images` lists it (repository:tag, \
         comma-separated, no spaces), or set ECS_ENABLE_UNTRACKED_IMAGE_CLEANUP=false"
    )]
    #[case::untracked_unverified(
        "ECS_IMAGE_PULL_BEHAVIOR=once\nECS_ENABLE_UNTRACKED_IMAGE_CLEANUP=true\n\
         ECS_EXCLUDE_UNTRACKED_IMAGE=a:1,b:2\n",
        "ECS_EXCLUDE_UNTRACKED_IMAGE (/etc/ecs/ecs.config:3) lists 2 images, but check does not \
         know which images prefetch pulls"
    )]
    #[case::disabled_and_prefer_cached_and_untracked(
        "ECS_IMAGE_PULL_BEHAVIOR=prefer-cached\nECS_DISABLE_IMAGE_CLEANUP=TRUE\n\
         ECS_ENABLE_UNTRACKED_IMAGE_CLEANUP=true\n",
        "the ECS agent's automated image cleanup does not run (ECS_DISABLE_IMAGE_CLEANUP=true \
         (/etc/ecs/ecs.config:2) and ECS_IMAGE_PULL_BEHAVIOR=prefer-cached \
         (/etc/ecs/ecs.config:1), which turns it off): nothing on this instance removes images, \
         prefetched or not; ECS_ENABLE_UNTRACKED_IMAGE_CLEANUP=true (/etc/ecs/ecs.config:3) \
         changes nothing, as the untracked cleanup runs only within it, so every image pullauth \
         prefetches stays until someone removes it"
    )]
    #[case::prefer_cached_alone(
        "ECS_IMAGE_PULL_BEHAVIOR=prefer-cached\n",
        "does not run (ECS_IMAGE_PULL_BEHAVIOR=prefer-cached (/etc/ecs/ecs.config:1), which turns \
         it off): nothing on this instance removes images, prefetched or not, so every image"
    )]
    fn warnings_say_what_where_and_what_to_do(#[case] file: &str, #[case] message: &str) {
        let warnings = settings(file).warnings(None);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let text = warnings[0].to_string();
        assert!(text.contains(message), "{text}");
    }

    /// A secret pasted into one of these variables never reaches a warning.
    #[rstest]
    #[case::json_in_interval(format!(r#"ECS_IMAGE_CLEANUP_INTERVAL={{"r.io":{{"password":"{CANARY}"}}}}"#), "looks like JSON")]
    #[case::line_in_bool(format!("ECS_DISABLE_IMAGE_CLEANUP=true ECS_ENGINE_AUTH_DATA={CANARY}"), "not shown")]
    #[case::colon_in_count(format!("ECS_NUM_IMAGES_DELETE_PER_CYCLE=u:{CANARY}"), "not shown")]
    #[case::line_in_list(
        format!(r#"ECS_EXCLUDE_UNTRACKED_IMAGE=a:1 ECS_ENGINE_AUTH_DATA={{"r.io":{{"password":"{CANARY}"}}}}"#),
        "holds ECS_ENGINE_AUTH_DATA=... after its value"
    )]
    #[case::secret_as_an_item(format!("ECS_EXCLUDE_UNTRACKED_IMAGE=a:1, {CANARY}"), "item 2 has spaces")]
    fn secrets_never_reach_a_warning(#[case] line: String, #[case] message: &str) {
        let file = format!(
            "ECS_ENGINE_AUTH_TYPE=docker\nECS_ENGINE_AUTH_DATA={{\"r.io\":{{\"username\":\"u\",\"password\":\"{CANARY}\"}}}}\n\
             ECS_ENABLE_UNTRACKED_IMAGE_CLEANUP=true\n{line}\n"
        );
        let config = Config::from_sources(&sources(&file)).expect("valid");
        let s = &config.ecs_agent;
        let shown: String = s
            .warnings(None)
            .iter()
            .chain(s.warnings(Some(&["a:1".to_owned()])).iter())
            .map(|w| format!("{w}\n{w:?}\n"))
            .chain([format!("{config:?}")])
            .collect();
        assert!(shown.contains(message), "{shown}");
        assert!(!shown.contains(CANARY), "{shown}");
    }

    #[rstest]
    #[case::official("docker.io", "library/busybox", "latest", "busybox:latest")]
    #[case::hub_namespace("docker.io", "acme/app", "1", "acme/app:1")]
    #[case::library_deeper("docker.io", "library/a/b", "1", "library/a/b:1")]
    #[case::other_registry("r.io:5000", "library/x", "2", "r.io:5000/library/x:2")]
    #[case::ecr(
        "123456789012.dkr.ecr.us-east-1.amazonaws.com",
        "team/app",
        "1.4",
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app:1.4"
    )]
    fn repo_tags_are_dockers_familiar_names(
        #[case] domain: &str,
        #[case] path: &str,
        #[case] tag: &str,
        #[case] expected: &str,
    ) {
        assert_eq!(docker_repo_tag(domain, path, tag), expected);
    }

    #[test]
    fn each_warning_is_given_once() {
        let s = settings(
            "ECS_IMAGE_PULL_BEHAVIOR=always\nECS_ENABLE_UNTRACKED_IMAGE_CLEANUP=true\nECS_EXCLUDE_UNTRACKED_IMAGE=z:0\n",
        );
        let mut once = WarnedOnce::default();
        assert_eq!(once.fresh(s.warnings(None)).len(), 2);
        assert!(once.fresh(s.warnings(None)).is_empty());
        // A different set of missing images is news.
        let prefetched = ["a:1".to_owned()];
        assert_eq!(once.fresh(s.warnings(Some(&prefetched))).len(), 1);
        assert!(once.fresh(s.warnings(Some(&prefetched))).is_empty());
    }

    #[rstest]
    #[case::minutes(Duration::from_secs(1800), "30m")]
    #[case::mixed(Duration::from_secs(5400), "1h30m")]
    #[case::hours(Duration::from_secs(10800), "3h")]
    #[case::seconds(Duration::from_secs(1), "1s")]
    #[case::millis(Duration::from_millis(500), "500ms")]
    #[case::zero(Duration::ZERO, "0s")]
    fn durations_are_written_as_go_writes_them(#[case] d: Duration, #[case] text: &str) {
        assert_eq!(go_style(d), text);
    }

    #[test]
    fn instance_attributes_are_read_as_the_ecs_agent_registers_them() {
        let s = settings("ECS_INSTANCE_ATTRIBUTES={\"stack\": \"prod\", \"team\":\"payments\"}\n");
        assert!(s.ignored.is_empty(), "{:?}", s.ignored);
        assert_eq!(
            s.instance_attributes.value,
            BTreeMap::from([
                ("stack".to_owned(), "prod".to_owned()),
                ("team".to_owned(), "payments".to_owned()),
            ])
        );
        assert_eq!(s.instance_attributes.origin, at(1));
        // Unset, empty and null: no attribute, and nothing to warn about.
        for file in [
            "",
            "ECS_INSTANCE_ATTRIBUTES=\n",
            "ECS_INSTANCE_ATTRIBUTES=null\n",
        ] {
            let s = settings(file);
            assert!(s.instance_attributes.value.is_empty(), "{file:?}");
            assert!(s.ignored.is_empty(), "{file:?}: {:?}", s.ignored);
        }
    }

    /// A value the ECS agent stops on: no attribute is taken, and the
    /// warning says where and why without quoting the value, which a
    /// mistyped line can fill with a secret.
    #[rstest]
    #[case::not_json(
        "ECS_INSTANCE_ATTRIBUTES=stack=prod",
        "it is not JSON (it stops parsing at line 1 column 1)"
    )]
    #[case::a_number_value(
        "ECS_INSTANCE_ATTRIBUTES={\"stack\": 1}",
        "it is JSON of another shape"
    )]
    #[case::an_array("ECS_INSTANCE_ATTRIBUTES=[\"stack\"]", "it is JSON of another shape")]
    #[case::two_variables_on_one_line(
        "ECS_INSTANCE_ATTRIBUTES={\"stack\":\"prod\"} ECS_ENGINE_AUTH_DATA={\"r.io\":{\"password\":\"Canary7pwQz\"}}",
        "it is not JSON (it stops parsing at line 1 column 18)"
    )]
    fn instance_attributes_that_stop_the_ecs_agent_are_warned(
        #[case] file: &str,
        #[case] why: &str,
    ) {
        let s = settings(file);
        assert!(s.instance_attributes.value.is_empty());
        assert_eq!(s.instance_attributes.origin, Origin::Default);
        let [ignored] = s.ignored.as_slice() else {
            panic!("one value ignored: {:?}", s.ignored);
        };
        assert_eq!(ignored.var, INSTANCE_ATTRIBUTES);
        let text = ignored.to_string();
        assert!(
            text.starts_with("ECS_INSTANCE_ATTRIBUTES")
                && text.contains("(/etc/ecs/ecs.config:1)")
                && text.contains("not a JSON object of string values (")
                && text.contains(&format!(": {why}; the ECS agent does not start with it")),
            "{text}"
        );
        let value = file
            .split_once('=')
            .map(|(_, value)| value)
            .unwrap_or_default();
        assert!(!text.contains(CANARY) && !text.contains(value), "{text}");
        assert!(
            !text.contains("stack"),
            "no part of the value is quoted: {text}"
        );
        assert!(!format!("{s:?}").contains(CANARY));
    }
}
