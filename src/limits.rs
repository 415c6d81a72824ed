//! Rate limits (SPEC §6, §12): token buckets with a burst equal to the per-second rate, keyed by
//! credential, client IP or session. Buckets idle long enough to have refilled are forgotten, so
//! memory follows the set of recently active keys.

use crate::config::RateLimitSettings;
use moka::sync::Cache;
use parking_lot::Mutex;
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
    rate: f64,
    buckets: Cache<String, Arc<Mutex<Bucket>>>,
}

impl Limiter {
    /// `rate` requests per second, with bursts of up to `rate`.
    pub fn new(rate: u32) -> Limiter {
        let rate = f64::from(rate.max(1));
        // A bucket untouched for burst/rate seconds is full again: dropping it changes nothing.
        let refill = Duration::from_secs(2);
        Limiter {
            rate,
            buckets: Cache::builder()
                .time_to_idle(refill)
                .max_capacity(1_000_000)
                .build(),
        }
    }

    /// Takes one token for `key`, or says how long to wait.
    pub fn check(&self, key: &str) -> Result<(), RetryAfter> {
        let now = Instant::now();
        let bucket = self.buckets.get_with_by_ref(key, || {
            Arc::new(Mutex::new(Bucket {
                tokens: self.rate,
                updated: now,
            }))
        });
        let mut b = bucket.lock();
        let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.rate);
        b.updated = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - b.tokens) / self.rate;
            Err(RetryAfter(wait.ceil().max(1.0) as u64))
        }
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
