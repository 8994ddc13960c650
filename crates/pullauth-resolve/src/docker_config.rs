//! A Docker client `config.json` (what `docker login` writes) turned into
//! `ECS_ENGINE_AUTH_DATA` for `ECS_ENGINE_AUTH_TYPE=dockercfg`.
//!
//! Only credentials held inline (`auth`, `identitytoken`) can be carried
//! over; registries whose credentials live in a `credsStore` or a
//! `credHelpers` program are reported, so that the operator knows they are
//! missing. The JSON is read with the same order- and duplicate-preserving
//! tree as `ECS_ENGINE_AUTH_DATA`, and errors never quote a value.

use secrecy::{ExposeSecret, SecretString};

use crate::authdata::{Node, shown_field};
use crate::key::masked;

/// Why a `config.json` cannot be converted. Keys are [`masked`], fields are
/// shown as [`shown_field`] shows them; no variant holds a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerConfigError {
    #[error("not valid JSON (line {line}, column {column})")]
    Syntax { line: usize, column: usize },
    #[error("not a Docker config.json: the top level must be a JSON object")]
    NotObject,
    #[error("\"auths\" must be an object mapping registries to credentials")]
    AuthsNotObject,
    #[error("\"auths\" entry {key:?} must be a JSON object")]
    EntryNotObject { key: String },
    #[error("\"auths\" entry {key:?}: field {field:?} must be a string")]
    FieldNotString { key: String, field: String },
    #[error("\"auths\" entry {key:?}: field {field:?} appears twice")]
    FieldTwice { key: String, field: String },
    #[error("\"credsStore\" must be a string naming a credential helper")]
    CredsStoreNotString,
    #[error("\"credHelpers\" must be an object mapping registries to credential helpers")]
    CredHelpersNotObject,
    #[error(
        "no registry has inline credentials (\"auth\" or \"identitytoken\" in \"auths\"); \
         nothing to convert"
    )]
    NothingInline,
}

/// Registries whose credentials are not in the file, and who holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElsewhereNote {
    /// `credsStore "pass"`, `credHelpers "ecr-login"`, or `None` when the
    /// entry is simply empty and no store is configured.
    pub holder: Option<String>,
    /// The registries (keys [`masked`]), in the order of the file.
    pub registries: Vec<String>,
}

/// The result of a conversion.
pub struct Converted {
    /// The unwrapped `auths` map on one line: `ECS_ENGINE_AUTH_DATA` for
    /// `ECS_ENGINE_AUTH_TYPE=dockercfg`. It holds the credentials.
    pub auth_data: SecretString,
    /// The registries carried over (keys [`masked`]), in the order of the file.
    pub kept: Vec<String>,
    /// Registries left out because their credentials are elsewhere.
    pub elsewhere: Vec<ElsewhereNote>,
}

impl std::fmt::Debug for Converted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Converted")
            .field("auth_data", &"<redacted>")
            .field("kept", &self.kept)
            .field("elsewhere", &self.elsewhere)
            .finish()
    }
}

/// The fields carried over, as the ECS agent's `dockercfg` type reads them.
const KEPT_FIELDS: [&str; 3] = ["auth", "email", "identitytoken"];

/// Converts the text of a Docker `config.json`.
pub fn convert(text: &SecretString) -> Result<Converted, DockerConfigError> {
    let root = match serde_json::from_str::<Node>(text.expose_secret()) {
        Ok(root) => root,
        Err(e) if e.is_data() => return Err(DockerConfigError::NotObject),
        Err(e) => {
            return Err(DockerConfigError::Syntax {
                line: e.line(),
                column: e.column(),
            });
        }
    };
    let Node::Object(top) = root else {
        return Err(DockerConfigError::NotObject);
    };
    let mut auths = Vec::new();
    let mut creds_store = None;
    let mut helpers: Vec<(String, String)> = Vec::new();
    for (field, node) in top {
        match (field.as_str(), node) {
            ("auths", Node::Object(map)) => auths.extend(map),
            ("auths", _) => return Err(DockerConfigError::AuthsNotObject),
            ("credsStore", Node::String(store)) => creds_store = Some(store),
            ("credsStore", _) => return Err(DockerConfigError::CredsStoreNotString),
            ("credHelpers", Node::Object(map)) => {
                for (registry, helper) in map {
                    let Node::String(helper) = helper else {
                        return Err(DockerConfigError::CredHelpersNotObject);
                    };
                    helpers.push((registry, helper));
                }
            }
            ("credHelpers", _) => return Err(DockerConfigError::CredHelpersNotObject),
            _ => {}
        }
    }

    let mut out = String::from("{");
    let mut kept = Vec::new();
    let mut not_inline = Vec::new();
    for (key, node) in auths {
        let Node::Object(fields) = node else {
            return Err(DockerConfigError::EntryNotObject { key: masked(&key) });
        };
        let fields = inline_fields(&key, fields)?;
        if !fields.iter().any(|(name, _)| *name != "email") {
            not_inline.push(key);
            continue;
        }
        if !kept.is_empty() {
            out.push(',');
        }
        out.push_str(&json_string(&key));
        out.push_str(":{");
        for (i, (name, value)) in fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&format!("\"{name}\":"));
            out.push_str(&json_string(value.expose_secret()));
        }
        out.push('}');
        kept.push(masked(&key));
    }
    out.push('}');
    if kept.is_empty() {
        return Err(DockerConfigError::NothingInline);
    }

    Ok(Converted {
        auth_data: SecretString::from(out),
        kept,
        elsewhere: elsewhere_notes(not_inline, creds_store, helpers),
    })
}

