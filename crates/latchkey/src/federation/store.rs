//! The `federation_providers`, `federated_identities`, `federation_states`
//! and `federation_pending_links` tables. Every query on them lives here;
//! [`super`] and [`super::accounts`] own the rules.
//!
//! Must not: decide anything (who may link, whether a state is acceptable
//! beyond its hash and expiry); know about HTTP.

use std::collections::BTreeMap;

use sqlx::Row as _;

use super::{Origin, ProviderSpec, SecretSource};
use crate::clock::UnixTime;
use crate::config::Config;
use crate::crypto::SecretToken;
use crate::store::{Pool, StoreError, Tx};

// ------------------------------------------------------------------ providers

const PROVIDER_COLUMNS: &str = "name, kind, issuer, client_id, client_secret_sealed, auth_method, scopes, link_policy, provision, role_claim, role_map, enabled";

fn provider_of(row: &sqlx::any::AnyRow, config: &Config) -> Result<ProviderSpec, StoreError> {
    let name: String = row.try_get("name")?;
    let kind: String = row.try_get("kind")?;
    let issuer: String = row.try_get("issuer")?;
    let client_id: String = row.try_get("client_id")?;
    let sealed: String = row.try_get("client_secret_sealed")?;
    let auth_method: String = row.try_get("auth_method")?;
    let scopes: Vec<String> = row
        .try_get::<String, _>("scopes")?
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let link: String = row.try_get("link_policy")?;
    let role_claim: String = row.try_get("role_claim")?;
    let role_map_text: String = row.try_get("role_map")?;
    let role_map: BTreeMap<String, String> = if role_map_text.is_empty() {
        BTreeMap::new()
    } else {
        serde_json::from_str(&role_map_text).unwrap_or_default()
    };
    // A row written by this module always validates; one that does not (a
    // hand edit, a stricter release) is reported as a store error.
    ProviderSpec::build(
        super::ProviderFields {
            name: &name,
            kind: &kind,
            issuer: &issuer,
            client_id: &client_id,
            auth_method: &auth_method,
            scopes: &scopes,
            link: &link,
            provision: row.try_get::<i64, _>("provision")? != 0,
            role_claim: &role_claim,
            role_map: &role_map,
            enabled: row.try_get::<i64, _>("enabled")? != 0,
        },
        SecretSource::Sealed(sealed),
        Origin::Database,
        config,
    )
    .map_err(|e| {
        StoreError::Other(sqlx::Error::Decode(
            format!("federation provider {name:?}: {e}").into(),
        ))
    })
}

/// The providers added by `latchkey idp add`, by name.
pub async fn list_providers(pool: &Pool, config: &Config) -> Result<Vec<ProviderSpec>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {PROVIDER_COLUMNS} FROM federation_providers ORDER BY name"
    ))
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    for row in &rows {
        match provider_of(row, config) {
            Ok(p) => out.push(p),
            // One bad row must not take every other provider off the sign-in page.
            Err(e) => tracing::warn!(error = %e, "federation provider skipped"),
        }
    }
    Ok(out)
}

/// Inserts or (with `replace`) overwrites a provider row. The secret must be sealed.
/// Returns `false` when `replace` is false and the name exists, or when
/// `replace` is true and it does not.
pub async fn put_provider(
    pool: &Pool,
    spec: &ProviderSpec,
    sealed_secret: &str,
    replace: bool,
    now: UnixTime,
) -> Result<bool, StoreError> {
    let role_map: BTreeMap<&str, &str> = spec
        .role_map
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let role_map = if role_map.is_empty() {
        String::new()
    } else {
        serde_json::to_string(&role_map).unwrap_or_default()
    };
    let sql = if replace {
        "UPDATE federation_providers SET kind = $2, issuer = $3, client_id = $4, client_secret_sealed = $5, auth_method = $6, scopes = $7, link_policy = $8, provision = $9, role_claim = $10, role_map = $11, enabled = $12, updated_at = $13 WHERE name = $1"
    } else {
        "INSERT INTO federation_providers (name, kind, issuer, client_id, client_secret_sealed, auth_method, scopes, link_policy, provision, role_claim, role_map, enabled, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)"
    };
    let result = sqlx::query(sql)
        .bind(&spec.name)
        .bind(spec.kind.as_str())
        .bind(&spec.issuer)
        .bind(&spec.client_id)
        .bind(sealed_secret)
        .bind(spec.auth_method.as_str())
        .bind(spec.scopes.join(" "))
        .bind(spec.link.as_str())
        .bind(i64::from(spec.provision))
        .bind(&spec.role_claim)
        .bind(role_map)
        .bind(i64::from(spec.enabled))
        .bind(now)
        .execute(pool)
        .await;
    match result {
        Ok(done) => Ok(done.rows_affected() == 1),
        Err(e) => match StoreError::from(e) {
            StoreError::Conflict => Ok(false),
            other => Err(other),
        },
    }
}

