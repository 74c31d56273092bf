//! `/`, `/login`, `/logout`.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;

use super::render;
use crate::app::AppState;
use crate::http::auth::{clear_session_cookie, session_cookie, session_token, MaybeSignedIn};
use crate::http::body::FormOrJson;
use crate::http::client::Caller;
use crate::http::csrf::{self, Binding};
use crate::http::HttpError;
use crate::identity::{Email, Password};
use crate::login::{self, LoginError};
use crate::revocation::{Cause, Initiator};

pub async fn home(MaybeSignedIn(who): MaybeSignedIn) -> Redirect {
    Redirect::to(if who.is_some() { "/account" } else { "/login" })
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
    /// OIDC `login_hint`, passed on by the authorization endpoint.
    login_hint: Option<String>,
    /// Set when an application asked for a fresh sign-in (`prompt=login`,
    /// `max_age`; `other_account`: its `id_token_hint` names another user).
    reauth: Option<String>,
}

/// Only same-site paths may be a post-login destination (no open redirect):
/// `/x` yes; `//evil`, `/\evil`, `https://evil` no.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control)
                && n.len() <= 2048 =>
        {
            n.to_owned()
        }
        _ => "/account".to_owned(),
    }
}

async fn login_page_response(
    state: &AppState,
    jar: CookieJar,
    status: StatusCode,
    next: &str,
    email: &str,
    error: &str,
) -> Result<Response, HttpError> {
    let (jar, anon) = csrf::ensure_anonymous_cookie(jar, state.config.is_https());
    let csrf_token = csrf::token_for(&state.csrf_key, Binding::Anonymous(&anon));
    // One button per enabled provider, each keeping `next` (the pending
    // authorization request). Read on every render: `latchkey idp add` and
    // `remove` apply at once.
    let next_encoded: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
    // A database outage must not take the sign-in page down: without the
    // list, the page shows no provider buttons (the form answers 503 itself).
    let enabled = crate::federation::enabled_providers(state)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "sign-in page without provider buttons");
            Vec::new()
        });
    let providers: Vec<minijinja::Value> = enabled
        .into_iter()
        .map(|p| {
            minijinja::context! {
                name => p.name.clone(),
                href => format!("/login/idp/{}?next={next_encoded}", p.name),
            }
        })
        .collect();
    let html = render(
        state,
        "login.html",
        minijinja::context! { csrf_token, next, email, error, providers, signed_in => false },
    )?;
    Ok((status, jar, html).into_response())
}

pub async fn login_page(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(q): Query<LoginQuery>,
) -> Result<Response, HttpError> {
    let next = safe_next(q.next.as_deref());
    let hint: String = q.login_hint.unwrap_or_default().chars().take(320).collect();
    let notice = match q.reauth.as_deref() {
        Some("other_account") => {
            "The application asked for another account: sign in with it to continue."
        }
        Some(_) => "Please sign in again to continue.",
        None => "",
    };
    login_page_response(&state, jar, StatusCode::OK, &next, &hint, notice).await
}

#[derive(Deserialize)]
pub struct LoginForm {
    email: String,
    password: String,
    csrf_token: Option<String>,
    next: Option<String>,
}

