//! Session lifecycle: idle and absolute expiry, the per-user limit, listing
//! and revoking one's own sessions, and the ways an operator ends them
//! (disabling a user, `latchkey user logout-all`). Time moves with the
//! manual clock, never with sleeps.

use serde_json::Value;
use sqlx::Row as _;

use crate::backend_test;
use crate::support::app::*;

use crate::support::PASSWORD;
/// `session.idle_timeout_secs` and `session.absolute_lifetime_secs` defaults.
const IDLE: i64 = 1800;
const ABSOLUTE: i64 = 43200;

/// A fresh browser (own cookie jar) signed in as `email`.
async fn signed_in(app: &TestApp, email: &str) -> reqwest::Client {
    let client = new_client();
    let response = app.login_with(&client, email, PASSWORD).await;
    assert_eq!(response.status(), 303, "sign-in of {email} succeeds");
    client
}

/// `GET /account/sessions` as `client`: the status code.
async fn sessions_status(app: &TestApp, client: &reqwest::Client) -> u16 {
    client
        .get(app.url("/account/sessions"))
        .send()
        .await
        .expect("get sessions")
        .status()
        .as_u16()
}

/// `GET /account/sessions` as `client`: the listed sessions (must be 200).
async fn sessions_of(app: &TestApp, client: &reqwest::Client) -> Vec<Value> {
    let response = client
        .get(app.url("/account/sessions"))
        .send()
        .await
        .expect("get sessions");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    body["sessions"].as_array().expect("sessions array").clone()
}

/// The handle of the session `client` is signed in with.
async fn current_session(app: &TestApp, client: &reqwest::Client) -> Value {
    let sessions = sessions_of(app, client).await;
    let current: Vec<_> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(
        current.len(),
        1,
        "exactly one session is the current one: {sessions:?}"
    );
    current[0].clone()
}

async fn current_handle(app: &TestApp, client: &reqwest::Client) -> String {
    current_session(app, client).await["handle"]
        .as_str()
        .expect("handle")
        .to_owned()
}

fn handles(sessions: &[Value]) -> Vec<String> {
    let mut handles: Vec<String> = sessions
        .iter()
        .map(|s| s["handle"].as_str().expect("handle").to_owned())
        .collect();
    handles.sort();
    handles
}

/// Rows in the sessions table with this handle (0 or 1), expired or not.
async fn stored_rows_with_handle(app: &TestApp, handle: &str) -> i64 {
    sqlx::query("SELECT COUNT(*) AS n FROM sessions WHERE handle = $1")
        .bind(handle)
        .fetch_one(&app.state.pool)
        .await
        .expect("count")
        .try_get("n")
        .expect("n")
}

/// Rows in the sessions table for this user, expired or not.
async fn stored_sessions_of_user(app: &TestApp, user_id: &str) -> i64 {
    sqlx::query("SELECT COUNT(*) AS n FROM sessions WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(&app.state.pool)
        .await
        .expect("count")
        .try_get("n")
        .expect("n")
}

backend_test!(
    idle_session_expires_and_activity_extends_it,
    |app: TestApp| async move {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        let t0 = app.clock.now_secs();
        let client = signed_in(&app, "ada@example.com").await;
        let handle = current_handle(&app, &client).await;

        // One second before the idle timeout the session is still alive, and
        // this request counts as activity: last_seen moves to now.
        app.clock.advance(IDLE - 1);
        let session = current_session(&app, &client).await;
        assert_eq!(session["last_seen_at"], t0 + IDLE - 1, "{session}");
        assert_eq!(session["handle"], handle.as_str());

        // Past the original idle deadline: alive thanks to that activity. Less
        // than a minute after the last write, last_seen is not rewritten.
        app.clock.advance(30);
        let session = current_session(&app, &client).await;
        assert_eq!(
            session["last_seen_at"],
            t0 + IDLE - 1,
            "last_seen is written at most once a minute: {session}"
        );

        // A full idle timeout after the last recorded activity: the session is
        // over, the API says "who are you?", and the row is deleted.
        app.clock.set(t0 + IDLE - 1 + IDLE);
        let response = client
            .get(app.url("/account/sessions"))
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), 401);
        assert!(response.headers().contains_key("www-authenticate"));
        assert_eq!(stored_rows_with_handle(&app, &handle).await, 0);
        // Deleted, not merely judged expired: even a clock set back to a
        // moment when the session was alive does not revive it.
        app.clock.set(t0 + 10);
        assert_eq!(sessions_status(&app, &client).await, 401);
    }
);

