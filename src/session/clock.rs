//! The time sessions live by (SPEC §3 expiry, §5 lock lifetimes): the system clock in
//! production, a manual one in tests, so expiry and TTL tests advance time instead of sleeping.
//!
//! The session model, `SessionService` and the memory store read "now" only through a `Clock`.
//! The Redis store stays on the system clock: Redis expires keys on its own wall clock.

use super::model::{duration_millis, Millis};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch on the system clock. Only for what runs on real time
/// (the Redis store, file timestamps); sessions read their store's `Clock`.
pub fn now_millis() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Cheap to clone: the system clock is a unit variant (no allocation, no lock on the hot
/// path); a manual clock is shared, so every clone sees one `advance`.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    System,
    /// Stands still until `advance`d. Milliseconds since the Unix epoch.
    Manual(Arc<AtomicU64>),
}

impl Clock {
    pub fn system() -> Clock {
        Clock::System
    }

    /// A manual clock showing the system time now (so timestamps still look like dates).
    pub fn manual() -> Clock {
        Clock::Manual(Arc::new(AtomicU64::new(now_millis())))
    }

    pub fn now_millis(&self) -> Millis {
        match self {
            Clock::System => now_millis(),
            Clock::Manual(now) => now.load(Ordering::SeqCst),
        }
    }

    pub fn is_manual(&self) -> bool {
        matches!(self, Clock::Manual(_))
    }

    /// Moves a manual clock forward by `by`. The system clock cannot be moved: calling this on
    /// it is a bug in the caller (a test), hence the panic.
    pub fn advance(&self, by: Duration) {
        match self {
            Clock::System => panic!("the system clock cannot be advanced"),
            Clock::Manual(now) => {
                now.fetch_add(duration_millis(by), Ordering::SeqCst);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let clock = Clock::manual();
        let start = clock.now_millis();
        let copy = clock.clone();
        std::thread::yield_now();
        assert_eq!(copy.now_millis(), start);
        copy.advance(Duration::from_millis(1500));
        assert_eq!(clock.now_millis(), start + 1500);
        assert!(clock.is_manual() && !Clock::system().is_manual());
    }

    #[test]
    fn the_system_clock_follows_the_system_time() {
        let before = now_millis();
        let read = Clock::system().now_millis();
        assert!(read >= before && read <= now_millis());
    }

    #[test]
    #[should_panic(expected = "cannot be advanced")]
    fn the_system_clock_cannot_be_advanced() {
        Clock::system().advance(Duration::from_millis(1));
    }
}
