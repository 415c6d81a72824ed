//! `[store.redis]` validated (SPEC §7, §13.4): which topology (standalone, Cluster, Sentinel),
//! TLS material and the ACL password read from their files at load, so `check-config` finds
//! every problem and the store never reads a file. Errors point at the offending key.

use super::file::RedisSection;
use super::runtime::{err, span_of, ValidationError};
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Standalone: exactly one URL; Cluster: the seeds; Sentinel: empty.
    pub urls: Vec<String>,
    pub cluster: bool,
    /// Sentinel: `host:port` of each sentinel (empty otherwise).
    pub sentinels: Vec<String>,
    pub sentinel_master: String,
    pub key_prefix: String,
    pub near_cache_ttl: Duration,
    pub degraded_grace: Duration,
    pub timeout: Duration,
    /// `rediss://` material (or, with Sentinel, the master's TLS).
    pub tls: Option<RedisTls>,
    pub username: Option<String>,
    pub password: Option<RedisPassword>,
    pub wait_for_replicas: u32,
}

impl Default for RedisSettings {
    /// The file's defaults: one local standalone Redis, no TLS, no ACL user.
    fn default() -> Self {
        RedisSettings {
            urls: vec![DEFAULT_URL.to_string()],
            cluster: false,
            sentinels: Vec::new(),
            sentinel_master: String::new(),
            key_prefix: "session-sidecar:".into(),
            near_cache_ttl: Duration::from_secs(1),
            degraded_grace: Duration::from_secs(30),
            timeout: Duration::from_millis(500),
            tls: None,
            username: None,
            password: None,
            wait_for_replicas: 0,
        }
    }
}

impl RedisSettings {
    pub fn sentinel(&self) -> bool {
        !self.sentinels.is_empty()
    }

    /// What the operator would recognise in a log line: the URLs' hosts or the sentinels.
    pub fn describe(&self) -> String {
        if self.sentinel() {
            format!(
                "master \"{}\" of sentinels {}",
                self.sentinel_master,
                self.sentinels.join(", ")
            )
        } else {
            self.urls.join(", ")
        }
    }
}

/// PEM files for TLS connections to Redis, as redis-rs takes them.
#[derive(Clone)]
pub struct RedisTls {
    /// None: the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca", &self.ca_pem.is_some())
            .field("client_cert", &self.client_cert_pem.is_some())
            .finish()
    }
}

/// The ACL password; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisPassword(pub String);

impl std::fmt::Debug for RedisPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisPassword(<redacted>)")
    }
}

