//! The documentation is tested like code: every configuration option, every
//! subcommand and flag, every environment variable, every link and every test
//! a document cites must exist, so the docs cannot drift from the program.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::CommandFactory as _;
use latchkey::config::{Config, Mode};
use latchkey::doctor::{self, Severity};

/// The repository root (two levels above this crate's manifest).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every Markdown document an operator or contributor reads.
fn markdown_documents() -> Vec<String> {
    let mut docs = vec!["README.md".to_owned(), "ARCHITECTURE.md".to_owned()];
    let dir = repo_root().join("docs");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md"))
        .collect();
    names.sort();
    docs.extend(names.into_iter().map(|name| format!("docs/{name}")));
    docs
}

/// The options that default to "not set" (`Option<_>` fields).
const OPTIONAL_OPTIONS: &[&str] = &[
    "master_key",
    "master_key_file",
    "redis_url",
    "tokens.hs256_secret",
    "webauthn.rp_id",
];

/// `section.key` (or `key`) of every option, with its default rendered as TOML.
/// Optional options have no default and are listed with `None`.
fn options_with_defaults() -> Vec<(String, Option<String>)> {
    let table = toml::Table::try_from(Config::default()).expect("the defaults serialize");
    let mut options = Vec::new();
    for (key, value) in &table {
        match value {
            toml::Value::Table(section) => {
                for (inner, value) in section {
                    assert!(
                        !value.is_table(),
                        "{key}.{inner}: the walk below handles one level of sections"
                    );
                    options.push((format!("{key}.{inner}"), Some(value.to_string())));
                }
            }
            value => options.push((key.clone(), Some(value.to_string()))),
        }
    }
    // Options without a default are absent from the serialized defaults.
    for optional in OPTIONAL_OPTIONS {
        // Guard against a stale list: the loader must know each one.
        let env = BTreeMap::from([(env_name(optional), "x".to_owned())]);
        if let Err(e) = Config::load(None, &env) {
            assert!(
                !e.to_string().contains("no such option"),
                "{optional} is not an option any more: {e}"
            );
        }
        options.push(((*optional).to_owned(), None));
    }
    assert!(
        options.len() > 30,
        "the walk found too few options: {options:?}"
    );
    options
}

/// The documented environment variable of an option.
fn env_name(path: &str) -> String {
    format!("LATCHKEY_{}", path.to_ascii_uppercase().replace('.', "__"))
}

#[test]
fn configuration_doc_lists_every_option() {
    let doc = read("docs/configuration.md");
    let mut missing = Vec::new();
    for (path, _) in options_with_defaults() {
        if !doc.contains(&format!("`{path}`")) {
            missing.push(format!("option `{path}`"));
        }
        let env = env_name(&path);
        if !doc.contains(&format!("`{env}`")) {
            missing.push(format!("variable `{env}`"));
        }
    }
    for alias in [
        "LATCHKEY_DATABASE_URL",
        "LATCHKEY_CONFIG",
        "LATCHKEY_DATA_DIR",
    ] {
        if !doc.contains(&format!("`{alias}`")) {
            missing.push(format!("variable `{alias}`"));
        }
    }
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not mention: {missing:#?}"
    );
}

#[test]
fn configuration_doc_states_every_default() {
    let doc = read("docs/configuration.md");
    let mut wrong = Vec::new();
    for (path, default) in options_with_defaults() {
        let Some(default) = default else { continue };
        // The option's row in its section's table (other tables may mention it too).
        let rows: Vec<&str> = doc
            .lines()
            .filter(|line| line.starts_with(&format!("| `{path}`")))
            .collect();
        if rows.is_empty() {
            wrong.push(format!("no table row starting with | `{path}`"));
        } else if !rows
            .iter()
            .any(|row| default_cell(row) == Some(format!("`{default}`")))
        {
            wrong.push(format!("`{path}`: no row states the default `{default}`"));
        }
    }
    assert!(wrong.is_empty(), "docs/configuration.md: {wrong:#?}");
}

