//! Reading the issuer's HTTP answers with a size limit. `reqwest`'s
//! `bytes()`/`json()` read a body whole, whatever its size; every answer the
//! verifier reads (discovery, JWKS, introspection, the feed's token) goes
//! through [`read_capped`] instead, so an issuer — or whatever answers in its
//! place — cannot make an API allocate without bound.
//!
//! Must not: interpret the body.

/// Largest discovery document or JWKS accepted.
pub(crate) const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Largest small answer (introspection, token response) accepted.
pub(crate) const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The body, or why it was not read: larger than `max` bytes (announced or
/// actual), or the connection failed.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, String> {
    if response
        .content_length()
        .is_some_and(|length| length > max as u64)
    {
        return Err(format!("the answer is larger than {max} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > max {
            return Err(format!("the answer is larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// [`read_capped`], then JSON.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
    max: usize,
) -> Result<T, String> {
    let body = read_capped(response, max).await?;
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}
