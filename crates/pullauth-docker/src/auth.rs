//! The `X-Registry-Auth` header: the one place where a password leaves its
//! [`SecretString`].
//!
//! We build the header ourselves instead of handing `DockerCredentials` to
//! bollard: bollard encodes it with standard base64, while the engine decodes
//! URL-safe base64 and, when decoding fails, silently pulls anonymously. Any
//! password whose JSON encodes to a `+` or `/` would be dropped that way.
//!
//! The header value is built once, when the credentials are chosen, and
//! building it is fallible: a value that cannot be a header is an error
//! before the pull, never a request sent without the header (which the
//! engine would treat as an anonymous pull).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use bollard::BollardRequest;
use http::HeaderValue;
use pullauth_resolve::{Credentials, DOCKER_HUB, Entry, ImageRef};
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};

/// The server address Docker's CLI sends for Docker Hub.
pub const DOCKER_HUB_SERVER_ADDRESS: &str = "https://index.docker.io/v1/";

/// The `X-Registry-Auth` header value, marked sensitive so that HTTP
/// tooling does not print it, and redacted in `Debug`.
///
/// It is held as a ready [`HeaderValue`] rather than a [`SecretString`]:
/// that makes adding it to a request infallible. The cost is that this one
/// encoded copy is not zeroed on drop; hyper's write buffer holds another
/// copy while the request is sent anyway.
#[derive(Clone)]
pub struct RegistryAuth(HeaderValue);

/// The encoded credentials could not be made into a header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the encoded credentials are not a valid HTTP header value")]
pub struct InvalidHeader;

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistryAuth(<redacted>)")
    }
}

impl RegistryAuth {
    /// Encodes `credentials` for a pull of `image`, with the server address
    /// set as `docker login` does: the registry host, or Hub's legacy URL.
    pub fn new(image: &ImageRef, credentials: &Credentials) -> Result<RegistryAuth, InvalidHeader> {
        let server_address = if image.registry == DOCKER_HUB {
            DOCKER_HUB_SERVER_ADDRESS.to_owned()
        } else {
            image.registry.clone()
        };
        let mut fields = serde_json::Map::new();
        let mut put = |name: &str, value: Option<&str>| {
            if let Some(value) = value {
                fields.insert(name.to_owned(), serde_json::Value::String(value.to_owned()));
            }
        };
        put("username", credentials.username.as_deref());
        put(
            "password",
            credentials.password.as_ref().map(|p| p.expose_secret()),
        );
        put("email", credentials.email.as_deref());
        put("serveraddress", Some(&server_address));
        put(
            "identitytoken",
            credentials
                .identity_token
                .as_ref()
                .map(|t| t.expose_secret()),
        );
        put(
            "registrytoken",
            credentials
                .registry_token
                .as_ref()
                .map(|t| t.expose_secret()),
        );
        let json = Zeroizing::new(serde_json::Value::Object(fields).to_string());
        let encoded = SecretString::from(URL_SAFE.encode(json.as_bytes()));
        header_value(encoded.expose_secret()).map(RegistryAuth)
    }

    /// The header for `entry`'s credentials, `Ok(None)` for an anonymous pull.
    pub fn for_entry(
        image: &ImageRef,
        entry: Option<&Entry>,
    ) -> Result<Option<RegistryAuth>, InvalidHeader> {
        entry
            .map(|entry| RegistryAuth::new(image, &entry.credentials))
            .transpose()
    }

    /// A number that is equal for equal headers and, with overwhelming
    /// likelihood, different for different ones: what a pull sends, for
    /// deciding whether two pulls are the same. Keyed per process, so it
    /// reveals nothing about the credentials outside it; never shown.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::BuildHasher;
        static KEY: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
        KEY.get_or_init(std::hash::RandomState::new)
            .hash_one(self.0.as_bytes())
    }

    /// Adds the header to a request.
    pub(crate) fn apply(&self, mut request: BollardRequest) -> BollardRequest {
        request
            .headers_mut()
            .insert("X-Registry-Auth", self.0.clone());
        request
    }

    /// The encoded value, for tests that decode it as the engine does.
    #[doc(hidden)]
    pub fn expose_for_test(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }
}

/// `encoded` as a sensitive header value.
fn header_value(encoded: &str) -> Result<HeaderValue, InvalidHeader> {
    let mut value = HeaderValue::from_str(encoded).map_err(|_| InvalidHeader)?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(auth: &RegistryAuth) -> serde_json::Value {
        let bytes = URL_SAFE
            .decode(auth.expose_for_test())
            .expect("URL-safe base64");
        serde_json::from_slice(&bytes).expect("JSON")
    }

    #[test]
    fn encodes_url_safe_so_the_engine_can_decode_it() {
        // '?' and '>' produce '/' and '+' in standard base64.
        let credentials = Credentials::basic("u", "??>>??>>~~");
        let image = ImageRef::parse("r.io/app").expect("valid");
        let auth = RegistryAuth::new(&image, &credentials).expect("header");
        assert!(!auth.expose_for_test().contains(['+', '/']));
        let json = decode(&auth);
        assert_eq!(json["password"], "??>>??>>~~");
        assert_eq!(json["username"], "u");
        assert_eq!(json["serveraddress"], "r.io");
    }

    #[test]
    fn hub_gets_the_cli_server_address() {
        let image = ImageRef::parse("busybox").expect("valid");
        let auth = RegistryAuth::new(&image, &Credentials::basic("u", "p")).expect("header");
        assert_eq!(decode(&auth)["serveraddress"], DOCKER_HUB_SERVER_ADDRESS);
    }

    #[test]
    fn debug_is_redacted() {
        let image = ImageRef::parse("r.io/app").expect("valid");
        let auth = RegistryAuth::new(&image, &Credentials::basic("u", "hunter2")).expect("header");
        let text = format!("{auth:?}");
        assert!(!text.contains(auth.expose_for_test()));
        assert!(!text.contains("hunter2"));
    }

    #[test]
    fn header_is_sensitive_and_added_to_the_request() {
        let image = ImageRef::parse("r.io/app").expect("valid");
        let auth = RegistryAuth::new(&image, &Credentials::basic("u", "p")).expect("header");
        let request = auth.apply(http::Request::new(bollard::body_full(Default::default())));
        let value = request
            .headers()
            .get("X-Registry-Auth")
            .expect("header set");
        assert!(value.is_sensitive());
        assert_eq!(value.to_str().expect("ascii"), auth.expose_for_test());
    }

    #[test]
    fn fingerprints_tell_credentials_apart() {
        let image = ImageRef::parse("r.io/app").expect("valid");
        let print = |user: &str, password: &str| {
            RegistryAuth::new(&image, &Credentials::basic(user, password))
                .expect("header")
                .fingerprint()
        };
        assert_eq!(print("u", "p"), print("u", "p"));
        assert_ne!(print("u", "p"), print("u", "q"));
        assert_ne!(print("u", "p"), print("v", "p"));
    }

    #[test]
    fn a_value_that_cannot_be_a_header_is_an_error_not_an_omitted_header() {
        assert_eq!(header_value("line\nbreak"), Err(InvalidHeader));
        assert!(header_value("eyJ1c2VybmFtZSI6InUifQ==").is_ok());
    }
}
