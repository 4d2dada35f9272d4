//! The primitives between real processes: the test binary re-executes
//! itself as the child roles (see `multiproc-testkit`). Children receive
//! the shared segment as an inherited descriptor, or the primitives
//! themselves over a Unix socket (handle passing).

use multiproc_core::{Segment, codec, scm};
use multiproc_sync::{
    AttachError, Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore, Timeout,
};
use multiproc_testkit::{Role, eventually, inherited_fds, role, run, spawn, tests, wait_timeout};
use std::os::fd::AsFd;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CHILD_LIMIT: Duration = Duration::from_secs(30);
const INCREMENTS: u64 = 100_000;
const WORKERS: usize = 4;

// Fixed places in the test segments.
const AT_LOCK: usize = 0;
const AT_RLOCK: usize = 1152;
const AT_SEM: usize = 2304;
const AT_EVENT: usize = 3456;
const AT_COND: usize = 4608;
const AT_DATA: usize = 5120;
const AT_BARRIER: usize = 6144;
const SEGMENT_SIZE: usize = 12288;
const _: () = assert!(AT_BARRIER + Barrier::MEMORY_SIZE <= SEGMENT_SIZE);

fn segment() -> Arc<Segment> {
    Arc::new(Segment::anonymous(SEGMENT_SIZE).unwrap())
}

fn inherited_segment() -> Arc<Segment> {
    Arc::new(Segment::from_fd(inherited_fds().remove(0)).unwrap())
}

/// The `i`th u64 of the data area.
fn data(segment: &Segment, i: usize) -> &AtomicU64 {
    segment.view::<AtomicU64>(AT_DATA + 8 * i).unwrap()
}

/// CLOCK_MONOTONIC in nanoseconds: comparable between processes.
fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn spawn_with(role: Role, args: &[&str], segment: &Segment) -> Child {
    spawn(role, args, &[segment.as_fd()]).unwrap()
}

fn join_all(children: Vec<Child>) {
    for mut child in children {
        let status = wait_timeout(&mut child, CHILD_LIMIT);
        assert!(status.success(), "child failed: {status:?}");
    }
}

/// Increments `counter` with a separate load and store: only mutual
/// exclusion keeps the count exact.
fn racy_increment(counter: &AtomicU64) {
    let v = counter.load(Ordering::Relaxed);
    std::hint::spin_loop();
    counter.store(v + 1, Ordering::Relaxed);
}

// ---- child roles -------------------------------------------------------

fn child_lock_counter(args: &[String]) {
    let segment = inherited_segment();
    let lock = Lock::attach(Arc::clone(&segment), AT_LOCK).unwrap();
    let n: u64 = args[0].parse().unwrap();
    for _ in 0..n {
        let _guard = lock.lock().unwrap();
        racy_increment(data(&segment, 0));
    }
}

/// As [`child_lock_counter`], on a named segment opened by name (args[0]).
fn child_named_lock_counter(args: &[String]) {
    let segment = Arc::new(Segment::open_named(&args[0]).unwrap());
    let lock = Lock::attach(Arc::clone(&segment), AT_LOCK).unwrap();
    let n: u64 = args[1].parse().unwrap();
    for _ in 0..n {
        let _guard = lock.lock().unwrap();
        racy_increment(data(&segment, 0));
    }
}

fn child_rlock_counter(args: &[String]) {
    let segment = inherited_segment();
    let lock = RLock::attach(Arc::clone(&segment), AT_RLOCK).unwrap();
    let n: u64 = args[0].parse().unwrap();
    for i in 0..n {
        let _outer = lock.acquire().unwrap();
        let _inner = lock.acquire().unwrap();
        if i % 2 == 0 {
            let _third = lock.try_acquire().unwrap();
            assert_eq!(lock.depth(), 3);
        }
        racy_increment(data(&segment, 0));
    }
}

