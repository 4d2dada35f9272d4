//! [`SpinWait`] on a CPU it shares with another busy thread: once its
//! yields run the other task, a waiter yields after a few spins, and a
//! whole wait still yields no more often than one that never shared.

use multiproc_core::futex::{SPIN_LIMIT, SpinWait};
use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};
use std::sync::atomic::{AtomicBool, Ordering};

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) {
    let mut set = CpuSet::new();
    set.set(cpu);
    sched_setaffinity(None, &set).expect("sched_setaffinity");
}

/// The first CPU this process may run on.
fn some_cpu() -> usize {
    let allowed = sched_getaffinity(None).expect("sched_getaffinity");
    (0..CpuSet::MAX_CPU)
        .find(|&cpu| allowed.is_set(cpu))
        .expect("an allowed CPU")
}

/// How many spins of a fresh wait come before its first yield (the
/// yielding spin counted), or `None` when it ran out without one.
fn spins_to_first_yield() -> Option<u32> {
    let mut spin = SpinWait::new();
    let mut spins = 0;
    while spin.spin() {
        spins += 1;
        if spin.yielded() {
            return Some(spins);
        }
    }
    None
}

/// Yields in one whole wait.
fn yields_in_a_wait() -> u32 {
    let mut spin = SpinWait::new();
    let mut yields = 0;
    while spin.spin() {
        yields += u32::from(spin.yielded());
    }
    yields
}

#[test]
fn a_waiter_whose_yields_run_another_task_yields_sooner_but_not_more_often() {
    let cpu = some_cpu();
    pin_to(cpu);
    let started = AtomicBool::new(false);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            pin_to(cpu);
            started.store(true, Ordering::Release);
            while !stop.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        // The busy thread runs only when this one gives it the CPU.
        while !started.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        // A new thread has not seen a yield run anything yet: it spins a
        // full round first. The scheduler may give the CPU straight back
        // after a yield (this thread has run less than the busy one), but
        // not for ever: once a yield has run the busy thread, the next
        // wait yields after a few spins.
        let first = spins_to_first_yield().expect("a wait of SPIN_LIMIT spins yields");
        let later = (0..1000)
            .filter_map(|_| spins_to_first_yield())
            .find(|&spins| spins < first);
        let yields = yields_in_a_wait();
        stop.store(true, Ordering::Relaxed);
        assert!(
            later.is_some_and(|later| later * 4 <= first),
            "with a busy thread on the CPU, the first yield of 1000 waits never came \
             early: {later:?} spins (a new thread's: {first})"
        );
        // One round of spins per yield either way (the last round cut
        // short by the limit may still yield when yields come early).
        let rounds = SPIN_LIMIT.div_ceil(first);
        assert!(
            yields <= rounds,
            "{yields} yields in one wait on a shared CPU, against {rounds} rounds of spins"
        );
    });
}
