//! Pool throughput and latency: `map` of a trivial function over 100 000
//! items (chunk size 1 and automatic), an `apply_async(..).get()` round
//! trip, and pool start + first task + close/join.
//!
//! Run: `cargo bench -p multiproc-process --bench pool`

use criterion::{Criterion, Throughput};
use multiproc_process::{Pool, StartMethod};
use std::time::Duration;

fn double(x: u64) -> u64 {
    x * 2
}

fn main() {
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
    group.throughput(Throughput::Elements(100_000));
    group.bench_function("chunksize_1", |b| {
        b.iter(|| pool.map(double, 0..100_000u64, Some(1)).unwrap())
    });
    group.bench_function("chunksize_auto", |b| {
        b.iter(|| pool.map(double, 0..100_000u64, None).unwrap())
    });
    group.finish();
    let mut group = c.benchmark_group("pool_latency");
    group.bench_function("apply_async_get", |b| {
        b.iter(|| pool.apply_async(double, 21).get().unwrap())
    });
    drop(pool);
    group.finish();
    c.final_summary();
}
