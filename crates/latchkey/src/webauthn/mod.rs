//! Passkeys (WebAuthn): registration, passwordless sign-in, second factor.
//!
//! Owns: the Relying Party built from `[webauthn]` ([`RelyingParty`]), the
//! `passkeys` and `webauthn_challenges` tables ([`store`]), and three
//! ceremonies, each a `start_*` that returns the options for
//! `navigator.credentials.*` plus a ceremony id, and a `finish_*` that takes
//! the browser's answer back (webauthn-rs style: the state is an explicit,
//! serialisable record, stored server-side, never in the browser):
//!
//! | ceremony | who | webauthn-rs call | user verification |
//! | --- | --- | --- | --- |
//! | [`start_registration`] / [`finish_registration`] | a signed-in user (recent sign-in) | core `generate_challenge_register` / `register_credential` | preferred |
//! | [`start_sign_in`] / `login::passkey::sign_in` | anyone: usernameless, discoverable credentials | `start_discoverable_authentication` / `finish_discoverable_authentication` | required |
//! | [`start_second_factor`] / [`finish_second_factor`] | a user who gave their password | core `generate_challenge_authenticate` / `authenticate_credential` | preferred |
//!
//! Registration asks for a discoverable credential (resident key required)
//! with ES256, EdDSA or RS256, no attestation. The high-level passkey API of
//! webauthn-rs 0.5 fixes other choices (no resident key, no EdDSA, UV
//! required), so registration and the second factor use the same library's
//! core engine with these options; every signature, challenge, origin, RP ID,
//! flag and counter check is still webauthn-rs's. A passkey alone must verify
//! the user (PIN or biometrics): UV=0 is refused for passwordless sign-in. A
//! credential that verified the user when registered must always do so
//! (webauthn-rs enforces this).
//!
//! Architecture invariant: a ceremony is single-use (its row is deleted
//! before the answer is verified), bound to the browser that started it (the
//! hash of the anonymous CSRF cookie, or the session id hash: see
//! [`ChallengeBinding`]), and expires after `webauthn.challenge_ttl_secs`
//! (default 5 minutes). Challenges are 256 bits from webauthn-rs.
//!
//! Architecture invariant: a signature counter that does not increase (a
//! cloned authenticator, WebAuthn §6.1.1) is refused and recorded as
//! `passkey_clone_suspected`; counters and backup flags are updated after
//! every successful use, as webauthn-rs advises (`Passkey::update_credential`).
//!
//! `amr` values (RFC 8176) of a passkey sign-in, from [`amr_for`]:
//! - `hwk` for a device-bound credential (not backup eligible: the private key
//!   cannot leave the authenticator), `swk` for a synced one (backup eligible:
//!   a platform keychain copies it between devices);
//! - `user`: user presence was tested (UP; always, webauthn-rs refuses UP=0);
//! - `mfa`: the authenticator verified the user (UV): possession plus a PIN
//!   or biometrics, two factors in one gesture.
//!
//! WebAuthn does not work on IP addresses: with an issuer such as
//! `http://127.0.0.1:8080` and no `webauthn.rp_id`, passkeys are unavailable
//! (the login page offers no passkey button, and a user's passkeys do not
//! count as a second factor); `latchkey dev` uses `http://localhost:8080`.
//!
//! Failed sign-ins count towards the lockout like wrong passwords
//! (`throttle`): the address before the credential is looked up, the account
//! once the credential names it.
//!
//! Must not: know about HTTP or cookies (handlers turn cookies into a
//! [`ChallengeBinding`] and map [`PasskeyError`] to responses).

pub mod store;

use std::time::Duration;

use webauthn_rs::prelude::{
    AuthenticationResult, COSEAlgorithm, CreationChallengeResponse, Credential,
    DiscoverableAuthentication, DiscoverableKey, Passkey, PublicKeyCredential,
    RegisterPublicKeyCredential, RequestChallengeResponse, Url, Uuid, WebauthnError,
};
use webauthn_rs_core::proto::{
    AttestationConveyancePreference, AuthenticationState, CredProtect, CredentialProtectionPolicy,
    RegistrationState, RequestRegistrationExtensions, UserVerificationPolicy,
};
use webauthn_rs_core::WebauthnCore;

pub use store::{has_passkeys, list_for_user, purge_expired, PasskeyRecord};

