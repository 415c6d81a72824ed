//! Where a memory-store session's bytes go (evidence for bench/RESULTS.md, row 6). Splits
//! the resident memory per idle session into its parts by building, in turn, in one process
//! with the binary's allocator (mimalloc):
//!
//! 1. a moka cache configured like the former moka-based `MemoryStore` (LRU, per-entry
//!    expiry) whose values are empty: what moka's own bookkeeping and the key cost per entry;
//! 2. the same cache holding `Arc<Session>`s shaped like bench/run's (UUID id, owner, a
//!    distinct customer, logged in), without the store's indexes;
//! 3. a `MemoryStore` with those sessions: its own table, the sessions and the customer index.
//!
//! Each part is measured as the growth of VmRSS over N entries, in a fresh child process, so
//! one part's freed memory never hides the next part's growth.
//!
//! Usage: bench-memory-parts [N]   (default 1,000,000)

use mimalloc::MiMalloc;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use moka::Expiry;
use session_sidecar::session::{id::new_uuid, intern, now_millis, Flavor, Session};
use session_sidecar::store::memory::MemoryStore;
use session_sidecar::store::SessionStore;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// Every entry lives 30 minutes, like bench/run's sessions.
struct ThirtyMinutes;

impl<V> Expiry<String, V> for ThirtyMinutes {
    fn expire_after_create(&self, _key: &String, _value: &V, _now: Instant) -> Option<Duration> {
        Some(Duration::from_secs(1800))
    }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn cache<V: Clone + Send + Sync + 'static>(n: u64) -> Cache<String, V> {
    Cache::builder()
        .max_capacity(n + n / 10)
        .eviction_policy(EvictionPolicy::lru())
        .expire_after(ThirtyMinutes)
        .build()
}

fn session(i: u64) -> Session {
    let mut s = Session::new(
        new_uuid().into(),
        Flavor::Admin,
        Some(intern("bench-admin")),
        Duration::from_secs(1800),
        Duration::from_secs(12 * 3600),
        now_millis(),
    );
    s.customer_id = Some(format!("c0-{i:09}").into());
    s.logged_in = true;
    s
}

/// Fills part `part` with `n` entries; returns resident bytes per entry.
fn measure(part: &str, n: u64) -> f64 {
    let before = rss_bytes();
    match part {
        "moka" => {
            let c: Cache<String, ()> = cache(n);
            for _ in 0..n {
                c.insert(new_uuid(), ());
            }
            c.run_pending_tasks();
            std::hint::black_box(&c);
            (rss_bytes() - before) as f64 / c.entry_count() as f64
        }
        "moka+session" => {
            let c: Cache<String, Arc<Session>> = cache(n);
            for i in 0..n {
                let s = session(i);
                c.insert(s.id.to_string(), Arc::new(s));
            }
            c.run_pending_tasks();
            std::hint::black_box(&c);
            (rss_bytes() - before) as f64 / c.entry_count() as f64
        }
        _ => {
            let store = MemoryStore::new(n + n / 10);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                for i in 0..n {
                    let _ = store.create(session(i), None).await;
                }
            });
            store.run_pending_tasks();
            let count = runtime.block_on(store.session_count()).unwrap_or(n);
            (rss_bytes() - before) as f64 / count.max(1) as f64
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let (Some(part), Some(n)) = (args.get(2), args.get(3)) {
        if args[1] == "--part" {
            let n: u64 = n.parse().unwrap_or(1_000_000);
            println!("{:.0}", measure(part, n));
            return;
        }
    }
    let n: u64 = args
        .get(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let me = std::env::current_exe().expect("own path");
    let mut results = Vec::new();
    for part in ["moka", "moka+session", "store"] {
        let out = std::process::Command::new(&me)
            .args(["--part", part, &n.to_string()])
            .output()
            .expect("run a part");
        let bytes: f64 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(f64::NAN);
        results.push((part, bytes));
    }
    println!("resident bytes per entry over {n} entries (mimalloc):");
    println!(
        "  moka entry with a UUID key, empty value      {:6.0}",
        results[0].1
    );
    println!(
        "  + Arc<Session> (bench/run's shape)           {:6.0}  (session: {:.0})",
        results[1].1,
        results[1].1 - results[0].1
    );
    println!(
        "  MemoryStore (table, sessions, indexes)       {:6.0}  (table and indexes: {:.0})",
        results[2].1,
        results[2].1 - (results[1].1 - results[0].1)
    );
    println!(
        "  size_of::<Session>() = {} bytes",
        std::mem::size_of::<Session>()
    );
}