/// The third cell of a table row `| option | type | default | ... |`, trimmed.
fn default_cell(row: &str) -> Option<String> {
    row.split('|').nth(3).map(|cell| cell.trim().to_owned())
}

/// The first fenced block of `language` after the first line starting with `intro`.
fn fenced_block_after(text: &str, intro: &str, language: &str) -> Option<String> {
    let mut lines = text.lines().skip_while(|line| !line.starts_with(intro));
    lines.next()?;
    let fence = format!("```{language}");
    let mut lines = lines.skip_while(|line| line.trim() != fence);
    lines.next()?;
    let body: Vec<&str> = lines.take_while(|line| line.trim() != "```").collect();
    Some(body.join("\n"))
}

#[test]
fn configuration_doc_example_passes_serve_and_doctor() {
    let doc = read("docs/configuration.md");
    let example = fenced_block_after(&doc, "## Example production", "toml")
        .expect("an example latchkey.toml after the '## Example production' heading");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("latchkey.toml");
    std::fs::write(&file, &example).expect("write example");
    // The example names a key file on the production host; point it at a real key.
    let key = dir.path().join("master.key");
    std::fs::write(
        &key,
        format!("{}\n", latchkey::crypto::MasterKey::generate().encode()),
    )
    .expect("write key");
    let env = BTreeMap::from([(
        "LATCHKEY_MASTER_KEY_FILE".to_owned(),
        key.display().to_string(),
    )]);
    let config = Config::load(Some(&file), &env)
        .unwrap_or_else(|e| panic!("the documented example does not load: {e}\n{example}"));
    config
        .check_for_serving(Mode::Serve)
        .unwrap_or_else(|e| panic!("`serve` refuses the documented example: {e}"));
    let findings = doctor::audit(&config, Mode::Serve);
    assert!(
        findings.iter().all(|f| f.severity < Severity::Medium),
        "doctor objects to the documented example: {findings:#?}"
    );
}

#[test]
fn the_shipped_configuration_trusts_no_forwarded_for_and_the_unit_is_hardened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("master.key");
    std::fs::write(
        &key,
        format!("{}\n", latchkey::crypto::MasterKey::generate().encode()),
    )
    .expect("write key");
    let env = BTreeMap::from([(
        "LATCHKEY_MASTER_KEY_FILE".to_owned(),
        key.display().to_string(),
    )]);
    let file = repo_root().join("packaging/debian/latchkey.toml");
    let config = Config::load(Some(&file), &env).expect("the shipped latchkey.toml loads");
    assert!(
        !config.http.trust_forwarded_for,
        "a fresh install must not let clients choose their address"
    );
    let unit = read("packaging/debian/latchkey.service");
    for line in [
        "PrivateUsers=true",
        "PrivateMounts=true",
        "SystemCallFilter=~@privileged @resources",
        "SystemCallErrorNumber=EPERM",
        "MemoryMax=2G",
        "TasksMax=1024",
        "ProtectSystem=strict",
        "NoNewPrivileges=true",
        // Migrations before start, unless latchkey.env turns them off.
        r#"ExecStartPre=/bin/sh -c 'if [ "$${LATCHKEY_DATABASE__MIGRATE_ON_START:-true}" != false ]; then exec /usr/bin/latchkey migrate; fi'"#,
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line}");
    }
}

