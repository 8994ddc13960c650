//! Registry keys as operators write them, normalized for matching.

use std::fmt;

/// The canonical name of Docker Hub, as keys and images are reported.
pub const DOCKER_HUB: &str = "docker.io";

/// Every host name that means Docker Hub, in keys and in image references.
pub const DOCKER_HUB_ALIASES: [&str; 4] = [
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];

/// Maps any Docker Hub alias to [`DOCKER_HUB`]; other hosts are returned unchanged.
pub fn canonical_host(host: &str) -> &str {
    if DOCKER_HUB_ALIASES.contains(&host) {
        DOCKER_HUB
    } else {
        host
    }
}

/// The host part of a key: a literal host, or `*.` labels in front of a suffix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// Lower-cased `host[:port]`, with Docker Hub aliases folded to `docker.io`.
    Exact(String),
    /// `*.example.com[:port]`: `labels` leading `*` labels, each matching
    /// exactly one DNS label, before `suffix` (which carries the port).
    Wildcard { labels: usize, suffix: String },
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(host) => f.write_str(host),
            HostPattern::Wildcard { labels, suffix } => {
                for _ in 0..*labels {
                    f.write_str("*.")?;
                }
                f.write_str(suffix)
            }
        }
    }
}

/// A key of `ECS_ENGINE_AUTH_DATA` after normalization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryKey {
    /// The key as written in the data, for messages and output. It can
    /// never hold user info (`user:password@`): [`RegistryKey::parse`]
    /// rejects such a key, and this is built from [`masked`] regardless,
    /// so no consumer can show a password written into a key.
    pub written: String,
    pub host: HostPattern,
    /// Repository namespace the key is limited to; empty for a whole host.
    pub namespace: String,
}

/// Why a key cannot name a registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key is empty")]
    Empty,
    #[error(
        "a registry key cannot hold user info: remove the user:password@ part and put the \
         credentials in the entry (\"username\" and \"password\", or \"auth\")"
    )]
    UserInfo,
    #[error("only http:// and https:// may precede the registry host")]
    Scheme,
    #[error("the registry host is empty")]
    NoHost,
    #[error("the registry host may only hold letters, digits, '.', '-', '*' and a :port")]
    HostCharacters,
    #[error("the port must be a number from 1 to 65535")]
    Port,
    #[error("'*' may only stand for whole leading labels, as in *.example.com")]
    Wildcard,
    #[error(
        "the repository namespace after the host must be lowercase letters, digits and . _ - \
         separated by '/'"
    )]
    Namespace,
    #[error("a credHelpers key names one registry host; '*' is not allowed there")]
    HelperWildcard,
    #[error("a server URL names one registry host; '*' is not allowed there")]
    ServerWildcard,
}

impl RegistryKey {
    /// Normalizes a key: strips `http://`/`https://` and trailing `/`,
    /// lower-cases the host, folds Docker Hub aliases, drops a trailing API
    /// version (`/v1`, `/v2`), and keeps any other path as the namespace.
    pub fn parse(written: &str) -> Result<RegistryKey, KeyError> {
        let trimmed = written.trim();
        if trimmed.is_empty() {
            return Err(KeyError::Empty);
        }
        // No host or namespace may hold '@', so any '@' is user info; it is
        // checked first so that the message says so whatever else is wrong.
        if trimmed.contains('@') {
            return Err(KeyError::UserInfo);
        }
        let rest = strip_scheme(trimmed)?;
        let rest = rest.trim_end_matches('/');
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let host = parse_host(host)?;
        let mut components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        if matches!(components.last(), Some(&("v1" | "v2"))) {
            components.pop();
        }
        if !components.iter().all(|c| is_path_component(c)) {
            return Err(KeyError::Namespace);
        }
        Ok(RegistryKey {
            written: masked(written),
            host,
            namespace: components.join("/"),
        })
    }

    /// A reason this key can never match an image reference, if there is one.
    ///
    /// Docker reads the first component of an image as a registry only if it
    /// has a `.` or `:` or is `localhost`; a key like `myregistry` is valid
    /// but no image can name it.
    pub fn unreachable_reason(&self) -> Option<&'static str> {
        match &self.host {
            HostPattern::Exact(host)
                if !host.contains('.') && !host.contains(':') && host != "localhost" =>
            {
                Some(
                    "no image can name this host: Docker reads a registry only when it holds \
                     a '.' or ':' or is localhost",
                )
            }
            _ => None,
        }
    }
}

impl fmt::Display for RegistryKey {
    /// The normalized form, e.g. `registry.example.com/team`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.host)?;
        if !self.namespace.is_empty() {
            write!(f, "/{}", self.namespace)?;
        }
        Ok(())
    }
}

/// The text that stands in for user info in a key.
pub const USERINFO_REDACTED: &str = "<userinfo redacted>";

