//! Connection throughput and latency between two processes, against the
//! floors: raw `write`/`read` on a socketpair and on a pipe, in the same run.
//!
//! Each case forks a child that receives (or echoes) on one end while this
//! process sends on the other; a pair of control pipes starts each batch and
//! reports its end, so a batch is timed from the first send until the child
//! has received the last message.
//!
//! | group | what | peers |
//! |---|---|---|
//! | `throughput/<size>` | one-way messages of 8 B, 64 B, 1 KiB, 64 KiB, 1 MiB | `connection` (duplex, socketpair, `recv_bytes`), `connection_into` (the same, `recv_bytes_into` a reused buffer), `connection_simplex` (pipe), `raw_socketpair`, `raw_pipe` |
//! | `round_trip` | 8-byte ping-pong | `connection`, `raw_socketpair`, `raw_pipe` |
//!
//! The raw peers do one `write` per message and `read` exactly its bytes:
//! the least a byte stream needs. Run with short settings:
//!
//! ```text
//! cargo bench -p multiproc-pipe --bench pipe -- --warm-up-time 1 --measurement-time 2
//! python3 crates/multiproc-pipe/benches/python_pipe.py   # Python's Pipe, same scenario at 8 B
//! ```
#![allow(unsafe_code)]
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use multiproc_core::process::{self, Forked};
use multiproc_pipe::{Connection, Pipe};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

const SIZES: [usize; 5] = [8, 64, 1024, 64 * 1024, 1024 * 1024];

/// One end of a byte transport, as the benchmark uses it.
trait End {
    fn send(&mut self, buf: &[u8]);
    /// Receives one message of `buf.len()` bytes into `buf`.
    fn recv(&mut self, buf: &mut [u8]);
}

struct Conn(Connection);

/// A connection read with `recv_bytes_into` a reused buffer, as the raw
/// peers read: no allocation per message.
struct ConnInto(Connection);

impl End for ConnInto {
    fn send(&mut self, buf: &[u8]) {
        self.0.send_bytes(buf).expect("send_bytes");
    }

    fn recv(&mut self, buf: &mut [u8]) {
        let n = self.0.recv_bytes_into(buf).expect("recv_bytes_into");
        debug_assert_eq!(n, buf.len());
    }
}

impl End for Conn {
    fn send(&mut self, buf: &[u8]) {
        self.0.send_bytes(buf).expect("send_bytes");
    }

    fn recv(&mut self, buf: &mut [u8]) {
        // recv_bytes, like Python's benchmark: a fresh vector per message.
        let msg = self.0.recv_bytes().expect("recv_bytes");
        debug_assert_eq!(msg.len(), buf.len());
        std::hint::black_box(msg);
    }
}

/// Raw descriptors: `rx` to read, `tx` to write (the same socket, or the
/// two ends of different pipes).
struct Raw {
    rx: File,
    tx: File,
}

impl End for Raw {
    fn send(&mut self, buf: &[u8]) {
        self.tx.write_all(buf).expect("write");
    }

    fn recv(&mut self, buf: &mut [u8]) {
        self.rx.read_exact(buf).expect("read");
    }
}

fn dup(fd: &OwnedFd) -> OwnedFd {
    rustix::io::fcntl_dupfd_cloexec(fd, 0).expect("dup")
}

/// A connected pair of ends of one kind: (parent's, child's).
fn pair(kind: &str) -> (Box<dyn End>, Box<dyn End>) {
    match kind {
        "connection" => {
            let (a, b) = Pipe::new().unwrap();
            (Box::new(Conn(a)), Box::new(Conn(b)))
        }
        "connection_into" => {
            let (a, b) = Pipe::new().unwrap();
            (Box::new(ConnInto(a)), Box::new(ConnInto(b)))
        }
        "connection_simplex" => {
            // One-way only: the child reads; its write side is unused.
            let (rx, tx) = Pipe::simplex().unwrap();
            let (back_rx, back_tx) = Pipe::simplex().unwrap();
            (
                Box::new(Duplex { rx: back_rx, tx }),
                Box::new(Duplex { rx, tx: back_tx }),
            )
        }
        "raw_socketpair" => {
            let (a, b) = multiproc_core::scm::stream_pair().unwrap();
            (
                Box::new(Raw {
                    rx: dup(&a).into(),
                    tx: a.into(),
                }),
                Box::new(Raw {
                    rx: dup(&b).into(),
                    tx: b.into(),
                }),
            )
        }
        "raw_pipe" => {
            let (down_rx, down_tx) = rustix::pipe::pipe().unwrap();
            let (up_rx, up_tx) = rustix::pipe::pipe().unwrap();
            (
                Box::new(Raw {
                    rx: up_rx.into(),
                    tx: down_tx.into(),
                }),
                Box::new(Raw {
                    rx: down_rx.into(),
                    tx: up_tx.into(),
                }),
            )
        }
        other => panic!("unknown peer {other}"),
    }
}

