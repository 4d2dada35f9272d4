//! Remote queues against a real `redis-server` (each test starts its own on
//! a free loopback port, with a key prefix of its own, and kills it at the
//! end) and real processes (the test binary re-executes itself in a role,
//! see `multiproc-testkit`). Without `redis-server` the tests say loudly
//! that they skipped, except in CI (`CI` set), where they fail.

use multiproc_redis::{DeadReason, RemoteError, RemoteJoinableQueue, RemoteQueue};
use multiproc_testkit::{RedisServer, Role, role, run, tests, unique_name, wait_timeout};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const CHILD_LIMIT: Duration = Duration::from_secs(60);
/// `min_idle` of the tests' queues: how long a dead consumer's message
/// waits before another consumer takes it over.
const MIN_IDLE: Duration = Duration::from_millis(300);

fn server(test: &str) -> Option<RedisServer> {
    RedisServer::start_or_skip(test)
}

/// A key prefix no other test (or run) uses.
fn fresh_prefix() -> String {
    format!("{}:", unique_name("rq"))
}

/// The queue settings every process of a test uses: short idle and block
/// times so that re-delivery and failures show within a second or two.
/// A queue handle for a test whose server stays up: generous network
/// bounds, so a busy machine (a slow connect, a late reply) fails nothing.
fn builder(url: &str, prefix: &str, name: &str) -> multiproc_redis::RemoteQueueBuilder {
    RemoteQueue::builder(url, name)
        .prefix(prefix)
        .min_idle(MIN_IDLE)
        .block(Duration::from_millis(100))
        .connect_timeout(Duration::from_secs(5))
        .io_timeout(Duration::from_secs(5))
        .retry_for(Duration::from_secs(10))
}

/// A queue handle for a test that takes the server away: tight bounds,
/// which the test checks.
fn outage_builder(url: &str, prefix: &str, name: &str) -> multiproc_redis::RemoteQueueBuilder {
    builder(url, prefix, name)
        .connect_timeout(Duration::from_millis(500))
        .io_timeout(Duration::from_secs(2))
        .retry_for(Duration::from_secs(1))
}

/// The role arguments: url, prefix, name, then the role's own.
fn queue_args(args: &[String]) -> (&str, &str, &str, &[String]) {
    (&args[0], &args[1], &args[2], &args[3..])
}

fn raw(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap()
}

/// Starts `role` with stdout piped, for the parent to read lines from.
/// Reads `child`'s lines `<word> <number>` until it says `holding`.
fn report_until_holding(child: &mut Child) -> Vec<(String, u64)> {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut report = Vec::new();
    loop {
        let line = lines.next().unwrap().unwrap();
        if line == "holding" {
            return report;
        }
        let (what, v) = line.split_once(' ').unwrap();
        report.push((what.to_owned(), v.parse().unwrap()));
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
/// output, so that a full pipe never stalls it; returns its lines.
fn finish(mut child: Child) -> Vec<String> {
    let (status, out) = output(&mut child);
    assert!(status.success(), "child failed: {status}\n{out}");
    out.lines().map(str::to_owned).collect()
}

fn output(child: &mut Child) -> (std::process::ExitStatus, String) {
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
        out
    });
    let status = wait_timeout(child, CHILD_LIMIT);
    (status, reader.join().unwrap())
}

/// Reads lines from `child` until one starts with `marker`; returns it.
fn read_until(lines: &mut impl Iterator<Item = std::io::Result<String>>, marker: &str) -> String {
    for line in lines {
        let line = line.expect("reading a child's output");
        if line.starts_with(marker) {
            return line;
        }
    }
    panic!("child ended before saying {marker:?}");
}

// ---- roles ----

/// Puts `(producer, seq)` for seq in 0..count, then prints "done".
fn role_producer(args: &[String]) {
    let (url, prefix, name, rest) = queue_args(args);
    let (producer, count): (u32, u64) = (rest[0].parse().unwrap(), rest[1].parse().unwrap());
    let q: RemoteQueue<(u32, u64)> = builder(url, prefix, name).build().unwrap();
    for seq in 0..count {
        q.put((producer, seq)).unwrap();
    }
    println!("done");
}

/// Gets until the queue is closed and drained; prints "got P S" per item.
fn role_consumer(args: &[String]) {
    let (url, prefix, name, _) = queue_args(args);
    let q: RemoteQueue<(u32, u64)> = builder(url, prefix, name).build().unwrap();
    let mut out = String::new();
    loop {
        match q.get() {
            Ok((p, s)) => out.push_str(&format!("got {p} {s}\n")),
            Err(e) if e.is_closed() => break,
            Err(e) => panic!("get failed: {e}"),
        }
    }
    print!("{out}");
}

/// Gets `n` items of a joinable queue without `task_done`, prints them,
/// says "holding", and waits to be killed.
fn role_hoarder(args: &[String]) {
    let (url, prefix, name, rest) = queue_args(args);
    let n: usize = rest[0].parse().unwrap();
    let q: RemoteJoinableQueue<u64> = builder(url, prefix, name).build_joinable().unwrap();
    for _ in 0..n {
        let v = q.get_timeout(Duration::from_secs(10)).unwrap();
        println!("took {v}");
    }
    println!("holding");
    std::thread::sleep(CHILD_LIMIT);
}

/// Takes one message with a raw `XREADGROUP` in the queue's group, as a
/// consumer that dies between its read and its `XACK` would, prints it,
/// and waits to be killed.
fn role_raw_reader(args: &[String]) {
    let (url, _, _, rest) = queue_args(args);
    let stream = &rest[0];
    let mut con = raw(url);
    let reply: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("multiproc")
        .arg("doomed")
        .arg("COUNT")
        .arg(1)
        .arg("BLOCK")
        .arg(5000)
        .arg("STREAMS")
        .arg(stream)
        .arg(">")
        .query(&mut con)
        .unwrap();
    assert!(!matches!(reply, redis::Value::Nil), "nothing to read");
    println!("read");
    std::thread::sleep(CHILD_LIMIT);
}

