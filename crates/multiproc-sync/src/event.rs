//! [`Event`]: a process-shared flag that waiters can sleep on.
//!
//! # Word
//!
//! `word` = generation << 1 | set bit; it is the futex word.
//!
//! | operation | transition | ordering |
//! |---|---|---|
//! | `set` on a clear event | `g << 1 \| 0` → `(g+1) << 1 \| 1`, then wake all if `waiters > 0` | SeqCst CAS, SeqCst load |
//! | `set` on a set event | none | — |
//! | `clear` | clears bit 0, keeps the generation | SeqCst RMW |
//! | `wait` | returns once the word differs from the clear value it saw | Acquire loads; futex compare |
//!
//! Every change of a *clear* word is a `set` (clearing a clear word changes
//! nothing), so a waiter that saw the word clear returns as soon as the word
//! is different, even if somebody cleared it again before the waiter ran:
//! a `set` is never missed, like Python's `threading.Event`. The `waiters`
//! counter lets `set` skip the wake-up system call when nobody sleeps; it is
//! the same SeqCst (Dekker) handshake as in the semaphore. An async waiter
//! (see [`Event::readiness`]) counts itself in `waiters` while armed, so a
//! `set` that sees it also rings the event's doorbells.

use multiproc_core::SpinWait;
use multiproc_core::futex::{self, WaitOutcome};
use multiproc_core::time::deadline_after;
use std::fmt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::Timeout;
use crate::layout::EventLayout;
use crate::ready::{self, Readiness};
use crate::shared::Shared;

const MAGIC: [u8; 8] = *b"MPEVENT\0";
const SET: u32 = 1;

/// A flag shared between processes, like Python's `multiprocessing.Event`:
/// [`set`](Self::set) wakes every process waiting for it.
///
/// # Examples
///
/// ```
/// use multiproc_sync::Event;
/// use std::time::Duration;
///
/// let event = Event::new()?;
/// assert!(!event.is_set());
/// assert!(event.wait_timeout(Duration::from_millis(1)).is_err());
/// std::thread::scope(|s| {
///     s.spawn(|| event.set());
///     event.wait(); // returns once the other thread has set it
/// });
/// assert!(event.is_set());
/// event.clear();
/// assert!(!event.is_set());
/// # Ok::<(), multiproc_sync::CreateError>(())
/// ```
#[derive(Clone)]
pub struct Event {
    shared: Shared<EventLayout>,
}

impl Event {
    /// Sets the flag and wakes every waiter.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_sync::Event;
    ///
    /// let event = Event::new()?;
    /// event.set();
    /// event.set(); // idempotent
    /// assert!(event.is_set());
    /// # Ok::<(), multiproc_sync::CreateError>(())
    /// ```
    pub fn set(&self) {
        let layout = self.shared.get();
        // SYNC: SeqCst: Release for the waiters' Acquire loads, and the
        // setter half of the Dekker pair with the `waiters` increment.
        let changed = layout
            .word
            .fetch_update(Ordering::SeqCst, Ordering::Relaxed, |w| {
                (w & SET == 0).then_some((w & !SET).wrapping_add(2) | SET)
            })
            .is_ok();
        if changed && layout.waiters.load(Ordering::SeqCst) != 0 {
            futex::wake_all(&layout.word);
            // SYNC: after the load that read an async waiter's increment
            // (made after it armed): see `ready::ring`.
            ready::ring(&layout.bells, ready::BELL);
        }
    }

    /// Clears the flag.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_sync::Event;
    ///
    /// let event = Event::new()?;
    /// event.set();
    /// event.clear();
    /// assert!(!event.is_set());
    /// # Ok::<(), multiproc_sync::CreateError>(())
    /// ```
    pub fn clear(&self) {
        self.shared.get().word.fetch_and(!SET, Ordering::SeqCst);
    }

    /// Whether the flag is set (a snapshot).
    #[must_use]
    pub fn is_set(&self) -> bool {
        // SYNC: pairs with the Release half of `set`.
        self.shared.get().word.load(Ordering::Acquire) & SET != 0
    }

    /// Where the flag stands now, for [`set_since`](Self::set_since).
    ///
    /// ```
    /// use multiproc_sync::Event;
    ///
    /// let event = Event::new()?;
    /// let mark = event.mark();
    /// event.set();
    /// event.clear();
    /// assert!(!event.is_set());
    /// assert!(event.set_since(mark)); // a set is never missed
    /// assert!(!event.set_since(event.mark()));
    /// # Ok::<(), multiproc_sync::CreateError>(())
    /// ```
    #[must_use]
    pub fn mark(&self) -> EventMark {
        // SYNC: pairs with the Release half of `set`.
        EventMark(self.shared.get().word.load(Ordering::Acquire))
    }

    /// Whether the flag is set, or was set at some moment after `mark` was
    /// taken: the condition [`wait`](Self::wait) waits for, as a check
    /// (async waiters use it; see [`readiness`](Self::readiness)).
    #[must_use]
    pub fn set_since(&self, mark: EventMark) -> bool {
        // SYNC: SeqCst: the re-check of an announced waiter (Dekker with
        // `set`); Acquire for what the setter did before.
        let now = self.shared.get().word.load(Ordering::SeqCst);
        now & SET != 0 || now != mark.0
    }

