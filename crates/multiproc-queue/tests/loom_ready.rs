//! A loom model of the doorbell wake-up protocol of async waiters
//! (`src/ready.rs`, `src/wake.rs`, core's `doorbell.rs`, and the wait loop
//! of `multiproc-async`'s `src/wait.rs`), with parties that may stop for
//! ever at any step.
//!
//! Not part of the normal test run (loom needs `--cfg loom`; without it this
//! file compiles to nothing). Run it with a target directory of its own, so
//! the flag does not rebuild the normal one (`.ci/run` does this):
//!
//! ```text
//! CARGO_TARGET_DIR=target/loom RUSTFLAGS="--cfg loom" \
//!     cargo test -p multiproc-queue --test loom_ready --release
//! ```
//!
//! About 15 seconds of model checking on two cores (measured: 14 s for the
//! nine tests, run by the harness in parallel), plus the build.
//! `LOOM_MAX_PREEMPTIONS=n` changes the preemption bound (default
//! [`PREEMPTIONS`]; with 3 the tests pass too, in about 110 s; tests with
//! four or five threads cap it lower);
//! `-- --nocapture` prints, for every run, how many interleavings it
//! explored and how long it took.
//!
//! # What it checks
//!
//! That the protocol loses no wake-up: when the notifiers are done, every
//! waiter task whose condition holds has seen it and returned. A task that
//! sleeps for ever while nobody is left to ring it makes loom fail
//! ("deadlock"), since every other thread has then finished or is blocked
//! too. On the way, at the end of every run: the board's `armed` count is
//! at least the number of armed slots, exceeds it only by slots of dead
//! processes, and no live process is left armed.
//!
//! The model is self-contained: it restates the protocol over loom atomics
//! instead of calling the crate (whose code uses `std` atomics, futexes,
//! sockets, `membarrier` and an event loop). Every scenario names one party
//! that is killed; it is explored once with nobody killed and then once for
//! every step that party reaches, killed just before that step (a loop of
//! separate `loom` models), as in `tests/loom.rs`.
//!
//! # What is modelled, and where it is in the crate
//!
//! | model | crate |
//! |---|---|
//! | [`World::items`] | the queue's item count (`ring/producer.rs` publishes, `try_get` looks) |
//! | [`World::word`] | a futex word (`WaitLine::data`): bit 0 "someone sleeps", sequence above |
//! | [`World::armed`], [`Slot`] | `BellBoard::armed`, `BellSlot::{id, mask}` (core `doorbell.rs`); a slot's owner is its process |
//! | [`Process::alive`] | the owner's liveness (`ProcessIdentity::is_alive`), and its doorbell socket being open (`Rung::Gone` once not) |
//! | [`Process::counts`] | core's `Waiters::counts` (per-process waiter counts behind a lock; `doorbell.rs`), through `Readiness::arm` |
//! | [`Process::epoch`], [`Process::draining`] | core's `Waiters::epoch`, `Waiters::draining` (`Readiness::round`, `drained_since`) |
//! | [`Process::pending`] | the doorbell socket's queued datagrams (`Doorbell::drain` reads them all) |
//! | [`Process::reactor`], [`Reactor`] | the event loop's readiness for the doorbell and the wakers registered on it (tokio `AsyncFd`, async-io `Async`) |
//! | [`notify`] | `wake::notify` + `notify_slow` (futex wake not modelled: no sync sleeper here) |
//! | [`ring`], [`deliver`], [`free_if_dead`] | `BellBoard::ring` + `ring_armed`, `doorbell::ring`, `BellBoard::free_if_dead` |
//! | [`arm`], [`disarm`] | `Readiness::arm`/`disarm` over `Waiters::arm`/`disarm` and `BellBoard::arm` |
//! | [`announce`] | `Armed::announce` (`fetch_or(1)` + heavy fence; each task announces itself here, the crate may let one task's announcement serve others that began their round before it started — see below) |
//! | [`drain`] | core's `Waiters::drain` (one at a time: epoch odd, read, epoch even) |
//! | [`task`] | `wait::until` (steps 1–6 of the `Readiness` docs) with `Tokio::readable`/`Smol::readable`; [`ArmAt::First`] is its `readiness.arm` before the loop |
//! | [`notifier`] | a `put`: publish the item, then `notify` on the data word |
//! | the step budget of a [`Party`] | a process killed at that point |
//!
//! A party's steps are the points just before each store,
//! read-modify-write and fence it makes on shared words, and before each
//! doorbell it rings (a `sendto`). Loads are not steps. Registering with
//! the event loop is not one either: it touches only the process's own
//! reactor. A killed waiter task kills its process: it marks it dead
//! (`alive := false`, `SeqCst`) and returns without cleaning up (its slot
//! stays claimed and maybe armed, its "someone sleeps" bit maybe set).
//!
//! # The event loop
//!
//! One [`Reactor`] per process, behind a loom `Mutex` with a `Condvar`
//! (the kernel's socket and epoll locks, and the runtime's readiness lock):
//! [`deliver`] adds a pending ring, then wakes every task registered; a
//! task that registers while rings are pending is ready at once (tokio's
//! and async-io's `readable` return at once when the descriptor is
//! readable), otherwise it stays registered until a ring wakes it, then
//! drains (`readable` drains after its wait). This is what the protocol
//! may assume of both runtimes: a ring after a registration wakes it, a
//! registration after a ring not yet drained is ready. The runtimes can
//! wake more often than that (tokio's readiness flag outlives a drain by
//! another task until `clear_ready`), never less; more wake-ups only add
//! rounds of the loop. The two tasks of a process are two loom threads:
//! on a multi-threaded runtime they are; a single-threaded one runs a
//! subset of these interleavings.
//!
//! A task that finds the epoch odd at step 5 (a drain by its sibling is
//! running) goes round the loop again at once, as `wait::until` does; the
//! model yields there (`thread::yield_now`), so that loom lets the
//! draining sibling run instead of exploring an endless spin.
//!
//! # Not modelled: shared announcements
//!
//! Each task here announces itself. The crate lets one task's announcement
//! (its bits set and its fence passed) serve the tasks of its process whose
//! round began before that announcement started (`Armed::announce` and
//! `Readiness::round`, whose docs give the argument); this model does not
//! explore that shortcut.
//!
//! # Fences
//!
//! The notifier's `light_fence` (a compiler fence, made a full one by the
//! sleeper's `membarrier`) and the waiter's `heavy_fence` are both
//! `fence(SeqCst)`, as in `tests/loom.rs`: the store-then-load pairs
//! (notifier: publish, fence, load the word; waiter: `fetch_or` the word,
//! fence, load the items) are ordered as on the real machine.
//!
//! # Scenarios
//!
//! - (a) [`a_two_tasks_share_a_doorbell`]: process P runs two waiter tasks
//!   on one doorbell (one epoch, one slot); a notifier puts one or two
//!   items, the first task needs one, the second all of them. A drain by
//!   either task may read the ring meant for the other. Nobody is killed.
//! - (b) [`b_waiter_process_killed_at_every_step`]: a waiter task of P and
//!   one of process Q (its own doorbell and slot), on the same word; Q is
//!   killed at every step (arming, announcing, draining, disarming). A Q
//!   that dies armed leaves `armed > 0`, its mask and maybe the bit set:
//!   the notifier then rings a gone doorbell and frees the slot, and P
//!   must still be woken (the test also checks that this happened in some
//!   runs). [`b_two_tasks_of_p_waiter_process_killed_at_every_step`]: the
//!   same with two tasks in P, at a preemption bound of 1 (at 2, four
//!   parties take three minutes).
//! - (d) [`d_three_tasks_two_woken`]: P runs three tasks, two of which
//!   start as if woken by an earlier ring (armed, draining), the third
//!   waits from the start; a notifier puts one item. Five threads: run at
//!   a preemption bound of 1 ([`FIVE_THREADS_PREEMPTIONS`]; at 2 it passes
//!   too, in about 60 s). Nobody is killed.
//! - (c) [`c_second_notifier_killed_at_every_step`]: a waiter task of P;
//!   two notifiers each put an item, the second is killed at every step.
//!   This one fails where the second notifier dies after its CAS cleared
//!   the bit and before it rang: see below. The test checks that it fails
//!   there and only there.
//!
//! Three more tests run seeded bugs, variants that must fail, and expect
//! the failure (loom's "deadlock": a task asleep for ever):
//!
//! - [`seeded_bug_no_epoch_check`]: scenario (a), one put, without step
//!   5's epoch check. Task 2 re-checks (nothing), the notifier rings,
//!   task 1 (registered, or registering now) drains the ring, task 2
//!   registers with nothing pending and sleeps for ever;
//! - [`seeded_bug_arm_after_recheck`]: one task that arms only after its
//!   first announce and re-check: the notifier's CAS reads the bit, its
//!   ring finds nothing armed;
//! - [`seeded_bug_arm_after_announce`]: one task that arms between its
//!   first announce and re-check. Subtler, a loss of the language's
//!   memory model only (in every sequentially consistent interleaving the
//!   re-check sees the item): the notifier's CAS reads the bit, its load
//!   of `armed` comes before the arming in the `SeqCst` order, and the
//!   re-check, after the arming, still need not see the item (the fences
//!   order only the announce against the notifier's load of the word, and
//!   `SeqCst` order alone is no happens-before). Arming must come before
//!   the announce's `fetch_or`, whose RMW the CAS reads, as `wait::until`
//!   does it.
//!
//! # Found and fixed: two drains at once
//!
//! `Readiness::drain` used to run unserialized, so two tasks of a process
//! on two threads could drain at once, and then the epoch is even while
//! both still have to read: "odd while a drain runs" no longer held. With
//! three tasks of one process (`serial_drains: false`,
//! [`found_overlapping_drains_lose_a_wake_up`], one thread running both
//! drains' steps, explored at a preemption bound of 3):
//!
//! 1. tasks 1 and 2, woken by an earlier ring, start their drains: epoch
//!    0 → 1 → 2;
//! 2. task 3: step 1 reads epoch 2 (even), announces, re-checks: no item;
//! 3. the notifier publishes, sees the bit, CASes, rings: one pending ring;
//! 4. task 1's drain reads it (pending 0);
//! 5. task 3 registers: nothing pending; step 5 reads epoch 2 again, even:
//!    it sleeps;
//! 6. both drains end (epoch 4); tasks 1 and 2 re-check and are done.
//!
//! Task 3 sleeps although the item is there, until another ring (which
//! needs another waiter's announce first). `Readiness::drain` now holds a
//! lock (`draining`), so drains of one `Readiness` run one at a time and
//! the epoch is odd exactly while one runs; the model checks the crate
//! with it ([`Variant::serial_drains`]), and scenario (d) runs three tasks
//! with it. (With two tasks, (a), the overlap does not lose: the only task
//! that could read the even epoch is one of the two draining.)
//!
//! # Found: a notifier that dies between its CAS and its ring
//!
//! Scenario (c) with the second notifier N2 killed just before it rings
//! (after its CAS in `notify_slow`) loses the wake-up of P's task:
//!
//! 1. task: arms, reads the epoch, announces (`fetch_or`: bit 0 set), its
//!    re-check finds no item; it registers and sleeps;
//! 2. N2: publishes its item, fences, loads the word (bit set), CASes
//!    `v → v + 1` (bit cleared), and dies before `futex::wake_all` and
//!    `BellBoard::ring`;
//! 3. N1: publishes its item, fences, loads the word: either N2's value
//!    (bit clear: fast path, no ring) or `v` (then its CAS fails, and it
//!    takes the failure to mean the winner rang: no ring).
//!
//! (That is already a sequentially consistent interleaving: no weak memory
//! effect is needed.) The task sleeps although two items are there, until
//! some later waiter
//! sets bit 0 again and a notify after that rings. The same holds for a
//! futex sleeper in the crate (its `futex::wait` has no time limit when
//! `membarrier` is in use), so it is a property of `wake::notify` under a
//! notifier's death, not of the doorbells. A ring on a failed CAS would not
//! cover N1's fast path (step 3, first case); the crate's cure is a bounded
//! wait for every waiter: each looks again by itself at least every
//! `multiproc_core::futex::RECHECK` (one second), blocking sleepers
//! (`fence::recheck_slice`) and async tasks (step 6 of `wait::until`)
//! alike. The model has no clock, so it still finds the loss here, and
//! scenario (c) expects exactly that failure at exactly that kill point;
//! `src/tests.rs` (`a_notifier_killed_before_its_wake_strands_no_consumer`)
//! and `multiproc-async`'s `a_notifier_killed_before_its_ring_strands_no_task`
//! build the state it leaves and check that the waiter gets its item.
//!
//! Not modelled: `contended` and the lock words (waits with `lock = true`
//! end after `LIVENESS_SLICE` anyway); more than one interest; claiming and
//! releasing slots (slots are claimed before the run); a slot being
//! reclaimed by a new process while it is freed; futex sleepers.
// The queue crate declares no `loom` cfg (it has no build script): without
// this, the `cfg` below is an unexpected one, an error under `-D warnings`.
#![allow(unexpected_cfgs)]
#![cfg(loom)]

