//! Passkeys over HTTP, without a browser: who may start and finish a WebAuthn
//! ceremony, and the ceremony's single use, expiry and binding to the browser
//! that started it. Real authenticators are in `passkeys_browser`.
//!
//! WebAuthn refuses IP addresses, so these servers run with the issuer
//! `http://localhost:PORT` ([`PasskeyApp`]) instead of the harness's
//! `http://127.0.0.1:PORT`.

use std::sync::Arc;

use latchkey::clock::ManualClock;
use latchkey::config::Config;
use latchkey::crypto::MasterKey;
use latchkey::identity::{self, Email, NewUser, Password};
use latchkey::{AppState, Application, Dependencies};
use serde_json::{json, Value};

use crate::helpers::{self, Backend, ClockExt as _, TestApp};

/// A real server whose issuer is `http://localhost:PORT`.
pub struct PasskeyApp {
    pub base: String,
    pub clock: ManualClock,
    pub state: AppState,
    _dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl PasskeyApp {
    /// `None` when the backend is unavailable (PostgreSQL not configured: skip).
    pub async fn spawn(backend: Backend) -> Option<PasskeyApp> {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(
        backend: Backend,
        customize: impl FnOnce(&mut Config),
    ) -> Option<PasskeyApp> {
        let dir = tempfile::tempdir().expect("tempdir");
        let database_url = match backend {
            Backend::Sqlite => format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("latchkey.db").display()
            ),
            Backend::Postgres => helpers::fresh_postgres_database(&helpers::postgres_url()?).await,
        };
        let mut config = helpers::test_config(database_url);
        // Bind once and hand the listener over: no window for another test to take the port.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        config.issuer = format!("http://localhost:{port}");
        customize(&mut config);
        let clock = ManualClock::new(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_secs() as i64,
        );
        Some(Self::start(listener, config, MasterKey::generate(), clock, dir).await)
    }

    /// Starts the server on `listener` (its issuer `http://localhost:PORT`
    /// unless `config` names another) with the given master key and clock.
    pub async fn start(
        listener: std::net::TcpListener,
        mut config: Config,
        master_key: MasterKey,
        clock: ManualClock,
        dir: tempfile::TempDir,
    ) -> PasskeyApp {
        let port = listener.local_addr().expect("addr").port();
        config.bind = format!("127.0.0.1:{port}");
        let deps = Dependencies {
            clock: Arc::new(clock.clone()),
        };
        let app = Application::build_on(listener, config, master_key, deps)
            .await
            .expect("server builds");
        let state = app.state().clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        PasskeyApp {
            base: format!("http://localhost:{port}"),
            clock,
            state,
            _dir: dir,
            shutdown: Some(tx),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn create_user(&self, email: &str, password: &str) -> identity::User {
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
                roles: Vec::new(),
                password_hash: Some(hash),
                email_verified: true,
                must_change_password: false,
            },
            self.clock.now_secs(),
        )
        .await
        .expect("create user")
    }

    /// GETs `/login` with `client`: the anonymous CSRF token (the cookie is now in its jar).
    pub async fn login_csrf(&self, client: &reqwest::Client) -> String {
        let html = client
            .get(self.url("/login"))
            .send()
            .await
            .expect("login page")
            .text()
            .await
            .expect("body");
        helpers::extract_input(&html, "csrf_token").expect("csrf_token in the login form")
    }

    /// Signs `client` in with a password; returns the account page's (session) CSRF token.
    pub async fn sign_in(&self, client: &reqwest::Client, email: &str, password: &str) -> String {
        let csrf = self.login_csrf(client).await;
        let response = client
            .post(self.url("/login"))
            .form(&[
                ("email", email),
                ("password", password),
                ("csrf_token", &csrf),
            ])
            .send()
            .await
            .expect("post login");
        assert_eq!(response.status(), 303, "password sign-in");
        let account: Value = client
            .get(self.url("/account"))
            .header("accept", "application/json")
            .send()
            .await
            .expect("account")
            .json()
            .await
            .expect("json");
        account["csrf_token"]
            .as_str()
            .expect("csrf_token")
            .to_owned()
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
}

impl Drop for PasskeyApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Declares a test run once on SQLite and once on PostgreSQL with a [`PasskeyApp`].
#[macro_export]
macro_rules! passkey_test {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let app = $crate::passkeys::PasskeyApp::spawn($crate::helpers::Backend::Sqlite)
                    .await
                    .expect("sqlite always available");
                ($body)(app).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(app) =
                    $crate::passkeys::PasskeyApp::spawn($crate::helpers::Backend::Postgres).await
                {
                    ($body)(app).await;
                }
            }
        }
    };
}

