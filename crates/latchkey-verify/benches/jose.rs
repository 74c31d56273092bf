//! What signing and verifying a JWT costs, next to the bare signature primitive.
//!
//! Run with `cargo bench -p latchkey-verify --bench jose`. For ES256, EdDSA
//! and RS256 (2048-bit), in the same run:
//!
//! - `<alg>/sign`: `SigningKey::sign` of a typical RFC 9068 access-token claim
//!   set (header + claims serialisation, base64url, signature);
//! - `<alg>/sign_bare`: the bare primitive of the backend `jose` uses
//!   (aws-lc-rs) over the same signing input, key prepared in advance;
//! - `<alg>/verify`: `jose::verify` (split, header parse, key lookup by `kid`,
//!   signature, `typ`/`iss`/`aud`/`exp`/`nbf` checks, claims deserialised);
//! - `<alg>/verify_bare`: the bare aws-lc-rs verification of the same
//!   signature over the same signing input, public key parsed in advance;
//! - `<alg>/{sign,verify}_ring` and `<alg>/{sign,verify}_rustcrypto`: the
//!   same bare operations with `ring` (the alternative backend, already in the
//!   tree through rustls) and with the RustCrypto crates `jose` used before
//!   (`p256`, `ed25519-dalek` with `verify_strict`, `rsa`), so the choice of
//!   backend can be re-measured on any machine.
//!
//! Every benchmark has `Throughput::Elements(1)`, so criterion's `elem/s` is
//! tokens per second on one core. The ratio `verify / verify_bare` is the
//! overhead of the JOSE layer.
//!
//! Time is measured as CPU time of the benchmarking thread (nanoseconds
//! from `/proc/thread-self/schedstat`), not wall time: on a busy machine
//! wall time counts whatever else got the core, CPU time does not. Where
//! that file cannot be read, wall time is used (and said so on stderr).
//! That clock advances at scheduler ticks, so samples are long (flat
//! sampling, about 200 ms each).
//! Results and their reading: `docs/performance.md`.

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use serde::{Deserialize, Serialize};

use latchkey_verify::jose::{self, Algorithm, KeySet, SigningKey, Validation};

#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::{thread_cpu_nanos, CpuTime};

const ISSUER: &str = "https://id.example.com";
const NOW: i64 = 1_767_225_600;

/// The claims of a typical Latchkey access token (RFC 9068).
#[derive(Serialize, Deserialize)]
struct AccessClaims {
    iss: String,
    sub: String,
    aud: String,
    exp: i64,
    iat: i64,
    nbf: i64,
    jti: String,
    client_id: String,
    scope: String,
    roles: Vec<String>,
    sid: String,
}

fn claims() -> AccessClaims {
    AccessClaims {
        iss: ISSUER.into(),
        sub: "0193a3c2-5b7e-7c1d-9f2a-4e8b6d0c1a2f".into(),
        aud: "orders-api".into(),
        exp: NOW + 900,
        iat: NOW,
        nbf: NOW,
        jti: "0193a3c2-5b7f-7a40-8e11-2c9d4f6b8a01".into(),
        client_id: "lk_3f9a2c7e1b5d4a6c".into(),
        scope: "openid profile email offline_access".into(),
        roles: vec!["user".into(), "billing".into()],
        sid: "0193a3c2-4f10-7b3e-a5c6-d7e8f9a0b1c2".into(),
    }
}

/// One backend's bare primitives, built from the same private key bytes.
trait Bare {
    fn sign(&self, message: &[u8]) -> Vec<u8>;
    fn verify(&self, message: &[u8], signature: &[u8]) -> bool;
}

/// aws-lc-rs, the backend `jose` uses.
enum AwsLc {
    Es256(
        aws_lc_rs::signature::EcdsaKeyPair,
        aws_lc_rs::signature::ParsedPublicKey,
    ),
    EdDsa(
        aws_lc_rs::signature::Ed25519KeyPair,
        aws_lc_rs::signature::ParsedPublicKey,
    ),
    Rs256(
        aws_lc_rs::rsa::KeyPair,
        aws_lc_rs::signature::ParsedPublicKey,
    ),
}

impl AwsLc {
    fn new(alg: Algorithm, key: &SigningKey) -> AwsLc {
        use aws_lc_rs::signature::{self as sig, KeyPair as _};
        let bytes = key.to_bytes();
        match alg {
            Algorithm::ES256 => {
                let mut der = vec![0x30, 0x31, 0x02, 0x01, 0x01, 0x04, 0x20];
                der.extend_from_slice(&bytes);
                der.extend_from_slice(&[
                    0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
                ]);
                let k = sig::EcdsaKeyPair::from_private_key_der(
                    &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &der,
                )
                .expect("P-256 key");
                let v = sig::ParsedPublicKey::new(
                    &sig::ECDSA_P256_SHA256_FIXED,
                    k.public_key().as_ref(),
                )
                .expect("public key");
                AwsLc::Es256(k, v)
            }
            Algorithm::EdDSA => {
                let k = sig::Ed25519KeyPair::from_seed_unchecked(&bytes).expect("seed");
                let v = sig::ParsedPublicKey::new(&sig::ED25519, k.public_key().as_ref())
                    .expect("public key");
                AwsLc::EdDsa(k, v)
            }
            Algorithm::RS256 => {
                let k = aws_lc_rs::rsa::KeyPair::from_pkcs8(&bytes)
                    .or_else(|_| aws_lc_rs::rsa::KeyPair::from_der(&bytes))
                    .expect("RSA key");
                let public = k.public_key();
                let v = aws_lc_rs::rsa::PublicKeyComponents {
                    n: public.modulus().big_endian_without_leading_zero(),
                    e: public.exponent().big_endian_without_leading_zero(),
                }
                .to_parsed_public_key(&sig::RSA_PKCS1_2048_8192_SHA256)
                .expect("public key");
                AwsLc::Rs256(k, v)
            }
            Algorithm::HS256 => unreachable!("not benchmarked"),
        }
    }
}

