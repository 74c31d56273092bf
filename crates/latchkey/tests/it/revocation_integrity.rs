//! The revocations behind the feed are whole and ordered: user-wide
//! revocations record an event per ended session too; a replayed
//! authorization code revokes everything it led to in one transaction;
//! `user reset-mfa` is one transaction; revoking transactions lock rows in
//! one order (no deadlock on PostgreSQL); concurrent revocations get
//! gapless, commit-ordered sequence numbers; and a feed stream ends when its
//! instance cannot publish or its reader loses access.

use std::collections::BTreeSet;
use std::time::Duration;

use latchkey::revocation::{self, Cause, Initiator, RevocationEvent, Revoked};

use crate::backend_test;
use crate::support::api::*;
use crate::support::app::*;
use crate::support::oauth::TestClient;

const SECOND: Duration = Duration::from_secs(1);

/// Every recorded event, in seq order.
async fn all_events(app: &TestApp) -> Vec<RevocationEvent> {
    revocation::events_after(&app.state.pool, 0, 0, 10_000)
        .await
        .expect("events")
}

/// Asserts the seqs are exactly 1..=n.
fn assert_gapless(events: &[RevocationEvent]) {
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    let expected: Vec<i64> = (1..=events.len() as i64).collect();
    assert_eq!(seqs, expected, "gapless seqs from 1");
}

fn session_event(user_id: &str, sid: &str) -> Revoked {
    Revoked::Session {
        subject: user_id.to_owned(),
        session_id: sid.to_owned(),
    }
}

fn subject_event(user_id: &str) -> Revoked {
    Revoked::Subject {
        subject: user_id.to_owned(),
    }
}

/// What `events` revoke, as a comparable set (their order inside one
/// transaction does not matter).
fn revoked_set(events: &[RevocationEvent]) -> BTreeSet<String> {
    events.iter().map(|e| format!("{:?}", e.revoked)).collect()
}

fn set_of(revoked: &[Revoked]) -> BTreeSet<String> {
    revoked.iter().map(|r| format!("{r:?}")).collect()
}

/// Makes every insert into `revocation_events` fail (a real database error
/// in the middle of a revoking transaction), until [`accept_events`].
async fn refuse_events(app: &TestApp) {
    let statements: &[&str] = match app.backend {
        Backend::Sqlite => &["CREATE TRIGGER lk_test_refuse BEFORE INSERT ON revocation_events BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"],
        Backend::Postgres => &[
            "CREATE FUNCTION lk_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$",
            "CREATE TRIGGER lk_test_refuse BEFORE INSERT ON revocation_events FOR EACH ROW EXECUTE FUNCTION lk_test_refuse()",
        ],
    };
    for statement in statements {
        sqlx::query(statement)
            .execute(&app.state.pool)
            .await
            .expect("install the trigger");
    }
}

async fn accept_events(app: &TestApp) {
    let statement = match app.backend {
        Backend::Sqlite => "DROP TRIGGER lk_test_refuse",
        Backend::Postgres => "DROP TRIGGER lk_test_refuse ON revocation_events",
    };
    sqlx::query(statement)
        .execute(&app.state.pool)
        .await
        .expect("drop the trigger");
}

// ---------------------------------------------------------------- item: user-wide revocations

