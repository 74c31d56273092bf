//! Federation (social login) end to end: a second real Latchkey is the
//! upstream OpenID provider, the server under test its relying party, and a
//! cookie-keeping client the browser, walking the sign-in page's button,
//! the upstream's own sign-in form and the callback (redirects followed by
//! hand). Each linking rule of docs/federation.md has its named test.

use crate::support::app::*;
use crate::support::federation::*;
use crate::support::oauth::{enroll_totp, location, Browser};
use crate::support::PASSWORD;
use crate::{backend_test, federation_test};

fn options() -> ProviderOptions {
    ProviderOptions::default()
}

async fn audit_details(app: &TestApp, kind: &str) -> Vec<String> {
    latchkey::audit::tail(&app.state.pool, 1000)
        .await
        .expect("audit")
        .into_iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.detail)
        .collect()
}

// ---------------------------------------------------------------- the page

federation_test!(
    starts_are_limited_per_address_and_a_refused_start_writes_nothing_and_calls_no_one,
    options(),
    |fed: Federation| async move {
        let fed = fed;
        let limit = fed
            .down
            .state
            .config
            .federation
            .max_sign_ins_per_ip_per_minute;
        assert!(limit > 0, "limited by default");
        let browser = Browser::new();
        for n in 0..limit {
            let answer = browser.get(&fed.down, "/login/idp/upstream").await;
            assert_eq!(answer.status(), 303, "start {n} is sent to the upstream");
        }
        let states = crate::support::oauth::rows(&fed.down, "federation_states").await;
        assert_eq!(states, i64::from(limit));
        let refused = browser.get(&fed.down, "/login/idp/upstream").await;
        assert_eq!(refused.status(), 429);
        let retry_after: i64 = refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("Retry-After in seconds");
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        assert!(
            refused.headers().get("set-cookie").is_none(),
            "no state cookie"
        );
        assert_eq!(
            crate::support::oauth::rows(&fed.down, "federation_states").await,
            states,
            "a refused start writes no state"
        );
        // A minute later the address may start again.
        fed.down.clock.advance(60);
        assert_eq!(
            browser.get(&fed.down, "/login/idp/upstream").await.status(),
            303
        );
    }
);

federation_test!(
    sign_in_page_shows_one_button_per_provider_keeping_next,
    options(),
    |fed: Federation| async move {
        // The whole federation (an async block would capture `fed.down`
        // alone and drop the upstream).
        let fed = fed;
        let html = fed
            .down
            .client
            .get(
                fed.down
                    .url("/login?next=%2Foauth2%2Fauthorize%2Fresume%3Fid%3Dabc"),
            )
            .send()
            .await
            .expect("login page")
            .text()
            .await
            .expect("html")
            .replace("&#x2f;", "/");
        assert!(
            html.contains(
                "href=\"/login/idp/upstream?next=%2Foauth2%2Fauthorize%2Fresume%3Fid%3Dabc\""
            ),
            "the button keeps the pending request:\n{html}"
        );
        // The start sets a browser-bound, HttpOnly state cookie and sends
        // PKCE S256, a nonce and the state to the upstream.
        let browser = Browser::new();
        let answer = browser
            .get(&fed.down, "/login/idp/upstream?next=/account")
            .await;
        assert_eq!(answer.status(), 303, "{:?}", answer.text().await);
        let cookie = answer
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.starts_with("latchkey_fed="))
            .expect("state cookie")
            .to_owned();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
            "{cookie}"
        );
        let to = location(&answer);
        for needle in [
            "code_challenge_method=S256",
            "nonce=",
            "state=",
            "response_type=code",
            "scope=openid",
        ] {
            assert!(to.contains(needle), "{needle} in {to}");
        }
        let unknown = browser.get(&fed.down, "/login/idp/nobody").await;
        assert_eq!(unknown.status(), 404);
    }
);

// ---------------------------------------------------------------- JIT

federation_test!(
    first_sign_in_provisions_the_user_with_verified_email_name_and_mapped_roles,
    ProviderOptions {
        role_claim: "email",
        role_map: vec![("ada@up.test", "support")],
        ..options()
    },
    |fed: Federation| async move {
        fed.upstream_user("ada@up.test", true).await;
        let browser = Browser::new();
        let back = fed.sign_in(&browser, "ada@up.test").await;
        assert_eq!(back.status(), 303, "{:?}", back.text().await);
        assert_eq!(location(&back), "/account");
        let (user, amr) = whoami(&fed.down, &browser).await.expect("signed in");
        assert_eq!(user["email"], "ada@up.test");
        assert_eq!(user["email_verified"], true);
        assert_eq!(user["display_name"], "Upstream Person");
        assert_eq!(user["roles"], serde_json::json!(["support"]));
        assert_eq!(amr, vec!["fed".to_owned()]);
        let linked = identities(&fed.down).await;
        assert_eq!(linked.len(), 1);
        assert_eq!(linked[0].0, "upstream");
        assert_eq!(linked[0].2, user["id"].as_str().expect("id"));
        // A second sign-in finds the same account by (provider, subject).
        let again = Browser::new();
        assert_eq!(fed.sign_in(&again, "ada@up.test").await.status(), 303);
        let (user2, _) = whoami(&fed.down, &again).await.expect("signed in");
        assert_eq!(user2["id"], user["id"]);
        assert_eq!(count(&fed.down, "users").await, 1);
    }
);

