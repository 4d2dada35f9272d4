//! The ring: variable-size records in one shared byte ring, a robust
//! producer lock and a robust consumer lock, and the state words that let a
//! survivor finish whatever a killed process left half done.
//!
//! # Why two locks and not a lock-free slot ring
//!
//! Messages have any size, so the ring holds records of any size, and a
//! message larger than the ring goes through as fragments that must not
//! interleave with other producers' records. A producer-side lock gives that
//! for free; a consumer-side lock keeps a message's fragments with one
//! reader. With one producer and one consumer each lock ends up biased to
//! its thread (`bias.rs`): taking it is a store, a compiler fence and a
//! load, with no locked instruction; the hand-off between the sides is two
//! words, `tail` and `head`, on separate cache lines, each read through a
//! cached copy so a side touches the other's line only when its copy runs
//! out. A blocking producer that finds the ring nearly full (less than
//! [`RESUME_ROOM`] free) backs off for one poll interval before it takes the
//! room, so the two sides do not trade head's line once per message. The
//! consumer side does the same the other way round (see [`PACE`]): a
//! blocking get that catches up with a producer that was outpacing it
//! lets the producer run ahead for a moment before it looks at tail. Both
//! locks record the holder's process identity, which is what makes them
//! robust: a waiter that sleeps a [`LIVENESS_SLICE`] without progress
//! asks the kernel whether the holder lives and takes the lock over from a
//! dead one.
//!
//! # Records
//!
//! Each record starts at a 16-byte-aligned offset with a 16-byte header:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | payload length `len` |
//! | 4..8 | kind: `PAD`, `WHOLE`, `FIRST`, `CONT`, `LAST`, `ABORT` (`0x5251_00xx`) |
//! | 8..16 | `FIRST`: total message length; otherwise 0 |
//!
//! The payload follows, padded to 16 bytes. A `FIRST` payload starts with the
//! writer's packed process identity (8 bytes), then data. A record never
//! wraps: when it does not fit before the end, a `PAD` record fills the end
//! and the record starts at offset 0, both published by the same tail store.
//! `head == tail` means empty; producers always leave 16 bytes free so a full
//! ring never looks empty.
//!
//! The `head` and `tail` words pack `count << 32 | offset`: `count` numbers
//! complete messages (it grows on `WHOLE` and `LAST`), so one store moves a
//! message in or out together with its bytes and a crash cannot separate the
//! two. `qsize` is `tail.count - head.count`; a `JoinableQueue`'s unfinished
//! tasks are `tail.count - done`.
//!
//! # Producer state machine (`prod.state`, under the producer lock)
//!
//! | state | meaning | entered by | left by |
//! |---|---|---|---|
//! | `P_IDLE` | between messages | init, `LAST` or `ABORT` published | writing a `FIRST` |
//! | `P_FRAGMENTING` | a message's `FIRST` is out, its `LAST` is not | before publishing `FIRST` | publishing `LAST`; or `ABORT` |
//!
//! A producer killed while `P_FRAGMENTING` (or a live one whose timeout ran
//! out between fragments) leaves the state set; whoever next holds the lock
//! publishes an `ABORT` record before anything else, so readers drop the
//! partial message. A producer killed before its tail store published
//! nothing: the bytes it wrote lie beyond the tail and are overwritten.
//!
//! # Consumer state machine (`cons.state`, under the consumer lock)
//!
//! | state | meaning | entered by | on recovery from a dead holder |
//! |---|---|---|---|
//! | `C_IDLE` | between messages | init, `LAST`/`WHOLE`/`ABORT` consumed | nothing to do |
//! | `C_ASSEMBLING` | fragments of a message were consumed into private memory | before moving head past `FIRST` | those bytes died with the holder: go to `C_SKIPPING` |
//! | `C_SKIPPING` | drop `CONT`/`LAST` until the message ends | recovery | kept across unlocks until `LAST`, `ABORT`, `WHOLE` or `FIRST` |
//! | `C_GUARD` | the record at `guard_pos` is lent out in place | before handing out the guard | if head still is `guard_pos`, the dead holder saw it: skip it |
//!
//! A consumer killed while copying a `WHOLE` record has not moved head: the
//! record stays for the next reader, and the dead process never returned it
//! to anybody. So a crash loses at most the dead process's own message in
//! flight, and nobody ever sees a torn or repeated message.
//!
//! # Blocking
//!
//! Each futex word's bit 0 says "a waiter sleeps". Wakers store their change
//! (`Release`), pass a light fence and load the futex word; sleepers
//! `fetch_or(1)` it, pass a heavy fence, re-check the condition, then sleep
//! on the value they set. The light fence is only a compiler fence when the
//! process is registered with `membarrier(2)`, because the heavy fence is
//! `MEMBARRIER_CMD_GLOBAL_EXPEDITED`, a barrier on every CPU running such a
//! process: one of the two sides always sees the other, so no wake-up is
//! lost, and once the locks are biased the per-message path has no locked
//! instruction at all. A waker issues the `futex_wake` system call only when
//! bit 0 is set (see `lock.rs`).
//!
//! Between spinning and that announced sleep, a waiter whose partner is in
//! the middle of an operation (holds its lock: a producer writing, a
//! consumer taking a message out) naps instead: short timed sleeps that set
//! no bit and need no wake-up (`lock::nap`). With large messages the wait
//! outlasts the spin but not the partner's copy, and announcing it each
//! time would interrupt that copy with the `membarrier` and add a
//! `futex_wake` per message.
#![allow(unsafe_code)]

use multiproc_core::futex::{self, SpinWait, WaitOutcome};
use multiproc_core::{Header, Segment};
use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::bias::{Hold, thread_id};
use crate::error::QueueError;
use crate::layout::{
    Control, MAGIC, MAX_RING, MIN_RING, NO_PACING, REC_ALIGN, RING_OFFSET, VERSION, pack, unpack,
};
use crate::lock::{self, LIVENESS_SLICE, Locked, RobustLock, me};

const PAD: u32 = 0x5251_0001;
const WHOLE: u32 = 0x5251_0002;
const FIRST: u32 = 0x5251_0003;
const CONT: u32 = 0x5251_0004;
const LAST: u32 = 0x5251_0005;
const ABORT: u32 = 0x5251_0006;

/// Bytes of a `FIRST` payload before the data: the writer's identity.
const FIRST_PREFIX: u32 = 8;

const P_IDLE: u32 = 0;
const P_FRAGMENTING: u32 = 1;

const C_IDLE: u32 = 0;
const C_ASSEMBLING: u32 = 1;
const C_SKIPPING: u32 = 2;
const C_GUARD: u32 = 3;

/// `closed` bit: `close` started; puts fail from now on.
const CLOSING: u32 = 1;
/// `closed` bit: sealed under the producer lock; no record will follow.
const SEALED: u32 = 2;

/// A fragment smaller than this (or than what is left) is not worth a
/// record: producers wait for this much room before writing one.
const MIN_FRAGMENT: u32 = 64 * 1024;

/// Typed puts encode straight into the ring when the value fits in this
/// many bytes of free room; larger values are encoded outside the lock into
/// a buffer first (a failed attempt costs at most this much encoding).
const DIRECT_ENCODE_MAX: u32 = 64 * 1024;

#[cfg(test)]
pub(crate) const DIRECT_ENCODE_MAX_FOR_TESTS: usize = DIRECT_ENCODE_MAX as usize;

/// Typed puts encode in place only with at least this much room (the first
/// write of a value reserves 64 bytes).
const MIN_ENCODING_ROOM: u32 = 64;

/// A waiting consumer looks at tail once per this many pause instructions.
const POLL_EVERY: u32 = 8;

/// A blocking producer whose fresh look at head finds less than this many
/// bytes (or a quarter of the ring) free backs off: that look counts as no
/// room, and the head it saw is used at the next look, a poll interval
/// later. Meanwhile the consumer frees more, undisturbed. (Waiting until
/// this much is really free measured slower: 17.6 instead of 21.4 M
/// 8-byte messages/s.)
const RESUME_ROOM: u32 = 4096;

