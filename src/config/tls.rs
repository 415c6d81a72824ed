//! `[server.tls]` and `[server.admin_tls]` validated (SPEC §13.3): every PEM file is read and
//! parsed, each key is checked against its certificate, and names and expiry are read here, so
//! a listener (at start or on reload) only ever installs certificates that load. A bad file is
//! an error at `FILE:LINE:COL` of the key naming it; messages never quote key material.

use super::file::{self, TlsVersion};
use super::runtime::{err, span_of, ValidationError};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use toml::Spanned;

/// A TLS listener's certificates and policy.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// Served when no SNI entry matches (or the client sends no SNI).
    pub default: ServerCert,
    /// `[[…sni]]` entries, each with its `server_name`.
    pub sni: Vec<ServerCert>,
    pub min_version: TlsVersion,
    /// Client certificates must chain to one of these.
    pub client_ca: Option<ClientCa>,
}

impl ListenerTls {
    /// Every certificate, the default first.
    pub fn certs(&self) -> impl Iterator<Item = &ServerCert> {
        std::iter::once(&self.default).chain(&self.sni)
    }
}

/// One certificate chain with its key.
#[derive(Clone)]
pub struct ServerCert {
    /// The SNI name of an `sni` entry, lower case; `None` for the default certificate.
    pub server_name: Option<String>,
    /// The `server_name` label of its expiry gauge: the SNI name, else the certificate's first
    /// DNS name, else "default".
    pub label: String,
    pub key: Arc<CertifiedKey>,
    /// The leaf's notAfter, in seconds since the Unix epoch.
    pub not_after: i64,
    pub cert_file: PathBuf,
}

impl fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerCert")
            .field("server_name", &self.server_name)
            .field("label", &self.label)
            .field("not_after", &self.not_after)
            .field("cert_file", &self.cert_file)
            .finish_non_exhaustive()
    }
}

/// `client_ca_file`: a verifier that requires a client certificate chaining to one of its CAs.
#[derive(Clone)]
pub struct ClientCa {
    pub file: PathBuf,
    pub verifier: Arc<dyn ClientCertVerifier>,
}

impl fmt::Debug for ClientCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCa")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// The crypto pingora's rustls listeners use (ring); keys are loaded and verifiers built with it.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: LazyLock<Arc<CryptoProvider>> =
        LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));
    PROVIDER.clone()
}

/// Validates one `[server.tls]`-shaped table; `what` names it in errors ("server.tls").
pub(super) fn validate(
    s: &file::TlsSection,
    what: &str,
    base_dir: &Path,
) -> Result<ListenerTls, ValidationError> {
    let default = load_cert(
        None,
        &s.cert_file,
        &s.key_file,
        &format!("{what}."),
        base_dir,
    )?;
    let mut names = HashSet::new();
    let mut sni = Vec::with_capacity(s.sni.len());
    for (i, entry) in s.sni.iter().enumerate() {
        let name = entry.server_name.get_ref().trim().to_ascii_lowercase();
        if !is_server_name(&name) {
            return err(
                span_of(&entry.server_name),
                format!(
                    "{what}.sni[{i}].server_name: {:?} is not a DNS name like \"api.example.com\" or \"*.example.com\"",
                    entry.server_name.get_ref()
                ),
            );
        }
        if !names.insert(name.clone()) {
            return err(
                span_of(&entry.server_name),
                format!("{what}.sni[{i}].server_name: {name:?} is listed twice"),
            );
        }
        sni.push(load_cert(
            Some(name),
            &entry.cert_file,
            &entry.key_file,
            &format!("{what}.sni[{i}]."),
            base_dir,
        )?);
    }
    let client_ca = s
        .client_ca_file
        .as_ref()
        .map(|f| load_client_ca(f, &format!("{what}.client_ca_file"), base_dir))
        .transpose()?;
    Ok(ListenerTls {
        default,
        sni,
        min_version: s.min_version,
        client_ca,
    })
}

