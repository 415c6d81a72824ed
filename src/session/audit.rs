//! Audit events (SPEC §13.5): the life of a session — created, rotated, transferred, revoked,
//! released, evicted — as `SessionService` sees it happen, with who did it. The service only
//! emits them; whoever implements `AuditSink` (the access log) writes them down. Ids are
//! handed over in full and must be hashed by the sink (`id::tag`): never logged as they are.

use super::model::Flavor;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    Created,
    Rotated,
    Transferred,
    Revoked,
    Released,
    Evicted,
    /// Ended by its client (a flavour's close or delete).
    Closed,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Created => "created",
            AuditAction::Rotated => "rotated",
            AuditAction::Transferred => "transferred",
            AuditAction::Revoked => "revoked",
            AuditAction::Released => "released",
            AuditAction::Evicted => "evicted",
            AuditAction::Closed => "closed",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct AuditEvent<'a> {
    pub action: AuditAction,
    /// The credential that caused it, if any (the sidecar itself for evictions).
    pub actor: Option<&'a str>,
    pub flavor: Flavor,
    pub session_id: &'a str,
    /// The id the session lives on under (rotated, transferred).
    pub new_session_id: Option<&'a str>,
    pub customer_id: Option<&'a str>,
}

pub trait AuditSink: Send + Sync {
    fn record(&self, event: &AuditEvent<'_>);
}
