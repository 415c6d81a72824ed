//! Session id rotation at login (SPEC §13.2): when the app's answer logs a customer in, a
//! session the client may have been handed by someone else (fixation) gets a new id, and the
//! answer tells the client: `Set-Cookie` when the id came in the locate cookie, and the
//! `identity_headers.session_id` response header in every case. Paths of a flavour's API
//! never rotate: their clients know only that API's way of learning a key.

use super::context::RequestCtx;
use super::locate::Locator;
use crate::config::RotateOnLogin;
use crate::session::id::redact;
use pingora::http::ResponseHeader;
use pingora::Result;

/// Whether a login on a session found by `by` rotates its id under `policy`.
pub fn applies(policy: RotateOnLogin, by: Locator) -> bool {
    match policy {
        RotateOnLogin::Never => false,
        RotateOnLogin::Cookie => by == Locator::Cookie,
        // A flavour's own key is part of that API's protocol: its clients would not follow.
        RotateOnLogin::Always => by != Locator::Flavor,
    }
}

/// Rotates the request's session after a login and writes the new id into `resp`. `tls`:
/// the request came over TLS (the cookie is then `Secure`).
pub async fn after_login(resp: &mut ResponseHeader, ctx: &RequestCtx, tls: bool) -> Result<()> {
    let gen = &ctx.gen;
    let (Some(session), Some(located)) = (&ctx.session, &ctx.located) else {
        return Ok(());
    };
    if ctx.flavor_path || !applies(gen.config.sessions.rotate_on_login, located.by) {
        return Ok(());
    }
    let current = if *located.id != *session.id {
        // The request carried an id already rotated away (its grace alias): the session has
        // its new id; this client only needs to learn it.
        Some(session.id.to_string())
    } else {
        match gen.sessions.rotate(&session.id).await {
            Ok(id) => id,
            Err(e) => {
                // The login itself stands; the id stays as it was, as before rotation existed.
                crate::warn_throttled!(
                    "store failures",
                    "rotating session {} failed: {e}",
                    redact(&session.id)
                );
                None
            }
        }
    };
    let Some(current) = current else {
        return Ok(());
    };
    if located.by == Locator::Cookie {
        if let Some(name) = gen.config.locate.cookie.as_deref() {
            let secure = if tls { "; Secure" } else { "" };
            let cookie = format!("{name}={current}; Path=/; HttpOnly; SameSite=Lax{secure}");
            resp.append_header(http::header::SET_COOKIE, cookie)?;
        }
    }
    if let Some(name) = gen.identity.session_id_header() {
        resp.insert_header(name.clone(), current)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_locators_rotate() {
        use Locator::*;
        let all = [Header, Cookie, Query, Path, JsonBody, Flavor];
        for by in all {
            assert!(!applies(RotateOnLogin::Never, by));
            assert_eq!(applies(RotateOnLogin::Cookie, by), by == Cookie);
            assert_eq!(applies(RotateOnLogin::Always, by), by != Flavor);
        }
    }
}
