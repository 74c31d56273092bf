//! `latchkey-verify` against the real server: an API built with the SDK's
//! layer and extractors accepts Latchkey's tokens, refuses each hostile
//! token with RFC 6750's 401 and `WWW-Authenticate`, answers 403
//! `insufficient_scope` for missing rights, follows key rotation without a
//! failed request, keeps verifying on cached keys while the issuer is down,
//! rate-limits JWKS fetches for unknown `kid`s (counted at a proxy), and
//! verifies opaque tokens through cached introspection.

use std::time::Duration;

use latchkey_verify::jose::{self, Algorithm, SigningKey};
use serde_json::{json, Value};

use crate::backend_test;
use crate::support::api::*;
use crate::support::app::*;
use crate::support::oauth::{client_spec, register};

/// A token signed with the server's real active key over `claims` (for
/// claims the server would never issue: wrong `iss`, future `nbf`).
fn signed_by_server(app: &TestApp, claims: &Value) -> String {
    let key = app
        .state
        .keys
        .signing_key(Algorithm::ES256, app.clock.now_secs())
        .expect("active key");
    key.sign("at+jwt", claims).expect("sign")
}

/// Claims like the server's for `sub`, valid now.
fn claims_now(app: &TestApp, issuer: &str) -> Value {
    let now = app.clock.now_secs();
    json!({
        "iss": issuer, "sub": "someone", "aud": AUDIENCE, "exp": now + 600,
        "iat": now, "nbf": now, "jti": uuid::Uuid::new_v4().to_string(),
        "client_id": "x", "scope": "read:data"
    })
}

fn b64json(value: &Value) -> String {
    jose::b64(&serde_json::to_vec(value).expect("json"))
}

fn with_flipped_signature_bit(token: &str) -> String {
    let (signed, signature) = token.rsplit_once('.').expect("a JWS");
    let mut bytes = jose::b64_decode(signature).expect("base64url signature");
    bytes[10] ^= 0x01;
    format!("{signed}.{}", jose::b64(&bytes))
}

fn foreign_key() -> SigningKey {
    SigningKey::from_bytes(Algorithm::ES256, &latchkey::crypto::random_bytes::<32>())
        .expect("a P-256 key")
}

