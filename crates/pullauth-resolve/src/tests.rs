//! Table tests for parsing and matching, including the cases published in
//! the ECS agent's `dockerauth` tests where our rules agree with it, and one
//! test per rule where pullauth deliberately differs.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use pullauth_config::AuthType;
use rstest::rstest;
use secrecy::{ExposeSecret, SecretString};

use crate::{AuthDataError, RegistryTable};

fn b64(text: &str) -> String {
    STANDARD.encode(text)
}

/// `text` with a CRLF after every 4 characters, as a line-wrapping encoder
/// might write it (escaped for a JSON string).
fn wrapped(text: &str) -> String {
    let chunks: Vec<String> = text
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    chunks.join("\\r\\n")
}

fn table(kind: AuthType, data: &str) -> RegistryTable {
    RegistryTable::from_auth_data(kind, &SecretString::from(data)).expect("valid auth data")
}

fn parse_err(kind: AuthType, data: &str) -> AuthDataError {
    RegistryTable::from_auth_data(kind, &SecretString::from(data)).expect_err("must be rejected")
}

/// The username that applies to `image`, or "" for none.
fn user_for(table: &RegistryTable, image: &str) -> String {
    let resolution = table.resolve(image).expect("valid image");
    resolution
        .entry
        .and_then(|e| e.credentials.username.clone())
        .unwrap_or_default()
}

/// The key (as written) that applies to `image`, or "" for none.
fn key_for(table: &RegistryTable, image: &str) -> String {
    let resolution = table.resolve(image).expect("valid image");
    resolution
        .entry
        .map(|e| e.key.written.clone())
        .unwrap_or_default()
}

/// A `docker`-type table from `(key, username)` pairs, password "pw".
fn users(keys: &[(&str, &str)]) -> RegistryTable {
    let body: Vec<String> = keys
        .iter()
        .map(|(k, u)| format!(r#""{k}":{{"username":"{u}","password":"pw"}}"#))
        .collect();
    table(AuthType::Docker, &format!("{{{}}}", body.join(",")))
}

// ---- the ECS agent's published cases (TestDockerCfgAuth), both formats ----

fn agent_fixture(kind: AuthType) -> RegistryTable {
    let entry = |user: &str, pass: &str| match kind {
        AuthType::Dockercfg => format!(r#"{{"auth":"{}"}}"#, b64(&format!("{user}:{pass}"))),
        AuthType::Docker => format!(r#"{{"username":"{user}","password":"{pass}"}}"#),
    };
    let data = format!(
        r#"{{"example.tld/user2":{},"example.tld":{},"https://aregistry.tld":{},
            "http://anotherregistry.tld":{},"https://index.docker.io/v1/":{}}}"#,
        entry("test", "dragon"),
        entry("user", "swordfish"),
        entry("user", "swordfish"),
        entry("user", "swordfish"),
        entry("dockerhub", "password"),
    );
    table(kind, &data)
}

#[rstest]
#[case("example.tld/my/image", "user", "swordfish")]
#[case("example.tld/user2/image", "test", "dragon")]
#[case("registry.tld/image", "", "")]
#[case("nginx", "dockerhub", "password")]
#[case("busybox", "dockerhub", "password")]
#[case("library/busybox", "dockerhub", "password")]
#[case("amazon/amazon-ecs-agent", "dockerhub", "password")]
#[case("aregistry.tld/foo/bar", "user", "swordfish")]
#[case("aregistry.tld/foo", "user", "swordfish")]
#[case("aregistry.tld2/foo", "", "")]
#[case("foo.aregistry.tld/foo", "", "")]
#[case("anotherregistry.tld/foo/bar", "user", "swordfish")]
#[case("anotherregistry.tld/foo", "user", "swordfish")]
#[case("anotherregistry.tld2/foo", "", "")]
#[case("foo.anotherregistry.tld/foo", "", "")]
fn agrees_with_ecs_agent_published_cases(
    #[case] image: &str,
    #[case] user: &str,
    #[case] pass: &str,
    #[values(AuthType::Docker, AuthType::Dockercfg)] kind: AuthType,
) {
    let table = agent_fixture(kind);
    let resolution = table.resolve(image).expect("valid image");
    let credentials = resolution
        .entry
        .map(|e| e.credentials.clone())
        .unwrap_or_default();
    assert_eq!(credentials.username.unwrap_or_default(), user);
    let password = credentials
        .password
        .map(|p| p.expose_secret().to_owned())
        .unwrap_or_default();
    assert_eq!(password, pass);
}

// ---- matching rules ----

#[rstest]
#[case::host_key_matches_everything_on_host("r.io/a/b/c", "host")]
#[case::namespace_itself("r.io/team", "team")]
#[case::below_namespace("r.io/team/app", "team")]
#[case::longest_namespace_wins("r.io/team/sub/app", "sub")]
#[case::not_at_path_boundary("r.io/teammate/app", "host")]
#[case::not_a_prefix_of_segment("r.io/team-b/app", "host")]
#[case::tag_ignored("r.io/team/app:1.0", "team")]
#[case::digest_ignored(
    "r.io/team/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "team"
)]
#[case::host_case_insensitive("R.IO/team/app", "team")]
fn longest_namespace_at_slash_boundary(#[case] image: &str, #[case] user: &str) {
    let table = users(&[
        ("r.io", "host"),
        ("r.io/team", "team"),
        ("https://r.io/team/sub/", "sub"),
    ]);
    assert_eq!(user_for(&table, image), user);
}

