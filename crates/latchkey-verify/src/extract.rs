//! axum integration (feature `axum`, on by default): one layer and four
//! extractors.
//!
//! - [`Verifier::layer`] puts the verifier into every request's extensions
//!   (install it on the router); [`VerifierLayer::required`] also refuses
//!   requests without a valid token. [`require_scope`], [`require_role`]
//!   and [`require_mfa`] are route layers (the first two for names known
//!   only at run time).
//! - [`Authenticated<C>`] gives the verified claims ([`Claims`] by default,
//!   or any `Deserialize` type); `Option<Authenticated>` is `None` without a
//!   token (a bad token is still refused).
//! - [`RequireScope<S>`] and [`RequireRole<R>`] also check a scope or role
//!   named by a marker type ([`scope!`](crate::scope) / [`role!`](crate::role)),
//!   answering 403 `insufficient_scope` when it is missing. A role listed in
//!   [`VerifierBuilder::mfa_required_roles`](crate::VerifierBuilder::mfa_required_roles)
//!   (default `admin`) also needs a sign-in with a second factor
//!   ([`Verifier::check_role`]).
//! - [`RequireMfa`] needs a token whose sign-in had a second factor (`amr`
//!   contains `mfa`); without one it answers 401
//!   `insufficient_user_authentication` with `acr_values` (RFC 9470), so the
//!   client can sign the user in again with that `acr_values`.
//!
//! The token is verified once per request: the outcome (claims or error) is
//! cached in the request's extensions for the next extractor. Rejections are
//! RFC 6750 responses (see `error`).
//!
//! Must not: hold verification rules (they live in `Verifier`).

use std::any::Any;
use std::future::Future;
use std::marker::PhantomData;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::bearer::bearer_token;
use crate::claims::{Claims, Verified};
use crate::error::AuthError;
use crate::verifier::Verifier;

/// The realm used when no verifier is at hand (layer missing).
const DEFAULT_REALM: &str = "api";

/// An [`AuthError`] with the realm of its challenge: the rejection of every
/// extractor and layer of this crate.
#[derive(Debug, Clone)]
pub struct AuthRejection {
    /// What went wrong.
    pub error: AuthError,
    realm: String,
}

impl AuthRejection {
    pub(crate) fn new(error: AuthError, parts: &Parts) -> AuthRejection {
        let realm = parts
            .extensions
            .get::<Verifier>()
            .map(|v| v.realm().to_owned())
            .unwrap_or_else(|| DEFAULT_REALM.to_owned());
        AuthRejection { error, realm }
    }
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        if self.error == AuthError::VerifierMissing {
            tracing::error!(
                "latchkey-verify: an extractor ran on a route without `verifier.layer()`"
            );
        }
        let challenge = self.error.challenge(&self.realm);
        let status =
            StatusCode::from_u16(challenge.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, challenge.body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(v) = challenge
            .www_authenticate
            .and_then(|c| HeaderValue::from_str(&c).ok())
        {
            headers.insert(header::WWW_AUTHENTICATE, v);
        }
        if let Some(secs) = challenge.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl IntoResponse for AuthError {
    /// The response with the default realm (`api`); extractors use the verifier's.
    fn into_response(self) -> Response {
        AuthRejection {
            error: self,
            realm: DEFAULT_REALM.to_owned(),
        }
        .into_response()
    }
}

/// The outcome of this request's verification, cached in its extensions.
#[derive(Clone)]
struct Outcome(Result<Arc<Verified>, AuthError>);

/// Verifies the request's bearer token once (cached for other extractors).
async fn verified(parts: &mut Parts) -> Result<Arc<Verified>, AuthError> {
    if let Some(Outcome(outcome)) = parts.extensions.get::<Outcome>() {
        return outcome.clone();
    }
    let outcome = {
        let verifier = parts.extensions.get::<Verifier>();
        match (verifier, bearer_token(&parts.headers)) {
            (None, _) => Err(AuthError::VerifierMissing),
            (Some(_), Err(e)) => Err(AuthError::InvalidRequest(e)),
            (Some(_), Ok(None)) => Err(AuthError::MissingToken),
            (Some(verifier), Ok(Some(token))) => verifier.verify(token).await.map(Arc::new),
        }
    };
    parts.extensions.insert(Outcome(outcome.clone()));
    outcome
}

/// The claims as `C`: a clone for [`Claims`], else read from the token.
fn typed<C: DeserializeOwned + 'static>(verified: &Verified) -> Result<C, AuthError> {
    let claims: Box<dyn Any> = Box::new(verified.claims.clone());
    match claims.downcast::<C>() {
        Ok(claims) => Ok(*claims),
        Err(_) => verified.claims_as::<C>(),
    }
}

/// The verified claims of the request's bearer token (401 without a valid
/// one). `C` is [`Claims`] by default, or any `Deserialize` type of yours.
#[derive(Debug, Clone)]
pub struct Authenticated<C = Claims>(pub C);

impl<C> Deref for Authenticated<C> {
    type Target = C;
    fn deref(&self) -> &C {
        &self.0
    }
}

impl<S, C> FromRequestParts<S> for Authenticated<C>
where
    S: Send + Sync,
    C: DeserializeOwned + Send + 'static,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let verified = verified(parts)
            .await
            .map_err(|e| AuthRejection::new(e, parts))?;
        typed::<C>(&verified)
            .map(Authenticated)
            .map_err(|e| AuthRejection::new(e, parts))
    }
}