backend_test!(
    idle_session_without_any_activity_ends_at_the_idle_timeout,
    |app: TestApp| async move {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        let client = signed_in(&app, "ada@example.com").await;
        let handle = current_handle(&app, &client).await;
        app.clock.advance(IDLE);
        assert_eq!(sessions_status(&app, &client).await, 401);
        assert_eq!(stored_rows_with_handle(&app, &handle).await, 0);
    }
);

backend_test!(
    active_session_ends_at_the_absolute_lifetime,
    |app: TestApp| async move {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        let t0 = app.clock.now_secs();
        let client = signed_in(&app, "ada@example.com").await;
        let handle = current_handle(&app, &client).await;

        // A request every four minutes keeps the session from going idle...
        let step = 240;
        while app.clock.now_secs() + step < t0 + ABSOLUTE {
            app.clock.advance(step);
            let now = app.clock.now_secs();
            assert_eq!(
                sessions_status(&app, &client).await,
                200,
                "still signed in {}s after sign-in",
                now - t0
            );
        }
        // ...up to the last second of its lifetime, which activity never extends.
        app.clock.set(t0 + ABSOLUTE - 1);
        let session = current_session(&app, &client).await;
        assert_eq!(session["expires_at"], t0 + ABSOLUTE, "{session}");
        assert_eq!(session["created_at"], t0);

        app.clock.set(t0 + ABSOLUTE);
        assert_eq!(
            sessions_status(&app, &client).await,
            401,
            "12 hours after sign-in the session ends however active it is"
        );
        assert_eq!(stored_rows_with_handle(&app, &handle).await, 0);
        // Signing in again gives a new session with a new lifetime.
        let again = signed_in(&app, "ada@example.com").await;
        assert_eq!(
            current_session(&app, &again).await["expires_at"],
            t0 + 2 * ABSOLUTE
        );
    }
);

backend_test!(
    third_sign_in_evicts_the_oldest_session_when_max_per_user_is_two,
    config = |c: &mut latchkey::Config| c.session.max_per_user = 2,
    |app: TestApp| async move {
        let ada = app.create_user("ada@example.com", PASSWORD, &[]).await;
        app.create_user("bob@example.com", PASSWORD, &[]).await;
        let bob = signed_in(&app, "bob@example.com").await;

        let first = signed_in(&app, "ada@example.com").await;
        app.clock.advance(1);
        let second = signed_in(&app, "ada@example.com").await;
        app.clock.advance(1);
        // Two sessions is the limit: both work.
        assert_eq!(sessions_status(&app, &first).await, 200);
        assert_eq!(sessions_status(&app, &second).await, 200);
        app.clock.advance(1);
        let third = signed_in(&app, "ada@example.com").await;

        assert_eq!(
            sessions_status(&app, &first).await,
            401,
            "the oldest session was ended"
        );
        assert_eq!(sessions_status(&app, &second).await, 200);
        assert_eq!(sessions_status(&app, &third).await, 200);
        assert_eq!(stored_sessions_of_user(&app, &ada.id).await, 2);
        assert_eq!(sessions_of(&app, &third).await.len(), 2);
        assert_eq!(
            sessions_status(&app, &bob).await,
            200,
            "another user's session is not counted against ada's limit"
        );
    }
);

