//! Authenticated WebSockets (feature `ws`): authenticate the upgrade, then
//! close the connection with code 1008 (policy violation) the moment its
//! token expires or a revocation event hits it.
//!
//! [`WebSocketAuth`] authenticates the upgrade request, trying in order:
//!
//! 1. `Authorization: Bearer <token>` (native clients, servers);
//! 2. `Sec-WebSocket-Protocol` — browsers cannot set headers on a WebSocket,
//!    so the page offers two subprotocols, `latchkey.bearer` and
//!    `latchkey.bearer.<token>`; the server answers with `latchkey.bearer`
//!    only ([`WebSocketAuth::accept`]), never echoing the token;
//! 3. the browser's Latchkey session cookie, when the API and Latchkey share
//!    a site and [`websocket_cookie_origins`](crate::VerifierBuilder::websocket_cookie_origins)
//!    lists the page's `Origin` (otherwise any site could open the socket
//!    with the user's cookie): the cookie is forwarded once, at upgrade, to
//!    `GET <issuer>/account` (`Accept: application/json`), and the
//!    connection is bound to that session (`sid`) and user.
//!
//! Then [`TokenWatch::ended`] resolves when the token expires (by the
//! verifier's clock, re-read at least every second so an injected clock is
//! honoured) or the revocation set changes in a way that covers it (sign-out,
//! revocation, user disabled, …), or the feed-failure policy stops accepting
//! it; [`close_policy_violation`] sends the close frame.
//!
//! ```no_run
//! use axum::extract::ws::{Message, WebSocketUpgrade};
//! use axum::response::Response;
//! use latchkey_verify::ws::{close_policy_violation, WebSocketAuth};
//!
//! async fn ws(upgrade: WebSocketUpgrade, auth: WebSocketAuth) -> Response {
//!     let mut watch = auth.watch();
//!     auth.accept(upgrade).on_upgrade(move |mut socket| async move {
//!         loop {
//!             tokio::select! {
//!                 reason = watch.ended() => {
//!                     let _ = close_policy_violation(&mut socket, reason).await;
//!                     break;
//!                 }
//!                 message = socket.recv() => match message {
//!                     Some(Ok(Message::Text(text))) => {
//!                         if socket.send(Message::Text(text)).await.is_err() { break }
//!                     }
//!                     Some(Ok(_)) => {}
//!                     _ => break,
//!                 },
//!             }
//!         }
//!     })
//! }
//! ```
//!
//! Must not: decide what is revoked (the verifier does).

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use serde::Deserialize;
use tokio::sync::watch;

use crate::bearer::bearer_token;
use crate::claims::{Claims, AMR_MULTI_FACTOR};
use crate::error::AuthError;
use crate::extract::AuthRejection;
use crate::jose::VerifyError;
use crate::verifier::Verifier;

/// The subprotocol a browser offers (with `latchkey.bearer.<token>`) and the
/// server answers.
pub const BEARER_PROTOCOL: &str = "latchkey.bearer";
/// WebSocket close code "policy violation" (RFC 6455 §7.4.1).
pub const POLICY_VIOLATION: u16 = 1008;
/// How often an open connection re-reads the clock at most.
const RECHECK: Duration = Duration::from_secs(1);
const SESSION_COOKIES: [&str; 2] = ["__Host-latchkey_session", "latchkey_session"];

/// How the upgrade was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer`.
    Header,
    /// `Sec-WebSocket-Protocol: latchkey.bearer, latchkey.bearer.<token>`.
    Subprotocol,
    /// The Latchkey session cookie, checked with the issuer.
    SessionCookie,
}

/// An authenticated WebSocket upgrade request.
#[derive(Debug, Clone)]
pub struct WebSocketAuth {
    /// The claims (for a session cookie: `sub`, `roles`, `sid`, and the
    /// session's end as `exp`).
    pub claims: Claims,
    /// Where the credential came from.
    pub credential: Credential,
    verifier: Verifier,
}

/// Why a connection must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The token (or session) expired.
    Expired,
    /// A revocation event covers it.
    Revoked,
    /// The revocation feed is stale and the failure policy refuses it.
    RevocationStatusUnknown,
}

