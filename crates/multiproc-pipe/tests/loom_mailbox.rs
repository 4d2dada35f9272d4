//! A loom model of the lane's mailbox (`src/lane/mailbox.rs`): small
//! messages left in shared memory for a receiver that spins, the socket
//! for everything else and for doorbells, with a sender that may stop for
//! ever at any step.
//!
//! Not part of the normal test run (loom needs `--cfg loom`; without it
//! this file compiles to nothing). `.ci/run` runs it with the lane's model:
//!
//! ```text
//! CARGO_TARGET_DIR=target/loom RUSTFLAGS="--cfg loom" \
//!     cargo test -p multiproc-pipe --test loom_mailbox --release
//! ```
//!
//! # What is modelled
//!
//! | model | crate |
//! |---|---|
//! | [`Shared::tail`], [`Shared::head`], [`Shared::listening`], [`Shared::lock`] | `mail_tail`, `mail_head`, `listening`, `mail_lock` |
//! | [`Shared::cells`]: [`SLOTS`] records of one cell | the mailbox |
//! | [`Shared::socket`]: first in, first out; whether it holds anything is what `SIOCOUTQ` reports | the stream socket |
//! | [`send`] | `Connection::post` and `Lane::post` (a small message), else the frame written to the socket |
//! | [`receive`] | `Os::read_between_frames` and `Os::read_before_mail` of a blocking receive that spins (one look per spin), and the frames buffered by a read delivered before the next read |
//!
//! A party's steps are the points before each access to the shared words,
//! the cells and the socket. A sender that runs out of steps returns at
//! once, as a process killed there, and the kernel closes its socket.
//!
//! # Checked, under every interleaving
//!
//! - nothing torn: loom reports a record written while it is read;
//! - nothing lost, nothing twice, in order: the receiver gets messages
//!   `0, 1, …` with no gap, every message whose send returned among them;
//! - nobody waits for ever: a receiver that sleeps on the socket while a
//!   record waits for it is woken by a doorbell, not only by the end of
//!   the stream (when the sender lives: a dying one may leave a record
//!   it had no time to ring for, found at the end of the stream).
//!
//! Three more tests plant a bug and expect the model to fail: a post
//! without its fence before it looks for a sleeping receiver, mail put
//! after the bytes a read brought instead of before, and a read without
//! pausing the listening first.
#![allow(unexpected_cfgs)]
#![cfg(loom)]
// The mailbox's cells are loom `UnsafeCell`s, read and written through
// raw pointers.
#![allow(unsafe_code)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use loom::thread;

mod loom_common;
use loom_common::{Steps, Stream, builder};

/// Records the model's mailbox holds.
const SLOTS: u64 = 2;

const DEAF: u32 = 0;
const LISTENS: u32 = 1;
const READS: u32 = 2;

/// What travels through the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Item {
    Frame(u64),
    Doorbell,
}

struct Shared {
    tail: AtomicU64,
    head: AtomicU64,
    listening: AtomicU32,
    lock: AtomicU32,
    cells: [UnsafeCell<u64>; SLOTS as usize],
    socket: Stream<Item>,
}

impl Shared {
    fn new() -> Self {
        Self {
            tail: AtomicU64::new(0),
            head: AtomicU64::new(0),
            listening: AtomicU32::new(DEAF),
            lock: AtomicU32::new(0),
            cells: std::array::from_fn(|_| UnsafeCell::new(u64::MAX)),
            socket: Stream::new(),
        }
    }
}

/// A bug planted on purpose, to show the model finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seeded {
    None,
    /// `Lane::post` without the fence before its look at `listening`.
    NoFenceAfterPost,
    /// `take_mail_before` puts the mail after the bytes read.
    MailAfterRead,
    /// The spinning receiver reads the socket while still listening.
    NoPause,
}

