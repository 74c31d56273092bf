//! Shared by the `latchkey-verify` tests (`verify_sdk`, `revocation_feed`,
//! `verify_websocket`): an API built with the SDK exactly as a user would
//! (one layer, the extractors, a WebSocket route), a counting and
//! switchable HTTP proxy to stand between the SDK and the real Latchkey
//! server, real user tokens from the authorization-code flow, and a
//! deadline poll (no sleeps).
#![allow(dead_code)] // shared by several test modules; not each uses every helper

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt as _;
use latchkey::oauth::clients::NewClient;
use latchkey::scope::Scope;
use latchkey_verify::ws::{close_policy_violation, WebSocketAuth};
use latchkey_verify::{
    require_scope, Authenticated, RequireRole, RequireScope, Verifier, VerifierBuilder,
};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::support::app::*;
use crate::support::oauth::{client_redirect, Pkce};
use crate::support::oauth::{client_spec, register, TestClient};
pub(crate) use crate::support::{PASSWORD, REDIRECT};

/// The audience of every token the test clients get.
pub const AUDIENCE: &str = "https://orders.example.test";

latchkey_verify::scope!(pub ReadData = "read:data");
latchkey_verify::role!(pub Admin = "admin");

// ---------------------------------------------------------------- polling

/// Polls `check` every 20 ms until it returns `Some`, or fails after `limit`.
pub async fn within<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("not within {limit:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- the API

/// A running API protected by `latchkey-verify`.
pub struct TestApi {
    pub base: String,
    pub verifier: Verifier,
    pub http: reqwest::Client,
    pub(crate) _shutdown: tokio::sync::oneshot::Sender<()>,
}

async fn me(Authenticated(claims): Authenticated) -> axum::Json<Value> {
    axum::Json(json!({
        "sub": claims.sub,
        "scope": claims.scope,
        "roles": claims.roles,
        "sid": claims.sid,
        "client_id": claims.client_id,
        "jti": claims.jti,
    }))
}

async fn data(token: RequireScope<ReadData>) -> String {
    format!("data for {}", token.sub)
}

async fn admin(token: RequireRole<Admin>) -> String {
    format!("admin {}", token.sub)
}

async fn ws(upgrade: WebSocketUpgrade, auth: WebSocketAuth) -> Response {
    let mut watch = auth.watch();
    auth.accept(upgrade)
        .on_upgrade(move |mut socket| async move {
            loop {
                tokio::select! {
                    reason = watch.ended() => {
                        let _ = close_policy_violation(&mut socket, reason).await;
                        break;
                    }
                    message = socket.recv() => match message {
                        Some(Ok(Message::Text(text))) => {
                            if socket.send(Message::Text(text)).await.is_err() {
                                break;
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    },
                }
            }
        })
}

/// The routes an API writes with the SDK: one layer, three extractors, a
/// runtime-named scope layer, a WebSocket and a health endpoint.
pub fn api_router(verifier: &Verifier) -> Router {
    let health = {
        let verifier = verifier.clone();
        move || {
            let verifier = verifier.clone();
            async move { axum::Json(verifier.health()).into_response() }
        }
    };
    // A group where the layer itself refuses unauthenticated requests.
    let strict = Router::new()
        .route("/strict", get(|| async { "strict" }))
        .layer(verifier.layer().required());
    Router::new()
        .merge(strict)
        .route("/public", get(|| async { "public" }))
        .route("/me", get(me))
        .route("/data", get(data))
        .route("/admin", get(admin))
        .route(
            "/write",
            get(|| async { "written" }).route_layer(require_scope("write:data")),
        )
        .route("/ws", get(ws))
        .route("/healthz", get(health))
        .layer(verifier.layer())
}

impl TestApi {
    pub async fn start(verifier: Verifier) -> TestApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind api");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let app = api_router(&verifier);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        TestApi {
            base,
            verifier,
            http: reqwest::Client::new(),
            _shutdown: tx,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET `path` with `Authorization: Bearer <token>` (if any).
    pub async fn get(&self, path: &str, token: Option<&str>) -> ApiAnswer {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        ApiAnswer::of(request.send().await.expect("api request")).await
    }

    pub async fn health(&self) -> Value {
        self.get("/healthz", None).await.json()
    }
}

/// An answer of the test API.
#[derive(Debug)]
pub struct ApiAnswer {
    pub status: u16,
    pub www_authenticate: Option<String>,
    pub body: String,
}

impl ApiAnswer {
    pub async fn of(response: reqwest::Response) -> ApiAnswer {
        ApiAnswer {
            status: response.status().as_u16(),
            www_authenticate: response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().expect("ascii").to_owned()),
            body: response.text().await.expect("body"),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// Asserts a 401 `invalid_token` challenge and the JSON error body.
    #[track_caller]
    pub fn assert_invalid_token(&self, what: &str) {
        assert_eq!(self.status, 401, "{what}: {self:?}");
        let challenge = self.www_authenticate.as_deref().unwrap_or_default();
        assert!(
            challenge
                .starts_with("Bearer realm=\"api\", error=\"invalid_token\", error_description=\""),
            "{what}: {self:?}"
        );
        assert_eq!(self.json()["error"], "invalid_token", "{what}: {self:?}");
        assert!(self.json()["message"].is_string(), "{what}: {self:?}");
    }
}

/// The verifier builder every test starts from: the test API's audience,
/// and the server's own clock (so both sides agree on time).
pub fn verifier_for(issuer: &str, app: &TestApp) -> VerifierBuilder {
    let clock = app.clock.clone();
    Verifier::discover(issuer)
        .audience(AUDIENCE)
        .clock(move || latchkey::clock::Clock::now(&clock))
}

// ---------------------------------------------------------------- clients and tokens

/// A client-credentials client whose tokens are for [`AUDIENCE`].
pub async fn api_client(app: &TestApp, scopes: &str) -> TestClient {
    register(
        app,
        NewClient {
            audience: AUDIENCE.into(),
            ..client_spec("api caller", true, &["client_credentials"], scopes)
        },
    )
    .await
}

/// A client-credentials client whose tokens are opaque, for [`AUDIENCE`].
pub async fn opaque_client(app: &TestApp) -> TestClient {
    register(
        app,
        NewClient {
            audience: AUDIENCE.into(),
            access_token_format: latchkey::oauth::clients::AccessTokenFormat::Opaque,
            ..client_spec("opaque caller", true, &["client_credentials"], "read:data")
        },
    )
    .await
}

/// The API's own client that reads the revocation feed.
pub async fn feed_client(app: &TestApp) -> TestClient {
    register(
        app,
        client_spec(
            "My API (revocation feed)",
            true,
            &["client_credentials"],
            "latchkey:revocations",
        ),
    )
    .await
}

/// A `client_credentials` access token (through `base`, the server or a proxy).
pub async fn client_token(base: &str, client: &TestClient, scope: Option<&str>) -> String {
    let mut form = vec![("grant_type", "client_credentials")];
    if let Some(scope) = scope {
        form.push(("scope", scope));
    }
    let answer: Value = reqwest::Client::new()
        .post(format!("{base}/oauth2/token"))
        .basic_auth(&client.id, client.secret.as_deref())
        .form(&form)
        .send()
        .await
        .expect("token request")
        .json()
        .await
        .expect("token json");
    answer["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("a token in {answer}"))
        .to_owned()
}

/// A user signed in through the real form, holding tokens from the real
/// authorization-code flow (PKCE) of a first-party web client.
pub struct SignedInUser {
    pub user_id: String,
    pub email: String,
    pub browser: reqwest::Client,
    pub client: TestClient,
    pub access_token: String,
    pub refresh_token: String,
    /// The session handle: the tokens' `sid`.
    pub sid: String,
}

/// The first-party web client the test users sign in to.
pub async fn web_client(app: &TestApp) -> TestClient {
    register(
        app,
        NewClient {
            redirect_uris: vec![REDIRECT.into()],
            first_party: true,
            audience: AUDIENCE.into(),
            ..client_spec(
                "web app",
                true,
                &["authorization_code", "refresh_token"],
                "openid offline_access read:data",
            )
        },
    )
    .await
}

/// Signs `email` in (creating the user with `roles` if needed) and runs the
/// authorization-code flow for `client`.
pub async fn sign_in(
    app: &TestApp,
    client: &TestClient,
    email: &str,
    roles: &[&str],
) -> SignedInUser {
    let user = match latchkey::identity::find(&app.state.pool, email).await {
        Ok(user) => user,
        Err(_) => app.create_user(email, PASSWORD, roles).await,
    };
    let browser = new_client();
    let response = app.login_with(&browser, email, PASSWORD).await;
    assert_eq!(response.status(), 303, "sign-in of {email}");
    let (access_token, refresh_token) = authorize(app, &browser, client).await;
    let sessions: Value = browser
        .get(app.url("/account/sessions"))
        .send()
        .await
        .expect("sessions")
        .json()
        .await
        .expect("json");
    let sid = sessions["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .find(|s| s["current"] == true)
        .and_then(|s| s["handle"].as_str())
        .expect("the current session")
        .to_owned();
    SignedInUser {
        user_id: user.id,
        email: email.to_owned(),
        browser,
        client: client.clone(),
        access_token,
        refresh_token,
        sid,
    }
}

/// The authorization-code flow in a signed-in browser, up to the code:
/// (code, PKCE verifier).
pub async fn code_for(
    app: &TestApp,
    browser: &reqwest::Client,
    client: &TestClient,
) -> (String, String) {
    let pkce = Pkce::random();
    let response = browser
        .get(app.url("/oauth2/authorize"))
        .query(&[
            ("response_type", "code"),
            ("client_id", client.id.as_str()),
            ("redirect_uri", REDIRECT),
            ("scope", "openid offline_access read:data"),
            ("state", "s"),
            ("code_challenge", pkce.challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .expect("authorize");
    let (_, query) = client_redirect(&response);
    (query.get("code").expect("a code").clone(), pkce.verifier)
}

/// Redeems a code at the token endpoint (the raw answer).
pub async fn redeem(app: &TestApp, client: &TestClient, code: &str, verifier: &str) -> Value {
    reqwest::Client::new()
        .post(app.url("/oauth2/token"))
        .basic_auth(&client.id, client.secret.as_deref())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json")
}

/// One authorization-code flow in a signed-in browser: (access, refresh).
pub async fn authorize(
    app: &TestApp,
    browser: &reqwest::Client,
    client: &TestClient,
) -> (String, String) {
    let (code, verifier) = code_for(app, browser, client).await;
    let answer = redeem(app, client, &code, &verifier).await;
    (
        answer["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"))
            .to_owned(),
        answer["refresh_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"))
            .to_owned(),
    )
}

/// RFC 7662 `active` of `token`, asked by `client`.
pub async fn active(app: &TestApp, client: &TestClient, token: &str) -> bool {
    let answer: Value = reqwest::Client::new()
        .post(app.url("/oauth2/introspect"))
        .basic_auth(&client.id, client.secret.as_deref())
        .form(&[("token", token)])
        .send()
        .await
        .expect("introspect")
        .json()
        .await
        .expect("json");
    answer["active"].as_bool().expect("active")
}

impl SignedInUser {
    /// Signs out through `POST /logout` (the browser's own CSRF token).
    pub async fn sign_out(&self, app: &TestApp) {
        let csrf = app.account_csrf(&self.browser).await;
        let response = self
            .browser
            .post(app.url("/logout"))
            .form(&[("csrf_token", csrf.as_str())])
            .send()
            .await
            .expect("logout");
        assert_eq!(response.status(), 303);
    }

    /// Refreshes with `refresh_token` (the raw answer).
    pub async fn refresh(&self, app: &TestApp, refresh_token: &str) -> Value {
        reqwest::Client::new()
            .post(app.url("/oauth2/token"))
            .basic_auth(&self.client.id, self.client.secret.as_deref())
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ])
            .send()
            .await
            .expect("refresh")
            .json()
            .await
            .expect("json")
    }
}

/// The claims of a JWT, unverified (to read `jti`, `exp`, `kid`).
pub fn claims_of(token: &str) -> Value {
    latchkey_verify::jose::decode_unverified(token)
        .expect("a JWT")
        .1
}

pub fn header_of(token: &str) -> Value {
    latchkey_verify::jose::decode_unverified(token)
        .expect("a JWT")
        .0
}

// ---------------------------------------------------------------- the proxy

/// An HTTP proxy in front of the real server: counts requests per path, can
/// be switched "down" (503 for every request, open streams cut), and can
/// answer a path itself (a hostile or broken issuer: an empty JWKS, a huge
/// body, a tampered feed) — see [`Proxy::answer_with`].
pub struct Proxy {
    pub base: String,
    pub(crate) upstream: Arc<Mutex<String>>,
    pub(crate) counts: Arc<Mutex<BTreeMap<String, usize>>>,
    pub(crate) down: watch::Sender<bool>,
    pub(crate) overrides: Overrides,
    pub(crate) last_headers: Arc<Mutex<BTreeMap<String, axum::http::HeaderMap>>>,
}

/// path → (content type, body), answered 200 and streamed in 16 KiB chunks
/// without a `Content-Length`.
type Overrides = Arc<Mutex<BTreeMap<String, (String, Vec<u8>)>>>;

#[derive(Clone)]
struct ProxyState {
    pub(crate) upstream: Arc<Mutex<String>>,
    pub(crate) counts: Arc<Mutex<BTreeMap<String, usize>>>,
    pub(crate) down: watch::Receiver<bool>,
    pub(crate) http: reqwest::Client,
    pub(crate) overrides: Overrides,
    pub(crate) last_headers: Arc<Mutex<BTreeMap<String, axum::http::HeaderMap>>>,
}

async fn forward(
    axum::extract::State(state): axum::extract::State<ProxyState>,
    request: axum::extract::Request,
) -> Response {
    let path = request.uri().path().to_owned();
    *state
        .counts
        .lock()
        .expect("counts")
        .entry(path.clone())
        .or_default() += 1;
    state
        .last_headers
        .lock()
        .expect("headers")
        .insert(path.clone(), request.headers().clone());
    if *state.down.borrow() {
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "issuer down").into_response();
    }
    let answer = state
        .overrides
        .lock()
        .expect("overrides")
        .get(&path)
        .cloned();
    if let Some((content_type, body)) = answer {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            body.chunks(16 * 1024).map(|c| Ok(c.to_vec())).collect();
        return Response::builder()
            .header(axum::http::header::CONTENT_TYPE, content_type)
            .body(axum::body::Body::from_stream(futures_util::stream::iter(
                chunks,
            )))
            .unwrap_or_else(|_| axum::http::StatusCode::BAD_GATEWAY.into_response());
    }
    let upstream = state.upstream.lock().expect("upstream").clone();
    let target = format!(
        "{upstream}{}",
        request
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1024 * 1024)
        .await
        .unwrap_or_default();
    let mut outgoing = state.http.request(parts.method.clone(), &target).body(body);
    for (name, value) in &parts.headers {
        if name != axum::http::header::HOST {
            outgoing = outgoing.header(name, value);
        }
    }
    let Ok(answer) = outgoing.send().await else {
        return (axum::http::StatusCode::BAD_GATEWAY, "upstream unreachable").into_response();
    };
    let mut response = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        if name != axum::http::header::TRANSFER_ENCODING
            && name != axum::http::header::CONTENT_LENGTH
        {
            response = response.header(name, value);
        }
    }
    // Streamed through, and cut when the proxy goes down.
    let mut down = state.down.clone();
    let stream = answer.bytes_stream().take_until(async move {
        let _ = down.wait_for(|d| *d).await;
    });
    response
        .body(axum::body::Body::from_stream(stream))
        .unwrap_or_else(|_| axum::http::StatusCode::BAD_GATEWAY.into_response())
}

impl Proxy {
    /// Starts a proxy; point it at the server with [`Proxy::forward_to`].
    pub async fn start() -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let upstream = Arc::new(Mutex::new(String::new()));
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let (down, down_rx) = watch::channel(false);
        let overrides = Overrides::default();
        let last_headers = Arc::new(Mutex::new(BTreeMap::new()));
        let state = ProxyState {
            upstream: upstream.clone(),
            counts: counts.clone(),
            down: down_rx,
            overrides: overrides.clone(),
            last_headers: last_headers.clone(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
        };
        let app = Router::new().fallback(forward).with_state(state);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Proxy {
            base,
            upstream,
            counts,
            down,
            overrides,
            last_headers,
        }
    }

    /// From now on `path` is answered by the proxy itself with `body`
    /// (`None`: forwarded again).
    pub fn answer_with(&self, path: &str, answer: Option<(&str, Vec<u8>)>) {
        let mut overrides = self.overrides.lock().expect("overrides");
        match answer {
            Some((content_type, body)) => {
                overrides.insert(path.to_owned(), (content_type.to_owned(), body));
            }
            None => {
                overrides.remove(path);
            }
        }
    }

    /// A header of the last request for `path`.
    pub fn last_header(&self, path: &str, name: &str) -> Option<String> {
        self.last_headers
            .lock()
            .expect("headers")
            .get(path)
            .and_then(|h| h.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    pub fn forward_to(&self, upstream: &str) {
        *self.upstream.lock().expect("upstream") = upstream.to_owned();
    }

    /// Requests seen for `path` so far.
    pub fn count(&self, path: &str) -> usize {
        self.counts
            .lock()
            .expect("counts")
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Down: every request gets 503 and open streams are cut. Up: forwarding again.
    pub fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }
}

/// A server whose issuer is a proxy in front of it: everything the SDK asks
/// (discovery, JWKS, token, feed, introspection) goes through the proxy.
pub async fn app_behind_proxy(
    backend: Backend,
    customize: impl FnOnce(&mut latchkey::Config),
) -> Option<(TestApp, Proxy)> {
    let proxy = Proxy::start().await;
    let issuer = proxy.base.clone();
    let app = TestApp::spawn_with(backend, |config| {
        config.issuer = issuer;
        customize(config);
    })
    .await?;
    proxy.forward_to(&app.base);
    Some((app, proxy))
}

/// Scope parsing shortcut for registrations.
pub fn scope(text: &str) -> Scope {
    Scope::parse(text).expect("scope")
}

/// A second Latchkey instance on the same database (same master key, same
/// clock), as behind a load balancer. Returns its base URL; it stops when
/// the sender is dropped.
pub async fn second_instance(app: &TestApp) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut config = app.state.config.clone();
    config.bind = listener.local_addr().expect("addr").to_string();
    let deps = latchkey::Dependencies {
        clock: Arc::new(app.clock.clone()),
    };
    let second = latchkey::Application::build_on(listener, config, app.master_key.clone(), deps)
        .await
        .expect("second instance builds");
    let base = format!("http://{}", second.local_addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(second.run_until_stopped(async move {
        let _ = rx.await;
    }));
    (base, tx)
}
