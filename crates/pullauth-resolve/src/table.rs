//! The registry table: normalized keys indexed by host, and the lookup that
//! picks the credentials for an image.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;

use pullauth_config::AuthType;
use secrecy::SecretString;

use crate::authdata::{self, AuthDataError, AuthEntry};
use crate::credentials::Credentials;
use crate::ecr::EcrRegistry;
use crate::image::{ImageRef, ImageRefError};
use crate::key::{HostPattern, KeyError, RegistryKey, masked};

/// Where a pull's credentials came from, carried on the [`Entry`] a
/// provider hands the pull, so that a failure can give the advice of that
/// source and `--json` can name its kind. Names sources and principals,
/// never a secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Origin {
    /// An `ECS_ENGINE_AUTH_DATA` key: the entry's key is the key as written.
    #[default]
    Key,
    /// The Secrets Manager secret (ARN or name) `username`/`password` were
    /// read from, and whose credentials read it.
    TaskSecret { secret: String, principal: String },
    /// `docker-credential-<helper> get` for `server`.
    Helper { helper: String, server: String },
    /// An ECR token for this registry, and whose credentials fetched it.
    Ecr {
        registry: EcrRegistry,
        principal: String,
    },
    /// An ECR Public token for this host, and whose credentials fetched it.
    EcrPublic { host: String, principal: String },
}

impl Origin {
    /// The stable kind code scripts match on (`--json`'s `source`): one of
    /// [`crate::SOURCE_CODES`] but `anonymous`.
    pub fn code(&self) -> &'static str {
        match self {
            Origin::Key => "key",
            Origin::TaskSecret { .. } => "task_secret",
            Origin::Helper { .. } => "helper",
            Origin::Ecr { .. } => "ecr",
            Origin::EcrPublic { .. } => "ecr_public",
        }
    }
}

/// One configured registry: its key and the credentials it grants. A
/// provider hands pulls entries too, for credentials from other sources:
/// their key names the source (`helper pass`), and `origin` says which.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: RegistryKey,
    pub credentials: Credentials,
    /// Where the credentials came from: [`Origin::Key`] for a configured
    /// `ECS_ENGINE_AUTH_DATA` entry.
    pub origin: Origin,
}

impl Entry {
    /// The `ECS_ENGINE_AUTH_DATA` key as written, when the credentials are
    /// that key's; `None` for credentials from another source (what
    /// `--json`'s `key` shows).
    pub fn config_key(&self) -> Option<&str> {
        (self.origin == Origin::Key).then_some(self.key.written.as_str())
    }

    /// The source as people name it, as [`crate::Source`]'s `Display`
    /// does: `key "r.io"` for a configured key, else the provider's label
    /// (`helper pass`, `secretsmanager ARN`).
    pub fn label(&self) -> String {
        match self.origin {
            Origin::Key => format!("key {:?}", self.key.written),
            _ => self.key.written.clone(),
        }
    }
}

/// Namespace (`""` for the whole host) to index in `entries`.
type Namespaces = HashMap<String, usize>;

/// Every configured registry, indexed so that a lookup costs a few hash
/// probes whatever the number of keys:
/// exact hosts first, then wildcard hosts from the most specific, and within
/// a host the longest namespace that contains the repository.
#[derive(Debug, Clone, Default)]
pub struct RegistryTable {
    /// In the order of their normalized keys, for stable listings.
    entries: Vec<Entry>,
    exact: HashMap<String, Namespaces>,
    /// Keyed by (number of leading `*` labels, suffix with port).
    wildcard: HashMap<(usize, String), Namespaces>,
    max_wildcard_labels: usize,
    unwrapped_auths: bool,
    /// `credHelpers`: normalized registry host to helper name.
    helpers: HashMap<String, String>,
    /// `credsStore`: the helper for hosts without inline auth.
    creds_store: Option<String>,
}

/// The answer for one image: where it lives and which entry applies.
#[derive(Debug, Clone)]
pub struct Resolution<'t> {
    pub image: ImageRef,
    /// `None` when no key applies: the pull is anonymous.
    pub entry: Option<&'t Entry>,
}

impl RegistryTable {
    /// A table with no credentials: every pull is anonymous.
    pub fn empty() -> RegistryTable {
        RegistryTable::default()
    }

