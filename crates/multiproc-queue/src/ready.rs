//! Readiness for async waiters: a descriptor to wait on instead of a futex,
//! for event loops (tokio, smol, io_uring). The runtime adapters build their
//! futures on this; it depends on no runtime.
//!
//! A [`Readiness`] owns a [`Doorbell`] and a slot in the queue's
//! [`BellBoard`](multiproc_core::doorbell::BellBoard). A task that found the
//! queue empty (or full, or unfinished) [`arm`](Readiness::arm)s it for
//! what it waits for, then loops:
//!
//! 1. `let epoch = readiness.epoch();`
//! 2. [`armed.announce(lock)`](Armed::announce): set the "someone sleeps"
//!    bit of the words it waits on, as a sleeper would, so that the next
//!    notifier takes its slow path and rings the doorbell (`lock`: the lock
//!    word too, when the last attempt was [`contended`](Readiness::contended));
//! 3. try the operation again (`try_get`, `try_put`, …); done if it went
//!    through (dropping the [`Armed`] guard disarms); if it failed and is
//!    [`contended`](Readiness::contended) now but `lock` was false, go to 1
//!    with `lock = true`;
//! 4. register with the event loop for the doorbell's readability; if it
//!    is readable already, [`drain`](Readiness::drain) it and go to 1;
//! 5. if [`epoch`](Readiness::epoch) is no longer `epoch` (another task of
//!    this process drained the doorbell meanwhile, maybe of the ring meant
//!    for this one), go to 1;
//! 6. wait for readability, [`drain`](Readiness::drain), go to 1.
//!
//! Steps 2–3 pair with the notifier as a sleeper's announce and re-check do
//! (see `multiproc_core::doorbell` for the table): a ring can only come
//! after step 2. Steps 4–5 make sure that a ring another task of the same
//! process drained is not lost: [`drain`](Readiness::drain) makes the epoch
//! odd before it reads and even again after, one drain at a time (so the
//! epoch is odd exactly while one runs), so a task whose step 5 sees
//! the epoch of its step 1 registered (step 4) before any drain that
//! could have read its ring began, and that ring, or a later one, wakes it.
//!
//! A wait with `lock = true` should also end after
//! [`LIVENESS_SLICE`](Readiness::LIVENESS_SLICE): a holder that dies rings
//! nobody, and the retry is what takes the lock over from it.
//!
//! Waiters of every kind may share one `Readiness`; a process may hold as
//! many as it likes, up to [`BELL_SLOTS`](multiproc_core::doorbell::BELL_SLOTS)
//! per queue among all processes. Notifiers ring only while some waiter is
//! armed, so a queue nobody awaits costs what it cost before.
//!
//! ```
//! use multiproc_queue::{Interest, Queue};
//!
//! let q: Queue<u32> = Queue::new()?;
//! let ready = q.readiness()?;
//! let armed = ready.arm(Interest::Get);
//! let epoch = ready.epoch();
//! armed.announce(false);
//! assert!(q.try_get().unwrap_err().is_empty());
//! assert!(!ready.contended(Interest::Get)); // empty: register and wait here
//! q.put(7)?; // another process, say: it rings the doorbell
//! assert_eq!(ready.drain()?, 1); // the doorbell was readable: rung once
//! assert_ne!(ready.epoch(), epoch);
//! assert_eq!(q.try_get()?, 7);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use multiproc_core::doorbell::Doorbell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::error::QueueError;
use crate::fence::{self, heavy_fence};
use crate::owner::LIVENESS_SLICE;
use crate::ring::Ring;
use crate::wake::bell;

/// What a task waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Interest {
    /// Something to get (or a close): `get` and friends.
    Get,
    /// Room to put (or a close): `put` and friends.
    Put,
    /// Every item done: `JoinableQueue::join`.
    Join,
}

impl Interest {
    const ALL: [Self; 3] = [Self::Get, Self::Put, Self::Join];

    /// The futex words (as [`bell`] bits) a task with this interest may
    /// wait on: its condition's word, and the lock the operation takes.
    fn bells(self) -> u32 {
        self.condition_bell() | self.lock_bell()
    }

    /// The word that changes when the condition may have become true.
    fn condition_bell(self) -> u32 {
        match self {
            Self::Get => bell::DATA,
            Self::Put => bell::SPACE,
            Self::Join => bell::JOIN,
        }
    }

