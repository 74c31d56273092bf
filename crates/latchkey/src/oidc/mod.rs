//! OpenID Connect: ID tokens, claims by scope, discovery metadata.
//!
//! Owns: which claims each scope releases ([`SCOPE_CLAIMS`]: `profile` →
//! `name`; `email` → `email`, `email_verified`; `address` and `phone` nothing:
//! Latchkey holds no postal address or phone number, and an OpenID Connect
//! request ignores them like any scope its client is not registered for —
//! `oauth::authorize::granted_scope`), the ID token's shape (OIDC Core §2, with
//! `at_hash`, `auth_time`, `amr`, `acr`, `sid`, `nonce`), and the metadata
//! document, derived from the configuration and the lists the code enforces
//! (grants, response types and modes, prompts, PKCE methods, client
//! authentication methods and their algorithms, signing keys).
//!
//! Must not: decide who is signed in or issue codes.

pub mod backchannel;

use latchkey_verify::jose::{self, Algorithm, KeySet, Validation};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256, Sha512};

use crate::clock::UnixTime;
use crate::core::Core;
use crate::crypto::b64url;
use crate::identity::User;
use crate::oauth::clients::Client;
use crate::scope::Scope;
use crate::tokens::TokenError;

/// ID tokens live one hour (they prove a sign-in; they are not API credentials).
pub const ID_TOKEN_LIFETIME_SECS: i64 = 3600;

/// Authentication context class for a password-only sign-in. Multi-factor
/// sign-ins (issue #4) will report a higher level.
pub const ACR_SINGLE_FACTOR: &str = "urn:latchkey:acr:1fa";
/// Authentication context class for a multi-factor sign-in (`amr` has `mfa`);
/// the SDK's constant, so APIs and the server agree.
pub const ACR_MULTI_FACTOR: &str = latchkey_verify::claims::ACR_MULTI_FACTOR;

/// The `acr` a sign-in with these `amr` values achieved.
pub fn acr_for(amr: &[String]) -> &'static str {
    if crate::policy::is_multi_factor(amr) {
        ACR_MULTI_FACTOR
    } else {
        ACR_SINGLE_FACTOR
    }
}

/// Claims released for `scope` (used by ID tokens and UserInfo).
pub fn user_claims(user: &User, scope: &Scope) -> Map<String, Value> {
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(user.id));
    if scope.contains("profile") {
        if !user.display_name.is_empty() {
            claims.insert("name".into(), json!(user.display_name));
        }
        claims.insert("updated_at".into(), json!(user.updated_at));
    }
    if scope.contains("email") {
        claims.insert("email".into(), json!(user.email.as_str()));
        claims.insert("email_verified".into(), json!(user.email_verified));
    }
    claims
}

/// OIDC Core §3.1.3.6: left half of the hash of the access token, the hash
/// matching the signing algorithm (SHA-512 for Ed25519, as OIDC RPs expect).
pub fn at_hash(alg: Algorithm, access_token: &str) -> String {
    match alg {
        Algorithm::EdDSA => {
            let digest = Sha512::digest(access_token.as_bytes());
            b64url(&digest[..32])
        }
        _ => {
            let digest = Sha256::digest(access_token.as_bytes());
            b64url(&digest[..16])
        }
    }
}

pub struct IdTokenSpec<'a> {
    pub client: &'a Client,
    pub user: &'a User,
    pub scope: &'a Scope,
    pub nonce: Option<&'a str>,
    pub auth_time: i64,
    pub amr: &'a [String],
    pub session_id: &'a str,
    pub access_token: Option<&'a str>,
}

pub fn issue_id_token(state: &Core, spec: IdTokenSpec<'_>) -> Result<String, TokenError> {
    let now = state.clock.now();
    let alg = state
        .keys
        .id_token_algorithm(spec.client.id_token_algorithm());
    let mut claims = user_claims(spec.user, spec.scope);
    claims.insert("iss".into(), json!(state.config.issuer_str()));
    claims.insert("aud".into(), json!(spec.client.id));
    claims.insert("exp".into(), json!(now + ID_TOKEN_LIFETIME_SECS));
    claims.insert("iat".into(), json!(now));
    claims.insert("auth_time".into(), json!(spec.auth_time));
    claims.insert("sid".into(), json!(spec.session_id));
    claims.insert("amr".into(), json!(spec.amr));
    claims.insert("acr".into(), json!(acr_for(spec.amr)));
    if let Some(nonce) = spec.nonce {
        claims.insert("nonce".into(), json!(nonce));
    }
    if let Some(token) = spec.access_token {
        claims.insert("at_hash".into(), json!(at_hash(alg, token)));
    }
    let key = state.keys.signing_key(alg, now)?;
    Ok(key.sign("JWT", &Value::Object(claims))?)
}

/// What a verified `id_token_hint` says: one of our own ID tokens, expired
/// ones included (OIDC Core §3.1.2.1 and RP-Initiated Logout §2 pass
/// earlier ID tokens back as hints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdTokenHint {
    /// The user it names.
    pub subject: String,
    /// Its (first) audience: the client it was issued to.
    pub client_id: String,
    /// The session it was issued in.
    pub sid: Option<String>,
}

