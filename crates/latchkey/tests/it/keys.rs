//! Signing keys: the JWKS (RFC 7517, `kid` = RFC 7638 thumbprint), rotation
//! on a schedule with pre-publication and retention, several instances on one
//! database, sealing at rest under the master key, per-client algorithms and
//! the operator's `keys rotate` / `keys retire`.
//!
//! Tokens are verified the way a resource server would: with an independent
//! JOSE implementation (`jsonwebtoken`) keyed only from the JWKS served at
//! that moment. Time moves with the manual clock; after each step the test
//! runs `KeyRing::maintain` as the maintenance loop would.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use base64::Engine as _;
use latchkey::keys::{KeyError, KeyRing, KeyStatus};
use latchkey::{AppState, Dependencies};
use latchkey_verify::jose::{self, Algorithm};
use reqwest::header::HeaderMap;
use serde_json::Value;
use sqlx::Row as _;

use crate::backend_test;
use crate::support::app::*;
use crate::support::jwt::*;
use crate::support::oauth::{
    client_spec, introspect, machine_client, machine_token, register, token_request, LEEWAY,
};

// ---------------------------------------------------------------- helpers

/// The `max-age` of a `Cache-Control: public, max-age=N` JWKS response.
fn jwks_max_age(headers: &HeaderMap) -> i64 {
    let cache = headers
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .expect("Cache-Control on the JWKS");
    let directives: Vec<&str> = cache.split(',').map(str::trim).collect();
    assert!(directives.contains(&"public"), "{cache}");
    assert!(!directives.contains(&"no-store"), "{cache}");
    directives
        .iter()
        .find_map(|d| d.strip_prefix("max-age="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("max-age in {cache}"))
}

fn kids(jwks: &Value) -> BTreeSet<String> {
    jwks["keys"]
        .as_array()
        .expect("keys array")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect()
}

/// The `kid`s of the published keys of one algorithm.
fn kids_of(jwks: &Value, alg: &str) -> BTreeSet<String> {
    jwks["keys"]
        .as_array()
        .expect("keys array")
        .iter()
        .filter(|k| k["alg"] == alg)
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect()
}

/// The stored rows of `signing_keys`: (alg, generation, kid), by generation.
async fn stored_keys(pool: &latchkey::store::Pool) -> Vec<(String, i64, String)> {
    sqlx::query("SELECT alg, generation, kid FROM signing_keys ORDER BY alg, generation")
        .fetch_all(pool)
        .await
        .expect("signing keys")
        .iter()
        .map(|r| {
            (
                r.try_get("alg").expect("alg"),
                r.try_get("generation").expect("generation"),
                r.try_get("kid").expect("kid"),
            )
        })
        .collect()
}

fn active_kid(app: &TestApp, alg: Algorithm) -> String {
    app.state
        .keys
        .signing_key(alg, app.clock.now_secs())
        .expect("an active key")
        .kid()
        .to_owned()
}

async fn maintain(app: &TestApp) {
    app.state
        .keys
        .maintain(&app.state.pool, app.clock.now_secs())
        .await
        .expect("key maintenance");
}

// ---------------------------------------------------------------- JWKS

backend_test!(
    jwks_serves_the_active_key_with_its_thumbprint_as_kid,
    |app: TestApp| async move {
        let (jwks, headers) = fetch_jwks(&app).await;
        let max_age = jwks_max_age(&headers);
        assert!(
            max_age > 0 && max_age <= app.state.config.tokens.key_prepublish_secs,
            "caches must refresh within the pre-publication window: max-age={max_age}"
        );
        let keys = jwks["keys"].as_array().expect("keys");
        let algs: Vec<&str> = keys
            .iter()
            .map(|k| k["alg"].as_str().expect("alg"))
            .collect();
        assert_eq!(
            algs,
            ["ES256", "RS256"],
            "ES256 (the default, for access tokens) and RS256 (for ID tokens) from the first start: {jwks}"
        );
        let key = &keys[0];
        assert_eq!(key["kty"], "EC");
        assert_eq!(key["crv"], "P-256");
        assert_eq!(key["alg"], "ES256", "ES256 is the default");
        assert_eq!(keys[1]["kty"], "RSA");
        for key in keys {
            assert_eq!(key["use"], "sig");
            for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
                assert!(
                    key.get(private).is_none(),
                    "no private member {private}: {key}"
                );
            }
        }
        let theirs: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.clone()).expect("a JWK");
        let thumbprint = theirs
            .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
            .expect("thumbprint");
        assert_eq!(
            key["kid"],
            thumbprint.as_str(),
            "kid is the RFC 7638 thumbprint"
        );
        assert_eq!(thumbprint, active_kid(&app, Algorithm::ES256));

        let machine = machine_client(&app, "read").await;
        let token = machine_token(&app, &machine).await;
        assert_eq!(jwt_header(&token)["kid"], thumbprint.as_str());
        verify_independently(
            &token,
            &jwks,
            &app.state.config.issuer,
            &machine.id,
            app.clock.now_secs(),
        )
        .expect("verifies against the JWKS");
    }
);

