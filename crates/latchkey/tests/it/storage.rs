//! Storage behaviour: idempotent migrations, all-or-nothing multi-row
//! changes (invariant 11), and a database that goes away and comes back
//! while the server keeps running.

use std::time::Duration;

use serde_json::Value;
use sqlx::Connection as _;
use sqlx::Row as _;

use crate::backend_test;
use crate::support::app::*;
use latchkey::identity::import::{self, ImportError, ImportFormat};

use crate::support::PASSWORD;

async fn count_rows(app: &TestApp, sql: &str, bind: &str) -> i64 {
    sqlx::query(sql)
        .bind(bind)
        .fetch_one(&app.state.pool)
        .await
        .expect("count")
        .try_get("n")
        .expect("n")
}

async fn total_roles(app: &TestApp) -> i64 {
    sqlx::query("SELECT COUNT(*) AS n FROM user_roles")
        .fetch_one(&app.state.pool)
        .await
        .expect("count")
        .try_get("n")
        .expect("n")
}

backend_test!(migrations_are_idempotent, |app: TestApp| async move {
    // The server already migrated at start-up; data written since must survive.
    let ada = app
        .create_user("ada@example.com", PASSWORD, &["admin"])
        .await;
    let known = latchkey::store::known_migrations().count() as i64;
    assert!(known >= 1);

    latchkey::store::migrate(&app.state.pool)
        .await
        .expect("second run on the same pool");
    latchkey::store::migrate(&app.state.pool)
        .await
        .expect("third run on the same pool");
    // A separate pool on the same database (another instance starting up).
    let other = latchkey::store::connect(&app.state.config.database)
        .await
        .expect("connect");
    latchkey::store::migrate(&other)
        .await
        .expect("run from another pool");
    other.close().await;

    let applied: i64 = sqlx::query("SELECT COUNT(*) AS n FROM _sqlx_migrations")
        .fetch_one(&app.state.pool)
        .await
        .expect("migrations table")
        .try_get("n")
        .expect("n");
    assert_eq!(applied, known, "each migration recorded exactly once");
    let found = latchkey::identity::find(&app.state.pool, "ada@example.com")
        .await
        .expect("user survives");
    assert_eq!(found.id, ada.id);
    assert!(found.has_role("admin"));
    assert_eq!(
        app.login("ada@example.com", PASSWORD).await.status(),
        303,
        "the server keeps working on the re-migrated database"
    );
});

backend_test!(
    import_with_a_duplicate_of_an_existing_email_inserts_nothing,
    |app: TestApp| async move {
        app.create_user("taken@example.com", PASSWORD, &[]).await;
        let roles_before = total_roles(&app).await;
        let users = import::parse(
            r#"[
                {"email": "new@example.com", "name": "New", "roles": ["admin", "support"]},
                {"email": "Taken@Example.com", "name": "Clash"},
                {"email": "third@example.com"}
            ]"#,
            ImportFormat::Json,
        )
        .expect("the file itself is valid");
        assert_eq!(users.len(), 3);

        let err = import::import(&app.state.pool, &users, app.clock.now_secs())
            .await
            .expect_err("record 2 clashes with an existing user");
        match &err {
            ImportError::Duplicate { record, email } => {
                assert_eq!(*record, 2);
                assert_eq!(email, "taken@example.com");
            }
            other => panic!("expected a duplicate error, got {other:?}"),
        }
        assert!(err.to_string().contains("record 2"), "{err}");

        // Record 1 was inserted inside the transaction, then rolled back.
        let new = latchkey::identity::find_by_email(
            &app.state.pool,
            &latchkey::identity::Email::parse("new@example.com").expect("email"),
        )
        .await
        .expect("lookup");
        assert!(new.is_none(), "record 1 must not survive a failed import");
        assert_eq!(
            latchkey::identity::count(&app.state.pool)
                .await
                .expect("count"),
            1
        );
        assert_eq!(total_roles(&app).await, roles_before, "no orphan roles");
        // The clashing user is untouched.
        let taken = latchkey::identity::find(&app.state.pool, "taken@example.com")
            .await
            .expect("still there");
        assert_eq!(taken.display_name, "");

        // The pool is healthy after the rollback, and a clean file imports whole.
        let ids = import::import(
            &app.state.pool,
            &[users[0].clone(), users[2].clone()],
            app.clock.now_secs(),
        )
        .await
        .expect("clean import");
        assert_eq!(ids.len(), 2);
        let new = latchkey::identity::find(&app.state.pool, "new@example.com")
            .await
            .expect("imported");
        assert!(new.has_role("admin") && new.has_role("support"));
    }
);