/// Gets one item of a joinable queue, says "got V", and kills itself
/// before `task_done`; if nothing comes within 3 s, says "none".
fn role_dies_holding(args: &[String]) {
    let (url, prefix, name, rest) = queue_args(args);
    let max: u32 = rest[0].parse().unwrap();
    let q: RemoteJoinableQueue<String> = builder(url, prefix, name)
        .max_deliveries(max)
        .build_joinable()
        .unwrap();
    match q.get_timeout(Duration::from_secs(3)) {
        Ok(v) => {
            println!("got {v}");
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::KILL,
            );
            unreachable!("killed itself");
        }
        Err(e) if e.is_timeout() => println!("none"),
        Err(e) => panic!("get failed: {e}"),
    }
}

/// Blocks in a plain `get` on an empty queue; prints what it returned and
/// after how long.
fn role_blocked_getter(args: &[String]) {
    let (url, prefix, name, _) = queue_args(args);
    let q: RemoteQueue<u64> = outage_builder(url, prefix, name).build().unwrap();
    println!("ready");
    let start = Instant::now();
    let r = q.get();
    let ms = start.elapsed().as_millis();
    match r {
        Err(e) if e.is_unavailable() => println!("unavailable {ms}"),
        other => println!("other {other:?} {ms}"),
    }
}

/// Puts into a full bounded queue and prints how long the put waited.
fn role_blocked_putter(args: &[String]) {
    let (url, prefix, name, rest) = queue_args(args);
    let maxsize: usize = rest[0].parse().unwrap();
    let q: RemoteQueue<u64> = builder(url, prefix, name).maxsize(maxsize).build().unwrap();
    println!("ready");
    let start = Instant::now();
    q.put(99).unwrap();
    println!("put {}", start.elapsed().as_millis());
}

/// Joinable worker: gets until closed, squares, puts into the results
/// queue, `task_done`.
fn role_worker(args: &[String]) {
    let (url, prefix, name, _) = queue_args(args);
    let jobs: RemoteJoinableQueue<u64> = builder(url, prefix, name).build_joinable().unwrap();
    let results: RemoteQueue<u64> = builder(url, prefix, &format!("{name}-results"))
        .build()
        .unwrap();
    loop {
        match jobs.get() {
            Ok(n) => {
                std::thread::sleep(Duration::from_millis(2));
                results.put(n * n).unwrap();
                jobs.task_done().unwrap();
            }
            Err(e) if e.is_closed() => break,
            Err(e) => panic!("get failed: {e}"),
        }
    }
}

/// Takes `max` items of a joinable queue with one `get_many`, finishes
/// the first `done` of them, prints "took V" for each and "done V" for the
/// finished ones, says "holding", and waits to be killed.
fn role_batch_hoarder(args: &[String]) {
    let (url, prefix, name, rest) = queue_args(args);
    let (max, done): (usize, usize) = (rest[0].parse().unwrap(), rest[1].parse().unwrap());
    let q: RemoteJoinableQueue<u64> = builder(url, prefix, name).build_joinable().unwrap();
    let got = q.get_many(max, Duration::from_secs(10)).unwrap();
    assert_eq!(got.len(), max, "the whole batch was there");
    for v in &got {
        println!("took {v}");
    }
    for v in &got[..done] {
        q.task_done().unwrap();
        println!("done {v}");
    }
    assert_eq!(q.held_tasks(), max - done);
    println!("holding");
    std::thread::sleep(CHILD_LIMIT);
}

/// Gets `n` items of a plain queue with read-ahead `ahead` (so it holds
/// up to `ahead - n` more, read and not handed out), prints "got V" for
/// each, says "holding", and waits to be killed.
fn role_ahead_holder(args: &[String]) {
    let (url, prefix, name, rest) = queue_args(args);
    let (ahead, n): (usize, usize) = (rest[0].parse().unwrap(), rest[1].parse().unwrap());
    let q: RemoteQueue<u64> = builder(url, prefix, name)
        .read_ahead(ahead)
        .build()
        .unwrap();
    for _ in 0..n {
        let v = q.get_timeout(Duration::from_secs(10)).unwrap();
        println!("got {v}");
    }
    println!("holding");
    std::thread::sleep(CHILD_LIMIT);
}

// ---- tests ----

