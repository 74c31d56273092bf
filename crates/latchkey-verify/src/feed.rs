//! The background tasks: following the issuer's revocation feed, and
//! refreshing the JWKS.
//!
//! **The feed subscriber** ([`follow`]) gets a client-credentials token
//! (scope `latchkey:revocations`) from the issuer's token endpoint — cached
//! until shortly before it expires —, opens `GET revocation_feed_endpoint`
//! with `Accept: text/event-stream` (and `Last-Event-ID` once it has seen an
//! event), and reads Server-Sent Events:
//!
//! - `revocation`: a Security Event Token, verified with the same JWKS as
//!   access tokens (`typ: secevent+jwt`, `iss`; an unknown `kid` refreshes
//!   the keys once), turned into [`Revocation`](crate::revocation::Revocation)s
//!   and applied to the verifier's revocation set; its `id` becomes the next
//!   `Last-Event-ID`;
//! - `synced`: the backlog is complete (`build` waits for the first one); its
//!   data may carry the server's `keepalive_secs`.
//!
//! A stream with no bytes for three keepalive intervals is dead. On any end
//! it reconnects with backoff (250 ms doubling to 5 s, reset after a stream
//! that reached `synced`). It tracks `connected` and `last_contact`: when
//! disconnected for longer than the maximum staleness, the verifier applies
//! the [`FeedFailurePolicy`] and the subscriber logs it once (and logs the
//! recovery once).
//!
//! Must not: block the request path (it publishes a new revocation set; the
//! request path only loads it).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::watch;

use crate::jose::{self, Validation, VerifyError};
use crate::revocation::{revocations_in_set, Revocation};
use crate::sse::SseParser;
use crate::verifier::{FeedFailurePolicy, FeedHealth, Inner, FEED_SCOPE};

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest event accepted on the feed (a SET is about 1 KiB).
const MAX_EVENT_BYTES: usize = 64 * 1024;
/// Revocations applied at once while reading the backlog.
const BACKLOG_BATCH: usize = 4096;
/// The header `typ` of the feed's SETs (RFC 8417 §2.3).
pub const SET_TYP: &str = "secevent+jwt";

/// Why a feed connection ended or could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FeedError {
    #[error("cannot get a feed token: {0}")]
    Token(String),
    #[error("the feed refused the token (401)")]
    Unauthorized,
    #[error("the feed client lacks the latchkey:revocations scope or is not a client-credentials client (403)")]
    Forbidden,
    #[error("the feed answered {0}")]
    Status(u16),
    #[error("cannot reach the feed: {0}")]
    Unreachable(String),
    #[error("the feed stream went silent (no keepalive)")]
    DeadStream,
    #[error(transparent)]
    Parse(#[from] crate::sse::LineTooLong),
    #[error("a revocation event does not verify: {0}")]
    BadEvent(VerifyError),
}

