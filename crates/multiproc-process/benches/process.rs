//! Start + join of a no-op process for each start method (and `run`, start
//! and join in one call, for Fork), against a bare `fork` + `waitpid` and a
//! `Command` re-exec of the same binary, measured in the same run.
//!
//! Run: `cargo bench -p multiproc-process --bench process`
#![allow(unsafe_code)]

use criterion::Criterion;
use multiproc_core::process::{self, Forked};
use multiproc_process::{Process, StartMethod};
use rustix::process::{WaitOptions, waitpid};
use std::time::Duration;

/// Marks the re-executed copy of this bench that only has to exit.
const EXIT_AT_ONCE: &str = "MULTIPROC_BENCH_EXIT_AT_ONCE";

fn noop(_: ()) {}

fn start_join(c: &mut Criterion) {
    let mut group = c.benchmark_group("process_start_join");
    group.bench_function("bare_fork_waitpid", |b| {
        b.iter(|| {
            // SAFETY: the contract of `process::fork` holds: the child only
            // calls `exit_now`, which is async-signal-safe.
            match unsafe { process::fork() }.unwrap() {
                Forked::Child => process::exit_now(0),
                Forked::Parent(pid) => {
                    waitpid(Some(pid), WaitOptions::empty()).unwrap();
                }
            }
        });
    });
    // The same through `run`, which may start a Fork child on this CPU as
    // it knows we wait at once.
    group.bench_function("fork_run", |b| {
        b.iter(|| {
            Process::new(noop, ())
                .start_method(StartMethod::Fork)
                .run()
                .unwrap();
        });
    });
    for method in [
        StartMethod::Fork,
        StartMethod::ForkServer,
        StartMethod::Spawn,
    ] {
        group.bench_function(method.name(), |b| {
            b.iter(|| {
                let mut p = Process::new(noop, ()).start_method(method).start().unwrap();
                p.join().unwrap();
            });
        });
    }
    // Last: after a few thousand `Command` spawns this process's heap is
    // about 4 MB larger, and a Fork start then measured 245-270 µs instead
    // of 160-180 µs while bare fork did not change (run order was bare,
    // command, fork, … before); bare fork and the start methods are
    // compared in the same state.
    group.bench_function("command_reexec", |b| {
        let exe = std::env::current_exe().unwrap();
        b.iter(|| {
            let status = std::process::Command::new(&exe)
                .env(EXIT_AT_ONCE, "1")
                .status()
                .unwrap();
            assert!(status.success());
        });
    });
    group.finish();
}

fn main() {
    if std::env::var_os(EXIT_AT_ONCE).is_some() {
        return;
    }
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    start_join(&mut c);
    c.final_summary();
}
