//! Revocation events: the durable, ordered record of every revocation that
//! makes access tokens invalid before they expire, which APIs follow through
//! the revocation feed ([`feed`]) to refuse revoked tokens within a second
//! without calling Latchkey per request.
//!
//! Owns: the `revocation_events` and `revocation_feed_head` tables, the three
//! kinds of event ([`Revoked`]), the Security Event Token (RFC 8417) each one
//! is published as, and the question "does an event revoke this token?"
//! ([`is_revoked`], asked by introspection so the server and the feed agree
//! on what is revoked).
//!
//! What is recorded, always **inside the transaction of the revocation it
//! reports** (invariant 11: an event exists if and only if the revocation
//! committed):
//!
//! - a session ended on purpose (sign-out, revocation of one session, "sign
//!   out other sessions", a password change, refresh-token reuse,
//!   authorization-code replay): [`Revoked::Session`] — every token carrying
//!   that `sid`;
//! - all of a user's sessions and tokens (disable, delete, `user logout-all`,
//!   `user reset-mfa`): one [`Revoked::Session`] per ended session **and**
//!   [`Revoked::Subject`] — every token of that `sub` issued at or before
//!   the event (the per-session events do not depend on clocks agreeing);
//! - one access token revoked (RFC 7009, and the first access token of a
//!   replayed authorization code): [`Revoked::Token`] — that `jti`;
//! - a user withdrew their consent to a client, or a client was deleted:
//!   [`Revoked::Grant`] — every token the client holds for that user (or for
//!   anyone, when the client is deleted) issued at or before the event.
//!
//! **Ordering (architecture invariant).** Each event takes its sequence number
//! from the one-row counter `revocation_feed_head` with
//! `UPDATE … SET seq = seq + 1 … RETURNING seq` in the revocation's own
//! transaction. The row lock that UPDATE takes is held until commit, so a
//! second writer waits for the first to commit before it gets the next
//! number: sequence order is commit order and there are no gaps (a rolled
//! back transaction gives its number back). A reader that has seen seq N has
//! therefore seen every event up to N, and a consumer resuming with
//! `Last-Event-ID: N` can never miss an event that committed late. A database
//! sequence or autoincrement would not give this: on PostgreSQL a transaction
//! can draw 7, commit after another drew 8, and a reader that already
//! returned 8 would skip 7 for ever. The counter is taken as the **last**
//! statement of each transaction, so the lock is held only for the commit.
//!
//! Must not: know about HTTP or SSE (that is `routes::revocations`), or
//! decide who may revoke what (the callers do).

pub mod feed;

use std::sync::Arc;

use serde_json::{json, Value};
use sqlx::Row as _;

use crate::clock::UnixTime;
use crate::store::{Pool, StoreError, Tx};

/// The scope a client-credentials token needs to read the feed.
pub const FEED_SCOPE: &str = "latchkey:revocations";
/// Header `typ` of the feed's Security Event Tokens (RFC 8417 §2.3).
pub const SET_TYP: &str = "secevent+jwt";
/// CAEP "session revoked" (OpenID CAEP 1.0 §3.1).
pub const SESSION_REVOKED: &str =
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
/// Latchkey's own event type: one access token revoked.
pub const TOKEN_REVOKED: &str = "urn:latchkey:secevent:token-revoked";
/// Latchkey's own event type: what a client was granted is withdrawn (by one
/// user, or for everyone when the client is deleted).
pub const GRANT_REVOKED: &str = "urn:latchkey:secevent:grant-revoked";

/// Who set a revocation in motion (CAEP `initiating_entity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator {
    /// The user themselves (sign-out, their account page, a password change).
    User,
    /// An operator (the CLI, the admin console).
    Admin,
    /// A security rule (refresh-token reuse, authorization-code replay).
    Policy,
    /// Latchkey itself, or a client acting for itself (RFC 7009 revocation).
    System,
}

impl Initiator {
    pub fn as_str(self) -> &'static str {
        match self {
            Initiator::User => "user",
            Initiator::Admin => "admin",
            Initiator::Policy => "policy",
            Initiator::System => "system",
        }
    }

    fn from_stored(text: &str) -> Initiator {
        match text {
            "user" => Initiator::User,
            "admin" => Initiator::Admin,
            "policy" => Initiator::Policy,
            _ => Initiator::System,
        }
    }
}

/// Why, when and by whom something is revoked; handed to every domain
/// function that revokes. When it carries this instance's feed
/// ([`Cause::waking`]), the feed is woken as soon as the revocation commits
/// (otherwise it notices at its next poll).
#[derive(Clone)]
pub struct Cause {
    pub now: UnixTime,
    pub initiator: Initiator,
    pub reason: String,
    waker: Option<Arc<tokio::sync::Notify>>,
}

