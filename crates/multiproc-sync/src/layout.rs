//! What each primitive looks like in shared memory.
//!
//! Every object starts with the core [`Header`](multiproc_core::Header)
//! (magic, layout version, size, ready word), written by the creator after
//! it has initialised the fields below and checked by every process that
//! attaches. All fields are atomics, so each layout is valid for every bit
//! pattern: a corrupt segment yields wrong *values* (which the attach checks
//! and the state machines treat as errors or as dead owners), never
//! undefined behaviour. No field holds a pointer or a descriptor.
//!
//! Hot words start on their own 64-byte line (offset 64); the header and the
//! read-only parameters share the first line. This alignment is part of
//! [`LAYOUT_VERSION`].
//!
//! Locks, semaphores and events end with a [`BellBoard`] (offset 128,
//! 1 KiB): the doorbells of async waiters (see `ready.rs`), rung by the
//! notify paths only when a waiter is announced on the futex word. The
//! board makes these objects 64-byte aligned.
//!
//! # Safety
//!
//! The `unsafe impl SharedSafe` blocks below rely on every field being an
//! atomic integer (or an array of them) in a `#[repr(C)]` struct with no
//! padding that could matter: every bit pattern is a valid value and all
//! mutation goes through atomics.
#![allow(unsafe_code)]

use multiproc_core::Header;
use multiproc_core::doorbell::BellBoard;
use multiproc_core::segment::SharedSafe;
use std::mem::{align_of, offset_of, size_of};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64};

/// Layout version shared by all primitives of this crate; bumped whenever a
/// field moves. 2: the barrier gained its party slots. 3: locks,
/// semaphores and events gained a [`BellBoard`] at offset 128.
pub(crate) const LAYOUT_VERSION: u32 = 3;

/// The header slot at the start of every object (opaque here; written with
/// `Segment::publish_header` and read with `Segment::read_header`).
pub(crate) type HeaderSlot = [AtomicU64; 4];

/// The words of a robust lock (see [`raw_lock`](crate::raw_lock) for the
/// state table).
///
/// | offset | size | field | written by | ordering |
/// |---|---|---|---|---|
/// | 0 | 4 | `state`: owner tid + `WAITERS` bit (futex word) | acquirers, the owner, waiters | Acquire on lock, Release on unlock |
/// | 4 | 4 | `count`: recursion depth (RLock only) | the owner, while holding | Relaxed (guarded by the lock) |
/// | 8 | 8 | `owner`: owner thread identity (tid + start time) | the owner, right after locking | Release / Acquire, advisory |
#[repr(C)]
pub(crate) struct LockWords {
    pub(crate) state: AtomicU32,
    pub(crate) count: AtomicU32,
    pub(crate) owner: AtomicU64,
}

/// A `Lock` or `RLock` object (magic `MPLOCK\0\0` / `MPRLOCK\0`).
///
/// | offset | size | field | written by |
/// |---|---|---|---|
/// | 0 | 32 | header | creator, once |
/// | 32 | 32 | reserved, zero | — |
/// | 64 | 16 | [`LockWords`] | see there |
/// | 80 | 48 | reserved, zero | — |
/// | 128 | 1024 | `bells`: [`BellBoard`] of async acquirers, rung by an unlock that finds `WAITERS` set | async waiters, unlockers |
#[repr(C)]
pub(crate) struct LockLayout {
    pub(crate) header: HeaderSlot,
    pub(crate) reserved0: [AtomicU64; 4],
    pub(crate) words: LockWords,
    pub(crate) reserved1: [AtomicU64; 6],
    pub(crate) bells: BellBoard,
}

/// A `Semaphore` or `BoundedSemaphore` object (magic `MPSEMA\0\0`).
///
/// | offset | size | field | written by | ordering |
/// |---|---|---|---|---|
/// | 0 | 32 | header | creator, once | — |
/// | 32 | 4 | `bound`: highest value for a bounded semaphore, 0 = unbounded | creator, before publishing | read-only after |
/// | 36 | 28 | reserved, zero | — | — |
/// | 64 | 4 | `value` (futex word) | acquirers, releasers | Acquire on take, SeqCst on release |
/// | 68 | 4 | `waiters`: processes/threads about to sleep or sleeping | waiters | SeqCst (pairs with release) |
/// | 72 | 56 | reserved, zero | — | — |
/// | 128 | 1024 | `bells`: [`BellBoard`] of async acquirers (each counted in `waiters` while armed), rung by a release that finds `waiters` non-zero | async waiters, releasers | `SeqCst`; see `multiproc_core::doorbell` |
#[repr(C)]
pub(crate) struct SemaphoreLayout {
    pub(crate) header: HeaderSlot,
    pub(crate) bound: AtomicU32,
    pub(crate) reserved0: [AtomicU32; 7],
    pub(crate) value: AtomicU32,
    pub(crate) waiters: AtomicU32,
    pub(crate) reserved1: [AtomicU64; 7],
    pub(crate) bells: BellBoard,
}

