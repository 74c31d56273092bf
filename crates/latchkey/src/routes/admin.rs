//! `/admin`: the user list, for holders of the `admin` role.

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::render;
use crate::app::AppState;
use crate::clock::{format_rfc3339, format_utc, time_ago};
use crate::http::auth::{Admin, HasRole};
use crate::http::HttpError;
use crate::identity;

pub async fn admin_page(
    State(state): State<AppState>,
    HasRole(who, _): HasRole<Admin>,
) -> Result<Response, HttpError> {
    let users = identity::list(&state.pool)
        .await
        .map_err(|e| HttpError::from(e).as_page())?;
    let now = state.clock.now();
    let users: Vec<_> = users
        .into_iter()
        .map(|u| {
            minijinja::context! {
                email => u.email.as_str(), display_name => u.display_name, roles => u.roles,
                disabled => u.disabled, created => format_utc(u.created_at),
                created_ago => time_ago(now, u.created_at), created_iso => format_rfc3339(u.created_at)
            }
        })
        .collect();
    let csrf_token = crate::http::csrf::session_token_for(&state, &who);
    Ok(render(
        &state,
        "admin.html",
        minijinja::context! { users, csrf_token, signed_in => true },
    )?
    .into_response())
}

/// `GET /admin/api/users`: every user as JSON (no password hashes).
pub async fn users_json(
    State(state): State<AppState>,
    _admin: HasRole<Admin>,
) -> Result<Response, HttpError> {
    let users = identity::list(&state.pool).await?;
    Ok(axum::Json(serde_json::json!({ "users": users })).into_response())
}
