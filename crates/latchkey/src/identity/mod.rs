//! Identity: users, their roles and their passwords.
//!
//! Owns: the `users` and `user_roles` tables and every query on them, the
//! parsed types [`Email`], [`Role`], [`Password`], the password policy and
//! hashing, and bulk import of users with bcrypt hashes.
//!
//! Must not: know about HTTP, cookies or sessions (sessions reference users,
//! not the other way round). Disabling and deleting a user also end their
//! sessions: those transactions are composed in `cascade`, which calls the
//! `_tx` primitives here.

pub mod email;
pub mod import;
pub mod password;
pub mod role;

use sqlx::Row as _;

pub use email::{Email, EmailError};
pub use password::{Password, PasswordHasher, PasswordPolicy, PolicyViolations};
pub use role::{Role, RoleError};

use crate::clock::UnixTime;
use crate::store::{Pool, StoreError, Tx};

/// A user as stored. The password hash never leaves this module in a
/// serialized form.
#[derive(Debug, Clone, serde::Serialize)]
pub struct User {
    pub id: String,
    pub email: Email,
    pub display_name: String,
    pub roles: Vec<Role>,
    pub disabled: bool,
    pub email_verified: bool,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
    /// The password was handed out by someone else (the administrator
    /// `latchkey dev` prints): pages ask for a new one, or a passkey, first.
    pub must_change_password: bool,
    #[serde(skip)]
    pub password_hash: Option<String>,
}

impl User {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r.as_str() == role)
    }
}

/// Everything needed to create a user.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: Email,
    pub display_name: String,
    pub roles: Vec<Role>,
    /// A PHC/bcrypt hash, already computed (hashing is async and bounded).
    pub password_hash: Option<String>,
    pub email_verified: bool,
    /// The password was handed out (printed, or the source system asked for
    /// a change): the user must choose their own before anything else.
    /// Written in the same INSERT, so the account never exists without it.
    pub must_change_password: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("a user with email {0} already exists")]
    DuplicateEmail(Email),
    #[error("no user matches {0:?}")]
    UnknownUser(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for IdentityError {
    fn from(e: sqlx::Error) -> Self {
        IdentityError::Store(e.into())
    }
}

const USER_COLUMNS: &str =
    "id, email, display_name, password_hash, disabled, email_verified, created_at, updated_at, must_change_password";

/// [`USER_COLUMNS`] of the table aliased `u` (a join names the same columns).
const USER_COLUMNS_OF_U: &str = "u.id, u.email, u.display_name, u.password_hash, u.disabled, u.email_verified, u.created_at, u.updated_at, u.must_change_password";

fn user_from_row(row: &sqlx::any::AnyRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get("id")?,
        email: Email::from_stored(row.try_get("email")?),
        display_name: row.try_get("display_name")?,
        password_hash: row.try_get("password_hash")?,
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        email_verified: row.try_get::<i64, _>("email_verified")? != 0,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        must_change_password: row.try_get::<i64, _>("must_change_password")? != 0,
        roles: Vec::new(),
    })
}

/// Creates a user and their roles in one transaction.
pub async fn create_user(pool: &Pool, new: NewUser, now: UnixTime) -> Result<User, IdentityError> {
    let id = uuid::Uuid::now_v7().to_string();
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO users (id, email, display_name, password_hash, disabled, email_verified, created_at, updated_at, must_change_password)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)",
    )
    .bind(&id)
    .bind(new.email.as_str())
    .bind(&new.display_name)
    .bind(new.password_hash.clone())
    .bind(0_i64)
    .bind(i64::from(new.email_verified))
    .bind(now)
    .bind(i64::from(new.must_change_password))
    .execute(&mut *tx)
    .await;
    match inserted.map_err(StoreError::from) {
        Err(StoreError::Conflict) => return Err(IdentityError::DuplicateEmail(new.email)),
        Err(e) => return Err(e.into()),
        Ok(_) => {}
    }
    insert_roles(&mut tx, &id, &new.roles).await?;
    tx.commit().await?;
    let mut roles = new.roles;
    roles.sort();
    roles.dedup();
    Ok(User {
        id,
        email: new.email,
        display_name: new.display_name,
        roles,
        disabled: false,
        email_verified: new.email_verified,
        created_at: now,
        updated_at: now,
        must_change_password: new.must_change_password,
        password_hash: new.password_hash,
    })
}