impl<S, C> OptionalFromRequestParts<S> for Authenticated<C>
where
    S: Send + Sync,
    C: DeserializeOwned + Send + 'static,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        match <Authenticated<C> as FromRequestParts<S>>::from_request_parts(parts, state).await {
            Ok(a) => Ok(Some(a)),
            Err(AuthRejection {
                error: AuthError::MissingToken,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A scope name as a type, for [`RequireScope`]. Declare one with
/// [`scope!`](crate::scope).
pub trait ScopeName {
    /// The scope token, e.g. `read:data`.
    const NAME: &'static str;
}

/// A role name as a type, for [`RequireRole`]. Declare one with
/// [`role!`](crate::role).
pub trait RoleName {
    /// The role, e.g. `admin`.
    const NAME: &'static str;
}

/// Declares a [`ScopeName`] marker type: `scope!(pub ReadData = "read:data");`
#[macro_export]
macro_rules! scope {
    ($(#[$meta:meta])* $vis:vis $name:ident = $value:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy)]
        $vis struct $name;
        impl $crate::ScopeName for $name {
            const NAME: &'static str = $value;
        }
    };
}

/// Declares a [`RoleName`] marker type: `role!(pub Admin = "admin");`
#[macro_export]
macro_rules! role {
    ($(#[$meta:meta])* $vis:vis $name:ident = $value:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy)]
        $vis struct $name;
        impl $crate::RoleName for $name {
            const NAME: &'static str = $value;
        }
    };
}

/// The claims of a valid token that carries scope `S::NAME` (403
/// `insufficient_scope` otherwise).
#[derive(Debug, Clone)]
pub struct RequireScope<S> {
    /// The verified claims.
    pub claims: Claims,
    _scope: PhantomData<S>,
}

impl<S> Deref for RequireScope<S> {
    type Target = Claims;
    fn deref(&self) -> &Claims {
        &self.claims
    }
}

impl<St, S> FromRequestParts<St> for RequireScope<S>
where
    St: Send + Sync,
    S: ScopeName + Send,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &St) -> Result<Self, Self::Rejection> {
        let verified = verified(parts)
            .await
            .map_err(|e| AuthRejection::new(e, parts))?;
        if !verified.claims.has_scope(S::NAME) {
            let error = AuthError::InsufficientScope(S::NAME.to_owned());
            return Err(AuthRejection::new(error, parts));
        }
        Ok(RequireScope {
            claims: verified.claims.clone(),
            _scope: PhantomData,
        })
    }
}

/// The claims of a valid token that carries role `R::NAME` (403 otherwise)
/// — and, when the role needs a second factor
/// ([`VerifierBuilder::mfa_required_roles`](crate::VerifierBuilder::mfa_required_roles),
/// default `admin`), comes from a sign-in that had one (401 step-up
/// otherwise): [`Verifier::check_role`].
#[derive(Debug, Clone)]
pub struct RequireRole<R> {
    /// The verified claims.
    pub claims: Claims,
    _role: PhantomData<R>,
}

impl<R> Deref for RequireRole<R> {
    type Target = Claims;
    fn deref(&self) -> &Claims {
        &self.claims
    }
}

impl<St, R> FromRequestParts<St> for RequireRole<R>
where
    St: Send + Sync,
    R: RoleName + Send,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &St) -> Result<Self, Self::Rejection> {
        let verified = verified(parts)
            .await
            .map_err(|e| AuthRejection::new(e, parts))?;
        check_role(parts, &verified.claims, R::NAME).map_err(|e| AuthRejection::new(e, parts))?;
        Ok(RequireRole {
            claims: verified.claims.clone(),
            _role: PhantomData,
        })
    }
}

/// [`Verifier::check_role`] with the request's verifier.
fn check_role(parts: &Parts, claims: &Claims, role: &str) -> Result<(), AuthError> {
    match parts.extensions.get::<Verifier>() {
        Some(verifier) => verifier.check_role(claims, role),
        None => Err(AuthError::VerifierMissing),
    }
}

