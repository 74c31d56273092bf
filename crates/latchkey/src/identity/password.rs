//! Passwords: the policy a new password must meet, and hashing.
//!
//! Hashes are Argon2id PHC strings. Imported bcrypt hashes (`$2a$`, `$2b$`,
//! `$2y$`) and PBKDF2 hashes (Django's `pbkdf2_sha256$…`, and the
//! `$pbkdf2-sha256$…` / `$pbkdf2-sha512$…` form Keycloak credentials are
//! converted into) verify too and are replaced by Argon2id at the next
//! sign-in, as are Argon2 hashes whose parameters differ from the configured
//! ones.
//!
//! Hashing is CPU- and memory-heavy, so it runs on the blocking thread pool
//! behind a semaphore (default: one permit per CPU): a flood of sign-ins
//! queues here instead of starving the async runtime or exhausting memory.
//! Argon2's working memory (19 MiB at the defaults) comes from a pool of
//! buffers owned by the hasher, one per permit, lent to the blocking thread
//! for the length of one computation: memory for hashing is bounded by the
//! hashing concurrency, however many blocking threads a burst passed through.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::config::PasswordConfig;

/// A password as typed by a user. No `Debug` content, no `Display`.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub fn new(text: impl Into<String>) -> Password {
        Password(text.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Why a new password was refused; every failed rule is listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("password rejected: {}", .0.join("; "))]
pub struct PolicyViolations(pub Vec<String>);

#[derive(Debug, Clone)]
pub struct PasswordPolicy {
    config: PasswordConfig,
}

fn common_passwords() -> &'static HashSet<&'static str> {
    static LIST: OnceLock<HashSet<&'static str>> = OnceLock::new();
    LIST.get_or_init(|| {
        include_str!("../../data/common-passwords.txt")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect()
    })
}

/// Number of entries in the shipped common-password list.
pub fn common_password_count() -> usize {
    common_passwords().len()
}

impl PasswordPolicy {
    pub fn new(config: &PasswordConfig) -> PasswordPolicy {
        PasswordPolicy {
            config: config.clone(),
        }
    }

    /// Checks a new password against length (in characters, not bytes), the
    /// common-password list, the email it belongs to, and the optional
    /// composition rules. Nothing is trimmed, truncated or case-folded.
    pub fn check(&self, password: &Password, email: Option<&str>) -> Result<(), PolicyViolations> {
        let text = password.expose();
        let length = text.chars().count();
        let c = &self.config;
        let mut failed = Vec::new();
        if length < c.min_length {
            failed.push(format!("use at least {} characters", c.min_length));
        }
        if length > c.max_length {
            failed.push(format!("use at most {} characters", c.max_length));
        }
        let lowered = text.to_lowercase();
        if c.reject_common && common_passwords().contains(lowered.as_str()) {
            failed.push("this password is among the most common ones; choose another".into());
        }
        if let Some(email) = email {
            let local = email.split('@').next().unwrap_or_default();
            if lowered == email.to_lowercase()
                || (local.len() >= 4 && lowered == local.to_lowercase())
            {
                failed.push("do not use your email address as your password".into());
            }
        }
        if c.require_lowercase && !text.chars().any(char::is_lowercase) {
            failed.push("include a lower-case letter".into());
        }
        if c.require_uppercase && !text.chars().any(char::is_uppercase) {
            failed.push("include an upper-case letter".into());
        }
        if c.require_digit && !text.chars().any(|ch| ch.is_ascii_digit()) {
            failed.push("include a digit".into());
        }
        if c.require_symbol
            && !text
                .chars()
                .any(|ch| !ch.is_alphanumeric() && !ch.is_whitespace())
        {
            failed.push("include a symbol".into());
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(PolicyViolations(failed))
        }
    }
}

/// Outcome of a password check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub matches: bool,
    /// The stored hash should be replaced (bcrypt, or old Argon2 parameters).
    pub needs_rehash: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("the password hashing pool is shut down")]
    Closed,
}

/// Argon2id hashing with bounded concurrency. Cheap to clone.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    permits: Arc<Semaphore>,
    dummy_hash: Arc<String>,
    memory: Arc<MemoryPool>,
}

/// Argon2 working memory, kept for reuse: at most one buffer per hashing
/// permit. Allocating it per hash made glibc map and unmap a fresh heap each
/// time and page-fault ~4,900 pages (up to half a hash's cost again), and a
/// buffer per blocking thread kept 19 MiB for every thread that ever hashed
/// (RSS grew by that much per thread after a burst and stayed); a buffer per
/// permit does neither.
struct MemoryPool {
    buffers: std::sync::Mutex<Vec<Vec<argon2::Block>>>,
    capacity: usize,
}

impl MemoryPool {
    /// Runs `f` with a pooled buffer lent to this thread (see [`ARGON2_MEMORY`]),
    /// then takes the buffer back, so no thread keeps one.
    fn lend<R>(&self, f: impl FnOnce() -> R) -> R {
        let buffer = self
            .buffers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default();
        ARGON2_MEMORY.with(|cell| *cell.borrow_mut() = buffer);
        let result = f();
        let buffer = ARGON2_MEMORY.with(|cell| std::mem::take(&mut *cell.borrow_mut()));
        let mut buffers = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
        // Callers without a permit (`*_blocking`) may briefly add one more.
        if buffers.len() < self.capacity {
            buffers.push(buffer);
        }
        result
    }

