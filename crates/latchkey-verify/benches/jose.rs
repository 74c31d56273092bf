//! What signing and verifying a JWT costs, next to the bare signature primitive.
//!
//! Run with `cargo bench -p latchkey-verify --bench jose`. For ES256, EdDSA
//! and RS256 (2048-bit), in the same run:
//!
//! - `<alg>/sign`: `SigningKey::sign` of a typical RFC 9068 access-token claim
//!   set (header + claims serialisation, base64url, signature);
//! - `<alg>/sign_bare`: the bare primitive over the same signing input
//!   (p256 ECDSA / ed25519-dalek / rsa PKCS#1 v1.5 with SHA-256);
//! - `<alg>/verify`: `jose::verify` (split, header parse, key lookup by `kid`,
//!   signature, `typ`/`iss`/`aud`/`exp`/`nbf` checks, claims deserialised);
//! - `<alg>/verify_bare`: the bare verification of the same signature over
//!   the same signing input (`verify_strict` for Ed25519, as `jose` does).
//!
//! Every benchmark has `Throughput::Elements(1)`, so criterion's `elem/s` is
//! tokens per second on one core. The ratio `verify / verify_bare` is the
//! overhead of the JOSE layer (target: at most 1.15 for ES256 and EdDSA).
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

/// The bare primitive, built from the same private key bytes.
enum Bare {
    Es256(p256::ecdsa::SigningKey, p256::ecdsa::VerifyingKey),
    EdDsa(ed25519_dalek::SigningKey, ed25519_dalek::VerifyingKey),
    Rs256(
        rsa::pkcs1v15::SigningKey<sha2::Sha256>,
        rsa::pkcs1v15::VerifyingKey<sha2::Sha256>,
    ),
}

impl Bare {
    fn new(alg: Algorithm, bytes: &[u8]) -> Bare {
        match alg {
            Algorithm::ES256 => {
                let k = p256::ecdsa::SigningKey::from_slice(bytes).expect("P-256 key");
                let v = *k.verifying_key();
                Bare::Es256(k, v)
            }
            Algorithm::EdDSA => {
                let seed: [u8; 32] = bytes.try_into().expect("Ed25519 seed");
                let k = ed25519_dalek::SigningKey::from_bytes(&seed);
                let v = k.verifying_key();
                Bare::EdDsa(k, v)
            }
            Algorithm::RS256 => {
                use rsa::pkcs1::DecodeRsaPrivateKey as _;
                let private = rsa::RsaPrivateKey::from_pkcs1_der(bytes).expect("RSA key");
                let v = rsa::pkcs1v15::VerifyingKey::new(private.to_public_key());
                Bare::Rs256(rsa::pkcs1v15::SigningKey::new(private), v)
            }
            Algorithm::HS256 => unreachable!("not benchmarked"),
        }
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        use rsa::signature::{SignatureEncoding as _, Signer as _};
        match self {
            Bare::Es256(k, _) => {
                let sig: p256::ecdsa::Signature = k.sign(message);
                sig.to_bytes().to_vec()
            }
            Bare::EdDsa(k, _) => k.sign(message).to_bytes().to_vec(),
            Bare::Rs256(k, _) => k.sign(message).to_vec(),
        }
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        use rsa::signature::Verifier as _;
        match self {
            Bare::Es256(_, v) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|s| v.verify(message, &s).is_ok()),
            Bare::EdDsa(_, v) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|s| v.verify_strict(message, &s).is_ok()),
            Bare::Rs256(_, v) => rsa::pkcs1v15::Signature::try_from(signature)
                .is_ok_and(|s| v.verify(message, &s).is_ok()),
        }
    }
}

fn private_key_bytes(alg: Algorithm) -> Vec<u8> {
    let mut rng = rand::rngs::OsRng;
    match alg {
        Algorithm::ES256 => p256::ecdsa::SigningKey::random(&mut rng)
            .to_bytes()
            .to_vec(),
        Algorithm::EdDSA => ed25519_dalek::SigningKey::generate(&mut rng)
            .to_bytes()
            .to_vec(),
        Algorithm::RS256 => {
            use rsa::pkcs1::EncodeRsaPrivateKey as _;
            rsa::RsaPrivateKey::new(&mut rng, 2048)
                .expect("RSA key generation")
                .to_pkcs1_der()
                .expect("PKCS#1 DER")
                .as_bytes()
                .to_vec()
        }
        Algorithm::HS256 => unreachable!("not benchmarked"),
    }
}

fn bench_algorithm(c: &mut Criterion<CpuTime>, alg: Algorithm) {
    let bytes = private_key_bytes(alg);
    let key = SigningKey::from_bytes(alg, &bytes).expect("signing key");
    let bare = Bare::new(alg, &bytes);
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
