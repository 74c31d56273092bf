//! PKCE (RFC 7636) with S256 only: `plain` is refused, and a code issued
//! without a challenge cannot exist (every authorization request needs one).

use sha2::{Digest, Sha256};

use crate::crypto::{b64url, constant_time_eq};

/// A `code_challenge` sent with `code_challenge_method=S256`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeChallenge(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PkceError {
    #[error("code_challenge is required (PKCE with S256)")]
    Missing,
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
        if method != Some("S256") {
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

#[cfg(test)]
mod tests {
    use super::*;

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
