//! The token endpoint and what it issues: `client_credentials` (RFC 6749
//! §4.4) with RFC 9068 JWT access tokens, the §5.2 error objects,
//! refresh-token rotation with reuse detection (RFC 9700 §4.14), revocation
//! (RFC 7009) and introspection (RFC 7662). Everything goes over HTTP; the
//! access tokens are checked with an independent JOSE implementation
//! (`jsonwebtoken`) against the published JWKS. Time moves with the manual
//! clock.
//!
//! Refresh tokens come from `tokens::refresh::start_family` after a real
//! sign-in through `/login` (the authorization-code flow that will issue them
//! lives in the OAuth issue).

use std::sync::Arc;

use latchkey::oauth::clients::AccessTokenFormat;
use latchkey::scope::Scope;
use latchkey_verify::jose::{self, Algorithm, SigningKey};
use serde_json::{json, Value};
use sqlx::Row as _;

use crate::backend_test;
use crate::support::app::*;
use crate::support::jwt::{fetch_jwks, jwt_header, jwt_payload, verify_independently};
use crate::support::oauth::*;

/// `tokens.access_token_lifetime_secs` default.
const DEFAULT_LIFETIME: i64 = 900;

// ---------------------------------------------------------------- clients

/// A confidential client of a web app (refresh tokens, and machine tokens).
async fn web_client(app: &TestApp, scopes: &str) -> TestClient {
    register(
        app,
        client_spec(
            "web app",
            true,
            &["authorization_code", "refresh_token", "client_credentials"],
            scopes,
        ),
    )
    .await
}

// ---------------------------------------------------------------- requests

async fn refresh(app: &TestApp, client: &TestClient, refresh_token: &str) -> Answer {
    post_as(
        app,
        "/oauth2/token",
        client,
        Auth::Basic,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

async fn revoke(app: &TestApp, client: &TestClient, token: &str) -> Answer {
    post_as(
        app,
        "/oauth2/revoke",
        client,
        Auth::Basic,
        &[("token", token)],
    )
    .await
}

fn inactive() -> Value {
    json!({ "active": false })
}

// ---------------------------------------------------------------- users

/// A user signed in through the real `/login` form in their own browser.
struct Browser {
    http: reqwest::Client,
    user_id: String,
    session_handle: String,
}

async fn sign_in(app: &TestApp, email: &str) -> Browser {
    let user = match latchkey::identity::find(&app.state.pool, email).await {
        Ok(user) => user,
        Err(_) => app.create_user(email, PASSWORD, &["staff"]).await,
    };
    let http = new_client();
    let response = app.login_with(&http, email, PASSWORD).await;
    assert_eq!(response.status(), 303, "sign-in of {email}");
    let sessions: Value = http
        .get(app.url("/account/sessions"))
        .send()
        .await
        .expect("sessions")
        .json()
        .await
        .expect("json");
    let session_handle = sessions["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .find(|s| s["current"] == true)
        .and_then(|s| s["handle"].as_str())
        .expect("the current session")
        .to_owned();
    Browser {
        http,
        user_id: user.id,
        session_handle,
    }
}

impl Browser {
    async fn sessions_status(&self, app: &TestApp) -> u16 {
        self.http
            .get(app.url("/account/sessions"))
            .send()
            .await
            .expect("sessions")
            .status()
            .as_u16()
    }
}

/// Starts a refresh-token family for `client` and the browser's session, as
/// the end of an authorization would. Returns the token and the family id.
async fn start_family(
    app: &TestApp,
    client: &TestClient,
    browser: &Browser,
    scope: &str,
) -> (String, String) {
    let (token, family) = latchkey::tokens::refresh::start_family(
        &app.state.pool,
        &app.state.config.tokens,
        latchkey::tokens::refresh::FamilyOwner {
            client_id: &client.id,
            user_id: &browser.user_id,
            session_handle: Some(&browser.session_handle),
            sign_in: None,
        },
        &Scope::parse(scope).expect("scope"),
        app.clock.now_secs(),
    )
    .await
    .expect("start family");
    (token.expose().to_owned(), family.id)
}

async fn family_revoked(app: &TestApp, family_id: &str) -> bool {
    latchkey::tokens::refresh::family_revoked(&app.state.pool, family_id)
        .await
        .expect("family")
}

// ---------------------------------------------------------------- storage

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query(sql)
        .fetch_one(&app.state.pool)
        .await
        .expect("count")
        .try_get("n")
        .expect("n")
}

/// Everything the token endpoint or revocation can write.
#[derive(Debug, PartialEq, Eq)]
struct Issued {
    families: i64,
    revoked_families: i64,
    refresh_tokens: i64,
    spent_refresh_tokens: i64,
    opaque_access_tokens: i64,
    denylisted: i64,
    sessions: i64,
}

async fn issued(app: &TestApp) -> Issued {
    Issued {
        families: count(app, "SELECT COUNT(*) AS n FROM refresh_families").await,
        revoked_families: count(
            app,
            "SELECT COUNT(*) AS n FROM refresh_families WHERE revoked_at IS NOT NULL",
        )
        .await,
        refresh_tokens: count(app, "SELECT COUNT(*) AS n FROM refresh_tokens").await,
        spent_refresh_tokens: count(
            app,
            "SELECT COUNT(*) AS n FROM refresh_tokens WHERE spent_at IS NOT NULL",
        )
        .await,
        opaque_access_tokens: count(app, "SELECT COUNT(*) AS n FROM opaque_access_tokens").await,
        denylisted: count(app, "SELECT COUNT(*) AS n FROM revoked_access_tokens").await,
        sessions: count(app, "SELECT COUNT(*) AS n FROM sessions").await,
    }
}

/// The denylist entry of a `jti`: its `expires_at`, if listed.
async fn denylisted_until(app: &TestApp, jti: &str) -> Option<i64> {
    sqlx::query("SELECT expires_at FROM revoked_access_tokens WHERE jti = $1")
        .bind(jti)
        .fetch_optional(&app.state.pool)
        .await
        .expect("denylist")
        .map(|row| row.try_get("expires_at").expect("expires_at"))
}

// ---------------------------------------------------------------- JWTs

/// Verifies an access token independently against the JWKS served now.
async fn verified_claims(app: &TestApp, token: &str, audience: &str) -> Value {
    let (jwks, _) = fetch_jwks(app).await;
    verify_independently(
        token,
        &jwks,
        &app.state.config.issuer,
        audience,
        app.clock.now_secs(),
    )
    .unwrap_or_else(|e| panic!("jsonwebtoken refuses our token: {e}"))
}

/// The same token with one bit of its signature flipped.
fn with_flipped_signature_bit(token: &str) -> String {
    let (signed, signature) = token.rsplit_once('.').expect("a JWS");
    let mut bytes = jose::b64_decode(signature).expect("base64url signature");
    bytes[10] ^= 0x01;
    format!("{signed}.{}", jose::b64(&bytes))
}

/// A key of some other issuer.
fn foreign_key() -> SigningKey {
    SigningKey::from_bytes(Algorithm::ES256, &latchkey::crypto::random_bytes::<32>())
        .expect("a P-256 key")
}

// =========================================================== client credentials

backend_test!(
    client_credentials_issues_an_rfc9068_jwt_access_token,
    |app: TestApp| async move {
        let machine = machine_client(&app, "read write").await;
        let now = app.clock.now_secs();
        let answer = token_request(&app, &machine, &[("grant_type", "client_credentials")]).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.cache_control(), "no-store");
        assert_eq!(answer.headers["pragma"], "no-cache");
        assert_eq!(answer.body["token_type"], "Bearer");
        assert_eq!(answer.body["expires_in"], DEFAULT_LIFETIME);
        assert_eq!(answer.body["scope"], "read write");
        assert!(
            answer.body.get("refresh_token").is_none(),
            "client_credentials never issues a refresh token (RFC 6749 §4.4.3): {answer:?}"
        );
        let token = answer.access_token();

        let header = jwt_header(&token);
        assert_eq!(header["typ"], "at+jwt", "RFC 9068 §2.1");
        assert_eq!(header["alg"], "ES256");
        let claims = verified_claims(&app, &token, &machine.id).await;
        assert_eq!(claims["iss"], app.state.config.issuer.as_str());
        assert_eq!(
            claims["sub"],
            machine.id.as_str(),
            "RFC 9068 §2.2: sub is the client"
        );
        assert_eq!(claims["aud"], machine.id.as_str());
        assert_eq!(claims["client_id"], machine.id.as_str());
        assert_eq!(claims["scope"], "read write");
        assert_eq!(claims["iat"], now);
        assert_eq!(claims["nbf"], now);
        assert_eq!(claims["exp"], now + DEFAULT_LIFETIME);
        let jti = claims["jti"].as_str().expect("jti").to_owned();
        assert!(jti.len() >= 16, "{jti}");
        assert!(
            claims.get("roles").is_none() && claims.get("email").is_none(),
            "no personal data in a machine token: {claims}"
        );

        // client_secret_post works the same, and a narrower scope is granted as asked.
        let answer = post_as(
            &app,
            "/oauth2/token",
            &machine,
            Auth::Post,
            &[("grant_type", "client_credentials"), ("scope", "read")],
        )
        .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.body["scope"], "read");
        let claims = verified_claims(&app, &answer.access_token(), &machine.id).await;
        assert_eq!(claims["scope"], "read");
        assert_ne!(claims["jti"], jti.as_str(), "every token has its own jti");
    }
);

