//! Tessitura JSON, XML and form bodies (SPEC §4.3). The first byte picks the media type.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((media, body)) = data.split_first() {
        session_sidecar::fuzz_api::tessitura_body(*media, body);
    }
});
