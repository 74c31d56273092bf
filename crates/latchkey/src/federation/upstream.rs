//! The relying-party side of a federated sign-in, with the `openidconnect`
//! crate: discovery (the upstream's metadata and JWKS), the authorization
//! request (code flow, PKCE S256, `state`, `nonce`), the code exchange
//! (`client_secret_basic` or `client_secret_post`) and the ID token's
//! validation (signature with the upstream's JWKS, `iss`, `aud`, `exp`,
//! `nonce`).
//!
//! Every upstream HTTP call goes through [`call`]: no redirects, a timeout
//! (connection included), a size limit on the answer, and an address check
//! against server-side request forgery — the host is resolved once, every
//! address checked, and the connection pinned to the checked addresses (no
//! DNS rebinding between check and use). Loopback needs
//! `federation.allow_insecure_loopback` (which alone permits plain http),
//! private and link-local networks `federation.allow_private_networks`;
//! unspecified, multicast and broadcast addresses never.
//!
//! Must not: store anything, decide about accounts, know about HTTP
//! requests of our own (cookies, pages).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AuthType, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse as _,
};

use super::{AuthMethod, ProviderSpec};
use crate::config::Config;

/// Where and how upstream calls may go.
#[derive(Debug, Clone)]
pub struct UpstreamPolicy {
    pub allow_insecure_loopback: bool,
    pub allow_private_networks: bool,
    pub timeout: Duration,
    pub max_bytes: usize,
}

impl UpstreamPolicy {
    pub fn from_config(config: &Config) -> UpstreamPolicy {
        let f = &config.federation;
        UpstreamPolicy {
            allow_insecure_loopback: f.allow_insecure_loopback,
            allow_private_networks: f.allow_private_networks,
            timeout: Duration::from_secs(f.upstream_timeout_secs),
            max_bytes: f.upstream_max_bytes,
        }
    }

    /// May a connection go to `ip`?
    pub fn check_address(&self, ip: IpAddr) -> Result<(), UpstreamHttpError> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let refused = |why: &str| Err(UpstreamHttpError::Address(format!("{ip} is {why}")));
        if ip.is_unspecified() || ip.is_multicast() {
            return refused("not a unicast address");
        }
        if ip.is_loopback() {
            return if self.allow_insecure_loopback || self.allow_private_networks {
                Ok(())
            } else {
                refused("a loopback address (federation.allow_insecure_loopback)")
            };
        }
        let private = match ip {
            IpAddr::V4(v4) => {
                let [a, b, ..] = v4.octets();
                v4.is_private()
                    || v4.is_link_local()
                    || v4.is_broadcast()
                    || v4.is_documentation()
                    || a == 0
                    || (a == 100 && (64..128).contains(&b)) // shared address space, RFC 6598
                    || a >= 240
            }
            IpAddr::V6(v6) => {
                let first = v6.segments()[0];
                (first & 0xfe00) == 0xfc00 // unique local, RFC 4193
                    || (first & 0xffc0) == 0xfe80 // link local
                    || (first & 0xffc0) == 0xfec0 // site local (deprecated)
            }
        };
        if private && !self.allow_private_networks {
            return refused("a private or link-local address (federation.allow_private_networks)");
        }
        Ok(())
    }
}

/// Why an upstream HTTP call failed. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamHttpError {
    #[error("upstream URL refused: {0}")]
    Url(String),
    #[error("upstream address refused: {0}")]
    Address(String),
    #[error("upstream did not answer in time")]
    Timeout,
    #[error("upstream answer larger than {0} bytes (federation.upstream_max_bytes)")]
    TooLarge(usize),
    #[error("upstream unreachable: {0}")]
    Transport(String),
}