/// `error_description` of a challenge.
fn description(answer: &ApiAnswer) -> String {
    let challenge = answer.www_authenticate.clone().unwrap_or_default();
    challenge
        .split("error_description=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_owned()
}

backend_test!(
    valid_tokens_are_accepted_and_authenticated_gives_sub_scope_roles_sid_client_id,
    // A password-only sign-in: `admin` rides in its tokens only when neither
    // the server nor the SDK asks a second factor for it (the default rule
    // is proved in `review_fixes_tokens`).
    config = |c: &mut latchkey::Config| c.mfa.required_roles = Vec::new(),
    |app: TestApp| async move {
        let web = web_client(&app).await;
        let ada = sign_in(&app, &web, "ada@example.com", &["admin"]).await;
        let verifier = verifier_for(&app.base, &app)
            .mfa_required_roles(Vec::<String>::new())
            .build()
            .await
            .expect("verifier");
        let api = TestApi::start(verifier).await;

        assert_eq!(api.get("/public", None).await.status, 200);
        let me = api.get("/me", Some(&ada.access_token)).await;
        assert_eq!(me.status, 200, "{me:?}");
        let me = me.json();
        assert_eq!(me["sub"], ada.user_id.as_str());
        assert_eq!(me["sid"], ada.sid.as_str());
        assert_eq!(me["client_id"], web.id.as_str());
        assert_eq!(me["roles"], json!(["admin"]));
        let scopes: Vec<&str> = me["scope"].as_str().expect("scope").split(' ').collect();
        assert!(scopes.contains(&"read:data"), "{me}");
        assert_eq!(api.get("/data", Some(&ada.access_token)).await.status, 200);
        assert_eq!(api.get("/admin", Some(&ada.access_token)).await.status, 200);

        // A machine token: the client itself, no session.
        let machine = api_client(&app, "read:data write:data").await;
        let token = client_token(&app.base, &machine, None).await;
        let me = api.get("/me", Some(&token)).await.json();
        assert_eq!(me["sub"], machine.id.as_str());
        assert_eq!(me["client_id"], machine.id.as_str());
        assert_eq!(me["sid"], Value::Null);
        assert_eq!(api.get("/write", Some(&token)).await.body, "written");
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tokens_are_refused_with_401_and_the_right_www_authenticate() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let issuer = app.base.clone();
    let web = web_client(&app).await;
    let ada = sign_in(&app, &web, "ada@example.com", &[]).await;
    let feed = feed_client(&app).await;
    let verifier = verifier_for(&issuer, &app)
        .revocation_feed(&feed.id, feed.secret.as_deref().expect("secret"))
        .build()
        .await
        .expect("verifier");
    let api = TestApi::start(verifier).await;
    let kid = header_of(&ada.access_token)["kid"]
        .as_str()
        .expect("kid")
        .to_owned();
    assert_eq!(api.get("/me", Some(&ada.access_token)).await.status, 200);

    // No token: 401 with a challenge without `error` (RFC 6750 §3.1).
    let missing = api.get("/me", None).await;
    assert_eq!(missing.status, 401);
    assert_eq!(
        missing.www_authenticate.as_deref(),
        Some("Bearer realm=\"api\"")
    );
    assert_eq!(missing.json()["error"], "unauthenticated");

    let payload = b64json(&claims_now(&app, &issuer));
    let alg_none = format!(
        "{}.{payload}.",
        b64json(&json!({"alg": "none", "kid": kid, "typ": "at+jwt"}))
    );
    // HS256 "signed" with the server's public key as the HMAC secret.
    let (jwks, _) = crate::support::jwt::fetch_jwks(&app).await;
    let public_jwk = serde_json::to_vec(&jwks["keys"][0]).expect("jwk");
    let confusion = SigningKey::from_bytes(Algorithm::HS256, &public_jwk)
        .expect("hmac key")
        .sign_raw(
            &b64json(&json!({"alg": "HS256", "kid": kid, "typ": "at+jwt"})),
            &payload,
        );
    let unknown_kid = foreign_key().sign_raw(
        &b64json(&json!({"alg": "ES256", "kid": "forged-kid", "typ": "at+jwt"})),
        &payload,
    );
    let mut wrong_iss = claims_now(&app, &issuer);
    wrong_iss["iss"] = json!("https://evil.example");
    let mut future_nbf = claims_now(&app, &issuer);
    future_nbf["nbf"] = json!(app.clock.now_secs() + 3600);
    let other_audience = {
        let client = register(
            &app,
            client_spec(
                "other api caller",
                true,
                &["client_credentials"],
                "read:data",
            ),
        )
        .await;
        client_token(&app.base, &client, None).await
    };
    // An ID token presented as an access token (typ JWT, not at+jwt).
    let id_token = id_token_for(&app, &ada, &web).await;

    let cases: Vec<(&str, String, &str)> = vec![
        ("malformed", "not-a-jwt".into(), "well-formed"),
        ("alg none", alg_none, "is never accepted"),
        (
            "HS256 with the public key",
            confusion,
            "does not match the algorithm of its key",
        ),
        ("unknown kid", unknown_kid, "not a key of the issuer"),
        (
            "bad signature",
            with_flipped_signature_bit(&ada.access_token),
            "signature is invalid",
        ),
        (
            "wrong iss",
            signed_by_server(&app, &wrong_iss),
            "another issuer",
        ),
        ("wrong aud", other_audience, "not meant for this audience"),
        (
            "nbf in the future",
            signed_by_server(&app, &future_nbf),
            "not valid yet",
        ),
        (
            "ID token as access token",
            id_token,
            "typ is not the expected one",
        ),
    ];
    for (what, token, expected) in &cases {
        let answer = api.get("/me", Some(token)).await;
        answer.assert_invalid_token(what);
        assert!(
            description(&answer).contains(expected),
            "{what}: {:?} should say {expected:?}",
            description(&answer)
        );
    }

    // Revoked (RFC 7009 by its client): refused once the feed delivers it.
    let victim = crate::support::api::authorize(&app, &ada.browser, &web)
        .await
        .0;
    assert_eq!(api.get("/me", Some(&victim)).await.status, 200);
    let revoked = reqwest::Client::new()
        .post(app.url("/oauth2/revoke"))
        .basic_auth(&web.id, web.secret.as_deref())
        .form(&[("token", victim.as_str())])
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoked.status(), 200);
    let answer = within(
        Duration::from_secs(1),
        "the revoked token is refused",
        || async {
            let a = api.get("/me", Some(&victim)).await;
            (a.status == 401).then_some(a)
        },
    )
    .await;
    answer.assert_invalid_token("revoked");
    assert!(description(&answer).contains("revoked"), "{answer:?}");

    // Expired: move the shared clock past exp + leeway.
    app.clock.advance(15 * 60 + 31);
    let answer = api.get("/me", Some(&ada.access_token)).await;
    answer.assert_invalid_token("expired");
    assert!(description(&answer).contains("has expired"), "{answer:?}");
}

/// An ID token for `user` (openid scope) from a fresh authorization.
async fn id_token_for(
    app: &TestApp,
    user: &SignedInUser,
    client: &crate::support::oauth::TestClient,
) -> String {
    let pkce = crate::support::oauth::Pkce::random();
    let params: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", &client.id),
        ("redirect_uri", "https://app.example.com/cb"),
        ("scope", "openid"),
        ("state", "s"),
        ("code_challenge", &pkce.challenge),
        ("code_challenge_method", "S256"),
    ];
    let response = user
        .browser
        .get(app.url("/oauth2/authorize"))
        .query(&params)
        .send()
        .await
        .expect("authorize");
    let (_, query) = crate::support::oauth::client_redirect(&response);
    let answer: Value = reqwest::Client::new()
        .post(app.url("/oauth2/token"))
        .basic_auth(&client.id, client.secret.as_deref())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", query.get("code").expect("code")),
            ("redirect_uri", "https://app.example.com/cb"),
            ("code_verifier", &pkce.verifier),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    answer["id_token"].as_str().expect("an ID token").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_scope_or_role_is_403_insufficient_scope() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let verifier = verifier_for(&app.base, &app)
        .build()
        .await
        .expect("verifier");
    let api = TestApi::start(verifier).await;
    let client = api_client(&app, "profile").await;
    let token = client_token(&app.base, &client, None).await;
    assert_eq!(api.get("/me", Some(&token)).await.status, 200);

    let data = api.get("/data", Some(&token)).await;
    assert_eq!(data.status, 403, "{data:?}");
    assert_eq!(
        data.www_authenticate.as_deref(),
        Some("Bearer realm=\"api\", error=\"insufficient_scope\", error_description=\"the token lacks the scope read:data\", scope=\"read:data\"")
    );
    assert_eq!(data.json()["error"], "insufficient_scope");

    let admin = api.get("/admin", Some(&token)).await;
    assert_eq!(admin.status, 403, "{admin:?}");
    assert!(admin
        .www_authenticate
        .as_deref()
        .unwrap_or_default()
        .contains("error=\"insufficient_scope\""));
    assert_eq!(admin.json()["error"], "insufficient_role");

    // The runtime-named scope layer: 403 with the scope, 401 without a token.
    let write = api.get("/write", Some(&token)).await;
    assert_eq!(write.status, 403);
    assert!(write
        .www_authenticate
        .as_deref()
        .unwrap_or_default()
        .ends_with("scope=\"write:data\""));
    assert_eq!(api.get("/write", None).await.status, 401);

    // `verifier.layer().required()`: no handler runs without a valid token.
    let strict = api.get("/strict", None).await;
    assert_eq!(strict.status, 401);
    assert_eq!(
        strict.www_authenticate.as_deref(),
        Some("Bearer realm=\"api\"")
    );
    api.get("/strict", Some("not.a.token"))
        .await
        .assert_invalid_token("required layer, bad token");
    assert_eq!(api.get("/strict", Some(&token)).await.body, "strict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_or_malformed_authorization_header_is_400_invalid_request() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let verifier = verifier_for(&app.base, &app)
        .build()
        .await
        .expect("verifier");
    let api = TestApi::start(verifier).await;
    let client = api_client(&app, "read:data").await;
    let token = client_token(&app.base, &client, None).await;
    let twice = api
        .http
        .get(api.url("/me"))
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .expect("request");
    let twice = ApiAnswer::of(twice).await;
    assert_eq!(twice.status, 400, "{twice:?}");
    assert!(twice
        .www_authenticate
        .as_deref()
        .unwrap_or_default()
        .contains("error=\"invalid_request\""));
    let spaced = api
        .http
        .get(api.url("/me"))
        .header("authorization", format!("Bearer {token} extra"))
        .send()
        .await
        .expect("request");
    assert_eq!(spaced.status(), 400);
}

backend_test!(
    key_rotation_on_the_server_is_picked_up_without_a_failed_request,
    config = |c: &mut latchkey::Config| {
        c.tokens.key_prepublish_secs = 60;
        c.tokens.key_rotation_secs = 3600;
    },
    |app: TestApp| async move {
        let client = api_client(&app, "read:data").await;
        let verifier = verifier_for(&app.base, &app)
            .build()
            .await
            .expect("verifier");
        let api = TestApi::start(verifier).await;
        let before = client_token(&app.base, &client, None).await;
        assert_eq!(api.get("/data", Some(&before)).await.status, 200);

        // The operator's `latchkey keys rotate`: a new key, published now,
        // signing once the pre-publication window has passed.
        let now = app.clock.now_secs();
        let new_kid = app
            .state
            .keys
            .rotate(&app.state.pool, now)
            .await
            .expect("rotate");
        app.clock.advance(61);
        let after = client_token(&app.base, &client, None).await;
        assert_eq!(
            header_of(&after)["kid"],
            new_kid.as_str(),
            "the new key signs"
        );
        assert_ne!(header_of(&before)["kid"], header_of(&after)["kid"]);

        // Every request succeeds: the new kid, and the old key's token.
        for _ in 0..3 {
            let answer = api.get("/data", Some(&after)).await;
            assert_eq!(answer.status, 200, "{answer:?}");
            assert_eq!(api.get("/data", Some(&before)).await.status, 200);
        }
        let health = api.health().await;
        let kids: Vec<&str> = health["jwks"]["kids"]
            .as_array()
            .expect("kids")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(kids.contains(&new_kid.as_str()), "{health}");
        assert_eq!(
            health["jwks"]["requests"], 2,
            "start-up + one refetch: {health}"
        );
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_unreachable_cached_keys_keep_verifying() {
    let (app, proxy) = app_behind_proxy(Backend::Sqlite, |_| {})
        .await
        .expect("sqlite");
    let client = api_client(&app, "read:data").await;
    let token = client_token(&app.base, &client, None).await;
    let verifier = verifier_for(&proxy.base, &app)
        .build()
        .await
        .expect("verifier");
    let api = TestApi::start(verifier).await;
    assert_eq!(api.get("/data", Some(&token)).await.status, 200);
    let fetched = proxy.count("/.well-known/jwks.json");
    assert_eq!(fetched, 1);

    proxy.set_down(true);
    for _ in 0..20 {
        let answer = api.get("/data", Some(&token)).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    // No request went to the issuer for known keys.
    assert_eq!(proxy.count("/.well-known/jwks.json"), fetched);
    let health = api.health().await;
    // The access tokens' ES256 key and the ID tokens' RS256 key.
    assert_eq!(
        health["jwks"]["kids"].as_array().map(Vec::len),
        Some(2),
        "{health}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_cause_at_most_one_jwks_fetch_per_interval() {
    let (app, proxy) = app_behind_proxy(Backend::Sqlite, |_| {})
        .await
        .expect("sqlite");
    let client = api_client(&app, "read:data").await;
    let token = client_token(&app.base, &client, None).await;
    let verifier = verifier_for(&proxy.base, &app)
        .jwks_min_refetch_interval(Duration::from_secs(1))
        .build()
        .await
        .expect("verifier");
    let api = TestApi::start(verifier).await;
    let payload = b64json(&claims_now(&app, &proxy.base));
    let forged = |n: usize| {
        foreign_key().sign_raw(
            &b64json(&json!({"alg": "ES256", "kid": format!("forged-{n}"), "typ": "at+jwt"})),
            &payload,
        )
    };
    assert_eq!(proxy.count("/.well-known/jwks.json"), 1);

    // A burst of forged kids at once: they share one refetch.
    let burst: Vec<String> = (0..20).map(forged).collect();
    let answers =
        futures_util::future::join_all(burst.iter().map(|t| api.get("/me", Some(t)))).await;
    assert!(answers.iter().all(|a| a.status == 401), "{answers:?}");
    assert_eq!(
        proxy.count("/.well-known/jwks.json"),
        2,
        "one refetch for the burst"
    );

    // Forged kids for ~2.5 s, with the issuer down: at most one fetch per second.
    proxy.set_down(true);
    let start = tokio::time::Instant::now();
    let mut n = 100;
    while start.elapsed() < Duration::from_millis(2_500) {
        n += 1;
        assert_eq!(api.get("/me", Some(&forged(n))).await.status, 401);
        // Genuine tokens keep working meanwhile (cached keys).
        assert_eq!(api.get("/data", Some(&token)).await.status, 200);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let refetches = proxy.count("/.well-known/jwks.json") - 2;
    assert!(n > 120, "the loop sent many forged tokens ({n})");
    assert!(
        refetches as f64 <= elapsed.floor() + 1.0,
        "{refetches} JWKS fetches in {elapsed:.2} s with a 1 s interval"
    );
}

backend_test!(
    introspection_mode_accepts_opaque_tokens_caches_answers_and_refuses_revoked_ones,
    |app: TestApp| async move {
        let opaque_client = opaque_client(&app).await;
        let introspector = register(
            &app,
            client_spec("My API (introspection)", true, &["client_credentials"], ""),
        )
        .await;
        let proxy = Proxy::start().await;
        proxy.forward_to(&app.base);
        // The issuer is the server; introspection goes through the proxy
        // (the HTTP client is pointed at it) so it can be counted.
        let verifier = verifier_for(&app.base, &app)
            .introspection(
                &introspector.id,
                introspector.secret.as_deref().expect("secret"),
            )
            .http_client(proxied_client(&proxy))
            .build()
            .await
            .expect("verifier");
        let api = TestApi::start(verifier).await;
        let token = client_token(&app.base, &opaque_client, None).await;
        assert!(!token.contains('.'), "an opaque token");
        for _ in 0..5 {
            let answer = api.get("/data", Some(&token)).await;
            assert_eq!(answer.status, 200, "{answer:?}");
        }
        assert_eq!(
            proxy.count("/oauth2/introspect"),
            1,
            "cached after the first answer"
        );
        let me = api.get("/me", Some(&token)).await.json();
        assert_eq!(me["sub"], opaque_client.id.as_str());

        // Revoked at the server: the positive answer is reused for at most
        // 60 s, then the issuer says inactive, and that is cached too.
        let revoked = reqwest::Client::new()
            .post(app.url("/oauth2/revoke"))
            .basic_auth(&opaque_client.id, opaque_client.secret.as_deref())
            .form(&[("token", token.as_str())])
            .send()
            .await
            .expect("revoke");
        assert_eq!(revoked.status(), 200);
        app.clock.advance(61);
        api.get("/data", Some(&token))
            .await
            .assert_invalid_token("revoked opaque token");
        assert_eq!(proxy.count("/oauth2/introspect"), 2);
        for _ in 0..3 {
            assert_eq!(api.get("/data", Some(&token)).await.status, 401);
        }
        assert_eq!(
            proxy.count("/oauth2/introspect"),
            2,
            "the negative answer is cached"
        );
        // Unknown opaque garbage: inactive, never 500.
        api.get("/data", Some("c29tZXRoaW5nLW9wYXF1ZQ"))
            .await
            .assert_invalid_token("unknown opaque token");
    }
);

/// A reqwest client that sends every request through the counting proxy
/// (as an HTTP forward proxy: it forwards by path to the server).
fn proxied_client(proxy: &Proxy) -> reqwest::Client {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(&proxy.base).expect("proxy"))
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_unusable_or_oversized_jwks_never_replaces_working_keys() {
    const JWKS: &str = "/.well-known/jwks.json";
    let (app, proxy) = app_behind_proxy(Backend::Sqlite, |_| {})
        .await
        .expect("sqlite");
    let client = api_client(&app, "read:data").await;
    let token = client_token(&app.base, &client, None).await;
    let verifier = verifier_for(&proxy.base, &app)
        .jwks_min_refetch_interval(Duration::ZERO)
        .build()
        .await
        .expect("verifier");
    let api = TestApi::start(verifier).await;
    assert_eq!(api.get("/data", Some(&token)).await.status, 200);
    let payload = b64json(&claims_now(&app, &proxy.base));
    let forged = |n: usize| {
        foreign_key().sign_raw(
            &b64json(&json!({"alg": "ES256", "kid": format!("forged-{n}"), "typ": "at+jwt"})),
            &payload,
        )
    };
    let mut huge = br#"{"keys":[],"padding":""#.to_vec();
    huge.resize(huge.len() + 2 * 1024 * 1024, b'a');
    huge.extend_from_slice(b"\"}");
    let broken_key = json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA",
        "kid": "broken", "alg": "ES256", "use": "sig"}]});
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", br#"{"keys":[]}"#.to_vec(), "no usable key"),
        (
            "unusable",
            broken_key.to_string().into_bytes(),
            "no usable key",
        ),
        (
            "not a JWK Set",
            b"<html>maintenance</html>".to_vec(),
            "not a valid JWK Set",
        ),
        ("2 MiB, streamed", huge, "larger than 1 MiB"),
    ];
    for (n, (what, body, error)) in cases.into_iter().enumerate() {
        proxy.answer_with(JWKS, Some(("application/json", body)));
        let before = proxy.count(JWKS);
        // An unknown kid makes the API fetch the JWKS again …
        assert_eq!(api.get("/me", Some(&forged(n))).await.status, 401, "{what}");
        assert_eq!(proxy.count(JWKS), before + 1, "{what}: refetched");
        // … and the bad answer leaves the working keys in place.
        let answer = api.get("/data", Some(&token)).await;
        assert_eq!(answer.status, 200, "{what}: {answer:?}");
        let health = api.health().await;
        let last_error = health["jwks"]["last_error"].as_str().unwrap_or_default();
        assert!(last_error.contains(error), "{what}: {health}");
        // Still the two published keys (ES256 for access tokens, RS256 for ID tokens).
        assert_eq!(
            health["jwks"]["kids"].as_array().map(Vec::len),
            Some(2),
            "{what}: {health}"
        );
    }
}

backend_test!(
    a_refresh_token_is_refused_although_introspection_calls_it_active,
    |app: TestApp| async move {
        let web = web_client(&app).await;
        let ada = sign_in(&app, &web, "ada@example.com", &[]).await;
        // The issuer says "active" for a live refresh token (RFC 7662) …
        let answer: Value = reqwest::Client::new()
            .post(app.url("/oauth2/introspect"))
            .basic_auth(&web.id, web.secret.as_deref())
            .form(&[("token", ada.refresh_token.as_str())])
            .send()
            .await
            .expect("introspect")
            .json()
            .await
            .expect("json");
        assert_eq!(answer["active"], true, "{answer}");
        assert_eq!(answer["token_type"], "refresh_token", "{answer}");
        // … but an API must not take it for an access token.
        let verifier = verifier_for(&app.base, &app)
            .introspection(&web.id, web.secret.as_deref().expect("secret"))
            .build()
            .await
            .expect("verifier");
        let api = TestApi::start(verifier).await;
        let refused = api.get("/me", Some(&ada.refresh_token)).await;
        refused.assert_invalid_token("a refresh token as a bearer token");
        assert_eq!(api.get("/me", Some(&ada.access_token)).await.status, 200);
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_a_new_opaque_token_share_one_introspection() {
    const INTROSPECT: &str = "/oauth2/introspect";
    let (app, proxy) = app_behind_proxy(Backend::Sqlite, |_| {})
        .await
        .expect("sqlite");
    let opaque = opaque_client(&app).await;
    let token = client_token(&app.base, &opaque, None).await;
    let verifier = verifier_for(&proxy.base, &app)
        .introspection(&opaque.id, opaque.secret.as_deref().expect("secret"))
        .build()
        .await
        .expect("verifier");
    let api = TestApi::start(verifier).await;
    let burst = |token: String| {
        let api = &api;
        async move {
            futures_util::future::join_all((0..20).map(|_| api.get("/data", Some(&token)))).await
        }
    };
    let answers = burst(token.clone()).await;
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
    assert_eq!(proxy.count(INTROSPECT), 1, "one call for the burst");
    // A burst of one garbage token costs the issuer one call too.
    let answers = burst("lk_not-a-token-at-all".to_owned()).await;
    assert!(answers.iter().all(|a| a.status == 401), "{answers:?}");
    assert_eq!(proxy.count(INTROSPECT), 2, "one call for the garbage burst");
}
