//! The process suite under `StartMethod::ForkServer`, in the standard harness.
mod common;
use multiproc_process::StartMethod;
suite!(StartMethod::ForkServer);

#[test]
fn busy_threads_holding_locks_do_not_deadlock() {
    common::busy_threads_holding_locks_do_not_deadlock(StartMethod::ForkServer)
}

#[test]
fn forkserver_is_the_default() {
    assert_eq!(
        multiproc_process::get_start_method(),
        StartMethod::ForkServer
    );
}
