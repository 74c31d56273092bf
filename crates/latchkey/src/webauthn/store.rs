//! The `passkeys` and `webauthn_challenges` tables.
//!
//! Every query on them lives here; [`super`] owns the rules (who may do what,
//! in which order). Must not: verify anything cryptographic.

use sqlx::Row as _;
use webauthn_rs::prelude::Passkey;

use super::{Ceremony, ChallengeBinding, PasskeyError};
use crate::clock::UnixTime;
use crate::crypto::{constant_time_eq, SecretToken, TokenHash};
use crate::store::{Pool, StoreError};

/// A browser may hold this many unfinished ceremonies; older ones are dropped
/// (a login page opened in several tabs starts one each).
const MAX_PENDING_PER_BINDING: usize = 8;

/// A registered passkey as the account page shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PasskeyRecord {
    /// Public handle (UUID v7), used in URLs.
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub created_at: UnixTime,
    pub last_used_at: Option<UnixTime>,
    /// The credential may be synced between devices (WebAuthn "backup eligible").
    pub backup_eligible: bool,
    /// The credential is currently backed up (WebAuthn "backup state").
    pub backed_up: bool,
    #[serde(skip)]
    pub credential_id: String,
    #[serde(skip)]
    pub passkey: Passkey,
}

impl PasskeyRecord {
    /// "synced" for a multi-device credential, "device-bound" otherwise.
    pub fn storage(&self) -> &'static str {
        if self.backup_eligible {
            "synced"
        } else {
            "device-bound"
        }
    }
}

const PASSKEY_COLUMNS: &str =
    "id, user_id, credential_id, name, credential, backup_eligible, backed_up, created_at, last_used_at";

fn record_from_row(row: &sqlx::any::AnyRow) -> Result<PasskeyRecord, PasskeyError> {
    let credential: String = row.try_get("credential").map_err(StoreError::from)?;
    let passkey: Passkey = serde_json::from_str(&credential)
        .map_err(|e| PasskeyError::Corrupt(format!("stored passkey: {e}")))?;
    let get_i64 = |name: &str| row.try_get::<i64, _>(name).map_err(StoreError::from);
    Ok(PasskeyRecord {
        id: row.try_get("id").map_err(StoreError::from)?,
        user_id: row.try_get("user_id").map_err(StoreError::from)?,
        credential_id: row.try_get("credential_id").map_err(StoreError::from)?,
        name: row.try_get("name").map_err(StoreError::from)?,
        backup_eligible: get_i64("backup_eligible")? != 0,
        backed_up: get_i64("backed_up")? != 0,
        created_at: get_i64("created_at")?,
        last_used_at: row
            .try_get::<Option<i64>, _>("last_used_at")
            .map_err(StoreError::from)?,
        passkey,
    })
}

fn to_json(passkey: &Passkey) -> Result<String, PasskeyError> {
    serde_json::to_string(passkey).map_err(|e| PasskeyError::Corrupt(e.to_string()))
}

