//! The device authorization grant (RFC 8628) end to end: a TV/CLI client
//! starts at `/oauth2/device_authorization`, polls the token endpoint, and a
//! browser (cookie jar, real sign-in and device forms) approves or denies at
//! `/device`. Time moves with the manual clock only.

use serde_json::Value;
use sqlx::Row as _;

use crate::backend_test;
use crate::support::app::*;
use crate::support::oauth::{
    assert_frame_ancestors_none, assert_token_error, discovered_issuer, header, input_value,
    issued, signed_in_browser, token, PASSWORD,
};
use crate::support::oauth::{client_spec, post_as, register, Answer, Auth, TestClient};

use crate::support::oauth::DEVICE_GRANT;
const ALPHABET: &str = "BCDFGHJKLMNPQRSTVWXZ";

/// A public device client (a TV app) allowed the device grant and refresh tokens.
async fn tv_app(app: &TestApp, name: &str) -> TestClient {
    register(
        app,
        client_spec(
            name,
            false,
            &[DEVICE_GRANT, "refresh_token"],
            "openid offline_access",
        ),
    )
    .await
}

/// `POST /oauth2/device_authorization` (must be 200): the JSON answer.
async fn start(app: &TestApp, client: &TestClient, scope: &str) -> Value {
    let answer = post_as(
        app,
        "/oauth2/device_authorization",
        client,
        Auth::Post,
        &[("scope", scope)],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        header(&answer.headers, "cache-control"),
        Some("no-store"),
        "{answer:?}"
    );
    answer.body
}

fn field(body: &Value, name: &str) -> String {
    body[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} in {body}"))
        .to_owned()
}

/// One poll of the token endpoint by `client`.
async fn poll(app: &TestApp, client: &TestClient, device_code: &str) -> Answer {
    token(
        app,
        client,
        &[("grant_type", DEVICE_GRANT), ("device_code", device_code)],
    )
    .await
}

async fn interval_in_db(app: &TestApp, user_code: &str) -> i64 {
    sqlx::query("SELECT interval_secs FROM device_authorizations WHERE user_code = $1")
        .bind(user_code.replace('-', ""))
        .fetch_one(&app.state.pool)
        .await
        .expect("device authorization row")
        .try_get("interval_secs")
        .expect("interval_secs")
}

/// GETs `/device` (signed in) and returns the form's CSRF token.
async fn device_csrf(app: &TestApp, browser: &reqwest::Client) -> String {
    let page = browser
        .get(app.url("/device"))
        .header("accept", "text/html")
        .send()
        .await
        .expect("device page");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    extract_input(&html, "csrf_token").expect("csrf_token")
}

/// `POST /device` with a typed code.
async fn enter_code(
    app: &TestApp,
    browser: &reqwest::Client,
    csrf: &str,
    code: &str,
) -> reqwest::Response {
    browser
        .post(app.url("/device"))
        .form(&[("csrf_token", csrf), ("code", code)])
        .send()
        .await
        .expect("POST /device")
}

/// Types `user_code` and answers `decision` (`allow` / `deny`); returns the result page.
async fn decide(
    app: &TestApp,
    browser: &reqwest::Client,
    user_code: &str,
    decision: &str,
) -> String {
    let csrf = device_csrf(app, browser).await;
    let confirm = enter_code(app, browser, &csrf, user_code).await;
    assert_eq!(confirm.status(), 200);
    let html = confirm.text().await.expect("confirm page");
    let response = browser
        .post(app.url("/device/decision"))
        .form(&[
            (
                "csrf_token",
                extract_input(&html, "csrf_token").expect("csrf").as_str(),
            ),
            ("code", extract_input(&html, "code").expect("code").as_str()),
            ("decision", decision),
        ])
        .send()
        .await
        .expect("POST /device/decision");
    assert_eq!(response.status(), 200);
    response.text().await.expect("result page")
}

/// The `n`-th syntactically valid user code that is not `real`.
fn other_user_code(real: &str, n: usize) -> String {
    let letters: Vec<char> = ALPHABET.chars().collect();
    (n..)
        .map(|k| {
            let code: String = (0..8)
                .map(|i| letters[(k * 7 + i * 3 + 1) % letters.len()])
                .collect();
            format!("{}-{}", &code[..4], &code[4..])
        })
        .find(|display| display != real)
        .expect("a different code")
}