    /// Parses `ECS_ENGINE_AUTH_DATA` of type `kind` and indexes it.
    pub fn from_auth_data(
        kind: AuthType,
        data: &SecretString,
    ) -> Result<RegistryTable, AuthDataError> {
        let parsed = authdata::parse(kind, data)?;
        if parsed.unwrapped_auths {
            tracing::info!(
                "ECS_ENGINE_AUTH_DATA is wrapped in {{\"auths\": ...}} as docker login writes \
                 config.json; using the registries inside it"
            );
        }
        for field in &parsed.ignored_fields {
            tracing::warn!(
                field = %authdata::shown_field(field),
                "ECS_ENGINE_AUTH_DATA: ignoring top-level field beside \"auths\""
            );
        }
        let mut table = RegistryTable::from_entries(parsed.entries)?;
        table.unwrapped_auths = parsed.unwrapped_auths;
        // The key as written (masked) that claimed each host, so that two
        // keys folding to one host are an error naming both, whatever
        // their order, as for `auths`.
        let mut claimed: HashMap<String, String> = HashMap::new();
        for (written, helper) in parsed.cred_helpers {
            let key = RegistryKey::parse(&written).map_err(|reason| AuthDataError::BadKey {
                key: masked(&written),
                reason,
            })?;
            let HostPattern::Exact(host) = key.host else {
                return Err(AuthDataError::BadKey {
                    key: masked(&written),
                    reason: KeyError::HelperWildcard,
                });
            };
            if !key.namespace.is_empty() {
                return Err(AuthDataError::HelperPath {
                    key: key.written,
                    namespace: key.namespace,
                });
            }
            match claimed.entry(host.clone()) {
                MapEntry::Occupied(first) => {
                    return Err(AuthDataError::DuplicateHelper {
                        first: first.get().clone(),
                        second: key.written,
                        host,
                    });
                }
                MapEntry::Vacant(slot) => {
                    slot.insert(key.written);
                }
            }
            table.helpers.insert(host, helper);
        }
        table.creds_store = parsed.creds_store;
        Ok(table)
    }

    /// Indexes already parsed entries; fails if two keys normalize to the
    /// same registry and namespace.
    pub fn from_entries(raw: Vec<AuthEntry>) -> Result<RegistryTable, AuthDataError> {
        let mut entries = Vec::with_capacity(raw.len());
        for AuthEntry { key, credentials } in raw {
            let key = RegistryKey::parse(&key).map_err(|reason| AuthDataError::BadKey {
                key: masked(&key),
                reason,
            })?;
            entries.push(Entry {
                key,
                credentials,
                origin: Origin::Key,
            });
        }
        // Sorting first makes duplicate reports and listings independent of
        // the order keys were written in.
        entries.sort_by(|a, b| {
            (&a.key.host, &a.key.namespace, &a.key.written).cmp(&(
                &b.key.host,
                &b.key.namespace,
                &b.key.written,
            ))
        });
        let mut table = RegistryTable::default();
        for (index, entry) in entries.iter().enumerate() {
            let namespaces = match &entry.key.host {
                HostPattern::Exact(host) => table.exact.entry(host.clone()).or_default(),
                HostPattern::Wildcard { labels, suffix } => {
                    table.max_wildcard_labels = table.max_wildcard_labels.max(*labels);
                    table.wildcard.entry((*labels, suffix.clone())).or_default()
                }
            };
            match namespaces.entry(entry.key.namespace.clone()) {
                MapEntry::Vacant(slot) => {
                    slot.insert(index);
                }
                MapEntry::Occupied(slot) => {
                    return Err(AuthDataError::DuplicateKey {
                        first: entries[*slot.get()].key.written.clone(),
                        second: entry.key.written.clone(),
                        normalized: entry.key.to_string(),
                    });
                }
            }
        }
        table.entries = entries;
        Ok(table)
    }

    /// Every entry, ordered by normalized key.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the data came wrapped in `{"auths": ...}`.
    pub fn unwrapped_auths(&self) -> bool {
        self.unwrapped_auths
    }

    /// The credential helper for a registry host: its `credHelpers` entry,
    /// else `credsStore`. Consulted only when no inline key applies.
    pub fn helper_for(&self, registry: &str) -> Option<&str> {
        self.helpers
            .get(registry)
            .or(self.creds_store.as_ref())
            .map(String::as_str)
    }

    /// Whether any credential helper is configured.
    pub fn has_helpers(&self) -> bool {
        !self.helpers.is_empty() || self.creds_store.is_some()
    }

