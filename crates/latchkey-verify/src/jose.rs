//! JWS compact serialization, JWKs and JWT claim validation.
//!
//! Why hand-written on top of bare signature primitives rather than a JWT crate:
//! the security rule we need — pick the key by `kid`, then let *the key*
//! decide the algorithm, and refuse any header whose `alg` disagrees — is the
//! opposite of the header-driven dispatch general-purpose JWT crates are built
//! around, and the code that enforces it must be small enough to audit and
//! shared verbatim with `latchkey-verify`'s users.
//!
//! The primitives (ECDSA P-256, Ed25519, RSA PKCS#1 v1.5 with SHA-256,
//! HMAC-SHA-256, SHA-256, key generation) all come from one backend,
//! `aws-lc-rs` (AWS-LC: constant-time, assembly-optimised, FIPS-validated
//! lineage); `docs/performance.md` has the measurements that chose it over
//! `ring` and RustCrypto. Public keys are parsed once, when a key enters a
//! [`KeySet`], not per token. Tests cross-check every algorithm against an
//! independent JOSE implementation (`jsonwebtoken`) and the RFC 7515 / 7638 /
//! 8037 vectors.
//!
//! Header parameters `jku`, `x5u`, `jwk` and `x5c` are never read: a token
//! cannot bring its own key. A `crit` header is refused (we implement no
//! extensions).

use std::fmt;

use aws_lc_rs::encoding::{AsBigEndian as _, AsDer as _};
use aws_lc_rs::signature::{self as sig, KeyPair as _};
use aws_lc_rs::{digest, hmac, rand::SystemRandom, rsa};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

fn sha256(bytes: &[u8]) -> digest::Digest {
    digest::digest(&digest::SHA256, bytes)
}

/// The signature algorithms Latchkey uses. There is no `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// ECDSA with P-256 and SHA-256.
    ES256,
    /// Ed25519 (RFC 8037).
    EdDSA,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// Shared-secret HMAC; only for single-service deployments, never in a JWKS.
    HS256,
}

impl Algorithm {
    /// Every algorithm this crate signs and verifies.
    pub const ALL: [Algorithm; 4] = [
        Algorithm::ES256,
        Algorithm::EdDSA,
        Algorithm::RS256,
        Algorithm::HS256,
    ];

    /// The JOSE name (`ES256`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::ES256 => "ES256",
            Algorithm::EdDSA => "EdDSA",
            Algorithm::RS256 => "RS256",
            Algorithm::HS256 => "HS256",
        }
    }

    /// Parses a configured algorithm name (exact, case-sensitive, as in JOSE).
    pub fn parse(name: &str) -> Option<Algorithm> {
        match name {
            "ES256" => Some(Algorithm::ES256),
            "EdDSA" => Some(Algorithm::EdDSA),
            "RS256" => Some(Algorithm::RS256),
            "HS256" => Some(Algorithm::HS256),
            _ => None,
        }
    }

    /// Everything but HS256.
    pub fn is_asymmetric(self) -> bool {
        self != Algorithm::HS256
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A public JSON Web Key (RFC 7517) as published in a JWKS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `EC`, `OKP` or `RSA`.
    pub kty: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    /// Curve (`P-256`, `Ed25519`).
    pub crv: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    /// EC/OKP x coordinate (base64url).
    pub x: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    /// EC y coordinate (base64url).
    pub y: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    /// RSA modulus (base64url).
    pub n: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    /// RSA exponent (base64url).
    pub e: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    /// Key id (the RFC 7638 thumbprint for Latchkey's keys).
    pub kid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    /// The one algorithm this key is for.
    pub alg: Option<String>,
    #[serde(rename = "use", skip_serializing_if = "Option::is_none", default)]
    /// `use` (`sig`).
    pub use_: Option<String>,
}

/// A JWK Set (`{"keys": [...]}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    /// The keys.
    pub keys: Vec<Jwk>,
}

