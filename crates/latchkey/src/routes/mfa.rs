//! `/login/mfa` (the second sign-in step) and `/account/mfa` (set-up,
//! recovery codes, turning it off).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar};
use serde::Deserialize;

use super::render;
use crate::app::AppState;
use crate::audit::{self, Event, EventKind};
use crate::crypto::SecretToken;
use crate::http::auth::{SignedIn, SignedInUser};
use crate::http::body::FormOrJson;
use crate::http::client::Caller;
use crate::http::csrf::{self, Binding, CsrfField, CsrfPageForm};
use crate::http::HttpError;
use crate::identity;
use crate::login::second_step::SecondStep;
use crate::login::LoginError;
use crate::mfa::{self, MfaError};
use crate::routes::login::{finish_sign_in, safe_next};
use crate::webauthn::{self, ChallengeBinding};

pub fn challenge_cookie_name(https: bool) -> &'static str {
    if https {
        "__Host-latchkey_mfa"
    } else {
        "latchkey_mfa"
    }
}

/// The cookie holding the half-done sign-in (5 minutes, HttpOnly).
pub fn challenge_cookie(token: &SecretToken, https: bool) -> Cookie<'static> {
    let mut cookie = crate::http::cookies::build(
        challenge_cookie_name(https),
        token.expose().to_owned(),
        https,
    );
    cookie.set_max_age(time::Duration::seconds(mfa::CHALLENGE_LIFETIME_SECS));
    cookie
}

fn clear_challenge(jar: CookieJar, https: bool) -> CookieJar {
    jar.add(crate::http::cookies::removal(
        challenge_cookie_name(https),
        https,
    ))
}

fn challenge_token(jar: &CookieJar, https: bool) -> Option<SecretToken> {
    jar.get(challenge_cookie_name(https))
        .and_then(|c| SecretToken::parse(c.value()))
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// A half-done sign-in: the password was right, the second step is due.
struct PendingSecondStep {
    /// The challenge cookie's value (the second step's only credential).
    token: SecretToken,
    challenge: mfa::MfaChallenge,
    user: identity::User,
}

/// The browser's live second step, if any (its cookie names an unexpired
/// challenge of an enabled user).
async fn pending_second_step(
    state: &AppState,
    jar: &CookieJar,
) -> Result<Option<PendingSecondStep>, HttpError> {
    let Some(token) = challenge_token(jar, state.config.is_https()) else {
        return Ok(None);
    };
    let Some(challenge) = mfa::load_challenge(&state.pool, &token, state.clock.now()).await? else {
        return Ok(None);
    };
    let user = identity::find_by_id(&state.pool, &challenge.user_id)
        .await?
        .filter(|u| !u.disabled);
    Ok(user.map(|user| PendingSecondStep {
        token,
        challenge,
        user,
    }))
}

fn second_step_expired() -> HttpError {
    HttpError::json(
        StatusCode::UNAUTHORIZED,
        "mfa_expired",
        "the sign-in expired; sign in again",
    )
}

/// What a passkey ceremony of the second step is bound to: the challenge
/// cookie, so only the browser that gave the password can finish it.
fn second_step_binding(pending: &PendingSecondStep) -> ChallengeBinding {
    ChallengeBinding::secret("mfa", pending.token.expose())
}

async fn second_step_form(
    state: &AppState,
    jar: CookieJar,
    status: StatusCode,
    next: &str,
    error: &str,
    user_id: &str,
) -> Result<Response, HttpError> {
    let (jar, anon) = csrf::ensure_anonymous_cookie(jar, state.config.is_https());
    let csrf_token = csrf::token_for(&state.csrf_key, Binding::Anonymous(&anon));
    let factors = crate::login::second_factors(state, user_id).await?;
    let html = render(
        state,
        "mfa_login.html",
        minijinja::context! {
            csrf_token,
            next,
            error,
            signed_in => false,
            totp => factors.totp,
            passkey => factors.passkey,
            recovery_code => factors.recovery_code,
        },
    )?;
    Ok((status, jar, html).into_response())
}

/// `GET /login/mfa`: only with a live challenge (else back to `/login`).
pub async fn second_step_page(
    State(state): State<AppState>,
    jar: CookieJar,
    Query(q): Query<NextQuery>,
) -> Result<Response, HttpError> {
    let Some(pending) = pending_second_step(&state, &jar).await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    second_step_form(
        &state,
        jar,
        StatusCode::OK,
        &safe_next(q.next.as_deref()),
        "",
        &pending.user.id,
    )
    .await
}

#[derive(Deserialize)]
pub struct SecondStepForm {
    code: String,
    csrf_token: Option<String>,
    next: Option<String>,
}

/// `POST /login/mfa`: a TOTP code or a recovery code completes the sign-in.
/// Failures count towards the account's lockout, like wrong passwords.
pub async fn second_step_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    Caller(origin): Caller,
    FormOrJson {
        value: form,
        is_json,
    }: FormOrJson<SecondStepForm>,
) -> Result<Response, HttpError> {
    let https = state.config.is_https();
    let page_error = |e: HttpError| if is_json { e } else { e.as_page() };
    csrf::check_anonymous(&state, &headers, &jar, form.csrf_token.as_deref(), is_json)?;
    let next = safe_next(form.next.as_deref());
    let expired = || page_error(second_step_expired());
    let Some(PendingSecondStep {
        token,
        challenge,
        user,
    }) = pending_second_step(&state, &jar).await?
    else {
        return Err(expired());
    };
    let outcome =
        crate::login::second_step::with_code(&state, &token, &challenge, user, &form.code, &origin)
            .await;
    let success = match outcome {
        Ok(SecondStep::Complete(success)) => *success,
        Ok(SecondStep::Replayed) => {
            return second_step_failure(
                &state,
                jar,
                &next,
                is_json,
                "That code was already used; wait for the next one.",
                &challenge.user_id,
            )
            .await
        }
        Ok(SecondStep::WrongCode) => {
            return second_step_failure(
                &state,
                jar,
                &next,
                is_json,
                "That code is not valid.",
                &challenge.user_id,
            )
            .await
        }
        Ok(SecondStep::Expired) => return Err(expired()),
        Err(LoginError::LockedOut { retry_after_secs }) => {
            return Err(page_error(HttpError::too_many_attempts(
                "failed attempts",
                retry_after_secs,
            )))
        }
        Err(e) => return Err(page_error(completion_failed(e))),
    };
    finish_sign_in(
        &state,
        &headers,
        clear_challenge(jar, https),
        success,
        &next,
        is_json,
    )
    .await
}

