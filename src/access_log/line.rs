//! Access-log and audit lines (SPEC §13.5), as JSON or nginx's `combined`. Everything here is
//! already fit for a log: paths redacted and without query, sessions as `id::tag`.

use crate::config::AccessLogFormat;
use crate::session::audit::AuditEvent;
use crate::session::id::tag;
use crate::session::{rfc3339, Millis};
use serde::Serialize;
use std::net::IpAddr;

/// One request, as its access-log line tells it.
#[derive(Debug, Serialize)]
pub struct Request<'a> {
    /// RFC 3339 UTC with milliseconds (when the request finished).
    pub ts: String,
    pub method: &'a str,
    /// Without query string; segments long enough to be ids cut to 8 characters.
    pub path: String,
    pub status: u16,
    /// `session_api` | `forward` | `rejected`.
    pub kind: &'a str,
    /// The route's `path_prefix`, or the flavour endpoint's template.
    pub route: Option<&'a str>,
    pub flavor: Option<&'a str>,
    pub duration_ms: f64,
    /// Time from choosing the upstream to its answer's header (forwarded requests only).
    pub upstream_ms: Option<f64>,
    pub bytes_in: usize,
    pub bytes_out: usize,
    /// Written as text (`"127.0.0.1"`), like every other field.
    pub client_ip: Option<IpAddr>,
    /// `id::tag` of the session the request used.
    pub session: Option<String>,
    /// Name of the credential presented, if valid.
    pub credential: Option<&'a str>,
    pub trace_id: Option<&'a str>,
    /// `HTTP/1.1` | `HTTP/2` (`HTTP/1.0` for such clients).
    pub protocol: &'a str,
}

impl Request<'_> {
    pub fn format(&self, format: AccessLogFormat) -> String {
        match format {
            AccessLogFormat::Json => {
                // Sized for a typical line, so it is written without growing.
                let mut out = Vec::with_capacity(512);
                match serde_json::to_writer(&mut out, self) {
                    // serde_json writes UTF-8 only.
                    Ok(()) => String::from_utf8(out).unwrap_or_default(),
                    Err(_) => String::new(),
                }
            }
            AccessLogFormat::Combined => self.combined(),
        }
    }

    /// nginx's `combined`: `$remote_addr - $remote_user [$time_local] "$request" $status
    /// $body_bytes_sent "$http_referer" "$http_user_agent"`. The user is never written (it
    /// would be a credential), nor the referer (a URL that may carry ids) or the user agent.
    fn combined(&self) -> String {
        let ip = self
            .client_ip
            .map_or_else(|| "-".to_string(), |ip| ip.to_string());
        format!(
            "{} - - [{}] \"{} {} {}\" {} {} \"-\" \"-\"",
            ip,
            clf_time(&self.ts),
            self.method,
            self.path,
            self.protocol,
            self.status,
            self.bytes_out
        )
    }
}

#[derive(Serialize)]
struct Audit<'a> {
    ts: String,
    kind: &'static str,
    event: &'static str,
    actor: Option<&'a str>,
    flavor: &'static str,
    session: String,
    new_session: Option<String>,
    customer: Option<String>,
}

/// An audit event as one JSON line, whatever the request lines' format: `jq` reads both.
pub fn audit(event: &AuditEvent<'_>, now: Millis, _format: AccessLogFormat) -> String {
    let line = Audit {
        ts: rfc3339(now),
        kind: "audit",
        event: event.action.as_str(),
        actor: event.actor,
        flavor: event.flavor.as_str(),
        session: tag(event.session_id),
        new_session: event.new_session_id.map(tag),
        customer: event.customer_id.map(tag),
    };
    serde_json::to_string(&line).unwrap_or_default()
}

/// `2026-12-04T10:00:00.123Z` as the common log format's `04/Dec/2026:10:00:00 +0000`.
fn clf_time(rfc: &str) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = rfc
        .get(5..7)
        .and_then(|m| m.parse::<usize>().ok())
        .and_then(|m| MONTHS.get(m.wrapping_sub(1)))
        .copied()
        .unwrap_or("Jan");
    match (rfc.get(0..4), rfc.get(8..10), rfc.get(11..19)) {
        (Some(y), Some(d), Some(t)) => format!("{d}/{month}/{y}:{t} +0000"),
        _ => rfc.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::audit::AuditAction;
    use crate::session::Flavor;

    fn request() -> Request<'static> {
        Request {
            ts: rfc3339(1_764_842_400_123),
            method: "GET",
            path: "/account/x".into(),
            status: 200,
            kind: "forward",
            route: Some("/account/"),
            flavor: None,
            duration_ms: 1.5,
            upstream_ms: Some(1.0),
            bytes_in: 0,
            bytes_out: 42,
            client_ip: Some(IpAddr::from([127, 0, 0, 1])),
            session: Some(tag("s")),
            credential: Some("web"),
            trace_id: None,
            protocol: "HTTP/1.1",
        }
    }

    #[test]
    fn json_lines_carry_every_field() {
        let v: serde_json::Value =
            serde_json::from_str(&request().format(AccessLogFormat::Json)).unwrap();
        for k in [
            "ts",
            "method",
            "path",
            "status",
            "kind",
            "route",
            "flavor",
            "duration_ms",
            "upstream_ms",
            "bytes_in",
            "bytes_out",
            "client_ip",
            "session",
            "credential",
            "trace_id",
            "protocol",
        ] {
            assert!(v.get(k).is_some(), "{k} missing");
        }
        assert_eq!(v["ts"], "2025-12-04T10:00:00.123Z");
        assert_eq!(v["session"].as_str().unwrap().len(), 8);
    }

    #[test]
    fn combined_is_nginx_shaped() {
        assert_eq!(
            request().format(AccessLogFormat::Combined),
            "127.0.0.1 - - [04/Dec/2025:10:00:00 +0000] \"GET /account/x HTTP/1.1\" 200 42 \"-\" \"-\""
        );
    }

    #[test]
    fn audit_lines_hash_ids() {
        let e = AuditEvent {
            action: AuditAction::Rotated,
            actor: None,
            flavor: Flavor::KnowledgeCenter,
            session_id: "0123456789abcdef",
            new_session_id: Some("fedcba9876543210"),
            customer_id: Some("cust-1"),
        };
        let text = audit(&e, 0, AccessLogFormat::Json);
        assert!(!text.contains("0123456789abcdef") && !text.contains("cust-1"));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["kind"], "audit");
        assert_eq!(v["event"], "rotated");
        assert_eq!(v["session"], tag("0123456789abcdef"));
        assert_eq!(v["new_session"], tag("fedcba9876543210"));
    }
}