/// Two simplex connections used as one duplex end.
struct Duplex {
    rx: Connection,
    tx: Connection,
}

impl End for Duplex {
    fn send(&mut self, buf: &[u8]) {
        self.tx.send_bytes(buf).expect("send_bytes");
    }

    fn recv(&mut self, buf: &mut [u8]) {
        let msg = self.rx.recv_bytes().expect("recv_bytes");
        debug_assert_eq!(msg.len(), buf.len());
        std::hint::black_box(msg);
    }
}

/// A forked child running `body` on its end, steered through control pipes.
struct Child {
    pid: rustix::process::Pid,
    ctl_tx: OwnedFd,
    ack_rx: OwnedFd,
}

impl Child {
    /// Forks; the child loops: read a batch size `n` (0 = exit), run
    /// `body(end, n)`, acknowledge.
    fn start(mut end: Box<dyn End>, body: fn(&mut dyn End, u64)) -> Self {
        let (ctl_rx, ctl_tx) = rustix::pipe::pipe().unwrap();
        let (ack_rx, ack_tx) = rustix::pipe::pipe().unwrap();
        // SAFETY: the contract of `process::fork` holds: the benchmark
        // process is single-threaded when it forks, and the child leaves
        // with `exit_now`.
        let pid = match unsafe { process::fork() }.expect("fork") {
            Forked::Parent(pid) => pid,
            Forked::Child => {
                drop((ctl_tx, ack_rx));
                loop {
                    let mut word = [0u8; 8];
                    let mut got = 0;
                    while got < 8 {
                        match rustix::io::read(&ctl_rx, &mut word[got..]) {
                            Ok(0) | Err(_) => process::exit_now(0),
                            Ok(n) => got += n,
                        }
                    }
                    let n = u64::from_le_bytes(word);
                    if n == 0 {
                        process::exit_now(0);
                    }
                    body(&mut *end, n);
                    rustix::io::write(&ack_tx, b"k").unwrap();
                }
            }
        };
        drop(end);
        Self {
            pid,
            ctl_tx,
            ack_rx,
        }
    }

    fn start_batch(&self, n: u64) {
        rustix::io::write(&self.ctl_tx, &n.to_le_bytes()).unwrap();
    }

    fn wait_ack(&self) {
        let mut ack = [0u8; 1];
        assert_eq!(rustix::io::read(&self.ack_rx, &mut ack).unwrap(), 1);
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = rustix::io::write(&self.ctl_tx, &0u64.to_le_bytes());
        let _ = rustix::process::waitpid(Some(self.pid), rustix::process::WaitOptions::empty());
    }
}

fn throughput(c: &mut Criterion) {
    for size in SIZES {
        let mut group = c.benchmark_group(format!("throughput/{size}"));
        group.throughput(Throughput::ElementsAndBytes {
            elements: 1,
            bytes: size as u64,
        });
        if size >= 64 * 1024 {
            group.sample_size(20);
        }
        for kind in [
            "connection",
            "connection_into",
            "connection_simplex",
            "raw_socketpair",
            "raw_pipe",
        ] {
            let (mut ours, theirs) = pair(kind);
            thread_local! {
                static SIZE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
            }
            SIZE.with(|s| s.set(size));
            // The size travels into the child through the fork (the body is
            // a plain fn).
            let child = Child::start(theirs, |end, n| {
                let size = SIZE.with(std::cell::Cell::get);
                let mut buf = vec![0u8; size];
                for _ in 0..n {
                    end.recv(&mut buf);
                }
            });
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            group.bench_function(BenchmarkId::from_parameter(kind), |b| {
                b.iter_custom(|iters| {
                    child.start_batch(iters);
                    let start = Instant::now();
                    for _ in 0..iters {
                        ours.send(&payload);
                    }
                    child.wait_ack();
                    start.elapsed()
                });
            });
            drop(child);
        }
        group.finish();
    }
}

fn round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("round_trip");
    group.throughput(Throughput::Elements(1));
    for kind in ["connection", "raw_socketpair", "raw_pipe"] {
        let (mut ours, theirs) = pair(kind);
        let child = Child::start(theirs, |end, n| {
            let mut buf = [0u8; 8];
            for _ in 0..n {
                end.recv(&mut buf);
                end.send(&buf);
            }
        });
        group.bench_function(BenchmarkId::from_parameter(kind), |b| {
            b.iter_custom(|iters| {
                child.start_batch(iters);
                let mut buf = [0u8; 8];
                let start = Instant::now();
                for _ in 0..iters {
                    ours.send(b"ping ...");
                    ours.recv(&mut buf);
                }
                let took = start.elapsed();
                child.wait_ack();
                took
            });
        });
        drop(child);
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args()
}

criterion_group! {
    name = benches;
    config = config();
    targets = throughput, round_trip
}
criterion_main!(benches);
