//! Federation (social login): sign-in at an upstream OpenID Connect provider.
//!
//! Owns: the provider specifications — from `[[federation.providers]]` in the
//! configuration and from the database (`latchkey idp add`), merged by
//! [`providers`] on every use so a provider added or removed next to a
//! running server is offered or withdrawn at once — their validation
//! ([`ProviderSpec`]), the sealing of their client secrets, the relying-party
//! side of the upstream exchange (`upstream`), the tables of federated
//! identities, sign-in states and pending links (`store`), and the account
//! rules that map an upstream identity to a local user (`accounts`: JIT
//! provisioning and the linking rules of docs/federation.md).
//!
//! Must not: know about HTTP requests, cookies or templates (the web calls
//! [`begin`] and [`accounts::finish`]); create sessions (that is `login`,
//! which [`accounts`] calls); revoke anything itself (the squatter rule goes
//! through `cascade`). Takes `&Core` / `&SignInKit`, never the web's state.

pub mod accounts;
pub mod store;
pub mod upstream;

use std::collections::BTreeMap;

use crate::config::{Config, ProviderConfig};
use crate::core::Core;
use crate::identity::Role;
use crate::store::StoreError;

/// The purpose of the key that seals provider client secrets and PKCE verifiers.
pub const SEAL_PURPOSE: &str = "latchkey/federation-seal/v1";

/// What kind of upstream a provider is. Only generic OpenID Connect today.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Oidc,
}

impl ProviderKind {
    pub fn parse(text: &str) -> Result<ProviderKind, SpecError> {
        match text {
            "oidc" => Ok(ProviderKind::Oidc),
            "google" | "github" | "microsoft" | "apple" => Err(SpecError(format!(
                "kind {text:?} is not available yet: use kind \"oidc\" with the provider's issuer"
            ))),
            other => Err(SpecError(format!(
                "kind {other:?} is not one of oidc, google, github, microsoft, apple"
            ))),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Oidc => "oidc",
        }
    }
}

/// When an upstream identity may be attached to an existing local account
/// that holds the same email address (docs/federation.md, "Linking rules").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkPolicy {
    /// Automatically when both sides have verified the address; otherwise
    /// the owner confirms by signing in (the default).
    Verified,
    /// Always by the owner signing in to the existing account.
    Confirm,
    /// Never: the federated sign-in is refused; the owner links from the account page.
    Never,
}

impl LinkPolicy {
    pub fn parse(text: &str) -> Result<LinkPolicy, SpecError> {
        match text {
            "verified" => Ok(LinkPolicy::Verified),
            "confirm" => Ok(LinkPolicy::Confirm),
            "never" => Ok(LinkPolicy::Never),
            other => Err(SpecError(format!(
                "link policy {other:?} is not one of verified, confirm, never"
            ))),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            LinkPolicy::Verified => "verified",
            LinkPolicy::Confirm => "confirm",
            LinkPolicy::Never => "never",
        }
    }
}

/// How Latchkey authenticates to the upstream's token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
}

impl AuthMethod {
    pub fn parse(text: &str) -> Result<AuthMethod, SpecError> {
        match text {
            "client_secret_basic" => Ok(AuthMethod::ClientSecretBasic),
            "client_secret_post" => Ok(AuthMethod::ClientSecretPost),
            other => Err(SpecError(format!(
                "auth method {other:?} is not one of client_secret_basic, client_secret_post"
            ))),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
        }
    }
}

/// Why a provider specification was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

/// Where a provider's client secret is.
#[derive(Clone)]
pub enum SecretSource {
    /// Inline in the configuration.
    Inline(String),
    /// In a file named by the configuration (read on use, so it may rotate).
    File(std::path::PathBuf),
    /// Sealed in the database.
    Sealed(String),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::File(path) => write!(f, "File({})", path.display()),
            _ => f.write_str("<redacted>"),
        }
    }
}

/// Where a provider was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Config,
    Database,
}

/// A validated provider. Its secret never appears in `Debug` or serialized output.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProviderSpec {
    pub name: String,
    pub kind: ProviderKind,
    pub issuer: String,
    pub client_id: String,
    #[serde(skip)]
    pub secret: SecretSource,
    pub auth_method: AuthMethod,
    /// Scopes asked for besides `openid`.
    pub scopes: Vec<String>,
    pub link: LinkPolicy,
    pub provision: bool,
    /// The ID-token claim whose value(s) [`Self::role_map`] maps to local roles; "" for none.
    pub role_claim: String,
    pub role_map: BTreeMap<String, Role>,
    pub enabled: bool,
    pub origin: Origin,
}

