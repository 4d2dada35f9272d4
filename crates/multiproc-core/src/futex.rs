//! Futex wait and wake on an [`AtomicU32`] that lives in memory shared between
//! processes, and [`SpinWait`], the spin-then-sleep budget in front of it.
//!
//! All futex operations here are *shared* (no `FUTEX_PRIVATE_FLAG`): the
//! kernel keys them by the physical page, so a waiter in one process is found
//! by a waker in another that maps the same segment at a different address.
//!
//! # Why spin first
//!
//! On the machines multiproc is benchmarked on, a futex round trip between
//! two processes with no spinning takes about 49 µs, so waking a process
//! that sleeps on the other CPU costs 20–25 µs (`futex_round_trip/futex_only`
//! in `cargo bench -p multiproc-core --bench futex`, a round trip being two
//! wake-ups). A waiter that spins for a short while first catches most
//! hand-offs while both processes are running and brings the round trip to
//! well under a microsecond (`futex_round_trip/spin_then_futex` in the same
//! bench). [`SpinWait`] holds that budget; [`wait_until`] combines it with
//! the sleep.
//!
//! A spinning waiter also yields now and then, for a partner that shares
//! its CPU; one whose yields have been running another task yields after a
//! few spins instead of 64 ([`SpinWait::spin`]). Pinned to one CPU, that
//! took a queue round trip from 0.86–0.89× the socketpair's to 1.43–1.73×
//! (2.2–3.2 µs) on an Intel guest whose pause instruction takes 15 ns, and
//! left it unchanged on two CPUs (`round trip 8 B` in the compare demo's
//! placement table, three runs each).
//!
//! ```
//! use multiproc_core::futex;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::{Duration, Instant};
//!
//! let word = AtomicU32::new(0);
//! // Nobody will change the word: the timed wait gives up on time.
//! let deadline = Instant::now() + Duration::from_millis(10);
//! assert!(futex::wait_until(&word, Some(deadline), |v| v == 1).is_err());
//!
//! word.store(1, Ordering::Release);
//! futex::wake_all(&word);
//! assert_eq!(futex::wait_until(&word, None, |v| v == 1), Ok(1));
//! ```
//!
//! # References
//!  - [futex(2)](https://man7.org/linux/man-pages/man2/futex.2.html)
//!  - [futex(7)](https://man7.org/linux/man-pages/man7/futex.7.html)

use rustix::io::Errno;
use rustix::thread::futex as sys;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::time::Timeout;
use crate::time::remaining;

/// How a [`wait`] returned. The caller re-reads the word in every case:
/// futex wake-ups can be spurious.
///
/// # Examples
///
/// ```
/// use multiproc_core::futex::{self, WaitOutcome};
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::{Duration, Instant};
///
/// let word = AtomicU32::new(0);
/// // The usual loop: re-read the word whatever the outcome.
/// let deadline = Instant::now() + Duration::from_millis(20);
/// let outcome = loop {
///     if word.load(Ordering::Acquire) == 1 {
///         break WaitOutcome::Woken;
///     }
///     match futex::wait(&word, 0, Some(deadline)) {
///         WaitOutcome::TimedOut => break WaitOutcome::TimedOut,
///         WaitOutcome::Woken | WaitOutcome::Changed => continue,
///     }
/// };
/// assert_eq!(outcome, WaitOutcome::TimedOut); // nobody set it
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitOutcome {
    /// Woken by a [`wake`], by a signal, or spuriously.
    Woken,
    /// The word did not hold `expected` when the kernel looked (`EAGAIN`).
    Changed,
    /// The deadline passed.
    TimedOut,
}

