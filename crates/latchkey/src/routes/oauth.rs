//! `/oauth2/token`, `/oauth2/revoke`, `/oauth2/introspect` and
//! `/.well-known/jwks.json`.
//!
//! The token endpoint parses the form itself so that duplicated parameters
//! are refused (`invalid_request`, RFC 6749 §3.2), and answers every error as
//! an RFC 6749 §5.2 object with `Cache-Control: no-store`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use crate::app::AppState;
use crate::http::client::Caller;
use crate::oauth::clients::{self, Client, ClientCredentials};
use crate::oauth::grants;
use crate::oauth::{OAuthError, OAuthErrorCode};
use crate::scope::Scope;

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
        if let Some(secs) = self.retry_after {
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

/// A form body with each parameter at most once.
pub struct OAuthForm(BTreeMap<String, String>);

impl OAuthForm {
    fn parse(headers: &HeaderMap, body: &[u8]) -> Result<OAuthForm, OAuthError> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        {
            return Err(OAuthError::invalid_request(
                "send the parameters as application/x-www-form-urlencoded",
            ));
        }
        if std::str::from_utf8(body).is_err() {
            return Err(OAuthError::invalid_request("the body is not UTF-8"));
        }
        let mut map = BTreeMap::new();
        for (k, v) in url::form_urlencoded::parse(body) {
            if map.insert(k.to_string(), v.to_string()).is_some() {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {k} appears more than once"
                )));
            }
        }
        Ok(OAuthForm(map))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("missing parameter {name}")))
    }

    fn scope(&self) -> Result<Option<Scope>, OAuthError> {
        self.get("scope")
            .map(Scope::parse)
            .transpose()
            .map_err(|e| OAuthError::new(OAuthErrorCode::InvalidScope, e.to_string()))
    }
}

/// Reads client credentials from HTTP Basic or the form (never both).
fn credentials(headers: &HeaderMap, form: &OAuthForm) -> Result<ClientCredentials, OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("basic")
                .then(|| rest.trim().to_owned())
        });
    let form_secret = form.get("client_secret");
    match (basic, form_secret) {
        (Some(_), Some(_)) => Err(OAuthError::invalid_request(
            "use one client authentication method, not two",
        )),
        (Some(encoded), None) => {
            let invalid = || OAuthError {
                code: OAuthErrorCode::InvalidClient,
                description: "malformed Basic credentials".into(),
                via_basic: true,
                extension: None,
                retry_after: None,
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| invalid())?;
            let text = String::from_utf8(decoded).map_err(|_| invalid())?;
            let (id, secret) = text.split_once(':').ok_or_else(invalid)?;
            // RFC 6749 §2.3.1: both parts are form-urlencoded.
            let decode = |s: &str| {
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            let client_id = decode(id);
            if form.get("client_id").is_some_and(|f| f != client_id) {
                return Err(OAuthError::invalid_request(
                    "client_id in the form differs from the Basic credentials",
                ));
            }
            Ok(ClientCredentials::Secret {
                client_id,
                secret: decode(secret),
                via_basic: true,
            })
        }
        (None, Some(secret)) => Ok(ClientCredentials::Secret {
            client_id: form.require("client_id")?.to_owned(),
            secret: secret.to_owned(),
            via_basic: false,
        }),
        (None, None) => match form.get("client_id") {
            Some(id) => Ok(ClientCredentials::PublicId {
                client_id: id.to_owned(),
            }),
            None => Err(OAuthError::new(
                OAuthErrorCode::InvalidClient,
                "client authentication is required",
            )),
        },
    }
}

async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    form: &OAuthForm,
    endpoint: &str,
) -> Result<Client, OAuthError> {
    if let Some(assertion_type) = form.get("client_assertion_type") {
        if assertion_type != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
            return Err(OAuthError::invalid_request("client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer"));
        }
        if form.get("client_secret").is_some() || headers.contains_key(header::AUTHORIZATION) {
            return Err(OAuthError::invalid_request(
                "use one client authentication method, not two",
            ));
        }
        let assertion = form.require("client_assertion")?;
        let issuer = state.config.issuer_str();
        let ctx = clients::AssertionContext {
            audiences: vec![issuer.to_owned(), format!("{issuer}{endpoint}")],
            now: state.clock.now(),
            leeway_secs: state.config.tokens.leeway_secs,
            pool: &state.pool,
        };
        let client = clients::authenticate_assertion(assertion, &ctx).await?;
        if form.get("client_id").is_some_and(|id| id != client.id) {
            return Err(OAuthError::invalid_request(
                "client_id differs from the client assertion",
            ));
        }
        return Ok(client);
    }
    let creds = credentials(headers, form)?;
    Ok(clients::authenticate(&state.pool, &creds).await?)
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
    let form = OAuthForm::parse(&headers, &body)?;
    let grant_type = form.require("grant_type")?;
    let client = authenticate(&state, &headers, &form, "/oauth2/token").await?;
    if let Err(retry_after) = state.token_rate.check(&client.id, state.clock.now()) {
        return Err(OAuthError::rate_limited(
            "token requests from this client",
            retry_after,
        ));
    }
    let response = match grant_type {
        "client_credentials" => {
            grants::client_credentials::grant(&state, &client, form.scope()?).await?
        }
        "refresh_token" => {
            grants::refresh_token::grant(
                &state,
                &client,
                form.require("refresh_token")?,
                form.scope()?,
            )
            .await?
        }
        "authorization_code" => {
            grants::authorization_code::grant(
                &state,
                &client,
                form.require("code")?,
                form.get("redirect_uri"),
                form.get("code_verifier"),
            )
            .await?
        }
        grants::device_code::GRANT_TYPE => {
            grants::device_code::grant(&state, &client, form.require("device_code")?).await?
        }
        // Not offered (yet or ever): password, implicit, and grants this server does not implement.
        other => {
            return Err(OAuthError::new(
                OAuthErrorCode::UnsupportedGrantType,
                format!("grant_type {other:?} is not supported"),
            ))
        }
    };
    Ok(no_store(response))
}

/// `POST /oauth2/revoke` (RFC 7009): 200 whatever the token was.
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let form = OAuthForm::parse(&headers, &body)?;
    let token = form.require("token")?.to_owned();
    let client = authenticate(&state, &headers, &form, "/oauth2/revoke").await?;
    crate::tokens::revoke(&state, &client, &token).await?;
    Ok(no_store(serde_json::json!({})))
}

/// `POST /oauth2/introspect` (RFC 7662): confidential clients only.
pub async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    let form = OAuthForm::parse(&headers, &body)?;
    let token = form.require("token")?.to_owned();
    let client = authenticate(&state, &headers, &form, "/oauth2/introspect").await?;
    if !client.confidential {
        return Err(OAuthError::new(
            OAuthErrorCode::InvalidClient,
            "introspection needs a confidential client",
        ));
    }
    let result =
        crate::tokens::introspect(&state, Some(&client), &token, form.get("token_type_hint"))
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
    let form = OAuthForm::parse(&headers, &body)?;
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
