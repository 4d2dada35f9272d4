//! The process suite under `StartMethod::Spawn`, in the standard harness.
mod common;
use multiproc_process::StartMethod;
suite!(StartMethod::Spawn);

#[test]
fn busy_threads_holding_locks_do_not_deadlock() {
    common::busy_threads_holding_locks_do_not_deadlock(StartMethod::Spawn)
}

fn seven_squared(_: ()) -> u64 {
    49
}

fn exits_with_three(_: ()) {
    std::process::exit(3)
}

/// Run in a child of the test (so the test runner's own disposition stays
/// as it is): ignores `SIGCHLD`, as some hosts do, so the kernel reaps its
/// children itself and their exit status is lost; then starts one child
/// that returns a value and one that exits without one, by fork and by
/// spawn, and joins each. What each join gave, per start method.
#[allow(unsafe_code)]
fn joins_with_sigchld_ignored(_: ()) -> Vec<String> {
    // (libc: rustix has no `signal`/`sigaction` outside its unstable
    // runtime module, and the library itself never sets this one.)
    // SAFETY: sets a disposition to SIG_IGN in a process that installs no
    // handler of its own for SIGCHLD.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    let mut seen = Vec::new();
    for method in [StartMethod::Fork, StartMethod::Spawn] {
        let mut returns = multiproc_process::Process::new(seven_squared, ())
            .start_method(method)
            .start()
            .unwrap();
        seen.push(format!("{:?}", returns.join().map_err(|e| e.to_string())));
        let mut exits = multiproc_process::Process::new(exits_with_three, ())
            .start_method(method)
            .start()
            .unwrap();
        let joined = exits
            .join()
            .map_err(|e| (e.is_status_discarded(), e.to_string()));
        seen.push(format!("{joined:?} {:?}", exits.exitcode()));
    }
    seen
}

#[test]
fn children_of_a_process_that_ignores_sigchld_can_be_joined() {
    let mut p = multiproc_process::Process::new(joins_with_sigchld_ignored, ())
        .start_method(StartMethod::Spawn)
        .start()
        .unwrap();
    let seen = p.join_timeout(std::time::Duration::from_secs(60)).unwrap();
    let discarded = "Err((true, \"process exited without a result, and its exit status is lost: \
                     SIGCHLD is ignored here, another part of the program reaped it, \
                     or the fork server that started it died\")) None";
    assert_eq!(seen, ["Ok(49)", discarded, "Ok(49)", discarded]);
}