/// Verifies `token` as one of our ID tokens, for use as a hint. Only an ID
/// token (`typ: JWT`) counts: an access token (`at+jwt`) or a logout token
/// carries the same `iss`, `aud` and `sid` but proves nothing about the user.
pub fn verify_id_token_hint(
    keys: &KeySet,
    issuer: &str,
    token: &str,
    now: UnixTime,
) -> Option<IdTokenHint> {
    let validation = Validation {
        // Expired hints are fine; the signature and the issuer are what count.
        leeway_secs: 10 * 365 * 86_400,
        typ: Some("JWT".into()),
        ..Validation::new(issuer)
    };
    let verified = jose::verify::<Value>(token, keys, &validation, now).ok()?;
    let client_id = match &verified.claims["aud"] {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.first()?.as_str()?.to_owned(),
        _ => return None,
    };
    Some(IdTokenHint {
        subject: verified.claims["sub"].as_str()?.to_owned(),
        client_id,
        sid: verified.claims["sid"].as_str().map(str::to_owned),
    })
}

/// The scopes whose meaning this server implements, and the user claims
/// each releases ([`user_claims`], which the discovery test holds to this table).
pub const SCOPE_CLAIMS: &[(&str, &[&str])] = &[
    ("openid", &["sub"]),
    ("profile", &["name", "updated_at"]),
    ("email", &["email", "email_verified"]),
    ("offline_access", &[]),
];

/// The claims of an ID token besides the user's ([`issue_id_token`]).
pub const ID_TOKEN_CLAIMS: &[&str] = &[
    "iss",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "acr",
    "amr",
    "sid",
    "at_hash",
];

/// `/.well-known/openid-configuration` and (the same document)
/// `/.well-known/oauth-authorization-server`, derived from the configuration
/// and from the lists the code itself enforces — so it advertises exactly
/// what works (proved value by value by the `discovery` tests).
pub fn metadata(state: &Core) -> Value {
    use crate::oauth::authorize::{ResponseMode, PROMPT_VALUES, RESPONSE_TYPES};
    use crate::oauth::clients::{self, AuthMethod};
    let issuer = state.config.issuer_str();
    // ID tokens are signed with the asymmetric keys the deployment keeps
    // (configuration); RS256, their default, is always among them.
    let id_token_algs: Vec<&str> =
        crate::oauth::clients::id_token_algorithms(state.keys.algorithms())
            .map(Algorithm::as_str)
            .collect();
    let auth_methods: Vec<&str> = AuthMethod::ALL.iter().map(|m| m.as_str()).collect();
    let confidential_methods: Vec<&str> = AuthMethod::ALL
        .iter()
        .filter(|m| m.is_confidential())
        .map(|m| m.as_str())
        .collect();
    let assertion_algs: Vec<&str> = clients::assertion_algorithms()
        .map(Algorithm::as_str)
        .collect();
    let scopes: Vec<&str> = SCOPE_CLAIMS.iter().map(|(scope, _)| *scope).collect();
    let mut claims: Vec<&str> = Vec::new();
    for claim in SCOPE_CLAIMS
        .iter()
        .flat_map(|(_, claims)| claims.iter())
        .chain(ID_TOKEN_CLAIMS)
    {
        if !claims.contains(claim) {
            claims.push(claim);
        }
    }
    let response_modes: Vec<&str> = ResponseMode::ALL.iter().map(|m| m.as_str()).collect();
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/oauth2/authorize"),
        "token_endpoint": format!("{issuer}/oauth2/token"),
        "userinfo_endpoint": format!("{issuer}/oauth2/userinfo"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "revocation_endpoint": format!("{issuer}/oauth2/revoke"),
        "introspection_endpoint": format!("{issuer}/oauth2/introspect"),
        "end_session_endpoint": format!("{issuer}/oauth2/logout"),
        "device_authorization_endpoint": format!("{issuer}/oauth2/device_authorization"),
        // Not a registered metadata name: Latchkey's revocation feed (docs/revocation-feed.md).
        "revocation_feed_endpoint": format!("{issuer}/oauth2/revocations/stream"),
        "scopes_supported": scopes,
        "response_types_supported": RESPONSE_TYPES,
        "response_modes_supported": response_modes,
        "grant_types_supported": clients::GRANT_TYPES,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": id_token_algs,
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "introspection_endpoint_auth_methods_supported": confidential_methods,
        "introspection_endpoint_auth_signing_alg_values_supported": assertion_algs,
        "code_challenge_methods_supported": crate::oauth::pkce::METHODS,
        "claims_supported": claims,
        "prompt_values_supported": PROMPT_VALUES,
        "acr_values_supported": [ACR_SINGLE_FACTOR, ACR_MULTI_FACTOR],
        "authorization_response_iss_parameter_supported": true,
        // Request objects and the claims parameter are not implemented.
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "claims_parameter_supported": false,
        "frontchannel_logout_supported": false,
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_matches_the_oidc_example() {
        // OIDC Core §A.3 uses RS256: at_hash of "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y" is "77QmUPtjPfzWtF2AnpK9RQ".
        assert_eq!(
            at_hash(
                Algorithm::RS256,
                "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"
            ),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }
}
