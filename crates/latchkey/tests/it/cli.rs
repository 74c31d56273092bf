//! The `latchkey` binary as operators and scripts use it.
//!
//! Every test runs the real executable (`CARGO_BIN_EXE_latchkey`) in a fresh
//! temporary directory with a scrubbed environment (nothing inherited: no
//! `LATCHKEY_*`, no `RUST_LOG`), talks HTTP to it when it serves, and stops it
//! with SIGTERM as a process supervisor would. The process harness at the top
//! ([`latchkey`], [`Server`]) is shared with `observability.rs`, which reads
//! the same binary's logs.

use std::path::Path;

use serde_json::{json, Value};

use crate::support::app::{fresh_postgres_database, new_client, postgres_url, Backend};
use crate::support::cli::*;

async fn account_json(client: &reqwest::Client, base: &str) -> reqwest::Response {
    client
        .get(format!("{base}/account"))
        .header("accept", "application/json")
        .send()
        .await
        .expect("GET /account")
}

/// A fresh master key from `latchkey keys generate-master`.
async fn generate_master(dir: &Path) -> String {
    let out = latchkey(dir, &Env::new(), &["keys", "generate-master"], None).await;
    out.assert_success("keys generate-master");
    out.stdout.trim().to_owned()
}

async fn open_sqlite(path: &Path) -> latchkey::store::Pool {
    let config = latchkey::config::DatabaseConfig {
        url: format!("sqlite://{}?mode=rw", path.display()),
        ..Default::default()
    };
    latchkey::store::connect(&config)
        .await
        .expect("open the database")
}

/// The stored password hash of `email` in the dev folder's database.
async fn stored_hash(dir: &Path, email: &str) -> String {
    let pool = open_sqlite(&dir.join(".latchkey/latchkey.db")).await;
    let email = latchkey::identity::Email::parse(email).expect("email");
    let user = latchkey::identity::find_by_email(&pool, &email)
        .await
        .expect("query")
        .expect("user exists");
    pool.close().await;
    user.password_hash.expect("a password hash")
}

/// `user list --json` as (email, id) pairs.
async fn listed_users(dir: &Path) -> Vec<(String, String)> {
    let out = latchkey(dir, &Env::new(), &["user", "list", "--json"], None).await;
    out.assert_success("user list --json");
    out.json()
        .as_array()
        .expect("user list --json prints an array")
        .iter()
        .map(|u| {
            (
                u["email"].as_str().expect("email").to_owned(),
                u["id"].as_str().expect("id").to_owned(),
            )
        })
        .collect()
}

fn emails(users: &[(String, String)]) -> Vec<&str> {
    users.iter().map(|(e, _)| e.as_str()).collect()
}

/// Byte offset of the first line of `log` that satisfies `matches`.
fn line_offset(log: &str, matches: impl Fn(&str) -> bool) -> Option<usize> {
    let mut offset = 0;
    for line in log.split_inclusive('\n') {
        if matches(line) {
            return Some(offset);
        }
        offset += line.len();
    }
    None
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

// ---------------------------------------------------------------------------
// latchkey dev
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_creates_its_folder_prints_a_one_time_admin_password_and_stops_cleanly_on_sigterm() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempdir();
    let server = start_dev(dir.path(), &[]).await;
    server
        .wait_for_line("announcing the listener", |l| {
            l.contains("latchkey listening")
        })
        .await;

    let data = dir.path().join(".latchkey");
    assert!(
        data.join("latchkey.db").is_file(),
        "SQLite database in ./.latchkey/"
    );
    let key_file = data.join("master.key");
    let mode = std::fs::metadata(&key_file)
        .expect("master.key exists")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "master.key is readable by its owner only"
    );
    let key_text = std::fs::read_to_string(&key_file).expect("read master.key");
    assert!(
        key_text
            .lines()
            .any(|l| l == latchkey::config::DEV_KEY_MARKER),
        "the dev key is marked as such:\n{key_text}"
    );
    let key_line = key_text
        .lines()
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .expect("a key line");
    assert_eq!(key_line.len(), 43, "32 bytes in base64url");

    let (email, password) =
        bootstrap_credentials(&server.stderr()).expect("first start prints the admin login");
    assert_eq!(email, "admin@localhost");
    assert!(password.len() >= 16, "a strong one-time password");

    let browser = new_client();
    let response = sign_in(&browser, &server.base, &email, &password).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["user"]["email"], email.as_str());
    assert_eq!(body["user"]["roles"], json!(["admin"]));
    let handle = body["session"]["handle"]
        .as_str()
        .expect("a session")
        .to_owned();
    let account = account_json(&browser, &server.base).await;
    assert_eq!(account.status(), 200);
    let account: Value = account.json().await.expect("json");
    assert_eq!(account["user"]["email"], email.as_str());
    assert!(
        account["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .any(|s| s["handle"] == handle.as_str() && s["current"] == true),
        "/account lists this session: {account}"
    );
    // The printed password is for the first sign-in only: pages ask for a
    // new one (pages_browser::a_handed_out_password_is_replaced_at_the_first_sign_in);
    // scripts reading JSON are told, not redirected.
    assert_eq!(account["user"]["must_change_password"], true, "{account}");

    let stopped = server.stop().await;
    assert_eq!(
        stopped.status.code(),
        Some(0),
        "SIGTERM is a clean stop:\n{}",
        stopped.stderr
    );
    assert!(stopped.stderr.contains("Latchkey stopped."));
    assert!(
        !stopped.stdout.contains(&password),
        "the password goes to stderr, not stdout"
    );

    // Second start on the same folder: no new admin, no password shown, the
    // first password still works.
    let server = start_dev(dir.path(), &[]).await;
    server
        .wait_for_line("announcing the listener", |l| {
            l.contains("latchkey listening")
        })
        .await;
    let log = server.stderr();
    assert!(
        !log.contains(&password) && !log.contains("password:"),
        "the password is shown only once:\n{log}"
    );
    let response = sign_in(&new_client(), &server.base, &email, &password).await;
    assert_eq!(response.status(), 200);
    let stopped = server.stop().await;
    assert_eq!(stopped.status.code(), Some(0), "{}", stopped.stderr);
}

