//! multiproc `Queue` and `Pipe` against every peer, in one run: raw pipe and
//! socketpair `write`/`read` (floors), a spinning SPSC ring in shared memory
//! (ceiling), `memcpy`, `ipc-channel`, and a naive `shared_memory` +
//! `raw_sync` queue. The scenarios, peers and harness live in `benches/common`,
//! shared with `examples/compare.rs`.
//!
//! | group | ids | throughput |
//! |---|---|---|
//! | `1to1/<size>`, `2to2/<size>` | one per peer | bytes/s and messages/s |
//! | `rtt/8B` | one per peer | round trips/s (criterion's time is the round trip) |
//!
//! Sizes: 8 B, 64 B, 1 KiB, 64 KiB, 1 MiB. A cell a peer cannot fill is
//! left out; the reason is printed at the start and written in
//! `common::Peer::skip` (for instance: a SPSC ring has no 2→2, and a
//! `Connection` like Python's is point-to-point). `memcpy` runs in the
//! 64 KiB and 1 MiB 1→1 groups.
//!
//! Run (about five minutes on two CPUs):
//!
//! ```text
//! cargo bench --bench queue_vs_pipe
//! cargo bench --bench queue_vs_pipe -- 1to1/8B      # one group
//! ```
#![allow(unsafe_code)]

mod common;

use common::{Case, Flow, RoundTrip, memcpy_run, peers};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use std::time::Duration;

fn matrix(c: &mut Criterion) {
    let peers = peers();
    let mut told = std::collections::HashSet::new();
    for peer in &peers {
        for case in Case::all() {
            if let Some(why) = peer.skip(case)
                && told.insert((peer.key(), why))
            {
                eprintln!("left out: {} from {} on: {why}", peer.key(), case.key());
            }
        }
    }
    for case in Case::all() {
        let key = case.key();
        let mut group = c.benchmark_group(&key);
        match case {
            Case::Flow { size, procs } => {
                group.throughput(Throughput::ElementsAndBytes {
                    elements: 1,
                    bytes: size as u64,
                });
                for peer in peers.iter().filter(|p| p.skip(case).is_none()) {
                    let mut flow = Flow::start(peer.as_ref(), size, procs);
                    group.bench_function(BenchmarkId::from_parameter(peer.key()), |b| {
                        b.iter_custom(|n| flow.run(n));
                    });
                }
                if procs == 1 && size >= 64 * 1024 {
                    let src = vec![3u8; size];
                    let mut dst = vec![0u8; size];
                    group.bench_function(BenchmarkId::from_parameter("memcpy"), |b| {
                        b.iter_custom(|n| memcpy_run(&src, &mut dst, n));
                    });
                }
            }
            Case::RoundTrip => {
                group.throughput(Throughput::Elements(1));
                for peer in peers.iter().filter(|p| p.skip(case).is_none()) {
                    let mut rtt = RoundTrip::start(peer.as_ref());
                    group.bench_function(BenchmarkId::from_parameter(peer.key()), |b| {
                        b.iter_custom(|n| rtt.run(n));
                    });
                }
            }
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1200))
        .sample_size(10);
    targets = matrix
}
/// Makes this program only free what the iceoryx2 partners it killed left
/// behind (it must run in a process that never used iceoryx2).
const ICEORYX2_CLEANUP: &str = "--remove-stale-iceoryx2-nodes";

/// `criterion_main!`, then the iceoryx2 clean-up from a fresh copy of this
/// program.
fn main() {
    if std::env::args().any(|a| a == ICEORYX2_CLEANUP) {
        common::remove_stale_iceoryx2_nodes();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    let _ = std::env::current_exe().and_then(|exe| {
        std::process::Command::new(exe)
            .arg(ICEORYX2_CLEANUP)
            .status()
    });
}