    /// A doorbell that `set` rings while a waiter is
    /// [armed](Readiness::arm): what async waiters wait on instead of the
    /// futex (see [`Readiness`]).
    ///
    /// # Errors
    ///
    /// As [`Waiters::new`](multiproc_core::doorbell::Waiters::new): no
    /// descriptor left, or every doorbell slot of the event taken.
    ///
    /// ```
    /// use multiproc_sync::Event;
    ///
    /// let event = Event::new()?;
    /// let ready = event.readiness()?;
    /// let mark = event.mark();
    /// let armed = ready.arm();
    /// armed.announce();
    /// assert!(!event.set_since(mark)); // register with the event loop here
    /// event.set(); // another process, say
    /// assert_eq!(ready.drain()?, 1);
    /// assert!(event.set_since(mark));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn readiness(&self) -> Result<Readiness, multiproc_core::doorbell::WaitersError> {
        Readiness::new(ready::Target::Event(self.shared.clone()))
    }

    /// Waits until the flag is set.
    pub fn wait(&self) {
        let done = self.wait_deadline(None);
        debug_assert!(done.is_ok());
    }

    /// Waits at most `timeout` for the flag to be set (zero polls).
    ///
    /// # Errors
    ///
    /// [`Timeout`] when it was not set in time.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_sync::{Event, Timeout};
    /// use std::time::Duration;
    ///
    /// let event = Event::new()?;
    /// assert_eq!(event.wait_timeout(Duration::ZERO), Err(Timeout));
    /// event.set();
    /// assert_eq!(event.wait_timeout(Duration::ZERO), Ok(()));
    /// # Ok::<(), multiproc_sync::CreateError>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<(), Timeout> {
        self.wait_deadline(deadline_after(timeout))
    }

    #[inline]
    fn wait_deadline(&self, deadline: Option<Instant>) -> Result<(), Timeout> {
        // SYNC: pairs with the Release half of `set`.
        let seen = self.shared.get().word.load(Ordering::Acquire);
        if seen & SET != 0 {
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Timeout);
        }
        self.wait_slow(seen, deadline)
    }

    /// The one blocking core: spin, then register and sleep until the word
    /// differs from the clear value `seen`.
    #[cold]
    fn wait_slow(&self, seen: u32, deadline: Option<Instant>) -> Result<(), Timeout> {
        let layout = self.shared.get();
        let mut spin = SpinWait::new();
        while spin.spin() {
            if layout.word.load(Ordering::Acquire) != seen {
                return Ok(());
            }
        }
        // SYNC: SeqCst, the waiter half of the Dekker pair with `set`.
        layout.waiters.fetch_add(1, Ordering::SeqCst);
        let result = loop {
            if layout.word.load(Ordering::SeqCst) != seen {
                break Ok(());
            }
            // Bounded (see `futex::RECHECK`): a setter killed between its
            // store and its wake must not strand this waiter.
            if futex::wait(&layout.word, seen, Some(futex::recheck_until(deadline)))
                == WaitOutcome::TimedOut
                && deadline.is_some_and(|d| Instant::now() >= d)
            {
                break if layout.word.load(Ordering::Acquire) != seen {
                    Ok(())
                } else {
                    Err(Timeout)
                };
            }
        };
        layout.waiters.fetch_sub(1, Ordering::Relaxed);
        result
    }
}

/// Where an [`Event`] stood at [`Event::mark`]: a set after it is never
/// missed by [`Event::set_since`], even if the event was cleared again.
///
/// ```
/// use multiproc_sync::Event;
///
/// let event = Event::new()?;
/// let mark = event.mark();
/// assert!(!event.set_since(mark));
/// event.set();
/// assert!(event.set_since(mark));
/// # Ok::<(), multiproc_sync::CreateError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventMark(u32);

fn init(layout: &EventLayout) {
    layout.word.store(0, Ordering::Relaxed);
    layout.waiters.store(0, Ordering::Relaxed);
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::os::fd::{AsFd, AsRawFd};
        f.debug_struct("Event")
            .field("fd", &self.segment().as_fd().as_raw_fd())
            .field("offset", &self.shared.offset())
            .field("set", &self.is_set())
            .finish()
    }
}

crate::shared::shared_handle!(Event, EventLayout, "clear event", |_| Ok(()));

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, mpsc};

    /// A setter killed between its store and its wake (the state a SIGKILL
    /// there leaves: the flag set, nobody woken) delays a sleeping waiter
    /// by at most [`futex::RECHECK`]; it must not strand it.
    #[test]
    fn a_setter_killed_before_its_wake_strands_no_waiter() {
        let event = Event::new().unwrap();
        let waiter = Event::attach(Arc::clone(event.segment()), 0).unwrap();
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            waiter.wait();
            done.send(()).unwrap();
        });
        let layout = event.shared.get();
        while layout.waiters.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Past its spin, asleep in the kernel.
        std::thread::sleep(Duration::from_millis(50));
        // `set` up to its wake, and no wake.
        layout.word.fetch_or(SET, Ordering::SeqCst);
        assert!(
            finished
                .recv_timeout(futex::RECHECK + Duration::from_secs(2))
                .is_ok(),
            "the waiter slept on after the flag was set"
        );
    }
}
