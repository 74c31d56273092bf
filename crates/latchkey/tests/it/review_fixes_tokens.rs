//! Issue #12, items 2, 3 and 6: what tokens carry and who may see them.
//!
//! - A replayed authorization code revokes what the code produced whichever
//!   of the two requests commits first — raced for real, many times — and
//!   the audit log says what each request did.
//! - User access tokens carry the sign-in's `auth_time`, `amr` and `acr`
//!   (RFC 9068 §2.2.1); a role listed in `mfa.required_roles` rides only in
//!   tokens of a sign-in with a second factor; `latchkey-verify` applies the
//!   same rule (`RequireRole`) and offers `RequireMfa` (RFC 9470 step-up).
//! - A refresh token introspects as active only for its own client.

use std::collections::BTreeSet;

use axum::routing::get;
use axum::Router;
use latchkey::oauth::clients::{AccessTokenFormat, NewClient};
use latchkey_verify::{require_mfa, require_role, RequireMfa, RequireRole};
use serde_json::{json, Value};

use crate::backend_test;
use crate::support::api::{verifier_for, web_client, Admin};
use crate::support::app::*;
use crate::support::jwt::jwt_payload;
use crate::support::oauth::{
    client_spec, introspect, machine_client, post_as, register, rows, Auth, TestClient,
};
use crate::support::oauth::{
    code_of, enroll_totp, exchange, location, rp_client, Browser, CALLBACK,
};
use crate::support::oauth::{Pkce, PASSWORD};

const SCOPES: &str = "openid offline_access";

/// A signed-in browser's code for `client` (first-party: no consent).
async fn code_from(app: &TestApp, browser: &Browser, client: &TestClient, pkce: &Pkce) -> String {
    code_of(&location(
        &browser.authorize(app, client, SCOPES, pkce, &[]).await,
    ))
}

async fn refresh(app: &TestApp, client: &TestClient, token: &str) -> crate::support::oauth::Answer {
    post_as(
        app,
        "/oauth2/token",
        client,
        Auth::Basic,
        &[("grant_type", "refresh_token"), ("refresh_token", token)],
    )
    .await
}

fn text(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("a string: {value}"))
}

/// The details of the `authorization_code_replay` audit events, oldest first.
async fn replay_details(app: &TestApp) -> Vec<String> {
    latchkey::audit::tail(&app.state.pool, 10_000)
        .await
        .expect("audit")
        .into_iter()
        .filter(|e| e.kind == "authorization_code_replay")
        .map(|e| e.detail)
        .collect()
}

// ---------------------------------------------------------------- item 2: concurrent code replay

backend_test!(
    concurrent_code_replay_revokes_what_the_code_produced_whichever_commits_first,
    |app: TestApp| async move {
        const TRIALS: usize = 30;
        let client = rp_client(&app, SCOPES, true).await;
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        let (mut one_won, mut both_refused) = (0, 0);
        for trial in 0..TRIALS {
            let browser = Browser::signed_in(&app, "ada@example.com").await;
            let pkce = Pkce::random();
            let code = code_from(&app, &browser, &client, &pkce).await;
            let audited = replay_details(&app).await.len();

            // Two redemptions at the same moment, each on its own task.
            let redeem = || {
                let (url, client, code, verifier) = (
                    app.url("/oauth2/token"),
                    client.clone(),
                    code.clone(),
                    pkce.verifier.clone(),
                );
                tokio::spawn(async move {
                    let response = reqwest::Client::new()
                        .post(url)
                        .basic_auth(&client.id, client.secret.as_deref())
                        .form(&[
                            ("grant_type", "authorization_code"),
                            ("code", code.as_str()),
                            ("redirect_uri", CALLBACK),
                            ("code_verifier", verifier.as_str()),
                        ])
                        .send()
                        .await
                        .expect("token request");
                    (
                        response.status().as_u16(),
                        response.json::<Value>().await.expect("json"),
                    )
                })
            };
            let (a, b) = (redeem(), redeem());
            let answers = [a.await.expect("task"), b.await.expect("task")];
            let winners: Vec<&Value> = answers
                .iter()
                .filter(|(status, _)| *status == 200)
                .map(|(_, body)| body)
                .collect();
            for (status, body) in &answers {
                assert!(
                    *status == 200 || (*status == 400 && body["error"] == "invalid_grant"),
                    "trial {trial}: {status} {body}"
                );
            }
            assert!(winners.len() <= 1, "trial {trial}: both got tokens");

            // Whatever was handed out is dead: access token, refresh token, session.
            for body in &winners {
                let access = text(&body["access_token"]);
                let refresh_token = text(&body["refresh_token"]);
                assert_eq!(
                    introspect(&app, &client, access).await,
                    json!({ "active": false }),
                    "trial {trial}: the winner's access token"
                );
                assert_eq!(
                    introspect(&app, &client, refresh_token).await,
                    json!({ "active": false }),
                    "trial {trial}: the winner's refresh token"
                );
                let answer = refresh(&app, &client, refresh_token).await;
                assert_eq!(answer.body["error"], "invalid_grant", "trial {trial}");
            }
            let account = browser.get_json(&app, "/account").await;
            assert_eq!(
                account.status(),
                401,
                "trial {trial}: the sign-in session ends with what the code issued"
            );

            // The audit log says what each request did.
            let details = replay_details(&app).await;
            let new = &details[audited..];
            let revoked_all = |d: &str| {
                d.contains("its access token")
                    && d.contains("its refresh-token family")
                    && d.contains("the sign-in session")
            };
            if winners.is_empty() {
                both_refused += 1;
                assert_eq!(new.len(), 2, "trial {trial}: {new:?}");
                assert!(
                    new.iter().any(|d| d.contains("nothing issued from it yet")),
                    "trial {trial}: the replay that came first: {new:?}"
                );
                assert!(
                    new.iter()
                        .any(|d| d.contains("which was not handed out") && revoked_all(d)),
                    "trial {trial}: the first use that found the mark: {new:?}"
                );
            } else {
                one_won += 1;
                assert_eq!(new.len(), 1, "trial {trial}: {new:?}");
                assert!(
                    new[0].contains("revoked what it issued") && revoked_all(&new[0]),
                    "trial {trial}: {new:?}"
                );
            }
        }
        eprintln!(
            "{TRIALS} races on {:?}: one request won in {one_won}, the replay committed first in {both_refused}",
            app.backend
        );
    }
);