/// Sends message `id`: a post to the mailbox when `small` and the
/// protocol allows it, else a frame on the socket. `false`: died.
fn send(shared: &Shared, steps: &mut Steps, id: u64, small: bool, seeded: Seeded) -> bool {
    macro_rules! step {
        () => {
            if !steps.step() {
                return false;
            }
        };
    }
    if small {
        step!();
        // `listens_soon`: a receiver that reads counts as not listening
        // (waiting for it only delays the same choice).
        if shared.listening.load(Ordering::Relaxed) == LISTENS {
            step!();
            if shared
                .lock
                .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                step!();
                let mut posted = false;
                if shared.socket.is_empty() {
                    step!();
                    fence(Ordering::SeqCst);
                    if shared.listening.load(Ordering::Relaxed) == LISTENS {
                        let tail = shared.tail.load(Ordering::Relaxed);
                        let head = shared.head.load(Ordering::Acquire);
                        if tail - head < SLOTS {
                            step!();
                            shared.cells[(tail % SLOTS) as usize].with_mut(|cell| {
                                // SAFETY: loom checks that no read of this
                                // cell races this write (the property
                                // under test).
                                unsafe { *cell = id }
                            });
                            step!();
                            shared.tail.store(tail + 1, Ordering::Release);
                            posted = true;
                        }
                    }
                }
                step!();
                shared.lock.store(0, Ordering::Release);
                if posted {
                    step!();
                    if seeded != Seeded::NoFenceAfterPost {
                        fence(Ordering::SeqCst);
                    }
                    if shared.listening.load(Ordering::Relaxed) == DEAF {
                        step!();
                        shared.socket.push(Item::Doorbell);
                    }
                    return true;
                }
            }
        }
    }
    step!();
    shared.socket.push(Item::Frame(id));
    true
}

/// `Lane::take_mail`: every record there, in order. `None`: died.
fn take_mail(shared: &Shared, steps: &mut Steps) -> Option<Vec<u64>> {
    let head = shared.head.load(Ordering::Relaxed);
    let tail = shared.tail.load(Ordering::Acquire);
    let mut mail = Vec::new();
    for position in head..tail {
        if !steps.step() {
            return None;
        }
        mail.push(shared.cells[(position % SLOTS) as usize].with(|cell| {
            // SAFETY: loom checks that no write of this cell races this
            // read.
            unsafe { *cell }
        }));
    }
    if tail != head {
        if !steps.step() {
            return None;
        }
        shared.head.store(tail, Ordering::Release);
    }
    Some(mail)
}