backend_test!(
    client_credentials_lifetime_and_audience_follow_the_client_settings,
    |app: TestApp| async move {
        let mut spec = client_spec("short-lived", true, &["client_credentials"], "read");
        spec.access_token_lifetime_secs = Some(120);
        spec.audience = "https://api.example.test".into();
        let short = register(&app, spec).await;
        let default = machine_client(&app, "read").await;

        let answer = token_request(&app, &short, &[("grant_type", "client_credentials")]).await;
        assert_eq!(answer.body["expires_in"], 120, "{answer:?}");
        let claims =
            verified_claims(&app, &answer.access_token(), "https://api.example.test").await;
        assert_eq!(
            claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
            120
        );
        assert_eq!(claims["aud"], "https://api.example.test");

        let claims = verified_claims(&app, &machine_token(&app, &default).await, &default.id).await;
        assert_eq!(
            claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
            DEFAULT_LIFETIME,
            "the override is per client"
        );
    }
);

backend_test!(
    client_credentials_scope_is_limited_to_the_clients_allowed_set,
    |app: TestApp| async move {
        // Opaque tokens are stored, so "nothing issued" is observable.
        let mut spec = client_spec("machine", true, &["client_credentials"], "read write");
        spec.access_token_format = AccessTokenFormat::Opaque;
        let machine = register(&app, spec).await;
        for scope in ["read admin", "admin", "read write admin"] {
            let answer = token_request(
                &app,
                &machine,
                &[("grant_type", "client_credentials"), ("scope", scope)],
            )
            .await;
            answer.assert_error(400, "invalid_scope", scope);
        }
        let answer = token_request(
            &app,
            &machine,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "bad\"scope"),
            ],
        )
        .await;
        answer.assert_error(400, "invalid_scope", "malformed scope");
        assert_eq!(issued(&app).await.opaque_access_tokens, 0, "nothing issued");

        let answer = token_request(
            &app,
            &machine,
            &[("grant_type", "client_credentials"), ("scope", "write")],
        )
        .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.body["scope"], "write");
        assert_eq!(issued(&app).await.opaque_access_tokens, 1);
    }
);

backend_test!(
    client_credentials_is_refused_to_public_clients_and_clients_without_the_grant,
    |app: TestApp| async move {
        let public = register(
            &app,
            client_spec(
                "spa",
                false,
                &["client_credentials", "refresh_token"],
                "read",
            ),
        )
        .await;
        let answer = post_as(
            &app,
            "/oauth2/token",
            &public,
            Auth::Post,
            &[("grant_type", "client_credentials")],
        )
        .await;
        answer.assert_error(400, "unauthorized_client", "public client");

        let web_only = register(
            &app,
            client_spec(
                "web",
                true,
                &["authorization_code", "refresh_token"],
                "read",
            ),
        )
        .await;
        let answer = token_request(&app, &web_only, &[("grant_type", "client_credentials")]).await;
        answer.assert_error(400, "unauthorized_client", "client without the grant");
    }
);

// =========================================================== RFC 6749 §5.2