impl Jwk {
    /// RFC 7638 thumbprint: SHA-256 over the required members in
    /// lexicographic order, without whitespace, base64url-encoded.
    pub fn thumbprint(&self) -> Result<String, KeyError> {
        let missing = |m: &'static str| KeyError::Invalid(format!("{} JWK lacks {m}", self.kty));
        let canonical = match self.kty.as_str() {
            "EC" => format!(
                r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
                json_str(self.crv.as_deref().ok_or_else(|| missing("crv"))?),
                json_str(self.x.as_deref().ok_or_else(|| missing("x"))?),
                json_str(self.y.as_deref().ok_or_else(|| missing("y"))?)
            ),
            "OKP" => format!(
                r#"{{"crv":{},"kty":"OKP","x":{}}}"#,
                json_str(self.crv.as_deref().ok_or_else(|| missing("crv"))?),
                json_str(self.x.as_deref().ok_or_else(|| missing("x"))?)
            ),
            "RSA" => format!(
                r#"{{"e":{},"kty":"RSA","n":{}}}"#,
                json_str(self.e.as_deref().ok_or_else(|| missing("e"))?),
                json_str(self.n.as_deref().ok_or_else(|| missing("n"))?)
            ),
            other => return Err(KeyError::Invalid(format!("unsupported kty {other:?}"))),
        };
        Ok(b64(sha256(canonical.as_bytes()).as_ref()))
    }
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// base64url without padding.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding; `None` if malformed.
pub fn b64_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.as_bytes()).ok()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
/// A key that cannot be used.
pub enum KeyError {
    #[error("invalid key: {0}")]
    /// Why (safe to log).
    Invalid(String),
}

#[derive(Clone)]
enum PublicKind {
    /// ES256, EdDSA and RS256: a public key parsed (and validated) once.
    Asymmetric(sig::ParsedPublicKey),
    Hs256(Box<hmac::Key>),
}

/// A key that verifies signatures, with its one algorithm and its `kid`.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: String,
    alg: Algorithm,
    kind: PublicKind,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({} {})", self.alg, self.kid)
    }
}

fn coordinate(text: Option<&str>, name: &str, len: usize) -> Result<Vec<u8>, KeyError> {
    let bytes = text
        .and_then(b64_decode)
        .ok_or_else(|| KeyError::Invalid(format!("{name} is missing or not base64url")))?;
    if bytes.len() != len {
        return Err(KeyError::Invalid(format!("{name} must be {len} bytes")));
    }
    Ok(bytes)
}

impl VerifyingKey {
    /// Builds a key from a public JWK. The algorithm is the JWK's `alg` if
    /// present (and it must fit the key type), else the one its type implies.
    /// Symmetric (`oct`) JWKs are refused: HS256 keys never travel in a JWKS.
    pub fn from_jwk(jwk: &Jwk) -> Result<VerifyingKey, KeyError> {
        let kid = match &jwk.kid {
            Some(k) => k.clone(),
            None => jwk.thumbprint()?,
        };
        let declared = jwk.alg.as_deref();
        let check = |expected: Algorithm| match declared {
            None => Ok(expected),
            Some(a) if a == expected.as_str() => Ok(expected),
            Some(a) => Err(KeyError::Invalid(format!(
                "a {} key cannot be used with alg {a}",
                jwk.kty
            ))),
        };
        let (alg, kind) = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
            ("EC", Some("P-256")) => {
                let x = coordinate(jwk.x.as_deref(), "x", 32)?;
                let y = coordinate(jwk.y.as_deref(), "y", 32)?;
                // SEC 1 uncompressed point: 0x04 || x || y.
                let point = [&[4u8][..], &x, &y].concat();
                let key = sig::ParsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, point)
                    .map_err(|_| KeyError::Invalid("EC point is not on P-256".into()))?;
                (check(Algorithm::ES256)?, PublicKind::Asymmetric(key))
            }
            ("OKP", Some("Ed25519")) => {
                let x = coordinate(jwk.x.as_deref(), "x", 32)?;
                let key = sig::ParsedPublicKey::new(&sig::ED25519, x)
                    .map_err(|_| KeyError::Invalid("not an Ed25519 public key".into()))?;
                (check(Algorithm::EdDSA)?, PublicKind::Asymmetric(key))
            }
            ("RSA", _) => {
                let n = jwk
                    .n
                    .as_deref()
                    .and_then(b64_decode)
                    .ok_or_else(|| KeyError::Invalid("n missing".into()))?;
                let e = jwk
                    .e
                    .as_deref()
                    .and_then(b64_decode)
                    .ok_or_else(|| KeyError::Invalid("e missing".into()))?;
                if n.len() < 256 {
                    return Err(KeyError::Invalid(
                        "RSA keys shorter than 2048 bits are refused".into(),
                    ));
                }
                let key = rsa_public_key(&n, &e)?;
                (check(Algorithm::RS256)?, PublicKind::Asymmetric(key))
            }
            (kty, crv) => {
                return Err(KeyError::Invalid(format!(
                    "unsupported key type {kty} {crv:?}"
                )))
            }
        };
        Ok(VerifyingKey { kid, alg, kind })
    }

    /// An HS256 key from a shared secret of at least 256 bits.
    pub fn hs256(kid: impl Into<String>, secret: &[u8]) -> Result<VerifyingKey, KeyError> {
        if secret.len() < 32 {
            return Err(KeyError::Invalid(
                "an HS256 secret needs at least 256 bits".into(),
            ));
        }
        Ok(VerifyingKey {
            kid: kid.into(),
            alg: Algorithm::HS256,
            kind: PublicKind::Hs256(Box::new(hmac::Key::new(hmac::HMAC_SHA256, secret))),
        })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key's one algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// Verifies `signature` over `message` with this key's own algorithm.
    pub fn verify_signature(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.kind {
            // The parsed key carries its one algorithm (fixed-size r || s for
            // ES256; RFC 8032 with a canonical S for Ed25519; PKCS#1 v1.5 with
            // SHA-256 and a 2048..8192-bit modulus for RS256).
            PublicKind::Asymmetric(key) => key.verify_sig(message, signature).is_ok(),
            // Constant-time comparison of the tag.
            PublicKind::Hs256(key) => hmac::verify(key, message, signature).is_ok(),
        }
    }
}