/// How long a blocking get lets the producers run ahead, before it looks at
/// tail, when it has caught up and its last look at tail found more than
/// one message waiting.
///
/// Such a consumer is keeping up with a producer that publishes faster than
/// the consumer looks. Looking at once makes it read right behind the
/// producer: every look pulls tail's line, and every record's line, away
/// from a producer still writing there, so both sides pay a cache-line
/// transfer per message, and the pair settles at about a third of the rate
/// either side reaches alone (`get_bytes_into`, 8 B: 18–22 instead of
/// 50–60 M msg/s, `cargo bench -p multiproc-queue --bench queue --
/// queue_1to1/bytes_into/8` without and with this wait). Waiting lets the
/// producer get a few hundred bytes ahead, after which the consumer reads
/// lines the producer is done with. Shorter waits measured less in the same
/// bench case: 300 ns gave 42–44 M msg/s, 150 ns 26 M, and so did looking
/// at tail during the wait to end it early.
///
/// A look that finds one message or none turns this off, so a ping-pong
/// never waits. Only a consumer alone on its side waits: the thread the consumer
/// lock is biased to (`bias.rs`), and only until head moves. Where
/// consumers take turns, the others drain while one would wait, and it
/// measured slower. What it costs is latency at the end of a burst: a
/// message published during the wait is read up to `PACE` later.
const PACE: Duration = Duration::from_nanos(600);

/// A reader assembling a large message reserves at most this much ahead;
/// beyond it the buffer grows with the data actually received, so a corrupt
/// total cannot make it allocate.
const MAX_RESERVE: u64 = 64 << 20;

/// Which handle type created a queue segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Queue = 1,
    Simple = 2,
    Joinable = 3,
}

impl Kind {
    fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Queue),
            2 => Some(Self::Simple),
            3 => Some(Self::Joinable),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Queue => "Queue",
            Self::Simple => "SimpleQueue",
            Self::Joinable => "JoinableQueue",
        }
    }
}

/// How long an operation may block.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Block {
    /// Not at all (spinning briefly on a busy lock is allowed).
    Try,
    /// Until the deadline; `None` = forever.
    Until(Option<Instant>),
    /// For ever, and through a close: the rest of a message whose caller
    /// can no longer be told it failed (see [`Ring::put_with`]).
    Committed,
}

impl Block {
    fn sleeps(self) -> bool {
        !matches!(self, Self::Try)
    }

    fn deadline(self) -> Option<Instant> {
        match self {
            Self::Try | Self::Committed => None,
            Self::Until(d) => d,
        }
    }

    /// Whether a close ends the wait.
    fn stops_at_close(self) -> bool {
        !matches!(self, Self::Committed)
    }

    fn expired(self) -> Stop {
        match self {
            Self::Try => Stop::WouldBlock,
            Self::Until(_) | Self::Committed => Stop::Timeout,
        }
    }
}

/// Why an internal operation stopped; the public wrappers map it to their
/// per-operation error.
#[derive(Debug)]
pub(crate) enum Stop {
    /// Full (put) or empty (get), and the caller would not wait.
    WouldBlock,
    Timeout,
    Closed,
    Failed(QueueError),
}

impl From<QueueError> for Stop {
    fn from(err: QueueError) -> Self {
        Self::Failed(err)
    }
}

fn corrupt(what: &'static str) -> Stop {
    Stop::Failed(QueueError::Corrupt(what))
}

/// Creation parameters, already validated by the builder.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Options {
    pub ring_bytes: usize,
    pub maxsize: u32,
    pub max_message: u64,
    pub kind: Kind,
    pub pacing: bool,
}

#[inline]
const fn align_up(len: u32) -> u32 {
    (len + (REC_ALIGN - 1)) & !(REC_ALIGN - 1)
}

/// `x % cap` for the sums of ring offsets the ring computes, which are
/// below `2 * cap`: a compare instead of a division (a `div` costs tens of
/// cycles, and every put and get took several).
#[inline]
fn wrap(x: u32, cap: u32) -> u32 {
    if x < cap {
        x
    } else if x - cap < cap {
        x - cap
    } else {
        x % cap
    }
}

/// Bytes a record with a payload of `len` takes (header included). `len`
/// must be at most the ring length, so this cannot overflow.
#[inline]
const fn rec_len(len: u32) -> u32 {
    REC_ALIGN + align_up(len)
}

/// A validated record at the head.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rec {
    off: u32,
    count: u32,
    len: u32,
    kind: u32,
    extra: u64,
    next: u32,
}

/// The mapped queue; shared by all handles of one process through an `Arc`.
pub(crate) struct Ring {
    segment: Segment,
    ctl: NonNull<Control>,
    base: NonNull<u8>,
    cap: u32,
    max_record: u32,
    /// [`RESUME_ROOM`], at most a quarter of this ring.
    resume_room: u32,
    /// Length of the last value this process encoded in place (or the room
    /// it did not fit in): how much room is worth a fresh look at head.
    last_encoding: AtomicU32,
    /// A bias of the producer lock granted to a thread of this process
    /// (see `bias.rs`).
    prod_mine: AtomicU64,
    /// The same for the consumer lock.
    cons_mine: AtomicU64,
    /// This process's last look at tail found more than one message
    /// waiting: a producer outpaces its looks (see [`PACE`]).
    outpaced: AtomicBool,
    /// The queue was built with pacing (the default).
    pacing: bool,
    maxsize: u32,
    max_message: u64,
    kind: Kind,
}

// SAFETY: the pointers point into `segment`'s mapping, which is shared memory
// designed for concurrent use from many processes (and so threads); all
// mutation goes through atomics or through byte ranges that the ring protocol
// hands to one lock holder at a time.
unsafe impl Send for Ring {}
// SAFETY: as for `Send`.
unsafe impl Sync for Ring {}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("segment", &self.segment)
            .field("ring_bytes", &self.cap)
            .field("maxsize", &self.maxsize)
            .finish_non_exhaustive()
    }
}

impl Ring {
    /// A new queue in a fresh anonymous segment.
    pub(crate) fn create(o: Options) -> Result<Self, QueueError> {
        let segment =
            Segment::anonymous(RING_OFFSET + o.ring_bytes).map_err(QueueError::Segment)?;
        {
            let ctl = segment.view::<Control>(0).map_err(QueueError::Segment)?;
            ctl.config
                .ring_len
                .store(o.ring_bytes as u64, Ordering::Relaxed);
            ctl.config
                .maxsize
                .store(u64::from(o.maxsize), Ordering::Relaxed);
            ctl.config
                .max_message
                .store(o.max_message, Ordering::Relaxed);
            ctl.config.kind.store(o.kind as u32, Ordering::Relaxed);
            let flags = if o.pacing { 0 } else { NO_PACING };
            ctl.config.flags.store(flags, Ordering::Relaxed);
        }
        // SYNC: `publish_header` stores `ready` with Release after the config
        // above; `attach` reads it with Acquire through `read_header`.
        segment
            .publish_header(0, &Header::new(MAGIC, VERSION, segment.len() as u64))
            .map_err(QueueError::Segment)?;
        Self::attach(segment, Some(o.kind))
    }

