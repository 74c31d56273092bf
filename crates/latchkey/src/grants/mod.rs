//! The token endpoint's floor, above `oauth`, `tokens` and `oidc` (like
//! node-oidc-provider's `actions/grants`): who the client is, and which grant
//! answers.
//!
//! Owns: the endpoints' parameters ([`params`]: each at most once), client
//! authentication from them ([`client_auth`]: HTTP Basic, `client_secret_post`,
//! `private_key_jwt`, public ids), the grant dispatch ([`dispatch`]), and one
//! module per grant type, each taking an authenticated client and returning a
//! [`TokenResponse`] or an RFC 6749 error.
//!
//! Must not: know HTTP beyond the `Authorization` and `Content-Type` values
//! the handler hands over (routes::oauth turns results into responses and
//! holds the per-client rate limits), or write rows itself: codes, families
//! and tokens are written by `oauth`, `tokens`, `oidc` and `cascade`.
//!
//! `password` and the implicit flow do not exist here and never will.

pub mod authorization_code;
pub mod client_auth;
pub mod client_credentials;
pub mod device_code;
pub mod params;
pub mod refresh_token;

use serde::Serialize;

use crate::core::Core;
use crate::oauth::clients::Client;
use crate::oauth::{OAuthError, OAuthErrorCode};
pub use params::Params;

/// Answers a token request of the authenticated `client` with the grant its
/// `grant_type` names.
pub async fn dispatch(
    state: &Core,
    client: &Client,
    params: &Params,
) -> Result<TokenResponse, OAuthError> {
    match params.require("grant_type")? {
        "client_credentials" => client_credentials::grant(state, client, params.scope()?).await,
        "refresh_token" => {
            refresh_token::grant(
                state,
                client,
                params.require("refresh_token")?,
                params.scope()?,
            )
            .await
        }
        "authorization_code" => {
            authorization_code::grant(
                state,
                client,
                params.require("code")?,
                params.get("redirect_uri"),
                params.get("code_verifier"),
            )
            .await
        }
        device_code::GRANT_TYPE => {
            device_code::grant(state, client, params.require("device_code")?).await
        }
        // Not offered (yet or ever): password, implicit, and grants this server does not implement.
        other => Err(OAuthError::new(
            OAuthErrorCode::UnsupportedGrantType,
            format!("grant_type {other:?} is not supported"),
        )),
    }
}

/// RFC 6749 §5.1 successful token response.
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

impl From<crate::tokens::TokenError> for crate::oauth::OAuthError {
    fn from(e: crate::tokens::TokenError) -> Self {
        match e {
            crate::tokens::TokenError::Store(s) => s.into(),
            other => {
                tracing::error!(error = %other, "token issuance failed");
                crate::oauth::OAuthError::new(
                    crate::oauth::OAuthErrorCode::ServerError,
                    "internal error",
                )
            }
        }
    }
}

/// What a user-facing grant (authorization code, device code) hands out, and
/// what it was issued from.
pub(crate) struct UserGrant<'a> {
    pub client: &'a crate::oauth::clients::Client,
    pub user: &'a crate::identity::User,
    pub scope: &'a crate::scope::Scope,
    pub session_handle: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub auth_time: i64,
    pub amr: &'a [String],
}

/// The tokens of a user-facing grant, plus the ids a replay must revoke.
pub(crate) struct IssuedUserTokens {
    pub response: TokenResponse,
    pub family_id: Option<String>,
    pub access_jti: String,
    pub access_expires_at: i64,
}

/// Issues the access token (with the user's current roles its sign-in may
/// use, the session as `sid`, and the sign-in's `auth_time`, `amr` and
/// `acr`), a refresh token when `offline_access` was granted and the client
/// may refresh, and an ID token when `openid` was granted.
///
/// Everything it writes (an opaque token's row, the refresh family) goes
/// into the caller's transaction `tx`.
pub(crate) async fn issue_user_tokens(
    state: &crate::core::Core,
    tx: &mut crate::store::Tx<'_>,
    grant: UserGrant<'_>,
) -> Result<IssuedUserTokens, crate::oauth::OAuthError> {
    use crate::tokens::{self, refresh, AccessTokenSpec};
    let UserGrant {
        client,
        user,
        scope,
        session_handle,
        nonce,
        auth_time,
        amr,
    } = grant;
    let sign_in = tokens::SignInClaims {
        auth_time,
        amr: amr.to_vec(),
    };
    let spec = AccessTokenSpec {
        policy: client.token_policy(),
        subject: user.id.clone(),
        scope: scope.clone(),
        roles: user.roles.iter().map(|r| r.as_str().to_owned()).collect(),
        sign_in: Some(sign_in.clone()),
        session_id: session_handle.map(str::to_owned),
        family_id: None,
    };
    let access = tokens::issue_access_token_tx(state, tx, spec).await?;
    let family = if scope.contains("offline_access") && client.allows_grant("refresh_token") {
        let owner = refresh::FamilyOwner {
            client_id: &client.id,
            user_id: &user.id,
            session_handle,
            sign_in: Some(&sign_in),
        };
        Some(
            refresh::start_family_tx(tx, &state.config.tokens, owner, scope, state.clock.now())
                .await?,
        )
    } else {
        None
    };
    let id_token = if scope.contains("openid") {
        let spec = crate::oidc::IdTokenSpec {
            client,
            user,
            scope,
            nonce,
            auth_time,
            amr,
            session_id: session_handle.unwrap_or_default(),
            access_token: Some(&access.token),
        };
        Some(crate::oidc::issue_id_token(state, spec)?)
    } else {
        None
    };
    Ok(IssuedUserTokens {
        family_id: family.as_ref().map(|(_, f)| f.id.clone()),
        access_jti: access.jti,
        access_expires_at: access.expires_at,
        response: TokenResponse {
            access_token: access.token,
            token_type: "Bearer",
            expires_in: access.expires_in,
            scope: scope.to_string(),
            refresh_token: family.map(|(t, _)| t.expose().to_owned()),
            id_token,
        },
    })
}