federation_test!(
    without_provisioning_an_unknown_identity_is_refused_and_nothing_is_created,
    ProviderOptions {
        provision: false,
        ..options()
    },
    |fed: Federation| async move {
        fed.upstream_user("nobody@up.test", true).await;
        let browser = Browser::new();
        let answer = fed.sign_in(&browser, "nobody@up.test").await;
        assert_eq!(answer.status(), 400);
        let html = answer.text().await.expect("page");
        assert!(html.contains("does not create accounts"), "{html}");
        assert_eq!(count(&fed.down, "users").await, 0);
        assert!(whoami(&fed.down, &browser).await.is_none());
        assert_eq!(
            audit_details(&fed.down, "federation_refused").await.len(),
            1
        );
    }
);

federation_test!(
    an_unverified_upstream_email_does_not_provision,
    options(),
    |fed: Federation| async move {
        fed.upstream_user("unsure@up.test", false).await;
        let browser = Browser::new();
        let answer = fed.sign_in(&browser, "unsure@up.test").await;
        assert_eq!(answer.status(), 400);
        assert!(answer
            .text()
            .await
            .expect("page")
            .contains("did not confirm an email"));
        assert_eq!(count(&fed.down, "users").await, 0);
    }
);

// ---------------------------------------------------------------- linking rules

federation_test!(
    rule1_links_automatically_only_when_both_emails_are_verified,
    options(),
    |fed: Federation| async move {
        let local = fed
            .down
            .create_user("bea@example.test", PASSWORD, &[])
            .await;
        fed.upstream_user("bea@example.test", true).await;
        let browser = Browser::new();
        assert_eq!(
            fed.sign_in(&browser, "bea@example.test").await.status(),
            303
        );
        let (user, amr) = whoami(&fed.down, &browser).await.expect("signed in");
        assert_eq!(user["id"], local.id.as_str());
        assert_eq!(amr, vec!["fed".to_owned()]);
        assert_eq!(identities(&fed.down).await.len(), 1);
        assert!(audit_details(&fed.down, "federated_identity_linked")
            .await
            .iter()
            .any(|d| d.contains("both emails verified")));
    }
);

federation_test!(
    rule1_an_unverified_upstream_email_needs_the_owners_sign_in_with_second_factor,
    options(),
    |fed: Federation| async move {
        let local = fed.down.create_user("cy@example.test", PASSWORD, &[]).await;
        let secret = enroll_totp(&fed.down, &local.id).await;
        fed.upstream_user("cy@example.test", false).await;
        let browser = Browser::new();
        let answer = fed.sign_in(&browser, "cy@example.test").await;
        assert_eq!(answer.status(), 200, "a page explaining the link");
        let html = answer.text().await.expect("page");
        assert!(html.contains("id=\"sign-in-to-link\""), "{html}");
        assert!(identities(&fed.down).await.is_empty(), "nothing linked yet");
        assert!(whoami(&fed.down, &browser).await.is_none(), "not signed in");

        // Someone else's account cannot confirm it.
        fed.down
            .create_user("other@example.test", PASSWORD, &[])
            .await;
        let back = browser
            .sign_in(&fed.down, "other@example.test", None, "/login/idp/link")
            .await;
        assert_eq!(back, "/login/idp/link");
        assert_eq!(
            browser.get(&fed.down, "/login/idp/link").await.status(),
            400
        );
        assert!(identities(&fed.down).await.is_empty());

        // The owner signs in with the password AND the second factor, then confirms.
        let back = browser
            .sign_in(
                &fed.down,
                "cy@example.test",
                Some(&secret),
                "/login/idp/link",
            )
            .await;
        assert_eq!(back, "/login/idp/link");
        let csrf = page_csrf(&fed.down, &browser, "/login/idp/link").await;
        let confirmed = browser
            .http
            .post(fed.down.url("/login/idp/link"))
            .form(&[("csrf_token", csrf.as_str())])
            .send()
            .await
            .expect("confirm");
        assert_eq!(confirmed.status(), 303);
        let linked = identities(&fed.down).await;
        assert_eq!(linked.len(), 1);
        assert_eq!(linked[0].2, local.id);
        // The confirmation is single use.
        let again = browser
            .http
            .post(fed.down.url("/login/idp/link"))
            .form(&[("csrf_token", csrf.as_str())])
            .send()
            .await
            .expect("confirm again");
        assert_eq!(again.status(), 400);
    }
);

