//! Tokens: access tokens (RFC 9068 JWTs or opaque references), refresh-token
//! families with rotation, revocation and introspection.
//!
//! Owns: the `refresh_families`, `refresh_tokens`, `revoked_access_tokens`
//! and `opaque_access_tokens` tables; the access-token claims; the rules of
//! [`refresh`] rotation and reuse detection. A revoked access token is also
//! recorded as a `revocation` event (in the same transaction), and
//! introspection treats a token that any revocation event covers as inactive.
//!
//! Must not: parse HTTP requests, authenticate clients, or know what a
//! client is: the grants hand over a [`TokenPolicy`] (built from the client's
//! registration by `oauth::clients::Client::token_policy`) and a client id.

pub mod refresh;

use latchkey_verify::jose::{self, Algorithm, Audience, Validation, VerifyError};
use serde::{Deserialize, Serialize};
use sqlx::Row as _;

use crate::clock::UnixTime;
use crate::core::Core;
use crate::crypto::{SecretToken, TokenHash};
use crate::keys::KeyError;
use crate::revocation::{self, Cause, Initiator, Revoked, TokenFacts};
use crate::scope::Scope;
use crate::store::{Pool, StoreError, Tx};

/// The header `typ` of access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot encode token claims: {0}")]
    Encode(#[from] serde_json::Error),
}

impl From<sqlx::Error> for TokenError {
    fn from(e: sqlx::Error) -> Self {
        TokenError::Store(e.into())
    }
}

/// The sign-in behind a user's tokens: what the access token reports as
/// `auth_time`, `amr` and `acr` (RFC 9068 §2.2.1), and what decides which
/// of the user's roles it may carry (`policy::token_roles`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInClaims {
    pub auth_time: UnixTime,
    /// RFC 8176 methods.
    pub amr: Vec<String>,
}

/// The format of a client's access tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessTokenFormat {
    Jwt,
    Opaque,
}

/// How one client's access tokens are made, as its registration says.
#[derive(Debug, Clone, Copy)]
pub struct TokenPolicy<'a> {
    pub client_id: &'a str,
    /// The tokens' `aud`.
    pub audience: &'a str,
    pub format: AccessTokenFormat,
    /// Overrides `tokens.access_token_lifetime_secs` when positive.
    pub lifetime_secs: Option<i64>,
    /// The signing algorithm asked for (the key ring decides: see
    /// `KeyRing::access_token_algorithm`).
    pub algorithm: Option<Algorithm>,
}

/// What an access token is for.
#[derive(Debug, Clone)]
pub struct AccessTokenSpec<'a> {
    pub policy: TokenPolicy<'a>,
    /// The user id, or the client id for client credentials (RFC 9068 §2.2).
    pub subject: String,
    pub scope: Scope,
    /// The user's roles; the token carries those its sign-in may use.
    pub roles: Vec<String>,
    /// The user's sign-in (`None` for client credentials, and for refresh
    /// families started before the sign-in was recorded with them: then
    /// no role that needs a second factor is carried).
    pub sign_in: Option<SignInClaims>,
    /// The Latchkey session (`sid`) the token belongs to, if any.
    pub session_id: Option<String>,
    /// The refresh-token family it was issued with, if any (opaque tokens only).
    pub family_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct IssuedAccessToken {
    pub token: String,
    pub jti: String,
    pub expires_in: i64,
    pub expires_at: UnixTime,
}

/// Claims of a Latchkey JWT access token (RFC 9068), as verified.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    pub client_id: String,
    #[serde(default)]
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Roles and any other configured claims.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn lifetime(state: &Core, policy: &TokenPolicy<'_>) -> i64 {
    let lifetime = policy
        .lifetime_secs
        .filter(|l| *l > 0)
        .unwrap_or(state.config.tokens.access_token_lifetime_secs);
    // A JWT must verify until it expires, and its key stays in the JWKS only
    // for `KeyRing::retention_secs` after it stops signing.
    match policy.format {
        AccessTokenFormat::Jwt => lifetime.min(state.keys.max_token_lifetime_secs()),
        AccessTokenFormat::Opaque => lifetime,
    }
}

/// Issues an access token in the client's configured format.
pub async fn issue_access_token(
    state: &Core,
    spec: AccessTokenSpec<'_>,
) -> Result<IssuedAccessToken, TokenError> {
    issue_access_token_with(state, &state.pool, spec).await
}

