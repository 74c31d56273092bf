//! Who is calling: client IP and user agent, for throttling and the audit log.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;

use crate::app::AppState;
use crate::session::Origin;

/// The caller's IP (the socket peer, or the last `X-Forwarded-For` hop when
/// `http.trust_forwarded_for` is set) and user agent.
#[derive(Debug, Clone)]
pub struct Caller(pub Origin);

impl FromRequestParts<AppState> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .unwrap_or_default();
        let forwarded = state.config.http.trust_forwarded_for.then(|| {
            parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .map(|v| v.trim().to_owned())
                .filter(|v| v.parse::<std::net::IpAddr>().is_ok())
        });
        let ip = forwarded.flatten().unwrap_or(peer);
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok(Caller(Origin { ip, user_agent }))
    }
}