/// A structurally valid registration answer that no authenticator produced.
fn bogus_registration() -> Value {
    json!({
        "id": "AAAA",
        "rawId": "AAAA",
        "type": "public-key",
        "response": { "attestationObject": "AAAA", "clientDataJSON": "AAAA" },
        "extensions": {}
    })
}

/// A structurally valid assertion that no authenticator produced.
fn bogus_assertion() -> Value {
    json!({
        "id": "AAAA",
        "rawId": "AAAA",
        "type": "public-key",
        "response": {
            "authenticatorData": "AAAA",
            "clientDataJSON": "AAAA",
            "signature": "AAAA",
            "userHandle": "AAAA"
        },
        "extensions": {}
    })
}

async fn post_json(
    client: &reqwest::Client,
    url: String,
    csrf: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut request = client.post(url).json(&body);
    if let Some(csrf) = csrf {
        request = request.header("x-csrf-token", csrf);
    }
    let response = request.send().await.expect("post");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// Starts a usernameless sign-in with `client`; returns (ceremony, options).
async fn start_sign_in(app: &PasskeyApp, client: &reqwest::Client, csrf: &str) -> (String, Value) {
    let (status, body) = post_json(
        client,
        app.url("/login/passkey/start"),
        Some(csrf),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    (
        body["ceremony"].as_str().expect("ceremony").to_owned(),
        body["publicKey"].clone(),
    )
}

async fn finish_sign_in(
    app: &PasskeyApp,
    client: &reqwest::Client,
    csrf: &str,
    ceremony: &str,
) -> (u16, Value) {
    post_json(
        client,
        app.url("/login/passkey/finish"),
        Some(csrf),
        json!({ "ceremony": ceremony, "credential": bogus_assertion() }),
    )
    .await
}

fn decoded_len(b64url: &Value) -> usize {
    latchkey::crypto::b64url_decode(b64url.as_str().expect("base64url string"))
        .expect("base64url")
        .len()
}

crate::passkey_test!(
    sign_in_options_are_usernameless_with_user_verification_required,
    |app: PasskeyApp| async move {
        let client = helpers::new_client();
        let csrf = app.login_csrf(&client).await;
        let (ceremony, options) = start_sign_in(&app, &client, &csrf).await;
        assert_eq!(decoded_len(&Value::String(ceremony)), 32);
        assert!(
            decoded_len(&options["challenge"]) >= 32,
            "≥ 256-bit challenge: {options}"
        );
        assert_eq!(options["rpId"], "localhost");
        assert_eq!(options["userVerification"], "required");
        assert!(
            options["allowCredentials"]
                .as_array()
                .is_none_or(|list| list.is_empty()),
            "usernameless: no allowCredentials: {options}"
        );
    }
);

crate::passkey_test!(
    sign_in_ceremony_is_single_use,
    |app: PasskeyApp| async move {
        let client = helpers::new_client();
        let csrf = app.login_csrf(&client).await;
        let (ceremony, _) = start_sign_in(&app, &client, &csrf).await;
        // The first answer is verified (and fails: nobody holds this credential)...
        let (status, body) = finish_sign_in(&app, &client, &csrf, &ceremony).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unknown_credential"))
        );
        // ...and used the ceremony up: the same id never reaches verification again.
        let (status, body) = finish_sign_in(&app, &client, &csrf, &ceremony).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("ceremony_expired"))
        );
        assert!(app.audit_kinds().await.contains(&"login_failed".to_owned()));
    }
);

crate::passkey_test!(
    sign_in_ceremony_expires_after_five_minutes,
    |app: PasskeyApp| async move {
        let client = helpers::new_client();
        let csrf = app.login_csrf(&client).await;
        let (fresh, _) = start_sign_in(&app, &client, &csrf).await;
        let (stale, _) = start_sign_in(&app, &client, &csrf).await;
        app.clock.advance(299);
        let (status, body) = finish_sign_in(&app, &client, &csrf, &fresh).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unknown_credential")),
            "still valid at 299 s"
        );
        app.clock.advance(2);
        let (status, body) = finish_sign_in(&app, &client, &csrf, &stale).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("ceremony_expired")),
            "expired at 301 s"
        );
    }
);

