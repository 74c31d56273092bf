//! OpenID Connect end to end, with the `openidconnect` crate (v4) as the
//! relying party — an implementation nobody here wrote — and a cookie-jar
//! HTTP client as the browser, which follows every 303 by hand and submits
//! the real sign-in and consent forms.
//!
//! What the peer checks for us: discovery (OIDC Discovery 1.0, RFC 8414), the
//! authorization request with PKCE S256 and `nonce` (OIDC Core §3.1.2, RFC
//! 7636), the ID token's signature, `iss`, `aud`, `exp`, `nonce` and `at_hash`
//! (OIDC Core §3.1.3.7), UserInfo (§5.3) and refresh (RFC 6749 §6). What the
//! tests check on top: RFC 9207 `iss` in every authorization response, single
//! sign-on with `prompt` / `max_age`, consent and its withdrawal, the
//! `form_post` response mode, RP-initiated logout (with its logout-CSRF
//! protection) and back-channel logout (the logout token is verified with
//! `jsonwebtoken` against the JWKS).

use std::collections::HashMap;
use std::time::Duration;

use latchkey::identity::{self, Email, NewUser, Password};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreClient, CoreErrorResponseType,
    CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreResponseType,
    CoreTokenResponse, CoreUserInfoClaims,
};
use openidconnect::{
    AccessTokenHash, AdditionalClaims, AuthorizationCode, AuthorizationRequest, ClientId,
    ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdToken, IssuerUrl,
    LogoutRequest, Nonce, OAuth2TokenResponse as _, PkceCodeChallenge, PkceCodeVerifier,
    PostLogoutRedirectUrl, ProviderMetadataWithLogout, RedirectUrl, RefreshToken,
    RequestTokenError, Scope, TokenResponse as _,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use url::Url;

use crate::backend_test;
use crate::support::app::*;
use crate::support::jwt::fetch_jwks;
use crate::support::oauth::{client_spec, PASSWORD};

const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
const ALL_SCOPES: &str = "openid profile email offline_access";

// ------------------------------------------------------------ the relying party

/// The `openidconnect` client as built from discovery: authorization endpoint
/// set, token and UserInfo endpoints "maybe set" (taken from the metadata).
type RpClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The ID token as this RP reads it: the standard claims plus `sid`
/// (OIDC Front-/Back-Channel Logout), which `openidconnect` leaves to
/// additional claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionClaims {
    sid: String,
}
impl AdditionalClaims for SessionClaims {}

type LatchkeyIdToken = IdToken<
    SessionClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

/// One registered client and the `openidconnect` RP configured for it.
struct Rp {
    id: String,
    secret: Option<String>,
    redirect_uri: String,
    oidc: RpClient,
    http: openidconnect::reqwest::Client,
    metadata: ProviderMetadataWithLogout,
}

/// The RP's own HTTP client: it never follows redirects.
fn rp_http() -> openidconnect::reqwest::Client {
    openidconnect::reqwest::Client::builder()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()
        .expect("RP HTTP client")
}

/// OIDC Discovery through `openidconnect` (over loopback http).
async fn discover(app: &TestApp) -> ProviderMetadataWithLogout {
    let issuer = IssuerUrl::new(app.base.clone()).expect("issuer URL");
    ProviderMetadataWithLogout::discover_async(issuer, &rp_http())
        .await
        .unwrap_or_else(|e| panic!("openidconnect refused the discovery document: {e:?}"))
}

/// How to register a client for a test.
struct Registration {
    name: &'static str,
    confidential: bool,
    first_party: bool,
    /// Port of the loopback redirect URI `http://127.0.0.1:{port}/cb` (nothing listens).
    port: u16,
    post_logout_redirect_uris: Vec<String>,
    backchannel_logout_uri: Option<String>,
    /// `id_token_signed_response_alg`; `None` = the default (RS256).
    id_token_alg: Option<&'static str>,
}

impl Registration {
    fn new(name: &'static str, port: u16) -> Registration {
        Registration {
            name,
            confidential: true,
            first_party: false,
            port,
            post_logout_redirect_uris: Vec::new(),
            backchannel_logout_uri: None,
            id_token_alg: None,
        }
    }
    fn public(mut self) -> Self {
        self.confidential = false;
        self
    }
    fn first_party(mut self) -> Self {
        self.first_party = true;
        self
    }
}

async fn register_rp(app: &TestApp, metadata: &ProviderMetadataWithLogout, r: Registration) -> Rp {
    let redirect_uri = format!("http://127.0.0.1:{}/cb", r.port);
    let mut spec = client_spec(
        r.name,
        r.confidential,
        &["authorization_code", "refresh_token"],
        ALL_SCOPES,
    );
    spec.redirect_uris = vec![redirect_uri.clone()];
    spec.first_party = r.first_party;
    spec.post_logout_redirect_uris = r.post_logout_redirect_uris;
    spec.backchannel_logout_uri = r.backchannel_logout_uri;
    spec.id_token_signed_response_alg = r.id_token_alg.map(str::to_owned);
    let (client, secret) =
        latchkey::oauth::clients::create(&app.state.pool, spec, app.clock.now_secs())
            .await
            .expect("register client");
    let secret = secret.map(|s| s.expose().to_owned());
    let oidc = CoreClient::from_provider_metadata(
        metadata.clone(),
        ClientId::new(client.id.clone()),
        secret.clone().map(ClientSecret::new),
    )
    .set_redirect_uri(RedirectUrl::new(redirect_uri.clone()).expect("redirect URL"));
    Rp {
        id: client.id,
        secret,
        redirect_uri,
        oidc,
        http: rp_http(),
        metadata: metadata.clone(),
    }
}

/// An authorization request as the RP built it, with what it must remember.
struct Pending {
    url: Url,
    state: CsrfToken,
    nonce: Nonce,
    verifier: PkceCodeVerifier,
}

type OidcRequest<'a> = AuthorizationRequest<'a, CoreAuthDisplay, CoreAuthPrompt, CoreResponseType>;

