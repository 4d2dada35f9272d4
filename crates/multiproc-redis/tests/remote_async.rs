//! Async remote queues against a real `redis-server` (each test starts its
//! own on a free loopback port and kills it at the end) and real processes
//! (the test binary re-executes itself in a role, see `multiproc-testkit`),
//! on tokio and on smol, next to blocking handles of the same queues.
//! Without `redis-server` the tests say loudly that they skipped, except in
//! CI (`CI` set), where they fail.

use multiproc_redis::{
    AsyncRemoteJoinableQueue, AsyncRemoteQueue, RemoteQueue, RemoteQueueBuilder,
};
use multiproc_testkit::{RedisServer, Role, role, run, tests, unique_name, wait_timeout};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const CHILD_LIMIT: Duration = Duration::from_secs(60);
/// `min_idle` of the tests' queues.
const MIN_IDLE: Duration = Duration::from_millis(300);
/// Messages per producer in the process tests.
const COUNT: u64 = 150;

fn server(test: &str) -> Option<RedisServer> {
    RedisServer::start_or_skip(test)
}

fn fresh_prefix() -> String {
    format!("{}:", unique_name("rqa"))
}

/// Settings of a test whose server stays up: short idle and block times,
/// generous network bounds.
fn builder(url: &str, prefix: &str, name: &str) -> RemoteQueueBuilder {
    RemoteQueue::builder(url, name)
        .prefix(prefix)
        .min_idle(MIN_IDLE)
        .block(Duration::from_millis(100))
        .connect_timeout(Duration::from_secs(5))
        .io_timeout(Duration::from_secs(5))
        .retry_for(Duration::from_secs(10))
}

/// Settings of a test that takes the server away: tight bounds, checked.
fn outage_builder(url: &str, prefix: &str, name: &str) -> RemoteQueueBuilder {
    builder(url, prefix, name)
        .connect_timeout(Duration::from_millis(500))
        .io_timeout(Duration::from_secs(2))
        .retry_for(Duration::from_secs(1))
}

/// Runs `f` on the runtime named `rt`: `tokio` (a current-thread runtime
/// with I/O and time) or `smol` (`smol::block_on`).
fn block_on<F: Future>(rt: &str, f: F) -> F::Output {
    match rt {
        "tokio" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f),
        "smol" => smol::block_on(f),
        other => panic!("no runtime {other:?}"),
    }
}

fn spawn_piped(role: Role, args: &[&str]) -> Child {
    multiproc_testkit::command(role, args, &[])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning a child role")
}

/// Waits for `child` (killing it past [`CHILD_LIMIT`]) while reading its
/// output; returns its lines.
fn finish(mut child: Child) -> Vec<String> {
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
        out
    });
    let status = wait_timeout(&mut child, CHILD_LIMIT);
    let out = reader.join().unwrap();
    assert!(status.success(), "child failed: {status}\n{out}");
    out.lines().map(str::to_owned).collect()
}

// ---- roles: url, prefix, name, then their own arguments ----

/// Blocking puts of `(producer, seq)` for seq in 0..count.
fn role_sync_producer(args: &[String]) {
    let (producer, count): (u32, u64) = (args[3].parse().unwrap(), args[4].parse().unwrap());
    let q: RemoteQueue<(u32, u64)> = builder(&args[0], &args[1], &args[2]).build().unwrap();
    for seq in 0..count {
        q.put((producer, seq)).unwrap();
    }
}

/// Async puts of `(producer, seq)` on the runtime `args[5]`.
fn role_async_producer(args: &[String]) {
    let (producer, count): (u32, u64) = (args[3].parse().unwrap(), args[4].parse().unwrap());
    block_on(&args[5], async {
        let q: AsyncRemoteQueue<(u32, u64)> = builder(&args[0], &args[1], &args[2])
            .build_async()
            .await
            .unwrap();
        for seq in 0..count {
            q.put((producer, seq)).await.unwrap();
        }
    });
}

/// Async gets on the runtime `args[3]` until the queue is closed and
/// drained; prints "got P S" per item.
fn role_async_consumer(args: &[String]) {
    let out = block_on(&args[3], async {
        let q: AsyncRemoteQueue<(u32, u64)> = builder(&args[0], &args[1], &args[2])
            .build_async()
            .await
            .unwrap();
        let mut out = String::new();
        loop {
            match q.get().await {
                Ok((p, s)) => out.push_str(&format!("got {p} {s}\n")),
                Err(e) if e.is_closed() => break,
                Err(e) => panic!("get failed: {e}"),
            }
        }
        out
    });
    print!("{out}");
}

