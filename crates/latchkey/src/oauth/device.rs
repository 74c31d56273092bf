//! Device authorization grant (RFC 8628): TVs and CLIs.
//!
//! The device gets a 256-bit `device_code` (stored as SHA-256) and shows the
//! user an 8-character `user_code` from an alphabet without vowels or
//! look-alikes (`BCDFGHJKLMNPQRSTVWXZ`, 20⁸ ≈ 2³⁴·⁶ codes), written
//! `XXXX-XXXX`. The user approves at `/device`; the device polls the token
//! endpoint. Polling faster than `interval` answers `slow_down` and adds 5 s.
//! Guessing user codes is throttled like sign-in (per user and per IP).

use sqlx::Row as _;

use crate::clock::{seconds_of, UnixTime};
use crate::crypto::{random_bytes, SecretToken, TokenHash};
use crate::policy::{self, Arrival, Refusal, SignInFacts, Verdict};
use crate::scope::Scope;
use crate::store::{Pool, StoreError};

pub const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
pub const DEVICE_CODE_LIFETIME_SECS: i64 = 600;
pub const DEFAULT_INTERVAL_SECS: i64 = 5;

/// A user code, normalized to 8 upper-case letters of the alphabet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCode(String);

impl UserCode {
    pub fn generate() -> UserCode {
        // Rejection sampling keeps the distribution uniform.
        let mut out = String::with_capacity(8);
        while out.len() < 8 {
            for b in random_bytes::<16>() {
                if b < 240 && out.len() < 8 {
                    out.push(USER_CODE_ALPHABET[(b % 20) as usize] as char);
                }
            }
        }
        UserCode(out)
    }

    /// Accepts what people type: any case, with or without the dash or spaces.
    pub fn parse(text: &str) -> Option<UserCode> {
        let cleaned: String = text
            .chars()
            .filter(|c| !matches!(c, '-' | ' '))
            .map(|c| c.to_ascii_uppercase())
            .collect();
        (cleaned.len() == 8 && cleaned.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)))
            .then_some(UserCode(cleaned))
    }

    pub fn normalized(&self) -> &str {
        &self.0
    }

    /// `XXXX-XXXX`, as shown to people.
    pub fn display(&self) -> String {
        format!("{}-{}", &self.0[..4], &self.0[4..])
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Pending,
    Approved,
    Denied,
    Used,
}

