//! Passkeys in a real browser: headless Chromium with a WebAuthn virtual
//! authenticator (CTAP2, internal transport, resident keys, user
//! verification), driven over the DevTools Protocol. The tests click through
//! the real pages, so the real `/static/passkeys.js` talks to the real server.
//!
//! They run whenever `/usr/bin/chromium` exists, and fail when it is missing
//! while `LATCHKEY_TEST_BROWSER=1` (set by `scripts/test.sh` on CI).

use serde_json::Value;

use crate::support::app::TestApp;

use crate::support::browser::*;
use crate::support::PASSWORD;

fn current_amr(account: &Value) -> Vec<String> {
    account["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .find(|s| s["current"] == true)
        .expect("current session")["amr"]
        .as_array()
        .expect("amr")
        .iter()
        .map(|v| v.as_str().expect("str").to_owned())
        .collect()
}

/// Declares a browser test on SQLite and PostgreSQL:
/// `browser_test!(name, |app, browser| { ... })` with `app: &TestApp`, `browser: &Session`.
macro_rules! browser_test {
    ($name:ident, $start:ident, |$app:ident, $browser:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn run(backend: $crate::support::app::Backend) {
                if !chromium_available() {
                    return;
                }
                let Some(app) = TestApp::spawn_localhost(backend).await else {
                    return;
                };
                let browser = Session::$start().await;
                {
                    let $app = &app;
                    let $browser = &browser;
                    $body
                }
                browser.close().await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                run($crate::support::app::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                run($crate::support::app::Backend::Postgres).await;
            }
        }
    };
}

browser_test!(
    register_a_passkey_then_sign_in_with_it_and_no_password,
    without_autofill,
    |app, browser| {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        browser.sign_in_with_password(app, "ada@example.com").await;
        browser.add_passkey(app, "Virtual key").await;
        assert_eq!(
            browser.resident_credentials().await,
            1,
            "a discoverable credential"
        );
        let row = browser
            .eval("document.querySelector('#passkeys tbody tr').innerText")
            .await;
        assert!(
            row.as_str()
                .is_some_and(|r| r.contains("device-bound") && r.contains("never")),
            "{row}"
        );
        browser.sign_out().await;
        assert_eq!(browser.account().await["status"], 401, "signed out");

        // The passkey alone: no email, no password.
        browser.goto(&app.url("/login")).await;
        browser.click("#passkey-sign-in").await;
        browser.wait_for("location.pathname === '/account'").await;
        let account = browser.account().await;
        assert_eq!(account["user"]["email"], "ada@example.com");
        assert_eq!(current_amr(&account), ["hwk", "user", "mfa"]);
        let kinds = app.audit_kinds().await;
        assert!(
            kinds.contains(&"passkey_registered".to_owned()),
            "{kinds:?}"
        );
        let last = latchkey::audit::tail(&app.state.pool, 1)
            .await
            .expect("audit")
            .pop()
            .expect("an event");
        assert_eq!(last.kind, "login_succeeded");
        assert!(last.detail.starts_with("passkey"), "{}", last.detail);
        browser.goto(&app.url("/account/passkeys")).await;
        let row = browser
            .eval("document.querySelector('#passkeys tbody tr').innerText")
            .await;
        assert!(
            row.as_str().is_some_and(|r| !r.contains("never")),
            "last used is recorded: {row}"
        );
    }
);

browser_test!(
    conditional_ui_signs_in_from_the_email_field_autofill,
    with_autofill,
    |app, browser| {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        browser.sign_in_with_password(app, "ada@example.com").await;
        browser.add_passkey(app, "Virtual key").await;
        assert_eq!(
            browser
                .eval("PublicKeyCredential.isConditionalMediationAvailable()")
                .await,
            true,
            "Chromium offers passkey autofill"
        );
        let before = app.audit_kinds().await.len();
        // Sign out: the login page's autofill request is answered by the
        // virtual authenticator (Chromium's virtual environment picks the
        // credential itself, as a person would in the autofill list).
        browser.click("header form[action='/logout'] button").await;
        browser.wait_for("location.pathname === '/account'").await;
        let account = browser.account().await;
        assert_eq!(account["user"]["email"], "ada@example.com");
        assert_eq!(current_amr(&account), ["hwk", "user", "mfa"]);
        let kinds = app.audit_kinds().await;
        assert_eq!(
            kinds[before..],
            ["logout".to_owned(), "login_succeeded".to_owned()],
            "signed out, then in by autofill, nothing in between"
        );
        assert_eq!(
            browser
                .eval("document.getElementById('email') === null")
                .await,
            true,
            "left the login page without anyone typing"
        );
    }
);

/// Signs in with the button; returns the status message the page shows on failure.
async fn refused_sign_in(app: &TestApp, browser: &Session) -> String {
    browser.goto(&app.url("/login")).await;
    browser.click("#passkey-sign-in").await;
    browser
        .wait_for("document.getElementById('passkey-status').className === 'error'")
        .await;
    assert_eq!(browser.path().await, "/login", "still on the login page");
    assert_eq!(browser.account().await["status"], 401, "not signed in");
    browser.status_text().await
}

browser_test!(
    user_presence_verification_and_signature_are_enforced,
    without_autofill,
    |app, browser| {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        browser.sign_in_with_password(app, "ada@example.com").await;
        browser.add_passkey(app, "Virtual key").await;
        browser.sign_out().await;
        let failures_before = app
            .audit_kinds()
            .await
            .iter()
            .filter(|k| *k == "login_failed")
            .count();
        // (bogus signature, UV=0, UP=0, why the audit log says it was refused)
        for (bogus_signature, bad_uv, bad_up, reason) in [
            (false, false, true, "user present bit is not set"),
            (false, true, false, "user verified bit is not set"),
            // An all-zero signature does not even parse (webauthn-rs reports
            // the crypto library's error); a forged one would fail to verify.
            (true, false, false, "OpenSSL"),
        ] {
            browser.override_bits(bogus_signature, bad_uv, bad_up).await;
            let message = refused_sign_in(app, browser).await;
            assert!(
                message.contains("could not sign you in"),
                "UP=0 / UV=0 / bogus signature ({bad_up}/{bad_uv}/{bogus_signature}): {message}"
            );
            let last = latchkey::audit::tail(&app.state.pool, 1)
                .await
                .expect("audit")
                .pop()
                .expect("an event");
            assert_eq!(last.kind, "login_failed");
            assert!(last.detail.contains(reason), "{}", last.detail);
        }
        let failures = app
            .audit_kinds()
            .await
            .iter()
            .filter(|k| *k == "login_failed")
            .count();
        assert_eq!(failures - failures_before, 3, "each refusal is audited");
        // Back to a well-behaved authenticator: it still works.
        browser.override_bits(false, false, false).await;
        browser.goto(&app.url("/login")).await;
        browser.click("#passkey-sign-in").await;
        browser.wait_for("location.pathname === '/account'").await;
    }
);

browser_test!(
    registration_without_user_presence_is_refused,
    without_autofill,
    |app, browser| {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        browser.sign_in_with_password(app, "ada@example.com").await;
        browser.override_bits(false, false, true).await;
        browser.goto(&app.url("/account/passkeys")).await;
        browser.click("#add-passkey").await;
        browser
            .wait_for("document.getElementById('passkey-status').className === 'error'")
            .await;
        let message = browser.status_text().await;
        assert!(message.contains("could not be verified"), "{message}");
        assert_eq!(app.passkey_count().await, 0);
    }
);

browser_test!(
    a_cloned_authenticator_is_refused_and_audited,
    without_autofill,
    |app, browser| {
        use sqlx::Row as _;
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        browser.sign_in_with_password(app, "ada@example.com").await;
        browser.add_passkey(app, "Virtual key").await;
        browser.sign_out().await;
        // The server has seen a higher signature counter than this authenticator
        // will send: the signature is valid, so the key material was copied.
        let row = sqlx::query("SELECT id, credential FROM passkeys")
            .fetch_one(&app.state.pool)
            .await
            .expect("passkey row");
        let id: String = row.try_get("id").expect("id");
        let mut credential: Value =
            serde_json::from_str(&row.try_get::<String, _>("credential").expect("json"))
                .expect("passkey json");
        credential["cred"]["counter"] = Value::from(1000);
        sqlx::query("UPDATE passkeys SET credential = $1 WHERE id = $2")
            .bind(credential.to_string())
            .bind(&id)
            .execute(&app.state.pool)
            .await
            .expect("update");
        let message = refused_sign_in(app, browser).await;
        assert!(message.contains("could not sign you in"), "{message}");
        let kinds = app.audit_kinds().await;
        assert!(
            kinds.contains(&"passkey_clone_suspected".to_owned()),
            "{kinds:?}"
        );
        assert_eq!(kinds.last().map(String::as_str), Some("login_failed"));
    }
);

browser_test!(
    an_unknown_passkey_gets_a_clear_message,
    without_autofill,
    |app, browser| {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        browser.sign_in_with_password(app, "ada@example.com").await;
        browser.add_passkey(app, "Virtual key").await;
        browser.sign_out().await;
        // The account's passkey is removed on the server; the authenticator still has it.
        sqlx::query("DELETE FROM passkeys")
            .execute(&app.state.pool)
            .await
            .expect("delete");
        let message = refused_sign_in(app, browser).await;
        assert!(message.contains("not registered here"), "{message}");
    }
);

browser_test!(
    a_replayed_assertion_is_refused,
    without_autofill,
    |app, browser| {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        browser.sign_in_with_password(app, "ada@example.com").await;
        browser.add_passkey(app, "Virtual key").await;
        browser.sign_out().await;
        // Signing out redirects to /login: wait until that page is the one loaded.
        browser
            .wait_for("document.getElementById('passkey-login') !== null")
            .await;
        // The page's own endpoints, called twice with one signed answer.
        let statuses = browser
            .eval(
                r#"(async () => {
                const csrf = document.getElementById('passkey-login').dataset.csrf;
                const post = (url, body) => fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf }, body: JSON.stringify(body) });
                const started = await (await post('/login/passkey/start', {})).json();
                const b64 = s => Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/')), c => c.charCodeAt(0));
                const enc = b => btoa(String.fromCharCode(...new Uint8Array(b))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
                const pk = started.publicKey;
                const cred = await navigator.credentials.get({ publicKey: { challenge: b64(pk.challenge), rpId: pk.rpId, userVerification: pk.userVerification } });
                const body = { ceremony: started.ceremony, credential: { id: cred.id, rawId: enc(cred.rawId), type: cred.type, extensions: {}, response: {
                    authenticatorData: enc(cred.response.authenticatorData), clientDataJSON: enc(cred.response.clientDataJSON),
                    signature: enc(cred.response.signature), userHandle: enc(cred.response.userHandle) } } };
                const first = await post('/login/passkey/finish', body);
                const second = await post('/login/passkey/finish', body);
                return [first.status, second.status, (await second.json()).error];
            })()"#,
            )
            .await;
        assert_eq!(statuses, serde_json::json!([200, 400, "ceremony_expired"]));
    }
);