/// On the runtime `args[3]`: gets `args[4]` tasks of a joinable queue,
/// finishes `args[5]` of them, says "took v" / "done v" and "holding",
/// then waits to be killed.
fn role_async_hoarder(args: &[String]) {
    let (take, done): (usize, usize) = (args[4].parse().unwrap(), args[5].parse().unwrap());
    block_on(&args[3], async {
        let q: AsyncRemoteJoinableQueue<u64> = builder(&args[0], &args[1], &args[2])
            .build_async_joinable()
            .await
            .unwrap();
        let mut took = Vec::new();
        for _ in 0..take {
            let v = q.get_timeout(Duration::from_secs(10)).await.unwrap();
            println!("took {v}");
            took.push(v);
        }
        for v in &took[..done] {
            q.task_done().await.unwrap();
            println!("done {v}");
        }
        assert_eq!(q.held_tasks(), take - done);
        println!("holding");
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    });
}

// ---- tests ----

/// A sync and an async producer process and an async consumer process on
/// `rt`: every message exactly once; in this process, async and blocking
/// handles of one queue deliver to each other.
fn producers_and_an_async_consumer_process_deliver_every_message_once(test: &str, rt: &str) {
    let Some(server) = server(test) else {
        return;
    };
    let (url, prefix) = (server.url(), fresh_prefix());
    let name = "mixed";
    let sync_q: RemoteQueue<(u32, u64)> = builder(&url, &prefix, name).build().unwrap();
    // Interoperation in one process first.
    block_on(rt, async {
        let q: AsyncRemoteQueue<(u32, u64)> =
            builder(&url, &prefix, name).build_async().await.unwrap();
        q.put((9, 1)).await.unwrap();
        assert_eq!(sync_q.get_timeout(Duration::from_secs(5)).unwrap(), (9, 1));
        sync_q.put((9, 2)).unwrap();
        assert_eq!(q.get_timeout(Duration::from_secs(5)).await.unwrap(), (9, 2));
        let err = q.try_get().await.unwrap_err();
        assert!(err.is_empty(), "{err:?}");
        q.put_bytes(&multiproc_core::codec::encode(&(9u32, 3u64)).unwrap())
            .await
            .unwrap();
        assert_eq!(q.qsize().await.unwrap(), 1);
        let bytes = q.get_bytes_timeout(Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            multiproc_core::codec::decode::<(u32, u64)>(&bytes).unwrap(),
            (9, 3)
        );
        // The handle's next operation acknowledges what its get returned.
        assert_eq!(sync_q.qsize().unwrap(), 1, "returned, not yet acknowledged");
        assert_eq!(q.qsize().await.unwrap(), 0, "acknowledged and deleted");
    });
    // Between processes.
    let count = COUNT.to_string();
    let consumer = spawn_piped(role!(role_async_consumer), &[&url, &prefix, name, rt]);
    let producers = [
        spawn_piped(
            role!(role_sync_producer),
            &[&url, &prefix, name, "0", &count],
        ),
        spawn_piped(
            role!(role_async_producer),
            &[&url, &prefix, name, "1", &count, rt],
        ),
    ];
    for p in producers {
        finish(p);
    }
    sync_q.close().unwrap();
    let mut seen = BTreeSet::new();
    for line in finish(consumer) {
        let mut parts = line.split(' ').skip(1);
        let p: u32 = parts.next().unwrap().parse().unwrap();
        let s: u64 = parts.next().unwrap().parse().unwrap();
        assert!(seen.insert((p, s)), "({p}, {s}) delivered twice");
    }
    let all: BTreeSet<(u32, u64)> = (0..2)
        .flat_map(|p| (0..COUNT).map(move |s| (p, s)))
        .collect();
    assert_eq!(seen, all, "every message once");
    assert!(sync_q.get().unwrap_err().is_closed());
    block_on(rt, async {
        let q: AsyncRemoteQueue<(u32, u64)> =
            builder(&url, &prefix, name).build_async().await.unwrap();
        assert!(q.get().await.unwrap_err().is_closed());
        assert!(q.put((0, 0)).await.unwrap_err().is_closed());
    });
    sync_q.destroy().unwrap();
}

fn on_tokio_producers_and_an_async_consumer_process_deliver_every_message_once() {
    producers_and_an_async_consumer_process_deliver_every_message_once(
        "on_tokio_producers_and_an_async_consumer_process_deliver_every_message_once",
        "tokio",
    );
}

fn on_smol_producers_and_an_async_consumer_process_deliver_every_message_once() {
    producers_and_an_async_consumer_process_deliver_every_message_once(
        "on_smol_producers_and_an_async_consumer_process_deliver_every_message_once",
        "smol",
    );
}

