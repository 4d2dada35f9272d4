//! Queue throughput and latency between real processes, with the machine's
//! ceilings measured in the same run.
//!
//! | group | what |
//! |---|---|
//! | `queue_1to1/{bytes,bytes_into,typed,zero_copy}/SIZE` | one producer process, one consumer process |
//! | `queue_2to2/{bytes,typed}/SIZE` | two producers, two consumers |
//! | `ceiling/spsc_ring_8B` | a minimal spinning single-producer single-consumer ring of `u64` slots in shared memory |
//! | `ceiling/memcpy/SIZE` | `copy_from_slice` in one thread |
//! | `round_trip/queue` | ping-pong over two queues with the blocking API |
//! | `round_trip/burst16_{paced,unpaced}` | 16 messages one way, one reply back, with and without [pacing](multiproc_queue::QueueBuilder::pacing) |
//! | `round_trip/spin_then_futex` | ping-pong on two shared words, spinning then sleeping (the floor) |
//! | `one_thread/burst16_{paced,unpaced}` | one thread puts 16 `u64`s and gets them back, with and without pacing (which a thread that also produces skips) |
//!
//! Payload sizes: 8 B, 64 B, 1 KiB, 64 KiB, 1 MiB. `bytes` uses
//! `put_bytes`/`get_bytes` (one copy in, one copy out into a fresh `Vec`);
//! `bytes_into` reads with `get_bytes_into` into a reused buffer;
//! `typed` puts a `u64` (8 B) or a `Vec<u8>` and gets it decoded (serde
//! encodes a `Vec<u8>` byte by byte, which bounds that path);
//! `zero_copy` writes with `put_with` and reads with `get_in_place` (one
//! copy in total, the producer's). Partners are forked children; the bench
//! process only starts rounds and waits for them, sleeping.
//!
//! With one consumer, that consumer wakes the bench process when the round
//! is done; with two, the bench process looks every 50 µs. Why: a process
//! that wakes that often, on a machine with no more CPUs than partners,
//! keeps preempting one of them, and that decides which side runs ahead of
//! the other, which moves these figures more than most code changes do
//! (on 2 CPUs: `bytes_into`/8 measured 30–46 M msg/s with the polling and
//! 17–22 M without; `typed`/8 16–20 M with, 23–27 M without). The
//! ceiling's pair runs undisturbed too.
//!
//! Run: `cargo bench -p multiproc-queue --bench queue`
#![allow(unsafe_code, missing_docs)]

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use multiproc_core::Segment;
use multiproc_core::futex::{self, SpinWait};
use multiproc_queue::Queue;
use multiproc_testkit::{ForkedChild, fork_child, kill_children};
use std::hint::black_box;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SIZES: [usize; 5] = [8, 64, 1024, 64 * 1024, 1 << 20];

/// Control words shared with the forked partners.
/// 0: round number (futex word); 8: messages per producer this round;
/// 64: with one consumer, the count at which this round ends; 72: bumped by
/// that consumer when it gets there (futex word);
/// 128 + 128 i: messages consumed so far by consumer i.
struct Control(Segment);

impl Control {
    fn new() -> Self {
        Self(Segment::anonymous(4096).expect("segment"))
    }
    fn round(&self) -> &AtomicU32 {
        self.0.atomic_u32(0).unwrap()
    }
    fn count(&self) -> &AtomicU64 {
        self.0.view(8).unwrap()
    }
    fn goal(&self) -> &AtomicU64 {
        self.0.view(64).unwrap()
    }
    fn finished(&self) -> &AtomicU32 {
        self.0.atomic_u32(72).unwrap()
    }
    fn consumed(&self, i: usize) -> &AtomicU64 {
        self.0.view(128 + 128 * i).unwrap()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Bytes,
    BytesInto,
    Typed,
    ZeroCopy,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Self::Bytes => "bytes",
            Self::BytesInto => "bytes_into",
            Self::Typed => "typed",
            Self::ZeroCopy => "zero_copy",
        }
    }
}