    /// Maps an existing queue segment, validating its header and
    /// configuration. `kind = None` accepts any kind.
    pub(crate) fn attach(segment: Segment, kind: Option<Kind>) -> Result<Self, QueueError> {
        let header = segment
            .read_header(0, MAGIC, VERSION)
            .map_err(QueueError::Segment)?;
        if header.size() != segment.len() as u64 {
            return Err(QueueError::Corrupt("segment size differs from header"));
        }
        let ctl = segment.view::<Control>(0).map_err(QueueError::Segment)?;
        let ring_len = ctl.config.ring_len.load(Ordering::Relaxed);
        let valid_len = usize::try_from(ring_len).is_ok_and(|len| {
            (MIN_RING..=MAX_RING).contains(&len)
                && len.is_multiple_of(REC_ALIGN as usize)
                && RING_OFFSET.checked_add(len) == Some(segment.len())
        });
        if !valid_len {
            return Err(QueueError::Corrupt("ring length"));
        }
        let maxsize = u32::try_from(ctl.config.maxsize.load(Ordering::Relaxed))
            .ok()
            .filter(|&m| m <= crate::MAX_CAPACITY)
            .ok_or(QueueError::Corrupt("item bound"))?;
        let max_message = ctl.config.max_message.load(Ordering::Relaxed);
        if max_message == 0 || max_message > crate::MAX_MESSAGE_LIMIT {
            return Err(QueueError::Corrupt("message limit"));
        }
        let found = ctl.config.kind.load(Ordering::Relaxed);
        let found_kind = Kind::from_u32(found).ok_or(QueueError::Corrupt("queue kind"))?;
        if let Some(expected) = kind
            && expected != found_kind
        {
            return Err(QueueError::WrongKind {
                expected: expected.name(),
                found: found_kind.name(),
            });
        }
        let flags = ctl.config.flags.load(Ordering::Relaxed);
        if flags & !NO_PACING != 0 {
            return Err(QueueError::Corrupt("queue flags"));
        }
        let ctl = NonNull::from(ctl);
        let base = NonNull::new(segment.as_ptr().wrapping_add(RING_OFFSET))
            .ok_or(QueueError::Corrupt("null mapping"))?;
        let cap = ring_len as u32;
        Ok(Self {
            segment,
            ctl,
            base,
            cap,
            max_record: (cap / 2) & !(REC_ALIGN - 1),
            resume_room: (cap / 4).min(RESUME_ROOM),
            last_encoding: AtomicU32::new(0),
            prod_mine: AtomicU64::new(0),
            cons_mine: AtomicU64::new(0),
            outpaced: AtomicBool::new(false),
            pacing: flags & NO_PACING == 0,
            maxsize,
            max_message,
            kind: found_kind,
        })
    }

    #[inline]
    fn ctl(&self) -> &Control {
        // SAFETY: `ctl` came from `segment.view::<Control>(0)` (in bounds and
        // aligned) and the mapping lives as long as `self.segment`, which
        // `self` owns. `Control: SharedSafe`: sound to share while other
        // processes change it.
        unsafe { self.ctl.as_ref() }
    }

    pub(crate) fn segment(&self) -> &Segment {
        &self.segment
    }

    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    pub(crate) fn maxsize(&self) -> u32 {
        self.maxsize
    }

    pub(crate) fn pacing(&self) -> bool {
        self.pacing
    }

    pub(crate) fn max_message(&self) -> u64 {
        self.max_message
    }

    pub(crate) fn ring_bytes(&self) -> usize {
        self.cap as usize
    }

    /// Largest payload that travels as one record (and so can be written
    /// and read in place).
    pub(crate) fn max_inline(&self) -> usize {
        (self.max_record - REC_ALIGN) as usize
    }

