//! The sidecar's background services, each a pingora `BackgroundService` that stops with the
//! server: store upkeep (`housekeeping`), SIGHUP reload (`reload`, SPEC §9) and the JWKS
//! refresh (`jwks_refresh`), SIGUSR1 access-log reopen (`log_reopen`). Each works on the current `Generation`, so a reload needs nothing
//! from them.

pub mod housekeeping;
pub mod jwks_refresh;
pub mod log_reopen;
pub mod reload;