use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc as StdArc;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::AtomicUsize as StdAtomicUsize;
use std::time::Instant;

use loom::model::Builder;
use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

/// The preemption bound unless `LOOM_MAX_PREEMPTIONS` says otherwise.
const PREEMPTIONS: usize = 2;

/// The preemption bound of [`b_two_tasks_of_p_waiter_process_killed_at_every_step`]
/// (at most).
const FOUR_PARTIES_PREEMPTIONS: usize = 1;

/// The data word's bit in the board's masks (`wake::bell::DATA`).
const DATA: u32 = 1;
/// Marks a slot that a ring is freeing (core's `FREEING`).
const FREEING: u64 = u64::MAX;
/// Waiter processes, each with a doorbell and a slot: [`P`] and [`Q`].
const PROCESSES: usize = 2;
/// Waiter tasks a process may run.
const TASKS: usize = 3;

/// The waiter processes.
const P: usize = 0;
const Q: usize = 1;

/// A variant of the waiter's loop.
#[derive(Clone, Copy, Debug)]
struct Variant {
    /// Step 5: after registering, go round again if the epoch changed
    /// (or was odd) since step 1.
    epoch_check: bool,
    /// When a task arms.
    arm: ArmAt,
    /// Drains of one process one at a time (`Readiness::draining`, since
    /// the fix); `false`: as before, two may run at once.
    serial_drains: bool,
}

