//! The process test suite, run once per start method (one test binary each:
//! `fork.rs`, `spawn.rs`, `forkserver.rs`) under the standard test harness —
//! no set-up line anywhere.
#![allow(dead_code)]

use multiproc_core::{ProcessIdentity, Segment};
use multiproc_pipe::{Connection, Pipe};
use multiproc_process::{
    JoinError, JoinTimeoutError, Process, StartMethod, active_children, current_process,
    parent_process,
};
use multiproc_testkit::{eventually, open_fd_count};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Tests that count process-wide things (descriptors, children) run alone;
/// the others share.
static EXCLUSIVE: RwLock<()> = RwLock::new(());

pub fn shared() -> RwLockReadGuard<'static, ()> {
    EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    EXCLUSIVE.write().unwrap_or_else(|e| e.into_inner())
}
use std::time::{Duration, Instant};

fn square(x: u64) -> u64 {
    x * x
}

fn big(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn exit_with(code: i32) {
    std::process::exit(code)
}

fn abort(_: ()) {
    std::process::abort()
}

fn panics(message: String) -> u32 {
    panic!("{message}")
}

fn who_am_i(_: ()) -> (String, u32, bool, Option<u32>) {
    let me = current_process();
    (me.name, me.pid, me.daemon, parent_process().map(|p| p.pid))
}

pub fn returns_values(method: StartMethod) {
    let mut p = Process::new(square, 12)
        .start_method(method)
        .start()
        .unwrap();
    assert_eq!(p.join().unwrap(), 144);
    assert!(matches!(p.join(), Err(JoinError::AlreadyJoined)));

    // 16 MiB each way.
    let mut p = Process::new(big, 16 << 20)
        .start_method(method)
        .start()
        .unwrap();
    assert_eq!(p.join().unwrap(), big(16 << 20));
    let mut p = Process::new(|v: Vec<u8>| v.len(), big(16 << 20))
        .start_method(method)
        .start()
        .unwrap();
    assert_eq!(p.join().unwrap(), 16 << 20);
}

pub fn closures_and_names(method: StartMethod) {
    let mut p = Process::new(
        |(a, b): (String, String)| a + &b,
        ("multi".into(), "proc".into()),
    )
    .start_method(method)
    .start()
    .unwrap();
    assert!(p.name().starts_with("Process-"));
    assert_eq!(p.join().unwrap(), "multiproc");

    let mut p = Process::new(who_am_i, ())
        .name("worker-7")
        .daemon(true)
        .start_method(method)
        .start()
        .unwrap();
    let (name, pid, daemon, parent) = p.join().unwrap();
    assert_eq!(name, "worker-7");
    assert_eq!(pid, p.pid());
    assert!(daemon);
    assert_eq!(parent, Some(std::process::id()));
}

pub fn panics_and_exit_codes(method: StartMethod) {
    let mut p = Process::new(panics, "the message".to_string())
        .start_method(method)
        .start()
        .unwrap();
    match p.join() {
        Err(JoinError::Panicked(message)) => assert_eq!(message, "the message"),
        other => panic!("expected a panic, got {other:?}"),
    }
    assert_eq!(p.exitcode(), Some(1));

    let mut p = Process::new(exit_with, 3)
        .start_method(method)
        .start()
        .unwrap();
    assert!(matches!(p.join(), Err(JoinError::Exited(3))));
    assert_eq!(p.exitcode(), Some(3));

    // Crashes before sending a result.
    let mut p = Process::new(abort, ())
        .start_method(method)
        .start()
        .unwrap();
    match p.join() {
        Err(JoinError::Killed { name, .. }) => assert_eq!(name, "SIGABRT"),
        other => panic!("expected SIGABRT, got {other:?}"),
    }
    assert_eq!(p.exitcode(), Some(-6));
}

pub fn terminate_kill_and_liveness(method: StartMethod) {
    let mut p = Process::new(sleep_ms, 60_000)
        .start_method(method)
        .start()
        .unwrap();
    assert!(p.is_alive());
    assert_eq!(p.exitcode(), None);
    p.terminate().unwrap();
    match p.join_timeout(Duration::from_secs(10)) {
        Err(JoinTimeoutError::Failed(JoinError::Killed { signal, name })) => {
            assert_eq!((signal, name), (15, "SIGTERM"))
        }
        other => panic!("expected SIGTERM, got {other:?}"),
    }
    assert!(!p.is_alive());
    assert_eq!(p.exitcode(), Some(-15));
    p.terminate().unwrap(); // a finished process is left alone

    let mut p = Process::new(sleep_ms, 60_000)
        .start_method(method)
        .start()
        .unwrap();
    p.kill().unwrap();
    assert!(matches!(p.join(), Err(JoinError::Killed { signal: 9, .. })));
    assert_eq!(p.exitcode(), Some(-9));
}

pub fn join_timeout_then_join(method: StartMethod) {
    let mut p = Process::new(sleep_ms, 300)
        .start_method(method)
        .start()
        .unwrap();
    let start = Instant::now();
    assert!(
        p.join_timeout(Duration::from_millis(50))
            .unwrap_err()
            .is_timeout()
    );
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(50) && waited < Duration::from_millis(250),
        "{waited:?}"
    );
    assert!(p.is_alive());
    assert_eq!(p.join_timeout(Duration::from_secs(10)).unwrap(), 300);
    // Joined: again (as Python allows) gives a documented error at once.
    assert!(p.join().unwrap_err().is_already_joined());
    let again = p.join_timeout(Duration::from_secs(10)).unwrap_err();
    assert!(
        matches!(again, JoinTimeoutError::Failed(JoinError::AlreadyJoined)),
        "{again:?}"
    );
    assert_eq!(p.exitcode(), Some(0));
}

