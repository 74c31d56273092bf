//! OAuth helpers: registered test clients, token-endpoint requests and their
//! answers, PKCE, browser-like clients that sign in through the real
//! `/login` form and walk the authorization-code flow.

use std::collections::BTreeMap;

use base64::Engine as _;
use latchkey::mfa::totp::Totp;
use latchkey::oauth::clients::{self, AccessTokenFormat, ClientUpdate, NewClient};
use latchkey::scope::Scope;
use reqwest::header::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::Row as _;

use super::app::*;
pub(crate) use super::PASSWORD;

/// `tokens.leeway_secs` default.
pub(crate) const LEEWAY: i64 = 30;

/// A registered client as a test holds it: its id and, if confidential, its secret.
#[derive(Debug, Clone)]
pub(crate) struct TestClient {
    pub id: String,
    pub secret: Option<String>,
}

/// Registration data with everything optional left at its default.
pub(crate) fn client_spec(
    name: &str,
    confidential: bool,
    grants: &[&str],
    scopes: &str,
) -> NewClient {
    NewClient {
        name: name.to_owned(),
        confidential,
        redirect_uris: Vec::new(),
        post_logout_redirect_uris: Vec::new(),
        grant_types: grants.iter().map(|g| (*g).to_owned()).collect(),
        scopes: Scope::parse(scopes).expect("scope"),
        audience: String::new(),
        access_token_format: AccessTokenFormat::Jwt,
        access_token_lifetime_secs: None,
        signing_algorithm: None,
        id_token_signed_response_alg: None,
        first_party: false,
        backchannel_logout_uri: None,
        jwks: None,
        require_pkce: true,
    }
}

pub(crate) async fn register(app: &TestApp, new: NewClient) -> TestClient {
    let (client, secret) = clients::create(&app.state.pool, new, app.clock.now_secs())
        .await
        .expect("create client");
    assert_eq!(client.confidential, secret.is_some());
    TestClient {
        id: client.id,
        secret: secret.map(|s| s.expose().to_owned()),
    }
}

/// A confidential machine-to-machine client (`client_credentials`).
pub(crate) async fn machine_client(app: &TestApp, scopes: &str) -> TestClient {
    register(
        app,
        client_spec("machine", true, &["client_credentials"], scopes),
    )
    .await
}

/// How a confidential client authenticates (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Auth {
    /// `client_secret_basic`.
    Basic,
    /// `client_secret_post` (public clients: `client_id` only).
    Post,
}

#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    pub(crate) fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("(no error)")
    }
    pub(crate) fn cache_control(&self) -> &str {
        self.headers
            .get("cache-control")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
    /// Asserts an RFC 6749 §5.2 error object with `no-store`.
    #[track_caller]
    pub(crate) fn assert_error(&self, status: u16, error: &str, what: &str) {
        assert_eq!(self.status, status, "{what}: {self:?}");
        assert_eq!(self.error(), error, "{what}: {self:?}");
        assert!(
            self.body["error_description"].is_string(),
            "{what}: {self:?}"
        );
        assert!(self.body.get("access_token").is_none(), "{what}: {self:?}");
        assert!(self.body.get("refresh_token").is_none(), "{what}: {self:?}");
        assert_eq!(self.cache_control(), "no-store", "{what}: {self:?}");
    }
    pub(crate) fn refresh_token(&self) -> String {
        self.body["refresh_token"]
            .as_str()
            .unwrap_or_else(|| panic!("a refresh token in {self:?}"))
            .to_owned()
    }
    pub(crate) fn access_token(&self) -> String {
        self.body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("an access token in {self:?}"))
            .to_owned()
    }
}

pub(crate) async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        headers,
        body,
    }
}

/// POSTs a form to an OAuth endpoint as `client`.
pub(crate) async fn post_as(
    app: &TestApp,
    path: &str,
    client: &TestClient,
    auth: Auth,
    params: &[(&str, &str)],
) -> Answer {
    let mut form: Vec<(&str, &str)> = params.to_vec();
    let mut request = app.client.post(app.url(path));
    match (&client.secret, auth) {
        (Some(secret), Auth::Basic) => request = request.basic_auth(&client.id, Some(secret)),
        (Some(secret), Auth::Post) => {
            form.push(("client_id", &client.id));
            form.push(("client_secret", secret));
        }
        (None, _) => form.push(("client_id", &client.id)),
    }
    answer(request.form(&form).send().await.expect("post")).await
}