backend_test!(
    account_lists_only_my_own_sessions,
    |app: TestApp| async move {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        app.create_user("bob@example.com", PASSWORD, &[]).await;
        let ada1 = signed_in(&app, "ada@example.com").await;
        app.clock.advance(5);
        let ada2 = signed_in(&app, "ada@example.com").await;
        let bob = signed_in(&app, "bob@example.com").await;
        let ada1_handle = current_handle(&app, &ada1).await;
        let ada2_handle = current_handle(&app, &ada2).await;
        let bob_handle = current_handle(&app, &bob).await;

        let listed = sessions_of(&app, &ada1).await;
        let mut expected = vec![ada1_handle.clone(), ada2_handle.clone()];
        expected.sort();
        assert_eq!(handles(&listed), expected);
        // Newest first, and the current one is marked.
        assert_eq!(listed[0]["handle"], ada2_handle.as_str());
        assert_eq!(listed[0]["current"], false);
        assert_eq!(listed[1]["current"], true);
        assert!(
            listed.iter().all(|s| s.get("id_hash").is_none()),
            "the stored id hash is never shown: {listed:?}"
        );

        // The JSON form of /account agrees, and so does the page.
        let account: Value = ada1
            .get(app.url("/account"))
            .header("accept", "application/json")
            .send()
            .await
            .expect("account")
            .json()
            .await
            .expect("json");
        assert_eq!(
            handles(account["sessions"].as_array().expect("sessions")),
            expected
        );
        assert_eq!(account["user"]["email"], "ada@example.com");
        let html = ada1
            .get(app.url("/account"))
            .header("accept", "text/html")
            .send()
            .await
            .expect("page")
            .text()
            .await
            .expect("html");
        assert!(
            html.contains(&format!("/account/sessions/{ada2_handle}/revoke")),
            "the page offers to end my other session"
        );
        assert!(
            !html.contains(&format!("/account/sessions/{ada1_handle}/revoke")),
            "the current session is ended by signing out, not listed for revocation"
        );
        assert!(
            !html.contains(&bob_handle),
            "bob's session is not on ada's page"
        );

        let bobs = sessions_of(&app, &bob).await;
        assert_eq!(handles(&bobs), vec![bob_handle]);
    }
);

backend_test!(
    revoke_one_of_my_sessions_by_form_and_by_json,
    |app: TestApp| async move {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        let me = signed_in(&app, "ada@example.com").await;
        let laptop = signed_in(&app, "ada@example.com").await;
        let phone = signed_in(&app, "ada@example.com").await;
        let laptop_handle = current_handle(&app, &laptop).await;
        let phone_handle = current_handle(&app, &phone).await;
        let csrf = app.account_csrf(&me).await;

        // The page's form: a 303 back to the account page.
        let response = me
            .post(app.url(&format!("/account/sessions/{laptop_handle}/revoke")))
            .form(&[("csrf_token", csrf.as_str())])
            .send()
            .await
            .expect("revoke");
        assert_eq!(response.status(), 303);
        assert_eq!(response.headers()["location"], "/account");
        assert_eq!(sessions_status(&app, &laptop).await, 401);
        assert_eq!(stored_rows_with_handle(&app, &laptop_handle).await, 0);
        assert_eq!(sessions_status(&app, &phone).await, 200);

        // A JSON client: the token in X-CSRF-Token, 204 No Content.
        let response = me
            .post(app.url(&format!("/account/sessions/{phone_handle}/revoke")))
            .header("x-csrf-token", &csrf)
            .json(&serde_json::json!({}))
            .send()
            .await
            .expect("revoke");
        assert_eq!(response.status(), 204);
        assert_eq!(sessions_status(&app, &phone).await, 401);

        // Only the session doing the revoking is left.
        let left = sessions_of(&app, &me).await;
        assert_eq!(left.len(), 1);
        assert_eq!(left[0]["current"], true);
    }
);

