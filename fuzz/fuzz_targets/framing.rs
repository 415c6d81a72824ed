//! A request head through pingora's HTTP/1 reader and `proxy::framing` (SPEC §13.1), with an
//! oracle: an accepted head never carries both framings, nor a framing field twice.
#![no_main]

#[path = "fields.rs"]
mod fields;

use libfuzzer_sys::fuzz_target;
use session_sidecar::fuzz_api::Framing;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static FRAMING: OnceLock<Framing> = OnceLock::new();
    let framing = FRAMING.get_or_init(Framing::default);
    if framing.verdict(data) == Some(0) {
        fields::assert_unambiguous(data);
    }
});
