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

// What happens to the server, and to the children it started, when a start
// fails or the server dies. Each test changes process-wide state (the
// descriptor limit, or kills the server), so each runs alone in a process of
// its own.

use multiproc_process::Process;
use multiproc_testkit::{alone_in_child_process, child_pids, open_fd_count, process_state};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use std::time::Duration;

fn sleep_then((value, ms): (u64, u64)) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    value
}

fn triple(x: u64) -> u64 {
    3 * x
}

/// Children that sleep `ms` and return their index; every other one a
/// daemon.
fn start_sleepers(count: u64, ms: u64) -> Vec<(u64, Process<u64>)> {
    (0..count)
        .map(|i| {
            let p = Process::new(sleep_then, (i, ms))
                .daemon(i % 2 == 1)
                .start()
                .unwrap();
            (i, p)
        })
        .collect()
}

fn join_all(children: Vec<(u64, Process<u64>)>) {
    for (i, mut p) in children {
        let daemon = p.daemon();
        assert_eq!(
            p.join().map_err(|e| e.to_string()),
            Ok(i),
            "child {i} (daemon: {daemon})"
        );
    }
}

/// Sets the soft descriptor limit to `limit`; returns the old limits.
fn limit_fds(limit: usize) -> Rlimit {
    let old = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(limit as u64),
            maximum: old.maximum,
        },
    )
    .unwrap();
    old
}

/// Whether `error`, or an error it was caused by, is `EMFILE`.
fn out_of_fds(error: &std::io::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            == Some(rustix::io::Errno::MFILE.raw_os_error())
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// The process's fork server: its only live direct child here (a dead
/// one not yet reaped is a zombie, checked on its own).
fn the_server() -> u32 {
    let live: Vec<u32> = child_pids()
        .into_iter()
        .filter(|&pid| process_state(pid).is_some_and(|s| s != 'Z'))
        .collect();
    assert_eq!(live.len(), 1, "live direct children: {live:?}");
    live[0]
}

/// Direct children that have exited and were not reaped.
fn zombies() -> Vec<u32> {
    child_pids()
        .into_iter()
        .filter(|&pid| process_state(pid) == Some('Z'))
        .collect()
}

#[test]
fn a_start_that_runs_out_of_descriptors_fails_alone() {
    if !alone_in_child_process("a_start_that_runs_out_of_descriptors_fails_alone", &[]) {
        return;
    }
    // A first start launches the server.
    assert_eq!(Process::new(triple, 1).start().unwrap().join().unwrap(), 3);
    let base = open_fd_count();
    let running = start_sleepers(4, 2000);
    let server = the_server();
    let now = open_fd_count();
    // Every amount of spare descriptors from none to plenty, so that each
    // step of a start (the parent's sockets, the request, the reply with its
    // pidfd) is the one that runs out in some round.
    let mut failures = Vec::new();
    for spare in 0..16 {
        let old = limit_fds(now + spare);
        let started = Process::new(triple, spare as u64).start();
        setrlimit(Resource::Nofile, old).unwrap();
        match started {
            Ok(mut p) => assert_eq!(p.join().unwrap(), 3 * spare as u64),
            Err(e) => {
                assert!(out_of_fds(&e), "{e} / {e:?}");
                failures.push(spare);
            }
        }
    }
    assert!(!failures.is_empty(), "the limit never bit");
    // The server that failed those starts still serves, and still reports on
    // the children it started before.
    assert_eq!(the_server(), server, "the fork server was replaced");
    assert_eq!(zombies(), []);
    assert_eq!(Process::new(triple, 5).start().unwrap().join().unwrap(), 15);
    join_all(running);
    assert_eq!(open_fd_count(), base, "descriptors leaked");
}

/// Role of [`a_server_out_of_descriptors_fails_only_that_start`]: the
/// server starts under a low limit, which it keeps; `MULTIPROC_TEST_SPARE`
/// shifts it by one so that both a request's descriptors and the pidfd of
/// the reply run out in one of the two runs.
#[test]
fn a_server_out_of_descriptors_fails_only_that_start() {
    const NAME: &str = "a_server_out_of_descriptors_fails_only_that_start";
    const SPARE: &str = "MULTIPROC_TEST_SPARE";
    if std::env::var(SPARE).is_err() {
        alone_in_child_process(NAME, &[(SPARE, "0")]);
        alone_in_child_process(NAME, &[(SPARE, "1")]);
        return;
    }
    if !alone_in_child_process(NAME, &[]) {
        return;
    }
    let shift: usize = std::env::var(SPARE).unwrap().parse().unwrap();
    let old = limit_fds(open_fd_count() + 24 + shift);
    // The server inherits the low limit; this process gets its own back.
    assert_eq!(Process::new(triple, 1).start().unwrap().join().unwrap(), 3);
    setrlimit(Resource::Nofile, old).unwrap();
    let server = the_server();
    let mut running = Vec::new();
    let error = loop {
        let i = running.len() as u64;
        assert!(i < 100, "the server never ran out of descriptors");
        match Process::new(sleep_then, (i, 1500))
            .daemon(i % 2 == 1)
            .start()
        {
            Ok(p) => running.push((i, p)),
            Err(e) => break e,
        }
    };
    assert!(out_of_fds(&error), "{error} / {error:?}");
    assert_eq!(the_server(), server, "the fork server was replaced");
    join_all(running);
    // With its children gone it has room again.
    assert_eq!(Process::new(triple, 7).start().unwrap().join().unwrap(), 21);
    assert_eq!(the_server(), server);
    assert_eq!(zombies(), []);
}

#[test]
fn a_killed_server_is_replaced_and_its_children_still_deliver() {
    if !alone_in_child_process(
        "a_killed_server_is_replaced_and_its_children_still_deliver",
        &[],
    ) {
        return;
    }
    // A first start launches the server.
    assert_eq!(Process::new(triple, 1).start().unwrap().join().unwrap(), 3);
    let base = open_fd_count();
    let running = start_sleepers(6, 1000);
    let server = the_server();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(server as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    assert!(
        multiproc_testkit::eventually(Duration::from_secs(5), || process_state(server)
            == Some('Z')),
        "the server did not die"
    );
    // New starts go to a new server, and the old one is reaped.
    assert_eq!(Process::new(triple, 2).start().unwrap().join().unwrap(), 6);
    let replacement = the_server();
    assert_ne!(replacement, server);
    assert_eq!(
        process_state(server),
        None,
        "the dead server was not reaped"
    );
    // The children of the dead server deliver their values; their exit
    // status went to whoever adopted them, so `exitcode` stays `None`.
    // Daemons die with the server that forked them (their parent-death
    // signal), unless they started after it died.
    let mut codes = Vec::new();
    for (i, mut p) in running {
        match p.join() {
            Ok(value) => assert_eq!(value, i),
            Err(e) => assert!(p.daemon() && e.is_status_discarded(), "child {i}: {e}"),
        }
        assert!(!p.is_alive());
        codes.push(p.exitcode());
    }
    assert!(codes.iter().all(Option::is_none), "{codes:?}");
    assert_eq!(open_fd_count(), base, "descriptors leaked");
}
