//! `latchkey-load`: drives a running Latchkey server and reports requests/s,
//! p50/p99 latency and (with `--server-pid`) the server's CPU-seconds per
//! 1,000 requests.
//!
//! ```text
//! cargo run --release -p latchkey-load -- client-credentials \
//!     --issuer http://127.0.0.1:8080 --client-id ID --client-secret SECRET \
//!     --concurrency 32 --duration 10 --server-pid 12345
//! ```
//!
//! Every worker owns one HTTP/1.1 keep-alive connection (its own client) and
//! sends one request at a time. Set-up (sign-ins, first refresh tokens) is
//! done before the measured window and is not counted. The run is bounded:
//! it stops by itself after `--duration` seconds. Only loopback issuers are
//! accepted unless `--allow-remote` is given. See `docs/performance.md`.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use clap::{Parser, ValueEnum};
use rand::RngCore as _;
use reqwest::{redirect, Client, StatusCode};
use sha2::{Digest, Sha256};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// POST /oauth2/token grant_type=client_credentials.
    ClientCredentials,
    /// POST /oauth2/token grant_type=refresh_token; each worker follows its own rotating chain.
    Refresh,
    /// GET /oauth2/authorize (existing SSO session, first-party client) then POST /oauth2/token.
    AuthCode,
    /// POST /login (JSON) with a password, without any session cookie each time.
    PasswordLogin,
    /// POST /oauth2/introspect of a valid access token.
    Introspection,
    /// GET /.well-known/jwks.json.
    Jwks,
    /// No server: bare Argon2id verification in this process (default
    /// parameters m=19456 KiB, t=2, p=1), one thread per --concurrency, the
    /// reference for password-login.
    Argon2,
}

#[derive(Parser, Debug)]
#[command(
    name = "latchkey-load",
    about = "Load generator for a running Latchkey server"
)]
struct Args {
    scenario: Scenario,
    /// Base URL of the server (its issuer).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    issuer: String,
    #[arg(long)]
    client_id: Option<String>,
    #[arg(long)]
    client_secret: Option<String>,
    /// Registered redirect URI of the client (auth-code, refresh).
    #[arg(long, default_value = "http://127.0.0.1:9/callback")]
    redirect_uri: String,
    /// Scope for client-credentials / introspection tokens (default: none requested).
    #[arg(long)]
    scope: Option<String>,
    /// User for auth-code, refresh and password-login.
    #[arg(long)]
    email: Option<String>,
    #[arg(long)]
    password: Option<String>,
    /// Concurrent workers, one connection each.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Server process id: report its CPU-seconds per 1,000 requests.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Allow a non-loopback issuer.
    #[arg(long)]
    allow_remote: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn fail(message: impl Into<String>) -> Error {
    message.into().into()
}

/// Clock ticks per second of `/proc/PID/stat` (USER_HZ). It is 100 on every
/// mainstream Linux; reading `sysconf(_SC_CLK_TCK)` would need `unsafe`
/// (forbidden in this workspace), so it is hard-coded.
const CLK_TCK: f64 = 100.0;

/// utime + stime of a process in seconds, from `/proc/PID/stat`.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15, i.e. the 12th and 13th after it.
    let mut fields = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / CLK_TCK)
}