/// `syscall(SYS_futex, word, FUTEX_WAIT, expected, timeout)`—sleeps while
/// `word` holds `expected`, until woken or until `deadline`.
///
/// The comparison and the sleep are atomic with respect to [`wake`]: a waker
/// that changes the word and then wakes cannot be missed. A deadline that has
/// already passed returns [`WaitOutcome::TimedOut`] without a system call.
/// `EINTR` is reported as [`WaitOutcome::Woken`]; callers loop anyway.
///
/// # Examples
///
/// ```
/// use multiproc_core::futex::{wait, WaitOutcome};
/// use std::sync::atomic::AtomicU32;
/// use std::time::Instant;
///
/// let word = AtomicU32::new(5);
/// assert_eq!(wait(&word, 4, None), WaitOutcome::Changed);
/// assert_eq!(wait(&word, 5, Some(Instant::now())), WaitOutcome::TimedOut);
/// ```
pub fn wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> WaitOutcome {
    let timeout = match remaining(deadline) {
        Some(Duration::ZERO) => return WaitOutcome::TimedOut,
        Some(left) => Some(crate::time::timespec(left)),
        None => None,
    };
    // FUTEX_WAIT measures a relative timeout on CLOCK_MONOTONIC.
    match sys::wait(word, sys::Flags::empty(), expected, timeout.as_ref()) {
        Ok(()) | Err(Errno::INTR) => WaitOutcome::Woken,
        Err(Errno::AGAIN) => WaitOutcome::Changed,
        Err(Errno::TIMEDOUT) => WaitOutcome::TimedOut,
        Err(other) => {
            // EFAULT/EINVAL cannot happen for a live `&AtomicU32` and a
            // normalised timespec; ENOSYS means no futexes at all.
            debug_assert!(false, "unexpected futex wait error: {other}");
            WaitOutcome::Woken
        }
    }
}

/// `syscall(SYS_futex, word, FUTEX_WAKE, count)`—wakes up to `count`
/// processes or threads sleeping on `word`; returns how many were woken.
///
/// Waking a word that nobody waits on is harmless (it returns 0), and so is
/// waking memory that has since been unmapped by everybody else: the kernel
/// looks the address up in the caller's own mapping.
///
/// # Examples
///
/// ```
/// use multiproc_core::futex;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
///
/// let word = Arc::new(AtomicU32::new(0));
/// let waiters: Vec<_> = (0..2)
///     .map(|_| {
///         let word = Arc::clone(&word);
///         std::thread::spawn(move || futex::wait_until(&word, None, |v| v == 1))
///     })
///     .collect();
/// word.store(1, Ordering::Release);
/// futex::wake(&word, 2); // returns how many slept; they may not have yet
/// for w in waiters {
///     assert_eq!(w.join().unwrap(), Ok(1));
/// }
/// assert_eq!(futex::wake(&word, 1), 0); // nobody waits now
/// ```
pub fn wake(word: &AtomicU32, count: u32) -> usize {
    match sys::wake(word, sys::Flags::empty(), count) {
        Ok(woken) => woken,
        Err(err) => {
            debug_assert!(false, "unexpected futex wake error: {err}");
            0
        }
    }
}

/// Wakes one waiter on `word`; see [`wake`].
///
/// # Examples
///
/// ```
/// use multiproc_core::futex;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
///
/// let ready = Arc::new(AtomicU32::new(0));
/// let waiter = {
///     let ready = Arc::clone(&ready);
///     std::thread::spawn(move || futex::wait_until(&ready, None, |v| v != 0))
/// };
/// ready.store(42, Ordering::Release);
/// futex::wake_one(&ready);
/// assert_eq!(waiter.join().unwrap(), Ok(42));
/// ```
pub fn wake_one(word: &AtomicU32) -> usize {
    wake(word, 1)
}

/// Wakes every waiter on `word`; see [`wake`].
///
/// # Examples
///
/// ```
/// use multiproc_core::futex;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
///
/// let gate = Arc::new(AtomicU32::new(0));
/// let waiters: Vec<_> = (0..3)
///     .map(|_| {
///         let gate = Arc::clone(&gate);
///         std::thread::spawn(move || futex::wait_until(&gate, None, |v| v == 1))
///     })
///     .collect();
/// gate.store(1, Ordering::Release);
/// futex::wake_all(&gate);
/// assert!(waiters.into_iter().all(|w| w.join().unwrap() == Ok(1)));
/// ```
pub fn wake_all(word: &AtomicU32) -> usize {
    wake(word, i32::MAX as u32)
}

