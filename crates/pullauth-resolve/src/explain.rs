//! Why each configured key applies to an image or not: the matcher of
//! [`RegistryTable::lookup`] spelled out key by key, for `pullauth resolve
//! --explain`.
//!
//! This is a second, deliberately naive implementation of the same rules:
//! every key is compared with the image on its own, then the matching keys
//! are ranked. The indexed lookup and this must agree on the winner (a
//! property test checks it), so an explanation never describes a choice the
//! pull would not make.

use std::cmp::Reverse;
use std::fmt;

use crate::image::ImageRef;
use crate::key::HostPattern;
use crate::table::{Entry, RegistryTable};

/// Why one key applies to an image or not. [`Reason::code`] is stable for
/// scripts; the variants are listed in the order the matcher asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The key applies: its credentials are used for the image.
    Applies,
    /// The key names another host.
    OtherHost,
    /// Same host name, but another port (or a port on one side only).
    OtherPort,
    /// A wildcard whose `*` labels do not stand for exactly as many labels
    /// of the image's host (`*.example.com` matches one label, not zero or two).
    WildcardDepth,
    /// The key's namespace is a prefix of the repository, but not at a `/`
    /// boundary (`r.io/team` against `r.io/teammate/app`).
    NamespaceBoundary,
    /// The key's namespace does not contain the repository.
    OtherNamespace,
    /// The key matches, but a key for the same host with a longer namespace wins.
    BeatenByLongerNamespace,
    /// The key is a wildcard that matches, but a key for the exact host wins.
    BeatenByExactHost,
    /// The key is a wildcard that matches, but one with fewer `*` labels wins.
    BeatenByFewerWildcards,
}

impl Reason {
    /// Every reason, in the order of [`Reason`]'s variants.
    pub const ALL: [Reason; 9] = [
        Reason::Applies,
        Reason::OtherHost,
        Reason::OtherPort,
        Reason::WildcardDepth,
        Reason::NamespaceBoundary,
        Reason::OtherNamespace,
        Reason::BeatenByLongerNamespace,
        Reason::BeatenByExactHost,
        Reason::BeatenByFewerWildcards,
    ];

    /// The stable code scripts match on, e.g. `other_port`.
    pub fn code(self) -> &'static str {
        match self {
            Reason::Applies => "applies",
            Reason::OtherHost => "other_host",
            Reason::OtherPort => "other_port",
            Reason::WildcardDepth => "wildcard_depth",
            Reason::NamespaceBoundary => "namespace_boundary",
            Reason::OtherNamespace => "other_namespace",
            Reason::BeatenByLongerNamespace => "beaten_by_longer_namespace",
            Reason::BeatenByExactHost => "beaten_by_exact_host",
            Reason::BeatenByFewerWildcards => "beaten_by_fewer_wildcards",
        }
    }

    /// Whether the key matches the image (it applies or was beaten).
    pub fn matches(self) -> bool {
        matches!(
            self,
            Reason::Applies
                | Reason::BeatenByLongerNamespace
                | Reason::BeatenByExactHost
                | Reason::BeatenByFewerWildcards
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One key's verdict for one image.
#[derive(Debug, Clone)]
pub struct KeyVerdict<'t> {
    pub entry: &'t Entry,
    pub reason: Reason,
    /// One sentence for people, naming hosts, namespaces and keys (as
    /// written, so user info is already masked), never a credential.
    pub detail: String,
}

impl KeyVerdict<'_> {
    /// Whether this key's credentials are used for the image.
    pub fn applies(&self) -> bool {
        self.reason == Reason::Applies
    }
}

/// Every key's verdict for one image, in the table's order.
#[derive(Debug, Clone)]
pub struct Explanation<'t> {
    pub image: ImageRef,
    /// The entry whose credentials are used; `None`: the pull is anonymous.
    pub winner: Option<&'t Entry>,
    pub keys: Vec<KeyVerdict<'t>>,
}

/// How a key matches an image: which tier it competes in, and how long its
/// namespace is. Lower tiers win; within a tier the longest namespace wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    /// 0 for an exact host, else the number of `*` labels.
    tier: usize,
    namespace_len: Reverse<usize>,
}

