//! Pool between real processes: results, laziness, callbacks, and above all
//! workers that die without hanging anything.

use multiproc_process::{Pool, StartMethod, TaskError};
use multiproc_shm::SharedMemory;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

fn square(x: u64) -> u64 {
    x * x
}

fn pid_of(_: u64) -> u32 {
    std::process::id()
}

fn fails_on_odd(x: u64) -> u64 {
    assert!(x.is_multiple_of(2), "odd input {x}");
    x
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Counts itself as started in the named block, then sleeps.
fn start_then_sleep((block, ms): (String, u64)) -> u32 {
    let shm = SharedMemory::open(&block).unwrap();
    shm.segment()
        .view::<std::sync::atomic::AtomicU64>(0)
        .unwrap()
        .fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

/// Runs `scenario` on a thread of its own and fails if it has not finished
/// within `limit`, so a hang fails the test instead of stalling the run.
fn within<T: Send + 'static>(limit: Duration, scenario: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, finished) = mpsc::channel();
    let runner = std::thread::spawn(move || {
        let _ = done.send(scenario());
    });
    match finished.recv_timeout(limit) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("hung: not finished within {limit:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match runner.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the scenario sends before it ends"),
        },
    }
}

fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn failing_init(_: ()) {
    panic!("cannot initialise");
}

#[test]
fn map_and_imap_over_100_000_items_are_ordered() {
    let pool = Pool::new(2).unwrap();
    let expected: Vec<u64> = (0..100_000u64).map(|x| x * x).collect();
    assert_eq!(pool.map(square, 0..100_000u64, None).unwrap(), expected);
    let got: Vec<u64> = pool
        .imap(square, 0..100_000u64, Some(500))
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, expected);
    assert_eq!(
        pool.starmap(add, (0..1000u64).map(|i| (i, 1)), None)
            .unwrap(),
        (1..=1000).collect::<Vec<_>>()
    );
    let unordered: HashSet<u64> = pool
        .imap_unordered(square, 0..10_000u64, Some(7))
        .map(Result::unwrap)
        .collect();
    assert_eq!(unordered.len(), 10_000);
    assert!(unordered.iter().all(|v| expected.binary_search(v).is_ok()));
    // Chunk size 1 goes through too.
    assert_eq!(
        pool.map(square, 0..2000u64, Some(1)).unwrap(),
        expected[..2000]
    );
}

#[test]
fn imap_consumes_an_endless_input_lazily() {
    let pool = Pool::new(2).unwrap();
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&pulled);
    let endless = (0u64..).inspect(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    let first: Vec<u64> = pool
        .imap(square, endless, Some(10))
        .take(1000)
        .map(Result::unwrap)
        .collect();
    assert_eq!(first, (0..1000u64).map(|x| x * x).collect::<Vec<_>>());
    let window = pool.processes() * (multiproc_process::PREFETCH + 2) * 10;
    let pulled = pulled.load(Ordering::Relaxed);
    assert!(
        pulled <= 1000 + window,
        "pulled {pulled} items for 1000 results"
    );
}

