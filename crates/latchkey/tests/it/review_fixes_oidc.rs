//! Issue #12, items 10, 11 and 12: OpenID Connect conformance of the
//! authorization endpoint.
//!
//! - `prompt=login` and `max_age` are judged against the moment the request
//!   arrived: a sign-in made after it satisfies it however late the browser
//!   comes back (no sign-in loop), one made before it — even in the same
//!   second — does not for `prompt=login` and `max_age=0`; `auth_time` is the
//!   sign-in's.
//! - An `id_token_hint` naming another user than the signed-in one: with
//!   `prompt=none` `login_required`, otherwise the sign-in page for that
//!   user; never a code for the wrong user.
//! - Scope values an OpenID Connect request's client is not registered for
//!   (`address` and `phone` among them: Latchkey holds no such claims) are
//!   ignored, not `invalid_scope`.

use serde_json::Value;

use crate::backend_test;
use crate::support::app::*;
use crate::support::jwt::jwt_payload;
use crate::support::oauth::{client_spec, register, TestClient};
use crate::support::oauth::{
    code_of, exchange, location, pending_id_of, query_param, rp_client, Browser, CALLBACK,
};
use crate::support::oauth::{Pkce, PASSWORD};

/// The ID token of exchanging a redirect's code.
async fn id_token_of(app: &TestApp, client: &TestClient, redirect: &str, pkce: &Pkce) -> Value {
    let answer = exchange(app, client, &code_of(redirect), pkce).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    jwt_payload(answer.body["id_token"].as_str().expect("id_token"))
}

/// Follows a redirect to the sign-in page: signs `email` in and comes back
/// to the request. Returns where the request then sends the browser.
async fn sign_in_and_resume(
    app: &TestApp,
    browser: &Browser,
    to_login: &str,
    email: &str,
) -> String {
    assert!(
        to_login.starts_with("/login?"),
        "the sign-in page: {to_login}"
    );
    let next = query_param(to_login, "next").expect("next");
    let back = browser.sign_in(app, email, None, &next).await;
    assert_eq!(back, next);
    location(&browser.get(app, &back).await)
}

#[track_caller]
fn assert_error_at_client(redirect: &str, error: &str, app: &TestApp) {
    assert!(redirect.starts_with(CALLBACK), "{redirect}");
    assert_eq!(
        query_param(redirect, "error").as_deref(),
        Some(error),
        "{redirect}"
    );
    assert_eq!(
        query_param(redirect, "state").as_deref(),
        Some("st"),
        "{redirect}"
    );
    assert_eq!(
        query_param(redirect, "iss").as_deref(),
        Some(app.base.as_str())
    );
    assert!(query_param(redirect, "code").is_none(), "{redirect}");
}

// ---------------------------------------------------------------- item 10

backend_test!(
    prompt_login_and_max_age_0_are_not_satisfied_by_a_sign_in_from_before_the_request,
    |app: TestApp| async move {
        let client = rp_client(&app, "openid", true).await;
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        for extra in [[("prompt", "login")], [("max_age", "0")]] {
            let browser = Browser::signed_in(&app, "ada@example.com").await;
            let signed_in_at = app.clock.now_secs();
            // The request comes in the same second (the clock stands still).
            let pkce = Pkce::random();
            let to_login = location(
                &browser
                    .authorize(&app, &client, "openid", &pkce, &extra)
                    .await,
            );
            assert!(
                to_login.starts_with("/login?") && to_login.contains("reauth=1"),
                "{extra:?}: a new sign-in, not a code: {to_login}"
            );
            let back = sign_in_and_resume(&app, &browser, &to_login, "ada@example.com").await;
            let id = id_token_of(&app, &client, &back, &pkce).await;
            assert_eq!(id["auth_time"], signed_in_at, "{extra:?}");
        }
    }
);

backend_test!(
    a_sign_in_after_the_request_satisfies_max_age_however_late_the_browser_returns,
    |app: TestApp| async move {
        // A third-party client: the consent page adds time after the sign-in.
        let client = rp_client(&app, "openid profile", false).await;
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        let browser = Browser::new();
        let pkce = Pkce::random();
        let to_login = location(
            &browser
                .authorize(&app, &client, "openid", &pkce, &[("max_age", "1")])
                .await,
        );
        let pending = pending_id_of(&to_login);
        app.clock.advance(3);
        let signed_in_at = app.clock.now_secs();
        let next = query_param(&to_login, "next").expect("next");
        browser.sign_in(&app, "ada@example.com", None, &next).await;
        app.clock.advance(4);
        let consent = browser.get(&app, &next).await;
        assert_eq!(
            consent.status(),
            200,
            "the consent page, not the sign-in page again"
        );
        app.clock.advance(4);
        let back = location(&browser.consent(&app, &pending, "allow").await);
        let id = id_token_of(&app, &client, &back, &pkce).await;
        assert_eq!(
            id["auth_time"], signed_in_at,
            "auth_time is the sign-in, exactly"
        );

        // A sign-in from before the request, young enough when it arrived:
        // the consent answered later than max_age still gets its code.
        app.clock.advance(20);
        let pkce = Pkce::random();
        let consent = browser
            .authorize(&app, &client, "openid profile", &pkce, &[("max_age", "60")])
            .await;
        assert_eq!(consent.status(), 200, "within max_age: the consent page");
        let html = consent.text().await.expect("html");
        let pending = extract_input(&html, "request_id").expect("request_id");
        app.clock.advance(90);
        let back = location(&browser.consent(&app, &pending, "allow").await);
        let id = id_token_of(&app, &client, &back, &pkce).await;
        assert_eq!(id["auth_time"], signed_in_at);
    }
);

// ---------------------------------------------------------------- item 11

