//! Discovery is derived, not hand-written (issue #12, item 13): every value
//! the metadata advertises is exercised here by a real request that uses it,
//! and the values a relying party could try that are *not* advertised
//! (`client_secret_jwt`, `password`, `token`, `plain`, ...) are shown not to
//! work. A client registered with a JWK Set authenticates with
//! `private_key_jwt` only: it never gets a working secret.

use std::collections::BTreeSet;

use latchkey::oauth::clients::{self, NewClient};
use latchkey_verify::jose::{self, Algorithm, JwkSet, SigningKey};
use serde_json::{json, Value};
use sqlx::Row as _;

use crate::backend_test;
use crate::support::app::*;
use crate::support::jwt::{jwt_header, jwt_payload};
use crate::support::oauth::{client_redirect, signed_in_browser, Pkce};
use crate::support::oauth::{client_spec, post_as, register, Answer, Auth, TestClient};

use crate::support::oauth::CALLBACK as REDIRECT;
use crate::support::oauth::DEVICE_GRANT;
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

async fn metadata(app: &TestApp) -> Value {
    let response = new_client()
        .get(app.url("/.well-known/openid-configuration"))
        .send()
        .await
        .expect("discovery");
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.expect("json");
    let other: Value = new_client()
        .get(app.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .expect("RFC 8414 metadata")
        .json()
        .await
        .expect("json");
    assert_eq!(doc, other, "one document at both addresses");
    doc
}

/// The string values of the array `name` of the metadata.
fn advertised(doc: &Value, name: &str) -> BTreeSet<String> {
    doc[name]
        .as_array()
        .unwrap_or_else(|| panic!("{name} is not an array in {doc}"))
        .iter()
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect()
}

/// `advertised` plus `extra`: every value a test tries.
fn candidates(advertised: &BTreeSet<String>, extra: &[&str]) -> Vec<String> {
    let mut all = advertised.clone();
    all.extend(extra.iter().map(|s| (*s).to_owned()));
    all.into_iter().collect()
}

async fn answer_of(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    Answer {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

/// A private key of `alg` for a client's JWK Set.
fn client_key(alg: Algorithm) -> SigningKey {
    match alg {
        Algorithm::HS256 => {
            SigningKey::from_bytes(alg, &latchkey::crypto::random_bytes::<32>()).expect("key")
        }
        _ => SigningKey::generate(alg, latchkey_verify::jose::RsaBits::B2048).expect("key"),
    }
}

/// A client (`client_credentials`, `refresh_token`) whose JWK Set holds `key`'s public part.
async fn key_client(app: &TestApp, key: &SigningKey) -> String {
    let jwks = JwkSet {
        keys: vec![key.public_jwk().expect("a public key")],
    };
    let (client, secret) = clients::create(
        &app.state.pool,
        NewClient {
            jwks: Some(jwks),
            ..client_spec(
                "key client",
                true,
                &["client_credentials", "refresh_token"],
                "read",
            )
        },
        app.clock.now_secs(),
    )
    .await
    .expect("create");
    assert!(secret.is_none(), "a client with a JWK Set gets no secret");
    client.id
}

fn assertion(app: &TestApp, key: &SigningKey, client_id: &str, path: &str) -> String {
    let now = app.clock.now_secs();
    let jti = latchkey::crypto::b64url(&latchkey::crypto::random_bytes::<16>());
    key.sign(
        "JWT",
        &json!({ "iss": client_id, "sub": client_id, "aud": app.url(path), "iat": now, "exp": now + 60, "jti": jti }),
    )
    .expect("sign")
}

/// `client_secret_jwt`: an HS256 assertion keyed with the client secret.
fn secret_assertion(app: &TestApp, client: &TestClient, path: &str) -> String {
    let key = SigningKey::from_bytes(
        Algorithm::HS256,
        client.secret.as_deref().expect("secret").as_bytes(),
    )
    .expect("hs256 key");
    assertion(app, &key, &client.id, path)
}

/// POSTs `params` to `path` authenticated with `method`.
async fn post_with_method(
    app: &TestApp,
    path: &str,
    method: &str,
    clients: &MethodClients,
    params: &[(&str, &str)],
) -> Answer {
    let mut form: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut request = new_client().post(app.url(path));
    let secret = clients.confidential.secret.clone().expect("secret");
    match method {
        "client_secret_basic" => {
            request = request.basic_auth(&clients.confidential.id, Some(&secret));
        }
        "client_secret_post" => {
            form.push(("client_id".into(), clients.confidential.id.clone()));
            form.push(("client_secret".into(), secret));
        }
        "private_key_jwt" => {
            form.push(("client_assertion_type".into(), ASSERTION_TYPE.into()));
            form.push((
                "client_assertion".into(),
                assertion(app, &clients.key, &clients.key_client, path),
            ));
        }
        "client_secret_jwt" => {
            form.push(("client_assertion_type".into(), ASSERTION_TYPE.into()));
            form.push((
                "client_assertion".into(),
                secret_assertion(app, &clients.confidential, path),
            ));
        }
        "none" => form.push(("client_id".into(), clients.public.id.clone())),
        "tls_client_auth" | "self_signed_tls_client_auth" => {
            // No client certificate can be presented: the client names itself only.
            form.push(("client_id".into(), clients.confidential.id.clone()));
        }
        other => panic!("no way to try {other}"),
    }
    answer_of(request.form(&form).send().await.expect("post")).await
}

struct MethodClients {
    confidential: TestClient,
    public: TestClient,
    key_client: String,
    key: SigningKey,
}

async fn method_clients(app: &TestApp) -> MethodClients {
    let confidential = register(
        app,
        client_spec(
            "secret client",
            true,
            &["client_credentials", "refresh_token"],
            "read",
        ),
    )
    .await;
    let public = register(
        app,
        client_spec(
            "public client",
            false,
            &[DEVICE_GRANT, "refresh_token"],
            "openid",
        ),
    )
    .await;
    let key = client_key(Algorithm::EdDSA);
    let key_client = key_client(app, &key).await;
    MethodClients {
        confidential,
        public,
        key_client,
        key,
    }
}

/// Client authentication succeeded: anything but `invalid_client`.
fn authenticated(answer: &Answer) -> bool {
    answer.status != 401 && answer.body["error"] != "invalid_client"
}

backend_test!(
    discovery_advertises_exactly_the_client_authentication_methods_that_work,
    |app: TestApp| async move {
        let doc = metadata(&app).await;
        let clients = method_clients(&app).await;
        let unadvertised = [
            "client_secret_jwt",
            "tls_client_auth",
            "self_signed_tls_client_auth",
        ];

        // The token endpoint: a refresh with an unknown token is `invalid_grant`
        // once the client is authenticated, `invalid_client` otherwise.
        let methods = advertised(&doc, "token_endpoint_auth_methods_supported");
        for method in candidates(&methods, &unadvertised) {
            let answer = post_with_method(
                &app,
                "/oauth2/token",
                &method,
                &clients,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", "unknown"),
                ],
            )
            .await;
            assert_eq!(
                authenticated(&answer),
                methods.contains(&method),
                "token endpoint, {method}: advertised = {}, answer {answer:?}",
                methods.contains(&method)
            );
        }
        for method in [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
        ] {
            let answer = post_with_method(
                &app,
                "/oauth2/token",
                method,
                &clients,
                &[("grant_type", "client_credentials")],
            )
            .await;
            assert_eq!(
                answer.status, 200,
                "client_credentials with {method}: {answer:?}"
            );
        }

        // Revocation (RFC 7009 answers 200 to an authenticated client).
        let methods = advertised(&doc, "revocation_endpoint_auth_methods_supported");
        for method in candidates(&methods, &unadvertised) {
            let answer = post_with_method(
                &app,
                "/oauth2/revoke",
                &method,
                &clients,
                &[("token", "unknown")],
            )
            .await;
            assert_eq!(
                answer.status == 200,
                methods.contains(&method),
                "revocation, {method}: {answer:?}"
            );
        }

        // Introspection: confidential clients only.
        let methods = advertised(&doc, "introspection_endpoint_auth_methods_supported");
        for method in candidates(&methods, &[&unadvertised[..], &["none"]].concat()) {
            let answer = post_with_method(
                &app,
                "/oauth2/introspect",
                &method,
                &clients,
                &[("token", "unknown")],
            )
            .await;
            assert_eq!(
                answer.status == 200 && answer.body["active"] == false,
                methods.contains(&method),
                "introspection, {method}: {answer:?}"
            );
        }

        // The algorithms of private_key_jwt assertions, at each endpoint.
        for (endpoint, name) in [
            (
                "/oauth2/token",
                "token_endpoint_auth_signing_alg_values_supported",
            ),
            (
                "/oauth2/revoke",
                "revocation_endpoint_auth_signing_alg_values_supported",
            ),
            (
                "/oauth2/introspect",
                "introspection_endpoint_auth_signing_alg_values_supported",
            ),
        ] {
            let algs = advertised(&doc, name);
            for alg in candidates(&algs, &["HS256"]) {
                let alg = Algorithm::parse(&alg).expect("a JOSE algorithm");
                let key = client_key(alg);
                let answer = if alg == Algorithm::HS256 {
                    // A symmetric key cannot be registered: the closest is the
                    // client's secret as the HMAC key (client_secret_jwt).
                    post_with_method(
                        &app,
                        endpoint,
                        "client_secret_jwt",
                        &clients,
                        &[("token", "x"), ("grant_type", "client_credentials")],
                    )
                    .await
                } else {
                    let id = key_client(&app, &key).await;
                    let mut form = vec![
                        ("client_assertion_type", ASSERTION_TYPE.to_owned()),
                        ("client_assertion", assertion(&app, &key, &id, endpoint)),
                        ("grant_type", "client_credentials".to_owned()),
                        ("token", "unknown".to_owned()),
                    ];
                    if endpoint != "/oauth2/token" {
                        form.retain(|(k, _)| *k != "grant_type");
                    }
                    answer_of(
                        new_client()
                            .post(app.url(endpoint))
                            .form(&form)
                            .send()
                            .await
                            .expect("post"),
                    )
                    .await
                };
                assert_eq!(
                    answer.status == 200,
                    algs.contains(alg.as_str()),
                    "{endpoint} with a {alg} assertion: {answer:?}"
                );
            }
        }
    }
);

// ---------------------------------------------------------------- the authorization endpoint

/// A first-party confidential client allowed every grant and the standard scopes.
async fn rp(app: &TestApp, signing_algorithm: Option<&str>) -> TestClient {
    register(
        app,
        NewClient {
            redirect_uris: vec![REDIRECT.into()],
            first_party: true,
            signing_algorithm: signing_algorithm.map(str::to_owned),
            id_token_signed_response_alg: signing_algorithm.map(str::to_owned),
            ..client_spec(
                "rp",
                true,
                &[
                    "authorization_code",
                    "refresh_token",
                    "client_credentials",
                    DEVICE_GRANT,
                ],
                "openid profile email offline_access",
            )
        },
    )
    .await
}

fn authorize_params(
    client: &TestClient,
    pkce: &Pkce,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = [
        ("response_type", "code"),
        ("client_id", client.id.as_str()),
        ("redirect_uri", REDIRECT),
        ("scope", "openid"),
        ("state", "st"),
        ("nonce", "n-0S6_WzA2Mj"),
        ("code_challenge", pkce.challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (k, v) in extra {
        params.retain(|(name, _)| name != k);
        if !v.is_empty() {
            params.push(((*k).to_owned(), (*v).to_owned()));
        }
    }
    params
}

async fn authorize(
    app: &TestApp,
    browser: &reqwest::Client,
    params: &[(String, String)],
) -> reqwest::Response {
    browser
        .get(app.url("/oauth2/authorize"))
        .header("accept", "text/html")
        .query(params)
        .send()
        .await
        .expect("authorize")
}

/// The `error` of an authorization response redirected to the client (or `None` for a code).
fn redirect_error(response: &reqwest::Response) -> Option<String> {
    let (target, query) = client_redirect(response);
    assert_eq!(target, REDIRECT);
    match query.get("error") {
        Some(e) => Some(e.clone()),
        None => {
            assert!(query.contains_key("code"), "{query:?}");
            None
        }
    }
}

async fn redeem(app: &TestApp, client: &TestClient, code: &str, pkce: &Pkce) -> Answer {
    post_as(
        app,
        "/oauth2/token",
        client,
        Auth::Basic,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", pkce.verifier.as_str()),
        ],
    )
    .await
}

backend_test!(
    discovery_advertises_exactly_the_grants_response_types_modes_prompts_and_pkce_methods_that_work,
    |app: TestApp| async move {
        let doc = metadata(&app).await;
        let browser = signed_in_browser(&app, "ada@example.com").await;
        let client = rp(&app, None).await;
        let pkce = Pkce::random();
        assert_eq!(doc["authorization_response_iss_parameter_supported"], true);

        // Response types.
        let types = advertised(&doc, "response_types_supported");
        for rt in candidates(
            &types,
            &["token", "id_token", "code id_token", "code token", "none"],
        ) {
            let response = authorize(
                &app,
                &browser,
                &authorize_params(&client, &pkce, &[("response_type", &rt)]),
            )
            .await;
            let error = redirect_error(&response);
            assert_eq!(
                error.is_none(),
                types.contains(&rt),
                "response_type {rt}: {error:?}"
            );
            if !types.contains(&rt) {
                assert_eq!(error.as_deref(), Some("unsupported_response_type"), "{rt}");
            }
        }
        // Response modes.
        let modes = advertised(&doc, "response_modes_supported");
        for mode in candidates(
            &modes,
            &["fragment", "web_message", "query.jwt", "form_post.jwt"],
        ) {
            let response = authorize(
                &app,
                &browser,
                &authorize_params(&client, &pkce, &[("response_mode", &mode)]),
            )
            .await;
            let works = match mode.as_str() {
                "form_post" => {
                    response.status() == 200
                        && response
                            .text()
                            .await
                            .expect("html")
                            .contains("name=\"code\"")
                }
                _ => response.status() == 303 && redirect_error(&response).is_none(),
            };
            assert_eq!(works, modes.contains(&mode), "response_mode {mode}");
        }
        // PKCE methods.
        let methods = advertised(&doc, "code_challenge_methods_supported");
        for method in candidates(&methods, &["plain", "S512"]) {
            let challenge = if method == "plain" {
                pkce.verifier.clone()
            } else {
                pkce.challenge.clone()
            };
            let response = authorize(
                &app,
                &browser,
                &authorize_params(
                    &client,
                    &pkce,
                    &[
                        ("code_challenge", &challenge),
                        ("code_challenge_method", &method),
                    ],
                ),
            )
            .await;
            assert_eq!(
                redirect_error(&response).is_none(),
                methods.contains(&method),
                "PKCE {method}"
            );
        }
        // Prompt values: each is understood (a code, a sign-in page or a
        // consent page), an unknown one is refused. (The sign-in is older
        // than the requests, so `login` must ask again.)
        app.clock.advance(5);
        let prompts = advertised(&doc, "prompt_values_supported");
        for prompt in candidates(&prompts, &["create", "bogus"]) {
            let response = authorize(
                &app,
                &browser,
                &authorize_params(&client, &pkce, &[("prompt", &prompt)]),
            )
            .await;
            let location = response
                .headers()
                .get("location")
                .map(|v| v.to_str().expect("ascii").to_owned())
                .unwrap_or_default();
            let understood = match prompt.as_str() {
                "none" => redirect_error(&response).is_none(),
                "login" | "select_account" => location.starts_with("/login"),
                "consent" => {
                    response.status() == 200
                        && response.text().await.expect("html").contains("decision")
                }
                _ => !location.contains("error=invalid_request"),
            };
            assert_eq!(
                understood,
                prompts.contains(&prompt),
                "prompt {prompt}: {location}"
            );
        }
        // Request objects are not supported, and say so.
        assert_eq!(doc["request_parameter_supported"], false);
        let response = authorize(
            &app,
            &browser,
            &authorize_params(&client, &pkce, &[("request", "e30.e30.")]),
        )
        .await;
        assert_eq!(
            redirect_error(&response).as_deref(),
            Some("request_not_supported")
        );
        assert_eq!(doc["request_uri_parameter_supported"], false);
        let response = authorize(
            &app,
            &browser,
            &authorize_params(
                &client,
                &pkce,
                &[("request_uri", "https://rp.example.com/r")],
            ),
        )
        .await;
        assert_eq!(
            redirect_error(&response).as_deref(),
            Some("request_uri_not_supported")
        );

        // Grant types: each advertised one is accepted by the token endpoint
        // (and works end to end below); others are `unsupported_grant_type`.
        let grants = advertised(&doc, "grant_types_supported");
        for grant in candidates(
            &grants,
            &[
                "password",
                "implicit",
                "urn:ietf:params:oauth:grant-type:jwt-bearer",
                "urn:ietf:params:oauth:grant-type:token-exchange",
                "urn:ietf:params:oauth:grant-type:saml2-bearer",
            ],
        ) {
            let answer = post_as(
                &app,
                "/oauth2/token",
                &client,
                Auth::Basic,
                &[("grant_type", grant.as_str())],
            )
            .await;
            assert_eq!(
                answer.body["error"] != "unsupported_grant_type",
                grants.contains(&grant),
                "grant_type {grant}: {answer:?}"
            );
        }
        // authorization_code and refresh_token, end to end.
        let response = authorize(
            &app,
            &browser,
            &authorize_params(&client, &pkce, &[("scope", "openid offline_access")]),
        )
        .await;
        let (_, query) = client_redirect(&response);
        assert_eq!(query["iss"], doc["issuer"].as_str().expect("issuer"));
        let tokens = redeem(&app, &client, &query["code"], &pkce).await;
        assert_eq!(tokens.status, 200, "{tokens:?}");
        let refreshed = post_as(
            &app,
            "/oauth2/token",
            &client,
            Auth::Basic,
            &[
                ("grant_type", "refresh_token"),
                (
                    "refresh_token",
                    tokens.body["refresh_token"].as_str().expect("refresh"),
                ),
            ],
        )
        .await;
        assert_eq!(refreshed.status, 200, "{refreshed:?}");
        // client_credentials.
        let machine = post_as(
            &app,
            "/oauth2/token",
            &client,
            Auth::Basic,
            &[("grant_type", "client_credentials"), ("scope", "")],
        )
        .await;
        assert_eq!(machine.status, 200, "{machine:?}");
        // The device grant: the flow starts, and its poll is understood.
        let started = post_as(
            &app,
            "/oauth2/device_authorization",
            &client,
            Auth::Basic,
            &[("scope", "openid")],
        )
        .await;
        assert_eq!(started.status, 200, "{started:?}");
        let poll = post_as(
            &app,
            "/oauth2/token",
            &client,
            Auth::Basic,
            &[
                ("grant_type", DEVICE_GRANT),
                (
                    "device_code",
                    started.body["device_code"].as_str().expect("device_code"),
                ),
            ],
        )
        .await;
        assert_eq!(poll.body["error"], "authorization_pending", "{poll:?}");
    }
);

backend_test!(
    discovery_advertises_exactly_the_scopes_claims_and_signing_algorithms_that_work,
    config = |c: &mut latchkey::Config| {
        c.tokens.additional_algorithms = vec!["EdDSA".into(), "RS256".into()];
    },
    |app: TestApp| async move {
        let doc = metadata(&app).await;
        let ada = app
            .create_user("ada@example.com", crate::support::oauth::PASSWORD, &[])
            .await;
        sqlx::query("UPDATE users SET display_name = 'Ada Lovelace' WHERE id = $1")
            .bind(&ada.id)
            .execute(&app.state.pool)
            .await
            .expect("name");
        let browser = new_client();
        assert_eq!(
            app.login_with(&browser, "ada@example.com", crate::support::oauth::PASSWORD)
                .await
                .status(),
            303
        );
        let scopes = advertised(&doc, "scopes_supported");
        let claims_supported = advertised(&doc, "claims_supported");
        let algs = advertised(&doc, "id_token_signing_alg_values_supported");
        assert!(
            !algs.contains("HS256") && !algs.contains("none"),
            "{algs:?}"
        );
        let mut seen_claims = BTreeSet::new();
        for alg in &algs {
            let client = rp(&app, Some(alg)).await;
            let pkce = Pkce::random();
            let all_scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
            let response = authorize(
                &app,
                &browser,
                &authorize_params(&client, &pkce, &[("scope", &all_scopes.join(" "))]),
            )
            .await;
            let (_, query) = client_redirect(&response);
            let tokens = redeem(&app, &client, &query["code"], &pkce).await;
            assert_eq!(tokens.status, 200, "{tokens:?}");
            let id_token = tokens.body["id_token"].as_str().expect("an ID token");
            assert_eq!(
                jwt_header(id_token)["alg"],
                alg.as_str(),
                "ID token signed with {alg}"
            );
            // And it verifies with the published key of that algorithm.
            let jwks: JwkSet = new_client()
                .get(app.url("/.well-known/jwks.json"))
                .send()
                .await
                .expect("jwks")
                .json()
                .await
                .expect("json");
            let (keys, _) = jose::KeySet::from_jwks(&jwks);
            let validation = jose::Validation {
                audiences: vec![client.id.clone()],
                typ: Some("JWT".into()),
                ..jose::Validation::new(doc["issuer"].as_str().expect("issuer"))
            };
            jose::verify::<Value>(id_token, &keys, &validation, app.clock.now_secs())
                .unwrap_or_else(|e| panic!("{alg}: {e}"));
            // Every scope did something: offline_access a refresh token,
            // openid an ID token, profile and email their claims.
            assert!(tokens.body["refresh_token"].is_string(), "offline_access");
            let userinfo: Value = new_client()
                .get(app.url("/oauth2/userinfo"))
                .bearer_auth(tokens.body["access_token"].as_str().expect("access token"))
                .send()
                .await
                .expect("userinfo")
                .json()
                .await
                .expect("json");
            assert_eq!(userinfo["name"], "Ada Lovelace", "profile");
            assert_eq!(userinfo["email"], "ada@example.com", "email");
            for claims in [jwt_payload(id_token), userinfo] {
                for name in claims.as_object().expect("claims").keys() {
                    assert!(
                        claims_supported.contains(name),
                        "{name} is released but not in claims_supported"
                    );
                    seen_claims.insert(name.clone());
                }
            }
        }
        assert_eq!(
            seen_claims, claims_supported,
            "every advertised claim appears in a real ID token or UserInfo answer"
        );
        assert_eq!(
            scopes,
            ["email", "offline_access", "openid", "profile"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            "each of these was exercised above"
        );
        // An algorithm the deployment has no key for is refused for a client.
        assert_eq!(
            algs,
            app.state
                .keys
                .algorithms()
                .iter()
                .filter(|a| a.is_asymmetric())
                .map(|a| a.as_str().to_owned())
                .collect(),
        );
    }
);

// ---------------------------------------------------------------- private_key_jwt clients have no secret

backend_test!(
    client_registered_with_a_jwk_set_has_no_working_secret,
    |app: TestApp| async move {
        // Through the domain, as the CLI's --jwks-file does.
        let key = client_key(Algorithm::ES256);
        let id = key_client(&app, &key).await;
        let stored: Option<String> = sqlx::query("SELECT secret_hash FROM clients WHERE id = $1")
            .bind(&id)
            .fetch_one(&app.state.pool)
            .await
            .expect("row")
            .try_get("secret_hash")
            .expect("secret_hash");
        assert_eq!(stored, None, "no secret is stored");
        assert!(
            clients::rotate_secret(&app.state.pool, &id, app.clock.now_secs())
                .await
                .expect("rotate")
                .is_none(),
            "and none can be added by rotating"
        );
        // A client registered before this rule got a secret next to its keys:
        // the secret does not authenticate it any more.
        let (legacy, secret) = clients::create(
            &app.state.pool,
            client_spec("legacy key client", true, &["client_credentials"], "read"),
            app.clock.now_secs(),
        )
        .await
        .expect("create");
        let secret = secret.expect("a secret client").expose().to_owned();
        let jwks = JwkSet {
            keys: vec![key.public_jwk().expect("jwk")],
        };
        clients::set_jwks(
            &app.state.pool,
            &legacy.id,
            Some(&jwks),
            app.clock.now_secs(),
        )
        .await
        .expect("set jwks");
        for (what, request) in [
            (
                "basic",
                new_client()
                    .post(app.url("/oauth2/token"))
                    .basic_auth(&legacy.id, Some(&secret))
                    .form(&[("grant_type", "client_credentials")]),
            ),
            (
                "post",
                new_client().post(app.url("/oauth2/token")).form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", legacy.id.as_str()),
                    ("client_secret", secret.as_str()),
                ]),
            ),
        ] {
            let answer = answer_of(request.send().await.expect("token")).await;
            assert_eq!(answer.status, 401, "{what}: {answer:?}");
            assert_eq!(answer.body["error"], "invalid_client", "{what}");
        }
        let answer = answer_of(
            new_client()
                .post(app.url("/oauth2/token"))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_assertion_type", ASSERTION_TYPE),
                    (
                        "client_assertion",
                        &assertion(&app, &key, &legacy.id, "/oauth2/token"),
                    ),
                ])
                .send()
                .await
                .expect("token"),
        )
        .await;
        assert_eq!(answer.status, 200, "its keys still work: {answer:?}");
    }
);

