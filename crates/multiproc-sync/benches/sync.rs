//! Lock and event costs, with the peers this project compares itself with
//! measured in the same run:
//!
//! - `uncontended`: lock + unlock with nobody else around — multiproc
//!   `Lock`/`RLock`, `std::sync::Mutex` (in-process reference), a
//!   process-shared pthread mutex through `raw_sync`, and a robust
//!   process-shared pthread mutex (`PTHREAD_MUTEX_ROBUST`) through libc;
//! - `contended_2proc`: lock + increment + unlock while a forked process
//!   does the same in a loop (hand-offs between two processes);
//! - `event_round_trip`: `set` in one process, `wait` in the other and back.
//!
//! ```text
//! cargo bench -p multiproc-sync --bench sync -- --warm-up-time 1 --measurement-time 2
//! ```
#![allow(unsafe_code)]

use criterion::{Criterion, criterion_group, criterion_main};
use multiproc_core::Segment;
use multiproc_sync::{Event, Lock, RLock};
use multiproc_testkit::fork_child;
use std::hint::black_box;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A robust, process-shared pthread mutex in a shared segment: the peer
/// measured, so it is the C library's own, through libc (rustix has no
/// pthread API).
struct RobustMutex {
    segment: Segment,
}

impl RobustMutex {
    fn new() -> Self {
        let segment = Segment::anonymous(4096).unwrap();
        let mutex = segment.as_ptr().cast::<libc::pthread_mutex_t>();
        // SAFETY: the segment is fresh, page-aligned and large enough for a
        // pthread_mutex_t; the attribute object lives on this stack frame
        // and is destroyed after use.
        unsafe {
            let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
            assert_eq!(libc::pthread_mutexattr_init(attr.as_mut_ptr()), 0);
            assert_eq!(
                libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED),
                0
            );
            assert_eq!(
                libc::pthread_mutexattr_setrobust(attr.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST),
                0
            );
            assert_eq!(libc::pthread_mutex_init(mutex, attr.as_ptr()), 0);
            libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
        }
        Self { segment }
    }

    fn ptr(&self) -> *mut libc::pthread_mutex_t {
        self.segment.as_ptr().cast()
    }

    #[inline]
    fn lock(&self) {
        // SAFETY: initialised in `new`, mapped while `self` lives.
        let rc = unsafe { libc::pthread_mutex_lock(self.ptr()) };
        if rc == libc::EOWNERDEAD {
            // SAFETY: as above; we hold the mutex after EOWNERDEAD.
            unsafe { libc::pthread_mutex_consistent(self.ptr()) };
        }
    }

    #[inline]
    fn unlock(&self) {
        // SAFETY: initialised in `new`; called by the thread that locked it.
        unsafe { libc::pthread_mutex_unlock(self.ptr()) };
    }
}

/// A process-shared (not robust) pthread mutex through `raw_sync`.
struct RawSyncMutex {
    _segment: Segment,
    mutex: Box<dyn raw_sync::locks::LockImpl>,
}

impl RawSyncMutex {
    fn new() -> Self {
        use raw_sync::locks::{LockInit, Mutex};
        let segment = Segment::anonymous(4096).unwrap();
        let base = segment.as_ptr();
        // SAFETY: `base` points to 4096 writable bytes that outlive the
        // mutex (the segment is kept beside it); the data pointer is past
        // the mutex.
        let (mutex, _) = unsafe { Mutex::new(base, base.add(2048)) }.unwrap();
        Self {
            _segment: segment,
            mutex,
        }
    }
}

/// On a shared, noisy machine successive criterion benchmarks can see very
/// different load. This runs the two locks of the headline ratio in
/// alternating batches and prints the median of the per-batch ratios,
/// which load shifts affect far less.
fn paired_ratio(lock: &Lock, robust: &RobustMutex) {
    const BATCH: u32 = 200_000;
    const ROUNDS: usize = 21;
    let mut ratios = Vec::with_capacity(ROUNDS);
    let mut ours_ns = Vec::with_capacity(ROUNDS);
    let mut theirs_ns = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for _ in 0..BATCH {
            drop(black_box(lock.lock().unwrap()));
        }
        let ours = start.elapsed().as_secs_f64();
        let start = Instant::now();
        for _ in 0..BATCH {
            robust.lock();
            robust.unlock();
        }
        let theirs = start.elapsed().as_secs_f64();
        ratios.push(ours / theirs);
        ours_ns.push(ours * 1e9 / f64::from(BATCH));
        theirs_ns.push(theirs * 1e9 / f64::from(BATCH));
    }
    for v in [&mut ratios, &mut ours_ns, &mut theirs_ns] {
        v.sort_by(f64::total_cmp);
    }
    let mid = ROUNDS / 2;
    eprintln!(
        "paired uncontended lock+unlock: multiproc Lock {:.1} ns, robust pthread {:.1} ns; \
         ratio median {:.2} (min {:.2}, max {:.2}) over {ROUNDS} alternating batches of {BATCH}",
        ours_ns[mid],
        theirs_ns[mid],
        ratios[mid],
        ratios[0],
        ratios[ROUNDS - 1]
    );
}

