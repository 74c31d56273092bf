//! Introspection mode (RFC 7662) for opaque access tokens, with a small
//! cache in front of the issuer.
//!
//! An opaque token cannot be verified locally; the verifier asks the
//! issuer's introspection endpoint (authenticating as a confidential client
//! with HTTP Basic) and remembers the answer:
//!
//! - **positive** answers until the token's `exp`, but at most 60 s (so a
//!   revocation the feed does not report — or no feed at all — is noticed
//!   within a minute);
//! - **negative** answers (inactive) for 10 s, so a client retrying a dead
//!   token does not turn every retry into a call to the issuer;
//! - at most 10,000 entries of each; when full, expired entries go first,
//!   then everything (a cache, not a store).
//!
//! Concurrent requests with the same uncached token share one call to the
//! issuer (single flight), so a burst of requests with a new token — or a
//! flood of one garbage token — costs the issuer one introspection.
//!
//! Only an answer with `token_type: Bearer` counts as active: a refresh token
//! presented as a bearer token introspects as active too (with
//! `token_type: refresh_token`) and is refused.
//!
//! Tokens are keyed by their SHA-256, never kept in clear. A cached positive
//! answer still goes through the revocation set on every request, so a feed
//! event revokes it at once. The issuer being unreachable is an error of its
//! own ([`AuthError::IssuerUnavailable`], 503), not "invalid token".
//!
//! Must not: decide what the claims mean (the verifier checks `aud`,
//! revocation and the feed policy as for JWTs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::claims::Claims;
use crate::error::AuthError;

/// Longest a positive answer is reused.
pub const POSITIVE_TTL_SECS: i64 = 60;
/// How long a negative answer is reused.
pub const NEGATIVE_TTL_SECS: i64 = 10;
/// Entries per cache.
pub const MAX_ENTRIES: usize = 10_000;
const TIMEOUT: Duration = Duration::from_secs(10);

type Key = [u8; 32];

#[derive(Clone)]
struct Positive {
    claims: Claims,
    answer: Arc<serde_json::Value>,
    until: i64,
}

/// A positive introspection answer.
pub(crate) struct Active {
    pub claims: Claims,
    pub answer: Arc<serde_json::Value>,
}

pub(crate) struct Introspector {
    endpoint: String,
    client_id: String,
    client_secret: String,
    /// One lock for the caches and the calls in flight, so a request that
    /// misses the cache either joins the call in flight or sees its answer.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    positive: HashMap<Key, Positive>,
    negative: HashMap<Key, i64>,
    /// Calls to the issuer in progress, shared by the requests that wait.
    in_flight: HashMap<Key, Flight>,
}

type Flight = Arc<tokio::sync::OnceCell<Result<Arc<serde_json::Value>, AuthError>>>;

enum Lookup {
    Active(Box<Active>),
    Inactive,
    Ask(Flight),
}

impl State {
    fn lookup(&mut self, key: Key, now: i64) -> Lookup {
        if let Some(hit) = self.positive.get(&key).filter(|p| p.until > now) {
            return Lookup::Active(Box::new(Active {
                claims: hit.claims.clone(),
                answer: hit.answer.clone(),
            }));
        }
        if self.negative.get(&key).is_some_and(|until| *until > now) {
            return Lookup::Inactive;
        }
        Lookup::Ask(self.in_flight.entry(key).or_default().clone())
    }
}

impl Introspector {
    pub fn new(endpoint: String, client_id: String, client_secret: String) -> Introspector {
        Introspector {
            endpoint,
            client_id,
            client_secret,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn cached(&self) -> usize {
        let state = self.state();
        state.positive.len() + state.negative.len()
    }

    /// The token's claims if active, from the cache or the issuer.
    pub async fn introspect(
        &self,
        http: &reqwest::Client,
        token: &str,
        now: i64,
    ) -> Result<Active, AuthError> {
        let key: Key = Sha256::digest(token.as_bytes()).into();
        let flight = match self.state().lookup(key, now) {
            Lookup::Active(active) => return Ok(*active),
            Lookup::Inactive => return Err(AuthError::Inactive),
            Lookup::Ask(flight) => flight,
        };
        // The first caller asks; the others wait for its answer. If it is
        // cancelled, a waiting caller takes over (`OnceCell` semantics). The
        // guard forgets the flight once it has answered (after the answer is
        // cached: `state` is released first), or when every caller is
        // cancelled.
        let guard = ForgetFlight {
            introspector: self,
            key,
            flight,
        };
        let answer = guard
            .flight
            .get_or_init(|| async { self.ask(http, token).await.map(Arc::new) })
            .await
            .clone()?;
        // Only an access token is one: a refresh token presented as a bearer
        // token also introspects as active (RFC 7662 §2.2), with `token_type`
        // saying what it is.
        let access_token = answer
            .get("token_type")
            .and_then(|v| v.as_str())
            .is_some_and(|t| t.eq_ignore_ascii_case("bearer"));
        let active = answer.get("active").and_then(|v| v.as_bool()) == Some(true) && access_token;
        let claims = active
            .then(|| serde_json::from_value::<Claims>(serde_json::Value::clone(&answer)).ok())
            .flatten();
        let mut state = self.state();
        match claims {
            Some(claims) if claims.exp > now => {
                let until = claims.exp.min(now + POSITIVE_TTL_SECS);
                insert_bounded(
                    &mut state.positive,
                    key,
                    Positive {
                        claims: claims.clone(),
                        answer: answer.clone(),
                        until,
                    },
                    |p| p.until > now,
                );
                Ok(Active { claims, answer })
            }
            _ => {
                insert_bounded(&mut state.negative, key, now + NEGATIVE_TTL_SECS, |until| {
                    *until > now
                });
                Err(AuthError::Inactive)
            }
        }
    }

    async fn ask(
        &self,
        http: &reqwest::Client,
        token: &str,
    ) -> Result<serde_json::Value, AuthError> {
        let response = http
            .post(&self.endpoint)
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .timeout(TIMEOUT)
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "introspection request failed");
                AuthError::IssuerUnavailable
            })?;
        if !response.status().is_success() {
            tracing::warn!(status = %response.status(), "introspection refused");
            return Err(AuthError::IssuerUnavailable);
        }
        crate::body::read_json(response, crate::body::MAX_ANSWER_BYTES)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "introspection answer unreadable");
                AuthError::IssuerUnavailable
            })
    }
}

/// Removes a flight once it has answered, or when nobody waits for it any
/// more (every caller cancelled before the issuer answered), so abandoned
/// flights cannot pile up.
struct ForgetFlight<'a> {
    introspector: &'a Introspector,
    key: Key,
    flight: Flight,
}

impl Drop for ForgetFlight<'_> {
    fn drop(&mut self) {
        let mut state = self.introspector.state();
        let done = state.in_flight.get(&self.key).is_some_and(|current| {
            // Answered, or only the map's reference and ours are left.
            Arc::ptr_eq(current, &self.flight)
                && (current.initialized() || Arc::strong_count(current) == 2)
        });
        if done {
            state.in_flight.remove(&self.key);
        }
    }
}

fn insert_bounded<V>(map: &mut HashMap<Key, V>, key: Key, value: V, live: impl Fn(&V) -> bool) {
    if map.len() >= MAX_ENTRIES {
        map.retain(|_, v| live(v));
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
    }
    map.insert(key, value);
}
