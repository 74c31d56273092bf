//! CLI glue for signing keys, OAuth clients and token inspection.
//!
//! Must not: hold rules; it calls `keys`, `oauth::clients` and the shared
//! JOSE verifier exactly as the server does.

use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::Subcommand;
use latchkey_verify::jose::{self, JwkSet, KeySet, Validation};

use crate::clock::{format_utc, Clock as _, SystemClock};
use crate::config::Config;
use crate::keys::KeyRing;
use crate::oauth::clients::{self, AccessTokenFormat, NewClient, GRANT_TYPES};
use crate::revocation::{Cause, Initiator};
use crate::scope::Scope;

pub enum KeysCommand {
    List { config: Config, json: bool },
    Rotate { config: Config, json: bool },
    Retire { config: Config, kid: String },
}

async fn ring(config: &Config, command: &str) -> anyhow::Result<(crate::store::Pool, KeyRing)> {
    let pool = crate::cli::open_store_for(config, command).await?;
    let master = config.load_master_key()?;
    let ring = KeyRing::new(&config.tokens, &master.key);
    ring.maintain(&pool, SystemClock.now()).await?;
    Ok((pool, ring))
}

pub async fn keys(command: KeysCommand) -> anyhow::Result<ExitCode> {
    let now = SystemClock.now();
    match command {
        KeysCommand::List { config, json } => {
            let (_, ring) = ring(&config, "keys list").await?;
            let keys = ring.describe(now);
            if json {
                crate::cli::print_json_doc(&serde_json::json!({ "keys": keys }))?;
            } else {
                println!(
                    "{:<45} {:<6} {:<8} {:<24} {:<24} removed from JWKS",
                    "kid", "alg", "status", "signs from", "signs until"
                );
                for k in keys {
                    println!(
                        "{:<45} {:<6} {:<8} {:<24} {:<24} {}",
                        k.kid,
                        k.alg,
                        format!("{:?}", k.status).to_lowercase(),
                        format_utc(k.activates_at),
                        k.signing_ended_at
                            .map(format_utc)
                            .unwrap_or_else(|| "-".into()),
                        k.remove_at.map(format_utc).unwrap_or_else(|| "-".into())
                    );
                }
            }
        }
        KeysCommand::Rotate { config, json } => {
            let (pool, ring) = ring(&config, "keys rotate").await?;
            let kid = ring.rotate(&pool, now).await?;
            let activates = now + config.tokens.key_prepublish_secs;
            crate::audit::record(
                &pool,
                crate::audit::EventKind::SigningKeyRotated,
                crate::audit::Event {
                    actor: "cli".into(),
                    subject: kid.clone(),
                    ..Default::default()
                },
                now,
            )
            .await?;
            if json {
                crate::cli::print_json_doc(
                    &serde_json::json!({ "kid": kid, "activates_at": activates }),
                )?;
            } else {
                eprintln!(
                    "new key {kid} is stored; running instances publish it in their JWKS within {} s (their next key reload) and sign with it from {}",
                    crate::keys::RELOAD_INTERVAL_SECS,
                    format_utc(activates)
                );
            }
        }
        KeysCommand::Retire { config, kid } => {
            let (pool, ring) = ring(&config, "keys retire").await?;
            ring.retire(&pool, &kid, now).await?;
            crate::audit::record(
                &pool,
                crate::audit::EventKind::SigningKeyRetired,
                crate::audit::Event {
                    actor: "cli".into(),
                    subject: kid.clone(),
                    ..Default::default()
                },
                now,
            )
            .await?;
            eprintln!(
                "key {kid} is retired; running instances stop signing with it within {} s (their next key reload), and it stays in the JWKS until the tokens it signed have expired",
                crate::keys::RELOAD_INTERVAL_SECS
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand, Debug)]
pub enum ClientAction {
    /// Register a client; prints client_id (and client_secret, once).
    Create {
        /// A name shown to users on the consent page (1 to 200 characters).
        #[arg(long)]
        name: String,
        /// Redirect URI, matched exactly (repeatable).
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// Allowed grant type (repeatable): authorization_code, refresh_token, client_credentials, device_code.
        #[arg(long = "grant")]
        grants: Vec<String>,
        /// Allowed scope (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// A public client (SPA, mobile, CLI): no secret, PKCE carries the proof.
        #[arg(long)]
        public: bool,
        /// First-party client: users are not asked for consent.
        #[arg(long)]
        first_party: bool,
        /// `aud` of its access tokens (default: the client_id).
        #[arg(long)]
        audience: Option<String>,
        /// jwt (default) or opaque access tokens.
        #[arg(long, default_value = "jwt")]
        token_format: String,
        /// Access-token lifetime in seconds (default: the deployment's).
        #[arg(long)]
        access_token_lifetime: Option<i64>,
        /// ES256, EdDSA or RS256 (must be among the deployment's algorithms).
        #[arg(long)]
        signing_algorithm: Option<String>,
        /// The algorithm of its ID tokens: RS256 (the default), ES256 or EdDSA (must be among the deployment's algorithms).
        #[arg(long)]
        id_token_signed_response_alg: Option<String>,
        /// Where RP-initiated logout may return to (repeatable, exact match).
        #[arg(long = "post-logout-redirect-uri")]
        post_logout_redirect_uris: Vec<String>,
        /// OIDC back-channel logout endpoint of the client.
        #[arg(long)]
        backchannel_logout_uri: Option<String>,
        /// A JWK Set file with the client's public keys: the client authenticates with private_key_jwt only (no secret).
        #[arg(long)]
        jwks_file: Option<std::path::PathBuf>,
        /// false: a confidential OpenID Connect client may skip PKCE in requests with a nonce (RFC 9700 §2.1.1; see docs/security.md).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        require_pkce: bool,
        /// Users must sign in with a second factor to use this client.
        #[arg(long)]
        require_mfa: bool,
        /// Print the client (with client_secret, once) as one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Change a client; lists given here replace the stored ones.
    Update {
        /// The client to change (`lk_…`).
        client_id: String,
        /// A new name shown on the consent page.
        #[arg(long)]
        name: Option<String>,
        /// Redirect URI (repeatable); the given ones replace the stored list.
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// Post-logout redirect URI (repeatable); replaces the stored list.
        #[arg(long = "post-logout-redirect-uri")]
        post_logout_redirect_uris: Vec<String>,
        /// Allowed grant type (repeatable); replaces the stored list.
        #[arg(long = "grant")]
        grants: Vec<String>,
        /// Allowed scope (repeatable); replaces the stored list.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// true: users are not asked for consent; false: they are.
        #[arg(long)]
        first_party: Option<bool>,
        /// `aud` of its access tokens ("" = the client_id).
        #[arg(long)]
        audience: Option<String>,
        /// jwt or opaque access tokens.
        #[arg(long)]
        token_format: Option<String>,
        /// Seconds; 0 = the deployment default.
        #[arg(long)]
        access_token_lifetime: Option<i64>,
        /// An algorithm, or "default".
        #[arg(long)]
        signing_algorithm: Option<String>,
        /// The algorithm of its ID tokens, or "default" (RS256).
        #[arg(long)]
        id_token_signed_response_alg: Option<String>,
        /// A URI, or "none" to remove it.
        #[arg(long)]
        backchannel_logout_uri: Option<String>,
        /// true: users must sign in with a second factor to use this client.
        #[arg(long)]
        require_mfa: Option<bool>,
        /// false: the PKCE opt-out of a confidential OpenID Connect client (refused for public clients).
        #[arg(long)]
        require_pkce: Option<bool>,
        /// Print the updated client as one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// List clients.
    List {
        /// Print one JSON array of clients.
        #[arg(long)]
        json: bool,
    },
    /// Show one client.
    Show {
        /// The client to show (`lk_…`).
        client_id: String,
        /// Print the client as one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Replace a confidential client's secret; prints the new one once.
    RotateSecret {
        /// The client whose secret to replace (`lk_…`).
        client_id: String,
        /// Print {"client_id", "client_secret"} as one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Delete a client and every token issued to it.
    Delete {
        /// The client to delete (`lk_…`).
        client_id: String,
    },
}

fn validate_redirect_uri(uri: &str) -> anyhow::Result<String> {
    let parsed = url::Url::parse(uri)
        .with_context(|| format!("--redirect-uri {uri:?} is not an absolute URL"))?;
    if parsed.fragment().is_some() {
        bail!("--redirect-uri {uri:?} must not contain a fragment (RFC 6749 §3.1.2)");
    }
    if parsed.scheme() == "http" && !crate::config::is_loopback_host(&parsed) {
        bail!(
            "--redirect-uri {uri:?}: plain http is only allowed for loopback addresses (RFC 8252)"
        );
    }
    Ok(uri.to_owned())
}

fn read_jwks(path: &std::path::Path) -> anyhow::Result<JwkSet> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let jwks: JwkSet = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a JWK Set ({{\"keys\": [...]}})", path.display()))?;
    let (keys, skipped) = KeySet::from_jwks(&jwks);
    if let Some(e) = skipped.first() {
        bail!("{}: {e}", path.display());
    }
    if keys.keys().is_empty() {
        bail!(
            "{} holds no usable public key (EC P-256, Ed25519 or RSA ≥ 2048)",
            path.display()
        );
    }
    Ok(jwks)
}

fn parse_grants(grants: &[String]) -> anyhow::Result<Vec<String>> {
    let grants: Vec<String> = grants
        .iter()
        .map(|g| {
            if g == "device_code" {
                "urn:ietf:params:oauth:grant-type:device_code".to_owned()
            } else {
                g.clone()
            }
        })
        .collect();
    for g in &grants {
        if !GRANT_TYPES.contains(&g.as_str()) {
            bail!("--grant {g:?} is not supported; use one of: authorization_code, refresh_token, client_credentials, device_code (password and implicit do not exist)");
        }
    }
    Ok(grants)
}

fn parse_format(format: &str) -> anyhow::Result<AccessTokenFormat> {
    match format {
        "jwt" => Ok(AccessTokenFormat::Jwt),
        "opaque" => Ok(AccessTokenFormat::Opaque),
        other => bail!("--token-format {other:?}: use jwt or opaque"),
    }
}

/// The refusals of `oauth::clients`, named by the flags that caused them.
fn registration_error(e: clients::RegistrationError) -> anyhow::Error {
    match e {
        clients::RegistrationError::PublicClientWithoutPkce => {
            anyhow::anyhow!("--require-pkce false is refused for a public client: {e}")
        }
        clients::RegistrationError::PublicClientWithKeys => {
            anyhow::anyhow!("--jwks-file with --public: {e}")
        }
        clients::RegistrationError::Store(s) => s.into(),
    }
}

fn check_algorithm(config: &Config, alg: &str) -> anyhow::Result<()> {
    let kept = config.tokens.key_algorithms();
    if !kept.iter().any(|a| a.as_str() == alg) {
        let names: Vec<&str> = kept.iter().map(|a| a.as_str()).collect();
        bail!(
            "--signing-algorithm {alg}: the deployment keeps keys for {} only (tokens.additional_algorithms)",
            names.join(", ")
        );
    }
    Ok(())
}

fn check_id_token_algorithm(config: &Config, alg: &str) -> anyhow::Result<()> {
    let kept = config.tokens.key_algorithms();
    let allowed: Vec<&str> = clients::id_token_algorithms(&kept)
        .map(|a| a.as_str())
        .collect();
    if !allowed.contains(&alg) {
        bail!(
            "--id-token-signed-response-alg {alg}: ID tokens can be signed with {} only (tokens.signing_algorithm and tokens.additional_algorithms)",
            allowed.join(", ")
        );
    }
    Ok(())
}

impl ClientAction {
    /// The subcommand as typed, for messages.
    fn command(&self) -> &'static str {
        match self {
            ClientAction::Create { .. } => "client create",
            ClientAction::Update { .. } => "client update",
            ClientAction::List { .. } => "client list",
            ClientAction::Show { .. } => "client show",
            ClientAction::RotateSecret { .. } => "client rotate-secret",
            ClientAction::Delete { .. } => "client delete",
        }
    }
}

pub async fn client(config: &Config, action: ClientAction) -> anyhow::Result<ExitCode> {
    let pool = crate::cli::open_store_for(config, action.command()).await?;
    let now = SystemClock.now();
    match action {
        ClientAction::Create {
            name,
            redirect_uris,
            grants,
            scopes,
            public,
            first_party,
            audience,
            token_format,
            access_token_lifetime,
            signing_algorithm,
            id_token_signed_response_alg,
            post_logout_redirect_uris,
            backchannel_logout_uri,
            jwks_file,
            require_pkce,
            require_mfa,
            json,
        } => {
            let name = name.trim().to_owned();
            let jwks = jwks_file.as_deref().map(read_jwks).transpose()?;
            if name.is_empty() || name.len() > 200 {
                bail!("--name must be 1 to 200 characters");
            }
            let grants = parse_grants(&grants)?;
            if public && grants.iter().any(|g| g == "client_credentials") {
                bail!("a public client cannot use client_credentials: it has no secret");
            }
            let redirect_uris = redirect_uris
                .iter()
                .map(|u| validate_redirect_uri(u))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let post_logout_redirect_uris = post_logout_redirect_uris
                .iter()
                .map(|u| validate_redirect_uri(u))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let backchannel_logout_uri = backchannel_logout_uri
                .map(|u| validate_redirect_uri(&u))
                .transpose()?;
            let scopes = Scope::parse(&scopes.join(" "))?;
            let access_token_format = parse_format(&token_format)?;
            if let Some(alg) = &signing_algorithm {
                check_algorithm(config, alg)?;
            }
            if let Some(alg) = &id_token_signed_response_alg {
                check_id_token_algorithm(config, alg)?;
            }
            let new = NewClient {
                name,
                confidential: !public,
                redirect_uris,
                post_logout_redirect_uris,
                grant_types: grants,
                scopes,
                audience: audience.unwrap_or_default(),
                access_token_format,
                access_token_lifetime_secs: access_token_lifetime.filter(|l| *l > 0),
                signing_algorithm,
                id_token_signed_response_alg,
                first_party,
                backchannel_logout_uri,
                jwks,
                require_pkce,
            };
            let (client, secret) = clients::create_with_mfa_policy(&pool, new, require_mfa, now)
                .await
                .map_err(registration_error)?;
            if json {
                let mut doc = serde_json::to_value(&client)?;
                doc["client_id"] = serde_json::json!(client.id);
                if let Some(secret) = &secret {
                    doc["client_secret"] = serde_json::json!(secret.expose());
                }
                crate::cli::print_json_doc(&doc)?;
            } else {
                println!("client_id:     {}", client.id);
                if let Some(secret) = &secret {
                    println!("client_secret: {}", secret.expose());
                    eprintln!("The secret is shown only now; store it safely (rotate with `latchkey client rotate-secret`).");
                }
            }
        }
        ClientAction::Update {
            client_id,
            name,
            redirect_uris,
            post_logout_redirect_uris,
            grants,
            scopes,
            first_party,
            audience,
            token_format,
            access_token_lifetime,
            signing_algorithm,
            id_token_signed_response_alg,
            backchannel_logout_uri,
            require_mfa,
            require_pkce,
            json,
        } => {
            let nonempty = |v: Vec<String>| (!v.is_empty()).then_some(v);
            let update = clients::ClientUpdate {
                name: name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()),
                redirect_uris: nonempty(redirect_uris)
                    .map(|v| {
                        v.iter()
                            .map(|u| validate_redirect_uri(u))
                            .collect::<anyhow::Result<Vec<_>>>()
                    })
                    .transpose()?,
                post_logout_redirect_uris: nonempty(post_logout_redirect_uris)
                    .map(|v| {
                        v.iter()
                            .map(|u| validate_redirect_uri(u))
                            .collect::<anyhow::Result<Vec<_>>>()
                    })
                    .transpose()?,
                grant_types: nonempty(grants).map(|g| parse_grants(&g)).transpose()?,
                scopes: nonempty(scopes)
                    .map(|s| Scope::parse(&s.join(" ")))
                    .transpose()?,
                audience,
                access_token_format: token_format.map(|f| parse_format(&f)).transpose()?,
                access_token_lifetime_secs: access_token_lifetime.map(|l| (l > 0).then_some(l)),
                signing_algorithm: match signing_algorithm {
                    None => None,
                    Some(a) if a == "default" => Some(None),
                    Some(a) => {
                        check_algorithm(config, &a)?;
                        Some(Some(a))
                    }
                },
                id_token_signed_response_alg: match id_token_signed_response_alg {
                    None => None,
                    Some(a) if a == "default" => Some(None),
                    Some(a) => {
                        check_id_token_algorithm(config, &a)?;
                        Some(Some(a))
                    }
                },
                first_party,
                require_mfa,
                require_pkce,
                backchannel_logout_uri: match backchannel_logout_uri {
                    None => None,
                    Some(u) if u == "none" => Some(None),
                    Some(u) => Some(Some(validate_redirect_uri(&u)?)),
                },
            };
            let updated = clients::update(&pool, &client_id, update, now)
                .await
                .map_err(registration_error)?
                .with_context(|| format!("no client {client_id:?}"))?;
            if json {
                crate::cli::print_json_doc(&serde_json::to_value(&updated)?)?;
            } else {
                eprintln!("updated client {client_id}");
            }
        }
        ClientAction::List { json } => {
            let all = clients::list(&pool).await?;
            if json {
                crate::cli::print_json_doc(&serde_json::json!(all))?;
            } else {
                for c in all {
                    println!(
                        "{}  {:<24} {:<12} grants={} scopes={}",
                        c.id,
                        c.name,
                        if c.confidential {
                            "confidential"
                        } else {
                            "public"
                        },
                        c.grant_types.join(","),
                        c.scopes
                    );
                }
            }
        }
        ClientAction::Show { client_id, json } => {
            let c = clients::find(&pool, &client_id)
                .await?
                .with_context(|| format!("no client {client_id:?}"))?;
            if json {
                crate::cli::print_json_doc(&serde_json::to_value(&c)?)?;
            } else {
                println!("{}", serde_json::to_string_pretty(&c)?);
            }
        }
        ClientAction::RotateSecret { client_id, json } => {
            let secret = clients::rotate_secret(&pool, &client_id, now)
                .await?
                .with_context(|| format!("no client {client_id:?} with a secret (a public client has none, and a client registered with --jwks-file authenticates with private_key_jwt only)"))?;
            if json {
                crate::cli::print_json_doc(
                    &serde_json::json!({ "client_id": client_id, "client_secret": secret.expose() }),
                )?;
            } else {
                println!("client_secret: {}", secret.expose());
            }
        }
        ClientAction::Delete { client_id } => {
            let cause = Cause::new(now, Initiator::Admin, "client deleted");
            if !clients::delete(&pool, &client_id, &cause).await? {
                bail!("no client {client_id:?}");
            }
            eprintln!("deleted client {client_id} and every token issued to it");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand, Debug)]
pub enum TokenAction {
    /// Decode a JWT for a human; with --issuer, verify it against that issuer's JWKS.
    /// The token never leaves this machine (only the JWKS is fetched).
    Inspect {
        /// The JWT (access or ID token) to decode.
        token: String,
        /// Verify the signature, `iss`, `exp` and `nbf` against this issuer (its JWKS is fetched).
        #[arg(long)]
        issuer: Option<String>,
        /// Expected audience (checked only when given).
        #[arg(long)]
        audience: Option<String>,
        /// Print {"header", "claims", "verified", "reason"} as one JSON document.
        #[arg(long)]
        json: bool,
    },
}

fn relative(seconds: i64) -> String {
    let (abs, past) = (seconds.unsigned_abs(), seconds < 0);
    let text = match abs {
        0..=89 => format!("{abs} s"),
        90..=5399 => format!("{} min", (abs + 30) / 60),
        5400..=172_799 => format!("{} h", (abs + 1800) / 3600),
        _ => format!("{} days", (abs + 43_200) / 86_400),
    };
    if past {
        format!("{text} ago")
    } else {
        format!("in {text}")
    }
}

pub async fn token(action: TokenAction) -> anyhow::Result<ExitCode> {
    let TokenAction::Inspect {
        token,
        issuer,
        audience,
        json,
    } = action;
    let token = token.trim();
    let (header, claims) = jose::decode_unverified(token)
        .map_err(|e| anyhow::anyhow!("{e}: expected three base64url parts separated by dots"))?;
    let now = SystemClock.now();
    let verdict = match &issuer {
        None => None,
        Some(issuer) => {
            let issuer = issuer.trim_end_matches('/');
            let url = format!("{issuer}/.well-known/jwks.json");
            let jwks: JwkSet = reqwest::get(&url)
                .await
                .with_context(|| format!("cannot fetch {url}"))?
                .error_for_status()?
                .json()
                .await
                .with_context(|| format!("{url} is not a JWKS"))?;
            let (keys, _) = KeySet::from_jwks(&jwks);
            let validation = Validation {
                audiences: audience.into_iter().collect(),
                typ: None,
                ..Validation::new(issuer)
            };
            Some(jose::verify::<serde_json::Value>(token, &keys, &validation, now).map(|_| ()))
        }
    };
    if json {
        let verified = verdict.as_ref().map(|v| v.is_ok());
        let reason = verdict
            .as_ref()
            .and_then(|v| v.as_ref().err().map(|e| e.to_string()));
        crate::cli::print_json_doc(
            &serde_json::json!({ "header": header, "claims": claims, "verified": verified, "reason": reason }),
        )?;
    } else {
        println!(
            "Header\n{}\n\nClaims\n{}\n",
            serde_json::to_string_pretty(&header)?,
            serde_json::to_string_pretty(&claims)?
        );
        for (name, label) in [("iat", "issued"), ("nbf", "valid from"), ("exp", "expires")] {
            if let Some(t) = claims.get(name).and_then(|v| v.as_i64()) {
                println!("{label:<11} {} ({})", format_utc(t), relative(t - now));
            }
        }
        match &verdict {
            None => {
                println!("\nsignature   not checked (pass --issuer URL to verify against its JWKS)")
            }
            Some(Ok(())) => println!(
                "\nsignature   valid, issued by {}",
                issuer.unwrap_or_default()
            ),
            Some(Err(e)) => println!("\nsignature   INVALID: {e}"),
        }
    }
    Ok(match verdict {
        Some(Err(_)) => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    })
}