impl Rp {
    /// Builds an authorization request (code flow, PKCE S256, nonce) for
    /// `scopes` (openid is always added by `openidconnect`).
    fn authorize(
        &self,
        scopes: &[&str],
        customize: impl FnOnce(OidcRequest<'_>) -> OidcRequest<'_>,
    ) -> Pending {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let request = self
            .oidc
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scopes(scopes.iter().map(|s| Scope::new((*s).to_owned())))
            .set_pkce_challenge(challenge);
        let (url, state, nonce) = customize(request).url();
        Pending {
            url,
            state,
            nonce,
            verifier,
        }
    }

    /// The token request for a code, as `openidconnect` sends it
    /// (`client_secret_basic` for a confidential client, `client_id` alone
    /// for a public one). `Err` carries the OAuth error code.
    async fn exchange(
        &self,
        code: &str,
        verifier: PkceCodeVerifier,
    ) -> Result<CoreTokenResponse, String> {
        self.oidc
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .expect("token endpoint in the metadata")
            .set_pkce_verifier(verifier)
            .request_async(&self.http)
            .await
            .map_err(oauth_error)
    }

    async fn refresh(&self, token: &RefreshToken) -> Result<CoreTokenResponse, String> {
        self.oidc
            .exchange_refresh_token(token)
            .expect("token endpoint in the metadata")
            .request_async(&self.http)
            .await
            .map_err(oauth_error)
    }

    /// Verifies the ID token of `response` the way `openidconnect` does
    /// (signature with the discovered JWKS and advertised algorithms, `iss`,
    /// `aud`, `exp`, `nonce`) and checks `at_hash` against the access token.
    fn verify_id_token(&self, response: &CoreTokenResponse, nonce: &Nonce) -> VerifiedIdToken {
        let id_token = response.id_token().expect("an ID token for scope openid");
        let verifier = self.oidc.id_token_verifier();
        // The standard claims, through the crate's own `CoreIdToken` type ...
        let standard = id_token
            .claims(&verifier, nonce)
            .unwrap_or_else(|e| panic!("openidconnect rejected the ID token: {e:?}"));
        let expected_hash = standard
            .access_token_hash()
            .expect("at_hash in the ID token");
        let computed = AccessTokenHash::from_token(
            response.access_token(),
            id_token.signing_alg().expect("signing alg"),
            id_token
                .signing_key(&verifier)
                .expect("signing key in JWKS"),
        )
        .expect("at_hash algorithm supported");
        assert_eq!(
            expected_hash, &computed,
            "at_hash must match the access token"
        );
        // ... and again with `sid` as an additional claim.
        let with_sid: LatchkeyIdToken = id_token.to_string().parse().expect("ID token parses");
        let claims = with_sid
            .claims(&verifier, nonce)
            .unwrap_or_else(|e| panic!("openidconnect rejected the ID token: {e:?}"));
        VerifiedIdToken {
            sub: claims.subject().to_string(),
            email: claims.email().map(|e| e.to_string()),
            email_verified: claims.email_verified(),
            name: claims
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.to_string()),
            auth_time: claims.auth_time().map(|t| t.timestamp()),
            amr: claims
                .auth_method_refs()
                .map(|amr| amr.iter().map(|a| a.to_string()).collect())
                .unwrap_or_default(),
            sid: claims.additional_claims().sid.clone(),
            nonce: claims.nonce().map(|n| n.secret().clone()),
        }
    }
}

/// The claims a test looks at, after `openidconnect` verified the token.
#[derive(Debug)]
struct VerifiedIdToken {
    sub: String,
    email: Option<String>,
    email_verified: Option<bool>,
    name: Option<String>,
    auth_time: Option<i64>,
    amr: Vec<String>,
    sid: String,
    nonce: Option<String>,
}

/// The RFC 6749 §5.2 error code of a failed token request (or a description
/// of what else went wrong).
fn oauth_error<E: std::error::Error>(
    e: RequestTokenError<E, openidconnect::StandardErrorResponse<CoreErrorResponseType>>,
) -> String {
    match e {
        RequestTokenError::ServerResponse(r) => r.error().as_ref().to_owned(),
        other => format!("not an OAuth error response: {other:?}"),
    }
}

// ------------------------------------------------------------ the browser

/// Where the browser ended up after following the issuer's redirects.
enum Landing {
    /// A 303 out of the issuer, to the client's redirect URI.
    Callback(Callback),
    /// The sign-in page.
    Login(String),
    /// The consent page.
    Consent(String),
    /// Any other page.
    Page {
        status: u16,
        headers: reqwest::header::HeaderMap,
        html: String,
    },
}

impl std::fmt::Debug for Landing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Landing::Callback(c) => write!(f, "Callback({})", c.url),
            Landing::Login(_) => f.write_str("Login page"),
            Landing::Consent(_) => f.write_str("Consent page"),
            Landing::Page { status, html, .. } => {
                let start: String = html.chars().take(600).collect();
                write!(f, "Page {status}: {start}")
            }
        }
    }
}

impl Landing {
    fn callback(self) -> Callback {
        match self {
            Landing::Callback(c) => c,
            other => panic!("expected a redirect to the client, got {other:?}"),
        }
    }
    fn login_page(self) -> String {
        match self {
            Landing::Login(html) => html,
            other => panic!("expected the sign-in page, got {other:?}"),
        }
    }
    fn consent_page(self) -> String {
        match self {
            Landing::Consent(html) => html,
            other => panic!("expected the consent page, got {other:?}"),
        }
    }
}

/// The client's redirect URI as the browser was sent to it.
struct Callback {
    url: Url,
    params: HashMap<String, String>,
}

impl Callback {
    fn new(url: Url) -> Callback {
        let mut params = HashMap::new();
        for (k, v) in url.query_pairs() {
            assert!(
                params.insert(k.to_string(), v.to_string()).is_none(),
                "{k} twice in {url}"
            );
        }
        Callback { url, params }
    }
    fn get(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
    fn require(&self, name: &str) -> &str {
        self.get(name)
            .unwrap_or_else(|| panic!("{name} missing from {}", self.url))
    }
    /// The URI without its query: where the response was delivered.
    fn endpoint(&self) -> String {
        let mut u = self.url.clone();
        u.set_query(None);
        u.to_string()
    }
    /// An authorization error: checks RFC 9207 `iss` and the echoed `state`.
    fn assert_error(&self, error: &str, pending: &Pending, issuer: &str) {
        assert_eq!(self.get("error"), Some(error), "{}", self.url);
        assert_eq!(self.get("state"), Some(pending.state.secret().as_str()));
        assert_eq!(self.get("iss"), Some(issuer), "RFC 9207 iss on errors too");
        assert!(self.get("code").is_none(), "no code with an error");
    }
}

/// A browser: its own cookie jar; every redirect followed by hand.
struct Browser<'a> {
    app: &'a TestApp,
    http: reqwest::Client,
}

