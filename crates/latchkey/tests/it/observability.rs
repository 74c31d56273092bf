//! Logs, metrics and request ids.
//!
//! Invariant 10: logs and metrics never contain passwords, session ids or
//! CSRF tokens — proved on the real binary at `RUST_LOG=trace`, in both log
//! formats. `/metrics` counts what happened (requests by route, sign-ins by
//! result, live sessions), and every response carries an `x-request-id` that
//! also tags the request's log lines.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::backend_test;
use crate::support::app::*;
use crate::support::cli::{bootstrap_credentials, latchkey, sign_in, start_dev, Env};

// ---------------------------------------------------------------------------
// Logs (the real binary)
// ---------------------------------------------------------------------------

/// The value of `name=` in a `Set-Cookie` header of `response`.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| {
            c.strip_prefix(&prefix)
                .map(|rest| rest.split(';').next().unwrap_or_default().to_owned())
        })
}

/// The request id of a request log line: `request{... request_id=X}` in
/// text, `"span":{"request_id":"X"}` in JSON.
fn request_id_of(line: &str, json: bool) -> Option<String> {
    if json {
        let value: Value = serde_json::from_str(line).ok()?;
        return value["span"]["request_id"].as_str().map(str::to_owned);
    }
    let start = line.find("request_id=")? + "request_id=".len();
    let rest = &line[start..];
    let end = rest.find(['}', ' '])?;
    Some(rest[..end].to_owned())
}