impl Bare for AwsLc {
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        match self {
            AwsLc::Es256(k, _) => k.sign(&rng, message).expect("sign").as_ref().to_vec(),
            AwsLc::EdDsa(k, _) => k.sign(message).as_ref().to_vec(),
            AwsLc::Rs256(k, _) => {
                let mut out = vec![0; k.public_modulus_len()];
                k.sign(
                    &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                    &rng,
                    message,
                    &mut out,
                )
                .expect("sign");
                out
            }
        }
    }
    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            AwsLc::Es256(_, v) | AwsLc::EdDsa(_, v) | AwsLc::Rs256(_, v) => {
                v.verify_sig(message, signature).is_ok()
            }
        }
    }
}

/// ring: parses the public key on every verification (it has no parsed-key type).
enum Ring {
    Es256(ring::signature::EcdsaKeyPair, Vec<u8>),
    EdDsa(ring::signature::Ed25519KeyPair, Vec<u8>),
    Rs256(ring::rsa::KeyPair, Vec<u8>),
}

impl Ring {
    fn new(alg: Algorithm, key: &SigningKey) -> Ring {
        use ring::signature::{self as sig, KeyPair as _};
        let rng = ring::rand::SystemRandom::new();
        let bytes = key.to_bytes();
        match alg {
            Algorithm::ES256 => {
                // ring imports P-256 keys as PKCS#8 only, and needs the public key.
                let jwk = key.public_jwk().expect("jwk");
                let x = jose::b64_decode(jwk.x.as_deref().expect("x")).expect("x");
                let y = jose::b64_decode(jwk.y.as_deref().expect("y")).expect("y");
                let public = [&[4u8][..], &x, &y].concat();
                let k = sig::EcdsaKeyPair::from_private_key_and_public_key(
                    &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &bytes,
                    &public,
                    &rng,
                )
                .expect("P-256 key");
                Ring::Es256(k, public)
            }
            Algorithm::EdDSA => {
                let k = sig::Ed25519KeyPair::from_seed_unchecked(&bytes).expect("seed");
                let public = k.public_key().as_ref().to_vec();
                Ring::EdDsa(k, public)
            }
            Algorithm::RS256 => {
                let k = ring::rsa::KeyPair::from_pkcs8(&bytes)
                    .or_else(|_| ring::rsa::KeyPair::from_der(&bytes))
                    .expect("RSA key");
                let public = k.public_key().as_ref().to_vec();
                Ring::Rs256(k, public)
            }
            Algorithm::HS256 => unreachable!("not benchmarked"),
        }
    }
}

impl Bare for Ring {
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = ring::rand::SystemRandom::new();
        match self {
            Ring::Es256(k, _) => k.sign(&rng, message).expect("sign").as_ref().to_vec(),
            Ring::EdDsa(k, _) => k.sign(message).as_ref().to_vec(),
            Ring::Rs256(k, _) => {
                let mut out = vec![0; k.public().modulus_len()];
                k.sign(&ring::signature::RSA_PKCS1_SHA256, &rng, message, &mut out)
                    .expect("sign");
                out
            }
        }
    }
    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        use ring::signature as sig;
        let (alg, public): (&'static dyn sig::VerificationAlgorithm, &[u8]) = match self {
            Ring::Es256(_, p) => (&sig::ECDSA_P256_SHA256_FIXED, p),
            Ring::EdDsa(_, p) => (&sig::ED25519, p),
            Ring::Rs256(_, p) => (&sig::RSA_PKCS1_2048_8192_SHA256, p),
        };
        sig::UnparsedPublicKey::new(alg, public)
            .verify(message, signature)
            .is_ok()
    }
}

/// The RustCrypto crates `jose` used before.
enum RustCrypto {
    Es256(p256::ecdsa::SigningKey, p256::ecdsa::VerifyingKey),
    EdDsa(ed25519_dalek::SigningKey, ed25519_dalek::VerifyingKey),
    Rs256(
        rsa::pkcs1v15::SigningKey<sha2::Sha256>,
        rsa::pkcs1v15::VerifyingKey<sha2::Sha256>,
    ),
}