backend_test!(
    jwks_max_age_never_exceeds_a_short_prepublication_window,
    config = |c: &mut latchkey::Config| c.tokens.key_prepublish_secs = 40,
    |app: TestApp| async move {
        let (_, headers) = fetch_jwks(&app).await;
        let max_age = jwks_max_age(&headers);
        assert!(
            max_age > 0 && max_age <= 40,
            "a cache must see a new key before it signs: max-age={max_age}"
        );
    }
);

backend_test!(
    hs256_is_never_published_but_its_tokens_verify,
    config = |c: &mut latchkey::Config| {
        c.tokens.signing_algorithm = "HS256".into();
        c.tokens.hs256_secret = Some(jose::b64(&latchkey::crypto::random_bytes::<32>()));
    },
    |app: TestApp| async move {
        let (jwks, headers) = fetch_jwks(&app).await;
        let published: Vec<&Value> = jwks["keys"].as_array().expect("keys").iter().collect();
        assert!(
            published
                .iter()
                .all(|k| k["kty"] == "RSA" && k["alg"] == "RS256" && k.get("k").is_none()),
            "a shared secret is never published, only the ID tokens' RS256 key: {jwks}"
        );
        assert_eq!(published.len(), 1, "{jwks}");
        jwks_max_age(&headers);
        assert!(
            stored_keys(&app.state.pool)
                .await
                .iter()
                .all(|(alg, _, _)| alg == "RS256"),
            "no key pairs generated for access tokens"
        );

        let machine = machine_client(&app, "read").await;
        let token = machine_token(&app, &machine).await;
        assert_eq!(jwt_header(&token)["alg"], "HS256");
        assert_eq!(introspect(&app, &machine, &token).await["active"], true);

        // And an independent implementation agrees, given the shared secret.
        let secret = jose::b64_decode(
            app.state
                .config
                .tokens
                .hs256_secret
                .as_deref()
                .expect("secret"),
        )
        .expect("base64url");
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_issuer(&[&app.state.config.issuer]);
        validation.set_audience(&[&machine.id]);
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(&secret),
            &validation,
        )
        .expect("jsonwebtoken verifies the HS256 token");
        assert_eq!(data.claims["sub"], machine.id.as_str());
        // A tampered HS256 token is not active.
        let (signed, _) = token.rsplit_once('.').expect("jws");
        let forged = format!("{signed}.{}", jose::b64(&[0u8; 32]));
        assert_eq!(
            introspect(&app, &machine, &forged).await,
            serde_json::json!({ "active": false })
        );
    }
);

// ---------------------------------------------------------------- rotation

const ROTATION: i64 = 3600;
const PREPUBLISH: i64 = 600;
const LIFETIME: i64 = 300;

struct IssuedToken {
    token: String,
    kid: String,
    exp: i64,
}

