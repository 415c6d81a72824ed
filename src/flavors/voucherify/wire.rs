//! Voucherify's wire codec (SPEC §4.4, §12, §13.7), pure: which endpoint a path is, the
//! validation and redemption requests (JSON bodies and the legacy client-side query forms),
//! and every answer the sidecar writes in Voucherify's shape (errors with a request id, the
//! sold-out `valid: false` answers, the `session` object added to the app's answer, the
//! `X-Session-*` / `X-Locked-*` request headers). No service, no pingora.

use crate::api::ApiResponse;
use crate::session::id::is_valid_client_id;
use crate::session::{CodeHold, LockedTotals, TtlUnit};
use http::header::{HeaderName, HeaderValue};
use http::Method;
use percent_encoding::percent_decode_str;
use serde::Serialize;
use serde_json::{Map, Value};
use std::time::Duration;

/// Default lock lifetime when the request names none: 7 DAYS.
const DEFAULT_TTL: u64 = 7;
const DEFAULT_TTL_UNIT: TtlUnit = TtlUnit::Days;
/// Longest voucher code accepted (it travels in request headers).
const MAX_CODE_LEN: usize = 256;

const SESSION_KEY: HeaderName = HeaderName::from_static("x-session-key");
const SESSION_TYPE: HeaderName = HeaderName::from_static("x-session-type");
const LOCKED_QUANTITY: HeaderName = HeaderName::from_static("x-locked-quantity");
const LOCKED_CREDITS: HeaderName = HeaderName::from_static("x-locked-credits");
const LOCKED_POINTS: HeaderName = HeaderName::from_static("x-locked-points");

/// Headers only the sidecar may send the app on inspected requests: client copies always go.
pub(super) fn lock_header_names() -> Vec<HeaderName> {
    vec![
        SESSION_KEY,
        SESSION_TYPE,
        LOCKED_QUANTITY,
        LOCKED_CREDITS,
        LOCKED_POINTS,
    ]
}

// ------------------------------------------------------------------------------------------
// Paths

/// Which of this API's paths a request is for (paths relative to the base, still encoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Endpoint<'p> {
    /// `/v1/vouchers/{code}/sessions/{key}`: answered here.
    Release { code: &'p str, key: &'p str },
    /// `/v1/validations`, `/client/v1/validations`, `/v1/vouchers/{code}/validate`.
    Validation { code: Option<&'p str> },
    /// `/v1/redemptions`, `/client/v1/redemptions`, `/v1/vouchers/{code}/redemption`.
    Redemption { code: Option<&'p str> },
    /// `/client/v1/validate?code=…&session_type=LOCK&…`: the legacy client-side validation,
    /// its session in the query.
    LegacyValidate,
    /// `/client/v1/redeem?code=…`: the legacy client-side redemption.
    LegacyRedeem,
}

impl Endpoint<'_> {
    /// Whether a sold-out answer takes the stacked shape (`inapplicable_redeemables`) rather
    /// than the single voucher one.
    fn is_stacked(&self) -> bool {
        matches!(self, Endpoint::Validation { code: None })
    }
}

/// Whether `path` lies under the API's `/v1/` or `/client/v1/`: such requests are credential
/// checked whatever the endpoint (SPEC §13.7).
pub(super) fn is_api_path(path: &str) -> bool {
    ["/v1", "/client/v1"].iter().any(|prefix| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

pub(super) fn endpoint(path: &str) -> Option<Endpoint<'_>> {
    // A trailing slash must not let a validation slip past the lock.
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let segments: Vec<&str> = trimmed.split('/').collect();
    match segments.as_slice() {
        ["", "v1", "validations"] | ["", "client", "v1", "validations"] => {
            Some(Endpoint::Validation { code: None })
        }
        ["", "v1", "redemptions"] | ["", "client", "v1", "redemptions"] => {
            Some(Endpoint::Redemption { code: None })
        }
        ["", "v1", "vouchers", code, "validate"] if !code.is_empty() => {
            Some(Endpoint::Validation { code: Some(code) })
        }
        ["", "v1", "vouchers", code, "redemption"] if !code.is_empty() => {
            Some(Endpoint::Redemption { code: Some(code) })
        }
        ["", "client", "v1", "validate"] => Some(Endpoint::LegacyValidate),
        ["", "client", "v1", "redeem"] => Some(Endpoint::LegacyRedeem),
        // No trailing-slash leniency here: the release path must match exactly.
        ["", "v1", "vouchers", code, "sessions", key]
            if !code.is_empty() && !key.is_empty() && trimmed == path =>
        {
            Some(Endpoint::Release { code, key })
        }
        _ => None,
    }
}

pub(super) fn decode_segment(segment: &str) -> String {
    percent_decode_str(segment).decode_utf8_lossy().into_owned()
}

// ------------------------------------------------------------------------------------------
// Request bodies

/// A validation's `session` object, checked, with the codes the request holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRequest {
    /// The client's key, when it sent one.
    pub key: Option<String>,
    pub ttl: u64,
    pub ttl_unit: TtlUnit,
    pub duration: Duration,
    /// One per code, in order of first mention.
    pub holds: Vec<CodeHold>,
}

/// A redemption carrying `session.key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedeemRequest {
    pub key: String,
    /// The codes redeemed, in order of first mention.
    pub codes: Vec<String>,
}

/// What is wrong with a request body (the `details` of a 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadInput(pub String);

fn bad<T>(details: impl Into<String>) -> Result<T, BadInput> {
    Err(BadInput(details.into()))
}

/// The body as a JSON object; `None` for an empty body or `null` (nothing to inspect).
fn body_object(body: &[u8]) -> Result<Option<Map<String, Value>>, BadInput> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(Value::Null) => Ok(None),
        Ok(_) => bad("The request body must be a JSON object."),
        Err(e) => bad(format!("The request body is not valid JSON: {e}.")),
    }
}

/// The `session` object of a body, if it has one (`null` counts as none).
fn session_object(obj: &Map<String, Value>) -> Result<Option<&Map<String, Value>>, BadInput> {
    match obj.get("session") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(s)) => Ok(Some(s)),
        Some(_) => bad("session must be an object."),
    }
}

/// `session.type`, which must be `LOCK` when `required` or present.
fn check_type(session: &Map<String, Value>, required: bool) -> Result<(), BadInput> {
    match session.get("type") {
        Some(Value::String(t)) if t == "LOCK" => Ok(()),
        None | Some(Value::Null) if !required => Ok(()),
        None | Some(Value::Null) => bad("session.type is required; the supported type is LOCK."),
        Some(_) => bad("session.type must be LOCK."),
    }
}

