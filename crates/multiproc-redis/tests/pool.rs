//! The remote pool against a real `redis-server` (one per test, on a free
//! loopback port, killed at the end) with worker processes standing in for
//! machines: this test binary re-executed in the worker role, which calls
//! `RemotePoolBuilder::serve` as a user's `main` would.

use multiproc_redis::{RemotePool, RemotePoolBuilder, RemoteTaskError};
use multiproc_testkit::{
    RedisServer, Role, eventually, role, run, tests, unique_name, wait_timeout,
};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// How long a task may go without a heartbeat before another worker
/// takes it over.
const MIN_IDLE: Duration = Duration::from_millis(300);
const LIMIT: Duration = Duration::from_secs(30);
// Tasks that a test kills or stops mid-run last 3 s: the test's signal
// must land while they run, also on a loaded machine.

/// The settings every process of a test uses.
fn builder(url: &str, prefix: &str, max_deliveries: u32) -> RemotePoolBuilder {
    RemotePool::builder(url, "pool")
        .prefix(prefix)
        .min_idle(MIN_IDLE)
        .max_deliveries(max_deliveries)
        .block(Duration::from_millis(100))
        .connect_timeout(Duration::from_secs(5))
        .io_timeout(Duration::from_secs(5))
        .retry_for(Duration::from_secs(10))
}

/// Exit code of a worker that refused another build's task.
const REFUSED: i32 = 3;

// ---- the tasks ----

fn square(x: u64) -> u64 {
    x * x
}

fn fails_on_13(x: u64) -> u64 {
    assert_ne!(x, 13, "thirteen");
    x
}

/// `x * x` after a millisecond: short enough that workers take batches,
/// long enough that a run lasts seconds.
fn slow_square(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(1));
    x * x
}

/// Appends this process's pid to `file`, sleeps `ms`, returns `value`.
fn hold((file, ms, value): (String, u64, u64)) -> u64 {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&file)
        .unwrap();
    // One write per line: `writeln!` writes the number and the newline
    // apart, and two workers that start the same task at once (a slow
    // heartbeat on a loaded machine lets a second take it) would mix theirs.
    f.write_all(format!("{}\n", std::process::id()).as_bytes())
        .unwrap();
    drop(f);
    std::thread::sleep(Duration::from_millis(ms));
    value
}

/// Kills the worker that runs it.
fn dies(_: u64) -> u64 {
    std::process::abort()
}

// ---- roles ----

/// Serves the pool: url, prefix, max deliveries[, prefetch].
fn role_pool_worker(args: &[String]) {
    let max: u32 = args[2].parse().unwrap();
    let mut pool = builder(&args[0], &args[1], max);
    if let Some(prefetch) = args.get(3) {
        pool = pool.prefetch(prefetch.parse().unwrap());
    }
    match pool.serve() {
        Ok(()) => {}
        Err(multiproc_redis::ServeError::OtherBuild { caller, worker }) => {
            assert_ne!(caller, worker);
            println!("refused {caller} {worker}");
            std::process::exit(REFUSED);
        }
        Err(e) => panic!("serve failed: {e}"),
    }
}

/// Worker processes, killed on drop (also when a test fails, since a
/// worker waits for its server for ever).
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `n` workers with the default settings.
fn workers(url: &str, prefix: &str, n: usize, max_deliveries: u32) -> Workers {
    Workers(
        (0..n)
            .map(|_| worker(url, prefix, max_deliveries, None))
            .collect(),
    )
}

fn worker(url: &str, prefix: &str, max_deliveries: u32, prefetch: Option<usize>) -> Child {
    let max = max_deliveries.to_string();
    let prefetch = prefetch.map(|p| p.to_string());
    let mut args = vec![url, prefix, &max];
    args.extend(prefetch.as_deref());
    multiproc_testkit::command(role!(role_pool_worker), &args, &[])
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits for every worker to exit, returning their exit codes.
fn reap(children: &mut Workers) -> Vec<Option<i32>> {
    children
        .0
        .iter_mut()
        .map(|c| wait_timeout(c, LIMIT).code())
        .collect()
}

/// The pids `hold` wrote to `file` so far.
fn pids_in(file: &str) -> Vec<u32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

fn temp_file(tag: &str) -> String {
    std::env::temp_dir()
        .join(unique_name(tag))
        .to_string_lossy()
        .into_owned()
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid.try_into().unwrap()).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
}