backend_test!(
    replayed_code_audit_says_what_was_revoked_and_a_second_replay_nothing_more,
    |app: TestApp| async move {
        let client = rp_client(&app, SCOPES, true).await;
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        let browser = Browser::signed_in(&app, "ada@example.com").await;
        let pkce = Pkce::random();
        let code = code_from(&app, &browser, &client, &pkce).await;
        assert_eq!(exchange(&app, &client, &code, &pkce).await.status, 200);
        for _ in 0..2 {
            let replay = exchange(&app, &client, &code, &pkce).await;
            assert_eq!(replay.body["error"], "invalid_grant");
        }
        let details = replay_details(&app).await;
        assert_eq!(details.len(), 2, "{details:?}");
        for what in [
            "its access token",
            "its refresh-token family",
            "the sign-in session",
        ] {
            assert!(details[0].contains(what), "{what}: {}", details[0]);
        }
        assert!(
            details[1].contains("nothing more (already revoked)"),
            "the second replay revoked nothing new: {}",
            details[1]
        );
        assert!(
            details.iter().all(|d| !d.contains(&code)),
            "no code in the log"
        );
    }
);

// ---------------------------------------------------------------- item 3: sign-in facts and roles in tokens

backend_test!(
    access_tokens_carry_the_sign_ins_auth_time_amr_and_acr,
    |app: TestApp| async move {
        let jwt_client = rp_client(&app, SCOPES, true).await;
        let opaque_client = register(
            &app,
            NewClient {
                redirect_uris: vec![CALLBACK.into()],
                first_party: true,
                access_token_format: AccessTokenFormat::Opaque,
                ..client_spec("opaque rp", true, &["authorization_code"], SCOPES)
            },
        )
        .await;
        let resource = machine_client(&app, "").await;
        app.create_user("ada@example.com", PASSWORD, &["staff"])
            .await;
        let browser = Browser::new();
        let signed_in_at = app.clock.now_secs();
        browser
            .sign_in(&app, "ada@example.com", None, "/account")
            .await;
        app.clock.advance(7);

        let pkce = Pkce::random();
        let code = code_from(&app, &browser, &jwt_client, &pkce).await;
        let answer = exchange(&app, &jwt_client, &code, &pkce).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        let claims = jwt_payload(text(&answer.body["access_token"]));
        assert_eq!(
            claims["auth_time"], signed_in_at,
            "the sign-in, not the exchange"
        );
        assert_eq!(claims["amr"], json!(["pwd"]));
        assert_eq!(claims["acr"], "urn:latchkey:acr:1fa");
        assert_eq!(claims["roles"], json!(["staff"]));

        // Refreshed tokens report the same sign-in.
        app.clock.advance(3);
        let refreshed = refresh(&app, &jwt_client, text(&answer.body["refresh_token"])).await;
        let again = jwt_payload(text(&refreshed.body["access_token"]));
        for claim in ["auth_time", "amr", "acr", "roles"] {
            assert_eq!(again[claim], claims[claim], "{claim} after a refresh");
        }
        // Introspection reports them too, for JWTs and opaque tokens alike.
        let jwt_info = introspect(&app, &resource, text(&refreshed.body["access_token"])).await;
        let code = crate::support::oauth::code_of(&location(
            &browser
                .authorize(&app, &opaque_client, SCOPES, &pkce, &[])
                .await,
        ));
        let opaque = exchange(&app, &opaque_client, &code, &pkce).await;
        let opaque_info = introspect(&app, &resource, text(&opaque.body["access_token"])).await;
        for info in [&jwt_info, &opaque_info] {
            assert_eq!(info["active"], true, "{info}");
            assert_eq!(info["auth_time"], signed_in_at, "{info}");
            assert_eq!(info["amr"], json!(["pwd"]), "{info}");
            assert_eq!(info["acr"], "urn:latchkey:acr:1fa", "{info}");
        }

        // A sign-in with a second factor says so.
        let user = latchkey::identity::find(&app.state.pool, "ada@example.com")
            .await
            .expect("user");
        let secret = enroll_totp(&app, &user.id).await;
        let strong = Browser::new();
        let strong_at = app.clock.now_secs();
        strong
            .sign_in(&app, "ada@example.com", Some(&secret), "/account")
            .await;
        let code = code_of(&location(
            &strong
                .authorize(&app, &jwt_client, SCOPES, &pkce, &[])
                .await,
        ));
        let answer = exchange(&app, &jwt_client, &code, &pkce).await;
        let claims = jwt_payload(text(&answer.body["access_token"]));
        assert_eq!(claims["auth_time"], strong_at);
        assert_eq!(claims["amr"], json!(["pwd", "otp", "mfa"]));
        assert_eq!(claims["acr"], "urn:latchkey:acr:mfa");

        // Machine tokens have no sign-in.
        let machine = crate::support::oauth::machine_token(&app, &resource).await;
        let claims = jwt_payload(&machine);
        for claim in ["auth_time", "amr", "acr"] {
            assert!(claims.get(claim).is_none(), "{claim} in {claims}");
        }
    }
);

