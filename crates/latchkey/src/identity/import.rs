//! `latchkey user import`: bring users over from another system, password
//! hashes included.
//!
//! Accepts a JSON array or a CSV file with a header row. Fields: `email`
//! (required), `name`, `password_hash` (Argon2 PHC, bcrypt `$2a$/$2b$/$2y$`,
//! Django `pbkdf2_sha256$…` or PHC `$pbkdf2-sha256$…`/`$pbkdf2-sha512$…`),
//! `roles` (JSON array, or `;`-separated in CSV), `email_verified`.
//! Also a Keycloak realm or users export (`{"users": [...]}`), whose
//! `pbkdf2-sha256`/`pbkdf2-sha512` password credentials become PHC strings.
//! Every record is checked before anything is written, and all users are
//! inserted in one transaction: a bad file imports nothing.

use serde::Deserialize;

use super::{Email, NewUser, Role};
use crate::clock::UnixTime;
use crate::store::{Pool, StoreError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRecord {
    email: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    password_hash: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    email_verified: bool,
    /// Set by a Keycloak export's `UPDATE_PASSWORD` required action (not a
    /// field of the JSON or CSV formats).
    #[serde(skip)]
    must_change_password: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the file is not valid {format}: {reason}")]
    Malformed {
        format: &'static str,
        reason: String,
    },
    #[error("record {record}: {reason}")]
    Record { record: usize, reason: String },
    #[error("record {record}: a user with email {email} already exists")]
    Duplicate { record: usize, email: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Largest file `import` reads (a guard against feeding it the wrong file).
pub const MAX_IMPORT_BYTES: usize = 64 * 1024 * 1024;

/// Parses a JSON array or CSV text into users, rejecting the whole file on
/// the first problem (with the record number).
pub fn parse(text: &str, format: ImportFormat) -> Result<Vec<NewUser>, ImportError> {
    let records: Vec<JsonRecord> = match format {
        ImportFormat::Json => serde_json::from_str(text).map_err(|e| ImportError::Malformed {
            format: "JSON",
            reason: e.to_string(),
        })?,
        ImportFormat::Csv => parse_csv(text)?,
        ImportFormat::Keycloak => parse_keycloak(text)?,
    };
    let mut seen = std::collections::HashSet::new();
    let mut users = Vec::with_capacity(records.len());
    for (i, r) in records.into_iter().enumerate() {
        let record = i + 1;
        let email = Email::parse(&r.email).map_err(|e| ImportError::Record {
            record,
            reason: format!("email: {e}"),
        })?;
        if !seen.insert(email.clone()) {
            return Err(ImportError::Record {
                record,
                reason: format!("{email} appears twice in the file"),
            });
        }
        if let Some(h) = r.password_hash.as_ref().filter(|h| !h.is_empty()) {
            if let Some(problem) = super::password::stored_hash_problem(h) {
                return Err(ImportError::Record {
                    record,
                    reason: format!("password_hash is refused: {problem}"),
                });
            }
        }
        let roles = r
            .roles
            .iter()
            .map(|role| Role::parse(role.trim()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ImportError::Record {
                record,
                reason: e.to_string(),
            })?;
        users.push(NewUser {
            email,
            display_name: r.name.unwrap_or_default().chars().take(200).collect(),
            roles,
            password_hash: r.password_hash.filter(|h| !h.is_empty()),
            email_verified: r.email_verified,
            must_change_password: r.must_change_password,
        });
    }
    Ok(users)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportFormat {
    Json,
    Csv,
    /// A Keycloak realm or users export (`kc.sh export`): `{"users": [...]}`.
    Keycloak,
}

impl ImportFormat {
    /// The format of `text` named by `--format`, or guessed from the file
    /// extension; a `.json` file holding an object with `users` is a Keycloak
    /// export.
    pub fn choose(
        given: Option<&str>,
        extension: Option<&str>,
        text: &str,
    ) -> Option<ImportFormat> {
        match given.or(extension)? {
            "csv" => Some(ImportFormat::Csv),
            "keycloak" => Some(ImportFormat::Keycloak),
            "json" if given.is_none() && looks_like_keycloak(text) => Some(ImportFormat::Keycloak),
            "json" => Some(ImportFormat::Json),
            _ => None,
        }
    }
}

fn looks_like_keycloak(text: &str) -> bool {
    text.trim_start().starts_with('{')
        && serde_json::from_str::<serde_json::Value>(text)
            .is_ok_and(|v| v.get("users").is_some_and(serde_json::Value::is_array))
}

/// A user of a Keycloak export: only the fields Latchkey keeps.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeycloakUser {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    email_verified: bool,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
    #[serde(default)]
    credentials: Vec<KeycloakCredential>,
    /// An OTP authenticator is configured (older exports say only this).
    #[serde(default)]
    totp: bool,
    #[serde(default)]
    required_actions: Vec<String>,
}

fn enabled_by_default() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeycloakCredential {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    secret_data: Option<String>,
    #[serde(default)]
    credential_data: Option<String>,
}

#[derive(Debug, Deserialize)]
struct KeycloakSecret {
    value: String,
    salt: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeycloakCredentialData {
    hash_iterations: u32,
    algorithm: String,
}

/// A Keycloak export's users as import records. Roles are not carried over
/// (grant them with `user set-role`); a disabled user is refused rather than
/// imported enabled.
fn parse_keycloak(text: &str) -> Result<Vec<JsonRecord>, ImportError> {
    #[derive(Deserialize)]
    struct Export {
        users: Vec<KeycloakUser>,
    }
    let export: Export = serde_json::from_str(text).map_err(|e| ImportError::Malformed {
        format: "Keycloak export",
        reason: e.to_string(),
    })?;
    export
        .users
        .into_iter()
        .enumerate()
        .map(|(i, user)| {
            let record = i + 1;
            let fail = |reason: String| ImportError::Record { record, reason };
            let who = user.username.clone().unwrap_or_default();
            if !user.enabled {
                return Err(fail(format!("user {who:?} is disabled in Keycloak: enable it there or leave it out of the file")));
            }
            let email = user
                .email
                .filter(|e| !e.trim().is_empty())
                .ok_or_else(|| fail(format!("user {who:?} has no email address")))?;
            // A second factor cannot be carried over (OTP secrets and
            // WebAuthn keys are bound to Keycloak): importing the user
            // without it would quietly weaken their sign-in.
            if let Some(other) = user.credentials.iter().find(|c| c.kind != "password") {
                return Err(fail(format!("user {who:?} has a {:?} credential (a second factor) in Keycloak, which cannot be imported: remove it there (the user sets up two-step sign-in again in Latchkey) or leave the user out of the file", other.kind)));
            }
            if user.totp {
                return Err(fail(format!("user {who:?} has an authenticator app (totp) in Keycloak, which cannot be imported: remove it there (the user sets up two-step sign-in again in Latchkey) or leave the user out of the file")));
            }
            // Required actions Latchkey has an equivalent for are kept; any
            // other is refused rather than dropped.
            let mut must_change_password = false;
            let mut email_verified = user.email_verified;
            for action in &user.required_actions {
                match action.as_str() {
                    "UPDATE_PASSWORD" => must_change_password = true,
                    "VERIFY_EMAIL" => email_verified = false,
                    other => return Err(fail(format!("user {who:?} has the required action {other:?} in Keycloak, which Latchkey cannot carry over (UPDATE_PASSWORD and VERIFY_EMAIL can): complete or remove it there, or leave the user out of the file"))),
                }
            }
            let mut passwords = user.credentials.iter().filter(|c| c.kind == "password");
            let password_hash = match (passwords.next(), passwords.next()) {
                (None, _) => None,
                (Some(_), Some(_)) => return Err(fail("more than one password credential".into())),
                (Some(c), None) => Some(keycloak_hash(c).map_err(fail)?),
            };
            let name = [user.first_name, user.last_name]
                .into_iter()
                .flatten()
                .filter(|n| !n.trim().is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            Ok(JsonRecord {
                email,
                name: Some(name),
                password_hash,
                roles: Vec::new(),
                email_verified,
                must_change_password,
            })
        })
        .collect()
}

/// A Keycloak password credential as a `$pbkdf2-sha256$…`/`$pbkdf2-sha512$…`
/// PHC string.
fn keycloak_hash(credential: &KeycloakCredential) -> Result<String, String> {
    use base64::Engine as _;
    let secret: KeycloakSecret = serde_json::from_str(
        credential.secret_data.as_deref().unwrap_or_default(),
    )
    .map_err(|e| format!("password credential: secretData is not {{\"value\", \"salt\"}}: {e}"))?;
    let data: KeycloakCredentialData = serde_json::from_str(
        credential.credential_data.as_deref().unwrap_or_default(),
    )
    .map_err(|e| {
        format!(
            "password credential: credentialData is not {{\"hashIterations\", \"algorithm\"}}: {e}"
        )
    })?;
    let algorithm = match data.algorithm.as_str() {
        "pbkdf2-sha256" => "sha256",
        "pbkdf2-sha512" => "sha512",
        other => return Err(format!("password credential: algorithm {other:?} is not supported (pbkdf2-sha256 and pbkdf2-sha512 are)")),
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let salt = b64
        .decode(&secret.salt)
        .map_err(|e| format!("password credential: salt: {e}"))?;
    let value = b64
        .decode(&secret.value)
        .map_err(|e| format!("password credential: value: {e}"))?;
    Ok(super::password::Pbkdf2Hash::phc(
        algorithm,
        data.hash_iterations,
        &salt,
        &value,
    ))
}

/// A deliberately small CSV reader: header row, comma-separated, fields may
/// be double-quoted with `""` escapes. (No crate needed for this subset.)
fn parse_csv(text: &str) -> Result<Vec<JsonRecord>, ImportError> {
    let malformed = |reason: String| ImportError::Malformed {
        format: "CSV",
        reason,
    };
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = split_csv_line(lines.next().ok_or_else(|| malformed("empty file".into()))?)
        .map_err(malformed)?;
    for column in &header {
        if !matches!(
            column.as_str(),
            "email" | "name" | "password_hash" | "roles" | "email_verified"
        ) {
            return Err(malformed(format!("unknown column {column:?}")));
        }
    }
    if !header.iter().any(|c| c == "email") {
        return Err(malformed("the header has no email column".into()));
    }
    let mut records = Vec::new();
    for (i, line) in lines.enumerate() {
        let fields = split_csv_line(line).map_err(|r| ImportError::Record {
            record: i + 1,
            reason: r,
        })?;
        if fields.len() != header.len() {
            return Err(ImportError::Record {
                record: i + 1,
                reason: format!("{} fields, the header has {}", fields.len(), header.len()),
            });
        }
        let get = |name: &str| {
            header
                .iter()
                .position(|c| c == name)
                .map(|p| fields[p].clone())
        };
        records.push(JsonRecord {
            email: get("email").unwrap_or_default(),
            name: get("name"),
            password_hash: get("password_hash"),
            roles: get("roles")
                .map(|r| {
                    r.split(';')
                        .filter(|s| !s.trim().is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            email_verified: matches!(
                get("email_verified").as_deref().map(str::trim),
                Some("true" | "1" | "yes")
            ),
            must_change_password: false,
        });
    }
    Ok(records)
}

fn split_csv_line(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', false) if field.is_empty() && !was_quoted => {
                quoted = true;
                was_quoted = true;
            }
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            ('"', true) => quoted = false,
            (',', false) => {
                fields.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            (c, _) => field.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    fields.push(field);
    Ok(fields)
}

/// Inserts every user in one transaction; any duplicate aborts the whole import.
pub async fn import(
    pool: &Pool,
    users: &[NewUser],
    now: UnixTime,
) -> Result<Vec<String>, ImportError> {
    let mut tx = pool.begin().await.map_err(StoreError::from)?;
    let mut ids = Vec::with_capacity(users.len());
    for (i, user) in users.iter().enumerate() {
        let id = uuid::Uuid::now_v7().to_string();
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, display_name, password_hash, disabled, email_verified, created_at, updated_at, must_change_password)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)",
        )
        .bind(&id)
        .bind(user.email.as_str())
        .bind(&user.display_name)
        .bind(user.password_hash.clone())
        .bind(0_i64)
        .bind(i64::from(user.email_verified))
        .bind(now)
        .bind(i64::from(user.must_change_password))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from);
        match inserted {
            Err(StoreError::Conflict) => {
                return Err(ImportError::Duplicate {
                    record: i + 1,
                    email: user.email.to_string(),
                })
            }
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        super::insert_roles(&mut tx, &id, &user.roles)
            .await
            .map_err(StoreError::from)?;
        ids.push(id);
    }
    tx.commit().await.map_err(StoreError::from)?;
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BCRYPT: &str = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";

    #[test]
    fn parses_json_and_csv_alike() {
        let json = format!(
            r#"[{{"email":"Ada@Example.com","name":"Ada","password_hash":"{BCRYPT}","roles":["admin"]}}]"#
        );
        let a = parse(&json, ImportFormat::Json).expect("json");
        let csv = format!("email,name,password_hash,roles\nAda@Example.com,Ada,{BCRYPT},admin\n");
        let b = parse(&csv, ImportFormat::Csv).expect("csv");
        assert_eq!(a[0].email.as_str(), "ada@example.com");
        assert_eq!(b[0].email, a[0].email);
        assert_eq!(b[0].password_hash, a[0].password_hash);
        assert_eq!(b[0].roles, a[0].roles);
    }

    #[test]
    fn rejects_bad_files_with_the_record_number() {
        let err = parse(
            r#"[{"email":"a@x.com"},{"email":"nope"}]"#,
            ImportFormat::Json,
        )
        .expect_err("bad email");
        assert!(err.to_string().starts_with("record 2"), "{err}");
        let err = parse(
            r#"[{"email":"a@x.com"},{"email":"A@x.com"}]"#,
            ImportFormat::Json,
        )
        .expect_err("dup");
        assert!(err.to_string().contains("twice"), "{err}");
        let err = parse(
            r#"[{"email":"a@x.com","password_hash":"md5:abc"}]"#,
            ImportFormat::Json,
        )
        .expect_err("hash");
        assert!(err.to_string().contains("password_hash"), "{err}");
        let err = parse(r#"[{"email":"a@x.com","pasword":"x"}]"#, ImportFormat::Json)
            .expect_err("unknown field");
        assert!(err.to_string().contains("pasword"), "{err}");
        assert!(parse("email,colour\na@x.com,red\n", ImportFormat::Csv).is_err());
        assert!(parse("email,name\na@x.com\n", ImportFormat::Csv).is_err());
        assert!(parse("email,name\n\"a@x.com,x\n", ImportFormat::Csv).is_err());
    }

    #[test]
    fn imports_refuse_hashes_beyond_the_cost_bounds_with_the_record_number() {
        let salt = "c2FsdHNhbHRzYWx0c2FsdA";
        let out = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        for (hash, reason) in [
            (BCRYPT.replace("$05$", "$31$"), "bcrypt cost 31 exceeds 14"),
            (
                format!("$argon2id$v=19$m=4194304,t=1,p=1${salt}${out}"),
                "m=4194304",
            ),
            (
                format!("$argon2id$v=19$m=65536,t=100,p=1${salt}${out}"),
                "t=100",
            ),
            (
                format!("$argon2id$v=19$m=65536,t=1,p=64${salt}${out}"),
                "p=64",
            ),
        ] {
            let json = serde_json::json!([
                { "email": "ok@example.com", "password_hash": BCRYPT },
                { "email": "x@example.com", "password_hash": hash },
            ])
            .to_string();
            let err = parse(&json, ImportFormat::Json).expect_err("refused");
            let text = err.to_string();
            assert!(
                text.starts_with("record 2: password_hash is refused"),
                "{text}"
            );
            assert!(text.contains(reason), "{text}");
        }
        // At the bounds, real-world costs import.
        let heavy = serde_json::json!([
            { "email": "a@example.com", "password_hash": BCRYPT.replace("$05$", "$14$") },
            { "email": "b@example.com", "password_hash": format!("$argon2id$v=19$m=262144,t=16,p=16${salt}${out}") },
        ])
        .to_string();
        assert_eq!(
            parse(&heavy, ImportFormat::Json).expect("accepted").len(),
            2
        );
    }

    #[test]
    fn an_empty_password_hash_cell_means_no_password() {
        let users =
            parse("email,password_hash\nada@example.com,\n", ImportFormat::Csv).expect("valid");
        assert_eq!(users[0].password_hash, None);
    }

    #[test]
    fn keycloak_second_factors_and_unknown_required_actions_are_refused_and_update_password_is_kept(
    ) {
        let password = serde_json::json!({
            "type": "password",
            "secretData": serde_json::json!({ "value": "Izwy2CmT/n6iOrXxS+n8xQotJ1Awqj23Ybq7OKLf6SvXLXECsP8+VbCi+ev6fNg/EGIS9WMKCoYb67z7UFl7+g==", "salt": "XxwqnX47TGqNDh8qO0xdbg==" }).to_string(),
            "credentialData": serde_json::json!({ "hashIterations": 27500, "algorithm": "pbkdf2-sha256" }).to_string(),
        });
        let export = |user: serde_json::Value| {
            serde_json::json!({ "users": [
                { "username": "ok", "email": "ok@example.com", "credentials": [password.clone()] },
                user,
            ] })
            .to_string()
        };
        for (user, needle) in [
            (
                serde_json::json!({ "username": "o", "email": "o@example.com", "credentials": [password.clone(), { "type": "otp", "secretData": "{}", "credentialData": "{}" }] }),
                "user \"o\" has a \"otp\" credential (a second factor)",
            ),
            (
                serde_json::json!({ "username": "w", "email": "w@example.com", "credentials": [{ "type": "webauthn" }, password.clone()] }),
                "\"webauthn\" credential",
            ),
            (
                serde_json::json!({ "username": "p", "email": "p@example.com", "credentials": [{ "type": "webauthn-passwordless" }] }),
                "\"webauthn-passwordless\" credential",
            ),
            (
                serde_json::json!({ "username": "t", "email": "t@example.com", "totp": true, "credentials": [password.clone()] }),
                "authenticator app (totp)",
            ),
            (
                serde_json::json!({ "username": "c", "email": "c@example.com", "requiredActions": ["CONFIGURE_TOTP"], "credentials": [password.clone()] }),
                "required action \"CONFIGURE_TOTP\"",
            ),
            (
                serde_json::json!({ "username": "u", "email": "u@example.com", "requiredActions": ["UPDATE_PASSWORD", "TERMS_AND_CONDITIONS"] }),
                "required action \"TERMS_AND_CONDITIONS\"",
            ),
        ] {
            let err = parse(&export(user), ImportFormat::Keycloak).expect_err(needle);
            let text = err.to_string();
            assert!(text.starts_with("record 2: "), "{text}");
            assert!(text.contains(needle), "{needle}: {text}");
        }
        // The mapped ones: UPDATE_PASSWORD asks for a new password at the
        // first sign-in; VERIFY_EMAIL leaves the address unverified.
        let users = parse(
            &export(serde_json::json!({ "username": "u", "email": "u@example.com", "emailVerified": true, "totp": false, "requiredActions": ["UPDATE_PASSWORD", "VERIFY_EMAIL"], "credentials": [password.clone()] })),
            ImportFormat::Keycloak,
        )
        .expect("mapped actions");
        assert!(!users[0].must_change_password && !users[0].email_verified);
        assert!(users[1].must_change_password);
        assert!(!users[1].email_verified);
        // The plain JSON format has no such field.
        assert!(parse(
            r#"[{"email":"a@x.com","must_change_password":true}]"#,
            ImportFormat::Json
        )
        .is_err());
    }

    #[test]
    fn keycloak_exports_become_pbkdf2_records() {
        let credential = |algorithm: &str, iterations: u32| {
            serde_json::json!({
                "type": "password",
                "secretData": serde_json::json!({ "value": "Izwy2CmT/n6iOrXxS+n8xQotJ1Awqj23Ybq7OKLf6SvXLXECsP8+VbCi+ev6fNg/EGIS9WMKCoYb67z7UFl7+g==", "salt": "XxwqnX47TGqNDh8qO0xdbg==" }).to_string(),
                "credentialData": serde_json::json!({ "hashIterations": iterations, "algorithm": algorithm }).to_string(),
            })
        };
        let export = |users: serde_json::Value| {
            serde_json::json!({ "realm": "acme", "users": users }).to_string()
        };
        let text = export(serde_json::json!([
            { "username": "k", "email": "K@Example.com", "firstName": "Kay", "lastName": "Ell", "emailVerified": true, "credentials": [credential("pbkdf2-sha256", 27500)] },
            { "username": "m", "email": "m@example.com", "credentials": [] }
        ]));
        assert_eq!(
            ImportFormat::choose(None, Some("json"), &text),
            Some(ImportFormat::Keycloak)
        );
        assert_eq!(
            ImportFormat::choose(None, Some("json"), "[]"),
            Some(ImportFormat::Json)
        );
        let users = parse(&text, ImportFormat::Keycloak).expect("valid export");
        assert_eq!(users[0].email.as_str(), "k@example.com");
        assert_eq!(users[0].display_name, "Kay Ell");
        assert!(users[0].email_verified);
        let hash = users[0].password_hash.as_deref().expect("a hash");
        assert!(hash.starts_with("$pbkdf2-sha256$i=27500$"), "{hash}");
        assert!(crate::identity::password::parse_pbkdf2(hash).is_some());
        assert_eq!(users[1].password_hash, None);

        for (bad, needle) in [
            (
                export(
                    serde_json::json!([{ "username": "x", "email": "x@example.com", "credentials": [credential("argon2", 3)] }]),
                ),
                "algorithm \"argon2\"",
            ),
            (
                export(
                    serde_json::json!([{ "username": "x", "email": "x@example.com", "credentials": [credential("pbkdf2-sha256", 90_000_000)] }]),
                ),
                "iterations",
            ),
            (
                export(serde_json::json!([{ "username": "x", "credentials": [] }])),
                "no email",
            ),
            (
                export(
                    serde_json::json!([{ "username": "x", "email": "x@example.com", "enabled": false }]),
                ),
                "disabled",
            ),
            (
                export(
                    serde_json::json!([{ "username": "x", "email": "x@example.com", "credentials": [credential("pbkdf2-sha256", 1), credential("pbkdf2-sha256", 1)] }]),
                ),
                "more than one",
            ),
            (
                export(
                    serde_json::json!([{ "username": "x", "email": "x@example.com", "credentials": [{ "type": "password", "secretData": "nope" }] }]),
                ),
                "secretData",
            ),
            ("{\"users\": 3}".to_owned(), "Keycloak export"),
        ] {
            let err = parse(&bad, ImportFormat::Keycloak).expect_err(needle);
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn csv_quotes() {
        assert_eq!(
            split_csv_line(r#"a,"b,c","d""e""#).expect("ok"),
            vec!["a", "b,c", "d\"e"]
        );
    }
}