    fn prod_lock(&self) -> RobustLock<'_> {
        let ctl = self.ctl();
        RobustLock {
            owner: &ctl.prod.owner,
            word: &ctl.wait.prod_lock,
            bias: &ctl.prod.bias,
            mine: &self.prod_mine,
        }
    }

    fn cons_lock(&self) -> RobustLock<'_> {
        let ctl = self.ctl();
        RobustLock {
            owner: &ctl.cons.owner,
            word: &ctl.wait.cons_lock,
            bias: &ctl.cons.bias,
            mine: &self.cons_mine,
        }
    }

    /// The four header words of the record at `off`.
    #[inline]
    fn header(&self, off: u32) -> &[AtomicU32; 4] {
        assert!(off.is_multiple_of(REC_ALIGN) && off + REC_ALIGN <= self.cap);
        // SAFETY: `off` is 16-aligned and the 16 bytes lie inside the ring
        // (asserted above), which lies inside the mapping owned by `self`;
        // the ring base is page aligned. `[AtomicU32; 4]` is SharedSafe.
        unsafe {
            &*self
                .base
                .as_ptr()
                .add(off as usize)
                .cast::<[AtomicU32; 4]>()
        }
    }

    #[inline]
    fn read_header(&self, off: u32) -> (u32, u32, u64) {
        let h = self.header(off);
        let len = h[0].load(Ordering::Relaxed);
        let kind = h[1].load(Ordering::Relaxed);
        let lo = h[2].load(Ordering::Relaxed);
        let hi = h[3].load(Ordering::Relaxed);
        (len, kind, u64::from(lo) | (u64::from(hi) << 32))
    }

    #[inline]
    fn write_header(&self, off: u32, len: u32, kind: u32, extra: u64) {
        let h = self.header(off);
        // Relaxed: published by the Release tail store in `emit`.
        h[0].store(len, Ordering::Relaxed);
        h[1].store(kind, Ordering::Relaxed);
        h[2].store(extra as u32, Ordering::Relaxed);
        h[3].store((extra >> 32) as u32, Ordering::Relaxed);
    }

    /// Asks the CPU to fetch the two cache lines from the first line
    /// boundary at or after `off` (wrapping), for writing (`PREFETCHW`) or
    /// reading. A hint only: no effect on memory contents, never faults.
    ///
    /// Why: each put and get takes a lock with a locked instruction, which
    /// waits until the operation's earlier stores are done; a store to a
    /// ring line last read on the other CPU waits for that line to come
    /// over. Fetching the lines the next records will use while this one is
    /// finished overlaps those transfers instead of paying them in turn.
    #[inline]
    fn prefetch(&self, off: u32, write: bool) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_ET0, _MM_HINT_T0, _mm_prefetch};
            const LINE: u32 = 64;
            let first = off.next_multiple_of(LINE);
            for line in [first, first + LINE] {
                let at = wrap(line, self.cap) as usize;
                // SAFETY: `at < cap`, so the address lies inside the ring's
                // mapping; a prefetch reads and writes nothing and cannot
                // fault, and SSE is part of the x86_64 baseline.
                unsafe {
                    let p = self.base.as_ptr().add(at).cast::<i8>();
                    if write {
                        _mm_prefetch::<_MM_HINT_ET0>(p);
                    } else {
                        _mm_prefetch::<_MM_HINT_T0>(p);
                    }
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (off, write);
    }

    /// The payload bytes `off..off + len` of the ring, for reading.
    ///
    /// # Safety
    ///
    /// The caller holds the consumer lock and the range lies inside a
    /// published record between head and tail, so no producer writes it
    /// until head moves past it (which only the caller can do), for as long
    /// as the slice lives.
    #[inline]
    unsafe fn bytes(&self, off: u32, len: u32) -> &[u8] {
        assert!(u64::from(off) + u64::from(len) <= u64::from(self.cap));
        // SAFETY: in bounds (asserted); no concurrent writer per the caller's
        // contract; `u8` is valid for every bit pattern.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(off as usize), len as usize) }
    }

    /// The ring bytes `off..off + len`, for writing.
    ///
    /// # Safety
    ///
    /// The caller holds the producer lock and the range lies in the free
    /// part of the ring (from tail up to 16 bytes before head), which
    /// nobody else reads or writes until the caller publishes it.
    #[allow(clippy::mut_from_ref)]
    #[inline]
    unsafe fn bytes_mut(&self, off: u32, len: u32) -> &mut [u8] {
        assert!(u64::from(off) + u64::from(len) <= u64::from(self.cap));
        // SAFETY: in bounds (asserted); exclusive per the caller's contract.
        unsafe {
            std::slice::from_raw_parts_mut(self.base.as_ptr().add(off as usize), len as usize)
        }
    }

    fn closed(&self) -> u32 {
        self.ctl().wait.closed.load(Ordering::SeqCst)
    }

    /// Whether `close` was called (by any process).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed() & CLOSING != 0
    }

    /// Complete messages in the queue now (a snapshot).
    pub(crate) fn qsize(&self) -> u32 {
        let ctl = self.ctl();
        // Head first: the count read from tail afterwards is never behind it.
        let (hc, _) = unpack(ctl.head.word.load(Ordering::Acquire));
        let (tc, _) = unpack(ctl.tail.word.load(Ordering::Acquire));
        tc.wrapping_sub(hc).min(i32::MAX as u32)
    }

    // ---- producers ------------------------------------------------------

    /// Takes the producer lock (and seals a half-done close).
    ///
    /// Inlined: the guard returned through memory would be read back with
    /// wider loads than the stores that wrote it, and such a load waits for
    /// the store buffer to drain (see [`Hold`]).
    #[inline(always)]
    pub(crate) fn producer(&self, block: Block) -> Result<Producer<'_>, Stop> {
        let (locked, hold) = self
            .prod_lock()
            .lock(me(), block.sleeps(), block.deadline())
            .map_err(|()| block.expired())?;
        let p = Producer {
            ring: self,
            hold,
            patient: Cell::new(false),
        };
        if locked == Locked::Recovered || self.closed() & CLOSING != 0 {
            self.after_recovery_or_close(locked);
        }
        Ok(p)
    }

    /// What a new producer-lock holder does after a dead holder or during
    /// a close.
    #[cold]
    fn after_recovery_or_close(&self, locked: Locked) {
        if locked == Locked::Recovered {
            // The dead holder may have stored tail but not its copy, or
            // died in a committed put.
            let ctl = self.ctl();
            ctl.prod
                .tail
                .store(ctl.tail.word.load(Ordering::Relaxed), Ordering::Relaxed);
            ctl.prod.committed.store(0, Ordering::SeqCst);
        }
        let closed = self.closed();
        if closed & CLOSING != 0 && closed & SEALED == 0 {
            // We hold the producer lock: every put that will ever publish has
            // published. SYNC: SeqCst, read by consumers before they report
            // `Closed` after a last look at tail.
            self.ctl().wait.closed.fetch_or(SEALED, Ordering::SeqCst);
            let w = &self.ctl().wait;
            lock::notify_all(&w.data);
            lock::notify_all(&w.space);
        }
    }

    /// Puts `data` as one message (one record, or fragments).
    pub(crate) fn put_slice(&self, data: &[u8], block: Block) -> Result<(), Stop> {
        self.check_len(data.len())?;
        let mut p = self.producer(block)?;
        p.put_slice(data, block)
    }

    /// Puts a message of `len` bytes written in place by `fill`.
    ///
    /// `fill` runs only once nothing can stop the put (but a segment found
    /// corrupt): the caller's closure is gone then, so the caller could not
    /// be handed it back with an error. In place, that is once the record
    /// has room. A larger message goes through a buffer in fragments:
    /// `fill` runs once the first fragment has room, and from then on the
    /// put is committed — it waits for room for the rest as long as it
    /// must, and a close does not interrupt it (it was accepted before the
    /// close; consumers drain until the producer lock is let go).
    pub(crate) fn put_with(
        &self,
        len: usize,
        block: Block,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), Stop> {
        self.check_len(len)?;
        let mut p = self.producer(block)?;
        p.settle(block)?;
        if len <= self.max_inline() {
            p.put_whole(len as u32, block, fill)
        } else {
            p.put_filled(len, block, fill)
        }
    }

    /// Puts a message that `encode` writes straight into the ring, if it
    /// fits in [`DIRECT_ENCODE_MAX`] bytes of the room there is now;
    /// `Ok(None)` means it did not fit (nothing was published; encode it
    /// elsewhere and use [`put_slice`](Self::put_slice)), `Ok(Some(err))` is
    /// an encoding error.
    pub(crate) fn put_encoded<E>(
        &self,
        block: Block,
        encode: impl FnOnce(&mut [u8]) -> Result<usize, E>,
        too_large: impl FnOnce(&E) -> bool,
    ) -> Result<Option<Option<E>>, Stop> {
        let p = self.producer(block)?;
        p.settle(block)?;
        let want = rec_len(MIN_ENCODING_ROOM).min(self.max_record);
        // The placement the wait found stays good: we hold the producer lock
        // (tail stays), and head only frees more.
        let mut placed = (0, 0);
        p.wait_space(block, |p| {
            Ok(p.items_ok() && {
                placed = p.room_for_encoding()?;
                placed.1 >= want
            })
        })?;
        let (start, room) = placed;
        let room = room.min(DIRECT_ENCODE_MAX);
        // SAFETY: we hold the producer lock and `room_for_encoding` placed
        // `start..start + room` in the free part of the ring.
        let buf = unsafe { self.bytes_mut(start + REC_ALIGN, room - REC_ALIGN) };
        let encoded = encode(buf);
        let hint = match &encoded {
            Ok(len) => *len as u32,
            Err(_) => room,
        };
        // Written only on a change: threads of one process share this
        // `Ring`, and its line holds what every operation reads.
        if self.last_encoding.load(Ordering::Relaxed) != hint {
            self.last_encoding.store(hint, Ordering::Relaxed);
        }
        match encoded {
            Ok(len) => {
                // The payload is in place; `emit` adds the header (and the
                // pad, which lies outside `buf`) and publishes.
                p.emit(WHOLE, start, len as u32, 0, true, |_| {});
                Ok(Some(None))
            }
            Err(e) if too_large(&e) => Ok(None),
            Err(e) => Ok(Some(Some(e))),
        }
    }

    fn check_len(&self, len: usize) -> Result<(), Stop> {
        if len as u64 > self.max_message {
            return Err(Stop::Failed(QueueError::TooLarge {
                len: len as u64,
                max: self.max_message,
            }));
        }
        Ok(())
    }

    /// Starts `close`: no put succeeds from now on; consumers drain what is
    /// left and then see `Closed`.
    pub(crate) fn close(&self) {
        let w = &self.ctl().wait;
        // SYNC: SeqCst, read by producers in `wait_space` (under their lock).
        w.closed.fetch_or(CLOSING, Ordering::SeqCst);
        lock::notify_all(&w.space);
        lock::notify_all(&w.data);
        // Taking the producer lock waits for the put in progress, then
        // seals. A holder that dies is taken over, so this cannot hang for
        // good. A committed put (see `put_with`) is not waited for: it goes
        // on until consumers have taken it, the closer may be the consumer
        // it waits for, and it seals the close itself when done (or, should
        // it die, a consumer that finds the close unsealed does).
        loop {
            let slice = Instant::now() + LIVENESS_SLICE;
            if self.producer(Block::Until(Some(slice))).is_ok()
                // SYNC: SeqCst, against the clear + `closing` load at the
                // end of `put_filled`: either it sees our CLOSING and seals,
                // or we see it is done and take the lock.
                || self.ctl().prod.committed.load(Ordering::SeqCst) != 0
            {
                return;
            }
        }
    }

    // ---- consumers ------------------------------------------------------

    /// Takes the consumer lock and repairs what a dead holder left.
    /// Inlined, as [`producer`](Self::producer).
    #[inline(always)]
    pub(crate) fn consumer(&self, block: Block) -> Result<Consumer<'_>, Stop> {
        let (_, hold) = self
            .cons_lock()
            .lock(me(), block.sleeps(), block.deadline())
            .map_err(|()| block.expired())?;
        let c = Consumer { ring: self, hold };
        c.repair()?;
        Ok(c)
    }

    /// The next message: in place (the consumer lock still held, head not
    /// moved) or assembled from fragments.
    pub(crate) fn next_message(&self, block: Block) -> Result<Next<'_>, Stop> {
        if block.sleeps() && self.caught_up_outpaced() {
            self.pace();
        }
        loop {
            let c = self.consumer(block)?;
            let mut asm = None;
            loop {
                match c.step(&mut asm)? {
                    Step::Whole(rec) => return Ok(Next::Whole(c, rec)),
                    Step::Complete(buf) => return Ok(Next::Owned(buf)),
                    Step::Empty if asm.is_some() => c.wait_more(&mut asm),
                    Step::Empty => break,
                }
            }
            if self.closed() & SEALED != 0 {
                // SYNC: sealing happened after the last publish (both under
                // the producer lock); one more look at tail sees it.
                if c.peek()?.is_none() {
                    return Err(Stop::Closed);
                }
                continue;
            }
            let seen = self.ctl().cons.cached_tail.load(Ordering::Relaxed);
            drop(c);
            self.wait_data(seen, block)?;
        }
    }

    /// Whether this thread is the consumer lock's biased holder, has caught
    /// up with the tail it last saw, and that look found it outpaced (see
    /// [`PACE`]). Reads only the consumer side's own lines, without the
    /// lock: a hint.
    #[inline]
    pub(crate) fn caught_up_outpaced(&self) -> bool {
        let ctl = self.ctl();
        self.pacing
            && self.outpaced.load(Ordering::Relaxed)
            && unpack(ctl.head.word.load(Ordering::Relaxed)).1
                == unpack(ctl.cons.cached_tail.load(Ordering::Relaxed)).1
            && (self.cons_mine.load(Ordering::Relaxed) >> 32) as u32 == thread_id()
    }

    /// Records what a look at tail found; stores only a change, since
    /// every thread of the process reads this line.
    #[inline]
    fn note_outpaced(&self, outpaced: bool) {
        if self.outpaced.load(Ordering::Relaxed) != outpaced {
            self.outpaced.store(outpaced, Ordering::Relaxed);
        }
    }

    /// Lets the producers run ahead for [`PACE`], without looking at tail.
    #[cold]
    fn pace(&self) {
        self.outpaced.store(false, Ordering::Relaxed);
        let head = &self.ctl().head.word;
        let seen = head.load(Ordering::Relaxed);
        let until = Instant::now() + PACE;
        // Head moving means another consumer is reading: the producers
        // are not ahead of us alone, and waiting only idles this CPU.
        while Instant::now() < until && head.load(Ordering::Relaxed) == seen {
            std::hint::spin_loop();
        }
    }

    /// Waits (without any lock) until tail moves away from `seen`, the queue
    /// is sealed, or the deadline passes.
    fn wait_data(&self, seen: u64, block: Block) -> Result<(), Stop> {
        let Block::Until(deadline) = block else {
            return Err(Stop::WouldBlock);
        };
        let ctl = self.ctl();
        let mut spin = SpinWait::new();
        let mut polls = 0u32;
        while spin.spin() {
            // Look at tail only every POLL_EVERY pauses: each look pulls
            // the line away from the producer, whose next publish then
            // waits for it; polling less lets it publish several messages
            // per transfer.
            polls += 1;
            if polls.is_multiple_of(POLL_EVERY) {
                // SYNC: pairs with the Release tail store in `emit`.
                if ctl.tail.word.load(Ordering::Acquire) != seen {
                    return Ok(());
                }
            }
        }
        // SYNC: Acquire, as above. (A close that is not sealed yet waits
        // for the loop below, which seals it should the closer have died.)
        let ready = || ctl.tail.word.load(Ordering::Acquire) != seen || self.closed() & SEALED != 0;
        // A producer holding its lock is writing a message now.
        let writing = || self.prod_lock().in_use();
        if lock::nap(&ctl.wait.data, deadline, ready, writing) {
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Stop::Timeout);
        }
        loop {
            let v = lock::prepare_sleep(&ctl.wait.data);
            // SYNC: re-check after `prepare_sleep`; pairs with the tail
            // store + `notify` in `emit`.
            if ctl.tail.word.load(Ordering::SeqCst) != seen {
                return Ok(());
            }
            let closed = self.closed();
            if closed & SEALED != 0 {
                return Ok(());
            }
            if closed & CLOSING != 0 {
                // The closer may have died before sealing: seal ourselves.
                let slice = Instant::now() + LIVENESS_SLICE;
                match self.producer(Block::Until(Some(slice))) {
                    Ok(_) | Err(Stop::Timeout) => {}
                    Err(other) => return Err(other),
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(Stop::Timeout);
                }
                continue;
            }
            if futex::wait(&ctl.wait.data, v, lock::sleep_until(deadline)) == WaitOutcome::TimedOut
                && deadline.is_some_and(|d| Instant::now() >= d)
            {
                if ctl.tail.word.load(Ordering::SeqCst) != seen {
                    return Ok(());
                }
                return Err(Stop::Timeout);
            }
        }
    }

    // ---- joinable -------------------------------------------------------

    /// Messages put and not yet marked done.
    pub(crate) fn unfinished(&self) -> u32 {
        let ctl = self.ctl();
        let done = ctl.join.done.load(Ordering::SeqCst);
        let (tc, _) = unpack(ctl.tail.word.load(Ordering::SeqCst));
        tc.wrapping_sub(done)
    }

    /// Marks one message done; `false` when none is unfinished.
    pub(crate) fn task_done(&self) -> bool {
        let ctl = self.ctl();
        loop {
            let done = ctl.join.done.load(Ordering::SeqCst);
            let (tc, _) = unpack(ctl.tail.word.load(Ordering::SeqCst));
            if tc.wrapping_sub(done) == 0 || tc.wrapping_sub(done) > i32::MAX as u32 {
                return false;
            }
            // SYNC: SeqCst, pairs with the SeqCst re-check in `join`.
            if ctl
                .join
                .done
                .compare_exchange(
                    done,
                    done.wrapping_add(1),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                lock::notify(&ctl.join.join);
                return true;
            }
        }
    }

    /// Waits until every message put has been marked done.
    pub(crate) fn join(&self, block: Block) -> Result<(), Stop> {
        if self.unfinished() == 0 {
            return Ok(());
        }
        let Block::Until(deadline) = block else {
            return Err(Stop::WouldBlock);
        };
        let ctl = self.ctl();
        loop {
            let v = lock::prepare_sleep(&ctl.join.join);
            if self.unfinished() == 0 {
                return Ok(());
            }
            if futex::wait(&ctl.join.join, v, lock::sleep_until(deadline)) == WaitOutcome::TimedOut
                && deadline.is_some_and(|d| Instant::now() >= d)
            {
                return if self.unfinished() == 0 {
                    Ok(())
                } else {
                    Err(Stop::Timeout)
                };
            }
        }
    }
}

