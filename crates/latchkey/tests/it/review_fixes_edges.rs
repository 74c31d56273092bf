//! Edges an outside review found (issue #12): loopback redirect latitude for
//! native clients only (RFC 8252 §7.3), the device authorization endpoint's
//! rate limits (RFC 8628 §3.1), error shapes of framework rejections, and the
//! case-insensitive `Bearer` scheme (RFC 7235 §2.1).

use latchkey::oauth::clients::NewClient;
use serde_json::Value;
use sqlx::Row as _;

use crate::backend_test;
use crate::support::app::*;
use crate::support::oauth::{client_redirect, issued, signed_in_browser, Pkce};
use crate::support::oauth::{client_spec, machine_client, register, Answer, TestClient};

use crate::support::oauth::DEVICE_GRANT;

/// A first-party client with one registered redirect URI.
async fn client_with_redirect(app: &TestApp, confidential: bool, redirect: &str) -> TestClient {
    register(
        app,
        NewClient {
            redirect_uris: vec![redirect.to_owned()],
            first_party: true,
            ..client_spec(
                "loopback app",
                confidential,
                &["authorization_code"],
                "openid",
            )
        },
    )
    .await
}

/// `GET /oauth2/authorize` for `client` sending `redirect_uri`.
async fn authorize_to(
    app: &TestApp,
    browser: &reqwest::Client,
    client: &TestClient,
    redirect_uri: &str,
    pkce: &Pkce,
) -> reqwest::Response {
    browser
        .get(app.url("/oauth2/authorize"))
        .header("accept", "text/html")
        .query(&[
            ("response_type", "code"),
            ("client_id", client.id.as_str()),
            ("redirect_uri", redirect_uri),
            ("scope", "openid"),
            ("state", "s"),
            ("code_challenge", pkce.challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .expect("GET /oauth2/authorize")
}

// ---------------------------------------------------------------- item 5: loopback latitude

backend_test!(
    confidential_client_loopback_redirect_uri_must_match_exactly_port_included,
    |app: TestApp| async move {
        let browser = signed_in_browser(&app, "ada@example.com").await;
        let pkce = Pkce::random();
        let web = client_with_redirect(&app, true, "http://127.0.0.1/cb").await;
        let web_with_port = client_with_redirect(&app, true, "http://127.0.0.1:8080/cb").await;
        let web_v6 = client_with_redirect(&app, true, "http://[::1]/cb").await;
        for (client, registered, other_port) in [
            (&web, "http://127.0.0.1/cb", "http://127.0.0.1:4444/cb"),
            (
                &web_with_port,
                "http://127.0.0.1:8080/cb",
                "http://127.0.0.1:8081/cb",
            ),
            (
                &web_with_port,
                "http://127.0.0.1:8080/cb",
                "http://127.0.0.1/cb",
            ),
            (&web_v6, "http://[::1]/cb", "http://[::1]:4444/cb"),
        ] {
            let before = issued(&app).await;
            let response = authorize_to(&app, &browser, client, other_port, &pkce).await;
            assert_eq!(
                response.status(),
                400,
                "{other_port} for a confidential client registered with {registered}"
            );
            assert!(
                response.headers().get("location").is_none(),
                "an error page, never a redirect: {other_port}"
            );
            assert_eq!(
                issued(&app).await,
                before,
                "nothing issued for {other_port}"
            );
            // The registered URI itself still works.
            let response = authorize_to(&app, &browser, client, registered, &pkce).await;
            let (target, query) = client_redirect(&response);
            assert_eq!(target, registered);
            assert!(query.contains_key("code"), "{query:?}");
        }
        // A native (public) client keeps RFC 8252 §7.3's latitude.
        let native = client_with_redirect(&app, false, "http://127.0.0.1/cb").await;
        let response =
            authorize_to(&app, &browser, &native, "http://127.0.0.1:4444/cb", &pkce).await;
        let (target, query) = client_redirect(&response);
        assert_eq!(target, "http://127.0.0.1:4444/cb");
        assert!(query.contains_key("code"), "{query:?}");
    }
);

// ---------------------------------------------------------------- item 7: device authorization limits

/// A public device client (a TV app).
async fn tv_app(app: &TestApp, name: &str) -> TestClient {
    register(app, client_spec(name, false, &[DEVICE_GRANT], "openid")).await
}

/// `POST /oauth2/device_authorization` by `client`, from the address `ip`
/// (the proxy's `X-Forwarded-For` line; the server trusts one hop).
async fn start_device_flow(app: &TestApp, client: &TestClient, ip: &str) -> Answer {
    let response = new_client()
        .post(app.url("/oauth2/device_authorization"))
        .header("x-forwarded-for", ip)
        .form(&[("client_id", client.id.as_str()), ("scope", "openid")])
        .send()
        .await
        .expect("device authorization");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body: Value = response.json().await.expect("a JSON body");
    Answer {
        status,
        headers,
        body,
    }
}

async fn device_rows(app: &TestApp) -> i64 {
    sqlx::query("SELECT COUNT(*) AS n FROM device_authorizations")
        .fetch_one(&app.state.pool)
        .await
        .expect("count")
        .try_get("n")
        .expect("n")
}

#[track_caller]
fn assert_rate_limited(answer: &Answer, what: &str) {
    assert_eq!(answer.status, 429, "{what}: {answer:?}");
    assert!(answer.body["error"].is_string(), "{what}: {answer:?}");
    assert!(
        answer.body["error_description"].is_string(),
        "{what}: an RFC 6749 error object: {answer:?}"
    );
    assert!(answer.body.get("device_code").is_none(), "{what}");
    let retry: i64 = answer.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry), "{what}: Retry-After {retry}");
    assert_eq!(answer.headers["cache-control"], "no-store", "{what}");
}

backend_test!(
    device_authorization_is_rate_limited_per_ip_and_per_client_and_a_refusal_writes_nothing,
    config = |c: &mut latchkey::Config| {
        c.http.trust_forwarded_for = true;
        c.tokens.max_device_authorizations_per_ip_per_minute = 3;
        c.tokens.max_device_authorizations_per_client_per_minute = 5;
    },
    |app: TestApp| async move {
        let tv = tv_app(&app, "tv").await;
        let radio = tv_app(&app, "radio").await;
        for i in 0..3 {
            let answer = start_device_flow(&app, &tv, "198.51.100.1").await;
            assert_eq!(answer.status, 200, "request {i}: {answer:?}");
        }
        assert_eq!(device_rows(&app).await, 3);
        // The fourth from the same address, whichever client it names.
        for client in [&tv, &radio] {
            let answer = start_device_flow(&app, client, "198.51.100.1").await;
            assert_rate_limited(&answer, "fourth request from one address");
        }
        assert_eq!(device_rows(&app).await, 3, "a refusal writes nothing");
        // Other addresses go on, until the client's own budget (5) is spent.
        for ip in ["198.51.100.2", "198.51.100.3"] {
            assert_eq!(start_device_flow(&app, &tv, ip).await.status, 200, "{ip}");
        }
        let answer = start_device_flow(&app, &tv, "198.51.100.4").await;
        assert_rate_limited(&answer, "the client's sixth request");
        assert_eq!(device_rows(&app).await, 5, "a refusal writes nothing");
        // Another client from a fresh address is not affected.
        assert_eq!(
            start_device_flow(&app, &radio, "198.51.100.5").await.status,
            200
        );
        // A new window.
        app.clock.advance(60);
        assert_eq!(
            start_device_flow(&app, &tv, "198.51.100.1").await.status,
            200,
            "the limits are per minute"
        );
    }
);

// ---------------------------------------------------------------- item 9: error shapes

/// An answer's body as JSON, with the content type checked.
async fn json_answer(response: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{status}: content-type {content_type:?}, body {text:?}"
    );
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: {e}: {text:?}"));
    (status, headers, body)
}

