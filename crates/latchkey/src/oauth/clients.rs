//! OAuth clients: registration data, secrets and client authentication.
//!
//! Owns: the `clients` table. A confidential client's secret is 256 random
//! bits, shown once at creation and stored only as SHA-256 (a high-entropy
//! secret needs no slow hash, and the token endpoint must stay fast); it is
//! compared in constant time.
//!
//! A client registered with a JWK Set authenticates with `private_key_jwt`
//! only: it gets no secret, and a secret stored for it before that rule
//! authenticates nothing. A public client must use PKCE (`require_pkce`);
//! only a confidential one may opt out ([`RegistrationError`]).
//!
//! Must not: know about HTTP (`grants::client_auth` reads the credentials out
//! of a request and passes a [`ClientCredentials`]).

use latchkey_verify::jose::Algorithm;
use sqlx::Row as _;

use crate::clock::UnixTime;
use crate::crypto::{SecretToken, TokenHash};
use crate::revocation::{self, Cause, Revoked};
use crate::scope::Scope;
use crate::store::{Pool, StoreError};

/// How a client authenticates, by its RFC 7591 / OIDC Discovery name. The
/// discovery document lists exactly these ([`AuthMethod::ALL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// The secret in HTTP Basic.
    ClientSecretBasic,
    /// The secret in the form.
    ClientSecretPost,
    /// An assertion signed by one of the client's registered keys (RFC 7523).
    PrivateKeyJwt,
    /// A public client naming itself.
    None,
}

impl AuthMethod {
    pub const ALL: [AuthMethod; 4] = [
        AuthMethod::ClientSecretBasic,
        AuthMethod::ClientSecretPost,
        AuthMethod::PrivateKeyJwt,
        AuthMethod::None,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::PrivateKeyJwt => "private_key_jwt",
            AuthMethod::None => "none",
        }
    }

    /// Whether the method proves a confidential client (what introspection needs).
    pub fn is_confidential(self) -> bool {
        self != AuthMethod::None
    }
}

/// The algorithms a `private_key_jwt` assertion may be signed with: those of
/// the keys a client can register (asymmetric only; a shared secret is no
/// private key).
pub fn assertion_algorithms() -> impl Iterator<Item = latchkey_verify::jose::Algorithm> {
    latchkey_verify::jose::Algorithm::ALL
        .into_iter()
        .filter(|a| a.is_asymmetric())
}

/// The algorithms a client's ID tokens may be signed with, given the
/// algorithms the deployment keeps keys for: the asymmetric ones (a relying
/// party cannot verify our shared secret). RS256 is always kept.
pub fn id_token_algorithms(
    kept: &[latchkey_verify::jose::Algorithm],
) -> impl Iterator<Item = latchkey_verify::jose::Algorithm> + '_ {
    kept.iter().copied().filter(|a| a.is_asymmetric())
}

/// Grant types a client may be allowed (and the token endpoint serves).
pub const GRANT_TYPES: &[&str] = &[
    "authorization_code",
    "refresh_token",
    "client_credentials",
    "urn:ietf:params:oauth:grant-type:device_code",
];

#[derive(Debug, Clone, serde::Serialize)]
pub struct Client {
    pub id: String,
    pub name: String,
    pub confidential: bool,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    #[serde(serialize_with = "scope_as_string")]
    pub scopes: Scope,
    pub audience: String,
    pub access_token_format: AccessTokenFormat,
    pub access_token_lifetime_secs: Option<i64>,
    pub signing_algorithm: Option<String>,
    /// `id_token_signed_response_alg` (OIDC Dynamic Registration §2): the
    /// algorithm of its ID tokens; `None` = RS256.
    pub id_token_signed_response_alg: Option<String>,
    pub first_party: bool,
    pub backchannel_logout_uri: Option<String>,
    /// Public keys for `private_key_jwt` authentication (a JWK Set).
    pub jwks: Option<latchkey_verify::jose::JwkSet>,
    /// Users must have signed in with a second factor to use this client.
    pub require_mfa: bool,
    /// Every authorization request needs PKCE S256. Only a confidential
    /// client can be `false`, and then only an OpenID Connect request with a
    /// `nonce` may go without it (RFC 9700 §2.1.1; see `oauth::pkce`).
    pub require_pkce: bool,
    pub created_at: UnixTime,
    #[serde(skip)]
    secret_hash: Option<String>,
}

fn scope_as_string<S: serde::Serializer>(scope: &Scope, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&scope.to_string())
}

pub use crate::tokens::AccessTokenFormat;