impl std::fmt::Debug for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cause")
            .field("now", &self.now)
            .field("initiator", &self.initiator)
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

impl Cause {
    pub fn new(now: UnixTime, initiator: Initiator, reason: impl Into<String>) -> Cause {
        Cause {
            now,
            initiator,
            reason: reason.into(),
            waker: None,
        }
    }

    /// A cause at the state's clock that wakes this instance's feed on commit.
    pub fn at(state: &crate::core::Core, initiator: Initiator, reason: impl Into<String>) -> Cause {
        Cause::new(state.clock.now(), initiator, reason).waking(&state.revocation_feed)
    }

    /// Wakes `feed` when the revocation commits.
    pub fn waking(mut self, feed: &feed::RevocationFeed) -> Cause {
        self.waker = Some(feed.waker());
        self
    }

    /// Tells the feed (if any) that events were committed. Call after commit.
    pub(crate) fn committed(&self) {
        if let Some(waker) = &self.waker {
            waker.notify_one();
        }
    }
}

/// What an event revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// Every token carrying `sid = session_id` (a session ended).
    Session { subject: String, session_id: String },
    /// Every token of `subject` issued at or before the event.
    Subject { subject: String },
    /// One access token, until it expires anyway.
    Token {
        subject: String,
        jti: String,
        expires_at: UnixTime,
    },
    /// Every token of `client_id` — for `subject` only, or for every user
    /// and the client itself when `subject` is `None` — issued at or before
    /// the event (consent withdrawn, client deleted).
    Grant {
        client_id: String,
        subject: Option<String>,
    },
}

impl Revoked {
    fn kind(&self) -> &'static str {
        match self {
            Revoked::Session { .. } => "session",
            Revoked::Subject { .. } => "subject",
            Revoked::Token { .. } => "token",
            Revoked::Grant { .. } => "grant",
        }
    }

    /// The user concerned; empty for a client-wide grant event (the column
    /// is `NOT NULL`).
    fn subject(&self) -> &str {
        match self {
            Revoked::Session { subject, .. }
            | Revoked::Subject { subject }
            | Revoked::Token { subject, .. } => subject,
            Revoked::Grant { subject, .. } => subject.as_deref().unwrap_or(""),
        }
    }
}

/// A recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationEvent {
    /// Position in the feed (1, 2, 3, … in commit order, no gaps).
    pub seq: i64,
    /// The SET's `jti`: the same on every instance that publishes the event.
    pub event_id: String,
    pub revoked: Revoked,
    pub event_time: UnixTime,
    pub initiator: Initiator,
    pub reason: String,
}

/// Records an event in the revocation's transaction; returns its seq. Must be
/// the last statement of the transaction (the counter's lock lasts until commit).
pub(crate) async fn record_tx(
    tx: &mut Tx<'_>,
    revoked: &Revoked,
    cause: &Cause,
) -> Result<i64, sqlx::Error> {
    let seq: i64 =
        sqlx::query("UPDATE revocation_feed_head SET seq = seq + 1 WHERE id = 1 RETURNING seq")
            .fetch_one(&mut **tx)
            .await?
            .try_get("seq")?;
    let (session_id, jti, token_exp, client_id) = match revoked {
        Revoked::Session { session_id, .. } => (Some(session_id.as_str()), None, None, None),
        Revoked::Subject { .. } => (None, None, None, None),
        Revoked::Token {
            jti, expires_at, ..
        } => (None, Some(jti.as_str()), Some(*expires_at), None),
        Revoked::Grant { client_id, .. } => (None, None, None, Some(client_id.as_str())),
    };
    sqlx::query(
        "INSERT INTO revocation_events (seq, event_id, kind, subject, session_id, jti, token_exp, event_time, initiator, reason, client_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(seq)
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(revoked.kind())
    .bind(revoked.subject())
    .bind(session_id)
    .bind(jti)
    .bind(token_exp)
    .bind(cause.now)
    .bind(cause.initiator.as_str())
    .bind(clip(&cause.reason, 200))
    .bind(client_id)
    .execute(&mut **tx)
    .await?;
    Ok(seq)
}

fn clip(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

const EVENT_COLUMNS: &str =
    "seq, event_id, kind, subject, session_id, jti, token_exp, event_time, initiator, reason, client_id";

fn event_from_row(row: &sqlx::any::AnyRow) -> Result<RevocationEvent, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    let subject: String = row.try_get("subject")?;
    let revoked = match kind.as_str() {
        "session" => Revoked::Session {
            subject,
            session_id: row
                .try_get::<Option<String>, _>("session_id")?
                .unwrap_or_default(),
        },
        "token" => Revoked::Token {
            subject,
            jti: row.try_get::<Option<String>, _>("jti")?.unwrap_or_default(),
            expires_at: row.try_get::<Option<i64>, _>("token_exp")?.unwrap_or(0),
        },
        "grant" => Revoked::Grant {
            client_id: row
                .try_get::<Option<String>, _>("client_id")?
                .unwrap_or_default(),
            subject: (!subject.is_empty()).then_some(subject),
        },
        _ => Revoked::Subject { subject },
    };
    Ok(RevocationEvent {
        seq: row.try_get("seq")?,
        event_id: row.try_get("event_id")?,
        revoked,
        event_time: row.try_get("event_time")?,
        initiator: Initiator::from_stored(&row.try_get::<String, _>("initiator")?),
        reason: row.try_get("reason")?,
    })
}

/// Events after `after_seq` whose `event_time` is after `not_before`, in
/// order, at most `limit`.
pub async fn events_after(
    pool: &Pool,
    after_seq: i64,
    not_before: UnixTime,
    limit: i64,
) -> Result<Vec<RevocationEvent>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM revocation_events WHERE seq > $1 AND event_time > $2 ORDER BY seq LIMIT $3"
    ))
    .bind(after_seq)
    .bind(not_before)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(event_from_row).collect::<Result<_, _>>()?)
}

