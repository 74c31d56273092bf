//! The revocation feed's fan-out: one background task per instance turns
//! committed revocation events into signed Security Event Tokens, once each,
//! and hands them to every open feed stream.
//!
//! The database is the source of truth. The task ([`RevocationFeed::run`])
//! loads the retained events at start, then reads `seq > head` every
//! `revocation_feed.poll_interval_ms`, and at once when this instance
//! commits an event ([`Cause::waking`](super::Cause::waking)). Because every
//! instance reads the same table, several instances behind a load balancer
//! all publish every event, whichever instance recorded it — no Redis, no
//! instance-to-instance traffic. Each event is signed once per instance (the
//! SET is cached until the event leaves the retention window) and broadcast
//! to the streams.
//!
//! A stream ([`RevocationFeed::subscribe`]) first subscribes to the
//! broadcast, then takes the backlog from the cache, and drops live events it
//! already sent from the backlog (by seq): an event cannot fall between the
//! two, since the task caches an event before broadcasting it. A stream too
//! slow to keep up with the broadcast is ended; its client resumes with
//! `Last-Event-ID`.
//!
//! Architecture invariant: **a stream is open only while its instance
//! publishes.** When the task fails to read or sign events (the database is
//! down, a table is gone), every open stream ends at once and new streams are
//! refused (`503`) until a read succeeds again. A stream that stayed open
//! with keepalives while nothing could be published would tell its
//! subscribers they are up to date when they are not; ended, they reconnect
//! (with `Last-Event-ID`, missing nothing once the task recovers) or, if they
//! cannot, become stale and apply their failure policy.
//!
//! Must not: know about HTTP or SSE framing (`routes::revocations`), or
//! write events (callers of `revocation::record_tx` do).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{broadcast, watch, Notify};

use super::{events_after, retention_secs, security_event_token, SET_TYP};
use crate::config::RevocationFeedConfig;
use crate::core::Core;

/// Events read per query.
const PAGE: i64 = 500;
/// Live events a stream may fall behind by before it is ended.
const BROADCAST_CAPACITY: usize = 4096;
/// How long a new stream waits for the task's first load before giving up.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// One published event: its position and its compact signed SET.
#[derive(Debug, Clone)]
pub struct Published {
    pub seq: i64,
    pub set: Arc<str>,
    event_time: i64,
}

#[derive(Default)]
struct Cache {
    events: BTreeMap<i64, Published>,
    /// Highest seq read from the database.
    head: i64,
}

struct Inner {
    config: RevocationFeedConfig,
    wake: Arc<Notify>,
    cache: RwLock<Cache>,
    live: broadcast::Sender<Published>,
    /// `true` while the task publishes: after its first successful read,
    /// until a read fails (then again after the next successful one).
    ready: watch::Sender<bool>,
    closing: watch::Sender<bool>,
}

/// This instance's revocation feed (cheap to clone; lives in `Core`).
#[derive(Clone)]
pub struct RevocationFeed(Arc<Inner>);

/// What a new stream starts from.
pub struct Subscription {
    /// Retained events after the requested position, in order.
    pub backlog: Vec<Published>,
    /// The last seq this instance has published (`synced` reports it).
    pub head: i64,
    /// Events published from now on (may repeat backlog events: skip by seq).
    pub live: broadcast::Receiver<Published>,
    /// Becomes `true` when the server shuts down: end the stream.
    pub closing: watch::Receiver<bool>,
    /// Becomes `false` when the task fails to read or sign events: end the
    /// stream (see the module documentation).
    pub publishing: watch::Receiver<bool>,
}

/// The feed's task has not loaded the events yet (database down at start).
#[derive(Debug, thiserror::Error)]
#[error("the revocation feed is not ready")]
pub struct NotReady;

impl RevocationFeed {
    pub fn new(config: &RevocationFeedConfig) -> RevocationFeed {
        RevocationFeed(Arc::new(Inner {
            config: config.clone(),
            wake: Arc::new(Notify::new()),
            cache: RwLock::new(Cache::default()),
            live: broadcast::channel(BROADCAST_CAPACITY).0,
            ready: watch::channel(false).0,
            closing: watch::channel(false).0,
        }))
    }

    pub(crate) fn waker(&self) -> Arc<Notify> {
        self.0.wake.clone()
    }

    /// Reads new events now rather than at the next poll (after a commit).
    pub fn wake(&self) {
        self.0.wake.notify_one();
    }

    /// Ends every open stream (graceful shutdown: otherwise streams end only
    /// at their token's expiry, when their reader loses access, or when
    /// publishing fails, and the server waits for open connections).
    pub fn close_streams(&self) {
        self.0.closing.send_replace(true);
    }

    /// How often streams send a keepalive comment and re-check their reader.
    pub fn keepalive(&self) -> Duration {
        Duration::from_secs(self.0.config.keepalive_secs)
    }