/// Creating the session failed after the second factor was accepted.
fn completion_failed(e: crate::login::LoginError) -> HttpError {
    match e {
        crate::login::LoginError::Store(s) => HttpError::from(s),
        _ => HttpError::internal(),
    }
}

async fn second_step_failure(
    state: &AppState,
    jar: CookieJar,
    next: &str,
    is_json: bool,
    message: &str,
    user_id: &str,
) -> Result<Response, HttpError> {
    if is_json {
        return Err(HttpError::json(
            StatusCode::UNAUTHORIZED,
            "invalid_code",
            message,
        ));
    }
    second_step_form(state, jar, StatusCode::UNAUTHORIZED, next, message, user_id).await
}

/// `POST /login/mfa/passkey/start`: options for `navigator.credentials.get()`
/// listing the user's passkeys (JSON, `X-CSRF-Token` of the page).
pub async fn passkey_start(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
) -> Result<Response, HttpError> {
    crate::routes::passkeys::anonymous_binding(&state, &headers, &jar)?;
    let Some(pending) = pending_second_step(&state, &jar).await? else {
        return Err(second_step_expired());
    };
    let started =
        webauthn::start_second_factor(&state, &pending.user.id, &second_step_binding(&pending))
            .await?;
    Ok(axum::Json(started).into_response())
}

#[derive(Deserialize)]
pub struct PasskeyFinish {
    ceremony: String,
    credential: webauthn_rs::prelude::PublicKeyCredential,
    #[serde(default)]
    next: Option<String>,
}