#[rstest]
#[case::key_without_port_image_with_port("r.io:5000/app", "")]
#[case::key_with_port_image_without_port("s.io/app", "")]
#[case::ports_equal("s.io:5000/app", "s")]
#[case::ports_differ("s.io:5001/app", "")]
#[case::no_ports("r.io/app", "r")]
fn ports_must_match_exactly(#[case] image: &str, #[case] user: &str) {
    let table = users(&[("r.io", "r"), ("s.io:5000", "s")]);
    assert_eq!(user_for(&table, image), user);
}

#[rstest]
#[case::index_url("https://index.docker.io/v1/")]
#[case::docker_io("docker.io")]
#[case::index_host("index.docker.io")]
#[case::registry_1("registry-1.docker.io")]
#[case::hub_host("registry.hub.docker.com")]
#[case::https_registry_1("https://registry-1.docker.io/v2/")]
fn every_hub_alias_applies_to_hub_images(
    #[case] key: &str,
    #[values(
        "busybox",
        "library/busybox:1",
        "docker.io/acme/app",
        "index.docker.io/acme/app",
        "registry-1.docker.io/busybox",
        "registry.hub.docker.com/acme/app"
    )]
    image: &str,
) {
    let table = users(&[(key, "hub")]);
    assert_eq!(user_for(&table, image), "hub");
}

/// Issue #9: credentials are chosen by the matching form (Hub aliases
/// folded, host case-insensitive) while the engine is asked for Docker's own
/// name, so that the image is filed under the task's string.
#[rstest]
#[case::registry_1_is_hub_for_keys(
    "registry-1.docker.io/busybox",
    "https://index.docker.io/v1/",
    "registry-1.docker.io/busybox:latest"
)]
#[case::index_folds_for_the_engine_too(
    "index.docker.io/library/busybox",
    "https://index.docker.io/v1/",
    "docker.io/library/busybox:latest"
)]
#[case::hub_short(
    "busybox:1",
    "https://index.docker.io/v1/",
    "docker.io/library/busybox:1"
)]
#[case::host_case_kept_for_the_engine(
    "Registry.Example.com/app",
    "registry.example.com",
    "Registry.Example.com/app:latest"
)]
#[case::mixed_case_key_and_host("Asdf.com/foo:v2", "https://ASDF.com/v2/", "Asdf.com/foo:v2")]
#[case::uppercase_localhost_port(
    "LOCALHOST:5000/team/app",
    "localhost:5000/team",
    "LOCALHOST:5000/team/app:latest"
)]
fn matches_one_form_pulls_the_other(#[case] image: &str, #[case] key: &str, #[case] pulled: &str) {
    let table = users(&[(key, "chosen"), ("other.example.com", "other")]);
    let resolution = table.resolve(image).expect("valid image");
    assert_eq!(
        resolution.entry.map(|e| e.key.written.as_str()),
        Some(key),
        "{image}"
    );
    assert_eq!(resolution.image.pull_reference(), pulled);
    assert_eq!(resolution.image.to_string(), image);
}

#[rstest]
#[case::namespace_applies("acme/app", "acme")]
#[case::deeper("docker.io/acme/team/app", "acme")]
#[case::other_namespace_gets_hub_key("other/app", "hub")]
#[case::official_image("busybox", "hub")]
#[case::library_namespace_key("library/nginx", "hub")]
fn hub_namespace_keys(#[case] image: &str, #[case] user: &str) {
    let table = users(&[
        ("https://index.docker.io/v1/", "hub"),
        ("docker.io/acme", "acme"),
    ]);
    assert_eq!(user_for(&table, image), user);
}

#[test]
fn hub_library_namespace_key_applies_to_official_images() {
    let table = users(&[("docker.io/library", "official")]);
    assert_eq!(user_for(&table, "busybox"), "official");
    assert_eq!(user_for(&table, "acme/app"), "");
}

