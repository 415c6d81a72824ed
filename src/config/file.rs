//! The TOML file format, exactly as operators write it (SPEC §9).
//!
//! These types only describe the file: every table denies unknown keys so a typo is an error
//! with a line and column. Defaults live here too, so that a key left out of the file and the
//! value documented in `config.toml.example` are the same thing. Validation and conversion
//! into the runtime config happen in `runtime.rs`.

use super::units::{ConfigDuration, ConfigSize};
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamSection>,
    #[serde(default)]
    pub proxy: ProxySection,
    #[serde(default)]
    pub routes: Vec<RouteSection>,
    #[serde(default)]
    pub sessions: SessionsSection,
    #[serde(default)]
    pub identity_headers: IdentityHeadersSection,
    #[serde(default)]
    pub rate_limits: RateLimitsSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub credentials: Vec<CredentialSection>,
    pub jwt: Option<JwtSection>,
    #[serde(default)]
    pub applications: Vec<ApplicationSection>,
    #[serde(default)]
    pub flavors: FlavorsSection,
    #[serde(default)]
    pub access_log: AccessLogSection,
    #[serde(default)]
    pub tracing: TracingSection,
}

/// SPEC §13.5: spans exported with OTLP over HTTP.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingSection {
    pub enabled: bool,
    pub otlp_endpoint: Spanned<String>,
    /// Share of traces started here that are sampled (incoming traces keep their flag).
    pub sample_ratio: Spanned<f64>,
    pub service_name: String,
}

impl Default for TracingSection {
    fn default() -> Self {
        TracingSection {
            enabled: false,
            otlp_endpoint: Spanned::new(0..0, "http://127.0.0.1:4318".to_string()),
            sample_ratio: Spanned::new(0..0, 1.0),
            service_name: "session-sidecar".to_string(),
        }
    }
}

/// SPEC §13.5: one line per request, and audit events, to stdout or a file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogSection {
    pub enabled: bool,
    /// `-` is stdout; a file is appended to and reopened on SIGUSR1.
    pub path: Spanned<String>,
    pub format: AccessLogFormat,
    /// Share of successful (< 400) requests logged; errors are always logged.
    pub sample_ratio: Spanned<f64>,
}

impl Default for AccessLogSection {
    fn default() -> Self {
        AccessLogSection {
            enabled: true,
            path: Spanned::new(0..0, "-".to_string()),
            format: AccessLogFormat::Json,
            sample_ratio: Spanned::new(0..0, 1.0),
        }
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    Json,
    /// nginx's `combined`.
    Combined,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub listen: Vec<Spanned<String>>,
    pub admin_listen: Spanned<String>,
    /// Failed admin authentications one client IP may make a minute (0 = no limit).
    pub admin_auth_failures_per_minute: u32,
    pub threads: usize,
    pub grace_period: ConfigDuration,
    /// Shutdown's second phase: how long the runtimes get to finish after the grace period.
    pub drain_timeout: ConfigDuration,
    pub max_body: ConfigSize,
    /// SPEC §13.1: request line + headers, header count, request target length.
    pub max_header_size: Spanned<ConfigSize>,
    pub max_headers: Spanned<usize>,
    pub max_uri: Spanned<ConfigSize>,
    /// SPEC §13.1: requests per client connection, and how long an idle one is kept.
    pub keepalive_requests: Spanned<u32>,
    pub keepalive_timeout: ConfigDuration,
    /// Where pingora's upgrade socket lives (zero-downtime `--upgrade` hand-off).
    pub upgrade_sock: String,
    pub pid_file: String,
    /// SPEC §13.3: h2 by ALPN on TLS listeners, h2c (prior knowledge) on plaintext ones.
    pub http2: bool,
    /// SPEC §13.3: proxy listeners that speak TLS with `[server.tls]`.
    pub tls_listen: Vec<Spanned<String>>,
    pub tls: Option<TlsSection>,
    /// SPEC §13.3: the admin listener speaks TLS with this table when it is given.
    pub admin_tls: Option<TlsSection>,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: vec![Spanned::new(0..0, "0.0.0.0:8080".to_string())],
            admin_listen: Spanned::new(0..0, "127.0.0.1:9091".to_string()),
            admin_auth_failures_per_minute: 20,
            threads: 2,
            grace_period: ConfigDuration::secs(10),
            drain_timeout: ConfigDuration::secs(2),
            max_body: ConfigSize(64 * 1024),
            max_header_size: Spanned::new(0..0, ConfigSize(16 * 1024)),
            max_headers: Spanned::new(0..0, 100),
            max_uri: Spanned::new(0..0, ConfigSize(8 * 1024)),
            keepalive_requests: Spanned::new(0..0, 1000),
            keepalive_timeout: ConfigDuration::secs(60),
            upgrade_sock: "/tmp/session-sidecar-upgrade.sock".to_string(),
            pid_file: "/tmp/session-sidecar.pid".to_string(),
            http2: true,
            tls_listen: Vec::new(),
            tls: None,
            admin_tls: None,
        }
    }
}