/// A host name of letters, digits and hyphens, optionally starting with one `*.` label.
fn is_server_name(name: &str) -> bool {
    let rest = name.strip_prefix("*.").unwrap_or(name);
    !rest.is_empty()
        && name.len() <= 253
        && rest.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn read(
    path_value: &Spanned<String>,
    what: &str,
    base_dir: &Path,
) -> Result<(PathBuf, Vec<u8>), ValidationError> {
    let path = base_dir.join(path_value.get_ref());
    match std::fs::read(&path) {
        Ok(bytes) => Ok((path, bytes)),
        Err(e) => err(
            span_of(path_value),
            format!("{what}: cannot read {}: {e}", path.display()),
        ),
    }
}

fn load_cert(
    server_name: Option<String>,
    cert_value: &Spanned<String>,
    key_value: &Spanned<String>,
    prefix: &str,
    base_dir: &Path,
) -> Result<ServerCert, ValidationError> {
    let cert_what = format!("{prefix}cert_file");
    let key_what = format!("{prefix}key_file");
    let (cert_file, cert_pem) = read(cert_value, &cert_what, base_dir)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .or_else(|e| {
            err(
                span_of(cert_value),
                format!(
                    "{cert_what}: {}: {}",
                    cert_file.display(),
                    super::pem::problem(&e)
                ),
            )
        })?;
    let Some(leaf) = chain.first() else {
        return err(
            span_of(cert_value),
            format!(
                "{cert_what}: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                cert_file.display()
            ),
        );
    };
    let (not_after, dns_name) = match x509_parser::parse_x509_certificate(leaf) {
        Ok((_, cert)) => {
            let dns_name = cert
                .subject_alternative_name()
                .ok()
                .flatten()
                .and_then(|san| {
                    san.value.general_names.iter().find_map(|n| match n {
                        x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                        _ => None,
                    })
                });
            (cert.validity().not_after.timestamp(), dns_name)
        }
        Err(e) => {
            return err(
                span_of(cert_value),
                format!(
                    "{cert_what}: the first certificate in {} is not valid X.509: {e}",
                    cert_file.display()
                ),
            )
        }
    };

    let (key_file, key_pem) = read(key_value, &key_what, base_dir)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).or_else(|e| {
        err(
            span_of(key_value),
            format!(
                "{key_what}: {} holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {}",
                key_file.display(),
                super::pem::problem(&e)
            ),
        )
    })?;
    let signing_key = crypto_provider()
        .key_provider
        .load_private_key(key_der)
        .or_else(|_| {
            err(
                span_of(key_value),
                format!(
                    "{key_what}: the key in {} is not an RSA, ECDSA or Ed25519 key rustls can use",
                    key_file.display()
                ),
            )
        })?;
    let key = CertifiedKey::new(chain, signing_key);
    if key.keys_match().is_err() {
        return err(
            span_of(key_value),
            format!(
                "{key_what}: the key in {} does not belong to the certificate in {}",
                key_file.display(),
                cert_file.display()
            ),
        );
    }
    let label = server_name
        .clone()
        .or(dns_name)
        .unwrap_or_else(|| "default".to_string());
    Ok(ServerCert {
        server_name,
        label,
        key: Arc::new(key),
        not_after,
        cert_file,
    })
}

fn load_client_ca(
    value: &Spanned<String>,
    what: &str,
    base_dir: &Path,
) -> Result<ClientCa, ValidationError> {
    let (file, pem) = read(value, what, base_dir)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .or_else(|e| {
            err(
                span_of(value),
                format!("{what}: {}: {}", file.display(), super::pem::problem(&e)),
            )
        })?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        if let Err(e) = roots.add(cert) {
            return err(
                span_of(value),
                format!(
                    "{what}: a certificate in {} is not a usable CA: {e}",
                    file.display()
                ),
            );
        }
    }
    if roots.is_empty() {
        return err(
            span_of(value),
            format!(
                "{what}: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                file.display()
            ),
        );
    }
    match WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto_provider()).build() {
        Ok(verifier) => Ok(ClientCa { file, verifier }),
        Err(e) => err(span_of(value), format!("{what}: {}: {e}", file.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        for ok in ["localhost", "api.example.com", "*.example.com", "a-b.c0"] {
            assert!(is_server_name(ok), "{ok}");
        }
        for bad in [
            "", "*.", "*", "a..b", "-a.b", "a b", "a.*.b", "é.com", "a_b.c",
        ] {
            assert!(!is_server_name(bad), "{bad}");
        }
    }
}