/// Runs `latchkey dev` at `RUST_LOG=trace`, signs in through the browser form
/// (wrong password, then right), uses the session, signs out, does the same as
/// a JSON script with the bootstrap admin, and searches everything the
/// process wrote for each secret it handled.
async fn trace_logs_hold_no_secret(json_logs: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut extra = vec![("RUST_LOG", "trace")];
    if json_logs {
        extra.push(("LATCHKEY_LOG_FORMAT", "json"));
    }
    let server = start_dev(dir.path(), &extra).await;
    server
        .wait_for_line("announcing the listener", |l| {
            l.contains("latchkey listening")
        })
        .await;
    let (admin_email, admin_password) =
        bootstrap_credentials(&server.stderr()).expect("bootstrap admin printed");
    let password = "observability passphrase 1";
    let wrong = "not-the-passphrase-7f3a9c";
    latchkey(
        dir.path(),
        &Env::new(),
        &[
            "user",
            "create",
            "--email",
            "watcher@example.com",
            "--password-stdin",
        ],
        Some(password),
    )
    .await
    .assert_success("user create");
    // The dev issuer is http://localhost:PORT: a browser on the IP would be
    // redirected there, so this one starts there.
    let base = server.base.replace("127.0.0.1", "localhost");
    let url = |path: &str| format!("{base}{path}");
    let mut secrets: Vec<(&str, String)> = vec![
        ("password", password.to_owned()),
        ("wrong password", wrong.to_owned()),
        (
            "wrong admin password",
            "wrong-admin-password-1c2d".to_owned(),
        ),
    ];

    // A browser: the form, with its anonymous CSRF cookie and token.
    let browser = new_client();
    let page = browser
        .get(url("/login"))
        .header("accept", "text/html")
        .send()
        .await
        .expect("login page");
    assert_eq!(page.status(), 200);
    secrets.push((
        "anonymous CSRF cookie",
        set_cookie(&page, "latchkey_csrf").expect("csrf cookie"),
    ));
    let form_token =
        extract_input(&page.text().await.expect("html"), "csrf_token").expect("csrf_token");
    secrets.push(("login CSRF token", form_token.clone()));
    let failed = browser
        .post(url("/login"))
        .header("x-request-id", "obs-wrong-password")
        .form(&[
            ("email", "watcher@example.com"),
            ("password", wrong),
            ("csrf_token", &form_token),
        ])
        .send()
        .await
        .expect("post login");
    assert_eq!(failed.status(), 401);
    let signed_in = browser
        .post(url("/login"))
        .header("x-request-id", "obs-sign-in")
        .form(&[
            ("email", "watcher@example.com"),
            ("password", password),
            ("csrf_token", &form_token),
        ])
        .send()
        .await
        .expect("post login");
    assert_eq!(signed_in.status(), 303);
    secrets.push((
        "session cookie",
        session_cookie_of(&signed_in).expect("session cookie"),
    ));
    let account: Value = browser
        .get(url("/account"))
        .header("accept", "application/json")
        .send()
        .await
        .expect("account")
        .json()
        .await
        .expect("json");
    assert_eq!(account["user"]["email"], "watcher@example.com");
    let account_token = account["csrf_token"].as_str().expect("csrf").to_owned();
    secrets.push(("session CSRF token", account_token.clone()));
    let out = browser
        .post(url("/logout"))
        .form(&[("csrf_token", account_token.as_str())])
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status(), 303);

    // A script: JSON sign-in as the bootstrap admin, wrong then right.
    let script = new_client();
    assert_eq!(
        sign_in(&script, &base, &admin_email, "wrong-admin-password-1c2d")
            .await
            .status(),
        401
    );
    let response = sign_in(&script, &base, &admin_email, &admin_password).await;
    assert_eq!(response.status(), 200);
    secrets.push((
        "admin session cookie",
        session_cookie_of(&response).expect("cookie"),
    ));
    let account: Value = script
        .get(url("/account"))
        .header("accept", "application/json")
        .send()
        .await
        .expect("account")
        .json()
        .await
        .expect("json");
    let admin_token = account["csrf_token"].as_str().expect("csrf").to_owned();
    secrets.push(("admin session CSRF token", admin_token.clone()));
    let out = script
        .post(url("/logout"))
        .header("x-csrf-token", &admin_token)
        .json(&json!({}))
        .send()
        .await
        .expect("logout");
    assert_eq!(out.status(), 204);

    let stopped = server.stop().await;
    assert_eq!(stopped.status.code(), Some(0), "{}", stopped.stderr);
    let log = stopped.stderr;

    // The log really was at trace level and saw the requests; otherwise the
    // absence checks below would prove nothing.
    let trace_marker = if json_logs {
        "\"level\":\"TRACE\""
    } else {
        " TRACE "
    };
    assert!(log.contains(trace_marker), "trace-level output expected");
    assert!(
        log.contains("obs-sign-in"),
        "the sign-in request was logged"
    );

    for (what, secret) in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "the log contains the {what} ({secret})"
        );
        assert!(!stopped.stdout.contains(secret.as_str()), "stdout: {what}");
    }
    // The bootstrap password is printed once, in the start-up banner (that is
    // how the operator learns it), and never logged.
    assert_eq!(
        log.matches(admin_password.as_str()).count(),
        1,
        "the admin password appears only in the banner"
    );

    // Every request line carries a request id: a generated UUID, or the
    // caller's own.
    let request_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("started processing request"))
        .collect();
    assert!(request_lines.len() >= 9, "{request_lines:#?}");
    for line in &request_lines {
        let id =
            request_id_of(line, json_logs).unwrap_or_else(|| panic!("no request id in {line}"));
        assert!(
            uuid::Uuid::parse_str(&id).is_ok() || id.starts_with("obs-"),
            "request id {id:?} in {line}"
        );
    }
    for id in ["obs-sign-in", "obs-wrong-password"] {
        assert!(
            request_lines
                .iter()
                .any(|l| request_id_of(l, json_logs).as_deref() == Some(id)
                    && l.contains("/login")),
            "incoming request id {id} tags the /login lines"
        );
    }

    if json_logs {
        // After start-up, stderr is nothing but JSON lines (a log collector
        // can parse every one).
        let start = log
            .lines()
            .position(|l| l.contains("latchkey listening"))
            .expect("listening line");
        for line in log.lines().skip(start).filter(|l| !l.trim().is_empty()) {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
            assert!(
                value["timestamp"].is_string() && value["level"].is_string(),
                "{line}"
            );
        }
    } else {
        assert!(
            !log.contains('\u{1b}'),
            "no terminal colour codes when stderr is not a terminal"
        );
    }
}

