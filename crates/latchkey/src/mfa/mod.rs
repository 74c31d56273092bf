//! Multi-factor authentication: TOTP, recovery codes, the second sign-in step.
//!
//! Owns: the `totp_credentials`, `recovery_codes` and `mfa_challenges` tables.
//! - TOTP secrets (160 bits) are sealed with the master key; TOTP is enabled
//!   only after the user confirms a valid code; each step is accepted once
//!   (`last_used_step`, a conditional UPDATE, so two parallel uses of one code
//!   cannot both pass).
//! - Recovery codes: 10 single-use codes of 128 random bits, shown once and
//!   stored only as SHA-256 (128 bits make an unsalted fast hash safe).
//! - After a correct password, a user with a second factor gets an
//!   [`MfaChallenge`] (5 minutes, cookie-held, stored hashed) and **no
//!   session**; only completing the second step creates one.
//!
//! Must not: know about HTTP; decide which roles need MFA (that is policy in
//! config, applied by the HTTP extractors).

pub mod totp;

use sqlx::Row as _;

use crate::clock::UnixTime;
use crate::crypto::{random_bytes, seal, unseal, SecretToken, TokenHash};
use crate::store::{Pool, StoreError, Tx};

pub const CHALLENGE_LIFETIME_SECS: i64 = 300;
pub const RECOVERY_CODE_COUNT: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    #[error("the authenticator code is not valid")]
    InvalidCode,
    #[error("that code was already used")]
    Replayed,
    #[error("no authenticator is being set up; start again")]
    NoEnrollment,
    #[error("the TOTP secret cannot be unsealed: wrong master key?")]
    Unseal,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for MfaError {
    fn from(e: sqlx::Error) -> Self {
        MfaError::Store(e.into())
    }
}

fn aad(user_id: &str) -> Vec<u8> {
    format!("latchkey-totp|{user_id}").into_bytes()
}

/// A user's second factors, for the account page and the sign-in decision.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MfaStatus {
    pub totp: bool,
    pub recovery_codes_left: i64,
}

impl MfaStatus {
    pub fn has_second_factor(&self) -> bool {
        self.totp
    }
}

pub async fn status(pool: &Pool, user_id: &str) -> Result<MfaStatus, StoreError> {
    let totp =
        sqlx::query("SELECT 1 AS x FROM totp_credentials WHERE user_id = $1 AND confirmed = 1")
            .bind(user_id)
            .fetch_optional(pool)
            .await?
            .is_some();
    let left: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
    )
    .bind(user_id)
    .fetch_one(pool)
    .await?
    .try_get("n")?;
    Ok(MfaStatus {
        totp,
        recovery_codes_left: left,
    })
}