/// [`issue_access_token`] inside the caller's transaction (an opaque
/// token's row commits with it, or not at all).
pub(crate) async fn issue_access_token_tx(
    state: &Core,
    tx: &mut Tx<'_>,
    spec: AccessTokenSpec<'_>,
) -> Result<IssuedAccessToken, TokenError> {
    issue_access_token_with(state, &mut **tx, spec).await
}

async fn issue_access_token_with<'c, E>(
    state: &Core,
    executor: E,
    spec: AccessTokenSpec<'_>,
) -> Result<IssuedAccessToken, TokenError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let now = state.clock.now();
    let expires_in = lifetime(state, &spec.policy);
    let exp = now + expires_in;
    let jti = uuid::Uuid::now_v7().to_string();
    let amr = spec
        .sign_in
        .as_ref()
        .map(|s| s.amr.as_slice())
        .unwrap_or(&[]);
    // Invariant 13: a role that needs a second factor never rides in a
    // token of a sign-in without one.
    let roles = crate::policy::token_roles(&state.config.mfa, &spec.roles, amr);
    match spec.policy.format {
        AccessTokenFormat::Jwt => {
            let mut extra = serde_json::Map::new();
            if !roles.is_empty() {
                extra.insert(
                    state.config.tokens.roles_claim.clone(),
                    serde_json::json!(roles),
                );
            }
            if let Some(sign_in) = &spec.sign_in {
                extra.extend(sign_in_claims(sign_in));
            }
            let claims = AccessClaims {
                iss: state.config.issuer_str().to_owned(),
                sub: spec.subject,
                aud: Audience::One(spec.policy.audience.to_owned()),
                exp,
                iat: now,
                nbf: now,
                jti: jti.clone(),
                client_id: spec.policy.client_id.to_owned(),
                scope: spec.scope.to_string(),
                sid: spec.session_id,
                extra,
            };
            let alg = state.keys.access_token_algorithm(spec.policy.algorithm);
            let key = state.keys.signing_key(alg, now)?;
            let token = key.sign(ACCESS_TOKEN_TYP, &claims)?;
            Ok(IssuedAccessToken {
                token,
                jti,
                expires_in,
                expires_at: exp,
            })
        }
        AccessTokenFormat::Opaque => {
            let secret = SecretToken::generate();
            sqlx::query(
                "INSERT INTO opaque_access_tokens (hash, jti, client_id, subject, scope, audience, session_id, family_id, issued_at, expires_at, auth_time, amr)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(secret.hash().as_str())
            .bind(&jti)
            .bind(spec.policy.client_id)
            .bind(&spec.subject)
            .bind(spec.scope.to_string())
            .bind(spec.policy.audience)
            .bind(spec.session_id)
            .bind(spec.family_id)
            .bind(now)
            .bind(exp)
            .bind(spec.sign_in.as_ref().map(|s| s.auth_time))
            .bind(spec.sign_in.as_ref().map(|s| s.amr.join(" ")))
            .execute(executor)
            .await?;
            Ok(IssuedAccessToken {
                token: secret.expose().to_owned(),
                jti,
                expires_in,
                expires_at: exp,
            })
        }
    }
}

/// RFC 9068 §2.2.1 claims of a user's sign-in: `auth_time`, `amr`, `acr`.
fn sign_in_claims(sign_in: &SignInClaims) -> serde_json::Map<String, serde_json::Value> {
    let mut claims = serde_json::Map::new();
    claims.insert("auth_time".into(), serde_json::json!(sign_in.auth_time));
    claims.insert("amr".into(), serde_json::json!(sign_in.amr));
    claims.insert(
        "acr".into(),
        serde_json::json!(crate::oidc::acr_for(&sign_in.amr)),
    );
    claims
}

/// Verifies one of our JWT access tokens (signature, `iss`, `typ`, times);
/// the audience is not checked here (introspection serves every resource).
pub fn verify_jwt_access_token(
    state: &Core,
    token: &str,
    now: UnixTime,
) -> Result<AccessClaims, VerifyError> {
    let validation = Validation {
        typ: Some(ACCESS_TOKEN_TYP.into()),
        leeway_secs: state.config.tokens.leeway_secs,
        ..Validation::new(state.config.issuer_str())
    };
    jose::verify::<AccessClaims>(token, &state.keys.verification_keys(), &validation, now)
        .map(|v| v.claims)
}