fn child_semaphore(args: &[String]) {
    let segment = inherited_segment();
    let sem = Semaphore::attach(Arc::clone(&segment), AT_SEM).unwrap();
    let rounds: u64 = args[0].parse().unwrap();
    let inside = data(&segment, 0);
    let most = data(&segment, 1);
    for _ in 0..rounds {
        let _unit = sem.acquire();
        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
        most.fetch_max(now, Ordering::SeqCst);
        let until = Instant::now() + Duration::from_micros(200);
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        inside.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Waits for the event, records when it woke in slot 1 + args[0].
fn child_event_wait(args: &[String]) {
    let segment = inherited_segment();
    let event = Event::attach(Arc::clone(&segment), AT_EVENT).unwrap();
    let slot: usize = args[0].parse().unwrap();
    data(&segment, 0).fetch_add(1, Ordering::SeqCst);
    event.wait_timeout(Duration::from_secs(10)).unwrap();
    data(&segment, 1 + slot).store(mono_ns(), Ordering::SeqCst);
}

/// Condition over the Lock at AT_LOCK: registers as waiting (slot 0),
/// waits once, counts itself woken (slot 1).
fn child_condition_wait(_: &[String]) {
    let segment = inherited_segment();
    let lock = Lock::attach(Arc::clone(&segment), AT_LOCK).unwrap();
    let cond = Condition::attach(lock, Arc::clone(&segment), AT_COND).unwrap();
    let guard = cond.acquire().unwrap();
    data(&segment, 0).fetch_add(1, Ordering::SeqCst);
    let guard = match cond.wait_timeout(guard, Duration::from_secs(10)) {
        Ok(guard) => guard,
        Err(err) => panic!("never notified: {err}"),
    };
    data(&segment, 1).fetch_add(1, Ordering::SeqCst);
    drop(guard);
}

/// Waits on the condition over the Lock at AT_LOCK; while it waits, a
/// process takes the lock and is killed holding it, so getting the lock
/// back must report OwnerDied. Flags slot 0 when waiting, slot 3 when done.
fn child_condition_wait_owner_died(_: &[String]) {
    let segment = inherited_segment();
    let lock = Lock::attach(Arc::clone(&segment), AT_LOCK).unwrap();
    let cond = Condition::attach(lock, Arc::clone(&segment), AT_COND).unwrap();
    let guard = cond.acquire().unwrap();
    data(&segment, 0).store(1, Ordering::SeqCst);
    let died = cond
        .wait_timeout(guard, Duration::from_secs(10))
        .expect_err("the lock's owner died while we waited");
    assert!(died.is_owner_died(), "{died}");
    let guard = died.into_inner();
    assert!(cond.get_lock().is_owned());
    data(&segment, 3).store(1, Ordering::SeqCst);
    drop(guard);
}

/// Waits until the counter in slot 2 reaches args[0]; checks the predicate
/// really held when it returned.
fn child_condition_wait_for(args: &[String]) {
    let segment = inherited_segment();
    let lock = Lock::attach(Arc::clone(&segment), AT_LOCK).unwrap();
    let cond = Condition::attach(lock, Arc::clone(&segment), AT_COND).unwrap();
    let target: u64 = args[0].parse().unwrap();
    let value = data(&segment, 2);
    let guard = cond.acquire().unwrap();
    data(&segment, 0).fetch_add(1, Ordering::SeqCst);
    let guard = cond
        .wait_for_timeout(guard, Duration::from_secs(10), || {
            value.load(Ordering::SeqCst) >= target
        })
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(value.load(Ordering::SeqCst) >= target);
    data(&segment, 1).fetch_add(1, Ordering::SeqCst);
    drop(guard);
}

fn child_barrier_rounds(args: &[String]) {
    let segment = inherited_segment();
    let barrier = Barrier::attach(Arc::clone(&segment), AT_BARRIER).unwrap();
    let rounds: u64 = args[0].parse().unwrap();
    let parties = u64::from(barrier.parties());
    let arrived = data(&segment, 0);
    let leaders = data(&segment, 1);
    for round in 0..rounds {
        arrived.fetch_add(1, Ordering::SeqCst);
        let result = barrier.wait_timeout(Duration::from_secs(10)).unwrap();
        assert!(result.index() < barrier.parties());
        if result.is_leader() {
            leaders.fetch_add(1, Ordering::SeqCst);
        }
        // Everybody arrived for this round before anybody left it.
        assert!(arrived.load(Ordering::SeqCst) >= parties * (round + 1));
    }
}

/// Waits on the barrier with no timeout; must see it broken.
fn child_barrier_broken(_: &[String]) {
    let segment = inherited_segment();
    let barrier = Barrier::attach(Arc::clone(&segment), AT_BARRIER).unwrap();
    let err = barrier.wait().unwrap_err();
    assert!(!err.is_timeout());
    data(&segment, 0).fetch_add(1, Ordering::SeqCst);
}

/// Waits on the barrier once (at most 10 s), which must trip; counts itself
/// in slot 0 and, as the leader, in slot 1.
fn child_barrier_once(_: &[String]) {
    let segment = inherited_segment();
    let barrier = Barrier::attach(Arc::clone(&segment), AT_BARRIER).unwrap();
    let result = barrier.wait_timeout(Duration::from_secs(10)).unwrap();
    if result.is_leader() {
        data(&segment, 1).fetch_add(1, Ordering::SeqCst);
    }
    data(&segment, 0).fetch_add(1, Ordering::SeqCst);
}

/// Waits on the barrier with no timeout until it is killed.
fn child_barrier_wait_until_killed(_: &[String]) {
    let segment = inherited_segment();
    let barrier = Barrier::attach(Arc::clone(&segment), AT_BARRIER).unwrap();
    let _ = barrier.wait();
    std::process::exit(3);
}

/// Waits on the barrier (at most 10 s) while another party is killed
/// inside it: must get the "party died" error. Stamps the moment its wait
/// returned into slot 2 + args[0].
fn child_barrier_expect_party_died(args: &[String]) {
    let segment = inherited_segment();
    let barrier = Barrier::attach(Arc::clone(&segment), AT_BARRIER).unwrap();
    let slot: usize = args[0].parse().unwrap();
    let result = barrier.wait_timeout(Duration::from_secs(10));
    data(&segment, 2 + slot).store(mono_ns(), Ordering::SeqCst);
    let err = result.expect_err("passed the barrier with a dead party counted as arrived");
    assert!(err.is_party_died() && !err.is_timeout(), "{err:?}");
}

/// Takes the lock (args[0] = "lock" or "rlock"), flags slot 0, and sleeps
/// until killed.
fn child_hold_forever(args: &[String]) {
    let segment = inherited_segment();
    match args[0].as_str() {
        "lock" => {
            let lock = Lock::attach(Arc::clone(&segment), AT_LOCK).unwrap();
            std::mem::forget(lock.acquire().unwrap_or_else(|e| e.into_inner()));
        }
        _ => {
            let lock = RLock::attach(Arc::clone(&segment), AT_RLOCK).unwrap();
            for _ in 0..3 {
                std::mem::forget(lock.acquire().unwrap_or_else(|e| e.into_inner()));
            }
        }
    }
    // Half-update the protected data, as a real crash would.
    data(&segment, 1).store(u64::MAX, Ordering::SeqCst);
    data(&segment, 0).store(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(60));
    std::process::exit(3);
}

/// Holds the lock for args[0] milliseconds, flagging slot 0 once it holds.
fn child_hold_for(args: &[String]) {
    let segment = inherited_segment();
    let lock = Lock::attach(Arc::clone(&segment), AT_LOCK).unwrap();
    let ms: u64 = args[0].parse().unwrap();
    let guard = lock.acquire().unwrap();
    data(&segment, 0).store(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(ms));
    drop(guard);
}

/// Tries to release locks it does not hold.
fn child_release_foreign(_: &[String]) {
    let segment = inherited_segment();
    let lock = Lock::attach(Arc::clone(&segment), AT_LOCK).unwrap();
    let rlock = RLock::attach(Arc::clone(&segment), AT_RLOCK).unwrap();
    assert!(lock.is_locked() && rlock.is_locked());
    assert!(lock.release().is_err());
    assert!(rlock.release().is_err());
    assert!(lock.is_locked() && rlock.is_locked());
}

/// Receives (Lock, Event, BoundedSemaphore) over the inherited socket.
fn child_receive_handles(_: &[String]) {
    let socket = inherited_fds().remove(0);
    let mut buf = vec![0u8; 4096];
    let got = scm::recv(&socket, &mut buf, 16).unwrap();
    let (lock, event, sem): (Lock, Event, BoundedSemaphore) =
        codec::decode_with_fds(&buf[..got.len], got.fds).unwrap();
    let guard = lock.try_acquire().unwrap();
    sem.acquire_timeout(Duration::from_secs(5))
        .map(multiproc_sync::SemaphoreGuard::forget)
        .unwrap();
    event.set();
    std::thread::sleep(Duration::from_millis(50));
    drop(guard);
}

// ---- tests -------------------------------------------------------------

fn lock_counter_is_exact_across_processes() {
    let segment = segment();
    let _lock = Lock::create_in(Arc::clone(&segment), AT_LOCK).unwrap();
    let n = INCREMENTS.to_string();
    let children = (0..WORKERS)
        .map(|_| spawn_with(role!(child_lock_counter), &[&n], &segment))
        .collect();
    join_all(children);
    assert_eq!(
        data(&segment, 0).load(Ordering::SeqCst),
        INCREMENTS * WORKERS as u64
    );
}

fn lock_in_a_named_segment_works_across_processes() {
    let segment = Arc::new(Segment::create_named(None, SEGMENT_SIZE).unwrap());
    let name = segment.name().unwrap().to_owned();
    let _lock = Lock::create_in(Arc::clone(&segment), AT_LOCK).unwrap();
    let n = (INCREMENTS / 10).to_string();
    let children: Vec<Child> = (0..2)
        .map(|_| spawn(role!(child_named_lock_counter), &[&name, &n], &[]).unwrap())
        .collect();
    let result = std::panic::catch_unwind(|| join_all(children));
    segment.unlink().unwrap();
    result.unwrap();
    assert_eq!(
        data(&segment, 0).load(Ordering::SeqCst),
        2 * INCREMENTS / 10
    );
}

fn rlock_counter_is_exact_with_recursion() {
    let segment = segment();
    let _lock = RLock::create_in(Arc::clone(&segment), AT_RLOCK).unwrap();
    let n = INCREMENTS.to_string();
    let children = (0..WORKERS)
        .map(|_| spawn_with(role!(child_rlock_counter), &[&n], &segment))
        .collect();
    join_all(children);
    assert_eq!(
        data(&segment, 0).load(Ordering::SeqCst),
        INCREMENTS * WORKERS as u64
    );
}

fn semaphore_concurrency_reaches_but_never_exceeds_n() {
    const N: u32 = 3;
    let segment = segment();
    let sem = Semaphore::create_in(Arc::clone(&segment), AT_SEM, N).unwrap();
    let children = (0..6)
        .map(|_| spawn_with(role!(child_semaphore), &["300"], &segment))
        .collect();
    join_all(children);
    assert_eq!(data(&segment, 1).load(Ordering::SeqCst), u64::from(N));
    assert_eq!(data(&segment, 0).load(Ordering::SeqCst), 0);
    assert_eq!(sem.get_value(), N);
}

fn event_wakes_waiters_in_other_processes() {
    let segment = segment();
    let event = Event::create_in(Arc::clone(&segment), AT_EVENT).unwrap();
    let children: Vec<Child> = (0..3)
        .map(|i| spawn_with(role!(child_event_wait), &[&i.to_string()], &segment))
        .collect();
    assert!(eventually(Duration::from_secs(10), || {
        data(&segment, 0).load(Ordering::SeqCst) == 3
    }));
    std::thread::sleep(Duration::from_millis(50)); // let them fall asleep
    for i in 0..3 {
        assert_eq!(
            data(&segment, 1 + i).load(Ordering::SeqCst),
            0,
            "woke early"
        );
    }
    let set_at = mono_ns();
    event.set();
    join_all(children);
    for i in 0..3 {
        let woke = data(&segment, 1 + i).load(Ordering::SeqCst);
        assert!(woke >= set_at);
        assert!(
            woke - set_at < 100_000_000,
            "waiter {i} woke {} µs after set",
            (woke - set_at) / 1000
        );
    }
}

fn condition_notify_wakes_exactly_one_then_all() {
    let segment = segment();
    let lock = Lock::create_in(Arc::clone(&segment), AT_LOCK).unwrap();
    let cond = Condition::create_in(lock, Arc::clone(&segment), AT_COND).unwrap();
    let children: Vec<Child> = (0..3)
        .map(|_| spawn_with(role!(child_condition_wait), &[], &segment))
        .collect();
    assert!(eventually(Duration::from_secs(10), || {
        data(&segment, 0).load(Ordering::SeqCst) == 3
    }));
    {
        // Holding the lock: every child that counted itself is registered.
        let _guard = cond.acquire().unwrap();
        assert_eq!(cond.notify(1), 1);
    }
    assert!(eventually(Duration::from_secs(5), || {
        data(&segment, 1).load(Ordering::SeqCst) == 1
    }));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        data(&segment, 1).load(Ordering::SeqCst),
        1,
        "notify(1) woke more than one"
    );
    {
        let _guard = cond.acquire().unwrap();
        assert_eq!(cond.notify_all(), 2);
    }
    join_all(children);
    assert_eq!(data(&segment, 1).load(Ordering::SeqCst), 3);
    let _guard = cond.acquire().unwrap();
    assert_eq!(cond.notify_all(), 0);
}

fn condition_wait_reports_an_owner_that_died_meanwhile() {
    let segment = segment();
    let lock = Lock::create_in(Arc::clone(&segment), AT_LOCK).unwrap();
    let _rlock = RLock::create_in(Arc::clone(&segment), AT_RLOCK).unwrap();
    let cond = Condition::create_in(lock.clone(), Arc::clone(&segment), AT_COND).unwrap();
    let mut waiter = spawn_with(role!(child_condition_wait_owner_died), &[], &segment);
    assert!(eventually(Duration::from_secs(10), || {
        data(&segment, 0).load(Ordering::SeqCst) == 1
    }));
    // The waiter has released the lock inside `wait` once we can take it.
    drop(lock.acquire_timeout(Duration::from_secs(10)).unwrap());
    data(&segment, 0).store(0, Ordering::SeqCst);
    let mut holder = spawn_with(role!(child_hold_forever), &["lock"], &segment);
    assert!(eventually(Duration::from_secs(10), || {
        data(&segment, 0).load(Ordering::SeqCst) == 1
    }));
    assert_eq!(cond.notify(1), 1);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        data(&segment, 3).load(Ordering::SeqCst),
        0,
        "took a held lock"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(wait_timeout(&mut waiter, CHILD_LIMIT).success());
    assert_eq!(data(&segment, 3).load(Ordering::SeqCst), 1);
    assert!(lock.try_acquire().is_ok());
}

fn condition_wait_for_waits_for_the_predicate() {
    let segment = segment();
    let lock = Lock::create_in(Arc::clone(&segment), AT_LOCK).unwrap();
    let cond = Condition::create_in(lock, Arc::clone(&segment), AT_COND).unwrap();
    let children: Vec<Child> = (0..2)
        .map(|_| spawn_with(role!(child_condition_wait_for), &["5"], &segment))
        .collect();
    assert!(eventually(Duration::from_secs(10), || {
        data(&segment, 0).load(Ordering::SeqCst) == 2
    }));
    for step in 1..=5 {
        std::thread::sleep(Duration::from_millis(10));
        let _guard = cond.acquire().unwrap();
        data(&segment, 2).store(step, Ordering::SeqCst);
        cond.notify_all();
        if step < 5 {
            assert_eq!(
                data(&segment, 1).load(Ordering::SeqCst),
                0,
                "returned early"
            );
        }
    }
    join_all(children);
    assert_eq!(data(&segment, 1).load(Ordering::SeqCst), 2);
}

fn barrier_releases_all_parties_every_round() {
    const ROUNDS: u64 = 300;
    let segment = segment();
    let barrier = Barrier::create_in(Arc::clone(&segment), AT_BARRIER, 3).unwrap();
    let rounds = ROUNDS.to_string();
    let children = (0..3)
        .map(|_| spawn_with(role!(child_barrier_rounds), &[&rounds], &segment))
        .collect();
    join_all(children);
    assert_eq!(data(&segment, 0).load(Ordering::SeqCst), 3 * ROUNDS);
    assert_eq!(
        data(&segment, 1).load(Ordering::SeqCst),
        ROUNDS,
        "one leader per round"
    );
    assert!(!barrier.broken());
    assert_eq!(barrier.n_waiting(), 0);
}

fn barrier_abort_breaks_it_for_everyone() {
    let segment = segment();
    let barrier = Barrier::create_in(Arc::clone(&segment), AT_BARRIER, 3).unwrap();
    let children: Vec<Child> = (0..2)
        .map(|_| spawn_with(role!(child_barrier_broken), &[], &segment))
        .collect();
    assert!(eventually(Duration::from_secs(10), || barrier.n_waiting() == 2));
    barrier.abort();
    join_all(children);
    assert_eq!(data(&segment, 0).load(Ordering::SeqCst), 2);
    assert!(barrier.broken());
    assert!(barrier.wait().is_err());
    barrier.reset();
    assert!(!barrier.broken());
    // Usable again: a full round with threads.
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| barrier.wait_timeout(Duration::from_secs(5)).unwrap());
        }
    });
}

