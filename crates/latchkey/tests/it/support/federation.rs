//! Federation helpers: a second real Latchkey as the upstream OpenID
//! provider (issuer `http://127.0.0.1:PORT`), the server under test as the
//! relying party (issuer `http://localhost:PORT`, so the two servers' cookies
//! never mix in one browser jar), a confidential client registered on the
//! upstream for the downstream's callback, and the browser's walk through
//! both: the sign-in page's button, the upstream's sign-in, the callback.

use latchkey::federation::{self, store, Origin, ProviderFields, ProviderSpec, SecretSource};
use latchkey::identity::{self, Email, NewUser};
use serde_json::Value;
use sqlx::Row as _;

use super::app::*;
use super::oauth::{client_spec, location, query_param, register, Browser, TestClient};
use super::PASSWORD;

/// The provider's name on the downstream.
pub(crate) const PROVIDER: &str = "upstream";

/// How the downstream is told to treat the upstream.
#[derive(Debug, Clone)]
pub(crate) struct ProviderOptions {
    pub provision: bool,
    pub link: &'static str,
    pub auth_method: &'static str,
    pub role_claim: &'static str,
    pub role_map: Vec<(&'static str, &'static str)>,
}

impl Default for ProviderOptions {
    fn default() -> Self {
        ProviderOptions {
            provision: true,
            link: "verified",
            auth_method: "client_secret_basic",
            role_claim: "",
            role_map: Vec::new(),
        }
    }
}

/// The upstream, the downstream and the client that joins them.
pub(crate) struct Federation {
    pub up: TestApp,
    pub down: TestApp,
    pub client: TestClient,
}

/// `{issuer}/login/idp/{name}/callback` of `down`.
pub(crate) fn callback_url(down: &TestApp) -> String {
    federation::callback_url(&down.state.config, PROVIDER)
}

impl Federation {
    /// Both servers, the client on the upstream, and the provider added to
    /// the downstream's database exactly as `latchkey idp add` does.
    pub(crate) async fn start(backend: Backend, options: ProviderOptions) -> Option<Federation> {
        let up = TestApp::spawn(backend).await?;
        let down = TestApp::spawn_localhost_with(backend, |c| {
            c.federation.allow_insecure_loopback = true;
        })
        .await?;
        let mut spec = client_spec(
            "downstream latchkey",
            true,
            &["authorization_code"],
            "openid email profile",
        );
        spec.redirect_uris = vec![callback_url(&down)];
        spec.first_party = true;
        let client = register(&up, spec).await;
        let fed = Federation { up, down, client };
        fed.add_provider(&options).await;
        Some(fed)
    }

    pub(crate) async fn add_provider(&self, options: &ProviderOptions) {
        let role_map = options
            .role_map
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let scopes = vec!["email".to_owned(), "profile".to_owned()];
        let spec = ProviderSpec::build(
            ProviderFields {
                name: PROVIDER,
                kind: "oidc",
                issuer: &self.up.base,
                client_id: &self.client.id,
                auth_method: options.auth_method,
                scopes: &scopes,
                link: options.link,
                provision: options.provision,
                role_claim: options.role_claim,
                role_map: &role_map,
                enabled: true,
            },
            SecretSource::Sealed(String::new()),
            Origin::Database,
            &self.down.state.config,
        )
        .expect("provider spec");
        let secret = self.client.secret.clone().expect("confidential");
        let sealed =
            federation::seal_secret(&self.down.state.federation_seal_key, PROVIDER, &secret);
        assert!(
            store::put_provider(
                &self.down.state.pool,
                &spec,
                &sealed,
                false,
                self.down.clock.now_secs()
            )
            .await
            .expect("store provider"),
            "provider added"
        );
    }

    /// A user of the upstream, its email verified or not.
    pub(crate) async fn upstream_user(&self, email: &str, verified: bool) -> identity::User {
        create_user(&self.up, email, verified, Some(PASSWORD), "Upstream Person").await
    }