backend_test!(
    token_endpoint_errors_follow_rfc6749_section_5_2_and_issue_nothing,
    |app: TestApp| async move {
        let web = web_client(&app, "read").await;
        let secret = web.secret.clone().expect("secret");
        let browser = sign_in(&app, "ada@example.com").await;
        let (refresh_token, _) = start_family(&app, &web, &browser, "read").await;
        let before = issued(&app).await;
        let url = app.url("/oauth2/token");
        let http = new_client();
        let rt = refresh_token.as_str();

        let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
            (
                "missing grant_type",
                http.post(&url)
                    .basic_auth(&web.id, Some(&secret))
                    .form(&[("refresh_token", rt)]),
                400,
                "invalid_request",
            ),
            (
                "duplicated refresh_token",
                http.post(&url).basic_auth(&web.id, Some(&secret)).form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", rt),
                    ("refresh_token", rt),
                ]),
                400,
                "invalid_request",
            ),
            (
                "duplicated grant_type",
                http.post(&url).basic_auth(&web.id, Some(&secret)).form(&[
                    ("grant_type", "refresh_token"),
                    ("grant_type", "refresh_token"),
                    ("refresh_token", rt),
                ]),
                400,
                "invalid_request",
            ),
            (
                "missing refresh_token",
                http.post(&url)
                    .basic_auth(&web.id, Some(&secret))
                    .form(&[("grant_type", "refresh_token")]),
                400,
                "invalid_request",
            ),
            (
                "unknown grant type",
                http.post(&url)
                    .basic_auth(&web.id, Some(&secret))
                    .form(&[("grant_type", "urn:example:unknown"), ("refresh_token", rt)]),
                400,
                "unsupported_grant_type",
            ),
            (
                "password grant",
                http.post(&url).basic_auth(&web.id, Some(&secret)).form(&[
                    ("grant_type", "password"),
                    ("username", "ada@example.com"),
                    ("password", PASSWORD),
                ]),
                400,
                "unsupported_grant_type",
            ),
            (
                "implicit grant",
                http.post(&url)
                    .basic_auth(&web.id, Some(&secret))
                    .form(&[("grant_type", "implicit")]),
                400,
                "unsupported_grant_type",
            ),
            (
                "wrong secret via Basic",
                http.post(&url)
                    .basic_auth(&web.id, Some("not-the-secret"))
                    .form(&[("grant_type", "refresh_token"), ("refresh_token", rt)]),
                401,
                "invalid_client",
            ),
            (
                "unknown client via Basic",
                http.post(&url)
                    .basic_auth("lk_nobody", Some(&secret))
                    .form(&[("grant_type", "refresh_token"), ("refresh_token", rt)]),
                401,
                "invalid_client",
            ),
            (
                "wrong secret via client_secret_post",
                http.post(&url).form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", rt),
                    ("client_id", &web.id),
                    ("client_secret", "not-the-secret"),
                ]),
                401,
                "invalid_client",
            ),
            (
                "no client authentication at all",
                http.post(&url)
                    .form(&[("grant_type", "refresh_token"), ("refresh_token", rt)]),
                401,
                "invalid_client",
            ),
            (
                "Basic and client_secret together",
                http.post(&url).basic_auth(&web.id, Some(&secret)).form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", rt),
                    ("client_id", &web.id),
                    ("client_secret", &secret),
                ]),
                400,
                "invalid_request",
            ),
            (
                "JSON body",
                http.post(&url)
                    .basic_auth(&web.id, Some(&secret))
                    .json(&json!({ "grant_type": "refresh_token", "refresh_token": rt })),
                400,
                "invalid_request",
            ),
            (
                "form body labelled text/plain",
                http.post(&url)
                    .basic_auth(&web.id, Some(&secret))
                    .header("content-type", "text/plain")
                    .body(format!("grant_type=refresh_token&refresh_token={rt}")),
                400,
                "invalid_request",
            ),
        ];
        for (what, request, status, error) in cases {
            let answer = answer(request.send().await.expect("send")).await;
            answer.assert_error(status, error, what);
            let challenge = answer
                .headers
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok());
            if what.ends_with("via Basic") {
                assert!(
                    challenge.is_some_and(|c| c.starts_with("Basic")),
                    "{what}: RFC 6749 §5.2 wants WWW-Authenticate after Basic: {answer:?}"
                );
            }
            assert_eq!(
                issued(&app).await,
                before,
                "{what}: nothing issued or spent"
            );
        }

        // The refresh token survived every refused request: it was never spent.
        let answer = refresh(&app, &web, &refresh_token).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(browser.sessions_status(&app).await, 200);
    }
);

// =========================================================== refresh tokens

backend_test!(
    refresh_token_rotates_on_every_use,
    |app: TestApp| async move {
        let web = web_client(&app, "read write").await;
        let browser = sign_in(&app, "ada@example.com").await;
        let (first, family_id) = start_family(&app, &web, &browser, "read write").await;

        let mut current = first.clone();
        let mut seen = vec![first.clone()];
        for round in 0..3 {
            app.clock.advance(60);
            let answer = refresh(&app, &web, &current).await;
            assert_eq!(answer.status, 200, "round {round}: {answer:?}");
            assert_eq!(answer.cache_control(), "no-store");
            assert_eq!(answer.body["token_type"], "Bearer");
            assert_eq!(answer.body["scope"], "read write");
            let next = answer.refresh_token();
            assert_eq!(next.len(), 43, "256 random bits, base64url");
            assert!(!seen.contains(&next), "round {round}: a new refresh token");
            seen.push(next.clone());

            let claims = verified_claims(&app, &answer.access_token(), &web.id).await;
            assert_eq!(claims["sub"], browser.user_id.as_str());
            assert_eq!(claims["client_id"], web.id.as_str());
            assert_eq!(claims["sid"], browser.session_handle.as_str());
            assert_eq!(claims["scope"], "read write");
            assert_eq!(claims["roles"], json!(["staff"]));

            // The presented token is spent; the new one is live.
            assert_eq!(introspect(&app, &web, &current).await, inactive());
            let live = introspect(&app, &web, &next).await;
            assert_eq!(live["active"], true, "{live}");
            assert_eq!(live["token_type"], "refresh_token");
            assert_eq!(live["client_id"], web.id.as_str());
            assert_eq!(live["sub"], browser.user_id.as_str());
            current = next;
        }
        // Stored only as SHA-256: no stored value equals a token we were given.
        let rows = sqlx::query("SELECT hash, spent_at FROM refresh_tokens")
            .fetch_all(&app.state.pool)
            .await
            .expect("rows");
        assert_eq!(rows.len(), 4);
        for row in &rows {
            let hash: String = row.try_get("hash").expect("hash");
            assert!(!seen.contains(&hash));
        }
        let spent = rows
            .iter()
            .filter(|r| {
                r.try_get::<Option<i64>, _>("spent_at")
                    .expect("spent_at")
                    .is_some()
            })
            .count();
        assert_eq!(spent, 3, "every token but the newest is spent");
        assert!(!family_revoked(&app, &family_id).await);
    }
);

backend_test!(
    refresh_token_reuse_revokes_family_and_ends_session,
    |app: TestApp| async move {
        let web = web_client(&app, "read").await;
        let laptop = sign_in(&app, "ada@example.com").await;
        let phone = sign_in(&app, "ada@example.com").await;
        let (r0, family_id) = start_family(&app, &web, &laptop, "read").await;
        let (phone_token, phone_family) = start_family(&app, &web, &phone, "read").await;

        let r1 = refresh(&app, &web, &r0).await.refresh_token();
        let r2 = refresh(&app, &web, &r1).await.refresh_token();
        assert!(!app
            .audit_kinds()
            .await
            .contains(&"refresh_token_reuse".to_owned()));

        // An attacker replays the spent r0.
        let answer = refresh(&app, &web, &r0).await;
        answer.assert_error(400, "invalid_grant", "reuse of a spent refresh token");

        // The whole family is dead, including the newest token the victim holds...
        assert!(family_revoked(&app, &family_id).await);
        refresh(&app, &web, &r2).await.assert_error(
            400,
            "invalid_grant",
            "newest token after reuse",
        );
        refresh(&app, &web, &r1).await.assert_error(
            400,
            "invalid_grant",
            "middle token after reuse",
        );
        assert_eq!(introspect(&app, &web, &r2).await, inactive());
        // ...and so is the sign-in session it came from.
        assert_eq!(laptop.sessions_status(&app).await, 401);
        let audit = latchkey::audit::tail(&app.state.pool, 100)
            .await
            .expect("audit");
        let event = audit
            .iter()
            .find(|e| e.kind == "refresh_token_reuse")
            .expect("a refresh_token_reuse audit event");
        assert_eq!(event.subject, laptop.user_id);
        assert!(event.detail.contains(&family_id), "{event:?}");
        for secret in [&r0, &r1, &r2] {
            assert!(
                !event.detail.contains(secret.as_str()),
                "no token in the audit log"
            );
        }

        // Another session of the same user, and its family, are untouched.
        assert_eq!(phone.sessions_status(&app).await, 200);
        assert!(!family_revoked(&app, &phone_family).await);
        assert_eq!(refresh(&app, &web, &phone_token).await.status, 200);
    }
);

