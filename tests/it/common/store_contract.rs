//! The `SessionStore` contract, written once and run against every backend
//! (`tests/it/store_contract.rs`: memory, Redis standalone, Redis Cluster).
//!
//! Each case gets a fresh, empty store (for Redis: a fresh key prefix). Cases that take
//! several stores get handles on *one* shared store (for Redis: separate store instances,
//! i.e. separate connections and near caches, as separate replicas would have).
//!
//! Time passes through `pass`: the memory store runs on a manual clock that it advances,
//! Redis on real time, for which it sleeps.

use session_sidecar::session::id::new_uuid;
use session_sidecar::session::{
    CodeHold, EndReason, Flavor, Lock, LockedTotals, Session, SessionPatch, TtlUnit,
};
use session_sidecar::store::{CreateOutcome, LockOutcome, SessionStore};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub type Store = Arc<dyn SessionStore>;

const MIN: Duration = Duration::from_secs(60);

/// A new session, created now on `store`'s clock.
pub fn session(store: &dyn SessionStore, idle: Duration, absolute: Duration) -> Session {
    Session::new(
        new_uuid().into(),
        Flavor::KnowledgeCenter,
        Some("web".into()),
        idle,
        absolute,
        store.clock().now_millis(),
    )
}

/// A lock session, acquired now on `store`'s clock.
pub fn lock(
    store: &dyn SessionStore,
    key: &str,
    holds: &[(&str, u64, i64, i64)],
    ttl: Duration,
) -> Session {
    let mut s = Session::with_fixed_ttl_at(
        key.into(),
        Flavor::Voucherify,
        Some("pos".into()),
        ttl,
        store.clock().now_millis(),
    );
    s.set_lock(Some(Lock {
        holds: holds
            .iter()
            .map(|(code, quantity, credits, points)| CodeHold {
                code: code.to_string(),
                quantity: *quantity,
                credits: *credits,
                points: *points,
            })
            .collect(),
        ttl: ttl.as_millis() as u64,
        ttl_unit: TtlUnit::Milliseconds,
    }));
    s
}

fn no_limits() -> HashMap<String, u64> {
    HashMap::new()
}

fn limits(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
    pairs.iter().map(|(c, q)| (c.to_string(), *q)).collect()
}