/// The non-empty fields of [`KEPT_FIELDS`] in one entry, in that order.
fn inline_fields(
    key: &str,
    fields: Vec<(String, Node)>,
) -> Result<Vec<(&'static str, SecretString)>, DockerConfigError> {
    let mut found: [Option<SecretString>; 3] = Default::default();
    for (field, node) in fields {
        let lower = field.to_ascii_lowercase();
        let Some(slot) = KEPT_FIELDS.iter().position(|f| *f == lower) else {
            continue;
        };
        let Node::String(value) = node else {
            return Err(DockerConfigError::FieldNotString {
                key: masked(key),
                field: shown_field(&field),
            });
        };
        if found[slot].is_some() {
            return Err(DockerConfigError::FieldTwice {
                key: masked(key),
                field: shown_field(&field),
            });
        }
        found[slot] = Some(SecretString::from(value));
    }
    Ok(KEPT_FIELDS
        .iter()
        .zip(found)
        .filter_map(|(name, value)| {
            value
                .filter(|v| !v.expose_secret().is_empty())
                .map(|v| (*name, v))
        })
        .collect())
}

/// Groups the registries without inline credentials by who holds them: a
/// `credHelpers` entry first (Docker asks it first), else `credsStore`.
/// Registries named only in `credHelpers` are reported too.
fn elsewhere_notes(
    not_inline: Vec<String>,
    creds_store: Option<String>,
    helpers: Vec<(String, String)>,
) -> Vec<ElsewhereNote> {
    let mut notes: Vec<ElsewhereNote> = Vec::new();
    let mut add = |holder: Option<String>, registry: &str| {
        let registry = masked(registry);
        match notes.iter_mut().find(|n| n.holder == holder) {
            Some(note) => {
                if !note.registries.contains(&registry) {
                    note.registries.push(registry);
                }
            }
            None => notes.push(ElsewhereNote {
                holder,
                registries: vec![registry],
            }),
        }
    };
    for registry in &not_inline {
        let holder = match helpers.iter().find(|(r, _)| r == registry) {
            Some((_, helper)) => Some(format!("credHelpers {helper:?}")),
            None => creds_store.as_ref().map(|s| format!("credsStore {s:?}")),
        };
        add(holder, registry);
    }
    for (registry, helper) in &helpers {
        add(Some(format!("credHelpers {helper:?}")), registry);
    }
    notes
}