browser_test!(
    rename_and_delete_from_the_account_page,
    without_autofill,
    |app, browser| {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        browser.sign_in_with_password(app, "ada@example.com").await;
        browser.add_passkey(app, "First").await;
        // The same authenticator cannot register twice (excludeCredentials).
        browser.click("#add-passkey").await;
        browser
            .wait_for("document.getElementById('passkey-status').className === 'error'")
            .await;
        let message = browser.status_text().await;
        assert!(message.contains("already holds a passkey"), "{message}");
        assert_eq!(app.passkey_count().await, 1);
        // Rename through its form.
        browser
            .eval("document.querySelector('#passkeys tbody tr input[name=name]').value = 'Laptop'; true")
            .await;
        browser
            .click("#passkeys tbody tr form[action$='/rename'] button")
            .await;
        browser
            .wait_for("[...document.querySelectorAll('#passkeys .passkey-name')].map(td => td.textContent).join() === 'Laptop'")
            .await;
        // With a password left, deleting needs no confirmation.
        assert_eq!(
            browser
                .eval("document.querySelector('#passkeys input[name=confirm]') === null")
                .await,
            true
        );
        browser
            .click("#passkeys tbody tr form[action$='/delete'] button")
            .await;
        browser
            .wait_for("document.getElementById('no-passkeys') !== null")
            .await;
        assert_eq!(app.passkey_count().await, 0);
        // Without a password, the last passkey is the only way in: a warning,
        // and deleting it needs the confirmation box.
        browser.add_passkey(app, "Only").await;
        sqlx::query("UPDATE users SET password_hash = NULL")
            .execute(&app.state.pool)
            .await
            .expect("remove password");
        browser.goto(&app.url("/account/passkeys")).await;
        let text = browser
            .eval("document.getElementById('passkeys').innerText")
            .await;
        assert!(
            text.as_str()
                .is_some_and(|t| t.contains("only way to sign in")),
            "{text}"
        );
        let unconfirmed = browser
            .eval(
                "(() => { const f = document.querySelector(\"#passkeys form[action$='/delete']\"); \
                 return fetch(f.action, { method: 'POST', body: new URLSearchParams({ csrf_token: f.csrf_token.value }) }).then(r => r.status); })()",
            )
            .await;
        assert_eq!(unconfirmed, 409);
        assert_eq!(
            app.passkey_count().await,
            1,
            "not deleted without confirmation"
        );
        browser
            .eval("document.querySelector('#passkeys input[name=confirm]').checked = true; true")
            .await;
        browser
            .click("#passkeys tbody tr form[action$='/delete'] button")
            .await;
        browser
            .wait_for("document.getElementById('no-passkeys') !== null")
            .await;
        assert_eq!(app.passkey_count().await, 0);
        let kinds = app.audit_kinds().await;
        for kind in ["passkey_renamed", "passkey_deleted"] {
            assert!(kinds.contains(&kind.to_owned()), "{kind}: {kinds:?}");
        }
    }
);

