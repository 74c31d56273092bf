//! `authorization_code` (RFC 6749 §4.1.3, OAuth 2.1) with mandatory PKCE
//! (a confidential client's opt-out and the downgrade protection are
//! `oauth::pkce::check_at_token`).
//!
//! The code is claimed atomically before anything else; a second use is a
//! replay: it fails with `invalid_grant` **and** revokes what the code
//! produced, in one transaction (`cascade::revoke_code_issue`): the refresh
//! family, the sign-in session its tokens carry as `sid` (so access tokens
//! minted later by refreshing the family are revoked too), and the first
//! access token's `jti`.
//!
//! Whichever of the two commits first: a replay marks the code replayed
//! (`authorize::redeem`), and the first use records what it issued only
//! with `RETURNING replayed_at` (`authorize::record_issued`). The row lock
//! orders the two, so either the replay reads what was recorded and revokes
//! it, or the first use reads the mark, revokes what it has just issued and
//! answers `invalid_grant` too. Each writes an audit record of what it did.

use super::TokenResponse;
use crate::audit::{self, Event, EventKind};
use crate::clock::UnixTime;
use crate::core::Core;
use crate::crypto::SecretToken;
use crate::identity;
use crate::oauth::authorize::{self, IssuedFromCode, RedeemedCode, Redemption};
use crate::oauth::clients::Client;
use crate::oauth::pkce::{self, PkcePolicy, TokenPkceError};
use crate::oauth::{OAuthError, OAuthErrorCode};
use crate::policy;
use crate::revocation::{Cause, Initiator};
use crate::store::StoreError;
use crate::tokens::{self, CodeIssueRevoked};

pub async fn grant(
    state: &Core,
    client: &Client,
    code: &str,
    redirect_uri: Option<&str>,
    verifier: Option<&str>,
) -> Result<TokenResponse, OAuthError> {
    if !client.allows_grant("authorization_code") {
        return Err(OAuthError::new(
            OAuthErrorCode::UnauthorizedClient,
            "this client may not use the authorization_code grant",
        ));
    }
    let invalid =
        || OAuthError::invalid_grant("the authorization code is invalid, expired or already used");
    let Some(code) = SecretToken::parse(code) else {
        return Err(invalid());
    };
    let now = state.clock.now();
    // One transaction from the redemption to the record of what it issued:
    // an outage anywhere in between leaves the code unused (the client's
    // retry works) and nothing issued. A refusal below still commits the
    // redemption: a code presented wrongly is spent.
    let mut tx = state.pool.begin().await.map_err(StoreError::from)?;
    let redeemed = match authorize::redeem_tx(&mut tx, &code, now).await? {
        Redemption::Unknown => {
            tx.commit().await.map_err(StoreError::from)?;
            return Err(invalid());
        }
        Redemption::Replayed { issued, user_id } => {
            tx.commit().await.map_err(StoreError::from)?;
            let detail = match &issued {
                Some(issued) => {
                    let revoked = revoke(state, &user_id, issued).await?;
                    format!(
                        "authorization code replayed by client {}; revoked what it issued: {}",
                        client.id,
                        revoked.describe()
                    )
                }
                None => format!(
                    "authorization code replayed by client {}; nothing issued from it yet (whatever its first use issues is revoked as it finishes)",
                    client.id
                ),
            };
            audit_replay(state, client, user_id, detail).await?;
            return Err(invalid());
        }
        Redemption::Fresh(r) => r,
    };
    if let Err(refusal) = admit(client, &redeemed, redirect_uri, verifier, now) {
        tx.commit().await.map_err(StoreError::from)?;
        return Err(refusal);
    }
    let user = match identity::find_by_id_tx(&mut tx, &redeemed.user_id)
        .await?
        .filter(|u| !u.disabled)
    {
        Some(user) => user,
        None => {
            tx.commit().await.map_err(StoreError::from)?;
            return Err(invalid());
        }
    };
    let issued = super::issue_user_tokens(
        state,
        &mut tx,
        super::UserGrant {
            client,
            user: &user,
            scope: &redeemed.scope,
            session_handle: Some(&redeemed.session_handle),
            nonce: redeemed.nonce.as_deref(),
            auth_time: redeemed.auth_time,
            amr: &redeemed.amr,
        },
    )
    .await?;
    // Remember what this code produced, so a replay can revoke it — unless
    // a replay came first: then revoke it now and hand out nothing.
    let record = IssuedFromCode {
        family: issued.family_id.clone(),
        jti: issued.access_jti.clone(),
        exp: issued.access_expires_at,
    };
    let replayed = authorize::record_issued_tx(&mut tx, &code, &record).await?;
    tx.commit().await.map_err(StoreError::from)?;
    if replayed {
        let revoked = revoke(state, &user.id, &record).await?;
        let detail = format!(
            "authorization code replayed by another request while client {} redeemed it; revoked what it had just issued, which was not handed out: {}",
            client.id,
            revoked.describe()
        );
        audit_replay(state, client, user.id, detail).await?;
        return Err(invalid());
    }
    Ok(issued.response)
}

