//! The `latchkey` binary as a real process: one-shot commands, and `latchkey
//! dev` / `serve` as servers whose output is collected.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWriteExt as _, BufReader};

/// Longest a server may take to answer `/healthz` after launch. A bound on
/// waiting, not a performance assertion.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest a one-shot command, a shutdown or a log line may take before the
/// test gives up (again a bound, not an assertion).
pub(crate) const EXIT_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// Process harness
// ---------------------------------------------------------------------------

/// Environment variables for a child process (the only ones it gets).
pub(crate) type Env = Vec<(String, String)>;

pub(crate) fn env(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// `base` with `name` set to `value` (replaced if present).
pub(crate) fn with(base: &Env, name: &str, value: &str) -> Env {
    let mut out = without(base, name);
    out.push((name.to_owned(), value.to_owned()));
    out
}

pub(crate) fn without(base: &Env, name: &str) -> Env {
    base.iter().filter(|(k, _)| k != name).cloned().collect()
}

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("probe a free port")
        .port()
}

pub(crate) fn command(dir: &Path, env: &Env) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_latchkey"));
    // Hygiene: the developer's or CI's LATCHKEY_*, RUST_LOG, ... never leak in.
    cmd.current_dir(dir)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .kill_on_drop(true);
    cmd
}

/// What a finished one-shot command did.
pub(crate) struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// stdout parsed as exactly one JSON document; anything else fails the test.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not exactly one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    pub fn assert_success(&self, what: &str) -> &Self {
        assert!(
            self.status.success(),
            "{what}: exited with {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Exit status non-zero (and not a crash), with every `needle` in stderr.
    #[track_caller]
    pub fn assert_failure(&self, what: &str, needles: &[&str]) -> &Self {
        assert_eq!(
            self.status.code(),
            Some(1),
            "{what}: expected exit 1\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "{what}: stderr should mention {needle:?}:\n{}",
                self.stderr
            );
        }
        self
    }
}

/// Runs `latchkey ARGS` in `dir` with exactly `env`, feeding `stdin`, and
/// waits (bounded) for it to exit. The child is killed if the test gives up.
pub(crate) async fn latchkey(
    dir: &Path,
    env: &Env,
    args: &[&str],
    stdin: Option<&str>,
) -> Finished {
    let mut cmd = command(dir, env);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn latchkey");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        // A command that fails before reading its input closes the pipe; its
        // exit status tells the story, not this write.
        let _ = pipe.write_all(text.as_bytes()).await;
        // Dropping the pipe closes it: the command sees the end of input.
    }
    let output = tokio::time::timeout(EXIT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "`latchkey {}` did not finish within {EXIT_TIMEOUT:?}",
                args.join(" ")
            )
        })
        .expect("wait for latchkey");
    Finished {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A running `latchkey dev` / `latchkey serve`. Its stdout and stderr are
/// collected as they come; dropping it kills the process.
pub(crate) struct Server {
    pub(crate) child: tokio::process::Child,
    pub base: String,
    pub(crate) stderr: Arc<Mutex<String>>,
    pub(crate) stdout: Arc<Mutex<String>>,
    pub(crate) readers: Vec<tokio::task::JoinHandle<()>>,
}

/// How a server ended.
pub(crate) struct Stopped {
    pub status: ExitStatus,
    pub stderr: String,
    pub stdout: String,
}

pub(crate) async fn collect(stream: impl AsyncRead + Unpin, into: Arc<Mutex<String>>, echo: bool) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                if echo {
                    // Shown by the test runner when the test fails.
                    eprint!("[latchkey] {text}");
                }
                into.lock().expect("log lock").push_str(&text);
            }
        }
    }
}

impl Server {
    /// Launches `latchkey ARGS` in `dir` with exactly `env` (which must set
    /// `LATCHKEY_BIND`) and waits until it answers `GET /healthz`.
    pub async fn start(dir: &Path, env: &Env, args: &[&str]) -> Server {
        let bind = env
            .iter()
            .find(|(k, _)| k == "LATCHKEY_BIND")
            .map(|(_, v)| v.clone())
            .expect("Server::start needs LATCHKEY_BIND");
        let mut cmd = command(dir, env);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn latchkey");
        let stderr = Arc::new(Mutex::new(String::new()));
        let stdout = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            tokio::spawn(collect(
                child.stderr.take().expect("stderr pipe"),
                stderr.clone(),
                true,
            )),
            tokio::spawn(collect(
                child.stdout.take().expect("stdout pipe"),
                stdout.clone(),
                false,
            )),
        ];
        let mut server = Server {
            child,
            base: format!("http://{bind}"),
            stderr,
            stdout,
            readers,
        };
        server.wait_until_healthy().await;
        server
    }

    pub(crate) async fn wait_until_healthy(&mut self) {
        let probe = reqwest::Client::new();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll child") {
                self.drain().await;
                panic!(
                    "latchkey exited during start-up ({status}):\n{}",
                    self.stderr()
                );
            }
            if let Ok(r) = probe.get(format!("{}/healthz", self.base)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "latchkey did not answer /healthz within {START_TIMEOUT:?}:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("log lock").clone()
    }

    /// Waits (bounded) until a stderr line satisfies `matches`; returns it.
    pub async fn wait_for_line(&self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(line) = self.stderr().lines().find(|l| matches(l)) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no stderr line {what} within {EXIT_TIMEOUT:?}:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends SIGTERM, as systemd, Kubernetes or `docker stop` do.
    pub fn sigterm(&self) {
        let pid = self.child.id().expect("the server is still running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Waits (bounded) for the process to exit and returns all it printed.
    pub async fn wait_for_exit(mut self) -> Stopped {
        let status = tokio::time::timeout(EXIT_TIMEOUT, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "latchkey did not exit within {EXIT_TIMEOUT:?}:\n{}",
                    self.stderr()
                )
            })
            .expect("wait for latchkey");
        self.drain().await;
        Stopped {
            status,
            stderr: self.stderr(),
            stdout: self.stdout.lock().expect("log lock").clone(),
        }
    }

    /// SIGTERM, then [`Server::wait_for_exit`].
    pub async fn stop(self) -> Stopped {
        self.sigterm();
        self.wait_for_exit().await
    }

    /// Lets the readers reach end of file once the process has exited.
    pub(crate) async fn drain(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(EXIT_TIMEOUT, reader).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A no-op when the process has already exited; otherwise SIGKILL, so
        // a failing test never leaves a server behind.
        let _ = self.child.start_kill();
        for reader in &self.readers {
            reader.abort();
        }
    }
}

/// `latchkey dev` in `dir` on a free loopback port, with `extra` variables.
pub(crate) async fn start_dev(dir: &Path, extra: &[(&str, &str)]) -> Server {
    let bind = format!("127.0.0.1:{}", free_port());
    let mut vars = env(extra);
    vars.push(("LATCHKEY_BIND".into(), bind));
    Server::start(dir, &vars, &["dev"]).await
}

/// The administrator email and password printed on the first `latchkey dev`.
pub(crate) fn bootstrap_credentials(stderr: &str) -> Option<(String, String)> {
    let field = |name: &str| {
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    Some((field("email:")?, field("password:")?))
}

/// `POST /login` with a JSON body, as a script would.
pub(crate) async fn sign_in(
    client: &reqwest::Client,
    base: &str,
    email: &str,
    password: &str,
) -> reqwest::Response {
    client
        .post(format!("{base}/login"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .expect("POST /login")
}