backend_test!(
    deleting_a_user_removes_their_roles_and_sessions,
    |app: TestApp| async move {
        let ada = app
            .create_user("ada@example.com", PASSWORD, &["admin", "support"])
            .await;
        let bob = app
            .create_user("bob@example.com", PASSWORD, &["support"])
            .await;
        let laptop = new_client();
        assert_eq!(
            app.login_with(&laptop, "ada@example.com", PASSWORD)
                .await
                .status(),
            303
        );
        let phone = new_client();
        assert_eq!(
            app.login_with(&phone, "ada@example.com", PASSWORD)
                .await
                .status(),
            303
        );
        let bobs = new_client();
        assert_eq!(
            app.login_with(&bobs, "bob@example.com", PASSWORD)
                .await
                .status(),
            303
        );
        let roles_of = "SELECT COUNT(*) AS n FROM user_roles WHERE user_id = $1";
        let sessions_of = "SELECT COUNT(*) AS n FROM sessions WHERE user_id = $1";
        assert_eq!(count_rows(&app, roles_of, &ada.id).await, 2);
        assert_eq!(count_rows(&app, sessions_of, &ada.id).await, 2);

        latchkey::cascade::delete_user(&app.state.pool, &ada.id, app.clock.now_secs())
            .await
            .expect("delete");

        assert_eq!(count_rows(&app, roles_of, &ada.id).await, 0);
        assert_eq!(count_rows(&app, sessions_of, &ada.id).await, 0);
        assert_eq!(
            count_rows(
                &app,
                "SELECT COUNT(*) AS n FROM users WHERE id = $1",
                &ada.id
            )
            .await,
            0
        );
        for client in [&laptop, &phone] {
            let r = client
                .get(app.url("/account/sessions"))
                .send()
                .await
                .expect("get");
            assert_eq!(r.status(), 401, "a deleted user's cookie is dead");
        }
        // Bob keeps everything.
        assert_eq!(count_rows(&app, roles_of, &bob.id).await, 1);
        assert_eq!(count_rows(&app, sessions_of, &bob.id).await, 1);
        let r = bobs
            .get(app.url("/account/sessions"))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200);

        // Deleting again: a clear error, nothing else removed.
        let err = latchkey::cascade::delete_user(&app.state.pool, &ada.id, app.clock.now_secs())
            .await
            .expect_err("already gone");
        assert!(
            matches!(err, latchkey::identity::IdentityError::UnknownUser(_)),
            "{err:?}"
        );
        assert_eq!(
            latchkey::identity::count(&app.state.pool)
                .await
                .expect("count"),
            1
        );
        // The email is free again.
        app.create_user("ada@example.com", PASSWORD, &[]).await;
    }
);

/// The database name of a PostgreSQL URL.
fn database_name(url: &str) -> String {
    url::Url::parse(url)
        .expect("database url")
        .path()
        .trim_start_matches('/')
        .to_owned()
}

/// Forbids new connections to `name` and ends the existing ones, as a
/// failover or a network partition would.
async fn cut_off(admin: &mut sqlx::PgConnection, name: &str) {
    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .execute(&mut *admin)
        .await
        .expect("disallow connections");
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(name)
        .execute(&mut *admin)
        .await
        .expect("terminate backends");
}

