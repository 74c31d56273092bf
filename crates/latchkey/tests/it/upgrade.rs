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
use crate::support::cli::{self, Env};

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

/// A copy of `release`'s database for `backend` in `dir`, as a database URL
/// (`None`: PostgreSQL not configured).
async fn fixture_database(
    release: &str,
    backend: Backend,
    dir: &std::path::Path,
) -> Option<String> {
    Some(match backend {
        Backend::Sqlite => {
            let copy = dir.join("latchkey.db");
            std::fs::copy(fixture_dir(release).join("latchkey.sqlite3"), &copy)
                .expect("copy the SQLite fixture");
            format!("sqlite://{}?mode=rwc", copy.display())
        }
        Backend::Postgres => {
            let url = app::fresh_postgres_database(&app::postgres_url()?).await;
            restore_postgres_dump(&url, &fixture_dir(release).join("postgres.sql")).await;
            url
        }
    })
}

/// Starts the current server on a copy of `release`'s database for `backend`
/// (`None`: PostgreSQL not configured), its clock a minute after the fixture was written.
pub async fn start_on_fixture(release: &str, backend: Backend) -> Option<(TestApp, Value)> {
    let manifest = manifest(release, backend);
    let dir = tempfile::tempdir().expect("tempdir");
    let database_url = fixture_database(release, backend, dir.path()).await?;
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

// ---------------------------------------------------------------------------
// Only `latchkey migrate` changes the schema
// ---------------------------------------------------------------------------

async fn open(url: &str) -> latchkey::store::Pool {
    latchkey::store::connect(&latchkey::config::DatabaseConfig {
        url: url.to_owned(),
        ..Default::default()
    })
    .await
    .expect("open the database")
}

/// Every table and column, and every applied migration: what "the schema did
/// not change" compares.
async fn schema_fingerprint(url: &str, backend: Backend) -> Vec<String> {
    use sqlx::Row as _;
    let pool = open(url).await;
    let columns = match backend {
        Backend::Sqlite => {
            "SELECT m.name || '.' || p.name AS c FROM sqlite_master m, pragma_table_info(m.name) p \
             WHERE m.type = 'table' ORDER BY 1"
        }
        Backend::Postgres => {
            "SELECT table_name || '.' || column_name AS c FROM information_schema.columns \
             WHERE table_schema = 'public' ORDER BY 1"
        }
    };
    let mut fingerprint: Vec<String> = sqlx::query(columns)
        .fetch_all(&pool)
        .await
        .expect("list columns")
        .iter()
        .map(|r| r.try_get::<String, _>("c").expect("column"))
        .collect();
    let status = latchkey::store::schema_status(&pool).await.expect("status");
    fingerprint.extend(status.applied.iter().map(|v| format!("migration {v:04}")));
    pool.close().await;
    assert!(!fingerprint.is_empty());
    fingerprint
}

/// Environment for the CLI on a fixture database.
fn fixture_env(manifest: &Value, url: &str) -> Env {
    cli::env(&[
        ("LATCHKEY_DATABASE_URL", url),
        (
            "LATCHKEY_MASTER_KEY",
            manifest["master_key"].as_str().expect("master key"),
        ),
        (
            "LATCHKEY_ISSUER",
            manifest["issuer"].as_str().expect("issuer"),
        ),
        (
            "LATCHKEY_TOKENS__ADDITIONAL_ALGORITHMS",
            "[\"EdDSA\", \"RS256\"]",
        ),
    ])
}

/// The subcommands that open the database without being `migrate`, `serve` or `dev`.
const DATABASE_COMMANDS: &[&[&str]] = &[
    &["user", "list"],
    &["user", "create", "--email", "new@fixture.test"],
    &["user", "disable", "ada@fixture.test"],
    &["audit", "tail"],
    &["keys", "list"],
    &["keys", "rotate"],
    &["client", "list"],
];

/// A release-0.1.0 database has migrations pending: every subcommand other
/// than `migrate` refuses it naming the command to run and changes nothing;
/// `migrate --dry-run` lists them and changes nothing; `migrate` applies them,
/// after which the same subcommands work.
async fn only_migrate_applies_the_pending_migrations_of_a_0_1_0_database(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(url) = fixture_database("0.1.0", backend, dir.path()).await else {
        return;
    };
    let manifest = manifest("0.1.0", backend);
    let vars = fixture_env(&manifest, &url);
    let before = schema_fingerprint(&url, backend).await;
    let pool = open(&url).await;
    let status = latchkey::store::schema_status(&pool).await.expect("status");
    pool.close().await;
    assert!(
        !status.pending.is_empty() && status.unknown.is_empty(),
        "release 0.1.0 predates some migrations: {status:?}"
    );
    let pending = format!(
        "{} database migration(s) pending, from {:04}",
        status.pending.len(),
        status.pending[0].0
    );
    for args in DATABASE_COMMANDS {
        let command = format!("`latchkey {}`", args[..2].join(" "));
        let out = cli::latchkey(dir.path(), &vars, args, Some("")).await;
        out.assert_failure(
            &args.join(" "),
            &[&pending, &command, "run `latchkey migrate`"],
        );
        assert_eq!(
            schema_fingerprint(&url, backend).await,
            before,
            "{}: the schema is unchanged",
            args.join(" ")
        );
    }

    let dry = cli::latchkey(dir.path(), &vars, &["migrate", "--dry-run"], None).await;
    dry.assert_success("migrate --dry-run");
    let listed: Vec<&str> = dry.stdout.lines().collect();
    let expected: Vec<String> = status
        .pending
        .iter()
        .map(|(v, d)| format!("would apply {v:04} {d}"))
        .collect();
    assert_eq!(listed, expected, "stderr: {}", dry.stderr);
    assert!(dry.stderr.contains("nothing was changed"), "{}", dry.stderr);
    assert_eq!(
        schema_fingerprint(&url, backend).await,
        before,
        "migrate --dry-run changes nothing"
    );

    let migrated = cli::latchkey(dir.path(), &vars, &["migrate"], None).await;
    migrated.assert_success("migrate");
    for (v, d) in &status.pending {
        assert!(
            migrated.stderr.contains(&format!("applied {v:04} {d}")),
            "{}",
            migrated.stderr
        );
    }
    let pool = open(&url).await;
    let after = latchkey::store::schema_status(&pool).await.expect("status");
    pool.close().await;
    assert!(after.pending.is_empty(), "{after:?}");
    let dry = cli::latchkey(dir.path(), &vars, &["migrate", "--dry-run"], None).await;
    dry.assert_success("migrate --dry-run when up to date");
    assert_eq!(dry.stdout, "", "nothing left to apply");

    let users = cli::latchkey(dir.path(), &vars, &["user", "list", "--json"], None).await;
    users.assert_success("user list after migrate");
    assert!(
        users
            .json()
            .as_array()
            .expect("array")
            .iter()
            .any(|u| u["email"] == "ada@fixture.test"),
        "{}",
        users.stdout
    );
    cli::latchkey(dir.path(), &vars, &["keys", "list"], None)
        .await
        .assert_success("keys list after migrate");
    if backend == Backend::Postgres {
        app::drop_database(&url).await;
    }
}

mod only_migrate_applies_the_pending_migrations_of_a_release_0_1_0_database {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        only_migrate_applies_the_pending_migrations_of_a_0_1_0_database(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        only_migrate_applies_the_pending_migrations_of_a_0_1_0_database(Backend::Postgres).await;
    }
}

/// A database a newer release migrated (an applied migration this binary
/// does not know) is refused by every command — `serve` and `migrate`
/// included — with both versions named, and nothing is changed.
async fn a_database_newer_than_the_binary_is_refused(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(url) = app::cli_database(backend, dir.path()).await else {
        return;
    };
    let binary = latchkey::store::SchemaStatus::binary_version();
    let newer = binary + 1;
    let pool = open(&url).await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ($1, 'from a newer release', TRUE, $2, 0)",
    )
    .bind(newer)
    .bind(vec![0u8; 48])
    .execute(&pool)
    .await
    .expect("record a migration from the future");
    pool.close().await;
    let before = schema_fingerprint(&url, backend).await;
    let bind = format!("127.0.0.1:{}", cli::free_port());
    let vars = cli::env(&[
        ("LATCHKEY_DATABASE_URL", &url),
        ("LATCHKEY_MASTER_KEY", &MasterKey::generate().encode()),
        ("LATCHKEY_BIND", &bind),
        ("LATCHKEY_ISSUER", &format!("http://{bind}")),
    ]);
    let no_auto_migrate = cli::with(&vars, "LATCHKEY_DATABASE__MIGRATE_ON_START", "false");
    let mut runs: Vec<(&[&str], &Env)> = vec![
        (&["serve"], &vars),
        (&["serve"], &no_auto_migrate),
        (&["migrate"], &vars),
        (&["migrate", "--dry-run"], &vars),
    ];
    runs.extend(DATABASE_COMMANDS.iter().map(|args| (*args, &vars)));
    for (args, env) in runs {
        let out = cli::latchkey(dir.path(), env, args, Some("")).await;
        out.assert_failure(
            &args.join(" "),
            &[
                "the database is newer than this binary",
                &format!("migration {newer:04} applied"),
                &format!("up to {binary:04}"),
                env!("CARGO_PKG_VERSION"),
            ],
        );
        assert_eq!(
            schema_fingerprint(&url, backend).await,
            before,
            "{}: nothing changed",
            args.join(" ")
        );
    }
    if backend == Backend::Postgres {
        app::drop_database(&url).await;
    }
}

mod a_database_newer_than_the_binary_is_refused_by_every_command_naming_both_versions {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        a_database_newer_than_the_binary_is_refused(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        a_database_newer_than_the_binary_is_refused(Backend::Postgres).await;
    }
}
