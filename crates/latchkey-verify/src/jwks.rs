//! The JWKS cache: the issuer's public keys, held where the request path
//! reads them without a lock, and refreshed in the background.
//!
//! - The key set lives in an [`ArcSwap`]: a request loads the current
//!   `Arc<LoadedKeys>` (no lock, no contention), a refresh swaps a new one in.
//! - A background task refreshes at the JWKS response's `Cache-Control:
//!   max-age`, clamped to [30 s, 1 day] (5 minutes without one). A failed
//!   refresh keeps the old keys, logs a warning and retries with backoff:
//!   while the issuer is briefly down, tokens keep verifying.
//! - A token whose `kid` is unknown triggers one refetch (the issuer may have
//!   rotated), but **at most one per `jwks_min_refetch_interval`**: requests
//!   arriving while that fetch runs wait for it, and during the interval
//!   after it an unknown `kid` fails at once. Forged `kid`s therefore cannot
//!   make an API hammer the issuer.
//! - Keys whose algorithm is not allowed are dropped at load time (their
//!   `kid` is remembered, so a token using one is refused without a refetch).
//!
//! Must not: verify tokens (that is `jose`), or know about requests.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::jose::{Algorithm, JwkSet, KeySet, VerifyingKey};

/// Refresh interval without a `Cache-Control: max-age`.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
/// Shortest background refresh interval, whatever the issuer says.
pub const MIN_REFRESH: Duration = Duration::from_secs(30);
/// Longest background refresh interval, whatever the issuer says.
pub const MAX_REFRESH: Duration = Duration::from_secs(86_400);
/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = crate::body::MAX_DOCUMENT_BYTES;
/// Time limit of one JWKS request.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The keys in use.
#[derive(Debug, Default)]
pub(crate) struct LoadedKeys {
    pub set: KeySet,
    /// Every key the issuer publishes, whatever `algorithms` allows: the
    /// revocation feed's events are signed with the issuer's current key,
    /// which need not be one this API accepts access tokens with.
    pub published: KeySet,
    /// `kid`s published by the issuer with an algorithm we do not allow.
    pub disallowed: HashSet<String>,
}

/// Why the JWKS could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JwksError {
    /// The request failed (connection, timeout, TLS).
    #[error("cannot fetch the JWKS: {0}")]
    Unreachable(String),
    /// The issuer answered with an error status.
    #[error("the JWKS endpoint answered {0}")]
    Status(u16),
    /// The document is not a JWK Set.
    #[error("the JWKS is not a valid JWK Set: {0}")]
    Invalid(String),
}

#[derive(Debug, Default, Clone)]
pub(crate) struct Status {
    pub last_refreshed: Option<i64>,
    pub last_error: Option<String>,
}

pub(crate) struct KeyCache {
    uri: Option<String>,
    allowed: Vec<Algorithm>,
    /// Keys configured locally (HS256), present in every loaded set.
    local: Vec<VerifyingKey>,
    current: ArcSwap<LoadedKeys>,
    min_refetch: Duration,
    fetch_lock: tokio::sync::Mutex<()>,
    /// Completed fetch attempts (single-flight bookkeeping).
    attempts: AtomicU64,
    /// Requests made to the JWKS endpoint (health).
    requests: AtomicU64,
    last_unknown_kid_fetch: Mutex<Option<Instant>>,
    status: Mutex<Status>,
}

/// `max-age` of a `Cache-Control` value (`no-cache`/`no-store` mean 0).
pub fn parse_max_age(cache_control: &str) -> Option<Duration> {
    let mut max_age = None;
    for directive in cache_control.split(',') {
        let directive = directive.trim();
        let (name, value) = match directive.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (directive, None),
        };
        if name.eq_ignore_ascii_case("no-cache") || name.eq_ignore_ascii_case("no-store") {
            return Some(Duration::ZERO);
        }
        if name.eq_ignore_ascii_case("max-age") {
            max_age = value
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_secs);
        }
    }
    max_age
}

/// When to refresh next, given the response's `Cache-Control` (if any).
pub fn refresh_interval(cache_control: Option<&str>) -> Duration {
    cache_control
        .and_then(parse_max_age)
        .unwrap_or(DEFAULT_REFRESH)
        .clamp(MIN_REFRESH, MAX_REFRESH)
}

impl KeyCache {
    /// Keys given up front (no JWKS endpoint: nothing is ever fetched).
    pub fn fixed(jwks: &JwkSet, allowed: &[Algorithm], local: Vec<VerifyingKey>) -> KeyCache {
        let cache = KeyCache::new(None, allowed, local, Duration::MAX);
        if let Err(e) = cache.install(jwks) {
            // Only the local (HS256) keys, if any, are in use.
            tracing::warn!(error = %e, "the JWKS given to the verifier has no usable key");
        }
        cache
    }

    pub fn remote(
        uri: String,
        allowed: &[Algorithm],
        local: Vec<VerifyingKey>,
        min_refetch: Duration,
    ) -> KeyCache {
        KeyCache::new(Some(uri), allowed, local, min_refetch)
    }