impl EndReason {
    /// The close frame's reason text.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Expired => "token expired",
            EndReason::Revoked => "token revoked",
            EndReason::RevocationStatusUnknown => "revocation status unknown",
        }
    }
}

impl WebSocketAuth {
    /// The upgrade, answering `Sec-WebSocket-Protocol: latchkey.bearer` when
    /// the token came that way (browsers drop a connection whose offered
    /// subprotocols got no answer).
    pub fn accept(&self, upgrade: WebSocketUpgrade) -> WebSocketUpgrade {
        match self.credential {
            Credential::Subprotocol => upgrade.protocols([BEARER_PROTOCOL]),
            _ => upgrade,
        }
    }

    /// A watch that resolves when the connection must close.
    pub fn watch(&self) -> TokenWatch {
        TokenWatch {
            verifier: self.verifier.clone(),
            claims: self.claims.clone(),
            updates: Some(self.verifier.revocation_updates()),
        }
    }
}

/// Resolves when an authenticated connection must end.
#[derive(Debug)]
pub struct TokenWatch {
    verifier: Verifier,
    claims: Claims,
    updates: Option<watch::Receiver<u64>>,
}

impl TokenWatch {
    /// Waits until the token expires, is revoked, or the feed policy refuses
    /// it. Cancel-safe: use it in `tokio::select!`.
    pub async fn ended(&mut self) -> EndReason {
        loop {
            match self.verifier.check_still_valid(&self.claims) {
                Ok(()) => {}
                Err(AuthError::InvalidToken(VerifyError::Expired)) => return EndReason::Expired,
                Err(AuthError::RevocationStatusUnknown) => {
                    return EndReason::RevocationStatusUnknown
                }
                Err(_) => return EndReason::Revoked,
            }
            let remaining = self
                .claims
                .exp
                .saturating_add(self.verifier.leeway_secs())
                .saturating_sub(self.verifier.now());
            let wait = Duration::from_secs(remaining.max(0) as u64).min(RECHECK);
            let verifier_gone = match self.updates.as_mut() {
                Some(updates) => tokio::select! {
                    changed = updates.changed() => changed.is_err(),
                    _ = tokio::time::sleep(wait) => false,
                },
                None => {
                    tokio::time::sleep(wait).await;
                    false
                }
            };
            if verifier_gone {
                self.updates = None;
            }
        }
    }
}

/// Closes `socket` with code 1008 and the reason's text.
pub async fn close_policy_violation(
    socket: &mut WebSocket,
    reason: EndReason,
) -> Result<(), axum::Error> {
    socket
        .send(Message::Close(Some(CloseFrame {
            code: POLICY_VIOLATION,
            reason: reason.as_str().into(),
        })))
        .await
}

/// The token offered as `latchkey.bearer.<token>`, if the client also
/// offered `latchkey.bearer`.
fn subprotocol_token(headers: &HeaderMap) -> Option<&str> {
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    if !offered.contains(&BEARER_PROTOCOL) {
        return None;
    }
    offered
        .iter()
        .find_map(|p| p.strip_prefix("latchkey.bearer."))
        .filter(|t| !t.is_empty())
}

/// `name=value` of the Latchkey session cookie, if the request has one.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .find(|c| {
            c.split_once('=')
                .is_some_and(|(name, value)| SESSION_COOKIES.contains(&name) && !value.is_empty())
        })
        .map(str::to_owned)
}

#[derive(Deserialize)]
struct Account {
    user: AccountUser,
    #[serde(default)]
    sessions: Vec<AccountSession>,
}

#[derive(Deserialize)]
struct AccountUser {
    id: String,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Deserialize)]
struct AccountSession {
    handle: String,
    #[serde(default)]
    current: bool,
    created_at: i64,
    expires_at: i64,
    #[serde(default)]
    auth_time: Option<i64>,
    #[serde(default)]
    amr: Vec<String>,
}