impl Status {
    fn parse(s: &str) -> Status {
        match s {
            "approved" => Status::Approved,
            "denied" => Status::Denied,
            "used" => Status::Used,
            _ => Status::Pending,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DeviceAuthorization {
    pub user_code: UserCode,
    pub client_id: String,
    pub scope: Scope,
    pub status: Status,
    pub user_id: Option<String>,
    pub session_handle: Option<String>,
    pub auth_time: Option<UnixTime>,
    pub amr: Vec<String>,
    pub interval_secs: i64,
    pub last_polled_at: Option<UnixTime>,
    pub expires_at: UnixTime,
    /// When the device asked (the request a sign-in must answer).
    pub created_at: UnixTime,
}

const COLUMNS: &str = "device_code_hash, user_code, client_id, scope, status, user_id, session_handle, auth_time, amr, interval_secs, last_polled_at, expires_at, created_at";

fn from_row(row: &sqlx::any::AnyRow) -> Result<DeviceAuthorization, sqlx::Error> {
    Ok(DeviceAuthorization {
        user_code: UserCode(row.try_get("user_code")?),
        client_id: row.try_get("client_id")?,
        scope: Scope::from_stored(&row.try_get::<String, _>("scope")?),
        status: Status::parse(&row.try_get::<String, _>("status")?),
        user_id: row.try_get("user_id")?,
        session_handle: row.try_get("session_handle")?,
        auth_time: row.try_get("auth_time")?,
        amr: row
            .try_get::<Option<String>, _>("amr")?
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        interval_secs: row.try_get("interval_secs")?,
        last_polled_at: row.try_get("last_polled_at")?,
        expires_at: row.try_get("expires_at")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Starts a device authorization; returns the device code and the record.
pub async fn start(
    pool: &Pool,
    client_id: &str,
    scope: &Scope,
    now: UnixTime,
) -> Result<(SecretToken, DeviceAuthorization), StoreError> {
    let device_code = SecretToken::generate();
    // A user-code collision among live codes is astronomically rare; retry on one.
    for _ in 0..5 {
        let user_code = UserCode::generate();
        let inserted = sqlx::query(&format!("INSERT INTO device_authorizations ({COLUMNS}) VALUES ($1, $2, $3, $4, 'pending', NULL, NULL, NULL, NULL, $5, NULL, $6, $7)"))
            .bind(device_code.hash().as_str())
            .bind(user_code.normalized())
            .bind(client_id)
            .bind(scope.to_string())
            .bind(DEFAULT_INTERVAL_SECS)
            .bind(now + DEVICE_CODE_LIFETIME_SECS)
            .bind(now)
            .execute(pool)
            .await;
        match inserted.map_err(StoreError::from) {
            Ok(_) => {
                let record = DeviceAuthorization {
                    user_code,
                    client_id: client_id.to_owned(),
                    scope: scope.clone(),
                    status: Status::Pending,
                    user_id: None,
                    session_handle: None,
                    auth_time: None,
                    amr: Vec::new(),
                    interval_secs: DEFAULT_INTERVAL_SECS,
                    last_polled_at: None,
                    expires_at: now + DEVICE_CODE_LIFETIME_SECS,
                    created_at: now,
                };
                return Ok((device_code, record));
            }
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict)
}

/// A live, pending authorization by user code (what `/device` shows).
pub async fn find_pending(
    pool: &Pool,
    code: &UserCode,
    now: UnixTime,
) -> Result<Option<DeviceAuthorization>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM device_authorizations WHERE user_code = $1"
    ))
    .bind(code.normalized())
    .fetch_optional(pool)
    .await?;
    Ok(row
        .as_ref()
        .map(from_row)
        .transpose()?
        .filter(|d| d.status == Status::Pending && d.expires_at > now))
}

/// What came of a user's approval at `/device`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approval {
    /// Approved: the device's next poll gets tokens.
    Approved,
    /// The client's policy wants a newer sign-in (one that can include a
    /// second factor); nothing changed.
    SignInAgain,
    /// The client's policy refuses this sign-in: the authorization is
    /// denied (the device's next poll gets `access_denied`).
    Refused(Refusal),
    /// No pending, live authorization has this user code.
    Unknown,
}

/// The user approves the device authorization `code` with their sign-in,
/// if the client's policy admits it (`policy::judge`, as at the
/// authorization endpoint; the device's request arrived when it started).
pub async fn approve(
    pool: &Pool,
    code: &UserCode,
    user_id: &str,
    sign_in: &SignInFacts<'_>,
    now: UnixTime,
) -> Result<Approval, StoreError> {
    let Some(pending) = find_pending(pool, code, now).await? else {
        return Ok(Approval::Unknown);
    };
    let Some(client) = super::clients::find(pool, &pending.client_id).await? else {
        return Ok(Approval::Unknown);
    };
    let arrival = Arrival {
        at_ms: pending.created_at * 1000,
        seen_session: None,
    };
    let approval = match policy::judge(&client, sign_in, &arrival) {
        Verdict::SignInAgain => return Ok(Approval::SignInAgain),
        Verdict::Refuse(refusal) => {
            // A failed request is finished: the device learns it at once.
            decide(pool, code, None, now).await?;
            return Ok(Approval::Refused(refusal));
        }
        Verdict::Admit => {
            let auth_time = seconds_of(sign_in.auth_time_ms);
            Some((user_id, sign_in.session_handle, auth_time, sign_in.amr))
        }
    };
    Ok(if decide(pool, code, approval, now).await? {
        Approval::Approved
    } else {
        Approval::Unknown
    })
}

/// The user denies the device authorization `code`; `false` if no pending,
/// live one has it.
pub async fn deny(pool: &Pool, code: &UserCode, now: UnixTime) -> Result<bool, StoreError> {
    decide(pool, code, None, now).await
}

/// Records a decision. Only a pending, live authorization can be decided;
/// approvals come through [`approve`] (the client's policy).
async fn decide(
    pool: &Pool,
    code: &UserCode,
    approve: Option<(&str, &str, UnixTime, &[String])>,
    now: UnixTime,
) -> Result<bool, StoreError> {
    let updated = match approve {
        Some((user_id, session, auth_time, amr)) => {
            sqlx::query("UPDATE device_authorizations SET status = 'approved', user_id = $2, session_handle = $3, auth_time = $4, amr = $5 WHERE user_code = $1 AND status = 'pending' AND expires_at > $6")
                .bind(code.normalized())
                .bind(user_id)
                .bind(session)
                .bind(auth_time)
                .bind(amr.join(" "))
                .bind(now)
                .execute(pool)
                .await?
        }
        None => sqlx::query("UPDATE device_authorizations SET status = 'denied' WHERE user_code = $1 AND status = 'pending' AND expires_at > $2").bind(code.normalized()).bind(now).execute(pool).await?,
    };
    Ok(updated.rows_affected() == 1)
}

/// The answer to one poll.
#[derive(Debug)]
pub enum Poll {
    Pending,
    SlowDown,
    Denied,
    Expired,
    /// Approved and now consumed: issue tokens.
    Approved(Box<DeviceAuthorization>),
    Invalid,
}

/// Records a poll by `client_id` and says what to answer.
pub async fn poll(
    pool: &Pool,
    device_code: &SecretToken,
    client_id: &str,
    now: UnixTime,
) -> Result<Poll, StoreError> {
    let mut tx = pool.begin().await?;
    // Write first: serializes concurrent polls of one code (see tokens::refresh).
    sqlx::query("UPDATE device_authorizations SET last_polled_at = last_polled_at WHERE device_code_hash = $1").bind(device_code.hash().as_str()).execute(&mut *tx).await?;
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM device_authorizations WHERE device_code_hash = $1"
    ))
    .bind(device_code.hash().as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(Poll::Invalid);
    };
    if !device_code.matches(&TokenHash::from_stored(row.try_get("device_code_hash")?)) {
        return Ok(Poll::Invalid);
    }
    let record = from_row(&row)?;
    if record.client_id != client_id {
        return Ok(Poll::Invalid);
    }
    if record.expires_at <= now {
        return Ok(if record.status == Status::Used {
            Poll::Invalid
        } else {
            Poll::Expired
        });
    }
    let too_fast = record
        .last_polled_at
        .is_some_and(|last| now - last < record.interval_secs);
    let interval = if too_fast {
        record.interval_secs + 5
    } else {
        record.interval_secs
    };
    sqlx::query("UPDATE device_authorizations SET last_polled_at = $2, interval_secs = $3 WHERE device_code_hash = $1").bind(device_code.hash().as_str()).bind(now).bind(interval).execute(&mut *tx).await?;
    let answer = match record.status {
        _ if too_fast && record.status == Status::Pending => Poll::SlowDown,
        Status::Pending => Poll::Pending,
        Status::Denied => Poll::Denied,
        Status::Used => Poll::Invalid,
        Status::Approved => {
            sqlx::query("UPDATE device_authorizations SET status = 'used' WHERE device_code_hash = $1 AND status = 'approved'").bind(device_code.hash().as_str()).execute(&mut *tx).await?;
            Poll::Approved(Box::new(record))
        }
    };
    tx.commit().await?;
    Ok(answer)
}

pub async fn purge_expired(pool: &Pool, now: UnixTime) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM device_authorizations WHERE expires_at <= $1")
        .bind(now - 3600)
        .execute(pool)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_use_the_safe_alphabet_and_parse_leniently() {
        for _ in 0..200 {
            let c = UserCode::generate();
            assert_eq!(c.normalized().len(), 8);
            assert!(c
                .normalized()
                .bytes()
                .all(|b| USER_CODE_ALPHABET.contains(&b)));
            assert_eq!(
                UserCode::parse(&c.display().to_lowercase()),
                Some(c.clone())
            );
        }
        assert!(UserCode::parse("BCDF-GHJ").is_none());
        assert!(
            UserCode::parse("BCDF-GHJA").is_none(),
            "vowels are not in the alphabet"
        );
        assert!(UserCode::parse("BCDF-GHJ0").is_none());
        assert_eq!(
            UserCode::parse(" bcdf ghjk ").map(|c| c.display()),
            Some("BCDF-GHJK".into())
        );
    }
}
