//! Revocation cascades: every transaction that revokes.
//!
//! Owns: the composition of each revoking transaction — signing out, ending
//! one session, "sign out other sessions", ending every session of a user,
//! disabling and deleting a user, resetting a user's second factors, the
//! revocation of what a replayed authorization code produced, and the
//! refresh-token rotation whose reuse detection ends a session, the
//! federation rule that strips a never-verified account a verified identity
//! claims — and the
//! **lock order** below, which only this module has to keep.
//!
//! The row-level primitives stay with their tables (`session`,
//! `tokens::refresh`, `tokens`, `identity`, `mfa`, `revocation`); none of
//! them calls another module's primitive. This module calls them, in order,
//! inside one transaction, and wakes the revocation feed after commit.
//!
//! What a revocation reaches: ending a session on purpose revokes the
//! refresh-token families that came from it, deletes its opaque access
//! tokens and records a [`Revoked::Session`] event for the feed (its JWT
//! access tokens carry its `sid`). Every ended session gets its own event,
//! also when a user-wide [`Revoked::Subject`] event is recorded with it: the
//! subject event only covers tokens with `iat <=` its time, which a token
//! minted by an instance whose clock runs ahead can escape; its `sid`
//! cannot. A session that merely expires, or is evicted by the per-user
//! limit, is not revoked: its refresh tokens keep their own idle and
//! absolute limits.
//!
//! Architecture invariant — **lock order of revoking transactions**. So that
//! two revocations running at once on PostgreSQL cannot deadlock, every
//! transaction here touches rows in this order:
//!
//! 1. the `users` row (updated first when the revocation is user-wide, so two
//!    revocations of one user queue on it), then the user's own rows (second
//!    factors, roles);
//! 2. `refresh_tokens`, then `refresh_families`;
//! 3. `sessions`;
//! 4. `opaque_access_tokens` / `revoked_access_tokens`;
//! 5. **last**, the revocation events (`revocation::record_tx`, whose counter
//!    row lock is held until commit) — [`Ended::record_tx`].
//!
//! A session's families are therefore revoked *before* its row is deleted;
//! on SQLite that first statement is also the write a transaction must start
//! with (one that reads and then writes fails at once when another write
//! commits in between).
//!
//! Must not: know about HTTP or cookies; write audit records (callers write
//! them with what a function here returns) — except the refresh-token retry
//! within the reuse grace, recorded in the rotation's own transaction so a
//! successor is never answered unaudited; hold SQL of its own.

use crate::clock::UnixTime;
use crate::config::TokenConfig;
use crate::crypto::SecretToken;
use crate::identity::{self, IdentityError};
use crate::revocation::{self, Cause, Initiator, Revoked};
use crate::scope::Scope;
use crate::session::{self, Session};
use crate::store::{Pool, StoreError, Tx};
use crate::tokens::refresh::{self, RefreshError, Rotated, Rotation, SessionSelector};
use crate::tokens::{self, CodeIssue, CodeIssueRevoked};

/// Sessions ended inside a revoking transaction whose revocation events are
/// still to be recorded. [`Ended::record_tx`] records them and must be the
/// last thing the transaction does (the lock order above).
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

    /// Records one [`Revoked::Session`] event per ended session, then the
    /// [`Revoked::Subject`] event if the revocation is user-wide. Last
    /// statements of the transaction: the caller commits right after.
    /// Returns how many session rows were deleted.
    async fn record_tx(self, tx: &mut Tx<'_>, cause: &Cause) -> Result<u64, sqlx::Error> {
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
        Ok(self.handles.len() as u64)
    }
}

