//! Server certificates chosen by SNI (SPEC §13.3), swappable under running listeners: pingora
//! builds each listener's rustls config once, so the config holds this resolver and a reload
//! swaps the certificate set behind it. A handshake reads the set current when its ClientHello
//! arrives; established connections never look again, so a swap drops none of them.
//!
//! `min_version = "1.3"`: pingora 0.9.1's `TlsSettings::build` always enables TLS 1.2 and 1.3,
//! and rustls picks the version before it asks for a certificate, without telling the
//! resolver. What rustls does next is choose a cipher suite usable with the certificate's key
//! algorithm; TLS 1.2 suites are each tied to one (ECDHE_ECDSA, ECDHE_RSA), TLS 1.3 suites to
//! none. So a 1.3-only set hands out keys that report an algorithm no TLS 1.2 suite signs with
//! (`Tls13Only`): every TLS 1.2 handshake, resumed ones included, ends in a handshake_failure
//! alert, whatever the client offers, and TLS 1.3 signs with the real key as before.

use crate::config::{ListenerTls, TlsVersion};
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// The certificates of one listener kind, by SNI name.
struct CertSet {
    default: Arc<CertifiedKey>,
    /// Exact names.
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` entries, by `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl CertSet {
    fn new(tls: &ListenerTls) -> CertSet {
        let key = |k: &Arc<CertifiedKey>| match tls.min_version {
            TlsVersion::Tls12 => k.clone(),
            TlsVersion::Tls13 => Arc::new(CertifiedKey::new(
                k.cert.clone(),
                Arc::new(Tls13Only(k.key.clone())),
            )),
        };
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for cert in &tls.sni {
            let Some(name) = &cert.server_name else {
                continue;
            };
            match name.strip_prefix("*.") {
                Some(parent) => wildcard.insert(parent.to_string(), key(&cert.key)),
                None => exact.insert(name.clone(), key(&cert.key)),
            };
        }
        CertSet {
            default: key(&tls.default.key),
            exact,
            wildcard,
        }
    }

    /// An exact name first, then a wildcard one label up, else the default.
    fn choose(&self, server_name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = server_name else {
            return &self.default;
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return k;
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default)
    }
}

/// The SNI resolver of a listener's rustls config.
pub struct CertResolver {
    current: ArcSwap<CertSet>,
}

impl CertResolver {
    pub fn new(tls: &ListenerTls) -> CertResolver {
        CertResolver {
            current: ArcSwap::from_pointee(CertSet::new(tls)),
        }
    }

    /// New handshakes get `tls`'s certificates from now on.
    pub fn install(&self, tls: &ListenerTls) {
        self.current.store(Arc::new(CertSet::new(tls)));
    }
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = self.current.load();
        f.debug_struct("CertResolver")
            .field("exact", &set.exact.keys().collect::<Vec<_>>())
            .field("wildcard", &set.wildcard.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().choose(hello.server_name()).clone())
    }
}

/// A key that signs like `0` but that no TLS 1.2 cipher suite accepts (see the module notes).
#[derive(Debug)]
struct Tls13Only(Arc<dyn SigningKey>);

