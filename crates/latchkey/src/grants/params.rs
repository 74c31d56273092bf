//! The parameters of a token, revocation, introspection or device
//! authorization request: an `application/x-www-form-urlencoded` body in
//! which each parameter appears at most once (RFC 6749 §3.2; a duplicate is
//! `invalid_request`, never "last one wins").
//!
//! Owns: that parsing and the typed reads of it.
//!
//! Must not: authenticate anyone (that is [`super::client_auth`]).

use std::collections::BTreeMap;

use crate::oauth::{OAuthError, OAuthErrorCode};
use crate::scope::Scope;

/// A form body with each parameter at most once.
#[derive(Debug)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// Parses `body`, sent with the `Content-Type` value `content_type`.
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<Params, OAuthError> {
        if !content_type
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        {
            return Err(OAuthError::invalid_request(
                "send the parameters as application/x-www-form-urlencoded",
            ));
        }
        if std::str::from_utf8(body).is_err() {
            return Err(OAuthError::invalid_request("the body is not UTF-8"));
        }
        let mut map = BTreeMap::new();
        for (k, v) in url::form_urlencoded::parse(body) {
            if map.insert(k.to_string(), v.to_string()).is_some() {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {k} appears more than once"
                )));
            }
        }
        Ok(Params(map))
    }

    /// The parameter's value; an empty value counts as absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("missing parameter {name}")))
    }

    pub fn scope(&self) -> Result<Option<Scope>, OAuthError> {
        self.get("scope")
            .map(Scope::parse)
            .transpose()
            .map_err(|e| OAuthError::new(OAuthErrorCode::InvalidScope, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded; charset=UTF-8");

    #[test]
    fn a_duplicated_parameter_is_refused() {
        let e = Params::parse(FORM, b"grant_type=a&grant_type=a").expect_err("a duplicate");
        assert_eq!(e.code, OAuthErrorCode::InvalidRequest);
        assert!(e.description.contains("grant_type"), "{}", e.description);
    }

    #[test]
    fn only_form_bodies_in_utf8_are_read() {
        assert!(Params::parse(Some("application/json"), b"a=b").is_err());
        assert!(Params::parse(None, b"a=b").is_err());
        assert!(
            Params::parse(FORM, b"a=%FF").is_ok(),
            "percent-decoding is lossy, not refused"
        );
        assert!(Params::parse(FORM, &[b'a', b'=', 0xFF]).is_err());
    }

    #[test]
    fn an_empty_value_counts_as_absent() {
        let p = Params::parse(FORM, b"scope=&code=x").expect("a form");
        assert_eq!(p.get("scope"), None);
        assert!(p.require("scope").is_err());
        assert_eq!(p.require("code").expect("code"), "x");
    }
}
