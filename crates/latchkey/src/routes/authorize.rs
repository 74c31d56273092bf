//! `/oauth2/authorize` (GET and POST alike), `/oauth2/authorize/resume`
//! (after sign-in) and `/oauth2/authorize/consent`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Query, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::render;
use crate::app::AppState;
use crate::audit::{self, Event, EventKind};
use crate::http::auth::{MaybeSignedIn, SignedInUser};
use crate::http::csrf::{self, CsrfField, CsrfPageForm};
use crate::http::HttpError;
use crate::oauth::authorize::{
    self, Authentication, AuthorizationRequest, AuthorizeError, Decision, ErrorRedirect, Failure,
    ResponseMode, SignInPrompt,
};
use crate::oauth::clients::{self, Client};
use crate::policy::Arrival;

fn page(message: &str) -> Response {
    HttpError::page(
        StatusCode::BAD_REQUEST,
        "invalid_authorization_request",
        message,
    )
    .into_response()
}

fn authentication(who: &SignedInUser) -> Authentication {
    Authentication {
        user_id: who.user.id.clone(),
        session_handle: who.session.handle.clone(),
        auth_time: who.session.auth_time,
        auth_time_ms: who.session.auth_time_ms,
        amr: who.session.amr.clone(),
        must_change_password: who.user.must_change_password,
    }
}

/// Sends `params` to the client's redirect URI, by 303 or by auto-submitted form.
fn to_client(
    state: &AppState,
    redirect_uri: &str,
    mode: ResponseMode,
    params: Vec<(String, String)>,
) -> Response {
    let mut response = match mode {
        ResponseMode::Query => {
            Redirect::to(&authorize::redirect_with(redirect_uri, &params)).into_response()
        }
        ResponseMode::FormPost => match render(
            state,
            "form_post.html",
            minijinja::context! { action => redirect_uri, params },
        ) {
            Ok(html) => html.into_response(),
            Err(e) => e.into_response(),
        },
    };
    // The response carries a code: never leak it through Referer.
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn error_to_client(state: &AppState, e: ErrorRedirect) -> Response {
    let params = authorize::response_params(
        state.config.issuer_str(),
        e.state.as_deref(),
        &[("error", e.error), ("error_description", &e.description)],
    );
    to_client(state, &e.redirect_uri, e.response_mode, params)
}

fn authorize_error(state: &AppState, e: AuthorizeError) -> Response {
    match e {
        AuthorizeError::Page(message) => page(&message),
        AuthorizeError::Redirect(r) => error_to_client(state, r),
        AuthorizeError::Store(message) => {
            tracing::warn!(error = %message, "storage error during authorization");
            HttpError::page(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "The service is temporarily unavailable; try again shortly.",
            )
            .into_response()
        }
    }
}

/// `GET|POST /oauth2/authorize`: the same request either way.
pub async fn authorize(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    MaybeSignedIn(who): MaybeSignedIn,
    body: Bytes,
) -> Response {
    let raw: Vec<u8> = if method == Method::POST {
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !is_form {
            return page(
                "Send the authorization request as a form (application/x-www-form-urlencoded).",
            );
        }
        body.to_vec()
    } else {
        query.unwrap_or_default().into_bytes()
    };
    let (params, duplicate) = match authorize::collect_params(&raw) {
        Ok(p) => (p, None),
        Err(dup) => {
            let mut lossy = BTreeMap::new();
            let mut repeated_identity = false;
            for (k, v) in url::form_urlencoded::parse(&raw) {
                if lossy.contains_key(k.as_ref()) && (k == "client_id" || k == "redirect_uri") {
                    repeated_identity = true;
                }
                lossy.entry(k.to_string()).or_insert_with(|| v.to_string());
            }
            if repeated_identity {
                return page("client_id or redirect_uri appears more than once.");
            }
            (lossy, Some(dup))
        }
    };
    let (client, request) = match authorize::validate(
        &state.pool,
        &|token| {
            crate::oidc::verify_id_token_hint(
                &state.keys.verification_keys(),
                state.config.issuer_str(),
                token,
                state.clock.now(),
            )
        },
        &params,
        duplicate,
    )
    .await
    {
        Ok(ok) => ok,
        Err(e) => return authorize_error(&state, e),
    };
    let arrival = Arrival {
        at_ms: state.clock.now_millis(),
        seen_session: who.as_ref().map(|w| w.session.handle.clone()),
    };
    proceed(&state, &client, request, None, &arrival, who.as_ref()).await
}

/// Ends a stored request (if any), or answers the expired page when another
/// answer ended it first: two answers raced, and only one may go on.
async fn finish(state: &AppState, pending_id: Option<&str>) -> Result<(), Response> {
    let Some(id) = pending_id else {
        return Ok(());
    };
    match authorize::finish_pending(&state.pool, id).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(expired_page()),
        Err(e) => Err(authorize_error(state, e.into())),
    }
}

