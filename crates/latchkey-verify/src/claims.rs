//! The claims of a verified access token.
//!
//! [`Claims`] holds what most APIs need from a Latchkey access token (RFC
//! 9068, with the sign-in's `auth_time`, `amr` and `acr` of §2.2.1, plus
//! Latchkey's `roles` and `sid`). An API that wants other claims
//! declares its own `Deserialize` type and asks for it
//! ([`Verified::claims_as`], or the extractor `Authenticated<MyClaims>`).
//!
//! Must not: verify anything; a `Claims` value exists only after the
//! signature and the registered claims were checked.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::AuthError;
use crate::jose::{self, Algorithm, Audience};

/// The `amr` value (RFC 8176) of a sign-in with a second factor.
pub const AMR_MULTI_FACTOR: &str = "mfa";

/// The `acr` Latchkey gives a sign-in with a second factor (and the value of
/// `acr_values` that asks for one). A sign-in without is
/// `urn:latchkey:acr:1fa`.
pub const ACR_MULTI_FACTOR: &str = "urn:latchkey:acr:mfa";

/// The claims every Latchkey access token carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The issuer.
    #[serde(default)]
    pub iss: String,
    /// The user id, or the client id for client-credentials tokens.
    pub sub: String,
    /// The audience(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Expiry (Unix seconds).
    pub exp: i64,
    /// Issued at (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// The token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The client the token was issued to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Space-separated scopes (RFC 9068 §2.2.3).
    #[serde(default)]
    pub scope: String,
    /// The user's roles (Latchkey's `tokens.roles_claim`, `roles` by default).
    #[serde(default)]
    pub roles: Vec<String>,
    /// The Latchkey session the token belongs to (absent for machine tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// When the user signed in (Unix seconds; RFC 9068 §2.2.1). Absent for
    /// machine tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    /// How the user signed in (RFC 8176 values: `pwd`, `otp`, `hwk`, `user`,
    /// `mfa`, ...). Empty for machine tokens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// The authentication context class of the sign-in
    /// ([`ACR_MULTI_FACTOR`] when it had a second factor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
}

impl Claims {
    /// The scope tokens.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split(' ').filter(|s| !s.is_empty())
    }

    /// Does the token carry scope `name`?
    pub fn has_scope(&self, name: &str) -> bool {
        self.scopes().any(|s| s == name)
    }

    /// Does the token carry role `name`?
    pub fn has_role(&self, name: &str) -> bool {
        self.roles.iter().any(|r| r == name)
    }

    /// Did the sign-in behind the token use a second factor (its `amr`
    /// contains `mfa`)? Latchkey sets `acr` to [`ACR_MULTI_FACTOR`] exactly
    /// then; `amr` is what is checked.
    pub fn is_multi_factor(&self) -> bool {
        self.amr.iter().any(|m| m == AMR_MULTI_FACTOR)
    }
}

/// A token that passed every check: its claims and where they came from.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The standard claims.
    pub claims: Claims,
    /// The key that verified it (`None` for introspected opaque tokens).
    pub kid: Option<String>,
    /// The algorithm of that key (`None` for introspected opaque tokens).
    pub alg: Option<Algorithm>,
    pub(crate) source: Source,
}

#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// A JWT; its payload can be read again as another type.
    Jwt(Arc<str>),
    /// An introspection answer (RFC 7662 members).
    Introspection(Arc<serde_json::Value>),
}

impl Verified {
    /// The token's claims as the caller's own type (the payload of a JWT, or
    /// the introspection answer of an opaque token).
    pub fn claims_as<C: serde::de::DeserializeOwned>(&self) -> Result<C, AuthError> {
        let malformed = || AuthError::InvalidToken(jose::VerifyError::Malformed);
        match &self.source {
            Source::Jwt(token) => {
                let payload = token
                    .split('.')
                    .nth(1)
                    .and_then(jose::b64_decode)
                    .ok_or_else(malformed)?;
                serde_json::from_slice(&payload).map_err(|_| malformed())
            }
            Source::Introspection(answer) => {
                C::deserialize(answer.as_ref()).map_err(|_| malformed())
            }
        }
    }

    /// One claim by name, as JSON (`None` when absent).
    pub fn claim(&self, name: &str) -> Option<serde_json::Value> {
        let all: serde_json::Map<String, serde_json::Value> = self.claims_as().ok()?;
        all.get(name).cloned()
    }
}