fn batches_are_put_whole_within_maxsize_or_not_at_all() {
    let Some(server) = server("batches_are_put_whole_within_maxsize_or_not_at_all") else {
        return;
    };
    let (url, prefix) = (server.url(), fresh_prefix());
    let q: RemoteQueue<u64> = builder(&url, &prefix, "batch").maxsize(5).build().unwrap();
    q.put_many(&[]).unwrap();
    q.put_many(&[1, 2, 3]).unwrap();
    assert_eq!(q.qsize().unwrap(), 3);
    // No room for three more: nothing of the batch is added.
    let err = q.try_put_many(&[4, 5, 6]).unwrap_err();
    assert!(err.is_full(), "{err:?}");
    assert_eq!(err.into_inner(), &[4, 5, 6]);
    let start = Instant::now();
    let err = q
        .put_many_timeout(&[4, 5, 6], Duration::from_millis(150))
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(start.elapsed() >= Duration::from_millis(150));
    assert_eq!(q.qsize().unwrap(), 3, "no part of a batch over the bound");
    // A batch longer than maxsize can never fit: typed error at once.
    let start = Instant::now();
    let err = q.put_many(&[0; 6]).unwrap_err();
    let failure = err.failure().expect("failed");
    assert!(failure.is_over_maxsize(), "{err:?}");
    assert!(matches!(
        failure,
        RemoteError::OverMaxsize { len: 6, maxsize: 5 }
    ));
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(err.into_inner().len(), 6);
    // Exactly up to the bound.
    q.put_many(&[4, 5]).unwrap();
    assert_eq!(q.qsize().unwrap(), 5);
    assert!(q.try_put(6).unwrap_err().is_full());
    assert!(q.get_many(0, Duration::ZERO).unwrap().is_empty());
    assert_eq!(
        q.get_many(10, Duration::from_secs(2)).unwrap(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(q.qsize().unwrap(), 0, "a plain get_many acknowledges all");
    // A message over the limit fails the batch, nothing added.
    let small: RemoteQueue<()> = builder(&url, &prefix, "batch")
        .max_message(16)
        .build()
        .unwrap();
    let (fits, over) = ([0u8; 4], [0u8; 64]);
    let batch = [&fits[..], &over[..]];
    let err = small.put_many_bytes(&batch).unwrap_err();
    assert!(err.failure().unwrap().is_too_large(), "{err:?}");
    assert_eq!(q.qsize().unwrap(), 0);
    // Concurrent batches: never over the bound, never interleaved.
    let threads: Vec<_> = (0..3u64)
        .map(|t| {
            let q = q.clone();
            std::thread::spawn(move || {
                for b in 0..10u64 {
                    let base = t * 1000 + b * 10;
                    q.put_many(&[base, base + 1, base + 2]).unwrap();
                }
            })
        })
        .collect();
    let mut got = Vec::new();
    while got.len() < 90 {
        assert!(q.qsize().unwrap() <= 5);
        got.extend(q.get_many(4, Duration::from_secs(5)).unwrap());
    }
    for t in threads {
        t.join().unwrap();
    }
    for run in got.chunks(3) {
        assert_eq!(run, [run[0], run[0] + 1, run[0] + 2], "{got:?}");
    }
    let distinct: BTreeSet<u64> = got.iter().copied().collect();
    assert_eq!(distinct.len(), 90);
    // Closed: a batch is refused whole and handed back.
    q.close().unwrap();
    let err = q.put_many(&[7, 8]).unwrap_err();
    assert!(err.is_closed());
    assert_eq!(err.into_inner(), &[7, 8]);
    assert!(
        q.get_many(3, Duration::from_millis(100))
            .unwrap_err()
            .is_closed()
    );
    q.destroy().unwrap();
}

fn get_many_delivers_each_message_as_a_single_get_would() {
    let Some(server) = server("get_many_delivers_each_message_as_a_single_get_would") else {
        return;
    };
    let (url, prefix) = (server.url(), fresh_prefix());
    let name = "many";
    let q: RemoteJoinableQueue<u64> = builder(&url, &prefix, name).build_joinable().unwrap();
    // Joinable, in one process: each message pending until its task_done.
    q.put_many(&[10, 11, 12]).unwrap();
    assert_eq!(q.get_many(8, Duration::from_secs(2)).unwrap(), [10, 11, 12]);
    assert_eq!(q.held_tasks(), 3);
    assert_eq!(q.unfinished_tasks().unwrap(), 3);
    q.task_done().unwrap();
    assert_eq!(q.unfinished_tasks().unwrap(), 2);
    q.task_done().unwrap();
    q.task_done().unwrap();
    assert!(q.task_done().unwrap_err().is_unmatched());
    q.join_timeout(Duration::from_secs(1)).unwrap();
    // A process takes six with one get_many, finishes two, is killed.
    let values: Vec<u64> = (0..10).collect();
    q.put_many(&values).unwrap();
    let mut hoarder = spawn_piped(role!(role_batch_hoarder), &[&url, &prefix, name, "6", "2"]);
    let (mut took, mut done) = (BTreeSet::new(), BTreeSet::new());
    for (what, v) in report_until_holding(&mut hoarder) {
        match what.as_str() {
            "took" => took.insert(v),
            "done" => done.insert(v),
            _ => panic!("{what} {v}"),
        };
    }
    let held_at = Instant::now();
    hoarder.kill().unwrap();
    hoarder.wait().unwrap();
    assert_eq!((took.len(), done.len()), (6, 2));
    assert_eq!(
        took.iter().copied().collect::<Vec<_>>(),
        (0..6).collect::<Vec<_>>()
    );
    // The others come: four never taken at once, the four taken and not
    // finished after the idle time; the two finished never again.
    let mut got = BTreeMap::new();
    while got.len() < 8 {
        for v in q
            .get_many(10, Duration::from_secs(5))
            .expect("every message comes")
        {
            q.task_done().unwrap();
            assert!(got.insert(v, held_at.elapsed()).is_none(), "{v} twice");
        }
    }
    let expected: BTreeSet<u64> = (0..10).filter(|v| !done.contains(v)).collect();
    assert_eq!(got.keys().copied().collect::<BTreeSet<_>>(), expected);
    for v in took.difference(&done) {
        assert!(
            got[v] >= MIN_IDLE - Duration::from_millis(100),
            "{v} came back after {:?}, before the idle time",
            got[v]
        );
    }
    q.join_timeout(Duration::from_secs(2)).unwrap();
    assert!(q.try_get().unwrap_err().is_empty());
    assert_eq!(q.dead_letter_count().unwrap(), 0);
    // A large plain batch: one read, one acknowledgement of 2500 ids
    // (the script takes them 1000 at a time); `max` is capped at MAX_BATCH.
    let bulk: RemoteQueue<u64> = builder(&url, &prefix, "bulk").build().unwrap();
    let values: Vec<u64> = (0..2500).collect();
    bulk.put_many(&values).unwrap();
    let got = bulk.get_many(usize::MAX, Duration::from_secs(5)).unwrap();
    assert_eq!(got, values);
    assert_eq!(
        bulk.qsize().unwrap(),
        0,
        "all 2500 acknowledged and deleted"
    );
    q.destroy().unwrap();
    bulk.destroy().unwrap();
}

fn a_killed_consumers_read_ahead_messages_all_arrive_elsewhere() {
    let Some(server) = server("a_killed_consumers_read_ahead_messages_all_arrive_elsewhere") else {
        return;
    };
    let (url, prefix) = (server.url(), fresh_prefix());
    let name = "ahead";
    let q: RemoteQueue<u64> = builder(&url, &prefix, name).build().unwrap();
    let values: Vec<u64> = (0..40).collect();
    q.put_many(&values).unwrap();
    // A consumer reads 16 ahead, hands out 3, and is SIGKILLed holding 13.
    let mut holder = spawn_piped(role!(role_ahead_holder), &[&url, &prefix, name, "16", "3"]);
    let handed_out: BTreeSet<u64> = report_until_holding(&mut holder)
        .into_iter()
        .map(|(what, v)| {
            assert_eq!(what, "got");
            v
        })
        .collect();
    let held_at = Instant::now();
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(handed_out, (0..3).collect::<BTreeSet<_>>());
    // Another consumer (this process, reading ahead too) gets everything
    // the dead one did not hand out: 24 at once, 13 after the idle time.
    let other: RemoteQueue<u64> = builder(&url, &prefix, name).read_ahead(8).build().unwrap();
    let mut got: BTreeMap<u64, Duration> = BTreeMap::new();
    let mut again = Vec::new();
    // Until nothing is missing and nothing is left unacknowledged (a
    // handed-out message whose acknowledgement died with the process
    // comes back after the idle time).
    while (0..40).any(|v| !handed_out.contains(&v) && !got.contains_key(&v))
        || other.qsize().unwrap() > 0
    {
        let v = other
            .get_timeout(Duration::from_secs(5))
            .expect("none lost");
        assert!(
            got.insert(v, held_at.elapsed()).is_none(),
            "{v} delivered twice to a live consumer"
        );
        // Allowed only for a message handed out (its acknowledgement may
        // have died with the process).
        if handed_out.contains(&v) {
            again.push(v);
        }
    }
    for v in 3..16 {
        assert!(
            got[&v] >= MIN_IDLE - Duration::from_millis(100),
            "{v}, read ahead by the dead consumer, came after {:?}",
            got[&v]
        );
    }
    eprintln!("    handed out then re-delivered: {again:?}");
    assert_eq!(other.qsize().unwrap(), 0);
    assert_eq!(other.dead_letter_count().unwrap(), 0);
    // Read-ahead messages not handed out in time go back to the group,
    // and dropping a handle gives back what it holds: both come at once.
    q.put_many(&[100, 101, 102]).unwrap();
    let slow: RemoteQueue<u64> = builder(&url, &prefix, name).read_ahead(3).build().unwrap();
    assert_eq!(slow.get_timeout(Duration::from_secs(2)).unwrap(), 100);
    std::thread::sleep(MIN_IDLE / 2);
    // Its next get gives 101 and 102 back, then takes them over again.
    let start = Instant::now();
    assert_eq!(slow.get_timeout(Duration::from_secs(2)).unwrap(), 101);
    assert!(start.elapsed() < MIN_IDLE, "{:?}", start.elapsed());
    drop(slow);
    let start = Instant::now();
    assert_eq!(other.get_timeout(Duration::from_secs(2)).unwrap(), 102);
    assert!(start.elapsed() < MIN_IDLE, "{:?}", start.elapsed());
    assert_eq!(other.qsize().unwrap(), 0);
    assert_eq!(other.dead_letter_count().unwrap(), 0);
    q.destroy().unwrap();
}

fn batches_give_typed_errors_when_the_server_goes_away() {
    let Some(mut server) = server("batches_give_typed_errors_when_the_server_goes_away") else {
        return;
    };
    let (url, prefix) = (server.url(), fresh_prefix());
    let q: RemoteQueue<u64> = outage_builder(&url, &prefix, "outage-batch")
        .read_ahead(4)
        .build()
        .unwrap();
    q.put_many(&[1, 2, 3, 4]).unwrap();
    assert_eq!(q.get().unwrap(), 1, "three more read ahead");
    server.kill();
    // What was read ahead is handed out without the server.
    assert_eq!(q.get_many(2, Duration::from_millis(300)).unwrap(), [2, 3]);
    assert_eq!(q.get_timeout(Duration::from_millis(300)).unwrap(), 4);
    let start = Instant::now();
    let err = q
        .put_many_timeout(&[5, 6], Duration::from_millis(300))
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert_eq!(err.into_inner(), &[5, 6]);
    assert!(
        start.elapsed() < Duration::from_millis(800),
        "{:?}",
        start.elapsed()
    );
    let start = Instant::now();
    let err = q.get_many(8, Duration::from_millis(300)).unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        start.elapsed() < Duration::from_millis(800),
        "{:?}",
        start.elapsed()
    );
    let err = q.get_many_bytes(8, Duration::from_millis(300)).unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let err = q.try_put_many_bytes(&[b"x"]).unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let start = Instant::now();
    assert!(q.put_many(&[7]).unwrap_err().is_unavailable());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // Back (empty, same port): the same handle works again.
    server.restart();
    q.put_many_timeout(&[8, 9], Duration::from_secs(3)).unwrap();
    assert_eq!(q.get_many(8, Duration::from_secs(3)).unwrap(), [8, 9]);
    assert_eq!(q.qsize().unwrap(), 0);
    q.destroy().unwrap();
}

fn one_process_basics_match_the_local_queue() {
    let Some(server) = server("one_process_basics_match_the_local_queue") else {
        return;
    };
    let prefix = fresh_prefix();
    let q: RemoteQueue<String> = builder(&server.url(), &prefix, "basics").build().unwrap();
    assert!(q.is_empty().unwrap());
    q.put("hello".to_owned()).unwrap();
    q.put_bytes(&multiproc_core::codec::encode("world").unwrap())
        .unwrap();
    assert_eq!(q.qsize().unwrap(), 2);
    assert_eq!(q.get().unwrap(), "hello");
    assert_eq!(
        q.qsize().unwrap(),
        1,
        "an acknowledged message leaves the stream"
    );
    let bytes = q.get_bytes().unwrap();
    assert_eq!(
        multiproc_core::codec::decode::<String>(&bytes).unwrap(),
        "world"
    );
    assert!(q.try_get().unwrap_err().is_empty());
    let start = Instant::now();
    assert!(
        q.get_timeout(Duration::from_millis(150))
            .unwrap_err()
            .is_timeout()
    );
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_secs(1),
        "{waited:?}"
    );
    // Another handle is another consumer of the same queue.
    let other = q.clone();
    assert_ne!(other.consumer_name(), q.consumer_name());
    q.put("to the other".to_owned()).unwrap();
    assert_eq!(
        other.get_timeout(Duration::from_secs(2)).unwrap(),
        "to the other"
    );
    // Close: puts fail and hand the value back, gets drain then fail.
    q.put("last".to_owned()).unwrap();
    q.close().unwrap();
    assert!(other.is_closed().unwrap());
    let err = q.put("late".to_owned()).unwrap_err();
    assert!(err.is_closed());
    assert_eq!(err.into_inner(), "late");
    assert_eq!(other.get().unwrap(), "last");
    assert!(other.get().unwrap_err().is_closed());
    assert!(q.try_get().unwrap_err().is_closed());
    // Joinable: unfinished until task_done, task_done without a task fails.
    let j: RemoteJoinableQueue<u32> = builder(&server.url(), &prefix, "basics-j")
        .build_joinable()
        .unwrap();
    assert!(j.task_done().unwrap_err().is_unmatched());
    j.put(1).unwrap();
    j.put(2).unwrap();
    assert_eq!(j.get().unwrap(), 1);
    assert_eq!(j.unfinished_tasks().unwrap(), 2);
    assert!(
        j.join_timeout(Duration::from_millis(30))
            .unwrap_err()
            .is_timeout()
    );
    j.task_done().unwrap();
    assert_eq!(j.unfinished_tasks().unwrap(), 1);
    assert_eq!(j.get().unwrap(), 2);
    assert_eq!(j.held_tasks(), 1);
    j.task_done().unwrap();
    j.join_timeout(Duration::from_secs(1)).unwrap();
    j.join().unwrap();
    // Config errors are typed, before any network.
    let bad = RemoteQueue::builder(&server.url(), "a{b}")
        .build::<u8>()
        .unwrap_err();
    assert!(bad.is_invalid_config(), "{bad:?}");
    let bad = RemoteQueue::builder("nonsense://x", "q")
        .build::<u8>()
        .unwrap_err();
    assert!(bad.is_invalid_config(), "{bad:?}");
    assert_eq!(bad.to_string(), "invalid redis url");
    let bad = builder(&server.url(), &prefix, "q")
        .max_deliveries(0)
        .build::<u8>()
        .unwrap_err();
    assert!(matches!(bad, RemoteError::InvalidConfig(_)));
    q.destroy().unwrap();
    j.destroy().unwrap();
}

