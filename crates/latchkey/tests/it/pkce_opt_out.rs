//! The per-client PKCE opt-out (issue #12, item 15; RFC 9700 §2.1.1): only a
//! confidential client may go without PKCE, and only in an OpenID Connect
//! request that carries a `nonce`. Everything else still needs S256, and
//! PKCE downgrade protection holds at the token endpoint.

use latchkey::oauth::clients::{self, ClientUpdate, NewClient};
use serde_json::Value;

use crate::backend_test;
use crate::support::app::*;
use crate::support::app::{cli_database, drop_database};
use crate::support::cli::{env, latchkey};
use crate::support::jwt::jwt_payload;
use crate::support::oauth::{client_redirect, issued, signed_in_browser, Pkce};
use crate::support::oauth::{client_spec, register, TestClient};

use crate::support::oauth::CALLBACK as REDIRECT;
const NONCE: &str = "n-0S6_WzA2Mj";

fn rp_spec(confidential: bool, require_pkce: bool) -> NewClient {
    NewClient {
        redirect_uris: vec![REDIRECT.into()],
        first_party: true,
        require_pkce,
        ..client_spec(
            "certification rp",
            confidential,
            &["authorization_code"],
            "openid profile",
        )
    }
}

/// An authorization request; `pkce` and `nonce` optional, `scope` as given.
async fn authorize(
    app: &TestApp,
    browser: &reqwest::Client,
    client: &TestClient,
    scope: &str,
    nonce: Option<&str>,
    pkce: Option<&Pkce>,
) -> reqwest::Response {
    let mut params = vec![
        ("response_type", "code".to_owned()),
        ("client_id", client.id.clone()),
        ("redirect_uri", REDIRECT.to_owned()),
        ("scope", scope.to_owned()),
        ("state", "st".to_owned()),
    ];
    if let Some(nonce) = nonce {
        params.push(("nonce", nonce.to_owned()));
    }
    if let Some(pkce) = pkce {
        params.push(("code_challenge", pkce.challenge.clone()));
        params.push(("code_challenge_method", "S256".to_owned()));
    }
    browser
        .get(app.url("/oauth2/authorize"))
        .header("accept", "text/html")
        .query(&params)
        .send()
        .await
        .expect("authorize")
}

async fn redeem(
    app: &TestApp,
    client: &TestClient,
    code: &str,
    verifier: Option<&str>,
) -> (u16, Value) {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
    ];
    if let Some(v) = verifier {
        form.push(("code_verifier", v));
    }
    let response = new_client()
        .post(app.url("/oauth2/token"))
        .basic_auth(&client.id, client.secret.as_deref())
        .form(&form)
        .send()
        .await
        .expect("token");
    (
        response.status().as_u16(),
        response.json().await.expect("json"),
    )
}

fn code_of(response: &reqwest::Response) -> String {
    let (_, query) = client_redirect(response);
    query
        .get("code")
        .unwrap_or_else(|| panic!("a code in {query:?}"))
        .clone()
}

fn error_of(response: &reqwest::Response) -> String {
    let (_, query) = client_redirect(response);
    query
        .get("error")
        .unwrap_or_else(|| panic!("an error in {query:?}"))
        .clone()
}

