//! [`CaBundle`]: extra certificate authorities for every AWS call, from the
//! PEM file named by `AWS_CA_BUNDLE` (as the AWS CLI reads it; the SDK for
//! Rust does not).
//!
//! The bundle is read and checked once, when a command starts, so that a
//! missing, unreadable or malformed file stops it with a configuration
//! error instead of surfacing later as a failed TLS handshake. The checks
//! are the ones the SDK's rustls client applies when it builds its trust
//! store (and panics on): every `CERTIFICATE` section decodes, and every
//! certificate can be a trust anchor. Errors name the variable and the
//! path, never the file's content (the variable could point at a file
//! holding a secret by mistake).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::{self, PemObject};

/// The environment variable naming the bundle.
pub const CA_BUNDLE_VAR: &str = "AWS_CA_BUNDLE";
/// Largest bundle read: Debian's whole CA list is about 220 KB.
pub const MAX_CA_BUNDLE_BYTES: u64 = 4 * 1024 * 1024;

/// Certificates added to the system's roots for every AWS call (the SDK
/// clients, and the credential providers that share their HTTP client:
/// STS, IMDS, ECS container credentials). Cheap to clone.
#[derive(Clone)]
pub struct CaBundle {
    path: PathBuf,
    /// The certificates, re-encoded as PEM for the SDK's trust store:
    /// nothing else of the file (keys, comments) is kept.
    pem: Arc<Vec<u8>>,
    count: usize,
}

impl fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaBundle")
            .field("path", &self.path)
            .field("certificates", &self.count)
            .finish()
    }
}

/// Why `AWS_CA_BUNDLE` cannot be used. A configuration error: the file
/// must be fixed, trying again does not help.
#[derive(Debug, thiserror::Error)]
pub enum CaBundleError {
    #[error("{CA_BUNDLE_VAR}={path:?}: cannot read it: {error}")]
    Unreadable {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{CA_BUNDLE_VAR}={path:?}: not a regular file")]
    NotAFile { path: PathBuf },
    #[error("{CA_BUNDLE_VAR}={path:?}: larger than {MAX_CA_BUNDLE_BYTES} bytes; not a CA bundle")]
    TooLarge { path: PathBuf },
    /// `problem` is one of a few fixed phrases, never a line of the file.
    #[error("{CA_BUNDLE_VAR}={path:?}: not a PEM certificate bundle: {problem}")]
    NotPem {
        path: PathBuf,
        problem: &'static str,
    },
    /// `index` counts the file's certificates from 1.
    #[error(
        "{CA_BUNDLE_VAR}={path:?}: certificate {index} is not a valid X.509 certificate (it cannot be a trust anchor)"
    )]
    BadCertificate { path: PathBuf, index: usize },
}

impl CaBundle {
    /// The bundle named by `AWS_CA_BUNDLE`; `None` when it is unset or
    /// empty (an empty value counts as unset, as for every setting).
    pub fn from_env() -> Result<Option<CaBundle>, CaBundleError> {
        match std::env::var_os(CA_BUNDLE_VAR) {
            Some(path) if !path.is_empty() => CaBundle::load(Path::new(&path)).map(Some),
            _ => Ok(None),
        }
    }

