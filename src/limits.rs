//! Rate limits (SPEC §6, §12): token buckets with a burst equal to the per-second rate, keyed by
//! credential, client IP or session; and the admin listener's limit on failed authentications
//! per client IP (issue 16), a bucket of N failures refilled N a minute. Buckets idle long
//! enough to have refilled are forgotten, so memory follows the set of recently active keys.

use crate::config::RateLimitSettings;
use moka::sync::Cache;
use parking_lot::Mutex;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A request over a limit: how long until one more would be allowed, in whole seconds (≥ 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub u64);

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// One token-bucket limit over many keys.
pub struct Limiter {
    /// Bucket size: the largest burst.
    capacity: f64,
    /// Tokens added per second.
    refill: f64,
    buckets: Cache<String, Arc<Mutex<Bucket>>>,
}

impl Limiter {
    /// `rate` requests per second, with bursts of up to `rate`.
    pub fn new(rate: u32) -> Limiter {
        Limiter::per(rate, Duration::from_secs(1), 1_000_000)
    }

    /// `n` per `period`, with bursts of up to `n`; at most `max_keys` keys are remembered
    /// (the least recently used go first).
    pub fn per(n: u32, period: Duration, max_keys: u64) -> Limiter {
        let capacity = f64::from(n.max(1));
        let period = period.max(Duration::from_millis(1));
        // A bucket untouched for one period is full again: dropping it changes nothing.
        // Twice that leaves room for a clock that reads a little late.
        Limiter {
            capacity,
            refill: capacity / period.as_secs_f64(),
            buckets: Cache::builder()
                .time_to_idle(period * 2)
                .max_capacity(max_keys)
                .build(),
        }
    }

    /// Takes one token for `key`, or says how long to wait.
    pub fn check(&self, key: &str) -> Result<(), RetryAfter> {
        self.check_at(key, Instant::now())
    }

    /// Gives back a token `check` took, for an attempt that turned out not to count.
    pub fn refund(&self, key: &str) {
        self.refund_at(key, Instant::now());
    }

    /// How long until `key` may take a token, if it may not now (nothing is taken).
    pub fn wait(&self, key: &str) -> Option<RetryAfter> {
        self.wait_at(key, Instant::now())
    }

    /// `key`'s bucket, refilled up to `now`.
    fn bucket_at(&self, key: &str, now: Instant) -> Arc<Mutex<Bucket>> {
        self.buckets.get_with_by_ref(key, || {
            Arc::new(Mutex::new(Bucket {
                tokens: self.capacity,
                updated: now,
            }))
        })
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.refill).min(self.capacity);
        b.updated = b.updated.max(now);
    }

    fn retry_after(&self, b: &Bucket) -> RetryAfter {
        let wait = (1.0 - b.tokens) / self.refill;
        RetryAfter(wait.ceil().max(1.0) as u64)
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), RetryAfter> {
        let bucket = self.bucket_at(key, now);
        let mut b = bucket.lock();
        self.refill(&mut b, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.retry_after(&b))
        }
    }

    fn refund_at(&self, key: &str, now: Instant) {
        let bucket = self.bucket_at(key, now);
        let mut b = bucket.lock();
        self.refill(&mut b, now);
        b.tokens = (b.tokens + 1.0).min(self.capacity);
    }

    fn wait_at(&self, key: &str, now: Instant) -> Option<RetryAfter> {
        let bucket = self.bucket_at(key, now);
        let mut b = bucket.lock();
        self.refill(&mut b, now);
        (b.tokens < 1.0).then(|| self.retry_after(&b))
    }
}

/// The configured limits of one config generation (0 = off).
pub struct RateLimits {
    create_per_credential: Option<Limiter>,
    create_per_ip: Option<Limiter>,
    forward_per_session: Option<Limiter>,
}

impl RateLimits {
    pub fn from_config(s: &RateLimitSettings) -> RateLimits {
        let make = |rate: u32| (rate > 0).then(|| Limiter::new(rate));
        RateLimits {
            create_per_credential: make(s.create_per_credential),
            create_per_ip: make(s.create_per_ip),
            forward_per_session: make(s.forward_per_session),
        }
    }

