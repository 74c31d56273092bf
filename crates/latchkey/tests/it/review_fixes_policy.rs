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

use latchkey::mfa::totp::Totp;
use latchkey::oauth::clients::{self, ClientUpdate, NewClient};
use serde_json::Value;
use sqlx::Row as _;

use crate::authorize::{input_value, Pkce, PASSWORD};
use crate::backend_test;
use crate::helpers::*;
use crate::tokens::{client_spec, post_as, register, Answer, Auth, TestClient};

/// The redirect URI of the clients here.
pub(crate) const CALLBACK: &str = "https://rp.example.com/cb";
pub(crate) const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

// ---------------------------------------------------------------- helpers

/// A web client of `rp.example.com` (confidential, refresh tokens).
/// `first_party` skips consent.
pub(crate) async fn rp_client(app: &TestApp, scopes: &str, first_party: bool) -> TestClient {
    register(
        app,
        NewClient {
            redirect_uris: vec![CALLBACK.into()],
            first_party,
            ..client_spec(
                "relying party",
                true,
                &["authorization_code", "refresh_token"],
                scopes,
            )
        },
    )
    .await
}

/// Turns a client's `require_mfa` on or off (what `latchkey client update
/// --require-mfa` does).
pub(crate) async fn set_require_mfa(app: &TestApp, client: &TestClient, on: bool) {
    let update = ClientUpdate {
        require_mfa: Some(on),
        ..ClientUpdate::default()
    };
    clients::update(&app.state.pool, &client.id, update, app.clock.now_secs())
        .await
        .expect("update")
        .expect("client exists");
}

/// Enrolls an authenticator app for `user_id` (as the account page does)
/// and returns its secret. The clock moves past the enrollment's step, so
/// the next code is not a replay.
pub(crate) async fn enroll_totp(app: &TestApp, user_id: &str) -> Vec<u8> {
    let now = app.clock.now_secs();
    let secret = latchkey::mfa::begin_totp(&app.state.pool, &app.state.mfa_seal_key, user_id, now)
        .await
        .expect("begin");
    let code = Totp::new(&secret).code_at(now as u64);
    latchkey::mfa::confirm_totp(
        &app.state.pool,
        &app.state.mfa_seal_key,
        user_id,
        &code,
        now,
    )
    .await
    .expect("confirm");
    app.clock.advance(30);
    secret
}

/// The `Location` of a redirect.
pub(crate) fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A query parameter of a URL or path.
pub(crate) fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A browser: its own cookie jar, redirects not followed.
pub(crate) struct Browser {
    pub http: reqwest::Client,
}

impl Browser {
    pub fn new() -> Browser {
        Browser { http: new_client() }
    }

    /// A new browser in which `email` signed in with the password alone.
    pub async fn signed_in(app: &TestApp, email: &str) -> Browser {
        let browser = Browser::new();
        browser.sign_in(app, email, None, "/account").await;
        browser
    }

    /// `GET path` asking for JSON (an API call with the session cookie).
    pub async fn get_json(&self, app: &TestApp, path: &str) -> reqwest::Response {
        self.http
            .get(app.url(path))
            .header("accept", "application/json")
            .send()
            .await
            .expect("GET")
    }

    /// Sends the authorization request with nobody signed in, signs `email`
    /// in on the page it leads to, and returns the pending request's id and
    /// where the sign-in sends the browser back (the request's resumption).
    pub async fn sign_in_for_request(
        &self,
        app: &TestApp,
        client: &TestClient,
        pkce: &Pkce,
        email: &str,
    ) -> (String, String) {
        let to_login = location(&self.authorize(app, client, "openid", pkce, &[]).await);
        let pending = pending_id_of(&to_login);
        let next = query_param(&to_login, "next").expect("next");
        let back = self.sign_in(app, email, None, &next).await;
        assert_eq!(back, next, "back to the request");
        (pending, back)
    }