/// A provider name: 1-32 of `a-z 0-9 - _`, starting with a letter (it is a path segment).
pub fn check_name(name: &str) -> Result<(), SpecError> {
    let ok = (1..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'));
    if ok && name != "link" {
        Ok(())
    } else {
        Err(SpecError(format!(
            "provider name {name:?} (not \"link\"): use 1-32 characters from a-z, 0-9, '-', '_', starting with a letter"
        )))
    }
}

/// An issuer URL: absolute http(s), no query or fragment, no credentials.
/// Whether plain http or its address is allowed is decided per call
/// (`upstream::UpstreamPolicy`), since DNS answers change.
pub fn check_issuer(issuer: &str, config: &Config) -> Result<url::Url, SpecError> {
    let url = url::Url::parse(issuer)
        .map_err(|e| SpecError(format!("issuer {issuer:?} is not a URL: {e}")))?;
    if url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
        || url.host().is_none()
    {
        return Err(SpecError(format!(
            "issuer {issuer:?} must have a host and no credentials, query or fragment"
        )));
    }
    match url.scheme() {
        "https" => {}
        "http"
            if config.federation.allow_insecure_loopback
                && crate::config::is_loopback_host(&url) => {}
        "http" => {
            return Err(SpecError(format!(
                "issuer {issuer:?} must be https (plain http only for a loopback upstream with federation.allow_insecure_loopback)"
            )))
        }
        other => return Err(SpecError(format!("issuer scheme {other:?} is not https"))),
    }
    Ok(url)
}

fn check_scopes(scopes: &[String]) -> Result<Vec<String>, SpecError> {
    let mut out = Vec::new();
    for scope in scopes {
        let ok = !scope.is_empty()
            && scope.len() <= 128
            && scope
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
        if !ok {
            return Err(SpecError(format!("scope {scope:?} is not a scope token")));
        }
        if scope != "openid" && !out.contains(scope) {
            out.push(scope.clone());
        }
    }
    Ok(out)
}

fn check_role_map(
    claim: &str,
    map: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, Role>, SpecError> {
    if claim.len() > 128 || claim.chars().any(char::is_control) {
        return Err(SpecError(format!(
            "role claim {claim:?} is not a claim name"
        )));
    }
    if claim.is_empty() && !map.is_empty() {
        return Err(SpecError("a role map needs a role claim".into()));
    }
    map.iter()
        .map(|(value, role)| {
            let role = Role::parse(role).map_err(|e| SpecError(e.to_string()))?;
            if value.is_empty() || value.len() > 256 {
                return Err(SpecError(format!(
                    "role map value {value:?}: 1-256 characters"
                )));
            }
            Ok((value.clone(), role))
        })
        .collect()
}

/// The fields of a provider, as the CLI and the configuration give them.
#[derive(Debug, Clone)]
pub struct ProviderFields<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub auth_method: &'a str,
    pub scopes: &'a [String],
    pub link: &'a str,
    pub provision: bool,
    pub role_claim: &'a str,
    pub role_map: &'a BTreeMap<String, String>,
    pub enabled: bool,
}

impl ProviderSpec {
    /// Validates every field; `secret` is where the client secret is.
    pub fn build(
        fields: ProviderFields<'_>,
        secret: SecretSource,
        origin: Origin,
        config: &Config,
    ) -> Result<ProviderSpec, SpecError> {
        check_name(fields.name)?;
        let kind = ProviderKind::parse(fields.kind)?;
        let issuer = check_issuer(fields.issuer, config)?;
        if fields.client_id.is_empty()
            || fields.client_id.len() > 255
            || fields.client_id.chars().any(char::is_control)
        {
            return Err(SpecError("client id: 1-255 printable characters".into()));
        }
        Ok(ProviderSpec {
            name: fields.name.to_owned(),
            kind,
            // The issuer exactly as the upstream names itself (`iss` is compared as a string).
            issuer: if fields.issuer.ends_with('/') && issuer.path() == "/" {
                fields.issuer.trim_end_matches('/').to_owned()
            } else {
                fields.issuer.to_owned()
            },
            client_id: fields.client_id.to_owned(),
            secret,
            auth_method: AuthMethod::parse(fields.auth_method)?,
            scopes: check_scopes(fields.scopes)?,
            link: LinkPolicy::parse(fields.link)?,
            provision: fields.provision,
            role_claim: fields.role_claim.to_owned(),
            role_map: check_role_map(fields.role_claim, fields.role_map)?,
            enabled: fields.enabled,
            origin,
        })
    }

    /// A `[[federation.providers]]` entry.
    pub fn from_config(p: &ProviderConfig, config: &Config) -> Result<ProviderSpec, SpecError> {
        let secret = match (&p.client_secret, &p.client_secret_file) {
            (Some(s), None) if !s.is_empty() => SecretSource::Inline(s.clone()),
            (None, Some(path)) => SecretSource::File(path.clone()),
            _ => {
                return Err(SpecError(format!(
                    "provider {:?}: set exactly one of client_secret, client_secret_file",
                    p.name
                )))
            }
        };
        Self::build(
            ProviderFields {
                name: &p.name,
                kind: &p.kind,
                issuer: &p.issuer,
                client_id: &p.client_id,
                auth_method: &p.auth_method,
                scopes: &p.scopes,
                link: &p.link,
                provision: p.provision,
                role_claim: &p.role_claim,
                role_map: &p.role_map,
                enabled: p.enabled,
            },
            secret,
            Origin::Config,
            config,
        )
        .map_err(|e| SpecError(format!("provider {:?}: {e}", p.name)))
    }

    /// The client secret, unsealed or read from its file.
    pub fn client_secret(&self, seal_key: &[u8; 32]) -> Result<String, SpecError> {
        match &self.secret {
            SecretSource::Inline(s) => Ok(s.clone()),
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim().to_owned())
                .map_err(|e| {
                    SpecError(format!(
                        "provider {:?}: cannot read {}: {e}",
                        self.name,
                        path.display()
                    ))
                }),
            SecretSource::Sealed(sealed) => {
                crate::crypto::unseal(seal_key, self.name.as_bytes(), sealed)
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        SpecError(format!(
                    "provider {:?}: its client secret does not unseal (another master key?)",
                    self.name
                ))
                    })
            }
        }
    }

    /// The local roles the mapping gives for the upstream's claims: the
    /// claim may be a string or an array of strings; unmapped values give nothing.
    pub fn roles_for(&self, claims: &serde_json::Map<String, serde_json::Value>) -> Vec<Role> {
        if self.role_claim.is_empty() {
            return Vec::new();
        }
        let values: Vec<&str> = match claims.get(&self.role_claim) {
            Some(serde_json::Value::String(s)) => vec![s.as_str()],
            Some(serde_json::Value::Array(items)) => {
                items.iter().filter_map(serde_json::Value::as_str).collect()
            }
            _ => Vec::new(),
        };
        let mut roles: Vec<Role> = values
            .into_iter()
            .filter_map(|v| self.role_map.get(v).cloned())
            .collect();
        roles.sort();
        roles.dedup();
        roles
    }
}