/// Asks the issuer who the session cookie belongs to.
async fn session_claims(verifier: &Verifier, cookie: &str) -> Result<Claims, AuthError> {
    let inner = verifier.inner();
    let url = format!("{}/account", inner.issuer.trim_end_matches('/'));
    let response = inner
        .http
        .get(url)
        .header(header::ACCEPT, "application/json")
        .header(header::COOKIE, cookie)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|_| AuthError::IssuerUnavailable)?;
    match response.status().as_u16() {
        200 => {}
        401 | 403 => return Err(AuthError::Inactive),
        _ => return Err(AuthError::IssuerUnavailable),
    }
    let account: Account = crate::body::read_json(response, crate::body::MAX_DOCUMENT_BYTES)
        .await
        .map_err(|_| AuthError::IssuerUnavailable)?;
    let session = account
        .sessions
        .into_iter()
        .find(|s| s.current)
        .ok_or(AuthError::Inactive)?;
    let claims = Claims {
        iss: inner.issuer.clone(),
        sub: account.user.id,
        aud: None,
        exp: session.expires_at,
        iat: Some(session.created_at),
        jti: None,
        client_id: None,
        scope: String::new(),
        // As in the server's tokens: a role that needs a second factor
        // only for a session that had one.
        roles: account
            .user
            .roles
            .into_iter()
            .filter(|role| {
                !verifier.role_needs_mfa(role) || session.amr.iter().any(|m| m == AMR_MULTI_FACTOR)
            })
            .collect(),
        sid: Some(session.handle),
        auth_time: session.auth_time,
        acr: None,
        amr: session.amr,
    };
    Ok(claims)
}

impl<S> FromRequestParts<S> for WebSocketAuth
where
    S: Send + Sync,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let rejection = AuthRejection::new;
        let Some(verifier) = parts.extensions.get::<Verifier>().cloned() else {
            return Err(rejection(AuthError::VerifierMissing, parts));
        };
        match bearer_token(&parts.headers) {
            Err(e) => return Err(rejection(AuthError::InvalidRequest(e), parts)),
            Ok(Some(_)) => {
                let crate::extract::Authenticated(claims) =
                    crate::extract::Authenticated::<Claims>::from_request_parts(parts, state)
                        .await?;
                return Ok(WebSocketAuth {
                    claims,
                    credential: Credential::Header,
                    verifier,
                });
            }
            Ok(None) => {}
        }
        if let Some(token) = subprotocol_token(&parts.headers) {
            let verified = verifier
                .verify(token)
                .await
                .map_err(|e| rejection(e, parts))?;
            return Ok(WebSocketAuth {
                claims: verified.claims,
                credential: Credential::Subprotocol,
                verifier,
            });
        }
        let origin_allowed = parts
            .headers
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .is_some_and(|o| verifier.inner().cookie_origins.iter().any(|a| a == o));
        if let (true, Some(cookie)) = (origin_allowed, session_cookie(&parts.headers)) {
            let claims = session_claims(&verifier, &cookie)
                .await
                .map_err(|e| rejection(e, parts))?;
            verifier
                .check_still_valid(&claims)
                .map_err(|e| rejection(e, parts))?;
            return Ok(WebSocketAuth {
                claims,
                credential: Credential::SessionCookie,
                verifier,
            });
        }
        Err(rejection(AuthError::MissingToken, parts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn subprotocol_token_needs_the_marker_protocol_too() {
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("latchkey.bearer, latchkey.bearer.abc.def.ghi"),
        );
        assert_eq!(subprotocol_token(&h), Some("abc.def.ghi"));
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("latchkey.bearer.abc.def.ghi"),
        );
        assert_eq!(subprotocol_token(&h), None);
    }

    #[test]
    fn only_the_latchkey_session_cookie_is_forwarded() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("api_pref=dark; latchkey_session=s3cr3t; other=x"),
        );
        assert_eq!(
            session_cookie(&h).as_deref(),
            Some("latchkey_session=s3cr3t")
        );
        h.insert(header::COOKIE, HeaderValue::from_static("api_pref=dark"));
        assert_eq!(session_cookie(&h), None);
    }
}