#[track_caller]
fn assert_poll_error(answer: &Answer, error: &str, what: &str) {
    assert_token_error(answer, 400, error, what);
    assert!(answer.body.get("id_token").is_none(), "{what}: {answer:?}");
}

// ---------------------------------------------------------------- RFC 8628 §3.2

backend_test!(
    device_authorization_response_rfc8628_3_2,
    |app: TestApp| async move {
        let issuer = discovered_issuer(&app).await;
        let client = tv_app(&app, "Living room TV").await;
        let body = start(&app, &client, "openid offline_access").await;

        let device_code = field(&body, "device_code");
        assert!(
            device_code.len() >= 43,
            "256-bit device code: {device_code}"
        );
        let user_code = field(&body, "user_code");
        assert_eq!(user_code.len(), 9, "{user_code}");
        assert_eq!(&user_code[4..5], "-", "{user_code}");
        assert!(
            user_code
                .chars()
                .filter(|c| *c != '-')
                .all(|c| ALPHABET.contains(c)),
            "{user_code}: only letters without vowels or look-alikes"
        );
        assert_eq!(field(&body, "verification_uri"), format!("{issuer}/device"));
        assert_eq!(
            field(&body, "verification_uri_complete"),
            format!("{issuer}/device?user_code={user_code}")
        );
        assert_eq!(body["expires_in"], 600);
        assert_eq!(body["interval"], 5);

        // The device code is stored hashed only.
        let stored: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM device_authorizations WHERE device_code_hash = $1",
        )
        .bind(&device_code)
        .fetch_one(&app.state.pool)
        .await
        .expect("count")
        .try_get("n")
        .expect("n");
        assert_eq!(stored, 0, "the device code is not stored in clear");

        // Refusals: a scope beyond the client's, a client without the grant, no client.
        let answer = post_as(
            &app,
            "/oauth2/device_authorization",
            &client,
            Auth::Post,
            &[("scope", "openid admin")],
        )
        .await;
        assert_token_error(&answer, 400, "invalid_scope", "scope beyond the client's");
        let web = register(
            &app,
            client_spec("web", false, &["authorization_code"], "openid"),
        )
        .await;
        let answer = post_as(&app, "/oauth2/device_authorization", &web, Auth::Post, &[]).await;
        assert_token_error(&answer, 400, "unauthorized_client", "no device grant");
        let unknown = TestClient {
            id: "lk_unknown".into(),
            secret: None,
        };
        let answer = post_as(
            &app,
            "/oauth2/device_authorization",
            &unknown,
            Auth::Post,
            &[],
        )
        .await;
        assert_token_error(&answer, 401, "invalid_client", "unknown client");
    }
);

// ---------------------------------------------------------------- the whole flow

