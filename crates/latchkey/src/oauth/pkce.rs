//! PKCE (RFC 7636) with S256 only: `plain` is refused.
//!
//! Owns the one rule for when a request may go without PKCE
//! ([`challenge_for_request`]) and what the token endpoint then demands
//! ([`check_at_token`]). Every authorization request needs a challenge,
//! except — when a confidential client opted out (`require_pkce = false`,
//! RFC 9700 §2.1.1) — an OpenID Connect request carrying a `nonce`, which
//! then binds the code to the client's session instead. A code issued
//! without a challenge refuses a `code_verifier` (PKCE downgrade, RFC 9700
//! §4.8.2) and is void once the client's opt-out is withdrawn.

use sha2::{Digest, Sha256};

use crate::crypto::{b64url, constant_time_eq};

/// A `code_challenge` sent with `code_challenge_method=S256`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeChallenge(String);

/// The PKCE methods accepted (and advertised in the discovery document).
pub const METHODS: &[&str] = &["S256"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PkceError {
    #[error("code_challenge is required (PKCE with S256)")]
    Missing,
    #[error("code_challenge is required (PKCE with S256); this client may go without it only in an OpenID Connect request (scope openid) with a nonce")]
    MissingWithoutNonce,
    #[error("code_challenge_method must be S256; plain is not allowed")]
    MethodNotAllowed,
    #[error("code_challenge must be 43 base64url characters (a SHA-256)")]
    Malformed,
}

impl CodeChallenge {
    pub fn parse(
        challenge: Option<&str>,
        method: Option<&str>,
    ) -> Result<CodeChallenge, PkceError> {
        let challenge = challenge
            .filter(|c| !c.is_empty())
            .ok_or(PkceError::Missing)?;
        if !method.is_some_and(|m| METHODS.contains(&m)) {
            return Err(PkceError::MethodNotAllowed);
        }
        if challenge.len() != 43
            || !challenge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(PkceError::Malformed);
        }
        Ok(CodeChallenge(challenge.to_owned()))
    }

    pub(crate) fn from_stored(text: String) -> CodeChallenge {
        CodeChallenge(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Does `verifier` (43–128 unreserved characters) hash to this challenge?
    pub fn verify(&self, verifier: &str) -> bool {
        let valid = (43..=128).contains(&verifier.len())
            && verifier
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        valid
            && constant_time_eq(
                b64url(&Sha256::digest(verifier.as_bytes())).as_bytes(),
                self.0.as_bytes(),
            )
    }
}

/// A client's PKCE policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PkcePolicy {
    /// Every request needs S256 (every public client; the default).
    Required,
    /// A confidential client that opted out: OIDC requests with a nonce may omit PKCE.
    OptionalWithNonce,
}

impl PkcePolicy {
    /// The policy of a client: the opt-out counts for confidential clients only.
    pub fn of(confidential: bool, require_pkce: bool) -> PkcePolicy {
        if confidential && !require_pkce {
            PkcePolicy::OptionalWithNonce
        } else {
            PkcePolicy::Required
        }
    }
}

/// The challenge of an authorization request, or `None` where the policy
/// lets it go without one (`oidc_with_nonce`: scope `openid` and a `nonce`).
/// A challenge that is sent is always checked.
pub fn challenge_for_request(
    policy: PkcePolicy,
    challenge: Option<&str>,
    method: Option<&str>,
    oidc_with_nonce: bool,
) -> Result<Option<CodeChallenge>, PkceError> {
    let absent = challenge.is_none_or(str::is_empty) && method.is_none_or(str::is_empty);
    match (absent, policy, oidc_with_nonce) {
        (false, _, _) => CodeChallenge::parse(challenge, method).map(Some),
        (true, PkcePolicy::OptionalWithNonce, true) => Ok(None),
        (true, PkcePolicy::OptionalWithNonce, false) => Err(PkceError::MissingWithoutNonce),
        (true, PkcePolicy::Required, _) => Err(PkceError::Missing),
    }
}

/// Why the token endpoint refuses a code's PKCE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPkceError {
    /// The code has a challenge and no `code_verifier` came (`invalid_request`).
    VerifierMissing,
    /// The verifier does not hash to the challenge (`invalid_grant`).
    Mismatch,
    /// A `code_verifier` for a code issued without a challenge: a downgrade (`invalid_grant`).
    Downgrade,
    /// A code issued without PKCE, but the client no longer may (`invalid_grant`).
    NoLongerAllowed,
}

