//! Issue #12, item 1: a client's `require_mfa` holds on every path to a
//! code or token — the authorization endpoint, the consent form (also after
//! the endpoint refused), the device approval and the `device_code` and
//! `authorization_code` grants — through one policy function
//! (`policy::judge`); a failed or finished pending request is deleted.
//!
//! Also the helpers the other `review_fixes_*` modules share: a browser
//! that signs in through the real forms (with a second factor when the
//! user has one), a client registered with or without `require_mfa`, and
//! the authorization request as a browser sends it.

use crate::backend_test;
use crate::support::app::*;
use crate::support::jwt::*;
use crate::support::oauth::*;
use crate::support::oauth::{client_spec, post_as, register, Answer, Auth, TestClient};
use crate::support::oauth::{input_value, Pkce, PASSWORD};

// ---------------------------------------------------------------- helpers

// ---------------------------------------------------------------- authorization endpoint and consent

backend_test!(
    consent_after_access_denied_issues_no_code_and_the_request_is_gone,
    |app: TestApp| async move {
        // A third-party client (consent needed) that requires MFA, and a
        // user without a second factor.
        let client = rp_client(&app, "openid profile", false).await;
        set_require_mfa(&app, &client, true).await;
        app.create_user("plain@example.com", PASSWORD, &[]).await;
        let browser = Browser::new();
        let pkce = Pkce::random();
        let (pending, back) = browser
            .sign_in_for_request(&app, &client, &pkce, "plain@example.com")
            .await;
        let refused = location(&browser.get(&app, &back).await);
        assert!(
            refused.starts_with(&format!("{CALLBACK}?error=access_denied")),
            "{refused}"
        );
        assert_eq!(
            rows(&app, "authorization_requests").await,
            0,
            "a failed request is deleted"
        );

        // The attack: the pending id was in the sign-in URL; answer its
        // consent form with "allow".
        let answer = browser.consent(&app, &pending, "allow").await;
        assert_eq!(answer.status(), 400, "an expired request, not a code");
        assert!(location(&answer).is_empty(), "no redirect at all");
        assert_eq!(rows(&app, "authorization_codes").await, 0);
        assert_eq!(rows(&app, "consents").await, 0, "no consent recorded");
    }
);

backend_test!(
    consent_form_of_a_live_request_runs_the_client_policy_again,
    |app: TestApp| async move {
        // The consent page is shown; then the client starts requiring MFA
        // before the user answers: the answer is the policy's, not a code.
        let client = rp_client(&app, "openid profile", false).await;
        app.create_user("plain@example.com", PASSWORD, &[]).await;
        let browser = Browser::new();
        let pkce = Pkce::random();
        let (pending, back) = browser
            .sign_in_for_request(&app, &client, &pkce, "plain@example.com")
            .await;
        let consent_page = browser.get(&app, &back).await;
        assert_eq!(consent_page.status(), 200, "the consent page");
        set_require_mfa(&app, &client, true).await;

        let answer = location(&browser.consent(&app, &pending, "allow").await);
        assert!(
            answer.starts_with(&format!("{CALLBACK}?error=access_denied")),
            "{answer}"
        );
        assert_eq!(rows(&app, "authorization_codes").await, 0);
        assert_eq!(rows(&app, "authorization_requests").await, 0);
        // Allowing again finds nothing to allow.
        let again = browser.consent(&app, &pending, "allow").await;
        assert_eq!(again.status(), 400);
        assert_eq!(rows(&app, "authorization_codes").await, 0);
    }
);

backend_test!(
    authorization_code_grant_applies_the_client_policy_again,
    |app: TestApp| async move {
        // A code issued to a password-only sign-in; the client requires MFA
        // from then on: the code buys nothing.
        let client = rp_client(&app, "openid offline_access", true).await;
        app.create_user("plain@example.com", PASSWORD, &[]).await;
        let browser = Browser::signed_in(&app, "plain@example.com").await;
        let pkce = Pkce::random();
        let code = code_of(&location(
            &browser
                .authorize(&app, &client, "openid offline_access", &pkce, &[])
                .await,
        ));
        set_require_mfa(&app, &client, true).await;
        let answer = exchange(&app, &client, &code, &pkce).await;
        assert_eq!(answer.status, 400, "{answer:?}");
        assert_eq!(answer.body["error"], "invalid_grant");
        assert!(answer.body.get("access_token").is_none());
        assert_eq!(rows(&app, "refresh_tokens").await, 0);
    }
);

// ---------------------------------------------------------------- device flow

/// A public TV client of the device grant.
async fn tv_app(app: &TestApp) -> TestClient {
    register(
        app,
        client_spec("tv", false, &[DEVICE_GRANT, "refresh_token"], "openid"),
    )
    .await
}