pub(crate) async fn token_request(
    app: &TestApp,
    client: &TestClient,
    params: &[(&str, &str)],
) -> Answer {
    post_as(app, "/oauth2/token", client, Auth::Basic, params).await
}

/// A `client_credentials` access token (must succeed).
pub(crate) async fn machine_token(app: &TestApp, client: &TestClient) -> String {
    let answer = token_request(app, client, &[("grant_type", "client_credentials")]).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.access_token()
}

/// `POST /oauth2/introspect` by `client` (must be 200): the JSON answer.
pub(crate) async fn introspect(app: &TestApp, client: &TestClient, token: &str) -> Value {
    let answer = post_as(
        app,
        "/oauth2/introspect",
        client,
        Auth::Basic,
        &[("token", token)],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.cache_control(), "no-store", "{answer:?}");
    answer.body
}

/// A PKCE pair computed here (SHA-256 + base64url), independently of the server.
#[derive(Debug, Clone)]
pub(crate) struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn random() -> Pkce {
        Pkce::for_verifier(&b64url(&latchkey::crypto::random_bytes::<32>()))
    }

    pub fn for_verifier(verifier: &str) -> Pkce {
        Pkce {
            verifier: verifier.to_owned(),
            challenge: b64url(&Sha256::digest(verifier.as_bytes())),
        }
    }
}

/// What the server holds that an authorization request may create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Issued {
    pub codes: i64,
    pub refresh_tokens: i64,
    pub consents: i64,
    pub pending_requests: i64,
}

pub(crate) async fn issued(app: &TestApp) -> Issued {
    Issued {
        codes: rows(app, "authorization_codes").await,
        refresh_tokens: rows(app, "refresh_tokens").await,
        consents: rows(app, "consents").await,
        pending_requests: rows(app, "authorization_requests").await,
    }
}

/// The `issuer` of the discovery document.
pub(crate) async fn discovered_issuer(app: &TestApp) -> String {
    let doc: Value = new_client()
        .get(app.url("/.well-known/openid-configuration"))
        .send()
        .await
        .expect("discovery")
        .json()
        .await
        .expect("discovery json");
    doc["issuer"].as_str().expect("issuer").to_owned()
}

/// A browser (own cookie jar) signed in as a new user through the real form.
pub(crate) async fn signed_in_browser(app: &TestApp, email: &str) -> reqwest::Client {
    app.create_user(email, PASSWORD, &[]).await;
    let browser = new_client();
    let response = app.login_with(&browser, email, PASSWORD).await;
    assert_eq!(
        response.status(),
        303,
        "a credential POST redirects with 303, never 307"
    );
    browser
}

pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().expect("ascii header"))
}

#[track_caller]
pub(crate) fn assert_frame_ancestors_none(headers: &HeaderMap, what: &str) {
    let csp = header(headers, "content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy"));
    assert!(
        csp.split(';').any(|d| d.trim() == "frame-ancestors 'none'"),
        "{what}: {csp}"
    );
}

/// `extract_input` with the HTML escaping undone (minijinja writes `/` as `&#x2f;`).
pub(crate) fn input_value(html: &str, name: &str) -> Option<String> {
    extract_input(html, name).map(|v| {
        v.replace("&#x2f;", "/")
            .replace("&#x27;", "'")
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    })
}

/// The redirect of an authorization response: the URI without its query, and
/// the query parameters (each must appear once).
#[track_caller]
pub(crate) fn client_redirect(response: &reqwest::Response) -> (String, BTreeMap<String, String>) {
    assert_eq!(response.status(), 303, "{response:?}");
    let location = header(response.headers(), "location").expect("Location");
    let url = url::Url::parse(location).unwrap_or_else(|e| panic!("{location}: {e}"));
    let mut params = BTreeMap::new();
    for (k, v) in url.query_pairs() {
        assert!(
            params.insert(k.to_string(), v.to_string()).is_none(),
            "{k} twice in {location}"
        );
    }
    let base = location.split('?').next().unwrap_or_default().to_owned();
    (base, params)
}