/// Producers and consumers forked around one queue.
struct Flow {
    ctl: Control,
    pids: Vec<ForkedChild>,
    producers: usize,
    consumers: usize,
    target: u64,
}

impl Flow {
    fn start(size: usize, path: Path, producers: usize, consumers: usize) -> Self {
        let ring = (8 * size).max(1 << 20);
        let ctl = Control::new();
        let mut pids = Vec::new();
        let bytes: Queue<()> = Queue::builder().ring_bytes(ring).build().unwrap();
        let typed_u64: Queue<u64> = Queue::builder().ring_bytes(ring).build().unwrap();
        let typed_vec: Queue<Vec<u8>> = Queue::builder().ring_bytes(ring).build().unwrap();
        for i in 0..consumers {
            let (ctl, b, tu, tv) = (&ctl, &bytes, &typed_u64, &typed_vec);
            pids.push(fork_child(move || {
                let (done, goal, finished) = (ctl.consumed(i), ctl.goal(), ctl.finished());
                let mut buf = Vec::new();
                let mut n = 0u64;
                loop {
                    match (path, size) {
                        (Path::Bytes, _) => {
                            black_box(b.get_bytes().unwrap());
                        }
                        (Path::BytesInto, _) => {
                            black_box(b.get_bytes_into(&mut buf).unwrap());
                        }
                        (Path::ZeroCopy, _) => {
                            let m = b.get_in_place().unwrap();
                            black_box(m[m.len() - 1]);
                        }
                        (Path::Typed, 8) => {
                            black_box(tu.get().unwrap());
                        }
                        (Path::Typed, _) => {
                            black_box(tv.get().unwrap());
                        }
                    }
                    n += 1;
                    done.store(n, Ordering::Release);
                    if n == goal.load(Ordering::Relaxed) {
                        finished.fetch_add(1, Ordering::Release);
                        futex::wake_all(finished);
                    }
                }
            }));
        }
        for _ in 0..producers {
            let (ctl, b, tu, tv) = (&ctl, &bytes, &typed_u64, &typed_vec);
            pids.push(fork_child(move || {
                let payload = vec![7u8; size];
                let mut seen = 0;
                loop {
                    seen = futex::wait_until(ctl.round(), None, |v| v != seen).unwrap();
                    let count = ctl.count().load(Ordering::Acquire);
                    for i in 0..count {
                        match (path, size) {
                            (Path::Bytes | Path::BytesInto, _) => b.put_bytes(&payload).unwrap(),
                            (Path::ZeroCopy, _) => b
                                .put_with(size, |buf| buf.copy_from_slice(&payload))
                                .map_err(|_| "put_with")
                                .unwrap(),
                            (Path::Typed, 8) => tu.put(i).unwrap(),
                            (Path::Typed, _) => tv.put(payload.clone()).unwrap(),
                        }
                    }
                }
            }));
        }
        Self {
            ctl,
            pids,
            producers,
            consumers,
            target: 0,
        }
    }