async fn insert_roles(tx: &mut Tx<'_>, user_id: &str, roles: &[Role]) -> Result<(), sqlx::Error> {
    let mut seen = std::collections::BTreeSet::new();
    for role in roles.iter().filter(|r| seen.insert(r.as_str())) {
        sqlx::query("INSERT INTO user_roles (user_id, role) VALUES ($1, $2)")
            .bind(user_id)
            .bind(role.as_str())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

pub async fn find_by_email(pool: &Pool, email: &Email) -> Result<Option<User>, StoreError> {
    find_one(pool, "u.email = $1", email.as_str()).await
}

pub async fn find_by_id(pool: &Pool, id: &str) -> Result<Option<User>, StoreError> {
    find_one(pool, "u.id = $1", id).await
}

/// [`find_by_id`] inside the caller's transaction (which may hold the
/// pool's last connection).
pub async fn find_by_id_tx(tx: &mut Tx<'_>, id: &str) -> Result<Option<User>, StoreError> {
    find_one(&mut **tx, "u.id = $1", id).await
}

/// One user with their roles, in one statement (one round trip and one
/// consistent read: every token request reads a user's roles fresh).
async fn find_one<'c, E>(
    executor: E,
    condition: &str,
    value: &str,
) -> Result<Option<User>, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let rows = sqlx::query(&format!(
        "SELECT {USER_COLUMNS_OF_U}, r.role AS role FROM users u LEFT JOIN user_roles r ON r.user_id = u.id
         WHERE {condition} ORDER BY r.role"
    ))
    .bind(value)
    .fetch_all(executor)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut user = user_from_row(first)?;
    for row in &rows {
        if let Some(role) = row.try_get::<Option<String>, _>("role")? {
            user.roles.push(Role::from_stored(role));
        }
    }
    Ok(Some(user))
}

/// Finds a user by email or by id (what an operator types on the CLI).
pub async fn find(pool: &Pool, email_or_id: &str) -> Result<User, IdentityError> {
    let found = match Email::for_lookup(email_or_id) {
        Ok(email) => find_by_email(pool, &email).await?,
        Err(_) => find_by_id(pool, email_or_id.trim()).await?,
    };
    found.ok_or_else(|| IdentityError::UnknownUser(email_or_id.to_owned()))
}

pub async fn list(pool: &Pool) -> Result<Vec<User>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM users ORDER BY created_at, id"
    ))
    .fetch_all(pool)
    .await?;
    let mut users = rows
        .iter()
        .map(user_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let role_rows = sqlx::query("SELECT user_id, role FROM user_roles ORDER BY role")
        .fetch_all(pool)
        .await?;
    for row in role_rows {
        let user_id: String = row.try_get("user_id")?;
        if let Some(user) = users.iter_mut().find(|u| u.id == user_id) {
            user.roles.push(Role::from_stored(row.try_get("role")?));
        }
    }
    Ok(users)
}

pub async fn count(pool: &Pool) -> Result<i64, StoreError> {
    Ok(sqlx::query("SELECT COUNT(*) AS n FROM users")
        .fetch_one(pool)
        .await?
        .try_get("n")?)
}

