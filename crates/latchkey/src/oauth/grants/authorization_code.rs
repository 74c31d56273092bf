//! `authorization_code` (RFC 6749 §4.1.3, OAuth 2.1) with mandatory PKCE
//! (a confidential client's opt-out and the downgrade protection are
//! `oauth::pkce::check_at_token`).
//!
//! The code is claimed atomically before anything else; a second use is a
//! replay: it fails with `invalid_grant` **and** revokes what the first use
//! issued, in one transaction (`tokens::revoke_code_issue`): the refresh
//! family, the sign-in session its tokens carry as `sid` (so access tokens
//! minted later by refreshing the family are revoked too), and the first
//! access token's `jti`.

use super::TokenResponse;
use crate::app::AppState;
use crate::audit::{self, Event, EventKind};
use crate::crypto::SecretToken;
use crate::identity;
use crate::oauth::authorize::{self, Redemption};
use crate::oauth::clients::Client;
use crate::oauth::pkce::{self, PkcePolicy, TokenPkceError};
use crate::oauth::{OAuthError, OAuthErrorCode};
use crate::revocation::{Cause, Initiator};
use crate::tokens;

pub async fn grant(
    state: &AppState,
    client: &Client,
    code: &str,
    redirect_uri: Option<&str>,
    verifier: Option<&str>,
) -> Result<TokenResponse, OAuthError> {
    if !client.allows_grant("authorization_code") {
        return Err(OAuthError::new(
            OAuthErrorCode::UnauthorizedClient,
            "this client may not use the authorization_code grant",
        ));
    }
    let invalid =
        || OAuthError::invalid_grant("the authorization code is invalid, expired or already used");
    let Some(code) = SecretToken::parse(code) else {
        return Err(invalid());
    };
    let now = state.clock.now();
    let redeemed = match authorize::redeem(&state.pool, &code, now).await? {
        Redemption::Unknown => return Err(invalid()),
        Redemption::Replayed {
            family,
            jti,
            jti_exp,
            user_id,
        } => {
            // One transaction: the family, the session its tokens carry as
            // `sid` (so tokens minted by refreshing it die too), the first
            // access token, and the revocation events.
            let cause = Cause::new(now, Initiator::Policy, "authorization code replay")
                .waking(&state.revocation_feed);
            let access_token = match (&jti, jti_exp) {
                (Some(jti), Some(exp)) => Some(tokens::DeniedToken {
                    jti,
                    subject: &user_id,
                    expires_at: exp,
                }),
                _ => None,
            };
            let issue = tokens::CodeIssue {
                user_id: &user_id,
                family: family.as_deref(),
                access_token,
            };
            tokens::revoke_code_issue(&state.pool, issue, state.config.tokens.leeway_secs, &cause)
                .await?;
            let detail = format!(
                "authorization code replayed by client {}; tokens it issued were revoked",
                client.id
            );
            audit::record(
                &state.pool,
                EventKind::AuthorizationCodeReplay,
                Event {
                    actor: client.id.clone(),
                    subject: user_id,
                    detail,
                    ..Event::default()
                },
                now,
            )
            .await?;
            return Err(invalid());
        }
        Redemption::Fresh(r) => r,
    };
    if redeemed.client_id != client.id || redeemed.expires_at <= now {
        return Err(invalid());
    }
    if redirect_uri != Some(redeemed.redirect_uri.as_str()) {
        return Err(OAuthError::invalid_grant(
            "redirect_uri does not match the authorization request",
        ));
    }
    let policy = PkcePolicy::of(client.confidential, client.require_pkce);
    match pkce::check_at_token(policy, redeemed.challenge.as_ref(), verifier) {
        Ok(()) => {}
        Err(TokenPkceError::VerifierMissing) => {
            return Err(OAuthError::invalid_request(
                "code_verifier is required (PKCE)",
            ))
        }
        Err(TokenPkceError::Mismatch) => {
            return Err(OAuthError::invalid_grant(
                "code_verifier does not match the code_challenge",
            ))
        }
        Err(TokenPkceError::Downgrade) => {
            return Err(OAuthError::invalid_grant(
                "a code_verifier was sent but the authorization request had no code_challenge",
            ))
        }
        Err(TokenPkceError::NoLongerAllowed) => {
            return Err(OAuthError::invalid_grant(
                "the code was issued without PKCE, which this client may no longer do",
            ))
        }
    }
    let user = identity::find_by_id(&state.pool, &redeemed.user_id)
        .await?
        .filter(|u| !u.disabled)
        .ok_or_else(invalid)?;
    let issued = super::issue_user_tokens(
        state,
        super::UserGrant {
            client,
            user: &user,
            scope: &redeemed.scope,
            session_handle: Some(&redeemed.session_handle),
            nonce: redeemed.nonce.as_deref(),
            auth_time: redeemed.auth_time,
            amr: &redeemed.amr,
        },
    )
    .await?;
    // Remember what this code produced, so a replay can revoke it.
    authorize::record_issued(
        &state.pool,
        &code,
        issued.family_id.as_deref(),
        &issued.access_jti,
        issued.access_expires_at,
    )
    .await?;
    Ok(issued.response)
}
