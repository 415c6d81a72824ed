//! The one session model every flavour shares (SPEC §3).

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Milliseconds since the Unix epoch: compact, and the same on every replica.
pub type Millis = u64;

/// Latest instant `rfc3339` writes: 9999-12-31T23:59:59.999Z (four-digit years only).
const RFC3339_MAX: Millis = 253_402_300_799_999;

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-22T10:00:00.000Z`. Written by hand rather
/// than through `time`'s formatter: every session answer formats two or three of these.
/// Instants past year 9999 are written as its last millisecond.
pub fn rfc3339(ms: Millis) -> String {
    let bytes = rfc3339_bytes(ms);
    // Only ASCII digits and separators are written.
    std::str::from_utf8(&bytes).unwrap_or_default().to_owned()
}

/// `rfc3339` as its 24 ASCII bytes, for writers that append to a buffer. Digits are placed
/// directly: `format!` with widths cost a KC answer more than its JSON (callgrind).
pub fn rfc3339_bytes(ms: Millis) -> [u8; 24] {
    let ms = ms.min(RFC3339_MAX);
    let days = ms / 86_400_000;
    let in_day = ms % 86_400_000;
    let (year, month, day) = civil_from_days(days);
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut n: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, in_day / 3_600_000);
    put(14, 2, in_day / 60_000 % 60);
    put(17, 2, in_day / 1000 % 60);
    put(20, 3, in_day % 1000);
    out
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`
/// for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097; // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..=365, from March 1st
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

pub fn duration_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Which wire API created a session. Also the `flavor` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flavor {
    Spreadsheetweb,
    KnowledgeCenter,
    Tessitura,
    Voucherify,
    Admin,
}

impl Flavor {
    pub const ALL: [Flavor; 5] = [
        Flavor::Spreadsheetweb,
        Flavor::KnowledgeCenter,
        Flavor::Tessitura,
        Flavor::Voucherify,
        Flavor::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Flavor::Spreadsheetweb => "spreadsheetweb",
            Flavor::KnowledgeCenter => "knowledge_center",
            Flavor::Tessitura => "tessitura",
            Flavor::Voucherify => "voucherify",
            Flavor::Admin => "admin",
        }
    }
}

/// Why a session ended: the `reason` label of `sessions_ended_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    Closed,
    IdleExpired,
    AbsoluteExpired,
    Transferred,
    Redeemed,
    Released,
    Evicted,
    Revoked,
    /// The id was replaced at login (SPEC §13.2); the session lives on under its new id.
    Rotated,
}

impl EndReason {
    pub const ALL: [EndReason; 9] = [
        EndReason::Closed,
        EndReason::IdleExpired,
        EndReason::AbsoluteExpired,
        EndReason::Transferred,
        EndReason::Redeemed,
        EndReason::Released,
        EndReason::Evicted,
        EndReason::Revoked,
        EndReason::Rotated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Closed => "closed",
            EndReason::IdleExpired => "idle_expired",
            EndReason::AbsoluteExpired => "absolute_expired",
            EndReason::Transferred => "transferred",
            EndReason::Redeemed => "redeemed",
            EndReason::Released => "released",
            EndReason::Evicted => "evicted",
            EndReason::Revoked => "revoked",
            EndReason::Rotated => "rotated",
        }
    }
}

/// Units a Voucherify lock TTL may be given in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TtlUnit {
    Days,
    Hours,
    Minutes,
    Seconds,
    Milliseconds,
    Microseconds,
    Nanoseconds,
}

