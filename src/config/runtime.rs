//! The validated runtime config: what the proxy, store and flavours actually use.
//!
//! Everything that can be checked or precomputed at load time is done here (addresses resolved,
//! header names lowercased, hashes decoded, path templates split), so request paths do no
//! parsing of their own.

use super::address::Resolver;
use super::file::{self, FileConfig};
pub use super::file::{
    AccessLogFormat, AuthMode, RotateOnLogin, SessionMode, StoreBackend, TlsVersion,
};
pub use super::redis::{RedisPassword, RedisSettings, RedisTls};
pub use super::tls::{ClientCa, ListenerTls, ServerCert};
use http::header::HeaderName;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

/// A validation failure, tied to the byte span of the offending value when known.
#[derive(Debug)]
pub struct ValidationError {
    pub span: Option<Range<usize>>,
    pub message: String,
}

pub(super) fn err<T>(
    span: Option<Range<usize>>,
    message: impl Into<String>,
) -> Result<T, ValidationError> {
    Err(ValidationError {
        // Spans of defaults are 0..0: they point nowhere in the file.
        span: span.filter(|s| s.end > 0),
        message: message.into(),
    })
}

pub(super) fn span_of<T>(v: &Spanned<T>) -> Option<Range<usize>> {
    Some(v.span())
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this config came from (reloads re-read it).
    pub source: PathBuf,
    pub server: ServerSettings,
    pub upstreams: BTreeMap<String, UpstreamSettings>,
    pub routes: RouteSettings,
    pub sessions: SessionSettings,
    pub locate: LocateSettings,
    pub identity_headers: IdentityHeaderSettings,
    pub rate_limits: RateLimitSettings,
    pub store: StoreSettings,
    pub credentials: Vec<CredentialSettings>,
    pub jwt: Option<JwtSettings>,
    pub applications: HashMap<String, ApplicationSettings>,
    pub flavors: FlavorSettings,
    pub access_log: AccessLogSettings,
    pub tracing: TracingSettings,
}

/// Tracing (SPEC §13.5). The exporter (endpoint, service name) starts with the process;
/// `enabled` and `sample_ratio` follow reloads.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    pub enabled: bool,
    pub otlp_endpoint: String,
    pub sample_ratio: f64,
    pub service_name: String,
}

/// The access log and audit events (SPEC §13.5). The sink (`path`) is opened once at start;
/// `enabled`, `format` and `sample_ratio` follow reloads.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogSettings {
    pub enabled: bool,
    /// `None`: stdout.
    pub path: Option<PathBuf>,
    pub format: AccessLogFormat,
    pub sample_ratio: f64,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: Vec<SocketAddr>,
    pub admin_listen: SocketAddr,
    /// Failed admin authentications one client IP may make a minute; 0 = no limit.
    pub admin_auth_failures_per_minute: u32,
    pub threads: usize,
    /// Shutdown, phase one: connections already accepted are served this long (pingora's
    /// `grace_period_seconds`, slept in full).
    pub grace_period: Duration,
    /// Shutdown, phase two: then the runtimes get this long to finish what is left
    /// (`graceful_shutdown_timeout_seconds`).
    pub drain_timeout: Duration,
    pub max_body: usize,
    pub upgrade_sock: String,
    pub pid_file: String,
    pub http: HttpLimits,
    /// Speak HTTP/2 to clients as well (SPEC §13.3).
    pub http2: bool,
    /// Proxy listeners that speak TLS with `tls` (SPEC §13.3).
    pub tls_listen: Vec<SocketAddr>,
    /// Set exactly when `tls_listen` is not empty.
    pub tls: Option<ListenerTls>,
    /// The admin listener speaks TLS with these when set.
    pub admin_tls: Option<ListenerTls>,
}

/// Client connection limits of SPEC §13.1, enforced by `proxy::framing` on every listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Request line + header lines, in bytes (larger: 431).
    pub max_header_size: usize,
    /// Header lines (more: 431).
    pub max_headers: usize,
    /// Request target, in bytes (longer: 414).
    pub max_uri: usize,
    /// Requests one client connection may carry.
    pub keepalive_requests: u32,
    /// How long an idle client connection is kept; zero turns keep-alive off.
    pub keepalive_timeout: Duration,
}

/// pingora's own ceilings (`MAX_HEADER_SIZE`, `MAX_HEADERS` in pingora-core 0.9.1): beyond
/// them its parser answers 400 before the sidecar sees the request, so larger limits would
/// never apply.
pub const PINGORA_MAX_HEADER_SIZE: u64 = 1_048_575;
pub const PINGORA_MAX_HEADERS: usize = 256;

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub name: String,
    pub address: SocketAddr,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub idle_timeout: Duration,
    /// HTTPS to the app (SPEC §13.3); `None` is plain HTTP.
    pub tls: Option<UpstreamTls>,
}