#[test]
fn panics_are_task_errors_and_the_pool_goes_on() {
    let pool = Pool::new(2).unwrap();
    match pool.apply(fails_on_odd, 3) {
        Err(TaskError::Panicked(message)) => assert!(message.contains("odd input 3"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(pool.apply(fails_on_odd, 4).unwrap(), 4);
    let results: Vec<_> = pool.imap(fails_on_odd, 0..10u64, Some(3)).collect();
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 5);
    assert!(pool.map(fails_on_odd, 0..10u64, None).is_err());
}

#[test]
fn callbacks_run_exactly_once() {
    let pool = Pool::new(2).unwrap();
    let ok = Arc::new(AtomicU64::new(0));
    let err = Arc::new(AtomicU64::new(0));
    let results: Vec<_> = (0..50u64)
        .map(|i| {
            let (ok, err) = (Arc::clone(&ok), Arc::clone(&err));
            pool.apply_async_with(
                fails_on_odd,
                i,
                move |v| {
                    ok.fetch_add(1 + *v, Ordering::SeqCst);
                },
                move |_| {
                    err.fetch_add(1, Ordering::SeqCst);
                },
            )
        })
        .collect();
    for r in &results {
        r.wait();
    }
    std::thread::sleep(Duration::from_millis(50));
    let evens: u64 = (0..50).filter(|i| i % 2 == 0).sum();
    assert_eq!(ok.load(Ordering::SeqCst), 25 + evens);
    assert_eq!(err.load(Ordering::SeqCst), 25);
    assert_eq!(
        results
            .iter()
            .filter(|r| r.successful() == Some(true))
            .count(),
        25
    );
}

#[test]
fn a_killed_worker_fails_its_task_only_and_is_replaced() {
    let pool = Pool::new(2).unwrap();
    let block = SharedMemory::create(None, 64).unwrap();
    let started = block
        .segment()
        .view::<std::sync::atomic::AtomicU64>(0)
        .unwrap();
    for round in 0..20u64 {
        let before = pool.worker_pids();
        assert_eq!(before.len(), 2);
        let a = pool.apply_async(start_then_sleep, (block.name().to_owned(), 300));
        let b = pool.apply_async(start_then_sleep, (block.name().to_owned(), 300));
        let deadline = Instant::now() + Duration::from_secs(20);
        while started.load(Ordering::SeqCst) < 2 * (round + 1) {
            assert!(Instant::now() < deadline, "tasks never started");
            std::thread::sleep(Duration::from_millis(1));
        }
        let victim = before[0];
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(victim as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        let outcomes = [a.get(), b.get()];
        let died: Vec<_> = outcomes.iter().filter(|o| o.is_err()).collect();
        assert_eq!(died.len(), 1, "round {round}: {outcomes:?}");
        assert_eq!(
            died[0].as_ref().unwrap_err(),
            &TaskError::WorkerDied {
                exitcode: -9,
                signal: Some("SIGKILL")
            }
        );
        let survivor = outcomes.iter().find_map(|o| o.as_ref().ok()).unwrap();
        assert_ne!(*survivor, victim);
        // The pool is whole again.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = pool.worker_pids();
            if now.len() == 2 && !now.contains(&victim) {
                break;
            }
            assert!(Instant::now() < deadline, "pool not restored: {now:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    assert_eq!(pool.map(square, 0..100u64, None).unwrap().len(), 100);
}

#[test]
fn maxtasksperchild_replaces_workers() {
    let pool = Pool::builder()
        .processes(1)
        .maxtasksperchild(2)
        .build()
        .unwrap();
    let pids: Vec<u32> = (0..6).map(|i| pool.apply(pid_of, i).unwrap()).collect();
    let distinct: HashSet<u32> = pids.iter().copied().collect();
    assert_eq!(distinct.len(), 3, "{pids:?}");
    assert_eq!(pids[0], pids[1]);
    assert_ne!(pids[1], pids[2]);
}

#[test]
fn a_failing_initializer_is_reported_not_looped() {
    let pool = Pool::builder()
        .processes(2)
        .initializer(failing_init, ())
        .build()
        .unwrap();
    let start = Instant::now();
    match pool.apply(square, 2) {
        Err(TaskError::InitializerFailed(message)) => {
            assert!(message.contains("cannot initialise"))
        }
        other => panic!("{other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(matches!(
        pool.apply(square, 3),
        Err(TaskError::InitializerFailed(_))
    ));
}

#[test]
fn terminate_returns_promptly_while_tasks_sleep() {
    let pool = Pool::new(2).unwrap();
    let pids = pool.worker_pids();
    let pending: Vec<_> = (0..4).map(|_| pool.apply_async(sleep_ms, 30_000)).collect();
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    pool.terminate();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "terminate took {:?}",
        start.elapsed()
    );
    for p in pending {
        assert_eq!(p.get().unwrap_err(), TaskError::Terminated);
    }
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists() || {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                stat.contains(") Z ")
            }
        );
    }
}

#[test]
fn join_after_close_waits_for_everything() {
    let pool = Pool::builder()
        .processes(2)
        .start_method(StartMethod::Spawn)
        .build()
        .unwrap();
    let pending: Vec<_> = (0..6).map(|_| pool.apply_async(sleep_ms, 100)).collect();
    pool.close();
    assert_eq!(pool.apply(square, 1).unwrap_err(), TaskError::Closed);
    pool.join();
    assert!(pending.iter().all(|p| p.ready()));
    for p in pending {
        assert_eq!(p.get().unwrap(), 100);
    }
}

#[test]
fn dropping_a_pool_leaves_no_processes() {
    let pids = {
        let pool = Pool::new(2).unwrap();
        assert_eq!(pool.apply(square, 5).unwrap(), 25);
        pool.worker_pids()
    };
    for pid in pids {
        let gone = multiproc_core::ProcessIdentity::of(pid)
            .map(|p| !p.is_alive())
            .unwrap_or(true);
        assert!(gone, "worker {pid} outlived its pool");
    }
}

#[test]
fn a_panicking_callback_neither_stops_nor_hangs_the_pool() {
    const LIMIT: Duration = Duration::from_secs(20);
    const WAIT: Duration = Duration::from_secs(10);
    within(LIMIT, || {
        let pool = Pool::new(2).unwrap();
        let ok = pool.apply_async_with(square, 3, |_| panic!("callback boom"), |_| {});
        assert_eq!(ok.get_timeout(WAIT), Ok(9));
        let err = pool.apply_async_with(fails_on_odd, 1, |_| {}, |_| panic!("error callback boom"));
        match err.get_timeout(WAIT) {
            Err(TaskError::Panicked(message)) => assert!(message.contains("odd input 1")),
            other => panic!("{other:?}"),
        }
        // Later results arrive, and their callbacks run.
        let ran = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&ran);
        let later = pool.apply_async_with(
            square,
            4,
            move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
            },
            |_| {},
        );
        assert_eq!(later.get_timeout(WAIT), Ok(16));
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        assert_eq!(pool.callback_panics(), 2);
        assert_eq!(pool.map(square, 0..100u64, None).unwrap().len(), 100);
        pool.close();
        pool.join();
    });
    // Dropping the pool (no close) returns too.
    within(LIMIT, || {
        let pool = Pool::new(1).unwrap();
        let ok = pool.apply_async_with(square, 2, |_| panic!("callback boom"), |_| {});
        assert_eq!(ok.get_timeout(WAIT), Ok(4));
        drop(pool);
    });
}