impl SigningKey for Tls13Only {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        self.0.choose_scheme(offered)
    }

    fn public_key(&self) -> Option<rustls::pki_types::SubjectPublicKeyInfoDer<'_>> {
        self.0.public_key()
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        // No TLS 1.2 suite signs anonymously; TLS 1.3 suites do not look.
        SignatureAlgorithm::Anonymous
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tls::crypto_provider;
    use crate::config::ServerCert;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};

    fn cert(names: &[&str]) -> (ServerCert, CertificateDer<'static>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der = cert.der().clone();
        let private = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let signing = crypto_provider()
            .key_provider
            .load_private_key(private)
            .unwrap();
        let server = ServerCert {
            server_name: None,
            label: names[0].to_string(),
            key: Arc::new(CertifiedKey::new(vec![der.clone()], signing)),
            not_after: 0,
            cert_file: "test.pem".into(),
        };
        (server, der)
    }

    fn listener(min_version: TlsVersion) -> (ListenerTls, Vec<CertificateDer<'static>>) {
        let (default, d) = cert(&["localhost"]);
        let (mut a, ad) = cert(&["a.test"]);
        a.server_name = Some("a.test".into());
        let (mut w, wd) = cert(&["x.wild.test"]);
        w.server_name = Some("*.wild.test".into());
        let tls = ListenerTls {
            default,
            sni: vec![a, w],
            min_version,
            client_ca: None,
        };
        (tls, vec![d, ad, wd])
    }

    /// A handshake the way pingora configures its listeners (TLS 1.2 and 1.3 enabled), in
    /// memory: the negotiated version and the certificate the server sent, or the error.
    fn handshake(
        resolver: Arc<CertResolver>,
        versions: &[&'static rustls::SupportedProtocolVersion],
        sni: &str,
    ) -> Result<(rustls::ProtocolVersion, CertificateDer<'static>), rustls::Error> {
        let server = ServerConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        let client = ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(versions)
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny))
            .with_no_client_auth();
        let mut s = ServerConnection::new(Arc::new(server)).unwrap();
        let mut c = ClientConnection::new(
            Arc::new(client),
            ServerName::try_from(sni.to_string()).unwrap(),
        )
        .unwrap();
        for _ in 0..10 {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            s.read_tls(&mut buf.as_slice()).unwrap();
            let server_result = s.process_new_packets();
            let mut back = Vec::new();
            s.write_tls(&mut back).unwrap();
            c.read_tls(&mut back.as_slice()).unwrap();
            let client_result = c.process_new_packets();
            server_result?;
            client_result?;
            if !c.is_handshaking() && !s.is_handshaking() {
                let sent = c.peer_certificates().unwrap()[0].clone().into_owned();
                return Ok((c.protocol_version().unwrap(), sent));
            }
        }
        panic!("handshake did not finish");
    }

    #[derive(Debug)]
    struct AcceptAny;

    impl rustls::client::danger::ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &crypto_provider().signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &crypto_provider().signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            crypto_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    use rustls::version::{TLS12, TLS13};

    #[test]
    fn sni_picks_exact_then_wildcard_then_default() {
        let (tls, ders) = listener(TlsVersion::Tls12);
        let r = Arc::new(CertResolver::new(&tls));
        for (sni, want) in [
            ("localhost", &ders[0]),
            ("a.test", &ders[1]),
            ("A.Test", &ders[1]),
            ("x.wild.test", &ders[2]),
            ("y.wild.test", &ders[2]),
            ("deeper.y.wild.test", &ders[0]),
            ("unknown.test", &ders[0]),
        ] {
            let (_, sent) = handshake(r.clone(), &[&TLS13, &TLS12], sni).unwrap();
            assert_eq!(&sent, want, "{sni}");
        }
    }

    #[test]
    fn min_version_1_3_refuses_every_tls_1_2_handshake() {
        let (tls, ders) = listener(TlsVersion::Tls13);
        let r = Arc::new(CertResolver::new(&tls));
        let (version, sent) = handshake(r.clone(), &[&TLS13, &TLS12], "a.test").unwrap();
        assert_eq!(version, rustls::ProtocolVersion::TLSv1_3);
        assert_eq!(sent, ders[1]);
        for sni in ["localhost", "a.test", "y.wild.test"] {
            let e = handshake(r.clone(), &[&TLS12], sni).unwrap_err();
            assert!(
                matches!(
                    e,
                    rustls::Error::PeerIncompatible(_) | rustls::Error::AlertReceived(_)
                ),
                "{sni}: {e:?}"
            );
        }

        // 1.2 is accepted under the default, and a swap to 1.3 applies to the next handshake.
        let (tls12, _) = listener(TlsVersion::Tls12);
        r.install(&tls12);
        let (version, _) = handshake(r.clone(), &[&TLS12], "a.test").unwrap();
        assert_eq!(version, rustls::ProtocolVersion::TLSv1_2);
        r.install(&tls);
        assert!(handshake(r.clone(), &[&TLS12], "a.test").is_err());
    }

    #[test]
    fn a_swap_serves_the_new_certificate() {
        let (tls, ders) = listener(TlsVersion::Tls12);
        let r = Arc::new(CertResolver::new(&tls));
        let (next, next_ders) = listener(TlsVersion::Tls12);
        assert_eq!(
            handshake(r.clone(), &[&TLS13], "a.test").unwrap().1,
            ders[1]
        );
        r.install(&next);
        assert_eq!(
            handshake(r.clone(), &[&TLS13], "a.test").unwrap().1,
            next_ders[1]
        );
    }
}
