//! Reading the bearer token of a request (RFC 6750 §2.1).
//!
//! Only the `Authorization: Bearer <token>` header carries a token: never a
//! query parameter or a form field (RFC 6750 §2.2–2.3 are not supported on
//! purpose: URLs end up in logs). The scheme is case-insensitive; the token
//! must be one `b64token`. Two `Authorization` headers, or a token with a
//! space in it, are a malformed request (400 `invalid_request`), not a
//! missing token.
//!
//! Must not: verify anything (that is [`Verifier`](crate::Verifier)).

use http::header::AUTHORIZATION;
use http::HeaderMap;

/// Why the `Authorization` header cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    /// More than one `Authorization` header.
    #[error("send one Authorization header")]
    Repeated,
    /// `Bearer` with no token, or a token that is not one RFC 6750 `b64token`.
    #[error("the Authorization header must be 'Bearer <token>'")]
    Malformed,
}

/// The bearer token of `headers`: `Ok(None)` when there is no
/// `Authorization` header or it uses another scheme (the request is then
/// simply unauthenticated).
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, BearerError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(BearerError::Repeated);
    }
    let value = value.to_str().map_err(|_| BearerError::Malformed)?;
    let (scheme, token) = match value.split_once(' ') {
        Some((scheme, token)) => (scheme, token),
        None => (value, ""),
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = token.trim_start_matches(' ');
    if !is_b64token(token) {
        return Err(BearerError::Malformed);
    }
    Ok(Some(token))
}

/// RFC 6750 §2.1: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(AUTHORIZATION, HeaderValue::from_str(v).expect("header"));
        }
        map
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_the_token_is_returned() {
        for header in [
            "Bearer abc.def-_~+/==",
            "bearer abc.def-_~+/==",
            "BEARER abc.def-_~+/==",
        ] {
            assert_eq!(
                bearer_token(&headers(&[header])),
                Ok(Some("abc.def-_~+/==")),
                "{header}"
            );
        }
    }

    #[test]
    fn missing_header_or_other_scheme_is_no_token() {
        assert_eq!(bearer_token(&headers(&[])), Ok(None));
        assert_eq!(bearer_token(&headers(&["Basic dXNlcjpwYXNz"])), Ok(None));
        assert_eq!(bearer_token(&headers(&["Token abc"])), Ok(None));
    }

    #[test]
    fn repeated_header_or_malformed_token_is_a_bad_request() {
        assert_eq!(
            bearer_token(&headers(&["Bearer a", "Bearer b"])),
            Err(BearerError::Repeated)
        );
        for bad in [
            "Bearer",
            "Bearer ",
            "Bearer a b",
            "Bearer a,b",
            "Bearer ===",
            "Bearer a\"b",
        ] {
            assert_eq!(
                bearer_token(&headers(&[bad])),
                Err(BearerError::Malformed),
                "{bad:?}"
            );
        }
    }
}