#[rstest]
#[case::one_label("a.example.com/app", "wild")]
#[case::two_labels_too_many("a.b.example.com/app", "")]
#[case::apex_not_matched("example.com/app", "exact-apex")]
#[case::exact_beats_wildcard("special.example.com/app", "exact")]
#[case::exact_host_even_with_shorter_path("special.example.com/team/app", "exact")]
#[case::wildcard_with_namespace("b.example.com/team/app", "wild-team")]
#[case::wildcard_port_must_match("a.example.com:5000/app", "")]
#[case::double_wildcard("a.b.other.com/app", "double")]
#[case::double_wildcard_needs_two("a.other.com/app", "")]
#[case::case_insensitive("A.Example.COM/app", "wild")]
fn wildcard_hosts(#[case] image: &str, #[case] user: &str) {
    let table = users(&[
        ("*.example.com", "wild"),
        ("*.example.com/team", "wild-team"),
        ("example.com", "exact-apex"),
        ("special.example.com", "exact"),
        ("*.*.other.com", "double"),
    ]);
    assert_eq!(user_for(&table, image), user);
}

#[test]
fn fewer_wildcard_labels_win() {
    let table = users(&[("*.*.com", "broad"), ("*.example.com", "narrow")]);
    assert_eq!(user_for(&table, "a.example.com/app"), "narrow");
    assert_eq!(user_for(&table, "a.other.com/app"), "broad");
}

#[test]
fn result_does_not_depend_on_key_order() {
    let keys = [
        ("r.io/team/sub", "sub"),
        ("r.io", "host"),
        ("r.io/team", "team"),
        ("*.r.io", "wild"),
        ("r.io/other", "other"),
    ];
    let images = [
        "r.io/team/sub/x",
        "r.io/team/x",
        "r.io/x",
        "a.r.io/x",
        "r.io/other/x",
    ];
    let expected: Vec<String> = images.iter().map(|i| user_for(&users(&keys), i)).collect();
    assert_eq!(expected, ["sub", "team", "host", "wild", "other"]);
    // Every rotation and the reverse give the same answers.
    let mut order = keys.to_vec();
    for _ in 0..keys.len() {
        order.rotate_left(1);
        let t = users(&order);
        let got: Vec<String> = images.iter().map(|i| user_for(&t, i)).collect();
        assert_eq!(got, expected);
        let reversed: Vec<_> = order.iter().rev().copied().collect();
        let t = users(&reversed);
        let got: Vec<String> = images.iter().map(|i| user_for(&t, i)).collect();
        assert_eq!(got, expected);
    }
}

#[test]
fn reports_key_as_written() {
    let table = users(&[("HTTPS://R.io/team/", "team")]);
    assert_eq!(key_for(&table, "r.io/team/app"), "HTTPS://R.io/team/");
}

// ---- where pullauth deliberately differs from the ECS agent ----

#[test]
fn differs_path_key_does_not_cover_other_paths_on_its_host() {
    // The agent's TestAuthAppliesToOnlyRegistry expects "example.tld/user2"
    // to apply to "example.tld/foo"; a namespace key is a scope, not a hint.
    let table = table(
        AuthType::Dockercfg,
        &format!(
            r#"{{"example.tld/user2":{{"auth":"{}"}}}}"#,
            b64("user:swordfish")
        ),
    );
    assert_eq!(user_for(&table, "example.tld/foo"), "");
    assert_eq!(user_for(&table, "example.tld/user2/foo"), "user");
}

#[test]
fn differs_prefix_match_stops_at_path_boundary() {
    // The agent matches "registry.tld/team" against "registry.tld/teammate/app" by string prefix.
    let table = users(&[("registry.tld/team", "team"), ("registry.tld", "host")]);
    assert_eq!(user_for(&table, "registry.tld/teammate/app"), "host");
}

#[test]
fn differs_several_path_keys_without_host_key_are_deterministic() {
    // The agent takes whichever path key map iteration yields first.
    let table = users(&[("r.io/a", "a"), ("r.io/b", "b")]);
    assert_eq!(user_for(&table, "r.io/c/app"), "");
    assert_eq!(user_for(&table, "r.io/b/app"), "b");
}

#[test]
fn differs_every_hub_key_spelling_works() {
    // The agent only reads the exact key "index.docker.io/v1/".
    let table = users(&[("docker.io", "hub")]);
    assert_eq!(user_for(&table, "busybox"), "hub");
}

#[test]
fn differs_auths_wrapper_is_read() {
    let data = format!(
        r#"{{"auths":{{"r.io":{{"auth":"{}"}}}},"credsStore":"desktop"}}"#,
        b64("u:p")
    );
    let table = table(AuthType::Dockercfg, &data);
    assert!(table.unwrapped_auths());
    assert_eq!(user_for(&table, "r.io/app"), "u");
}

