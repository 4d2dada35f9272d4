//! A loom model of a queue lock with its bias (`src/lock.rs`, `src/bias.rs`,
//! over the lock words of `src/owner.rs`),
//! with parties that may stop for ever at any step.
//!
//! Not part of the normal test run (loom needs `--cfg loom`; without it this
//! file compiles to nothing). Run it with a target directory of its own, so
//! the flag does not rebuild the normal one (`.ci/run` does this):
//!
//! ```text
//! CARGO_TARGET_DIR=target/loom RUSTFLAGS="--cfg loom" \
//!     cargo test -p multiproc-queue --test loom --release
//! ```
//!
//! About two minutes on two cores. `LOOM_MAX_PREEMPTIONS=n` changes the
//! preemption bound (default [`PREEMPTIONS`]); `-- --nocapture` prints, for
//! every run, how many interleavings it explored and how long it took.
//!
//! # What it checks
//!
//! The model is self-contained: it restates the protocol over loom atomics
//! instead of calling the crate (whose code uses `std` atomics, futexes,
//! `membarrier` and `/proc`). Every scenario names one party that is killed;
//! it is explored once with nobody killed and then once for every step that
//! party reaches, killed just before that step (a loop of separate
//! `loom` models). Under every interleaving loom explores:
//!
//! - mutual exclusion: the critical section adds one to a
//!   `loom::cell::UnsafeCell<u64>` (read, then write), so loom reports any
//!   two accesses not ordered by happens-before ("Causality violation");
//!   and an "inside" counter, bumped on the way in, must read 0 ("two
//!   holders inside the lock");
//! - no acknowledged operation is lost: at the end the counter is at least
//!   the number of critical sections whose write completed and whose party
//!   went on past it, and at most that plus the number of dead parties
//!   (which may have written and died before going on);
//! - in scenario (b), a biased thread that died inside is recovered from
//!   (the revoker gets `Recovered`), and a live one never is;
//! - a revocation is left half done (`REVOKING` set) only by a dead holder
//!   of the owner word, and no live party ends holding the owner word;
//! - every live party finishes: one left waiting for ever makes loom fail
//!   ("deadlock").
//!
//! Two more tests run variants that must fail, and expect the failure:
//! [`seeded_bug_old_settle_lets_two_in`] (scenario (a) with the `settle`
//! from before the fix, which cleared the token at once) and
//! [`given_back_slot_read_as_dead_recovers_a_live_thread`] (see
//! [`GivenBack`]).
//!
//! # What is modelled, and where it is in the crate
//!
//! | model | crate |
//! |---|---|
//! | [`Lock::owner`], [`Lock::token`], [`Slot`] | `RobustLock::owner` (`owner.rs`), `Bias::token`, `BiasSlot::{owner, busy}` (`layout.rs`) |
//! | [`enter_biased`] | `RobustLock::enter_biased` and `lost_bias` (`bias.rs`) |
//! | [`leave_biased`] | `RobustLock::leave_biased` (`bias.rs`) |
//! | [`lock`] | `RobustLock::lock` once the bias failed: `try_lock`, `lock_slow` (takeover from a dead owner + `settle`), `revoke` (`lock.rs`, `bias.rs`; a lost race is `Revoke::Raced`) |
//! | [`settle`] | `RobustLock::settle` and `wait_out` (`bias.rs`) |
//! | [`unlock`] | `RobustLock::unlock`, the `owner := 0` branch (`lock.rs`) |
//! | [`grant`] | `RobustLock::grant` (`bias.rs`) |
//! | [`Lock::is_alive`] | `owner::owner_alive` |
//! | [`Lock::notify`], [`Lock::prepare_sleep`], [`Lock::sleep`], [`Wait`] | `wake::notify`, `wake::prepare_sleep`, `futex::wait` and the wait loops of `lock_slow` and `wait_out` |
//! | [`critical`] | what the holder does under the lock (`ring/producer.rs`, `ring/consumer.rs`) |
//! | the step budget of a [`Party`] | a thread killed at that point |
//!
//! Each [`Party`] is a thread; its identity (never 0, never [`BIASED`]) is
//! what the owner word and the slot hold, as the crate's thread identities.
//! A party's steps are the points just before each store,
//! read-modify-write and fence it makes on the shared words, and around
//! each access in the critical section. Loads are not steps: stopping just
//! before a load leaves the same state as stopping just before the next
//! store. A party that runs out of steps marks itself dead
//! (`alive[id] := false`, `SeqCst`) and returns without cleaning up;
//! [`Lock::is_alive`] reads that flag. A `false` read is an Acquire of all
//! the dead party did, as the kernel's answer is in the crate: whoever takes
//! over from a dead holder must have learned of the death before it touches
//! the counter, or loom flags the access. A party that dies inside the
//! critical section stops counting as inside (what it left is for whoever
//! takes over).
//!
//! # Waiting
//!
//! Waits sleep on a model of the lock's futex word (a loom `Mutex` and
//! `Condvar` around a wake count), not in `yield_now` spins: with two
//! spinning waiters (a revoker waiting for the biased thread, a taker
//! waiting for the revoker) loom explores schedules in which the two take
//! turns for ever while the thread they wait for never runs, and no branch
//! bound is enough. As in the crate, a waiter checks, announces itself
//! (`prepare_sleep`), checks again, then sleeps until a notify; every store
//! that may end a wait is followed by a notify, and a death wakes everybody
//! (it stands for the end of the sleepers' `LIVENESS_SLICE`, after which
//! they ask whether who they wait for lives: the model asks at every
//! check). A time-limited taker has a number of sleeps (`patience`) instead
//! of a deadline. Waking passes happens-before from the notifier to the
//! sleeper, as the kernel does; the checks before a sleep get no such
//! edge, and loom explores them seeing the new value, so a missing
//! `Release`/`Acquire` in the protocol is still found (moving the unlock's
//! or the leave's store to `Relaxed`, or dropping either fence, makes the
//! model fail).
//!
//! # Fences
//!
//! The biased thread's `light_fence` is a compiler fence: its process is
//! registered with `membarrier`, and the revoker's `revoke_fence`
//! (`fence(SeqCst)` + `membarrier(GLOBAL_EXPEDITED)`) runs a full barrier on
//! the biased thread's CPU. Loom cannot express that asymmetric pair, so
//! both sides are modelled as `fence(SeqCst)`: the store-then-load pairs
//! (biased thread: `busy` odd, fence, load `token`; revoker: store `token`,
//! fence, load `busy`) are ordered as on the real machine.
//!
//! # Scenarios
//!
//! - (a) [`a_revoker_killed_at_every_step`]: B holds the bias and enters once
//!   or twice (by the owner word once it lost the bias); R revokes and is
//!   killed at every step; W takes the lock (over from a dead R, or after
//!   it).
//! - (b) [`b_biased_thread_killed_at_every_step`]: B enters once or twice and
//!   is killed at every step, while entering, inside or leaving; R revokes,
//!   and must get `Recovered` exactly when B died inside.
//! - (c) [`c_time_limited_revoker_gives_up`]: as (a), but R may sleep at
//!   most 0 or 1 times, then gives the lock back to the bias (token
//!   restored, owner `BIASED`); it is killed at every step, in the middle
//!   of giving up too.
//! - (d) [`d_holder_granting_itself_killed_at_every_step`]: H takes the lock
//!   the usual way, grants itself the bias at unlock (a free slot, or one a
//!   dead thread left with `busy` odd), enters once by it, and is killed at
//!   every step; T takes the lock.
//!
//! Not modelled: the grant threshold and its adaptation; the per-process
//! `mine` record (a party remembers its token); corrupt tokens; more than
//! one slot; what the critical section repairs after a dead holder.
// The queue crate declares no `loom` cfg (it has no build script): without
// this, the `cfg` below is an unexpected one, an error under `-D warnings`.
#![allow(unexpected_cfgs)]
#![cfg(loom)]
// The critical section reads and writes a loom `UnsafeCell`.
#![allow(unsafe_code)]

