//! Pool between real processes: results, laziness, callbacks, and above all
//! workers that die without hanging anything.

use multiproc_process::{GetTimeoutError, Pool, StartMethod, TaskError};
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
        match err
            .get_timeout(WAIT)
            .map_err(GetTimeoutError::into_task_error)
        {
            Err(Some(TaskError::Panicked(message))) => assert!(message.contains("odd input 1")),
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
        assert_eq!(
            slow.get_timeout(WAIT),
            Err(GetTimeoutError::Failed(TaskError::Terminated))
        );
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

#[test]
fn a_pool_that_cannot_start_leaks_nothing_and_names_the_cause() {
    const NAME: &str = "a_pool_that_cannot_start_leaks_nothing_and_names_the_cause";
    if !multiproc_testkit::alone_in_child_process(NAME, &[]) {
        return;
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
    let tracker = multiproc_testkit::child_pids();
    let base = multiproc_testkit::open_fd_count();
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
        let children: Vec<String> = multiproc_testkit::child_pids()
            .into_iter()
            .filter(|pid| !tracker.contains(pid))
            .map(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_else(|_| pid.to_string())
            })
            .collect();
        fds.push(multiproc_testkit::open_fd_count());
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

// ---- Idle workers take tasks another worker has not started ----------------

/// Run counters in a named block, one `AtomicU64` per task id: what a task
/// did survives its worker being killed, so a task run twice shows.
struct Runs {
    block: SharedMemory,
}

impl Runs {
    fn new(tasks: u64) -> Self {
        Self {
            block: SharedMemory::create(None, tasks as usize * 8).unwrap(),
        }
    }

    fn name(&self) -> String {
        self.block.name().to_owned()
    }

    fn count(&self, id: u64) -> u64 {
        self.block
            .segment()
            .view::<AtomicU64>(id as usize * 8)
            .unwrap()
            .load(Ordering::SeqCst)
    }

    /// Waits until task `id` has started (counted itself).
    fn wait_started(&self, id: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.count(id) == 0 {
            assert!(Instant::now() < deadline, "task {id} never started");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

std::thread_local! {
    /// The block a worker last counted in, kept open between tasks.
    static RUNS_BLOCK: std::cell::RefCell<Option<SharedMemory>> =
        const { std::cell::RefCell::new(None) };
}

/// Counts one run of task `id` in `block`.
fn count_run(block: &str, id: u64) {
    RUNS_BLOCK.with(|open| {
        let mut open = open.borrow_mut();
        if open.as_ref().is_none_or(|shm| shm.name() != block) {
            *open = Some(SharedMemory::open(block).unwrap());
        }
        let shm = open.as_ref().unwrap();
        shm.segment()
            .view::<AtomicU64>(id as usize * 8)
            .unwrap()
            .fetch_add(1, Ordering::SeqCst);
    });
}

/// Counts its run, sleeps `ms`; the id and the worker that ran it.
fn counted((block, id, ms): (String, u64, u64)) -> (u64, u32) {
    count_run(&block, id);
    if ms > 0 {
        std::thread::sleep(Duration::from_millis(ms));
    }
    (id, std::process::id())
}

/// Counts its run, then stops its own worker with `SIGSTOP`; once the
/// worker is continued, returns its pid.
fn stop_self((block, id): (String, u64)) -> u32 {
    count_run(&block, id);
    let me = rustix::process::getpid();
    rustix::process::kill_process(me, rustix::process::Signal::STOP).unwrap();
    std::process::id()
}

fn signal(pid: u32, signal: rustix::process::Signal) {
    // The process may be gone already (killed and reaped): nothing to do.
    let _ =
        rustix::process::kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap(), signal);
}

/// Whether process `pid` is stopped (state `T` in `/proc/<pid>/stat`).
fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            Some(state == 'T')
        })
        .unwrap_or(false)
}

/// Waits for every result in `pending` until `deadline`; the ids (from 1)
/// of those still not finished then.
fn not_done_by<R>(pending: &[multiproc_process::AsyncResult<R>], deadline: Instant) -> Vec<u64> {
    (1..)
        .zip(pending)
        .filter(|(_, p)| {
            p.wait_timeout(deadline.saturating_duration_since(Instant::now()))
                .is_err()
        })
        .map(|(id, _)| id)
        .collect()
}

#[test]
fn an_idle_worker_takes_the_tasks_queued_behind_a_long_one() {
    /// The long task; the short ones must all be done well before it is.
    const LONG: u64 = 6_000;
    /// Eight short tasks of 20 ms: 160 ms of work for one worker, given
    /// ample room on a loaded machine.
    const SHORTS_WITHIN: Duration = Duration::from_secs(3);
    within(Duration::from_secs(60), || {
        let pool = Pool::new(2).unwrap();
        let runs = Runs::new(16);
        // Both workers up.
        assert_eq!(pool.map(square, 0..8u64, Some(1)).unwrap().len(), 8);
        let long = pool.apply_async(counted, (runs.name(), 0, LONG));
        runs.wait_started(0);
        let submitted = Instant::now();
        // Handed out evenly, so about half are queued behind the long task.
        let shorts: Vec<_> = (1..=8u64)
            .map(|id| pool.apply_async(counted, (runs.name(), id, 20)))
            .collect();
        let late = not_done_by(&shorts, submitted + SHORTS_WITHIN);
        assert!(
            late.is_empty(),
            "short tasks {late:?} not done {:?} after they were submitted, while a \
             {LONG} ms task runs",
            submitted.elapsed()
        );
        assert!(!long.ready(), "the long task ended first");
        for (id, short) in (1..).zip(shorts) {
            assert_eq!(short.get().unwrap().0, id);
            assert_eq!(runs.count(id), 1, "task {id} ran {} times", runs.count(id));
        }
        assert_eq!(runs.count(0), 1);
    });
}

#[test]
fn the_tasks_of_a_stopped_worker_are_run_by_the_other_one() {
    const SHORTS_WITHIN: Duration = Duration::from_secs(5);
    const WAIT: Duration = Duration::from_secs(20);
    within(Duration::from_secs(90), || {
        let pool = Pool::new(2).unwrap();
        // Continued, the stopped worker finishes its task; killed, the task
        // fails and nothing else does.
        for (round, resume) in [rustix::process::Signal::CONT, rustix::process::Signal::KILL]
            .into_iter()
            .enumerate()
        {
            let runs = Runs::new(16);
            assert_eq!(pool.map(square, 0..8u64, Some(1)).unwrap().len(), 8);
            let stopper = pool.apply_async(stop_self, (runs.name(), 0));
            runs.wait_started(0);
            let deadline = Instant::now() + WAIT;
            let stopped = loop {
                if let Some(pid) = pool.worker_pids().into_iter().find(|&p| is_stopped(p)) {
                    break pid;
                }
                assert!(
                    Instant::now() < deadline,
                    "round {round}: no worker stopped"
                );
                std::thread::sleep(Duration::from_millis(1));
            };
            let submitted = Instant::now();
            let shorts: Vec<_> = (1..=8u64)
                .map(|id| pool.apply_async(counted, (runs.name(), id, 10)))
                .collect();
            let late = not_done_by(&shorts, submitted + SHORTS_WITHIN);
            assert!(
                late.is_empty(),
                "round {round}: short tasks {late:?} not done {:?} after they were \
                 submitted, while worker {stopped} is stopped",
                submitted.elapsed()
            );
            for (id, short) in (1..).zip(shorts) {
                let (got, pid) = short.get().unwrap();
                assert_eq!(got, id);
                assert_ne!(
                    pid, stopped,
                    "round {round}: task {id} ran in the stopped worker"
                );
                assert_eq!(
                    runs.count(id),
                    1,
                    "round {round}: task {id} ran {} times",
                    runs.count(id)
                );
            }
            assert!(!stopper.ready());
            signal(stopped, resume);
            let outcome = stopper.get_timeout(WAIT);
            if resume == rustix::process::Signal::CONT {
                assert_eq!(outcome, Ok(stopped));
            } else {
                assert_eq!(
                    outcome,
                    Err(GetTimeoutError::Failed(TaskError::WorkerDied {
                        exitcode: -9,
                        signal: Some("SIGKILL")
                    }))
                );
            }
            assert_eq!(runs.count(0), 1);
        }
        // The pool goes on, with two workers again.
        assert_eq!(
            pool.map(square, 0..100u64, Some(1)).unwrap(),
            (0..100u64).map(|x| x * x).collect::<Vec<_>>()
        );
        assert_eq!(pool.worker_pids().len(), 2);
    });
}

/// A small xorshift generator: reproducible from the seed a failure prints.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn tasks_taken_back_while_workers_are_stopped_and_killed_run_at_most_once() {
    use rustix::process::Signal;
    /// Tasks; every 25th sleeps, which leaves the other worker idle with
    /// tasks queued behind the sleeping one.
    const TASKS: u64 = 3000;
    within(Duration::from_secs(120), || {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        let pool = Pool::new(2).unwrap();
        let runs = Runs::new(TASKS);
        let name = runs.name();
        let done = std::sync::atomic::AtomicBool::new(false);
        let (results, kills) = std::thread::scope(|s| {
            let killer = s.spawn(|| {
                let mut rng = Rng(seed);
                let mut kills = 0u64;
                loop {
                    std::thread::sleep(Duration::from_millis(5 + rng.below(40)));
                    // Nothing after the last result: the final `map` below
                    // must see no task lost.
                    if done.load(Ordering::SeqCst) {
                        break;
                    }
                    let pids = pool.worker_pids();
                    if pids.is_empty() {
                        continue;
                    }
                    let victim = pids[rng.below(pids.len() as u64) as usize];
                    match rng.below(3) {
                        // Killed at a random instant.
                        0 => {
                            signal(victim, Signal::KILL);
                            kills += 1;
                        }
                        // Stopped (perhaps holding its queue's lock) while
                        // the pool takes its tasks back, then killed or
                        // continued.
                        how => {
                            signal(victim, Signal::STOP);
                            std::thread::sleep(Duration::from_millis(1 + rng.below(30)));
                            if how == 1 {
                                signal(victim, Signal::KILL);
                                kills += 1;
                            } else {
                                signal(victim, Signal::CONT);
                            }
                        }
                    }
                }
                kills
            });
            let results: Vec<_> = pool
                .imap(
                    counted,
                    (0..TASKS).map(|id| (name.clone(), id, if id % 25 == 0 { 20 } else { 0 })),
                    Some(1),
                )
                .collect();
            done.store(true, Ordering::SeqCst);
            (results, killer.join().unwrap())
        });
        assert_eq!(results.len() as u64, TASKS, "seed {seed}");
        let mut died = 0;
        for (id, result) in (0..).zip(&results) {
            let runs = runs.count(id);
            match result {
                Ok((got, _)) => {
                    assert_eq!(*got, id, "seed {seed}: out of order");
                    assert_eq!(runs, 1, "seed {seed}: task {id} ran {runs} times");
                }
                Err(e) => {
                    assert!(e.is_worker_died(), "seed {seed}: task {id}: {e:?}");
                    assert!(runs <= 1, "seed {seed}: task {id} ran {runs} times");
                    died += 1;
                }
            }
        }
        assert!(
            died <= kills,
            "seed {seed}: {died} tasks lost to {kills} kills"
        );
        // The pool is whole again.
        assert_eq!(pool.map(square, 0..100u64, Some(1)).unwrap().len(), 100);
    });
}

