//! The command line explains itself: every subcommand, argument and flag has
//! help, `--config` is accepted in any position, `client create` takes the
//! same `--require-mfa` as `client update`, and `user list` is a table whose
//! columns align whatever the emails' lengths.

use std::path::Path;

use clap::CommandFactory as _;
use serde_json::Value;

use crate::support::app::{fresh_postgres_database, postgres_url};
use crate::support::cli::{env, latchkey, Env};

/// `(path, problem)` of every subcommand without an about text and every
/// argument without help, walking the fully built command tree (global
/// arguments included, as `--help` shows them).
fn missing_help(command: &clap::Command, path: &str, out: &mut Vec<String>) {
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if matches!(id, "help" | "version") {
            continue;
        }
        if arg.get_help().is_none() && arg.get_long_help().is_none() {
            out.push(format!("{path}: argument {id} has no help"));
        }
    }
    for sub in command.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        let sub_path = format!("{path} {}", sub.get_name());
        if sub.get_about().is_none() && sub.get_long_about().is_none() {
            out.push(format!("{sub_path}: no description"));
        }
        missing_help(sub, &sub_path, out);
    }
}

#[test]
fn every_subcommand_argument_and_flag_has_help() {
    let mut command = latchkey::cli::Cli::command();
    command.build();
    let mut walked = 0;
    fn count(c: &clap::Command, n: &mut usize) {
        *n += c.get_arguments().count();
        c.get_subcommands().for_each(|s| count(s, n));
    }
    count(&command, &mut walked);
    assert!(walked > 60, "the walk saw only {walked} arguments");
    let mut missing = Vec::new();
    missing_help(&command, "latchkey", &mut missing);
    assert!(missing.is_empty(), "no help text: {missing:#?}");
}

#[test]
fn config_is_a_global_flag_on_every_subcommand_that_reads_a_configuration() {
    let mut command = latchkey::cli::Cli::command();
    command.build();
    fn leaves<'a>(c: &'a clap::Command, path: String, out: &mut Vec<(String, &'a clap::Command)>) {
        let subs: Vec<_> = c
            .get_subcommands()
            .filter(|s| s.get_name() != "help")
            .collect();
        for s in &subs {
            leaves(s, format!("{path} {}", s.get_name()), out);
        }
        if subs.is_empty() {
            out.push((path, c));
        }
    }
    let mut all = Vec::new();
    leaves(&command, "latchkey".into(), &mut all);
    assert!(all.len() > 20, "too few subcommands: {}", all.len());
    let without: Vec<&String> = all
        .iter()
        .filter(|(_, c)| !c.get_arguments().any(|a| a.get_long() == Some("config")))
        .map(|(p, _)| p)
        .collect();
    assert!(without.is_empty(), "no --config on: {without:?}");
}