impl TtlUnit {
    pub fn parse(s: &str) -> Option<TtlUnit> {
        Some(match s {
            "DAYS" => TtlUnit::Days,
            "HOURS" => TtlUnit::Hours,
            "MINUTES" => TtlUnit::Minutes,
            "SECONDS" => TtlUnit::Seconds,
            "MILLISECONDS" => TtlUnit::Milliseconds,
            "MICROSECONDS" => TtlUnit::Microseconds,
            "NANOSECONDS" => TtlUnit::Nanoseconds,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TtlUnit::Days => "DAYS",
            TtlUnit::Hours => "HOURS",
            TtlUnit::Minutes => "MINUTES",
            TtlUnit::Seconds => "SECONDS",
            TtlUnit::Milliseconds => "MILLISECONDS",
            TtlUnit::Microseconds => "MICROSECONDS",
            TtlUnit::Nanoseconds => "NANOSECONDS",
        }
    }

    /// `ttl` of this unit as a duration; `None` on overflow.
    pub fn duration(self, ttl: u64) -> Option<Duration> {
        let nanos_per: u128 = match self {
            TtlUnit::Days => 86_400_000_000_000,
            TtlUnit::Hours => 3_600_000_000_000,
            TtlUnit::Minutes => 60_000_000_000,
            TtlUnit::Seconds => 1_000_000_000,
            TtlUnit::Milliseconds => 1_000_000,
            TtlUnit::Microseconds => 1_000,
            TtlUnit::Nanoseconds => 1,
        };
        let total = (ttl as u128).checked_mul(nanos_per)?;
        let secs = u64::try_from(total / 1_000_000_000).ok()?;
        Some(Duration::new(secs, (total % 1_000_000_000) as u32))
    }
}

/// What one voucher code holds in a lock session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeHold {
    pub code: String,
    /// Redemption units held (1 per mention of the code in the request).
    pub quantity: u64,
    pub credits: i64,
    pub points: i64,
}

/// A Voucherify validation lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub holds: Vec<CodeHold>,
    pub ttl: u64,
    pub ttl_unit: TtlUnit,
}

/// Totals locked on one code by sessions other than the asking one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockedTotals {
    pub quantity: u64,
    pub credits: i64,
    pub points: i64,
}

/// A session of any flavour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub flavor: Flavor,
    /// Name of the credential that created it (`None` when created without one).
    pub owner: Option<String>,
    pub application_key: Option<String>,
    pub customer_id: Option<String>,
    pub agent_id: Option<String>,
    pub visit_id: Option<String>,
    pub global_visit_id: Option<String>,
    pub tenant_id: Option<String>,
    pub logged_in: bool,
    pub mode_of_sale_id: Option<i64>,
    pub original_mode_of_sale_id: Option<i64>,
    pub source_id: Option<i64>,
    pub lock: Option<Lock>,
    /// Set while a transferred-away key is in its grace period: it resolves to this id.
    pub moved_to: Option<String>,
    pub created_at: Millis,
    pub last_access: Millis,
    pub expires_at: Millis,
    /// Idle timeout in ms; 0 = fixed lifetime (locks, grace aliases): never extended by use.
    pub idle_ms: u64,
    /// `created_at + absolute_timeout`: no use extends a session past this.
    pub absolute_deadline: Millis,
}

impl Session {
    /// A new session, created at `now`, with no identity that ends after `idle` without use,
    /// or `absolute` at most.
    pub fn new(
        id: String,
        flavor: Flavor,
        owner: Option<String>,
        idle: Duration,
        absolute: Duration,
        now: Millis,
    ) -> Session {
        let idle_ms = duration_millis(idle).max(1);
        let absolute_deadline = now.saturating_add(duration_millis(absolute));
        Session {
            flavor,
            owner,
            created_at: now,
            last_access: now,
            expires_at: now.saturating_add(idle_ms).min(absolute_deadline),
            idle_ms,
            absolute_deadline,
            ..Session::blank(id)
        }
    }

    /// A session with no identity, no owner and all times zero: the base the constructors
    /// and decoders fill in.
    pub fn blank(id: String) -> Session {
        Session {
            id,
            flavor: Flavor::Admin,
            owner: None,
            application_key: None,
            customer_id: None,
            agent_id: None,
            visit_id: None,
            global_visit_id: None,
            tenant_id: None,
            logged_in: false,
            mode_of_sale_id: None,
            original_mode_of_sale_id: None,
            source_id: None,
            lock: None,
            moved_to: None,
            created_at: 0,
            last_access: 0,
            expires_at: 0,
            idle_ms: 0,
            absolute_deadline: 0,
        }
    }

