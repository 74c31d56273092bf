//! Who is signed in: the session cookie and the extractors handlers use.
//!
//! - [`MaybeSignedIn`]: the session if there is a valid one.
//! - [`SignedIn`]: 401 (`WWW-Authenticate`) on API routes, a redirect to
//!   `/login` on pages, when nobody is signed in.
//! - [`HasRole<R>`]: like `SignedIn`, then 403 when the user lacks role `R`;
//!   for a role that needs a second factor, a browser gets a page saying why
//!   and how to set one up (then back to where it was going).
//!
//! A user whose password was handed out (`must_change_password`) is sent to
//! `/account/password` by every page but that one, the passkey pages and
//! sign-out, until they choose their own password or add a passkey; requests
//! that do not ask for HTML get `403 {"error":"password_change_required"}`
//! on the same routes (`GET /account` excepted: it shows the flag).

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar};

use super::error::HttpError;
use crate::app::AppState;
use crate::crypto::SecretToken;
use crate::identity::User;
use crate::session::{self, Session};

pub fn session_cookie_name(https: bool) -> &'static str {
    if https {
        "__Host-latchkey_session"
    } else {
        "latchkey_session"
    }
}

/// The session cookie: `HttpOnly`, `SameSite=Lax`, `Path=/`, and `Secure`
/// with the `__Host-` prefix whenever the issuer is https. No `Max-Age`: it
/// ends with the browser; the server enforces idle and absolute expiry.
pub fn session_cookie(token: &SecretToken, https: bool) -> Cookie<'static> {
    super::cookies::build(session_cookie_name(https), token.expose().to_owned(), https)
}

pub fn clear_session_cookie(jar: CookieJar, https: bool) -> CookieJar {
    jar.add(super::cookies::removal(session_cookie_name(https), https))
}

/// Reads the session token from the cookie, if well-formed.
pub fn session_token(headers: &HeaderMap, https: bool) -> Option<SecretToken> {
    let jar = CookieJar::from_headers(headers);
    jar.get(session_cookie_name(https))
        .and_then(|c| SecretToken::parse(c.value()))
}

/// A valid session and its user.
#[derive(Debug, Clone)]
pub struct SignedInUser {
    pub session: Session,
    pub user: User,
}

pub struct MaybeSignedIn(pub Option<SignedInUser>);

/// Does the client want a page (a browser navigating) rather than JSON?
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

async fn resolve(parts: &Parts, state: &AppState) -> Result<Option<SignedInUser>, HttpError> {
    let Some(token) = session_token(&parts.headers, state.config.is_https()) else {
        return Ok(None);
    };
    let now = state.clock.now();
    match session::authenticate(&state.pool, &state.config.session, &token, now).await? {
        Ok((session, user)) => Ok(Some(SignedInUser { session, user })),
        Err(_) => Ok(None),
    }
}

impl FromRequestParts<AppState> for MaybeSignedIn {
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(found) = parts.extensions.get::<SignedInUser>() {
            return Ok(MaybeSignedIn(Some(found.clone())));
        }
        let found = resolve(parts, state).await?;
        if let Some(found) = &found {
            parts.extensions.insert(found.clone());
        }
        Ok(MaybeSignedIn(found))
    }
}

/// Rejection of [`SignedIn`] / [`HasRole`]: a redirect for pages, JSON for APIs.
pub enum AuthRejection {
    Redirect(Redirect),
    Error(HttpError),
    /// A page rendered for the browser (the second-factor explanation).
    Page(Response),
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        match self {
            AuthRejection::Redirect(r) => r.into_response(),
            AuthRejection::Error(e) => e.into_response(),
            AuthRejection::Page(page) => page,
        }
    }
}

impl From<HttpError> for AuthRejection {
    fn from(e: HttpError) -> Self {
        AuthRejection::Error(e)
    }
}

