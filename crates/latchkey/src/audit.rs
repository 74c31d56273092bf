//! Audit log: an append-only table of security events.
//!
//! Owns: the `audit_events` table, the event kinds ([`EventKind`]), writing
//! and reading events. Nothing updates or deletes audit rows.
//!
//! Must not: hold secrets. Events carry ids, emails, IPs and user agents —
//! never passwords, tokens, codes or session ids.

use sqlx::Row as _;

use crate::clock::UnixTime;
use crate::store::{Pool, StoreError, Tx};

/// The security events Latchkey records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    LoginSucceeded,
    LoginFailed,
    LoginLockedOut,
    Logout,
    SessionRevoked,
    UserCreated,
    UserImported,
    UserDisabled,
    UserEnabled,
    UserDeleted,
    RolesChanged,
    PasswordRehashed,
    PasswordChanged,
    AccessDenied,
    RefreshTokenReuse,
    RefreshTokenRetried,
    MfaEnabled,
    MfaDisabled,
    MfaReset,
    RecoveryCodesRegenerated,
    RecoveryCodeUsed,
    TotpReplayRefused,
    PasskeyRegistered,
    PasskeyRenamed,
    PasskeyDeleted,
    PasskeyCloneSuspected,
    AuthorizationCodeReplay,
    ConsentGranted,
    ConsentRevoked,
    SigningKeyRotated,
    SigningKeyRetired,
    FederationRefused,
    FederatedIdentityLinked,
    FederatedIdentityUnlinked,
    FederationLinkPending,
    FederationAccountCleared,
    FederationProviderChanged,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::LoginSucceeded => "login_succeeded",
            EventKind::LoginFailed => "login_failed",
            EventKind::LoginLockedOut => "login_locked_out",
            EventKind::Logout => "logout",
            EventKind::SessionRevoked => "session_revoked",
            EventKind::UserCreated => "user_created",
            EventKind::UserImported => "user_imported",
            EventKind::UserDisabled => "user_disabled",
            EventKind::UserEnabled => "user_enabled",
            EventKind::UserDeleted => "user_deleted",
            EventKind::RolesChanged => "roles_changed",
            EventKind::PasswordRehashed => "password_rehashed",
            EventKind::PasswordChanged => "password_changed",
            EventKind::AccessDenied => "access_denied",
            EventKind::RefreshTokenReuse => "refresh_token_reuse",
            EventKind::RefreshTokenRetried => "refresh_token_retried",
            EventKind::MfaEnabled => "mfa_enabled",
            EventKind::MfaDisabled => "mfa_disabled",
            EventKind::MfaReset => "mfa_reset",
            EventKind::RecoveryCodesRegenerated => "recovery_codes_regenerated",
            EventKind::RecoveryCodeUsed => "recovery_code_used",
            EventKind::TotpReplayRefused => "totp_replay_refused",
            EventKind::PasskeyRegistered => "passkey_registered",
            EventKind::PasskeyRenamed => "passkey_renamed",
            EventKind::PasskeyDeleted => "passkey_deleted",
            EventKind::PasskeyCloneSuspected => "passkey_clone_suspected",
            EventKind::AuthorizationCodeReplay => "authorization_code_replay",
            EventKind::ConsentGranted => "consent_granted",
            EventKind::ConsentRevoked => "consent_revoked",
            EventKind::SigningKeyRotated => "signing_key_rotated",
            EventKind::SigningKeyRetired => "signing_key_retired",
            EventKind::FederationRefused => "federation_refused",
            EventKind::FederatedIdentityLinked => "federated_identity_linked",
            EventKind::FederatedIdentityUnlinked => "federated_identity_unlinked",
            EventKind::FederationLinkPending => "federation_link_pending",
            EventKind::FederationAccountCleared => "federation_account_cleared",
            EventKind::FederationProviderChanged => "federation_provider_changed",
        }
    }
}

/// One event to record. `actor` is who acted (user id, `cli`, or empty for
/// an anonymous visitor); `subject` is who it concerned.
#[derive(Debug, Clone, Default)]
pub struct Event {
    pub actor: String,
    pub subject: String,
    pub ip: String,
    pub user_agent: String,
    pub detail: String,
}

/// An event as read back.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecordedEvent {
    pub id: String,
    pub at: UnixTime,
    pub kind: String,
    pub actor: String,
    pub subject: String,
    pub ip: String,
    pub user_agent: String,
    pub detail: String,
}

/// Appends one event.
pub async fn record(
    pool: &Pool,
    kind: EventKind,
    event: Event,
    now: UnixTime,
) -> Result<(), StoreError> {
    insert(kind, &event, now).execute(pool).await?;
    Ok(())
}

/// Appends one event inside `tx`, so it commits (or not) with what it records.
pub async fn record_tx(
    tx: &mut Tx<'_>,
    kind: EventKind,
    event: Event,
    now: UnixTime,
) -> Result<(), StoreError> {
    insert(kind, &event, now).execute(&mut **tx).await?;
    Ok(())
}

fn insert(
    kind: EventKind,
    event: &Event,
    now: UnixTime,
) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments<'static>> {
    sqlx::query(
        "INSERT INTO audit_events (id, at, kind, actor, subject, ip, user_agent, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(now)
    .bind(kind.as_str())
    .bind(clip(&event.actor, 128))
    .bind(clip(&event.subject, 320))
    .bind(clip(&event.ip, 64))
    .bind(clip(&event.user_agent, 256))
    .bind(clip(&event.detail, 512))
}

fn clip(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// The newest `limit` events, oldest first (like `tail`).
pub async fn tail(pool: &Pool, limit: i64) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, at, kind, actor, subject, ip, user_agent, detail FROM audit_events ORDER BY id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut events = rows
        .iter()
        .map(event_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    events.reverse();
    Ok(events)
}

/// Events recorded after the event with id `after` (for `audit tail --follow`).
pub async fn since(pool: &Pool, after: &str, limit: i64) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, at, kind, actor, subject, ip, user_agent, detail FROM audit_events WHERE id > $1 ORDER BY id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(event_from_row)
        .collect::<Result<Vec<_>, _>>()?)
}

fn event_from_row(row: &sqlx::any::AnyRow) -> Result<RecordedEvent, sqlx::Error> {
    Ok(RecordedEvent {
        id: row.try_get("id")?,
        at: row.try_get("at")?,
        kind: row.try_get("kind")?,
        actor: row.try_get("actor")?,
        subject: row.try_get("subject")?,
        ip: row.try_get("ip")?,
        user_agent: row.try_get("user_agent")?,
        detail: row.try_get("detail")?,
    })
}
