//! Latchkey: a self-hosted identity provider and OAuth 2.1 / OpenID Connect
//! server. See `ARCHITECTURE.md` at the repository root for the map.
#![forbid(unsafe_code)]

pub mod app;
pub mod audit;
pub mod cascade;
pub mod cli;
pub mod cli_admin;
pub mod cli_idp;
pub mod clock;
pub mod config;
pub mod core;
pub mod crypto;
pub mod doctor;
pub mod federation;
pub mod grants;
pub mod http;
pub mod identity;
pub mod keys;
pub mod login;
pub mod mfa;
pub mod oauth;
pub mod oidc;
pub mod policy;
pub mod revocation;
pub mod routes;
pub mod scope;
pub mod session;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod throttle;
pub mod tokens;
pub mod ui;
pub mod webauthn;

pub use app::{AppState, Application, Dependencies};
pub use config::Config;
