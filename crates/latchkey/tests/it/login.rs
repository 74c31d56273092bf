//! Password sign-in, the account page and sign-out, through the real forms.

use crate::backend_test;
use crate::support::app::*;

backend_test!(
    login_account_logout_then_old_cookie_is_dead,
    |app: TestApp| async move {
        app.create_user("ada@example.com", "correct horse battery", &[])
            .await;

        let response = app.login("Ada@Example.com", "correct horse battery").await;
        assert_eq!(
            response.status(),
            303,
            "a credential POST redirects with 303"
        );
        assert_eq!(response.headers()["location"], "/account");
        let cookie = session_cookie_of(&response).expect("session cookie set");
        let set_cookie = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap_or_default().to_owned())
            .find(|c| c.starts_with("latchkey_session="))
            .expect("cookie");
        assert!(
            set_cookie.contains("HttpOnly")
                && set_cookie.contains("SameSite=Lax")
                && set_cookie.contains("Path=/"),
            "{set_cookie}"
        );

        let page = app
            .client
            .get(app.url("/account"))
            .header("accept", "text/html")
            .send()
            .await
            .expect("account");
        assert_eq!(page.status(), 200);
        let html = page.text().await.expect("html");
        assert!(html.contains("ada@example.com"), "account shows the user");
        assert!(
            html.contains("this session"),
            "account lists the current session"
        );

        let csrf = app.account_csrf(&app.client).await;
        let out = app
            .client
            .post(app.url("/logout"))
            .form(&[("csrf_token", csrf.as_str())])
            .send()
            .await
            .expect("logout");
        assert_eq!(out.status(), 303);

        // Replay the old cookie from a fresh client: the server-side session is gone.
        let replay = new_client()
            .get(app.url("/account"))
            .header("cookie", format!("latchkey_session={cookie}"))
            .header("accept", "application/json")
            .send()
            .await
            .expect("replay");
        assert_eq!(replay.status(), 401);
        assert!(replay.headers().contains_key("www-authenticate"));
        let kinds = app.audit_kinds().await;
        assert!(
            kinds.contains(&"login_succeeded".to_owned()) && kinds.contains(&"logout".to_owned()),
            "{kinds:?}"
        );
    }
);

backend_test!(
    unknown_user_wrong_password_and_disabled_are_indistinguishable,
    |app: TestApp| async move {
        app.create_user("real@example.com", "the real password", &[])
            .await;
        let disabled = app
            .create_user("gone@example.com", "the real password", &[])
            .await;
        latchkey::cascade::set_user_disabled(&app.state.pool, &disabled.id, true, 0)
            .await
            .expect("disable");

        let mut answers = Vec::new();
        for (email, password) in [
            ("nobody@example.com", "whatever pass"),
            ("real@example.com", "wrong password!"),
            ("gone@example.com", "the real password"),
        ] {
            let client = new_client();
            let r = app.login_with(&client, email, password).await;
            let status = r.status();
            let body = r.text().await.expect("body");
            assert!(
                body.contains("Invalid email or password"),
                "{email}: {body}"
            );
            // Same page apart from the echoed email and the per-visitor CSRF token.
            let token = extract_input(&body, "csrf_token").unwrap_or_default();
            let normalized = body.replace(email, "EMAIL").replace(&token, "CSRF");
            let normalized = normalized
                .split("name=\"csrf_token\" value=\"")
                .map(|p| p.split_once('"').map(|(_, rest)| rest).unwrap_or(p))
                .collect::<Vec<_>>()
                .join("");
            answers.push((status, normalized));
        }
        assert_eq!(answers[0].0, 401);
        assert!(answers.iter().all(|a| a == &answers[0]), "responses differ");

        // The JSON form too.
        for (email, password) in [
            ("nobody@example.com", "whatever pass"),
            ("real@example.com", "wrong password!"),
            ("gone@example.com", "the real password"),
        ] {
            let r = new_client()
                .post(app.url("/login"))
                .json(&serde_json::json!({"email": email, "password": password}))
                .send()
                .await
                .expect("json login");
            assert_eq!(r.status(), 401);
            let body: serde_json::Value = r.json().await.expect("json");
            assert_eq!(
                body,
                serde_json::json!({"error": "invalid_credentials", "message": "Invalid email or password"})
            );
        }
    }
);

