//! Async queues against the blocking queue and against tokio's
//! `UnixStream`, between real processes, in one run.
//!
//! | group | what |
//! |---|---|
//! | `async_1to1_8B/{blocking_queue,tokio_queue,smol_queue,tokio_unixstream}` | a forked producer puts 8-byte messages as fast as it can (blocking); this process takes them |
//! | `async_round_trip_8B/{blocking_queue,tokio_queue,smol_queue,tokio_unixstream}` | this process sends 8 bytes, a forked echo sends them back (blocking) |
//!
//! The async contenders run on a current-thread runtime. The `UnixStream`
//! reader goes through a `BufReader`, so it reads many messages per system
//! call where the producer ran ahead.
//!
//! Run: `cargo bench -p multiproc-async --bench async_queue`
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use multiproc_queue::Queue;
use multiproc_testkit::{ForkedChild, fork_child};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};

const MESSAGE: [u8; 8] = *b"01234567";

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A queue of 8-byte messages and a forked child that fills it for ever.
fn fed_queue() -> (Queue<()>, ForkedChild) {
    let q: Queue<()> = Queue::builder().ring_bytes(1 << 16).build().unwrap();
    let producer = q.clone();
    let child = fork_child(move || {
        loop {
            producer.put_bytes(&MESSAGE).unwrap();
        }
    });
    (q, child)
}

/// Every partner is forked before any runtime runs: async-io starts a
/// thread of its own, and a process with threads cannot fork safely.
struct Partners {
    fed: [(Queue<()>, ForkedChild); 3],
    fed_stream: (UnixStream, ForkedChild),
    echo: [(Queue<()>, Queue<()>, ForkedChild); 3],
    echo_stream: (UnixStream, ForkedChild),
}

impl Partners {
    fn fork() -> Self {
        Self {
            fed: [fed_queue(), fed_queue(), fed_queue()],
            fed_stream: fed_stream(),
            echo: [echo_queues(), echo_queues(), echo_queues()],
            echo_stream: echo_stream(),
        }
    }
}

/// A socket and a forked child that writes 8-byte messages into it for
/// ever.
fn fed_stream() -> (UnixStream, ForkedChild) {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let child = fork_child(move || {
        loop {
            theirs.write_all(&MESSAGE).unwrap();
        }
    });
    (ours, child)
}

/// A socket and a forked child that sends back every 8 bytes it reads.
fn echo_stream() -> (UnixStream, ForkedChild) {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let child = fork_child(move || {
        let mut buf = [0u8; 8];
        loop {
            theirs.read_exact(&mut buf).unwrap();
            theirs.write_all(&buf).unwrap();
        }
    });
    (ours, child)
}

/// Two queues and a forked child that sends back what comes in.
fn echo_queues() -> (Queue<()>, Queue<()>, ForkedChild) {
    let build = || -> Queue<()> { Queue::builder().ring_bytes(1 << 16).build().unwrap() };
    let (ping, pong) = (build(), build());
    let (their_ping, their_pong) = (ping.clone(), pong.clone());
    let child = fork_child(move || {
        loop {
            let m = their_ping.get_bytes().unwrap();
            their_pong.put_bytes(&m).unwrap();
        }
    });
    (ping, pong, child)
}

/// How long `n` runs of `each` take.
fn timed(n: u64, mut each: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        each();
    }
    start.elapsed()
}

/// How long `n` runs of `each` take, each awaited in turn.
async fn timed_async<F: Future<Output = ()>>(n: u64, mut each: impl FnMut() -> F) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        each().await;
    }
    start.elapsed()
}

fn all(c: &mut Criterion) {
    let Partners {
        fed: [(q0, c0), (q1, c1), (q2, c2)],
        fed_stream: (fed_socket, c3),
        echo: [(p0, r0, e0), (p1, r1, e1), (p2, r2, e2)],
        echo_stream: (echo_socket, e3),
    } = Partners::fork();
    let rt = tokio_runtime();

    let mut group = c.benchmark_group("async_1to1_8B");
    group.throughput(Throughput::Elements(1));
    group.bench_function("blocking_queue", |b| {
        b.iter_custom(|n| timed(n, || assert_eq!(q0.get_bytes().unwrap().len(), 8)));
    });
    drop(c0);
    let inbox = rt.block_on(async { multiproc_async::tokio::Queue::new(q1).unwrap() });
    let inbox = &inbox;
    group.bench_function("tokio_queue", |b| {
        b.iter_custom(|n| {
            rt.block_on(timed_async(n, || async move {
                assert_eq!(inbox.get_bytes().await.unwrap().len(), 8);
            }))
        });
    });
    drop(c1);
    let inbox = multiproc_async::smol::Queue::new(q2).unwrap();
    let inbox = &inbox;
    group.bench_function("smol_queue", |b| {
        b.iter_custom(|n| {
            smol::block_on(timed_async(n, || async move {
                assert_eq!(inbox.get_bytes().await.unwrap().len(), 8);
            }))
        });
    });
    drop(c2);
    let mut reader = rt.block_on(async {
        fed_socket.set_nonblocking(true).unwrap();
        BufReader::new(tokio::net::UnixStream::from_std(fed_socket).unwrap())
    });
    group.bench_function("tokio_unixstream", |b| {
        b.iter_custom(|n| {
            rt.block_on(async {
                let mut buf = [0u8; 8];
                let start = Instant::now();
                for _ in 0..n {
                    reader.read_exact(&mut buf).await.unwrap();
                    assert_eq!(buf, MESSAGE);
                }
                start.elapsed()
            })
        });
    });
    drop(c3);
    group.finish();

    let mut group = c.benchmark_group("async_round_trip_8B");
    group.throughput(Throughput::Elements(1));
    group.bench_function("blocking_queue", |b| {
        b.iter_custom(|n| {
            timed(n, || {
                p0.put_bytes(&MESSAGE).unwrap();
                assert_eq!(r0.get_bytes().unwrap().len(), 8);
            })
        });
    });
    drop(e0);
    let pong = rt.block_on(async { multiproc_async::tokio::Queue::new(r1).unwrap() });
    let (ping, pong) = (&p1, &pong);
    group.bench_function("tokio_queue", |b| {
        b.iter_custom(|n| {
            rt.block_on(timed_async(n, || async move {
                ping.put_bytes(&MESSAGE).unwrap();
                assert_eq!(pong.get_bytes().await.unwrap().len(), 8);
            }))
        });
    });
    drop(e1);
    let pong = multiproc_async::smol::Queue::new(r2).unwrap();
    let (ping, pong) = (&p2, &pong);
    group.bench_function("smol_queue", |b| {
        b.iter_custom(|n| {
            smol::block_on(timed_async(n, || async move {
                ping.put_bytes(&MESSAGE).unwrap();
                assert_eq!(pong.get_bytes().await.unwrap().len(), 8);
            }))
        });
    });
    drop(e2);
    let mut stream = rt.block_on(async {
        echo_socket.set_nonblocking(true).unwrap();
        tokio::net::UnixStream::from_std(echo_socket).unwrap()
    });
    group.bench_function("tokio_unixstream", |b| {
        b.iter_custom(|n| {
            rt.block_on(async {
                let mut buf = [0u8; 8];
                let start = Instant::now();
                for _ in 0..n {
                    stream.write_all(&MESSAGE).await.unwrap();
                    stream.read_exact(&mut buf).await.unwrap();
                }
                start.elapsed()
            })
        });
    });
    drop(e3);
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10);
    targets = all
}
criterion_main!(benches);
