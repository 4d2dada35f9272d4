//! `copy::copy` against `copy_from_slice` (`memcpy`) for 64 KiB, with the
//! destination at the same offset as the source modulo 4 KiB and 6 bytes
//! past it: the case `copy` exists for, where `memcpy`'s string
//! instruction slows down on some CPUs.
//!
//! Run: `cargo bench -p multiproc-core --bench copy`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Duration;

const LEN: usize = 64 * 1024;

fn benches(c: &mut Criterion) {
    let src = vec![7u8; LEN + 8192];
    let mut dst = vec![0u8; LEN + 8192];
    let mut g = c.benchmark_group("copy_64KiB");
    g.throughput(Throughput::Bytes(LEN as u64));
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_secs(1));
    for gap in [0usize, 6] {
        // The source offset that puts the destination `gap` bytes past it
        // modulo 4 KiB.
        let d = dst.as_ptr() as usize;
        let s = src.as_ptr() as usize;
        let from = (s.wrapping_neg().wrapping_add(d).wrapping_sub(gap)) % 4096;
        assert_eq!(d.wrapping_sub(s + from) % 4096, gap);
        let source = &src[from..from + LEN];
        g.bench_function(BenchmarkId::new("memcpy", format!("gap{gap}")), |b| {
            b.iter(|| dst[..LEN].copy_from_slice(black_box(source)));
        });
        g.bench_function(BenchmarkId::new("copy", format!("gap{gap}")), |b| {
            b.iter(|| multiproc_core::copy::copy(&mut dst[..LEN], black_box(source)));
        });
    }
    g.finish();
}

criterion_group!(copy_bench, benches);
criterion_main!(copy_bench);