crate::passkey_test!(
    sign_in_ceremony_is_bound_to_the_browser_that_started_it,
    |app: PasskeyApp| async move {
        let alice = helpers::new_client();
        let alice_csrf = app.login_csrf(&alice).await;
        let (ceremony, _) = start_sign_in(&app, &alice, &alice_csrf).await;
        // Another browser, with its own valid cookie and token, cannot finish it.
        let mallory = helpers::new_client();
        let mallory_csrf = app.login_csrf(&mallory).await;
        let (status, body) = finish_sign_in(&app, &mallory, &mallory_csrf, &ceremony).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("ceremony_expired"))
        );
        // Nor can it replay Alice's token without her cookie.
        let (status, _) = finish_sign_in(&app, &mallory, &alice_csrf, &ceremony).await;
        assert_eq!(status, 403);
        // Alice still can: the attempt did not consume her ceremony.
        let (status, body) = finish_sign_in(&app, &alice, &alice_csrf, &ceremony).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unknown_credential"))
        );
    }
);

crate::passkey_test!(
    sign_in_endpoints_refuse_missing_csrf_and_foreign_origins,
    |app: PasskeyApp| async move {
        let client = helpers::new_client();
        let csrf = app.login_csrf(&client).await;
        let (status, body) =
            post_json(&client, app.url("/login/passkey/start"), None, json!({})).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("csrf_rejected"))
        );
        let (status, _) = post_json(
            &client,
            app.url("/login/passkey/start"),
            Some("not-the-token"),
            json!({}),
        )
        .await;
        assert_eq!(status, 403);
        let cross_site = client
            .post(app.url("/login/passkey/start"))
            .header("x-csrf-token", &csrf)
            .header("origin", "https://evil.example")
            .json(&json!({}))
            .send()
            .await
            .expect("post");
        assert_eq!(cross_site.status(), 403);
        // Without the anonymous cookie there is nothing to bind to.
        let (status, _) = post_json(
            &helpers::new_client(),
            app.url("/login/passkey/start"),
            Some(&csrf),
            json!({}),
        )
        .await;
        assert_eq!(status, 403);
    }
);

crate::passkey_test!(
    registration_needs_a_signed_in_user,
    |app: PasskeyApp| async move {
        let client = helpers::new_client();
        let (status, body) = post_json(
            &client,
            app.url("/account/passkeys/register/start"),
            None,
            json!({}),
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unauthenticated"))
        );
        let page = client
            .get(app.url("/account/passkeys"))
            .header("accept", "text/html")
            .send()
            .await
            .expect("page");
        assert_eq!(page.status(), 303);
        assert_eq!(
            page.headers()["location"],
            "/login?next=%2Faccount%2Fpasskeys"
        );
    }
);

crate::passkey_test!(
    registration_refuses_missing_or_foreign_csrf_token,
    |app: PasskeyApp| async move {
        app.create_user("ada@example.com", "correct horse battery")
            .await;
        let client = helpers::new_client();
        let csrf = app
            .sign_in(&client, "ada@example.com", "correct horse battery")
            .await;
        let start = app.url("/account/passkeys/register/start");
        let (status, body) = post_json(&client, start.clone(), None, json!({})).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("csrf_rejected"))
        );
        // The login page's anonymous token is not the session's token.
        let anonymous = app.login_csrf(&client).await;
        let (status, _) = post_json(&client, start.clone(), Some(&anonymous), json!({})).await;
        assert_eq!(status, 403);
        let (status, body) = post_json(&client, start, Some(&csrf), json!({})).await;
        assert_eq!(status, 200, "{body}");
    }
);