impl Client {
    pub fn allows_grant(&self, grant: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant)
    }

    /// The `aud` of access tokens issued to this client.
    pub fn token_audience(&self) -> &str {
        if self.audience.is_empty() {
            &self.id
        } else {
            &self.audience
        }
    }

    /// How this client's access tokens are made: what `tokens` needs of
    /// the registration, and nothing else.
    pub fn token_policy(&self) -> crate::tokens::TokenPolicy<'_> {
        crate::tokens::TokenPolicy {
            client_id: &self.id,
            audience: self.token_audience(),
            format: self.access_token_format,
            lifetime_secs: self.access_token_lifetime_secs,
            algorithm: self.signing_algorithm.as_deref().and_then(Algorithm::parse),
        }
    }

    /// The algorithm asked for this client's ID tokens
    /// (`id_token_signed_response_alg`); the key ring decides.
    pub fn id_token_algorithm(&self) -> Option<Algorithm> {
        self.id_token_signed_response_alg
            .as_deref()
            .and_then(Algorithm::parse)
    }
}

/// What a client presented to authenticate (from Basic or the form).
#[derive(Debug)]
pub enum ClientCredentials {
    /// `client_secret_basic` (`via_basic = true`) or `client_secret_post`.
    Secret {
        client_id: String,
        secret: String,
        via_basic: bool,
    },
    /// A public client naming itself (`none`).
    PublicId { client_id: String },
}