/// Starts (or restarts) TOTP enrollment: a fresh 160-bit secret, unconfirmed.
/// An already confirmed authenticator stays in force until the new one is confirmed.
pub async fn begin_totp(
    pool: &Pool,
    seal_key: &[u8; 32],
    user_id: &str,
    now: UnixTime,
) -> Result<Vec<u8>, MfaError> {
    let secret = random_bytes::<20>().to_vec();
    let mut tx = pool.begin().await?;
    // Write first: takes SQLite's write lock before the read (see tokens::refresh).
    sqlx::query("UPDATE totp_credentials SET created_at = created_at WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    let confirmed =
        sqlx::query("SELECT 1 AS x FROM totp_credentials WHERE user_id = $1 AND confirmed = 1")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
    if confirmed {
        tx.rollback().await?;
        return Err(MfaError::NoEnrollment);
    }
    sqlx::query("DELETE FROM totp_credentials WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO totp_credentials (user_id, sealed_secret, confirmed, created_at) VALUES ($1, $2, 0, $3)")
        .bind(user_id)
        .bind(seal(seal_key, &aad(user_id), &secret))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(secret)
}

/// The unconfirmed secret being enrolled (to show it again).
pub async fn pending_totp_secret(
    pool: &Pool,
    seal_key: &[u8; 32],
    user_id: &str,
) -> Result<Option<Vec<u8>>, MfaError> {
    let row = sqlx::query(
        "SELECT sealed_secret FROM totp_credentials WHERE user_id = $1 AND confirmed = 0",
    )
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    match row {
        Some(r) => Ok(Some(
            unseal(
                seal_key,
                &aad(user_id),
                &r.try_get::<String, _>("sealed_secret")?,
            )
            .ok_or(MfaError::Unseal)?,
        )),
        None => Ok(None),
    }
}

/// Confirms enrollment with a valid code; returns fresh recovery codes (shown once).
pub async fn confirm_totp(
    pool: &Pool,
    seal_key: &[u8; 32],
    user_id: &str,
    code: &str,
    now: UnixTime,
) -> Result<Vec<String>, MfaError> {
    let secret = pending_totp_secret(pool, seal_key, user_id)
        .await?
        .ok_or(MfaError::NoEnrollment)?;
    let step = totp::Totp::new(&secret)
        .matching_step(code, now.max(0) as u64)
        .ok_or(MfaError::InvalidCode)?;
    let mut tx = pool.begin().await?;
    let updated = sqlx::query("UPDATE totp_credentials SET confirmed = 1, last_used_step = $2 WHERE user_id = $1 AND confirmed = 0")
        .bind(user_id)
        .bind(step as i64)
        .execute(&mut *tx)
        .await?;
    if updated.rows_affected() != 1 {
        return Err(MfaError::NoEnrollment);
    }
    let codes = replace_recovery_codes(&mut tx, user_id, now).await?;
    tx.commit().await?;
    Ok(codes)
}

/// Checks a TOTP code for sign-in; a step is accepted once only.
pub async fn verify_totp(
    pool: &Pool,
    seal_key: &[u8; 32],
    user_id: &str,
    code: &str,
    now: UnixTime,
) -> Result<(), MfaError> {
    let row = sqlx::query(
        "SELECT sealed_secret FROM totp_credentials WHERE user_id = $1 AND confirmed = 1",
    )
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Err(MfaError::InvalidCode);
    };
    let secret = unseal(
        seal_key,
        &aad(user_id),
        &row.try_get::<String, _>("sealed_secret")?,
    )
    .ok_or(MfaError::Unseal)?;
    let step = totp::Totp::new(&secret)
        .matching_step(code, now.max(0) as u64)
        .ok_or(MfaError::InvalidCode)?;
    let claimed = sqlx::query("UPDATE totp_credentials SET last_used_step = $2 WHERE user_id = $1 AND confirmed = 1 AND (last_used_step IS NULL OR last_used_step < $2)")
        .bind(user_id)
        .bind(step as i64)
        .execute(pool)
        .await?;
    if claimed.rows_affected() == 1 {
        Ok(())
    } else {
        Err(MfaError::Replayed)
    }
}

/// Removes every second factor of a user in one transaction — the
/// authenticator app, recovery codes, half-done sign-ins, and the passkeys
/// (which serve as second factors too) with their pending ceremonies — so a
/// user who lost them can sign in with the password alone. Sessions are
/// left alone: the operator's `latchkey user reset-mfa` uses
/// `cascade::reset_mfa_and_end_sessions`.
pub async fn reset_all(pool: &Pool, user_id: &str) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    reset_all_tx(&mut tx, user_id).await?;
    tx.commit().await?;
    Ok(())
}

