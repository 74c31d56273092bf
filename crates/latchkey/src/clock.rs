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

#[cfg(test)]
mod tests {
    use super::*;

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
