//! Async queues between real processes, on tokio and on smol: the test
//! binary re-executes itself as the child (see `multiproc-testkit`). Every
//! scenario runs on both runtimes.

use multiproc_async::AsyncQueue;
use multiproc_core::Segment;
use multiproc_queue::{JoinableQueue, Queue, SimpleQueue};
use multiproc_testkit::{
    Role, alone_in_child_process, inherited_fds, role, run, spawn, wait_timeout,
};
use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::pin;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

mod common;
use common::*;

const CHILD_LIMIT: Duration = Duration::from_secs(60);

// ---- children ---------------------------------------------------------------

fn attach<T>(fd: OwnedFd) -> Queue<T> {
    Queue::attach(Segment::from_fd(fd).unwrap()).unwrap()
}

/// Puts `count` items `producer << 32 | seq`, blocking.
fn child_put(args: &[String]) {
    let q: Queue<u64> = attach(inherited_fds().remove(0));
    let producer: u64 = arg(args, 0);
    let count: u64 = arg(args, 1);
    let pause_us: u64 = arg(args, 2);
    for seq in 0..count {
        q.put(producer << 32 | seq).unwrap();
        if pause_us > 0 {
            std::thread::sleep(Duration::from_micros(pause_us));
        }
    }
}

/// Gets `count` items, blocking, and puts their sum into the second queue.
fn child_sum(args: &[String]) {
    let mut fds = inherited_fds();
    let q: Queue<u64> = attach(fds.remove(0));
    let sums: Queue<u64> = attach(fds.remove(0));
    let count: u64 = arg(args, 0);
    let sum = (0..count).map(|_| q.get().unwrap()).sum();
    sums.put(sum).unwrap();
}

