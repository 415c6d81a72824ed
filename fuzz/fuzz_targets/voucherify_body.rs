//! Voucherify validation and redemption bodies (SPEC §4.4). Fields: path code 0x1E body.
#![no_main]

#[path = "fields.rs"]
mod fields;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let f = fields::fields(data, 2);
    let code = (!f[0].is_empty()).then(|| fields::text(f[0]));
    session_sidecar::fuzz_api::voucherify_body(code, f[1]);
});