/// Replaces a user's roles (one transaction).
pub async fn set_roles(
    pool: &Pool,
    user_id: &str,
    roles: &[Role],
    now: UnixTime,
) -> Result<(), IdentityError> {
    let mut tx = pool.begin().await?;
    let updated = sqlx::query("UPDATE users SET updated_at = $2 WHERE id = $1")
        .bind(user_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    if updated.rows_affected() == 0 {
        return Err(IdentityError::UnknownUser(user_id.to_owned()));
    }
    sqlx::query("DELETE FROM user_roles WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    insert_roles(&mut tx, user_id, roles).await?;
    tx.commit().await?;
    Ok(())
}

/// Sets the `disabled` flag inside a revoking transaction (`cascade`,
/// which also ends the sessions); `false` if there is no such user.
pub(crate) async fn set_disabled_tx(
    tx: &mut Tx<'_>,
    user_id: &str,
    disabled: bool,
    now: UnixTime,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query("UPDATE users SET disabled = $2, updated_at = $3 WHERE id = $1")
        .bind(user_id)
        .bind(i64::from(disabled))
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(updated.rows_affected() == 1)
}

/// Touches the `users` row — the first lock of every user-wide revoking
/// transaction (`cascade`) — and tells whether the user exists.
pub(crate) async fn touch_tx(
    tx: &mut Tx<'_>,
    user_id: &str,
    now: UnixTime,
) -> Result<bool, sqlx::Error> {
    let found = sqlx::query("UPDATE users SET updated_at = $2 WHERE id = $1")
        .bind(user_id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(found.rows_affected() == 1)
}

/// Takes the password away and marks the email verified (a federated
/// sign-in proved the address and the account never had: the "squatter"
/// rule, `cascade::clear_unverified_account_and_link`). The `users` row is
/// the first write of that transaction.
pub(crate) async fn clear_password_and_verify_tx(
    tx: &mut Tx<'_>,
    user_id: &str,
    now: UnixTime,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query("UPDATE users SET password_hash = NULL, email_verified = 1, must_change_password = 0, updated_at = $2 WHERE id = $1 AND email_verified = 0")
        .bind(user_id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(updated.rows_affected() == 1)
}

/// Deletes the user's roles and row (`cascade::delete_user` ends their
/// sessions first).
pub(crate) async fn delete_rows_tx(tx: &mut Tx<'_>, user_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM user_roles WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Marks (or clears) that the user must choose their own password — or add
/// a passkey — before using the pages.
pub async fn set_must_change_password(
    pool: &Pool,
    user_id: &str,
    must: bool,
    now: UnixTime,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE users SET must_change_password = $2, updated_at = $3 WHERE id = $1")
        .bind(user_id)
        .bind(i64::from(must))
        .bind(now)
        .execute(pool)
        .await?;
    Ok(())
}

/// A passkey replaced a handed-out password: the password is removed (it
/// was seen by someone else, so it must not keep signing in) and the mark
/// cleared, in one statement. Nothing happens unless the mark is still set.
pub async fn drop_handed_out_password(
    pool: &Pool,
    user_id: &str,
    now: UnixTime,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE users SET password_hash = NULL, must_change_password = 0, updated_at = $2
         WHERE id = $1 AND must_change_password = 1",
    )
    .bind(user_id)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// Replaces a password hash, but only if it is still the one that was
/// verified (a concurrent password change wins over a transparent rehash).
pub async fn replace_password_hash(
    pool: &Pool,
    user_id: &str,
    expected_old: Option<&str>,
    new_hash: &str,
    now: UnixTime,
) -> Result<bool, StoreError> {
    let updated = match expected_old {
        Some(old) => {
            sqlx::query("UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1 AND password_hash = $4")
                .bind(user_id)
                .bind(new_hash)
                .bind(now)
                .bind(old)
                .execute(pool)
                .await?
        }
        None => {
            sqlx::query("UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1")
                .bind(user_id)
                .bind(new_hash)
                .bind(now)
                .execute(pool)
                .await?
        }
    };
    Ok(updated.rows_affected() == 1)
}

/// What [`normalize_stored_emails`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EmailNormalization {
    /// Rows rewritten to their normal form.
    pub rewritten: u64,
    /// `(user id, stored address)` of rows left as they were because their
    /// normal form is another account's address (a look-alike pair written
    /// before the rule): an operator decides which one goes.
    pub lookalikes: Vec<(String, String)>,
}

/// The data step of migration 0012: rewrites every stored address to its
/// normal form ([`email::normal_form`], as [`Email::for_lookup`] computes
/// it), once — the migration queued the step in `pending_data_migrations`,
/// and this transaction deletes that row first, so of several instances
/// starting together exactly one does the work (the others wait for its
/// commit and find nothing to do). A row whose normal form belongs to
/// another account is left unchanged and reported (logged as a warning).
pub async fn normalize_stored_emails(pool: &Pool) -> Result<EmailNormalization, StoreError> {
    let mut tx = pool.begin().await?;
    let claimed =
        sqlx::query("DELETE FROM pending_data_migrations WHERE name = 'normalize_user_emails'")
            .execute(&mut *tx)
            .await?
            .rows_affected();
    let mut report = EmailNormalization::default();
    if claimed == 0 {
        return Ok(report);
    }
    let rows = sqlx::query("SELECT id, email FROM users ORDER BY created_at, id")
        .fetch_all(&mut *tx)
        .await?;
    let mut stored = std::collections::HashMap::new();
    let mut pending = Vec::new();
    for row in &rows {
        let id: String = row.try_get("id")?;
        let email: String = row.try_get("email")?;
        let normal = Email::for_lookup(&email)
            .map(|e| e.as_str().to_owned())
            .unwrap_or_else(|_| email.clone());
        if normal != email {
            pending.push((id.clone(), email.clone(), normal));
        }
        stored.insert(email, id);
    }
    for (id, email, normal) in pending {
        if stored.contains_key(&normal) {
            tracing::warn!(user_id = %id, email = %email, "this address is a look-alike of another account's and was left as it is; delete or rename one of the two (see docs/operations.md)");
            report.lookalikes.push((id, email));
            continue;
        }
        sqlx::query("UPDATE users SET email = $2 WHERE id = $1")
            .bind(&id)
            .bind(&normal)
            .execute(&mut *tx)
            .await?;
        stored.remove(&email);
        stored.insert(normal, id);
        report.rewritten += 1;
    }
    tx.commit().await?;
    if report.rewritten > 0 {
        tracing::info!(
            rewritten = report.rewritten,
            "stored email addresses normalized"
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_aliased_user_columns_are_the_user_columns() {
        let aliased: Vec<String> = super::USER_COLUMNS
            .split(", ")
            .map(|c| format!("u.{c}"))
            .collect();
        assert_eq!(super::USER_COLUMNS_OF_U, aliased.join(", "));
    }
}
