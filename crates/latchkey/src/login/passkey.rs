//! Passwordless sign-in with a passkey (usernameless: the authenticator
//! offers its discoverable credentials).
//!
//! Owns the order of its checks: the throttle reserves a failure for the
//! address before anything is looked up, and for the account as soon as the
//! credential names it (the same lockout as passwords); the ceremony is
//! taken (single-use) before the answer is verified; the user handle must
//! name the credential's owner; disabled accounts are refused; every
//! outcome is audited; success creates a new session (`login::complete`).
//! The WebAuthn checks themselves are webauthn-rs's, through `webauthn`.
//!
//! Must not: know about HTTP or cookies (the handler turns the CSRF cookie
//! into a [`ChallengeBinding`] and maps [`PasskeyError`] to responses).

use webauthn_rs::prelude::PublicKeyCredential;

use crate::audit::{self, Event, EventKind};
use crate::core::SignInKit;
use crate::identity;
use crate::session::Origin;
use crate::webauthn::{self, ChallengeBinding, PasskeyError};

use super::{complete, LoginError, LoginSuccess};

/// Finishes a usernameless sign-in `ceremony` with the browser's answer.
pub async fn sign_in(
    state: &SignInKit,
    ceremony: &str,
    credential: &PublicKeyCredential,
    binding: &ChallengeBinding,
    origin: &Origin,
) -> Result<LoginSuccess, PasskeyError> {
    let now = state.clock.now();
    let locked_out = |locked: crate::throttle::LockedOut| PasskeyError::LockedOut {
        retry_after_secs: locked.retry_after_secs,
    };
    let attempt = match state.throttle.begin_unidentified(&origin.ip, now).await {
        Ok(attempt) => attempt,
        Err(locked) => {
            state.metrics.login("locked");
            let event = Event {
                ip: origin.ip.clone(),
                user_agent: origin.user_agent.clone(),
                detail: "passkey: too many failures from this address".into(),
                ..Event::default()
            };
            audit::record(&state.pool, EventKind::LoginLockedOut, event, now).await?;
            return Err(locked_out(locked));
        }
    };
    let authentication = match webauthn::take_sign_in(state, ceremony, binding, now).await {
        Ok(authentication) => authentication,
        Err(PasskeyError::Store(e)) => {
            attempt.abandoned(); // an outage must not lock anyone out
            return Err(e.into());
        }
        Err(e) => return Err(e),
    };
    let failed = |subject: &str, detail: String| Event {
        actor: String::new(),
        subject: subject.to_owned(),
        ip: origin.ip.clone(),
        user_agent: origin.user_agent.clone(),
        detail,
    };
    let Some(mut record) = webauthn::credential_named_by(state, credential).await? else {
        state.metrics.login("failure");
        let event = failed("", "passkey: unknown credential".into());
        audit::record(&state.pool, EventKind::LoginFailed, event, now).await?;
        return Err(PasskeyError::UnknownCredential);
    };
    let user_id = record.user_id.clone();
    let refuse = |detail: String| async {
        state.metrics.login("failure");
        let event = failed(&user_id, detail);
        audit::record(&state.pool, EventKind::LoginFailed, event, now).await
    };
    if !webauthn::user_handle_matches(state, credential, &record)? {
        refuse("passkey: user handle does not match the credential's owner".into()).await?;
        return Err(PasskeyError::Rejected("user handle mismatch".into()));
    }
    let user = match identity::find_by_id(&state.pool, &record.user_id).await? {
        Some(user) if !user.disabled => user,
        Some(_) => {
            refuse("passkey: account disabled".into()).await?;
            return Err(PasskeyError::Rejected("account disabled".into()));
        }
        None => return Err(PasskeyError::UnknownCredential),
    };
    let attempt = match attempt.identify(user.email.as_str(), now).await {
        Ok(attempt) => attempt,
        Err(locked) => {
            state.metrics.login("locked");
            let event = failed(
                &user.id,
                "passkey: account locked after too many failures".into(),
            );
            audit::record(&state.pool, EventKind::LoginLockedOut, event, now).await?;
            return Err(locked_out(locked));
        }
    };
    let amr =
        match webauthn::verify_sign_in(state, credential, authentication, &mut record, origin, now)
            .await
        {
            Ok(amr) => amr,
            Err(PasskeyError::Store(e)) => {
                attempt.abandoned();
                return Err(e.into());
            }
            Err(error) => {
                refuse(format!("passkey: {error:?}")).await?;
                return Err(error);
            }
        };
    attempt.succeeded();
    complete(state, user, &amr, &format!("passkey {}", record.id), origin)
        .await
        .map_err(completion_failed)
}

/// The session could not be created after the passkey verified.
pub(super) fn completion_failed(e: LoginError) -> PasskeyError {
    match e {
        LoginError::Store(e) => PasskeyError::Store(e),
        other => PasskeyError::Corrupt(other.to_string()),
    }
}