fn is_loopback(issuer: &url::Url) -> bool {
    match issuer.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

fn random_b64(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// What every worker shares.
struct Ctx {
    args: Args,
    base: String,
}

impl Ctx {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn client_id(&self) -> Result<&str, Error> {
        self.args
            .client_id
            .as_deref()
            .ok_or_else(|| fail("this scenario needs --client-id"))
    }

    fn client_secret(&self) -> Option<&str> {
        self.args.client_secret.as_deref()
    }

    fn credentials(&self) -> Result<(&str, &str), Error> {
        match (&self.args.email, &self.args.password) {
            (Some(e), Some(p)) => Ok((e, p)),
            _ => Err(fail("this scenario needs --email and --password")),
        }
    }

    /// One keep-alive HTTP/1.1 connection's worth of client; cookies kept
    /// when `cookies` (a per-worker jar), redirects never followed.
    fn http(&self, cookies: bool) -> Result<Client, Error> {
        Ok(Client::builder()
            .http1_only()
            .redirect(redirect::Policy::none())
            .cookie_store(cookies)
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(30))
            .user_agent("latchkey-load/0.1")
            .build()?)
    }

    /// POST /oauth2/token with client authentication (Basic when a secret is given).
    async fn token(
        &self,
        http: &Client,
        pairs: &[(&str, &str)],
    ) -> Result<serde_json::Value, Error> {
        let client_id = self.client_id()?;
        let mut pairs = pairs.to_vec();
        let mut request = http
            .post(self.url("/oauth2/token"))
            .header("content-type", "application/x-www-form-urlencoded");
        match self.client_secret() {
            Some(secret) => request = request.basic_auth(client_id, Some(secret)),
            None => pairs.push(("client_id", client_id)),
        }
        let response = request.body(form(&pairs)).send().await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await?;
        if status != StatusCode::OK {
            return Err(fail(format!("token endpoint: {status} {body}")));
        }
        Ok(body)
    }

    /// POST /login as JSON; the session cookie lands in `http`'s jar.
    async fn login(&self, http: &Client) -> Result<(), Error> {
        let (email, password) = self.credentials()?;
        let response = http
            .post(self.url("/login"))
            .json(&serde_json::json!({ "email": email, "password": password }))
            .send()
            .await?;
        let status = response.status();
        let body = response.text().await?;
        if !status.is_success() || body.contains("mfa_required") {
            return Err(fail(format!("login: {status} {body}")));
        }
        Ok(())
    }

    /// GET /oauth2/authorize with the worker's session; returns (code, verifier).
    async fn authorize(&self, http: &Client, scope: &str) -> Result<(String, String), Error> {
        let verifier = random_b64(32);
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let state = random_b64(12);
        let nonce = random_b64(12);
        let query = form(&[
            ("response_type", "code"),
            ("client_id", self.client_id()?),
            ("redirect_uri", &self.args.redirect_uri),
            ("scope", scope),
            ("state", &state),
            ("nonce", &nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ]);
        let response = http
            .get(format!("{}?{query}", self.url("/oauth2/authorize")))
            .send()
            .await?;
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Drain the body so the connection can be reused.
        let body = response.bytes().await?;
        let location = match location {
            Some(l) if status.is_redirection() => l,
            _ => {
                return Err(fail(format!(
                    "authorize: {status} without a redirect: {}",
                    String::from_utf8_lossy(&body)
                        .chars()
                        .take(200)
                        .collect::<String>()
                )))
            }
        };
        let target = url::Url::parse(&location)
            .or_else(|_| url::Url::parse(&self.base).and_then(|b| b.join(&location)))?;
        let mut code = None;
        for (k, v) in target.query_pairs() {
            match k.as_ref() {
                "code" => code = Some(v.into_owned()),
                "state" if v != state => return Err(fail("authorize: state not echoed")),
                "error" => return Err(fail(format!("authorize: redirected to {location}"))),
                _ => {}
            }
        }
        let code = code.ok_or_else(|| fail(format!("authorize: no code in {location}")))?;
        Ok((code, verifier))
    }

    /// authorize → code → token; returns the token response.
    async fn code_flow(&self, http: &Client, scope: &str) -> Result<serde_json::Value, Error> {
        let (code, verifier) = self.authorize(http, scope).await?;
        self.token(
            http,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &self.args.redirect_uri),
                ("code_verifier", &verifier),
            ],
        )
        .await
    }

    async fn client_credentials(&self, http: &Client) -> Result<serde_json::Value, Error> {
        match self.args.scope.as_deref() {
            Some(scope) => {
                self.token(
                    http,
                    &[("grant_type", "client_credentials"), ("scope", scope)],
                )
                .await
            }
            None => {
                self.token(http, &[("grant_type", "client_credentials")])
                    .await
            }
        }
    }
}

fn field(body: &serde_json::Value, name: &str) -> Result<String, Error> {
    body.get(name)
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or_else(|| fail(format!("response lacks {name}: {body}")))
}

