//! A JSON object written straight into a byte buffer, for the few answers written on every
//! request (the Knowledge Center `SessionInfo`). Byte for byte what `serde_json` writes for
//! the same fields (a proptest holds it to that), without its per-field dispatch.

use crate::session::{rfc3339_bytes, Millis};

/// Bytes that JSON strings must escape: `"`, `\` and the control characters below 0x20.
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any of the 8 bytes in `w` needs escaping (exact for "any", not for "which"): a byte
/// below 0x20, or one equal to `"` or `\`, found 8 at a time instead of byte by byte.
fn word_needs_escape(w: u64) -> bool {
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    below_space | zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\'))) != 0
}

/// The index of the first byte at or after `from` that needs escaping.
fn next_escape(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        if word_needs_escape(u64::from_le_bytes(word)) {
            break;
        }
        i += 8;
    }
    bytes[i..]
        .iter()
        .position(|&b| needs_escape(b))
        .map(|at| i + at)
}

/// Appends `s` as a JSON string, escaped as `serde_json` escapes it.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    while let Some(i) = next_escape(bytes, start) {
        out.extend_from_slice(&bytes[start..i]);
        match bytes[i] {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Writes one JSON object: `{"key":value,...}`, keys given as literals that need no escaping.
pub struct Object<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Object<'a> {
    pub fn begin(out: &'a mut Vec<u8>) -> Object<'a> {
        Object { out, first: true }
    }

    /// Keys are this crate's own literals: written as they are, not scanned for escapes.
    fn key(&mut self, key: &'static str) {
        debug_assert!(!key.bytes().any(needs_escape), "key {key:?} needs escaping");
        self.out
            .extend_from_slice(if self.first { b"{\"" } else { b",\"" });
        self.first = false;
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    pub fn str(&mut self, key: &'static str, value: &str) {
        self.key(key);
        push_str(self.out, value);
    }

    /// A string, or `null` when there is none (as serde writes `Option<&str>`).
    pub fn opt_str(&mut self, key: &'static str, value: Option<&str>) {
        self.key(key);
        match value {
            Some(v) => push_str(self.out, v),
            None => self.out.extend_from_slice(b"null"),
        }
    }

    /// An instant as an RFC 3339 string (its digits need no escaping).
    pub fn rfc3339(&mut self, key: &'static str, ms: Millis) {
        self.key(key);
        self.out.push(b'"');
        self.out.extend_from_slice(&rfc3339_bytes(ms));
        self.out.push(b'"');
    }

    pub fn end(self) {
        if self.first {
            self.out.push(b'{');
        }
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn written(s: &str) -> String {
        let mut out = Vec::new();
        push_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_as_json_requires() {
        assert_eq!(written("plain"), r#""plain""#);
        assert_eq!(written("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(
            written("\n\r\t\u{8}\u{c}\u{1}\u{1f}"),
            r#""\n\r\t\b\f\u0001\u001f""#
        );
        assert_eq!(written("é\u{7f}"), "\"é\u{7f}\"");
    }

    #[test]
    fn objects_match_serde() {
        let mut out = Vec::new();
        let mut o = Object::begin(&mut out);
        o.str("a", "x");
        o.opt_str("b", None);
        o.opt_str("c", Some("y\"z"));
        o.end();
        let expected = serde_json::json!({"a": "x", "b": null, "c": "y\"z"});
        assert_eq!(String::from_utf8(out).unwrap(), expected.to_string());
        let mut empty = Vec::new();
        Object::begin(&mut empty).end();
        assert_eq!(empty, b"{}");
    }

    #[test]
    fn every_ascii_byte_at_every_offset_of_a_word_is_escaped_as_serde_does() {
        for b in 0u8..0x80 {
            for at in 0..17 {
                let mut s = "abcdefghijklmnopq".to_string().into_bytes();
                s[at] = b;
                let s = String::from_utf8(s).unwrap();
                assert_eq!(
                    written(&s),
                    serde_json::to_string(&s).unwrap(),
                    "{b:#x} at {at}"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn any_string_is_written_as_serde_writes_it(s in any::<String>()) {
            prop_assert_eq!(written(&s), serde_json::to_string(&s).unwrap());
        }
    }
}