/// Takes the first item in place (holding the consumer lock), says so on
/// standard output, then waits to be killed.
fn child_hold_consumer_lock(_: &[String]) {
    let q: Queue<u64> = attach(inherited_fds().remove(0));
    let _held = q.get_in_place().unwrap();
    println!("holding");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Closes the queue after `ms` milliseconds.
fn child_close_after(args: &[String]) {
    let q: Queue<u64> = attach(inherited_fds().remove(0));
    std::thread::sleep(Duration::from_millis(arg(args, 0)));
    q.close();
}

/// Takes `count` items from the joinable queue, marking each done after a
/// pause.
fn child_work(args: &[String]) {
    let jobs =
        JoinableQueue::<u64>::attach(Segment::from_fd(inherited_fds().remove(0)).unwrap()).unwrap();
    let count: u64 = arg(args, 0);
    for _ in 0..count {
        jobs.get().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        jobs.task_done().unwrap();
    }
}

/// Puts messages of 100 KiB (larger than the ring: each goes in pieces)
/// for ever, message `i` filled with `pattern(len, i)`, until killed.
fn child_put_large_for_ever(_: &[String]) {
    let q: Queue<u64> = attach(inherited_fds().remove(0));
    for i in 0.. {
        q.put_bytes(&multiproc_testkit::pattern(LARGE, i)).unwrap();
    }
}

/// Size of [`child_put_large_for_ever`]'s messages.
const LARGE: usize = 100 << 10;

/// Puts `count` items into the simple queue, then closes it.
fn child_simple_put(args: &[String]) {
    let q =
        SimpleQueue::<u64>::attach(Segment::from_fd(inherited_fds().remove(0)).unwrap()).unwrap();
    for i in 0..arg::<u64>(args, 0) {
        q.put(i).unwrap();
    }
    q.close();
}

fn start(role: Role, queues: &[&Queue<u64>], args: &[&str]) -> Child {
    let fds: Vec<_> = queues.iter().map(|q| q.segment().as_fd()).collect();
    spawn(role, args, &fds).unwrap()
}

fn finish(mut child: Child) {
    let status = wait_timeout(&mut child, CHILD_LIMIT);
    assert!(status.success(), "child failed: {status:?}");
}

// ---- scenarios ----------------------------------------------------------------

fn one_blocking_producer_one_async_consumer<R: Runtime>() {
    blocking_producers_async_consumers::<R>(1);
}

fn two_blocking_producers_two_async_consumers<R: Runtime>() {
    blocking_producers_async_consumers::<R>(2);
}

fn one_async_producer_one_blocking_consumer<R: Runtime>() {
    async_producers_blocking_consumers::<R>(1);
}

fn two_async_producers_two_blocking_consumers<R: Runtime>() {
    async_producers_blocking_consumers::<R>(2);
}

/// `n` blocking producers in other processes, `n` async consumers here:
/// every item arrives once, each producer's in order.
fn blocking_producers_async_consumers<R: Runtime>(n: u64) {
    const EACH: u64 = 3000;
    let q: Queue<u64> = Queue::with_capacity(16).unwrap();
    let children: Vec<_> = (0..n)
        .map(|p| {
            start(
                role!(child_put),
                &[&q],
                &[&p.to_string(), &EACH.to_string(), "0"],
            )
        })
        .collect();
    let got: Vec<Vec<u64>> = R::block_on(async {
        let inbox = Arc::new(AsyncQueue::<u64, R>::new(q.clone()).unwrap());
        // Consumers take turns by count: together exactly 2 * EACH.
        let consumer = |n: u64| {
            let inbox = Arc::clone(&inbox);
            async move {
                let mut got = Vec::new();
                for _ in 0..n {
                    got.push(inbox.get().await.unwrap());
                }
                got
            }
        };
        within::<R, _>(HUNG, join_all((0..n).map(|_| consumer(EACH)).collect()))
            .await
            .expect("consumers hung")
    });
    children.into_iter().for_each(finish);
    let mut seen = HashSet::new();
    for consumer in &got {
        let mut last = [None::<u64>; 2];
        for &item in consumer {
            assert!(seen.insert(item), "{item:#x} delivered twice");
            let (producer, seq) = ((item >> 32) as usize, item & 0xffff_ffff);
            assert!(last[producer] < Some(seq), "out of order: {item:#x}");
            last[producer] = Some(seq);
        }
    }
    assert_eq!(seen.len() as u64, n * EACH, "items lost");
}

/// `n` async producers here, `n` blocking consumers in other processes,
/// through a queue of 4: the producers wait for room.
fn async_producers_blocking_consumers<R: Runtime>(n: u64) {
    const EACH: u64 = 3000;
    let q: Queue<u64> = Queue::with_capacity(4).unwrap();
    let sums: Queue<u64> = Queue::new().unwrap();
    let children: Vec<_> = (0..n)
        .map(|_| start(role!(child_sum), &[&q, &sums], &[&EACH.to_string()]))
        .collect();
    on::<R>(async {
        let outbox = Arc::new(AsyncQueue::<u64, R>::new(q.clone()).unwrap());
        let producer = |base: u64| {
            let outbox = Arc::clone(&outbox);
            async move {
                for i in 0..EACH {
                    outbox.put(base + i).await.unwrap();
                }
            }
        };
        join_all((0..n).map(|p| producer(p * 1_000_000)).collect()).await;
    });
    children.into_iter().for_each(finish);
    let total: u64 = (0..n).map(|_| sums.get().unwrap()).sum();
    let expected: u64 = (0..n)
        .flat_map(|p| (0..EACH).map(move |i| p * 1_000_000 + i))
        .sum();
    assert_eq!(total, expected);
}

/// Gets cancelled at random moments (a timeout drops the future) while a
/// producer in another process puts: no item is lost or seen twice.
fn cancelled_gets_lose_nothing<R: Runtime>() {
    const COUNT: u64 = 400;
    let q: Queue<u64> = Queue::new().unwrap();
    let child = start(role!(child_put), &[&q], &["0", &COUNT.to_string(), "300"]);
    let mut cancelled = 0;
    let got = R::block_on(async {
        let inbox = AsyncQueue::<u64, R>::new(q.clone()).unwrap();
        let mut got = Vec::new();
        let mut i = 0u64;
        while (got.len() as u64) < COUNT {
            i += 1;
            // 0 to 400 µs: often shorter than the producer's pause.
            let limit = Duration::from_micros(i * 7919 % 400);
            match within::<R, _>(limit, inbox.get()).await {
                Some(item) => got.push(item.unwrap()),
                None => cancelled += 1,
            }
            assert!(i < 1_000_000, "no progress");
        }
        got
    });
    finish(child);
    assert!(cancelled > 0, "no get was cancelled");
    assert_eq!(got, (0..COUNT).collect::<Vec<_>>(), "lost or reordered");
    assert!(
        q.try_get().unwrap_err().is_empty(),
        "an item was left behind"
    );
}

/// A consumer in another process dies holding the consumer lock while an
/// async get waits: the get takes the lock over and returns.
fn a_dead_lock_holder_is_taken_over<R: Runtime>() {
    let q: Queue<u64> = Queue::new().unwrap();
    q.put(1).unwrap();
    q.put(2).unwrap();
    let mut child =
        multiproc_testkit::command(role!(child_hold_consumer_lock), &[], &[q.segment().as_fd()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "holding");
    let pid = child.id();
    let killer = kill_after(pid, Duration::from_millis(100));
    let got = R::block_on(async {
        let inbox = AsyncQueue::<u64, R>::new(q.clone()).unwrap();
        within::<R, _>(HUNG, inbox.get()).await
    });
    killer.join().unwrap();
    let _ = child.wait();
    let item = got.expect("the get hung on a dead holder").unwrap();
    assert!(item == 1 || item == 2, "{item}");
}

/// Another process closes the queue while async gets wait: they end with
/// `Closed`.
fn a_close_wakes_async_getters<R: Runtime>() {
    let q: Queue<u64> = Queue::new().unwrap();
    let child = start(role!(child_close_after), &[&q], &["100"]);
    let outcomes = R::block_on(async {
        let inbox = Arc::new(AsyncQueue::<u64, R>::new(q.clone()).unwrap());
        let getters = (0..3).map(|_| {
            let inbox = Arc::clone(&inbox);
            async move { inbox.get().await }
        });
        within::<R, _>(HUNG, join_all(getters.collect())).await
    })
    .expect("a close did not wake the getters");
    finish(child);
    for outcome in outcomes {
        assert!(outcome.unwrap_err().is_closed());
    }
}

/// An async `join` waits until a worker in another process marked every
/// item done, and not longer.
fn join_waits_for_a_worker_process<R: Runtime>() {
    const JOBS: u64 = 50;
    let jobs: JoinableQueue<u64> = JoinableQueue::new().unwrap();
    let worker = start(role!(child_work), &[&*jobs], &[&JOBS.to_string()]);
    on::<R>(async {
        let jobs = multiproc_async::AsyncJoinableQueue::<u64, R>::new(jobs.clone()).unwrap();
        for i in 0..JOBS {
            jobs.put(i).await.unwrap();
        }
        assert!(jobs.joinable().unfinished_tasks() > 0);
        jobs.join().await.unwrap();
        assert_eq!(jobs.joinable().unfinished_tasks(), 0);
        assert!(jobs.queue().is_empty());
    });
    finish(worker);
}

fn square(x: u64) -> u64 {
    x * x
}

fn fail_on_13(x: u64) -> u64 {
    assert_ne!(x, 13, "unlucky");
    x
}

/// Pool results and `imap` are awaited on the runtime: many at once, in
/// order for `imap`, with a failed task's error.
fn pool_results_are_awaitable<R: Runtime>() {
    let pool = multiproc_process::Pool::new(2).unwrap();
    on::<R>(async {
        let pending: Vec<_> = (0..20).map(|x| pool.apply_async(square, x)).collect();
        let values: Vec<u64> = join_all(pending)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(values, (0..20).map(square).collect::<Vec<_>>());
        let failed = pool.apply_async(fail_on_13, 13).await.unwrap_err();
        assert!(failed.to_string().contains("unlucky"), "{failed}");

        let mut ordered = pool.imap(square, 0..100u64, Some(3));
        let mut got = Vec::new();
        while let Some(v) = ordered.next_async().await {
            got.push(v.unwrap());
        }
        assert_eq!(got, (0..100).map(square).collect::<Vec<_>>());

        let mut unordered = pool.imap_unordered(fail_on_13, 0..50u64, None);
        let (mut ok, mut errors) = (HashSet::new(), 0);
        while let Some(v) = unordered.next_async().await {
            match v {
                Ok(v) => assert!(ok.insert(v)),
                Err(_) => errors += 1,
            }
        }
        assert_eq!((ok.len(), errors), (49, 1));
    });
}

/// A `SimpleQueue` fed by another process is awaited through the queue
/// underneath, until it is closed.
fn simple_queue_awaited<R: Runtime>() {
    const COUNT: u64 = 500;
    let q: SimpleQueue<u64> = SimpleQueue::new().unwrap();
    let child = start(
        role!(child_simple_put),
        &[q.as_queue()],
        &[&COUNT.to_string()],
    );
    on::<R>(async {
        let inbox = AsyncQueue::<u64, R>::new(q.as_queue().clone()).unwrap();
        for i in 0..COUNT {
            assert_eq!(inbox.get().await.unwrap(), i);
        }
        assert!(inbox.get().await.unwrap_err().is_closed());
    });
    finish(child);
}

/// A producer process is SIGKILLed at a random moment, maybe in the middle
/// of a message it writes in pieces, while an async consumer awaits: the
/// consumer gets every message it gets whole and in order, and then the
/// next producer's message; it never hangs on the dead one.
fn a_killed_producer_leaves_no_waiter_hanging<R: Runtime>() {
    let q: Queue<u64> = Queue::builder().ring_bytes(64 << 10).build().unwrap();
    let mut producer = start(role!(child_put_large_for_ever), &[&q], &[]);
    on::<R>(async {
        let inbox = AsyncQueue::<u64, R>::new(q.clone()).unwrap();
        let mut next = 0u64;
        for _ in 0..3 {
            let message = inbox.get_bytes().await.unwrap();
            assert_eq!(
                message,
                multiproc_testkit::pattern(LARGE, next),
                "message {next}"
            );
            next += 1;
        }
        // Killed while the consumer waits (or while it writes a piece).
        let pid = producer.id();
        let killer = kill_after(pid, Duration::from_millis(u64::from(pid % 7)));
        let sentinel = u64::MAX.to_le_bytes();
        let mut got_sentinel = false;
        let mut put_sentinel = false;
        while !got_sentinel {
            let message = match within::<R, _>(Duration::from_millis(200), inbox.get_bytes()).await
            {
                Some(message) => message.unwrap(),
                None => {
                    // Nothing more from the dead producer: another one puts.
                    assert!(
                        killer.is_finished(),
                        "the producer stopped before its death"
                    );
                    assert!(!put_sentinel, "the sentinel was not delivered");
                    q.put_bytes(&sentinel).unwrap();
                    put_sentinel = true;
                    continue;
                }
            };
            if message == sentinel {
                got_sentinel = true;
            } else {
                assert_eq!(
                    message,
                    multiproc_testkit::pattern(LARGE, next),
                    "message {next}"
                );
                next += 1;
            }
        }
    });
    let _ = producer.wait();
}

/// Offset of the queue's data futex word in its segment (the layout table
/// in `multiproc-queue`'s `layout.rs`: the wait line at 768, `data` third).
const DATA_WORD: usize = 768 + 8;

/// A notifier killed between clearing the data word's "someone sleeps" bit
/// and its ring (the state such a SIGKILL leaves, made by hand) delays an
/// awaiting task by at most `futex::RECHECK`; it must not strand it.
fn a_notifier_killed_before_its_ring_strands_no_task<R: Runtime>() {
    let q: Queue<u64> = Queue::new().unwrap();
    let data = q.segment().atomic_u32(DATA_WORD).unwrap();
    on::<R>(async {
        let inbox = AsyncQueue::<u64, R>::new(q.clone()).unwrap();
        let mut get = pin!(inbox.get());
        assert!(poll_once(get.as_mut()).await.is_pending());
        // The task announced itself (bit 0) and waits on its doorbell.
        assert_eq!(data.load(Ordering::SeqCst) & 1, 1);
        // The dead notifier's CAS: bit 0 cleared, no ring.
        let v = data.load(Ordering::SeqCst);
        data.compare_exchange(v, v.wrapping_add(1), Ordering::SeqCst, Ordering::SeqCst)
            .unwrap();
        // Its item finds nobody announced.
        q.put(9).unwrap();
        let limit = multiproc_core::futex::RECHECK + Duration::from_secs(2);
        let got = within::<R, _>(limit, get).await;
        assert_eq!(
            got.map(Result::unwrap),
            Some(9),
            "the task slept on with an item there"
        );
    });
}

/// Threads of this process.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// A thousand tasks await one queue through one doorbell; a producer in
/// another process feeds them. No thread is started for them.
fn a_thousand_waiters<R: Runtime>() {
    const TASKS: u64 = 1000;
    // Alone, so that the threads of the other tests do not count.
    if !alone_in_child_process(&format!("a_thousand_waiters_{}", R::NAME), &[]) {
        return;
    }
    let q: Queue<u64> = Queue::new().unwrap();
    let got = R::block_on(async {
        let inbox = Arc::new(AsyncQueue::<u64, R>::new(q.clone()).unwrap());
        let waiter = || {
            let inbox = Arc::clone(&inbox);
            async move { inbox.get().await.unwrap() }
        };
        // One waiter pending first: whatever the runtime starts once (a
        // reactor thread) is running by then.
        let mut first = pin!(join_all(vec![waiter()]));
        assert!(poll_once(first.as_mut()).await.is_pending());
        let before = threads();
        let mut rest = pin!(join_all((1..TASKS).map(|_| waiter()).collect()));
        assert!(poll_once(rest.as_mut()).await.is_pending());
        // (A transient thread of the process may end meanwhile.)
        let after = threads();
        assert!(
            after <= before,
            "threads were started for waiters: {before} -> {after}"
        );
        let child = start(role!(child_put), &[&q], &["0", &TASKS.to_string(), "0"]);
        let both = async { (first.await, rest.await) };
        let (mut got, rest) = within::<R, _>(HUNG, both).await.expect("waiters hung");
        finish(child);
        got.extend(rest);
        got
    });
    let distinct: HashSet<_> = got.iter().collect();
    assert_eq!(distinct.len() as u64, TASKS);
}

fn main() {
    run(
        &[
            role!(child_put),
            role!(child_sum),
            role!(child_hold_consumer_lock),
            role!(child_close_after),
            role!(child_work),
            role!(child_simple_put),
            role!(child_put_large_for_ever),
        ],
        on_both_runtimes![
            one_blocking_producer_one_async_consumer,
            two_blocking_producers_two_async_consumers,
            one_async_producer_one_blocking_consumer,
            two_async_producers_two_blocking_consumers,
            cancelled_gets_lose_nothing,
            a_dead_lock_holder_is_taken_over,
            a_close_wakes_async_getters,
            a_thousand_waiters,
            join_waits_for_a_worker_process,
            pool_results_are_awaitable,
            simple_queue_awaited,
            a_killed_producer_leaves_no_waiter_hanging,
            a_notifier_killed_before_its_ring_strands_no_task,
        ],
    );
}
