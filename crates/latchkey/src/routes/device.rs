//! `/device`: where a user approves a device (RFC 8628 §3.3).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::render;
use crate::app::AppState;
use crate::audit::{self, Event, EventKind};
use crate::http::auth::SignedIn;
use crate::http::client::Caller;
use crate::http::csrf::{self, CsrfField, CsrfPageForm};
use crate::http::HttpError;
use crate::oauth::clients;
use crate::oauth::device::{self, Approval, UserCode};
use crate::policy::SignInFacts;
use crate::throttle::LockedOut;

#[derive(Deserialize)]
pub struct DeviceQuery {
    user_code: Option<String>,
}

fn page(state: &AppState, status: StatusCode, context: minijinja::Value) -> Response {
    match render(state, "device.html", context) {
        Ok(html) => (status, html).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /device[?user_code=…]`: sign-in is required first (SSO applies).
pub async fn device_page(
    State(state): State<AppState>,
    SignedIn(who): SignedIn,
    Query(q): Query<DeviceQuery>,
) -> Response {
    let csrf_token = csrf::session_token_for(&state, &who);
    let code = q
        .user_code
        .unwrap_or_default()
        .chars()
        .take(16)
        .collect::<String>();
    page(
        &state,
        StatusCode::OK,
        minijinja::context! { step => "enter", code, csrf_token, signed_in => true, error => "" },
    )
}

/// 429 for a user who entered too many wrong codes (at `/device` or `/device/decision`).
fn too_many_attempts(locked: LockedOut) -> Response {
    HttpError::too_many_attempts("wrong codes", locked.retry_after_secs)
        .as_page()
        .into_response()
}

#[derive(Deserialize)]
pub struct CodeForm {
    code: String,
    csrf_token: Option<String>,
    decision: Option<String>,
}

impl CsrfField for CodeForm {
    fn csrf_token(&self) -> Option<&str> {
        self.csrf_token.as_deref()
    }
}

/// `POST /device`: look the code up (throttled like sign-in) and ask to confirm.
pub async fn device_submit(
    State(state): State<AppState>,
    Caller(origin): Caller,
    CsrfPageForm { who, form }: CsrfPageForm<CodeForm>,
) -> Response {
    let csrf_token = csrf::session_token_for(&state, &who);
    let now = state.clock.now();
    let attempt = match state
        .throttle
        .begin(&format!("device:{}", who.user.id), &origin.ip, now)
        .await
    {
        Ok(a) => a,
        Err(locked) => return too_many_attempts(locked),
    };
    let wrong = |state: &AppState| {
        page(
            state,
            StatusCode::BAD_REQUEST,
            minijinja::context! { step => "enter", code => form.code.chars().take(16).collect::<String>(), csrf_token => csrf_token.clone(), signed_in => true, error => "That code is not valid or has expired." },
        )
    };
    let Some(code) = UserCode::parse(&form.code) else {
        return wrong(&state);
    };
    let found = match device::find_pending(&state.pool, &code, now).await {
        Ok(Some(f)) => f,
        Ok(None) => return wrong(&state),
        Err(e) => return HttpError::from(e).as_page().into_response(),
    };
    attempt.succeeded();
    let client_name = match clients::find(&state.pool, &found.client_id).await {
        Ok(Some(c)) => c.name,
        _ => return wrong(&state),
    };
    let scopes: Vec<String> = found.scope.iter().map(str::to_owned).collect();
    page(
        &state,
        StatusCode::OK,
        minijinja::context! { step => "confirm", code => code.display(), client_name, email => who.user.email.as_str(), scopes, csrf_token, signed_in => true },
    )
}

/// `POST /device/decision`: approve or deny. The code is checked again, so
/// this door is throttled exactly like `POST /device` (same counter).
pub async fn device_decision(
    State(state): State<AppState>,
    Caller(origin): Caller,
    CsrfPageForm { who, form }: CsrfPageForm<CodeForm>,
) -> Response {
    let now = state.clock.now();
    let attempt = match state
        .throttle
        .begin(&format!("device:{}", who.user.id), &origin.ip, now)
        .await
    {
        Ok(a) => a,
        Err(locked) => return too_many_attempts(locked),
    };
    let Some(code) = UserCode::parse(&form.code) else {
        return HttpError::page(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "That code is not valid.",
        )
        .into_response();
    };
    let record = |kind: EventKind, detail: String| {
        let event = Event {
            actor: who.user.id.clone(),
            subject: who.user.id.clone(),
            detail,
            ..Event::default()
        };
        let pool = state.pool.clone();
        async move {
            let _ = audit::record(&pool, kind, event, now).await;
        }
    };
    let done = |status: StatusCode, title: &str, message: &str| {
        page(
            &state,
            status,
            minijinja::context! { step => "done", title, message, signed_in => true },
        )
    };
    let approval = if form.decision.as_deref() == Some("allow") {
        let sign_in = SignInFacts {
            session_handle: &who.session.handle,
            auth_time_ms: who.session.auth_time_ms,
            amr: &who.session.amr,
        };
        device::approve(&state.pool, &code, &who.user.id, &sign_in, now).await
    } else {
        match device::deny(&state.pool, &code, now).await {
            Ok(true) => {
                attempt.succeeded();
                record(EventKind::AccessDenied, "device code denied".into()).await;
                return done(
                    StatusCode::OK,
                    "Request denied",
                    "The device was not given access.",
                );
            }
            Ok(false) => Ok(Approval::Unknown),
            Err(e) => Err(e),
        }
    };
    match approval {
        Ok(Approval::Approved) => {
            attempt.succeeded();
            record(EventKind::ConsentGranted, "device code approved".into()).await;
            done(
                StatusCode::OK,
                "Device connected",
                "You can return to your device.",
            )
        }
        Ok(Approval::Refused(refusal)) => {
            attempt.succeeded();
            record(
                EventKind::AccessDenied,
                format!(
                    "device code refused by the client's policy: {}",
                    refusal.describe()
                ),
            )
            .await;
            done(StatusCode::FORBIDDEN, "Not allowed", refusal.describe())
        }
        Ok(Approval::SignInAgain) => {
            attempt.succeeded();
            let back = format!("/device?user_code={}", code.normalized());
            Redirect::to(&format!(
                "/login?reauth=1&next={}",
                url::form_urlencoded::byte_serialize(back.as_bytes()).collect::<String>()
            ))
            .into_response()
        }
        Ok(Approval::Unknown) => HttpError::page(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "That code is not valid or has expired.",
        )
        .into_response(),
        Err(e) => {
            attempt.abandoned();
            HttpError::from(e).as_page().into_response()
        }
    }
}