/// An RS256 verification key from its modulus and exponent (big-endian).
fn rsa_public_key(n: &[u8], e: &[u8]) -> Result<sig::ParsedPublicKey, KeyError> {
    rsa::PublicKeyComponents { n, e }
        .to_parsed_public_key(&sig::RSA_PKCS1_2048_8192_SHA256)
        .map_err(|e| KeyError::Invalid(format!("RSA key: {e}")))
}

enum PrivateKind {
    Es256(sig::EcdsaKeyPair),
    EdDsa(sig::Ed25519KeyPair),
    /// The key and its encoding as it was given (PKCS#1 `RSAPrivateKey` for
    /// keys written by earlier releases, PKCS#8 for keys generated now).
    Rs256(Box<rsa::KeyPair>, Vec<u8>),
    Hs256(Vec<u8>),
}

/// RFC 5915 `ECPrivateKey` for a P-256 scalar, without the optional public
/// key (the backend derives it): SEQUENCE { INTEGER 1, OCTET STRING d,
/// [0] OID prime256v1 }.
fn p256_private_key_der(d: &[u8; 32]) -> Vec<u8> {
    const HEAD: [u8; 7] = [0x30, 0x31, 0x02, 0x01, 0x01, 0x04, 0x20];
    const CURVE: [u8; 12] = [
        0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ];
    [&HEAD[..], d, &CURVE[..]].concat()
}

/// The key sizes RS256 keys are generated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsaBits {
    /// 2048-bit modulus.
    B2048,
    /// 3072-bit modulus.
    B3072,
}

/// A private key that signs tokens. No `Debug` output of the secret.
pub struct SigningKey {
    kid: String,
    alg: Algorithm,
    kind: PrivateKind,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({} {}, <redacted>)", self.alg, self.kid)
    }
}