/// Seals a client secret for the database, bound to the provider's name.
pub fn seal_secret(seal_key: &[u8; 32], name: &str, secret: &str) -> String {
    crate::crypto::seal(seal_key, name.as_bytes(), secret.as_bytes())
}

/// Every provider: the configuration's, then the database's (a database
/// provider named like a configured one is ignored: the file wins). Read on
/// every call, so CLI changes apply at once.
pub async fn providers(core: &Core) -> Result<Vec<ProviderSpec>, StoreError> {
    providers_from(&core.config, &core.pool).await
}

/// [`providers`] for callers without a `Core` (the CLI).
pub async fn providers_from(
    config: &Config,
    pool: &crate::store::Pool,
) -> Result<Vec<ProviderSpec>, StoreError> {
    let mut all: Vec<ProviderSpec> = config
        .federation
        .providers
        .iter()
        .filter_map(|p| ProviderSpec::from_config(p, config).ok())
        .collect();
    for stored in store::list_providers(pool, config).await? {
        if !all.iter().any(|p| p.name == stored.name) {
            all.push(stored);
        }
    }
    Ok(all)
}

/// The enabled providers, for the sign-in page.
pub async fn enabled_providers(core: &Core) -> Result<Vec<ProviderSpec>, StoreError> {
    Ok(providers(core)
        .await?
        .into_iter()
        .filter(|p| p.enabled)
        .collect())
}

