//! Shared data costs: `Value` increment under its lock against a raw atomic
//! in place (1 and 2 processes), and `Array` bulk copies against `memcpy`.
//!
//! Run: `cargo bench -p multiproc-shm --bench shm`
#![allow(unsafe_code)]

use criterion::{BenchmarkId, Criterion, Throughput};
use multiproc_core::process::{self, Forked};
use multiproc_core::{Segment, futex};
use multiproc_shm::{Array, RawValue, Value};
use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A forked partner that runs `work(n)` each time the parent asks, so two
/// processes contend for the same shared word.
struct Partner {
    control: Segment,
    pid: rustix::process::Pid,
}

const GO: usize = 0;
const DONE: usize = 64;
const COUNT: usize = 128;

impl Partner {
    fn start(work: impl Fn(u64)) -> Self {
        let control = Segment::anonymous(4096).unwrap();
        // SAFETY: the contract of `process::fork` holds: the bench is
        // single-threaded; the child only works on shared memory and
        // leaves with `exit_now`.
        let pid = match unsafe { process::fork() }.expect("fork") {
            Forked::Parent(pid) => pid,
            Forked::Child => {
                let go = control.atomic_u32(GO).unwrap();
                let done = control.atomic_u32(DONE).unwrap();
                let count = control.view::<std::sync::atomic::AtomicU64>(COUNT).unwrap();
                let mut round = 1;
                loop {
                    let _ = futex::wait_until(go, None, |v| v >= round);
                    if go.load(Ordering::Acquire) == u32::MAX {
                        process::exit_now(0);
                    }
                    work(count.load(Ordering::Relaxed));
                    done.store(round, Ordering::Release);
                    futex::wake_all(done);
                    round += 1;
                }
            }
        };
        Self { control, pid }
    }

    /// Runs `work(n)` here while the partner runs it there.
    fn together(&self, round: &mut u32, n: u64, work: impl Fn(u64)) -> Duration {
        let go = self.control.atomic_u32(GO).unwrap();
        let done: &AtomicU32 = self.control.atomic_u32(DONE).unwrap();
        self.control
            .view::<std::sync::atomic::AtomicU64>(COUNT)
            .unwrap()
            .store(n, Ordering::Relaxed);
        *round += 1;
        let start = Instant::now();
        go.store(*round, Ordering::Release);
        futex::wake_all(go);
        work(n);
        let target = *round;
        let _ = futex::wait_until(done, None, |v| v >= target);
        start.elapsed()
    }
}

impl Drop for Partner {
    fn drop(&mut self) {
        let go = self.control.atomic_u32(GO).unwrap();
        go.store(u32::MAX, Ordering::Release);
        futex::wake_all(go);
        let _ = rustix::process::waitpid(Some(self.pid), rustix::process::WaitOptions::empty());
    }
}

fn increments(c: &mut Criterion) {
    let mut group = c.benchmark_group("increment");
    group.throughput(Throughput::Elements(1));
    let value = Value::new(0u64).unwrap();
    let raw = RawValue::new(0u64).unwrap();
    let locked = |n: u64| {
        for _ in 0..n {
            let g = value.lock().unwrap_or_else(|d| d.into_inner());
            g.set(0, g.get(0).unwrap() + 1).unwrap();
        }
    };
    let atomic = |n: u64| {
        for _ in 0..n {
            raw.atomic().fetch_add(1, Ordering::Relaxed);
        }
    };
    group.bench_function("value_locked/1proc", |b| {
        b.iter_custom(|n| time(|| locked(n)))
    });
    group.bench_function("raw_atomic/1proc", |b| {
        b.iter_custom(|n| time(|| atomic(n)))
    });
    {
        let partner = Partner::start(locked);
        let mut round = 0;
        group.bench_function("value_locked/2proc", |b| {
            b.iter_custom(|n| partner.together(&mut round, n, locked))
        });
    }
    {
        let partner = Partner::start(atomic);
        let mut round = 0;
        group.bench_function("raw_atomic/2proc", |b| {
            b.iter_custom(|n| partner.together(&mut round, n, atomic))
        });
    }
    group.finish();
}

fn time(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

fn bulk_copy(c: &mut Criterion) {
    let mut group = c.benchmark_group("bulk_copy");
    for size in [64 * 1024usize, 1 << 20] {
        let elements = size / 8;
        group.throughput(Throughput::Bytes(size as u64));
        let array = Array::filled(1u64, elements).unwrap();
        let local = vec![2u64; elements];
        let mut dst = vec![0u64; elements];
        group.bench_with_input(
            BenchmarkId::new("array_write_slice", size),
            &size,
            |b, _| b.iter(|| array.write_slice(0, black_box(&local)).unwrap()),
        );
        group.bench_with_input(BenchmarkId::new("array_to_vec", size), &size, |b, _| {
            b.iter(|| black_box(array.to_vec()))
        });
        group.bench_with_input(BenchmarkId::new("memcpy", size), &size, |b, _| {
            b.iter(|| dst.copy_from_slice(black_box(&local)))
        });
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .configure_from_args();
    increments(&mut c);
    bulk_copy(&mut c);
    c.final_summary();
}