/// Ends the session behind a cookie value (sign-out). Returns it if it existed.
pub async fn end_session(
    pool: &Pool,
    token: &SecretToken,
    cause: &Cause,
) -> Result<Option<Session>, StoreError> {
    let hash = token.hash();
    let mut tx = pool.begin().await?;
    refresh::revoke_for_sessions_tx(
        &mut tx,
        SessionSelector::IdHash(hash.as_str()),
        &cause.reason,
        cause.now,
    )
    .await?;
    // No such session: nothing to revoke (dropping `tx` rolls back).
    let Some(session) = session::delete_by_id_hash_tx(&mut tx, hash.as_str()).await? else {
        return Ok(None);
    };
    tokens::delete_opaque_of_session_tx(&mut tx, &session.handle).await?;
    Ended::sessions(&session.user_id, vec![session.handle.clone()])
        .record_tx(&mut tx, cause)
        .await?;
    tx.commit().await?;
    cause.committed();
    Ok(Some(session))
}

/// Ends the session `handle` of `user_id` inside a revoking transaction, in
/// the lock order: its refresh families, the session row, its opaque access
/// tokens. The returned [`Ended`] names the session whether or not its row
/// still existed (the `bool` says whether it did): a session that already
/// expired can still have live tokens carrying its `sid`.
async fn end_by_handle_tx(
    tx: &mut Tx<'_>,
    user_id: &str,
    handle: &str,
    cause: &Cause,
) -> Result<(Ended, bool), sqlx::Error> {
    refresh::revoke_for_sessions_tx(
        tx,
        SessionSelector::Handle(handle),
        &cause.reason,
        cause.now,
    )
    .await?;
    let deleted = session::delete_by_handle_tx(tx, user_id, handle).await?;
    tokens::delete_opaque_of_session_tx(tx, handle).await?;
    Ok((Ended::sessions(user_id, vec![handle.to_owned()]), deleted))
}