federation_test!(
    rule1_policy_confirm_asks_even_when_both_are_verified_and_never_refuses,
    ProviderOptions {
        link: "confirm",
        ..options()
    },
    |fed: Federation| async move {
        fed.down.create_user("di@example.test", PASSWORD, &[]).await;
        fed.upstream_user("di@example.test", true).await;
        let browser = Browser::new();
        let answer = fed.sign_in(&browser, "di@example.test").await;
        assert_eq!(answer.status(), 200);
        assert!(answer
            .text()
            .await
            .expect("page")
            .contains("sign-in-to-link"));
        assert!(identities(&fed.down).await.is_empty());

        // `never`: refused, nothing pending or linked.
        sqlx::query("UPDATE federation_providers SET link_policy = 'never'")
            .execute(&fed.down.state.pool)
            .await
            .expect("policy");
        let browser = Browser::new();
        let answer = fed.sign_in(&browser, "di@example.test").await;
        assert_eq!(answer.status(), 400);
        assert!(answer
            .text()
            .await
            .expect("page")
            .contains("link this provider from your account page"));
        assert!(identities(&fed.down).await.is_empty());
    }
);

federation_test!(
    rule2_a_never_verified_local_account_loses_its_credentials_before_linking,
    options(),
    |fed: Federation| async move {
        // The squatter registered the victim's address and never verified it.
        let squatter = create_user(
            &fed.down,
            "eve-victim@example.test",
            false,
            Some(PASSWORD),
            "Squatter",
        )
        .await;
        let squatter_browser = Browser::new();
        squatter_browser
            .sign_in(&fed.down, "eve-victim@example.test", None, "/account")
            .await;
        assert!(whoami(&fed.down, &squatter_browser).await.is_some());

        fed.upstream_user("eve-victim@example.test", true).await;
        let owner = Browser::new();
        assert_eq!(
            fed.sign_in(&owner, "eve-victim@example.test")
                .await
                .status(),
            303
        );
        let (user, _) = whoami(&fed.down, &owner).await.expect("owner signed in");
        assert_eq!(user["id"], squatter.id.as_str());
        assert_eq!(user["email_verified"], true);
        assert!(
            whoami(&fed.down, &squatter_browser).await.is_none(),
            "the squatter's session ended"
        );
        let login = fed
            .down
            .login_with(&new_client(), "eve-victim@example.test", PASSWORD)
            .await;
        assert_eq!(login.status(), 401, "the squatter's password is gone");
        assert_eq!(identities(&fed.down).await.len(), 1);
        let cleared = audit_details(&fed.down, "federation_account_cleared").await;
        assert_eq!(cleared.len(), 1, "{cleared:?}");
        assert!(cleared[0].contains("1 session(s) ended"), "{cleared:?}");
    }
);

federation_test!(
    rule3_a_second_factor_is_still_asked_after_federation,
    options(),
    |fed: Federation| async move {
        let local = fed
            .down
            .create_user("fay@example.test", PASSWORD, &[])
            .await;
        let secret = enroll_totp(&fed.down, &local.id).await;
        fed.upstream_user("fay@example.test", true).await;
        let browser = Browser::new();
        let answer = fed.sign_in(&browser, "fay@example.test").await;
        assert_eq!(answer.status(), 303);
        let target = location(&answer);
        assert!(target.starts_with("/login/mfa"), "{target}");
        assert!(
            whoami(&fed.down, &browser).await.is_none(),
            "no session before the second step"
        );
        let html = browser
            .get(&fed.down, &target)
            .await
            .text()
            .await
            .expect("mfa page");
        let csrf = extract_input(&html, "csrf_token").expect("csrf");
        let code =
            latchkey::mfa::totp::Totp::new(&secret).code_at(fed.down.clock.now_secs() as u64);
        let done = browser
            .http
            .post(fed.down.url("/login/mfa"))
            .form(&[
                ("csrf_token", csrf.as_str()),
                ("code", code.as_str()),
                ("next", "/account"),
            ])
            .send()
            .await
            .expect("second step");
        assert_eq!(done.status(), 303);
        let (user, amr) = whoami(&fed.down, &browser).await.expect("signed in");
        assert_eq!(user["id"], local.id.as_str());
        assert!(amr.contains(&"fed".to_owned()), "{amr:?}");
        assert!(amr.contains(&"otp".to_owned()), "{amr:?}");
        assert!(amr.contains(&"mfa".to_owned()), "{amr:?}");
    }
);