/// When a task arms its process's slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ArmAt {
    /// Before the loop, as `wait::until` does.
    First,
    /// In the first round, between the announce (step 2) and the re-check
    /// (step 3).
    AfterAnnounce,
    /// In the first round, after the re-check (step 3) found nothing.
    AfterRecheck,
}

/// The protocol the model checks: `wait::until` as it is.
const CHECKED: Variant = Variant {
    epoch_check: true,
    arm: ArmAt::First,
    serial_drains: true,
};

/// `BellSlot`: the doorbell's id (its process + 1; 0 free, [`FREEING`])
/// and the words it is armed for.
struct Slot {
    id: AtomicU64,
    mask: AtomicU32,
}

/// What the event loop of a process knows of its doorbell's waiters.
#[derive(Default)]
struct Reactor {
    /// Tasks whose waker is registered for readability.
    registered: [bool; TASKS],
    /// Tasks woken by a ring since they registered.
    woken: [bool; TASKS],
}

/// A waiter process: its `Readiness` (counts, epoch), its doorbell
/// (pending rings) and its event loop.
struct Process {
    alive: AtomicBool,
    /// `Readiness::armed`: armed waiters of this process; the lock
    /// serializes arming, as in the crate.
    counts: Mutex<u32>,
    epoch: AtomicU64,
    /// `Readiness::draining`.
    draining: Mutex<()>,
    /// Rings queued on the doorbell and not drained yet.
    pending: AtomicU32,
    reactor: Mutex<Reactor>,
    wakeups: Condvar,
}