impl SigningKey {
    /// Rebuilds a key from the bytes of [`SigningKey::to_bytes`]. The `kid` is
    /// the RFC 7638 thumbprint of the public key (for HS256: a hash of the secret).
    pub fn from_bytes(alg: Algorithm, bytes: &[u8]) -> Result<SigningKey, KeyError> {
        let kind = match alg {
            Algorithm::ES256 => {
                let d: &[u8; 32] = bytes
                    .try_into()
                    .map_err(|_| KeyError::Invalid("a P-256 private key is 32 bytes".into()))?;
                PrivateKind::Es256(
                    sig::EcdsaKeyPair::from_private_key_der(
                        &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
                        &p256_private_key_der(d),
                    )
                    .map_err(|_| KeyError::Invalid("bad P-256 private key".into()))?,
                )
            }
            Algorithm::EdDSA => {
                if bytes.len() != 32 {
                    return Err(KeyError::Invalid("an Ed25519 seed is 32 bytes".into()));
                }
                PrivateKind::EdDsa(
                    sig::Ed25519KeyPair::from_seed_unchecked(bytes)
                        .map_err(|_| KeyError::Invalid("bad Ed25519 seed".into()))?,
                )
            }
            Algorithm::RS256 => {
                let key = rsa::KeyPair::from_der(bytes)
                    .or_else(|_| rsa::KeyPair::from_pkcs8(bytes))
                    .map_err(|e| KeyError::Invalid(format!("RSA key: {e}")))?;
                PrivateKind::Rs256(Box::new(key), bytes.to_vec())
            }
            Algorithm::HS256 => {
                if bytes.len() < 32 {
                    return Err(KeyError::Invalid(
                        "an HS256 secret needs at least 256 bits".into(),
                    ));
                }
                PrivateKind::Hs256(bytes.to_vec())
            }
        };
        let mut key = SigningKey {
            kid: String::new(),
            alg,
            kind,
        };
        key.kid = match key.public_jwk() {
            Some(jwk) => jwk.thumbprint()?,
            None => match &key.kind {
                PrivateKind::Hs256(secret) => format!(
                    "hs256-{}",
                    &b64(sha256(&[b"latchkey-kid|".as_slice(), secret].concat()).as_ref())[..16]
                ),
                _ => unreachable!("only HS256 has no public JWK"),
            },
        };
        Ok(key)
    }

    /// A fresh key of `alg` from the operating system's CSPRNG (RSA:
    /// `rsa_bits`, public exponent 65537). HS256 secrets are not generated
    /// here: they come from configuration.
    pub fn generate(alg: Algorithm, rsa_bits: RsaBits) -> Result<SigningKey, KeyError> {
        let failed = |what: &str| KeyError::Invalid(format!("{what} key generation failed"));
        let bytes = match alg {
            Algorithm::ES256 => {
                let pair = sig::EcdsaKeyPair::generate(&sig::ECDSA_P256_SHA256_FIXED_SIGNING)
                    .map_err(|_| failed("P-256"))?;
                let d = pair
                    .private_key()
                    .as_be_bytes()
                    .map_err(|_| failed("P-256"))?;
                d.as_ref().to_vec()
            }
            Algorithm::EdDSA => {
                let pair = sig::Ed25519KeyPair::generate().map_err(|_| failed("Ed25519"))?;
                let seed = pair.seed().map_err(|_| failed("Ed25519"))?;
                let seed = seed.as_be_bytes().map_err(|_| failed("Ed25519"))?;
                seed.as_ref().to_vec()
            }
            Algorithm::RS256 => {
                let size = match rsa_bits {
                    RsaBits::B2048 => rsa::KeySize::Rsa2048,
                    RsaBits::B3072 => rsa::KeySize::Rsa3072,
                };
                let pair = rsa::KeyPair::generate(size).map_err(|_| failed("RSA"))?;
                let der = pair.as_der().map_err(|_| failed("RSA"))?;
                der.as_ref().to_vec()
            }
            Algorithm::HS256 => {
                return Err(KeyError::Invalid(
                    "HS256 secrets come from configuration".into(),
                ))
            }
        };
        SigningKey::from_bytes(alg, &bytes)
    }

