//! Session ids: generated from the OS CSPRNG, and checked when a client supplies one.

use super::model::Flavor;
use base64::Engine;

/// A lowercase, hyphenated UUIDv4 (SpreadsheetWEB, Knowledge Center, admin sessions).
pub fn new_uuid() -> String {
    // uuid's v4 feature draws from getrandom, i.e. the OS CSPRNG.
    uuid::Uuid::new_v4().hyphenated().to_string()
}

/// `ssn_` followed by 32 alphanumerics (Voucherify lock keys).
pub fn new_lock_key() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(36);
    out.push_str("ssn_");
    let mut filled = 0;
    while filled < 32 {
        let mut buf = [0u8; 64];
        fill_random(&mut buf);
        for b in buf {
            // 62 * 4 = 248: rejecting bytes >= 248 keeps every character equally likely.
            if b < 248 && filled < 32 {
                out.push(ALPHABET[(b % 62) as usize] as char);
                filled += 1;
            }
        }
    }
    out
}

/// 80 random bytes in standard base64: 108 characters (Tessitura session keys).
pub fn new_tessitura_key() -> String {
    let mut buf = [0u8; 80];
    fill_random(&mut buf);
    base64::engine::general_purpose::STANDARD.encode(buf)
}

/// A fresh id of the kind `flavor` issues (rotation keeps the kind a client expects).
pub fn new_id_like(flavor: Flavor) -> String {
    match flavor {
        Flavor::Tessitura => new_tessitura_key(),
        Flavor::Voucherify => new_lock_key(),
        Flavor::Spreadsheetweb | Flavor::KnowledgeCenter | Flavor::Admin => new_uuid(),
    }
}

fn fill_random(buf: &mut [u8]) {
    // Without the OS CSPRNG no id can be issued safely; there is nothing sensible to fall back to.
    getrandom::getrandom(buf).expect("the OS random number generator is unavailable");
}

/// Whether a client-supplied id is acceptable: 1–256 chars of `A-Z a-z 0-9 . _ ~ + / = -`.
pub fn is_valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 256
        && id.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'+' | b'/' | b'=' | b'-')
        })
}

/// An id as logs may name it (SPEC §13.5): the first 8 hex digits of its SHA-256. The same id
/// always gives the same tag, so lines about one session can be found together.
pub fn tag(id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(id.as_bytes());
    hex::encode(&digest[..4])
}

/// The first 8 characters of an id, for logs (SPEC §5: never log a full id).
pub fn redact(id: &str) -> String {
    let short: String = id.chars().take(8).collect();
    format!("{short}…")
}

/// A request path fit for logs: every segment long enough to be an id is cut to 8
/// characters, and the query string (which may carry ids) is dropped.
pub fn redact_path(path: &str) -> String {
    let path = path.split('?').next().unwrap_or("");
    // One string, written segment by segment: this runs for every access-log line.
    let mut out = String::with_capacity(path.len().min(256) + 8);
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        match seg.char_indices().nth(12) {
            // More than 12 characters: the first 8 and an ellipsis, as `redact`.
            Some(_) => {
                let cut = seg.char_indices().nth(8).map_or(seg.len(), |(at, _)| at);
                out.push_str(&seg[..cut]);
                out.push('…');
            }
            None => out.push_str(seg),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn uuid_shape() {
        let id = new_uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_eq!(id, id.to_lowercase());
    }

    #[test]
    fn lock_key_shape() {
        let k = new_lock_key();
        assert_eq!(k.len(), 36);
        assert!(k.starts_with("ssn_"));
        assert!(k[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn tessitura_key_shape() {
        let k = new_tessitura_key();
        assert_eq!(k.len(), 108);
        assert!(is_valid_client_id(&k));
    }

    #[test]
    fn ids_are_distinct() {
        let set: HashSet<String> = (0..1000).map(|_| new_lock_key()).collect();
        assert_eq!(set.len(), 1000);
    }

    #[test]
    fn client_id_rules() {
        assert!(is_valid_client_id("abc-DEF_1.2~3+4/5=6"));
        assert!(!is_valid_client_id(""));
        assert!(!is_valid_client_id(&"a".repeat(257)));
        assert!(is_valid_client_id(&"a".repeat(256)));
        for bad in ["a b", "a\r\nb", "a%20", "é", "a;b", "a\"b", "a\0"] {
            assert!(!is_valid_client_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn redact_keeps_eight() {
        assert_eq!(redact("0123456789abcdef"), "01234567…");
        assert_eq!(redact("abc"), "abc…");
    }

    #[test]
    fn redacted_paths_hide_ids() {
        let id = "3b9c2f9e-7d7a-4f59-9a53-0123456789ab";
        let p = redact_path(&format!("/gks-server/v1/sessions/{id}?sessionId={id}"));
        assert_eq!(p, "/gks-server/v1/sessions/3b9c2f9e…");
        assert!(!p.contains(id));
    }

    proptest! {
        #[test]
        fn redact_path_cuts_every_long_segment_as_redact_does(p in "[/a-zé0-9?]{0,80}") {
            let reference = p.split('?').next().unwrap_or("")
                .split('/')
                .map(|seg| if seg.chars().count() > 12 { redact(seg) } else { seg.to_string() })
                .collect::<Vec<_>>()
                .join("/");
            prop_assert_eq!(redact_path(&p), reference);
        }

        #[test]
        fn client_id_validation_never_panics(s in "\\PC{0,300}") {
            let ok = is_valid_client_id(&s);
            if ok { prop_assert!(s.len() <= 256 && !s.is_empty()); }
        }
    }
}