/// An `Event` object (magic `MPEVENT\0`).
///
/// | offset | size | field | written by | ordering |
/// |---|---|---|---|---|
/// | 0 | 32 | header | creator, once | — |
/// | 32 | 32 | reserved, zero | — | — |
/// | 64 | 4 | `word`: generation << 1 \| set bit (futex word) | `set`, `clear` | SeqCst RMW / Acquire loads |
/// | 68 | 4 | `waiters` | waiters | SeqCst (pairs with `set`) |
/// | 72 | 56 | reserved, zero | — | — |
/// | 128 | 1024 | `bells`: [`BellBoard`] of async waiters (each counted in `waiters` while armed), rung by a `set` that finds `waiters` non-zero | async waiters, setters | `SeqCst`; see `multiproc_core::doorbell` |
#[repr(C)]
pub(crate) struct EventLayout {
    pub(crate) header: HeaderSlot,
    pub(crate) reserved0: [AtomicU64; 4],
    pub(crate) word: AtomicU32,
    pub(crate) waiters: AtomicU32,
    pub(crate) reserved1: [AtomicU64; 7],
    pub(crate) bells: BellBoard,
}

/// A `Condition`'s own words (magic `MPCOND\0\0`); its lock is a separate
/// `Lock`/`RLock` object.
///
/// | offset | size | field | written by | ordering |
/// |---|---|---|---|---|
/// | 0 | 32 | header | creator, once | — |
/// | 32 | 32 | reserved, zero | — | — |
/// | 64 | 4 | `seq`: bumped by every notify that hands out tokens (futex word) | notifiers | Release / Acquire |
/// | 68 | 4 | reserved, zero | — | — |
/// | 72 | 8 | `tokens`: registered waiters (high 32) and wake tokens (low 32) | waiters, notifiers | AcqRel CAS (see `condition::tokens`) |
/// | 80 | 48 | reserved, zero | — | — |
#[repr(C)]
pub(crate) struct ConditionLayout {
    pub(crate) header: HeaderSlot,
    pub(crate) reserved0: [AtomicU64; 4],
    pub(crate) seq: AtomicU32,
    pub(crate) reserved1: AtomicU32,
    pub(crate) tokens: AtomicU64,
    pub(crate) reserved2: [AtomicU64; 6],
}

/// How many parties a barrier can track, one [`PartySlot`] each (at most
/// `parties - 1` of them wait at once).
pub(crate) const BARRIER_SLOTS: usize = 256;

/// One waiting party of a barrier: who it is, so that the others can tell
/// when it dies. All zero = free. Written only under the barrier's internal
/// lock, which orders every access (Relaxed).
///
/// | offset | size | field | meaning |
/// |---|---|---|---|
/// | 0 | 4 | `tid` | kernel thread id of the waiting party |
/// | 4 | 4 | reserved, zero | — |
/// | 8 | 8 | `owner` | its identity (thread id + start time), 0 = free slot |
#[repr(C)]
pub(crate) struct PartySlot {
    pub(crate) tid: AtomicU32,
    pub(crate) reserved: AtomicU32,
    pub(crate) owner: AtomicU64,
}