federation_test!(
    rule4_unlink_from_the_account_page_unless_it_is_the_last_way_in,
    options(),
    |fed: Federation| async move {
        // A provisioned user has no password: the identity is their only way in.
        fed.upstream_user("gil@up.test", true).await;
        let browser = Browser::new();
        assert_eq!(fed.sign_in(&browser, "gil@up.test").await.status(), 303);
        let page = browser
            .get(&fed.down, "/account/identities")
            .await
            .text()
            .await
            .expect("page");
        assert!(
            page.contains("upstream") && page.contains("gil@up.test"),
            "{page}"
        );
        let (id,) = sqlx::query_as::<_, (String,)>("SELECT id FROM federated_identities")
            .fetch_one(&fed.down.state.pool)
            .await
            .expect("identity");
        let csrf = page_csrf(&fed.down, &browser, "/account/identities").await;
        let refused = browser
            .http
            .post(fed.down.url(&format!("/account/identities/{id}/unlink")))
            .form(&[("csrf_token", csrf.as_str())])
            .send()
            .await
            .expect("unlink");
        assert_eq!(refused.status(), 409);
        assert!(refused
            .text()
            .await
            .expect("page")
            .contains("last way to sign in"));
        assert_eq!(identities(&fed.down).await.len(), 1);

        // With a password it may go; the audit log says so.
        let hash = fed
            .down
            .state
            .hasher
            .hash(&latchkey::identity::Password::new(PASSWORD))
            .await
            .expect("hash");
        let (user_id,) = sqlx::query_as::<_, (String,)>("SELECT user_id FROM federated_identities")
            .fetch_one(&fed.down.state.pool)
            .await
            .expect("user");
        latchkey::identity::replace_password_hash(
            &fed.down.state.pool,
            &user_id,
            None,
            &hash,
            fed.down.clock.now_secs(),
        )
        .await
        .expect("password");
        let unlinked = browser
            .http
            .post(fed.down.url(&format!("/account/identities/{id}/unlink")))
            .form(&[("csrf_token", csrf.as_str())])
            .send()
            .await
            .expect("unlink");
        assert_eq!(unlinked.status(), 303);
        assert!(identities(&fed.down).await.is_empty());
        assert_eq!(
            audit_details(&fed.down, "federated_identity_unlinked")
                .await
                .len(),
            1
        );
        // Without a CSRF token nothing happens.
        let forged = browser
            .http
            .post(fed.down.url(&format!("/account/identities/{id}/unlink")))
            .form(&[("csrf_token", "nope")])
            .send()
            .await
            .expect("unlink");
        assert_eq!(forged.status(), 403);
    }
);

federation_test!(
    rule5_a_changed_upstream_email_never_moves_the_login,
    options(),
    |fed: Federation| async move {
        let upstream = fed.upstream_user("hal@up.test", true).await;
        let browser = Browser::new();
        assert_eq!(fed.sign_in(&browser, "hal@up.test").await.status(), 303);
        let (hal, _) = whoami(&fed.down, &browser).await.expect("signed in");
        // Another local account holds a verified address; the upstream user
        // switches to that address.
        let target = fed
            .down
            .create_user("ivy@example.test", PASSWORD, &[])
            .await;
        change_email(&fed.up, &upstream.id, "ivy@example.test").await;
        let browser = Browser::new();
        assert_eq!(
            fed.sign_in(&browser, "ivy@example.test").await.status(),
            303
        );
        let (user, _) = whoami(&fed.down, &browser).await.expect("signed in");
        assert_eq!(user["id"], hal["id"], "still Hal's account");
        assert_ne!(user["id"], target.id.as_str());
        assert_eq!(identities(&fed.down).await.len(), 1);
    }
);

// ---------------------------------------------------------------- hostile callbacks

federation_test!(
    a_replayed_callback_is_refused_audited_and_changes_nothing,
    options(),
    |fed: Federation| async move {
        fed.upstream_user("jo@up.test", true).await;
        let browser = Browser::new();
        let callback = fed.to_callback(&browser, "jo@up.test", "/account").await;
        assert_eq!(browser.get(&fed.down, &callback).await.status(), 303);
        let sessions = count(&fed.down, "sessions").await;
        // The same answer again, in the same browser and in another.
        for replayer in [&browser, &Browser::new()] {
            let again = replayer.get(&fed.down, &callback).await;
            assert_eq!(again.status(), 400);
            assert!(again
                .text()
                .await
                .expect("page")
                .contains("not valid any more"));
        }
        assert_eq!(count(&fed.down, "sessions").await, sessions);
        assert_eq!(count(&fed.down, "users").await, 1);
        assert_eq!(
            audit_details(&fed.down, "federation_refused").await.len(),
            2
        );
    }
);

