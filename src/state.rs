//! Shared state of a running sidecar.
//!
//! Everything SIGHUP may change (credentials, routes, limits, flavour settings) lives in one
//! immutable `Generation`, swapped atomically; a request keeps the generation it started with.
//! The session store outlives generations: reloading never drops sessions.
//!
//! TLS listeners are built once, so their certificates live beside the generations
//! (`tls::TlsListeners`) and `install` hands a new config's certificates to them as well.
//!
//! The wire flavours sit above this module, so which APIs a generation mounts is given by the
//! server that builds it (`lib.rs` passes `flavors::mount_all`): `state` only looks down.

use crate::access_log::{AccessLog, AuditLog};
use crate::api::SessionApis;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::forwarding::identity::IdentityHeaders;
use crate::forwarding::upstreams::Upstreams;
use crate::limits::{AdminAuthLimit, RateLimits};
use crate::session::audit::AuditSink;
use crate::session::SessionService;
use crate::store::SessionStore;
use crate::tls::TlsListeners;
use crate::trace::Exporter;
use arc_swap::ArcSwap;
use std::sync::Arc;

/// Builds the session APIs a generation mounts for its config (`flavors::mount_all`).
pub type MountApis = fn(&Config, &Arc<SessionService>) -> SessionApis;

/// One consistent view of the configuration and everything built from it.
pub struct Generation {
    pub config: Config,
    pub auth: Authenticator,
    pub sessions: Arc<SessionService>,
    pub apis: SessionApis,
    pub upstreams: Upstreams,
    pub identity: IdentityHeaders,
    pub limits: RateLimits,
    /// Failed admin authentications per client IP; `None` when the limit is off.
    pub admin_auth_limit: Option<Arc<AdminAuthLimit>>,
    /// Where request lines go; `None` when `access_log.enabled` is off.
    pub access_log: Option<Arc<AccessLog>>,
    /// Where spans go; `None` when `tracing.enabled` is off.
    pub exporter: Option<Arc<Exporter>>,
}

/// Where the sidecar writes what happened (SPEC §13.5): opened once at start, shared by every
/// generation; each generation uses those its config enables.
#[derive(Default, Clone)]
pub struct Sinks {
    pub access_log: Option<Arc<AccessLog>>,
    pub exporter: Option<Arc<Exporter>>,
}

impl Generation {
    /// Builds the generation for `config`. `previous` is the one it replaces (on reload): state
    /// worth keeping across reloads, such as a downloaded JWT key set, is taken from it.
    pub fn build(
        config: Config,
        store: Arc<dyn SessionStore>,
        mount: MountApis,
        sinks: &Sinks,
        previous: Option<&Generation>,
    ) -> Generation {
        let access_log = sinks
            .access_log
            .clone()
            .filter(|_| config.access_log.enabled);
        let exporter = sinks.exporter.clone().filter(|_| config.tracing.enabled);
        let audit = access_log.as_ref().map(|log| {
            Arc::new(AuditLog {
                log: log.clone(),
                format: config.access_log.format,
            }) as Arc<dyn AuditSink>
        });
        let sessions =
            Arc::new(SessionService::new(store, config.sessions.clone()).with_audit(audit));
        let apis = mount(&config, &sessions);
        Generation {
            auth: Authenticator::from_config_after(&config, previous.map(|g| &g.auth)),
            upstreams: Upstreams::from_config(&config),
            identity: IdentityHeaders::from_config(&config.identity_headers),
            limits: RateLimits::from_config(&config.rate_limits),
            admin_auth_limit: AdminAuthLimit::from_config_after(
                config.server.admin_auth_failures_per_minute,
                previous.and_then(|g| g.admin_auth_limit.as_ref()),
            ),
            sessions,
            apis,
            access_log,
            exporter,
            config,
        }
    }
}

pub struct AppState {
    current: ArcSwap<Generation>,
    store: Arc<dyn SessionStore>,
    mount: MountApis,
    /// Opened once at start (their paths and endpoints do not follow reloads).
    sinks: Sinks,
    tls: TlsListeners,
}

impl AppState {
    pub fn new(
        config: Config,
        store: Arc<dyn SessionStore>,
        mount: MountApis,
        sinks: Sinks,
    ) -> AppState {
        let tls = TlsListeners::from_config(&config.server);
        let first = Generation::build(config, store.clone(), mount, &sinks, None);
        AppState {
            tls,
            current: ArcSwap::from_pointee(first),
            store,
            mount,
            sinks,
        }
    }

    /// The access-log sink, if the sidecar started with one.
    pub fn access_log(&self) -> Option<&Arc<AccessLog>> {
        self.sinks.access_log.as_ref()
    }

    /// The generation new requests should use.
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// Makes `config` the one new requests use, and its certificates the ones new TLS
    /// handshakes get.
    pub fn install(&self, config: Config) {
        let previous = self.current.load_full();
        let next = Generation::build(
            config,
            self.store.clone(),
            self.mount,
            &self.sinks,
            Some(&previous),
        );
        self.tls.install(&next.config.server);
        self.current.store(Arc::new(next));
    }

    /// The certificates of the TLS listeners.
    pub fn tls(&self) -> &TlsListeners {
        &self.tls
    }

    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// After the server has stopped: the store's last work (the memory store's final
    /// snapshot, so a graceful restart loses nothing).
    pub fn shutdown_store(&self) {
        self.store.shutdown(&self.current().config.store);
    }

    /// At exit: the access-log lines still queued go out before the process does.
    pub fn flush_access_log(&self) {
        if let Some(log) = self.access_log() {
            log.flush(std::time::Duration::from_secs(2));
        }
    }
}
