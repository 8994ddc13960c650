//! Fuzzes `RegistryTable::from_auth_data` (the `ECS_ENGINE_AUTH_DATA`
//! parser plus key normalization and indexing) for both auth types.
//!
//! The first input byte picks the mode:
//! - `D` / `C`: the rest is raw text, parsed as `docker` / `dockercfg` data;
//! - anything else: the rest drives `arbitrary` to build a document (keys,
//!   fields in any letter case, duplicates, the `{"auths": ...}` wrapper)
//!   that is serialized with serde_json. Every password, identitytoken and
//!   registrytoken value embeds the canary, and every `auth` value encodes
//!   `user:<canary...>`.
//!
//! Asserts, for any input:
//! - parsing never panics;
//! - structured mode: neither an error's Display/Debug nor a table's Debug
//!   contains the canary, any `auth` value written, or base64 of
//!   `user:canary`; a parsed table has one entry per key written, every
//!   entry holds a credential, and every password or token it holds still
//!   contains the canary (nothing truncated or swapped);
//! - raw mode: when the text is JSON, every alphanumeric run of 8+
//!   characters (with a letter and a digit) of a password / auth /
//!   identitytoken / registrytoken value, or of the password decoded from
//!   `auth`, is absent from the error or table output, unless it also
//!   occurs in a key, a username or another non-secret string; when the
//!   text is not JSON, the error is `Syntax` or `NotObject`.

#![no_main]

use std::fmt::Write as _;

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use libfuzzer_sys::fuzz_target;
use pullauth_config::AuthType;
use pullauth_resolve::{AuthDataError, RegistryTable};
use secrecy::{ExposeSecret, SecretString};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Letters and digits that fuzzer-made strings are unlikely to spell out.
const CANARY: &str = "Qz7canaryK9xS3cr3t";

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((b'D', rest)) => raw(AuthType::Docker, &String::from_utf8_lossy(rest)),
        Some((b'C', rest)) => raw(AuthType::Dockercfg, &String::from_utf8_lossy(rest)),
        Some((_, rest)) => {
            if let Ok(doc) = Doc::arbitrary_take_rest(Unstructured::new(rest)) {
                structured(&doc);
            }
        }
        None => raw(AuthType::Docker, ""),
    }
});

fn parse(kind: AuthType, text: &str) -> Result<RegistryTable, AuthDataError> {
    RegistryTable::from_auth_data(kind, &SecretString::from(text.to_owned()))
}

fn render(result: &Result<RegistryTable, AuthDataError>) -> String {
    match result {
        Ok(table) => format!("{table:?}\n{:?}", table.entries()),
        Err(err) => format!("{err}\n{err:?}"),
    }
}

// ---------------------------------------------------------------- raw mode

fn raw(kind: AuthType, text: &str) {
    let mut strings = Strings::default();
    let walked = {
        let mut de = serde_json::Deserializer::from_str(text);
        Walk {
            out: &mut strings,
            field: None,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end())
    };
    let result = parse(kind, text);
    if walked.is_err() {
        assert!(
            matches!(
                result,
                Err(AuthDataError::Syntax { .. } | AuthDataError::NotObject)
            ),
            "text serde_json rejects gave {:?}",
            result.as_ref().map(|_| "a table")
        );
        return;
    }
    let shown = render(&result).to_lowercase();
    let public = strings
        .keys
        .iter()
        .chain(&strings.public)
        .map(|s| s.to_lowercase())
        .collect::<Vec<_>>()
        .join("\n");
    for secret in &strings.secret {
        for run in secret.split(|c: char| !c.is_ascii_alphanumeric()) {
            let run = run.to_lowercase();
            let checkable = run.len() >= 8
                && run.bytes().any(|b| b.is_ascii_digit())
                && run.bytes().any(|b| b.is_ascii_alphabetic());
            if checkable && !public.contains(&run) {
                assert!(
                    !shown.contains(&run),
                    "output leaks secret {run:?}: {shown}"
                );
            }
        }
    }
}

const SECRET_FIELDS: [&str; 4] = ["password", "auth", "identitytoken", "registrytoken"];

