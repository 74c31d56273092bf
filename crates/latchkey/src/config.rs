//! Configuration: one typed struct, its defaults in one place, loaded from a
//! TOML file and `LATCHKEY_*` environment variables (the environment wins).
//!
//! Owns: the option names and defaults (documented field by field in
//! `docs/configuration.md`, kept in sync by a test), the env overlay, the
//! dev-mode defaults, and the start-up validation that refuses dangerous
//! settings with a message naming the option.
//!
//! Must not: open connections or read anything but files and the environment.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use url::Url;

use crate::crypto::{MasterKey, MasterKeyError};

/// The first line of a master key file written by `latchkey dev`. A key file
/// carrying it is a development key, which `serve` refuses off loopback and
/// `doctor` flags.
pub const DEV_KEY_MARKER: &str = "# latchkey DEVELOPMENT master key";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Public base URL; the OAuth `iss` and the origin of every page.
    pub issuer: String,
    /// Address and port to listen on.
    pub bind: String,
    /// Master key, base64url of 32 random bytes. Prefer `master_key_file`.
    pub master_key: Option<String>,
    /// File holding the master key (comment lines starting with `#` ignored).
    pub master_key_file: Option<PathBuf>,
    /// Redis URL, reserved for the cluster mode (shared rate limits and caches).
    pub redis_url: Option<String>,
    /// `text` (human) or `json` log lines.
    pub log_format: LogFormat,
    /// Log filter in `RUST_LOG` syntax.
    pub log_level: String,
    pub database: DatabaseConfig,
    pub session: SessionConfig,
    pub password: PasswordConfig,
    pub login: LoginConfig,
    pub http: HttpConfig,
    pub tokens: TokenConfig,
    pub webauthn: WebauthnConfig,
    pub mfa: MfaConfig,
    pub revocation_feed: RevocationFeedConfig,
    pub ui: UiConfig,
    pub federation: FederationConfig,
}

/// Social login / federation: upstream OpenID Connect providers and the
/// rules for reaching them (`federation` module, docs/federation.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// Allow upstreams on loopback addresses, over plain http too (a second server on this machine; tests). `latchkey dev` turns it on.
    pub allow_insecure_loopback: bool,
    /// Allow upstreams on private, link-local, shared or unique-local addresses (SSRF guard off for them).
    pub allow_private_networks: bool,
    /// Seconds an upstream call (discovery, JWKS, token) may take, connection included.
    pub upstream_timeout_secs: u64,
    /// Largest upstream answer read, in bytes.
    pub upstream_max_bytes: usize,
    /// Seconds a sign-in sent to an upstream may take to come back.
    pub state_ttl_secs: i64,
    /// Federated sign-ins one IP address may start per minute (each writes a
    /// state row and calls the upstream); `0` means unlimited.
    pub max_sign_ins_per_ip_per_minute: u32,
    /// Providers of the configuration file (`[[federation.providers]]`).
    pub providers: Vec<ProviderConfig>,
}

impl Default for FederationConfig {
    fn default() -> Self {
        FederationConfig {
            allow_insecure_loopback: false,
            allow_private_networks: false,
            upstream_timeout_secs: 10,
            upstream_max_bytes: 256 * 1024,
            state_ttl_secs: 600,
            max_sign_ins_per_ip_per_minute: 60,
            providers: Vec::new(),
        }
    }
}

/// One `[[federation.providers]]` entry; `federation::ProviderSpec::from_config` checks it.
/// Its `Debug` never shows `client_secret`.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    #[serde(default = "default_provider_kind")]
    pub kind: String,
    #[serde(default)]
    pub issuer: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    #[serde(default = "default_auth_method")]
    pub auth_method: String,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    #[serde(default = "default_link")]
    pub link: String,
    #[serde(default)]
    pub provision: bool,
    #[serde(default)]
    pub role_claim: String,
    #[serde(default)]
    pub role_map: BTreeMap<String, String>,
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("client_secret_file", &self.client_secret_file)
            .field("link", &self.link)
            .field("provision", &self.provision)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

fn default_provider_kind() -> String {
    "oidc".into()
}
fn default_auth_method() -> String {
    "client_secret_basic".into()
}
fn default_scopes() -> Vec<String> {
    vec!["email".into(), "profile".into()]
}
fn default_link() -> String {
    "verified".into()
}
fn default_true() -> bool {
    true
}

/// Branding of the pages: a first step (name, logo, colour).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UiConfig {
    /// The name in the header bar and page titles, and the issuer an authenticator app shows.
    pub product_name: String,
    /// A logo shown before the name: an https:// URL or a path on this server; "" for none.
    pub logo_url: String,
    /// The colour of buttons and links, `#rrggbb`; white text on it must stay readable (4.5:1).
    pub primary_color: String,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            product_name: "Latchkey".into(),
            logo_url: String::new(),
            primary_color: "#2f5bd3".into(),
        }
    }
}

impl UiConfig {
    /// The origin of an absolute logo URL, which the pages' CSP must allow
    /// as an image source; `None` for no logo or a path on this server.
    pub fn logo_origin(&self) -> Option<String> {
        Url::parse(&self.logo_url)
            .ok()
            .map(|u| u.origin().ascii_serialization())
    }
}

/// `#rrggbb` as three 0–255 channels.
fn parse_hex_color(text: &str) -> Option<[u8; 3]> {
    let hex = text.strip_prefix('#')?;
    if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let channel = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
    Some([channel(0)?, channel(2)?, channel(4)?])
}