federation_test!(
    a_forged_callback_without_the_browsers_state_is_refused,
    options(),
    |fed: Federation| async move {
        fed.upstream_user("kim@up.test", true).await;
        // The victim's browser started; the attacker replays the answer in
        // their own browser (no state cookie), or invents a state.
        let victim = Browser::new();
        let callback = fed.to_callback(&victim, "kim@up.test", "/account").await;
        let attacker = Browser::new();
        assert_eq!(attacker.get(&fed.down, &callback).await.status(), 400);
        let invented = with_param(
            &callback,
            "state",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        );
        assert_eq!(victim.get(&fed.down, &invented).await.status(), 400);
        let no_state = with_param(&callback, "state", "");
        assert_eq!(victim.get(&fed.down, &no_state).await.status(), 400);
        assert_eq!(count(&fed.down, "users").await, 0);
        assert!(whoami(&fed.down, &attacker).await.is_none());
        // The genuine answer, in the genuine browser, still works: a forgery spends nothing.
        assert_eq!(victim.get(&fed.down, &callback).await.status(), 303);
        assert!(whoami(&fed.down, &victim).await.is_some());
    }
);

federation_test!(
    a_callback_naming_another_issuer_is_refused,
    options(),
    |fed: Federation| async move {
        fed.upstream_user("lu@up.test", true).await;
        let browser = Browser::new();
        let callback = fed.to_callback(&browser, "lu@up.test", "/account").await;
        assert!(
            callback.contains("iss="),
            "Latchkey sends RFC 9207 iss: {callback}"
        );
        let mixed_up = with_param(&callback, "iss", "https://evil.example");
        let answer = browser.get(&fed.down, &mixed_up).await;
        assert_eq!(answer.status(), 502);
        assert!(answer.text().await.expect("page").contains("issuer"));
        assert_eq!(count(&fed.down, "users").await, 0);
        assert!(audit_details(&fed.down, "federation_refused")
            .await
            .iter()
            .any(|d| d.contains("issuer")));
    }
);

federation_test!(
    an_id_token_with_the_wrong_nonce_is_refused,
    options(),
    |fed: Federation| async move {
        fed.upstream_user("max@up.test", true).await;
        let browser = Browser::new();
        let callback = fed.to_callback(&browser, "max@up.test", "/account").await;
        tamper_nonces(&fed.down).await;
        let answer = browser.get(&fed.down, &callback).await;
        assert_eq!(answer.status(), 502);
        let html = answer.text().await.expect("page");
        assert!(html.contains("ID token was refused"), "{html}");
        assert_eq!(count(&fed.down, "users").await, 0);
    }
);

federation_test!(
    an_upstream_error_answer_gets_a_clear_page,
    options(),
    |fed: Federation| async move {
        let browser = Browser::new();
        let authorize = fed.press_button(&browser, "/account").await;
        let state = crate::support::oauth::query_param(&authorize, "state").expect("state");
        let callback = format!(
            "{}?error=access_denied&error_description=The+user+said+no&state={state}",
            callback_url(&fed.down)
        );
        let answer = browser.get(&fed.down, &callback).await;
        assert_eq!(answer.status(), 400);
        let html = answer.text().await.expect("page");
        assert!(
            html.contains("access_denied") && html.contains("The user said no"),
            "{html}"
        );
        assert_eq!(count(&fed.down, "users").await, 0);
    }
);

federation_test!(
    client_secret_post_works_too,
    ProviderOptions {
        auth_method: "client_secret_post",
        ..options()
    },
    |fed: Federation| async move {
        fed.upstream_user("ned@up.test", true).await;
        let browser = Browser::new();
        assert_eq!(fed.sign_in(&browser, "ned@up.test").await.status(), 303);
        assert!(whoami(&fed.down, &browser).await.is_some());
    }
);

federation_test!(
    a_signed_in_user_links_another_identity_from_the_account_page,
    options(),
    |fed: Federation| async move {
        let local = fed.down.create_user("oz@example.test", PASSWORD, &[]).await;
        // The upstream account has another address: linking is by the user's own sign-ins.
        fed.upstream_user("oz-elsewhere@up.test", false).await;
        let browser = Browser::signed_in(&fed.down, "oz@example.test").await;
        let csrf = page_csrf(&fed.down, &browser, "/account/identities").await;
        let start = browser
            .http
            .post(fed.down.url("/account/identities/link"))
            .form(&[("csrf_token", csrf.as_str()), ("provider", "upstream")])
            .send()
            .await
            .expect("link");
        assert_eq!(start.status(), 303);
        let authorize = location(&start);
        let to_login = location(&browser.get(&fed.up, &authorize).await);
        let next = crate::support::oauth::query_param(&to_login, "next").expect("next");
        let resume = browser
            .sign_in(&fed.up, "oz-elsewhere@up.test", None, &next)
            .await;
        let callback = location(&browser.get(&fed.up, &resume).await);
        let back = browser.get(&fed.down, &callback).await;
        assert_eq!(location(&back), "/account/identities");
        let linked = identities(&fed.down).await;
        assert_eq!(linked.len(), 1);
        assert_eq!(linked[0].2, local.id);
    }
);