/// The middle process: starts a daemon, reports its pid, then waits to be
/// killed.
fn start_daemon_and_wait((method, report): (u8, Connection)) {
    let method = [
        StartMethod::Fork,
        StartMethod::Spawn,
        StartMethod::ForkServer,
    ][method as usize];
    let daemon = Process::new(sleep_ms, 60_000)
        .daemon(true)
        .start_method(method)
        .start()
        .unwrap();
    report.send(&daemon.pid()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

pub fn daemon_dies_with_sigkilled_parent(method: StartMethod) {
    let index = match method {
        StartMethod::Fork => 0u8,
        StartMethod::Spawn => 1,
        StartMethod::ForkServer => 2,
    };
    let (mut rx, tx) = Pipe::new().unwrap();
    let mut parent = Process::new(start_daemon_and_wait, (index, tx))
        .start_method(method)
        .start()
        .unwrap();
    let daemon_pid: u32 = rx.recv().unwrap();
    let daemon = ProcessIdentity::of(daemon_pid).unwrap();
    assert!(daemon.is_alive());
    parent.kill().unwrap();
    assert!(matches!(
        parent.join(),
        Err(JoinError::Killed { signal: 9, .. })
    ));
    let killed = Instant::now();
    assert!(
        eventually(Duration::from_secs(1), || !daemon.is_alive()),
        "daemon {daemon_pid} outlived its parent by over 1 s"
    );
    let _ = killed;
}

fn use_handles((conn, segment): (Connection, Segment)) -> String {
    segment.write_at(0, b"child wrote this").unwrap();
    conn.send(&"over the pipe".to_string()).unwrap();
    let mut buf = [0u8; 6];
    segment.read_at(100, &mut buf).unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

pub fn handles_arrive_usable(method: StartMethod) {
    let (mut rx, tx) = Pipe::new().unwrap();
    let segment = Segment::anonymous(4096).unwrap();
    segment.write_at(100, b"parent").unwrap();
    let mut p = Process::new(use_handles, (tx, segment))
        .start_method(method)
        .start()
        .unwrap();
    assert_eq!(rx.recv::<String>().unwrap(), "over the pipe");
    assert_eq!(p.join().unwrap(), "parent");
}

/// Non-atomic read-modify-write of word 0, 1000 times, under `lock`: only
/// the lock keeps increments from being lost.
fn count_under_lock((lock, segment): (multiproc_sync::Lock, Segment)) {
    let word = segment.atomic_u32(0).unwrap();
    for _ in 0..1000 {
        let _guard = lock.acquire().unwrap_or_else(|died| died.into_inner());
        let v = word.load(std::sync::atomic::Ordering::Relaxed);
        std::hint::spin_loop();
        word.store(v + 1, std::sync::atomic::Ordering::Relaxed);
    }
}

pub fn children_share_a_lock(method: StartMethod) {
    let lock = multiproc_sync::Lock::new().unwrap();
    let segment = Segment::anonymous(64).unwrap();
    let seg_fd = |s: &Segment| {
        let (b, f) = multiproc_core::codec::encode_with_fds(s).unwrap();
        multiproc_core::codec::decode_with_fds::<Segment>(&b, f).unwrap()
    };
    let mut children: Vec<_> = (0..3)
        .map(|_| {
            Process::new(count_under_lock, (lock.clone(), seg_fd(&segment)))
                .start_method(method)
                .start()
                .unwrap()
        })
        .collect();
    for child in &mut children {
        child.join().unwrap();
    }
    assert_eq!(
        segment
            .atomic_u32(0)
            .unwrap()
            .load(std::sync::atomic::Ordering::Relaxed),
        3000
    );
}

fn square_jobs((jobs, results): (multiproc_queue::Queue<u64>, multiproc_queue::Queue<u64>)) -> u64 {
    let mut done = 0;
    while let Ok(n) = jobs.get() {
        results.put(n * n).unwrap();
        done += 1;
    }
    done
}

pub fn children_use_queues(method: StartMethod) {
    let jobs = multiproc_queue::Queue::new().unwrap();
    let results = multiproc_queue::Queue::new().unwrap();
    let mut workers: Vec<_> = (0..2)
        .map(|_| {
            Process::new(square_jobs, (jobs.clone(), results.clone()))
                .start_method(method)
                .start()
                .unwrap()
        })
        .collect();
    for n in 0..500u64 {
        jobs.put(n).unwrap();
    }
    jobs.close();
    let done: u64 = workers.iter_mut().map(|w| w.join().unwrap()).sum();
    assert_eq!(done, 500);
    let mut got: Vec<u64> = (0..500).map(|_| results.get().unwrap()).collect();
    got.sort_unstable();
    assert_eq!(got, (0..500u64).map(|n| n * n).collect::<Vec<_>>());
    assert!(results.is_empty());
}

pub fn many_processes_no_zombies_no_leaks(method: StartMethod) {
    let _alone = exclusive();
    let mut handles = Vec::new();
    let warm = Process::new(square, 1)
        .start_method(method)
        .start()
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(warm, 1);
    let before = open_fd_count();
    for round in 0..10u64 {
        for i in 0..20u64 {
            handles.push((
                round * 20 + i,
                Process::new(square, round * 20 + i)
                    .start_method(method)
                    .start()
                    .unwrap(),
            ));
        }
        for (i, mut p) in handles.drain(..) {
            assert_eq!(p.join().unwrap(), i * i);
        }
    }
    assert!(active_children().is_empty());
    assert_eq!(open_fd_count(), before, "descriptors leaked");
    // No zombie children of ours.
    let me = std::process::id().to_string();
    let zombies = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            let rest = &stat[stat.rfind(')').unwrap_or(0) + 1..];
            let mut f = rest.split_whitespace();
            f.next() == Some("Z") && f.next() == Some(me.as_str())
        })
        .count();
    assert_eq!(zombies, 0);
}

/// Fails to serialize.
struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("cannot encode this"))
    }
}

