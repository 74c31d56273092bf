//! The revocation feed, end to end: the server's SSE endpoint
//! (`GET /oauth2/revocations/stream`: authentication, framing, resumption
//! from `Last-Event-ID`, events committed by another instance, keepalives,
//! the end of a stream at its token's expiry) and an API following it with
//! `latchkey-verify`, which refuses a revoked token within one second of the
//! revocation — for every way Latchkey revokes: sign-out, logout-all and
//! disabling, RFC 7009, refresh-token reuse, a password change. Also: a
//! stale feed and its failure policies, and introspection agreeing with the
//! feed.

use std::collections::VecDeque;
use std::time::Duration;

use latchkey::revocation::{Cause, Initiator};
use latchkey_verify::jose::{self, JwkSet, KeySet, Validation};
use latchkey_verify::sse::{SseEvent, SseParser};
use latchkey_verify::FeedFailurePolicy;
use serde_json::Value;

use crate::backend_test;
use crate::support::api::*;
use crate::support::app::*;
use crate::support::oauth::TestClient;

const SECOND: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------- a raw SSE reader

/// The feed read as raw Server-Sent Events.
struct FeedStream {
    response: reqwest::Response,
    parser: SseParser,
    pending: VecDeque<SseEvent>,
    raw: Vec<u8>,
}

async fn open_feed(
    base: &str,
    token: Option<&str>,
    last_event_id: Option<&str>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .get(format!("{base}/oauth2/revocations/stream"))
        .header("accept", "text/event-stream");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    request.send().await.expect("feed request")
}

impl FeedStream {
    async fn open(base: &str, token: &str, last_event_id: Option<&str>) -> FeedStream {
        let response = open_feed(base, Some(token), last_event_id).await;
        assert_eq!(response.status(), 200, "{response:?}");
        FeedStream {
            response,
            parser: SseParser::default(),
            pending: VecDeque::new(),
            raw: Vec::new(),
        }
    }

    /// The next event, or `None` when the server ends the stream.
    async fn next(&mut self, limit: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event within {limit:?}"))
                .expect("stream readable")?;
            self.raw.extend_from_slice(&chunk);
            self.pending
                .extend(self.parser.push(&chunk).expect("bounded lines"));
        }
    }

    /// Events up to `synced`; returns them and the synced data.
    async fn until_synced(&mut self) -> (Vec<SseEvent>, Value) {
        let mut events = Vec::new();
        loop {
            let event = self.next(5 * SECOND).await.expect("synced before the end");
            if event.event == "synced" {
                let data = serde_json::from_str(&event.data).expect("synced json");
                return (events, data);
            }
            events.push(event);
        }
    }
}

/// A feed token for a new feed client.
async fn feed_token(app: &TestApp) -> (TestClient, String) {
    let client = feed_client(app).await;
    let token = client_token(&app.base, &client, None).await;
    (client, token)
}

/// Verifies a SET with the JWKS exactly as an API would, returning its claims.
async fn verify_set(app: &TestApp, set: &str) -> Value {
    let (jwks, _) = crate::support::jwt::fetch_jwks(app).await;
    let jwks: JwkSet = serde_json::from_value(jwks).expect("jwks");
    let (keys, _) = KeySet::from_jwks(&jwks);
    let validation = Validation {
        typ: Some("secevent+jwt".into()),
        ..Validation::new(app.state.config.issuer_str())
    };
    jose::verify::<Value>(set, &keys, &validation, app.clock.now_secs())
        .unwrap_or_else(|e| panic!("the SET does not verify: {e}"))
        .claims
}

const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";

// ---------------------------------------------------------------- the endpoint