    /// The private key material (sealed by the server before storage): the
    /// P-256 scalar (32 bytes), the Ed25519 seed (32 bytes), the RSA key as
    /// DER (PKCS#1 or PKCS#8, as it was given), the HS256 secret.
    pub fn to_bytes(&self) -> Vec<u8> {
        match &self.kind {
            PrivateKind::Es256(k) => k
                .private_key()
                .as_be_bytes()
                .map(|d| d.as_ref().to_vec())
                .unwrap_or_default(),
            PrivateKind::EdDsa(k) => k
                .seed()
                .and_then(|s| s.as_be_bytes())
                .map(|s| s.as_ref().to_vec())
                .unwrap_or_default(),
            PrivateKind::Rs256(_, der) => der.clone(),
            PrivateKind::Hs256(secret) => secret.clone(),
        }
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The public JWK with `kid`, `alg` and `use: sig`; `None` for HS256.
    pub fn public_jwk(&self) -> Option<Jwk> {
        let base = Jwk {
            kty: String::new(),
            crv: None,
            x: None,
            y: None,
            n: None,
            e: None,
            kid: None,
            alg: Some(self.alg.as_str().into()),
            use_: Some("sig".into()),
        };
        let mut jwk = match &self.kind {
            PrivateKind::Es256(k) => {
                // Uncompressed SEC 1 point: 0x04 || x || y.
                let point = k.public_key().as_ref();
                Jwk {
                    kty: "EC".into(),
                    crv: Some("P-256".into()),
                    x: point.get(1..33).map(b64),
                    y: point.get(33..65).map(b64),
                    ..base
                }
            }
            PrivateKind::EdDsa(k) => Jwk {
                kty: "OKP".into(),
                crv: Some("Ed25519".into()),
                x: Some(b64(k.public_key().as_ref())),
                ..base
            },
            PrivateKind::Rs256(k, _) => {
                let public = k.public_key();
                Jwk {
                    kty: "RSA".into(),
                    n: Some(b64(public.modulus().big_endian_without_leading_zero())),
                    e: Some(b64(public.exponent().big_endian_without_leading_zero())),
                    ..base
                }
            }
            PrivateKind::Hs256(_) => return None,
        };
        if !self.kid.is_empty() {
            jwk.kid = Some(self.kid.clone());
        }
        Some(jwk)
    }

    /// The matching verifying key.
    pub fn verifying_key(&self) -> VerifyingKey {
        let asymmetric = |algorithm: &'static dyn sig::VerificationAlgorithm, public: &[u8]| {
            // A key pair's own public key always parses.
            sig::ParsedPublicKey::new(algorithm, public)
                .map(PublicKind::Asymmetric)
                .unwrap_or_else(|_| unreachable!("the public key of a valid key pair"))
        };
        let kind = match &self.kind {
            PrivateKind::Hs256(secret) => {
                PublicKind::Hs256(Box::new(hmac::Key::new(hmac::HMAC_SHA256, secret)))
            }
            PrivateKind::Es256(k) => {
                asymmetric(&sig::ECDSA_P256_SHA256_FIXED, k.public_key().as_ref())
            }
            PrivateKind::EdDsa(k) => asymmetric(&sig::ED25519, k.public_key().as_ref()),
            PrivateKind::Rs256(k, _) => {
                let public = k.public_key();
                rsa_public_key(
                    public.modulus().big_endian_without_leading_zero(),
                    public.exponent().big_endian_without_leading_zero(),
                )
                .map(PublicKind::Asymmetric)
                .unwrap_or_else(|_| unreachable!("the public key of a valid RSA key pair"))
            }
        };
        VerifyingKey {
            kid: self.kid.clone(),
            alg: self.alg,
            kind,
        }
    }

    fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        // Signing with a valid key into a buffer of the right size cannot
        // fail; the backend reports errors only for invalid inputs.
        match &self.kind {
            PrivateKind::Es256(k) => k
                .sign(&SystemRandom::new(), message)
                .map(|s| s.as_ref().to_vec())
                .unwrap_or_default(),
            PrivateKind::EdDsa(k) => k.sign(message).as_ref().to_vec(),
            PrivateKind::Rs256(k, _) => {
                let mut signature = vec![0; k.public_modulus_len()];
                match k.sign(
                    &sig::RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    message,
                    &mut signature,
                ) {
                    Ok(()) => signature,
                    Err(_) => Vec::new(),
                }
            }
            PrivateKind::Hs256(secret) => {
                hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), message)
                    .as_ref()
                    .to_vec()
            }
        }
    }

    /// Signs `claims` as a compact JWS with header `{"alg","kid","typ"}`.
    pub fn sign<C: Serialize>(&self, typ: &str, claims: &C) -> Result<String, serde_json::Error> {
        let header = serde_json::json!({ "alg": self.alg.as_str(), "kid": self.kid, "typ": typ });
        let signing_input = format!(
            "{}.{}",
            b64(&serde_json::to_vec(&header)?),
            b64(&serde_json::to_vec(claims)?)
        );
        let signature = self.sign_bytes(signing_input.as_bytes());
        Ok(format!("{signing_input}.{}", b64(&signature)))
    }

    /// Signs an already-encoded protected header and payload (RFC test vectors).
    pub fn sign_raw(&self, protected_b64: &str, payload_b64: &str) -> String {
        let signing_input = format!("{protected_b64}.{payload_b64}");
        let signature = self.sign_bytes(signing_input.as_bytes());
        format!("{signing_input}.{}", b64(&signature))
    }
}

