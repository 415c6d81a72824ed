//! Lenient JSON text (SPEC §13.7): the real Tessitura API reads bodies with Json.NET, which
//! accepts single-quoted strings and member names, and clients rely on it (the `tessitura`
//! Python library sends `str(dict)`, i.e. `{'NewSessionKey': '…'}`). `normalize` rewrites
//! such text into standard JSON for serde_json; everything else is left for serde_json to
//! accept or refuse, so malformed input still gets its precise error.

use std::borrow::Cow;

/// `text` with every single-quoted string (outside double-quoted ones) rewritten as a
/// double-quoted one: `"` inside it escaped, `\'` unescaped, other escapes kept. Text without
/// single quotes is returned as it is. An unterminated string stays unterminated.
pub fn normalize(text: &str) -> Cow<'_, str> {
    if !text.contains('\'') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push('"');
                copy_string(&mut chars, &mut out, '"');
            }
            '\'' => {
                out.push('"');
                copy_string(&mut chars, &mut out, '\'');
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Copies the rest of a string opened by `quote` as a double-quoted JSON string, closing quote
/// included (when there is one).
fn copy_string(chars: &mut std::str::Chars<'_>, out: &mut String, quote: char) {
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                // `\'` is an escape only Json.NET knows; in JSON a quote needs none.
                Some('\'') => out.push('\''),
                Some(e) => {
                    out.push('\\');
                    out.push(e);
                }
                None => out.push('\\'),
            },
            c if c == quote => {
                out.push('"');
                return;
            }
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn parse(text: &str) -> Result<Value, serde_json::Error> {
        serde_json::from_str(&normalize(text))
    }

    #[test]
    fn single_quotes_become_json() {
        assert_eq!(
            parse("{'NewSessionKey': 'a+b/c='}").unwrap(),
            json!({"NewSessionKey": "a+b/c="})
        );
        assert_eq!(
            parse(r#"{'a': 'say "hi"', "b": 'it\'s', 'c': ["x", 'y', 1, null, true]}"#).unwrap(),
            json!({"a": "say \"hi\"", "b": "it's", "c": ["x", "y", 1, null, true]})
        );
        assert_eq!(
            parse(r#"{"a'b": 'c\\d\n\u00e9'}"#).unwrap(),
            json!({"a'b": "c\\d\n\u{e9}"})
        );
        assert_eq!(parse("{'': ''}").unwrap(), json!({"": ""}));
    }

    #[test]
    fn standard_json_is_untouched() {
        for text in [r#"{"a":"b"}"#, "[]", "null", "", r#"{"it's":"fine"}"#] {
            assert_eq!(normalize(text), text);
        }
        assert!(matches!(
            normalize(r#"{"a":1}"#),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn malformed_input_is_still_refused() {
        for bad in [
            "{'a': 'b}",
            "{'a: 'b'}",
            "{'a' 'b'}",
            "'",
            "{'a': 'b'",
            "{'a': 'b\\",
            "{'a': True}",
            "{'a': None}",
            "{a: 'b'}",
            "{'a': 'line\nbreak'}",
            "{'a': '\\q'}",
            "{'a': 'b'}}",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    /// JSON text with every double quote that delimits a string swapped for a single quote.
    fn single_quoted(v: &Value) -> String {
        match v {
            Value::String(s) => {
                let inner = serde_json::to_string(s).unwrap();
                let inner = &inner[1..inner.len() - 1];
                // `\"` needs no escape between single quotes; a single quote does.
                format!("'{}'", inner.replace("\\\"", "\"").replace('\'', "\\'"))
            }
            Value::Array(items) => {
                format!(
                    "[{}]",
                    items
                        .iter()
                        .map(single_quoted)
                        .collect::<Vec<_>>()
                        .join(",")
                )
            }
            Value::Object(map) => format!(
                "{{{}}}",
                map.iter()
                    .map(|(k, v)| format!(
                        "{}:{}",
                        single_quoted(&Value::from(k.as_str())),
                        single_quoted(v)
                    ))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            other => other.to_string(),
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::from),
            "['\"\\\\a/ ]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("['\"a-z]{0,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn single_quoted_json_reads_as_the_same_value(v in json_value()) {
            prop_assert_eq!(parse(&single_quoted(&v)).unwrap(), v.clone());
            prop_assert_eq!(parse(&v.to_string()).unwrap(), v);
        }

        #[test]
        fn never_panics(text in "\\PC{0,64}") {
            let out = normalize(&text);
            if !text.contains('\'') {
                prop_assert_eq!(out.as_ref(), text.as_str());
            }
        }
    }
}
