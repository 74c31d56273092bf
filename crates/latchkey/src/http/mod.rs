//! Cross-cutting HTTP concerns: the error shape, request bodies, who is
//! signed in, CSRF, security headers and the caller's address.
//!
//! Must not: hold business rules (they live in the domain modules) or SQL.

pub mod auth;
pub mod body;
pub mod client;
pub mod cookies;
pub mod csrf;
pub mod error;
pub mod headers;

pub use error::HttpError;
