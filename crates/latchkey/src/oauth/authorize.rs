//! The authorization endpoint's rules (RFC 6749 §4.1, OAuth 2.1, OIDC Core §3.1.2).
//!
//! Two phases of validation, in this order:
//! 1. `client_id` and `redirect_uri`. If either is wrong the user sees an
//!    error **page** — never a redirect (RFC 9700 §4.1: an open redirector
//!    otherwise).
//! 2. everything else; errors then go back to the client's redirect URI with
//!    `error`, `state` and `iss` (RFC 9207).
//!
//! A request waiting for sign-in or consent is stored as an explicit,
//! expiring [`PendingRequest`] (10 minutes); the browser only carries its id.
//! Codes are 256-bit, stored as SHA-256, single-use, 60 s, bound to client,
//! redirect URI, PKCE challenge, nonce and session.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::Row as _;

use super::clients::{self, Client};
use super::pkce::{self, CodeChallenge, PkcePolicy};
use super::redirect_uri;
use crate::clock::{seconds_of, UnixMillis, UnixTime};
use crate::crypto::{SecretToken, TokenHash};
use crate::policy::{self, Arrival, SignInFacts, Verdict};
use crate::revocation::{self, Cause, Revoked};
use crate::scope::Scope;
use crate::store::{Pool, StoreError, Tx};

/// Lifetime of an authorization code (RFC 9700: as short as possible; ≤ 60 s).
pub const CODE_LIFETIME_SECS: i64 = 60;
/// Lifetime of a request waiting for sign-in or consent.
pub const PENDING_LIFETIME_SECS: i64 = 600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseMode {
    Query,
    FormPost,
}

impl ResponseMode {
    /// Every mode the endpoint answers in (and the discovery document lists).
    pub const ALL: [ResponseMode; 2] = [ResponseMode::Query, ResponseMode::FormPost];

    pub fn as_str(self) -> &'static str {
        match self {
            ResponseMode::Query => "query",
            ResponseMode::FormPost => "form_post",
        }
    }

    fn parse(text: &str) -> Option<ResponseMode> {
        ResponseMode::ALL.into_iter().find(|m| m.as_str() == text)
    }
}

/// The response types the endpoint serves: the code flow only (no implicit
/// or hybrid flow exists).
pub const RESPONSE_TYPES: &[&str] = &["code"];

/// The `prompt` values understood (OIDC Core §3.1.2.1).
pub const PROMPT_VALUES: &[&str] = &["none", "login", "consent", "select_account"];

/// A validated authorization request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    /// `None` only where the client's PKCE opt-out applied (`oauth::pkce`).
    pub code_challenge: Option<String>,
    pub response_mode: ResponseMode,
    pub prompt: Vec<String>,
    pub max_age: Option<i64>,
    pub login_hint: Option<String>,
    pub acr_values: Option<String>,
    /// The user a verified `id_token_hint` names: only they may get a code.
    #[serde(default)]
    pub id_token_hint_subject: Option<String>,
}

impl AuthorizationRequest {
    pub fn scope(&self) -> Scope {
        Scope::from_stored(&self.scope)
    }
    pub fn prompts(&self, p: &str) -> bool {
        self.prompt.iter().any(|x| x == p)
    }
}

/// Where an error goes.
#[derive(Debug, Clone)]
pub enum AuthorizeError {
    /// Client or redirect URI cannot be trusted: show a page, never redirect.
    Page(String),
    /// Tell the client, at its (verified) redirect URI.
    Redirect(ErrorRedirect),
    Store(String),
}

#[derive(Debug, Clone)]
pub struct ErrorRedirect {
    pub redirect_uri: String,
    pub response_mode: ResponseMode,
    pub state: Option<String>,
    pub error: &'static str,
    pub description: String,
}

impl From<StoreError> for AuthorizeError {
    fn from(e: StoreError) -> Self {
        AuthorizeError::Store(e.to_string())
    }
}