/// One worker: its connection and, for some scenarios, its running state.
struct Worker {
    http: Client,
    /// refresh: the current refresh token; introspection: the access token.
    token: String,
}

async fn setup(ctx: &Ctx) -> Result<Worker, Error> {
    let args = &ctx.args;
    let worker = match args.scenario {
        Scenario::ClientCredentials => {
            ctx.client_id()?;
            Worker {
                http: ctx.http(false)?,
                token: String::new(),
            }
        }
        Scenario::Jwks | Scenario::Argon2 => Worker {
            http: ctx.http(false)?,
            token: String::new(),
        },
        Scenario::PasswordLogin => {
            ctx.credentials()?;
            Worker {
                http: ctx.http(false)?,
                token: String::new(),
            }
        }
        Scenario::Introspection => {
            let http = ctx.http(false)?;
            let body = ctx.client_credentials(&http).await?;
            Worker {
                token: field(&body, "access_token")?,
                http,
            }
        }
        Scenario::AuthCode => {
            let http = ctx.http(true)?;
            ctx.login(&http).await?;
            // One flow to check that consent is skipped and the grant works.
            ctx.code_flow(&http, "openid").await?;
            Worker {
                http,
                token: String::new(),
            }
        }
        Scenario::Refresh => {
            let http = ctx.http(true)?;
            ctx.login(&http).await?;
            let body = ctx.code_flow(&http, "openid offline_access").await?;
            Worker {
                token: field(&body, "refresh_token")?,
                http,
            }
        }
    };
    Ok(worker)
}

/// One measured operation; returns how many HTTP requests it made.
async fn operation(ctx: &Ctx, worker: &mut Worker) -> Result<u64, Error> {
    match ctx.args.scenario {
        Scenario::ClientCredentials => {
            let body = ctx.client_credentials(&worker.http).await?;
            field(&body, "access_token")?;
            Ok(1)
        }
        Scenario::Refresh => {
            let body = ctx
                .token(
                    &worker.http,
                    &[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", &worker.token),
                    ],
                )
                .await?;
            worker.token = field(&body, "refresh_token")?;
            Ok(1)
        }
        Scenario::AuthCode => {
            let body = ctx.code_flow(&worker.http, "openid").await?;
            field(&body, "id_token")?;
            Ok(2)
        }
        Scenario::PasswordLogin => {
            let (email, password) = ctx.credentials()?;
            let response = worker
                .http
                .post(ctx.url("/login"))
                .json(&serde_json::json!({ "email": email, "password": password }))
                .send()
                .await?;
            let status = response.status();
            let body = response.bytes().await?;
            if !status.is_success() {
                return Err(fail(format!(
                    "login: {status} {}",
                    String::from_utf8_lossy(&body)
                )));
            }
            Ok(1)
        }
        Scenario::Introspection => {
            let client_id = ctx.client_id()?;
            let mut request = worker
                .http
                .post(ctx.url("/oauth2/introspect"))
                .header("content-type", "application/x-www-form-urlencoded");
            let body = match ctx.client_secret() {
                Some(secret) => {
                    request = request.basic_auth(client_id, Some(secret));
                    form(&[("token", &worker.token)])
                }
                None => form(&[("token", &worker.token), ("client_id", client_id)]),
            };
            let response = request.body(body).send().await?;
            let status = response.status();
            let body: serde_json::Value = response.json().await?;
            if status != StatusCode::OK
                || body.get("active") != Some(&serde_json::Value::Bool(true))
            {
                return Err(fail(format!("introspect: {status} {body}")));
            }
            Ok(1)
        }
        Scenario::Argon2 => Err(fail("argon2 runs without a server")),
        Scenario::Jwks => {
            let response = worker
                .http
                .get(ctx.url("/.well-known/jwks.json"))
                .send()
                .await?;
            let status = response.status();
            let body = response.bytes().await?;
            if status != StatusCode::OK || body.is_empty() {
                return Err(fail(format!("jwks: {status}")));
            }
            Ok(1)
        }
    }
}

