//! `/oauth2/token`, `/oauth2/revoke`, `/oauth2/introspect` and
//! `/.well-known/jwks.json`.
//!
//! The handlers hand the body and the `Authorization` value to `grants`
//! (parameters, client authentication, grant dispatch), keep the per-client
//! and per-address rate limits, and answer every error as an RFC 6749 §5.2
//! object with `Cache-Control: no-store`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::grants::{self, Params};
use crate::http::client::Caller;
use crate::oauth::clients::Client;
use crate::oauth::{OAuthError, OAuthErrorCode};

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let status = match self.code {
            _ if self.retry_after.is_some() => StatusCode::TOO_MANY_REQUESTS,
            OAuthErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
            OAuthErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            OAuthErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        let code = self.extension.as_deref().unwrap_or(self.code.as_str());
        let body = serde_json::json!({ "error": code, "error_description": self.description });
        let mut response = (status, axum::Json(body)).into_response();
        let h = response.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        // Every 503 says when to come back (docs/operations.md), as does a 429.
        let unavailable = self.code == OAuthErrorCode::TemporarilyUnavailable;
        if let Some(secs) = self.retry_after.or(unavailable.then_some(5)) {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                h.insert(header::RETRY_AFTER, v);
            }
        }
        if self.code == OAuthErrorCode::InvalidClient && self.via_basic {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"latchkey\""),
            );
        }
        response
    }
}

/// The request's parameters (each at most once: a duplicate is
/// `invalid_request`, RFC 6749 §3.2).
fn params(headers: &HeaderMap, body: &[u8]) -> Result<Params, OAuthError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    Params::parse(content_type, body)
}

/// Authenticates the request's client (see `grants::client_auth`). An
/// `Authorization` header that is not text still counts as present.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
    endpoint: &str,
) -> Result<Client, OAuthError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or_default());
    grants::client_auth::authenticate(state, authorization, params, endpoint).await
}

fn no_store(body: impl serde::Serialize) -> Response {
    let mut response = axum::Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
        .headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// `POST /oauth2/token`.
pub async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let params = params(&headers, &body)?;
    params.require("grant_type")?;
    let client = authenticate(&state, &headers, &params, "/oauth2/token").await?;
    if let Err(retry_after) = state.token_rate.check(&client.id, state.clock.now()) {
        return Err(OAuthError::rate_limited(
            "token requests from this client",
            retry_after,
        ));
    }
    let response = grants::dispatch(&state, &client, &params).await?;
    Ok(no_store(response))
}

/// `POST /oauth2/revoke` (RFC 7009): 200 whatever the token was.
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let form = params(&headers, &body)?;
    let token = form.require("token")?.to_owned();
    let client = authenticate(&state, &headers, &form, "/oauth2/revoke").await?;
    crate::tokens::revoke(&state, &client.id, &token).await?;
    Ok(no_store(serde_json::json!({})))
}

/// `POST /oauth2/introspect` (RFC 7662): confidential clients only.
pub async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let form = params(&headers, &body)?;
    let token = form.require("token")?.to_owned();
    let client = authenticate(&state, &headers, &form, "/oauth2/introspect").await?;
    if !client.confidential {
        return Err(OAuthError::new(
            OAuthErrorCode::InvalidClient,
            "introspection needs a confidential client",
        ));
    }
    let result = crate::tokens::introspect(
        &state,
        Some(&client.id),
        &token,
        form.get("token_type_hint"),
    )
    .await?;
    Ok(no_store(result))
}

/// `GET /.well-known/jwks.json`: the published public keys, cacheable for
/// half the pre-publication window.
pub async fn jwks(State(state): State<AppState>) -> Response {
    let set = state.keys.jwks(state.clock.now());
    let mut response = axum::Json(set).into_response();
    let cache = format!("public, max-age={}", state.keys.jwks_max_age());
    if let Ok(v) = HeaderValue::from_str(&cache) {
        response.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    response
}

/// `POST /oauth2/device_authorization` (RFC 8628 §3.1). Each request may
/// write a row, and public clients need no secret: requests are counted per
/// IP address (before anything else, so a refused request writes nothing —
/// not even a client assertion's `jti`) and per authenticated client.
pub async fn device_authorization(
    State(state): State<AppState>,
    Caller(origin): Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let now = state.clock.now();
    if let Err(retry_after) = state
        .device_rate_per_ip
        .check(&crate::throttle::ip_key(&origin.ip), now)
    {
        return Err(OAuthError::rate_limited(
            "device authorization requests from this address",
            retry_after,
        ));
    }
    let form = params(&headers, &body)?;
    let client = authenticate(&state, &headers, &form, "/oauth2/device_authorization").await?;
    if let Err(retry_after) = state.device_rate_per_client.check(&client.id, now) {
        return Err(OAuthError::rate_limited(
            "device authorization requests from this client",
            retry_after,
        ));
    }
    if !client.allows_grant(grants::device_code::GRANT_TYPE) {
        return Err(OAuthError::new(
            OAuthErrorCode::UnauthorizedClient,
            "this client may not use the device flow",
        ));
    }
    let scope = match form.scope()? {
        Some(s) if !s.is_subset(&client.scopes) => {
            return Err(OAuthError::new(
                OAuthErrorCode::InvalidScope,
                "the requested scope exceeds what this client is allowed",
            ))
        }
        Some(s) => s,
        None => client.scopes.clone(),
    };
    let (device_code, record) =
        crate::oauth::device::start(&state.pool, &client.id, &scope, state.clock.now()).await?;
    let issuer = state.config.issuer_str();
    let display = record.user_code.display();
    Ok(no_store(serde_json::json!({
        "device_code": device_code.expose(),
        "user_code": display,
        "verification_uri": format!("{issuer}/device"),
        "verification_uri_complete": format!("{issuer}/device?user_code={display}"),
        "expires_in": crate::oauth::device::DEVICE_CODE_LIFETIME_SECS,
        "interval": record.interval_secs,
    })))
}
