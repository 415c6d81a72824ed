//! The wire flavours (SPEC §4): one per public session API. Each translates between its API's
//! exact wire shape and `SessionService` calls, and nothing else: the proxy reads the request,
//! checks nothing flavour-specific, and writes back whatever `ApiResponse` it gets (see
//! `crate::api` for the two kinds of traffic a flavour sees).
//!
//! A flavour is one directory, `flavors/NAME/`: `mod.rs` holds its routes and the use-case
//! calls (`SessionService`), `wire.rs` the pure codec (parse requests, render answers; no
//! service, no pingora). A new flavour is those two files, its settings in `config`, and one
//! line in `mount_all`.

pub mod knowledge_center;
pub mod spreadsheetweb;
pub mod tessitura;
pub mod voucherify;

#[cfg(test)]
mod testing;

use crate::api::SessionApis;
use std::sync::Arc;

/// Builds and mounts every flavour enabled in `config`.
pub fn mount_all(
    config: &crate::config::Config,
    sessions: &Arc<crate::session::SessionService>,
) -> SessionApis {
    let mut apis = SessionApis::new();
    if let Some(s) = &config.flavors.spreadsheetweb {
        spreadsheetweb::DedicatedSessions::mount(&mut apis, s, sessions, &config.applications);
    }
    if let Some(s) = &config.flavors.knowledge_center {
        let api = knowledge_center::KnowledgeCenter::new(s, sessions.clone());
        apis.mount(&s.base_path, Arc::new(api));
    }
    if let Some(s) = &config.flavors.tessitura {
        let api = tessitura::Tessitura::new(s.clone(), sessions.clone());
        apis.mount(&s.base_path, Arc::new(api));
    }
    if let Some(v) = &config.flavors.voucherify {
        let api = voucherify::Voucherify::new(v, config.server.max_body, sessions.clone());
        apis.mount(&v.base_path, Arc::new(api));
    }
    apis
}