impl<'de> Deserialize<'de> for Unencodable {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Ok(Unencodable)
    }
}

pub fn unencodable_args_start_nothing(method: StartMethod) {
    let before = active_children().len();
    let err = Process::new(|_: Unencodable| (), Unencodable)
        .start_method(method)
        .start()
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(active_children().len(), before);
}

pub fn busy_threads_holding_locks_do_not_deadlock(method: StartMethod) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let locks: Vec<Arc<Mutex<u64>>> = (0..8).map(|_| Arc::new(Mutex::new(0))).collect();
    let threads: Vec<_> = locks
        .iter()
        .map(|lock| {
            let (lock, stop) = (Arc::clone(lock), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut guard = lock.lock().unwrap();
                    *guard += 1;
                    let _v = vec![0u8; 1024]; // and the allocator
                    std::thread::sleep(Duration::from_micros(50));
                }
            })
        })
        .collect();
    for i in 0..20 {
        let mut p = Process::new(square, i)
            .start_method(method)
            .start()
            .unwrap();
        assert_eq!(p.join_timeout(Duration::from_secs(20)).unwrap(), i * i);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
}

pub fn sentinel_becomes_readable_at_exit(method: StartMethod) {
    use rustix::event::{PollFd, PollFlags};
    let mut p = Process::new(sleep_ms, 100)
        .start_method(method)
        .start()
        .unwrap();
    let sentinel = p.sentinel();
    let mut fds = [PollFd::new(&sentinel, PollFlags::IN)];
    let zero = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    assert_eq!(rustix::event::poll(&mut fds, Some(&zero)).unwrap(), 0);
    let ten = rustix::time::Timespec {
        tv_sec: 10,
        tv_nsec: 0,
    };
    assert_eq!(rustix::event::poll(&mut fds, Some(&ten)).unwrap(), 1);
    assert_eq!(p.join().unwrap(), 100);
}