/// The deletes of [`reset_all`], inside a transaction (`cascade` also ends
/// the sessions with it for `latchkey user reset-mfa`).
pub(crate) async fn reset_all_tx(tx: &mut Tx<'_>, user_id: &str) -> Result<(), sqlx::Error> {
    for table in [
        "totp_credentials",
        "recovery_codes",
        "mfa_challenges",
        "passkeys",
        "webauthn_challenges",
    ] {
        sqlx::query(&format!("DELETE FROM {table} WHERE user_id = $1"))
            .bind(user_id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Removes TOTP and recovery codes (the user's choice after re-authentication);
/// passkeys stay.
pub async fn disable(pool: &Pool, user_id: &str) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM totp_credentials WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM mfa_challenges WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

fn new_recovery_code() -> String {
    let raw = totp::base32_encode(&random_bytes::<16>());
    // 26 characters, shown in groups of five for people.
    raw.as_bytes()
        .chunks(5)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

fn normalize_recovery_code(input: &str) -> String {
    input
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

async fn replace_recovery_codes(
    tx: &mut crate::store::Tx<'_>,
    user_id: &str,
    now: UnixTime,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    let mut codes = Vec::with_capacity(RECOVERY_CODE_COUNT);
    for _ in 0..RECOVERY_CODE_COUNT {
        let code = new_recovery_code();
        sqlx::query(
            "INSERT INTO recovery_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)",
        )
        .bind(user_id)
        .bind(TokenHash::of(&normalize_recovery_code(&code)).as_str())
        .bind(now)
        .execute(&mut **tx)
        .await?;
        codes.push(code);
    }
    Ok(codes)
}

/// New recovery codes; every old one stops working.
pub async fn regenerate_recovery_codes(
    pool: &Pool,
    user_id: &str,
    now: UnixTime,
) -> Result<Vec<String>, StoreError> {
    let mut tx = pool.begin().await?;
    let codes = replace_recovery_codes(&mut tx, user_id, now).await?;
    tx.commit().await?;
    Ok(codes)
}

/// Spends a recovery code; `true` if it was valid and unused.
pub async fn use_recovery_code(
    pool: &Pool,
    user_id: &str,
    input: &str,
    now: UnixTime,
) -> Result<bool, StoreError> {
    let normalized = normalize_recovery_code(input);
    if normalized.len() != 26 {
        return Ok(false);
    }
    let updated = sqlx::query("UPDATE recovery_codes SET used_at = $3 WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL")
        .bind(user_id)
        .bind(TokenHash::of(&normalized).as_str())
        .bind(now)
        .execute(pool)
        .await?;
    Ok(updated.rows_affected() == 1)
}

/// The half-done sign-in: the password was right, the second factor is due.
#[derive(Debug, Clone)]
pub struct MfaChallenge {
    pub user_id: String,
    pub first_amr: Vec<String>,
    pub created_at: UnixTime,
}

pub async fn start_challenge(
    pool: &Pool,
    user_id: &str,
    first_amr: &[&str],
    now: UnixTime,
) -> Result<SecretToken, StoreError> {
    let token = SecretToken::generate();
    sqlx::query("INSERT INTO mfa_challenges (id_hash, user_id, first_amr, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(token.hash().as_str())
        .bind(user_id)
        .bind(first_amr.join(" "))
        .bind(now)
        .bind(now + CHALLENGE_LIFETIME_SECS)
        .execute(pool)
        .await?;
    Ok(token)
}

pub async fn load_challenge(
    pool: &Pool,
    token: &SecretToken,
    now: UnixTime,
) -> Result<Option<MfaChallenge>, StoreError> {
    let row = sqlx::query("SELECT id_hash, user_id, first_amr, created_at, expires_at FROM mfa_challenges WHERE id_hash = $1").bind(token.hash().as_str()).fetch_optional(pool).await?;
    let Some(row) = row else { return Ok(None) };
    if !token.matches(&TokenHash::from_stored(row.try_get("id_hash")?))
        || row.try_get::<i64, _>("expires_at")? <= now
    {
        return Ok(None);
    }
    Ok(Some(MfaChallenge {
        user_id: row.try_get("user_id")?,
        first_amr: row
            .try_get::<String, _>("first_amr")?
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        created_at: row.try_get("created_at")?,
    }))
}

/// Consumes a challenge; `false` if another request already did (single use).
pub async fn finish_challenge(pool: &Pool, token: &SecretToken) -> Result<bool, StoreError> {
    Ok(sqlx::query("DELETE FROM mfa_challenges WHERE id_hash = $1")
        .bind(token.hash().as_str())
        .execute(pool)
        .await?
        .rows_affected()
        == 1)
}

pub async fn purge_expired(pool: &Pool, now: UnixTime) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM mfa_challenges WHERE expires_at <= $1")
        .bind(now)
        .execute(pool)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_codes_are_128_bit_and_normalize() {
        let code = new_recovery_code();
        assert_eq!(normalize_recovery_code(&code).len(), 26);
        assert_eq!(
            normalize_recovery_code(&code.to_lowercase().replace('-', " ")),
            normalize_recovery_code(&code)
        );
        assert_ne!(new_recovery_code(), new_recovery_code());
    }
}
