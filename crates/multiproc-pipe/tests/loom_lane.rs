//! A loom model of the shared-memory lane of a `Pipe::new` pair
//! (`src/lane.rs`): ring space handed from a sender to a receiver and back,
//! with a party that may stop for ever at any step.
//!
//! Not part of the normal test run (loom needs `--cfg loom`; without it
//! this file compiles to nothing). `.ci/run` runs it with a target
//! directory of its own:
//!
//! ```text
//! CARGO_TARGET_DIR=target/loom RUSTFLAGS="--cfg loom" \
//!     cargo test -p multiproc-pipe --test loom_lane --release
//! ```
//!
//! About ten seconds on two cores with the default preemption bound of 3
//! (`LOOM_MAX_PREEMPTIONS` changes it).
//!
//! # What is modelled
//!
//! | model | crate |
//! |---|---|
//! | [`Shared::head`], [`Shared::tail`], [`Shared::reader`] | the control words of one direction (`lane.rs`) |
//! | [`Shared::ring`]: [`RING`] cells, one per unit of payload | the ring's bytes |
//! | [`place`] | `lane::place`, with a ring of [`RING`] units |
//! | the `tail` compare-and-swap in [`put`] | `Lane::reserve` moving `tail` over the bytes skipped when a payload starts a lap of an empty ring |
//! | [`put`] | `Lane::reserve` and the write into the span, then `Lane::fill`, `Lane::seal` or `Lane::abandon` ([`Reserve`]) and the frame written after it (`Connection::write_frame`, `Connection::encode_into_lane`) |
//! | [`take`] | `Lane::take` after the token was read (`RecvBuf::consume_token`), and `Lane::borrow`, whose loan hands the space back when dropped, after the decoder read it |
//! | [`Shared::socket`] | the stream socket: first in, first out; a message pushed before the sender dies stays readable, then end of file |
//! | [`Shared::leave`] | `Lane::leave` (`Connection::into_fd`) |
//!
//! A payload of message `m` fills its cells with `m`; the receiver checks
//! every cell it copies out. The cells are `loom::cell::UnsafeCell`s, so
//! loom reports any write to a cell that is not ordered after the
//! receiver's last read of it ("causality violation"): space handed back
//! too early.
//!
//! # Parties and death
//!
//! A party's steps are the points before each store, read-modify-write and
//! fence it makes on the shared words, before each cell it writes or reads,
//! and before each message it pushes or pops. A party that runs out of
//! steps returns at once, as a process killed there; a dead sender's
//! socket is closed (the kernel does that), a dead receiver reads no more.
//! Every scenario is explored with nobody killed and then once for every
//! step the named party reaches.
//!
//! # Checked, under every interleaving
//!
//! - nothing torn: every message the receiver takes holds its own number in
//!   every cell, and no cell is written while it is being read;
//! - nothing lost, nothing twice, in order: the receiver gets exactly the
//!   messages whose token (or inline frame) was pushed, in push order, and
//!   all of them when the sender lives;
//! - nobody waits for a dead party: the sender never waits (a full ring
//!   sends inline), and a receiver whose sender died sees end of file (a
//!   thread left waiting makes loom fail with a deadlock);
//! - leaving: once `leave` said no token is on its way, none arrives.
//!
//! Three more tests plant a bug and expect the model to fail: space handed
//! back before the copy out, `leave` without its fence, and a span shrunk
//! past the payload written into it.
#![allow(unexpected_cfgs)]
#![cfg(loom)]
// The ring cells are loom `UnsafeCell`s, read and written through raw
// pointers.
#![allow(unsafe_code)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use loom::thread;

mod loom_common;
use loom_common::{Steps, Stream, builder};

/// Units in the model's ring (the crate's `RING` bytes).
const RING: u64 = 4;
/// Largest payload, in units: half the ring, as in the crate.
const MAX_PAYLOAD: u64 = RING / 2;

const NO_READER: u32 = 0;
const READING: u32 = 1;
const GONE: u32 = 2;

/// What travels through the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Msg {
    /// A token for message `id`: its `len` units end at `end`.
    Token { id: u64, end: u64, len: u64 },
    /// Message `id` in the stream itself.
    Inline { id: u64 },
}

