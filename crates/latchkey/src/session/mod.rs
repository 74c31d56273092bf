//! Server-side sessions.
//!
//! Owns: the `sessions` table and its queries, the session id (a 256-bit
//! [`SecretToken`] stored only as SHA-256), idle and absolute expiry, the
//! per-user session limit, listing and revocation.
//!
//! A session is looked up by the hash of the cookie value, so a stolen
//! database dump yields no usable cookie. Signing out deletes the row: the
//! old cookie is dead at once, on every instance.
//!
//! Ending a session on purpose (sign-out, revocation, disabling or deleting
//! the user) is a revoking transaction composed in `cascade`, which owns the
//! lock order; this module holds the row-level primitives it calls
//! (`delete_*_tx`), which touch the `sessions` table only.
//!
//! Must not: know about HTTP or cookies (the `http` module carries the token
//! in a cookie); decide who may sign in (that is the login flow's job).

use sqlx::Row as _;

use crate::clock::{Moment, UnixMillis, UnixTime};
use crate::config::SessionConfig;
use crate::crypto::{SecretToken, TokenHash};
use crate::identity::{self, User};
use crate::store::{Pool, StoreError, Tx};

/// How a session was authenticated (RFC 8176 `amr` values) and when.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Session {
    /// Public handle used to list and revoke; not a credential.
    pub handle: String,
    pub user_id: String,
    pub created_at: UnixTime,
    pub last_seen_at: UnixTime,
    pub expires_at: UnixTime,
    pub auth_time: UnixTime,
    /// `auth_time` to the millisecond (orders a sign-in and a request).
    #[serde(skip)]
    pub auth_time_ms: UnixMillis,
    pub amr: Vec<String>,
    pub ip: String,
    pub user_agent: String,
    #[serde(skip)]
    pub id_hash: String,
}

/// The device a session's User-Agent names, as its owner would say it:
/// "Chrome on Linux", "Safari on iPhone", or "Unknown device". The woothee
/// classifier (a dataset shared by several languages' implementations)
/// reads the header; the raw string stays available on hover.
pub fn device_label(user_agent: &str) -> String {
    let Some(ua) = woothee::parser::Parser::new().parse(user_agent) else {
        return "Unknown device".to_owned();
    };
    let known = |s: &str| !s.is_empty() && s != woothee::woothee::VALUE_UNKNOWN;
    match (known(ua.name), known(ua.os)) {
        (true, true) => format!("{} on {}", ua.name, ua.os),
        (true, false) => ua.name.to_owned(),
        (false, true) => format!("A browser on {}", ua.os),
        (false, false) => "Unknown device".to_owned(),
    }
}

impl Session {
    /// When the session ends if it stays idle.
    pub fn idle_deadline(&self, config: &SessionConfig) -> UnixTime {
        (self.last_seen_at + config.idle_timeout_secs).min(self.expires_at)
    }
}

/// Where a sign-in came from, recorded on the session for the user to review.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub ip: String,
    pub user_agent: String,
}

/// Last-seen times are written at most this often, so a busy session does not
/// turn every page view into a database write.
const TOUCH_INTERVAL_SECS: i64 = 60;

const SESSION_COLUMNS: &str = "id_hash, handle, user_id, created_at, last_seen_at, expires_at, auth_time, amr, ip, user_agent, auth_time_ms";