pub struct SignedIn(pub SignedInUser);

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = AuthRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let MaybeSignedIn(found) = MaybeSignedIn::from_request_parts(parts, state).await?;
        match found {
            Some(found)
                if found.user.must_change_password
                    && wants_html(&parts.headers)
                    && !open_before_password_change(parts.uri.path()) =>
            {
                Err(AuthRejection::Redirect(Redirect::to(
                    "/account/password?required=1",
                )))
            }
            // Scripts and API clients riding the same cookie are refused the
            // same routes (reading `GET /account`, which shows the flag, is
            // allowed so they can tell why).
            Some(found)
                if found.user.must_change_password
                    && !open_before_password_change(parts.uri.path())
                    && !(parts.method == axum::http::Method::GET
                        && parts.uri.path() == "/account") =>
            {
                Err(AuthRejection::Error(HttpError::json(
                    StatusCode::FORBIDDEN,
                    "password_change_required",
                    "this account's password was handed out: choose your own at /account/password (or add a passkey) first",
                )))
            }
            Some(found) => Ok(SignedIn(found)),
            None if wants_html(&parts.headers) => {
                let next = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                let target = format!(
                    "/login?next={}",
                    url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
                );
                Err(AuthRejection::Redirect(Redirect::to(&target)))
            }
            None => Err(AuthRejection::Error(HttpError::unauthenticated())),
        }
    }
}

/// The pages a user who must replace a handed-out password may still open:
/// the ways to replace it (a new password, a passkey) and signing out.
fn open_before_password_change(path: &str) -> bool {
    path == "/account/password"
        || path == "/account/passkeys"
        || path.starts_with("/account/passkeys/")
        || path == "/logout"
}

/// The page `/admin` (or any page of a role that needs a second factor)
/// shows a browser signed in without one: why, and the way through.
async fn second_factor_page(
    state: &AppState,
    found: &SignedInUser,
    role: &str,
    next: &str,
) -> Response {
    let has_second_factor = match crate::login::second_factors(state, &found.user.id).await {
        Ok(f) => f.totp || f.passkey,
        Err(e) => return HttpError::from(e).as_page().into_response(),
    };
    let next_encoded: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
    let csrf_token = crate::http::csrf::token_for(
        &state.csrf_key,
        crate::http::csrf::Binding::Session(&found.session.id_hash),
    );
    let context = minijinja::context! {
        role, has_second_factor, next_encoded, csrf_token, signed_in => true
    };
    match state.templates.render("second_factor_needed.html", context) {
        Ok(html) => (StatusCode::FORBIDDEN, axum::response::Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            HttpError::internal().as_page().into_response()
        }
    }
}

/// A role name known at compile time, for [`HasRole`].
pub trait RoleName: Send + Sync + 'static {
    const NAME: &'static str;
}

/// The `admin` role.
pub struct Admin;
impl RoleName for Admin {
    const NAME: &'static str = crate::identity::Role::ADMIN;
}

pub struct HasRole<R: RoleName>(pub SignedInUser, pub PhantomData<R>);

impl<R: RoleName> FromRequestParts<AppState> for HasRole<R> {
    type Rejection = AuthRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let SignedIn(found) = SignedIn::from_request_parts(parts, state).await?;
        if found.user.has_role(R::NAME) {
            if !crate::policy::may_use_role(&state.config.mfa, R::NAME, &found.session.amr) {
                if wants_html(&parts.headers) && parts.method == axum::http::Method::GET {
                    let next = crate::routes::login::safe_next(
                        parts.uri.path_and_query().map(|p| p.as_str()),
                    );
                    return Err(AuthRejection::Page(
                        second_factor_page(state, &found, R::NAME, &next).await,
                    ));
                }
                let error = HttpError::json(
                    StatusCode::FORBIDDEN,
                    "mfa_required",
                    format!("the {} role needs a two-step sign-in: set it up at /account/mfa, then sign in again", R::NAME),
                );
                return Err(AuthRejection::Error(if wants_html(&parts.headers) {
                    error.as_page()
                } else {
                    error
                }));
            }
            return Ok(HasRole(found, PhantomData));
        }
        let audit = crate::audit::Event {
            actor: found.user.id.clone(),
            subject: found.user.id.clone(),
            detail: format!(
                "{} {} needs role {}",
                parts.method,
                parts.uri.path(),
                R::NAME
            ),
            ..Default::default()
        };
        let _ = crate::audit::record(
            &state.pool,
            crate::audit::EventKind::AccessDenied,
            audit,
            state.clock.now(),
        )
        .await;
        let error = HttpError::json(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this needs the {} role", R::NAME),
        );
        Err(AuthRejection::Error(if wants_html(&parts.headers) {
            error.as_page()
        } else {
            error
        }))
    }
}