    /// A session creation by `credential` (if any) from `ip` (if known).
    pub fn check_create(
        &self,
        credential: Option<&str>,
        ip: Option<std::net::IpAddr>,
    ) -> Result<(), RetryAfter> {
        if let (Some(l), Some(c)) = (&self.create_per_credential, credential) {
            l.check(c)?;
        }
        if let (Some(l), Some(ip)) = (&self.create_per_ip, ip) {
            l.check(&ip.to_string())?;
        }
        Ok(())
    }

    /// A forwarded request on `session_id`.
    pub fn check_forward(&self, session_id: &str) -> Result<(), RetryAfter> {
        match &self.forward_per_session {
            Some(l) => l.check(session_id),
            None => Ok(()),
        }
    }
}

/// Client addresses the admin failure limit remembers at most (a few hundred bytes each with
/// the cache's bookkeeping); beyond, the least recently seen are forgotten.
const ADMIN_CLIENTS: u64 = 100_000;

/// Failed admin authentications per client IP (issue 16): `n` a minute, in bursts of up to `n`.
/// Every attempt reserves a failure before its credential is evaluated, so concurrent guesses
/// cannot overrun the budget; an attempt that does not count gives its reservation back.
pub struct AdminAuthLimit {
    per_minute: u32,
    failures: Limiter,
}

impl AdminAuthLimit {
    /// The limit for `per_minute` failures (0 = none). `previous` is the running generation's:
    /// when the setting is unchanged its counts are kept, so a reload does not forgive a guesser.
    pub fn from_config_after(
        per_minute: u32,
        previous: Option<&Arc<AdminAuthLimit>>,
    ) -> Option<Arc<AdminAuthLimit>> {
        if per_minute == 0 {
            return None;
        }
        match previous {
            Some(p) if p.per_minute == per_minute => Some(p.clone()),
            _ => Some(Arc::new(AdminAuthLimit {
                per_minute,
                failures: Limiter::per(per_minute, Duration::from_secs(60), ADMIN_CLIENTS),
            })),
        }
    }

    /// Before `ip`'s credential is evaluated: reserves one failure, or says how long `ip`
    /// must wait because its failures used up the budget.
    pub fn admit(&self, ip: IpAddr) -> Result<(), RetryAfter> {
        self.failures.check(&client_key(ip))
    }

    /// The attempt did not fail (or fails in a way that is not guessing): the reservation
    /// is given back. Success does not clear earlier failures.
    pub fn forgive(&self, ip: IpAddr) {
        self.failures.refund(&client_key(ip));
    }

    /// After a failure (its reservation stands): how long `ip` is now refused, if it is.
    pub fn refused_for(&self, ip: IpAddr) -> Option<RetryAfter> {
        self.failures.wait(&client_key(ip))
    }
}

