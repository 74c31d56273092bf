//! `GET /oauth2/revocations/stream`: the revocation feed as Server-Sent
//! Events (the wire protocol is in `docs/revocation-feed.md`).
//!
//! Reads the bearer token and `Last-Event-ID`, asks
//! `revocation::feed::authorize_reader` whether the token may read the feed,
//! and streams: `retry: 1000`, the retained events after `Last-Event-ID`,
//! `event: synced`, then live events, and a `: keepalive` comment every
//! `revocation_feed.keepalive_secs`. Before each keepalive the stream asks
//! `authorize_reader` again and ends if the token is no longer active, or
//! its client was deleted or lost the `latchkey:revocations` scope. The
//! stream also ends when the token expires (the client reconnects with a new
//! one), when the client is too slow, when this instance fails to publish
//! events (the client reconnects, see `revocation::feed`), or when the
//! server shuts down.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::{broadcast, watch};

use super::oidc::{bearer_error, bearer_token};
use crate::app::AppState;
use crate::revocation::feed::{self, Published, ReaderError, Subscription};
use crate::revocation::FEED_SCOPE;

/// What the client is told to wait before reconnecting (milliseconds).
const RETRY_MS: u64 = 1000;

/// `Last-Event-ID`: absent, or one decimal sequence number.
fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, ()> {
    let mut values = headers.get_all("last-event-id").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(());
    }
    let text = value.to_str().map_err(|_| ())?.trim();
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    text.parse::<i64>().map(Some).map_err(|_| ())
}

fn invalid_request(message: &str) -> Response {
    bearer_error(StatusCode::BAD_REQUEST, "invalid_request", message)
}