/// More lenient than pullauth's decoding of `auth` (which requires the
/// padding, skips only CR/LF and allows non-zero trailing bits): see
/// [`lenient_decode`].
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// `auth` decoded with padding optional and all whitespace skipped: a
/// superset of what pullauth decodes, so that everything pullauth might
/// read from a value is counted as a secret (and no password it decodes
/// is mistaken for one that lost its canary).
fn lenient_decode(auth: &str) -> Option<String> {
    let compact: String = auth.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    LENIENT
        .decode(compact)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

/// Every string of a JSON document, sorted into those that must never be
/// printed and those that may be.
#[derive(Default)]
struct Strings {
    secret: Vec<String>,
    public: Vec<String>,
    keys: Vec<String>,
}

/// Walks any JSON value, keeping duplicates (unlike `serde_json::Value`).
struct Walk<'s, 'f> {
    out: &'s mut Strings,
    /// The object member this value belongs to, if any.
    field: Option<&'f str>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.out;
        while let Some(key) = map.next_key::<String>()? {
            map.next_value_seed(Walk {
                out: &mut *out,
                field: Some(&key),
            })?;
            out.keys.push(key);
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let out = self.out;
        while seq
            .next_element_seed(Walk {
                out: &mut *out,
                field: None,
            })?
            .is_some()
        {}
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        let field = self.field.map(str::to_ascii_lowercase);
        match field.as_deref() {
            Some("auth") => {
                self.out.secret.push(v.to_owned());
                if let Some(text) = lenient_decode(v) {
                    match text.split_once(':') {
                        Some((user, pass)) => {
                            self.out.public.push(user.to_owned());
                            self.out.secret.push(pass.to_owned());
                        }
                        None => self.out.secret.push(text),
                    }
                }
            }
            Some(f) if SECRET_FIELDS.contains(&f) => self.out.secret.push(v.to_owned()),
            _ => self.out.public.push(v.to_owned()),
        }
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

// --------------------------------------------------------- structured mode

#[derive(Arbitrary, Debug)]
struct Doc {
    dockercfg: bool,
    wrap: Wrap,
    entries: Vec<EntrySpec>,
}

#[derive(Arbitrary, Debug)]
enum Wrap {
    Bare,
    /// `{"auths": {...}}` with other top-level members before and after.
    Auths {
        before: Vec<(String, Scalar)>,
        after: Vec<(String, Scalar)>,
    },
    /// `"auths"` written twice.
    AuthsTwice,
    /// `"auths"` that is not an object, beside the entries.
    AuthsNotObject(Scalar),
}

#[derive(Arbitrary, Debug)]
struct EntrySpec {
    key: KeySpec,
    body: Body,
}

#[derive(Arbitrary, Debug)]
enum Body {
    Fields(Vec<FieldSpec>),
    NotObject(Scalar),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Array(u8),
    Object,
}

#[derive(Arbitrary, Debug)]
enum KeySpec {
    Raw(String),
    Built {
        scheme: u8,
        wildcards: u8,
        host: HostSpec,
        port: Option<u16>,
        namespace: Vec<NamespaceSpec>,
        api_version: Option<bool>,
        trailing_slashes: u8,
        uppercase: bool,
        padding: bool,
    },
}

#[derive(Arbitrary, Debug)]
enum HostSpec {
    Known(u8),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum NamespaceSpec {
    Known(u8),
    Raw(String),
}

const HOSTS: [&str; 12] = [
    "r.io",
    "registry.example.com",
    "example.com",
    "localhost",
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
    "123456789012.dkr.ecr.us-west-2.amazonaws.com",
    "myregistry",
    "[::1]",
    "10.0.0.1",
];

const NAMESPACES: [&str; 8] = ["team", "acme", "library", "sub", "v1", "v2", "a-b", "x.y_z"];

const SCHEMES: [&str; 6] = ["", "https://", "http://", "HTTPS://", "ftp://", "://"];

#[derive(Arbitrary, Debug)]
struct FieldSpec {
    name: FieldName,
    /// Bit i upper-cases letter i of the name (Go's encoding/json matches
    /// field names case-insensitively, and so does pullauth).
    case_mask: u16,
    value: ValueSpec,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
enum FieldName {
    Username,
    Password,
    Auth,
    Email,
    IdentityToken,
    RegistryToken,
    Other,
}

#[derive(Arbitrary, Debug)]
enum ValueSpec {
    /// Verbatim in a public field; in a secret field, followed by the canary
    /// (`auth`: not base64, so it must be rejected without being quoted).
    Text(String),
    Empty,
    /// `auth`: base64 of `user:<canary><suffix>`; elsewhere `user`.
    UserPass {
        user: String,
        suffix: String,
        encoding: u8,
        pad: u8,
    },
    /// `auth`: base64 of bytes with no ':' (plus the canary) or not UTF-8.
    AuthOdd {
        no_colon: bool,
        junk: Vec<u8>,
    },
    Scalar(Scalar),
}

impl FieldName {
    fn as_str(self) -> &'static str {
        match self {
            FieldName::Username => "username",
            FieldName::Password => "password",
            FieldName::Auth => "auth",
            FieldName::Email => "email",
            FieldName::IdentityToken => "identitytoken",
            FieldName::RegistryToken => "registrytoken",
            FieldName::Other => "credsStore",
        }
    }
    fn is_secret(self) -> bool {
        matches!(
            self,
            FieldName::Password
                | FieldName::Auth
                | FieldName::IdentityToken
                | FieldName::RegistryToken
        )
    }
}

/// What the structured document put where, for the assertions.
#[derive(Default)]
struct Written {
    /// Strings that must never be printed.
    secrets: Vec<String>,
    /// Strings that may be printed (keys, usernames, ...).
    public: Vec<String>,
    keys: Vec<String>,
    /// Some password may legitimately lack the canary (see `field_value`).
    canary_free_secret: bool,
}

fn json(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn scalar(s: Scalar) -> String {
    match s {
        Scalar::Null => "null".into(),
        Scalar::Bool(b) => b.to_string(),
        Scalar::Int(i) => i.to_string(),
        Scalar::Float(f) => serde_json::to_string(&f).expect("serializes"),
        Scalar::Array(n) => format!("[{}]", vec!["1"; usize::from(n % 4)].join(",")),
        Scalar::Object => "{}".into(),
    }
}

fn key_text(spec: &KeySpec) -> String {
    match spec {
        KeySpec::Raw(s) => s.clone(),
        KeySpec::Built {
            scheme,
            wildcards,
            host,
            port,
            namespace,
            api_version,
            trailing_slashes,
            uppercase,
            padding,
        } => {
            let mut key = String::new();
            if *padding {
                key.push(' ');
            }
            key.push_str(SCHEMES[usize::from(*scheme) % SCHEMES.len()]);
            for _ in 0..wildcards % 3 {
                key.push_str("*.");
            }
            match host {
                HostSpec::Known(i) => key.push_str(HOSTS[usize::from(*i) % HOSTS.len()]),
                HostSpec::Raw(s) => key.push_str(s),
            }
            if let Some(port) = port {
                let _ = write!(key, ":{port}");
            }
            for component in namespace {
                key.push('/');
                match component {
                    NamespaceSpec::Known(i) => {
                        key.push_str(NAMESPACES[usize::from(*i) % NAMESPACES.len()])
                    }
                    NamespaceSpec::Raw(s) => key.push_str(s),
                }
            }
            match api_version {
                Some(true) => key.push_str("/v2"),
                Some(false) => key.push_str("/v1"),
                None => {}
            }
            for _ in 0..trailing_slashes % 3 {
                key.push('/');
            }
            if *uppercase {
                key = key.to_ascii_uppercase();
            }
            if *padding {
                key.push('\t');
            }
            key
        }
    }
}

fn field_name(name: FieldName, mask: u16) -> String {
    if name == FieldName::Other {
        return name.as_str().to_owned();
    }
    name.as_str()
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i < 16 && mask & (1 << i) != 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

fn encode(bytes: &[u8], encoding: u8, pad: u8) -> String {
    let mut text = match encoding % 4 {
        0 => STANDARD.encode(bytes),
        1 => STANDARD_NO_PAD.encode(bytes),
        2 => URL_SAFE.encode(bytes),
        _ => STANDARD.encode(bytes).replace('=', ""),
    };
    match pad % 4 {
        1 => text.insert(0, ' '),
        2 => text.push_str("\n"),
        3 => text.push('='),
        _ => {}
    }
    text
}

fn field_value(name: FieldName, value: &ValueSpec, written: &mut Written) -> String {
    let secret = name.is_secret();
    let text = match value {
        ValueSpec::Scalar(s) => return scalar(*s),
        ValueSpec::Empty => String::new(),
        ValueSpec::Text(s) if secret => {
            written.public.push(s.clone());
            let text = format!("{s}{CANARY}");
            if name == FieldName::Auth {
                // Meant to be rejected as not base64, but the fuzzer may make
                // it valid: then the password it decodes to need not hold the
                // canary, yet is still a secret.
                let decoded = lenient_decode(&text);
                if let Some((user, pass)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
                    written.canary_free_secret = true;
                    written.public.push(user.to_owned());
                    written.secrets.push(pass.to_owned());
                }
            }
            text
        }
        ValueSpec::Text(s) => {
            written.public.push(s.clone());
            s.clone()
        }
        ValueSpec::UserPass {
            user,
            suffix,
            encoding,
            pad,
        } => {
            written.public.push(user.clone());
            written.public.push(suffix.clone());
            if name == FieldName::Auth {
                let plain = format!("{user}:{CANARY}{suffix}");
                written
                    .secrets
                    .push(STANDARD.encode(format!("{user}:{CANARY}")));
                let encoded = encode(plain.as_bytes(), *encoding, *pad);
                written.secrets.push(encoded.trim().to_owned());
                encoded
            } else if secret {
                format!("{CANARY}{suffix}")
            } else {
                user.clone()
            }
        }
        ValueSpec::AuthOdd { no_colon, junk } => {
            let mut bytes = junk.clone();
            if *no_colon {
                bytes.retain(|&b| b != b':');
            }
            bytes.extend_from_slice(CANARY.as_bytes());
            let lossy = String::from_utf8_lossy(junk).into_owned();
            written.public.push(lossy.clone());
            if name == FieldName::Auth {
                let encoded = STANDARD.encode(&bytes);
                written.secrets.push(encoded.clone());
                encoded
            } else if secret {
                format!("{lossy}{CANARY}")
            } else {
                lossy
            }
        }
    };
    json(&text)
}

fn entry_json(entry: &EntrySpec, written: &mut Written) -> String {
    let key = key_text(&entry.key);
    written.keys.push(key.clone());
    written.public.push(key.clone());
    let body = match &entry.body {
        Body::NotObject(s) => scalar(*s),
        Body::Fields(fields) => {
            let members: Vec<String> = fields
                .iter()
                .map(|f| {
                    let name = field_name(f.name, f.case_mask);
                    let value = field_value(f.name, &f.value, written);
                    format!("{}:{value}", json(&name))
                })
                .collect();
            format!("{{{}}}", members.join(","))
        }
    };
    format!("{}:{body}", json(&key))
}

fn structured(doc: &Doc) {
    let kind = if doc.dockercfg {
        AuthType::Dockercfg
    } else {
        AuthType::Docker
    };
    let mut written = Written::default();
    let entries: Vec<String> = doc
        .entries
        .iter()
        .map(|e| entry_json(e, &mut written))
        .collect();
    let entries = entries.join(",");
    let text = match &doc.wrap {
        Wrap::Bare => format!("{{{entries}}}"),
        Wrap::Auths { before, after } => {
            let mut members: Vec<String> = Vec::new();
            for (k, v) in before {
                written.public.push(k.clone());
                members.push(format!("{}:{}", json(k), scalar(*v)));
            }
            members.push(format!("\"auths\":{{{entries}}}"));
            for (k, v) in after {
                written.public.push(k.clone());
                members.push(format!("{}:{}", json(k), scalar(*v)));
            }
            format!("{{{}}}", members.join(","))
        }
        Wrap::AuthsTwice => format!("{{\"auths\":{{{entries}}},\"auths\":{{}}}}"),
        Wrap::AuthsNotObject(s) => {
            let sep = if entries.is_empty() { "" } else { "," };
            format!("{{{entries}{sep}\"auths\":{}}}", scalar(*s))
        }
    };

    let result = parse(kind, &text);

    // A fuzzer-chosen public string that happens to hold a secret would make
    // the leak checks meaningless (it may legitimately be printed).
    let secrets: Vec<&str> = std::iter::once(CANARY)
        .chain(
            written
                .secrets
                .iter()
                .map(String::as_str)
                .filter(|s| s.len() >= 8),
        )
        .collect();
    let clean = !written
        .public
        .iter()
        .any(|p| secrets.iter().any(|s| p.contains(s)));
    if clean {
        let shown = render(&result);
        for secret in &secrets {
            assert!(
                !shown.contains(secret),
                "output leaks {secret:?}:\n{shown}\n--- input: {text}"
            );
        }
    }

    // A registry key spelled "auths" turns a bare document into a wrapped one.
    let shape_known = !written.keys.iter().any(|k| k == "auths");
    if let (Ok(table), true) = (&result, shape_known) {
        if matches!(doc.wrap, Wrap::Bare | Wrap::Auths { .. }) {
            assert_eq!(table.len(), doc.entries.len(), "one entry per key: {text}");
        }
        // `"auths": {}` beside the entries is a (valid, empty) wrapper too.
        let wrapped = matches!(
            doc.wrap,
            Wrap::Auths { .. } | Wrap::AuthsNotObject(Scalar::Object)
        );
        assert_eq!(
            table.unwrapped_auths(),
            wrapped,
            "wrapper not recognized as such: {text}"
        );
        for entry in table.entries() {
            let c = &entry.credentials;
            assert_ne!(c.kind(), "none", "entry without credentials: {text}");
            if kind == AuthType::Dockercfg {
                assert!(
                    c.registry_token.is_none(),
                    "dockercfg kept a registrytoken: {text}"
                );
            }
            if clean && !written.canary_free_secret {
                for s in [&c.password, &c.identity_token, &c.registry_token]
                    .into_iter()
                    .flatten()
                {
                    assert!(
                        s.expose_secret().contains(CANARY),
                        "a secret lost its canary: {text}"
                    );
                }
            }
            if let Some(user) = &c.username {
                assert!(!user.is_empty());
            }
        }
    }
}
