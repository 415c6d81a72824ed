//! Snapshot files for the memory store (SPEC §7): every live session, written atomically
//! (temp file, fsync, rename) so a crash mid-write leaves the previous snapshot intact.
//! Loading skips expired sessions; a corrupt or foreign file is reported and ignored.

use super::memory::MemoryStore;
use super::SessionStore;
use crate::config::StoreSettings;
use crate::session::{now_millis, Millis, Session};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::time::{Instant, SystemTime};

/// Bumped when the on-disk layout changes incompatibly.
const FORMAT_VERSION: u32 = 1;
const MAGIC: &str = "session-sidecar-snapshot";

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    format: String,
    version: u32,
    written_at: u64,
    sessions: Vec<Session>,
}

/// Writes `sessions` to `path` atomically.
pub fn write(path: &Path, sessions: Vec<Session>) -> std::io::Result<usize> {
    let count = sessions.len();
    let file = SnapshotFile {
        format: MAGIC.to_string(),
        version: FORMAT_VERSION,
        // File metadata: wall-clock time, whatever the store's clock.
        written_at: now_millis(),
        sessions,
    };
    let bytes = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("snapshot"),
        std::process::id()
    ));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // Make the rename itself durable.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(count)
}

/// Reads a snapshot: the sessions still live at `now`. `Err` explains why it cannot be used.
pub fn read(path: &Path, now: Millis) -> Result<Vec<Session>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let file: SnapshotFile =
        serde_json::from_slice(&bytes).map_err(|e| format!("corrupt snapshot: {e}"))?;
    if file.format != MAGIC {
        return Err("not a session-sidecar snapshot".into());
    }
    if file.version != FORMAT_VERSION {
        return Err(format!(
            "snapshot format version {} is not supported (expected {FORMAT_VERSION})",
            file.version
        ));
    }
    Ok(file
        .sessions
        .into_iter()
        .filter(|s| s.is_live(now))
        .collect())
}

/// Loads `path` into `store` if it exists. Problems are logged, never fatal: a sidecar that
/// cannot read its snapshot still serves, with the sessions it has.
pub fn load_into(path: &Path, store: &MemoryStore) {
    if !path.exists() {
        log::info!(
            "no snapshot at {}: starting with an empty store",
            path.display()
        );
        return;
    }
    match read(path, store.clock().now_millis()) {
        Ok(sessions) => {
            let n = sessions.len();
            let restored = block_on_store(store.restore(sessions)).unwrap_or(0);
            log::info!(
                "restored {restored} of {n} live sessions from {}",
                path.display()
            );
        }
        Err(e) => log::error!("ignoring snapshot {}: {e}", path.display()),
    }
}

/// Takes a snapshot of `store` into `path`, logging the outcome.
pub fn save_from(path: &Path, store: &MemoryStore) {
    let sessions = block_on_store(store.all_sessions()).unwrap_or_default();
    match write(path, sessions) {
        Ok(n) => log::info!("wrote snapshot of {n} sessions to {}", path.display()),
        Err(e) => log::error!("writing snapshot {} failed: {e}", path.display()),
    }
}

/// When the memory store writes its snapshot: every `snapshot_interval`, and when shutdown
/// begins and ends. The file and interval are read from the settings of the current
/// generation on each call, so a reload changes them.
///
/// After a zero-downtime upgrade (`--upgrade`), the old process keeps serving for a while and
/// writes snapshots as it winds down; until `takeover_until` the new process restores every
/// snapshot the old one writes, so sessions created in the overlap are not lost.
pub struct Snapshots {
    takeover_until: Option<Instant>,
    /// Modification time of the snapshot file as last written or read by this process.
    seen: Mutex<Option<SystemTime>>,
    last_written: Mutex<Instant>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Snapshots {
    pub fn new(takeover_until: Option<Instant>, file: Option<&Path>) -> Snapshots {
        Snapshots {
            takeover_until,
            seen: Mutex::new(file.and_then(modified)),
            last_written: Mutex::new(Instant::now()),
        }
    }

    /// Periodic: restores a predecessor's new snapshot during a takeover, and writes one when
    /// `snapshot_interval` has passed.
    pub fn tick(&self, store: &MemoryStore, settings: &StoreSettings) {
        self.absorb_predecessor(store, settings);
        if self.last_written.lock().elapsed() >= settings.snapshot_interval {
            self.save(store, settings);
            *self.last_written.lock() = Instant::now();
        }
    }

    /// Writes the snapshot now (if a file is configured).
    pub fn save(&self, store: &MemoryStore, settings: &StoreSettings) {
        if let Some(path) = &settings.snapshot_file {
            save_from(path, store);
            *self.seen.lock() = modified(path);
        }
    }

    /// During a takeover: restores a snapshot the predecessor wrote since we last looked.
    fn absorb_predecessor(&self, store: &MemoryStore, settings: &StoreSettings) {
        if self
            .takeover_until
            .is_none_or(|until| Instant::now() > until)
        {
            return;
        }
        let Some(path) = &settings.snapshot_file else {
            return;
        };
        let m = modified(path);
        if m.is_some() && m != *self.seen.lock() {
            *self.seen.lock() = m;
            load_into(path, store);
        }
    }
}

/// The memory store's futures never wait on anything, so they complete on the first poll.
fn block_on_store<T>(fut: impl std::future::Future<Output = T>) -> T {
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Flavor;
    use std::time::Duration;

    #[test]
    fn round_trip_drops_expired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap");
        let live = Session::new(
            "live".into(),
            Flavor::Admin,
            None,
            Duration::from_secs(60),
            Duration::from_secs(60),
            now_millis(),
        );
        let mut dead = live.clone();
        dead.id = "dead".into();
        dead.expires_at = 1;
        write(&path, vec![live.clone(), dead]).unwrap();
        assert_eq!(read(&path, live.created_at).unwrap(), vec![live]);
    }

    #[test]
    fn corrupt_and_foreign_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap");
        for bad in [
            &b""[..],
            b"{",
            b"{\"format\":\"other\",\"version\":1,\"written_at\":0,\"sessions\":[]}",
            b"\x00\xff",
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(read(&path, now_millis()).is_err());
        }
        std::fs::write(
            &path,
            br#"{"format":"session-sidecar-snapshot","version":99,"written_at":0,"sessions":[]}"#,
        )
        .unwrap();
        assert!(read(&path, now_millis()).unwrap_err().contains("version"));
    }
}
