//! The web security baseline: security headers on every response, `__Host-`
//! cookies and HSTS behind an https issuer, the CORS allowlist, hostile
//! request bodies (invariant 12) and a login form that needs no JavaScript.

use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::backend_test;
use crate::support::app::*;

use crate::support::PASSWORD;
const HTTPS_ISSUER: &str = "https://id.example.test";
const APP_ORIGIN: &str = "https://app.example.test";

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().expect("ascii header"))
}

/// The headers every response must carry; `cacheable` only for `/static/`.
fn assert_baseline_headers(what: &str, headers: &HeaderMap, cacheable: bool) {
    assert_eq!(
        header(headers, "x-content-type-options"),
        Some("nosniff"),
        "{what}: nosniff"
    );
    let csp = header(headers, "content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy"));
    for directive in [
        "default-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
        "base-uri 'none'",
    ] {
        assert!(
            csp.split(';').any(|d| d.trim() == directive),
            "{what}: CSP lacks {directive:?}: {csp}"
        );
    }
    let referrer =
        header(headers, "referrer-policy").unwrap_or_else(|| panic!("{what}: no Referrer-Policy"));
    assert!(
        !matches!(referrer, "unsafe-url" | "no-referrer-when-downgrade" | ""),
        "{what}: Referrer-Policy {referrer:?} leaks full URLs"
    );
    let permissions = header(headers, "permissions-policy")
        .unwrap_or_else(|| panic!("{what}: no Permissions-Policy"));
    assert!(permissions.contains("camera=()"), "{what}: {permissions}");
    let cache =
        header(headers, "cache-control").unwrap_or_else(|| panic!("{what}: no Cache-Control"));
    if cacheable {
        assert!(!cache.contains("no-store"), "{what}: {cache}");
    } else {
        assert!(cache.contains("no-store"), "{what}: Cache-Control {cache}");
    }
}

/// All `Set-Cookie` values of a response.
fn set_cookies(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("ascii").to_owned())
        .collect()
}

/// The `Set-Cookie` line for `name`, and the cookie's value.
fn cookie_named(headers: &HeaderMap, name: &str) -> (String, String) {
    let line = set_cookies(headers)
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie in {:?}", set_cookies(headers)));
    let value = line[name.len() + 1..]
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned();
    (line, value)
}

/// What a `__Host-` cookie must be: Secure, Path=/, no Domain (RFC 6265bis),
/// and we add HttpOnly and SameSite=Lax.
fn assert_host_cookie(line: &str) {
    let attributes: Vec<String> = line
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect();
    assert!(line.starts_with("__Host-"), "{line}");
    for required in ["secure", "httponly", "samesite=lax", "path=/"] {
        assert!(
            attributes.iter().any(|a| a == required),
            "{line} lacks {required}"
        );
    }
    assert!(
        !attributes.iter().any(|a| a.starts_with("domain")),
        "{line} must not have a Domain"
    );
}

async fn active_sessions(app: &TestApp) -> i64 {
    latchkey::session::count_active(
        &app.state.pool,
        &app.state.config.session,
        app.clock.now_secs(),
    )
    .await
    .expect("count sessions")
}

async fn user_count(app: &TestApp) -> i64 {
    latchkey::identity::count(&app.state.pool)
        .await
        .expect("count users")
}

/// After a refused request: no session exists and no user was added.
async fn assert_nothing_changed(app: &TestApp, users_before: i64) {
    assert_eq!(active_sessions(app).await, 0, "no session was created");
    assert_eq!(user_count(app).await, users_before, "no user was created");
    assert!(
        !app.audit_kinds()
            .await
            .contains(&"login_succeeded".to_owned()),
        "nobody signed in"
    );
}