/// `POST /login/mfa/passkey/finish`: a passkey completes the sign-in. Like a
/// code, a failure counts towards the account's lockout and is audited.
pub async fn passkey_finish(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    Caller(origin): Caller,
    FormOrJson { value: body, .. }: FormOrJson<PasskeyFinish>,
) -> Result<Response, HttpError> {
    crate::routes::passkeys::anonymous_binding(&state, &headers, &jar)?;
    let https = state.config.is_https();
    let Some(pending) = pending_second_step(&state, &jar).await? else {
        return Err(second_step_expired());
    };
    let binding = second_step_binding(&pending);
    let success = match crate::login::second_step::with_passkey(
        &state,
        &pending.token,
        &pending.challenge,
        pending.user,
        &body.ceremony,
        &body.credential,
        &binding,
        &origin,
    )
    .await?
    {
        SecondStep::Complete(success) => *success,
        _ => return Err(second_step_expired()),
    };
    let next = safe_next(body.next.as_deref());
    finish_sign_in(
        &state,
        &headers,
        clear_challenge(jar, https),
        success,
        &next,
        true,
    )
    .await
}

/// Sensitive changes need a recent sign-in (`mfa.reauth_window_secs`);
/// otherwise the user is sent to sign in again.
pub fn require_recent_sign_in(
    state: &AppState,
    who: &SignedInUser,
    back_to: &str,
) -> Result<(), Redirect> {
    if state.clock.now() - who.session.auth_time <= state.config.mfa.reauth_window_secs {
        return Ok(());
    }
    let target = format!(
        "/login?reauth=1&next={}",
        url::form_urlencoded::byte_serialize(back_to.as_bytes()).collect::<String>()
    );
    Err(Redirect::to(&target))
}

