//! The remote pool's `map` through one local `redis-server`, two worker
//! processes, against Python's RQ with two `rq worker` processes and
//! against the floor of raw stream commands, all in the same run.
//!
//! | bench | what |
//! |---|---|
//! | `remote_pool/map_chunksize_1` | `RemotePool::map(square, 0..n, Some(1))`, workers with the default settings (batches of up to 64 tasks while tasks are short) |
//! | `remote_pool/map_chunksize_1_prefetch_1` | the same, workers with `prefetch(1)`: one task at a time |
//! | `remote_pool/map_chunksize_64` | `map` with chunks of 64 items, default workers |
//! | `remote_pool/floor` | raw commands doing the same exchange: the caller pipelines `XADD`s of 8-byte tasks 64 to a round trip (one thread) while another reads replies with `XREADGROUP COUNT 64 BLOCK` (acknowledging the previous batch in the same round trip); each of two worker processes reads tasks 64 at a time and answers a batch in one round trip (`XADD` per reply, `XACK` + `XDEL` of the tasks) |
//!
//! Then `remote_pool_vs_rq`: three rounds, each timing Python's RQ (the
//! same trivial task, `q.enqueue` per task from one process, two
//! `rq worker` processes, until every job is finished), then the three
//! `map`s and the floor, one after the other; it prints each round's
//! rates with the load, and the ratios of the best rates. RQ runs from a
//! virtual environment the bench makes under the target directory
//! (`pip install rq`); when that fails the bench says so and leaves the
//! RQ ratio out.
//!
//! Run: `cargo bench -p multiproc-redis --bench pool` (about two minutes;
//! `-- remote_pool_vs_rq` for the comparison alone).
#![allow(missing_docs)]

mod common;

use common::{BATCH, connect, entries, read_batch};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use multiproc_redis::RemotePool;
use multiproc_testkit::{ForkedChild, RedisServer, fork_child};
use redis::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const FLOOR_TASKS: &str = "bench:floor:tasks";
const FLOOR_REPLIES: &str = "bench:floor:replies";

fn square(x: u64) -> u64 {
    x * x
}

/// The scenarios, by criterion name.
#[derive(Clone, Copy)]
enum Scenario {
    Chunk1,
    Chunk1Single,
    Chunk64,
    Floor,
}

impl Scenario {
    const ALL: [Self; 4] = [Self::Chunk1, Self::Chunk1Single, Self::Chunk64, Self::Floor];

    fn name(self) -> &'static str {
        match self {
            Self::Chunk1 => "map_chunksize_1",
            Self::Chunk1Single => "map_chunksize_1_prefetch_1",
            Self::Chunk64 => "map_chunksize_64",
            Self::Floor => "floor",
        }
    }

    /// Tasks per round of the comparison.
    fn round_tasks(self) -> u64 {
        match self {
            Self::Chunk1 => 20_000,
            Self::Chunk1Single => 3_000,
            Self::Chunk64 | Self::Floor => 50_000,
        }
    }
}

/// What the bench runs against: the server, the pools and their workers.
struct Setup {
    url: String,
    /// Workers with the default settings.
    plain: RemotePool,
    /// Workers that take one task at a time.
    single: RemotePool,
    floor: redis::Connection,
    _workers: Vec<ForkedChild>,
    _server: RedisServer,
}

impl Setup {
    fn new(server: RedisServer) -> Self {
        let url = server.url();
        let mut con = connect(&url);
        for stream in [FLOOR_TASKS, FLOOR_REPLIES] {
            redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(stream)
                .arg("g")
                .arg("0")
                .arg("MKSTREAM")
                .query::<()>(&mut con)
                .unwrap();
        }
        // Every worker process is forked before this process has a thread
        // of a pool.
        let mut workers = Vec::new();
        for (name, prefetch) in [("plain", BATCH), ("single", 1)] {
            for _ in 0..2 {
                let url = url.clone();
                workers.push(fork_child(move || {
                    RemotePool::builder(&url, name)
                        .prefix("bench:")
                        .prefetch(prefetch)
                        .serve()
                        .unwrap();
                }));
            }
        }
        for i in 0..2 {
            let url = url.clone();
            workers.push(fork_child(move || floor_worker(&url, i)));
        }
        let pool = |name| {
            RemotePool::builder(&url, name)
                .prefix("bench:")
                .build()
                .unwrap()
        };
        Self {
            plain: pool("plain"),
            single: pool("single"),
            url: url.clone(),
            floor: con,
            _workers: workers,
            _server: server,
        }
    }

    /// Runs `n` tasks of `scenario`; the time they took.
    fn run(&mut self, scenario: Scenario, n: u64) -> Duration {
        let start = Instant::now();
        let got = match scenario {
            Scenario::Chunk1 => self.plain.map(square, 0..n, Some(1)).unwrap().len(),
            Scenario::Chunk1Single => self.single.map(square, 0..n, Some(1)).unwrap().len(),
            Scenario::Chunk64 => self.plain.map(square, 0..n, Some(BATCH)).unwrap().len(),
            Scenario::Floor => floor_round(&self.url, &mut self.floor, n),
        };
        assert_eq!(got as u64, n);
        start.elapsed()
    }
}