/// Whether process `pid` has exited (a zombie, or reaped already).
fn has_exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => true,
    }
}

#[test]
fn tasks_handed_to_a_worker_killed_while_idle_are_run_by_the_others() {
    within(Duration::from_secs(60), || {
        let pool = Pool::new(2).unwrap();
        let expected: Vec<u64> = (0..32u64).map(|x| x * x).collect();
        for round in 0..5 {
            let deadline = Instant::now() + Duration::from_secs(10);
            while pool.worker_pids().len() < 2 {
                assert!(
                    Instant::now() < deadline,
                    "round {round}: pool not restored"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(pool.map(square, 0..8u64, Some(1)).unwrap().len(), 8);
            // Killed between tasks: it runs nothing from here on.
            let victim = pool.worker_pids()[0];
            signal(victim, rustix::process::Signal::KILL);
            while !has_exited(victim) {
                std::thread::sleep(Duration::from_micros(100));
            }
            // Handed out at once, before the pool looks at its workers
            // again: some go to the dead worker's queue.
            assert_eq!(
                pool.map(square, 0..32u64, Some(1)),
                Ok(expected.clone()),
                "round {round}"
            );
        }
    });
}

#[test]
fn zero_processes_or_zero_tasks_per_child_are_refused_as_in_python() {
    for (what, built) in [
        ("processes", Pool::builder().processes(0).build()),
        (
            "maxtasksperchild",
            Pool::builder().processes(1).maxtasksperchild(0).build(),
        ),
    ] {
        let err = built
            .err()
            .unwrap_or_else(|| panic!("{what} = 0 made a pool"));
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::InvalidInput,
            "{what}: {err}"
        );
    }
}

/// Fails to serialize.
#[derive(serde::Deserialize)]
struct Unencodable;

impl serde::Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this value cannot be encoded"))
    }
}

fn takes_unencodable(_: Unencodable) -> u64 {
    0
}

#[test]
fn a_task_that_cannot_be_sent_fails_with_its_cause_kept() {
    let pool = Pool::new(1).unwrap();
    let err = pool
        .map(takes_unencodable, [Unencodable], None)
        .expect_err("the argument cannot be encoded");
    let TaskError::Transport(transport) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(transport.what(), "encoding the task");
    assert_eq!(err.to_string(), "task transport failed: encoding the task");
    // The codec's error is the source, and its own cause is the value's.
    let mut chain = Vec::new();
    let mut next = std::error::Error::source(&err);
    while let Some(e) = next {
        chain.push(e.to_string());
        next = e.source();
    }
    assert!(
        chain.iter().any(|e| e.contains("cannot be encoded")),
        "{chain:?}"
    );
    // The pool goes on.
    assert_eq!(pool.apply(square, 5).unwrap(), 25);
}