/// The sealed secret of a stored provider (for `idp update` without a new secret).
pub async fn sealed_secret(pool: &Pool, name: &str) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query("SELECT client_secret_sealed FROM federation_providers WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?
            .map(|row| row.try_get("client_secret_sealed"))
            .transpose()?,
    )
}

/// Deletes a stored provider and the sign-ins in flight to it. Identities
/// stay (re-adding the provider under the same name brings them back).
pub async fn remove_provider(pool: &Pool, name: &str) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let removed = sqlx::query("DELETE FROM federation_providers WHERE name = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        == 1;
    sqlx::query("DELETE FROM federation_states WHERE provider = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM federation_pending_links WHERE provider = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(removed)
}

// ------------------------------------------------------------------ identities

/// A link between an upstream identity and a local user.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FederatedIdentity {
    pub id: String,
    pub provider: String,
    pub subject: String,
    pub user_id: String,
    pub email_at_link: String,
    pub created_at: UnixTime,
    pub last_used_at: UnixTime,
}

const IDENTITY_COLUMNS: &str =
    "id, provider, subject, user_id, email_at_link, created_at, last_used_at";

fn identity_of(row: &sqlx::any::AnyRow) -> Result<FederatedIdentity, sqlx::Error> {
    Ok(FederatedIdentity {
        id: row.try_get("id")?,
        provider: row.try_get("provider")?,
        subject: row.try_get("subject")?,
        user_id: row.try_get("user_id")?,
        email_at_link: row.try_get("email_at_link")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

/// The identity for (provider, subject) — never looked up by email.
pub async fn find_identity(
    pool: &Pool,
    provider: &str,
    subject: &str,
) -> Result<Option<FederatedIdentity>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {IDENTITY_COLUMNS} FROM federated_identities WHERE provider = $1 AND subject = $2"
    ))
    .bind(provider)
    .bind(subject)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(identity_of).transpose()?)
}

pub async fn identities_of_user(
    pool: &Pool,
    user_id: &str,
) -> Result<Vec<FederatedIdentity>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {IDENTITY_COLUMNS} FROM federated_identities WHERE user_id = $1 ORDER BY created_at, id"
    ))
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(identity_of).collect::<Result<_, _>>()?)
}

/// Links (provider, subject) to a user inside a transaction. A second link
/// of the same identity fails with [`StoreError::Conflict`] (unique index).
pub(crate) async fn link_tx(
    tx: &mut Tx<'_>,
    provider: &str,
    subject: &str,
    user_id: &str,
    email: &str,
    now: UnixTime,
) -> Result<FederatedIdentity, StoreError> {
    let identity = FederatedIdentity {
        id: uuid::Uuid::now_v7().to_string(),
        provider: provider.to_owned(),
        subject: subject.to_owned(),
        user_id: user_id.to_owned(),
        email_at_link: email.to_owned(),
        created_at: now,
        last_used_at: now,
    };
    sqlx::query("INSERT INTO federated_identities (id, provider, subject, user_id, email_at_link, created_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6, $6)")
        .bind(&identity.id)
        .bind(provider)
        .bind(subject)
        .bind(user_id)
        .bind(email)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(identity)
}

pub async fn link(
    pool: &Pool,
    provider: &str,
    subject: &str,
    user_id: &str,
    email: &str,
    now: UnixTime,
) -> Result<FederatedIdentity, StoreError> {
    let mut tx = pool.begin().await?;
    let identity = link_tx(&mut tx, provider, subject, user_id, email, now).await?;
    tx.commit().await?;
    Ok(identity)
}

pub async fn touch_identity(pool: &Pool, id: &str, now: UnixTime) -> Result<(), StoreError> {
    sqlx::query("UPDATE federated_identities SET last_used_at = $2 WHERE id = $1")
        .bind(id)
        .bind(now)
        .execute(pool)
        .await?;
    Ok(())
}

