//! Refresh tokens: 256-bit random, opaque, stored as SHA-256, bound to a
//! client, a user, a session and a **family**.
//!
//! Every use rotates: the presented token is marked spent and a new one is
//! issued, in one transaction that *starts* with the conditional
//! `UPDATE … SET spent_at WHERE spent_at IS NULL`, so of two requests racing
//! with the same token exactly one wins (the row lock in PostgreSQL, the write
//! lock in SQLite). Presenting a spent token again — a replay, or the loser of
//! such a race — is reuse: the whole family is revoked, the sign-in session it
//! came from is ended (with a revocation event, so APIs following the feed
//! refuse its access tokens at once), and the caller gets `invalid_grant`.
//! That transaction is composed in `cascade::rotate_refresh_token`; this
//! module holds the primitives on its own two tables.
//!
//! **Reuse grace** (`tokens.refresh_token_reuse_grace_secs`): a client whose
//! answer was lost (a crash, a proxy timeout, a dropped mobile connection)
//! presents the token it just spent again. Within the grace after the first
//! spend, while the successor it was answered with is still unused, that
//! successor is marked superseded and a fresh one is answered — nothing is
//! stored but hashes, and the family still has exactly one live token.
//! Outside the grace, for a superseded token, or once the successor has been
//! used, presenting the spent token is reuse as above. Each rotation records
//! its successor's hash on the spent row (`successor_hash`); retries of one
//! token queue on that row's lock, so concurrent retries each get a
//! successor and only the last one answered stays live.
//!
//! **Pruning** ([`prune_spent`]): a spent token is kept whole only through its
//! grace (and a margin); then it is replaced by a 64-bit fingerprint of its
//! hash and its family id (`spent_refresh_tokens`), which is all reuse
//! detection needs — presenting a pruned token still revokes the family.

use sqlx::Row as _;

use crate::clock::UnixTime;
use crate::config::TokenConfig;
use crate::crypto::{SecretToken, TokenHash};
use crate::scope::Scope;
use crate::store::{Pool, StoreError, Tx};
use crate::tokens::SignInClaims;

/// A family as stored.
#[derive(Debug, Clone)]
pub struct Family {
    pub id: String,
    pub client_id: String,
    pub user_id: String,
    pub session_handle: Option<String>,
    pub scope: Scope,
    pub expires_at: UnixTime,
    /// The sign-in the family was issued from (its access tokens report it;
    /// `None` for families started before version 0011 recorded it).
    pub sign_in: Option<SignInClaims>,
}

/// The result of a successful rotation.
#[derive(Debug)]
pub struct Rotated {
    pub token: SecretToken,
    pub family: Family,
    /// The scope granted now (may have shrunk on request, never grown).
    pub scope: Scope,
    /// `Some(seconds since the first spend)` when this answered a retry of a
    /// just-spent token within the reuse grace (its unused successor is now
    /// superseded).
    pub grace_retry: Option<i64>,
}

/// Why a refresh token was refused; every variant is `invalid_grant` to the
/// client except [`RefreshError::ScopeTooWide`] (`invalid_scope`).
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("the refresh token is invalid, expired or revoked")]
    Invalid,
    #[error("the refresh token was already used; its whole family has been revoked")]
    Reused {
        family_id: String,
        user_id: String,
        session_handle: Option<String>,
    },
    #[error("the requested scope exceeds the scope originally granted")]
    ScopeTooWide,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for RefreshError {
    fn from(e: sqlx::Error) -> Self {
        RefreshError::Store(e.into())
    }
}

/// Who a family is for: the client, the user, the session and the sign-in
/// it came from.
#[derive(Debug, Clone, Copy)]
pub struct FamilyOwner<'a> {
    pub client_id: &'a str,
    pub user_id: &'a str,
    pub session_handle: Option<&'a str>,
    pub sign_in: Option<&'a SignInClaims>,
}

/// Starts a family with its first token (at the end of an authorization).
pub async fn start_family(
    pool: &Pool,
    config: &TokenConfig,
    owner: FamilyOwner<'_>,
    scope: &Scope,
    now: UnixTime,
) -> Result<(SecretToken, Family), StoreError> {
    let mut tx = pool.begin().await?;
    let started = start_family_tx(&mut tx, config, owner, scope, now).await?;
    tx.commit().await?;
    Ok(started)
}

