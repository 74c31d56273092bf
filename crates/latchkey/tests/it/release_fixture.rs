//! Databases written by a release, for the upgrade tests.
//!
//! `write_release_fixture` is ignored in normal runs: `scripts/make-release-fixture.sh`
//! runs it at a release's commit, once per backend, and commits what it
//! writes under `tests/fixtures/<release>/`. It fills a database through the
//! real pages and endpoints of that release — users with a password, with
//! TOTP and recovery codes, with a passkey (a real Chromium virtual
//! authenticator); confidential web clients signing with ES256, EdDSA and
//! RS256, a machine client, an opaque-token client and a public client; live
//! sessions, refresh-token families, access and ID tokens; a rotated key
//! ring — and writes `manifest-<backend>.json` with every secret a later test
//! needs to use them (the master key, passwords, the TOTP seed, the passkey's
//! private key, tokens and session cookies). They are test secrets of a
//! throw-away database, never used anywhere else.
//!
//! Upgrade tests (`upgrade`) start the current server on a copy of these
//! databases and prove that everything written by the old release still works.

use chromiumoxide::cdp::browser_protocol::web_authn::GetCredentialsParams;
use latchkey::clock::ManualClock;
use latchkey::crypto::MasterKey;
use latchkey::oauth::clients::{AccessTokenFormat, NewClient};
use serde_json::{json, Value};

use crate::support::app::TestApp;
use crate::support::app::{self, session_cookie_of, Backend, ClockExt as _};
use crate::support::browser::{chromium_available, Session};
use crate::support::oauth::client_spec;
use crate::support::oauth::{client_redirect, Pkce};
use crate::support::PASSWORD;

/// The redirect URI of the fixture's web clients.
pub const REDIRECT: &str = "https://app.fixture.test/cb";
/// The audience of the fixture's tokens.
pub const AUDIENCE: &str = "https://api.fixture.test";

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} must be set (see scripts/make-release-fixture.sh)"))
}

/// A confidential first-party web client signing with `alg`.
fn web_client(alg: &str) -> NewClient {
    NewClient {
        redirect_uris: vec![REDIRECT.into()],
        post_logout_redirect_uris: vec!["https://app.fixture.test/".into()],
        first_party: true,
        audience: AUDIENCE.into(),
        signing_algorithm: Some(alg.into()),
        id_token_signed_response_alg: None,
        ..client_spec(
            &format!("web app ({alg})"),
            true,
            &["authorization_code", "refresh_token"],
            "openid profile email offline_access read:data",
        )
    }
}

async fn register(app: &TestApp, label: &str, new: NewClient) -> Value {
    let alg = new.signing_algorithm.clone();
    let (client, secret) =
        latchkey::oauth::clients::create(&app.state.pool, new, app.clock.now_secs())
            .await
            .expect("create client");
    json!({
        "label": label,
        "id": client.id,
        "secret": secret.map(|s| s.expose().to_owned()),
        "alg": alg,
    })
}

/// Signs `browser` in with the password (first step only); returns its session cookie.
async fn password_sign_in(
    app: &TestApp,
    browser: &reqwest::Client,
    email: &str,
) -> reqwest::Response {
    let csrf = app.login_csrf(browser).await;
    browser
        .post(app.url("/login"))
        .form(&[
            ("email", email),
            ("password", PASSWORD),
            ("csrf_token", &csrf),
        ])
        .send()
        .await
        .expect("post login")
}