    /// Buffers held and the bytes they hold (tests and benchmarks).
    fn held(&self) -> (usize, usize) {
        let buffers = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = buffers
            .iter()
            .map(|b| b.capacity() * std::mem::size_of::<argon2::Block>())
            .sum();
        (buffers.len(), bytes)
    }
}

impl PasswordHasher {
    pub fn new(config: &PasswordConfig) -> Result<PasswordHasher, HashError> {
        let params = Params::new(
            config.argon2_memory_kib,
            config.argon2_iterations,
            config.argon2_parallelism,
            None,
        )
        .map_err(|e| HashError::Hash(e.to_string()))?;
        let permits = if config.max_concurrent_hashes == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        } else {
            config.max_concurrent_hashes
        };
        // A real hash with the live parameters, verified for unknown users so
        // that they cost the same as a wrong password.
        let memory = Arc::new(MemoryPool {
            buffers: std::sync::Mutex::new(Vec::with_capacity(permits)),
            capacity: permits,
        });
        let dummy = memory.lend(|| hash_with(&params, "latchkey-dummy-password"))?;
        Ok(PasswordHasher {
            params,
            permits: Arc::new(Semaphore::new(permits)),
            dummy_hash: Arc::new(dummy),
            memory,
        })
    }

    /// How many Argon2 buffers the hasher holds and their total size in
    /// bytes: at most one per hashing permit.
    pub fn memory_held(&self) -> (usize, usize) {
        self.memory.held()
    }

    fn argon2(params: &Params) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
    }

    /// Hashes a new password (Argon2id, random 128-bit salt, PHC string).
    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let permit = self.permit().await?;
        let params = self.params.clone();
        let text = password.clone();
        let memory = Arc::clone(&self.memory);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            memory.lend(|| hash_with(&params, text.expose()))
        })
        .await
        .map_err(|e| HashError::Hash(e.to_string()))?
    }

    /// A permit owned by the blocking task that hashes: if the request is
    /// cancelled (the client went away) while the thread still computes, the
    /// permit stays taken until the computation ends, so cancelled requests
    /// cannot run more hashes at once than the limit.
    async fn permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, HashError> {
        Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| HashError::Closed)
    }

    /// Verifies against a stored hash; `None` (unknown user, no password)
    /// verifies against a dummy hash so timing does not tell them apart.
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&str>,
    ) -> Result<Verification, HashError> {
        let permit = self.permit().await?;
        let params = self.params.clone();
        let dummy = Arc::clone(&self.dummy_hash);
        let text = password.clone();
        let (hash, real) = match stored {
            Some(h) => (h.to_owned(), true),
            None => (self.dummy_hash.as_str().to_owned(), false),
        };
        let memory = Arc::clone(&self.memory);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let v = memory.lend(|| verify_with(&params, &dummy, text.expose(), &hash));
            Verification {
                matches: v.matches && real,
                needs_rehash: v.needs_rehash && real,
            }
        })
        .await
        .map_err(|e| HashError::Hash(e.to_string()))
    }

    /// Synchronous verification without the semaphore (benchmarks compare it
    /// with the full sign-in path).
    pub fn verify_blocking(&self, password: &str, stored: &str) -> Verification {
        self.memory
            .lend(|| verify_with(&self.params, &self.dummy_hash, password, stored))
    }

    pub fn hash_blocking(&self, password: &str) -> Result<String, HashError> {
        self.memory.lend(|| hash_with(&self.params, password))
    }
}

/// Hashes `password` with `params` and a random 128-bit salt, computing in
/// the thread's lent memory ([`ARGON2_MEMORY`]; a fresh buffer when none was lent).
fn hash_with(params: &Params, password: &str) -> Result<String, HashError> {
    let failed = |e: &dyn std::fmt::Display| HashError::Hash(e.to_string());
    let salt_bytes = crate::crypto::random_bytes::<16>();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| failed(&e))?;
    let argon = PasswordHasher::argon2(params);
    let mut out = vec![0u8; params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)];
    ARGON2_MEMORY
        .with(|cell| {
            let mut blocks = cell.borrow_mut();
            blocks.resize(params.block_count(), argon2::Block::default());
            argon.hash_password_into_with_memory(
                password.as_bytes(),
                &salt_bytes,
                &mut out,
                &mut blocks[..],
            )
        })
        .map_err(|e| failed(&e))?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: argon2::password_hash::ParamsString::try_from(params).map_err(|e| failed(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(argon2::password_hash::Output::new(&out).map_err(|e| failed(&e))?),
    };
    Ok(hash.to_string())
}

/// Largest bcrypt cost an imported hash may carry. Each step doubles the
/// work: cost 12 (a common default) takes ~0.25 s on one core, 14 about a
/// second — the slowest real deployments use; 31 would take days, so a
/// hostile import row could pin a hashing thread per sign-in attempt.
pub const MAX_BCRYPT_COST: u32 = 14;