// ---------------------------------------------------------------- the CLI

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_add_next_to_a_running_server_is_offered_at_once_and_remove_takes_it_off_at_once() {
    use crate::support::cli::{env, latchkey, start_dev};
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_dev(dir.path(), &[]).await;
    let no_env = env(&[]);
    let login_page = || async {
        reqwest::get(format!("{}/login", server.base))
            .await
            .expect("login page")
            .text()
            .await
            .expect("html")
    };
    assert!(!login_page().await.contains("idp-corp"));
    let secret = "s3cret-value-never-printed";
    let added = latchkey(
        dir.path(),
        &no_env,
        &[
            "idp",
            "add",
            "--name",
            "corp",
            "--kind",
            "oidc",
            "--issuer",
            "http://127.0.0.1:9/",
            "--client-id",
            "latchkey-client",
            "--client-secret-stdin",
            "--scope",
            "email",
            "--provision",
            "--link",
            "confirm",
            "--role-claim",
            "groups",
            "--role-map",
            "staff=support",
            "--json",
        ],
        Some(&format!("{secret}\n")),
    )
    .await;
    added.assert_success("idp add");
    let doc = added.json();
    assert_eq!(doc["name"], "corp");
    assert_eq!(doc["link"], "confirm");
    assert_eq!(doc["provision"], true);
    assert_eq!(doc["role_map"]["staff"], "support");
    assert!(doc["callback_url"]
        .as_str()
        .expect("callback")
        .ends_with("/login/idp/corp/callback"));
    assert!(!added.stdout.contains(secret) && !added.stderr.contains(secret));
    // The running server offers it on the next page view: no restart.
    assert!(login_page().await.contains("id=\"idp-corp\""));

    let listed = latchkey(dir.path(), &no_env, &["idp", "list", "--json"], None).await;
    listed.assert_success("idp list");
    assert_eq!(listed.json()["providers"][0]["name"], "corp");
    assert!(!listed.stdout.contains(secret));
    // Sealed at rest.
    let db = std::fs::read(dir.path().join(".latchkey/latchkey.db")).expect("db");
    assert!(
        !db.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the secret is not stored in clear"
    );

    // Refusals change nothing.
    for (args, stdin, needle) in [
        (
            vec![
                "idp",
                "add",
                "--name",
                "corp",
                "--issuer",
                "https://id.example.com",
                "--client-id",
                "x",
                "--client-secret-stdin",
            ],
            Some("s\n"),
            "already exists",
        ),
        (
            vec![
                "idp",
                "add",
                "--name",
                "plain",
                "--issuer",
                "http://id.example.com",
                "--client-id",
                "x",
                "--client-secret-stdin",
            ],
            Some("s\n"),
            "https",
        ),
        (
            vec![
                "idp",
                "add",
                "--name",
                "nosecret",
                "--issuer",
                "https://id.example.com",
                "--client-id",
                "x",
            ],
            None,
            "--client-secret-stdin",
        ),
        (
            vec![
                "idp",
                "add",
                "--name",
                "Bad Name",
                "--issuer",
                "https://id.example.com",
                "--client-id",
                "x",
                "--client-secret-stdin",
            ],
            Some("s\n"),
            "provider name",
        ),
        (
            vec![
                "idp",
                "add",
                "--name",
                "gh",
                "--kind",
                "github",
                "--issuer",
                "https://id.example.com",
                "--client-id",
                "x",
                "--client-secret-stdin",
            ],
            Some("s\n"),
            "not available yet",
        ),
        (vec!["idp", "remove", "nobody"], None, "no provider named"),
    ] {
        latchkey(dir.path(), &no_env, &args, stdin)
            .await
            .assert_failure(&args.join(" "), &[needle]);
    }
    let listed = latchkey(dir.path(), &no_env, &["idp", "list", "--json"], None).await;
    assert_eq!(listed.json()["providers"].as_array().map(Vec::len), Some(1));

    let disabled = latchkey(
        dir.path(),
        &no_env,
        &["idp", "update", "corp", "--disable", "--json"],
        None,
    )
    .await;
    disabled.assert_success("idp update --disable");
    assert_eq!(disabled.json()["enabled"], false);
    assert!(!login_page().await.contains("idp-corp"));
    latchkey(
        dir.path(),
        &no_env,
        &["idp", "update", "corp", "--enable"],
        None,
    )
    .await
    .assert_success("idp update --enable");
    assert!(login_page().await.contains("idp-corp"));

    let removed = latchkey(
        dir.path(),
        &no_env,
        &["idp", "remove", "corp", "--json"],
        None,
    )
    .await;
    removed.assert_success("idp remove");
    assert_eq!(removed.json()["removed"], "corp");
    assert!(
        !login_page().await.contains("idp-corp"),
        "taken off at once"
    );
    server.stop().await;
}

