//! Session locators (SPEC §6). Fields: cookie/header value 0x1E query 0x1E path 0x1E body.
#![no_main]

#[path = "fields.rs"]
mod fields;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let f = fields::fields(data, 4);
    session_sidecar::fuzz_api::locators(f[0], fields::text(f[1]), fields::text(f[2]), f[3]);
});