/// An IPv4 client reaching a dual-stack socket shows up as `::ffff:a.b.c.d`: one key for both.
fn client_key(ip: IpAddr) -> String {
    ip.to_canonical().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse_then_refill() {
        let l = Limiter::new(5);
        for _ in 0..5 {
            assert!(l.check("k").is_ok());
        }
        assert_eq!(l.check("k"), Err(RetryAfter(1)));
        assert!(l.check("other").is_ok(), "keys are independent");
        std::thread::sleep(Duration::from_millis(450));
        assert!(
            l.check("k").is_ok(),
            "two tokens refilled after 0.4 s at 5/s"
        );
        assert!(l.check("k").is_ok());
        assert!(l.check("k").is_err());
    }

    #[test]
    fn a_per_minute_bucket_refills_one_token_at_a_time() {
        let l = Limiter::per(3, Duration::from_secs(60), 10);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check_at("k", t0).is_ok());
        }
        assert_eq!(
            l.check_at("k", t0),
            Err(RetryAfter(20)),
            "one token per 20 s"
        );
        assert_eq!(l.wait_at("k", t0), Some(RetryAfter(20)));
        let almost = t0 + Duration::from_millis(19_500);
        assert_eq!(l.check_at("k", almost), Err(RetryAfter(1)), "rounded up");
        let refilled = t0 + Duration::from_secs(20);
        assert_eq!(l.wait_at("k", refilled), None);
        assert!(l.check_at("k", refilled).is_ok());
        assert_eq!(l.check_at("k", refilled), Err(RetryAfter(20)));
        assert!(l.check_at("other", t0).is_ok(), "keys are independent");
    }

    #[test]
    fn refunds_give_back_what_check_took_and_never_more_than_the_burst() {
        let l = Limiter::per(2, Duration::from_secs(60), 10);
        let t0 = Instant::now();
        assert!(l.check_at("k", t0).is_ok());
        l.refund_at("k", t0);
        assert!(l.check_at("k", t0).is_ok());
        assert!(l.check_at("k", t0).is_ok());
        assert!(l.check_at("k", t0).is_err(), "two taken, none refunded");
        for _ in 0..5 {
            l.refund_at("k", t0);
        }
        assert!(l.check_at("k", t0).is_ok());
        assert!(l.check_at("k", t0).is_ok());
        assert!(
            l.check_at("k", t0).is_err(),
            "refunds stop at the burst size"
        );
    }

    #[test]
    fn admin_failures_are_limited_per_client_ip() {
        assert!(
            AdminAuthLimit::from_config_after(0, None).is_none(),
            "0 = off"
        );
        let limit = AdminAuthLimit::from_config_after(2, None).unwrap();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        // Two failures: each attempt reserved, none forgiven.
        assert!(limit.admit(a).is_ok());
        assert_eq!(limit.refused_for(a), None, "one failure left");
        assert!(limit.admit(a).is_ok());
        let refused = limit.refused_for(a).expect("the budget is used up");
        assert!(
            (1..=30).contains(&refused.0),
            "{refused:?}: one failure per 30 s"
        );
        assert!(limit.admit(a).is_err());
        // The same client over IPv6 (IPv4-mapped) is the same client.
        assert!(limit.admit("::ffff:10.0.0.1".parse().unwrap()).is_err());
        assert!(limit.admit(b).is_ok(), "another client is not affected");
        // Successes are forgiven, so they never use up the budget...
        for _ in 0..10 {
            assert!(limit.admit(b).is_ok());
            limit.forgive(b);
        }
        // ...and do not wipe failures either.
        assert!(limit.admit(b).is_ok());
        assert!(
            limit.admit(b).is_err(),
            "b's first and last attempts failed"
        );
    }

    #[test]
    fn a_reload_keeps_the_admin_failure_counts_unless_the_limit_changes() {
        let first = AdminAuthLimit::from_config_after(5, None).unwrap();
        let same = AdminAuthLimit::from_config_after(5, Some(&first)).unwrap();
        assert!(Arc::ptr_eq(&first, &same));
        let changed = AdminAuthLimit::from_config_after(6, Some(&first)).unwrap();
        assert!(!Arc::ptr_eq(&first, &changed));
        assert!(AdminAuthLimit::from_config_after(0, Some(&first)).is_none());
    }

    #[test]
    fn zero_means_off() {
        let limits = RateLimits::from_config(&RateLimitSettings::default());
        for _ in 0..1000 {
            assert!(limits.check_forward("s").is_ok());
            assert!(limits.check_create(Some("c"), None).is_ok());
        }
    }

    #[test]
    fn creation_checks_credential_and_ip() {
        let limits = RateLimits::from_config(&RateLimitSettings {
            create_per_credential: 2,
            create_per_ip: 3,
            forward_per_session: 0,
        });
        let ip = Some("10.0.0.1".parse().unwrap());
        assert!(limits.check_create(Some("a"), ip).is_ok());
        assert!(limits.check_create(Some("a"), ip).is_ok());
        assert!(
            limits.check_create(Some("a"), ip).is_err(),
            "credential a is out"
        );
        assert!(
            limits.check_create(Some("b"), ip).is_ok(),
            "third from this IP"
        );
        assert!(limits.check_create(Some("c"), ip).is_err(), "the IP is out");
    }
}