/// `session.key`: absent, or an acceptable client id.
fn session_key(session: &Map<String, Value>) -> Result<Option<String>, BadInput> {
    match session.get("key") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(k)) if is_valid_client_id(k) => Ok(Some(k.clone())),
        Some(Value::String(_)) => {
            bad("session.key must be 1 to 256 characters of A-Z a-z 0-9 . _ ~ + / = -.")
        }
        Some(_) => bad("session.key must be a string."),
    }
}

/// A TTL as sent: a whole number, or a fractional one (the Python SDK types it as a float).
#[derive(Debug, Clone, Copy, PartialEq)]
enum TtlValue {
    Whole(u64),
    Fraction(f64),
}

impl TtlValue {
    /// A JSON number; `None` for one that is not > 0.
    fn of_json(v: &Value) -> Option<TtlValue> {
        match v.as_u64() {
            Some(n) => Some(TtlValue::Whole(n)),
            None => Self::of_float(v.as_f64()?),
        }
    }

    /// A query parameter's text (the legacy client-side validation).
    fn of_text(text: &str) -> Option<TtlValue> {
        let text = text.trim();
        match text.parse::<u64>() {
            Ok(n) => Some(TtlValue::Whole(n)),
            Err(_) => Self::of_float(text.parse().ok()?),
        }
    }

    fn of_float(f: f64) -> Option<TtlValue> {
        if !f.is_finite() {
            return None;
        }
        // Integral floats below 2^64 convert exactly enough for a TTL.
        Some(if f >= 0.0 && f.fract() == 0.0 && f < u64::MAX as f64 {
            TtlValue::Whole(f as u64)
        } else {
            TtlValue::Fraction(f)
        })
    }
}

/// A lock's lifetime from the request's `ttl` and `ttl_unit` (either may be absent): the ttl
/// and unit to echo, and the duration. A fractional ttl is rounded to the millisecond and
/// echoed in MILLISECONDS; it must still be > 0 (SPEC §13.7). Units ignore case.
fn lock_lifetime(
    ttl: Option<TtlValue>,
    unit: Option<&str>,
    max_ttl: Duration,
    names: (&str, &str),
) -> Result<(u64, TtlUnit, Duration), BadInput> {
    let (ttl_name, unit_name) = names;
    let unit = match unit {
        None => DEFAULT_TTL_UNIT,
        Some(u) => match TtlUnit::parse(&u.trim().to_ascii_uppercase()) {
            Some(unit) => unit,
            None => {
                return bad(format!(
                    "{unit_name} must be one of DAYS, HOURS, MINUTES, SECONDS, MILLISECONDS, MICROSECONDS, NANOSECONDS."
                ))
            }
        },
    };
    let positive = || BadInput(format!("{ttl_name} must be a number greater than 0."));
    let (ttl, unit, duration) = match ttl {
        None => (DEFAULT_TTL, unit, unit.duration(DEFAULT_TTL)),
        Some(TtlValue::Whole(0)) => return Err(positive()),
        Some(TtlValue::Whole(n)) => (n, unit, unit.duration(n)),
        Some(TtlValue::Fraction(f)) => {
            let nanos_per_unit = unit.duration(1).map_or(0.0, |d| d.as_nanos() as f64);
            let millis = (f * nanos_per_unit / 1e6).round();
            if millis.is_nan() || millis < 1.0 {
                return Err(positive());
            }
            // Anything past u64 milliseconds is far beyond any max_ttl.
            let millis = if millis < u64::MAX as f64 {
                millis as u64
            } else {
                u64::MAX
            };
            (
                millis,
                TtlUnit::Milliseconds,
                Some(Duration::from_millis(millis)),
            )
        }
    };
    match duration {
        Some(d) if d <= max_ttl => Ok((ttl, unit, d)),
        _ => bad(format!(
            "{ttl_name} must not exceed the maximum session lifetime of {} seconds.",
            max_ttl.as_secs()
        )),
    }
}

/// A whole number ≥ 0 (credits, points).
fn amount(v: &Value, what: &str) -> Result<i64, BadInput> {
    match v.as_i64() {
        Some(n) if n >= 0 => Ok(n),
        _ => match v.as_f64() {
            Some(f) if f >= 0.0 && f.fract() == 0.0 && f < i64::MAX as f64 => Ok(f as i64),
            _ => bad(format!("{what} must be a whole number of at least 0.")),
        },
    }
}

/// `obj[outer][inner]` as an amount, 0 when absent.
fn nested_amount(
    obj: &Map<String, Value>,
    outer: &str,
    inner: &str,
    what: &str,
) -> Result<i64, BadInput> {
    match obj.get(outer) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Object(o)) => match o.get(inner) {
            None | Some(Value::Null) => Ok(0),
            Some(v) => amount(v, what),
        },
        Some(_) => bad(format!(
            "{} must be an object.",
            what.rsplit_once('.').map_or(what, |(head, _)| head)
        )),
    }
}

/// Whether a voucher code can be held and reported in `X-Locked-*`: visible ASCII without
/// `,` and `=`, which separate codes in those headers.
fn is_valid_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= MAX_CODE_LEN
        && code
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b',' && b != b'=')
}

fn check_code(code: &str, what: &str) -> Result<(), BadInput> {
    if is_valid_code(code) {
        Ok(())
    } else {
        bad(format!(
            "{what} must be 1 to {MAX_CODE_LEN} visible ASCII characters without ',' or '='."
        ))
    }
}

/// Adds one mention of `code` to `holds` (merging repeated codes, first mention first).
fn hold(holds: &mut Vec<CodeHold>, code: &str, credits: i64, points: i64) {
    if let Some(h) = holds.iter_mut().find(|h| h.code == code) {
        h.quantity += 1;
        h.credits = h.credits.saturating_add(credits);
        h.points = h.points.saturating_add(points);
    } else {
        holds.push(CodeHold {
            code: code.to_string(),
            quantity: 1,
            credits,
            points,
        });
    }
}

