//! The federated ceremony and the account rules: [`begin`] sends the
//! browser to the upstream; [`callback`] checks what comes back and maps the
//! upstream identity to a local user; [`confirm_link`] and [`unlink`] are the
//! owner's side of linking.
//!
//! The rules (docs/federation.md, "Linking rules"; DESIGN invariant 14):
//! 1. an identity is found by (provider, subject), never by email — a
//!    changed upstream email cannot move a login to another account;
//! 2. an unknown identity whose email a local account holds is linked
//!    automatically only when the provider's policy is `verified`, the
//!    upstream asserts the email verified **and** the local account's email
//!    is verified; otherwise the owner confirms by signing in to the
//!    existing account (with its second factor) — [`Outcome::ConfirmLink`];
//! 3. a verified upstream email that a never-verified local account holds:
//!    that account's password, second factors, passkeys, sessions and
//!    tokens are removed first (`cascade::clear_unverified_account_and_link`),
//!    audited, then it is linked;
//! 4. the local policy always applies after federation (`login::federated`:
//!    a second factor is still asked for);
//! 5. a user may unlink an identity unless it is their last way in.
//!
//! Every refusal of [`callback`] is audited (`federation_refused`) and
//! changes nothing.
//!
//! Must not: know about HTTP or cookies (the web hands in the cookie's
//! value and sets what [`Outcome`] says).

use super::store::{self, PendingLink, PendingSignIn};
use super::upstream::{self, UpstreamError, UpstreamIdentity};
use super::{LinkPolicy, ProviderSpec};
use crate::audit::{self, Event, EventKind};
use crate::cascade::{self, Cleared};
use crate::core::{Core, SignInKit};
use crate::crypto::{constant_time_eq, SecretToken};
use crate::identity::{self, Email, IdentityError, NewUser, User};
use crate::login::{self, LoginError, SignIn};
use crate::revocation::{Cause, Initiator};
use crate::session::Origin;
use crate::store::StoreError;

/// A pending link must be confirmed within this many seconds.
pub const PENDING_LINK_TTL_SECS: i64 = 900;

/// Why a federated step was refused. The text is what the user sees.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error("This sign-in provider is not available.")]
    UnknownProvider,
    #[error("This sign-in link is not valid any more (expired, already used, or opened in another browser). Please start again.")]
    BadState,
    #[error("The sign-in provider answered: {0}")]
    UpstreamSaid(String),
    #[error("{0}")]
    Upstream(#[from] UpstreamError),
    #[error("No account here belongs to this identity, and this provider does not create accounts. Ask an administrator.")]
    NoAccount,
    #[error("The provider did not confirm an email address, which a new account needs.")]
    NoVerifiedEmail,
    #[error("An account with this email address exists. Sign in to it and link this provider from your account page.")]
    LinkRefused,
    #[error("Invalid email or password")]
    AccountUnavailable,
    #[error("This identity is already linked to another account.")]
    LinkedElsewhere,
    #[error("This is your last way to sign in: set a password or a passkey first.")]
    LastWayIn,
    #[error("Sign in to the account the link was meant for to confirm it.")]
    WrongAccount,
    #[error("Please sign in again (with every step) to confirm the link.")]
    SignInAgain,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Login(#[from] LoginError),
}

impl From<IdentityError> for FederationError {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::Store(s) => FederationError::Store(s),
            // A concurrent first sign-in created it: the caller may retry.
            IdentityError::DuplicateEmail(_) => FederationError::Store(StoreError::Conflict),
            IdentityError::UnknownUser(_) => FederationError::AccountUnavailable,
        }
    }
}

/// Where to send the browser, and the `state` value to keep in its cookie.
pub struct Begun {
    pub url: String,
    pub state: SecretToken,
}

fn seal_key(core: &Core) -> &[u8; 32] {
    &core.federation_seal_key
}