    /// Moves about `messages` messages through the queue; the time from the
    /// start signal until the consumers have them all.
    fn run(&mut self, messages: u64) -> Duration {
        let per = messages.div_ceil(self.producers as u64).max(1);
        self.target += per * self.producers as u64;
        // The sole consumer wakes us: no third process polls (and takes a
        // CPU from the partners) while they run.
        let woken = self.consumers == 1;
        if woken {
            self.ctl.goal().store(self.target, Ordering::Relaxed);
        }
        let start = Instant::now();
        self.ctl.count().store(per, Ordering::Release);
        self.ctl.round().fetch_add(1, Ordering::Release);
        futex::wake_all(self.ctl.round());
        if woken {
            let consumed = self.ctl.consumed(0);
            futex::wait_until(self.ctl.finished(), None, |_| {
                consumed.load(Ordering::Acquire) >= self.target
            })
            .unwrap();
            return start.elapsed();
        }
        loop {
            let got: u64 = (0..self.consumers)
                .map(|i| self.ctl.consumed(i).load(Ordering::Acquire))
                .sum();
            if got >= self.target {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        kill_children(&mut self.pids);
    }
}

fn throughput(c: &mut Criterion) {
    for (group_name, producers, consumers) in [("queue_1to1", 1, 1), ("queue_2to2", 2, 2)] {
        let mut group = c.benchmark_group(group_name);
        for path in [Path::Bytes, Path::BytesInto, Path::Typed, Path::ZeroCopy] {
            if producers > 1 && matches!(path, Path::ZeroCopy | Path::BytesInto) {
                continue;
            }
            for size in SIZES {
                // Small messages are counted, large ones weighed.
                group.throughput(if size <= 64 {
                    Throughput::Elements(1)
                } else {
                    Throughput::Bytes(size as u64)
                });
                let mut flow = Flow::start(size, path, producers, consumers);
                group.bench_function(BenchmarkId::new(path.name(), size), |b| {
                    b.iter_custom(|n| flow.run(n));
                });
                drop(flow);
            }
        }
        group.finish();
    }
}

/// The ceiling: a minimal spinning SPSC ring of `u64` slots in shared
/// memory, with cached indices, like a hand-written ring would be.
struct SpscRing {
    seg: Segment,
    child: ForkedChild,
    target: u64,
}

const SPSC_SLOTS: usize = 4096;
const SPSC_HEAD: usize = 0;
const SPSC_TAIL: usize = 128;
const SPSC_DATA: usize = 256;

impl SpscRing {
    fn start() -> Self {
        let seg = Segment::anonymous(SPSC_DATA + 8 * SPSC_SLOTS).unwrap();
        let child = fork_child(|| {
            let head = seg.view::<AtomicU64>(SPSC_HEAD).unwrap();
            let tail = seg.view::<AtomicU64>(SPSC_TAIL).unwrap();
            let slots = seg.view::<[AtomicU64; SPSC_SLOTS]>(SPSC_DATA).unwrap();
            let mut h = 0u64;
            let mut cached_tail = 0u64;
            loop {
                if h == cached_tail {
                    cached_tail = tail.load(Ordering::Acquire);
                    if h == cached_tail {
                        std::hint::spin_loop();
                        continue;
                    }
                }
                black_box(slots[(h as usize) % SPSC_SLOTS].load(Ordering::Relaxed));
                h += 1;
                head.store(h, Ordering::Release);
            }
        });
        Self {
            seg,
            child,
            target: 0,
        }
    }

    fn run(&mut self, n: u64) -> Duration {
        let head = self.seg.view::<AtomicU64>(SPSC_HEAD).unwrap();
        let tail = self.seg.view::<AtomicU64>(SPSC_TAIL).unwrap();
        let slots = self.seg.view::<[AtomicU64; SPSC_SLOTS]>(SPSC_DATA).unwrap();
        let start = Instant::now();
        let mut t = self.target;
        let mut cached_head = head.load(Ordering::Acquire);
        let end = self.target + n;
        while t < end {
            if t - cached_head >= SPSC_SLOTS as u64 {
                cached_head = head.load(Ordering::Acquire);
                if t - cached_head >= SPSC_SLOTS as u64 {
                    std::hint::spin_loop();
                    continue;
                }
            }
            slots[(t as usize) % SPSC_SLOTS].store(t, Ordering::Relaxed);
            t += 1;
            tail.store(t, Ordering::Release);
        }
        while head.load(Ordering::Acquire) < end {
            std::hint::spin_loop();
        }
        self.target = end;
        start.elapsed()
    }
}

impl Drop for SpscRing {
    fn drop(&mut self) {
        self.child.kill();
    }
}

fn ceilings(c: &mut Criterion) {
    let mut group = c.benchmark_group("ceiling");
    group.throughput(Throughput::Bytes(8));
    let mut ring = SpscRing::start();
    group.bench_function("spsc_ring_8B", |b| b.iter_custom(|n| ring.run(n)));
    drop(ring);
    // Not a ceiling but a reference: put + get of 8 B in one thread, no
    // other process touching the cache lines.
    let q: Queue<()> = Queue::builder().ring_bytes(1 << 20).build().unwrap();
    group.throughput(Throughput::Elements(1));
    group.bench_function("same_thread_put_get_8B", |b| {
        b.iter(|| {
            q.put_bytes(black_box(&[1u8; 8])).unwrap();
            let m = q.get_in_place().unwrap();
            black_box(m[0]);
        });
    });
    for size in [64 * 1024, 1 << 20] {
        let src = vec![3u8; size];
        let mut dst = vec![0u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(BenchmarkId::new("memcpy", size), |b| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&src));
                black_box(&dst);
            });
        });
    }
    group.finish();
}