/// WCAG 2.x contrast ratio between two sRGB colours.
pub fn contrast_ratio(a: [u8; 3], b: [u8; 3]) -> f64 {
    fn luminance(c: [u8; 3]) -> f64 {
        let lin = |v: u8| {
            let s = f64::from(v) / 255.0;
            if s <= 0.039_28 {
                s / 12.92
            } else {
                ((s + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2])
    }
    let (la, lb) = (luminance(a), luminance(b));
    let (hi, lo) = if la > lb { (la, lb) } else { (lb, la) };
    (hi + 0.05) / (lo + 0.05)
}

/// The revocation feed (`GET /oauth2/revocations/stream`) APIs follow.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RevocationFeedConfig {
    /// How often each instance reads new revocation events from the database (milliseconds).
    pub poll_interval_ms: u64,
    /// A `: keepalive` comment is sent this often, so subscribers detect a dead stream; each stream re-checks its reader then.
    pub keepalive_secs: u64,
}

impl Default for RevocationFeedConfig {
    fn default() -> Self {
        RevocationFeedConfig {
            poll_interval_ms: 200,
            keepalive_secs: 15,
        }
    }
}

/// Multi-factor authentication policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MfaConfig {
    /// Users holding any of these roles need a multi-factor sign-in to use them.
    pub required_roles: Vec<String>,
    /// Sensitive account changes (MFA, passkeys, password) need a sign-in this recent.
    pub reauth_window_secs: i64,
}

impl Default for MfaConfig {
    fn default() -> Self {
        MfaConfig {
            required_roles: vec!["admin".into()],
            reauth_window_secs: 15 * 60,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://PATH?mode=rwc` or `postgres://user@host/db`.
    pub url: String,
    pub max_connections: u32,
    pub min_connections: u32,
    /// Seconds to wait for a connection before answering 503.
    pub acquire_timeout_secs: u64,
    /// `serve` applies pending migrations when it starts. `false` (several
    /// instances sharing one database): it refuses to start while any is
    /// pending, and `latchkey migrate` applies them at a moment you choose.
    pub migrate_on_start: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// A session unused for this long ends (ASVS L2: 30 minutes).
    pub idle_timeout_secs: i64,
    /// A session ends this long after sign-in, however active (ASVS L2: 12 hours).
    pub absolute_lifetime_secs: i64,
    /// Maximum concurrent sessions per user; the oldest is ended. 0 = unlimited.
    pub max_per_user: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordConfig {
    /// Argon2id memory cost in KiB (OWASP minimum: 19456).
    pub argon2_memory_kib: u32,
    /// Argon2id iterations.
    pub argon2_iterations: u32,
    /// Argon2id lanes.
    pub argon2_parallelism: u32,
    /// Hashes computed at once; 0 = number of CPUs.
    pub max_concurrent_hashes: usize,
    pub min_length: usize,
    pub max_length: usize,
    /// Reject the 19,640 most common passwords (case-insensitively).
    pub reject_common: bool,
    pub require_lowercase: bool,
    pub require_uppercase: bool,
    pub require_digit: bool,
    pub require_symbol: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoginConfig {
    /// Failed sign-ins for one account before it is locked.
    pub max_failures_per_account: u32,
    /// Failed sign-ins from one IP address before it is locked.
    pub max_failures_per_ip: u32,
    /// First lockout length; each further failure doubles it.
    pub lockout_base_secs: i64,
    /// Longest lockout.
    pub lockout_max_secs: i64,
    /// Failures older than this are forgotten.
    pub failure_window_secs: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Origins allowed to make cross-origin requests (exact `scheme://host[:port]`). Never `*` with credentials.
    pub cors_allowed_origins: Vec<String>,
    /// Whether cross-origin requests from the allowed origins may carry cookies.
    pub cors_allow_credentials: bool,
    /// Largest request body accepted, in bytes (413 above).
    pub max_body_bytes: usize,
    /// A request taking longer than this is answered 408.
    pub request_timeout_secs: u64,
    /// Take the client IP from `X-Forwarded-For` (only behind a proxy you control).
    pub trust_forwarded_for: bool,
    /// With `trust_forwarded_for`: how many proxies of yours append to `X-Forwarded-For`; the client is that many entries from the right.
    pub trusted_proxy_hops: u32,
}

/// Signing keys and tokens.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// `ES256`, `EdDSA`, `RS256` or (single-service only) `HS256`.
    pub signing_algorithm: String,
    /// Further algorithms kept ready so a client can be configured to use them.
    pub additional_algorithms: Vec<String>,
    /// RSA modulus size for RS256 keys: 2048 or 3072.
    pub rsa_bits: u32,
    /// HS256 shared secret, base64url of at least 32 bytes (only with signing_algorithm = "HS256").
    pub hs256_secret: Option<String>,
    /// A new signing key is introduced this often.
    pub key_rotation_secs: i64,
    /// A new key is published in the JWKS this long before it signs anything.
    pub key_prepublish_secs: i64,
    pub access_token_lifetime_secs: i64,
    pub refresh_token_idle_secs: i64,
    pub refresh_token_absolute_secs: i64,
    /// Seconds after a refresh token is spent during which presenting it again
    /// (a client whose answer was lost) is answered with a fresh successor
    /// that replaces the unused one, instead of revoking the family; 0 disables.
    pub refresh_token_reuse_grace_secs: i64,
    /// Clock-skew tolerance when verifying tokens.
    pub leeway_secs: i64,
    /// Name of the access-token claim carrying the user's roles.
    pub roles_claim: String,
    /// Token-endpoint requests one client may make per minute (429 above); 0 = unlimited.
    pub max_token_requests_per_client_per_minute: u32,
    /// Device authorization requests (`/oauth2/device_authorization`) one client may make per minute (429 above); 0 = unlimited.
    pub max_device_authorizations_per_client_per_minute: u32,
    /// Device authorization requests one IP address (IPv6: one /64) may make per minute (429 above); 0 = unlimited.
    pub max_device_authorizations_per_ip_per_minute: u32,
}

/// Passkeys (WebAuthn Relying Party).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebauthnConfig {
    /// Relying Party ID: the domain passkeys are bound to. Default: the issuer's host. May be a registrable suffix of it (`example.com` for `https://id.example.com`).
    pub rp_id: Option<String>,
    /// Name the browser shows when creating a passkey.
    pub rp_name: String,
    /// Further origins (exact `scheme://host[:port]`) allowed to use the passkeys, besides the issuer's.
    pub allowed_origins: Vec<String>,
    /// A WebAuthn challenge must be answered within this many seconds.
    pub challenge_ttl_secs: i64,
}

impl Default for WebauthnConfig {
    fn default() -> Self {
        WebauthnConfig {
            rp_id: None,
            rp_name: "Latchkey".into(),
            allowed_origins: Vec::new(),
            challenge_ttl_secs: 300,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            issuer: "http://127.0.0.1:8080".into(),
            bind: "127.0.0.1:8080".into(),
            master_key: None,
            master_key_file: None,
            redis_url: None,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            database: DatabaseConfig::default(),
            session: SessionConfig::default(),
            password: PasswordConfig::default(),
            login: LoginConfig::default(),
            http: HttpConfig::default(),
            tokens: TokenConfig::default(),
            webauthn: WebauthnConfig::default(),
            mfa: MfaConfig::default(),
            revocation_feed: RevocationFeedConfig::default(),
            ui: UiConfig::default(),
            federation: FederationConfig::default(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://latchkey.db?mode=rwc".into(),
            max_connections: 10,
            min_connections: 0,
            acquire_timeout_secs: 5,
            migrate_on_start: true,
        }
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_timeout_secs: 30 * 60,
            absolute_lifetime_secs: 12 * 3600,
            max_per_user: 0,
        }
    }
}

impl Default for PasswordConfig {
    fn default() -> Self {
        PasswordConfig {
            argon2_memory_kib: 19456,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            max_concurrent_hashes: 0,
            min_length: 8,
            max_length: 128,
            reject_common: true,
            require_lowercase: false,
            require_uppercase: false,
            require_digit: false,
            require_symbol: false,
        }
    }
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            max_failures_per_account: 5,
            max_failures_per_ip: 50,
            lockout_base_secs: 30,
            lockout_max_secs: 15 * 60,
            failure_window_secs: 3600,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            cors_allowed_origins: Vec::new(),
            cors_allow_credentials: false,
            max_body_bytes: 64 * 1024,
            request_timeout_secs: 30,
            trust_forwarded_for: false,
            trusted_proxy_hops: 1,
        }
    }
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            signing_algorithm: "ES256".into(),
            additional_algorithms: Vec::new(),
            rsa_bits: 2048,
            hs256_secret: None,
            key_rotation_secs: 30 * 86400,
            key_prepublish_secs: 86400,
            leeway_secs: 30,
            roles_claim: "roles".into(),
            max_token_requests_per_client_per_minute: 3000,
            max_device_authorizations_per_client_per_minute: 600,
            max_device_authorizations_per_ip_per_minute: 20,
            access_token_lifetime_secs: 15 * 60,
            refresh_token_idle_secs: 14 * 86400,
            refresh_token_absolute_secs: 90 * 86400,
            refresh_token_reuse_grace_secs: 30,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Parse(String),
    #[error("invalid environment variable {name}: {reason}")]
    Env { name: String, reason: String },
    #[error("option `{option}`: {reason}")]
    Invalid {
        option: &'static str,
        reason: String,
    },
    /// Several refusals, listed together (one per line).
    #[error("{} settings are refused:{}", .0.len(), .0.iter().map(|e| format!("\n  - {e}")).collect::<String>())]
    Refused(Vec<ConfigError>),
}