/// Starts a device authorization: (device_code, user_code).
async fn start_device(app: &TestApp, client: &TestClient) -> (String, String) {
    let answer = post_as(
        app,
        "/oauth2/device_authorization",
        client,
        Auth::Post,
        &[("scope", "openid")],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let field = |name: &str| answer.body[name].as_str().expect(name).to_owned();
    (field("device_code"), field("user_code"))
}

/// Types `user_code` at `/device` and approves it: the response of
/// `POST /device/decision`.
async fn approve_device(app: &TestApp, browser: &Browser, user_code: &str) -> reqwest::Response {
    let html = browser
        .get(app, "/device")
        .await
        .text()
        .await
        .expect("device page");
    let csrf = extract_input(&html, "csrf_token").expect("csrf");
    let confirm = browser
        .http
        .post(app.url("/device"))
        .form(&[("csrf_token", csrf.as_str()), ("code", user_code)])
        .send()
        .await
        .expect("POST /device");
    assert_eq!(confirm.status(), 200);
    let html = confirm.text().await.expect("confirm page");
    browser
        .http
        .post(app.url("/device/decision"))
        .form(&[
            (
                "csrf_token",
                input_value(&html, "csrf_token").expect("csrf").as_str(),
            ),
            ("code", input_value(&html, "code").expect("code").as_str()),
            ("decision", "allow"),
        ])
        .send()
        .await
        .expect("POST /device/decision")
}

async fn poll(app: &TestApp, client: &TestClient, device_code: &str) -> Answer {
    post_as(
        app,
        "/oauth2/token",
        client,
        Auth::Post,
        &[("grant_type", DEVICE_GRANT), ("device_code", device_code)],
    )
    .await
}

backend_test!(
    device_approval_without_a_second_factor_is_refused_for_a_require_mfa_client,
    |app: TestApp| async move {
        let tv = tv_app(&app).await;
        set_require_mfa(&app, &tv, true).await;
        app.create_user("plain@example.com", PASSWORD, &[]).await;
        let (device_code, user_code) = start_device(&app, &tv).await;
        let browser = Browser::signed_in(&app, "plain@example.com").await;

        let answer = approve_device(&app, &browser, &user_code).await;
        assert_eq!(answer.status(), 403, "refused by the client's policy");
        let html = answer.text().await.expect("html");
        assert!(
            html.contains("requires a two-step sign-in") && html.contains("account&#x2f;mfa"),
            "says how to fix it: {html}"
        );
        let polled = poll(&app, &tv, &device_code).await;
        assert_eq!(polled.status, 400, "{polled:?}");
        assert_eq!(
            polled.body["error"], "access_denied",
            "the device learns it at once"
        );
        assert!(polled.body.get("access_token").is_none());
        assert!(app
            .audit_kinds()
            .await
            .contains(&"access_denied".to_owned()));
    }
);

backend_test!(
    device_approval_by_an_older_sign_in_without_mfa_asks_to_sign_in_again_then_succeeds,
    |app: TestApp| async move {
        let tv = tv_app(&app).await;
        set_require_mfa(&app, &tv, true).await;
        let user = app.create_user("ada@example.com", PASSWORD, &[]).await;
        let browser = Browser::signed_in(&app, "ada@example.com").await;
        // A second factor set up after that password-only sign-in.
        let secret = enroll_totp(&app, &user.id).await;
        let (device_code, user_code) = start_device(&app, &tv).await;

        let answer = approve_device(&app, &browser, &user_code).await;
        assert_eq!(answer.status(), 303);
        let to_login = location(&answer);
        assert!(to_login.starts_with("/login?reauth=1&next="), "{to_login}");
        assert_eq!(
            poll(&app, &tv, &device_code).await.body["error"],
            "authorization_pending"
        );

        let next = query_param(&to_login, "next").expect("next");
        app.clock.advance(5);
        let back = browser
            .sign_in(&app, "ada@example.com", Some(&secret), &next)
            .await;
        assert_eq!(back, next, "back to the device page with the code");
        let answer = approve_device(&app, &browser, &user_code).await;
        assert_eq!(answer.status(), 200);
        app.clock.advance(10);
        let polled = poll(&app, &tv, &device_code).await;
        assert_eq!(polled.status, 200, "{polled:?}");
        let amr = jwt_payload(polled.body["id_token"].as_str().expect("id_token"))["amr"].clone();
        assert!(
            amr.as_array().expect("amr").iter().any(|m| m == "mfa"),
            "{amr}"
        );
    }
);

backend_test!(
    device_code_grant_refuses_an_approval_the_client_policy_no_longer_admits,
    |app: TestApp| async move {
        let tv = tv_app(&app).await;
        app.create_user("plain@example.com", PASSWORD, &[]).await;
        let (device_code, user_code) = start_device(&app, &tv).await;
        let browser = Browser::signed_in(&app, "plain@example.com").await;
        assert_eq!(
            approve_device(&app, &browser, &user_code).await.status(),
            200
        );
        // The operator turns require_mfa on before the device polls.
        set_require_mfa(&app, &tv, true).await;
        app.clock.advance(10);
        let polled = poll(&app, &tv, &device_code).await;
        assert_eq!(polled.status, 400, "{polled:?}");
        assert_eq!(polled.body["error"], "access_denied");
        assert!(polled.body.get("access_token").is_none());
        assert_eq!(rows(&app, "refresh_tokens").await, 0);
    }
);