/// Rounds over two queues: `burst` messages one way, then one reply back,
/// between this process and a forked partner, with the blocking API.
fn queue_rounds(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, burst: u64, pacing: bool) {
    let build = || -> Queue<u64> {
        Queue::builder()
            .ring_bytes(1 << 16)
            .pacing(pacing)
            .build()
            .unwrap()
    };
    let (ping, pong) = (build(), build());
    let child = fork_child(|| {
        loop {
            let mut last = 0;
            for _ in 0..burst {
                last = ping.get().unwrap();
            }
            pong.put(last).unwrap();
        }
    });
    group.bench_function(name, |b| {
        b.iter_custom(|n| {
            let start = Instant::now();
            for i in 0..n {
                for j in 0..burst {
                    ping.put(i * burst + j).unwrap();
                }
                assert_eq!(pong.get().unwrap(), i * burst + burst - 1);
            }
            start.elapsed()
        });
    });
    drop(child);
}

fn round_trips(c: &mut Criterion) {
    let mut group = c.benchmark_group("round_trip");
    group.throughput(Throughput::Elements(1));
    queue_rounds(&mut group, "queue", 1, true);
    // What pacing costs where it can: the reader of a burst catches up
    // with it before the burst is over.
    queue_rounds(&mut group, "burst16_paced", 16, true);
    queue_rounds(&mut group, "burst16_unpaced", 16, false);

    // The floor: the same hand-off on two bare words, spinning then sleeping.
    let seg = Segment::anonymous(4096).unwrap();
    let child = fork_child(|| {
        let ping = seg.atomic_u32(0).unwrap();
        let pong = seg.atomic_u32(128).unwrap();
        let mut expected = 1u32;
        loop {
            futex::wait_until_with(ping, None, SpinWait::new(), |v| v == expected).unwrap();
            pong.store(expected, Ordering::Release);
            futex::wake_one(pong);
            expected = expected.wrapping_add(1);
        }
    });
    let mut next = 1u32;
    group.bench_function("spin_then_futex", |b| {
        let ping = seg.atomic_u32(0).unwrap();
        let pong = seg.atomic_u32(128).unwrap();
        b.iter_custom(|n| {
            let start = Instant::now();
            for _ in 0..n {
                let v = next;
                next = next.wrapping_add(1);
                ping.store(v, Ordering::Release);
                futex::wake_one(ping);
                futex::wait_until_with(pong, None, SpinWait::new(), |x| x == v).unwrap();
            }
            start.elapsed()
        });
    });
    drop(child);
    group.finish();
}

/// A thread that is its queue's producer and consumer: pacing must cost
/// it nothing (it would wait for itself).
fn one_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("one_thread");
    group.throughput(Throughput::Elements(16));
    for (name, pacing) in [("burst16_paced", true), ("burst16_unpaced", false)] {
        let q: Queue<u64> = Queue::builder().pacing(pacing).build().unwrap();
        group.bench_function(name, |b| {
            b.iter(|| {
                for i in 0..16u64 {
                    q.put(i).unwrap();
                }
                for _ in 0..16 {
                    black_box(q.get().unwrap());
                }
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10);
    targets = ceilings, throughput, round_trips, one_thread
}
criterion_main!(benches);