/// A daemon started from a thread that ends at once lives on while its
/// parent process does (the kernel's parent-death signal follows the
/// forking thread, so it must not be what ties the daemon to its parent
/// here).
pub fn daemon_outlives_the_thread_that_started_it(method: StartMethod) {
    let starter = std::thread::spawn(move || {
        Process::new(sleep_ms, 300)
            .daemon(true)
            .start_method(method)
            .start()
            .unwrap()
    });
    let mut p = starter.join().unwrap();
    assert_eq!(p.join_timeout(Duration::from_secs(20)).unwrap(), 300);
}

fn print_unfinished_line(out: Connection) {
    use std::io::Write;
    // Straight to the real standard output (the harness captures
    // `print!`), redirected to the test's pipe.
    rustix::stdio::dup2_stdout(&out).unwrap();
    drop(out);
    std::io::stdout().write_all(b"no newline").unwrap();
}

/// A child's last, unfinished line of standard output reaches the reader,
/// once, even while another thread of the parent keeps taking the standard
/// output lock (a fork then must not leave the lock held in the child), and
/// without what the parent had left in its own buffer.
pub fn unfinished_output_is_flushed(method: StartMethod) {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let printer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut out = std::io::stdout().lock();
                out.write_all(b"").unwrap();
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    for _ in 0..10 {
        // Left in this process's buffer: a forked child must not write it
        // again (Fork flushes it before forking).
        std::io::stdout().write_all(b" ").unwrap();
        let (rx, tx) = Pipe::simplex().unwrap();
        let mut p = Process::new(print_unfinished_line, tx)
            .start_method(method)
            .start()
            .unwrap();
        p.join_timeout(Duration::from_secs(20)).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            match rustix::io::read(&rx, &mut buf).unwrap() {
                0 => break,
                n => got.extend_from_slice(&buf[..n]),
            }
        }
        assert_eq!(got, b"no newline");
    }
    stop.store(true, Ordering::Relaxed);
    printer.join().unwrap();
}