#[test]
fn differs_docker_type_accepts_auth_field() {
    let table = table(
        AuthType::Docker,
        &format!(r#"{{"r.io":{{"auth":"{}"}}}}"#, b64("u:p")),
    );
    assert_eq!(user_for(&table, "r.io/app"), "u");
}

#[test]
fn differs_malformed_entry_is_an_error_not_anonymous() {
    // The agent logs a warning and pulls anonymously.
    let err = parse_err(
        AuthType::Dockercfg,
        r#"{"r.io":{"auth":"malformedbase64"}}"#,
    );
    assert!(matches!(err, AuthDataError::BadBase64 { .. }), "{err:?}");
}

/// Issue #9: `auth` is decoded as the ECS agent decodes it (Go's
/// `base64.StdEncoding`, padding required). The unpadded value was accepted
/// and `malformedbase64` (15 characters, which a padding-blind decoder
/// reads as 11 bytes) was called "not UTF-8"; both are "not valid base64",
/// and neither is quoted.
#[rstest]
#[case::unpadded("dXNlcjpzd29yZGZpc2g")]
#[case::malformed("malformedbase64")]
#[case::url_safe_alphabet("dXNlcjpzd29yZGZpc2g-_w==")]
#[case::leading_space(" dXNlcjpzd29yZGZpc2g=")]
#[case::too_much_padding("dXNlcjpzd29yZGZpc2g==")]
#[case::padding_only("====")]
fn auth_that_is_not_strict_base64_is_rejected_as_such(
    #[values(AuthType::Docker, AuthType::Dockercfg)] kind: AuthType,
    #[case] auth: &str,
) {
    let err = parse_err(kind, &format!(r#"{{"r.io":{{"auth":"{auth}"}}}}"#));
    assert_eq!(
        err,
        AuthDataError::BadBase64 {
            key: "r.io".to_owned()
        }
    );
    let message = err.to_string();
    assert!(
        message.contains("\"auth\" is not valid base64"),
        "{message}"
    );
    assert!(!message.contains(auth.trim()), "{message}");
}

/// The same value padded decodes, and so does one with non-zero bits after
/// its last byte, which Go's (non-strict) decoder accepts too.
#[rstest]
#[case::padded("dXNlcjpzd29yZGZpc2g=")]
#[case::trailing_bits("dXNlcjpzd29yZGZpc2h=")]
fn auth_that_go_decodes_is_accepted(#[case] auth: &str) {
    let table = table(
        AuthType::Dockercfg,
        &format!(r#"{{"r.io":{{"auth":"{auth}"}}}}"#),
    );
    assert_eq!(user_for(&table, "r.io/app"), "user");
}

// ---- parsing both formats ----

#[rstest]
#[case::docker(
    AuthType::Docker,
    r#"{"r.io":{"username":"u","password":"p:q","email":"e@x"}}"#
)]
#[case::docker_auth(AuthType::Docker, &format!(r#"{{"r.io":{{"auth":"{}"}}}}"#, b64("u:p:q")))]
#[case::docker_auth_agreeing(
    AuthType::Docker,
    &format!(r#"{{"r.io":{{"auth":"{}","username":"u","password":"p:q"}}}}"#, b64("u:p:q"))
)]
#[case::dockercfg(AuthType::Dockercfg, &format!(r#"{{"r.io":{{"auth":"{}","email":"e@x"}}}}"#, b64("u:p:q")))]
#[case::dockercfg_wrapped_lines(
    AuthType::Dockercfg,
    &format!(r#"{{"r.io":{{"auth":"{}"}}}}"#, wrapped(&b64("u:p:q")))
)]
#[case::wrapped(
    AuthType::Docker,
    r#"{"auths":{"r.io":{"username":"u","password":"p:q"}}}"#
)]
#[case::field_names_any_case(AuthType::Docker, r#"{"r.io":{"Username":"u","Password":"p:q"}}"#)]
fn reads_user_and_password(#[case] kind: AuthType, #[case] data: &str) {
    let table = table(kind, data);
    let entry = table
        .resolve("r.io/app")
        .expect("valid")
        .entry
        .expect("matches");
    assert_eq!(entry.credentials.username.as_deref(), Some("u"));
    let password = entry.credentials.password.as_ref().expect("password");
    assert_eq!(password.expose_secret(), "p:q");
}