backend_test!(
    lockout_after_repeated_failures_with_retry_after,
    |app: TestApp| async move {
        app.create_user("target@example.com", "the real password", &[])
            .await;
        let client = new_client();
        for _ in 0..5 {
            assert_eq!(
                app.login_with(&client, "target@example.com", "nope nope nope")
                    .await
                    .status(),
                401
            );
        }
        let locked = app
            .login_with(&client, "target@example.com", "the real password")
            .await;
        assert_eq!(
            locked.status(),
            429,
            "even the right password is refused while locked"
        );
        let retry: i64 = locked.headers()["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("seconds");
        assert!(retry > 0 && retry <= 30, "{retry}");
        assert!(app
            .audit_kinds()
            .await
            .contains(&"login_locked_out".to_owned()));

        // After the lockout, the right password works and resets the counter.
        app.clock.advance(retry);
        assert_eq!(
            app.login_with(&client, "target@example.com", "the real password")
                .await
                .status(),
            303
        );
    }
);

backend_test!(
    parallel_guesses_cannot_bypass_the_lockout,
    |app: TestApp| async move {
        app.create_user("race@example.com", "the real password", &[])
            .await;
        let client = new_client();
        let csrf = app.login_csrf(&client).await;
        let mut tasks = Vec::new();
        for i in 0..40 {
            let client = client.clone();
            let url = app.url("/login");
            let csrf = csrf.clone();
            tasks.push(tokio::spawn(async move {
                let password = format!("wrong guess {i}");
                client
                    .post(url)
                    .form(&[
                        ("email", "race@example.com"),
                        ("password", password.as_str()),
                        ("csrf_token", csrf.as_str()),
                    ])
                    .send()
                    .await
                    .expect("post")
                    .status()
                    .as_u16()
            }));
        }
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await.expect("join"));
        }
        let checked = statuses.iter().filter(|s| **s == 401).count();
        assert_eq!(
            checked, 5,
            "exactly the limit of passwords were checked: {statuses:?}"
        );
        assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 35);
    }
);

