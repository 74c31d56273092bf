//! Storage: one connection pool that speaks SQLite or PostgreSQL.
//!
//! Owns: connecting (with pool sizes and timeouts from config; a connection
//! returned inside a failed transaction is closed, not reused), SQLite
//! pragmas (WAL), running the versioned migrations and the schema checks of
//! the commands that must not run them, the write probe behind `/readyz`,
//! and the classification of database failures into [`StoreError`].
//!
//! Every query in Latchkey is written once, in the SQL both engines accept
//! (`$1` placeholders, `TEXT` and `BIGINT` columns (flags are 0/1), no engine-specific
//! functions), and runs through sqlx's `Any` driver. Domain modules own
//! their queries; this module owns none.
//!
//! Must not: contain domain queries or know about HTTP.

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

use crate::config::DatabaseConfig;

/// The shared pool type: an `AnyPool` over SQLite or PostgreSQL.
pub type Pool = AnyPool;
/// A transaction on the shared pool.
pub type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

/// What went wrong in storage, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached right now; retrying later may work (503).
    #[error("the database is unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// A uniqueness constraint rejected the write (e.g. duplicate email).
    #[error("a record with the same unique value already exists")]
    Conflict,
    /// Anything else: a bug or a corrupted database (500).
    #[error("database error: {0}")]
    Other(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e),
            sqlx::Error::Database(db) if is_unavailable_code(db.code().as_deref()) => {
                StoreError::Unavailable(e)
            }
            _ => StoreError::Other(e),
        }
    }
}

/// Transient failures: the request may be retried (503 with `Retry-After`).
/// PostgreSQL (five-character SQLSTATEs): "admin shutdown", "crash shutdown",
/// "cannot connect now", "database is not currently accepting connections"
/// (55000, met when connecting), connection failures (08xxx), and
/// "insufficient resources" (53xxx: disk full, out of memory, too many
/// connections). SQLite (numeric result codes, primary code in the low
/// byte): BUSY and LOCKED (the write lock is held), IOERR (the disk failed a
/// read or a write) and FULL ("database or disk is full").
fn is_unavailable_code(code: Option<&str>) -> bool {
    let Some(code) = code else { return false };
    // SQLite's extended codes stay below 10000; SQLSTATEs are five characters.
    if code.len() == 5 {
        return matches!(code, "57P01" | "57P02" | "57P03" | "55000")
            || code.starts_with("08")
            || code.starts_with("53");
    }
    code.parse::<u32>().is_ok_and(|n| {
        matches!(
            n & 0xff,
            SQLITE_BUSY | SQLITE_LOCKED | SQLITE_IOERR | SQLITE_FULL
        )
    })
}

const SQLITE_BUSY: u32 = 5;
const SQLITE_LOCKED: u32 = 6;
const SQLITE_IOERR: u32 = 10;
const SQLITE_FULL: u32 = 13;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("database_url must start with sqlite: or postgres:, got {0:?}")]
    UnsupportedUrl(String),
    #[error("cannot open the database: {0}")]
    Open(#[source] sqlx::Error),
    /// The database server refused or did not answer; `target` is its
    /// `host:port`, so the operator knows where Latchkey looked.
    #[error("cannot connect to the database server at {target}")]
    Unreachable {
        target: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("no answer from the database server at {target} within {secs} s (database.acquire_timeout_secs)")]
    NoAnswer { target: String, secs: u64 },
    #[error("cannot apply migrations: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("{count} database migration(s) pending, from {first:04}, and database.migrate_on_start is false: run `latchkey migrate` (see the cluster upgrade order in operations.md), then start again")]
    Pending { count: usize, first: i64 },
    #[error("{count} database migration(s) pending, from {first:04}: `latchkey {command}` does not change the schema; run `latchkey migrate` first (`latchkey migrate --dry-run` lists them)")]
    PendingForCommand {
        count: usize,
        first: i64,
        command: String,
    },
    #[error("the database is newer than this binary: it has migration {database:04} applied, and this latchkey {} knows migrations up to {binary:04} only; run the release that migrated it (or a newer one), or restore the backup taken before that upgrade", env!("CARGO_PKG_VERSION"))]
    NewerDatabase { database: i64, binary: i64 },
    #[error("cannot read the applied migrations: {0}")]
    ReadApplied(#[source] sqlx::Error),
}

/// Opens the pool described by `config`. Does not run migrations.
pub async fn connect(config: &DatabaseConfig) -> Result<Pool, ConnectError> {
    sqlx::any::install_default_drivers();
    let backend = Backend::of_url(&config.url)
        .ok_or_else(|| ConnectError::UnsupportedUrl(redact_url(&config.url)))?;
    let options = AnyPoolOptions::new()
        .max_connections(config.max_connections)
        .min_connections(config.min_connections)
        .acquire_timeout(Duration::from_secs(config.acquire_timeout_secs))
        .idle_timeout(Some(Duration::from_secs(600)))
        .after_release(|conn, _| Box::pin(async move { settled_after_release(conn).await }));
    let pool = options
        .connect_lazy(&config.url)
        .map_err(ConnectError::Open)?;
    if backend == Backend::Sqlite {
        // WAL lets readers proceed during a write; it is a property of the file,
        // so setting it once per start is enough.
        sqlx::query("PRAGMA journal_mode=WAL")
            .execute(&pool)
            .await
            .map_err(ConnectError::Open)?;
    } else {
        // One direct connection first: through the pool, a refused connection
        // only shows as "pool timed out", hiding the cause and the server.
        use sqlx::Connection as _;
        let target = server_address(&config.url);
        let secs = config.acquire_timeout_secs;
        match tokio::time::timeout(
            Duration::from_secs(secs),
            sqlx::AnyConnection::connect(&config.url),
        )
        .await
        {
            Ok(Ok(connection)) => {
                let _ = connection.close().await;
            }
            Ok(Err(source)) => return Err(ConnectError::Unreachable { target, source }),
            Err(_) => return Err(ConnectError::NoAnswer { target, secs }),
        }
    }
    Ok(pool)
}

/// Whether a connection coming back to the pool may be reused: only when no
/// transaction is left open on it. A transaction dropped without commit is
/// rolled back by a queued `ROLLBACK`, which runs before this query does. On
/// SQLite, a failed `COMMIT` or statement ("database or disk is full", an I/O
/// error) may end the transaction by itself; the queued `ROLLBACK` then fails,
/// sqlx still counts the transaction as open, and reusing the connection
/// would nest the next transaction in a `SAVEPOINT` that its rollback never
/// ends — a read snapshot held forever and every later write on it "database
/// is locked", until a restart. Such a connection is closed instead (closing
/// ends whatever SQLite still held), and the pool opens a fresh one.
async fn settled_after_release(conn: &mut sqlx::AnyConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Connection as _;
    conn.ping().await?;
    let settled = !conn.is_in_transaction();
    if !settled {
        tracing::warn!("a database connection was left inside a failed transaction; closing it");
    }
    Ok(settled)
}

/// `host:port` of a database URL (PostgreSQL's default port when none is
/// given), or the redacted URL when it names no host.
pub fn server_address(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) if parsed.host_str().is_some_and(|h| !h.is_empty()) => format!(
            "{}:{}",
            parsed.host_str().unwrap_or_default(),
            parsed.port().unwrap_or(5432)
        ),
        _ => redact_url(url),
    }
}