/// Producer and consumer processes; the parent closes the queue when the
/// producers are done, the consumers drain and report every item.
fn exchange(producers: u32, consumers: u32, per_producer: u64, test: &str) {
    let Some(server) = server(test) else {
        return;
    };
    let (url, prefix) = (server.url(), fresh_prefix());
    let name = "exchange";
    let q: RemoteQueue<(u32, u64)> = builder(&url, &prefix, name).build().unwrap();
    let count = per_producer.to_string();
    let consumer_children: Vec<Child> = (0..consumers)
        .map(|_| spawn_piped(role!(role_consumer), &[&url, &prefix, name]))
        .collect();
    let producer_children: Vec<Child> = (0..producers)
        .map(|p| {
            spawn_piped(
                role!(role_producer),
                &[&url, &prefix, name, &p.to_string(), &count],
            )
        })
        .collect();
    for child in producer_children {
        assert_eq!(finish(child), ["done"]);
    }
    q.close().unwrap();
    let mut seen: BTreeMap<(u32, u64), u32> = BTreeMap::new();
    let mut per_consumer = Vec::new();
    for child in consumer_children {
        let lines = finish(child);
        per_consumer.push(lines.len());
        let mut last: BTreeMap<u32, u64> = BTreeMap::new();
        for line in lines {
            let mut parts = line.split_whitespace().skip(1);
            let p: u32 = parts.next().unwrap().parse().unwrap();
            let s: u64 = parts.next().unwrap().parse().unwrap();
            // Each consumer sees each producer's items in put order.
            if let Some(prev) = last.insert(p, s) {
                assert!(s > prev, "producer {p}: {s} after {prev}");
            }
            *seen.entry((p, s)).or_default() += 1;
        }
    }
    let expected = u64::from(producers) * per_producer;
    assert_eq!(seen.len() as u64, expected, "every item arrived");
    assert!(seen.values().all(|&n| n == 1), "no item twice: {seen:?}");
    assert!(seen.keys().all(|&(p, s)| p < producers && s < per_producer));
    assert_eq!(q.qsize().unwrap(), 0);
    assert_eq!(q.dead_letter_count().unwrap(), 0);
    eprintln!("    {producers}→{consumers}: {expected} items, per consumer {per_consumer:?}");
    q.destroy().unwrap();
}