    fn new(
        uri: Option<String>,
        allowed: &[Algorithm],
        local: Vec<VerifyingKey>,
        min_refetch: Duration,
    ) -> KeyCache {
        let loaded = LoadedKeys {
            set: KeySet::new(local.clone()),
            published: KeySet::default(),
            disallowed: HashSet::new(),
        };
        KeyCache {
            uri,
            allowed: allowed.to_vec(),
            local,
            current: ArcSwap::from_pointee(loaded),
            min_refetch,
            fetch_lock: tokio::sync::Mutex::new(()),
            attempts: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            last_unknown_kid_fetch: Mutex::new(None),
            status: Mutex::new(Status::default()),
        }
    }

    /// The keys in use now (lock-free).
    pub fn current(&self) -> arc_swap::Guard<Arc<LoadedKeys>> {
        self.current.load()
    }

    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn is_remote(&self) -> bool {
        self.uri.is_some()
    }

    /// Installs the keys of `jwks`, unless it has none we can use: an empty
    /// or unreadable set (an issuer misconfigured, a proxy's answer) never
    /// replaces keys that work.
    fn install(&self, jwks: &JwkSet) -> Result<(), JwksError> {
        let (set, skipped) = KeySet::from_jwks(jwks);
        for e in &skipped {
            tracing::debug!(error = %e, "JWKS key skipped");
        }
        if set.keys().is_empty() {
            return Err(JwksError::Invalid(format!(
                "no usable key ({} skipped)",
                skipped.len()
            )));
        }
        let mut disallowed = HashSet::new();
        let mut keys: Vec<VerifyingKey> = Vec::new();
        for key in set.keys() {
            if self.allowed.contains(&key.algorithm()) {
                keys.push(key.clone());
            } else {
                disallowed.insert(key.kid().to_owned());
            }
        }
        keys.extend(self.local.iter().cloned());
        self.current.store(Arc::new(LoadedKeys {
            set: KeySet::new(keys),
            published: set,
            disallowed,
        }));
        Ok(())
    }

    /// Fetches and installs the JWKS; returns when to refresh next. Callers
    /// hold `fetch_lock`.
    async fn fetch_locked(&self, http: &reqwest::Client, now: i64) -> Result<Duration, JwksError> {
        let result = match self.fetch_document(http).await {
            Ok((jwks, interval)) => self.install(&jwks).map(|()| interval),
            Err(e) => Err(e),
        };
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(interval) => {
                status.last_refreshed = Some(now);
                status.last_error = None;
                Ok(interval)
            }
            Err(e) => {
                status.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    async fn fetch_document(
        &self,
        http: &reqwest::Client,
    ) -> Result<(JwkSet, Duration), JwksError> {
        let Some(uri) = &self.uri else {
            return Err(JwksError::Unreachable("no JWKS endpoint".into()));
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        let response = http
            .get(uri)
            .header(http::header::ACCEPT, "application/json")
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| JwksError::Unreachable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(JwksError::Status(response.status().as_u16()));
        }
        let interval = refresh_interval(
            response
                .headers()
                .get(http::header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok()),
        );
        let body = crate::body::read_capped(response, MAX_JWKS_BYTES)
            .await
            .map_err(|e| {
                if e.starts_with("the answer is larger") {
                    JwksError::Invalid("larger than 1 MiB".into())
                } else {
                    JwksError::Unreachable(e)
                }
            })?;
        let jwks: JwkSet =
            serde_json::from_slice(&body).map_err(|e| JwksError::Invalid(e.to_string()))?;
        Ok((jwks, interval))
    }

    /// A fetch now (start-up, background refresh).
    pub async fn refresh(&self, http: &reqwest::Client, now: i64) -> Result<Duration, JwksError> {
        let _guard = self.fetch_lock.lock().await;
        self.fetch_locked(http, now).await
    }

    /// A token named a `kid` we do not have: fetch again, at most once per
    /// `min_refetch`. Returns whether the caller should verify again (a
    /// fetch completed, by us or by a request we waited for).
    pub async fn refetch_for_unknown_kid(&self, http: &reqwest::Client, now: i64) -> bool {
        if !self.is_remote() {
            return false;
        }
        let seen = self.attempts.load(Ordering::SeqCst);
        let _guard = self.fetch_lock.lock().await;
        if self.attempts.load(Ordering::SeqCst) != seen {
            return true;
        }
        {
            let mut last = self
                .last_unknown_kid_fetch
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < self.min_refetch) {
                return false;
            }
            *last = Some(Instant::now());
        }
        match self.fetch_locked(http, now).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "JWKS refetch for an unknown kid failed; using the cached keys");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age_is_read_and_clamped() {
        assert_eq!(
            parse_max_age("public, max-age=3600"),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            parse_max_age("max-age=\"60\", must-revalidate"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_max_age("MAX-AGE=7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(
            parse_max_age("public, no-cache, max-age=100"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_max_age("public"), None);
        assert_eq!(parse_max_age("max-age=soon"), None);

        assert_eq!(
            refresh_interval(Some("public, max-age=3600")),
            Duration::from_secs(3600)
        );
        assert_eq!(refresh_interval(None), DEFAULT_REFRESH);
        assert_eq!(refresh_interval(Some("public")), DEFAULT_REFRESH);
        assert_eq!(refresh_interval(Some("max-age=1")), MIN_REFRESH);
        assert_eq!(refresh_interval(Some("no-store")), MIN_REFRESH);
        assert_eq!(refresh_interval(Some("max-age=99999999")), MAX_REFRESH);
    }
}
