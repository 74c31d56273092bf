//! The application: shared state, the router, and a server bound to a port.
//!
//! [`Application::build`] connects storage, applies migrations and binds the
//! listener (port 0 in tests), so integration tests start the real server
//! exactly as `latchkey serve` does.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::crypto::MasterKey;
use crate::routes;
use crate::store::{self};

pub use crate::state::{AppInner, AppState};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Store(#[from] store::ConnectError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Hash(#[from] crate::identity::password::HashError),
    #[error(transparent)]
    Keys(#[from] crate::keys::KeyError),
    #[error("cannot finish the data step of a migration: {0}")]
    DataMigration(#[source] crate::store::StoreError),
}

/// What differs between production and tests: the clock.
pub struct Dependencies {
    pub clock: Arc<dyn Clock>,
}

impl Default for Dependencies {
    fn default() -> Self {
        Dependencies {
            clock: Arc::new(SystemClock),
        }
    }
}

pub fn router(state: AppState) -> Router {
    let config = &state.config;
    let request_id = HeaderName::from_static("x-request-id");
    let trace = TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
        let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
        // The path only: query strings may carry codes, tokens or emails.
        tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
    });
    // Endpoints that other origins may call (with CORS from the allowlist):
    // metadata, JWKS, token, revocation, introspection, UserInfo, device start.
    let api = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(routes::oidc::discovery),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(routes::oidc::discovery),
        )
        .route("/.well-known/jwks.json", get(routes::oauth::jwks))
        .route("/oauth2/token", post(routes::oauth::token))
        .route("/oauth2/revoke", post(routes::oauth::revoke))
        .route("/oauth2/introspect", post(routes::oauth::introspect))
        .route(
            "/oauth2/userinfo",
            get(routes::oidc::userinfo).post(routes::oidc::userinfo),
        )
        .route(
            "/oauth2/device_authorization",
            post(routes::oauth::device_authorization),
        )
        // No CorsLayer at all without an allowlist: it would answer every
        // OPTIONS with Access-Control-Allow-Methods/-Headers.
        .layer(tower::util::option_layer(
            (!config.http.cors_allowed_origins.is_empty()).then(|| cors_layer(config)),
        ));
    // Pages and cookie-authenticated endpoints: same-origin only, never CORS
    // (RFC 9700: no CORS on the authorization endpoint).
    let pages = Router::new()
        .route("/", get(routes::login::home))
        .route(
            "/login",
            get(routes::login::login_page).post(routes::login::login_submit),
        )
        .route("/logout", post(routes::login::logout))
        .route(
            "/login/passkey/start",
            post(routes::passkeys::sign_in_start),
        )
        .route(
            "/login/passkey/finish",
            post(routes::passkeys::sign_in_finish),
        )
        .route("/account/passkeys", get(routes::passkeys::list))
        .route(
            "/login/idp/link",
            get(routes::federation::link_page).post(routes::federation::link_confirm),
        )
        .route("/login/idp/{name}", get(routes::federation::start))
        .route(
            "/login/idp/{name}/callback",
            get(routes::federation::callback),
        )
        .route(
            "/account/identities",
            get(routes::federation::identities_page),
        )
        .route(
            "/account/identities/link",
            post(routes::federation::link_another),
        )
        .route(
            "/account/identities/{id}/unlink",
            post(routes::federation::unlink),
        )
        .route(
            "/account/passkeys/register/start",
            post(routes::passkeys::register_start),
        )
        .route(
            "/account/passkeys/register/finish",
            post(routes::passkeys::register_finish),
        )
        .route(
            "/account/passkeys/{id}/rename",
            post(routes::passkeys::rename),
        )
        .route(
            "/account/passkeys/{id}/delete",
            post(routes::passkeys::delete),
        )
        .route(
            "/login/mfa",
            get(routes::mfa::second_step_page).post(routes::mfa::second_step_submit),
        )
        .route("/login/mfa/passkey/start", post(routes::mfa::passkey_start))
        .route(
            "/login/mfa/passkey/finish",
            post(routes::mfa::passkey_finish),
        )
        .route("/account/mfa", get(routes::mfa::account_mfa))
        .route(
            "/account/password",
            get(routes::account::password_form).post(routes::account::change_password),
        )
        .route("/account/mfa/totp/start", post(routes::mfa::totp_start))
        .route("/account/mfa/totp/confirm", post(routes::mfa::totp_confirm))
        .route(
            "/account/mfa/recovery-codes",
            post(routes::mfa::regenerate_codes),
        )
        .route("/account/mfa/disable", post(routes::mfa::disable))
        .route("/account", get(routes::account::account))
        .route("/account/sessions", get(routes::account::sessions_json))
        .route(
            "/account/sessions/revoke-others",
            post(routes::account::revoke_others),
        )
        .route(
            "/account/sessions/{handle}/revoke",
            post(routes::account::revoke_session),
        )
        .route(
            "/account/consents/{client_id}/revoke",
            post(routes::account::revoke_consent),
        )
        .route("/admin", get(routes::admin::admin_page))
        .route("/admin/api/users", get(routes::admin::users_json))
        .route(
            "/oauth2/authorize",
            get(routes::authorize::authorize).post(routes::authorize::authorize),
        )
        .route("/oauth2/authorize/resume", get(routes::authorize::resume))
        .route(
            "/oauth2/authorize/consent",
            post(routes::authorize::consent),
        )
        // The revocation feed: bearer-authenticated, never CORS; a stream
        // (the request timeout bounds only the time to the response head).
        .route(
            "/oauth2/revocations/stream",
            get(routes::revocations::stream),
        )
        .route(
            "/oauth2/logout",
            get(routes::oidc::logout).post(routes::oidc::logout),
        )
        .route(
            "/device",
            get(routes::device::device_page).post(routes::device::device_submit),
        )
        .route("/device/decision", post(routes::device::device_decision))
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/metrics", get(routes::health::metrics))
        .route("/static/latchkey.css", get(routes::health::stylesheet))
        .route(
            "/static/form_post.js",
            get(routes::health::form_post_script),
        )
        .route("/static/passkeys.js", get(routes::passkeys::script));
    Router::new()
        .merge(pages)
        .merge(api)
        .fallback(routes::health::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::http::headers::loopback_host_redirect,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::telemetry::track_requests,
        ))
        // Extractors (FormOrJson) enforce the limit and answer a JSON 413.
        .layer(DefaultBodyLimit::max(config.http.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(config.http.request_timeout_secs),
        ))
        .layer(trace)
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        // Framework rejections (413, 415, 422, 405, 408, a caught panic) in
        // the endpoint's error shape; inside the security headers.
        .layer(axum::middleware::from_fn(
            crate::http::error::shape_framework_rejections,
        ))
        // Error pages (ours and the shaped rejections) in the deployment's
        // templates: outside the shaping, so it sees its pages too.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::http::error::brand_error_pages,
        ))
        // Outermost, so every response gets them: 408, 500 after a panic, preflights.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::http::headers::security_headers,
        ))
        .with_state(state)
}