fn one_to_one_processes_deliver_every_message_once() {
    exchange(
        1,
        1,
        2000,
        "one_to_one_processes_deliver_every_message_once",
    );
}

fn two_to_two_processes_deliver_every_message_once() {
    exchange(
        2,
        2,
        1500,
        "two_to_two_processes_deliver_every_message_once",
    );
}

fn a_killed_consumers_messages_are_redelivered_after_the_idle_time() {
    let Some(server) = server("a_killed_consumers_messages_are_redelivered_after_the_idle_time")
    else {
        return;
    };
    let (url, prefix) = (server.url(), fresh_prefix());
    let name = "redeliver";
    let q: RemoteJoinableQueue<u64> = builder(&url, &prefix, name).build_joinable().unwrap();
    for v in 0..10u64 {
        q.put(v).unwrap();
    }
    // A consumer takes four, never finishes them, and is SIGKILLed.
    let mut hoarder = spawn_piped(role!(role_hoarder), &[&url, &prefix, name, "4"]);
    let held: BTreeSet<u64> = report_until_holding(&mut hoarder)
        .into_iter()
        .map(|(what, v)| {
            assert_eq!(what, "took");
            v
        })
        .collect();
    let held_at = Instant::now();
    hoarder.kill().unwrap();
    hoarder.wait().unwrap();
    assert_eq!(held.len(), 4);
    // Another consumer (this process) gets everything: the six left at
    // once, the four held after the idle time.
    let mut got = BTreeMap::new();
    while got.len() < 10 {
        let v = q
            .get_timeout(Duration::from_secs(5))
            .expect("every message comes");
        q.task_done().unwrap();
        got.insert(v, held_at.elapsed());
    }
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    for v in &held {
        // min_idle counts from the hoarder's read, a little before held_at.
        assert!(
            got[v] >= MIN_IDLE - Duration::from_millis(100),
            "{v} came back after {:?}, before the idle time",
            got[v]
        );
    }
    q.join_timeout(Duration::from_secs(2)).unwrap();
    assert!(
        q.try_get().unwrap_err().is_empty(),
        "nothing delivered a third time"
    );
    // The plain queue: a consumer dying between XREADGROUP and XACK (here
    // a raw reader of the same group) leaves the message for the others.
    let plain: RemoteQueue<String> = builder(&url, &prefix, "window").build().unwrap();
    let mut reader = spawn_piped(
        role!(role_raw_reader),
        &[&url, &prefix, "window", plain.stream_key()],
    );
    let mut lines = BufReader::new(reader.stdout.take().unwrap()).lines();
    plain.put("in the window".to_owned()).unwrap();
    read_until(&mut lines, "read");
    reader.kill().unwrap();
    reader.wait().unwrap();
    assert!(
        plain.try_get().unwrap_err().is_empty(),
        "held by the dead reader"
    );
    let start = Instant::now();
    assert_eq!(
        plain.get_timeout(Duration::from_secs(5)).unwrap(),
        "in the window"
    );
    assert!(start.elapsed() >= MIN_IDLE / 2, "{:?}", start.elapsed());
    assert_eq!(plain.qsize().unwrap(), 0);
    q.destroy().unwrap();
    plain.destroy().unwrap();
}

