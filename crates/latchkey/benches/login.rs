//! What a password sign-in costs, and how much of it is the hash.
//!
//! Run with `cargo bench -p latchkey --bench login`. Every benchmark uses the
//! default production Argon2id parameters (`PasswordConfig::default()`:
//! m=19456 KiB, t=2, p=1) and a tokio multi-thread runtime:
//!
//! - `password/verify_blocking`: bare Argon2id verification of a correct password;
//! - `password/verify_async`: the same through `PasswordHasher::verify`
//!   (semaphore + `spawn_blocking`);
//! - `login/post_login`: a full `POST /login` form round trip through the real
//!   router (CSRF, throttle, user lookup, hash, session + audit rows in a
//!   temporary SQLite database in WAL mode, cookie, 303);
//! - `*_x2` variants: two at once, to show that throughput scales to both
//!   cores (criterion's `elem/s` is then operations per second in total);
//! - `login_storage/*`: the database work a successful sign-in does besides
//!   the hash, one step at a time, to see where the overhead goes;
//! - `cpu_time/*`, `cpu_time_storage/*`: the same again, measured in CPU time of
//!   the whole process (all threads) instead of wall time: the cost per core,
//!   which waiting (fsync) does not inflate and other load on the machine
//!   hardly does (Linux only: read from `/proc/self/stat`).
//!
//! Results and their reading: `docs/performance.md`.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode, Throughput,
};
use tower::ServiceExt as _;

use latchkey::app::{router, AppState, Dependencies};
use latchkey::audit::{self, Event, EventKind};
use latchkey::config::{Config, PasswordConfig};
use latchkey::crypto::{MasterKey, SecretToken};
use latchkey::http::csrf::{self, Binding};
use latchkey::identity::{self, Email, NewUser, Password, Role};
use latchkey::session::{self, Origin};

const EMAIL: &str = "bench@example.com";
const PASSWORD: &str = "correct-horse-battery-staple";
const USER_AGENT: &str = "latchkey-bench/1";

/// A real application state on a temporary SQLite file (WAL), with one user.
struct Fixture {
    state: AppState,
    router: axum::Router,
    stored_hash: String,
    user_id: String,
    email: Email,
    /// What the router records without `ConnectInfo`: no IP.
    origin: Origin,
    csrf_cookie: String,
    csrf_token: String,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::default();
        config.database.url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("latchkey-bench.db").display()
        );
        assert_eq!(config.password, PasswordConfig::default());
        let state = AppState::new(config, MasterKey::generate(), Dependencies::default())
            .await
            .expect("application state");
        let stored_hash = state
            .hasher
            .hash(&Password::new(PASSWORD))
            .await
            .expect("hash");
        assert!(
            stored_hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "production parameters expected, got {stored_hash}"
        );
        let user = identity::create_user(
            &state.pool,
            NewUser {
                email: Email::parse(EMAIL).expect("email"),
                display_name: "Bench".into(),
                roles: vec![Role::parse("user").expect("role")],
                password_hash: Some(stored_hash.clone()),
                email_verified: true,
                must_change_password: false,
            },
            state.clock.now(),
        )
        .await
        .expect("create user");
        let csrf_cookie = SecretToken::generate().expose().to_owned();
        let csrf_token = csrf::token_for(&state.csrf_key, Binding::Anonymous(&csrf_cookie));
        Fixture {
            router: router(state.clone()),
            state,
            stored_hash,
            user_id: user.id,
            email: Email::parse(EMAIL).expect("email"),
            origin: Origin {
                ip: String::new(),
                user_agent: USER_AGENT.into(),
            },
            csrf_cookie,
            csrf_token,
            _dir: dir,
        }
    }

    fn login_request(&self) -> Request<Body> {
        let form = format!(
            "email={}&password={PASSWORD}&csrf_token={}",
            EMAIL.replace('@', "%40"),
            self.csrf_token
        );
        Request::builder()
            .method("POST")
            .uri("/login")
            .header(header::HOST, "127.0.0.1:8080")
            .header(header::ORIGIN, self.state.issuer_origin.as_str())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(
                header::COOKIE,
                format!(
                    "{}={}",
                    csrf::cookie_name(self.state.config.is_https()),
                    self.csrf_cookie
                ),
            )
            .header(header::USER_AGENT, USER_AGENT)
            .body(Body::from(form))
            .expect("request")
    }

    /// One `POST /login` through the whole router; must end in a 303.
    async fn login_once(&self) {
        let response = self
            .router
            .clone()
            .oneshot(self.login_request())
            .await
            .expect("router is infallible");
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "sign-in failed");
    }

    fn verify_blocking(&self) {
        let v = self
            .state
            .hasher
            .verify_blocking(PASSWORD, &self.stored_hash);
        assert!(v.matches && !v.needs_rehash);
    }

    async fn verify_async(&self) {
        let v = self
            .state
            .hasher
            .verify(&Password::new(PASSWORD), Some(&self.stored_hash))
            .await
            .expect("verify");
        assert!(v.matches && !v.needs_rehash);
    }

    async fn find_user(&self) {
        identity::find_by_email(&self.state.pool, &self.email)
            .await
            .expect("lookup")
            .expect("user exists");
    }

    async fn create_session(&self) {
        session::create(
            &self.state.pool,
            &self.state.config.session,
            &self.user_id,
            &["pwd"],
            &self.origin,
            self.state.clock.moment(),
        )
        .await
        .expect("session");
    }

    async fn audit_event(&self) {
        let event = Event {
            actor: self.user_id.clone(),
            subject: self.user_id.clone(),
            ip: self.origin.ip.clone(),
            user_agent: self.origin.user_agent.clone(),
            detail: "password".into(),
        };
        audit::record(
            &self.state.pool,
            EventKind::LoginSucceeded,
            event,
            self.state.clock.now(),
        )
        .await
        .expect("audit");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Benchmarks of about 20 ms: few samples of equal length.
fn slow_group<'c, M: Measurement>(c: &'c mut Criterion<M>, name: &str) -> BenchmarkGroup<'c, M> {
    let mut group = c.benchmark_group(name);
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(1));
    group
}