/// `POST /oauth2/token` as `client` (`client_secret_post` or `client_id`
/// only); every answer, success or error, must be `Cache-Control: no-store`.
pub(crate) async fn token(app: &TestApp, client: &TestClient, params: &[(&str, &str)]) -> Answer {
    let answer = post_as(app, "/oauth2/token", client, Auth::Post, params).await;
    assert_eq!(
        header(&answer.headers, "cache-control"),
        Some("no-store"),
        "{answer:?}"
    );
    answer
}

/// Asserts an RFC 6749 §5.2 error that issued nothing.
#[track_caller]
pub(crate) fn assert_token_error(answer: &Answer, status: u16, error: &str, what: &str) {
    assert_eq!(answer.status, status, "{what}: {answer:?}");
    assert_eq!(answer.body["error"], error, "{what}: {answer:?}");
    assert!(
        answer.body.get("access_token").is_none() && answer.body.get("refresh_token").is_none(),
        "{what}: {answer:?}"
    );
}

/// The redirect URI of the clients here.
pub(crate) const CALLBACK: &str = "https://rp.example.com/cb";

pub(crate) const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// A web client of `rp.example.com` (confidential, refresh tokens).
/// `first_party` skips consent.
pub(crate) async fn rp_client(app: &TestApp, scopes: &str, first_party: bool) -> TestClient {
    register(
        app,
        NewClient {
            redirect_uris: vec![CALLBACK.into()],
            first_party,
            ..client_spec(
                "relying party",
                true,
                &["authorization_code", "refresh_token"],
                scopes,
            )
        },
    )
    .await
}

/// Turns a client's `require_mfa` on or off (what `latchkey client update
/// --require-mfa` does).
pub(crate) async fn set_require_mfa(app: &TestApp, client: &TestClient, on: bool) {
    let update = ClientUpdate {
        require_mfa: Some(on),
        ..ClientUpdate::default()
    };
    clients::update(&app.state.pool, &client.id, update, app.clock.now_secs())
        .await
        .expect("update")
        .expect("client exists");
}

/// Enrolls an authenticator app for `user_id` (as the account page does)
/// and returns its secret. The clock moves past the enrollment's step, so
/// the next code is not a replay.
pub(crate) async fn enroll_totp(app: &TestApp, user_id: &str) -> Vec<u8> {
    let now = app.clock.now_secs();
    let secret = latchkey::mfa::begin_totp(&app.state.pool, &app.state.mfa_seal_key, user_id, now)
        .await
        .expect("begin");
    let code = Totp::new(&secret).code_at(now as u64);
    latchkey::mfa::confirm_totp(
        &app.state.pool,
        &app.state.mfa_seal_key,
        user_id,
        &code,
        now,
    )
    .await
    .expect("confirm");
    app.clock.advance(30);
    secret
}

/// The `Location` of a redirect.
pub(crate) fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// A query parameter of a URL or path.
pub(crate) fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A browser: its own cookie jar, redirects not followed.
pub(crate) struct Browser {
    pub http: reqwest::Client,
}

impl Browser {
    pub fn new() -> Browser {
        Browser { http: new_client() }
    }

    /// A new browser in which `email` signed in with the password alone.
    pub async fn signed_in(app: &TestApp, email: &str) -> Browser {
        let browser = Browser::new();
        browser.sign_in(app, email, None, "/account").await;
        browser
    }

    /// `GET path` asking for JSON (an API call with the session cookie).
    pub async fn get_json(&self, app: &TestApp, path: &str) -> reqwest::Response {
        self.http
            .get(app.url(path))
            .header("accept", "application/json")
            .send()
            .await
            .expect("GET")
    }

    /// Sends the authorization request with nobody signed in, signs `email`
    /// in on the page it leads to, and returns the pending request's id and
    /// where the sign-in sends the browser back (the request's resumption).
    pub async fn sign_in_for_request(
        &self,
        app: &TestApp,
        client: &TestClient,
        pkce: &Pkce,
        email: &str,
    ) -> (String, String) {
        let to_login = location(&self.authorize(app, client, "openid", pkce, &[]).await);
        let pending = pending_id_of(&to_login);
        let next = query_param(&to_login, "next").expect("next");
        let back = self.sign_in(app, email, None, &next).await;
        assert_eq!(back, next, "back to the request");
        (pending, back)
    }

