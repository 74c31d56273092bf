//! Sign-in ceremonies: the password (here), the second step with a code
//! ([`second_step`]), a passkey ([`passkey`]), the end of a federated
//! sign-in ([`federated`]), and signing out ([`sign_out`]). Handlers, the CLI and federation call these; none of them
//! re-implements a step.
//!
//! The password ceremony owns the order of the checks that make sign-in safe:
//! 1. the throttle reserves a slot for the account and the IP (a locked
//!    account is refused before any hashing; an attempt beyond the room left
//!    waits for one in flight to settle — only failures count);
//! 2. the user is looked up; an unknown email verifies a dummy hash, so an
//!    unknown user, a wrong password and a disabled account cost the same
//!    and fail with the same [`LoginError::InvalidCredentials`];
//! 3. on success the throttle is settled, an outdated hash (bcrypt, old
//!    Argon2 parameters) is replaced, and a *new* session is created.
//!
//! Must not: know about HTTP (the handler maps [`LoginError`] to responses).

pub mod federated;
pub mod passkey;
pub mod second_step;
pub mod sign_out;

use crate::audit::{self, Event, EventKind};
use crate::core::SignInKit;
use crate::crypto::SecretToken;
use crate::identity::{self, Email, Password, User};
use crate::revocation::{Cause, Initiator};
use crate::session::{self, Origin, Session};
use crate::store::StoreError;

/// The outcome of a correct password.
#[derive(Debug)]
pub enum SignIn {
    /// Signed in: a new session exists.
    Complete(LoginSuccess),
    /// The password was right and a second factor is due: no session yet,
    /// only a short-lived challenge (see `mfa`).
    SecondFactorDue {
        challenge: SecretToken,
        user: User,
        factors: SecondFactors,
    },
}

#[derive(Debug)]
pub struct LoginSuccess {
    pub token: SecretToken,
    pub session: Session,
    pub user: User,
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Unknown email, wrong password or disabled account: indistinguishable.
    #[error("Invalid email or password")]
    InvalidCredentials,
    #[error("Too many failed sign-ins; try again in {retry_after_secs} seconds")]
    LockedOut { retry_after_secs: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hash(#[from] crate::identity::password::HashError),
}

pub async fn sign_in_with_password(
    state: &SignInKit,
    email: &Email,
    password: &Password,
    origin: &Origin,
) -> Result<SignIn, LoginError> {
    let now = state.clock.now();
    let event = |detail: &str, actor: &str| Event {
        actor: actor.to_owned(),
        subject: email.as_str().to_owned(),
        ip: origin.ip.clone(),
        user_agent: origin.user_agent.clone(),
        detail: detail.to_owned(),
    };
    let attempt = match state.throttle.begin(email.as_str(), &origin.ip, now).await {
        Ok(attempt) => attempt,
        Err(locked) => {
            state.metrics.login("locked");
            audit::record(
                &state.pool,
                EventKind::LoginLockedOut,
                event("too many failures", ""),
                now,
            )
            .await?;
            return Err(LoginError::LockedOut {
                retry_after_secs: locked.retry_after_secs,
            });
        }
    };
    let user = match identity::find_by_email(&state.pool, email).await {
        Ok(user) => user,
        Err(e) => {
            // Not the user's fault: an outage must not lock accounts.
            attempt.abandoned();
            return Err(e.into());
        }
    };
    let stored = user.as_ref().and_then(|u| u.password_hash.clone());
    let verification = state.hasher.verify(password, stored.as_deref()).await?;
    let user = match user {
        Some(user) if verification.matches && !user.disabled => user,
        other => {
            state.metrics.login("failure");
            let why = match other {
                None => "unknown email",
                Some(u) if u.disabled => "account disabled",
                Some(_) => "wrong password",
            };
            audit::record(&state.pool, EventKind::LoginFailed, event(why, ""), now).await?;
            return Err(LoginError::InvalidCredentials);
        }
    };
    attempt.succeeded();
    if verification.needs_rehash {
        let new_hash = state.hasher.hash(password).await?;
        if identity::replace_password_hash(&state.pool, &user.id, stored.as_deref(), &new_hash, now)
            .await?
        {
            audit::record(
                &state.pool,
                EventKind::PasswordRehashed,
                event("upgraded to current Argon2id parameters", &user.id),
                now,
            )
            .await?;
        }
    }
    // A user with a second factor (an authenticator app or a passkey) gets a
    // challenge, not a session.
    let factors = second_factors(state, &user.id).await?;
    if factors.any() {
        let challenge = crate::mfa::start_challenge(&state.pool, &user.id, &["pwd"], now).await?;
        return Ok(SignIn::SecondFactorDue {
            challenge,
            user,
            factors,
        });
    }
    Ok(SignIn::Complete(
        complete(state, user, &["pwd"], "password", origin).await?,
    ))
}

/// The ways a user can complete the second sign-in step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SecondFactors {
    /// A confirmed authenticator app (TOTP).
    pub totp: bool,
    /// At least one passkey, on a deployment where passkeys work.
    pub passkey: bool,
    /// Unused recovery codes (they come with the authenticator app).
    pub recovery_code: bool,
}

impl SecondFactors {
    /// Whether a password alone is not enough to sign in.
    pub fn any(&self) -> bool {
        self.totp || self.passkey || self.recovery_code
    }

