//! `Role`: a validated role name such as `admin` or `billing:read`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Role(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("role {0:?} is not valid: use 1-64 characters from a-z, 0-9, '_', '-', ':' and '.'")]
pub struct RoleError(pub String);

impl Role {
    pub const ADMIN: &'static str = "admin";

    pub fn parse(raw: &str) -> Result<Role, RoleError> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'_' | b'-' | b':' | b'.')
            });
        if ok {
            Ok(Role(raw.to_owned()))
        } else {
            Err(RoleError(raw.to_owned()))
        }
    }

    pub(crate) fn from_stored(text: String) -> Role {
        Role(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_simple_names_and_rejects_others() {
        assert!(Role::parse("admin").is_ok());
        assert!(Role::parse("billing:read").is_ok());
        for bad in ["", "Admin", "a b", "x'--", &"a".repeat(65)] {
            assert!(Role::parse(bad).is_err(), "{bad:?}");
        }
    }
}