browser_test!(
    an_old_sign_in_is_sent_to_sign_in_again_before_adding_a_passkey,
    without_autofill,
    |app, browser| {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        browser.sign_in_with_password(app, "ada@example.com").await;
        app.clock.advance(16 * 60);
        browser.goto(&app.url("/account/passkeys")).await;
        browser.click("#add-passkey").await;
        browser
            .wait_for("location.pathname === '/login' && location.search.includes('reauth=1')")
            .await;
        assert_eq!(
            browser.path().await,
            "/login?reauth=1&next=%2Faccount%2Fpasskeys"
        );
        assert_eq!(
            browser.resident_credentials().await,
            0,
            "no credential was created"
        );
    }
);

browser_test!(
    clear_messages_without_webauthn_or_when_the_user_cancels,
    without_autofill,
    |app, browser| {
        // A browser without WebAuthn: no passkey button, a sentence instead.
        let old = Session::start(&["delete window.PublicKeyCredential;"]).await;
        old.goto(&app.url("/login")).await;
        old.wait_for("document.getElementById('passkey-status').textContent !== ''")
            .await;
        assert!(old
            .status_text()
            .await
            .contains("does not support passkeys"));
        assert_eq!(
            old.eval("document.getElementById('passkey-sign-in').hidden")
                .await,
            true
        );
        old.close().await;
        // The person dismisses the browser's passkey dialog (NotAllowedError).
        let cancelling = Session::start(&[
            WITHOUT_AUTOFILL,
            "navigator.credentials.get = () => Promise.reject(new DOMException('The operation either timed out or was not allowed.', 'NotAllowedError'));",
        ])
        .await;
        cancelling.goto(&app.url("/login")).await;
        cancelling.click("#passkey-sign-in").await;
        cancelling
            .wait_for("document.getElementById('passkey-status').className === 'error'")
            .await;
        assert!(
            cancelling.status_text().await.contains("cancelled"),
            "{}",
            cancelling.status_text().await
        );
        cancelling.close().await;
        // The real browser of this test, for completeness: the button is offered.
        browser.goto(&app.url("/login")).await;
        browser
            .wait_for("!document.getElementById('passkey-sign-in').hidden")
            .await;
    }
);

