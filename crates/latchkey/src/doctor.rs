//! `latchkey doctor`: audits a configuration against the classic mistakes.
//!
//! Each [`Finding`] says what is wrong, why it matters and the exact fix.
//! Any [`Severity::High`] finding makes the command exit 1. Later features
//! add their checks to [`audit`].
//!
//! Must not: change anything, or print secrets.

use crate::config::{is_loopback_host, Config, Mode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    pub id: &'static str,
    pub severity: Severity,
    pub option: &'static str,
    pub problem: String,
    pub why: &'static str,
    pub fix: String,
}

/// Runs every check. `mode` says whether the config is meant for production.
pub fn audit(config: &Config, mode: Mode) -> Vec<Finding> {
    let mut f = Vec::new();
    let mut add = |id, severity, option, problem: String, why, fix: String| {
        f.push(Finding {
            id,
            severity,
            option,
            problem,
            why,
            fix,
        })
    };

    match config.issuer_url() {
        Ok(url) if url.scheme() != "https" && !is_loopback_host(&url) => add(
            "issuer-not-https",
            Severity::High,
            "issuer",
            format!("issuer {} is plain http on a non-loopback host", config.issuer),
            "session cookies, codes and tokens would cross the network in clear and could be stolen",
            "serve Latchkey behind TLS and set issuer = \"https://your-host\"".into(),
        ),
        Ok(url) if url.scheme() != "https" && mode == Mode::Serve => add(
            "issuer-loopback-http",
            Severity::Low,
            "issuer",
            format!("issuer {} is http (loopback only)", config.issuer),
            "fine on one machine, but cookies are not Secure and no HSTS is sent",
            "use an https issuer for anything reachable by others".into(),
        ),
        Err(e) => add("issuer-invalid", Severity::High, "issuer", e.to_string(), "nothing can start without a valid issuer", "set issuer to an https URL".into()),
        _ => {}
    }

    if config.http.cors_allowed_origins.iter().any(|o| o == "*") {
        let severity = if config.http.cors_allow_credentials {
            Severity::High
        } else {
            Severity::Medium
        };
        add(
            "cors-wildcard",
            severity,
            "http.cors_allowed_origins",
            "CORS allows every origin (*)".into(),
            "any website could call Latchkey from a visitor's browser; with credentials it acts as the signed-in user",
            "list the exact origins of your apps, e.g. [\"https://app.example.com\"]".into(),
        );
    }
    if config.http.cors_allowed_origins.iter().any(|o| {
        o.starts_with("http://") && !o.contains("://127.0.0.1") && !o.contains("://localhost")
    }) {
        add(
            "cors-http-origin",
            Severity::Medium,
            "http.cors_allowed_origins",
            "an allowed CORS origin is plain http".into(),
            "a network attacker can impersonate a plain-http origin",
            "allow only https origins in production".into(),
        );
    }

    match (config.master_key.is_some() || config.master_key_file.is_some(), config.load_master_key()) {
        (false, _) => add(
            "master-key-missing",
            Severity::High,
            "master_key",
            "no master key configured".into(),
            "the master key seals private keys and derives CSRF keys; `serve` refuses to start without it",
            "run `latchkey keys generate-master > /etc/latchkey/master.key` and set LATCHKEY_MASTER_KEY_FILE".into(),
        ),
        (true, Err(e)) => add("master-key-invalid", Severity::High, "master_key", e.to_string(), "the server cannot start with an unreadable master key", "generate one with `latchkey keys generate-master`".into()),
        (true, Ok(k)) if k.is_dev && mode == Mode::Serve => add(
            "master-key-dev",
            Severity::High,
            "master_key_file",
            "the master key is the development key written by `latchkey dev`".into(),
            "it sits next to the database in a dev folder, often in backups or repositories; anyone with it can unseal keys",
            "generate a production key with `latchkey keys generate-master` and keep it outside the data directory".into(),
        ),
        _ => {}
    }
    if config.master_key.is_some() && mode == Mode::Serve {
        add(
            "master-key-inline",
            Severity::Low,
            "master_key",
            "the master key is given inline (config file or LATCHKEY_MASTER_KEY)".into(),
            "inline secrets leak through process listings, shell history and config repositories",
            "prefer LATCHKEY_MASTER_KEY_FILE pointing at a file readable only by Latchkey".into(),
        );
    }

    let s = &config.session;
    if s.absolute_lifetime_secs > 24 * 3600 {
        add(
            "session-absolute-long",
            Severity::Medium,
            "session.absolute_lifetime_secs",
            format!("sessions last up to {} hours", s.absolute_lifetime_secs / 3600),
            "ASVS 5.0 (V7.3) expects re-authentication after at most 12 hours at L2; long sessions widen the window of a stolen cookie",
            "set session.absolute_lifetime_secs = 43200 (12 h)".into(),
        );
    }
    if s.idle_timeout_secs > 3600 {
        add(
            "session-idle-long",
            Severity::Medium,
            "session.idle_timeout_secs",
            format!("idle sessions survive {} minutes", s.idle_timeout_secs / 60),
            "an unattended browser stays signed in; ASVS L2 suggests 30 minutes for sensitive applications",
            "set session.idle_timeout_secs = 1800".into(),
        );
    }

    let t = &config.tokens;
    if t.access_token_lifetime_secs > 3600 {
        add(
            "access-token-long",
            Severity::Medium,
            "tokens.access_token_lifetime_secs",
            format!(
                "access tokens live {} minutes",
                t.access_token_lifetime_secs / 60
            ),
            "a JWT cannot be recalled from every API; a leaked one works until it expires",
            "keep access tokens at 15 minutes or less (900) and use refresh tokens".into(),
        );
    }
    if t.refresh_token_absolute_secs > 365 * 86400 {
        add(
            "refresh-token-long",
            Severity::Low,
            "tokens.refresh_token_absolute_secs",
            "refresh tokens live longer than a year".into(),
            "a stolen refresh token keeps working for as long as it lives",
            "set tokens.refresh_token_absolute_secs = 7776000 (90 days)".into(),
        );
    }
    match t.signing_algorithm.as_str() {
        "ES256" | "EdDSA" | "RS256" => {}
        "HS256" => add(
            "hs256-signing",
            Severity::Medium,
            "tokens.signing_algorithm",
            "access tokens are signed with HS256 (a shared secret)".into(),
            "every service that verifies tokens can also mint them; no JWKS can be published",
            "use ES256 (the default) unless exactly one service verifies tokens".into(),
        ),
        other => add(
            "signing-algorithm-unknown",
            Severity::High,
            "tokens.signing_algorithm",
            format!("unknown signing algorithm {other:?}"),
            "tokens could not be signed or would use an unsafe algorithm",
            "use ES256, EdDSA or RS256".into(),
        ),
    }

    let p = &config.password;
    if p.argon2_memory_kib < 19456 || (p.argon2_memory_kib < 47104 && p.argon2_iterations < 2) {
        add(
            "argon2-weak",
            Severity::High,
            "password.argon2_memory_kib",
            format!(
                "Argon2id m={} KiB, t={}, p={} is below the OWASP minimum",
                p.argon2_memory_kib, p.argon2_iterations, p.argon2_parallelism
            ),
            "a stolen database could be brute-forced much faster than intended",
            "use at least m=19456, t=2, p=1 (the default)".into(),
        );
    }
    if !p.reject_common {
        add(
            "common-passwords-allowed",
            Severity::Medium,
            "password.reject_common",
            "common passwords are accepted".into(),
            "credential stuffing and guessing succeed first against '123456' and friends",
            "set password.reject_common = true".into(),
        );
    }

    let l = &config.login;
    if l.max_failures_per_account > 100 || l.max_failures_per_ip > 1000 {
        add(
            "rate-limit-loose",
            Severity::High,
            "login.max_failures_per_account",
            format!("sign-in allows {} failures per account and {} per IP before locking", l.max_failures_per_account, l.max_failures_per_ip),
            "ASVS allows at most 100 failed attempts per hour per account; looser limits make online guessing practical",
            "keep login.max_failures_per_account ≤ 10 and login.max_failures_per_ip ≤ 100".into(),
        );
    }
    if config.http.trust_forwarded_for && is_loopback_bind(&config.bind) {
        add(
            "xff-trusted-without-proxy",
            Severity::Info,
            "http.trust_forwarded_for",
            "X-Forwarded-For is trusted".into(),
            "only correct behind a proxy that overwrites the header; otherwise clients choose their own IP and dodge rate limits",
            "set http.trust_forwarded_for = false unless a proxy you control sets it".into(),
        );
    }
    if !config.http.trust_forwarded_for && config.http.trusted_proxy_hops != 1 {
        add(
            "xff-hops-without-trust",
            Severity::Info,
            "http.trusted_proxy_hops",
            format!(
                "http.trusted_proxy_hops = {} has no effect: X-Forwarded-For is not trusted",
                config.http.trusted_proxy_hops
            ),
            "behind proxies, every client then shares the proxy's address for per-IP limits and the audit log",
            "set http.trust_forwarded_for = true if Latchkey runs behind your proxies, or remove http.trusted_proxy_hops".into(),
        );
    }
    f.sort_by_key(|finding| std::cmp::Reverse(finding.severity));
    f
}

