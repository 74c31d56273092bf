//! A small API protected by `latchkey-verify`: one layer, the extractors, a
//! WebSocket that closes when its token is revoked or expires, and a health
//! endpoint. Run it next to `latchkey dev` (see "Protect your API" in the
//! repository's README):
//!
//! ```sh
//! FEED_CLIENT_ID=... FEED_CLIENT_SECRET=... \
//!   cargo run -p latchkey-verify --features ws --example api
//! ```
//!
//! Environment: `API_ISSUER` (default `http://localhost:8080`), `API_BIND`
//! (default `127.0.0.1:3000`), `API_AUDIENCE` (the `aud` your tokens carry:
//! the `--audience` of the client that gets them), and `FEED_CLIENT_ID` /
//! `FEED_CLIENT_SECRET` (a client with `--grant client_credentials --scope
//! latchkey:revocations`; without them the API does not follow the feed).
//!
//! Routes: `/` public, `/me` any valid token, `/admin` role `admin` (which
//! needs a sign-in with a second factor), `/data` scope `read:data`, `/ws`
//! an echo WebSocket, `/healthz` the verifier's health.

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use latchkey_verify::ws::{close_policy_violation, WebSocketAuth};
use latchkey_verify::{Authenticated, RequireRole, RequireScope, Verifier};

latchkey_verify::scope!(ReadData = "read:data");
latchkey_verify::role!(Admin = "admin");

async fn public() -> &'static str {
    "public: no token needed\n"
}

async fn me(Authenticated(claims): Authenticated) -> Json<latchkey_verify::Claims> {
    Json(claims)
}

async fn admin(token: RequireRole<Admin>) -> String {
    format!("admin area, welcome {}\n", token.sub)
}

async fn data(token: RequireScope<ReadData>) -> String {
    format!("data for {} (scope: {})\n", token.sub, token.scope)
}

/// An echo WebSocket: closed with 1008 when the token expires or is revoked.
async fn ws(upgrade: WebSocketUpgrade, auth: WebSocketAuth) -> Response {
    let mut watch = auth.watch();
    auth.accept(upgrade)
        .on_upgrade(move |mut socket| async move {
            loop {
                tokio::select! {
                    reason = watch.ended() => {
                        let _ = close_policy_violation(&mut socket, reason).await;
                        break;
                    }
                    message = socket.recv() => match message {
                        Some(Ok(Message::Text(text))) => {
                            if socket.send(Message::Text(text)).await.is_err() {
                                break;
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => break,
                    },
                }
            }
        })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let issuer = var("API_ISSUER").unwrap_or_else(|| "http://localhost:8080".into());
    let bind = var("API_BIND").unwrap_or_else(|| "127.0.0.1:3000".into());

    let mut builder = Verifier::discover(&issuer);
    match var("API_AUDIENCE") {
        Some(audience) => builder = builder.audience(audience),
        None => tracing::warn!("API_AUDIENCE is not set: tokens for any audience are accepted"),
    }
    match (var("FEED_CLIENT_ID"), var("FEED_CLIENT_SECRET")) {
        (Some(id), Some(secret)) => builder = builder.revocation_feed(id, secret),
        _ => tracing::warn!(
            "FEED_CLIENT_ID/FEED_CLIENT_SECRET not set: revocations are not followed"
        ),
    }
    let verifier = builder.build().await?;

    let health = {
        let verifier = verifier.clone();
        move || {
            let verifier = verifier.clone();
            async move { Json(verifier.health()).into_response() }
        }
    };
    let app = Router::new()
        .route("/", get(public))
        .route("/me", get(me))
        .route("/admin", get(admin))
        .route("/data", get(data))
        .route("/ws", get(ws))
        .route("/healthz", get(health))
        .layer(verifier.layer());
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    tracing::info!("API listening on http://{bind}, trusting {issuer}");
    axum::serve(listener, app).await?;
    Ok(())
}