// ---------------------------------------------------------------------------
// latchkey user ...
// ---------------------------------------------------------------------------

/// Production has no bootstrap account: the first administrator is created
/// with `user create --role admin`, signs in, is shown why `/admin` needs a
/// second factor, sets one up and, signed in again with it, administers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_admin_created_with_the_cli_signs_in_and_reaches_admin_after_a_second_factor() {
    use latchkey::mfa::totp::Totp;
    let dir = tempdir();
    let bind = format!("127.0.0.1:{}", free_port());
    let vars = env(&[
        (
            "LATCHKEY_DATABASE_URL",
            &format!("sqlite://{}?mode=rwc", dir.path().join("prod.db").display()),
        ),
        ("LATCHKEY_BIND", &bind),
        ("LATCHKEY_ISSUER", &format!("http://{bind}")),
        ("LATCHKEY_MASTER_KEY", &generate_master(dir.path()).await),
    ]);
    let server = Server::start(dir.path(), &vars, &["serve"]).await;
    assert!(
        bootstrap_credentials(&server.stderr()).is_none(),
        "serve creates no account by itself"
    );
    latchkey(
        dir.path(),
        &vars,
        &[
            "user",
            "create",
            "--email",
            "root@example.com",
            "--role",
            "admin",
            "--password-stdin",
        ],
        Some("the first admin passphrase\n"),
    )
    .await
    .assert_success("user create --role admin");

    let client = new_client();
    let signed_in = sign_in(
        &client,
        &server.base,
        "root@example.com",
        "the first admin passphrase",
    )
    .await;
    assert_eq!(signed_in.status(), 200);
    let body: Value = signed_in.json().await.expect("json");
    assert_eq!(
        body["user"]["must_change_password"], false,
        "an own password"
    );
    let admin_page = |client: reqwest::Client| {
        let url = format!("{}/admin", server.base);
        async move {
            let r = client
                .get(url)
                .header("accept", "text/html")
                .send()
                .await
                .expect("GET /admin");
            (r.status(), r.text().await.expect("html"))
        }
    };
    let (status, html) = admin_page(client.clone()).await;
    assert_eq!(status, 403);
    assert!(html.contains("Two-step sign-in needed"), "{html}");
    assert!(
        html.contains("href=\"/account/mfa?next=%2Fadmin\""),
        "leads to setting up a second factor, then back: {html}"
    );
    let api = client
        .get(format!("{}/admin/api/users", server.base))
        .send()
        .await
        .expect("api");
    assert_eq!(api.status(), 403, "the API answers JSON as before");

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64;
    let (secret, _codes) = crate::support::app::enroll_at(&server.base, now, &client).await;
    let (status, html) = admin_page(client.clone()).await;
    assert_eq!(status, 403, "still the password-only session");
    assert!(html.contains("id=\"sign-in-again\""), "{html}");
    assert!(html.contains("/login?reauth=1&amp;next=%2Fadmin"), "{html}");

    // Signed in again, with the second factor: /admin opens.
    let again = new_client();
    let password = sign_in(
        &again,
        &server.base,
        "root@example.com",
        "the first admin passphrase",
    )
    .await;
    let step: Value = password.json().await.expect("json");
    assert_eq!(step["status"], "mfa_required", "{step}");
    let code = Totp::new(&secret).code_at(now as u64 + 30);
    let second = again
        .post(format!("{}/login/mfa", server.base))
        .json(&json!({ "code": code }))
        .send()
        .await
        .expect("second step");
    assert_eq!(
        second.status(),
        200,
        "{}",
        second.text().await.unwrap_or_default()
    );
    let (status, html) = admin_page(again).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("root@example.com"));
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_create_and_list_work_next_to_a_running_dev_server_with_no_configuration() {
    let dir = tempdir();
    let server = start_dev(dir.path(), &[]).await;
    let none = Env::new();

    let created = latchkey(
        dir.path(),
        &none,
        &[
            "user",
            "create",
            "--email",
            "Ada@Example.com",
            "--name",
            "Ada",
            "--role",
            "admin",
            "--password-stdin",
            "--json",
        ],
        Some("a long passphrase here\n"),
    )
    .await;
    created.assert_success("user create --json");
    let user = created.json();
    assert_eq!(user["email"], "ada@example.com", "emails are normalized");
    assert_eq!(user["roles"], json!(["admin"]));
    let id = user["id"].as_str().expect("id").to_owned();
    assert!(!id.is_empty());
    assert!(
        user.as_object()
            .expect("an object")
            .keys()
            // A boolean flag may name passwords; no field may hold one.
            .all(
                |k| k == "must_change_password" || (!k.contains("password") && !k.contains("hash"))
            ),
        "{user}"
    );
    assert!(!created.stdout.contains("$argon2"), "no hash on stdout");

    // Without --json: nothing on stdout, a message on stderr.
    let quiet = latchkey(
        dir.path(),
        &none,
        &[
            "user",
            "create",
            "--email",
            "bob@example.com",
            "--password-stdin",
        ],
        Some("another fine passphrase"),
    )
    .await;
    quiet.assert_success("user create");
    assert!(quiet.stdout.trim().is_empty(), "{}", quiet.stdout);
    assert!(
        quiet.stderr.contains("created user bob@example.com"),
        "{}",
        quiet.stderr
    );

    let listed = latchkey(dir.path(), &none, &["user", "list", "--json"], None).await;
    listed.assert_success("user list --json");
    let users = listed.json();
    let users = users.as_array().expect("an array");
    let ada = users
        .iter()
        .find(|u| u["email"] == "ada@example.com")
        .expect("ada listed");
    assert_eq!(ada["id"], id.as_str());
    assert_eq!(ada["roles"], json!(["admin"]));
    assert_eq!(ada["disabled"], false);
    assert!(users.iter().any(|u| u["email"] == "bob@example.com"));
    assert!(users.iter().any(|u| u["email"] == "admin@localhost"));
    // No password or hash anywhere (the flag `must_change_password` only names one).
    let without_flag = listed.stdout.replace("\"must_change_password\"", "");
    assert!(
        !without_flag.contains("password") && !without_flag.contains("$argon2"),
        "{}",
        listed.stdout
    );

    // The running server sees the CLI's user at once.
    let browser = new_client();
    let response = sign_in(
        &browser,
        &server.base,
        "ada@example.com",
        "a long passphrase here",
    )
    .await;
    assert_eq!(response.status(), 200);
    let account: Value = account_json(&browser, &server.base)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(account["user"]["id"], id.as_str());

    // The audit log, as one JSON array.
    let audit = latchkey(dir.path(), &none, &["audit", "tail", "--json"], None).await;
    audit.assert_success("audit tail --json");
    let events = audit.json();
    let events = events.as_array().expect("one JSON array");
    let find = |kind: &str, subject: &str| {
        events
            .iter()
            .any(|e| e["kind"] == kind && e["subject"] == subject)
    };
    assert!(find("user_created", &id), "{events:?}");
    assert!(find("login_succeeded", &id), "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "user_created" && e["actor"] == "cli"),
        "{events:?}"
    );
    assert!(!audit.stdout.contains("a long passphrase here"));

    let stopped = server.stop().await;
    assert_eq!(stopped.status.code(), Some(0), "{}", stopped.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_commands_fail_clearly_on_duplicates_weak_passwords_and_unknown_users() {
    let dir = tempdir();
    let server = start_dev(dir.path(), &[]).await;
    let none = Env::new();
    let create = |email: &'static str| {
        [
            "user",
            "create",
            "--email",
            email,
            "--password-stdin",
            "--json",
        ]
    };
    latchkey(
        dir.path(),
        &none,
        &create("ada@example.com"),
        Some("a long passphrase here"),
    )
    .await
    .assert_success("first create");
    let before = listed_users(dir.path()).await;

    let duplicate = latchkey(
        dir.path(),
        &none,
        &create("ADA@example.com"),
        Some("some other passphrase"),
    )
    .await;
    duplicate.assert_failure("duplicate email", &["ada@example.com", "already exists"]);
    assert!(duplicate.stdout.is_empty(), "no JSON on failure");

    let common = latchkey(
        dir.path(),
        &none,
        &create("carol@example.com"),
        Some("password1"),
    )
    .await;
    common.assert_failure("common password", &["password rejected", "common"]);
    let short = latchkey(
        dir.path(),
        &none,
        &create("carol@example.com"),
        Some("short"),
    )
    .await;
    short.assert_failure("short password", &["at least 8 characters"]);
    let own_email = latchkey(
        dir.path(),
        &none,
        &create("carol@example.com"),
        Some("carol@example.com"),
    )
    .await;
    own_email.assert_failure("email as password", &["email address"]);
    let bad_email = latchkey(
        dir.path(),
        &none,
        &create("not-an-email"),
        Some("a long passphrase here"),
    )
    .await;
    bad_email.assert_failure("invalid email", &["--email"]);
    let bad_role = latchkey(
        dir.path(),
        &none,
        &[
            "user",
            "create",
            "--email",
            "dan@example.com",
            "--role",
            "Super User",
        ],
        None,
    )
    .await;
    bad_role.assert_failure("invalid role", &["Super User"]);

    for action in [
        vec!["set-role", "ghost@example.com", "--role", "admin"],
        vec!["disable", "ghost@example.com"],
        vec!["enable", "ghost@example.com"],
        vec!["delete", "ghost@example.com"],
        vec!["logout-all", "ghost@example.com"],
    ] {
        let mut args = vec!["user"];
        args.extend(&action);
        let out = latchkey(dir.path(), &none, &args, None).await;
        out.assert_failure(
            &format!("user {}", action.join(" ")),
            &["ghost@example.com", "no user matches"],
        );
    }

    assert_eq!(
        listed_users(dir.path()).await,
        before,
        "failed commands changed nothing"
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_set_role_disable_enable_and_delete_take_effect_on_the_running_server() {
    let dir = tempdir();
    let server = start_dev(dir.path(), &[]).await;
    let none = Env::new();
    let password = "a long passphrase here";
    latchkey(
        dir.path(),
        &none,
        &[
            "user",
            "create",
            "--email",
            "ada@example.com",
            "--password-stdin",
        ],
        Some(password),
    )
    .await
    .assert_success("create");

    let roles = latchkey(
        dir.path(),
        &none,
        &[
            "user",
            "set-role",
            "ada@example.com",
            "--role",
            "billing:read",
            "--role",
            "admin",
            "--json",
        ],
        None,
    )
    .await;
    roles.assert_success("set-role");
    assert_eq!(roles.json()["roles"], json!(["admin", "billing:read"]));

    let browser = new_client();
    assert_eq!(
        sign_in(&browser, &server.base, "ada@example.com", password)
            .await
            .status(),
        200
    );
    let account: Value = account_json(&browser, &server.base)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(account["user"]["roles"], json!(["admin", "billing:read"]));

    let disabled = latchkey(
        dir.path(),
        &none,
        &["user", "disable", "ada@example.com"],
        None,
    )
    .await;
    disabled.assert_success("disable");
    assert!(
        disabled.stderr.contains("ended 1 session(s)"),
        "{}",
        disabled.stderr
    );
    assert_eq!(
        account_json(&browser, &server.base).await.status(),
        401,
        "disabling ends the session at once"
    );
    assert_eq!(
        sign_in(&new_client(), &server.base, "ada@example.com", password)
            .await
            .status(),
        401
    );

    latchkey(
        dir.path(),
        &none,
        &["user", "enable", "ada@example.com"],
        None,
    )
    .await
    .assert_success("enable");
    assert_eq!(
        sign_in(&new_client(), &server.base, "ada@example.com", password)
            .await
            .status(),
        200
    );

    latchkey(
        dir.path(),
        &none,
        &["user", "delete", "ada@example.com"],
        None,
    )
    .await
    .assert_success("delete");
    assert!(!emails(&listed_users(dir.path()).await).contains(&"ada@example.com"));
    assert_eq!(
        sign_in(&new_client(), &server.base, "ada@example.com", password)
            .await
            .status(),
        401
    );

    let audit = latchkey(dir.path(), &none, &["audit", "tail", "--json"], None).await;
    audit.assert_success("audit tail");
    let kinds: Vec<String> = audit
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["kind"].as_str().expect("kind").to_owned())
        .collect();
    for kind in [
        "roles_changed",
        "user_disabled",
        "user_enabled",
        "user_deleted",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
    drop(server);
}

// ---------------------------------------------------------------------------
// latchkey user import
// ---------------------------------------------------------------------------

/// The OpenBSD / John-the-Ripper bcrypt test vector: password "U*U".
const BCRYPT_VECTOR: &str = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_bcrypt_users_sign_in_and_their_hash_becomes_argon2id() {
    let dir = tempdir();
    let server = start_dev(dir.path(), &[]).await;
    let none = Env::new();

    let csv_hash = bcrypt::hash("csv user passphrase", 4).expect("bcrypt");
    let json_hash = bcrypt::hash_with_result("json user passphrase", 4)
        .expect("bcrypt")
        .format_for_version(bcrypt::Version::TwoY);
    std::fs::write(
        dir.path().join("users.csv"),
        format!(
            "email,name,password_hash,roles,email_verified\n\
             Csv@Example.com,\"Csv, the User\",{csv_hash},admin;billing:read,true\n"
        ),
    )
    .expect("write csv");
    std::fs::write(
        dir.path().join("users.json"),
        json!([
            { "email": "json@example.com", "name": "Jason", "password_hash": json_hash, "roles": ["auditor"] },
            // Imports skip the password policy: "U*U" is what the old system accepted.
            { "email": "vector@example.com", "password_hash": BCRYPT_VECTOR },
        ])
        .to_string(),
    )
    .expect("write json");

    let csv = latchkey(dir.path(), &none, &["user", "import", "users.csv"], None).await;
    csv.assert_success("import csv");
    assert!(csv.stderr.contains("imported 1 user(s)"), "{}", csv.stderr);
    let imported = latchkey(
        dir.path(),
        &none,
        &["user", "import", "users.json", "--json"],
        None,
    )
    .await;
    imported.assert_success("import json");
    let report = imported.json();
    assert_eq!(report["imported"], 2);
    assert_eq!(report["ids"].as_array().expect("ids").len(), 2);

    let listed = latchkey(dir.path(), &none, &["user", "list", "--json"], None).await;
    let listed = listed.json();
    let csv_user = listed
        .as_array()
        .expect("array")
        .iter()
        .find(|u| u["email"] == "csv@example.com")
        .expect("csv user listed")
        .clone();
    assert_eq!(csv_user["display_name"], "Csv, the User");
    assert_eq!(csv_user["roles"], json!(["admin", "billing:read"]));
    assert_eq!(csv_user["email_verified"], true);

    for (email, password, stored) in [
        ("csv@example.com", "csv user passphrase", csv_hash.as_str()),
        (
            "json@example.com",
            "json user passphrase",
            json_hash.as_str(),
        ),
        ("vector@example.com", "U*U", BCRYPT_VECTOR),
    ] {
        assert_eq!(
            stored_hash(dir.path(), email).await,
            stored,
            "stored as imported"
        );
        assert_eq!(
            sign_in(&new_client(), &server.base, email, "wrong password")
                .await
                .status(),
            401,
            "{email}: a wrong password fails"
        );
        assert_eq!(
            stored_hash(dir.path(), email).await,
            stored,
            "a failed sign-in does not touch the hash"
        );
        let response = sign_in(&new_client(), &server.base, email, password).await;
        assert_eq!(
            response.status(),
            200,
            "{email} signs in with the bcrypt password"
        );
        let upgraded = stored_hash(dir.path(), email).await;
        assert!(
            upgraded.starts_with("$argon2id$"),
            "{email}: rehashed at sign-in: {upgraded}"
        );
        assert_eq!(
            sign_in(&new_client(), &server.base, email, password)
                .await
                .status(),
            200,
            "{email}: the new Argon2id hash verifies"
        );
    }

    let audit = latchkey(dir.path(), &none, &["audit", "tail", "--json"], None).await;
    let events = audit.json();
    let count = |kind: &str| {
        events
            .as_array()
            .expect("array")
            .iter()
            .filter(|e| e["kind"] == kind)
            .count()
    };
    assert_eq!(count("user_imported"), 3);
    assert_eq!(count("password_rehashed"), 3);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_file_with_one_bad_record_imports_nothing() {
    let dir = tempdir();
    // The dev folder is all the configuration the CLI needs; no server has to run.
    let stopped = start_dev(dir.path(), &[]).await.stop().await;
    assert_eq!(stopped.status.code(), Some(0), "{}", stopped.stderr);
    let none = Env::new();
    let before = listed_users(dir.path()).await;
    let good = bcrypt::hash("a fine passphrase", 4).expect("bcrypt");

    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "bad.json",
            json!([
                { "email": "first@example.com", "password_hash": good },
                { "email": "not-an-email" },
            ])
            .to_string(),
            &["record 2", "email"],
        ),
        (
            "bad-hash.csv",
            format!(
                "email,password_hash\nfirst@example.com,{good}\nsecond@example.com,md5:5f4dcc3b5aa765d61d8327deb882cf99\n"
            ),
            &["record 2", "password_hash"],
        ),
        (
            "ragged.csv",
            "email,name\nfirst@example.com,First\nsecond@example.com\n".to_owned(),
            &["record 2"],
        ),
        (
            "twice.json",
            json!([{ "email": "first@example.com" }, { "email": "FIRST@example.com" }])
                .to_string(),
            &["record 2", "twice"],
        ),
        // Valid on its own, but record 2 collides with an existing account:
        // the insert of record 1 is rolled back with it (one transaction).
        (
            "collides.json",
            json!([{ "email": "first@example.com" }, { "email": "admin@localhost" }])
                .to_string(),
            &["record 2", "admin@localhost", "already exists"],
        ),
        (
            "unknown-field.json",
            json!([{ "email": "first@example.com", "pasword": "x" }]).to_string(),
            &["pasword"],
        ),
    ];
    for (file, text, needles) in cases {
        std::fs::write(dir.path().join(file), text).expect("write");
        let out = latchkey(dir.path(), &none, &["user", "import", file, "--json"], None).await;
        out.assert_failure(file, needles);
        assert!(out.stdout.is_empty(), "{file}: no JSON report on failure");
        assert_eq!(
            listed_users(dir.path()).await,
            before,
            "{file}: nothing was imported"
        );
    }

    let audit = latchkey(dir.path(), &none, &["audit", "tail", "--json"], None).await;
    assert!(
        !audit.stdout.contains("user_imported"),
        "no import was recorded"
    );
}

// ---------------------------------------------------------------------------
// latchkey serve, keys, doctor, migrate
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_dangerous_settings_and_names_the_option() {
    let dir = tempdir();
    let bind = format!("127.0.0.1:{}", free_port());
    let issuer = format!("http://{bind}");
    let database = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("serve.db").display()
    );
    let key = generate_master(dir.path()).await;
    let base = env(&[
        ("LATCHKEY_DATABASE_URL", &database),
        ("LATCHKEY_BIND", &bind),
        ("LATCHKEY_ISSUER", &issuer),
        ("LATCHKEY_MASTER_KEY", &key),
    ]);

    // Control: this configuration starts, so each refusal below is caused by
    // the one setting it changes.
    let control = Server::start(dir.path(), &base, &["serve"]).await;
    let stopped = control.stop().await;
    assert_eq!(stopped.status.code(), Some(0), "{}", stopped.stderr);

    let cases: Vec<(&str, Env, &[&str])> = vec![
        (
            "no master key",
            without(&base, "LATCHKEY_MASTER_KEY"),
            &["`master_key`", "latchkey keys generate-master"],
        ),
        (
            "plain http issuer off loopback",
            with(&base, "LATCHKEY_ISSUER", "http://id.example.com"),
            &["`issuer`", "http://id.example.com", "https"],
        ),
        (
            "CORS * with credentials",
            with(
                &with(&base, "LATCHKEY_HTTP__CORS_ALLOWED_ORIGINS", "[\"*\"]"),
                "LATCHKEY_HTTP__CORS_ALLOW_CREDENTIALS",
                "true",
            ),
            &["http.cors_allowed_origins", "cors_allow_credentials"],
        ),
        (
            "unknown LATCHKEY_ variable",
            with(&base, "LATCHKEY_SESION__IDLE_TIMEOUT_SECS", "600"),
            &["LATCHKEY_SESION__IDLE_TIMEOUT_SECS", "no such option"],
        ),
        (
            "development key off loopback",
            {
                let key_file = dir.path().join("dev.key");
                std::fs::write(
                    &key_file,
                    format!("{}\n{key}\n", latchkey::config::DEV_KEY_MARKER),
                )
                .expect("write key");
                with(
                    &with(
                        &without(&base, "LATCHKEY_MASTER_KEY"),
                        "LATCHKEY_MASTER_KEY_FILE",
                        &key_file.display().to_string(),
                    ),
                    "LATCHKEY_ISSUER",
                    "https://id.example.com",
                )
            },
            &["`master_key_file`", "development key"],
        ),
    ];
    for (what, vars, needles) in cases {
        let out = latchkey(dir.path(), &vars, &["serve"], None).await;
        out.assert_failure(what, needles);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_generate_master_prints_32_random_bytes_in_base64url() {
    use base64::Engine as _;
    let dir = tempdir();
    let first = generate_master(dir.path()).await;
    let second = generate_master(dir.path()).await;
    for key in [&first, &second] {
        assert_eq!(key.len(), 43, "{key}");
        assert!(
            key.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "base64url alphabet, no padding: {key}"
        );
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(key)
            .expect("decodes");
        assert_eq!(bytes.len(), 32);
    }
    assert_ne!(first, second, "a fresh key each time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_json_exits_1_on_a_plain_http_issuer_and_0_on_a_good_https_config() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempdir();
    let key_file = dir.path().join("master.key");
    std::fs::write(&key_file, generate_master(dir.path()).await + "\n").expect("write key");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let config = |issuer: &str| {
        let mut table = toml::Table::new();
        table.insert("issuer".into(), issuer.into());
        table.insert(
            "master_key_file".into(),
            key_file.display().to_string().into(),
        );
        let mut database = toml::Table::new();
        database.insert(
            "url".into(),
            format!("sqlite://{}?mode=rwc", dir.path().join("x.db").display()).into(),
        );
        table.insert("database".into(), database.into());
        table.to_string()
    };
    std::fs::write(
        dir.path().join("good.toml"),
        config("https://id.example.com"),
    )
    .expect("write");
    std::fs::write(dir.path().join("bad.toml"), config("http://id.example.com")).expect("write");

    let good = latchkey(
        dir.path(),
        &Env::new(),
        &["doctor", "--config", "good.toml", "--json"],
        None,
    )
    .await;
    good.assert_success("doctor on a good config");
    let report = good.json();
    assert_eq!(report["ok"], true, "{report}");
    assert!(
        report["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .all(|f| f["severity"] != "high"),
        "{report}"
    );

    let bad = latchkey(
        dir.path(),
        &Env::new(),
        &["doctor", "--config", "bad.toml", "--json"],
        None,
    )
    .await;
    assert_eq!(bad.status.code(), Some(1), "{}", bad.stderr);
    let report = bad.json();
    assert_eq!(report["ok"], false);
    let high: Vec<&Value> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["severity"] == "high")
        .collect();
    assert!(
        high.iter()
            .any(|f| f["id"] == "issuer-not-https" && f["option"] == "issuer"),
        "{report}"
    );
    assert!(
        high.iter().all(|f| f["option"] == "issuer"),
        "the issuer is the only high finding: {report}"
    );
    for f in &high {
        assert!(
            f["why"].as_str().is_some_and(|s| !s.is_empty())
                && f["fix"].as_str().is_some_and(|s| !s.is_empty()),
            "a finding says why and how to fix it: {f}"
        );
    }
}

mod migrate_brings_a_fresh_database_up_to_date {
    use super::*;
    use sqlx::Row as _;

    async fn check(dir: &Path, url: String) {
        let vars = env(&[("LATCHKEY_DATABASE_URL", &url)]);
        for run in ["first", "second (idempotent)"] {
            let out = latchkey(dir, &vars, &["migrate"], None).await;
            out.assert_success(&format!("{run} migrate"));
            assert!(out.stderr.contains("is up to date"), "{}", out.stderr);
        }
        let pool = latchkey::store::connect(&latchkey::config::DatabaseConfig {
            url,
            ..Default::default()
        })
        .await
        .expect("connect");
        let applied: Vec<i64> = sqlx::query(
            "SELECT version FROM _sqlx_migrations WHERE success = TRUE ORDER BY version",
        )
        .fetch_all(&pool)
        .await
        .expect("migrations table")
        .iter()
        .map(|r| r.try_get("version").expect("version"))
        .collect();
        let known: Vec<i64> = latchkey::store::known_migrations()
            .map(|(v, _)| v)
            .collect();
        assert!(!known.is_empty());
        assert_eq!(applied, known, "every migration applied once");
        let users: i64 = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&pool)
            .await
            .expect("users table")
            .try_get("n")
            .expect("n");
        assert_eq!(users, 0);
        pool.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let dir = tempdir();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("fresh.db").display()
        );
        check(dir.path(), url).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let Some(admin) = postgres_url() else { return };
        let dir = tempdir();
        check(dir.path(), fresh_postgres_database(&admin).await).await;
    }
}

// ---------------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_sign_in_finish_then_exits_0() {
    let dir = tempdir();
    let bind = format!("127.0.0.1:{}", free_port());
    let issuer = format!("http://{bind}");
    let database = format!("sqlite://{}?mode=rwc", dir.path().join("slow.db").display());
    let key = generate_master(dir.path()).await;
    // Deliberately heavy Argon2id, so a sign-in takes a noticeable while.
    let vars = env(&[
        ("LATCHKEY_DATABASE_URL", &database),
        ("LATCHKEY_BIND", &bind),
        ("LATCHKEY_ISSUER", &issuer),
        ("LATCHKEY_MASTER_KEY", &key),
        ("LATCHKEY_PASSWORD__ARGON2_MEMORY_KIB", "262144"),
        ("LATCHKEY_PASSWORD__ARGON2_ITERATIONS", "8"),
    ]);
    let password = "a slow but sure passphrase";
    // A fresh database: only `migrate` (or `serve`) creates the schema.
    latchkey(dir.path(), &vars, &["migrate"], None)
        .await
        .assert_success("migrate");
    let created = latchkey(
        dir.path(),
        &vars,
        &[
            "user",
            "create",
            "--email",
            "slow@example.com",
            "--password-stdin",
            "--json",
        ],
        Some(password),
    )
    .await;
    created.assert_success("user create");
    let user_id = created.json()["id"].as_str().expect("id").to_owned();

    // tower_http's request trace tells us when the server has the request.
    let server = Server::start(
        dir.path(),
        &with(&vars, "RUST_LOG", "info,tower_http=debug"),
        &["serve"],
    )
    .await;
    let base = server.base.clone();
    let in_flight = tokio::spawn(async move {
        let response = sign_in(&new_client(), &base, "slow@example.com", password).await;
        let status = response.status();
        let cookie = crate::support::app::session_cookie_of(&response);
        let body: Value = response.json().await.expect("json body");
        (status, cookie, body)
    });
    server
        .wait_for_line("for the sign-in request", |l| {
            l.contains("started processing request") && l.contains("path=/login")
        })
        .await;
    server.sigterm();

    let (status, cookie, body) = tokio::time::timeout(EXIT_TIMEOUT, in_flight)
        .await
        .expect("the sign-in is answered")
        .expect("sign-in task");
    assert_eq!(status, 200, "{body}");
    assert!(cookie.is_some(), "a session cookie");
    assert_eq!(body["user"]["id"], user_id.as_str());
    assert!(body["session"]["handle"].is_string(), "{body}");

    let base = server.base.clone();
    let stopped = server.wait_for_exit().await;
    assert_eq!(stopped.status.code(), Some(0), "{}", stopped.stderr);
    // The request really was in flight when the signal arrived.
    let log = &stopped.stderr;
    let shutdown_at = log
        .find("shutdown requested")
        .expect("the server logged the signal");
    let finished_at = line_offset(log, |l| {
        l.contains("finished processing request") && l.contains("path=/login")
    })
    .expect("the sign-in finished");
    assert!(
        shutdown_at < finished_at,
        "SIGTERM arrived before the sign-in finished:\n{log}"
    );
    assert!(
        reqwest::get(format!("{base}/healthz")).await.is_err(),
        "nothing listens any more"
    );

    let audit = latchkey(dir.path(), &vars, &["audit", "tail", "--json"], None).await;
    audit.assert_success("audit tail --json");
    let events = audit.json();
    let events = events.as_array().expect("one JSON array");
    for kind in ["user_created", "login_succeeded"] {
        assert!(
            events
                .iter()
                .any(|e| e["kind"] == kind && e["subject"] == user_id.as_str()),
            "{kind} in {events:?}"
        );
    }
    assert!(!audit.stdout.contains(password));
}

/// `keys rotate` and `keys retire` say when running instances learn of the
/// change (their next key reload), not that it happened everywhere at once.
#[tokio::test]
async fn keys_rotate_and_retire_say_when_running_instances_follow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(url) = crate::support::app::cli_database(Backend::Sqlite, dir.path()).await else {
        return;
    };
    let master = latchkey(dir.path(), &Env::new(), &["keys", "generate-master"], None).await;
    master.assert_success("keys generate-master");
    let env = env(&[
        ("LATCHKEY_DATABASE_URL", &url),
        ("LATCHKEY_MASTER_KEY", master.stdout.trim()),
    ]);
    let reload = format!("within {} s", latchkey::keys::RELOAD_INTERVAL_SECS);
    let rotated = latchkey(dir.path(), &env, &["keys", "rotate", "--json"], None).await;
    rotated.assert_success("keys rotate --json");
    let kid = rotated.json()["kid"].as_str().expect("kid").to_owned();
    let rotated = latchkey(dir.path(), &env, &["keys", "rotate"], None).await;
    rotated.assert_success("keys rotate");
    assert!(rotated.stderr.contains(&reload), "{}", rotated.stderr);
    assert!(
        !rotated.stderr.contains("published now"),
        "{}",
        rotated.stderr
    );
    let retired = latchkey(dir.path(), &env, &["keys", "retire", &kid], None).await;
    retired.assert_success("keys retire");
    assert!(retired.stderr.contains(&reload), "{}", retired.stderr);
    assert!(retired.stderr.contains(&kid), "{}", retired.stderr);
}
