//! [`Verifier`]: configuration, start-up (discovery, JWKS, feed), the
//! verification path and health.
//!
//! The request path ([`Verifier::verify`]) is: `jose::verify` against the
//! current key set (a lock-free `ArcSwap` load), the revocation set (another
//! lock-free load), then the feed-failure policy (two atomics). No network
//! call happens on it, except the rate-limited refetch for an unknown `kid`
//! and, in introspection mode, the issuer's answer for an opaque token that is
//! not cached.
//!
//! Background tasks (JWKS refresh, revocation feed) hold the shared state;
//! they are aborted when the last clone of the `Verifier` is dropped.
//!
//! Must not: know a web framework (`extract` and `ws` do).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::claims::{Claims, Source, Verified};
use crate::clock::{Clock, SystemClock};
use crate::error::AuthError;
use crate::introspection::Introspector;
use crate::jose::{self, Algorithm, JwkSet, Validation, VerifyError, VerifyingKey};
use crate::jwks::KeyCache;
use crate::revocation::{Revocation, RevocationSet};

/// The scope the feed's client needs.
pub const FEED_SCOPE: &str = "latchkey:revocations";

/// What to do with tokens while the revocation feed is unreachable for
/// longer than [`VerifierBuilder::feed_max_staleness`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedFailurePolicy {
    /// Accept every otherwise valid token (availability first).
    Open,
    /// Refuse every token: 401 "revocation status unknown".
    Closed,
    /// Refuse tokens issued (`iat`) more than this long ago; accept newer
    /// ones. The default, with the bound equal to the maximum staleness.
    ClosedForTokensOlderThan(Duration),
}

