//! Token-endpoint grants, one module per grant type. Each takes an
//! authenticated client and the parsed request, and returns a
//! [`TokenResponse`] or an RFC 6749 error.
//!
//! `password` and the implicit flow do not exist here and never will.

pub mod authorization_code;
pub mod client_credentials;
pub mod device_code;
pub mod refresh_token;

use serde::Serialize;

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

impl From<crate::tokens::TokenError> for super::OAuthError {
    fn from(e: crate::tokens::TokenError) -> Self {
        match e {
            crate::tokens::TokenError::Store(s) => s.into(),
            other => {
                tracing::error!(error = %other, "token issuance failed");
                super::OAuthError::new(super::OAuthErrorCode::ServerError, "internal error")
            }
        }
    }
}