/// The codes a request holds: the path's `{code}` (with top-level `gift.credits` and
/// `reward.points`, the legacy per-voucher body), then each `redeemables[]` entry with
/// `"object":"voucher"` (its `id`, `gift.credits`, and `reward.points` or `loyalty_card.points`).
fn holds(obj: &Map<String, Value>, path_code: Option<&str>) -> Result<Vec<CodeHold>, BadInput> {
    let mut out = Vec::new();
    if let Some(code) = path_code {
        check_code(code, "The voucher code in the path")?;
        let credits = nested_amount(obj, "gift", "credits", "gift.credits")?;
        let points = nested_amount(obj, "reward", "points", "reward.points")?;
        hold(&mut out, code, credits, points);
    }
    let items = match obj.get("redeemables") {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Array(items)) => items,
        Some(_) => return bad("redeemables must be an array."),
    };
    for (i, item) in items.iter().enumerate() {
        let Value::Object(item) = item else {
            return bad(format!("redeemables[{i}] must be an object."));
        };
        match item.get("object") {
            Some(Value::String(o)) if o == "voucher" => {}
            // Promotion tiers and the like hold no voucher quantity.
            Some(Value::String(_)) => continue,
            _ => return bad(format!("redeemables[{i}].object must be a string.")),
        }
        let Some(Value::String(code)) = item.get("id") else {
            return bad(format!("redeemables[{i}].id must be a string."));
        };
        check_code(code, &format!("redeemables[{i}].id"))?;
        let credits = nested_amount(
            item,
            "gift",
            "credits",
            &format!("redeemables[{i}].gift.credits"),
        )?;
        let mut points = nested_amount(
            item,
            "reward",
            "points",
            &format!("redeemables[{i}].reward.points"),
        )?;
        if !matches!(item.get("reward"), Some(Value::Object(r)) if r.get("points").is_some_and(|p| !p.is_null()))
        {
            points = nested_amount(
                item,
                "loyalty_card",
                "points",
                &format!("redeemables[{i}].loyalty_card.points"),
            )?;
        }
        hold(&mut out, code, credits, points);
    }
    Ok(out)
}

/// Parses a validation body: `Ok(None)` when it carries no `session` (forwarded as it is).
pub fn parse_validation(
    body: &[u8],
    path_code: Option<&str>,
    max_ttl: Duration,
) -> Result<Option<LockRequest>, BadInput> {
    let Some(obj) = body_object(body)? else {
        return Ok(None);
    };
    let Some(session) = session_object(&obj)? else {
        return Ok(None);
    };
    check_type(session, true)?;
    let key = session_key(session)?;
    let ttl = match session.get("ttl") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Number(_)) => match TtlValue::of_json(v) {
            Some(t) => Some(t),
            None => return bad("session.ttl must be a number greater than 0."),
        },
        Some(_) => return bad("session.ttl must be a number."),
    };
    let unit = match session.get("ttl_unit") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) => Some(u.as_str()),
        Some(_) => return bad("session.ttl_unit must be a string."),
    };
    let (ttl, ttl_unit, duration) =
        lock_lifetime(ttl, unit, max_ttl, ("session.ttl", "session.ttl_unit"))?;
    let holds = holds(&obj, path_code)?;
    Ok(Some(LockRequest {
        key,
        ttl,
        ttl_unit,
        duration,
        holds,
    }))
}

/// Parses the query of a legacy client-side validation
/// (`code`, `session_type`, `session_key`, `session_ttl`, `session_ttl_unit`): `Ok(None)`
/// when it asks for no session (forwarded as it is).
pub fn parse_legacy_validation(
    query: Option<&str>,
    max_ttl: Duration,
) -> Result<Option<LockRequest>, BadInput> {
    let param = |name: &str| query.and_then(|q| crate::api::query_param(q, name));
    match param("session_type").as_deref() {
        None => return Ok(None),
        Some("LOCK") => {}
        Some(_) => return bad("session_type must be LOCK."),
    }
    let key = match param("session_key") {
        None => None,
        Some(k) if is_valid_client_id(&k) => Some(k),
        Some(_) => {
            return bad("session_key must be 1 to 256 characters of A-Z a-z 0-9 . _ ~ + / = -.")
        }
    };
    let ttl = match param("session_ttl") {
        None => None,
        Some(t) => match TtlValue::of_text(&t) {
            Some(t) => Some(t),
            None => return bad("session_ttl must be a number greater than 0."),
        },
    };
    let unit = param("session_ttl_unit");
    let (ttl, ttl_unit, duration) = lock_lifetime(
        ttl,
        unit.as_deref(),
        max_ttl,
        ("session_ttl", "session_ttl_unit"),
    )?;
    let Some(code) = param("code") else {
        return bad("code is required to lock a voucher.");
    };
    check_code(&code, "code")?;
    let mut holds = Vec::new();
    hold(&mut holds, &code, 0, 0);
    Ok(Some(LockRequest {
        key,
        ttl,
        ttl_unit,
        duration,
        holds,
    }))
}

/// Parses a legacy client-side redemption (`POST /client/v1/redeem?code=…`): the session is
/// the body's `session.key`, else the query's `session_key`. `Ok(None)` when there is none.
pub fn parse_legacy_redemption(
    query: Option<&str>,
    body: &[u8],
) -> Result<Option<RedeemRequest>, BadInput> {
    let param = |name: &str| query.and_then(|q| crate::api::query_param(q, name));
    let code = param("code");
    if let Some(code) = &code {
        check_code(code, "code")?;
    }
    if let Some(redeem) = parse_redemption(body, code.as_deref())? {
        return Ok(Some(redeem));
    }
    match param("session_key") {
        None => Ok(None),
        Some(key) if is_valid_client_id(&key) => Ok(Some(RedeemRequest {
            key,
            codes: code.into_iter().collect(),
        })),
        Some(_) => bad("session_key must be 1 to 256 characters of A-Z a-z 0-9 . _ ~ + / = -."),
    }
}

/// Parses a redemption body: `Ok(None)` when it carries no `session.key`.
pub fn parse_redemption(
    body: &[u8],
    path_code: Option<&str>,
) -> Result<Option<RedeemRequest>, BadInput> {
    let Some(obj) = body_object(body)? else {
        return Ok(None);
    };
    let Some(session) = session_object(&obj)? else {
        return Ok(None);
    };
    check_type(session, false)?;
    let Some(key) = session_key(session)? else {
        return Ok(None);
    };
    let codes = holds(&obj, path_code)?
        .into_iter()
        .map(|h| h.code)
        .collect();
    Ok(Some(RedeemRequest { key, codes }))
}

/// What an inspected request asks of the lock store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Inspected {
    /// A validation with `session`: take the lock. `stacked`: a sold-out answer takes the
    /// stacked shape.
    Lock { lock: LockRequest, stacked: bool },
    /// A redemption with `session.key`: release the lock once the app accepts it.
    Redeem(RedeemRequest),
    /// Nothing to lock or release: forwarded as it is.
    Plain,
}

/// Whether an inspected request's body is parsed (so must have been read in full).
pub(super) fn reads_body(method: &Method, endpoint: Option<&Endpoint<'_>>) -> bool {
    *method == Method::POST
        && matches!(
            endpoint,
            Some(
                Endpoint::Validation { .. } | Endpoint::Redemption { .. } | Endpoint::LegacyRedeem
            )
        )
}