impl Msg {
    fn id(self) -> u64 {
        match self {
            Self::Token { id, .. } | Self::Inline { id } => id,
        }
    }
}

struct Shared {
    head: AtomicU64,
    tail: AtomicU64,
    reader: AtomicU32,
    ring: [UnsafeCell<u64>; RING as usize],
    socket: Stream<Msg>,
}

impl Shared {
    fn new() -> Self {
        Self {
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            reader: AtomicU32::new(NO_READER),
            ring: std::array::from_fn(|_| UnsafeCell::new(u64::MAX)),
            socket: Stream::new(),
        }
    }

    /// `Lane::leave`: whether a token may still be on its way.
    fn leave(&self, seeded: Seeded) -> bool {
        self.reader.store(GONE, Ordering::Relaxed);
        if seeded != Seeded::LeaveWithoutFence {
            fence(Ordering::SeqCst);
        }
        self.head.load(Ordering::Relaxed) != self.tail.load(Ordering::Relaxed)
    }
}

/// `lane::place` with a ring of [`RING`] units.
fn place(head: u64, tail: u64, len: u64) -> Option<(u64, u64)> {
    let used = head.checked_sub(tail).filter(|&used| used <= RING)?;
    let next_lap = head.checked_next_multiple_of(RING)?;
    let start = if used == 0 || head % RING + len > RING {
        next_lap
    } else {
        head
    };
    let end = start.checked_add(len)?;
    (used == 0 || end - tail <= RING).then_some((start, end))
}