async fn reconnect(admin: &mut sqlx::PgConnection, name: &str) {
    sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .execute(&mut *admin)
        .await
        .expect("allow connections");
}

/// Asserts a 503 `database_unavailable` JSON answer with `Retry-After`.
async fn assert_unavailable(what: &str, response: reqwest::Response) {
    assert_eq!(response.status(), 503, "{what}");
    let retry: u64 = response
        .headers()
        .get("retry-after")
        .unwrap_or_else(|| panic!("{what}: Retry-After"))
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(retry > 0, "{what}");
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["error"], "database_unavailable", "{what}: {body}");
    assert!(body["message"].is_string(), "{what}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_answers_503_and_recovers_without_restart() {
    let Some(admin_url) = postgres_url() else {
        return;
    };
    let Some(app) = TestApp::spawn_with(Backend::Postgres, |c| {
        c.database.acquire_timeout_secs = 1;
    })
    .await
    else {
        return;
    };
    let name = database_name(&app.database_url);
    let ada = app.create_user("ada@example.com", PASSWORD, &[]).await;
    let browser = new_client();
    assert_eq!(
        app.login_with(&browser, "ada@example.com", PASSWORD)
            .await
            .status(),
        303
    );
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("admin connection");
    cut_off(&mut admin, &name).await;

    let ready = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.expect("json");
    assert_eq!(body["error"], "database_unavailable");
    let health = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(
        health.status(),
        200,
        "liveness never depends on the database"
    );

    let login = new_client()
        .post(app.url("/login"))
        .json(&serde_json::json!({"email": "ada@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert!(session_cookie_of(&login).is_none());
    assert_unavailable("POST /login (JSON)", login).await;
    let fresh = new_client();
    let csrf = app.login_csrf(&fresh).await;
    let login = fresh
        .post(app.url("/login"))
        .form(&[
            ("email", "ada@example.com"),
            ("password", PASSWORD),
            ("csrf_token", csrf.as_str()),
        ])
        .send()
        .await
        .expect("login form");
    assert_eq!(login.status(), 503, "POST /login (form)");
    assert!(login.headers().contains_key("retry-after"));
    assert!(session_cookie_of(&login).is_none());
    let sessions = browser
        .get(app.url("/account/sessions"))
        .send()
        .await
        .expect("sessions");
    assert_unavailable("GET /account/sessions", sessions).await;
    // The token endpoint answers in its own (RFC 6749) shape, with Retry-After too.
    let token = app
        .client
        .post(app.url("/oauth2/token"))
        .basic_auth("some-client", Some("some-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token");
    assert_eq!(token.status(), 503, "POST /oauth2/token");
    assert_eq!(
        token
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5"),
        "POST /oauth2/token: Retry-After"
    );
    let body: Value = token.json().await.expect("JSON body");
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");

    reconnect(&mut admin, &name).await;
    // The pool reconnects by itself; wait (bounded) for readiness to return.
    let mut ready = false;
    for _ in 0..100 {
        let r = app
            .client
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("readyz");
        if r.status() == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "/readyz back to 200 after the database returned");

    // The session from before the outage is intact; the failed sign-ins left
    // nothing behind: one user, one session.
    let r = browser
        .get(app.url("/account/sessions"))
        .send()
        .await
        .expect("sessions");
    assert_eq!(r.status(), 200);
    let listed: Value = r.json().await.expect("json");
    assert_eq!(listed["sessions"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        latchkey::identity::count(&app.state.pool)
            .await
            .expect("count"),
        1
    );
    assert_eq!(
        count_rows(
            &app,
            "SELECT COUNT(*) AS n FROM sessions WHERE user_id = $1",
            &ada.id
        )
        .await,
        1,
        "no half-written session from the failed sign-ins"
    );
    let again = new_client();
    assert_eq!(
        app.login_with(&again, "ada@example.com", PASSWORD)
            .await
            .status(),
        303,
        "sign-in works again without a restart"
    );
    app.stop().await;
}