browser_test!(
    a_disabled_account_cannot_sign_in_with_its_passkey,
    without_autofill,
    |app, browser| {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        browser.sign_in_with_password(app, "ada@example.com").await;
        browser.add_passkey(app, "Virtual key").await;
        browser.sign_out().await;
        sqlx::query("UPDATE users SET disabled = 1")
            .execute(&app.state.pool)
            .await
            .expect("disable");
        let message = refused_sign_in(app, browser).await;
        assert!(message.contains("could not sign you in"), "{message}");
        let last = latchkey::audit::tail(&app.state.pool, 1)
            .await
            .expect("audit")
            .pop()
            .expect("an event");
        assert_eq!(
            (last.kind.as_str(), last.detail.as_str()),
            ("login_failed", "passkey: account disabled")
        );
    }
);

browser_test!(
    a_passkey_is_the_second_step_after_a_password,
    without_autofill,
    |app, browser| {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        browser.sign_in_with_password(app, "ada@example.com").await;
        browser.add_passkey(app, "Virtual key").await;
        browser.sign_out().await;

        // The password alone is no longer enough: the second step asks for the passkey.
        browser
            .password_then_second_step(app, "ada@example.com")
            .await;
        assert_eq!(browser.account().await["status"], 401, "no session yet");
        assert_eq!(
            browser
                .eval("document.getElementById('code') === null")
                .await,
            true,
            "no code field without an authenticator app"
        );
        browser.click("#passkey-second-factor").await;
        browser.wait_for("location.pathname === '/account'").await;
        let account = browser.account().await;
        assert_eq!(account["user"]["email"], "ada@example.com");
        assert_eq!(current_amr(&account), ["pwd", "hwk", "user", "mfa"]);
        let last = latchkey::audit::tail(&app.state.pool, 1)
            .await
            .expect("audit")
            .pop()
            .expect("an event");
        assert_eq!(
            (last.kind.as_str(), last.detail.as_str()),
            ("login_succeeded", "password + passkey")
        );

        // A bad signature at the second step is refused, audited and counted.
        browser.sign_out().await;
        browser
            .password_then_second_step(app, "ada@example.com")
            .await;
        browser.override_bits(true, false, false).await;
        browser.click("#passkey-second-factor").await;
        browser
            .wait_for("document.getElementById('passkey-status').className === 'error'")
            .await;
        assert!(
            browser
                .status_text()
                .await
                .contains("could not sign you in"),
            "{}",
            browser.status_text().await
        );
        assert!(browser.path().await.starts_with("/login/mfa?"));
        assert_eq!(browser.account().await["status"], 401, "still signed out");
        let last = latchkey::audit::tail(&app.state.pool, 1)
            .await
            .expect("audit")
            .pop()
            .expect("an event");
        assert_eq!(last.kind, "login_failed");
        assert!(
            last.detail.starts_with("second factor passkey"),
            "{}",
            last.detail
        );
        // The same half-done sign-in can still be completed with a good answer.
        browser.override_bits(false, false, false).await;
        browser.click("#passkey-second-factor").await;
        browser.wait_for("location.pathname === '/account'").await;

        // Lost the device: the operator's reset (`latchkey user reset-mfa`)
        // removes the passkeys too, and the password alone signs in again.
        let user = latchkey::identity::find(&app.state.pool, "ada@example.com")
            .await
            .expect("user");
        latchkey::mfa::reset_all(&app.state.pool, &user.id)
            .await
            .expect("reset");
        assert_eq!(app.passkey_count().await, 0);
        browser.sign_out().await;
        browser.sign_in_with_password(app, "ada@example.com").await;
        assert_eq!(current_amr(&browser.account().await), ["pwd"]);
    }
);

