//! Fuzzes image references and registry keys: `ImageRef::parse`,
//! `RegistryTable::resolve` on a fixed table, and `RegistryKey::parse`, all
//! on the same input string.
//!
//! Asserts, for any string:
//! - none of the three panics;
//! - `resolve` fails exactly when `ImageRef::parse` does, with the same
//!   error, and otherwise resolves the same `ImageRef`;
//! - a parsed image has a non-empty, lowercase `registry`, a non-empty
//!   lowercase `repository`, no empty tag, and keeps the original text;
//! - its Docker form (`domain`, `path`) is what the matching form folds:
//!   `registry` is `domain` lower-cased with Hub aliases folded, and
//!   `repository` is `path` (with `library/` added only on a Hub alias);
//!   `domain` is `docker.io` only for Hub names, `docker.io` and
//!   `index.docker.io`, else the first component exactly as written; the
//!   path is at most 255 characters;
//! - its `pull_reference()` (Docker's form) parses back to the same domain,
//!   path, registry, repository and tag-or-digest;
//! - the entry `resolve` picks is the one a brute-force scan of the table
//!   picks (exact host before wildcard, fewer `*` labels first, longest
//!   namespace containing the repository);
//! - a parsed key keeps the text as written, has a lowercase host with no
//!   '*' in an exact host or in a wildcard's suffix, a namespace of valid
//!   lowercase components, and its normalized form (Display) parses back
//!   to the same host and namespace (unless that namespace ends in a
//!   component `v1`/`v2`, which a second parse takes for an API version).

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pullauth_config::AuthType;
use pullauth_resolve::image::NAME_MAX_LEN;
use pullauth_resolve::key::canonical_host;
use pullauth_resolve::{DOCKER_HUB, Entry, HostPattern, ImageRef, RegistryKey, RegistryTable};
use secrecy::SecretString;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check_image(&text);
    check_key(&text);
});

/// Keys chosen to overlap: hosts with and without namespaces, Docker Hub
/// aliases, ports, and wildcards of one to three labels.
const KEYS: &[&str] = &[
    "r.io",
    "https://r.io/team/",
    "r.io/team/sub",
    "R.IO:5000",
    "https://index.docker.io/v1/",
    "docker.io/acme",
    "registry-1.docker.io/library/busybox",
    "localhost:5000",
    "localhost/team",
    "*.example.com",
    "*.*.example.com",
    "*.example.com/team",
    "*.example.com:8443",
    "a.example.com/x",
    "*.dkr.ecr.us-west-2.amazonaws.com",
    "123456789012.dkr.ecr.us-west-2.amazonaws.com",
    "*.*.*.us-west-2.amazonaws.com",
    "myregistry",
    "[::1]:5000",
    "[fe80::1]/team",
];

fn table() -> &'static RegistryTable {
    static TABLE: OnceLock<RegistryTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let members: Vec<String> = KEYS
            .iter()
            .map(|k| format!("{k:?}:{{\"username\":{k:?},\"password\":\"p\"}}"))
            .collect();
        let data = SecretString::from(format!("{{{}}}", members.join(",")));
        let table =
            RegistryTable::from_auth_data(AuthType::Docker, &data).expect("the fixed table parses");
        assert_eq!(table.len(), KEYS.len());
        table
    })
}

fn check_image(text: &str) {
    let parsed = ImageRef::parse(text);
    let resolved = table().resolve(text);
    let image = match (&parsed, &resolved) {
        (Ok(image), Ok(resolution)) => {
            assert_eq!(image, &resolution.image, "resolve parsed differently");
            let expected = brute_force(table(), image).map(|e| e.key.written.as_str());
            let got = resolution.entry.map(|e| e.key.written.as_str());
            assert_eq!(got, expected, "resolve picked another entry for {image:?}");
            image
        }
        (Err(a), Err(b)) => {
            assert_eq!(a, b);
            assert_eq!(a.image, text);
            let _ = a.to_string();
            return;
        }
        _ => panic!(
            "parse and resolve disagree: {parsed:?} vs {:?}",
            resolved.map(|r| r.image)
        ),
    };

    assert_eq!(image.original, text);
    assert!(!image.registry.is_empty(), "{image:?}");
    assert!(
        !image.registry.chars().any(char::is_uppercase),
        "registry not lowercase: {image:?}"
    );
    assert!(!image.repository.is_empty(), "empty repository: {image:?}");
    if let Some(tag) = &image.tag {
        assert!(!tag.is_empty(), "empty tag: {image:?}");
    }
    assert!(
        !image.repository.chars().any(char::is_uppercase),
        "repository not lowercase: {image:?}"
    );

    assert_eq!(
        image.registry,
        canonical_host(&image.domain.to_ascii_lowercase()),
        "matching registry is not the folded domain: {image:?}"
    );
    let library = format!("library/{}", image.path);
    assert!(
        image.repository == image.path
            || (image.registry == DOCKER_HUB && image.repository == library),
        "matching repository is not the path: {image:?}"
    );
    assert!(image.path.len() <= NAME_MAX_LEN, "path too long: {image:?}");
    assert_eq!(image.name(), format!("{}/{}", image.domain, image.path));
    let first = text.split_once('/').map(|(first, _)| first);
    if image.domain == DOCKER_HUB {
        assert!(
            matches!(first, None | Some("docker.io" | "index.docker.io"))
                || first.is_some_and(|f| !f.contains(['.', ':']) && f != "localhost"),
            "domain folded to docker.io from something else: {image:?}"
        );
    } else {
        assert_eq!(
            first,
            Some(image.domain.as_str()),
            "domain not as written: {image:?}"
        );
    }

    let reference = image.pull_reference();
    match ImageRef::parse(&reference) {
        Ok(again) => {
            assert_eq!(again.domain, image.domain, "{reference}");
            assert_eq!(again.path, image.path, "{reference}");
            assert_eq!(again.registry, image.registry, "{reference}");
            assert_eq!(again.repository, image.repository, "{reference}");
            assert_eq!(again.tag_or_digest(), image.tag_or_digest(), "{reference}");
        }
        Err(err) => panic!("pull_reference {reference:?} of {text:?} does not parse: {err}"),
    }
}