    /// Reads and checks the PEM file at `path`.
    pub fn load(path: &Path) -> Result<CaBundle, CaBundleError> {
        let unreadable = |error| CaBundleError::Unreadable {
            path: path.to_path_buf(),
            error,
        };
        // A FIFO or a device would block or never end: only regular files
        // (symlinks followed, as Kubernetes and Docker secrets mount them).
        if !std::fs::metadata(path).map_err(unreadable)?.is_file() {
            return Err(CaBundleError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_CA_BUNDLE_BYTES + 1).read_to_end(&mut bytes))
            .map_err(unreadable)?;
        if bytes.len() as u64 > MAX_CA_BUNDLE_BYTES {
            return Err(CaBundleError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        CaBundle::from_pem(path, &bytes)
    }

    /// Checks `bytes` (the content of `path`) as a PEM bundle with at least
    /// one certificate.
    pub fn from_pem(path: &Path, bytes: &[u8]) -> Result<CaBundle, CaBundleError> {
        let not_pem = |problem| CaBundleError::NotPem {
            path: path.to_path_buf(),
            problem,
        };
        let certificates = CertificateDer::pem_slice_iter(bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| not_pem(pem_problem(&e)))?;
        if certificates.is_empty() {
            return Err(not_pem("no -----BEGIN CERTIFICATE----- section"));
        }
        let mut pem = Vec::new();
        for (i, certificate) in certificates.iter().enumerate() {
            // What the SDK's client does with each one (and unwraps).
            rustls::RootCertStore::empty()
                .add(certificate.clone())
                .map_err(|_| CaBundleError::BadCertificate {
                    path: path.to_path_buf(),
                    index: i + 1,
                })?;
            encode_pem(certificate, &mut pem);
        }
        Ok(CaBundle {
            path: path.to_path_buf(),
            pem: Arc::new(pem),
            count: certificates.len(),
        })
    }

    /// The file the certificates came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many certificates the bundle holds (at least one).
    pub fn len(&self) -> usize {
        self.count
    }

    /// Always `false`: a bundle without certificates is refused.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The certificates as PEM, for the SDK's trust store.
    pub(crate) fn pem(&self) -> &[u8] {
        &self.pem
    }
}

/// What is wrong with the PEM, in fixed words (the parser's own messages
/// quote the offending line).
fn pem_problem(error: &pem::Error) -> &'static str {
    match error {
        pem::Error::MissingSectionEnd { .. } => "a section has no -----END ...----- line",
        pem::Error::IllegalSectionStart { .. } => "a -----BEGIN ...----- line is malformed",
        pem::Error::Base64Decode(_) => "a section is not valid base64",
        pem::Error::SectionTooLarge => "a section is too large",
        _ => "it cannot be parsed",
    }
}

/// Appends `certificate` as a PEM `CERTIFICATE` section (64 columns).
fn encode_pem(certificate: &CertificateDer<'_>, out: &mut Vec<u8>) {
    let text = base64::engine::general_purpose::STANDARD.encode(certificate.as_ref());
    out.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
    for line in text.as_bytes().chunks(64) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(b"-----END CERTIFICATE-----\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed CA certificate (EC P-256), generated once with
    /// `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256
    /// -subj /CN=pullauth-test-ca -addext basicConstraints=critical,CA:TRUE`.
    const CA_PEM: &str = include_str!("../testdata/ca.pem");

    fn path() -> &'static Path {
        Path::new("/etc/pki/ca.pem")
    }

    #[test]
    fn a_ca_certificate_is_accepted_and_reencoded() {
        let bundle = CaBundle::from_pem(path(), CA_PEM.as_bytes()).expect("valid bundle");
        assert_eq!(bundle.len(), 1);
        assert_eq!(bundle.path(), path());
        let again = CaBundle::from_pem(path(), bundle.pem()).expect("re-encoded PEM parses");
        assert_eq!(again.pem(), bundle.pem());
        assert_eq!(
            format!("{bundle:?}"),
            "CaBundle { path: \"/etc/pki/ca.pem\", certificates: 1 }"
        );
    }

    #[test]
    fn other_sections_and_text_are_dropped() {
        let mixed = format!(
            "# comment line\n{CA_PEM}-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n{CA_PEM}"
        );
        let bundle = CaBundle::from_pem(path(), mixed.as_bytes()).expect("valid bundle");
        assert_eq!(bundle.len(), 2);
        let kept = String::from_utf8(bundle.pem().to_vec()).expect("PEM is ASCII");
        assert!(
            !kept.contains("PRIVATE KEY") && !kept.contains("c2VjcmV0"),
            "{kept}"
        );
    }

    #[test]
    fn refusals_name_the_variable_and_path_but_no_content() {
        let cases: &[(&str, &str)] = &[
            ("", "no -----BEGIN CERTIFICATE----- section"),
            (
                "password=hunter2\n",
                "no -----BEGIN CERTIFICATE----- section",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\naHVudGVyMg==\n-----END PRIVATE KEY-----\n",
                "no -----BEGIN CERTIFICATE----- section",
            ),
            (
                "-----BEGIN CERTIFICATE-----\naHVudGVyMg==\n",
                "a section has no -----END ...----- line",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nhunter2!!\n-----END CERTIFICATE-----\n",
                "a section is not valid base64",
            ),
            (
                "-----BEGIN CERTIFICATE-----\naHVudGVyMg==\n-----END CERTIFICATE-----\n",
                "certificate 1 is not a valid X.509 certificate",
            ),
        ];
        for (content, expected) in cases {
            let e = CaBundle::from_pem(path(), content.as_bytes()).expect_err(content);
            let message = e.to_string();
            assert!(
                message.starts_with("AWS_CA_BUNDLE=\"/etc/pki/ca.pem\": "),
                "{message}"
            );
            assert!(message.contains(expected), "{content:?}: {message}");
            assert!(
                !message.contains("hunter2") && !message.contains("aHVudGVyMg"),
                "{message}"
            );
        }
    }

    #[test]
    fn a_bad_second_certificate_is_named_by_its_position() {
        let bad = "-----BEGIN CERTIFICATE-----\naHVudGVyMg==\n-----END CERTIFICATE-----\n";
        let e = CaBundle::from_pem(path(), format!("{CA_PEM}{bad}").as_bytes())
            .expect_err("second is bad");
        assert!(
            matches!(e, CaBundleError::BadCertificate { index: 2, .. }),
            "{e}"
        );
    }

    #[test]
    fn missing_files_and_directories_are_refused() {
        let dir = std::env::temp_dir();
        let missing = dir.join(format!("pullauth-no-such-ca-{}.pem", std::process::id()));
        let e = CaBundle::load(&missing).expect_err("missing");
        assert!(matches!(e, CaBundleError::Unreadable { .. }), "{e}");
        assert!(e.to_string().contains("cannot read it"), "{e}");
        assert!(e.to_string().contains(&*missing.to_string_lossy()), "{e}");
        let e = CaBundle::load(&dir).expect_err("a directory");
        assert!(matches!(e, CaBundleError::NotAFile { .. }), "{e}");
    }

    #[test]
    fn a_file_is_read_from_disk() {
        let file = std::env::temp_dir().join(format!("pullauth-ca-{}.pem", std::process::id()));
        std::fs::write(&file, CA_PEM).expect("write the test CA");
        let loaded = CaBundle::load(&file);
        let _ = std::fs::remove_file(&file);
        assert_eq!(loaded.expect("valid file").len(), 1);
    }
}