backend_test!(
    framework_rejections_at_oauth_endpoints_are_rfc6749_error_objects,
    |app: TestApp| async move {
        let machine = machine_client(&app, "read").await;
        let secret = machine.secret.clone().expect("secret");
        let huge = "x".repeat(app.state.config.http.max_body_bytes + 1);
        for path in [
            "/oauth2/token",
            "/oauth2/revoke",
            "/oauth2/introspect",
            "/oauth2/device_authorization",
        ] {
            // 413: a body over http.max_body_bytes.
            let response = new_client()
                .post(app.url(path))
                .basic_auth(&machine.id, Some(&secret))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("token={huge}"))
                .send()
                .await
                .expect("post");
            let (status, headers, body) = json_answer(response).await;
            assert_eq!(status, 413, "{path}: {body}");
            assert_eq!(body["error"], "invalid_request", "{path}: {body}");
            assert!(body["error_description"].is_string(), "{path}: {body}");
            assert!(body.get("message").is_none(), "{path}: {body}");
            assert_eq!(headers["cache-control"], "no-store", "{path}");
            // 405: the wrong method.
            let response = new_client().get(app.url(path)).send().await.expect("get");
            let (status, headers, body) = json_answer(response).await;
            assert_eq!(status, 405, "{path}: {body}");
            assert_eq!(body["error"], "invalid_request", "{path}: {body}");
            assert!(body["error_description"].is_string(), "{path}: {body}");
            assert!(
                headers.contains_key("allow"),
                "{path}: the Allow header stays"
            );
            // 415-like: not a form.
            let response = new_client()
                .post(app.url(path))
                .basic_auth(&machine.id, Some(&secret))
                .json(&serde_json::json!({ "grant_type": "client_credentials" }))
                .send()
                .await
                .expect("post json");
            let (status, _, body) = json_answer(response).await;
            assert_eq!(status, 400, "{path}: {body}");
            assert_eq!(body["error"], "invalid_request", "{path}: {body}");
        }
    }
);