/// Parses an inspected request to `endpoint` (`None`: any other path under the API).
pub(super) fn inspect(
    method: &Method,
    endpoint: Option<Endpoint<'_>>,
    query: Option<&str>,
    body: &[u8],
    max_ttl: Duration,
) -> Result<Inspected, BadInput> {
    let lock = |lock: Option<LockRequest>, stacked| match lock {
        Some(lock) => Inspected::Lock { lock, stacked },
        None => Inspected::Plain,
    };
    let redeem = |r: Option<RedeemRequest>| r.map_or(Inspected::Plain, Inspected::Redeem);
    match (method.clone(), endpoint) {
        (Method::POST, Some(e @ Endpoint::Validation { code })) => {
            let code = code.map(decode_segment);
            parse_validation(body, code.as_deref(), max_ttl).map(|l| lock(l, e.is_stacked()))
        }
        (Method::GET, Some(Endpoint::LegacyValidate)) => {
            parse_legacy_validation(query, max_ttl).map(|l| lock(l, false))
        }
        (Method::POST, Some(Endpoint::Redemption { code })) => {
            let code = code.map(decode_segment);
            parse_redemption(body, code.as_deref()).map(redeem)
        }
        (Method::POST, Some(Endpoint::LegacyRedeem)) => {
            parse_legacy_redemption(query, body).map(redeem)
        }
        _ => Ok(Inspected::Plain),
    }
}

// ------------------------------------------------------------------------------------------
// Answers in Voucherify's shape

const JSON_UTF8: &str = "application/json; charset=utf-8";

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Voucherify's error shape, fields in its order. `request_id` is what the SDKs expose as
/// `VoucherifyError.request_id` (SPEC §13.7).
#[derive(Serialize)]
struct ErrorBody<'a> {
    code: u16,
    key: &'a str,
    message: &'a str,
    details: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

/// A new request id in Voucherify's style (`v-` and hex), for an answer the sidecar writes.
fn new_request_id() -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("v-{}", &hex[..20])
}

/// `body` as JSON with the request id also in `X-Request-Id`.
fn with_request_id(status: u16, body: &impl Serialize, request_id: &str) -> ApiResponse {
    let response = ApiResponse::json_with_type(status, body, JSON_UTF8);
    match HeaderValue::from_str(request_id) {
        Ok(v) => response.with_header(REQUEST_ID, v),
        Err(_) => response,
    }
}

pub(super) fn error(
    status: u16,
    key: &str,
    message: &str,
    details: impl Into<String>,
) -> ApiResponse {
    let request_id = new_request_id();
    let body = ErrorBody {
        code: status,
        key,
        message,
        details: details.into(),
        request_id: Some(&request_id),
    };
    with_request_id(status, &body, &request_id)
}

pub(super) const QUANTITY_EXCEEDED: &str = "quantity_exceeded";
const QUANTITY_EXCEEDED_MESSAGE: &str = "Quantity exceeded";

fn quantity_details(code: &str) -> String {
    format!("Voucher {code} has no redemption quantity left to lock.")
}

/// Voucherify's default stacking rules, which the SDKs require on every stacked validation
/// answer (the Python models refuse one without `stacking_rules`).
fn default_stacking_rules() -> Value {
    serde_json::json!({
        "redeemables_limit": 30,
        "applicable_redeemables_limit": 5,
        "applicable_redeemables_per_category_limit": 1,
        "applicable_exclusive_redeemables_limit": 1,
        "applicable_exclusive_redeemables_per_category_limit": 1,
        "exclusive_categories": [],
        "joint_categories": [],
        "redeemables_application_mode": "ALL",
        "redeemables_sorting_rule": "REQUESTED_ORDER",
        "redeemables_products_application_mode": "STACK",
        "redeemables_no_effect_rule": "REDEEM_ANYWAY",
        "no_effect_skip_categories": [],
        "no_effect_redeem_anyway_categories": [],
        "redeemables_rollback_order_mode": "WITH_ORDER"
    })
}

/// The answer to a validation whose lock cannot be taken (SPEC §13.7): 200 with
/// `valid: false`, as Voucherify answers a validation that fails, in the endpoint's own shape.
/// Stacked: every refused code under `inapplicable_redeemables`; single voucher: the code
/// with `reason` and `error`.
pub(super) fn sold_out(stacked: bool, refused: &[String]) -> ApiResponse {
    let request_id = new_request_id();
    let error_of = |code: &str| {
        serde_json::json!({
            "code": 400,
            "key": QUANTITY_EXCEEDED,
            "message": QUANTITY_EXCEEDED_MESSAGE,
            "details": quantity_details(code),
            "request_id": request_id,
        })
    };
    let body = if stacked {
        let inapplicable: Vec<Value> = refused
            .iter()
            .map(|code| {
                serde_json::json!({
                    "status": "INAPPLICABLE",
                    "id": code,
                    "object": "voucher",
                    "result": {
                        "error": error_of(code),
                        "details": {"message": QUANTITY_EXCEEDED_MESSAGE, "key": QUANTITY_EXCEEDED},
                    },
                })
            })
            .collect();
        serde_json::json!({
            "valid": false,
            "redeemables": [],
            "inapplicable_redeemables": inapplicable,
            "tracking_id": null,
            "stacking_rules": default_stacking_rules(),
        })
    } else {
        let code = refused.first().map_or("", String::as_str);
        serde_json::json!({
            "valid": false,
            "code": code,
            "reason": "quantity exceeded",
            "error": error_of(code),
            "tracking_id": null,
        })
    };
    with_request_id(200, &body, &request_id)
}

pub(super) fn invalid_payload(e: BadInput) -> ApiResponse {
    error(400, "invalid_payload", "Invalid payload", e.0)
}

/// The 401 for a request without valid credentials (`missing`: none were presented).
pub(super) fn unauthorized(missing: bool) -> ApiResponse {
    let details = if missing {
        "Missing credentials: send X-App-Id and X-App-Token, X-Client-Application-Id and X-Client-Token, or Authorization: Bearer."
    } else {
        "The presented credentials are not valid."
    };
    error(401, "unauthorized", "Unauthorized", details)
}

pub(super) fn store_unavailable() -> ApiResponse {
    error(
        503,
        "service_unavailable",
        "Service unavailable",
        "The session store is unavailable; retry later.",
    )
}

pub(super) fn too_large(limit: usize) -> ApiResponse {
    error(
        413,
        "payload_too_large",
        "Payload too large",
        format!("The request body is larger than {limit} bytes."),
    )
}

/// An inspected body sent without a length (chunked): it cannot be read and still forwarded.
pub(super) fn length_required() -> ApiResponse {
    error(
        411,
        "length_required",
        "Length required",
        "Send the request body with a Content-Length.",
    )
}

pub(super) fn release_not_allowed() -> ApiResponse {
    error(
        405,
        "method_not_allowed",
        "Method not allowed",
        "Use DELETE to release a session.",
    )
    .with_header(http::header::ALLOW, HeaderValue::from_static("DELETE"))
}

