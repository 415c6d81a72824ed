//! The memory store's session table (SPEC §7): sharded hash tables of `Arc<Session>` keyed by
//! the session's own id, so the id is stored once. Each entry carries a recency stamp (for
//! eviction) and its expiry in whole seconds (so sweeps skip live entries without following the
//! pointer): 16 bytes an entry.
//!
//! The table knows nothing of indexes or metrics: removals it makes on its own (expiry sweeps,
//! evictions) are handed back to the store, which accounts for them.

use crate::session::{Millis, Session};
use hashbrown::hash_table::Entry as Slot;
use hashbrown::{DefaultHashBuilder, HashTable};
use parking_lot::{Mutex, RwLock};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Enough that concurrent requests rarely meet on one lock.
const SHARDS: usize = 64;

/// Eviction picks the least recently used of this many sampled entries (Redis' approximated
/// LRU uses 5; more samples track true LRU more closely at little cost).
const EVICTION_SAMPLES: usize = 16;

/// Up to this many entries, eviction scans them all: exact LRU where it is cheap.
const EXACT_EVICTION_UP_TO: usize = 256;

/// A sweep visits at least this many shards, so a full pass takes at most
/// `SHARDS / SWEEP_SHARDS` sweeps (2 s at housekeeping's 250 ms).
const SWEEP_SHARDS: usize = 8;

/// Shards with room for more entries than this shrink when three quarters are free.
const SHRINK_ABOVE: usize = 1024;

/// Tables this small are swept whole every time.
const SWEEP_ALL_UP_TO: usize = 4096;

struct Entry {
    session: Arc<Session>,
    /// Value of `Table::clock` when the entry was last written; larger is more recent.
    stamp: u32,
    /// `expires_at` in whole seconds, rounded down: an entry with `now / 1000 < expires_s` is
    /// live without looking at the session.
    expires_s: u32,
}

/// What `Table::compute` does with the entry under an id.
pub enum Op {
    Nop,
    Put(Arc<Session>),
    Remove,
}

/// What `Table::compute` did.
pub enum Outcome {
    /// Nothing changed; the current value, if any.
    Unchanged(Option<Arc<Session>>),
    Inserted,
    /// The value that was replaced.
    Replaced(Arc<Session>),
    /// The value that was removed.
    Removed(Arc<Session>),
}

pub struct Table {
    shards: Box<[RwLock<HashTable<Entry>>]>,
    hasher: DefaultHashBuilder,
    len: AtomicUsize,
    /// Recency counter: bumped on every write; wraps (ages are compared by wrapping distance).
    clock: AtomicU32,
    /// Next shard the sweep visits.
    sweep_from: Mutex<usize>,
    /// Sampling state for eviction (splitmix64).
    rng: AtomicU64,
}