/// `key` as every message and output may show it: anything before its last
/// `@` (after a `scheme://`) replaced by [`USERINFO_REDACTED`], so that
/// `https://user:password@registry` shows as
/// `https://<userinfo redacted>@registry`. The username goes too: with a
/// token registry it is often the secret. Keys without `@` are unchanged.
pub fn masked(key: &str) -> String {
    let Some(at) = key.rfind('@') else {
        return key.to_owned();
    };
    let scheme_end = key[..at]
        .find("://")
        .filter(|&i| {
            let scheme = key[..i].trim_start();
            !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphabetic())
        })
        .map_or(0, |i| i + 3);
    format!("{}{USERINFO_REDACTED}{}", &key[..scheme_end], &key[at..])
}

fn strip_scheme(key: &str) -> Result<&str, KeyError> {
    for scheme in ["https://", "http://"] {
        // Compare bytes: slicing the str at the scheme's length could split
        // a multi-byte character (found by fuzzing).
        let bytes = key.as_bytes();
        if bytes.len() >= scheme.len()
            && bytes[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes())
        {
            // The matched prefix is ASCII, so its end is a char boundary.
            return Ok(&key[scheme.len()..]);
        }
    }
    if key.contains("://") {
        return Err(KeyError::Scheme);
    }
    Ok(key)
}

fn parse_host(host: &str) -> Result<HostPattern, KeyError> {
    if host.is_empty() {
        return Err(KeyError::NoHost);
    }
    let host = host.to_ascii_lowercase();
    let (name, port) = split_port(&host)?;
    if name.is_empty() {
        return Err(KeyError::NoHost);
    }
    let bracketed = name.starts_with('[') && name.ends_with(']');
    if !bracketed
        && !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '*'))
    {
        return Err(KeyError::HostCharacters);
    }
    let labels: Vec<&str> = name.split('.').collect();
    let wild = labels.iter().take_while(|&&l| l == "*").count();
    if labels[wild..]
        .iter()
        .any(|l| l.contains('*') || l.is_empty())
        || wild == labels.len()
    {
        return Err(if name.contains('*') {
            KeyError::Wildcard
        } else {
            KeyError::HostCharacters
        });
    }
    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
    if wild == 0 {
        Ok(HostPattern::Exact(format!(
            "{}{port}",
            canonical_host(name)
        )))
    } else {
        Ok(HostPattern::Wildcard {
            labels: wild,
            suffix: format!("{}{port}", labels[wild..].join(".")),
        })
    }
}

/// Splits `host:port`; an IPv6 literal must be bracketed.
fn split_port(host: &str) -> Result<(&str, Option<u16>), KeyError> {
    let port_start = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => i,
        _ => return Ok((host, None)),
    };
    let port = &host[port_start + 1..];
    match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => {
            Ok((&host[..port_start], Some(p)))
        }
        _ => Err(KeyError::Port),
    }
}

