//! What verification through the axum extractor costs, next to the bare
//! signature verification, in the same run.
//!
//! Run with `cargo bench -p latchkey-verify --bench extractor`. For ES256 and
//! EdDSA:
//!
//! - `<alg>/verify_bare`: the bare primitive of the backend `jose` uses
//!   (aws-lc-rs ECDSA P-256 / Ed25519, public key parsed in advance) over the
//!   token's signing input;
//! - `<alg>/jose_verify`: `jose::verify` into the default `Claims`;
//! - `<alg>/extractor`: `Authenticated::<Claims>::from_request_parts` on the
//!   parts of an `http::Request` carrying `Authorization: Bearer <token>`,
//!   with the verifier in the request's extensions (as `verifier.layer()`
//!   puts it) and **10,000 revocations** loaded (jti, sid and sub entries,
//!   none matching): bearer parsing, `jose::verify`, the revocation lookup,
//!   the feed policy, caching the outcome in the extensions. Building the
//!   request is not measured.
//!
//! No network and no lock on the path: the verifier has fixed keys, the key
//! set and the revocation set are lock-free `ArcSwap` loads. The ratio
//! `extractor / verify_bare` is the SDK's overhead (target ≤ 1.2).
//! Measured as CPU time of the benchmarking thread (see `support/cpu_time.rs`).
//! Results and their reading: `docs/performance.md`.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::extract::FromRequestParts;
use criterion::{
    black_box, criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput,
};
use http::request::Parts;
use latchkey_verify::jose::{self, Algorithm, JwkSet, KeySet, SigningKey, Validation};
use latchkey_verify::{Authenticated, Claims, Revocation, Verifier};
use serde_json::json;

#[path = "support/cpu_time.rs"]
mod cpu_time;
use cpu_time::{thread_cpu_nanos, CpuTime};

const ISSUER: &str = "https://id.example.com";
const NOW: i64 = 1_767_225_600;
const REVOCATIONS: usize = 10_000;

/// The bare signature check over (signing input, signature).
type BareVerify = Box<dyn Fn(&[u8], &[u8]) -> bool>;

/// Polls a future that never waits (no I/O on this path) to completion.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the extractor waited: it must not on this path"),
    }
}

fn claims() -> serde_json::Value {
    json!({
        "iss": ISSUER,
        "sub": "0193a3c2-5b7e-7c1d-9f2a-4e8b6d0c1a2f",
        "aud": "orders-api",
        "exp": NOW + 900,
        "iat": NOW,
        "nbf": NOW,
        "jti": "0193a3c2-5b7f-7a40-8e11-2c9d4f6b8a01",
        "client_id": "lk_3f9a2c7e1b5d4a6c",
        "scope": "openid profile email offline_access",
        "roles": ["user", "billing"],
        "sid": "0193a3c2-4f10-7b3e-a5c6-d7e8f9a0b1c2",
    })
}

fn revocations() -> Vec<Revocation> {
    (0..REVOCATIONS)
        .map(|i| match i % 3 {
            0 => Revocation::Token {
                jti: format!("revoked-jti-{i}"),
                until: NOW + 3600,
            },
            1 => Revocation::Session {
                sid: format!("revoked-sid-{i}"),
                until: NOW + 3600,
            },
            _ => Revocation::Subject {
                sub: format!("revoked-sub-{i}"),
                issued_before: NOW,
                until: NOW + 3600,
            },
        })
        .collect()
}

fn bench_algorithm(c: &mut Criterion<CpuTime>, runtime: &tokio::runtime::Runtime, alg: Algorithm) {
    let key = SigningKey::generate(alg, jose::RsaBits::B2048).expect("key");
    let token = key.sign("at+jwt", &claims()).expect("sign");
    let dot = token.rfind('.').expect("JWS");
    let message = token.as_bytes()[..dot].to_vec();
    let signature = jose::b64_decode(&token[dot + 1..]).expect("signature");

    // The bare primitive with a prepared key (as `jose` holds it): the
    // public key from the JWK, parsed once.
    let jwk = key.public_jwk().expect("public JWK");
    let public = match alg {
        Algorithm::ES256 => {
            let x = jose::b64_decode(jwk.x.as_deref().expect("x")).expect("x");
            let y = jose::b64_decode(jwk.y.as_deref().expect("y")).expect("y");
            [&[4u8][..], &x, &y].concat()
        }
        _ => jose::b64_decode(jwk.x.as_deref().expect("x")).expect("x"),
    };
    let algorithm: &'static dyn aws_lc_rs::signature::VerificationAlgorithm = match alg {
        Algorithm::ES256 => &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        _ => &aws_lc_rs::signature::ED25519,
    };
    let parsed = aws_lc_rs::signature::ParsedPublicKey::new(algorithm, public).expect("public key");
    let bare: BareVerify = Box::new(move |m, s| parsed.verify_sig(m, s).is_ok());
    assert!(bare(&message, &signature));

    let keys = KeySet::new(vec![key.verifying_key()]);
    let validation = Validation {
        audiences: vec!["orders-api".into()],
        typ: Some("at+jwt".into()),
        ..Validation::new(ISSUER)
    };
    let jwks = JwkSet {
        keys: vec![key.public_jwk().expect("public JWK")],
    };
    let verifier = runtime
        .block_on(
            Verifier::builder(ISSUER)
                .jwks(jwks)
                .audience("orders-api")
                .clock(|| NOW)
                .build(),
        )
        .expect("verifier");
    verifier.revoke(revocations());
    assert_eq!(verifier.health().revoked_entries, REVOCATIONS);

    let parts = || -> Parts {
        let (mut parts, ()) = http::Request::builder()
            .uri("/orders")
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .expect("request")
            .into_parts();
        parts.extensions.insert(verifier.clone());
        parts
    };
    // Sanity: the extractor accepts the token before anything is measured.
    let mut p = parts();
    let Authenticated(accepted) =
        ready(Authenticated::<Claims>::from_request_parts(&mut p, &())).expect("accepted");
    assert_eq!(accepted.client_id.as_deref(), Some("lk_3f9a2c7e1b5d4a6c"));

    let mut group = c.benchmark_group(format!("extractor/{}", alg.as_str()));
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(1));
    group.bench_function("verify_bare", |b| {
        b.iter(|| assert!(bare(black_box(&message), black_box(&signature))))
    });
    group.bench_function("jose_verify", |b| {
        b.iter(|| {
            jose::verify::<Claims>(black_box(&token), &keys, &validation, NOW).expect("verify")
        })
    });
    group.bench_function("extractor", |b| {
        b.iter_batched_ref(
            parts,
            |parts| {
                ready(Authenticated::<Claims>::from_request_parts(parts, &())).expect("accepted")
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn benches(c: &mut Criterion<CpuTime>) {
    if thread_cpu_nanos().is_none() {
        eprintln!("extractor: /proc/thread-self/schedstat is not readable; measuring wall time");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for alg in [Algorithm::ES256, Algorithm::EdDSA] {
        bench_algorithm(c, &runtime, alg);
    }
}

criterion_group! {
    name = extractor_benches;
    config = Criterion::default().with_measurement(CpuTime);
    targets = benches
}
criterion_main!(extractor_benches);
