//! Parsing `ECS_ENGINE_AUTH_DATA` in either of the ECS agent's two shapes.
//!
//! The JSON is read into an order- and duplicate-preserving tree (`Node`)
//! rather than `serde_json::Value`, so that a key written twice is an error
//! instead of a silent last-one-wins, and so that errors can be reported
//! without serde_json's messages, which quote the offending value.

use std::fmt;

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use pullauth_config::{AUTH_DATA, AuthType};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::credentials::Credentials;
use crate::key::{KeyError, masked};

/// Why `ECS_ENGINE_AUTH_DATA` cannot be used. Messages name the variable and
/// the registry key, never a value: every `key` here is [`masked`] (user info
/// such as `user:password@` replaced), and every `field` is a field name as
/// [`shown_field`] shows it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthDataError {
    #[error("{AUTH_DATA} is not valid JSON (line {line}, column {column})")]
    Syntax { line: usize, column: usize },
    #[error("{AUTH_DATA} must be a JSON object mapping registry keys to credentials")]
    NotObject,
    #[error("{AUTH_DATA}: \"auths\" must be an object mapping registry keys to credentials")]
    AuthsNotObject,
    #[error(
        "{AUTH_DATA}: \"credHelpers\" must be an object mapping registry hosts to helper names"
    )]
    CredHelpersNotObject,
    #[error("{AUTH_DATA}: \"credsStore\" must be a string naming a credential helper")]
    CredsStoreNotString,
    #[error(
        "{AUTH_DATA}: credential helper name {name:?} is not a plain name (letters, digits, '-', '_', '.')"
    )]
    BadHelperName { name: String },
    #[error("{AUTH_DATA} entry {key:?} must be a JSON object")]
    EntryNotObject { key: String },
    #[error("{AUTH_DATA} entry {key:?}: field {field:?} must be a string")]
    FieldNotString { key: String, field: String },
    #[error("{AUTH_DATA} entry {key:?}: field {field:?} appears twice")]
    FieldTwice { key: String, field: String },
    #[error(
        "{AUTH_DATA} entry {key:?}: \"auth\" is not valid base64; it must be base64 of \"user:password\""
    )]
    BadBase64 { key: String },
    #[error(
        "{AUTH_DATA} entry {key:?}: \"auth\" does not decode to UTF-8 text; it must be base64 of \"user:password\""
    )]
    AuthNotUtf8 { key: String },
    #[error(
        "{AUTH_DATA} entry {key:?}: decoded \"auth\" has no ':'; it must be base64 of \"user:password\""
    )]
    AuthMissingColon { key: String },
    #[error("{AUTH_DATA} entry {key:?}: \"auth\" and \"{field}\" disagree; keep one of them")]
    AuthConflict { key: String, field: &'static str },
    #[error("{AUTH_DATA} entry {key:?} has a username but no password or token")]
    UsernameWithoutSecret { key: String },
    #[error("{AUTH_DATA} entry {key:?} has a password but no username")]
    PasswordWithoutUsername { key: String },
    #[error("{AUTH_DATA} entry {key:?} holds no credentials (expected {expected})")]
    NoCredentials { key: String, expected: &'static str },
    #[error(
        "{AUTH_DATA} entry {key:?}: with ECS_ENGINE_AUTH_TYPE=dockercfg use \"auth\" \
         (base64 of \"user:password\"); for \"username\"/\"password\" set ECS_ENGINE_AUTH_TYPE=docker"
    )]
    DockercfgNeedsAuth { key: String },
    #[error("{AUTH_DATA} key {key:?} is not a registry: {reason}")]
    BadKey { key: String, reason: KeyError },
    #[error(
        "{AUTH_DATA}: \"credHelpers\" key {key:?} has a path ({namespace:?}); Docker asks a \
         credential helper by registry host only, so write the host alone"
    )]
    HelperPath { key: String, namespace: String },
    #[error(
        "{AUTH_DATA}: \"credHelpers\" keys {first:?} and {second:?} name the same registry \
         host ({host}); keep one"
    )]
    DuplicateHelper {
        first: String,
        second: String,
        host: String,
    },
    #[error(
        "{AUTH_DATA} keys {first:?} and {second:?} name the same registry and namespace ({normalized}); keep one"
    )]
    DuplicateKey {
        first: String,
        second: String,
        normalized: String,
    },
}

/// One entry as written: the key and its credentials.
#[derive(Debug, Clone)]
pub struct AuthEntry {
    pub key: String,
    pub credentials: Credentials,
}

/// Result of parsing: the entries in the order written, and whether they
/// came wrapped in `{"auths": ...}`.
#[derive(Debug, Clone)]
pub struct AuthData {
    pub entries: Vec<AuthEntry>,
    pub unwrapped_auths: bool,
    /// Top-level fields beside `auths` that pullauth ignores (e.g. `HttpHeaders`).
    pub ignored_fields: Vec<String>,
    /// `credHelpers`: registry host as written to helper name, in order.
    pub cred_helpers: Vec<(String, String)>,
    /// `credsStore`: the helper for registries without inline auth.
    pub creds_store: Option<String>,
}

