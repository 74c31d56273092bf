//! Request bodies: form or JSON, with clear 4xx answers for bad input.
//!
//! Axum's own rejections are plain text; these wrappers turn every failure
//! (malformed, wrong type, duplicated field, too large) into our JSON error
//! shape with a message that says what to fix.

use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use super::error::HttpError;

/// A body that may arrive as `application/x-www-form-urlencoded` or
/// `application/json`; `is_json` tells which, so the handler answers in kind.
pub struct FormOrJson<T> {
    pub value: T,
    pub is_json: bool,
}

fn content_type(req: &Request) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

fn body_error(status: StatusCode, detail: String) -> HttpError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        HttpError::json(status, "payload_too_large", "the request body is too large")
    } else {
        HttpError::json(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("malformed request body: {detail}"),
        )
    }
}

impl<S, T> FromRequest<S> for FormOrJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match content_type(&req).as_str() {
            "application/json" => {
                let axum::Json(value) = axum::Json::<T>::from_request(req, state)
                    .await
                    .map_err(|r| body_error(r.status(), r.body_text()))?;
                Ok(FormOrJson {
                    value,
                    is_json: true,
                })
            }
            "application/x-www-form-urlencoded" => {
                let axum::Form(value) = axum::Form::<T>::from_request(req, state)
                    .await
                    .map_err(|r| body_error(r.status(), r.body_text()))?;
                Ok(FormOrJson {
                    value,
                    is_json: false,
                })
            }
            other => Err(HttpError::json(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "send application/x-www-form-urlencoded or application/json, not {other:?}"
                ),
            )),
        }
    }
}