/// Lets `ms` pass on `store`'s clock: advances a manual clock (the memory store's here), and
/// sleeps for real on the system clock (Redis expires keys on its own wall clock).
async fn pass(store: &dyn SessionStore, ms: u64) {
    let clock = store.clock();
    if clock.is_manual() {
        clock.advance(Duration::from_millis(ms));
    } else {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

pub async fn create_get_touch(store: Store) {
    let mut s = session(&*store, Duration::from_millis(800), MIN);
    s.customer_id = Some("c-1".into());
    s.set_lock(None);
    assert_eq!(
        store.create(s.clone(), None).await.unwrap(),
        CreateOutcome::Created
    );
    assert_eq!(
        store.get(&s.id).await.unwrap().as_ref(),
        Some(&s),
        "stored exactly"
    );
    pass(&*store, 30).await;
    let t = store.touch(&s.id).await.unwrap().expect("live");
    assert!(t.last_access > s.last_access, "touch records the use");
    assert_eq!(
        t.expires_at,
        t.last_access + 800,
        "idle deadline extended from the use"
    );
    assert_eq!(
        (t.created_at, t.customer_id.as_deref()),
        (s.created_at, Some("c-1"))
    );
    assert_eq!(store.get("no-such-id").await.unwrap(), None);
    assert_eq!(store.touch("no-such-id").await.unwrap(), None);
    store.ping().await.unwrap();
}

pub async fn touch_never_passes_the_absolute_deadline(store: Store) {
    let s = session(
        &*store,
        Duration::from_millis(400),
        Duration::from_millis(500),
    );
    store.create(s.clone(), None).await.unwrap();
    pass(&*store, 250).await;
    let t = store.touch(&s.id).await.unwrap().expect("live");
    assert_eq!(
        t.expires_at, s.absolute_deadline,
        "capped by the absolute deadline"
    );
    pass(&*store, 350).await;
    assert_eq!(
        store.touch(&s.id).await.unwrap(),
        None,
        "absolute deadline passed despite use"
    );
    assert_eq!(store.get(&s.id).await.unwrap(), None);
}

pub async fn idle_sessions_expire_unless_used(store: Store) {
    let used = session(&*store, Duration::from_millis(300), MIN);
    let idle = session(&*store, Duration::from_millis(300), MIN);
    store.create(used.clone(), None).await.unwrap();
    store.create(idle.clone(), None).await.unwrap();
    for _ in 0..3 {
        pass(&*store, 150).await;
        assert!(
            store.touch(&used.id).await.unwrap().is_some(),
            "kept alive by use"
        );
    }
    assert_eq!(store.get(&idle.id).await.unwrap(), None, "idle one expired");
    assert_eq!(store.touch(&idle.id).await.unwrap(), None);
    // An expired id is free again.
    let mut again = session(&*store, MIN, MIN);
    again.id = idle.id.clone();
    assert_eq!(
        store.create(again, None).await.unwrap(),
        CreateOutcome::Created
    );
}

/// A create refused for its id must not take away the index entries of the live session
/// that holds the id, even when both name the same customer.
pub async fn a_refused_duplicate_leaves_the_live_sessions_indexes(store: Store) {
    let customer = format!("dup-{}", new_uuid());
    let mut s = session(&*store, MIN, MIN);
    s.customer_id = Some(customer.as_str().into());
    store.create(s.clone(), None).await.unwrap();
    let mut twin = session(&*store, MIN, MIN);
    twin.id = s.id.clone();
    twin.customer_id = Some(customer.as_str().into());
    assert_eq!(
        store.create(twin, None).await.unwrap(),
        CreateOutcome::IdTaken
    );
    let listed: Vec<String> = store
        .customer_sessions(&customer)
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.id.to_string())
        .collect();
    assert_eq!(
        listed,
        vec![s.id.to_string()],
        "the live session is still listed"
    );
}

pub async fn ids_are_taken_while_live(store: Store) {
    let s = session(&*store, MIN, MIN);
    store.create(s.clone(), None).await.unwrap();
    let mut other = session(&*store, MIN, MIN);
    other.id = s.id.clone();
    other.customer_id = Some("intruder".into());
    assert_eq!(
        store.create(other.clone(), None).await.unwrap(),
        CreateOutcome::IdTaken
    );
    assert_eq!(
        store.get(&s.id).await.unwrap().unwrap().customer_id,
        None,
        "nothing changed"
    );
    assert!(store
        .customer_sessions("intruder")
        .await
        .unwrap()
        .is_empty());
    store
        .remove(&s.id, EndReason::Closed)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.create(other, None).await.unwrap(),
        CreateOutcome::Created,
        "free after removal"
    );
}

fn app_session(store: &dyn SessionStore, app: &str) -> Session {
    let mut s = session(store, MIN, MIN);
    s.flavor = Flavor::Spreadsheetweb;
    s.application_key = Some(app.into());
    s
}

pub async fn application_limit(store: Store) {
    let app = format!("app-{}", new_uuid());
    let a = app_session(&*store, &app);
    let b = app_session(&*store, &app);
    assert_eq!(
        store.create(a.clone(), Some(2)).await.unwrap(),
        CreateOutcome::Created
    );
    assert_eq!(
        store.create(b.clone(), Some(2)).await.unwrap(),
        CreateOutcome::Created
    );
    assert_eq!(
        store
            .create(app_session(&*store, &app), Some(2))
            .await
            .unwrap(),
        CreateOutcome::ApplicationFull
    );
    // Another application, and sessions without an application, are not affected.
    assert_eq!(
        store
            .create(app_session(&*store, "other-app"), Some(2))
            .await
            .unwrap(),
        CreateOutcome::Created
    );
    assert_eq!(
        store
            .create(session(&*store, MIN, MIN), Some(2))
            .await
            .unwrap(),
        CreateOutcome::Created
    );
    // A refused duplicate id does not take a place.
    store
        .remove(&a.id, EndReason::Closed)
        .await
        .unwrap()
        .unwrap();
    let mut dup = app_session(&*store, &app);
    dup.id = b.id.clone();
    assert_eq!(
        store.create(dup, Some(2)).await.unwrap(),
        CreateOutcome::IdTaken
    );
    assert_eq!(
        store
            .create(app_session(&*store, &app), Some(2))
            .await
            .unwrap(),
        CreateOutcome::Created,
        "removal freed a place"
    );
    assert_eq!(
        store
            .create(app_session(&*store, &app), Some(2))
            .await
            .unwrap(),
        CreateOutcome::ApplicationFull
    );
    // Without a limit, creation is not refused.
    assert_eq!(
        store
            .create(app_session(&*store, &app), None)
            .await
            .unwrap(),
        CreateOutcome::Created
    );
}

