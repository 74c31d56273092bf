//! `refresh_token` (RFC 6749 §6) with rotation on every use and reuse
//! detection (RFC 9700 §4.14): see `tokens::refresh`.

use super::TokenResponse;
use crate::audit::{self, Event, EventKind};
use crate::core::Core;
use crate::crypto::SecretToken;
use crate::identity;
use crate::oauth::clients::Client;
use crate::oauth::{OAuthError, OAuthErrorCode};
use crate::scope::Scope;
use crate::tokens::refresh::RefreshError;
use crate::tokens::{self, AccessTokenSpec};

pub async fn grant(
    state: &Core,
    client: &Client,
    presented: &str,
    requested: Option<Scope>,
) -> Result<TokenResponse, OAuthError> {
    if !client.allows_grant("refresh_token") {
        return Err(OAuthError::new(
            OAuthErrorCode::UnauthorizedClient,
            "this client may not use the refresh_token grant",
        ));
    }
    let Some(presented) = SecretToken::parse(presented) else {
        return Err(OAuthError::invalid_grant(
            "the refresh token is invalid, expired or revoked",
        ));
    };
    let now = state.clock.now();
    let rotated = match crate::cascade::rotate_refresh_token(
        &state.pool,
        &state.config.tokens,
        &presented,
        &client.id,
        requested.as_ref(),
        now,
    )
    .await
    {
        Ok(r) => r,
        Err(RefreshError::Reused {
            family_id,
            user_id,
            session_handle,
        }) => {
            let detail = format!(
                "refresh token reuse by client {}: family {family_id} revoked, session {} ended",
                client.id,
                session_handle.as_deref().unwrap_or("-")
            );
            tracing::warn!(client_id = %client.id, %family_id, "refresh token reuse detected");
            // The session's revocation event committed in `rotate`.
            state.revocation_feed.wake();
            audit::record(
                &state.pool,
                EventKind::RefreshTokenReuse,
                Event {
                    actor: client.id.clone(),
                    subject: user_id,
                    detail,
                    ..Event::default()
                },
                now,
            )
            .await?;
            return Err(OAuthError::invalid_grant(
                "the refresh token is invalid, expired or revoked",
            ));
        }
        Err(RefreshError::ScopeTooWide) => {
            return Err(OAuthError::new(
                OAuthErrorCode::InvalidScope,
                "the requested scope exceeds the scope originally granted",
            ))
        }
        Err(RefreshError::Invalid) => {
            return Err(OAuthError::invalid_grant(
                "the refresh token is invalid, expired or revoked",
            ))
        }
        Err(RefreshError::Store(e)) => return Err(e.into()),
    };
    // Roles are read fresh: a role removed since sign-in is gone from new tokens.
    let user = identity::find_by_id(&state.pool, &rotated.family.user_id)
        .await?
        .ok_or_else(|| {
            OAuthError::invalid_grant("the refresh token is invalid, expired or revoked")
        })?;
    let spec = AccessTokenSpec {
        policy: client.token_policy(),
        subject: user.id.clone(),
        scope: rotated.scope.clone(),
        roles: user.roles.iter().map(|r| r.as_str().to_owned()).collect(),
        // The sign-in the family came from: its tokens report it, and carry
        // no role that needs a second factor it lacked.
        sign_in: rotated.family.sign_in.clone(),
        session_id: rotated.family.session_handle.clone(),
        family_id: Some(rotated.family.id.clone()),
    };
    let issued = tokens::issue_access_token(state, spec).await?;
    Ok(TokenResponse {
        access_token: issued.token,
        token_type: "Bearer",
        expires_in: issued.expires_in,
        scope: rotated.scope.to_string(),
        refresh_token: Some(rotated.token.expose().to_owned()),
        id_token: None,
    })
}
