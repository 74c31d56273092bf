//! Two-step sign-in: TOTP enrollment and verification (replay, window edges,
//! lockout), recovery codes, MFA that cannot be skipped, the admin policy,
//! step-up before sensitive changes.

use latchkey::mfa::totp::Totp;

use crate::backend_test;
use crate::support::app::*;

use crate::support::PASSWORD;

/// Signs `client` in with the password only (no MFA yet) and enrolls TOTP
/// through the real pages; returns the secret and the recovery codes.
async fn enroll(app: &TestApp, client: &reqwest::Client) -> (Vec<u8>, Vec<String>) {
    enroll_at(&app.base, app.clock.now_secs(), client).await
}

/// Password step only: returns the response (303 to /login/mfa when MFA is on).
async fn password_step(app: &TestApp, client: &reqwest::Client, email: &str) -> reqwest::Response {
    app.login_with(client, email, PASSWORD).await
}

async fn second_step(app: &TestApp, client: &reqwest::Client, code: &str) -> reqwest::Response {
    let html = client
        .get(app.url("/login/mfa"))
        .send()
        .await
        .expect("mfa page")
        .text()
        .await
        .expect("html");
    let csrf = extract_input(&html, "csrf_token").unwrap_or_default();
    client
        .post(app.url("/login/mfa"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("code", code),
            ("next", "/account"),
        ])
        .send()
        .await
        .expect("post")
}

async fn account_json(app: &TestApp, client: &reqwest::Client) -> reqwest::Response {
    client
        .get(app.url("/account"))
        .header("accept", "application/json")
        .send()
        .await
        .expect("account")
}

backend_test!(
    totp_second_step_is_required_and_cannot_be_skipped,
    |app: TestApp| async move {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        let setup = new_client();
        assert_eq!(
            password_step(&app, &setup, "ada@example.com")
                .await
                .status(),
            303
        );
        let (secret, _) = enroll(&app, &setup).await;

        let browser = new_client();
        let r = password_step(&app, &browser, "ada@example.com").await;
        assert_eq!(r.status(), 303);
        assert!(r.headers()["location"]
            .to_str()
            .expect("ascii")
            .starts_with("/login/mfa"));
        assert!(
            session_cookie_of(&r).is_none(),
            "the password alone grants no session"
        );
        // Nothing later accepts the half-done sign-in.
        assert_eq!(account_json(&app, &browser).await.status(), 401);
        assert_eq!(
            browser
                .get(app.url("/account/sessions"))
                .send()
                .await
                .expect("get")
                .status(),
            401
        );
        let r = browser
            .get(app.url("/device"))
            .header("accept", "text/html")
            .send()
            .await
            .expect("get");
        assert!(r.headers()["location"]
            .to_str()
            .expect("ascii")
            .starts_with("/login"));

        app.clock.advance(30);
        let code = Totp::new(&secret).code_at(app.clock.now_secs() as u64);
        let r = second_step(&app, &browser, &code).await;
        assert_eq!(r.status(), 303);
        assert!(session_cookie_of(&r).is_some());
        let body: serde_json::Value = account_json(&app, &browser)
            .await
            .json()
            .await
            .expect("json");
        let amr = body["sessions"][0]["amr"].as_array().expect("amr").clone();
        for value in ["pwd", "otp", "mfa"] {
            assert!(amr.contains(&serde_json::json!(value)), "{amr:?}");
        }
    }
);

backend_test!(
    totp_codes_are_single_use_and_the_window_is_one_step,
    |app: TestApp| async move {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        let setup = new_client();
        password_step(&app, &setup, "ada@example.com").await;
        let (secret, _) = enroll(&app, &setup).await;
        let totp = Totp::new(&secret);
        app.clock.advance(90);

        let now = app.clock.now_secs() as u64;
        let previous_step = totp.code_at(now - 30);
        let b = new_client();
        password_step(&app, &b, "ada@example.com").await;
        assert_eq!(
            second_step(&app, &b, &previous_step).await.status(),
            303,
            "one step back is accepted"
        );

        // The same code again (a replay) is refused and audited.
        let c = new_client();
        password_step(&app, &c, "ada@example.com").await;
        assert_eq!(second_step(&app, &c, &previous_step).await.status(), 401);
        assert!(app
            .audit_kinds()
            .await
            .contains(&"totp_replay_refused".to_owned()));
        // Two steps away is outside the window.
        assert_eq!(
            second_step(&app, &c, &totp.code_at(now - 60))
                .await
                .status(),
            401
        );
        assert_eq!(
            second_step(&app, &c, &totp.code_at(now + 60))
                .await
                .status(),
            401
        );
        assert_eq!(
            second_step(&app, &c, &totp.code_at(now + 30))
                .await
                .status(),
            303,
            "one step ahead is accepted"
        );
    }
);