/// POSTs a raw body to `/login` with a content type.
async fn post_login_raw(
    app: &TestApp,
    client: &reqwest::Client,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    client
        .post(app.url("/login"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("post login")
}

backend_test!(
    every_response_carries_the_security_headers,
    |app: TestApp| async move {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        let anonymous = new_client();
        let mut checked = Vec::new();

        let r = anonymous
            .get(app.url("/login"))
            .send()
            .await
            .expect("login page");
        assert_eq!(r.status(), 200);
        checked.push(("login page", r.headers().clone(), false));

        let r = anonymous
            .get(app.url("/account/sessions"))
            .send()
            .await
            .expect("401");
        assert_eq!(r.status(), 401);
        checked.push(("401", r.headers().clone(), false));

        let r = anonymous
            .get(app.url("/no/such/page"))
            .send()
            .await
            .expect("404");
        assert_eq!(r.status(), 404);
        checked.push(("404", r.headers().clone(), false));

        let r = anonymous
            .get(app.url("/healthz"))
            .send()
            .await
            .expect("healthz");
        assert_eq!(r.status(), 200);
        checked.push(("/healthz", r.headers().clone(), false));

        let r = anonymous
            .get(app.url("/readyz"))
            .send()
            .await
            .expect("readyz");
        assert_eq!(r.status(), 200);
        checked.push(("/readyz", r.headers().clone(), false));

        let r = anonymous
            .get(app.url("/static/latchkey.css"))
            .send()
            .await
            .expect("css");
        assert_eq!(r.status(), 200);
        assert!(header(r.headers(), "content-type")
            .expect("type")
            .starts_with("text/css"));
        checked.push(("static CSS", r.headers().clone(), true));

        let r = anonymous
            .post(app.url("/login"))
            .form(&[("email", "ada@example.com"), ("password", PASSWORD)])
            .send()
            .await
            .expect("post without csrf");
        assert_eq!(r.status(), 403);
        checked.push(("POST error (403)", r.headers().clone(), false));

        let r = post_login_raw(&app, &anonymous, "application/json", "{not json").await;
        assert_eq!(r.status(), 400);
        checked.push(("POST error (400)", r.headers().clone(), false));

        let r = post_login_raw(&app, &anonymous, "application/json", vec![b'x'; 100_000]).await;
        assert_eq!(r.status(), 413);
        checked.push(("POST error (413)", r.headers().clone(), false));

        let r = anonymous
            .request(reqwest::Method::PUT, app.url("/login"))
            .send()
            .await
            .expect("put");
        assert_eq!(r.status(), 405);
        checked.push(("405", r.headers().clone(), false));

        let browser = new_client();
        let r = app.login_with(&browser, "ada@example.com", PASSWORD).await;
        assert_eq!(r.status(), 303);
        checked.push(("sign-in redirect", r.headers().clone(), false));

        let r = browser
            .get(app.url("/account"))
            .header("accept", "text/html")
            .send()
            .await
            .expect("account page");
        assert_eq!(r.status(), 200);
        checked.push(("account page", r.headers().clone(), false));

        let r = browser
            .get(app.url("/account/sessions"))
            .send()
            .await
            .expect("json api");
        assert_eq!(r.status(), 200);
        checked.push(("JSON API", r.headers().clone(), false));

        for (what, headers, cacheable) in &checked {
            assert_baseline_headers(what, headers, *cacheable);
            assert!(
                header(headers, "strict-transport-security").is_none(),
                "{what}: no HSTS on an http issuer (browsers ignore it, and it would pin localhost)"
            );
        }
    }
);

backend_test!(
    https_issuer_sends_hsts_and_host_prefixed_secure_cookies,
    config = |c: &mut latchkey::Config| c.issuer = HTTPS_ISSUER.into(),
    |app: TestApp| async move {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        // A plain client: `Secure` cookies would not be replayed over http,
        // so cookies are read from Set-Cookie and sent back by hand.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");

        let page = client
            .get(app.url("/login"))
            .send()
            .await
            .expect("login page");
        assert_eq!(page.status(), 200);
        let hsts = header(page.headers(), "strict-transport-security").expect("HSTS");
        let max_age: i64 = hsts
            .split(';')
            .find_map(|d| d.trim().strip_prefix("max-age="))
            .expect("max-age")
            .parse()
            .expect("seconds");
        assert!(max_age >= 31_536_000, "HSTS at least a year: {hsts}");
        let (csrf_line, csrf_cookie) = cookie_named(page.headers(), "__Host-latchkey_csrf");
        assert_host_cookie(&csrf_line);
        assert!(
            !set_cookies(page.headers())
                .iter()
                .any(|c| c.starts_with("latchkey_")),
            "no unprefixed cookie on https"
        );
        let token = extract_input(&page.text().await.expect("html"), "csrf_token").expect("token");

        // The CSRF origin check now expects the https origin.
        let form = [
            ("email", "ada@example.com"),
            ("password", PASSWORD),
            ("csrf_token", token.as_str()),
        ];
        let refused = client
            .post(app.url("/login"))
            .header("cookie", format!("__Host-latchkey_csrf={csrf_cookie}"))
            .header("origin", app.base.as_str())
            .form(&form)
            .send()
            .await
            .expect("post");
        assert_eq!(refused.status(), 403, "an http origin is not the issuer");
        let signed = client
            .post(app.url("/login"))
            .header("cookie", format!("__Host-latchkey_csrf={csrf_cookie}"))
            .header("origin", HTTPS_ISSUER)
            .form(&form)
            .send()
            .await
            .expect("post");
        assert_eq!(signed.status(), 303);
        assert!(header(signed.headers(), "strict-transport-security").is_some());
        let (session_line, session) = cookie_named(signed.headers(), "__Host-latchkey_session");
        assert_host_cookie(&session_line);

        // The server reads the prefixed name back, and only that name.
        let account = client
            .get(app.url("/account"))
            .header("accept", "application/json")
            .header("cookie", format!("__Host-latchkey_session={session}"))
            .send()
            .await
            .expect("account");
        assert_eq!(account.status(), 200);
        assert!(header(account.headers(), "strict-transport-security").is_some());
        let csrf: String = account.json::<Value>().await.expect("json")["csrf_token"]
            .as_str()
            .expect("csrf")
            .to_owned();
        let unprefixed = client
            .get(app.url("/account/sessions"))
            .header("cookie", format!("latchkey_session={session}"))
            .send()
            .await
            .expect("account");
        assert_eq!(unprefixed.status(), 401);
        assert!(header(unprefixed.headers(), "strict-transport-security").is_some());

        // Signing out removes the cookie with the same attributes (a browser
        // ignores a __Host- removal that is not Secure with Path=/).
        let out = client
            .post(app.url("/logout"))
            .header("cookie", format!("__Host-latchkey_session={session}"))
            .header("origin", HTTPS_ISSUER)
            .form(&[("csrf_token", csrf.as_str())])
            .send()
            .await
            .expect("logout");
        assert_eq!(out.status(), 303);
        let (removal, value) = cookie_named(out.headers(), "__Host-latchkey_session");
        assert_host_cookie(&removal);
        assert!(value.is_empty(), "{removal}");
        assert!(
            removal.to_ascii_lowercase().contains("max-age=0"),
            "{removal}"
        );
        assert_eq!(active_sessions(&app).await, 0);
    }
);

fn cors_headers(headers: &HeaderMap) -> Vec<String> {
    headers
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    new_client()
        .request(reqwest::Method::OPTIONS, app.url("/oauth2/token"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("preflight")
}

async fn cross_origin_get(app: &TestApp, origin: &str) -> reqwest::Response {
    new_client()
        .get(app.url("/.well-known/jwks.json"))
        .header("origin", origin)
        .send()
        .await
        .expect("get")
}

backend_test!(
    cors_allows_exactly_the_listed_origin,
    config = |c: &mut latchkey::Config| c.http.cors_allowed_origins = vec![APP_ORIGIN.into()],
    |app: TestApp| async move {
        let r = preflight(&app, APP_ORIGIN).await;
        assert!(r.status().is_success(), "{}", r.status());
        let allowed: Vec<_> = r
            .headers()
            .get_all("access-control-allow-origin")
            .iter()
            .map(|v| v.to_str().expect("ascii").to_owned())
            .collect();
        assert_eq!(
            allowed,
            vec![APP_ORIGIN.to_owned()],
            "the exact origin, never *"
        );
        let methods = header(r.headers(), "access-control-allow-methods").expect("methods");
        assert!(methods.contains("POST"), "{methods}");
        // Pages, cookie endpoints and the authorization endpoint never get CORS,
        // even for an allowed origin (RFC 9700 §4.x: no CORS at /authorize).
        for path in ["/oauth2/authorize", "/account/sessions", "/login"] {
            let r = new_client()
                .request(reqwest::Method::OPTIONS, app.url(path))
                .header("origin", APP_ORIGIN)
                .header("access-control-request-method", "GET")
                .send()
                .await
                .expect("preflight");
            assert!(
                cors_headers(r.headers()).is_empty(),
                "{path} answered CORS: {:?}",
                cors_headers(r.headers())
            );
        }
        assert!(
            header(r.headers(), "access-control-allow-credentials").is_none(),
            "credentials are off unless http.cors_allow_credentials is set"
        );

        let r = cross_origin_get(&app, APP_ORIGIN).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            header(r.headers(), "access-control-allow-origin"),
            Some(APP_ORIGIN)
        );

        for other in [
            "https://evil.example",
            "http://app.example.test",
            "https://app.example.test.evil.example",
            "https://app.example.test:8443",
            "null",
        ] {
            let r = preflight(&app, other).await;
            assert!(
                header(r.headers(), "access-control-allow-origin").is_none(),
                "preflight from {other} allowed"
            );
            let r = cross_origin_get(&app, other).await;
            assert!(
                header(r.headers(), "access-control-allow-origin").is_none(),
                "GET from {other} allowed"
            );
        }
    }
);

backend_test!(
    no_cors_headers_at_all_without_an_allowlist,
    |app: TestApp| async move {
        assert!(app.state.config.http.cors_allowed_origins.is_empty());
        for origin in [APP_ORIGIN, "https://evil.example"] {
            let r = preflight(&app, origin).await;
            assert_eq!(
                cors_headers(r.headers()),
                Vec::<String>::new(),
                "preflight from {origin}"
            );
            let r = cross_origin_get(&app, origin).await;
            assert_eq!(r.status(), 200);
            assert_eq!(
                cors_headers(r.headers()),
                Vec::<String>::new(),
                "GET from {origin}"
            );
        }
    }
);

backend_test!(
    malformed_json_login_is_400_invalid_request,
    |app: TestApp| async move {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        let client = new_client();
        for body in [
            "{\"email\": \"ada@example.com\", \"password\": ",
            "[\"ada@example.com\"]",
            "{\"email\": \"ada@example.com\"}",
            "{\"email\": 7, \"password\": \"x\"}",
            "",
        ] {
            let r = post_login_raw(&app, &client, "application/json", body).await;
            assert_eq!(r.status(), 400, "{body:?}");
            assert!(session_cookie_of(&r).is_none());
            let json: Value = r.json().await.expect("a JSON error");
            assert_eq!(json["error"], "invalid_request", "{body:?}: {json}");
            let message = json["message"].as_str().expect("message");
            assert!(!message.is_empty(), "{json}");
        }
        assert_nothing_changed(&app, 1).await;
    }
);

backend_test!(duplicated_form_field_is_400, |app: TestApp| async move {
    app.create_user("ada@example.com", PASSWORD, &[]).await;
    let client = new_client();
    let csrf = app.login_csrf(&client).await;
    // Which email would count? Neither: the request is refused.
    let body = format!(
        "email=ada%40example.com&email=eve%40example.com&password={}&csrf_token={csrf}",
        PASSWORD.replace(' ', "+")
    );
    let r = post_login_raw(&app, &client, "application/x-www-form-urlencoded", body).await;
    assert_eq!(r.status(), 400);
    assert!(session_cookie_of(&r).is_none());
    let json: Value = r.json().await.expect("json");
    assert_eq!(json["error"], "invalid_request");
    assert!(
        json["message"].as_str().expect("message").contains("email"),
        "the message names the field: {json}"
    );

    let body = format!(
        "email=ada%40example.com&password=x&password={}&csrf_token={csrf}",
        PASSWORD.replace(' ', "+")
    );
    let r = post_login_raw(&app, &client, "application/x-www-form-urlencoded", body).await;
    assert_eq!(r.status(), 400);
    assert_nothing_changed(&app, 1).await;
});

backend_test!(wrong_content_type_is_415, |app: TestApp| async move {
    app.create_user("ada@example.com", PASSWORD, &[]).await;
    let client = new_client();
    for content_type in [
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/xml",
    ] {
        let r = post_login_raw(
            &app,
            &client,
            content_type,
            "email=ada%40example.com&password=correct+horse+battery",
        )
        .await;
        assert_eq!(r.status(), 415, "{content_type}");
        let json: Value = r.json().await.expect("json");
        assert_eq!(json["error"], "unsupported_media_type");
        assert!(
            json["message"]
                .as_str()
                .expect("message")
                .contains("application/x-www-form-urlencoded"),
            "the message says what to send: {json}"
        );
    }
    let r = client
        .post(app.url("/login"))
        .body("email=ada%40example.com")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 415, "no content type at all");
    assert_nothing_changed(&app, 1).await;
});

backend_test!(
    body_over_max_body_bytes_is_413,
    config = |c: &mut latchkey::Config| c.http.max_body_bytes = 4096,
    |app: TestApp| async move {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        let client = new_client();
        let csrf = app.login_csrf(&client).await;
        let padding = "a".repeat(5000);
        let body = format!(
            "email=ada%40example.com&password=correct+horse+battery&csrf_token={csrf}&next=%2F{padding}"
        );
        let r = post_login_raw(&app, &client, "application/x-www-form-urlencoded", body).await;
        assert_eq!(r.status(), 413);
        assert!(session_cookie_of(&r).is_none());
        assert_baseline_headers("413", r.headers(), false);
        let json: Value = r.json().await.expect("a JSON error");
        assert_eq!(json["error"], "payload_too_large");

        let r = client
            .post(app.url("/login"))
            .json(&serde_json::json!({"email": "ada@example.com", "password": PASSWORD, "pad": padding}))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 413);
        assert_nothing_changed(&app, 1).await;

        // The same sign-in at a normal size works: the size was the only reason.
        let r = app.login_with(&client, "ada@example.com", PASSWORD).await;
        assert_eq!(r.status(), 303);
    }
);

backend_test!(
    overlong_email_is_400_with_a_clear_message,
    |app: TestApp| async move {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        let email = format!("{}@example.com", "a".repeat(300 - "@example.com".len()));
        assert_eq!(email.len(), 300);

        let r = new_client()
            .post(app.url("/login"))
            .json(&serde_json::json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 400);
        let json: Value = r.json().await.expect("json");
        assert_eq!(json["error"], "invalid_request");
        let message = json["message"].as_str().expect("message");
        assert!(
            message.contains("254"),
            "the message says what the limit is: {message}"
        );

        let client = new_client();
        let r = app.login_with(&client, &email, PASSWORD).await;
        assert_eq!(r.status(), 400);
        let html = r.text().await.expect("html");
        assert!(
            html.contains("at most 254 characters"),
            "the form shows why: {html}"
        );
        assert!(
            !app.audit_kinds().await.contains(&"login_failed".to_owned()),
            "refused before the sign-in ceremony"
        );
        assert_nothing_changed(&app, 1).await;
    }
);

backend_test!(
    huge_password_is_refused_generically_without_hashing,
    |app: TestApp| async move {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        let huge = "p".repeat(10 * 1024);
        // More attempts than the lockout allows: none of them reaches the
        // throttle or the hasher, so none counts as a guess.
        let attempts = app.state.config.login.max_failures_per_account + 2;
        for _ in 0..attempts {
            let r = new_client()
                .post(app.url("/login"))
                .json(&serde_json::json!({"email": "ada@example.com", "password": huge}))
                .send()
                .await
                .expect("post");
            assert_eq!(r.status(), 401);
            assert_eq!(
                r.json::<Value>().await.expect("json"),
                serde_json::json!({"error": "invalid_credentials", "message": "Invalid email or password"}),
                "the same generic answer as a wrong password"
            );
        }
        let client = new_client();
        let r = app.login_with(&client, "ada@example.com", &huge).await;
        assert_eq!(r.status(), 401);
        assert!(r
            .text()
            .await
            .expect("html")
            .contains("Invalid email or password"));

        let kinds = app.audit_kinds().await;
        assert!(
            !kinds.contains(&"login_failed".to_owned())
                && !kinds.contains(&"login_locked_out".to_owned()),
            "never checked, so never counted: {kinds:?}"
        );
        assert_nothing_changed(&app, 1).await;
        // The account is not locked by them.
        let r = app.login_with(&client, "ada@example.com", PASSWORD).await;
        assert_eq!(r.status(), 303);
    }
);

backend_test!(
    non_utf8_and_nul_bytes_in_the_body_are_4xx,
    |app: TestApp| async move {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        let client = new_client();
        let csrf = app.login_csrf(&client).await;
        let form = |email: &[u8]| {
            let mut body = b"email=".to_vec();
            body.extend_from_slice(email);
            body.extend_from_slice(
                format!("&password=correct+horse+battery&csrf_token={csrf}").as_bytes(),
            );
            body
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("raw invalid UTF-8", form(b"ada@exa\xff\xfemple.com")),
            (
                "percent-encoded invalid UTF-8",
                form(b"ada%40exa%FF%FEmple.com"),
            ),
            ("NUL byte", form(b"ada%00%40example.com")),
            ("raw NUL byte", form(b"ada@example.com\x00")),
        ];
        for (what, body) in cases {
            let r = post_login_raw(&app, &client, "application/x-www-form-urlencoded", body).await;
            assert!(r.status().is_client_error(), "{what}: {}", r.status());
            assert!(session_cookie_of(&r).is_none(), "{what}");
        }
        // JSON: invalid UTF-8 is malformed JSON; an escaped NUL is a bad email.
        let r = post_login_raw(
            &app,
            &client,
            "application/json",
            b"{\"email\":\"ada@example.com\xff\",\"password\":\"x\"}".to_vec(),
        )
        .await;
        assert_eq!(r.status(), 400);
        assert_eq!(
            r.json::<Value>().await.expect("json")["error"],
            "invalid_request"
        );
        let r = client
            .post(app.url("/login"))
            .json(&serde_json::json!({"email": "ada@example.com\u{0}", "password": PASSWORD}))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 400);
        let json: Value = r.json().await.expect("json");
        assert!(
            json["message"]
                .as_str()
                .expect("message")
                .contains("control characters"),
            "{json}"
        );
        assert_nothing_changed(&app, 1).await;
    }
);

