//! The one place where failures become HTTP responses.
//!
//! JSON endpoints answer `{"error": "<machine_code>", "message": "<human text>"}`;
//! HTML routes answer an error page. 401 carries `WWW-Authenticate`.
//!
//! [`shape_framework_rejections`] holds the same rule for the answers our
//! handlers never see: the framework's own rejections (a body over the
//! limit, a form or query that does not deserialize, the wrong method or
//! content type, a timeout, a caught panic) arrive as plain text or empty;
//! it rewrites them — RFC 6749 §5.2 error objects at the OAuth endpoints,
//! `{"error","message"}` (or a page for a browser) everywhere else.

use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};

use crate::identity::IdentityError;
use crate::store::StoreError;

#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub html: bool,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl HttpError {
    pub fn json(status: StatusCode, code: &'static str, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            code,
            message: message.into(),
            html: false,
            headers: Vec::new(),
        }
    }

    pub fn page(status: StatusCode, code: &'static str, message: impl Into<String>) -> HttpError {
        HttpError {
            html: true,
            ..HttpError::json(status, code, message)
        }
    }

    pub fn bad_request(message: impl Into<String>) -> HttpError {
        HttpError::json(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 401 for cookie-authenticated API routes: tells the caller how to sign in.
    pub fn unauthenticated() -> HttpError {
        HttpError::json(StatusCode::UNAUTHORIZED, "unauthenticated", "sign in first").with_header(
            header::WWW_AUTHENTICATE,
            "Session realm=\"latchkey\", login_uri=\"/login\"",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> HttpError {
        HttpError::json(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 429 with `Retry-After`: sign-in or code guessing is locked for a while.
    pub fn too_many_attempts(what: &str, retry_after_secs: i64) -> HttpError {
        HttpError::json(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            format!("Too many {what}; try again in {retry_after_secs} seconds"),
        )
        .with_header(header::RETRY_AFTER, &retry_after_secs.to_string())
    }

    pub fn internal() -> HttpError {
        HttpError::json(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "something went wrong on our side; it has been logged",
        )
    }

    pub fn with_header(mut self, name: HeaderName, value: &str) -> HttpError {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.push((name, v));
        }
        self
    }

    /// Renders this error as a page instead of JSON.
    pub fn as_page(mut self) -> HttpError {
        self.html = true;
        self
    }
}

impl From<StoreError> for HttpError {
    fn from(e: StoreError) -> HttpError {
        match e {
            StoreError::Unavailable(source) => {
                tracing::warn!(error = %source, "database unavailable");
                HttpError::json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "the database is unavailable; try again shortly",
                )
                .with_header(header::RETRY_AFTER, "5")
            }
            StoreError::Conflict => HttpError::json(
                StatusCode::CONFLICT,
                "conflict",
                "that record already exists",
            ),
            StoreError::Other(source) => {
                tracing::error!(error = %source, "database error");
                HttpError::internal()
            }
        }
    }
}

impl From<IdentityError> for HttpError {
    fn from(e: IdentityError) -> HttpError {
        match e {
            IdentityError::Store(s) => s.into(),
            IdentityError::DuplicateEmail(_) => {
                HttpError::json(StatusCode::CONFLICT, "duplicate_email", e.to_string())
            }
            IdentityError::UnknownUser(_) => {
                HttpError::json(StatusCode::NOT_FOUND, "unknown_user", "no such user")
            }
        }
    }
}

impl From<crate::identity::password::HashError> for HttpError {
    fn from(e: crate::identity::password::HashError) -> HttpError {
        tracing::error!(error = %e, "password hashing failed");
        HttpError::internal()
    }
}

/// Marks a response as an error page, so [`brand_error_pages`] can render it
/// with the deployment's templates (header bar, product name).
#[derive(Debug, Clone)]
pub struct ErrorPage {
    pub status: StatusCode,
    pub message: String,
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut response = if self.html {
            let mut page =
                (self.status, Html(error_page(self.status, &self.message))).into_response();
            page.extensions_mut().insert(ErrorPage {
                status: self.status,
                message: self.message.clone(),
            });
            page
        } else {
            let body = serde_json::json!({ "error": self.code, "message": self.message });
            (self.status, axum::Json(body)).into_response()
        };
        for (name, value) in self.headers {
            response.headers_mut().append(name, value);
        }
        response
    }
}

/// `message` as a sentence: its first letter capitalised.
pub fn sentence(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Middleware (outside [`shape_framework_rejections`], so the framework's
/// rejections are covered too): renders every error page with the
/// deployment's templates — the header bar with the product name, a
/// capitalised message — keeping status and headers.
pub async fn brand_error_pages(
    axum::extract::State(state): axum::extract::State<crate::app::AppState>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    let Some(page) = response.extensions().get::<ErrorPage>().cloned() else {
        return response;
    };
    let title = page.status.canonical_reason().unwrap_or("Error");
    let context = minijinja::context! {
        title, message => sentence(&page.message), signed_in => false
    };
    match state.templates.render("error.html", context) {
        Ok(html) => {
            let (mut parts, _) = response.into_parts();
            parts.headers.remove(header::CONTENT_LENGTH);
            let mut branded = Response::from_parts(parts, axum::body::Body::from(html));
            branded.extensions_mut().remove::<ErrorPage>();
            branded
        }
        Err(e) => {
            tracing::error!(error = %e, "error page template failed");
            response
        }
    }
}

/// A self-contained error page (no template state needed, text escaped);
/// [`brand_error_pages`] replaces it with the templated one.
fn error_page(status: StatusCode, message: &str) -> String {
    let title = status.canonical_reason().unwrap_or("Error");
    let message = sentence(message);
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Latchkey</title><link rel=\"stylesheet\" href=\"/static/latchkey.css\"></head>\
         <body><main class=\"card\"><h1>{title}</h1><p class=\"error\">{}</p><p><a href=\"/\">Back to start</a></p></main></body></html>",
        escape_html(&message)
    )
}

pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            _ => out.push(c),
        }
    }
    out
}