backend_test!(
    wrong_second_factors_lock_the_account,
    |app: TestApp| async move {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        let setup = new_client();
        password_step(&app, &setup, "ada@example.com").await;
        let (secret, _) = enroll(&app, &setup).await;
        let b = new_client();
        password_step(&app, &b, "ada@example.com").await;
        let mut statuses = Vec::new();
        for _ in 0..6 {
            statuses.push(second_step(&app, &b, "000000").await.status().as_u16());
        }
        assert!(statuses.contains(&429), "{statuses:?}");
        let code = Totp::new(&secret).code_at(app.clock.now_secs() as u64 + 30);
        assert_eq!(
            second_step(&app, &b, &code).await.status(),
            429,
            "locked even with a right code"
        );
    }
);

backend_test!(
    recovery_codes_are_single_use_and_regenerating_kills_old_ones,
    |app: TestApp| async move {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        let setup = new_client();
        password_step(&app, &setup, "ada@example.com").await;
        let (_, codes) = enroll(&app, &setup).await;

        let b = new_client();
        password_step(&app, &b, "ada@example.com").await;
        assert_eq!(
            second_step(&app, &b, &codes[0].to_lowercase())
                .await
                .status(),
            303
        );
        assert!(app
            .audit_kinds()
            .await
            .contains(&"recovery_code_used".to_owned()));
        let c = new_client();
        password_step(&app, &c, "ada@example.com").await;
        assert_eq!(
            second_step(&app, &c, &codes[0]).await.status(),
            401,
            "a recovery code works once"
        );

        // Regenerate from the (recent) setup session: old codes die.
        let html = setup
            .get(app.url("/account/mfa"))
            .header("accept", "text/html")
            .send()
            .await
            .expect("page")
            .text()
            .await
            .expect("html");
        let csrf = extract_input(&html, "csrf_token").expect("csrf");
        let r = setup
            .post(app.url("/account/mfa/recovery-codes"))
            .form(&[("csrf_token", csrf.as_str())])
            .send()
            .await
            .expect("regen");
        assert_eq!(r.status(), 200);
        assert_eq!(
            second_step(&app, &c, &codes[1]).await.status(),
            401,
            "old codes no longer work"
        );
        assert!(app
            .audit_kinds()
            .await
            .contains(&"recovery_codes_regenerated".to_owned()));
    }
);

backend_test!(the_half_done_sign_in_expires, |app: TestApp| async move {
    app.create_user("ada@example.com", PASSWORD, &[]).await;
    let setup = new_client();
    password_step(&app, &setup, "ada@example.com").await;
    let (secret, _) = enroll(&app, &setup).await;
    let b = new_client();
    password_step(&app, &b, "ada@example.com").await;
    app.clock.advance(301);
    let code = Totp::new(&secret).code_at(app.clock.now_secs() as u64);
    let r = second_step(&app, &b, &code).await;
    // Refused: the challenge is gone (401), or its page no longer hands out a form (403 CSRF).
    assert!(r.status().is_client_error(), "{}", r.status());
    assert_eq!(account_json(&app, &b).await.status(), 401);
    assert!(session_cookie_of(&r).is_none());
});

backend_test!(
    admins_must_use_a_second_factor_for_admin_routes,
    |app: TestApp| async move {
        app.create_user("boss@example.com", PASSWORD, &["admin"])
            .await;
        let b = new_client();
        assert_eq!(
            password_step(&app, &b, "boss@example.com").await.status(),
            303
        );
        let r = b
            .get(app.url("/admin/api/users"))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 403);
        assert_eq!(
            r.json::<serde_json::Value>().await.expect("json")["error"],
            "mfa_required"
        );
        let (secret, _) = enroll(&app, &b).await;
        let m = new_client();
        password_step(&app, &m, "boss@example.com").await;
        app.clock.advance(30);
        assert_eq!(
            second_step(
                &app,
                &m,
                &Totp::new(&secret).code_at(app.clock.now_secs() as u64)
            )
            .await
            .status(),
            303
        );
        assert_eq!(
            m.get(app.url("/admin/api/users"))
                .send()
                .await
                .expect("get")
                .status(),
            200
        );
    }
);

