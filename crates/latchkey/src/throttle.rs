//! Brute-force protection for sign-in: per-account and per-IP failure
//! counters with exponential lockout.
//!
//! Owns: the [`LoginThrottle`] rules. Only failures count: an attempt
//! *reserves* a slot before the password is checked ([`LoginThrottle::begin`])
//! and settles it with its outcome — a failure (also what dropping an
//! unsettled [`Attempt`] means) adds to the counter and may lock the key, a
//! success gives the slot back (and clears the account's counter), an outage
//! gives it back unchanged. A key admits at most `limit - failures` attempts in
//! flight (one, on probation, after a lock ends): the attempt beyond that
//! *waits* until one settles instead of being refused. So N parallel wrong
//! passwords cannot all slip past a limit of 5 (the sixth waits, then finds
//! the account locked — ASVS: a lockout parallel requests cannot bypass), and
//! N parallel right ones all get in: concurrency alone never locks anyone out.
//!
//! The counters live in this process; [`AttemptStore`] is the seam where a
//! shared store plugs in for clusters, with the same reserve-then-settle
//! contract.
//!
//! Must not: know about HTTP, users or whether an account exists (unknown
//! emails are throttled exactly like real ones).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::clock::UnixTime;
use crate::config::LoginConfig;

/// The counters kept per key (`acct:<email>` or `ip:<addr>`).
#[derive(Debug, Clone, Copy, Default)]
struct Counter {
    failures: u32,
    last_failure: UnixTime,
    locked_until: UnixTime,
    /// Attempts reserved and not settled yet.
    in_flight: u32,
}

impl Counter {
    fn forget_old_failures(&mut self, rules: &LoginConfig, now: UnixTime) {
        if now - self.last_failure > rules.failure_window_secs {
            self.failures = 0;
        }
    }

    /// How many attempts may be in flight: those that could still fail
    /// without passing the limit, and one on probation once a lock has ended.
    fn capacity(&self, limit: u32) -> u32 {
        limit.saturating_sub(self.failures).max(1)
    }

    fn count_failure(&mut self, limit: u32, rules: &LoginConfig, now: UnixTime) {
        self.forget_old_failures(rules, now);
        self.failures += 1;
        self.last_failure = now;
        if self.failures >= limit {
            let extra = (self.failures - limit).min(20);
            let lock = rules
                .lockout_base_secs
                .saturating_mul(1i64 << extra)
                .min(rules.lockout_max_secs);
            self.locked_until = self.locked_until.max(now + lock);
        }
    }

    fn is_idle(&self, rules: &LoginConfig, now: UnixTime) -> bool {
        self.in_flight == 0
            && self.locked_until <= now
            && (self.failures == 0 || now - self.last_failure > rules.failure_window_secs)
    }
}

/// What [`AttemptStore::reserve`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// Every key got a slot.
    Granted,
    /// A key is locked until then; nothing was reserved, and each key before
    /// it counted a failure (hammering a locked account still counts for the IP).
    Locked(UnixTime),
    /// A key has as many attempts in flight as it may: nothing was reserved;
    /// try again when one settles.
    Busy,
}

/// How a reserved attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The credential was wrong: counts, and may lock the key.
    Failed,
    /// The credential was right: the slot is given back; `clear` also forgets
    /// the key's earlier failures (accounts, not IPs).
    Succeeded { clear: bool },
    /// The attempt could not be judged (an outage): the slot is given back.
    Abandoned,
}

/// Where counters live. One implementation today (in-process).
pub trait AttemptStore: Send + Sync + 'static {
    /// Atomically, for every `(key, limit)`: reserve a slot on each, or on none.
    fn reserve(&self, keys: &[(&str, u32)], rules: &LoginConfig, now: UnixTime) -> Reservation;
    /// Settles one reserved slot of `key`.
    fn settle(&self, key: &str, limit: u32, outcome: Outcome, rules: &LoginConfig, now: UnixTime);
    /// Drops counters that carry no information any more.
    fn purge(&self, rules: &LoginConfig, now: UnixTime);
    /// Number of keys held (bounded memory check).
    fn tracked(&self) -> usize;
}

#[derive(Default)]
pub struct InProcessAttempts {
    counters: Mutex<HashMap<String, Counter>>,
}