crate::passkey_test!(
    registration_offers_a_discoverable_credential_with_es256_eddsa_rs256,
    |app: PasskeyApp| async move {
        let user = app
            .create_user("ada@example.com", "correct horse battery")
            .await;
        let client = helpers::new_client();
        let csrf = app
            .sign_in(&client, "ada@example.com", "correct horse battery")
            .await;
        let (status, body) = post_json(
            &client,
            app.url("/account/passkeys/register/start"),
            Some(&csrf),
            json!({}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let options = &body["publicKey"];
        assert_eq!(decoded_len(&body["ceremony"]), 32);
        assert!(decoded_len(&options["challenge"]) >= 32);
        assert_eq!(options["rp"]["id"], "localhost");
        assert_eq!(options["rp"]["name"], "Latchkey");
        assert_eq!(options["user"]["name"], "ada@example.com");
        let handle = latchkey::crypto::b64url_decode(options["user"]["id"].as_str().expect("id"))
            .expect("base64url");
        assert_eq!(
            handle,
            uuid::Uuid::parse_str(&user.id).expect("uuid").as_bytes(),
            "the user handle is the user id, not the email"
        );
        let algs: Vec<i64> = options["pubKeyCredParams"]
            .as_array()
            .expect("params")
            .iter()
            .map(|p| p["alg"].as_i64().expect("alg"))
            .collect();
        assert_eq!(algs, [-7, -8, -257], "ES256, EdDSA, RS256");
        let selection = &options["authenticatorSelection"];
        assert_eq!(selection["residentKey"], "required");
        assert_eq!(selection["requireResidentKey"], true);
        assert_eq!(selection["userVerification"], "preferred");
        assert_eq!(options["attestation"], "none");
    }
);

crate::passkey_test!(
    adding_a_passkey_needs_a_recent_sign_in,
    |app: PasskeyApp| async move {
        app.create_user("ada@example.com", "correct horse battery")
            .await;
        let client = helpers::new_client();
        let csrf = app
            .sign_in(&client, "ada@example.com", "correct horse battery")
            .await;
        // Still signed in (idle timeout 30 min), but the sign-in is 16 minutes old.
        app.clock.advance(16 * 60);
        let (status, body) = post_json(
            &client,
            app.url("/account/passkeys/register/start"),
            Some(&csrf),
            json!({}),
        )
        .await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("reauthentication_required"))
        );
        assert_eq!(
            body["location"],
            "/login?reauth=1&next=%2Faccount%2Fpasskeys"
        );
        // Signing in again makes it recent.
        let csrf = app
            .sign_in(&client, "ada@example.com", "correct horse battery")
            .await;
        let (status, _) = post_json(
            &client,
            app.url("/account/passkeys/register/start"),
            Some(&csrf),
            json!({}),
        )
        .await;
        assert_eq!(status, 200);
    }
);

crate::passkey_test!(
    bogus_registration_is_refused_and_stores_nothing,
    |app: PasskeyApp| async move {
        app.create_user("ada@example.com", "correct horse battery")
            .await;
        let client = helpers::new_client();
        let csrf = app
            .sign_in(&client, "ada@example.com", "correct horse battery")
            .await;
        let start = app.url("/account/passkeys/register/start");
        let finish = app.url("/account/passkeys/register/finish");
        let (_, started) = post_json(&client, start.clone(), Some(&csrf), json!({})).await;
        let ceremony = started["ceremony"].as_str().expect("ceremony").to_owned();
        // Not a credential at all.
        for body in [
            json!({ "ceremony": ceremony, "credential": "nope" }),
            json!({ "ceremony": ceremony }),
            json!({ "ceremony": ceremony, "credential": { "id": 1 } }),
            json!([1, 2, 3]),
        ] {
            let (status, answer) = post_json(&client, finish.clone(), Some(&csrf), body).await;
            assert_eq!(
                (status, answer["error"].as_str()),
                (400, Some("invalid_request"))
            );
        }
        // Well-formed, but no authenticator made it.
        let (status, answer) = post_json(
            &client,
            finish.clone(),
            Some(&csrf),
            json!({ "ceremony": ceremony, "credential": bogus_registration(), "name": "Evil" }),
        )
        .await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("invalid_passkey"))
        );
        // The ceremony is spent either way.
        let (status, answer) = post_json(
            &client,
            finish,
            Some(&csrf),
            json!({ "ceremony": ceremony, "credential": bogus_registration() }),
        )
        .await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("ceremony_expired"))
        );
        assert_eq!(app.passkey_count().await, 0, "nothing stored");
        let list: Value = client
            .get(app.url("/account/passkeys"))
            .header("accept", "application/json")
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        assert_eq!(list["passkeys"], json!([]));
    }
);

