//! Downstream TLS (SPEC §13.3): the proxy's `tls_listen` listeners and the optional TLS admin
//! listener. Each listener kind holds a certificate resolver (SNI, `min_version`) and a
//! client-certificate verifier that outlive reloads: the listeners are built once, and a reload
//! (`AppState::install`) swaps what they hand out to the next handshake. The config layer has
//! already loaded and checked every file, so installing cannot fail.
//!
//! Listener addresses, `server.http2` (the ALPN list) and adding or removing a TLS table take
//! effect on restart only (`background::reload` says so); without a table after a reload, a
//! listener keeps the certificates it has.

pub mod client_auth;
pub mod resolver;

use crate::config::{ListenerTls, ServerSettings};
use crate::metrics;
use arc_swap::ArcSwap;
use client_auth::ClientAuth;
use pingora::listeners::tls::TlsSettings;
use resolver::CertResolver;
use std::sync::Arc;

/// The live certificates of one listener kind.
pub struct ListenerCerts {
    resolver: Arc<CertResolver>,
    client_auth: Arc<ClientAuth>,
    installed: ArcSwap<ListenerTls>,
}

impl ListenerCerts {
    fn new(tls: &ListenerTls) -> ListenerCerts {
        ListenerCerts {
            resolver: Arc::new(CertResolver::new(tls)),
            client_auth: Arc::new(ClientAuth::new(tls.client_ca.as_ref())),
            installed: ArcSwap::from_pointee(tls.clone()),
        }
    }

    fn install(&self, tls: &ListenerTls) {
        self.resolver.install(tls);
        self.client_auth.install(tls.client_ca.as_ref());
        self.installed.store(Arc::new(tls.clone()));
    }

    /// pingora settings for a listener serving these certificates; `h2`: offer h2 before
    /// http/1.1 by ALPN (without, clients get HTTP/1.1).
    pub fn listener_settings(&self, h2: bool) -> pingora::Result<TlsSettings> {
        // The paths are never read: a certificate resolver replaces them (pingora's docs).
        let mut settings = TlsSettings::intermediate("", "")?;
        settings.set_cert_resolver(self.resolver.clone());
        settings.set_client_cert_verifier(self.client_auth.clone());
        if h2 {
            settings.enable_h2();
        }
        Ok(settings)
    }
}

/// The TLS listeners of a sidecar: the proxy's `tls_listen` and the admin listener.
pub struct TlsListeners {
    pub proxy: Option<ListenerCerts>,
    pub admin: Option<ListenerCerts>,
    /// The `server_name`s last published to the expiry gauge. Only these are ever removed, so
    /// sidecars sharing one process (the in-process tests) keep each other's series.
    published: parking_lot::Mutex<Vec<String>>,
}

impl TlsListeners {
    pub fn from_config(server: &ServerSettings) -> TlsListeners {
        let me = TlsListeners {
            proxy: server.tls.as_ref().map(ListenerCerts::new),
            admin: server.admin_tls.as_ref().map(ListenerCerts::new),
            published: parking_lot::Mutex::new(Vec::new()),
        };
        me.publish();
        me
    }

    /// Hands `server`'s certificates to the next handshakes of the running listeners.
    pub fn install(&self, server: &ServerSettings) {
        for (listener, tls) in [(&self.proxy, &server.tls), (&self.admin, &server.admin_tls)] {
            if let (Some(listener), Some(tls)) = (listener, tls) {
                listener.install(tls);
            }
        }
        self.publish();
    }

    /// Sets `tls_cert_expiry_timestamp_seconds` to the installed certificates (series of
    /// certificates no longer installed go), and warns of any that has expired (it is served
    /// all the same: a client may not check).
    fn publish(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let mut expiry = Vec::new();
        for listener in self.proxy.iter().chain(&self.admin) {
            let tls = listener.installed.load();
            for cert in tls.certs() {
                if cert.not_after <= now {
                    log::warn!(
                        "TLS certificate {} ({}) expired at {} (Unix time); clients that check will refuse it",
                        cert.label,
                        cert.cert_file.display(),
                        cert.not_after
                    );
                }
                expiry.push((cert.label.clone(), cert.not_after));
            }
        }
        let mut published = self.published.lock();
        metrics::tls_cert_expiry(&expiry, &published);
        *published = expiry.into_iter().map(|(name, _)| name).collect();
    }
}