/// Largest Argon2 memory cost (KiB) a stored hash may ask for: 256 MiB,
/// four times the heaviest OWASP/RFC 9106 profile (64 MiB) and far above the
/// 19 MiB default. Each concurrent verification holds this much memory, so an
/// unbounded `m` in an imported row is an out-of-memory switch.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 262_144;
/// Largest Argon2 time cost (passes) a stored hash may ask for (RFC 9106's
/// profiles use 1 to 3; libsodium's "sensitive" preset 4).
pub const MAX_ARGON2_ITERATIONS: u32 = 16;
/// Largest Argon2 parallelism (lanes) a stored hash may ask for (RFC 9106's
/// profiles use 4; Latchkey's default is 1).
pub const MAX_ARGON2_PARALLELISM: u32 = 16;

/// Why an Argon2 PHC hash is refused: its costs exceed the bounds above
/// (checked before any work, at import and again at every verification).
fn argon2_cost_problem(parsed: &PasswordHash<'_>) -> Option<String> {
    let Ok(p) = Params::try_from(parsed) else {
        return Some("its Argon2 parameters are invalid".into());
    };
    if p.m_cost() > MAX_ARGON2_MEMORY_KIB
        || p.t_cost() > MAX_ARGON2_ITERATIONS
        || p.p_cost() > MAX_ARGON2_PARALLELISM
    {
        return Some(format!(
            "its Argon2 costs m={} t={} p={} exceed the bounds m<={MAX_ARGON2_MEMORY_KIB} t<={MAX_ARGON2_ITERATIONS} p<={MAX_ARGON2_PARALLELISM}",
            p.m_cost(),
            p.t_cost(),
            p.p_cost()
        ));
    }
    None
}

/// Why a bcrypt hash is refused: malformed, or a cost above
/// [`MAX_BCRYPT_COST`].
fn bcrypt_problem(stored: &str) -> Option<String> {
    match stored.parse::<bcrypt::HashParts>() {
        Err(_) => Some("it is not a well-formed bcrypt hash".into()),
        Ok(parts) if parts.get_cost() > MAX_BCRYPT_COST => Some(format!(
            "its bcrypt cost {} exceeds {MAX_BCRYPT_COST}",
            parts.get_cost()
        )),
        Ok(_) => None,
    }
}

/// `None` if `stored` is a hash this server verifies (Argon2 PHC, bcrypt,
/// PBKDF2) within the cost bounds; otherwise why not. `user import` refuses
/// such a record with this reason; verification refuses it without work.
pub fn stored_hash_problem(stored: &str) -> Option<String> {
    if is_bcrypt(stored) {
        return bcrypt_problem(stored);
    }
    if stored.starts_with("pbkdf2_") || stored.starts_with("$pbkdf2-") {
        return match parse_pbkdf2(stored) {
            Some(_) => None,
            None => Some(format!(
                "it is not a PBKDF2 hash within bounds (Django pbkdf2_sha256$…, $pbkdf2-sha256$ or $pbkdf2-sha512$, {MIN_PBKDF2_ITERATIONS} to {MAX_PBKDF2_ITERATIONS} iterations, a 32- or 64-byte SHA-256 or 64-byte SHA-512 key)"
            )),
        };
    }
    if !stored.starts_with("$argon2") {
        return Some(
            "it is not an Argon2 PHC string, a bcrypt hash ($2a$/$2b$/$2y$) or a PBKDF2 hash"
                .into(),
        );
    }
    match PasswordHash::new(stored) {
        Ok(parsed) => argon2_cost_problem(&parsed),
        Err(e) => Some(format!("it is not a valid Argon2 PHC string: {e}")),
    }
}

/// Is `stored` an imported bcrypt hash?
pub fn is_bcrypt(stored: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"]
        .iter()
        .any(|p| stored.starts_with(p))
}

/// Most PBKDF2 work an imported hash may ask for, in iterations × output
/// blocks: each sign-in pays it, so a hostile import must not turn one
/// sign-in into minutes of CPU. (Django 5.1 uses 870,000 iterations of
/// SHA-256, one block; Keycloak 210,000 of SHA-512, one block.)
pub const MAX_PBKDF2_ITERATIONS: u32 = 2_000_000;

/// Fewest PBKDF2 iterations an imported hash may have: RFC 8018 §4.2's
/// floor (Django never shipped fewer than 10,000, Keycloak 20,000). Fewer
/// would make the hash all but free to brute-force from a leaked export,
/// and a sign-in against it measurably faster than against Argon2.
pub const MIN_PBKDF2_ITERATIONS: u32 = 1_000;

