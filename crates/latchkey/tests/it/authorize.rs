//! The authorization endpoint (RFC 6749 §4.1, OAuth 2.1, RFC 9700, RFC 9207)
//! and the `authorization_code` grant with PKCE (RFC 7636) at the token
//! endpoint, driven by a browser-like client that signs in through the real
//! `/login` form and submits the real consent form.
//!
//! The hostile-input matrices check each case's exact outcome **and** that
//! nothing was issued or changed: the rows of `authorization_codes`,
//! `refresh_tokens`, `consents` and `authorization_requests` are counted
//! before and after. The browser is signed in and the client is first-party,
//! so a request that wrongly passed validation would get a code at once.

use latchkey::oauth::clients::NewClient;

use crate::backend_test;
use crate::support::app::*;
use crate::support::oauth::{client_spec, introspect, register, Answer, TestClient};

use crate::support::oauth::*;
use crate::support::REDIRECT;
/// A second registered redirect URI, with a query of its own.
const REDIRECT_WITH_QUERY: &str = "https://app.example.com/cb2?tenant=a";
/// RFC 7636 Appendix B.
const RFC7636_VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const RFC7636_CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// Request parameters in order, duplicates allowed (hostile requests need them).
type Params = Vec<(String, String)>;

// ---------------------------------------------------------------- helpers

/// Registration of a web client of `app.example.com`.
fn web_app(name: &str, confidential: bool, grants: &[&str], first_party: bool) -> NewClient {
    NewClient {
        redirect_uris: vec![REDIRECT.into(), REDIRECT_WITH_QUERY.into()],
        first_party,
        ..client_spec(
            name,
            confidential,
            grants,
            "openid profile email offline_access",
        )
    }
}

/// A public, first-party SPA (consent skipped) with refresh tokens.
async fn spa(app: &TestApp) -> TestClient {
    register(
        app,
        web_app("spa", false, &["authorization_code", "refresh_token"], true),
    )
    .await
}

