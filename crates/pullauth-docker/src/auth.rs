//! The `X-Registry-Auth` header: the one place where a password leaves its
//! [`SecretString`].
//!
//! We build the header ourselves instead of handing `DockerCredentials` to
//! bollard: bollard encodes it with standard base64, while the engine decodes
//! URL-safe base64 and, when decoding fails, silently pulls anonymously. Any
//! password whose JSON encodes to a `+` or `/` would be dropped that way.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use bollard::BollardRequest;
use http::HeaderValue;
use pullauth_resolve::{Credentials, DOCKER_HUB, Entry, ImageRef};
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};

/// The server address Docker's CLI sends for Docker Hub.
pub const DOCKER_HUB_SERVER_ADDRESS: &str = "https://index.docker.io/v1/";

/// The encoded `X-Registry-Auth` value, kept secret until the request is sent.
#[derive(Clone)]
pub struct RegistryAuth(SecretString);

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RegistryAuth(<redacted>)")
    }
}

impl RegistryAuth {
    /// Encodes `credentials` for a pull of `image`, with the server address
    /// set as `docker login` does: the registry host, or Hub's legacy URL.
    pub fn new(image: &ImageRef, credentials: &Credentials) -> RegistryAuth {
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
        // Zero the copies held inside the map as well.
        RegistryAuth(SecretString::from(URL_SAFE.encode(json.as_bytes())))
    }

    /// The header for `entry`'s credentials, or `None` for an anonymous pull.
    pub fn for_entry(image: &ImageRef, entry: Option<&Entry>) -> Option<RegistryAuth> {
        entry.map(|entry| RegistryAuth::new(image, &entry.credentials))
    }

    /// Adds the header to a request, marked sensitive so that HTTP tooling
    /// does not print it.
    pub(crate) fn apply(&self, mut request: BollardRequest) -> BollardRequest {
        if let Ok(mut value) = HeaderValue::from_str(self.0.expose_secret()) {
            value.set_sensitive(true);
            request.headers_mut().insert("X-Registry-Auth", value);
        }
        request
    }

    /// The encoded value, for tests that decode it as the engine does.
    #[doc(hidden)]
    pub fn expose_for_test(&self) -> &str {
        self.0.expose_secret()
    }
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
        let auth = RegistryAuth::new(&image, &credentials);
        assert!(!auth.expose_for_test().contains(['+', '/']));
        let json = decode(&auth);
        assert_eq!(json["password"], "??>>??>>~~");
        assert_eq!(json["username"], "u");
        assert_eq!(json["serveraddress"], "r.io");
    }

    #[test]
    fn hub_gets_the_cli_server_address() {
        let image = ImageRef::parse("busybox").expect("valid");
        let auth = RegistryAuth::new(&image, &Credentials::basic("u", "p"));
        assert_eq!(decode(&auth)["serveraddress"], DOCKER_HUB_SERVER_ADDRESS);
    }

    #[test]
    fn debug_is_redacted() {
        let image = ImageRef::parse("r.io/app").expect("valid");
        let auth = RegistryAuth::new(&image, &Credentials::basic("u", "hunter2"));
        let text = format!("{auth:?}");
        assert!(!text.contains(auth.expose_for_test()));
        assert!(!text.contains("hunter2"));
    }
}