fn barrier_timeout_breaks_it() {
    let barrier = Barrier::new(2).unwrap();
    let start = Instant::now();
    let err = barrier.wait_timeout(Duration::from_millis(30)).unwrap_err();
    assert!(err.is_timeout());
    assert!(start.elapsed() >= Duration::from_millis(30));
    assert!(barrier.broken());
}

/// SIGKILLs `victim` and reaps it; returns when the kill was sent and when
/// the process had died (its pidfd turned readable), both in `mono_ns`.
fn kill_and_time(victim: &mut Child) -> (u64, u64) {
    use rustix::event::{PollFd, PollFlags, poll};
    let pid = rustix::process::Pid::from_raw(victim.id() as i32).unwrap();
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap();
    let killed_at = mono_ns();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
    while poll(&mut fds, None).is_err() {}
    let died_at = mono_ns();
    let status = wait_timeout(victim, CHILD_LIMIT);
    assert!(!status.success(), "the victim was not killed: {status:?}");
    (killed_at, died_at)
}

/// A full round on `barrier` with `parties - 1` fresh child parties and
/// this process; exactly one of them leads.
fn barrier_full_round(barrier: &Barrier, segment: &Arc<Segment>) {
    data(segment, 0).store(0, Ordering::SeqCst);
    data(segment, 1).store(0, Ordering::SeqCst);
    let others = barrier.parties() - 1;
    let children = (0..others)
        .map(|_| spawn_with(role!(child_barrier_once), &[], segment))
        .collect();
    let result = barrier
        .wait_timeout(Duration::from_secs(10))
        .expect("a full round after reset");
    join_all(children);
    assert_eq!(data(segment, 0).load(Ordering::SeqCst), u64::from(others));
    assert_eq!(
        data(segment, 1).load(Ordering::SeqCst) + u64::from(result.is_leader()),
        1,
        "one leader per round"
    );
    assert!(!barrier.broken());
    assert_eq!(barrier.n_waiting(), 0);
}