fn a_poison_message_is_dead_lettered_after_max_deliveries() {
    let Some(server) = server("a_poison_message_is_dead_lettered_after_max_deliveries") else {
        return;
    };
    let (url, prefix) = (server.url(), fresh_prefix());
    let name = "poison";
    const MAX: u32 = 3;
    let q: RemoteJoinableQueue<String> = builder(&url, &prefix, name)
        .max_deliveries(MAX)
        .build_joinable()
        .unwrap();
    q.put("poison".to_owned()).unwrap();
    // Consumers that die holding it, one after the other, until one finds
    // nothing to get.
    let mut deaths = 0;
    loop {
        let mut child = spawn_piped(
            role!(role_dies_holding),
            &[&url, &prefix, name, &MAX.to_string()],
        );
        let (status, out) = output(&mut child);
        if out.trim() == "none" {
            assert!(status.success());
            break;
        }
        assert_eq!(out.trim(), "got poison", "{status}");
        assert!(!status.success(), "the consumer killed itself");
        deaths += 1;
        assert!(deaths <= MAX, "delivered more than {MAX} times");
    }
    assert_eq!(deaths, MAX, "delivered exactly max_deliveries times");
    assert_eq!(q.qsize().unwrap(), 0, "out of the queue");
    assert_eq!(q.dead_letter_count().unwrap(), 1);
    let peek = q.dead_letters(10).unwrap();
    assert_eq!(peek.len(), 1);
    let letter = q.take_dead_letter().unwrap().expect("a dead letter");
    assert_eq!(letter, peek[0]);
    assert_eq!(letter.reason(), DeadReason::TooManyDeliveries);
    assert_eq!(letter.deliveries(), u64::from(MAX));
    assert_eq!(letter.decode::<String>().unwrap(), "poison");
    assert!(q.take_dead_letter().unwrap().is_none());
    q.join_timeout(Duration::from_secs(1)).unwrap();
    q.destroy().unwrap();
}

fn a_killed_server_gives_typed_errors_in_time_and_the_queue_recovers() {
    let Some(mut server) =
        server("a_killed_server_gives_typed_errors_in_time_and_the_queue_recovers")
    else {
        return;
    };
    let (url, prefix) = (server.url(), fresh_prefix());
    let name = "outage";
    let q: RemoteQueue<u64> = outage_builder(&url, &prefix, name).build().unwrap();
    q.put(1).unwrap();
    assert_eq!(q.get().unwrap(), 1);
    // A process blocked in a plain get when the server dies.
    let mut getter = spawn_piped(role!(role_blocked_getter), &[&url, &prefix, name]);
    let mut lines = BufReader::new(getter.stdout.take().unwrap()).lines();
    read_until(&mut lines, "ready");
    std::thread::sleep(Duration::from_millis(200));
    server.kill();
    let killed = Instant::now();
    // Timed operations fail by their deadline (plus the 50 ms floor).
    let start = Instant::now();
    let err = q.put_timeout(2, Duration::from_millis(300)).unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert_eq!(err.into_inner(), 2);
    assert!(
        start.elapsed() < Duration::from_millis(800),
        "{:?}",
        start.elapsed()
    );
    let start = Instant::now();
    let err = q.get_timeout(Duration::from_millis(300)).unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let waited = start.elapsed();
    assert!(waited < Duration::from_millis(800), "{waited:?}");
    assert!(matches!(
        err.failure(),
        Some(RemoteError::Unavailable { .. })
    ));
    assert!(
        std::error::Error::source(err.failure().unwrap()).is_some(),
        "source kept"
    );
    // Blocking ones after retry_for (1 s here).
    let start = Instant::now();
    assert!(q.put(3).unwrap_err().is_unavailable());
    assert!(q.get().unwrap_err().is_unavailable());
    assert!(q.qsize().unwrap_err().is_unavailable());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(q.try_get().unwrap_err().is_unavailable());
    // The blocked process noticed as well.
    let line = read_until(&mut lines, "");
    let ms: u64 = line
        .strip_prefix("unavailable ")
        .expect(&line)
        .parse()
        .unwrap();
    assert!(getter.wait().unwrap().success());
    assert!(
        killed.elapsed() < Duration::from_secs(5) && ms < 5000,
        "blocked get failed after {ms} ms"
    );
    // The server comes back (empty, on the same port): same handles work.
    server.restart();
    let back = Instant::now();
    q.put_timeout(4, Duration::from_secs(3)).unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(3)).unwrap(), 4);
    assert!(back.elapsed() < Duration::from_secs(3));
    assert_eq!(q.qsize().unwrap(), 0);
    q.destroy().unwrap();
}