/// A `latchkey.toml` for SQLite in `dir`, with a fresh master key, and its
/// database migrated (`latchkey migrate`: the other subcommands never migrate).
async fn write_config(dir: &Path, database_url: &str) {
    let key_file = dir.join("master.key");
    std::fs::write(
        &key_file,
        format!("{}\n", latchkey::crypto::MasterKey::generate().encode()),
    )
    .expect("write key");
    let mut table = toml::Table::new();
    table.insert("issuer".into(), "http://127.0.0.1:8080".into());
    table.insert(
        "master_key_file".into(),
        key_file.display().to_string().into(),
    );
    let mut database = toml::Table::new();
    database.insert("url".into(), database_url.into());
    table.insert("database".into(), database.into());
    std::fs::write(dir.join("c.toml"), table.to_string()).expect("write config");
    latchkey(
        dir,
        &env(&[("LATCHKEY_CONFIG", "c.toml")]),
        &["migrate"],
        None,
    )
    .await
    .assert_success("migrate");
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("x.db").display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_is_accepted_before_and_after_the_action() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), &sqlite_url(dir.path())).await;
    let none = Env::new();
    latchkey(
        dir.path(),
        &none,
        &[
            "user",
            "create",
            "--email",
            "ada@example.com",
            "--config",
            "c.toml",
        ],
        None,
    )
    .await
    .assert_success("--config after the action");
    for args in [
        &["--config", "c.toml", "user", "list", "--json"][..],
        &["user", "--config", "c.toml", "list", "--json"],
        &["user", "list", "--json", "--config", "c.toml"],
        &["-c", "c.toml", "client", "list", "--json"],
        &["client", "list", "--config", "c.toml", "--json"],
        &["--config", "c.toml", "keys", "list", "--json"],
        &["keys", "--config", "c.toml", "list", "--json"],
        &["keys", "list", "--config", "c.toml", "--json"],
        &["audit", "tail", "--config", "c.toml", "--json"],
    ] {
        let out = latchkey(dir.path(), &none, args, None).await;
        out.assert_success(&args.join(" "));
        let doc = out.json();
        if args.contains(&"user") {
            let emails: Vec<&str> = doc
                .as_array()
                .expect("an array")
                .iter()
                .filter_map(|u| u["email"].as_str())
                .collect();
            assert_eq!(emails, ["ada@example.com"], "{}", args.join(" "));
        }
    }
    // Without any configuration the refusal says how to give one.
    latchkey(dir.path(), &none, &["user", "list"], None)
        .await
        .assert_failure("no configuration", &["--config FILE"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_list_columns_align_whatever_the_email_lengths() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), &sqlite_url(dir.path())).await;
    let vars = env(&[("LATCHKEY_CONFIG", "c.toml")]);
    let long = "a.rather.long.mailbox.name.for.testing@subdomain.example.com";
    for (email, role) in [("bo@example.com", "admin"), (long, "support")] {
        latchkey(
            dir.path(),
            &vars,
            &["user", "create", "--email", email, "--role", role],
            None,
        )
        .await
        .assert_success("user create");
    }
    let out = latchkey(dir.path(), &vars, &["user", "list"], None).await;
    out.assert_success("user list");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two rows:\n{}", out.stdout);
    let header = lines[0];
    for column in ["email", "roles", "status", "created"] {
        let at = header
            .find(column)
            .unwrap_or_else(|| panic!("no {column} in {header:?}"));
        for row in &lines[1..] {
            let chars: Vec<char> = row.chars().collect();
            assert!(
                at == 0 || (chars[at - 1] == ' ' && chars[at] != ' '),
                "column {column} does not start at {at} in:\n{}",
                out.stdout
            );
        }
    }
    assert!(lines
        .iter()
        .any(|l| l.contains(long) && l.contains("support")));
}

async fn client_create_require_mfa(dir: &Path, database_url: &str) {
    write_config(dir, database_url).await;
    let vars = env(&[("LATCHKEY_CONFIG", "c.toml")]);
    let create = |extra: &'static [&'static str]| {
        let mut args = vec![
            "client",
            "create",
            "--name",
            "Payroll",
            "--redirect-uri",
            "https://payroll.example.com/callback",
            "--grant",
            "authorization_code",
            "--json",
        ];
        args.extend_from_slice(extra);
        args
    };
    let strict = latchkey(dir, &vars, &create(&["--require-mfa"]), None).await;
    strict.assert_success("client create --require-mfa");
    let strict: Value = strict.json();
    let relaxed = latchkey(dir, &vars, &create(&[]), None).await;
    relaxed.assert_success("client create");
    let relaxed: Value = relaxed.json();
    // What is stored, read back through `client show`, not the create echo.
    for (doc, expected) in [(&strict, true), (&relaxed, false)] {
        let id = doc["client_id"].as_str().expect("client_id");
        let shown = latchkey(dir, &vars, &["client", "show", id, "--json"], None).await;
        shown.assert_success("client show");
        assert_eq!(shown.json()["require_mfa"], expected, "{}", shown.stdout);
    }
}

mod client_create_takes_require_mfa {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let dir = tempfile::tempdir().expect("tempdir");
        client_create_require_mfa(dir.path(), &sqlite_url(dir.path())).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let Some(admin) = postgres_url() else { return };
        let url = fresh_postgres_database(&admin).await;
        let dir = tempfile::tempdir().expect("tempdir");
        client_create_require_mfa(dir.path(), &url).await;
    }
}