/// The parameters of a valid code-flow request (no nonce, on purpose).
fn request(client: &TestClient, pkce: &Pkce, state: &str) -> Params {
    [
        ("response_type", "code"),
        ("client_id", client.id.as_str()),
        ("redirect_uri", REDIRECT),
        ("scope", "openid profile"),
        ("state", state),
        ("code_challenge", pkce.challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

/// `params` with `name` set to `value` (added if absent) or removed (`None`).
fn with(params: &[(String, String)], name: &str, value: Option<&str>) -> Params {
    let mut out: Vec<_> = params.iter().filter(|(k, _)| k != name).cloned().collect();
    if let Some(v) = value {
        out.push((name.to_owned(), v.to_owned()));
    }
    out
}

async fn get_authorize(
    app: &TestApp,
    browser: &reqwest::Client,
    params: &[(String, String)],
) -> reqwest::Response {
    browser
        .get(app.url("/oauth2/authorize"))
        .header("accept", "text/html")
        .query(params)
        .send()
        .await
        .expect("GET /oauth2/authorize")
}

/// Runs a first-party authorization (signed-in browser) and returns the code.
async fn code_for(app: &TestApp, browser: &reqwest::Client, params: &[(String, String)]) -> String {
    let response = get_authorize(app, browser, params).await;
    let (_, query) = client_redirect(&response);
    query
        .get("code")
        .unwrap_or_else(|| panic!("a code in {query:?}"))
        .clone()
}

async fn exchange(
    app: &TestApp,
    client: &TestClient,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> Answer {
    token(
        app,
        client,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ],
    )
    .await
}

// ---------------------------------------------------------------- client and redirect URI

backend_test!(
    bad_client_or_redirect_uri_gets_an_error_page_never_a_redirect,
    |app: TestApp| async move {
        let browser = signed_in_browser(&app, "ada@example.com").await;
        let client = spa(&app).await;
        let pkce = Pkce::random();
        let valid = request(&client, &pkce, "s1");
        // Positive control: the valid request gets a code straight away.
        let before = issued(&app).await;
        code_for(&app, &browser, &valid).await;
        assert_eq!(issued(&app).await.codes, before.codes + 1);

        let mut cases: Vec<(String, Params)> = vec![
            (
                "unknown client_id".into(),
                with(&valid, "client_id", Some("lk_0000000000000000")),
            ),
            ("missing client_id".into(), with(&valid, "client_id", None)),
            (
                "empty client_id".into(),
                with(&valid, "client_id", Some("")),
            ),
            (
                "missing redirect_uri with two registered".into(),
                with(&valid, "redirect_uri", None),
            ),
            (
                "changed query".into(),
                with(
                    &valid,
                    "redirect_uri",
                    Some("https://app.example.com/cb2?tenant=b"),
                ),
            ),
            (
                "query added to a URI with a query".into(),
                with(
                    &valid,
                    "redirect_uri",
                    Some("https://app.example.com/cb2?tenant=a&x=1"),
                ),
            ),
            (
                "duplicated client_id".into(),
                [valid.clone(), vec![("client_id".into(), client.id.clone())]].concat(),
            ),
            (
                "duplicated redirect_uri (same value)".into(),
                [
                    valid.clone(),
                    vec![("redirect_uri".into(), REDIRECT.into())],
                ]
                .concat(),
            ),
            (
                "duplicated redirect_uri (attacker value)".into(),
                [
                    valid.clone(),
                    vec![("redirect_uri".into(), "https://evil.example/cb".into())],
                ]
                .concat(),
            ),
        ];
        for (what, uri) in [
            ("added query", "https://app.example.com/cb?x=1"),
            ("empty query", "https://app.example.com/cb?"),
            ("fragment", "https://app.example.com/cb#frag"),
            ("trailing slash", "https://app.example.com/cb/"),
            ("path case change", "https://app.example.com/CB"),
            ("host case change", "https://APP.example.com/cb"),
            ("scheme case change", "HTTPS://app.example.com/cb"),
            ("prefix", "https://app.example.com/c"),
            ("suffix", "https://app.example.com/cbx"),
            ("host suffix", "https://app.example.com.evil.example/cb"),
            ("path traversal", "https://app.example.com/cb/../cb"),
            (
                "path traversal from elsewhere",
                "https://app.example.com/x/../cb",
            ),
            ("encoded slash", "https://app.example.com/cb%2F"),
            ("other host", "https://evil.example/cb"),
            (
                "registered URI inside another",
                "https://evil.example/https://app.example.com/cb",
            ),
            ("userinfo", "https://attacker@app.example.com/cb"),
            (
                "userinfo with password",
                "https://app.example.com:x@evil.example/cb",
            ),
            ("http instead of https", "http://app.example.com/cb"),
            ("default port spelled out", "https://app.example.com:443/cb"),
            ("other port", "https://app.example.com:8443/cb"),
            (
                "javascript scheme",
                "javascript:alert(1)//https://app.example.com/cb",
            ),
            ("relative", "/cb"),
        ] {
            cases.push((
                format!("redirect_uri {what}: {uri}"),
                with(&valid, "redirect_uri", Some(uri)),
            ));
        }

        for (what, params) in &cases {
            let before = issued(&app).await;
            let response = get_authorize(&app, &browser, params).await;
            assert_eq!(response.status(), 400, "{what}");
            assert!(
                response.headers().get("location").is_none(),
                "{what}: an error page, never a redirect"
            );
            let content_type = header(response.headers(), "content-type").unwrap_or_default();
            assert!(
                content_type.starts_with("text/html"),
                "{what}: {content_type}"
            );
            assert_frame_ancestors_none(response.headers(), what);
            let html = response.text().await.expect("body");
            assert!(!html.contains("evil.example"), "{what}: {html}");
            assert_eq!(issued(&app).await, before, "{what}: something was issued");
        }

        // The same, sent as a POST form.
        let before = issued(&app).await;
        let response = browser
            .post(app.url("/oauth2/authorize"))
            .form(&with(
                &valid,
                "redirect_uri",
                Some("https://evil.example/cb"),
            ))
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 400);
        assert!(response.headers().get("location").is_none());
        assert_eq!(issued(&app).await, before);
    }
);

// ---------------------------------------------------------------- errors sent to the client

backend_test!(
    every_error_redirect_carries_the_exact_code_state_and_iss,
    |app: TestApp| async move {
        let issuer = discovered_issuer(&app).await;
        assert_eq!(issuer, app.state.config.issuer_str());
        let browser = signed_in_browser(&app, "ada@example.com").await;
        let client = spa(&app).await;
        let pkce = Pkce::random();
        let valid = request(&client, &pkce, "unused");
        let dup = |name: &str, value: &str| {
            [valid.clone(), vec![(name.to_owned(), value.to_owned())]].concat()
        };
        let cases: Vec<(&str, Params, &str)> = vec![
            (
                "response_type=token (implicit)",
                with(&valid, "response_type", Some("token")),
                "unsupported_response_type",
            ),
            (
                "response_type=id_token",
                with(&valid, "response_type", Some("id_token")),
                "unsupported_response_type",
            ),
            (
                "response_type=code id_token (hybrid)",
                with(&valid, "response_type", Some("code id_token")),
                "unsupported_response_type",
            ),
            (
                "response_type=id_token token",
                with(&valid, "response_type", Some("id_token token")),
                "unsupported_response_type",
            ),
            (
                "response_type missing",
                with(&valid, "response_type", None),
                "invalid_request",
            ),
            (
                "code_challenge missing",
                with(&valid, "code_challenge", None),
                "invalid_request",
            ),
            (
                "code_challenge and method missing",
                with(
                    &with(&valid, "code_challenge", None),
                    "code_challenge_method",
                    None,
                ),
                "invalid_request",
            ),
            (
                "code_challenge_method=plain",
                with(&valid, "code_challenge_method", Some("plain")),
                "invalid_request",
            ),
            (
                "code_challenge_method=plain with the verifier as challenge",
                with(
                    &with(&valid, "code_challenge_method", Some("plain")),
                    "code_challenge",
                    Some(&pkce.verifier),
                ),
                "invalid_request",
            ),
            (
                "code_challenge_method missing",
                with(&valid, "code_challenge_method", None),
                "invalid_request",
            ),
            (
                "code_challenge_method lower case",
                with(&valid, "code_challenge_method", Some("s256")),
                "invalid_request",
            ),
            (
                "code_challenge too short",
                with(&valid, "code_challenge", Some("abc")),
                "invalid_request",
            ),
            (
                "code_challenge too long",
                with(&valid, "code_challenge", Some(&"A".repeat(44))),
                "invalid_request",
            ),
            (
                "code_challenge with base64 (not base64url) characters",
                with(
                    &valid,
                    "code_challenge",
                    Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM"),
                ),
                "invalid_request",
            ),
            (
                // An OpenID Connect request ignores such scopes instead
                // (review_fixes_oidc); a plain OAuth request must not ask.
                "scope outside the client's set, without openid",
                with(&valid, "scope", Some("profile admin")),
                "invalid_scope",
            ),
            (
                "malformed scope",
                with(&valid, "scope", Some("openid bad\"quote")),
                "invalid_scope",
            ),
            (
                "unknown prompt value",
                with(&valid, "prompt", Some("bogus")),
                "invalid_request",
            ),
            (
                "prompt=none with login",
                with(&valid, "prompt", Some("none login")),
                "invalid_request",
            ),
            (
                "negative max_age",
                with(&valid, "max_age", Some("-1")),
                "invalid_request",
            ),
            (
                "non-numeric max_age",
                with(&valid, "max_age", Some("an hour")),
                "invalid_request",
            ),
            (
                "request object",
                with(&valid, "request", Some("eyJhbGciOiJub25lIn0.e30.")),
                "request_not_supported",
            ),
            (
                "request_uri",
                with(&valid, "request_uri", Some("https://evil.example/req.jwt")),
                "request_uri_not_supported",
            ),
            (
                "unknown response_mode",
                with(&valid, "response_mode", Some("fragment")),
                "invalid_request",
            ),
            (
                "duplicated scope",
                dup("scope", "openid"),
                "invalid_request",
            ),
            (
                "duplicated response_type",
                dup("response_type", "code"),
                "invalid_request",
            ),
            (
                "duplicated code_challenge",
                dup("code_challenge", &pkce.challenge),
                "invalid_request",
            ),
            (
                "duplicated prompt",
                [
                    with(&valid, "prompt", Some("login")),
                    vec![("prompt".into(), "none".into())],
                ]
                .concat(),
                "invalid_request",
            ),
        ];
        for (i, (what, params, expected)) in cases.iter().enumerate() {
            // A state that needs encoding, different for every case.
            let state = format!("st {i}&x=y/é");
            let params = with(params, "state", Some(&state));
            let before = issued(&app).await;
            let response = get_authorize(&app, &browser, &params).await;
            assert_eq!(
                header(response.headers(), "referrer-policy"),
                Some("no-referrer"),
                "{what}"
            );
            let (base, query) = client_redirect(&response);
            assert_eq!(base, REDIRECT, "{what}");
            assert_eq!(
                query.get("error").map(String::as_str),
                Some(*expected),
                "{what}: {query:?}"
            );
            assert!(query.contains_key("error_description"), "{what}");
            assert_eq!(query.get("state"), Some(&state), "{what}: state echoed");
            assert_eq!(query.get("iss"), Some(&issuer), "{what}: iss (RFC 9207)");
            assert!(!query.contains_key("code"), "{what}");
            assert_eq!(issued(&app).await, before, "{what}: something was issued");
        }

        // A client not allowed the code flow.
        let device_only = register(
            &app,
            web_app(
                "tv",
                false,
                &["urn:ietf:params:oauth:grant-type:device_code"],
                true,
            ),
        )
        .await;
        let before = issued(&app).await;
        let response = get_authorize(&app, &browser, &request(&device_only, &pkce, "tv")).await;
        let (_, query) = client_redirect(&response);
        assert_eq!(query["error"], "unauthorized_client");
        assert_eq!(query["state"], "tv");
        assert_eq!(query["iss"], issuer);
        assert_eq!(issued(&app).await, before);

        // No state sent: none echoed, iss still there.
        let response = get_authorize(
            &app,
            &browser,
            &with(&with(&valid, "response_type", Some("token")), "state", None),
        )
        .await;
        let (_, query) = client_redirect(&response);
        assert!(!query.contains_key("state"), "{query:?}");
        assert_eq!(query["iss"], issuer);

        // The error goes to the redirect URI that was asked for, its own query kept.
        let response = get_authorize(
            &app,
            &browser,
            &with(
                &with(&valid, "redirect_uri", Some(REDIRECT_WITH_QUERY)),
                "response_type",
                Some("token"),
            ),
        )
        .await;
        let (base, query) = client_redirect(&response);
        assert_eq!(base, "https://app.example.com/cb2");
        assert_eq!(query["tenant"], "a");
        assert_eq!(query["error"], "unsupported_response_type");
        assert_eq!(query["iss"], issuer);
    }
);

backend_test!(
    interaction_errors_and_denial_carry_state_and_iss,
    |app: TestApp| async move {
        let issuer = discovered_issuer(&app).await;
        let client = spa(&app).await;
        let pkce = Pkce::random();

        // prompt=none without a session: login_required, nothing stored.
        let anonymous = new_client();
        let before = issued(&app).await;
        let params = with(
            &request(&client, &pkce, "no-session"),
            "prompt",
            Some("none"),
        );
        let (base, query) = client_redirect(&get_authorize(&app, &anonymous, &params).await);
        assert_eq!(base, REDIRECT);
        assert_eq!(query["error"], "login_required");
        assert_eq!(query["state"], "no-session");
        assert_eq!(query["iss"], issuer);
        assert_eq!(issued(&app).await, before);

        // prompt=none, signed in, third-party client never consented to: consent_required.
        let browser = signed_in_browser(&app, "ada@example.com").await;
        let third_party = register(
            &app,
            web_app("partner", false, &["authorization_code"], false),
        )
        .await;
        let params = with(
            &request(&third_party, &pkce, "no-consent"),
            "prompt",
            Some("none"),
        );
        let before = issued(&app).await;
        let (_, query) = client_redirect(&get_authorize(&app, &browser, &params).await);
        assert_eq!(query["error"], "consent_required");
        assert_eq!(query["state"], "no-consent");
        assert_eq!(query["iss"], issuer);
        assert_eq!(issued(&app).await, before);

        // The consent page: CSP, then "deny" → access_denied with state and iss.
        let response = get_authorize(&app, &browser, &request(&third_party, &pkce, "denied")).await;
        assert_eq!(response.status(), 200);
        assert_frame_ancestors_none(response.headers(), "consent page");
        let html = response.text().await.expect("consent page");
        assert!(html.contains("partner"), "the page names the client");
        let request_id = extract_input(&html, "request_id").expect("request_id");
        let csrf = extract_input(&html, "csrf_token").expect("csrf_token");
        let before = issued(&app).await;
        let response = browser
            .post(app.url("/oauth2/authorize/consent"))
            .form(&[
                ("request_id", request_id.as_str()),
                ("csrf_token", csrf.as_str()),
                ("decision", "deny"),
            ])
            .send()
            .await
            .expect("deny");
        let (_, query) = client_redirect(&response);
        assert_eq!(query["error"], "access_denied");
        assert_eq!(query["state"], "denied");
        assert_eq!(query["iss"], issuer);
        let after = issued(&app).await;
        assert_eq!(
            (after.codes, after.consents, after.refresh_tokens),
            (before.codes, before.consents, before.refresh_tokens)
        );

        // A consent POST without the CSRF token changes nothing.
        let response = get_authorize(&app, &browser, &request(&third_party, &pkce, "x")).await;
        let html = response.text().await.expect("consent page");
        let request_id = extract_input(&html, "request_id").expect("request_id");
        let before = issued(&app).await;
        let response = browser
            .post(app.url("/oauth2/authorize/consent"))
            .form(&[("request_id", request_id.as_str()), ("decision", "allow")])
            .send()
            .await
            .expect("allow without csrf");
        assert_eq!(response.status(), 403);
        assert!(response.headers().get("location").is_none());
        assert_eq!(issued(&app).await, before);
    }
);

// ---------------------------------------------------------------- success

backend_test!(
    sign_in_then_consent_issues_a_code_with_state_and_iss,
    |app: TestApp| async move {
        let issuer = discovered_issuer(&app).await;
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        let client = register(
            &app,
            web_app("partner", true, &["authorization_code"], false),
        )
        .await;
        let pkce = Pkce::random();
        let browser = new_client();

        // Not signed in: to /login, the request parked as a pending request.
        let response = get_authorize(&app, &browser, &request(&client, &pkce, "s-123")).await;
        assert_eq!(response.status(), 303);
        assert_frame_ancestors_none(response.headers(), "authorize");
        let login_url = header(response.headers(), "location")
            .expect("location")
            .to_owned();
        assert!(login_url.starts_with("/login?next="), "{login_url}");

        let page = browser
            .get(app.url(&login_url))
            .send()
            .await
            .expect("login page");
        assert_eq!(page.status(), 200);
        assert_frame_ancestors_none(page.headers(), "login page");
        let html = page.text().await.expect("login html");
        let csrf = extract_input(&html, "csrf_token").expect("csrf");
        let next = input_value(&html, "next").expect("next");
        assert!(next.starts_with("/oauth2/authorize/resume?id="), "{next}");
        let response = browser
            .post(app.url("/login"))
            .form(&[
                ("email", "ada@example.com"),
                ("password", PASSWORD),
                ("csrf_token", csrf.as_str()),
                ("next", next.as_str()),
            ])
            .send()
            .await
            .expect("login");
        assert_eq!(
            response.status(),
            303,
            "a credential POST redirects with 303, never 307"
        );
        assert_eq!(header(response.headers(), "location"), Some(next.as_str()));

        // Back at the endpoint: the consent page.
        let response = browser.get(app.url(&next)).send().await.expect("resume");
        assert_eq!(response.status(), 200);
        assert_frame_ancestors_none(response.headers(), "consent page");
        let html = response.text().await.expect("consent");
        assert!(
            html.contains("partner") && html.contains("app.example.com"),
            "{html}"
        );
        assert!(
            html.contains("openid") && html.contains("profile"),
            "{html}"
        );
        let before = issued(&app).await;
        let response = browser
            .post(app.url("/oauth2/authorize/consent"))
            .form(&[
                (
                    "request_id",
                    extract_input(&html, "request_id").expect("id").as_str(),
                ),
                (
                    "csrf_token",
                    extract_input(&html, "csrf_token").expect("csrf").as_str(),
                ),
                ("decision", "allow"),
            ])
            .send()
            .await
            .expect("allow");
        assert_eq!(
            header(response.headers(), "referrer-policy"),
            Some("no-referrer"),
            "the response carrying the code must not leak it through Referer"
        );
        assert_frame_ancestors_none(response.headers(), "code response");
        let (base, query) = client_redirect(&response);
        assert_eq!(base, REDIRECT);
        assert_eq!(query["state"], "s-123");
        assert_eq!(query["iss"], issuer);
        let after = issued(&app).await;
        assert_eq!(after.codes, before.codes + 1);
        assert_eq!(after.consents, before.consents + 1, "consent remembered");
        assert_eq!(
            after.pending_requests,
            before.pending_requests - 1,
            "pending request consumed"
        );

        // The code works for the client that asked (no nonce was sent).
        let answer = exchange(&app, &client, &query["code"], REDIRECT, &pkce.verifier).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.body["token_type"], "Bearer");
        assert!(answer.body["id_token"].is_string());
        assert!(
            answer.body.get("refresh_token").is_none(),
            "no offline_access, no refresh token"
        );
        let id_token =
            crate::support::jwt::jwt_payload(answer.body["id_token"].as_str().expect("id"));
        assert!(id_token.get("nonce").is_none(), "{id_token}");
        assert_eq!(id_token["aud"], client.id);

        // Consent is remembered: the next request gets a code without a page.
        let code = code_for(&app, &browser, &request(&client, &pkce, "again")).await;
        assert!(!code.is_empty());
    }
);

backend_test!(
    post_works_like_get_and_unknown_parameters_are_ignored,
    |app: TestApp| async move {
        let issuer = discovered_issuer(&app).await;
        let browser = signed_in_browser(&app, "ada@example.com").await;
        let client = spa(&app).await;

        let pkce = Pkce::random();
        let params = [
            request(&client, &pkce, "via-post"),
            vec![
                ("unknown_parameter".into(), "whatever".into()),
                ("utm_source".into(), "newsletter".into()),
            ],
        ]
        .concat();
        let before = issued(&app).await;
        let response = browser
            .post(app.url("/oauth2/authorize"))
            .form(&params)
            .send()
            .await
            .expect("POST /oauth2/authorize");
        assert_eq!(
            header(response.headers(), "referrer-policy"),
            Some("no-referrer")
        );
        assert_frame_ancestors_none(response.headers(), "POST authorize");
        let (base, query) = client_redirect(&response);
        assert_eq!(base, REDIRECT);
        assert_eq!(query["state"], "via-post");
        assert_eq!(query["iss"], issuer);
        assert!(!query.contains_key("unknown_parameter"));
        assert_eq!(issued(&app).await.codes, before.codes + 1);
        let answer = exchange(&app, &client, &query["code"], REDIRECT, &pkce.verifier).await;
        assert_eq!(answer.status, 200, "{answer:?}");

        // The same parameters by GET behave the same.
        let pkce = Pkce::random();
        let params = with(
            &request(&client, &pkce, "via-get"),
            "unknown_parameter",
            Some("whatever"),
        );
        let response = get_authorize(&app, &browser, &params).await;
        assert_eq!(
            header(response.headers(), "referrer-policy"),
            Some("no-referrer")
        );
        let (base, query) = client_redirect(&response);
        assert_eq!(base, REDIRECT);
        assert_eq!(query["state"], "via-get");
        assert_eq!(query["iss"], issuer);
        let answer = exchange(&app, &client, &query["code"], REDIRECT, &pkce.verifier).await;
        assert_eq!(answer.status, 200, "{answer:?}");

        // A hostile POST fails the same way a GET does.
        let before = issued(&app).await;
        let response = browser
            .post(app.url("/oauth2/authorize"))
            .form(&with(
                &request(&client, &pkce, "p"),
                "code_challenge_method",
                Some("plain"),
            ))
            .send()
            .await
            .expect("post");
        let (_, query) = client_redirect(&response);
        assert_eq!(query["error"], "invalid_request");
        assert_eq!(query["iss"], issuer);
        assert_eq!(issued(&app).await, before);
    }
);

backend_test!(
    authorize_never_answers_cors_even_for_an_allowed_origin,
    config = |c: &mut latchkey::Config| c.http.cors_allowed_origins =
        vec!["https://spa.example.com".into()],
    |app: TestApp| async move {
        let origin = "https://spa.example.com";
        // Control: the allowlist is in force on the token endpoint.
        let preflight = |path: &str| {
            new_client()
                .request(reqwest::Method::OPTIONS, app.url(path))
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .send()
        };
        let r = preflight("/oauth2/token").await.expect("preflight");
        assert_eq!(
            header(r.headers(), "access-control-allow-origin"),
            Some(origin)
        );

        let r = preflight("/oauth2/authorize").await.expect("preflight");
        assert!(header(r.headers(), "access-control-allow-origin").is_none());

        let browser = signed_in_browser(&app, "ada@example.com").await;
        let client = spa(&app).await;
        let params = request(&client, &Pkce::random(), "cors");
        let r = browser
            .get(app.url("/oauth2/authorize"))
            .query(&params)
            .header("origin", origin)
            .send()
            .await
            .expect("get");
        let (_, query) = client_redirect(&r);
        assert!(query.contains_key("code"));
        assert!(header(r.headers(), "access-control-allow-origin").is_none());
        assert!(header(r.headers(), "access-control-allow-credentials").is_none());
        let r = browser
            .post(app.url("/oauth2/authorize"))
            .form(&params)
            .header("origin", origin)
            .send()
            .await
            .expect("post");
        assert!(header(r.headers(), "access-control-allow-origin").is_none());
        // An error page too.
        let r = browser
            .get(app.url("/oauth2/authorize?client_id=nope"))
            .header("origin", origin)
            .send()
            .await
            .expect("error page");
        assert_eq!(r.status(), 400);
        assert!(header(r.headers(), "access-control-allow-origin").is_none());
    }
);

backend_test!(
    frame_ancestors_none_on_login_consent_device_and_error_pages,
    |app: TestApp| async move {
        let r = new_client()
            .get(app.url("/login"))
            .send()
            .await
            .expect("login");
        assert_eq!(r.status(), 200);
        assert_frame_ancestors_none(r.headers(), "login page");

        let browser = signed_in_browser(&app, "ada@example.com").await;
        let partner = register(
            &app,
            web_app("partner", false, &["authorization_code"], false),
        )
        .await;
        let r = get_authorize(&app, &browser, &request(&partner, &Pkce::random(), "x")).await;
        assert_eq!(r.status(), 200, "consent page");
        assert_frame_ancestors_none(r.headers(), "consent page");

        let r = browser
            .get(app.url("/device"))
            .send()
            .await
            .expect("device");
        assert_eq!(r.status(), 200);
        assert_frame_ancestors_none(r.headers(), "device page");

        let r = browser
            .get(app.url("/oauth2/authorize?client_id=unknown"))
            .send()
            .await
            .expect("error page");
        assert_eq!(r.status(), 400);
        assert_frame_ancestors_none(r.headers(), "authorization error page");
    }
);

backend_test!(
    loopback_redirect_uri_accepts_any_port_on_the_ip_literal_only,
    |app: TestApp| async move {
        let browser = signed_in_browser(&app, "ada@example.com").await;
        let native = register(
            &app,
            NewClient {
                redirect_uris: vec!["http://127.0.0.1/callback".into()],
                first_party: true,
                ..client_spec("cli", false, &["authorization_code"], "openid")
            },
        )
        .await;
        let pkce = Pkce::random();
        let base = with(&request(&native, &pkce, "native"), "scope", Some("openid"));

        let port_uri = "http://127.0.0.1:49152/callback";
        let response =
            get_authorize(&app, &browser, &with(&base, "redirect_uri", Some(port_uri))).await;
        let (target, query) = client_redirect(&response);
        assert_eq!(
            target, port_uri,
            "the code goes to the port the app listens on"
        );
        let answer = exchange(&app, &native, &query["code"], port_uri, &pkce.verifier).await;
        assert_eq!(answer.status, 200, "{answer:?}");

        for bad in [
            "http://localhost:49152/callback",
            "http://localhost/callback",
            "https://127.0.0.1:49152/callback",
            "http://127.0.0.2:49152/callback",
            "http://127.0.0.1:49152/callback/x",
            "http://127.0.0.1:49152/callback?x=1",
            "http://127.0.0.1:49152/Callback",
            "http://127.0.0.1:49152@evil.example/callback",
        ] {
            let before = issued(&app).await;
            let response =
                get_authorize(&app, &browser, &with(&base, "redirect_uri", Some(bad))).await;
            assert_eq!(response.status(), 400, "{bad}");
            assert!(response.headers().get("location").is_none(), "{bad}");
            assert_eq!(issued(&app).await, before, "{bad}");
        }
    }
);

// ---------------------------------------------------------------- token endpoint

backend_test!(
    authorization_code_replay_fails_and_revokes_what_it_issued,
    |app: TestApp| async move {
        let browser = signed_in_browser(&app, "ada@example.com").await;
        let client = spa(&app).await;
        let resource = register(
            &app,
            client_spec("resource server", true, &["client_credentials"], ""),
        )
        .await;
        let pkce = Pkce::random();
        let params = with(
            &request(&client, &pkce, "s"),
            "scope",
            Some("openid offline_access"),
        );
        let code = code_for(&app, &browser, &params).await;

        let first = exchange(&app, &client, &code, REDIRECT, &pkce.verifier).await;
        assert_eq!(first.status, 200, "{first:?}");
        let access = first.body["access_token"]
            .as_str()
            .expect("access")
            .to_owned();
        let refresh = first.body["refresh_token"]
            .as_str()
            .expect("refresh")
            .to_owned();
        assert_eq!(introspect(&app, &resource, &access).await["active"], true);
        // (Only its own client sees a refresh token; this public client
        // cannot introspect, so ask the domain.)
        let live = latchkey::tokens::refresh::describe(
            &app.state.pool,
            &latchkey::crypto::SecretToken::parse(&refresh).expect("a refresh token"),
            app.clock.now_secs(),
        )
        .await
        .expect("describe");
        assert!(
            live.is_some(),
            "the refresh token is live before the replay"
        );

        let before = issued(&app).await;
        let replay = exchange(&app, &client, &code, REDIRECT, &pkce.verifier).await;
        assert_token_error(&replay, 400, "invalid_grant", "replayed code");
        assert_eq!(issued(&app).await, before, "the replay issued nothing");

        assert_eq!(
            introspect(&app, &resource, &access).await["active"],
            false,
            "the access token of the first exchange is revoked"
        );
        assert_eq!(introspect(&app, &resource, &refresh).await["active"], false);
        let answer = token(
            &app,
            &client,
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        )
        .await;
        assert_token_error(&answer, 400, "invalid_grant", "refresh after replay");
        // The UserInfo endpoint refuses the revoked access token too.
        let r = new_client()
            .get(app.url("/oauth2/userinfo"))
            .bearer_auth(&access)
            .send()
            .await
            .expect("userinfo");
        assert_eq!(r.status(), 401);

        let events = latchkey::audit::tail(&app.state.pool, 100)
            .await
            .expect("audit");
        let replay_event = events
            .iter()
            .find(|e| e.kind == "authorization_code_replay")
            .expect("an authorization_code_replay audit event");
        assert!(
            !replay_event.detail.contains(&code),
            "no code in the audit log"
        );
    }
);

backend_test!(
    authorization_code_expires_after_60_seconds,
    |app: TestApp| async move {
        let browser = signed_in_browser(&app, "ada@example.com").await;
        let client = spa(&app).await;
        let pkce = Pkce::random();
        let early = code_for(&app, &browser, &request(&client, &pkce, "a")).await;
        let late = code_for(&app, &browser, &request(&client, &pkce, "b")).await;

        app.clock.advance(59);
        let answer = exchange(&app, &client, &early, REDIRECT, &pkce.verifier).await;
        assert_eq!(
            answer.status, 200,
            "a 59 s old code still works: {answer:?}"
        );

        app.clock.advance(2);
        let before = issued(&app).await;
        let answer = exchange(&app, &client, &late, REDIRECT, &pkce.verifier).await;
        assert_token_error(&answer, 400, "invalid_grant", "61 s old code");
        assert_eq!(issued(&app).await, before);
    }
);

backend_test!(
    authorization_code_is_bound_to_its_client_and_claimed_by_any_use,
    |app: TestApp| async move {
        let browser = signed_in_browser(&app, "ada@example.com").await;
        let client = spa(&app).await;
        let other = spa(&app).await;
        let confidential_other = register(
            &app,
            web_app("other web", true, &["authorization_code"], true),
        )
        .await;
        let pkce = Pkce::random();

        for thief in [&other, &confidential_other] {
            let code = code_for(&app, &browser, &request(&client, &pkce, "s")).await;
            let before = issued(&app).await;
            let answer = exchange(&app, thief, &code, REDIRECT, &pkce.verifier).await;
            assert_token_error(&answer, 400, "invalid_grant", "another client's code");
            // The code is claimed on its first presentation, whoever presents
            // it (oauth::authorize::redeem marks it used before the client is
            // compared), so the rightful client cannot use it afterwards: it
            // is treated as a replay.
            let answer = exchange(&app, &client, &code, REDIRECT, &pkce.verifier).await;
            assert_token_error(&answer, 400, "invalid_grant", "code after a foreign use");
            assert_eq!(issued(&app).await, before);
        }
        assert!(app
            .audit_kinds()
            .await
            .contains(&"authorization_code_replay".to_owned()));

        // A confidential client must authenticate: its id alone is not enough.
        let code = code_for(&app, &browser, &request(&confidential_other, &pkce, "s")).await;
        let unauthenticated = TestClient {
            id: confidential_other.id.clone(),
            secret: None,
        };
        let answer = exchange(&app, &unauthenticated, &code, REDIRECT, &pkce.verifier).await;
        assert_token_error(&answer, 401, "invalid_client", "no secret");
        let answer = exchange(&app, &confidential_other, &code, REDIRECT, &pkce.verifier).await;
        assert_eq!(
            answer.status, 200,
            "an unauthenticated attempt does not burn the code: {answer:?}"
        );
    }
);

backend_test!(
    token_request_hostile_inputs_get_the_exact_error_and_issue_nothing,
    |app: TestApp| async move {
        let browser = signed_in_browser(&app, "ada@example.com").await;
        let client = spa(&app).await;

        // Each case gets a fresh code (a failed attempt burns the code).
        type Mutate = fn(&mut Params);
        let cases: Vec<(&str, Mutate, u16, &str)> = vec![
            (
                "redirect_uri missing",
                |p| p.retain(|(k, _)| k != "redirect_uri"),
                400,
                "invalid_grant",
            ),
            (
                "redirect_uri different (another registered one)",
                |p| set(p, "redirect_uri", REDIRECT_WITH_QUERY),
                400,
                "invalid_grant",
            ),
            (
                "redirect_uri with a trailing slash",
                |p| set(p, "redirect_uri", "https://app.example.com/cb/"),
                400,
                "invalid_grant",
            ),
            (
                "wrong code_verifier",
                |p| {
                    set(
                        p,
                        "code_verifier",
                        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                    )
                },
                400,
                "invalid_grant",
            ),
            (
                "code_verifier missing",
                |p| p.retain(|(k, _)| k != "code_verifier"),
                400,
                "invalid_request",
            ),
            (
                "code_verifier too short",
                |p| set(p, "code_verifier", "abc"),
                400,
                "invalid_grant",
            ),
            (
                "code_verifier too long",
                |p| set(p, "code_verifier", &"a".repeat(129)),
                400,
                "invalid_grant",
            ),
            (
                "code_verifier with invalid characters",
                |p| set(p, "code_verifier", &format!("{}+/=", "a".repeat(43))),
                400,
                "invalid_grant",
            ),
            (
                "the challenge sent as verifier",
                |p| {
                    let challenge = get(p, "challenge");
                    set(p, "code_verifier", &challenge);
                },
                400,
                "invalid_grant",
            ),
            (
                "code missing",
                |p| p.retain(|(k, _)| k != "code"),
                400,
                "invalid_request",
            ),
            (
                "unknown code",
                |p| set(p, "code", "not-a-code"),
                400,
                "invalid_grant",
            ),
            (
                "duplicated code",
                |p| {
                    let code = get(p, "code");
                    p.push(("code".into(), code));
                },
                400,
                "invalid_request",
            ),
            (
                "duplicated code_verifier",
                |p| {
                    let v = get(p, "code_verifier");
                    p.push(("code_verifier".into(), v));
                },
                400,
                "invalid_request",
            ),
        ];
        fn set(p: &mut Params, name: &str, value: &str) {
            p.retain(|(k, _)| k != name);
            p.push((name.to_owned(), value.to_owned()));
        }
        fn get(p: &[(String, String)], name: &str) -> String {
            p.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        }

        for (what, mutate, status, error) in cases {
            let pkce = Pkce::random();
            let params = with(
                &request(&client, &pkce, "s"),
                "scope",
                Some("openid offline_access"),
            );
            let code = code_for(&app, &browser, &params).await;
            let mut form: Params = vec![
                ("grant_type".into(), "authorization_code".into()),
                ("code".into(), code.clone()),
                ("redirect_uri".into(), REDIRECT.into()),
                ("code_verifier".into(), pkce.verifier.clone()),
                ("challenge".into(), pkce.challenge.clone()),
            ];
            mutate(&mut form);
            form.retain(|(k, _)| k != "challenge");
            let borrowed: Vec<(&str, &str)> =
                form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let before = issued(&app).await;
            let answer = token(&app, &client, &borrowed).await;
            assert_token_error(&answer, status, error, what);
            assert_eq!(issued(&app).await, before, "{what}: something was issued");
        }

        // Verifiers that hash to the challenge but break RFC 7636 §4.1 are refused.
        for (what, verifier) in [
            ("42 characters", "a".repeat(42)),
            ("129 characters", "a".repeat(129)),
            (
                "a character outside the unreserved set",
                format!("{}+", "a".repeat(43)),
            ),
            ("a space", format!("{} b", "a".repeat(43))),
        ] {
            let pkce = Pkce::for_verifier(&verifier);
            let code = code_for(&app, &browser, &request(&client, &pkce, "s")).await;
            let answer = exchange(&app, &client, &code, REDIRECT, &pkce.verifier).await;
            assert_token_error(&answer, 400, "invalid_grant", what);
        }
        // Control: the same construction with a valid verifier works.
        let pkce = Pkce::for_verifier(&"a".repeat(43));
        let code = code_for(&app, &browser, &request(&client, &pkce, "s")).await;
        let answer = exchange(&app, &client, &code, REDIRECT, &pkce.verifier).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
);

backend_test!(
    pkce_rfc7636_appendix_b_vector_end_to_end,
    |app: TestApp| async move {
        // The helper agrees with the RFC, so it is an independent check.
        assert_eq!(
            Pkce::for_verifier(RFC7636_VERIFIER).challenge,
            RFC7636_CHALLENGE
        );
        let browser = signed_in_browser(&app, "ada@example.com").await;
        let client = spa(&app).await;
        let pkce = Pkce {
            verifier: RFC7636_VERIFIER.into(),
            challenge: RFC7636_CHALLENGE.into(),
        };
        let code = code_for(&app, &browser, &request(&client, &pkce, "rfc")).await;
        let answer = exchange(&app, &client, &code, REDIRECT, RFC7636_VERIFIER).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(answer.body["access_token"].is_string());

        // One character off fails.
        let code = code_for(&app, &browser, &request(&client, &pkce, "rfc")).await;
        let answer = exchange(
            &app,
            &client,
            &code,
            REDIRECT,
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj",
        )
        .await;
        assert_token_error(&answer, 400, "invalid_grant", "verifier off by one");
    }
);

backend_test!(
    password_and_implicit_grants_do_not_exist,
    |app: TestApp| async move {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        let public = spa(&app).await;
        let confidential = register(
            &app,
            web_app(
                "web",
                true,
                &["authorization_code", "refresh_token", "client_credentials"],
                true,
            ),
        )
        .await;
        for client in [&public, &confidential] {
            for grant_type in [
                "password",
                "implicit",
                "token",
                "urn:ietf:params:oauth:grant-type:saml2-bearer",
            ] {
                let before = issued(&app).await;
                let answer = token(
                    &app,
                    client,
                    &[
                        ("grant_type", grant_type),
                        ("username", "ada@example.com"),
                        ("password", PASSWORD),
                        ("scope", "openid"),
                    ],
                )
                .await;
                assert_token_error(&answer, 400, "unsupported_grant_type", grant_type);
                assert_eq!(issued(&app).await, before);
            }
        }
        let answer = token(&app, &public, &[("code", "x")]).await;
        assert_token_error(&answer, 400, "invalid_request", "grant_type missing");
    }
);

backend_test!(
    refresh_token_only_with_offline_access,
    |app: TestApp| async move {
        let browser = signed_in_browser(&app, "ada@example.com").await;
        let client = spa(&app).await;

        let pkce = Pkce::random();
        let before = issued(&app).await;
        let code = code_for(&app, &browser, &request(&client, &pkce, "s")).await;
        let answer = exchange(&app, &client, &code, REDIRECT, &pkce.verifier).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(answer.body.get("refresh_token").is_none(), "{answer:?}");
        assert_eq!(issued(&app).await.refresh_tokens, before.refresh_tokens);

        let pkce = Pkce::random();
        let params = with(
            &request(&client, &pkce, "s"),
            "scope",
            Some("openid offline_access"),
        );
        let code = code_for(&app, &browser, &params).await;
        let answer = exchange(&app, &client, &code, REDIRECT, &pkce.verifier).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert!(answer.body["refresh_token"].is_string(), "{answer:?}");
        assert_eq!(issued(&app).await.refresh_tokens, before.refresh_tokens + 1);
        let refreshed = token(
            &app,
            &client,
            &[
                ("grant_type", "refresh_token"),
                (
                    "refresh_token",
                    answer.body["refresh_token"].as_str().expect("rt"),
                ),
            ],
        )
        .await;
        assert_eq!(refreshed.status, 200, "{refreshed:?}");
    }
);

backend_test!(
    a_session_that_must_change_its_password_gets_no_code_or_consent_until_it_does,
    |app: TestApp| async move {
        let user = app.create_user("ada@example.com", PASSWORD, &[]).await;
        latchkey::identity::set_must_change_password(
            &app.state.pool,
            &user.id,
            true,
            app.clock.now_secs(),
        )
        .await
        .expect("flag");
        let browser = new_client();
        assert_eq!(
            app.login_with(&browser, "ada@example.com", PASSWORD)
                .await
                .status(),
            303
        );
        let first_party = spa(&app).await;
        let third_party = register(
            &app,
            web_app("partner", false, &["authorization_code"], false),
        )
        .await;
        let before = issued(&app).await;
        for (what, client) in [("first-party", &first_party), ("third-party", &third_party)] {
            let pkce = Pkce::random();
            let response = get_authorize(&app, &browser, &request(client, &pkce, "s1")).await;
            assert_eq!(response.status(), 303, "{what}");
            let location = header(response.headers(), "location").expect("location");
            assert!(
                location.starts_with(
                    "/account/password?required=1&next=%2Foauth2%2Fauthorize%2Fresume%3Fid%3D"
                ),
                "{what}: {location}"
            );
            // prompt=none cannot show the page: an error at the client, no code.
            let silent = with(&request(client, &pkce, "s2"), "prompt", Some("none"));
            let (base, query) = client_redirect(&get_authorize(&app, &browser, &silent).await);
            assert_eq!(base, REDIRECT, "{what}");
            assert_eq!(
                query.get("error").map(String::as_str),
                Some("interaction_required"),
                "{what}: {query:?}"
            );
            assert!(!query.contains_key("code"), "{what}: {query:?}");
        }
        let after = issued(&app).await;
        assert_eq!(after.codes, before.codes, "no code for a flagged session");
        assert_eq!(after.consents, before.consents, "no consent either");

        // The resume link waits too; after the change the request continues.
        let pkce = Pkce::random();
        let response = get_authorize(&app, &browser, &request(&first_party, &pkce, "s3")).await;
        let location = header(response.headers(), "location")
            .expect("location")
            .to_owned();
        let resume = url::Url::parse(&app.url(&location))
            .expect("url")
            .query_pairs()
            .find(|(k, _)| k == "next")
            .map(|(_, v)| v.to_string())
            .expect("next");
        let waiting = browser
            .get(app.url(&resume))
            .header("accept", "text/html")
            .send()
            .await
            .expect("resume");
        assert_eq!(waiting.status(), 303);
        assert!(header(waiting.headers(), "location")
            .expect("location")
            .starts_with("/account/password?required=1"));
        assert_eq!(issued(&app).await.codes, before.codes);

        let html = browser
            .get(app.url(&location))
            .header("accept", "text/html")
            .send()
            .await
            .expect("password page")
            .text()
            .await
            .expect("html");
        assert!(html.contains("id=\"password-required\""), "{html}");
        assert_eq!(input_value(&html, "next").as_deref(), Some(resume.as_str()));
        let csrf = extract_input(&html, "csrf_token").expect("csrf");
        let changed = browser
            .post(app.url("/account/password"))
            .form(&[
                ("csrf_token", csrf.as_str()),
                ("current_password", PASSWORD),
                ("new_password", "a passphrase of my own"),
                ("next", resume.as_str()),
            ])
            .send()
            .await
            .expect("change");
        assert_eq!(changed.status(), 303);
        assert_eq!(header(changed.headers(), "location"), Some(resume.as_str()));
        let response = browser
            .get(app.url(&resume))
            .header("accept", "text/html")
            .send()
            .await
            .expect("resume");
        let (base, query) = client_redirect(&response);
        assert_eq!(base, REDIRECT);
        assert!(query.contains_key("code"), "{query:?}");
        assert_eq!(query.get("state").map(String::as_str), Some("s3"));
        assert_eq!(issued(&app).await.codes, before.codes + 1);
    }
);