backend_test!(
    device_flow_end_to_end_with_slow_down_rfc8628,
    |app: TestApp| async move {
        let issuer = discovered_issuer(&app).await;
        let user = app.create_user("ada@example.com", PASSWORD, &[]).await;
        let client = tv_app(&app, "Living room TV").await;
        let body = start(&app, &client, "openid offline_access").await;
        let device_code = field(&body, "device_code");
        let user_code = field(&body, "user_code");

        // §3.5: pending, then slow_down when polled faster than the interval.
        let answer = poll(&app, &client, &device_code).await;
        assert_poll_error(&answer, "authorization_pending", "first poll");
        let answer = poll(&app, &client, &device_code).await;
        assert_poll_error(&answer, "slow_down", "immediate second poll");
        assert_eq!(
            interval_in_db(&app, &user_code).await,
            10,
            "slow_down adds 5 s"
        );
        app.clock.advance(10);
        let answer = poll(&app, &client, &device_code).await;
        assert_poll_error(&answer, "authorization_pending", "after 10 s");
        app.clock.advance(9);
        let answer = poll(&app, &client, &device_code).await;
        assert_poll_error(&answer, "slow_down", "9 s is faster than the 10 s interval");
        assert_eq!(interval_in_db(&app, &user_code).await, 15);
        app.clock.advance(15);
        let answer = poll(&app, &client, &device_code).await;
        assert_poll_error(&answer, "authorization_pending", "after 15 s");

        // The browser opens verification_uri_complete without a session.
        let complete = field(&body, "verification_uri_complete");
        let path = complete.strip_prefix(&issuer).expect("same origin");
        let browser = new_client();
        let response = browser
            .get(app.url(path))
            .header("accept", "text/html")
            .send()
            .await
            .expect("device page");
        assert_eq!(response.status(), 303, "sign in first");
        let login = header(response.headers(), "location")
            .expect("location")
            .to_owned();
        assert!(login.starts_with("/login?next="), "{login}");
        let page = browser.get(app.url(&login)).send().await.expect("login");
        let html = page.text().await.expect("login html");
        let next = input_value(&html, "next").expect("next");
        assert_eq!(next, path, "back to the device page after sign-in");
        let response = browser
            .post(app.url("/login"))
            .form(&[
                ("email", "ada@example.com"),
                ("password", PASSWORD),
                (
                    "csrf_token",
                    extract_input(&html, "csrf_token").expect("csrf").as_str(),
                ),
                ("next", next.as_str()),
            ])
            .send()
            .await
            .expect("sign in");
        assert_eq!(response.status(), 303);
        assert_eq!(header(response.headers(), "location"), Some(path));

        // The form, pre-filled with the code.
        let response = browser
            .get(app.url(path))
            .send()
            .await
            .expect("device page");
        assert_eq!(response.status(), 200);
        assert_frame_ancestors_none(response.headers(), "device page");
        let html = response.text().await.expect("device html");
        assert!(html.contains(&format!("value=\"{user_code}\"")), "{html}");
        let csrf = extract_input(&html, "csrf_token").expect("csrf");

        // Typed in lower case with a space instead of the dash.
        let typed = user_code.to_lowercase().replace('-', " ");
        let response = enter_code(&app, &browser, &csrf, &typed).await;
        assert_eq!(response.status(), 200);
        assert_frame_ancestors_none(response.headers(), "device confirm page");
        let html = response.text().await.expect("confirm html");
        assert!(
            html.contains("Living room TV"),
            "the client is named: {html}"
        );
        assert!(
            html.contains("<code>openid</code>") && html.contains("<code>offline_access</code>"),
            "the scopes are listed: {html}"
        );
        assert!(html.contains(&user_code), "the code to compare: {html}");

        // Not approved yet: still pending.
        app.clock.advance(15);
        let answer = poll(&app, &client, &device_code).await;
        assert_poll_error(&answer, "authorization_pending", "before the decision");

        let response = browser
            .post(app.url("/device/decision"))
            .form(&[
                (
                    "csrf_token",
                    extract_input(&html, "csrf_token").expect("csrf").as_str(),
                ),
                ("code", extract_input(&html, "code").expect("code").as_str()),
                ("decision", "allow"),
            ])
            .send()
            .await
            .expect("allow");
        assert_eq!(response.status(), 200);
        assert!(response
            .text()
            .await
            .expect("done")
            .contains("Device connected"));

        app.clock.advance(15);
        let before = issued(&app).await;
        let answer = poll(&app, &client, &device_code).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.body["token_type"], "Bearer");
        assert_eq!(answer.body["scope"], "offline_access openid");
        let access = field(&answer.body, "access_token");
        let id_token = field(&answer.body, "id_token");
        let refresh = field(&answer.body, "refresh_token");
        assert_eq!(issued(&app).await.refresh_tokens, before.refresh_tokens + 1);

        let (jwks, _) = crate::support::jwt::fetch_jwks(&app).await;
        let claims = crate::support::jwt::verify_independently(
            &access,
            &jwks,
            &issuer,
            &client.id,
            app.clock.now_secs(),
        )
        .expect("a valid access token");
        assert_eq!(claims["sub"], user.id);
        let id = crate::support::jwt::jwt_payload(&id_token);
        assert_eq!(id["iss"], issuer);
        assert_eq!(id["aud"], client.id);
        assert_eq!(id["sub"], user.id);

        // Used once.
        app.clock.advance(15);
        let before = issued(&app).await;
        let answer = poll(&app, &client, &device_code).await;
        assert_poll_error(&answer, "invalid_grant", "second redemption");
        assert_eq!(issued(&app).await, before);

        // The refresh token works (offline_access, refresh_token grant).
        let answer = token(
            &app,
            &client,
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        )
        .await;
        assert_eq!(answer.status, 200, "{answer:?}");

        // The code cannot be approved again.
        let csrf = device_csrf(&app, &browser).await;
        let response = enter_code(&app, &browser, &csrf, &user_code).await;
        assert_eq!(response.status(), 400);
    }
);