pub async fn application_limit_under_concurrency(stores: Vec<Store>) {
    let app = format!("app-{}", new_uuid());
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let store = stores[i % stores.len()].clone();
            let s = app_session(&*store, &app);
            tokio::spawn(async move { store.create(s, Some(5)).await.unwrap() })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        if t.await.unwrap() == CreateOutcome::Created {
            created += 1;
        }
    }
    assert_eq!(created, 5, "exactly the limit");
}

pub async fn update_patches_and_records_a_use(store: Store) {
    let mut s = session(&*store, Duration::from_millis(700), MIN);
    s.agent_id = Some("agent-0".into());
    store.create(s.clone(), None).await.unwrap();
    pass(&*store, 30).await;
    let patch = SessionPatch {
        customer_id: Some(Some("cust-u".into())),
        visit_id: Some("visit-1".into()),
        logged_in: Some(true),
        mode_of_sale_id: Some(7),
        ..Default::default()
    };
    let u = store.update(&s.id, &patch).await.unwrap().expect("live");
    assert_eq!(u.customer_id.as_deref(), Some("cust-u"));
    assert_eq!(u.visit_id.as_deref(), Some("visit-1"));
    assert_eq!(
        u.agent_id.as_deref(),
        Some("agent-0"),
        "absent values unchanged"
    );
    assert!(u.logged_in);
    assert_eq!(u.mode_of_sale_id(), Some(7));
    assert!(
        u.last_access > s.last_access && u.expires_at == u.last_access + 700,
        "update records a use"
    );
    assert_eq!(store.get(&s.id).await.unwrap().as_ref(), Some(&u));
    // Clearing the customer.
    let cleared = store
        .update(
            &s.id,
            &SessionPatch {
                customer_id: Some(None),
                logged_in: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!((cleared.customer_id, cleared.logged_in), (None, false));
    assert!(store.customer_sessions("cust-u").await.unwrap().is_empty());
    assert_eq!(store.update("no-such-id", &patch).await.unwrap(), None);
}

pub async fn removal_happens_once(store: Store) {
    let s = session(&*store, MIN, MIN);
    store.create(s.clone(), None).await.unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (store, id) = (store.clone(), s.id.clone());
            tokio::spawn(async move { store.remove(&id, EndReason::Closed).await.unwrap() })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        winners.extend(t.await.unwrap());
    }
    assert_eq!(
        winners,
        vec![s.clone()],
        "exactly one removal returns the session"
    );
    assert_eq!(store.get(&s.id).await.unwrap(), None);
    assert_eq!(store.remove(&s.id, EndReason::Closed).await.unwrap(), None);
}

pub async fn customer_index(store: Store) {
    let customer = format!("cust-{}", new_uuid());
    let mut ids = Vec::new();
    for _ in 0..3 {
        let mut s = session(&*store, MIN, MIN);
        s.customer_id = Some(customer.as_str().into());
        store.create(s.clone(), None).await.unwrap();
        ids.push(s.id.to_string());
        pass(&*store, 3).await;
    }
    let mut short = session(&*store, Duration::from_millis(200), MIN);
    short.customer_id = Some(customer.as_str().into());
    store.create(short.clone(), None).await.unwrap();
    let mut other = session(&*store, MIN, MIN);
    other.customer_id = Some("someone-else".into());
    store.create(other, None).await.unwrap();

    let listed: Vec<String> = store
        .customer_sessions(&customer)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id.to_string())
        .collect();
    assert_eq!(listed.len(), 4);
    assert_eq!(&listed[..3], &ids[..], "oldest first");

    pass(&*store, 300).await;
    store
        .remove(&ids[1], EndReason::Revoked)
        .await
        .unwrap()
        .unwrap();
    let moved = store
        .update(
            &ids[2],
            &SessionPatch {
                customer_id: Some(Some("new-owner".into())),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    let listed: Vec<String> = store
        .customer_sessions(&customer)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id.to_string())
        .collect();
    assert_eq!(
        listed,
        vec![ids[0].clone()],
        "removed, expired and moved sessions are not listed"
    );
    let new_owner: Vec<String> = store
        .customer_sessions("new-owner")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id.to_string())
        .collect();
    assert_eq!(new_owner, vec![moved.id.to_string()]);
    assert!(store.customer_sessions("nobody").await.unwrap().is_empty());
}