impl RustCrypto {
    fn new(alg: Algorithm, key: &SigningKey) -> RustCrypto {
        let bytes = key.to_bytes();
        match alg {
            Algorithm::ES256 => {
                let k = p256::ecdsa::SigningKey::from_slice(&bytes).expect("P-256 key");
                let v = *k.verifying_key();
                RustCrypto::Es256(k, v)
            }
            Algorithm::EdDSA => {
                let seed: [u8; 32] = bytes.as_slice().try_into().expect("Ed25519 seed");
                let k = ed25519_dalek::SigningKey::from_bytes(&seed);
                let v = k.verifying_key();
                RustCrypto::EdDsa(k, v)
            }
            Algorithm::RS256 => {
                use rsa::pkcs8::DecodePrivateKey as _;
                let private = rsa::RsaPrivateKey::from_pkcs8_der(&bytes).expect("RSA key");
                let v = rsa::pkcs1v15::VerifyingKey::new(private.to_public_key());
                RustCrypto::Rs256(rsa::pkcs1v15::SigningKey::new(private), v)
            }
            Algorithm::HS256 => unreachable!("not benchmarked"),
        }
    }
}

impl Bare for RustCrypto {
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        use rsa::signature::{SignatureEncoding as _, Signer as _};
        match self {
            RustCrypto::Es256(k, _) => {
                let sig: p256::ecdsa::Signature = k.sign(message);
                sig.to_bytes().to_vec()
            }
            RustCrypto::EdDsa(k, _) => k.sign(message).to_bytes().to_vec(),
            RustCrypto::Rs256(k, _) => k.sign(message).to_vec(),
        }
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        use rsa::signature::Verifier as _;
        match self {
            RustCrypto::Es256(_, v) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|s| v.verify(message, &s).is_ok()),
            RustCrypto::EdDsa(_, v) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|s| v.verify_strict(message, &s).is_ok()),
            RustCrypto::Rs256(_, v) => rsa::pkcs1v15::Signature::try_from(signature)
                .is_ok_and(|s| v.verify(message, &s).is_ok()),
        }
    }
}

fn bench_algorithm(c: &mut Criterion<CpuTime>, alg: Algorithm) {
    let key = SigningKey::generate(alg, jose::RsaBits::B2048).expect("signing key");
    let bare = AwsLc::new(alg, &key);
    let ring = Ring::new(alg, &key);
    let rust_crypto = RustCrypto::new(alg, &key);
    let keys = KeySet::new(vec![key.verifying_key()]);
    let mut validation = Validation::new(ISSUER);
    validation.audiences = vec!["orders-api".into()];
    validation.typ = Some("at+jwt".into());
    let claims = claims();

    let token = key.sign("at+jwt", &claims).expect("sign");
    let dot = token.rfind('.').expect("compact JWS");
    let signing_input = token.as_bytes()[..dot].to_vec();
    let signature = jose::b64_decode(&token[dot + 1..]).expect("base64url signature");
    // Sanity: both paths accept the token before anything is measured.
    assert!(bare.verify(&signing_input, &signature));
    assert!(ring.verify(&signing_input, &signature));
    assert!(rust_crypto.verify(&signing_input, &signature));
    assert!(ring.verify(&signing_input, &ring.sign(&signing_input)));
    assert!(bare.verify(&signing_input, &rust_crypto.sign(&signing_input)));
    let verified = jose::verify::<AccessClaims>(&token, &keys, &validation, NOW).expect("verify");
    assert_eq!(verified.claims.client_id, claims.client_id);

    let mut group = c.benchmark_group(alg.as_str());
    // Flat sampling: every sample runs the same number of iterations and
    // lasts about 200 ms, far above the granularity of the thread's CPU
    // clock (the kernel updates it at scheduler ticks, every few ms).
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(1));
    group.bench_function("sign", |b| {
        b.iter(|| key.sign("at+jwt", black_box(&claims)).expect("sign"))
    });
    group.bench_function("sign_bare", |b| {
        b.iter(|| bare.sign(black_box(&signing_input)))
    });
    group.bench_function("verify", |b| {
        b.iter(|| {
            jose::verify::<AccessClaims>(black_box(&token), &keys, &validation, NOW)
                .expect("verify")
        })
    });
    group.bench_function("verify_bare", |b| {
        b.iter(|| assert!(bare.verify(black_box(&signing_input), black_box(&signature))))
    });
    for (name, other) in [
        ("ring", &ring as &dyn Bare),
        ("rustcrypto", &rust_crypto as &dyn Bare),
    ] {
        group.bench_function(format!("sign_{name}"), |b| {
            b.iter(|| other.sign(black_box(&signing_input)))
        });
        group.bench_function(format!("verify_{name}"), |b| {
            b.iter(|| assert!(other.verify(black_box(&signing_input), black_box(&signature))))
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion<CpuTime>) {
    if thread_cpu_nanos().is_none() {
        eprintln!("jose: /proc/thread-self/schedstat is not readable; measuring wall time");
    }
    for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256] {
        bench_algorithm(c, alg);
    }
}

criterion_group! {
    name = jose_benches;
    config = Criterion::default().with_measurement(CpuTime);
    targets = benches
}
criterion_main!(jose_benches);