/// The keys a verifier trusts, looked up by `kid`.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
}

impl KeySet {
    /// A set of these keys.
    pub fn new(keys: Vec<VerifyingKey>) -> KeySet {
        KeySet { keys }
    }

    /// Builds a set from a JWKS, skipping keys we cannot use (reported back).
    pub fn from_jwks(jwks: &JwkSet) -> (KeySet, Vec<KeyError>) {
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for jwk in &jwks.keys {
            match VerifyingKey::from_jwk(jwk) {
                Ok(k) => keys.push(k),
                Err(e) => skipped.push(e),
            }
        }
        (KeySet { keys }, skipped)
    }

    /// All keys.
    pub fn keys(&self) -> &[VerifyingKey] {
        &self.keys
    }

    /// The key with this `kid`.
    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// The key for a token: by `kid`; without `kid` only if there is exactly one key.
    fn select(&self, kid: Option<&str>) -> Result<&VerifyingKey, VerifyError> {
        match kid {
            Some(kid) => self.get(kid).ok_or(VerifyError::UnknownKid),
            None if self.keys.len() == 1 => Ok(&self.keys[0]),
            None => Err(VerifyError::MissingKid),
        }
    }
}

/// Why a token was refused. Messages are safe to show to the token's bearer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the token is not a well-formed JWS compact serialization")]
    /// Not three base64url parts of JSON, or larger than `MAX_TOKEN_BYTES`.
    Malformed,
    #[error("alg \"none\" is never accepted")]
    /// `alg: none`.
    AlgNone,
    #[error("the token's alg does not match the algorithm of its key")]
    /// The header's `alg` is not the algorithm of the key its `kid` names (algorithm confusion).
    AlgorithmMismatch,
    #[error("the token has no kid and the issuer has several keys")]
    /// No `kid` while the issuer has several keys.
    MissingKid,
    #[error("the token's kid is not a key of the issuer")]
    /// A `kid` the issuer does not publish.
    UnknownKid,
    #[error("the token carries a critical header extension we do not support")]
    /// A `crit` header.
    UnsupportedCritical,
    #[error("the signature is invalid")]
    /// The signature does not verify.
    BadSignature,
    #[error("the token's typ is not the expected one")]
    /// Header `typ` is not the expected one.
    WrongType,
    #[error("the token was issued by another issuer")]
    /// `iss` is not the expected issuer.
    WrongIssuer,
    #[error("the token is not meant for this audience")]
    /// `aud` contains none of the expected audiences.
    WrongAudience,
    #[error("the token has expired")]
    /// `exp` has passed (beyond the leeway).
    Expired,
    #[error("the token is not valid yet")]
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    #[error("the token lacks a required claim")]
    /// `exp` is missing.
    MissingClaim,
}

/// What a token must satisfy besides its signature.
#[derive(Debug, Clone)]
pub struct Validation {
    /// Exact `iss`.
    pub issuer: String,
    /// At least one of these must be in `aud`; empty = `aud` not checked.
    pub audiences: Vec<String>,
    /// Expected header `typ` (`at+jwt` for access tokens); `None` = not checked.
    pub typ: Option<String>,
    /// Clock-skew tolerance in seconds for `exp` and `nbf` (default 30).
    pub leeway_secs: i64,
}

impl Validation {
    /// Validation for `issuer`: no audience check, no `typ` check, 30 s leeway.
    pub fn new(issuer: impl Into<String>) -> Validation {
        Validation {
            issuer: issuer.into(),
            audiences: Vec::new(),
            typ: None,
            leeway_secs: 30,
        }
    }
}

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    kid: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    typ: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