/// A registration or change the rules refuse.
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    /// A public client has only PKCE to prove it started the flow.
    #[error("a public client cannot go without PKCE: it is the only proof that the code goes to the app that asked for it (RFC 9700 §2.1.1 allows the opt-out for confidential clients only)")]
    PublicClientWithoutPkce,
    /// Keys make a client confidential.
    #[error("a client with a JWK Set authenticates with private_key_jwt: it cannot be public")]
    PublicClientWithKeys,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for RegistrationError {
    fn from(e: sqlx::Error) -> Self {
        RegistrationError::Store(e.into())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Unknown client, wrong secret, or a public client where a confidential
    /// one is needed: RFC 6749 `invalid_client`.
    #[error("client authentication failed")]
    AuthenticationFailed { via_basic: bool },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ClientError {
    fn from(e: sqlx::Error) -> Self {
        ClientError::Store(e.into())
    }
}

/// Everything needed to register a client.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub name: String,
    pub confidential: bool,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub scopes: Scope,
    pub audience: String,
    pub access_token_format: AccessTokenFormat,
    pub access_token_lifetime_secs: Option<i64>,
    pub signing_algorithm: Option<String>,
    /// `id_token_signed_response_alg` (OIDC Dynamic Registration §2): the
    /// algorithm of its ID tokens; `None` = RS256.
    pub id_token_signed_response_alg: Option<String>,
    pub first_party: bool,
    pub backchannel_logout_uri: Option<String>,
    /// Public keys for `private_key_jwt`: such a client is confidential and
    /// authenticates with its keys only (it gets no secret).
    pub jwks: Option<latchkey_verify::jose::JwkSet>,
    /// `false`: the PKCE opt-out of a confidential OpenID Connect client.
    pub require_pkce: bool,
}

const COLUMNS: &str = "id, name, secret_hash, redirect_uris, post_logout_redirect_uris, grant_types, scopes, audience, access_token_format, access_token_lifetime_secs, signing_algorithm, first_party, backchannel_logout_uri, created_at, jwks, require_mfa, require_pkce, id_token_signed_response_alg";

fn split(text: String) -> Vec<String> {
    text.split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn from_row(row: &sqlx::any::AnyRow) -> Result<Client, sqlx::Error> {
    let secret_hash: Option<String> = row.try_get("secret_hash")?;
    Ok(Client {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        confidential: secret_hash.is_some() || row.try_get::<Option<String>, _>("jwks")?.is_some(),
        secret_hash,
        redirect_uris: split(row.try_get("redirect_uris")?),
        post_logout_redirect_uris: split(row.try_get("post_logout_redirect_uris")?),
        grant_types: split(row.try_get("grant_types")?),
        scopes: Scope::from_stored(&row.try_get::<String, _>("scopes")?),
        audience: row.try_get("audience")?,
        access_token_format: if row.try_get::<String, _>("access_token_format")? == "opaque" {
            AccessTokenFormat::Opaque
        } else {
            AccessTokenFormat::Jwt
        },
        access_token_lifetime_secs: row.try_get("access_token_lifetime_secs")?,
        signing_algorithm: row.try_get("signing_algorithm")?,
        id_token_signed_response_alg: row.try_get("id_token_signed_response_alg")?,
        first_party: row.try_get::<i64, _>("first_party")? != 0,
        backchannel_logout_uri: row.try_get("backchannel_logout_uri")?,
        jwks: row
            .try_get::<Option<String>, _>("jwks")?
            .and_then(|j| serde_json::from_str(&j).ok()),
        require_mfa: row.try_get::<i64, _>("require_mfa")? != 0,
        require_pkce: row.try_get::<i64, _>("require_pkce")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

/// Registers a client; returns it and, for a confidential client without
/// keys, its secret (the only time the secret exists outside the caller).
pub async fn create(
    pool: &Pool,
    new: NewClient,
    now: UnixTime,
) -> Result<(Client, Option<SecretToken>), RegistrationError> {
    create_with_mfa_policy(pool, new, false, now).await
}

/// [`create`], with `require_mfa` set in the same insert: a client that must
/// demand a second factor never exists, even for a moment, without the rule.
pub async fn create_with_mfa_policy(
    pool: &Pool,
    new: NewClient,
    require_mfa: bool,
    now: UnixTime,
) -> Result<(Client, Option<SecretToken>), RegistrationError> {
    if !new.confidential && new.jwks.is_some() {
        return Err(RegistrationError::PublicClientWithKeys);
    }
    if !new.confidential && !new.require_pkce {
        return Err(RegistrationError::PublicClientWithoutPkce);
    }
    let id = format!("lk_{}", uuid::Uuid::new_v4().simple());
    let secret = (new.confidential && new.jwks.is_none()).then(SecretToken::generate);
    sqlx::query(&format!("INSERT INTO clients ({COLUMNS}, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $14)"))
        .bind(&id)
        .bind(&new.name)
        .bind(secret.as_ref().map(|s| s.hash().as_str().to_owned()))
        .bind(new.redirect_uris.join(" "))
        .bind(new.post_logout_redirect_uris.join(" "))
        .bind(new.grant_types.join(" "))
        .bind(new.scopes.to_string())
        .bind(&new.audience)
        .bind(match new.access_token_format {
            AccessTokenFormat::Jwt => "jwt",
            AccessTokenFormat::Opaque => "opaque",
        })
        .bind(new.access_token_lifetime_secs)
        .bind(new.signing_algorithm.clone())
        .bind(i64::from(new.first_party))
        .bind(new.backchannel_logout_uri.clone())
        .bind(now)
        .bind(new.jwks.as_ref().map(|j| serde_json::to_string(j).unwrap_or_default()))
        .bind(i64::from(require_mfa))
        .bind(i64::from(new.require_pkce))
        .bind(new.id_token_signed_response_alg.clone())
        .execute(pool)
        .await?;
    let client = find(pool, &id)
        .await?
        .ok_or(StoreError::Other(sqlx::Error::RowNotFound))?;
    Ok((client, secret))
}

pub async fn find(pool: &Pool, id: &str) -> Result<Option<Client>, StoreError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM clients WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(row.as_ref().map(from_row).transpose()?)
}

pub async fn list(pool: &Pool) -> Result<Vec<Client>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM clients ORDER BY created_at, id"
    ))
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
}

/// Changes to a client; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ClientUpdate {
    pub name: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    pub post_logout_redirect_uris: Option<Vec<String>>,
    pub grant_types: Option<Vec<String>>,
    pub scopes: Option<Scope>,
    pub audience: Option<String>,
    pub access_token_format: Option<AccessTokenFormat>,
    pub access_token_lifetime_secs: Option<Option<i64>>,
    pub signing_algorithm: Option<Option<String>>,
    pub id_token_signed_response_alg: Option<Option<String>>,
    pub first_party: Option<bool>,
    pub backchannel_logout_uri: Option<Option<String>>,
    pub require_mfa: Option<bool>,
    pub require_pkce: Option<bool>,
}