/// Starts a party that waits on the barrier until killed, and returns once
/// it waits (`n_waiting` reached `waiting`) and has had time to fall asleep.
fn spawn_victim(barrier: &Barrier, segment: &Arc<Segment>, waiting: u32) -> Child {
    let victim = spawn_with(role!(child_barrier_wait_until_killed), &[], segment);
    assert!(
        eventually(Duration::from_secs(10), || barrier.n_waiting() == waiting),
        "the victim never waited"
    );
    std::thread::sleep(Duration::from_millis(25));
    victim
}

fn barrier_party_killed_while_waiting_breaks_it_for_the_others() {
    let segment = segment();
    let barrier = Barrier::create_in(Arc::clone(&segment), AT_BARRIER, 2).unwrap();
    let mut victim = spawn_victim(&barrier, &segment, 1);
    kill_and_time(&mut victim);
    let start = Instant::now();
    let result = barrier.wait_timeout(Duration::from_secs(5));
    let took = start.elapsed();
    let err =
        result.expect_err("passed a 2-party barrier alone: the dead party counted as arrived");
    assert!(err.is_party_died() && !err.is_timeout(), "{err:?}");
    assert!(took < Duration::from_millis(500), "took {took:?}");
    assert_eq!(
        err.to_string(),
        "barrier is broken because a party died inside it"
    );
    // Broken for everybody until reset, for the same reason.
    assert!(barrier.broken());
    assert_eq!(barrier.n_waiting(), 0);
    let again = barrier.wait_timeout(Duration::from_secs(5)).unwrap_err();
    assert!(again.is_party_died() && !again.is_timeout(), "{again:?}");
    barrier.reset();
    assert!(!barrier.broken());
    barrier_full_round(&barrier, &segment);
}