/// An access token to revoke before it expires.
#[derive(Debug, Clone, Copy)]
pub struct DeniedToken<'a> {
    pub jti: &'a str,
    /// Its `sub` (published with the revocation event).
    pub subject: &'a str,
    /// Its `exp`.
    pub expires_at: UnixTime,
}

/// Puts a JWT's `jti` on the denylist until the token would expire anyway
/// (plus `leeway_secs`), and records the revocation event for the feed, in
/// one transaction. Denying a token twice records one event.
pub async fn deny_jti(
    pool: &Pool,
    token: DeniedToken<'_>,
    leeway_secs: i64,
    cause: &Cause,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    if deny_jti_tx(&mut tx, token, leeway_secs).await? {
        revocation::record_tx(&mut tx, &token.revoked(), cause).await?;
    }
    tx.commit().await?;
    cause.committed();
    Ok(())
}

impl DeniedToken<'_> {
    pub(crate) fn revoked(&self) -> Revoked {
        Revoked::Token {
            subject: self.subject.to_owned(),
            jti: self.jti.to_owned(),
            expires_at: self.expires_at,
        }
    }
}

/// The denylist insert of [`deny_jti`]; `true` if the `jti` was not denied
/// yet (the caller then records its event, last).
pub(crate) async fn deny_jti_tx(
    tx: &mut Tx<'_>,
    token: DeniedToken<'_>,
    leeway_secs: i64,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO revoked_access_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING",
    )
    .bind(token.jti)
    .bind(token.expires_at + leeway_secs)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// What one authorization code issued (`authorize::record_issued`).
#[derive(Debug, Clone, Copy)]
pub struct CodeIssue<'a> {
    /// The user the code was issued for.
    pub user_id: &'a str,
    /// The refresh-token family it started, if any.
    pub family: Option<&'a str>,
    /// Its first access token, if it was issued.
    pub access_token: Option<DeniedToken<'a>>,
}

/// What `cascade::revoke_code_issue` revoked (all `false`: it was revoked already).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeIssueRevoked {
    /// The refresh family.
    pub family: bool,
    /// The sign-in session it came from, ended (its handle).
    pub session: Option<String>,
    /// The first access token, put on the denylist.
    pub access_token: bool,
}

impl CodeIssueRevoked {
    /// For the audit log: what was revoked, in words.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.access_token {
            parts.push("its access token".to_owned());
        }
        if self.family {
            parts.push("its refresh-token family".to_owned());
        }
        if let Some(handle) = &self.session {
            parts.push(format!("the sign-in session {handle}"));
        }
        if parts.is_empty() {
            "nothing more (already revoked)".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// An opaque access token as stored.
#[derive(Debug, Clone)]
pub struct OpaqueToken {
    pub jti: String,
    pub client_id: String,
    pub subject: String,
    pub scope: String,
    pub audience: String,
    pub session_id: Option<String>,
    pub issued_at: UnixTime,
    pub expires_at: UnixTime,
    pub sign_in: Option<SignInClaims>,
}

pub async fn find_opaque(
    pool: &Pool,
    token: &SecretToken,
) -> Result<Option<OpaqueToken>, StoreError> {
    let row = sqlx::query("SELECT hash, jti, client_id, subject, scope, audience, session_id, issued_at, expires_at, auth_time, amr FROM opaque_access_tokens WHERE hash = $1")
        .bind(token.hash().as_str())
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else { return Ok(None) };
    if !token.matches(&TokenHash::from_stored(row.try_get("hash")?)) {
        return Ok(None);
    }
    Ok(Some(OpaqueToken {
        jti: row.try_get("jti")?,
        client_id: row.try_get("client_id")?,
        subject: row.try_get("subject")?,
        scope: row.try_get("scope")?,
        audience: row.try_get("audience")?,
        session_id: row.try_get("session_id")?,
        issued_at: row.try_get("issued_at")?,
        expires_at: row.try_get("expires_at")?,
        sign_in: sign_in_of(&row)?,
    }))
}

/// The `auth_time` and `amr` columns of a row (`None` if not recorded).
pub(crate) fn sign_in_of(row: &sqlx::any::AnyRow) -> Result<Option<SignInClaims>, sqlx::Error> {
    let auth_time: Option<i64> = row.try_get("auth_time")?;
    let amr: Option<String> = row.try_get("amr")?;
    Ok(auth_time.map(|auth_time| SignInClaims {
        auth_time,
        amr: amr
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    }))
}

/// Revokes an opaque access token: deletes it and records the revocation
/// event (so APIs holding a cached introspection answer drop it too).
async fn revoke_opaque(
    pool: &Pool,
    token: &SecretToken,
    found: &OpaqueToken,
    cause: &Cause,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    let deleted = sqlx::query("DELETE FROM opaque_access_tokens WHERE hash = $1")
        .bind(token.hash().as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if deleted == 1 {
        let revoked = Revoked::Token {
            subject: found.subject.clone(),
            jti: found.jti.clone(),
            expires_at: found.expires_at,
        };
        revocation::record_tx(&mut tx, &revoked, cause).await?;
    }
    tx.commit().await?;
    cause.committed();
    Ok(())
}

/// Deletes the opaque access tokens issued in a session that is ending (in
/// the session's transaction).
pub(crate) async fn delete_opaque_of_session_tx(
    tx: &mut Tx<'_>,
    session_handle: &str,
) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM opaque_access_tokens WHERE session_id = $1")
            .bind(session_handle)
            .execute(&mut **tx)
            .await?
            .rows_affected(),
    )
}