backend_test!(
    refresh_token_of_another_client_is_invalid_grant,
    |app: TestApp| async move {
        let web = web_client(&app, "read").await;
        let other = web_client(&app, "read").await;
        let browser = sign_in(&app, "ada@example.com").await;
        let (token, family_id) = start_family(&app, &web, &browser, "read").await;
        let before = issued(&app).await;

        refresh(&app, &other, &token).await.assert_error(
            400,
            "invalid_grant",
            "another client's refresh token",
        );
        assert_eq!(
            issued(&app).await,
            before,
            "nothing spent, revoked or issued"
        );
        assert!(!family_revoked(&app, &family_id).await);
        assert_eq!(browser.sessions_status(&app).await, 200);

        // It still works for the client it was issued to.
        let answer = refresh(&app, &web, &token).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        // And its spent predecessor, replayed by the other client, harms nothing either.
        refresh(&app, &other, &token).await.assert_error(
            400,
            "invalid_grant",
            "another client's spent token",
        );
        assert!(!family_revoked(&app, &family_id).await);
        assert_eq!(
            refresh(&app, &web, &answer.refresh_token()).await.status,
            200
        );
    }
);

backend_test!(refresh_scope_can_only_shrink, |app: TestApp| async move {
    let web = web_client(&app, "read write admin").await;
    let browser = sign_in(&app, "ada@example.com").await;
    let (token, _) = start_family(&app, &web, &browser, "read write").await;
    let scoped = |scope: &'static str, token: String| {
        let app = &app;
        let web = &web;
        async move {
            post_as(
                app,
                "/oauth2/token",
                web,
                Auth::Basic,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &token),
                    ("scope", scope),
                ],
            )
            .await
        }
    };
    // "admin" is allowed for the client but was never granted in this family.
    for wider in ["read write admin", "admin"] {
        scoped(wider, token.clone())
            .await
            .assert_error(400, "invalid_scope", wider);
    }
    // The refused requests did not spend the token; a narrower scope is fine.
    let answer = scoped("read", token.clone()).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["scope"], "read");
    let claims = verified_claims(&app, &answer.access_token(), &web.id).await;
    assert_eq!(claims["scope"], "read");
    let narrowed = answer.refresh_token();
    // Once narrowed it stays narrow: no growing back...
    scoped("read write", narrowed.clone()).await.assert_error(
        400,
        "invalid_scope",
        "regrow after narrowing",
    );
    // ...and a refresh without scope keeps the narrowed one.
    let answer = refresh(&app, &web, &narrowed).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["scope"], "read");
});

const IDLE: i64 = 3600;
const ABSOLUTE: i64 = 10_000;

backend_test!(
    refresh_token_expires_when_idle,
    config = |c: &mut latchkey::Config| {
        c.tokens.refresh_token_idle_secs = IDLE;
        c.tokens.refresh_token_absolute_secs = ABSOLUTE;
    },
    |app: TestApp| async move {
        let web = web_client(&app, "read").await;
        let browser = sign_in(&app, "ada@example.com").await;
        let (token, _) = start_family(&app, &web, &browser, "read").await;
        // Used one second before its idle deadline: fine, and the new token
        // gets a fresh idle window.
        app.clock.advance(IDLE - 1);
        let answer = refresh(&app, &web, &token).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        let next = answer.refresh_token();
        // Unused for the whole idle window: dead.
        app.clock.advance(IDLE);
        assert_eq!(introspect(&app, &web, &next).await, inactive());
        refresh(&app, &web, &next)
            .await
            .assert_error(400, "invalid_grant", "idle refresh token");
    }
);

backend_test!(
    refresh_token_family_ends_at_its_absolute_lifetime,
    config = |c: &mut latchkey::Config| {
        c.tokens.refresh_token_idle_secs = IDLE;
        c.tokens.refresh_token_absolute_secs = ABSOLUTE;
    },
    |app: TestApp| async move {
        let web = web_client(&app, "read").await;
        let browser = sign_in(&app, "ada@example.com").await;
        let t0 = app.clock.now_secs();
        let (mut token, _) = start_family(&app, &web, &browser, "read").await;
        // Refreshed well within every idle window, the family still ends
        // ABSOLUTE seconds after it started.
        for at in [3000, 6000, 9000, ABSOLUTE - 1] {
            app.clock.set(t0 + at);
            let answer = refresh(&app, &web, &token).await;
            assert_eq!(answer.status, 200, "t0+{at}: {answer:?}");
            token = answer.refresh_token();
        }
        let live = introspect(&app, &web, &token).await;
        assert_eq!(live["exp"], t0 + ABSOLUTE, "{live}");
        app.clock.set(t0 + ABSOLUTE);
        refresh(&app, &web, &token).await.assert_error(
            400,
            "invalid_grant",
            "past the absolute lifetime",
        );
    }
);

backend_test!(disabled_user_cannot_refresh, |app: TestApp| async move {
    let web = web_client(&app, "read").await;
    let browser = sign_in(&app, "ada@example.com").await;
    let (token, family_id) = start_family(&app, &web, &browser, "read").await;
    latchkey::cascade::set_user_disabled(
        &app.state.pool,
        &browser.user_id,
        true,
        app.clock.now_secs(),
    )
    .await
    .expect("disable");
    refresh(&app, &web, &token)
        .await
        .assert_error(400, "invalid_grant", "disabled user");
    assert!(family_revoked(&app, &family_id).await);
    // Enabling the user again does not bring the old tokens back.
    latchkey::cascade::set_user_disabled(
        &app.state.pool,
        &browser.user_id,
        false,
        app.clock.now_secs(),
    )
    .await
    .expect("enable");
    refresh(&app, &web, &token).await.assert_error(
        400,
        "invalid_grant",
        "re-enabled user's old token",
    );

    // The rotation checks the user itself too, whatever path set the flag.
    let browser = sign_in(&app, "ada@example.com").await;
    let (token, family_id) = start_family(&app, &web, &browser, "read").await;
    sqlx::query("UPDATE users SET disabled = 1 WHERE id = $1")
        .bind(&browser.user_id)
        .execute(&app.state.pool)
        .await
        .expect("flag");
    assert!(!family_revoked(&app, &family_id).await);
    assert_eq!(introspect(&app, &web, &token).await, inactive());
    refresh(&app, &web, &token)
        .await
        .assert_error(400, "invalid_grant", "user flagged disabled");
});

backend_test!(
    signing_out_revokes_the_sessions_refresh_tokens,
    |app: TestApp| async move {
        let web = web_client(&app, "read").await;
        let laptop = sign_in(&app, "ada@example.com").await;
        let phone = sign_in(&app, "ada@example.com").await;
        let (laptop_token, laptop_family) = start_family(&app, &web, &laptop, "read").await;
        let (phone_token, phone_family) = start_family(&app, &web, &phone, "read").await;

        let csrf = app.account_csrf(&laptop.http).await;
        let out = laptop
            .http
            .post(app.url("/logout"))
            .form(&[("csrf_token", csrf.as_str())])
            .send()
            .await
            .expect("logout");
        assert_eq!(out.status(), 303);
        assert_eq!(laptop.sessions_status(&app).await, 401);

        assert!(family_revoked(&app, &laptop_family).await);
        refresh(&app, &web, &laptop_token).await.assert_error(
            400,
            "invalid_grant",
            "refresh after sign-out",
        );
        // Only that session's tokens.
        assert!(!family_revoked(&app, &phone_family).await);
        assert_eq!(refresh(&app, &web, &phone_token).await.status, 200);
    }
);