    /// A session with a fixed lifetime (locks, grace aliases), created at `now`: use never
    /// extends it.
    pub fn with_fixed_ttl_at(
        id: String,
        flavor: Flavor,
        owner: Option<String>,
        ttl: Duration,
        now: Millis,
    ) -> Session {
        let end = now.saturating_add(duration_millis(ttl));
        let mut s = Session::new(id, flavor, owner, ttl, ttl, now);
        s.idle_ms = 0;
        s.created_at = now;
        s.last_access = now;
        s.expires_at = end;
        s.absolute_deadline = end;
        s
    }

    pub fn is_live(&self, now: Millis) -> bool {
        self.expires_at > now
    }

    /// Records a use at `now`, extending the idle deadline (never past the absolute one).
    pub fn touch(&mut self, now: Millis) {
        if self.idle_ms > 0 {
            self.last_access = now;
            self.expires_at = now.saturating_add(self.idle_ms).min(self.absolute_deadline);
        }
    }

    /// Why a session that is no longer live ended.
    pub fn expiry_reason(&self) -> EndReason {
        if self.idle_ms > 0 && self.expires_at < self.absolute_deadline {
            EndReason::IdleExpired
        } else {
            EndReason::AbsoluteExpired
        }
    }

    pub fn remaining(&self, now: Millis) -> Duration {
        Duration::from_millis(self.expires_at.saturating_sub(now))
    }
}

/// A change to a session's identity: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionPatch {
    /// `Some(None)` clears the customer.
    pub customer_id: Option<Option<String>>,
    pub agent_id: Option<String>,
    pub visit_id: Option<String>,
    pub global_visit_id: Option<String>,
    pub tenant_id: Option<String>,
    pub logged_in: Option<bool>,
    pub mode_of_sale_id: Option<i64>,
    pub source_id: Option<i64>,
}

impl SessionPatch {
    /// The patch that gives another session `s`'s identity (a native Tessitura transfer):
    /// customer and login state exactly, the other identity values where `s` has them.
    pub fn identity_of(s: &Session) -> SessionPatch {
        SessionPatch {
            customer_id: Some(s.customer_id.clone()),
            agent_id: s.agent_id.clone(),
            visit_id: s.visit_id.clone(),
            global_visit_id: s.global_visit_id.clone(),
            tenant_id: s.tenant_id.clone(),
            logged_in: Some(s.logged_in),
            mode_of_sale_id: None,
            source_id: None,
        }
    }