/// The entry the table should pick, by scanning every entry.
fn brute_force<'t>(table: &'t RegistryTable, image: &ImageRef) -> Option<&'t Entry> {
    let contains = |namespace: &str| {
        namespace.is_empty()
            || image.repository == namespace
            || image
                .repository
                .strip_prefix(namespace)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    let exact = table
        .entries()
        .iter()
        .filter(|e| matches!(&e.key.host, HostPattern::Exact(h) if *h == image.registry))
        .filter(|e| contains(&e.key.namespace))
        .max_by_key(|e| e.key.namespace.len());
    if exact.is_some() {
        return exact;
    }
    let (name, port) = match image.registry.rfind(':') {
        Some(i) if !image.registry[i..].contains(']') => image.registry.split_at(i),
        _ => (image.registry.as_str(), ""),
    };
    let labels: Vec<&str> = name.split('.').collect();
    table
        .entries()
        .iter()
        .filter(|e| match &e.key.host {
            HostPattern::Wildcard { labels: n, suffix } => {
                *n < labels.len() && format!("{}{port}", labels[*n..].join(".")) == *suffix
            }
            HostPattern::Exact(_) => false,
        })
        .filter(|e| contains(&e.key.namespace))
        .min_by_key(|e| match &e.key.host {
            HostPattern::Wildcard { labels, .. } => (*labels, usize::MAX - e.key.namespace.len()),
            HostPattern::Exact(_) => unreachable!(),
        })
}

fn check_key(text: &str) {
    let key = match RegistryKey::parse(text) {
        Ok(key) => key,
        Err(err) => {
            let _ = err.to_string();
            return;
        }
    };
    assert_eq!(key.written, text);
    let host = key.host.to_string();
    assert!(!host.is_empty(), "{key:?}");
    assert!(
        !host.bytes().any(|b| b.is_ascii_uppercase()),
        "host not lowercase: {key:?}"
    );
    match &key.host {
        HostPattern::Exact(h) => assert!(!h.contains('*'), "'*' in an exact host: {key:?}"),
        HostPattern::Wildcard { labels, suffix } => {
            assert!(*labels >= 1, "{key:?}");
            assert!(
                !suffix.is_empty() && !suffix.contains('*'),
                "bad wildcard suffix: {key:?}"
            );
            assert!(
                !suffix.starts_with('.') && !suffix.starts_with(':'),
                "bad wildcard suffix: {key:?}"
            );
        }
    }
    if !key.namespace.is_empty() {
        for component in key.namespace.split('/') {
            assert!(!component.is_empty(), "empty namespace component: {key:?}");
            assert!(
                component.bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'.' | b'_' | b'-')),
                "bad namespace component: {key:?}"
            );
        }
    }
    let _ = key.unreachable_reason();

    let last = key.namespace.rsplit('/').next().unwrap_or("");
    if last != "v1" && last != "v2" {
        let normalized = key.to_string();
        match RegistryKey::parse(&normalized) {
            Ok(again) => {
                assert_eq!(
                    again.host, key.host,
                    "normalizing {normalized:?} again changed the host"
                );
                assert_eq!(
                    again.namespace, key.namespace,
                    "normalizing {normalized:?} again changed the namespace"
                );
            }
            Err(err) => panic!("normalized key {normalized:?} of {text:?} does not parse: {err}"),
        }
    }
}