backend_test!(
    feed_requires_a_client_credentials_token_with_the_feed_scope,
    |app: TestApp| async move {
        let none = open_feed(&app.base, None, None).await;
        assert_eq!(none.status(), 401);
        assert_eq!(
            none.headers()["www-authenticate"].to_str().expect("ascii"),
            "Bearer realm=\"latchkey\""
        );
        let garbage = open_feed(&app.base, Some("not.a.token"), None).await;
        assert_eq!(garbage.status(), 401);
        assert!(garbage.headers()["www-authenticate"]
            .to_str()
            .expect("ascii")
            .contains("error=\"invalid_token\""));

        let no_scope = api_client(&app, "read:data").await;
        let token = client_token(&app.base, &no_scope, None).await;
        let forbidden = open_feed(&app.base, Some(&token), None).await;
        assert_eq!(forbidden.status(), 403);
        let challenge = forbidden.headers()["www-authenticate"]
            .to_str()
            .expect("ascii");
        assert!(
            challenge.contains("error=\"insufficient_scope\""),
            "{challenge}"
        );
        assert!(
            challenge.ends_with("scope=\"latchkey:revocations\""),
            "{challenge}"
        );

        // A user's token, even one with the feed scope, is not a client's.
        let web = crate::support::oauth::register(
            &app,
            latchkey::oauth::clients::NewClient {
                redirect_uris: vec!["https://app.example.com/cb".into()],
                first_party: true,
                ..crate::support::oauth::client_spec(
                    "web app",
                    true,
                    &["authorization_code"],
                    "openid offline_access read:data latchkey:revocations",
                )
            },
        )
        .await;
        let browser = new_client();
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        assert_eq!(
            app.login_with(&browser, "ada@example.com", PASSWORD)
                .await
                .status(),
            303
        );
        let pkce = crate::support::oauth::Pkce::random();
        let response = browser
            .get(app.url("/oauth2/authorize"))
            .query(&[
                ("response_type", "code"),
                ("client_id", web.id.as_str()),
                ("redirect_uri", "https://app.example.com/cb"),
                ("scope", "latchkey:revocations"),
                ("code_challenge", pkce.challenge.as_str()),
                ("code_challenge_method", "S256"),
            ])
            .send()
            .await
            .expect("authorize");
        let (_, query) = crate::support::oauth::client_redirect(&response);
        let answer: Value = reqwest::Client::new()
            .post(app.url("/oauth2/token"))
            .basic_auth(&web.id, web.secret.as_deref())
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", query.get("code").expect("code").as_str()),
                ("redirect_uri", "https://app.example.com/cb"),
                ("code_verifier", pkce.verifier.as_str()),
            ])
            .send()
            .await
            .expect("token")
            .json()
            .await
            .expect("json");
        let user_token = answer["access_token"].as_str().expect("token");
        assert!(answer["scope"]
            .as_str()
            .unwrap_or_default()
            .contains("latchkey:revocations"));
        assert_eq!(
            open_feed(&app.base, Some(user_token), None).await.status(),
            403
        );

        let (_, token) = feed_token(&app).await;
        for bad in ["abc", "-1", "1.5", "99999999999999999999"] {
            let response = open_feed(&app.base, Some(&token), Some(bad)).await;
            assert_eq!(response.status(), 400, "Last-Event-ID {bad:?}");
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["error"], "invalid_request");
        }
    }
);

backend_test!(
    feed_streams_signed_security_event_tokens_then_synced_then_live_events,
    |app: TestApp| async move {
        let web = web_client(&app).await;
        let ada = sign_in(&app, &web, "ada@example.com", &[]).await;
        let (_, token) = feed_token(&app).await;
        let mut feed = FeedStream::open(&app.base, &token, None).await;
        assert_eq!(
            feed.response.headers()["content-type"]
                .to_str()
                .expect("ascii"),
            "text/event-stream"
        );
        assert_eq!(
            feed.response.headers()["cache-control"]
                .to_str()
                .expect("ascii"),
            "no-store"
        );
        assert!(feed
            .response
            .headers()
            .get("access-control-allow-origin")
            .is_none());
        let (backlog, synced) = feed.until_synced().await;
        assert!(
            feed.raw.starts_with(b"retry: 1000\n"),
            "{:?}",
            String::from_utf8_lossy(&feed.raw)
        );
        assert!(backlog.is_empty(), "nothing was revoked yet: {backlog:?}");
        assert_eq!(synced["head"], 0);

        ada.sign_out(&app).await;
        let event = feed.next(SECOND).await.expect("the sign-out event");
        assert_eq!(event.event, "revocation");
        assert_eq!(event.id.as_deref(), Some("1"));
        let header = jose::decode_unverified(&event.data).expect("a JWS").0;
        assert_eq!(header["typ"], "secevent+jwt");
        let set = verify_set(&app, &event.data).await;
        assert_eq!(set["iss"], app.state.config.issuer_str());
        assert!(set["jti"].is_string());
        let body = &set["events"][SESSION_REVOKED];
        assert_eq!(body["subject"]["format"], "complex");
        assert_eq!(body["subject"]["session"]["id"], ada.sid.as_str());
        assert_eq!(body["subject"]["user"]["sub"], ada.user_id.as_str());
        assert_eq!(body["initiating_entity"], "user");
        assert!(body["retain_until"].as_i64().expect("retain_until") > app.clock.now_secs());

        // A new subscriber gets the retained event in its backlog.
        let mut later = FeedStream::open(&app.base, &token, None).await;
        let (backlog, synced) = later.until_synced().await;
        assert_eq!(backlog.len(), 1);
        assert_eq!(backlog[0].id.as_deref(), Some("1"));
        assert_eq!(synced["head"], 1);
    }
);