backend_test!(
    signing_keys_rotate_on_schedule_without_a_single_failed_verification,
    config = |c: &mut latchkey::Config| {
        c.tokens.key_rotation_secs = ROTATION;
        c.tokens.key_prepublish_secs = PREPUBLISH;
        c.tokens.access_token_lifetime_secs = LIFETIME;
    },
    |app: TestApp| async move {
        let machine = machine_client(&app, "read").await;
        let issuer = app.state.config.issuer.clone();
        let retention = app.state.keys.retention_secs();
        let t0 = app.clock.now_secs();
        // Three rotations, and long enough for the second key's retention to end.
        let end = t0 + 2 * ROTATION + retention + 300;
        let step = 60; // the maintenance loop's period

        let mut issued: Vec<IssuedToken> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        let mut first_published: BTreeMap<String, i64> = BTreeMap::new();
        let mut disappeared: BTreeMap<String, i64> = BTreeMap::new();
        let mut first_signed: Vec<(String, i64)> = Vec::new();
        // A resource server that honours Cache-Control: (set, fetched at, max-age).
        let mut cached: Option<(Value, i64, i64)> = None;
        let mut verifications = 0;
        loop {
            let now = app.clock.now_secs();
            maintain(&app).await;
            let (jwks, headers) = fetch_jwks(&app).await;
            let max_age = jwks_max_age(&headers);
            assert!(max_age <= PREPUBLISH, "max-age {max_age}");
            if cached.as_ref().is_none_or(|(_, at, age)| now - at >= *age) {
                cached = Some((jwks.clone(), now, max_age));
            }
            let published = kids(&jwks);
            for kid in &published {
                first_published.entry(kid.clone()).or_insert(now);
                if disappeared.contains_key(kid) {
                    failures.push(format!("t0+{}: {kid} came back", now - t0));
                }
            }
            for kid in first_published.keys() {
                if !published.contains(kid) {
                    disappeared.entry(kid.clone()).or_insert(now);
                }
            }

            let answer =
                token_request(&app, &machine, &[("grant_type", "client_credentials")]).await;
            assert_eq!(answer.status, 200, "t0+{}: {answer:?}", now - t0);
            let token = answer.body["access_token"]
                .as_str()
                .expect("token")
                .to_owned();
            let kid = jwt_header(&token)["kid"].as_str().expect("kid").to_owned();
            if first_signed.last().is_none_or(|(k, _)| *k != kid) {
                first_signed.push((kid.clone(), now));
            }
            let exp = jwt_payload(&token)["exp"].as_i64().expect("exp");
            issued.push(IssuedToken { token, kid, exp });

            let (cached_jwks, _, _) = cached.as_ref().expect("cached");
            for t in issued.iter().filter(|t| t.exp > now) {
                for (verifier, set) in [("fresh", &jwks), ("cached", cached_jwks)] {
                    verifications += 1;
                    if let Err(e) = verify_independently(&t.token, set, &issuer, &machine.id, now) {
                        failures.push(format!(
                            "t0+{}: {verifier} JWKS refuses a token of {} expiring at t0+{}: {e}",
                            now - t0,
                            t.kid,
                            t.exp - t0
                        ));
                    }
                }
            }
            if now >= end {
                break;
            }
            app.clock.advance(step);
        }

        assert!(
            failures.is_empty(),
            "{} failures: {failures:#?}",
            failures.len()
        );
        assert!(verifications > 500, "{verifications}");
        let signers: Vec<&String> = first_signed.iter().map(|(k, _)| k).collect();
        assert_eq!(
            signers.len(),
            4,
            "the first key and three rotations, each key signing once: {first_signed:?}"
        );
        assert_eq!(
            signers.iter().collect::<BTreeSet<_>>().len(),
            signers.len(),
            "a key never signs again after it was superseded"
        );
        for (kid, signed_from) in first_signed.iter().skip(1) {
            let published_at = first_published[kid];
            assert!(
                signed_from - published_at >= PREPUBLISH,
                "{kid} was published at t0+{} and signed from t0+{}: less than {PREPUBLISH}s ahead",
                published_at - t0,
                signed_from - t0
            );
        }
        // Superseded keys stay until their last token has expired, then go.
        for (kid, _) in &first_signed[..2] {
            let last_exp = issued.iter().filter(|t| &t.kid == kid).map(|t| t.exp).max();
            let gone = disappeared
                .get(kid)
                .unwrap_or_else(|| panic!("superseded key {kid} was never unpublished"));
            assert!(
                last_exp.is_some_and(|exp| *gone >= exp + LEEWAY),
                "{kid} left at t0+{} before its tokens expired",
                gone - t0
            );
        }
        for (kid, _) in &first_signed[2..] {
            assert!(!disappeared.contains_key(kid), "{kid} is still needed");
        }
        // Removed keys are deleted, not just hidden.
        let (jwks, _) = fetch_jwks(&app).await;
        let stored: BTreeSet<String> = stored_keys(&app.state.pool)
            .await
            .into_iter()
            .map(|(_, _, kid)| kid)
            .collect();
        assert_eq!(stored, kids(&jwks));
    }
);