    pub fn apply(&self, s: &mut Session) {
        if let Some(c) = &self.customer_id {
            s.customer_id = c.clone();
        }
        if let Some(v) = &self.agent_id {
            s.agent_id = Some(v.clone());
        }
        if let Some(v) = &self.visit_id {
            s.visit_id = Some(v.clone());
        }
        if let Some(v) = &self.global_visit_id {
            s.global_visit_id = Some(v.clone());
        }
        if let Some(v) = &self.tenant_id {
            s.tenant_id = Some(v.clone());
        }
        if let Some(v) = self.logged_in {
            s.logged_in = v;
        }
        if let Some(v) = self.mode_of_sale_id {
            s.mode_of_sale_id = Some(v);
        }
        if let Some(v) = self.source_id {
            s.source_id = Some(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed creation time: the model reads no clock of its own.
    const T0: Millis = 1_700_000_000_000;

    #[test]
    fn touch_extends_idle_but_not_past_absolute() {
        let mut s = Session::new(
            "x".into(),
            Flavor::Admin,
            None,
            Duration::from_secs(10),
            Duration::from_secs(15),
            T0,
        );
        let t0 = s.created_at;
        assert_eq!(t0, T0);
        assert_eq!(s.expires_at, t0 + 10_000);
        s.touch(t0 + 8_000);
        assert_eq!(s.expires_at, t0 + 15_000, "capped by the absolute deadline");
        assert_eq!(s.expiry_reason(), EndReason::AbsoluteExpired);
    }

    #[test]
    fn idle_expiry_reason() {
        let s = Session::new(
            "x".into(),
            Flavor::Admin,
            None,
            Duration::from_secs(10),
            Duration::from_secs(100),
            T0,
        );
        assert_eq!(s.expiry_reason(), EndReason::IdleExpired);
        assert!(s.is_live(s.created_at));
        assert!(!s.is_live(s.created_at + 10_000));
    }

    #[test]
    fn fixed_ttl_is_not_touched() {
        let mut s = Session::with_fixed_ttl_at(
            "k".into(),
            Flavor::Voucherify,
            None,
            Duration::from_secs(5),
            T0,
        );
        let end = s.expires_at;
        s.touch(s.created_at + 4_000);
        assert_eq!(s.expires_at, end);
    }

    #[test]
    fn rfc3339_format() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(RFC3339_MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59.999Z");
    }

    /// The `time` crate's formatting of the same instant.
    fn reference_rfc3339(ms: Millis) -> String {
        let format = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .unwrap()
            .format(&format)
            .unwrap()
    }

    proptest::proptest! {
        #[test]
        fn rfc3339_matches_the_time_crate(ms in 0..=RFC3339_MAX) {
            proptest::prop_assert_eq!(rfc3339(ms), reference_rfc3339(ms));
        }

        #[test]
        fn rfc3339_matches_around_day_boundaries(day in 0u64..2_932_897, offset in 0u64..2) {
            let ms = (day * 86_400_000 + offset * 86_399_999).min(RFC3339_MAX);
            proptest::prop_assert_eq!(rfc3339(ms), reference_rfc3339(ms));
        }
    }

    #[test]
    fn ttl_units() {
        assert_eq!(
            TtlUnit::Days.duration(7),
            Some(Duration::from_secs(7 * 86400))
        );
        assert_eq!(
            TtlUnit::Nanoseconds.duration(1500),
            Some(Duration::from_nanos(1500))
        );
        assert_eq!(TtlUnit::Days.duration(u64::MAX), None);
        assert_eq!(TtlUnit::parse("HOURS"), Some(TtlUnit::Hours));
        assert_eq!(TtlUnit::parse("hours"), None);
    }

    #[test]
    fn patch_changes_only_present_values() {
        let mut s = Session::new(
            "x".into(),
            Flavor::KnowledgeCenter,
            None,
            Duration::from_secs(10),
            Duration::from_secs(10),
            T0,
        );
        s.agent_id = Some("a".into());
        SessionPatch {
            customer_id: Some(Some("c".into())),
            ..Default::default()
        }
        .apply(&mut s);
        assert_eq!(s.customer_id.as_deref(), Some("c"));
        assert_eq!(s.agent_id.as_deref(), Some("a"));
        SessionPatch {
            customer_id: Some(None),
            logged_in: Some(false),
            ..Default::default()
        }
        .apply(&mut s);
        assert_eq!(s.customer_id, None);
    }

    #[test]
    fn identity_patch_moves_login_and_keeps_target_values_the_source_lacks() {
        let mut from = Session::new(
            "a".into(),
            Flavor::Tessitura,
            None,
            Duration::from_secs(10),
            Duration::from_secs(10),
            T0,
        );
        from.customer_id = Some("c1".into());
        from.logged_in = true;
        from.visit_id = Some("v1".into());
        from.source_id = Some(77);
        let mut to = Session::new(
            "b".into(),
            Flavor::Tessitura,
            None,
            Duration::from_secs(10),
            Duration::from_secs(10),
            T0,
        );
        to.agent_id = Some("agent".into());
        to.source_id = Some(5);
        SessionPatch::identity_of(&from).apply(&mut to);
        assert_eq!(to.customer_id.as_deref(), Some("c1"));
        assert!(to.logged_in);
        assert_eq!(to.visit_id.as_deref(), Some("v1"));
        assert_eq!(to.agent_id.as_deref(), Some("agent"));
        assert_eq!(
            to.source_id,
            Some(5),
            "mode of sale and source stay the target's own"
        );
    }
}
