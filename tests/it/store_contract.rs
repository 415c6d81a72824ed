//! The `SessionStore` contract (tests/it/common/store_contract.rs) on every backend: the memory
//! store, the Redis store on a standalone `redis-server`, and the Redis store on a
//! three-master Redis Cluster. The servers are real processes started here on free ports.

use crate::common;

use common::redis_server::{RedisCluster, RedisServer};
use common::store_contract::{self as contract, Store};
use session_sidecar::config::RedisSettings;
use session_sidecar::session::id::new_uuid;
use session_sidecar::session::Clock;
use session_sidecar::store::memory::MemoryStore;
use session_sidecar::store::redis::RedisStore;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The memory store on a manual clock: the contract advances it instead of sleeping.
fn memory() -> Store {
    Arc::new(MemoryStore::with_clock(100_000, Clock::manual()))
}

fn memory_shared() -> Vec<Store> {
    let m = memory();
    vec![m.clone(), m.clone(), m]
}

fn redis_settings(urls: Vec<String>, cluster: bool, prefix: &str) -> RedisSettings {
    RedisSettings {
        urls,
        cluster,
        key_prefix: prefix.to_string(),
        near_cache_ttl: Duration::from_secs(1),
        degraded_grace: Duration::from_secs(5),
        timeout: Duration::from_secs(2),
        ..RedisSettings::default()
    }
}

fn standalone() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(RedisServer::start)
}

fn cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| RedisCluster::start(3))
}

/// `n` store instances (replicas) on one fresh key prefix.
fn redis_stores(urls: Vec<String>, cluster: bool, n: usize) -> Vec<Store> {
    let prefix = format!("contract:{}:", new_uuid());
    (0..n)
        .map(|_| {
            Arc::new(
                RedisStore::start(&redis_settings(urls.clone(), cluster, &prefix), 10_000).unwrap(),
            ) as Store
        })
        .collect()
}

fn redis() -> Store {
    redis_stores(vec![standalone().url()], false, 1).remove(0)
}

fn redis_shared() -> Vec<Store> {
    redis_stores(vec![standalone().url()], false, 3)
}

fn redis_cluster() -> Store {
    redis_stores(cluster().urls(), true, 1).remove(0)
}

fn redis_cluster_shared() -> Vec<Store> {
    redis_stores(cluster().urls(), true, 3)
}

macro_rules! contract_tests {
    ($backend:ident, $one:expr, $shared:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn create_get_touch() {
                contract::create_get_touch($one).await
            }

            #[tokio::test]
            async fn touch_never_passes_the_absolute_deadline() {
                contract::touch_never_passes_the_absolute_deadline($one).await
            }

            #[tokio::test]
            async fn idle_sessions_expire_unless_used() {
                contract::idle_sessions_expire_unless_used($one).await
            }

            #[tokio::test]
            async fn ids_are_taken_while_live() {
                contract::ids_are_taken_while_live($one).await
            }

            #[tokio::test]
            async fn a_refused_duplicate_leaves_the_live_sessions_indexes() {
                contract::a_refused_duplicate_leaves_the_live_sessions_indexes($one).await
            }

            #[tokio::test]
            async fn application_limit() {
                contract::application_limit($one).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn application_limit_under_concurrency() {
                contract::application_limit_under_concurrency($shared).await
            }

            #[tokio::test]
            async fn update_patches_and_records_a_use() {
                contract::update_patches_and_records_a_use($one).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn removal_happens_once() {
                contract::removal_happens_once($one).await
            }

            #[tokio::test]
            async fn customer_index() {
                contract::customer_index($one).await
            }

            #[tokio::test]
            async fn transfer_without_grace() {
                contract::transfer_without_grace($one).await
            }

            #[tokio::test]
            async fn transfer_with_grace() {
                contract::transfer_with_grace($one).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_transfers_have_one_winner() {
                contract::concurrent_transfers_have_one_winner($shared).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_rotations_with_grace_have_one_winner() {
                contract::concurrent_rotations_with_grace_have_one_winner($shared).await
            }

            #[tokio::test]
            async fn locks_count_capacity_and_overwrite() {
                contract::locks_count_capacity_and_overwrite($one).await
            }

            #[tokio::test]
            async fn locks_are_all_or_nothing() {
                contract::locks_are_all_or_nothing($one).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn lock_capacity_under_concurrency() {
                contract::lock_capacity_under_concurrency($shared, 60, 9).await
            }

            #[tokio::test]
            async fn locks_expire() {
                contract::locks_expire($one).await
            }

            #[tokio::test]
            async fn snapshot_and_restore() {
                contract::snapshot_and_restore($one).await
            }
        }
    };
}

contract_tests!(memory_store, memory(), memory_shared());
contract_tests!(redis_standalone, redis(), redis_shared());
contract_tests!(redis_cluster, redis_cluster(), redis_cluster_shared());