/// How long a sleeper sleeps at most before it looks at its condition
/// again by itself.
///
/// Why: a waker can be killed between the store that makes a sleeper's
/// condition true and its wake (SIGKILL at any instant), or between
/// clearing a "someone sleeps" mark and the wake that mark asked for. Its
/// sleepers would then sleep until another waker comes, maybe never. A
/// sleeper that looks again every second costs one wake-up per second
/// while it sleeps.
pub const RECHECK: Duration = Duration::from_secs(1);

/// `deadline`, or [`RECHECK`] from now if that comes first: what a sleeper
/// passes to [`wait`] so that a dead waker delays it, never strands it.
/// A wait that returns `TimedOut` before `deadline` is a re-check, not a
/// timeout.
///
/// ```
/// use multiproc_core::futex::{recheck_until, RECHECK};
/// use std::time::{Duration, Instant};
///
/// let now = Instant::now();
/// assert!(recheck_until(None) <= Instant::now() + RECHECK);
/// let soon = now + Duration::from_millis(5);
/// assert_eq!(recheck_until(Some(soon)), soon);
/// ```
#[must_use]
pub fn recheck_until(deadline: Option<Instant>) -> Instant {
    let slice = Instant::now() + RECHECK;
    deadline.map_or(slice, |d| d.min(slice))
}

/// Spin iterations a waiter spends before it sleeps.
///
/// Chosen with `cargo bench -p multiproc-core --bench futex`: a cross-process
/// hand-off that arrives within this budget costs well under a microsecond
/// (`futex_round_trip/spin_then_futex`), one that does not pays the
/// 20–50 µs kernel wake-up it would have paid anyway
/// (`futex_round_trip/futex_only`, a round trip of two such wake-ups), and
/// the budget itself is a few microseconds of one CPU.
pub const SPIN_LIMIT: u32 = 2000;

/// After this many pure spins a waiter also yields its CPU now and then, so a
/// partner that shares the CPU gets to run (2-CPU machines are common).
const YIELD_EVERY: u32 = 64;

/// A thread whose last yield ran another task yields after this many spins
/// instead (see [`SpinWait::spin`]).
const YIELD_EVERY_SHARED: u32 = 4;

/// A yield that took this long ran another task: a bare `sched_yield` with
/// nothing else to run takes about 0.3 µs (2 vCPU guest), one that switches
/// to a partner and back at least twice that plus the partner's work.
const GAVE_AWAY: Duration = Duration::from_micros(1);