/// [`start_family`] inside the caller's transaction (a code exchange
/// commits the family with the code's redemption, or neither).
pub(crate) async fn start_family_tx(
    tx: &mut Tx<'_>,
    config: &TokenConfig,
    owner: FamilyOwner<'_>,
    scope: &Scope,
    now: UnixTime,
) -> Result<(SecretToken, Family), StoreError> {
    let family = Family {
        id: uuid::Uuid::now_v7().to_string(),
        client_id: owner.client_id.to_owned(),
        user_id: owner.user_id.to_owned(),
        session_handle: owner.session_handle.map(str::to_owned),
        scope: scope.clone(),
        expires_at: now + config.refresh_token_absolute_secs,
        sign_in: owner.sign_in.cloned(),
    };
    let token = SecretToken::generate();
    sqlx::query("INSERT INTO refresh_families (id, client_id, user_id, session_handle, scope, created_at, expires_at, auth_time, amr) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
        .bind(&family.id)
        .bind(&family.client_id)
        .bind(&family.user_id)
        .bind(family.session_handle.clone())
        .bind(scope.to_string())
        .bind(now)
        .bind(family.expires_at)
        .bind(family.sign_in.as_ref().map(|s| s.auth_time))
        .bind(family.sign_in.as_ref().map(|s| s.amr.join(" ")))
        .execute(&mut **tx)
        .await?;
    insert_token(tx, &token, &family, scope, config, now).await?;
    Ok((token, family))
}

async fn insert_token(
    tx: &mut Tx<'_>,
    token: &SecretToken,
    family: &Family,
    scope: &Scope,
    config: &TokenConfig,
    now: UnixTime,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO refresh_tokens (hash, family_id, scope, created_at, idle_expires_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(token.hash().as_str())
        .bind(&family.id)
        .bind(scope.to_string())
        .bind(now)
        .bind((now + config.refresh_token_idle_secs).min(family.expires_at))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

struct Presented {
    family: Family,
    created_at: UnixTime,
    token_scope: Scope,
    idle_expires_at: UnixTime,
    spent: bool,
    spent_at: Option<UnixTime>,
    family_revoked: bool,
    user_disabled: bool,
}

async fn load(tx: &mut Tx<'_>, token: &SecretToken) -> Result<Option<Presented>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT t.hash, t.created_at AS token_created_at, t.scope AS token_scope, t.idle_expires_at, t.spent_at, f.id, f.client_id, f.user_id, f.session_handle, f.scope, f.expires_at, f.revoked_at, f.auth_time, f.amr, u.disabled
         FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id JOIN users u ON u.id = f.user_id
         WHERE t.hash = $1",
    )
    .bind(token.hash().as_str())
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    if !token.matches(&TokenHash::from_stored(row.try_get("hash")?)) {
        return Ok(None);
    }
    Ok(Some(Presented {
        family: Family {
            id: row.try_get("id")?,
            client_id: row.try_get("client_id")?,
            user_id: row.try_get("user_id")?,
            session_handle: row.try_get("session_handle")?,
            scope: Scope::from_stored(&row.try_get::<String, _>("scope")?),
            expires_at: row.try_get("expires_at")?,
            sign_in: crate::tokens::sign_in_of(&row)?,
        },
        created_at: row.try_get("token_created_at")?,
        token_scope: Scope::from_stored(&row.try_get::<String, _>("token_scope")?),
        idle_expires_at: row.try_get("idle_expires_at")?,
        spent: row.try_get::<Option<i64>, _>("spent_at")?.is_some(),
        spent_at: row.try_get("spent_at")?,
        family_revoked: row.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
        user_disabled: row.try_get::<i64, _>("disabled")? != 0,
    }))
}

/// What [`rotate_tx`] found; `cascade::rotate_refresh_token` commits it.
#[derive(Debug)]
pub enum Rotation {
    /// Rotated: the transaction commits.
    Rotated(Rotated),
    /// Refused without touching anything: the transaction rolls back.
    Refused(RefreshError),
    /// The token was spent already: reuse. Unless the family was revoked
    /// already, the caller revokes it and ends its session in the same
    /// transaction, then commits.
    Reused {
        family: Family,
        family_was_revoked: bool,
    },
}

/// Rotates `presented` for `client_id` inside `tx` (`requested` may narrow
/// the scope). Only `cascade::rotate_refresh_token` calls it: on reuse,
/// what must be revoked reaches beyond this table.
pub(crate) async fn rotate_tx(
    tx: &mut Tx<'_>,
    config: &TokenConfig,
    presented: &SecretToken,
    client_id: &str,
    requested: Option<&Scope>,
    now: UnixTime,
) -> Result<Rotation, sqlx::Error> {
    // First statement is the write: it takes the lock both engines need to
    // serialize concurrent uses of one token.
    let claimed =
        sqlx::query("UPDATE refresh_tokens SET spent_at = $2 WHERE hash = $1 AND spent_at IS NULL")
            .bind(presented.hash().as_str())
            .bind(now)
            .execute(&mut **tx)
            .await?
            .rows_affected()
            == 1;
    let Some(found) = load(tx, presented).await? else {
        // A spent token pruned since: reuse, if it was this client's.
        return Ok(match pruned_family(tx, presented).await? {
            Some((family, revoked)) if family.client_id == client_id => Rotation::Reused {
                family,
                family_was_revoked: revoked,
            },
            _ => Rotation::Refused(RefreshError::Invalid),
        });
    };
    // Another client's token: refuse without touching it.
    if found.family.client_id != client_id {
        return Ok(Rotation::Refused(RefreshError::Invalid));
    }
    // `found` was read after our own UPDATE, so `found.spent` is always true
    // here; only `claimed` tells whether this request spent the token.
    let mut grace_retry = None;
    if !claimed {
        match within_grace_tx(tx, config, presented, &found, now).await? {
            Some(since_spent) => grace_retry = Some(since_spent),
            None => {
                return Ok(Rotation::Reused {
                    family: found.family,
                    family_was_revoked: found.family_revoked,
                })
            }
        }
    }
    if found.family_revoked
        || found.user_disabled
        || found.idle_expires_at <= now
        || found.family.expires_at <= now
    {
        return Ok(Rotation::Refused(RefreshError::Invalid));
    }
    let scope = match requested {
        Some(r) if !r.is_empty() => {
            if !r.is_subset(&found.token_scope) {
                return Ok(Rotation::Refused(RefreshError::ScopeTooWide));
            }
            r.clone()
        }
        _ => found.token_scope.clone(),
    };
    let token = SecretToken::generate();
    insert_token(tx, &token, &found.family, &scope, config, now).await?;
    sqlx::query("UPDATE refresh_tokens SET successor_hash = $2 WHERE hash = $1")
        .bind(presented.hash().as_str())
        .bind(token.hash().as_str())
        .execute(&mut **tx)
        .await?;
    Ok(Rotation::Rotated(Rotated {
        token,
        family: found.family,
        scope,
        grace_retry,
    }))
}

/// Decides whether the spent token `presented` may be answered again (the
/// reuse grace): `Some(seconds since it was spent)` after superseding its
/// unused successor, `None` when this is reuse. Takes the spent row's lock
/// first, so retries of one token queue and each sees the successor the
/// previous one left.
async fn within_grace_tx(
    tx: &mut Tx<'_>,
    config: &TokenConfig,
    presented: &SecretToken,
    found: &Presented,
    now: UnixTime,
) -> Result<Option<i64>, sqlx::Error> {
    let grace = config.refresh_token_reuse_grace_secs;
    let Some(spent_at) = found.spent_at else {
        return Ok(None);
    };
    if grace <= 0 || found.family_revoked || now - spent_at > grace {
        return Ok(None);
    }
    // Lock the spent row (a no-op write), then read what the last retry left.
    sqlx::query("UPDATE refresh_tokens SET superseded_at = superseded_at WHERE hash = $1")
        .bind(presented.hash().as_str())
        .execute(&mut **tx)
        .await?;
    let row =
        sqlx::query("SELECT successor_hash, superseded_at FROM refresh_tokens WHERE hash = $1")
            .bind(presented.hash().as_str())
            .fetch_one(&mut **tx)
            .await?;
    let superseded = row.try_get::<Option<i64>, _>("superseded_at")?.is_some();
    let Some(successor) = row.try_get::<Option<String>, _>("successor_hash")? else {
        // Rotated before successors were recorded: no grace.
        return Ok(None);
    };
    if superseded {
        // A replaced successor is never answered again.
        return Ok(None);
    }
    // The successor must be unused: superseding it is what keeps one live token.
    let replaced = sqlx::query(
        "UPDATE refresh_tokens SET spent_at = $2, superseded_at = $2 WHERE hash = $1 AND spent_at IS NULL",
    )
    .bind(&successor)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    Ok(replaced.then_some(now - spent_at))
}

/// The family (and whether it is revoked) of a spent token that was pruned,
/// found by its fingerprint.
async fn pruned_family(
    tx: &mut Tx<'_>,
    presented: &SecretToken,
) -> Result<Option<(Family, bool)>, sqlx::Error> {
    let hash = presented.hash();
    let row = sqlx::query(
        "SELECT f.id, f.client_id, f.user_id, f.session_handle, f.scope, f.expires_at, f.revoked_at, f.auth_time, f.amr
         FROM spent_refresh_tokens s JOIN refresh_families f ON f.id = s.family_id
         WHERE s.fingerprint = $1",
    )
    .bind(fingerprint(hash.as_str()))
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some((
        Family {
            id: row.try_get("id")?,
            client_id: row.try_get("client_id")?,
            user_id: row.try_get("user_id")?,
            session_handle: row.try_get("session_handle")?,
            scope: Scope::from_stored(&row.try_get::<String, _>("scope")?),
            expires_at: row.try_get("expires_at")?,
            sign_in: crate::tokens::sign_in_of(&row)?,
        },
        row.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
    )))
}

/// How long a spent token is kept whole after its spend beyond the reuse
/// grace: a margin for clocks of instances that differ. After that only its
/// fingerprint and family remain ([`prune_spent`]).
pub const PRUNE_MARGIN_SECS: i64 = 300;

/// The part of a token's hash kept once it is pruned: 16 hex digits, 64
/// bits — no live token's hash shares them by chance, and a row costs a
/// fraction of the token's.
fn fingerprint(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}

/// Replaces spent tokens past the reuse grace and [`PRUNE_MARGIN_SECS`] by
/// their fingerprint and family (all reuse detection needs), and drops the
/// fingerprints of families that are gone. Returns how many tokens were pruned.
pub async fn prune_spent(
    pool: &Pool,
    config: &TokenConfig,
    now: UnixTime,
) -> Result<u64, StoreError> {
    let cutoff = now - config.refresh_token_reuse_grace_secs.max(0) - PRUNE_MARGIN_SECS;
    let mut tx = pool.begin().await?;
    // Write first (SQLite takes its write lock before reading).
    sqlx::query(
        "INSERT INTO spent_refresh_tokens (fingerprint, family_id)
         SELECT substr(hash, 1, 16), family_id FROM refresh_tokens WHERE spent_at IS NOT NULL AND spent_at < $1
         ON CONFLICT (fingerprint) DO NOTHING",
    )
    .bind(cutoff)
    .execute(&mut *tx)
    .await?;
    let pruned =
        sqlx::query("DELETE FROM refresh_tokens WHERE spent_at IS NOT NULL AND spent_at < $1")
            .bind(cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    sqlx::query(
        "DELETE FROM spent_refresh_tokens WHERE family_id NOT IN (SELECT id FROM refresh_families)",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(pruned)
}

/// Revokes one family (if it was live: `true`).
pub(crate) async fn revoke_family_tx(
    tx: &mut Tx<'_>,
    family_id: &str,
    reason: &str,
    now: UnixTime,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("UPDATE refresh_families SET revoked_at = $2, revoked_reason = $3 WHERE id = $1 AND revoked_at IS NULL")
        .bind(family_id)
        .bind(now)
        .bind(reason)
        .execute(&mut **tx)
        .await?
        .rows_affected()
        == 1)
}

/// The sign-in session a family came from, if any.
pub(crate) async fn session_of_family_tx(
    tx: &mut Tx<'_>,
    family_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    Ok(
        sqlx::query("SELECT session_handle FROM refresh_families WHERE id = $1")
            .bind(family_id)
            .fetch_optional(&mut **tx)
            .await?
            .map(|row| row.try_get("session_handle"))
            .transpose()?
            .flatten(),
    )
}

/// Which sessions' families to revoke.
pub enum SessionSelector<'a> {
    Handle(&'a str),
    /// The session whose id (the cookie value) has this SHA-256 hash.
    IdHash(&'a str),
}

/// Revokes the refresh families of the selected sessions (all of a user's:
/// [`revoke_for_user_tx`]). Called by every
/// path that ends a session by intent (sign-out, revocation, disabling), in
/// the same transaction as the session deletion. Sessions that merely expire
/// keep their refresh tokens (they have their own idle/absolute limits).
pub async fn revoke_for_sessions_tx(
    tx: &mut Tx<'_>,
    selector: SessionSelector<'_>,
    reason: &str,
    now: UnixTime,
) -> Result<u64, sqlx::Error> {
    let result = match selector {
        SessionSelector::Handle(handle) => {
            sqlx::query("UPDATE refresh_families SET revoked_at = $2, revoked_reason = $3 WHERE session_handle = $1 AND revoked_at IS NULL")
                .bind(handle)
                .bind(now)
                .bind(reason)
                .execute(&mut **tx)
                .await?
        }
        SessionSelector::IdHash(id_hash) => {
            sqlx::query(
                "UPDATE refresh_families SET revoked_at = $2, revoked_reason = $3
                 WHERE session_handle = (SELECT handle FROM sessions WHERE id_hash = $1) AND revoked_at IS NULL",
            )
            .bind(id_hash)
            .bind(now)
            .bind(reason)
            .execute(&mut **tx)
            .await?
        }
    };
    Ok(result.rows_affected())
}

/// Revokes every live family of the user but those of the session
/// `except`, and returns the session handles (`sid`s) they carry, each once.
/// A family can outlive its session (the session expired and was purged);
/// access tokens it minted since carry that old `sid` with a recent `iat`,
/// so the caller records a session event for these handles too.
pub(crate) async fn revoke_for_user_tx(
    tx: &mut Tx<'_>,
    user_id: &str,
    except: Option<&str>,
    reason: &str,
    now: UnixTime,
) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query(
        "UPDATE refresh_families SET revoked_at = $2, revoked_reason = $3
         WHERE user_id = $1 AND revoked_at IS NULL AND (session_handle IS NULL OR session_handle <> $4)
         RETURNING session_handle",
    )
    .bind(user_id)
    .bind(now)
    .bind(reason)
    .bind(except.unwrap_or(""))
    .fetch_all(&mut **tx)
    .await?;
    let mut handles = std::collections::BTreeSet::new();
    for row in &rows {
        if let Some(handle) = row.try_get::<Option<String>, _>("session_handle")? {
            handles.insert(handle);
        }
    }
    Ok(handles.into_iter().collect())
}

/// RFC 7009: revokes the family of `token` if it belongs to `client_id`.
/// Returns whether the token was a refresh token at all.
pub async fn revoke_by_token(
    pool: &Pool,
    token: &SecretToken,
    client_id: &str,
    now: UnixTime,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    // Write first: takes SQLite's write lock before the read.
    sqlx::query("UPDATE refresh_tokens SET spent_at = spent_at WHERE hash = $1")
        .bind(token.hash().as_str())
        .execute(&mut *tx)
        .await?;
    let Some(found) = load(&mut tx, token).await? else {
        return Ok(false);
    };
    if found.family.client_id == client_id {
        revoke_family_tx(&mut tx, &found.family.id, "revoked by client", now).await?;
        tx.commit().await?;
    }
    Ok(true)
}

/// What introspection reports about a live refresh token.
#[derive(Debug, Clone)]
pub struct RefreshInfo {
    pub client_id: String,
    pub user_id: String,
    pub session_handle: Option<String>,
    pub scope: String,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
}

/// A live (unspent, unrevoked, unexpired) refresh token's facts, else `None`.
pub async fn describe(
    pool: &Pool,
    token: &SecretToken,
    now: UnixTime,
) -> Result<Option<RefreshInfo>, StoreError> {
    let mut tx = pool.begin().await?;
    let found = load(&mut tx, token).await?;
    tx.rollback().await?;
    Ok(found
        .filter(|f| {
            !f.spent
                && !f.family_revoked
                && !f.user_disabled
                && f.idle_expires_at > now
                && f.family.expires_at > now
        })
        .map(|f| RefreshInfo {
            client_id: f.family.client_id,
            user_id: f.family.user_id,
            session_handle: f.family.session_handle,
            scope: f.token_scope.to_string(),
            created_at: f.created_at,
            expires_at: f.idle_expires_at.min(f.family.expires_at),
        }))
}

/// Is the family revoked? (Tests and audits.)
pub async fn family_revoked(pool: &Pool, family_id: &str) -> Result<bool, StoreError> {
    let row = sqlx::query("SELECT revoked_at FROM refresh_families WHERE id = $1")
        .bind(family_id)
        .fetch_optional(pool)
        .await?;
    Ok(match row {
        Some(r) => r.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
        None => true,
    })
}

/// Deletes families past their absolute lifetime (their tokens cascade).
pub async fn purge_expired(pool: &Pool, now: UnixTime) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM refresh_tokens WHERE family_id IN (SELECT id FROM refresh_families WHERE expires_at <= $1)").bind(now).execute(&mut *tx).await?;
    let n = sqlx::query("DELETE FROM refresh_families WHERE expires_at <= $1")
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(n)
}