impl AttemptStore for InProcessAttempts {
    fn reserve(&self, keys: &[(&str, u32)], rules: &LoginConfig, now: UnixTime) -> Reservation {
        let mut map = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let mut busy = false;
        for (index, &(key, _)) in keys.iter().enumerate() {
            let counter = map.get(key).copied().unwrap_or_default();
            if counter.locked_until > now {
                for &(before, limit) in &keys[..index] {
                    map.entry(before.to_owned())
                        .or_default()
                        .count_failure(limit, rules, now);
                }
                return Reservation::Locked(counter.locked_until);
            }
        }
        for &(key, limit) in keys {
            if let Some(counter) = map.get_mut(key) {
                counter.forget_old_failures(rules, now);
                busy |= counter.in_flight >= counter.capacity(limit);
            }
        }
        if busy {
            return Reservation::Busy;
        }
        for &(key, _) in keys {
            map.entry(key.to_owned()).or_default().in_flight += 1;
        }
        Reservation::Granted
    }

    fn settle(&self, key: &str, limit: u32, outcome: Outcome, rules: &LoginConfig, now: UnixTime) {
        let mut map = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let counter = map.entry(key.to_owned()).or_default();
        counter.in_flight = counter.in_flight.saturating_sub(1);
        match outcome {
            Outcome::Failed => counter.count_failure(limit, rules, now),
            Outcome::Succeeded { clear: true } => {
                counter.failures = 0;
                counter.last_failure = 0;
            }
            Outcome::Succeeded { clear: false } | Outcome::Abandoned => {}
        }
        if counter.is_idle(rules, now) {
            map.remove(key);
        }
    }

    fn purge(&self, rules: &LoginConfig, now: UnixTime) {
        let mut map = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, c| !c.is_idle(rules, now));
    }

    fn tracked(&self) -> usize {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

/// A sign-in attempt that passed the throttle; settle it with the outcome.
/// Dropped unsettled, it counts as a failure.
#[must_use = "settle the attempt with succeeded() or let it drop to count a failure"]
pub struct Attempt<'a> {
    throttle: &'a LoginThrottle,
    /// `None` until the attempt names an account (a usernameless passkey
    /// sign-in learns it from the credential).
    account_key: Option<String>,
    ip_key: String,
    /// When the attempt began: failures are counted at this time.
    at: UnixTime,
    settled: bool,
}

impl Attempt<'_> {
    /// The attempt turned out to be for `account` (known only after the
    /// credential was looked up): reserves a slot for it too (waiting while
    /// the account has as many attempts in flight as it may), or refuses
    /// when the account is locked (the IP's reservation stands and counts).
    pub async fn identify(mut self, account: &str, now: UnixTime) -> Result<Self, LockedOut> {
        if self.account_key.is_some() {
            return Ok(self);
        }
        let key = format!("acct:{account}");
        let limit = self.throttle.rules.max_failures_per_account;
        self.throttle.reserve(&[(&key, limit)], now).await?;
        self.account_key = Some(key);
        Ok(self)
    }

    fn settle(mut self, account: Outcome, ip: Outcome) {
        self.settled = true;
        self.throttle.settle(
            self.account_key.as_deref(),
            &self.ip_key,
            account,
            ip,
            self.at,
        );
    }

    /// The attempt could not be judged (e.g. the database was down): give
    /// both reservations back without clearing earlier failures.
    pub fn abandoned(self) {
        self.settle(Outcome::Abandoned, Outcome::Abandoned);
    }

    /// The credential was right: the account's counter is cleared and the
    /// IP's slot given back.
    pub fn succeeded(self) {
        self.settle(
            Outcome::Succeeded { clear: true },
            Outcome::Succeeded { clear: false },
        );
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.settled = true;
            self.throttle.settle(
                self.account_key.as_deref(),
                &self.ip_key,
                Outcome::Failed,
                Outcome::Failed,
                self.at,
            );
        }
    }
}

/// Sign-in refused before checking the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockedOut {
    pub retry_after_secs: i64,
}

