//! How sessions and their indexes are laid out in Redis: key names (with the hash tags that
//! decide cluster slots) and the session hash's fields.
//!
//! A session is a hash with one field per value, so scripts can change single fields (touch,
//! patch) without decoding anything, and absent values are absent fields.

use crate::session::{intern, Flavor, Lock, Millis, Session};
use redis::Value;

/// Key names under one `key_prefix`.
///
/// * `{prefix}s:{<id>}` session hash (tag: the id, so sessions spread over the cluster)
/// * `{prefix}c:{<customer>}` customer index, `{prefix}a:{<app>}` application index: sorted
///   sets of ids scored by the session's absolute deadline
/// * `{prefix}x:{<flavor>}` expiry index: members `ad\nid\napp\ncustomer`, scored by
///   `expires_at`, kept current by touch; swept to account for expirations
/// * `{prefix}{locks}…` lock records, per-code holdings and the lock expiry set, all in one slot
/// * `{prefix}invalidate` the pub/sub channel of near-cache invalidations
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    pub fn session(&self, id: &str) -> String {
        format!("{}s:{{{id}}}", self.prefix)
    }

    pub fn customer(&self, customer: &str) -> String {
        format!("{}c:{{{customer}}}", self.prefix)
    }

    pub fn application(&self, app: &str) -> String {
        format!("{}a:{{{app}}}", self.prefix)
    }

    pub fn expiry(&self, flavor: Flavor) -> String {
        format!("{}x:{{{}}}", self.prefix, flavor.as_str())
    }

    pub fn lock(&self, id: &str) -> String {
        format!("{}{{locks}}l:{id}", self.prefix)
    }

    pub fn lock_expiry(&self) -> String {
        format!("{}{{locks}}e", self.prefix)
    }

    /// Holdings of one code are `hold_prefix() + code`.
    pub fn hold_prefix(&self) -> String {
        format!("{}{{locks}}h:", self.prefix)
    }

    pub fn channel(&self) -> String {
        format!("{}invalidate", self.prefix)
    }

    /// The marker that tells a Redis which lost its data from one that kept it (see
    /// `background::check_epoch`).
    pub fn epoch(&self) -> String {
        format!("{}epoch", self.prefix)
    }

    /// A key for the start-up permission probe (its own slot).
    pub fn probe(&self) -> String {
        format!("{}{{probe}}", self.prefix)
    }
}

/// The member of a session in its flavour's expiry index. It carries what the sweeper needs
/// to account for an expiry and to clean the other indexes once the session hash is gone.
pub fn expiry_member(s: &Session) -> String {
    format!(
        "{}\n{}\n{}\n{}",
        s.absolute_deadline,
        s.id,
        s.application_key.as_deref().unwrap_or(""),
        s.customer_id.as_deref().unwrap_or("")
    )
}

/// What an expiry-index member says about an ended session.
#[derive(Debug, PartialEq, Eq)]
pub struct ExpiredMember<'a> {
    pub absolute_deadline: Millis,
    pub id: &'a str,
    pub application_key: Option<&'a str>,
    pub customer_id: Option<&'a str>,
}

pub fn parse_expiry_member(m: &str) -> Option<ExpiredMember<'_>> {
    let mut parts = m.splitn(4, '\n');
    let absolute_deadline = parts.next()?.parse().ok()?;
    let id = parts.next()?;
    let app = parts.next()?;
    let customer = parts.next()?;
    Some(ExpiredMember {
        absolute_deadline,
        id,
        application_key: (!app.is_empty()).then_some(app),
        customer_id: (!customer.is_empty()).then_some(customer),
    })
}

/// Whether a session takes part in the indexes and metrics: grace aliases do not (the memory
/// store does not count them either).
pub fn is_indexed(s: &Session) -> bool {
    s.moved_to().is_none()
}

fn flavor_from(s: &str) -> Option<Flavor> {
    Flavor::ALL.into_iter().find(|f| f.as_str() == s)
}

/// The hash fields of a session, as `field, value, field, value, …`.
pub fn to_fields(s: &Session) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(40);
    let mut put = |k: &str, v: String| {
        out.push(k.to_string());
        out.push(v);
    };
    put("f", s.flavor.as_str().to_string());
    let optional = [
        ("o", s.owner.as_deref()),
        ("ak", s.application_key.as_deref()),
        ("c", s.customer_id.as_deref()),
        ("ag", s.agent_id.as_deref()),
        ("v", s.visit_id.as_deref()),
        ("gv", s.global_visit_id.as_deref()),
        ("t", s.tenant_id.as_deref()),
        ("mv", s.moved_to()),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            put(k, v.to_string());
        }
    }
    put("li", if s.logged_in { "1" } else { "0" }.to_string());
    for (k, v) in [
        ("ms", s.mode_of_sale_id()),
        ("oms", s.original_mode_of_sale_id()),
        ("src", s.source_id()),
    ] {
        if let Some(v) = v {
            put(k, v.to_string());
        }
    }
    if let Some(lock) = s.lock() {
        // Serializing our own plain struct cannot fail.
        put("lk", serde_json::to_string(lock).unwrap_or_default());
    }
    put("ca", s.created_at.to_string());
    put("la", s.last_access.to_string());
    put("ea", s.expires_at.to_string());
    put("im", s.idle_ms.to_string());
    put("ad", s.absolute_deadline.to_string());
    out
}

pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// A reply as a list of strings (an array of bulk strings); `None` for nil.
pub fn strings(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(items) | Value::Set(items) => items.iter().map(text).collect(),
        Value::Map(pairs) => pairs.iter().flat_map(|(k, v)| [text(k), text(v)]).collect(),
        _ => None,
    }
}

