//! W3C Trace Context `traceparent`: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.

/// The trace a request belongs to, as it arrived (or as the sidecar started it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// The caller's span; `None` when the sidecar started the trace.
    pub parent_span_id: Option<[u8; 8]>,
    pub sampled: bool,
    /// `tracestate` as received (forwarded untouched).
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// Reads a `traceparent` (and `tracestate`). Anything malformed — wrong length, not lower
    /// hex, version `ff`, all-zero ids — is ignored, as the W3C spec asks.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<TraceContext> {
        let v = traceparent.trim();
        let parts: Vec<&str> = v.split('-').collect();
        if parts.len() < 4 {
            return None;
        }
        let (version, trace, parent, flags) = (parts[0], parts[1], parts[2], parts[3]);
        // Version 00 has exactly four fields; later versions may append more.
        if version.len() != 2 || version == "ff" || (version == "00" && parts.len() != 4) {
            return None;
        }
        hex16::<1>(version)?;
        let trace_id = hex16::<16>(trace)?;
        let parent_id = hex16::<8>(parent)?;
        let flags = hex16::<1>(flags)?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceContext {
            trace_id,
            parent_span_id: Some(parent_id),
            sampled: flags[0] & 1 == 1,
            tracestate: tracestate
                .map(str::trim)
                .filter(|s| !s.is_empty() && s.len() <= 512)
                .map(str::to_string),
        })
    }

    /// A new trace started here.
    pub fn start(sampled: bool) -> TraceContext {
        let mut trace_id = crate::random::bytes::<16>();
        if trace_id == [0; 16] {
            trace_id[15] = 1;
        }
        TraceContext {
            trace_id,
            parent_span_id: None,
            sampled,
            tracestate: None,
        }
    }

    /// The `traceparent` naming `span_id` as the parent of what comes next.
    pub fn traceparent(&self, span_id: &[u8; 8]) -> String {
        format!(
            "00-{}-{}-{}",
            hex::encode(self.trace_id),
            hex::encode(span_id),
            if self.sampled { "01" } else { "00" }
        )
    }

    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }
}

/// A fresh, non-zero span id.
pub fn new_span_id() -> [u8; 8] {
    let mut id = crate::random::bytes::<8>();
    if id == [0; 8] {
        id[7] = 1;
    }
    id
}

/// Exactly `2N` lower-case hex digits.
fn hex16<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_formats_the_w3c_example() {
        let t = TraceContext::parse(TP, Some("congo=t61rcWkgMzE")).unwrap();
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            t.parent_span_id,
            Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        assert!(t.sampled);
        assert_eq!(t.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
        let span = [1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(
            t.traceparent(&span),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0102030405060708-01"
        );
    }

    #[test]
    fn refuses_malformed_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
        ] {
            assert_eq!(TraceContext::parse(bad, None), None, "{bad:?}");
        }
        // A later version may carry more fields.
        assert!(TraceContext::parse(&format!("01{}-more", &TP[2..]), None).is_some());
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panic(s in "\\PC{0,80}") {
            let _ = TraceContext::parse(&s, Some(&s));
        }
    }
}
