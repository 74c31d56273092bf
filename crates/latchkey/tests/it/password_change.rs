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