std::thread_local! {
    /// Whether this thread's last yield in [`SpinWait::spin`] ran another
    /// task: its CPU is shared, quite likely with the partner it waits for.
    static CPU_SHARED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A spin budget: call [`spin`](SpinWait::spin) between checks of a condition
/// until it returns `false`, then sleep with [`wait`].
///
/// Never blocks by itself.
///
/// # Examples
///
/// ```
/// use multiproc_core::SpinWait;
///
/// let mut spin = SpinWait::with_limit(3);
/// assert!(spin.spin() && spin.spin() && spin.spin());
/// assert!(!spin.spin()); // budget spent: time to sleep
/// spin.reset();
/// assert!(spin.spin());
/// ```
#[derive(Clone, Debug)]
pub struct SpinWait {
    count: u32,
    limit: u32,
    /// The last [`spin`](SpinWait::spin) yielded.
    yielded: bool,
}

impl SpinWait {
    /// A budget of [`SPIN_LIMIT`] spins (fewer when its yields find the
    /// CPU shared: see [`spin`](SpinWait::spin)).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::futex::{SpinWait, SPIN_LIMIT};
    ///
    /// let mut spin = SpinWait::new();
    /// let spins = std::iter::from_fn(|| spin.spin().then_some(())).count();
    /// assert!(spins > 0 && spins <= SPIN_LIMIT as usize);
    /// ```
    #[must_use]
    pub const fn new() -> Self {
        Self::with_limit(SPIN_LIMIT)
    }

    /// A budget of `limit` spins (0 sleeps at once).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::SpinWait;
    ///
    /// assert!(!SpinWait::with_limit(0).spin()); // sleep at once
    /// let mut two = SpinWait::with_limit(2);
    /// assert!(two.spin() && two.spin() && !two.spin());
    /// ```
    #[must_use]
    pub const fn with_limit(limit: u32) -> Self {
        Self {
            count: 0,
            limit,
            yielded: false,
        }
    }

    /// Spends one unit of the budget (a pause instruction, now and then a
    /// yield); returns `false`, without waiting, once the budget is spent.
    ///
    /// A yield comes every 64 spins, or after 4 when this thread's last
    /// yield ran another task (it took 1 µs or more: the CPU is shared,
    /// quite likely with the partner of the wait, which cannot move while
    /// this thread spins). Either way a yield spends the rest of its round
    /// of 64, so a wait yields about `limit / 64` times at most: early
    /// yields do not make a wait longer where they go to a task that hogs
    /// the CPU. What each thread learnt is its own (a thread-local flag).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::{futex, SpinWait};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::time::{Duration, Instant};
    ///
    /// let word = AtomicU32::new(0);
    /// let mut spin = SpinWait::with_limit(100);
    /// // Spin while the budget lasts, then sleep on the futex.
    /// while word.load(Ordering::Acquire) == 0 {
    ///     if !spin.spin() {
    ///         let deadline = Instant::now() + Duration::from_millis(1);
    ///         futex::wait(&word, 0, Some(deadline));
    ///         break; // a real waiter would loop; this one gives up
    ///     }
    /// }
    /// assert_eq!(word.load(Ordering::Acquire), 0);
    /// ```
    #[inline]
    pub fn spin(&mut self) -> bool {
        if self.count >= self.limit {
            return false;
        }
        self.count += 1;
        let every = if CPU_SHARED.get() {
            YIELD_EVERY_SHARED
        } else {
            YIELD_EVERY
        };
        self.yielded = self.count.is_multiple_of(every);
        if self.yielded {
            yield_and_learn();
            // A yield spends the rest of its round of the budget however
            // early it came, so a wait yields once per `YIELD_EVERY` spins
            // of its limit either way: where the yields go to a task that
            // hogs the CPU, early ones do not make the spin last longer.
            self.count = self
                .count
                .checked_next_multiple_of(YIELD_EVERY)
                .unwrap_or(u32::MAX);
        } else {
            std::hint::spin_loop();
        }
        true
    }

    /// Whether the last [`spin`](SpinWait::spin) yielded the CPU: a
    /// partner that shares it may just have run, so a waiter that looks at
    /// its condition only every so many spins (to leave the partner's
    /// cache line alone) should look now.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::SpinWait;
    ///
    /// let mut spin = SpinWait::with_limit(1);
    /// assert!(!spin.yielded());
    /// assert!(spin.spin() && !spin.yielded()); // one pause, no yield
    /// ```
    #[must_use]
    pub fn yielded(&self) -> bool {
        self.yielded
    }

    /// Refills the budget.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::SpinWait;
    ///
    /// let mut spin = SpinWait::with_limit(1);
    /// assert!(spin.spin());
    /// assert!(!spin.spin());
    /// spin.reset(); // e.g. after the condition held once
    /// assert!(spin.spin());
    /// ```
    pub fn reset(&mut self) {
        self.count = 0;
    }
}

/// Yields, and records whether the yield ran another task.
///
/// Why: while the partner of a wait shares this CPU, every spin before a
/// yield only delays it; with the pause instruction at 15 ns (recent Intel
/// cores; a few ns on others) the 63 spins before each yield cost about
/// 1 µs per hand-off, a quarter of a round trip between two processes on
/// one CPU. A thread whose yields run another task therefore yields after
/// a few spins, and one whose yields come straight back (nothing else to
/// run here, the partner is elsewhere) keeps spinning as before.
#[cold]
fn yield_and_learn() {
    let start = Instant::now();
    std::thread::yield_now();
    CPU_SHARED.set(start.elapsed() >= GAVE_AWAY);
}

/// The CPU the calling thread runs on now: a hint, since it may move right
/// after. A waiter compares it with the CPU its partner said it ran on to
/// tell whether spinning can see the partner finish, or only keeps it off
/// this CPU.
///
/// # Examples
///
/// ```
/// let cpu = multiproc_core::futex::current_cpu();
/// let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
/// assert!((cpu as usize) < cpus.max(1024));
/// ```
pub fn current_cpu() -> u32 {
    u32::try_from(rustix::thread::sched_getcpu()).unwrap_or(u32::MAX)
}

impl Default for SpinWait {
    fn default() -> Self {
        Self::new()
    }
}

/// Waits until `done(word)` holds: spins for [`SPIN_LIMIT`] checks, then
/// sleeps on the futex until the word changes, re-checking after every
/// wake-up. Returns the value that satisfied `done`.
///
/// Whoever changes the word must call [`wake`] (or [`wake_all`]) afterwards
/// for a sleeping waiter to notice; primitives that want to skip that system
/// call when nobody sleeps keep a waiter count beside the word.
///
/// # Errors
///
/// [`Timeout`] when `deadline` passes before `done` holds.
///
/// # Examples
///
/// ```
/// use multiproc_core::{futex, Segment};
/// use std::sync::atomic::Ordering;
///
/// // The word lives in shared memory; a thread stands in for another process.
/// let segment = Segment::anonymous(64)?;
/// let remote = segment.try_clone()?;
/// let setter = std::thread::spawn(move || {
///     let word = remote.atomic_u32(0).unwrap();
///     word.store(3, Ordering::Release);
///     futex::wake_all(word);
/// });
/// let word = segment.atomic_u32(0)?;
/// assert_eq!(futex::wait_until(word, None, |v| v == 3), Ok(3));
/// setter.join().unwrap();
/// # Ok::<(), multiproc_core::SegmentError>(())
/// ```
pub fn wait_until(
    word: &AtomicU32,
    deadline: Option<Instant>,
    done: impl FnMut(u32) -> bool,
) -> Result<u32, Timeout> {
    wait_until_with(word, deadline, SpinWait::new(), done)
}

/// [`wait_until`] with a caller-chosen spin budget (benchmarks use it to
/// measure the sleep path alone).
///
/// # Errors
///
/// [`Timeout`] when `deadline` passes before `done` holds.
///
/// # Examples
///
/// ```
/// use multiproc_core::{futex, SpinWait};
/// use std::sync::atomic::AtomicU32;
/// use std::time::{Duration, Instant};
///
/// let word = AtomicU32::new(0);
/// // No spinning: straight to the futex sleep, which times out here.
/// let deadline = Instant::now() + Duration::from_millis(5);
/// let result = futex::wait_until_with(&word, Some(deadline), SpinWait::with_limit(0), |v| v == 1);
/// assert_eq!(result, Err(multiproc_core::time::Timeout));
/// assert!(Instant::now() >= deadline);
/// ```
pub fn wait_until_with(
    word: &AtomicU32,
    deadline: Option<Instant>,
    mut spin: SpinWait,
    mut done: impl FnMut(u32) -> bool,
) -> Result<u32, Timeout> {
    loop {
        // SYNC: pairs with the Release store of whoever makes `done` true.
        let value = word.load(Ordering::Acquire);
        if done(value) {
            return Ok(value);
        }
        if !spin.spin() {
            break;
        }
    }
    loop {
        let value = word.load(Ordering::Acquire);
        if done(value) {
            return Ok(value);
        }
        // Sleeping on the value just checked: a change in between makes the
        // kernel return at once (EAGAIN), so no wake-up is lost.
        if wait(word, value, deadline) == WaitOutcome::TimedOut {
            let value = word.load(Ordering::Acquire);
            return if done(value) { Ok(value) } else { Err(Timeout) };
        }
    }
}