fn barrier_reset_after_a_party_died_makes_it_usable_again() {
    let segment = segment();
    let barrier = Barrier::create_in(Arc::clone(&segment), AT_BARRIER, 2).unwrap();
    let mut victim = spawn_victim(&barrier, &segment, 1);
    kill_and_time(&mut victim);
    // Nobody waited while it died: reset alone must clear it out.
    barrier.reset();
    assert!(!barrier.broken());
    assert_eq!(barrier.n_waiting(), 0);
    // The dead party no longer counts: alone, this process does not pass.
    let err = barrier
        .wait_timeout(Duration::from_millis(50))
        .expect_err("passed a 2-party barrier alone after reset");
    assert!(err.is_timeout(), "{err:?}");
    barrier.reset();
    barrier_full_round(&barrier, &segment);
    barrier_full_round(&barrier, &segment);
}

/// A `parties`-party barrier with `parties - 2` live child parties waiting
/// when another waiting party is SIGKILLed: every live waiter gets the
/// "party died" error within 100 ms of the death; then reset and a full
/// round work.
fn party_killed_while_others_wait(parties: u32, rounds: usize) {
    let mut worst = Duration::ZERO;
    for round in 0..rounds {
        let segment = segment();
        let barrier = Barrier::create_in(Arc::clone(&segment), AT_BARRIER, parties).unwrap();
        let live: Vec<Child> = (0..parties - 2)
            .map(|i| {
                spawn_with(
                    role!(child_barrier_expect_party_died),
                    &[&i.to_string()],
                    &segment,
                )
            })
            .collect();
        assert!(eventually(Duration::from_secs(10), || {
            barrier.n_waiting() == parties - 2
        }));
        let mut victim = spawn_victim(&barrier, &segment, parties - 1);
        let (killed_at, died_at) = kill_and_time(&mut victim);
        join_all(live);
        for i in 0..(parties - 2) as usize {
            let woke = data(&segment, 2 + i).load(Ordering::SeqCst);
            let took = Duration::from_nanos(woke.saturating_sub(died_at));
            let since_kill = Duration::from_nanos(woke.saturating_sub(killed_at));
            assert!(
                took < Duration::from_millis(100),
                "{parties} parties, round {round}: waiter {i} woke {took:?} after the death"
            );
            assert!(
                since_kill < Duration::from_secs(2),
                "{parties} parties, round {round}: waiter {i} woke {since_kill:?} after SIGKILL"
            );
            worst = worst.max(took);
        }
        let err = barrier.wait_timeout(Duration::from_secs(5)).unwrap_err();
        assert!(err.is_party_died() && !err.is_timeout(), "{err:?}");
        assert!(barrier.broken());
        barrier.reset();
        barrier_full_round(&barrier, &segment);
    }
    eprintln!(
        "barrier, {parties} parties: worst wake-up over {rounds} kills: {worst:?} after death"
    );
}

fn barrier_party_killed_while_others_wait_wakes_every_live_waiter() {
    party_killed_while_others_wait(3, 5);
    party_killed_while_others_wait(4, 5);
}

