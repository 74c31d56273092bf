//! Randomness, hashing and secret types shared by every domain module.
//!
//! Owns: the one CSPRNG helper ([`random_bytes`]), the high-entropy secret
//! token type ([`SecretToken`]) whose only storable form is its SHA-256
//! ([`TokenHash`]), constant-time comparison, and the master key from which
//! purpose-specific keys are derived.
//!
//! Must not: know about HTTP, storage or any domain type.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Fills `N` bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    OsRng.fill_bytes(&mut out);
    out
}

/// Constant-time equality of two byte strings (lengths are not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Base64url without padding, the encoding of every token we emit.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding.
pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.as_bytes()).ok()
}

/// SHA-256 of a secret, hex-encoded: the only form in which session ids,
/// refresh tokens, codes and client secrets are stored.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash(String);

impl TokenHash {
    pub fn of(secret: &str) -> Self {
        TokenHash(hex::encode(Sha256::digest(secret.as_bytes())))
    }
    pub fn from_stored(hex: String) -> Self {
        TokenHash(hex)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A hash is not secret, but printing it helps nobody; keep logs short.
        write!(f, "TokenHash({}…)", &self.0[..8.min(self.0.len())])
    }
}

/// A 256-bit random bearer secret (session id, refresh token, code...).
///
/// It has no `Display`, and its `Debug` is redacted, so it cannot end up in
/// a log line by accident. Compare with [`SecretToken::matches`].
#[derive(Clone)]
pub struct SecretToken(String);

impl SecretToken {
    /// A fresh token: 32 bytes from the CSPRNG, base64url (43 characters).
    pub fn generate() -> Self {
        SecretToken(b64url(&random_bytes::<32>()))
    }

    /// Wraps a token received from a client. Rejects anything that is not
    /// 43 base64url characters, so garbage never reaches a query.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() == 43
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            Some(SecretToken(text.to_owned()))
        } else {
            None
        }
    }

    /// The value to hand to the client (cookie value, JSON field).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }

    pub fn matches(&self, hash: &TokenHash) -> bool {
        constant_time_eq(self.hash().as_str().as_bytes(), hash.as_str().as_bytes())
    }
}

impl std::fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretToken(<redacted>)")
    }
}

/// The deployment's master key: 32 bytes, written as base64url without padding.
/// Every other key (CSRF, sealing of private keys) is derived from it.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MasterKeyError {
    #[error("the master key is not base64url (no padding): generate one with `latchkey keys generate-master`")]
    NotBase64,
    #[error("the master key must decode to exactly 32 bytes, got {0}: generate one with `latchkey keys generate-master`")]
    WrongLength(usize),
}

impl MasterKey {
    pub fn generate() -> Self {
        MasterKey(random_bytes::<32>())
    }

    pub fn parse(text: &str) -> Result<Self, MasterKeyError> {
        let bytes = b64url_decode(text.trim()).ok_or(MasterKeyError::NotBase64)?;
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| MasterKeyError::WrongLength(bytes.len()))?;
        Ok(MasterKey(arr))
    }

    pub fn encode(&self) -> String {
        b64url(&self.0)
    }

    /// Derives an independent 32-byte key for one purpose (HMAC-SHA256 as a KDF;
    /// the master key is uniformly random, so no extract step is needed).
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&hmac_sha256(&self.0, purpose.as_bytes()));
        out
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// Seals `plaintext` with XChaCha20-Poly1305 under `key` (a purpose key
/// derived from the master key), binding it to `aad`. Output: base64url of
/// nonce ‖ ciphertext.
pub fn seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> String {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    let cipher = chacha20poly1305::XChaCha20Poly1305::new(key.into());
    let nonce = random_bytes::<24>();
    // Encryption with a fresh nonce and in-memory buffers cannot fail.
    let sealed = cipher
        .encrypt(
            chacha20poly1305::XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .unwrap_or_default();
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    b64url(&out)
}

/// Opens what [`seal`] produced; `None` for a wrong key, wrong `aad` or tampering.
pub fn unseal(key: &[u8; 32], aad: &[u8], sealed: &str) -> Option<Vec<u8>> {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    let bytes = b64url_decode(sealed).filter(|b| b.len() > 24)?;
    let cipher = chacha20poly1305::XChaCha20Poly1305::new(key.into());
    cipher
        .decrypt(
            chacha20poly1305::XNonce::from_slice(&bytes[..24]),
            Payload {
                msg: &bytes[24..],
                aad,
            },
        )
        .ok()
}

pub fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_bit_and_distinct() {
        let a = SecretToken::generate();
        let b = SecretToken::generate();
        assert_eq!(b64url_decode(a.expose()).map(|v| v.len()), Some(32));
        assert_ne!(a.expose(), b.expose());
        assert!(a.matches(&a.hash()));
        assert!(!a.matches(&b.hash()));
    }

    #[test]
    fn token_debug_is_redacted() {
        let t = SecretToken::generate();
        assert!(!format!("{t:?}").contains(t.expose()));
    }

    #[test]
    fn token_parse_rejects_garbage() {
        assert!(SecretToken::parse("short").is_none());
        assert!(SecretToken::parse(&"a".repeat(44)).is_none());
        assert!(SecretToken::parse(&format!("{}'", "a".repeat(42))).is_none());
        assert!(SecretToken::parse(&"a".repeat(43)).is_some());
    }

    #[test]
    fn sha256_matches_known_vector() {
        assert_eq!(
            TokenHash::of("abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn master_key_round_trips_and_rejects_bad_lengths() {
        let k = MasterKey::generate();
        let parsed = MasterKey::parse(&k.encode()).expect("valid key");
        assert_eq!(parsed.derive("x"), k.derive("x"));
        assert_ne!(k.derive("x"), k.derive("y"));
        assert!(matches!(
            MasterKey::parse("abc"),
            Err(MasterKeyError::WrongLength(2))
        ));
        assert!(matches!(
            MasterKey::parse("!!!"),
            Err(MasterKeyError::NotBase64)
        ));
    }
}
