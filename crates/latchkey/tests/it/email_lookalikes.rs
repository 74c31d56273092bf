//! Look-alike email addresses (issue #12, item 8). Every way in — the CLI,
//! import, sign-in and the one `Email::parse` that sign-up and federation
//! will use — normalises an address (NFKC, then full case folding), so
//! `ｇina@example.com` (fullwidth) *is* `gina@example.com`; an address that
//! mixes scripts or copies an ASCII name in another script
//! (`gina@exаmple.com` with a Cyrillic `а`) is refused with a clear error.
//! Rows stored before the rule are rewritten by migration 0012's data step.

use std::borrow::Cow;
use std::path::Path;

use latchkey::identity::{self, Email, IdentityError, NewUser};
use serde_json::json;
use sqlx::Row as _;

use crate::backend_test;
use crate::support::app::*;
use crate::support::cli::{env, latchkey};
use crate::support::oauth::PASSWORD;

/// A new user through the identity domain, as every way in creates one.
async fn create(app: &TestApp, email: Email) -> Result<identity::User, IdentityError> {
    identity::create_user(
        &app.state.pool,
        NewUser {
            email,
            display_name: String::new(),
            roles: Vec::new(),
            password_hash: None,
            email_verified: false,
            must_change_password: false,
        },
        app.clock.now_secs(),
    )
    .await
}

/// Signs in through the real form in a fresh browser; the status (303 = signed in).
async fn sign_in_status(app: &TestApp, typed: &str, password: &str) -> u16 {
    app.login_with(&new_client(), typed, password)
        .await
        .status()
        .as_u16()
}

backend_test!(
    lookalike_addresses_are_normalised_or_refused_on_every_way_in,
    |app: TestApp| async move {
        let gina = app.create_user("gina@example.com", PASSWORD, &[]).await;

        // Compatibility and case variants are the same address.
        for variant in [
            "ｇina@example.com",
            "GINA@EXAMPLE.COM",
            "Ｇｉｎａ@ｅｘａｍｐｌｅ.ｃｏｍ",
            "gina@EXAMPLE.com",
        ] {
            let email = Email::parse(variant).unwrap_or_else(|e| panic!("{variant}: {e}"));
            assert_eq!(email.as_str(), "gina@example.com", "{variant}");
            assert!(
                matches!(
                    create(&app, email).await,
                    Err(IdentityError::DuplicateEmail(_))
                ),
                "{variant} must not create a second account"
            );
            assert_eq!(
                sign_in_status(&app, variant, PASSWORD).await,
                303,
                "{variant} signs gina in"
            );
        }
        assert_eq!(
            identity::find(&app.state.pool, "ＧＩＮＡ@example.com")
                .await
                .expect("the CLI finds gina by a variant")
                .id,
            gina.id
        );
        // Full case folding, not just lower-casing; compatibility characters.
        assert_eq!(
            Email::parse("Straße@Example.DE").expect("valid").as_str(),
            "strasse@example.de"
        );
        assert_eq!(
            Email::parse("\u{212A}im@example.com")
                .expect("Kelvin sign")
                .as_str(),
            "kim@example.com"
        );

        // Mixed scripts, whole-script look-alikes and invisible characters
        // are refused with a message that says why.
        for (lookalike, why) in [
            ("gina@exаmple.com", "Cyrillic а in a Latin domain"),
            ("gіna@example.com", "Ukrainian і in a Latin name"),
            ("аррӏе@example.com", "an all-Cyrillic copy of 'apple'"),
            (
                "gina@xn--exmple-4nf.com",
                "the same look-alike domain in punycode",
            ),
            ("gi\u{200b}na@example.com", "a zero-width space"),
            ("gina@exa\u{200d}mple.com", "a zero-width joiner"),
            ("ɡina@example.com", "Latin small script g"),
        ] {
            let err = Email::parse(lookalike).expect_err(why).to_string();
            assert!(
                err.contains("look") || err.contains("script") || err.contains("character"),
                "{why}: the message should say why: {err}"
            );
            // Sign-in only normalises: an unknown look-alike is an ordinary
            // failed sign-in (400 where it is not even a valid address).
            let status = sign_in_status(&app, lookalike, PASSWORD).await;
            assert!(matches!(status, 400 | 401), "{why}: {status}");
        }
        // Import refuses the file, naming the record.
        let err = identity::import::parse(
            &json!([{ "email": "new@example.com" }, { "email": "gina@exаmple.com" }]).to_string(),
            identity::import::ImportFormat::Json,
        )
        .expect_err("a look-alike in an import file");
        assert!(err.to_string().starts_with("record 2"), "{err}");

        // Real international addresses still work: one script per part.
        for fine in [
            "müller@example.de",
            "иван@пример.рф",
            "josé@correo.es",
            "用户@例子.中国",
            "ada@xn--mller-kva.de",
        ] {
            let email = Email::parse(fine).unwrap_or_else(|e| panic!("{fine}: {e}"));
            create(&app, email)
                .await
                .unwrap_or_else(|e| panic!("{fine}: {e}"));
        }
        // The punycode spelling of a domain is the same address as its Unicode one.
        assert_eq!(
            Email::parse("ada@xn--mller-kva.de")
                .expect("valid")
                .as_str(),
            "ada@müller.de"
        );
    }
);

