//! The layers, as tests: what each floor may name. A domain file (anything
//! below the web: not `routes/`, `http/`, `ui/`, the entry points `app`,
//! `state`, `cli`, `cli_admin`, `main`, `lib`, nor `telemetry`, whose
//! middleware serves the web) names neither the web's `AppState` nor axum;
//! handlers in `routes/` hold no SQL; the grants are a floor of their own
//! that nothing below them names, and `tokens` knows no clients (it names no
//! `oauth`); `latchkey-verify` does not depend on the server. Comments may name anything: only code lines are read.

use std::path::{Path, PathBuf};

fn crate_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crates/")
        .join(name)
}

/// Every `.rs` file under `dir`, as (path relative to `dir`, code lines
/// without comments).
fn sources(dir: &Path) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path
                    .strip_prefix(dir)
                    .expect("under dir")
                    .to_string_lossy()
                    .replace('\\', "/");
                let code = std::fs::read_to_string(&path)
                    .expect("read source")
                    .lines()
                    .map(str::trim_start)
                    .filter(|l| !l.starts_with("//"))
                    .map(str::to_owned)
                    .collect();
                out.push((relative, code));
            }
        }
    }
    out.sort();
    out
}

const WEB: &[&str] = &["routes/", "http/", "ui/"];
const ENTRY_POINTS: &[&str] = &[
    "app.rs",
    "state.rs",
    "cli.rs",
    "cli_admin.rs",
    "main.rs",
    "lib.rs",
    "telemetry.rs",
];

fn is_domain(file: &str) -> bool {
    !WEB.iter().any(|w| file.starts_with(w)) && !ENTRY_POINTS.contains(&file)
}

fn offenders(
    files: &[(String, Vec<String>)],
    keep: impl Fn(&str) -> bool,
    needles: &[&str],
) -> Vec<String> {
    let mut found = Vec::new();
    for (file, code) in files.iter().filter(|(f, _)| keep(f)) {
        for (n, line) in code.iter().enumerate() {
            if let Some(needle) = needles.iter().find(|needle| line.contains(**needle)) {
                found.push(format!(
                    "{file} (code line {}): names `{needle}`: {line}",
                    n + 1
                ));
            }
        }
    }
    found
}

#[test]
fn domain_files_name_neither_the_web_state_nor_axum() {
    let files = sources(&crate_dir("latchkey").join("src"));
    assert!(files.len() > 50, "read the sources ({} files)", files.len());
    let found = offenders(&files, is_domain, &["AppState", "crate::state", "axum"]);
    assert!(
        found.is_empty(),
        "domain code reaches up into the web:\n{}",
        found.join("\n")
    );
}

#[test]
fn handlers_hold_no_sql() {
    let files = sources(&crate_dir("latchkey").join("src"));
    let found = offenders(&files, |f| f.starts_with("routes/"), &["sqlx"]);
    assert!(found.is_empty(), "SQL in handlers:\n{}", found.join("\n"));
}

/// Modules the grants are built on: they must not name the floor above.
const BELOW_GRANTS: &[&str] = &[
    "oauth/",
    "tokens/",
    "oidc/",
    "keys/",
    "login/",
    "cascade.rs",
    "session/",
    "identity/",
    "mfa/",
    "webauthn/",
    "revocation/",
    "policy.rs",
    "scope.rs",
    "core.rs",
    "store/",
    "crypto.rs",
    "clock.rs",
    "throttle.rs",
    "audit.rs",
    "config.rs",
];

#[test]
fn nothing_below_the_grants_names_them() {
    let files = sources(&crate_dir("latchkey").join("src"));
    let below = |f: &str| BELOW_GRANTS.iter().any(|b| f.starts_with(b));
    let found = offenders(&files, below, &["crate::grants", "grants::"]);
    assert!(
        found.is_empty(),
        "a floor below the grants reaches up to them:\n{}",
        found.join("\n")
    );
    assert!(
        files.iter().any(|(f, _)| f.starts_with("grants/")),
        "the grants have their own floor under src/grants/"
    );
}

#[test]
fn tokens_know_no_clients() {
    let files = sources(&crate_dir("latchkey").join("src"));
    let found = offenders(
        &files,
        |f| f.starts_with("tokens/"),
        &["crate::oauth", "oauth::"],
    );
    assert!(
        found.is_empty(),
        "tokens names the OAuth layer (take a TokenPolicy instead):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_verification_sdk_does_not_depend_on_the_server() {
    let sdk = crate_dir("latchkey-verify");
    let manifest = std::fs::read_to_string(sdk.join("Cargo.toml")).expect("SDK manifest");
    let deps = manifest
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter(|l| {
            l.trim_start().starts_with("latchkey ") || l.trim_start().starts_with("latchkey=")
        })
        .collect::<Vec<_>>();
    assert!(
        deps.is_empty(),
        "latchkey-verify depends on the server: {deps:?}"
    );
    let files = sources(&sdk.join("src"));
    assert!(!files.is_empty(), "read the SDK sources");
    let found = offenders(
        &files,
        |_| true,
        &["latchkey::", "crate::app", "crate::state"],
    );
    assert!(
        found.is_empty(),
        "the SDK names the server:\n{}",
        found.join("\n")
    );
}

/// The rule bites: a file that names the web state from the domain is found.
#[test]
fn the_layering_rule_finds_an_offender() {
    let files = vec![
        (
            "tokens/mod.rs".to_owned(),
            vec!["use crate::state::AppState;".to_owned()],
        ),
        (
            "routes/login.rs".to_owned(),
            vec!["use crate::state::AppState;".to_owned()],
        ),
    ];
    let found = offenders(&files, is_domain, &["AppState", "crate::state", "axum"]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("tokens/mod.rs"), "{found:?}");
}