backend_test!(
    logout_all_disable_and_delete_record_a_session_event_per_ended_session_and_the_subject_event,
    |app: TestApp| async move {
        let web = web_client(&app).await;
        let introspector = api_client(&app, "").await;

        // A token minted by an instance whose clock runs 20 s ahead: its
        // `iat` is after the logout-all below, so only its `sid` can revoke it.
        let now = app.clock.now_secs();
        app.clock.set(now + 20);
        let ahead = sign_in(&app, &web, "ada@example.com", &[]).await;
        app.clock.set(now);
        let two = sign_in(&app, &web, "ada@example.com", &[]).await;
        let bob = sign_in(&app, &web, "bob@example.com", &[]).await;
        assert!(active(&app, &introspector, &ahead.access_token).await);

        let cause = Cause::new(app.clock.now_secs(), Initiator::Admin, "logout-all");
        let ended = latchkey::cascade::revoke_all_sessions(&app.state.pool, &ahead.user_id, &cause)
            .await
            .expect("logout-all");
        assert_eq!(ended, 2);
        let events = all_events(&app).await;
        assert_gapless(&events);
        assert_eq!(
            revoked_set(&events),
            set_of(&[
                session_event(&ahead.user_id, &ahead.sid),
                session_event(&two.user_id, &two.sid),
                subject_event(&ahead.user_id),
            ])
        );
        assert!(
            !active(&app, &introspector, &ahead.access_token).await,
            "the session event revokes the token the subject event misses"
        );
        assert!(!active(&app, &introspector, &two.access_token).await);
        assert!(active(&app, &introspector, &bob.access_token).await);

        // `latchkey user disable`.
        latchkey::cascade::set_user_disabled(
            &app.state.pool,
            &bob.user_id,
            true,
            app.clock.now_secs(),
        )
        .await
        .expect("disable");
        let events = all_events(&app).await;
        assert_gapless(&events);
        assert_eq!(
            revoked_set(&events[3..]),
            set_of(&[
                session_event(&bob.user_id, &bob.sid),
                subject_event(&bob.user_id),
            ])
        );

        // `latchkey user delete`: the events come after every other write
        // of the transaction, and there is one per session.
        let cy_one = sign_in(&app, &web, "cy@example.com", &[]).await;
        let cy_two = sign_in(&app, &web, "cy@example.com", &[]).await;
        latchkey::cascade::delete_user(&app.state.pool, &cy_one.user_id, app.clock.now_secs())
            .await
            .expect("delete");
        let events = all_events(&app).await;
        assert_gapless(&events);
        assert_eq!(
            revoked_set(&events[5..]),
            set_of(&[
                session_event(&cy_one.user_id, &cy_one.sid),
                session_event(&cy_two.user_id, &cy_two.sid),
                subject_event(&cy_one.user_id),
            ])
        );
        assert!(
            latchkey::identity::find_by_id(&app.state.pool, &cy_one.user_id)
                .await
                .expect("find")
                .is_none()
        );
    }
);

// ---------------------------------------------------------------- item: authorization-code replay

backend_test!(
    authorization_code_replay_revokes_tokens_minted_by_refreshing_too_in_one_transaction,
    |app: TestApp| async move {
        let web = web_client(&app).await;
        // The web client itself: a refresh token is visible only to its client.
        let introspector = web.clone();
        let ada = sign_in(&app, &web, "ada@example.com", &[]).await;
        let (code, verifier) = code_for(&app, &ada.browser, &web).await;
        let first = redeem(&app, &web, &code, &verifier).await;
        let access = first["access_token"].as_str().expect("access").to_owned();
        let refresh = first["refresh_token"].as_str().expect("refresh").to_owned();
        // A refresh mints a second access token (same family, same `sid`).
        let refreshed = ada.refresh(&app, &refresh).await;
        let later = refreshed["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{refreshed}"))
            .to_owned();
        let rotated = refreshed["refresh_token"]
            .as_str()
            .expect("rotated")
            .to_owned();
        let sid = claims_of(&later)["sid"].as_str().expect("sid").to_owned();
        assert_eq!(sid, ada.sid);
        let jti = claims_of(&access)["jti"].as_str().expect("jti").to_owned();
        for token in [&access, &later, &rotated] {
            assert!(active(&app, &introspector, token).await);
        }
        let before = all_events(&app).await.len();

        // The replay fails half-way (recording its events fails): nothing
        // of it may stay — the family is not revoked, the session lives.
        refuse_events(&app).await;
        let failed = reqwest::Client::new()
            .post(app.url("/oauth2/token"))
            .basic_auth(&web.id, web.secret.as_deref())
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT),
                ("code_verifier", verifier.as_str()),
            ])
            .send()
            .await
            .expect("token");
        assert!(failed.status().is_server_error(), "{failed:?}");
        accept_events(&app).await;
        for token in [&access, &later, &rotated] {
            assert!(
                active(&app, &introspector, token).await,
                "a failed replay changed nothing"
            );
        }
        assert_eq!(all_events(&app).await.len(), before);

        let replay = redeem(&app, &web, &code, &verifier).await;
        assert_eq!(replay["error"], "invalid_grant", "{replay}");
        for (token, what) in [
            (&access, "the code's access token"),
            (&later, "the access token minted by refreshing"),
            (&rotated, "the family's refresh token"),
            (&ada.access_token, "the session's other token"),
        ] {
            assert!(!active(&app, &introspector, token).await, "{what}");
        }
        let events = all_events(&app).await;
        assert_gapless(&events);
        assert_eq!(
            revoked_set(&events[before..]),
            set_of(&[
                session_event(&ada.user_id, &sid),
                Revoked::Token {
                    subject: ada.user_id.clone(),
                    jti,
                    expires_at: claims_of(&access)["exp"].as_i64().expect("exp"),
                },
            ])
        );
        // The sign-in session the code came from is over.
        let sessions = latchkey::session::list_for_user(
            &app.state.pool,
            &ada.user_id,
            &app.state.config.session,
            app.clock.now_secs(),
        )
        .await
        .expect("sessions");
        assert!(sessions.iter().all(|s| s.handle != sid));

        // A second replay records nothing new.
        let again = redeem(&app, &web, &code, &verifier).await;
        assert_eq!(again["error"], "invalid_grant");
        assert_eq!(all_events(&app).await.len(), events.len());
    }
);

