//! `urn:ietf:params:oauth:grant-type:device_code` (RFC 8628 §3.4–3.5).
//!
//! An approved authorization still meets the client's policy
//! (`policy::admit_without_interaction`) before tokens are issued: the
//! approval at `/device` checked it, and the client may have changed since.

use super::TokenResponse;
use crate::core::Core;
use crate::crypto::SecretToken;
use crate::identity;
use crate::oauth::clients::Client;
use crate::oauth::device::{self, Poll};
use crate::oauth::{OAuthError, OAuthErrorCode};

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";

fn err(code: &str, description: &str) -> OAuthError {
    // RFC 8628 adds these codes to the RFC 6749 set; they travel as `invalid_grant`'s siblings.
    let mut e = OAuthError::invalid_grant(description);
    e.extension = Some(code.to_owned());
    e
}

pub async fn grant(
    state: &Core,
    client: &Client,
    device_code: &str,
) -> Result<TokenResponse, OAuthError> {
    if !client.allows_grant(GRANT_TYPE) {
        return Err(OAuthError::new(
            OAuthErrorCode::UnauthorizedClient,
            "this client may not use the device_code grant",
        ));
    }
    let Some(code) = SecretToken::parse(device_code) else {
        return Err(OAuthError::invalid_grant("the device code is invalid"));
    };
    let now = state.clock.now();
    let approved = match device::poll(&state.pool, &code, &client.id, now).await? {
        Poll::Pending => {
            return Err(err(
                "authorization_pending",
                "the user has not answered yet",
            ))
        }
        Poll::SlowDown => {
            return Err(err(
                "slow_down",
                "polling too fast; the interval grew by 5 seconds",
            ))
        }
        Poll::Denied => return Err(err("access_denied", "the user denied the request")),
        Poll::Expired => return Err(err("expired_token", "the device code expired; start again")),
        Poll::Invalid => {
            return Err(OAuthError::invalid_grant(
                "the device code is invalid or already used",
            ))
        }
        Poll::Approved(a) => a,
    };
    // The client's policy, as at the approval: it may have changed since.
    if let Err(refusal) = crate::policy::admit_without_interaction(client, &approved.amr) {
        return Err(err("access_denied", refusal.describe()));
    }
    let user_id = approved.user_id.clone().unwrap_or_default();
    let user = identity::find_by_id(&state.pool, &user_id)
        .await?
        .filter(|u| !u.disabled)
        .ok_or_else(|| OAuthError::invalid_grant("the user is no longer active"))?;
    let mut tx = state
        .pool
        .begin()
        .await
        .map_err(crate::store::StoreError::from)?;
    let issued = super::issue_user_tokens(
        state,
        &mut tx,
        super::UserGrant {
            client,
            user: &user,
            scope: &approved.scope,
            session_handle: approved.session_handle.as_deref(),
            nonce: None,
            auth_time: approved.auth_time.unwrap_or(now),
            amr: &approved.amr,
        },
    )
    .await?;
    tx.commit().await.map_err(crate::store::StoreError::from)?;
    Ok(issued.response)
}
