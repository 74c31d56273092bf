//! `latchkey token inspect`: the real binary decodes a token for a person and,
//! with `--issuer`, verifies it against that issuer's JWKS, saying why it fails.

use latchkey::oauth::clients::{self, AccessTokenFormat, NewClient};
use latchkey::scope::Scope;

use crate::backend_test;
use crate::support::app::*;

async fn access_token(app: &TestApp) -> String {
    let new = NewClient {
        name: "svc".into(),
        confidential: true,
        redirect_uris: vec![],
        post_logout_redirect_uris: vec![],
        grant_types: vec!["client_credentials".into()],
        scopes: Scope::parse("read").expect("scope"),
        audience: String::new(),
        access_token_format: AccessTokenFormat::Jwt,
        access_token_lifetime_secs: None,
        signing_algorithm: None,
        id_token_signed_response_alg: None,
        first_party: false,
        backchannel_logout_uri: None,
        jwks: None,
        require_pkce: true,
    };
    let (client, secret) = clients::create(&app.state.pool, new, app.clock.now_secs())
        .await
        .expect("client");
    let body: serde_json::Value = new_client()
        .post(app.url("/oauth2/token"))
        .basic_auth(&client.id, Some(secret.expect("secret").expose()))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

async fn inspect(args: &[&str]) -> (bool, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .env_clear()
        .arg("token")
        .arg("inspect")
        .args(args)
        .output()
        .await
        .expect("run latchkey");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

backend_test!(
    token_inspect_decodes_verifies_and_explains_failures,
    |app: TestApp| async move {
        let token = access_token(&app).await;

        let (ok, text) = inspect(&[&token]).await;
        assert!(ok, "{text}");
        assert!(
            text.contains("\"typ\": \"at+jwt\"") && text.contains("\"scope\": \"read\""),
            "{text}"
        );
        assert!(
            text.contains("expires") && text.contains("in 15 min"),
            "times for people: {text}"
        );
        assert!(text.contains("not checked"), "{text}");

        let (ok, text) = inspect(&[&token, "--issuer", &app.base]).await;
        assert!(ok, "{text}");
        assert!(text.contains("signature   valid"), "{text}");

        // A tampered signature: refused, exit 1, and the reason is named.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut sig = latchkey::crypto::b64url_decode(&parts[2]).expect("b64");
        sig[5] ^= 1;
        parts[2] = latchkey::crypto::b64url(&sig);
        let (ok, text) = inspect(&[&parts.join("."), "--issuer", &app.base]).await;
        assert!(!ok, "a bad signature must fail: {text}");
        assert!(text.contains("INVALID: the signature is invalid"), "{text}");

        // The wrong issuer: the JWKS is fetched from there and `iss` does not match.
        let (ok, text) = inspect(&[
            &token,
            "--issuer",
            &format!("{}/", app.base),
            "--audience",
            "someone-else",
        ])
        .await;
        assert!(!ok, "{text}");
        assert!(
            text.contains("INVALID: the token is not meant for this audience"),
            "{text}"
        );

        // Not a JWT at all: a clear error.
        let (ok, text) = inspect(&["not-a-token"]).await;
        assert!(!ok);
        assert!(text.contains("three base64url parts"), "{text}");
    }
);