/// Deletes events that happened at or before `before` (the maintenance loop
/// passes now − [`retention_secs`]).
pub async fn purge_older_than(pool: &Pool, before: UnixTime) -> Result<u64, StoreError> {
    Ok(
        sqlx::query("DELETE FROM revocation_events WHERE event_time <= $1")
            .bind(before)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}

/// How long events are kept: the longest lifetime a JWT access token can
/// have (capped by `KeyRing::max_token_lifetime_secs`), plus leeway. After
/// that every token an event could concern has expired anyway. (Opaque access
/// tokens may live longer, but they are deleted with their session or user,
/// so they never depend on an event.)
pub fn retention_secs(max_token_lifetime_secs: i64, leeway_secs: i64) -> i64 {
    max_token_lifetime_secs + leeway_secs
}

/// What a token says about itself, for [`is_revoked`].
#[derive(Debug, Clone, Copy)]
pub struct TokenFacts<'a> {
    pub jti: &'a str,
    pub session_id: Option<&'a str>,
    pub subject: &'a str,
    pub client_id: &'a str,
    pub issued_at: UnixTime,
}

/// Does a recorded event revoke this token? The same rule the SDK applies to
/// the feed: its `jti`, its `sid`, its `sub` with `iat <=` the event, or its
/// `client_id` (and `sub`, unless the event is client-wide) with `iat <=`
/// the event.
pub async fn is_revoked(pool: &Pool, token: TokenFacts<'_>) -> Result<bool, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT 1 AS hit FROM revocation_events WHERE {COVERS_TOKEN} LIMIT 1"
    ))
    .bind(token.jti)
    // A token without a session matches no session event (`= NULL` is never true).
    .bind(token.session_id)
    .bind(token.subject)
    .bind(token.issued_at)
    .bind(token.client_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.is_some())
}

/// The condition on `revocation_events` under which an event covers a
/// token, with the token's facts bound as `$1` jti, `$2` session id, `$3`
/// subject, `$4` issued-at and `$5` client id — the one copy of the rule,
/// for [`is_revoked`] and for statements that check more in the same round
/// trip (`tokens::introspect`).
pub(crate) const COVERS_TOKEN: &str = "((kind = 'token' AND jti = $1)
            OR (kind = 'session' AND session_id = $2)
            OR (kind = 'subject' AND subject = $3 AND event_time >= $4)
            OR (kind = 'grant' AND client_id = $5 AND (subject = $3 OR subject = '') AND event_time >= $4))";