/// Polls `fut` on this thread, parking between polls until woken; fails
/// rather than hangs when nobody wakes it within LIMIT.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    let deadline = Instant::now() + LIMIT;
    loop {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the future was never woken");
        std::thread::park_timeout(left);
    }
}

/// A test's server, key prefix, worker processes, pool and scratch file.
struct Scene {
    server: RedisServer,
    url: String,
    prefix: String,
    workers: Workers,
    pool: RemotePool,
    file: String,
}

impl Scene {
    /// `n` default workers and a pool, all with `max_deliveries`; `None`
    /// when the test is skipped (no redis-server, not CI).
    fn start(test: &str, n: usize, max_deliveries: u32) -> Option<Self> {
        let server = RedisServer::start_or_skip(test)?;
        let (url, prefix) = (server.url(), format!("{}:", unique_name("rp")));
        let workers = workers(&url, &prefix, n, max_deliveries);
        let pool = builder(&url, &prefix, max_deliveries).build().unwrap();
        Some(Self {
            server,
            url,
            prefix,
            workers,
            pool,
            file: temp_file("hold"),
        })
    }

    /// Closes the pool; the workers' exit codes once they returned. The
    /// keys and the file go.
    fn close(mut self) -> Vec<Option<i32>> {
        self.pool.close().unwrap();
        let codes = reap(&mut self.workers);
        self.pool.destroy().unwrap();
        let _ = std::fs::remove_file(&self.file);
        codes
    }
}

// ---- tests ----

fn map_apply_and_imap_unordered_run_in_worker_processes() {
    // One worker batches (the default), the other takes one task at a time.
    let Some(mut s) = Scene::start("map_apply_and_imap_unordered_run_in_worker_processes", 1, 5)
    else {
        return;
    };
    s.workers.0.push(worker(&s.url, &s.prefix, 5, Some(1)));
    let pool = &s.pool;
    let expected: Vec<u64> = (1..=200).map(square).collect();
    assert_eq!(pool.map(square, 1..=200, None).unwrap(), expected);
    assert_eq!(pool.map(square, 1..=200, Some(16)).unwrap(), expected);
    assert_eq!(
        pool.map(square, Vec::new(), None).unwrap(),
        Vec::<u64>::new()
    );
    assert_eq!(pool.apply(square, 12).unwrap(), 144);
    let pending = pool.apply_async(square, 5);
    assert_eq!(pending.get_timeout(LIMIT).unwrap(), 25);
    assert!(matches!(
        pending.get_timeout(LIMIT),
        Err(multiproc_redis::TaskTimeoutError::Failed(
            RemoteTaskError::Taken
        ))
    ));
    // Awaited: the result thread wakes the task.
    assert_eq!(block_on(pool.apply_async(square, 11)).unwrap(), 121);
    let mut unordered: Vec<u64> = pool
        .imap_unordered(square, 1..=50, Some(7))
        .collect::<Result<_, _>>()
        .unwrap();
    unordered.sort_unstable();
    assert_eq!(unordered, expected[..50]);
    // A panic fails its item, in input order, and only it.
    match pool.map(fails_on_13, 1..=20, Some(3)) {
        Err(RemoteTaskError::Panicked(m)) => assert!(m.contains("thirteen"), "{m}"),
        other => panic!("{other:?}"),
    }
    let outcomes: Vec<_> = pool.imap_unordered(fails_on_13, 10..=15, None).collect();
    assert_eq!(outcomes.iter().filter(|o| o.is_err()).count(), 1);
    assert_eq!(pool.duplicate_replies(), 0);
    // Closing stops the workers once the queue is drained.
    pool.close().unwrap();
    assert!(matches!(
        pool.apply(square, 1),
        Err(RemoteTaskError::Closed)
    ));
    assert_eq!(s.close(), vec![Some(0), Some(0)]);
}