    /// Parses `image` and finds the entry that applies to it.
    pub fn resolve(&self, image: &str) -> Result<Resolution<'_>, ImageRefError> {
        let image = ImageRef::parse(image)?;
        let entry = self.lookup(&image);
        Ok(Resolution { image, entry })
    }

    /// The entry for an image: an exact host match with the longest
    /// namespace containing the repository, else the most specific wildcard
    /// host (fewest `*` labels) with the longest such namespace.
    pub fn lookup(&self, image: &ImageRef) -> Option<&Entry> {
        self.find(&image.registry, |namespaces| {
            longest_namespace(namespaces, &image.repository)
        })
    }

    /// What a Docker credential helper may answer for `server_url`, the
    /// one thing Docker's helper protocol passes (`registry.example.com:5000`,
    /// `https://index.docker.io/v1/`, ...): it is normalized as a key is,
    /// and only its host counts (a path is ignored). The entry is the
    /// host-level key (no namespace) as [`RegistryTable::lookup`] ranks
    /// hosts: the exact host, else the most specific wildcard.
    pub fn for_server_url(&self, server_url: &str) -> Result<ServerLookup<'_>, KeyError> {
        let key = RegistryKey::parse(server_url)?;
        let HostPattern::Exact(host) = key.host else {
            return Err(KeyError::ServerWildcard);
        };
        let entry = self.find(&host, |namespaces| namespaces.get("").copied());
        let mut scoped: Vec<usize> = Vec::new();
        self.each_host_match(&host, |namespaces| {
            scoped.extend(
                namespaces
                    .iter()
                    .filter(|(namespace, _)| !namespace.is_empty())
                    .map(|(_, &index)| index),
            );
            // A host-level key here outranks every less specific pattern,
            // for every repository: their keys never apply to this host.
            namespaces.contains_key("")
        });
        scoped.sort_unstable();
        Ok(ServerLookup {
            host,
            entry,
            namespace_keys: scoped.into_iter().map(|i| &self.entries[i]).collect(),
        })
    }

    /// The first entry `pick` finds among the keys for `registry`: the
    /// exact host's, else each matching wildcard host's, fewest `*` first.
    fn find(&self, registry: &str, pick: impl Fn(&Namespaces) -> Option<usize>) -> Option<&Entry> {
        let mut found = None;
        self.each_host_match(registry, |namespaces| {
            found = pick(namespaces);
            found.is_some()
        });
        found.map(|index| &self.entries[index])
    }

    /// Calls `visit` with the namespaces of every host pattern matching
    /// `registry`, most specific first, until it returns `true`.
    fn each_host_match(&self, registry: &str, mut visit: impl FnMut(&Namespaces) -> bool) {
        if let Some(namespaces) = self.exact.get(registry)
            && visit(namespaces)
        {
            return;
        }
        if self.max_wildcard_labels == 0 {
            return;
        }
        let (name, port) = split_port(registry);
        let labels: Vec<&str> = name.split('.').collect();
        for wild in 1..=self.max_wildcard_labels.min(labels.len().saturating_sub(1)) {
            let suffix = format!("{}{port}", labels[wild..].join("."));
            if let Some(namespaces) = self.wildcard.get(&(wild, suffix))
                && visit(namespaces)
            {
                return;
            }
        }
    }
}

/// The answer of [`RegistryTable::for_server_url`].
#[derive(Debug, Clone)]
pub struct ServerLookup<'t> {
    /// The normalized host (`docker.io` for every Docker Hub alias).
    pub host: String,
    /// The host-level key for it, if any.
    pub entry: Option<&'t Entry>,
    /// Keys limited to a repository namespace that a pull from this host
    /// could use (those not outranked by a more specific host-level key),
    /// in table order: a server URL cannot tell which repository is
    /// pulled, so a credential helper cannot use them.
    pub namespace_keys: Vec<&'t Entry>,
}

/// The longest configured namespace equal to `repository` or containing it
/// at a `/` boundary; `""` (the whole host) last.
fn longest_namespace(namespaces: &Namespaces, repository: &str) -> Option<usize> {
    let mut candidate = repository;
    loop {
        if let Some(&found) = namespaces.get(candidate) {
            return Some(found);
        }
        if candidate.is_empty() {
            return None;
        }
        candidate = candidate.rfind('/').map_or("", |slash| &candidate[..slash]);
    }
}

/// `("host", ":port")` or `("host", "")`.
fn split_port(registry: &str) -> (&str, &str) {
    match registry.rfind(':') {
        Some(i) if !registry[i..].contains(']') => (&registry[..i], &registry[i..]),
        _ => (registry, ""),
    }
}
