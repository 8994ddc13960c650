//! Registry credentials, with every secret behind [`SecretString`].

use std::fmt;

use secrecy::SecretString;

/// What one `ECS_ENGINE_AUTH_DATA` entry grants. The password and tokens
/// zero their memory on drop and print as `<redacted>`; the only way to read
/// them is `ExposeSecret::expose_secret`, called where the engine request is
/// built.
#[derive(Clone, Default)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub email: Option<String>,
    /// An OAuth refresh token the registry exchanges for access (`identitytoken`).
    pub identity_token: Option<SecretString>,
    /// A bearer token sent to the registry as is (`registrytoken`).
    pub registry_token: Option<SecretString>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |s: &Option<SecretString>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("email", &self.email)
            .field("identity_token", &redacted(&self.identity_token))
            .field("registry_token", &redacted(&self.registry_token))
            .finish()
    }
}

impl Credentials {
    /// Username and password.
    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            username: Some(username.into()),
            password: Some(SecretString::from(password.into())),
            ..Credentials::default()
        }
    }

    /// How the credentials authenticate, for messages: never a secret.
    pub fn kind(&self) -> &'static str {
        match (&self.password, &self.identity_token, &self.registry_token) {
            (_, _, Some(_)) => "registry token",
            (_, Some(_), _) => "identity token",
            (Some(_), _, _) => "password",
            _ => "none",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_every_secret() {
        let credentials = Credentials {
            username: Some("alice".into()),
            password: Some("pa55word".into()),
            email: None,
            identity_token: Some("idtoken-123".into()),
            registry_token: Some("regtoken-456".into()),
        };
        let text = format!("{credentials:?} {credentials:#?}");
        for secret in ["pa55word", "idtoken-123", "regtoken-456"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(text.contains("alice"));
        assert!(text.contains("<redacted>"));
    }
}
