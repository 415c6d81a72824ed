//! Voucherify validation sessions (SPEC §4.4, §12, §13.7): LOCK sessions that hold a unit of a
//! voucher's quantity (plus gift credits and loyalty points) for a fixed TTL, enforced by the
//! sidecar.
//!
//! Unlike the other flavours this one works *through* forwarded traffic:
//! * `DELETE /v1/vouchers/{code}/sessions/{key}` is answered here (release);
//! * every other request under `/v1/` and `/client/v1/` (but CORS preflights) is inspected
//!   first (`before_forward`), so none reaches the app without valid credentials (§13.7);
//! * a validation with `session` (or the legacy `GET /client/v1/validate?session_type=LOCK`)
//!   acquires its lock atomically against `[[flavors.voucherify.limits]]` before the app sees
//!   it; a sold-out one is answered here with 200 `valid: false` in the endpoint's own shape
//!   (§13.7). The returned `ForwardHook` rolls the lock back when the app does not answer 2xx,
//!   or adds `session` to the app's answer;
//! * a redemption with `session.key` (or the legacy `POST /client/v1/redeem?code=…`) releases
//!   the lock once the app answers 2xx.

pub mod wire;

use crate::api::{ApiRequest, ApiResponse, ForwardDecision, ForwardHook, RequestBody, SessionApi};
use crate::auth::AuthResult;
use crate::config::VoucherifySettings;
use crate::metrics;
use crate::session::id::{is_valid_client_id, redact};
use crate::session::{
    Caller, CodeHold, EndReason, Flavor, Lock, LockAcquire, Session, SessionService, StoreError,
};
use async_trait::async_trait;
use http::header::{HeaderName, HeaderValue};
use http::Method;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use wire::{Endpoint, Inspected, LockRequest, RedeemRequest};

/// The 503 when the store fails, logged.
fn store_unavailable(e: &StoreError) -> ApiResponse {
    crate::warn_throttled!("store failures", "voucherify: {e}");
    wire::store_unavailable()
}

/// The 401 for a request without valid credentials, counted.
fn unauthorized(auth: &AuthResult) -> ApiResponse {
    auth.record_failure();
    wire::unauthorized(matches!(auth, AuthResult::Missing))
}

// ------------------------------------------------------------------------------------------
// Following the forwarded request

/// Undoes a lock acquisition (`SessionService::roll_back_lock`): removes the new lock, or
/// puts back the lock it replaced.
struct Rollback {
    sessions: Arc<SessionService>,
    limits: Arc<HashMap<String, u64>>,
    held: Session,
    replaced: Option<Session>,
}

impl Rollback {
    async fn run(self) {
        let rolled_back = self
            .sessions
            .roll_back_lock(&self.held, self.replaced, &self.limits)
            .await;
        if let Err(e) = rolled_back {
            let key = redact(&self.held.id);
            crate::warn_throttled!(
                "store failures",
                "voucherify: rolling back lock {key} failed: {e}"
            );
        }
    }
}

/// What happens once the app has answered.
enum AfterAnswer {
    /// No session in the request: nothing (the hook only strips client copies of the headers).
    Nothing,
    /// A validation's lock: kept on 2xx (and `session` added to the answer), else rolled back.
    Lock {
        rollback: Option<Box<Rollback>>,
        answer: String,
    },
    /// A redemption: the lock is released on 2xx.
    Redeem {
        sessions: Arc<SessionService>,
        key: String,
    },
}

struct LockHook {
    headers: Vec<(HeaderName, HeaderValue)>,
    after: AfterAnswer,
}

#[async_trait]
impl ForwardHook for LockHook {
    fn request_headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        self.headers.clone()
    }

    fn remove_headers(&self) -> Vec<HeaderName> {
        wire::lock_header_names()
    }

    async fn on_response(&mut self, status: u16) {
        if (100..200).contains(&status) {
            return; // interim answer: the real one follows
        }
        let ok = (200..300).contains(&status);
        match &mut self.after {
            AfterAnswer::Nothing => {}
            AfterAnswer::Lock { rollback, .. } => {
                // Settled either way: a 2xx keeps the lock, anything else undoes it.
                if let Some(r) = rollback.take() {
                    if !ok {
                        r.run().await;
                    }
                }
            }
            AfterAnswer::Redeem { sessions, key } => {
                if ok {
                    release_redeemed(sessions, key).await;
                }
                self.after = AfterAnswer::Nothing;
            }
        }
    }

    fn rewrites_body(&self) -> bool {
        matches!(self.after, AfterAnswer::Lock { .. })
    }

    fn rewrite_body(&self, content_type: Option<&str>, body: &[u8]) -> Option<Vec<u8>> {
        match &self.after {
            AfterAnswer::Lock { answer, .. } => wire::inject_session(content_type, body, answer),
            _ => None,
        }
    }

    async fn on_failure(&mut self) {
        if let AfterAnswer::Lock { rollback, .. } = &mut self.after {
            if let Some(r) = rollback.take() {
                r.run().await;
            }
        }
    }
}

