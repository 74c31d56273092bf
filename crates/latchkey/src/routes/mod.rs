//! HTTP handlers, one file per area. Handlers are thin: parse the request
//! into domain types, call one domain function, map the result.
//!
//! Must not: contain SQL or business rules.

pub mod account;
pub mod admin;
pub mod authorize;
pub mod device;
pub mod federation;
pub mod health;
pub mod login;
pub mod mfa;
pub mod oauth;
pub mod oidc;
pub mod passkeys;
pub mod revocations;

use axum::response::Html;

use crate::app::AppState;
use crate::http::HttpError;

/// Renders a template into a page, mapping template bugs to a 500 page.
pub(crate) fn render(
    state: &AppState,
    name: &str,
    context: minijinja::Value,
) -> Result<Html<String>, HttpError> {
    state
        .templates
        .render(name, context)
        .map(Html)
        .map_err(|e| {
            tracing::error!(template = name, error = %e, "template failed");
            HttpError::internal().as_page()
        })
}
