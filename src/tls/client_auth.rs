//! Client certificates (`client_ca_file`, SPEC §13.3), swappable under running listeners like
//! the server certificates (`resolver.rs`): the listener's rustls config holds this verifier,
//! and a reload swaps the CA verifier behind it, or removes it (no client certificate asked).
//!
//! No CA names are sent as hints in the certificate request: rustls lends them out for the
//! life of the config, which a swappable set cannot promise. RFC 8446 §4.3.2 and RFC 5246
//! §7.4.4 allow the empty list; clients then present the certificate they were given.

use crate::config::tls::crypto_provider;
use crate::config::ClientCa;
use arc_swap::ArcSwapOption;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::fmt;
use std::sync::Arc;

struct Verifier(Arc<dyn ClientCertVerifier>);

/// The client-certificate verifier of a listener's rustls config.
pub struct ClientAuth {
    current: ArcSwapOption<Verifier>,
}

impl ClientAuth {
    pub fn new(ca: Option<&ClientCa>) -> ClientAuth {
        let me = ClientAuth {
            current: ArcSwapOption::empty(),
        };
        me.install(ca);
        me
    }

    /// New handshakes verify against `ca` (none: client certificates are not asked for).
    pub fn install(&self, ca: Option<&ClientCa>) {
        self.current
            .store(ca.map(|ca| Arc::new(Verifier(ca.verifier.clone()))));
    }
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAuth")
            .field("required", &self.current.load().is_some())
            .finish()
    }
}

impl ClientCertVerifier for ClientAuth {
    fn offer_client_auth(&self) -> bool {
        self.current.load().is_some()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.current.load().is_some()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match &*self.current.load() {
            // pingora logs a refused handshake with the peer's address and this error.
            Some(v) => v.0.verify_client_cert(end_entity, intermediates, now),
            // Asked for under a CA that a reload removed in the middle of this handshake.
            None => Err(rustls::Error::General(
                "client certificates are no longer accepted".into(),
            )),
        }
    }

    // Signatures are checked the way rustls's own WebPkiClientVerifier does: with the
    // provider's algorithms, independently of the CA set.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &crypto_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &crypto_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        crypto_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