fn roles(claims: &Value) -> BTreeSet<String> {
    claims["roles"]
        .as_array()
        .map(|roles| {
            roles
                .iter()
                .map(|r| text(r).to_owned())
                .collect::<BTreeSet<_>>()
        })
        .unwrap_or_default()
}

fn set(values: &[&str]) -> BTreeSet<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

backend_test!(
    roles_that_need_mfa_are_left_out_of_tokens_of_sign_ins_without_a_second_factor,
    |app: TestApp| async move {
        let client = rp_client(&app, SCOPES, true).await;
        let resource = machine_client(&app, "").await;
        let user = app
            .create_user("boss@example.com", PASSWORD, &["admin", "staff"])
            .await;
        let browser = Browser::signed_in(&app, "boss@example.com").await;
        // The server's own pages refuse the role to this sign-in ...
        let admin_page = browser.get_json(&app, "/admin").await;
        assert_eq!(admin_page.status(), 403);
        // ... and so do its tokens, fresh and refreshed.
        let pkce = Pkce::random();
        let code = code_from(&app, &browser, &client, &pkce).await;
        let answer = exchange(&app, &client, &code, &pkce).await;
        let access = text(&answer.body["access_token"]).to_owned();
        assert_eq!(roles(&jwt_payload(&access)), set(&["staff"]));
        let refreshed = refresh(&app, &client, text(&answer.body["refresh_token"])).await;
        assert_eq!(
            roles(&jwt_payload(text(&refreshed.body["access_token"]))),
            set(&["staff"])
        );
        assert_eq!(
            roles(&introspect(&app, &resource, &access).await),
            set(&["staff"])
        );

        // With a second factor the role is carried.
        let secret = enroll_totp(&app, &user.id).await;
        let strong = Browser::new();
        strong
            .sign_in(&app, "boss@example.com", Some(&secret), "/account")
            .await;
        let code = code_from(&app, &strong, &client, &pkce).await;
        let answer = exchange(&app, &client, &code, &pkce).await;
        assert_eq!(
            roles(&jwt_payload(text(&answer.body["access_token"]))),
            set(&["admin", "staff"])
        );
        let refreshed = refresh(&app, &client, text(&answer.body["refresh_token"])).await;
        assert_eq!(
            roles(&jwt_payload(text(&refreshed.body["access_token"]))),
            set(&["admin", "staff"])
        );
    }
);

