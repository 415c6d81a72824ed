//! Upstream peers, built once per config generation: pingora's `HttpPeer::new` resolves names
//! synchronously, so request paths only clone a prepared peer. HTTPS upstreams (SPEC §13.3)
//! carry their SNI, roots and client certificate in the peer; pingora pools their
//! connections like plain ones, so a handshake is paid per pooled connection, not per request.

use crate::config::{Config, UpstreamSettings, UpstreamTls};
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::{parse_x509, CertKey, WrappedX509};
use std::collections::HashMap;
use std::sync::Arc;

pub struct Upstreams {
    peers: HashMap<String, HttpPeer>,
}

fn peer(u: &UpstreamSettings) -> HttpPeer {
    let sni = u.tls.as_ref().map_or_else(String::new, |t| t.sni.clone());
    let mut p = HttpPeer::new(u.address, u.tls.is_some(), sni);
    p.options.connection_timeout = Some(u.connect_timeout);
    p.options.total_connection_timeout = Some(u.connect_timeout);
    p.options.read_timeout = Some(u.read_timeout);
    p.options.write_timeout = Some(u.read_timeout);
    // Idle pooled connections are dropped before a typical app's keep-alive timeout closes them.
    p.options.idle_timeout = Some(u.idle_timeout);
    if let Some(tls) = &u.tls {
        apply_tls(&mut p, &u.name, tls);
    }
    p
}

fn apply_tls(p: &mut HttpPeer, name: &str, tls: &UpstreamTls) {
    if !tls.verify {
        log::warn!(
            "upstreams.{name}: verify = false: the app's certificate is not checked, so anyone \
             on the path to it can read and change the traffic, identity headers included"
        );
    }
    p.options.verify_cert = tls.verify;
    p.options.verify_hostname = tls.verify;
    if let Some(roots) = &tls.ca {
        let roots: Vec<WrappedX509> = roots.iter().map(|der| wrap(der.clone())).collect();
        p.options.ca = Some(Arc::from(roots));
    }
    if let Some((chain, key)) = &tls.client {
        p.client_cert_key = Some(Arc::new(CertKey::new(chain.clone(), key.clone())));
    }
}

/// DER that `config::pem` already parsed as X.509 (pingora's parser panics on anything else).
fn wrap(der: Vec<u8>) -> WrappedX509 {
    WrappedX509::new(der, parse_x509)
}

impl Upstreams {
    pub fn from_config(config: &Config) -> Upstreams {
        Upstreams {
            peers: config
                .upstreams
                .iter()
                .map(|(name, u)| (name.clone(), peer(u)))
                .collect(),
        }
    }

    /// A peer for the named upstream (names were validated at load).
    pub fn peer(&self, name: &str) -> Option<Box<HttpPeer>> {
        self.peers.get(name).map(|p| Box::new(p.clone()))
    }
}
