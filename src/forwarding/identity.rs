//! Identity headers (SPEC §6): removed from every client request, then set from the live
//! session, optionally signed so the app can reject requests that bypassed the sidecar.

use crate::config::IdentityHeaderSettings;
use crate::session::Session;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::header::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use pingora::Result;
use sha2::Sha256;
use std::sync::Arc;

pub struct IdentityHeaders {
    settings: IdentityHeaderSettings,
    /// Every configured name, stripped from all client requests.
    strip: Vec<HeaderName>,
    /// Bit `n` set when some name in `strip` is `n` bytes long (names of 64 bytes or more set
    /// bit 63): a request with no header of those lengths carries none of them.
    strip_lengths: u64,
    /// The names as pingora writes them, built once: inserting a `HeaderName` would build
    /// this spelling again for every header of every request.
    wire: WireNames,
}

/// `IdentityHeaderSettings`' names in the bytes that go on the wire (lower case, as before).
struct WireNames {
    session_id: Option<Bytes>,
    customer_id: Option<Bytes>,
    agent_id: Option<Bytes>,
    visit_id: Option<Bytes>,
    global_visit_id: Option<Bytes>,
    application_key: Option<Bytes>,
    logged_in: Option<Bytes>,
    credential: Option<Bytes>,
    signature: Option<Bytes>,
}

impl WireNames {
    fn new(s: &IdentityHeaderSettings) -> WireNames {
        let wire = |name: &Option<HeaderName>| {
            name.as_ref()
                .map(|n| Bytes::copy_from_slice(n.as_str().as_bytes()))
        };
        WireNames {
            session_id: wire(&s.session_id),
            customer_id: wire(&s.customer_id),
            agent_id: wire(&s.agent_id),
            visit_id: wire(&s.visit_id),
            global_visit_id: wire(&s.global_visit_id),
            application_key: wire(&s.application_key),
            logged_in: wire(&s.logged_in),
            credential: wire(&s.credential),
            signature: wire(&s.signature),
        }
    }
}

impl IdentityHeaders {
    pub fn from_config(settings: &IdentityHeaderSettings) -> IdentityHeaders {
        let strip = settings.all_names();
        IdentityHeaders {
            strip_lengths: strip.iter().fold(0, |m, n| m | length_bit(n)),
            strip,
            wire: WireNames::new(settings),
            settings: settings.clone(),
        }
    }

    /// The session-id header, also sent to the client with a rotated id (SPEC §13.2).
    pub fn session_id_header(&self) -> Option<&HeaderName> {
        self.settings.session_id.as_ref()
    }

    pub fn assert_customer_header(&self) -> Option<&HeaderName> {
        self.settings.assert_customer_id.as_ref()
    }

    /// Removes every copy of every identity header, whatever its casing (header maps compare
    /// names case-insensitively).
    pub fn strip(&self, req: &mut RequestHeader) {
        // One pass over the request's names collects their lengths; only configured names of
        // a length the request has can be in it. Removing each configured name unconditionally
        // hashed and probed for all nine on every request.
        let lengths = req.headers.keys().fold(0, |m, n| m | length_bit(n));
        if lengths & self.strip_lengths == 0 {
            return;
        }
        for name in &self.strip {
            if lengths & length_bit(name) != 0 {
                while req.remove_header(name).is_some() {}
            }
        }
    }

    /// Sets the identity of `session` (if any) and the caller's `credential` name (if any).
    pub fn apply(
        &self,
        req: &mut RequestHeader,
        session: Option<&Session>,
        credential: Option<&str>,
    ) -> Result<()> {
        let w = &self.wire;
        if let Some(session) = session {
            set(req, &w.session_id, Some(&session.id))?;
            set(req, &w.customer_id, session.customer_id.as_deref())?;
            set(req, &w.agent_id, session.agent_id.as_deref())?;
            set(req, &w.visit_id, session.visit_id.as_deref())?;
            set(req, &w.global_visit_id, session.global_visit_id.as_deref())?;
            set(req, &w.application_key, session.application_key.as_deref())?;
            set(
                req,
                &w.logged_in,
                Some(if session.logged_in { "true" } else { "false" }),
            )?;
            if let (Some(name), Some(key)) = (&w.signature, &self.settings.signing_key) {
                let value = signature(
                    key,
                    unix_now(),
                    &session.id,
                    session.customer_id.as_deref().unwrap_or(""),
                );
                req.insert_header(name.clone(), value)?;
            }
        }
        set(req, &w.credential, credential)?;
        Ok(())
    }
}

fn length_bit(name: &HeaderName) -> u64 {
    1 << name.as_str().len().min(63)
}

/// Sets `name: value` when both exist and the value is a legal header value.
fn set(req: &mut RequestHeader, name: &Option<Bytes>, value: Option<&str>) -> Result<()> {
    if let (Some(name), Some(value)) = (name, value) {
        // Values were validated when stored; one that still is not a header value is left out
        // rather than failing the request.
        if let Ok(v) = HeaderValue::from_str(value) {
            req.insert_header(name.clone(), v)?;
        }
    }
    Ok(())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `v1,t=<unix>,s=<hex HMAC-SHA256 over "t\nsession_id\ncustomer_id">`.
pub fn signature(key: &Arc<Vec<u8>>, t: u64, session_id: &str, customer_id: &str) -> String {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{t}\n{session_id}\n{customer_id}").as_bytes());
    format!("v1,t={t},s={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_reference_hmac() {
        // Reference computed independently: HMAC-SHA256(key="k"*32, "1700000000\nsid\ncust").
        let key = Arc::new(vec![b'k'; 32]);
        let sig = signature(&key, 1_700_000_000, "sid", "cust");
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
        mac.update(b"1700000000\nsid\ncust");
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(sig, format!("v1,t=1700000000,s={expected}"));
        assert_ne!(signature(&key, 1_700_000_000, "sid", "other"), sig);
    }

    #[test]
    fn strip_removes_every_copy_in_any_case_and_keeps_the_rest() {
        let long = format!("x-{}", "l".repeat(70)); // past the length mask's last bit
        let settings = IdentityHeaderSettings {
            session_id: Some(HeaderName::from_static("x-session-id")),
            customer_id: Some(HeaderName::from_static("x-customer-id")),
            agent_id: Some(HeaderName::try_from(long.as_str()).unwrap()),
            ..Default::default()
        };
        let identity = IdentityHeaders::from_config(&settings);
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("X-Customer-ID", "forged").unwrap();
        req.append_header("x-customer-id", "forged again").unwrap();
        req.append_header(long.to_uppercase(), "forged").unwrap();
        req.append_header("x-other-id-12", "kept").unwrap(); // x-customer-id's length
        req.append_header("user-agent", "kept").unwrap();
        identity.strip(&mut req);
        let mut names: Vec<&str> = req.headers.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["user-agent", "x-other-id-12"]);

        let mut clean = RequestHeader::build("GET", b"/", None).unwrap();
        clean.append_header("accept", "*/*").unwrap();
        identity.strip(&mut clean);
        assert_eq!(clean.headers.len(), 1);
    }
}