/// Deletes every opaque access token issued to a user (all their sessions end).
pub(crate) async fn delete_opaque_of_subject_tx(
    tx: &mut Tx<'_>,
    subject: &str,
) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM opaque_access_tokens WHERE subject = $1")
            .bind(subject)
            .execute(&mut **tx)
            .await?
            .rows_affected(),
    )
}

/// RFC 7662 response. `active: false` carries nothing else, whatever the reason.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Introspection {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Does the token's user still exist, enabled? (A deleted client's tokens
/// are covered by its grant revocation event, kept as long as any of them
/// can be unexpired, and its opaque and refresh tokens are deleted with it.)
async fn subject_is_active(
    pool: &Pool,
    subject: &str,
    client_id: &str,
) -> Result<bool, StoreError> {
    if subject == client_id {
        return Ok(true); // client credentials: the client itself
    }
    Ok(crate::identity::find_by_id(pool, subject)
        .await?
        .is_some_and(|u| !u.disabled))
}

/// Is an access token in good standing: not on the denylist, covered by no
/// revocation event, and its user (if it has one) still there and enabled?
/// One statement, so introspection pays one round trip for all three.
async fn in_good_standing(pool: &Pool, token: TokenFacts<'_>) -> Result<bool, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT
           (SELECT COUNT(*) FROM revoked_access_tokens WHERE jti = $1) AS denied,
           (SELECT COUNT(*) FROM (SELECT 1 AS hit FROM revocation_events
              WHERE {covers} LIMIT 1) AS covering) AS revoked,
           (SELECT disabled FROM users WHERE id = $3) AS disabled",
        covers = revocation::COVERS_TOKEN
    ))
    .bind(token.jti)
    .bind(token.session_id)
    .bind(token.subject)
    .bind(token.issued_at)
    .bind(token.client_id)
    .fetch_one(pool)
    .await?;
    let denied: i64 = row.try_get("denied")?;
    let revoked: i64 = row.try_get("revoked")?;
    let disabled: Option<i64> = row.try_get("disabled")?;
    // Client credentials: the subject is the client itself (a deleted
    // client's tokens are covered by its grant revocation event).
    let subject_active = token.subject == token.client_id || disabled == Some(0);
    Ok(denied == 0 && revoked == 0 && subject_active)
}

