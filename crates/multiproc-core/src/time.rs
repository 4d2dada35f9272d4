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
