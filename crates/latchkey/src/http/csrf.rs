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

use axum::http::{header, HeaderMap, StatusCode};
use axum_extra::extract::cookie::CookieJar;

use super::error::HttpError;
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