/// CORS from an explicit allowlist. With an empty list no CORS headers are
/// sent at all (same-origin only). `*` is honoured only without credentials
/// (config validation refuses the combination).
fn cors_layer(config: &Config) -> CorsLayer {
    let origins = &config.http.cors_allowed_origins;
    let base = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("x-csrf-token"),
        ])
        .max_age(Duration::from_secs(600));
    if origins.iter().any(|o| o == "*") && !config.http.cors_allow_credentials {
        return base.allow_origin(AllowOrigin::any());
    }
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter(|o| *o != "*")
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    base.allow_origin(AllowOrigin::list(list))
        .allow_credentials(config.http.cors_allow_credentials)
}

/// A server bound to its port, not yet serving.
pub struct Application {
    listener: tokio::net::TcpListener,
    state: AppState,
}

impl Application {
    pub async fn build(
        config: Config,
        master_key: MasterKey,
        deps: Dependencies,
    ) -> Result<Application, BuildError> {
        let addr = config.bind_addr()?;
        let state = AppState::new(config, master_key, deps).await?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| BuildError::Bind { addr, source })?;
        Ok(Application { listener, state })
    }

    /// Like [`Application::build`], on a listener the caller already bound
    /// (tests bind port 0 first, so the issuer can name the real port).
    pub async fn build_on(
        listener: std::net::TcpListener,
        config: Config,
        master_key: MasterKey,
        deps: Dependencies,
    ) -> Result<Application, BuildError> {
        let addr = listener.local_addr().map_err(|source| BuildError::Bind {
            addr: config
                .bind_addr()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0))),
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| BuildError::Bind { addr, source })?;
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|source| BuildError::Bind { addr, source })?;
        let state = AppState::new(config, master_key, deps).await?;
        Ok(Application { listener, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let maintenance = tokio::spawn(maintenance_loop(self.state.clone()));
        let feed = self.state.revocation_feed.clone();
        let fan_out = tokio::spawn(feed.clone().run(self.state.sign_in.core.clone()));
        let app = router(self.state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        // Feed streams never end by themselves; graceful shutdown waits for
        // open connections, so they are told to end first.
        let shutdown = async move {
            shutdown.await;
            feed.close_streams();
        };
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        maintenance.abort();
        fan_out.abort();
        self.state.pool.close().await;
        served
    }
}

/// Periodic housekeeping: expired sessions, stale throttle counters,
/// revocation events past retention, gauges.
async fn maintenance_loop(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(crate::keys::RELOAD_INTERVAL_SECS));
    loop {
        tick.tick().await;
        let now = state.clock.now();
        state.throttle.purge(now);
        match crate::session::purge_expired(&state.pool, &state.config.session, now).await {
            Ok(n) if n > 0 => tracing::debug!(purged = n, "expired sessions removed"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "session purge failed"),
        }
        if let Err(e) = crate::oauth::authorize::purge_expired(&state.pool, now).await {
            tracing::warn!(error = %e, "authorization purge failed");
        }
        if let Err(e) = crate::oauth::clients::purge_assertion_jtis(&state.pool, now).await {
            tracing::warn!(error = %e, "assertion id purge failed");
        }
        if let Err(e) = crate::mfa::purge_expired(&state.pool, now).await {
            tracing::warn!(error = %e, "mfa challenge purge failed");
        }
        if let Err(e) = crate::webauthn::purge_expired(&state.pool, now).await {
            tracing::warn!(error = %e, "webauthn challenge purge failed");
        }
        if let Err(e) = crate::federation::store::purge_expired(&state.pool, now).await {
            tracing::warn!(error = %e, "purging federation states failed");
        }
        if let Err(e) = crate::oauth::device::purge_expired(&state.pool, now).await {
            tracing::warn!(error = %e, "device code purge failed");
        }
        if let Err(e) = crate::tokens::purge_expired(&state.pool, now).await {
            tracing::warn!(error = %e, "token purge failed");
        }
        match crate::tokens::refresh::prune_spent(&state.pool, &state.config.tokens, now).await {
            Ok(n) if n > 0 => tracing::debug!(pruned = n, "spent refresh tokens pruned"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "spent refresh token pruning failed"),
        }
        let retention = crate::revocation::retention_secs(
            state.keys.max_token_lifetime_secs(),
            state.config.tokens.leeway_secs,
        );
        if let Err(e) = crate::revocation::purge_older_than(&state.pool, now - retention).await {
            tracing::warn!(error = %e, "revocation event purge failed");
        }
        // Rotation is idempotent across instances (see keys::KeyRing::maintain).
        if let Err(e) = state.keys.maintain(&state.pool, now).await {
            tracing::error!(error = %e, "signing key maintenance failed");
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