pub(super) fn validate(
    r: &RedisSection,
    base_dir: &Path,
    backend_is_redis: bool,
) -> Result<RedisSettings, ValidationError> {
    let cluster = r.cluster.as_ref().is_some_and(|c| *c.get_ref());
    let sentinels: Vec<String> = r
        .sentinels
        .as_ref()
        .map(|s| s.get_ref().clone())
        .unwrap_or_default();
    if let Some(s) = &r.sentinels {
        if let Some(u) = &r.urls {
            return err(
                span_of(u),
                "store.redis.urls and store.redis.sentinels are mutually exclusive: with \
                 Sentinel the master's address comes from the sentinels",
            );
        }
        if let Some(c) = r.cluster.as_ref().filter(|c| *c.get_ref()) {
            return err(
                span_of(c),
                "store.redis.cluster = true and store.redis.sentinels are mutually exclusive \
                 (Redis Cluster fails over by itself)",
            );
        }
        if s.get_ref().is_empty() {
            return err(
                span_of(s),
                "store.redis.sentinels needs at least one \"host:port\"",
            );
        }
        for addr in s.get_ref() {
            let ok = addr
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return err(
                    span_of(s),
                    format!("store.redis.sentinels: \"{addr}\" is not \"host:port\""),
                );
            }
        }
        if r.sentinel_master.is_none() {
            return err(
                span_of(s),
                "store.redis.sentinels needs store.redis.sentinel_master (the name the \
                 sentinels monitor)",
            );
        }
    } else if let Some(m) = &r.sentinel_master {
        return err(
            span_of(m),
            "store.redis.sentinel_master needs store.redis.sentinels",
        );
    }
    let sentinel_master = match &r.sentinel_master {
        Some(m) if m.get_ref().trim().is_empty() => {
            return err(span_of(m), "store.redis.sentinel_master must not be empty")
        }
        Some(m) => m.get_ref().clone(),
        None => String::new(),
    };

    let urls: Vec<String> = match (&r.urls, sentinels.is_empty()) {
        (_, false) => Vec::new(),
        (Some(u), true) => u.get_ref().clone(),
        (None, true) => vec![DEFAULT_URL.to_string()],
    };
    let urls_span = r.urls.as_ref().and_then(span_of);
    if sentinels.is_empty() {
        if backend_is_redis && urls.is_empty() {
            return err(
                urls_span,
                "store.redis.urls needs at least one URL for the redis backend",
            );
        }
        if !cluster && urls.len() > 1 {
            return err(
                urls_span,
                "store.redis.urls must hold exactly one URL unless store.redis.cluster = true \
                 (or use store.redis.sentinels for Sentinel)",
            );
        }
    }
    let mut tls_urls = 0;
    for url in &urls {
        let scheme = url.split_once("://").map(|(s, _)| s);
        match scheme {
            Some("redis") => {}
            Some("rediss") => tls_urls += 1,
            _ => {
                return err(
                    urls_span,
                    format!("store.redis.urls: \"{url}\" must start with redis:// or rediss://"),
                )
            }
        }
        if url_has_password(url) {
            return err(
                urls_span,
                "store.redis.urls: a URL holds a password; put it in the file named by \
                 store.redis.password_file (and the user in store.redis.username) instead",
            );
        }
    }
    if tls_urls != 0 && tls_urls != urls.len() {
        return err(
            urls_span,
            "store.redis.urls: either every URL is rediss:// (TLS) or none is",
        );
    }

    let tls_files = r.ca_file.is_some() || r.client_cert_file.is_some();
    if tls_files && tls_urls == 0 && sentinels.is_empty() {
        let at = r.ca_file.as_ref().or(r.client_cert_file.as_ref());
        return err(
            at.and_then(span_of),
            "store.redis.ca_file and client_cert_file apply to rediss:// URLs (TLS); the URLs \
             here are redis://",
        );
    }
    match (&r.client_cert_file, &r.client_key_file) {
        (Some(c), None) => {
            return err(
                span_of(c),
                "store.redis.client_cert_file needs store.redis.client_key_file",
            )
        }
        (None, Some(k)) => {
            return err(
                span_of(k),
                "store.redis.client_key_file needs store.redis.client_cert_file",
            )
        }
        _ => {}
    }
    let read_pem = |v: &Option<Spanned<String>>,
                    what: &str,
                    key: bool|
     -> Result<Option<Vec<u8>>, ValidationError> {
        let Some(v) = v else { return Ok(None) };
        let path = base_dir.join(v.get_ref());
        let checked = if key {
            super::pem::read_private_key(&path).map(drop)
        } else {
            super::pem::read_certificates(&path).map(drop)
        };
        match checked.and_then(|()| {
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        }) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) => err(span_of(v), format!("store.redis.{what}: {e}")),
        }
    };
    let tls = if tls_urls > 0 || (tls_files && !sentinels.is_empty()) {
        Some(RedisTls {
            ca_pem: read_pem(&r.ca_file, "ca_file", false)?,
            client_cert_pem: read_pem(&r.client_cert_file, "client_cert_file", false)?,
            client_key_pem: read_pem(&r.client_key_file, "client_key_file", true)?,
        })
    } else {
        None
    };

    let username = match &r.username {
        Some(u) if u.get_ref().is_empty() || u.get_ref().contains(char::is_whitespace) => {
            return err(
                span_of(u),
                "store.redis.username must be a non-empty name without spaces",
            )
        }
        Some(u) => Some(u.get_ref().clone()),
        None => None,
    };
    let password = match &r.password_file {
        None => None,
        Some(p) => {
            let path = base_dir.join(p.get_ref());
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    return err(
                        span_of(p),
                        format!(
                            "store.redis.password_file: cannot read {}: {e}",
                            path.display()
                        ),
                    )
                }
            };
            // Editors and `echo` add a final newline; it is never part of the password.
            let password = text
                .strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(&text);
            if password.is_empty() {
                return err(
                    span_of(p),
                    format!("store.redis.password_file: {} is empty", path.display()),
                );
            }
            Some(RedisPassword(password.to_string()))
        }
    };
    if username.is_some() && password.is_none() {
        if let Some(u) = &r.username {
            return err(
                span_of(u),
                "store.redis.username needs store.redis.password_file (the user's password)",
            );
        }
    }
    if cluster && *r.wait_for_replicas.get_ref() > 0 {
        return err(
            span_of(&r.wait_for_replicas),
            "store.redis.wait_for_replicas is for standalone and Sentinel deployments; a Redis \
             Cluster write would need a WAIT on each session's own master",
        );
    }
    Ok(RedisSettings {
        urls,
        cluster,
        sentinels,
        sentinel_master,
        key_prefix: r.key_prefix.clone(),
        near_cache_ttl: r.near_cache_ttl.0,
        degraded_grace: r.degraded_grace.0,
        timeout: r.timeout.0,
        tls,
        username,
        password,
        wait_for_replicas: *r.wait_for_replicas.get_ref(),
    })
}

/// `redis://user:secret@host` or `redis://:secret@host`.
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.split_once(':').is_some_and(|(_, p)| !p.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::url_has_password;

    #[test]
    fn passwords_in_urls_are_found() {
        assert!(url_has_password("redis://:pw@h:6379"));
        assert!(url_has_password("rediss://u:pw@h:6379/0"));
        assert!(!url_has_password("redis://u@h:6379"));
        assert!(!url_has_password("redis://h:6379/0"));
        assert!(!url_has_password("redis://h:6379/0?x=a:b@c"));
    }
}
