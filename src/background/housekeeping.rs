//! Store upkeep: `SessionStore::maintain` every 250 ms (the memory store accounts for
//! expirations and writes its snapshots; see `store::snapshot::Snapshots`), and
//! `SessionStore::flush` once when shutdown begins; and the summaries of throttled log lines
//! (`logging::throttle`). What each backend does is its own affair.

use crate::state::AppState;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

const MAINTENANCE_EVERY: Duration = Duration::from_millis(250);

pub struct Housekeeping {
    state: Arc<AppState>,
}

impl Housekeeping {
    pub fn new(state: Arc<AppState>) -> Housekeeping {
        Housekeeping { state }
    }
}

#[async_trait]
impl BackgroundService for Housekeeping {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let store = self.state.store().clone();
        let mut tick = tokio::time::interval(MAINTENANCE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    // This service runs on its own pingora runtime, so blocking work here (expiry
                    // sweeps, snapshot files) never delays request handling.
                    store.maintain(&self.state.current().config.store);
                    crate::logging::throttle::flush();
                }
                _ = shutdown.changed() => {
                    let server = &self.state.current().config.server;
                    log::info!(
                        "shutdown: listeners closed; connections already accepted are served \
                         for server.grace_period ({}s, always waited in full so load balancers \
                         can stop sending), then what is left gets server.drain_timeout ({}s)",
                        server.grace_period.as_secs(),
                        server.drain_timeout.as_secs()
                    );
                    // `main` calls `shutdown` on the store after the server stops.
                    store.flush(&self.state.current().config.store);
                    return;
                }
            }
        }
    }
}