use std::sync::Arc as StdArc;
use std::sync::atomic::AtomicUsize as StdAtomicUsize;
use std::time::Instant;

use loom::cell::UnsafeCell;
use loom::model::Builder;
use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

/// The preemption bound unless `LOOM_MAX_PREEMPTIONS` says otherwise.
const PREEMPTIONS: usize = 2;

/// The owner word of a biased lock (`owner::BIASED`).
const BIASED: u64 = u64::MAX;
/// Set in the token while a new holder of the owner word waits for the
/// biased thread to step out; bits 0..=30 still name the slot.
const REVOKING: u32 = 1 << 31;
/// Bias slots in the model (the crate has `layout::BIAS_SLOTS`).
const SLOTS: usize = 1;
/// Parties a scenario may name, spawned or not.
const PARTIES: usize = 3;

/// Which `settle` the model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Settle {
    /// The token keeps the slot, with [`REVOKING`], until the biased thread
    /// is out; only then is it cleared (the crate since the fix).
    Fixed,
    /// The token is cleared at once, with no [`REVOKING`] bit: a holder that
    /// takes over from a dead revoker finds 0 and does not wait for the
    /// biased thread (the seeded bug).
    Old,
}

/// What a settling holder makes of a slot whose owner reads 0 (its thread
/// gave it back after seeing the token was no longer its own) while it
/// waits for `busy` to turn even.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GivenBack {
    /// The thread is out: its even `busy` store came before its `Release`
    /// store of 0, which an `Acquire` load of the owner synchronizes with.
    /// What [`CHECKED`] assumes.
    Out,
    /// As `wait_out` read it before the model found this (commit 6423b33;
    /// `wait_out` now does as [`GivenBack::Out`] says): a
    /// `Relaxed` load of the owner, then `owner_alive(0)`, which is false
    /// (0 is no identity), so the slot's thread counts as dead. When the
    /// revoker's last `busy` load found it odd (the thread inside, or just
    /// trying to enter) and the thread then left, tried again, saw the
    /// revoking token and gave its slot back before the owner load, the
    /// revoker resets the slot and reports `Recovered` for a live thread
    /// that is out. The ring's repair is then needless but harmless; what
    /// is wrong is that the revoker enters without having synchronized with
    /// the thread's last critical section (with a `Relaxed` "inside"
    /// counter, loom reports exactly that: a causality violation on the
    /// counter). See [`given_back_slot_read_as_dead_recovers_a_live_thread`].
    Dead,
}