// ---------------------------------------------------------------- applications, races, bad upstreams

federation_test!(
    an_application_sign_in_through_the_provider_returns_a_code_whose_id_token_says_fed,
    options(),
    |fed: Federation| async move {
        use crate::support::jwt::jwt_payload;
        use crate::support::oauth::{code_of, exchange, query_param, rp_client, Pkce};
        fed.upstream_user("pat@up.test", true).await;
        let client = rp_client(&fed.down, "openid email", true).await;
        let browser = Browser::new();
        let pkce = Pkce::random();
        let to_login = location(
            &browser
                .authorize(
                    &fed.down,
                    &client,
                    "openid email",
                    &pkce,
                    &[("nonce", "n-1")],
                )
                .await,
        );
        let next = query_param(&to_login, "next").expect("the pending request");
        // The sign-in page's button keeps the pending request.
        let callback = fed.to_callback(&browser, "pat@up.test", &next).await;
        let back = browser.get(&fed.down, &callback).await;
        assert_eq!(location(&back), next, "back to the pending request");
        let to_client = location(&browser.get(&fed.down, &next).await);
        let code = code_of(&to_client);
        let answer = exchange(&fed.down, &client, &code, &pkce).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        let claims = jwt_payload(answer.body["id_token"].as_str().expect("id_token"));
        assert_eq!(claims["email"], "pat@up.test");
        assert_eq!(claims["amr"], serde_json::json!(["fed"]));
        assert_eq!(claims["nonce"], "n-1");
    }
);

federation_test!(
    concurrent_callbacks_with_one_state_sign_in_exactly_once,
    options(),
    |fed: Federation| async move {
        fed.upstream_user("quin@up.test", true).await;
        for round in 0..5 {
            let browser = Browser::new();
            let callback = fed.to_callback(&browser, "quin@up.test", "/account").await;
            let sessions = count(&fed.down, "sessions").await;
            let (a, b) = tokio::join!(
                browser.get(&fed.down, &callback),
                browser.get(&fed.down, &callback)
            );
            let mut statuses = vec![a.status().as_u16(), b.status().as_u16()];
            statuses.sort_unstable();
            assert_eq!(statuses, vec![303, 400], "round {round}");
            assert_eq!(
                count(&fed.down, "sessions").await,
                sessions + 1,
                "round {round}"
            );
        }
        assert_eq!(count(&fed.down, "users").await, 1);
        assert_eq!(identities(&fed.down).await.len(), 1);
    }
);