/// Kills a holder of the lock kind `kind` while this process sleeps in
/// `acquire`; checks OwnerDied arrives within 100 ms of the holder's death
/// (its pidfd turning readable), repairs, and that the lock works
/// afterwards.
fn owner_killed(kind: &str, rounds: usize) {
    let mut worst = Duration::ZERO;
    let mut worst_since_kill = Duration::ZERO;
    for round in 0..rounds {
        let segment = segment();
        let lock = Lock::create_in(Arc::clone(&segment), AT_LOCK).unwrap();
        let rlock = RLock::create_in(Arc::clone(&segment), AT_RLOCK).unwrap();
        let mut holder = spawn_with(role!(child_hold_forever), &[kind], &segment);
        assert!(eventually(Duration::from_secs(10), || {
            data(&segment, 0).load(Ordering::SeqCst) == 1
        }));
        let pid = rustix::process::Pid::from_raw(holder.id() as i32).unwrap();
        let killed_at = Arc::new(AtomicU64::new(0));
        let died_at = Arc::new(AtomicU64::new(0));
        let killer = {
            let killed_at = Arc::clone(&killed_at);
            let died_at = Arc::clone(&died_at);
            std::thread::spawn(move || {
                use rustix::event::{PollFd, PollFlags, poll};
                let pidfd =
                    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).unwrap();
                // Let the main thread spin out and fall asleep first.
                std::thread::sleep(Duration::from_millis(25));
                killed_at.store(mono_ns(), Ordering::SeqCst);
                rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
                // A pidfd turns readable when the process has exited: the
                // moment of death, which a loaded machine can delay well
                // after the signal.
                let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
                while poll(&mut fds, None).is_err() {}
                died_at.store(mono_ns(), Ordering::SeqCst);
            })
        };
        let deadline = Duration::from_secs(10);
        let got_at;
        if kind == "lock" {
            let err = lock.acquire_timeout(deadline).unwrap_err();
            got_at = mono_ns();
            assert!(err.is_owner_died(), "round {round}: {err:?}");
            let _guard = err.into_inner().unwrap();
            data(&segment, 1).store(0, Ordering::SeqCst); // repair
        } else {
            let err = rlock.acquire_timeout(deadline).unwrap_err();
            got_at = mono_ns();
            assert!(err.is_owner_died(), "round {round}: {err:?}");
            let _guard = err.into_inner().unwrap();
            assert_eq!(rlock.depth(), 1);
            data(&segment, 1).store(0, Ordering::SeqCst);
        }
        killer.join().unwrap();
        let status = wait_timeout(&mut holder, CHILD_LIMIT);
        assert!(!status.success());
        let died = died_at.load(Ordering::SeqCst);
        let took = Duration::from_nanos(got_at.saturating_sub(died));
        assert!(
            took < Duration::from_millis(100),
            "round {round}: OwnerDied {took:?} after the death"
        );
        let since_kill = Duration::from_nanos(got_at - killed_at.load(Ordering::SeqCst));
        assert!(
            since_kill < Duration::from_secs(2),
            "round {round}: OwnerDied {since_kill:?} after the kill"
        );
        worst = worst.max(took);
        worst_since_kill = worst_since_kill.max(since_kill);
        // Healthy afterwards, also for another process.
        if kind == "lock" {
            drop(lock.try_acquire().unwrap());
            let mut other = spawn_with(role!(child_hold_for), &["1"], &segment);
            assert!(wait_timeout(&mut other, CHILD_LIMIT).success());
            assert!(!lock.is_locked());
        } else {
            let a = rlock.try_acquire().unwrap();
            let b = rlock.try_acquire().unwrap();
            drop((a, b));
            assert!(!rlock.is_locked());
        }
        assert_eq!(data(&segment, 1).load(Ordering::SeqCst), 0);
    }
    eprintln!(
        "{kind}: worst OwnerDied latency over {rounds} kills: {worst:?} after death, \
         {worst_since_kill:?} after SIGKILL"
    );
}

fn lock_owner_sigkilled_gives_owner_died_within_100ms() {
    owner_killed("lock", 20);
}

fn rlock_owner_sigkilled_gives_owner_died_within_100ms() {
    owner_killed("rlock", 20);
}

fn dead_owner_found_by_a_late_acquirer() {
    let segment = segment();
    let lock = Lock::create_in(Arc::clone(&segment), AT_LOCK).unwrap();
    let _rlock = RLock::create_in(Arc::clone(&segment), AT_RLOCK).unwrap();
    let mut holder = spawn_with(role!(child_hold_forever), &["lock"], &segment);
    assert!(eventually(Duration::from_secs(10), || {
        data(&segment, 0).load(Ordering::SeqCst) == 1
    }));
    holder.kill().unwrap();
    holder.wait().unwrap();
    // Nobody waited while it died: a non-blocking acquire finds out.
    let err = lock.try_acquire().unwrap_err();
    assert!(err.is_owner_died());
    drop(err);
    assert!(lock.try_acquire().is_ok());

    // A zero timeout (a poll) finds a dead RLock owner too.
    data(&segment, 0).store(0, Ordering::SeqCst);
    let rlock = RLock::attach(Arc::clone(&segment), AT_RLOCK).unwrap();
    let mut holder = spawn_with(role!(child_hold_forever), &["rlock"], &segment);
    assert!(eventually(Duration::from_secs(10), || {
        data(&segment, 0).load(Ordering::SeqCst) == 1
    }));
    holder.kill().unwrap();
    holder.wait().unwrap();
    let err = rlock.acquire_timeout(Duration::ZERO).unwrap_err();
    assert!(err.is_owner_died());
    drop(err);
    assert!(rlock.acquire_timeout(Duration::ZERO).is_ok());
}

