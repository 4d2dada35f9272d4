//! The queue's layout in its segment: fixed offsets, one hot word per cache
//! line, pinned by compile-time asserts. Changing anything here changes
//! [`VERSION`].
//!
//! # Segment
//!
//! | offset | size | what | writer | guard / ordering |
//! |---|---|---|---|---|
//! | 0 | 32 | core [`Header`](multiproc_core::Header): magic `MPQUEUE\0`, [`VERSION`], size | creator | published last, `Release` |
//! | 128 | 128 | [`Config`]: ring length, item bound, message limit, kind | creator | before the header |
//! | 256 | 128 | [`ProducerLine`]: producer lock owner, cached head, fragment state, committed flag, copy of tail, [`Bias`] | producer-lock holder | the lock |
//! | 384 | 128 | [`WordLine`] tail: `count << 32 \| offset`, and the producer's CPU | producer-lock holder | `Release` store publishes records |
//! | 512 | 128 | [`ConsumerLine`]: consumer lock owner, cached tail, read state, [`Bias`] | consumer-lock holder | the lock |
//! | 640 | 128 | [`WordLine`] head: `count << 32 \| offset`, and the consumer's CPU | consumer-lock holder | `Release` store frees bytes |
//! | 768 | 128 | [`WaitLine`]: futex words (bit 0 = "someone sleeps"), closed flags | anyone | `SeqCst` RMW; light/heavy fence pairs with head, tail and lock words |
//! | 896 | 128 | [`JoinLine`]: `task_done` counter, join futex word | consumers | `SeqCst` |
//! | 1024 | 1024 | [`BellBoard`]: doorbells of async waiters, each armed for some of the futex words | async waiters; notifiers free dead ones | `SeqCst`; see `multiproc_core::doorbell` |
//! | 4096 | ring length | the ring of records | see `ring/mod.rs` | |
//!
//! 128-byte lines keep the producer's and the consumer's hot words apart even
//! with adjacent-line prefetching; the figure is part of the layout version.
#![allow(unsafe_code)]

use multiproc_core::doorbell::BellBoard;
use multiproc_core::segment::SharedSafe;
use std::mem::offset_of;
use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::wake::Word;

/// Magic of a queue segment.
pub(crate) const MAGIC: [u8; 8] = *b"MPQUEUE\0";
/// Layout version; bump on any change in this file or in the record format.
pub(crate) const VERSION: u32 = 7;
/// Where the ring starts: page aligned, so record offsets are addresses'
/// alignment too.
pub(crate) const RING_OFFSET: usize = 4096;
/// Alignment of every record, and size of a record header.
pub(crate) const REC_ALIGN: u32 = 16;
/// Smallest ring accepted (one page).
pub(crate) const MIN_RING: usize = 4096;
/// Largest ring: offsets are 32-bit in the head and tail words.
pub(crate) const MAX_RING: usize = 1 << 31;

/// Immutable after creation: what the queue was made with.
#[repr(C, align(128))]
pub(crate) struct Config {
    /// Ring length in bytes: a multiple of [`REC_ALIGN`], `MIN_RING..=MAX_RING`.
    pub ring_len: AtomicU64,
    /// Item bound (Python's `maxsize`); 0 = none.
    pub maxsize: AtomicU64,
    /// Largest message accepted, in bytes.
    pub max_message: AtomicU64,
    /// Which handle type made it ([`crate::ring::Kind`]).
    pub kind: AtomicU32,
    /// Behaviour switches: [`NO_PACING`]; other bits are invalid.
    pub flags: AtomicU32,
}

/// [`Config::flags`]: consumers never wait for the producers to get ahead
/// (see `PACE` in `ring/consumer.rs`).
pub(crate) const NO_PACING: u32 = 1;

/// The producer side, touched only by the producer-lock holder (and read by
/// consumers waiting for the fragments of a message).
#[repr(C, align(128))]
pub(crate) struct ProducerLine {
    /// Producer lock: packed [`ThreadIdentity`](multiproc_core::ThreadIdentity)
    /// of the holder, 0 = free.
    pub owner: AtomicU64,
    /// A head word seen earlier (never ahead of the real head).
    pub cached_head: AtomicU64,
    /// `IDLE` or `FRAGMENTING` (see `ring/producer.rs`).
    pub state: AtomicU32,
    /// 1 while the holder writes a message it may no longer fail (the rest
    /// of a large `put_with`, see `Ring::put_with`): a close does not wait
    /// for it, and it seals the close itself when done.
    pub committed: AtomicU32,
    /// The producers' copy of the tail word, stored right after it. Reading
    /// tail from its own line would miss whenever a consumer had just
    /// polled it; this line stays with the producers.
    pub tail: AtomicU64,
    /// The producer lock's bias.
    pub bias: Bias,
}

/// The consumer side, touched only by the consumer-lock holder.
#[repr(C, align(128))]
pub(crate) struct ConsumerLine {
    /// Consumer lock owner, as [`ProducerLine::owner`].
    pub owner: AtomicU64,
    /// A tail word seen earlier (never behind the real head).
    pub cached_tail: AtomicU64,
    /// `IDLE`, `ASSEMBLING`, `SKIPPING` or `GUARD` (see `ring/consumer.rs`).
    pub state: AtomicU32,
    /// In `GUARD`: offset of the record lent out in place.
    pub guard_pos: AtomicU32,
    /// The consumer lock's bias.
    pub bias: Bias,
}