fn a_killed_workers_task_runs_elsewhere_and_one_result_comes_back() {
    let Some(s) = Scene::start(
        "a_killed_workers_task_runs_elsewhere_and_one_result_comes_back",
        2,
        5,
    ) else {
        return;
    };
    let result = s.pool.apply_async(hold, (s.file.clone(), 3000, 42));
    assert!(eventually(LIMIT, || pids_in(&s.file).len() == 1));
    let first = pids_in(&s.file)[0];
    signal(first, rustix::process::Signal::KILL);
    // Another worker takes it over after MIN_IDLE and runs it.
    assert_eq!(result.get_timeout(LIMIT).unwrap(), 42);
    let ran = pids_in(&s.file);
    assert_eq!(ran.len(), 2, "{ran:?}");
    assert_ne!(ran[0], ran[1]);
    assert_eq!(s.pool.duplicate_replies(), 0);
    // The pool goes on with the worker left.
    assert_eq!(s.pool.apply(square, 9).unwrap(), 81);
    let codes = s.close();
    assert_eq!(
        codes.iter().filter(|c| **c == Some(0)).count(),
        1,
        "{codes:?}"
    );
}

fn a_long_task_gives_back_the_tasks_taken_with_it() {
    let Some(mut s) = Scene::start("a_long_task_gives_back_the_tasks_taken_with_it", 1, 5) else {
        return;
    };
    // Short tasks grow the worker's batches to 64.
    assert_eq!(s.pool.map(square, 0..1000, None).unwrap().len(), 1000);
    // One submission: the warm worker takes all six and starts the long
    // one; then a second worker comes.
    let start = Instant::now();
    let file = s.file.clone();
    let tasks =
        std::iter::once((file.clone(), 1500, 999)).chain((0..5).map(move |i| (file.clone(), 0, i)));
    let mut results = s.pool.imap_unordered(hold, tasks, None);
    assert!(eventually(LIMIT, || !pids_in(&s.file).is_empty()));
    let warm = pids_in(&s.file)[0];
    s.workers.0.push(worker(&s.url, &s.prefix, 5, None));
    let short: Vec<u64> = results.by_ref().take(5).map(Result::unwrap).collect();
    let short_done = start.elapsed();
    assert_eq!(results.next().unwrap().unwrap(), 999);
    let all_done = start.elapsed();
    let mut sorted = short.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![0, 1, 2, 3, 4], "the short ones came first");
    assert!(
        short_done + Duration::from_millis(500) < all_done,
        "the short tasks waited for the long one: {short_done:?} of {all_done:?}"
    );
    let ran = pids_in(&s.file);
    assert_eq!(ran.len(), 6, "each ran once: {ran:?}");
    assert_eq!(ran.iter().filter(|&&p| p == warm).count(), 1, "{ran:?}");
    assert_eq!(s.pool.duplicate_replies(), 0);
    assert_eq!(s.close(), vec![Some(0), Some(0)]);
}

fn a_stopped_workers_task_runs_elsewhere_and_its_late_reply_is_dropped() {
    let Some(s) = Scene::start(
        "a_stopped_workers_task_runs_elsewhere_and_its_late_reply_is_dropped",
        2,
        5,
    ) else {
        return;
    };
    let result = s.pool.apply_async(hold, (s.file.clone(), 3000, 7));
    assert!(eventually(LIMIT, || pids_in(&s.file).len() == 1));
    let stopped = pids_in(&s.file)[0];
    signal(stopped, rustix::process::Signal::STOP);
    // Its heartbeat stops with it: the other worker runs the task.
    assert_eq!(result.get_timeout(LIMIT).unwrap(), 7);
    let ran = pids_in(&s.file);
    assert_eq!(ran.len(), 2, "{ran:?}");
    assert_ne!(ran[1], stopped);
    // Resumed, the first worker finishes too: its reply is dropped.
    signal(stopped, rustix::process::Signal::CONT);
    assert!(
        eventually(LIMIT, || s.pool.duplicate_replies() == 1),
        "duplicates: {}",
        s.pool.duplicate_replies()
    );
    assert_eq!(s.pool.map(square, 1..=20, None).unwrap().len(), 20);
    assert_eq!(s.close(), vec![Some(0), Some(0)]);
}

fn a_long_task_keeps_its_worker_by_heartbeat() {
    let Some(s) = Scene::start("a_long_task_keeps_its_worker_by_heartbeat", 2, 5) else {
        return;
    };
    // Ten times MIN_IDLE: without the heartbeat the other worker would
    // take it over and run it again.
    let result = s.pool.apply_async(hold, (s.file.clone(), 3000, 5));
    assert_eq!(result.get_timeout(LIMIT).unwrap(), 5);
    assert_eq!(pids_in(&s.file).len(), 1, "ran once");
    assert_eq!(s.pool.duplicate_replies(), 0);
    assert_eq!(s.close(), vec![Some(0), Some(0)]);
}