backend_test!(
    device_flow_denial_answers_access_denied,
    |app: TestApp| async move {
        let client = tv_app(&app, "Living room TV").await;
        let body = start(&app, &client, "openid offline_access").await;
        let device_code = field(&body, "device_code");
        let browser = signed_in_browser(&app, "ada@example.com").await;

        let html = decide(&app, &browser, &field(&body, "user_code"), "deny").await;
        assert!(html.contains("Request denied"), "{html}");
        let before = issued(&app).await;
        let answer = poll(&app, &client, &device_code).await;
        assert_poll_error(&answer, "access_denied", "after denial");
        app.clock.advance(5);
        let answer = poll(&app, &client, &device_code).await;
        assert_poll_error(&answer, "access_denied", "denial is final");
        assert_eq!(issued(&app).await, before);
        assert!(app
            .audit_kinds()
            .await
            .contains(&"access_denied".to_owned()));
    }
);

backend_test!(
    device_code_expires_after_600_seconds,
    |app: TestApp| async move {
        let client = tv_app(&app, "Living room TV").await;
        let body = start(&app, &client, "openid").await;
        let device_code = field(&body, "device_code");
        let user_code = field(&body, "user_code");
        let browser = signed_in_browser(&app, "ada@example.com").await;

        app.clock.advance(601);
        let answer = poll(&app, &client, &device_code).await;
        assert_poll_error(&answer, "expired_token", "after 601 s");

        // Nor can the user approve it any more.
        let csrf = device_csrf(&app, &browser).await;
        let response = enter_code(&app, &browser, &csrf, &user_code).await;
        assert_eq!(response.status(), 400);
        let response = browser
            .post(app.url("/device/decision"))
            .form(&[
                ("csrf_token", csrf.as_str()),
                ("code", user_code.as_str()),
                ("decision", "allow"),
            ])
            .send()
            .await
            .expect("late allow");
        assert_eq!(response.status(), 400);
        let answer = poll(&app, &client, &device_code).await;
        assert_poll_error(&answer, "expired_token", "still expired");
    }
);