/// The CPUs the calling thread may run on.
fn allowed_cpus(_: ()) -> Vec<usize> {
    let mask = rustix::thread::sched_getaffinity(None).unwrap();
    (0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&cpu| mask.is_set(cpu))
        .collect()
}

pub fn starts_leave_cpu_masks_alone(method: StartMethod) {
    assert_eq!(
        Process::new(square, 12).start_method(method).run().unwrap(),
        144
    );
    match Process::new(panics, "in run".to_string())
        .start_method(method)
        .run()
    {
        Err(JoinError::Panicked(message)) => assert_eq!(message, "in run"),
        other => panic!("expected a panic, got {other:?}"),
    }
    // A Fork child starts on our CPU, then both get the mask back; so does
    // one from `start` once this thread is seen joining at once.
    let ours = allowed_cpus(());
    for _ in 0..20 {
        let theirs = Process::new(allowed_cpus, ())
            .start_method(method)
            .run()
            .unwrap();
        assert_eq!(theirs, ours);
        assert_eq!(allowed_cpus(()), ours);
        let mut p = Process::new(allowed_cpus, ())
            .start_method(method)
            .start()
            .unwrap();
        assert_eq!(p.join().unwrap(), ours);
        assert_eq!(allowed_cpus(()), ours);
    }
}

/// Runs every case for `method`. The method expression is evaluated before
/// any lock of this module is taken (the fork suite holds a lock of its own
/// in it), so every test takes locks in one order.
#[macro_export]
macro_rules! suite {
    ($method:expr) => {
        #[test]
        fn starts_leave_cpu_masks_alone() {
            let method = $method;
            let _g = common::shared();
            common::starts_leave_cpu_masks_alone(method)
        }
        #[test]
        fn returns_values() {
            let method = $method;
            let _g = common::shared();
            common::returns_values(method)
        }
        #[test]
        fn closures_and_names() {
            let method = $method;
            let _g = common::shared();
            common::closures_and_names(method)
        }
        #[test]
        fn panics_and_exit_codes() {
            let method = $method;
            let _g = common::shared();
            common::panics_and_exit_codes(method)
        }
        #[test]
        fn terminate_kill_and_liveness() {
            let method = $method;
            let _g = common::shared();
            common::terminate_kill_and_liveness(method)
        }
        #[test]
        fn join_timeout_then_join() {
            let method = $method;
            let _g = common::shared();
            common::join_timeout_then_join(method)
        }
        #[test]
        fn daemon_dies_with_sigkilled_parent() {
            let method = $method;
            let _g = common::shared();
            common::daemon_dies_with_sigkilled_parent(method)
        }
        #[test]
        fn children_share_a_lock() {
            let method = $method;
            let _g = common::shared();
            common::children_share_a_lock(method)
        }
        #[test]
        fn children_use_queues() {
            let method = $method;
            let _g = common::shared();
            common::children_use_queues(method)
        }
        #[test]
        fn handles_arrive_usable() {
            let method = $method;
            let _g = common::shared();
            common::handles_arrive_usable(method)
        }
        #[test]
        fn many_processes_no_zombies_no_leaks() {
            let method = $method;
            common::many_processes_no_zombies_no_leaks(method)
        }
        #[test]
        fn unencodable_args_start_nothing() {
            let method = $method;
            let _g = common::shared();
            common::unencodable_args_start_nothing(method)
        }
        #[test]
        fn sentinel_becomes_readable_at_exit() {
            let method = $method;
            let _g = common::shared();
            common::sentinel_becomes_readable_at_exit(method)
        }
        #[test]
        fn daemon_outlives_the_thread_that_started_it() {
            let method = $method;
            let _g = common::shared();
            common::daemon_outlives_the_thread_that_started_it(method)
        }
        #[test]
        fn unfinished_output_is_flushed() {
            let method = $method;
            let _g = common::shared();
            common::unfinished_output_is_flushed(method)
        }
    };
}