async fn cli_create_and_import_normalise_and_refuse_lookalikes(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(url) = cli_database(backend, dir.path()).await else {
        return;
    };
    let env = env(&[("LATCHKEY_DATABASE_URL", &url)]);
    let created = latchkey(
        dir.path(),
        &env,
        &["user", "create", "--email", "Ｇina@Example.com", "--json"],
        None,
    )
    .await;
    created.assert_success("create with a fullwidth letter");
    assert_eq!(created.json()["email"], "gina@example.com");
    latchkey(
        dir.path(),
        &env,
        &["user", "create", "--email", "GINA@example.com"],
        None,
    )
    .await
    .assert_failure("the same address again", &["already exists"]);
    latchkey(
        dir.path(),
        &env,
        &["user", "create", "--email", "gina@exаmple.com"],
        None,
    )
    .await
    .assert_failure("a Cyrillic look-alike", &["--email", "script"]);
    std::fs::write(
        dir.path().join("users.json"),
        json!([{ "email": "new@example.com" }, { "email": "ｇina@example.com" }]).to_string(),
    )
    .expect("write");
    latchkey(dir.path(), &env, &["user", "import", "users.json"], None)
        .await
        .assert_failure(
            "an import with a variant of gina",
            &["record 2", "already exists"],
        );
    std::fs::write(
        dir.path().join("lookalike.json"),
        json!([{ "email": "new@example.com" }, { "email": "аррӏе@example.com" }]).to_string(),
    )
    .expect("write");
    latchkey(
        dir.path(),
        &env,
        &["user", "import", "lookalike.json"],
        None,
    )
    .await
    .assert_failure("an import with a look-alike", &["record 2", "look"]);
    let listed = latchkey(dir.path(), &env, &["user", "list", "--json"], None).await;
    let emails: Vec<String> = listed
        .json()
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u["email"].as_str().expect("email").to_owned())
        .collect();
    assert_eq!(emails, vec!["gina@example.com"], "nothing else was created");
    if backend == Backend::Postgres {
        drop_database(&url).await;
    }
}

mod cli_user_create_and_import_normalise_and_refuse_lookalikes {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        cli_create_and_import_normalise_and_refuse_lookalikes(Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        cli_create_and_import_normalise_and_refuse_lookalikes(Backend::Postgres).await;
    }
}

// ---------------------------------------------------------------- rows stored before the rule