/// A variant of the protocol, and how the model watches it.
#[derive(Clone, Copy, Debug)]
struct Variant {
    settle: Settle,
    given_back: GivenBack,
    /// How the "inside" counter is updated: `Relaxed`, so that it adds no
    /// happens-before edge the protocol itself does not give; `AcqRel` in
    /// the runs that must fail by one check only (two holders inside, or a
    /// live thread recovered from), not first by loom's report of an
    /// access to the counter that nothing ordered.
    inside_order: Ordering,
}

/// The protocol the model checks: the crate's `settle` and `wait_out`.
const CHECKED: Variant = Variant {
    settle: Settle::Fixed,
    given_back: GivenBack::Out,
    inside_order: Ordering::Relaxed,
};

/// `BiasSlot`: whose slot (an identity, 0 = free) and its `busy` counter
/// (odd = its thread is inside).
struct Slot {
    owner: AtomicU64,
    busy: AtomicU32,
}

/// The shared words, the model's bookkeeping, and the counter the critical
/// section increments.
struct Lock {
    variant: Variant,
    /// `RobustLock::owner`: 0 free, [`BIASED`], or a party's identity.
    owner: AtomicU64,
    /// `Bias::token`: slot index + 1 (0 = no bias), and [`REVOKING`].
    token: AtomicU32,
    slots: [Slot; SLOTS],
    /// Per party: false once it stopped for ever.
    alive: [AtomicBool; PARTIES],
    /// The lock's futex word (`RobustLock::word`): a wake count.
    futex: Mutex<u64>,
    sleepers: Condvar,
    /// Holders inside the critical section now (dead ones do not count).
    inside: AtomicU32,
    /// Critical sections whose write completed and whose party went on.
    acked: AtomicU32,
    /// What the lock protects.
    counter: UnsafeCell<u64>,
}

// SAFETY: `counter` is read and written only inside the critical section,
// which is what the model checks: loom panics on any two accesses to it not
// ordered by happens-before.
unsafe impl Sync for Lock {}

/// A party's identity in the owner word and the slots.
fn identity(id: usize) -> u64 {
    id as u64 + 1
}

impl Lock {
    fn new(variant: Variant) -> Self {
        Self {
            variant,
            owner: AtomicU64::new(0),
            token: AtomicU32::new(0),
            slots: [Slot {
                owner: AtomicU64::new(0),
                busy: AtomicU32::new(0),
            }],
            alive: std::array::from_fn(|_| AtomicBool::new(true)),
            futex: Mutex::new(0),
            sleepers: Condvar::new(),
            inside: AtomicU32::new(0),
            acked: AtomicU32::new(0),
            counter: UnsafeCell::new(0),
        }
    }

    /// Starts the lock biased to party `id` by the first slot (token 1), as
    /// `grant` leaves it.
    fn biased_to(self, id: usize) -> Self {
        self.slots[0].owner.store(identity(id), Ordering::Relaxed);
        self.token.store(1, Ordering::Relaxed);
        self.owner.store(BIASED, Ordering::Relaxed);
        self
    }