fn a_stopped_server_times_out_instead_of_hanging_and_then_answers_again() {
    let Some(server) =
        server("a_stopped_server_times_out_instead_of_hanging_and_then_answers_again")
    else {
        return;
    };
    let (url, prefix) = (server.url(), fresh_prefix());
    let q: RemoteQueue<u64> = outage_builder(&url, &prefix, "stopped").build().unwrap();
    q.put(1).unwrap();
    let pid = rustix::process::Pid::from_raw(server.pid().unwrap() as i32).unwrap();
    // A stopped server accepts connections (the kernel does) and never
    // answers: every wait must end by its own bound.
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    let resume = scopeguard(pid);
    let start = Instant::now();
    let err = q.get_timeout(Duration::from_millis(300)).unwrap_err();
    let waited = start.elapsed();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(800),
        "{waited:?}"
    );
    let start = Instant::now();
    let err = q.put_timeout(2, Duration::from_millis(300)).unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert_eq!(err.into_inner(), 2);
    assert!(
        start.elapsed() < Duration::from_millis(800),
        "{:?}",
        start.elapsed()
    );
    // A blocking get gives up after retry_for (1 s) plus reply timeouts.
    let start = Instant::now();
    assert!(q.get().unwrap_err().is_unavailable());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    drop(resume);
    // Resumed, the server runs what was waiting in its sockets: the timed
    // put that failed may have added 2 after all (a put that fails with
    // Unavailable is ambiguous, as documented), and the gets' reads may
    // have taken 1 for a reply nobody read, so it comes back after the
    // idle time. Nothing is lost; 2 appears at most once.
    q.put(3).unwrap();
    let mut got = Vec::new();
    while !(got.contains(&1) && got.contains(&3) && q.qsize().unwrap() == 0) {
        got.push(q.get_timeout(Duration::from_secs(3)).expect("1 and 3 come"));
    }
    got.sort_unstable();
    assert!(got == [1, 3] || got == [1, 2, 3], "{got:?}");
    assert_eq!(q.qsize().unwrap(), 0);
    q.destroy().unwrap();
}

/// Sends `SIGCONT` to `pid` when dropped, also when the test panics.
fn scopeguard(pid: rustix::process::Pid) -> impl Drop {
    struct Resume(rustix::process::Pid);
    impl Drop for Resume {
        fn drop(&mut self) {
            let _ = rustix::process::kill_process(self.0, rustix::process::Signal::CONT);
        }
    }
    Resume(pid)
}

fn a_full_queue_makes_puts_wait_and_time_out_with_the_value() {
    let Some(server) = server("a_full_queue_makes_puts_wait_and_time_out_with_the_value") else {
        return;
    };
    let (url, prefix) = (server.url(), fresh_prefix());
    let name = "bounded";
    let q: RemoteQueue<u64> = builder(&url, &prefix, name).maxsize(2).build().unwrap();
    assert_eq!(q.maxsize(), Some(2));
    q.put(1).unwrap();
    q.put(2).unwrap();
    let err = q.try_put(3).unwrap_err();
    assert!(err.is_full());
    assert_eq!(err.into_inner(), 3);
    let start = Instant::now();
    let err = q.put_timeout(4, Duration::from_millis(200)).unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(err.into_inner(), 4);
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert_eq!(q.qsize().unwrap(), 2, "nothing added beyond maxsize");
    // A producer process blocks on the full queue until a get makes room.
    let mut putter = spawn_piped(role!(role_blocked_putter), &[&url, &prefix, name, "2"]);
    let mut lines = BufReader::new(putter.stdout.take().unwrap()).lines();
    read_until(&mut lines, "ready");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(q.qsize().unwrap(), 2, "the putter is still waiting");
    assert_eq!(q.get().unwrap(), 1);
    let line = read_until(&mut lines, "put ");
    let waited: u64 = line[4..].parse().unwrap();
    assert!(waited >= 250, "the put waited for room: {waited} ms");
    assert!(wait_timeout(&mut putter, CHILD_LIMIT).success());
    assert_eq!(q.get().unwrap(), 2);
    assert_eq!(q.get().unwrap(), 99);
    // Concurrent producers never exceed the bound.
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let q = q.clone();
            std::thread::spawn(move || {
                for i in 0..20 {
                    q.put(t * 100 + i).unwrap();
                }
            })
        })
        .collect();
    let mut got = 0;
    while got < 80 {
        assert!(q.qsize().unwrap() <= 2);
        q.get_timeout(Duration::from_secs(5)).unwrap();
        got += 1;
    }
    for t in threads {
        t.join().unwrap();
    }
    q.destroy().unwrap();
}

fn bad_data_in_the_stream_is_a_typed_error_and_a_dead_letter() {
    let Some(server) = server("bad_data_in_the_stream_is_a_typed_error_and_a_dead_letter") else {
        return;
    };
    let (url, prefix) = (server.url(), fresh_prefix());
    let q: RemoteQueue<(u32, String)> = builder(&url, &prefix, "bad").build().unwrap();
    let mut con = raw(&url);
    let xadd = |con: &mut redis::Connection, fields: &[(&str, &[u8])]| {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(q.stream_key()).arg("*");
        for (k, v) in fields {
            cmd.arg(*k).arg(*v);
        }
        cmd.query::<String>(con).unwrap()
    };
    // A payload that is not a (u32, String): a string length past the end.
    let garbage: &[u8] = &[7, 0xfb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
    let garbage_id = xadd(&mut con, &[("d", garbage)]);
    xadd(&mut con, &[("other", b"field")]);
    q.put((5, "fine".to_owned())).unwrap();
    let err = q.get().unwrap_err();
    let failure = err.failure().expect("failed");
    assert!(failure.is_codec(), "{err:?}");
    assert!(std::error::Error::source(failure).is_some());
    let err = q.get().unwrap_err();
    assert!(err.failure().unwrap().is_protocol(), "{err:?}");
    assert_eq!(q.get().unwrap(), (5, "fine".to_owned()));
    assert_eq!(q.qsize().unwrap(), 0);
    let letters = q.dead_letters(10).unwrap();
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0].reason(), DeadReason::Undecodable);
    assert_eq!(letters[0].id(), garbage_id);
    assert_eq!(letters[0].payload(), garbage);
    assert_eq!(letters[0].deliveries(), 1);
    assert!(letters[0].decode::<(u32, String)>().is_err());
    assert_eq!(letters[1].reason(), DeadReason::Malformed);
    // A message over the getter's limit.
    let small: RemoteQueue<Vec<u8>> = builder(&url, &prefix, "bad")
        .max_message(16)
        .build()
        .unwrap();
    let err = small.put(vec![0; 64]).unwrap_err();
    assert!(err.failure().unwrap().is_too_large(), "{err:?}");
    q.put((1, "x".repeat(100))).unwrap();
    let err = small.get_bytes().unwrap_err();
    assert!(err.failure().unwrap().is_too_large(), "{err:?}");
    assert_eq!(
        q.take_dead_letter().unwrap().unwrap().reason(),
        DeadReason::Undecodable
    );
    assert_eq!(
        q.take_dead_letter().unwrap().unwrap().reason(),
        DeadReason::Malformed
    );
    let big = q.take_dead_letter().unwrap().unwrap();
    assert_eq!(big.reason(), DeadReason::TooLarge);
    assert_eq!(big.decode::<(u32, String)>().unwrap(), (1, "x".repeat(100)));
    // A dead-letter stream holding something else is a typed error too.
    redis::cmd("XADD")
        .arg(q.dead_letter_key())
        .arg("*")
        .arg("deliveries")
        .arg("lots")
        .query::<String>(&mut con)
        .unwrap();
    assert!(q.take_dead_letter().unwrap_err().is_protocol());
    // So is a key of another type where the stream should be.
    let clash: RemoteQueue<u8> = builder(&url, &prefix, "clash").build().unwrap();
    redis::cmd("DEL")
        .arg(clash.stream_key())
        .query::<()>(&mut con)
        .unwrap();
    redis::cmd("SET")
        .arg(clash.stream_key())
        .arg("x")
        .query::<()>(&mut con)
        .unwrap();
    let err = clash.put(1).unwrap_err();
    assert!(err.failure().unwrap().is_server(), "{err:?}");
    q.destroy().unwrap();
}