/// A `Barrier` object (magic `MPBARR\0\0`). `state`, `count`, the slots
/// and the notifications on `seq` change only under the internal robust
/// lock.
///
/// | offset | size | field | written by | ordering |
/// |---|---|---|---|---|
/// | 0 | 32 | header | creator, once | — |
/// | 32 | 4 | `parties` (1..=[`BARRIER_SLOTS`]) | creator, before publishing | read-only after |
/// | 36 | 28 | reserved, zero | — | — |
/// | 64 | 16 | internal [`LockWords`] | see there | see there |
/// | 80 | 4 | `seq` (futex word) | notifiers, under the lock | Release / Acquire |
/// | 84 | 4 | `sleepers` | waiters, +1 under the lock | Relaxed under the lock |
/// | 88 | 4 | `state`: 0 filling, 1 draining, -1 resetting, -2 broken, -3 broken because a party died | under the lock | Relaxed (lock orders) |
/// | 92 | 4 | `count`: parties waiting in `wait` = occupied `slots` | under the lock | Relaxed (lock orders) |
/// | 96 | 32 | reserved, zero | — | — |
/// | 128 | 16 × 256 | `slots`: one [`PartySlot`] per party waiting in `wait` (not the arrival that trips it), first `parties` used | under the lock | Relaxed (lock orders) |
#[repr(C)]
pub(crate) struct BarrierLayout {
    pub(crate) header: HeaderSlot,
    pub(crate) parties: AtomicU32,
    pub(crate) reserved0: [AtomicU32; 7],
    pub(crate) lock: LockWords,
    pub(crate) seq: AtomicU32,
    pub(crate) sleepers: AtomicU32,
    pub(crate) state: AtomicI32,
    pub(crate) count: AtomicU32,
    pub(crate) reserved1: [AtomicU64; 4],
    pub(crate) slots: [PartySlot; BARRIER_SLOTS],
}

// SAFETY: repr(C) structs made only of atomic integers and arrays of them:
// valid for every bit pattern, mutated only atomically, no pointers or
// descriptors, alignment 8 (<= 4096), no Drop glue.
unsafe impl SharedSafe for LockWords {}
// SAFETY: as for `LockWords`, plus a `BellBoard`, itself `SharedSafe`
// (atomics only, alignment 64 <= 4096).
unsafe impl SharedSafe for LockLayout {}
// SAFETY: as for `LockLayout`.
unsafe impl SharedSafe for SemaphoreLayout {}
// SAFETY: as for `LockLayout`.
unsafe impl SharedSafe for EventLayout {}
// SAFETY: as for `LockWords`.
unsafe impl SharedSafe for ConditionLayout {}
// SAFETY: as for `LockWords`.
unsafe impl SharedSafe for PartySlot {}
// SAFETY: as for `LockWords`.
unsafe impl SharedSafe for BarrierLayout {}

const _: () = {
    assert!(size_of::<HeaderSlot>() == Header::SIZE);
    assert!(size_of::<LockWords>() == 16);
    assert!(size_of::<LockLayout>() == 1152);
    assert!(offset_of!(LockLayout, words) == 64);
    assert!(offset_of!(LockLayout, bells) == 128);
    assert!(align_of::<LockLayout>() == 64);
    assert!(size_of::<SemaphoreLayout>() == 1152);
    assert!(offset_of!(SemaphoreLayout, bound) == 32);
    assert!(offset_of!(SemaphoreLayout, value) == 64);
    assert!(offset_of!(SemaphoreLayout, waiters) == 68);
    assert!(offset_of!(SemaphoreLayout, bells) == 128);
    assert!(align_of::<SemaphoreLayout>() == 64);
    assert!(size_of::<EventLayout>() == 1152);
    assert!(offset_of!(EventLayout, word) == 64);
    assert!(offset_of!(EventLayout, waiters) == 68);
    assert!(offset_of!(EventLayout, bells) == 128);
    assert!(align_of::<EventLayout>() == 64);
    assert!(size_of::<ConditionLayout>() == 128);
    assert!(offset_of!(ConditionLayout, seq) == 64);
    assert!(offset_of!(ConditionLayout, tokens) == 72);
    assert!(size_of::<PartySlot>() == 16);
    assert!(offset_of!(PartySlot, tid) == 0);
    assert!(offset_of!(PartySlot, owner) == 8);
    assert!(size_of::<BarrierLayout>() == 128 + 16 * BARRIER_SLOTS);
    assert!(size_of::<BarrierLayout>() == 4224);
    assert!(offset_of!(BarrierLayout, parties) == 32);
    assert!(offset_of!(BarrierLayout, lock) == 64);
    assert!(offset_of!(BarrierLayout, seq) == 80);
    assert!(offset_of!(BarrierLayout, state) == 88);
    assert!(offset_of!(BarrierLayout, count) == 92);
    assert!(offset_of!(BarrierLayout, slots) == 128);
};
