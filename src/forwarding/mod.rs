//! What a forwarded request gets from the configuration: the upstream its path
//! routes to, and the identity headers set from its session (SPEC §6). Built once per generation
//! (`state::Generation`) and applied by the proxy; it sits below both, so the generation can
//! hold it without `state` importing `proxy`.

pub mod identity;
pub mod upstreams;
