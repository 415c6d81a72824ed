//! Session locators (SPEC §6): where a forwarded request carries its session id. They read
//! the request exactly as the client sent it; the first value wins when one repeats.

use crate::api::query_param;
use crate::config::{LocateSettings, PathTemplate};
use http::HeaderMap;
use percent_encoding::percent_decode_str;

/// Where a request carried its session id: rotation at login (SPEC §13.2) depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locator {
    Header,
    Cookie,
    Query,
    Path,
    JsonBody,
    /// The key of a flavour's own protocol (a forwarded request a flavour inspects).
    Flavor,
}

/// A session id as the client sent it, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub id: String,
    pub by: Locator,
}

impl Located {
    pub fn new(id: String, by: Locator) -> Located {
        Located { id, by }
    }
}

/// The session id carried in the request line or headers (header, cookie, query, path).
pub fn from_head(
    settings: &LocateSettings,
    headers: &HeaderMap,
    path: &str,
    query: Option<&str>,
) -> Option<Located> {
    let found = |by| move |id| Located::new(id, by);
    settings
        .header
        .as_ref()
        .and_then(|name| header_value(headers, name.as_str()))
        .map(found(Locator::Header))
        .or_else(|| {
            settings
                .cookie
                .as_deref()
                .and_then(|name| cookie(headers, name))
                .map(found(Locator::Cookie))
        })
        .or_else(|| {
            settings
                .query
                .as_deref()
                .and_then(|name| query_param(query?, name))
                .map(found(Locator::Query))
        })
        .or_else(|| {
            settings
                .path
                .iter()
                .find_map(|t| path_template(t, path))
                .map(found(Locator::Path))
        })
}

/// The first value of a header, trimmed; empty values count as absent.
pub fn header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let v = headers.get(name)?.to_str().ok()?.trim();
    (!v.is_empty()).then(|| v.to_string())
}

/// The first cookie called `name` across every `Cookie` header.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"').to_string())
        })
        .filter(|v| !v.is_empty())
}

/// The key of a path template. Templates match as prefixes: `/Web/Session/{key}` also
/// matches `/Web/Session/{key}/Expiration`. The key is one path segment, percent-decoded.
pub fn path_template(t: &PathTemplate, path: &str) -> Option<String> {
    let rest = path.strip_prefix(t.prefix.as_str())?;
    let segment = rest.split('/').next()?;
    let encoded = segment.strip_suffix(t.suffix.as_str())?;
    let key = percent_decode_str(encoded).decode_utf8().ok()?;
    (!key.is_empty()).then(|| key.into_owned())
}

/// The first configured JSON field path that holds a non-empty string.
pub fn from_json(fields: &[Vec<String>], body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    fields.iter().find_map(|path| {
        let mut v = &value;
        for part in path {
            v = v.get(part.as_str())?;
        }
        v.as_str().filter(|s| !s.is_empty()).map(str::to_string)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn tpl(s: &str) -> PathTemplate {
        let (p, x) = s.split_once("{key}").unwrap();
        PathTemplate {
            prefix: p.into(),
            suffix: x.into(),
        }
    }

    #[test]
    fn header_first_value_wins() {
        let h = headers(&[("x-session-id", " a "), ("X-Session-Id", "b")]);
        assert_eq!(header_value(&h, "x-session-id").as_deref(), Some("a"));
        assert_eq!(
            header_value(&headers(&[("x-session-id", "")]), "x-session-id"),
            None
        );
    }

    #[test]
    fn cookies() {
        let h = headers(&[
            ("cookie", "theme=dark; session_id=abc; lang=en"),
            ("cookie", "session_id=zzz"),
        ]);
        assert_eq!(cookie(&h, "session_id").as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "session"), None);
        assert_eq!(
            cookie(&headers(&[("cookie", "xsession_id=1")]), "session_id"),
            None
        );
        assert_eq!(
            cookie(&headers(&[("cookie", "garbage")]), "session_id"),
            None
        );
    }

    #[test]
    fn path_templates() {
        let t = tpl("/Web/Session/{key}");
        assert_eq!(
            path_template(&t, "/Web/Session/abc").as_deref(),
            Some("abc")
        );
        assert_eq!(
            path_template(&t, "/Web/Session/abc/Expiration").as_deref(),
            Some("abc")
        );
        assert_eq!(
            path_template(&t, "/Web/Session/a%2Bb%2F%3D").as_deref(),
            Some("a+b/=")
        );
        assert_eq!(path_template(&t, "/Web/Session/"), None);
        assert_eq!(path_template(&t, "/Web/Sessions/abc"), None);
        let t = tpl("/x/{key}.json");
        assert_eq!(path_template(&t, "/x/abc.json").as_deref(), Some("abc"));
        assert_eq!(path_template(&t, "/x/abc"), None);
    }

    #[test]
    fn json_fields() {
        let fields = vec![
            vec!["SessionId".to_string()],
            vec!["session".to_string(), "key".to_string()],
        ];
        assert_eq!(
            from_json(&fields, br#"{"SessionId":"s1"}"#).as_deref(),
            Some("s1")
        );
        assert_eq!(
            from_json(&fields, br#"{"session":{"key":"k"}}"#).as_deref(),
            Some("k")
        );
        assert_eq!(
            from_json(&fields, br#"{"SessionId":5,"session":{"key":"k"}}"#).as_deref(),
            Some("k")
        );
        assert_eq!(from_json(&fields, br#"{"session":"k"}"#), None);
        assert_eq!(from_json(&fields, b"{not json"), None);
        assert_eq!(from_json(&fields, b""), None);
    }

    proptest! {
        #[test]
        fn locators_never_panic(q in "\\PC{0,80}", p in "\\PC{0,80}", body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = query_param(&q, "sessionId");
            let _ = path_template(&tpl("/Web/Session/{key}"), &p);
            let _ = from_json(&[vec!["a".into(), "b".into()]], &body);
        }
    }
}