/// An API with the SDK's MFA-aware extractors and layers.
fn mfa_api(verifier: &latchkey_verify::Verifier) -> Router {
    Router::new()
        .route(
            "/admin",
            get(|token: RequireRole<Admin>| async move { format!("admin {}", token.sub) }),
        )
        .route(
            "/transfer",
            get(|token: RequireMfa| async move {
                axum::Json(
                    json!({ "amr": token.amr, "acr": token.acr, "auth_time": token.auth_time }),
                )
            }),
        )
        .route(
            "/admin-layer",
            get(|| async { "ok" }).route_layer(require_role("admin")),
        )
        .route(
            "/mfa-layer",
            get(|| async { "ok" }).route_layer(require_mfa()),
        )
        .layer(verifier.layer())
}

/// Serves `router` on a random port; returns its base URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    base
}

async fn call(base: &str, path: &str, token: &str) -> (u16, String, String) {
    let response = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("api");
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ascii").to_owned())
        .unwrap_or_default();
    (status, challenge, response.text().await.expect("body"))
}

backend_test!(
    sdk_require_role_of_an_mfa_role_needs_amr_mfa_and_require_mfa_asks_for_step_up,
    // A server that carries `admin` in password-only tokens (its list is
    // empty — or it is an older version): the SDK's own rule must hold.
    config = |c: &mut latchkey::Config| c.mfa.required_roles = Vec::new(),
    |app: TestApp| async move {
        let web = web_client(&app).await;
        let machine = crate::support::api::api_client(&app, "read:data").await;
        let user = app
            .create_user("boss@example.com", PASSWORD, &["admin"])
            .await;
        let weak = Browser::new();
        weak.sign_in(&app, "boss@example.com", None, "/account")
            .await;
        let (weak_token, _) = crate::support::api::authorize(&app, &weak.http, &web).await;
        assert_eq!(jwt_payload(&weak_token)["roles"], json!(["admin"]));
        let secret = enroll_totp(&app, &user.id).await;
        let strong = Browser::new();
        strong
            .sign_in(&app, "boss@example.com", Some(&secret), "/account")
            .await;
        let (strong_token, _) = crate::support::api::authorize(&app, &strong.http, &web).await;
        let machine_token = crate::support::api::client_token(&app.base, &machine, None).await;

        let verifier = verifier_for(&app.base, &app)
            .build()
            .await
            .expect("verifier");
        assert!(verifier.role_needs_mfa("admin"), "the default list");
        let api = serve(mfa_api(&verifier)).await;
        let step_up = "Bearer realm=\"api\", error=\"insufficient_user_authentication\", error_description=\"this needs a sign-in with a second factor\", acr_values=\"urn:latchkey:acr:mfa\"";
        for path in ["/admin", "/admin-layer", "/transfer", "/mfa-layer"] {
            let (status, challenge, body) = call(&api, path, &weak_token).await;
            assert_eq!(
                (status, challenge.as_str()),
                (401, step_up),
                "{path}: {body}"
            );
            let body: Value = serde_json::from_str(&body).expect("json");
            assert_eq!(body["error"], "insufficient_user_authentication", "{path}");
            let (status, _, body) = call(&api, path, &strong_token).await;
            assert_eq!(status, 200, "{path}: {body}");
        }
        let (_, _, transfer) = call(&api, "/transfer", &strong_token).await;
        let transfer: Value = serde_json::from_str(&transfer).expect("json");
        assert_eq!(transfer["amr"], json!(["pwd", "otp", "mfa"]));
        assert_eq!(transfer["acr"], "urn:latchkey:acr:mfa");
        assert!(transfer["auth_time"].is_i64());
        // A machine token: no role (403), no sign-in (401 step-up).
        let (status, _, _) = call(&api, "/admin", &machine_token).await;
        assert_eq!(status, 403);
        let (status, challenge, _) = call(&api, "/transfer", &machine_token).await;
        assert_eq!((status, challenge.as_str()), (401, step_up));

        // The list is the API's to set: without `admin` in it, the role is enough.
        let lenient = verifier_for(&app.base, &app)
            .mfa_required_roles(Vec::<String>::new())
            .build()
            .await
            .expect("verifier");
        assert!(!lenient.role_needs_mfa("admin"));
        let api = serve(mfa_api(&lenient)).await;
        assert_eq!(call(&api, "/admin", &weak_token).await.0, 200);
        assert_eq!(call(&api, "/transfer", &weak_token).await.0, 401);
    }
);