/// The shared memory, and the processes.
struct World {
    variant: Variant,
    /// Items published (the waiters' condition: enough of them).
    items: AtomicU32,
    /// The data futex word.
    word: AtomicU32,
    /// `BellBoard::armed`.
    armed: AtomicU32,
    slots: [Slot; PROCESSES],
    procs: [Process; PROCESSES],
}

impl World {
    /// Both processes' slots claimed (id = process + 1), nothing armed.
    fn new(variant: Variant) -> Self {
        Self {
            variant,
            items: AtomicU32::new(0),
            word: AtomicU32::new(0),
            armed: AtomicU32::new(0),
            slots: std::array::from_fn(|i| Slot {
                id: AtomicU64::new(i as u64 + 1),
                mask: AtomicU32::new(0),
            }),
            procs: std::array::from_fn(|_| Process {
                alive: AtomicBool::new(true),
                counts: Mutex::new(0),
                epoch: AtomicU64::new(0),
                draining: Mutex::new(()),
                pending: AtomicU32::new(0),
                reactor: Mutex::new(Reactor::default()),
                wakeups: Condvar::new(),
            }),
        }
    }
}

impl Process {
    /// Step 4: registers task `t` for readability; `true`: readable at once.
    fn register(&self, t: usize) -> bool {
        let mut reactor = self.reactor.lock().unwrap();
        if self.pending.load(Ordering::SeqCst) > 0 {
            return true;
        }
        reactor.registered[t] = true;
        reactor.woken[t] = false;
        false
    }

    /// Drops task `t`'s registration (its `readable` future is dropped).
    fn deregister(&self, t: usize) {
        let mut reactor = self.reactor.lock().unwrap();
        reactor.registered[t] = false;
        reactor.woken[t] = false;
    }

    /// Step 6: sleeps until a ring wakes task `t`.
    fn sleep(&self, t: usize) {
        let mut reactor = self.reactor.lock().unwrap();
        while !reactor.woken[t] {
            reactor = self.wakeups.wait(reactor).unwrap();
        }
        reactor.woken[t] = false;
    }
}

/// Counts the runs and the steps the killed party reached.
#[derive(Default)]
struct Probe {
    interleavings: StdAtomicUsize,
    /// Interleavings in which the killed party did die.
    deaths: StdAtomicUsize,
    victim_steps: StdAtomicUsize,
    /// What the killed party does at each of its steps, in the
    /// interleavings that reach it.
    labels: StdMutex<Vec<Vec<&'static str>>>,
    /// Rings, by any party, that found their doorbell gone (its process
    /// dead), in all runs.
    gone: StdAtomicUsize,
    /// Slots freed by a ring (`free_if_dead`), in all runs.
    freed: StdAtomicUsize,
}

/// The party ran out of steps: it is dead and does nothing more.
#[derive(Debug)]
struct Died;

type Step<T> = Result<T, Died>;

/// A thread, with its step budget.
struct Party<'a> {
    w: &'a World,
    /// The waiter process it belongs to (a notifier's is no waiter's).
    process: Option<usize>,
    /// Stop for ever before step number `die_at` (0 = before the first).
    die_at: Option<usize>,
    steps: usize,
    /// Set for the party that is killed: records how far it got.
    probe: Option<&'a Probe>,
    /// Every party's: what the rings found.
    stats: &'a Probe,
}

impl Party<'_> {
    /// A step boundary, before `what`: the party stops for ever here if its
    /// budget ran out.
    fn step(&mut self, what: &'static str) -> Step<()> {
        if self.die_at == Some(self.steps) {
            if let Some(process) = self.process {
                self.w.procs[process].alive.store(false, Ordering::SeqCst);
            }
            if let Some(probe) = self.probe {
                probe
                    .deaths
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            return Err(Died);
        }
        if let Some(probe) = self.probe {
            let mut labels = probe.labels.lock().unwrap();
            if labels.len() == self.steps {
                labels.push(Vec::new());
            }
            if !labels[self.steps].contains(&what) {
                labels[self.steps].push(what);
            }
            drop(labels);
            probe
                .victim_steps
                .fetch_max(self.steps + 1, std::sync::atomic::Ordering::Relaxed);
        }
        self.steps += 1;
        Ok(())
    }
}

/// `doorbell::ring` to process `process`'s doorbell: `false` = gone (its
/// socket closed with it). One system call: the queueing and the wake-up
/// of the registered tasks cannot be split by a death.
fn deliver(w: &World, process: usize) -> bool {
    let pr = &w.procs[process];
    if !pr.alive.load(Ordering::SeqCst) {
        return false;
    }
    pr.pending.fetch_add(1, Ordering::SeqCst);
    let mut reactor = pr.reactor.lock().unwrap();
    for t in 0..TASKS {
        if reactor.registered[t] {
            reactor.registered[t] = false;
            reactor.woken[t] = true;
        }
    }
    drop(reactor);
    pr.wakeups.notify_all();
    true
}

