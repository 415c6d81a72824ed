//! Periodic work: let the memory store account for expirations (metrics, indexes), and write
//! its snapshot every `snapshot_interval` and once more when shutdown begins.

use crate::state::AppState;
use crate::store::memory::MemoryStore;
use crate::store::snapshot;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAINTENANCE_EVERY: Duration = Duration::from_millis(250);

pub struct Housekeeping {
    state: Arc<AppState>,
    memory: Option<Arc<MemoryStore>>,
}

impl Housekeeping {
    pub fn new(state: Arc<AppState>, memory: Option<Arc<MemoryStore>>) -> Housekeeping {
        Housekeeping { state, memory }
    }

    fn snapshot(&self, memory: &Arc<MemoryStore>) {
        if let Some(path) = self.state.current().config.store.snapshot_file.clone() {
            let memory = memory.clone();
            snapshot::save_from(&path, &memory);
        }
    }
}

#[async_trait]
impl BackgroundService for Housekeeping {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(memory) = self.memory.clone() else {
            return;
        };
        let mut tick = tokio::time::interval(MAINTENANCE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_snapshot = Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let m = memory.clone();
                    // moka's maintenance may take a while with many expirations: keep it off
                    // the async workers.
                    let _ = tokio::task::spawn_blocking(move || m.maintain()).await;
                    let interval = self.state.current().config.store.snapshot_interval;
                    if last_snapshot.elapsed() >= interval {
                        let (m, state) = (memory.clone(), self.state.clone());
                        let _ = tokio::task::spawn_blocking(move || {
                            if let Some(path) = state.current().config.store.snapshot_file.clone() {
                                snapshot::save_from(&path, &m);
                            }
                        }).await;
                        last_snapshot = Instant::now();
                    }
                }
                _ = shutdown.changed() => {
                    // In-flight requests may still change sessions during the grace period;
                    // `main` writes the final snapshot after the server stops. This one covers
                    // a process killed before then.
                    memory.maintain();
                    self.snapshot(&memory);
                    return;
                }
            }
        }
    }
}