fn session_from_row(row: &sqlx::any::AnyRow) -> Result<Session, sqlx::Error> {
    let amr: String = row.try_get("amr")?;
    let auth_time: UnixTime = row.try_get("auth_time")?;
    Ok(Session {
        id_hash: row.try_get("id_hash")?,
        handle: row.try_get("handle")?,
        user_id: row.try_get("user_id")?,
        created_at: row.try_get("created_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        expires_at: row.try_get("expires_at")?,
        auth_time,
        // Sessions of versions before 0011 know the second only.
        auth_time_ms: row
            .try_get::<Option<i64>, _>("auth_time_ms")?
            .unwrap_or(auth_time * 1000),
        amr: amr.split_whitespace().map(str::to_owned).collect(),
        ip: row.try_get("ip")?,
        user_agent: row.try_get("user_agent")?,
    })
}

/// Starts a new session for `user_id` (always a fresh id: no fixation),
/// signed in at `at`. When `config.max_per_user` is set, the
/// user's oldest sessions beyond the limit end in the same transaction.
pub async fn create(
    pool: &Pool,
    config: &SessionConfig,
    user_id: &str,
    amr: &[&str],
    origin: &Origin,
    at: Moment,
) -> Result<(SecretToken, Session), StoreError> {
    let now = at.secs();
    let token = SecretToken::generate();
    let session = Session {
        id_hash: token.hash().as_str().to_owned(),
        handle: uuid::Uuid::now_v7().to_string(),
        user_id: user_id.to_owned(),
        created_at: now,
        last_seen_at: now,
        expires_at: now + config.absolute_lifetime_secs,
        auth_time: now,
        auth_time_ms: at.millis(),
        amr: amr.iter().map(|s| (*s).to_owned()).collect(),
        // Bounded so a hostile User-Agent cannot bloat the table.
        ip: truncate(&origin.ip, 64),
        user_agent: truncate(&origin.user_agent, 256),
    };
    let mut tx = pool.begin().await?;
    sqlx::query(&format!(
        "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    ))
    .bind(&session.id_hash)
    .bind(&session.handle)
    .bind(&session.user_id)
    .bind(session.created_at)
    .bind(session.last_seen_at)
    .bind(session.expires_at)
    .bind(session.auth_time)
    .bind(session.amr.join(" "))
    .bind(&session.ip)
    .bind(&session.user_agent)
    .bind(session.auth_time_ms)
    .execute(&mut *tx)
    .await?;
    if config.max_per_user > 0 {
        // Expired sessions do not count towards the limit (and go now).
        sqlx::query(
            "DELETE FROM sessions WHERE user_id = $1 AND (expires_at <= $2 OR last_seen_at <= $3)",
        )
        .bind(user_id)
        .bind(now)
        .bind(now - config.idle_timeout_secs)
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(
            "SELECT handle FROM sessions WHERE user_id = $1 ORDER BY created_at DESC, handle DESC",
        )
        .bind(user_id)
        .fetch_all(&mut *tx)
        .await?;
        for row in rows.iter().skip(config.max_per_user as usize) {
            let handle: String = row.try_get("handle")?;
            sqlx::query("DELETE FROM sessions WHERE handle = $1")
                .bind(handle)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok((token, session))
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(max_chars)
        .collect()
}

/// Why a presented session is not valid (for metrics and audit, never shown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    Unknown,
    IdleExpired,
    AbsoluteExpired,
    UserDisabled,
}

/// Resolves a cookie value to its live session and user. An expired session
/// is deleted on sight. Refreshes `last_seen_at` (at most once a minute).
pub async fn authenticate(
    pool: &Pool,
    config: &SessionConfig,
    token: &SecretToken,
    now: UnixTime,
) -> Result<Result<(Session, User), Invalid>, StoreError> {
    let hash = token.hash();
    let Some(row) = sqlx::query(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE id_hash = $1"
    ))
    .bind(hash.as_str())
    .fetch_optional(pool)
    .await?
    else {
        return Ok(Err(Invalid::Unknown));
    };
    let mut session = session_from_row(&row)?;
    // The lookup was by hash equality in SQL; this re-check is constant time.
    if !token.matches(&TokenHash::from_stored(session.id_hash.clone())) {
        return Ok(Err(Invalid::Unknown));
    }
    let verdict = if now >= session.expires_at {
        Some(Invalid::AbsoluteExpired)
    } else if now >= session.last_seen_at + config.idle_timeout_secs {
        Some(Invalid::IdleExpired)
    } else {
        None
    };
    if let Some(verdict) = verdict {
        delete_by_hash(pool, &session.id_hash).await?;
        return Ok(Err(verdict));
    }
    let Some(user) = identity::find_by_id(pool, &session.user_id).await? else {
        return Ok(Err(Invalid::Unknown));
    };
    if user.disabled {
        delete_by_hash(pool, &session.id_hash).await?;
        return Ok(Err(Invalid::UserDisabled));
    }
    if now - session.last_seen_at >= TOUCH_INTERVAL_SECS {
        sqlx::query("UPDATE sessions SET last_seen_at = $2 WHERE id_hash = $1")
            .bind(&session.id_hash)
            .bind(now)
            .execute(pool)
            .await?;
        session.last_seen_at = now;
    }
    Ok(Ok((session, user)))
}

async fn delete_by_hash(pool: &Pool, id_hash: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
        .bind(id_hash)
        .execute(pool)
        .await?;
    Ok(())
}

/// Deletes the session whose id (the cookie value) hashes to `id_hash`
/// inside a revoking transaction (`cascade`); returns it if it existed.
pub(crate) async fn delete_by_id_hash_tx(
    tx: &mut Tx<'_>,
    id_hash: &str,
) -> Result<Option<Session>, sqlx::Error> {
    let row = sqlx::query(&format!(
        "DELETE FROM sessions WHERE id_hash = $1 RETURNING {SESSION_COLUMNS}"
    ))
    .bind(id_hash)
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(session_from_row).transpose()
}

/// Deletes the session `handle` if it is `user_id`'s; whether it existed.
pub(crate) async fn delete_by_handle_tx(
    tx: &mut Tx<'_>,
    user_id: &str,
    handle: &str,
) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM sessions WHERE handle = $1 AND user_id = $2")
            .bind(handle)
            .bind(user_id)
            .execute(&mut **tx)
            .await?
            .rows_affected()
            == 1,
    )
}

/// Deletes every session of `user_id` but `keep_handle`; their handles.
pub(crate) async fn delete_others_tx(
    tx: &mut Tx<'_>,
    user_id: &str,
    keep_handle: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let rows =
        sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND handle <> $2 RETURNING handle")
            .bind(user_id)
            .bind(keep_handle)
            .fetch_all(&mut **tx)
            .await?;
    rows.iter().map(|row| row.try_get("handle")).collect()
}

/// Deletes every session of `user_id`; their handles.
pub(crate) async fn delete_all_of_user_tx(
    tx: &mut Tx<'_>,
    user_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query("DELETE FROM sessions WHERE user_id = $1 RETURNING handle")
        .bind(user_id)
        .fetch_all(&mut **tx)
        .await?;
    rows.iter().map(|row| row.try_get("handle")).collect()
}

/// The user's live sessions, newest first.
pub async fn list_for_user(
    pool: &Pool,
    user_id: &str,
    config: &SessionConfig,
    now: UnixTime,
) -> Result<Vec<Session>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE user_id = $1 AND expires_at > $2 AND last_seen_at > $3
         ORDER BY created_at DESC, handle DESC"
    ))
    .bind(user_id)
    .bind(now)
    .bind(now - config.idle_timeout_secs)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(session_from_row)
        .collect::<Result<_, _>>()?)
}

