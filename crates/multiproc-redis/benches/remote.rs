//! Remote queue throughput, one producer process and one consumer process,
//! against the floor of raw stream commands on the same server in the same
//! run.
//!
//! | bench | what |
//! |---|---|
//! | `remote_1to1/queue/SIZE` | a forked producer `put_bytes` SIZE-byte messages, this process `get_bytes` them (ack on get), default settings: one round trip per put and per get |
//! | `remote_1to1/queue_ahead/SIZE` | as `queue`, the getter built with `read_ahead(64)`: single gets, one round trip per 64 |
//! | `remote_1to1/queue_batch/SIZE` | the producer `put_many_bytes` 64 at a time, this process `get_many_bytes(64, …)` |
//! | `remote_1to1/floor/SIZE` | a forked producer sends `XADD`s pipelined 64 to a round trip; this process reads with `XREADGROUP COUNT 64 BLOCK` and acknowledges each batch (`XACK` + `XDEL`) in the same round trip as the next read |
//!
//! Sizes: 8 B and 64 KiB. The server is a `redis-server` of the bench's
//! own (as the tests start it: loopback, no persistence); without one the
//! bench says so and measures nothing. On 2 CPUs the server, the producer
//! and the consumer share them.
//!
//! After the group, one line per bench gives messages per second over all
//! its iterations (warm-up included) and the ratio to the floor of the
//! same size, measured in the same run.
//!
//! Run: `cargo bench -p multiproc-redis --bench remote`
#![allow(missing_docs)]

mod common;

use common::{BATCH, connect, entries, read_batch};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use multiproc_redis::RemoteQueue;
use multiproc_testkit::{RedisServer, fork_child};
use redis::Value;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Messages and time per (size, bench), over every `iter_custom` call.
type Totals = BTreeMap<(usize, &'static str), (u64, Duration)>;
static TOTALS: Mutex<Totals> = Mutex::new(BTreeMap::new());

fn record(size: usize, what: &'static str, n: u64, took: Duration) -> Duration {
    let mut totals = TOTALS.lock().unwrap();
    let e = totals.entry((size, what)).or_default();
    e.0 += n;
    e.1 += took;
    took
}

/// How the queue benches put and get.
#[derive(Clone, Copy)]
enum Mode {
    Single,
    Ahead,
    Batch,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Single => "queue",
            Self::Ahead => "queue_ahead",
            Self::Batch => "queue_batch",
        }
    }
}

const SIZES: [usize; 2] = [8, 64 * 1024];

fn label(size: usize) -> String {
    if size >= 1024 {
        format!("{}KiB", size / 1024)
    } else {
        format!("{size}B")
    }
}

fn queue_round(url: &str, q: &RemoteQueue<()>, mode: Mode, size: usize, n: u64) -> Duration {
    let payload = vec![0x5au8; size];
    let start = Instant::now();
    let producer = {
        let url = url.to_owned();
        let name = q.name().to_owned();
        fork_child(move || {
            let q: RemoteQueue<()> = RemoteQueue::builder(&url, &name)
                .prefix("bench:")
                .build()
                .unwrap();
            match mode {
                Mode::Single | Mode::Ahead => {
                    for _ in 0..n {
                        q.put_bytes(&payload).unwrap();
                    }
                }
                Mode::Batch => {
                    let batch = vec![&payload[..]; BATCH];
                    let mut left = n;
                    while left > 0 {
                        let k = left.min(BATCH as u64);
                        q.put_many_bytes(&batch[..k as usize]).unwrap();
                        left -= k;
                    }
                }
            }
        })
    };
    let mut got = 0u64;
    while got < n {
        match mode {
            Mode::Single | Mode::Ahead => {
                let m = q.get_bytes().unwrap();
                assert_eq!(m.len(), size);
                got += 1;
            }
            Mode::Batch => {
                let ms = q.get_many_bytes(BATCH, Duration::from_secs(10)).unwrap();
                assert!(ms.iter().all(|m| m.len() == size));
                got += ms.len() as u64;
            }
        }
    }
    assert_eq!(got, n);
    let took = start.elapsed();
    producer.join();
    record(size, mode.name(), n, took)
}