    /// The word of the lock the operation takes (0: none).
    fn lock_bell(self) -> u32 {
        match self {
            Self::Get => bell::CONS_LOCK,
            Self::Put => bell::PROD_LOCK,
            Self::Join => 0,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A queue's doorbell for this process's async waiters (see the
/// [module docs](self)). `AsFd`: register it with an event loop for
/// readability.
#[derive(Debug)]
pub struct Readiness {
    ring: Arc<Ring>,
    bell: Doorbell,
    slot: usize,
    /// How many armed waiters of each [`Interest`]; the board's mask is the
    /// union of the interests counted here. The lock serializes arming.
    armed: Mutex<[u32; 3]>,
    /// Odd while a [`drain`](Readiness::drain) runs; bumped twice by each.
    epoch: AtomicU64,
    /// Held by a drain: drains never overlap, so that the epoch is odd
    /// exactly while one runs.
    draining: Mutex<()>,
}

impl Readiness {
    /// How long a wait should last at most while a lock the operation
    /// needs is held (see [`lock_held`](Self::lock_held)).
    pub const LIVENESS_SLICE: Duration = LIVENESS_SLICE;

    pub(crate) fn new(ring: Arc<Ring>) -> Result<Self, QueueError> {
        let bell = Doorbell::new().map_err(QueueError::Doorbell)?;
        let slot = ring
            .ctl()
            .bells
            .claim(&bell)
            .ok_or(QueueError::NoDoorbellSlot)?;
        Ok(Self {
            ring,
            bell,
            slot,
            armed: Mutex::new([0; 3]),
            epoch: AtomicU64::new(0),
            draining: Mutex::new(()),
        })
    }

    /// Announces a waiter with `interest`: notifiers ring this doorbell
    /// from now on, until the guard drops.
    pub fn arm(&self, interest: Interest) -> Armed<'_> {
        let mut counts = self.armed.lock().unwrap_or_else(PoisonError::into_inner);
        counts[interest.index()] += 1;
        if counts[interest.index()] == 1 {
            self.ring.ctl().bells.arm(self.slot, mask(&counts));
        }
        Armed {
            readiness: self,
            interest,
        }
    }

    /// The drain count: compare it before and after registering with the
    /// event loop (step 5 of the [protocol](self)). Odd while a drain runs.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Reads every ring queued on the doorbell; returns how many.
    ///
    /// # Errors
    ///
    /// The OS error of reading the doorbell (none is expected).
    pub fn drain(&self) -> io::Result<usize> {
        // SYNC: one drain at a time. Two at once (tasks on two threads) would
        // bump the epoch to even while both still have to read, and a task
        // reading that epoch at step 1 would miss a ring either of them
        // then reads (the loom model in `tests/loom_ready.rs` finds this).
        let _one = self.draining.lock().unwrap_or_else(PoisonError::into_inner);
        // SYNC: odd before the read, even after: a waiter that saw the same
        // even epoch before and after registering knows no drain overlapped.
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let rings = self.bell.drain();
        self.epoch.fetch_add(1, Ordering::SeqCst);
        rings
    }

    /// After an attempt failed: whether it may have failed because another
    /// party held the lock the operation takes, rather than on the
    /// condition (the lock is held now, or the queue holds items for a
    /// get, or is below its item bound for a put). Then the next
    /// [`announce`](Armed::announce) should cover the lock too, and the wait
    /// end after [`LIVENESS_SLICE`](Self::LIVENESS_SLICE) at most: a holder
    /// that dies rings nobody, and a retry takes the lock over from it.
    ///
    /// Announcing the lock always would make the waiter's own attempt, which
    /// takes and releases that lock, ring its own doorbell every time.
    #[must_use]
    pub fn contended(&self, interest: Interest) -> bool {
        let ring = &self.ring;
        let ctl = ring.ctl();
        match interest {
            Interest::Get => ctl.cons.owner.load(Ordering::Relaxed) != 0 || ring.qsize() > 0,
            Interest::Put => {
                ctl.prod.owner.load(Ordering::Relaxed) != 0
                    || ring.maxsize() == 0
                    || ring.qsize() < ring.maxsize()
            }
            Interest::Join => false,
        }
    }

    fn disarm(&self, interest: Interest) {
        let mut counts = self.armed.lock().unwrap_or_else(PoisonError::into_inner);
        counts[interest.index()] -= 1;
        if counts[interest.index()] == 0 {
            self.ring.ctl().bells.arm(self.slot, mask(&counts));
        }
    }
}

/// The board mask for the interests with armed waiters in `counts`.
fn mask(counts: &[u32; 3]) -> u32 {
    Interest::ALL
        .iter()
        .filter(|i| counts[i.index()] > 0)
        .fold(0, |m, i| m | i.bells())
}

impl Drop for Readiness {
    fn drop(&mut self) {
        self.ring.ctl().bells.release(self.slot, &self.bell);
    }
}

impl AsFd for Readiness {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.bell.as_fd()
    }
}

impl AsRawFd for Readiness {
    fn as_raw_fd(&self) -> RawFd {
        self.bell.as_raw_fd()
    }
}

/// An armed waiter (see [`Readiness::arm`]); disarms when dropped.
#[derive(Debug)]
#[must_use = "dropping it disarms the waiter"]
pub struct Armed<'a> {
    readiness: &'a Readiness,
    interest: Interest,
}

impl Armed<'_> {
    /// Step 2 of the [protocol](self): sets the "someone sleeps" bit of
    /// the word of the waiter's condition (and of the lock the operation
    /// takes, with `lock`; see [`Readiness::contended`]) and fences, so
    /// that the next change of any of them rings the doorbell. Call it
    /// before each re-check of the operation: a ring clears the bits.
    pub fn announce(&self, lock: bool) {
        fence::prepare();
        let ctl = self.readiness.ring.ctl();
        let mut bells = self.interest.condition_bell();
        if lock {
            bells |= self.interest.lock_bell();
        }
        for (bit, word) in [
            (bell::DATA, &ctl.wait.data),
            (bell::SPACE, &ctl.wait.space),
            (bell::JOIN, &ctl.join.join),
            (bell::PROD_LOCK, &ctl.wait.prod_lock),
            (bell::CONS_LOCK, &ctl.wait.cons_lock),
        ] {
            if bells & bit != 0 {
                // SYNC: as `wake::prepare_sleep` (one fence for all words):
                // pairs with the light fence + load in `wake::notify`.
                word.fetch_or(1, Ordering::SeqCst);
            }
        }
        heavy_fence();
    }

    /// What the waiter waits for.
    #[must_use]
    pub fn interest(&self) -> Interest {
        self.interest
    }
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        self.readiness.disarm(self.interest);
    }
}
