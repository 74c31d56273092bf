//! Who the client is, from a request's `Authorization` header and
//! parameters: HTTP Basic (`client_secret_basic`), `client_secret_post`,
//! `private_key_jwt` (RFC 7523), or a public client's bare `client_id`.
//! Exactly one method per request: two are `invalid_request`.
//!
//! Owns: reading the credentials out of the request. The checks themselves
//! (secret hashes, assertion signatures and `jti` replay) are
//! `oauth::clients`.
//!
//! Must not: look at anything but the `Authorization` value and the
//! parameters, or rate-limit (the handler does, per authenticated client).

use base64::Engine as _;

use super::Params;
use crate::core::Core;
use crate::oauth::clients::{self, Client, ClientCredentials};
use crate::oauth::{OAuthError, OAuthErrorCode};

/// RFC 7523 §2.2's `client_assertion_type`.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Authenticates the client of a request to `endpoint` (its path, e.g.
/// `/oauth2/token`: a client assertion may name it as its audience).
/// `authorization` is the request's `Authorization` header value, if any.
pub async fn authenticate(
    state: &Core,
    authorization: Option<&str>,
    params: &Params,
    endpoint: &str,
) -> Result<Client, OAuthError> {
    if let Some(assertion_type) = params.get("client_assertion_type") {
        if assertion_type != JWT_BEARER_ASSERTION {
            return Err(OAuthError::invalid_request(format!(
                "client_assertion_type must be {JWT_BEARER_ASSERTION}"
            )));
        }
        if params.get("client_secret").is_some() || authorization.is_some() {
            return Err(OAuthError::invalid_request(
                "use one client authentication method, not two",
            ));
        }
        let assertion = params.require("client_assertion")?;
        let issuer = state.config.issuer_str();
        let ctx = clients::AssertionContext {
            audiences: vec![issuer.to_owned(), format!("{issuer}{endpoint}")],
            now: state.clock.now(),
            leeway_secs: state.config.tokens.leeway_secs,
            pool: &state.pool,
        };
        let client = clients::authenticate_assertion(assertion, &ctx).await?;
        if params.get("client_id").is_some_and(|id| id != client.id) {
            return Err(OAuthError::invalid_request(
                "client_id differs from the client assertion",
            ));
        }
        return Ok(client);
    }
    let creds = credentials(authorization, params)?;
    Ok(clients::authenticate(&state.pool, &creds).await?)
}

/// Reads client credentials from HTTP Basic or the parameters (never both).
fn credentials(
    authorization: Option<&str>,
    params: &Params,
) -> Result<ClientCredentials, OAuthError> {
    let basic = authorization.and_then(|v| {
        let (scheme, rest) = v.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("basic")
            .then(|| rest.trim().to_owned())
    });
    let form_secret = params.get("client_secret");
    match (basic, form_secret) {
        (Some(_), Some(_)) => Err(OAuthError::invalid_request(
            "use one client authentication method, not two",
        )),
        (Some(encoded), None) => {
            let invalid = || OAuthError {
                code: OAuthErrorCode::InvalidClient,
                description: "malformed Basic credentials".into(),
                via_basic: true,
                extension: None,
                retry_after: None,
            };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| invalid())?;
            let text = String::from_utf8(decoded).map_err(|_| invalid())?;
            let (id, secret) = text.split_once(':').ok_or_else(invalid)?;
            // RFC 6749 §2.3.1: both parts are form-urlencoded.
            let decode = |s: &str| {
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            let client_id = decode(id);
            if params.get("client_id").is_some_and(|f| f != client_id) {
                return Err(OAuthError::invalid_request(
                    "client_id in the form differs from the Basic credentials",
                ));
            }
            Ok(ClientCredentials::Secret {
                client_id,
                secret: decode(secret),
                via_basic: true,
            })
        }
        (None, Some(secret)) => Ok(ClientCredentials::Secret {
            client_id: params.require("client_id")?.to_owned(),
            secret: secret.to_owned(),
            via_basic: false,
        }),
        (None, None) => match params.get("client_id") {
            Some(id) => Ok(ClientCredentials::PublicId {
                client_id: id.to_owned(),
            }),
            None => Err(OAuthError::new(
                OAuthErrorCode::InvalidClient,
                "client authentication is required",
            )),
        },
    }
}