/// Whether any ` onsomething=` attribute appears (inline JavaScript).
fn has_inline_event_handler(html: &str) -> bool {
    html.match_indices(" on").any(|(at, _)| {
        let rest = &html[at + 3..];
        let name_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
        name_len > 0 && rest[name_len..].starts_with('=')
    })
}

/// The `<input ...>` tag carrying `name="NAME"`.
fn input_tag<'a>(html: &'a str, name: &str) -> &'a str {
    let marker = format!("name=\"{name}\"");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no input named {name}"));
    let start = html[..at].rfind("<input").expect("input tag start");
    let end = at + html[at..].find('>').expect("input tag end");
    &html[start..=end]
}

backend_test!(
    login_form_uses_conventional_fields_and_works_without_javascript,
    |app: TestApp| async move {
        app.create_user("ada@example.com", PASSWORD, &[]).await;
        let client = new_client();
        let html = client
            .get(app.url("/login"))
            .send()
            .await
            .expect("login page")
            .text()
            .await
            .expect("html");

        assert!(
            html.contains("<form method=\"post\" action=\"/login\""),
            "{html}"
        );
        let email = input_tag(&html, "email");
        // `username webauthn`: password managers and passkey autofill (conditional UI).
        assert!(email.contains("autocomplete=\"username"), "{email}");
        assert!(email.contains("type=\"email\""), "{email}");
        let password = input_tag(&html, "password");
        assert!(
            password.contains("autocomplete=\"current-password\""),
            "{password}"
        );
        assert!(password.contains("type=\"password\""), "{password}");
        assert!(
            !password.contains("onpaste") && !password.contains("maxlength"),
            "paste allowed, no silent truncation: {password}"
        );
        let lower = html.to_ascii_lowercase();
        // Only our own external script (passkeys, progressive enhancement):
        // no inline script, and the password form below works without it.
        for tag in lower.split("<script").skip(1) {
            let tag = tag.split('>').next().unwrap_or_default();
            assert!(
                tag.contains("src=\"/static/"),
                "inline or foreign script: <script{tag}>"
            );
        }
        assert!(
            !has_inline_event_handler(&lower),
            "no inline event handlers: {html}"
        );

        // Submit exactly what a browser without JavaScript would: every
        // hidden input of the form, plus what the user typed.
        let mut fields = vec![
            ("email".to_owned(), "ada@example.com".to_owned()),
            ("password".to_owned(), PASSWORD.to_owned()),
        ];
        for hidden in ["csrf_token", "next"] {
            let value = extract_input(&html, hidden).unwrap_or_else(|| panic!("{hidden}"));
            fields.push((hidden.to_owned(), value));
        }
        let r = client
            .post(app.url("/login"))
            .form(&fields)
            .send()
            .await
            .expect("submit");
        assert_eq!(r.status(), 303);
        assert_eq!(r.headers()["location"], "/account");
        let account = client
            .get(app.url("/account"))
            .header("accept", "text/html")
            .send()
            .await
            .expect("account");
        assert_eq!(account.status(), 200);
        let page = account.text().await.expect("html");
        assert!(page.contains("ada@example.com"));
        assert!(
            !page.to_ascii_lowercase().contains("<script"),
            "account page works without JavaScript too"
        );
    }
);