/// `aud` may be a string or an array of strings (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// One audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl Audience {
    /// Is `aud` one of them?
    pub fn contains(&self, aud: &str) -> bool {
        match self {
            Audience::One(a) => a == aud,
            Audience::Many(list) => list.iter().any(|a| a == aud),
        }
    }
}

#[derive(Deserialize)]
struct Registered {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    nbf: Option<i64>,
}

/// A verified token: its header facts and its claims.
#[derive(Debug, Clone)]
pub struct Verified<C> {
    /// The `kid` of the key that verified the token.
    pub kid: String,
    /// That key's algorithm.
    pub alg: Algorithm,
    /// The claims.
    pub claims: C,
}

/// Splits a compact JWS and decodes its header without verifying anything.
/// For display (`latchkey token inspect`) only.
pub fn decode_unverified(
    token: &str,
) -> Result<(serde_json::Value, serde_json::Value), VerifyError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed);
    };
    let header = b64_decode(h)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(VerifyError::Malformed)?;
    let payload = b64_decode(p)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(VerifyError::Malformed)?;
    Ok((header, payload))
}

/// Largest token accepted before any parsing (a guard against memory abuse).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Verifies a compact JWS token and validates its claims at time `now`
/// (Unix seconds). The signature is checked before any claim is read.
pub fn verify<C: DeserializeOwned>(
    token: &str,
    keys: &KeySet,
    validation: &Validation,
    now: i64,
) -> Result<Verified<C>, VerifyError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(VerifyError::Malformed);
    }
    let mut dots = token.match_indices('.').map(|(i, _)| i);
    let (Some(d1), Some(d2), None) = (dots.next(), dots.next(), dots.next()) else {
        return Err(VerifyError::Malformed);
    };
    let (header_b64, payload_b64, signature_b64) =
        (&token[..d1], &token[d1 + 1..d2], &token[d2 + 1..]);
    let header_bytes = b64_decode(header_b64).ok_or(VerifyError::Malformed)?;
    let header: Header<'_> =
        serde_json::from_slice(&header_bytes).map_err(|_| VerifyError::Malformed)?;
    if header.alg.eq_ignore_ascii_case("none") {
        return Err(VerifyError::AlgNone);
    }
    if header.crit.is_some() {
        return Err(VerifyError::UnsupportedCritical);
    }
    let key = keys.select(header.kid.as_deref())?;
    // The key decides the algorithm; a header that disagrees is refused.
    if header.alg != key.alg.as_str() {
        return Err(VerifyError::AlgorithmMismatch);
    }
    let signature = b64_decode(signature_b64).ok_or(VerifyError::Malformed)?;
    if !key.verify_signature(&token.as_bytes()[..d2], &signature) {
        return Err(VerifyError::BadSignature);
    }
    if let Some(expected) = &validation.typ {
        let typ = header.typ.as_deref().unwrap_or_default();
        let typ = typ.strip_prefix("application/").unwrap_or(typ);
        if !typ.eq_ignore_ascii_case(expected) {
            return Err(VerifyError::WrongType);
        }
    }
    let payload = b64_decode(payload_b64).ok_or(VerifyError::Malformed)?;
    let registered: Registered =
        serde_json::from_slice(&payload).map_err(|_| VerifyError::Malformed)?;
    if registered.iss.as_deref() != Some(validation.issuer.as_str()) {
        return Err(VerifyError::WrongIssuer);
    }
    if !validation.audiences.is_empty() {
        let aud = registered.aud.as_ref().ok_or(VerifyError::WrongAudience)?;
        if !validation.audiences.iter().any(|a| aud.contains(a)) {
            return Err(VerifyError::WrongAudience);
        }
    }
    let exp = registered.exp.ok_or(VerifyError::MissingClaim)?;
    if now >= exp.saturating_add(validation.leeway_secs) {
        return Err(VerifyError::Expired);
    }
    if let Some(nbf) = registered.nbf {
        if now.saturating_add(validation.leeway_secs) < nbf {
            return Err(VerifyError::NotYetValid);
        }
    }
    let claims: C = serde_json::from_slice(&payload).map_err(|_| VerifyError::Malformed)?;
    Ok(Verified {
        kid: key.kid.clone(),
        alg: key.alg,
        claims,
    })
}