/// A floor worker: reads tasks 64 at a time, answers each batch in one
/// round trip, until killed.
fn floor_worker(url: &str, i: usize) {
    let mut con = connect(url);
    let consumer = format!("w{i}");
    loop {
        let reply: Value = read_batch(&consumer, FLOOR_TASKS).query(&mut con).unwrap();
        let entries = entries(reply);
        if entries.is_empty() {
            continue;
        }
        let mut pipe = redis::pipe();
        let mut ids = Vec::with_capacity(entries.len());
        for (id, task) in entries {
            let x = u64::from_le_bytes(task.try_into().expect("8-byte task"));
            pipe.cmd("XADD")
                .arg(FLOOR_REPLIES)
                .arg("*")
                .arg("d")
                .arg(&square(x).to_le_bytes()[..])
                .ignore();
            ids.push(id);
        }
        pipe.cmd("XACK")
            .arg(FLOOR_TASKS)
            .arg("g")
            .arg(&ids[..])
            .ignore();
        pipe.cmd("XDEL").arg(FLOOR_TASKS).arg(&ids[..]).ignore();
        pipe.query::<()>(&mut con).unwrap();
    }
}

/// The caller's side of the floor: one thread pipelines the tasks in,
/// this one reads the replies; returns how many came.
fn floor_round(url: &str, con: &mut redis::Connection, n: u64) -> usize {
    let url = url.to_owned();
    let submitter = std::thread::spawn(move || {
        let mut con = connect(&url);
        let mut next = 0u64;
        while next < n {
            let k = (n - next).min(BATCH as u64);
            let mut pipe = redis::pipe();
            for x in next..next + k {
                pipe.cmd("XADD")
                    .arg(FLOOR_TASKS)
                    .arg("*")
                    .arg("d")
                    .arg(&x.to_le_bytes()[..])
                    .ignore();
            }
            pipe.query::<()>(&mut con).unwrap();
            next += k;
        }
    });
    let mut got = 0usize;
    let mut ids: Vec<Vec<u8>> = Vec::new();
    while (got as u64) < n {
        let mut pipe = redis::pipe();
        if !ids.is_empty() {
            pipe.cmd("XACK")
                .arg(FLOOR_REPLIES)
                .arg("g")
                .arg(&ids[..])
                .ignore();
            pipe.cmd("XDEL").arg(FLOOR_REPLIES).arg(&ids[..]).ignore();
        }
        pipe.add_command(read_batch("caller", FLOOR_REPLIES));
        let (reply,): (Value,) = pipe.query(con).unwrap();
        ids.clear();
        for (id, d) in entries(reply) {
            assert_eq!(d.len(), 8);
            ids.push(id);
            got += 1;
        }
    }
    if !ids.is_empty() {
        redis::pipe()
            .cmd("XACK")
            .arg(FLOOR_REPLIES)
            .arg("g")
            .arg(&ids[..])
            .ignore()
            .cmd("XDEL")
            .arg(FLOOR_REPLIES)
            .arg(&ids[..])
            .ignore()
            .query::<()>(con)
            .unwrap();
    }
    submitter.join().unwrap();
    got
}

/// A Python with `rq` (a virtual environment under the target directory
/// when the system's has none); `None`, said on stderr, when there is none.
fn python_with_rq() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("venv-rq");
    multiproc_testkit::python_with(&venv, &[("rq", "rq")])
        .inspect_err(|why| eprintln!("remote_pool_vs_rq: no Python with rq ({why}): RQ left out"))
        .ok()
}

/// RQ's tasks per second, one line per round.
fn rq_rates(python: &Path, url: &str, n: u64, rounds: u32) -> Vec<f64> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/rq_pool.py");
    let out = Command::new(python)
        .arg(script)
        .arg(url)
        .arg(n.to_string())
        .arg("2")
        .arg(rounds.to_string())
        .output()
        .expect("running rq_pool.py");
    assert!(
        out.status.success(),
        "rq_pool.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("tasks_per_second "))
        .map(|r| r.parse().unwrap())
        .collect()
}

/// `remote_pool_vs_rq`: see the module docs.
fn against_rq(setup: &mut Setup) {
    const ROUNDS: u32 = 3;
    const RQ_TASKS: u64 = 300;
    let python = python_with_rq();
    let mut best = [0f64; 5];
    for round in 1..=ROUNDS {
        let mut line = format!("remote_pool_vs_rq round {round}:");
        if let Some(python) = &python {
            let rq = rq_rates(python, &setup.url, RQ_TASKS, 1)[0];
            best[4] = best[4].max(rq);
            line += &format!(" rq {rq:.0}/s,");
        }
        for (i, s) in Scenario::ALL.into_iter().enumerate() {
            let n = s.round_tasks();
            let rate = n as f64 / setup.run(s, n).as_secs_f64();
            best[i] = best[i].max(rate);
            line += &format!(" {} {rate:.0}/s,", s.name());
        }
        println!("{line} (load {})", multiproc_testkit::load_average());
    }
    let floor = best[3];
    print!("remote_pool_vs_rq best (tasks/s; % of the floor");
    println!("{}):", if python.is_some() { "; × RQ" } else { "" });
    for (i, s) in Scenario::ALL.into_iter().enumerate() {
        let vs_rq = if python.is_some() {
            format!(", {:.0}× RQ", best[i] / best[4])
        } else {
            String::new()
        };
        println!(
            "  {:<28} {:>9.0} tasks/s, {:5.1} % of the floor{vs_rq}",
            s.name(),
            best[i],
            100.0 * best[i] / floor
        );
    }
    if python.is_some() {
        println!("  {:<28} {:>9.0} tasks/s", "rq (2 workers)", best[4]);
    }
}

fn remote_pool(c: &mut Criterion) {
    let Some(server) = RedisServer::start_or_skip("remote_pool bench") else {
        return;
    };
    let mut setup = Setup::new(server);
    let mut group = c.benchmark_group("remote_pool");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    for s in Scenario::ALL {
        group.bench_function(s.name(), |b| b.iter_custom(|n| setup.run(s, n)));
    }
    group.finish();
    if multiproc_testkit::bench_filter().is_none_or(|f| "remote_pool_vs_rq".contains(&f)) {
        against_rq(&mut setup);
    }
}

criterion_group!(benches, remote_pool);
criterion_main!(benches);
