//! The one session model every flavour shares (SPEC §3).

use serde::{Deserialize, Serialize};
use std::sync::Arc;
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

/// The values a session rarely has (Tessitura numbers, a Voucherify lock, a grace alias's
/// target): kept out of line, so a session without them pays one pointer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Rare {
    mode_of_sale_id: Option<i64>,
    original_mode_of_sale_id: Option<i64>,
    source_id: Option<i64>,
    lock: Option<Lock>,
    moved_to: Option<Box<str>>,
}

/// A session of any flavour.
///
/// Laid out for the memory store, which holds up to millions (SPEC §7): the id is one shared
/// allocation (the store's table and indexes point at it), owner and application key are
/// interned (`intern`), optional strings are `Box<str>`, the rare values sit behind one box
/// (read and set through accessors). The serde form is the plain record `SessionRecord` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: Arc<str>,
    pub flavor: Flavor,
    pub logged_in: bool,
    /// Name of the credential that created it (`None` when created without one).
    pub owner: Option<Arc<str>>,
    pub application_key: Option<Arc<str>>,
    pub customer_id: Option<Box<str>>,
    pub agent_id: Option<Box<str>>,
    pub visit_id: Option<Box<str>>,
    pub global_visit_id: Option<Box<str>>,
    pub tenant_id: Option<Box<str>>,
    rare: Option<Box<Rare>>,
    pub created_at: Millis,
    pub last_access: Millis,
    pub expires_at: Millis,
    /// Idle timeout in ms; 0 = fixed lifetime (locks, grace aliases): never extended by use.
    pub idle_ms: u64,
    /// `created_at + absolute_timeout`: no use extends a session past this.
    pub absolute_deadline: Millis,
}

/// Interned names stop being interned past this many: owners and application keys come from
/// the configuration, so only a runaway would reach it, and it must not grow without end.
const INTERN_LIMIT: usize = 4096;

/// The shared copy of a credential name or application key: sessions of one owner share one
/// allocation.
pub fn intern(name: &str) -> Arc<str> {
    static NAMES: std::sync::LazyLock<parking_lot::Mutex<std::collections::HashSet<Arc<str>>>> =
        std::sync::LazyLock::new(Default::default);
    let mut names = NAMES.lock();
    if let Some(shared) = names.get(name) {
        return shared.clone();
    }
    let shared: Arc<str> = name.into();
    if names.len() < INTERN_LIMIT {
        names.insert(shared.clone());
    }
    shared
}

/// The serde form of a session (snapshots, the Redis lock record, admin dumps): the field
/// list and order of the original flat struct, so stored data stays readable both ways.
#[derive(Serialize)]
struct SessionRecordRef<'a> {
    id: &'a str,
    flavor: Flavor,
    owner: Option<&'a str>,
    application_key: Option<&'a str>,
    customer_id: Option<&'a str>,
    agent_id: Option<&'a str>,
    visit_id: Option<&'a str>,
    global_visit_id: Option<&'a str>,
    tenant_id: Option<&'a str>,
    logged_in: bool,
    mode_of_sale_id: Option<i64>,
    original_mode_of_sale_id: Option<i64>,
    source_id: Option<i64>,
    lock: Option<&'a Lock>,
    moved_to: Option<&'a str>,
    created_at: Millis,
    last_access: Millis,
    expires_at: Millis,
    idle_ms: u64,
    absolute_deadline: Millis,
}

/// `SessionRecordRef`, owned (deserialising).
#[derive(Deserialize)]
struct SessionRecord {
    id: String,
    flavor: Flavor,
    owner: Option<String>,
    application_key: Option<String>,
    customer_id: Option<Box<str>>,
    agent_id: Option<Box<str>>,
    visit_id: Option<Box<str>>,
    global_visit_id: Option<Box<str>>,
    tenant_id: Option<Box<str>>,
    logged_in: bool,
    mode_of_sale_id: Option<i64>,
    original_mode_of_sale_id: Option<i64>,
    source_id: Option<i64>,
    lock: Option<Lock>,
    moved_to: Option<Box<str>>,
    created_at: Millis,
    last_access: Millis,
    expires_at: Millis,
    idle_ms: u64,
    absolute_deadline: Millis,
}