fn a_task_that_kills_its_workers_fails_as_poisoned() {
    // Two deliveries kill two workers; the third finds it over the limit.
    let Some(s) = Scene::start("a_task_that_kills_its_workers_fails_as_poisoned", 3, 2) else {
        return;
    };
    // Another program's entries in the dead-letter stream are passed over.
    let mut con = redis::Client::open(s.url.as_str())
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    let dead = format!("{}{{pool}}:dead", s.prefix);
    redis::cmd("XADD")
        .arg(&dead)
        .arg("*")
        .arg("foreign")
        .arg("entry")
        .query::<String>(&mut con)
        .unwrap();
    redis::cmd("XADD")
        .arg(&dead)
        .arg("*")
        .arg("id")
        .arg("1-1")
        .arg("deliveries")
        .arg("9")
        .arg("reason")
        .arg("deliveries")
        .arg("d")
        .arg("not a task")
        .query::<String>(&mut con)
        .unwrap();
    let start = Instant::now();
    match s.pool.apply_async(dies, 0).get_timeout(LIMIT) {
        Err(multiproc_redis::TaskTimeoutError::Failed(RemoteTaskError::Poisoned {
            deliveries,
        })) => assert_eq!(deliveries, 2),
        other => panic!("{other:?} after {:?}", start.elapsed()),
    }
    // The worker left still serves.
    assert_eq!(s.pool.apply(square, 3).unwrap(), 9);
    let codes = s.close();
    assert_eq!(
        codes.iter().filter(|c| **c == Some(0)).count(),
        1,
        "{codes:?}"
    );
}

