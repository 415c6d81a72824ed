//! Per-request state carried through pingora's hooks.

use super::locate::Located;
use super::trace::RequestTrace;
use crate::api::ForwardHook;
use crate::auth::Credential;
use crate::metrics::RequestKind;
use crate::session::{Flavor, Session};
use crate::state::Generation;
use std::sync::Arc;
use std::time::Instant;

/// A response body being collected so a `ForwardHook` can rewrite it.
pub struct BodyRewrite {
    pub content_type: Option<String>,
    pub buffer: Vec<u8>,
}

pub struct RequestCtx {
    /// The config generation this request started with; it finishes on it too.
    pub gen: Arc<Generation>,
    pub started: Instant,
    pub kind: RequestKind,
    /// Upstream name chosen by the route.
    pub upstream: Option<Arc<str>>,
    /// The live session the request resolved to.
    pub session: Option<Arc<Session>>,
    /// The session id the request carried, and where (set when the store was asked).
    pub located: Option<Located>,
    /// A flavour's API inspected this forwarded request: its session keys are that API's
    /// protocol, never rotated (SPEC §13.2).
    pub flavor_path: bool,
    /// The caller's credential, when one was presented and valid.
    pub credential: Option<Arc<Credential>>,
    /// The validated credential header to remove before forwarding (`strip_credentials`).
    pub strip_credential: Option<http::HeaderName>,
    pub hook: Option<Box<dyn ForwardHook>>,
    pub rewrite: Option<BodyRewrite>,
    /// The matched route's `path_prefix` (access log).
    pub route: Option<Arc<str>>,
    /// The flavour that answered or inspected the request (access log).
    pub flavor: Option<Flavor>,
    /// When the upstream was chosen, and how long its answer's header took (access log).
    pub upstream_started: Option<Instant>,
    pub upstream_ms: Option<f64>,
    /// The distributed trace this request is part of, if any.
    pub trace: Option<RequestTrace>,
    /// Its trace id, once the request is done (access log).
    pub trace_id: Option<String>,
}

impl RequestCtx {
    pub fn new(gen: Arc<Generation>) -> RequestCtx {
        RequestCtx {
            gen,
            started: Instant::now(),
            kind: RequestKind::Forward,
            upstream: None,
            session: None,
            located: None,
            flavor_path: false,
            credential: None,
            strip_credential: None,
            hook: None,
            rewrite: None,
            route: None,
            flavor: None,
            upstream_started: None,
            upstream_ms: None,
            trace: None,
            trace_id: None,
        }
    }
}