/// A key that does not match: why, and the sentence saying so.
type Mismatch = (Reason, String);

impl RegistryTable {
    /// Every key's verdict for `image`, and the winner; the winner is the
    /// entry [`RegistryTable::lookup`] returns.
    pub fn explain(&self, image: &ImageRef) -> Explanation<'_> {
        let first: Vec<(&Entry, Result<Rank, Mismatch>)> = self
            .entries()
            .iter()
            .map(|entry| (entry, compare(entry, image)))
            .collect();
        let winner = first
            .iter()
            .filter_map(|(entry, rank)| rank.as_ref().ok().map(|rank| (*rank, *entry)))
            .min_by_key(|(rank, _)| *rank);
        let keys = first
            .into_iter()
            .map(|(entry, rank)| {
                let (reason, detail) = match (rank, winner) {
                    (Err(verdict), _) => verdict,
                    (Ok(_), Some((_, won))) if std::ptr::eq(won, entry) => {
                        (Reason::Applies, applies_detail(entry, image))
                    }
                    (Ok(rank), Some((won_rank, won))) => beaten(rank, won_rank, won),
                    // A matching key means there is a winner.
                    (Ok(_), None) => (Reason::Applies, applies_detail(entry, image)),
                };
                KeyVerdict {
                    entry,
                    reason,
                    detail,
                }
            })
            .collect();
        Explanation {
            image: image.clone(),
            winner: winner.map(|(_, entry)| entry),
            keys,
        }
    }
}

/// The key's rank if it matches `image`, else why not.
fn compare(entry: &Entry, image: &ImageRef) -> Result<Rank, Mismatch> {
    let key = &entry.key;
    let (image_name, image_port) = split_port(&image.registry);
    let tier = match &key.host {
        HostPattern::Exact(host) => {
            let (name, port) = split_port(host);
            if name != image_name {
                let mut detail = format!(
                    "the key is for host {host}, the image is on {}",
                    image.registry
                );
                if let Some(why) = key.unreachable_reason() {
                    detail.push_str(&format!(" ({why})"));
                }
                return Err((Reason::OtherHost, detail));
            }
            if port != image_port {
                return Err((
                    Reason::OtherPort,
                    format!(
                        "same host name, but the key's port is {} and the image's {}",
                        shown_port(port),
                        shown_port(image_port)
                    ),
                ));
            }
            0
        }
        HostPattern::Wildcard { labels, suffix } => {
            let (suffix_name, port) = split_port(suffix);
            let image_labels: Vec<&str> = image_name.split('.').collect();
            let suffix_labels: Vec<&str> = suffix_name.split('.').collect();
            if image_labels.len() < suffix_labels.len()
                || image_labels[image_labels.len() - suffix_labels.len()..] != suffix_labels[..]
            {
                return Err((
                    Reason::OtherHost,
                    format!(
                        "the key is for hosts under {suffix_name}, the image is on {}",
                        image.registry
                    ),
                ));
            }
            let depth = image_labels.len() - suffix_labels.len();
            if depth != *labels {
                return Err((
                    Reason::WildcardDepth,
                    format!(
                        "{} matches exactly {labels} label(s) before {suffix_name}; {image_name} has {depth}",
                        key.host
                    ),
                ));
            }
            if port != image_port {
                return Err((
                    Reason::OtherPort,
                    format!(
                        "the host name matches {}, but the key's port is {} and the image's {}",
                        key.host,
                        shown_port(port),
                        shown_port(image_port)
                    ),
                ));
            }
            *labels
        }
    };
    let namespace = key.namespace.as_str();
    let repository = image.repository.as_str();
    if !contains(namespace, repository) {
        return Err(if repository.starts_with(namespace) {
            (
                Reason::NamespaceBoundary,
                format!(
                    "namespace {namespace} is a prefix of repository {repository} but does not \
                     end at a '/'"
                ),
            )
        } else {
            (
                Reason::OtherNamespace,
                format!("namespace {namespace} does not contain repository {repository}"),
            )
        });
    }
    Ok(Rank {
        tier,
        namespace_len: Reverse(namespace.len()),
    })
}