#[test]
fn blocking_pool_calls_from_a_callback_fail_instead_of_deadlocking() {
    const WAIT: Duration = Duration::from_secs(10);
    within(Duration::from_secs(20), || {
        let pool = Arc::new(Pool::new(2).unwrap());
        let inner = Arc::clone(&pool);
        let slow = pool.apply_async(sleep_ms, 2000);
        let (tx, rx) = mpsc::channel();
        let first = pool.apply_async_with(
            square,
            3,
            move |_| {
                let apply = inner.apply(square, 2);
                let map = inner.map(square, 0..4u64, None);
                let imap: Vec<_> = inner.imap(square, 0..4u64, None).collect();
                let get = slow.get();
                // Submitting does not wait: it works.
                let later = inner.apply_async(square, 5);
                tx.send((apply, map, imap, get, later)).unwrap();
            },
            |_| {},
        );
        assert_eq!(first.get_timeout(WAIT), Ok(9));
        let (apply, map, imap, get, later) = rx.recv_timeout(WAIT).unwrap();
        assert_eq!(apply, Err(TaskError::WouldDeadlock));
        assert_eq!(map, Err(TaskError::WouldDeadlock));
        assert_eq!(imap, vec![Err(TaskError::WouldDeadlock)]);
        assert_eq!(get, Err(TaskError::WouldDeadlock));
        assert_eq!(later.get_timeout(WAIT), Ok(25));
        // The pool still works from other threads.
        assert_eq!(pool.apply(square, 6).unwrap(), 36);
        pool.close();
        pool.join();
    });
}

#[test]
fn terminating_or_dropping_a_pool_from_its_callback_returns() {
    const WAIT: Duration = Duration::from_secs(10);
    within(Duration::from_secs(20), || {
        let pool = Arc::new(Pool::new(2).unwrap());
        let inner = Arc::clone(&pool);
        let slow = pool.apply_async(sleep_ms, 30_000);
        let (tx, rx) = mpsc::channel();
        let first = pool.apply_async_with(
            square,
            3,
            move |_| {
                inner.terminate();
                tx.send(()).unwrap();
            },
            |_| {},
        );
        rx.recv_timeout(WAIT)
            .expect("terminate called from a callback returns");
        assert_eq!(first.get_timeout(WAIT), Ok(9));
        assert_eq!(slow.get_timeout(WAIT), Err(TaskError::Terminated));
        drop(pool);
    });
    within(Duration::from_secs(20), || {
        // The callback holds the last handle: the pool is dropped on its
        // own result thread.
        let pool = Arc::new(Pool::new(1).unwrap());
        let pids = pool.worker_pids();
        let inner = Arc::clone(&pool);
        let (tx, rx) = mpsc::channel();
        let first = pool.apply_async_with(
            sleep_ms,
            200,
            move |_| {
                drop(inner);
                tx.send(()).unwrap();
            },
            |_| {},
        );
        drop(pool);
        rx.recv_timeout(WAIT)
            .expect("dropping the pool from its callback returns");
        assert_eq!(first.get_timeout(WAIT), Ok(200));
        for pid in pids {
            let gone = multiproc_core::ProcessIdentity::of(pid)
                .map(|p| !p.is_alive())
                .unwrap_or(true);
            assert!(gone, "worker {pid} outlived its pool");
        }
    });
}

