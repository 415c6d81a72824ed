//! Upstream peers, built once per config generation: pingora's `HttpPeer::new` resolves names
//! synchronously, so request paths only clone a prepared peer.

use crate::config::{Config, UpstreamSettings};
use pingora::upstreams::peer::HttpPeer;
use std::collections::HashMap;

pub struct Upstreams {
    peers: HashMap<String, HttpPeer>,
}

fn peer(u: &UpstreamSettings) -> HttpPeer {
    let mut p = HttpPeer::new(u.address, false, String::new());
    p.options.connection_timeout = Some(u.connect_timeout);
    p.options.total_connection_timeout = Some(u.connect_timeout);
    p.options.read_timeout = Some(u.read_timeout);
    p.options.write_timeout = Some(u.read_timeout);
    // Idle pooled connections are dropped before a typical app's keep-alive timeout closes them.
    p.options.idle_timeout = Some(u.idle_timeout);
    p
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