backend_test!(
    instances_sharing_a_database_rotate_exactly_once,
    config = |c: &mut latchkey::Config| {
        c.tokens.key_rotation_secs = ROTATION;
        c.tokens.key_prepublish_secs = PREPUBLISH;
    },
    |app: TestApp| async move {
        const INSTANCES: usize = 4;
        // The app's own ring is one instance; the others have their own pools.
        let mut rings: Vec<(Arc<KeyRing>, latchkey::store::Pool)> = Vec::new();
        for _ in 1..INSTANCES {
            let pool = latchkey::store::connect(&app.state.config.database)
                .await
                .expect("pool");
            let ring = KeyRing::new(&app.state.config.tokens, &app.master_key);
            ring.reload(&pool)
                .await
                .expect("the same master key unseals");
            rings.push((Arc::new(ring), pool));
        }
        let t0 = app.clock.now_secs();
        let first = active_kid(&app, Algorithm::ES256);

        // Every instance runs maintenance at the moment rotation becomes due
        // (twice: the second key, then the third).
        for (round, due) in [
            (2, t0 + ROTATION - PREPUBLISH),
            (3, t0 + 2 * ROTATION - PREPUBLISH),
        ] {
            app.clock.set(due);
            for _attempt in 0..2 {
                let barrier = Arc::new(tokio::sync::Barrier::new(INSTANCES));
                let mut tasks = Vec::new();
                let state = app.state.clone();
                let b = barrier.clone();
                tasks.push(tokio::spawn(async move {
                    b.wait().await;
                    state.keys.maintain(&state.pool, due).await
                }));
                for (ring, pool) in &rings {
                    let (ring, pool, b) = (ring.clone(), pool.clone(), barrier.clone());
                    tasks.push(tokio::spawn(async move {
                        b.wait().await;
                        ring.maintain(&pool, due).await
                    }));
                }
                for task in tasks {
                    task.await
                        .expect("task")
                        .expect("maintenance succeeds on every instance");
                }
                let stored = stored_keys(&app.state.pool).await;
                let generations: Vec<i64> = stored
                    .iter()
                    .filter(|(alg, _, _)| alg == "ES256")
                    .map(|(_, g, _)| *g)
                    .collect();
                assert_eq!(
                    generations,
                    (1..=round).collect::<Vec<i64>>(),
                    "exactly one new generation: {stored:?}"
                );
            }
            // Every instance knows the same keys and the same next one.
            let view = |ring: &KeyRing| {
                ring.describe(due)
                    .into_iter()
                    .map(|k| (k.kid, k.status, k.activates_at))
                    .collect::<Vec<_>>()
            };
            let reference = view(&app.state.keys);
            assert_eq!(reference.last().map(|k| k.1), Some(KeyStatus::Next));
            for (ring, _) in &rings {
                assert_eq!(view(ring), reference);
            }
        }
        // At the switch, every instance signs with the same new key.
        app.clock.set(t0 + ROTATION);
        let second = active_kid(&app, Algorithm::ES256);
        assert_ne!(second, first);
        for (ring, _) in &rings {
            assert_eq!(
                ring.signing_key(Algorithm::ES256, t0 + ROTATION)
                    .expect("active")
                    .kid(),
                second
            );
        }
        let machine = machine_client(&app, "read").await;
        assert_eq!(
            jwt_header(&machine_token(&app, &machine).await)["kid"],
            second.as_str()
        );
    }
);

// ---------------------------------------------------------------- sealing

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

backend_test!(
    private_keys_are_sealed_at_rest_and_a_wrong_master_key_stops_start_up,
    |app: TestApp| async move {
        let now = app.clock.now_secs();
        let active = app
            .state
            .keys
            .signing_key(Algorithm::ES256, now)
            .expect("active");
        let secret = active.to_bytes();
        assert_eq!(secret.len(), 32, "a P-256 scalar");
        let row = sqlx::query("SELECT sealed_private, public_jwk FROM signing_keys WHERE kid = $1")
            .bind(active.kid())
            .fetch_one(&app.state.pool)
            .await
            .expect("the active key's row");
        let sealed: String = row.try_get("sealed_private").expect("sealed");
        let public: String = row.try_get("public_jwk").expect("jwk");

        let encodings = [
            hex::encode(&secret),
            hex::encode_upper(&secret),
            base64::engine::general_purpose::STANDARD.encode(&secret),
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(&secret),
            base64::engine::general_purpose::URL_SAFE.encode(&secret),
            jose::b64(&secret),
        ];
        for column in [&sealed, &public] {
            for encoded in &encodings {
                assert!(
                    !column.contains(encoded.as_str()),
                    "the private key in clear"
                );
            }
            assert!(!contains_bytes(column.as_bytes(), &secret));
        }
        let decoded = jose::b64_decode(&sealed).expect("sealed is base64url");
        assert!(decoded.len() >= 24 + 32 + 16, "nonce, ciphertext and tag");
        assert!(
            !contains_bytes(&decoded, &secret),
            "the private key in clear"
        );
        let public: Value = serde_json::from_str(&public).expect("jwk");
        assert!(public.get("d").is_none());

        // The sealed blob really holds the key: the right master key unseals it.
        let deps = || Dependencies {
            clock: Arc::new(app.clock.clone()),
        };
        let twin = AppState::new(app.state.config.clone(), app.master_key.clone(), deps())
            .await
            .unwrap_or_else(|e| panic!("the same master key starts: {e}"));
        assert_eq!(
            twin.keys
                .signing_key(Algorithm::ES256, now)
                .expect("active")
                .kid(),
            active.kid()
        );

        // Another master key is a clear start-up error, not garbage tokens.
        let before = stored_keys(&app.state.pool).await;
        let wrong = latchkey::crypto::MasterKey::generate();
        match AppState::new(app.state.config.clone(), wrong, deps()).await {
            Ok(_) => panic!("a wrong master key must not start"),
            Err(latchkey::app::BuildError::Keys(e @ KeyError::WrongMasterKey { .. })) => {
                let message = e.to_string();
                assert!(message.contains("cannot unseal"), "{message}");
                assert!(message.contains("LATCHKEY_MASTER_KEY"), "{message}");
            }
            Err(other) => panic!("expected WrongMasterKey, got: {other}"),
        }
        assert_eq!(
            stored_keys(&app.state.pool).await,
            before,
            "and it wrote nothing"
        );
    }
);