/// Deletes sessions past their absolute or idle end (background task).
pub async fn purge_expired(
    pool: &Pool,
    config: &SessionConfig,
    now: UnixTime,
) -> Result<u64, StoreError> {
    let deleted = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1 OR last_seen_at <= $2")
        .bind(now)
        .bind(now - config.idle_timeout_secs)
        .execute(pool)
        .await?;
    Ok(deleted.rows_affected())
}

/// Sessions alive now (the `/metrics` gauge).
pub async fn count_active(
    pool: &Pool,
    config: &SessionConfig,
    now: UnixTime,
) -> Result<i64, StoreError> {
    Ok(sqlx::query(
        "SELECT COUNT(*) AS n FROM sessions WHERE expires_at > $1 AND last_seen_at > $2",
    )
    .bind(now)
    .bind(now - config.idle_timeout_secs)
    .fetch_one(pool)
    .await?
    .try_get("n")?)
}

#[cfg(test)]
mod tests {
    use super::device_label;

    #[test]
    fn device_labels_name_the_browser_and_the_system() {
        for (ua, label) in [
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
                "Chrome on Linux",
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
                "Safari on iPhone",
            ),
            ("", "Unknown device"),
            ("\u{0}garbage", "Unknown device"),
        ] {
            assert_eq!(device_label(ua), label, "{ua}");
        }
    }
}