fn is_loopback_bind(bind: &str) -> bool {
    bind.starts_with("127.") || bind.starts_with("[::1]") || bind.starts_with("localhost")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    fn good() -> Config {
        Config {
            issuer: "https://id.example.com".into(),
            master_key: Some(MasterKey::generate().encode()),
            ..Config::default()
        }
    }

    fn ids(c: &Config) -> Vec<&'static str> {
        audit(c, Mode::Serve).into_iter().map(|f| f.id).collect()
    }

    #[test]
    fn defaults_with_https_have_no_high_findings() {
        assert!(
            audit(&good(), Mode::Serve)
                .iter()
                .all(|f| f.severity < Severity::High),
            "{:?}",
            audit(&good(), Mode::Serve)
        );
    }

    #[test]
    fn each_classic_mistake_is_found() {
        type Mutation = Box<dyn Fn(&mut Config)>;
        let cases: Vec<(&str, Mutation)> = vec![
            (
                "issuer-not-https",
                Box::new(|c| c.issuer = "http://id.example.com".into()),
            ),
            (
                "cors-wildcard",
                Box::new(|c| {
                    c.http.cors_allowed_origins = vec!["*".into()];
                    c.http.cors_allow_credentials = true;
                }),
            ),
            ("master-key-missing", Box::new(|c| c.master_key = None)),
            (
                "session-absolute-long",
                Box::new(|c| c.session.absolute_lifetime_secs = 30 * 86400),
            ),
            (
                "session-idle-long",
                Box::new(|c| c.session.idle_timeout_secs = 86400),
            ),
            (
                "access-token-long",
                Box::new(|c| c.tokens.access_token_lifetime_secs = 86400),
            ),
            (
                "hs256-signing",
                Box::new(|c| c.tokens.signing_algorithm = "HS256".into()),
            ),
            (
                "argon2-weak",
                Box::new(|c| c.password.argon2_memory_kib = 4096),
            ),
            (
                "rate-limit-loose",
                Box::new(|c| c.login.max_failures_per_account = 10_000),
            ),
            (
                "xff-hops-without-trust",
                Box::new(|c| c.http.trusted_proxy_hops = 2),
            ),
        ];
        for (id, mutate) in cases {
            let mut c = good();
            mutate(&mut c);
            assert!(ids(&c).contains(&id), "{id} not reported: {:?}", ids(&c));
        }
    }

    #[test]
    fn high_findings_come_first() {
        let mut c = good();
        c.issuer = "http://id.example.com".into();
        c.session.idle_timeout_secs = 86400;
        let found = audit(&c, Mode::Serve);
        assert_eq!(found[0].severity, Severity::High);
    }
}