// ---------------------------------------------------------------- item 6: refresh tokens are their client's

backend_test!(
    refresh_tokens_introspect_as_active_only_for_their_own_client,
    |app: TestApp| async move {
        let owner = rp_client(&app, SCOPES, true).await;
        let other = machine_client(&app, "").await;
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        let browser = Browser::signed_in(&app, "ada@example.com").await;
        let pkce = Pkce::random();
        let code = code_from(&app, &browser, &owner, &pkce).await;
        let answer = exchange(&app, &owner, &code, &pkce).await;
        let refresh_token = text(&answer.body["refresh_token"]);
        let access = text(&answer.body["access_token"]);

        let own = introspect(&app, &owner, refresh_token).await;
        assert_eq!(own["active"], true, "{own}");
        assert_eq!(own["client_id"], owner.id.as_str());
        assert_eq!(own["token_type"], "refresh_token");
        for hint in [None, Some("refresh_token"), Some("access_token")] {
            let mut form = vec![("token", refresh_token)];
            if let Some(hint) = hint {
                form.push(("token_type_hint", hint));
            }
            let foreign = post_as(&app, "/oauth2/introspect", &other, Auth::Basic, &form).await;
            assert_eq!(foreign.status, 200);
            assert_eq!(
                foreign.body,
                json!({ "active": false }),
                "another client learns nothing (hint {hint:?})"
            );
        }
        // Access tokens stay visible to resource servers (other clients).
        assert_eq!(introspect(&app, &other, access).await["active"], true);
        // And the refresh token still works for its owner.
        assert_eq!(refresh(&app, &owner, refresh_token).await.status, 200);
    }
);

// ------------------------------------------ issue 17 item 5: an outage mid-exchange burns nothing

/// Makes every insert of a refresh family fail (a fault injected in the
/// database itself, half-way through a code exchange), or lifts it.
async fn fail_family_inserts(app: &TestApp, fail: bool) {
    let statements: &[&str] = match (app.backend, fail) {
        (Backend::Sqlite, true) => &["CREATE TRIGGER inject_fault BEFORE INSERT ON refresh_families BEGIN SELECT RAISE(ABORT, 'injected fault'); END"],
        (Backend::Sqlite, false) => &["DROP TRIGGER inject_fault"],
        (Backend::Postgres, true) => &[
            "CREATE FUNCTION inject_fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected fault'; END $$",
            "CREATE TRIGGER inject_fault BEFORE INSERT ON refresh_families FOR EACH ROW EXECUTE FUNCTION inject_fault()",
        ],
        (Backend::Postgres, false) => &[
            "DROP TRIGGER inject_fault ON refresh_families",
            "DROP FUNCTION inject_fault()",
        ],
    };
    for statement in statements {
        sqlx::query(statement)
            .execute(&app.state.pool)
            .await
            .expect("inject or lift the fault");
    }
}

backend_test!(
    a_fault_half_way_through_a_code_exchange_leaves_the_code_usable_and_issues_nothing,
    |app: TestApp| async move {
        let client = rp_client(&app, SCOPES, true).await;
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        let browser = Browser::signed_in(&app, "ada@example.com").await;
        let pkce = Pkce::random();
        let code = code_from(&app, &browser, &client, &pkce).await;
        let params = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", CALLBACK),
            ("code_verifier", pkce.verifier.as_str()),
        ];
        let exchange = || post_as(&app, "/oauth2/token", &client, Auth::Basic, &params);

        // The redemption succeeds, then the refresh family cannot be written.
        fail_family_inserts(&app, true).await;
        let failed = exchange().await;
        fail_family_inserts(&app, false).await;
        assert_eq!(failed.status, 500, "{:?}", failed.body);
        assert!(
            failed.body.get("access_token").is_none(),
            "{:?}",
            failed.body
        );
        assert_eq!(
            rows(&app, "refresh_families").await,
            0,
            "nothing of the failed exchange was kept"
        );

        // The client's retry of the same code works, and is no replay.
        let retried = exchange().await;
        assert_eq!(retried.status, 200, "{:?}", retried.body);
        assert!(
            retried.body["refresh_token"].is_string(),
            "{:?}",
            retried.body
        );
        assert!(replay_details(&app).await.is_empty());
        assert_eq!(rows(&app, "refresh_families").await, 1);

        // And the code is spent now: a third use is a replay.
        let third = exchange().await;
        assert_eq!((third.status, third.error()), (400, "invalid_grant"));
        assert_eq!(replay_details(&app).await.len(), 1);
    }
);