fn floor_round(url: &str, con: &mut redis::Connection, size: usize, n: u64) -> Duration {
    let stream = "bench:floor";
    let payload = vec![0x5au8; size];
    let start = Instant::now();
    let producer = {
        let url = url.to_owned();
        fork_child(move || {
            let mut con = connect(&url);
            let mut left = n;
            while left > 0 {
                let k = left.min(BATCH as u64);
                let mut pipe = redis::pipe();
                for _ in 0..k {
                    pipe.cmd("XADD")
                        .arg(stream)
                        .arg("*")
                        .arg("d")
                        .arg(&payload)
                        .ignore();
                }
                pipe.query::<()>(&mut con).unwrap();
                left -= k;
            }
        })
    };
    let mut got = 0u64;
    let mut ids: Vec<Vec<u8>> = Vec::new();
    while got < n {
        let mut pipe = redis::pipe();
        if !ids.is_empty() {
            pipe.cmd("XACK").arg(stream).arg("g").arg(&ids[..]).ignore();
            pipe.cmd("XDEL").arg(stream).arg(&ids[..]).ignore();
        }
        pipe.add_command(read_batch("c", stream));
        let (reply,): (Value,) = pipe.query(con).unwrap();
        ids.clear();
        for (id, d) in entries(reply) {
            assert_eq!(d.len(), size);
            ids.push(id);
            got += 1;
        }
    }
    redis::cmd("XACK")
        .arg(stream)
        .arg("g")
        .arg(&ids[..])
        .query::<()>(con)
        .unwrap();
    redis::cmd("XDEL")
        .arg(stream)
        .arg(&ids[..])
        .query::<()>(con)
        .unwrap();
    let took = start.elapsed();
    producer.join();
    record(size, "floor", n, took)
}

fn remote_1to1(c: &mut Criterion) {
    let Some(server) = RedisServer::start_or_skip("remote_1to1 bench") else {
        return;
    };
    let url = server.url();
    let queues: Vec<(Mode, RemoteQueue<()>)> = [Mode::Single, Mode::Ahead, Mode::Batch]
        .into_iter()
        .map(|mode| {
            let read_ahead = if matches!(mode, Mode::Ahead) {
                BATCH
            } else {
                1
            };
            let q = RemoteQueue::builder(&url, &format!("bench-{}", mode.name()))
                .prefix("bench:")
                .read_ahead(read_ahead)
                .build()
                .unwrap();
            (mode, q)
        })
        .collect();
    let mut con = connect(&url);
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("bench:floor")
        .arg("g")
        .arg("0")
        .arg("MKSTREAM")
        .query::<()>(&mut con)
        .unwrap();
    let mut group = c.benchmark_group("remote_1to1");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for size in SIZES {
        group.throughput(Throughput::Elements(1));
        for (mode, q) in &queues {
            group.bench_function(BenchmarkId::new(mode.name(), label(size)), |b| {
                b.iter_custom(|n| queue_round(&url, q, *mode, size, n));
            });
        }
        group.bench_function(BenchmarkId::new("floor", label(size)), |b| {
            b.iter_custom(|n| floor_round(&url, &mut con, size, n));
        });
    }
    group.finish();
    let totals = TOTALS.lock().unwrap();
    println!(
        "\nremote_1to1 summary (messages per second over all iterations; ratio to the floor of the same size):"
    );
    for size in SIZES {
        let rate = |what| {
            totals
                .get(&(size, what))
                .map(|&(n, t): &(u64, Duration)| n as f64 / t.as_secs_f64())
        };
        let floor = rate("floor");
        for what in ["queue", "queue_ahead", "queue_batch", "floor"] {
            if let Some(r) = rate(what) {
                let ratio = floor.map_or(String::new(), |f| format!("{:6.1} %", 100.0 * r / f));
                println!("  {:>6} {what:<12} {r:>12.0} msg/s {ratio}", label(size));
            }
        }
    }
    drop(server);
}

criterion_group!(benches, remote_1to1);
criterion_main!(benches);