crate::passkey_test!(
    a_registration_ceremony_belongs_to_its_session,
    |app: PasskeyApp| async move {
        app.create_user("ada@example.com", "correct horse battery")
            .await;
        app.create_user("bob@example.com", "correct horse battery")
            .await;
        let ada = helpers::new_client();
        let ada_csrf = app
            .sign_in(&ada, "ada@example.com", "correct horse battery")
            .await;
        let (_, started) = post_json(
            &ada,
            app.url("/account/passkeys/register/start"),
            Some(&ada_csrf),
            json!({}),
        )
        .await;
        let bob = helpers::new_client();
        let bob_csrf = app
            .sign_in(&bob, "bob@example.com", "correct horse battery")
            .await;
        let (status, answer) = post_json(
            &bob,
            app.url("/account/passkeys/register/finish"),
            Some(&bob_csrf),
            json!({ "ceremony": started["ceremony"], "credential": bogus_registration() }),
        )
        .await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (400, Some("ceremony_expired"))
        );
    }
);

crate::passkey_test!(
    renaming_or_deleting_someone_elses_passkey_is_not_found,
    |app: PasskeyApp| async move {
        app.create_user("ada@example.com", "correct horse battery")
            .await;
        let client = helpers::new_client();
        let csrf = app
            .sign_in(&client, "ada@example.com", "correct horse battery")
            .await;
        let unknown = uuid::Uuid::now_v7().to_string();
        let (status, _) = post_json(
            &client,
            app.url(&format!("/account/passkeys/{unknown}/rename")),
            Some(&csrf),
            json!({ "name": "x" }),
        )
        .await;
        assert_eq!(status, 404);
        let (status, _) = post_json(
            &client,
            app.url(&format!("/account/passkeys/{unknown}/delete")),
            Some(&csrf),
            json!({ "confirm": "yes" }),
        )
        .await;
        assert_eq!(status, 404);
        let (status, _) = post_json(
            &client,
            app.url(&format!("/account/passkeys/{unknown}/delete")),
            None,
            json!({}),
        )
        .await;
        assert_eq!(status, 403, "CSRF first");
    }
);

crate::passkey_test!(
    second_factor_needs_a_registered_passkey,
    |app: PasskeyApp| async move {
        let user = app
            .create_user("ada@example.com", "correct horse battery")
            .await;
        let binding = latchkey::webauthn::ChallengeBinding::secret("test", "browser");
        let error = latchkey::webauthn::start_second_factor(&app.state, &user.id, &binding)
            .await
            .expect_err("no passkey");
        assert!(
            matches!(error, latchkey::webauthn::PasskeyError::NoPasskeys),
            "{error:?}"
        );
    }
);