/// The endpoints whose errors are RFC 6749 / RFC 6750 error objects
/// (`{"error", "error_description"}`).
pub const OAUTH_ENDPOINTS: &[&str] = &[
    "/oauth2/token",
    "/oauth2/revoke",
    "/oauth2/introspect",
    "/oauth2/device_authorization",
    "/oauth2/userinfo",
    "/oauth2/revocations/stream",
];

/// Middleware: rewrites an error answer that no handler shaped (plain text
/// or no body, as the framework writes its rejections) into the error shape
/// of the endpoint, keeping its status and headers (`Allow`, `Retry-After`,
/// the request id, CORS).
pub async fn shape_framework_rejections(request: Request, next: Next) -> Response {
    let oauth = OAUTH_ENDPOINTS.contains(&request.uri().path());
    let html = super::auth::wants_html(request.headers());
    let response = next.run(request).await;
    let status = response.status();
    let shaped = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json") || ct.starts_with("text/html"));
    if !(status.is_client_error() || status.is_server_error()) || shaped {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    // The framework's text says what to fix (which field, which type); a
    // server error's text could say more than a client should know.
    let message = if text.is_empty() || status.is_server_error() {
        status
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_lowercase()
    } else {
        text.chars().take(300).collect()
    };
    let mut shaped = if oauth {
        let error = match status {
            StatusCode::SERVICE_UNAVAILABLE => "temporarily_unavailable",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request",
        };
        let body = serde_json::json!({ "error": error, "error_description": message });
        let mut response = (status, axum::Json(body)).into_response();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    } else {
        let code = match status {
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::REQUEST_TIMEOUT => "request_timeout",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
            StatusCode::SERVICE_UNAVAILABLE => "temporarily_unavailable",
            s if s.is_server_error() => "internal_error",
            _ => "invalid_request",
        };
        let error = HttpError::json(status, code, message);
        if html { error.as_page() } else { error }.into_response()
    };
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            shaped.headers_mut().append(name, value.clone());
        }
    }
    shaped
}