fn uncontended(c: &mut Criterion) {
    let mut group = c.benchmark_group("uncontended");
    let lock = Lock::new().unwrap();
    paired_ratio(&lock, &RobustMutex::new());
    group.bench_function("multiproc_lock", |b| {
        b.iter(|| drop(black_box(lock.lock().unwrap())));
    });
    let rlock = RLock::new().unwrap();
    group.bench_function("multiproc_rlock", |b| {
        b.iter(|| drop(black_box(rlock.lock().unwrap())));
    });
    let std_mutex = std::sync::Mutex::new(());
    group.bench_function("std_mutex", |b| {
        b.iter(|| drop(black_box(std_mutex.lock().unwrap())));
    });
    let raw = RawSyncMutex::new();
    group.bench_function("raw_sync_pshared_pthread", |b| {
        b.iter(|| drop(black_box(raw.mutex.lock().unwrap())));
    });
    let robust = RobustMutex::new();
    group.bench_function("robust_pthread", |b| {
        b.iter(|| {
            robust.lock();
            robust.unlock();
        });
    });
    group.finish();
}

/// Control words for the forked peer: stop flag and a counter.
struct Control {
    segment: Segment,
}

impl Control {
    fn new() -> Self {
        Self {
            segment: Segment::anonymous(4096).unwrap(),
        }
    }
    fn stop(&self) -> &AtomicU32 {
        self.segment.atomic_u32(0).unwrap()
    }
    fn ready(&self) -> &AtomicU32 {
        self.segment.atomic_u32(4).unwrap()
    }
    fn counter(&self) -> &AtomicU64 {
        self.segment.view(64).unwrap()
    }
}

/// Measures `iters` runs of `op` while a forked child runs `peer` in a loop.
fn contended(iters: u64, control: &Control, op: impl Fn(), peer: impl Fn()) -> Duration {
    control.stop().store(0, Ordering::SeqCst);
    control.ready().store(0, Ordering::SeqCst);
    let child = fork_child(|| {
        control.ready().store(1, Ordering::SeqCst);
        while control.stop().load(Ordering::Relaxed) == 0 {
            peer();
        }
    });
    while control.ready().load(Ordering::SeqCst) == 0 {
        std::hint::spin_loop();
    }
    let start = Instant::now();
    for _ in 0..iters {
        op();
    }
    let took = start.elapsed();
    control.stop().store(1, Ordering::SeqCst);
    child.join();
    took
}

fn contended_2proc(c: &mut Criterion) {
    let mut group = c.benchmark_group("contended_2proc");
    let control = Control::new();
    let lock = Lock::new().unwrap();
    let bump = || {
        let _guard = lock.lock().unwrap();
        control.counter().fetch_add(1, Ordering::Relaxed);
    };
    group.bench_function("multiproc_lock", |b| {
        b.iter_custom(|iters| contended(iters, &control, bump, bump));
    });
    let robust = RobustMutex::new();
    let bump = || {
        robust.lock();
        control.counter().fetch_add(1, Ordering::Relaxed);
        robust.unlock();
    };
    group.bench_function("robust_pthread", |b| {
        b.iter_custom(|iters| contended(iters, &control, bump, bump));
    });
    let raw = RawSyncMutex::new();
    let bump = || {
        let _guard = raw.mutex.lock().unwrap();
        control.counter().fetch_add(1, Ordering::Relaxed);
    };
    group.bench_function("raw_sync_pshared_pthread", |b| {
        b.iter_custom(|iters| contended(iters, &control, bump, bump));
    });
    group.finish();
}

fn event_round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("event_round_trip");
    let ping = Event::new().unwrap();
    let pong = Event::new().unwrap();
    let control = Control::new();
    group.bench_function("multiproc_event", |b| {
        b.iter_custom(|iters| {
            ping.clear();
            pong.clear();
            control.counter().store(iters, Ordering::SeqCst);
            let child = fork_child(|| {
                for _ in 0..control.counter().load(Ordering::SeqCst) {
                    ping.wait();
                    ping.clear();
                    pong.set();
                }
            });
            let start = Instant::now();
            for _ in 0..iters {
                ping.set();
                pong.wait();
                pong.clear();
            }
            let took = start.elapsed();
            child.join();
            took
        });
    });
    group.finish();
}

criterion_group!(benches, uncontended, contended_2proc, event_round_trip);
criterion_main!(benches);