impl Drop for LockHook {
    fn drop(&mut self) {
        // The request ended without an answer from the app (refused later, client gone):
        // the lock it took must not outlive it.
        if let AfterAnswer::Lock { rollback, .. } = &mut self.after {
            if let Some(r) = rollback.take() {
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(r.run());
                }
            }
        }
    }
}

/// Ends the lock a successful redemption used (the key is the capability, as for any
/// forwarded request; only Voucherify locks end this way).
async fn release_redeemed(sessions: &SessionService, key: &str) {
    if let Err(e) = sessions.release_redeemed(key).await {
        crate::warn_throttled!(
            "store failures",
            "voucherify: releasing redeemed lock {} failed: {e}",
            redact(key)
        );
    }
}

// ------------------------------------------------------------------------------------------
// The API

pub struct Voucherify {
    sessions: Arc<SessionService>,
    max_ttl: Duration,
    limits: Arc<HashMap<String, u64>>,
    /// `server.max_body`: the limit for the release endpoint.
    max_body: usize,
}

impl Voucherify {
    pub fn new(
        settings: &VoucherifySettings,
        max_body: usize,
        sessions: Arc<SessionService>,
    ) -> Voucherify {
        Voucherify {
            sessions,
            max_ttl: settings.max_ttl,
            limits: Arc::new(settings.limits.clone()),
            max_body,
        }
    }

    async fn release(&self, req: &ApiRequest<'_>, code: &str, key: &str) -> ApiResponse {
        if req.method != Method::DELETE {
            return wire::release_not_allowed();
        }
        let Some(cred) = req.auth.credential() else {
            return unauthorized(req.auth);
        };
        let code = wire::decode_segment(code);
        let key = wire::decode_segment(key);
        if !is_valid_client_id(&key) {
            return wire::not_found(&key);
        }
        let caller = Caller::named(&cred.name, cred.admin);
        let found = match self.sessions.peek(&caller, &key).await {
            Ok(found) => found,
            Err(e) => return store_unavailable(&e),
        };
        // Only a lock on this voucher is released here (a lock that holds no code at all, e.g.
        // one taken for a promotion, is released through any code).
        let releasable = found.is_some_and(|s| {
            s.flavor == Flavor::Voucherify
                && s.lock()
                    .is_some_and(|l| l.holds.is_empty() || l.holds.iter().any(|h| h.code == code))
        });
        if !releasable {
            return wire::not_found(&key);
        }
        match self
            .sessions
            .close(&caller, &key, EndReason::Released)
            .await
        {
            Ok(Some(_)) => ApiResponse::empty(204),
            Ok(None) => wire::not_found(&key),
            Err(e) => store_unavailable(&e),
        }
    }

    async fn validate(
        &self,
        req: &ApiRequest<'_>,
        owner: &str,
        lock: LockRequest,
        stacked: bool,
    ) -> ForwardDecision {
        let codes: Vec<String> = lock.holds.iter().map(|h| h.code.clone()).collect();
        let asked = lock.holds.clone();
        let held_lock = Lock {
            holds: lock.holds,
            ttl: lock.ttl,
            ttl_unit: lock.ttl_unit,
        };
        let acquired = self
            .sessions
            .acquire_lock(
                lock.key.as_deref(),
                owner,
                held_lock,
                lock.duration,
                &self.limits,
            )
            .await;
        match acquired {
            Ok(LockAcquire::Acquired {
                held,
                replaced,
                others,
            }) => {
                let key = held.id.clone();
                log::debug!(
                    "voucherify: lock {} acquired on {} code(s) via {}",
                    redact(&key),
                    codes.len(),
                    req.path
                );
                ForwardDecision::Forward(Some(Box::new(LockHook {
                    headers: wire::session_headers(&key, &codes, &others),
                    after: AfterAnswer::Lock {
                        rollback: Some(Box::new(Rollback {
                            sessions: self.sessions.clone(),
                            limits: self.limits.clone(),
                            held,
                            replaced,
                        })),
                        answer: wire::session_answer(&key, lock.ttl, lock.ttl_unit),
                    },
                })))
            }
            Ok(LockAcquire::Refused { code }) => {
                metrics::lock_rejected(wire::QUANTITY_EXCEEDED);
                // Without a key of its own the refused lock holds nothing: every lock is another's.
                let key = lock.key.as_deref().unwrap_or_default();
                let refused = self.refused_codes(&asked, key, code).await;
                ForwardDecision::Answer(wire::sold_out(stacked, &refused))
            }
            Ok(LockAcquire::KeyInUse) => ForwardDecision::Answer(wire::key_in_use()),
            Err(e) => ForwardDecision::Answer(store_unavailable(&e)),
        }
    }

