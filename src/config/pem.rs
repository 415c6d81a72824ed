//! PEM files named by the config (certificates and private keys), read and checked at load so
//! that nothing on a request path can meet a file it cannot use.

use std::path::Path;

/// Every certificate in a PEM file, as DER, each checked to parse as X.509.
pub fn read_certificates(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let bytes = read(path)?;
    let mut out = Vec::new();
    for item in rustls_pemfile::certs(&mut bytes.as_slice()) {
        let der = item.map_err(|e| format!("{}: not PEM: {e}", path.display()))?;
        x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| format!("{}: a certificate does not parse: {e}", path.display()))?;
        out.push(der.as_ref().to_vec());
    }
    if out.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(out)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file, as DER. Its content is never
/// put into an error.
pub fn read_private_key(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = read(path)?;
    let key = rustls_pemfile::private_key(&mut bytes.as_slice())
        .map_err(|e| format!("{}: not PEM: {e}", path.display()))?
        .ok_or_else(|| format!("{}: no PEM private key in it", path.display()))?;
    let der = key.secret_der().to_vec();
    // pingora turns the stored DER back into a key when it connects, and panics if it cannot:
    // the same conversion here refuses such a key at load instead.
    rustls_pki_types::PrivateKeyDer::try_from(der.clone())
        .map_err(|e| format!("{}: unusable private key: {e}", path.display()))?;
    Ok(der)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}
