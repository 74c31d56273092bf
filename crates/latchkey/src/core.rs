//! What the domain runs on: [`Core`] (storage, clock, configuration, keys,
//! the revocation feed's waker, metrics) and [`SignInKit`] (the core plus what
//! the sign-in ceremonies need: the password hasher and policy, the login
//! throttle, the WebAuthn Relying Party).
//!
//! Domain functions take `&Core` (or `&SignInKit` for the ceremonies), never
//! the web's `AppState`: a handler passes `&state`, which dereferences to
//! both. Building them is `state`'s job.
//!
//! Must not: know about HTTP, templates, cookies or CSRF (that is
//! `state::AppState`, for the web).

use std::ops::Deref;
use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Config;
use crate::identity::{PasswordHasher, PasswordPolicy};
use crate::store::Pool;
use crate::telemetry::Metrics;
use crate::throttle::LoginThrottle;

/// The domain's shared dependencies.
pub struct Core {
    pub config: Config,
    pub pool: Pool,
    pub clock: Arc<dyn Clock>,
    /// Signing keys (JWKS, token signatures), reloaded by the maintenance loop.
    pub keys: crate::keys::KeyRing,
    /// The revocation feed's fan-out (its task runs in `run_until_stopped`);
    /// revoking transactions wake it after commit.
    pub revocation_feed: crate::revocation::feed::RevocationFeed,
    pub metrics: Metrics,
    /// Seals TOTP secrets (derived from the master key).
    pub mfa_seal_key: [u8; 32],
    /// Seals federation client secrets and PKCE verifiers (derived from the master key).
    pub federation_seal_key: [u8; 32],
}

/// The core plus the sign-in ceremonies' own dependencies (`login`,
/// `webauthn`).
pub struct SignInKit {
    /// Shared with the background tasks (the revocation feed).
    pub core: Arc<Core>,
    pub hasher: PasswordHasher,
    pub policy: PasswordPolicy,
    pub throttle: LoginThrottle,
    /// The WebAuthn Relying Party (passkeys).
    pub passkeys: crate::webauthn::RelyingParty,
}

impl Deref for SignInKit {
    type Target = Core;
    fn deref(&self) -> &Core {
        &self.core
    }
}