/// `[server.tls]` and `[server.admin_tls]` (SPEC §13.3): PEM files, relative to the config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The certificate chain, leaf first.
    pub cert_file: Spanned<String>,
    pub key_file: Spanned<String>,
    /// Certificates for other names, chosen by SNI; the one above otherwise.
    #[serde(default)]
    pub sni: Vec<SniSection>,
    #[serde(default)]
    pub min_version: TlsVersion,
    /// Require client certificates signed by a CA in this file.
    pub client_ca_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniSection {
    pub server_name: Spanned<String>,
    pub cert_file: Spanned<String>,
    pub key_file: Spanned<String>,
}

/// The oldest TLS version a listener accepts.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    pub address: Spanned<String>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: ConfigDuration,
    #[serde(default = "default_read_timeout")]
    pub read_timeout: ConfigDuration,
    #[serde(default = "default_upstream_idle_timeout")]
    pub idle_timeout: ConfigDuration,
    /// SPEC §13.3: HTTPS to the app.
    #[serde(default)]
    pub tls: bool,
    /// The name sent in SNI and verified (default: the address's host).
    pub sni: Option<Spanned<String>>,
    /// PEM CA certificates the app's certificate must chain to (default: the system's roots).
    pub ca_file: Option<Spanned<String>>,
    /// PEM client certificate chain and key for mTLS to the app.
    pub client_cert_file: Option<Spanned<String>>,
    pub client_key_file: Option<Spanned<String>>,
    /// `false` skips certificate verification (allowed, with a warning at start).
    pub verify: Option<Spanned<bool>>,
}

fn default_connect_timeout() -> ConfigDuration {
    ConfigDuration::secs(2)
}
fn default_read_timeout() -> ConfigDuration {
    ConfigDuration::secs(30)
}
fn default_upstream_idle_timeout() -> ConfigDuration {
    ConfigDuration::secs(50)
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    None,
    Token,
}

