//! The process suite under `StartMethod::Spawn`, in the standard harness.
mod common;
use multiproc_process::StartMethod;
suite!(StartMethod::Spawn);

#[test]
fn busy_threads_holding_locks_do_not_deadlock() {
    common::busy_threads_holding_locks_do_not_deadlock(StartMethod::Spawn)
}
