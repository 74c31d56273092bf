//! Signing out: the one sequence behind `POST /logout` and OpenID Connect
//! RP-initiated logout.
//!
//! Ends the session behind the cookie value (its refresh families, opaque
//! tokens and revocation event, in `cascade::end_session`), records the
//! `logout` audit event, and tells the clients with a back-channel logout
//! URI that the session ended.
//!
//! Must not: know about HTTP or cookies (the handlers check CSRF and clear
//! the cookie).

use crate::audit::{self, Event, EventKind};
use crate::core::Core;
use crate::crypto::SecretToken;
use crate::revocation::{Cause, Initiator};
use crate::session::{Origin, Session};
use crate::store::StoreError;

/// Ends the session whose cookie value is `token`; `detail` goes into the
/// audit record. Returns the session if there was one.
pub async fn sign_out(
    state: &Core,
    token: &SecretToken,
    reason: &str,
    detail: &str,
    origin: &Origin,
) -> Result<Option<Session>, StoreError> {
    let cause = Cause::at(state, Initiator::User, reason);
    let Some(session) = crate::cascade::end_session(&state.pool, token, &cause).await? else {
        return Ok(None);
    };
    let event = Event {
        actor: session.user_id.clone(),
        subject: session.user_id.clone(),
        ip: origin.ip.clone(),
        user_agent: origin.user_agent.clone(),
        detail: detail.to_owned(),
    };
    audit::record(&state.pool, EventKind::Logout, event, state.clock.now()).await?;
    crate::oidc::backchannel::session_ended(state, &session.user_id, &session.handle).await;
    Ok(Some(session))
}