/// The claims of a valid token whose sign-in had a second factor (`amr`
/// contains `mfa`, [`Claims::is_multi_factor`]); otherwise 401
/// `insufficient_user_authentication` with
/// `acr_values="urn:latchkey:acr:mfa"` (RFC 9470 step-up: the client sends
/// the user through `/oauth2/authorize` again with that `acr_values`). The
/// claims also hold the sign-in's `acr` and `auth_time`.
///
/// ```no_run
/// use latchkey_verify::RequireMfa;
///
/// async fn transfer(token: RequireMfa) -> String {
///     format!("{} signed in with {:?} at {:?}", token.sub, token.amr, token.auth_time)
/// }
/// ```
#[derive(Debug, Clone)]
pub struct RequireMfa {
    /// The verified claims.
    pub claims: Claims,
}

impl Deref for RequireMfa {
    type Target = Claims;
    fn deref(&self) -> &Claims {
        &self.claims
    }
}

impl<St> FromRequestParts<St> for RequireMfa
where
    St: Send + Sync,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &St) -> Result<Self, Self::Rejection> {
        let verified = verified(parts)
            .await
            .map_err(|e| AuthRejection::new(e, parts))?;
        if !verified.claims.is_multi_factor() {
            return Err(AuthRejection::new(AuthError::MfaRequired, parts));
        }
        Ok(RequireMfa {
            claims: verified.claims.clone(),
        })
    }
}

#[derive(Debug, Clone)]
enum Requirement {
    Nothing,
    Authenticated,
    Scope(Arc<str>),
    Role(Arc<str>),
    Mfa,
}

/// A tower layer: puts a [`Verifier`] into request extensions (from
/// [`Verifier::layer`]) and/or requires a valid token, a scope or a role.
#[derive(Debug, Clone)]
pub struct VerifierLayer {
    verifier: Option<Verifier>,
    requirement: Requirement,
}

impl Verifier {
    /// The layer that makes this verifier available to the extractors.
    /// Install it on the router: `Router::new()...layer(verifier.layer())`.
    pub fn layer(&self) -> VerifierLayer {
        VerifierLayer {
            verifier: Some(self.clone()),
            requirement: Requirement::Nothing,
        }
    }
}

impl VerifierLayer {
    /// Also refuse every request without a valid token (401), before the handler.
    pub fn required(mut self) -> VerifierLayer {
        self.requirement = Requirement::Authenticated;
        self
    }
}

/// A route layer refusing requests whose token lacks `scope` (403), or
/// has none (401). Needs [`Verifier::layer`] outside it.
pub fn require_scope(scope: impl Into<String>) -> VerifierLayer {
    VerifierLayer {
        verifier: None,
        requirement: Requirement::Scope(scope.into().into()),
    }
}

/// A route layer refusing requests whose token lacks `role` (403), or has
/// none (401) — or, for a role that needs a second factor, whose sign-in
/// had none (401 step-up; [`Verifier::check_role`]). Needs
/// [`Verifier::layer`] outside it.
pub fn require_role(role: impl Into<String>) -> VerifierLayer {
    VerifierLayer {
        verifier: None,
        requirement: Requirement::Role(role.into().into()),
    }
}

/// A route layer refusing requests whose token's sign-in had no second
/// factor (401 `insufficient_user_authentication`, as [`RequireMfa`]), or
/// that have no token (401). Needs [`Verifier::layer`] outside it.
pub fn require_mfa() -> VerifierLayer {
    VerifierLayer {
        verifier: None,
        requirement: Requirement::Mfa,
    }
}

impl<S> tower_layer::Layer<S> for VerifierLayer {
    type Service = VerifierService<S>;
    fn layer(&self, inner: S) -> VerifierService<S> {
        VerifierService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`VerifierLayer`].
#[derive(Debug, Clone)]
pub struct VerifierService<S> {
    inner: S,
    layer: VerifierLayer,
}

async fn check(parts: &mut Parts, requirement: &Requirement) -> Result<(), AuthRejection> {
    let verified = verified(parts)
        .await
        .map_err(|e| AuthRejection::new(e, parts))?;
    let outcome = match requirement {
        Requirement::Scope(scope) if !verified.claims.has_scope(scope) => {
            Err(AuthError::InsufficientScope(scope.to_string()))
        }
        Requirement::Role(role) => check_role(parts, &verified.claims, role),
        Requirement::Mfa if !verified.claims.is_multi_factor() => Err(AuthError::MfaRequired),
        _ => Ok(()),
    };
    outcome.map_err(|error| AuthRejection::new(error, parts))
}

impl<S, B> tower_service::Service<Request<B>> for VerifierService<S>
where
    S: tower_service::Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if let Some(verifier) = &self.layer.verifier {
            request.extensions_mut().insert(verifier.clone());
        }
        // The service that was polled ready handles this request.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let requirement = self.layer.requirement.clone();
        Box::pin(async move {
            if matches!(requirement, Requirement::Nothing) {
                return inner.call(request).await;
            }
            let (mut parts, body) = request.into_parts();
            if let Err(rejection) = check(&mut parts, &requirement).await {
                return Ok(rejection.into_response());
            }
            inner.call(Request::from_parts(parts, body)).await
        })
    }
}