/// Sends `sign_ins` (email, password) all at once — each from its own
/// browser with its own CSRF token, released together by a barrier — and
/// returns the statuses in order.
async fn sign_in_together(app: &TestApp, sign_ins: &[(String, &'static str)]) -> Vec<u16> {
    let mut ready = Vec::new();
    for (email, password) in sign_ins {
        let client = new_client();
        let csrf = app.login_csrf(&client).await;
        ready.push((client, csrf, email.clone(), *password));
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(ready.len()));
    let tasks: Vec<_> = ready
        .into_iter()
        .map(|(client, csrf, email, password)| {
            let (barrier, url) = (barrier.clone(), app.url("/login"));
            tokio::spawn(async move {
                barrier.wait().await;
                client
                    .post(url)
                    .form(&[
                        ("email", email.as_str()),
                        ("password", password),
                        ("csrf_token", csrf.as_str()),
                    ])
                    .send()
                    .await
                    .expect("post")
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("join"));
    }
    statuses
}

// One hash at a time: every sign-in of a burst holds its throttle slot while
// it queues for the hasher, so the burst overlaps for real.
backend_test!(
    parallel_correct_sign_ins_to_one_account_all_succeed,
    config = |c: &mut latchkey::config::Config| c.password.max_concurrent_hashes = 1,
    |app: TestApp| async move {
        app.create_user("busy@example.com", "the real password", &[])
            .await;
        for round in 0..5 {
            let burst: Vec<(String, &str)> = (0..8)
                .map(|_| ("busy@example.com".to_owned(), "the real password"))
                .collect();
            let statuses = sign_in_together(&app, &burst).await;
            assert!(
                statuses.iter().all(|s| *s == 303),
                "round {round}: every correct sign-in gets in: {statuses:?}"
            );
        }
        assert!(
            !app.audit_kinds()
                .await
                .contains(&"login_locked_out".to_owned()),
            "nothing was locked"
        );
        // The account's counter is clean: the full allowance of failures remains.
        for _ in 0..4 {
            let wrong = app.login("busy@example.com", "a wrong guess").await;
            assert_eq!(wrong.status(), 401);
        }
        assert_eq!(
            app.login("busy@example.com", "the real password")
                .await
                .status(),
            303
        );
    }
);

backend_test!(
    parallel_correct_sign_ins_to_64_accounts_from_one_ip_are_never_refused,
    config = |c: &mut latchkey::config::Config| c.password.max_concurrent_hashes = 1,
    |app: TestApp| async move {
        let max_per_ip = app.state.config.login.max_failures_per_ip as usize;
        assert!(64 > max_per_ip, "the burst is larger than the IP's limit");
        for i in 0..64 {
            app.create_user(&format!("office{i}@example.com"), "the real password", &[])
                .await;
        }
        for round in 0..3 {
            let burst: Vec<(String, &str)> = (0..64)
                .map(|i| (format!("office{i}@example.com"), "the real password"))
                .collect();
            let statuses = sign_in_together(&app, &burst).await;
            assert!(
                statuses.iter().all(|s| *s == 303),
                "round {round}: no 429 for a busy office: {statuses:?}"
            );
        }
        // The IP is not locked: a wrong password is judged (401), a right one gets in.
        assert_eq!(
            app.login("office0@example.com", "a wrong guess")
                .await
                .status(),
            401
        );
        assert_eq!(
            app.login("office1@example.com", "the real password")
                .await
                .status(),
            303
        );
        assert!(!app
            .audit_kinds()
            .await
            .contains(&"login_locked_out".to_owned()));
    }
);

// Wrong and right passwords together on one account: a right one either gets
// in or is refused by a lock that `limit` judged failures set — never
// refused while the account is not locked.
backend_test!(
    parallel_wrong_and_right_passwords_lock_after_exactly_the_limit_of_failures,
    config = |c: &mut latchkey::config::Config| c.password.max_concurrent_hashes = 1,
    |app: TestApp| async move {
        let limit = app.state.config.login.max_failures_per_account as usize;
        for round in 0..3 {
            let email = format!("mixed{round}@example.com");
            app.create_user(&email, "the real password", &[]).await;
            let burst: Vec<(String, &str)> = (0..24)
                .map(|i| {
                    let password = if i % 3 == 0 {
                        "the real password"
                    } else {
                        "a wrong guess"
                    };
                    (email.clone(), password)
                })
                .collect();
            let statuses = sign_in_together(&app, &burst).await;
            let wrong_judged = statuses.iter().filter(|s| **s == 401).count();
            assert!(
                statuses.iter().all(|s| [303, 401, 429].contains(s)),
                "round {round}: {statuses:?}"
            );
            // Nothing is refused unless `limit` failures were judged (a
            // success in between clears the count, so it may take more).
            let refused = statuses.iter().filter(|s| **s == 429).count();
            if refused > 0 {
                assert!(wrong_judged >= limit, "round {round}: {statuses:?}");
            }
            // The IP counted those failures too: start the next round clean.
            let rules = &app.state.config.login;
            app.clock
                .advance(rules.failure_window_secs + rules.lockout_max_secs + 1);
        }
    }
);

backend_test!(login_csrf_is_required, |app: TestApp| async move {
    app.create_user("ada@example.com", "correct horse battery", &[])
        .await;
    let client = new_client();
    let _ = app.login_csrf(&client).await;
    // No token.
    let r = client
        .post(app.url("/login"))
        .form(&[
            ("email", "ada@example.com"),
            ("password", "correct horse battery"),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 403);
    // A token minted for another visitor.
    let other = app.login_csrf(&new_client()).await;
    let r = client
        .post(app.url("/login"))
        .form(&[
            ("email", "ada@example.com"),
            ("password", "correct horse battery"),
            ("csrf_token", other.as_str()),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 403);
    // A valid token but a cross-site Origin.
    let csrf = app.login_csrf(&client).await;
    let r = client
        .post(app.url("/login"))
        .header("origin", "https://evil.example")
        .form(&[
            ("email", "ada@example.com"),
            ("password", "correct horse battery"),
            ("csrf_token", csrf.as_str()),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 403);
    let r = client
        .post(app.url("/login"))
        .header("origin", "https://evil.example")
        .json(&serde_json::json!({"email": "ada@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 403, "JSON login checks Origin too");
    assert!(session_cookie_of(&r).is_none());
    // Nothing above created a session.
    let sessions = latchkey::session::count_active(
        &app.state.pool,
        &app.state.config.session,
        app.clock.now_secs(),
    )
    .await
    .expect("count");
    assert_eq!(sessions, 0);
});

backend_test!(
    logout_and_account_forms_need_the_session_csrf_token,
    |app: TestApp| async move {
        app.create_user("ada@example.com", "correct horse battery", &[])
            .await;
        assert_eq!(
            app.login("ada@example.com", "correct horse battery")
                .await
                .status(),
            303
        );
        let r = app
            .client
            .post(app.url("/logout"))
            .form(&[("csrf_token", "forged")])
            .send()
            .await
            .expect("logout");
        assert_eq!(r.status(), 403);
        let r = app
            .client
            .post(app.url("/account/sessions/revoke-others"))
            .form(&[("x", "y")])
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 403);
        let csrf = app.account_csrf(&app.client).await;
        let r = app
            .client
            .post(app.url("/logout"))
            .header("origin", "https://evil.example")
            .form(&[("csrf_token", csrf.as_str())])
            .send()
            .await
            .expect("logout");
        assert_eq!(
            r.status(),
            403,
            "cross-site origin refused even with the token"
        );
        // Still signed in after the refused attempts.
        let r = app
            .client
            .get(app.url("/account"))
            .header("accept", "application/json")
            .send()
            .await
            .expect("account");
        assert_eq!(r.status(), 200);
    }
);

backend_test!(new_session_id_on_every_login, |app: TestApp| async move {
    app.create_user("ada@example.com", "correct horse battery", &[])
        .await;
    let first = session_cookie_of(&app.login("ada@example.com", "correct horse battery").await)
        .expect("cookie");
    let second = session_cookie_of(&app.login("ada@example.com", "correct horse battery").await)
        .expect("cookie");
    assert_ne!(
        first, second,
        "no session fixation: every sign-in gets a fresh id"
    );
    assert_eq!(first.len(), 43, "256-bit id, base64url");
});

backend_test!(
    unauthenticated_pages_redirect_and_apis_answer_401,
    |app: TestApp| async move {
        let page = app
            .client
            .get(app.url("/account"))
            .header("accept", "text/html")
            .send()
            .await
            .expect("get");
        assert_eq!(page.status(), 303);
        assert_eq!(page.headers()["location"], "/login?next=%2Faccount");
        let api = app
            .client
            .get(app.url("/account/sessions"))
            .send()
            .await
            .expect("get");
        assert_eq!(api.status(), 401);
        assert!(api.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .starts_with("Session"));
        let body: serde_json::Value = api.json().await.expect("json");
        assert_eq!(body["error"], "unauthenticated");
    }
);

backend_test!(
    role_checks_answer_403_when_signed_in_without_the_role,
    // This test is about 401 vs 403; the MFA requirement for admins has its own tests (mfa.rs).
    config = |c: &mut latchkey::Config| c.mfa.required_roles.clear(),
    |app: TestApp| async move {
        app.create_user("user@example.com", "correct horse battery", &[])
            .await;
        app.create_user("boss@example.com", "correct horse battery", &["admin"])
            .await;
        assert_eq!(
            app.login("user@example.com", "correct horse battery")
                .await
                .status(),
            303
        );
        let r = app
            .client
            .get(app.url("/admin/api/users"))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 403);
        assert_eq!(
            r.json::<serde_json::Value>().await.expect("json")["error"],
            "forbidden"
        );
        let r = app
            .client
            .get(app.url("/admin"))
            .header("accept", "text/html")
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 403);
        assert!(r.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/html"));

        let admin = new_client();
        assert_eq!(
            app.login_with(&admin, "boss@example.com", "correct horse battery")
                .await
                .status(),
            303
        );
        let r = admin
            .get(app.url("/admin/api/users"))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["users"].as_array().map(Vec::len), Some(2));
        assert!(
            !body.to_string().contains("argon2"),
            "no password hashes in API output"
        );
        assert!(app
            .audit_kinds()
            .await
            .contains(&"access_denied".to_owned()));
    }
);

backend_test!(
    open_redirects_are_refused_after_login,
    |app: TestApp| async move {
        app.create_user("ada@example.com", "correct horse battery", &[])
            .await;
        let csrf = app.login_csrf(&app.client).await;
        let r = app
            .client
            .post(app.url("/login"))
            .form(&[
                ("email", "ada@example.com"),
                ("password", "correct horse battery"),
                ("csrf_token", csrf.as_str()),
                ("next", "//evil.example/x"),
            ])
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], "/account");
    }
);