backend_test!(
    framework_rejections_elsewhere_are_error_and_message_json_or_a_page,
    |app: TestApp| async move {
        let browser = signed_in_browser(&app, "ada@example.com").await;
        let csrf = app.account_csrf(&browser).await;
        // 415: the consent form sent as JSON.
        let response = browser
            .post(app.url("/oauth2/authorize/consent"))
            .json(
                &serde_json::json!({ "request_id": "x", "decision": "allow", "csrf_token": csrf }),
            )
            .send()
            .await
            .expect("consent json");
        let (status, _, body) = json_answer(response).await;
        assert_eq!(status, 415, "{body}");
        assert_eq!(body["error"], "unsupported_media_type", "{body}");
        assert!(body["message"].is_string(), "{body}");
        // 422: the consent form without its fields.
        let response = browser
            .post(app.url("/oauth2/authorize/consent"))
            .form(&[("csrf_token", csrf.as_str())])
            .send()
            .await
            .expect("consent form");
        let (status, _, body) = json_answer(response).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"], "invalid_request", "{body}");
        assert!(body["message"].is_string(), "{body}");
        // 400: a query the handler cannot read.
        let response = browser
            .get(app.url("/oauth2/authorize/resume"))
            .send()
            .await
            .expect("resume");
        let (status, _, body) = json_answer(response).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "invalid_request", "{body}");
        assert!(body["message"].is_string(), "{body}");
        // 405 on a JSON endpoint.
        let response = new_client()
            .post(app.url("/healthz"))
            .send()
            .await
            .expect("post healthz");
        let (status, headers, body) = json_answer(response).await;
        assert_eq!(status, 405, "{body}");
        assert_eq!(body["error"], "method_not_allowed", "{body}");
        assert!(body["message"].is_string(), "{body}");
        assert!(headers.contains_key("allow"));
        // A browser gets a page, with the security headers of every page.
        let response = browser
            .post(app.url("/oauth2/authorize/consent"))
            .header("accept", "text/html")
            .form(&[("csrf_token", csrf.as_str())])
            .send()
            .await
            .expect("consent from a browser");
        assert_eq!(response.status(), 422);
        assert!(response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/html"));
        assert!(response.headers().contains_key("content-security-policy"));
        let html = response.text().await.expect("html");
        assert!(html.contains("<html"), "{html}");
    }
);

// ---------------------------------------------------------------- item 9: Bearer is case-insensitive

backend_test!(
    bearer_scheme_is_case_insensitive_at_userinfo_the_feed_and_in_latchkey_verify,
    |app: TestApp| async move {
        use crate::support::api::{sign_in, verifier_for, web_client, TestApi};
        let web = web_client(&app).await;
        let ada = sign_in(&app, &web, "ada@example.com", &[]).await;
        let verifier = verifier_for(&app.base, &app)
            .build()
            .await
            .expect("verifier");
        let api = TestApi::start(verifier).await;
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let header = format!("{scheme} {}", ada.access_token);
            let response = new_client()
                .get(app.url("/oauth2/userinfo"))
                .header("authorization", &header)
                .send()
                .await
                .expect("userinfo");
            assert_eq!(response.status(), 200, "userinfo with {scheme}");
            let claims: Value = response.json().await.expect("claims");
            assert_eq!(claims["sub"], ada.user_id.as_str(), "{scheme}");
            let response = reqwest::Client::new()
                .get(api.url("/me"))
                .header("authorization", &header)
                .send()
                .await
                .expect("api");
            assert_eq!(response.status(), 200, "latchkey-verify with {scheme}");
        }
        // The scheme is not a prefix match: no token, no user.
        let response = new_client()
            .get(app.url("/oauth2/userinfo"))
            .header("authorization", format!("Bearerx {}", ada.access_token))
            .send()
            .await
            .expect("userinfo");
        assert_eq!(response.status(), 401);
    }
);