/// One enabled provider by name.
pub async fn enabled_provider(core: &Core, name: &str) -> Result<Option<ProviderSpec>, StoreError> {
    Ok(enabled_providers(core)
        .await?
        .into_iter()
        .find(|p| p.name == name))
}

/// The callback URL operators register at the provider.
pub fn callback_url(config: &Config, name: &str) -> String {
    format!(
        "{}/login/idp/{name}/callback",
        config.issuer.trim_end_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(
        name: &'a str,
        issuer: &'a str,
        map: &'a BTreeMap<String, String>,
        scopes: &'a [String],
    ) -> ProviderFields<'a> {
        ProviderFields {
            name,
            kind: "oidc",
            issuer,
            client_id: "abc",
            auth_method: "client_secret_basic",
            scopes,
            link: "verified",
            provision: false,
            role_claim: if map.is_empty() { "" } else { "groups" },
            role_map: map,
            enabled: true,
        }
    }

    #[test]
    fn provider_specs_refuse_bad_names_issuers_and_maps() {
        let config = Config::default();
        let empty = BTreeMap::new();
        let scopes = vec!["email".to_owned(), "openid".to_owned()];
        let ok = ProviderSpec::build(
            fields("corp", "https://id.example.com", &empty, &scopes),
            SecretSource::Inline("s".into()),
            Origin::Database,
            &config,
        )
        .expect("valid");
        assert_eq!(ok.scopes, vec!["email".to_owned()]);
        for (name, issuer) in [
            ("Corp", "https://id.example.com"),
            ("../x", "https://id.example.com"),
            ("corp", "http://id.example.com"),
            ("corp", "http://127.0.0.1:9000"),
            ("corp", "https://id.example.com/?a=b"),
            ("corp", "https://user:pw@id.example.com"),
            ("corp", "ftp://id.example.com"),
            ("corp", "not a url"),
        ] {
            assert!(
                ProviderSpec::build(
                    fields(name, issuer, &empty, &scopes),
                    SecretSource::Inline("s".into()),
                    Origin::Database,
                    &config,
                )
                .is_err(),
                "{name} {issuer}"
            );
        }
        let mut loopback = Config::default();
        loopback.federation.allow_insecure_loopback = true;
        assert!(ProviderSpec::build(
            fields("corp", "http://127.0.0.1:9000", &empty, &scopes),
            SecretSource::Inline("s".into()),
            Origin::Database,
            &loopback,
        )
        .is_ok());
        let bad_role = BTreeMap::from([("x".to_owned(), "Not A Role".to_owned())]);
        assert!(ProviderSpec::build(
            fields("corp", "https://id.example.com", &bad_role, &scopes),
            SecretSource::Inline("s".into()),
            Origin::Database,
            &config,
        )
        .is_err());
    }

    #[test]
    fn role_mapping_reads_strings_and_arrays_and_ignores_the_rest() {
        let config = Config::default();
        let map = BTreeMap::from([
            ("staff".to_owned(), "support".to_owned()),
            ("ops".to_owned(), "admin".to_owned()),
        ]);
        let scopes = Vec::new();
        let spec = ProviderSpec::build(
            fields("corp", "https://id.example.com", &map, &scopes),
            SecretSource::Inline("s".into()),
            Origin::Database,
            &config,
        )
        .expect("valid");
        let claims = |v: serde_json::Value| {
            serde_json::json!({ "groups": v })
                .as_object()
                .cloned()
                .unwrap_or_default()
        };
        let names = |roles: Vec<Role>| {
            roles
                .iter()
                .map(|r| r.as_str().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(spec.roles_for(&claims(serde_json::json!("staff")))),
            ["support"]
        );
        assert_eq!(
            names(spec.roles_for(&claims(serde_json::json!(["ops", "staff", "other", 3])))),
            ["admin", "support"]
        );
        assert!(spec
            .roles_for(&claims(serde_json::json!({"ops": true})))
            .is_empty());
    }
}