fn expires_s(s: &Session) -> u32 {
    u32::try_from(s.expires_at / 1000).unwrap_or(u32::MAX)
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Table {
    pub fn new() -> Table {
        Table {
            shards: (0..SHARDS).map(|_| RwLock::new(HashTable::new())).collect(),
            hasher: DefaultHashBuilder::default(),
            len: AtomicUsize::new(0),
            clock: AtomicU32::new(0),
            sweep_from: Mutex::new(0),
            rng: AtomicU64::new(u64::from(std::process::id())),
        }
    }

    fn hash(&self, id: &str) -> u64 {
        self.hasher.hash_one(id)
    }

    /// hashbrown places entries by the low bits and tags them with the top 7: the shard comes
    /// from bits in between, so neither loses entropy.
    fn shard(&self, hash: u64) -> &RwLock<HashTable<Entry>> {
        &self.shards[(hash >> 32) as usize % SHARDS]
    }

    fn entry(&self, session: Arc<Session>) -> Entry {
        Entry {
            expires_s: expires_s(&session),
            stamp: self.clock.fetch_add(1, Ordering::Relaxed),
            session,
        }
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        let hash = self.hash(id);
        self.shard(hash)
            .read()
            .find(hash, |e| &*e.session.id == id)
            .map(|e| e.session.clone())
    }

    /// Decides, under the shard's lock, what becomes of the entry under `id` (`f` sees its
    /// current value). A value put must have this id.
    pub fn compute(&self, id: &str, f: impl FnOnce(Option<&Arc<Session>>) -> Op) -> Outcome {
        let hash = self.hash(id);
        let mut shard = self.shard(hash).write();
        let rehash = |e: &Entry| self.hash(&e.session.id);
        match shard.entry(hash, |e| &*e.session.id == id, rehash) {
            Slot::Occupied(mut slot) => match f(Some(&slot.get().session)) {
                Op::Nop => Outcome::Unchanged(Some(slot.get().session.clone())),
                Op::Put(new) => {
                    debug_assert_eq!(&*new.id, id);
                    let old = std::mem::replace(slot.get_mut(), self.entry(new));
                    Outcome::Replaced(old.session)
                }
                Op::Remove => {
                    let (old, _) = slot.remove();
                    self.len.fetch_sub(1, Ordering::Relaxed);
                    Outcome::Removed(old.session)
                }
            },
            Slot::Vacant(slot) => match f(None) {
                Op::Put(new) => {
                    debug_assert_eq!(&*new.id, id);
                    slot.insert(self.entry(new));
                    self.len.fetch_add(1, Ordering::Relaxed);
                    Outcome::Inserted
                }
                Op::Nop | Op::Remove => Outcome::Unchanged(None),
            },
        }
    }

    /// Every session in the table, live or not (callers filter).
    pub fn for_each(&self, mut f: impl FnMut(&Arc<Session>)) {
        for shard in self.shards.iter() {
            for e in shard.read().iter() {
                f(&e.session);
            }
        }
    }

    /// Removes the sessions `now` has passed from the shards due for a sweep (all of them
    /// when `all` or the table is small) and returns them.
    pub fn sweep(&self, now: Millis, all: bool) -> Vec<Arc<Session>> {
        let count = if all || self.len() <= SWEEP_ALL_UP_TO {
            SHARDS
        } else {
            SWEEP_SHARDS
        };
        let first = {
            let mut from = self.sweep_from.lock();
            let first = *from;
            *from = (first + count) % SHARDS;
            first
        };
        let now_s = u32::try_from(now / 1000).unwrap_or(u32::MAX);
        let passed = |e: &Entry| e.expires_s <= now_s && !e.session.is_live(now);
        let mut out = Vec::new();
        for i in 0..count {
            let shard = &self.shards[(first + i) % SHARDS];
            // Most sweeps find nothing: look under the read lock first.
            if !shard.read().iter().any(passed) {
                continue;
            }
            let mut table = shard.write();
            let before = out.len();
            out.extend(table.extract_if(|e| passed(e)).map(|e| e.session));
            self.len.fetch_sub(out.len() - before, Ordering::Relaxed);
            // A shard a wave of expiries left mostly empty gives its memory back.
            if table.capacity() > SHRINK_ABOVE && table.len() < table.capacity() / 4 {
                let keep = table.len() * 2;
                table.shrink_to(keep, |e| self.hash(&e.session.id));
            }
        }
        out
    }

    /// The entry eviction should take next: the least recently written of a sample (of all
    /// entries, when there are few). Its current value, to remove only if still there.
    pub fn eviction_candidate(&self) -> Option<Arc<Session>> {
        let now = self.clock.load(Ordering::Relaxed);
        let mut best: Option<(u32, Arc<Session>)> = None;
        let mut consider = |e: &Entry| {
            let age = now.wrapping_sub(e.stamp);
            if best.as_ref().is_none_or(|(a, _)| age > *a) {
                best = Some((age, e.session.clone()));
            }
        };
        if self.len() <= EXACT_EVICTION_UP_TO {
            for shard in self.shards.iter() {
                shard.read().iter().for_each(&mut consider);
            }
            return best.map(|(_, s)| s);
        }
        for _ in 0..EVICTION_SAMPLES {
            let r = splitmix(self.rng.fetch_add(1, Ordering::Relaxed));
            let table = self.shards[(r >> 32) as usize % SHARDS].read();
            let buckets = table.num_buckets();
            if table.is_empty() {
                continue;
            }
            // The first occupied bucket from a random one; tables are at least 7/16 full.
            let start = (r as u32 as usize) % buckets;
            if let Some(e) = (0..buckets)
                .map(|i| (start + i) % buckets)
                .find_map(|i| table.get_bucket(i))
            {
                consider(e);
            }
        }
        best.map(|(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Flavor;
    use std::time::Duration;

    fn session(id: &str, now: Millis) -> Arc<Session> {
        Arc::new(Session::new(
            id.into(),
            Flavor::Admin,
            None,
            Duration::from_secs(10),
            Duration::from_secs(100),
            now,
        ))
    }

    #[test]
    fn compute_inserts_replaces_and_removes() {
        let t = Table::new();
        let s = session("a", 1_000);
        assert!(matches!(
            t.compute("a", |cur| {
                assert!(cur.is_none());
                Op::Put(s.clone())
            }),
            Outcome::Inserted
        ));
        assert_eq!(t.len(), 1);
        assert!(Arc::ptr_eq(&t.get("a").unwrap(), &s));
        assert!(matches!(
            t.compute("a", |_| Op::Nop),
            Outcome::Unchanged(Some(_))
        ));
        let s2 = session("a", 2_000);
        assert!(
            matches!(t.compute("a", |_| Op::Put(s2.clone())), Outcome::Replaced(old) if Arc::ptr_eq(&old, &s))
        );
        assert_eq!(t.len(), 1);
        assert!(matches!(
            t.compute("b", |_| Op::Remove),
            Outcome::Unchanged(None)
        ));
        assert!(
            matches!(t.compute("a", |_| Op::Remove), Outcome::Removed(old) if Arc::ptr_eq(&old, &s2))
        );
        assert_eq!(t.len(), 0);
        assert!(t.get("a").is_none());
    }

    #[test]
    fn sweep_takes_exactly_the_passed_sessions() {
        let t = Table::new();
        for i in 0..5000u64 {
            // Expiring at 10_000 + i ms: the sweep at 12_500 must take 0..=2500 only.
            let s = session(&format!("s{i}"), i);
            t.compute(&s.id.clone(), |_| Op::Put(s));
        }
        let mut gone: Vec<Millis> = Vec::new();
        for _ in 0..SHARDS / SWEEP_SHARDS {
            gone.extend(t.sweep(12_500, false).iter().map(|s| s.created_at));
        }
        gone.sort_unstable();
        assert_eq!(gone, (0..=2500).collect::<Vec<_>>());
        assert_eq!(t.len(), 5000 - 2501);
        assert!(t.get("s2500").is_none() && t.get("s2501").is_some());
    }

    #[test]
    fn emptied_shards_shrink() {
        let t = Table::new();
        for i in 0..100_000u64 {
            let s = session(&format!("s{i}"), i % 1000);
            t.compute(&s.id.clone(), |_| Op::Put(s));
        }
        let big = |t: &Table| {
            t.shards
                .iter()
                .filter(|s| s.read().capacity() > SHRINK_ABOVE)
                .count()
        };
        assert_eq!(big(&t), SHARDS, "every shard holds more than SHRINK_ABOVE");
        assert_eq!(t.sweep(20_000, true).len(), 100_000);
        assert_eq!(
            (t.len(), big(&t)),
            (0, 0),
            "emptied shards gave their room back"
        );
    }

    #[test]
    fn sampled_eviction_prefers_old_entries() {
        let t = Table::new();
        let n = 20_000;
        for i in 0..n {
            let s = session(&format!("s{i}"), 0);
            t.compute(&s.id.clone(), |_| Op::Put(s));
        }
        // Of 16 samples the oldest is, on average, in the oldest 1/17 of the table.
        let picks: Vec<usize> = (0..200)
            .map(|_| {
                let s = t.eviction_candidate().unwrap();
                s.id[1..].parse().unwrap()
            })
            .collect();
        let mean = picks.iter().sum::<usize>() / picks.len();
        assert!(mean < n / 8, "mean pick {mean} of {n}");
    }
}