fn release_by_another_process_is_an_error() {
    let segment = segment();
    let lock = Lock::create_in(Arc::clone(&segment), AT_LOCK).unwrap();
    let rlock = RLock::create_in(Arc::clone(&segment), AT_RLOCK).unwrap();
    let g1 = lock.acquire().unwrap();
    let g2 = rlock.acquire().unwrap();
    let child = spawn_with(role!(child_release_foreign), &[], &segment);
    join_all(vec![child]);
    assert!(lock.is_owned() && rlock.is_owned());
    drop((g1, g2));
}

fn timeouts_return_on_time_and_never_hang() {
    let segment = segment();
    let lock = Lock::create_in(Arc::clone(&segment), AT_LOCK).unwrap();
    let mut holder = spawn_with(role!(child_hold_for), &["2000"], &segment);
    assert!(eventually(Duration::from_secs(10), || {
        data(&segment, 0).load(Ordering::SeqCst) == 1
    }));
    let sem = Semaphore::new(0).unwrap();
    let event = Event::new().unwrap();
    let cond = Condition::new().unwrap();
    let barrier = Barrier::new(2).unwrap();
    let slack = Duration::from_millis(150);
    for ms in [0u64, 20, 100] {
        let d = Duration::from_millis(ms);
        let check = |what: &str, start: Instant, timed_out: bool| {
            let took = start.elapsed();
            assert!(timed_out, "{what} {ms} ms: did not time out");
            assert!(took >= d, "{what} {ms} ms: returned early after {took:?}");
            assert!(
                took < d + slack,
                "{what} {ms} ms: returned late after {took:?}"
            );
        };
        let t = Instant::now();
        check(
            "lock",
            t,
            lock.acquire_timeout(d).is_err_and(|e| e.is_timeout()),
        );
        let t = Instant::now();
        check(
            "semaphore",
            t,
            sem.acquire_timeout(d).err() == Some(Timeout),
        );
        let t = Instant::now();
        check("event", t, event.wait_timeout(d) == Err(Timeout));
        let guard = cond.acquire().unwrap();
        let t = Instant::now();
        let result = cond.wait_timeout(guard, d);
        check(
            "condition",
            t,
            result.as_ref().is_err_and(|e| e.is_timeout()),
        );
        drop(result);
        let t = Instant::now();
        check(
            "barrier",
            t,
            barrier.wait_timeout(d).is_err_and(|e| e.is_timeout()),
        );
        barrier.reset();
    }
    assert!(wait_timeout(&mut holder, CHILD_LIMIT).success());
    // Absurd durations saturate to "for ever" and do not panic.
    assert!(lock.acquire_timeout(Duration::MAX).is_ok());
    sem.release().unwrap();
    assert!(sem.acquire_timeout(Duration::MAX).is_ok());
    event.set();
    assert!(event.wait_timeout(Duration::MAX).is_ok());
}

fn handles_cross_a_socket_and_work() {
    let (ours, theirs) = scm::stream_pair().unwrap();
    let mut child = spawn(role!(child_receive_handles), &[], &[theirs.as_fd()]).unwrap();
    drop(theirs);
    let lock = Lock::new().unwrap();
    let event = Event::new().unwrap();
    let sem = BoundedSemaphore::new(1).unwrap();
    let (bytes, fds) = codec::encode_with_fds(&(&lock, &event, &sem)).unwrap();
    let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
    scm::send_all(&ours, &bytes, &borrowed).unwrap();
    drop(fds);
    event.wait_timeout(Duration::from_secs(10)).unwrap();
    assert!(lock.is_locked(), "the child holds the lock it received");
    assert!(!lock.is_owned());
    assert_eq!(sem.get_value(), 0);
    assert!(wait_timeout(&mut child, CHILD_LIMIT).success());
    assert!(lock.try_acquire().is_ok());
    sem.release().unwrap();
    assert!(sem.release().is_err());
}

fn wrong_or_corrupt_headers_are_errors() {
    let segment = segment();
    let _lock = Lock::create_in(Arc::clone(&segment), AT_LOCK).unwrap();
    let _sem = BoundedSemaphore::create_in(Arc::clone(&segment), AT_SEM, 2).unwrap();
    let _barrier = Barrier::create_in(Arc::clone(&segment), AT_BARRIER, 2).unwrap();

    // Another type at the right place; nothing at all; out of bounds.
    assert!(Event::attach(Arc::clone(&segment), AT_LOCK).is_err());
    assert!(RLock::attach(Arc::clone(&segment), AT_LOCK).is_err());
    assert!(Semaphore::attach(Arc::clone(&segment), AT_SEM).is_err());
    assert!(Lock::attach(Arc::clone(&segment), AT_EVENT).is_err());
    assert!(Lock::attach(Arc::clone(&segment), SEGMENT_SIZE - 64).is_err());
    assert!(Lock::attach(Arc::clone(&segment), usize::MAX).is_err());
    assert!(Lock::attach(Arc::clone(&segment), 4).is_err());

    // A good header attaches.
    assert!(Lock::attach(Arc::clone(&segment), AT_LOCK).is_ok());
    assert_eq!(
        BoundedSemaphore::attach(Arc::clone(&segment), AT_SEM)
            .unwrap()
            .bound(),
        2
    );

    // Impossible states behind a good header.
    segment.write_at(AT_SEM + 64, &3u32.to_ne_bytes()).unwrap(); // value 3 > bound 2
    assert!(matches!(
        BoundedSemaphore::attach(Arc::clone(&segment), AT_SEM),
        Err(AttachError::Corrupt(_))
    ));
    segment
        .write_at(AT_BARRIER + 88, &7i32.to_ne_bytes())
        .unwrap(); // state 7
    assert!(matches!(
        Barrier::attach(Arc::clone(&segment), AT_BARRIER),
        Err(AttachError::Corrupt(_))
    ));

    // Wrong layout version, wrong size, garbage.
    let mut header = [0u8; 32];
    segment.read_at(AT_LOCK, &mut header).unwrap();
    let mut bad = header;
    bad[8..12].copy_from_slice(&99u32.to_ne_bytes());
    segment.write_at(AT_LOCK, &bad).unwrap();
    assert!(Lock::attach(Arc::clone(&segment), AT_LOCK).is_err());
    let mut bad = header;
    bad[16..24].copy_from_slice(&64u64.to_ne_bytes());
    segment.write_at(AT_LOCK, &bad).unwrap();
    assert!(Lock::attach(Arc::clone(&segment), AT_LOCK).is_err());
    segment.write_at(AT_LOCK, &[0xA5; 32]).unwrap();
    assert!(Lock::attach(Arc::clone(&segment), AT_LOCK).is_err());
    segment.write_at(AT_LOCK, &header).unwrap();
    assert!(Lock::attach(Arc::clone(&segment), AT_LOCK).is_ok());

    // Decoding a Lock's handle as an RLock fails cleanly.
    let lock = Lock::new().unwrap();
    let (bytes, fds) = codec::encode_with_fds(&lock).unwrap();
    assert!(codec::decode_with_fds::<RLock>(&bytes, fds).is_err());
    // A transport without descriptors refuses a handle.
    assert!(
        codec::encode(&lock)
            .unwrap_err()
            .is_descriptors_unsupported()
    );
}