impl<'a> Browser<'a> {
    fn new(app: &'a TestApp) -> Browser<'a> {
        Browser {
            app,
            http: new_client(),
        }
    }

    async fn open(&self, url: &str) -> Landing {
        let url = Url::parse(url).expect("absolute URL");
        let response = self.http.get(url.clone()).send().await.expect("GET");
        self.land(url, response).await
    }

    /// Follows 303s within the issuer; stops at the first redirect that
    /// leaves it, or at a page.
    async fn land(&self, mut current: Url, mut response: reqwest::Response) -> Landing {
        let issuer = Url::parse(&self.app.base).expect("issuer URL").origin();
        for _ in 0..10 {
            let status = response.status().as_u16();
            if response.status().is_redirection() {
                assert_eq!(
                    status, 303,
                    "redirects in the flow are 303 See Other (from {current})"
                );
                let location = response
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .expect("Location on a redirect");
                let next = current.join(location).expect("Location resolves");
                if next.origin() != issuer {
                    return Landing::Callback(Callback::new(next));
                }
                response = self.http.get(next.clone()).send().await.expect("GET");
                current = next;
                continue;
            }
            let headers = response.headers().clone();
            let html = response.text().await.expect("body");
            return if status == 200 && html.contains("action=\"/login\"") {
                Landing::Login(html)
            } else if status == 200 && html.contains("action=\"/oauth2/authorize/consent\"") {
                Landing::Consent(html)
            } else {
                Landing::Page {
                    status,
                    headers,
                    html,
                }
            };
        }
        panic!("more than 10 redirects from {current}");
    }

    /// Submits the real sign-in form of `login_html`.
    async fn sign_in(&self, login_html: &str, email: &str) -> Landing {
        let csrf = input(login_html, "csrf_token");
        let next = input(login_html, "next");
        let url = Url::parse(&self.app.url("/login")).expect("URL");
        let response = self
            .http
            .post(url.clone())
            .form(&[
                ("email", email),
                ("password", PASSWORD),
                ("csrf_token", &csrf),
                ("next", &next),
            ])
            .send()
            .await
            .expect("POST /login");
        self.land(url, response).await
    }

    /// Answers the real consent form of `consent_html`.
    async fn decide(&self, consent_html: &str, decision: &str) -> Landing {
        let url = Url::parse(&self.app.url("/oauth2/authorize/consent")).expect("URL");
        let response = self
            .http
            .post(url.clone())
            .form(&[
                ("request_id", input(consent_html, "request_id").as_str()),
                ("csrf_token", input(consent_html, "csrf_token").as_str()),
                ("decision", decision),
            ])
            .send()
            .await
            .expect("POST consent");
        self.land(url, response).await
    }

    /// `GET /account` as JSON: status and body (`Null` when not 200).
    async fn account(&self) -> (u16, Value) {
        let response = self
            .http
            .get(self.app.url("/account"))
            .header("accept", "application/json")
            .send()
            .await
            .expect("GET /account");
        let status = response.status().as_u16();
        let body = if status == 200 {
            response.json().await.expect("account JSON")
        } else {
            Value::Null
        };
        (status, body)
    }

    /// The handle of this browser's current session (from the account JSON).
    async fn session_handle(&self) -> String {
        let (status, account) = self.account().await;
        assert_eq!(status, 200, "signed in");
        account["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .find(|s| s["current"] == true)
            .and_then(|s| s["handle"].as_str())
            .expect("current session handle")
            .to_owned()
    }
}

/// The value of a hidden input, HTML entities decoded.
fn input(html: &str, name: &str) -> String {
    unescape(&extract_input(html, name).unwrap_or_else(|| panic!("input {name} in the page")))
}

/// Decodes what the template engine escapes in attribute values.
fn unescape(s: &str) -> String {
    s.replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// A user with a display name (the `name` claim), password [`PASSWORD`].
async fn create_named_user(app: &TestApp, email: &str, name: &str) -> identity::User {
    let hash = app
        .state
        .hasher
        .hash(&Password::new(PASSWORD))
        .await
        .expect("hash");
    identity::create_user(
        &app.state.pool,
        NewUser {
            email: Email::parse(email).expect("email"),
            display_name: name.to_owned(),
            roles: Vec::new(),
            password_hash: Some(hash),
            email_verified: true,
            must_change_password: false,
        },
        app.clock.now_secs(),
    )
    .await
    .expect("create user")
}

/// The whole first visit: authorize → sign-in form → (consent, allowed) →
/// back at the client with a code, which `openidconnect` redeems.
async fn full_sign_in(
    app: &TestApp,
    rp: &Rp,
    browser: &Browser<'_>,
    email: &str,
    scopes: &[&str],
) -> (CoreTokenResponse, VerifiedIdToken) {
    let pending = rp.authorize(scopes, |r| r);
    let login = browser.open(pending.url.as_str()).await.login_page();
    let callback = match browser.sign_in(&login, email).await {
        Landing::Consent(html) => browser.decide(&html, "allow").await.callback(),
        other => other.callback(),
    };
    assert_eq!(callback.get("state"), Some(pending.state.secret().as_str()));
    assert_eq!(callback.get("iss"), Some(app.base.as_str()));
    let response = rp
        .exchange(callback.require("code"), pending.verifier)
        .await
        .expect("code redeemed");
    let id = rp.verify_id_token(&response, &pending.nonce);
    (response, id)
}

/// SSO: an authorization that needs no interaction at all.
async fn silent_sign_in(
    rp: &Rp,
    browser: &Browser<'_>,
    customize: impl FnOnce(OidcRequest<'_>) -> OidcRequest<'_>,
) -> VerifiedIdToken {
    let pending = rp.authorize(&[], customize);
    // One request, answered with a 303 straight to the client.
    let response = browser
        .http
        .get(pending.url.clone())
        .send()
        .await
        .expect("GET authorize");
    assert_eq!(response.status(), 303, "no interaction expected");
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("Location");
    let callback = Callback::new(Url::parse(location).expect("absolute redirect URI"));
    assert_eq!(callback.endpoint(), rp.redirect_uri);
    assert_eq!(callback.get("state"), Some(pending.state.secret().as_str()));
    let response = rp
        .exchange(callback.require("code"), pending.verifier)
        .await
        .expect("code redeemed");
    rp.verify_id_token(&response, &pending.nonce)
}

fn assert_invalid_grant(result: Result<CoreTokenResponse, String>, what: &str) {
    match result {
        Ok(_) => panic!("{what}: the token endpoint accepted it"),
        Err(code) => assert_eq!(code, "invalid_grant", "{what}"),
    }
}

// ------------------------------------------------------------ the code flow

backend_test!(
    discovery_code_flow_pkce_nonce_userinfo_and_refresh_verify_in_openidconnect,
    |app: TestApp| async move {
        let user = create_named_user(&app, "ada@example.com", "Ada Lovelace").await;
        let metadata = discover(&app).await;
        assert_eq!(metadata.issuer().as_str(), app.base);
        assert!(metadata
            .token_endpoint_auth_methods_supported()
            .expect("auth methods advertised")
            .contains(&openidconnect::core::CoreClientAuthMethod::ClientSecretBasic));
        let end_session = metadata
            .additional_metadata()
            .end_session_endpoint
            .as_ref()
            .expect("end_session_endpoint");
        assert_eq!(end_session.as_str(), app.url("/oauth2/logout"));
        let rp = register_rp(&app, &metadata, Registration::new("Photo Album", 8401)).await;
        assert!(rp.secret.is_some());

        let pending = rp.authorize(&["profile", "email", "offline_access"], |r| r);
        let sent: HashMap<String, String> = pending.url.query_pairs().into_owned().collect();
        assert_eq!(
            sent.get("code_challenge_method").map(String::as_str),
            Some("S256")
        );
        assert_eq!(
            sent.get("nonce"),
            Some(pending.nonce.secret()),
            "the RP sends a nonce"
        );

        let browser = Browser::new(&app);
        let login = browser.open(pending.url.as_str()).await.login_page();
        let signed_in_at = app.clock.now_secs();
        let consent = browser
            .sign_in(&login, "ada@example.com")
            .await
            .consent_page();
        assert!(consent.contains("Photo Album"));
        let callback = browser.decide(&consent, "allow").await.callback();
        assert_eq!(callback.endpoint(), rp.redirect_uri);
        assert_eq!(callback.get("state"), Some(pending.state.secret().as_str()));
        assert_eq!(
            callback.get("iss"),
            Some(app.base.as_str()),
            "RFC 9207 iss = metadata issuer"
        );
        assert!(callback.get("error").is_none());

        let response = rp
            .exchange(callback.require("code"), pending.verifier)
            .await
            .expect("openidconnect redeems the code (client_secret_basic + PKCE)");
        let granted: Vec<String> = response
            .scopes()
            .expect("scope in the token response")
            .iter()
            .map(|s| s.to_string())
            .collect();
        for s in ALL_SCOPES.split(' ') {
            assert!(granted.iter().any(|g| g == s), "{s} granted: {granted:?}");
        }
        let id = rp.verify_id_token(&response, &pending.nonce);
        assert_eq!(id.sub, user.id);
        assert_eq!(id.email.as_deref(), Some("ada@example.com"));
        assert_eq!(id.email_verified, Some(true));
        assert_eq!(id.name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(id.auth_time, Some(signed_in_at));
        assert!(id.amr.iter().any(|a| a == "pwd"), "amr {:?}", id.amr);
        assert_eq!(id.nonce.as_deref(), Some(pending.nonce.secret().as_str()));
        assert_eq!(id.sid, browser.session_handle().await, "sid = the session");
        let id_token = response.id_token().expect("ID token");
        assert!(
            id_token
                .claims(&rp.oidc.id_token_verifier(), &Nonce::new("another".into()))
                .is_err(),
            "openidconnect refuses the token for another nonce"
        );

        // UserInfo, through the RP (which checks `sub` against the ID token's).
        let info: CoreUserInfoClaims = rp
            .oidc
            .user_info(
                response.access_token().clone(),
                Some(openidconnect::SubjectIdentifier::new(id.sub.clone())),
            )
            .expect("userinfo endpoint in the metadata")
            .request_async(&rp.http)
            .await
            .unwrap_or_else(|e| panic!("UserInfo: {e:?}"));
        assert_eq!(info.subject().as_str(), user.id);
        assert_eq!(info.email().map(|e| e.as_str()), Some("ada@example.com"));
        assert_eq!(
            info.name().and_then(|n| n.get(None)).map(|n| n.as_str()),
            Some("Ada Lovelace")
        );

        // Refresh rotates; the spent token is then refused (reuse), which
        // revokes the whole family and ends the session (RFC 9700 §4.14).
        let first = response
            .refresh_token()
            .expect("offline_access → refresh token")
            .clone();
        let refreshed = rp.refresh(&first).await.expect("refresh works");
        let second = refreshed
            .refresh_token()
            .expect("a new refresh token")
            .clone();
        assert_ne!(first.secret(), second.secret(), "rotation");
        assert_ne!(
            refreshed.access_token().secret(),
            response.access_token().secret()
        );
        // Presented after the reuse grace (within it, a retry is answered).
        app.clock
            .advance(app.state.config.tokens.refresh_token_reuse_grace_secs + 1);
        assert_invalid_grant(rp.refresh(&first).await, "a spent refresh token");
        assert_invalid_grant(rp.refresh(&second).await, "the family after reuse");
        assert_eq!(browser.account().await.0, 401, "reuse ends the session");
    }
);

backend_test!(
    public_client_completes_the_flow_with_pkce_as_its_only_proof,
    |app: TestApp| async move {
        let user = app.create_user("grace@example.com", PASSWORD, &[]).await;
        let metadata = discover(&app).await;
        assert!(metadata
            .token_endpoint_auth_methods_supported()
            .expect("auth methods advertised")
            .contains(&openidconnect::core::CoreClientAuthMethod::None));
        let rp = register_rp(
            &app,
            &metadata,
            Registration::new("Pocket App", 8403).public(),
        )
        .await;
        assert!(rp.secret.is_none());
        let browser = Browser::new(&app);
        let (response, id) = full_sign_in(
            &app,
            &rp,
            &browser,
            "grace@example.com",
            &["email", "offline_access"],
        )
        .await;
        assert_eq!(id.sub, user.id);
        assert_eq!(id.email.as_deref(), Some("grace@example.com"));
        assert_eq!(id.name, None, "no name: none set, and profile not asked");
        let refresh = response.refresh_token().expect("refresh token").clone();
        let rotated = rp.refresh(&refresh).await.expect("public client refresh");
        assert!(rotated.refresh_token().is_some());

        // Without the right verifier a code is worthless, and a failed
        // attempt spends it.
        let pending = rp.authorize(&["email"], |r| r);
        let callback = browser.open(pending.url.as_str()).await.callback();
        let code = callback.require("code");
        let (_, wrong) = PkceCodeChallenge::new_random_sha256();
        assert_invalid_grant(rp.exchange(code, wrong).await, "a wrong code_verifier");
        assert_invalid_grant(
            rp.exchange(code, pending.verifier).await,
            "the code after a failed PKCE check",
        );
    }
);

// ------------------------------------------------------------ single sign-on

backend_test!(
    second_client_gets_a_code_without_a_password_prompt,
    |app: TestApp| async move {
        app.create_user("sso@example.com", PASSWORD, &[]).await;
        let metadata = discover(&app).await;
        let first = register_rp(&app, &metadata, Registration::new("Mail", 8411)).await;
        let second = register_rp(
            &app,
            &metadata,
            Registration::new("Calendar", 8412).first_party(),
        )
        .await;
        let browser = Browser::new(&app);
        let (_, one) = full_sign_in(&app, &first, &browser, "sso@example.com", &["email"]).await;

        app.clock.advance(30);
        // No login form, no consent page: the authorize request 303s straight to the client.
        let two = silent_sign_in(&second, &browser, |r| r).await;
        assert_eq!(two.sub, one.sub);
        assert_eq!(two.sid, one.sid, "the same Latchkey session");
        assert_eq!(
            two.auth_time, one.auth_time,
            "no new authentication happened"
        );
        assert_eq!(two.amr, one.amr);
    }
);

backend_test!(
    prompt_login_asks_for_credentials_again_and_moves_auth_time,
    |app: TestApp| async move {
        app.create_user("again@example.com", PASSWORD, &[]).await;
        let metadata = discover(&app).await;
        let first = register_rp(&app, &metadata, Registration::new("Mail", 8421)).await;
        let second = register_rp(
            &app,
            &metadata,
            Registration::new("Calendar", 8422).first_party(),
        )
        .await;
        let browser = Browser::new(&app);
        let (_, one) = full_sign_in(&app, &first, &browser, "again@example.com", &[]).await;

        app.clock.advance(45);
        let pending = second.authorize(&[], |r| r.add_prompt(CoreAuthPrompt::Login));
        let login = browser.open(pending.url.as_str()).await.login_page();
        assert!(
            login.contains("Please sign in again"),
            "a re-authentication notice"
        );
        let callback = browser
            .sign_in(&login, "again@example.com")
            .await
            .callback();
        assert_eq!(callback.get("state"), Some(pending.state.secret().as_str()));
        let response = second
            .exchange(callback.require("code"), pending.verifier)
            .await
            .expect("code");
        let two = second.verify_id_token(&response, &pending.nonce);
        assert_eq!(two.sub, one.sub);
        assert_eq!(
            two.auth_time,
            one.auth_time.map(|t| t + 45),
            "auth_time is the new sign-in"
        );
        assert_ne!(two.sid, one.sid, "a sign-in starts a new session");
    }
);

backend_test!(
    max_age_exceeded_asks_for_credentials_again,
    |app: TestApp| async move {
        app.create_user("maxage@example.com", PASSWORD, &[]).await;
        let metadata = discover(&app).await;
        let first = register_rp(&app, &metadata, Registration::new("Mail", 8431)).await;
        let second = register_rp(
            &app,
            &metadata,
            Registration::new("Calendar", 8432).first_party(),
        )
        .await;
        let browser = Browser::new(&app);
        let (_, one) = full_sign_in(&app, &first, &browser, "maxage@example.com", &[]).await;

        // Within max_age: SSO as usual.
        app.clock.advance(30);
        let recent = silent_sign_in(&second, &browser, |r| {
            r.set_max_age(Duration::from_secs(60))
        })
        .await;
        assert_eq!(recent.auth_time, one.auth_time);

        // Past it: the sign-in page again.
        app.clock.advance(90);
        let pending = second.authorize(&[], |r| r.set_max_age(Duration::from_secs(60)));
        let login = browser.open(pending.url.as_str()).await.login_page();
        let callback = browser
            .sign_in(&login, "maxage@example.com")
            .await
            .callback();
        let response = second
            .exchange(callback.require("code"), pending.verifier)
            .await
            .expect("code");
        let fresh = second.verify_id_token(&response, &pending.nonce);
        assert_eq!(fresh.auth_time, one.auth_time.map(|t| t + 120));
    }
);

backend_test!(
    prompt_none_without_a_session_is_login_required_at_the_client,
    |app: TestApp| async move {
        let metadata = discover(&app).await;
        let rp = register_rp(
            &app,
            &metadata,
            Registration::new("Calendar", 8441).first_party(),
        )
        .await;
        let pending = rp.authorize(&[], |r| r.add_prompt(CoreAuthPrompt::None));
        let callback = Browser::new(&app)
            .open(pending.url.as_str())
            .await
            .callback();
        assert_eq!(callback.endpoint(), rp.redirect_uri);
        callback.assert_error("login_required", &pending, &app.base);
    }
);

backend_test!(
    prompt_none_without_consent_is_consent_required_at_the_client,
    |app: TestApp| async move {
        app.create_user("quiet@example.com", PASSWORD, &[]).await;
        let metadata = discover(&app).await;
        let home = register_rp(
            &app,
            &metadata,
            Registration::new("Home", 8451).first_party(),
        )
        .await;
        let third_party = register_rp(&app, &metadata, Registration::new("Stranger", 8452)).await;
        let browser = Browser::new(&app);
        full_sign_in(&app, &home, &browser, "quiet@example.com", &[]).await;

        let pending = third_party.authorize(&["email"], |r| r.add_prompt(CoreAuthPrompt::None));
        let callback = browser.open(pending.url.as_str()).await.callback();
        assert_eq!(callback.endpoint(), third_party.redirect_uri);
        callback.assert_error("consent_required", &pending, &app.base);
    }
);

// ------------------------------------------------------------ consent

backend_test!(
    consent_is_remembered_widened_and_revocable_from_the_account_page,
    |app: TestApp| async move {
        app.create_user("consent@example.com", PASSWORD, &[]).await;
        let metadata = discover(&app).await;
        let rp = register_rp(&app, &metadata, Registration::new("Recipe Box", 8461)).await;
        let browser = Browser::new(&app);

        // First time: sign in, then the consent page names the client and every scope.
        let pending = rp.authorize(&["profile", "offline_access"], |r| r);
        let login = browser.open(pending.url.as_str()).await.login_page();
        let page = browser
            .sign_in(&login, "consent@example.com")
            .await
            .consent_page();
        assert!(
            page.contains("Recipe Box"),
            "client name on the consent page"
        );
        for scope in ["openid", "profile", "offline_access"] {
            assert!(
                page.contains(&format!("<code>{scope}</code>")),
                "{scope} listed"
            );
        }
        assert!(!page.contains("<code>email</code>"), "only what was asked");
        let callback = browser.decide(&page, "allow").await.callback();
        let response = rp
            .exchange(callback.require("code"), pending.verifier)
            .await
            .expect("code");
        let refresh = response.refresh_token().expect("refresh token").clone();

        // The same scopes, or fewer: no page.
        silent_sign_in(&rp, &browser, |r| {
            r.add_scopes([
                Scope::new("profile".into()),
                Scope::new("offline_access".into()),
            ])
        })
        .await;
        silent_sign_in(&rp, &browser, |r| r).await;

        // A new scope: asked again, listing it.
        let pending = rp.authorize(&["email"], |r| r);
        let page = browser.open(pending.url.as_str()).await.consent_page();
        assert!(page.contains("<code>email</code>"));
        let callback = browser.decide(&page, "allow").await.callback();
        assert!(callback.get("code").is_some());

        // The account page lists the (widened) grant.
        let (status, account) = browser.account().await;
        assert_eq!(status, 200);
        let consents = account["consents"].as_array().expect("consents");
        assert_eq!(consents.len(), 1, "{consents:?}");
        assert_eq!(consents[0]["client_id"], rp.id.as_str());
        assert_eq!(consents[0]["client_name"], "Recipe Box");
        let granted = consents[0]["scope"].as_str().expect("scope");
        for scope in ["openid", "profile", "email", "offline_access"] {
            assert!(
                granted.split(' ').any(|s| s == scope),
                "{scope} in {granted}"
            );
        }

        // Withdraw it with the account page's CSRF token.
        let csrf = account["csrf_token"].as_str().expect("csrf_token");
        let revoked = browser
            .http
            .post(app.url(&format!("/account/consents/{}/revoke", rp.id)))
            .form(&[("csrf_token", csrf)])
            .send()
            .await
            .expect("revoke consent");
        assert_eq!(revoked.status(), 303);
        let (_, account) = browser.account().await;
        assert_eq!(account["consents"], serde_json::json!([]));

        // The next authorization asks again, and the client's refresh token is dead.
        let pending = rp.authorize(&[], |r| r);
        browser.open(pending.url.as_str()).await.consent_page();
        assert_invalid_grant(
            rp.refresh(&refresh).await,
            "refresh after consent withdrawn",
        );
    }
);

backend_test!(
    denying_consent_returns_access_denied_with_state_and_iss,
    |app: TestApp| async move {
        app.create_user("deny@example.com", PASSWORD, &[]).await;
        let metadata = discover(&app).await;
        let rp = register_rp(&app, &metadata, Registration::new("Nosy", 8471)).await;
        let browser = Browser::new(&app);
        let pending = rp.authorize(&["email"], |r| r);
        let login = browser.open(pending.url.as_str()).await.login_page();
        let page = browser
            .sign_in(&login, "deny@example.com")
            .await
            .consent_page();
        let callback = browser.decide(&page, "deny").await.callback();
        assert_eq!(callback.endpoint(), rp.redirect_uri);
        callback.assert_error("access_denied", &pending, &app.base);
        let (_, account) = browser.account().await;
        assert_eq!(
            account["consents"],
            serde_json::json!([]),
            "nothing remembered"
        );
        // Denial is not remembered either: the next request asks again.
        let pending = rp.authorize(&["email"], |r| r);
        browser.open(pending.url.as_str()).await.consent_page();
    }
);

// ------------------------------------------------------------ form_post

/// The `action` of the first form of a page, entities decoded.
fn form_action(html: &str) -> String {
    let marker = "<form method=\"post\" action=\"";
    let start = html.find(marker).expect("a POST form") + marker.len();
    let end = html[start..].find('"').expect("closing quote");
    unescape(&html[start..start + end])
}

backend_test!(
    form_post_response_mode_delivers_code_state_and_iss_in_an_auto_submitted_form,
    |app: TestApp| async move {
        app.create_user("form@example.com", PASSWORD, &[]).await;
        let metadata = discover(&app).await;
        let rp = register_rp(
            &app,
            &metadata,
            Registration::new("Server App", 8481).first_party(),
        )
        .await;
        let browser = Browser::new(&app);
        let pending = rp.authorize(&["email"], |r| {
            r.add_extra_param("response_mode", "form_post")
        });
        let login = browser.open(pending.url.as_str()).await.login_page();
        let Landing::Page {
            status,
            headers,
            html,
        } = browser.sign_in(&login, "form@example.com").await
        else {
            panic!("form_post answers with a page, not a redirect");
        };
        assert_eq!(status, 200);
        assert_eq!(
            headers.get("referrer-policy").and_then(|v| v.to_str().ok()),
            Some("no-referrer")
        );
        assert!(headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/html")));
        assert_eq!(form_action(&html), rp.redirect_uri);
        assert_eq!(input(&html, "state"), *pending.state.secret());
        assert_eq!(input(&html, "iss"), app.base);
        assert!(extract_input(&html, "error").is_none());
        // The submit script is an external file (the CSP forbids inline script).
        assert_eq!(html.matches("<script").count(), 1, "one script tag");
        assert!(html.contains("<script src=\"/static/form_post.js\"></script>"));
        let csp = headers
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .expect("CSP");
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
        let script = app
            .client
            .get(app.url("/static/form_post.js"))
            .send()
            .await
            .expect("script");
        assert_eq!(script.status(), 200);
        // And the code in the form is a real one.
        let response = rp
            .exchange(&input(&html, "code"), pending.verifier)
            .await
            .expect("the form_post code redeems");
        rp.verify_id_token(&response, &pending.nonce);
    }
);

// ------------------------------------------------------------ RP-initiated logout

backend_test!(
    rp_initiated_logout_with_id_token_hint_ends_the_session_and_its_tokens,
    |app: TestApp| async move {
        app.create_user("bye@example.com", PASSWORD, &[]).await;
        let metadata = discover(&app).await;
        let mut registration = Registration::new("Shop", 8491);
        registration.post_logout_redirect_uris = vec!["http://127.0.0.1:8491/logged-out".into()];
        let rp = register_rp(&app, &metadata, registration).await;
        let browser = Browser::new(&app);
        let (response, _) =
            full_sign_in(&app, &rp, &browser, "bye@example.com", &["offline_access"]).await;
        let id_token = response.id_token().expect("ID token").clone();
        let refresh = response.refresh_token().expect("refresh token").clone();
        let end_session = rp
            .metadata
            .additional_metadata()
            .end_session_endpoint
            .clone()
            .expect("end_session_endpoint");

        // An unregistered post_logout_redirect_uri: an error page, nothing ended.
        let bad = LogoutRequest::from(end_session.clone())
            .set_id_token_hint(&id_token)
            .set_post_logout_redirect_uri(
                PostLogoutRedirectUrl::new("http://127.0.0.1:8491/elsewhere".into()).expect("URL"),
            )
            .set_state(CsrfToken::new("xyz".into()))
            .http_get_url();
        match browser.open(bad.as_str()).await {
            Landing::Page { status, .. } => assert_eq!(status, 400),
            other => panic!("expected a 400 page, got {other:?}"),
        }
        assert_eq!(browser.account().await.0, 200, "still signed in");
        let refresh = rp
            .refresh(&refresh)
            .await
            .expect("refresh still works")
            .refresh_token()
            .expect("rotated")
            .clone();

        // The registered one: ended, and back to the client with its state.
        let good = LogoutRequest::from(end_session)
            .set_id_token_hint(&id_token)
            .set_post_logout_redirect_uri(
                PostLogoutRedirectUrl::new("http://127.0.0.1:8491/logged-out".into()).expect("URL"),
            )
            .set_state(CsrfToken::new("xyz".into()))
            .http_get_url();
        let back = browser.open(good.as_str()).await.callback();
        assert_eq!(back.endpoint(), "http://127.0.0.1:8491/logged-out");
        assert_eq!(back.get("state"), Some("xyz"));
        assert_eq!(
            browser.account().await.0,
            401,
            "the Latchkey session is gone"
        );
        assert_invalid_grant(rp.refresh(&refresh).await, "refresh after logout");
    }
);

backend_test!(
    logout_without_id_token_hint_needs_a_csrf_protected_confirmation,
    |app: TestApp| async move {
        app.create_user("confirm@example.com", PASSWORD, &[]).await;
        let metadata = discover(&app).await;
        let mut registration = Registration::new("Forum", 8501);
        registration.post_logout_redirect_uris = vec!["http://127.0.0.1:8501/bye".into()];
        let rp = register_rp(&app, &metadata, registration).await;
        let browser = Browser::new(&app);
        full_sign_in(&app, &rp, &browser, "confirm@example.com", &[]).await;

        let url = format!(
            "{}?client_id={}&post_logout_redirect_uri={}&state=abc",
            app.url("/oauth2/logout"),
            rp.id,
            url::form_urlencoded::byte_serialize(b"http://127.0.0.1:8501/bye").collect::<String>()
        );
        let Landing::Page { status, html, .. } = browser.open(&url).await else {
            panic!("a confirmation page");
        };
        assert_eq!(status, 200);
        assert!(html.contains("action=\"/oauth2/logout\""));
        assert!(html.contains("Forum"), "names the client asking");
        let csrf = input(&html, "csrf_token");
        assert_eq!(browser.account().await.0, 200, "a GET ends nothing");

        // A cross-site POST (no token, or a wrong one) ends nothing.
        for token in [None, Some("forged")] {
            let mut form = vec![
                ("confirm", "yes".to_owned()),
                ("client_id", rp.id.clone()),
                (
                    "post_logout_redirect_uri",
                    "http://127.0.0.1:8501/bye".to_owned(),
                ),
                ("state", "abc".to_owned()),
            ];
            if let Some(t) = token {
                form.push(("csrf_token", t.to_owned()));
            }
            let response = browser
                .http
                .post(app.url("/oauth2/logout"))
                .form(&form)
                .send()
                .await
                .expect("POST logout");
            assert_ne!(response.status(), 303, "not signed out ({token:?})");
            assert_eq!(
                browser.account().await.0,
                200,
                "still signed in ({token:?})"
            );
        }

        // The page's own form: signed out, back at the client with its state.
        let form: Vec<(&str, String)> =
            ["confirm", "client_id", "post_logout_redirect_uri", "state"]
                .into_iter()
                .map(|name| (name, input(&html, name)))
                .chain([("csrf_token", csrf)])
                .collect();
        let url = Url::parse(&app.url("/oauth2/logout")).expect("URL");
        let response = browser
            .http
            .post(url.clone())
            .form(&form)
            .send()
            .await
            .expect("POST logout");
        let back = browser.land(url, response).await.callback();
        assert_eq!(back.endpoint(), "http://127.0.0.1:8501/bye");
        assert_eq!(back.get("state"), Some("abc"));
        assert_eq!(browser.account().await.0, 401, "signed out");
    }
);

backend_test!(
    logout_refuses_an_access_token_as_id_token_hint,
    |app: TestApp| async move {
        app.create_user("hint@example.com", PASSWORD, &[]).await;
        let metadata = discover(&app).await;
        let rp = register_rp(&app, &metadata, Registration::new("Wiki", 8521)).await;
        let browser = Browser::new(&app);
        let (response, _) = full_sign_in(&app, &rp, &browser, "hint@example.com", &[]).await;
        // A JWT access token is signed by the same keys and carries the same
        // `aud` and `sid`, but it is not an ID token (typ at+jwt): it must not
        // confirm a logout (whoever holds it — an API — is not the user).
        let access_token = response.access_token().secret();
        let url = format!(
            "{}?id_token_hint={}",
            app.url("/oauth2/logout"),
            url::form_urlencoded::byte_serialize(access_token.as_bytes()).collect::<String>()
        );
        match browser.open(&url).await {
            Landing::Page { status, .. } => assert_eq!(status, 400),
            other => panic!("expected a 400 page, got {other:?}"),
        }
        assert_eq!(browser.account().await.0, 200, "still signed in");
    }
);

// ------------------------------------------------------------ back-channel logout

/// A relying party's back-channel logout endpoint: records what is POSTed
/// (the Content-Type and the form) and answers 200.
async fn logout_receiver() -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(String, HashMap<String, String>)>,
) {
    use axum::http::HeaderMap;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let router = axum::Router::new().route(
        "/backchannel-logout",
        axum::routing::post(
            move |headers: HeaderMap, axum::Form(form): axum::Form<HashMap<String, String>>| {
                let tx = tx.clone();
                async move {
                    let content_type = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send((content_type, form));
                    axum::http::StatusCode::OK
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let addr = listener.local_addr().expect("receiver address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (format!("http://{addr}/backchannel-logout"), rx)
}

/// Verifies a logout token with `jsonwebtoken` against the JWKS: key by
/// `kid`, algorithm from the key, `iss`, `aud`; returns the claims.
fn verify_logout_token(token: &str, jwks: &Value, issuer: &str, audience: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).expect("JOSE header");
    assert_eq!(
        header.typ.as_deref(),
        Some("logout+jwt"),
        "Back-Channel Logout §2.4 typ"
    );
    let kid = header.kid.expect("kid");
    let published = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("the signing key is published");
    let alg = match published["alg"].as_str() {
        Some("ES256") => jsonwebtoken::Algorithm::ES256,
        Some("EdDSA") => jsonwebtoken::Algorithm::EdDSA,
        Some("RS256") => jsonwebtoken::Algorithm::RS256,
        other => panic!("unexpected JWK alg {other:?}"),
    };
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(published.clone()).expect("JWK");
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("decoding key");
    let mut validation = jsonwebtoken::Validation::new(alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["iss", "aud", "iat", "sub"]);
    // Time is the test's clock, checked below, not the wall clock.
    validation.validate_exp = false;
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .unwrap_or_else(|e| panic!("jsonwebtoken rejected the logout token: {e}"))
        .claims
}

backend_test!(
    signing_out_sends_a_verifiable_logout_token_to_the_back_channel,
    |app: TestApp| async move {
        let user = app.create_user("bc@example.com", PASSWORD, &[]).await;
        let (receiver_uri, mut deliveries) = logout_receiver().await;
        let metadata = discover(&app).await;
        let mut registration = Registration::new("Dashboard", 8511);
        registration.backchannel_logout_uri = Some(receiver_uri);
        let rp = register_rp(&app, &metadata, registration).await;
        let browser = Browser::new(&app);
        let (_, id) = full_sign_in(&app, &rp, &browser, "bc@example.com", &[]).await;
        let handle = browser.session_handle().await;
        assert_eq!(id.sid, handle);

        let (_, account) = browser.account().await;
        let csrf = account["csrf_token"].as_str().expect("csrf_token");
        let response = browser
            .http
            .post(app.url("/logout"))
            .form(&[("csrf_token", csrf)])
            .send()
            .await
            .expect("POST /logout");
        assert_eq!(response.status(), 303);
        assert_eq!(browser.account().await.0, 401);
        let signed_out_at = app.clock.now_secs();

        // Delivery runs in the background: wait for it (bounded), not for a time.
        let (content_type, form) = tokio::time::timeout(Duration::from_secs(20), deliveries.recv())
            .await
            .expect("a logout token is delivered")
            .expect("receiver open");
        assert!(content_type.starts_with("application/x-www-form-urlencoded"));
        let token = form.get("logout_token").expect("logout_token parameter");
        let (jwks, _) = fetch_jwks(&app).await;
        let claims = verify_logout_token(token, &jwks, &app.base, &rp.id);
        assert_eq!(claims["sid"], handle.as_str());
        assert_eq!(claims["sub"], user.id.as_str());
        assert!(
            claims["events"][BACKCHANNEL_EVENT].is_object(),
            "events: {}",
            claims["events"]
        );
        assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
        let iat = claims["iat"].as_i64().expect("iat");
        assert!(
            iat <= signed_out_at && iat >= signed_out_at - 5,
            "iat {iat}"
        );
        if let Some(exp) = claims["exp"].as_i64() {
            assert!(exp > signed_out_at, "not already expired");
        }
        assert!(claims.get("nonce").is_none(), "a logout token has no nonce");
        assert!(
            deliveries.try_recv().is_err(),
            "one token for one client and session"
        );
    }
);

// ------------------------------------------------------------ ID token algorithms

/// The `alg` of a JWS's protected header.
fn header_alg(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .map(|h| format!("{:?}", h.alg))
        .expect("JOSE header")
}

/// An RP that configured nothing about algorithms: `openidconnect`'s own
/// default, which accepts RS256 only (OIDC Core §15.1 makes RS256 the one
/// algorithm every OP must support), with the JWKS from discovery.
fn unconfigured_verifier(rp: &Rp) -> openidconnect::core::CoreIdTokenVerifier<'static> {
    openidconnect::core::CoreIdTokenVerifier::new_confidential_client(
        ClientId::new(rp.id.clone()),
        ClientSecret::new(rp.secret.clone().expect("a confidential RP")),
        rp.metadata.issuer().clone(),
        rp.metadata.jwks().clone(),
    )
}

backend_test!(
    id_tokens_are_rs256_by_default_and_verify_in_an_rp_that_configured_no_algorithm,
    |app: TestApp| async move {
        create_named_user(&app, "rsa@example.com", "Ronald Rivest").await;
        let metadata = discover(&app).await;
        let advertised: Vec<String> = metadata
            .id_token_signing_alg_values_supported()
            .iter()
            .map(|a| format!("{a:?}"))
            .collect();
        assert!(
            advertised.iter().any(|a| a == "RsaSsaPkcs1V15Sha256"),
            "Discovery §3: RS256 MUST be listed: {advertised:?}"
        );
        let rp = register_rp(&app, &metadata, Registration::new("Ledger", 8601)).await;
        let browser = Browser::new(&app);
        let pending = rp.authorize(&["email"], |r| r);
        let login = browser.open(pending.url.as_str()).await.login_page();
        let callback = match browser.sign_in(&login, "rsa@example.com").await {
            Landing::Consent(html) => browser.decide(&html, "allow").await.callback(),
            other => other.callback(),
        };
        let response = rp
            .exchange(callback.require("code"), pending.verifier)
            .await
            .expect("code redeemed");
        let id_token = response.id_token().expect("an ID token");
        assert_eq!(header_alg(&id_token.to_string()), "RS256");
        // Access tokens keep the deployment's default algorithm.
        assert_eq!(header_alg(response.access_token().secret()), "ES256");
        let claims = id_token
            .claims(&unconfigured_verifier(&rp), &pending.nonce)
            .unwrap_or_else(|e| panic!("an RS256-only RP rejected the ID token: {e:?}"));
        assert_eq!(
            claims.email().map(|e| e.to_string()).as_deref(),
            Some("rsa@example.com")
        );
        // at_hash and the rest, with the discovered algorithms.
        rp.verify_id_token(&response, &pending.nonce);
    }
);

backend_test!(
    a_client_picks_its_id_token_algorithm_with_id_token_signed_response_alg,
    config = |c: &mut latchkey::Config| {
        c.tokens.additional_algorithms = vec!["EdDSA".into()];
    },
    |app: TestApp| async move {
        create_named_user(&app, "ec@example.com", "Neal Koblitz").await;
        let metadata = discover(&app).await;
        for (i, alg) in ["ES256", "EdDSA", "RS256"].into_iter().enumerate() {
            let mut registration = Registration::new("Curves", 8611 + i as u16);
            registration.id_token_alg = Some(alg);
            let rp = register_rp(&app, &metadata, registration).await;
            let browser = Browser::new(&app);
            let pending = rp.authorize(&[], |r| r);
            let login = browser.open(pending.url.as_str()).await.login_page();
            let callback = match browser.sign_in(&login, "ec@example.com").await {
                Landing::Consent(html) => browser.decide(&html, "allow").await.callback(),
                other => other.callback(),
            };
            let response = rp
                .exchange(callback.require("code"), pending.verifier)
                .await
                .expect("code redeemed");
            let id_token = response.id_token().expect("an ID token").to_string();
            assert_eq!(header_alg(&id_token), alg, "{alg} chosen");
            assert_eq!(
                header_alg(response.access_token().secret()),
                "ES256",
                "the ID token's algorithm does not change the access token's"
            );
            // openidconnect verifies it with the algorithms discovery lists ...
            rp.verify_id_token(&response, &pending.nonce);
            // ... and an RS256-only RP accepts exactly the RS256 one.
            let parsed: LatchkeyIdToken = id_token.parse().expect("ID token parses");
            assert_eq!(
                parsed
                    .claims(&unconfigured_verifier(&rp), &pending.nonce)
                    .is_ok(),
                alg == "RS256",
                "{alg}"
            );
        }
    }
);