backend_test!(
    pkce_opt_out_lets_a_confidential_client_go_without_pkce_only_in_an_oidc_request_with_nonce,
    |app: TestApp| async move {
        let browser = signed_in_browser(&app, "ada@example.com").await;
        let opted_out = register(&app, rp_spec(true, false)).await;
        let default = register(&app, rp_spec(true, true)).await;

        // The opted-out client, OIDC with nonce, no PKCE: a code, then tokens
        // without a code_verifier; the nonce is in the ID token.
        let response = authorize(&app, &browser, &opted_out, "openid", Some(NONCE), None).await;
        let (status, body) = redeem(&app, &opted_out, &code_of(&response), None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            jwt_payload(body["id_token"].as_str().expect("id_token"))["nonce"],
            NONCE
        );

        // Without nonce, or without openid, PKCE is required as for everyone.
        for (what, scope, nonce) in [
            ("no nonce", "openid", None),
            ("not an OpenID Connect request", "profile", Some(NONCE)),
        ] {
            let before = issued(&app).await;
            let response = authorize(&app, &browser, &opted_out, scope, nonce, None).await;
            assert_eq!(error_of(&response), "invalid_request", "{what}");
            assert_eq!(issued(&app).await, before, "{what}: nothing issued");
        }
        // A client that did not opt out needs PKCE even with a nonce.
        let before = issued(&app).await;
        let response = authorize(&app, &browser, &default, "openid", Some(NONCE), None).await;
        assert_eq!(error_of(&response), "invalid_request");
        assert_eq!(issued(&app).await, before);

        // The opted-out client may still use PKCE, and then it is checked.
        let pkce = Pkce::random();
        let response = authorize(
            &app,
            &browser,
            &opted_out,
            "openid",
            Some(NONCE),
            Some(&pkce),
        )
        .await;
        let code = code_of(&response);
        let (status, body) = redeem(&app, &opted_out, &code, None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_request")),
            "{body}"
        );
        let response = authorize(
            &app,
            &browser,
            &opted_out,
            "openid",
            Some(NONCE),
            Some(&pkce),
        )
        .await;
        let (status, body) =
            redeem(&app, &opted_out, &code_of(&response), Some(&pkce.verifier)).await;
        assert_eq!(status, 200, "{body}");

        // Downgrade protection: a code_verifier for a code issued without a
        // challenge is refused, and nothing is issued.
        let response = authorize(&app, &browser, &opted_out, "openid", Some(NONCE), None).await;
        let before = issued(&app).await;
        let (status, body) =
            redeem(&app, &opted_out, &code_of(&response), Some(&pkce.verifier)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "{body}"
        );
        assert!(body.get("access_token").is_none());
        assert_eq!(issued(&app).await.refresh_tokens, before.refresh_tokens);

        // Withdrawing the opt-out also voids the codes issued under it.
        let response = authorize(&app, &browser, &opted_out, "openid", Some(NONCE), None).await;
        let code = code_of(&response);
        clients::update(
            &app.state.pool,
            &opted_out.id,
            ClientUpdate {
                require_pkce: Some(true),
                ..ClientUpdate::default()
            },
            app.clock.now_secs(),
        )
        .await
        .expect("update")
        .expect("client");
        let (status, body) = redeem(&app, &opted_out, &code, None).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "{body}"
        );
    }
);

backend_test!(
    pkce_opt_out_is_refused_for_public_clients,
    |app: TestApp| async move {
        let now = app.clock.now_secs();
        assert!(
            clients::create(&app.state.pool, rp_spec(false, false), now)
                .await
                .is_err(),
            "a public client cannot be created without PKCE"
        );
        let public = register(&app, rp_spec(false, true)).await;
        assert!(
            clients::update(
                &app.state.pool,
                &public.id,
                ClientUpdate {
                    require_pkce: Some(false),
                    ..ClientUpdate::default()
                },
                now,
            )
            .await
            .is_err(),
            "nor switched to it"
        );
        // Even if a row said so, a public client is asked for PKCE.
        let browser = signed_in_browser(&app, "ada@example.com").await;
        let response = authorize(&app, &browser, &public, "openid", Some(NONCE), None).await;
        assert_eq!(error_of(&response), "invalid_request");
    }
);

async fn cli_sets_and_refuses_the_pkce_opt_out(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(url) = cli_database(backend, dir.path()).await else {
        return;
    };
    let env = env(&[("LATCHKEY_DATABASE_URL", &url)]);
    let base = [
        "client",
        "create",
        "--name",
        "rp",
        "--redirect-uri",
        REDIRECT,
        "--grant",
        "authorization_code",
        "--scope",
        "openid",
    ];
    let created = latchkey(
        dir.path(),
        &env,
        &[&base[..], &["--require-pkce", "false", "--json"]].concat(),
        None,
    )
    .await;
    created.assert_success("a confidential client without PKCE");
    assert_eq!(created.json()["require_pkce"], false);
    let id = created.json()["client_id"].as_str().expect("id").to_owned();
    let updated = latchkey(
        dir.path(),
        &env,
        &["client", "update", &id, "--require-pkce", "true", "--json"],
        None,
    )
    .await;
    updated.assert_success("back to PKCE");
    assert_eq!(updated.json()["require_pkce"], true);
    latchkey(
        dir.path(),
        &env,
        &[&base[..], &["--public", "--require-pkce", "false"]].concat(),
        None,
    )
    .await
    .assert_failure(
        "a public client without PKCE",
        &["--require-pkce", "public"],
    );
    let public = latchkey(
        dir.path(),
        &env,
        &[&base[..], &["--public", "--json"]].concat(),
        None,
    )
    .await;
    public.assert_success("a public client");
    assert_eq!(public.json()["require_pkce"], true);
    let public_id = public.json()["client_id"].as_str().expect("id").to_owned();
    latchkey(
        dir.path(),
        &env,
        &["client", "update", &public_id, "--require-pkce", "false"],
        None,
    )
    .await
    .assert_failure(
        "switching a public client to no PKCE",
        &["--require-pkce", "public"],
    );
    if backend == Backend::Postgres {
        drop_database(&url).await;
    }
}

mod cli_client_require_pkce_flag_is_refused_for_public_clients {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        cli_sets_and_refuses_the_pkce_opt_out(Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        cli_sets_and_refuses_the_pkce_opt_out(Backend::Postgres).await;
    }
}