use crate::audit::{self, Event, EventKind};
use crate::clock::UnixTime;
use crate::config::{Config, ConfigError};
use crate::core::SignInKit;
use crate::crypto::{b64url, TokenHash};
use crate::identity::User;
use crate::session::{Origin, Session};
use crate::store::StoreError;

/// Algorithms accepted at registration, in order of preference.
const ALGORITHMS: [COSEAlgorithm; 3] = [
    COSEAlgorithm::ES256,
    COSEAlgorithm::EDDSA,
    COSEAlgorithm::RS256,
];

/// What can go wrong, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    /// This deployment cannot use WebAuthn (e.g. the issuer is an IP address).
    #[error("passkeys are not available here: {0}")]
    Unavailable(String),
    /// Unknown, already used, expired, or started in another browser.
    #[error("this passkey request has expired or was already used; please try again")]
    UnknownCeremony,
    /// The credential is not registered (to anyone).
    #[error("this passkey is not registered with this site; sign in with your password, then add it on your account page")]
    UnknownCredential,
    /// Verification failed (signature, flags, origin, challenge...), or the
    /// account cannot sign in. Deliberately vague towards the browser.
    #[error("this passkey could not sign you in")]
    Rejected(String),
    /// The signature counter went backwards: possibly a cloned authenticator.
    #[error("this passkey could not sign you in")]
    PossibleClone,
    /// The browser's registration answer did not verify.
    #[error("the new passkey could not be verified: {0}")]
    InvalidRegistration(String),
    #[error("this passkey is already registered")]
    AlreadyRegistered,
    #[error("the passkey name {0}")]
    InvalidName(&'static str),
    /// Rename/delete of a passkey that is not the user's.
    #[error("no such passkey among yours")]
    NotFound,
    /// Deleting it would leave the account without any way to sign in.
    #[error("this is your only way to sign in: with it deleted you could not sign in any more (ask an administrator to set a password). Confirm to delete it anyway")]
    LastSignInMethod,
    /// The user has no passkey (second factor).
    #[error("you have no passkey")]
    NoPasskeys,
    /// Too many failed sign-ins from this address or for this account
    /// (the same lockout as passwords and authenticator codes).
    #[error("too many failed sign-ins; try again in {retry_after_secs} seconds")]
    LockedOut { retry_after_secs: i64 },
    #[error("stored WebAuthn data is unreadable: {0}")]
    Corrupt(String),
    #[error("WebAuthn failure: {0}")]
    Internal(#[from] WebauthnError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which ceremony a stored challenge belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ceremony {
    Registration,
    Authentication,
    SecondFactor,
}

impl Ceremony {
    pub fn as_str(self) -> &'static str {
        match self {
            Ceremony::Registration => "registration",
            Ceremony::Authentication => "authentication",
            Ceremony::SecondFactor => "second_factor",
        }
    }
}

/// What a ceremony is bound to: something only the browser that started it
/// holds. Stored as a hash, compared in constant time.
#[derive(Clone)]
pub struct ChallengeBinding(String);

impl ChallengeBinding {
    /// An anonymous visitor: the value of their CSRF cookie (`http::csrf`).
    pub fn anonymous(csrf_cookie: &str) -> ChallengeBinding {
        ChallengeBinding(format!("anon:{}", TokenHash::of(csrf_cookie).as_str()))
    }

    /// A signed-in browser: the session's stored id hash.
    pub fn session(session: &Session) -> ChallengeBinding {
        ChallengeBinding(format!("session:{}", session.id_hash))
    }

    /// Any other secret the browser holds (e.g. the pending second-step
    /// cookie of the MFA flow), namespaced by `purpose`.
    pub fn secret(purpose: &str, value: &str) -> ChallengeBinding {
        ChallengeBinding(format!("{purpose}:{}", TokenHash::of(value).as_str()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ChallengeBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChallengeBinding(..)")
    }
}

/// A started ceremony: the id the browser sends back with its answer, and the
/// options for `navigator.credentials.create()`/`.get()` (`publicKey`).
#[derive(Debug, serde::Serialize)]
pub struct Started<T: serde::Serialize> {
    pub ceremony: String,
    #[serde(flatten)]
    pub options: T,
}

/// A passkey that verified as a second factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPasskey {
    pub user_id: String,
    /// RFC 8176 values for this use (see [`amr_for`]).
    pub amr: Vec<String>,
}

/// RFC 8176 `amr` values of a passkey use (mapping in the module docs).
pub fn amr_for(backup_eligible: bool, user_verified: bool) -> Vec<&'static str> {
    let mut amr = vec![if backup_eligible { "swk" } else { "hwk" }, "user"];
    if user_verified {
        amr.push("mfa");
    }
    amr
}

