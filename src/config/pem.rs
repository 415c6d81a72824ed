//! PEM files named by the config (certificates and private keys), read and checked at load so
//! that nothing on a request path can meet a file it cannot use. Errors name the file and the
//! problem, never its content.

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;

/// Why a PEM file did not give what was asked, in words that never quote its content.
pub fn problem(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::NoItemsFound => "no PEM section of that kind",
        pem::Error::MissingSectionEnd { .. } => "a PEM section without its END line",
        pem::Error::IllegalSectionStart { .. } => "a malformed PEM BEGIN line",
        pem::Error::Base64Decode(_) => "invalid base64 in a PEM section",
        pem::Error::SectionTooLarge => "a PEM section larger than 256 MB",
        _ => "unreadable PEM",
    }
}

/// Every certificate in a PEM file, as DER, each checked to parse as X.509.
pub fn read_certificates(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let bytes = read(path)?;
    let mut out = Vec::new();
    for item in CertificateDer::pem_slice_iter(&bytes) {
        let der = item.map_err(|e| format!("{}: {}", path.display(), problem(&e)))?;
        x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| format!("{}: a certificate does not parse: {e}", path.display()))?;
        out.push(der.as_ref().to_vec());
    }
    if out.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(out)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file, as DER.
pub fn read_private_key(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = read(path)?;
    let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        format!(
            "{}: no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {}",
            path.display(),
            problem(&e)
        )
    })?;
    let der = key.secret_der().to_vec();
    // pingora turns the stored DER back into a key when it connects, and panics if it cannot:
    // the same conversion here refuses such a key at load instead.
    PrivateKeyDer::try_from(der.clone())
        .map_err(|e| format!("{}: unusable private key: {e}", path.display()))?;
    Ok(der)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}