/// Counts itself as started in the named block, then aborts the worker: an
/// initializer that never returns nor panics.
fn aborting_init(block: String) {
    let shm = SharedMemory::open(&block).unwrap();
    shm.segment()
        .view::<std::sync::atomic::AtomicU64>(0)
        .unwrap()
        .fetch_add(1, Ordering::SeqCst);
    std::process::abort();
}

#[test]
fn an_aborting_initializer_is_reported_not_looped() {
    let block = SharedMemory::create(None, 64).unwrap();
    let name = block.name().to_owned();
    let starts = move || {
        block
            .segment()
            .view::<std::sync::atomic::AtomicU64>(0)
            .unwrap()
            .load(Ordering::SeqCst)
    };
    within(Duration::from_secs(20), move || {
        let pool = Pool::builder()
            .processes(2)
            .initializer(aborting_init, name)
            .build()
            .unwrap();
        let first = pool.apply(square, 2);
        // Bounded: a few fresh workers, then no more.
        let after_failure = starts();
        std::thread::sleep(Duration::from_secs(1));
        let later = starts();
        assert!(
            (2..=8).contains(&later),
            "{later} workers started by a pool of 2 ({first:?})"
        );
        assert_eq!(
            later, after_failure,
            "workers still started after the failure"
        );
        match first {
            Err(TaskError::InitializerFailed(message)) => {
                assert!(message.contains("SIGABRT"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            pool.apply(square, 3),
            Err(TaskError::InitializerFailed(_))
        ));
    });
}

/// Environment variable that runs a test's body in a child process of the
/// test binary (for process-wide settings like rlimits).
const ROLE: &str = "MULTIPROC_POOL_TEST_ROLE";

/// Runs test `name` again in a child process with [`ROLE`] set; passes when
/// that child does.
fn in_child_process(name: &str) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(ROLE, name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} in a child process: {}\n{stdout}\n{stderr}",
        out.status
    );
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Children of this process, from every thread's children list.
fn child_pids() -> Vec<u32> {
    let mut pids = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        pids.extend(
            children
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    pids
}

#[test]
fn a_pool_that_cannot_start_leaks_nothing_and_names_the_cause() {
    const NAME: &str = "a_pool_that_cannot_start_leaks_nothing_and_names_the_cause";
    if std::env::var(ROLE).as_deref() != Ok(NAME) {
        return in_child_process(NAME);
    }
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    // Warm up what the process keeps open anyway (a first pool).
    // Fork workers: the fork server is a helper of the process, not of the
    // pool, and would count as a child.
    multiproc_process::set_start_method(StartMethod::Fork);
    let pool = Pool::new(1).unwrap();
    assert_eq!(pool.apply(square, 3).unwrap(), 9);
    drop(pool);
    // Helpers the process keeps (such as a shared-memory tracker).
    let tracker = child_pids();
    let base = open_fds();
    let old = getrlimit(Resource::Nofile);
    // Room for a worker or two of four, not for all.
    let limit = (base + 12) as u64;
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(limit),
            maximum: old.maximum,
        },
    )
    .unwrap();
    let mut fds = Vec::new();
    for _ in 0..4 {
        let error = Pool::new(4).expect_err("four workers do not fit");
        let children: Vec<String> = child_pids()
            .into_iter()
            .filter(|pid| !tracker.contains(pid))
            .map(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_else(|_| pid.to_string())
            })
            .collect();
        fds.push(open_fds());
        assert!(
            children.is_empty(),
            "workers left running: {children:?} ({error}; fds {base} -> {fds:?})"
        );
        let cause = std::error::Error::source(&error)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .and_then(std::io::Error::raw_os_error);
        assert_eq!(cause, Some(24), "{error} / {error:?}");
        assert!(
            error.to_string().contains("could not start the pool")
                && error.to_string().contains("too many open files"),
            "{error}"
        );
    }
    setrlimit(Resource::Nofile, old).unwrap();
    assert!(
        fds.iter().all(|&n| n == base),
        "open fds went from {base} to {fds:?}"
    );
}
