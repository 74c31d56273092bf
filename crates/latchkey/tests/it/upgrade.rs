//! Upgrades: the current server, started on a database written by an earlier
//! release (`tests/fixtures/<release>/`, written by `release_fixture`),
//! migrates it, and everything that release wrote keeps working — its sealed
//! signing keys sign and its tokens verify, sessions, refresh families,
//! passwords, TOTP, recovery codes and passkeys still sign people in.

use std::path::PathBuf;

use latchkey::clock::ManualClock;
use latchkey::crypto::MasterKey;
use latchkey_verify::jose;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::DecodePrivateKey as _;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::support::app::TestApp;
use crate::support::app::{self, Backend, ClockExt as _};

fn fixture_dir(release: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(release)
}

/// The release's manifest for `backend` (the secrets its database was written with).
pub fn manifest(release: &str, backend: Backend) -> Value {
    let name = match backend {
        Backend::Sqlite => "manifest-sqlite.json",
        Backend::Postgres => "manifest-postgres.json",
    };
    let text = std::fs::read_to_string(fixture_dir(release).join(name)).expect("manifest");
    serde_json::from_str(&text).expect("manifest json")
}

/// Starts the current server on a copy of `release`'s database for `backend`
/// (`None`: PostgreSQL not configured), its clock a minute after the fixture was written.
pub async fn start_on_fixture(release: &str, backend: Backend) -> Option<(TestApp, Value)> {
    let manifest = manifest(release, backend);
    let dir = tempfile::tempdir().expect("tempdir");
    let database_url = match backend {
        Backend::Sqlite => {
            let copy = dir.path().join("latchkey.db");
            std::fs::copy(fixture_dir(release).join("latchkey.sqlite3"), &copy)
                .expect("copy the SQLite fixture");
            format!("sqlite://{}?mode=rwc", copy.display())
        }
        Backend::Postgres => {
            let url = app::fresh_postgres_database(&app::postgres_url()?).await;
            restore_postgres_dump(&url, &fixture_dir(release).join("postgres.sql")).await;
            url
        }
    };
    let mut config = app::test_config(database_url);
    // The operator keeps the issuer and the key configuration across an upgrade.
    config.issuer = manifest["issuer"].as_str().expect("issuer").to_owned();
    config.tokens.additional_algorithms = vec!["EdDSA".into(), "RS256".into()];
    let master_key = MasterKey::parse(manifest["master_key"].as_str().expect("master key"))
        .expect("the fixture's master key");
    let clock = ManualClock::new(manifest["finished_at"].as_i64().expect("finished_at") + 60);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let app = TestApp::start_on(listener, config, master_key, clock, dir, backend).await;
    Some((app, manifest))
}

/// Replays a plain-SQL `pg_dump` (INSERTs, no psql meta-commands) into an empty database.
async fn restore_postgres_dump(url: &str, dump: &std::path::Path) {
    use sqlx::Connection as _;
    let sql = std::fs::read_to_string(dump).expect("the PostgreSQL dump");
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    sqlx::raw_sql(&sql)
        .execute(&mut conn)
        .await
        .expect("restore the PostgreSQL dump");
}

/// Verifies `token` (signature, issuer, expiry) with the JWKS the running server publishes now.
async fn verify_with_published_keys(app: &TestApp, issuer: &str, token: &str) -> Value {
    let jwks: jose::JwkSet = reqwest::get(app.url("/.well-known/jwks.json"))
        .await
        .expect("jwks")
        .json()
        .await
        .expect("a JWK Set");
    let (keys, errors) = jose::KeySet::from_jwks(&jwks);
    assert!(
        errors.is_empty(),
        "every published key is usable: {errors:?}"
    );
    let alg = jose::decode_unverified(token).expect("a JWT").0["alg"].clone();
    jose::verify::<Value>(
        token,
        &keys,
        &jose::Validation::new(issuer),
        app.clock.now_secs(),
    )
    .unwrap_or_else(|e| panic!("a {alg} token no longer verifies: {e}"))
    .claims
}

fn client<'a>(manifest: &'a Value, label: &str) -> &'a Value {
    manifest["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .find(|c| c["label"] == label)
        .unwrap_or_else(|| panic!("client {label} in the manifest"))
}

async fn post_token(app: &TestApp, client: &Value, form: &[(&str, &str)]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(app.url("/oauth2/token"))
        .basic_auth(
            client["id"].as_str().expect("id"),
            client["secret"].as_str(),
        )
        .form(form)
        .send()
        .await
        .expect("token request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json"))
}