/// How the sidecar speaks TLS to an upstream. Certificates and keys are DER, checked at load.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// Sent as SNI and verified against the certificate (a host name or an IP address).
    pub sni: String,
    /// Roots the app's certificate must chain to; `None`: the system's roots.
    pub ca: Option<Vec<Vec<u8>>>,
    /// Client certificate chain (leaf first) and key, for mTLS.
    pub client: Option<(Vec<Vec<u8>>, Vec<u8>)>,
    /// Verify the certificate and the name (`verify = false` skips both).
    pub verify: bool,
}

/// What a route (or the `[proxy]` defaults) asks of a forwarded request.
#[derive(Debug, Clone)]
pub struct RoutePolicy {
    /// The route's `path_prefix` (access log `route`); `None` for the `[proxy]` defaults.
    pub name: Option<Arc<str>>,
    /// Shared, so a forwarded request takes its upstream's name without copying it.
    pub upstream: Arc<str>,
    pub auth: AuthMode,
    pub session: SessionMode,
    /// Remove the credential headers the sidecar validated before forwarding (SPEC §13.7).
    pub strip_credentials: bool,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub path_prefix: String,
    /// Upper-case method names; `None` matches every method.
    pub methods: Option<Vec<String>>,
    pub policy: RoutePolicy,
}

#[derive(Debug, Clone)]
pub struct RouteSettings {
    pub routes: Vec<Route>,
    pub default: RoutePolicy,
}

impl RouteSettings {
    /// First route whose prefix and method match, else the `[proxy]` defaults.
    pub fn select(&self, method: &str, path: &str) -> &RoutePolicy {
        self.routes
            .iter()
            .find(|r| {
                path.starts_with(r.path_prefix.as_str())
                    && r.methods
                        .as_ref()
                        .is_none_or(|m| m.iter().any(|x| x == method))
            })
            .map_or(&self.default, |r| &r.policy)
    }
}

#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    pub max_sessions: u64,
    pub max_sessions_per_customer: u64,
    pub isolate_by_credential: bool,
    pub rotate_on_login: RotateOnLogin,
    /// How long a rotated-away id still resolves to the session's new id.
    pub rotation_grace: Duration,
}

/// A path template such as `/Web/Session/{key}`: literal text before and after the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    pub prefix: String,
    /// Text that must follow the key (up to the next `/` or the end), usually empty.
    pub suffix: String,
}

#[derive(Debug, Clone)]
pub struct LocateSettings {
    /// Lowercased header name.
    pub header: Option<HeaderName>,
    pub cookie: Option<String>,
    pub query: Option<String>,
    pub path: Vec<PathTemplate>,
    /// Field paths split at dots: `session.key` is `["session", "key"]`.
    pub json_body: Vec<Vec<String>>,
}

/// Names of the identity headers; each is optional (left out of the file = not sent).
#[derive(Debug, Clone, Default)]
pub struct IdentityHeaderSettings {
    pub session_id: Option<HeaderName>,
    pub customer_id: Option<HeaderName>,
    pub agent_id: Option<HeaderName>,
    pub visit_id: Option<HeaderName>,
    pub global_visit_id: Option<HeaderName>,
    pub application_key: Option<HeaderName>,
    pub logged_in: Option<HeaderName>,
    pub credential: Option<HeaderName>,
    pub signature: Option<HeaderName>,
    /// HMAC key for `signature`; at least 32 bytes.
    pub signing_key: Option<Arc<Vec<u8>>>,
    pub assert_customer_id: Option<HeaderName>,
}

impl IdentityHeaderSettings {
    /// Every header name a client must never be able to set.
    pub fn all_names(&self) -> Vec<HeaderName> {
        [
            &self.session_id,
            &self.customer_id,
            &self.agent_id,
            &self.visit_id,
            &self.global_visit_id,
            &self.application_key,
            &self.logged_in,
            &self.credential,
            &self.signature,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateLimitSettings {
    pub create_per_credential: u32,
    pub create_per_ip: u32,
    pub forward_per_session: u32,
}

#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub backend: StoreBackend,
    pub snapshot_file: Option<PathBuf>,
    pub snapshot_interval: Duration,
    pub redis: RedisSettings,
}

/// How a credential proves itself.
#[derive(Debug, Clone)]
pub enum SecretSettings {
    /// SHA-256 of a bearer token.
    Bearer { token_sha256: [u8; 32] },
    /// An app id with the SHA-256 of its app token.
    AppPair {
        app_id: String,
        app_token_sha256: [u8; 32],
    },
    /// `Authorization: Basic` user with the SHA-256 of its password (SPEC §13.7).
    Basic {
        user: String,
        password_sha256: [u8; 32],
    },
}

/// Which SpreadsheetWEB applications a credential may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplicationAccess {
    All,
    Only(HashSet<String>),
}

impl ApplicationAccess {
    pub fn from_list(list: &[String]) -> Self {
        if list.iter().any(|a| a == "*") {
            ApplicationAccess::All
        } else {
            ApplicationAccess::Only(list.iter().cloned().collect())
        }
    }