/// The claims of the Security Event Token (RFC 8417) that publishes `event`.
/// `exp` is when the feed forgets the event (`retain_until`): nothing it
/// concerns can still be valid after it.
pub fn security_event_token(event: &RevocationEvent, issuer: &str, retention_secs: i64) -> Value {
    let retain_until = event.event_time + retention_secs;
    let user = json!({ "format": "iss_sub", "iss": issuer, "sub": event.revoked.subject() });
    let (event_type, body) = match &event.revoked {
        Revoked::Session { session_id, .. } => (
            SESSION_REVOKED,
            json!({
                "subject": {
                    "format": "complex",
                    "session": { "format": "opaque", "id": session_id },
                    "user": user,
                },
                "event_timestamp": event.event_time,
                "initiating_entity": event.initiator.as_str(),
                "reason_admin": { "en": event.reason },
                "retain_until": retain_until,
            }),
        ),
        Revoked::Subject { .. } => (
            SESSION_REVOKED,
            json!({
                "subject": user,
                "event_timestamp": event.event_time,
                "initiating_entity": event.initiator.as_str(),
                "reason_admin": { "en": event.reason },
                "retain_until": retain_until,
            }),
        ),
        Revoked::Token {
            subject,
            jti,
            expires_at,
        } => (
            TOKEN_REVOKED,
            json!({
                "subject": { "format": "opaque", "id": jti },
                "sub": subject,
                "exp": expires_at,
                "event_timestamp": event.event_time,
                "initiating_entity": event.initiator.as_str(),
                "reason_admin": { "en": event.reason },
                "retain_until": retain_until,
            }),
        ),
        Revoked::Grant { client_id, subject } => {
            let mut who = json!({
                "format": "complex",
                "client": { "format": "opaque", "id": client_id },
            });
            if let Some(sub) = subject {
                who["user"] = json!({ "format": "iss_sub", "iss": issuer, "sub": sub });
            }
            (
                GRANT_REVOKED,
                json!({
                    "subject": who,
                    "event_timestamp": event.event_time,
                    "initiating_entity": event.initiator.as_str(),
                    "reason_admin": { "en": event.reason },
                    "retain_until": retain_until,
                }),
            )
        }
    };
    json!({
        "iss": issuer,
        "jti": event.event_id,
        "iat": event.event_time,
        "exp": retain_until,
        "events": { event_type: body },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(revoked: Revoked) -> RevocationEvent {
        RevocationEvent {
            seq: 7,
            event_id: "0193-event".into(),
            revoked,
            event_time: 1_000,
            initiator: Initiator::User,
            reason: "signed out".into(),
        }
    }

    #[test]
    fn session_event_is_a_caep_session_revoked_set_with_a_complex_subject() {
        let set = security_event_token(
            &event(Revoked::Session {
                subject: "user-1".into(),
                session_id: "sid-1".into(),
            }),
            "https://id.example.com",
            3_630,
        );
        assert_eq!(set["iss"], "https://id.example.com");
        assert_eq!(set["jti"], "0193-event");
        assert_eq!(set["iat"], 1_000);
        assert_eq!(set["exp"], 4_630);
        let body = &set["events"][SESSION_REVOKED];
        assert_eq!(body["subject"]["format"], "complex");
        assert_eq!(body["subject"]["session"]["id"], "sid-1");
        assert_eq!(body["subject"]["user"]["sub"], "user-1");
        assert_eq!(body["subject"]["user"]["iss"], "https://id.example.com");
        assert_eq!(body["event_timestamp"], 1_000);
        assert_eq!(body["initiating_entity"], "user");
        assert_eq!(body["reason_admin"]["en"], "signed out");
        assert_eq!(body["retain_until"], 4_630);
    }

    #[test]
    fn subject_event_names_the_user_only_and_token_event_the_jti() {
        let set = security_event_token(
            &event(Revoked::Subject {
                subject: "user-1".into(),
            }),
            "https://id.example.com",
            100,
        );
        let body = &set["events"][SESSION_REVOKED];
        assert_eq!(body["subject"]["format"], "iss_sub");
        assert_eq!(body["subject"]["sub"], "user-1");
        assert!(body["subject"].get("session").is_none());

        let set = security_event_token(
            &event(Revoked::Token {
                subject: "user-1".into(),
                jti: "jti-1".into(),
                expires_at: 1_900,
            }),
            "https://id.example.com",
            100,
        );
        let body = &set["events"][TOKEN_REVOKED];
        assert_eq!(body["subject"], json!({"format": "opaque", "id": "jti-1"}));
        assert_eq!(body["exp"], 1_900);
        assert_eq!(body["sub"], "user-1");
    }

    #[test]
    fn grant_event_names_the_client_and_the_user_unless_client_wide() {
        let set = security_event_token(
            &event(Revoked::Grant {
                client_id: "app".into(),
                subject: Some("user-1".into()),
            }),
            "https://id.example.com",
            100,
        );
        let body = &set["events"][GRANT_REVOKED];
        assert_eq!(body["subject"]["format"], "complex");
        assert_eq!(
            body["subject"]["client"],
            json!({"format": "opaque", "id": "app"})
        );
        assert_eq!(
            body["subject"]["user"],
            json!({"format": "iss_sub", "iss": "https://id.example.com", "sub": "user-1"})
        );
        assert_eq!(body["event_timestamp"], 1_000);

        let set = security_event_token(
            &event(Revoked::Grant {
                client_id: "app".into(),
                subject: None,
            }),
            "https://id.example.com",
            100,
        );
        let body = &set["events"][GRANT_REVOKED];
        assert_eq!(body["subject"]["client"]["id"], "app");
        assert!(body["subject"].get("user").is_none());
    }
}
