//! The app harness: starts the real server on a random port with a fresh
//! database (a temp SQLite file, or a new PostgreSQL database, dropped when
//! the app is) and an injectable clock, and gives tests an HTTP client with
//! a cookie jar. [`TestApp::spawn_localhost`] is the variant whose issuer is
//! `http://localhost:PORT`, for passkeys (WebAuthn refuses IP addresses).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use latchkey::clock::ManualClock;
use latchkey::config::Config;
use latchkey::crypto::MasterKey;
use latchkey::identity::{self, Email, NewUser, Password, Role};
use latchkey::mfa::totp::Totp;
use latchkey::{AppState, Application, Dependencies};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub base: String,
    pub clock: ManualClock,
    pub state: AppState,
    pub client: reqwest::Client,
    pub backend: Backend,
    pub database_url: String,
    /// The master key this server was started with (to start a second
    /// instance on the same database).
    pub master_key: MasterKey,
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    pub(crate) server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// `LATCHKEY_TEST_POSTGRES_URL`, or `None` (PostgreSQL tests then skip —
/// unless `CI` or `LATCHKEY_TEST_REQUIRE_POSTGRES` is set, when a missing URL fails).
pub fn postgres_url() -> Option<String> {
    match std::env::var("LATCHKEY_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("CI").is_ok()
                || std::env::var("LATCHKEY_TEST_REQUIRE_POSTGRES").is_ok()
            {
                panic!(
                    "LATCHKEY_TEST_POSTGRES_URL is not set but PostgreSQL tests are required (CI)"
                );
            }
            eprintln!("skipping: set LATCHKEY_TEST_POSTGRES_URL to run PostgreSQL tests");
            None
        }
    }
}