    /// The method names of the JSON sign-in answer (`mfa_required`).
    pub fn methods(&self) -> Vec<&'static str> {
        [
            (self.totp, "totp"),
            (self.passkey, "passkey"),
            (self.recovery_code, "recovery_code"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// The second factors `user_id` has. A passkey counts as one (WebAuthn
/// proves possession of a device), but only where passkeys can be used: on
/// an issuer where WebAuthn is unavailable it would lock its owner out.
pub async fn second_factors(state: &SignInKit, user_id: &str) -> Result<SecondFactors, StoreError> {
    let mfa = crate::mfa::status(&state.pool, user_id).await?;
    let passkey = state.passkeys.is_available()
        && crate::webauthn::has_passkeys(&state.pool, user_id).await?;
    Ok(SecondFactors {
        totp: mfa.totp,
        passkey,
        recovery_code: mfa.recovery_codes_left > 0,
    })
}

/// Creates the session for a fully authenticated user (new id: no fixation)
/// and records the success.
pub async fn complete(
    state: &SignInKit,
    user: User,
    amr: &[&str],
    how: &str,
    origin: &Origin,
) -> Result<LoginSuccess, LoginError> {
    let at = state.clock.moment();
    let now = at.secs();
    let (token, session) = session::create(
        &state.pool,
        &state.config.session,
        &user.id,
        amr,
        origin,
        at,
    )
    .await?;
    state.metrics.login("success");
    let event = Event {
        actor: user.id.clone(),
        subject: user.id.clone(),
        ip: origin.ip.clone(),
        user_agent: origin.user_agent.clone(),
        detail: how.to_owned(),
    };
    audit::record(&state.pool, EventKind::LoginSucceeded, event, now).await?;
    Ok(LoginSuccess {
        token,
        session,
        user,
    })
}

/// Why a password change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangePasswordError {
    #[error("the current password is not correct")]
    WrongCurrentPassword,
    #[error(transparent)]
    Policy(#[from] crate::identity::PolicyViolations),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hash(#[from] crate::identity::password::HashError),
}

/// Self-service password change: the current password is required (so a
/// borrowed session cannot lock the owner out), the new one must meet the
/// policy. Counts towards the account lockout like a sign-in. With
/// `end_other_sessions`, every other session of the user ends (and its
/// refresh tokens). Returns how many sessions ended.
pub async fn change_password(
    state: &SignInKit,
    user: &User,
    keep_session: &str,
    current: &Password,
    new: &Password,
    end_other_sessions: bool,
    origin: &Origin,
) -> Result<u64, ChangePasswordError> {
    let now = state.clock.now();
    let attempt = state
        .throttle
        .begin(user.email.as_str(), &origin.ip, now)
        .await
        .map_err(|_| ChangePasswordError::WrongCurrentPassword)?;
    let verification = state
        .hasher
        .verify(current, user.password_hash.as_deref())
        .await?;
    if !verification.matches {
        return Err(ChangePasswordError::WrongCurrentPassword);
    }
    attempt.succeeded();
    if new.expose() == current.expose() {
        return Err(ChangePasswordError::Policy(
            crate::identity::PolicyViolations(vec!["it is the current password".into()]),
        ));
    }
    state.policy.check(new, Some(user.email.as_str()))?;
    let hash = state.hasher.hash(new).await?;
    identity::replace_password_hash(&state.pool, &user.id, None, &hash, now).await?;
    if user.must_change_password {
        identity::set_must_change_password(&state.pool, &user.id, false, now).await?;
    }
    let ended = if end_other_sessions {
        let cause = Cause::at(state, Initiator::User, "password changed");
        crate::cascade::revoke_other_sessions(&state.pool, &user.id, keep_session, &cause).await?
    } else {
        0
    };
    let event = Event {
        actor: user.id.clone(),
        subject: user.id.clone(),
        ip: origin.ip.clone(),
        user_agent: origin.user_agent.clone(),
        detail: format!("{ended} other session(s) ended"),
    };
    audit::record(&state.pool, EventKind::PasswordChanged, event, now).await?;
    Ok(ended)
}
