//! The waiter/token word of a `Condition`, kept apart so that loom can
//! model it (`tests/loom.rs` includes this file with loom's atomics).
//!
//! # Word
//!
//! One `AtomicU64`: registered waiters `W` in the high 32 bits, wake tokens
//! `S` in the low 32 bits. With `T` the number of threads inside a wait,
//! every transition keeps the invariant **`W + S == T`**:
//!
//! | operation | by | transition | `T` |
//! |---|---|---|---|
//! | `register` | a waiter, still holding the lock | `W += 1` | +1 |
//! | `notify(n)` | a notifier | `k = min(n, W)`: `W -= k`, `S += k` | = |
//! | `try_consume` | a waiter, after any wake-up | if `S > 0`: `S -= 1`, it returns notified | −1 |
//! | `cancel` | a waiter whose deadline passed | if `W > 0`: `W -= 1` (timed out), else `S -= 1` (notified after all) | −1 |
//!
//! A waiter in `cancel` can always do one of the two because `W + S ==
//! T >= 1`. So exactly `k` waiters return notified for a `notify` that
//! handed out `k` tokens, no token is lost, and a waiter that times out
//! never swallows one meant for another (if it takes a token, it counts as
//! notified). Tokens are interchangeable, as in CPython's
//! `multiprocessing.Condition`: any waiter may take any token.
//!
//! Every operation is one CAS loop (`fetch_update`) with `AcqRel`: a
//! waiter that takes a token synchronises with the notifier that made it.

use super::atomic::{AtomicU64, Ordering};

const ONE_WAITER: u64 = 1 << 32;
const TOKENS: u64 = u32::MAX as u64;

fn waiters(word: u64) -> u64 {
    word >> 32
}

fn tokens(word: u64) -> u64 {
    word & TOKENS
}

/// A waiter enters (before it releases the lock).
pub(crate) fn register(word: &AtomicU64) {
    // SYNC: AcqRel RMW; the lock the waiter still holds orders it before
    // any notify made under the lock.
    word.fetch_add(ONE_WAITER, Ordering::AcqRel);
}

/// Hands out up to `n` tokens, one per registered waiter; returns how many.
pub(crate) fn notify(word: &AtomicU64, n: u32) -> u32 {
    let mut given = 0;
    let _ = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
        let k = waiters(w).min(u64::from(n));
        given = k as u32;
        (k > 0).then_some(w - k * ONE_WAITER + k)
    });
    given
}

/// Takes a token if there is one; returns whether it did.
pub(crate) fn try_consume(word: &AtomicU64) -> bool {
    // SYNC: AcqRel pairs with the RMW in `notify` that made the token.
    word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
        (tokens(w) > 0).then(|| w - 1)
    })
    .is_ok()
}

/// What `cancel` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cancel {
    /// The waiter withdrew its registration: it timed out.
    Withdrew,
    /// All registrations had been notified: the waiter took a token.
    Consumed,
}

/// A waiter leaves at its deadline.
pub(crate) fn cancel(word: &AtomicU64) -> Cancel {
    let mut outcome = Cancel::Withdrew;
    let _ = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
        if waiters(w) > 0 {
            outcome = Cancel::Withdrew;
            Some(w - ONE_WAITER)
        } else if tokens(w) > 0 {
            outcome = Cancel::Consumed;
            Some(w - 1)
        } else {
            // Impossible while the invariant holds (a corrupt word):
            // leave it alone and report a timeout.
            outcome = Cancel::Withdrew;
            None
        }
    });
    outcome
}

/// `(waiters, tokens)`, a snapshot.
#[allow(dead_code)]
pub(crate) fn counts(word: &AtomicU64) -> (u32, u32) {
    let w = word.load(Ordering::Acquire);
    (waiters(w) as u32, tokens(w) as u32)
}