mod trace_logs_never_contain_passwords_session_ids_or_csrf_tokens {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn text() {
        super::trace_logs_hold_no_secret(false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn json() {
        super::trace_logs_hold_no_secret(true).await;
    }
}

// ---------------------------------------------------------------------------
// /metrics
// ---------------------------------------------------------------------------

/// One sample of the Prometheus / OpenMetrics text exposition.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses `name{label="value",...} number` lines; label values may contain
/// `{`, `}` and `,` (routes like `/account/sessions/{handle}/revoke`).
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).expect("sample name");
        let name = line[..name_end].to_owned();
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(mut inner) = rest.strip_prefix('{') {
            loop {
                if let Some(after) = inner.strip_prefix('}') {
                    rest = after;
                    break;
                }
                inner = inner.strip_prefix(',').unwrap_or(inner);
                let eq = inner.find('=').expect("label =");
                let key = inner[..eq].to_owned();
                let quoted = inner[eq + 1..].strip_prefix('"').expect("quoted value");
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let end = loop {
                    match chars.next().expect("closing quote") {
                        (_, '\\') => {
                            if let Some((_, c)) = chars.next() {
                                value.push(c);
                            }
                        }
                        (i, '"') => break i,
                        (_, c) => value.push(c),
                    }
                };
                labels.insert(key, value);
                inner = &quoted[end + 1..];
            }
        }
        let value = rest
            .split_whitespace()
            .next()
            .expect("value")
            .parse::<f64>()
            .unwrap_or_else(|e| panic!("bad value in {line}: {e}"));
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    samples
}

/// The value of the sample `name` whose labels include all of `labels`
/// (0 when absent: a counter never incremented is not exported).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert!(found.len() <= 1, "ambiguous {name} {labels:?}: {found:?}");
    found.first().map_or(0.0, |s| s.value)
}

backend_test!(
    metrics_count_requests_sign_ins_and_live_sessions,
    |app: TestApp| async move {
        let password = "metered passphrase";
        app.create_user("metered@example.com", password, &[]).await;
        let login = |client: reqwest::Client, password: &'static str| {
            let url = app.url("/login");
            async move {
                client
                    .post(url)
                    .json(&json!({ "email": "metered@example.com", "password": password }))
                    .send()
                    .await
                    .expect("login")
            }
        };
        let first = new_client();
        let second = new_client();
        let first_login = login(first.clone(), password).await;
        assert_eq!(first_login.status(), 200);
        let cookie = session_cookie_of(&first_login).expect("cookie");
        assert_eq!(login(second.clone(), password).await.status(), 200);
        for _ in 0..3 {
            assert_eq!(login(new_client(), "wrong passphrase").await.status(), 401);
        }
        // Sign one session out: one of two stays alive.
        let csrf = app.account_csrf(&first).await;
        let out = first
            .post(app.url("/logout"))
            .header("x-csrf-token", &csrf)
            .json(&json!({}))
            .send()
            .await
            .expect("logout");
        assert_eq!(out.status(), 204);
        // An unknown path must not become a label value of its own.
        let probe = uuid::Uuid::new_v4().simple().to_string();
        let missing = app
            .client
            .get(app.url(&format!("/probe-{probe}?token={probe}")))
            .send()
            .await
            .expect("404");
        assert_eq!(missing.status(), 404);

        let response = app
            .client
            .get(app.url("/metrics"))
            .send()
            .await
            .expect("metrics");
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .to_owned();
        assert!(
            content_type.starts_with("application/openmetrics-text")
                || content_type.starts_with("text/plain"),
            "{content_type}"
        );
        let text = response.text().await.expect("body");
        for needle in [
            "# TYPE latchkey_http_requests counter",
            "# TYPE latchkey_http_request_duration_seconds histogram",
            "# TYPE latchkey_logins counter",
            "# TYPE latchkey_sessions_active gauge",
        ] {
            assert!(text.contains(needle), "{needle} in\n{text}");
        }
        let samples = parse_exposition(&text);

        let logins = "latchkey_logins_total";
        assert_eq!(value(&samples, logins, &[("result", "success")]), 2.0);
        assert_eq!(value(&samples, logins, &[("result", "failure")]), 3.0);
        assert_eq!(value(&samples, logins, &[("result", "locked")]), 0.0);
        assert_eq!(value(&samples, "latchkey_sessions_active", &[]), 1.0);

        let requests = "latchkey_http_requests_total";
        let login_route = [("method", "POST"), ("route", "/login")];
        assert_eq!(
            value(
                &samples,
                requests,
                &[login_route[0], login_route[1], ("status", "200")]
            ),
            2.0
        );
        assert_eq!(
            value(
                &samples,
                requests,
                &[login_route[0], login_route[1], ("status", "401")]
            ),
            3.0
        );
        assert_eq!(
            value(
                &samples,
                requests,
                &[("method", "POST"), ("route", "/logout"), ("status", "204")]
            ),
            1.0
        );
        assert_eq!(
            value(
                &samples,
                requests,
                &[("method", "GET"), ("route", "/account"), ("status", "200")]
            ),
            1.0
        );
        assert!(
            samples.iter().all(|s| s.name != requests
                || s.labels
                    .get("route")
                    .is_some_and(|r| r.starts_with('/') || r == "unmatched")),
            "routes are route templates"
        );
        assert!(!text.contains(&probe), "unknown paths are not labels");
        assert_eq!(
            value(
                &samples,
                requests,
                &[("method", "GET"), ("route", "unmatched"), ("status", "404")]
            ),
            1.0
        );

        let duration = "latchkey_http_request_duration_seconds";
        let login_only = [("route", "/login")];
        assert_eq!(
            value(&samples, &format!("{duration}_count"), &login_only),
            5.0
        );
        assert_eq!(
            value(
                &samples,
                &format!("{duration}_bucket"),
                &[("route", "/login"), ("le", "+Inf")]
            ),
            5.0
        );
        assert!(value(&samples, &format!("{duration}_sum"), &login_only) > 0.0);

        for secret in [password, "wrong passphrase", cookie.as_str(), csrf.as_str()] {
            assert!(!text.contains(secret), "metrics hold no secret");
        }
    }
);