/// The authorization-code flow with PKCE and a nonce in a signed-in browser: the token answer.
async fn code_flow(app: &TestApp, browser: &reqwest::Client, client: &Value) -> Value {
    let pkce = Pkce::random();
    let id = client["id"].as_str().expect("id");
    let response = browser
        .get(app.url("/oauth2/authorize"))
        .query(&[
            ("response_type", "code"),
            ("client_id", id),
            ("redirect_uri", REDIRECT),
            ("scope", "openid profile email offline_access read:data"),
            ("state", "fixture"),
            ("nonce", "fixture-nonce"),
            ("code_challenge", pkce.challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .expect("authorize");
    let (_, query) = client_redirect(&response);
    let code = query.get("code").expect("a code");
    let answer: Value = reqwest::Client::new()
        .post(app.url("/oauth2/token"))
        .basic_auth(id, client["secret"].as_str())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", pkce.verifier.as_str()),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    assert!(answer["refresh_token"].is_string(), "{answer}");
    answer
}

async fn machine_token(app: &TestApp, client: &Value) -> String {
    let answer: Value = reqwest::Client::new()
        .post(app.url("/oauth2/token"))
        .basic_auth(
            client["id"].as_str().expect("id"),
            client["secret"].as_str(),
        )
        .form(&[("grant_type", "client_credentials"), ("scope", "read:data")])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    answer["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"))
        .to_owned()
}

fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut out, mut buffer, mut bits) = (String::new(), 0u32, 0);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes a release fixture; run by scripts/make-release-fixture.sh"]
async fn write_release_fixture() {
    assert!(chromium_available(), "the fixture's passkey needs Chromium");
    let backend = match env("LATCHKEY_FIXTURE_BACKEND").as_str() {
        "sqlite" => Backend::Sqlite,
        "postgres" => Backend::Postgres,
        other => panic!("LATCHKEY_FIXTURE_BACKEND={other}: sqlite or postgres"),
    };
    let out = std::path::PathBuf::from(env("LATCHKEY_FIXTURE_OUT"));
    let port: u16 = env("LATCHKEY_FIXTURE_PORT").parse().expect("a port");
    let dir = tempfile::tempdir().expect("tempdir");
    let database_url = match backend {
        Backend::Sqlite => format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("latchkey.db").display()
        ),
        Backend::Postgres => env("LATCHKEY_FIXTURE_DATABASE_URL"),
    };
    // Production Argon2id parameters, as a release's database holds them.
    let mut config = latchkey::Config::default();
    config.database.url = database_url;
    config.issuer = format!("http://localhost:{port}");
    config.tokens.additional_algorithms = vec!["EdDSA".into(), "RS256".into()];
    let master_key = MasterKey::generate();
    let clock = ManualClock::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs() as i64,
    );
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the fixture port");
    let app = TestApp::start_on(listener, config, master_key.clone(), clock, dir, backend).await;
    let created_at = app.clock.now_secs();

    // Clients of every kind and signing algorithm.
    let web_es256 = register(&app, "web-es256", web_client("ES256")).await;
    let web_eddsa = register(&app, "web-eddsa", web_client("EdDSA")).await;
    let web_rs256 = register(&app, "web-rs256", web_client("RS256")).await;
    let machine = register(
        &app,
        "machine",
        NewClient {
            audience: AUDIENCE.into(),
            ..client_spec("billing worker", true, &["client_credentials"], "read:data")
        },
    )
    .await;
    let opaque = register(
        &app,
        "machine-opaque",
        NewClient {
            audience: AUDIENCE.into(),
            access_token_format: AccessTokenFormat::Opaque,
            ..client_spec("opaque worker", true, &["client_credentials"], "read:data")
        },
    )
    .await;
    let spa = register(
        &app,
        "spa",
        NewClient {
            redirect_uris: vec!["http://127.0.0.1:5173/callback".into()],
            ..client_spec(
                "single-page app",
                false,
                &["authorization_code"],
                "openid profile",
            )
        },
    )
    .await;

    // ada: a password, a live session, a grant (refresh family) per signing algorithm.
    let ada = app.create_user("ada@fixture.test", PASSWORD, &[]).await;
    let ada_browser = app::new_client();
    let r = password_sign_in(&app, &ada_browser, "ada@fixture.test").await;
    assert_eq!(r.status(), 303, "ada signs in");
    let ada_session = session_cookie_of(&r).expect("a session cookie");
    let mut grants = Vec::new();
    for client in [&web_es256, &web_eddsa, &web_rs256] {
        let answer = code_flow(&app, &ada_browser, client).await;
        grants.push(json!({
            "user": "ada@fixture.test",
            "client": client["label"],
            "access_token": answer["access_token"],
            "refresh_token": answer["refresh_token"],
            "id_token": answer["id_token"],
            "session_cookie": ada_session,
        }));
    }

    // grace: an administrator with TOTP and recovery codes, signed in with both steps.
    let grace = app.create_user("grace@fixture.test", PASSWORD, &[]).await;
    latchkey::identity::set_roles(
        &app.state.pool,
        &grace.id,
        &[latchkey::identity::Role::parse("admin").expect("role")],
        app.clock.now_secs(),
    )
    .await
    .expect("grace is an admin");
    let enrolling = app::new_client();
    assert_eq!(
        password_sign_in(&app, &enrolling, "grace@fixture.test")
            .await
            .status(),
        303
    );
    let (totp_seed, recovery_codes) =
        crate::support::app::enroll_at(&app.base, app.clock.now_secs(), &enrolling).await;
    // The code just used is spent: sign in on the next time step.
    app.clock.advance(30);
    let grace_browser = app::new_client();
    let r = password_sign_in(&app, &grace_browser, "grace@fixture.test").await;
    assert_eq!(r.status(), 303, "grace: first step");
    let html = grace_browser
        .get(app.url("/login/mfa"))
        .send()
        .await
        .expect("mfa page")
        .text()
        .await
        .expect("html");
    let csrf = app::extract_input(&html, "csrf_token").expect("csrf on the second step");
    let code = latchkey::mfa::totp::Totp::new(&totp_seed).code_at(app.clock.now_secs() as u64);
    let r = grace_browser
        .post(app.url("/login/mfa"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("code", code.as_str()),
            ("next", "/account"),
        ])
        .send()
        .await
        .expect("second step");
    assert_eq!(r.status(), 303, "grace: second step");
    let grace_session = session_cookie_of(&r).expect("grace's session cookie");
    let answer = code_flow(&app, &grace_browser, &web_es256).await;
    grants.push(json!({
        "user": "grace@fixture.test",
        "client": "web-es256",
        "access_token": answer["access_token"],
        "refresh_token": answer["refresh_token"],
        "id_token": answer["id_token"],
        "session_cookie": grace_session,
    }));

    // linus: a passkey registered through the real page in Chromium.
    app.create_user("linus@fixture.test", PASSWORD, &[]).await;
    let browser = Session::without_autofill().await;
    browser
        .sign_in_with_password(&app, "linus@fixture.test")
        .await;
    browser.add_passkey(&app, "Fixture key").await;
    let credentials = browser
        .page
        .execute(GetCredentialsParams::new(browser.authenticator.clone()))
        .await
        .expect("WebAuthn.getCredentials")
        .result
        .credentials
        .clone();
    assert_eq!(credentials.len(), 1);
    let credential = &credentials[0];
    let passkey = json!({
        "credential_id": AsRef::<str>::as_ref(&credential.credential_id),
        "private_key": AsRef::<str>::as_ref(&credential.private_key),
        "user_handle": credential.user_handle.as_ref().map(|h| AsRef::<str>::as_ref(h).to_owned()),
        "rp_id": credential.rp_id,
        "sign_count": credential.sign_count,
    });
    browser.close().await;

    // Machine tokens, then a key rotation (the next key is pre-published).
    let machine_jwt = machine_token(&app, &machine).await;
    let opaque_token = machine_token(&app, &opaque).await;
    let next_kid = app
        .state
        .keys
        .rotate(&app.state.pool, app.clock.now_secs())
        .await
        .expect("rotate");

    let manifest = json!({
        "release": env("LATCHKEY_FIXTURE_RELEASE"),
        "commit": env("LATCHKEY_FIXTURE_COMMIT"),
        "backend": env("LATCHKEY_FIXTURE_BACKEND"),
        "created_at": created_at,
        "finished_at": app.clock.now_secs(),
        "issuer": app.base,
        "master_key": master_key.encode(),
        "password": PASSWORD,
        "users": {
            "ada@fixture.test": { "id": ada.id, "roles": [] },
            "grace@fixture.test": {
                "id": grace.id,
                "roles": ["admin"],
                "totp_seed_base32": base32(&totp_seed),
                "recovery_codes": recovery_codes,
            },
            "linus@fixture.test": { "roles": [], "passkey": passkey },
        },
        "clients": [web_es256, web_eddsa, web_rs256, machine, opaque, spa],
        "grants": grants,
        "machine_tokens": { "jwt": machine_jwt, "opaque": opaque_token },
        "rotated_to": next_kid,
    });
    std::fs::create_dir_all(&out).expect("output directory");
    let backend_name = env("LATCHKEY_FIXTURE_BACKEND");
    std::fs::write(
        out.join(format!("manifest-{backend_name}.json")),
        serde_json::to_string_pretty(&manifest).expect("json") + "\n",
    )
    .expect("write the manifest");
    if backend == Backend::Sqlite {
        let target = out.join("latchkey.sqlite3");
        let _ = std::fs::remove_file(&target);
        sqlx::query(&format!("VACUUM INTO '{}'", target.display()))
            .execute(&app.state.pool)
            .await
            .expect("VACUUM INTO the fixture");
    }
}
