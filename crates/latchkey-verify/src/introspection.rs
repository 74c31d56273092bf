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
//! Tokens are keyed by their SHA-256, never kept in clear. A cached positive
//! answer still goes through the revocation set on every request, so a feed
//! event revokes it at once. The issuer being unreachable is an error of its
//! own ([`AuthError::IssuerUnavailable`], 503), not "invalid token".
//!
//! Must not: decide what the claims mean (the verifier checks `aud`,
//! revocation and the feed policy as for JWTs).

use std::collections::HashMap;
use std::sync::Mutex;
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
    answer: std::sync::Arc<serde_json::Value>,
    until: i64,
}

/// A positive introspection answer.
pub(crate) struct Active {
    pub claims: Claims,
    pub answer: std::sync::Arc<serde_json::Value>,
}

pub(crate) struct Introspector {
    endpoint: String,
    client_id: String,
    client_secret: String,
    positive: Mutex<HashMap<Key, Positive>>,
    negative: Mutex<HashMap<Key, i64>>,
}

impl Introspector {
    pub fn new(endpoint: String, client_id: String, client_secret: String) -> Introspector {
        Introspector {
            endpoint,
            client_id,
            client_secret,
            positive: Mutex::new(HashMap::new()),
            negative: Mutex::new(HashMap::new()),
        }
    }

    pub fn cached(&self) -> usize {
        self.positive.lock().map(|m| m.len()).unwrap_or(0)
            + self.negative.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// The token's claims if active, from the cache or the issuer.
    pub async fn introspect(
        &self,
        http: &reqwest::Client,
        token: &str,
        now: i64,
    ) -> Result<Active, AuthError> {
        let key: Key = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self
            .positive
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .filter(|p| p.until > now)
            .cloned()
        {
            return Ok(Active {
                claims: hit.claims,
                answer: hit.answer,
            });
        }
        if self
            .negative
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .is_some_and(|until| *until > now)
        {
            return Err(AuthError::Inactive);
        }
        let answer = self.ask(http, token).await?;
        let active = answer.get("active").and_then(|v| v.as_bool()) == Some(true);
        let claims = active
            .then(|| serde_json::from_value::<Claims>(answer.clone()).ok())
            .flatten();
        match claims {
            Some(claims) if claims.exp > now => {
                let until = claims.exp.min(now + POSITIVE_TTL_SECS);
                let answer = std::sync::Arc::new(answer);
                insert_bounded(
                    &self.positive,
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
                insert_bounded(&self.negative, key, now + NEGATIVE_TTL_SECS, |until| {
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
        response.json().await.map_err(|e| {
            tracing::warn!(error = %e, "introspection answer is not JSON");
            AuthError::IssuerUnavailable
        })
    }
}

fn insert_bounded<V>(map: &Mutex<HashMap<Key, V>>, key: Key, value: V, live: impl Fn(&V) -> bool) {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() >= MAX_ENTRIES {
        map.retain(|_, v| live(v));
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
    }
    map.insert(key, value);
}
