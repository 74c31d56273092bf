//! `Email`: an address that has been parsed and normalized.
//!
//! Owns: the normal form of an address and the look-alike rules (issue #12).
//! Every way an address comes in — sign-in, the CLI, import, and later
//! sign-up and federation — goes through one of two constructors:
//!
//! - [`Email::parse`] for an address that will be **stored** (a new account,
//!   an imported one): normalized, then refused if it could pass for another
//!   address (mixed scripts, a copy of an ASCII name in another script,
//!   invisible or unusual characters);
//! - [`Email::for_lookup`] for an address that **finds** an existing
//!   account: normalized the same way but never refused, so an account stored
//!   before these rules still signs in (an unknown look-alike just finds
//!   nothing).
//!
//! The normal form is Unicode NFKC followed by full case folding (so
//! `ｇina@EXAMPLE.com`, `gina@example.com` and `GINA@example.com` are one
//! address, and `Straße` is `strasse`), with a punycode domain decoded to
//! Unicode (`xn--mller-kva.de` is `müller.de`). The rules are those of
//! Unicode TS #39 as implemented by the `unicode-security` crate (the one
//! rustc uses for its confusable-identifier lints), normalization and case
//! folding are ICU4X's, domains go through `idna` (UTS #46): no table here
//! is written by hand.
//!
//! Must not: know about storage; `identity::normalize_stored_emails` applies
//! the same normal form to rows written before it existed.

use std::fmt;

use unicode_security::{skeleton, RestrictionLevel, RestrictionLevelDetection as _};

/// A normalized email address: uniqueness is on this form. Holding one
/// proves the text passed [`Email::parse`] or [`Email::for_lookup`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Email(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct EmailError(&'static str);

impl Email {
    /// An address for a new or imported account: normalized, and refused if
    /// it could be mistaken for another address.
    pub fn parse(raw: &str) -> Result<Email, EmailError> {
        if raw.chars().any(is_invisible) {
            return Err(EmailError(
                "an email address cannot contain invisible characters (such as zero-width spaces)",
            ));
        }
        let email = Email::for_lookup(raw)?;
        let (local, domain) = email.parts();
        check_part(local)?;
        for label in domain.split('.') {
            check_part(label)?;
        }
        Ok(email)
    }

    /// An address typed to find an existing account (sign-in, the CLI): the
    /// same normal form as [`Email::parse`], without refusing look-alikes.
    pub fn for_lookup(raw: &str) -> Result<Email, EmailError> {
        let text = raw.trim();
        if text.is_empty() {
            return Err(EmailError("enter an email address"));
        }
        if text.len() > 1024 {
            return Err(EmailError("an email address has at most 254 characters"));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(EmailError(
                "an email address cannot contain spaces or control characters",
            ));
        }
        let text = normal_form(text);
        if text.len() > 254 {
            return Err(EmailError("an email address has at most 254 characters"));
        }
        let Some((local, domain)) = text.rsplit_once('@') else {
            return Err(EmailError("an email address needs an @"));
        };
        if local.is_empty() || local.len() > 64 || local.contains('@') {
            return Err(EmailError("the part before the @ is not valid"));
        }
        let domain = decode_domain(domain)?;
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
        Ok(Email(format!("{local}@{domain}")))
    }