/// A receiver whose every receive is a blocking one that spins (one look
/// per spin here), until the end of the stream; returns the messages in
/// the order delivered.
fn receive(shared: &Shared, seeded: Seeded, sender_may_die: bool) -> Vec<u64> {
    let mut steps = Steps::new(None);
    let mut got = Vec::new();
    let frames = |items: Vec<Item>, got: &mut Vec<u64>| {
        got.extend(items.into_iter().filter_map(|item| match item {
            Item::Frame(id) => Some(id),
            Item::Doorbell => None,
        }));
    };
    // After a read: the mail found goes in front of the bytes read.
    let after_read = |items: Option<Vec<Item>>, steps: &mut Steps, got: &mut Vec<u64>| {
        let mail = take_mail(shared, steps).unwrap();
        let eof = items.is_none();
        let items = items.unwrap_or_default();
        if seeded == Seeded::MailAfterRead {
            frames(items, got);
            got.extend(&mail);
        } else {
            got.extend(&mail);
            frames(items, got);
        }
        eof && mail.is_empty()
    };
    loop {
        // Between frames: mail first.
        let mail = take_mail(shared, &mut steps).unwrap();
        if !mail.is_empty() {
            got.extend(mail);
            continue;
        }
        // The spin: listen, look at the mailbox, then at the socket.
        shared.listening.store(LISTENS, Ordering::Relaxed);
        let mail = take_mail(shared, &mut steps).unwrap();
        if !mail.is_empty() {
            got.extend(mail);
            continue;
        }
        if shared.socket.readable_now() {
            if seeded != Seeded::NoPause {
                shared.listening.store(READS, Ordering::Relaxed);
                fence(Ordering::SeqCst);
            }
            let items = shared.socket.read();
            // A scheduling point that costs no preemption: a sender may
            // post between the read and the look at the mailbox.
            thread::yield_now();
            let done = after_read(items, &mut steps, &mut got);
            shared.listening.store(LISTENS, Ordering::Relaxed);
            if done {
                return got;
            }
            continue;
        }
        // Nothing: stop listening, look once more, sleep on the socket.
        shared.listening.store(DEAF, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let mail = take_mail(shared, &mut steps).unwrap();
        if !mail.is_empty() {
            got.extend(mail);
            continue;
        }
        let items = shared.socket.read();
        thread::yield_now();
        if items.is_none() && !sender_may_die {
            // Woken by the end of the stream, not by a doorbell: a record
            // waiting now was posted without one, and a sender that stayed
            // would have left this receiver asleep for ever.
            let waiting =
                shared.tail.load(Ordering::Acquire) != shared.head.load(Ordering::Relaxed);
            assert!(
                !waiting,
                "a record posted to a sleeping receiver without a doorbell"
            );
        }
        let done = after_read(items, &mut steps, &mut got);
        shared.listening.store(LISTENS, Ordering::Relaxed);
        if done {
            return got;
        }
    }
}

/// Runs the sender's `pattern` (`true`: a small message) against the
/// receiver, the sender killed before its step `killed` (if any); returns
/// how many steps the sender took in the first interleaving.
fn run(pattern: &'static [bool], killed: Option<usize>, seeded: Seeded) -> usize {
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let taken_out = std::sync::Arc::clone(&taken);
    builder().check(move || {
        let shared = Arc::new(Shared::new());
        let sender = {
            let shared = Arc::clone(&shared);
            let taken = std::sync::Arc::clone(&taken);
            thread::spawn(move || {
                let mut steps = Steps::new(killed);
                let mut sent = 0;
                for (id, &small) in pattern.iter().enumerate() {
                    if !send(&shared, &mut steps, id as u64, small, seeded) {
                        break;
                    }
                    sent += 1;
                }
                taken.fetch_max(steps.taken, std::sync::atomic::Ordering::Relaxed);
                // Dead or done, the kernel closes the socket.
                shared.socket.close();
                sent
            })
        };
        let got = receive(&shared, seeded, killed.is_some());
        let sent = sender.join().unwrap();
        let expected: Vec<u64> = (0..got.len() as u64).collect();
        assert_eq!(got, expected, "lost, doubled or reordered");
        assert!(got.len() >= sent, "a message whose send returned was lost");
        if killed.is_none() {
            assert_eq!(got.len(), pattern.len());
        }
    });
    taken_out.load(std::sync::atomic::Ordering::Relaxed)
}

/// Runs `pattern` with the sender living, then killed before each step
/// it reaches.
fn every_death(pattern: &'static [bool]) {
    run(pattern, None, Seeded::None);
    let mut step = 0;
    loop {
        let taken = run(pattern, Some(step), Seeded::None);
        if taken <= step {
            break;
        }
        step += 1;
    }
}

/// Three small messages: the mailbox (of two) fills, the third waits or
/// takes the socket.
const SMALL: &[bool] = &[true, true, true];
/// A message that must take the socket between two small ones.
const MIXED: &[bool] = &[true, false, true];

#[test]
fn small_messages_arrive_whole_once_and_in_order() {
    every_death(SMALL);
}

#[test]
fn mail_and_frames_keep_the_order_they_were_sent_in() {
    every_death(MIXED);
}

#[test]
#[should_panic(expected = "without a doorbell")]
fn a_post_without_its_fence_loses_a_wake_up() {
    run(&[true], None, Seeded::NoFenceAfterPost);
}

#[test]
#[should_panic(expected = "reordered")]
fn mail_after_the_bytes_read_is_out_of_order() {
    run(MIXED, None, Seeded::MailAfterRead);
}

#[test]
#[should_panic(expected = "reordered")]
fn reading_while_listening_is_out_of_order() {
    run(&[false, true], None, Seeded::NoPause);
}