/// Starts a sign-in at `provider` (or, with `link_user_id`, the linking of
/// another identity by a signed-in user). `next` must already be a safe
/// local path.
pub async fn begin(
    core: &Core,
    provider: &str,
    next: &str,
    link_user_id: Option<&str>,
) -> Result<Begun, FederationError> {
    let spec = super::enabled_provider(core, provider)
        .await?
        .ok_or(FederationError::UnknownProvider)?;
    let secret = spec
        .client_secret(seal_key(core))
        .map_err(|e| UpstreamError::Spec(e.to_string()))?;
    let state = SecretToken::generate();
    let request =
        upstream::authorization_request(&core.config, &spec, secret, state.expose()).await?;
    let pending = PendingSignIn {
        provider: spec.name.clone(),
        nonce: request.nonce,
        pkce_verifier_sealed: crate::crypto::seal(
            seal_key(core),
            state.hash().as_str().as_bytes(),
            request.pkce_verifier.as_bytes(),
        ),
        next: next.to_owned(),
        link_user_id: link_user_id.unwrap_or_default().to_owned(),
    };
    store::save_state(
        &core.pool,
        &state,
        &pending,
        core.clock.now(),
        core.config.federation.state_ttl_secs,
    )
    .await?;
    Ok(Begun {
        url: request.url,
        state,
    })
}

/// What the upstream sent back to `/login/idp/{name}/callback`, and the
/// browser's state cookie.
#[derive(Debug, Default)]
pub struct CallbackParams {
    pub provider: String,
    pub state: Option<String>,
    pub code: Option<String>,
    pub iss: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    /// The `state` value of the browser's cookie.
    pub cookie_state: Option<String>,
}

/// What the web does next.
#[derive(Debug)]
pub enum Outcome {
    /// A sign-in: a session, or the second step due.
    SignIn { result: Box<SignIn>, next: String },
    /// An existing account holds the email: its owner must sign in to it
    /// and confirm. The token goes in a cookie; `email` is shown.
    ConfirmLink {
        token: SecretToken,
        email: String,
        provider: String,
    },
    /// A signed-in user linked another identity.
    Linked { next: String },
}

fn event(origin: &Origin, actor: &str, subject: &str, detail: String) -> Event {
    Event {
        actor: actor.to_owned(),
        subject: subject.to_owned(),
        ip: origin.ip.clone(),
        user_agent: origin.user_agent.clone(),
        detail,
    }
}

/// The callback: every check, then the account rules. Refusals are
/// audited and change nothing.
pub async fn callback(
    kit: &SignInKit,
    params: CallbackParams,
    origin: &Origin,
) -> Result<Outcome, FederationError> {
    let provider = params.provider.clone();
    match callback_inner(kit, params, origin).await {
        Ok(outcome) => Ok(outcome),
        Err(e) => {
            let detail = format!("{provider}: {}", refusal_code(&e));
            audit::record(
                &kit.pool,
                EventKind::FederationRefused,
                event(origin, "", "", detail),
                kit.clock.now(),
            )
            .await?;
            Err(e)
        }
    }
}

/// A short machine word for the audit record.
fn refusal_code(e: &FederationError) -> String {
    match e {
        FederationError::UnknownProvider => "unknown provider".into(),
        FederationError::BadState => "state missing, forged, replayed or expired".into(),
        FederationError::UpstreamSaid(s) => format!("upstream error {s}"),
        FederationError::Upstream(u) => u.to_string(),
        FederationError::NoAccount => "no account and no provisioning".into(),
        FederationError::NoVerifiedEmail => "no verified email".into(),
        FederationError::LinkRefused => "email held by an account; link policy never".into(),
        FederationError::AccountUnavailable => "account disabled".into(),
        FederationError::LinkedElsewhere => "identity linked to another account".into(),
        other => other.to_string(),
    }
}