fn json_string(text: &str) -> String {
    // Serializing a &str cannot fail.
    serde_json::to_string(text).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use pullauth_config::AuthType;
    use rstest::rstest;

    use super::*;
    use crate::RegistryTable;

    fn convert_str(text: &str) -> Result<Converted, DockerConfigError> {
        convert(&SecretString::from(text))
    }

    /// `user:Canary7pw` in base64.
    const AUTH: &str = "dXNlcjpDYW5hcnk3cHc=";

    #[test]
    fn keeps_inline_auths_in_order_on_one_line() {
        let text = format!(
            r#"{{
              "auths": {{
                "r.io:5000": {{ "auth": "{AUTH}" }},
                "https://index.docker.io/v1/": {{ "auth": "{AUTH}", "email": "a@b.c" }}
              }},
              "HttpHeaders": {{ "User-Agent": "Docker-Client" }}
            }}"#
        );
        let converted = convert_str(&text).expect("converts");
        assert_eq!(
            converted.auth_data.expose_secret(),
            format!(
                r#"{{"r.io:5000":{{"auth":"{AUTH}"}},"https://index.docker.io/v1/":{{"auth":"{AUTH}","email":"a@b.c"}}}}"#
            )
        );
        assert_eq!(converted.kept, ["r.io:5000", "https://index.docker.io/v1/"]);
        assert!(converted.elsewhere.is_empty());
        let table = RegistryTable::from_auth_data(AuthType::Dockercfg, &converted.auth_data)
            .expect("the output passes check");
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn keeps_identity_tokens() {
        let text = r#"{"auths": {"r.io": {"auth": "dXNlcjo=", "identitytoken": "Canary-id"},
                                 "q.io": {"identitytoken": "Canary-id2"}}}"#;
        let converted = convert_str(text).expect("converts");
        assert_eq!(
            converted.auth_data.expose_secret(),
            r#"{"r.io":{"auth":"dXNlcjo=","identitytoken":"Canary-id"},"q.io":{"identitytoken":"Canary-id2"}}"#
        );
        let table = RegistryTable::from_auth_data(AuthType::Dockercfg, &converted.auth_data)
            .expect("the output passes check");
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn leaves_out_and_names_registries_kept_by_stores() {
        let text = format!(
            r#"{{"auths": {{"r.io": {{"auth": "{AUTH}"}}, "s.io": {{}}, "e.io": {{"auth": ""}},
                            "h.io": {{}} }},
                "credsStore": "pass",
                "credHelpers": {{"h.io": "ecr-login", "only-helper.io": "ecr-login"}}}}"#
        );
        let converted = convert_str(&text).expect("converts");
        assert_eq!(converted.kept, ["r.io"]);
        assert_eq!(
            converted.elsewhere,
            [
                ElsewhereNote {
                    holder: Some(r#"credsStore "pass""#.into()),
                    registries: vec!["s.io".into(), "e.io".into()],
                },
                ElsewhereNote {
                    holder: Some(r#"credHelpers "ecr-login""#.into()),
                    registries: vec!["h.io".into(), "only-helper.io".into()],
                },
            ]
        );
    }

    #[test]
    fn empty_entry_without_store_has_no_holder() {
        let text = format!(r#"{{"auths": {{"r.io": {{"auth": "{AUTH}"}}, "s.io": {{}}}}}}"#);
        let converted = convert_str(&text).expect("converts");
        assert_eq!(
            converted.elsewhere,
            [ElsewhereNote {
                holder: None,
                registries: vec!["s.io".into()]
            }]
        );
    }

    #[rstest]
    #[case::not_json("{\"auths\": {\"r.io\": {\"auth\": \"Canary7pw", DockerConfigError::Syntax { line: 1, column: 38 })]
    #[case::array("[\"Canary7pw\"]", DockerConfigError::NotObject)]
    #[case::auths_string(r#"{"auths": "Canary7pw"}"#, DockerConfigError::AuthsNotObject)]
    #[case::entry_string(r#"{"auths": {"r.io": "Canary7pw"}}"#, DockerConfigError::EntryNotObject { key: "r.io".into() })]
    #[case::auth_number(r#"{"auths": {"r.io": {"auth": 7}}}"#, DockerConfigError::FieldNotString { key: "r.io".into(), field: "auth".into() })]
    #[case::auth_twice(r#"{"auths": {"r.io": {"auth": "Canary7pw", "Auth": "x"}}}"#, DockerConfigError::FieldTwice { key: "r.io".into(), field: "Auth".into() })]
    #[case::store_number(
        r#"{"auths": {}, "credsStore": 1}"#,
        DockerConfigError::CredsStoreNotString
    )]
    #[case::helpers_list(
        r#"{"credHelpers": ["Canary7pw"]}"#,
        DockerConfigError::CredHelpersNotObject
    )]
    #[case::only_store(
        r#"{"auths": {"r.io": {}}, "credsStore": "desktop"}"#,
        DockerConfigError::NothingInline
    )]
    #[case::no_auths(r#"{}"#, DockerConfigError::NothingInline)]
    #[case::user_info_key_masked(r#"{"auths": {"u:Canary7pw@r.io": 1}}"#, DockerConfigError::EntryNotObject { key: "<userinfo redacted>@r.io".into() })]
    fn rejects_without_quoting(#[case] text: &str, #[case] error: DockerConfigError) {
        let got = convert_str(text).expect_err("must be rejected");
        assert!(!got.to_string().contains("Canary7pw"), "{got}");
        assert_eq!(got, error);
    }

    #[test]
    fn debug_hides_the_data() {
        let converted = convert_str(&format!(r#"{{"auths": {{"r.io": {{"auth": "{AUTH}"}}}}}}"#))
            .expect("converts");
        assert!(!format!("{converted:?}").contains(AUTH));
    }
}
