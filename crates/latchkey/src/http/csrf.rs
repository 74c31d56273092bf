//! CSRF protection for cookie-authenticated state changes.
//!
//! Two independent checks, both required:
//! 1. **Origin**: a browser request whose `Origin` is not the issuer's origin,
//!    or whose `Sec-Fetch-Site` is `cross-site`, is refused.
//! 2. **Synchronizer token**: forms carry `csrf_token` (JSON calls send the
//!    `X-CSRF-Token` header), equal to HMAC(key, binding). For a signed-in
//!    user the binding is the session's id hash (server-side state); before
//!    sign-in (the login form: login CSRF) it is a random value in the
//!    `csrf` cookie, so an attacker cannot mint a token for the victim.
//!
//! Handlers do not check by hand: a signed-in state change takes
//! [`CsrfForm<T>`] (form or JSON, errors in kind), [`CsrfPageForm<T>`] (a
//! form whose errors are pages) or [`SessionCsrf`] (a JSON call with the
//! `X-CSRF-Token` header and a body of its own), each of which authenticates
//! the session and checks both rules before the handler runs; a form sent
//! before sign-in calls [`check_anonymous`].

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum_extra::extract::cookie::CookieJar;
use serde::de::DeserializeOwned;

use super::auth::{SignedIn, SignedInUser};
use super::body::FormOrJson;
use super::error::HttpError;
use crate::app::AppState;
use crate::crypto::{b64url, constant_time_eq, hmac_sha256, SecretToken};

/// What a token is bound to.
pub enum Binding<'a> {
    /// A signed-in session (its stored id hash).
    Session(&'a str),
    /// An anonymous visitor's `csrf` cookie value.
    Anonymous(&'a str),
}

pub fn token_for(key: &[u8; 32], binding: Binding<'_>) -> String {
    let message = match binding {
        Binding::Session(h) => format!("session|{h}"),
        Binding::Anonymous(c) => format!("anon|{c}"),
    };
    b64url(&hmac_sha256(key, message.as_bytes()))
}

pub fn cookie_name(https: bool) -> &'static str {
    if https {
        "__Host-latchkey_csrf"
    } else {
        "latchkey_csrf"
    }
}

/// Returns the anonymous CSRF cookie value, creating the cookie if missing.
pub fn ensure_anonymous_cookie(jar: CookieJar, https: bool) -> (CookieJar, String) {
    if let Some(value) = jar.get(cookie_name(https)).map(|c| c.value().to_owned()) {
        if SecretToken::parse(&value).is_some() {
            return (jar, value);
        }
    }
    let value = SecretToken::generate().expose().to_owned();
    let cookie = super::cookies::build(cookie_name(https), value.clone(), https);
    (jar.add(cookie), value)
}

fn forbidden(message: &str) -> HttpError {
    HttpError::json(StatusCode::FORBIDDEN, "csrf_rejected", message)
}

/// Refuses cross-site browser requests. `issuer_origin` is `scheme://host[:port]`.
pub fn check_origin(headers: &HeaderMap, issuer_origin: &str) -> Result<(), HttpError> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        if origin.as_bytes() != issuer_origin.as_bytes() {
            return Err(forbidden("cross-origin request refused"));
        }
    }
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return Err(forbidden("cross-site request refused"));
    }
    Ok(())
}

/// Checks the Origin and the submitted token against the expected binding.
pub fn verify(
    headers: &HeaderMap,
    issuer_origin: &str,
    key: &[u8; 32],
    binding: Binding<'_>,
    submitted: Option<&str>,
) -> Result<(), HttpError> {
    check_origin(headers, issuer_origin)?;
    let submitted = submitted
        .or_else(|| headers.get("x-csrf-token").and_then(|v| v.to_str().ok()))
        .ok_or_else(|| forbidden("missing CSRF token; reload the page and try again"))?;
    let expected = token_for(key, binding);
    if constant_time_eq(submitted.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(forbidden(
            "invalid CSRF token; reload the page and try again",
        ))
    }
}

/// A form or JSON body that carries the synchronizer token (`csrf_token`);
/// a body without the field relies on the `X-CSRF-Token` header.
pub trait CsrfField {
    fn csrf_token(&self) -> Option<&str>;
}

/// Checks a signed-in user's state change: the origin rule and the token
/// bound to their session (from the body, else the `X-CSRF-Token` header).
fn verify_for_session(
    state: &AppState,
    headers: &HeaderMap,
    who: &SignedInUser,
    submitted: Option<&str>,
) -> Result<(), HttpError> {
    verify(
        headers,
        &state.issuer_origin,
        &state.csrf_key,
        Binding::Session(&who.session.id_hash),
        submitted,
    )
}

