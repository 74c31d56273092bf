//! Brute-force protection for sign-in: per-account and per-IP failure
//! counters with exponential lockout.
//!
//! Owns: the [`LoginThrottle`] rules. An attempt *reserves* a failure before
//! the password is checked ([`LoginThrottle::begin`]) and gives it back only
//! on success, so N parallel requests cannot all slip past a limit of 5: the
//! sixth finds the account locked (ASVS: a lockout parallel requests cannot
//! bypass).
//!
//! The counters live in this process; [`AttemptStore`] is the seam where a
//! shared Redis store plugs in for clusters, with the same
//! reserve-then-settle contract (an atomic INCR + EXPIRE per key).
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
}

/// Where counters live. One implementation today (in-process).
pub trait AttemptStore: Send + Sync + 'static {
    /// Atomically: if `key` is locked, return the lock end; otherwise count a
    /// failure (forgetting ones older than the window), lock the key if the
    /// limit is reached, and return `None`.
    fn reserve(
        &self,
        key: &str,
        limit: u32,
        rules: &LoginConfig,
        now: UnixTime,
    ) -> Option<UnixTime>;
    /// Gives back one reserved failure (the attempt succeeded) and, for
    /// accounts, clears the counter entirely.
    fn settle_success(&self, key: &str, clear: bool);
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
    fn reserve(
        &self,
        key: &str,
        limit: u32,
        rules: &LoginConfig,
        now: UnixTime,
    ) -> Option<UnixTime> {
        let mut map = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let counter = map.entry(key.to_owned()).or_default();
        if counter.locked_until > now {
            return Some(counter.locked_until);
        }
        if now - counter.last_failure > rules.failure_window_secs {
            counter.failures = 0;
        }
        counter.failures += 1;
        counter.last_failure = now;
        if counter.failures >= limit {
            let extra = (counter.failures - limit).min(20);
            let lock = rules
                .lockout_base_secs
                .saturating_mul(1i64 << extra)
                .min(rules.lockout_max_secs);
            counter.locked_until = now + lock;
        }
        None
    }

    fn settle_success(&self, key: &str, clear: bool) {
        let mut map = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if clear {
            map.remove(key);
        } else if let Some(counter) = map.get_mut(key) {
            counter.failures = counter.failures.saturating_sub(1);
        }
    }

    fn purge(&self, rules: &LoginConfig, now: UnixTime) {
        let mut map = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, c| {
            c.locked_until > now || now - c.last_failure <= rules.failure_window_secs
        });
    }

    fn tracked(&self) -> usize {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

/// A sign-in attempt that passed the throttle; settle it with the outcome.
#[must_use = "settle the attempt with succeeded() or leave it counted as a failure"]
pub struct Attempt<'a> {
    throttle: &'a LoginThrottle,
    /// `None` until the attempt names an account (a usernameless passkey
    /// sign-in learns it from the credential).
    account_key: Option<String>,
    ip_key: String,
}

impl Attempt<'_> {
    /// The attempt turned out to be for `account` (known only after the
    /// credential was looked up): reserves a failure for it too, or refuses
    /// when the account is locked (the IP's reservation stands).
    pub fn identify(mut self, account: &str, now: UnixTime) -> Result<Self, LockedOut> {
        if self.account_key.is_some() {
            return Ok(self);
        }
        let key = format!("acct:{account}");
        let rules = &self.throttle.rules;
        if let Some(until) =
            self.throttle
                .store
                .reserve(&key, rules.max_failures_per_account, rules, now)
        {
            return Err(LockedOut {
                retry_after_secs: (until - now).max(1),
            });
        }
        self.account_key = Some(key);
        Ok(self)
    }

    /// The attempt could not be judged (e.g. the database was down): give
    /// both reservations back without clearing earlier failures.
    pub fn abandoned(self) {
        if let Some(key) = &self.account_key {
            self.throttle.store.settle_success(key, false);
        }
        self.throttle.store.settle_success(&self.ip_key, false);
    }

    /// The password was right: the account's counter is cleared and the IP's
    /// reserved failure given back.
    pub fn succeeded(self) {
        if let Some(key) = &self.account_key {
            self.throttle.store.settle_success(key, true);
        }
        self.throttle.store.settle_success(&self.ip_key, false);
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
}

