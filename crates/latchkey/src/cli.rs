//! The `latchkey` command line: argument parsing and the glue that runs each
//! subcommand. Scripts rely on it: `--json` prints exactly one JSON document
//! on stdout (messages go to stderr) and failures exit non-zero.
//!
//! Must not: hold business rules; it calls the same domain functions as the
//! HTTP handlers.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};

use crate::app::{self, Application, Dependencies};
use crate::audit::{self, Event, EventKind};
use crate::clock::{format_utc, Clock as _, SystemClock};
use crate::config::{Config, LogFormat, Mode, DEV_KEY_MARKER};
use crate::crypto::MasterKey;
use crate::doctor::{self, Severity};
use crate::identity::{
    self, import, Email, NewUser, Password, PasswordHasher, PasswordPolicy, Role,
};
use crate::revocation::{Cause, Initiator};
use crate::store;

#[derive(Parser, Debug)]
#[command(
    name = "latchkey",
    version,
    about = "Identity provider and OAuth 2.1 / OpenID Connect server"
)]
pub struct Cli {
    #[command(flatten)]
    config: ConfigArg,
    #[command(subcommand)]
    command: Command,
}

/// `--config` is global: it may come before or after any subcommand and action
/// (`latchkey --config f user list`, `latchkey user list --config f`,
/// `latchkey keys list --config f` all mean the same).
#[derive(Args, Debug, Clone)]
struct ConfigArg {
    /// TOML configuration file; LATCHKEY_* environment variables override it.
    /// Without it, a `./.latchkey/` folder made by `latchkey dev` is used
    /// (`dev` itself takes --data-dir instead).
    #[arg(long, short = 'c', env = "LATCHKEY_CONFIG", global = true)]
    config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Zero-configuration local server: SQLite and keys in ./.latchkey/, http://127.0.0.1:8080.
    Dev {
        /// Where to keep the database and the development master key.
        #[arg(long, env = "LATCHKEY_DATA_DIR", default_value = ".latchkey")]
        data_dir: PathBuf,
    },
    /// Production server from a config file and LATCHKEY_* variables.
    Serve,
    /// Apply pending database migrations and exit (the only command, with
    /// `serve`/`dev` when `database.migrate_on_start` is on, that changes the schema).
    Migrate {
        /// List the migrations that would run and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Read the security audit log.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Check a configuration for dangerous settings; exit 1 on any high-severity finding.
    Doctor {
        /// Print one JSON document: {"ok": bool, "findings": [...]}.
        #[arg(long)]
        json: bool,
    },
    /// Key management: master key, signing keys.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Manage OAuth clients.
    Client {
        #[command(subcommand)]
        action: Box<crate::cli_admin::ClientAction>,
    },
    /// Manage upstream sign-in providers (social login / federation).
    Idp {
        #[command(subcommand)]
        action: crate::cli_idp::IdpAction,
    },
    /// Inspect tokens locally.
    Token {
        #[command(subcommand)]
        action: crate::cli_admin::TokenAction,
    },
}

#[derive(Subcommand, Debug)]
enum UserAction {
    /// Create a user. The password is read from stdin with --password-stdin.
    Create {
        /// The user's email address, used to sign in (unique).
        #[arg(long)]
        email: String,
        /// Display name shown on pages and in the `name` claim.
        #[arg(long)]
        name: Option<String>,
        /// Role to grant (repeatable), e.g. --role admin for the first administrator.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Print the created user as one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// List users.
    List {
        /// Print one JSON array of users.
        #[arg(long)]
        json: bool,
    },
    /// Replace a user's roles with the given ones (none = no roles).
    SetRole {
        /// The user's email or id.
        user: String,
        /// Role to grant (repeatable); omit to remove every role.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Print the updated user as one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Set a new password, read from standard input.
    SetPassword {
        /// The user's email or id.
        user: String,
        /// Read the password from the first line of standard input (required).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Disable a user and end all their sessions.
    Disable {
        /// The user's email or id.
        user: String,
    },
    /// Enable a disabled user.
    Enable {
        /// The user's email or id.
        user: String,
    },
    /// Delete a user and everything that belongs to them.
    Delete {
        /// The user's email or id.
        user: String,
    },
    /// End every session of a user.
    LogoutAll {
        /// The user's email or id.
        user: String,
    },
    /// Remove a user's second factors (authenticator app, recovery codes) after
    /// they lost them; they sign in with their password and set up MFA again.
    ResetMfa {
        /// The user's email or id.
        user: String,
    },
    /// Import users (with Argon2, bcrypt or PBKDF2 hashes) from a JSON, CSV or Keycloak export file.
    Import {
        /// The file to import (see examples/users.csv and examples/keycloak-users.json).
        file: PathBuf,
        /// json, csv or keycloak; guessed from the file extension (and a Keycloak export's shape) if omitted.
        #[arg(long)]
        format: Option<String>,
        /// Print {"imported": n, "ids": [...]} as one JSON document.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum AuditAction {
    /// Print the newest events.
    Tail {
        /// How many of the newest events to print (1 to 10000).
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: i64,
        /// Keep printing new events as they are recorded (until interrupted).
        #[arg(short, long)]
        follow: bool,
        /// One JSON array (or, with --follow, one JSON object per line).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum KeysAction {
    /// Print a fresh master key (32 random bytes, base64url).
    GenerateMaster,
    /// List signing keys and their state (next, active, retired).
    List {
        /// Print {"keys": [...]} as one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Introduce a new signing key now; it signs after the pre-publication window.
    Rotate {
        /// Print {"kid", "activates_at"} as one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Stop signing with a key now (it stays in the JWKS until its tokens expire).
    Retire {
        /// The key id (`kid`), as shown by `latchkey keys list`.
        kid: String,
    },
}

/// Entry point used by `main.rs`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", cause_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, outermost first, joined by ": " — each cause
/// once. Many errors (ours and the libraries') already repeat their source in
/// their own message (`cannot listen on …: Address already in use`), so a
/// cause whose text is already printed is left out.
pub fn cause_chain(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if message.is_empty() || text.contains(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}

fn env_map() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("LATCHKEY_"))
        .collect()
}

/// Resolves the configuration of every non-dev subcommand.
fn resolve_config(arg: &ConfigArg) -> anyhow::Result<Config> {
    let env = env_map();
    if let Some(file) = &arg.config {
        return Ok(Config::load(Some(file), &env)?);
    }
    let dev_dir = Path::new(".latchkey");
    if !env.contains_key("LATCHKEY_DATABASE_URL") && dev_dir.join("master.key").exists() {
        return Ok(Config::dev(&absolute(dev_dir)?, &env)?);
    }
    if env.contains_key("LATCHKEY_DATABASE_URL") {
        return Ok(Config::load(None, &env)?);
    }
    bail!("no configuration: pass --config FILE, set LATCHKEY_DATABASE_URL, or run in a folder where `latchkey dev` has run")
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    Ok(if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()?.join(path)
    })
}

/// Opens the database for `command` (e.g. "user list"): refuses a database
/// newer than this binary and pending migrations (naming `latchkey migrate`);
/// only `migrate`, `serve` and `dev` change the schema.
async fn open_store(config: &Config, command: &str) -> anyhow::Result<store::Pool> {
    let pool = store::connect(&config.database)
        .await
        .with_context(|| format!("database {}", store::redact_url(&config.database.url)))?;
    store::require_current_schema(&pool, command).await?;
    Ok(pool)
}

fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let arg = cli.config;
    match cli.command {
        Command::Dev { data_dir } => dev(&data_dir).await,
        Command::Serve => {
            let config = resolve_config(&arg)?;
            serve(config, Mode::Serve).await
        }
        Command::Migrate { dry_run } => {
            let config = resolve_config(&arg)?;
            migrate(&config, dry_run).await
        }
        Command::User { action } => {
            let config = resolve_config(&arg)?;
            user(&config, action).await
        }
        Command::Audit {
            action:
                AuditAction::Tail {
                    lines,
                    follow,
                    json,
                },
        } => {
            let config = resolve_config(&arg)?;
            audit_tail(&config, lines, follow, json).await
        }
        Command::Doctor { json } => {
            let config = resolve_config(&arg)?;
            doctor_command(&config, json)
        }
        Command::Keys {
            action: KeysAction::GenerateMaster,
        } => {
            println!("{}", MasterKey::generate().encode());
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys { action } => crate::cli_admin::keys(action_into(action, &arg)?).await,
        Command::Client { action } => {
            crate::cli_admin::client(&resolve_config(&arg)?, *action).await
        }
        Command::Token { action } => crate::cli_admin::token(action).await,
        Command::Idp { action } => crate::cli_idp::idp(&resolve_config(&arg)?, action).await,
    }
}

/// `latchkey migrate [--dry-run]`.
async fn migrate(config: &Config, dry_run: bool) -> anyhow::Result<ExitCode> {
    let shown = store::redact_url(&config.database.url);
    let pool = store::connect(&config.database)
        .await
        .with_context(|| format!("database {shown}"))?;
    let status = store::schema_status(&pool).await?;
    status.refuse_newer()?;
    if dry_run {
        for (version, description) in &status.pending {
            println!("would apply {version:04} {description}");
        }
        eprintln!(
            "database {shown}: {} migration(s) applied, {} pending; nothing was changed (--dry-run)",
            status.applied.len(),
            status.pending.len()
        );
        pool.close().await;
        return Ok(ExitCode::SUCCESS);
    }
    store::migrate(&pool).await?;
    let normalized = identity::normalize_stored_emails(&pool).await?;
    for (id, email) in &normalized.lookalikes {
        eprintln!("warning: user {id} keeps the address {email:?}: it is a look-alike of another account's; delete or rename one of the two");
    }
    for (version, description) in &status.pending {
        eprintln!("applied {version:04} {description}");
    }
    eprintln!("database {shown} is up to date");
    pool.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn dev(data_dir: &Path) -> anyhow::Result<ExitCode> {
    let data_dir = absolute(data_dir)?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    #[cfg(unix)]
    {
        // The data directory holds the database and the development key: owner only.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", data_dir.display()))?;
    }
    let key_path = data_dir.join("master.key");
    if !key_path.exists() {
        let text = format!(
            "{DEV_KEY_MARKER}\n# Written by `latchkey dev`. Never use it in production: generate one with\n# `latchkey keys generate-master` and keep it outside the data directory.\n{}\n",
            MasterKey::generate().encode()
        );
        write_private(&key_path, &text)?;
    }
    let config = Config::dev(&data_dir, &env_map())?;
    eprintln!(
        "warning: development mode — data in {}, DEVELOPMENT master key in {}",
        data_dir.display(),
        key_path.display()
    );
    serve(config, Mode::Dev).await
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

async fn serve(config: Config, mode: Mode) -> anyhow::Result<ExitCode> {
    crate::telemetry::init_logging(config.log_format, &config.log_level);
    config.check_for_serving(mode)?;
    let master = config.load_master_key()?;
    for finding in doctor::audit(&config, mode)
        .iter()
        .filter(|f| f.severity >= Severity::Medium)
    {
        tracing::warn!(
            option = finding.option,
            "{} — fix: {}",
            finding.problem,
            finding.fix
        );
    }
    let application =
        Application::build(config.clone(), master.key, Dependencies::default()).await?;
    if mode == Mode::Dev {
        bootstrap_admin(application.state()).await?;
    }
    let addr = application.local_addr();
    tracing::info!(%addr, issuer = config.issuer_str(), "latchkey listening");
    // With JSON logs, stderr carries nothing but JSON lines after start-up.
    let human = config.log_format == LogFormat::Text;
    if human {
        eprintln!(
            "Latchkey is listening on http://{addr} — sign in at {}/login",
            config.issuer_str()
        );
    }
    application
        .run_until_stopped(app::shutdown_signal())
        .await?;
    tracing::info!("latchkey stopped");
    if human {
        eprintln!("Latchkey stopped.");
    }
    Ok(ExitCode::SUCCESS)
}

/// On the first start of `latchkey dev`, create an admin with a random
/// password and print it once.
async fn bootstrap_admin(state: &app::AppState) -> anyhow::Result<()> {
    if identity::count(&state.pool).await? > 0 {
        return Ok(());
    }
    let email = Email::parse("admin@localhost").map_err(anyhow::Error::msg)?;
    let password = crate::crypto::b64url(&crate::crypto::random_bytes::<15>());
    let hash = state.hasher.hash(&Password::new(password.clone())).await?;
    let user = identity::create_user(
        &state.pool,
        NewUser {
            email: email.clone(),
            display_name: "Administrator".into(),
            roles: vec![Role::parse(Role::ADMIN)?],
            password_hash: Some(hash),
            email_verified: true,
            // The printed password is for the first sign-in only: the pages
            // then ask for one of the administrator's own (or a passkey).
            // Set in the same INSERT: a crash cannot leave it unflagged.
            must_change_password: true,
        },
        state.clock.now(),
    )
    .await?;
    audit::record(
        &state.pool,
        EventKind::UserCreated,
        Event {
            actor: "bootstrap".into(),
            subject: user.id,
            detail: "dev bootstrap admin".into(),
            ..Event::default()
        },
        state.clock.now(),
    )
    .await?;
    eprintln!("\n  First start: created the administrator account (shown only once)\n    email:    {email}\n    password: {password}\n  At the first sign-in you choose your own password (or add a passkey).\n");
    Ok(())
}

fn read_password_stdin() -> anyhow::Result<Password> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read the password from stdin")?;
    let line = text.lines().next().unwrap_or_default();
    if line.is_empty() {
        bail!("--password-stdin: standard input is empty");
    }
    Ok(Password::new(line))
}

async fn hash_new_password(
    config: &Config,
    password: &Password,
    email: &Email,
) -> anyhow::Result<String> {
    PasswordPolicy::new(&config.password).check(password, Some(email.as_str()))?;
    Ok(PasswordHasher::new(&config.password)?
        .hash(password)
        .await?)
}

fn parse_roles(roles: &[String]) -> anyhow::Result<Vec<Role>> {
    Ok(roles
        .iter()
        .map(|r| Role::parse(r))
        .collect::<Result<Vec<_>, _>>()?)
}

fn cli_event(subject: &str, detail: String) -> Event {
    Event {
        actor: "cli".into(),
        subject: subject.to_owned(),
        detail,
        ..Event::default()
    }
}

impl UserAction {
    /// The subcommand as typed, for messages.
    fn command(&self) -> &'static str {
        match self {
            UserAction::Create { .. } => "user create",
            UserAction::List { .. } => "user list",
            UserAction::SetRole { .. } => "user set-role",
            UserAction::SetPassword { .. } => "user set-password",
            UserAction::Disable { .. } => "user disable",
            UserAction::Enable { .. } => "user enable",
            UserAction::Delete { .. } => "user delete",
            UserAction::LogoutAll { .. } => "user logout-all",
            UserAction::ResetMfa { .. } => "user reset-mfa",
            UserAction::Import { .. } => "user import",
        }
    }
}

async fn user(config: &Config, action: UserAction) -> anyhow::Result<ExitCode> {
    let pool = open_store(config, action.command()).await?;
    let now = SystemClock.now();
    match action {
        UserAction::Create {
            email,
            name,
            roles,
            password_stdin,
            json,
        } => {
            let email = Email::parse(&email).map_err(|e| anyhow::anyhow!("--email: {e}"))?;
            let roles = parse_roles(&roles)?;
            let password_hash = if password_stdin {
                Some(hash_new_password(config, &read_password_stdin()?, &email).await?)
            } else {
                None
            };
            let user = identity::create_user(
                &pool,
                NewUser {
                    email,
                    display_name: name.unwrap_or_default(),
                    roles,
                    password_hash,
                    email_verified: false,
                    must_change_password: false,
                },
                now,
            )
            .await?;
            audit::record(
                &pool,
                EventKind::UserCreated,
                cli_event(&user.id, user.email.to_string()),
                now,
            )
            .await?;
            if json {
                print_json(&serde_json::to_value(&user)?)?;
            } else {
                eprintln!("created user {} ({})", user.email, user.id);
                if user.password_hash.is_none() {
                    eprintln!("note: no password set; use `latchkey user set-password {} --password-stdin`", user.email);
                }
            }
        }
        UserAction::List { json } => {
            let users = identity::list(&pool).await?;
            if json {
                print_json(&serde_json::json!(users))?;
            } else {
                // Columns as wide as their longest cell, so any email aligns.
                let rows: Vec<[String; 5]> = users
                    .iter()
                    .map(|u| {
                        let roles: Vec<_> = u.roles.iter().map(Role::as_str).collect();
                        [
                            u.id.clone(),
                            u.email.to_string(),
                            roles.join(","),
                            if u.disabled { "disabled" } else { "active" }.to_owned(),
                            format_utc(u.created_at),
                        ]
                    })
                    .collect();
                let header = ["id", "email", "roles", "status", "created"].map(str::to_owned);
                let mut widths = [0usize; 5];
                for row in std::iter::once(&header).chain(&rows) {
                    for (w, cell) in widths.iter_mut().zip(row) {
                        *w = (*w).max(cell.chars().count());
                    }
                }
                for row in std::iter::once(&header).chain(&rows) {
                    let line: Vec<String> = row
                        .iter()
                        .zip(widths)
                        .map(|(cell, w)| format!("{cell:<w$}"))
                        .collect();
                    println!("{}", line.join("  ").trim_end());
                }
            }
        }
        UserAction::SetRole { user, roles, json } => {
            let found = identity::find(&pool, &user).await?;
            let roles = parse_roles(&roles)?;
            identity::set_roles(&pool, &found.id, &roles, now).await?;
            let names: Vec<_> = roles.iter().map(Role::as_str).collect();
            audit::record(
                &pool,
                EventKind::RolesChanged,
                cli_event(&found.id, format!("roles = [{}]", names.join(","))),
                now,
            )
            .await?;
            let updated = identity::find(&pool, &found.id).await?;
            if json {
                print_json(&serde_json::to_value(&updated)?)?;
            } else {
                eprintln!(
                    "{} now has roles: {}",
                    updated.email,
                    if names.is_empty() {
                        "(none)".into()
                    } else {
                        names.join(", ")
                    }
                );
            }
        }
        UserAction::SetPassword { user, .. } => {
            let found = identity::find(&pool, &user).await?;
            let hash = hash_new_password(config, &read_password_stdin()?, &found.email).await?;
            identity::replace_password_hash(&pool, &found.id, None, &hash, now).await?;
            audit::record(
                &pool,
                EventKind::PasswordRehashed,
                cli_event(&found.id, "password set by an operator".into()),
                now,
            )
            .await?;
            eprintln!("password updated for {}", found.email);
        }
        UserAction::Disable { user } => {
            let found = identity::find(&pool, &user).await?;
            let ended = crate::cascade::set_user_disabled(&pool, &found.id, true, now).await?;
            audit::record(
                &pool,
                EventKind::UserDisabled,
                cli_event(&found.id, format!("{ended} session(s) ended")),
                now,
            )
            .await?;
            eprintln!("disabled {} and ended {ended} session(s)", found.email);
        }
        UserAction::Enable { user } => {
            let found = identity::find(&pool, &user).await?;
            crate::cascade::set_user_disabled(&pool, &found.id, false, now).await?;
            audit::record(
                &pool,
                EventKind::UserEnabled,
                cli_event(&found.id, String::new()),
                now,
            )
            .await?;
            eprintln!("enabled {}", found.email);
        }
        UserAction::Delete { user } => {
            let found = identity::find(&pool, &user).await?;
            crate::cascade::delete_user(&pool, &found.id, now).await?;
            audit::record(
                &pool,
                EventKind::UserDeleted,
                cli_event(&found.id, found.email.to_string()),
                now,
            )
            .await?;
            eprintln!("deleted {}", found.email);
        }
        UserAction::ResetMfa { user } => {
            let found = identity::find(&pool, &user).await?;
            let cause = Cause::new(now, Initiator::Admin, "second factors reset by an operator");
            // One transaction: factors removed, sessions ended, events recorded.
            let ended =
                crate::cascade::reset_mfa_and_end_sessions(&pool, &found.id, &cause).await?;
            audit::record(
                &pool,
                EventKind::MfaReset,
                cli_event(
                    &found.id,
                    format!("second factors removed by an operator; {ended} session(s) ended"),
                ),
                now,
            )
            .await?;
            eprintln!(
                "removed the second factors of {} and ended {ended} session(s)",
                found.email
            );
        }
        UserAction::LogoutAll { user } => {
            let found = identity::find(&pool, &user).await?;
            let cause = Cause::new(
                now,
                Initiator::Admin,
                "signed out everywhere by an operator",
            );
            let ended = crate::cascade::revoke_all_sessions(&pool, &found.id, &cause).await?;
            audit::record(
                &pool,
                EventKind::SessionRevoked,
                cli_event(&found.id, format!("all {ended} session(s)")),
                now,
            )
            .await?;
            eprintln!("ended {ended} session(s) of {}", found.email);
        }
        UserAction::Import { file, format, json } => {
            if let Some(given) = format.as_deref() {
                if !matches!(given, "json" | "csv" | "keycloak") {
                    bail!("--format: say json, csv or keycloak (got {given:?})");
                }
            }
            let meta = std::fs::metadata(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            if meta.len() as usize > import::MAX_IMPORT_BYTES {
                bail!(
                    "{} is larger than {} MiB",
                    file.display(),
                    import::MAX_IMPORT_BYTES >> 20
                );
            }
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let extension = file.extension().and_then(|e| e.to_str());
            let Some(format) = import::ImportFormat::choose(format.as_deref(), extension, &text)
            else {
                bail!("--format: say json, csv or keycloak (the extension {extension:?} does not tell)");
            };
            let users = import::parse(&text, format)?;
            let ids = import::import(&pool, &users, now).await?;
            for (id, u) in ids.iter().zip(&users) {
                audit::record(
                    &pool,
                    EventKind::UserImported,
                    cli_event(id, u.email.to_string()),
                    now,
                )
                .await?;
            }
            if json {
                print_json(&serde_json::json!({ "imported": ids.len(), "ids": ids }))?;
            } else {
                eprintln!("imported {} user(s); imported bcrypt and PBKDF2 hashes become Argon2id at each user's next sign-in", ids.len());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn audit_tail(
    config: &Config,
    lines: i64,
    follow: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let pool = open_store(config, "audit tail").await?;
    let events = audit::tail(&pool, lines.clamp(1, 10_000)).await?;
    let print = |e: &audit::RecordedEvent| {
        println!(
            "{}  {:<18} actor={} subject={} ip={} {}",
            format_utc(e.at),
            e.kind,
            or_dash(&e.actor),
            or_dash(&e.subject),
            or_dash(&e.ip),
            e.detail
        );
    };
    if json && !follow {
        print_json(&serde_json::to_value(&events)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut last = events.last().map(|e| e.id.clone()).unwrap_or_default();
    for e in &events {
        if json {
            println!("{}", serde_json::to_string(e)?);
        } else {
            print(e);
        }
    }
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        for e in audit::since(&pool, &last, 1000).await? {
            if json {
                println!("{}", serde_json::to_string(&e)?);
            } else {
                print(&e);
            }
            last = e.id.clone();
        }
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

fn doctor_command(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let mode = if config.load_master_key().map(|k| k.is_dev).unwrap_or(false)
        && config
            .issuer_url()
            .map(|u| crate::config::is_loopback_host(&u))
            .unwrap_or(false)
    {
        Mode::Dev
    } else {
        Mode::Serve
    };
    let findings = doctor::audit(config, mode);
    let high = findings.iter().any(|f| f.severity == Severity::High);
    if json {
        print_json(&serde_json::json!({ "ok": !high, "findings": findings }))?;
    } else if findings.is_empty() {
        println!("No problems found.");
    } else {
        for f in &findings {
            println!(
                "[{:?}] {} ({})\n    why: {}\n    fix: {}\n",
                f.severity, f.problem, f.option, f.why, f.fix
            );
        }
        let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
        println!(
            "{} high, {} medium, {} low, {} info",
            count(Severity::High),
            count(Severity::Medium),
            count(Severity::Low),
            count(Severity::Info)
        );
    }
    Ok(if high {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Resolves the configuration of a signing-key subcommand.
fn action_into(
    action: KeysAction,
    config: &ConfigArg,
) -> anyhow::Result<crate::cli_admin::KeysCommand> {
    Ok(match action {
        KeysAction::GenerateMaster => unreachable!("handled before"),
        KeysAction::List { json } => crate::cli_admin::KeysCommand::List {
            config: resolve_config(config)?,
            json,
        },
        KeysAction::Rotate { json } => crate::cli_admin::KeysCommand::Rotate {
            config: resolve_config(config)?,
            json,
        },
        KeysAction::Retire { kid } => crate::cli_admin::KeysCommand::Retire {
            config: resolve_config(config)?,
            kid,
        },
    })
}

pub(crate) async fn open_store_for(config: &Config, command: &str) -> anyhow::Result<store::Pool> {
    open_store(config, command).await
}

pub(crate) fn print_json_doc(value: &serde_json::Value) -> anyhow::Result<()> {
    print_json(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen on 127.0.0.1:8080: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn cause_chain_prints_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let error = anyhow::Error::new(Repeats(io)).context("cannot start");
        assert_eq!(
            cause_chain(&error),
            "cannot start: cannot listen on 127.0.0.1:8080: Address already in use"
        );
        let plain = anyhow::anyhow!("root").context("middle").context("top");
        assert_eq!(cause_chain(&plain), "top: middle: root");
    }
}
