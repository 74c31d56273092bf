//! The sign-in policy every path to a token obeys (design invariant 13).
//!
//! Owns three rules, each written once:
//! - [`judge`]: may a sign-in receive a code or token for a client? A client
//!   with `require_mfa` needs a sign-in whose `amr` contains `mfa`. The
//!   authorization endpoint, the consent form and its resumption
//!   (`oauth::authorize::decide`) and the device approval
//!   (`oauth::device::approve`) call it and turn [`Verdict::SignInAgain`]
//!   into a new sign-in; the `authorization_code` and `device_code` grants,
//!   where nobody can be asked, call [`admit_without_interaction`] — the same
//!   requirements, no second chance.
//! - [`token_roles`] / [`may_use_role`]: a role listed in
//!   `mfa.required_roles` is honoured only for a multi-factor sign-in — by
//!   `http::auth::HasRole` for Latchkey's own pages, and left out of every
//!   access token of a sign-in without a second factor (`tokens`).
//! - [`signed_in_after`]: whether a sign-in happened after a request arrived
//!   (to the millisecond, the session held at arrival never counts), which
//!   is what `prompt=login`, `max_age` and `acr_values` ask for.
//!
//! Must not: touch storage, HTTP or sessions; callers hand it the facts.

use crate::clock::UnixMillis;
use crate::config::MfaConfig;
use crate::oauth::clients::Client;

/// The RFC 8176 `amr` value of a multi-factor sign-in (the SDK's constant).
pub const AMR_MULTI_FACTOR: &str = latchkey_verify::claims::AMR_MULTI_FACTOR;

/// What a sign-in proved, and when.
#[derive(Debug, Clone, Copy)]
pub struct SignInFacts<'a> {
    /// The session it created (its public handle).
    pub session_handle: &'a str,
    /// When it completed.
    pub auth_time_ms: UnixMillis,
    /// RFC 8176 methods (`pwd`, `otp`, `hwk`, `mfa`, ...).
    pub amr: &'a [String],
}

/// When a request waiting for the user arrived, and the session the browser
/// held then (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    pub at_ms: UnixMillis,
    pub seen_session: Option<String>,
}

/// Is this a multi-factor sign-in?
pub fn is_multi_factor(amr: &[String]) -> bool {
    amr.iter().any(|m| m == AMR_MULTI_FACTOR)
}

/// Did the sign-in happen after the request arrived? Strictly later to the
/// millisecond; at the same millisecond, any session but the one the browser
/// already held when the request arrived (only a new sign-in creates a
/// session, so that one is the answer to the request).
pub fn signed_in_after(sign_in: &SignInFacts<'_>, arrival: &Arrival) -> bool {
    sign_in.auth_time_ms > arrival.at_ms
        || (sign_in.auth_time_ms == arrival.at_ms
            && arrival.seen_session.as_deref() != Some(sign_in.session_handle))
}

/// The answer of [`judge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The sign-in may receive a code or token for the client.
    Admit,
    /// Not this sign-in: it predates the request, and a new one asks for
    /// every second factor the user has (set up since, perhaps).
    SignInAgain,
    /// Refused: a sign-in made for this very request still lacks what the
    /// client requires (the user has no second factor to offer).
    Refuse(Refusal),
}

/// Why [`judge`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client requires a second factor (`require_mfa`).
    SecondFactorRequired,
}

impl Refusal {
    /// Safe to show the user and the client.
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::SecondFactorRequired => {
                "this application requires a two-step sign-in; set one up at /account/mfa"
            }
        }
    }
}

/// May `sign_in` receive a code or token for `client`? `arrival` is when the
/// request being answered arrived: a sign-in from before it may be redone
/// ([`Verdict::SignInAgain`]), one made for it is final.
pub fn judge(client: &Client, sign_in: &SignInFacts<'_>, arrival: &Arrival) -> Verdict {
    verdict(unmet(client.require_mfa, sign_in.amr), sign_in, arrival)
}

/// [`judge`] where nobody can be asked to sign in again (the grants at the
/// token endpoint): the same requirements, and no second chance.
pub fn admit_without_interaction(client: &Client, amr: &[String]) -> Result<(), Refusal> {
    match unmet(client.require_mfa, amr) {
        None => Ok(()),
        Some(refusal) => Err(refusal),
    }
}