async fn callback_inner(
    kit: &SignInKit,
    params: CallbackParams,
    origin: &Origin,
) -> Result<Outcome, FederationError> {
    let now = kit.clock.now();
    // The browser must hold the state it was sent with (a forged or
    // cross-browser callback does not), and it must be ours and unused.
    let (Some(sent), Some(kept)) = (params.state.as_deref(), params.cookie_state.as_deref()) else {
        return Err(FederationError::BadState);
    };
    if !constant_time_eq(sent.as_bytes(), kept.as_bytes()) {
        return Err(FederationError::BadState);
    }
    let state = SecretToken::parse(sent).ok_or(FederationError::BadState)?;
    let pending = store::take_state(&kit.pool, &state, now)
        .await?
        .ok_or(FederationError::BadState)?;
    if pending.provider != params.provider {
        return Err(FederationError::BadState);
    }
    if let Some(error) = params.error {
        let mut said: String = error
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(64)
            .collect();
        if let Some(d) = params.error_description {
            said.push_str(": ");
            said.extend(d.chars().filter(|c| !c.is_control()).take(200));
        }
        return Err(FederationError::UpstreamSaid(said));
    }
    let code = params
        .code
        .filter(|c| !c.is_empty() && c.len() <= 2048)
        .ok_or(FederationError::BadState)?;
    let spec = super::enabled_provider(kit, &pending.provider)
        .await?
        .ok_or(FederationError::UnknownProvider)?;
    let verifier = crate::crypto::unseal(
        seal_key(kit),
        state.hash().as_str().as_bytes(),
        &pending.pkce_verifier_sealed,
    )
    .and_then(|b| String::from_utf8(b).ok())
    .ok_or(FederationError::BadState)?;
    let secret = spec
        .client_secret(seal_key(kit))
        .map_err(|e| UpstreamError::Spec(e.to_string()))?;
    let asserted = upstream::redeem(
        &kit.config,
        &spec,
        secret,
        &code,
        params.iss.as_deref(),
        verifier,
        &pending.nonce,
    )
    .await?;
    if !pending.link_user_id.is_empty() {
        return link_to_signed_in_user(kit, &spec, &asserted, &pending, origin).await;
    }
    resolve(kit, &spec, asserted, pending.next, origin).await
}

/// A signed-in user linking another identity from the account page.
async fn link_to_signed_in_user(
    kit: &SignInKit,
    spec: &ProviderSpec,
    asserted: &UpstreamIdentity,
    pending: &PendingSignIn,
    origin: &Origin,
) -> Result<Outcome, FederationError> {
    let user_id = &pending.link_user_id;
    if let Some(existing) = store::find_identity(&kit.pool, &spec.name, &asserted.subject).await? {
        return if &existing.user_id == user_id {
            Ok(Outcome::Linked {
                next: pending.next.clone(),
            })
        } else {
            Err(FederationError::LinkedElsewhere)
        };
    }
    let email = asserted.email.clone().unwrap_or_default();
    let to = LinkTo {
        provider: &spec.name,
        subject: &asserted.subject,
        user_id,
        email: &email,
    };
    let detail = format!("{}: linked from the account page", spec.name);
    link_and_audit(kit, to, user_id, detail, origin).await?;
    Ok(Outcome::Linked {
        next: pending.next.clone(),
    })
}

async fn sign_in(
    kit: &SignInKit,
    user: User,
    spec: &ProviderSpec,
    next: String,
    origin: &Origin,
) -> Result<Outcome, FederationError> {
    let result = login::federated::sign_in(kit, user, &spec.name, origin)
        .await
        .map_err(|e| match e {
            LoginError::InvalidCredentials => FederationError::AccountUnavailable,
            other => FederationError::Login(other),
        })?;
    Ok(Outcome::SignIn {
        result: Box::new(result),
        next,
    })
}