/// The subscriber's configuration and state (read by the request path
/// through atomics only).
pub(crate) struct FeedState {
    endpoint: String,
    token_endpoint: String,
    client_id: String,
    client_secret: String,
    policy: FeedFailurePolicy,
    max_staleness_secs: i64,
    connected: AtomicBool,
    last_contact: AtomicI64,
    last_event_id: AtomicU64,
    has_event_id: AtomicBool,
    keepalive_secs: AtomicU64,
    synced: watch::Sender<bool>,
    stale_reported: AtomicBool,
    last_error: Mutex<Option<String>>,
    token: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl FeedState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        endpoint: String,
        token_endpoint: String,
        client_id: String,
        client_secret: String,
        policy: FeedFailurePolicy,
        max_staleness: Duration,
        keepalive: Duration,
        now: i64,
    ) -> FeedState {
        FeedState {
            endpoint,
            token_endpoint,
            client_id,
            client_secret,
            policy,
            max_staleness_secs: max_staleness.as_secs() as i64,
            connected: AtomicBool::new(false),
            last_contact: AtomicI64::new(now),
            last_event_id: AtomicU64::new(0),
            has_event_id: AtomicBool::new(false),
            keepalive_secs: AtomicU64::new(keepalive.as_secs().max(1)),
            synced: watch::channel(false).0,
            stale_reported: AtomicBool::new(false),
            last_error: Mutex::new(None),
            token: tokio::sync::Mutex::new(None),
        }
    }

    pub fn synced_watch(&self) -> watch::Receiver<bool> {
        self.synced.subscribe()
    }

    /// Disconnected for longer than the maximum staleness.
    pub fn is_stale(&self, now: i64) -> bool {
        !self.connected.load(Ordering::Acquire)
            && now - self.last_contact.load(Ordering::Acquire) > self.max_staleness_secs
    }

    /// The failure policy for a token issued at `iat`.
    pub fn admits(&self, iat: Option<i64>, now: i64) -> bool {
        if !self.is_stale(now) {
            return true;
        }
        match self.policy {
            FeedFailurePolicy::Open => true,
            FeedFailurePolicy::Closed => false,
            FeedFailurePolicy::ClosedForTokensOlderThan(bound) => {
                iat.is_some_and(|iat| iat >= now - bound.as_secs() as i64)
            }
        }
    }

    fn last_event_id(&self) -> Option<u64> {
        self.has_event_id
            .load(Ordering::Acquire)
            .then(|| self.last_event_id.load(Ordering::Acquire))
    }

    fn set_last_event_id(&self, id: u64) {
        self.last_event_id.store(id, Ordering::Release);
        self.has_event_id.store(true, Ordering::Release);
    }

    fn touch(&self, now: i64) {
        self.last_contact.store(now, Ordering::Release);
    }

    fn record_error(&self, error: &FeedError) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
    }

    fn policy_text(&self) -> String {
        match self.policy {
            FeedFailurePolicy::Open => "open".into(),
            FeedFailurePolicy::Closed => "closed".into(),
            FeedFailurePolicy::ClosedForTokensOlderThan(b) => {
                format!("closed for tokens older than {} s", b.as_secs())
            }
        }
    }

    pub fn health(&self, now: i64, _entries: usize) -> FeedHealth {
        FeedHealth {
            connected: self.connected.load(Ordering::Acquire),
            synced: *self.synced.borrow(),
            last_event_id: self.last_event_id(),
            last_contact: self.last_contact.load(Ordering::Acquire),
            stale: self.is_stale(now),
            policy: self.policy_text(),
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }

    /// Logs the transition to stale once.
    fn report_staleness(&self, now: i64) {
        if self.is_stale(now) && !self.stale_reported.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                policy = %self.policy_text(),
                "the revocation feed has been unreachable for more than {} s: revocation status unknown, applying the failure policy",
                self.max_staleness_secs
            );
        }
    }

    /// A client-credentials token for the feed (cached).
    async fn access_token(&self, http: &reqwest::Client) -> Result<String, FeedError> {
        let mut cached = self.token.lock().await;
        if let Some((token, until)) = cached.as_ref() {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        #[derive(Deserialize)]
        struct TokenResponse {
            access_token: String,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let response = http
            .post(&self.token_endpoint)
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .form(&[("grant_type", "client_credentials"), ("scope", FEED_SCOPE)])
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| FeedError::Token(e.to_string()))?;
        if !response.status().is_success() {
            let status = response.status();
            let body = crate::body::read_capped(response, crate::body::MAX_ANSWER_BYTES)
                .await
                .unwrap_or_default();
            return Err(FeedError::Token(format!(
                "{status}: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            )));
        }
        let answer: TokenResponse = crate::body::read_json(response, crate::body::MAX_ANSWER_BYTES)
            .await
            .map_err(FeedError::Token)?;
        let lifetime = answer.expires_in.unwrap_or(60);
        // Renew before the server ends the stream at the token's expiry.
        let margin = 30.min(lifetime / 2);
        let until = Instant::now() + Duration::from_secs(lifetime - margin);
        *cached = Some((answer.access_token.clone(), until));
        Ok(answer.access_token)
    }

    async fn forget_token(&self) {
        *self.token.lock().await = None;
    }
}

/// The JWKS refresh task: at the interval the issuer's `Cache-Control`
/// asks for, with backoff on failure (the old keys stay in use).
pub(crate) async fn refresh_keys(inner: Arc<Inner>, first: Duration) {
    let mut next = first;
    let mut backoff = Duration::from_secs(5);
    let mut failing = false;
    loop {
        tokio::time::sleep(next).await;
        match inner.keys.refresh(&inner.http, inner.clock.now()).await {
            Ok(interval) => {
                if failing {
                    tracing::info!("JWKS refreshed again");
                    failing = false;
                }
                next = interval;
                backoff = Duration::from_secs(5);
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "JWKS refresh failed; verifying with the cached keys");
                    failing = true;
                }
                next = backoff;
                backoff = (backoff * 2).min(crate::jwks::DEFAULT_REFRESH);
            }
        }
        inner.prune();
    }
}

/// The feed task: follows the feed until the verifier is dropped.
pub(crate) async fn follow(inner: Arc<Inner>) {
    let Some(feed) = inner.feed.as_ref() else {
        return;
    };
    let mut backoff = FIRST_BACKOFF;
    let mut failing = false;
    loop {
        let outcome = stream_once(&inner, feed).await;
        feed.connected.store(false, Ordering::Release);
        match outcome {
            Ok(true) => {
                backoff = FIRST_BACKOFF;
                failing = false;
                tracing::debug!("revocation feed stream ended; reconnecting");
            }
            Ok(false) => tracing::debug!("revocation feed stream ended before synced"),
            Err(e) => {
                feed.record_error(&e);
                if matches!(e, FeedError::Forbidden) || !failing {
                    tracing::warn!(error = %e, "revocation feed connection failed; retrying");
                } else {
                    tracing::debug!(error = %e, "revocation feed connection failed again");
                }
                failing = true;
            }
        }
        feed.report_staleness(inner.clock.now());
        tokio::time::sleep(backoff).await;
        feed.report_staleness(inner.clock.now());
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection: returns whether it reached `synced`.
async fn stream_once(inner: &Inner, feed: &FeedState) -> Result<bool, FeedError> {
    let token = feed.access_token(&inner.http).await?;
    let mut request = inner
        .http
        .get(&feed.endpoint)
        .bearer_auth(&token)
        .header(http::header::ACCEPT, "text/event-stream");
    if let Some(id) = feed.last_event_id() {
        request = request.header("last-event-id", id.to_string());
    }
    let mut response = tokio::time::timeout(REQUEST_TIMEOUT, request.send())
        .await
        .map_err(|_| FeedError::Unreachable("timed out".into()))?
        .map_err(|e| FeedError::Unreachable(e.to_string()))?;
    match response.status().as_u16() {
        200..=299 => {}
        401 => {
            feed.forget_token().await;
            return Err(FeedError::Unauthorized);
        }
        403 => return Err(FeedError::Forbidden),
        other => return Err(FeedError::Status(other)),
    }
    // The connection counts as contact only once it makes progress (below):
    // a feed that answers 200 and then fails (a chunk that does not parse,
    // an event that does not verify) must not keep the verifier fresh by
    // reconnecting.
    let mut parser = SseParser::new(MAX_EVENT_BYTES);
    let mut reached_synced = false;
    let mut last_prune = Instant::now();
    let mut keys_refreshed = false;
    // Before `synced` (the backlog), revocations gather across chunks and
    // are applied at `synced` or every `BACKLOG_BATCH`: applying per chunk
    // would copy the whole set once per chunk (quadratic in the backlog).
    let mut batch = Batch::default();
    loop {
        let idle = Duration::from_secs(3 * feed.keepalive_secs.load(Ordering::Relaxed));
        let chunk = match tokio::time::timeout(idle, response.chunk()).await {
            Err(_) => return Err(FeedError::DeadStream),
            Ok(Err(e)) => return Err(FeedError::Unreachable(e.to_string())),
            Ok(Ok(None)) => {
                batch.flush(inner, feed);
                return Ok(reached_synced);
            }
            Ok(Ok(Some(chunk))) => chunk,
        };
        // Progress: the position moved forward, or `synced` (or anything
        // after it) arrived. Only progress counts as contact: a stream that
        // replays events already applied and then fails (an event that does
        // not verify) must let the feed become stale, so the failure policy
        // applies.
        let mut progressed = reached_synced;
        for event in parser.push(&chunk)? {
            match event.event.as_str() {
                "revocation" => {
                    match verify_set(inner, &event.data, &mut keys_refreshed).await {
                        Ok(revocations) => batch.revocations.extend(revocations),
                        Err(e) => {
                            // Never skip past an event we could not read: keep
                            // what verified so far, end the stream, and resume
                            // from the last good position after a backoff.
                            batch.flush(inner, feed);
                            tracing::error!(
                                error = %e,
                                id = event.id.as_deref().unwrap_or("-"),
                                "a revocation event does not verify; reconnecting from the last good event"
                            );
                            return Err(FeedError::BadEvent(e));
                        }
                    }
                    if let Some(id) = event.id.as_deref().and_then(|i| i.parse::<u64>().ok()) {
                        let position = batch.last_id.or(feed.last_event_id());
                        if position.is_none_or(|p| id > p) {
                            progressed = true;
                        }
                        batch.last_id = Some(id);
                    }
                    if batch.revocations.len() >= BACKLOG_BATCH {
                        batch.flush(inner, feed);
                    }
                }
                "synced" => {
                    batch.flush(inner, feed);
                    if let Some(k) = serde_json::from_str::<serde_json::Value>(&event.data)
                        .ok()
                        .and_then(|v| v["keepalive_secs"].as_u64())
                        .filter(|k| *k > 0)
                    {
                        feed.keepalive_secs.store(k, Ordering::Relaxed);
                    }
                    reached_synced = true;
                    progressed = true;
                    feed.synced.send_replace(true);
                }
                _ => {}
            }
        }
        if reached_synced {
            // Live: every chunk's revocations are applied at once.
            batch.flush(inner, feed);
        }
        // "Connected" starts at `synced` (until then the revocations in force
        // are not known to be complete).
        if progressed {
            feed.touch(inner.clock.now());
        }
        if reached_synced
            && !feed.connected.swap(true, Ordering::AcqRel)
            && feed.stale_reported.swap(false, Ordering::AcqRel)
        {
            tracing::info!("the revocation feed is reachable again");
        }
        if last_prune.elapsed() > Duration::from_secs(60) {
            inner.prune();
            last_prune = Instant::now();
        }
    }
}

#[derive(Default)]
struct Batch {
    revocations: Vec<Revocation>,
    last_id: Option<u64>,
}

impl Batch {
    /// Applies the revocations, then records the position (so a reconnect
    /// after a failure here replays them).
    fn flush(&mut self, inner: &Inner, feed: &FeedState) {
        inner.apply(std::mem::take(&mut self.revocations));
        if let Some(id) = self.last_id.take() {
            feed.set_last_event_id(id);
        }
    }
}

/// Verifies one SET with the issuer's keys and reads its revocations.
async fn verify_set(
    inner: &Inner,
    set: &str,
    keys_refreshed: &mut bool,
) -> Result<Vec<Revocation>, VerifyError> {
    let validation = Validation {
        issuer: inner.issuer.clone(),
        audiences: Vec::new(),
        typ: Some(SET_TYP.to_owned()),
        leeway_secs: inner.validation.leeway_secs,
    };
    let now = inner.clock.now();
    // Every key the issuer publishes, not only the algorithms this API
    // accepts access tokens with: events are signed with the issuer's key.
    let verify = || {
        jose::verify::<serde_json::Value>(set, &inner.keys.current().published, &validation, now)
    };
    let mut verified = verify();
    if matches!(
        verified,
        Err(VerifyError::UnknownKid | VerifyError::MissingKid | VerifyError::BadSignature)
    ) && !*keys_refreshed
    {
        // The issuer may have rotated its keys since our last fetch. The
        // feed is an authenticated channel, not a forgery vector: refresh at
        // once (once per connection).
        *keys_refreshed = true;
        if inner.keys.refresh(&inner.http, now).await.is_ok() {
            verified = verify();
        }
    }
    let claims = match verified {
        Ok(verified) => verified.claims,
        // Signed by the issuer but past its `exp` (`retain_until`, plus
        // leeway): every token it concerned has expired; nothing to apply.
        Err(VerifyError::Expired) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(revocations_in_set(
        &claims,
        &inner.issuer,
        inner.validation.leeway_secs,
    ))
}