backend_test!(
    device_code_is_bound_to_its_client,
    |app: TestApp| async move {
        let client = tv_app(&app, "Living room TV").await;
        let other = tv_app(&app, "Other TV").await;
        let body = start(&app, &client, "openid").await;
        let device_code = field(&body, "device_code");

        let answer = poll(&app, &other, &device_code).await;
        assert_poll_error(&answer, "invalid_grant", "another client's device code");
        let answer = poll(&app, &client, "not-a-device-code").await;
        assert_poll_error(&answer, "invalid_grant", "malformed device code");
        let unknown = latchkey::crypto::SecretToken::generate();
        let answer = poll(&app, &client, unknown.expose()).await;
        assert_poll_error(&answer, "invalid_grant", "unknown device code");
        let answer = token(&app, &client, &[("grant_type", DEVICE_GRANT)]).await;
        assert_poll_error(&answer, "invalid_request", "device_code missing");

        // Approve it, then let the wrong client try: it still gets nothing,
        // and the right client's approval is not consumed.
        let browser = signed_in_browser(&app, "ada@example.com").await;
        decide(&app, &browser, &field(&body, "user_code"), "allow").await;
        let answer = poll(&app, &other, &device_code).await;
        assert_poll_error(&answer, "invalid_grant", "another client, after approval");
        let answer = poll(&app, &client, &device_code).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
);

// ---------------------------------------------------------------- brute force

/// Wrong codes up to the per-account limit, then 429 with `Retry-After`, even
/// for the right code, until the lock ends.
async fn guessing_is_locked_out(app: TestApp) {
    let limit = app.state.config.login.max_failures_per_account as usize;
    let client = tv_app(&app, "Living room TV").await;
    let body = start(&app, &client, "openid").await;
    let user_code = field(&body, "user_code");
    let browser = signed_in_browser(&app, "ada@example.com").await;
    let csrf = device_csrf(&app, &browser).await;

    for n in 0..limit {
        let guess = other_user_code(&user_code, n);
        let response = enter_code(&app, &browser, &csrf, &guess).await;
        assert_eq!(response.status(), 400, "guess {n}: {guess}");
        let html = response.text().await.expect("page");
        assert!(html.contains("not valid"), "{html}");
    }
    let response = enter_code(&app, &browser, &csrf, &other_user_code(&user_code, 99)).await;
    assert_eq!(response.status(), 429);
    let retry_after: i64 = header(response.headers(), "retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!(retry_after > 0, "{retry_after}");

    let response = enter_code(&app, &browser, &csrf, &user_code).await;
    assert_eq!(
        response.status(),
        429,
        "the right code is refused while locked"
    );
    assert!(header(response.headers(), "retry-after").is_some());
    let html = response.text().await.expect("page");
    assert!(!html.contains("Living room TV"), "nothing revealed: {html}");

    // The lock is per account: another user can still enter the code.
    let bob = signed_in_browser(&app, "bob@example.com").await;
    let bob_csrf = device_csrf(&app, &bob).await;
    let response = enter_code(&app, &bob, &bob_csrf, &user_code).await;
    assert_eq!(response.status(), 200);

    app.clock.advance(retry_after);
    let response = enter_code(&app, &browser, &csrf, &user_code).await;
    assert_eq!(response.status(), 200, "the lock has ended");
    assert!(response
        .text()
        .await
        .expect("page")
        .contains("Living room TV"));
}

backend_test!(
    user_code_guessing_is_rate_limited,
    |app: TestApp| async move {
        assert_eq!(app.state.config.login.max_failures_per_account, 5);
        guessing_is_locked_out(app).await;
    }
);

backend_test!(
    user_code_guessing_limit_follows_the_configuration,
    config = |c: &mut latchkey::Config| c.login.max_failures_per_account = 3,
    |app: TestApp| async move {
        guessing_is_locked_out(app).await;
    }
);

backend_test!(
    device_decision_cannot_bypass_the_user_code_limit,
    |app: TestApp| async move {
        // `/device/decision` takes a code too: guessing there must count
        // against the same limit as `/device`, or the limit is moot.
        let limit = app.state.config.login.max_failures_per_account as usize;
        let client = tv_app(&app, "Living room TV").await;
        let body = start(&app, &client, "openid").await;
        let user_code = field(&body, "user_code");
        let device_code = field(&body, "device_code");
        let browser = signed_in_browser(&app, "mallory@example.com").await;
        let csrf = device_csrf(&app, &browser).await;
        let decide_blind = |code: String| {
            browser
                .post(app.url("/device/decision"))
                .form(&[
                    ("csrf_token", csrf.clone()),
                    ("code", code),
                    ("decision", "allow".to_owned()),
                ])
                .send()
        };

        for n in 0..limit {
            let guess = other_user_code(&user_code, n);
            let response = decide_blind(guess.clone()).await.expect("decision");
            assert_eq!(response.status(), 400, "guess {n}: {guess}");
        }
        let response = decide_blind(other_user_code(&user_code, 99))
            .await
            .expect("decision");
        assert_eq!(response.status(), 429);
        assert!(header(response.headers(), "retry-after").is_some());

        let response = decide_blind(user_code.clone()).await.expect("decision");
        assert_eq!(
            response.status(),
            429,
            "the right code is refused while locked"
        );
        let answer = poll(&app, &client, &device_code).await;
        assert_poll_error(&answer, "authorization_pending", "not approved by a guess");
        // One counter for both doors.
        let response = enter_code(&app, &browser, &csrf, &user_code).await;
        assert_eq!(response.status(), 429);
    }
);