impl From<sqlx::Error> for AuthorizeError {
    fn from(e: sqlx::Error) -> Self {
        AuthorizeError::Store(StoreError::from(e).to_string())
    }
}

/// Parameters of a GET query or POST form, each at most once.
pub fn collect_params(raw: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(raw) {
        if map.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("parameter {k} appears more than once"));
        }
    }
    Ok(map)
}

/// Verifies an `id_token_hint` (`oidc::verify_id_token_hint` with the
/// server's keys): what it says, or `None` if it is not our ID token.
pub type HintVerifier<'a> = &'a (dyn Fn(&str) -> Option<crate::oidc::IdTokenHint> + Sync);

/// Validates a request in the two phases described in the module docs.
pub async fn validate(
    pool: &Pool,
    verify_hint: HintVerifier<'_>,
    params: &BTreeMap<String, String>,
    duplicate: Option<String>,
) -> Result<(Client, AuthorizationRequest), AuthorizeError> {
    let get = |k: &str| params.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let client_id = get("client_id")
        .ok_or_else(|| AuthorizeError::Page("The request has no client_id.".into()))?;
    let client = clients::find(pool, client_id)
        .await?
        .ok_or_else(|| AuthorizeError::Page("This application is not registered here.".into()))?;
    let redirect_uri = match get("redirect_uri") {
        Some(uri)
            if redirect_uri::matches(
                &client.redirect_uris,
                uri,
                redirect_uri::LoopbackPorts::for_client(client.confidential),
            ) =>
        {
            uri.to_owned()
        }
        Some(_) => {
            return Err(AuthorizeError::Page(
                "The redirect URI is not registered for this application.".into(),
            ))
        }
        None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
        None => {
            return Err(AuthorizeError::Page(
                "The request has no redirect_uri.".into(),
            ))
        }
    };
    // An unknown mode is answered in the default mode (then refused below).
    let response_mode = get("response_mode")
        .and_then(ResponseMode::parse)
        .unwrap_or(ResponseMode::Query);
    let state = get("state").map(str::to_owned);
    let fail = |error: &'static str, description: String| {
        AuthorizeError::Redirect(ErrorRedirect {
            redirect_uri: redirect_uri.clone(),
            response_mode,
            state: state.clone(),
            error,
            description,
        })
    };
    if let Some(dup) = duplicate {
        return Err(fail("invalid_request", dup));
    }
    if let Some(mode) = get("response_mode") {
        if ResponseMode::parse(mode).is_none() {
            return Err(fail(
                "invalid_request",
                format!("response_mode {mode:?} is not supported; use query or form_post"),
            ));
        }
    }
    match get("response_type") {
        Some(rt) if RESPONSE_TYPES.contains(&rt) => {}
        None => return Err(fail("invalid_request", "response_type is required".into())),
        Some(other) => return Err(fail("unsupported_response_type", format!("response_type {other:?} is not supported; only code (implicit and hybrid flows do not exist)"))),
    }
    if get("request").is_some() {
        return Err(fail(
            "request_not_supported",
            "request objects are not supported".into(),
        ));
    }
    if get("request_uri").is_some() {
        return Err(fail(
            "request_uri_not_supported",
            "request_uri is not supported".into(),
        ));
    }
    if !client.allows_grant("authorization_code") {
        return Err(fail(
            "unauthorized_client",
            "this client may not use the authorization code flow".into(),
        ));
    }
    let requested = Scope::parse(get("scope").unwrap_or_default())
        .map_err(|e| fail("invalid_scope", e.to_string()))?;
    let scope = granted_scope(&requested, &client.scopes).ok_or_else(|| {
        fail(
            "invalid_scope",
            "the requested scope exceeds what this client is allowed".into(),
        )
    })?;
    let challenge = pkce::challenge_for_request(
        PkcePolicy::of(client.confidential, client.require_pkce),
        get("code_challenge"),
        get("code_challenge_method"),
        scope.contains("openid") && get("nonce").is_some(),
    )
    .map_err(|e| fail("invalid_request", e.to_string()))?;
    let prompt: Vec<String> = get("prompt")
        .unwrap_or_default()
        .split(' ')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(bad) = prompt.iter().find(|p| !PROMPT_VALUES.contains(&p.as_str())) {
        return Err(fail(
            "invalid_request",
            format!("prompt value {bad:?} is not supported"),
        ));
    }
    if prompt.iter().any(|p| p == "none") && prompt.len() > 1 {
        return Err(fail(
            "invalid_request",
            "prompt=none cannot be combined with other values".into(),
        ));
    }
    let max_age = match get("max_age") {
        None => None,
        Some(v) => Some(v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            fail(
                "invalid_request",
                "max_age must be a non-negative integer".into(),
            )
        })?),
    };
    let bounded = |name: &str, max: usize| -> Result<Option<String>, AuthorizeError> {
        match get(name) {
            Some(v) if v.len() > max => Err(fail(
                "invalid_request",
                format!("{name} is longer than {max} characters"),
            )),
            v => Ok(v.map(str::to_owned)),
        }
    };
    let id_token_hint_subject = match get("id_token_hint") {
        None => None,
        Some(token) => Some(
            verify_hint(token)
                .ok_or_else(|| {
                    fail(
                        "invalid_request",
                        "id_token_hint is not a valid ID token from this server".into(),
                    )
                })?
                .subject,
        ),
    };
    let request = AuthorizationRequest {
        client_id: client.id.clone(),
        redirect_uri: redirect_uri.clone(),
        scope: scope.to_string(),
        state: bounded("state", 1024)?,
        nonce: bounded("nonce", 512)?,
        code_challenge: challenge.map(|c| c.as_str().to_owned()),
        response_mode,
        prompt,
        max_age,
        login_hint: bounded("login_hint", 320)?,
        acr_values: bounded("acr_values", 256)?,
        id_token_hint_subject,
    };
    Ok((client, request))
}

