//! Why a request is refused, and the RFC 6750 response that says so.
//!
//! [`AuthError`] names what happened; [`AuthError::challenge`] gives the
//! status, the `WWW-Authenticate` header and the JSON body `{"error",
//! "message"}` independently of any web framework (the `axum` feature turns
//! it into a response):
//!
//! | error | status | `WWW-Authenticate` |
//! | --- | --- | --- |
//! | no token | 401 | `Bearer realm="…"` (no `error`, RFC 6750 §3.1) |
//! | malformed `Authorization` header | 400 | `Bearer realm="…", error="invalid_request", error_description="…"` |
//! | bad, expired, revoked token; revocation status unknown | 401 | `Bearer realm="…", error="invalid_token", error_description="…"` |
//! | token fine, scope or role missing | 403 | `Bearer realm="…", error="insufficient_scope", error_description="…", scope="…"` |
//! | token fine, but its sign-in lacks a second factor the route needs | 401 | `Bearer realm="…", error="insufficient_user_authentication", error_description="…", acr_values="urn:latchkey:acr:mfa"` (RFC 9470) |
//! | issuer unreachable (introspection) | 503 | — (`Retry-After: 5`) |
//!
//! Messages are safe to show to the token's bearer: they say what is wrong
//! with the token, never anything about the server's state.
//!
//! Must not: know a web framework.

use crate::bearer::BearerError;
use crate::claims::ACR_MULTI_FACTOR;
use crate::jose::VerifyError;

/// Why a request was not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No bearer token in the request.
    #[error("an access token is required")]
    MissingToken,
    /// The `Authorization` header is malformed or repeated.
    #[error("{0}")]
    InvalidRequest(BearerError),
    /// The token failed verification (signature, key, `iss`, `aud`, `typ`, `exp`, `nbf`, …).
    #[error("{0}")]
    InvalidToken(VerifyError),
    /// The token was revoked (feed event on its `jti`, `sid` or `sub`).
    #[error("the token has been revoked")]
    Revoked,
    /// The revocation feed has been unreachable for longer than allowed, and
    /// the failure policy refuses this token.
    #[error("the token's revocation status is unknown; try again shortly")]
    RevocationStatusUnknown,
    /// Introspection says the (opaque) token is not active.
    #[error("the token is invalid, expired or revoked")]
    Inactive,
    /// The token is fine but lacks a scope.
    #[error("the token lacks the scope {0}")]
    InsufficientScope(String),
    /// The token is fine but lacks a role.
    #[error("the token lacks the role {0}")]
    InsufficientRole(String),
    /// The token is fine, but the sign-in behind it had no second factor
    /// (its `amr` lacks `mfa`) and the route needs one ([`RequireMfa`], or
    /// [`RequireRole`] of a role in [`VerifierBuilder::mfa_required_roles`]).
    /// RFC 9470 step-up: the client signs the user in again with
    /// `acr_values=urn:latchkey:acr:mfa`.
    ///
    /// [`RequireMfa`]: crate::RequireMfa
    /// [`RequireRole`]: crate::RequireRole
    /// [`VerifierBuilder::mfa_required_roles`]: crate::VerifierBuilder::mfa_required_roles
    #[error("this needs a sign-in with a second factor")]
    MfaRequired,
    /// The issuer could not be asked (introspection of an opaque token).
    #[error("the issuer is unreachable; try again shortly")]
    IssuerUnavailable,
    /// The application forgot to install the verifier layer (a bug: 500).
    #[error("the latchkey-verify layer is not installed on this route")]
    VerifierMissing,
}

impl From<VerifyError> for AuthError {
    fn from(e: VerifyError) -> Self {
        AuthError::InvalidToken(e)
    }
}

impl From<BearerError> for AuthError {
    fn from(e: BearerError) -> Self {
        AuthError::InvalidRequest(e)
    }
}

/// The HTTP form of an [`AuthError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// 400, 401, 403, 500 or 503.
    pub status: u16,
    /// The `WWW-Authenticate` value, for 400, 401 and 403.
    pub www_authenticate: Option<String>,
    /// `Retry-After` seconds, for 503.
    pub retry_after: Option<u32>,
    /// The JSON body: `{"error": "<code>", "message": "<text>"}`.
    pub body: String,
}

