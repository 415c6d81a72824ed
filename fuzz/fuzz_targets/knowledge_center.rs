//! Knowledge Center bodies, identity headers and query (SPEC §4.2).
//! Fields: gkc_customerId 0x1E gkc_agentId 0x1E query 0x1E body.
#![no_main]

#[path = "fields.rs"]
mod fields;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let f = fields::fields(data, 4);
    session_sidecar::fuzz_api::knowledge_center(f[0], f[1], fields::text(f[2]), f[3]);
});