/// An async consumer process killed holding unfinished tasks of a joinable
/// queue: another consumer gets them after `min_idle`, the finished ones
/// never again.
fn a_killed_async_consumers_tasks_come_to_another_after_min_idle() {
    let Some(server) = server("a_killed_async_consumers_tasks_come_to_another_after_min_idle")
    else {
        return;
    };
    let (url, prefix) = (server.url(), fresh_prefix());
    let name = "hoard";
    let sync_q: RemoteQueue<u64> = builder(&url, &prefix, name).build().unwrap();
    for v in 0..5 {
        sync_q.put(v).unwrap();
    }
    for rt in ["tokio", "smol"] {
        let mut hoarder = spawn_piped(
            role!(role_async_hoarder),
            &[&url, &prefix, name, rt, "3", "1"],
        );
        let mut lines = BufReader::new(hoarder.stdout.take().unwrap()).lines();
        let (mut took, mut done) = (BTreeSet::new(), BTreeSet::new());
        loop {
            let line = lines.next().unwrap().unwrap();
            if line == "holding" {
                break;
            }
            let (what, v) = line.split_once(' ').unwrap();
            let v: u64 = v.parse().unwrap();
            match what {
                "took" => took.insert(v),
                "done" => done.insert(v),
                _ => panic!("{line}"),
            };
        }
        let held_at = Instant::now();
        hoarder.kill().unwrap();
        hoarder.wait().unwrap();
        assert_eq!((took.len(), done.len()), (3, 1), "{rt}");
        let left = sync_q.qsize().unwrap();
        // Another async consumer gets every unfinished task.
        let got: BTreeMap<u64, Duration> = block_on(rt, async {
            let q: AsyncRemoteJoinableQueue<u64> = builder(&url, &prefix, name)
                .build_async_joinable()
                .await
                .unwrap();
            let mut got = BTreeMap::new();
            while got.len() < left {
                let v = q.get_timeout(Duration::from_secs(5)).await.unwrap();
                q.task_done().await.unwrap();
                assert!(got.insert(v, held_at.elapsed()).is_none(), "{v} twice");
            }
            assert!(q.task_done().await.unwrap_err().is_unmatched());
            q.join_timeout(Duration::from_secs(2)).await.unwrap();
            got
        });
        for v in took.difference(&done) {
            assert!(got.contains_key(v), "{rt}: held task {v} came back");
            assert!(
                got[v] >= MIN_IDLE - Duration::from_millis(100),
                "{rt}: {v} came back after {:?}, before the idle time",
                got[v]
            );
        }
        for v in &done {
            assert!(!got.contains_key(v), "{rt}: finished task {v} came again");
        }
        // Refill for the next runtime.
        for v in 0..5 {
            sync_q.put(v).unwrap();
        }
    }
    sync_q.destroy().unwrap();
}

/// The server killed: timed async operations fail with `Unavailable` by
/// their deadline, a blocking get after `retry_for`; the server back, the
/// same handle works again.
fn a_killed_server_fails_async_operations_in_time_and_the_handle_recovers() {
    let Some(mut server) =
        server("a_killed_server_fails_async_operations_in_time_and_the_handle_recovers")
    else {
        return;
    };
    let (url, prefix) = (server.url(), fresh_prefix());
    for rt in ["tokio", "smol"] {
        let name = format!("outage-{rt}");
        block_on(rt, async {
            let q: AsyncRemoteQueue<u64> = outage_builder(&url, &prefix, &name)
                .build_async()
                .await
                .unwrap();
            q.put(1).await.unwrap();
            assert_eq!(q.get().await.unwrap(), 1);
            server.kill();
            let deadline = Duration::from_millis(300);
            let slack = Duration::from_millis(500);
            let start = Instant::now();
            let err = q.get_timeout(deadline).await.unwrap_err();
            assert!(err.is_unavailable(), "{rt}: {err:?}");
            assert!(
                start.elapsed() < deadline + slack,
                "{rt}: {:?}",
                start.elapsed()
            );
            let start = Instant::now();
            let err = q.put_timeout(2, deadline).await.unwrap_err();
            assert!(err.is_unavailable(), "{rt}: {err:?}");
            assert_eq!(err.into_inner(), 2, "the value handed back");
            assert!(
                start.elapsed() < deadline + slack,
                "{rt}: {:?}",
                start.elapsed()
            );
            // Blocking: after retry_for (1 s), never a hang.
            let start = Instant::now();
            let err = q.get().await.unwrap_err();
            assert!(err.is_unavailable(), "{rt}: {err:?}");
            let took = start.elapsed();
            assert!(
                took >= Duration::from_millis(900) && took < Duration::from_secs(4),
                "{rt}: {took:?}"
            );
            let err = q.qsize().await.unwrap_err();
            assert!(err.is_unavailable(), "{rt}: {err:?}");
            // Back (empty, same port): the same handle works again.
            server.restart();
            q.put_timeout(3, Duration::from_secs(3)).await.unwrap();
            assert_eq!(q.get_timeout(Duration::from_secs(3)).await.unwrap(), 3);
            assert_eq!(q.qsize().await.unwrap(), 0);
        });
    }
}