// ---------------------------------------------------------------- algorithms

backend_test!(
    clients_can_be_given_their_own_signing_algorithm,
    config = |c: &mut latchkey::Config| {
        c.tokens.additional_algorithms = vec!["EdDSA".into(), "RS256".into()];
    },
    |app: TestApp| async move {
        let (jwks, _) = fetch_jwks(&app).await;
        let mut algs: Vec<String> = jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| {
                let theirs: jsonwebtoken::jwk::Jwk =
                    serde_json::from_value(k.clone()).expect("jwk");
                assert_eq!(
                    k["kid"],
                    theirs
                        .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
                        .expect("thumbprint")
                        .as_str()
                );
                k["alg"].as_str().expect("alg").to_owned()
            })
            .collect();
        algs.sort();
        assert_eq!(algs, ["ES256", "EdDSA", "RS256"]);

        let default = machine_client(&app, "read").await;
        for (alg, name) in [
            (Algorithm::EdDSA, "EdDSA"),
            (Algorithm::RS256, "RS256"),
            (Algorithm::ES256, "ES256"),
        ] {
            let mut spec = client_spec(name, true, &["client_credentials"], "read");
            spec.signing_algorithm = Some(name.into());
            let client = register(&app, spec).await;
            let token = machine_token(&app, &client).await;
            let header = jwt_header(&token);
            assert_eq!(header["alg"], name);
            assert_eq!(header["kid"], active_kid(&app, alg).as_str());
            verify_independently(
                &token,
                &jwks,
                &app.state.config.issuer,
                &client.id,
                app.clock.now_secs(),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(introspect(&app, &client, &token).await["active"], true);
        }
        let token = machine_token(&app, &default).await;
        assert_eq!(
            jwt_header(&token)["alg"],
            "ES256",
            "the default for everyone else"
        );
    }
);

backend_test!(
    tokens_of_a_client_with_a_long_lifetime_verify_until_they_expire_after_a_key_change,
    |app: TestApp| async move {
        let mut spec = client_spec("long-lived", true, &["client_credentials"], "read");
        spec.access_token_lifetime_secs = Some(6 * 3600);
        let client = register(&app, spec).await;
        let issuer = app.state.config.issuer.clone();
        let old_key = active_kid(&app, Algorithm::ES256);
        let answer = token_request(&app, &client, &[("grant_type", "client_credentials")]).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        let token = answer.body["access_token"]
            .as_str()
            .expect("token")
            .to_owned();
        let claims = jwt_payload(&token);
        let (iat, exp) = (
            claims["iat"].as_i64().expect("iat"),
            claims["exp"].as_i64().expect("exp"),
        );
        assert_eq!(
            answer.body["expires_in"],
            exp - iat,
            "expires_in tells the truth"
        );
        assert!(
            exp - iat >= 3600,
            "the client's longer lifetime is honoured, up to what key retention covers"
        );

        // The key that signed it stops signing right away.
        app.state
            .keys
            .retire(&app.state.pool, &old_key, app.clock.now_secs())
            .await
            .expect("retire");
        assert_ne!(active_kid(&app, Algorithm::ES256), old_key);
        // Every resource server must still accept the token until it expires.
        while app.clock.now_secs() < exp {
            maintain(&app).await;
            let now = app.clock.now_secs();
            let (jwks, _) = fetch_jwks(&app).await;
            if let Err(e) = verify_independently(&token, &jwks, &issuer, &client.id, now) {
                panic!(
                    "{}s after issue, {}s before its exp, the token no longer verifies: {e}",
                    now - iat,
                    exp - now
                );
            }
            assert_eq!(introspect(&app, &client, &token).await["active"], true);
            app.clock.advance(300);
        }
    }
);