/// Creates a fresh PostgreSQL database for one test and returns its URL.
pub async fn fresh_postgres_database(admin_url: &str) -> String {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {admin_url}: {e}"));
    let name = format!("lk_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let mut url = url::Url::parse(admin_url).expect("postgres url");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// A configuration for tests: fast (but real) Argon2id parameters, loopback issuer.
pub fn test_config(database_url: String) -> Config {
    let mut config = Config {
        bind: "127.0.0.1:0".into(),
        ..Config::default()
    };
    config.database.url = database_url;
    config.password.argon2_memory_kib = 256;
    config.password.argon2_iterations = 1;
    config
}

impl TestApp {
    /// Spawns with the default test configuration; `None` when the backend is unavailable (skip).
    pub async fn spawn(backend: Backend) -> Option<TestApp> {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(
        backend: Backend,
        customize: impl FnOnce(&mut Config),
    ) -> Option<TestApp> {
        Self::spawn_on(backend, false, customize).await
    }

    /// A server whose issuer is `http://localhost:PORT` (passkeys need a name).
    pub async fn spawn_localhost(backend: Backend) -> Option<TestApp> {
        Self::spawn_on(backend, true, |_| {}).await
    }

    pub async fn spawn_localhost_with(
        backend: Backend,
        customize: impl FnOnce(&mut Config),
    ) -> Option<TestApp> {
        Self::spawn_on(backend, true, customize).await
    }

    pub(crate) async fn spawn_on(
        backend: Backend,
        localhost: bool,
        customize: impl FnOnce(&mut Config),
    ) -> Option<TestApp> {
        let dir = tempfile::tempdir().expect("tempdir");
        let database_url = match backend {
            Backend::Sqlite => format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("latchkey.db").display()
            ),
            Backend::Postgres => fresh_postgres_database(&postgres_url()?).await,
        };
        let mut config = test_config(database_url);
        // The issuer must match the port we get: bind once, name the port in
        // the issuer, and hand the same listener to the server (no window in
        // which another test could take the port).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        config.issuer = if localhost {
            format!("http://localhost:{port}")
        } else {
            format!("http://127.0.0.1:{port}")
        };
        customize(&mut config);
        let clock = ManualClock::new(time_now());
        Some(Self::start_on(listener, config, MasterKey::generate(), clock, dir, backend).await)
    }

    /// Starts the server on `listener` with `config` (its issuer as given),
    /// the master key and the clock; `dir` lives as long as the app.
    pub async fn start_on(
        listener: std::net::TcpListener,
        mut config: Config,
        master_key: MasterKey,
        clock: ManualClock,
        dir: tempfile::TempDir,
        backend: Backend,
    ) -> TestApp {
        // Server logs go to the test's captured output (shown when it fails).
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn,latchkey=info".into()),
            )
            .try_init();
        let deps = Dependencies {
            clock: Arc::new(clock.clone()),
        };
        let port = listener.local_addr().expect("addr").port();
        config.bind = format!("127.0.0.1:{port}");
        let database_url = config.database.url.clone();
        // The address the tests talk to: by name when the issuer is
        // `localhost` (cookies and WebAuthn follow the name), else the IP.
        let by_name = url::Url::parse(&config.issuer)
            .ok()
            .and_then(|u| u.host_str().map(|h| h == "localhost"))
            .unwrap_or(false);
        let base = if by_name {
            format!("http://localhost:{port}")
        } else {
            format!("http://127.0.0.1:{port}")
        };
        let app = Application::build_on(listener, config, master_key.clone(), deps)
            .await
            .expect("server builds");
        let state = app.state().clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        TestApp {
            base,
            clock,
            state,
            client: new_client(),
            backend,
            database_url,
            master_key,
            _dir: dir,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Creates a user directly through the identity domain (as the CLI does).
    pub async fn create_user(&self, email: &str, password: &str, roles: &[&str]) -> identity::User {
        let hash = self
            .state
            .hasher
            .hash(&Password::new(password))
            .await
            .expect("hash");
        identity::create_user(
            &self.state.pool,
            NewUser {
                email: Email::parse(email).expect("email"),
                display_name: String::new(),
                roles: roles
                    .iter()
                    .map(|r| Role::parse(r).expect("role"))
                    .collect(),
                password_hash: Some(hash),
                email_verified: true,
                must_change_password: false,
            },
            self.clock.now_secs(),
        )
        .await
        .expect("create user")
    }

    /// GETs `/login` with `client` and returns the CSRF token from the form.
    pub async fn login_csrf(&self, client: &reqwest::Client) -> String {
        let html = client
            .get(self.url("/login"))
            .send()
            .await
            .expect("get login")
            .text()
            .await
            .expect("body");
        extract_input(&html, "csrf_token").expect("csrf_token in login form")
    }

    /// Signs in through the real form; returns the response (303 on success).
    pub async fn login_with(
        &self,
        client: &reqwest::Client,
        email: &str,
        password: &str,
    ) -> reqwest::Response {
        let csrf = self.login_csrf(client).await;
        client
            .post(self.url("/login"))
            .form(&[
                ("email", email),
                ("password", password),
                ("csrf_token", &csrf),
            ])
            .send()
            .await
            .expect("post login")
    }

    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.login_with(&self.client, email, password).await
    }

    /// The account page's CSRF token (session-bound).
    pub async fn account_csrf(&self, client: &reqwest::Client) -> String {
        let body: serde_json::Value = client
            .get(self.url("/account"))
            .header("accept", "application/json")
            .send()
            .await
            .expect("account")
            .json()
            .await
            .expect("json");
        body["csrf_token"].as_str().expect("csrf_token").to_owned()
    }

    /// Signs `client` in with a password; returns the account page's
    /// (session) CSRF token.
    pub async fn sign_in(&self, client: &reqwest::Client, email: &str, password: &str) -> String {
        let response = self.login_with(client, email, password).await;
        assert_eq!(response.status(), 303, "password sign-in");
        self.account_csrf(client).await
    }

    pub async fn passkey_count(&self) -> i64 {
        use sqlx::Row as _;
        sqlx::query("SELECT COUNT(*) AS n FROM passkeys")
            .fetch_one(&self.state.pool)
            .await
            .expect("count")
            .try_get("n")
            .expect("n")
    }

    pub async fn audit_kinds(&self) -> Vec<String> {
        latchkey::audit::tail(&self.state.pool, 1000)
            .await
            .expect("audit")
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if self.backend == Backend::Postgres {
            drop_postgres_database(&self.database_url);
        }
    }
}

/// Drops a per-test PostgreSQL database (forcibly closing the pool's
/// connections), so test runs leave nothing behind. Runs on its own thread
/// because `Drop` may run inside the test's async runtime.
fn drop_postgres_database(database_url: &str) {
    let Some(admin) = std::env::var("LATCHKEY_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        return;
    };
    let Some(name) = url::Url::parse(database_url)
        .ok()
        .map(|u| u.path().trim_start_matches('/').to_owned())
    else {
        return;
    };
    if !name.starts_with("lk_test_") {
        return;
    }
    let worker = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async move {
            use sqlx::Connection as _;
            if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        });
    });
    let _ = worker.join();
}

pub trait ClockExt {
    fn now_secs(&self) -> i64;
}
impl ClockExt for ManualClock {
    fn now_secs(&self) -> i64 {
        latchkey::clock::Clock::now(self)
    }
}