backend_test!(
    feed_resumes_from_last_event_id_and_delivers_events_of_another_instance,
    |app: TestApp| async move {
        let web = web_client(&app).await;
        let ada = sign_in(&app, &web, "ada@example.com", &[]).await;
        let bob = sign_in(&app, &web, "bob@example.com", &[]).await;
        let cy = sign_in(&app, &web, "cy@example.com", &[]).await;
        let (_, token) = feed_token(&app).await;

        let mut feed = FeedStream::open(&app.base, &token, None).await;
        feed.until_synced().await;
        ada.sign_out(&app).await;
        let first = feed.next(SECOND).await.expect("event 1");
        assert_eq!(first.id.as_deref(), Some("1"));
        drop(feed);

        // Revoked while the subscriber was away: resuming delivers it.
        bob.sign_out(&app).await;
        let mut resumed = FeedStream::open(&app.base, &token, Some("1")).await;
        let (backlog, synced) = resumed.until_synced().await;
        assert_eq!(backlog.len(), 1, "{backlog:?}");
        assert_eq!(backlog[0].id.as_deref(), Some("2"));
        let set = verify_set(&app, &backlog[0].data).await;
        assert_eq!(
            set["events"][SESSION_REVOKED]["subject"]["session"]["id"],
            bob.sid.as_str()
        );
        assert_eq!(synced["head"], 2);

        // A Last-Event-ID beyond the head (a restored database): everything again.
        let mut replay = FeedStream::open(&app.base, &token, Some("99")).await;
        assert_eq!(replay.until_synced().await.0.len(), 2);

        // An event committed through a second instance on the same database
        // reaches subscribers of the first, and the other way round.
        let (second, _stop) = second_instance(&app).await;
        let mut on_second = FeedStream::open(&second, &token, Some("2")).await;
        on_second.until_synced().await;
        let revoked = latchkey::cascade::revoke_session(
            &app.state.pool,
            &cy.user_id,
            &cy.sid,
            &Cause::new(app.clock.now_secs(), Initiator::Admin, "test"),
        )
        .await
        .expect("revoke");
        assert!(revoked);
        let event = on_second
            .next(SECOND)
            .await
            .expect("the event via instance 2");
        assert_eq!(event.id.as_deref(), Some("3"));
        let set = verify_set(&app, &event.data).await;
        assert_eq!(
            set["events"][SESSION_REVOKED]["subject"]["session"]["id"],
            cy.sid.as_str()
        );
        let _ = resumed.next(SECOND).await.expect("instance 1 has it too");
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_stream_outlives_the_request_timeout_with_keepalives() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.http.request_timeout_secs = 1;
        c.revocation_feed.keepalive_secs = 1;
    })
    .await
    .expect("sqlite");
    let (_, token) = feed_token(&app).await;
    let mut feed = FeedStream::open(&app.base, &token, None).await;
    let (_, synced) = feed.until_synced().await;
    assert_eq!(synced["keepalive_secs"], 1);
    let opened = tokio::time::Instant::now();
    // Read until two keepalive comments have come: more than the 1 s timeout.
    let deadline = opened + Duration::from_secs(5);
    while feed
        .raw
        .windows(12)
        .filter(|w| *w == b": keepalive\n")
        .count()
        < 2
    {
        let chunk = tokio::time::timeout_at(deadline, feed.response.chunk())
            .await
            .expect("keepalives within 5 s")
            .expect("readable")
            .expect("the stream is still open");
        feed.raw.extend_from_slice(&chunk);
    }
    assert!(
        opened.elapsed() > Duration::from_secs(1),
        "past the request timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_stream_ends_when_its_token_expires() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let client = crate::support::oauth::register(
        &app,
        latchkey::oauth::clients::NewClient {
            access_token_lifetime_secs: Some(2),
            ..crate::support::oauth::client_spec(
                "short-lived feed client",
                true,
                &["client_credentials"],
                "latchkey:revocations",
            )
        },
    )
    .await;
    let token = client_token(&app.base, &client, None).await;
    let mut feed = FeedStream::open(&app.base, &token, None).await;
    feed.until_synced().await;
    let opened = tokio::time::Instant::now();
    assert!(
        feed.next(Duration::from_secs(5)).await.is_none(),
        "the stream ends"
    );
    assert!(opened.elapsed() < Duration::from_secs(4));
}

