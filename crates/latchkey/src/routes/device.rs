//! `/device`: where a user approves a device (RFC 8628 §3.3).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::render;
use crate::app::AppState;
use crate::audit::{self, Event, EventKind};
use crate::http::auth::SignedIn;
use crate::http::client::Caller;
use crate::http::csrf::{self, Binding};
use crate::http::HttpError;
use crate::oauth::clients;
use crate::oauth::device::{self, UserCode};
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
    let csrf_token = csrf::token_for(&state.csrf_key, Binding::Session(&who.session.id_hash));
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

/// `POST /device`: look the code up (throttled like sign-in) and ask to confirm.
pub async fn device_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    SignedIn(who): SignedIn,
    Caller(origin): Caller,
    axum::Form(form): axum::Form<CodeForm>,
) -> Response {
    if let Err(e) = csrf::verify(
        &headers,
        &state.issuer_origin,
        &state.csrf_key,
        Binding::Session(&who.session.id_hash),
        form.csrf_token.as_deref(),
    ) {
        return e.as_page().into_response();
    }
    let csrf_token = csrf::token_for(&state.csrf_key, Binding::Session(&who.session.id_hash));
    let now = state.clock.now();
    let attempt = match state
        .throttle
        .begin(&format!("device:{}", who.user.id), &origin.ip, now)
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
    headers: HeaderMap,
    SignedIn(who): SignedIn,
    Caller(origin): Caller,
    axum::Form(form): axum::Form<CodeForm>,
) -> Response {
    if let Err(e) = csrf::verify(
        &headers,
        &state.issuer_origin,
        &state.csrf_key,
        Binding::Session(&who.session.id_hash),
        form.csrf_token.as_deref(),
    ) {
        return e.as_page().into_response();
    }
    let now = state.clock.now();
    let attempt = match state
        .throttle
        .begin(&format!("device:{}", who.user.id), &origin.ip, now)
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
    let approve = form.decision.as_deref() == Some("allow");
    let decided = if approve {
        device::decide(
            &state.pool,
            &code,
            Some((
                &who.user.id,
                &who.session.handle,
                who.session.auth_time,
                &who.session.amr,
            )),
            now,
        )
        .await
    } else {
        device::decide(&state.pool, &code, None, now).await
    };
    match decided {
        Ok(true) => {
            attempt.succeeded();
            let kind = if approve {
                EventKind::ConsentGranted
            } else {
                EventKind::AccessDenied
            };
            let _ = audit::record(
                &state.pool,
                kind,
                Event {
                    actor: who.user.id.clone(),
                    subject: who.user.id.clone(),
                    detail: format!(
                        "device code {}",
                        if approve { "approved" } else { "denied" }
                    ),
                    ..Event::default()
                },
                now,
            )
            .await;
            let (title, message) = if approve {
                ("Device connected", "You can return to your device.")
            } else {
                ("Request denied", "The device was not given access.")
            };
            page(
                &state,
                StatusCode::OK,
                minijinja::context! { step => "done", title, message, signed_in => true },
            )
        }
        Ok(false) => HttpError::page(
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