async fn cli_jwks_file_client_has_no_secret(backend: Backend) {
    use crate::support::app::{cli_database, drop_database};
    use crate::support::cli::{env, latchkey};
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(url) = cli_database(backend, dir.path()).await else {
        return;
    };
    let key = client_key(Algorithm::ES256);
    std::fs::write(
        dir.path().join("jwks.json"),
        serde_json::to_string(&JwkSet {
            keys: vec![key.public_jwk().expect("jwk")],
        })
        .expect("json"),
    )
    .expect("write");
    let env = env(&[("LATCHKEY_DATABASE_URL", &url)]);
    let created = latchkey(
        dir.path(),
        &env,
        &[
            "client",
            "create",
            "--name",
            "svc",
            "--grant",
            "client_credentials",
            "--scope",
            "read",
            "--jwks-file",
            "jwks.json",
            "--json",
        ],
        None,
    )
    .await;
    created.assert_success("a private_key_jwt client");
    let doc = created.json();
    assert!(
        doc.get("client_secret").is_none(),
        "no secret is printed: {doc}"
    );
    assert_eq!(doc["confidential"], true, "{doc}");
    let id = doc["client_id"].as_str().expect("id").to_owned();
    let text = latchkey(
        dir.path(),
        &env,
        &[
            "client",
            "create",
            "--name",
            "svc2",
            "--grant",
            "client_credentials",
            "--jwks-file",
            "jwks.json",
        ],
        None,
    )
    .await;
    text.assert_success("the same without --json");
    assert!(!text.stdout.contains("client_secret"), "{}", text.stdout);
    latchkey(dir.path(), &env, &["client", "rotate-secret", &id], None)
        .await
        .assert_failure("no secret to rotate", &["private_key_jwt"]);
    if backend == Backend::Postgres {
        drop_database(&url).await;
    }
}

mod cli_client_created_with_a_jwks_file_prints_and_stores_no_secret {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        cli_jwks_file_client_has_no_secret(Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        cli_jwks_file_client_has_no_secret(Backend::Postgres).await;
    }
}