// ---------------------------------------------------------------- the SDK following the feed

/// The API under test, following the feed as `feed`.
async fn api_following_feed(app: &TestApp, issuer: &str) -> TestApi {
    let feed = feed_client(app).await;
    let verifier = verifier_for(issuer, app)
        .revocation_feed(&feed.id, feed.secret.as_deref().expect("secret"))
        .build()
        .await
        .expect("verifier");
    assert!(
        verifier.health().feed.expect("feed").synced,
        "build waits for synced"
    );
    TestApi::start(verifier).await
}

/// Waits (≤ 1 s after the revocation) until `token` is refused as revoked.
async fn refused_within_a_second(api: &TestApi, token: &str, what: &str) {
    let answer = within(SECOND, what, || async {
        let a = api.get("/me", Some(token)).await;
        (a.status != 200).then_some(a)
    })
    .await;
    answer.assert_invalid_token(what);
    assert!(
        answer
            .www_authenticate
            .as_deref()
            .unwrap_or_default()
            .contains("revoked"),
        "{what}: {answer:?}"
    );
}

backend_test!(
    sign_out_on_the_server_refuses_that_sessions_token_within_one_second,
    |app: TestApp| async move {
        let web = web_client(&app).await;
        let laptop = sign_in(&app, &web, "ada@example.com", &[]).await;
        let phone = sign_in(&app, &web, "ada@example.com", &[]).await;
        let api = api_following_feed(&app, &app.base).await;
        assert_eq!(api.get("/me", Some(&laptop.access_token)).await.status, 200);

        laptop.sign_out(&app).await;
        refused_within_a_second(&api, &laptop.access_token, "signed-out session").await;
        // Only that session: the user's other session is untouched.
        assert_eq!(api.get("/me", Some(&phone.access_token)).await.status, 200);
        assert_eq!(api.health().await["feed"]["last_event_id"], 1);
    }
);

backend_test!(
    logout_all_disable_and_delete_refuse_every_token_of_the_user_within_one_second,
    |app: TestApp| async move {
        let web = web_client(&app).await;
        let one = sign_in(&app, &web, "ada@example.com", &[]).await;
        let two = sign_in(&app, &web, "ada@example.com", &[]).await;
        let bob = sign_in(&app, &web, "bob@example.com", &[]).await;
        let api = api_following_feed(&app, &app.base).await;

        // `latchkey user logout-all` calls this.
        let cause = Cause::new(app.clock.now_secs(), Initiator::Admin, "logout-all");
        latchkey::cascade::revoke_all_sessions(&app.state.pool, &one.user_id, &cause)
            .await
            .expect("logout-all");
        refused_within_a_second(&api, &one.access_token, "logout-all, session 1").await;
        refused_within_a_second(&api, &two.access_token, "logout-all, session 2").await;
        assert_eq!(api.get("/me", Some(&bob.access_token)).await.status, 200);

        // Signing in again later is fine: the event covers tokens issued before it.
        app.clock.advance(1);
        let again = sign_in(&app, &web, "ada@example.com", &[]).await;
        assert_eq!(api.get("/me", Some(&again.access_token)).await.status, 200);

        // `latchkey user disable`.
        app.clock.advance(1);
        latchkey::cascade::set_user_disabled(
            &app.state.pool,
            &again.user_id,
            true,
            app.clock.now_secs(),
        )
        .await
        .expect("disable");
        refused_within_a_second(&api, &again.access_token, "disabled user").await;

        // `latchkey user delete`.
        latchkey::cascade::delete_user(&app.state.pool, &bob.user_id, app.clock.now_secs())
            .await
            .expect("delete");
        refused_within_a_second(&api, &bob.access_token, "deleted user").await;
    }
);