/// One upstream HTTP exchange, with every limit of the module header.
pub async fn call(
    policy: UpstreamPolicy,
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, UpstreamHttpError> {
    let url = url::Url::parse(&request.uri().to_string())
        .map_err(|e| UpstreamHttpError::Url(e.to_string()))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| UpstreamHttpError::Url("no port".into()))?;
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(ip.into(), port)],
        Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(ip.into(), port)],
        Some(url::Host::Domain(domain)) => {
            tokio::time::timeout(policy.timeout, tokio::net::lookup_host((domain, port)))
                .await
                .map_err(|_| UpstreamHttpError::Timeout)?
                .map_err(|e| UpstreamHttpError::Transport(format!("{domain}: {e}")))?
                .collect()
        }
        None => return Err(UpstreamHttpError::Url("no host".into())),
    };
    if addrs.is_empty() {
        return Err(UpstreamHttpError::Transport(
            "the host has no address".into(),
        ));
    }
    for addr in &addrs {
        policy.check_address(addr.ip())?;
    }
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_insecure_loopback && addrs.iter().all(|a| a.ip().is_loopback()) => {}
        other => {
            return Err(UpstreamHttpError::Url(format!(
                "{other}:// is refused: upstreams are https (plain http only on loopback with federation.allow_insecure_loopback)"
            )))
        }
    }
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(policy.timeout)
        .connect_timeout(policy.timeout)
        .no_proxy();
    if let Some(url::Host::Domain(domain)) = url.host() {
        builder = builder.resolve_to_addrs(domain, &addrs);
    }
    let client = builder
        .build()
        .map_err(|e| UpstreamHttpError::Transport(e.to_string()))?;
    let (parts, body) = request.into_parts();
    let mut response = client
        .request(parts.method, url.as_str())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                UpstreamHttpError::Timeout
            } else {
                UpstreamHttpError::Transport(error_chain(&e.without_url()))
            }
        })?;
    if response
        .content_length()
        .is_some_and(|n| n > policy.max_bytes as u64)
    {
        return Err(UpstreamHttpError::TooLarge(policy.max_bytes));
    }
    let status = response.status();
    let headers = response.headers().clone();
    let mut body = Vec::new();
    loop {
        let chunk = response.chunk().await.map_err(|e| {
            if e.is_timeout() {
                UpstreamHttpError::Timeout
            } else {
                UpstreamHttpError::Transport(error_chain(&e.without_url()))
            }
        })?;
        let Some(chunk) = chunk else { break };
        if body.len() + chunk.len() > policy.max_bytes {
            return Err(UpstreamHttpError::TooLarge(policy.max_bytes));
        }
        body.extend_from_slice(&chunk);
    }
    let mut out = openidconnect::http::Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(out)
}

/// Why a federated sign-in failed at the upstream. The text is safe to show.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("the provider's configuration could not be read: {0}")]
    Discovery(String),
    #[error("the provider refused the sign-in: {0}")]
    Refused(String),
    #[error("the provider's answer could not be redeemed: {0}")]
    Exchange(String),
    #[error("the provider's ID token was refused: {0}")]
    IdToken(String),
    #[error("the answer names issuer {got:?}, not this provider's")]
    WrongIssuer { got: String },
    #[error("the provider is misconfigured: {0}")]
    Spec(String),
}

/// What to send the browser to, and what to keep until it comes back.
pub struct AuthorizationRequest {
    pub url: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// The identity the upstream asserted, after every check.
#[derive(Debug, Clone)]
pub struct UpstreamIdentity {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: String,
    /// Every claim of the verified ID token (for the role mapping).
    pub claims: serde_json::Map<String, serde_json::Value>,
}

type DiscoveredClient = CoreClient<
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

async fn discover(
    policy: &UpstreamPolicy,
    spec: &ProviderSpec,
    secret: String,
    callback: &str,
) -> Result<DiscoveredClient, UpstreamError> {
    let http = |request: openidconnect::HttpRequest| call(policy.clone(), request);
    let issuer =
        IssuerUrl::new(spec.issuer.clone()).map_err(|e| UpstreamError::Spec(e.to_string()))?;
    // Also checks that the metadata's `issuer` is exactly the configured one.
    let metadata = CoreProviderMetadata::discover_async(issuer, &http)
        .await
        .map_err(|e| UpstreamError::Discovery(error_chain(&e)))?;
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(spec.client_id.clone()),
        Some(ClientSecret::new(secret)),
    )
    .set_redirect_uri(
        RedirectUrl::new(callback.to_owned()).map_err(|e| UpstreamError::Spec(e.to_string()))?,
    )
    .set_auth_type(match spec.auth_method {
        AuthMethod::ClientSecretBasic => AuthType::BasicAuth,
        AuthMethod::ClientSecretPost => AuthType::RequestBody,
    });
    Ok(client)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text.chars().take(300).collect()
}

/// Discovery, then the authorization URL with a fresh `nonce` and PKCE S256;
/// `state` is the caller's (it is bound to the browser there).
pub async fn authorization_request(
    config: &Config,
    spec: &ProviderSpec,
    secret: String,
    state: &str,
) -> Result<AuthorizationRequest, UpstreamError> {
    let policy = UpstreamPolicy::from_config(config);
    let callback = super::callback_url(config, &spec.name);
    let client = discover(&policy, spec, secret, &callback).await?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let nonce = Nonce::new_random();
    let state = state.to_owned();
    let nonce_value = nonce.secret().clone();
    let mut request = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            move || CsrfToken::new(state),
            move || nonce,
        )
        .set_pkce_challenge(challenge);
    for scope in &spec.scopes {
        request = request.add_scope(Scope::new(scope.clone()));
    }
    let (url, _, _) = request.url();
    Ok(AuthorizationRequest {
        url: url.to_string(),
        nonce: nonce_value,
        pkce_verifier: verifier.secret().clone(),
    })
}