// ---------------------------------------------------------------- operator

backend_test!(
    retiring_the_active_key_hands_signing_to_the_next_key_at_once,
    |app: TestApp| async move {
        let machine = machine_client(&app, "read").await;
        let issuer = app.state.config.issuer.clone();
        let retention = app.state.keys.retention_secs();
        let k1 = active_kid(&app, Algorithm::ES256);
        let t1 = machine_token(&app, &machine).await;

        // `keys rotate`: published now, signing only after the pre-publication window.
        let k2 = app
            .state
            .keys
            .rotate(&app.state.pool, app.clock.now_secs())
            .await
            .expect("rotate");
        assert_ne!(k2, k1);
        assert_eq!(
            kids_of(&fetch_jwks(&app).await.0, "ES256"),
            BTreeSet::from([k1.clone(), k2.clone()])
        );
        assert_eq!(
            jwt_header(&machine_token(&app, &machine).await)["kid"],
            k1.as_str()
        );
        let status_of = |kid: &str| {
            app.state
                .keys
                .describe(app.clock.now_secs())
                .into_iter()
                .find(|k| k.kid == kid)
                .map(|k| k.status)
        };
        assert_eq!(status_of(&k2), Some(KeyStatus::Next));

        // `keys retire K1`: K2 signs immediately.
        app.clock.advance(10);
        let retired_at = app.clock.now_secs();
        app.state
            .keys
            .retire(&app.state.pool, &k1, retired_at)
            .await
            .expect("retire");
        assert_eq!(status_of(&k1), Some(KeyStatus::Retired));
        assert_eq!(status_of(&k2), Some(KeyStatus::Active));
        let t2 = machine_token(&app, &machine).await;
        assert_eq!(jwt_header(&t2)["kid"], k2.as_str());

        // K1 stays published, so what it signed still verifies...
        let (jwks, _) = fetch_jwks(&app).await;
        assert!(kids_of(&jwks, "ES256").contains(&k1));
        verify_independently(&t1, &jwks, &issuer, &machine.id, retired_at)
            .expect("a token of the retired key");
        assert_eq!(introspect(&app, &machine, &t1).await["active"], true);
        // ...until the retention ends, and not a second longer.
        app.clock.set(retired_at + retention - 1);
        maintain(&app).await;
        assert!(kids_of(&fetch_jwks(&app).await.0, "ES256").contains(&k1));
        app.clock.set(retired_at + retention);
        maintain(&app).await;
        let (jwks, _) = fetch_jwks(&app).await;
        assert_eq!(kids_of(&jwks, "ES256"), BTreeSet::from([k2.clone()]));
        assert!(stored_keys(&app.state.pool)
            .await
            .iter()
            .all(|(_, _, kid)| *kid != k1));

        // Retiring the active key with no successor creates one that signs at once.
        app.state
            .keys
            .retire(&app.state.pool, &k2, app.clock.now_secs())
            .await
            .expect("retire");
        let k3 = active_kid(&app, Algorithm::ES256);
        assert!(k3 != k1 && k3 != k2);
        let t3 = machine_token(&app, &machine).await;
        assert_eq!(jwt_header(&t3)["kid"], k3.as_str());
        let (jwks, _) = fetch_jwks(&app).await;
        assert_eq!(
            kids_of(&jwks, "ES256"),
            BTreeSet::from([k2.clone(), k3.clone()])
        );
        verify_independently(&t3, &jwks, &issuer, &machine.id, app.clock.now_secs())
            .expect("the new key's token");

        match app
            .state
            .keys
            .retire(&app.state.pool, "no-such-kid", app.clock.now_secs())
            .await
        {
            Err(KeyError::UnknownKid(kid)) => assert_eq!(kid, "no-such-kid"),
            other => panic!("expected UnknownKid, got {other:?}"),
        }
    }
);
