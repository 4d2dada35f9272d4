//! Async locks, semaphores and events between real processes, on tokio and
//! on smol: the test binary re-executes itself as the child (see
//! `multiproc-testkit`). Every scenario runs on both runtimes and fails
//! instead of hanging (every wait is bounded).

use multiproc_async::{AcquireError, AsyncEvent, AsyncLock, AsyncSemaphore};
use multiproc_core::Segment;
use multiproc_sync::{BoundedSemaphore, Event, Lock, Semaphore, SemaphoreGuard};
use multiproc_testkit::{Role, inherited_fds, role, run, spawn, wait_timeout};
use std::io::BufRead;
use std::os::fd::{AsFd, BorrowedFd};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::*;

/// Longest a wake-up may take before the scenario counts as hung: far
/// above any scheduling delay, far below the harness's patience.
const HUNG: Duration = Duration::from_secs(20);
const CHILD_LIMIT: Duration = Duration::from_secs(60);

// ---- children ---------------------------------------------------------------

/// The segment the parent passed, holding one object at offset 0.
fn segment() -> Arc<Segment> {
    Arc::new(Segment::from_fd(inherited_fds().remove(0)).unwrap())
}

fn arg(args: &[String], i: usize) -> u64 {
    args[i].parse().unwrap()
}

/// Sets the event after `ms` milliseconds, blocking.
fn child_set_event(args: &[String]) {
    let event = Event::attach(segment(), 0).unwrap();
    std::thread::sleep(Duration::from_millis(arg(args, 0)));
    event.set();
}

/// Takes the lock, says so on standard output, holds it `ms` milliseconds,
/// releases it, and lives on for a second (so that the release, not a
/// death, is what lets the waiter in).
fn child_hold_lock(args: &[String]) {
    let lock = Lock::attach(segment(), 0).unwrap();
    let guard = lock.acquire().unwrap();
    println!("holding");
    std::thread::sleep(Duration::from_millis(arg(args, 0)));
    drop(guard);
    std::thread::sleep(Duration::from_secs(1));
}

/// Takes the lock, says so, and waits to be killed.
fn child_hold_lock_forever(_: &[String]) {
    let lock = Lock::attach(segment(), 0).unwrap();
    let _guard = lock.acquire().unwrap();
    println!("holding");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Releases `count` units of the semaphore, `ms` milliseconds apart.
fn child_release(args: &[String]) {
    let sem = Semaphore::attach(segment(), 0).unwrap();
    for _ in 0..arg(args, 0) {
        std::thread::sleep(Duration::from_millis(arg(args, 1)));
        sem.release().unwrap();
    }
}

/// Gives back, `ms` milliseconds apart, `count` units of the bounded
/// semaphore, taken here first.
fn child_take_and_give_back(args: &[String]) {
    let sem = BoundedSemaphore::attach(segment(), 0).unwrap();
    let units: Vec<SemaphoreGuard<'_>> = (0..arg(args, 0))
        .map(|_| sem.try_acquire().unwrap())
        .collect();
    println!("taken");
    for unit in units {
        std::thread::sleep(Duration::from_millis(arg(args, 1)));
        drop(unit);
    }
}

fn start(role: Role, segment: BorrowedFd<'_>, args: &[&str]) -> Child {
    spawn(role, args, &[segment]).unwrap()
}

/// Starts `role` with its standard output piped, and waits for its first
/// line, `expected`.
fn start_and_hear(role: Role, segment: BorrowedFd<'_>, args: &[&str], expected: &str) -> Child {
    let mut child = multiproc_testkit::command(role, args, &[segment])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), expected);
    child
}

fn finish(mut child: Child) {
    let status = wait_timeout(&mut child, CHILD_LIMIT);
    assert!(status.success(), "child failed: {status:?}");
}

// ---- scenarios ----------------------------------------------------------------

/// Another process sets the event while three tasks await it: all three
/// wake, none before the set.
fn an_event_set_elsewhere_wakes_awaiting_tasks<R: Runtime>() {
    let event = Event::new().unwrap();
    let woken = R::block_on(async {
        let waiting = Arc::new(AsyncEvent::<R>::new(event.clone()).unwrap());
        let child = start(role!(child_set_event), event.segment().as_fd(), &["100"]);
        let task = || {
            let waiting = Arc::clone(&waiting);
            async move {
                waiting.wait().await.unwrap();
                assert!(waiting.event().is_set(), "woken before the set");
            }
        };
        let woken = within::<R, _>(HUNG, join_all(vec![task(), task(), task()])).await;
        finish(child);
        woken
    });
    assert!(
        woken.is_some(),
        "a set in another process woke nobody on {}",
        R::NAME
    );
}

/// Two hundred tasks await one event through one doorbell; another process
/// sets it: every task wakes.
fn many_tasks_await_one_event<R: Runtime>() {
    const TASKS: usize = 200;
    let event = Event::new().unwrap();
    let woken = R::block_on(async {
        let waiting = Arc::new(AsyncEvent::<R>::new(event.clone()).unwrap());
        let tasks = (0..TASKS)
            .map(|_| {
                let waiting = Arc::clone(&waiting);
                async move { waiting.wait().await.is_ok() }
            })
            .collect();
        let child = start(role!(child_set_event), event.segment().as_fd(), &["200"]);
        let woken = within::<R, _>(HUNG, join_all(tasks)).await;
        finish(child);
        woken
    })
    .unwrap_or_else(|| panic!("waiters of a set event hung on {}", R::NAME));
    assert_eq!(woken.iter().filter(|ok| **ok).count(), TASKS);
}

