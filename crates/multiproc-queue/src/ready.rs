//! Readiness for async waiters: the doorbell protocol of [`Readiness`].

use multiproc_core::doorbell::{Waiters, WaitersError};
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
}

/// Readiness for async waiters: a descriptor to wait on instead of a futex,
/// for event loops (tokio, smol, io_uring). The runtime adapters build their
/// futures on this; it depends on no runtime.
///
/// A [`Readiness`] owns core's [`Waiters`] (a doorbell and a slot in the
/// queue's [`BellBoard`](multiproc_core::doorbell::BellBoard), with the
/// per-word arm counts and the drain epoch). A task that found the
/// queue empty (or full, or unfinished) [`arm`](Readiness::arm)s it for
/// what it waits for, then loops:
///
/// 1. `let round = readiness.round();`
/// 2. [`armed.announce(lock, &round)`](Armed::announce): set the "someone sleeps"
///    bit of the words it waits on, as a sleeper would, so that the next
///    notifier takes its slow path and rings the doorbell (`lock`: the lock
///    word too, when the last attempt was [`contended`](Readiness::contended));
/// 3. try the operation again (`try_get`, `try_put`, …); done if it went
///    through (dropping the [`Armed`] guard disarms); if it failed and is
///    [`contended`](Readiness::contended) now but `lock` was false, go to 1
///    with `lock = true`;
/// 4. register with the event loop for the doorbell's readability; if it
///    is readable already, [`drain`](Readiness::drain) it and go to 1;
/// 5. if [`drained_since(&round)`](Readiness::drained_since) (another task
///    of this process drained the doorbell meanwhile, maybe of the ring
///    meant for this one), go to 1;
/// 6. wait for readability, [`drain`](Readiness::drain), go to 1.
///
/// Steps 2–3 pair with the notifier as a sleeper's announce and re-check do
/// (see `multiproc_core::doorbell` for the table): a ring can only come
/// after step 2. (Many tasks of one process share announcements: see
/// [`Armed::announce`].) Steps 4–5 make sure that a ring another task of the same
/// process drained is not lost: [`drain`](Readiness::drain) makes the epoch
/// odd before it reads and even again after, so a task whose step 5 sees
/// the epoch of its step 1 registered (step 4) before any drain that
/// could have read its ring began, and that ring, or a later one, wakes it.
///
/// A wait with `lock = true` should also end after
/// [`LIVENESS_SLICE`](Readiness::LIVENESS_SLICE): a holder that dies rings
/// nobody, and the retry is what takes the lock over from it.
///
/// Waiters of every kind may share one `Readiness`; a process may hold as
/// many as it likes, up to [`BELL_SLOTS`](multiproc_core::doorbell::BELL_SLOTS)
/// per queue among all processes. Notifiers ring only while some waiter is
/// armed, so a queue nobody awaits costs what it cost before.
///
/// ```
/// use multiproc_queue::{Interest, Queue};
///
/// let q: Queue<u32> = Queue::new()?;
/// let ready = q.readiness()?;
/// let armed = ready.arm(Interest::Get);
/// let round = ready.round();
/// armed.announce(false, &round);
/// assert!(q.try_get().unwrap_err().is_empty());
/// assert!(!ready.contended(Interest::Get)); // empty: register and wait here
/// q.put(7)?; // another process, say: it rings the doorbell
/// assert_eq!(ready.drain()?, 1); // the doorbell was readable: rung once
/// assert!(ready.drained_since(&round));
/// assert_eq!(q.try_get()?, 7);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// It is `AsFd`: register it with an event loop for readability.
#[derive(Debug)]
pub struct Readiness {
    ring: Arc<Ring>,
    waiters: Arc<Waiters>,
    /// Announcements made through this handle (see [`Armed::announce`]),
    /// serialized: one task's announcement serves every task of the
    /// process that began its round before it started.
    announces: Mutex<Announces>,
    /// [`Announces::count`], readable without the lock.
    announce_count: AtomicU64,
}

/// The announcements of one [`Readiness`].
#[derive(Debug, Default)]
struct Announces {
    /// Numbers given out so far (the last one's, or the one running).
    count: u64,
    /// For each futex word (by bit position in `bell`), the number of the
    /// last completed announcement that set its bit.
    covered: [u64; 5],
}

/// Where a waiter's round began (step 1 of the [protocol](Readiness)): see
/// [`Readiness::round`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Round {
    epoch: u64,
    announces: u64,
}

