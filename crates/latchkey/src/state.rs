//! The web's state: [`AppState`], what handlers and extractors hold — the
//! domain's [`SignInKit`] (and through it the [`Core`]) plus what only the web
//! needs: the CSRF key, the templates, the issuer's origin and the
//! per-client request budgets.
//!
//! `AppState` dereferences to [`SignInKit`] and on to [`Core`], so a handler
//! passes `&state` to a domain function that takes `&Core` or `&SignInKit`.
//! Nothing below `routes/` and `http/` names it (a layering test holds this).
//!
//! Must not: hold anything the domain needs that the web does not build.

use std::ops::Deref;
use std::sync::Arc;

use crate::app::{BuildError, Dependencies};
use crate::config::Config;
use crate::core::{Core, SignInKit};
use crate::crypto::MasterKey;
use crate::identity::{PasswordHasher, PasswordPolicy};
use crate::store::{self, Pool};
use crate::telemetry::Metrics;
use crate::throttle::LoginThrottle;
use crate::ui::Templates;

pub struct AppInner {
    /// The domain's dependencies (and through them the [`Core`]).
    pub sign_in: SignInKit,
    /// Token-endpoint requests per client.
    pub token_rate: crate::throttle::RateLimiter,
    /// Device authorization requests per client and per IP (IPv6: per /64).
    pub device_rate_per_client: crate::throttle::RateLimiter,
    pub device_rate_per_ip: crate::throttle::RateLimiter,
    /// Federated sign-ins started per IP (IPv6: per /64).
    pub federation_rate_per_ip: crate::throttle::RateLimiter,
    pub csrf_key: [u8; 32],
    pub templates: Templates,
    /// `scheme://host[:port]` of the issuer, for Origin checks.
    pub issuer_origin: String,
}

/// Cheap-to-clone handle on everything a request needs.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl Deref for AppInner {
    type Target = SignInKit;
    fn deref(&self) -> &SignInKit {
        &self.sign_in
    }
}

impl AppState {
    pub async fn new(
        config: Config,
        master_key: MasterKey,
        deps: Dependencies,
    ) -> Result<AppState, BuildError> {
        let pool = store::connect(&config.database).await?;
        if config.database.migrate_on_start {
            store::migrate(&pool).await?;
        } else {
            store::require_migrated(&pool).await?;
        }
        crate::identity::normalize_stored_emails(&pool)
            .await
            .map_err(BuildError::DataMigration)?;
        let state = Self::with_pool(config, master_key, deps, pool)?;
        // Creates the first keys on a fresh database; fails on a wrong master key.
        state.keys.maintain(&state.pool, state.clock.now()).await?;
        Ok(state)
    }

    pub fn with_pool(
        config: Config,
        master_key: MasterKey,
        deps: Dependencies,
        pool: Pool,
    ) -> Result<AppState, BuildError> {
        let issuer_origin = config.issuer_url()?.origin().ascii_serialization();
        let web_templates = Templates::branded(&config.ui);
        let passkeys = crate::webauthn::RelyingParty::from_config(&config)?;
        let hasher = PasswordHasher::new(&config.password)?;
        let policy = PasswordPolicy::new(&config.password);
        let throttle = LoginThrottle::new(config.login.clone());
        let token_rate = crate::throttle::RateLimiter::new(
            config.tokens.max_token_requests_per_client_per_minute,
        );
        Ok(AppState(Arc::new(AppInner {
            token_rate,
            device_rate_per_client: crate::throttle::RateLimiter::new(
                config
                    .tokens
                    .max_device_authorizations_per_client_per_minute,
            ),
            device_rate_per_ip: crate::throttle::RateLimiter::new(
                config.tokens.max_device_authorizations_per_ip_per_minute,
            ),
            federation_rate_per_ip: crate::throttle::RateLimiter::new(
                config.federation.max_sign_ins_per_ip_per_minute,
            ),
            csrf_key: master_key.derive("latchkey/csrf/v1"),
            templates: web_templates,
            issuer_origin,
            sign_in: SignInKit {
                hasher,
                policy,
                throttle,
                passkeys,
                core: Arc::new(Core {
                    mfa_seal_key: master_key.derive("latchkey/totp-seal/v1"),
                    federation_seal_key: master_key.derive(crate::federation::SEAL_PURPOSE),
                    keys: crate::keys::KeyRing::new(&config.tokens, &master_key),
                    revocation_feed: crate::revocation::feed::RevocationFeed::new(
                        &config.revocation_feed,
                    ),
                    metrics: Metrics::new(),
                    clock: deps.clock,
                    pool,
                    config,
                }),
            },
        })))
    }
}