pub(super) async fn insert_passkey(
    pool: &Pool,
    record: &PasskeyRecord,
) -> Result<(), PasskeyError> {
    let inserted = sqlx::query(&format!(
        "INSERT INTO passkeys ({PASSKEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    ))
    .bind(&record.id)
    .bind(&record.user_id)
    .bind(&record.credential_id)
    .bind(&record.name)
    .bind(to_json(&record.passkey)?)
    .bind(i64::from(record.backup_eligible))
    .bind(i64::from(record.backed_up))
    .bind(record.created_at)
    .bind(record.last_used_at)
    .execute(pool)
    .await;
    match inserted.map_err(StoreError::from) {
        Ok(_) => Ok(()),
        Err(StoreError::Conflict) => Err(PasskeyError::AlreadyRegistered),
        Err(e) => Err(e.into()),
    }
}

/// The user's passkeys, oldest first.
pub async fn list_for_user(pool: &Pool, user_id: &str) -> Result<Vec<PasskeyRecord>, PasskeyError> {
    let rows = sqlx::query(&format!(
        "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE user_id = $1 ORDER BY created_at, id"
    ))
    .bind(user_id)
    .fetch_all(pool)
    .await
    .map_err(StoreError::from)?;
    rows.iter().map(record_from_row).collect()
}

/// Whether the user has at least one passkey.
pub async fn has_passkeys(pool: &Pool, user_id: &str) -> Result<bool, StoreError> {
    Ok(
        sqlx::query("SELECT 1 AS x FROM passkeys WHERE user_id = $1 LIMIT 1")
            .bind(user_id)
            .fetch_optional(pool)
            .await?
            .is_some(),
    )
}

pub(super) async fn find_by_credential_id(
    pool: &Pool,
    credential_id: &str,
) -> Result<Option<PasskeyRecord>, PasskeyError> {
    let row = sqlx::query(&format!(
        "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE credential_id = $1"
    ))
    .bind(credential_id)
    .fetch_optional(pool)
    .await
    .map_err(StoreError::from)?;
    row.as_ref().map(record_from_row).transpose()
}

/// Stores the counter and backup flags after a sign-in, and when it happened.
pub(super) async fn record_use(
    pool: &Pool,
    record: &PasskeyRecord,
    now: UnixTime,
) -> Result<(), PasskeyError> {
    sqlx::query(
        "UPDATE passkeys SET credential = $2, backup_eligible = $3, backed_up = $4, last_used_at = $5 WHERE id = $1",
    )
    .bind(&record.id)
    .bind(to_json(&record.passkey)?)
    .bind(i64::from(record.backup_eligible))
    .bind(i64::from(record.backed_up))
    .bind(now)
    .execute(pool)
    .await
    .map_err(StoreError::from)?;
    Ok(())
}

pub(super) async fn rename(
    pool: &Pool,
    user_id: &str,
    id: &str,
    name: &str,
) -> Result<bool, PasskeyError> {
    let updated = sqlx::query("UPDATE passkeys SET name = $3 WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(user_id)
        .bind(name)
        .execute(pool)
        .await
        .map_err(StoreError::from)?;
    Ok(updated.rows_affected() == 1)
}

pub(super) async fn delete(pool: &Pool, user_id: &str, id: &str) -> Result<bool, PasskeyError> {
    let deleted = sqlx::query("DELETE FROM passkeys WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(user_id)
        .execute(pool)
        .await
        .map_err(StoreError::from)?;
    Ok(deleted.rows_affected() == 1)
}

/// A ceremony state as stored.
pub(super) struct PendingCeremony {
    pub state: String,
    pub user_id: Option<String>,
}

/// Stores a started ceremony and returns the id the browser sends back. The
/// browser's oldest unfinished ceremonies beyond the limit are dropped, in
/// the same transaction.
pub(super) async fn insert_challenge(
    pool: &Pool,
    kind: Ceremony,
    state: &str,
    user_id: Option<&str>,
    binding: &ChallengeBinding,
    now: UnixTime,
    expires_at: UnixTime,
) -> Result<SecretToken, StoreError> {
    let ceremony = SecretToken::generate();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO webauthn_challenges (id_hash, kind, state, user_id, binding, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(ceremony.hash().as_str())
    .bind(kind.as_str())
    .bind(state)
    .bind(user_id)
    .bind(binding.as_str())
    .bind(now)
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    let rows = sqlx::query(
        "SELECT id_hash FROM webauthn_challenges WHERE binding = $1 ORDER BY created_at DESC, id_hash",
    )
    .bind(binding.as_str())
    .fetch_all(&mut *tx)
    .await?;
    for row in rows.iter().skip(MAX_PENDING_PER_BINDING) {
        let stale: String = row.try_get("id_hash")?;
        sqlx::query("DELETE FROM webauthn_challenges WHERE id_hash = $1")
            .bind(stale)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(ceremony)
}

/// Takes a ceremony out of the table: it is deleted, so it can be finished
/// once only. Unknown, already used, expired, of another kind or started by
/// another browser: [`PasskeyError::UnknownCeremony`]. A ceremony presented
/// by the wrong browser is left in place for the right one.
pub(super) async fn take_challenge(
    pool: &Pool,
    ceremony: &str,
    kind: Ceremony,
    binding: &ChallengeBinding,
    now: UnixTime,
) -> Result<PendingCeremony, PasskeyError> {
    let token = SecretToken::parse(ceremony).ok_or(PasskeyError::UnknownCeremony)?;
    let hash = token.hash();
    let row = sqlx::query(
        "SELECT id_hash, kind, state, user_id, binding, expires_at FROM webauthn_challenges WHERE id_hash = $1",
    )
    .bind(hash.as_str())
    .fetch_optional(pool)
    .await
    .map_err(StoreError::from)?
    .ok_or(PasskeyError::UnknownCeremony)?;
    let get = |name: &str| row.try_get::<String, _>(name).map_err(StoreError::from);
    if !token.matches(&TokenHash::from_stored(get("id_hash")?))
        || !constant_time_eq(get("binding")?.as_bytes(), binding.as_str().as_bytes())
    {
        return Err(PasskeyError::UnknownCeremony);
    }
    // Whoever deletes the row owns the ceremony: two concurrent finishes
    // cannot both proceed.
    let deleted = sqlx::query("DELETE FROM webauthn_challenges WHERE id_hash = $1")
        .bind(hash.as_str())
        .execute(pool)
        .await
        .map_err(StoreError::from)?;
    if deleted.rows_affected() != 1 {
        return Err(PasskeyError::UnknownCeremony);
    }
    let expires_at: i64 = row.try_get("expires_at").map_err(StoreError::from)?;
    if now >= expires_at || get("kind")? != kind.as_str() {
        return Err(PasskeyError::UnknownCeremony);
    }
    Ok(PendingCeremony {
        state: get("state")?,
        user_id: row
            .try_get::<Option<String>, _>("user_id")
            .map_err(StoreError::from)?,
    })
}

/// Deletes ceremonies nobody finished (background task).
pub async fn purge_expired(pool: &Pool, now: UnixTime) -> Result<u64, StoreError> {
    Ok(
        sqlx::query("DELETE FROM webauthn_challenges WHERE expires_at <= $1")
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}