/// The account rules of the module header, for an identity the upstream vouched for.
async fn resolve(
    kit: &SignInKit,
    spec: &ProviderSpec,
    asserted: UpstreamIdentity,
    next: String,
    origin: &Origin,
) -> Result<Outcome, FederationError> {
    let now = kit.clock.now();
    // Rule 1: by (provider, subject), never by email.
    if let Some(known) = store::find_identity(&kit.pool, &spec.name, &asserted.subject).await? {
        let user = identity::find_by_id(&kit.pool, &known.user_id)
            .await?
            .ok_or(FederationError::AccountUnavailable)?;
        store::touch_identity(&kit.pool, &known.id, now).await?;
        return sign_in(kit, user, spec, next, origin).await;
    }
    let email = asserted.email.as_deref().and_then(|e| Email::parse(e).ok());
    let holder = match &email {
        Some(email) => identity::find_by_email(&kit.pool, email).await?,
        None => None,
    };
    let Some(holder) = holder else {
        return provision(kit, spec, &asserted, email, next, origin).await;
    };
    let email_text = holder.email.as_str().to_owned();
    if spec.link == LinkPolicy::Never {
        return Err(FederationError::LinkRefused);
    }
    // Rule 3: the never-verified holder of a verified address loses its credentials first.
    if asserted.email_verified && !holder.email_verified {
        let cause = Cause::at(
            kit,
            Initiator::User,
            format!(
                "federated sign-in with {} claimed the unverified address",
                spec.name
            ),
        );
        match cascade::clear_unverified_account_and_link(
            &kit.pool,
            &holder.id,
            &spec.name,
            &asserted.subject,
            &email_text,
            &cause,
        )
        .await
        {
            Ok(Cleared::Done { sessions_ended }) => {
                audit::record(
                    &kit.pool,
                    EventKind::FederationAccountCleared,
                    event(
                        origin,
                        "",
                        &holder.id,
                        format!(
                            "{}: never-verified account claimed by a verified identity; password, second factors and passkeys removed, {sessions_ended} session(s) ended",
                            spec.name
                        ),
                    ),
                    now,
                )
                .await?;
                audit::record(
                    &kit.pool,
                    EventKind::FederatedIdentityLinked,
                    event(
                        origin,
                        "",
                        &holder.id,
                        format!("{}: linked after clearing", spec.name),
                    ),
                    now,
                )
                .await?;
                let user = identity::find_by_id(&kit.pool, &holder.id)
                    .await?
                    .ok_or(FederationError::AccountUnavailable)?;
                return sign_in(kit, user, spec, next, origin).await;
            }
            Ok(Cleared::NotUnverified) => return Err(FederationError::BadState),
            Err(StoreError::Conflict) => return Err(FederationError::LinkedElsewhere),
            Err(e) => return Err(e.into()),
        }
    }
    // Rule 2: automatic only with both sides verified, under the `verified` policy.
    if spec.link == LinkPolicy::Verified && asserted.email_verified && holder.email_verified {
        let to = LinkTo {
            provider: &spec.name,
            subject: &asserted.subject,
            user_id: &holder.id,
            email: &email_text,
        };
        let detail = format!("{}: linked automatically (both emails verified)", spec.name);
        link_and_audit(kit, to, "", detail, origin).await?;
        return sign_in(kit, holder, spec, next, origin).await;
    }
    // Otherwise the owner confirms by signing in to the account.
    let token = SecretToken::generate();
    store::save_pending_link(
        &kit.pool,
        &token,
        &PendingLink {
            provider: spec.name.clone(),
            subject: asserted.subject.clone(),
            user_id: holder.id.clone(),
            email: email_text.clone(),
            next,
            created_at: now,
        },
        now,
        PENDING_LINK_TTL_SECS,
    )
    .await?;
    audit::record(
        &kit.pool,
        EventKind::FederationLinkPending,
        event(
            origin,
            "",
            &holder.id,
            format!(
                "{}: waiting for the account's owner to sign in and confirm",
                spec.name
            ),
        ),
        now,
    )
    .await?;
    Ok(Outcome::ConfirmLink {
        token,
        email: email_text,
        provider: spec.name.clone(),
    })
}

/// Just-in-time provisioning: a new user with the verified email, the name
/// and the mapped roles, linked in the same breath.
async fn provision(
    kit: &SignInKit,
    spec: &ProviderSpec,
    asserted: &UpstreamIdentity,
    email: Option<Email>,
    next: String,
    origin: &Origin,
) -> Result<Outcome, FederationError> {
    if !spec.provision {
        return Err(FederationError::NoAccount);
    }
    let Some(email) = email.filter(|_| asserted.email_verified) else {
        return Err(FederationError::NoVerifiedEmail);
    };
    let now = kit.clock.now();
    let roles = spec.roles_for(&asserted.claims);
    let user = identity::create_user(
        &kit.pool,
        NewUser {
            email: email.clone(),
            display_name: asserted.name.clone(),
            roles: roles.clone(),
            password_hash: None,
            email_verified: true,
            must_change_password: false,
        },
        now,
    )
    .await?;
    if let Err(e) = store::link(
        &kit.pool,
        &spec.name,
        &asserted.subject,
        &user.id,
        email.as_str(),
        now,
    )
    .await
    {
        // Another first sign-in of the same identity won the race: undo ours.
        cascade::delete_user(&kit.pool, &user.id, now).await?;
        return Err(match e {
            StoreError::Conflict => FederationError::BadState,
            other => other.into(),
        });
    }
    let roles_text: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    audit::record(
        &kit.pool,
        EventKind::UserCreated,
        event(
            origin,
            "",
            &user.id,
            format!(
                "provisioned by federation provider {}; roles [{}]",
                spec.name,
                roles_text.join(", ")
            ),
        ),
        now,
    )
    .await?;
    sign_in(kit, user, spec, next, origin).await
}