// ---------------------------------------------------------------------------
// Request ids
// ---------------------------------------------------------------------------

fn request_id(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-request-id")
        .unwrap_or_else(|| panic!("no x-request-id on {}", response.url()))
        .to_str()
        .expect("ascii")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_has_a_request_id_and_an_incoming_one_is_propagated() {
    let app = TestApp::spawn(Backend::Sqlite).await.expect("sqlite");
    let client = new_client();

    let mut seen = Vec::new();
    for (method, path, status) in [
        ("GET", "/healthz", 200),
        ("GET", "/healthz", 200),
        ("GET", "/no-such-page", 404),
        ("GET", "/account", 401),
        ("POST", "/login", 415),
    ] {
        let request = match method {
            "GET" => client.get(app.url(path)),
            _ => client.post(app.url(path)).body("x"),
        };
        let response = request
            .header("accept", "application/json")
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), status, "{method} {path}");
        let id = request_id(&response);
        assert!(
            uuid::Uuid::parse_str(&id).is_ok(),
            "{method} {path}: generated ids are UUIDs: {id}"
        );
        assert!(!seen.contains(&id), "ids are unique per request");
        seen.push(id);
    }

    // A caller's (or proxy's) id is kept, so one id follows a request across services.
    let incoming = "lb-4bf92f3577b34da6a3ce929d0e0e4736";
    let echoed = client
        .get(app.url("/healthz"))
        .header("x-request-id", incoming)
        .send()
        .await
        .expect("healthz");
    assert_eq!(request_id(&echoed), incoming);
    let failed = client
        .post(app.url("/login"))
        .header("x-request-id", incoming)
        .json(&json!({ "email": "nobody@example.com", "password": "whatever it is" }))
        .send()
        .await
        .expect("login");
    assert_eq!(failed.status(), 401);
    assert_eq!(request_id(&failed), incoming, "errors keep the id too");
    app.stop().await;
}