    /// The browser clicks the provider's button (keeping `next`), signs in at
    /// the upstream as `email` unless already signed in there, and is sent
    /// back: returns the callback URL, not yet followed.
    pub(crate) async fn to_callback(&self, browser: &Browser, email: &str, next: &str) -> String {
        let authorize = self.press_button(browser, next).await;
        let answer = browser.get(&self.up, &authorize).await;
        let mut target = location(&answer);
        if target.starts_with("/login") {
            let back_to = query_param(&target, "next").expect("the upstream's next");
            let resume = browser.sign_in(&self.up, email, None, &back_to).await;
            target = location(&browser.get(&self.up, &resume).await);
        }
        assert!(
            target.starts_with(&callback_url(&self.down)),
            "the upstream sends the browser to the callback: {target}"
        );
        target
    }

    /// `GET /login/idp/upstream?next=…` on the downstream: the URL of the
    /// upstream's authorization endpoint it redirects to.
    pub(crate) async fn press_button(&self, browser: &Browser, next: &str) -> String {
        let next: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
        let answer = browser
            .get(&self.down, &format!("/login/idp/{PROVIDER}?next={next}"))
            .await;
        assert_eq!(answer.status(), 303, "the button leads to the upstream");
        let authorize = location(&answer);
        assert!(
            authorize.starts_with(&format!("{}/oauth2/authorize?", self.up.base)),
            "{authorize}"
        );
        authorize
    }

    /// The whole walk; returns the downstream's answer to the callback.
    pub(crate) async fn sign_in(&self, browser: &Browser, email: &str) -> reqwest::Response {
        let callback = self.to_callback(browser, email, "/account").await;
        browser.get(&self.down, &callback).await
    }
}

/// A user on `app` with `verified` email and, optionally, the password.
pub(crate) async fn create_user(
    app: &TestApp,
    email: &str,
    verified: bool,
    password: Option<&str>,
    name: &str,
) -> identity::User {
    let hash = match password {
        Some(p) => Some(
            app.state
                .hasher
                .hash(&identity::Password::new(p))
                .await
                .expect("hash"),
        ),
        None => None,
    };
    identity::create_user(
        &app.state.pool,
        NewUser {
            email: Email::parse(email).expect("email"),
            display_name: name.to_owned(),
            roles: Vec::new(),
            password_hash: hash,
            email_verified: verified,
            must_change_password: false,
        },
        app.clock.now_secs(),
    )
    .await
    .expect("create user")
}

/// The downstream user the browser is signed in as, and its session's `amr`
/// (`None` when not signed in).
pub(crate) async fn whoami(app: &TestApp, browser: &Browser) -> Option<(Value, Vec<String>)> {
    let answer = browser.get_json(app, "/account").await;
    if answer.status() != 200 {
        return None;
    }
    let body: Value = answer.json().await.expect("account JSON");
    let amr = body["sessions"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["current"] == true))
        .map(|s| {
            s["amr"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|m| m.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        })
        .unwrap_or_default();
    Some((body["user"].clone(), amr))
}

/// The (provider, subject, user) rows of the downstream's identities table.
pub(crate) async fn identities(app: &TestApp) -> Vec<(String, String, String)> {
    sqlx::query(
        "SELECT provider, subject, user_id FROM federated_identities ORDER BY created_at, id",
    )
    .fetch_all(&app.state.pool)
    .await
    .expect("identities")
    .iter()
    .map(|r| {
        (
            r.try_get("provider").expect("provider"),
            r.try_get("subject").expect("subject"),
            r.try_get("user_id").expect("user_id"),
        )
    })
    .collect()
}

/// How many rows `table` holds on `app`.
pub(crate) async fn count(app: &TestApp, table: &str) -> i64 {
    sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
        .fetch_one(&app.state.pool)
        .await
        .expect("count")
        .try_get("n")
        .expect("n")
}