pub(super) fn unknown_endpoint() -> ApiResponse {
    error(404, "not_found", "Resource not found", "Unknown endpoint.")
}

/// A validation's key names a live session that is not a lock.
pub(super) fn key_in_use() -> ApiResponse {
    error(
        409,
        "duplicate_found",
        "Duplicated resource found",
        "The session key is in use by another kind of session.",
    )
}

/// The release endpoint's 404, whose body SPEC §4.4 fixes exactly (the conformance suite
/// compares it whole): its request id travels only in `X-Request-Id`.
pub(super) fn not_found(key: &str) -> ApiResponse {
    let request_id = new_request_id();
    let body = ErrorBody {
        code: 404,
        key: "not_found",
        message: "Resource not found",
        details: format!("Cannot find session with key {key}"),
        request_id: None,
    };
    with_request_id(404, &body, &request_id)
}

/// The `session` object of a validation answer, as JSON text in Voucherify's field order.
pub(super) fn session_answer(key: &str, ttl: u64, unit: TtlUnit) -> String {
    format!(
        r#"{{"key":{},"type":"LOCK","ttl":{ttl},"ttl_unit":"{}"}}"#,
        Value::from(key),
        unit.as_str()
    )
}

/// The app's 2xx answer with `session` added when it has none at the top level. Non-JSON
/// answers (and answers that already carry a `session` object) are left alone (`None`).
/// The app's bytes are kept as they are; the member is inserted before the closing brace.
pub(super) fn inject_session(
    content_type: Option<&str>,
    body: &[u8],
    session: &str,
) -> Option<Vec<u8>> {
    if content_type.is_some() && !crate::api::is_json(content_type) {
        return None;
    }
    let Value::Object(mut obj) = serde_json::from_slice::<Value>(body).ok()? else {
        return None;
    };
    match obj.get("session") {
        Some(Value::Object(_)) => None,
        Some(_) => {
            // `"session": null` or another non-object: replace it (duplicate keys are not JSON).
            obj.insert("session".to_string(), serde_json::from_str(session).ok()?);
            serde_json::to_vec(&obj).ok()
        }
        None => {
            let close = body.iter().rposition(|b| *b == b'}')?;
            let mut out = Vec::with_capacity(body.len() + 96);
            out.extend_from_slice(&body[..close]);
            if !obj.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(b"\"session\":");
            out.extend_from_slice(session.as_bytes());
            out.extend_from_slice(&body[close..]);
            Some(out)
        }
    }
}