/// `POST /login`, as a form (browser, CSRF token required) or as JSON
/// (`Content-Type: application/json`, which a cross-site page cannot send
/// without a CORS preflight; the Origin check still applies).
pub async fn login_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    Caller(origin): Caller,
    FormOrJson {
        value: form,
        is_json,
    }: FormOrJson<LoginForm>,
) -> Result<Response, HttpError> {
    let fail_page = |e: HttpError| if is_json { e } else { e.as_page() };
    csrf::check_anonymous(&state, &headers, &jar, form.csrf_token.as_deref(), is_json)?;
    let next = safe_next(form.next.as_deref());
    let email = match Email::for_lookup(&form.email) {
        Ok(email) => email,
        Err(e) if is_json => return Err(HttpError::bad_request(format!("email: {e}"))),
        Err(e) => {
            return login_page_response(
                &state,
                jar,
                StatusCode::BAD_REQUEST,
                &next,
                &form.email,
                &format!("Email: {e}"),
            )
            .await
        }
    };
    if form.password.is_empty() || form.password.chars().count() > state.config.password.max_length
    {
        // Too long to be any valid password: refuse before hashing (no DoS via huge inputs).
        let message = "Invalid email or password";
        if is_json {
            return Err(HttpError::json(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                message,
            ));
        }
        return login_page_response(
            &state,
            jar,
            StatusCode::UNAUTHORIZED,
            &next,
            email.as_str(),
            message,
        )
        .await;
    }
    match login::sign_in_with_password(&state, &email, &Password::new(form.password), &origin).await
    {
        Ok(login::SignIn::Complete(success)) => {
            finish_sign_in(&state, &headers, jar, success, &next, is_json).await
        }
        Ok(login::SignIn::SecondFactorDue {
            challenge, factors, ..
        }) => {
            let jar = jar.add(crate::routes::mfa::challenge_cookie(
                &challenge,
                state.config.is_https(),
            ));
            let target = format!(
                "/login/mfa?next={}",
                url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
            );
            if is_json {
                let body = serde_json::json!({
                    "status": "mfa_required",
                    "mfa_url": "/login/mfa",
                    "methods": factors.methods(),
                });
                Ok((jar, axum::Json(body)).into_response())
            } else {
                Ok((jar, Redirect::to(&target)).into_response())
            }
        }
        Err(LoginError::InvalidCredentials) => {
            let message = LoginError::InvalidCredentials.to_string();
            if is_json {
                Err(HttpError::json(
                    StatusCode::UNAUTHORIZED,
                    "invalid_credentials",
                    message,
                ))
            } else {
                login_page_response(
                    &state,
                    jar,
                    StatusCode::UNAUTHORIZED,
                    &next,
                    email.as_str(),
                    &message,
                )
                .await
            }
        }
        Err(LoginError::LockedOut { retry_after_secs }) => Err(fail_page(
            HttpError::too_many_attempts("failed sign-ins", retry_after_secs),
        )),
        Err(LoginError::Store(e)) => Err(fail_page(e.into())),
        Err(LoginError::Hash(e)) => Err(fail_page(e.into())),
    }
}

#[derive(Deserialize)]
pub struct LogoutForm {
    csrf_token: Option<String>,
}

/// `POST /logout`: deletes the server-side session, so the cookie is dead
/// everywhere at once, and clears the cookie.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    Caller(origin): Caller,
    FormOrJson {
        value: form,
        is_json,
    }: FormOrJson<LogoutForm>,
) -> Result<Response, HttpError> {
    let https = state.config.is_https();
    let Some(token) = session_token(&headers, https) else {
        return Ok(if is_json {
            StatusCode::NO_CONTENT.into_response()
        } else {
            Redirect::to("/login").into_response()
        });
    };
    let binding = token.hash();
    csrf::verify(
        &headers,
        &state.issuer_origin,
        &state.csrf_key,
        Binding::Session(binding.as_str()),
        form.csrf_token.as_deref(),
    )
    .map_err(|e| if is_json { e } else { e.as_page() })?;
    login::sign_out::sign_out(&state, &token, "signed out", "", &origin).await?;
    let jar = clear_session_cookie(jar, https);
    Ok(if is_json {
        (jar, StatusCode::NO_CONTENT).into_response()
    } else {
        (jar, Redirect::to("/login")).into_response()
    })
}

/// Sets the session cookie for a completed sign-in, ending the browser's
/// previous session (re-authentication gets a new id), then redirects (303).
pub(crate) async fn finish_sign_in(
    state: &AppState,
    headers: &HeaderMap,
    jar: CookieJar,
    success: login::LoginSuccess,
    next: &str,
    is_json: bool,
) -> Result<Response, HttpError> {
    let https = state.config.is_https();
    if let Some(previous) = session_token(headers, https) {
        let cause = Cause::at(state, Initiator::User, "signed in again in this browser");
        crate::cascade::end_session(&state.pool, &previous, &cause).await?;
    }
    let jar = jar.add(session_cookie(&success.token, https));
    if is_json {
        let body = serde_json::json!({
            "redirect": next,
            "user": success.user,
            "session": success.session,
        });
        Ok((jar, axum::Json(body)).into_response())
    } else {
        // 303: the browser follows with a GET and never re-posts credentials.
        Ok((jar, Redirect::to(next)).into_response())
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_is_a_local_path_only() {
        assert_eq!(safe_next(Some("/account?x=1")), "/account?x=1");
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example",
            "evil",
            "/\n",
        ] {
            assert_eq!(safe_next(Some(bad)), "/account", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/account");
    }
}
