//! The second sign-in step: an authenticator-app (TOTP) code, a recovery
//! code in its place ([`with_code`]), or a passkey ([`with_passkey`]).
//!
//! Owns the order of its checks: the throttle reserves a failure first (the
//! same counter as the password); a TOTP code already used in its time step
//! is refused and audited as a replay; any other code that is not a valid
//! TOTP code is tried as a recovery code (single-use); the challenge is
//! finished with a conditional delete, so of two parallel correct answers
//! exactly one gets a session; the session's `amr` is the first step's plus
//! what this step proved.
//!
//! Must not: know about HTTP or cookies (the handler holds the challenge
//! cookie and maps [`SecondStep`] to pages or JSON).

use crate::audit::{self, Event, EventKind};
use crate::core::SignInKit;
use crate::crypto::SecretToken;
use crate::identity::User;
use crate::mfa::{self, MfaChallenge, MfaError};
use crate::session::Origin;
use crate::webauthn::{self, ChallengeBinding, PasskeyError};
use webauthn_rs::prelude::PublicKeyCredential;

use super::{complete, LoginError, LoginSuccess};

/// How a second step with a code ended.
#[derive(Debug)]
pub enum SecondStep {
    /// Signed in: a new session exists.
    Complete(Box<LoginSuccess>),
    /// An authenticator code already used in its time step (audited).
    Replayed,
    /// Neither a valid authenticator code nor an unused recovery code.
    WrongCode,
    /// The challenge was finished by a parallel request, or expired.
    Expired,
}

/// Checks `code` for the pending `challenge` (whose cookie value is
/// `challenge_token`) of `user`.
pub async fn with_code(
    state: &SignInKit,
    challenge_token: &SecretToken,
    challenge: &MfaChallenge,
    user: User,
    code: &str,
    origin: &Origin,
) -> Result<SecondStep, LoginError> {
    let now = state.clock.now();
    let attempt = state
        .throttle
        .begin(user.email.as_str(), &origin.ip, now)
        .await
        .map_err(|locked| LoginError::LockedOut {
            retry_after_secs: locked.retry_after_secs,
        })?;
    let event = |detail: &str| Event {
        actor: user.id.clone(),
        subject: user.id.clone(),
        ip: origin.ip.clone(),
        user_agent: origin.user_agent.clone(),
        detail: detail.to_owned(),
    };
    let code = code.trim();
    let (amr, how): (Vec<&str>, &str) =
        match mfa::verify_totp(&state.pool, &state.mfa_seal_key, &user.id, code, now).await {
            Ok(()) => (vec!["otp", "mfa"], "password + authenticator code"),
            Err(MfaError::Replayed) => {
                audit::record(
                    &state.pool,
                    EventKind::TotpReplayRefused,
                    event("an already used authenticator code was presented"),
                    now,
                )
                .await?;
                return Ok(SecondStep::Replayed);
            }
            Err(MfaError::Store(e)) => {
                // Not the user's fault: an outage must not lock accounts.
                attempt.abandoned();
                return Err(e.into());
            }
            Err(_) => {
                if mfa::use_recovery_code(&state.pool, &user.id, code, now).await? {
                    audit::record(
                        &state.pool,
                        EventKind::RecoveryCodeUsed,
                        event("recovery code used to sign in"),
                        now,
                    )
                    .await?;
                    (vec!["mfa"], "password + recovery code")
                } else {
                    state.metrics.login("failure");
                    audit::record(
                        &state.pool,
                        EventKind::LoginFailed,
                        event("wrong second factor"),
                        now,
                    )
                    .await?;
                    return Ok(SecondStep::WrongCode);
                }
            }
        };
    // The challenge is single-use: a parallel request that also passed loses here.
    if !mfa::finish_challenge(&state.pool, challenge_token).await? {
        return Ok(SecondStep::Expired);
    }
    attempt.succeeded();
    let mut full_amr: Vec<&str> = challenge.first_amr.iter().map(String::as_str).collect();
    full_amr.extend(amr);
    Ok(SecondStep::Complete(Box::new(
        complete(state, user, &full_amr, how, origin).await?,
    )))
}

/// Checks a passkey answer (`ceremony`, started for this challenge and
/// bound to it by `binding`) for the pending `challenge` of `user`. A
/// password and a passkey are two factors, whether or not the authenticator
/// also verified the user. Only [`SecondStep::Complete`] and
/// [`SecondStep::Expired`] come back; a refused passkey is an error.
#[allow(clippy::too_many_arguments)]
pub async fn with_passkey(
    state: &SignInKit,
    challenge_token: &SecretToken,
    challenge: &MfaChallenge,
    user: User,
    ceremony: &str,
    credential: &PublicKeyCredential,
    binding: &ChallengeBinding,
    origin: &Origin,
) -> Result<SecondStep, PasskeyError> {
    let now = state.clock.now();
    let attempt = state
        .throttle
        .begin(user.email.as_str(), &origin.ip, now)
        .await
        .map_err(|locked| PasskeyError::LockedOut {
            retry_after_secs: locked.retry_after_secs,
        })?;
    let verified = match webauthn::finish_second_factor(
        state, &user.id, ceremony, credential, binding, origin,
    )
    .await
    {
        Ok(verified) => verified,
        Err(PasskeyError::Store(e)) => {
            attempt.abandoned();
            return Err(e.into());
        }
        Err(e) => {
            state.metrics.login("failure");
            let event = Event {
                actor: user.id.clone(),
                subject: user.id.clone(),
                ip: origin.ip.clone(),
                user_agent: origin.user_agent.clone(),
                detail: format!("second factor passkey: {e:?}"),
            };
            audit::record(&state.pool, EventKind::LoginFailed, event, now).await?;
            return Err(e);
        }
    };
    // The challenge is single-use: a parallel request that also passed loses here.
    if !mfa::finish_challenge(&state.pool, challenge_token).await? {
        return Ok(SecondStep::Expired);
    }
    attempt.succeeded();
    let mut amr: Vec<&str> = challenge.first_amr.iter().map(String::as_str).collect();
    amr.extend(verified.amr.iter().map(String::as_str));
    if !amr.contains(&"mfa") {
        amr.push("mfa");
    }
    let success = complete(state, user, &amr, "password + passkey", origin)
        .await
        .map_err(super::passkey::completion_failed)?;
    Ok(SecondStep::Complete(Box::new(success)))
}