pub(crate) fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A browser-like client: its own cookie jar, redirects not followed.
pub fn new_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Reads `value` of `<input name="NAME" value="...">` from a page.
pub fn extract_input(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')?;
    Some(html[start..start + end].to_owned())
}

/// The session cookie value set by a response, if any.
pub fn session_cookie_of(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| {
            c.strip_prefix("latchkey_session=")
                .map(|rest| rest.split(';').next().unwrap_or_default().to_owned())
        })
}

pub fn env_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Declares a test that runs once on SQLite and once on PostgreSQL:
/// `backend_test!(name, |app| async move { ... });`
#[macro_export]
macro_rules! backend_test {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let app =
                    $crate::support::app::TestApp::spawn($crate::support::app::Backend::Sqlite)
                        .await
                        .expect("sqlite always available");
                ($body)(app).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(app) =
                    $crate::support::app::TestApp::spawn($crate::support::app::Backend::Postgres)
                        .await
                {
                    ($body)(app).await;
                }
            }
        }
    };
    ($name:ident, config = $custom:expr, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let app = $crate::support::app::TestApp::spawn_with(
                    $crate::support::app::Backend::Sqlite,
                    $custom,
                )
                .await
                .expect("sqlite");
                ($body)(app).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(app) = $crate::support::app::TestApp::spawn_with(
                    $crate::support::app::Backend::Postgres,
                    $custom,
                )
                .await
                {
                    ($body)(app).await;
                }
            }
        }
    };
}

/// `LATCHKEY_DATABASE_URL` for a CLI run: a SQLite file in `dir`, or a fresh
/// PostgreSQL database (`None`: PostgreSQL is not available, skip), migrated
/// as `latchkey migrate` leaves it (the other subcommands never migrate).
pub(crate) async fn cli_database(backend: Backend, dir: &Path) -> Option<String> {
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}?mode=rwc", dir.join("cli.db").display()),
        Backend::Postgres => fresh_postgres_database(&postgres_url()?).await,
    };
    let pool = latchkey::store::connect(&latchkey::config::DatabaseConfig {
        url: url.clone(),
        ..Default::default()
    })
    .await
    .expect("open the CLI database");
    latchkey::store::migrate(&pool)
        .await
        .expect("migrate the CLI database");
    latchkey::identity::normalize_stored_emails(&pool)
        .await
        .expect("the data step of the migrations");
    pool.close().await;
    Some(url)
}

pub(crate) async fn drop_database(url: &str) {
    use sqlx::Connection as _;
    let (Some(admin), Ok(parsed)) = (postgres_url(), url::Url::parse(url)) else {
        return;
    };
    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
        let name = parsed.path().trim_start_matches('/').to_owned();
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
    }
}

pub(crate) fn base32_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => continue,
        };
        buffer = (buffer << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            out.push((buffer >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    out
}

/// [`enroll`] on the server at `base` whose clock reads `now`.
pub(crate) async fn enroll_at(
    base: &str,
    now: i64,
    client: &reqwest::Client,
) -> (Vec<u8>, Vec<String>) {
    let url = |path: &str| format!("{base}{path}");
    let html = client
        .get(url("/account/mfa"))
        .header("accept", "text/html")
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    let csrf = extract_input(&html, "csrf_token").expect("csrf");
    let html = client
        .post(url("/account/mfa/totp/start"))
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .await
        .expect("start")
        .text()
        .await
        .expect("html");
    assert!(
        html.contains("<svg"),
        "a QR code rendered by Latchkey itself"
    );
    let secret =
        base32_decode(between(&html, "<code id=\"totp-secret\">", "</code>").expect("manual key"));
    assert_eq!(secret.len(), 20);
    let code = Totp::new(&secret).code_at(now as u64);
    let r = client
        .post(url("/account/mfa/totp/confirm"))
        .form(&[("csrf_token", csrf.as_str()), ("code", code.as_str())])
        .send()
        .await
        .expect("confirm");
    assert_eq!(r.status(), 200);
    let html = r.text().await.expect("html");
    let list = between(&html, "<ul id=\"recovery-codes\">", "</ul>").expect("codes shown once");
    let codes: Vec<String> = list
        .split("<code>")
        .skip(1)
        .filter_map(|c| c.split("</code>").next())
        .map(str::to_owned)
        .collect();
    assert_eq!(codes.len(), 10);
    (secret, codes)
}

/// The text between `start` and `end` in a page.
pub(crate) fn between<'a>(html: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = html.find(start)? + start.len();
    Some(&html[i..i + html[i..].find(end)?])
}