backend_test!(
    an_upstream_that_answers_too_much_too_slowly_or_from_a_private_address_gets_a_clear_page,
    config = |c| {
        c.federation.allow_insecure_loopback = true;
        c.federation.upstream_timeout_secs = 1;
        c.federation.upstream_max_bytes = 65536;
    },
    |app: TestApp| async move {
        let endless = misbehaving_upstream(Misbehaviour::EndlessBody).await;
        let silent = misbehaving_upstream(Misbehaviour::Silent).await;
        add_stand_in_provider(&app, "endless", &endless).await;
        add_stand_in_provider(&app, "silent", &silent).await;
        add_stand_in_provider(&app, "private", "https://10.0.0.1").await;
        add_stand_in_provider(&app, "metadata", "https://169.254.169.254").await;
        for (name, needle) in [
            ("endless", "larger than 65536 bytes"),
            ("silent", "did not answer in time"),
            ("private", "private or link-local"),
            ("metadata", "private or link-local"),
        ] {
            let browser = Browser::new();
            let answer = browser.get(&app, &format!("/login/idp/{name}")).await;
            assert_eq!(answer.status(), 502, "{name}");
            let html = answer.text().await.expect("page");
            assert!(html.contains(needle), "{name}: {html}");
        }
        assert_eq!(count(&app, "federation_states").await, 0, "nothing written");
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_from_the_configuration_file_with_a_secret_file_signs_in() {
    use crate::support::oauth::{client_spec, register};
    let up = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let mut spec = client_spec(
        "configured",
        true,
        &["authorization_code"],
        "openid email profile",
    );
    spec.first_party = true;
    let client = register(&up, spec).await;
    let secret_dir = tempfile::tempdir().expect("tempdir");
    let secret_file = secret_dir.path().join("upstream.secret");
    std::fs::write(
        &secret_file,
        format!("{}\n", client.secret.clone().expect("secret")),
    )
    .expect("write secret");
    let (issuer, client_id) = (up.base.clone(), client.id.clone());
    let down = TestApp::spawn_localhost_with(Backend::Sqlite, |c| {
        c.federation.allow_insecure_loopback = true;
        c.federation.providers = vec![latchkey::config::ProviderConfig {
            name: PROVIDER.into(),
            kind: "oidc".into(),
            issuer,
            client_id,
            client_secret: None,
            client_secret_file: Some(secret_file.clone()),
            auth_method: "client_secret_basic".into(),
            scopes: vec!["email".into(), "profile".into()],
            link: "verified".into(),
            provision: true,
            role_claim: String::new(),
            role_map: Default::default(),
            enabled: true,
        }];
    })
    .await
    .expect("sqlite");
    // The callback URL is known once the server has its port.
    let update = latchkey::oauth::clients::ClientUpdate {
        redirect_uris: Some(vec![callback_url(&down)]),
        ..Default::default()
    };
    latchkey::oauth::clients::update(&up.state.pool, &client.id, update, up.clock.now_secs())
        .await
        .expect("update")
        .expect("client");
    let fed = Federation { up, down, client };
    fed.upstream_user("rae@up.test", true).await;
    let browser = Browser::new();
    assert_eq!(fed.sign_in(&browser, "rae@up.test").await.status(), 303);
    let (user, amr) = whoami(&fed.down, &browser).await.expect("signed in");
    assert_eq!(user["email"], "rae@up.test");
    assert_eq!(amr, vec!["fed".to_owned()]);
    // The file wins over a database provider of the same name, and the CLI
    // cannot change it (`idp` refuses configured names).
    assert_eq!(
        latchkey::federation::enabled_providers(&fed.down.state)
            .await
            .expect("providers")
            .len(),
        1
    );
}

federation_test!(
    operators_list_and_unlink_a_users_identities_with_the_cli,
    options(),
    |fed: Federation| async move {
        use crate::support::cli::{env, latchkey};
        fed.upstream_user("sam@up.test", true).await;
        let browser = Browser::new();
        assert_eq!(fed.sign_in(&browser, "sam@up.test").await.status(), 303);
        let dir = tempfile::tempdir().expect("tempdir");
        let vars = env(&[("LATCHKEY_DATABASE_URL", &fed.down.database_url)]);
        let listed = latchkey(
            dir.path(),
            &vars,
            &["idp", "identities", "--user", "sam@up.test", "--json"],
            None,
        )
        .await;
        listed.assert_success("idp identities");
        let doc = listed.json();
        assert_eq!(doc["identities"][0]["provider"], "upstream");
        assert_eq!(doc["identities"][0]["email_at_link"], "sam@up.test");
        latchkey(
            dir.path(),
            &vars,
            &[
                "idp",
                "unlink",
                "--user",
                "sam@up.test",
                "--provider",
                "elsewhere",
            ],
            None,
        )
        .await
        .assert_failure("unknown provider", &["no identity at provider"]);
        let unlinked = latchkey(
            dir.path(),
            &vars,
            &[
                "idp",
                "unlink",
                "--user",
                "sam@up.test",
                "--provider",
                "upstream",
                "--json",
            ],
            None,
        )
        .await;
        unlinked.assert_success("idp unlink");
        assert_eq!(unlinked.json()["last_way_in"], true);
        assert!(unlinked.stderr.contains("warning"), "{}", unlinked.stderr);
        assert!(identities(&fed.down).await.is_empty());
        assert!(audit_details(&fed.down, "federated_identity_unlinked")
            .await
            .iter()
            .any(|d| d.contains("administrator")));
    }
);

// ---------------------------------------------------------------- real Chromium

/// The whole flow in a real browser: the sign-in page's button, the
/// upstream's own sign-in form, and back signed in — the state cookie
/// (`SameSite=Lax`) survives the cross-site return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_sign_in_end_to_end_in_chromium() {
    use crate::support::browser::{chromium_available, Session};
    if !chromium_available() {
        return;
    }
    let fed = Federation::start(Backend::Sqlite, options())
        .await
        .expect("sqlite");
    fed.upstream_user("uma@up.test", true).await;
    let session = Session::without_autofill().await;
    session.goto(&fed.down.url("/login")).await;
    session.click("#idp-upstream").await;
    session
        .wait_for("location.host.startsWith('127.0.0.1') && location.pathname === '/login' && document.readyState === 'complete' && document.getElementById('email')")
        .await;
    session
        .eval(&format!(
            "document.getElementById('email').value = 'uma@up.test'; \
             document.getElementById('password').value = {PASSWORD:?}; true"
        ))
        .await;
    session
        .click("form[action='/login'] button[type=submit]")
        .await;
    session
        .wait_for("location.host.startsWith('localhost') && location.pathname === '/account'")
        .await;
    let account = session.account().await;
    assert_eq!(account["user"]["email"], "uma@up.test", "{account}");
    assert_eq!(account["user"]["email_verified"], true);
    let amr = account["sessions"][0]["amr"].clone();
    assert_eq!(amr, serde_json::json!(["fed"]), "{account}");
    session.close().await;
}