/// The counter key of an IP address: `ip:<IPv4>`, or for IPv6 the /64 the
/// address belongs to (`ip:2001:db8:a:b::/64`) — one subscriber, one LAN or
/// one host usually gets a whole /64 and could otherwise rotate through 2^64
/// addresses to dodge every per-IP limit. Anything that is not an address
/// (no socket peer) is its own key.
pub fn ip_key(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>().map(|ip| ip.to_canonical()) {
        Ok(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            let prefix = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("ip:{prefix}/64")
        }
        Ok(std::net::IpAddr::V4(v4)) => format!("ip:{v4}"),
        Err(_) => format!("ip:{ip}"),
    }
}

pub struct LoginThrottle {
    rules: LoginConfig,
    store: Box<dyn AttemptStore>,
    /// Woken whenever an attempt settles: attempts waiting for a slot look again.
    settled: tokio::sync::Notify,
}

impl LoginThrottle {
    pub fn new(rules: LoginConfig) -> LoginThrottle {
        LoginThrottle {
            rules,
            store: Box::new(InProcessAttempts::default()),
            settled: tokio::sync::Notify::new(),
        }
    }

    /// Reserves a slot on every key, waiting while one is busy; refuses when one is locked.
    async fn reserve(&self, keys: &[(&str, u32)], now: UnixTime) -> Result<(), LockedOut> {
        loop {
            // Registered before looking, so a settle between the look and the
            // wait still wakes this attempt.
            let woken = self.settled.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            match self.store.reserve(keys, &self.rules, now) {
                Reservation::Granted => return Ok(()),
                Reservation::Locked(until) => {
                    return Err(LockedOut {
                        retry_after_secs: (until - now).max(1),
                    })
                }
                Reservation::Busy => woken.await,
            }
        }
    }

    fn settle(
        &self,
        account_key: Option<&str>,
        ip_key: &str,
        account: Outcome,
        ip: Outcome,
        at: UnixTime,
    ) {
        if let Some(key) = account_key {
            let limit = self.rules.max_failures_per_account;
            self.store.settle(key, limit, account, &self.rules, at);
        }
        let limit = self.rules.max_failures_per_ip;
        self.store.settle(ip_key, limit, ip, &self.rules, at);
        self.settled.notify_waiters();
    }