/// Runs the decision for a request that arrived at `arrival` (stored as
/// `pending_id` if it waited for the user).
async fn proceed(
    state: &AppState,
    client: &Client,
    request: AuthorizationRequest,
    pending_id: Option<String>,
    arrival: &Arrival,
    who: Option<&SignedInUser>,
) -> Response {
    let auth = who.map(authentication);
    let decision =
        match authorize::decide(&state.pool, client, &request, auth.as_ref(), arrival).await {
            Ok(d) => d,
            Err(e) => return authorize_error(state, AuthorizeError::Store(e.to_string())),
        };
    let pending_id = match (&decision, pending_id) {
        (Decision::Login(_) | Decision::Consent | Decision::ChangePassword, None) => {
            match authorize::store_pending(&state.pool, &request, arrival).await {
                Ok(p) => Some(p.id),
                Err(e) => return authorize_error(state, e.into()),
            }
        }
        (_, id) => id,
    };
    match decision {
        Decision::Fail(failure) => {
            // A failed request is over: its id must not reach a code later.
            if let Err(response) = finish(state, pending_id.as_deref()).await {
                return response;
            }
            fail(state, &request, failure)
        }
        Decision::Login(prompt) => {
            sign_in_redirect(&request, &pending_id.unwrap_or_default(), &prompt)
        }
        Decision::ChangePassword => {
            let resume = format!(
                "/oauth2/authorize/resume?id={}",
                pending_id.unwrap_or_default()
            );
            let next: String = url::form_urlencoded::byte_serialize(resume.as_bytes()).collect();
            Redirect::to(&format!("/account/password?required=1&next={next}")).into_response()
        }
        Decision::Consent => match who {
            Some(who) => consent_page(
                state,
                client,
                &request,
                &pending_id.unwrap_or_default(),
                who,
            ),
            None => page("Sign in first."),
        },
        Decision::Issue => {
            let Some(auth) = auth else {
                return page("Sign in first.");
            };
            if let Err(response) = finish(state, pending_id.as_deref()).await {
                return response;
            }
            issue(state, &request, &auth).await
        }
    }
}

/// The request's error, at the client.
fn fail(state: &AppState, request: &AuthorizationRequest, failure: Failure) -> Response {
    let e = ErrorRedirect {
        redirect_uri: request.redirect_uri.clone(),
        response_mode: request.response_mode,
        state: request.state.clone(),
        error: failure.error,
        description: failure.description.to_owned(),
    };
    error_to_client(state, e)
}

/// The sign-in page, coming back to the stored request afterwards.
fn sign_in_redirect(
    request: &AuthorizationRequest,
    pending_id: &str,
    prompt: &SignInPrompt,
) -> Response {
    let encode = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
    let resume = format!("/oauth2/authorize/resume?id={pending_id}");
    let mut target = format!("/login?next={}", encode(&resume));
    if let Some(hint) = &request.login_hint {
        target.push_str("&login_hint=");
        target.push_str(&encode(hint));
    }
    match prompt {
        SignInPrompt::First => {}
        SignInPrompt::Again => target.push_str("&reauth=1"),
        SignInPrompt::AnotherUser => target.push_str("&reauth=other_account"),
    }
    Redirect::to(&target).into_response()
}

async fn issue(
    state: &AppState,
    request: &AuthorizationRequest,
    auth: &Authentication,
) -> Response {
    match authorize::issue_code(&state.pool, request, auth, state.clock.now()).await {
        Ok(code) => {
            let params = authorize::response_params(
                state.config.issuer_str(),
                request.state.as_deref(),
                &[("code", code.expose())],
            );
            to_client(state, &request.redirect_uri, request.response_mode, params)
        }
        Err(e) => authorize_error(state, e.into()),
    }
}

fn describe_scope(name: &str) -> &'static str {
    match name {
        "openid" => "confirm who you are",
        "profile" => "see your name",
        "email" => "see your email address",
        "offline_access" => "stay signed in to it when you are away",
        _ => "use this permission of your account",
    }
}