/// `GET /oauth2/revocations/stream`.
pub async fn stream(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let token = match bearer_token(&headers) {
        Ok(Some(token)) => token,
        Ok(None) => {
            return bearer_error(
                StatusCode::UNAUTHORIZED,
                "",
                "a client-credentials access token is required",
            )
        }
        Err(message) => return invalid_request(message),
    };
    let reader = match feed::authorize_reader(&state, token).await {
        Ok(reader) => reader,
        Err(ReaderError::InvalidToken) => {
            return bearer_error(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the access token is invalid, expired or revoked",
            )
        }
        Err(ReaderError::NotAClientToken) => {
            return bearer_error(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                "the feed is read with a client-credentials token",
            )
        }
        Err(ReaderError::MissingScope) => {
            let mut response = bearer_error(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                "the token lacks the latchkey:revocations scope",
            );
            let challenge = format!(
                "Bearer realm=\"latchkey\", error=\"insufficient_scope\", error_description=\"the token lacks the {FEED_SCOPE} scope\", scope=\"{FEED_SCOPE}\""
            );
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            return response;
        }
        Err(ReaderError::Store(e)) => return crate::http::HttpError::from(e).into_response(),
    };
    let Ok(after) = last_event_id(&headers) else {
        return invalid_request("Last-Event-ID must be one decimal event id");
    };
    let Ok(subscription) = state.revocation_feed.subscribe(after).await else {
        return crate::http::HttpError::json(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the revocation feed is starting; retry shortly",
        )
        .with_header(header::RETRY_AFTER, "1")
        .into_response();
    };
    let remaining = (reader.expires_at - state.clock.now()).max(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(remaining as u64);
    let keepalive = state.revocation_feed.keepalive();
    let reader = ReaderCheck {
        state: state.clone(),
        token: token.to_owned(),
        every: keepalive,
    };
    let events = events(subscription, deadline, reader);
    let mut response = Sse::new(events).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn revocation(published: &Published) -> Event {
    Event::default()
        .id(published.seq.to_string())
        .event("revocation")
        .data(&*published.set)
}

/// What a stream needs to ask again, at every keepalive, whether its reader
/// may still read.
struct ReaderCheck {
    state: AppState,
    /// The bearer token the stream was opened with (never logged).
    token: String,
    every: Duration,
}

impl ReaderCheck {
    /// Still allowed? A database error counts as no: the stream ends and the
    /// client reconnects (and is asked again).
    async fn still_allowed(&self) -> bool {
        feed::authorize_reader(&self.state, &self.token)
            .await
            .is_ok()
    }
}

struct Stream {
    started: bool,
    backlog: std::vec::IntoIter<Published>,
    synced: Option<String>,
    last_sent: i64,
    live: broadcast::Receiver<Published>,
    closing: watch::Receiver<bool>,
    publishing: watch::Receiver<bool>,
    deadline: tokio::time::Instant,
    reader: ReaderCheck,
    next_check: tokio::time::Instant,
}

enum Next {
    Live(Published),
    Skip,
    Keepalive,
    End,
}

/// The stream's events: `retry`, backlog, `synced`, then live events and
/// keepalives until the deadline, a lag, a failed reader check, a
/// publishing failure, or shutdown.
fn events(
    subscription: Subscription,
    deadline: tokio::time::Instant,
    reader: ReaderCheck,
) -> impl futures_util::Stream<Item = Result<Event, Infallible>> {
    let synced =
        serde_json::json!({ "head": subscription.head, "keepalive_secs": reader.every.as_secs() })
            .to_string();
    let state = Stream {
        started: false,
        backlog: subscription.backlog.into_iter(),
        synced: Some(synced),
        last_sent: 0,
        live: subscription.live,
        closing: subscription.closing,
        publishing: subscription.publishing,
        deadline,
        next_check: tokio::time::Instant::now() + reader.every,
        reader,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        if !s.started {
            s.started = true;
            let retry = Event::default().retry(Duration::from_millis(RETRY_MS));
            return Some((Ok(retry), s));
        }
        if let Some(published) = s.backlog.next() {
            s.last_sent = published.seq;
            return Some((Ok(revocation(&published)), s));
        }
        if let Some(synced) = s.synced.take() {
            return Some((Ok(Event::default().event("synced").data(synced)), s));
        }
        loop {
            let next = tokio::select! {
                received = s.live.recv() => match received {
                    Ok(p) if p.seq > s.last_sent => Next::Live(p),
                    Ok(_) => Next::Skip,
                    // Too slow (lagged) or the feed is gone: the client resumes.
                    Err(_) => Next::End,
                },
                _ = tokio::time::sleep_until(s.deadline) => Next::End,
                _ = s.closing.wait_for(|closing| *closing) => Next::End,
                // The publisher fails: no more keepalives that would say
                // "up to date" (see `revocation::feed`).
                _ = s.publishing.wait_for(|publishing| !*publishing) => Next::End,
                _ = tokio::time::sleep_until(s.next_check) => Next::Keepalive,
            };
            match next {
                Next::Live(published) => {
                    s.last_sent = published.seq;
                    return Some((Ok(revocation(&published)), s));
                }
                Next::Skip => continue,
                Next::Keepalive => {
                    if !s.reader.still_allowed().await || !*s.publishing.borrow() {
                        return None;
                    }
                    s.next_check = tokio::time::Instant::now() + s.reader.every;
                    return Some((Ok(Event::default().comment("keepalive")), s));
                }
                Next::End => return None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        map
    }

    #[test]
    fn last_event_id_is_one_decimal_number() {
        assert_eq!(last_event_id(&headers(&[])), Ok(None));
        assert_eq!(
            last_event_id(&headers(&[("last-event-id", "42")])),
            Ok(Some(42))
        );
        for bad in ["", "-1", "4x", "1e3", "99999999999999999999", " "] {
            assert_eq!(
                last_event_id(&headers(&[("last-event-id", bad)])),
                Err(()),
                "{bad:?}"
            );
        }
        assert_eq!(
            last_event_id(&headers(&[("last-event-id", "1"), ("last-event-id", "2")])),
            Err(())
        );
    }

    #[test]
    fn bearer_token_is_one_header_one_token() {
        assert_eq!(bearer_token(&headers(&[])), Ok(None));
        assert_eq!(
            bearer_token(&headers(&[("authorization", "bearer abc")])),
            Ok(Some("abc"))
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Basic abc")])),
            Ok(None)
        );
        assert!(bearer_token(&headers(&[("authorization", "Bearer a b")])).is_err());
        assert!(bearer_token(&headers(&[("authorization", "Bearer")])).is_err());
        assert!(bearer_token(&headers(&[
            ("authorization", "Bearer a"),
            ("authorization", "Bearer b")
        ]))
        .is_err());
    }
}