crate::backend_test!(
    passkeys_are_off_when_the_issuer_is_an_ip_address,
    |app: TestApp| async move {
        let client = helpers::new_client();
        let csrf = app.login_csrf(&client).await;
        let response = client
            .post(app.url("/login/passkey/start"))
            .header("x-csrf-token", csrf)
            .json(&json!({}))
            .send()
            .await
            .expect("start");
        assert_eq!(response.status(), 404);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"], "passkeys_unavailable");
        let login = client
            .get(app.url("/login"))
            .send()
            .await
            .expect("login")
            .text()
            .await
            .expect("html");
        assert!(
            login.contains(r#"autocomplete="username webauthn""#),
            "{login}"
        );
        assert!(login.contains(r#"<script src="/static/passkeys.js"></script>"#));
        let script = client
            .get(app.url("/static/passkeys.js"))
            .send()
            .await
            .expect("script");
        assert_eq!(script.status(), 200);
        assert!(script.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/javascript"));
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_passkey_sign_ins_count_towards_the_lockout() {
    let app = PasskeyApp::spawn_with(Backend::Sqlite, |c| c.login.max_failures_per_ip = 3)
        .await
        .expect("sqlite");
    let client = helpers::new_client();
    let csrf = app.login_csrf(&client).await;
    // Unknown credentials name no account: they count for the address.
    for _ in 0..3 {
        let (ceremony, _) = start_sign_in(&app, &client, &csrf).await;
        let (status, body) = finish_sign_in(&app, &client, &csrf, &ceremony).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("unknown_credential"))
        );
    }
    let (ceremony, _) = start_sign_in(&app, &client, &csrf).await;
    let response = client
        .post(app.url("/login/passkey/finish"))
        .header("x-csrf-token", &csrf)
        .json(&json!({ "ceremony": ceremony, "credential": bogus_assertion() }))
        .send()
        .await
        .expect("finish");
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], "too_many_attempts");
    assert_eq!(
        app.audit_kinds().await.last().map(String::as_str),
        Some("login_locked_out")
    );
    // The same lock holds for passwords from that address.
    app.create_user("ada@example.com", "correct horse battery")
        .await;
    let response = client
        .post(app.url("/login"))
        .json(&json!({ "email": "ada@example.com", "password": "correct horse battery" }))
        .send()
        .await
        .expect("password");
    assert_eq!(response.status(), 429);
}

crate::passkey_test!(
    second_step_passkey_endpoints_need_a_pending_sign_in,
    |app: PasskeyApp| async move {
        let client = helpers::new_client();
        let csrf = app.login_csrf(&client).await;
        // No password given in this browser: nothing to complete.
        for path in ["/login/mfa/passkey/start", "/login/mfa/passkey/finish"] {
            let body = if path.ends_with("finish") {
                json!({ "ceremony": "x".repeat(43), "credential": bogus_assertion() })
            } else {
                json!({})
            };
            let (status, answer) =
                post_json(&client, app.url(path), Some(&csrf), body.clone()).await;
            assert_eq!(
                (status, answer["error"].as_str()),
                (401, Some("mfa_expired")),
                "{path}"
            );
            // Without the page's CSRF token: refused before anything else.
            let (status, answer) = post_json(&client, app.url(path), None, body).await;
            assert_eq!(
                (status, answer["error"].as_str()),
                (403, Some("csrf_rejected")),
                "{path}"
            );
        }
    }
);

crate::passkey_test!(
    the_second_step_offers_only_the_factors_the_user_has,
    |app: PasskeyApp| async move {
        let user = app
            .create_user("ada@example.com", "correct horse battery")
            .await;
        // An authenticator app (enrolled directly), no passkey.
        let now = app.clock.now_secs();
        let secret =
            latchkey::mfa::begin_totp(&app.state.pool, &app.state.mfa_seal_key, &user.id, now)
                .await
                .expect("begin");
        let code = latchkey::mfa::totp::Totp::new(&secret).code_at(now as u64);
        latchkey::mfa::confirm_totp(
            &app.state.pool,
            &app.state.mfa_seal_key,
            &user.id,
            &code,
            now,
        )
        .await
        .expect("confirm");
        let client = helpers::new_client();
        let response = client
            .post(app.url("/login"))
            .json(&json!({ "email": "ada@example.com", "password": "correct horse battery" }))
            .send()
            .await
            .expect("password");
        assert_eq!(response.status(), 200);
        assert!(
            helpers::session_cookie_of(&response).is_none(),
            "no session yet"
        );
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["status"], "mfa_required");
        assert_eq!(body["methods"], json!(["totp", "recovery_code"]));
        let page = client
            .get(app.url("/login/mfa"))
            .send()
            .await
            .expect("page")
            .text()
            .await
            .expect("html");
        assert!(page.contains(r#"name="code""#), "{page}");
        assert!(
            !page.contains("passkey-second-factor"),
            "no passkey offered: {page}"
        );
        let csrf = helpers::extract_input(&page, "csrf_token").expect("csrf");
        let (status, answer) = post_json(
            &client,
            app.url("/login/mfa/passkey/start"),
            Some(&csrf),
            json!({}),
        )
        .await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (404, Some("no_passkeys"))
        );
        assert_eq!(
            client
                .get(app.url("/account"))
                .header("accept", "application/json")
                .send()
                .await
                .expect("account")
                .status(),
            401,
            "still signed out"
        );
    }
);

crate::passkey_test!(
    a_browser_on_the_loopback_ip_is_sent_to_the_localhost_issuer,
    |app: PasskeyApp| async move {
        let on_ip = app.base.replace("localhost", "127.0.0.1");
        let client = helpers::new_client();
        let page = client
            .get(format!("{on_ip}/login?next=%2Faccount"))
            .header("accept", "text/html,application/xhtml+xml")
            .send()
            .await
            .expect("login on the IP");
        assert_eq!(page.status(), 307);
        assert_eq!(
            page.headers()["location"],
            format!("{}/login?next=%2Faccount", app.base).as_str()
        );
        // Scripts and API clients on the IP are served as before.
        let discovery = client
            .get(format!("{on_ip}/.well-known/openid-configuration"))
            .send()
            .await
            .expect("discovery");
        assert_eq!(discovery.status(), 200);
        let body: Value = discovery.json().await.expect("json");
        assert_eq!(body["issuer"], app.base.as_str());
    }
);