/// What `{"auths": ...}` unwrapping found beside the entries.
#[derive(Default)]
struct Wrapper {
    unwrapped: bool,
    ignored: Vec<String>,
    cred_helpers: Vec<(String, String)>,
    creds_store: Option<String>,
}

/// Base64 as the ECS agent decodes `auth` (Go's `base64.StdEncoding`): the
/// standard alphabet with the padding required, and, as Go's decoder
/// does, no complaint about non-zero bits after the last full byte.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

/// Parses `data` as `ECS_ENGINE_AUTH_DATA` of type `kind`.
pub fn parse(kind: AuthType, data: &SecretString) -> Result<AuthData, AuthDataError> {
    let root = match serde_json::from_str::<Node>(data.expose_secret()) {
        Ok(root) => root,
        Err(e) if e.is_data() => return Err(AuthDataError::NotObject),
        Err(e) => {
            return Err(AuthDataError::Syntax {
                line: e.line(),
                column: e.column(),
            });
        }
    };
    let Node::Object(top) = root else {
        return Err(AuthDataError::NotObject);
    };
    let (map, wrapper) = unwrap_auths(top)?;
    let mut entries = Vec::with_capacity(map.len());
    for (key, node) in map {
        let Node::Object(fields) = node else {
            return Err(AuthDataError::EntryNotObject { key: masked(&key) });
        };
        let credentials = entry_credentials(kind, &key, fields)?;
        entries.push(AuthEntry { key, credentials });
    }
    Ok(AuthData {
        entries,
        unwrapped_auths: wrapper.unwrapped,
        ignored_fields: wrapper.ignored,
        cred_helpers: wrapper.cred_helpers,
        creds_store: wrapper.creds_store,
    })
}

type Fields = Vec<(String, Node)>;

/// `{"auths": {...}, ...}` as docker login writes config.json: returns the
/// inner map, and the `credHelpers`/`credsStore` beside it. Anything else is
/// returned as is.
fn unwrap_auths(top: Fields) -> Result<(Fields, Wrapper), AuthDataError> {
    if !top.iter().any(|(k, _)| k == "auths") {
        return Ok((top, Wrapper::default()));
    }
    let mut inner = None;
    let mut wrapper = Wrapper {
        unwrapped: true,
        ..Wrapper::default()
    };
    for (key, node) in top {
        match key.as_str() {
            "auths" => match node {
                Node::Object(map) if inner.is_none() => inner = Some(map),
                _ => return Err(AuthDataError::AuthsNotObject),
            },
            "credHelpers" => {
                let Node::Object(map) = node else {
                    return Err(AuthDataError::CredHelpersNotObject);
                };
                for (host, helper) in map {
                    let Node::String(helper) = helper else {
                        return Err(AuthDataError::CredHelpersNotObject);
                    };
                    wrapper.cred_helpers.push((host, helper_name(helper)?));
                }
            }
            "credsStore" => match node {
                Node::String(name) if name.is_empty() => {}
                Node::String(name) => wrapper.creds_store = Some(helper_name(name)?),
                _ => return Err(AuthDataError::CredsStoreNotString),
            },
            _ => wrapper.ignored.push(key),
        }
    }
    Ok((inner.unwrap_or_default(), wrapper))
}

/// A helper name becomes part of a program name (`docker-credential-<name>`),
/// so only plain names are accepted: no path separators, no spaces.
fn helper_name(name: String) -> Result<String, AuthDataError> {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if plain {
        Ok(name)
    } else {
        Err(AuthDataError::BadHelperName {
            name: shown_field(&name),
        })
    }
}

/// The string fields of one entry, each taken at most once.
#[derive(Default)]
struct EntryFields {
    username: Option<String>,
    password: Option<SecretString>,
    auth: Option<SecretString>,
    email: Option<String>,
    identity_token: Option<SecretString>,
    registry_token: Option<SecretString>,
}

