//! What is revoked: the rules that turn the feed's Security Event Tokens into
//! [`Revocation`]s and decide whether a token is covered by one.
//!
//! - [`Revocation::Token`]: that `jti`, until the token's `exp` (+ leeway);
//! - [`Revocation::Session`]: every token whose `sid` is the session, until
//!   the event's `retain_until` (no token of an ended session can be issued
//!   later, so `iat` does not matter);
//! - [`Revocation::Subject`]: every token of that `sub` with `iat <=` the
//!   event's `event_timestamp` (a user signed out everywhere, disabled or
//!   deleted; tokens issued afterwards — the user signed in again — are fine),
//!   until `retain_until`. A token without `iat` is treated as old;
//! - [`Revocation::Grant`]: every token of that `client_id` — for one `sub`,
//!   or for everyone when the client was deleted — with `iat <=` the event's
//!   `event_timestamp` (consent withdrawn, client deleted), until
//!   `retain_until`. A token without `client_id` matches no grant entry.
//!
//! Entries are dropped after their `until`, when every token they could
//! concern has expired anyway. [`RevocationSet`] is an immutable value: the
//! verifier replaces it as a whole (copy on write), so the request path reads
//! it without a lock.
//!
//! Must not: do I/O or verify signatures (the subscriber verifies each SET
//! with the JWKS before [`revocations_in_set`] reads it).

use std::collections::HashMap;

use serde_json::Value;

/// CAEP "session revoked" (OpenID CAEP 1.0 §3.1).
pub const SESSION_REVOKED: &str =
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
/// Latchkey's "access token revoked" event.
pub const TOKEN_REVOKED: &str = "urn:latchkey:secevent:token-revoked";
/// Latchkey's "grant revoked" event: a client's tokens for one user (consent
/// withdrawn) or for everyone (client deleted).
pub const GRANT_REVOKED: &str = "urn:latchkey:secevent:grant-revoked";
/// How long an entry is kept when its event names no `retain_until`.
pub const FALLBACK_RETENTION_SECS: i64 = 24 * 3600;

/// One revocation, as applied to tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// One access token; kept until `until`.
    Token {
        /// The token's `jti`.
        jti: String,
        /// When the entry can be forgotten (the token's `exp` + leeway).
        until: i64,
    },
    /// Every token carrying a session id; kept until `until`.
    Session {
        /// The session (`sid` claim).
        sid: String,
        /// When the entry can be forgotten (the event's `retain_until`).
        until: i64,
    },
    /// Every token of a user issued at or before a moment; kept until `until`.
    Subject {
        /// The user (`sub` claim).
        sub: String,
        /// Tokens with `iat <=` this (the event's `event_timestamp`) are revoked.
        issued_before: i64,
        /// When the entry can be forgotten (the event's `retain_until`).
        until: i64,
    },
    /// Every token of a client (for one user, or for all) issued at or
    /// before a moment; kept until `until`.
    Grant {
        /// The client (`client_id` claim).
        client_id: String,
        /// The user (`sub` claim); `None`: every token of the client.
        sub: Option<String>,
        /// Tokens with `iat <=` this (the event's `event_timestamp`) are revoked.
        issued_before: i64,
        /// When the entry can be forgotten (the event's `retain_until`).
        until: i64,
    },
}

/// The revocations in force. Cheap to query; replaced as a whole.
#[derive(Debug, Clone, Default)]
pub struct RevocationSet {
    jtis: HashMap<String, i64>,
    sessions: HashMap<String, i64>,
    /// sub → (latest event time, until).
    subjects: HashMap<String, (i64, i64)>,
    /// client_id → (sub, or "" for every token of the client) → (latest
    /// event time, until).
    grants: HashMap<String, HashMap<String, (i64, i64)>>,
}

