//! `Scope`: a parsed set of RFC 6749 scope tokens, shared by `oauth`,
//! `tokens`, `oidc` and the grants (its own module, so `tokens` needs no
//! `oauth` for it).

use std::collections::BTreeSet;
use std::fmt;

/// A set of scope tokens (RFC 6749 §3.3: printable ASCII except space, `"`
/// and `\`). Order and duplicates in the input do not matter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope(BTreeSet<String>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope token {0:?} is not valid (RFC 6749 §3.3)")]
pub struct ScopeError(pub String);

impl Scope {
    pub fn parse(text: &str) -> Result<Scope, ScopeError> {
        let mut set = BTreeSet::new();
        for token in text.split(' ').filter(|t| !t.is_empty()) {
            if token.len() > 128
                || !token
                    .bytes()
                    .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
            {
                return Err(ScopeError(token.chars().take(40).collect()));
            }
            set.insert(token.to_owned());
        }
        if set.len() > 64 {
            return Err(ScopeError("(more than 64 scopes)".into()));
        }
        Ok(Scope(set))
    }

    /// For values read back from our own database.
    pub(crate) fn from_stored(text: &str) -> Scope {
        Scope(
            text.split(' ')
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    pub fn contains(&self, token: &str) -> bool {
        self.0.contains(token)
    }

    pub fn is_subset(&self, other: &Scope) -> bool {
        self.0.is_subset(&other.0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// The tokens of `self` that `allowed` also has.
    pub fn intersect(&self, allowed: &Scope) -> Scope {
        Scope(self.0.intersection(&allowed.0).cloned().collect())
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let joined: Vec<&str> = self.iter().collect();
        f.write_str(&joined.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_normalizes_and_rejects() {
        assert_eq!(
            Scope::parse("b a  b").map(|s| s.to_string()),
            Ok("a b".into())
        );
        assert!(Scope::parse("ok bad\"quote").is_err());
        assert!(Scope::parse("back\\slash").is_err());
        assert!(Scope::parse("tab\there").is_err());
        assert!(Scope::parse("é").is_err());
        let small = Scope::parse("read").expect("scope");
        let big = Scope::parse("read write").expect("scope");
        assert!(small.is_subset(&big) && !big.is_subset(&small));
        assert_eq!(big.intersect(&small), small);
    }
}