backend_test!(
    revoking_someone_elses_session_is_404_and_changes_nothing,
    |app: TestApp| async move {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        app.create_user("mallory@example.com", PASSWORD, &[]).await;
        let ada = signed_in(&app, "ada@example.com").await;
        let ada_handle = current_handle(&app, &ada).await;
        let mallory = signed_in(&app, "mallory@example.com").await;
        let csrf = app.account_csrf(&mallory).await;
        let audit_before = app.audit_kinds().await.len();

        let response = mallory
            .post(app.url(&format!("/account/sessions/{ada_handle}/revoke")))
            .header("x-csrf-token", &csrf)
            .json(&serde_json::json!({}))
            .send()
            .await
            .expect("revoke");
        assert_eq!(response.status(), 404);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"], "unknown_session");

        // The form answers the same 404, as a page.
        let response = mallory
            .post(app.url(&format!("/account/sessions/{ada_handle}/revoke")))
            .form(&[("csrf_token", csrf.as_str())])
            .send()
            .await
            .expect("revoke");
        assert_eq!(response.status(), 404);
        assert!(response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/html"));

        // A handle that does not exist at all gets the same answer (no oracle).
        let response = mallory
            .post(app.url("/account/sessions/00000000-0000-7000-8000-000000000000/revoke"))
            .header("x-csrf-token", &csrf)
            .json(&serde_json::json!({}))
            .send()
            .await
            .expect("revoke");
        assert_eq!(response.status(), 404);
        assert_eq!(
            response.json::<Value>().await.expect("json"),
            body,
            "someone else's session and no session answer alike"
        );

        assert_eq!(sessions_status(&app, &ada).await, 200);
        assert_eq!(sessions_status(&app, &mallory).await, 200);
        assert_eq!(stored_rows_with_handle(&app, &ada_handle).await, 1);
        let kinds = app.audit_kinds().await;
        assert_eq!(kinds.len(), audit_before, "nothing was revoked: {kinds:?}");
    }
);

backend_test!(
    revoke_others_keeps_only_the_current_session,
    |app: TestApp| async move {
        let ada = app.create_user("ada@example.com", PASSWORD, &[]).await;
        app.create_user("bob@example.com", PASSWORD, &[]).await;
        let oldest = signed_in(&app, "ada@example.com").await;
        app.clock.advance(1);
        let me = signed_in(&app, "ada@example.com").await;
        app.clock.advance(1);
        let newest = signed_in(&app, "ada@example.com").await;
        let bob = signed_in(&app, "bob@example.com").await;
        let my_handle = current_handle(&app, &me).await;
        let csrf = app.account_csrf(&me).await;

        let response = me
            .post(app.url("/account/sessions/revoke-others"))
            .form(&[("csrf_token", csrf.as_str())])
            .send()
            .await
            .expect("revoke others");
        assert_eq!(response.status(), 303);
        assert_eq!(response.headers()["location"], "/account");
        assert_eq!(sessions_status(&app, &oldest).await, 401);
        assert_eq!(sessions_status(&app, &newest).await, 401);
        assert_eq!(
            sessions_status(&app, &bob).await,
            200,
            "other users untouched"
        );
        let left = sessions_of(&app, &me).await;
        assert_eq!(handles(&left), vec![my_handle.clone()]);
        assert_eq!(stored_sessions_of_user(&app, &ada.id).await, 1);

        // The JSON form says how many sessions it ended.
        let tablet = signed_in(&app, "ada@example.com").await;
        let tv = signed_in(&app, "ada@example.com").await;
        let response = me
            .post(app.url("/account/sessions/revoke-others"))
            .header("x-csrf-token", &csrf)
            .json(&serde_json::json!({}))
            .send()
            .await
            .expect("revoke others");
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.json::<Value>().await.expect("json"),
            serde_json::json!({"ended": 2})
        );
        assert_eq!(sessions_status(&app, &tablet).await, 401);
        assert_eq!(sessions_status(&app, &tv).await, 401);
        assert_eq!(current_handle(&app, &me).await, my_handle);
    }
);

backend_test!(
    disabling_a_user_ends_all_their_sessions_at_once,
    |app: TestApp| async move {
        let ada = app.create_user("ada@example.com", PASSWORD, &[]).await;
        app.create_user("bob@example.com", PASSWORD, &[]).await;
        let laptop = signed_in(&app, "ada@example.com").await;
        let phone = signed_in(&app, "ada@example.com").await;
        let bob = signed_in(&app, "bob@example.com").await;

        let ended = latchkey::cascade::set_user_disabled(
            &app.state.pool,
            &ada.id,
            true,
            app.clock.now_secs(),
        )
        .await
        .expect("disable");
        assert_eq!(ended, 2);
        // No clock movement: the very next request is refused.
        assert_eq!(sessions_status(&app, &laptop).await, 401);
        assert_eq!(sessions_status(&app, &phone).await, 401);
        assert_eq!(stored_sessions_of_user(&app, &ada.id).await, 0);
        assert_eq!(sessions_status(&app, &bob).await, 200);
        // A disabled user cannot sign in again either.
        let response = app
            .login_with(&new_client(), "ada@example.com", PASSWORD)
            .await;
        assert_eq!(response.status(), 401);

        // Enabling the account again does not bring the old sessions back.
        latchkey::cascade::set_user_disabled(&app.state.pool, &ada.id, false, app.clock.now_secs())
            .await
            .expect("enable");
        assert_eq!(sessions_status(&app, &laptop).await, 401);
        assert_eq!(sessions_status(&app, &phone).await, 401);
        let fresh = signed_in(&app, "ada@example.com").await;
        assert_eq!(sessions_status(&app, &fresh).await, 200);
    }
);

