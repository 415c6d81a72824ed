//! Media types and query strings, read the same way by the proxy's locators and the flavours.

use percent_encoding::percent_decode_str;

/// The media type of a `Content-Type` value, lowercased, without parameters.
pub fn media_type(content_type: &str) -> Option<String> {
    let mt = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    (!mt.is_empty()).then_some(mt)
}

/// Whether a `Content-Type` names JSON (`application/json`, `text/json`, `…+json`).
pub fn is_json(content_type: Option<&str>) -> bool {
    content_type
        .and_then(media_type)
        .is_some_and(|mt| mt == "application/json" || mt == "text/json" || mt.ends_with("+json"))
}

/// The first non-empty value of a query parameter, percent-decoded (`+` stays `+`).
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode_str(k).decode_utf8().ok()? != name {
            return None;
        }
        let v = percent_decode_str(v).decode_utf8().ok()?;
        (!v.is_empty()).then(|| v.into_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn query_params() {
        assert_eq!(
            query_param("q=1&sessionId=abc&sessionId=def", "sessionId").as_deref(),
            Some("abc")
        );
        assert_eq!(
            query_param("sessionId=a%2Bb%2F%3D", "sessionId").as_deref(),
            Some("a+b/=")
        );
        assert_eq!(
            query_param("sessionId=a+b", "sessionId").as_deref(),
            Some("a+b")
        );
        assert_eq!(query_param("sessionIdx=1", "sessionId"), None);
        assert_eq!(query_param("sessionId=", "sessionId"), None);
        assert_eq!(query_param("sessionId=%ff", "sessionId"), None);
    }

    #[test]
    fn json_media_types() {
        assert!(is_json(Some("application/json; charset=utf-8")));
        assert!(is_json(Some("Application/JSON")));
        assert!(is_json(Some("application/vnd.api+json")));
        assert!(is_json(Some("text/json")));
        assert!(!is_json(Some("text/plain")));
        assert!(!is_json(Some("; charset=utf-8")));
        assert!(!is_json(None));
        assert_eq!(
            media_type(" Text/XML ; charset=x").as_deref(),
            Some("text/xml")
        );
        assert_eq!(media_type(";x"), None);
    }

    proptest! {
        #[test]
        fn query_params_never_panic(q in "\\PC{0,80}") {
            let _ = query_param(&q, "sessionId");
        }
    }
}