/// The storage work of a successful sign-in, step by step (no hashing).
fn storage_steps<M: Measurement>(
    c: &mut Criterion<M>,
    name: &str,
    rt: &tokio::runtime::Runtime,
    fx: &Fixture,
) {
    let mut group = c.benchmark_group(name);
    // Flat: every sample lasts 0.2 s, long enough for the CPU-time clock.
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(1));
    group.bench_function("find_user", |b| b.to_async(rt).iter(|| fx.find_user()));
    group.bench_function("create_session", |b| {
        b.to_async(rt).iter(|| fx.create_session())
    });
    group.bench_function("audit_event", |b| b.to_async(rt).iter(|| fx.audit_event()));
    group.finish();
}

fn benches(c: &mut Criterion) {
    let rt = runtime();
    let fx = rt.block_on(Fixture::new());
    // Sanity: the whole path works before anything is measured.
    rt.block_on(fx.login_once());

    let mut group = slow_group(c, "password");
    group.bench_function("verify_blocking", |b| b.iter(|| fx.verify_blocking()));
    group.bench_function("verify_async", |b| {
        b.to_async(&rt).iter(|| fx.verify_async())
    });
    group.throughput(Throughput::Elements(2));
    group.bench_function("verify_blocking_x2", |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                let other = s.spawn(|| fx.verify_blocking());
                fx.verify_blocking();
                other.join().expect("verifier thread");
            })
        })
    });
    group.finish();

    let mut group = slow_group(c, "login");
    group.bench_function("post_login", |b| b.to_async(&rt).iter(|| fx.login_once()));
    group.throughput(Throughput::Elements(2));
    group.bench_function("post_login_x2", |b| {
        b.to_async(&rt).iter(|| async {
            tokio::join!(fx.login_once(), fx.login_once());
        })
    });
    group.finish();

    storage_steps(c, "login_storage", &rt, &fx);
}

/// CPU time consumed by the whole process (user + system, every thread,
/// including those that have exited), in nanoseconds. `/proc/self/stat`
/// counts in clock ticks (USER_HZ, 100 on Linux), so a sample must last well
/// over 10 ms: the samples here last 0.2 to 0.5 s.
struct ProcessCpuTime;

const NANOS_PER_TICK: u64 = 10_000_000;

fn process_cpu_nanos() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) in parentheses;
    // utime and stime are fields 14 and 15, i.e. the 12th and 13th after it.
    let mut fields = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) * NANOS_PER_TICK)
}

impl Measurement for ProcessCpuTime {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        process_cpu_nanos().expect("/proc/self/stat")
    }
    fn end(&self, start: u64) -> u64 {
        process_cpu_nanos()
            .expect("/proc/self/stat")
            .saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

/// Shows CPU nanoseconds as `ms` (or `µs`), throughput as operations per CPU second.
struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, typical_ns: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if typical_ns < 1e6 {
            (1e-3, "µs")
        } else {
            (1e-6, "ms")
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }
    fn scale_throughputs(
        &self,
        _typical_ns: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let per_op = match *throughput {
            Throughput::Elements(n) | Throughput::Bytes(n) | Throughput::BytesDecimal(n) => n,
        } as f64;
        values.iter_mut().for_each(|v| *v = per_op * 1e9 / *v);
        "op/cpu-s"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn cpu_benches(c: &mut Criterion<ProcessCpuTime>) {
    if process_cpu_nanos().is_none() {
        eprintln!("cpu_time: /proc/self/stat is not readable here; skipped");
        return;
    }
    let rt = runtime();
    let fx = rt.block_on(Fixture::new());
    let mut group = slow_group(c, "cpu_time");
    group.bench_function("verify_blocking", |b| b.iter(|| fx.verify_blocking()));
    group.bench_function("verify_async", |b| {
        b.to_async(&rt).iter(|| fx.verify_async())
    });
    group.bench_function("post_login", |b| b.to_async(&rt).iter(|| fx.login_once()));
    group.finish();
    storage_steps(c, "cpu_time_storage", &rt, &fx);
}

criterion_group!(login, benches);
criterion_group! {
    name = login_cpu;
    config = Criterion::default().with_measurement(ProcessCpuTime);
    targets = cpu_benches
}
criterion_main!(login, login_cpu);