/// A reply as an integer.
pub fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => text(other)?.parse().ok(),
    }
}

/// The session with this id from its hash fields (`HGETALL` or a script's reply). `None`
/// for nil, an empty reply (no such key) or a hash that is not a complete session.
pub fn from_reply(id: &str, v: &Value) -> Option<Session> {
    let flat = strings(v)?;
    if flat.is_empty() {
        return None;
    }
    from_fields(id, &flat)
}

pub fn from_fields(id: &str, flat: &[String]) -> Option<Session> {
    let mut s = Session::blank(id.into());
    let mut seen_flavor = false;
    let mut seen_expiry = false;
    for pair in flat.chunks_exact(2) {
        let (k, v) = (pair[0].as_str(), pair[1].clone());
        match k {
            "f" => {
                s.flavor = flavor_from(&v)?;
                seen_flavor = true;
            }
            "o" => s.owner = Some(intern(&v)),
            "ak" => s.application_key = Some(intern(&v)),
            "c" => s.customer_id = Some(v.into()),
            "ag" => s.agent_id = Some(v.into()),
            "v" => s.visit_id = Some(v.into()),
            "gv" => s.global_visit_id = Some(v.into()),
            "t" => s.tenant_id = Some(v.into()),
            "mv" => s.set_moved_to(Some(v.into())),
            "li" => s.logged_in = v == "1",
            "ms" => s.set_mode_of_sale_id(v.parse().ok()),
            "oms" => s.set_original_mode_of_sale_id(v.parse().ok()),
            "src" => s.set_source_id(v.parse().ok()),
            "lk" => s.set_lock(serde_json::from_str::<Lock>(&v).ok()),
            "ca" => s.created_at = v.parse().ok()?,
            "la" => s.last_access = v.parse().ok()?,
            "ea" => {
                s.expires_at = v.parse().ok()?;
                seen_expiry = true;
            }
            "im" => s.idle_ms = v.parse().ok()?,
            "ad" => s.absolute_deadline = v.parse().ok()?,
            _ => {}
        }
    }
    (seen_flavor && seen_expiry).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{now_millis, CodeHold, TtlUnit};
    use std::time::Duration;

    fn full() -> Session {
        let mut s = Session::new(
            "id-1".into(),
            Flavor::Tessitura,
            Some("web".into()),
            Duration::from_secs(60),
            Duration::from_secs(600),
            now_millis(),
        );
        s.application_key = Some("app".into());
        s.customer_id = Some("cust 1".into());
        s.agent_id = Some("ag".into());
        s.visit_id = Some("v".into());
        s.global_visit_id = Some("gv".into());
        s.tenant_id = Some("t".into());
        s.logged_in = true;
        s.set_mode_of_sale_id(Some(-3));
        s.set_original_mode_of_sale_id(Some(4));
        s.set_source_id(Some(0));
        s.set_moved_to(Some("new".into()));
        s.set_lock(Some(Lock {
            holds: vec![CodeHold {
                code: "A B".into(),
                quantity: 2,
                credits: -5,
                points: 7,
            }],
            ttl: 7,
            ttl_unit: TtlUnit::Days,
        }));
        s
    }

    #[test]
    fn fields_round_trip() {
        for s in [
            full(),
            Session::new(
                "x".into(),
                Flavor::Admin,
                None,
                Duration::from_secs(1),
                Duration::from_secs(2),
                now_millis(),
            ),
        ] {
            let back = from_fields(&s.id, &to_fields(&s)).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn incomplete_or_foreign_hashes_are_not_sessions() {
        assert_eq!(from_reply("x", &Value::Nil), None);
        assert_eq!(from_reply("x", &Value::Array(vec![])), None);
        let only_flavor = vec!["f".to_string(), "admin".to_string()];
        assert_eq!(from_fields("x", &only_flavor), None);
        let mut bad = to_fields(&full());
        bad[1] = "nonsense".into();
        assert_eq!(from_fields("x", &bad), None);
        let mut bad_time = to_fields(&full());
        let at = bad_time.iter().position(|k| k == "ea").unwrap();
        bad_time[at + 1] = "soon".into();
        assert_eq!(from_fields("x", &bad_time), None);
    }

    #[test]
    fn expiry_members_round_trip() {
        let s = full();
        let m = expiry_member(&s);
        let parsed = parse_expiry_member(&m).unwrap();
        assert_eq!(parsed.id, "id-1");
        assert_eq!(parsed.absolute_deadline, s.absolute_deadline);
        assert_eq!(parsed.application_key, Some("app"));
        assert_eq!(parsed.customer_id, Some("cust 1"));
        let bare = Session::new(
            "y".into(),
            Flavor::Admin,
            None,
            Duration::from_secs(1),
            Duration::from_secs(1),
            now_millis(),
        );
        let member = expiry_member(&bare);
        let parsed = parse_expiry_member(&member).map(|m| (m.application_key, m.customer_id));
        assert_eq!(parsed, Some((None, None)));
        assert_eq!(parse_expiry_member("garbage"), None);
        assert_eq!(parse_expiry_member("x\ny\n\n"), None);
    }

    #[test]
    fn keys_share_slots_where_scripts_need_it() {
        let k = Keys::new("p:");
        assert_eq!(k.session("a+b/="), "p:s:{a+b/=}");
        let tag = |key: &str| key[key.find('{').unwrap() + 1..key.find('}').unwrap()].to_string();
        assert_eq!(tag(&k.lock("x")), "locks");
        assert_eq!(tag(&k.lock_expiry()), "locks");
        assert_eq!(tag(&format!("{}CODE", k.hold_prefix())), "locks");
    }
}