/// `BellBoard::free_if_dead` for slot `index`, holding doorbell `id`.
fn free_if_dead(p: &mut Party<'_>, index: usize, id: u64) -> Step<()> {
    let w = p.w;
    let slot = &w.slots[index];
    // `owner_alive`.
    if w.procs[(id - 1) as usize].alive.load(Ordering::SeqCst) {
        return Ok(());
    }
    p.step("free: claim the slot")?;
    if slot
        .id
        .compare_exchange(id, FREEING, Ordering::SeqCst, Ordering::Relaxed)
        .is_err()
    {
        return Ok(());
    }
    p.step("free: clear the mask")?;
    if slot.mask.swap(0, Ordering::SeqCst) != 0 {
        p.step("free: uncount")?;
        w.armed.fetch_sub(1, Ordering::SeqCst);
    }
    p.step("free: release the slot")?;
    slot.id.store(0, Ordering::SeqCst);
    p.stats
        .freed
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// `BellBoard::ring` + `ring_armed`.
fn ring(p: &mut Party<'_>, bell: u32) -> Step<()> {
    let w = p.w;
    if w.armed.load(Ordering::SeqCst) == 0 {
        return Ok(());
    }
    for (index, slot) in w.slots.iter().enumerate() {
        if slot.mask.load(Ordering::SeqCst) & bell == 0 {
            continue;
        }
        let id = slot.id.load(Ordering::Acquire);
        if id == 0 || id == FREEING {
            continue;
        }
        p.step("ring")?;
        if !deliver(w, (id - 1) as usize) {
            p.stats
                .gone
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            free_if_dead(p, index, id)?;
        }
    }
    Ok(())
}

/// `wake::notify` (+ `notify_slow`) on the data word.
fn notify(p: &mut Party<'_>) -> Step<()> {
    let w = p.w;
    p.step("light fence")?;
    // `light_fence`, modelled as a full fence (module docs).
    fence(Ordering::SeqCst);
    let v = w.word.load(Ordering::Relaxed);
    if v & 1 != 0 {
        p.step("cas")?;
        if w.word
            .compare_exchange(v, v.wrapping_add(1), Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            // (`futex::wake_all` here: no futex sleeper in the model.)
            ring(p, DATA)?;
        }
    }
    Ok(())
}

/// A notifier putting `puts` items, each followed by a notify.
fn notifier(p: &mut Party<'_>, puts: u32) -> Step<()> {
    for _ in 0..puts {
        p.step("publish")?;
        p.w.items.fetch_add(1, Ordering::Release);
        notify(p)?;
    }
    Ok(())
}

/// `Readiness::arm` (`BellBoard::arm` when the process's first waiter arms).
fn arm(p: &mut Party<'_>, process: usize) -> Step<()> {
    let w = p.w;
    let slot = &w.slots[process];
    let mut counts = w.procs[process].counts.lock().unwrap();
    *counts += 1;
    if *counts == 1 {
        if slot.mask.load(Ordering::Relaxed) == 0 {
            p.step("arm: count")?;
            w.armed.fetch_add(1, Ordering::SeqCst);
        }
        p.step("arm: mask")?;
        slot.mask.store(DATA, Ordering::SeqCst);
    }
    Ok(())
}

/// `Readiness::disarm` (dropping `Armed`; `BellBoard::disarm` when the
/// process's last waiter goes).
fn disarm(p: &mut Party<'_>, process: usize) -> Step<()> {
    let w = p.w;
    let mut counts = w.procs[process].counts.lock().unwrap();
    *counts -= 1;
    if *counts == 0 {
        p.step("disarm: mask")?;
        if w.slots[process].mask.swap(0, Ordering::SeqCst) != 0 {
            p.step("disarm: uncount")?;
            w.armed.fetch_sub(1, Ordering::SeqCst);
        }
    }
    Ok(())
}

/// `Armed::announce`: bit 0 of the word, then the heavy fence.
fn announce(p: &mut Party<'_>) -> Step<()> {
    p.step("announce")?;
    p.w.word.fetch_or(1, Ordering::SeqCst);
    p.step("heavy fence")?;
    // `heavy_fence`: fence(SeqCst) + membarrier (module docs).
    fence(Ordering::SeqCst);
    Ok(())
}

/// `Readiness::drain`: epoch odd, read every ring, epoch even.
fn drain(p: &mut Party<'_>, process: usize) -> Step<()> {
    let pr = &p.w.procs[process];
    let _one =
        p.w.variant
            .serial_drains
            .then(|| pr.draining.lock().unwrap());
    p.step("drain: epoch odd")?;
    pr.epoch.fetch_add(1, Ordering::SeqCst);
    p.step("drain: read")?;
    pr.pending.swap(0, Ordering::SeqCst);
    p.step("drain: epoch even")?;
    pr.epoch.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// Task `t` of `process` waiting, as `wait::until` does, until `need`
/// items are published.
fn task(p: &mut Party<'_>, process: usize, t: usize, need: u32) -> Step<()> {
    task_from(p, process, t, need, false)
}

/// [`task`]; `woken`: the task starts as one woken at step 6 does (armed,
/// draining), as if a ring before the run had woken it.
fn task_from(p: &mut Party<'_>, process: usize, t: usize, need: u32, woken: bool) -> Step<()> {
    let w = p.w;
    let pr = &w.procs[process];
    let ready = || w.items.load(Ordering::Acquire) >= need;
    // The attempt before arming.
    if !woken && ready() {
        return Ok(());
    }
    let mut armed = w.variant.arm == ArmAt::First;
    if armed {
        arm(p, process)?;
    }
    if woken {
        drain(p, process)?;
    }
    loop {
        // 1.
        let epoch = pr.epoch.load(Ordering::SeqCst);
        // 2.
        announce(p)?;
        if !armed && w.variant.arm == ArmAt::AfterAnnounce {
            arm(p, process)?;
            armed = true;
        }
        // 3.
        if ready() {
            if !armed {
                return Ok(());
            }
            return disarm(p, process);
        }
        if !armed {
            // `ArmAt::AfterRecheck`.
            arm(p, process)?;
            armed = true;
        }
        // 4. Registers; a doorbell readable already is drained.
        if pr.register(t) {
            drain(p, process)?;
            continue;
        }
        // 5.
        if w.variant.epoch_check {
            let now = pr.epoch.load(Ordering::SeqCst);
            if now != epoch || epoch % 2 == 1 {
                pr.deregister(t);
                if now % 2 == 1 {
                    // A drain runs: let it finish (module docs).
                    thread::yield_now();
                }
                continue;
            }
        }
        // 6.
        pr.sleep(t);
        drain(p, process)?;
    }
}

/// Joins the parties, then checks the board.
fn finish(w: &World) {
    let slots = w
        .slots
        .iter()
        .filter(|s| s.mask.load(Ordering::SeqCst) != 0)
        .count() as u32;
    let dead = w
        .procs
        .iter()
        .filter(|p| !p.alive.load(Ordering::SeqCst))
        .count() as u32;
    let armed = w.armed.load(Ordering::SeqCst);
    assert!(armed >= slots, "armed {armed} < {slots} slots with a mask");
    assert!(
        armed <= slots + dead,
        "armed {armed} > {slots} slots with a mask + {dead} dead"
    );
    for (i, pr) in w.procs.iter().enumerate() {
        if pr.alive.load(Ordering::SeqCst) {
            assert_eq!(
                w.slots[i].mask.load(Ordering::SeqCst),
                0,
                "process {i} finished armed"
            );
        }
    }
}

/// A loom `Arc` for the run, which the caller drops at the end of a run
/// that finished. Loom reports a lost wake-up as a deadlock and unwinds every
/// blocked thread, the model's main thread among them; a loom `Arc` dropped
/// by that unwinding panics again (there is no execution any more), and the
/// test process aborts instead of reporting. So no thread holds one in a
/// plain variable.
fn leak_on_deadlock(w: World) -> ManuallyDrop<Arc<World>> {
    ManuallyDrop::new(Arc::new(w))
}

/// Spawns a party: the killed one gets `die_at` and the probe.
fn spawn(
    w: &Arc<World>,
    probe: &StdArc<Probe>,
    process: Option<usize>,
    killed: bool,
    die_at: Option<usize>,
    body: impl FnOnce(&mut Party<'_>) -> Step<()> + Send + 'static,
) -> thread::JoinHandle<bool> {
    let w = Arc::clone(w);
    let probe = StdArc::clone(probe);
    thread::spawn(move || {
        // Not dropped if the run ends in a deadlock (see [`leak_on_deadlock`]).
        let w = ManuallyDrop::new(w);
        let mut p = Party {
            w: &w,
            process,
            die_at: die_at.filter(|_| killed),
            steps: 0,
            probe: killed.then_some(&*probe),
            stats: &probe,
        };
        let died = body(&mut p).is_err();
        drop(ManuallyDrop::into_inner(w));
        died
    })
}

/// (a): P runs `tasks` tasks (the first needs one item, the second
/// `puts`); a notifier puts `puts` items. The notifier is the party
/// named as killed, but none is: `die_at` is always `None`.
fn shared_doorbell(variant: Variant, tasks: usize, puts: u32, probe: &StdArc<Probe>) {
    let w = leak_on_deadlock(World::new(variant));
    let waiters: Vec<_> = (0..tasks)
        .map(|t| {
            let need = if t == 0 { 1 } else { puts };
            spawn(&w, probe, Some(P), false, None, move |p| {
                task(p, P, t, need)
            })
        })
        .collect();
    let n = spawn(&w, probe, None, true, None, move |p| notifier(p, puts));
    assert!(!n.join().unwrap());
    for waiter in waiters {
        assert!(!waiter.join().unwrap());
    }
    finish(&w);
    drop(ManuallyDrop::into_inner(w));
}

/// (b): P runs `tasks` tasks, Q one, all needing one item; Q is killed.
fn dying_waiter(tasks: usize, die_at: Option<usize>, probe: &StdArc<Probe>) {
    let w = leak_on_deadlock(World::new(CHECKED));
    let waiters: Vec<_> = (0..tasks)
        .map(|t| spawn(&w, probe, Some(P), false, None, move |p| task(p, P, t, 1)))
        .collect();
    let q = spawn(&w, probe, Some(Q), true, die_at, |p| task(p, Q, 0, 1));
    let n = spawn(&w, probe, None, false, None, |p| notifier(p, 1));
    assert!(!n.join().unwrap());
    for waiter in waiters {
        assert!(!waiter.join().unwrap());
    }
    q.join().unwrap();
    finish(&w);
    drop(ManuallyDrop::into_inner(w));
}

/// (c): a task of P needs one item; two notifiers put one each, the second
/// is killed. Q takes no part (marked dead, its slot freed beforehand).
fn dying_notifier(variant: Variant, die_at: Option<usize>, probe: &StdArc<Probe>) {
    let w = World::new(variant);
    w.procs[Q].alive.store(false, Ordering::SeqCst);
    w.slots[Q].id.store(0, Ordering::SeqCst);
    let w = leak_on_deadlock(w);
    let t = spawn(&w, probe, Some(P), false, None, |p| task(p, P, 0, 1));
    let n1 = spawn(&w, probe, None, false, None, |p| notifier(p, 1));
    let n2 = spawn(&w, probe, None, true, die_at, |p| notifier(p, 1));
    assert!(!n1.join().unwrap());
    n2.join().unwrap();
    assert!(!t.join().unwrap());
    finish(&w);
    drop(ManuallyDrop::into_inner(w));
}

fn builder() -> Builder {
    let mut builder = Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(PREEMPTIONS);
    }
    builder
}

/// The text of a panic's payload.
fn message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

/// Explores `model` with nobody killed, then once for every step the killed
/// party reached, killing it there: every `die_at` is a separate `loom`
/// model, explored with at most `max_preemptions` if given. A run killed
/// before a step that `loses` names must fail with a
/// lost wake-up (loom's deadlock); every other run must pass. Returns the
/// probe, with what the rings found in all runs.
fn every_death(
    name: &str,
    max_preemptions: Option<usize>,
    loses: impl Fn(&str) -> bool,
    model: impl Fn(Option<usize>, &StdArc<Probe>) + Copy + Send + Sync + 'static,
) -> StdArc<Probe> {
    use std::sync::atomic::Ordering::Relaxed;
    let start = Instant::now();
    let probe = StdArc::new(Probe::default());
    let mut total = 0;
    let mut lost = Vec::new();
    let mut die_at: Option<usize> = None;
    loop {
        let t = Instant::now();
        probe.interleavings.store(0, Relaxed);
        probe.deaths.store(0, Relaxed);
        let label = die_at.map(|k| {
            let labels = probe.labels.lock().unwrap();
            labels[k].clone()
        });
        let expect_loss = label.as_ref().is_some_and(|l| l.iter().all(|s| loses(s)));
        let p = StdArc::clone(&probe);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut builder = builder();
            if let Some(max) = max_preemptions {
                builder.preemption_bound = builder.preemption_bound.map(|b| b.min(max));
            }
            builder.check(move || {
                p.interleavings.fetch_add(1, Relaxed);
                model(die_at, &p);
            });
        }));
        let n = probe.interleavings.load(Relaxed);
        total += n;
        match outcome {
            Ok(()) if expect_loss => panic!(
                "{name}: die_at {die_at:?} (before {label:?}): the lost wake-up was not found"
            ),
            Ok(()) => {}
            Err(payload) if expect_loss && message(&*payload).contains("deadlock") => {
                lost.push(die_at);
            }
            Err(payload) => {
                eprintln!("{name}: die_at {die_at:?} (before {label:?}): FAILED");
                resume_unwind(payload);
            }
        }
        eprintln!(
            "{name}: die_at {die_at:?} (before {label:?}): {n} interleavings ({} with a death){}, {:.2?}",
            probe.deaths.load(Relaxed),
            if expect_loss {
                ": lost wake-up, as expected"
            } else {
                ""
            },
            t.elapsed()
        );
        let next = die_at.map_or(0, |k| k + 1);
        if next >= probe.victim_steps.load(Relaxed) {
            break;
        }
        die_at = Some(next);
    }
    eprintln!(
        "{name}: killed at each of {} steps ({:?}), {total} interleavings in all, lost wake-ups at {lost:?}, {:.2?}",
        probe.victim_steps.load(Relaxed),
        probe.labels.lock().unwrap(),
        start.elapsed()
    );
    probe
}