#[test]
fn readme_test_command_is_what_ci_runs() {
    let readme = read("README.md");
    let run = fenced_block_after(&readme, "Run Latchkey locally", "sh")
        .expect("a ```sh block after the line 'Run Latchkey locally'");
    assert_eq!(run.trim(), "cargo run -p latchkey -- dev");
    let test = fenced_block_after(&readme, "Run the whole test suite", "sh")
        .expect("a ```sh block after the line 'Run the whole test suite'");
    let test = test.trim();
    assert_eq!(test.lines().count(), 1, "one command: {test:?}");

    // `.ci/run` may set options, change directory and export variables;
    // the one command it runs must be the README's.
    let ci = read(".ci/run");
    let commands: Vec<&str> = ci
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter(|line| {
            !["set ", "cd ", "export "]
                .iter()
                .any(|p| line.starts_with(p))
        })
        .map(|line| line.strip_prefix("exec ").unwrap_or(line))
        .collect();
    assert_eq!(
        commands,
        vec![test],
        ".ci/run must run exactly the README's test command"
    );
    let script = repo_root().join(test.trim_start_matches("./"));
    let meta = std::fs::metadata(&script)
        .unwrap_or_else(|e| panic!("{} does not exist: {e}", script.display()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert!(
            meta.permissions().mode() & 0o111 != 0,
            "{} is not executable",
            script.display()
        );
    }
    #[cfg(not(unix))]
    let _ = meta;
}

/// `latchkey <path>` of every subcommand, and the long flags of each.
fn subcommands(command: &clap::Command, prefix: &str, out: &mut Vec<(String, Vec<String>)>) {
    for sub in command.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        let path = format!("{prefix} {}", sub.get_name());
        let flags = sub
            .get_arguments()
            .filter_map(|arg| arg.get_long())
            .filter(|long| !matches!(*long, "help" | "version"))
            .map(|long| format!("--{long}"))
            .collect();
        out.push((path.clone(), flags));
        subcommands(sub, &path, out);
    }
}