fn a_worker_of_another_build_refuses_the_task_with_a_typed_error() {
    let Some(mut s) = Scene::start(
        "a_worker_of_another_build_refuses_the_task_with_a_typed_error",
        0,
        5,
    ) else {
        return;
    };
    // Another build: this test binary with one byte more (the same code,
    // other bytes, as any rebuild would be).
    let other = std::env::temp_dir().join(unique_name("other_build"));
    std::fs::copy(std::env::current_exe().unwrap(), &other).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&other)
        .unwrap()
        .write_all(b"\0")
        .unwrap();
    let mut refuser = Workers(vec![
        multiproc_testkit::command_from(&other, role!(role_pool_worker), &[&s.url, &s.prefix, "5"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    ]);
    match s.pool.apply_async(square, 4).get_timeout(LIMIT) {
        Err(multiproc_redis::TaskTimeoutError::Failed(RemoteTaskError::OtherBuild {
            caller,
            worker,
        })) => {
            assert_eq!(caller, multiproc_redis::BuildId::current().unwrap());
            assert_ne!(caller, worker);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(wait_timeout(&mut refuser.0[0], LIMIT).code(), Some(REFUSED));
    let line = BufReader::new(refuser.0[0].stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    assert!(line.starts_with("refused "), "{line}");
    // A worker of this build serves the next task.
    s.workers.0.push(worker(&s.url, &s.prefix, 5, None));
    assert_eq!(s.pool.apply(square, 4).unwrap(), 16);
    assert_eq!(s.close(), vec![Some(0)]);
    let _ = std::fs::remove_file(&other);
}

fn a_server_restart_gives_typed_errors_then_the_pool_resumes() {
    let Some(mut s) = Scene::start(
        "a_server_restart_gives_typed_errors_then_the_pool_resumes",
        1,
        5,
    ) else {
        return;
    };
    // A caller that gives up on the server soon.
    let pool = builder(&s.url, &s.prefix, 5)
        .connect_timeout(Duration::from_millis(500))
        .io_timeout(Duration::from_secs(2))
        .retry_for(Duration::from_secs(1))
        .build()
        .unwrap();
    assert_eq!(pool.apply(square, 2).unwrap(), 4);
    let file = s.file.clone();
    let in_flight = pool.apply_async(hold, (file.clone(), 3000, 1));
    assert!(eventually(LIMIT, || pids_in(&file).len() == 1));
    s.server.kill();
    // A submission fails typed, within retry_for and the timeouts.
    let start = Instant::now();
    let err = pool.apply(square, 3).unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // The task in flight fails typed too: out of reach, or lost once the
    // server is back without it.
    let err = in_flight.get_timeout(LIMIT).unwrap_err();
    assert!(
        matches!(
            &err,
            multiproc_redis::TaskTimeoutError::Failed(e)
                if e.is_unavailable() || matches!(e, RemoteTaskError::Lost)
        ),
        "{err:?}"
    );
    // Back (empty): the same pool and worker go on.
    s.server.restart();
    let back = Instant::now();
    let mut value = None;
    while back.elapsed() < LIMIT {
        match pool.apply_async(square, 6).get_timeout(LIMIT) {
            Ok(v) => {
                value = Some(v);
                break;
            }
            Err(e) => {
                assert!(
                    matches!(&e, multiproc_redis::TaskTimeoutError::Failed(f) if f.is_unavailable()),
                    "{e:?}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    assert_eq!(value, Some(36));
    // A task lost with the server's data fails as lost, not hangs (a
    // caller that waits for the server longer than it is away).
    let patient = builder(&s.url, &s.prefix, 5).build().unwrap();
    let lost = patient.apply_async(hold, (file.clone(), 4000, 1));
    assert!(eventually(LIMIT, || pids_in(&file).len() == 2));
    s.server.kill();
    s.server.restart();
    let err = lost.get_timeout(LIMIT).unwrap_err();
    assert!(
        matches!(
            &err,
            multiproc_redis::TaskTimeoutError::Failed(RemoteTaskError::Lost)
        ),
        "{err:?}"
    );
    assert!(eventually(LIMIT, || pool
        .apply(square, 7)
        .is_ok_and(|v| v == 49)));
    assert_eq!(patient.apply(square, 8).unwrap(), 64);
    assert_eq!(s.close(), vec![Some(0)]);
}

fn workers_killed_at_any_instant_lose_no_task_and_give_each_result_once() {
    // Deliveries are not counted against the task here: every worker may
    // die holding it.
    let Some(mut s) = Scene::start(
        "workers_killed_at_any_instant_lose_no_task_and_give_each_result_once",
        3,
        1000,
    ) else {
        return;
    };
    const TASKS: u64 = 3000;
    let expected: Vec<u64> = (0..TASKS).map(|x| x * x).collect();
    let start = Instant::now();
    let mut kills = 0u32;
    let got = std::thread::scope(|scope| {
        let pool = &s.pool;
        let mapping = scope.spawn(move || pool.map(slow_square, 0..TASKS, Some(1)));
        // SIGKILL a worker every 60–180 ms, at whatever step it is in
        // (taking a batch, running, replying, acknowledging, giving back),
        // and start another in its place.
        let mut rng = std::process::id() as u64;
        while !mapping.is_finished() && start.elapsed() < LIMIT {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            std::thread::sleep(Duration::from_millis(60 + (rng >> 33) % 120));
            let victim = (rng >> 40) as usize % s.workers.0.len();
            let mut dead = std::mem::replace(
                &mut s.workers.0[victim],
                worker(&s.url, &s.prefix, 1000, None),
            );
            let _ = dead.kill();
            let _ = dead.wait();
            kills += 1;
        }
        mapping.join().unwrap()
    });
    assert!(start.elapsed() < LIMIT, "the map hung");
    assert_eq!(got.unwrap(), expected, "every result, each once, in order");
    assert!(kills >= 5, "only {kills} kills");
    eprintln!(
        "    {kills} workers killed; {} late replies dropped",
        s.pool.duplicate_replies()
    );
    let codes = s.close();
    assert_eq!(codes, vec![Some(0); 3], "the workers left finish");
}

fn main() {
    let roles: &[Role] = &[role!(role_pool_worker)];
    run(
        roles,
        tests![
            map_apply_and_imap_unordered_run_in_worker_processes,
            a_killed_workers_task_runs_elsewhere_and_one_result_comes_back,
            a_long_task_gives_back_the_tasks_taken_with_it,
            a_stopped_workers_task_runs_elsewhere_and_its_late_reply_is_dropped,
            a_long_task_keeps_its_worker_by_heartbeat,
            a_task_that_kills_its_workers_fails_as_poisoned,
            a_worker_of_another_build_refuses_the_task_with_a_typed_error,
            a_server_restart_gives_typed_errors_then_the_pool_resumes,
            workers_killed_at_any_instant_lose_no_task_and_give_each_result_once,
        ],
    );
}