/// `Lane::reserve`, the write into the span and what follows it, and the
/// write of the frame: message `id` of `len` units through the ring when
/// it can, else inline. `false`: died.
fn put(shared: &Shared, steps: &mut Steps, id: u64, len: u64, scenario: Scenario) -> bool {
    let reserved = match scenario.reserve {
        Reserve::Exact => len,
        Reserve::Longer => (len + 1).min(MAX_PAYLOAD).max(len),
        Reserve::Shorter => len.saturating_sub(1).max(1),
    };
    let through_ring = reserved <= MAX_PAYLOAD && shared.reader.load(Ordering::Relaxed) == READING;
    let placed = if through_ring {
        loop {
            let from = shared.head.load(Ordering::Relaxed);
            let tail = shared.tail.load(Ordering::Acquire);
            let Some((start, end)) = place(from, tail, reserved) else {
                break None;
            };
            if !steps.step() {
                return false;
            }
            if shared
                .head
                .compare_exchange(from, end, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                if from == tail && start != from {
                    if !steps.step() {
                        return false;
                    }
                    let _ = shared.tail.compare_exchange(
                        tail,
                        start,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    );
                }
                break Some((start, end));
            }
        }
    } else {
        None
    };
    let msg = match placed {
        Some((start, end)) => {
            if !steps.step() {
                return false;
            }
            fence(Ordering::SeqCst);
            if shared.reader.load(Ordering::Relaxed) != READING {
                Msg::Inline { id }
            } else {
                let written = start + len.min(reserved);
                for position in start..written {
                    if !steps.step() {
                        return false;
                    }
                    shared.ring[(position % RING) as usize].with_mut(|cell| {
                        // SAFETY: loom checks that no read of this cell
                        // races this write (the property under test).
                        unsafe { *cell = id }
                    });
                }
                if reserved != len && !steps.step() {
                    return false;
                }
                if reserved < len {
                    // `Lane::abandon`: the payload outgrew its span and
                    // goes inline; the span goes back unless someone
                    // reserved past it.
                    let _ = shared.head.compare_exchange(
                        end,
                        start,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    Msg::Inline { id }
                } else {
                    // `Lane::seal`: what the payload did not use goes back
                    // the same way.
                    if reserved > len {
                        let to = if scenario.seeded == Seeded::ShrinkPastPayload {
                            start
                        } else {
                            written
                        };
                        let _ = shared.head.compare_exchange(
                            end,
                            to,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                    Msg::Token {
                        id,
                        end: written,
                        len,
                    }
                }
            }
        }
        None => Msg::Inline { id },
    };
    if !steps.step() {
        return false;
    }
    shared.socket.push(msg);
    true
}

/// `Lane::take`: copies message `id` out of the ring and hands its space
/// back. `false`: died.
fn take(shared: &Shared, steps: &mut Steps, msg: (u64, u64, u64), seeded: Seeded) -> bool {
    let (id, end, len) = msg;
    let start = end - len;
    if seeded == Seeded::HandBackFirst {
        shared.tail.store(end, Ordering::Release);
    }
    assert!(
        len <= MAX_PAYLOAD && start % RING + len <= RING,
        "token outside the ring"
    );
    for position in start..end {
        if !steps.step() {
            return false;
        }
        let got = shared.ring[(position % RING) as usize].with(|cell| {
            // SAFETY: loom checks that no write of this cell races this read.
            unsafe { *cell }
        });
        assert_eq!(got, id, "message {id} torn at position {position}");
    }
    if !steps.step() {
        return false;
    }
    shared.tail.store(end, Ordering::Release);
    true
}

/// One scenario: the sender sends messages of `sizes` units; the
/// receiver announces itself, takes every message, and (with
/// `leave_after = Some(n)`) leaves the lane after `n` messages.
#[derive(Clone, Copy)]
struct Scenario {
    sizes: &'static [u64],
    leave_after: Option<usize>,
    seeded: Seeded,
    reserve: Reserve,
}

/// How much ring space the sender reserves for a payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reserve {
    /// Its length (`Lane::fill`: a copy).
    Exact,
    /// A unit more, and what it did not use given back after the write
    /// (`Lane::seal`: a value encoded in place that came out shorter than
    /// the span reserved from the one before).
    Longer,
    /// A unit less (but at least one): the write fills it, then the span is
    /// given back and the payload goes inline (`Lane::abandon`: a value
    /// that outgrew its span).
    Shorter,
}

impl Scenario {
    /// `sizes` sent with `reserve`, the receiver staying, no planted bug.
    fn new(sizes: &'static [u64], reserve: Reserve) -> Self {
        Self {
            sizes,
            leave_after: None,
            seeded: Seeded::None,
            reserve,
        }
    }
}

/// A bug planted on purpose, to show the model finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seeded {
    /// The protocol as the crate has it.
    None,
    /// The receiver hands the space back before it copies out.
    HandBackFirst,
    /// `leave` without its fence.
    LeaveWithoutFence,
    /// `seal` gives back the payload's space too, not only what it did
    /// not use.
    ShrinkPastPayload,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Killed {
    Nobody,
    Sender(usize),
    Receiver(usize),
}

/// Runs `scenario` under loom with `killed`; returns how many steps the
/// named party took in the first interleaving (to know when to stop
/// killing it one step later).
fn run(scenario: Scenario, killed: Killed) -> usize {
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let taken_out = std::sync::Arc::clone(&taken);
    builder().check(move || {
        let shared = Arc::new(Shared::new());
        let sender = {
            let shared = Arc::clone(&shared);
            let taken = std::sync::Arc::clone(&taken);
            thread::spawn(move || {
                let mut steps = Steps::new(match killed {
                    Killed::Sender(n) => Some(n),
                    _ => None,
                });
                let mut alive = true;
                for (id, &len) in scenario.sizes.iter().enumerate() {
                    if !put(&shared, &mut steps, id as u64, len, scenario) {
                        alive = false;
                        break;
                    }
                }
                if matches!(killed, Killed::Sender(_)) {
                    taken.fetch_max(steps.taken, std::sync::atomic::Ordering::Relaxed);
                }
                // Dead or done, the kernel closes the socket.
                shared.socket.close();
                alive
            })
        };
        let mut steps = Steps::new(match killed {
            Killed::Receiver(n) => Some(n),
            _ => None,
        });
        let mut got = Vec::new();
        let mut left = None;
        let receiver_alive = 'receive: {
            if !steps.step() {
                break 'receive false;
            }
            let _ = shared.reader.compare_exchange(
                NO_READER,
                READING,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            loop {
                if left.is_none() && scenario.leave_after == Some(got.len()) {
                    if !steps.step() {
                        break 'receive false;
                    }
                    left = Some(shared.leave(scenario.seeded));
                }
                if !steps.step() {
                    break 'receive false;
                }
                let Some(msg) = shared.socket.pop() else {
                    break 'receive true;
                };
                match msg {
                    Msg::Token { id, end, len } => {
                        assert_ne!(
                            left,
                            Some(false),
                            "a token after leave said none was coming"
                        );
                        if !take(&shared, &mut steps, (id, end, len), scenario.seeded) {
                            break 'receive false;
                        }
                    }
                    Msg::Inline { .. } => {}
                }
                got.push(msg.id());
            }
        };
        if matches!(killed, Killed::Receiver(_)) {
            taken.fetch_max(steps.taken, std::sync::atomic::Ordering::Relaxed);
        }
        let sender_alive = sender.join().unwrap();
        let pushed: Vec<u64> = shared.socket.pushed().iter().map(|msg| msg.id()).collect();
        if receiver_alive {
            assert_eq!(got, pushed, "lost, doubled or reordered");
            if sender_alive {
                assert_eq!(got.len(), scenario.sizes.len());
            }
        } else {
            assert!(pushed.starts_with(&got), "took what was never sent");
        }
        assert!(!matches!(killed, Killed::Nobody) || (sender_alive && receiver_alive));
    });
    taken_out.load(std::sync::atomic::Ordering::Relaxed)
}

/// Runs `scenario` with nobody killed, then with `who` killed before each
/// step it reaches.
fn every_death(scenario: Scenario, who: fn(usize) -> Killed) {
    run(scenario, Killed::Nobody);
    let mut step = 0;
    loop {
        let taken = run(scenario, who(step));
        if taken <= step {
            break;
        }
        step += 1;
    }
}

/// Sizes that fill the ring, wrap it and find it empty again.
const SIZES: &[u64] = &[2, 1, 2, 2];

#[test]
fn a_sender_killed_at_every_step() {
    every_death(Scenario::new(SIZES, Reserve::Exact), Killed::Sender);
}

#[test]
fn a_receiver_killed_at_every_step() {
    every_death(Scenario::new(SIZES, Reserve::Exact), Killed::Receiver);
}

#[test]
fn a_receiver_that_leaves_gets_no_token_it_was_not_warned_of() {
    for leave_after in 0..=2 {
        every_death(
            Scenario {
                leave_after: Some(leave_after),
                ..Scenario::new(&[2, 1, 2], Reserve::Exact)
            },
            Killed::Sender,
        );
    }
}

#[test]
#[should_panic(expected = "Causality violation")]
fn seeded_bug_space_handed_back_before_the_copy_is_caught() {
    run(
        Scenario {
            seeded: Seeded::HandBackFirst,
            ..Scenario::new(SIZES, Reserve::Exact)
        },
        Killed::Nobody,
    );
}

#[test]
#[should_panic(expected = "a token after leave said none was coming")]
fn seeded_bug_leave_without_its_fence_is_caught() {
    run(
        Scenario {
            leave_after: Some(1),
            seeded: Seeded::LeaveWithoutFence,
            ..Scenario::new(&[2, 1, 2], Reserve::Exact)
        },
        Killed::Nobody,
    );
}

/// Sizes with payloads shorter than the most a span holds.
const SHORT_SIZES: &[u64] = &[1, 1, 2, 1];

#[test]
fn spans_longer_than_their_payloads_with_a_sender_killed_at_every_step() {
    every_death(Scenario::new(SHORT_SIZES, Reserve::Longer), Killed::Sender);
}

#[test]
fn spans_longer_than_their_payloads_with_a_receiver_killed_at_every_step() {
    every_death(
        Scenario::new(SHORT_SIZES, Reserve::Longer),
        Killed::Receiver,
    );
}

#[test]
fn spans_their_payloads_outgrow_with_a_sender_killed_at_every_step() {
    every_death(Scenario::new(SIZES, Reserve::Shorter), Killed::Sender);
}

#[test]
#[should_panic(expected = "torn")]
fn seeded_bug_a_span_shrunk_past_its_payload_is_caught() {
    run(
        Scenario {
            seeded: Seeded::ShrinkPastPayload,
            ..Scenario::new(SHORT_SIZES, Reserve::Longer)
        },
        Killed::Nobody,
    );
}