/// The scope a request gets, or `None` (`invalid_scope`). In an OpenID
/// Connect request (`openid`, which the client may use) scope values the
/// client is not registered for are ignored, as OIDC Core §3.1.2.1 asks of
/// values "not understood" — among them `address` and `phone`, whose claims
/// Latchkey does not hold; the token response's `scope` says what was
/// granted. A plain OAuth request must stay within the client's scopes.
pub fn granted_scope(requested: &Scope, allowed: &Scope) -> Option<Scope> {
    if requested.contains("openid") && allowed.contains("openid") {
        Some(requested.intersect(allowed))
    } else {
        requested.is_subset(allowed).then(|| requested.clone())
    }
}

/// A stored request waiting for the user.
#[derive(Debug, Clone)]
pub struct PendingRequest {
    pub id: String,
    pub request: AuthorizationRequest,
    /// When it arrived, and the session the browser held then.
    pub arrival: Arrival,
}

pub async fn store_pending(
    pool: &Pool,
    request: &AuthorizationRequest,
    arrival: &Arrival,
) -> Result<PendingRequest, StoreError> {
    let id = SecretToken::generate().expose().to_owned();
    let params = serde_json::to_string(request)
        .map_err(|e| StoreError::Other(sqlx::Error::Encode(Box::new(e))))?;
    let created_at = seconds_of(arrival.at_ms);
    sqlx::query("INSERT INTO authorization_requests (id, client_id, params, created_at, expires_at, created_at_ms, seen_session) VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(&id)
        .bind(&request.client_id)
        .bind(params)
        .bind(created_at)
        .bind(created_at + PENDING_LIFETIME_SECS)
        .bind(arrival.at_ms)
        .bind(arrival.seen_session.clone())
        .execute(pool)
        .await?;
    Ok(PendingRequest {
        id,
        request: request.clone(),
        arrival: arrival.clone(),
    })
}

pub async fn load_pending(
    pool: &Pool,
    id: &str,
    now: UnixTime,
) -> Result<Option<PendingRequest>, StoreError> {
    let row = sqlx::query(
        "SELECT params, created_at, expires_at, created_at_ms, seen_session FROM authorization_requests WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    if row.try_get::<i64, _>("expires_at")? <= now {
        return Ok(None);
    }
    let request: AuthorizationRequest = serde_json::from_str(&row.try_get::<String, _>("params")?)
        .map_err(|e| StoreError::Other(sqlx::Error::Decode(Box::new(e))))?;
    let created_at: UnixTime = row.try_get("created_at")?;
    Ok(Some(PendingRequest {
        id: id.to_owned(),
        request,
        arrival: Arrival {
            // Requests stored before 0011 know the second only.
            at_ms: row
                .try_get::<Option<i64>, _>("created_at_ms")?
                .unwrap_or(created_at * 1000),
            seen_session: row.try_get("seen_session")?,
        },
    }))
}

/// Ends a pending request: it failed, was denied, or is being answered
/// with a code. `false` if it was already gone — two answers raced, and
/// only the one that ended it may issue a code.
pub async fn finish_pending(pool: &Pool, id: &str) -> Result<bool, StoreError> {
    let deleted = sqlx::query("DELETE FROM authorization_requests WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(deleted == 1)
}

/// The signed-in user, as far as the authorization decision needs.
#[derive(Debug, Clone)]
pub struct Authentication {
    pub user_id: String,
    pub session_handle: String,
    /// The sign-in time, in seconds (the ID token's `auth_time`) ...
    pub auth_time: UnixTime,
    /// ... and to the millisecond (to order it against the request).
    pub auth_time_ms: UnixMillis,
    pub amr: Vec<String>,
    /// The user still holds a handed-out password (`must_change_password`):
    /// no code and no consent page until they replace it.
    pub must_change_password: bool,
}

impl Authentication {
    fn facts(&self) -> SignInFacts<'_> {
        SignInFacts {
            session_handle: &self.session_handle,
            auth_time_ms: self.auth_time_ms,
            amr: &self.amr,
        }
    }
}

/// What happens next with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The user must (re-)authenticate.
    Login(SignInPrompt),
    /// The user must approve the client and scopes.
    Consent,
    /// The user signed in with a handed-out password and must choose their
    /// own (or add a passkey) before any client gets a code; the request
    /// waits and continues afterwards.
    ChangePassword,
    /// Issue the code.
    Issue,
    /// The request ends with an error at the client (and its pending
    /// record, if any, is deleted).
    Fail(Failure),
}

