//! The near cache: recent copies of sessions read from Redis, in process.
//!
//! An entry is *fresh* for `near_cache_ttl` after it was read: fresh entries answer `get`
//! without asking Redis. Entries are kept longer, until their session's `expires_at` (the
//! capacity, `sessions.max_sessions`, bounds them), only so that forwarded traffic can still
//! be served while Redis is unreachable. How long that lasts is decided by the caller from
//! the outage's start (`degraded_grace` after Redis last answered, issue 18), not from each
//! copy's age: a copy made 29 s before a 30 s-grace outage serves the whole grace too.
//! Every change made on another replica is announced on pub/sub and drops the copy here
//! (`invalidate`); a replica that may have missed announcements drops everything (`clear`).

use crate::session::{now_millis, Session};
use moka::sync::Cache;
use moka::Expiry;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone)]
struct Entry {
    session: Arc<Session>,
    stored: Instant,
}

struct EntryExpiry;

impl EntryExpiry {
    fn lifetime(&self, e: &Entry) -> Duration {
        e.session.remaining(now_millis())
    }
}

impl Expiry<String, Entry> for EntryExpiry {
    fn expire_after_create(&self, _k: &String, e: &Entry, _now: Instant) -> Option<Duration> {
        Some(self.lifetime(e))
    }

    fn expire_after_update(
        &self,
        _k: &String,
        e: &Entry,
        _now: Instant,
        _d: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.lifetime(e))
    }
}

pub struct NearCache {
    cache: Cache<String, Entry>,
    fresh_for: Duration,
}

impl NearCache {
    pub fn new(capacity: u64, near_cache_ttl: Duration) -> NearCache {
        NearCache {
            cache: Cache::builder()
                .max_capacity(capacity.max(1))
                .expire_after(EntryExpiry)
                .build(),
            fresh_for: near_cache_ttl,
        }
    }

    pub fn put(&self, s: &Session) {
        self.keep(s.clone());
    }

    /// `put` for a session the caller no longer needs (no copy).
    pub fn keep(&self, s: Session) {
        if s.is_live(now_millis()) {
            self.cache.insert(
                s.id.to_string(),
                Entry {
                    session: Arc::new(s),
                    stored: Instant::now(),
                },
            );
        } else {
            self.cache.invalidate(&*s.id);
        }
    }

    /// A copy read from Redis less than `near_cache_ttl` ago, if the session is still live.
    pub fn fresh(&self, id: &str) -> Option<Session> {
        let e = self.cache.get(id)?;
        (e.stored.elapsed() < self.fresh_for && e.session.is_live(now_millis()))
            .then(|| Session::clone(&e.session))
    }

    /// Any copy still held whose session is live (degraded mode).
    pub fn any(&self, id: &str) -> Option<Session> {
        let e = self.cache.get(id)?;
        e.session
            .is_live(now_millis())
            .then(|| Session::clone(&e.session))
    }

    pub fn invalidate(&self, id: &str) {
        self.cache.invalidate(id);
    }

    pub fn clear(&self) {
        self.cache.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Flavor;

    fn session(id: &str, life: Duration) -> Session {
        Session::new(id.into(), Flavor::Admin, None, life, life, now_millis())
    }

    #[test]
    fn fresh_only_within_ttl_but_kept_for_degraded_use() {
        let c = NearCache::new(100, Duration::from_millis(50));
        c.put(&session("a", Duration::from_secs(60)));
        assert!(c.fresh("a").is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert!(c.fresh("a").is_none(), "older than near_cache_ttl");
        assert!(c.any("a").is_some(), "kept for degraded use");
        c.invalidate("a");
        assert!(c.any("a").is_none());
    }

    #[test]
    fn never_outlives_the_session() {
        let c = NearCache::new(100, Duration::from_secs(5));
        c.put(&session("short", Duration::from_millis(30)));
        assert!(c.fresh("short").is_some());
        std::thread::sleep(Duration::from_millis(50));
        assert!(c.any("short").is_none());
        let mut dead = session("dead", Duration::from_secs(5));
        dead.expires_at = 1;
        c.put(&dead);
        assert!(c.any("dead").is_none());
    }

    #[test]
    fn clear_drops_everything() {
        let c = NearCache::new(100, Duration::from_secs(5));
        c.put(&session("a", Duration::from_secs(5)));
        c.put(&session("b", Duration::from_secs(5)));
        c.clear();
        assert!(c.any("a").is_none() && c.any("b").is_none());
    }
}