// ---------------------------------------------------------------- item: reset-mfa

backend_test!(
    reset_mfa_removes_factors_and_ends_sessions_in_one_transaction,
    |app: TestApp| async move {
        let web = web_client(&app).await;
        let one = sign_in(&app, &web, "ada@example.com", &[]).await;
        let two = sign_in(&app, &web, "ada@example.com", &[]).await;
        let now = app.clock.now_secs();
        latchkey::mfa::regenerate_recovery_codes(&app.state.pool, &one.user_id, now)
            .await
            .expect("recovery codes");
        let sessions = || async {
            latchkey::session::list_for_user(
                &app.state.pool,
                &one.user_id,
                &app.state.config.session,
                app.clock.now_secs(),
            )
            .await
            .expect("sessions")
            .len()
        };
        let codes_left = || async {
            latchkey::mfa::status(&app.state.pool, &one.user_id)
                .await
                .expect("status")
                .recovery_codes_left
        };
        assert_eq!(sessions().await, 2);
        assert_eq!(codes_left().await, 10);

        // What `latchkey user reset-mfa` calls, failing at its last statement.
        let cause = Cause::new(now, Initiator::Admin, "second factors reset by an operator");
        refuse_events(&app).await;
        assert!(latchkey::cascade::reset_mfa_and_end_sessions(
            &app.state.pool,
            &one.user_id,
            &cause
        )
        .await
        .is_err());
        accept_events(&app).await;
        assert_eq!(codes_left().await, 10, "the factors are still there");
        assert_eq!(sessions().await, 2, "the sessions are still there");
        assert!(all_events(&app).await.is_empty());

        let ended =
            latchkey::cascade::reset_mfa_and_end_sessions(&app.state.pool, &one.user_id, &cause)
                .await
                .expect("reset");
        assert_eq!(ended, 2);
        assert_eq!(codes_left().await, 0);
        assert_eq!(sessions().await, 0);
        let events = all_events(&app).await;
        assert_gapless(&events);
        assert_eq!(
            revoked_set(&events),
            set_of(&[
                session_event(&one.user_id, &one.sid),
                session_event(&two.user_id, &two.sid),
                subject_event(&one.user_id),
            ])
        );
    }
);

// ---------------------------------------------------------------- item: lock order