/// Applies every pending migration. Migrations are numbered, forward-only and
/// written in SQL both engines accept; each runs in its own transaction.
/// A database newer than this binary is refused first, naming both versions.
pub async fn migrate(pool: &Pool) -> Result<(), ConnectError> {
    schema_status(pool).await?.refuse_newer()?;
    MIGRATOR.run(pool).await.map_err(ConnectError::Migrate)
}

/// Refuses (with the count and the first version) when this binary knows
/// migrations the database has not applied: `serve` with
/// `database.migrate_on_start = false` calls it instead of [`migrate`].
/// A database newer than this binary is refused too.
pub async fn require_migrated(pool: &Pool) -> Result<(), ConnectError> {
    let status = schema_status(pool).await?;
    status.refuse_newer()?;
    match status.pending.first() {
        None => Ok(()),
        Some(&(first, _)) => Err(ConnectError::Pending {
            count: status.pending.len(),
            first,
        }),
    }
}

/// For every command other than `migrate`, `serve` and `dev`: refuses a
/// database newer than this binary, and refuses pending migrations naming
/// `latchkey migrate` — these commands never change the schema.
pub async fn require_current_schema(pool: &Pool, command: &str) -> Result<(), ConnectError> {
    let status = schema_status(pool).await?;
    status.refuse_newer()?;
    match status.pending.first() {
        None => Ok(()),
        Some(&(first, _)) => Err(ConnectError::PendingForCommand {
            count: status.pending.len(),
            first,
            command: command.to_owned(),
        }),
    }
}

/// Where a database's schema stands against the migrations this binary knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    /// Versions recorded as applied (successfully) in the database.
    pub applied: Vec<i64>,
    /// Migrations this binary knows and the database has not applied, in order.
    pub pending: Vec<(i64, &'static str)>,
    /// Applied versions this binary does not know: a newer release migrated it.
    pub unknown: Vec<i64>,
}

impl SchemaStatus {
    /// The newest migration this binary knows (0 when none).
    pub fn binary_version() -> i64 {
        known_migrations().map(|(v, _)| v).max().unwrap_or(0)
    }

    /// `Err(NewerDatabase)` when the database has applied a migration this binary does not know.
    pub fn refuse_newer(&self) -> Result<(), ConnectError> {
        match self.unknown.iter().max() {
            None => Ok(()),
            Some(&database) => Err(ConnectError::NewerDatabase {
                database,
                binary: Self::binary_version(),
            }),
        }
    }
}

