//! `Email`: an address that has been parsed and normalized.

use std::fmt;

/// A normalized email address: trimmed and lower-cased, so uniqueness is
/// case-insensitive. Holding one proves the text passed [`Email::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Email(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct EmailError(&'static str);

impl Email {
    pub fn parse(raw: &str) -> Result<Email, EmailError> {
        let text = raw.trim();
        if text.is_empty() {
            return Err(EmailError("enter an email address"));
        }
        if text.len() > 254 {
            return Err(EmailError("an email address has at most 254 characters"));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(EmailError(
                "an email address cannot contain spaces or control characters",
            ));
        }
        let Some((local, domain)) = text.rsplit_once('@') else {
            return Err(EmailError("an email address needs an @"));
        };
        if local.is_empty() || local.len() > 64 || local.contains('@') {
            return Err(EmailError("the part before the @ is not valid"));
        }
        if domain.is_empty()
            || domain.starts_with('.')
            || domain.ends_with('.')
            || domain.contains("..")
            || !domain
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '.')
        {
            return Err(EmailError("the domain after the @ is not valid"));
        }
        Ok(Email(text.to_lowercase()))
    }

    /// Wraps a value read back from our own database (already normalized).
    pub(crate) fn from_stored(text: String) -> Email {
        Email(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_and_whitespace() {
        assert_eq!(
            Email::parse("  Ada@Example.COM ").map(|e| e.0),
            Ok("ada@example.com".into())
        );
        assert!(Email::parse("admin@localhost").is_ok());
    }

    #[test]
    fn rejects_malformed_addresses() {
        for bad in [
            "",
            "plain",
            "@x.com",
            "a@",
            "a b@x.com",
            "a@x..com",
            "a@.x.com",
            "a@x.com.",
            "a@b@c",
            "a@x\u{0}.com",
            "a@<x>.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Email::parse(&format!("{}@x.com", "a".repeat(65))).is_err());
        assert!(Email::parse(&format!("a@{}.com", "b".repeat(260))).is_err());
    }
}