/// What the token endpoint checks for a code issued with `stored` (or without a challenge).
pub fn check_at_token(
    policy: PkcePolicy,
    stored: Option<&CodeChallenge>,
    verifier: Option<&str>,
) -> Result<(), TokenPkceError> {
    match (stored, verifier) {
        (Some(_), None) => Err(TokenPkceError::VerifierMissing),
        (Some(challenge), Some(v)) if challenge.verify(v) => Ok(()),
        (Some(_), Some(_)) => Err(TokenPkceError::Mismatch),
        (None, Some(_)) => Err(TokenPkceError::Downgrade),
        (None, None) if policy == PkcePolicy::OptionalWithNonce => Ok(()),
        (None, None) => Err(TokenPkceError::NoLongerAllowed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_opted_out_confidential_client_with_an_oidc_nonce_request_skips_pkce() {
        let optional = PkcePolicy::of(true, false);
        assert_eq!(optional, PkcePolicy::OptionalWithNonce);
        assert_eq!(
            PkcePolicy::of(false, false),
            PkcePolicy::Required,
            "public clients never"
        );
        assert_eq!(PkcePolicy::of(true, true), PkcePolicy::Required);
        assert_eq!(challenge_for_request(optional, None, None, true), Ok(None));
        assert_eq!(
            challenge_for_request(optional, None, None, false),
            Err(PkceError::MissingWithoutNonce)
        );
        assert_eq!(
            challenge_for_request(PkcePolicy::Required, None, None, true),
            Err(PkceError::Missing)
        );
        // A challenge that is sent is checked, opt-out or not.
        assert_eq!(
            challenge_for_request(optional, Some("short"), Some("S256"), true),
            Err(PkceError::Malformed)
        );
        assert_eq!(
            challenge_for_request(optional, None, Some("S256"), true),
            Err(PkceError::Missing)
        );
    }

    #[test]
    fn token_endpoint_keeps_downgrade_protection() {
        let c = CodeChallenge(b64url(&Sha256::digest(b"x".repeat(43))));
        let v = "x".repeat(43);
        let optional = PkcePolicy::OptionalWithNonce;
        assert_eq!(check_at_token(optional, Some(&c), Some(&v)), Ok(()));
        assert_eq!(
            check_at_token(optional, Some(&c), None),
            Err(TokenPkceError::VerifierMissing)
        );
        assert_eq!(
            check_at_token(optional, Some(&c), Some(&"y".repeat(43))),
            Err(TokenPkceError::Mismatch)
        );
        assert_eq!(
            check_at_token(optional, None, Some(&v)),
            Err(TokenPkceError::Downgrade)
        );
        assert_eq!(check_at_token(optional, None, None), Ok(()));
        assert_eq!(
            check_at_token(PkcePolicy::Required, None, None),
            Err(TokenPkceError::NoLongerAllowed)
        );
    }

    #[test]
    fn rfc7636_appendix_b_vector() {
        let c = CodeChallenge::parse(
            Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"),
            Some("S256"),
        )
        .expect("valid");
        assert!(c.verify("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"));
        assert!(!c.verify("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj"));
    }

    #[test]
    fn plain_and_missing_are_refused() {
        assert_eq!(
            CodeChallenge::parse(
                Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"),
                Some("plain")
            ),
            Err(PkceError::MethodNotAllowed)
        );
        assert_eq!(
            CodeChallenge::parse(Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"), None),
            Err(PkceError::MethodNotAllowed)
        );
        assert_eq!(
            CodeChallenge::parse(None, Some("S256")),
            Err(PkceError::Missing)
        );
        assert_eq!(
            CodeChallenge::parse(Some("short"), Some("S256")),
            Err(PkceError::Malformed)
        );
    }

    #[test]
    fn verifier_charset_and_length_are_enforced() {
        let verifier = "a".repeat(42);
        let c = CodeChallenge(b64url(&Sha256::digest(verifier.as_bytes())));
        assert!(!c.verify(&verifier), "too short even if the hash matches");
    }
}