/// An imported PBKDF2 hash, parsed.
pub struct Pbkdf2Hash {
    algorithm: ring::pbkdf2::Algorithm,
    iterations: std::num::NonZeroU32,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

/// Parses Django's `pbkdf2_sha256$ITERATIONS$SALT$BASE64` (the salt used as
/// its UTF-8 bytes) or the PHC form `$pbkdf2-sha256$i=ITERATIONS$SALT$HASH`
/// (`-sha512` too; salt and hash in base64, padding optional). `None` for
/// anything else, including out-of-range iterations and odd lengths.
pub fn parse_pbkdf2(stored: &str) -> Option<Pbkdf2Hash> {
    use base64::Engine as _;
    let b64 = |text: &str| {
        base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(text.trim_end_matches('='))
            .ok()
    };
    let (algorithm, iterations, salt, hash) =
        if let Some(rest) = stored.strip_prefix("pbkdf2_sha256$") {
            let mut parts = rest.split('$');
            let (iterations, salt, hash) = (parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some() || salt.is_empty() {
                return None;
            }
            (
                ring::pbkdf2::PBKDF2_HMAC_SHA256,
                iterations,
                salt.as_bytes().to_vec(),
                b64(hash)?,
            )
        } else if let Some(rest) = stored.strip_prefix("$pbkdf2-") {
            let mut parts = rest.split('$');
            let algorithm = match parts.next()? {
                "sha256" => ring::pbkdf2::PBKDF2_HMAC_SHA256,
                "sha512" => ring::pbkdf2::PBKDF2_HMAC_SHA512,
                _ => return None,
            };
            let iterations = parts.next()?.strip_prefix("i=")?;
            let (salt, hash) = (b64(parts.next()?)?, b64(parts.next()?)?);
            if parts.next().is_some() {
                return None;
            }
            (algorithm, iterations, salt, hash)
        } else {
            return None;
        };
    let iterations: u32 = iterations.parse().ok()?;
    // The derived key is what real exporters write: SHA-256 gives 32 bytes
    // (Django) or 64 (Keycloak's default key size), SHA-512 64. A longer key
    // multiplies the work — PBKDF2 runs every iteration once per output
    // block — so the bound is on iterations × blocks, not iterations alone.
    let (block, lengths): (usize, &[usize]) = if algorithm == ring::pbkdf2::PBKDF2_HMAC_SHA512 {
        (64, &[64])
    } else {
        (32, &[32, 64])
    };
    let blocks = hash.len().div_ceil(block) as u64;
    if !lengths.contains(&hash.len())
        || iterations < MIN_PBKDF2_ITERATIONS
        || u64::from(iterations) * blocks > u64::from(MAX_PBKDF2_ITERATIONS)
        || salt.is_empty()
        || salt.len() > 256
    {
        return None;
    }
    Some(Pbkdf2Hash {
        algorithm,
        iterations: std::num::NonZeroU32::new(iterations)?,
        salt,
        hash,
    })
}

impl Pbkdf2Hash {
    /// The PHC form stored for a hash imported from Keycloak.
    pub fn phc(algorithm: &str, iterations: u32, salt: &[u8], hash: &[u8]) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
        format!(
            "$pbkdf2-{algorithm}$i={iterations}${}${}",
            b64.encode(salt),
            b64.encode(hash)
        )
    }

    /// Does `password` derive the stored hash? (ring compares in constant time.)
    fn matches(&self, password: &str) -> bool {
        ring::pbkdf2::verify(
            self.algorithm,
            self.iterations,
            &self.salt,
            password.as_bytes(),
            &self.hash,
        )
        .is_ok()
    }
}

thread_local! {
    /// Argon2's working memory (19 MiB at the defaults) while a computation
    /// runs: lent by the hasher's [`MemoryPool`] and taken back after, so
    /// the thread keeps nothing (docs/performance.md).
    static ARGON2_MEMORY: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Verifies an Argon2 PHC hash computing into the thread's reusable memory.
/// `None` when the hash has a shape this path does not handle (the caller
/// then uses the crate's own `verify_password`).
fn verify_reusing_memory(parsed: &PasswordHash<'_>, password: &[u8]) -> Option<bool> {
    let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
    let version = match parsed.version {
        Some(v) => Version::try_from(v).ok()?,
        None => Version::V0x13,
    };
    let expected = parsed.hash?;
    let mut salt_buf = [0u8; 64];
    let salt = parsed.salt?.decode_b64(&mut salt_buf).ok()?;
    let stored = Params::try_from(parsed).ok()?;
    let params = Params::new(
        stored.m_cost(),
        stored.t_cost(),
        stored.p_cost(),
        Some(expected.len()),
    )
    .ok()?;
    let argon = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    ARGON2_MEMORY.with(|cell| {
        let mut blocks = cell.borrow_mut();
        // Every block is written in the first pass before it is read, so
        // the previous hash's contents never influence this one.
        blocks.resize(params.block_count(), argon2::Block::default());
        argon
            .hash_password_into_with_memory(password, salt, &mut out, &mut blocks[..])
            .ok()
    })?;
    Some(crate::crypto::constant_time_eq(&out, expected.as_bytes()))
}

/// Verifies `password` against `stored`. Whatever does not end in an Argon2
/// computation with the live parameters — a wrong password on an imported
/// bcrypt or PBKDF2 hash, a hash out of bounds or unreadable — also verifies
/// against `dummy` (an Argon2id hash with the live parameters), so a failed
/// sign-in never costs less than one for an unknown email: timing alone does
/// not tell that the address belongs to an imported account.
fn verify_with(params: &Params, dummy: &str, password: &str, stored: &str) -> Verification {
    let v = verify_stored(params, password, stored);
    if !v.matches && !is_live_argon2(params, stored) {
        if let Ok(parsed) = PasswordHash::new(dummy) {
            let _ = verify_argon2(params, &parsed, password.as_bytes());
        }
    }
    v
}

/// Is `stored` an Argon2 hash verified at (at least) the live cost?
fn is_live_argon2(params: &Params, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|parsed| {
        argon2_cost_problem(&parsed).is_none()
            && Params::try_from(&parsed)
                .is_ok_and(|p| p.m_cost() >= params.m_cost() && p.t_cost() >= params.t_cost())
    })
}

#[cfg(test)]
thread_local! {
    /// Argon2 computations on this thread (tests count them, not time them).
    static ARGON2_RUNS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// One Argon2 verification of a parsed PHC hash.
fn verify_argon2(params: &Params, parsed: &PasswordHash<'_>, password: &[u8]) -> bool {
    #[cfg(test)]
    ARGON2_RUNS.with(|c| c.set(c.get() + 1));
    // The thread's reused buffer only grows to the configured memory cost:
    // a heavier stored hash (up to the bound) gets memory of its own, freed
    // afterwards, instead of pinning 256 MiB on every blocking thread.
    let heavier = Params::try_from(parsed).is_ok_and(|p| p.m_cost() > params.m_cost());
    let reused = if heavier {
        None
    } else {
        verify_reusing_memory(parsed, password)
    };
    match reused {
        Some(m) => m,
        None => Argon2::default().verify_password(password, parsed).is_ok(),
    }
}

fn verify_stored(params: &Params, password: &str, stored: &str) -> Verification {
    if is_bcrypt(stored) {
        if bcrypt_problem(stored).is_some() {
            return Verification {
                matches: false,
                needs_rehash: false,
            };
        }
        // bcrypt only reads the first 72 bytes; a longer password would be
        // silently truncated, so it can only match through its first 72 bytes
        // — which is what the importing app accepted too. We rehash it anyway.
        let matches = bcrypt::verify(password, stored).unwrap_or(false);
        return Verification {
            matches,
            needs_rehash: true,
        };
    }
    if let Some(pbkdf2) = parse_pbkdf2(stored) {
        // Imported from Django or Keycloak: always replaced by Argon2id.
        return Verification {
            matches: pbkdf2.matches(password),
            needs_rehash: true,
        };
    }
    let Ok(parsed) = PasswordHash::new(stored) else {
        return Verification {
            matches: false,
            needs_rehash: false,
        };
    };
    // A hash asking for more memory or time than any real deployment uses
    // (written into the database by hand or by an older import) is refused
    // without computing it.
    if argon2_cost_problem(&parsed).is_some() {
        return Verification {
            matches: false,
            needs_rehash: false,
        };
    }
    let matches = verify_argon2(params, &parsed, password.as_bytes());
    let current = parsed.algorithm.as_str() == "argon2id"
        && Params::try_from(&parsed)
            .map(|p| {
                p.m_cost() == params.m_cost()
                    && p.t_cost() == params.t_cost()
                    && p.p_cost() == params.p_cost()
            })
            .unwrap_or(false);
    Verification {
        matches,
        needs_rehash: !current,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast_config() -> PasswordConfig {
        PasswordConfig {
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            ..PasswordConfig::default()
        }
    }

    /// A Django-format hash of "lètmein" with the salt "seasalt" at 1,000
    /// iterations, computed with Python's hashlib (an implementation
    /// independent of ring): `hashlib.pbkdf2_hmac("sha256", …)`.
    const DJANGO: &str = "pbkdf2_sha256$1000$seasalt$JgZryXe2Ga8ysg6XbzkLpTdyPQrHqsinbL9BnnhgX4A=";

    #[test]
    fn verifies_pbkdf2_hashes_from_django_and_keycloak_and_asks_for_a_rehash() {
        let hasher = PasswordHasher::new(&fast_config()).expect("hasher");
        let django = hasher.verify_blocking("lètmein", DJANGO);
        assert!(django.matches && django.needs_rehash);
        assert!(!hasher.verify_blocking("letmein", DJANGO).matches);
        // RFC 7914 §11: PBKDF2-HMAC-SHA-256 of "Password" / "NaCl", 80,000
        // iterations, 64 bytes.
        let sha256 = Pbkdf2Hash::phc(
            "sha256",
            80_000,
            b"NaCl",
            &hex::decode("4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56a1d425a1225833549adb841b51c9b3176a272bdebba1d078478f62b397f33c8d").expect("hex"),
        );
        let v = hasher.verify_blocking("Password", &sha256);
        assert!(v.matches && v.needs_rehash);
        assert!(!hasher.verify_blocking("password", &sha256).matches);
        // PBKDF2-HMAC-SHA-512 of "password" / "salt", 1,000 iterations, 64
        // bytes (computed with Python's hashlib).
        let sha512 = Pbkdf2Hash::phc(
            "sha512",
            1_000,
            b"salt",
            &hex::decode("afe6c5530785b6cc6b1c6453384731bd5ee432ee549fd42fb6695779ad8a1c5bf59de69c48f774efc4007d5298f9033c0241d5ab69305e7b64eceeb8d834cfec").expect("hex"),
        );
        assert!(hasher.verify_blocking("password", &sha512).matches);
        assert!(!hasher.verify_blocking("passwore", &sha512).matches);
    }

    #[test]
    fn a_wrong_password_on_any_hash_costs_at_least_one_argon2_verification() {
        // Counted, not timed: every failed verification computes Argon2 with
        // the live parameters at least once, as an unknown email does.
        let hasher = PasswordHasher::new(&fast_config()).expect("hasher");
        let argon2 = hasher.hash_blocking("s3cret-pass").expect("hash");
        let bcrypt = bcrypt::hash_with_result("s3cret-pass", 4)
            .expect("bcrypt")
            .format_for_version(bcrypt::Version::TwoB);
        let runs = || ARGON2_RUNS.with(std::cell::Cell::get);
        for stored in [
            argon2.as_str(),
            bcrypt.as_str(),
            DJANGO,
            "$2b$31$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",
            "not a hash",
            "",
            hasher.dummy_hash.as_str(),
        ] {
            let before = runs();
            assert!(!hasher.verify_blocking("wrong password", stored).matches);
            assert_eq!(runs() - before, 1, "{stored}");
        }
        // A right password on an imported hash needs no decoy: the sign-in
        // goes on to rehash it with Argon2id anyway.
        let before = runs();
        assert!(hasher.verify_blocking("lètmein", DJANGO).matches);
        assert_eq!(runs(), before);
        // Fewer than 1,000 PBKDF2 iterations are refused.
        let weak = "pbkdf2_sha256$999$seasalt$JgZryXe2Ga8ysg6XbzkLpTdyPQrHqsinbL9BnnhgX4A=";
        assert!(parse_pbkdf2(weak).is_none());
        assert!(stored_hash_problem(weak).is_some_and(|p| p.contains("1000 to")));
    }

    #[test]
    fn refuses_malformed_and_hostile_pbkdf2_hashes() {
        for bad in [
            "pbkdf2_sha256$1000$seasalt",
            "pbkdf2_sha256$0$seasalt$GPhSiwgG2Fpe09A1dPf/PJc+2XJ/V+F/vvQfZgSAWNE=",
            "pbkdf2_sha256$99999999$seasalt$GPhSiwgG2Fpe09A1dPf/PJc+2XJ/V+F/vvQfZgSAWNE=",
            "pbkdf2_sha256$1000$$GPhSiwgG2Fpe09A1dPf/PJc+2XJ/V+F/vvQfZgSAWNE=",
            "pbkdf2_sha256$1000$seasalt$not base64!",
            "pbkdf2_sha256$1000$seasalt$AAAA",
            "pbkdf2_sha256$x$seasalt$GPhSiwgG2Fpe09A1dPf/PJc+2XJ/V+F/vvQfZgSAWNE=",
            "$pbkdf2-md5$i=1$c2FsdA$GPhSiwgG2Fpe09A1dPf/PJc+2XJ/V+F/vvQfZgSAWNE",
            "$pbkdf2-sha256$1000$c2FsdA$GPhSiwgG2Fpe09A1dPf/PJc+2XJ/V+F/vvQfZgSAWNE",
            "$pbkdf2-sha256$i=1000$c2FsdA$GPhSiwgG2Fpe09A1dPf/PJc+2XJ/V+F/vvQfZgSAWNE$x",
        ] {
            assert!(parse_pbkdf2(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn bcrypt_and_argon2_hashes_beyond_the_cost_bounds_are_refused_without_work() {
        let hasher = PasswordHasher::new(&fast_config()).expect("hasher");
        // bcrypt: a real cost-4 hash verifies; the same hash claiming cost 31
        // (days of work) or 15 is refused at once, whatever the password.
        let real = bcrypt::hash_with_result("hunter2-hunter2", 4)
            .expect("bcrypt")
            .format_for_version(bcrypt::Version::TwoB);
        assert_eq!(stored_hash_problem(&real), None);
        assert!(hasher.verify_blocking("hunter2-hunter2", &real).matches);
        for cost in ["31", "15"] {
            let hostile = format!("$2b${cost}${}", &real[7..]);
            let problem = stored_hash_problem(&hostile).expect("refused");
            assert!(
                problem.contains(&format!("bcrypt cost {cost}")),
                "{problem}"
            );
            assert_eq!(
                hasher.verify_blocking("hunter2-hunter2", &hostile),
                Verification {
                    matches: false,
                    needs_rehash: false
                }
            );
        }
        let at_bound = format!("$2b$14${}", &real[7..]);
        assert_eq!(stored_hash_problem(&at_bound), None, "cost 14 is accepted");
        // Argon2: the bounds (m 256 MiB, t 16, p 16) are accepted; one step
        // beyond any of them is refused with the reason, and verification
        // does no work (4 GiB or t=2^32-1 would not return here).
        let salt = "c2FsdHNhbHRzYWx0c2FsdA";
        let hash = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let phc =
            |m: u32, t: u32, p: u32| format!("$argon2id$v=19$m={m},t={t},p={p}${salt}${hash}");
        assert_eq!(stored_hash_problem(&phc(262_144, 16, 16)), None);
        assert_eq!(stored_hash_problem(&phc(19_456, 2, 1)), None);
        for hostile in [
            phc(262_145, 1, 1),
            phc(4_194_304, 1, 1),
            phc(64, 17, 1),
            phc(64, u32::MAX, 1),
            phc(256, 1, 17),
        ] {
            let problem = stored_hash_problem(&hostile).expect("refused");
            assert!(
                problem.contains("exceed the bounds"),
                "{hostile}: {problem}"
            );
            assert_eq!(
                hasher.verify_blocking("x", &hostile),
                Verification {
                    matches: false,
                    needs_rehash: false
                },
                "{hostile}"
            );
        }
        // A hash heavier than the live parameters (but within bounds) still
        // verifies, through memory of its own.
        let heavy = PasswordHasher::new(&PasswordConfig {
            argon2_memory_kib: 1024,
            argon2_iterations: 1,
            ..PasswordConfig::default()
        })
        .expect("hasher")
        .hash_blocking("s3cret-pass")
        .expect("hash");
        let v = hasher.verify_blocking("s3cret-pass", &heavy);
        assert!(v.matches && v.needs_rehash);
        assert!(!hasher.verify_blocking("s3cret-pasS", &heavy).matches);
    }

    #[test]
    fn pbkdf2_work_counts_iterations_times_key_blocks_and_only_real_key_lengths() {
        let salt = b"salt";
        let phc = |alg: &str, iterations: u32, len: usize| {
            Pbkdf2Hash::phc(alg, iterations, salt, &vec![7u8; len])
        };
        // Real exporters' shapes are accepted at the bound.
        assert!(parse_pbkdf2(&phc("sha256", MAX_PBKDF2_ITERATIONS, 32)).is_some());
        assert!(parse_pbkdf2(&phc("sha256", MAX_PBKDF2_ITERATIONS / 2, 64)).is_some());
        assert!(parse_pbkdf2(&phc("sha512", MAX_PBKDF2_ITERATIONS, 64)).is_some());
        // A 128-byte SHA-256 key is four blocks: four times the iterations.
        for (alg, iterations, len) in [
            ("sha256", MAX_PBKDF2_ITERATIONS, 64),
            ("sha256", MAX_PBKDF2_ITERATIONS / 2 + 1, 64),
            ("sha256", 1_000, 128),
            ("sha256", 1_000, 96),
            ("sha256", 1_000, 16),
            ("sha256", 1_000, 33),
            ("sha512", 1_000, 32),
            ("sha512", 1_000, 128),
        ] {
            let hash = phc(alg, iterations, len);
            assert!(
                parse_pbkdf2(&hash).is_none(),
                "{alg} i={iterations} len={len}"
            );
            assert!(stored_hash_problem(&hash).is_some(), "{hash}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_verification_keeps_its_permit_until_the_hash_is_done() {
        // One permit, a hash that takes a moment (8 MiB, 3 passes).
        let hasher = PasswordHasher::new(&PasswordConfig {
            argon2_memory_kib: 8 * 1024,
            argon2_iterations: 3,
            max_concurrent_hashes: 1,
            ..PasswordConfig::default()
        })
        .expect("hasher");
        let stored = hasher.hash_blocking("s3cret-pass").expect("hash");
        let verifying = {
            let hasher = hasher.clone();
            let stored = stored.clone();
            tokio::spawn(async move {
                hasher
                    .verify(&Password::new("s3cret-pass"), Some(&stored))
                    .await
            })
        };
        // Wait until the blocking thread holds the permit, then cancel the
        // request that asked for it.
        while hasher.permits.available_permits() != 0 {
            tokio::task::yield_now().await;
        }
        verifying.abort();
        assert!(verifying.await.expect_err("aborted").is_cancelled());
        assert_eq!(
            hasher.permits.available_permits(),
            0,
            "the thread still hashes, so its permit is still taken"
        );
        // It comes back once the hash is done, and the next one proceeds.
        let v = hasher
            .verify(&Password::new("s3cret-pass"), Some(&stored))
            .await
            .expect("verify");
        assert!(v.matches);
        assert_eq!(hasher.permits.available_permits(), 1);
    }

    #[test]
    fn ships_at_least_ten_thousand_common_passwords() {
        assert!(
            common_password_count() >= 10_000,
            "{}",
            common_password_count()
        );
    }

    #[test]
    fn policy_lists_every_failed_rule() {
        let policy = PasswordPolicy::new(&PasswordConfig {
            require_digit: true,
            ..PasswordConfig::default()
        });
        let err = policy
            .check(&Password::new("Passwor"), None)
            .expect_err("too short");
        assert!(err.0.iter().any(|m| m.contains("at least 8")), "{err}");
        assert!(err.0.iter().any(|m| m.contains("digit")), "{err}");
        let err = policy
            .check(&Password::new("PASSWORD1"), None)
            .expect_err("common, case-insensitively");
        assert!(err.0.iter().any(|m| m.contains("common")), "{err}");
    }

    #[test]
    fn policy_allows_long_passphrases_without_composition_rules() {
        let policy = PasswordPolicy::new(&PasswordConfig::default());
        policy
            .check(&Password::new("correct horse battery staple"), None)
            .expect("passphrase ok");
        policy
            .check(&Password::new("x7".repeat(64)), None)
            .expect("128 chars ok");
        assert!(policy.check(&Password::new("x".repeat(129)), None).is_err());
        // Length counts characters, not bytes.
        policy
            .check(&Password::new("ñandú-ßüö"), None)
            .expect("9 characters");
        assert!(policy
            .check(&Password::new("ada@example.com"), Some("ada@example.com"))
            .is_err());
    }

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let hasher = PasswordHasher::new(&fast_config()).expect("hasher");
        let hash = hasher
            .hash(&Password::new("s3cret-pass"))
            .await
            .expect("hash");
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        let ok = hasher
            .verify(&Password::new("s3cret-pass"), Some(&hash))
            .await
            .expect("verify");
        assert_eq!(
            ok,
            Verification {
                matches: true,
                needs_rehash: false
            }
        );
        let bad = hasher
            .verify(&Password::new("S3cret-pass"), Some(&hash))
            .await
            .expect("verify");
        assert!(!bad.matches, "no case folding");
        let none = hasher
            .verify(&Password::new("latchkey-dummy-password"), None)
            .await
            .expect("verify");
        assert!(!none.matches, "the dummy hash never grants access");
    }

    #[tokio::test]
    async fn changed_parameters_ask_for_a_rehash() {
        let old = PasswordHasher::new(&fast_config()).expect("hasher");
        let hash = old.hash(&Password::new("s3cret-pass")).await.expect("hash");
        let new = PasswordHasher::new(&PasswordConfig {
            argon2_memory_kib: 128,
            argon2_iterations: 1,
            ..PasswordConfig::default()
        })
        .expect("hasher");
        let v = new
            .verify(&Password::new("s3cret-pass"), Some(&hash))
            .await
            .expect("verify");
        assert_eq!(
            v,
            Verification {
                matches: true,
                needs_rehash: true
            }
        );
    }

    #[test]
    fn verifies_bcrypt_hashes_from_node_apps() {
        let hasher = PasswordHasher::new(&fast_config()).expect("hasher");
        // The OpenBSD/John-the-Ripper test vector, as an Express app would store it.
        let vector = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";
        assert_eq!(
            hasher.verify_blocking("U*U", vector),
            Verification {
                matches: true,
                needs_rehash: true
            }
        );
        assert!(!hasher.verify_blocking("U*V", vector).matches);
        // The same hash in each of the three prefixes Node libraries emit.
        let b = bcrypt::hash_with_result("hunter2-hunter2", 4).expect("bcrypt");
        for version in [
            bcrypt::Version::TwoA,
            bcrypt::Version::TwoB,
            bcrypt::Version::TwoY,
        ] {
            let stored = b.format_for_version(version);
            let v = hasher.verify_blocking("hunter2-hunter2", &stored);
            assert_eq!(
                v,
                Verification {
                    matches: true,
                    needs_rehash: true
                },
                "{stored}"
            );
            assert!(!hasher.verify_blocking("hunter2-hunter3", &stored).matches);
        }
    }

    #[test]
    fn reusing_memory_agrees_with_the_crate_across_parameters() {
        // Hashes made with different costs verify (and fail) identically
        // through the reused buffer, including after a larger one was used.
        for (m, t) in [(256, 1), (64, 2), (512, 3), (64, 1)] {
            let config = PasswordConfig {
                argon2_memory_kib: m,
                argon2_iterations: t,
                ..PasswordConfig::default()
            };
            let hasher = PasswordHasher::new(&config).expect("hasher");
            let hash = hasher.hash_blocking("s3cret-pass").expect("hash");
            let parsed = PasswordHash::new(&hash).expect("phc");
            assert_eq!(
                verify_reusing_memory(&parsed, b"s3cret-pass"),
                Some(true),
                "m={m} t={t}"
            );
            assert_eq!(
                verify_reusing_memory(&parsed, b"s3cret-pasS"),
                Some(false),
                "m={m} t={t}"
            );
            assert!(Argon2::default()
                .verify_password(b"s3cret-pass", &parsed)
                .is_ok());
        }
    }

    #[test]
    fn garbage_hash_never_matches() {
        let hasher = PasswordHasher::new(&fast_config()).expect("hasher");
        assert!(!hasher.verify_blocking("x", "not a hash").matches);
        assert!(!hasher.verify_blocking("", "").matches);
    }

    /// A burst of hashes and verifications across many blocking threads
    /// leaves at most one Argon2 buffer per permit, each the configured
    /// memory cost, and no thread keeps one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn argon2_memory_is_bounded_by_the_hashing_concurrency() {
        let config = PasswordConfig {
            argon2_memory_kib: 1024,
            argon2_iterations: 1,
            max_concurrent_hashes: 2,
            ..PasswordConfig::default()
        };
        let hasher = PasswordHasher::new(&config).expect("hasher");
        let stored = hasher
            .hash(&Password::new("correct horse"))
            .await
            .expect("hash");
        for _round in 0..3 {
            let tasks: Vec<_> = (0..32)
                .map(|i| {
                    let (hasher, stored) = (hasher.clone(), stored.clone());
                    tokio::spawn(async move {
                        if i % 4 == 0 {
                            hasher
                                .hash(&Password::new("another one"))
                                .await
                                .map(|_| true)
                        } else {
                            let guess = if i % 2 == 0 { "correct horse" } else { "wrong" };
                            hasher
                                .verify(&Password::new(guess), Some(&stored))
                                .await
                                .map(|v| v.matches == (i % 2 == 0))
                        }
                    })
                })
                .collect();
            for task in tasks {
                assert!(task.await.expect("task").expect("hashing"), "right answer");
            }
            let (buffers, bytes) = hasher.memory_held();
            assert!(
                (1..=2).contains(&buffers),
                "{buffers} buffers for 2 permits"
            );
            assert!(bytes <= 2 * 1024 * 1024, "{bytes} bytes");
        }
        // The thread that ran a computation keeps no buffer.
        let kept = tokio::task::spawn_blocking(move || {
            hasher.verify_blocking("wrong", &stored);
            ARGON2_MEMORY.with(|cell| cell.borrow().capacity())
        })
        .await
        .expect("blocking");
        assert_eq!(kept, 0);
    }
}