/// Holder of the producer lock; unlocks on drop.
pub(crate) struct Producer<'r> {
    ring: &'r Ring,
    hold: Hold,
    /// Set while a blocking put may still spin: a fresh look at head that
    /// finds less than `resume_room` free then counts as no room, once (see
    /// [`RESUME_ROOM`]).
    patient: Cell<bool>,
}

impl Drop for Producer<'_> {
    #[inline]
    fn drop(&mut self) {
        self.ring.prod_lock().unlock(self.hold);
    }
}

impl Producer<'_> {
    fn ctl(&self) -> &Control {
        self.ring.ctl()
    }

    /// `(count, offset)` of tail, from the producers' copy. Only lock
    /// holders write either.
    #[inline]
    fn tail(&self) -> (u32, u32) {
        unpack(self.ctl().prod.tail.load(Ordering::Relaxed))
    }

    /// Head offset: the cached copy, or a fresh one.
    #[inline]
    fn head(&self, fresh: bool) -> Result<u32, Stop> {
        let prod = &self.ctl().prod;
        let word = if fresh {
            // SYNC: pairs with the Release head store in
            // `Consumer::advance`: the reader is done with those bytes. Also
            // the re-check after `prepare_sleep` in `wait_space`.
            let w = self.ctl().head.word.load(Ordering::SeqCst);
            prod.cached_head.store(w, Ordering::Relaxed);
            w
        } else {
            prod.cached_head.load(Ordering::Relaxed)
        };
        let (_, off) = unpack(word);
        if off >= self.ring.cap || !off.is_multiple_of(REC_ALIGN) {
            return Err(corrupt("head offset"));
        }
        Ok(off)
    }

    /// Record bytes placeable now: `(a, b)` where `a` is contiguous at the
    /// tail and `b` at offset 0 (after padding the end), both at most the
    /// record limit.
    #[inline]
    fn rooms(&self, fresh: bool) -> Result<(u32, u32), Stop> {
        let cap = self.ring.cap;
        let (_, t) = self.tail();
        if t >= cap || !t.is_multiple_of(REC_ALIGN) {
            return Err(corrupt("tail offset"));
        }
        let h = self.head(fresh)?;
        let used = wrap(t + cap - h, cap);
        let free = cap - REC_ALIGN - used;
        let end = cap - t;
        let a = free.min(end);
        let b = if t != 0 && free > end { free - end } else { 0 };
        if fresh && self.patient.get() && free < self.ring.resume_room {
            // Taking room for a record or two at once would make every
            // following put look at head again: one transfer of head's line
            // per message, each stalling the consumer's next store. The
            // head just seen is cached: the next look takes its room.
            return Ok((0, 0));
        }
        let max = self.ring.max_record;
        Ok((a.min(max), b.min(max)))
    }

    /// Where a record of `rec` bytes can start now, if anywhere.
    #[inline]
    fn fits(&self, rec: u32) -> Result<Option<u32>, Stop> {
        for fresh in [false, true] {
            let (a, b) = self.rooms(fresh)?;
            if rec <= a {
                return Ok(Some(self.tail().1));
            }
            if rec <= b {
                return Ok(Some(0));
            }
        }
        Ok(None)
    }

    /// The larger placement for a value encoded in place, from the cached
    /// head unless that leaves less than the last value put this way took
    /// (and at least [`MIN_ENCODING_ROOM`]).
    #[inline]
    fn room_for_encoding(&self) -> Result<(u32, u32), Stop> {
        let (a, b) = self.rooms(false)?;
        let hint = self.ring.last_encoding.load(Ordering::Relaxed);
        let need = rec_len(hint.clamp(MIN_ENCODING_ROOM, DIRECT_ENCODE_MAX));
        let (a, b) = if a.max(b) < need.min(self.ring.max_record) {
            self.rooms(true)?
        } else {
            (a, b)
        };
        Ok(if a >= b { (self.tail().1, a) } else { (0, b) })
    }

    /// The larger placement for a fragment: `(start, record bytes)`.
    fn best_room(&self) -> Result<(u32, u32), Stop> {
        let (a, b) = self.rooms(true)?;
        Ok(if a >= b { (self.tail().1, a) } else { (0, b) })
    }

    /// Whether the item bound allows one more message.
    #[inline]
    fn items_ok(&self) -> bool {
        let max = self.ring.maxsize;
        max == 0 || {
            let (tc, _) = self.tail();
            let below = |head: u64| tc.wrapping_sub(unpack(head).0) < max;
            let prod = &self.ctl().prod;
            // The cached head is never ahead of the real one: if it allows
            // the message, so does head.
            below(prod.cached_head.load(Ordering::Relaxed)) || {
                // SYNC: SeqCst, as in `head(true)`.
                let word = self.ctl().head.word.load(Ordering::SeqCst);
                prod.cached_head.store(word, Ordering::Relaxed);
                below(word)
            }
        }
    }

    fn closing(&self) -> bool {
        self.ring.closed() & CLOSING != 0
    }

    /// Waits until `ready` holds (re-checked after every change of head),
    /// the queue closes, or the deadline passes. While it may spin, a
    /// blocking wait is patient (see [`RESUME_ROOM`]).
    fn wait_space(
        &self,
        block: Block,
        mut ready: impl FnMut(&Self) -> Result<bool, Stop>,
    ) -> Result<(), Stop> {
        if self.closing() && block.stops_at_close() {
            return Err(Stop::Closed);
        }
        self.patient.set(block.sleeps());
        let done = match ready(self) {
            Ok(true) => Ok(()),
            Ok(false) => self.wait_space_slow(block, &mut ready),
            Err(e) => Err(e),
        };
        self.patient.set(false);
        done
    }

    #[cold]
    fn wait_space_slow(
        &self,
        block: Block,
        ready: &mut dyn FnMut(&Self) -> Result<bool, Stop>,
    ) -> Result<(), Stop> {
        if !block.sleeps() {
            return Err(Stop::WouldBlock);
        }
        let deadline = block.deadline();
        let closing = || block.stops_at_close() && self.closing();
        let mut spin = SpinWait::new();
        let mut polls = 0u32;
        while spin.spin() {
            // As the consumer polls tail: look at head only every
            // POLL_EVERY pauses. Each look pulls head's line away from the
            // consumer, whose next store then waits for it.
            polls += 1;
            if !polls.is_multiple_of(POLL_EVERY) {
                continue;
            }
            if closing() {
                return Err(Stop::Closed);
            }
            if ready(self)? {
                return Ok(());
            }
        }
        // A sleeper takes any room: a consumer wakes it on every record it
        // frees, and sleeping again each time would cost more. So does a
        // napper, which looks only now and then.
        self.patient.set(false);
        let space = &self.ctl().wait.space;
        // A consumer holding its lock is taking a message out: room is on
        // its way. (An error of `ready` ends the nap, to be met below.)
        let reading = || self.ring.cons_lock().in_use();
        if lock::nap(
            space,
            deadline,
            || closing() || ready(self).unwrap_or(true),
            reading,
        ) {
            if closing() {
                return Err(Stop::Closed);
            }
            if ready(self)? {
                return Ok(());
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return if ready(self)? {
                Ok(())
            } else {
                Err(Stop::Timeout)
            };
        }
        loop {
            let v = lock::prepare_sleep(space);
            if closing() {
                return Err(Stop::Closed);
            }
            if ready(self)? {
                return Ok(());
            }
            if futex::wait(space, v, lock::sleep_until(deadline)) == WaitOutcome::TimedOut
                && deadline.is_some_and(|d| Instant::now() >= d)
            {
                if closing() {
                    return Err(Stop::Closed);
                }
                return if ready(self)? {
                    Ok(())
                } else {
                    Err(Stop::Timeout)
                };
            }
        }
    }

    /// Writes and publishes one record at `start` (padding the end first
    /// when `start` is 0 and tail is not). Space was checked by the caller.
    fn emit(
        &self,
        kind: u32,
        start: u32,
        len: u32,
        extra: u64,
        ends: bool,
        fill: impl FnOnce(&mut [u8]),
    ) {
        let ring = self.ring;
        let (count, t) = self.tail();
        if start != t {
            debug_assert_eq!(start, 0);
            ring.write_header(t, ring.cap - t - REC_ALIGN, PAD, 0);
        }
        ring.write_header(start, len, kind, extra);
        // SAFETY: we hold the producer lock and `fits`/`best_room` placed
        // `start..start + rec_len(len)` in the free part of the ring.
        fill(unsafe { ring.bytes_mut(start + REC_ALIGN, len) });
        let next = wrap(start + rec_len(len), ring.cap);
        let word = pack(count.wrapping_add(u32::from(ends)), next);
        // SYNC: Release publishes the record (and pad): pairs with the
        // Acquire tail loads of consumers (`peek`, `wait_data`,
        // `wait_more`). `notify` then is the fast half of the pair with
        // `prepare_sleep` in `wait_data`/`wait_more`.
        self.ctl().tail.word.store(word, Ordering::Release);
        self.ctl().prod.tail.store(word, Ordering::Relaxed);
        lock::notify(&self.ctl().wait.data);
        // The line holding `next` may be read right now by a consumer that
        // keeps up; the lines after it are not.
        ring.prefetch(next, true);
    }

    /// Publishes the `ABORT` a dead or timed-out producer owes, if any.
    #[inline]
    fn settle(&self, block: Block) -> Result<(), Stop> {
        if self.ctl().prod.state.load(Ordering::Relaxed) == P_IDLE {
            return Ok(());
        }
        self.settle_slow(block)
    }

    #[cold]
    fn settle_slow(&self, block: Block) -> Result<(), Stop> {
        let mut at = 0;
        self.wait_space(block, |p| {
            Ok(p.fits(REC_ALIGN)?.inspect(|&s| at = s).is_some())
        })?;
        self.emit(ABORT, at, 0, 0, false, |_| {});
        self.ctl().prod.state.store(P_IDLE, Ordering::Relaxed);
        Ok(())
    }

    #[inline]
    fn put_slice(&mut self, data: &[u8], block: Block) -> Result<(), Stop> {
        self.settle(block)?;
        if data.len() <= self.ring.max_inline() {
            self.put_whole(data.len() as u32, block, |buf| buf.copy_from_slice(data))
        } else {
            self.put_fragments(data, block)
        }
    }

    /// One `WHOLE` record of `len` (at most `max_inline`) bytes.
    fn put_whole(&self, len: u32, block: Block, fill: impl FnOnce(&mut [u8])) -> Result<(), Stop> {
        let rec = rec_len(len);
        let mut at = 0;
        self.wait_space(block, |p| {
            Ok(p.items_ok() && p.fits(rec)?.inspect(|&s| at = s).is_some())
        })?;
        self.emit(WHOLE, at, len, 0, true, fill);
        Ok(())
    }

    /// Record bytes the next fragment needs room for, with `remaining`
    /// bytes of the message still to go.
    fn fragment_room(&self, remaining: usize) -> u32 {
        let whole = rec_len((remaining.min(self.ring.max_inline())) as u32);
        whole.min(MIN_FRAGMENT.min(self.ring.max_record))
    }

    /// Waits (as `block` allows) until the first fragment of a message of
    /// `total` bytes has room.
    fn wait_first_fragment(&self, total: usize, block: Block) -> Result<(), Stop> {
        self.wait_space(block, |p| {
            Ok(p.items_ok() && p.best_room()?.1 >= p.fragment_room(total + FIRST_PREFIX as usize))
        })
    }

    /// A message too large for one record, written by `fill` into a buffer
    /// once its first fragment has room, then committed (see
    /// [`Ring::put_with`]).
    fn put_filled(
        &mut self,
        len: usize,
        block: Block,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), Stop> {
        self.wait_first_fragment(len, block)?;
        let mut buf = vec![0u8; len];
        fill(&mut buf);
        let committed = &self.ctl().prod.committed;
        committed.store(1, Ordering::SeqCst);
        // Room only grows while we hold the producer lock: the first
        // fragment's wait ends at once.
        let done = self.put_fragments(&buf, Block::Committed);
        // SYNC: SeqCst, against the CLOSING store + `committed` load in
        // `close`.
        committed.store(0, Ordering::SeqCst);
        if self.closing() {
            self.ring.after_recovery_or_close(Locked::Clean);
        }
        done
    }

    /// A message too large for one record: `FIRST`, `CONT`…, `LAST`, all
    /// under this one hold of the producer lock.
    fn put_fragments(&self, data: &[u8], block: Block) -> Result<(), Stop> {
        let total = data.len();
        self.wait_first_fragment(total, block)?;
        let (start, room) = self.best_room()?;
        let chunk = ((room - REC_ALIGN - FIRST_PREFIX) as usize).min(total);
        self.ctl()
            .prod
            .state
            .store(P_FRAGMENTING, Ordering::Relaxed);
        let owner = me();
        self.emit(
            FIRST,
            start,
            FIRST_PREFIX + chunk as u32,
            total as u64,
            false,
            |buf| {
                buf[..8].copy_from_slice(&owner.to_le_bytes());
                buf[8..].copy_from_slice(&data[..chunk]);
            },
        );
        let mut sent = chunk;
        while sent < total {
            let remaining = total - sent;
            if let Err(stop) =
                self.wait_space(
                    block,
                    |p| Ok(p.best_room()?.1 >= p.fragment_room(remaining)),
                )
            {
                self.abandon();
                return Err(stop);
            }
            let (start, room) = self.best_room()?;
            let chunk = ((room - REC_ALIGN) as usize).min(remaining);
            let last = chunk == remaining;
            let kind = if last { LAST } else { CONT };
            self.emit(kind, start, chunk as u32, 0, last, |buf| {
                buf.copy_from_slice(&data[sent..sent + chunk]);
            });
            sent += chunk;
        }
        self.ctl().prod.state.store(P_IDLE, Ordering::Relaxed);
        Ok(())
    }

    /// Gives up a fragmented message half way: publishes `ABORT` if there
    /// is room now, else leaves the debt to the next producer (`settle`).
    fn abandon(&self) {
        if let Ok(Some(at)) = self.fits(REC_ALIGN) {
            self.emit(ABORT, at, 0, 0, false, |_| {});
            self.ctl().prod.state.store(P_IDLE, Ordering::Relaxed);
        }
    }
}

