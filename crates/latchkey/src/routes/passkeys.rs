//! Passkeys over HTTP: `/account/passkeys` (list, add, rename, delete) and
//! `/login/passkey/{start,finish}` (usernameless sign-in). The ceremonies and
//! their rules live in [`crate::webauthn`]; this file parses requests, checks
//! CSRF and maps [`PasskeyError`] to responses.
//!
//! The JSON endpoints are called by `/static/passkeys.js` with the
//! `X-CSRF-Token` header: the session-bound token on the account page, the
//! anonymous-cookie-bound token on the login page (plus the Origin check).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::CookieJar;
use serde::Deserialize;
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

use super::render;
use crate::app::AppState;
use crate::clock::format_utc;
use crate::http::auth::{wants_html, SignedIn, SignedInUser};
use crate::http::body::FormOrJson;
use crate::http::client::Caller;
use crate::http::csrf::{self, Binding, CsrfField, CsrfForm, SessionCsrf};
use crate::http::HttpError;
use crate::webauthn::{self, ChallengeBinding, PasskeyError, PasskeyName};

impl From<PasskeyError> for HttpError {
    fn from(e: PasskeyError) -> HttpError {
        let message = e.to_string();
        let (status, code) = match e {
            PasskeyError::Store(store) => return store.into(),
            PasskeyError::Corrupt(_) | PasskeyError::Internal(_) => {
                tracing::error!(error = %message, "passkey failure");
                return HttpError::internal();
            }
            PasskeyError::Unavailable(_) => (StatusCode::NOT_FOUND, "passkeys_unavailable"),
            PasskeyError::UnknownCeremony => (StatusCode::BAD_REQUEST, "ceremony_expired"),
            PasskeyError::UnknownCredential => (StatusCode::UNAUTHORIZED, "unknown_credential"),
            PasskeyError::Rejected(why) => {
                tracing::info!(reason = %why, "passkey refused");
                (StatusCode::UNAUTHORIZED, "passkey_rejected")
            }
            PasskeyError::PossibleClone => (StatusCode::UNAUTHORIZED, "passkey_rejected"),
            PasskeyError::InvalidRegistration(_) => (StatusCode::BAD_REQUEST, "invalid_passkey"),
            PasskeyError::AlreadyRegistered => (StatusCode::CONFLICT, "passkey_exists"),
            PasskeyError::InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            PasskeyError::NotFound => (StatusCode::NOT_FOUND, "unknown_passkey"),
            PasskeyError::LastSignInMethod => (StatusCode::CONFLICT, "last_sign_in_method"),
            PasskeyError::NoPasskeys => (StatusCode::NOT_FOUND, "no_passkeys"),
            PasskeyError::LockedOut { retry_after_secs } => {
                return HttpError::too_many_attempts("failed sign-ins", retry_after_secs)
            }
        };
        HttpError::json(status, code, message)
    }
}

fn session_csrf(state: &AppState, who: &SignedInUser) -> String {
    csrf::session_token_for(state, who)
}

/// Where to send a user whose sign-in is too old to add a passkey.
fn reauth_location() -> String {
    format!(
        "/login?reauth=1&next={}",
        url::form_urlencoded::byte_serialize(b"/account/passkeys").collect::<String>()
    )
}

/// `Some(403 answer)` when the sign-in is too old to add a passkey.
fn reauthentication_needed(state: &AppState, who: &SignedInUser) -> Option<Response> {
    if webauthn::recently_signed_in(&state.config, &who.session, state.clock.now()) {
        return None;
    }
    let location = reauth_location();
    let body = serde_json::json!({
        "error": "reauthentication_required",
        "message": "for your security, sign in again before changing your passkeys",
        "location": location,
    });
    Some((StatusCode::FORBIDDEN, axum::Json(body)).into_response())
}

#[derive(serde::Serialize)]
struct PasskeyView {
    id: String,
    name: String,
    created_at: i64,
    last_used_at: Option<i64>,
    created: String,
    last_used: String,
    storage: &'static str,
    backup_eligible: bool,
    backed_up: bool,
    /// Deleting it leaves the account without a way to sign in.
    last_sign_in_method: bool,
}