/// Whether `namespace` (`""`: the whole host) contains `repository`.
fn contains(namespace: &str, repository: &str) -> bool {
    namespace.is_empty()
        || repository == namespace
        || repository
            .strip_prefix(namespace)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn applies_detail(entry: &Entry, image: &ImageRef) -> String {
    let host = match &entry.key.host {
        HostPattern::Exact(host) => format!("exact host {host}"),
        HostPattern::Wildcard { .. } => {
            format!("wildcard {} matches {}", entry.key.host, image.registry)
        }
    };
    let namespace = if entry.key.namespace.is_empty() {
        "whole host".to_owned()
    } else {
        format!(
            "namespace {} contains repository {}",
            entry.key.namespace, image.repository
        )
    };
    format!("{host}, {namespace}; the best match")
}

/// Why a matching key with `rank` loses to `won`.
fn beaten(rank: Rank, won_rank: Rank, won: &Entry) -> Mismatch {
    let winner = &won.key.written;
    if won_rank.tier == rank.tier {
        (
            Reason::BeatenByLongerNamespace,
            format!(
                "matches, but {winner:?} has a longer namespace ({})",
                won.key.namespace
            ),
        )
    } else if won_rank.tier == 0 {
        (
            Reason::BeatenByExactHost,
            format!("matches, but {winner:?} names the exact host, which beats any wildcard"),
        )
    } else {
        (
            Reason::BeatenByFewerWildcards,
            format!(
                "matches, but {winner:?} has fewer '*' labels ({} against {})",
                won_rank.tier, rank.tier
            ),
        )
    }
}

/// `("host", ":port")` or `("host", "")`, as the table splits hosts.
fn split_port(registry: &str) -> (&str, &str) {
    match registry.rfind(':') {
        Some(i) if !registry[i..].contains(']') => (&registry[..i], &registry[i..]),
        _ => (registry, ""),
    }
}

fn shown_port(port: &str) -> &str {
    if port.is_empty() { "none" } else { &port[1..] }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;
    use rstest::rstest;

    use super::*;
    use crate::authdata::AuthEntry;
    use crate::credentials::Credentials;

    fn table(keys: &[&str]) -> RegistryTable {
        let entries = keys
            .iter()
            .map(|key| AuthEntry {
                key: (*key).to_owned(),
                credentials: Credentials::basic(format!("user-of-{key}"), "pw"),
            })
            .collect();
        RegistryTable::from_entries(entries).expect("valid keys")
    }

    /// One row per rule of the matcher: the keys configured, the image,
    /// the key (as written) whose verdict is checked, its reason, and the
    /// key that wins ("" for none).
    #[rstest]
    #[case::exact_host(&["r.io"], "r.io/app", "r.io", Reason::Applies, "r.io")]
    #[case::host_case_folded(&["R.IO"], "R.io/app", "R.IO", Reason::Applies, "R.IO")]
    #[case::other_host(&["q.io"], "r.io/app", "q.io", Reason::OtherHost, "")]
    #[case::unreachable_key(&["myregistry"], "r.io/app", "myregistry", Reason::OtherHost, "")]
    #[case::key_has_port(&["r.io:5000"], "r.io/app", "r.io:5000", Reason::OtherPort, "")]
    #[case::image_has_port(&["r.io"], "r.io:5000/app", "r.io", Reason::OtherPort, "")]
    #[case::ports_differ(&["r.io:5000"], "r.io:5001/app", "r.io:5000", Reason::OtherPort, "")]
    #[case::same_port(&["r.io:5000"], "r.io:5000/app", "r.io:5000", Reason::Applies, "r.io:5000")]
    #[case::namespace_contains(&["r.io/team"], "r.io/team/app", "r.io/team", Reason::Applies, "r.io/team")]
    #[case::namespace_equals(&["r.io/team/app"], "r.io/team/app", "r.io/team/app", Reason::Applies, "r.io/team/app")]
    #[case::namespace_boundary(&["r.io/team"], "r.io/teammate/app", "r.io/team", Reason::NamespaceBoundary, "")]
    #[case::other_namespace(&["r.io/team"], "r.io/other/app", "r.io/team", Reason::OtherNamespace, "")]
    #[case::namespace_below_repository(&["r.io/team/app"], "r.io/team", "r.io/team/app", Reason::OtherNamespace, "")]
    #[case::longer_namespace_wins(&["r.io", "r.io/team"], "r.io/team/app", "r.io", Reason::BeatenByLongerNamespace, "r.io/team")]
    #[case::host_key_when_namespace_misses(&["r.io", "r.io/team"], "r.io/other", "r.io", Reason::Applies, "r.io")]
    #[case::wildcard_one_label(&["*.example.com"], "a.example.com/app", "*.example.com", Reason::Applies, "*.example.com")]
    #[case::wildcard_zero_labels(&["*.example.com"], "example.com/app", "*.example.com", Reason::WildcardDepth, "")]
    #[case::wildcard_two_labels(&["*.example.com"], "a.b.example.com/app", "*.example.com", Reason::WildcardDepth, "")]
    #[case::two_wildcards(&["*.*.example.com"], "a.b.example.com/app", "*.*.example.com", Reason::Applies, "*.*.example.com")]
    #[case::wildcard_other_suffix(&["*.example.com"], "a.example.org/app", "*.example.com", Reason::OtherHost, "")]
    #[case::wildcard_other_port(&["*.example.com:8443"], "a.example.com/app", "*.example.com:8443", Reason::OtherPort, "")]
    #[case::wildcard_namespace_boundary(&["*.example.com/team"], "a.example.com/teammate", "*.example.com/team", Reason::NamespaceBoundary, "")]
    #[case::exact_beats_wildcard(&["*.example.com", "a.example.com"], "a.example.com/app", "*.example.com", Reason::BeatenByExactHost, "a.example.com")]
    #[case::exact_beats_longer_wildcard_namespace(&["*.example.com/team", "a.example.com"], "a.example.com/team/app", "*.example.com/team", Reason::BeatenByExactHost, "a.example.com")]
    #[case::wildcard_when_exact_namespace_misses(&["a.example.com/other", "*.example.com"], "a.example.com/app", "a.example.com/other", Reason::OtherNamespace, "*.example.com")]
    #[case::fewer_wildcards_win(&["*.*.example.com", "*.b.example.com"], "a.b.example.com/app", "*.*.example.com", Reason::BeatenByFewerWildcards, "*.b.example.com")]
    #[case::wildcard_longer_namespace(&["*.example.com", "*.example.com/team"], "a.example.com/team/app", "*.example.com", Reason::BeatenByLongerNamespace, "*.example.com/team")]
    #[case::hub_legacy_key(&["https://index.docker.io/v1/"], "busybox", "https://index.docker.io/v1/", Reason::Applies, "https://index.docker.io/v1/")]
    #[case::hub_alias_image(&["docker.io"], "registry-1.docker.io/acme/app", "docker.io", Reason::Applies, "docker.io")]
    #[case::hub_namespace(&["docker.io/acme"], "acme/app", "docker.io/acme", Reason::Applies, "docker.io/acme")]
    #[case::hub_official_is_library(&["docker.io/acme"], "busybox", "docker.io/acme", Reason::OtherNamespace, "")]
    fn explains(
        #[case] keys: &[&str],
        #[case] image: &str,
        #[case] key: &str,
        #[case] reason: Reason,
        #[case] winner: &str,
    ) {
        let table = table(keys);
        let image = ImageRef::parse(image).expect("valid image");
        let explanation = table.explain(&image);
        let verdict = explanation
            .keys
            .iter()
            .find(|v| v.entry.key.written == key)
            .expect("every key has a verdict");
        assert_eq!(verdict.reason, reason, "{}", verdict.detail);
        assert_eq!(
            explanation.winner.map_or("", |e| e.key.written.as_str()),
            winner
        );
        assert_eq!(explanation.keys.len(), keys.len());
        assert_eq!(
            explanation.keys.iter().filter(|v| v.applies()).count(),
            usize::from(!winner.is_empty())
        );
        let looked_up = table.lookup(&image).map(|e| e.key.written.as_str());
        assert_eq!(
            looked_up,
            explanation.winner.map(|e| e.key.written.as_str())
        );
    }

    #[test]
    fn details_name_what_differs() {
        let table = table(&["r.io:5000", "myregistry", "*.example.com"]);
        let detail = |image: &str, key: &str| {
            let image = ImageRef::parse(image).expect("valid image");
            table
                .explain(&image)
                .keys
                .into_iter()
                .find(|v| v.entry.key.written == key)
                .map(|v| v.detail)
                .expect("verdict")
        };
        assert_eq!(
            detail("r.io/app", "r.io:5000"),
            "same host name, but the key's port is 5000 and the image's none"
        );
        assert!(detail("r.io/app", "myregistry").contains("no image can name this host"));
        assert_eq!(
            detail("a.b.example.com/app", "*.example.com"),
            "*.example.com matches exactly 1 label(s) before example.com; a.b.example.com has 2"
        );
    }

    #[test]
    fn reason_codes_are_distinct_snake_case() {
        let codes: BTreeSet<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), Reason::ALL.len());
        for code in codes {
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{code}"
            );
        }
    }

    #[test]
    fn empty_table_explains_nothing() {
        let image = ImageRef::parse("r.io/app").expect("valid image");
        let table = RegistryTable::empty();
        let explanation = table.explain(&image);
        assert!(explanation.winner.is_none());
        assert!(explanation.keys.is_empty());
    }

    /// Keys from a small alphabet, so that generated tables and images
    /// collide often: hosts, ports, wildcards and namespaces all overlap.
    fn key_strategy() -> impl Strategy<Value = String> {
        let label = prop::sample::select(vec!["a", "b", "r", "example", "com", "io", "docker"]);
        (
            0usize..3,
            prop::collection::vec(label, 1..4),
            prop::sample::select(vec!["", ":5000", ":443"]),
            prop::sample::select(vec![
                "",
                "/team",
                "/team/app",
                "/teammate",
                "/other",
                "/library",
            ]),
        )
            .prop_map(|(wild, labels, port, namespace)| {
                format!("{}{}{port}{namespace}", "*.".repeat(wild), labels.join("."))
            })
    }

    fn image_strategy() -> impl Strategy<Value = String> {
        let label = prop::sample::select(vec!["a", "b", "r", "example", "com", "io", "docker"]);
        (
            prop::collection::vec(label, 1..5),
            prop::sample::select(vec!["", ":5000", ":443"]),
            prop::sample::select(vec![
                "app",
                "team",
                "team/app",
                "team/app/x",
                "teammate/app",
                "other/x",
            ]),
        )
            .prop_map(|(labels, port, repository)| {
                format!("{}{port}/{repository}", labels.join("."))
            })
    }

    proptest! {
        #[test]
        fn explain_agrees_with_lookup(
            keys in prop::collection::btree_set(key_strategy(), 0..12),
            images in prop::collection::vec(image_strategy(), 1..6),
        ) {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let entries = keys
                .iter()
                .map(|key| AuthEntry {
                    key: (*key).to_owned(),
                    credentials: Credentials::basic("u", "pw"),
                })
                .collect();
            // Keys like "docker.io" and "docker.io/library" can fold together.
            let Ok(table) = RegistryTable::from_entries(entries) else {
                return Ok(());
            };
            for image in &images {
                let Ok(image) = ImageRef::parse(image) else { continue };
                let explanation = table.explain(&image);
                let looked_up = table.lookup(&image);
                prop_assert_eq!(
                    explanation.winner.map(std::ptr::from_ref),
                    looked_up.map(std::ptr::from_ref),
                    "{}", image.original
                );
                prop_assert_eq!(explanation.keys.len(), table.len());
                let applying: Vec<_> = explanation.keys.iter().filter(|v| v.applies()).collect();
                prop_assert_eq!(applying.len(), usize::from(looked_up.is_some()));
                for verdict in &explanation.keys {
                    // A beaten key would have won alone, and a key that does
                    // not match finds nothing alone.
                    let alone = RegistryTable::from_entries(vec![AuthEntry {
                        key: verdict.entry.key.written.clone(),
                        credentials: Credentials::basic("u", "pw"),
                    }])
                    .expect("one key is never a duplicate");
                    prop_assert_eq!(
                        alone.lookup(&image).is_some(),
                        verdict.reason.matches(),
                        "{} for {}: {}", verdict.entry.key.written, image.original, verdict.detail
                    );
                }
            }
        }
    }
}