#[test]
fn unicode_and_punctuation_survive_decoding() {
    let password = "p@ss w:rd+/=?>~\"\\ pässwörd 密码";
    let table = table(
        AuthType::Dockercfg,
        &format!(
            r#"{{"r.io":{{"auth":"{}"}}}}"#,
            b64(&format!("üser:{password}"))
        ),
    );
    let entry = table
        .resolve("r.io/app")
        .expect("valid")
        .entry
        .expect("matches");
    assert_eq!(entry.credentials.username.as_deref(), Some("üser"));
    assert_eq!(
        entry
            .credentials
            .password
            .as_ref()
            .map(|p| p.expose_secret()),
        Some(password)
    );
}

#[test]
fn tokens_pass_through() {
    let table = table(
        AuthType::Docker,
        r#"{"r.io":{"identitytoken":"id-tok"},"s.io":{"username":"u","registrytoken":"reg-tok"}}"#,
    );
    let r = table
        .resolve("r.io/app")
        .expect("valid")
        .entry
        .expect("matches");
    assert_eq!(
        r.credentials
            .identity_token
            .as_ref()
            .map(|t| t.expose_secret()),
        Some("id-tok")
    );
    assert_eq!(r.credentials.kind(), "identity token");
    let s = table
        .resolve("s.io/app")
        .expect("valid")
        .entry
        .expect("matches");
    assert_eq!(
        s.credentials
            .registry_token
            .as_ref()
            .map(|t| t.expose_secret()),
        Some("reg-tok")
    );
    let cfg = self::table(
        AuthType::Dockercfg,
        &format!(
            r#"{{"r.io":{{"auth":"{}","identitytoken":"id"}}}}"#,
            b64("u:")
        ),
    );
    let c = cfg
        .resolve("r.io/app")
        .expect("valid")
        .entry
        .expect("matches");
    assert_eq!(c.credentials.username.as_deref(), Some("u"));
    assert!(c.credentials.password.is_none());
    assert!(c.credentials.identity_token.is_some());
}

#[test]
fn empty_map_means_no_credentials() {
    let table = table(AuthType::Docker, "{}");
    assert!(table.is_empty());
    assert_eq!(user_for(&table, "r.io/app"), "");
}

// ---- every error class ----

#[rstest]
#[case::syntax(AuthType::Docker, "{\"r.io\": {", "not valid JSON (line 1, column 10)")]
#[case::syntax_line(AuthType::Docker, "{\n\"r.io\": x}", "line 2, column 9")]
#[case::not_object_array(AuthType::Docker, "[]", "must be a JSON object")]
#[case::not_object_string(AuthType::Docker, "\"text\"", "must be a JSON object")]
#[case::auths_not_object(AuthType::Docker, r#"{"auths":[]}"#, "\"auths\" must be an object")]
#[case::entry_not_object(
    AuthType::Docker,
    r#"{"r.io":"user:pw"}"#,
    "entry \"r.io\" must be a JSON object"
)]
#[case::field_not_string(
    AuthType::Docker,
    r#"{"r.io":{"username":true}}"#,
    "field \"username\" must be a string"
)]
#[case::auth_not_string(
    AuthType::Dockercfg,
    r#"{"r.io":{"auth":true}}"#,
    "field \"auth\" must be a string"
)]
#[case::field_twice(
    AuthType::Docker,
    r#"{"r.io":{"username":"a","username":"b","password":"p"}}"#,
    "appears twice"
)]
#[case::bad_base64(
    AuthType::Dockercfg,
    r#"{"r.io":{"auth":"not base64!"}}"#,
    "not valid base64"
)]
#[case::not_utf8(AuthType::Dockercfg, r#"{"r.io":{"auth":"//79"}}"#, "UTF-8")]
#[case::no_colon(AuthType::Dockercfg, &format!(r#"{{"r.io":{{"auth":"{}"}}}}"#, b64("noColon")), "has no ':'")]
#[case::username_without_password(
    AuthType::Docker,
    r#"{"r.io":{"username":"u"}}"#,
    "no password or token"
)]
#[case::empty_password(
    AuthType::Docker,
    r#"{"r.io":{"username":"u","password":""}}"#,
    "no password or token"
)]
#[case::auth_with_empty_password(AuthType::Dockercfg, &format!(r#"{{"r.io":{{"auth":"{}"}}}}"#, b64("u:")), "no password or token")]
#[case::password_without_username(AuthType::Docker, r#"{"r.io":{"password":"p"}}"#, "no username")]
#[case::empty_entry(AuthType::Docker, r#"{"r.io":{}}"#, "holds no credentials")]
#[case::only_email(
    AuthType::Dockercfg,
    r#"{"r.io":{"email":"e@x"}}"#,
    "holds no credentials"
)]
#[case::dockercfg_with_password(
    AuthType::Dockercfg,
    r#"{"r.io":{"username":"u","password":"p"}}"#,
    "set ECS_ENGINE_AUTH_TYPE=docker"
)]
#[case::auth_conflict(AuthType::Docker, &format!(r#"{{"r.io":{{"auth":"{}","username":"v","password":"p"}}}}"#, b64("u:p")), "disagree")]
#[case::bad_key(
    AuthType::Docker,
    r#"{"ftp://r.io":{"username":"u","password":"p"}}"#,
    "key \"ftp://r.io\" is not a registry"
)]
#[case::duplicate_normalized(
    AuthType::Docker,
    r#"{"https://r.io/":{"username":"u","password":"p"},"R.IO":{"username":"v","password":"q"}}"#,
    "keys \"R.IO\" and \"https://r.io/\" name the same registry"
)]
#[case::duplicate_exact(
    AuthType::Docker,
    r#"{"r.io":{"username":"u","password":"p"},"r.io":{"username":"v","password":"q"}}"#,
    "name the same registry and namespace (r.io)"
)]
#[case::duplicate_hub(
    AuthType::Docker,
    r#"{"https://index.docker.io/v1/":{"username":"u","password":"p"},"docker.io":{"username":"v","password":"q"}}"#,
    "(docker.io)"
)]
#[case::duplicate_namespace(
    AuthType::Docker,
    r#"{"r.io/team":{"username":"u","password":"p"},"https://r.io/team/v2/":{"username":"v","password":"q"}}"#,
    "(r.io/team)"
)]
fn rejects(#[case] kind: AuthType, #[case] data: &str, #[case] message: &str) {
    let err = parse_err(kind, data);
    let text = err.to_string();
    assert!(text.contains(message), "{text}");
    assert!(
        text.starts_with("ECS_ENGINE_AUTH_DATA"),
        "names the variable: {text}"
    );
}