backend_test!(
    rfc7009_revocation_of_a_jwt_refuses_it_within_one_second,
    |app: TestApp| async move {
        let web = web_client(&app).await;
        let ada = sign_in(&app, &web, "ada@example.com", &[]).await;
        let (other, _) = authorize(&app, &ada.browser, &web).await;
        let api = api_following_feed(&app, &app.base).await;
        let revoked = reqwest::Client::new()
            .post(app.url("/oauth2/revoke"))
            .basic_auth(&web.id, web.secret.as_deref())
            .form(&[("token", ada.access_token.as_str())])
            .send()
            .await
            .expect("revoke");
        assert_eq!(revoked.status(), 200);
        refused_within_a_second(&api, &ada.access_token, "RFC 7009").await;
        // Only that token (by jti): another token of the same session works.
        assert_eq!(api.get("/me", Some(&other)).await.status, 200);
    }
);

backend_test!(
    refresh_token_reuse_refuses_the_sessions_tokens_within_one_second,
    |app: TestApp| async move {
        let web = web_client(&app).await;
        let ada = sign_in(&app, &web, "ada@example.com", &[]).await;
        let api = api_following_feed(&app, &app.base).await;
        let rotated = ada.refresh(&app, &ada.refresh_token).await;
        let newer = rotated["access_token"]
            .as_str()
            .expect("rotated")
            .to_owned();
        assert_eq!(api.get("/me", Some(&newer)).await.status, 200);

        // The spent refresh token again, after the reuse grace: reuse, the
        // family and session end.
        app.clock
            .advance(app.state.config.tokens.refresh_token_reuse_grace_secs + 1);
        let reuse = ada.refresh(&app, &ada.refresh_token).await;
        assert_eq!(reuse["error"], "invalid_grant", "{reuse}");
        refused_within_a_second(&api, &newer, "reuse: the rotated token").await;
        refused_within_a_second(&api, &ada.access_token, "reuse: the first token").await;
    }
);