fn transferred(store: &dyn SessionStore, old: &Session) -> Session {
    let mut new = session(store, MIN, MIN);
    new.flavor = Flavor::Tessitura;
    new.customer_id = old.customer_id.clone();
    new
}

pub async fn transfer_without_grace(store: Store) {
    let mut old = session(&*store, MIN, MIN);
    old.flavor = Flavor::Tessitura;
    old.customer_id = Some(format!("cust-{}", new_uuid()).into());
    store.create(old.clone(), None).await.unwrap();
    let new = transferred(&*store, &old);
    let ended = store
        .transfer(&old.id, new.clone(), Duration::ZERO, EndReason::Transferred)
        .await
        .unwrap();
    assert_eq!(ended.as_ref().map(|s| &*s.id), Some(&*old.id));
    assert_eq!(
        store.get(&old.id).await.unwrap(),
        None,
        "old key stops at once"
    );
    assert_eq!(store.get(&new.id).await.unwrap().as_ref(), Some(&new));
    let listed: Vec<String> = store
        .customer_sessions(old.customer_id.as_deref().unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id.to_string())
        .collect();
    assert_eq!(listed, vec![new.id.to_string()]);
    // Unknown (or already transferred) keys change nothing.
    let stray = transferred(&*store, &old);
    assert_eq!(
        store
            .transfer(
                &old.id,
                stray.clone(),
                Duration::ZERO,
                EndReason::Transferred
            )
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.get(&stray.id).await.unwrap(),
        None,
        "no new session for a failed transfer"
    );
}

pub async fn transfer_with_grace(store: Store) {
    let old = session(&*store, MIN, MIN);
    store.create(old.clone(), None).await.unwrap();
    let new = transferred(&*store, &old);
    store
        .transfer(
            &old.id,
            new.clone(),
            Duration::from_millis(300),
            EndReason::Transferred,
        )
        .await
        .unwrap()
        .unwrap();
    let alias = store
        .get(&old.id)
        .await
        .unwrap()
        .expect("alias during grace");
    assert_eq!(alias.moved_to(), Some(&*new.id));
    assert!(store
        .touch(&old.id)
        .await
        .unwrap()
        .is_some_and(|a| a.moved_to() == Some(&*new.id)));
    pass(&*store, 400).await;
    assert_eq!(
        store.get(&old.id).await.unwrap(),
        None,
        "alias ends after the grace"
    );
    assert!(store.get(&new.id).await.unwrap().is_some());
}

pub async fn concurrent_transfers_have_one_winner(stores: Vec<Store>) {
    transfer_race(stores, Duration::ZERO, EndReason::Transferred).await;
}

/// Rotation at login (SPEC §13.2) is a transfer that leaves a grace alias: racing replicas
/// must not move the alias again (that would leave two live copies of one session).
pub async fn concurrent_rotations_with_grace_have_one_winner(stores: Vec<Store>) {
    let (old_id, winner) =
        transfer_race(stores.clone(), Duration::from_secs(5), EndReason::Rotated).await;
    for store in &stores {
        let alias = store
            .get(&old_id)
            .await
            .unwrap()
            .expect("alias during grace");
        assert_eq!(
            alias.moved_to(),
            Some(winner.as_str()),
            "every replica sees the winner"
        );
    }
}

