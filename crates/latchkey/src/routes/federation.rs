//! `/login/idp/{name}` (start a sign-in at an upstream provider), its
//! `/callback`, `/login/idp/link` (the owner confirms a pending link) and
//! `/account/identities` (linked identities: list, link another, unlink).
//! The ceremony and every rule are in `federation::accounts`.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar};
use serde::Deserialize;

use super::login::{finish_sign_in, safe_next};
use super::render;
use crate::app::AppState;
use crate::clock::{format_utc, time_ago};
use crate::crypto::SecretToken;
use crate::federation::accounts::{self, CallbackParams, FederationError, Outcome};
use crate::federation::store as identities;
use crate::http::auth::SignedIn;
use crate::http::client::Caller;
use crate::http::csrf::{self, CsrfField, CsrfPageForm};
use crate::http::HttpError;
use crate::login::SignIn;
use crate::store::StoreError;

fn state_cookie_name(https: bool) -> &'static str {
    if https {
        "__Host-latchkey_fed"
    } else {
        "latchkey_fed"
    }
}

fn link_cookie_name(https: bool) -> &'static str {
    if https {
        "__Host-latchkey_fed_link"
    } else {
        "latchkey_fed_link"
    }
}

fn cookie(name: &'static str, value: &SecretToken, https: bool, secs: i64) -> Cookie<'static> {
    let mut c = crate::http::cookies::build(name, value.expose().to_owned(), https);
    c.set_max_age(time::Duration::seconds(secs));
    c
}

/// The page for a refused federated step: what happened and where to go.
fn refusal(e: FederationError) -> HttpError {
    let message = e.to_string();
    match e {
        FederationError::Store(s @ StoreError::Unavailable(_)) => HttpError::from(s).as_page(),
        FederationError::Store(s) => {
            tracing::warn!(error = %s, "federated sign-in: storage");
            HttpError::page(StatusCode::CONFLICT, "try_again", "Please try again.")
        }
        FederationError::Login(e) => {
            tracing::error!(error = %e, "federated sign-in");
            HttpError::internal().as_page()
        }
        FederationError::UnknownProvider => {
            HttpError::page(StatusCode::NOT_FOUND, "unknown_provider", message)
        }
        FederationError::Upstream(_) => {
            HttpError::page(StatusCode::BAD_GATEWAY, "upstream_failed", message)
        }
        FederationError::LastWayIn | FederationError::LinkedElsewhere => {
            HttpError::page(StatusCode::CONFLICT, "federation_refused", message)
        }
        _ => HttpError::page(StatusCode::BAD_REQUEST, "federation_refused", message),
    }
}

#[derive(Deserialize)]
pub struct StartQuery {
    next: Option<String>,
}

/// `GET /login/idp/{name}`: off to the upstream, with the state in a cookie.
/// Counted per IP address first: each start writes a row and calls the
/// upstream, so a refused one does neither.
pub async fn start(
    State(state): State<AppState>,
    jar: CookieJar,
    Caller(origin): Caller,
    Path(name): Path<String>,
    Query(q): Query<StartQuery>,
) -> Result<Response, HttpError> {
    if let Err(retry_after) = state
        .federation_rate_per_ip
        .check(&crate::throttle::ip_key(&origin.ip), state.clock.now())
    {
        return Err(HttpError::too_many_attempts(
            "sign-ins started from this address",
            retry_after,
        )
        .as_page());
    }
    let next = safe_next(q.next.as_deref());
    let begun = accounts::begin(&state, &name, &next, None)
        .await
        .map_err(refusal)?;
    Ok(redirect_to_upstream(&state, jar, begun))
}

fn redirect_to_upstream(state: &AppState, jar: CookieJar, begun: accounts::Begun) -> Response {
    let https = state.config.is_https();
    let jar = jar.add(cookie(
        state_cookie_name(https),
        &begun.state,
        https,
        state.config.federation.state_ttl_secs,
    ));
    (jar, Redirect::to(&begun.url)).into_response()
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    iss: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /login/idp/{name}/callback`: the upstream's answer.
pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    Caller(origin): Caller,
    Path(name): Path<String>,
    Query(q): Query<CallbackQuery>,
) -> Result<Response, HttpError> {
    let https = state.config.is_https();
    let cookie_state = jar
        .get(state_cookie_name(https))
        .map(|c| c.value().to_owned());
    let params = CallbackParams {
        provider: name,
        state: q.state,
        code: q.code,
        iss: q.iss,
        error: q.error,
        error_description: q.error_description,
        cookie_state,
    };
    let outcome = accounts::callback(&state, params, &origin).await;
    // The state is spent (or was never good): the cookie goes either way.
    let jar = jar.add(crate::http::cookies::removal(
        state_cookie_name(https),
        https,
    ));
    match outcome.map_err(refusal)? {
        Outcome::SignIn { result, next } => match *result {
            SignIn::Complete(success) => {
                finish_sign_in(&state, &headers, jar, success, &next, false).await
            }
            SignIn::SecondFactorDue { challenge, .. } => {
                let jar = jar.add(crate::routes::mfa::challenge_cookie(&challenge, https));
                let target = format!("/login/mfa?next={}", encode(&next));
                Ok((jar, Redirect::to(&target)).into_response())
            }
        },
        Outcome::ConfirmLink {
            token,
            email,
            provider,
        } => {
            let jar = jar.add(cookie(
                link_cookie_name(https),
                &token,
                https,
                accounts::PENDING_LINK_TTL_SECS,
            ));
            let html = render(
                &state,
                "federation_link.html",
                minijinja::context! { stage => "sign_in", email, provider, csrf_token => "" },
            )?;
            Ok((StatusCode::OK, jar, html).into_response())
        }
        Outcome::Linked { next } => Ok((jar, Redirect::to(&next)).into_response()),
    }
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn link_token(state: &AppState, jar: &CookieJar) -> Option<SecretToken> {
    jar.get(link_cookie_name(state.config.is_https()))
        .and_then(|c| SecretToken::parse(c.value()))
}

/// `GET /login/idp/link`: the owner, signed in again, confirms the link.
pub async fn link_page(
    State(state): State<AppState>,
    jar: CookieJar,
    SignedIn(who): SignedIn,
) -> Result<Response, HttpError> {
    let pending = match link_token(&state, &jar) {
        Some(token) => accounts::pending_link(&state, &token).await?,
        None => None,
    };
    let Some(pending) = pending else {
        return Err(refusal(FederationError::BadState));
    };
    if pending.user_id != who.user.id {
        return Err(refusal(FederationError::WrongAccount));
    }
    let csrf_token = csrf::session_token_for(&state, &who);
    let html = render(
        &state,
        "federation_link.html",
        minijinja::context! {
            stage => "confirm",
            email => pending.email,
            provider => pending.provider,
            csrf_token,
            signed_in => true,
        },
    )?;
    Ok(html.into_response())
}

#[derive(Deserialize)]
pub struct TokenForm {
    csrf_token: Option<String>,
}

impl CsrfField for TokenForm {
    fn csrf_token(&self) -> Option<&str> {
        self.csrf_token.as_deref()
    }
}

/// `POST /login/idp/link`: links the pending identity to the signed-in owner.
pub async fn link_confirm(
    State(state): State<AppState>,
    jar: CookieJar,
    Caller(origin): Caller,
    CsrfPageForm { who, form: _ }: CsrfPageForm<TokenForm>,
) -> Result<Response, HttpError> {
    let token = link_token(&state, &jar).ok_or_else(|| refusal(FederationError::BadState))?;
    let next = accounts::confirm_link(&state, &token, &who.user.id, who.session.auth_time, &origin)
        .await
        .map_err(refusal)?;
    let https = state.config.is_https();
    let jar = jar.add(crate::http::cookies::removal(
        link_cookie_name(https),
        https,
    ));
    Ok((jar, Redirect::to(&safe_next(Some(&next)))).into_response())
}

#[derive(serde::Serialize)]
struct IdentityView {
    id: String,
    provider: String,
    email_at_link: String,
    linked: String,
    last_used_ago: String,
}

/// `GET /account/identities`: the user's linked identities and the providers to link.
pub async fn identities_page(
    State(state): State<AppState>,
    SignedIn(who): SignedIn,
) -> Result<Response, HttpError> {
    let now = state.clock.now();
    let linked: Vec<IdentityView> = identities::identities_of_user(&state.pool, &who.user.id)
        .await?
        .into_iter()
        .map(|i| IdentityView {
            id: i.id,
            provider: i.provider,
            email_at_link: i.email_at_link,
            linked: format_utc(i.created_at),
            last_used_ago: time_ago(now, i.last_used_at),
        })
        .collect();
    let providers: Vec<String> = crate::federation::enabled_providers(&state)
        .await?
        .into_iter()
        .map(|p| p.name)
        .collect();
    let csrf_token = csrf::session_token_for(&state, &who);
    let html = render(
        &state,
        "identities.html",
        minijinja::context! { linked, providers, csrf_token, signed_in => true },
    )?;
    Ok(html.into_response())
}

#[derive(Deserialize)]
pub struct LinkForm {
    csrf_token: Option<String>,
    provider: String,
}

impl CsrfField for LinkForm {
    fn csrf_token(&self) -> Option<&str> {
        self.csrf_token.as_deref()
    }
}

/// `POST /account/identities/link`: off to the upstream to link another identity.
pub async fn link_another(
    State(state): State<AppState>,
    jar: CookieJar,
    CsrfPageForm { who, form }: CsrfPageForm<LinkForm>,
) -> Result<Response, HttpError> {
    let begun = accounts::begin(
        &state,
        &form.provider,
        "/account/identities",
        Some(&who.user.id),
    )
    .await
    .map_err(refusal)?;
    Ok(redirect_to_upstream(&state, jar, begun))
}

/// `POST /account/identities/{id}/unlink`.
pub async fn unlink(
    State(state): State<AppState>,
    Caller(origin): Caller,
    Path(id): Path<String>,
    CsrfPageForm { who, form: _ }: CsrfPageForm<TokenForm>,
) -> Result<Response, HttpError> {
    accounts::unlink(&state, &who.user, &id, &origin)
        .await
        .map_err(refusal)?;
    Ok(Redirect::to("/account/identities").into_response())
}