/// Why a verifier could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The discovery document could not be fetched or read.
    #[error("cannot read the discovery document of {issuer}: {reason}")]
    Discovery {
        /// The configured issuer.
        issuer: String,
        /// What went wrong.
        reason: String,
    },
    /// The discovery document names another issuer (it must match exactly).
    #[error("the discovery document's issuer is {found:?}, not {expected:?}")]
    IssuerMismatch {
        /// The configured issuer.
        expected: String,
        /// The document's `issuer`.
        found: String,
    },
    /// The first JWKS fetch failed.
    #[error(transparent)]
    Jwks(#[from] crate::jwks::JwksError),
    /// The issuer does not offer something the configuration needs.
    #[error("the issuer has no {0} (is it a Latchkey server?)")]
    MissingEndpoint(&'static str),
    /// The configuration is inconsistent.
    #[error("invalid verifier configuration: {0}")]
    Invalid(String),
}

/// Configures and starts a [`Verifier`].
pub struct VerifierBuilder {
    issuer: String,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    hs256: Option<(String, Vec<u8>)>,
    leeway: Duration,
    typ: Option<String>,
    jwks_min_refetch: Duration,
    jwks: Option<JwkSet>,
    feed: Option<(String, String)>,
    policy: Option<FeedFailurePolicy>,
    max_staleness: Duration,
    feed_startup_timeout: Duration,
    feed_keepalive: Duration,
    introspection: Option<(String, String)>,
    clock: Arc<dyn Clock>,
    http: Option<reqwest::Client>,
    realm: String,
    roles_claim: String,
    mfa_roles: Vec<String>,
    cookie_origins: Vec<String>,
}

/// The roles that need a second factor unless configured otherwise: the
/// default of the server's `mfa.required_roles`.
pub const DEFAULT_MFA_REQUIRED_ROLES: &[&str] = &["admin"];

/// The defaults, in one place.
impl VerifierBuilder {
    fn new(issuer: &str) -> VerifierBuilder {
        VerifierBuilder {
            issuer: issuer.to_owned(),
            audiences: Vec::new(),
            algorithms: vec![Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256],
            hs256: None,
            leeway: Duration::from_secs(30),
            typ: Some("at+jwt".to_owned()),
            jwks_min_refetch: Duration::from_secs(30),
            jwks: None,
            feed: None,
            policy: None,
            max_staleness: Duration::from_secs(60),
            feed_startup_timeout: Duration::from_secs(5),
            feed_keepalive: Duration::from_secs(15),
            introspection: None,
            clock: Arc::new(SystemClock),
            http: None,
            realm: "api".to_owned(),
            roles_claim: "roles".to_owned(),
            mfa_roles: DEFAULT_MFA_REQUIRED_ROLES
                .iter()
                .map(|r| (*r).to_owned())
                .collect(),
            cookie_origins: Vec::new(),
        }
    }

    /// Accept tokens whose `aud` contains `audience` (repeatable: any one of
    /// them). Without an audience, `aud` is not checked — set one.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// The signature algorithms accepted (default: ES256, EdDSA, RS256). A
    /// published key of another algorithm is ignored. HS256 needs
    /// [`VerifierBuilder::hs256_key`] as well.
    pub fn algorithms(mut self, algorithms: &[Algorithm]) -> Self {
        self.algorithms = algorithms.to_vec();
        self
    }

    /// Also accept HS256 tokens signed with this shared secret (≥ 32 bytes),
    /// for single-service deployments (`tokens.signing_algorithm = "HS256"`).
    /// `kid` is the server's (`latchkey keys list`).
    pub fn hs256_key(mut self, kid: impl Into<String>, secret: &[u8]) -> Self {
        self.hs256 = Some((kid.into(), secret.to_vec()));
        if !self.algorithms.contains(&Algorithm::HS256) {
            self.algorithms.push(Algorithm::HS256);
        }
        self
    }

    /// Clock-skew tolerance for `exp` and `nbf` (default 30 s).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The header `typ` required (default `Some("at+jwt")`, RFC 9068);
    /// `None` checks nothing.
    pub fn require_typ(mut self, typ: Option<&str>) -> Self {
        self.typ = typ.map(str::to_owned);
        self
    }

    /// Unknown `kid`s cause at most one JWKS fetch per interval (default 30 s).
    pub fn jwks_min_refetch_interval(mut self, interval: Duration) -> Self {
        self.jwks_min_refetch = interval;
        self
    }

    /// Use these keys and never fetch any (no discovery, no network: tests,
    /// benchmarks, air-gapped set-ups). Incompatible with the feed and
    /// introspection, which need the issuer.
    pub fn jwks(mut self, jwks: JwkSet) -> Self {
        self.jwks = Some(jwks);
        self
    }

    /// Follow the issuer's revocation feed as this client (registered with
    /// `--grant client_credentials --scope latchkey:revocations`): revoked
    /// tokens are refused within a second, without a call per request.
    pub fn revocation_feed(
        mut self,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        self.feed = Some((client_id.into(), client_secret.into()));
        self
    }

    /// What to do when the feed has been unreachable for longer than
    /// [`VerifierBuilder::feed_max_staleness`] (default:
    /// `ClosedForTokensOlderThan(feed_max_staleness)`).
    pub fn feed_failure_policy(mut self, policy: FeedFailurePolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// How long the feed may be unreachable before the failure policy
    /// applies (default 60 s).
    pub fn feed_max_staleness(mut self, bound: Duration) -> Self {
        self.max_staleness = bound;
        self
    }

    /// How long `build` waits for the feed's first `synced` (default 5 s);
    /// after that it returns anyway and the feed keeps connecting.
    pub fn feed_startup_timeout(mut self, timeout: Duration) -> Self {
        self.feed_startup_timeout = timeout;
        self
    }

    /// The server's keepalive interval until its first `synced` says
    /// otherwise (default 15 s). A stream silent for three intervals is dead.
    pub fn feed_keepalive(mut self, interval: Duration) -> Self {
        self.feed_keepalive = interval;
        self
    }

    /// Accept opaque access tokens by asking the issuer (RFC 7662) as this
    /// confidential client; answers are cached (see `docs/verify.md`).
    pub fn introspection(
        mut self,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        self.introspection = Some((client_id.into(), client_secret.into()));
        self
    }

    /// The time source (default: the system clock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The HTTP client for discovery, JWKS, token, feed and introspection
    /// requests (default: a new `reqwest::Client`).
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// The `realm` of `WWW-Authenticate` challenges (default `api`).
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = realm.into();
        self
    }

    /// The claim carrying roles (default `roles`; match the server's
    /// `tokens.roles_claim`).
    pub fn roles_claim(mut self, name: impl Into<String>) -> Self {
        self.roles_claim = name.into();
        self
    }

    /// The roles that need a sign-in with a second factor — set this to the
    /// server's `mfa.required_roles` (default `["admin"]`, the server's
    /// default; an empty list turns the rule off). The server already leaves
    /// such a role out of the tokens of a sign-in without a second factor;
    /// the SDK applies the same rule to whatever it is handed (a token of an
    /// older server, a role the server does not list): [`RequireRole`] and
    /// [`require_role`] of one of these roles also need `amr` to contain
    /// `mfa`, and refuse otherwise with 401 `insufficient_user_authentication`
    /// ([`AuthError::MfaRequired`], an RFC 9470 step-up challenge).
    ///
    /// [`RequireRole`]: crate::RequireRole
    /// [`require_role`]: crate::require_role
    pub fn mfa_required_roles<I, S>(mut self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.mfa_roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// Allow WebSocket upgrades authenticated by the browser's Latchkey
    /// session cookie, from pages of these exact origins
    /// (`scheme://host[:port]`; the `Origin` header must be one of them —
    /// cross-site WebSocket hijacking). Off by default.
    pub fn websocket_cookie_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cookie_origins = origins.into_iter().map(Into::into).collect();
        self
    }

    /// Reads discovery and the JWKS, starts the background tasks and, with a
    /// feed, waits (bounded) for its first `synced`.
    pub async fn build(self) -> Result<Verifier, BuildError> {
        if self.algorithms.is_empty() {
            return Err(BuildError::Invalid("no algorithm is allowed".into()));
        }
        if self.algorithms.contains(&Algorithm::HS256) && self.hs256.is_none() {
            return Err(BuildError::Invalid(
                "HS256 needs the shared secret: use hs256_key".into(),
            ));
        }
        let local = match &self.hs256 {
            Some((kid, secret)) => vec![VerifyingKey::hs256(kid.clone(), secret)
                .map_err(|e| BuildError::Invalid(e.to_string()))?],
            None => Vec::new(),
        };
        let http = self.http.clone().unwrap_or_default();
        let now = self.clock.now();
        let (keys, endpoints, first_refresh) = match &self.jwks {
            Some(jwks) => {
                if self.feed.is_some() || self.introspection.is_some() {
                    return Err(BuildError::Invalid(
                        "fixed keys cannot be combined with the feed or introspection".into(),
                    ));
                }
                let keys = KeyCache::fixed(jwks, &self.algorithms, local);
                (keys, Endpoints::default(), None)
            }
            None => {
                let endpoints = discover(&http, &self.issuer).await?;
                let keys = KeyCache::remote(
                    endpoints.jwks_uri.clone(),
                    &self.algorithms,
                    local,
                    self.jwks_min_refetch,
                );
                let next = keys.refresh(&http, now).await?;
                (keys, endpoints, Some(next))
            }
        };
        let feed = match &self.feed {
            Some((id, secret)) => {
                let endpoint = endpoints
                    .revocation_feed_endpoint
                    .clone()
                    .ok_or(BuildError::MissingEndpoint("revocation_feed_endpoint"))?;
                let token_endpoint = endpoints
                    .token_endpoint
                    .clone()
                    .ok_or(BuildError::MissingEndpoint("token_endpoint"))?;
                let policy = self
                    .policy
                    .unwrap_or(FeedFailurePolicy::ClosedForTokensOlderThan(
                        self.max_staleness,
                    ));
                Some(crate::feed::FeedState::new(
                    endpoint,
                    token_endpoint,
                    id.clone(),
                    secret.clone(),
                    policy,
                    self.max_staleness,
                    self.feed_keepalive,
                    now,
                ))
            }
            None => None,
        };
        let introspection = match &self.introspection {
            Some((id, secret)) => Some(Introspector::new(
                endpoints
                    .introspection_endpoint
                    .clone()
                    .ok_or(BuildError::MissingEndpoint("introspection_endpoint"))?,
                id.clone(),
                secret.clone(),
            )),
            None => None,
        };
        let validation = Validation {
            issuer: self.issuer.clone(),
            audiences: self.audiences.clone(),
            typ: self.typ.clone(),
            leeway_secs: self.leeway.as_secs() as i64,
        };
        let inner = Arc::new(Inner {
            issuer: self.issuer,
            realm: self.realm,
            roles_claim: self.roles_claim,
            mfa_roles: self.mfa_roles,
            validation,
            clock: self.clock,
            http,
            keys,
            revoked: ArcSwap::from_pointee(RevocationSet::default()),
            updates: watch::channel(0).0,
            feed,
            introspection,
            cookie_origins: self.cookie_origins,
        });
        let mut tasks = Vec::new();
        if let Some(first) = first_refresh {
            let task = tokio::spawn(crate::feed::refresh_keys(inner.clone(), first));
            tasks.push(task.abort_handle());
        }
        if let Some(feed) = &inner.feed {
            let mut synced = feed.synced_watch();
            tasks.push(tokio::spawn(crate::feed::follow(inner.clone())).abort_handle());
            let waited =
                tokio::time::timeout(self.feed_startup_timeout, synced.wait_for(|s| *s)).await;
            if !matches!(waited, Ok(Ok(_))) {
                tracing::warn!(
                    "the revocation feed has not synced after {:?}; starting without it (it keeps connecting)",
                    self.feed_startup_timeout
                );
            }
        }
        Ok(Verifier {
            shared: Arc::new(Shared {
                inner,
                _tasks: Tasks(tasks),
            }),
        })
    }
}

#[derive(Debug, Default, Deserialize)]
struct Endpoints {
    #[serde(default)]
    issuer: String,
    #[serde(default)]
    jwks_uri: String,
    #[serde(default)]
    token_endpoint: Option<String>,
    #[serde(default)]
    introspection_endpoint: Option<String>,
    #[serde(default)]
    revocation_feed_endpoint: Option<String>,
}

async fn discover(http: &reqwest::Client, issuer: &str) -> Result<Endpoints, BuildError> {
    let failed = |reason: String| BuildError::Discovery {
        issuer: issuer.to_owned(),
        reason,
    };
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let response = http
        .get(&url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    if !response.status().is_success() {
        return Err(failed(format!("{url} answered {}", response.status())));
    }
    let endpoints: Endpoints = crate::body::read_json(response, crate::body::MAX_DOCUMENT_BYTES)
        .await
        .map_err(failed)?;
    if endpoints.issuer != issuer {
        return Err(BuildError::IssuerMismatch {
            expected: issuer.to_owned(),
            found: endpoints.issuer,
        });
    }
    if endpoints.jwks_uri.is_empty() {
        return Err(BuildError::MissingEndpoint("jwks_uri"));
    }
    Ok(endpoints)
}

pub(crate) struct Inner {
    pub issuer: String,
    pub realm: String,
    pub roles_claim: String,
    /// Roles that need a second factor ([`VerifierBuilder::mfa_required_roles`]).
    pub mfa_roles: Vec<String>,
    pub validation: Validation,
    pub clock: Arc<dyn Clock>,
    pub http: reqwest::Client,
    pub keys: KeyCache,
    pub revoked: ArcSwap<RevocationSet>,
    /// Bumped whenever the revocation set changes (WebSocket watchers).
    pub updates: watch::Sender<u64>,
    pub feed: Option<crate::feed::FeedState>,
    pub introspection: Option<Introspector>,
    /// Read by `ws` (feature `ws`) only.
    #[cfg_attr(not(feature = "ws"), allow(dead_code))]
    pub cookie_origins: Vec<String>,
}

impl Inner {
    /// Adds revocations (copy on write) and tells the watchers.
    pub fn apply(&self, revocations: Vec<Revocation>) {
        if revocations.is_empty() {
            return;
        }
        let horizon = self.prune_horizon();
        self.revoked.rcu(|current| {
            let mut next = RevocationSet::clone(current);
            for r in revocations.iter().cloned() {
                next.apply(r);
            }
            next.prune(horizon);
            next
        });
        self.updates.send_modify(|n| *n += 1);
    }

    /// Entries are forgotten only once this verifier's own leeway has
    /// passed too: a token `leeway` seconds past its `exp` is still accepted
    /// here, so its revocation must still be known.
    fn prune_horizon(&self) -> i64 {
        self.clock.now() - self.validation.leeway_secs
    }

    pub fn prune(&self) {
        let horizon = self.prune_horizon();
        if self.revoked.load().is_empty() {
            return;
        }
        self.revoked.rcu(|current| {
            let mut next = RevocationSet::clone(current);
            next.prune(horizon);
            next
        });
    }

    /// Revocation and feed policy for verified claims.
    fn admit(&self, claims: &Claims, now: i64) -> Result<(), AuthError> {
        let revoked = self.revoked.load();
        if revoked.is_revoked(
            claims.jti.as_deref(),
            claims.sid.as_deref(),
            &claims.sub,
            claims.client_id.as_deref(),
            claims.iat,
        ) {
            return Err(AuthError::Revoked);
        }
        if let Some(feed) = &self.feed {
            if !feed.admits(claims.iat, now) {
                return Err(AuthError::RevocationStatusUnknown);
            }
        }
        Ok(())
    }
}

/// Aborts the background tasks when the last `Verifier` clone goes.
struct Tasks(Vec<tokio::task::AbortHandle>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Verifies Latchkey access tokens. Cheap to clone (shared state inside).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use latchkey_verify::Verifier;
///
/// let verifier = Verifier::discover("http://localhost:8080")
///     .audience("orders-api")
///     .revocation_feed("feed-client-id", "feed-client-secret")
///     .build()
///     .await?;
/// let verified = verifier.verify("eyJhbGciOiJFUzI1NiIs...").await?;
/// println!("hello {}", verified.claims.sub);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Verifier {
    shared: Arc<Shared>,
}

/// What clones share: one reference count to bump per clone.
struct Shared {
    inner: Arc<Inner>,
    _tasks: Tasks,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.inner().issuer)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub(crate) fn inner(&self) -> &Inner {
        &self.shared.inner
    }

    /// Starts configuring a verifier for `issuer` (exactly as the server's
    /// discovery document spells it, e.g. `http://localhost:8080`).
    pub fn builder(issuer: &str) -> VerifierBuilder {
        VerifierBuilder::new(issuer)
    }

    /// The same as [`Verifier::builder`]: `build` reads the issuer's
    /// discovery document.
    pub fn discover(issuer: &str) -> VerifierBuilder {
        VerifierBuilder::new(issuer)
    }

    /// The configured issuer.
    pub fn issuer(&self) -> &str {
        &self.inner().issuer
    }

    /// The `realm` of this verifier's challenges.
    pub fn realm(&self) -> &str {
        &self.inner().realm
    }

    /// Does `role` need a sign-in with a second factor
    /// ([`VerifierBuilder::mfa_required_roles`])?
    pub fn role_needs_mfa(&self, role: &str) -> bool {
        self.inner().mfa_roles.iter().any(|r| r == role)
    }

    /// May a request with these claims act in `role`? The token must carry
    /// the role (else [`AuthError::InsufficientRole`], 403) and, when the
    /// role needs a second factor, come from a sign-in that had one (else
    /// [`AuthError::MfaRequired`], 401 step-up). What [`RequireRole`] and
    /// [`require_role`] ask.
    ///
    /// [`RequireRole`]: crate::RequireRole
    /// [`require_role`]: crate::require_role
    pub fn check_role(&self, claims: &Claims, role: &str) -> Result<(), AuthError> {
        if !claims.has_role(role) {
            return Err(AuthError::InsufficientRole(role.to_owned()));
        }
        if self.role_needs_mfa(role) && !claims.is_multi_factor() {
            return Err(AuthError::MfaRequired);
        }
        Ok(())
    }

    /// Verifies a token: a JWT against the cached keys (one refetch for an
    /// unknown `kid`, rate-limited), or — in introspection mode — an opaque
    /// token through the cached introspection. Then the revocation set and
    /// the feed-failure policy.
    pub async fn verify(&self, token: &str) -> Result<Verified, AuthError> {
        if token.bytes().filter(|b| *b == b'.').count() != 2 {
            return match &self.inner().introspection {
                Some(_) => self.verify_opaque(token).await,
                None => Err(AuthError::InvalidToken(VerifyError::Malformed)),
            };
        }
        match self.verify_jwt(token) {
            Err(AuthError::InvalidToken(VerifyError::UnknownKid)) => {
                let now = self.inner().clock.now();
                if self
                    .inner()
                    .keys
                    .refetch_for_unknown_kid(&self.inner().http, now)
                    .await
                {
                    self.verify_jwt(token)
                } else {
                    Err(AuthError::InvalidToken(VerifyError::UnknownKid))
                }
            }
            other => other,
        }
    }

    /// Verifies a JWT with the keys at hand, never touching the network
    /// (an unknown `kid` is refused).
    pub fn verify_jwt(&self, token: &str) -> Result<Verified, AuthError> {
        let inner = self.inner();
        let now = inner.clock.now();
        let keys = inner.keys.current();
        let verified = match jose::verify::<Claims>(token, &keys.set, &inner.validation, now) {
            Ok(v) => v,
            Err(VerifyError::UnknownKid) if has_disallowed_kid(token, &keys.disallowed) => {
                return Err(AuthError::InvalidToken(VerifyError::AlgorithmMismatch))
            }
            Err(e) => return Err(AuthError::InvalidToken(e)),
        };
        let mut claims = verified.claims;
        let source = Source::Jwt(Arc::from(token));
        if inner.roles_claim != "roles" {
            claims.roles = roles_from(&source, &inner.roles_claim);
        }
        inner.admit(&claims, now)?;
        Ok(Verified {
            claims,
            kid: Some(verified.kid),
            alg: Some(verified.alg),
            source,
        })
    }

    async fn verify_opaque(&self, token: &str) -> Result<Verified, AuthError> {
        let inner = self.inner();
        let Some(introspection) = &inner.introspection else {
            return Err(AuthError::InvalidToken(VerifyError::Malformed));
        };
        if token.is_empty() || token.len() > jose::MAX_TOKEN_BYTES {
            return Err(AuthError::InvalidToken(VerifyError::Malformed));
        }
        let now = inner.clock.now();
        let active = introspection.introspect(&inner.http, token, now).await?;
        let mut claims = active.claims;
        if !claims.iss.is_empty() && claims.iss != inner.issuer {
            return Err(AuthError::InvalidToken(VerifyError::WrongIssuer));
        }
        let audiences = &inner.validation.audiences;
        if !audiences.is_empty()
            && !claims
                .aud
                .as_ref()
                .is_some_and(|aud| audiences.iter().any(|a| aud.contains(a)))
        {
            return Err(AuthError::InvalidToken(VerifyError::WrongAudience));
        }
        let source = Source::Introspection(active.answer);
        if inner.roles_claim != "roles" {
            claims.roles = roles_from(&source, &inner.roles_claim);
        }
        inner.admit(&claims, now)?;
        Ok(Verified {
            claims,
            kid: None,
            alg: None,
            source,
        })
    }

    /// Is a token with these claims still acceptable now (not expired, not
    /// revoked, feed policy)? For long-lived connections (WebSockets).
    pub fn check_still_valid(&self, claims: &Claims) -> Result<(), AuthError> {
        let now = self.inner().clock.now();
        if now
            >= claims
                .exp
                .saturating_add(self.inner().validation.leeway_secs)
        {
            return Err(AuthError::InvalidToken(VerifyError::Expired));
        }
        self.inner().admit(claims, now)
    }

    /// Applies revocations locally (e.g. from your own event source); the
    /// feed does this for the events it receives.
    pub fn revoke(&self, revocations: impl IntoIterator<Item = Revocation>) {
        self.inner().apply(revocations.into_iter().collect());
    }

    /// A receiver that changes whenever the revocation set does.
    pub fn revocation_updates(&self) -> watch::Receiver<u64> {
        self.inner().updates.subscribe()
    }

    /// Seconds since the Unix epoch, by the verifier's clock.
    pub fn now(&self) -> i64 {
        self.inner().clock.now()
    }

    /// The leeway applied to `exp` and `nbf`, in seconds.
    pub fn leeway_secs(&self) -> i64 {
        self.inner().validation.leeway_secs
    }

    /// The verifier's state, for an API's own health endpoint.
    pub fn health(&self) -> Health {
        let inner = self.inner();
        let now = inner.clock.now();
        let status = inner.keys.status();
        let keys = inner.keys.current();
        let jwks = JwksHealth {
            kids: keys.set.keys().iter().map(|k| k.kid().to_owned()).collect(),
            last_refreshed: status.last_refreshed,
            age_secs: status.last_refreshed.map(|at| now - at),
            last_error: status.last_error,
            requests: inner.keys.requests(),
        };
        let revoked_entries = inner.revoked.load().len();
        let feed = inner.feed.as_ref().map(|f| f.health(now, revoked_entries));
        let ok = !jwks.kids.is_empty() && feed.as_ref().is_none_or(|f| !f.stale);
        Health {
            ok,
            issuer: inner.issuer.clone(),
            jwks,
            feed,
            revoked_entries,
            introspection_cache_entries: inner.introspection.as_ref().map(|i| i.cached()),
        }
    }
}

fn roles_from(source: &Source, claim: &str) -> Vec<String> {
    let value = match source {
        Source::Jwt(token) => token
            .split('.')
            .nth(1)
            .and_then(jose::b64_decode)
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p).ok()),
        Source::Introspection(answer) => Some(answer.as_ref().clone()),
    };
    value
        .and_then(|v| v.get(claim).cloned())
        .and_then(|r| serde_json::from_value::<Vec<String>>(r).ok())
        .unwrap_or_default()
}