/// The client's requirement a sign-in with these `amr` does not meet.
fn unmet(require_mfa: bool, amr: &[String]) -> Option<Refusal> {
    (require_mfa && !is_multi_factor(amr)).then_some(Refusal::SecondFactorRequired)
}

fn verdict(unmet: Option<Refusal>, sign_in: &SignInFacts<'_>, arrival: &Arrival) -> Verdict {
    match unmet {
        None => Verdict::Admit,
        Some(_) if !signed_in_after(sign_in, arrival) => Verdict::SignInAgain,
        Some(refusal) => Verdict::Refuse(refusal),
    }
}

/// Does using `role` need a multi-factor sign-in (`mfa.required_roles`)?
pub fn role_needs_mfa(config: &MfaConfig, role: &str) -> bool {
    config.required_roles.iter().any(|r| r == role)
}

/// May a sign-in with these `amr` use `role` (which the user holds)?
pub fn may_use_role(config: &MfaConfig, role: &str, amr: &[String]) -> bool {
    is_multi_factor(amr) || !role_needs_mfa(config, role)
}

/// The roles an access token of a sign-in with these `amr` carries: the
/// user's roles, less those that need a second factor it lacks.
pub fn token_roles(config: &MfaConfig, roles: &[String], amr: &[String]) -> Vec<String> {
    roles
        .iter()
        .filter(|role| may_use_role(config, role, amr))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amr(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    #[test]
    fn a_sign_in_after_the_request_is_later_or_a_new_session_in_the_same_millisecond() {
        let methods = amr(&["pwd"]);
        let at = |ms: UnixMillis, handle: &'static str| SignInFacts {
            session_handle: handle,
            auth_time_ms: ms,
            amr: &methods,
        };
        let arrival = Arrival {
            at_ms: 1_000_500,
            seen_session: Some("old".into()),
        };
        assert!(!signed_in_after(&at(1_000_499, "new"), &arrival));
        assert!(signed_in_after(&at(1_000_501, "new"), &arrival));
        assert!(
            !signed_in_after(&at(1_000_500, "old"), &arrival),
            "the session held at arrival"
        );
        assert!(signed_in_after(&at(1_000_500, "new"), &arrival));
        let anonymous = Arrival {
            at_ms: 1_000_500,
            seen_session: None,
        };
        assert!(signed_in_after(&at(1_000_500, "any"), &anonymous));
        assert!(!signed_in_after(&at(1_000_000, "any"), &anonymous));
    }

    #[test]
    fn require_mfa_admits_only_mfa_and_says_how_to_get_it() {
        let pwd = amr(&["pwd"]);
        let strong = amr(&["pwd", "otp", "mfa"]);
        fn sign_in(methods: &[String]) -> SignInFacts<'_> {
            SignInFacts {
                session_handle: "s",
                auth_time_ms: 5_000,
                amr: methods,
            }
        }
        let before = Arrival {
            at_ms: 6_000,
            seen_session: None,
        };
        let after = Arrival {
            at_ms: 4_000,
            seen_session: None,
        };
        let judged = |require_mfa, methods: &[String], arrival| {
            verdict(unmet(require_mfa, methods), &sign_in(methods), arrival)
        };
        assert_eq!(judged(false, &pwd, &after), Verdict::Admit);
        assert_eq!(judged(true, &strong, &before), Verdict::Admit);
        assert_eq!(judged(true, &pwd, &before), Verdict::SignInAgain);
        assert_eq!(
            judged(true, &pwd, &after),
            Verdict::Refuse(Refusal::SecondFactorRequired)
        );
        assert_eq!(unmet(true, &pwd), Some(Refusal::SecondFactorRequired));
        assert_eq!(unmet(true, &strong), None);
        assert_eq!(unmet(false, &pwd), None);
    }

    #[test]
    fn roles_that_need_mfa_ride_only_in_tokens_of_mfa_sign_ins() {
        let config = MfaConfig::default();
        let roles = amr(&["admin", "staff"]);
        assert_eq!(
            token_roles(&config, &roles, &amr(&["pwd"])),
            amr(&["staff"])
        );
        assert_eq!(
            token_roles(&config, &roles, &amr(&["pwd", "otp", "mfa"])),
            roles
        );
        assert!(!may_use_role(&config, "admin", &[]));
        assert!(may_use_role(&config, "staff", &[]));
    }
}