/// Migrations up to 0011: the schema of a database written before 0012.
async fn migrate_before_0012(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.expect("connect");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut migrator = sqlx::migrate::Migrator::new(dir).await.expect("migrations");
    let older: Vec<_> = migrator
        .migrations
        .iter()
        .filter(|m| m.version < 12)
        .cloned()
        .collect();
    migrator.migrations = Cow::Owned(older);
    migrator.run(&pool).await.expect("migrate to 0011");
    pool
}

/// Inserts a user the way a binary before 0012 stored it (trimmed, lower-cased).
async fn insert_legacy_user(pool: &sqlx::AnyPool, email: &str, hash: &str) -> String {
    let id = uuid::Uuid::now_v7().to_string();
    sqlx::query(
        "INSERT INTO users (id, email, display_name, password_hash, disabled, email_verified, created_at, updated_at)
         VALUES ($1, $2, '', $3, 0, 1, 1, 1)",
    )
    .bind(&id)
    .bind(email.trim().to_lowercase())
    .bind(hash)
    .execute(pool)
    .await
    .expect("insert a legacy row");
    id
}

async fn stored_email(app: &TestApp, id: &str) -> String {
    sqlx::query("SELECT email FROM users WHERE id = $1")
        .bind(id)
        .fetch_one(&app.state.pool)
        .await
        .expect("user row")
        .try_get("email")
        .expect("email")
}

async fn legacy_rows_keep_working(backend: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display()),
        Backend::Postgres => match postgres_url() {
            Some(admin) => fresh_postgres_database(&admin).await,
            None => return,
        },
    };
    let old = migrate_before_0012(&url).await;
    let hasher = identity::PasswordHasher::new(&test_config(url.clone()).password).expect("hasher");
    let hash = hasher
        .hash(&identity::Password::new(PASSWORD))
        .await
        .expect("hash");
    let fullwidth = insert_legacy_user(&old, "ｇina@example.com", &hash).await;
    let eszett = insert_legacy_user(&old, "Straße@example.de", &hash).await;
    let ada = insert_legacy_user(&old, "ada@example.com", &hash).await;
    let ada_lookalike = insert_legacy_user(&old, "ａda@example.com", &hash).await;
    let cyrillic = insert_legacy_user(&old, "bob@exаmple.com", &hash).await;
    old.close().await;

    // The upgraded server starts on that database (it migrates it).
    let app = TestApp::spawn_with(backend, |c| c.database.url = url.clone())
        .await
        .expect("the upgraded server starts");
    assert_eq!(stored_email(&app, &fullwidth).await, "gina@example.com");
    assert_eq!(stored_email(&app, &eszett).await, "strasse@example.de");
    for typed in [
        "ｇina@example.com",
        "gina@example.com",
        "Straße@example.de",
        "strasse@example.de",
    ] {
        assert_eq!(sign_in_status(&app, typed, PASSWORD).await, 303, "{typed}");
    }
    // A look-alike of an existing address cannot take the normal form: it is
    // left as it was (and named in the log), the original keeps signing in.
    assert_eq!(stored_email(&app, &ada).await, "ada@example.com");
    assert_eq!(stored_email(&app, &ada_lookalike).await, "ａda@example.com");
    assert_eq!(sign_in_status(&app, "ada@example.com", PASSWORD).await, 303);
    assert_eq!(
        identity::find(&app.state.pool, "ada@example.com")
            .await
            .expect("found")
            .id,
        ada
    );
    // An address refused today but stored before keeps signing in.
    assert_eq!(stored_email(&app, &cyrillic).await, "bob@exаmple.com");
    assert_eq!(sign_in_status(&app, "bob@exаmple.com", PASSWORD).await, 303);
    // And no new look-alike can join it.
    assert!(Email::parse("bob@exаmple.com").is_err());
    assert!(matches!(
        create(&app, Email::parse("ｇina@example.com").expect("valid")).await,
        Err(IdentityError::DuplicateEmail(_))
    ));
}

mod emails_stored_before_normalisation_keep_signing_in_after_the_upgrade {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        legacy_rows_keep_working(Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        legacy_rows_keep_working(Backend::Postgres).await;
    }
}
