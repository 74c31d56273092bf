//! `/account`: the signed-in user's page, and their sessions (page and JSON).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::render;
use crate::app::AppState;
use crate::audit::{self, Event, EventKind};
use crate::clock::{format_rfc3339, format_utc, time_ago};
use crate::http::auth::{wants_html, SignedIn, SignedInUser};
use crate::http::client::Caller;
use crate::http::csrf::{self, CsrfField, CsrfForm, CsrfPageForm};
use crate::http::HttpError;
use crate::revocation::{Cause, Initiator};
use crate::session;

fn csrf_token(state: &AppState, who: &SignedInUser) -> String {
    csrf::session_token_for(state, who)
}

#[derive(serde::Serialize)]
struct SessionView {
    handle: String,
    current: bool,
    created_at: i64,
    last_seen_at: i64,
    expires_at: i64,
    /// UTC, shown on hover.
    created: String,
    last_seen: String,
    /// "5 minutes ago".
    created_ago: String,
    last_seen_ago: String,
    /// RFC 3339, for `<time datetime>`.
    created_iso: String,
    last_seen_iso: String,
    ip: String,
    user_agent: String,
    /// "Chrome on Linux", from the User-Agent.
    device: String,
    amr: Vec<String>,
}

async fn session_views(
    state: &AppState,
    who: &SignedInUser,
) -> Result<Vec<SessionView>, HttpError> {
    let sessions = session::list_for_user(
        &state.pool,
        &who.user.id,
        &state.config.session,
        state.clock.now(),
    )
    .await?;
    let now = state.clock.now();
    Ok(sessions
        .into_iter()
        .map(|s| SessionView {
            current: s.handle == who.session.handle,
            created: format_utc(s.created_at),
            last_seen: format_utc(s.last_seen_at),
            created_ago: time_ago(now, s.created_at),
            last_seen_ago: time_ago(now, s.last_seen_at),
            created_iso: format_rfc3339(s.created_at),
            last_seen_iso: format_rfc3339(s.last_seen_at),
            device: session::device_label(&s.user_agent),
            created_at: s.created_at,
            last_seen_at: s.last_seen_at,
            expires_at: s.expires_at,
            handle: s.handle,
            ip: s.ip,
            user_agent: s.user_agent,
            amr: s.amr,
        })
        .collect())
}

/// `GET /account`: a page for browsers, JSON for `Accept: application/json`.
pub async fn account(
    State(state): State<AppState>,
    headers: HeaderMap,
    SignedIn(who): SignedIn,
) -> Result<Response, HttpError> {
    let sessions = session_views(&state, &who).await?;
    let consents = crate::oauth::authorize::consents_of_user(&state.pool, &who.user.id).await?;
    let csrf_token = csrf_token(&state, &who);
    if !wants_html(&headers) {
        let body = serde_json::json!({ "user": who.user, "sessions": sessions, "consents": consents, "csrf_token": csrf_token });
        return Ok(axum::Json(body).into_response());
    }
    let notice = match headers.get("referer").and_then(|v| v.to_str().ok()) {
        Some(r) if r.ends_with("#revoked") => "Session signed out.",
        _ => "",
    };
    let is_admin = who.user.has_role(crate::identity::Role::ADMIN);
    Ok(render(
        &state,
        "account.html",
        minijinja::context! { user => who.user, sessions, consents, csrf_token, signed_in => true, is_admin, notice },
    )?
    .into_response())
}

/// `GET /account/sessions`: the user's sessions as JSON.
pub async fn sessions_json(
    State(state): State<AppState>,
    SignedIn(who): SignedIn,
) -> Result<Response, HttpError> {
    let sessions = session_views(&state, &who).await?;
    Ok(axum::Json(serde_json::json!({ "sessions": sessions })).into_response())
}

#[derive(Deserialize)]
pub struct TokenOnly {
    csrf_token: Option<String>,
}

impl CsrfField for TokenOnly {
    fn csrf_token(&self) -> Option<&str> {
        self.csrf_token.as_deref()
    }
}

/// `POST /account/sessions/{handle}/revoke`: ends one of the user's sessions.
pub async fn revoke_session(
    State(state): State<AppState>,
    Caller(origin): Caller,
    Path(handle): Path<String>,
    CsrfForm {
        who,
        form: _,
        is_json,
    }: CsrfForm<TokenOnly>,
) -> Result<Response, HttpError> {
    let cause = Cause::at(&state, Initiator::User, "session revoked by its user");
    if !crate::cascade::revoke_session(&state.pool, &who.user.id, &handle, &cause).await? {
        let e = HttpError::json(
            StatusCode::NOT_FOUND,
            "unknown_session",
            "no such session among yours",
        );
        return Err(if is_json { e } else { e.as_page() });
    }
    let event = Event {
        actor: who.user.id.clone(),
        subject: who.user.id.clone(),
        ip: origin.ip,
        user_agent: origin.user_agent,
        detail: format!("session {handle}"),
    };
    audit::record(
        &state.pool,
        EventKind::SessionRevoked,
        event,
        state.clock.now(),
    )
    .await?;
    Ok(if is_json {
        StatusCode::NO_CONTENT.into_response()
    } else {
        Redirect::to("/account").into_response()
    })
}