fn entry_credentials(
    kind: AuthType,
    key: &str,
    fields: Fields,
) -> Result<Credentials, AuthDataError> {
    let mut entry = EntryFields::default();
    for (field, node) in fields {
        let Node::String(value) = node else {
            return Err(AuthDataError::FieldNotString {
                key: masked(key),
                field: shown_field(&field),
            });
        };
        let twice = || AuthDataError::FieldTwice {
            key: masked(key),
            field: shown_field(&field),
        };
        // Field names are matched case-insensitively, as Go's encoding/json does.
        match field.to_ascii_lowercase().as_str() {
            "username" => set(&mut entry.username, value, twice)?,
            "password" => set(&mut entry.password, SecretString::from(value), twice)?,
            "auth" => set(&mut entry.auth, SecretString::from(value), twice)?,
            "email" => set(&mut entry.email, value, twice)?,
            "identitytoken" => set(&mut entry.identity_token, SecretString::from(value), twice)?,
            "registrytoken" => set(&mut entry.registry_token, SecretString::from(value), twice)?,
            _ => {
                tracing::warn!(
                    key = %masked(key),
                    field = %shown_field(&field),
                    "{AUTH_DATA}: ignoring unknown field"
                );
            }
        }
    }
    let key_s = || masked(key);
    let empty = |s: &Option<SecretString>| s.as_ref().is_none_or(|s| s.expose_secret().is_empty());

    if kind == AuthType::Dockercfg && empty(&entry.auth) && !empty(&entry.password) {
        return Err(AuthDataError::DockercfgNeedsAuth { key: key_s() });
    }
    let mut username = entry.username.filter(|u| !u.is_empty());
    let mut password = entry.password.filter(|p| !p.expose_secret().is_empty());
    if let Some(auth) = entry.auth.filter(|a| !a.expose_secret().is_empty()) {
        let (user, pass) = decode_auth(key, &auth)?;
        if username.as_ref().is_some_and(|u| *u != user) {
            return Err(AuthDataError::AuthConflict {
                key: key_s(),
                field: "username",
            });
        }
        if password
            .as_ref()
            .is_some_and(|p| p.expose_secret() != pass.expose_secret())
        {
            return Err(AuthDataError::AuthConflict {
                key: key_s(),
                field: "password",
            });
        }
        username = Some(user).filter(|u| !u.is_empty());
        password = Some(pass).filter(|p| !p.expose_secret().is_empty());
    }
    let identity_token = entry
        .identity_token
        .filter(|t| !t.expose_secret().is_empty());
    let registry_token = if kind == AuthType::Docker {
        entry
            .registry_token
            .filter(|t| !t.expose_secret().is_empty())
    } else {
        None
    };
    let has_token = identity_token.is_some() || registry_token.is_some();
    match (&username, &password) {
        (None, None) if !has_token => {
            return Err(AuthDataError::NoCredentials {
                key: key_s(),
                expected: match kind {
                    AuthType::Docker => "\"username\" and \"password\", or \"auth\"",
                    AuthType::Dockercfg => "\"auth\" (base64 of \"user:password\")",
                },
            });
        }
        (Some(_), None) if !has_token => {
            return Err(AuthDataError::UsernameWithoutSecret { key: key_s() });
        }
        (None, Some(_)) => return Err(AuthDataError::PasswordWithoutUsername { key: key_s() }),
        _ => {}
    }
    Ok(Credentials {
        username,
        password,
        email: entry.email.filter(|e| !e.is_empty()),
        identity_token,
        registry_token,
    })
}

fn set<T>(
    slot: &mut Option<T>,
    value: T,
    twice: impl FnOnce() -> AuthDataError,
) -> Result<(), AuthDataError> {
    if slot.is_some() {
        return Err(twice());
    }
    *slot = Some(value);
    Ok(())
}

/// Decodes `auth` = base64(`user:password`), splitting at the first `:`.
/// Like Go's decoder, it skips `\r` and `\n` (wrapped lines) and nothing else.
fn decode_auth(key: &str, auth: &SecretString) -> Result<(String, SecretString), AuthDataError> {
    let one_line = SecretString::from(
        auth.expose_secret()
            .chars()
            .filter(|c| !matches!(c, '\r' | '\n'))
            .collect::<String>(),
    );
    let bytes = BASE64
        .decode(one_line.expose_secret())
        .map_err(|_| AuthDataError::BadBase64 { key: masked(key) })?;
    let text = SecretString::from(
        String::from_utf8(bytes).map_err(|_| AuthDataError::AuthNotUtf8 { key: masked(key) })?,
    );
    let (user, pass) = text
        .expose_secret()
        .split_once(':')
        .ok_or_else(|| AuthDataError::AuthMissingColon { key: masked(key) })?;
    Ok((user.to_owned(), SecretString::from(pass)))
}

/// A field name as messages show it: quoted when it is a plain word (every
/// field pullauth knows is one), described by its length otherwise, since a
/// mangled document can put any text where a field name belongs.
pub fn shown_field(field: &str) -> String {
    if pullauth_config::shown::is_token(field) {
        field.to_owned()
    } else {
        format!("<{} characters, not shown>", field.chars().count())
    }
}

/// A JSON tree that keeps object members in order, duplicates included.
#[derive(PartialEq)]
pub(crate) enum Node {
    Object(Vec<(String, Node)>),
    String(String),
    /// Any other JSON value; its content is never kept.
    Other,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Object(fields) => f
                .debug_map()
                .entries(fields.iter().map(|(k, v)| (k, v)))
                .finish(),
            Node::String(_) => f.write_str("<string>"),
            Node::Other => f.write_str("<value>"),
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut fields = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Node>()? {
            fields.push((key, value));
        }
        Ok(Node::Object(fields))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Node::Other)
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::String(v))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Other)
    }
}
