//! Pool throughput and latency: `map` of a trivial function over 100 000
//! items (chunk size 1 and automatic), an `apply_async(..).get()` round
//! trip, and pool start + first task + close/join.
//!
//! Then `pool_map_vs_python`: the same `map` at chunk size 1 against
//! Python's `multiprocessing.Pool(2).map` (`benches/python_pool.py`), both
//! warmed up, interleaved over [`ROUNDS`] rounds, best run of each, with
//! the load average at the start of each round. Skipped with a message
//! when `python3` cannot be run.
//!
//! Run: `cargo bench -p multiproc-process --bench pool`
//! (`-- pool_map_vs_python` for the comparison alone).

use criterion::{Criterion, Throughput};
use multiproc_process::{Pool, StartMethod};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Items of every `map`.
const ITEMS: u64 = 100_000;

/// Rounds of the comparison with Python; each runs Python, then ours.
const ROUNDS: usize = 3;

/// Timed `map`s of each contender per round.
const RUNS: usize = 3;

fn double(x: u64) -> u64 {
    x * 2
}

/// Python's best tasks/s over [`RUNS`] maps in one pool, or why not.
fn python_map() -> Result<f64, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/python_pool.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(ITEMS.to_string())
        .arg(RUNS.to_string())
        .output()
        .map_err(|e| format!("python3 could not be run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.strip_prefix("tasks_per_second ")?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .reduce(f64::max)
        .ok_or_else(|| "no result from python".into())
}

/// Our best tasks/s over [`RUNS`] maps.
fn our_map(pool: &Pool) -> f64 {
    (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            let out = pool.map(double, 0..ITEMS, Some(1)).unwrap();
            let took = start.elapsed();
            assert_eq!(out.last(), Some(&(2 * (ITEMS - 1))));
            ITEMS as f64 / took.as_secs_f64()
        })
        .fold(0.0, f64::max)
}

/// `pool_map_vs_python`: see the module docs.
fn against_python(pool: &Pool) {
    let mut best = (0.0f64, 0.0f64);
    for round in 1..=ROUNDS {
        let load = multiproc_testkit::load_average();
        let python = match python_map() {
            Ok(rate) => rate,
            Err(why) => {
                println!("pool_map_vs_python: skipped, {why}");
                return;
            }
        };
        let ours = our_map(pool);
        println!(
            "pool_map_vs_python round {round}: Pool(2).map 100k chunksize 1: \
             multiproc {:.0} K tasks/s, Python {:.1} K tasks/s, ratio {:.1}x (load {load})",
            ours / 1e3,
            python / 1e3,
            ours / python
        );
        best = (best.0.max(ours), best.1.max(python));
    }
    println!(
        "pool_map_vs_python best: multiproc {:.0} K tasks/s, Python {:.1} K tasks/s, \
         ratio {:.1}x",
        best.0 / 1e3,
        best.1 / 1e3,
        best.0 / best.1
    );
}

fn main() {
    let compare =
        multiproc_testkit::bench_filter().is_none_or(|f| "pool_map_vs_python".contains(&f));
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10)
        .configure_from_args();
    // Pool start first, while this process is small: a fork costs more the
    // more memory the parent maps (page tables are copied), and the map
    // benchmarks below leave a heap of about 30 MB behind (fork pool start
    // measured 0.8 ms before them, 1.7 ms after; forkserver and spawn do
    // not depend on it).
    let mut group = c.benchmark_group("pool_latency");
    for method in [
        StartMethod::Fork,
        StartMethod::ForkServer,
        StartMethod::Spawn,
    ] {
        group.bench_function(format!("start_task_close_join/{}", method.name()), |b| {
            b.iter(|| {
                let pool = Pool::builder()
                    .processes(2)
                    .start_method(method)
                    .build()
                    .unwrap();
                pool.apply(double, 1).unwrap();
                pool.close();
                pool.join();
            })
        });
    }
    group.finish();
    let pool = Pool::new(2).unwrap();
    let mut group = c.benchmark_group("pool_map_100k");
    group.throughput(Throughput::Elements(ITEMS));
    group.bench_function("chunksize_1", |b| {
        b.iter(|| pool.map(double, 0..ITEMS, Some(1)).unwrap())
    });
    group.bench_function("chunksize_auto", |b| {
        b.iter(|| pool.map(double, 0..ITEMS, None).unwrap())
    });
    group.finish();
    let mut group = c.benchmark_group("pool_latency");
    group.bench_function("apply_async_get", |b| {
        b.iter(|| pool.apply_async(double, 21).get().unwrap())
    });
    group.finish();
    if compare {
        against_python(&pool);
    }
    drop(pool);
    c.final_summary();
}
