//! Security headers on every response.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use crate::app::AppState;

/// `default-src 'self'`: no inline script or style anywhere, no framing.
pub const CSP: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// [`CSP`], with the origin of a configured `ui.logo_url` allowed as an
/// image source (a logo on a CDN).
pub fn content_security_policy(ui: &crate::config::UiConfig) -> String {
    match ui.logo_origin() {
        Some(origin) => CSP.replace(
            "img-src 'self' data:",
            &format!("img-src 'self' data: {origin}"),
        ),
        None => CSP.to_owned(),
    }
}

pub async fn security_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let is_static = req.uri().path().starts_with("/static/");
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_str(&content_security_policy(&state.config.ui))
            .unwrap_or_else(|_| HeaderValue::from_static(CSP)),
    );
    if !h.contains_key(header::REFERRER_POLICY) {
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("strict-origin-when-cross-origin"),
        );
    }
    h.insert(
        "permissions-policy",
        HeaderValue::from_static(
            "camera=(), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=()",
        ),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if state.config.is_https() {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    // Anything that is not a static asset may carry credentials or personal
    // data: never cache it unless the handler chose otherwise.
    if !h.contains_key(header::CACHE_CONTROL) {
        let value = if is_static {
            "public, max-age=3600"
        } else {
            "no-store"
        };
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
    }
    response
}

/// Sends a browser that reached a `localhost` issuer through a loopback IP
/// (`http://127.0.0.1:8080/login` for the issuer `http://localhost:8080`,
/// the `latchkey dev` default) to the issuer's own address. Only page
/// navigations (`GET`/`HEAD` accepting HTML) are redirected, always to the
/// configured issuer, never to anything the request names: on the IP the
/// pages' CSRF Origin check and WebAuthn would fail, while scripts and API
/// clients calling the IP keep working unchanged.
pub async fn loopback_host_redirect(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(target) = loopback_redirect_target(&state.issuer_origin, &req) {
        return axum::response::Redirect::temporary(&target).into_response();
    }
    next.run(req).await
}

fn loopback_redirect_target(issuer_origin: &str, req: &Request) -> Option<String> {
    use axum::http::Method;
    if !matches!(*req.method(), Method::GET | Method::HEAD)
        || !crate::http::auth::wants_html(req.headers())
    {
        return None;
    }
    let issuer = url::Url::parse(issuer_origin).ok()?;
    if issuer.host_str() != Some("localhost") {
        return None;
    }
    let host = req.headers().get(header::HOST)?.to_str().ok()?;
    let authority: axum::http::uri::Authority = host.parse().ok()?;
    let ip: std::net::IpAddr = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    if !ip.is_loopback() || authority.port_u16() != issuer.port_or_known_default() {
        return None;
    }
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    Some(format!("{issuer_origin}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, host: &str, accept: &str, uri: &str) -> Request {
        axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, host)
            .header(header::ACCEPT, accept)
            .body(axum::body::Body::empty())
            .expect("request")
    }

    #[test]
    fn browsers_on_the_loopback_ip_go_to_the_localhost_issuer() {
        let issuer = "http://localhost:8080";
        let html = "text/html,application/xhtml+xml";
        assert_eq!(
            loopback_redirect_target(
                issuer,
                &request("GET", "127.0.0.1:8080", html, "/login?next=%2Faccount")
            ),
            Some("http://localhost:8080/login?next=%2Faccount".into())
        );
        assert_eq!(
            loopback_redirect_target(issuer, &request("GET", "[::1]:8080", html, "/")),
            Some("http://localhost:8080/".into())
        );
        // Already on the issuer, another port, a script, a POST, another issuer: untouched.
        for (method, host, accept, issuer) in [
            ("GET", "localhost:8080", html, issuer),
            ("GET", "127.0.0.1:9090", html, issuer),
            ("GET", "127.0.0.1:8080", "application/json", issuer),
            ("GET", "127.0.0.1:8080", "*/*", issuer),
            ("POST", "127.0.0.1:8080", html, issuer),
            ("GET", "10.0.0.1:8080", html, issuer),
            ("GET", "127.0.0.1:8080", html, "http://127.0.0.1:8080"),
            ("GET", "127.0.0.1:443", html, "https://id.example.com"),
        ] {
            assert_eq!(
                loopback_redirect_target(issuer, &request(method, host, accept, "/login")),
                None,
                "{method} {host} {accept} {issuer}"
            );
        }
    }
}
