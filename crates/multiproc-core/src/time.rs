//! Deadlines on the monotonic clock.
//!
//! Every timed operation in multiproc turns its `Duration` into an
//! [`Instant`] once, at the start, and then works with that deadline:
//! retries after a spurious wake-up do not extend the wait. [`Instant`] is
//! `CLOCK_MONOTONIC` on Linux, so setting the wall clock never shortens or
//! stretches a timeout.

use std::time::{Duration, Instant};

/// The deadline `timeout` from now, or `None` ("wait forever") when the sum
/// does not fit in an [`Instant`].
///
/// Absurd durations such as [`Duration::MAX`] saturate to "forever" instead of
/// panicking on overflow.
///
/// # Examples
///
/// ```
/// use multiproc_core::time::deadline_after;
/// use std::time::Duration;
///
/// assert!(deadline_after(Duration::from_millis(5)).is_some());
/// assert!(deadline_after(Duration::MAX).is_none());
/// ```
#[must_use]
pub fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// Time left until `deadline`: `None` for no deadline, `Some(ZERO)` once it
/// has passed.
///
/// # Examples
///
/// ```
/// use multiproc_core::time::remaining;
/// use std::time::{Duration, Instant};
///
/// assert_eq!(remaining(None), None);
/// assert_eq!(remaining(Some(Instant::now())), Some(Duration::ZERO));
/// ```
#[must_use]
pub fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// `d` as the kernel's `timespec`, saturating at `i64::MAX` seconds.
///
/// # Examples
///
/// ```
/// use multiproc_core::time::timespec;
/// use std::time::Duration;
///
/// let ts = timespec(Duration::from_millis(1500));
/// assert_eq!((ts.tv_sec, ts.tv_nsec), (1, 500_000_000));
/// assert_eq!(timespec(Duration::MAX).tv_sec, i64::MAX); // saturates
/// ```
#[must_use]
pub fn timespec(d: Duration) -> rustix::time::Timespec {
    rustix::time::Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

/// The `timespec` left until `deadline` (`None`: no deadline), for `poll`
/// and futex waits.
///
/// # Examples
///
/// ```
/// use multiproc_core::time::timespec_until;
/// use std::time::{Duration, Instant};
///
/// assert!(timespec_until(None).is_none()); // wait forever
/// let ts = timespec_until(Some(Instant::now() + Duration::from_secs(60))).unwrap();
/// assert!(ts.tv_sec <= 60);
/// let past = timespec_until(Some(Instant::now())).unwrap();
/// assert_eq!((past.tv_sec, past.tv_nsec), (0, 0));
/// ```
#[must_use]
pub fn timespec_until(deadline: Option<Instant>) -> Option<rustix::time::Timespec> {
    remaining(deadline).map(timespec)
}

/// The deadline of a timed operation passed first: the error of every timed
/// wait in multiproc that gives nothing back (crates re-export it; an
/// operation that hands a value back on timeout has its own error holding
/// it).
///
/// ```
/// use multiproc_core::time::Timeout;
///
/// assert_eq!(Timeout.to_string(), "timed out");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timeout;

impl std::fmt::Display for Timeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("timed out")
    }
}

impl std::error::Error for Timeout {}
