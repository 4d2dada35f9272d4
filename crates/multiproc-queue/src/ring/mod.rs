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
//! consumer side does the same the other way round (see `PACE` in
//! `consumer.rs`): a blocking get that catches up with a producer that was
//! outpacing it lets the producer run ahead for a moment before it looks at
//! tail. Both locks record the holder's process identity, which is what
//! makes them robust: a waiter that sleeps a
//! [`LIVENESS_SLICE`](crate::owner::LIVENESS_SLICE) without progress asks the
//! kernel whether the holder lives and takes the lock over from a dead one.
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
//!
//! The `head` and `tail` words pack `count << 32 | offset`: `count` numbers
//! complete messages (it grows on `WHOLE` and `LAST`), so one store moves a
//! message in or out together with its bytes and a crash cannot separate the
//! two. `qsize` is `tail.count - head.count`; a `JoinableQueue`'s unfinished
//! tasks are `tail.count - done`.
//!
//! `head == tail` with equal counts means empty. Producers leave 16 bytes
//! before head free, with one exception: a large `WHOLE` record put into an
//! empty ring may fill it to the last byte (below), and then `head == tail`
//! with different counts means full — that record moved tail's count, and
//! head's catches up only once it is read (`ring_used`).
//!
//! # Large records
//!
//! A record of at least [`WRAP_EARLY_FROM`] bytes stays on bytes still in
//! the caches where it can (a ring larger than the caches would otherwise
//! have every large copy write lines that left them):
//!
//! - it goes back to offset 0, padding the end, whenever it fits there and
//!   no more than one record's worth is unread (`Producer::wrap_early`);
//!   into an empty ring it may end exactly at head, so a record of the same
//!   size as the last takes the last one's place;
//! - a producer that finds exactly one message unread, which its reader
//!   is about to take or holds, waits a moment for the ring to empty
//!   before it writes (`Producer::let_reader_finish`), and a reader that
//!   just read a large record spins, rather than naps, while the next is
//!   written, so that it lets go of it at once. Both spin only while the
//!   other side ran on another CPU when it last wrote or took a large
//!   record (a hint beside head and tail; a yield to another task of the
//!   same CPU can cost a time slice); on one CPU the producer's wait
//!   yields, and the reader naps as before;
//! - a producer whose wait ran out, or who waited for room longer than its
//!   spin, neither waits nor fills the ring for the next
//!   `REUSE_SKIPS_AFTER_MISS` large records: a reader that copies its
//!   messages out, holds them, or is held up by other work on its CPU is
//!   better served by a producer that runs ahead.
//!
//! The producer side (put paths, fragments, close) is in `producer.rs`,
//! the consumer side (get paths, in-place reads, pacing) in `consumer.rs`,
//! with the state machine each side keeps; `join.rs` counts a
//! `JoinableQueue`'s tasks.
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
//! bit 0 is set (see `wake.rs`).
//!
//! Between spinning and that announced sleep, a waiter whose partner is in
//! the middle of an operation (holds its lock: a producer writing, a
//! consumer taking a message out) naps instead: short timed sleeps that set
//! no bit and need no wake-up (`wake::nap`). With large messages the wait
//! outlasts the spin but not the partner's copy, and announcing it each
//! time would interrupt that copy with the `membarrier` and add a
//! `futex_wake` per message.
#![allow(unsafe_code)]

pub(crate) mod consumer;
mod join;
pub(crate) mod producer;

use multiproc_core::{Header, Segment};
use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use crate::bias::Hold;
use crate::error::QueueError;
use crate::layout::{
    Control, MAGIC, MAX_RING, MIN_RING, NO_PACING, REC_ALIGN, RING_OFFSET, VERSION, unpack,
};
use crate::limits::{MAX_CAPACITY, MAX_MESSAGE_LIMIT};
use crate::owner::RobustLock;
use crate::wake::bell;

const PAD: u32 = 0x5251_0001;
const WHOLE: u32 = 0x5251_0002;
const FIRST: u32 = 0x5251_0003;
const CONT: u32 = 0x5251_0004;
const LAST: u32 = 0x5251_0005;
const ABORT: u32 = 0x5251_0006;