impl LoginThrottle {
    pub fn new(rules: LoginConfig) -> LoginThrottle {
        LoginThrottle {
            rules,
            store: Box::new(InProcessAttempts::default()),
        }
    }

    /// Reserves a failure for the account and the IP, or refuses the attempt.
    /// The reservation stands unless [`Attempt::succeeded`] is called.
    pub fn begin(&self, account: &str, ip: &str, now: UnixTime) -> Result<Attempt<'_>, LockedOut> {
        let ip_key = ip_key(ip);
        let account_key = format!("acct:{account}");
        if let Some(until) =
            self.store
                .reserve(&ip_key, self.rules.max_failures_per_ip, &self.rules, now)
        {
            return Err(LockedOut {
                retry_after_secs: (until - now).max(1),
            });
        }
        if let Some(until) = self.store.reserve(
            &account_key,
            self.rules.max_failures_per_account,
            &self.rules,
            now,
        ) {
            // The IP reservation stands: hammering a locked account still counts.
            return Err(LockedOut {
                retry_after_secs: (until - now).max(1),
            });
        }
        Ok(Attempt {
            throttle: self,
            account_key: Some(account_key),
            ip_key,
        })
    }

    /// Reserves a failure for the IP alone, for an attempt that does not
    /// name its account yet (a usernameless passkey sign-in); call
    /// [`Attempt::identify`] once the account is known.
    pub fn begin_unidentified(&self, ip: &str, now: UnixTime) -> Result<Attempt<'_>, LockedOut> {
        let ip_key = ip_key(ip);
        if let Some(until) =
            self.store
                .reserve(&ip_key, self.rules.max_failures_per_ip, &self.rules, now)
        {
            return Err(LockedOut {
                retry_after_secs: (until - now).max(1),
            });
        }
        Ok(Attempt {
            throttle: self,
            account_key: None,
            ip_key,
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

    #[test]
    fn locks_after_limit_and_backs_off_exponentially() {
        let t = LoginThrottle::new(rules());
        for _ in 0..3 {
            let _failed = t.begin("a@x", "1.1.1.1", 1000).expect("allowed");
        }
        assert_eq!(
            t.begin("a@x", "1.1.1.1", 1000).err(),
            Some(LockedOut {
                retry_after_secs: 30
            })
        );
        let _failed = t.begin("a@x", "1.1.1.1", 1030).expect("lock over");
        assert_eq!(
            t.begin("a@x", "1.1.1.1", 1030).err(),
            Some(LockedOut {
                retry_after_secs: 60
            })
        );
        let _failed = t.begin("a@x", "1.1.1.1", 1090).expect("lock over");
        assert_eq!(
            t.begin("a@x", "1.1.1.1", 1090).err(),
            Some(LockedOut {
                retry_after_secs: 120
            })
        );
        let _failed = t.begin("a@x", "1.1.1.1", 1210).expect("lock over");
        assert_eq!(
            t.begin("a@x", "1.1.1.1", 1210).err(),
            Some(LockedOut {
                retry_after_secs: 120
            }),
            "capped"
        );
    }

    #[test]
    fn success_clears_the_account() {
        let t = LoginThrottle::new(rules());
        let _f = t.begin("a@x", "ip", 0).expect("allowed");
        let _f = t.begin("a@x", "ip", 0).expect("allowed");
        t.begin("a@x", "ip", 0).expect("allowed").succeeded();
        for _ in 0..3 {
            let _f = t.begin("a@x", "ip", 1).expect("counter was cleared");
        }
    }

    #[test]
    fn unidentified_attempts_count_for_the_ip_then_for_the_account_they_name() {
        let t = LoginThrottle::new(rules());
        // Three failures whose account became known (e.g. a passkey of a@x
        // with a bad signature) lock a@x, as three wrong passwords would.
        for _ in 0..3 {
            let attempt = t.begin_unidentified("1.1.1.1", 0).expect("ip allowed");
            let _failed = attempt.identify("a@x", 0).expect("account allowed");
        }
        let attempt = t.begin_unidentified("2.2.2.2", 0).expect("another ip");
        assert!(attempt.identify("a@x", 0).is_err(), "the account is locked");
        assert!(t.begin("a@x", "3.3.3.3", 0).is_err(), "for passwords too");
        // Success gives the IP's reservation back and clears the account.
        let t = LoginThrottle::new(rules());
        for _ in 0..8 {
            let _unknown_credential = t.begin_unidentified("4.4.4.4", 0).expect("allowed");
        }
        t.begin_unidentified("4.4.4.4", 0)
            .expect("ninth")
            .identify("b@x", 0)
            .expect("account")
            .succeeded();
        // 8 failures stand: the 9th and the 10th (which reaches the limit) pass.
        let _f = t.begin_unidentified("4.4.4.4", 0).expect("ninth failure");
        let _f = t.begin_unidentified("4.4.4.4", 0).expect("tenth failure");
        assert!(
            t.begin_unidentified("4.4.4.4", 0).is_err(),
            "unknown credentials alone lock the IP"
        );
    }

    #[test]
    fn parallel_attempts_cannot_exceed_the_limit() {
        let t = std::sync::Arc::new(LoginThrottle::new(rules()));
        let allowed = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..32 {
                s.spawn(|| {
                    if let Ok(attempt) = t.begin("victim@x", "9.9.9.9", 0) {
                        allowed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        drop(attempt); // failed password: the reservation stands
                    }
                });
            }
        });
        assert_eq!(allowed.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[test]
    fn ipv6_addresses_count_per_64_and_ipv4_per_address() {
        assert_eq!(ip_key("2001:db8:a:b:1:2:3:4"), "ip:2001:db8:a:b::/64");
        assert_eq!(ip_key("2001:db8:a:b::9"), "ip:2001:db8:a:b::/64");
        assert_ne!(ip_key("2001:db8:a:c::1"), ip_key("2001:db8:a:b::1"));
        assert_eq!(ip_key("::ffff:192.0.2.1"), "ip:192.0.2.1");
        assert_eq!(ip_key("192.0.2.1"), "ip:192.0.2.1");
        assert_ne!(ip_key("192.0.2.1"), ip_key("192.0.2.2"));
        let t = LoginThrottle::new(rules());
        for i in 0..10 {
            let _f = t
                .begin(&format!("u{i}@x"), &format!("2001:db8::{i:x}"), 0)
                .expect("allowed");
        }
        assert!(t.begin("fresh@x", "2001:db8::ffff", 0).is_err(), "same /64");
        assert!(t.begin("fresh@x", "2001:db8:0:1::1", 0).is_ok(), "next /64");
    }

    #[test]
    fn ip_limit_covers_many_accounts() {
        let t = LoginThrottle::new(rules());
        for i in 0..10 {
            let _f = t.begin(&format!("u{i}@x"), "6.6.6.6", 0).expect("allowed");
        }
        assert!(
            t.begin("fresh@x", "6.6.6.6", 0).is_err(),
            "password spraying from one IP is stopped"
        );
        assert!(
            t.begin("fresh@x", "7.7.7.7", 0).is_ok(),
            "other IPs are unaffected"
        );
    }

    #[test]
    fn old_failures_are_forgotten_and_purged() {
        let t = LoginThrottle::new(rules());
        let _f = t.begin("a@x", "ip", 0).expect("allowed");
        let _f = t.begin("a@x", "ip", 0).expect("allowed");
        let _f = t
            .begin("a@x", "ip", 4000)
            .expect("window passed, counter restarted");
        let _f = t.begin("a@x", "ip", 4000).expect("second in new window");
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