/// The callback's part: RFC 9207 `iss` (when sent) must be the provider's
/// issuer; the code is redeemed with the PKCE verifier; the ID token must
/// verify (signature, `iss`, `aud`, `exp`) and carry our `nonce`.
pub async fn redeem(
    config: &Config,
    spec: &ProviderSpec,
    secret: String,
    code: &str,
    iss: Option<&str>,
    pkce_verifier: String,
    nonce: &str,
) -> Result<UpstreamIdentity, UpstreamError> {
    if let Some(iss) = iss {
        if iss != spec.issuer {
            return Err(UpstreamError::WrongIssuer {
                got: iss.chars().take(200).collect(),
            });
        }
    }
    let policy = UpstreamPolicy::from_config(config);
    let callback = super::callback_url(config, &spec.name);
    let client = discover(&policy, spec, secret, &callback).await?;
    let http = |request: openidconnect::HttpRequest| call(policy.clone(), request);
    let response = client
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .map_err(|e| UpstreamError::Discovery(e.to_string()))?
        .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier))
        .request_async(&http)
        .await
        .map_err(|e| match e {
            openidconnect::RequestTokenError::ServerResponse(r) => {
                UpstreamError::Refused(r.to_string().chars().take(300).collect())
            }
            other => UpstreamError::Exchange(error_chain(&other)),
        })?;
    let id_token = response
        .id_token()
        .ok_or_else(|| UpstreamError::IdToken("the token response has no ID token".into()))?;
    let verifier = client.id_token_verifier().set_allowed_algs([
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
        CoreJwsSigningAlgorithm::RsaSsaPssSha256,
        CoreJwsSigningAlgorithm::EcdsaP256Sha256,
        CoreJwsSigningAlgorithm::EcdsaP384Sha384,
        CoreJwsSigningAlgorithm::EdDsa,
    ]);
    let claims = id_token
        .claims(&verifier, &Nonce::new(nonce.to_owned()))
        .map_err(|e| UpstreamError::IdToken(error_chain(&e)))?;
    // The token verified: its payload can be read for the other claims.
    let raw = id_token.to_string();
    let all_claims = raw
        .split('.')
        .nth(1)
        .and_then(crate::crypto::b64url_decode)
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|v| v.as_object().cloned())
        .unwrap_or_default();
    let subject = claims.subject().as_str().to_owned();
    if subject.is_empty() || subject.len() > 255 {
        return Err(UpstreamError::IdToken(
            "`sub` must be 1-255 characters".into(),
        ));
    }
    let name = claims
        .name()
        .and_then(|n| n.get(None))
        .map(|n| n.as_str().chars().take(200).collect())
        .unwrap_or_default();
    Ok(UpstreamIdentity {
        subject,
        email: claims.email().map(|e| e.as_str().to_owned()),
        email_verified: claims.email_verified().unwrap_or(false),
        name,
        claims: all_claims,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(loopback: bool, private: bool) -> UpstreamPolicy {
        UpstreamPolicy {
            allow_insecure_loopback: loopback,
            allow_private_networks: private,
            timeout: Duration::from_secs(1),
            max_bytes: 4096,
        }
    }

    #[test]
    fn upstream_addresses_refuse_private_and_link_local_unless_allowed() {
        let strict = policy(false, false);
        for bad in [
            "127.0.0.1",
            "::1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:169.254.169.254",
            "::ffff:127.0.0.1",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            let ip: IpAddr = bad.parse().expect("ip");
            assert!(strict.check_address(ip).is_err(), "{bad}");
        }
        for good in ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"] {
            let ip: IpAddr = good.parse().expect("ip");
            assert!(strict.check_address(ip).is_ok(), "{good}");
        }
        let loopback = policy(true, false);
        assert!(loopback
            .check_address("127.0.0.1".parse().expect("ip"))
            .is_ok());
        assert!(loopback
            .check_address("10.0.0.1".parse().expect("ip"))
            .is_err());
        assert!(loopback
            .check_address("0.0.0.0".parse().expect("ip"))
            .is_err());
        let private = policy(false, true);
        assert!(private
            .check_address("10.0.0.1".parse().expect("ip"))
            .is_ok());
        assert!(private
            .check_address("169.254.169.254".parse().expect("ip"))
            .is_ok());
    }

    #[tokio::test]
    async fn upstream_calls_refuse_plain_http_and_metadata_addresses() {
        let request = |uri: &str| {
            openidconnect::http::Request::builder()
                .uri(uri)
                .body(Vec::new())
                .expect("request")
        };
        for (p, uri) in [
            (policy(false, false), "http://127.0.0.1:1/x"),
            (
                policy(false, false),
                "https://169.254.169.254/latest/meta-data",
            ),
            (policy(false, true), "http://10.0.0.1/x"),
            (policy(true, false), "https://10.0.0.1/x"),
        ] {
            let e = call(p, request(uri)).await.expect_err(uri);
            assert!(
                matches!(e, UpstreamHttpError::Address(_) | UpstreamHttpError::Url(_)),
                "{uri}: {e}"
            );
        }
    }
}
