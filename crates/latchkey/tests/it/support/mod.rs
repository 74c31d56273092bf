//! The one test support module: feature files import from here only.
//!
//! - [`app`] — the app harness ([`app::TestApp`]: a real server on a random
//!   port, SQLite or PostgreSQL, a manual clock; the `localhost` variant for
//!   passkeys), databases, users and second factors;
//! - [`oauth`] — test clients, token requests, PKCE, the authorization-code
//!   flow through the real pages;
//! - [`jwt`] — JWKS, JWT parts, independent verification;
//! - [`browser`] — headless Chromium with a virtual authenticator;
//! - [`cli`] — the `latchkey` binary as a process;
//! - [`federation`] — a second Latchkey as the upstream OpenID provider and
//!   the browser's walk through both servers;
//! - [`api`] — a protected API built on `latchkey-verify`, a fault-injecting
//!   proxy, and the SDK flows;
//! - [`disk`] — a small tmpfs to fill (full-disk faults; root, else skipped
//!   outside CI).
#![allow(dead_code)] // shared by feature files; not every file uses every helper

pub mod api;
pub mod app;
pub mod browser;
pub mod cli;
pub mod disk;
pub mod federation;
pub mod jwt;
pub mod oauth;

/// The password every test user gets unless a test says otherwise.
pub const PASSWORD: &str = "correct horse battery";

/// The redirect URI registered for the test web clients.
pub const REDIRECT: &str = "https://app.example.com/cb";
