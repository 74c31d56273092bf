//! OpenID Connect Back-Channel Logout 1.0: when a session ends, every client
//! that received tokens in it and registered a `backchannel_logout_uri` gets
//! a signed logout token (`typ: logout+jwt`, with `sid` and `sub`), POSTed in
//! the background with up to three attempts (1 s, 5 s apart).

use serde_json::json;
use sqlx::Row as _;

use crate::core::Core;
use crate::oauth::clients;

const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Clients that got tokens from this session.
async fn clients_of_session(
    state: &Core,
    session_handle: &str,
) -> Result<Vec<String>, crate::store::StoreError> {
    let rows = sqlx::query(
        "SELECT DISTINCT client_id FROM authorization_codes WHERE session_handle = $1
         UNION SELECT DISTINCT client_id FROM refresh_families WHERE session_handle = $1",
    )
    .bind(session_handle)
    .fetch_all(&state.pool)
    .await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.try_get::<String, _>("client_id").ok())
        .collect())
}

/// Sends logout tokens for an ended session. Returns at once; delivery runs
/// in the background (the returned handle lets tests wait for it).
pub async fn session_ended(
    state: &Core,
    user_id: &str,
    session_handle: &str,
) -> Option<tokio::task::JoinHandle<Vec<(String, bool)>>> {
    let client_ids = match clients_of_session(state, session_handle).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list clients for back-channel logout");
            return None;
        }
    };
    let now = state.clock.now();
    let mut deliveries = Vec::new();
    for id in client_ids {
        let Ok(Some(client)) = clients::find(&state.pool, &id).await else {
            continue;
        };
        let Some(uri) = client.backchannel_logout_uri.clone() else {
            continue;
        };
        let claims = json!({
            "iss": state.config.issuer_str(), "aud": client.id, "iat": now, "exp": now + 120,
            "jti": uuid::Uuid::now_v7().to_string(), "sub": user_id, "sid": session_handle,
            "events": { EVENT: {} },
        });
        // Signed like the client's ID tokens (Back-Channel Logout 1.0 §2.4: the same keys).
        let alg = state.keys.id_token_algorithm(client.id_token_algorithm());
        let Ok(key) = state.keys.signing_key(alg, now) else {
            continue;
        };
        let Ok(token) = key.sign("logout+jwt", &claims) else {
            continue;
        };
        deliveries.push((client.id, uri, token));
    }
    if deliveries.is_empty() {
        return None;
    }
    Some(tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        let mut results = Vec::new();
        for (client_id, uri, token) in deliveries {
            let mut delivered = false;
            for (attempt, wait) in [0u64, 1, 5].into_iter().enumerate() {
                if wait > 0 {
                    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
                }
                match http
                    .post(&uri)
                    .form(&[("logout_token", token.as_str())])
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => {
                        delivered = true;
                        break;
                    }
                    Ok(r) => {
                        tracing::warn!(%client_id, status = %r.status(), attempt, "back-channel logout refused")
                    }
                    Err(e) => {
                        tracing::warn!(%client_id, error = %e, attempt, "back-channel logout failed")
                    }
                }
            }
            results.push((client_id, delivered));
        }
        results
    }))
}
