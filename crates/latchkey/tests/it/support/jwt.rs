//! JWT and JWKS helpers: the published keys, a token's header and payload,
//! and verification with `jsonwebtoken` (an implementation nobody here wrote).

use reqwest::header::HeaderMap;
use serde_json::Value;

use latchkey_verify::jose;

use super::app::*;

/// `GET /.well-known/jwks.json` (must be 200): the set and the headers.
pub(crate) async fn fetch_jwks(app: &TestApp) -> (Value, HeaderMap) {
    let response = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("get jwks");
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    (response.json().await.expect("jwks json"), headers)
}

/// The decoded (unverified) JOSE header of a token.
pub(crate) fn jwt_header(token: &str) -> Value {
    segment(token, 0)
}

/// The decoded (unverified) claims of a token.
pub(crate) fn jwt_payload(token: &str) -> Value {
    segment(token, 1)
}

/// Verifies an access token as an independent resource server would: the
/// key is the JWKS entry named by `kid`, the algorithm is that key's (never
/// the token's), `typ`, `iss` and `aud` must match, and the token must be
/// valid at `now` (our clock; `jsonwebtoken` only knows the real one).
pub(crate) fn verify_independently(
    token: &str,
    jwks: &Value,
    issuer: &str,
    audience: &str,
    now: i64,
) -> Result<Value, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| format!("header: {e}"))?;
    if header.typ.as_deref() != Some("at+jwt") {
        return Err(format!("typ {:?}", header.typ));
    }
    let kid = header.kid.ok_or("no kid")?;
    let published = jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["kid"] == kid.as_str())
        .ok_or_else(|| format!("kid {kid} is not in the JWKS"))?;
    let alg = match published["alg"].as_str() {
        Some("ES256") => jsonwebtoken::Algorithm::ES256,
        Some("EdDSA") => jsonwebtoken::Algorithm::EdDSA,
        Some("RS256") => jsonwebtoken::Algorithm::RS256,
        other => return Err(format!("unexpected JWK alg {other:?}")),
    };
    let jwk: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(published.clone()).map_err(|e| format!("JWK: {e}"))?;
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|e| format!("JWK: {e}"))?;
    let mut validation = jsonwebtoken::Validation::new(alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "aud", "sub"]);
    validation.validate_exp = false;
    let data = jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map_err(|e| format!("jsonwebtoken: {e}"))?;
    let exp = data.claims["exp"].as_i64().ok_or("exp")?;
    let nbf = data.claims["nbf"].as_i64().ok_or("nbf")?;
    if now >= exp {
        return Err(format!("expired {}s ago", now - exp));
    }
    if now < nbf {
        return Err(format!("not valid for another {}s", nbf - now));
    }
    Ok(data.claims)
}

pub(crate) fn segment(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("a JWS segment");
    serde_json::from_slice(&jose::b64_decode(part).expect("base64url")).expect("JSON")
}
