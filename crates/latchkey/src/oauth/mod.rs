//! OAuth 2.1: clients, authorization requests, PKCE, redirect URIs, the
//! device flow's records, and the RFC 6749 error shape.
//!
//! Owns: client registration and credential checks ([`clients`]), the
//! authorization request and its codes ([`authorize`]), [`pkce`],
//! [`redirect_uri`], [`device`] codes, and [`OAuthError`]. The token
//! endpoint's grants sit a floor above, in `grants`; the HTTP shape (RFC 6749
//! §5.2 error objects) lives in `routes::oauth`.
//!
//! Must not: sign tokens itself (that is `tokens`), name `grants`, or touch
//! sessions beyond reading who is signed in.

pub mod authorize;
pub mod clients;
pub mod device;
pub mod pkce;
pub mod redirect_uri;

/// RFC 6749 §5.2 / RFC 7009 / RFC 6750 error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    ServerError,
    TemporarilyUnavailable,
}

impl OAuthErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            OAuthErrorCode::InvalidRequest => "invalid_request",
            OAuthErrorCode::InvalidClient => "invalid_client",
            OAuthErrorCode::InvalidGrant => "invalid_grant",
            OAuthErrorCode::UnauthorizedClient => "unauthorized_client",
            OAuthErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            OAuthErrorCode::InvalidScope => "invalid_scope",
            OAuthErrorCode::ServerError => "server_error",
            OAuthErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }
}

/// An OAuth error with a description safe to show the client.
#[derive(Debug, Clone)]
pub struct OAuthError {
    pub code: OAuthErrorCode,
    pub description: String,
    /// `invalid_client` after HTTP Basic: answer 401 with `WWW-Authenticate: Basic`.
    pub via_basic: bool,
    /// An extension error code (RFC 8628 `authorization_pending`, `slow_down`, ...) sent instead of `code`.
    pub extension: Option<String>,
    /// Set on rate-limit refusals: answer 429 with `Retry-After`.
    pub retry_after: Option<i64>,
}

impl OAuthError {
    pub fn new(code: OAuthErrorCode, description: impl Into<String>) -> OAuthError {
        OAuthError {
            code,
            description: description.into(),
            via_basic: false,
            extension: None,
            retry_after: None,
        }
    }
    pub fn invalid_request(d: impl Into<String>) -> OAuthError {
        OAuthError::new(OAuthErrorCode::InvalidRequest, d)
    }
    pub fn invalid_grant(d: impl Into<String>) -> OAuthError {
        OAuthError::new(OAuthErrorCode::InvalidGrant, d)
    }
    /// A per-minute budget is spent: 429 with `Retry-After` and the error
    /// `too_many_requests`, in the RFC 6749 §5.2 shape.
    pub fn rate_limited(what: &str, retry_after_secs: i64) -> OAuthError {
        OAuthError {
            extension: Some("too_many_requests".into()),
            retry_after: Some(retry_after_secs),
            ..OAuthError::invalid_request(format!("too many {what}; retry in {retry_after_secs} s"))
        }
    }
}

impl From<crate::store::StoreError> for OAuthError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Unavailable(_) => OAuthError::new(
                OAuthErrorCode::TemporarilyUnavailable,
                "the database is unavailable; retry shortly",
            ),
            other => {
                tracing::error!(error = %other, "storage error in an OAuth request");
                OAuthError::new(OAuthErrorCode::ServerError, "internal error")
            }
        }
    }
}

impl From<clients::ClientError> for OAuthError {
    fn from(e: clients::ClientError) -> Self {
        match e {
            clients::ClientError::AuthenticationFailed { via_basic } => OAuthError {
                code: OAuthErrorCode::InvalidClient,
                description: "client authentication failed".into(),
                via_basic,
                extension: None,
                retry_after: None,
            },
            clients::ClientError::Store(s) => s.into(),
        }
    }
}