    /// Reserves a slot for the account and the IP — waiting, if either has as
    /// many attempts in flight as it may, until one settles — or refuses the
    /// attempt when either is locked. Settle it with the outcome.
    pub async fn begin(
        &self,
        account: &str,
        ip: &str,
        now: UnixTime,
    ) -> Result<Attempt<'_>, LockedOut> {
        let ip_key = ip_key(ip);
        let account_key = format!("acct:{account}");
        self.reserve(
            &[
                (&ip_key, self.rules.max_failures_per_ip),
                (&account_key, self.rules.max_failures_per_account),
            ],
            now,
        )
        .await?;
        Ok(Attempt {
            throttle: self,
            account_key: Some(account_key),
            ip_key,
            at: now,
            settled: false,
        })
    }

    /// Reserves a slot for the IP alone, for an attempt that does not name
    /// its account yet (a usernameless passkey sign-in); call
    /// [`Attempt::identify`] once the account is known.
    pub async fn begin_unidentified(
        &self,
        ip: &str,
        now: UnixTime,
    ) -> Result<Attempt<'_>, LockedOut> {
        let ip_key = ip_key(ip);
        self.reserve(&[(&ip_key, self.rules.max_failures_per_ip)], now)
            .await?;
        Ok(Attempt {
            throttle: self,
            account_key: None,
            ip_key,
            at: now,
            settled: false,
        })
    }

    pub fn purge(&self, now: UnixTime) {
        self.store.purge(&self.rules, now);
    }

    pub fn tracked_keys(&self) -> usize {
        self.store.tracked()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> LoginConfig {
        LoginConfig {
            max_failures_per_account: 3,
            max_failures_per_ip: 10,
            lockout_base_secs: 30,
            lockout_max_secs: 120,
            failure_window_secs: 3600,
        }
    }

    /// One failed attempt: begun, then dropped unsettled.
    async fn fail(t: &LoginThrottle, account: &str, ip: &str, now: UnixTime) {
        drop(t.begin(account, ip, now).await.expect("allowed"));
    }

    #[tokio::test]
    async fn locks_after_limit_and_backs_off_exponentially() {
        let t = LoginThrottle::new(rules());
        for _ in 0..3 {
            fail(&t, "a@x", "1.1.1.1", 1000).await;
        }
        assert_eq!(
            t.begin("a@x", "1.1.1.1", 1000).await.err(),
            Some(LockedOut {
                retry_after_secs: 30
            })
        );
        fail(&t, "a@x", "1.1.1.1", 1030).await;
        assert_eq!(
            t.begin("a@x", "1.1.1.1", 1030).await.err(),
            Some(LockedOut {
                retry_after_secs: 60
            })
        );
        fail(&t, "a@x", "1.1.1.1", 1090).await;
        assert_eq!(
            t.begin("a@x", "1.1.1.1", 1090).await.err(),
            Some(LockedOut {
                retry_after_secs: 120
            })
        );
        fail(&t, "a@x", "1.1.1.1", 1210).await;
        assert_eq!(
            t.begin("a@x", "1.1.1.1", 1210).await.err(),
            Some(LockedOut {
                retry_after_secs: 120
            }),
            "capped"
        );
    }

    #[tokio::test]
    async fn success_clears_the_account() {
        let t = LoginThrottle::new(rules());
        fail(&t, "a@x", "ip", 0).await;
        fail(&t, "a@x", "ip", 0).await;
        t.begin("a@x", "ip", 0).await.expect("allowed").succeeded();
        for _ in 0..3 {
            fail(&t, "a@x", "ip", 1).await;
        }
        assert!(t.begin("a@x", "ip", 1).await.is_err(), "locked again");
    }

    #[tokio::test]
    async fn unidentified_attempts_count_for_the_ip_then_for_the_account_they_name() {
        let t = LoginThrottle::new(rules());
        // Three failures whose account became known (e.g. a passkey of a@x
        // with a bad signature) lock a@x, as three wrong passwords would.
        for _ in 0..3 {
            let attempt = t
                .begin_unidentified("1.1.1.1", 0)
                .await
                .expect("ip allowed");
            drop(attempt.identify("a@x", 0).await.expect("account allowed"));
        }
        let attempt = t
            .begin_unidentified("2.2.2.2", 0)
            .await
            .expect("another ip");
        assert!(
            attempt.identify("a@x", 0).await.is_err(),
            "the account is locked"
        );
        assert!(
            t.begin("a@x", "3.3.3.3", 0).await.is_err(),
            "for passwords too"
        );
        // Success gives the IP's slot back and clears the account.
        let t = LoginThrottle::new(rules());
        for _ in 0..8 {
            drop(t.begin_unidentified("4.4.4.4", 0).await.expect("allowed"));
        }
        t.begin_unidentified("4.4.4.4", 0)
            .await
            .expect("ninth")
            .identify("b@x", 0)
            .await
            .expect("account")
            .succeeded();
        // 8 failures stand: the 9th and the 10th (which reaches the limit) pass.
        drop(
            t.begin_unidentified("4.4.4.4", 0)
                .await
                .expect("ninth failure"),
        );
        drop(
            t.begin_unidentified("4.4.4.4", 0)
                .await
                .expect("tenth failure"),
        );
        assert!(
            t.begin_unidentified("4.4.4.4", 0).await.is_err(),
            "unknown credentials alone lock the IP"
        );
    }

    /// 32 parallel wrong attempts on a limit of 3: three are judged, the
    /// others wait for them and then find the account locked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn parallel_failures_cannot_exceed_the_limit() {
        for _round in 0..20 {
            let t = std::sync::Arc::new(LoginThrottle::new(rules()));
            let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(32));
            let tasks: Vec<_> = (0..32)
                .map(|_| {
                    let (t, barrier) = (t.clone(), barrier.clone());
                    tokio::spawn(async move {
                        barrier.wait().await;
                        match t.begin("victim@x", "9.9.9.9", 0).await {
                            Ok(attempt) => {
                                tokio::task::yield_now().await;
                                drop(attempt); // a wrong password
                                true
                            }
                            Err(_) => false,
                        }
                    })
                })
                .collect();
            let mut judged = 0;
            for task in tasks {
                judged += usize::from(task.await.expect("task"));
            }
            assert_eq!(judged, 3);
        }
    }

    /// 16 parallel right passwords on a limit of 3: all get in, nothing locks.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn parallel_successes_never_lock() {
        for _round in 0..20 {
            let t = std::sync::Arc::new(LoginThrottle::new(rules()));
            let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(16));
            let tasks: Vec<_> = (0..16)
                .map(|i| {
                    let (t, barrier) = (t.clone(), barrier.clone());
                    tokio::spawn(async move {
                        barrier.wait().await;
                        // Half on one account, half on accounts of their own, all one IP.
                        let account = if i % 2 == 0 {
                            "a@x".to_owned()
                        } else {
                            format!("u{i}@x")
                        };
                        let attempt = t.begin(&account, "9.9.9.9", 0).await?;
                        tokio::task::yield_now().await;
                        attempt.succeeded();
                        Ok::<(), LockedOut>(())
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("task").expect("never refused");
            }
            assert_eq!(t.tracked_keys(), 0, "nothing counted");
        }
    }

    #[tokio::test]
    async fn ipv6_addresses_count_per_64_and_ipv4_per_address() {
        assert_eq!(ip_key("2001:db8:a:b:1:2:3:4"), "ip:2001:db8:a:b::/64");
        assert_eq!(ip_key("2001:db8:a:b::9"), "ip:2001:db8:a:b::/64");
        assert_ne!(ip_key("2001:db8:a:c::1"), ip_key("2001:db8:a:b::1"));
        assert_eq!(ip_key("::ffff:192.0.2.1"), "ip:192.0.2.1");
        assert_eq!(ip_key("192.0.2.1"), "ip:192.0.2.1");
        assert_ne!(ip_key("192.0.2.1"), ip_key("192.0.2.2"));
        let t = LoginThrottle::new(rules());
        for i in 0..10 {
            fail(&t, &format!("u{i}@x"), &format!("2001:db8::{i:x}"), 0).await;
        }
        assert!(
            t.begin("fresh@x", "2001:db8::ffff", 0).await.is_err(),
            "same /64"
        );
        assert!(
            t.begin("fresh@x", "2001:db8:0:1::1", 0).await.is_ok(),
            "next /64"
        );
    }

    #[tokio::test]
    async fn ip_limit_covers_many_accounts() {
        let t = LoginThrottle::new(rules());
        for i in 0..10 {
            fail(&t, &format!("u{i}@x"), "6.6.6.6", 0).await;
        }
        assert!(
            t.begin("fresh@x", "6.6.6.6", 0).await.is_err(),
            "password spraying from one IP is stopped"
        );
        assert!(
            t.begin("fresh@x", "7.7.7.7", 0).await.is_ok(),
            "other IPs are unaffected"
        );
    }

    #[tokio::test]
    async fn old_failures_are_forgotten_and_purged() {
        let t = LoginThrottle::new(rules());
        fail(&t, "a@x", "ip", 0).await;
        fail(&t, "a@x", "ip", 0).await;
        fail(&t, "a@x", "ip", 4000).await; // window passed, counter restarted
        fail(&t, "a@x", "ip", 4000).await;
        assert!(
            t.begin("a@x", "ip", 4000).await.is_ok(),
            "two failures in this window"
        );
        t.purge(10_000);
        assert_eq!(t.tracked_keys(), 0);
    }
}

/// A fixed-window request counter per key (token-endpoint requests per
/// client). In-process, like [`LoginThrottle`]; a Redis store can replace it.
pub struct RateLimiter {
    per_minute: u32,
    windows: Mutex<HashMap<String, (UnixTime, u32)>>,
}

impl RateLimiter {
    /// `per_minute == 0` disables the limit.
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request; `Err(retry_after_secs)` when over the limit.
    pub fn check(&self, key: &str, now: UnixTime) -> Result<(), i64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let window = now - now.rem_euclid(60);
        let mut map = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, (w, _)| *w == window);
        }
        let entry = map.entry(key.to_owned()).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        if entry.1 >= self.per_minute {
            return Err((window + 60 - now).max(1));
        }
        entry.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod rate_tests {
    use super::RateLimiter;

    #[test]
    fn limits_per_key_and_window() {
        let r = RateLimiter::new(3);
        for _ in 0..3 {
            r.check("a", 120).expect("within limit");
        }
        assert_eq!(r.check("a", 150), Err(30));
        r.check("b", 150).expect("other keys are independent");
        r.check("a", 180).expect("new window");
        assert!(RateLimiter::new(0).check("x", 0).is_ok());
    }
}