fn consent_page(
    state: &AppState,
    client: &Client,
    request: &AuthorizationRequest,
    pending_id: &str,
    who: &SignedInUser,
) -> Response {
    let scopes: Vec<_> = request
        .scope()
        .iter()
        .map(|s| minijinja::context! { name => s, description => describe_scope(s) })
        .collect();
    let redirect_host = url::Url::parse(&request.redirect_uri)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let csrf_token = csrf::session_token_for(state, who);
    match render(
        state,
        "consent.html",
        minijinja::context! { client_name => client.name, email => who.user.email.as_str(), scopes, redirect_host, request_id => pending_id, csrf_token, signed_in => true },
    ) {
        Ok(html) => html.into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
pub struct ResumeQuery {
    id: String,
}

fn expired_page() -> Response {
    page("This sign-in request has expired or is unknown. Go back to the application and start again.")
}

async fn load(state: &AppState, id: &str) -> Result<(Client, authorize::PendingRequest), Response> {
    let expired = expired_page;
    let pending = match authorize::load_pending(&state.pool, id, state.clock.now()).await {
        Ok(Some(p)) => p,
        Ok(None) => return Err(expired()),
        Err(e) => return Err(authorize_error(state, e.into())),
    };
    match clients::find(&state.pool, &pending.request.client_id).await {
        Ok(Some(c)) => Ok((c, pending)),
        Ok(None) => Err(expired()),
        Err(e) => Err(authorize_error(state, e.into())),
    }
}

/// `GET /oauth2/authorize/resume?id=…`: back from the sign-in page.
pub async fn resume(
    State(state): State<AppState>,
    Query(q): Query<ResumeQuery>,
    MaybeSignedIn(who): MaybeSignedIn,
) -> Response {
    let (client, pending) = match load(&state, &q.id).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    proceed(
        &state,
        &client,
        pending.request,
        Some(pending.id),
        &pending.arrival,
        who.as_ref(),
    )
    .await
}

#[derive(Deserialize)]
pub struct ConsentForm {
    request_id: String,
    csrf_token: Option<String>,
    decision: String,
}

impl CsrfField for ConsentForm {
    fn csrf_token(&self) -> Option<&str> {
        self.csrf_token.as_deref()
    }
}

/// `POST /oauth2/authorize/consent`: the user's answer.
pub async fn consent(
    State(state): State<AppState>,
    CsrfPageForm { who, form }: CsrfPageForm<ConsentForm>,
) -> Response {
    let (client, pending) = match load(&state, &form.request_id).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    let request = pending.request.clone();
    let now = state.clock.now();
    let event = |detail: String| Event {
        actor: who.user.id.clone(),
        subject: client.id.clone(),
        detail,
        ..Event::default()
    };
    match form.decision.as_str() {
        "allow" => {
            // Decide again: the session must still satisfy the request, and
            // only a request waiting for consent (or ready for a code) gets
            // one. Anything else — a sign-in due, a refusal — goes the way
            // the authorization endpoint would send it.
            let auth = authentication(&who);
            match authorize::decide(
                &state.pool,
                &client,
                &request,
                Some(&auth),
                &pending.arrival,
            )
            .await
            {
                Ok(Decision::Consent | Decision::Issue) => {}
                Ok(_) => {
                    return proceed(
                        &state,
                        &client,
                        request,
                        Some(pending.id),
                        &pending.arrival,
                        Some(&who),
                    )
                    .await
                }
                Err(e) => return authorize_error(&state, e.into()),
            }
            // Only the answer that ends the request issues a code.
            if let Err(response) = finish(&state, Some(&pending.id)).await {
                return response;
            }
            if let Err(e) = authorize::grant_consent(
                &state.pool,
                &who.user.id,
                &client.id,
                &request.scope(),
                now,
            )
            .await
            {
                return authorize_error(&state, e.into());
            }
            let _ = audit::record(
                &state.pool,
                EventKind::ConsentGranted,
                event(format!("scope {}", request.scope)),
                now,
            )
            .await;
            issue(&state, &request, &auth).await
        }
        "deny" => {
            if let Err(response) = finish(&state, Some(&pending.id)).await {
                return response;
            }
            let failure = Failure {
                error: "access_denied",
                description: "the user denied the request",
            };
            fail(&state, &request, failure)
        }
        _ => page("Unknown decision."),
    }
}