// With the reuse grace off, the losers of the race are reuse (with it on:
// `refresh_grace::concurrent_retries_within_the_grace_all_succeed_and_leave_one_live_token`).
backend_test!(
    concurrent_refreshes_with_one_token_exactly_one_succeeds,
    config = |c: &mut latchkey::config::Config| c.tokens.refresh_token_reuse_grace_secs = 0,
    |app: TestApp| async move {
        const RACERS: usize = 8;
        let web = web_client(&app, "read").await;
        let secret = web.secret.clone().expect("secret");
        for round in 0..4 {
            let browser = sign_in(&app, &format!("racer{round}@example.com")).await;
            let (token, family_id) = start_family(&app, &web, &browser, "read").await;
            let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
            let mut racers = Vec::new();
            for _ in 0..RACERS {
                let (barrier, url, id, secret, token) = (
                    barrier.clone(),
                    app.url("/oauth2/token"),
                    web.id.clone(),
                    secret.clone(),
                    token.clone(),
                );
                racers.push(tokio::spawn(async move {
                    let http = reqwest::Client::new();
                    barrier.wait().await;
                    let response = http
                        .post(url)
                        .basic_auth(id, Some(secret))
                        .form(&[("grant_type", "refresh_token"), ("refresh_token", &token)])
                        .send()
                        .await
                        .expect("send");
                    let status = response.status().as_u16();
                    let body: Value = response.json().await.expect("json");
                    (status, body)
                }));
            }
            let mut won = 0;
            for racer in racers {
                let (status, body) = racer.await.expect("racer");
                match status {
                    200 => won += 1,
                    400 => assert_eq!(body["error"], "invalid_grant", "round {round}: {body}"),
                    other => panic!("round {round}: unexpected {other}: {body}"),
                }
            }
            assert_eq!(
                won, 1,
                "round {round}: exactly one request rotates the token"
            );
            let in_family =
                sqlx::query("SELECT COUNT(*) AS n FROM refresh_tokens WHERE family_id = $1")
                    .bind(&family_id)
                    .fetch_one(&app.state.pool)
                    .await
                    .expect("count")
                    .try_get::<i64, _>("n")
                    .expect("n");
            assert_eq!(in_family, 2, "round {round}: one successor token, not more");
        }
    }
);

// =========================================================== refresh-token reuse grace

fn grace(app: &TestApp) -> i64 {
    app.state.config.tokens.refresh_token_reuse_grace_secs
}

/// Tokens of the family that can still be used: unspent (a superseded one is spent).
async fn live_in_family(app: &TestApp, family_id: &str) -> i64 {
    sqlx::query(
        "SELECT COUNT(*) AS n FROM refresh_tokens WHERE family_id = $1 AND spent_at IS NULL",
    )
    .bind(family_id)
    .fetch_one(&app.state.pool)
    .await
    .expect("count")
    .try_get::<i64, _>("n")
    .expect("n")
}

backend_test!(
    a_retry_within_the_reuse_grace_gets_a_fresh_successor_that_supersedes_the_unused_one,
    |app: TestApp| async move {
        assert!(grace(&app) > 0, "the grace is on by default");
        let web = web_client(&app, "read").await;
        let browser = sign_in(&app, "ada@example.com").await;
        let (r0, family_id) = start_family(&app, &web, &browser, "read").await;
        // The answer carrying r1 is lost; the client retries r0 a little later.
        let lost = refresh(&app, &web, &r0).await.refresh_token();
        app.clock.advance(grace(&app) - 1);
        let retried = refresh(&app, &web, &r0).await;
        assert_eq!(retried.status, 200, "{retried:?}");
        let r1 = retried.refresh_token();
        assert_ne!(r1, lost, "a fresh successor");
        assert!(!family_revoked(&app, &family_id).await);
        assert_eq!(browser.sessions_status(&app).await, 200, "signed in still");
        assert_eq!(
            introspect(&app, &web, &lost).await,
            inactive(),
            "superseded"
        );
        assert_eq!(introspect(&app, &web, &r1).await["active"], true);
        assert_eq!(live_in_family(&app, &family_id).await, 1, "one live token");
        // Audited, without a secret.
        let audit = latchkey::audit::tail(&app.state.pool, 100)
            .await
            .expect("audit");
        let event = audit
            .iter()
            .find(|e| e.kind == "refresh_token_retried")
            .expect("a refresh_token_retried event");
        assert_eq!(event.subject, browser.user_id);
        assert_eq!(event.actor, web.id);
        assert!(event.detail.contains(&family_id), "{event:?}");
        assert!(
            event
                .detail
                .contains(&format!("{} s after", grace(&app) - 1)),
            "{event:?}"
        );
        assert!(!audit.iter().any(|e| e.kind == "refresh_token_reuse"));
        // Only hashes are stored.
        let stored: Vec<String> = sqlx::query("SELECT hash, successor_hash FROM refresh_tokens")
            .fetch_all(&app.state.pool)
            .await
            .expect("rows")
            .iter()
            .flat_map(|r| {
                [
                    r.try_get::<String, _>("hash").expect("hash"),
                    r.try_get::<Option<String>, _>("successor_hash")
                        .expect("successor")
                        .unwrap_or_default(),
                ]
            })
            .collect();
        for secret in [&r0, &lost, &r1] {
            assert!(!stored.iter().any(|s| s.contains(secret.as_str())));
        }
        // The successor works as any refresh token.
        let r2 = refresh(&app, &web, &r1).await;
        assert_eq!(r2.status, 200, "{r2:?}");
    }
);

backend_test!(
    concurrent_retries_within_the_reuse_grace_all_succeed_and_leave_one_live_token,
    |app: TestApp| async move {
        const RACERS: usize = 8;
        let web = web_client(&app, "read").await;
        let secret = web.secret.clone().expect("secret");
        for round in 0..4 {
            let browser = sign_in(&app, &format!("retrier{round}@example.com")).await;
            let (token, family_id) = start_family(&app, &web, &browser, "read").await;
            let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
            let mut racers = Vec::new();
            for _ in 0..RACERS {
                let (barrier, url, id, secret, token) = (
                    barrier.clone(),
                    app.url("/oauth2/token"),
                    web.id.clone(),
                    secret.clone(),
                    token.clone(),
                );
                racers.push(tokio::spawn(async move {
                    let http = reqwest::Client::new();
                    barrier.wait().await;
                    let response = http
                        .post(url)
                        .basic_auth(id, Some(secret))
                        .form(&[("grant_type", "refresh_token"), ("refresh_token", &token)])
                        .send()
                        .await
                        .expect("send");
                    let status = response.status().as_u16();
                    let body: Value = response.json().await.expect("json");
                    (status, body)
                }));
            }
            let mut answered = Vec::new();
            for racer in racers {
                let (status, body) = racer.await.expect("racer");
                assert_eq!(
                    status, 200,
                    "round {round}: every retry is answered: {body}"
                );
                answered.push(body["refresh_token"].as_str().expect("rt").to_owned());
            }
            assert!(!family_revoked(&app, &family_id).await, "round {round}");
            assert_eq!(
                live_in_family(&app, &family_id).await,
                1,
                "round {round}: exactly one live token"
            );
            let mut live = Vec::new();
            for t in &answered {
                if introspect(&app, &web, t).await["active"] == true {
                    live.push(t.clone());
                }
            }
            assert_eq!(
                live.len(),
                1,
                "round {round}: the last answer is the live one"
            );
            assert_eq!(
                refresh(&app, &web, &live[0]).await.status,
                200,
                "round {round}"
            );
            // A superseded answer presented afterwards is reuse.
            let superseded = answered.iter().find(|t| **t != live[0]).expect("another");
            refresh(&app, &web, superseded).await.assert_error(
                400,
                "invalid_grant",
                "a superseded successor",
            );
            assert!(family_revoked(&app, &family_id).await, "round {round}");
        }
    }
);