/// The algorithm of ID tokens (and logout tokens) for a client that names
/// none: RS256, which OpenID Connect Core §15.1 requires every OP to support
/// and which relying parties accept without configuration. Access tokens keep
/// `tokens.signing_algorithm`.
pub const DEFAULT_ID_TOKEN_ALGORITHM: latchkey_verify::jose::Algorithm =
    latchkey_verify::jose::Algorithm::RS256;

impl TokenConfig {
    /// Every algorithm the deployment keeps signing keys for: the default
    /// (`signing_algorithm`) first, then `additional_algorithms`, then RS256
    /// for ID tokens if not already named. Unknown names are skipped
    /// (validation refuses them before this is used).
    pub fn key_algorithms(&self) -> Vec<latchkey_verify::jose::Algorithm> {
        let mut algs = Vec::new();
        let named = std::iter::once(&self.signing_algorithm)
            .chain(&self.additional_algorithms)
            .filter_map(|a| latchkey_verify::jose::Algorithm::parse(a));
        for alg in named.chain([DEFAULT_ID_TOKEN_ALGORITHM]) {
            if !algs.contains(&alg) {
                algs.push(alg);
            }
        }
        algs
    }
}

fn invalid(option: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        option,
        reason: reason.into(),
    }
}

/// Where a configuration came from; decides which checks are fatal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `latchkey dev`: loopback, generated development key.
    Dev,
    /// `latchkey serve` and every other subcommand.
    Serve,
}