impl Serialize for Session {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        SessionRecordRef {
            id: &self.id,
            flavor: self.flavor,
            owner: self.owner.as_deref(),
            application_key: self.application_key.as_deref(),
            customer_id: self.customer_id.as_deref(),
            agent_id: self.agent_id.as_deref(),
            visit_id: self.visit_id.as_deref(),
            global_visit_id: self.global_visit_id.as_deref(),
            tenant_id: self.tenant_id.as_deref(),
            logged_in: self.logged_in,
            mode_of_sale_id: self.mode_of_sale_id(),
            original_mode_of_sale_id: self.original_mode_of_sale_id(),
            source_id: self.source_id(),
            lock: self.lock(),
            moved_to: self.moved_to(),
            created_at: self.created_at,
            last_access: self.last_access,
            expires_at: self.expires_at,
            idle_ms: self.idle_ms,
            absolute_deadline: self.absolute_deadline,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Session {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Session, D::Error> {
        let r = SessionRecord::deserialize(deserializer)?;
        let mut s = Session {
            flavor: r.flavor,
            owner: r.owner.as_deref().map(intern),
            application_key: r.application_key.as_deref().map(intern),
            customer_id: r.customer_id,
            agent_id: r.agent_id,
            visit_id: r.visit_id,
            global_visit_id: r.global_visit_id,
            tenant_id: r.tenant_id,
            logged_in: r.logged_in,
            created_at: r.created_at,
            last_access: r.last_access,
            expires_at: r.expires_at,
            idle_ms: r.idle_ms,
            absolute_deadline: r.absolute_deadline,
            ..Session::blank(r.id.into())
        };
        s.set_mode_of_sale_id(r.mode_of_sale_id);
        s.set_original_mode_of_sale_id(r.original_mode_of_sale_id);
        s.set_source_id(r.source_id);
        s.set_lock(r.lock);
        s.set_moved_to(r.moved_to);
        Ok(s)
    }
}

impl Session {
    /// A new session, created at `now`, with no identity that ends after `idle` without use,
    /// or `absolute` at most.
    pub fn new(
        id: Arc<str>,
        flavor: Flavor,
        owner: Option<Arc<str>>,
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
    pub fn blank(id: Arc<str>) -> Session {
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
            rare: None,
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
        id: Arc<str>,
        flavor: Flavor,
        owner: Option<Arc<str>>,
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

    pub fn mode_of_sale_id(&self) -> Option<i64> {
        self.rare.as_ref().and_then(|r| r.mode_of_sale_id)
    }

    pub fn original_mode_of_sale_id(&self) -> Option<i64> {
        self.rare.as_ref().and_then(|r| r.original_mode_of_sale_id)
    }

    pub fn source_id(&self) -> Option<i64> {
        self.rare.as_ref().and_then(|r| r.source_id)
    }

    pub fn lock(&self) -> Option<&Lock> {
        self.rare.as_ref().and_then(|r| r.lock.as_ref())
    }

    /// Set while a transferred-away key is in its grace period: it resolves to this id.
    pub fn moved_to(&self) -> Option<&str> {
        self.rare.as_ref().and_then(|r| r.moved_to.as_deref())
    }

    /// Changes the rare values with `f`; the box goes when none is left.
    fn set_rare(&mut self, f: impl FnOnce(&mut Rare)) {
        let rare = self.rare.get_or_insert_with(Box::default);
        f(rare);
        if **rare == Rare::default() {
            self.rare = None;
        }
    }

    pub fn set_mode_of_sale_id(&mut self, v: Option<i64>) {
        self.set_rare(|r| r.mode_of_sale_id = v);
    }

    pub fn set_original_mode_of_sale_id(&mut self, v: Option<i64>) {
        self.set_rare(|r| r.original_mode_of_sale_id = v);
    }

    pub fn set_source_id(&mut self, v: Option<i64>) {
        self.set_rare(|r| r.source_id = v);
    }

    pub fn set_lock(&mut self, v: Option<Lock>) {
        self.set_rare(|r| r.lock = v);
    }

    pub fn set_moved_to(&mut self, v: Option<Box<str>>) {
        self.set_rare(|r| r.moved_to = v);
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
        let owned = |v: &Option<Box<str>>| v.as_deref().map(str::to_string);
        SessionPatch {
            customer_id: Some(owned(&s.customer_id)),
            agent_id: owned(&s.agent_id),
            visit_id: owned(&s.visit_id),
            global_visit_id: owned(&s.global_visit_id),
            tenant_id: owned(&s.tenant_id),
            logged_in: Some(s.logged_in),
            mode_of_sale_id: None,
            source_id: None,
        }
    }

    pub fn apply(&self, s: &mut Session) {
        let boxed = |v: &str| Some(Box::<str>::from(v));
        if let Some(c) = &self.customer_id {
            s.customer_id = c.as_deref().and_then(boxed);
        }
        if let Some(v) = &self.agent_id {
            s.agent_id = boxed(v);
        }
        if let Some(v) = &self.visit_id {
            s.visit_id = boxed(v);
        }
        if let Some(v) = &self.global_visit_id {
            s.global_visit_id = boxed(v);
        }
        if let Some(v) = &self.tenant_id {
            s.tenant_id = boxed(v);
        }
        if let Some(v) = self.logged_in {
            s.logged_in = v;
        }
        if let Some(v) = self.mode_of_sale_id {
            s.set_mode_of_sale_id(Some(v));
        }
        if let Some(v) = self.source_id {
            s.set_source_id(Some(v));
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

    /// The serde form is the flat record of every earlier release (snapshots, Redis lock
    /// records): same fields, same order, absent values as null.
    #[test]
    fn serde_form_is_the_flat_record() {
        let mut s = Session::new(
            "k".into(),
            Flavor::Tessitura,
            Some(intern("web")),
            Duration::from_secs(10),
            Duration::from_secs(20),
            T0,
        );
        s.customer_id = Some("c".into());
        s.set_mode_of_sale_id(Some(-3));
        s.set_lock(Some(Lock {
            holds: vec![CodeHold {
                code: "C".into(),
                quantity: 1,
                credits: 2,
                points: -4,
            }],
            ttl: 7,
            ttl_unit: TtlUnit::Days,
        }));
        s.set_moved_to(Some("m".into()));
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"id":"k","flavor":"tessitura","owner":"web","application_key":null,"#,
                r#""customer_id":"c","agent_id":null,"visit_id":null,"global_visit_id":null,"#,
                r#""tenant_id":null,"logged_in":false,"mode_of_sale_id":-3,"#,
                r#""original_mode_of_sale_id":null,"source_id":null,"lock":{"holds":"#,
                r#"[{"code":"C","quantity":1,"credits":2,"points":-4}],"ttl":7,"ttl_unit":"DAYS"},"#,
                r#""moved_to":"m","created_at":1700000000000,"last_access":1700000000000,"#,
                r#""expires_at":1700000010000,"idle_ms":10000,"absolute_deadline":1700000020000}"#
            )
        );
        let back: Session = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert!(
            Arc::ptr_eq(back.owner.as_ref().unwrap(), s.owner.as_ref().unwrap()),
            "interned"
        );
        // Clearing every rare value drops their box: a plain session compares equal again.
        let mut plain = back.clone();
        plain.set_mode_of_sale_id(None);
        plain.set_lock(None);
        plain.set_moved_to(None);
        assert_eq!(plain.rare, None);
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
        from.set_source_id(Some(77));
        let mut to = Session::new(
            "b".into(),
            Flavor::Tessitura,
            None,
            Duration::from_secs(10),
            Duration::from_secs(10),
            T0,
        );
        to.agent_id = Some("agent".into());
        to.set_source_id(Some(5));
        SessionPatch::identity_of(&from).apply(&mut to);
        assert_eq!(to.customer_id.as_deref(), Some("c1"));
        assert!(to.logged_in);
        assert_eq!(to.visit_id.as_deref(), Some("v1"));
        assert_eq!(to.agent_id.as_deref(), Some("agent"));
        assert_eq!(
            to.source_id(),
            Some(5),
            "mode of sale and source stay the target's own"
        );
    }
}