/// No step loses a wake-up.
fn never(_: &str) -> bool {
    false
}

#[test]
fn a_two_tasks_share_a_doorbell() {
    for puts in [1, 2] {
        let name = format!("(a) two tasks, {puts} puts");
        let start = Instant::now();
        let probe = StdArc::new(Probe::default());
        let p = StdArc::clone(&probe);
        builder().check(move || {
            p.interleavings
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            shared_doorbell(CHECKED, 2, puts, &p);
        });
        eprintln!(
            "{name}: {} interleavings, {:.2?}",
            probe
                .interleavings
                .load(std::sync::atomic::Ordering::Relaxed),
            start.elapsed()
        );
    }
}

#[test]
fn b_waiter_process_killed_at_every_step() {
    // One task in P: with two (and Q, and the notifier) the kill loop takes
    // about three minutes on two cores; (a) covers two tasks sharing a
    // doorbell.
    let probe = every_death("(b) P with one task", None, never, |die_at, probe| {
        dying_waiter(1, die_at, probe);
    });
    // Q died armed in some runs, and the notifier rang its gone doorbell and
    // freed its slot: only extra work, P was woken all the same.
    let gone = probe.gone.load(std::sync::atomic::Ordering::Relaxed);
    let freed = probe.freed.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("(b): {gone} rings found Q's doorbell gone, {freed} freed its slot");
    assert!(gone > 0 && freed > 0);
}

