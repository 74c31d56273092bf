//! Time as an injected dependency.
//!
//! Every expiry decision (sessions, lockouts, later codes and tokens) asks a
//! [`Clock`], so tests move time forward instead of sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Seconds since the Unix epoch; the unit of every timestamp we store.
pub type UnixTime = i64;

/// Milliseconds since the Unix epoch. Only where the order of two events
/// within one second matters: a sign-in and the authorization request it
/// answers (`policy::signed_in_after`).
pub type UnixMillis = i64;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> UnixTime;

    /// The same instant as [`Clock::now`], in milliseconds
    /// (`now_millis().div_euclid(1000) == now()`).
    fn now_millis(&self) -> UnixMillis {
        self.now() * 1000
    }

    /// Now, as a [`Moment`].
    fn moment(&self) -> Moment {
        Moment(self.now_millis())
    }
}

/// The second of a millisecond timestamp.
pub fn seconds_of(at: UnixMillis) -> UnixTime {
    at.div_euclid(1000)
}

/// An instant to the millisecond — a type of its own, so that a count of
/// seconds is never passed where milliseconds are meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Moment(UnixMillis);

impl Moment {
    pub fn from_millis(millis: UnixMillis) -> Moment {
        Moment(millis)
    }
    pub fn millis(self) -> UnixMillis {
        self.0
    }
    /// The second it falls in (what timestamps in seconds store).
    pub fn secs(self) -> UnixTime {
        seconds_of(self.0)
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        seconds_of(self.now_millis())
    }

    fn now_millis(&self) -> UnixMillis {
        let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        i64::try_from(nanos.div_euclid(1_000_000)).unwrap_or(i64::MAX)
    }
}

/// A clock that tests set and advance by hand. It stands still between
/// calls: two events at the same manual instant have equal timestamps.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock showing `start` (seconds), at the start of that second.
    pub fn new(start: UnixTime) -> Self {
        ManualClock(Arc::new(AtomicI64::new(start * 1000)))
    }
    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds * 1000, Ordering::SeqCst);
    }
    /// Moves the clock by a fraction of a second.
    pub fn advance_millis(&self, millis: i64) {
        self.0.fetch_add(millis, Ordering::SeqCst);
    }
    pub fn set(&self, at: UnixTime) {
        self.0.store(at * 1000, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixTime {
        seconds_of(self.now_millis())
    }

    fn now_millis(&self) -> UnixMillis {
        self.0.load(Ordering::SeqCst)
    }
}

/// Formats a timestamp for people: `2026-11-23 10:04:05 UTC`.
pub fn format_utc(at: UnixTime) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| at.to_string())
}

/// How long ago `at` was, seen from `now`, for people: "just now",
/// "5 minutes ago", "3 hours ago", "2 days ago" (pages show the exact UTC
/// time on hover).
pub fn time_ago(now: UnixTime, at: UnixTime) -> String {
    let secs = (now - at).max(0);
    let plural = |n: i64, unit: &str| {
        if n == 1 {
            format!("1 {unit} ago")
        } else {
            format!("{n} {unit}s ago")
        }
    };
    match secs {
        0..=59 => "just now".to_owned(),
        60..=3_599 => plural(secs / 60, "minute"),
        3_600..=86_399 => plural(secs / 3_600, "hour"),
        _ => plural(secs / 86_400, "day"),
    }
}

/// A timestamp as HTML `<time datetime>` wants it: `2026-11-23T10:04:05Z`.
pub fn format_rfc3339(at: UnixTime) -> String {
    time::OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| at.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_ago_reads_like_a_person_would_say_it() {
        let now = 1_800_000_000;
        assert_eq!(time_ago(now, now), "just now");
        assert_eq!(
            time_ago(now, now + 30),
            "just now",
            "clock skew is not the future"
        );
        assert_eq!(time_ago(now, now - 60), "1 minute ago");
        assert_eq!(time_ago(now, now - 59 * 60), "59 minutes ago");
        assert_eq!(time_ago(now, now - 2 * 3600 - 5), "2 hours ago");
        assert_eq!(time_ago(now, now - 86_400), "1 day ago");
        assert_eq!(time_ago(now, now - 40 * 86_400), "40 days ago");
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn manual_clock_counts_milliseconds_within_the_second() {
        let clock = ManualClock::new(1_700_000_000);
        assert_eq!(clock.now_millis(), 1_700_000_000_000);
        clock.advance_millis(999);
        assert_eq!(clock.now(), 1_700_000_000, "still the same second");
        clock.advance_millis(1);
        assert_eq!(clock.now(), 1_700_000_001);
        clock.advance(2);
        assert_eq!(clock.moment().millis(), 1_700_000_003_000);
        assert_eq!(Moment::from_millis(-1).secs(), -1, "floor, not truncation");
        let system = SystemClock;
        assert!((system.now() - seconds_of(system.now_millis())).abs() <= 1);
    }
}