/// Signs `email` in with a new browser and returns it with an ID token.
async fn id_token_for(app: &TestApp, client: &TestClient, email: &str) -> (Browser, String) {
    let browser = Browser::signed_in(app, email).await;
    let pkce = Pkce::random();
    let redirect = location(&browser.authorize(app, client, "openid", &pkce, &[]).await);
    let answer = exchange(app, client, &code_of(&redirect), &pkce).await;
    let token = answer.body["id_token"]
        .as_str()
        .expect("id_token")
        .to_owned();
    (browser, token)
}

backend_test!(
    id_token_hint_naming_another_user_with_prompt_none_is_login_required,
    |app: TestApp| async move {
        let client = rp_client(&app, "openid", true).await;
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        app.create_user("bob@example.com", PASSWORD, &[]).await;
        let (_, ada_hint) = id_token_for(&app, &client, "ada@example.com").await;
        let (bob, bob_hint) = id_token_for(&app, &client, "bob@example.com").await;

        let pkce = Pkce::random();
        let extra = [("prompt", "none"), ("id_token_hint", ada_hint.as_str())];
        let redirect = location(&bob.authorize(&app, &client, "openid", &pkce, &extra).await);
        assert_error_at_client(&redirect, "login_required", &app);

        // Positive control: Bob's own hint.
        let extra = [("prompt", "none"), ("id_token_hint", bob_hint.as_str())];
        let redirect = location(&bob.authorize(&app, &client, "openid", &pkce, &extra).await);
        let id = id_token_of(&app, &client, &redirect, &pkce).await;
        assert_eq!(id["sub"], jwt_payload(&bob_hint)["sub"]);
    }
);

backend_test!(
    id_token_hint_naming_another_user_asks_to_sign_in_as_that_user_never_a_code_for_the_wrong_one,
    |app: TestApp| async move {
        let client = rp_client(&app, "openid", true).await;
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        app.create_user("bob@example.com", PASSWORD, &[]).await;
        let (_, ada_hint) = id_token_for(&app, &client, "ada@example.com").await;
        let (bob, _) = id_token_for(&app, &client, "bob@example.com").await;
        let pkce = Pkce::random();
        let extra = [("id_token_hint", ada_hint.as_str())];

        let to_login = location(&bob.authorize(&app, &client, "openid", &pkce, &extra).await);
        assert!(to_login.starts_with("/login?"), "{to_login}");
        assert_eq!(
            query_param(&to_login, "login_hint"),
            None,
            "the hinted user's email is not revealed to whoever holds the ID token"
        );
        let page = bob.get(&app, &to_login).await.text().await.expect("html");
        assert!(page.contains("asked for another account"), "{page}");

        // Signing in as Bob again changes nothing: no code for Bob.
        let again = sign_in_and_resume(&app, &bob, &to_login, "bob@example.com").await;
        assert!(
            again.starts_with("/login?"),
            "still the sign-in page: {again}"
        );
        // As Ada: the code, for Ada.
        let back = sign_in_and_resume(&app, &bob, &again, "ada@example.com").await;
        let id = id_token_of(&app, &client, &back, &pkce).await;
        assert_eq!(id["sub"], jwt_payload(&ada_hint)["sub"]);

        // A hint that is not one of our ID tokens is a bad request.
        let access_token = {
            let browser = Browser::signed_in(&app, "ada@example.com").await;
            let redirect = location(&browser.authorize(&app, &client, "openid", &pkce, &[]).await);
            let answer = exchange(&app, &client, &code_of(&redirect), &pkce).await;
            answer.body["access_token"]
                .as_str()
                .expect("access")
                .to_owned()
        };
        for bad in ["not-a-token", access_token.as_str()] {
            let extra = [("id_token_hint", bad)];
            let redirect = location(&bob.authorize(&app, &client, "openid", &pkce, &extra).await);
            assert_error_at_client(&redirect, "invalid_request", &app);
        }
    }
);

// ---------------------------------------------------------------- item 12

backend_test!(
    unknown_scopes_in_an_oidc_request_are_ignored_and_address_and_phone_release_nothing,
    |app: TestApp| async move {
        let client = rp_client(&app, "openid email", true).await;
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        let browser = Browser::signed_in(&app, "ada@example.com").await;
        let pkce = Pkce::random();
        let redirect = location(
            &browser
                .authorize(
                    &app,
                    &client,
                    "openid email address phone made:up",
                    &pkce,
                    &[],
                )
                .await,
        );
        let answer = exchange(&app, &client, &code_of(&redirect), &pkce).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.body["scope"], "email openid", "what was granted");
        let id = jwt_payload(answer.body["id_token"].as_str().expect("id_token"));
        assert_eq!(id["email"], "ada@example.com");
        let userinfo: Value = new_client()
            .get(app.url("/oauth2/userinfo"))
            .bearer_auth(answer.body["access_token"].as_str().expect("access"))
            .send()
            .await
            .expect("userinfo")
            .json()
            .await
            .expect("json");
        assert_eq!(userinfo["email"], "ada@example.com");
        for claims in [&id, &userinfo] {
            for claim in ["address", "phone_number", "phone_number_verified"] {
                assert!(claims.get(claim).is_none(), "{claim} in {claims}");
            }
        }

        // A plain OAuth request (no openid) must still stay within its scopes.
        let api = register(
            &app,
            latchkey::oauth::clients::NewClient {
                redirect_uris: vec![CALLBACK.into()],
                first_party: true,
                ..client_spec("api", true, &["authorization_code"], "read")
            },
        )
        .await;
        let redirect = location(
            &browser
                .authorize(&app, &api, "read made:up", &pkce, &[])
                .await,
        );
        assert_error_at_client(&redirect, "invalid_scope", &app);
    }
);