/// (b) with two tasks in P: four parties. At the preemption bound of the
/// other tests this takes about three minutes on two cores, so it runs with
/// at most [`FOUR_PARTIES_PREEMPTIONS`].
#[test]
fn b_two_tasks_of_p_waiter_process_killed_at_every_step() {
    every_death(
        "(b) P with two tasks",
        Some(FOUR_PARTIES_PREEMPTIONS),
        never,
        |die_at, probe| dying_waiter(2, die_at, probe),
    );
}

/// (d), as the crate was: two tasks of P drain at once (both woken by an
/// earlier ring), one thread running both drains' steps in one of their
/// interleavings (both epoch bumps first, the reads, both closing bumps);
/// a third task waits from the start; a notifier puts one item.
fn overlapping_drains(variant: Variant) {
    let w = leak_on_deadlock(World::new(variant));
    let probe = StdArc::new(Probe::default());
    let drains = spawn(&w, &probe, Some(P), false, None, |p| {
        let pr = &p.w.procs[P];
        pr.epoch.fetch_add(1, Ordering::SeqCst);
        pr.epoch.fetch_add(1, Ordering::SeqCst);
        pr.pending.swap(0, Ordering::SeqCst);
        pr.epoch.fetch_add(1, Ordering::SeqCst);
        pr.epoch.fetch_add(1, Ordering::SeqCst);
        Ok(())
    });
    let t = spawn(&w, &probe, Some(P), false, None, |p| task(p, P, 2, 1));
    let n = spawn(&w, &probe, None, false, None, |p| notifier(p, 1));
    assert!(!n.join().unwrap());
    drains.join().unwrap();
    assert!(!t.join().unwrap());
    drop(ManuallyDrop::into_inner(w));
}

