//! A loom model of the `Condition` waiter/token word (`src/condition/tokens.rs`).
//!
//! Not part of the normal test run (loom needs `--cfg loom`):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p multiproc-sync --test loom --release
//! ```
//!
//! The futex sleep is not modelled (loom has no futexes); what is checked is
//! the token bookkeeping every wait and notify goes through: under every
//! interleaving, `notify(n)` lets exactly `min(n, registered)` waiters
//! return notified, a waiter that times out never takes a token meant for
//! another, and the word returns to zero.
#![cfg(loom)]

mod atomic {
    pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
}

#[allow(dead_code, unreachable_pub)]
#[path = "../src/condition/tokens.rs"]
mod tokens;

use loom::sync::Arc;
use loom::sync::atomic::{AtomicU32, Ordering};
use loom::thread;

/// A waiter that may give up: consumes a token or cancels at its
/// "deadline" (after `patience` failed polls). Returns whether it was
/// notified.
fn waiter(word: &atomic::AtomicU64, patience: usize) -> bool {
    for _ in 0..patience {
        if tokens::try_consume(word) {
            return true;
        }
        thread::yield_now();
    }
    tokens::cancel(word) == tokens::Cancel::Consumed
}

#[test]
fn notify_one_of_two_waiters_with_timeouts() {
    loom::model(|| {
        let word = Arc::new(atomic::AtomicU64::new(0));
        let notified = Arc::new(AtomicU32::new(0));
        // Both waiters register before the notifier runs (they hold the
        // lock while registering, and the notifier takes it after them).
        tokens::register(&word);
        tokens::register(&word);
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let word = Arc::clone(&word);
                let notified = Arc::clone(&notified);
                thread::spawn(move || {
                    if waiter(&word, 1) {
                        notified.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        let given = tokens::notify(&word, 1);
        for handle in handles {
            handle.join().unwrap();
        }
        // Waiters that gave up before the notify are not counted; every
        // token handed out was taken by exactly one waiter.
        assert!(given <= 1);
        assert_eq!(notified.load(Ordering::SeqCst), given);
        assert_eq!(tokens::counts(&word), (0, 0));
    });
}

#[test]
fn notify_races_with_a_cancelling_waiter() {
    loom::model(|| {
        let word = Arc::new(atomic::AtomicU64::new(0));
        tokens::register(&word);
        let w = Arc::clone(&word);
        let waiter = thread::spawn(move || waiter(&w, 0));
        let given = tokens::notify(&word, 5);
        let notified = waiter.join().unwrap();
        // Either the notify came first (the waiter takes the token and
        // counts as notified) or the cancel did (nothing handed out).
        assert_eq!(given == 1, notified);
        assert_eq!(tokens::counts(&word), (0, 0));
    });
}

#[test]
fn two_notifiers_and_a_late_registration() {
    loom::model(|| {
        let word = Arc::new(atomic::AtomicU64::new(0));
        tokens::register(&word);
        let w1 = Arc::clone(&word);
        let n1 = thread::spawn(move || tokens::notify(&w1, 1));
        let w2 = Arc::clone(&word);
        let late = thread::spawn(move || {
            tokens::register(&w2);
            waiter(&w2, 1)
        });
        let first = waiter(&word, 2);
        let given = n1.join().unwrap();
        let second = late.join().unwrap();
        let leftover = tokens::counts(&word);
        // Every token handed out is taken by exactly one waiter.
        assert_eq!(u32::from(first) + u32::from(second), given);
        assert_eq!(leftover, (0, 0));
    });
}