    /// `owner::owner_alive`: whether the thread with this identity runs. 0
    /// (a slot given back) unpacks to no identity, which counts as dead, as
    /// in the crate. SYNC: a `false` is an Acquire of everything the dead
    /// party did (its death went through the kernel, which was asked).
    fn is_alive(&self, who: u64) -> bool {
        match who {
            0 | BIASED => false,
            id => self.alive[(id - 1) as usize].load(Ordering::SeqCst),
        }
    }

    /// `wake::notify`: wakes every sleeper. Run right after each store that
    /// may end somebody's wait, as the crate does.
    fn notify(&self) {
        *self.futex.lock().unwrap() += 1;
        self.sleepers.notify_all();
    }

    /// `wake::prepare_sleep`: the futex value to sleep on, read before the
    /// waiter re-checks its condition.
    fn prepare_sleep(&self) -> u64 {
        *self.futex.lock().unwrap()
    }

    /// `futex::wait`: sleeps until a notify after `prepare_sleep` returned
    /// `seen` (at once if there was one); then announces again.
    fn sleep(&self, seen: u64) -> u64 {
        let mut word = self.futex.lock().unwrap();
        while *word == seen {
            word = self.sleepers.wait(word).unwrap();
        }
        *word
    }

    fn slot(&self, token: u32) -> &Slot {
        &self.slots[token as usize - 1]
    }
}

/// Counts the runs and the steps the killed party reached.
#[derive(Default)]
struct Probe {
    interleavings: StdAtomicUsize,
    /// Interleavings in which the killed party did die.
    deaths: StdAtomicUsize,
    victim_steps: StdAtomicUsize,
}

/// The party ran out of steps: it is dead and does nothing more.
#[derive(Debug)]
struct Died;

type Step<T> = Result<T, Died>;

/// How a party got the owner word (`owner::Locked`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Locked {
    Clean,
    Recovered,
}

/// A thread, with its step budget.
struct Party<'a> {
    lk: &'a Lock,
    id: usize,
    /// Stop for ever before step number `die_at` (0 = before the first).
    die_at: Option<usize>,
    steps: usize,
    /// Set for the party that is killed: records how far it got.
    probe: Option<&'a Probe>,
    /// Inside the critical section.
    in_critical: bool,
    /// Inside by the bias: `busy` odd and the token check passed.
    biased_inside: bool,
    /// How it got the owner word, last time.
    locked: Option<Locked>,
}

/// How a party's run ended.
#[derive(Debug)]
struct Report {
    died: bool,
    died_biased_inside: bool,
    locked: Option<Locked>,
}

impl<'a> Party<'a> {
    fn me(&self) -> u64 {
        identity(self.id)
    }

