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
//! Architecture invariant: ending a session on purpose (sign-out, revocation,
//! disabling or deleting the user) also revokes the refresh-token families
//! that came from it, deletes its opaque access tokens and records a
//! revocation event for the feed (`revocation`), all in the same
//! transaction; every such function takes the [`Cause`] of the revocation.
//! Every ended session gets its own [`Revoked::Session`] event, also when a
//! user-wide [`Revoked::Subject`] event is recorded with it: the subject
//! event only covers tokens with `iat <=` its time, which a token minted by
//! an instance whose clock runs ahead can escape; its `sid` cannot. A
//! session that merely expires, or is evicted by the per-user limit, does
//! not: its refresh tokens keep their own idle and absolute limits, so its
//! access tokens stay valid until they expire.
//!
//! Architecture invariant — **lock order of revoking transactions**. So that
//! two revocations running at once on PostgreSQL cannot deadlock, every
//! transaction that revokes touches rows in this order: the `users` row (if
//! it changes it) and the user's own rows (second factors, roles), then
//! `refresh_tokens`, then `refresh_families`, then `sessions`, then
//! `opaque_access_tokens` / `revoked_access_tokens`, and **last** the
//! revocation events (`revocation::record_tx`, whose counter row lock is held
//! until commit). Functions here therefore revoke a session's families
//! *before* deleting the session row, and hand back the events still to be
//! recorded ([`Ended`]) instead of recording them in the middle.
//!
//! Must not: know about HTTP or cookies (the `http` module carries the token
//! in a cookie); decide who may sign in (that is the login flow's job).

use sqlx::Row as _;

use crate::clock::{Moment, UnixMillis, UnixTime};
use crate::config::SessionConfig;
use crate::crypto::{SecretToken, TokenHash};
use crate::identity::{self, User};
use crate::revocation::{self, Cause, Revoked};
use crate::store::{Pool, StoreError, Tx};
use crate::tokens::refresh::{revoke_for_sessions_tx, SessionSelector};

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

