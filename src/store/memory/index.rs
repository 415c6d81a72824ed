//! The memory store's indexes (SPEC §7): sessions by customer and by application, and the
//! ledger of what each Voucherify lock holds of each code. Index entries share the session's
//! id allocation (`Session::id` is an `Arc<str>`).

use crate::session::{LockedTotals, Millis, Session};
use hashbrown::{DefaultHashBuilder, HashTable};
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;

#[derive(Default)]
pub struct Indexes {
    pub by_customer: CustomerIndex,
    pub by_application: HashMap<Arc<str>, IdSet>,
}

/// Session ids by customer, as (hash of the customer id, session id) pairs: most customers
/// have one session, so a pair per session (24 bytes) and no copy of the customer id. Pairs of
/// other customers with the same hash come back too: callers check the session's customer.
#[derive(Default)]
pub struct CustomerIndex {
    pairs: HashTable<(u64, Arc<str>)>,
    hasher: DefaultHashBuilder,
}

impl CustomerIndex {
    fn insert(&mut self, customer: &str, id: &Arc<str>) {
        let h = self.hasher.hash_one(customer);
        let same = |e: &(u64, Arc<str>)| e.0 == h && e.1 == *id;
        if self.pairs.find(h, same).is_none() {
            self.pairs.insert_unique(h, (h, id.clone()), |e| e.0);
        }
    }

    fn remove(&mut self, customer: &str, id: &str) {
        let h = self.hasher.hash_one(customer);
        if let Ok(entry) = self.pairs.find_entry(h, |e| e.0 == h && &*e.1 == id) {
            entry.remove();
        }
    }

    /// The ids indexed under `customer` (and any customer with the same hash).
    pub fn get(&self, customer: &str) -> impl Iterator<Item = &str> {
        let h = self.hasher.hash_one(customer);
        self.pairs
            .iter_hash(h)
            .filter(move |e| e.0 == h)
            .map(|e| &*e.1)
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// The session ids under one application. One id is kept bare: a one-element hash set costs
/// far more than the id.
pub enum IdSet {
    One(Arc<str>),
    Many(HashSet<Arc<str>>),
}

impl IdSet {
    pub fn insert(&mut self, id: &Arc<str>) {
        match self {
            IdSet::One(only) if only == id => {}
            IdSet::One(only) => {
                let first = only.clone();
                *self = IdSet::Many(HashSet::from([first, id.clone()]));
            }
            IdSet::Many(ids) => {
                ids.insert(id.clone());
            }
        }
    }

    /// Removes `id`; true when the set is now empty.
    pub fn remove(&mut self, id: &str) -> bool {
        match self {
            IdSet::One(only) => &**only == id,
            IdSet::Many(ids) => {
                ids.remove(id);
                ids.is_empty()
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        let (one, many) = match self {
            IdSet::One(only) => (Some(&**only), None),
            IdSet::Many(ids) => (None, Some(ids.iter().map(|id| &**id))),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

impl Indexes {
    pub fn add(&mut self, s: &Session) {
        if let Some(c) = &s.customer_id {
            self.by_customer.insert(c, &s.id);
        }
        if let Some(app) = &s.application_key {
            match self.by_application.get_mut(&**app) {
                Some(ids) => ids.insert(&s.id),
                None => {
                    self.by_application
                        .insert(app.clone(), IdSet::One(s.id.clone()));
                }
            }
        }
    }

    pub fn forget(&mut self, s: &Session) {
        if let Some(c) = &s.customer_id {
            self.by_customer.remove(c, &s.id);
        }
        if let Some(app) = &s.application_key {
            if let Some(ids) = self.by_application.get_mut(&**app) {
                if ids.remove(&s.id) {
                    self.by_application.remove(&**app);
                }
            }
        }
    }
}

/// What one lock session holds of one code, until when.
#[derive(Clone)]
struct Holding {
    quantity: u64,
    credits: i64,
    points: i64,
    expires_at: Millis,
}

#[derive(Default)]
pub struct LockLedger {
    /// code -> lock key -> holding
    codes: HashMap<String, HashMap<Arc<str>, Holding>>,
}

impl LockLedger {
    pub fn others(&self, code: &str, key: &str, now: Millis) -> LockedTotals {
        let mut t = LockedTotals::default();
        if let Some(holders) = self.codes.get(code) {
            for (k, h) in holders {
                if &**k != key && h.expires_at > now {
                    t.quantity += h.quantity;
                    t.credits += h.credits;
                    t.points += h.points;
                }
            }
        }
        t
    }

    pub fn forget(&mut self, s: &Session) {
        if let Some(lock) = s.lock() {
            for hold in &lock.holds {
                if let Some(holders) = self.codes.get_mut(&hold.code) {
                    holders.remove(&*s.id);
                    if holders.is_empty() {
                        self.codes.remove(&hold.code);
                    }
                }
            }
        }
    }

    pub fn record(&mut self, s: &Session) {
        if let Some(lock) = s.lock() {
            for hold in &lock.holds {
                self.codes.entry(hold.code.clone()).or_default().insert(
                    s.id.clone(),
                    Holding {
                        quantity: hold.quantity,
                        credits: hold.credits,
                        points: hold.points,
                        expires_at: s.expires_at,
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_sets_grow_from_one_and_empty_out() {
        let id = |s: &str| Arc::<str>::from(s);
        let mut ids = IdSet::One(id("a"));
        ids.insert(&id("a"));
        assert!(matches!(ids, IdSet::One(_)), "a repeat is not a second id");
        assert!(!ids.remove("b"), "removing a stranger leaves it");
        ids.insert(&id("b"));
        ids.insert(&id("c"));
        let mut all: Vec<&str> = ids.iter().collect();
        all.sort_unstable();
        assert_eq!(all, ["a", "b", "c"]);
        assert!(!ids.remove("a"));
        assert!(!ids.remove("b"));
        assert!(ids.remove("c"), "empty once the last id is gone");
        assert!(IdSet::One(id("x")).remove("x"));
    }

    #[test]
    fn customer_index_holds_pairs_until_forgotten() {
        let mut idx = CustomerIndex::default();
        let (a, b) = (Arc::<str>::from("a"), Arc::<str>::from("b"));
        idx.insert("c1", &a);
        idx.insert("c1", &a);
        idx.insert("c1", &b);
        idx.insert("c2", &a);
        let mut c1: Vec<&str> = idx.get("c1").collect();
        c1.sort_unstable();
        assert_eq!(c1, ["a", "b"], "a repeat is not a second pair");
        idx.remove("c1", "a");
        assert_eq!(idx.get("c1").collect::<Vec<_>>(), ["b"]);
        assert_eq!(idx.get("c2").collect::<Vec<_>>(), ["a"]);
        idx.remove("c1", "b");
        idx.remove("c2", "a");
        assert!(idx.is_empty());
    }
}