backend_test!(
    sensitive_changes_need_a_recent_sign_in_and_reset_mfa_works,
    |app: TestApp| async move {
        let user = app.create_user("ada@example.com", PASSWORD, &[]).await;
        let b = new_client();
        password_step(&app, &b, "ada@example.com").await;
        let html = b
            .get(app.url("/account/mfa"))
            .header("accept", "text/html")
            .send()
            .await
            .expect("page")
            .text()
            .await
            .expect("html");
        let csrf = extract_input(&html, "csrf_token").expect("csrf");
        app.clock.advance(16 * 60);
        // Keep the session alive (idle timeout is 30 min) but the sign-in is old now.
        let r = b
            .post(app.url("/account/mfa/totp/start"))
            .form(&[("csrf_token", csrf.as_str())])
            .send()
            .await
            .expect("start");
        assert_eq!(r.status(), 303);
        assert!(r.headers()["location"]
            .to_str()
            .expect("ascii")
            .starts_with("/login?reauth=1"));

        // With an authenticator app on, turning it off and new recovery codes
        // need a recent sign-in too.
        let fresh = new_client();
        password_step(&app, &fresh, "ada@example.com").await;
        enroll(&app, &fresh).await;
        let html = fresh
            .get(app.url("/account/mfa"))
            .header("accept", "text/html")
            .send()
            .await
            .expect("page")
            .text()
            .await
            .expect("html");
        let csrf = extract_input(&html, "csrf_token").expect("csrf");
        app.clock.advance(16 * 60);
        for path in ["/account/mfa/disable", "/account/mfa/recovery-codes"] {
            let r = fresh
                .post(app.url(path))
                .form(&[("csrf_token", csrf.as_str())])
                .send()
                .await
                .expect("post");
            assert_eq!(r.status(), 303, "{path}");
            assert!(
                r.headers()["location"]
                    .to_str()
                    .expect("ascii")
                    .starts_with("/login?reauth=1"),
                "{path}"
            );
        }
        assert!(
            latchkey::mfa::status(&app.state.pool, &user.id)
                .await
                .expect("status")
                .totp,
            "still on"
        );

        // Operator reset (what `latchkey user reset-mfa` calls): password-only sign-in again.
        latchkey::mfa::reset_all(&app.state.pool, &user.id)
            .await
            .expect("reset");
        let after = new_client();
        let r = password_step(&app, &after, "ada@example.com").await;
        assert_eq!(
            r.headers()["location"],
            "/account",
            "no second step after a reset"
        );
    }
);

async fn mfa_client(app: &TestApp) -> String {
    use latchkey::oauth::clients::{self, AccessTokenFormat, ClientUpdate, NewClient};
    let now = app.clock.now_secs();
    let new = NewClient {
        name: "payroll".into(),
        confidential: false,
        redirect_uris: vec!["http://127.0.0.1/cb".into()],
        post_logout_redirect_uris: vec![],
        grant_types: vec!["authorization_code".into()],
        scopes: latchkey::scope::Scope::parse("openid").expect("scope"),
        audience: String::new(),
        access_token_format: AccessTokenFormat::Jwt,
        access_token_lifetime_secs: None,
        signing_algorithm: None,
        id_token_signed_response_alg: None,
        first_party: true,
        backchannel_logout_uri: None,
        jwks: None,
        require_pkce: true,
    };
    let (client, _) = clients::create(&app.state.pool, new, now)
        .await
        .expect("client");
    let update = ClientUpdate {
        require_mfa: Some(true),
        ..ClientUpdate::default()
    };
    clients::update(&app.state.pool, &client.id, update, now)
        .await
        .expect("update")
        .expect("client exists");
    client.id
}

fn authorize_url(app: &TestApp, client_id: &str) -> String {
    app.url(&format!(
        "/oauth2/authorize?response_type=code&client_id={client_id}&redirect_uri=http%3A%2F%2F127.0.0.1%2Fcb&scope=openid&state=s1&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256"
    ))
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

backend_test!(
    a_client_requiring_mfa_refuses_password_only_users_and_accepts_mfa_ones,
    |app: TestApp| async move {
        let client_id = mfa_client(&app).await;
        // A user without a second factor: sent to sign in again, then refused.
        app.create_user("plain@example.com", PASSWORD, &[]).await;
        let b = new_client();
        password_step(&app, &b, "plain@example.com").await;
        app.clock.advance(1);
        let r = b
            .get(authorize_url(&app, &client_id))
            .send()
            .await
            .expect("authorize");
        let to_login = location(&r);
        assert!(to_login.starts_with("/login?next="), "{to_login}");
        let next =
            url::form_urlencoded::parse(to_login.split_once('?').expect("query").1.as_bytes())
                .find(|(k, _)| k == "next")
                .map(|(_, v)| v.into_owned())
                .expect("next");
        let csrf = app.login_csrf(&b).await;
        let r = b
            .post(app.url("/login"))
            .form(&[
                ("email", "plain@example.com"),
                ("password", PASSWORD),
                ("csrf_token", csrf.as_str()),
                ("next", next.as_str()),
            ])
            .send()
            .await
            .expect("login");
        assert_eq!(location(&r), next);
        let r = b.get(app.url(&next)).send().await.expect("resume");
        let back = location(&r);
        assert!(
            back.starts_with("http://127.0.0.1/cb?error=access_denied"),
            "{back}"
        );
        assert!(back.contains("state=s1") && back.contains("iss="), "{back}");

        // A user with a second factor who signed in with it gets a code.
        app.create_user("strong@example.com", PASSWORD, &[]).await;
        let setup = new_client();
        password_step(&app, &setup, "strong@example.com").await;
        let (secret, _) = enroll(&app, &setup).await;
        let m = new_client();
        password_step(&app, &m, "strong@example.com").await;
        app.clock.advance(30);
        assert_eq!(
            second_step(
                &app,
                &m,
                &Totp::new(&secret).code_at(app.clock.now_secs() as u64)
            )
            .await
            .status(),
            303
        );
        let r = m
            .get(authorize_url(&app, &client_id))
            .send()
            .await
            .expect("authorize");
        let back = location(&r);
        assert!(back.starts_with("http://127.0.0.1/cb?code="), "{back}");
    }
);