/// The checks a fresh redemption must pass before anything is issued:
/// the code's client, expiry and redirect URI, PKCE, and the client's
/// policy as it is now.
fn admit(
    client: &Client,
    redeemed: &RedeemedCode,
    redirect_uri: Option<&str>,
    verifier: Option<&str>,
    now: UnixTime,
) -> Result<(), OAuthError> {
    let invalid =
        || OAuthError::invalid_grant("the authorization code is invalid, expired or already used");
    if redeemed.client_id != client.id || redeemed.expires_at <= now {
        return Err(invalid());
    }
    if redirect_uri != Some(redeemed.redirect_uri.as_str()) {
        return Err(OAuthError::invalid_grant(
            "redirect_uri does not match the authorization request",
        ));
    }
    let policy = PkcePolicy::of(client.confidential, client.require_pkce);
    match pkce::check_at_token(policy, redeemed.challenge.as_ref(), verifier) {
        Ok(()) => {}
        Err(TokenPkceError::VerifierMissing) => {
            return Err(OAuthError::invalid_request(
                "code_verifier is required (PKCE)",
            ))
        }
        Err(TokenPkceError::Mismatch) => {
            return Err(OAuthError::invalid_grant(
                "code_verifier does not match the code_challenge",
            ))
        }
        Err(TokenPkceError::Downgrade) => {
            return Err(OAuthError::invalid_grant(
                "a code_verifier was sent but the authorization request had no code_challenge",
            ))
        }
        Err(TokenPkceError::NoLongerAllowed) => {
            return Err(OAuthError::invalid_grant(
                "the code was issued without PKCE, which this client may no longer do",
            ))
        }
    }
    // The client's policy, again: it may have changed since the code was
    // issued (nobody can be asked to sign in again here).
    if let Err(refusal) = policy::admit_without_interaction(client, &redeemed.amr) {
        return Err(OAuthError::invalid_grant(refusal.describe()));
    }
    Ok(())
}

/// Revokes what a code issued, in one transaction.
async fn revoke(
    state: &Core,
    user_id: &str,
    issued: &IssuedFromCode,
) -> Result<CodeIssueRevoked, OAuthError> {
    let cause = Cause::new(
        state.clock.now(),
        Initiator::Policy,
        "authorization code replay",
    )
    .waking(&state.revocation_feed);
    let issue = tokens::CodeIssue {
        user_id,
        family: issued.family.as_deref(),
        access_token: Some(tokens::DeniedToken {
            jti: &issued.jti,
            subject: user_id,
            expires_at: issued.exp,
        }),
    };
    Ok(crate::cascade::revoke_code_issue(
        &state.pool,
        issue,
        state.config.tokens.leeway_secs,
        &cause,
    )
    .await?)
}

async fn audit_replay(
    state: &Core,
    client: &Client,
    user_id: String,
    detail: String,
) -> Result<(), OAuthError> {
    audit::record(
        &state.pool,
        EventKind::AuthorizationCodeReplay,
        Event {
            actor: client.id.clone(),
            subject: user_id,
            detail,
            ..Event::default()
        },
        state.clock.now(),
    )
    .await?;
    Ok(())
}
