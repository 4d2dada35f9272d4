//! Doorbells: a descriptor an event loop can wait on, rung by other
//! processes when something changes in shared memory.
//!
//! Objects in shared memory wait on futex words, which no `epoll` can see.
//! An async waiter instead owns a [`Doorbell`], a descriptor that turns
//! readable when rung, and enters its number in the object's [`BellBoard`],
//! a table in the shared segment. A notifier that finds a waiter announced on
//! a futex word (the word's "someone sleeps" bit, which async waiters set as
//! sleepers do) also calls [`BellBoard::ring`], which rings every doorbell
//! armed for that word. A notifier with nobody announced reads one word and
//! makes no system call, as before: doorbells cost only the slow path.
//!
//! # The doorbell
//!
//! A non-blocking Unix datagram socket bound to an abstract address made
//! from a random 64-bit number, its [`id`](Doorbell::id): any process that
//! knows the number can ring it ([`ring`]), none needs its descriptor, so
//! the objects work the same whether their handles travelled through a
//! socket, through `fork` or by a segment's name. The rings queue up as
//! datagrams; [`Doorbell::drain`] reads them all. Only the owner reads its
//! doorbell, so no reader can take a ring meant for another process.
//!
//! Abstract addresses belong to a network namespace: every process that
//! notifies an object and every process that awaits it must share one
//! (all processes on a host do unless a container separates them). Anyone
//! in the namespace can ring a doorbell: a ring only ever makes a waiter
//! look again, so a stray one costs a spurious wake-up, never a wrong result.
//!
//! # The board, and the protocol that loses no wake-up
//!
//! | step | async waiter | notifier |
//! |---|---|---|
//! | 1 | [`arm`](BellBoard::arm) its slot for the word (`SeqCst`) | store what makes the condition true |
//! | 2 | set the word's "someone sleeps" bit (`SeqCst` RMW) and fence | fence, then load the word |
//! | 3 | look at the condition again; ready: done | bit set: clear it with a `SeqCst` CAS, wake the futex sleepers, then [`ring`](BellBoard::ring) the armed slots |
//! | 4 | wait until its doorbell is readable, [`drain`](Doorbell::drain) it, go to 3 (re-setting the bit first) | |
//!
//! The pairs 1–2 and 2–3 are the futex protocol's own: either the waiter's
//! look sees the notifier's store, or the notifier sees the bit, and then
//! its CAS reads the waiter's RMW, so the waiter's arming (before it) is
//! visible to the ring. A waiter that dies armed leaves a slot that
//! rings fail on; the ring that finds its owner dead frees the slot.
//!
//! # One process's waiters on one board
//!
//! [`Waiters`] is what every shared object's readiness handle is built on:
//! a doorbell entered in the object's board, how many of the process's
//! waiting tasks wait on each word (the slot is armed for the union), and
//! the drain epoch that keeps one task's drain from eating another task's
//! ring (see [`Waiters::epoch`]).
//!
//! ```
//! use multiproc_core::doorbell::{BellBoard, Doorbell};
//! use multiproc_core::Segment;
//!
//! let segment = Segment::anonymous(4096)?;
//! let board = segment.view::<BellBoard>(0)?;
//! let bell = Doorbell::new()?;
//! let slot = board.claim(&bell).expect("a free slot");
//! board.arm(slot, 0b01);
//! board.ring(0b10); // another word: not this doorbell
//! assert_eq!(bell.drain()?, 0);
//! board.ring(0b01);
//! assert_eq!(bell.drain()?, 1);
//! board.release(slot, &bell);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![allow(unsafe_code)]

use crate::ProcessIdentity;
use crate::segment::SharedSafe;
use rustix::net::{
    AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketFlags, SocketType, bind, recv,
    sendto, socket_with,
};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

/// How many doorbells one [`BellBoard`] holds.
pub const BELL_SLOTS: usize = 40;

/// Marks a slot that a ring is freeing (its owner died); never an id.
const FREEING: u64 = u64::MAX;