/// Waits until some other backend of this database waits for a row lock.
async fn until_a_transaction_waits_for_a_lock(app: &TestApp) {
    let deadline = tokio::time::Instant::now() + 5 * SECOND;
    loop {
        let waiting = sqlx::query(
            "SELECT 1 AS x FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_optional(&app.state.pool)
        .await
        .expect("pg_stat_activity");
        if waiting.is_some() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the revocation never waited for the family lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A session of `user_id` with a refresh family of `client`: (cookie value, handle).
async fn session_with_family(
    app: &TestApp,
    client: &TestClient,
    user_id: &str,
) -> (latchkey::crypto::SecretToken, String) {
    let now = app.clock.now_secs();
    let (cookie, session) = latchkey::session::create(
        &app.state.pool,
        &app.state.config.session,
        user_id,
        &["pwd"],
        &latchkey::session::Origin::default(),
        latchkey::clock::Clock::moment(&app.clock),
    )
    .await
    .expect("session");
    latchkey::tokens::refresh::start_family(
        &app.state.pool,
        &app.state.config.tokens,
        latchkey::tokens::refresh::FamilyOwner {
            client_id: &client.id,
            user_id,
            session_handle: Some(&session.handle),
            sign_in: None,
        },
        &scope("openid offline_access"),
        now,
    )
    .await
    .expect("family");
    (cookie, session.handle)
}

/// A transaction that follows the documented lock order (families, then
/// sessions — as refresh-token reuse does) holds the family of session
/// `sid` while `revoke` runs; then it deletes that session. With the same
/// order in `revoke`, `revoke` waits at the family and both finish; with
/// sessions first, PostgreSQL finds a deadlock and aborts one.
async fn assert_no_deadlock_against_the_lock_order<F>(app: &TestApp, sid: &str, revoke: F)
where
    F: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let mut other = app.state.pool.begin().await.expect("begin");
    sqlx::query("UPDATE refresh_families SET scope = scope WHERE session_handle = $1")
        .bind(sid)
        .execute(&mut *other)
        .await
        .expect("lock the family");
    let revoking = tokio::spawn(revoke);
    until_a_transaction_waits_for_a_lock(app).await;
    let deleted = tokio::time::timeout(
        5 * SECOND,
        sqlx::query("DELETE FROM sessions WHERE handle = $1")
            .bind(sid)
            .execute(&mut *other),
    )
    .await
    .expect("no lock wait for ever");
    deleted.expect("no deadlock: the session was not locked before its family");
    other.commit().await.expect("commit");
    tokio::time::timeout(5 * SECOND, revoking)
        .await
        .expect("the revocation finishes")
        .expect("task")
        .expect("no deadlock: the revocation committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_transactions_lock_families_before_sessions_on_postgres() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    let web = web_client(&app).await;
    let cause = || Cause::new(0, Initiator::Admin, "lock order test");

    // "Sign out other sessions".
    let ada = app.create_user("ada@example.com", PASSWORD, &[]).await;
    let (_, keep) = session_with_family(&app, &web, &ada.id).await;
    let (_, other) = session_with_family(&app, &web, &ada.id).await;
    let (pool, user_id) = (app.state.pool.clone(), ada.id.clone());
    assert_no_deadlock_against_the_lock_order(&app, &other, async move {
        latchkey::cascade::revoke_other_sessions(&pool, &user_id, &keep, &cause())
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await;

    // Revoking one session (the account page).
    let bob = app.create_user("bob@example.com", PASSWORD, &[]).await;
    let (_, sid) = session_with_family(&app, &web, &bob.id).await;
    let (pool, user_id, handle) = (app.state.pool.clone(), bob.id.clone(), sid.clone());
    assert_no_deadlock_against_the_lock_order(&app, &sid, async move {
        latchkey::cascade::revoke_session(&pool, &user_id, &handle, &cause())
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await;

    // Signing out (what `POST /logout` calls).
    let cy = app.create_user("cy@example.com", PASSWORD, &[]).await;
    let (cookie, sid) = session_with_family(&app, &web, &cy.id).await;
    let pool = app.state.pool.clone();
    assert_no_deadlock_against_the_lock_order(&app, &sid, async move {
        latchkey::cascade::end_session(&pool, &cookie, &cause())
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await;

    // `latchkey user logout-all`.
    let dee = app.create_user("dee@example.com", PASSWORD, &[]).await;
    let (_, sid) = session_with_family(&app, &web, &dee.id).await;
    let (pool, user_id) = (app.state.pool.clone(), dee.id.clone());
    assert_no_deadlock_against_the_lock_order(&app, &sid, async move {
        latchkey::cascade::revoke_all_sessions(&pool, &user_id, &cause())
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await;
}

// ---------------------------------------------------------------- item: gapless commit order

backend_test!(
    concurrent_revocations_get_gapless_commit_ordered_seqs,
    |app: TestApp| async move {
        const USERS: usize = 50;
        let now = app.clock.now_secs();
        let mut sessions = Vec::new();
        for i in 0..USERS {
            let user = app
                .create_user(&format!("user{i}@example.com"), PASSWORD, &[])
                .await;
            let (_, session) = latchkey::session::create(
                &app.state.pool,
                &app.state.config.session,
                &user.id,
                &["pwd"],
                &latchkey::session::Origin::default(),
                latchkey::clock::Clock::moment(&app.clock),
            )
            .await
            .expect("session");
            sessions.push((user.id, session.handle));
        }

        // A reader polls while the revocations commit: whatever it sees
        // must continue exactly where it stopped (never N+1 before N).
        let pool = app.state.pool.clone();
        let reader = tokio::spawn(async move {
            let mut last = 0;
            let deadline = tokio::time::Instant::now() + 10 * SECOND;
            while last < USERS as i64 {
                let seen = revocation::events_after(&pool, last, 0, 1_000)
                    .await
                    .expect("poll");
                for event in seen {
                    assert_eq!(event.seq, last + 1, "the reader saw a gap after {last}");
                    last = event.seq;
                }
                assert!(tokio::time::Instant::now() < deadline, "stuck at {last}");
                tokio::task::yield_now().await;
            }
        });
        let revocations: Vec<_> = sessions
            .iter()
            .cloned()
            .map(|(user_id, handle)| {
                let pool = app.state.pool.clone();
                tokio::spawn(async move {
                    let cause = Cause::new(now, Initiator::Admin, "concurrency test");
                    latchkey::cascade::revoke_session(&pool, &user_id, &handle, &cause)
                        .await
                        .expect("revoke")
                })
            })
            .collect();
        for revocation in revocations {
            assert!(revocation.await.expect("task"), "revoked");
        }
        reader.await.expect("the reader saw no gap");

        let events = all_events(&app).await;
        assert_eq!(events.len(), USERS, "exactly one event per revocation");
        assert_gapless(&events);
        let revoked: BTreeSet<String> = sessions
            .iter()
            .map(|(user_id, handle)| format!("{:?}", session_event(user_id, handle)))
            .collect();
        assert_eq!(revoked_set(&events), revoked, "no duplicates, none missing");
    }
);

// ---------------------------------------------------------------- item: streams end

/// A feed stream read as raw bytes: `true` once the server ended it,
/// `false` if it is still open after `limit`.
async fn ends_within(response: &mut reqwest::Response, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, response.chunk()).await {
            Err(_) => return false,
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) | Ok(Err(_)) => return true,
        }
    }
}

async fn open_stream(app: &TestApp, token: &str) -> reqwest::Response {
    let response = reqwest::Client::new()
        .get(app.url("/oauth2/revocations/stream"))
        .bearer_auth(token)
        .send()
        .await
        .expect("feed");
    assert_eq!(response.status(), 200, "{response:?}");
    response
}

/// Reads a stream until `needle` has come (panics after 5 s).
async fn read_until(response: &mut reqwest::Response, needle: &[u8]) {
    let mut raw = Vec::new();
    let deadline = tokio::time::Instant::now() + 5 * SECOND;
    while !raw.windows(needle.len()).any(|w| w == needle) {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("in time")
            .expect("readable")
            .expect("still open");
        raw.extend_from_slice(&chunk);
    }
}

fn fast_feed(config: &mut latchkey::config::Config) {
    config.revocation_feed.keepalive_secs = 1;
    config.revocation_feed.poll_interval_ms = 50;
}

backend_test!(
    feed_stream_ends_when_its_client_is_deleted_loses_the_scope_or_its_token_is_revoked,
    config = fast_feed,
    |app: TestApp| async move {
        // Deleted (what `latchkey client delete` calls).
        let deleted = feed_client(&app).await;
        let token = client_token(&app.base, &deleted, None).await;
        let mut stream = open_stream(&app, &token).await;
        read_until(&mut stream, b"event: synced").await;
        read_until(&mut stream, b": keepalive\n").await;
        assert!(latchkey::oauth::clients::delete(
            &app.state.pool,
            &deleted.id,
            &Cause::new(app.clock.now_secs(), Initiator::Admin, "client deleted")
        )
        .await
        .expect("delete"));
        assert!(ends_within(&mut stream, 3 * SECOND).await, "deleted client");

        // The scope taken away.
        let narrowed = feed_client(&app).await;
        let token = client_token(&app.base, &narrowed, None).await;
        let mut stream = open_stream(&app, &token).await;
        read_until(&mut stream, b"event: synced").await;
        let update = latchkey::oauth::clients::ClientUpdate {
            scopes: Some(scope("read:data")),
            ..Default::default()
        };
        latchkey::oauth::clients::update(
            &app.state.pool,
            &narrowed.id,
            update,
            app.clock.now_secs(),
        )
        .await
        .expect("update")
        .expect("the client");
        assert!(ends_within(&mut stream, 3 * SECOND).await, "scope removed");

        // The token itself revoked (RFC 7009): it no longer introspects as active.
        let revoked = feed_client(&app).await;
        let token = client_token(&app.base, &revoked, None).await;
        let mut stream = open_stream(&app, &token).await;
        read_until(&mut stream, b"event: synced").await;
        let answer = reqwest::Client::new()
            .post(app.url("/oauth2/revoke"))
            .basic_auth(&revoked.id, revoked.secret.as_deref())
            .form(&[("token", token.as_str())])
            .send()
            .await
            .expect("revoke");
        assert_eq!(answer.status(), 200);
        assert!(ends_within(&mut stream, 3 * SECOND).await, "token revoked");

        // A reader that keeps its access keeps its stream (keepalives go on).
        let kept = feed_client(&app).await;
        let token = client_token(&app.base, &kept, None).await;
        let mut stream = open_stream(&app, &token).await;
        read_until(&mut stream, b"event: synced").await;
        assert!(!ends_within(&mut stream, 3 * SECOND).await, "still open");
    }
);

backend_test!(
    feed_streams_end_while_the_instance_cannot_read_events_and_resume_after,
    config = fast_feed,
    |app: TestApp| async move {
        let web = web_client(&app).await;
        let ada = sign_in(&app, &web, "ada@example.com", &[]).await;
        let feed = feed_client(&app).await;
        let token = client_token(&app.base, &feed, None).await;
        let mut stream = open_stream(&app, &token).await;
        read_until(&mut stream, b"event: synced").await;

        // The publisher's reads fail (a real database error: a column it
        // reads is gone; introspection, which does not read it, still works).
        sqlx::query("ALTER TABLE revocation_events RENAME COLUMN reason TO reason_away")
            .execute(&app.state.pool)
            .await
            .expect("rename");
        assert!(
            ends_within(&mut stream, 2 * SECOND).await,
            "the stream ends instead of sending keepalives while nothing is published"
        );
        let refused = reqwest::Client::new()
            .get(app.url("/oauth2/revocations/stream"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("feed");
        assert_eq!(refused.status(), 503, "no new stream while failing");

        // Reads work again: streams open, and events flow.
        sqlx::query("ALTER TABLE revocation_events RENAME COLUMN reason_away TO reason")
            .execute(&app.state.pool)
            .await
            .expect("rename back");
        let mut stream = open_stream(&app, &token).await;
        read_until(&mut stream, b"event: synced").await;
        ada.sign_out(&app).await;
        read_until(&mut stream, b"event: revocation").await;
    }
);

backend_test!(
    families_that_outlived_their_session_get_a_session_event_too,
    |app: TestApp| async move {
        let web = web_client(&app).await;
        let ada = sign_in(&app, &web, "ada@example.com", &[]).await;
        // The session expires and is purged; its refresh family lives on,
        // and access tokens it mints carry the old `sid`.
        let later = app.clock.now_secs() + 400 * 24 * 3600;
        latchkey::session::purge_expired(&app.state.pool, &app.state.config.session, later)
            .await
            .expect("purge");
        let cause = Cause::new(app.clock.now_secs(), Initiator::Admin, "logout-all");
        let ended = latchkey::cascade::revoke_all_sessions(&app.state.pool, &ada.user_id, &cause)
            .await
            .expect("logout-all");
        assert_eq!(ended, 0, "no session was left to end");
        let events = all_events(&app).await;
        assert_gapless(&events);
        assert_eq!(
            revoked_set(&events),
            set_of(&[
                session_event(&ada.user_id, &ada.sid),
                subject_event(&ada.user_id),
            ]),
            "the family's sid is revoked whatever the clocks say"
        );
    }
);

backend_test!(
    withdrawing_consent_voids_the_codes_issued_before,
    |app: TestApp| async move {
        let web = web_client(&app).await;
        let ada = sign_in(&app, &web, "ada@example.com", &[]).await;
        let (code, verifier) = code_for(&app, &ada.browser, &web).await;
        latchkey::oauth::authorize::grant_consent(
            &app.state.pool,
            &ada.user_id,
            &web.id,
            &scope("openid offline_access read:data"),
            app.clock.now_secs(),
        )
        .await
        .expect("consent");
        let cause = Cause::new(app.clock.now_secs(), Initiator::User, "consent withdrawn");
        assert!(latchkey::oauth::authorize::revoke_consent(
            &app.state.pool,
            &ada.user_id,
            &web.id,
            &cause
        )
        .await
        .expect("withdraw"));
        let answer = redeem(&app, &web, &code, &verifier).await;
        assert_eq!(answer["error"], "invalid_grant", "{answer}");
        // Withdrawing again: nothing to withdraw, nothing recorded.
        let events = all_events(&app).await.len();
        assert!(!latchkey::oauth::authorize::revoke_consent(
            &app.state.pool,
            &ada.user_id,
            &web.id,
            &cause
        )
        .await
        .expect("withdraw again"));
        assert_eq!(all_events(&app).await.len(), events);
    }
);