impl Readiness {
    /// How long a wait should last at most while a lock the operation
    /// needs is held (see [`contended`](Self::contended)).
    pub const LIVENESS_SLICE: Duration = LIVENESS_SLICE;

    pub(crate) fn new(ring: Arc<Ring>) -> Result<Self, QueueError> {
        let waiters = Waiters::new(&ring.ctl().bells).map_err(|e| match e {
            WaitersError::Doorbell(e) => QueueError::Doorbell(e),
            WaitersError::NoSlot => QueueError::NoDoorbellSlot,
        })?;
        Ok(Self {
            ring,
            waiters: Arc::new(waiters),
            announces: Mutex::new(Announces::default()),
            announce_count: AtomicU64::new(0),
        })
    }

    /// Announces a waiter with `interest`: notifiers ring this doorbell
    /// from now on, until the guard drops.
    pub fn arm(&self, interest: Interest) -> Armed<'_> {
        self.waiters.arm(&self.ring.ctl().bells, interest.bells());
        Armed {
            readiness: self,
            interest,
        }
    }

    /// Step 1 of the [protocol](Readiness): where this round begins, for
    /// [`Armed::announce`] and [`drained_since`](Self::drained_since).
    #[must_use]
    pub fn round(&self) -> Round {
        Round {
            epoch: self.waiters.epoch(),
            announces: self.announce_count.load(Ordering::SeqCst),
        }
    }

    /// Step 5 of the [protocol](Readiness): whether a drain ran (or runs)
    /// since `round` began, which may have read a ring meant for this
    /// waiter: then it must go round again instead of waiting.
    #[must_use]
    pub fn drained_since(&self, round: &Round) -> bool {
        self.waiters.epoch() != round.epoch || round.epoch % 2 == 1
    }

    /// Reads every ring queued on the doorbell; returns how many.
    ///
    /// # Errors
    ///
    /// The OS error of reading the doorbell (none is expected).
    pub fn drain(&self) -> io::Result<usize> {
        self.waiters.drain()
    }

    /// The doorbell and its epoch, shared: what a reactor registers.
    ///
    /// ```
    /// use multiproc_queue::Queue;
    /// use std::os::fd::AsRawFd;
    ///
    /// let q: Queue<u32> = Queue::new()?;
    /// let ready = q.readiness()?;
    /// assert_eq!(ready.waiters().as_raw_fd(), ready.as_raw_fd());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn waiters(&self) -> &Arc<Waiters> {
        &self.waiters
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
        self.waiters
            .disarm(&self.ring.ctl().bells, interest.bells());
    }
}

impl Drop for Readiness {
    fn drop(&mut self) {
        self.waiters.release(&self.ring.ctl().bells);
    }
}

impl AsFd for Readiness {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.waiters.as_fd()
    }
}

impl AsRawFd for Readiness {
    fn as_raw_fd(&self) -> RawFd {
        self.waiters.as_raw_fd()
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
    /// Step 2 of the [protocol](Readiness): sets the "someone sleeps" bit of
    /// the word of the waiter's condition (and of the lock the operation
    /// takes, with `lock`; see [`Readiness::contended`]) and fences, so
    /// that the next change of any of them rings the doorbell. Call it
    /// before each re-check of the operation, with the [`Round`] begun
    /// just before: a ring clears the bits.
    ///
    /// The fence is a `membarrier` system call. A thousand tasks woken by
    /// one ring would each pay it; instead, an announcement that another
    /// task of this process *started* after `round` began, and finished,
    /// serves this one too (its bits set, its fence passed, after this
    /// waiter was armed), and this call returns at once.
    pub fn announce(&self, lock: bool, round: &Round) {
        let mut bells = self.interest.condition_bell();
        if lock {
            bells |= self.interest.lock_bell();
        }
        let readiness = self.readiness;
        let mut announces = readiness
            .announces
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let served = (0..5)
            .filter(|b| bells & (1 << b) != 0)
            .all(|b| announces.covered[b] > round.announces);
        if served {
            return;
        }
        // SYNC: the number is published before the bits are set, so a
        // round that read an older count never counts this announcement
        // as started after it began.
        announces.count += 1;
        let number = announces.count;
        readiness.announce_count.store(number, Ordering::SeqCst);
        fence::prepare();
        let ctl = readiness.ring.ctl();
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
        for b in (0..5).filter(|b| bells & (1 << b) != 0) {
            announces.covered[b] = number;
        }
    }

    /// Step 1 of the [protocol](Readiness): [`Readiness::round`].
    #[must_use]
    pub fn round(&self) -> Round {
        self.readiness.round()
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