async fn passkey_views(
    state: &AppState,
    who: &SignedInUser,
) -> Result<Vec<PasskeyView>, HttpError> {
    let records = webauthn::list_for_user(&state.pool, &who.user.id).await?;
    Ok(records
        .iter()
        .map(|r| PasskeyView {
            id: r.id.clone(),
            name: r.name.clone(),
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            created: format_utc(r.created_at),
            last_used: r
                .last_used_at
                .map(format_utc)
                .unwrap_or_else(|| "never".into()),
            storage: r.storage(),
            backup_eligible: r.backup_eligible,
            backed_up: r.backed_up,
            last_sign_in_method: webauthn::is_last_sign_in_method(&who.user, &records, &r.id),
        })
        .collect())
}

fn passkeys_page(
    state: &AppState,
    who: &SignedInUser,
    passkeys: Vec<PasskeyView>,
    status: StatusCode,
    notice: &str,
    error: &str,
) -> Result<Response, HttpError> {
    let recent = webauthn::recently_signed_in(&state.config, &who.session, state.clock.now());
    let html = render(
        state,
        "passkeys.html",
        minijinja::context! {
            signed_in => true,
            csrf_token => session_csrf(state, who),
            passkeys,
            available => state.passkeys.is_available(),
            recent,
            reauth_location => reauth_location(),
            notice,
            error,
        },
    )?;
    Ok((status, html).into_response())
}

/// `GET /account/passkeys`: the user's passkeys (page, or JSON for `Accept: application/json`).
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    SignedIn(who): SignedIn,
) -> Result<Response, HttpError> {
    let passkeys = passkey_views(&state, &who).await?;
    if !wants_html(&headers) {
        return Ok(axum::Json(serde_json::json!({ "passkeys": passkeys })).into_response());
    }
    passkeys_page(&state, &who, passkeys, StatusCode::OK, "", "")
}

/// `POST /account/passkeys/register/start`: options for `navigator.credentials.create()`.
pub async fn register_start(
    State(state): State<AppState>,
    SessionCsrf(who): SessionCsrf,
) -> Result<Response, HttpError> {
    if let Some(response) = reauthentication_needed(&state, &who) {
        return Ok(response);
    }
    let binding = ChallengeBinding::session(&who.session);
    let started = webauthn::start_registration(&state, &who.user, &binding).await?;
    Ok(axum::Json(started).into_response())
}

#[derive(Deserialize)]
pub struct RegisterFinish {
    ceremony: String,
    credential: RegisterPublicKeyCredential,
    #[serde(default)]
    name: Option<String>,
}

/// `POST /account/passkeys/register/finish`: verifies and stores the new passkey.
pub async fn register_finish(
    State(state): State<AppState>,
    SessionCsrf(who): SessionCsrf,
    Caller(origin): Caller,
    FormOrJson { value: body, .. }: FormOrJson<RegisterFinish>,
) -> Result<Response, HttpError> {
    if let Some(response) = reauthentication_needed(&state, &who) {
        return Ok(response);
    }
    let name = match body.name.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(PasskeyName::parse(text)?),
    };
    let binding = ChallengeBinding::session(&who.session);
    let record = webauthn::finish_registration(
        &state,
        &who.user,
        &body.ceremony,
        &body.credential,
        name,
        &binding,
        &origin,
    )
    .await?;
    let body = serde_json::json!({
        "passkey": { "id": record.id, "name": record.name, "storage": record.storage() },
    });
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

#[derive(Deserialize)]
pub struct RenameForm {
    csrf_token: Option<String>,
    name: String,
}

impl CsrfField for RenameForm {
    fn csrf_token(&self) -> Option<&str> {
        self.csrf_token.as_deref()
    }
}

/// Errors answer in kind: JSON for JSON requests, a page for forms.
fn in_kind(is_json: bool) -> impl Fn(HttpError) -> HttpError {
    move |e: HttpError| if is_json { e } else { e.as_page() }
}

/// `POST /account/passkeys/{id}/rename`.
pub async fn rename(
    State(state): State<AppState>,
    Caller(origin): Caller,
    Path(id): Path<String>,
    CsrfForm { who, form, is_json }: CsrfForm<RenameForm>,
) -> Result<Response, HttpError> {
    let fail = in_kind(is_json);
    let outcome = match PasskeyName::parse(&form.name) {
        Ok(name) => webauthn::rename(&state, &who.user, &id, &name, &origin).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) if is_json => Ok(StatusCode::NO_CONTENT.into_response()),
        Ok(()) => Ok(Redirect::to("/account/passkeys").into_response()),
        Err(e @ PasskeyError::InvalidName(_)) if !is_json => {
            let passkeys = passkey_views(&state, &who).await?;
            let message = e.to_string();
            passkeys_page(
                &state,
                &who,
                passkeys,
                StatusCode::BAD_REQUEST,
                "",
                &message,
            )
        }
        Err(e) => Err(fail(e.into())),
    }
}