    pub fn allows(&self, application_key: &str) -> bool {
        match self {
            ApplicationAccess::All => true,
            ApplicationAccess::Only(set) => set.contains(application_key),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CredentialSettings {
    pub name: String,
    pub secret: SecretSettings,
    pub applications: ApplicationAccess,
    pub admin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    Url(String),
}

#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub jwks: JwksSource,
    pub jwks_refresh: Duration,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Upper-case algorithm names from the allow-list (never `none`, never HS*).
    pub algorithms: Vec<String>,
    pub leeway: Duration,
    pub applications_claim: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ApplicationSettings {
    pub key: String,
    pub name: Option<String>,
    /// 0 = no limit.
    pub max_sessions: u64,
}

#[derive(Debug, Clone, Default)]
pub struct FlavorSettings {
    pub spreadsheetweb: Option<SpreadsheetWebSettings>,
    pub knowledge_center: Option<KnowledgeCenterSettings>,
    pub tessitura: Option<TessituraSettings>,
    pub voucherify: Option<VoucherifySettings>,
}

#[derive(Debug, Clone)]
pub struct SpreadsheetWebSettings {
    pub base_path: String,
}

#[derive(Debug, Clone)]
pub struct KnowledgeCenterSettings {
    pub base_path: String,
    pub auth: AuthMode,
    pub allow_client_ids: bool,
}

#[derive(Debug, Clone)]
pub struct TessituraSettings {
    pub base_path: String,
    pub auth: AuthMode,
    pub default_mode_of_sale: i64,
    pub default_source_id: i64,
    pub transfer_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct VoucherifySettings {
    pub base_path: String,
    pub max_ttl: Duration,
    /// Code -> quantity of concurrent locks allowed.
    pub limits: HashMap<String, u64>,
}

/// Checks the parsed file and builds the runtime config.
pub fn validate(
    f: FileConfig,
    source: &Path,
    resolver: Resolver,
) -> Result<Config, ValidationError> {
    let base_dir = source.parent().map(Path::to_path_buf).unwrap_or_default();
    let server = validate_server(&f.server, &base_dir, resolver)?;
    let upstreams = validate_upstreams(&f.upstreams, &base_dir, resolver)?;
    let routes = validate_routes(&f.proxy, &f.routes, &upstreams)?;
    let sessions = SessionSettings {
        idle_timeout: f.sessions.idle_timeout.0,
        absolute_timeout: f.sessions.absolute_timeout.0,
        max_sessions: f.sessions.max_sessions,
        max_sessions_per_customer: f.sessions.max_sessions_per_customer,
        isolate_by_credential: f.sessions.isolate_by_credential,
        rotate_on_login: f.sessions.rotate_on_login,
        rotation_grace: f.sessions.rotation_grace.0,
    };
    if sessions.idle_timeout.is_zero() || sessions.absolute_timeout.is_zero() {
        return err(
            None,
            "sessions.idle_timeout and sessions.absolute_timeout must be greater than zero",
        );
    }
    if sessions.max_sessions == 0 {
        return err(None, "sessions.max_sessions must be at least 1");
    }
    let locate = validate_locate(&f.sessions.locate)?;
    let identity_headers = validate_identity_headers(&f.identity_headers, &base_dir)?;
    let rate_limits = RateLimitSettings {
        create_per_credential: f.rate_limits.create_per_credential,
        create_per_ip: f.rate_limits.create_per_ip,
        forward_per_session: f.rate_limits.forward_per_session,
    };
    let store = validate_store(&f.store, &base_dir)?;
    let credentials = validate_credentials(&f.credentials)?;
    let jwt = f
        .jwt
        .as_ref()
        .map(|j| validate_jwt(j, &base_dir))
        .transpose()?;
    let applications = validate_applications(&f.applications)?;
    let flavors = validate_flavors(&f.flavors)?;
    let access_log = validate_access_log(&f.access_log, &base_dir)?;
    let tracing = validate_tracing(&f.tracing)?;
    Ok(Config {
        source: source.to_path_buf(),
        server,
        upstreams,
        routes,
        sessions,
        locate,
        identity_headers,
        rate_limits,
        store,
        credentials,
        jwt,
        applications,
        flavors,
        access_log,
        tracing,
    })
}

fn validate_tracing(t: &file::TracingSection) -> Result<TracingSettings, ValidationError> {
    let ratio = *t.sample_ratio.get_ref();
    if !(0.0..=1.0).contains(&ratio) {
        return err(
            span_of(&t.sample_ratio),
            "tracing.sample_ratio must be between 0.0 and 1.0",
        );
    }
    let endpoint = t.otlp_endpoint.get_ref().trim();
    let parsed = endpoint.parse::<http::Uri>().ok();
    if !parsed
        .as_ref()
        .is_some_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some())
    {
        return err(
            span_of(&t.otlp_endpoint),
            format!("tracing.otlp_endpoint: {endpoint:?} is not an http(s):// URL"),
        );
    }
    Ok(TracingSettings {
        enabled: t.enabled,
        otlp_endpoint: endpoint.to_string(),
        sample_ratio: ratio,
        service_name: t.service_name.clone(),
    })
}

fn validate_access_log(
    a: &file::AccessLogSection,
    base_dir: &Path,
) -> Result<AccessLogSettings, ValidationError> {
    let ratio = *a.sample_ratio.get_ref();
    if !(0.0..=1.0).contains(&ratio) {
        return err(
            span_of(&a.sample_ratio),
            "access_log.sample_ratio must be between 0.0 and 1.0",
        );
    }
    let path = match a.path.get_ref().trim() {
        "-" => None,
        "" => {
            return err(
                span_of(&a.path),
                "access_log.path is empty (\"-\" is stdout)",
            )
        }
        p => Some(base_dir.join(p)),
    };
    Ok(AccessLogSettings {
        enabled: a.enabled,
        path,
        format: a.format,
        sample_ratio: ratio,
    })
}

fn parse_listen(
    v: &Spanned<String>,
    what: &str,
    resolver: Resolver,
) -> Result<SocketAddr, ValidationError> {
    match resolver.resolve(v.get_ref()) {
        Some(addr) => Ok(addr),
        None => err(
            span_of(v),
            format!(
                "{what}: {:?} is not an address like \"127.0.0.1:8080\"",
                v.get_ref()
            ),
        ),
    }
}

fn validate_server(
    s: &file::ServerSection,
    base_dir: &Path,
    resolver: Resolver,
) -> Result<ServerSettings, ValidationError> {
    if s.listen.is_empty() && s.tls_listen.is_empty() {
        return err(
            None,
            "server.listen and server.tls_listen need at least one address between them",
        );
    }
    let listen = s
        .listen
        .iter()
        .map(|l| parse_listen(l, "server.listen", resolver))
        .collect::<Result<Vec<_>, _>>()?;
    let tls_listen = s
        .tls_listen
        .iter()
        .map(|l| parse_listen(l, "server.tls_listen", resolver))
        .collect::<Result<Vec<_>, _>>()?;
    let admin_listen = parse_listen(&s.admin_listen, "server.admin_listen", resolver)?;
    // Two listeners on one address would fail only when the server binds them.
    let mut bound = HashSet::new();
    let every = s
        .listen
        .iter()
        .zip(&listen)
        .chain(s.tls_listen.iter().zip(&tls_listen))
        .chain([(&s.admin_listen, &admin_listen)]);
    for (value, addr) in every {
        if !bound.insert(*addr) {
            return err(
                span_of(value),
                format!("{addr} is listed twice among server.listen, server.tls_listen and server.admin_listen"),
            );
        }
    }
    match (s.tls_listen.first(), &s.tls) {
        (Some(first), None) => {
            return err(
                span_of(first),
                "server.tls_listen needs a [server.tls] table with cert_file and key_file",
            )
        }
        (None, Some(t)) => {
            return err(
                span_of(&t.cert_file),
                "[server.tls] is set but server.tls_listen is empty: name the TLS listeners",
            )
        }
        _ => {}
    }
    let tls = s
        .tls
        .as_ref()
        .map(|t| super::tls::validate(t, "server.tls", base_dir))
        .transpose()?;
    let admin_tls = s
        .admin_tls
        .as_ref()
        .map(|t| super::tls::validate(t, "server.admin_tls", base_dir))
        .transpose()?;
    if s.threads == 0 {
        return err(None, "server.threads must be at least 1");
    }
    if s.max_body.0 == 0 {
        return err(None, "server.max_body must be greater than zero");
    }
    let http = validate_http_limits(s)?;
    Ok(ServerSettings {
        listen,
        admin_listen,
        admin_auth_failures_per_minute: s.admin_auth_failures_per_minute,
        threads: s.threads,
        grace_period: s.grace_period.0,
        drain_timeout: s.drain_timeout.0,
        max_body: usize::try_from(s.max_body.0).unwrap_or(usize::MAX),
        upgrade_sock: s.upgrade_sock.clone(),
        pid_file: s.pid_file.clone(),
        http,
        http2: s.http2,
        tls_listen,
        tls,
        admin_tls,
    })
}

fn validate_http_limits(s: &file::ServerSection) -> Result<HttpLimits, ValidationError> {
    let size = |v: &Spanned<super::units::ConfigSize>, what: &str| {
        let n = v.get_ref().0;
        if n == 0 || n > PINGORA_MAX_HEADER_SIZE {
            return err(
                span_of(v),
                format!("server.{what} must be between 1 and {PINGORA_MAX_HEADER_SIZE} bytes"),
            );
        }
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    };
    let max_header_size = size(&s.max_header_size, "max_header_size")?;
    let max_uri = size(&s.max_uri, "max_uri")?;
    let max_headers = *s.max_headers.get_ref();
    if max_headers == 0 || max_headers > PINGORA_MAX_HEADERS {
        return err(
            span_of(&s.max_headers),
            format!("server.max_headers must be between 1 and {PINGORA_MAX_HEADERS}"),
        );
    }
    let keepalive_requests = *s.keepalive_requests.get_ref();
    if keepalive_requests == 0 {
        return err(
            span_of(&s.keepalive_requests),
            "server.keepalive_requests must be at least 1",
        );
    }
    Ok(HttpLimits {
        max_header_size,
        max_headers,
        max_uri,
        keepalive_requests,
        keepalive_timeout: s.keepalive_timeout.0,
    })
}

fn validate_upstreams(
    ups: &BTreeMap<String, file::UpstreamSection>,
    base_dir: &Path,
    resolver: Resolver,
) -> Result<BTreeMap<String, UpstreamSettings>, ValidationError> {
    let mut out = BTreeMap::new();
    for (name, u) in ups {
        let address = match resolver.resolve(u.address.get_ref()) {
            Some(a) => a,
            None => {
                return err(
                    span_of(&u.address),
                    format!(
                        "upstreams.{name}.address: cannot resolve {:?} (expected host:port)",
                        u.address.get_ref()
                    ),
                )
            }
        };
        out.insert(
            name.clone(),
            UpstreamSettings {
                name: name.clone(),
                address,
                connect_timeout: u.connect_timeout.0,
                read_timeout: u.read_timeout.0,
                idle_timeout: u.idle_timeout.0,
                tls: validate_upstream_tls(name, u, base_dir)?,
            },
        );
    }
    Ok(out)
}

/// `[upstreams.NAME]`'s TLS keys: files read and checked now, each error at its key.
fn validate_upstream_tls(
    name: &str,
    u: &file::UpstreamSection,
    base_dir: &Path,
) -> Result<Option<UpstreamTls>, ValidationError> {
    let key = |k: &str| format!("upstreams.{name}.{k}");
    if !u.tls {
        let stray = [&u.sni, &u.ca_file, &u.client_cert_file, &u.client_key_file]
            .into_iter()
            .flatten()
            .next();
        if let Some(s) = stray {
            return err(
                span_of(s),
                format!("{}: TLS settings need `tls = true`", key("tls")),
            );
        }
        return Ok(None);
    }
    let file = |v: &Spanned<String>| base_dir.join(v.get_ref());
    let ca = match &u.ca_file {
        Some(f) => Some(
            super::pem::read_certificates(&file(f))
                .or_else(|e| err(span_of(f), format!("{}: {e}", key("ca_file"))))?,
        ),
        None => None,
    };
    let client = match (&u.client_cert_file, &u.client_key_file) {
        (Some(c), Some(k)) => {
            let chain = super::pem::read_certificates(&file(c))
                .or_else(|e| err(span_of(c), format!("{}: {e}", key("client_cert_file"))))?;
            let private = super::pem::read_private_key(&file(k))
                .or_else(|e| err(span_of(k), format!("{}: {e}", key("client_key_file"))))?;
            Some((chain, private))
        }
        (None, None) => None,
        (Some(one), None) | (None, Some(one)) => {
            return err(
                span_of(one),
                format!(
                    "{} and {} go together",
                    key("client_cert_file"),
                    key("client_key_file")
                ),
            )
        }
    };
    let sni = match &u.sni {
        Some(s) if !s.get_ref().trim().is_empty() => s.get_ref().trim().to_string(),
        Some(s) => return err(span_of(s), format!("{} is empty", key("sni"))),
        None => host_of(u.address.get_ref()).to_string(),
    };
    let verify = u.verify.as_ref().is_none_or(|v| *v.get_ref());
    Ok(Some(UpstreamTls {
        sni,
        ca,
        client,
        verify,
    }))
}

/// The host of `host:port` (`[v6]:port` → `v6`).
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn check_upstream(
    name: &Spanned<String>,
    upstreams: &BTreeMap<String, UpstreamSettings>,
    what: &str,
) -> Result<(), ValidationError> {
    if upstreams.contains_key(name.get_ref()) {
        Ok(())
    } else {
        let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
        err(
            span_of(name),
            format!(
                "{what}: upstream {:?} is not defined (defined: {})",
                name.get_ref(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        )
    }
}

fn validate_routes(
    proxy: &file::ProxySection,
    routes: &[file::RouteSection],
    upstreams: &BTreeMap<String, UpstreamSettings>,
) -> Result<RouteSettings, ValidationError> {
    check_upstream(&proxy.default_upstream, upstreams, "proxy.default_upstream")?;
    let default = RoutePolicy {
        name: None,
        upstream: proxy.default_upstream.get_ref().as_str().into(),
        auth: proxy.default_auth,
        session: proxy.default_session,
        strip_credentials: proxy.strip_credentials,
    };
    let mut out = Vec::with_capacity(routes.len());
    for r in routes {
        let prefix = r.path_prefix.get_ref();
        if !prefix.starts_with('/') {
            return err(
                span_of(&r.path_prefix),
                "routes.path_prefix must start with '/'",
            );
        }
        let upstream = match &r.upstream {
            Some(u) => {
                check_upstream(u, upstreams, "routes.upstream")?;
                u.get_ref().as_str().into()
            }
            None => default.upstream.clone(),
        };
        let methods = match &r.methods {
            Some(m) => {
                let mut list = Vec::new();
                for name in m.get_ref() {
                    if http::Method::from_bytes(name.as_bytes()).is_err() || name.is_empty() {
                        return err(
                            span_of(m),
                            format!("routes.methods: {name:?} is not an HTTP method"),
                        );
                    }
                    list.push(name.to_ascii_uppercase());
                }
                Some(list)
            }
            None => None,
        };
        out.push(Route {
            path_prefix: prefix.clone(),
            methods,
            policy: RoutePolicy {
                name: Some(prefix.as_str().into()),
                upstream,
                auth: r.auth.unwrap_or(default.auth),
                session: r.session.unwrap_or(default.session),
                strip_credentials: r.strip_credentials.unwrap_or(default.strip_credentials),
            },
        });
    }
    Ok(RouteSettings {
        routes: out,
        default,
    })
}

fn header_name(v: &Spanned<String>, what: &str) -> Result<HeaderName, ValidationError> {
    HeaderName::from_bytes(v.get_ref().trim().as_bytes()).or_else(|_| {
        err(
            span_of(v),
            format!("{what}: {:?} is not a valid header name", v.get_ref()),
        )
    })
}

fn validate_locate(l: &file::LocateSection) -> Result<LocateSettings, ValidationError> {
    let header = match &l.header {
        Some(h) if !h.trim().is_empty() => {
            Some(HeaderName::from_bytes(h.trim().as_bytes()).or_else(|_| {
                err(
                    None,
                    format!("sessions.locate.header: {h:?} is not a valid header name"),
                )
            })?)
        }
        _ => None,
    };
    let mut path = Vec::new();
    for t in &l.path {
        let text = t.get_ref();
        let Some((prefix, suffix)) = text.split_once("{key}") else {
            return err(
                span_of(t),
                format!("sessions.locate.path: {text:?} has no {{key}}"),
            );
        };
        if !prefix.starts_with('/') || suffix.contains("{key}") || suffix.contains('/') {
            return err(
                span_of(t),
                format!("sessions.locate.path: {text:?} must start with '/' and hold one {{key}} in one path segment"),
            );
        }
        path.push(PathTemplate {
            prefix: prefix.to_string(),
            suffix: suffix.to_string(),
        });
    }
    let mut json_body = Vec::new();
    for p in &l.json_body {
        let parts: Vec<String> = p.get_ref().split('.').map(str::to_string).collect();
        if parts.iter().any(String::is_empty) {
            return err(
                span_of(p),
                format!(
                    "sessions.locate.json_body: {:?} is not a field path like \"session.key\"",
                    p.get_ref()
                ),
            );
        }
        json_body.push(parts);
    }
    let non_empty = |s: &Option<String>| s.as_ref().filter(|v| !v.trim().is_empty()).cloned();
    Ok(LocateSettings {
        header,
        cookie: non_empty(&l.cookie),
        query: non_empty(&l.query),
        path,
        json_body,
    })
}

fn validate_identity_headers(
    h: &file::IdentityHeadersSection,
    base_dir: &Path,
) -> Result<IdentityHeaderSettings, ValidationError> {
    let name =
        |v: &Option<Spanned<String>>, what: &str| -> Result<Option<HeaderName>, ValidationError> {
            match v {
                Some(s) if !s.get_ref().trim().is_empty() => header_name(s, what).map(Some),
                _ => Ok(None),
            }
        };
    let signing_key = match &h.signing_key_file {
        Some(p) => {
            let path = base_dir.join(p.get_ref());
            let mut bytes = std::fs::read(&path).or_else(|e| {
                err(
                    span_of(p),
                    format!(
                        "identity_headers.signing_key_file: cannot read {}: {e}",
                        path.display()
                    ),
                )
            })?;
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
            }
            if bytes.len() < 32 {
                return err(
                    span_of(p),
                    format!("identity_headers.signing_key_file: the key has {} bytes, at least 32 are needed", bytes.len()),
                );
            }
            Some(Arc::new(bytes))
        }
        None => None,
    };
    let out = IdentityHeaderSettings {
        session_id: name(&h.session_id, "identity_headers.session_id")?,
        customer_id: name(&h.customer_id, "identity_headers.customer_id")?,
        agent_id: name(&h.agent_id, "identity_headers.agent_id")?,
        visit_id: name(&h.visit_id, "identity_headers.visit_id")?,
        global_visit_id: name(&h.global_visit_id, "identity_headers.global_visit_id")?,
        application_key: name(&h.application_key, "identity_headers.application_key")?,
        logged_in: name(&h.logged_in, "identity_headers.logged_in")?,
        credential: name(&h.credential, "identity_headers.credential")?,
        signature: name(&h.signature, "identity_headers.signature")?,
        signing_key,
        assert_customer_id: name(&h.assert_customer_id, "identity_headers.assert_customer_id")?,
    };
    Ok(out)
}

fn validate_store(
    s: &file::StoreSection,
    base_dir: &Path,
) -> Result<StoreSettings, ValidationError> {
    let redis = super::redis::validate(&s.redis, base_dir, s.backend == StoreBackend::Redis)?;
    if s.snapshot_interval.0.is_zero() {
        return err(None, "store.snapshot_interval must be greater than zero");
    }
    Ok(StoreSettings {
        backend: s.backend,
        snapshot_file: s
            .snapshot_file
            .as_ref()
            .filter(|p| !p.is_empty())
            .map(|p| base_dir.join(p)),
        snapshot_interval: s.snapshot_interval.0,
        redis,
    })
}

fn sha256_hex(v: &Spanned<String>, what: &str) -> Result<[u8; 32], ValidationError> {
    let text = v.get_ref().trim().to_ascii_lowercase();
    let mut out = [0u8; 32];
    match hex::decode_to_slice(&text, &mut out) {
        Ok(()) => Ok(out),
        Err(_) => err(
            span_of(v),
            format!("{what} must be 64 hex digits (the output of `session-sidecar hash-token`)"),
        ),
    }
}

/// A `basic_user`: non-empty, no control characters, used once. It may contain colons
/// (Tessitura's `user:usergroup:location`): the password is what follows the last one.
fn basic_user(
    user: &Spanned<String>,
    seen: &mut HashSet<String>,
) -> Result<String, ValidationError> {
    let name = user.get_ref();
    if name.is_empty() || name.chars().any(char::is_control) {
        return err(
            span_of(user),
            "credentials.basic_user must be a non-empty printable name",
        );
    }
    if !seen.insert(name.clone()) {
        return err(
            span_of(user),
            format!("credentials.basic_user {name:?} is used twice"),
        );
    }
    Ok(name.clone())
}

fn validate_credentials(
    creds: &[file::CredentialSection],
) -> Result<Vec<CredentialSettings>, ValidationError> {
    let mut names = HashSet::new();
    let mut app_ids = HashSet::new();
    let mut basic_users = HashSet::new();
    let mut out = Vec::with_capacity(creds.len());
    for c in creds {
        let name = c.name.get_ref().trim();
        if name.is_empty() || name.chars().any(char::is_control) {
            return err(
                span_of(&c.name),
                "credentials.name must be a non-empty printable name",
            );
        }
        if !names.insert(name.to_string()) {
            return err(
                span_of(&c.name),
                format!("credentials.name {name:?} is used twice"),
            );
        }
        let secret = match (
            (&c.token_sha256, &c.app_id, &c.app_token_sha256),
            (&c.basic_user, &c.basic_password_sha256),
        ) {
            ((Some(t), None, None), (None, None)) => SecretSettings::Bearer {
                token_sha256: sha256_hex(t, "credentials.token_sha256")?,
            },
            ((None, Some(id), Some(t)), (None, None)) => {
                if !app_ids.insert(id.get_ref().clone()) {
                    return err(span_of(id), format!("credentials.app_id {:?} is used twice", id.get_ref()));
                }
                SecretSettings::AppPair {
                    app_id: id.get_ref().clone(),
                    app_token_sha256: sha256_hex(t, "credentials.app_token_sha256")?,
                }
            }
            ((None, None, None), (Some(user), Some(p))) => SecretSettings::Basic {
                user: basic_user(user, &mut basic_users)?,
                password_sha256: sha256_hex(p, "credentials.basic_password_sha256")?,
            },
            _ => {
                return err(
                    span_of(&c.name),
                    format!("credential {name:?} needs exactly one of token_sha256, app_id with app_token_sha256, or basic_user with basic_password_sha256"),
                )
            }
        };
        out.push(CredentialSettings {
            name: name.to_string(),
            secret,
            applications: ApplicationAccess::from_list(&c.applications),
            admin: c.admin,
        });
    }
    Ok(out)
}

fn validate_jwt(j: &file::JwtSection, base_dir: &Path) -> Result<JwtSettings, ValidationError> {
    let jwks = match (&j.jwks_file, &j.jwks_url) {
        (Some(f), None) => JwksSource::File(base_dir.join(f.get_ref())),
        (None, Some(u)) => {
            let url = u.get_ref();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return err(
                    span_of(u),
                    "jwt.jwks_url must be an http:// or https:// URL",
                );
            }
            JwksSource::Url(url.clone())
        }
        _ => return err(None, "[jwt] needs exactly one of jwks_file or jwks_url"),
    };
    let mut algorithms = Vec::new();
    for a in j.algorithms.get_ref() {
        let upper = a.to_ascii_uppercase();
        match upper.as_str() {
            "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" | "ES256" | "ES384" | "EDDSA" => {
                algorithms.push(if upper == "EDDSA" { "EdDSA".to_string() } else { upper })
            }
            "NONE" => return err(span_of(&j.algorithms), "jwt.algorithms must never allow \"none\""),
            h if h.starts_with("HS") => {
                return err(
                    span_of(&j.algorithms),
                    format!("jwt.algorithms: {a} is a shared-secret algorithm and is refused with a JWKS (algorithm confusion)"),
                )
            }
            _ => return err(span_of(&j.algorithms), format!("jwt.algorithms: unknown algorithm {a:?}")),
        }
    }
    if algorithms.is_empty() {
        return err(
            span_of(&j.algorithms),
            "jwt.algorithms must name at least one algorithm",
        );
    }
    // The refresher looks once a second; a leeway past an hour would make `exp` meaningless.
    if j.jwks_refresh.0 < Duration::from_secs(1) {
        return err(None, "jwt.jwks_refresh must be at least 1s");
    }
    if j.leeway.0 > Duration::from_secs(3600) {
        return err(None, "jwt.leeway must be at most 1h");
    }
    for (key, value) in [
        ("issuer", &j.issuer),
        ("audience", &j.audience),
        ("applications_claim", &j.applications_claim),
    ] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return err(
                None,
                format!("jwt.{key} must not be empty (leave it out instead)"),
            );
        }
    }
    Ok(JwtSettings {
        jwks,
        jwks_refresh: j.jwks_refresh.0,
        issuer: j.issuer.clone(),
        audience: j.audience.clone(),
        algorithms,
        leeway: j.leeway.0,
        applications_claim: j.applications_claim.clone(),
    })
}

fn validate_applications(
    apps: &[file::ApplicationSection],
) -> Result<HashMap<String, ApplicationSettings>, ValidationError> {
    let mut out = HashMap::new();
    for a in apps {
        let key = a.key.get_ref().trim();
        if key.is_empty() {
            return err(span_of(&a.key), "applications.key must not be empty");
        }
        if out.contains_key(key) {
            return err(
                span_of(&a.key),
                format!("applications.key {key:?} is used twice"),
            );
        }
        out.insert(
            key.to_string(),
            ApplicationSettings {
                key: key.to_string(),
                name: a.name.clone(),
                max_sessions: a.max_sessions,
            },
        );
    }
    Ok(out)
}

fn base_path(v: &Spanned<String>, what: &str) -> Result<String, ValidationError> {
    let p = v.get_ref().trim();
    if p.is_empty() {
        return Ok(String::new());
    }
    if !p.starts_with('/') || p.contains(['?', '#', '{']) {
        return err(
            span_of(v),
            format!("{what} must be empty or a path starting with '/'"),
        );
    }
    Ok(p.trim_end_matches('/').to_string())
}

fn validate_flavors(f: &file::FlavorsSection) -> Result<FlavorSettings, ValidationError> {
    let mut out = FlavorSettings::default();
    if let Some(s) = f.spreadsheetweb.as_ref().filter(|s| s.enabled) {
        out.spreadsheetweb = Some(SpreadsheetWebSettings {
            base_path: base_path(&s.base_path, "flavors.spreadsheetweb.base_path")?,
        });
    }
    if let Some(s) = f.knowledge_center.as_ref().filter(|s| s.enabled) {
        out.knowledge_center = Some(KnowledgeCenterSettings {
            base_path: base_path(&s.base_path, "flavors.knowledge_center.base_path")?,
            auth: s.auth,
            allow_client_ids: s.allow_client_ids,
        });
    }
    if let Some(s) = f.tessitura.as_ref().filter(|s| s.enabled) {
        out.tessitura = Some(TessituraSettings {
            base_path: base_path(&s.base_path, "flavors.tessitura.base_path")?,
            auth: s.auth,
            default_mode_of_sale: s.default_mode_of_sale,
            default_source_id: s.default_source_id,
            transfer_grace: s.transfer_grace.0,
        });
    }
    if let Some(s) = f.voucherify.as_ref().filter(|s| s.enabled) {
        if s.max_ttl.0.is_zero() {
            return err(None, "flavors.voucherify.max_ttl must be greater than zero");
        }
        let mut limits = HashMap::new();
        for l in &s.limits {
            if limits
                .insert(l.code.get_ref().clone(), l.quantity)
                .is_some()
            {
                return err(
                    span_of(&l.code),
                    format!(
                        "flavors.voucherify.limits: code {:?} is listed twice",
                        l.code.get_ref()
                    ),
                );
            }
        }
        out.voucherify = Some(VoucherifySettings {
            base_path: base_path(&s.base_path, "flavors.voucherify.base_path")?,
            max_ttl: s.max_ttl.0,
            limits,
        });
    }
    Ok(out)
}