async fn introspect(app: &TestApp, caller: &Value, token: &str) -> Value {
    reqwest::Client::new()
        .post(app.url("/oauth2/introspect"))
        .basic_auth(
            caller["id"].as_str().expect("id"),
            caller["secret"].as_str(),
        )
        .form(&[("token", token)])
        .send()
        .await
        .expect("introspect")
        .json()
        .await
        .expect("json")
}

/// Signs a WebAuthn assertion for `options` with the fixture passkey's private key,
/// as its authenticator would (user present and verified).
fn passkey_assertion(passkey: &Value, options: &Value, origin: &str) -> Value {
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .expect("base64 from Chromium")
    };
    let b64url = |bytes: &[u8]| latchkey::crypto::b64url(bytes);
    let key = p256::ecdsa::SigningKey::from_pkcs8_der(&b64(passkey["private_key"]
        .as_str()
        .expect("private key")))
    .expect("a P-256 PKCS#8 key");
    let rp_id = options["rpId"].as_str().expect("rpId");
    let mut authenticator_data = Sha256::digest(rp_id.as_bytes()).to_vec();
    authenticator_data.push(0x05); // UP | UV
    let counter = passkey["sign_count"].as_i64().unwrap_or(0) as u32 + 10;
    authenticator_data.extend_from_slice(&counter.to_be_bytes());
    let client_data = json!({
        "type": "webauthn.get",
        "challenge": options["challenge"],
        "origin": origin,
        "crossOrigin": false,
    })
    .to_string();
    let mut signed = authenticator_data.clone();
    signed.extend_from_slice(&Sha256::digest(client_data.as_bytes()));
    let signature: p256::ecdsa::DerSignature = key.sign(&signed);
    let id = b64url(&b64(passkey["credential_id"]
        .as_str()
        .expect("credential id")));
    json!({
        "id": id,
        "rawId": id,
        "type": "public-key",
        "response": {
            "authenticatorData": b64url(&authenticator_data),
            "clientDataJSON": b64url(client_data.as_bytes()),
            "signature": b64url(signature.as_bytes()),
            "userHandle": b64url(&b64(passkey["user_handle"].as_str().expect("user handle"))),
        },
        "extensions": {}
    })
}