/// Ends the session behind a cookie value (sign-out). Returns whether one existed.
pub async fn end(
    pool: &Pool,
    token: &SecretToken,
    cause: &Cause,
) -> Result<Option<Session>, StoreError> {
    let hash = token.hash();
    let mut tx = pool.begin().await?;
    // Its refresh families first (the lock order above); this is also the
    // write that comes first, as SQLite needs (a transaction that reads and
    // then writes fails at once when another write commits in between).
    revoke_for_sessions_tx(
        &mut tx,
        SessionSelector::IdHash(hash.as_str()),
        &cause.reason,
        cause.now,
    )
    .await?;
    let row = sqlx::query(&format!(
        "DELETE FROM sessions WHERE id_hash = $1 RETURNING {SESSION_COLUMNS}"
    ))
    .bind(hash.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    // No such session: nothing to revoke (dropping `tx` rolls back).
    let Some(row) = row else { return Ok(None) };
    let session = session_from_row(&row)?;
    crate::tokens::delete_opaque_of_session_tx(&mut tx, &session.handle).await?;
    Ended::sessions(&session.user_id, vec![session.handle.clone()])
        .record_tx(&mut tx, cause)
        .await?;
    tx.commit().await?;
    cause.committed();
    Ok(Some(session))
}

/// Sessions ended inside a revoking transaction whose revocation events are
/// still to be recorded. [`Ended::record_tx`] records them and must be the
/// last thing the transaction does (see the lock order above).
#[must_use = "record the revocation events with `record_tx`, last, before commit"]
#[derive(Debug)]
pub(crate) struct Ended {
    user_id: String,
    handles: Vec<String>,
    /// Sessions already gone (expired) whose refresh families were revoked
    /// now: tokens those families minted carry these `sid`s. Recorded as
    /// session events, not counted as sessions ended.
    orphan_sids: Vec<String>,
    /// Also record the user-wide event (every token of the user issued until now).
    user_wide: bool,
}

impl Ended {
    fn sessions(user_id: &str, handles: Vec<String>) -> Ended {
        Ended {
            user_id: user_id.to_owned(),
            handles,
            orphan_sids: Vec::new(),
            user_wide: false,
        }
    }

    /// How many session rows were deleted.
    pub(crate) fn count(&self) -> u64 {
        self.handles.len() as u64
    }

    /// Records one [`Revoked::Session`] event per ended session, then the
    /// [`Revoked::Subject`] event if the revocation is user-wide. Last
    /// statements of the transaction: the caller commits right after.
    pub(crate) async fn record_tx(
        self,
        tx: &mut Tx<'_>,
        cause: &Cause,
    ) -> Result<u64, sqlx::Error> {
        for handle in self.handles.iter().chain(&self.orphan_sids) {
            let revoked = Revoked::Session {
                subject: self.user_id.clone(),
                session_id: handle.clone(),
            };
            revocation::record_tx(tx, &revoked, cause).await?;
        }
        if self.user_wide {
            let revoked = Revoked::Subject {
                subject: self.user_id.clone(),
            };
            revocation::record_tx(tx, &revoked, cause).await?;
        }
        Ok(self.count())
    }
}

/// Ends the session `handle` of `user_id` inside a revoking transaction, in
/// the lock order: its refresh families, the session row, its opaque access
/// tokens. The returned [`Ended`] names the session whether or not its row
/// still existed (the `bool` says whether it did): a session that already
/// expired can still have live tokens carrying its `sid`.
pub(crate) async fn end_by_handle_tx(
    tx: &mut Tx<'_>,
    user_id: &str,
    handle: &str,
    cause: &Cause,
) -> Result<(Ended, bool), sqlx::Error> {
    revoke_for_sessions_tx(
        tx,
        SessionSelector::Handle(handle),
        &cause.reason,
        cause.now,
    )
    .await?;
    let deleted = sqlx::query("DELETE FROM sessions WHERE handle = $1 AND user_id = $2")
        .bind(handle)
        .bind(user_id)
        .execute(&mut **tx)
        .await?
        .rows_affected()
        == 1;
    crate::tokens::delete_opaque_of_session_tx(tx, handle).await?;
    Ok((Ended::sessions(user_id, vec![handle.to_owned()]), deleted))
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

/// Ends one of the user's sessions by handle (and its refresh families);
/// `false` if it is not theirs.
pub async fn revoke(
    pool: &Pool,
    user_id: &str,
    handle: &str,
    cause: &Cause,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let (ended, deleted) = end_by_handle_tx(&mut tx, user_id, handle, cause).await?;
    if !deleted {
        // Not theirs (or gone): dropping `tx` rolls the family update back.
        return Ok(false);
    }
    ended.record_tx(&mut tx, cause).await?;
    tx.commit().await?;
    cause.committed();
    Ok(true)
}

/// Ends every session of the user except `keep_handle` (one revocation event
/// per ended session: the kept session's tokens stay valid).
pub async fn revoke_others(
    pool: &Pool,
    user_id: &str,
    keep_handle: &str,
    cause: &Cause,
) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await?;
    // Families first (the lock order above); those of sessions that
    // already expired go too.
    let family_sids = crate::tokens::refresh::revoke_for_user_tx(
        &mut tx,
        user_id,
        Some(keep_handle),
        &cause.reason,
        cause.now,
    )
    .await?;
    let ended =
        sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND handle <> $2 RETURNING handle")
            .bind(user_id)
            .bind(keep_handle)
            .fetch_all(&mut *tx)
            .await?;
    let handles: Vec<String> = ended
        .iter()
        .map(|row| row.try_get("handle"))
        .collect::<Result<_, _>>()?;
    for handle in &handles {
        crate::tokens::delete_opaque_of_session_tx(&mut tx, handle).await?;
    }
    let mut ended = Ended::sessions(user_id, handles);
    ended.orphan_sids = orphans(family_sids, &ended.handles);
    let n = ended.record_tx(&mut tx, cause).await?;
    tx.commit().await?;
    cause.committed();
    Ok(n)
}

/// Ends every session of the user (CLI `user logout-all`): one revocation
/// event per ended session plus one user-wide event, so every token of the
/// user issued until now is revoked.
pub async fn revoke_all(pool: &Pool, user_id: &str, cause: &Cause) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await?;
    let n = delete_all_for_user_tx(&mut tx, user_id, cause)
        .await?
        .record_tx(&mut tx, cause)
        .await?;
    tx.commit().await?;
    cause.committed();
    Ok(n)
}

/// Revokes every refresh family of the user, deletes every session of the
/// user and their opaque access tokens (in the lock order above). The
/// returned [`Ended`] records one event per deleted session and the
/// user-wide event: the caller records it last, after any other write.
pub(crate) async fn delete_all_for_user_tx(
    tx: &mut Tx<'_>,
    user_id: &str,
    cause: &Cause,
) -> Result<Ended, sqlx::Error> {
    let family_sids =
        crate::tokens::refresh::revoke_for_user_tx(tx, user_id, None, &cause.reason, cause.now)
            .await?;
    let rows = sqlx::query("DELETE FROM sessions WHERE user_id = $1 RETURNING handle")
        .bind(user_id)
        .fetch_all(&mut **tx)
        .await?;
    let handles: Vec<String> = rows
        .iter()
        .map(|row| row.try_get("handle"))
        .collect::<Result<_, _>>()?;
    crate::tokens::delete_opaque_of_subject_tx(tx, user_id).await?;
    Ok(Ended {
        user_id: user_id.to_owned(),
        orphan_sids: orphans(family_sids, &handles),
        handles,
        user_wide: true,
    })
}

/// The `sid`s of revoked families whose session was not among those deleted.
fn orphans(family_sids: Vec<String>, deleted: &[String]) -> Vec<String> {
    family_sids
        .into_iter()
        .filter(|sid| !deleted.contains(sid))
        .collect()
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