/// When a login answer gives the session a new id (SPEC §13.2).
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RotateOnLogin {
    Never,
    /// Only sessions the request carried in the locate cookie (browsers: fixation's target).
    Cookie,
    /// Sessions found by any locator.
    Always,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SessionMode {
    None,
    Optional,
    Required,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySection {
    pub default_upstream: Spanned<String>,
    pub default_auth: AuthMode,
    pub default_session: SessionMode,
    /// SPEC §13.7: remove the validated credential headers before forwarding.
    pub strip_credentials: bool,
}

impl Default for ProxySection {
    fn default() -> Self {
        ProxySection {
            default_upstream: Spanned::new(0..0, "app".to_string()),
            default_auth: AuthMode::None,
            default_session: SessionMode::Optional,
            strip_credentials: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub path_prefix: Spanned<String>,
    #[serde(default)]
    pub methods: Option<Spanned<Vec<String>>>,
    pub upstream: Option<Spanned<String>>,
    pub auth: Option<AuthMode>,
    pub session: Option<SessionMode>,
    pub strip_credentials: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsSection {
    pub idle_timeout: ConfigDuration,
    pub absolute_timeout: ConfigDuration,
    pub max_sessions: u64,
    pub max_sessions_per_customer: u64,
    pub isolate_by_credential: bool,
    pub rotate_on_login: RotateOnLogin,
    pub rotation_grace: ConfigDuration,
    pub locate: LocateSection,
}

impl Default for SessionsSection {
    fn default() -> Self {
        SessionsSection {
            idle_timeout: ConfigDuration::secs(30 * 60),
            absolute_timeout: ConfigDuration::secs(12 * 3600),
            max_sessions: 1_000_000,
            max_sessions_per_customer: 0,
            isolate_by_credential: true,
            rotate_on_login: RotateOnLogin::Cookie,
            rotation_grace: ConfigDuration::secs(10),
            locate: LocateSection::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocateSection {
    pub header: Option<String>,
    pub cookie: Option<String>,
    pub query: Option<String>,
    pub path: Vec<Spanned<String>>,
    pub json_body: Vec<Spanned<String>>,
}

impl Default for LocateSection {
    fn default() -> Self {
        LocateSection {
            header: Some("X-Session-Id".into()),
            cookie: Some("session_id".into()),
            query: Some("sessionId".into()),
            path: vec![Spanned::new(0..0, "/Web/Session/{key}".into())],
            json_body: vec![
                Spanned::new(0..0, "SessionId".into()),
                Spanned::new(0..0, "session.key".into()),
            ],
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityHeadersSection {
    pub session_id: Option<Spanned<String>>,
    pub customer_id: Option<Spanned<String>>,
    pub agent_id: Option<Spanned<String>>,
    pub visit_id: Option<Spanned<String>>,
    pub global_visit_id: Option<Spanned<String>>,
    pub application_key: Option<Spanned<String>>,
    pub logged_in: Option<Spanned<String>>,
    pub credential: Option<Spanned<String>>,
    pub signature: Option<Spanned<String>>,
    pub signing_key_file: Option<Spanned<String>>,
    pub assert_customer_id: Option<Spanned<String>>,
}

impl Default for IdentityHeadersSection {
    fn default() -> Self {
        let s = |v: &str| Some(Spanned::new(0..0, v.to_string()));
        IdentityHeadersSection {
            session_id: s("X-Session-Id"),
            customer_id: s("X-Customer-Id"),
            agent_id: s("X-Agent-Id"),
            visit_id: s("X-Visit-Id"),
            global_visit_id: s("X-Global-Visit-Id"),
            application_key: s("X-Application-Key"),
            logged_in: s("X-Session-Logged-In"),
            credential: s("X-Auth-Subject"),
            signature: s("X-Session-Signature"),
            signing_key_file: None,
            assert_customer_id: s("X-Sidecar-Set-Customer-Id"),
        }
    }
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsSection {
    pub create_per_credential: u32,
    pub create_per_ip: u32,
    pub forward_per_session: u32,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    Memory,
    Redis,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    pub backend: StoreBackend,
    pub snapshot_file: Option<String>,
    pub snapshot_interval: ConfigDuration,
    pub redis: RedisSection,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            backend: StoreBackend::Memory,
            snapshot_file: Some("session-sidecar.snapshot".into()),
            snapshot_interval: ConfigDuration::secs(30),
            redis: RedisSection::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSection {
    /// Absent: `redis://127.0.0.1:6379` (unless `sentinels` is set). Spanned for the errors
    /// that name where a conflicting key is (SPEC §13.4).
    pub urls: Option<Spanned<Vec<String>>>,
    pub cluster: Option<Spanned<bool>>,
    pub key_prefix: String,
    pub near_cache_ttl: ConfigDuration,
    pub degraded_grace: ConfigDuration,
    pub timeout: ConfigDuration,
    /// SPEC §13.4: Redis Sentinel (`host:port` of each sentinel) and the monitored master's name.
    pub sentinels: Option<Spanned<Vec<String>>>,
    pub sentinel_master: Option<Spanned<String>>,
    /// `rediss://`: the CA that signed Redis's certificate (system roots when absent), and an
    /// optional client certificate.
    pub ca_file: Option<Spanned<String>>,
    pub client_cert_file: Option<Spanned<String>>,
    pub client_key_file: Option<Spanned<String>>,
    /// ACL user, and the file holding its password (never the password itself).
    pub username: Option<Spanned<String>>,
    pub password_file: Option<Spanned<String>>,
    /// `WAIT n` after each create and rotation: acknowledged only once n replicas have it.
    pub wait_for_replicas: Spanned<u32>,
}

impl Default for RedisSection {
    fn default() -> Self {
        RedisSection {
            urls: None,
            cluster: None,
            key_prefix: "session-sidecar:".into(),
            near_cache_ttl: ConfigDuration::secs(1),
            degraded_grace: ConfigDuration::secs(30),
            timeout: ConfigDuration::millis(500),
            sentinels: None,
            sentinel_master: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            username: None,
            password_file: None,
            wait_for_replicas: Spanned::new(0..0, 0),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSection {
    pub name: Spanned<String>,
    pub token_sha256: Option<Spanned<String>>,
    pub app_id: Option<Spanned<String>>,
    pub app_token_sha256: Option<Spanned<String>>,
    /// SPEC §13.7: `Authorization: Basic` user (everything before the last colon).
    pub basic_user: Option<Spanned<String>>,
    pub basic_password_sha256: Option<Spanned<String>>,
    #[serde(default = "all_applications")]
    pub applications: Vec<String>,
    #[serde(default)]
    pub admin: bool,
}

fn all_applications() -> Vec<String> {
    vec!["*".to_string()]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSection {
    pub jwks_file: Option<Spanned<String>>,
    pub jwks_url: Option<Spanned<String>>,
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh: ConfigDuration,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    #[serde(default = "default_jwt_algorithms")]
    pub algorithms: Spanned<Vec<String>>,
    #[serde(default = "default_leeway")]
    pub leeway: ConfigDuration,
    pub applications_claim: Option<String>,
}

fn default_jwks_refresh() -> ConfigDuration {
    ConfigDuration::secs(300)
}
fn default_jwt_algorithms() -> Spanned<Vec<String>> {
    Spanned::new(0..0, vec!["RS256".into(), "ES256".into()])
}
fn default_leeway() -> ConfigDuration {
    ConfigDuration::secs(30)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationSection {
    pub key: Spanned<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub max_sessions: u64,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FlavorsSection {
    pub spreadsheetweb: Option<SpreadsheetWebSection>,
    pub knowledge_center: Option<KnowledgeCenterSection>,
    pub tessitura: Option<TessituraSection>,
    pub voucherify: Option<VoucherifySection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpreadsheetWebSection {
    pub enabled: bool,
    pub base_path: Spanned<String>,
}

impl Default for SpreadsheetWebSection {
    fn default() -> Self {
        SpreadsheetWebSection {
            enabled: true,
            base_path: Spanned::new(0..0, "/Api/Applications".into()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnowledgeCenterSection {
    pub enabled: bool,
    pub base_path: Spanned<String>,
    pub auth: AuthMode,
    pub allow_client_ids: bool,
}

impl Default for KnowledgeCenterSection {
    fn default() -> Self {
        KnowledgeCenterSection {
            enabled: true,
            base_path: Spanned::new(0..0, "/gks-server/v1".into()),
            auth: AuthMode::Token,
            allow_client_ids: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TessituraSection {
    pub enabled: bool,
    pub base_path: Spanned<String>,
    pub auth: AuthMode,
    pub default_mode_of_sale: i64,
    pub default_source_id: i64,
    pub transfer_grace: ConfigDuration,
}

impl Default for TessituraSection {
    fn default() -> Self {
        TessituraSection {
            enabled: true,
            base_path: Spanned::new(0..0, String::new()),
            auth: AuthMode::Token,
            default_mode_of_sale: 1,
            default_source_id: 0,
            transfer_grace: ConfigDuration::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VoucherifySection {
    pub enabled: bool,
    pub base_path: Spanned<String>,
    pub max_ttl: ConfigDuration,
    pub limits: Vec<VoucherLimitSection>,
}

impl Default for VoucherifySection {
    fn default() -> Self {
        VoucherifySection {
            enabled: true,
            base_path: Spanned::new(0..0, String::new()),
            max_ttl: ConfigDuration::secs(30 * 86400),
            limits: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoucherLimitSection {
    pub code: Spanned<String>,
    pub quantity: u64,
}