    /// Every code of a refused lock that other live sessions have used up, in request order,
    /// `refused` (the one the store named) always among them.
    async fn refused_codes(&self, asked: &[CodeHold], key: &str, refused: String) -> Vec<String> {
        let codes: Vec<String> = asked.iter().map(|h| h.code.clone()).collect();
        let Ok(others) = self.sessions.locked_by_others(&codes, key).await else {
            return vec![refused];
        };
        let mut out: Vec<String> = asked
            .iter()
            .zip(&others)
            .filter(|(h, o)| {
                h.code == refused
                    || self
                        .limits
                        .get(&h.code)
                        .is_some_and(|limit| o.quantity.saturating_add(h.quantity) > *limit)
            })
            .map(|(h, _)| h.code.clone())
            .collect();
        if out.is_empty() {
            out.push(refused);
        }
        out
    }

    async fn redeem(&self, redeem: RedeemRequest) -> ForwardDecision {
        let others = match self
            .sessions
            .locked_by_others(&redeem.codes, &redeem.key)
            .await
        {
            Ok(o) => o,
            Err(e) => return ForwardDecision::Answer(store_unavailable(&e)),
        };
        ForwardDecision::Forward(Some(Box::new(LockHook {
            headers: wire::session_headers(&redeem.key, &redeem.codes, &others),
            after: AfterAnswer::Redeem {
                sessions: self.sessions.clone(),
                key: redeem.key,
            },
        })))
    }
}

/// A hook that only strips client copies of the lock headers.
fn plain() -> ForwardDecision {
    ForwardDecision::Forward(Some(Box::new(LockHook {
        headers: Vec::new(),
        after: AfterAnswer::Nothing,
    })))
}

#[async_trait]
impl SessionApi for Voucherify {
    fn flavor(&self) -> Flavor {
        Flavor::Voucherify
    }

    fn answers(&self, path: &str) -> bool {
        matches!(wire::endpoint(path), Some(Endpoint::Release { .. }))
    }

    fn body_too_large(&self) -> ApiResponse {
        wire::too_large(self.max_body)
    }

    async fn answer(&self, req: &ApiRequest<'_>) -> ApiResponse {
        match wire::endpoint(req.path) {
            Some(Endpoint::Release { code, key }) => self.release(req, code, key).await,
            _ => wire::unknown_endpoint(),
        }
    }

    fn inspects(&self, method: &Method, path: &str) -> bool {
        // Every request under the API is credential-checked (SPEC §13.7), whatever the
        // endpoint; CORS preflights carry no credentials and no body: the app answers them.
        method != Method::OPTIONS && wire::is_api_path(path)
    }

    async fn before_forward(&self, req: &ApiRequest<'_>) -> ForwardDecision {
        let Some(cred) = req.auth.credential() else {
            return ForwardDecision::Answer(unauthorized(req.auth));
        };
        let endpoint = wire::endpoint(req.path);
        if wire::reads_body(req.method, endpoint.as_ref()) {
            match req.body {
                RequestBody::Complete(_) => {}
                RequestBody::TooLarge { limit } => {
                    return ForwardDecision::Answer(wire::too_large(limit))
                }
                RequestBody::NotRead => return ForwardDecision::Answer(wire::length_required()),
            }
        }
        let inspected = wire::inspect(
            req.method,
            endpoint,
            req.query,
            req.body.bytes(),
            self.max_ttl,
        );
        match inspected {
            Ok(Inspected::Lock { lock, stacked }) => {
                self.validate(req, &cred.name, lock, stacked).await
            }
            Ok(Inspected::Redeem(redeem)) => self.redeem(redeem).await,
            Ok(Inspected::Plain) => plain(),
            Err(e) => ForwardDecision::Answer(wire::invalid_payload(e)),
        }
    }
}