browser_test!(
    failed_passkey_sign_ins_lock_the_account,
    without_autofill,
    |app, browser| {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        browser.sign_in_with_password(app, "ada@example.com").await;
        browser.add_passkey(app, "Virtual key").await;
        browser.sign_out().await;
        // Five bad signatures (the per-account limit): the fifth locks the account.
        browser.override_bits(true, false, false).await;
        for _ in 0..5 {
            let message = refused_sign_in(app, browser).await;
            assert!(message.contains("could not sign you in"), "{message}");
        }
        // Now even a good passkey is refused until the lock ends.
        browser.override_bits(false, false, false).await;
        let message = refused_sign_in(app, browser).await;
        assert!(message.contains("Too many failed sign-ins"), "{message}");
        let kinds = app.audit_kinds().await;
        assert_eq!(kinds.last().map(String::as_str), Some("login_locked_out"));
        // The lock ends: the passkey works again.
        app.clock.advance(31);
        browser.goto(&app.url("/login")).await;
        browser.click("#passkey-sign-in").await;
        browser.wait_for("location.pathname === '/account'").await;
    }
);

browser_test!(
    deleting_a_passkey_needs_a_recent_sign_in,
    without_autofill,
    |app, browser| {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        browser.sign_in_with_password(app, "ada@example.com").await;
        browser.add_passkey(app, "Virtual key").await;
        // 16 minutes later (the session is alive, the sign-in is old).
        app.clock.advance(16 * 60);
        browser.goto(&app.url("/account/passkeys")).await;
        browser
            .click("#passkeys tbody tr form[action$='/delete'] button")
            .await;
        browser
            .wait_for("location.pathname === '/login' && location.search.includes('reauth=1')")
            .await;
        assert_eq!(app.passkey_count().await, 1, "not deleted");
    }
);