backend_test!(
    a_retry_after_the_reuse_grace_is_reuse_and_revokes_the_family,
    |app: TestApp| async move {
        let web = web_client(&app, "read").await;
        let browser = sign_in(&app, "ada@example.com").await;
        let (r0, family_id) = start_family(&app, &web, &browser, "read").await;
        let r1 = refresh(&app, &web, &r0).await.refresh_token();
        app.clock.advance(grace(&app) + 1);
        refresh(&app, &web, &r0).await.assert_error(
            400,
            "invalid_grant",
            "a retry after the grace",
        );
        assert!(family_revoked(&app, &family_id).await);
        assert_eq!(browser.sessions_status(&app).await, 401, "session ended");
        refresh(&app, &web, &r1).await.assert_error(
            400,
            "invalid_grant",
            "the successor after reuse",
        );
        assert!(app
            .audit_kinds()
            .await
            .contains(&"refresh_token_reuse".to_owned()));
    }
);

backend_test!(
    the_spent_token_is_reuse_within_the_grace_once_its_successor_was_used,
    |app: TestApp| async move {
        let web = web_client(&app, "read").await;
        let browser = sign_in(&app, "ada@example.com").await;
        let (r0, family_id) = start_family(&app, &web, &browser, "read").await;
        let r1 = refresh(&app, &web, &r0).await.refresh_token();
        let r2 = refresh(&app, &web, &r1).await.refresh_token();
        // r1 was used: r0 presented again, even at once, is a thief's.
        refresh(&app, &web, &r0)
            .await
            .assert_error(400, "invalid_grant", "r0 after r1 was used");
        assert!(family_revoked(&app, &family_id).await);
        assert_eq!(browser.sessions_status(&app).await, 401);
        refresh(&app, &web, &r2)
            .await
            .assert_error(400, "invalid_grant", "the newest after reuse");
        assert!(!app
            .audit_kinds()
            .await
            .contains(&"refresh_token_retried".to_owned()));
    }
);

backend_test!(
    a_superseded_successor_presented_later_is_reuse,
    |app: TestApp| async move {
        let web = web_client(&app, "read").await;
        let browser = sign_in(&app, "ada@example.com").await;
        let (r0, family_id) = start_family(&app, &web, &browser, "read").await;
        let lost = refresh(&app, &web, &r0).await.refresh_token();
        let r1 = refresh(&app, &web, &r0).await.refresh_token();
        // The lost answer turns up (a stolen copy, a confused client): reuse.
        refresh(&app, &web, &lost).await.assert_error(
            400,
            "invalid_grant",
            "a superseded successor",
        );
        assert!(family_revoked(&app, &family_id).await);
        refresh(&app, &web, &r1).await.assert_error(
            400,
            "invalid_grant",
            "the live successor after reuse",
        );
        // And the spent token, still within its grace, gets nothing either.
        refresh(&app, &web, &r0).await.assert_error(
            400,
            "invalid_grant",
            "r0 after the family was revoked",
        );
    }
);

backend_test!(
    a_reuse_grace_of_zero_keeps_immediate_reuse_detection,
    config = |c: &mut latchkey::config::Config| c.tokens.refresh_token_reuse_grace_secs = 0,
    |app: TestApp| async move {
        let web = web_client(&app, "read").await;
        let browser = sign_in(&app, "ada@example.com").await;
        let (r0, family_id) = start_family(&app, &web, &browser, "read").await;
        let r1 = refresh(&app, &web, &r0).await.refresh_token();
        refresh(&app, &web, &r0).await.assert_error(
            400,
            "invalid_grant",
            "an immediate retry with no grace",
        );
        assert!(family_revoked(&app, &family_id).await);
        assert_eq!(browser.sessions_status(&app).await, 401);
        refresh(&app, &web, &r1)
            .await
            .assert_error(400, "invalid_grant", "the successor");
    }
);

// =========================================================== pruning spent tokens

async fn prune(app: &TestApp) -> u64 {
    latchkey::tokens::refresh::prune_spent(
        &app.state.pool,
        &app.state.config.tokens,
        app.clock.now_secs(),
    )
    .await
    .expect("prune")
}

backend_test!(
    a_pruned_spent_refresh_token_is_still_detected_as_reuse,
    |app: TestApp| async move {
        let web = web_client(&app, "read").await;
        let other = web_client(&app, "read").await;
        let laptop = sign_in(&app, "ada@example.com").await;
        let phone = sign_in(&app, "ada@example.com").await;
        let (r0, family_id) = start_family(&app, &web, &laptop, "read").await;
        let (p0, phone_family) = start_family(&app, &web, &phone, "read").await;
        let r1 = refresh(&app, &web, &r0).await.refresh_token();
        let r2 = refresh(&app, &web, &r1).await.refresh_token();
        let p1 = refresh(&app, &web, &p0).await.refresh_token();
        // Within the grace and its margin nothing is pruned.
        assert_eq!(prune(&app).await, 0);
        app.clock
            .advance(grace(&app) + latchkey::tokens::refresh::PRUNE_MARGIN_SECS + 1);
        assert_eq!(prune(&app).await, 3, "r0, r1 and p0 are pruned");
        assert_eq!(
            count(&app, "SELECT COUNT(*) AS n FROM refresh_tokens").await,
            2,
            "only the live tokens stay whole"
        );
        assert_eq!(
            count(&app, "SELECT COUNT(*) AS n FROM spent_refresh_tokens").await,
            3
        );
        let stored: Vec<String> = sqlx::query("SELECT fingerprint FROM spent_refresh_tokens")
            .fetch_all(&app.state.pool)
            .await
            .expect("rows")
            .iter()
            .map(|r| r.try_get::<String, _>("fingerprint").expect("fingerprint"))
            .collect();
        assert!(stored.iter().all(|f| f.len() == 16), "{stored:?}");
        for secret in [&r0, &r1, &p0] {
            assert!(!stored.iter().any(|f| secret.contains(f.as_str())));
        }
        // The live tokens work; pruning is idempotent.
        assert_eq!(prune(&app).await, 0);
        // Another client presenting the pruned token: refused, nothing revoked.
        refresh(&app, &other, &r0).await.assert_error(
            400,
            "invalid_grant",
            "another client's pruned token",
        );
        assert!(!family_revoked(&app, &family_id).await);
        // The thief's replay of the pruned r0: reuse, detected as before.
        refresh(&app, &web, &r0)
            .await
            .assert_error(400, "invalid_grant", "a pruned spent token");
        assert!(family_revoked(&app, &family_id).await);
        assert_eq!(laptop.sessions_status(&app).await, 401, "session ended");
        refresh(&app, &web, &r2)
            .await
            .assert_error(400, "invalid_grant", "the newest after reuse");
        assert!(app
            .audit_kinds()
            .await
            .contains(&"refresh_token_reuse".to_owned()));
        // The other family is untouched.
        assert!(!family_revoked(&app, &phone_family).await);
        assert_eq!(refresh(&app, &web, &p1).await.status, 200);
        // Fingerprints of families that are gone are dropped by the next pruning.
        latchkey::cascade::delete_user(&app.state.pool, &laptop.user_id, app.clock.now_secs())
            .await
            .expect("delete the user");
        prune(&app).await;
        assert_eq!(
            count(&app, "SELECT COUNT(*) AS n FROM spent_refresh_tokens").await,
            0,
            "ada's families went with her, and their fingerprints with them"
        );
    }
);