/// The signed-in user's token for the forms of a page.
pub fn session_token_for(state: &AppState, who: &SignedInUser) -> String {
    token_for(&state.csrf_key, Binding::Session(&who.session.id_hash))
}

/// The session (as [`SignedIn`] finds it: a redirect or 401 when there is
/// none), the headers and the body `B`, in that order — the session is
/// checked before the body is read.
async fn signed_in_with_body<B>(
    req: Request,
    state: &AppState,
) -> Result<(SignedInUser, HeaderMap, B), Response>
where
    B: FromRequest<AppState>,
    B::Rejection: IntoResponse,
{
    let (mut parts, body) = req.into_parts();
    let SignedIn(who) = SignedIn::from_request_parts(&mut parts, state)
        .await
        .map_err(IntoResponse::into_response)?;
    let headers = parts.headers.clone();
    let body = B::from_request(Request::from_parts(parts, body), state)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok((who, headers, body))
}

/// A signed-in state change whose body is a form or JSON: the session (as
/// [`SignedIn`] finds it), the body, and `is_json` so the handler answers
/// in kind. Rejected — a page for a form, JSON otherwise — when the origin
/// or the token is wrong.
pub struct CsrfForm<T> {
    pub who: SignedInUser,
    pub form: T,
    pub is_json: bool,
}

impl<T> FromRequest<AppState> for CsrfForm<T>
where
    T: DeserializeOwned + CsrfField + Send,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (who, headers, FormOrJson { value, is_json }) =
            signed_in_with_body::<FormOrJson<T>>(req, state).await?;
        verify_for_session(state, &headers, &who, value.csrf_token())
            .map_err(|e| if is_json { e } else { e.as_page() }.into_response())?;
        Ok(CsrfForm {
            who,
            form: value,
            is_json,
        })
    }
}

/// A signed-in state change from an HTML form only
/// (`application/x-www-form-urlencoded`); every refusal is a page.
pub struct CsrfPageForm<T> {
    pub who: SignedInUser,
    pub form: T,
}

impl<T> FromRequest<AppState> for CsrfPageForm<T>
where
    T: DeserializeOwned + CsrfField + Send,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (who, headers, axum::Form(form)) =
            signed_in_with_body::<axum::Form<T>>(req, state).await?;
        verify_for_session(state, &headers, &who, form.csrf_token())
            .map_err(|e| e.as_page().into_response())?;
        Ok(CsrfPageForm { who, form })
    }
}

/// A signed-in JSON call that sends its token in `X-CSRF-Token` (the
/// passkey ceremonies, whose bodies belong to WebAuthn). Refusals are JSON.
pub struct SessionCsrf(pub SignedInUser);

impl FromRequestParts<AppState> for SessionCsrf {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let SignedIn(who) = SignedIn::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        verify_for_session(state, &parts.headers, &who, None)
            .map_err(IntoResponse::into_response)?;
        Ok(SessionCsrf(who))
    }
}

/// A form sent before sign-in (the sign-in form, the second step): the
/// origin rule, and for a form the token bound to the visitor's anonymous
/// `csrf` cookie. A JSON call (a script, which has no such cookie) is held
/// to the origin rule only; it cannot be sent cross-site without CORS.
/// Errors answer in kind.
pub fn check_anonymous(
    state: &AppState,
    headers: &HeaderMap,
    jar: &CookieJar,
    submitted: Option<&str>,
    is_json: bool,
) -> Result<(), HttpError> {
    if is_json {
        return check_origin(headers, &state.issuer_origin);
    }
    let anon = jar
        .get(cookie_name(state.config.is_https()))
        .map(|c| c.value().to_owned())
        .unwrap_or_default();
    verify(
        headers,
        &state.issuer_origin,
        &state.csrf_key,
        Binding::Anonymous(&anon),
        submitted,
    )
    .map_err(HttpError::as_page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn tokens_depend_on_key_and_binding() {
        let k1 = [1u8; 32];
        let k2 = [2u8; 32];
        assert_ne!(
            token_for(&k1, Binding::Session("a")),
            token_for(&k2, Binding::Session("a"))
        );
        assert_ne!(
            token_for(&k1, Binding::Session("a")),
            token_for(&k1, Binding::Anonymous("a"))
        );
        assert_eq!(
            token_for(&k1, Binding::Session("a")),
            token_for(&k1, Binding::Session("a"))
        );
    }

    #[test]
    fn origin_rules() {
        let mut h = HeaderMap::new();
        check_origin(&h, "https://id.example").expect("no origin: non-browser client");
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://id.example"),
        );
        check_origin(&h, "https://id.example").expect("same origin");
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(check_origin(&h, "https://id.example").is_err());
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(check_origin(&h, "https://id.example").is_err());
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(check_origin(&h, "https://id.example").is_err());
    }
}