fn garbage_owner_is_taken_over_not_hung_on() {
    let segment = segment();
    let lock = Lock::create_in(Arc::clone(&segment), AT_LOCK).unwrap();
    // A state word naming a thread id no process has (above pid_max).
    let bogus: u32 = (1 << 22) + 12345;
    segment
        .write_at(AT_LOCK + 64, &(bogus & ((1 << 30) - 1)).to_ne_bytes())
        .unwrap();
    segment.write_at(AT_LOCK + 72, &[0xEE; 8]).unwrap();
    assert!(lock.is_locked());
    let start = Instant::now();
    let err = lock.acquire_timeout(Duration::from_secs(5)).unwrap_err();
    assert!(err.is_owner_died());
    assert!(start.elapsed() < Duration::from_millis(100));
    drop(err);
    assert!(lock.try_acquire().is_ok());
}

/// Takes a lock and an event passed with `multiproc_sync::inherit`: holds
/// the lock, sets the event, waits for the parent's event to release.
fn child_inherit_lock_and_events(_: &[String]) {
    use multiproc_sync::inherit;
    let lock: Lock = inherit::take("lock").unwrap();
    let held: Event = inherit::take("held").unwrap();
    let release: Event = inherit::take("release").unwrap();
    let guard = lock.lock().unwrap();
    held.set();
    release.wait_timeout(CHILD_LIMIT).unwrap();
    drop(guard);
}

fn sync_shared_with_a_command_child_through_inherit() {
    // The recipe of the crate docs ("Using this crate alone").
    use multiproc_sync::inherit;
    let lock = Lock::new().unwrap();
    let held = Event::new().unwrap();
    let release = Event::new().unwrap();
    let mut cmd = multiproc_testkit::command(role!(child_inherit_lock_and_events), &[], &[]);
    inherit::pass(&mut cmd, "lock", &lock).unwrap();
    inherit::pass(&mut cmd, "held", &held).unwrap();
    inherit::pass(&mut cmd, "release", &release).unwrap();
    let mut child = cmd.stdin(std::process::Stdio::null()).spawn().unwrap();
    drop(cmd);
    held.wait_timeout(CHILD_LIMIT).unwrap();
    assert!(lock.try_acquire().is_err(), "the child holds the same lock");
    release.set();
    assert!(wait_timeout(&mut child, CHILD_LIMIT).success());
    let _guard = lock.lock().unwrap();
}

fn main() {
    let roles: &[Role] = &[
        role!(child_inherit_lock_and_events),
        role!(child_lock_counter),
        role!(child_rlock_counter),
        role!(child_named_lock_counter),
        role!(child_semaphore),
        role!(child_event_wait),
        role!(child_condition_wait),
        role!(child_condition_wait_for),
        role!(child_condition_wait_owner_died),
        role!(child_barrier_rounds),
        role!(child_barrier_broken),
        role!(child_barrier_once),
        role!(child_barrier_wait_until_killed),
        role!(child_barrier_expect_party_died),
        role!(child_hold_forever),
        role!(child_hold_for),
        role!(child_release_foreign),
        role!(child_receive_handles),
    ];
    run(
        roles,
        tests![
            sync_shared_with_a_command_child_through_inherit,
            lock_counter_is_exact_across_processes,
            rlock_counter_is_exact_with_recursion,
            lock_in_a_named_segment_works_across_processes,
            semaphore_concurrency_reaches_but_never_exceeds_n,
            event_wakes_waiters_in_other_processes,
            condition_notify_wakes_exactly_one_then_all,
            condition_wait_for_waits_for_the_predicate,
            condition_wait_reports_an_owner_that_died_meanwhile,
            barrier_releases_all_parties_every_round,
            barrier_abort_breaks_it_for_everyone,
            barrier_timeout_breaks_it,
            barrier_party_killed_while_waiting_breaks_it_for_the_others,
            barrier_reset_after_a_party_died_makes_it_usable_again,
            barrier_party_killed_while_others_wait_wakes_every_live_waiter,
            lock_owner_sigkilled_gives_owner_died_within_100ms,
            rlock_owner_sigkilled_gives_owner_died_within_100ms,
            dead_owner_found_by_a_late_acquirer,
            release_by_another_process_is_an_error,
            timeouts_return_on_time_and_never_hang,
            handles_cross_a_socket_and_work,
            wrong_or_corrupt_headers_are_errors,
            garbage_owner_is_taken_over_not_hung_on,
        ],
    );
}