/// A passkey's display name: 1 to 64 printable characters, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyName(String);

impl PasskeyName {
    pub const MAX_CHARS: usize = 64;

    pub fn parse(text: &str) -> Result<PasskeyName, PasskeyError> {
        let name = text.trim();
        if name.is_empty() {
            return Err(PasskeyError::InvalidName("must not be empty"));
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err(PasskeyError::InvalidName("must be at most 64 characters"));
        }
        if name.chars().any(char::is_control) {
            return Err(PasskeyError::InvalidName(
                "must not contain control characters",
            ));
        }
        Ok(PasskeyName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

struct Engines {
    /// The passkey API: usernameless sign-in (UV required).
    passkeys: webauthn_rs::Webauthn,
    /// The same verification engine with our registration and second-factor options.
    core: WebauthnCore,
}

/// The Relying Party: RP ID, allowed origins and the challenge lifetime.
pub struct RelyingParty {
    engines: Result<Engines, String>,
    challenge_ttl_secs: i64,
}

fn config_error(option: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        option,
        reason: reason.into(),
    }
}

impl RelyingParty {
    /// RP ID = `webauthn.rp_id`, or the issuer's host; allowed origins = the
    /// issuer's origin plus `webauthn.allowed_origins`. An issuer on an IP
    /// address without `rp_id` gives an unavailable Relying Party (passkeys
    /// off), not an error, so `latchkey dev` on 127.0.0.1 still starts.
    pub fn from_config(config: &Config) -> Result<RelyingParty, ConfigError> {
        let settings = &config.webauthn;
        let challenge_ttl_secs = settings.challenge_ttl_secs;
        let issuer = config.issuer_url()?;
        let issuer_origin = Url::parse(&issuer.origin().ascii_serialization())
            .map_err(|e| config_error("issuer", e.to_string()))?;
        let rp_id = match (&settings.rp_id, issuer.domain()) {
            (Some(rp_id), _) => rp_id.clone(),
            (None, Some(host)) => host.to_owned(),
            (None, None) => {
                return Ok(RelyingParty {
                    engines: Err(format!(
                        "WebAuthn needs a domain name, and the issuer {} is an IP address (use http://localhost:PORT for development)",
                        config.issuer_str()
                    )),
                    challenge_ttl_secs,
                })
            }
        };
        let mut origins = vec![issuer_origin.clone()];
        for origin in &settings.allowed_origins {
            origins.push(Url::parse(origin).map_err(|e| {
                config_error("webauthn.allowed_origins", format!("{origin:?}: {e}"))
            })?);
        }
        let timeout = Duration::from_secs(challenge_ttl_secs.unsigned_abs());
        let invalid_rp = |_| {
            config_error(
                "webauthn.rp_id",
                format!("{rp_id:?} must be the issuer's host or a parent domain of it"),
            )
        };
        let mut builder = webauthn_rs::WebauthnBuilder::new(&rp_id, &issuer_origin)
            .map_err(invalid_rp)?
            .rp_name(&settings.rp_name)
            .timeout(timeout);
        for origin in &origins[1..] {
            builder = builder.append_allowed_origin(origin);
        }
        let passkeys = builder.build().map_err(invalid_rp)?;
        let core = WebauthnCore::new_unsafe_experts_only(
            &settings.rp_name,
            &rp_id,
            origins,
            timeout,
            Some(false),
            Some(false),
        );
        Ok(RelyingParty {
            engines: Ok(Engines { passkeys, core }),
            challenge_ttl_secs,
        })
    }

    /// Whether passkeys can be used at all (the login page hides them if not).
    pub fn is_available(&self) -> bool {
        self.engines.is_ok()
    }

    fn engines(&self) -> Result<&Engines, PasskeyError> {
        self.engines
            .as_ref()
            .map_err(|why| PasskeyError::Unavailable(why.clone()))
    }
}

fn to_state_json<T: serde::Serialize>(state: &T) -> Result<String, PasskeyError> {
    serde_json::to_string(state).map_err(|e| PasskeyError::Corrupt(e.to_string()))
}

fn from_state_json<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, PasskeyError> {
    serde_json::from_str(json).map_err(|e| PasskeyError::Corrupt(format!("ceremony state: {e}")))
}

async fn save_ceremony<O: serde::Serialize, S: serde::Serialize>(
    state: &SignInKit,
    kind: Ceremony,
    options: O,
    ceremony_state: &S,
    user_id: Option<&str>,
    binding: &ChallengeBinding,
) -> Result<Started<O>, PasskeyError> {
    let now = state.clock.now();
    let expires_at = now + state.passkeys.challenge_ttl_secs;
    let json = to_state_json(ceremony_state)?;
    let id = store::insert_challenge(&state.pool, kind, &json, user_id, binding, now, expires_at)
        .await?;
    Ok(Started {
        ceremony: id.expose().to_owned(),
        options,
    })
}

/// Whether `session` signed in recently enough to add a passkey
/// (`mfa.reauth_window_secs`, 15 minutes by default): a stolen session must
/// not be able to plant a credential.
pub fn recently_signed_in(config: &Config, session: &Session, now: UnixTime) -> bool {
    now - session.auth_time <= config.mfa.reauth_window_secs
}

fn user_handle(user: &User) -> Result<Uuid, PasskeyError> {
    Uuid::parse_str(&user.id)
        .map_err(|_| PasskeyError::Corrupt(format!("user id {} is not a UUID", user.id)))
}

/// Starts adding a passkey to `user`'s account. The caller has checked that
/// the session is recent ([`recently_signed_in`]).
pub async fn start_registration(
    state: &SignInKit,
    user: &User,
    binding: &ChallengeBinding,
) -> Result<Started<CreationChallengeResponse>, PasskeyError> {
    let engines = state.passkeys.engines()?;
    let existing = store::list_for_user(&state.pool, &user.id).await?;
    let exclude = existing
        .iter()
        .map(|r| r.passkey.cred_id().clone())
        .collect();
    let display_name = if user.display_name.is_empty() {
        user.email.as_str()
    } else {
        &user.display_name
    };
    let builder = engines
        .core
        .new_challenge_register_builder(
            user_handle(user)?.as_bytes(),
            user.email.as_str(),
            display_name,
        )?
        .attestation(AttestationConveyancePreference::None)
        .credential_algorithms(ALGORITHMS.to_vec())
        .require_resident_key(true)
        .authenticator_attachment(None)
        .user_verification_policy(UserVerificationPolicy::Preferred)
        .reject_synchronised_authenticators(false)
        .exclude_credentials(Some(exclude))
        .extensions(Some(RequestRegistrationExtensions {
            // Discoverable without UV only when the site names the credential
            // (CTAP 2.1 credProtect level 2), so the account cannot be listed
            // by someone merely holding the authenticator.
            cred_protect: Some(CredProtect {
                credential_protection_policy:
                    CredentialProtectionPolicy::UserVerificationOptionalWithCredentialIDList,
                enforce_credential_protection_policy: Some(false),
            }),
            uvm: Some(true),
            cred_props: Some(true),
            min_pin_length: None,
            hmac_create_secret: None,
        }));
    let (options, registration): (CreationChallengeResponse, RegistrationState) =
        engines.core.generate_challenge_register(builder)?;
    save_ceremony(
        state,
        Ceremony::Registration,
        options,
        &registration,
        Some(&user.id),
        binding,
    )
    .await
}

/// Verifies the browser's answer and stores the new passkey under `name`.
pub async fn finish_registration(
    state: &SignInKit,
    user: &User,
    ceremony: &str,
    credential: &RegisterPublicKeyCredential,
    name: Option<PasskeyName>,
    binding: &ChallengeBinding,
    origin: &Origin,
) -> Result<PasskeyRecord, PasskeyError> {
    let engines = state.passkeys.engines()?;
    let now = state.clock.now();
    let pending =
        store::take_challenge(&state.pool, ceremony, Ceremony::Registration, binding, now).await?;
    if pending.user_id.as_deref() != Some(user.id.as_str()) {
        return Err(PasskeyError::UnknownCeremony);
    }
    let registration: RegistrationState = from_state_json(&pending.state)?;
    let credential: Credential = engines
        .core
        .register_credential(credential, &registration, None)
        .map_err(|e| PasskeyError::InvalidRegistration(e.to_string()))?;
    let existing = store::list_for_user(&state.pool, &user.id).await?;
    let name = match name {
        Some(name) => name.as_str().to_owned(),
        None => format!("Passkey {}", existing.len() + 1),
    };
    let record = PasskeyRecord {
        id: uuid::Uuid::now_v7().to_string(),
        user_id: user.id.clone(),
        credential_id: b64url(credential.cred_id.as_slice()),
        name,
        created_at: now,
        last_used_at: None,
        backup_eligible: credential.backup_eligible,
        backed_up: credential.backup_state,
        passkey: Passkey::from(credential),
    };
    store::insert_passkey(&state.pool, &record).await?;
    let event = Event {
        actor: user.id.clone(),
        subject: user.id.clone(),
        ip: origin.ip.clone(),
        user_agent: origin.user_agent.clone(),
        detail: format!("passkey {} ({})", record.id, record.storage()),
    };
    audit::record(&state.pool, EventKind::PasskeyRegistered, event, now).await?;
    // A passkey is the user's own way in: the handed-out password is
    // removed rather than kept working. The account is then passkey-only
    // (`latchkey user set-password` gives it a password again).
    if user.must_change_password {
        crate::identity::drop_handed_out_password(&state.pool, &user.id, now).await?;
    }
    Ok(record)
}

/// Starts a usernameless sign-in: no account is named, the authenticator
/// offers its discoverable credentials for this RP. The options carry no
/// `mediation`: the page chooses between a button (modal) and autofill
/// (`conditional`).
pub async fn start_sign_in(
    state: &SignInKit,
    binding: &ChallengeBinding,
) -> Result<Started<RequestChallengeResponse>, PasskeyError> {
    let engines = state.passkeys.engines()?;
    let (mut options, authentication) = engines.passkeys.start_discoverable_authentication()?;
    options.mediation = None;
    save_ceremony(
        state,
        Ceremony::Authentication,
        options,
        &authentication,
        None,
        binding,
    )
    .await
}

/// The pending usernameless sign-in `ceremony` bound to `binding`, taken
/// (single-use: its row is deleted before the answer is verified).
pub(crate) async fn take_sign_in(
    state: &SignInKit,
    ceremony: &str,
    binding: &ChallengeBinding,
    now: UnixTime,
) -> Result<DiscoverableAuthentication, PasskeyError> {
    state.passkeys.engines()?;
    let pending = store::take_challenge(
        &state.pool,
        ceremony,
        Ceremony::Authentication,
        binding,
        now,
    )
    .await?;
    from_state_json(&pending.state)
}

/// The registered passkey the browser's answer names, if any.
pub(crate) async fn credential_named_by(
    state: &SignInKit,
    credential: &PublicKeyCredential,
) -> Result<Option<PasskeyRecord>, PasskeyError> {
    let credential_id = b64url(credential.get_credential_id());
    store::find_by_credential_id(&state.pool, &credential_id).await
}

/// Whether the user handle the authenticator returned names the owner of
/// `record`.
pub(crate) fn user_handle_matches(
    state: &SignInKit,
    credential: &PublicKeyCredential,
    record: &PasskeyRecord,
) -> Result<bool, PasskeyError> {
    let engines = state.passkeys.engines()?;
    Ok(engines
        .passkeys
        .identify_discoverable_authentication(credential)
        .is_ok_and(|(handle, _)| handle.to_string() == record.user_id))
}

/// Verifies a usernameless sign-in answer against `record` (webauthn-rs:
/// signature, challenge, origin, RP ID, flags, counter), then records the
/// use. Returns the sign-in's `amr`. A counter that did not increase is
/// audited as a suspected clone.
pub(crate) async fn verify_sign_in(
    state: &SignInKit,
    credential: &PublicKeyCredential,
    authentication: DiscoverableAuthentication,
    record: &mut PasskeyRecord,
    origin: &Origin,
    now: UnixTime,
) -> Result<Vec<&'static str>, PasskeyError> {
    let engines = state.passkeys.engines()?;
    let key = DiscoverableKey::from(&record.passkey);
    let result = match engines.passkeys.finish_discoverable_authentication(
        credential,
        authentication,
        &[key],
    ) {
        Ok(result) => result,
        Err(e) => return Err(verification_failure(state, record, e, origin, now).await?),
    };
    note_use(state, record, &result, now).await?;
    Ok(amr_for(result.backup_eligible(), result.user_verified()))
}

/// Maps a failed verification, auditing a suspected clone.
async fn verification_failure(
    state: &SignInKit,
    record: &PasskeyRecord,
    error: WebauthnError,
    origin: &Origin,
    now: UnixTime,
) -> Result<PasskeyError, PasskeyError> {
    if matches!(error, WebauthnError::CredentialPossibleCompromise) {
        let event = Event {
            actor: String::new(),
            subject: record.user_id.clone(),
            ip: origin.ip.clone(),
            user_agent: origin.user_agent.clone(),
            detail: format!(
                "passkey {} ({}): signature counter did not increase; possibly a cloned authenticator",
                record.id, record.name
            ),
        };
        audit::record(&state.pool, EventKind::PasskeyCloneSuspected, event, now).await?;
        tracing::warn!(passkey = %record.id, user = %record.user_id, "passkey counter regression: possible cloned authenticator");
        return Ok(PasskeyError::PossibleClone);
    }
    Ok(PasskeyError::Rejected(error.to_string()))
}

/// Updates the stored counter and backup flags (as webauthn-rs advises) and
/// the last-used time.
async fn note_use(
    state: &SignInKit,
    record: &mut PasskeyRecord,
    result: &AuthenticationResult,
    now: UnixTime,
) -> Result<(), PasskeyError> {
    record.passkey.update_credential(result);
    record.backup_eligible = result.backup_eligible() || record.backup_eligible;
    record.backed_up = result.backup_state();
    record.last_used_at = Some(now);
    store::record_use(&state.pool, record, now).await
}

/// Starts a passkey check for a known user (the second step after a
/// password): `allowCredentials` lists that user's passkeys. `binding` is
/// whatever the caller's half-done sign-in is bound to.
pub async fn start_second_factor(
    state: &SignInKit,
    user_id: &str,
    binding: &ChallengeBinding,
) -> Result<Started<RequestChallengeResponse>, PasskeyError> {
    let engines = state.passkeys.engines()?;
    let records = store::list_for_user(&state.pool, user_id).await?;
    if records.is_empty() {
        return Err(PasskeyError::NoPasskeys);
    }
    let credentials: Vec<Credential> = records.into_iter().map(|r| r.passkey.into()).collect();
    let builder = engines
        .core
        .new_challenge_authenticate_builder(credentials, Some(UserVerificationPolicy::Preferred))?
        .allow_backup_eligible_upgrade(true);
    let (options, authentication): (RequestChallengeResponse, AuthenticationState) =
        engines.core.generate_challenge_authenticate(builder)?;
    save_ceremony(
        state,
        Ceremony::SecondFactor,
        options,
        &authentication,
        Some(user_id),
        binding,
    )
    .await
}

/// Verifies a second-factor answer for `user_id`. Records the use (counter,
/// flags) and audits a suspected clone; the caller audits the sign-in itself.
pub async fn finish_second_factor(
    state: &SignInKit,
    user_id: &str,
    ceremony: &str,
    credential: &PublicKeyCredential,
    binding: &ChallengeBinding,
    origin: &Origin,
) -> Result<VerifiedPasskey, PasskeyError> {
    let engines = state.passkeys.engines()?;
    let now = state.clock.now();
    let pending =
        store::take_challenge(&state.pool, ceremony, Ceremony::SecondFactor, binding, now).await?;
    if pending.user_id.as_deref() != Some(user_id) {
        return Err(PasskeyError::UnknownCeremony);
    }
    let authentication: AuthenticationState = from_state_json(&pending.state)?;
    let credential_id = b64url(credential.get_credential_id());
    let mut record = match store::find_by_credential_id(&state.pool, &credential_id).await? {
        Some(record) if record.user_id == user_id => record,
        _ => return Err(PasskeyError::UnknownCredential),
    };
    let result = match engines
        .core
        .authenticate_credential(credential, &authentication)
    {
        Ok(result) => result,
        Err(e) => return Err(verification_failure(state, &record, e, origin, now).await?),
    };
    note_use(state, &mut record, &result, now).await?;
    Ok(VerifiedPasskey {
        user_id: user_id.to_owned(),
        amr: amr_for(result.backup_eligible(), result.user_verified())
            .into_iter()
            .map(str::to_owned)
            .collect(),
    })
}

/// Renames one of the user's passkeys.
pub async fn rename(
    state: &SignInKit,
    user: &User,
    id: &str,
    name: &PasskeyName,
    origin: &Origin,
) -> Result<(), PasskeyError> {
    if !store::rename(&state.pool, &user.id, id, name.as_str()).await? {
        return Err(PasskeyError::NotFound);
    }
    let event = Event {
        actor: user.id.clone(),
        subject: user.id.clone(),
        ip: origin.ip.clone(),
        user_agent: origin.user_agent.clone(),
        detail: format!("passkey {id} renamed"),
    };
    audit::record(
        &state.pool,
        EventKind::PasskeyRenamed,
        event,
        state.clock.now(),
    )
    .await?;
    Ok(())
}

/// Whether deleting passkey `id` would leave `user` with no way to sign in
/// (no password and no other passkey).
pub fn is_last_sign_in_method(user: &User, passkeys: &[PasskeyRecord], id: &str) -> bool {
    user.password_hash.is_none() && passkeys.iter().all(|p| p.id == id)
}

/// Deletes one of the user's passkeys. Deleting the last way to sign in needs
/// `confirmed`.
pub async fn delete(
    state: &SignInKit,
    user: &User,
    id: &str,
    confirmed: bool,
    origin: &Origin,
) -> Result<(), PasskeyError> {
    let passkeys = store::list_for_user(&state.pool, &user.id).await?;
    if !passkeys.iter().any(|p| p.id == id) {
        return Err(PasskeyError::NotFound);
    }
    if is_last_sign_in_method(user, &passkeys, id) && !confirmed {
        return Err(PasskeyError::LastSignInMethod);
    }
    if !store::delete(&state.pool, &user.id, id).await? {
        return Err(PasskeyError::NotFound);
    }
    let event = Event {
        actor: user.id.clone(),
        subject: user.id.clone(),
        ip: origin.ip.clone(),
        user_agent: origin.user_agent.clone(),
        detail: format!("passkey {id}"),
    };
    audit::record(
        &state.pool,
        EventKind::PasskeyDeleted,
        event,
        state.clock.now(),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amr_follows_backup_eligibility_and_user_verification() {
        assert_eq!(amr_for(false, true), ["hwk", "user", "mfa"]);
        assert_eq!(amr_for(true, true), ["swk", "user", "mfa"]);
        assert_eq!(amr_for(false, false), ["hwk", "user"]);
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            PasskeyName::parse("  Laptop ").expect("valid").as_str(),
            "Laptop"
        );
        assert!(PasskeyName::parse("   ").is_err());
        assert!(PasskeyName::parse(&"x".repeat(65)).is_err());
        assert!(PasskeyName::parse("a\u{7}b").is_err());
    }

    #[test]
    fn bindings_of_different_kinds_never_collide() {
        let anon = ChallengeBinding::anonymous("v");
        let other = ChallengeBinding::secret("mfa", "v");
        assert_ne!(anon.as_str(), other.as_str());
        assert!(!anon.as_str().contains('v') || anon.as_str().starts_with("anon:"));
    }

    fn config(issuer: &str) -> Config {
        Config {
            issuer: issuer.into(),
            ..Config::default()
        }
    }

    #[test]
    fn relying_party_comes_from_the_issuer() {
        let rp = RelyingParty::from_config(&config("https://id.example.com")).expect("valid");
        assert!(rp.is_available());
        let rp = RelyingParty::from_config(&config("http://127.0.0.1:8080")).expect("valid");
        assert!(!rp.is_available(), "WebAuthn does not work on IP addresses");
        let mut c = config("https://id.example.com");
        c.webauthn.rp_id = Some("example.com".into());
        assert!(RelyingParty::from_config(&c)
            .expect("parent domain")
            .is_available());
        c.webauthn.rp_id = Some("other.example".into());
        assert!(RelyingParty::from_config(&c).is_err());
    }
}