/// `X-Locked-*` values: one code as a plain number, several as `CODE=n, CODE=n`, none as `0`.
fn locked_value<T: std::fmt::Display>(codes: &[String], values: &[T]) -> String {
    match (codes, values) {
        ([_], [v]) => v.to_string(),
        _ if codes.is_empty() => "0".to_string(),
        _ => codes
            .iter()
            .zip(values)
            .map(|(c, v)| format!("{c}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The headers a forwarded validation or redemption with a session carries.
pub(super) fn session_headers(
    key: &str,
    codes: &[String],
    others: &[LockedTotals],
) -> Vec<(HeaderName, HeaderValue)> {
    let quantity: Vec<u64> = others.iter().map(|t| t.quantity).collect();
    let credits: Vec<i64> = others.iter().map(|t| t.credits).collect();
    let points: Vec<i64> = others.iter().map(|t| t.points).collect();
    [
        (SESSION_KEY, key.to_string()),
        (SESSION_TYPE, "LOCK".to_string()),
        (LOCKED_QUANTITY, locked_value(codes, &quantity)),
        (LOCKED_CREDITS, locked_value(codes, &credits)),
        (LOCKED_POINTS, locked_value(codes, &points)),
    ]
    .into_iter()
    // Keys and codes are checked to be visible ASCII, so every value converts.
    .filter_map(|(name, value)| HeaderValue::from_str(&value).ok().map(|v| (name, v)))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const MAX: Duration = Duration::from_secs(30 * 86_400);

    fn lock(body: Value) -> Result<Option<LockRequest>, BadInput> {
        parse_validation(body.to_string().as_bytes(), None, MAX)
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            endpoint("/v1/validations"),
            Some(Endpoint::Validation { code: None })
        );
        assert_eq!(
            endpoint("/v1/validations/"),
            Some(Endpoint::Validation { code: None })
        );
        assert_eq!(
            endpoint("/client/v1/validations"),
            Some(Endpoint::Validation { code: None })
        );
        assert_eq!(
            endpoint("/v1/vouchers/A%2DB/validate"),
            Some(Endpoint::Validation {
                code: Some("A%2DB")
            })
        );
        assert_eq!(
            endpoint("/v1/redemptions"),
            Some(Endpoint::Redemption { code: None })
        );
        assert_eq!(
            endpoint("/client/v1/redemptions"),
            Some(Endpoint::Redemption { code: None })
        );
        assert_eq!(
            endpoint("/v1/vouchers/X/redemption"),
            Some(Endpoint::Redemption { code: Some("X") })
        );
        assert_eq!(
            endpoint("/v1/vouchers/X/sessions/ssn_k%2B1"),
            Some(Endpoint::Release {
                code: "X",
                key: "ssn_k%2B1"
            })
        );
        for other in [
            "/v1/vouchers/X/sessions/k/",
            "/v1/vouchers//validate",
            "/v1/vouchers/X/sessions/",
            "/v1/vouchers/X",
            "/v1/validationsx",
            "/v2/validations",
            "/client/v1/vouchers/X/sessions/k",
            "",
            "/",
        ] {
            assert_eq!(endpoint(other), None, "{other}");
        }
    }

    #[test]
    fn no_session_means_plain() {
        assert_eq!(
            lock(json!({"redeemables": [{"object": "voucher", "id": "A"}]})),
            Ok(None)
        );
        assert_eq!(lock(json!({"session": null})), Ok(None));
        assert_eq!(
            parse_validation(b"null", None, MAX),
            Ok(None),
            "null is no body"
        );
        assert_eq!(parse_validation(b"", None, MAX), Ok(None));
        assert_eq!(parse_validation(b"  \n", None, MAX), Ok(None));
    }

    #[test]
    fn defaults_are_seven_days() {
        let l = lock(json!({"session": {"type": "LOCK"}})).unwrap().unwrap();
        assert_eq!((l.key, l.ttl, l.ttl_unit), (None, 7, TtlUnit::Days));
        assert_eq!(l.duration, Duration::from_secs(7 * 86_400));
        assert!(l.holds.is_empty());
    }

    #[test]
    fn every_unit() {
        let expected = [
            ("DAYS", TtlUnit::Days, Duration::from_secs(2 * 86_400)),
            ("HOURS", TtlUnit::Hours, Duration::from_secs(2 * 3_600)),
            ("MINUTES", TtlUnit::Minutes, Duration::from_secs(120)),
            ("SECONDS", TtlUnit::Seconds, Duration::from_secs(2)),
            (
                "MILLISECONDS",
                TtlUnit::Milliseconds,
                Duration::from_millis(2),
            ),
            (
                "MICROSECONDS",
                TtlUnit::Microseconds,
                Duration::from_micros(2),
            ),
            ("NANOSECONDS", TtlUnit::Nanoseconds, Duration::from_nanos(2)),
        ];
        for (name, unit, duration) in expected {
            let l = lock(json!({"session": {"type": "LOCK", "ttl": 2, "ttl_unit": name}}))
                .unwrap()
                .unwrap();
            assert_eq!(
                (l.ttl, l.ttl_unit, l.duration),
                (2, unit, duration),
                "{name}"
            );
        }
        let l = lock(json!({"session": {"type": "LOCK", "ttl": 3.0, "ttl_unit": "HOURS"}}))
            .unwrap()
            .unwrap();
        assert_eq!(l.ttl, 3);
    }

    #[test]
    fn fractional_ttls_round_to_milliseconds_and_units_ignore_case() {
        let cases = [
            (json!(1.5), json!("SECONDS"), 1_500),
            (json!(0.25), json!("minutes"), 15_000),
            (json!(2.0004), json!("Seconds"), 2_000),
            (json!(1.5), json!("MILLISECONDS"), 2),
            (json!(1500.4), json!("microseconds"), 2),
            (json!(0.5), Value::Null, 43_200_000),
        ];
        for (ttl, unit, millis) in cases {
            let l = lock(json!({"session": {"type": "LOCK", "ttl": ttl, "ttl_unit": unit}}))
                .unwrap()
                .unwrap();
            assert_eq!(
                (l.ttl, l.ttl_unit, l.duration),
                (millis, TtlUnit::Milliseconds, Duration::from_millis(millis)),
                "{ttl} {unit}"
            );
        }
        let l = lock(json!({"session": {"type": "LOCK", "ttl": 3, "ttl_unit": "hours"}}))
            .unwrap()
            .unwrap();
        assert_eq!(
            (l.ttl, l.ttl_unit),
            (3, TtlUnit::Hours),
            "whole ttls keep their unit"
        );
        let l =
            lock(json!({"session": {"type": "LOCK", "key": null, "ttl": null, "ttl_unit": null}}))
                .unwrap()
                .unwrap();
        assert_eq!(
            (l.key, l.ttl, l.ttl_unit),
            (None, 7, TtlUnit::Days),
            "null is absent"
        );
    }

    #[test]
    fn legacy_client_validations() {
        let p = |q: &str| parse_legacy_validation(Some(q), MAX);
        assert_eq!(p("code=A"), Ok(None), "no session_type, no lock");
        assert_eq!(parse_legacy_validation(None, MAX), Ok(None));
        let l = p("code=SUMMER&session_type=LOCK&session_key=k%2B1%2F%3D&session_ttl=1.5&session_ttl_unit=minutes")
            .unwrap()
            .unwrap();
        assert_eq!(l.key.as_deref(), Some("k+1/="));
        assert_eq!((l.ttl, l.ttl_unit), (90_000, TtlUnit::Milliseconds));
        assert_eq!(
            l.holds
                .iter()
                .map(|h| (h.code.as_str(), h.quantity))
                .collect::<Vec<_>>(),
            vec![("SUMMER", 1)]
        );
        let l = p("session_type=LOCK&code=A").unwrap().unwrap();
        assert_eq!((l.key, l.ttl, l.ttl_unit), (None, 7, TtlUnit::Days));
        let l = p("session_type=LOCK&code=A&session_ttl=20&session_ttl_unit=SECONDS")
            .unwrap()
            .unwrap();
        assert_eq!(l.duration, Duration::from_secs(20));
        for bad in [
            "session_type=LOCK",
            "session_type=HOLD&code=A",
            "session_type=LOCK&code=A&session_ttl=0",
            "session_type=LOCK&code=A&session_ttl=x",
            "session_type=LOCK&code=A&session_ttl=NaN",
            "session_type=LOCK&code=A&session_ttl=inf",
            "session_type=LOCK&code=A&session_ttl=-1",
            "session_type=LOCK&code=A&session_ttl_unit=WEEKS",
            "session_type=LOCK&code=A&session_ttl=31&session_ttl_unit=DAYS",
            "session_type=LOCK&code=A&session_key=a%20b",
            "session_type=LOCK&code=A%2CB",
            "session_type=LOCK&code=%0D%0A",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn legacy_client_redemptions() {
        let r = parse_legacy_redemption(Some("code=A&session_key=k1"), b"")
            .unwrap()
            .unwrap();
        assert_eq!((r.key.as_str(), r.codes), ("k1", vec!["A".to_string()]));
        let r = parse_legacy_redemption(
            Some("code=A&session_key=query-key"),
            br#"{"session":{"key":"body-key"}}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.key, "body-key", "the body's session wins");
        assert_eq!(parse_legacy_redemption(Some("code=A"), b"{}"), Ok(None));
        assert_eq!(parse_legacy_redemption(None, b""), Ok(None));
        assert!(parse_legacy_redemption(Some("code=A&session_key=a%20b"), b"").is_err());
        assert!(parse_legacy_redemption(Some("code=A%3DB&session_key=k"), b"").is_err());
        assert!(parse_legacy_redemption(Some("code=A"), b"{oops").is_err());
    }

    #[test]
    fn api_paths() {
        for p in [
            "/v1",
            "/v1/",
            "/v1/anything",
            "/client/v1",
            "/client/v1/validate",
            "/v1/vouchers/X/sessions/k/",
        ] {
            assert!(is_api_path(p), "{p}");
        }
        for p in [
            "",
            "/",
            "/v10/x",
            "/v2/v1/x",
            "/client/v2/x",
            "/clients/v1/x",
            "/V1/x",
        ] {
            assert!(!is_api_path(p), "{p}");
        }
        assert_eq!(
            endpoint("/client/v1/validate"),
            Some(Endpoint::LegacyValidate)
        );
        assert_eq!(endpoint("/client/v1/redeem/"), Some(Endpoint::LegacyRedeem));
        assert!(Endpoint::Validation { code: None }.is_stacked());
        assert!(!Endpoint::Validation { code: Some("A") }.is_stacked());
        assert!(!Endpoint::LegacyValidate.is_stacked());
    }

    fn answer_json(r: &ApiResponse) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    fn request_id_header(r: &ApiResponse) -> String {
        r.headers
            .iter()
            .find(|(k, _)| k == REQUEST_ID)
            .map(|(_, v)| v.to_str().unwrap().to_string())
            .expect("X-Request-Id")
    }

    #[test]
    fn sold_out_answers_in_each_shape() {
        let r = sold_out(true, &["A".into(), "B".into()]);
        assert_eq!(r.status, 200);
        let b = answer_json(&r);
        let id = request_id_header(&r);
        assert!(id.starts_with("v-") && id.len() == 22, "{id}");
        assert_eq!(b["valid"], false);
        assert_eq!(b["redeemables"], json!([]));
        assert_eq!(b["tracking_id"], Value::Null);
        assert_eq!(b["stacking_rules"]["redeemables_limit"], 30);
        assert_eq!(b["stacking_rules"]["redeemables_application_mode"], "ALL");
        let items = b["inapplicable_redeemables"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        for (item, code) in items.iter().zip(["A", "B"]) {
            assert_eq!(item["status"], "INAPPLICABLE");
            assert_eq!(item["id"], code);
            assert_eq!(item["object"], "voucher");
            assert_eq!(item["result"]["error"]["code"], 400);
            assert_eq!(item["result"]["error"]["key"], "quantity_exceeded");
            assert_eq!(item["result"]["error"]["request_id"], id.as_str());
            assert_eq!(item["result"]["details"]["key"], "quantity_exceeded");
        }
        let r = sold_out(false, &["SUMMER".into()]);
        let b = answer_json(&r);
        assert_eq!(r.status, 200);
        assert_eq!(
            (b["valid"].clone(), b["code"].clone(), b["reason"].clone()),
            (json!(false), json!("SUMMER"), json!("quantity exceeded"))
        );
        assert_eq!(b["error"]["key"], "quantity_exceeded");
        assert_eq!(b["error"]["code"], 400);
        assert_eq!(b["error"]["request_id"], request_id_header(&r).as_str());
        assert!(b.get("inapplicable_redeemables").is_none());
    }

    #[test]
    fn every_error_carries_a_request_id() {
        let r = error(401, "unauthorized", "Unauthorized", "no");
        let b = answer_json(&r);
        assert_eq!(b["request_id"], request_id_header(&r).as_str());
        let text = String::from_utf8(r.body.to_vec()).unwrap();
        assert!(
            text.starts_with(r#"{"code":401,"key":"unauthorized","message":"Unauthorized","details":"no","request_id":"v-"#),
            "Voucherify's field order: {text}"
        );
        let other = answer_json(&error(401, "unauthorized", "Unauthorized", "no"));
        assert_ne!(b["request_id"], other["request_id"], "one id per answer");
    }

    #[test]
    fn bad_sessions_are_refused() {
        let bad = [
            json!({"session": "LOCK"}),
            json!({"session": {}}),
            json!({"session": {"type": "HOLD"}}),
            json!({"session": {"type": 1}}),
            json!({"session": {"type": "LOCK", "ttl": 0}}),
            json!({"session": {"type": "LOCK", "ttl": -1}}),
            json!({"session": {"type": "LOCK", "ttl": 0.0001, "ttl_unit": "SECONDS"}}),
            json!({"session": {"type": "LOCK", "ttl": 1.5, "ttl_unit": "NANOSECONDS"}}),
            json!({"session": {"type": "LOCK", "ttl": -0.5}}),
            json!({"session": {"type": "LOCK", "ttl": 30.5, "ttl_unit": "DAYS"}}),
            json!({"session": {"type": "LOCK", "ttl": "5"}}),
            json!({"session": {"type": "LOCK", "ttl": 31, "ttl_unit": "DAYS"}}),
            json!({"session": {"type": "LOCK", "ttl": 2_592_001, "ttl_unit": "SECONDS"}}),
            json!({"session": {"type": "LOCK", "ttl": u64::MAX, "ttl_unit": "DAYS"}}),
            json!({"session": {"type": "LOCK", "ttl": 1e300}}),
            json!({"session": {"type": "LOCK", "ttl_unit": "WEEKS"}}),
            json!({"session": {"type": "LOCK", "ttl_unit": "day"}}),
            json!({"session": {"type": "LOCK", "ttl_unit": 3}}),
            json!({"session": {"type": "LOCK", "key": "bad key"}}),
            json!({"session": {"type": "LOCK", "key": ""}}),
            json!({"session": {"type": "LOCK", "key": "k".repeat(257)}}),
            json!({"session": {"type": "LOCK", "key": 12}}),
            json!({"session": {"type": "LOCK"}, "redeemables": {}}),
            json!({"session": {"type": "LOCK"}, "redeemables": ["A"]}),
            json!({"session": {"type": "LOCK"}, "redeemables": [{"object": "voucher"}]}),
            json!({"session": {"type": "LOCK"}, "redeemables": [{"object": "voucher", "id": 5}]}),
            json!({"session": {"type": "LOCK"}, "redeemables": [{"id": "A"}]}),
            json!({"session": {"type": "LOCK"}, "redeemables": [{"object": "voucher", "id": "A,B=1"}]}),
            json!({"session": {"type": "LOCK"}, "redeemables": [{"object": "voucher", "id": "A\r\nX: y"}]}),
            json!({"session": {"type": "LOCK"}, "redeemables": [{"object": "voucher", "id": "A", "gift": {"credits": -5}}]}),
            json!({"session": {"type": "LOCK"}, "redeemables": [{"object": "voucher", "id": "A", "gift": {"credits": "5"}}]}),
            json!({"session": {"type": "LOCK"}, "redeemables": [{"object": "voucher", "id": "A", "gift": 5}]}),
            json!({"session": {"type": "LOCK"}, "redeemables": [{"object": "voucher", "id": "A", "reward": {"points": 0.5}}]}),
        ];
        for body in bad {
            assert!(lock(body.clone()).is_err(), "{body}");
        }
        for raw in [
            &b"{"[..],
            b"[1]",
            b"\"x\"",
            b"{\"session\":{\"type\":\"LOCK\"}",
            b"\xff",
        ] {
            assert!(
                parse_validation(raw, None, MAX).is_err(),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn client_keys_are_kept() {
        let l = lock(json!({"session": {"type": "LOCK", "key": "ssn_my.key-1+/="}}))
            .unwrap()
            .unwrap();
        assert_eq!(l.key.as_deref(), Some("ssn_my.key-1+/="));
        assert!(
            lock(json!({"session": {"type": "LOCK", "key": "k".repeat(256)}}))
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn codes_credits_and_points() {
        let l = parse_validation(
            json!({
                "session": {"type": "LOCK"},
                "gift": {"credits": 7},
                "redeemables": [
                    {"object": "voucher", "id": "B", "gift": {"credits": 500}},
                    {"object": "promotion_tier", "id": "promo_1"},
                    {"object": "voucher", "id": "C", "reward": {"points": 40}},
                    {"object": "voucher", "id": "B", "gift": {"credits": 100}},
                    {"object": "voucher", "id": "D", "loyalty_card": {"points": 3}},
                ]
            })
            .to_string()
            .as_bytes(),
            Some("A"),
            MAX,
        )
        .unwrap()
        .unwrap();
        let got: Vec<(&str, u64, i64, i64)> = l
            .holds
            .iter()
            .map(|h| (h.code.as_str(), h.quantity, h.credits, h.points))
            .collect();
        assert_eq!(
            got,
            vec![
                ("A", 1, 7, 0),
                ("B", 2, 600, 0),
                ("C", 1, 0, 40),
                ("D", 1, 0, 3)
            ]
        );
    }

    #[test]
    fn redemptions() {
        let r = parse_redemption(
            json!({"session": {"type": "LOCK", "key": "k1"}, "redeemables": [{"object": "voucher", "id": "A"}]})
                .to_string()
                .as_bytes(),
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            r,
            RedeemRequest {
                key: "k1".into(),
                codes: vec!["A".into()]
            }
        );
        let r = parse_redemption(
            json!({"session": {"key": "k1"}}).to_string().as_bytes(),
            Some("P"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.codes, vec!["P".to_string()]);
        assert_eq!(
            parse_redemption(
                json!({"session": {"type": "LOCK"}}).to_string().as_bytes(),
                None
            ),
            Ok(None)
        );
        assert_eq!(parse_redemption(b"{}", None), Ok(None));
        assert!(parse_redemption(
            json!({"session": {"key": "a b"}}).to_string().as_bytes(),
            None
        )
        .is_err());
        assert!(parse_redemption(
            json!({"session": {"key": "k", "type": "X"}})
                .to_string()
                .as_bytes(),
            None
        )
        .is_err());
        assert!(parse_redemption(b"nope", None).is_err());
    }

    #[test]
    fn locked_header_values() {
        let one = vec!["A".to_string()];
        let two = vec!["A".to_string(), "B".to_string()];
        assert_eq!(locked_value(&one, &[3u64]), "3");
        assert_eq!(locked_value(&two, &[1u64, 0]), "A=1, B=0");
        assert_eq!(locked_value::<u64>(&[], &[]), "0");
        let t = |q, c, p| LockedTotals {
            quantity: q,
            credits: c,
            points: p,
        };
        let h = session_headers("ssn_x", &two, &[t(1, 500, 0), t(0, 0, 40)]);
        let get = |n: &HeaderName| {
            h.iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.to_str().unwrap().to_string())
        };
        assert_eq!(get(&SESSION_KEY).as_deref(), Some("ssn_x"));
        assert_eq!(get(&SESSION_TYPE).as_deref(), Some("LOCK"));
        assert_eq!(get(&LOCKED_QUANTITY).as_deref(), Some("A=1, B=0"));
        assert_eq!(get(&LOCKED_CREDITS).as_deref(), Some("A=500, B=0"));
        assert_eq!(get(&LOCKED_POINTS).as_deref(), Some("A=0, B=40"));
    }

    #[test]
    fn session_injection() {
        let s = session_answer("ssn_k", 7, TtlUnit::Days);
        let expected = json!({"key": "ssn_k", "type": "LOCK", "ttl": 7, "ttl_unit": "DAYS"});
        let out = inject_session(
            Some("application/json"),
            br#"{"valid":true , "b": [1]}  "#,
            &s,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"valid":true , "b": [1],"session":{"key":"ssn_k","type":"LOCK","ttl":7,"ttl_unit":"DAYS"}}  "#
        );
        let out = inject_session(None, b"{}", &s).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["session"], expected);
        let null = inject_session(
            Some("application/json; charset=utf-8"),
            br#"{"session":null,"a":1}"#,
            &s,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&null).unwrap();
        assert_eq!((v["session"].clone(), v["a"].clone()), (expected, json!(1)));
        // Keys needing escapes stay valid JSON.
        let odd = session_answer("a\"b", 1, TtlUnit::Seconds);
        assert_eq!(serde_json::from_str::<Value>(&odd).unwrap()["key"], "a\"b");
        assert_eq!(
            inject_session(
                Some("application/json"),
                br#"{"session":{"key":"app"}}"#,
                &s
            ),
            None
        );
        assert_eq!(inject_session(Some("text/plain"), b"{}", &s), None);
        assert_eq!(inject_session(Some("application/json"), b"[1]", &s), None);
        assert_eq!(inject_session(Some("application/json"), b"{oops", &s), None);
    }

    #[test]
    fn generated_keys() {
        let k = crate::session::id::new_lock_key();
        assert!(
            k.starts_with("ssn_")
                && k.len() == 36
                && k[4..].bytes().all(|b| b.is_ascii_alphanumeric())
        );
        assert!(is_valid_client_id(&k));
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            prop_oneof![
                Just("LOCK".to_string()),
                Just("voucher".to_string()),
                Just("DAYS".to_string()),
                Just("NANOSECONDS".to_string()),
                "\\PC{0,12}",
            ]
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let keys = prop_oneof![
                Just("session".to_string()),
                Just("type".to_string()),
                Just("key".to_string()),
                Just("ttl".to_string()),
                Just("ttl_unit".to_string()),
                Just("redeemables".to_string()),
                Just("object".to_string()),
                Just("id".to_string()),
                Just("gift".to_string()),
                Just("credits".to_string()),
                Just("reward".to_string()),
                Just("points".to_string()),
                Just("loyalty_card".to_string()),
                "[a-z]{1,6}",
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(keys, inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn parsers_never_panic_on_json(v in json_value(), code in proptest::option::of("\\PC{0,10}")) {
            let body = v.to_string();
            if let Ok(Some(l)) = parse_validation(body.as_bytes(), code.as_deref(), MAX) {
                prop_assert!(l.ttl > 0 && l.duration <= MAX);
                prop_assert!(l.key.as_deref().is_none_or(is_valid_client_id));
                prop_assert!(l.holds.iter().all(|h| is_valid_code(&h.code) && h.quantity > 0 && h.credits >= 0 && h.points >= 0));
            }
            let _ = parse_redemption(body.as_bytes(), code.as_deref());
        }

        #[test]
        fn legacy_parsers_never_panic(query in "[a-z_=&%0-9A-F.+/-]{0,80}") {
            if let Ok(Some(l)) = parse_legacy_validation(Some(&query), MAX) {
                prop_assert!(l.ttl > 0 && l.duration <= MAX);
                prop_assert_eq!(l.holds.len(), 1);
            }
            let _ = parse_legacy_redemption(Some(&query), query.as_bytes());
        }

        #[test]
        fn parsers_never_panic_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_validation(&bytes, None, MAX);
            let _ = parse_redemption(&bytes, None);
            let _ = inject_session(None, &bytes, "{}");
        }
    }
}