/// A get whose future is dropped mid-wait loses no message: one put after
/// the cancel comes to a later get. (At least once: had the cancelled get
/// read it on the server, it would come after `min_idle`, so the later get
/// waits longer than that.)
fn a_cancelled_async_get_loses_no_message() {
    let Some(server) = server("a_cancelled_async_get_loses_no_message") else {
        return;
    };
    let (url, prefix) = (server.url(), fresh_prefix());
    let sync_q: RemoteQueue<String> = builder(&url, &prefix, "cancel").build().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let q: AsyncRemoteQueue<String> = builder(&url, &prefix, "cancel")
            .build_async()
            .await
            .unwrap();
        for round in 0..3 {
            let cancelled = tokio::time::timeout(Duration::from_millis(150), q.get()).await;
            assert!(cancelled.is_err(), "nothing to get yet: {cancelled:?}");
            let msg = format!("after cancel {round}");
            sync_q.put(msg.clone()).unwrap();
            let got = q
                .get_timeout(MIN_IDLE + Duration::from_secs(5))
                .await
                .expect("the message put after the cancel comes (at least once)");
            assert_eq!(got, msg);
        }
        // Cancelled while a message is there: it is got or comes again.
        sync_q.put("raced".to_owned()).unwrap();
        let first = tokio::time::timeout(Duration::from_micros(1), q.get()).await;
        if !matches!(&first, Ok(Ok(m)) if m == "raced") {
            let again = q
                .get_timeout(MIN_IDLE + Duration::from_secs(5))
                .await
                .expect("the raced message comes (at least once)");
            assert_eq!(again, "raced");
        }
        assert_eq!(q.qsize().await.unwrap(), 0, "every message acknowledged");
    });
    assert_eq!(sync_q.qsize().unwrap(), 0);
    sync_q.destroy().unwrap();
}

fn a_message_returned_just_before_its_handle_is_dropped_comes_again() {
    let Some(server) = server("a_message_returned_just_before_its_handle_is_dropped_comes_again")
    else {
        return;
    };
    let (url, prefix) = (server.url(), fresh_prefix());
    let sync_q: RemoteQueue<u64> = builder(&url, &prefix, "dropped").build().unwrap();
    sync_q.put(7).unwrap();
    block_on("tokio", async {
        let q: AsyncRemoteQueue<u64> = builder(&url, &prefix, "dropped")
            .build_async()
            .await
            .unwrap();
        assert_eq!(q.get().await.unwrap(), 7);
        // Dropped with nothing after the get: no acknowledgement went out,
        // so the message is pending, never lost.
    });
    let start = std::time::Instant::now();
    assert_eq!(
        sync_q
            .get_timeout(MIN_IDLE + Duration::from_secs(5))
            .unwrap(),
        7
    );
    assert!(start.elapsed() >= MIN_IDLE / 2, "{:?}", start.elapsed());
    assert_eq!(sync_q.qsize().unwrap(), 0);
    sync_q.destroy().unwrap();
}

fn an_async_handle_idle_through_a_server_restart_works_at_once() {
    let Some(mut server) = server("an_async_handle_idle_through_a_server_restart_works_at_once")
    else {
        return;
    };
    let (url, prefix) = (server.url(), fresh_prefix());
    for rt in ["tokio", "smol"] {
        block_on(rt, async {
            let q: AsyncRemoteQueue<u64> = builder(&url, &prefix, rt).build_async().await.unwrap();
            q.put(1).await.unwrap();
            assert_eq!(q.get().await.unwrap(), 1);
            // The server goes and comes back while the handle does nothing.
            server.kill();
            server.restart();
            std::thread::sleep(Duration::from_millis(1100));
            q.put(2).await.unwrap();
            assert_eq!(q.get().await.unwrap(), 2);
            assert_eq!(q.qsize().await.unwrap(), 0);
        });
    }
}

fn main() {
    let roles: &[Role] = &[
        role!(role_sync_producer),
        role!(role_async_producer),
        role!(role_async_consumer),
        role!(role_async_hoarder),
    ];
    run(
        roles,
        tests![
            on_tokio_producers_and_an_async_consumer_process_deliver_every_message_once,
            on_smol_producers_and_an_async_consumer_process_deliver_every_message_once,
            a_killed_async_consumers_tasks_come_to_another_after_min_idle,
            a_killed_server_fails_async_operations_in_time_and_the_handle_recovers,
            a_cancelled_async_get_loses_no_message,
            a_message_returned_just_before_its_handle_is_dropped_comes_again,
            an_async_handle_idle_through_a_server_restart_works_at_once,
        ],
    );
}