/// Bytes of a `FIRST` payload before the data: the writer's identity.
const FIRST_PREFIX: u32 = 8;

/// A record this large (header included) goes back to the start of the
/// ring, padding the end, whenever it fits there and no more than one
/// record's worth is still unread (see `Producer::wrap_early`), and a
/// reader that just read one spins rather than naps while the next is
/// written (see `wait_data` in `consumer.rs`).
const WRAP_EARLY_FROM: u32 = 256 * 1024;

/// `closed` bit: `close` started; puts fail from now on.
const CLOSING: u32 = 1;
/// `closed` bit: sealed under the producer lock; no record will follow.
const SEALED: u32 = 2;

/// A waiting consumer looks at tail once per this many pause instructions.
const POLL_EVERY: u32 = 8;

/// A blocking producer whose fresh look at head finds less than this many
/// bytes (or a quarter of the ring) free backs off: that look counts as no
/// room, and the head it saw is used at the next look, a poll interval
/// later. Meanwhile the consumer frees more, undisturbed. (Waiting until
/// this much is really free measured slower: 17.6 instead of 21.4 M
/// 8-byte messages/s.)
const RESUME_ROOM: u32 = 4096;

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

/// Bytes between head (offset `h`, message count `hc`) and tail (`t`,
/// `tc`). Equal offsets mean an empty ring when the counts are equal too,
/// and a full one when they differ: a producer fills the ring to the last
/// byte only with a record that ends a message (`WHOLE`), which moves
/// tail's count, and head's count catches up only once that record is
/// read; every other record leaves 16 bytes before head free.
#[inline]
fn ring_used(t: u32, tc: u32, h: u32, hc: u32, cap: u32) -> u32 {
    if t == h && tc != hc {
        cap
    } else {
        wrap(t + cap - h, cap)
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
    /// How long (ns) this process's last large record took to write, and
    /// how many large records are still to skip the wait for the reader
    /// (see `Producer::let_reader_finish`).
    large_write_ns: AtomicU32,
    reuse_skips: AtomicU32,
    /// The last record this process read whole was a large one (at least
    /// [`WRAP_EARLY_FROM`]).
    large_reads: AtomicBool,
    /// A bias of the producer lock granted to a thread of this process
    /// (see `bias.rs`).
    prod_mine: AtomicU64,
    /// The same for the consumer lock.
    cons_mine: AtomicU64,
    /// This process's last look at tail found more than one message
    /// waiting: a producer outpaces its looks (see `PACE` in `consumer.rs`).
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
            .filter(|&m| m <= MAX_CAPACITY)
            .ok_or(QueueError::Corrupt("item bound"))?;
        let max_message = ctl.config.max_message.load(Ordering::Relaxed);
        if max_message == 0 || max_message > MAX_MESSAGE_LIMIT {
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
            large_write_ns: AtomicU32::new(0),
            reuse_skips: AtomicU32::new(0),
            large_reads: AtomicBool::new(false),
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
    pub(crate) fn ctl(&self) -> &Control {
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
            word: ctl.word(&ctl.wait.prod_lock, bell::PROD_LOCK),
            bias: &ctl.prod.bias,
            mine: &self.prod_mine,
        }
    }

    fn cons_lock(&self) -> RobustLock<'_> {
        let ctl = self.ctl();
        RobustLock {
            owner: &ctl.cons.owner,
            word: ctl.word(&ctl.wait.cons_lock, bell::CONS_LOCK),
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
}

// The two lock holders are defined here, beside `Ring`, though only
// `producer.rs` and `consumer.rs` use them: rustc compiles a method in the
// codegen unit of the module that defines its `self` type, and LLVM
// inlines only within a codegen unit. A put or a get calls `Ring`,
// `Producer` and `Consumer` methods in turn; defined in one module, they
// inline into one another as when the ring was one file. (With the holders
// defined in their sides' files, `put_whole`, `wait_space` and `emit` on
// the put path, and `step` on the get path, became calls.)

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
