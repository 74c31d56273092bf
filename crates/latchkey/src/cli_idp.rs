//! CLI glue for federation providers: `latchkey idp add|list|update|remove`.
//!
//! Must not: hold rules (validation is `federation::ProviderSpec::build`,
//! storage `federation::store`) or print a client secret — not even sealed.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};

use crate::audit::{self, Event, EventKind};
use crate::clock::{Clock as _, SystemClock};
use crate::config::Config;
use crate::federation::{self, store, Origin, ProviderFields, ProviderSpec, SecretSource};

#[derive(Subcommand, Debug)]
pub enum IdpAction {
    /// Add an upstream sign-in provider; the client secret is read from stdin.
    Add {
        /// The provider's name: its button, and the path /login/idp/NAME (a-z, 0-9, '-', '_').
        #[arg(long)]
        name: String,
        /// oidc (google, github, microsoft and apple are not available yet).
        #[arg(long, default_value = "oidc")]
        kind: String,
        #[command(flatten)]
        fields: IdpFields,
        /// Print exactly one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// List every provider (configuration file and database); never a secret.
    List {
        /// Print exactly one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Change a provider added with `idp add`; unnamed fields keep their values.
    Update {
        /// The provider to change.
        name: String,
        #[command(flatten)]
        fields: IdpFields,
        /// Take the provider off the sign-in page without removing it.
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        /// Offer a disabled provider again.
        #[arg(long)]
        enable: bool,
        /// Stop creating accounts on first sign-in.
        #[arg(long, conflicts_with = "provision")]
        no_provision: bool,
        /// Print exactly one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// List a user's linked identities (provider, subject, email at link time, last used).
    Identities {
        /// The user's email or id.
        #[arg(long)]
        user: String,
        /// Print exactly one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Unlink a user's identity at a provider (an administrator's override:
    /// allowed even when it is the user's last way in, with a warning).
    Unlink {
        /// The user's email or id.
        #[arg(long)]
        user: String,
        /// The provider whose identity is unlinked.
        #[arg(long)]
        provider: String,
        /// Print exactly one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Remove a provider added with `idp add` (sign-ins in flight to it end; linked identities stay).
    Remove {
        /// The provider to remove.
        name: String,
        /// Print exactly one JSON document on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug, Default)]
pub struct IdpFields {
    /// The issuer URL (https; plain http only for loopback with federation.allow_insecure_loopback).
    #[arg(long)]
    issuer: Option<String>,
    /// The client id registered at the provider.
    #[arg(long)]
    client_id: Option<String>,
    /// Read the client secret from the first line of standard input.
    #[arg(long)]
    client_secret_stdin: bool,
    /// client_secret_basic (default) or client_secret_post.
    #[arg(long)]
    auth_method: Option<String>,
    /// A scope to ask for besides openid (repeatable; default: email profile).
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// Create an account on the first sign-in of an unknown identity with a verified email.
    #[arg(long)]
    provision: bool,
    /// Linking to an existing account with the same email: verified (default), confirm or never.
    #[arg(long)]
    link: Option<String>,
    /// The ID-token claim the role map reads (a string or an array of strings).
    #[arg(long)]
    role_claim: Option<String>,
    /// VALUE=ROLE: a claim value and the local role it gives (repeatable).
    #[arg(long = "role-map")]
    role_map: Vec<String>,
}

fn read_secret_stdin() -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read the client secret from stdin")?;
    let line = text.lines().next().unwrap_or_default().trim().to_owned();
    if line.is_empty() {
        bail!("--client-secret-stdin: standard input is empty");
    }
    Ok(line)
}

fn parse_role_map(items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for item in items {
        let Some((value, role)) = item.split_once('=') else {
            bail!("--role-map {item:?}: expected VALUE=ROLE");
        };
        if map.insert(value.to_owned(), role.to_owned()).is_some() {
            bail!("--role-map: the value {value:?} is mapped twice");
        }
    }
    Ok(map)
}

fn view(spec: &ProviderSpec, config: &Config) -> serde_json::Value {
    let mut value = serde_json::to_value(spec).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "callback_url".into(),
            federation::callback_url(config, &spec.name).into(),
        );
    }
    value
}

fn cli_event(subject: &str, detail: String) -> Event {
    Event {
        actor: "cli".into(),
        subject: subject.to_owned(),
        detail,
        ..Event::default()
    }
}

fn print_one(spec: &ProviderSpec, config: &Config, json: bool, verb: &str) -> anyhow::Result<()> {
    if json {
        crate::cli::print_json_doc(&view(spec, config))?;
    } else {
        println!("{}", spec.name);
        eprintln!(
            "provider {} {verb}; register this callback URL at the provider: {}",
            spec.name,
            federation::callback_url(config, &spec.name)
        );
    }
    Ok(())
}

pub async fn idp(config: &Config, action: IdpAction) -> anyhow::Result<ExitCode> {
    // Only adding or changing a secret needs the master key.
    let seal_key = || -> anyhow::Result<[u8; 32]> {
        Ok(config
            .load_master_key()?
            .key
            .derive(federation::SEAL_PURPOSE))
    };
    let command = match &action {
        IdpAction::Add { .. } => "idp add",
        IdpAction::List { .. } => "idp list",
        IdpAction::Update { .. } => "idp update",
        IdpAction::Identities { .. } => "idp identities",
        IdpAction::Unlink { .. } => "idp unlink",
        IdpAction::Remove { .. } => "idp remove",
    };
    let pool = crate::cli::open_store_for(config, command).await?;
    let now = SystemClock.now();
    let configured = |name: &str| config.federation.providers.iter().any(|p| p.name == name);
    match action {
        IdpAction::Add {
            name,
            kind,
            fields,
            json,
        } => {
            if !fields.client_secret_stdin {
                bail!("idp add needs --client-secret-stdin (the secret is never taken from the command line)");
            }
            if configured(&name) {
                bail!(
                    "provider {name:?} is defined in the configuration file; choose another name"
                );
            }
            let (Some(issuer), Some(client_id)) = (&fields.issuer, &fields.client_id) else {
                bail!("idp add needs --issuer and --client-id");
            };
            let role_map = parse_role_map(&fields.role_map)?;
            let scopes = if fields.scopes.is_empty() {
                vec!["email".to_owned(), "profile".to_owned()]
            } else {
                fields.scopes.clone()
            };
            let spec = ProviderSpec::build(
                ProviderFields {
                    name: &name,
                    kind: &kind,
                    issuer,
                    client_id,
                    auth_method: fields
                        .auth_method
                        .as_deref()
                        .unwrap_or("client_secret_basic"),
                    scopes: &scopes,
                    link: fields.link.as_deref().unwrap_or("verified"),
                    provision: fields.provision,
                    role_claim: fields.role_claim.as_deref().unwrap_or(""),
                    role_map: &role_map,
                    enabled: true,
                },
                SecretSource::Sealed(String::new()),
                Origin::Database,
                config,
            )?;
            let secret = read_secret_stdin()?;
            let sealed = federation::seal_secret(&seal_key()?, &spec.name, &secret);
            if !store::put_provider(&pool, &spec, &sealed, false, now).await? {
                bail!("a provider named {name:?} already exists (use `latchkey idp update`)");
            }
            audit::record(
                &pool,
                EventKind::FederationProviderChanged,
                cli_event(&name, format!("added ({})", spec.issuer)),
                now,
            )
            .await?;
            print_one(&spec, config, json, "added")?;
        }
        IdpAction::List { json } => {
            let all = federation::providers_from(config, &pool).await?;
            if json {
                let list: Vec<_> = all.iter().map(|p| view(p, config)).collect();
                crate::cli::print_json_doc(&serde_json::json!({ "providers": list }))?;
            } else {
                println!(
                    "{:<20} {:<9} {:<8} {:<8} ISSUER",
                    "NAME", "ORIGIN", "ENABLED", "LINK"
                );
                for p in &all {
                    println!(
                        "{:<20} {:<9} {:<8} {:<8} {}",
                        p.name,
                        if p.origin == Origin::Config {
                            "config"
                        } else {
                            "database"
                        },
                        if p.enabled { "yes" } else { "no" },
                        p.link.as_str(),
                        p.issuer
                    );
                }
            }
        }
        IdpAction::Update {
            name,
            fields,
            disable,
            enable,
            no_provision,
            json,
        } => {
            if configured(&name) {
                bail!("provider {name:?} is defined in the configuration file: change it there");
            }
            let Some(current) = store::list_providers(&pool, config)
                .await?
                .into_iter()
                .find(|p| p.name == name)
            else {
                bail!("no provider named {name:?} (see `latchkey idp list`)");
            };
            let role_map = if fields.role_map.is_empty() {
                current
                    .role_map
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().to_owned()))
                    .collect()
            } else {
                parse_role_map(&fields.role_map)?
            };
            let scopes = if fields.scopes.is_empty() {
                current.scopes.clone()
            } else {
                fields.scopes.clone()
            };
            let spec = ProviderSpec::build(
                ProviderFields {
                    name: &name,
                    kind: current.kind.as_str(),
                    issuer: fields.issuer.as_deref().unwrap_or(&current.issuer),
                    client_id: fields.client_id.as_deref().unwrap_or(&current.client_id),
                    auth_method: fields
                        .auth_method
                        .as_deref()
                        .unwrap_or(current.auth_method.as_str()),
                    scopes: &scopes,
                    link: fields.link.as_deref().unwrap_or(current.link.as_str()),
                    provision: (current.provision || fields.provision) && !no_provision,
                    role_claim: fields.role_claim.as_deref().unwrap_or(&current.role_claim),
                    role_map: &role_map,
                    enabled: (current.enabled || enable) && !disable,
                },
                SecretSource::Sealed(String::new()),
                Origin::Database,
                config,
            )?;
            let sealed = if fields.client_secret_stdin {
                federation::seal_secret(&seal_key()?, &name, &read_secret_stdin()?)
            } else {
                store::sealed_secret(&pool, &name)
                    .await?
                    .context("the provider disappeared meanwhile")?
            };
            if !store::put_provider(&pool, &spec, &sealed, true, now).await? {
                bail!("no provider named {name:?} (removed meanwhile?)");
            }
            audit::record(
                &pool,
                EventKind::FederationProviderChanged,
                cli_event(&name, "updated".into()),
                now,
            )
            .await?;
            print_one(&spec, config, json, "updated")?;
        }
        IdpAction::Identities { user, json } => {
            let user = crate::identity::find(&pool, &user).await?;
            let linked = store::identities_of_user(&pool, &user.id).await?;
            if json {
                crate::cli::print_json_doc(&serde_json::json!({
                    "user": user.id,
                    "identities": linked,
                }))?;
            } else {
                println!(
                    "{:<20} {:<32} {:<30} LAST USED",
                    "PROVIDER", "SUBJECT", "EMAIL AT LINK"
                );
                for i in &linked {
                    println!(
                        "{:<20} {:<32} {:<30} {}",
                        i.provider,
                        i.subject,
                        i.email_at_link,
                        crate::clock::format_utc(i.last_used_at)
                    );
                }
            }
        }
        IdpAction::Unlink {
            user,
            provider,
            json,
        } => {
            let user = crate::identity::find(&pool, &user).await?;
            let linked = store::identities_of_user(&pool, &user.id).await?;
            let Some(target) = linked.iter().find(|i| i.provider == provider) else {
                bail!(
                    "{} has no identity at provider {provider:?}",
                    user.email.as_str()
                );
            };
            if !store::unlink(&pool, &user.id, &target.id).await? {
                bail!("the identity was unlinked meanwhile");
            }
            let last_way_in = linked.len() == 1
                && user.password_hash.is_none()
                && !crate::webauthn::has_passkeys(&pool, &user.id).await?;
            if last_way_in {
                eprintln!("warning: that was the only way {} could sign in; set a password (`latchkey user set-password`) or they are locked out", user.email.as_str());
            }
            audit::record(
                &pool,
                EventKind::FederatedIdentityUnlinked,
                cli_event(
                    &user.id,
                    format!("{provider}: unlinked by an administrator"),
                ),
                now,
            )
            .await?;
            if json {
                crate::cli::print_json_doc(&serde_json::json!({
                    "user": user.id,
                    "unlinked": provider,
                    "last_way_in": last_way_in,
                }))?;
            } else {
                eprintln!("{provider} unlinked from {}", user.email.as_str());
            }
        }
        IdpAction::Remove { name, json } => {
            if configured(&name) {
                bail!("provider {name:?} is defined in the configuration file: remove it there");
            }
            if !store::remove_provider(&pool, &name).await? {
                bail!("no provider named {name:?} (see `latchkey idp list`)");
            }
            audit::record(
                &pool,
                EventKind::FederationProviderChanged,
                cli_event(&name, "removed".into()),
                now,
            )
            .await?;
            if json {
                crate::cli::print_json_doc(&serde_json::json!({ "removed": name }))?;
            } else {
                eprintln!("provider {name} removed");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