#[test]
fn cli_doc_mentions_every_subcommand() {
    let doc = read("docs/cli.md");
    let mut all = Vec::new();
    subcommands(&latchkey::cli::Cli::command(), "latchkey", &mut all);
    let names: Vec<&str> = all.iter().map(|(path, _)| path.as_str()).collect();
    for expected in [
        "latchkey user create",
        "latchkey audit tail",
        "latchkey keys generate-master",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} not found in {names:?}"
        );
    }
    let mut missing = Vec::new();
    for (path, flags) in &all {
        if !doc.contains(path.as_str()) {
            missing.push(path.clone());
        }
        for flag in flags {
            // Flags are documented in the subcommand's own section.
            let section = doc
                .split("\n## ")
                .chain(doc.split("\n### "))
                .find(|s| s.starts_with(&format!("`{path}`")));
            if !section.is_some_and(|s| s.contains(flag.as_str())) {
                missing.push(format!("{path} {flag} (in the section headed `{path}`)"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/cli.md does not mention: {missing:#?}"
    );
}

/// `LATCHKEY_*` names in a text.
fn env_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("LATCHKEY_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].trim_end_matches('_').to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn docs_mention_only_real_environment_variables() {
    // Variables read by the CLI, the test harness or the scripts, not options.
    const NOT_OPTIONS: &[&str] = &["LATCHKEY_CONFIG", "LATCHKEY_DATA_DIR"];
    // Misspellings shown on purpose, as examples of what is refused.
    const COUNTER_EXAMPLES: &[&str] = &["LATCHKEY_SESION__IDLE"];
    let mut unknown = Vec::new();
    for doc in markdown_documents() {
        for name in env_names(&read(&doc)) {
            if NOT_OPTIONS.contains(&name.as_str())
                || COUNTER_EXAMPLES.contains(&name.as_str())
                || name.starts_with("LATCHKEY_TEST")
            {
                continue;
            }
            // The configuration loader is the oracle: it names unknown variables.
            let env = BTreeMap::from([(name.clone(), "x".to_owned())]);
            if let Err(e) = Config::load(None, &env) {
                if e.to_string().contains("no such option") {
                    unknown.push(format!("{doc}: {name}"));
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "not configuration options: {unknown:#?}"
    );
}

#[test]
fn docs_links_point_to_existing_files() {
    let mut broken = Vec::new();
    for doc in markdown_documents() {
        let text = read(&doc);
        let base = repo_root().join(&doc);
        let base = base.parent().expect("a document lives in a folder");
        for target in text.split("](").skip(1).filter_map(|s| s.split(')').next()) {
            let path = target.split('#').next().unwrap_or_default();
            if path.is_empty() || path.contains("://") || path.starts_with("mailto:") {
                continue;
            }
            if !base.join(path).exists() {
                broken.push(format!("{doc}: {target}"));
            }
        }
    }
    assert!(broken.is_empty(), "links to missing files: {broken:#?}");
}

/// Does `name` name a test defined in `source`: `fn name(`, `mod name {`, or
/// the first argument of a test-declaring macro?
fn defines_test(source: &str, name: &str) -> bool {
    // A plain test, or a module of variants (`mod name { fn text() ... }`).
    if source.contains(&format!("fn {name}(")) || source.contains(&format!("mod {name} {{")) {
        return true;
    }
    // The first argument of a test-declaring macro (`backend_test!`,
    // `passkey_test!`, `browser_test!`, `page_test!`).
    [
        "backend_test!(",
        "passkey_test!(",
        "browser_test!(",
        "page_test!(",
        "federation_test!(",
    ]
    .iter()
    .any(|mac| {
        source.split(mac).skip(1).any(|call| {
            call.trim_start()
                .split(|c: char| c == ',' || c.is_whitespace())
                .next()
                == Some(name)
        })
    })
}

/// Resolves a test reference: `file::name` for `tests/it/file.rs`, or
/// `module::path::tests::name` for a unit test in `src/module/path.rs`.
/// A `latchkey_verify::` prefix means the SDK crate, whose integration tests
/// are `tests/file.rs` (one binary per file).
fn test_exists(reference: &str) -> Result<(), String> {
    let mut crate_dir = Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf();
    let mut integration_dir = "tests/it";
    let mut segments: Vec<&str> = reference.split("::").collect();
    if segments.first() == Some(&"latchkey_verify") {
        crate_dir = crate_dir.join("../latchkey-verify");
        integration_dir = "tests";
        segments.remove(0);
    }
    if segments.len() < 2 {
        return Err(format!(
            "{reference}: not a `file::test` or `module::tests::test` name"
        ));
    }
    let name = segments.last().copied().unwrap_or_default();
    let files: Vec<PathBuf> = if let Some(at) = segments.iter().position(|s| *s == "tests") {
        let module = segments[..at].join("/");
        vec![
            crate_dir.join(format!("src/{module}.rs")),
            crate_dir.join(format!("src/{module}/mod.rs")),
        ]
    } else {
        vec![crate_dir.join(format!("{integration_dir}/{}.rs", segments[0]))]
    };
    let Some(file) = files.iter().find(|f| f.exists()) else {
        return Err(format!("{reference}: none of {files:?} exists"));
    };
    let source = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    if defines_test(&source, name) {
        Ok(())
    } else {
        Err(format!("{reference}: no test {name} in {}", file.display()))
    }
}

/// Backticked `a::b` references in the cells of the "Proved by" column of
/// `docs/security.md`, and on "Proved by:" lines of `ARCHITECTURE.md`.
fn cited_tests() -> Vec<(String, String)> {
    let mut cited = Vec::new();
    let security = read("docs/security.md");
    for line in security.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_end_matches('|').split('|').collect();
        let Some(last) = cells.last() else { continue };
        for reference in last.split('`').skip(1).step_by(2) {
            cited.push(("docs/security.md".to_owned(), reference.to_owned()));
        }
    }
    let architecture = read("ARCHITECTURE.md");
    for line in architecture.lines() {
        if let Some((_, rest)) = line.split_once("Proved by:") {
            for reference in rest.split('`').skip(1).step_by(2) {
                cited.push(("ARCHITECTURE.md".to_owned(), reference.to_owned()));
            }
        }
    }
    cited.retain(|(_, r)| r.contains("::"));
    cited
}

#[test]
fn docs_cite_only_tests_that_exist() {
    let cited = cited_tests();
    assert!(cited.len() > 20, "too few cited tests: {cited:?}");
    let missing: Vec<String> = cited
        .iter()
        .filter_map(|(doc, reference)| test_exists(reference).err().map(|e| format!("{doc}: {e}")))
        .collect();
    assert!(
        missing.is_empty(),
        "cited tests that do not exist: {missing:#?}"
    );
}

#[test]
fn architecture_names_every_source_module() {
    let architecture = read("ARCHITECTURE.md");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut missing = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)
            .expect("read src")
            .filter_map(Result::ok)
        {
            let path = entry.path();
            if path.is_dir() {
                if path.join("mod.rs").exists() {
                    stack.push(path);
                }
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let relative = path
                .strip_prefix(&src)
                .expect("under src")
                .to_string_lossy()
                .replace('\\', "/");
            let shown = relative.trim_end_matches("/mod.rs").trim_end_matches(".rs");
            if matches!(shown, "lib" | "main") {
                continue;
            }
            let module = shown.replace('/', "::");
            if !architecture.contains(&format!("`{module}`")) {
                missing.push(module);
            }
        }
    }
    missing.sort();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's code map does not name these modules: {missing:?}"
    );
}

#[test]
fn cli_doc_lists_every_doctor_check() {
    // Every finding id `doctor::audit` can report, as written in its source.
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/doctor.rs"))
            .expect("read src/doctor.rs");
    let ids: Vec<&str> = source
        .split("add(")
        .skip(1)
        .filter_map(|call| call.trim_start().strip_prefix('"')?.split('"').next())
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'))
        .collect();
    assert!(ids.len() >= 15, "too few doctor checks found: {ids:?}");
    let doc = read("docs/cli.md");
    let missing: Vec<&&str> = ids
        .iter()
        .filter(|id| !doc.contains(&format!("| `{id}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/cli.md's table of doctor checks lacks: {missing:?}"
    );
}

#[test]
fn operations_doc_lists_every_audit_event_kind() {
    // Every `EventKind::X => "name"` arm of `EventKind::as_str`.
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/audit.rs"))
            .expect("read src/audit.rs");
    let kinds: Vec<&str> = source
        .split("EventKind::")
        .skip(1)
        .filter_map(|arm| arm.split_once("=> \"")?.1.split('"').next())
        .collect();
    assert!(kinds.contains(&"login_failed"), "parsed: {kinds:?}");
    let doc = read("docs/operations.md");
    let missing: Vec<&&str> = kinds
        .iter()
        .filter(|kind| !doc.contains(&format!("`{kind}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/operations.md's table of audit events lacks: {missing:?}"
    );
}

/// `issue #N` / `issues #N and #M` in a line: readers cannot see the tracker.
fn issue_references(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let mut found = Vec::new();
    for (number, line) in lower.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("issue") {
            let tail = rest[at + "issue".len()..]
                .trim_start_matches('s')
                .trim_start();
            if tail
                .strip_prefix('#')
                .is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit()))
            {
                found.push(format!("line {}: {}", number + 1, line.trim()));
                break;
            }
            rest = &rest[at + "issue".len()..];
        }
    }
    found
}

#[test]
fn docs_do_not_point_at_issue_numbers() {
    // The check itself finds what it should.
    assert_eq!(issue_references("see Issue #12 and issues #3").len(), 1);
    assert!(issue_references("tokens::revoke_code_issue # 4, issued").is_empty());
    let mut found = Vec::new();
    for doc in markdown_documents() {
        for hit in issue_references(&read(&doc)) {
            found.push(format!("{doc}: {hit}"));
        }
    }
    assert!(
        found.is_empty(),
        "documents point at issue numbers readers cannot see: {found:#?}"
    );
}