/// What `Consumer::step` found.
pub(crate) enum Step {
    Whole(Rec),
    Complete(Vec<u8>),
    Empty,
}

/// The next message for a reader.
pub(crate) enum Next<'r> {
    /// In place: the consumer lock is held and head still points at it.
    Whole(Consumer<'r>, Rec),
    /// Assembled from fragments (already consumed).
    Owned(Vec<u8>),
}

/// A message being assembled from fragments.
pub(crate) struct Assembly {
    owner: u64,
    total: u64,
    buf: Vec<u8>,
}

/// Holder of the consumer lock; unlocks on drop.
pub(crate) struct Consumer<'r> {
    ring: &'r Ring,
    hold: Hold,
}

impl Drop for Consumer<'_> {
    #[inline]
    fn drop(&mut self) {
        self.ring.cons_lock().unlock(self.hold);
    }
}

impl Consumer<'_> {
    fn ctl(&self) -> &Control {
        self.ring.ctl()
    }

    fn state(&self) -> &AtomicU32 {
        &self.ctl().cons.state
    }

    /// Fixes up what a dead holder left (see the module docs). Cheap when
    /// there is nothing to do: one load.
    #[inline]
    fn repair(&self) -> Result<(), Stop> {
        match self.state().load(Ordering::Relaxed) {
            C_IDLE | C_SKIPPING => Ok(()),
            _ => self.repair_slow(),
        }
    }

    #[cold]
    fn repair_slow(&self) -> Result<(), Stop> {
        let cons = &self.ctl().cons;
        match cons.state.load(Ordering::Relaxed) {
            C_ASSEMBLING => cons.state.store(C_SKIPPING, Ordering::Relaxed),
            C_GUARD => {
                let pos = cons.guard_pos.load(Ordering::Relaxed);
                if let Some(rec) = self.peek()?
                    && rec.off == pos
                    && rec.kind == WHOLE
                {
                    self.advance(rec.count.wrapping_add(1), rec.next);
                }
                cons.state.store(C_IDLE, Ordering::Relaxed);
            }
            _ => cons.state.store(C_IDLE, Ordering::Relaxed),
        }
        Ok(())
    }

    /// The validated record at head, or `None` when the ring is empty.
    fn peek(&self) -> Result<Option<Rec>, Stop> {
        let ring = self.ring;
        let cap = ring.cap;
        let ctl = self.ctl();
        let (count, h) = unpack(ctl.head.word.load(Ordering::Relaxed));
        if h >= cap || !h.is_multiple_of(REC_ALIGN) {
            return Err(corrupt("head offset"));
        }
        let (_, mut t) = unpack(ctl.cons.cached_tail.load(Ordering::Relaxed));
        if t == h || t >= cap || !t.is_multiple_of(REC_ALIGN) {
            // SYNC: Acquire pairs with the Release tail store in `emit`: every
            // record before this tail is completely written.
            let word = ctl.tail.word.load(Ordering::Acquire);
            ctl.cons.cached_tail.store(word, Ordering::Relaxed);
            t = unpack(word).1;
            if t >= cap || !t.is_multiple_of(REC_ALIGN) {
                return Err(corrupt("tail offset"));
            }
            if t == h {
                ring.note_outpaced(false);
                return Ok(None);
            }
            // Counted in whole messages (the counts in head and tail), so a
            // pad before a record, or a message in fragments, is one.
            ring.note_outpaced(unpack(word).0.wrapping_sub(count) > 1);
        }
        let used = wrap(t + cap - h, cap);
        let (len, kind, extra) = ring.read_header(h);
        if len > cap {
            return Err(corrupt("record length"));
        }
        let rec = rec_len(len);
        if rec > used || h + rec > cap {
            return Err(corrupt("record length"));
        }
        let next = match kind {
            PAD if h + rec == cap => 0,
            WHOLE | FIRST | CONT | LAST | ABORT => wrap(h + rec, cap),
            _ => return Err(corrupt("record kind")),
        };
        if wrap(t + cap - next, cap) >= 256 {
            // Those lines are published: fetching them cannot pull a line
            // away from a producer still writing it.
            ring.prefetch(next, false);
        }
        Ok(Some(Rec {
            off: h,
            count,
            len,
            kind,
            extra,
            next,
        }))
    }

    /// Frees a record: moves head to `next` with message count `count`.
    #[inline]
    pub(crate) fn advance(&self, count: u32, next: u32) {
        let ctl = self.ctl();
        // SYNC: Release: our reads of the record are done before a producer
        // that loads this head (Acquire, in `Producer::head`) reuses the
        // bytes. `notify` then is the fast half of the pair with
        // `prepare_sleep` in `wait_space`.
        ctl.head.word.store(pack(count, next), Ordering::Release);
        lock::notify(&ctl.wait.space);
    }

    #[inline]
    fn payload(&self, rec: &Rec) -> &[u8] {
        // SAFETY: we hold the consumer lock and `rec` was validated by
        // `peek` to lie between head and tail; the slice borrows `self`, so
        // it ends before we can move head.
        unsafe { self.ring.bytes(rec.off + REC_ALIGN, rec.len) }
    }

    /// Consumes records until a message is ready or the ring is empty.
    fn step(&self, asm: &mut Option<Assembly>) -> Result<Step, Stop> {
        loop {
            let Some(r) = self.peek()? else {
                return Ok(Step::Empty);
            };
            let state = self.state();
            match r.kind {
                PAD => self.advance(r.count, 0),
                WHOLE => {
                    if asm.take().is_some() || state.load(Ordering::Relaxed) != C_IDLE {
                        state.store(C_IDLE, Ordering::Relaxed);
                    }
                    return Ok(Step::Whole(r));
                }
                FIRST => {
                    let total = r.extra;
                    let data_len = u64::from(r.len.saturating_sub(FIRST_PREFIX));
                    if r.len < FIRST_PREFIX || total > self.ring.max_message || total < data_len {
                        return Err(corrupt("first fragment"));
                    }
                    let payload = self.payload(&r);
                    let mut owner = [0u8; 8];
                    owner.copy_from_slice(&payload[..8]);
                    let mut buf = Vec::new();
                    buf.try_reserve_exact(total.min(MAX_RESERVE) as usize)
                        .map_err(|_| {
                            Stop::Failed(QueueError::TooLarge {
                                len: total,
                                max: self.ring.max_message,
                            })
                        })?;
                    buf.extend_from_slice(&payload[8..]);
                    *asm = Some(Assembly {
                        owner: u64::from_le_bytes(owner),
                        total,
                        buf,
                    });
                    // Before head moves past FIRST: a crash from here on
                    // loses this message, and the next holder must skip it.
                    state.store(C_ASSEMBLING, Ordering::Relaxed);
                    self.advance(r.count, r.next);
                }
                CONT | LAST => match asm {
                    Some(a) => {
                        if a.buf.len() as u64 + u64::from(r.len) > a.total {
                            return Err(corrupt("fragment beyond message length"));
                        }
                        a.buf.extend_from_slice(self.payload(&r));
                        if r.kind == LAST {
                            if a.buf.len() as u64 != a.total {
                                return Err(corrupt("message shorter than announced"));
                            }
                            let buf = std::mem::take(&mut a.buf);
                            *asm = None;
                            self.advance(r.count.wrapping_add(1), r.next);
                            state.store(C_IDLE, Ordering::Relaxed);
                            return Ok(Step::Complete(buf));
                        }
                        self.advance(r.count, r.next);
                    }
                    None => {
                        // The rest of a message whose start died with a
                        // reader: drop it. Its LAST still counts as a
                        // message leaving the queue, and as a task done
                        // (nobody alive received it).
                        if r.kind == LAST {
                            self.advance(r.count.wrapping_add(1), r.next);
                            if state.load(Ordering::Relaxed) == C_SKIPPING {
                                self.ctl().join.done.fetch_add(1, Ordering::SeqCst);
                                lock::notify(&self.ctl().join.join);
                            }
                            state.store(C_IDLE, Ordering::Relaxed);
                        } else {
                            self.advance(r.count, r.next);
                        }
                    }
                },
                ABORT => {
                    *asm = None;
                    state.store(C_IDLE, Ordering::Relaxed);
                    self.advance(r.count, r.next);
                }
                _ => return Err(corrupt("record kind")),
            }
        }
    }

    /// Waits, holding the consumer lock, for the next fragment of `asm`;
    /// drops the partial message when its producer died or gave up.
    ///
    /// The caller's deadline does not apply here: the message has started
    /// and its producer is alive and holding the producer lock.
    fn wait_more(&self, asm: &mut Option<Assembly>) {
        let Some(a) = asm else { return };
        let owner = a.owner;
        let ctl = self.ctl();
        let seen = ctl.cons.cached_tail.load(Ordering::Relaxed);
        let mut spin = SpinWait::new();
        while spin.spin() {
            if ctl.tail.word.load(Ordering::Acquire) != seen {
                return;
            }
        }
        let mut drop_partial = || {
            *asm = None;
            self.state().store(C_IDLE, Ordering::Relaxed);
        };
        loop {
            let v = lock::prepare_sleep(&ctl.wait.data);
            if ctl.tail.word.load(Ordering::SeqCst) != seen {
                return;
            }
            // SYNC: the producer stores tail (Release) before it releases
            // its lock or leaves by its bias (Release); seeing it out
            // (Acquire) and then the same tail means no fragment will
            // follow.
            if !self.ring.prod_lock().held_by(owner) {
                if ctl.tail.word.load(Ordering::SeqCst) == seen {
                    drop_partial();
                }
                return;
            }
            let slice = Instant::now() + LIVENESS_SLICE;
            if futex::wait(&ctl.wait.data, v, Some(slice)) == WaitOutcome::TimedOut
                && !lock::owner_alive(owner)
            {
                if ctl.tail.word.load(Ordering::SeqCst) == seen {
                    drop_partial();
                }
                return;
            }
        }
    }

    /// Marks the record at head as lent out in place (see `C_GUARD`).
    #[inline]
    pub(crate) fn lend(&self, rec: &Rec) {
        let cons = &self.ctl().cons;
        cons.guard_pos.store(rec.off, Ordering::Relaxed);
        cons.state.store(C_GUARD, Ordering::Relaxed);
    }

    /// Consumes a record returned in [`Next::Whole`].
    #[inline]
    pub(crate) fn consume(&self, rec: &Rec) {
        self.advance(rec.count.wrapping_add(1), rec.next);
    }

    /// Ends a loan: consumes the record.
    #[inline]
    pub(crate) fn finish(&self, rec: &Rec) {
        self.advance(rec.count.wrapping_add(1), rec.next);
        self.state().store(C_IDLE, Ordering::Relaxed);
    }

    /// The payload of `rec`, borrowed from the ring.
    #[inline]
    pub(crate) fn bytes(&self, rec: &Rec) -> &[u8] {
        self.payload(rec)
    }
}

#[cfg(test)]
mod wrap_tests {
    use super::{MAX_RING, MIN_RING, wrap};

    #[test]
    fn wrap_is_the_remainder_for_every_sum_the_ring_forms() {
        for cap in [MIN_RING as u32, 4096 + 16, 1 << 20, MAX_RING as u32] {
            // Up to `2 * cap - 1`, which for the largest ring is `u32::MAX`.
            let top = cap - 1 + cap;
            for x in [0, 1, cap - 1, cap, cap + 1, top]
                .into_iter()
                .chain((0..top).step_by((cap / 97) as usize))
            {
                assert_eq!(wrap(x, cap), x % cap, "x {x} cap {cap}");
            }
        }
        // Beyond the promise it still answers right, only slower.
        assert_eq!(wrap(3 * 4096 + 5, 4096), 5);
    }
}