/// Why the sign-in page is shown again, and whom it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignInPrompt {
    /// Nobody is signed in.
    First,
    /// The client wants a newer or stronger sign-in (`prompt=login`,
    /// `max_age`, `acr_values`, its `require_mfa` policy).
    Again,
    /// The client asked for another user (`id_token_hint`). The form is not
    /// filled in with that user's email: whoever holds an ID token would
    /// learn the address from the redirect, even without the `email` scope.
    AnotherUser,
}

/// An error for the client's redirect URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub error: &'static str,
    pub description: &'static str,
}

impl Failure {
    fn interaction(error: &'static str) -> Failure {
        Failure {
            error,
            description: "interaction is needed, but the request says prompt=none",
        }
    }
}

/// Decides the next step for a request that arrived at `arrival`.
///
/// In this order: (1) freshness — `prompt=login` / `select_account`,
/// `max_age` (the age of the sign-in when the request arrived; `max_age=0`
/// is `prompt=login`) and `acr_values` asking for MFA are satisfied by any
/// sign-in made after the request arrived (`policy::signed_in_after`), so
/// a slow return from the sign-in page never loops; (2) the user an
/// `id_token_hint` names; (3) the client's policy (`policy::judge`, the one
/// rule every path to a token calls); (4) a handed-out password to replace
/// (`must_change_password`); (5) consent. With `prompt=none`, any
/// step that needs the user is an error instead.
pub async fn decide(
    pool: &Pool,
    client: &Client,
    request: &AuthorizationRequest,
    who: Option<&Authentication>,
    arrival: &Arrival,
) -> Result<Decision, StoreError> {
    let silent = request.prompts("none");
    let login = |prompt: SignInPrompt| {
        if silent {
            Decision::Fail(Failure::interaction("login_required"))
        } else {
            Decision::Login(prompt)
        }
    };
    let Some(who) = who else {
        return Ok(login(SignInPrompt::First));
    };
    // (1) Freshness. After a fresh sign-in that still lacks MFA (the user
    // has no second factor) `acr_values` proceeds: the ID token's `acr`
    // tells the truth.
    let wants_mfa = request
        .acr_values
        .as_deref()
        .is_some_and(|v| v.split(' ').any(|a| a == crate::oidc::ACR_MULTI_FACTOR));
    let sign_in = who.facts();
    if !policy::signed_in_after(&sign_in, arrival) {
        let age_ms = arrival.at_ms - who.auth_time_ms;
        let stale = request.prompts("login")
            || request.prompts("select_account")
            || request
                .max_age
                .is_some_and(|max| max == 0 || age_ms > max.saturating_mul(1000))
            || (wants_mfa && !policy::is_multi_factor(&who.amr));
        if stale {
            return Ok(login(SignInPrompt::Again));
        }
    }
    // (2) OIDC Core §3.1.2.1: a code only for the user the hint names.
    if request
        .id_token_hint_subject
        .as_ref()
        .is_some_and(|subject| *subject != who.user_id)
    {
        return Ok(login(SignInPrompt::AnotherUser));
    }
    // (3) The client's policy.
    match policy::judge(client, &sign_in, arrival) {
        Verdict::Admit => {}
        Verdict::SignInAgain if silent => {
            return Ok(Decision::Fail(Failure::interaction("interaction_required")))
        }
        Verdict::SignInAgain => return Ok(Decision::Login(SignInPrompt::Again)),
        Verdict::Refuse(refusal) => {
            return Ok(Decision::Fail(Failure {
                error: "access_denied",
                description: refusal.describe(),
            }))
        }
    }
    // (4) A handed-out password is replaced before anything is issued or
    // consented to: the person holding it may not be its owner.
    if who.must_change_password {
        return Ok(if silent {
            Decision::Fail(Failure::interaction("interaction_required"))
        } else {
            Decision::ChangePassword
        });
    }
    // (5) Consent.
    if client.first_party && !request.prompts("consent") {
        return Ok(Decision::Issue);
    }
    let granted = consent_of(pool, &who.user_id, &client.id).await?;
    let covered = granted
        .as_ref()
        .is_some_and(|g| request.scope().is_subset(g));
    if covered && !request.prompts("consent") {
        return Ok(Decision::Issue);
    }
    Ok(if silent {
        Decision::Fail(Failure::interaction("consent_required"))
    } else {
        Decision::Consent
    })
}