    /// Starts a stream after `after` (the client's `Last-Event-ID`; `None`
    /// for every retained event). An `after` beyond the head — a client that
    /// saw a database since restored from a backup — gets every event again.
    pub async fn subscribe(&self, after: Option<i64>) -> Result<Subscription, NotReady> {
        let mut ready = self.0.ready.subscribe();
        match tokio::time::timeout(READY_TIMEOUT, ready.wait_for(|r| *r)).await {
            Ok(Ok(_)) => {}
            _ => return Err(NotReady),
        }
        // Subscribe first, then snapshot: see the module documentation.
        let live = self.0.live.subscribe();
        let cache = self.0.cache.read().unwrap_or_else(|e| e.into_inner());
        let after = match after {
            Some(a) if a <= cache.head => a,
            _ => 0,
        };
        let backlog = cache
            .events
            .range(after + 1..)
            .map(|(_, p)| p.clone())
            .collect();
        Ok(Subscription {
            backlog,
            head: cache.head,
            live,
            closing: self.0.closing.subscribe(),
            publishing: ready,
        })
    }

    /// The fan-out task: runs until the server stops.
    pub async fn run(self, state: std::sync::Arc<Core>) {
        let poll = Duration::from_millis(self.0.config.poll_interval_ms);
        let mut failing = false;
        loop {
            match self.publish_new(&state).await {
                Ok(()) => {
                    if failing {
                        tracing::info!("revocation feed reads events again");
                        failing = false;
                    }
                    self.0.ready.send_replace(true);
                }
                Err(e) => {
                    // End the open streams and refuse new ones until a read
                    // succeeds (see the module documentation).
                    self.0.ready.send_replace(false);
                    if !failing {
                        tracing::warn!(error = %e, "revocation feed cannot read or sign events; streams end until it can; retrying");
                        failing = true;
                    }
                }
            }
            tokio::select! {
                _ = self.0.wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Reads, signs, caches and broadcasts every event after the head, and
    /// forgets events past the retention window.
    async fn publish_new(&self, state: &Core) -> Result<(), PublishError> {
        let now = state.clock.now();
        let retention = retention_secs(
            state.keys.max_token_lifetime_secs(),
            state.config.tokens.leeway_secs,
        );
        let issuer = state.config.issuer_str();
        // SETs are verified with the JWKS, so an asymmetric key signs them
        // even when access tokens use HS256.
        // The deployment's default algorithm, the one its APIs verify access
        // tokens with (an HS256 deployment's verifiers know only that secret).
        let alg = state.keys.default_algorithm();
        loop {
            let head = self.head();
            let events = events_after(&state.pool, head, now - retention, PAGE).await?;
            let full_page = events.len() as i64 == PAGE;
            for event in events {
                let key = state.keys.signing_key(alg, now)?;
                let claims = security_event_token(&event, issuer, retention);
                let published = Published {
                    seq: event.seq,
                    set: key.sign(SET_TYP, &claims)?.into(),
                    event_time: event.event_time,
                };
                {
                    let mut cache = self.0.cache.write().unwrap_or_else(|e| e.into_inner());
                    cache.head = cache.head.max(event.seq);
                    cache.events.insert(event.seq, published.clone());
                }
                // No receiver is fine: nobody is streaming.
                let _ = self.0.live.send(published);
            }
            if !full_page {
                break;
            }
        }
        let mut cache = self.0.cache.write().unwrap_or_else(|e| e.into_inner());
        cache.events.retain(|_, p| p.event_time > now - retention);
        Ok(())
    }

    fn head(&self) -> i64 {
        self.0.cache.read().unwrap_or_else(|e| e.into_inner()).head
    }
}

#[derive(Debug, thiserror::Error)]
enum PublishError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Keys(#[from] crate::keys::KeyError),
    #[error("cannot encode a security event token: {0}")]
    Encode(#[from] serde_json::Error),
}

/// A client allowed to read the feed, and until when its token is valid.
#[derive(Debug, Clone)]
pub struct Reader {
    pub client_id: String,
    pub expires_at: i64,
}

/// Why a bearer token may not read the feed.
#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    #[error("the access token is invalid, expired or revoked")]
    InvalidToken,
    #[error("the feed is read with a client-credentials token (sub = client_id)")]
    NotAClientToken,
    #[error("the token lacks the {} scope", super::FEED_SCOPE)]
    MissingScope,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Who may read the feed: a live access token (JWT or opaque) that a client
/// obtained for itself (client credentials: `sub` = `client_id`) with the
/// `latchkey:revocations` scope, of a client that still exists and may still
/// ask for that scope. The feed names users and sessions, so a user's token —
/// even with that scope — is refused. An open stream asks again at every
/// keepalive and ends when the answer is no longer yes.
pub async fn authorize_reader(state: &Core, token: &str) -> Result<Reader, ReaderError> {
    let info = crate::tokens::introspect(state, None, token, Some("access_token")).await?;
    if !info.active || info.token_type != Some("Bearer") {
        return Err(ReaderError::InvalidToken);
    }
    let (Some(client_id), Some(sub), Some(exp)) = (info.client_id, info.sub, info.exp) else {
        return Err(ReaderError::InvalidToken);
    };
    if sub != client_id {
        return Err(ReaderError::NotAClientToken);
    }
    let scope = info.scope.unwrap_or_default();
    if !scope.split(' ').any(|s| s == super::FEED_SCOPE) {
        return Err(ReaderError::MissingScope);
    }
    // A JWT outlives its client: a deleted client's token must not read on,
    // nor one of a client that has lost the scope since.
    let Some(client) = crate::oauth::clients::find(&state.pool, &client_id).await? else {
        return Err(ReaderError::InvalidToken);
    };
    if !client.scopes.contains(super::FEED_SCOPE) {
        return Err(ReaderError::MissingScope);
    }
    Ok(Reader {
        client_id,
        expires_at: exp,
    })
}
