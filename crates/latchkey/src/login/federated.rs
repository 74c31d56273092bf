//! The end of a federated sign-in: the upstream vouched for the user
//! (`federation::accounts` decided which local user that is); the local
//! policy still applies. A disabled account is refused like a wrong
//! password; a user with a second factor gets a challenge whose first
//! method is `fed` (the second step then adds the factor and `mfa`);
//! anyone else gets a session with `amr = ["fed"]`.
//!
//! Must not: know about upstreams, identities or HTTP.

use super::{complete, second_factors, LoginError, SignIn};
use crate::core::SignInKit;
use crate::identity::User;
use crate::session::Origin;

/// RFC 8176 "federated authentication".
pub const AMR_FEDERATED: &str = "fed";

pub async fn sign_in(
    state: &SignInKit,
    user: User,
    provider: &str,
    origin: &Origin,
) -> Result<SignIn, LoginError> {
    if user.disabled {
        return Err(LoginError::InvalidCredentials);
    }
    let factors = second_factors(state, &user.id).await?;
    if factors.any() {
        let challenge =
            crate::mfa::start_challenge(&state.pool, &user.id, &[AMR_FEDERATED], state.clock.now())
                .await?;
        return Ok(SignIn::SecondFactorDue {
            challenge,
            user,
            factors,
        });
    }
    let how = format!("federated: {provider}");
    Ok(SignIn::Complete(
        complete(state, user, &[AMR_FEDERATED], &how, origin).await?,
    ))
}