/// Ends one of the user's sessions by handle (and its refresh families);
/// `false` if it is not theirs.
pub async fn revoke_session(
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
/// per ended session: the kept session's tokens stay valid). Returns the
/// sessions ended.
pub async fn revoke_other_sessions(
    pool: &Pool,
    user_id: &str,
    keep_handle: &str,
    cause: &Cause,
) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await?;
    // Families first; those of sessions that already expired go too.
    let family_sids = refresh::revoke_for_user_tx(
        &mut tx,
        user_id,
        Some(keep_handle),
        &cause.reason,
        cause.now,
    )
    .await?;
    let handles = session::delete_others_tx(&mut tx, user_id, keep_handle).await?;
    for handle in &handles {
        tokens::delete_opaque_of_session_tx(&mut tx, handle).await?;
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
/// user issued until now is revoked. Returns the sessions ended.
pub async fn revoke_all_sessions(
    pool: &Pool,
    user_id: &str,
    cause: &Cause,
) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await?;
    let n = end_all_of_user_tx(&mut tx, user_id, cause)
        .await?
        .record_tx(&mut tx, cause)
        .await?;
    tx.commit().await?;
    cause.committed();
    Ok(n)
}

/// Revokes every refresh family of the user, deletes every session of the
/// user and their opaque access tokens (steps 2–4 of the lock order). The
/// returned [`Ended`] records one event per deleted session and the
/// user-wide event: the caller records it last, after any other write.
async fn end_all_of_user_tx(
    tx: &mut Tx<'_>,
    user_id: &str,
    cause: &Cause,
) -> Result<Ended, sqlx::Error> {
    let family_sids =
        refresh::revoke_for_user_tx(tx, user_id, None, &cause.reason, cause.now).await?;
    let handles = session::delete_all_of_user_tx(tx, user_id).await?;
    tokens::delete_opaque_of_subject_tx(tx, user_id).await?;
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

/// Disables or enables a user. Disabling also ends every session of the user
/// in the same transaction (a disabled user loses all sessions at once) and
/// records a revocation event for every token issued to them until `now`.
/// Returns the sessions ended.
pub async fn set_user_disabled(
    pool: &Pool,
    user_id: &str,
    disabled: bool,
    now: UnixTime,
) -> Result<u64, IdentityError> {
    let mut tx = pool.begin().await?;
    if !identity::set_disabled_tx(&mut tx, user_id, disabled, now).await? {
        return Err(IdentityError::UnknownUser(user_id.to_owned()));
    }
    if !disabled {
        tx.commit().await?;
        return Ok(0);
    }
    let cause = Cause::new(now, Initiator::Admin, "user disabled");
    let ended = end_all_of_user_tx(&mut tx, user_id, &cause)
        .await?
        .record_tx(&mut tx, &cause)
        .await?;
    tx.commit().await?;
    cause.committed();
    Ok(ended)
}

/// Deletes a user; roles and sessions go with it (foreign keys cascade, and
/// rows are deleted explicitly too so SQLite without FK enforcement agrees),
/// and revocation events revoke every session of theirs and every token
/// issued to them until `now`.
pub async fn delete_user(pool: &Pool, user_id: &str, now: UnixTime) -> Result<(), IdentityError> {
    let mut tx = pool.begin().await?;
    // The users row first; it also tells whether the user exists.
    if !identity::touch_tx(&mut tx, user_id, now).await? {
        return Err(IdentityError::UnknownUser(user_id.to_owned()));
    }
    let cause = Cause::new(now, Initiator::Admin, "user deleted");
    let ended = end_all_of_user_tx(&mut tx, user_id, &cause).await?;
    crate::federation::store::delete_of_user_tx(&mut tx, user_id).await?;
    identity::delete_rows_tx(&mut tx, user_id).await?;
    ended.record_tx(&mut tx, &cause).await?;
    tx.commit().await?;
    cause.committed();
    Ok(())
}

/// Whether [`clear_unverified_account_and_link`] found the account still unverified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleared {
    /// Credentials removed, identity linked; sessions ended.
    Done { sessions_ended: u64 },
    /// The account was verified meanwhile (or is gone): nothing changed.
    NotUnverified,
}

/// The federation "squatter" rule: a verified federated sign-in claims the
/// email of a local account whose owner never verified it. In **one**
/// transaction, before anything is linked: the password goes and the email
/// is marked verified (the `users` row, first), every second factor and
/// passkey goes, the federated identity is linked, every refresh family,
/// session and opaque token of the account ends, and the revocation events
/// are recorded last. A concurrent verification of the account makes it a
/// no-op ([`Cleared::NotUnverified`]).
pub async fn clear_unverified_account_and_link(
    pool: &Pool,
    user_id: &str,
    provider: &str,
    subject: &str,
    email: &str,
    cause: &Cause,
) -> Result<Cleared, StoreError> {
    let mut tx = pool.begin().await?;
    if !identity::clear_password_and_verify_tx(&mut tx, user_id, cause.now).await? {
        return Ok(Cleared::NotUnverified);
    }
    crate::mfa::reset_all_tx(&mut tx, user_id).await?;
    crate::federation::store::link_tx(&mut tx, provider, subject, user_id, email, cause.now)
        .await?;
    let ended = end_all_of_user_tx(&mut tx, user_id, cause)
        .await?
        .record_tx(&mut tx, cause)
        .await?;
    tx.commit().await?;
    cause.committed();
    Ok(Cleared::Done {
        sessions_ended: ended,
    })
}

/// `latchkey user reset-mfa`: removes every second factor
/// (`mfa::reset_all`) **and** ends every session of the user, with their
/// refresh families and the revocation events, all in one transaction — a
/// failure leaves the factors and the sessions as they were. Returns the
/// sessions ended.
pub async fn reset_mfa_and_end_sessions(
    pool: &Pool,
    user_id: &str,
    cause: &Cause,
) -> Result<u64, StoreError> {
    let mut tx = pool.begin().await?;
    identity::touch_tx(&mut tx, user_id, cause.now).await?;
    crate::mfa::reset_all_tx(&mut tx, user_id).await?;
    let ended = end_all_of_user_tx(&mut tx, user_id, cause)
        .await?
        .record_tx(&mut tx, cause)
        .await?;
    tx.commit().await?;
    cause.committed();
    Ok(ended)
}

/// Revokes everything a replayed authorization code issued (invariant 7),
/// in **one** transaction: the refresh family; the sign-in session the
/// family (and so every access token minted by refreshing it, all carrying
/// that `sid`) belongs to — ended like on refresh-token reuse, with its
/// other families and opaque tokens; the first access token's `jti` on the
/// denylist; and, last, the revocation events (a session event, a token
/// event). JWT access tokens are not tracked per family, so the session
/// event is what reaches the ones minted by refreshing.
///
/// A second replay records nothing new: the session event is recorded when
/// this call revokes the family or ends the session, the token event when
/// it denies the `jti`. Returns what this call revoked (for the audit log).
pub async fn revoke_code_issue(
    pool: &Pool,
    issue: CodeIssue<'_>,
    leeway_secs: i64,
    cause: &Cause,
) -> Result<CodeIssueRevoked, StoreError> {
    let mut tx = pool.begin().await?;
    let mut ended = None;
    let mut revoked = CodeIssueRevoked::default();
    if let Some(family) = issue.family {
        let newly_revoked =
            refresh::revoke_family_tx(&mut tx, family, &cause.reason, cause.now).await?;
        revoked.family = newly_revoked;
        if let Some(handle) = refresh::session_of_family_tx(&mut tx, family).await? {
            let (session, deleted) =
                end_by_handle_tx(&mut tx, issue.user_id, &handle, cause).await?;
            if deleted {
                revoked.session = Some(handle.clone());
            }
            if newly_revoked || deleted {
                ended = Some(session);
            }
        }
    }
    let mut denied = None;
    if let Some(token) = issue.access_token {
        if tokens::deny_jti_tx(&mut tx, token, leeway_secs).await? {
            denied = Some(token);
        }
    }
    if let Some(ended) = ended {
        ended.record_tx(&mut tx, cause).await?;
    }
    if let Some(token) = denied {
        revocation::record_tx(&mut tx, &token.revoked(), cause).await?;
        revoked.access_token = true;
    }
    tx.commit().await?;
    cause.committed();
    Ok(revoked)
}

/// Rotates the refresh token `presented` for `client_id` (`requested` may
/// narrow the scope), in one transaction. A token already spent is reuse:
/// its whole family is revoked and the sign-in session it came from is
/// ended (with its revocation event), then [`RefreshError::Reused`].
pub async fn rotate_refresh_token(
    pool: &Pool,
    config: &TokenConfig,
    presented: &SecretToken,
    client_id: &str,
    requested: Option<&Scope>,
    now: UnixTime,
) -> Result<Rotated, RefreshError> {
    let mut tx = pool.begin().await?;
    match refresh::rotate_tx(&mut tx, config, presented, client_id, requested, now).await? {
        Rotation::Rotated(rotated) => {
            if let Some(since_spent) = rotated.grace_retry {
                let event = crate::audit::Event {
                    actor: client_id.to_owned(),
                    subject: rotated.family.user_id.clone(),
                    detail: format!(
                        "refresh token presented again {since_spent} s after it was spent, within the reuse grace: family {} answered with a fresh successor, the unused one superseded",
                        rotated.family.id
                    ),
                    ..crate::audit::Event::default()
                };
                crate::audit::record_tx(
                    &mut tx,
                    crate::audit::EventKind::RefreshTokenRetried,
                    event,
                    now,
                )
                .await?;
            }
            tx.commit().await?;
            Ok(rotated)
        }
        Rotation::Refused(error) => {
            tx.rollback().await?;
            Err(error)
        }
        Rotation::Reused {
            family,
            family_was_revoked,
        } => {
            let cause = Cause::new(now, Initiator::Policy, "refresh token reuse");
            if !family_was_revoked {
                refresh::revoke_family_tx(&mut tx, &family.id, "reuse", now).await?;
                if let Some(handle) = &family.session_handle {
                    let (ended, _) =
                        end_by_handle_tx(&mut tx, &family.user_id, handle, &cause).await?;
                    ended.record_tx(&mut tx, &cause).await?;
                }
            }
            tx.commit().await?;
            cause.committed();
            Err(RefreshError::Reused {
                family_id: family.id,
                user_id: family.user_id,
                session_handle: family.session_handle,
            })
        }
    }
}