    /// Signs `email` in through `/login` (and `/login/mfa` with `totp` when
    /// the user has a second factor), coming back to `next`. Returns where
    /// the browser is sent at the end.
    pub async fn sign_in(
        &self,
        app: &TestApp,
        email: &str,
        totp: Option<&[u8]>,
        next: &str,
    ) -> String {
        let csrf = app.login_csrf(&self.http).await;
        let response = self
            .http
            .post(app.url("/login"))
            .form(&[
                ("email", email),
                ("password", PASSWORD),
                ("csrf_token", csrf.as_str()),
                ("next", next),
            ])
            .send()
            .await
            .expect("POST /login");
        assert_eq!(response.status(), 303, "sign-in of {email}");
        let target = location(&response);
        let Some(secret) = totp else {
            return target;
        };
        assert!(target.starts_with("/login/mfa"), "{target}");
        let html = self
            .http
            .get(app.url(&target))
            .send()
            .await
            .expect("mfa page")
            .text()
            .await
            .expect("html");
        let csrf = extract_input(&html, "csrf_token").expect("csrf_token");
        let code = Totp::new(secret).code_at(app.clock.now_secs() as u64);
        let response = self
            .http
            .post(app.url("/login/mfa"))
            .form(&[
                ("csrf_token", csrf.as_str()),
                ("code", code.as_str()),
                ("next", next),
            ])
            .send()
            .await
            .expect("POST /login/mfa");
        assert_eq!(response.status(), 303, "second step of {email}");
        location(&response)
    }

    pub async fn get(&self, app: &TestApp, path_or_url: &str) -> reqwest::Response {
        let url = if path_or_url.starts_with('/') {
            app.url(path_or_url)
        } else {
            path_or_url.to_owned()
        };
        self.http
            .get(url)
            .header("accept", "text/html")
            .send()
            .await
            .expect("GET")
    }

    /// `GET /oauth2/authorize` with `client`, `scope` and `extra` parameters.
    pub async fn authorize(
        &self,
        app: &TestApp,
        client: &TestClient,
        scope: &str,
        pkce: &Pkce,
        extra: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut params = vec![
            ("response_type", "code"),
            ("client_id", client.id.as_str()),
            ("redirect_uri", CALLBACK),
            ("scope", scope),
            ("state", "st"),
            ("code_challenge", pkce.challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        params.extend_from_slice(extra);
        self.http
            .get(app.url("/oauth2/authorize"))
            .header("accept", "text/html")
            .query(&params)
            .send()
            .await
            .expect("GET /oauth2/authorize")
    }

    /// Answers the consent form of `pending_id` with `decision`.
    pub async fn consent(
        &self,
        app: &TestApp,
        pending_id: &str,
        decision: &str,
    ) -> reqwest::Response {
        let csrf = app.account_csrf(&self.http).await;
        self.http
            .post(app.url("/oauth2/authorize/consent"))
            .form(&[
                ("request_id", pending_id),
                ("csrf_token", csrf.as_str()),
                ("decision", decision),
            ])
            .send()
            .await
            .expect("POST consent")
    }
}

/// The pending request's id in a redirect to the sign-in page.
#[track_caller]
pub(crate) fn pending_id_of(login_redirect: &str) -> String {
    let next = query_param(login_redirect, "next")
        .unwrap_or_else(|| panic!("a sign-in redirect: {login_redirect}"));
    query_param(&next, "id").unwrap_or_else(|| panic!("a pending id in {next}"))
}

/// The `code` of a redirect to the client (panics on anything else).
#[track_caller]
pub(crate) fn code_of(redirect: &str) -> String {
    assert!(redirect.starts_with(CALLBACK), "to the client: {redirect}");
    query_param(redirect, "code").unwrap_or_else(|| panic!("a code in {redirect}"))
}

/// Redeems a code (the raw answer).
pub(crate) async fn exchange(
    app: &TestApp,
    client: &TestClient,
    code: &str,
    pkce: &Pkce,
) -> Answer {
    post_as(
        app,
        "/oauth2/token",
        client,
        Auth::Basic,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", CALLBACK),
            ("code_verifier", pkce.verifier.as_str()),
        ],
    )
    .await
}

pub(crate) async fn rows(app: &TestApp, table: &str) -> i64 {
    sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
        .fetch_one(&app.state.pool)
        .await
        .expect("count")
        .try_get::<i64, _>("n")
        .expect("n")
}

pub(crate) fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