impl RevocationSet {
    /// Does an entry revoke a token with these claims?
    pub fn is_revoked(
        &self,
        jti: Option<&str>,
        sid: Option<&str>,
        sub: &str,
        client_id: Option<&str>,
        iat: Option<i64>,
    ) -> bool {
        if let Some(jti) = jti {
            if !self.jtis.is_empty() && self.jtis.contains_key(jti) {
                return true;
            }
        }
        if let Some(sid) = sid {
            if !self.sessions.is_empty() && self.sessions.contains_key(sid) {
                return true;
            }
        }
        let old = |issued_before: i64| iat.is_none_or(|iat| iat <= issued_before);
        if !self.subjects.is_empty() {
            if let Some((issued_before, _)) = self.subjects.get(sub) {
                if old(*issued_before) {
                    return true;
                }
            }
        }
        if let Some(of_client) = client_id
            .filter(|_| !self.grants.is_empty())
            .and_then(|c| self.grants.get(c))
        {
            for who in [sub, ""] {
                if let Some((issued_before, _)) = of_client.get(who) {
                    if old(*issued_before) {
                        return true;
                    }
                }
            }
        }
        false
    }

    /// Adds `revocation` (a later event for the same `sub` moves its bound).
    pub fn apply(&mut self, revocation: Revocation) {
        match revocation {
            Revocation::Token { jti, until } => {
                let e = self.jtis.entry(jti).or_insert(until);
                *e = (*e).max(until);
            }
            Revocation::Session { sid, until } => {
                let e = self.sessions.entry(sid).or_insert(until);
                *e = (*e).max(until);
            }
            Revocation::Subject {
                sub,
                issued_before,
                until,
            } => {
                let e = self.subjects.entry(sub).or_insert((issued_before, until));
                *e = (e.0.max(issued_before), e.1.max(until));
            }
            Revocation::Grant {
                client_id,
                sub,
                issued_before,
                until,
            } => {
                let e = self
                    .grants
                    .entry(client_id)
                    .or_default()
                    .entry(sub.unwrap_or_default())
                    .or_insert((issued_before, until));
                *e = (e.0.max(issued_before), e.1.max(until));
            }
        }
    }

    /// Forgets entries whose `until` has passed at `now`.
    pub fn prune(&mut self, now: i64) {
        self.jtis.retain(|_, until| *until > now);
        self.sessions.retain(|_, until| *until > now);
        self.subjects.retain(|_, (_, until)| *until > now);
        self.grants.retain(|_, of_client| {
            of_client.retain(|_, (_, until)| *until > now);
            !of_client.is_empty()
        });
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.jtis.len()
            + self.sessions.len()
            + self.subjects.len()
            + self.grants.values().map(HashMap::len).sum::<usize>()
    }