#[derive(Deserialize)]
pub struct DeleteForm {
    csrf_token: Option<String>,
    /// Present (any value) when the user confirmed deleting their last way to sign in.
    confirm: Option<String>,
}

impl CsrfField for DeleteForm {
    fn csrf_token(&self) -> Option<&str> {
        self.csrf_token.as_deref()
    }
}

/// `POST /account/passkeys/{id}/delete`.
pub async fn delete(
    State(state): State<AppState>,
    Caller(origin): Caller,
    Path(id): Path<String>,
    CsrfForm { who, form, is_json }: CsrfForm<DeleteForm>,
) -> Result<Response, HttpError> {
    let fail = in_kind(is_json);
    // A passkey is a second factor: removing one weakens the account, so a
    // stolen session must not be able to do it either.
    if let Some(response) = reauthentication_needed(&state, &who) {
        return Ok(if is_json {
            response
        } else {
            Redirect::to(&reauth_location()).into_response()
        });
    }
    let confirmed = form.confirm.is_some_and(|c| !c.is_empty());
    match webauthn::delete(&state, &who.user, &id, confirmed, &origin).await {
        Ok(()) if is_json => Ok(StatusCode::NO_CONTENT.into_response()),
        Ok(()) => Ok(Redirect::to("/account/passkeys").into_response()),
        Err(e @ PasskeyError::LastSignInMethod) if !is_json => {
            let passkeys = passkey_views(&state, &who).await?;
            let message = e.to_string();
            passkeys_page(&state, &who, passkeys, StatusCode::CONFLICT, "", &message)
        }
        Err(e) => Err(fail(e.into())),
    }
}

/// The anonymous CSRF binding of a login-page request (cookie + header + Origin).
pub(crate) fn anonymous_binding(
    state: &AppState,
    headers: &HeaderMap,
    jar: &CookieJar,
) -> Result<ChallengeBinding, HttpError> {
    let cookie = jar
        .get(csrf::cookie_name(state.config.is_https()))
        .map(|c| c.value().to_owned())
        .unwrap_or_default();
    csrf::verify(
        headers,
        &state.issuer_origin,
        &state.csrf_key,
        Binding::Anonymous(&cookie),
        None,
    )?;
    if cookie.is_empty() {
        return Err(HttpError::json(
            StatusCode::FORBIDDEN,
            "csrf_rejected",
            "missing CSRF cookie; reload the page and try again",
        ));
    }
    Ok(ChallengeBinding::anonymous(&cookie))
}

/// `POST /login/passkey/start`: options for `navigator.credentials.get()`
/// (usernameless: no `allowCredentials`).
pub async fn sign_in_start(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
) -> Result<Response, HttpError> {
    let binding = anonymous_binding(&state, &headers, &jar)?;
    let started = webauthn::start_sign_in(&state, &binding).await?;
    Ok(axum::Json(started).into_response())
}

#[derive(Deserialize)]
pub struct SignInFinish {
    ceremony: String,
    credential: PublicKeyCredential,
    #[serde(default)]
    next: Option<String>,
}

/// `POST /login/passkey/finish`: verifies the passkey and signs in (a new
/// session; a previous one in this browser ends). Answers where to go next.
pub async fn sign_in_finish(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    Caller(origin): Caller,
    FormOrJson { value: body, .. }: FormOrJson<SignInFinish>,
) -> Result<Response, HttpError> {
    let binding = anonymous_binding(&state, &headers, &jar)?;
    let success =
        crate::login::passkey::sign_in(&state, &body.ceremony, &body.credential, &binding, &origin)
            .await?;
    let next = super::login::safe_next(body.next.as_deref());
    super::login::finish_sign_in(&state, &headers, jar, success, &next, true).await
}

/// `GET /static/passkeys.js`.
pub async fn script() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/javascript; charset=utf-8",
        )],
        crate::ui::PASSKEYS_SCRIPT,
    )
        .into_response()
}