fn a_joinable_queue_joins_when_worker_processes_finish() {
    let Some(server) = server("a_joinable_queue_joins_when_worker_processes_finish") else {
        return;
    };
    let (url, prefix) = (server.url(), fresh_prefix());
    let name = "jobs";
    let jobs: RemoteJoinableQueue<u64> = builder(&url, &prefix, name).build_joinable().unwrap();
    let results: RemoteQueue<u64> = builder(&url, &prefix, "jobs-results").build().unwrap();
    for n in 0..100 {
        jobs.put(n).unwrap();
    }
    let workers: Vec<Child> = (0..2)
        .map(|_| spawn_piped(role!(role_worker), &[&url, &prefix, name]))
        .collect();
    jobs.join_timeout(Duration::from_secs(30)).unwrap();
    // Every task was done when join returned: every result is there.
    assert_eq!(results.qsize().unwrap(), 100);
    jobs.close().unwrap();
    for w in workers {
        finish(w);
    }
    let mut squares: Vec<u64> = (0..100).map(|_| results.get().unwrap()).collect();
    squares.sort_unstable();
    assert_eq!(squares, (0..100u64).map(|n| n * n).collect::<Vec<_>>());
    jobs.destroy().unwrap();
    results.destroy().unwrap();
}

fn a_stale_give_back_leaves_a_taken_over_message_to_its_new_consumer() {
    let Some(server) = server("a_stale_give_back_leaves_a_taken_over_message_to_its_new_consumer")
    else {
        return;
    };
    let (url, prefix) = (server.url(), fresh_prefix());
    let name = "stale";
    let a: RemoteJoinableQueue<u64> = builder(&url, &prefix, name)
        .read_ahead(2)
        .build_joinable()
        .unwrap();
    let b: RemoteJoinableQueue<u64> = builder(&url, &prefix, name).build_joinable().unwrap();
    a.put_many(&[1, 2]).unwrap();
    // A takes both, hands out 1 and finishes it; 2 waits in A, unseen.
    assert_eq!(a.get().unwrap(), 1);
    a.task_done().unwrap();
    std::thread::sleep(MIN_IDLE + Duration::from_millis(100));
    // Idle past MIN_IDLE: B takes 2 over, and works on it.
    assert_eq!(b.get().unwrap(), 2);
    // A gives back what it read ahead (on drop): 2 is B's now, and stays
    // B's with B's delivery count.
    let stream = a.stream_key().to_owned();
    drop(a);
    let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(&stream)
        .arg("multiproc")
        .arg("-")
        .arg("+")
        .arg(10)
        .query(&mut raw(&url))
        .unwrap();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].1, b.consumer_name(), "{pending:?}");
    assert_eq!(pending[0].3, 2, "B's delivery counted: {pending:?}");
    b.task_done().unwrap();
    assert_eq!(b.qsize().unwrap(), 0);
    b.destroy().unwrap();
}

fn a_handle_idle_through_a_server_restart_works_at_once() {
    let Some(mut server) = server("a_handle_idle_through_a_server_restart_works_at_once") else {
        return;
    };
    let (url, prefix) = (server.url(), fresh_prefix());
    let q: RemoteQueue<u64> = builder(&url, &prefix, "idle").build().unwrap();
    q.put(1).unwrap();
    assert_eq!(q.get().unwrap(), 1);
    // The server goes and comes back while the handle does nothing: its
    // connections are dead, and its next commands must not fail for it.
    server.kill();
    server.restart();
    std::thread::sleep(Duration::from_millis(1100));
    q.put(2).unwrap();
    assert_eq!(q.get().unwrap(), 2);
    assert_eq!(q.qsize().unwrap(), 0);
    q.destroy().unwrap();
}

fn main() {
    let roles: &[Role] = &[
        role!(role_producer),
        role!(role_consumer),
        role!(role_hoarder),
        role!(role_raw_reader),
        role!(role_dies_holding),
        role!(role_blocked_getter),
        role!(role_blocked_putter),
        role!(role_worker),
        role!(role_batch_hoarder),
        role!(role_ahead_holder),
    ];
    run(
        roles,
        tests![
            one_process_basics_match_the_local_queue,
            one_to_one_processes_deliver_every_message_once,
            two_to_two_processes_deliver_every_message_once,
            a_killed_consumers_messages_are_redelivered_after_the_idle_time,
            a_poison_message_is_dead_lettered_after_max_deliveries,
            a_killed_server_gives_typed_errors_in_time_and_the_queue_recovers,
            a_stopped_server_times_out_instead_of_hanging_and_then_answers_again,
            a_full_queue_makes_puts_wait_and_time_out_with_the_value,
            bad_data_in_the_stream_is_a_typed_error_and_a_dead_letter,
            a_joinable_queue_joins_when_worker_processes_finish,
            batches_are_put_whole_within_maxsize_or_not_at_all,
            get_many_delivers_each_message_as_a_single_get_would,
            a_killed_consumers_read_ahead_messages_all_arrive_elsewhere,
            batches_give_typed_errors_when_the_server_goes_away,
            a_stale_give_back_leaves_a_taken_over_message_to_its_new_consumer,
            a_handle_idle_through_a_server_restart_works_at_once,
        ],
    );
}