/// Deletes one identity of `user_id`; `false` if it is not theirs.
pub async fn unlink(pool: &Pool, user_id: &str, id: &str) -> Result<bool, StoreError> {
    Ok(
        sqlx::query("DELETE FROM federated_identities WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .execute(pool)
            .await?
            .rows_affected()
            == 1,
    )
}

/// The identity rows of a user (`cascade::delete_user`).
pub(crate) async fn delete_of_user_tx(tx: &mut Tx<'_>, user_id: &str) -> Result<(), sqlx::Error> {
    for table in ["federated_identities", "federation_pending_links"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE user_id = $1"))
            .bind(user_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

// ------------------------------------------------------------------ states

/// A sign-in sent to an upstream.
#[derive(Debug, Clone)]
pub struct PendingSignIn {
    pub provider: String,
    pub nonce: String,
    /// Sealed PKCE verifier.
    pub pkce_verifier_sealed: String,
    pub next: String,
    /// Set when a signed-in user links another identity from the account page.
    pub link_user_id: String,
}

pub async fn save_state(
    pool: &Pool,
    state: &SecretToken,
    pending: &PendingSignIn,
    now: UnixTime,
    ttl: i64,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO federation_states (state_hash, provider, nonce, pkce_verifier, next, link_user_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
        .bind(state.hash().as_str())
        .bind(&pending.provider)
        .bind(&pending.nonce)
        .bind(&pending.pkce_verifier_sealed)
        .bind(&pending.next)
        .bind(&pending.link_user_id)
        .bind(now)
        .bind(now + ttl)
        .execute(pool)
        .await?;
    Ok(())
}

/// Takes the state (single use: a conditional DELETE decides which of two
/// concurrent callbacks gets it). `None` when unknown, spent or expired.
pub async fn take_state(
    pool: &Pool,
    state: &SecretToken,
    now: UnixTime,
) -> Result<Option<PendingSignIn>, StoreError> {
    let hash = state.hash();
    let row = sqlx::query("SELECT provider, nonce, pkce_verifier, next, link_user_id, expires_at FROM federation_states WHERE state_hash = $1")
        .bind(hash.as_str())
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let deleted = sqlx::query("DELETE FROM federation_states WHERE state_hash = $1")
        .bind(hash.as_str())
        .execute(pool)
        .await?
        .rows_affected();
    if deleted != 1 || row.try_get::<i64, _>("expires_at")? <= now {
        return Ok(None);
    }
    Ok(Some(PendingSignIn {
        provider: row.try_get("provider")?,
        nonce: row.try_get("nonce")?,
        pkce_verifier_sealed: row.try_get("pkce_verifier")?,
        next: row.try_get("next")?,
        link_user_id: row.try_get("link_user_id")?,
    }))
}

// ------------------------------------------------------------------ pending links

/// An upstream identity waiting for the owner of `user_id` to confirm.
#[derive(Debug, Clone)]
pub struct PendingLink {
    pub provider: String,
    pub subject: String,
    pub user_id: String,
    pub email: String,
    pub next: String,
    pub created_at: UnixTime,
}

pub async fn save_pending_link(
    pool: &Pool,
    token: &SecretToken,
    link: &PendingLink,
    now: UnixTime,
    ttl: i64,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO federation_pending_links (token_hash, provider, subject, user_id, email, next, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
        .bind(token.hash().as_str())
        .bind(&link.provider)
        .bind(&link.subject)
        .bind(&link.user_id)
        .bind(&link.email)
        .bind(&link.next)
        .bind(now)
        .bind(now + ttl)
        .execute(pool)
        .await?;
    Ok(())
}

/// Reads a pending link without consuming it (the confirmation page).
pub async fn peek_pending_link(
    pool: &Pool,
    token: &SecretToken,
    now: UnixTime,
) -> Result<Option<PendingLink>, StoreError> {
    let row = sqlx::query("SELECT provider, subject, user_id, email, next, created_at, expires_at FROM federation_pending_links WHERE token_hash = $1")
        .bind(token.hash().as_str())
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else { return Ok(None) };
    if row.try_get::<i64, _>("expires_at")? <= now {
        return Ok(None);
    }
    Ok(Some(PendingLink {
        provider: row.try_get("provider")?,
        subject: row.try_get("subject")?,
        user_id: row.try_get("user_id")?,
        email: row.try_get("email")?,
        next: row.try_get("next")?,
        created_at: row.try_get("created_at")?,
    }))
}

/// Consumes a pending link; `false` if another request already did.
pub async fn take_pending_link(pool: &Pool, token: &SecretToken) -> Result<bool, StoreError> {
    Ok(
        sqlx::query("DELETE FROM federation_pending_links WHERE token_hash = $1")
            .bind(token.hash().as_str())
            .execute(pool)
            .await?
            .rows_affected()
            == 1,
    )
}

/// Drops expired states and pending links (the maintenance loop).
pub async fn purge_expired(pool: &Pool, now: UnixTime) -> Result<(), StoreError> {
    for table in ["federation_states", "federation_pending_links"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE expires_at <= $1"))
            .bind(now)
            .execute(pool)
            .await?;
    }
    Ok(())
}
