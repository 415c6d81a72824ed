//! Periodic work: let the memory store account for expirations (metrics, indexes), and write
//! its snapshot every `snapshot_interval` and once more when shutdown begins.
//!
//! After a zero-downtime upgrade (`--upgrade`), the old process keeps serving for a while and
//! writes snapshots as it winds down; during the takeover window the new process restores
//! every snapshot the old one writes, so sessions created in the overlap are not lost.

use crate::state::AppState;
use crate::store::memory::MemoryStore;
use crate::store::snapshot;
use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

const MAINTENANCE_EVERY: Duration = Duration::from_millis(250);

/// pingora's old process serves this long after handing over its sockets (`CLOSE_TIMEOUT`).
const UPGRADE_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Housekeeping {
    state: Arc<AppState>,
    memory: Option<Arc<MemoryStore>>,
    /// Until when snapshots written by a predecessor are restored (set after `--upgrade`).
    takeover_until: Option<Instant>,
    /// Modification time of the snapshot file as last written or read by this process.
    seen: Mutex<Option<SystemTime>>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Housekeeping {
    /// `upgrade`: this process took over from another one, which is still winding down.
    pub fn new(
        state: Arc<AppState>,
        memory: Option<Arc<MemoryStore>>,
        upgrade: bool,
    ) -> Housekeeping {
        let config = &state.current().config;
        let takeover_until = upgrade.then(|| {
            Instant::now()
                + UPGRADE_CLOSE_TIMEOUT
                + config.server.grace_period
                + Duration::from_secs(10)
        });
        let seen = config.store.snapshot_file.as_deref().and_then(modified);
        Housekeeping {
            state,
            memory,
            takeover_until,
            seen: Mutex::new(seen),
        }
    }

    fn snapshot(&self, memory: &MemoryStore) {
        if let Some(path) = self.state.current().config.store.snapshot_file.clone() {
            snapshot::save_from(&path, memory);
            *self.seen.lock() = modified(&path);
        }
    }

    /// During a takeover: restores a snapshot the predecessor wrote since we last looked.
    fn absorb_predecessor(&self, memory: &MemoryStore) {
        if self
            .takeover_until
            .is_none_or(|until| Instant::now() > until)
        {
            return;
        }
        let Some(path) = self.state.current().config.store.snapshot_file.clone() else {
            return;
        };
        let m = modified(&path);
        if m.is_some() && m != *self.seen.lock() {
            *self.seen.lock() = m;
            snapshot::load_into(&path, memory);
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
                    // This service runs on its own pingora runtime, so blocking work here (moka
                    // maintenance, snapshot files) never delays request handling.
                    memory.maintain();
                    self.absorb_predecessor(&memory);
                    if last_snapshot.elapsed() >= self.state.current().config.store.snapshot_interval {
                        self.snapshot(&memory);
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
