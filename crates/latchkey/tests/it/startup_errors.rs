//! What an operator reads when `latchkey` cannot start: one cause chain,
//! each cause said once, naming the address or server it concerns, and every
//! refused setting at once rather than one per attempt.

use crate::support::cli::{env, free_port, latchkey};

fn sqlite(dir: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("x.db").display())
}

fn key() -> String {
    latchkey::crypto::MasterKey::generate().encode()
}

fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("error:")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_in_use_is_said_once_and_names_the_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let vars = env(&[
        ("LATCHKEY_DATABASE_URL", &sqlite(dir.path())),
        ("LATCHKEY_BIND", &addr),
        ("LATCHKEY_ISSUER", &format!("http://{addr}")),
        ("LATCHKEY_MASTER_KEY", &key()),
    ]);
    let out = latchkey(dir.path(), &vars, &["serve"], None).await;
    out.assert_failure("serve on a taken port", &[&addr]);
    let errors = error_lines(&out.stderr);
    assert_eq!(errors.len(), 1, "one error line:\n{}", out.stderr);
    let lower = errors[0].to_lowercase();
    assert_eq!(
        lower.matches("address already in use").count(),
        1,
        "the cause once: {}",
        errors[0]
    );
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_postgresql_is_named_by_host_and_port_and_its_cause_said_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing listens there: the connection is refused at once.
    let server = format!("127.0.0.1:{}", free_port());
    let url = format!("postgres://postgres@{server}/latchkey");
    let bind = format!("127.0.0.1:{}", free_port());
    let vars = env(&[
        ("LATCHKEY_DATABASE_URL", &url),
        ("LATCHKEY_DATABASE__ACQUIRE_TIMEOUT_SECS", "5"),
        ("LATCHKEY_BIND", &bind),
        ("LATCHKEY_ISSUER", &format!("http://{bind}")),
        ("LATCHKEY_MASTER_KEY", &key()),
    ]);
    for args in [&["serve"][..], &["user", "list"], &["migrate"]] {
        let out = latchkey(dir.path(), &vars, args, None).await;
        let what = args.join(" ");
        out.assert_failure(&what, &[&server]);
        let errors = error_lines(&out.stderr);
        assert_eq!(errors.len(), 1, "{what}: one error line:\n{}", out.stderr);
        let line = errors[0].to_lowercase();
        assert_eq!(
            line.matches("connection refused").count(),
            1,
            "{what}: the cause once: {}",
            errors[0]
        );
        assert!(!line.contains("pool timed out"), "{what}: {}", errors[0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_lists_every_refused_setting_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vars = env(&[
        ("LATCHKEY_DATABASE_URL", &sqlite(dir.path())),
        ("LATCHKEY_ISSUER", "http://id.example.com"),
        ("LATCHKEY_HTTP__CORS_ALLOWED_ORIGINS", "[\"*\"]"),
        ("LATCHKEY_HTTP__CORS_ALLOW_CREDENTIALS", "true"),
    ]);
    let out = latchkey(dir.path(), &vars, &["serve"], None).await;
    out.assert_failure(
        "three refusals",
        &[
            "3 settings are refused",
            "`issuer`",
            "`http.cors_allowed_origins`",
            "`master_key`",
        ],
    );
    // Nothing was created: the refusals come before the database is touched.
    assert!(!dir.path().join("x.db").exists());
}

/// With `database.migrate_on_start = false` (several instances, one
/// database), `serve` applies nothing: pending migrations stop it with the
/// count and the command to run; after `latchkey migrate` it builds — on
/// SQLite and PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_migrate_on_start_refuses_pending_migrations_and_names_latchkey_migrate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut urls = vec![sqlite(dir.path())];
    if let Some(admin) = crate::support::app::postgres_url() {
        urls.push(crate::support::app::fresh_postgres_database(&admin).await);
    }
    let known = latchkey::store::known_migrations().count();
    for url in urls {
        let bind = format!("127.0.0.1:{}", free_port());
        let vars = env(&[
            ("LATCHKEY_DATABASE_URL", &url),
            ("LATCHKEY_DATABASE__MIGRATE_ON_START", "false"),
            ("LATCHKEY_BIND", &bind),
            ("LATCHKEY_ISSUER", &format!("http://{bind}")),
            ("LATCHKEY_MASTER_KEY", &key()),
        ]);
        let out = latchkey(dir.path(), &vars, &["serve"], None).await;
        out.assert_failure(
            "serve on an unmigrated database",
            &[
                &format!("{known} database migration(s) pending, from 0001"),
                "latchkey migrate",
            ],
        );
        // Nothing was applied by the refused start.
        let mut config = crate::support::app::test_config(url.clone());
        config.database.migrate_on_start = false;
        let pool = latchkey::store::connect(&config.database)
            .await
            .expect("open");
        assert!(latchkey::store::require_migrated(&pool).await.is_err());
        latchkey::store::migrate(&pool).await.expect("migrate");
        pool.close().await;
        // Migrated: the same configuration builds a server.
        latchkey::app::AppState::new(
            config,
            latchkey::crypto::MasterKey::generate(),
            latchkey::app::Dependencies::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
}
