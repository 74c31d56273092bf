//! Time for the verifier: every `exp`/`nbf`/`iat` decision and the feed's
//! staleness ask a [`Clock`], so tests move time instead of sleeping.
//!
//! Must not: sleep or schedule (background tasks use tokio's timers).

/// A source of the current time in Unix seconds.
///
/// Any `Fn() -> i64` closure is a clock, so a test can share its own:
///
/// ```
/// use std::sync::atomic::{AtomicI64, Ordering};
/// use std::sync::Arc;
/// use latchkey_verify::clock::Clock;
///
/// let now = Arc::new(AtomicI64::new(1_767_225_600));
/// let clock = { let now = now.clone(); move || now.load(Ordering::SeqCst) };
/// now.fetch_add(60, Ordering::SeqCst);
/// assert_eq!(clock.now(), 1_767_225_660);
/// ```
pub trait Clock: Send + Sync + 'static {
    /// Seconds since the Unix epoch.
    fn now(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }
}

impl<F> Clock for F
where
    F: Fn() -> i64 + Send + Sync + 'static,
{
    fn now(&self) -> i64 {
        self()
    }
}
