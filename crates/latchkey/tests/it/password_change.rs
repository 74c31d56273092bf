//! Self-service password change at `/account/password`.

use crate::backend_test;
use crate::support::app::*;

const OLD: &str = "correct horse battery";
const NEW: &str = "a brand new passphrase";

async fn change(
    app: &TestApp,
    client: &reqwest::Client,
    current: &str,
    new: &str,
    end_others: bool,
) -> reqwest::Response {
    let html = client
        .get(app.url("/account/password"))
        .header("accept", "text/html")
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    let csrf = extract_input(&html, "csrf_token").expect("csrf");
    let mut form = vec![
        ("csrf_token", csrf.as_str()),
        ("current_password", current),
        ("new_password", new),
    ];
    if end_others {
        form.push(("end_other_sessions", "yes"));
    }
    client
        .post(app.url("/account/password"))
        .form(&form)
        .send()
        .await
        .expect("post")
}

backend_test!(
    changing_the_password_needs_the_current_one_and_ends_other_sessions,
    |app: TestApp| async move {
        app.create_user("ada@example.com", OLD, &[]).await;
        let phone = new_client();
        assert_eq!(
            app.login_with(&phone, "ada@example.com", OLD)
                .await
                .status(),
            303
        );
        let laptop = new_client();
        assert_eq!(
            app.login_with(&laptop, "ada@example.com", OLD)
                .await
                .status(),
            303
        );

        let r = change(&app, &laptop, "not my password", NEW, true).await;
        assert_eq!(r.status(), 400);
        assert!(r
            .text()
            .await
            .expect("html")
            .contains("current password is not correct"));
        let r = change(&app, &laptop, OLD, "password1", true).await;
        assert_eq!(r.status(), 400, "the policy applies");
        assert!(r.text().await.expect("html").contains("most common"));
        // Nothing changed so far: the old password still signs in.
        assert_eq!(
            app.login_with(&new_client(), "ada@example.com", OLD)
                .await
                .status(),
            303
        );

        let r = change(&app, &laptop, OLD, NEW, true).await;
        assert_eq!(r.status(), 200);
        assert!(r.text().await.expect("html").contains("Password changed"));
        assert!(app
            .audit_kinds()
            .await
            .contains(&"password_changed".to_owned()));
        // The other sessions are gone; this one stays.
        assert_eq!(
            phone
                .get(app.url("/account/sessions"))
                .send()
                .await
                .expect("get")
                .status(),
            401
        );
        assert_eq!(
            laptop
                .get(app.url("/account/sessions"))
                .send()
                .await
                .expect("get")
                .status(),
            200
        );
        assert_eq!(
            app.login_with(&new_client(), "ada@example.com", OLD)
                .await
                .status(),
            401
        );
        assert_eq!(
            app.login_with(&new_client(), "ada@example.com", NEW)
                .await
                .status(),
            303
        );
    }
);

backend_test!(
    password_change_refuses_a_missing_csrf_token_and_anonymous_callers,
    |app: TestApp| async move {
        app.create_user("ada@example.com", OLD, &[]).await;
        let r = new_client()
            .post(app.url("/account/password"))
            .header("accept", "application/json")
            .form(&[("current_password", OLD), ("new_password", NEW)])
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 401);
        let b = new_client();
        app.login_with(&b, "ada@example.com", OLD).await;
        let r = b
            .post(app.url("/account/password"))
            .form(&[("current_password", OLD), ("new_password", NEW)])
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 403);
        assert_eq!(
            app.login_with(&new_client(), "ada@example.com", OLD)
                .await
                .status(),
            303,
            "unchanged"
        );
    }
);

backend_test!(
    a_handed_out_password_session_is_refused_by_apis_too_except_the_ways_to_replace_it,
    |app: TestApp| async move {
        let user = app.create_user("ada@example.com", OLD, &[]).await;
        latchkey::identity::set_must_change_password(
            &app.state.pool,
            &user.id,
            true,
            app.clock.now_secs(),
        )
        .await
        .expect("flag");
        let script = new_client();
        assert_eq!(
            app.login_with(&script, "ada@example.com", OLD)
                .await
                .status(),
            303
        );
        // JSON (no Accept: text/html) on routes a browser is redirected from.
        for (method, path) in [
            (reqwest::Method::GET, "/account/sessions"),
            (reqwest::Method::GET, "/account/mfa"),
            (reqwest::Method::POST, "/account/mfa/totp/start"),
            (reqwest::Method::POST, "/account/sessions/revoke-others"),
            (reqwest::Method::GET, "/admin/api/users"),
        ] {
            let r = script
                .request(method.clone(), app.url(path))
                .header("accept", "application/json")
                .send()
                .await
                .expect("request");
            assert_eq!(r.status(), 403, "{method} {path}");
            let body: serde_json::Value = r.json().await.expect("json");
            assert_eq!(
                body["error"], "password_change_required",
                "{method} {path}: {body}"
            );
        }
        // The allowlist: reading the account (it shows why), the passkey
        // pages and the password page.
        let account: serde_json::Value = script
            .get(app.url("/account"))
            .header("accept", "application/json")
            .send()
            .await
            .expect("account")
            .json()
            .await
            .expect("json");
        assert_eq!(account["user"]["must_change_password"], true, "{account}");
        for path in ["/account/passkeys", "/account/password"] {
            let r = script
                .get(app.url(path))
                .header("accept", "application/json")
                .send()
                .await
                .expect("get");
            assert_eq!(r.status(), 200, "{path}");
        }
        // Once the password is replaced, the same requests go through.
        let r = change(&app, &script, OLD, NEW, false).await;
        assert_eq!(r.status(), 200);
        let r = script
            .get(app.url("/account/sessions"))
            .header("accept", "application/json")
            .send()
            .await
            .expect("sessions");
        assert_eq!(r.status(), 200);
    }
);

backend_test!(
    a_keycloak_user_with_update_password_is_imported_flagged_and_asked_for_a_new_password,
    |app: TestApp| async move {
        use latchkey::identity::import::{self, ImportFormat};
        // The example export's Katherine, with Keycloak's UPDATE_PASSWORD.
        let mut export: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../examples/keycloak-users.json"),
            )
            .expect("example"),
        )
        .expect("json");
        let users = export["users"].as_array_mut().expect("users");
        users.retain(|u| u["email"] == "katherine@example.com");
        users[0]["requiredActions"] = serde_json::json!(["UPDATE_PASSWORD"]);
        let parsed = import::parse(&export.to_string(), ImportFormat::Keycloak).expect("parse");
        import::import(&app.state.pool, &parsed, app.clock.now_secs())
            .await
            .expect("import");
        let stored = latchkey::identity::find(&app.state.pool, "katherine@example.com")
            .await
            .expect("imported");
        assert!(stored.must_change_password);
        let browser = new_client();
        let r = app
            .login_with(&browser, "katherine@example.com", "a keycloak passphrase")
            .await;
        assert_eq!(r.status(), 303);
        let account = browser
            .get(app.url("/account"))
            .header("accept", "text/html")
            .send()
            .await
            .expect("account");
        assert_eq!(account.status(), 303);
        assert_eq!(
            account
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok()),
            Some("/account/password?required=1")
        );
    }
);