/// One component of a repository path, as distribution/reference defines it:
/// lowercase alphanumerics joined by `.`, `_`, `__` or runs of `-`.
fn is_path_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.first().is_some_and(|&b| alnum(b)) || !bytes.last().is_some_and(|&b| alnum(b)) {
        return false;
    }
    bytes
        .iter()
        .all(|&b| alnum(b) || matches!(b, b'.' | b'_' | b'-'))
        && !c.contains("..")
        && !c.contains("___")
        && !c.contains("._")
        && !c.contains("_.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn exact(host: &str) -> HostPattern {
        HostPattern::Exact(host.to_owned())
    }

    #[rstest]
    #[case::bare_host("registry.example.com", exact("registry.example.com"), "")]
    #[case::https("https://registry.example.com", exact("registry.example.com"), "")]
    #[case::http_any_case("HTTP://Registry.Example.COM/", exact("registry.example.com"), "")]
    #[case::trailing_slashes("registry.example.com///", exact("registry.example.com"), "")]
    #[case::v1_suffix("https://registry.example.com/v1/", exact("registry.example.com"), "")]
    #[case::v2_suffix("registry.example.com/v2", exact("registry.example.com"), "")]
    #[case::port("localhost:5000", exact("localhost:5000"), "")]
    #[case::namespace("registry.example.com/team", exact("registry.example.com"), "team")]
    #[case::deep_namespace("r.io/team/sub/", exact("r.io"), "team/sub")]
    #[case::namespace_with_v2_suffix("r.io/team/v2/", exact("r.io"), "team")]
    #[case::hub_legacy_url("https://index.docker.io/v1/", exact("docker.io"), "")]
    #[case::hub_short("docker.io", exact("docker.io"), "")]
    #[case::hub_registry_1("registry-1.docker.io", exact("docker.io"), "")]
    #[case::hub_registry_hub("registry.hub.docker.com", exact("docker.io"), "")]
    #[case::hub_namespace("docker.io/acme", exact("docker.io"), "acme")]
    #[case::ipv6("[::1]:5000", exact("[::1]:5000"), "")]
    #[case::wildcard(
        "*.example.com",
        HostPattern::Wildcard { labels: 1, suffix: "example.com".into() },
        ""
    )]
    #[case::wildcard_port_path(
        "https://*.Example.com:8443/team",
        HostPattern::Wildcard { labels: 1, suffix: "example.com:8443".into() },
        "team"
    )]
    #[case::two_wildcards(
        "*.*.example.com",
        HostPattern::Wildcard { labels: 2, suffix: "example.com".into() },
        ""
    )]
    fn normalizes(#[case] written: &str, #[case] host: HostPattern, #[case] namespace: &str) {
        let key = RegistryKey::parse(written).expect("valid key");
        assert_eq!(key.host, host);
        assert_eq!(key.namespace, namespace);
        assert_eq!(key.written, written);
    }

    #[rstest]
    #[case::empty("", KeyError::Empty)]
    #[case::spaces("   ", KeyError::Empty)]
    #[case::other_scheme("ftp://r.io", KeyError::Scheme)]
    #[case::only_scheme("https://", KeyError::NoHost)]
    #[case::port_not_number("r.io:http", KeyError::Port)]
    #[case::port_zero("r.io:0", KeyError::Port)]
    #[case::port_too_big("r.io:70000", KeyError::Port)]
    #[case::space_in_host("r io", KeyError::HostCharacters)]
    #[case::underscore_host("my_registry.io", KeyError::HostCharacters)]
    #[case::wildcard_in_middle("r.*.io", KeyError::Wildcard)]
    #[case::partial_wildcard("r*.io", KeyError::Wildcard)]
    #[case::only_wildcard("*", KeyError::Wildcard)]
    #[case::empty_label("r..io", KeyError::HostCharacters)]
    #[case::uppercase_namespace("r.io/Team", KeyError::Namespace)]
    #[case::bad_namespace("r.io/-team", KeyError::Namespace)]
    fn rejects(#[case] written: &str, #[case] error: KeyError) {
        assert_eq!(RegistryKey::parse(written), Err(error));
    }

    /// Keys with user info, each holding the canary password: rejected,
    /// and shown with the user info masked.
    #[rstest]
    #[case::https_user_password("https://alice:Canary7pw@r.io", "https://<userinfo redacted>@r.io")]
    #[case::bare_user_password(
        "alice:Canary7pw@r.io:5000/team",
        "<userinfo redacted>@r.io:5000/team"
    )]
    #[case::token_as_user("Canary7pw@ghcr.io", "<userinfo redacted>@ghcr.io")]
    #[case::at_in_password("HTTP://a:Canary7pw@x@r.io/", "HTTP://<userinfo redacted>@r.io/")]
    #[case::slash_in_password("https://a:Cana/ry7pw@r.io", "https://<userinfo redacted>@r.io")]
    #[case::other_scheme("ftp://a:Canary7pw@r.io", "ftp://<userinfo redacted>@r.io")]
    #[case::padded(" https://a:Canary7pw@r.io ", " https://<userinfo redacted>@r.io ")]
    #[case::colon_scheme_in_password("a:b://Canary7pw@r.io", "<userinfo redacted>@r.io")]
    fn rejects_and_masks_user_info(#[case] written: &str, #[case] shown: &str) {
        assert_eq!(RegistryKey::parse(written), Err(KeyError::UserInfo));
        assert_eq!(masked(written), shown);
        let message = KeyError::UserInfo.to_string();
        assert!(
            message.contains("remove the user:password@ part"),
            "{message}"
        );
        assert!(!masked(written).contains("Canary7pw"));
        assert!(!masked(written).contains("Cana"));
    }

    #[rstest]
    #[case::plain("r.io/team")]
    #[case::scheme("https://r.io:5000/v2/")]
    #[case::not_a_key("not a registry!")]
    fn masking_leaves_keys_without_user_info_alone(#[case] written: &str) {
        assert_eq!(masked(written), written);
    }

    #[test]
    fn multibyte_char_across_the_scheme_length_does_not_panic() {
        // Fuzzing found a panic slicing "registrö.example.com" at byte 8.
        for key in ["registrö.example.com", "regisö", "ö"] {
            assert_eq!(
                RegistryKey::parse(key),
                Err(KeyError::HostCharacters),
                "{key}"
            );
        }
        assert_eq!(RegistryKey::parse("httpsé://x"), Err(KeyError::Scheme));
    }

    #[test]
    fn flags_keys_no_image_can_name() {
        let key = RegistryKey::parse("myregistry/team").expect("valid");
        assert!(key.unreachable_reason().is_some());
        for ok in ["localhost", "myregistry:5000", "r.io", "*.example.com"] {
            let key = RegistryKey::parse(ok).expect("valid");
            assert_eq!(key.unreachable_reason(), None, "{ok}");
        }
    }

    #[test]
    fn displays_normalized_form() {
        let key = RegistryKey::parse("HTTPS://*.Example.com:8443/team/v2/").expect("valid");
        assert_eq!(key.to_string(), "*.example.com:8443/team");
    }
}
