//! Cross-process hand-off round trips on shared words, to choose the spin
//! budget in front of the futex sleep.
//!
//! Two processes (the bench and a forked partner) bounce a counter between
//! two words on separate cache lines of an anonymous segment:
//! - `spin_only`: both sides spin, never sleep (the hardware floor);
//! - `futex_only`: no spinning, every wait sleeps in the kernel;
//! - `spin_then_futex`: [`SPIN_LIMIT`] spins, then sleep (what multiproc does).
//!
//! Run: `cargo bench -p multiproc-core --bench futex`
#![allow(unsafe_code)]

use criterion::{Criterion, criterion_group, criterion_main};
use multiproc_core::Segment;
use multiproc_core::futex::{self, SPIN_LIMIT, SpinWait};
use multiproc_core::process::{self, Forked};
use rustix::process::Pid;
use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const PING: usize = 0;
const PONG: usize = 128;
const STOP: u32 = u32::MAX;

#[derive(Clone, Copy)]
enum Mode {
    SpinOnly,
    Sleep { spin_limit: u32 },
}

fn wait_for(word: &AtomicU32, mode: Mode, mut done: impl FnMut(u32) -> bool) -> u32 {
    match mode {
        Mode::SpinOnly => loop {
            let v = word.load(Ordering::Acquire);
            if done(v) {
                return v;
            }
            std::hint::spin_loop();
        },
        Mode::Sleep { spin_limit } => {
            futex::wait_until_with(word, None, SpinWait::with_limit(spin_limit), done)
                .expect("no deadline")
        }
    }
}

fn signal(word: &AtomicU32, value: u32, mode: Mode) {
    word.store(value, Ordering::Release);
    if let Mode::Sleep { .. } = mode {
        futex::wake_one(word);
    }
}

/// The forked partner and the next counter value.
struct Partner {
    segment: Segment,
    pid: Pid,
    next: Cell<u32>,
    mode: Mode,
}

impl Partner {
    fn start(mode: Mode) -> Self {
        let segment = Segment::anonymous(4096).expect("segment");
        // SAFETY: the contract of `process::fork` holds: the bench is
        // single-threaded here, and the child only touches the shared
        // segment and atomics, then leaves with `exit_now`.
        let pid = match unsafe { process::fork() }.expect("fork") {
            Forked::Parent(pid) => pid,
            Forked::Child => {
                let ping = segment.atomic_u32(PING).unwrap();
                let pong = segment.atomic_u32(PONG).unwrap();
                let mut expected = 1;
                loop {
                    let v = wait_for(ping, mode, |v| v == expected || v == STOP);
                    if v == STOP {
                        process::exit_now(0);
                    }
                    signal(pong, expected, mode);
                    expected += 1;
                }
            }
        };
        Self {
            segment,
            pid,
            next: Cell::new(1),
            mode,
        }
    }

    fn round_trips(&self, n: u64) -> Duration {
        let ping = self.segment.atomic_u32(PING).unwrap();
        let pong = self.segment.atomic_u32(PONG).unwrap();
        let start = Instant::now();
        for _ in 0..n {
            let value = self.next.get();
            self.next.set(value + 1);
            signal(ping, value, self.mode);
            wait_for(pong, self.mode, |v| v == value);
        }
        start.elapsed()
    }
}

impl Drop for Partner {
    fn drop(&mut self) {
        let ping = self.segment.atomic_u32(PING).unwrap();
        ping.store(STOP, Ordering::Release);
        futex::wake_all(ping);
        let _ = rustix::process::waitpid(Some(self.pid), rustix::process::WaitOptions::empty());
    }
}

fn round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("futex_round_trip");
    for (name, mode) in [
        ("spin_only", Mode::SpinOnly),
        (
            "spin_then_futex",
            Mode::Sleep {
                spin_limit: SPIN_LIMIT,
            },
        ),
        ("spin_200_then_futex", Mode::Sleep { spin_limit: 200 }),
        ("futex_only", Mode::Sleep { spin_limit: 0 }),
    ] {
        let partner = Partner::start(mode);
        group.bench_function(name, |b| b.iter_custom(|n| partner.round_trips(n)));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = round_trip
}
criterion_main!(benches);