    /// Wraps a value read back from our own database.
    pub(crate) fn from_stored(text: String) -> Email {
        Email(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The local part and the domain.
    fn parts(&self) -> (&str, &str) {
        self.0.rsplit_once('@').unwrap_or((&self.0, ""))
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, not `write_str`: `{:<32}` in a table must align.
        f.pad(&self.0)
    }
}

/// NFKC, full case folding, NFKC again (folding can undo the composition):
/// Unicode's `NFKC_Casefold` for every practical input.
pub fn normal_form(text: &str) -> String {
    let nfkc = icu_normalizer::ComposingNormalizerBorrowed::new_nfkc();
    let folded = icu_casemap::CaseMapper::new()
        .fold_string(&nfkc.normalize(text))
        .into_owned();
    nfkc.normalize(&folded).into_owned()
}

/// The domain in its Unicode form (punycode labels decoded, UTS #46 mapping).
fn decode_domain(domain: &str) -> Result<String, EmailError> {
    if domain.is_ascii() && !domain.split('.').any(|l| l.starts_with("xn--")) {
        return Ok(domain.to_owned());
    }
    match idna::domain_to_unicode(domain) {
        (decoded, Ok(())) => Ok(decoded),
        (_, Err(_)) => Err(EmailError(
            "the domain after the @ is not a valid internationalized domain name",
        )),
    }
}

/// Default-ignorable code points (zero-width spaces and joiners, bidi
/// controls, variation selectors): they change an address without changing
/// how it looks.
fn is_invisible(c: char) -> bool {
    icu_properties::CodePointSetData::new::<icu_properties::props::DefaultIgnorableCodePoint>()
        .contains(c)
}

/// One part of an address (the local part, or one domain label) that
/// contains anything but ASCII must be written in one script (TS #39
/// "highly restrictive": one script, or Latin with Han/Kana/Hangul), use
/// only characters TS #39 allows in identifiers, and must not be a copy of
/// an ASCII name in other letters (its confusable skeleton is ASCII).
fn check_part(part: &str) -> Result<(), EmailError> {
    if part.is_ascii() {
        return Ok(());
    }
    // ASCII punctuation (`.`, `+`, `-`, `_`) separates words; letters decide.
    let letters: String = part.chars().filter(|c| !c.is_ascii_punctuation()).collect();
    match letters.as_str().detect_restriction_level() {
        RestrictionLevel::Unrestricted => Err(EmailError(
            "the address contains a character that is not allowed in addresses here (a symbol, an invisible or an unusual character)",
        )),
        level if level > RestrictionLevel::HighlyRestrictive => Err(EmailError(
            "the address mixes scripts (such as Latin and Cyrillic letters) in one part, so it could look like another address",
        )),
        _ if skeleton(part).all(|c| c.is_ascii()) => Err(EmailError(
            "the address looks like an ASCII address written with letters of another script; use the plain ASCII spelling",
        )),
        _ => Ok(()),
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
    fn normal_form_is_nfkc_then_case_folding() {
        for (raw, normal) in [
            ("ｇina@example.com", "gina@example.com"),
            ("Ｇｉｎａ@ｅｘａｍｐｌｅ.ｃｏｍ", "gina@example.com"),
            ("Straße@Example.DE", "strasse@example.de"),
            ("\u{212A}im@example.com", "kim@example.com"),
            ("ﬁle@example.com", "file@example.com"),
            ("ada@xn--mller-kva.de", "ada@müller.de"),
            ("ADA@MÜLLER.DE", "ada@müller.de"),
            ("José@correo.es", "josé@correo.es"),
            // A decomposed é (e + U+0301) is the precomposed one.
            ("Jose\u{301}@correo.es", "josé@correo.es"),
        ] {
            assert_eq!(Email::parse(raw).map(|e| e.0), Ok(normal.into()), "{raw}");
            assert_eq!(
                Email::for_lookup(raw).map(|e| e.0),
                Ok(normal.into()),
                "{raw}"
            );
        }
    }

    #[test]
    fn lookalikes_are_refused_for_new_addresses_but_found_by_lookup() {
        for raw in [
            "gina@exаmple.com",
            "gіna@example.com",
            "аррӏе@example.com",
            "gina@xn--exmple-4nf.com",
            "paypal@раураl.com",
            "ɡina@example.com",
            "gi\u{200b}na@example.com",
            "gina@exa\u{200d}mple.com",
            "ada\u{202e}@example.com",
            "ada☺@example.com",
        ] {
            assert!(Email::parse(raw).is_err(), "{raw:?} accepted");
        }
        assert_eq!(
            Email::for_lookup("gina@exаmple.com").map(|e| e.0),
            Ok("gina@exаmple.com".into()),
            "lookups normalize only"
        );
    }

    #[test]
    fn real_international_addresses_are_accepted() {
        for raw in [
            "müller@example.de",
            "josé@correo.es",
            "用户@例子.中国",
            "δοκιμή@παράδειγμα.δοκιμή",
            "почта@пример.рф",
            "ada@bücher.example",
        ] {
            assert!(Email::parse(raw).is_ok(), "{raw}: {:?}", Email::parse(raw));
        }
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