/// What the confirmation page shows.
#[derive(Debug, Clone)]
pub struct LinkToConfirm {
    pub provider: String,
    pub email: String,
    pub user_id: String,
    pub next: String,
    pub created_at: crate::clock::UnixTime,
}

/// The pending link behind the browser's cookie, if still valid.
pub async fn pending_link(
    core: &Core,
    token: &SecretToken,
) -> Result<Option<LinkToConfirm>, StoreError> {
    Ok(
        store::peek_pending_link(&core.pool, token, core.clock.now())
            .await?
            .map(|p| LinkToConfirm {
                provider: p.provider,
                email: p.email,
                user_id: p.user_id,
                next: p.next,
                created_at: p.created_at,
            }),
    )
}

/// The owner confirms a pending link. `session_user` and `signed_in_at`
/// are the session's: it must be the account the link is for, signed in
/// (with every step the account asks) after the link was proposed.
pub async fn confirm_link(
    core: &Core,
    token: &SecretToken,
    session_user: &str,
    signed_in_at: crate::clock::UnixTime,
    origin: &Origin,
) -> Result<String, FederationError> {
    let now = core.clock.now();
    let pending = store::peek_pending_link(&core.pool, token, now)
        .await?
        .ok_or(FederationError::BadState)?;
    if pending.user_id != session_user {
        return Err(FederationError::WrongAccount);
    }
    if signed_in_at < pending.created_at {
        return Err(FederationError::SignInAgain);
    }
    if !store::take_pending_link(&core.pool, token).await? {
        return Err(FederationError::BadState);
    }
    let to = LinkTo {
        provider: &pending.provider,
        subject: &pending.subject,
        user_id: session_user,
        email: &pending.email,
    };
    let detail = format!("{}: linked after the owner signed in", pending.provider);
    link_and_audit(core, to, session_user, detail, origin).await?;
    Ok(pending.next)
}

/// An identity to link to a local account.
struct LinkTo<'a> {
    provider: &'a str,
    subject: &'a str,
    user_id: &'a str,
    email: &'a str,
}

/// Links the identity and audits it (`actor`: who did, empty for the
/// server's own decision); an identity already linked to another account is
/// [`FederationError::LinkedElsewhere`].
async fn link_and_audit(
    core: &Core,
    to: LinkTo<'_>,
    actor: &str,
    detail: String,
    origin: &Origin,
) -> Result<(), FederationError> {
    let now = core.clock.now();
    match store::link(
        &core.pool,
        to.provider,
        to.subject,
        to.user_id,
        to.email,
        now,
    )
    .await
    {
        Ok(_) => {}
        Err(StoreError::Conflict) => return Err(FederationError::LinkedElsewhere),
        Err(e) => return Err(e.into()),
    }
    audit::record(
        &core.pool,
        EventKind::FederatedIdentityLinked,
        event(origin, actor, to.user_id, detail),
        now,
    )
    .await?;
    Ok(())
}

/// Removes one of the user's identities, unless it is their last way in
/// (no password, no passkey, no other identity).
pub async fn unlink(
    kit: &SignInKit,
    user: &User,
    identity_id: &str,
    origin: &Origin,
) -> Result<(), FederationError> {
    let identities = store::identities_of_user(&kit.pool, &user.id).await?;
    let Some(target) = identities.iter().find(|i| i.id == identity_id) else {
        return Err(FederationError::BadState);
    };
    let other_way = user.password_hash.is_some()
        || crate::webauthn::has_passkeys(&kit.pool, &user.id).await?
        || identities.len() > 1;
    if !other_way {
        return Err(FederationError::LastWayIn);
    }
    if !store::unlink(&kit.pool, &user.id, identity_id).await? {
        return Err(FederationError::BadState);
    }
    audit::record(
        &kit.pool,
        EventKind::FederatedIdentityUnlinked,
        event(
            origin,
            &user.id,
            &user.id,
            format!("{}: unlinked by the user", target.provider),
        ),
        kit.clock.now(),
    )
    .await?;
    Ok(())
}
