//! Client authentication at the token endpoint: `private_key_jwt` (RFC 7523)
//! with `jti` replay protection, next to the secret-based methods.

use latchkey::oauth::clients::{self, AccessTokenFormat, NewClient};
use latchkey::scope::Scope;
use latchkey_verify::jose::{Algorithm, JwkSet, SigningKey};
use serde_json::json;

use crate::backend_test;
use crate::support::app::*;

async fn key_client(app: &TestApp) -> (String, SigningKey) {
    let now = app.clock.now_secs();
    let new = NewClient {
        name: "key-based service".into(),
        confidential: true,
        redirect_uris: vec![],
        post_logout_redirect_uris: vec![],
        grant_types: vec!["client_credentials".into()],
        scopes: Scope::parse("read").expect("scope"),
        audience: "api".into(),
        access_token_format: AccessTokenFormat::Jwt,
        access_token_lifetime_secs: None,
        signing_algorithm: None,
        id_token_signed_response_alg: None,
        first_party: false,
        backchannel_logout_uri: None,
        jwks: None,
        require_pkce: true,
    };
    let (client, _) = clients::create(&app.state.pool, new, now)
        .await
        .expect("client");
    let key = SigningKey::from_bytes(Algorithm::EdDSA, &[7u8; 32]).expect("key");
    let jwks = JwkSet {
        keys: vec![key.public_jwk().expect("jwk")],
    };
    assert!(
        clients::set_jwks(&app.state.pool, &client.id, Some(&jwks), now)
            .await
            .expect("jwks")
    );
    (client.id, key)
}

fn assertion(
    key: &SigningKey,
    client_id: &str,
    aud: &str,
    now: i64,
    exp_in: i64,
    jti: &str,
) -> String {
    key.sign("JWT", &json!({ "iss": client_id, "sub": client_id, "aud": aud, "iat": now, "exp": now + exp_in, "jti": jti })).expect("sign")
}

async fn token_with(app: &TestApp, client_assertion: &str) -> reqwest::Response {
    new_client()
        .post(app.url("/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", client_assertion),
        ])
        .send()
        .await
        .expect("token request")
}

backend_test!(
    private_key_jwt_authenticates_and_a_replayed_assertion_is_refused,
    |app: TestApp| async move {
        let (id, key) = key_client(&app).await;
        let now = app.clock.now_secs();
        let endpoint = app.url("/oauth2/token");
        let first = assertion(&key, &id, &endpoint, now, 60, "jti-1");
        let r = token_with(&app, &first).await;
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.expect("json");
        assert!(body["access_token"]
            .as_str()
            .is_some_and(|t| t.split('.').count() == 3));

        let replay = token_with(&app, &first).await;
        assert_eq!(replay.status(), 401, "the same jti twice is a replay");
        assert_eq!(
            replay.json::<serde_json::Value>().await.expect("json")["error"],
            "invalid_client"
        );

        // The issuer itself is an acceptable audience too.
        let r = token_with(&app, &assertion(&key, &id, &app.base, now, 60, "jti-2")).await;
        assert_eq!(r.status(), 200);
    }
);

backend_test!(
    private_key_jwt_refuses_bad_assertions,
    |app: TestApp| async move {
        let (id, key) = key_client(&app).await;
        let now = app.clock.now_secs();
        let endpoint = app.url("/oauth2/token");
        let stranger = SigningKey::from_bytes(Algorithm::EdDSA, &[9u8; 32]).expect("key");
        let cases = [
        ("wrong audience", assertion(&key, &id, "https://other.example/token", now, 60, "a1")),
        ("expired", assertion(&key, &id, &endpoint, now - 600, 60, "a2")),
        ("lives too long", assertion(&key, &id, &endpoint, now, 3600, "a3")),
        ("signed by another key", assertion(&stranger, &id, &endpoint, now, 60, "a4")),
        ("no jti", key.sign("JWT", &json!({ "iss": id, "sub": id, "aud": endpoint, "exp": now + 60 })).expect("sign")),
        ("iss differs from sub", key.sign("JWT", &json!({ "iss": id, "sub": "someone", "aud": endpoint, "exp": now + 60, "jti": "a5" })).expect("sign")),
        ("garbage", "not.a.jwt".to_owned()),
    ];
        for (what, a) in cases {
            let r = token_with(&app, &a).await;
            assert_eq!(r.status(), 401, "{what}");
            assert_eq!(
                r.json::<serde_json::Value>().await.expect("json")["error"],
                "invalid_client",
                "{what}"
            );
        }
        // An HS256 assertion keyed with the public JWK text (algorithm confusion).
        let public_text = serde_json::to_string(&key.public_jwk()).expect("jwk");
        let forger =
            SigningKey::from_bytes(Algorithm::HS256, public_text.as_bytes()).expect("hmac");
        let forged = forger
            .sign(
                "JWT",
                &json!({ "iss": id, "sub": id, "aud": endpoint, "exp": now + 60, "jti": "a6" }),
            )
            .expect("sign");
        assert_eq!(token_with(&app, &forged).await.status(), 401);
        // Two methods at once is a malformed request.
        let r = new_client()
            .post(app.url("/oauth2/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                (
                    "client_assertion",
                    &assertion(&key, &id, &endpoint, now, 60, "a7"),
                ),
                ("client_secret", "x"),
            ])
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 400);
        assert_eq!(
            r.json::<serde_json::Value>().await.expect("json")["error"],
            "invalid_request"
        );
    }
);

backend_test!(
    token_endpoint_rate_limits_each_client,
    config = |c: &mut latchkey::Config| c.tokens.max_token_requests_per_client_per_minute = 3,
    |app: TestApp| async move {
        let (id, key) = key_client(&app).await;
        let now = app.clock.now_secs();
        let endpoint = app.url("/oauth2/token");
        for i in 0..3 {
            assert_eq!(
                token_with(
                    &app,
                    &assertion(&key, &id, &endpoint, now, 60, &format!("r{i}"))
                )
                .await
                .status(),
                200
            );
        }
        let r = token_with(&app, &assertion(&key, &id, &endpoint, now, 60, "r3")).await;
        assert_eq!(r.status(), 429);
        assert!(r.headers().contains_key("retry-after"));
        assert_eq!(r.headers()["cache-control"], "no-store");
        app.clock.advance(60);
        let now = app.clock.now_secs();
        assert_eq!(
            token_with(&app, &assertion(&key, &id, &endpoint, now, 60, "r4"))
                .await
                .status(),
            200,
            "a new window"
        );
    }
);