/// Applies `update` in one transaction; `Ok(None)` when there is no such client.
pub async fn update(
    pool: &Pool,
    id: &str,
    update: ClientUpdate,
    now: UnixTime,
) -> Result<Option<Client>, RegistrationError> {
    let mut tx = pool.begin().await?;
    // Write first: takes SQLite's write lock before the read (see tokens::refresh).
    sqlx::query("UPDATE clients SET updated_at = updated_at WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let Some(row) = sqlx::query(&format!("SELECT {COLUMNS} FROM clients WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
    else {
        return Ok(None);
    };
    let mut c = from_row(&row)?;
    if let Some(v) = update.name {
        c.name = v;
    }
    if let Some(v) = update.redirect_uris {
        c.redirect_uris = v;
    }
    if let Some(v) = update.post_logout_redirect_uris {
        c.post_logout_redirect_uris = v;
    }
    if let Some(v) = update.grant_types {
        c.grant_types = v;
    }
    if let Some(v) = update.scopes {
        c.scopes = v;
    }
    if let Some(v) = update.audience {
        c.audience = v;
    }
    if let Some(v) = update.access_token_format {
        c.access_token_format = v;
    }
    if let Some(v) = update.access_token_lifetime_secs {
        c.access_token_lifetime_secs = v;
    }
    if let Some(v) = update.signing_algorithm {
        c.signing_algorithm = v;
    }
    if let Some(v) = update.id_token_signed_response_alg {
        c.id_token_signed_response_alg = v;
    }
    if let Some(v) = update.first_party {
        c.first_party = v;
    }
    if let Some(v) = update.backchannel_logout_uri {
        c.backchannel_logout_uri = v;
    }
    if let Some(v) = update.require_mfa {
        c.require_mfa = v;
    }
    if let Some(v) = update.require_pkce {
        c.require_pkce = v;
    }
    if !c.confidential && !c.require_pkce {
        return Err(RegistrationError::PublicClientWithoutPkce);
    }
    sqlx::query(
        "UPDATE clients SET name = $2, redirect_uris = $3, post_logout_redirect_uris = $4, grant_types = $5, scopes = $6, audience = $7,
         access_token_format = $8, access_token_lifetime_secs = $9, signing_algorithm = $10, first_party = $11, backchannel_logout_uri = $12, updated_at = $13, require_mfa = $14, require_pkce = $15, id_token_signed_response_alg = $16
         WHERE id = $1",
    )
    .bind(id)
    .bind(&c.name)
    .bind(c.redirect_uris.join(" "))
    .bind(c.post_logout_redirect_uris.join(" "))
    .bind(c.grant_types.join(" "))
    .bind(c.scopes.to_string())
    .bind(&c.audience)
    .bind(match c.access_token_format {
        AccessTokenFormat::Jwt => "jwt",
        AccessTokenFormat::Opaque => "opaque",
    })
    .bind(c.access_token_lifetime_secs)
    .bind(c.signing_algorithm.clone())
    .bind(i64::from(c.first_party))
    .bind(c.backchannel_logout_uri.clone())
    .bind(now)
    .bind(i64::from(c.require_mfa))
    .bind(i64::from(c.require_pkce))
    .bind(c.id_token_signed_response_alg.clone())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(c))
}

/// Deletes a client. Its codes, refresh tokens, opaque access tokens and
/// consents go with it (foreign keys cascade), and a client-wide grant
/// revocation event makes its JWT access tokens — issued for users or to
/// itself — stop working at APIs following the revocation feed.
pub async fn delete(pool: &Pool, id: &str, cause: &Cause) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let deleted = sqlx::query("DELETE FROM clients WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1;
    if !deleted {
        return Ok(false);
    }
    let revoked = Revoked::Grant {
        client_id: id.to_owned(),
        subject: None,
    };
    revocation::record_tx(&mut tx, &revoked, cause).await?;
    tx.commit().await?;
    cause.committed();
    Ok(true)
}

/// Replaces the secret of a confidential client that has one (not a
/// `private_key_jwt` client); returns the new one.
pub async fn rotate_secret(
    pool: &Pool,
    id: &str,
    now: UnixTime,
) -> Result<Option<SecretToken>, StoreError> {
    let secret = SecretToken::generate();
    let updated = sqlx::query("UPDATE clients SET secret_hash = $2, updated_at = $3 WHERE id = $1 AND secret_hash IS NOT NULL AND jwks IS NULL")
        .bind(id)
        .bind(secret.hash().as_str())
        .bind(now)
        .execute(pool)
        .await?;
    Ok((updated.rows_affected() == 1).then_some(secret))
}

/// Authenticates a client. Confidential clients must present their secret;
/// public clients identify themselves by id only.
pub async fn authenticate(
    pool: &Pool,
    credentials: &ClientCredentials,
) -> Result<Client, ClientError> {
    match credentials {
        ClientCredentials::Secret {
            client_id,
            secret,
            via_basic,
        } => {
            let failed = ClientError::AuthenticationFailed {
                via_basic: *via_basic,
            };
            let client = find(pool, client_id).await?;
            // Hash even when the client is unknown, so timing says nothing.
            let presented = TokenHash::of(secret);
            let matches = client.as_ref().is_some_and(|c| {
                c.secret_hash.as_deref().is_some_and(|h| {
                    crate::crypto::constant_time_eq(h.as_bytes(), presented.as_str().as_bytes())
                })
            });
            match client {
                // A client with keys authenticates with them only, even if a
                // secret was stored for it before that rule.
                Some(c) if matches && c.jwks.is_none() => Ok(c),
                _ => Err(failed),
            }
        }
        ClientCredentials::PublicId { client_id } => match find(pool, client_id).await? {
            Some(c) if !c.confidential => Ok(c),
            _ => Err(ClientError::AuthenticationFailed { via_basic: false }),
        },
    }
}