// =========================================================== RFC 7009 revocation

backend_test!(
    revoked_refresh_token_is_refused,
    |app: TestApp| async move {
        let web = web_client(&app, "read").await;
        let browser = sign_in(&app, "ada@example.com").await;
        let (token, family_id) = start_family(&app, &web, &browser, "read").await;
        let answer = revoke(&app, &web, &token).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.cache_control(), "no-store");
        assert!(family_revoked(&app, &family_id).await);
        assert_eq!(introspect(&app, &web, &token).await, inactive());
        refresh(&app, &web, &token).await.assert_error(
            400,
            "invalid_grant",
            "revoked refresh token",
        );
        // Revoking a grant is not signing out.
        assert_eq!(browser.sessions_status(&app).await, 200);
    }
);

backend_test!(
    revoked_jwt_access_token_is_denylisted_until_it_expires,
    |app: TestApp| async move {
        let machine = machine_client(&app, "read").await;
        let token = machine_token(&app, &machine).await;
        let claims = verified_claims(&app, &token, &machine.id).await;
        let (jti, exp) = (
            claims["jti"].as_str().expect("jti").to_owned(),
            claims["exp"].as_i64().expect("exp"),
        );
        assert_eq!(introspect(&app, &machine, &token).await["active"], true);

        let answer = revoke(&app, &machine, &token).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(introspect(&app, &machine, &token).await, inactive());
        let until = denylisted_until(&app, &jti)
            .await
            .expect("jti on the denylist");
        assert_eq!(
            until,
            exp + LEEWAY,
            "kept exactly as long as the token could verify"
        );

        // Purged only once the token would be refused anyway.
        latchkey::tokens::purge_expired(&app.state.pool, until - 1)
            .await
            .expect("purge");
        assert_eq!(denylisted_until(&app, &jti).await, Some(until));
        app.clock.set(until);
        latchkey::tokens::purge_expired(&app.state.pool, app.clock.now_secs())
            .await
            .expect("purge");
        assert_eq!(denylisted_until(&app, &jti).await, None, "purged after exp");
        assert_eq!(introspect(&app, &machine, &token).await, inactive());
    }
);

backend_test!(
    revocation_answers_200_for_unknown_and_foreign_tokens_and_changes_nothing,
    |app: TestApp| async move {
        let web = web_client(&app, "read").await;
        let other = web_client(&app, "read").await;
        let browser = sign_in(&app, "ada@example.com").await;
        let (refresh_token, family_id) = start_family(&app, &web, &browser, "read").await;
        let access_token = machine_token(&app, &web).await;
        let before = issued(&app).await;

        let unknown = latchkey::crypto::SecretToken::generate();
        for token in [unknown.expose(), "abc", "a.b.c"] {
            let answer = revoke(&app, &web, token).await;
            assert_eq!(answer.status, 200, "{token}: {answer:?}");
        }
        // Another client's tokens: 200, and they stay valid.
        assert_eq!(revoke(&app, &other, &access_token).await.status, 200);
        assert_eq!(revoke(&app, &other, &refresh_token).await.status, 200);
        assert_eq!(issued(&app).await, before);
        assert_eq!(introspect(&app, &web, &access_token).await["active"], true);
        assert!(!family_revoked(&app, &family_id).await);
        assert_eq!(refresh(&app, &web, &refresh_token).await.status, 200);
    }
);

backend_test!(
    public_client_revokes_its_refresh_token,
    |app: TestApp| async move {
        let spa = register(&app, client_spec("spa", false, &["refresh_token"], "read")).await;
        let browser = sign_in(&app, "ada@example.com").await;
        let (token, family_id) = start_family(&app, &spa, &browser, "read").await;
        let answer = post_as(
            &app,
            "/oauth2/token",
            &spa,
            Auth::Post,
            &[("grant_type", "refresh_token"), ("refresh_token", &token)],
        )
        .await;
        assert_eq!(
            answer.status, 200,
            "a public client refreshes with its id: {answer:?}"
        );
        let token = answer.refresh_token();

        let answer = post_as(
            &app,
            "/oauth2/revoke",
            &spa,
            Auth::Post,
            &[("token", &token)],
        )
        .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(family_revoked(&app, &family_id).await);
        post_as(
            &app,
            "/oauth2/token",
            &spa,
            Auth::Post,
            &[("grant_type", "refresh_token"), ("refresh_token", &token)],
        )
        .await
        .assert_error(400, "invalid_grant", "revoked by the public client");
    }
);

backend_test!(
    revocation_requires_confidential_clients_to_authenticate,
    |app: TestApp| async move {
        let web = web_client(&app, "read").await;
        let browser = sign_in(&app, "ada@example.com").await;
        let (refresh_token, family_id) = start_family(&app, &web, &browser, "read").await;
        let access_token = machine_token(&app, &web).await;
        let before = issued(&app).await;
        let impostor = TestClient {
            id: web.id.clone(),
            secret: Some("not-the-secret".into()),
        };
        for token in [&refresh_token, &access_token] {
            let answer = revoke(&app, &impostor, token).await;
            answer.assert_error(401, "invalid_client", "wrong secret via Basic");
            assert!(answer.headers.contains_key("www-authenticate"));
            post_as(
                &app,
                "/oauth2/revoke",
                &impostor,
                Auth::Post,
                &[("token", token)],
            )
            .await
            .assert_error(401, "invalid_client", "wrong secret via post");
        }
        // A confidential client cannot pass itself off as public either.
        let as_public = TestClient {
            id: web.id.clone(),
            secret: None,
        };
        post_as(
            &app,
            "/oauth2/revoke",
            &as_public,
            Auth::Post,
            &[("token", &refresh_token)],
        )
        .await
        .assert_error(
            401,
            "invalid_client",
            "confidential client without its secret",
        );
        revoke(&app, &web, "")
            .await
            .assert_error(400, "invalid_request", "no token");
        assert_eq!(issued(&app).await, before);
        assert!(!family_revoked(&app, &family_id).await);
        assert_eq!(introspect(&app, &web, &access_token).await["active"], true);
    }
);