#[rstest]
#[case::syntax_after_password(r#"{"r.io":{"username":"u","password":"hunter2"} oops"#)]
#[case::password_as_entry(r#"{"r.io":"hunter2"}"#)]
#[case::password_wrong_type(r#"{"r.io":{"username":"u","password":["hunter2"]}}"#)]
#[case::unterminated(r#"{"r.io":{"username":"u","password":"hunter2"#)]
#[case::invalid_escape(r#"{"r.io":{"username":"u","password":"hunter2\q"}}"#)]
#[case::control_char("{\"r.io\":{\"username\":\"u\",\"password\":\"hunter2\u{1}\"}}")]
fn errors_never_echo_values(#[case] data: &str) {
    for kind in [AuthType::Docker, AuthType::Dockercfg] {
        let err = parse_err(kind, data);
        let text = format!("{err} {err:?}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}

/// A key with user info (`user:Canary7pw@`) on every path that names the
/// key: the error is about the user info when the entry is otherwise fine,
/// and whatever the error, the key is shown masked.
#[rstest]
#[case::userinfo_key(
    AuthType::Docker,
    r#"{"https://alice:Canary7pw@r.io":{"username":"u","password":"p"}}"#,
    "ECS_ENGINE_AUTH_DATA key \"https://<userinfo redacted>@r.io\" is not a registry: a registry \
     key cannot hold user info: remove the user:password@ part and put the credentials in the \
     entry (\"username\" and \"password\", or \"auth\")"
)]
#[case::userinfo_key_dockercfg(
    AuthType::Dockercfg,
    &format!(r#"{{"alice:Canary7pw@r.io/team":{{"auth":"{}"}}}}"#, b64("u:p")),
    "key \"<userinfo redacted>@r.io/team\" is not a registry: a registry key cannot hold user info"
)]
#[case::token_as_user(
    AuthType::Docker,
    r#"{"Canary7pw@ghcr.io":{"username":"u","password":"p"}}"#,
    "key \"<userinfo redacted>@ghcr.io\" is not a registry"
)]
#[case::entry_not_object(
    AuthType::Docker,
    r#"{"https://a:Canary7pw@r.io":"x"}"#,
    "entry \"https://<userinfo redacted>@r.io\" must be a JSON object"
)]
#[case::field_not_string(
    AuthType::Docker,
    r#"{"https://a:Canary7pw@r.io":{"username":1}}"#,
    "entry \"https://<userinfo redacted>@r.io\": field \"username\" must be a string"
)]
#[case::field_twice(
    AuthType::Docker,
    r#"{"https://a:Canary7pw@r.io":{"username":"a","username":"b"}}"#,
    "entry \"https://<userinfo redacted>@r.io\": field \"username\" appears twice"
)]
#[case::bad_base64(
    AuthType::Dockercfg,
    r#"{"a:Canary7pw@r.io":{"auth":"!"}}"#,
    "entry \"<userinfo redacted>@r.io\": \"auth\" is not valid base64"
)]
#[case::no_credentials(
    AuthType::Docker,
    r#"{"a:Canary7pw@r.io":{}}"#,
    "entry \"<userinfo redacted>@r.io\" holds no credentials"
)]
#[case::password_without_username(
    AuthType::Docker,
    r#"{"a:Canary7pw@r.io":{"password":"p"}}"#,
    "entry \"<userinfo redacted>@r.io\" has a password but no username"
)]
#[case::field_name_that_is_not_a_word(
    AuthType::Docker,
    r#"{"r.io":{"username":"u","password:Canary7pw":1}}"#,
    "field \"<18 characters, not shown>\" must be a string"
)]
fn user_info_in_a_key_is_masked(#[case] kind: AuthType, #[case] data: &str, #[case] message: &str) {
    let err = parse_err(kind, data);
    let text = format!("{err} {err:?}");
    assert!(err.to_string().contains(message), "{err}");
    assert!(!text.contains("Canary7pw"), "{text}");
    assert!(!text.contains("alice"), "{text}");
}