/// Eight concurrent transfers of one session over `stores`: exactly one wins. Returns the old
/// id and the winner's new id.
async fn transfer_race(stores: Vec<Store>, grace: Duration, reason: EndReason) -> (String, String) {
    let old = session(&*stores[0], MIN, MIN);
    stores[0].create(old.clone(), None).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = stores[i % stores.len()].clone();
            let (old_id, new) = (old.id.clone(), transferred(&*store, &old));
            tokio::spawn(async move {
                let won = store
                    .transfer(&old_id, new.clone(), grace, reason)
                    .await
                    .unwrap()
                    .is_some();
                (won, new.id)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        let (won, new_id) = t.await.unwrap();
        let exists = stores[0].get(&new_id).await.unwrap().is_some();
        assert_eq!(
            won, exists,
            "a new session exists exactly when its transfer won"
        );
        if won {
            winners.push(new_id);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one transfer wins");
    (old.id.to_string(), winners.remove(0).to_string())
}

pub async fn locks_count_capacity_and_overwrite(store: Store) {
    let code = format!("CODE-{}", new_uuid());
    let lim = limits(&[(&code, 2)]);
    let k1 = format!("ssn_{}", new_uuid());
    let k2 = format!("ssn_{}", new_uuid());
    let k3 = format!("ssn_{}", new_uuid());
    let first = store
        .acquire_lock(lock(&*store, &k1, &[(&code, 1, 10, 3)], MIN), &lim)
        .await
        .unwrap();
    assert_eq!(
        first,
        LockOutcome::Acquired {
            replaced: None,
            others: vec![LockedTotals::default()]
        }
    );
    // The same key again replaces its lock and never double-counts.
    match store
        .acquire_lock(lock(&*store, &k1, &[(&code, 1, 20, 4)], MIN), &lim)
        .await
        .unwrap()
    {
        LockOutcome::Acquired {
            replaced: Some(r),
            others,
        } => {
            assert_eq!(r.lock().unwrap().holds[0].credits, 10);
            assert_eq!(others, vec![LockedTotals::default()]);
        }
        other => panic!("overwrite: {other:?}"),
    }
    let second = store
        .acquire_lock(lock(&*store, &k2, &[(&code, 1, 5, 1)], MIN), &lim)
        .await
        .unwrap();
    assert_eq!(
        second,
        LockOutcome::Acquired {
            replaced: None,
            others: vec![LockedTotals {
                quantity: 1,
                credits: 20,
                points: 4
            }]
        }
    );
    assert_eq!(
        store
            .acquire_lock(lock(&*store, &k3, &[(&code, 1, 0, 0)], MIN), &lim)
            .await
            .unwrap(),
        LockOutcome::Refused { code: code.clone() }
    );
    assert_eq!(
        store.get(&k3).await.unwrap(),
        None,
        "a refused lock is not stored"
    );
    assert_eq!(
        store
            .locked_by_others(std::slice::from_ref(&code), &k1)
            .await
            .unwrap(),
        vec![LockedTotals {
            quantity: 1,
            credits: 5,
            points: 1
        }]
    );
    assert_eq!(
        store
            .locked_by_others(std::slice::from_ref(&code), "someone")
            .await
            .unwrap(),
        vec![LockedTotals {
            quantity: 2,
            credits: 25,
            points: 5
        }]
    );
    // A lock session is found by its key, and releasing it frees its capacity.
    assert!(store
        .get(&k1)
        .await
        .unwrap()
        .is_some_and(|s| s.lock().is_some()));
    assert!(store.touch(&k1).await.unwrap().is_some());
    assert!(store
        .remove(&k1, EndReason::Released)
        .await
        .unwrap()
        .is_some());
    assert_eq!(store.get(&k1).await.unwrap(), None);
    assert!(matches!(
        store
            .acquire_lock(lock(&*store, &k3, &[(&code, 1, 0, 0)], MIN), &lim)
            .await
            .unwrap(),
        LockOutcome::Acquired { .. }
    ));
    // Codes without a limit are counted but never refused.
    let free = format!("FREE-{}", new_uuid());
    for _ in 0..3 {
        let k = format!("ssn_{}", new_uuid());
        assert!(matches!(
            store
                .acquire_lock(lock(&*store, &k, &[(&free, 1, 0, 0)], MIN), &lim)
                .await
                .unwrap(),
            LockOutcome::Acquired { .. }
        ));
    }
    assert_eq!(
        store.locked_by_others(&[free], "x").await.unwrap()[0].quantity,
        3
    );
}

pub async fn locks_are_all_or_nothing(store: Store) {
    let full = format!("FULL-{}", new_uuid());
    let open = format!("OPEN-{}", new_uuid());
    let lim = limits(&[(&full, 1), (&open, 5)]);
    let holder = format!("ssn_{}", new_uuid());
    store
        .acquire_lock(lock(&*store, &holder, &[(&full, 1, 0, 0)], MIN), &lim)
        .await
        .unwrap();
    let k = format!("ssn_{}", new_uuid());
    assert_eq!(
        store
            .acquire_lock(
                lock(&*store, &k, &[(&open, 1, 0, 0), (&full, 1, 0, 0)], MIN),
                &lim
            )
            .await
            .unwrap(),
        LockOutcome::Refused { code: full.clone() }
    );
    assert_eq!(
        store
            .locked_by_others(&[open.clone(), full.clone()], "nobody")
            .await
            .unwrap(),
        vec![
            LockedTotals::default(),
            LockedTotals {
                quantity: 1,
                credits: 0,
                points: 0
            }
        ],
        "the refused lock holds nothing"
    );
    // Overwriting a lock with one that no longer names a code releases that code.
    let k2 = format!("ssn_{}", new_uuid());
    store
        .acquire_lock(lock(&*store, &k2, &[(&open, 1, 0, 0)], MIN), &lim)
        .await
        .unwrap();
    store
        .acquire_lock(lock(&*store, &holder, &[(&open, 1, 0, 0)], MIN), &lim)
        .await
        .unwrap();
    assert_eq!(
        store.locked_by_others(&[full], "nobody").await.unwrap()[0].quantity,
        0
    );
    assert_eq!(
        store.locked_by_others(&[open], "nobody").await.unwrap()[0].quantity,
        2
    );
    let plain = session(&*store, MIN, MIN);
    assert_eq!(
        store.acquire_lock(plain, &lim).await.unwrap(),
        LockOutcome::Refused {
            code: String::new()
        }
    );
}

/// `n` concurrent acquisitions of one code with quantity `q`, spread over `stores`.
pub async fn lock_capacity_under_concurrency(stores: Vec<Store>, n: usize, q: u64) {
    let code = format!("HOT-{}", new_uuid());
    let lim = Arc::new(limits(&[(&code, q)]));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let store = stores[i % stores.len()].clone();
            let (code, lim) = (code.clone(), lim.clone());
            tokio::spawn(async move {
                let k = format!("ssn_{}", new_uuid());
                store
                    .acquire_lock(lock(&*store, &k, &[(&code, 1, 0, 0)], MIN), &lim)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            LockOutcome::Acquired { .. } => won += 1,
            LockOutcome::Refused { code: c } => assert_eq!(c, code),
        }
    }
    assert_eq!(won as u64, q.min(n as u64), "exactly min(N, Q) locks");
    assert_eq!(
        stores[0].locked_by_others(&[code], "nobody").await.unwrap()[0].quantity,
        q.min(n as u64)
    );
}

pub async fn locks_expire(store: Store) {
    let code = format!("EXP-{}", new_uuid());
    let lim = limits(&[(&code, 1)]);
    let k = format!("ssn_{}", new_uuid());
    store
        .acquire_lock(
            lock(&*store, &k, &[(&code, 1, 0, 0)], Duration::from_millis(200)),
            &lim,
        )
        .await
        .unwrap();
    let k2 = format!("ssn_{}", new_uuid());
    assert!(matches!(
        store
            .acquire_lock(lock(&*store, &k2, &[(&code, 1, 0, 0)], MIN), &lim)
            .await
            .unwrap(),
        LockOutcome::Refused { .. }
    ));
    pass(&*store, 300).await;
    assert_eq!(store.get(&k).await.unwrap(), None);
    assert!(matches!(
        store
            .acquire_lock(lock(&*store, &k2, &[(&code, 1, 0, 0)], MIN), &lim)
            .await
            .unwrap(),
        LockOutcome::Acquired { .. }
    ));
    assert_eq!(
        store.remove(&k, EndReason::Released).await.unwrap(),
        None,
        "an expired lock cannot be released"
    );
}

pub async fn snapshot_and_restore(store: Store) {
    let a = session(&*store, MIN, MIN);
    let l = lock(
        &*store,
        &format!("ssn_{}", new_uuid()),
        &[("SNAP", 1, 0, 0)],
        MIN,
    );
    store.create(a.clone(), None).await.unwrap();
    store.acquire_lock(l.clone(), &no_limits()).await.unwrap();
    let all: Vec<String> = store
        .all_sessions()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id.to_string())
        .collect();
    assert!(
        all.contains(&a.id.to_string()) && all.contains(&l.id.to_string()),
        "{all:?}"
    );
    store.session_count().await.unwrap();

    let fresh = session(&*store, MIN, MIN);
    let mut dead = session(&*store, MIN, MIN);
    dead.expires_at = store.clock().now_millis() - 1;
    let mut clash = session(&*store, MIN, MIN);
    clash.id = a.id.clone();
    clash.customer_id = Some("clash".into());
    let restored = store
        .restore(vec![fresh.clone(), dead.clone(), clash])
        .await
        .unwrap();
    assert_eq!(restored, 1, "only the live, new one");
    assert!(store.get(&fresh.id).await.unwrap().is_some());
    assert_eq!(store.get(&dead.id).await.unwrap(), None);
    assert_eq!(
        store.get(&a.id).await.unwrap().unwrap().customer_id,
        None,
        "existing sessions are kept"
    );
}