    /// `true` when nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The revocations a verified SET's claims carry. Event types other than
/// the three Latchkey publishes are ignored; a subject naming another issuer
/// is ignored. `leeway_secs` extends a revoked token's entry past its `exp`.
pub fn revocations_in_set(claims: &Value, issuer: &str, leeway_secs: i64) -> Vec<Revocation> {
    let mut out = Vec::new();
    let Some(events) = claims.get("events").and_then(Value::as_object) else {
        return out;
    };
    for (event_type, body) in events {
        let timestamp = body
            .get("event_timestamp")
            .and_then(Value::as_i64)
            .or_else(|| claims.get("iat").and_then(Value::as_i64));
        let Some(timestamp) = timestamp else { continue };
        let until = body
            .get("retain_until")
            .and_then(Value::as_i64)
            .unwrap_or(timestamp + FALLBACK_RETENTION_SECS);
        let subject = &body["subject"];
        match event_type.as_str() {
            SESSION_REVOKED => match subject["format"].as_str() {
                Some("complex") => {
                    let user_iss = subject["user"]["iss"].as_str();
                    if user_iss.is_some_and(|i| i != issuer) {
                        continue;
                    }
                    if let Some(sid) = subject["session"]["id"].as_str() {
                        out.push(Revocation::Session {
                            sid: sid.to_owned(),
                            until,
                        });
                    }
                }
                Some("iss_sub") if subject["iss"].as_str() == Some(issuer) => {
                    if let Some(sub) = subject["sub"].as_str() {
                        out.push(Revocation::Subject {
                            sub: sub.to_owned(),
                            issued_before: timestamp,
                            until,
                        });
                    }
                }
                _ => {}
            },
            GRANT_REVOKED if subject["format"].as_str() == Some("complex") => {
                let user = &subject["user"];
                if !user.is_null() && user["iss"].as_str() != Some(issuer) {
                    continue;
                }
                let sub = match user["sub"].as_str() {
                    Some(sub) if !sub.is_empty() => Some(sub.to_owned()),
                    // A user without a `sub` (or with an empty one) is
                    // malformed: never widen it to the whole client.
                    _ if !user.is_null() => continue,
                    _ => None,
                };
                if let Some(client_id) = subject["client"]["id"].as_str() {
                    out.push(Revocation::Grant {
                        client_id: client_id.to_owned(),
                        sub,
                        issued_before: timestamp,
                        until,
                    });
                }
            }
            TOKEN_REVOKED => {
                if let Some(jti) = subject["id"].as_str() {
                    let until = body
                        .get("exp")
                        .and_then(Value::as_i64)
                        .map(|exp| exp + leeway_secs)
                        .unwrap_or(until);
                    out.push(Revocation::Token {
                        jti: jti.to_owned(),
                        until,
                    });
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ISS: &str = "https://id.example.com";

    #[test]
    fn subject_revocation_covers_tokens_issued_at_or_before_the_event_only() {
        let mut set = RevocationSet::default();
        set.apply(Revocation::Subject {
            sub: "ada".into(),
            issued_before: 1_000,
            until: 5_000,
        });
        assert!(set.is_revoked(None, None, "ada", None, Some(999)));
        assert!(
            set.is_revoked(None, None, "ada", None, Some(1_000)),
            "iat equal to the event"
        );
        assert!(
            !set.is_revoked(None, None, "ada", None, Some(1_001)),
            "signed in again after"
        );
        assert!(
            set.is_revoked(None, None, "ada", None, None),
            "no iat: treated as old"
        );
        assert!(!set.is_revoked(None, None, "bob", None, Some(1)));
        // A later event moves the bound forward, never back.
        set.apply(Revocation::Subject {
            sub: "ada".into(),
            issued_before: 2_000,
            until: 6_000,
        });
        assert!(set.is_revoked(None, None, "ada", None, Some(1_500)));
        set.apply(Revocation::Subject {
            sub: "ada".into(),
            issued_before: 10,
            until: 100,
        });
        assert!(set.is_revoked(None, None, "ada", None, Some(1_500)));
    }

    #[test]
    fn session_revocation_covers_every_token_of_the_session() {
        let mut set = RevocationSet::default();
        set.apply(Revocation::Session {
            sid: "s1".into(),
            until: 5_000,
        });
        assert!(set.is_revoked(Some("any"), Some("s1"), "ada", None, Some(9_999)));
        assert!(!set.is_revoked(Some("any"), Some("s2"), "ada", None, Some(1)));
        assert!(!set.is_revoked(Some("any"), None, "ada", None, Some(1)));
    }

    #[test]
    fn jti_revocation_expires_with_its_token() {
        let mut set = RevocationSet::default();
        set.apply(Revocation::Token {
            jti: "j1".into(),
            until: 1_030,
        });
        set.apply(Revocation::Session {
            sid: "s1".into(),
            until: 2_000,
        });
        assert!(set.is_revoked(Some("j1"), None, "ada", None, Some(1)));
        set.prune(1_029);
        assert!(set.is_revoked(Some("j1"), None, "ada", None, Some(1)));
        set.prune(1_030);
        assert!(
            !set.is_revoked(Some("j1"), None, "ada", None, Some(1)),
            "pruned at exp + leeway"
        );
        assert_eq!(set.len(), 1, "the session entry stays until its own bound");
    }

    #[test]
    fn sets_are_read_per_event_type() {
        let session = json!({"iss": ISS, "iat": 1_000, "events": {SESSION_REVOKED: {
            "subject": {"format": "complex", "session": {"format": "opaque", "id": "s1"},
                        "user": {"format": "iss_sub", "iss": ISS, "sub": "ada"}},
            "event_timestamp": 1_000, "retain_until": 4_000}}});
        assert_eq!(
            revocations_in_set(&session, ISS, 30),
            vec![Revocation::Session {
                sid: "s1".into(),
                until: 4_000
            }]
        );
        let subject = json!({"iss": ISS, "iat": 1_000, "events": {SESSION_REVOKED: {
            "subject": {"format": "iss_sub", "iss": ISS, "sub": "ada"},
            "event_timestamp": 1_000}}});
        assert_eq!(
            revocations_in_set(&subject, ISS, 30),
            vec![Revocation::Subject {
                sub: "ada".into(),
                issued_before: 1_000,
                until: 1_000 + FALLBACK_RETENTION_SECS
            }]
        );
        let token = json!({"iss": ISS, "iat": 1_000, "events": {TOKEN_REVOKED: {
            "subject": {"format": "opaque", "id": "j1"}, "exp": 1_900, "sub": "ada",
            "event_timestamp": 1_000, "retain_until": 4_000}}});
        assert_eq!(
            revocations_in_set(&token, ISS, 30),
            vec![Revocation::Token {
                jti: "j1".into(),
                until: 1_930
            }]
        );
    }

    #[test]
    fn grant_revocation_covers_the_clients_tokens_for_that_user_or_everyone() {
        let mut set = RevocationSet::default();
        set.apply(Revocation::Grant {
            client_id: "app".into(),
            sub: Some("ada".into()),
            issued_before: 1_000,
            until: 5_000,
        });
        assert!(set.is_revoked(None, None, "ada", Some("app"), Some(1_000)));
        assert!(!set.is_revoked(None, None, "ada", Some("app"), Some(1_001)));
        assert!(!set.is_revoked(None, None, "ada", Some("other"), Some(1)));
        assert!(!set.is_revoked(None, None, "bob", Some("app"), Some(1)));
        assert!(!set.is_revoked(None, None, "ada", None, Some(1)));
        set.apply(Revocation::Grant {
            client_id: "app".into(),
            sub: None,
            issued_before: 2_000,
            until: 6_000,
        });
        assert!(set.is_revoked(None, None, "bob", Some("app"), Some(2_000)));
        assert!(set.is_revoked(None, None, "app", Some("app"), None));
        assert!(!set.is_revoked(None, None, "bob", Some("app"), Some(2_001)));
        set.prune(5_000);
        assert_eq!(set.len(), 1);
        set.prune(6_000);
        assert!(set.is_empty());

        let event = |subject: serde_json::Value| {
            json!({"iss": ISS, "events": {GRANT_REVOKED: {
                "subject": subject, "event_timestamp": 1_000, "retain_until": 4_000}}})
        };
        assert_eq!(
            revocations_in_set(
                &event(json!({"format": "complex",
                    "client": {"format": "opaque", "id": "app"},
                    "user": {"format": "iss_sub", "iss": ISS, "sub": "ada"}})),
                ISS,
                30
            ),
            vec![Revocation::Grant {
                client_id: "app".into(),
                sub: Some("ada".into()),
                issued_before: 1_000,
                until: 4_000
            }]
        );
        assert_eq!(
            revocations_in_set(
                &event(json!({"format": "complex", "client": {"format": "opaque", "id": "app"}})),
                ISS,
                30
            ),
            vec![Revocation::Grant {
                client_id: "app".into(),
                sub: None,
                issued_before: 1_000,
                until: 4_000
            }]
        );
        // Another issuer's user, or a user without `sub`: ignored, never
        // widened to the whole client.
        for user in [
            json!({"format": "iss_sub", "iss": "https://evil.example", "sub": "ada"}),
            json!({"format": "iss_sub", "iss": ISS}),
            json!({"format": "iss_sub", "iss": ISS, "sub": ""}),
            json!({"format": "iss_sub", "iss": ISS, "sub": 7}),
        ] {
            let set = event(json!({"format": "complex",
                "client": {"format": "opaque", "id": "app"}, "user": user}));
            assert!(revocations_in_set(&set, ISS, 30).is_empty(), "{set}");
        }
    }

    #[test]
    fn other_issuers_and_unknown_event_types_are_ignored() {
        let foreign = json!({"iss": ISS, "events": {SESSION_REVOKED: {
            "subject": {"format": "iss_sub", "iss": "https://evil.example", "sub": "ada"},
            "event_timestamp": 1_000}}});
        assert!(revocations_in_set(&foreign, ISS, 30).is_empty());
        let unknown = json!({"iss": ISS, "events": {"urn:example:other": {
            "subject": {"format": "opaque", "id": "x"}, "event_timestamp": 1}}});
        assert!(revocations_in_set(&unknown, ISS, 30).is_empty());
        assert!(revocations_in_set(&json!({"iss": ISS}), ISS, 30).is_empty());
    }
}