#[derive(Default)]
struct Tally {
    /// Latency of each successful operation, in microseconds.
    latencies_us: Vec<u64>,
    requests: u64,
    errors: u64,
    first_error: Option<String>,
}

async fn run_worker(ctx: &Ctx, mut worker: Worker, deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    while Instant::now() < deadline {
        let started = Instant::now();
        match operation(ctx, &mut worker).await {
            Ok(requests) => {
                tally.requests += requests;
                tally
                    .latencies_us
                    .push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
            }
            Err(e) => {
                tally.errors += 1;
                if tally.first_error.is_none() {
                    tally.first_error = Some(e.to_string());
                }
                if ctx.args.scenario == Scenario::Refresh {
                    // A broken chain cannot continue; this worker stops.
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    tally
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("latchkey-load: {e}");
        std::process::exit(1);
    }
}

/// The `argon2` scenario: verifies a password against an Argon2id hash with
/// the server's default parameters, on `concurrency` threads, for `duration`.
fn bare_argon2(args: &Args) -> Result<(), Error> {
    use argon2::password_hash::{
        PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString,
    };
    let params = argon2::Params::new(19_456, 2, 1, None).map_err(|e| fail(e.to_string()))?;
    let argon2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let password = b"correct-horse-battery-staple-load";
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    let hash = argon2
        .hash_password(password, &salt)
        .map_err(|e| fail(e.to_string()))?
        .to_string();
    let self_before = cpu_seconds("self");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.duration);
    let mut latencies: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..args.concurrency)
            .map(|_| {
                s.spawn(|| {
                    let parsed = PasswordHash::new(&hash).expect("hash just made");
                    let mut latencies = Vec::new();
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        argon2
                            .verify_password(password, &parsed)
                            .expect("the password matches");
                        latencies.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
                    }
                    latencies
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("verifier thread"))
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = match (cpu_seconds("self"), self_before) {
        (Some(after), Some(before)) => after - before,
        _ => 0.0,
    };
    latencies.sort_unstable();
    let n = latencies.len() as f64;
    println!(
        "Argon2 (bare, m=19456 t=2 p=1): {} threads, {elapsed:.1} s",
        args.concurrency
    );
    println!(
        "  verifications/s: {:.1} ({} in all), p50 {:.2} ms, p99 {:.2} ms",
        n / elapsed,
        latencies.len(),
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0)
    );
    println!(
        "  CPU: {cpu:.2} s ({:.2} cores busy), {:.3} CPU-s per 1,000 verifications, {:.1} per CPU-second",
        cpu / elapsed,
        if n > 0.0 { cpu * 1000.0 / n } else { 0.0 },
        if cpu > 0.0 { n / cpu } else { 0.0 }
    );
    Ok(())
}

async fn run(args: Args) -> Result<(), Error> {
    if args.scenario == Scenario::Argon2 {
        if args.concurrency == 0 || args.duration == 0 {
            return Err(fail("--concurrency and --duration must be at least 1"));
        }
        return tokio::task::spawn_blocking(move || bare_argon2(&args)).await?;
    }
    let issuer = url::Url::parse(&args.issuer)?;
    if !is_loopback(&issuer) && !args.allow_remote {
        return Err(fail(format!(
            "{issuer} is not a loopback address; pass --allow-remote to load a remote server"
        )));
    }
    if args.concurrency == 0 || args.duration == 0 {
        return Err(fail("--concurrency and --duration must be at least 1"));
    }
    let pid = args.server_pid.map(|p| p.to_string());
    if let Some(pid) = &pid {
        cpu_seconds(pid).ok_or_else(|| fail(format!("cannot read /proc/{pid}/stat")))?;
    }
    let ctx = std::sync::Arc::new(Ctx {
        base: args.issuer.trim_end_matches('/').to_owned(),
        args,
    });

    // Set-up, not measured: one worker at a time for sign-ins (they hash).
    let mut workers = Vec::with_capacity(ctx.args.concurrency);
    for i in 0..ctx.args.concurrency {
        let worker = tokio::time::timeout(Duration::from_secs(60), setup(&ctx))
            .await
            .map_err(|_| fail("set-up timed out"))?
            .map_err(|e| fail(format!("set-up of worker {i}: {e}")))?;
        workers.push(worker);
    }

    let duration = Duration::from_secs(ctx.args.duration);
    let server_before = pid.as_deref().and_then(cpu_seconds);
    let self_before = cpu_seconds("self");
    let started = Instant::now();
    let deadline = started + duration;
    let mut handles = Vec::new();
    for worker in workers {
        let ctx = ctx.clone();
        handles.push(tokio::spawn(async move {
            run_worker(&ctx, worker, deadline).await
        }));
    }
    let mut total = Tally::default();
    for handle in handles {
        // A request in flight at the deadline may take up to the client timeout.
        let tally = handle.await?;
        total.latencies_us.extend(tally.latencies_us);
        total.requests += tally.requests;
        total.errors += tally.errors;
        if total.first_error.is_none() {
            total.first_error = tally.first_error;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let server_cpu = match (pid.as_deref().and_then(cpu_seconds), server_before) {
        (Some(after), Some(before)) => Some(after - before),
        _ => None,
    };
    let self_cpu = match (cpu_seconds("self"), self_before) {
        (Some(after), Some(before)) => Some(after - before),
        _ => None,
    };

    total.latencies_us.sort_unstable();
    let ops = total.latencies_us.len() as f64;
    let per_1000 = |cpu: Option<f64>| {
        cpu.filter(|_| total.requests > 0)
            .map(|c| c * 1000.0 / total.requests as f64)
    };
    let report = serde_json::json!({
        "scenario": format!("{:?}", ctx.args.scenario),
        "concurrency": ctx.args.concurrency,
        "seconds": elapsed,
        "operations": total.latencies_us.len(),
        "operations_per_sec": ops / elapsed,
        "requests": total.requests,
        "requests_per_sec": total.requests as f64 / elapsed,
        "errors": total.errors,
        "p50_ms": percentile(&total.latencies_us, 50.0),
        "p99_ms": percentile(&total.latencies_us, 99.0),
        "max_ms": total.latencies_us.last().map(|&v| v as f64 / 1000.0),
        "server_cpu_seconds": server_cpu,
        "server_cpu_seconds_per_1000_requests": per_1000(server_cpu),
        "server_cores_busy": server_cpu.map(|c| c / elapsed),
        "load_tool_cpu_seconds_per_1000_requests": per_1000(self_cpu),
        "first_error": total.first_error,
    });
    if ctx.args.json {
        println!("{report}");
        return Ok(());
    }
    let op_name = match ctx.args.scenario {
        Scenario::AuthCode => "flows",
        Scenario::PasswordLogin => "logins",
        _ => "requests",
    };
    println!(
        "{:?}: {} workers, {elapsed:.1} s",
        ctx.args.scenario, ctx.args.concurrency
    );
    println!(
        "  {op_name}/s: {:.0} ({} {op_name}, {} HTTP requests, {:.0} requests/s), errors: {}",
        ops / elapsed,
        total.latencies_us.len(),
        total.requests,
        total.requests as f64 / elapsed,
        total.errors
    );
    println!(
        "  latency per {}: p50 {:.2} ms, p99 {:.2} ms",
        op_name.trim_end_matches('s'),
        percentile(&total.latencies_us, 50.0),
        percentile(&total.latencies_us, 99.0)
    );
    if let Some(cpu) = server_cpu {
        println!(
            "  server CPU: {cpu:.2} s ({:.2} cores busy), {:.3} CPU-s per 1,000 requests (CLK_TCK = 100, hard-coded)",
            cpu / elapsed,
            per_1000(server_cpu).unwrap_or(0.0)
        );
    }
    if let Some(cpu) = self_cpu {
        println!(
            "  load tool CPU: {cpu:.2} s ({:.2} cores busy)",
            cpu / elapsed
        );
    }
    if let Some(e) = &total.first_error {
        println!("  first error: {e}");
    }
    Ok(())
}