/// Another process holds the lock and releases it (and lives on): the
/// awaiting task gets a clean guard, after the release.
fn a_lock_released_elsewhere_is_acquired<R: Runtime>() {
    let lock = Lock::new().unwrap();
    let child = start_and_hear(
        role!(child_hold_lock),
        lock.segment().as_fd(),
        &["150"],
        "holding",
    );
    let start = Instant::now();
    let acquired = R::block_on(async {
        let waiting = AsyncLock::<R>::new(lock.clone()).unwrap();
        within::<R, _>(HUNG, async {
            let guard = waiting.acquire().await.expect("a clean acquire");
            assert!(waiting.lock().is_owned());
            drop(guard);
        })
        .await
    });
    assert!(
        acquired.is_some(),
        "the acquire hung after the release on {}",
        R::NAME
    );
    assert!(
        start.elapsed() >= Duration::from_millis(100),
        "acquired while the other process held the lock"
    );
    finish(child);
    assert!(!lock.is_locked());
}

/// Another process dies (SIGKILL) holding the lock while a task awaits it:
/// the task gets the lock with `OwnerDied`, as the blocking `acquire`
/// would report it, and the lock is healthy afterwards.
fn a_lock_whose_holder_is_killed_is_taken_over<R: Runtime>() {
    let lock = Lock::new().unwrap();
    let mut child = start_and_hear(
        role!(child_hold_lock_forever),
        lock.segment().as_fd(),
        &[],
        "holding",
    );
    let pid = child.id();
    let killer = kill_after(pid, Duration::from_millis(100));
    let outcome = R::block_on(async {
        let waiting = AsyncLock::<R>::new(lock.clone()).unwrap();
        within::<R, _>(HUNG, async {
            match waiting.acquire().await {
                Ok(_) => "clean",
                Err(AcquireError::OwnerDied(died)) => {
                    assert!(waiting.lock().is_owned());
                    drop(died.into_inner());
                    "owner died"
                }
                Err(AcquireError::Failed(e)) => panic!("the wait failed: {e}"),
            }
        })
        .await
    });
    killer.join().unwrap();
    let _ = child.wait();
    assert_eq!(
        outcome,
        Some("owner died"),
        "hung on, or missed, a dead owner"
    );
    let again = lock.try_acquire();
    assert!(again.is_ok(), "not healthy after the takeover");
}

/// Another process releases three units while three tasks await them: each
/// task gets one.
fn a_semaphore_released_elsewhere_is_acquired<R: Runtime>() {
    let sem = Semaphore::new(0).unwrap();
    let child = start(role!(child_release), sem.segment().as_fd(), &["3", "50"]);
    let got = R::block_on(async {
        let units = Arc::new(AsyncSemaphore::<R>::new(sem.clone()).unwrap());
        let task = || {
            let units = Arc::clone(&units);
            async move { SemaphoreGuard::forget(units.acquire().await.unwrap()) }
        };
        within::<R, _>(HUNG, join_all(vec![task(), task(), task()])).await
    });
    finish(child);
    assert!(
        got.is_some(),
        "releases in another process woke nobody on {}",
        R::NAME
    );
    assert_eq!(sem.get_value(), 0, "a unit was taken twice or left");
}

/// The bounded form: another process holds both units and gives them back.
fn a_bounded_semaphore_given_back_elsewhere_is_acquired<R: Runtime>() {
    let sem = BoundedSemaphore::new(2).unwrap();
    let child = start_and_hear(
        role!(child_take_and_give_back),
        sem.segment().as_fd(),
        &["2", "50"],
        "taken",
    );
    let got = R::block_on(async {
        let units = AsyncSemaphore::<R, BoundedSemaphore>::new(sem.clone()).unwrap();
        within::<R, _>(HUNG, async {
            let a = units.acquire().await.unwrap();
            let b = units.acquire().await.unwrap();
            assert_eq!(units.semaphore().get_value(), 0);
            drop((a, b));
        })
        .await
    });
    finish(child);
    assert!(
        got.is_some(),
        "give-backs in another process woke nobody on {}",
        R::NAME
    );
    assert_eq!(sem.get_value(), 2);
}

fn main() {
    run(
        &[
            role!(child_set_event),
            role!(child_hold_lock),
            role!(child_hold_lock_forever),
            role!(child_release),
            role!(child_take_and_give_back),
        ],
        on_both_runtimes![
            an_event_set_elsewhere_wakes_awaiting_tasks,
            many_tasks_await_one_event,
            a_lock_released_elsewhere_is_acquired,
            a_lock_whose_holder_is_killed_is_taken_over,
            a_semaphore_released_elsewhere_is_acquired,
            a_bounded_semaphore_given_back_elsewhere_is_acquired,
        ],
    );
}
