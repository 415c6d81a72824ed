//! A TLS front for tests: terminates TLS (optionally requiring a client certificate signed by
//! a given CA) and passes the bytes to a plain upstream, usually an `EchoUpstream`. It counts
//! completed handshakes, so tests can see whether the sidecar reuses pooled connections, and
//! records the subject of each client certificate.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

pub struct TlsFront {
    pub port: u16,
    handshakes: Arc<AtomicUsize>,
    client_subjects: Arc<Mutex<Vec<String>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TlsFront {
    /// Serves `chain` (DER, leaf first) with `key` (PKCS#8 DER) in front of `backend_port`;
    /// with `client_ca`, only clients whose certificate that CA signed get through.
    pub fn start(
        backend_port: u16,
        chain: &[Vec<u8>],
        key: &[u8],
        client_ca: Option<&[u8]>,
    ) -> TlsFront {
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions");
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots
                    .add(CertificateDer::from(ca.to_vec()))
                    .expect("client CA");
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let certs = chain
            .iter()
            .map(|c| CertificateDer::from(c.clone()))
            .collect();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec()));
        let config = builder.with_single_cert(certs, key).expect("server cert");
        let acceptor = TlsAcceptor::from(Arc::new(config));

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind TLS front");
        let port = listener.local_addr().expect("addr").port();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let client_subjects: Arc<Mutex<Vec<String>>> = Arc::default();
        let (count, subjects) = (handshakes.clone(), client_subjects.clone());
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, count, subjects) =
                    (acceptor.clone(), count.clone(), subjects.clone());
                tokio::spawn(async move {
                    // A failed handshake (the sidecar refused our certificate, or we its) ends
                    // the connection; it is not counted.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    if let Some(leaf) = tls.get_ref().1.peer_certificates().and_then(|c| c.first())
                    {
                        subjects.lock().unwrap().push(subject_of(leaf));
                    }
                    let Ok(mut backend) = TcpStream::connect(("127.0.0.1", backend_port)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut backend).await;
                });
            }
        });
        TlsFront {
            port,
            handshakes,
            client_subjects,
            runtime: Some(runtime),
        }
    }

    /// Handshakes completed so far.
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// The subject (`CN=…`) of every client certificate presented so far.
    pub fn client_subjects(&self) -> Vec<String> {
        self.client_subjects.lock().unwrap().clone()
    }
}

fn subject_of(der: &CertificateDer<'_>) -> String {
    x509_parser::parse_x509_certificate(der.as_ref())
        .map(|(_, c)| c.subject().to_string())
        .unwrap_or_default()
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
