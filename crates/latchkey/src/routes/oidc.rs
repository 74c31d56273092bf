//! Discovery, UserInfo and RP-initiated logout.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::CookieJar;

use super::render;
use crate::app::AppState;
use crate::crypto::SecretToken;
use crate::http::auth::{clear_session_cookie, MaybeSignedIn};
use crate::http::client::Caller;
use crate::http::csrf::{self, Binding};
use crate::http::HttpError;
use crate::identity;
use crate::oauth::authorize::collect_params;
use crate::oauth::clients;
use crate::scope::Scope;

/// `GET /.well-known/openid-configuration` and `/.well-known/oauth-authorization-server`.
pub async fn discovery(State(state): State<AppState>) -> Response {
    let mut response = axum::Json(crate::oidc::metadata(&state)).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// RFC 6750 §3 error with its `WWW-Authenticate` header.
pub(crate) fn bearer_error(status: StatusCode, error: &str, description: &str) -> Response {
    let challenge = if error.is_empty() {
        "Bearer realm=\"latchkey\"".to_owned()
    } else {
        format!("Bearer realm=\"latchkey\", error=\"{error}\", error_description=\"{description}\"")
    };
    let code = if error.is_empty() {
        "invalid_token"
    } else {
        error
    };
    let mut response = (
        status,
        axum::Json(serde_json::json!({ "error": code, "error_description": description })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}

/// The bearer token of `Authorization: Bearer <token>` (RFC 6750 §2.1; the
/// scheme is case-insensitive, RFC 7235 §2.1): `Ok(None)` without the header
/// or with another scheme, `Err` for a malformed or repeated one. The
/// server's bearer endpoints and `latchkey-verify` share this one parser.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, &'static str> {
    use latchkey_verify::bearer::BearerError;
    latchkey_verify::bearer::bearer_token(headers).map_err(|e| match e {
        BearerError::Repeated => "send one Authorization header",
        BearerError::Malformed => "the Authorization header must be 'Bearer <token>'",
    })
}

/// `GET|POST /oauth2/userinfo` with `Authorization: Bearer`.
pub async fn userinfo(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let token = match bearer_token(&headers) {
        Ok(Some(token)) => token,
        Ok(None) => {
            return bearer_error(StatusCode::UNAUTHORIZED, "", "an access token is required")
        }
        Err(message) => return bearer_error(StatusCode::BAD_REQUEST, "invalid_request", message),
    };
    let info = match crate::tokens::introspect(&state, None, token, Some("access_token")).await {
        Ok(i) => i,
        Err(e) => return HttpError::from(e).into_response(),
    };
    if !info.active || info.token_type != Some("Bearer") {
        return bearer_error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the access token is invalid, expired or revoked",
        );
    }
    let scope = Scope::from_stored(info.scope.as_deref().unwrap_or_default());
    if !scope.contains("openid") {
        return bearer_error(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "the openid scope is required",
        );
    }
    let user =
        match identity::find_by_id(&state.pool, info.sub.as_deref().unwrap_or_default()).await {
            Ok(Some(u)) if !u.disabled => u,
            Ok(_) => {
                return bearer_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    "the access token is invalid, expired or revoked",
                )
            }
            Err(e) => return HttpError::from(e).into_response(),
        };
    let mut response = axum::Json(serde_json::Value::Object(crate::oidc::user_claims(
        &user, &scope,
    )))
    .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn verify_hint(state: &AppState, token: &str) -> Option<crate::oidc::IdTokenHint> {
    crate::oidc::verify_id_token_hint(
        &state.keys.verification_keys(),
        state.config.issuer_str(),
        token,
        state.clock.now(),
    )
}

/// `GET|POST /oauth2/logout` (OpenID Connect RP-Initiated Logout 1.0).
///
/// With a valid `id_token_hint` for the current session, the session ends at
/// once. Otherwise the user confirms on a page (a CSRF-protected POST), so a
/// third-party page cannot sign users out (logout CSRF).
/// `post_logout_redirect_uri` must exactly match one registered by the client.
#[allow(clippy::too_many_arguments)] // axum extractors, one per request part
pub async fn logout(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    jar: CookieJar,
    RawQuery(query): RawQuery,
    MaybeSignedIn(who): MaybeSignedIn,
    Caller(origin): Caller,
    body: Bytes,
) -> Response {
    let raw = if method == Method::POST {
        body.to_vec()
    } else {
        query.unwrap_or_default().into_bytes()
    };
    let params = match collect_params(&raw) {
        Ok(p) => p,
        Err(e) => {
            return HttpError::page(StatusCode::BAD_REQUEST, "invalid_request", e).into_response()
        }
    };
    let get = |k: &str| params.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let hint = match get("id_token_hint") {
        Some(t) => match verify_hint(&state, t) {
            Some(h) => Some(h),
            None => {
                return HttpError::page(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "The id_token_hint is not a valid ID token from this server.",
                )
                .into_response()
            }
        },
        None => None,
    };
    let client_id = hint
        .as_ref()
        .map(|h| h.client_id.clone())
        .or_else(|| get("client_id").map(str::to_owned));
    if let (Some(h), Some(c)) = (&hint, get("client_id")) {
        if h.client_id != c {
            return HttpError::page(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "client_id does not match the id_token_hint.",
            )
            .into_response();
        }
    }
    let client = match &client_id {
        Some(id) => match clients::find(&state.pool, id).await {
            Ok(c) => c,
            Err(e) => return HttpError::from(e).as_page().into_response(),
        },
        None => None,
    };
    let redirect = match get("post_logout_redirect_uri") {
        Some(uri) => match &client {
            Some(c) if c.post_logout_redirect_uris.iter().any(|r| r == uri) => Some(uri.to_owned()),
            _ => {
                return HttpError::page(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "post_logout_redirect_uri is not registered for this client.",
                )
                .into_response()
            }
        },
        None => None,
    };
    let state_param = get("state").map(str::to_owned);
    let confirmed_by_hint = match (&hint, &who) {
        (Some(h), Some(w)) => h.sid.as_deref() == Some(w.session.handle.as_str()),
        (Some(_), None) => true,
        _ => false,
    };
    let confirmed_by_form = method == Method::POST
        && get("confirm") == Some("yes")
        && match &who {
            Some(w) => csrf::verify(
                &headers,
                &state.issuer_origin,
                &state.csrf_key,
                Binding::Session(&w.session.id_hash),
                get("csrf_token"),
            )
            .is_ok(),
            None => true,
        };
    let https = state.config.is_https();
    if !(confirmed_by_hint || confirmed_by_form || who.is_none()) {
        let w = who
            .as_ref()
            .map(|w| {
                (
                    w.user.email.as_str().to_owned(),
                    csrf::token_for(&state.csrf_key, Binding::Session(&w.session.id_hash)),
                )
            })
            .unwrap_or_default();
        let html = render(
            &state,
            "logout.html",
            minijinja::context! { signed_in => true, signed_out => false, email => w.0, csrf_token => w.1, client_id, client_name => client.as_ref().map(|c| c.name.clone()), post_logout_redirect_uri => redirect, state => state_param },
        );
        return match html {
            Ok(h) => h.into_response(),
            Err(e) => e.into_response(),
        };
    }
    let mut jar = jar;
    if who.is_some() {
        let token = crate::http::auth::session_token(&headers, https);
        if let Some(token) = token.as_ref().and_then(|t| SecretToken::parse(t.expose())) {
            let detail = format!("RP-initiated by {}", client_id.as_deref().unwrap_or("-"));
            if let Err(e) = crate::login::sign_out::sign_out(
                &state,
                &token,
                "signed out (RP-initiated)",
                &detail,
                &origin,
            )
            .await
            {
                return HttpError::from(e).as_page().into_response();
            }
        }
        jar = clear_session_cookie(jar, https);
    }
    match redirect {
        Some(uri) => {
            let params: Vec<(String, String)> = state_param
                .map(|s| vec![("state".to_owned(), s)])
                .unwrap_or_default();
            let target = if params.is_empty() {
                uri
            } else {
                crate::oauth::authorize::redirect_with(&uri, &params)
            };
            (jar, Redirect::to(&target)).into_response()
        }
        None => match render(
            &state,
            "logout.html",
            minijinja::context! { signed_in => false, signed_out => true },
        ) {
            Ok(h) => (jar, h).into_response(),
            Err(e) => e.into_response(),
        },
    }
}
