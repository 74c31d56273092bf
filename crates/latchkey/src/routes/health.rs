//! Probes, metrics, static assets and the 404 answer.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::http::auth::wants_html;
use crate::http::HttpError;

/// Liveness: the process answers. Never touches the database.
pub async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// Readiness: 200 when the database answers and accepts a write, 503 (with
/// `Retry-After`) otherwise — a full disk makes an instance not-ready even
/// though its reads still work.
pub async fn readyz(State(state): State<AppState>) -> Response {
    match crate::store::accepts_writes(&state.pool, state.clock.now()).await {
        Ok(()) => {
            axum::Json(serde_json::json!({ "status": "ready", "database": "ok" })).into_response()
        }
        Err(error) => {
            tracing::warn!(%error, "not ready: the database does not accept writes");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "5")],
                axum::Json(serde_json::json!({ "error": "database_unavailable", "message": "the database does not accept writes" })),
            )
                .into_response()
        }
    }
}

/// Prometheus text format. The active-session gauge is refreshed on scrape.
pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Ok(n) =
        crate::session::count_active(&state.pool, &state.config.session, state.clock.now()).await
    {
        state.metrics.active_sessions.set(n);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

pub async fn stylesheet(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        crate::ui::stylesheet(&state.config.ui),
    )
        .into_response()
}

pub async fn form_post_script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        crate::ui::FORM_POST_SCRIPT,
    )
        .into_response()
}

pub async fn not_found(headers: HeaderMap) -> HttpError {
    let e = HttpError::json(StatusCode::NOT_FOUND, "not_found", "no such page");
    if wants_html(&headers) {
        e.as_page()
    } else {
        e
    }
}