impl AuthError {
    /// The machine-readable code of the JSON body (and, for 400/401/403
    /// except a missing token, of `WWW-Authenticate`'s `error`).
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "unauthenticated",
            AuthError::InvalidRequest(_) => "invalid_request",
            AuthError::InvalidToken(_)
            | AuthError::Revoked
            | AuthError::RevocationStatusUnknown
            | AuthError::Inactive => "invalid_token",
            AuthError::InsufficientScope(_) => "insufficient_scope",
            AuthError::InsufficientRole(_) => "insufficient_role",
            AuthError::MfaRequired => "insufficient_user_authentication",
            AuthError::IssuerUnavailable => "temporarily_unavailable",
            AuthError::VerifierMissing => "internal_error",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::InvalidRequest(_) => 400,
            AuthError::MissingToken
            | AuthError::InvalidToken(_)
            | AuthError::Revoked
            | AuthError::RevocationStatusUnknown
            | AuthError::Inactive
            | AuthError::MfaRequired => 401,
            AuthError::InsufficientScope(_) | AuthError::InsufficientRole(_) => 403,
            AuthError::IssuerUnavailable => 503,
            AuthError::VerifierMissing => 500,
        }
    }

    /// Status, `WWW-Authenticate` (RFC 6750 §3) and body, for `realm`.
    pub fn challenge(&self, realm: &str) -> Challenge {
        let message = self.to_string();
        let description = quoted(&message);
        let realm = quoted(realm);
        let www_authenticate = match self {
            AuthError::MissingToken => Some(format!("Bearer realm=\"{realm}\"")),
            AuthError::InsufficientScope(scope) => Some(format!(
                "Bearer realm=\"{realm}\", error=\"insufficient_scope\", error_description=\"{description}\", scope=\"{}\"",
                quoted(scope)
            )),
            AuthError::InsufficientRole(_) => Some(format!(
                "Bearer realm=\"{realm}\", error=\"insufficient_scope\", error_description=\"{description}\""
            )),
            AuthError::MfaRequired => Some(format!(
                "Bearer realm=\"{realm}\", error=\"insufficient_user_authentication\", error_description=\"{description}\", acr_values=\"{ACR_MULTI_FACTOR}\""
            )),
            AuthError::IssuerUnavailable | AuthError::VerifierMissing => None,
            other => Some(format!(
                "Bearer realm=\"{realm}\", error=\"{}\", error_description=\"{description}\"",
                other.code()
            )),
        };
        let body = serde_json::json!({ "error": self.code(), "message": message }).to_string();
        Challenge {
            status: self.status(),
            www_authenticate,
            retry_after: (*self == AuthError::IssuerUnavailable).then_some(5),
            body,
        }
    }
}

/// RFC 6750 §3: attribute values are quoted strings of printable ASCII
/// without `"` and `\`; anything else is replaced.
fn quoted(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_token_has_no_error_attribute() {
        let c = AuthError::MissingToken.challenge("orders");
        assert_eq!(c.status, 401);
        assert_eq!(
            c.www_authenticate.as_deref(),
            Some("Bearer realm=\"orders\"")
        );
        let body: serde_json::Value = serde_json::from_str(&c.body).expect("json");
        assert_eq!(body["error"], "unauthenticated");
        assert!(body["message"].is_string());
    }

    #[test]
    fn bad_tokens_are_401_invalid_token_with_a_description() {
        for e in [
            AuthError::InvalidToken(VerifyError::Expired),
            AuthError::Revoked,
            AuthError::RevocationStatusUnknown,
            AuthError::Inactive,
        ] {
            let c = e.challenge("api");
            assert_eq!(c.status, 401, "{e:?}");
            let h = c.www_authenticate.expect("challenge");
            assert!(
                h.starts_with(
                    "Bearer realm=\"api\", error=\"invalid_token\", error_description=\""
                ),
                "{h}"
            );
        }
    }

    #[test]
    fn lacking_rights_is_403_insufficient_scope() {
        let c = AuthError::InsufficientScope("read:data".into()).challenge("api");
        assert_eq!(c.status, 403);
        assert!(c
            .www_authenticate
            .expect("challenge")
            .ends_with("error=\"insufficient_scope\", error_description=\"the token lacks the scope read:data\", scope=\"read:data\""));
        let c = AuthError::InsufficientRole("admin".into()).challenge("api");
        assert_eq!(c.status, 403);
        assert!(c
            .www_authenticate
            .expect("challenge")
            .contains("error=\"insufficient_scope\""));
    }

    #[test]
    fn missing_second_factor_is_an_rfc9470_step_up_challenge() {
        let c = AuthError::MfaRequired.challenge("api");
        assert_eq!(c.status, 401);
        assert_eq!(
            c.www_authenticate.as_deref(),
            Some("Bearer realm=\"api\", error=\"insufficient_user_authentication\", error_description=\"this needs a sign-in with a second factor\", acr_values=\"urn:latchkey:acr:mfa\"")
        );
        let body: serde_json::Value = serde_json::from_str(&c.body).expect("json");
        assert_eq!(body["error"], "insufficient_user_authentication");
    }

    #[test]
    fn malformed_header_is_400_and_issuer_down_is_503() {
        let c = AuthError::InvalidRequest(BearerError::Repeated).challenge("api");
        assert_eq!(c.status, 400);
        assert!(c
            .www_authenticate
            .expect("challenge")
            .contains("error=\"invalid_request\""));
        let c = AuthError::IssuerUnavailable.challenge("api");
        assert_eq!(
            (c.status, c.retry_after, c.www_authenticate),
            (503, Some(5), None)
        );
    }

    #[test]
    fn attribute_values_cannot_break_out_of_their_quotes() {
        assert_eq!(quoted("a\"b\\c\nd"), "a?b?c?d");
    }
}