/// Registers (or with `None` removes) the public keys a client uses for
/// `private_key_jwt`. Only asymmetric keys are accepted.
pub async fn set_jwks(
    pool: &Pool,
    id: &str,
    jwks: Option<&latchkey_verify::jose::JwkSet>,
    now: UnixTime,
) -> Result<bool, StoreError> {
    let text = jwks.map(|j| serde_json::to_string(j).unwrap_or_default());
    let updated = sqlx::query("UPDATE clients SET jwks = $2, updated_at = $3 WHERE id = $1")
        .bind(id)
        .bind(text)
        .bind(now)
        .execute(pool)
        .await?;
    Ok(updated.rows_affected() == 1)
}

/// What a `private_key_jwt` assertion is checked against.
pub struct AssertionContext<'a> {
    /// Acceptable `aud` values: the issuer and the endpoint URL.
    pub audiences: Vec<String>,
    pub now: UnixTime,
    pub leeway_secs: i64,
    pub pool: &'a Pool,
}

/// Longest lifetime accepted for a client assertion.
pub const MAX_ASSERTION_LIFETIME_SECS: i64 = 300;

/// RFC 7523 §3: `iss` = `sub` = client_id, `aud` is us, `exp` soon, `jti`
/// never seen before (kept until the assertion expires), signature by one of
/// the client's registered keys — the algorithm is the key's.
pub async fn authenticate_assertion(
    assertion: &str,
    ctx: &AssertionContext<'_>,
) -> Result<Client, ClientError> {
    use latchkey_verify::jose::{self, KeySet, Validation};
    let failed = ClientError::AuthenticationFailed { via_basic: false };
    let (_, claims) = jose::decode_unverified(assertion)
        .map_err(|_| ClientError::AuthenticationFailed { via_basic: false })?;
    let Some(client_id) = claims["iss"]
        .as_str()
        .filter(|iss| claims["sub"].as_str() == Some(*iss))
        .map(str::to_owned)
    else {
        return Err(failed);
    };
    let Some(client) = find(ctx.pool, &client_id).await? else {
        return Err(failed);
    };
    let Some(jwks) = &client.jwks else {
        return Err(failed);
    };
    let (keys, _) = KeySet::from_jwks(jwks);
    let keys = KeySet::new(
        keys.keys()
            .iter()
            .filter(|k| assertion_algorithms().any(|a| a == k.algorithm()))
            .cloned()
            .collect(),
    );
    let validation = Validation {
        audiences: ctx.audiences.clone(),
        leeway_secs: ctx.leeway_secs,
        ..Validation::new(client_id.clone())
    };
    let verified = jose::verify::<serde_json::Value>(assertion, &keys, &validation, ctx.now)
        .map_err(|_| ClientError::AuthenticationFailed { via_basic: false })?;
    let exp = verified.claims["exp"].as_i64().unwrap_or(0);
    let Some(jti) = verified.claims["jti"]
        .as_str()
        .filter(|j| !j.is_empty() && j.len() <= 256)
    else {
        return Err(failed);
    };
    if exp - ctx.now > MAX_ASSERTION_LIFETIME_SECS {
        return Err(failed);
    }
    let inserted = sqlx::query(
        "INSERT INTO client_assertion_jtis (client_id, jti, expires_at) VALUES ($1, $2, $3)",
    )
    .bind(&client.id)
    .bind(jti)
    .bind(exp + ctx.leeway_secs)
    .execute(ctx.pool)
    .await;
    match inserted.map_err(StoreError::from) {
        Ok(_) => Ok(client),
        Err(StoreError::Conflict) => {
            tracing::warn!(client_id = %client.id, "client assertion replayed");
            Err(failed)
        }
        Err(e) => Err(e.into()),
    }
}

/// Forgets assertion ids that can no longer be replayed (background).
pub async fn purge_assertion_jtis(pool: &Pool, now: UnixTime) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM client_assertion_jtis WHERE expires_at <= $1")
        .bind(now)
        .execute(pool)
        .await?;
    Ok(())
}
