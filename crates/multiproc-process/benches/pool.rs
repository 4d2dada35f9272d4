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
    c.final_summary();
}