/// Reads which migrations a database has applied, without changing anything
/// (a database with no migrations table has applied none).
pub async fn schema_status(pool: &Pool) -> Result<SchemaStatus, ConnectError> {
    use sqlx::Row as _;
    let applied: std::collections::BTreeSet<i64> =
        match sqlx::query("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
        {
            Ok(rows) => rows
                .iter()
                .map(|r| r.try_get::<i64, _>("version"))
                .collect::<Result<_, _>>()
                .map_err(ConnectError::ReadApplied)?,
            // No table yet: nothing applied.
            Err(sqlx::Error::Database(_)) => std::collections::BTreeSet::new(),
            Err(e) => return Err(ConnectError::ReadApplied(e)),
        };
    let known: std::collections::BTreeSet<i64> = known_migrations().map(|(v, _)| v).collect();
    Ok(SchemaStatus {
        pending: known_migrations()
            .filter(|(v, _)| !applied.contains(v))
            .collect(),
        unknown: applied.difference(&known).copied().collect(),
        applied: applied.into_iter().collect(),
    })
}

/// Versions of the migrations this binary knows, for `latchkey migrate`'s report.
pub fn known_migrations() -> impl Iterator<Item = (i64, &'static str)> {
    MIGRATOR.iter().map(|m| (m.version, &*m.description))
}

/// `true` when a trivial query succeeds.
pub async fn ping(pool: &Pool) -> bool {
    sqlx::query("SELECT 1").execute(pool).await.is_ok()
}

/// Bytes of random data the readiness probe writes (as base64url text):
/// more than a sign-in writes, so a disk too full for real writes fails it.
const PROBE_PAYLOAD_BYTES: usize = 24 * 1024;

/// The readiness probe: the database answers *and accepts a write* — one
/// committed update of the `write_probe` row with fresh random data, larger
/// than a sign-in's write. A full disk, an I/O error or a write lock held
/// elsewhere fails it, though reads still work.
pub async fn accepts_writes(pool: &Pool, now: i64) -> Result<(), StoreError> {
    let payload = crate::crypto::b64url(&crate::crypto::random_bytes::<PROBE_PAYLOAD_BYTES>());
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE write_probe SET probed_at = $1, payload = $2 WHERE id = 1")
        .bind(now)
        .bind(payload)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// A database URL as it may be shown anywhere (errors, logs, `config
/// show`): the password in the user-info part and the query parameters that
/// carry one (`password`, `sslpassword`, `passfile` — any name containing
/// "pass") become `***`. A URL that does not parse is never echoed, since
/// where its password would be cannot be known.
pub fn redact_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "<unparseable database URL>".to_owned();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    let secret = |name: &str| name.to_ascii_lowercase().contains("pass");
    if parsed.query_pairs().any(|(k, _)| secret(&k)) {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret(&k) {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_address_names_host_and_port() {
        assert_eq!(
            server_address("postgres://u:pw@db.internal:6543/x"),
            "db.internal:6543"
        );
        assert_eq!(server_address("postgres://u@10.0.0.5/x"), "10.0.0.5:5432");
        assert_eq!(server_address("postgres://u:pw@[::1]:5433/x"), "[::1]:5433");
        assert_eq!(
            server_address("postgres:///x?host=/run/pg"),
            "postgres:///x?host=/run/pg"
        );
    }

    #[test]
    fn redacts_passwords_in_urls() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
        assert_eq!(redact_url("sqlite::memory:"), "sqlite::memory:");
    }

    #[test]
    fn redacts_passwords_in_query_parameters_and_never_prints_an_unparseable_url() {
        let shown = redact_url(
            "postgres://u@h/db?sslmode=require&password=hunter2&PassFile=/home/u/.pgpass&sslpassword=k3y",
        );
        assert_eq!(
            shown,
            "postgres://u@h/db?sslmode=require&password=***&PassFile=***&sslpassword=***"
        );
        for secret in ["hunter2", "pgpass", "k3y"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        let both = redact_url("postgres://u:s3cret@h/db?password=s3cret");
        assert!(!both.contains("s3cret"), "{both}");
        for unparseable in ["postgres://u:s3cret@h:notaport/db", "not a url s3cret", ""] {
            assert_eq!(redact_url(unparseable), "<unparseable database URL>");
        }
        // server_address falls back to the redacted form, never the raw URL.
        assert!(!server_address("postgres:///db?host=/run/pg&password=s3cret").contains("s3cret"));
    }

    #[test]
    fn transient_failures_of_both_engines_are_unavailable() {
        for code in [
            "5", "517", "6", "262", "13", "10", "778", "1034", "4874", // SQLite
            "57P01", "57P03", "55000", "08006", "08001", "53100", "53300", // PostgreSQL
        ] {
            assert!(is_unavailable_code(Some(code)), "{code}");
        }
        for code in [
            "1", "19", "2067", "787", "11", // SQLite: error, constraint, corrupt
            "23505", "42P01", "22001", "40001", // PostgreSQL
        ] {
            assert!(!is_unavailable_code(Some(code)), "{code}");
        }
        assert!(!is_unavailable_code(None));
    }

    #[test]
    fn recognizes_backends() {
        assert_eq!(Backend::of_url("sqlite:///x"), Some(Backend::Sqlite));
        assert_eq!(Backend::of_url("postgresql://x"), Some(Backend::Postgres));
        assert_eq!(Backend::of_url("mysql://x"), None);
    }
}