// =========================================================== RFC 7662 introspection

backend_test!(
    introspection_describes_an_active_jwt,
    |app: TestApp| async move {
        let machine = machine_client(&app, "read write").await;
        let resource = machine_client(&app, "").await;
        let token = machine_token(&app, &machine).await;
        let claims = verified_claims(&app, &token, &machine.id).await;
        let answer = introspect(&app, &resource, &token).await;
        assert_eq!(answer["active"], true, "{answer}");
        assert_eq!(answer["scope"], "read write");
        assert_eq!(answer["client_id"], machine.id.as_str());
        assert_eq!(answer["sub"], machine.id.as_str());
        assert_eq!(answer["aud"], machine.id.as_str());
        assert_eq!(answer["iss"], app.state.config.issuer.as_str());
        assert_eq!(answer["exp"], claims["exp"]);
        assert_eq!(answer["iat"], claims["iat"]);
        assert_eq!(answer["jti"], claims["jti"]);
        assert_eq!(answer["token_type"], "Bearer");

        // Still active at the last second of the leeway, inactive after.
        let exp = claims["exp"].as_i64().expect("exp");
        app.clock.set(exp + LEEWAY - 1);
        assert_eq!(introspect(&app, &resource, &token).await["active"], true);
        app.clock.set(exp + LEEWAY);
        assert_eq!(introspect(&app, &resource, &token).await, inactive());
    }
);

backend_test!(
    introspection_says_only_active_false_for_expired_revoked_malformed_and_foreign_tokens,
    |app: TestApp| async move {
        let machine = machine_client(&app, "read").await;
        let token = machine_token(&app, &machine).await;
        let (header_b64, rest) = token.split_once('.').expect("jws");
        let (payload_b64, _) = rest.split_once('.').expect("jws");
        let claims = jwt_payload(&token);

        let foreign = foreign_key();
        let foreign_with_own_kid = foreign.sign("at+jwt", &claims).expect("sign");
        // Same header (our kid), same claims, another issuer's signature.
        let foreign_with_our_kid = foreign.sign_raw(header_b64, payload_b64);
        let alg_none = format!(
            "{}.{payload_b64}.",
            jose::b64(
                serde_json::to_string(
                    &json!({"alg": "none", "kid": jwt_header(&token)["kid"], "typ": "at+jwt"})
                )
                .expect("json")
                .as_bytes()
            )
        );
        let hostile = [
            ("malformed", "abc".to_owned()),
            ("three garbage parts", "a.b.c".to_owned()),
            ("flipped signature bit", with_flipped_signature_bit(&token)),
            ("foreign key and kid", foreign_with_own_kid),
            ("foreign key, our kid", foreign_with_our_kid),
            ("alg none", alg_none),
            (
                "unknown opaque token",
                latchkey::crypto::SecretToken::generate()
                    .expose()
                    .to_owned(),
            ),
        ];
        for (what, hostile) in &hostile {
            assert_eq!(
                introspect(&app, &machine, hostile).await,
                inactive(),
                "{what}: nothing but active:false"
            );
        }
        assert_eq!(introspect(&app, &machine, &token).await["active"], true);

        let revoked = machine_token(&app, &machine).await;
        assert_eq!(revoke(&app, &machine, &revoked).await.status, 200);
        assert_eq!(
            introspect(&app, &machine, &revoked).await,
            inactive(),
            "revoked"
        );

        app.clock.advance(DEFAULT_LIFETIME + LEEWAY);
        assert_eq!(
            introspect(&app, &machine, &token).await,
            inactive(),
            "expired"
        );
    }
);

backend_test!(
    opaque_access_tokens_are_validated_by_introspection,
    |app: TestApp| async move {
        let mut spec = client_spec("opaque", true, &["client_credentials"], "read");
        spec.access_token_format = AccessTokenFormat::Opaque;
        let opaque = register(&app, spec).await;
        let now = app.clock.now_secs();
        let token = machine_token(&app, &opaque).await;
        assert_eq!(token.len(), 43, "a 256-bit reference, not a JWT: {token}");
        assert!(!token.contains('.'));
        let stored: String = sqlx::query("SELECT hash FROM opaque_access_tokens")
            .fetch_one(&app.state.pool)
            .await
            .expect("row")
            .try_get("hash")
            .expect("hash");
        assert_ne!(stored, token, "stored only as a hash");

        let answer = introspect(&app, &opaque, &token).await;
        assert_eq!(answer["active"], true, "{answer}");
        assert_eq!(answer["client_id"], opaque.id.as_str());
        assert_eq!(answer["sub"], opaque.id.as_str());
        assert_eq!(answer["scope"], "read");
        assert_eq!(answer["exp"], now + DEFAULT_LIFETIME);
        assert!(answer["jti"].is_string());

        assert_eq!(revoke(&app, &opaque, &token).await.status, 200);
        assert_eq!(
            introspect(&app, &opaque, &token).await,
            inactive(),
            "revoked"
        );

        let token = machine_token(&app, &opaque).await;
        app.clock.advance(DEFAULT_LIFETIME - 1);
        assert_eq!(introspect(&app, &opaque, &token).await["active"], true);
        app.clock.advance(1);
        assert_eq!(
            introspect(&app, &opaque, &token).await,
            inactive(),
            "expired"
        );
    }
);

backend_test!(
    public_client_may_not_introspect,
    |app: TestApp| async move {
        let machine = machine_client(&app, "read").await;
        let token = machine_token(&app, &machine).await;
        let spa = register(&app, client_spec("spa", false, &["refresh_token"], "read")).await;
        post_as(
            &app,
            "/oauth2/introspect",
            &spa,
            Auth::Post,
            &[("token", &token)],
        )
        .await
        .assert_error(401, "invalid_client", "public client introspecting");
        let impostor = TestClient {
            id: machine.id.clone(),
            secret: Some("not-the-secret".into()),
        };
        post_as(
            &app,
            "/oauth2/introspect",
            &impostor,
            Auth::Basic,
            &[("token", &token)],
        )
        .await
        .assert_error(401, "invalid_client", "wrong secret");
    }
);

backend_test!(
    disabled_users_access_tokens_are_inactive,
    |app: TestApp| async move {
        let web = web_client(&app, "read").await;
        let browser = sign_in(&app, "ada@example.com").await;
        let (token, _) = start_family(&app, &web, &browser, "read").await;
        let access_token = refresh(&app, &web, &token).await.access_token();
        let answer = introspect(&app, &web, &access_token).await;
        assert_eq!(answer["active"], true, "{answer}");
        assert_eq!(answer["sub"], browser.user_id.as_str());
        assert_eq!(answer["sid"], browser.session_handle.as_str());
        assert_eq!(answer["roles"], json!(["staff"]));

        latchkey::cascade::set_user_disabled(
            &app.state.pool,
            &browser.user_id,
            true,
            app.clock.now_secs(),
        )
        .await
        .expect("disable");
        assert_eq!(introspect(&app, &web, &access_token).await, inactive());
    }
);
