//! `latchkey-verify`: how an API trusts the access tokens Latchkey issues —
//! fast, without calling Latchkey per request, and still honouring "sign out
//! everywhere" within a second.
//!
//! - [`Verifier`] reads the issuer's discovery document and JWKS, keeps the
//!   keys in a lock-free cache refreshed in the background, and verifies
//!   tokens with the shared [`jose`] rules: **the algorithm comes from the
//!   key** (found by `kid`), never from the token header; `alg: none`,
//!   algorithm confusion, unknown keys, bad signatures and wrong
//!   `iss`/`aud`/`typ`/`exp`/`nbf` are refused with a distinct
//!   [`jose::VerifyError`].
//! - With [`VerifierBuilder::revocation_feed`] it follows Latchkey's
//!   revocation feed (Server-Sent Events of signed Security Event Tokens) and
//!   refuses tokens whose `jti`, session (`sid`) or user (`sub`, issued
//!   before the event) was revoked — sign-out, session revocation, refresh
//!   token reuse, RFC 7009 revocation, a disabled or deleted user, a
//!   password change.
//! - The axum integration (feature `axum`, default) is one layer and four
//!   extractors: [`Authenticated`], [`RequireScope`], [`RequireRole`],
//!   [`RequireMfa`], with RFC 6750 errors (401 `invalid_token`, 403
//!   `insufficient_scope`) and RFC 9470 step-up (401
//!   `insufficient_user_authentication`) when a route needs a second factor
//!   the token's sign-in did not have — [`RequireMfa`], or a role listed in
//!   [`VerifierBuilder::mfa_required_roles`] (default `admin`, like the
//!   server's `mfa.required_roles`).
//! - Feature `ws`: WebSocket upgrades authenticated by bearer token,
//!   subprotocol or session cookie, closed with code 1008 when the token
//!   expires or is revoked ([`ws`]).
//! - Optional introspection (RFC 7662) for opaque tokens, cached.
//!
//! # Quick start
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use latchkey_verify::{Authenticated, RequireRole, RequireScope, Verifier};
//!
//! latchkey_verify::scope!(ReadData = "read:data");
//! latchkey_verify::role!(Admin = "admin");
//!
//! async fn me(Authenticated(claims): Authenticated) -> String {
//!     format!("hello {} (session {:?})", claims.sub, claims.sid)
//! }
//! async fn data(token: RequireScope<ReadData>) -> String {
//!     format!("data for {}", token.sub)
//! }
//! async fn admin(_: RequireRole<Admin>) -> &'static str {
//!     "admin area"
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let verifier = Verifier::discover("http://localhost:8080")
//!         .audience("my-api")
//!         .revocation_feed("<feed client id>", "<feed client secret>")
//!         .build()
//!         .await?;
//!     let app = Router::new()
//!         .route("/me", get(me))
//!         .route("/data", get(data))
//!         .route("/admin", get(admin))
//!         .layer(verifier.layer());
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     axum::serve(listener, app).await?;
//!     Ok(())
//! }
//! ```
//!
//! The guide — configuration and defaults, errors, caching, the feed's
//! failure policies, introspection, WebSockets — is `docs/verify.md` in the
//! Latchkey repository; the feed's wire protocol is `docs/revocation-feed.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bearer;
mod body;
pub mod claims;
pub mod clock;
pub mod error;
#[cfg(feature = "axum")]
pub mod extract;
mod feed;
pub mod introspection;
pub mod jose;
pub mod jwks;
pub mod revocation;
pub mod sse;
mod verifier;
#[cfg(feature = "ws")]
pub mod ws;

pub use claims::{Claims, Verified};
pub use clock::{Clock, SystemClock};
pub use error::{AuthError, Challenge};
#[cfg(feature = "axum")]
pub use extract::{
    require_mfa, require_role, require_scope, AuthRejection, Authenticated, RequireMfa,
    RequireRole, RequireScope, RoleName, ScopeName, VerifierLayer,
};
pub use revocation::Revocation;
pub use verifier::{
    BuildError, FeedFailurePolicy, FeedHealth, Health, JwksHealth, Verifier, VerifierBuilder,
    DEFAULT_MFA_REQUIRED_ROLES, FEED_SCOPE,
};