/// Introspects any token we issued, for the authenticated client `caller` (its id)
/// (`None`: Latchkey itself, checking a bearer access token): a JWT or
/// opaque access token (any confidential client may ask — resource servers
/// introspect the tokens of other clients), or a refresh token, which only
/// its own client may see (to anyone else it is `active: false`). Expired,
/// revoked, malformed and foreign tokens are all simply inactive.
pub async fn introspect(
    state: &Core,
    caller: Option<&str>,
    token: &str,
    hint: Option<&str>,
) -> Result<Introspection, StoreError> {
    let now = state.clock.now();
    let inactive = Introspection::default();
    if let Some(secret) = SecretToken::parse(token) {
        // Refresh tokens and opaque access tokens share the same shape.
        let order: [bool; 2] = if hint == Some("access_token") {
            [false, true]
        } else {
            [true, false]
        };
        for refresh_first in order {
            if refresh_first {
                if let Some(info) = refresh::describe(&state.pool, &secret, now).await? {
                    // A refresh token is a credential of its client alone.
                    if caller == Some(info.client_id.as_str())
                        && subject_is_active(&state.pool, &info.user_id, &info.client_id).await?
                    {
                        return Ok(Introspection {
                            active: true,
                            scope: Some(info.scope),
                            client_id: Some(info.client_id),
                            sub: Some(info.user_id),
                            iss: Some(state.config.issuer_str().to_owned()),
                            exp: Some(info.expires_at),
                            iat: Some(info.created_at),
                            sid: info.session_handle,
                            token_type: Some("refresh_token"),
                            ..Introspection::default()
                        });
                    }
                    return Ok(inactive);
                }
            } else if let Some(t) = find_opaque(&state.pool, &secret).await? {
                let facts = TokenFacts {
                    jti: &t.jti,
                    session_id: t.session_id.as_deref(),
                    subject: &t.subject,
                    client_id: &t.client_id,
                    issued_at: t.issued_at,
                };
                if t.expires_at > now && in_good_standing(&state.pool, facts).await? {
                    return Ok(Introspection {
                        active: true,
                        scope: Some(t.scope),
                        client_id: Some(t.client_id),
                        sub: Some(t.subject),
                        aud: Some(serde_json::json!(t.audience)),
                        iss: Some(state.config.issuer_str().to_owned()),
                        exp: Some(t.expires_at),
                        iat: Some(t.issued_at),
                        jti: Some(t.jti),
                        sid: t.session_id,
                        token_type: Some("Bearer"),
                        extra: t.sign_in.as_ref().map(sign_in_claims).unwrap_or_default(),
                        ..Introspection::default()
                    });
                }
                return Ok(inactive);
            }
        }
        return Ok(inactive);
    }
    let Ok(claims) = verify_jwt_access_token(state, token, now) else {
        return Ok(inactive);
    };
    let facts = TokenFacts {
        jti: &claims.jti,
        session_id: claims.sid.as_deref(),
        subject: &claims.sub,
        client_id: &claims.client_id,
        issued_at: claims.iat,
    };
    if !in_good_standing(&state.pool, facts).await? {
        return Ok(inactive);
    }
    Ok(Introspection {
        active: true,
        scope: Some(claims.scope),
        client_id: Some(claims.client_id),
        sub: Some(claims.sub),
        aud: serde_json::to_value(&claims.aud).ok(),
        iss: Some(claims.iss),
        exp: Some(claims.exp),
        iat: Some(claims.iat),
        nbf: Some(claims.nbf),
        jti: Some(claims.jti),
        sid: claims.sid,
        token_type: Some("Bearer"),
        extra: claims.extra,
    })
}

/// RFC 7009 revocation by the client `client_id`. Unknown tokens, and tokens of other
/// clients, are silently ignored (the endpoint always answers 200). Revoking
/// an access token publishes it on the revocation feed.
pub async fn revoke(state: &Core, client_id: &str, token: &str) -> Result<(), StoreError> {
    let now = state.clock.now();
    let cause = Cause::new(
        now,
        Initiator::System,
        format!("revoked by client {client_id}"),
    )
    .waking(&state.revocation_feed);
    if let Some(secret) = SecretToken::parse(token) {
        if refresh::revoke_by_token(&state.pool, &secret, client_id, now).await? {
            return Ok(());
        }
        if let Some(t) = find_opaque(&state.pool, &secret).await? {
            if t.client_id == client_id {
                revoke_opaque(&state.pool, &secret, &t, &cause).await?;
            }
        }
        return Ok(());
    }
    // A JWT: only a genuine, unexpired token of ours, issued to this client.
    if let Ok(claims) = verify_jwt_access_token(state, token, now) {
        if claims.client_id == client_id {
            let denied = DeniedToken {
                jti: &claims.jti,
                subject: &claims.sub,
                expires_at: claims.exp,
            };
            deny_jti(&state.pool, denied, state.config.tokens.leeway_secs, &cause).await?;
        }
    }
    Ok(())
}

/// Removes denylist entries and opaque tokens that have expired (background).
pub async fn purge_expired(pool: &Pool, now: UnixTime) -> Result<u64, StoreError> {
    let a = sqlx::query("DELETE FROM revoked_access_tokens WHERE expires_at <= $1")
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected();
    let b = sqlx::query("DELETE FROM opaque_access_tokens WHERE expires_at <= $1")
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected();
    let c = refresh::purge_expired(pool, now).await?;
    Ok(a + b + c)
}