/// A descriptor that turns readable when some process [`ring`]s its id.
///
/// Close-on-exec and non-blocking; register it with any event loop for
/// readability (`epoll`, tokio's `AsyncFd`, async-io's `Async`, io_uring's
/// poll). Dropping it closes the socket, after which rings of its id
/// report [`Rung::Gone`].
///
/// ```
/// use multiproc_core::doorbell::{ring, Doorbell, Rung};
///
/// let bell = Doorbell::new()?;
/// assert_eq!(ring(bell.id())?, Rung::Delivered);
/// assert_eq!(ring(bell.id())?, Rung::Delivered);
/// assert_eq!(bell.drain()?, 2);
/// assert_eq!(bell.drain()?, 0);
/// let id = bell.id();
/// drop(bell);
/// assert_eq!(ring(id)?, Rung::Gone);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Doorbell {
    socket: OwnedFd,
    id: u64,
}

/// What [`ring`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rung {
    /// The doorbell exists and is (or already was) readable.
    Delivered,
    /// No doorbell has this id (in this network namespace).
    Gone,
}

impl Doorbell {
    /// A new doorbell with a random id.
    ///
    /// # Errors
    ///
    /// The OS error of `socket`, `bind` or `getrandom` (such as `EMFILE`).
    pub fn new() -> io::Result<Self> {
        let socket = socket_with(
            AddressFamily::UNIX,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        loop {
            let mut bytes = [0u8; 8];
            getrandom::fill(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
            let id = u64::from_ne_bytes(bytes);
            if id == 0 || id == FREEING {
                continue;
            }
            match bind(&socket, &address(id)?) {
                Ok(()) => return Ok(Self { socket, id }),
                // Taken by another doorbell: draw again.
                Err(rustix::io::Errno::ADDRINUSE) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The number other processes ring it by: never 0.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Reads every ring queued so far; returns how many there were. The
    /// doorbell is not readable afterwards until it is rung again.
    ///
    /// # Errors
    ///
    /// An OS error other than "nothing left" (none is expected).
    pub fn drain(&self) -> io::Result<usize> {
        let mut rings = 0;
        let mut byte = [0u8; 1];
        loop {
            match recv(&self.socket, &mut byte, RecvFlags::DONTWAIT) {
                Ok(_) => rings += 1,
                Err(rustix::io::Errno::AGAIN) => return Ok(rings),
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl AsFd for Doorbell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl AsRawFd for Doorbell {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// The abstract address of doorbell `id`.
fn address(id: u64) -> io::Result<SocketAddrUnix> {
    Ok(SocketAddrUnix::new_abstract_name(
        format!("multiproc/bell/{id:016x}").as_bytes(),
    )?)
}

/// Rings doorbell `id`: makes it readable. Never blocks: a doorbell whose
/// queue is full is readable already.
///
/// # Errors
///
/// The OS error of a send that failed for another reason than the doorbell
/// being full or gone, or of creating this process's sending socket.
pub fn ring(id: u64) -> io::Result<Rung> {
    static SENDER: OnceLock<OwnedFd> = OnceLock::new();
    let sender = match SENDER.get() {
        Some(fd) => fd,
        None => {
            let fd = socket_with(
                AddressFamily::UNIX,
                SocketType::DGRAM,
                SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
                None,
            )?;
            // Two threads may race here; the loser's socket is closed.
            SENDER.get_or_init(|| fd)
        }
    };
    let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
    loop {
        match sendto(sender, &[1], flags, &address(id)?) {
            Ok(_) | Err(rustix::io::Errno::AGAIN) => return Ok(Rung::Delivered),
            Err(rustix::io::Errno::CONNREFUSED | rustix::io::Errno::NOENT) => {
                return Ok(Rung::Gone);
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// One doorbell's entry in a [`BellBoard`].
#[repr(C)]
#[derive(Debug)]
pub struct BellSlot {
    /// The doorbell's id; 0 = free, `u64::MAX` = being freed.
    id: AtomicU64,
    /// Packed [`ProcessIdentity`] of the process that owns the doorbell.
    owner: AtomicU64,
    /// Which words the doorbell's waiters wait on (bit per word, the
    /// object's choice); non-zero only while counted in `armed`.
    mask: AtomicU32,
    _reserved: AtomicU32,
}

/// A table of doorbells in shared memory (see the [module docs](self)):
/// 1 KiB, all zeros when empty, so a freshly created segment holds an empty
/// board.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct BellBoard {
    /// How many slots have a non-zero mask (or are about to): a notifier
    /// that reads 0 looks at no slot. May count a slot whose owner died
    /// between counting and arming; that costs only a look.
    armed: AtomicU32,
    _reserved: [AtomicU32; 15],
    slots: [BellSlot; BELL_SLOTS],
}

const _: () = assert!(size_of::<BellBoard>() == 1024);

// SAFETY: `BellBoard` and `BellSlot` are `repr(C)` structs of integer
// atomics (and arrays of them): valid for every bit pattern, mutated only
// atomically, no pointers or descriptors, alignment 64, no Drop.
unsafe impl SharedSafe for BellBoard {}

impl BellBoard {
    /// Enters `bell` in a free slot; `None` when all [`BELL_SLOTS`] are
    /// taken (by live processes: slots of dead ones are freed on the way).
    pub fn claim(&self, bell: &Doorbell) -> Option<usize> {
        let me = ProcessIdentity::current().to_u64();
        for pass in 0..2 {
            for (index, slot) in self.slots.iter().enumerate() {
                let id = slot.id.load(Ordering::Relaxed);
                if id == 0 {
                    if slot
                        .id
                        .compare_exchange(0, bell.id, Ordering::SeqCst, Ordering::Relaxed)
                        .is_ok()
                    {
                        slot.owner.store(me, Ordering::SeqCst);
                        return Some(index);
                    }
                } else if pass == 1 && id != FREEING {
                    self.free_if_dead(slot, id);
                }
            }
        }
        None
    }

    /// Gives slot `index` back (disarmed first if it still was armed).
    pub fn release(&self, index: usize, bell: &Doorbell) {
        let Some(slot) = self.slots.get(index) else {
            return;
        };
        if slot.id.load(Ordering::Relaxed) != bell.id {
            return;
        }
        self.disarm(index);
        slot.owner.store(0, Ordering::Relaxed);
        let _ = slot
            .id
            .compare_exchange(bell.id, 0, Ordering::SeqCst, Ordering::Relaxed);
    }

    /// Arms slot `index` for the words in `mask` (replacing what it was
    /// armed for). The caller serializes the arming of one slot.
    pub fn arm(&self, index: usize, mask: u32) {
        let Some(slot) = self.slots.get(index) else {
            return;
        };
        if mask == 0 {
            self.disarm(index);
            return;
        }
        // SYNC: counted before the mask is set, so that a slot with a mask
        // is always counted; both before the caller's "someone sleeps" RMW
        // on the word, which the notifier's CAS reads.
        if slot.mask.load(Ordering::Relaxed) == 0 {
            self.armed.fetch_add(1, Ordering::SeqCst);
        }
        slot.mask.store(mask, Ordering::SeqCst);
    }

    /// Disarms slot `index`.
    pub fn disarm(&self, index: usize) {
        let Some(slot) = self.slots.get(index) else {
            return;
        };
        if slot.mask.swap(0, Ordering::SeqCst) != 0 {
            self.armed.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Rings every doorbell armed for a word in `mask`. One relaxed load
    /// when none is armed. Slots whose owner died are freed.
    pub fn ring(&self, mask: u32) {
        if self.armed.load(Ordering::SeqCst) == 0 {
            return;
        }
        self.ring_armed(mask);
    }

    #[cold]
    fn ring_armed(&self, mask: u32) {
        for slot in &self.slots {
            if slot.mask.load(Ordering::SeqCst) & mask == 0 {
                continue;
            }
            let id = slot.id.load(Ordering::Acquire);
            if id == 0 || id == FREEING {
                continue;
            }
            match ring(id) {
                Ok(Rung::Delivered) => {}
                // Gone, or this process cannot send at all (out of
                // descriptors): free the slot only if its owner died; a
                // live owner keeps it (and may be in another network
                // namespace, see the module docs).
                Ok(Rung::Gone) | Err(_) => self.free_if_dead(slot, id),
            }
        }
    }

    /// Frees `slot` (holding doorbell `id`) if its owner process is dead.
    fn free_if_dead(&self, slot: &BellSlot, id: u64) {
        let owner = slot.owner.load(Ordering::Acquire);
        // Owner 0: claimed a moment ago (a claimer that died right after
        // its CAS leaves the slot taken for good: one slot of many).
        if owner == 0 || ProcessIdentity::from_u64(owner).is_some_and(|p| p.is_alive()) {
            return;
        }
        // SYNC: `FREEING` first, so no claimer takes the slot while its
        // mask is being cleared (a new claimer's arming must not be undone).
        if slot
            .id
            .compare_exchange(id, FREEING, Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        if slot.mask.swap(0, Ordering::SeqCst) != 0 {
            self.armed.fetch_sub(1, Ordering::SeqCst);
        }
        slot.owner.store(0, Ordering::Relaxed);
        slot.id.store(0, Ordering::SeqCst);
    }

    /// How many slots are armed (for tests and diagnostics).
    #[must_use]
    pub fn armed(&self) -> u32 {
        self.armed.load(Ordering::SeqCst)
    }
}

/// Why [`Waiters::new`] failed.
///
/// ```
/// use multiproc_core::doorbell::{BellBoard, Waiters, WaitersError, BELL_SLOTS};
/// use multiproc_core::Segment;
///
/// let segment = Segment::anonymous(4096)?;
/// let board = segment.view::<BellBoard>(0)?;
/// let taken: Vec<Waiters> = (0..BELL_SLOTS).map(|_| Waiters::new(board).unwrap()).collect();
/// assert!(matches!(Waiters::new(board), Err(WaitersError::NoSlot)));
/// # drop(taken);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub enum WaitersError {
    /// The doorbell could not be made (out of descriptors, say) or
    /// registered with an event loop.
    Doorbell(io::Error),
    /// Every one of the board's [`BELL_SLOTS`] is taken by live processes.
    NoSlot,
}

impl fmt::Display for WaitersError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Doorbell(_) => f.write_str("could not make a doorbell for async waiters"),
            Self::NoSlot => f.write_str("every doorbell slot of the object is taken"),
        }
    }
}

impl std::error::Error for WaitersError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Doorbell(e) => Some(e),
            Self::NoSlot => None,
        }
    }
}

impl From<io::Error> for WaitersError {
    fn from(e: io::Error) -> Self {
        Self::Doorbell(e)
    }
}

/// One process's async waiters on one [`BellBoard`]: a [`Doorbell`] in a
/// claimed slot, per-word counts of the armed waiters (the slot is armed
/// for every word with a non-zero count), and a drain epoch.
///
/// The board is passed to each call rather than kept: the owner (a
/// queue's or a lock's readiness handle) holds the mapping it lives in,
/// and must [`release`](Self::release) the slot before dropping that.
/// `AsFd`: register it with an event loop for readability.
///
/// The epoch is the guard against a lost ring between tasks of one
/// process: [`drain`](Self::drain) makes it odd before it reads and even
/// after, so a task that reads the same even epoch before announcing and
/// after registering with the event loop knows that no drain could have
/// read a ring meant for it.
///
/// ```
/// use multiproc_core::doorbell::{BellBoard, Waiters};
/// use multiproc_core::Segment;
///
/// let segment = Segment::anonymous(4096)?;
/// let board = segment.view::<BellBoard>(0)?;
/// let waiters = Waiters::new(board)?;
/// waiters.arm(board, 0b11);
/// waiters.arm(board, 0b01);
/// waiters.disarm(board, 0b11); // one waiter on bit 0 is left
/// let epoch = waiters.epoch();
/// board.ring(0b10);
/// assert_eq!(waiters.drain()?, 0);
/// board.ring(0b01);
/// assert_eq!(waiters.drain()?, 1);
/// assert_eq!(waiters.epoch(), epoch + 4);
/// waiters.disarm(board, 0b01);
/// assert_eq!(board.armed(), 0);
/// waiters.release(board);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Waiters {
    bell: Doorbell,
    slot: usize,
    /// Armed waiters per word bit; the lock serializes the slot's arming.
    counts: Mutex<[u32; 32]>,
    /// Odd while a [`drain`](Self::drain) runs; bumped twice by each.
    epoch: AtomicU64,
    /// Held through a drain: drains never overlap.
    draining: Mutex<()>,
}

impl Waiters {
    /// A new doorbell, entered in a free slot of `board`.
    ///
    /// # Errors
    ///
    /// [`WaitersError::Doorbell`] when the doorbell cannot be made;
    /// [`WaitersError::NoSlot`] when the board is full.
    pub fn new(board: &BellBoard) -> Result<Self, WaitersError> {
        let bell = Doorbell::new()?;
        let slot = board.claim(&bell).ok_or(WaitersError::NoSlot)?;
        Ok(Self {
            bell,
            slot,
            counts: Mutex::new([0; 32]),
            epoch: AtomicU64::new(0),
            draining: Mutex::new(()),
        })
    }

    /// Counts one more waiter on each word of `bells`; arms the slot for
    /// the words that had none (before it returns: step 1 of the
    /// [protocol](self)).
    pub fn arm(&self, board: &BellBoard, bells: u32) {
        self.recount(board, bells, |count| *count += 1);
    }

    /// Undoes one [`arm`](Self::arm) with the same `bells`.
    pub fn disarm(&self, board: &BellBoard, bells: u32) {
        self.recount(board, bells, |count| *count = count.saturating_sub(1));
    }

    /// Applies `change` to the count of each word of `bells`, and re-arms
    /// the slot if the set of words with waiters changed.
    fn recount(&self, board: &BellBoard, bells: u32, change: impl Fn(&mut u32)) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let before = union(&counts);
        for (bit, count) in counts.iter_mut().enumerate() {
            if bells & (1 << bit) != 0 {
                change(count);
            }
        }
        let after = union(&counts);
        if after != before {
            board.arm(self.slot, after);
        }
    }

    /// The drain count (see the type docs). Odd while a drain runs.
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
        // One drain at a time, so that the epoch is odd exactly while one
        // runs: two overlapping drains would make it even again while the
        // second still reads, and a waiter could take that for "none ran"
        // (found by the queue's `tests/loom_ready.rs`).
        let _one = self.draining.lock().unwrap_or_else(PoisonError::into_inner);
        // SYNC: odd before the read, even after: a waiter that saw the same
        // even epoch before and after registering knows no drain overlapped.
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let rings = self.bell.drain();
        self.epoch.fetch_add(1, Ordering::SeqCst);
        rings
    }

    /// Gives the slot back to `board` (the owner's `Drop` calls this).
    pub fn release(&self, board: &BellBoard) {
        board.release(self.slot, &self.bell);
    }

    /// The board slot the doorbell is entered in.
    #[must_use]
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// The doorbell.
    #[must_use]
    pub fn bell(&self) -> &Doorbell {
        &self.bell
    }
}

/// The words with a non-zero count.
fn union(counts: &[u32; 32]) -> u32 {
    counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .fold(0, |m, (bit, _)| m | (1 << bit))
}

impl AsFd for Waiters {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.bell.as_fd()
    }
}

impl AsRawFd for Waiters {
    fn as_raw_fd(&self) -> RawFd {
        self.bell.as_raw_fd()
    }
}