/// Does the token's header name a `kid` the issuer publishes with an
/// algorithm we do not allow? (Then it is refused without a refetch.)
fn has_disallowed_kid(token: &str, disallowed: &std::collections::HashSet<String>) -> bool {
    if disallowed.is_empty() {
        return false;
    }
    jose::decode_unverified(token)
        .ok()
        .and_then(|(header, _)| header["kid"].as_str().map(|k| disallowed.contains(k)))
        .unwrap_or(false)
}

/// The verifier's state, serialisable for a health endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// Keys are loaded and the feed (if any) is not stale.
    pub ok: bool,
    /// The issuer.
    pub issuer: String,
    /// The key cache.
    pub jwks: JwksHealth,
    /// The revocation feed, when configured.
    pub feed: Option<FeedHealth>,
    /// Revocations in force.
    pub revoked_entries: usize,
    /// Cached introspection answers, in introspection mode.
    pub introspection_cache_entries: Option<usize>,
}

/// The key cache's state.
#[derive(Debug, Clone, Serialize)]
pub struct JwksHealth {
    /// The `kid`s in use.
    pub kids: Vec<String>,
    /// When the JWKS was last fetched successfully (Unix seconds).
    pub last_refreshed: Option<i64>,
    /// Seconds since then.
    pub age_secs: Option<i64>,
    /// The last fetch error, cleared by a success.
    pub last_error: Option<String>,
    /// Requests made to the JWKS endpoint so far.
    pub requests: u64,
}

/// The revocation feed's state.
#[derive(Debug, Clone, Serialize)]
pub struct FeedHealth {
    /// A stream is open now.
    pub connected: bool,
    /// The stream has delivered the backlog (`synced`) at least once.
    pub synced: bool,
    /// The last event applied (`Last-Event-ID` of the next reconnect).
    pub last_event_id: Option<u64>,
    /// Last bytes received (Unix seconds).
    pub last_contact: i64,
    /// Disconnected for longer than the maximum staleness: the failure policy applies.
    pub stale: bool,
    /// The failure policy, as text.
    pub policy: String,
    /// The last connection error.
    pub last_error: Option<String>,
}