/// `POST /account/sessions/revoke-others`: signs out everywhere else.
pub async fn revoke_others(
    State(state): State<AppState>,
    Caller(origin): Caller,
    CsrfForm {
        who,
        form: _,
        is_json,
    }: CsrfForm<TokenOnly>,
) -> Result<Response, HttpError> {
    let cause = Cause::at(&state, Initiator::User, "signed out of other sessions");
    let ended = crate::cascade::revoke_other_sessions(
        &state.pool,
        &who.user.id,
        &who.session.handle,
        &cause,
    )
    .await?;
    let event = Event {
        actor: who.user.id.clone(),
        subject: who.user.id.clone(),
        ip: origin.ip,
        user_agent: origin.user_agent,
        detail: format!("{ended} other session(s)"),
    };
    audit::record(
        &state.pool,
        EventKind::SessionRevoked,
        event,
        state.clock.now(),
    )
    .await?;
    Ok(if is_json {
        axum::Json(serde_json::json!({ "ended": ended })).into_response()
    } else {
        Redirect::to("/account").into_response()
    })
}

/// `POST /account/consents/{client_id}/revoke`: withdraw consent from a client
/// (its refresh tokens for this user stop working too).
pub async fn revoke_consent(
    State(state): State<AppState>,
    Path(client_id): Path<String>,
    CsrfForm {
        who,
        form: _,
        is_json,
    }: CsrfForm<TokenOnly>,
) -> Result<Response, HttpError> {
    let now = state.clock.now();
    let cause = Cause::at(&state, Initiator::User, "consent withdrawn");
    if !crate::oauth::authorize::revoke_consent(&state.pool, &who.user.id, &client_id, &cause)
        .await?
    {
        let e = HttpError::json(
            StatusCode::NOT_FOUND,
            "unknown_consent",
            "you have not granted this application anything",
        );
        return Err(if is_json { e } else { e.as_page() });
    }
    let event = Event {
        actor: who.user.id.clone(),
        subject: client_id.clone(),
        detail: "consent withdrawn".into(),
        ..Event::default()
    };
    audit::record(&state.pool, EventKind::ConsentRevoked, event, now).await?;
    Ok(if is_json {
        StatusCode::NO_CONTENT.into_response()
    } else {
        Redirect::to("/account").into_response()
    })
}

#[derive(Deserialize)]
pub struct PasswordForm {
    csrf_token: Option<String>,
    current_password: String,
    new_password: String,
    end_other_sessions: Option<String>,
    /// Where to go once the password is changed (a sign-in request that
    /// waited for a handed-out password to be replaced).
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct PasswordQuery {
    next: Option<String>,
}

impl CsrfField for PasswordForm {
    fn csrf_token(&self) -> Option<&str> {
        self.csrf_token.as_deref()
    }
}

fn password_page(
    state: &AppState,
    who: &SignedInUser,
    status: StatusCode,
    error: &str,
    notice: &str,
    next: Option<&str>,
) -> Result<Response, HttpError> {
    // Only a local path is carried along (never another site).
    let next = next
        .map(|n| crate::routes::login::safe_next(Some(n)))
        .unwrap_or_default();
    let csrf_token = csrf_token(state, who);
    // A handed-out password still to be replaced (not once it just was).
    let required = who.user.must_change_password && notice.is_empty();
    let html = render(
        state,
        "password.html",
        minijinja::context! { csrf_token, signed_in => true, error, notice, required, next, email => who.user.email.as_str() },
    )?;
    Ok((status, html).into_response())
}

/// `GET /account/password`.
pub async fn password_form(
    State(state): State<AppState>,
    SignedIn(who): SignedIn,
    Query(query): Query<PasswordQuery>,
) -> Result<Response, HttpError> {
    password_page(&state, &who, StatusCode::OK, "", "", query.next.as_deref())
}

/// `POST /account/password`: needs the current password; the new one must
/// meet the policy; other sessions end unless the user unticks the box.
pub async fn change_password(
    State(state): State<AppState>,
    Caller(origin): Caller,
    CsrfPageForm { who, form }: CsrfPageForm<PasswordForm>,
) -> Result<Response, HttpError> {
    let end_others = form.end_other_sessions.is_some();
    let next = form.next.as_deref().filter(|n| !n.is_empty());
    let current = crate::identity::Password::new(form.current_password);
    let new = crate::identity::Password::new(form.new_password);
    match crate::login::change_password(
        &state,
        &who.user,
        &who.session.handle,
        &current,
        &new,
        end_others,
        &origin,
    )
    .await
    {
        // A request that waited for the change continues.
        Ok(_) if next.is_some() => {
            Ok(Redirect::to(&crate::routes::login::safe_next(next)).into_response())
        }
        Ok(ended) => password_page(
            &state,
            &who,
            StatusCode::OK,
            "",
            &format!("Password changed. {ended} other session(s) signed out."),
            None,
        ),
        Err(crate::login::ChangePasswordError::WrongCurrentPassword) => password_page(
            &state,
            &who,
            StatusCode::BAD_REQUEST,
            "The current password is not correct.",
            "",
            next,
        ),
        Err(crate::login::ChangePasswordError::Policy(v)) => password_page(
            &state,
            &who,
            StatusCode::BAD_REQUEST,
            &format!("The new password was refused: {}.", v.0.join("; ")),
            "",
            next,
        ),
        Err(crate::login::ChangePasswordError::Store(e)) => Err(HttpError::from(e).as_page()),
        Err(crate::login::ChangePasswordError::Hash(e)) => Err(HttpError::from(e).as_page()),
    }
}