    /// Signs `email` in through `/login` (and `/login/mfa` with `totp` when
    /// the user has a second factor), coming back to `next`. Returns where
    /// the browser is sent at the end.
    pub async fn sign_in(
        &self,
        app: &TestApp,
        email: &str,
        totp: Option<&[u8]>,
        next: &str,
    ) -> String {
        let csrf = app.login_csrf(&self.http).await;
        let response = self
            .http
            .post(app.url("/login"))
            .form(&[
                ("email", email),
                ("password", PASSWORD),
                ("csrf_token", csrf.as_str()),
                ("next", next),
            ])
            .send()
            .await
            .expect("POST /login");
        assert_eq!(response.status(), 303, "sign-in of {email}");
        let target = location(&response);
        let Some(secret) = totp else {
            return target;
        };
        assert!(target.starts_with("/login/mfa"), "{target}");
        let html = self
            .http
            .get(app.url(&target))
            .send()
            .await
            .expect("mfa page")
            .text()
            .await
            .expect("html");
        let csrf = extract_input(&html, "csrf_token").expect("csrf_token");
        let code = Totp::new(secret).code_at(app.clock.now_secs() as u64);
        let response = self
            .http
            .post(app.url("/login/mfa"))
            .form(&[
                ("csrf_token", csrf.as_str()),
                ("code", code.as_str()),
                ("next", next),
            ])
            .send()
            .await
            .expect("POST /login/mfa");
        assert_eq!(response.status(), 303, "second step of {email}");
        location(&response)
    }

    pub async fn get(&self, app: &TestApp, path_or_url: &str) -> reqwest::Response {
        let url = if path_or_url.starts_with('/') {
            app.url(path_or_url)
        } else {
            path_or_url.to_owned()
        };
        self.http
            .get(url)
            .header("accept", "text/html")
            .send()
            .await
            .expect("GET")
    }

    /// `GET /oauth2/authorize` with `client`, `scope` and `extra` parameters.
    pub async fn authorize(
        &self,
        app: &TestApp,
        client: &TestClient,
        scope: &str,
        pkce: &Pkce,
        extra: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut params = vec![
            ("response_type", "code"),
            ("client_id", client.id.as_str()),
            ("redirect_uri", CALLBACK),
            ("scope", scope),
            ("state", "st"),
            ("code_challenge", pkce.challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        params.extend_from_slice(extra);
        self.http
            .get(app.url("/oauth2/authorize"))
            .header("accept", "text/html")
            .query(&params)
            .send()
            .await
            .expect("GET /oauth2/authorize")
    }

    /// Answers the consent form of `pending_id` with `decision`.
    pub async fn consent(
        &self,
        app: &TestApp,
        pending_id: &str,
        decision: &str,
    ) -> reqwest::Response {
        let csrf = app.account_csrf(&self.http).await;
        self.http
            .post(app.url("/oauth2/authorize/consent"))
            .form(&[
                ("request_id", pending_id),
                ("csrf_token", csrf.as_str()),
                ("decision", decision),
            ])
            .send()
            .await
            .expect("POST consent")
    }
}

/// The pending request's id in a redirect to the sign-in page.
#[track_caller]
pub(crate) fn pending_id_of(login_redirect: &str) -> String {
    let next = query_param(login_redirect, "next")
        .unwrap_or_else(|| panic!("a sign-in redirect: {login_redirect}"));
    query_param(&next, "id").unwrap_or_else(|| panic!("a pending id in {next}"))
}

/// The `code` of a redirect to the client (panics on anything else).
#[track_caller]
pub(crate) fn code_of(redirect: &str) -> String {
    assert!(redirect.starts_with(CALLBACK), "to the client: {redirect}");
    query_param(redirect, "code").unwrap_or_else(|| panic!("a code in {redirect}"))
}

/// Redeems a code (the raw answer).
pub(crate) async fn exchange(
    app: &TestApp,
    client: &TestClient,
    code: &str,
    pkce: &Pkce,
) -> Answer {
    post_as(
        app,
        "/oauth2/token",
        client,
        Auth::Basic,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", CALLBACK),
            ("code_verifier", pkce.verifier.as_str()),
        ],
    )
    .await
}

pub(crate) async fn rows(app: &TestApp, table: &str) -> i64 {
    sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
        .fetch_one(&app.state.pool)
        .await
        .expect("count")
        .try_get::<i64, _>("n")
        .expect("n")
}

/// The payload of a JWT (unverified: the server's own tests read what it wrote).
pub(crate) fn payload(token: &str) -> Value {
    latchkey_verify::jose::decode_unverified(token)
        .expect("a JWT")
        .1
}

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
        let amr = payload(polled.body["id_token"].as_str().expect("id_token"))["amr"].clone();
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