backend_test!(
    password_change_refuses_the_other_sessions_tokens_within_one_second,
    |app: TestApp| async move {
        let web = web_client(&app).await;
        let phone = sign_in(&app, &web, "ada@example.com", &[]).await;
        let laptop = sign_in(&app, &web, "ada@example.com", &[]).await;
        let api = api_following_feed(&app, &app.base).await;
        let html = phone
            .browser
            .get(app.url("/account/password"))
            .header("accept", "text/html")
            .send()
            .await
            .expect("page")
            .text()
            .await
            .expect("html");
        let csrf = extract_input(&html, "csrf_token").expect("csrf");
        let changed = phone
            .browser
            .post(app.url("/account/password"))
            .form(&[
                ("csrf_token", csrf.as_str()),
                ("current_password", PASSWORD),
                ("new_password", "a brand new passphrase"),
                ("end_other_sessions", "yes"),
            ])
            .send()
            .await
            .expect("change");
        assert!(
            changed.status().is_success() || changed.status().is_redirection(),
            "{changed:?}"
        );
        refused_within_a_second(&api, &laptop.access_token, "the other session").await;
        assert_eq!(
            api.get("/me", Some(&phone.access_token)).await.status,
            200,
            "this session stays"
        );
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_outage_resumes_with_last_event_id_and_misses_nothing() {
    let (app, proxy) = app_behind_proxy(Backend::Sqlite, |_| {})
        .await
        .expect("sqlite");
    let web = web_client(&app).await;
    let ada = sign_in(&app, &web, "ada@example.com", &[]).await;
    let bob = sign_in(&app, &web, "bob@example.com", &[]).await;
    let api = api_following_feed(&app, &proxy.base).await;
    ada.sign_out(&app).await;
    refused_within_a_second(&api, &ada.access_token, "before the outage").await;

    proxy.set_down(true);
    within(2 * SECOND, "the API notices the outage", || async {
        (api.health().await["feed"]["connected"] == false).then_some(())
    })
    .await;
    bob.sign_out(&app).await;
    assert_eq!(
        api.get("/me", Some(&bob.access_token)).await.status,
        200,
        "not known yet"
    );
    let streams_before = proxy.count("/oauth2/revocations/stream");
    proxy.set_down(false);
    // Reconnection backoff is at most 5 s.
    within(
        7 * SECOND,
        "the event revoked during the outage arrives",
        || async { (api.get("/me", Some(&bob.access_token)).await.status == 401).then_some(()) },
    )
    .await;
    assert!(proxy.count("/oauth2/revocations/stream") > streams_before);
    let health = api.health().await;
    assert_eq!(health["feed"]["last_event_id"], 2, "{health}");
    assert_eq!(health["feed"]["connected"], true, "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_feed_applies_the_failure_policy_and_health_says_so() {
    let (app, proxy) = app_behind_proxy(Backend::Sqlite, |_| {})
        .await
        .expect("sqlite");
    let caller = api_client(&app, "read:data").await;
    let old_token = client_token(&app.base, &caller, None).await;
    let feed = feed_client(&app).await;
    let secret = feed.secret.clone().expect("secret");
    let build = |policy: Option<FeedFailurePolicy>| {
        let mut builder = verifier_for(&proxy.base, &app).revocation_feed(&feed.id, &secret);
        if let Some(policy) = policy {
            builder = builder.feed_failure_policy(policy);
        }
        builder.build()
    };
    let default_api = TestApi::start(build(None).await.expect("default")).await;
    let open_api = TestApi::start(build(Some(FeedFailurePolicy::Open)).await.expect("open")).await;
    let closed_api = TestApi::start(
        build(Some(FeedFailurePolicy::Closed))
            .await
            .expect("closed"),
    )
    .await;
    for api in [&default_api, &open_api, &closed_api] {
        assert_eq!(api.get("/me", Some(&old_token)).await.status, 200);
        assert_eq!(api.health().await["feed"]["stale"], false);
    }

    proxy.set_down(true);
    for api in [&default_api, &open_api, &closed_api] {
        within(2 * SECOND, "disconnected", || async {
            (api.health().await["feed"]["connected"] == false).then_some(())
        })
        .await;
        // Not stale yet: within the 60 s bound, tokens are accepted.
        assert_eq!(api.get("/me", Some(&old_token)).await.status, 200);
    }
    app.clock.advance(61);
    let fresh_token = client_token(&app.base, &caller, None).await;
    for api in [&default_api, &open_api, &closed_api] {
        let health = api.health().await;
        assert_eq!(health["feed"]["stale"], true, "{health}");
        assert_eq!(health["ok"], false, "{health}");
    }
    // Default: closed for tokens older than the bound, open for newer ones.
    let refused = default_api.get("/me", Some(&old_token)).await;
    refused.assert_invalid_token("stale feed, old token");
    assert!(
        refused.body.contains("revocation status is unknown"),
        "{refused:?}"
    );
    assert_eq!(default_api.get("/me", Some(&fresh_token)).await.status, 200);
    // Open accepts; Closed refuses even the fresh token.
    assert_eq!(open_api.get("/me", Some(&old_token)).await.status, 200);
    closed_api
        .get("/me", Some(&fresh_token))
        .await
        .assert_invalid_token("closed policy");

    // Back: not stale any more, tokens accepted again.
    proxy.set_down(false);
    within(7 * SECOND, "the feed reconnects", || async {
        (default_api.health().await["feed"]["stale"] == false).then_some(())
    })
    .await;
    assert_eq!(default_api.get("/me", Some(&old_token)).await.status, 200);
}

backend_test!(
    introspection_says_inactive_for_tokens_a_revocation_event_covers,
    |app: TestApp| async move {
        let web = web_client(&app).await;
        let ada = sign_in(&app, &web, "ada@example.com", &[]).await;
        assert!(active(&app, &web, &ada.access_token).await);
        // The JWT itself is still unexpired and correctly signed; only the
        // sign-out's event makes it inactive.
        ada.sign_out(&app).await;
        assert!(!active(&app, &web, &ada.access_token).await);
    }
);

backend_test!(
    revoked_opaque_token_is_refused_through_the_feed_without_new_introspection,
    |app: TestApp| async move {
        let opaque = opaque_client(&app).await;
        let feed = feed_client(&app).await;
        let verifier = verifier_for(&app.base, &app)
            .revocation_feed(&feed.id, feed.secret.as_deref().expect("secret"))
            .introspection(&feed.id, feed.secret.as_deref().expect("secret"))
            .build()
            .await
            .expect("verifier");
        let api = TestApi::start(verifier).await;
        let token = client_token(&app.base, &opaque, None).await;
        assert_eq!(api.get("/data", Some(&token)).await.status, 200);
        let revoked = reqwest::Client::new()
            .post(app.url("/oauth2/revoke"))
            .basic_auth(&opaque.id, opaque.secret.as_deref())
            .form(&[("token", token.as_str())])
            .send()
            .await
            .expect("revoke");
        assert_eq!(revoked.status(), 200);
        // The cached positive answer would live 60 s; the feed's event is faster.
        refused_within_a_second(&api, &token, "revoked opaque token").await;
    }
);

backend_test!(
    withdrawn_consent_and_deleted_clients_refuse_the_clients_tokens_within_one_second,
    |app: TestApp| async move {
        let web = web_client(&app).await;
        let other = web_client(&app).await;
        let ada = sign_in(&app, &web, "ada@example.com", &[]).await;
        let (ada_other, _) = authorize(&app, &ada.browser, &other).await;
        let bob = sign_in(&app, &web, "bob@example.com", &[]).await;
        let caller = api_client(&app, "read:data").await;
        let caller_token = client_token(&app.base, &caller, None).await;
        let api = api_following_feed(&app, &app.base).await;
        for token in [
            &ada.access_token,
            &ada_other,
            &bob.access_token,
            &caller_token,
        ] {
            assert_eq!(api.get("/me", Some(token)).await.status, 200);
            assert!(active(&app, &other, token).await);
        }

        // Ada withdraws her consent to `web` on her account page.
        latchkey::oauth::authorize::grant_consent(
            &app.state.pool,
            &ada.user_id,
            &web.id,
            &scope("openid offline_access read:data"),
            app.clock.now_secs(),
        )
        .await
        .expect("consent");
        let (pending_code, pending_verifier) = code_for(&app, &ada.browser, &web).await;
        let csrf = app.account_csrf(&ada.browser).await;
        let withdrawn = ada
            .browser
            .post(app.url(&format!("/account/consents/{}/revoke", web.id)))
            .form(&[("csrf_token", csrf.as_str())])
            .send()
            .await
            .expect("withdraw");
        assert_eq!(withdrawn.status(), 303, "{withdrawn:?}");
        refused_within_a_second(&api, &ada.access_token, "consent withdrawn").await;
        assert!(!active(&app, &other, &ada.access_token).await);
        let refreshed = ada.refresh(&app, &ada.refresh_token).await;
        assert_eq!(refreshed["error"], "invalid_grant", "{refreshed}");
        // A code issued just before cannot be redeemed after: its tokens
        // would be newer than the event.
        let redeemed = redeem(&app, &web, &pending_code, &pending_verifier).await;
        assert_eq!(redeemed["error"], "invalid_grant", "{redeemed}");
        // Only that user's grant to that client.
        assert_eq!(api.get("/me", Some(&bob.access_token)).await.status, 200);
        assert_eq!(api.get("/me", Some(&ada_other)).await.status, 200);
        assert!(active(&app, &other, &bob.access_token).await);

        // `latchkey client delete`: every token of the client, for any user
        // and the client's own.
        let cause = Cause::new(app.clock.now_secs(), Initiator::Admin, "client deleted");
        assert!(
            latchkey::oauth::clients::delete(&app.state.pool, &web.id, &cause)
                .await
                .expect("delete")
        );
        refused_within_a_second(&api, &bob.access_token, "client deleted").await;
        assert!(!active(&app, &other, &bob.access_token).await);
        assert!(
            latchkey::oauth::clients::delete(&app.state.pool, &caller.id, &cause)
                .await
                .expect("delete")
        );
        refused_within_a_second(&api, &caller_token, "own token of a deleted client").await;
        assert!(!active(&app, &other, &caller_token).await);
        // Deleting it again changes nothing and records no event.
        let events = || async {
            latchkey::revocation::events_after(&app.state.pool, 0, 0, 1_000)
                .await
                .expect("events")
                .len()
        };
        let head = events().await;
        assert!(
            !latchkey::oauth::clients::delete(&app.state.pool, &caller.id, &cause)
                .await
                .expect("delete")
        );
        assert_eq!(events().await, head);
        assert_eq!(api.get("/me", Some(&ada_other)).await.status, 200);
        assert!(active(&app, &other, &ada_other).await);
    }
);

/// The SSE body of `events` (as read from the real feed), the one at
/// `broken` with its signature altered, then `synced`.
fn tampered_feed(events: &[SseEvent], broken: usize) -> Vec<u8> {
    let mut body = String::from("retry: 1000\n\n");
    for (i, event) in events.iter().enumerate() {
        let mut data = event.data.clone();
        if i == broken {
            let (signed, signature) = data.rsplit_once('.').expect("a JWS");
            let mut bytes = jose::b64_decode(signature).expect("base64url");
            bytes[7] ^= 0x01;
            data = format!("{signed}.{}", jose::b64(&bytes));
        }
        body.push_str(&format!(
            "id: {}\nevent: revocation\ndata: {data}\n\n",
            event.id.as_deref().expect("id")
        ));
    }
    body.push_str(&format!(
        "event: synced\ndata: {{\"head\":{},\"keepalive_secs\":15}}\n\n",
        events.len()
    ));
    body.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_event_that_does_not_verify_is_never_skipped() {
    const STREAM: &str = "/oauth2/revocations/stream";
    let (app, proxy) = app_behind_proxy(Backend::Sqlite, |_| {})
        .await
        .expect("sqlite");
    let web = web_client(&app).await;
    let ada = sign_in(&app, &web, "ada@example.com", &[]).await;
    let bob = sign_in(&app, &web, "bob@example.com", &[]).await;
    let cy = sign_in(&app, &web, "cy@example.com", &[]).await;
    let api = api_following_feed(&app, &proxy.base).await;

    // The API loses its stream; until told otherwise the "issuer" answers
    // with a stream that ends at once, so the API keeps reconnecting.
    proxy.answer_with(
        STREAM,
        Some(("text/event-stream", b"retry: 1000\n\n".to_vec())),
    );
    proxy.set_down(true);
    within(2 * SECOND, "the API notices the cut", || async {
        (api.health().await["feed"]["connected"] == false).then_some(())
    })
    .await;
    proxy.set_down(false);
    for user in [&ada, &bob, &cy] {
        user.sign_out(&app).await;
    }
    let (_, token) = feed_token(&app).await;
    let (events, _) = FeedStream::open(&app.base, &token, None)
        .await
        .until_synced()
        .await;
    assert_eq!(events.len(), 3);

    // Now a stream with the three real events, the second one forged.
    proxy.answer_with(
        STREAM,
        Some(("text/event-stream", tampered_feed(&events, 1))),
    );
    refused_within_a_second_after_reconnecting(&api, &ada.access_token).await;
    let health = within(7 * SECOND, "the bad event is reported", || async {
        let health = api.health().await;
        health["feed"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("does not verify"))
            .then_some(health)
    })
    .await;
    assert_eq!(health["feed"]["last_event_id"], 1, "{health}");
    assert_eq!(health["feed"]["connected"], false, "{health}");
    // The event after the bad one is not applied either: applying it would
    // move the position past the bad one and lose it for ever.
    assert_eq!(api.get("/me", Some(&cy.access_token)).await.status, 200);
    assert_eq!(api.get("/me", Some(&bob.access_token)).await.status, 200);
    within(
        7 * SECOND,
        "the API resumes from the last good event",
        || async {
            (proxy.last_header(STREAM, "last-event-id").as_deref() == Some("1")).then_some(())
        },
    )
    .await;

    // Stuck on that event, the feed becomes stale and the failure policy
    // applies (default: tokens older than 60 s are refused): reconnecting
    // and replaying an event already applied is not contact.
    app.clock.advance(61);
    let streams = proxy.count(STREAM);
    within(12 * SECOND, "two more reconnections", || async {
        (proxy.count(STREAM) >= streams + 2).then_some(())
    })
    .await;
    let health = api.health().await;
    assert_eq!(health["feed"]["stale"], true, "{health}");
    let refused = api.get("/me", Some(&bob.access_token)).await;
    refused.assert_invalid_token("stuck feed, old token");
    assert!(
        refused.body.contains("revocation status is unknown"),
        "{refused:?}"
    );

    // The real feed again: resumed from event 1, events 2 and 3 arrive.
    proxy.answer_with(STREAM, None);
    within(7 * SECOND, "the feed catches up", || async {
        let health = api.health().await;
        (health["feed"]["stale"] == false && health["feed"]["last_event_id"] == 3).then_some(())
    })
    .await;
    for (user, what) in [
        (&bob, "the event that did not verify"),
        (&cy, "the event after it"),
    ] {
        let answer = api.get("/me", Some(&user.access_token)).await;
        answer.assert_invalid_token(what);
        assert!(
            answer
                .www_authenticate
                .as_deref()
                .unwrap_or_default()
                .contains("revoked"),
            "{what}: {answer:?}"
        );
    }
}

/// The API reconnects (backoff ≤ 5 s) and then refuses `token`.
async fn refused_within_a_second_after_reconnecting(api: &TestApi, token: &str) {
    within(
        7 * SECOND,
        "the first, genuine event is applied",
        || async { (api.get("/me", Some(token)).await.status == 401).then_some(()) },
    )
    .await;
}