/// The scopes a user granted a client, if any.
pub async fn consent_of(
    pool: &Pool,
    user_id: &str,
    client_id: &str,
) -> Result<Option<Scope>, StoreError> {
    let row = sqlx::query("SELECT scope FROM consents WHERE user_id = $1 AND client_id = $2")
        .bind(user_id)
        .bind(client_id)
        .fetch_optional(pool)
        .await?;
    Ok(row
        .map(|r| {
            r.try_get::<String, _>("scope")
                .map(|s| Scope::from_stored(&s))
        })
        .transpose()?)
}

/// Records consent, widening any earlier grant (one transaction).
pub async fn grant_consent(
    pool: &Pool,
    user_id: &str,
    client_id: &str,
    scope: &Scope,
    now: UnixTime,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    // Write first (see tokens::refresh): in SQLite a transaction that reads
    // and then writes fails with SQLITE_BUSY_SNAPSHOT, without waiting, when
    // any other write commits in between.
    sqlx::query(
        "UPDATE consents SET granted_at = granted_at WHERE user_id = $1 AND client_id = $2",
    )
    .bind(user_id)
    .bind(client_id)
    .execute(&mut *tx)
    .await?;
    let existing = sqlx::query("SELECT scope FROM consents WHERE user_id = $1 AND client_id = $2")
        .bind(user_id)
        .bind(client_id)
        .fetch_optional(&mut *tx)
        .await?;
    let merged = match existing {
        Some(row) => {
            let old = Scope::from_stored(&row.try_get::<String, _>("scope")?);
            Scope::from_stored(&format!("{old} {scope}"))
        }
        None => scope.clone(),
    };
    sqlx::query("DELETE FROM consents WHERE user_id = $1 AND client_id = $2")
        .bind(user_id)
        .bind(client_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO consents (user_id, client_id, scope, granted_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(user_id)
    .bind(client_id)
    .bind(merged.to_string())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A consent as shown on the account page.
#[derive(Debug, Clone, Serialize)]
pub struct ConsentView {
    pub client_id: String,
    pub client_name: String,
    pub scope: String,
    pub granted_at: UnixTime,
}

pub async fn consents_of_user(pool: &Pool, user_id: &str) -> Result<Vec<ConsentView>, StoreError> {
    let rows = sqlx::query("SELECT c.client_id, k.name, c.scope, c.granted_at FROM consents c JOIN clients k ON k.id = c.client_id WHERE c.user_id = $1 ORDER BY k.name")
        .bind(user_id)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(ConsentView {
                client_id: r.try_get("client_id")?,
                client_name: r.try_get("name")?,
                scope: r.try_get("scope")?,
                granted_at: r.try_get("granted_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

/// Withdraws consent: the client must ask again, and its refresh tokens for
/// this user stop working.
pub async fn revoke_consent(
    pool: &Pool,
    user_id: &str,
    client_id: &str,
    cause: &Cause,
) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query("DELETE FROM consents WHERE user_id = $1 AND client_id = $2")
        .bind(user_id)
        .bind(client_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n == 0 {
        return Ok(false);
    }
    sqlx::query("UPDATE refresh_families SET revoked_at = $3, revoked_reason = 'consent withdrawn' WHERE user_id = $1 AND client_id = $2 AND revoked_at IS NULL")
        .bind(user_id)
        .bind(client_id)
        .bind(cause.now)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM opaque_access_tokens WHERE subject = $1 AND client_id = $2")
        .bind(user_id)
        .bind(client_id)
        .execute(&mut *tx)
        .await?;
    // A code issued just before cannot be redeemed after: its tokens would
    // be issued after the event and escape it.
    sqlx::query("DELETE FROM authorization_codes WHERE user_id = $1 AND client_id = $2")
        .bind(user_id)
        .bind(client_id)
        .execute(&mut *tx)
        .await?;
    // The client's JWT access tokens for this user stop working at APIs
    // following the revocation feed (last statement: see `revocation`).
    let revoked = Revoked::Grant {
        client_id: client_id.to_owned(),
        subject: Some(user_id.to_owned()),
    };
    revocation::record_tx(&mut tx, &revoked, cause).await?;
    tx.commit().await?;
    cause.committed();
    Ok(true)
}

/// Issues a code for an approved request.
pub async fn issue_code(
    pool: &Pool,
    request: &AuthorizationRequest,
    who: &Authentication,
    now: UnixTime,
) -> Result<SecretToken, StoreError> {
    let code = SecretToken::generate();
    sqlx::query(
        "INSERT INTO authorization_codes (hash, client_id, user_id, session_handle, redirect_uri, scope, nonce, code_challenge, auth_time, amr, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(code.hash().as_str())
    .bind(&request.client_id)
    .bind(&who.user_id)
    .bind(&who.session_handle)
    .bind(&request.redirect_uri)
    .bind(&request.scope)
    .bind(request.nonce.clone())
    // '' = issued without PKCE (the column predates the opt-out and is NOT NULL).
    .bind(request.code_challenge.as_deref().unwrap_or_default())
    .bind(who.auth_time)
    .bind(who.amr.join(" "))
    .bind(now)
    .bind(now + CODE_LIFETIME_SECS)
    .execute(pool)
    .await?;
    Ok(code)
}

/// A code as redeemed at the token endpoint.
#[derive(Debug, Clone)]
pub struct RedeemedCode {
    pub client_id: String,
    pub user_id: String,
    pub session_handle: String,
    pub redirect_uri: String,
    pub scope: Scope,
    pub nonce: Option<String>,
    /// `None`: issued without PKCE (a confidential client's opt-out).
    pub challenge: Option<CodeChallenge>,
    pub auth_time: UnixTime,
    pub amr: Vec<String>,
    pub expires_at: UnixTime,
}

/// What a code's first use issued (recorded by [`record_issued_tx`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedFromCode {
    /// The refresh family it started, if any.
    pub family: Option<String>,
    /// Its access token's `jti` and `exp`.
    pub jti: String,
    pub exp: i64,
}

/// What happened to a presented code.
#[derive(Debug)]
pub enum Redemption {
    /// First use: the caller must now check client, redirect URI and PKCE.
    Fresh(RedeemedCode),
    /// Already used; the code is now marked replayed. `issued`: what the
    /// first use issued, for the caller to revoke — `None` while the first
    /// use has not recorded it yet (it then finds the mark and revokes
    /// what it issues itself: [`record_issued_tx`]), or when it issued nothing.
    Replayed {
        issued: Option<IssuedFromCode>,
        user_id: String,
    },
    Unknown,
}

/// The columns [`redeem`] reads back from the row it marked.
const REDEEMED_COLUMNS: &str = "hash, client_id, user_id, session_handle, redirect_uri, scope, nonce, code_challenge, auth_time, amr, expires_at, issued_family, issued_jti, issued_exp";

/// Marks the code used (atomically; exactly one caller gets `Fresh`), or,
/// when it was used already, marks it replayed.
///
/// Inside the caller's transaction: a code exchange commits the redemption
/// with everything it issues and records ([`record_issued_tx`]), so an
/// outage half-way leaves the code unused and the client's retry works.
pub async fn redeem_tx(
    tx: &mut Tx<'_>,
    code: &SecretToken,
    now: UnixTime,
) -> Result<Redemption, StoreError> {
    let hash = code.hash();
    // One statement per outcome (no transaction around them): the claiming
    // update returns the row it claimed; only when nothing was claimed does
    // a second update mark the replay and return what the first use issued.
    let claimed_row = sqlx::query(&format!(
        "UPDATE authorization_codes SET used_at = $2 WHERE hash = $1 AND used_at IS NULL
         RETURNING {REDEEMED_COLUMNS}"
    ))
    .bind(hash.as_str())
    .bind(now)
    .fetch_optional(&mut **tx)
    .await?;
    let claimed = claimed_row.is_some();
    let row = match claimed_row {
        Some(row) => Some(row),
        // The row lock orders this against the first use's `record_issued_tx`:
        // either that recorded first (returned here, revoked by the caller)
        // or it will see this mark (and revoke what it issued itself).
        None => {
            sqlx::query(&format!(
            "UPDATE authorization_codes SET replayed_at = COALESCE(replayed_at, $2) WHERE hash = $1
                 RETURNING {REDEEMED_COLUMNS}"
        ))
            .bind(hash.as_str())
            .bind(now)
            .fetch_optional(&mut **tx)
            .await?
        }
    };
    let Some(row) = row else {
        return Ok(Redemption::Unknown);
    };
    if !code.matches(&TokenHash::from_stored(row.try_get("hash")?)) {
        return Ok(Redemption::Unknown);
    }
    if !claimed {
        let jti: Option<String> = row.try_get("issued_jti")?;
        let exp: Option<i64> = row.try_get("issued_exp")?;
        let issued = match (jti, exp) {
            (Some(jti), Some(exp)) => Some(IssuedFromCode {
                family: row.try_get("issued_family")?,
                jti,
                exp,
            }),
            _ => None,
        };
        return Ok(Redemption::Replayed {
            issued,
            user_id: row.try_get("user_id")?,
        });
    }
    Ok(Redemption::Fresh(RedeemedCode {
        client_id: row.try_get("client_id")?,
        user_id: row.try_get("user_id")?,
        session_handle: row.try_get("session_handle")?,
        redirect_uri: row.try_get("redirect_uri")?,
        scope: Scope::from_stored(&row.try_get::<String, _>("scope")?),
        nonce: row.try_get("nonce")?,
        challenge: Some(row.try_get::<String, _>("code_challenge")?)
            .filter(|c| !c.is_empty())
            .map(CodeChallenge::from_stored),
        auth_time: row.try_get("auth_time")?,
        amr: row
            .try_get::<String, _>("amr")?
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        expires_at: row.try_get("expires_at")?,
    }))
}

/// Remembers what a code produced, so a replay can revoke it. Returns
/// whether the code was replayed meanwhile: then the caller revokes what it
/// just issued and hands out nothing. Recorded either way, so that a
/// revocation that fails now is done by the next replay.
pub async fn record_issued_tx(
    tx: &mut Tx<'_>,
    code: &SecretToken,
    issued: &IssuedFromCode,
) -> Result<bool, StoreError> {
    let row = sqlx::query("UPDATE authorization_codes SET issued_family = $2, issued_jti = $3, issued_exp = $4 WHERE hash = $1 RETURNING replayed_at")
        .bind(code.hash().as_str())
        .bind(issued.family.clone())
        .bind(&issued.jti)
        .bind(issued.exp)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(match row {
        Some(row) => row.try_get::<Option<i64>, _>("replayed_at")?.is_some(),
        // The code is gone (purged, or voided by a withdrawn consent):
        // nobody may keep what it produced.
        None => true,
    })
}

/// Removes expired codes and pending requests (background).
pub async fn purge_expired(pool: &Pool, now: UnixTime) -> Result<(), StoreError> {
    // Used codes are kept until they expire plus a day, so a late replay is still detected.
    sqlx::query("DELETE FROM authorization_codes WHERE expires_at <= $1")
        .bind(now - 86_400)
        .execute(pool)
        .await?;
    sqlx::query("DELETE FROM authorization_requests WHERE expires_at <= $1")
        .bind(now)
        .execute(pool)
        .await?;
    Ok(())
}

/// Builds the redirect back to the client: `code` or `error`, always `state`
/// (when given) and `iss` (RFC 9207).
pub fn response_params(
    issuer: &str,
    state: Option<&str>,
    pairs: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    if let Some(state) = state {
        out.push(("state".into(), state.to_owned()));
    }
    out.push(("iss".into(), issuer.to_owned()));
    out
}

/// `redirect_uri` with `params` appended to its query.
pub fn redirect_with(redirect_uri: &str, params: &[(String, String)]) -> String {
    let encoded: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let separator = if redirect_uri.contains('?') { '&' } else { '?' };
    format!("{redirect_uri}{separator}{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(text: &str) -> Scope {
        Scope::parse(text).expect("scope")
    }

    #[test]
    fn oidc_requests_ignore_scopes_the_client_lacks_and_plain_oauth_requests_do_not() {
        let allowed = scope("openid email read");
        assert_eq!(
            granted_scope(&scope("openid email address phone made:up"), &allowed),
            Some(scope("openid email"))
        );
        assert_eq!(granted_scope(&scope("read"), &allowed), Some(scope("read")));
        assert_eq!(granted_scope(&scope("read write"), &allowed), None);
        // `openid` the client may not use does not make the request lenient.
        assert_eq!(
            granted_scope(&scope("openid read write"), &scope("read")),
            None
        );
    }
}