/// (d): P runs three tasks; two start woken (both draining, one after the
/// other now), the third waits from the start; a notifier puts one item.
fn three_tasks(variant: Variant) {
    let w = leak_on_deadlock(World::new(variant));
    let probe = StdArc::new(Probe::default());
    let waiters: Vec<_> = (0..TASKS)
        .map(|t| {
            spawn(&w, &probe, Some(P), false, None, move |p| {
                task_from(p, P, t, 1, t < 2)
            })
        })
        .collect();
    let n = spawn(&w, &probe, None, false, None, |p| notifier(p, 1));
    assert!(!n.join().unwrap());
    for waiter in waiters {
        assert!(!waiter.join().unwrap());
    }
    finish(&w);
    drop(ManuallyDrop::into_inner(w));
}

/// The preemption bound of [`d_three_tasks_two_woken`] (at most): five
/// threads.
const FIVE_THREADS_PREEMPTIONS: usize = 1;

#[test]
fn d_three_tasks_two_woken() {
    let start = Instant::now();
    let mut builder = builder();
    builder.preemption_bound = builder
        .preemption_bound
        .map(|b| b.min(FIVE_THREADS_PREEMPTIONS));
    builder.check(|| three_tasks(CHECKED));
    eprintln!("(d) three tasks: {:.2?}", start.elapsed());
}

/// (d) as the crate was, drains at once: found by the model (module docs).
#[test]
#[should_panic(expected = "deadlock")]
fn found_overlapping_drains_lose_a_wake_up() {
    let variant = Variant {
        serial_drains: false,
        ..CHECKED
    };
    let mut builder = builder();
    builder.preemption_bound = Some(3);
    builder.check(move || overlapping_drains(variant));
}

#[test]
fn c_second_notifier_killed_at_every_step() {
    // Killed before a ring: after its CAS cleared the bit (module docs).
    every_death(
        "(c)",
        None,
        |step| step == "ring",
        |die_at, probe| {
            dying_notifier(CHECKED, die_at, probe);
        },
    );
}

/// Scenario (a), one put, without step 5: a task registers after its
/// sibling drained the ring (rung after its re-check) and sleeps for ever.
#[test]
#[should_panic(expected = "deadlock")]
fn seeded_bug_no_epoch_check() {
    let variant = Variant {
        epoch_check: false,
        ..CHECKED
    };
    builder().check(move || {
        shared_doorbell(variant, 2, 1, &StdArc::new(Probe::default()));
    });
}

/// Scenario (a), one task, arming after the announce and the re-check:
/// the notifier's CAS reads the bit, its ring finds `armed` still 0.
#[test]
#[should_panic(expected = "deadlock")]
fn seeded_bug_arm_after_recheck() {
    let variant = Variant {
        arm: ArmAt::AfterRecheck,
        ..CHECKED
    };
    builder().check(move || {
        shared_doorbell(variant, 1, 1, &StdArc::new(Probe::default()));
    });
}

/// Scenario (a), one task, arming between the announce and the re-check.
#[test]
#[should_panic(expected = "deadlock")]
fn seeded_bug_arm_after_announce() {
    let variant = Variant {
        arm: ArmAt::AfterAnnounce,
        ..CHECKED
    };
    builder().check(move || {
        shared_doorbell(variant, 1, 1, &StdArc::new(Probe::default()));
    });
}