impl Config {
    /// Loads `file` (if any) then applies `LATCHKEY_*` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let base = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Parse(format!("{}: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };
        Self::from_table(base, env)
    }

    /// Dev defaults rooted at `data_dir`, then `LATCHKEY_*` variables.
    pub fn dev(data_dir: &Path, env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        let mut table = toml::Table::new();
        let db = data_dir.join("latchkey.db");
        let mut database = toml::Table::new();
        database.insert(
            "url".into(),
            format!("sqlite://{}?mode=rwc", db.display()).into(),
        );
        table.insert("database".into(), database.into());
        table.insert(
            "master_key_file".into(),
            data_dir.join("master.key").display().to_string().into(),
        );
        // A second local server may be the upstream of a development one.
        let mut federation = toml::Table::new();
        federation.insert("allow_insecure_loopback".into(), true.into());
        table.insert("federation".into(), federation.into());
        let mut config = Self::from_table(table, env)?;
        // The dev issuer follows the bind address (so LATCHKEY_BIND alone lets
        // two dev instances run side by side), spelled `localhost` for a
        // loopback bind: WebAuthn refuses IP addresses, so passkeys work on
        // `http://localhost:8080` and not on `http://127.0.0.1:8080`.
        if !env.contains_key("LATCHKEY_ISSUER") {
            config.issuer = Self::dev_issuer_for(config.bind_addr()?);
        }
        Ok(config)
    }

    /// `http://localhost:PORT` for a loopback bind address, `http://IP:PORT`
    /// otherwise (which `dev` then refuses: a plain-http issuer must be loopback).
    pub fn dev_issuer_for(bind: SocketAddr) -> String {
        if bind.ip().is_loopback() {
            format!("http://localhost:{}", bind.port())
        } else {
            format!("http://{bind}")
        }
    }

    fn from_table(
        mut table: toml::Table,
        env: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        apply_env(&mut table, env)?;
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        config.check_types()?;
        Ok(config)
    }

    /// Structural checks that hold in every mode.
    fn check_types(&self) -> Result<(), ConfigError> {
        let issuer = self.issuer_url()?;
        if issuer.query().is_some() || issuer.fragment().is_some() {
            return Err(invalid("issuer", "must not have a query or fragment"));
        }
        if !matches!(issuer.scheme(), "http" | "https") {
            return Err(invalid("issuer", "must be an http or https URL"));
        }
        // The issuer is compared as a string (`iss`, cookie and HSTS decisions):
        // only its canonical spelling is accepted, e.g. no `HTTPS://` or `:443`.
        let canonical = issuer.as_str().trim_end_matches('/');
        if self.issuer.trim_end_matches('/') != canonical {
            return Err(invalid(
                "issuer",
                format!("write it in canonical form: {canonical}"),
            ));
        }
        self.bind_addr()?;
        if crate::store::Backend::of_url(&self.database.url).is_none() {
            return Err(invalid(
                "database.url",
                "must start with sqlite: or postgres:",
            ));
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        if self.database.min_connections > self.database.max_connections {
            return Err(invalid(
                "database.min_connections",
                "must not exceed database.max_connections",
            ));
        }
        if self.session.idle_timeout_secs <= 0 || self.session.absolute_lifetime_secs <= 0 {
            return Err(invalid(
                "session",
                "idle_timeout_secs and absolute_lifetime_secs must be positive",
            ));
        }
        if self.password.min_length < 8 {
            return Err(invalid(
                "password.min_length",
                "must be at least 8 (NIST SP 800-63B)",
            ));
        }
        if self.password.max_length < 64 || self.password.max_length < self.password.min_length {
            return Err(invalid(
                "password.max_length",
                "must be at least 64 and at least password.min_length",
            ));
        }
        if self.password.argon2_memory_kib < 8 * self.password.argon2_parallelism.max(1)
            || self.password.argon2_iterations == 0
            || self.password.argon2_parallelism == 0
        {
            return Err(invalid(
                "password.argon2_*",
                "Argon2 parameters out of range",
            ));
        }
        if self.login.max_failures_per_account == 0 || self.login.max_failures_per_ip == 0 {
            return Err(invalid("login.max_failures_per_*", "must be at least 1"));
        }
        if self.login.lockout_base_secs <= 0
            || self.login.lockout_max_secs < self.login.lockout_base_secs
        {
            return Err(invalid(
                "login.lockout_*",
                "lockout_base_secs must be positive and ≤ lockout_max_secs",
            ));
        }
        let t = &self.tokens;
        for name in std::iter::once(&t.signing_algorithm).chain(&t.additional_algorithms) {
            match latchkey_verify::jose::Algorithm::parse(name) {
                Some(latchkey_verify::jose::Algorithm::HS256) if name != &t.signing_algorithm => {
                    return Err(invalid(
                        "tokens.additional_algorithms",
                        "HS256 can only be the sole signing_algorithm",
                    ))
                }
                Some(_) => {}
                None => {
                    return Err(invalid(
                        "tokens.signing_algorithm",
                        format!("{name:?} is not one of ES256, EdDSA, RS256, HS256"),
                    ))
                }
            }
        }
        if t.signing_algorithm == "HS256" {
            let secret = t
                .hs256_secret
                .as_deref()
                .and_then(crate::crypto::b64url_decode);
            if secret.is_none_or(|s| s.len() < 32) {
                return Err(invalid(
                    "tokens.hs256_secret",
                    "HS256 needs a base64url secret of at least 32 bytes (256 bits)",
                ));
            }
        }
        if !matches!(t.rsa_bits, 2048 | 3072) {
            return Err(invalid("tokens.rsa_bits", "must be 2048 or 3072"));
        }
        if t.key_prepublish_secs <= 0 || t.key_rotation_secs <= t.key_prepublish_secs {
            return Err(invalid(
                "tokens.key_rotation_secs",
                "must be positive and longer than tokens.key_prepublish_secs",
            ));
        }
        if t.access_token_lifetime_secs <= 0
            || t.refresh_token_idle_secs <= 0
            || t.refresh_token_absolute_secs < t.refresh_token_idle_secs
        {
            return Err(invalid(
                "tokens.*_lifetime",
                "lifetimes must be positive; refresh_token_absolute_secs ≥ refresh_token_idle_secs",
            ));
        }
        if !(0..=300).contains(&t.refresh_token_reuse_grace_secs) {
            return Err(invalid(
                "tokens.refresh_token_reuse_grace_secs",
                "must be between 0 (no grace) and 300",
            ));
        }
        if !(0..=300).contains(&t.leeway_secs) {
            return Err(invalid("tokens.leeway_secs", "must be between 0 and 300"));
        }
        self.check_webauthn()?;
        self.check_ui()?;
        self.check_federation()?;
        if !(10..=10_000).contains(&self.revocation_feed.poll_interval_ms) {
            return Err(invalid(
                "revocation_feed.poll_interval_ms",
                "must be between 10 and 10000",
            ));
        }
        if !(1..=300).contains(&self.revocation_feed.keepalive_secs) {
            return Err(invalid(
                "revocation_feed.keepalive_secs",
                "must be between 1 and 300",
            ));
        }
        if !(1..=16).contains(&self.http.trusted_proxy_hops) {
            return Err(invalid(
                "http.trusted_proxy_hops",
                "must be between 1 and 16 (the number of your proxies in front of Latchkey)",
            ));
        }
        if self.http.max_body_bytes < 1024 {
            return Err(invalid("http.max_body_bytes", "must be at least 1024"));
        }
        for origin in &self.http.cors_allowed_origins {
            if origin != "*" {
                let url = Url::parse(origin).map_err(|_| {
                    invalid(
                        "http.cors_allowed_origins",
                        format!("{origin:?} is not an origin"),
                    )
                })?;
                if url.origin().ascii_serialization() != *origin {
                    return Err(invalid(
                        "http.cors_allowed_origins",
                        format!("{origin:?} must be exactly scheme://host[:port], no path or trailing slash"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_federation(&self) -> Result<(), ConfigError> {
        let f = &self.federation;
        if !(1..=120).contains(&f.upstream_timeout_secs) {
            return Err(invalid(
                "federation.upstream_timeout_secs",
                "must be between 1 and 120",
            ));
        }
        if !(4096..=(8 << 20)).contains(&f.upstream_max_bytes) {
            return Err(invalid(
                "federation.upstream_max_bytes",
                "must be between 4096 and 8388608",
            ));
        }
        if !(60..=3600).contains(&f.state_ttl_secs) {
            return Err(invalid(
                "federation.state_ttl_secs",
                "must be between 60 and 3600",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for provider in &f.providers {
            if !seen.insert(provider.name.as_str()) {
                return Err(invalid(
                    "federation.providers",
                    format!("the name {:?} is used twice", provider.name),
                ));
            }
            crate::federation::ProviderSpec::from_config(provider, self)
                .map_err(|e| invalid("federation.providers", e.to_string()))?;
        }
        Ok(())
    }

    fn check_ui(&self) -> Result<(), ConfigError> {
        let ui = &self.ui;
        let name = ui.product_name.trim();
        if name.is_empty() || name.chars().count() > 60 || name.chars().any(char::is_control) {
            return Err(invalid(
                "ui.product_name",
                "must be 1 to 60 characters, without control characters",
            ));
        }
        if !ui.logo_url.is_empty() {
            let path = ui.logo_url.starts_with('/') && !ui.logo_url.starts_with("//");
            // Its origin goes into the pages' CSP (`img-src`), so the host
            // must be one real host: an IP address or letters, digits,
            // hyphens and dots — never `*` (any https site) nor `;` or `,`,
            // which would end the directive and start another.
            let real_host = |u: &Url| match u.host() {
                Some(url::Host::Domain(d)) => {
                    !d.is_empty()
                        && d.split('.').all(|label| {
                            !label.is_empty()
                                && label
                                    .bytes()
                                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        })
                }
                Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => true,
                None => false,
            };
            let https = Url::parse(&ui.logo_url).is_ok_and(|u| {
                real_host(&u)
                    && (u.scheme() == "https" || (u.scheme() == "http" && is_loopback_host(&u)))
            });
            if !(path || https)
                || ui.logo_url.len() > 2048
                || ui
                    .logo_url
                    .chars()
                    .any(|c| c.is_control() || c == '"' || c == ' ')
            {
                return Err(invalid(
                    "ui.logo_url",
                    format!("{:?} must be an https:// URL or a path on this server such as /static/logo.svg", ui.logo_url),
                ));
            }
        }
        let Some(color) = parse_hex_color(&ui.primary_color) else {
            return Err(invalid(
                "ui.primary_color",
                format!("{:?} must be a colour written #rrggbb", ui.primary_color),
            ));
        };
        let ratio = contrast_ratio(color, [255, 255, 255]);
        if ratio < 4.5 {
            return Err(invalid(
                "ui.primary_color",
                format!("{} is too light: white button text on it has a contrast of {ratio:.2}:1, WCAG asks for 4.5:1; choose a darker colour", ui.primary_color),
            ));
        }
        Ok(())
    }

    fn check_webauthn(&self) -> Result<(), ConfigError> {
        let w = &self.webauthn;
        if !(30..=3600).contains(&w.challenge_ttl_secs) {
            return Err(invalid(
                "webauthn.challenge_ttl_secs",
                "must be between 30 and 3600",
            ));
        }
        if w.rp_name.trim().is_empty() {
            return Err(invalid("webauthn.rp_name", "must not be empty"));
        }
        for origin in &w.allowed_origins {
            let exact = Url::parse(origin)
                .ok()
                .is_some_and(|u| u.origin().ascii_serialization() == *origin);
            if !exact {
                return Err(invalid(
                    "webauthn.allowed_origins",
                    format!("{origin:?} must be exactly scheme://host[:port], no path or trailing slash"),
                ));
            }
        }
        if let Some(rp_id) = &w.rp_id {
            let issuer = self.issuer_url()?;
            let host = issuer.domain().unwrap_or_default();
            if rp_id.is_empty() || !(host == rp_id || host.ends_with(&format!(".{rp_id}"))) {
                return Err(invalid(
                    "webauthn.rp_id",
                    format!("{rp_id:?} must be the issuer's host name or a parent domain of it (WebAuthn does not work on IP addresses)"),
                ));
            }
        }
        Ok(())
    }

    /// Checks that make `serve` refuse to start (dangerous in production).
    /// `latchkey doctor` reports the same problems with more context.
    pub fn check_for_serving(&self, mode: Mode) -> Result<(), ConfigError> {
        // Every refusal at once: an operator fixes them all in one go instead
        // of meeting them one start-up at a time.
        let mut refusals = Vec::new();
        let issuer = match self.issuer_url() {
            Ok(issuer) => Some(issuer),
            Err(e) => {
                refusals.push(e);
                None
            }
        };
        if let Some(issuer) = &issuer {
            if issuer.scheme() != "https" && !is_loopback_host(issuer) {
                refusals.push(invalid(
                    "issuer",
                    format!("{} is not https and not loopback: cookies and tokens would travel in clear. Use an https:// issuer (TLS at your proxy)", self.issuer),
                ));
            }
        }
        if let Err(e) = self.bind_addr() {
            refusals.push(e);
        }
        if self.http.cors_allowed_origins.iter().any(|o| o == "*")
            && self.http.cors_allow_credentials
        {
            refusals.push(invalid(
                "http.cors_allowed_origins",
                "`*` together with http.cors_allow_credentials = true lets any site act as the signed-in user; list the exact origins",
            ));
        }
        if self.master_key.is_none() && self.master_key_file.is_none() {
            refusals.push(invalid(
                "master_key",
                "no master key: set LATCHKEY_MASTER_KEY or LATCHKEY_MASTER_KEY_FILE (generate one with `latchkey keys generate-master`)",
            ));
        } else {
            match self.load_master_key() {
                Err(e) => refusals.push(e),
                Ok(key)
                    if key.is_dev
                        && mode == Mode::Serve
                        && issuer.as_ref().is_some_and(|i| !is_loopback_host(i)) =>
                {
                    refusals.push(invalid(
                        "master_key_file",
                        "this is the development key written by `latchkey dev`; generate a real one with `latchkey keys generate-master`",
                    ));
                }
                Ok(_) => {}
            }
        }
        if self.tokens.signing_algorithm == "none" {
            refusals.push(invalid(
                "tokens.signing_algorithm",
                "`none` is never allowed",
            ));
        }
        match refusals.len() {
            0 => Ok(()),
            1 => Err(refusals.remove(0)),
            _ => Err(ConfigError::Refused(refusals)),
        }
    }

    pub fn issuer_url(&self) -> Result<Url, ConfigError> {
        Url::parse(&self.issuer)
            .map_err(|e| invalid("issuer", format!("{:?} is not a URL: {e}", self.issuer)))
    }

    /// The issuer without a trailing slash, as used in `iss` and page links.
    pub fn issuer_str(&self) -> &str {
        self.issuer.trim_end_matches('/')
    }

    pub fn is_https(&self) -> bool {
        self.issuer.starts_with("https://")
    }

    pub fn bind_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.bind.parse().map_err(|_| {
            invalid(
                "bind",
                format!("{:?} is not an address:port like 127.0.0.1:8080", self.bind),
            )
        })
    }

    /// Reads the master key from `master_key` or `master_key_file`.
    pub fn load_master_key(&self) -> Result<LoadedMasterKey, ConfigError> {
        let bad = |e: MasterKeyError| invalid("master_key", e.to_string());
        if let Some(text) = &self.master_key {
            return Ok(LoadedMasterKey {
                key: MasterKey::parse(text).map_err(bad)?,
                is_dev: false,
            });
        }
        let Some(path) = &self.master_key_file else {
            return Err(invalid(
                "master_key",
                "not set: set LATCHKEY_MASTER_KEY or LATCHKEY_MASTER_KEY_FILE",
            ));
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            invalid(
                "master_key_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let is_dev = text.lines().any(|l| l.trim() == DEV_KEY_MARKER);
        let key_line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .ok_or_else(|| {
                invalid(
                    "master_key_file",
                    format!("{} holds no key", path.display()),
                )
            })?;
        let key =
            MasterKey::parse(key_line).map_err(|e| invalid("master_key_file", e.to_string()))?;
        Ok(LoadedMasterKey { key, is_dev })
    }

    /// The full configuration as TOML, secrets redacted (for `doctor` and docs).
    pub fn to_redacted_toml(&self) -> String {
        let mut copy = self.clone();
        if copy.master_key.is_some() {
            copy.master_key = Some("<redacted>".into());
        }
        copy.database.url = crate::store::redact_url(&copy.database.url);
        for provider in &mut copy.federation.providers {
            if provider.client_secret.is_some() {
                provider.client_secret = Some("<redacted>".into());
            }
        }
        toml::to_string_pretty(&copy).unwrap_or_default()
    }
}

pub struct LoadedMasterKey {
    pub key: MasterKey,
    pub is_dev: bool,
}

pub fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost" || d.ends_with(".localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Applies `LATCHKEY_*` variables onto the TOML table. `LATCHKEY_ISSUER` sets
/// `issuer`; a double underscore descends into a section:
/// `LATCHKEY_SESSION__IDLE_TIMEOUT_SECS=600` sets `session.idle_timeout_secs`.
/// Values are read as TOML (numbers, booleans, `["a","b"]`) and fall back to
/// plain strings.
fn apply_env(table: &mut toml::Table, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    // Variables that are not options (test harness, CLI conveniences).
    const NOT_OPTIONS: &[&str] = &["LATCHKEY_DATA_DIR", "LATCHKEY_CONFIG"];
    let defaults = toml::Table::try_from(Config::default()).unwrap_or_default();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("LATCHKEY_") else {
            continue;
        };
        if NOT_OPTIONS.contains(&name.as_str()) || name.starts_with("LATCHKEY_TEST_") {
            continue;
        }
        let path: Vec<String> = rest
            .to_ascii_lowercase()
            .split("__")
            .map(str::to_owned)
            .collect();
        // The short, documented aliases.
        let path = match path.as_slice() {
            [p] if p == "database_url" => vec!["database".to_owned(), "url".to_owned()],
            _ => path,
        };
        if !known_option(&defaults, &path) {
            return Err(ConfigError::Env {
                name: name.clone(),
                reason: "no such option (see docs/configuration.md)".into(),
            });
        }
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        // A string option keeps the raw text even if it looks like a number.
        let parsed = match lookup(&defaults, &path) {
            Some(toml::Value::String(_)) | None => toml::Value::String(value.clone()),
            _ => parsed,
        };
        let mut cursor = &mut *table;
        for (i, key) in path.iter().enumerate() {
            if i + 1 == path.len() {
                cursor.insert(key.clone(), parsed.clone());
            } else {
                let entry = cursor
                    .entry(key.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let toml::Value::Table(next) = entry else {
                    return Err(ConfigError::Env {
                        name: name.clone(),
                        reason: format!("{key} is not a section"),
                    });
                };
                cursor = next;
            }
        }
    }
    Ok(())
}

/// Optional options (`master_key`, `redis_url`...) are absent from the
/// serialized defaults, so they are listed here.
const OPTIONAL_OPTIONS: &[&str] = &["master_key", "master_key_file", "redis_url"];
const OPTIONAL_NESTED: &[[&str; 2]] = &[["tokens", "hs256_secret"], ["webauthn", "rp_id"]];

fn known_option(defaults: &toml::Table, path: &[String]) -> bool {
    (path.len() == 1 && OPTIONAL_OPTIONS.contains(&path[0].as_str()))
        || (path.len() == 2
            && OPTIONAL_NESTED
                .iter()
                .any(|[a, b]| path[0] == *a && path[1] == *b))
        || lookup(defaults, path).is_some()
}

fn lookup<'a>(table: &'a toml::Table, path: &[String]) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_first()?;
    let value = table.get(first)?;
    if rest.is_empty() {
        Some(value)
    } else {
        lookup(value.as_table()?, rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn env_overrides_file_values_and_nested_options() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("latchkey.toml");
        std::fs::write(
            &file,
            "issuer = \"https://id.example.com\"\n[session]\nidle_timeout_secs = 100\n",
        )
        .expect("write");
        let config = Config::load(
            Some(&file),
            &env(&[
                ("LATCHKEY_SESSION__IDLE_TIMEOUT_SECS", "600"),
                ("LATCHKEY_DATABASE_URL", "postgres://x@h/db"),
            ]),
        )
        .expect("valid");
        assert_eq!(config.issuer, "https://id.example.com");
        assert_eq!(config.session.idle_timeout_secs, 600);
        assert_eq!(config.database.url, "postgres://x@h/db");
    }

    #[test]
    fn refresh_token_reuse_grace_is_bounded() {
        for bad in ["-1", "301"] {
            let err = Config::load(
                None,
                &env(&[
                    ("LATCHKEY_DATABASE_URL", "postgres://x@h/db"),
                    ("LATCHKEY_TOKENS__REFRESH_TOKEN_REUSE_GRACE_SECS", bad),
                ]),
            )
            .expect_err(bad);
            assert!(
                err.to_string()
                    .contains("tokens.refresh_token_reuse_grace_secs"),
                "{err}"
            );
        }
        for good in ["0", "30", "300"] {
            Config::load(
                None,
                &env(&[
                    ("LATCHKEY_DATABASE_URL", "postgres://x@h/db"),
                    ("LATCHKEY_TOKENS__REFRESH_TOKEN_REUSE_GRACE_SECS", good),
                ]),
            )
            .expect(good);
        }
        assert_eq!(Config::default().tokens.refresh_token_reuse_grace_secs, 30);
    }

    #[test]
    fn unknown_options_are_named() {
        let err = Config::load(None, &env(&[("LATCHKEY_SESION__IDLE", "1")])).expect_err("unknown");
        assert!(err.to_string().contains("LATCHKEY_SESION__IDLE"), "{err}");
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[session]\nidel_timeout_secs = 1\n").expect("write");
        let err = Config::load(Some(&file), &BTreeMap::new()).expect_err("unknown");
        assert!(err.to_string().contains("idel_timeout_secs"), "{err}");
    }

    #[test]
    fn serve_refuses_plain_http_off_loopback() {
        let mut c = Config {
            master_key: Some(MasterKey::generate().encode()),
            ..Config::default()
        };
        c.issuer = "http://id.example.com".into();
        let err = c.check_for_serving(Mode::Serve).expect_err("refused");
        assert!(err.to_string().contains("`issuer`"), "{err}");
        c.issuer = "https://id.example.com".into();
        c.check_for_serving(Mode::Serve).expect("https is fine");
    }

    #[test]
    fn serve_refuses_cors_wildcard_with_credentials() {
        let mut c = Config {
            master_key: Some(MasterKey::generate().encode()),
            ..Config::default()
        };
        c.http.cors_allowed_origins = vec!["*".into()];
        c.http.cors_allow_credentials = true;
        let err = c.check_for_serving(Mode::Serve).expect_err("refused");
        assert!(err.to_string().contains("cors_allowed_origins"), "{err}");
    }

    #[test]
    fn ui_branding_is_checked() {
        let with = |f: fn(&mut UiConfig)| {
            let mut c = Config::default();
            f(&mut c.ui);
            c.check_types()
        };
        assert!(with(|_| {}).is_ok());
        assert!(with(|u| u.primary_color = "#0b6e4f".into()).is_ok());
        assert!(with(|u| u.logo_url = "https://cdn.example.com/logo.svg".into()).is_ok());
        assert!(with(|u| u.logo_url = "/static/latchkey.css".into()).is_ok());
        assert!(with(|u| u.logo_url = "https://203.0.113.7/logo.png".into()).is_ok());
        assert!(with(|u| u.logo_url = "https://xn--bcher-kva.example/logo.png".into()).is_ok());
        for (bad, option) in [
            (
                with(|u| u.primary_color = "#ffff00".into()),
                "ui.primary_color",
            ),
            (with(|u| u.primary_color = "red".into()), "ui.primary_color"),
            (
                with(|u| u.primary_color = "#12345g".into()),
                "ui.primary_color",
            ),
            (
                with(|u| u.logo_url = "javascript:alert(1)".into()),
                "ui.logo_url",
            ),
            (
                with(|u| u.logo_url = "//evil.example/x.png".into()),
                "ui.logo_url",
            ),
            (
                with(|u| u.logo_url = "http://cdn.example.com/x.png".into()),
                "ui.logo_url",
            ),
            (
                with(|u| u.logo_url = "https://*/logo.png".into()),
                "ui.logo_url",
            ),
            (
                with(|u| u.logo_url = "https://*.example.com/logo.png".into()),
                "ui.logo_url",
            ),
            (
                with(|u| u.logo_url = "https://cdn.example.com;script-src/x.png".into()),
                "ui.logo_url",
            ),
            (
                with(|u| u.logo_url = "https://a,b.example.com/x.png".into()),
                "ui.logo_url",
            ),
            (
                with(|u| u.logo_url = "https://cdn..example.com/x.png".into()),
                "ui.logo_url",
            ),
            (with(|u| u.product_name = "  ".into()), "ui.product_name"),
            (with(|u| u.product_name = "a\nb".into()), "ui.product_name"),
        ] {
            let err = bad.expect_err(option);
            assert!(err.to_string().contains(option), "{err}");
        }
        // WCAG's own extremes and the default accent.
        assert!((contrast_ratio([0, 0, 0], [255, 255, 255]) - 21.0).abs() < 1e-9);
        assert!(contrast_ratio([0x2f, 0x5b, 0xd3], [255, 255, 255]) > 4.5);
    }

    #[test]
    fn serve_lists_every_refusal_at_once() {
        let mut c = Config {
            issuer: "http://id.example.com".into(),
            bind: "everywhere".into(),
            ..Config::default()
        };
        c.http.cors_allowed_origins = vec!["*".into()];
        c.http.cors_allow_credentials = true;
        let err = c.check_for_serving(Mode::Serve).expect_err("refused");
        let text = err.to_string();
        assert!(text.starts_with("4 settings are refused:"), "{text}");
        for option in [
            "`issuer`",
            "`bind`",
            "`http.cors_allowed_origins`",
            "`master_key`",
        ] {
            assert_eq!(text.matches(option).count(), 1, "{option} once in: {text}");
        }
    }

    #[test]
    fn serve_refuses_missing_master_key() {
        let err = Config::default()
            .check_for_serving(Mode::Serve)
            .expect_err("refused");
        assert!(err.to_string().contains("`master_key`"), "{err}");
    }

    #[test]
    fn serve_refuses_dev_key_off_loopback() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.key");
        std::fs::write(
            &path,
            format!("{DEV_KEY_MARKER}\n{}\n", MasterKey::generate().encode()),
        )
        .expect("write");
        let c = Config {
            issuer: "https://id.example.com".into(),
            master_key_file: Some(path),
            ..Config::default()
        };
        let err = c.check_for_serving(Mode::Serve).expect_err("refused");
        assert!(err.to_string().contains("development key"), "{err}");
    }

    #[test]
    fn bad_values_name_their_option() {
        for (name, value, option) in [
            ("LATCHKEY_BIND", "nonsense", "`bind`"),
            ("LATCHKEY_ISSUER", "ftp://x", "`issuer`"),
            ("LATCHKEY_PASSWORD__MIN_LENGTH", "4", "password.min_length"),
            (
                "LATCHKEY_HTTP__CORS_ALLOWED_ORIGINS",
                "[\"https://a.example/\"]",
                "cors_allowed_origins",
            ),
            ("LATCHKEY_DATABASE_URL", "mysql://x", "database.url"),
        ] {
            let err = Config::load(None, &env(&[(name, value)])).expect_err(name);
            assert!(err.to_string().contains(option), "{name}: {err}");
        }
    }

    #[test]
    fn only_canonical_issuers_are_accepted() {
        for bad in [
            "HTTPS://id.example.com",
            "https://ID.example.com",
            "https://id.example.com:443",
        ] {
            let err = Config::load(None, &env(&[("LATCHKEY_ISSUER", bad)])).expect_err(bad);
            assert!(err.to_string().contains("canonical"), "{bad}: {err}");
        }
        Config::load(
            None,
            &env(&[("LATCHKEY_ISSUER", "https://id.example.com/")]),
        )
        .expect("a trailing slash is fine");
    }

    #[test]
    fn dev_bind_moves_issuer() {
        let c = Config::dev(
            Path::new("/tmp/x"),
            &env(&[("LATCHKEY_BIND", "127.0.0.1:9090")]),
        )
        .expect("valid");
        assert_eq!(c.issuer, "http://localhost:9090");
        assert!(c.database.url.contains("/tmp/x/latchkey.db"));
    }

    #[test]
    fn dev_issuer_is_localhost_so_passkeys_work() {
        let c = Config::dev(Path::new("/tmp/x"), &env(&[])).expect("valid");
        assert_eq!(c.issuer, "http://localhost:8080");
        assert_eq!(c.bind, "127.0.0.1:8080");
        let explicit = Config::dev(
            Path::new("/tmp/x"),
            &env(&[
                ("LATCHKEY_BIND", "127.0.0.1:9090"),
                ("LATCHKEY_ISSUER", "http://127.0.0.1:9090"),
            ]),
        )
        .expect("valid");
        assert_eq!(
            explicit.issuer, "http://127.0.0.1:9090",
            "LATCHKEY_ISSUER wins"
        );
        assert_eq!(
            Config::dev_issuer_for("10.1.2.3:8080".parse().expect("addr")),
            "http://10.1.2.3:8080"
        );
        assert_eq!(
            Config::dev_issuer_for("[::1]:8080".parse().expect("addr")),
            "http://localhost:8080"
        );
        let exposed = Config::dev(
            Path::new("/tmp/x"),
            &env(&[("LATCHKEY_BIND", "0.0.0.0:8080")]),
        )
        .expect("valid");
        assert_eq!(exposed.issuer, "http://0.0.0.0:8080");
        assert!(
            exposed.check_for_serving(Mode::Dev).is_err(),
            "dev on every interface over plain http is refused"
        );
    }
}