    /// A step boundary: the party stops for ever here if its budget ran out.
    fn step(&mut self) -> Step<()> {
        if self.die_at == Some(self.steps) {
            if self.in_critical {
                self.lk.inside.fetch_sub(1, self.lk.variant.inside_order);
            }
            self.lk.alive[self.id].store(false, Ordering::SeqCst);
            // Stands for the sleepers' timed waits: each ends within a
            // `LIVENESS_SLICE` and asks whether who it waits for lives.
            self.lk.notify();
            if let Some(probe) = self.probe {
                probe
                    .deaths
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            return Err(Died);
        }
        self.steps += 1;
        if let Some(probe) = self.probe {
            probe
                .victim_steps
                .fetch_max(self.steps, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Runs `body` as party `id` and says how it ended.
fn run(
    lk: &Lock,
    id: usize,
    die_at: Option<usize>,
    probe: Option<&Probe>,
    body: impl FnOnce(&mut Party<'_>) -> Step<()>,
) -> Report {
    let mut p = Party {
        lk,
        id,
        die_at,
        steps: 0,
        probe,
        in_critical: false,
        biased_inside: false,
        locked: None,
    };
    let died = body(&mut p).is_err();
    Report {
        died,
        died_biased_inside: died && p.biased_inside,
        locked: p.locked,
    }
}

/// The critical section: one read-then-write of the counter.
fn critical(p: &mut Party<'_>) -> Step<()> {
    let lk = p.lk;
    p.step()?;
    let before = lk.inside.fetch_add(1, lk.variant.inside_order);
    p.in_critical = true;
    assert!(
        before == 0,
        "two holders inside the lock: party {} entered with {before} inside",
        p.id
    );
    p.step()?;
    // SAFETY: inside the critical section (loom checks that no other access
    // is concurrent with this one).
    let n = lk.counter.with(|c| unsafe { *c });
    p.step()?;
    // SAFETY: as above.
    lk.counter.with_mut(|c| unsafe { *c = n + 1 });
    p.step()?;
    lk.acked.fetch_add(1, Ordering::Relaxed);
    lk.inside.fetch_sub(1, lk.variant.inside_order);
    p.in_critical = false;
    Ok(())
}

/// `enter_biased` (+ `lost_bias`): `true` = inside by the bias of slot
/// `token`; `false` = not (any more) this party's bias, slot given back.
fn enter_biased(p: &mut Party<'_>, token: u32) -> Step<bool> {
    let lk = p.lk;
    let slot = lk.slot(token);
    // Our slot still, and not entered already.
    if slot.owner.load(Ordering::Relaxed) != p.me() {
        return Ok(false);
    }
    let idle = slot.busy.load(Ordering::Relaxed);
    if idle & 1 != 0 {
        return Ok(false);
    }
    p.step()?;
    slot.busy.store(idle + 1, Ordering::Relaxed);
    p.step()?;
    // `fence::light_fence`: a compiler fence, made a full one on this CPU by
    // the revoker's `membarrier`; modelled as `fence(SeqCst)` (module docs).
    fence(Ordering::SeqCst);
    if lk.token.load(Ordering::Acquire) == token {
        p.biased_inside = true;
        return Ok(true);
    }
    // `lost_bias`: step out, then give the slot back.
    p.step()?;
    slot.busy.store(idle + 2, Ordering::Release);
    lk.notify();
    p.step()?;
    slot.owner.store(0, Ordering::Release);
    Ok(false)
}

/// `leave_biased`.
fn leave_biased(p: &mut Party<'_>, token: u32) -> Step<()> {
    let slot = p.lk.slot(token);
    let busy = slot.busy.load(Ordering::Relaxed);
    p.step()?;
    slot.busy.store(busy + 1, Ordering::Release);
    p.lk.notify();
    p.biased_inside = false;
    Ok(())
}

/// How a waiter goes on after a failed check, as `lock_slow` and
/// `wait_out` do: first it announces itself (`prepare_sleep`) and checks
/// again; after that, it sleeps until a notify, announcing itself again,
/// and checks again.
#[derive(Default)]
struct Wait {
    seen: Option<u64>,
}

impl Wait {
    /// `false`: a time-limited waiter (`patience` sleeps) would sleep past
    /// its deadline.
    fn next(&mut self, lk: &Lock, patience: &mut Option<usize>) -> bool {
        match self.seen {
            None => self.seen = Some(lk.prepare_sleep()),
            Some(seen) => {
                if let Some(left) = patience {
                    if *left == 0 {
                        return false;
                    }
                    *left -= 1;
                }
                self.seen = Some(lk.sleep(seen));
            }
        }
        true
    }
}

/// `settle` + `wait_out`, run by a new holder of the owner word that took
/// it from [`BIASED`] or from a dead owner. `None`: the wait ran out
/// (`patience`) and the lock went back to the bias.
fn settle(p: &mut Party<'_>, patience: &mut Option<usize>) -> Step<Option<Locked>> {
    let lk = p.lk;
    let word = lk.token.load(Ordering::Acquire);
    let token = word & !REVOKING;
    if token == 0 {
        return Ok(Some(Locked::Clean));
    }
    p.step()?;
    match lk.variant.settle {
        // The slot stays named until the wait is over: whoever takes over
        // from us if we die here waits for the biased thread too.
        Settle::Fixed => lk.token.store(token | REVOKING, Ordering::Relaxed),
        Settle::Old => lk.token.store(0, Ordering::Relaxed),
    }
    p.step()?;
    // `revoke_fence`: fence(SeqCst) + membarrier.
    fence(Ordering::SeqCst);
    let slot = lk.slot(token);
    let mut wait = Wait::default();
    let outcome = loop {
        if slot.busy.load(Ordering::Acquire) & 1 == 0 {
            break Locked::Clean;
        }
        let holder = match lk.variant.given_back {
            GivenBack::Out => {
                let holder = slot.owner.load(Ordering::Acquire);
                if holder == 0 {
                    break Locked::Clean;
                }
                holder
            }
            GivenBack::Dead => slot.owner.load(Ordering::Relaxed),
        };
        if !lk.is_alive(holder) {
            // Dead inside: nobody writes the slot any more.
            p.step()?;
            slot.busy.store(0, Ordering::Relaxed);
            p.step()?;
            slot.owner.store(0, Ordering::Release);
            break Locked::Recovered;
        }
        if !wait.next(lk, patience) {
            // Give the lock back as found: token restored, owner BIASED.
            p.step()?;
            lk.token.store(token, Ordering::Relaxed);
            p.step()?;
            lk.owner.store(BIASED, Ordering::Release);
            lk.notify();
            return Ok(None);
        }
    };
    if lk.variant.settle == Settle::Fixed {
        p.step()?;
        lk.token.store(0, Ordering::Relaxed);
    }
    Ok(Some(outcome))
}

/// Takes the owner word (`try_lock`, then `lock_slow`: `revoke` from
/// [`BIASED`], takeover from a dead owner, each followed by [`settle`]).
/// `None`: a time-limited taker (`patience`) gave up.
fn lock(p: &mut Party<'_>, mut patience: Option<usize>) -> Step<Option<Locked>> {
    let lk = p.lk;
    let me = p.me();
    let mut wait = Wait::default();
    let locked = loop {
        let owner = lk.owner.load(Ordering::Relaxed);
        // Free (`try_lock`), biased (`revoke`), or a dead owner's (takeover:
        // it may have died revoking or granting, so settle after it too).
        if owner == 0 || owner == BIASED || !lk.is_alive(owner) {
            p.step()?;
            if lk
                .owner
                .compare_exchange(owner, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                break match owner {
                    0 => Some(Locked::Clean),
                    BIASED => settle(p, &mut patience)?,
                    _ => settle(p, &mut patience)?.map(|_| Locked::Recovered),
                };
            }
            // Lost the race: look again (the failed CAS read the winner's
            // store, so the next load cannot return an older value).
            continue;
        }
        if !wait.next(lk, &mut patience) {
            break None;
        }
    };
    p.locked = locked;
    Ok(locked)
}

/// `unlock` of the owner word without a grant.
fn unlock(p: &mut Party<'_>) -> Step<()> {
    p.step()?;
    p.lk.owner.store(0, Ordering::Release);
    p.lk.notify();
    Ok(())
}

/// `grant`: unlocks by biasing the lock to this party. `Some(token)` when
/// granted, `None` when no slot was to be had (the lock stays held).
fn grant(p: &mut Party<'_>) -> Step<Option<u32>> {
    let lk = p.lk;
    let me = p.me();
    let owned = |s: &Slot| s.owner.load(Ordering::Relaxed) == me;
    let free = |s: &Slot| s.owner.load(Ordering::Acquire) == 0;
    let dead = |s: &Slot| !lk.is_alive(s.owner.load(Ordering::Relaxed));
    let Some(index) = lk
        .slots
        .iter()
        .position(owned)
        .or_else(|| lk.slots.iter().position(free))
        .or_else(|| lk.slots.iter().position(dead))
    else {
        return Ok(None);
    };
    let slot = &lk.slots[index];
    if !owned(slot) {
        // A free slot, or a dead thread's: nobody else writes it now.
        p.step()?;
        slot.busy.store(0, Ordering::Relaxed);
        p.step()?;
        slot.owner.store(me, Ordering::Relaxed);
    }
    let token = index as u32 + 1;
    p.step()?;
    lk.token.store(token, Ordering::Relaxed);
    p.step()?;
    lk.owner.store(BIASED, Ordering::Release);
    lk.notify();
    Ok(Some(token))
}

/// One operation by the owner word: lock, critical section, unlock. A
/// time-limited taker that gave up does nothing.
fn by_owner_word(p: &mut Party<'_>, patience: Option<usize>) -> Step<()> {
    if lock(p, patience)?.is_some() {
        critical(p)?;
        unlock(p)?;
    }
    Ok(())
}

/// A thread holding the bias of slot `token` that runs `entries`
/// operations: by the bias while it has it, else by the owner word.
fn biased_thread(p: &mut Party<'_>, mut token: Option<u32>, entries: usize) -> Step<()> {
    for _ in 0..entries {
        if let Some(t) = token {
            if enter_biased(p, t)? {
                critical(p)?;
                leave_biased(p, t)?;
                continue;
            }
            token = None;
        }
        by_owner_word(p, None)?;
    }
    Ok(())
}

/// Joins the parties, then checks what every run must leave behind.
fn finish(lk: &Lock, reports: &[Report]) {
    let dead = reports.iter().filter(|r| r.died).count() as u64;
    let acked = u64::from(lk.acked.load(Ordering::Relaxed));
    // SAFETY: every party has been joined.
    let counter = lk.counter.with(|c| unsafe { *c });
    assert!(
        counter >= acked,
        "an acknowledged operation was lost: counter {counter}, acknowledged {acked}"
    );
    assert!(
        counter <= acked + dead,
        "counter {counter} > acknowledged {acked} + dead {dead}"
    );
    assert_eq!(lk.inside.load(Ordering::Relaxed), 0);
    let owner = lk.owner.load(Ordering::Relaxed);
    assert!(
        owner == 0 || owner == BIASED || !lk.is_alive(owner),
        "a live party ended holding the owner word"
    );
    if lk.token.load(Ordering::Relaxed) & REVOKING != 0 {
        assert!(
            owner != 0 && owner != BIASED && !lk.is_alive(owner),
            "a revocation was left half done by a live party"
        );
    }
}

/// Spawns party `id` of a scenario: the killed one (`victim`) gets `die_at`
/// and the probe.
fn spawn(
    lk: &Arc<Lock>,
    probe: &StdArc<Probe>,
    id: usize,
    victim: usize,
    die_at: Option<usize>,
    body: impl FnOnce(&mut Party<'_>) -> Step<()> + Send + 'static,
) -> thread::JoinHandle<Report> {
    let lk = Arc::clone(lk);
    let probe = StdArc::clone(probe);
    thread::spawn(move || {
        let killed = id == victim;
        run(
            &lk,
            id,
            die_at.filter(|_| killed),
            killed.then_some(&*probe),
            body,
        )
    })
}

// Party ids.
const B: usize = 0;
const R: usize = 1;
const W: usize = 2;

/// (a) and (c): B biased, entering `entries` times; R revoking (waiting at
/// most `patience` turns, if given), killed; W taking the lock.
fn revoker_scenario(
    variant: Variant,
    entries: usize,
    patience: Option<usize>,
    die_at: Option<usize>,
    probe: &StdArc<Probe>,
) {
    let lk = Arc::new(Lock::new(variant).biased_to(B));
    let b = spawn(&lk, probe, B, R, die_at, move |p| {
        biased_thread(p, Some(1), entries)
    });
    let r = spawn(&lk, probe, R, R, die_at, move |p| {
        by_owner_word(p, patience)
    });
    let w = spawn(&lk, probe, W, R, die_at, |p| by_owner_word(p, None));
    let reports = [b.join().unwrap(), r.join().unwrap(), w.join().unwrap()];
    finish(&lk, &reports);
}

/// (b): B biased, entering `entries` times, killed; R revoking.
fn dying_biased_scenario(
    variant: Variant,
    entries: usize,
    die_at: Option<usize>,
    probe: &StdArc<Probe>,
) {
    let lk = Arc::new(Lock::new(variant).biased_to(B));
    let b = spawn(&lk, probe, B, B, die_at, move |p| {
        biased_thread(p, Some(1), entries)
    });
    let r = spawn(&lk, probe, R, B, die_at, |p| by_owner_word(p, None));
    let reports = [b.join().unwrap(), r.join().unwrap()];
    if reports[0].died_biased_inside {
        assert_eq!(
            reports[1].locked,
            Some(Locked::Recovered),
            "the biased thread died inside, and the revoker did not recover"
        );
    }
    if reports[1].locked == Some(Locked::Recovered) {
        assert!(
            reports[0].died,
            "recovered from a live biased thread: its slot reset, the lock reported Recovered"
        );
    }
    finish(&lk, &reports);
}

/// Who held the one slot before (d) starts.
#[derive(Clone, Copy, Debug)]
enum SlotBefore {
    Free,
    /// A thread (party [`W`], never spawned) that died entering by a bias
    /// already revoked: `busy` odd, slot still its own.
    Dead,
}

/// (d): H (party [`B`]) takes the lock, grants itself the bias, enters by
/// it once; killed. T (party [`R`]) takes the lock.
fn granting_scenario(slot_before: SlotBefore, die_at: Option<usize>, probe: &StdArc<Probe>) {
    let lk = Lock::new(CHECKED);
    if let SlotBefore::Dead = slot_before {
        lk.alive[W].store(false, Ordering::SeqCst);
        lk.slots[0].owner.store(identity(W), Ordering::Relaxed);
        lk.slots[0].busy.store(1, Ordering::Relaxed);
    }
    let lk = Arc::new(lk);
    let h = spawn(&lk, probe, B, B, die_at, |p| {
        if lock(p, None)?.is_none() {
            return Ok(());
        }
        critical(p)?;
        let token = grant(p)?;
        if token.is_none() {
            unlock(p)?;
        }
        biased_thread(p, token, 1)
    });
    let t = spawn(&lk, probe, R, B, die_at, |p| by_owner_word(p, None));
    let reports = [h.join().unwrap(), t.join().unwrap()];
    finish(&lk, &reports);
}

fn builder() -> Builder {
    let mut builder = Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(PREEMPTIONS);
    }
    builder
}

/// Says which run failed, when one does (dropped while panicking).
struct Failing<'a>(&'a str, Option<usize>);

impl Drop for Failing<'_> {
    fn drop(&mut self) {
        eprintln!("{}: die_at {:?}: FAILED", self.0, self.1);
    }
}

/// Explores `model` with nobody killed, then once for every step the killed
/// party reached, killing it there: every `die_at` is a separate `loom`
/// model.
fn every_death(
    name: &str,
    model: impl Fn(Option<usize>, &StdArc<Probe>) + Copy + Send + Sync + 'static,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let start = Instant::now();
    let probe = StdArc::new(Probe::default());
    let mut total = 0;
    let mut die_at = None;
    loop {
        let t = Instant::now();
        probe.interleavings.store(0, Relaxed);
        probe.deaths.store(0, Relaxed);
        let p = StdArc::clone(&probe);
        let failing = Failing(name, die_at);
        builder().check(move || {
            p.interleavings.fetch_add(1, Relaxed);
            model(die_at, &p);
        });
        std::mem::forget(failing);
        let n = probe.interleavings.load(Relaxed);
        total += n;
        eprintln!(
            "{name}: die_at {die_at:?}: {n} interleavings ({} with a death), {:.2?}",
            probe.deaths.load(Relaxed),
            t.elapsed()
        );
        let next = die_at.map_or(0, |k| k + 1);
        if next >= probe.victim_steps.load(Relaxed) {
            break;
        }
        die_at = Some(next);
    }
    eprintln!(
        "{name}: killed at each of {} steps, {total} interleavings in all, {:.2?}",
        probe.victim_steps.load(Relaxed),
        start.elapsed()
    );
}

#[test]
fn a_revoker_killed_at_every_step() {
    for entries in [1, 2] {
        every_death(&format!("(a) entries {entries}"), move |die_at, probe| {
            revoker_scenario(CHECKED, entries, None, die_at, probe);
        });
    }
}

#[test]
fn b_biased_thread_killed_at_every_step() {
    for entries in [1, 2] {
        every_death(&format!("(b) entries {entries}"), move |die_at, probe| {
            dying_biased_scenario(CHECKED, entries, die_at, probe);
        });
    }
}

#[test]
fn c_time_limited_revoker_gives_up() {
    for entries in [1, 2] {
        for patience in [0, 1] {
            let name = format!("(c) entries {entries}, patience {patience}");
            every_death(&name, move |die_at, probe| {
                revoker_scenario(CHECKED, entries, Some(patience), die_at, probe);
            });
        }
    }
}

#[test]
fn d_holder_granting_itself_killed_at_every_step() {
    for slot_before in [SlotBefore::Free, SlotBefore::Dead] {
        every_death(
            &format!("(d) slot {slot_before:?}"),
            move |die_at, probe| {
                granting_scenario(slot_before, die_at, probe);
            },
        );
    }
}

/// The seeded bug: scenario (a) with the old `settle`. A revoker that dies
/// after clearing the token leaves its successor nothing to wait for, and
/// the successor enters beside the biased thread.
#[test]
#[should_panic(expected = "two holders inside the lock")]
fn seeded_bug_old_settle_lets_two_in() {
    let variant = Variant {
        settle: Settle::Old,
        inside_order: Ordering::AcqRel,
        ..CHECKED
    };
    every_death("(a) old settle", move |die_at, probe| {
        revoker_scenario(variant, 1, None, die_at, probe);
    });
}

/// Scenario (b), B entering twice, with a given-back slot read as dead
/// ([`GivenBack::Dead`], as `wait_out` reads it): the revoker recovers from
/// a live thread. Found with nobody killed.
#[test]
#[should_panic(expected = "recovered from a live biased thread")]
fn given_back_slot_read_as_dead_recovers_a_live_thread() {
    let variant = Variant {
        given_back: GivenBack::Dead,
        inside_order: Ordering::AcqRel,
        ..CHECKED
    };
    every_death("(b) given back read as dead", move |die_at, probe| {
        dying_biased_scenario(variant, 2, die_at, probe);
    });
}