/// How many threads can hold a lock's bias in turn before one of them
/// lets its slot go (see `bias.rs`).
pub(crate) const BIAS_SLOTS: usize = 4;

/// A lock's bias: which thread may enter without a locked instruction, and
/// what decides when to grant that (see `bias.rs`). Beside the lock's owner
/// word, on the line its holder writes anyway.
#[repr(C)]
pub(crate) struct Bias {
    /// First, so that the first slot shares the 64-byte line of the owner
    /// word.
    pub slots: [BiasSlot; BIAS_SLOTS],
    /// Slot index + 1 of the thread the lock is biased to; 0 = none; bit
    /// 31 ([`REVOKING`](crate::bias::REVOKING)) set while a new holder of
    /// the owner word waits for that thread to step out. Changed only by
    /// whoever holds the owner word.
    pub token: AtomicU32,
    /// How many times in a row one thread must take the lock before it is
    /// granted the bias (0 = the default); grows when biases are revoked
    /// early.
    pub grant_after: AtomicU32,
    /// Thread identity of the thread that took the lock last.
    pub streak_owner: AtomicU64,
    /// Its thread id.
    pub streak_tid: AtomicU32,
    /// How many times in a row it took the lock.
    pub streak: AtomicU32,
    /// The slot's `busy` counter when the bias was granted.
    pub granted_at: AtomicU32,
    _reserved: AtomicU32,
}

/// One thread's entry record for a biased lock.
#[repr(C)]
pub(crate) struct BiasSlot {
    /// Thread identity of the thread the slot belongs to; 0 = free.
    pub owner: AtomicU64,
    /// Its kernel thread id.
    pub tid: AtomicU32,
    /// Written only by that thread: odd while it is inside the lock by the
    /// bias, even otherwise; counts its entries.
    pub busy: AtomicU32,
}

/// One hot word alone on its line (head or tail), and a hint beside it.
#[repr(C, align(128))]
pub(crate) struct WordLine {
    pub word: AtomicU64,
    /// The CPU (+ 1; 0 = none yet) the writer of `word` ran on when it last
    /// began writing a large record (tail) or took one (head): a waiter on
    /// the other side spins only while this differs from its own CPU (see
    /// `ring/mod.rs`, "Large records"). Any value is safe.
    pub cpu: AtomicU32,
}

/// Futex words. Bit 0 of each says "a waiter sleeps (or is about to)"; the
/// rest is a sequence bumped on every wake-up, so a sleeper that registered
/// and then re-checked cannot miss it.
#[repr(C, align(128))]
pub(crate) struct WaitLine {
    pub prod_lock: AtomicU32,
    pub cons_lock: AtomicU32,
    /// Records were published.
    pub data: AtomicU32,
    /// Bytes or item slots were freed.
    pub space: AtomicU32,
    /// `CLOSING | SEALED` bits (see `ring/mod.rs`).
    pub closed: AtomicU32,
}

/// `JoinableQueue` accounting: unfinished = tail count − `done`.
#[repr(C, align(128))]
pub(crate) struct JoinLine {
    pub done: AtomicU32,
    pub join: AtomicU32,
}

/// Everything before the ring.
#[repr(C)]
pub(crate) struct Control {
    /// The core header lives in the first 32 bytes; written through
    /// `Segment::publish_header`, never through this field.
    _header: [AtomicU64; 16],
    pub config: Config,
    pub prod: ProducerLine,
    pub tail: WordLine,
    pub cons: ConsumerLine,
    pub head: WordLine,
    pub wait: WaitLine,
    pub join: JoinLine,
    /// Doorbells of async waiters (see `ready.rs`).
    pub bells: BellBoard,
}

impl Control {
    /// `futex`, one of this control block's futex words, with the doorbells
    /// armed for it (`bell` is its bit in [`crate::wake::bell`]).
    #[inline]
    pub(crate) fn word<'a>(&'a self, futex: &'a AtomicU32, bell: u32) -> Word<'a> {
        Word {
            futex,
            bells: &self.bells,
            bell,
        }
    }
}

const _: () = {
    assert!(offset_of!(Control, config) == 128);
    assert!(offset_of!(Control, prod) == 256);
    assert!(offset_of!(Control, tail) == 384);
    assert!(offset_of!(Control, cons) == 512);
    assert!(offset_of!(Control, head) == 640);
    assert!(offset_of!(Control, wait) == 768);
    assert!(offset_of!(Control, join) == 896);
    assert!(size_of::<ProducerLine>() == 128);
    assert!(size_of::<ConsumerLine>() == 128);
    assert!(offset_of!(Control, bells) == 1024);
    assert!(size_of::<Control>() == 2048);
    assert!(size_of::<Control>() <= RING_OFFSET);
    assert!(align_of::<Control>() == 128);
};

// SAFETY: `Control` and its lines are `repr(C)` structs of integer atomics
// (and arrays of them): valid for every bit pattern, mutated only
// atomically, no pointers or descriptors, alignment 128 <= 4096, no Drop.
unsafe impl SharedSafe for Control {}

/// Packs a head or tail word: message count in the high half, byte offset in
/// the low half, so both change in one atomic store (a crash cannot separate
/// them).
#[inline]
pub(crate) const fn pack(count: u32, offset: u32) -> u64 {
    ((count as u64) << 32) | offset as u64
}

/// Unpacks [`pack`]: `(count, offset)`.
#[inline]
pub(crate) const fn unpack(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}
