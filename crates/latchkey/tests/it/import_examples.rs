//! The example import files shipped in `examples/` work as the docs say:
//! `users.csv` (a bcrypt and a Django PBKDF2 user) and
//! `keycloak-users.json` (a Keycloak export with PBKDF2-SHA256 and
//! PBKDF2-SHA512 credentials) import next to the tour's user, every user signs
//! in with the documented password, and the imported hash becomes Argon2id at
//! that first sign-in — on SQLite and PostgreSQL.

use std::path::{Path, PathBuf};

use sqlx::Row as _;

use crate::support::app::{fresh_postgres_database, new_client, postgres_url};
use crate::support::cli::{env, free_port, latchkey, sign_in, Server};

/// The users of the example files and the passwords docs/cli.md gives them.
const EXAMPLE_USERS: &[(&str, &str, &str)] = &[
    ("grace@example.com", "tr0ub4dor&3-but-longer", "$2a$"),
    (
        "margaret@example.com",
        "a django passphrase",
        "pbkdf2_sha256$",
    ),
    (
        "katherine@example.com",
        "a keycloak passphrase",
        "$pbkdf2-sha256$",
    ),
    (
        "dorothy@example.com",
        "another keycloak passphrase",
        "$pbkdf2-sha512$",
    ),
];

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

async fn stored_hash(url: &str, email: &str) -> Option<String> {
    let pool = latchkey::store::connect(&latchkey::config::DatabaseConfig {
        url: url.to_owned(),
        ..latchkey::config::DatabaseConfig::default()
    })
    .await
    .expect("open the database");
    let row = sqlx::query("SELECT password_hash FROM users WHERE email = $1")
        .bind(email)
        .fetch_one(&pool)
        .await
        .expect("the user exists");
    let hash = row
        .try_get::<Option<String>, _>("password_hash")
        .expect("column");
    pool.close().await;
    hash
}

async fn check(dir: &Path, url: &str) {
    let bind = format!("127.0.0.1:{}", free_port());
    let vars = env(&[
        ("LATCHKEY_DATABASE_URL", url),
        ("LATCHKEY_BIND", &bind),
        ("LATCHKEY_ISSUER", &format!("http://{bind}")),
        (
            "LATCHKEY_MASTER_KEY",
            &latchkey::crypto::MasterKey::generate().encode(),
        ),
    ]);
    let server = Server::start(dir, &vars, &["serve"]).await;
    // The tour's user first: the example files must not collide with it.
    latchkey(
        dir,
        &vars,
        &[
            "user",
            "create",
            "--email",
            "ada@example.com",
            "--role",
            "admin",
            "--password-stdin",
        ],
        Some("a long passphrase here\n"),
    )
    .await
    .assert_success("the tour's user create");
    for (file, count) in [("users.csv", 2), ("keycloak-users.json", 3)] {
        let path = example(file);
        let out = latchkey(
            dir,
            &vars,
            &["user", "import", &path.display().to_string(), "--json"],
            None,
        )
        .await;
        out.assert_success(file);
        assert_eq!(out.json()["imported"], count, "{file}");
    }
    let listed = latchkey(dir, &vars, &["user", "list", "--json"], None).await;
    let listed = listed.json();
    let katherine = listed
        .as_array()
        .expect("array")
        .iter()
        .find(|u| u["email"] == "katherine@example.com")
        .expect("the Keycloak user is listed");
    assert_eq!(katherine["display_name"], "Katherine Johnson");
    assert_eq!(katherine["email_verified"], true);
    assert_eq!(stored_hash(url, "mary@example.com").await, None);

    for (email, password, imported_prefix) in EXAMPLE_USERS {
        let before = stored_hash(url, email).await.expect("a hash");
        assert!(before.starts_with(imported_prefix), "{email}: {before}");
        let wrong = sign_in(&new_client(), &server.base, email, "not the password").await;
        assert_eq!(wrong.status(), 401, "{email}: a wrong password fails");
        assert_eq!(stored_hash(url, email).await.as_deref(), Some(&*before));
        let right = sign_in(&new_client(), &server.base, email, password).await;
        assert_eq!(
            right.status(),
            200,
            "{email} signs in with the documented password"
        );
        let after = stored_hash(url, email).await.expect("a hash");
        assert!(
            after.starts_with("$argon2id$"),
            "{email}: rehashed: {after}"
        );
        let again = sign_in(&new_client(), &server.base, email, password).await;
        assert_eq!(again.status(), 200, "{email}: the Argon2id hash verifies");
    }
    drop(server);
}

mod example_files_import_and_their_users_sign_in {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("x.db").display());
        check(dir.path(), &url).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let Some(admin) = postgres_url() else { return };
        let url = fresh_postgres_database(&admin).await;
        let dir = tempfile::tempdir().expect("tempdir");
        check(dir.path(), &url).await;
    }
}