fn account_page(state: &AppState, who: &SignedInUser, context: minijinja::Value) -> Response {
    let csrf_token = csrf::session_token_for(state, who);
    let base = minijinja::context! { csrf_token, signed_in => true };
    match render(
        state,
        "mfa_account.html",
        minijinja::context! { ..base, ..context },
    ) {
        Ok(html) => html.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Where "Continue" leads once a second factor is set up: the page that
/// asked for it (`?next=/admin`), else the account page.
fn continue_to(next: Option<&str>) -> String {
    safe_next(next)
}

/// `GET /account/mfa`.
pub async fn account_mfa(
    State(state): State<AppState>,
    SignedIn(who): SignedIn,
    Query(q): Query<NextQuery>,
) -> Result<Response, HttpError> {
    let status = mfa::status(&state.pool, &who.user.id).await?;
    let required = who
        .user
        .roles
        .iter()
        .any(|r| crate::policy::role_needs_mfa(&state.config.mfa, r.as_str()));
    let passkeys = crate::login::second_factors(&state, &who.user.id)
        .await?
        .passkey;
    Ok(account_page(
        &state,
        &who,
        minijinja::context! { step => "overview", status, required, passkeys, error => "", next => continue_to(q.next.as_deref()) },
    ))
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    csrf_token: Option<String>,
    code: Option<String>,
    next: Option<String>,
}

impl CsrfField for CsrfOnly {
    fn csrf_token(&self) -> Option<&str> {
        self.csrf_token.as_deref()
    }
}

fn qr_svg(uri: &str) -> String {
    match qrcode::QrCode::new(uri.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .build(),
        Err(_) => String::new(),
    }
}

fn enroll_page(
    state: &AppState,
    who: &SignedInUser,
    secret: &[u8],
    error: &str,
    next: &str,
) -> Response {
    // The issuer an authenticator app shows next to the code: the product name.
    let uri = mfa::totp::Totp::otpauth_uri(
        secret,
        &state.config.ui.product_name,
        who.user.email.as_str(),
    );
    let manual = mfa::totp::base32_encode(secret);
    account_page(
        state,
        who,
        minijinja::context! { step => "enroll", qr_svg => qr_svg(&uri), otpauth_uri => uri, secret => manual, error, next },
    )
}

/// `POST /account/mfa/totp/start`.
pub async fn totp_start(
    State(state): State<AppState>,
    CsrfPageForm { who, form }: CsrfPageForm<CsrfOnly>,
) -> Result<Response, HttpError> {
    if let Err(redirect) = require_recent_sign_in(&state, &who, "/account/mfa") {
        return Ok(redirect.into_response());
    }
    match mfa::begin_totp(
        &state.pool,
        &state.mfa_seal_key,
        &who.user.id,
        state.clock.now(),
    )
    .await
    {
        Ok(secret) => Ok(enroll_page(
            &state,
            &who,
            &secret,
            "",
            &continue_to(form.next.as_deref()),
        )),
        Err(MfaError::NoEnrollment) => Ok(Redirect::to("/account/mfa").into_response()),
        Err(MfaError::Store(e)) => Err(e.into()),
        Err(_) => Err(HttpError::internal().as_page()),
    }
}

/// `POST /account/mfa/totp/confirm`: on a valid code, TOTP is on and the
/// recovery codes are shown once.
pub async fn totp_confirm(
    State(state): State<AppState>,
    CsrfPageForm { who, form }: CsrfPageForm<CsrfOnly>,
) -> Result<Response, HttpError> {
    let now = state.clock.now();
    match mfa::confirm_totp(
        &state.pool,
        &state.mfa_seal_key,
        &who.user.id,
        form.code.as_deref().unwrap_or_default(),
        now,
    )
    .await
    {
        Ok(codes) => {
            audit::record(
                &state.pool,
                EventKind::MfaEnabled,
                Event {
                    actor: who.user.id.clone(),
                    subject: who.user.id.clone(),
                    detail: "authenticator app".into(),
                    ..Event::default()
                },
                now,
            )
            .await?;
            Ok(account_page(
                &state,
                &who,
                minijinja::context! { step => "codes", codes, error => "", next => continue_to(form.next.as_deref()) },
            ))
        }
        Err(MfaError::InvalidCode) => {
            match mfa::pending_totp_secret(&state.pool, &state.mfa_seal_key, &who.user.id).await {
                Ok(Some(secret)) => Ok((
                    StatusCode::BAD_REQUEST,
                    enroll_page(
                        &state,
                        &who,
                        &secret,
                        "That code is not valid; check the time on your phone and try again.",
                        &continue_to(form.next.as_deref()),
                    ),
                )
                    .into_response()),
                _ => Ok(Redirect::to("/account/mfa").into_response()),
            }
        }
        Err(MfaError::Store(e)) => Err(e.into()),
        Err(_) => Ok(Redirect::to("/account/mfa").into_response()),
    }
}

/// `POST /account/mfa/recovery-codes`: new codes; the old ones die.
pub async fn regenerate_codes(
    State(state): State<AppState>,
    CsrfPageForm { who, form: _ }: CsrfPageForm<CsrfOnly>,
) -> Result<Response, HttpError> {
    if let Err(redirect) = require_recent_sign_in(&state, &who, "/account/mfa") {
        return Ok(redirect.into_response());
    }
    let now = state.clock.now();
    if !mfa::status(&state.pool, &who.user.id).await?.totp {
        return Ok(Redirect::to("/account/mfa").into_response());
    }
    let codes = mfa::regenerate_recovery_codes(&state.pool, &who.user.id, now).await?;
    audit::record(
        &state.pool,
        EventKind::RecoveryCodesRegenerated,
        Event {
            actor: who.user.id.clone(),
            subject: who.user.id.clone(),
            ..Event::default()
        },
        now,
    )
    .await?;
    Ok(account_page(
        &state,
        &who,
        minijinja::context! { step => "codes", codes, error => "", next => "/account" },
    ))
}

/// `POST /account/mfa/disable`.
pub async fn disable(
    State(state): State<AppState>,
    CsrfPageForm { who, form: _ }: CsrfPageForm<CsrfOnly>,
) -> Result<Response, HttpError> {
    if let Err(redirect) = require_recent_sign_in(&state, &who, "/account/mfa") {
        return Ok(redirect.into_response());
    }
    let now = state.clock.now();
    mfa::disable(&state.pool, &who.user.id).await?;
    audit::record(
        &state.pool,
        EventKind::MfaDisabled,
        Event {
            actor: who.user.id.clone(),
            subject: who.user.id.clone(),
            ..Event::default()
        },
        now,
    )
    .await?;
    Ok(Redirect::to("/account/mfa").into_response())
}