/// Rewrites every pending state's nonce (a state whose nonce is not the
/// one the upstream puts in its ID token).
pub(crate) async fn tamper_nonces(app: &TestApp) {
    sqlx::query("UPDATE federation_states SET nonce = 'not-the-nonce-sent'")
        .execute(&app.state.pool)
        .await
        .expect("tamper");
}

/// Changes a user's email on `app` (the upstream's user changes address).
pub(crate) async fn change_email(app: &TestApp, user_id: &str, email: &str) {
    sqlx::query("UPDATE users SET email = $1 WHERE id = $2")
        .bind(email)
        .bind(user_id)
        .execute(&app.state.pool)
        .await
        .expect("change email");
}

/// Replaces `param`'s value in `url`.
pub(crate) fn with_param(url: &str, param: &str, value: &str) -> String {
    let mut parsed = url::Url::parse(url).expect("url");
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| {
            if k == param {
                (k.into_owned(), value.to_owned())
            } else {
                (k.into_owned(), v.into_owned())
            }
        })
        .collect();
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    parsed.to_string()
}

/// The session CSRF token of a page's form.
pub(crate) async fn page_csrf(app: &TestApp, browser: &Browser, path: &str) -> String {
    let html = browser.get(app, path).await.text().await.expect("page");
    extract_input(&html, "csrf_token").unwrap_or_else(|| panic!("csrf_token on {path}:\n{html}"))
}

/// `federation_test!(name, options, |fed| async move { ... })`: the test
/// twice, as `name::sqlite` and `name::postgres` (both servers on that
/// backend; the PostgreSQL variant skips like `backend_test!`).
#[macro_export]
macro_rules! federation_test {
    ($name:ident, $options:expr, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let fed = $crate::support::federation::Federation::start(
                    $crate::support::app::Backend::Sqlite,
                    $options,
                )
                .await
                .expect("sqlite always available");
                ($body)(fed).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(fed) = $crate::support::federation::Federation::start(
                    $crate::support::app::Backend::Postgres,
                    $options,
                )
                .await
                {
                    ($body)(fed).await;
                }
            }
        }
    };
}

/// How a misbehaving upstream answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Misbehaviour {
    /// An endless chunked body (no `Content-Length`): only a size cap stops it.
    EndlessBody,
    /// Accepts the connection and never answers.
    Silent,
}

/// A loopback HTTP server that misbehaves as told; returns its base URL.
/// It lives as long as the test's runtime.
pub(crate) async fn misbehaving_upstream(how: Misbehaviour) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0_u8; 4096];
                let _ = socket.read(&mut request).await;
                match how {
                    Misbehaviour::Silent => {
                        // Hold the connection open, answer nothing.
                        let _ = socket.read(&mut request).await;
                    }
                    Misbehaviour::EndlessBody => {
                        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                        if socket.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                        let chunk = format!("{:x}\r\n{}\r\n", 8192, " ".repeat(8192));
                        while socket.write_all(chunk.as_bytes()).await.is_ok() {}
                    }
                }
            });
        }
    });
    base
}

/// Adds a provider named `name` with `issuer` to `app`'s database (a
/// client id and secret nobody checks).
pub(crate) async fn add_stand_in_provider(app: &TestApp, name: &str, issuer: &str) {
    let scopes = vec!["email".to_owned()];
    let role_map = std::collections::BTreeMap::new();
    let spec = ProviderSpec::build(
        ProviderFields {
            name,
            kind: "oidc",
            issuer,
            client_id: "stand-in",
            auth_method: "client_secret_basic",
            scopes: &scopes,
            link: "verified",
            provision: true,
            role_claim: "",
            role_map: &role_map,
            enabled: true,
        },
        SecretSource::Sealed(String::new()),
        Origin::Database,
        &app.state.config,
    )
    .expect("provider spec");
    let sealed = federation::seal_secret(&app.state.federation_seal_key, name, "secret");
    store::put_provider(&app.state.pool, &spec, &sealed, false, app.clock.now_secs())
        .await
        .expect("store provider");
}