/// Everything release 0.1.0 wrote still works after the upgrade.
async fn everything_written_by_0_1_0_still_works(backend: Backend) {
    let Some((app, manifest)) = start_on_fixture("0.1.0", backend).await else {
        return;
    };
    let issuer = manifest["issuer"].as_str().expect("issuer");
    let machine = client(&manifest, "machine");

    // Old tokens of every signing algorithm verify with the keys published now,
    // and the server still calls them active.
    for grant in manifest["grants"].as_array().expect("grants") {
        let token = grant["access_token"].as_str().expect("access token");
        verify_with_published_keys(&app, issuer, token).await;
        let id_token = grant["id_token"].as_str().expect("id token");
        verify_with_published_keys(&app, issuer, id_token).await;
        assert_eq!(
            introspect(&app, machine, token).await["active"],
            true,
            "{grant}"
        );
    }
    let machine_jwt = manifest["machine_tokens"]["jwt"].as_str().expect("jwt");
    verify_with_published_keys(&app, issuer, machine_jwt).await;
    let opaque = manifest["machine_tokens"]["opaque"]
        .as_str()
        .expect("opaque");
    assert_eq!(introspect(&app, machine, opaque).await["active"], true);

    // The sealed keys still sign: new tokens with each algorithm verify.
    for label in ["web-es256", "web-eddsa", "web-rs256"] {
        let web = client(&manifest, label);
        let grant = manifest["grants"]
            .as_array()
            .expect("grants")
            .iter()
            .find(|g| g["client"] == label && g["user"] == "ada@fixture.test")
            .expect("ada's grant");
        // Refresh families survive: the old refresh token rotates once.
        let (status, answer) = post_token(
            &app,
            web,
            &[
                ("grant_type", "refresh_token"),
                (
                    "refresh_token",
                    grant["refresh_token"].as_str().expect("rt"),
                ),
            ],
        )
        .await;
        assert_eq!(status, 200, "{label}: {answer}");
        let claims =
            verify_with_published_keys(&app, issuer, answer["access_token"].as_str().expect("at"))
                .await;
        assert_eq!(claims["sub"], manifest["users"]["ada@fixture.test"]["id"]);
    }
    let (status, answer) = post_token(
        &app,
        machine,
        &[("grant_type", "client_credentials"), ("scope", "read:data")],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    verify_with_published_keys(&app, issuer, answer["access_token"].as_str().expect("at")).await;
    let jwks: Value = reqwest::get(app.url("/.well-known/jwks.json"))
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    assert!(
        jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .any(|k| k["kid"] == manifest["rotated_to"]),
        "the key pre-published by the old release is still published: {jwks}"
    );

    // Sessions survive: ada's old cookie still opens her account.
    let ada_grant = &manifest["grants"][0];
    let account = reqwest::Client::new()
        .get(app.url("/account"))
        .header("accept", "application/json")
        .header(
            "cookie",
            format!(
                "latchkey_session={}",
                ada_grant["session_cookie"].as_str().expect("cookie")
            ),
        )
        .send()
        .await
        .expect("account");
    assert_eq!(account.status(), 200, "the old session still signs ada in");
    let account: Value = account.json().await.expect("json");
    assert_eq!(account["user"]["email"], "ada@fixture.test");

    // Passwords still sign in (Argon2id hashes of the old release).
    let browser = app::new_client();
    app.sign_in(
        &browser,
        "ada@fixture.test",
        manifest["password"].as_str().expect("pw"),
    )
    .await;

    // TOTP: the sealed seed still produces the codes the server accepts; recovery codes still work.
    let seed = crate::support::app::base32_decode(
        manifest["users"]["grace@fixture.test"]["totp_seed_base32"]
            .as_str()
            .expect("seed"),
    );
    for second_step in ["totp", "recovery"] {
        let browser = app::new_client();
        let csrf = app.login_csrf(&browser).await;
        let r = browser
            .post(app.url("/login"))
            .form(&[
                ("email", "grace@fixture.test"),
                ("password", manifest["password"].as_str().expect("pw")),
                ("csrf_token", csrf.as_str()),
            ])
            .send()
            .await
            .expect("first step");
        assert_eq!(r.status(), 303);
        let html = browser
            .get(app.url("/login/mfa"))
            .send()
            .await
            .expect("mfa page")
            .text()
            .await
            .expect("html");
        let csrf = app::extract_input(&html, "csrf_token").expect("csrf");
        let code = if second_step == "totp" {
            latchkey::mfa::totp::Totp::new(&seed).code_at(app.clock.now_secs() as u64)
        } else {
            manifest["users"]["grace@fixture.test"]["recovery_codes"][0]
                .as_str()
                .expect("code")
                .to_owned()
        };
        let r = browser
            .post(app.url("/login/mfa"))
            .form(&[
                ("csrf_token", csrf.as_str()),
                ("code", code.as_str()),
                ("next", "/account"),
            ])
            .send()
            .await
            .expect("second step");
        assert_eq!(r.status(), 303, "grace signs in with {second_step}");
        assert!(app::session_cookie_of(&r).is_some(), "{second_step}");
    }

    // Passkeys: the credential registered with the old release still signs linus in.
    let passkey = &manifest["users"]["linus@fixture.test"]["passkey"];
    let browser = app::new_client();
    let csrf = app.login_csrf(&browser).await;
    let started: Value = browser
        .post(app.url("/login/passkey/start"))
        .header("x-csrf-token", &csrf)
        .json(&json!({}))
        .send()
        .await
        .expect("start")
        .json()
        .await
        .expect("json");
    let assertion = passkey_assertion(passkey, &started["publicKey"], issuer);
    let finished = browser
        .post(app.url("/login/passkey/finish"))
        .header("x-csrf-token", &csrf)
        .json(&json!({ "ceremony": started["ceremony"], "credential": assertion }))
        .send()
        .await
        .expect("finish");
    let status = finished.status();
    let body: Value = finished.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "the old passkey signs in: {body}");
    let account: Value = browser
        .get(app.url("/account"))
        .header("accept", "application/json")
        .send()
        .await
        .expect("account")
        .json()
        .await
        .expect("json");
    assert_eq!(account["user"]["email"], "linus@fixture.test");
}

mod everything_written_by_release_0_1_0_still_works {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        everything_written_by_0_1_0_still_works(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        everything_written_by_0_1_0_still_works(Backend::Postgres).await;
    }
}