backend_test!(
    logout_all_ends_every_session_of_the_user,
    |app: TestApp| async move {
        let ada = app.create_user("ada@example.com", PASSWORD, &[]).await;
        app.create_user("bob@example.com", PASSWORD, &[]).await;
        let laptop = signed_in(&app, "ada@example.com").await;
        let phone = signed_in(&app, "ada@example.com").await;
        let bob = signed_in(&app, "bob@example.com").await;

        // What `latchkey user logout-all ada@example.com` calls.
        let ended = latchkey::cascade::revoke_all_sessions(
            &app.state.pool,
            &ada.id,
            &logout_all_cause(&app),
        )
        .await
        .expect("revoke all");
        assert_eq!(ended, 2);
        assert_eq!(sessions_status(&app, &laptop).await, 401);
        assert_eq!(sessions_status(&app, &phone).await, 401);
        assert_eq!(stored_sessions_of_user(&app, &ada.id).await, 0);
        assert_eq!(
            sessions_status(&app, &bob).await,
            200,
            "only ada's sessions end"
        );
        // The account itself is fine: ada can sign in again.
        let again = signed_in(&app, "ada@example.com").await;
        assert_eq!(sessions_of(&app, &again).await.len(), 1);
        // Nothing left to end is not an error.
        latchkey::cascade::revoke_all_sessions(&app.state.pool, &ada.id, &logout_all_cause(&app))
            .await
            .expect("revoke all");
        assert_eq!(sessions_status(&app, &again).await, 401);
    }
);

backend_test!(
    session_revocations_are_audited_without_secrets,
    |app: TestApp| async move {
        let ada = app.create_user("ada@example.com", PASSWORD, &[]).await;
        let me = new_client();
        let signed = app.login_with(&me, "ada@example.com", PASSWORD).await;
        let my_cookie = session_cookie_of(&signed).expect("cookie");
        let other = new_client();
        let other_cookie =
            session_cookie_of(&app.login_with(&other, "ada@example.com", PASSWORD).await)
                .expect("cookie");
        let other_handle = current_handle(&app, &other).await;
        let third = signed_in(&app, "ada@example.com").await;
        let csrf = app.account_csrf(&me).await;

        let revoked = me
            .post(app.url(&format!("/account/sessions/{other_handle}/revoke")))
            .header("user-agent", "audit-test-browser")
            .form(&[("csrf_token", csrf.as_str())])
            .send()
            .await
            .expect("revoke");
        assert_eq!(revoked.status(), 303);
        let ended = me
            .post(app.url("/account/sessions/revoke-others"))
            .header("x-csrf-token", &csrf)
            .json(&serde_json::json!({}))
            .send()
            .await
            .expect("revoke others");
        assert_eq!(ended.status(), 200);
        assert_eq!(sessions_status(&app, &third).await, 401);

        let events = latchkey::audit::tail(&app.state.pool, 100)
            .await
            .expect("audit");
        let revocations: Vec<_> = events
            .iter()
            .filter(|e| e.kind == "session_revoked")
            .collect();
        assert_eq!(revocations.len(), 2, "{events:?}");
        let single = revocations[0];
        assert_eq!(single.actor, ada.id);
        assert_eq!(single.subject, ada.id);
        assert_eq!(single.ip, "127.0.0.1");
        assert_eq!(single.user_agent, "audit-test-browser");
        assert!(
            single.detail.contains(&other_handle),
            "the event names the ended session by its public handle: {single:?}"
        );
        assert!(
            revocations[1].detail.starts_with("1 "),
            "revoke-others records how many sessions it ended: {:?}",
            revocations[1]
        );
        assert!(revocations[0].at <= revocations[1].at);

        // Invariant 10: no session id (cookie value) in the audit log.
        for event in &events {
            let text = format!("{event:?}");
            assert!(
                !text.contains(&my_cookie) && !text.contains(&other_cookie),
                "session id leaked into {text}"
            );
        }
    }
);

/// The cause `latchkey user logout-all` records.
fn logout_all_cause(app: &TestApp) -> latchkey::revocation::Cause {
    latchkey::revocation::Cause::new(
        app.clock.now_secs(),
        latchkey::revocation::Initiator::Admin,
        "signed out everywhere by an operator",
    )
}
