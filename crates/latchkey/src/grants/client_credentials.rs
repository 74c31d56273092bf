//! `client_credentials` (RFC 6749 §4.4): a confidential client gets an access
//! token for itself. Scopes are limited to the client's allowed set; no
//! refresh token is issued.

use super::TokenResponse;
use crate::core::Core;
use crate::oauth::clients::Client;
use crate::oauth::{OAuthError, OAuthErrorCode};
use crate::scope::Scope;
use crate::tokens::{self, AccessTokenSpec};

pub async fn grant(
    state: &Core,
    client: &Client,
    requested: Option<Scope>,
) -> Result<TokenResponse, OAuthError> {
    if !client.confidential || !client.allows_grant("client_credentials") {
        return Err(OAuthError::new(
            OAuthErrorCode::UnauthorizedClient,
            "this client may not use the client_credentials grant",
        ));
    }
    let scope = match requested {
        Some(s) if !s.is_empty() => {
            if !s.is_subset(&client.scopes) {
                return Err(OAuthError::new(
                    OAuthErrorCode::InvalidScope,
                    "the requested scope exceeds what this client is allowed",
                ));
            }
            s
        }
        _ => client.scopes.clone(),
    };
    let spec = AccessTokenSpec {
        policy: client.token_policy(),
        subject: client.id.clone(),
        scope: scope.clone(),
        roles: Vec::new(),
        sign_in: None,
        session_id: None,
        family_id: None,
    };
    let issued = tokens::issue_access_token(state, spec).await?;
    Ok(TokenResponse {
        access_token: issued.token,
        token_type: "Bearer",
        expires_in: issued.expires_in,
        scope: scope.to_string(),
        refresh_token: None,
        id_token: None,
    })
}
