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

/// A marker variable this process did not put there — left in an
/// environment by accident, copied from a dump, or set by someone else —
/// must not turn a binary that links the crate into a child or a fork
/// server before its `main`: the binary (this test binary, listing its
/// tests) runs as usual.
#[test]
#[allow(unsafe_code)]
fn a_stray_marker_variable_does_not_hijack_the_binary() {
    let me = std::env::current_exe().unwrap();
    for marker in ["MULTIPROC_SPAWN_FD", "MULTIPROC_FORKSERVER_FD"] {
        // Standard input, output and error are open descriptors, as a stray
        // number usually names; so is a socket of the right kind.
        let (_ours, theirs) = multiproc_core::scm::stream_pair().unwrap();
        let socket = std::os::fd::AsRawFd::as_raw_fd(&theirs).to_string();
        for value in ["0", "1", "2", socket.as_str(), "0:00112233", "not a number"] {
            let mut cmd = std::process::Command::new(&me);
            cmd.args(["--list", "--format=terse"])
                .env(marker, value)
                .stdin(std::process::Stdio::null());
            let fd = std::os::fd::AsRawFd::as_raw_fd(&theirs);
            // SAFETY: runs in the forked child before exec; fcntl is
            // async-signal-safe and only makes the socket inheritable.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                    let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
                    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
                    Ok(())
                });
            }
            let out = cmd.output().unwrap();
            let listed = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success()
                    && listed.contains("a_stray_marker_variable_does_not_hijack_the_binary: test"),
                "{marker}={value}: {}\n{listed}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

/// Run in a spawned child (whose exit runs exit handlers): sets
/// `set_finish_children_at_exit(finish)`, starts a non-daemon child that
/// sleeps 2 s, and returns that child's pid; the process then exits.
fn leave_a_sleeper(finish: bool) -> u32 {
    multiproc_process::set_finish_children_at_exit(finish);
    let sleeper = multiproc_process::Process::new(sleep_ms, 2000)
        .start_method(StartMethod::Spawn)
        .start()
        .unwrap();
    sleeper.pid()
}

#[test]
fn set_finish_children_at_exit_false_leaves_children_running_at_exit() {
    use std::time::{Duration, Instant};
    let alive = |pid: u32| {
        // A zombie counts as gone: it no longer runs.
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    };
    for finish in [true, false] {
        let started = Instant::now();
        let mut parent = multiproc_process::Process::new(leave_a_sleeper, finish)
            .start_method(StartMethod::Spawn)
            .start()
            .unwrap();
        let sleeper = parent.join().unwrap();
        let took = started.elapsed();
        if finish {
            // The exit handler waited for the sleeper.
            assert!(took >= Duration::from_millis(1900), "{took:?}");
            assert!(!alive(sleeper));
        } else {
            // No exit handler ran: the parent exited at once, the sleeper runs on.
            assert!(took < Duration::from_millis(1900), "{took:?}");
            assert!(alive(sleeper), "the sleeper was finished at exit");
            let pid = rustix::process::Pid::from_raw(sleeper as i32).unwrap();
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}