/// Keys that hold an `@`-free look-alike of user info stay accepted.
#[rstest]
#[case::port("r.io:5000", "r.io:5000")]
#[case::scheme_port_path("https://r.io:5000/team/", "https://r.io:5000/team/")]
fn keys_without_user_info_are_shown_as_written(#[case] key: &str, #[case] written: &str) {
    let table = table(
        AuthType::Docker,
        &format!(r#"{{"{key}":{{"username":"u","password":"p"}}}}"#),
    );
    assert_eq!(table.entries()[0].key.written, written);
}

// ---- properties ----

proptest::proptest! {
    #[test]
    fn arbitrary_auth_data_never_panics(data in ".*", docker in proptest::bool::ANY) {
        let kind = if docker { AuthType::Docker } else { AuthType::Dockercfg };
        let _ = RegistryTable::from_auth_data(kind, &SecretString::from(data));
    }

    #[test]
    fn arbitrary_json_shapes_never_panic(
        key in "[a-zA-Z0-9:/.*_-]{0,30}",
        field in "(username|password|auth|email|identitytoken|registrytoken|x)",
        value in ".{0,30}",
    ) {
        let data = serde_json::json!({ key: { field: value } }).to_string();
        for kind in [AuthType::Docker, AuthType::Dockercfg] {
            let _ = RegistryTable::from_auth_data(kind, &SecretString::from(data.as_str()));
        }
    }

    #[test]
    fn arbitrary_references_never_panic(image in ".*") {
        let table = users(&[("r.io", "u"), ("*.example.com", "w")]);
        let _ = table.resolve(&image);
    }

    #[test]
    fn canary_password_never_in_errors_or_debug(
        canary in "CANARY[a-zA-Z0-9]{8}",
        key in "[a-z:/.*]{0,12}",
        breakage in 0usize..6,
    ) {
        let auth = b64(&format!("user:{canary}"));
        let data = match breakage {
            0 => format!(r#"{{"{key}":{{"username":"u","password":"{canary}"}}}}"#),
            1 => format!(r#"{{"{key}":{{"password":"{canary}"}}}}"#),
            2 => format!(r#"{{"{key}":{{"auth":"{auth}"}} {canary}"#),
            3 => format!(r#"{{"{key}":"{canary}"}}"#),
            4 => format!(r#"{{"{key}":{{"auth":"{auth}","username":"other"}}}}"#),
            _ => format!(r#"{{"{key}":{{"identitytoken":"{canary}","username":7}}}}"#),
        };
        for kind in [AuthType::Docker, AuthType::Dockercfg] {
            match RegistryTable::from_auth_data(kind, &SecretString::from(data.as_str())) {
                Ok(table) => {
                    let text = format!("{table:?}");
                    proptest::prop_assert!(!text.contains(&canary));
                    proptest::prop_assert!(!text.contains(&auth));
                }
                Err(err) => {
                    let text = format!("{err} {err:?}");
                    proptest::prop_assert!(!text.contains(&canary));
                    proptest::prop_assert!(!text.contains(&auth));
                }
            }
        }
    }
}

/// Keys for the credential-helper lookups below: host keys, a port, Hub,
/// a namespace-only host, wildcards and an exact host beating a wildcard.
fn server_table() -> RegistryTable {
    users(&[
        ("registry.example.com", "host-user"),
        ("registry.example.com/team", "team-user"),
        ("registry.example.com:5000", "port-user"),
        ("https://index.docker.io/v1/", "hub-user"),
        ("docker.io/acme", "acme-user"),
        ("scoped.example.com/team", "scoped-team"),
        ("scoped.example.com/other/deep", "scoped-deep"),
        ("*.wild.example.com", "wild-user"),
        ("*.wild.example.com/ns", "wild-ns"),
        ("exact.wild.example.com", "exact-user"),
        ("*.*.wild.example.com", "two-wild"),
    ])
}

#[rstest]
#[case::bare_host("registry.example.com", "registry.example.com", "host-user")]
#[case::host_any_case("Registry.Example.COM", "registry.example.com", "host-user")]
#[case::host_port("registry.example.com:5000", "registry.example.com:5000", "port-user")]
#[case::https_prefix("https://registry.example.com", "registry.example.com", "host-user")]
#[case::http_prefix_port(
    "http://registry.example.com:5000/",
    "registry.example.com:5000",
    "port-user"
)]
#[case::trailing_v1(
    "https://registry.example.com/v1/",
    "registry.example.com",
    "host-user"
)]
#[case::trailing_v2("registry.example.com/v2", "registry.example.com", "host-user")]
#[case::path_is_ignored("registry.example.com/team", "registry.example.com", "host-user")]
#[case::hub_legacy_url("https://index.docker.io/v1/", "docker.io", "hub-user")]
#[case::hub_short("docker.io", "docker.io", "hub-user")]
#[case::hub_index("index.docker.io", "docker.io", "hub-user")]
#[case::hub_registry_1("registry-1.docker.io", "docker.io", "hub-user")]
#[case::hub_registry_hub("https://registry.hub.docker.com", "docker.io", "hub-user")]
#[case::wildcard("a.wild.example.com", "a.wild.example.com", "wild-user")]
#[case::exact_beats_wildcard("exact.wild.example.com", "exact.wild.example.com", "exact-user")]
#[case::two_wildcards("a.b.wild.example.com", "a.b.wild.example.com", "two-wild")]
#[case::wildcard_needs_a_label("wild.example.com", "wild.example.com", "")]
#[case::other_port("registry.example.com:5001", "registry.example.com:5001", "")]
#[case::unknown_host("other.example.com", "other.example.com", "")]
#[case::namespace_only_host("scoped.example.com", "scoped.example.com", "")]
fn server_url_finds_the_host_level_key(
    #[case] server_url: &str,
    #[case] host: &str,
    #[case] user: &str,
) {
    let table = server_table();
    let found = table.for_server_url(server_url).expect("a server URL");
    assert_eq!(found.host, host);
    let got = found
        .entry
        .and_then(|e| e.credentials.username.clone())
        .unwrap_or_default();
    assert_eq!(got, user, "{server_url}");
    if let Some(entry) = found.entry {
        assert!(entry.key.namespace.is_empty(), "{}", entry.key);
    }
}

#[rstest]
#[case::namespace_only("scoped.example.com", &["scoped.example.com/other/deep", "scoped.example.com/team"])]
#[case::beside_a_host_key("registry.example.com", &["registry.example.com/team"])]
#[case::hub("https://index.docker.io/v1/", &["docker.io/acme"])]
#[case::wildcard_namespace("a.wild.example.com", &["*.wild.example.com/ns"])]
#[case::exact_host_key_outranks_wildcard_namespaces("exact.wild.example.com", &[])]
#[case::port_has_none("registry.example.com:5000", &[])]
#[case::unknown_host("other.example.com", &[])]
fn server_url_reports_namespace_keys_it_cannot_use(
    #[case] server_url: &str,
    #[case] keys: &[&str],
) {
    let table = server_table();
    let found = table.for_server_url(server_url).expect("a server URL");
    let shown: Vec<String> = found
        .namespace_keys
        .iter()
        .map(|e| e.key.to_string())
        .collect();
    assert_eq!(shown, keys);
}

#[test]
fn server_url_identity_token_key_is_found() {
    let table = table(
        AuthType::Dockercfg,
        r#"{"registry.example.com":{"identitytoken":"tok-123"}}"#,
    );
    let found = table
        .for_server_url("https://registry.example.com")
        .expect("a server URL");
    let entry = found.entry.expect("the host key");
    assert_eq!(entry.credentials.kind(), "identity token");
    assert_eq!(
        entry
            .credentials
            .identity_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned()),
        Some("tok-123".to_owned())
    );
}

#[rstest]
#[case::empty("", crate::KeyError::Empty)]
#[case::wildcard("*.example.com", crate::KeyError::ServerWildcard)]
#[case::user_info("https://u:p@registry.example.com", crate::KeyError::UserInfo)]
#[case::other_scheme("ftp://registry.example.com", crate::KeyError::Scheme)]
#[case::bad_port("registry.example.com:http", crate::KeyError::Port)]
fn server_url_that_is_not_a_registry_is_an_error(
    #[case] server_url: &str,
    #[case] error: crate::KeyError,
) {
    let table = server_table();
    assert_eq!(table.for_server_url(server_url).map(|_| ()), Err(error));
}
