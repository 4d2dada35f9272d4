//! Queues between real processes: the test binary re-executes itself as
//! each child role (see `multiproc-testkit`).
//!
//! Sizes are chosen so the whole file runs in well under a minute in a debug
//! build on two CPUs. Environment variables for the chaos tests:
//!
//! - `MULTIPROC_FULL=1` makes each of the first four chaos runs (plain,
//!   with biases changing hands, with large records, with both) 1 000
//!   kills (about 15 s each) instead of 200, and the forced-bias chaos runs 1 500
//!   actions instead of 200.
//! - `MULTIPROC_CHAOS_RUNS=N`: how many forced-bias chaos runs (default 1).
//! - `MULTIPROC_CHAOS_ACTIONS=M`: actions per forced-bias chaos run
//!   (default 200, or 1 500 under `MULTIPROC_FULL`).
//! - `MULTIPROC_CHAOS_SEED=S`: the first forced-bias run's seed (run `i`
//!   uses `S + i`); each run prints its seed, also when it fails. The seed
//!   fixes the random choices of the parent and the children; timing, and
//!   so what exactly happens, still varies.
//!
//! The forced-bias chaos run (`chaos_forced_bias_with_kills_stops_and_killed_revokers`)
//! runs 3 producer and 3 consumer processes of 1–4 threads each (every
//! producer thread its own incarnation), with `MULTIPROC_BIAS_AFTER=1` so
//! every lock take earns a bias and biases are revoked between threads and
//! processes all the time; the threads mix blocking, timed (0–5 ms) and
//! `try_` puts and gets, `put_with` and `get_in_place` (some guards held a
//! few ms). Each action SIGKILLs a child (a new one takes its place),
//! SIGSTOPs one for 0–20 ms, or watches the lock words for a thread that
//! holds an owner word while the token says REVOKING and SIGKILLs its
//! process. No message may be torn or duplicated, an acknowledged message
//! may be lost only with a killed consumer thread (one each at most), and
//! the queue must drain and still work at the end.

use multiproc_core::{Segment, codec, scm};
use multiproc_queue::{JoinableQueue, Queue, SimpleQueue};
use multiproc_testkit::{Role, inherited_fds, pattern, role, run, spawn, tests};
use serde::{Deserialize, Serialize};
use std::os::fd::AsFd;
use std::process::Child;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CHILD_LIMIT: Duration = Duration::from_secs(60);

fn full() -> bool {
    std::env::var_os("MULTIPROC_FULL").is_some_and(|v| v != "0")
}

/// FNV-1a, enough to catch torn or mixed-up bytes.
fn checksum(data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// A self-checking message: producer, sequence, body, checksum of all that.
fn make_message(producer: u32, seq: u64, body_len: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(body_len + 20);
    m.extend_from_slice(&producer.to_le_bytes());
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend_from_slice(&pattern(body_len, seq ^ u64::from(producer)));
    let sum = checksum(&m);
    m.extend_from_slice(&sum.to_le_bytes());
    m
}

/// Checks a message made by [`make_message`]; returns (producer, seq).
fn check_message(m: &[u8]) -> Result<(u32, u64), String> {
    if m.len() < 20 {
        return Err(format!("message of {} bytes is too short", m.len()));
    }
    let (body, sum) = m.split_at(m.len() - 8);
    if checksum(body) != u64::from_le_bytes(sum.try_into().unwrap()) {
        return Err(format!(
            "checksum mismatch in a message of {} bytes",
            m.len()
        ));
    }
    let producer = u32::from_le_bytes(body[..4].try_into().unwrap());
    let seq = u64::from_le_bytes(body[4..12].try_into().unwrap());
    if body[12..] != pattern(body.len() - 12, seq ^ u64::from(producer)) {
        return Err("body pattern mismatch".into());
    }
    Ok((producer, seq))
}

/// Tiny xorshift generator; seeded per process.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    t ^ (u64::from(std::process::id()) << 32)
}

fn attach<T: Serialize + serde::de::DeserializeOwned>(fd: std::os::fd::OwnedFd) -> Queue<T> {
    Queue::attach(Segment::from_fd(fd).unwrap()).unwrap()
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T
where
    T::Err: std::fmt::Debug,
{
    args[i].parse().unwrap()
}

fn finish(child: &mut Child) {
    multiproc_testkit::finish(child, CHILD_LIMIT);
}

// ---- child roles -------------------------------------------------------

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Item {
    producer: u32,
    seq: u64,
    text: String,
}

/// args: producer id, count. Puts typed items 0..count.
fn role_typed_producer(args: &[String]) {
    let q: Queue<Item> = attach(inherited_fds().remove(0));
    let producer: u32 = arg(args, 0);
    let count: u64 = arg(args, 1);
    for seq in 0..count {
        let text = "x".repeat((seq % 40) as usize);
        q.put(Item {
            producer,
            seq,
            text,
        })
        .unwrap();
    }
}

/// args: producer id, count, body length. Puts checked byte messages.
fn role_bytes_producer(args: &[String]) {
    let q: Queue<()> = attach(inherited_fds().remove(0));
    let producer: u32 = arg(args, 0);
    let count: u64 = arg(args, 1);
    let body: usize = arg(args, 2);
    for seq in 0..count {
        q.put_bytes(&make_message(producer, seq, body)).unwrap();
    }
}

#[derive(Serialize, Deserialize, Debug, Default)]
struct Stats {
    count: Vec<u64>,
    sum: Vec<u64>,
    sum_sq: Vec<u64>,
    errors: Vec<String>,
}

/// args: producers. Drains checked byte messages until `Closed`, checks
/// per-producer FIFO, and reports stats on the second (result) queue.
fn role_bytes_consumer(args: &[String]) {
    let mut fds = inherited_fds();
    let q: Queue<()> = attach(fds.remove(0));
    let results: Queue<Stats> = attach(fds.remove(0));
    let producers: usize = arg(args, 0);
    let mut stats = Stats {
        count: vec![0; producers],
        sum: vec![0; producers],
        sum_sq: vec![0; producers],
        errors: Vec::new(),
    };
    let mut last: Vec<Option<u64>> = vec![None; producers];
    loop {
        let m = match q.get_bytes() {
            Ok(m) => m,
            Err(e) if e.is_closed() => break,
            Err(e) => panic!("get failed: {e}"),
        };
        match check_message(&m) {
            Ok((p, seq)) => {
                let p = p as usize;
                if last[p].is_some_and(|l| l >= seq) {
                    stats
                        .errors
                        .push(format!("producer {p}: {seq} after {:?}", last[p]));
                }
                last[p] = Some(seq);
                stats.count[p] += 1;
                stats.sum[p] = stats.sum[p].wrapping_add(seq);
                stats.sum_sq[p] = stats.sum_sq[p].wrapping_add(seq.wrapping_mul(seq));
            }
            Err(e) => stats.errors.push(e),
        }
    }
    results.put(stats).unwrap();
}

/// Blocks in `get` until the queue is closed; exit 0 only on `Closed`.
fn role_wait_closed(_: &[String]) {
    let q: Queue<u32> = attach(inherited_fds().remove(0));
    match q.get() {
        Err(e) if e.is_closed() => {}
        other => panic!("expected Closed, got {other:?}"),
    }
}

/// Holds the producer lock inside a `put_with` (after saying so on the
/// second queue) until killed.
fn role_hold_producer_lock(_: &[String]) {
    let mut fds = inherited_fds();
    let q: Queue<u32> = attach(fds.remove(0));
    let ready: Queue<u32> = attach(fds.remove(0));
    let _ = q.put_with(8, |_| {
        ready.put(1).unwrap();
        std::thread::sleep(CHILD_LIMIT);
    });
}

/// Closes the queue (and is killed before it can seal the close).
fn role_close(_: &[String]) {
    let q: Queue<u32> = attach(inherited_fds().remove(0));
    q.close();
}

/// Blocks in `put` on a full queue until it is closed.
fn role_put_until_closed(_: &[String]) {
    let q: Queue<u32> = attach(inherited_fds().remove(0));
    loop {
        match q.put(1) {
            Ok(()) => continue,
            Err(e) if e.is_closed() => return,
            Err(e) => panic!("unexpected {e}"),
        }
    }
}

/// Sleeps args[0] ms, then puts 7.
fn role_put_later(args: &[String]) {
    let q: Queue<u32> = attach(inherited_fds().remove(0));
    std::thread::sleep(Duration::from_millis(arg(args, 0)));
    q.put(7).unwrap();
}

/// JoinableQueue worker: takes jobs, squares them onto the result queue,
/// marks them done, until `Closed`.
fn role_join_worker(_: &[String]) {
    let mut fds = inherited_fds();
    let jobs = JoinableQueue::<u64>::attach(Segment::from_fd(fds.remove(0)).unwrap()).unwrap();
    let out: Queue<u64> = attach(fds.remove(0));
    loop {
        match jobs.get() {
            Ok(n) => {
                std::thread::sleep(Duration::from_micros(200));
                out.put(n * n).unwrap();
                jobs.task_done().unwrap();
            }
            Err(e) if e.is_closed() => return,
            Err(e) => panic!("{e}"),
        }
    }
}

/// SimpleQueue echo: get, put back + 1, until Closed.
fn role_simple_echo(_: &[String]) {
    let mut fds = inherited_fds();
    let input = SimpleQueue::<u32>::attach(Segment::from_fd(fds.remove(0)).unwrap()).unwrap();
    let output = SimpleQueue::<u32>::attach(Segment::from_fd(fds.remove(0)).unwrap()).unwrap();
    while let Ok(n) = input.get() {
        output.put(n + 1).unwrap();
    }
}

#[derive(Serialize, Deserialize)]
struct Big {
    id: u32,
    body: String,
}

fn big_body(len: usize, salt: u64) -> String {
    (0..len)
        .map(|i| char::from(b'a' + ((i as u64 + salt) % 26) as u8))
        .collect()
}

/// Puts one 64 MiB message typed and one as bytes.
fn role_big_producer(args: &[String]) {
    let mut fds = inherited_fds();
    let typed: Queue<Big> = attach(fds.remove(0));
    let bytes: Queue<()> = attach(fds.remove(0));
    let len: usize = arg(args, 0);
    typed
        .put(Big {
            id: 9,
            body: big_body(len, 3),
        })
        .unwrap();
    bytes.put_bytes(&pattern(len, 5)).unwrap();
}

/// Puts messages of the sizes in args with `put_with`.
fn role_put_with(args: &[String]) {
    let q: Queue<()> = attach(inherited_fds().remove(0));
    for (i, len) in args.iter().enumerate() {
        let len: usize = len.parse().unwrap();
        q.put_with(len, |buf| {
            for (j, b) in buf.iter_mut().enumerate() {
                *b = ((j + i) % 251) as u8;
            }
        })
        .map_err(|e| e.to_string())
        .unwrap();
    }
}

/// Receives a queue handle over the inherited socket and puts into it.
fn role_socket_receiver(_: &[String]) {
    let socket = inherited_fds().remove(0);
    let mut buf = vec![0u8; 4096];
    let got = scm::recv(&socket, &mut buf, 4).unwrap();
    let q: Queue<String> = codec::decode_with_fds(&buf[..got.len], got.fds).unwrap();
    q.put("over the socket".to_string()).unwrap();
}

/// Measures its own CPU time while blocked in `get` (args[0] = "get") or
/// `put` on a full queue ("put") for about a second; fails above 50 ms.
fn role_blocked_cpu(args: &[String]) {
    let q: Queue<u32> = attach(inherited_fds().remove(0));
    let before = cpu_time_of(std::process::id());
    let start = Instant::now();
    match args[0].as_str() {
        "get" => assert!(
            q.get_timeout(Duration::from_secs(1))
                .unwrap_err()
                .is_timeout()
        ),
        _ => assert!(
            q.put_timeout(1, Duration::from_secs(1))
                .unwrap_err()
                .is_timeout()
        ),
    }
    let waited = start.elapsed();
    let used = cpu_time_of(std::process::id()) - before;
    assert!(waited >= Duration::from_secs(1));
    assert!(
        used < Duration::from_millis(50),
        "blocked {} used {used:?} of CPU",
        args[0]
    );
}

/// utime + stime of a process, from `/proc/PID/stat` (in clock ticks).
fn cpu_time_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line; `rest` starts at field 3.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = rustix::param::clock_ticks_per_second();
    Duration::from_millis(ticks * 1000 / hz)
}

// ---- chaos ----------------------------------------------------------------

/// The chaos bookkeeping segment: counters, then one slot per producer
/// incarnation (acked count) and a received bitmap per incarnation.
const CHAOS_MAX_INCARNATIONS: usize = 8192;
const CHAOS_MAX_SEQ: u64 = 1 << 14;
const CHAOS_BITMAP_WORDS: usize = (CHAOS_MAX_SEQ / 64) as usize;
const C_NEXT_ID: usize = 0;
const C_CORRUPT: usize = 8;
const C_DUPLICATE: usize = 16;
const C_RECEIVED: usize = 24;
const C_ACKED_BASE: usize = 64;
const C_BITMAP_BASE: usize = C_ACKED_BASE + 8 * CHAOS_MAX_INCARNATIONS;
const CHAOS_SEGMENT: usize = C_BITMAP_BASE + 8 * CHAOS_BITMAP_WORDS * CHAOS_MAX_INCARNATIONS;

struct Book(Segment);

impl Book {
    fn word(&self, off: usize) -> &AtomicU64 {
        self.0.view::<AtomicU64>(off).unwrap()
    }

    fn acked(&self, id: u32) -> &AtomicU64 {
        self.word(C_ACKED_BASE + 8 * id as usize)
    }

    /// Marks (id, seq) received; false if it already was (a duplicate).
    fn mark(&self, id: u32, seq: u64) -> bool {
        let word = C_BITMAP_BASE + 8 * (id as usize * CHAOS_BITMAP_WORDS + (seq / 64) as usize);
        let bit = 1u64 << (seq % 64);
        self.word(word).fetch_or(bit, Ordering::SeqCst) & bit == 0
    }

    fn received(&self, id: u32, seq: u64) -> bool {
        let word = C_BITMAP_BASE + 8 * (id as usize * CHAOS_BITMAP_WORDS + (seq / 64) as usize);
        self.word(word).load(Ordering::SeqCst) & (1u64 << (seq % 64)) != 0
    }

    /// Messages acknowledged to their producers, and how many of those no
    /// consumer recorded.
    fn acknowledged_and_lost(&self) -> (u64, u64) {
        let incarnations = self.word(C_NEXT_ID).load(Ordering::SeqCst) as u32;
        let mut acked_total = 0u64;
        let mut acked_lost = 0u64;
        for id in 0..incarnations {
            let acked = self.acked(id).load(Ordering::SeqCst);
            acked_total += acked;
            acked_lost += (0..acked).filter(|&s| !self.received(id, s)).count() as u64;
        }
        (acked_total, acked_lost)
    }

    /// Checks and records one received message.
    fn record(&self, m: &[u8]) {
        match check_message(m) {
            Ok((id, seq)) if (id as usize) < CHAOS_MAX_INCARNATIONS && seq < CHAOS_MAX_SEQ => {
                if !self.mark(id, seq) {
                    self.word(C_DUPLICATE).fetch_add(1, Ordering::SeqCst);
                }
                self.word(C_RECEIVED).fetch_add(1, Ordering::SeqCst);
            }
            _ => {
                self.word(C_CORRUPT).fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// Set in the chaos children's environment for [`chaos_body_len`]'s large
/// mix.
const CHAOS_LARGE: &str = "CHAOS_LARGE_RECORDS";

/// [`CHAOS_LARGE`]'s value for the mix of one size: every record takes the
/// last one's place in an empty ring, filling it to the last byte.
const CHAOS_EQUAL: &str = "equal";

fn chaos_body_len(rng: &mut Rng, large: Option<&str>) -> usize {
    if large == Some(CHAOS_EQUAL) {
        return 280_000;
    }
    if large.is_some() {
        // Single records large enough to go back to the start of the ring
        // while the readers keep up, between small ones.
        return match rng.below(10) {
            0..=5 => 260_000 + rng.below(400_000) as usize,
            _ => rng.below(200) as usize,
        };
    }
    match rng.below(100) {
        0..=89 => rng.below(200) as usize,
        90..=98 => 1000 + rng.below(20_000) as usize,
        _ => 100_000 + rng.below(500_000) as usize,
    }
}

/// Chaos producer: a fresh incarnation id, then checked messages of random
/// sizes (some through `put_with`) until killed or CHAOS_MAX_SEQ.
fn role_chaos_producer(_: &[String]) {
    let mut fds = inherited_fds();
    let q: Queue<()> = attach(fds.remove(0));
    let book = Book(Segment::from_fd(fds.remove(0)).unwrap());
    let id = book.word(C_NEXT_ID).fetch_add(1, Ordering::SeqCst) as u32;
    assert!(
        (id as usize) < CHAOS_MAX_INCARNATIONS,
        "too many incarnations"
    );
    let mut rng = Rng::new(seed());
    let large = std::env::var(CHAOS_LARGE).ok();
    for seq in 0..CHAOS_MAX_SEQ {
        let m = make_message(id, seq, chaos_body_len(&mut rng, large.as_deref()));
        let result = if rng.below(4) == 0 {
            q.put_with(m.len(), |buf| buf.copy_from_slice(&m))
                .map_err(|e| e.is_closed())
        } else {
            q.put_bytes(&m).map_err(|e| e.is_closed())
        };
        match result {
            Ok(()) => book.acked(id).store(seq + 1, Ordering::SeqCst),
            Err(true) => return,
            Err(false) => panic!("put failed"),
        }
    }
}

/// Chaos consumer: checks and records messages until killed or closed,
/// some read in place (a kill then hits the in-place loan).
fn role_chaos_consumer(_: &[String]) {
    let mut fds = inherited_fds();
    let q: Queue<()> = attach(fds.remove(0));
    let book = Book(Segment::from_fd(fds.remove(0)).unwrap());
    let mut rng = Rng::new(seed());
    loop {
        if rng.below(3) == 0 {
            match q.get_in_place() {
                Ok(m) => book.record(&m),
                Err(e) if e.is_closed() => return,
                Err(e) => panic!("{e}"),
            }
        } else {
            match q.get_bytes() {
                Ok(m) => book.record(&m),
                Err(e) if e.is_closed() => return,
                Err(e) => panic!("{e}"),
            }
        }
    }
}

// ---- chaos with forced biases, stops and killed revokers ------------------

/// More [`Book`] counters, for the summary: timed or `try_` operations
/// that gave up (and were retried), and in-place guards held a while.
const C_PUT_GAVE_UP: usize = 32;
const C_GET_GAVE_UP: usize = 40;
const C_GUARDS_HELD: usize = 48;
/// Child threads that panicked (a failed check there).
const C_CHILD_PANICS: usize = 56;

/// The incarnation id of the message the parent puts itself at the end.
const MARKER_ID: u32 = CHAOS_MAX_INCARNATIONS as u32 - 1;

/// Offsets of the producer and consumer lock owner words and bias tokens
/// in a queue segment (`src/layout.rs`; `tests/biased.rs` checks them).
const PRODUCER_OWNER: usize = 256;
const PRODUCER_TOKEN: usize = 352;
const CONSUMER_OWNER: usize = 512;
const CONSUMER_TOKEN: usize = 600;
/// The owner word of a biased lock (`src/owner.rs`).
const BIASED: u64 = u64::MAX;
/// Token bit set while a new owner-word holder waits for the biased
/// thread to step out (`src/bias.rs`).
const REVOKING: u32 = 1 << 31;
/// The bits of an owner word that hold the holder's kernel thread id.
const ID_MASK: u64 = (1 << 22) - 1;

/// How one attempt at an operation ended.
enum Attempt {
    Done,
    /// Timed out, or a `try_` found no room or no message: retry.
    GaveUp,
    Closed,
}

/// What a failed attempt means: closed, or gave up (retry); any other
/// error fails the child.
fn failed(closed: bool, gave_up: bool, error: &dyn std::fmt::Display) -> Attempt {
    match (closed, gave_up) {
        (true, _) => Attempt::Closed,
        (_, true) => Attempt::GaveUp,
        _ => panic!("{error}"),
    }
}

fn timeout_0_to_5_ms(rng: &mut Rng) -> Duration {
    if rng.below(4) == 0 {
        Duration::ZERO
    } else {
        Duration::from_micros(rng.below(5001))
    }
}

fn thread_rng(seed: u64, thread: u64) -> Rng {
    Rng::new(seed ^ (thread + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Runs `body` on `threads` threads, each with its own generator. A
/// panic in one is counted in the book before anything else (the parent
/// may kill this process any moment after) and ends the process with
/// status 101, so no failure hides behind threads that go on.
fn on_threads(args: &[String], body: impl Fn(&Queue<()>, &Book, Rng) + Sync) {
    let mut fds = inherited_fds();
    let q: Queue<()> = attach(fds.remove(0));
    // Leaked: the panic hook needs it for the rest of the process.
    let book: &'static Book = Box::leak(Box::new(Book(Segment::from_fd(fds.remove(0)).unwrap())));
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        book.word(C_CHILD_PANICS).fetch_add(1, Ordering::SeqCst);
        report(info);
    }));
    let threads: u64 = arg(args, 0);
    let seed: u64 = arg(args, 1);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (q, body) = (&q, &body);
            s.spawn(move || {
                let run = || body(q, book, thread_rng(seed, t));
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).is_err() {
                    std::process::exit(101);
                }
            });
        }
    });
}

/// One attempt to put `m`, by a random kind of put: blocking, timed
/// (0–5 ms) or `try_`, copied or filled in place.
fn forced_put(q: &Queue<()>, m: &[u8], rng: &mut Rng) -> Attempt {
    let fill = |buf: &mut [u8]| buf.copy_from_slice(m);
    // Timed and `try_` puts with `fill` at any size: a message too large to
    // be filled in place is filled only once its first fragment has room,
    // and then goes through whatever the timeout (a timeout reported as Ok
    // with nothing published was a defect of an earlier version).
    match rng.below(16) {
        0..=3 => match q.put_bytes(m) {
            Ok(()) => Attempt::Done,
            Err(e) => failed(e.is_closed(), false, &e),
        },
        4..=6 => match q.put_with(m.len(), fill) {
            Ok(()) => Attempt::Done,
            Err(e) => failed(e.is_closed(), false, &e),
        },
        7..=11 => match q.put_bytes_timeout(m, timeout_0_to_5_ms(rng)) {
            Ok(()) => Attempt::Done,
            Err(e) => failed(e.is_closed(), e.is_timeout(), &e),
        },
        12..=13 => match q.put_with_timeout(m.len(), fill, timeout_0_to_5_ms(rng)) {
            Ok(()) => Attempt::Done,
            Err(e) => failed(e.is_closed(), e.is_timeout(), &e),
        },
        14 => match q.try_put_with(m.len(), fill) {
            Ok(()) => Attempt::Done,
            Err(e) => failed(e.is_closed(), e.is_full(), &e),
        },
        _ => match q.try_put_bytes(m) {
            Ok(()) => Attempt::Done,
            Err(e) => failed(e.is_closed(), e.is_full(), &e),
        },
    }
}

/// One attempt to get a message, by a random kind of get; records it.
/// Some in-place guards are held 0–3 ms before the message is recorded
/// and the guard dropped, so kills of other processes land meanwhile.
fn forced_get(q: &Queue<()>, book: &Book, rng: &mut Rng) -> Attempt {
    let record_in_place = |m: multiproc_queue::InPlace<'_>, rng: &mut Rng| {
        if rng.below(4) == 0 {
            book.word(C_GUARDS_HELD).fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_micros(rng.below(3001)));
        }
        book.record(&m);
        drop(m);
        Attempt::Done
    };
    match rng.below(12) {
        0..=1 => match q.get_bytes() {
            Ok(m) => {
                book.record(&m);
                Attempt::Done
            }
            Err(e) => failed(e.is_closed(), false, &e),
        },
        2..=4 => match q.get_bytes_timeout(timeout_0_to_5_ms(rng)) {
            Ok(m) => {
                book.record(&m);
                Attempt::Done
            }
            Err(e) => failed(e.is_closed(), e.is_timeout(), &e),
        },
        5 => match q.try_get_bytes() {
            Ok(m) => {
                book.record(&m);
                Attempt::Done
            }
            Err(e) => failed(e.is_closed(), e.is_empty(), &e),
        },
        6..=7 => match q.get_in_place() {
            Ok(m) => record_in_place(m, rng),
            Err(e) => failed(e.is_closed(), false, &e),
        },
        8..=10 => match q.get_in_place_timeout(timeout_0_to_5_ms(rng)) {
            Ok(m) => record_in_place(m, rng),
            Err(e) => failed(e.is_closed(), e.is_timeout(), &e),
        },
        _ => match q.try_get_in_place() {
            Ok(m) => record_in_place(m, rng),
            Err(e) => failed(e.is_closed(), e.is_empty(), &e),
        },
    }
}

/// args: threads, seed. Each thread is a producer incarnation of its own
/// (ids from `C_NEXT_ID`) putting checked messages until killed, closed or
/// CHAOS_MAX_SEQ. A put that gave up is retried with the same message; a
/// message counts as acknowledged only once a put of it returned Ok.
fn role_forced_producer(args: &[String]) {
    on_threads(args, |q, book, mut rng| {
        let id = book.word(C_NEXT_ID).fetch_add(1, Ordering::SeqCst) as u32;
        assert!(id < MARKER_ID, "too many incarnations");
        for seq in 0..CHAOS_MAX_SEQ {
            let m = make_message(id, seq, chaos_body_len(&mut rng, None));
            loop {
                match forced_put(q, &m, &mut rng) {
                    Attempt::Done => break,
                    Attempt::GaveUp => {
                        book.word(C_PUT_GAVE_UP).fetch_add(1, Ordering::Relaxed);
                    }
                    Attempt::Closed => return,
                }
            }
            book.acked(id).store(seq + 1, Ordering::SeqCst);
        }
    });
}

/// args: threads, seed. Each thread checks and records messages until
/// killed or closed.
fn role_forced_consumer(args: &[String]) {
    on_threads(args, |q, book, mut rng| {
        loop {
            match forced_get(q, book, &mut rng) {
                Attempt::Done => {}
                Attempt::GaveUp => {
                    book.word(C_GET_GAVE_UP).fetch_add(1, Ordering::Relaxed);
                }
                Attempt::Closed => return,
            }
        }
    });
}

// ---- tests -------------------------------------------------------------

fn typed_smoke_and_fifo_from_a_child() {
    let q: Queue<Item> = Queue::new().unwrap();
    let mut child = spawn(role!(role_typed_producer), &["3", "2000"], &[q.as_fd()]).unwrap();
    for seq in 0..2000 {
        let item = q.get_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(item.producer, 3);
        assert_eq!(item.seq, seq, "out of order");
        assert_eq!(item.text, "x".repeat((seq % 40) as usize));
    }
    finish(&mut child);
    assert!(q.is_empty());
}

fn mpmc_4x4_exactly_once_with_fifo_per_producer() {
    // 1 000 000 takes about 2 s in a debug build on two CPUs.
    let total: u64 = 1_000_000;
    let per_producer = total / 4;
    let q: Queue<()> = Queue::builder().ring_bytes(1 << 20).build().unwrap();
    let results: Queue<Stats> = Queue::new().unwrap();
    let start = Instant::now();
    let mut consumers: Vec<Child> = (0..4)
        .map(|_| {
            spawn(
                role!(role_bytes_consumer),
                &["4"],
                &[q.as_fd(), results.as_fd()],
            )
            .unwrap()
        })
        .collect();
    let mut producers: Vec<Child> = (0..4)
        .map(|p| {
            spawn(
                role!(role_bytes_producer),
                &[&p.to_string(), &per_producer.to_string(), "8"],
                &[q.as_fd()],
            )
            .unwrap()
        })
        .collect();
    for p in &mut producers {
        finish(p);
    }
    q.close();
    let mut merged = Stats {
        count: vec![0; 4],
        sum: vec![0; 4],
        sum_sq: vec![0; 4],
        errors: Vec::new(),
    };
    for _ in 0..4 {
        let s = results.get_timeout(CHILD_LIMIT).unwrap();
        for p in 0..4 {
            merged.count[p] += s.count[p];
            merged.sum[p] = merged.sum[p].wrapping_add(s.sum[p]);
            merged.sum_sq[p] = merged.sum_sq[p].wrapping_add(s.sum_sq[p]);
        }
        merged.errors.extend(s.errors);
    }
    for c in &mut consumers {
        finish(c);
    }
    assert!(
        merged.errors.is_empty(),
        "{:?}",
        &merged.errors[..merged.errors.len().min(5)]
    );
    let n = per_producer;
    let sum: u64 = (0..n).sum();
    let sum_sq = (0..n).fold(0u64, |a, s| a.wrapping_add(s.wrapping_mul(s)));
    for p in 0..4 {
        assert_eq!(merged.count[p], n, "producer {p}: count");
        assert_eq!(merged.sum[p], sum, "producer {p}: sum of sequence numbers");
        assert_eq!(merged.sum_sq[p], sum_sq, "producer {p}: sum of squares");
    }
    eprintln!("    {total} messages 4x4 in {:?}", start.elapsed());
}

fn get_timeout_is_woken_by_another_process() {
    let q: Queue<u32> = Queue::new().unwrap();
    // The child sleeps 300 ms before it puts: the getter is asleep in the
    // kernel by then (unless this process was descheduled that long).
    let mut child = spawn(role!(role_put_later), &["300"], &[q.as_fd()]).unwrap();
    assert!(q.try_get().unwrap_err().is_empty());
    assert_eq!(q.get_timeout(Duration::from_secs(20)).unwrap(), 7);
    finish(&mut child);
    // And a timeout that expires.
    let start = Instant::now();
    assert!(
        q.get_timeout(Duration::from_millis(30))
            .unwrap_err()
            .is_timeout()
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(30) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

fn close_wakes_a_blocked_getter_in_another_process() {
    let q: Queue<u32> = Queue::new().unwrap();
    let mut child = spawn(role!(role_wait_closed), &[], &[q.as_fd()]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    q.close();
    finish(&mut child);
}

fn close_wakes_a_blocked_putter_in_another_process() {
    let q: Queue<u32> = Queue::with_capacity(3).unwrap();
    let mut child = spawn(role!(role_put_until_closed), &[], &[q.as_fd()]).unwrap();
    assert!(multiproc_testkit::eventually(
        Duration::from_secs(20),
        || q.is_full()
    ));
    std::thread::sleep(Duration::from_millis(50));
    q.close();
    finish(&mut child);
    // What was put before the close drains, then Closed.
    for _ in 0..3 {
        assert_eq!(q.get().unwrap(), 1);
    }
    assert!(q.get().unwrap_err().is_closed());
    assert!(q.try_get().unwrap_err().is_closed());
}

fn a_close_left_unsealed_by_a_killed_closer_behind_a_dead_producer_still_ends_gets() {
    // A producer dies holding its lock; a closer sets CLOSING and is killed
    // while it waits to take that lock over (before its liveness slice
    // ends). A getter must then find the dead producer itself, seal the
    // close and report Closed, not time out on the dead holder for ever.
    let q: Queue<u32> = Queue::new().unwrap();
    let ready: Queue<u32> = Queue::new().unwrap();
    let mut holder = spawn(
        role!(role_hold_producer_lock),
        &[],
        &[q.as_fd(), ready.as_fd()],
    )
    .unwrap();
    ready.get_timeout(CHILD_LIMIT).unwrap();
    holder.kill().unwrap();
    holder.wait().unwrap();
    let mut closer = spawn(role!(role_close), &[], &[q.as_fd()]).unwrap();
    let closing = multiproc_testkit::eventually(CHILD_LIMIT, || q.is_closed());
    closer.kill().unwrap();
    closer.wait().unwrap();
    assert!(closing);
    let err = q.get_timeout(Duration::from_secs(5)).unwrap_err();
    assert!(err.is_closed(), "{err:?}");
}

fn close_after_puts_drains_in_another_process() {
    let q: Queue<()> = Queue::new().unwrap();
    let results: Queue<Stats> = Queue::new().unwrap();
    for seq in 0..100 {
        q.put_bytes(&make_message(0, seq, 10)).unwrap();
    }
    q.close();
    let mut child = spawn(
        role!(role_bytes_consumer),
        &["1"],
        &[q.as_fd(), results.as_fd()],
    )
    .unwrap();
    let s = results.get_timeout(CHILD_LIMIT).unwrap();
    finish(&mut child);
    assert!(s.errors.is_empty());
    assert_eq!(s.count, vec![100]);
}

fn joinable_join_waits_for_task_done_across_processes() {
    let jobs = JoinableQueue::<u64>::new().unwrap();
    let out: Queue<u64> = Queue::new().unwrap();
    let mut workers: Vec<Child> = (0..2)
        .map(|_| spawn(role!(role_join_worker), &[], &[jobs.as_fd(), out.as_fd()]).unwrap())
        .collect();
    for n in 0..200u64 {
        jobs.put(n).unwrap();
    }
    let start = Instant::now();
    jobs.join_timeout(CHILD_LIMIT).unwrap();
    assert_eq!(jobs.unfinished_tasks(), 0);
    // Every job was squared before its task_done, so all results are in.
    let mut got: Vec<u64> = (0..200).map(|_| out.try_get().unwrap()).collect();
    got.sort_unstable();
    assert_eq!(got, (0..200u64).map(|n| n * n).collect::<Vec<_>>());
    assert!(start.elapsed() < CHILD_LIMIT);
    jobs.close();
    for w in &mut workers {
        finish(w);
    }
    assert!(
        jobs.task_done().is_err(),
        "task_done beyond the puts must fail"
    );
}

fn simple_queue_across_processes() {
    let input = SimpleQueue::<u32>::new().unwrap();
    let output = SimpleQueue::<u32>::new().unwrap();
    let mut child = spawn(
        role!(role_simple_echo),
        &[],
        &[input.as_fd(), output.as_fd()],
    )
    .unwrap();
    for n in 0..500 {
        input.put(n).unwrap();
    }
    for n in 0..500 {
        assert_eq!(output.get().unwrap(), n + 1);
    }
    assert!(output.is_empty());
    input.close();
    finish(&mut child);
}

fn oversized_64_mib_through_a_1_mib_ring_typed_and_bytes() {
    let len = 64 << 20;
    let typed: Queue<Big> = Queue::builder().ring_bytes(1 << 20).build().unwrap();
    let bytes: Queue<()> = Queue::builder().ring_bytes(1 << 20).build().unwrap();
    let mut child = spawn(
        role!(role_big_producer),
        &[&len.to_string()],
        &[typed.as_fd(), bytes.as_fd()],
    )
    .unwrap();
    let big = typed.get_timeout(CHILD_LIMIT).unwrap();
    assert_eq!(big.id, 9);
    assert_eq!(big.body.len(), len);
    assert!(big.body == big_body(len, 3), "typed body differs");
    drop(big);
    let raw = bytes.get_bytes_timeout(CHILD_LIMIT).unwrap();
    assert_eq!(raw.len(), len);
    assert!(raw == pattern(len, 5), "bytes body differs");
    finish(&mut child);
}

fn zero_copy_put_with_and_get_in_place_at_the_edges() {
    let q: Queue<()> = Queue::builder().ring_bytes(64 * 1024).build().unwrap();
    let max = q.max_in_place();
    let sizes = [0, 1, 15, 16, 17, max - 1, max, max + 1, 64 * 1024, 200_000];
    let args: Vec<String> = sizes.iter().map(ToString::to_string).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = spawn(role!(role_put_with), &args, &[q.as_fd()]).unwrap();
    for (i, &len) in sizes.iter().enumerate() {
        let m = q.get_in_place_timeout(CHILD_LIMIT).unwrap();
        assert_eq!(m.len(), len);
        assert_eq!(
            multiproc_queue::InPlace::is_borrowed(&m),
            len <= max,
            "size {len}"
        );
        assert!(
            m.iter()
                .enumerate()
                .all(|(j, &b)| b == ((j + i) % 251) as u8)
        );
    }
    finish(&mut child);
}

fn a_queue_travels_over_a_unix_socket() {
    let (ours, theirs) = scm::stream_pair().unwrap();
    let q: Queue<String> = Queue::new().unwrap();
    let mut child = spawn(role!(role_socket_receiver), &[], &[theirs.as_fd()]).unwrap();
    drop(theirs);
    let (bytes, fds) = codec::encode_with_fds(&q).unwrap();
    let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
    scm::send_all(&ours, &bytes, &borrowed).unwrap();
    drop(fds);
    assert_eq!(q.get_timeout(CHILD_LIMIT).unwrap(), "over the socket");
    finish(&mut child);
}

fn blocked_getters_and_putters_use_no_cpu() {
    let empty: Queue<u32> = Queue::new().unwrap();
    let full: Queue<u32> = Queue::with_capacity(1).unwrap();
    full.put(0).unwrap();
    let mut getter = spawn(role!(role_blocked_cpu), &["get"], &[empty.as_fd()]).unwrap();
    let mut putter = spawn(role!(role_blocked_cpu), &["put"], &[full.as_fd()]).unwrap();
    finish(&mut getter);
    finish(&mut putter);
}

/// Files in `/dev/shm` this process maps or holds open: where a named
/// segment of its own shows, whatever its name, and what no other program
/// on the machine can add to (counting the directory's entries would fail
/// whenever one creates a name meanwhile).
fn dev_shm_files_of_this_process() -> std::collections::BTreeSet<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mapped = maps
        .lines()
        .filter_map(|l| l.split_once("/dev/shm/").map(|(_, name)| name.to_owned()));
    let open = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|path| {
            let path = path.to_string_lossy().into_owned();
            path.strip_prefix("/dev/shm/").map(str::to_owned)
        });
    mapped.chain(open).collect()
}

fn nothing_of_ours_appears_in_dev_shm() {
    let before = dev_shm_files_of_this_process();
    let queues: Vec<Queue<u8>> = (0..8).map(|_| Queue::new().unwrap()).collect();
    for q in &queues {
        q.put(1).unwrap();
    }
    let during = dev_shm_files_of_this_process();
    assert_eq!(before, during, "a queue uses a file in /dev/shm");
    // The memory is a memfd: visible only as a descriptor.
    let link = std::fs::read_link(format!("/proc/self/fd/{}", {
        use std::os::fd::AsRawFd;
        queues[0].as_fd().as_raw_fd()
    }))
    .unwrap();
    assert!(link.to_string_lossy().starts_with("/memfd:"), "{link:?}");
}

/// Descriptors of this process that refer to the file with inode `ino`.
fn fds_on_inode(ino: u64) -> usize {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.ino() == ino))
        .count()
}

/// Echo: gets a `u64`, puts it back on the second queue, until `Closed`.
/// Echoes one queue into another until it is closed. With `off`, turns
/// `membarrier` off first with `set_membarrier`; with `late`, tries to
/// after the queues were used. Either way checks the verdict of a change
/// at the end.
fn role_echo(args: &[String]) {
    use rustix::thread::{MembarrierCommand, membarrier_query};
    let switch = args.first().map(String::as_str);
    if switch == Some("off") {
        multiproc_queue::set_membarrier(false).unwrap();
    }
    let mut fds = inherited_fds();
    let input: Queue<u64> = attach(fds.remove(0));
    let output: Queue<u64> = attach(fds.remove(0));
    while let Ok(v) = input.get() {
        output.put(v).unwrap();
    }
    let query = membarrier_query();
    let offered = query.contains_command(MembarrierCommand::GlobalExpedited)
        && query.contains_command(MembarrierCommand::RegisterGlobalExpedited);
    match switch {
        Some("off") => {
            // Decided: asking again is fine, changing it is too late.
            multiproc_queue::set_membarrier(false).unwrap();
            let late = multiproc_queue::set_membarrier(true);
            assert_eq!(
                late.map_err(|e| e.in_use()),
                if offered { Err(false) } else { Ok(()) }
            );
        }
        Some("late") => {
            let late = multiproc_queue::set_membarrier(false);
            assert_eq!(
                late.map_err(|e| e.in_use()),
                if offered { Err(true) } else { Ok(()) }
            );
        }
        _ => {}
    }
}

fn wakeups_work_with_and_without_membarrier_on_either_side() {
    // Each round trip waits 1–3 ms between messages, so both sides go to
    // sleep in the kernel and rely on the other to wake them. The child
    // runs once with and once without membarrier (full fences and
    // re-checking sleeps instead); this process keeps it.
    // Without it either by the environment or by `set_membarrier(false)`;
    // with it, a late `set_membarrier(false)` is refused.
    for (env, arg) in [(false, "late"), (true, "-"), (false, "off")] {
        let ping: Queue<u64> = Queue::new().unwrap();
        let pong: Queue<u64> = Queue::new().unwrap();
        let mut cmd =
            multiproc_testkit::command(role!(role_echo), &[arg], &[ping.as_fd(), pong.as_fd()]);
        if env {
            cmd.env("MULTIPROC_NO_MEMBARRIER", "1");
        }
        let mut child = cmd.stdin(std::process::Stdio::null()).spawn().unwrap();
        for i in 0..40u64 {
            std::thread::sleep(Duration::from_micros(1000 + (i % 3) * 1000));
            ping.put(i).unwrap();
            assert_eq!(pong.get_timeout(Duration::from_secs(10)).unwrap(), i);
        }
        ping.close();
        finish(&mut child);
    }
}

fn dropping_the_last_handle_frees_the_memory() {
    let q: Queue<u64> = Queue::new().unwrap();
    let ino = rustix::fs::fstat(q.as_fd()).unwrap().st_ino;
    let clone = q.clone();
    let (bytes, fds) = codec::encode_with_fds(&q).unwrap();
    let copy: Queue<u64> = codec::decode_with_fds(&bytes, fds).unwrap();
    copy.put(1).unwrap();
    assert_eq!(clone.get().unwrap(), 1);
    assert_eq!(fds_on_inode(ino), 2, "one per segment mapping");
    drop(copy);
    drop(q);
    assert_eq!(fds_on_inode(ino), 1);
    drop(clone);
    assert_eq!(fds_on_inode(ino), 0, "the memfd outlived its handles");
}

fn chaos_kills_never_tear_duplicate_or_hang() {
    chaos(None, None);
}

fn chaos_with_biases_changing_hands_all_the_time() {
    // Every take of a lock earns a bias, so the children's locks are
    // biased, revoked and taken back from killed holders all the time.
    chaos(Some("1"), None);
}

fn chaos_with_large_records_going_back_to_the_start() {
    // Most messages are single records of 260-660 KB in a 4 MiB ring, so
    // puts pad the end and go back to the start whenever the readers keep
    // up, and kills land in those puts and in their reads.
    chaos(None, Some("1"));
}

fn chaos_with_large_records_taking_each_others_place() {
    // Every message 280 KB: a record put into an empty ring goes to offset
    // 0 and ends where the last one read ended, filling the ring to the
    // last byte, and producers wait for readers to let go of the last
    // record; kills land in those waits, in full rings and in the loans.
    chaos(None, Some(CHAOS_EQUAL));
}

fn chaos_with_large_records_taking_each_others_place_and_biases_changing_hands() {
    // The same with every take of a lock earning a bias: the biased fast
    // paths on both sides while records fill the ring and producers wait
    // for readers.
    chaos(Some("1"), Some(CHAOS_EQUAL));
}

fn chaos_with_large_records_and_biases_changing_hands() {
    // The same, every take of a lock earning a bias, so the biased fast
    // paths are in play throughout (fewer puts get through: revocations
    // wait for killed holders).
    chaos(Some("1"), Some("1"));
}

/// Kills producers and consumers at random points; children get
/// `MULTIPROC_BIAS_AFTER=bias_after` when given, and put mostly large
/// records (in a ring large enough for them) with `large`, which becomes
/// their [`CHAOS_LARGE`] (see [`chaos_body_len`]).
fn chaos(bias_after: Option<&str>, large: Option<&str>) {
    let kills_wanted: usize = if full() { 1000 } else { 200 };
    let ring = if large.is_some() { 4 << 20 } else { 256 * 1024 };
    let q: Queue<()> = Queue::builder().ring_bytes(ring).build().unwrap();
    let book = Book(Segment::anonymous(CHAOS_SEGMENT).unwrap());
    let fds = [q.as_fd(), book.0.as_fd()];
    let spawn = |role: Role| {
        let mut cmd = multiproc_testkit::command(role, &[], &fds);
        if let Some(n) = bias_after {
            cmd.env("MULTIPROC_BIAS_AFTER", n);
        }
        if let Some(mix) = large {
            cmd.env(CHAOS_LARGE, mix);
        }
        cmd.stdin(std::process::Stdio::null()).spawn().unwrap()
    };
    let mut rng = Rng::new(seed());
    let mut producers: Vec<Child> = (0..2).map(|_| spawn(role!(role_chaos_producer))).collect();
    let mut consumers: Vec<Child> = (0..2).map(|_| spawn(role!(role_chaos_consumer))).collect();
    let mut kills = 0usize;
    let mut producer_kills = 0usize;
    let mut consumer_kills = 0usize;
    let start = Instant::now();
    // Only a guard against a hang: a loaded 2-CPU machine is slow.
    let limit = Duration::from_secs(if full() { 900 } else { 180 });
    while kills < kills_wanted {
        assert!(start.elapsed() < limit, "chaos run overran its time budget");
        // One size of large records: longer lives, so that each process
        // gets through a few puts or gets between kills.
        let between = if large == Some(CHAOS_EQUAL) {
            30_000
        } else {
            8000
        };
        std::thread::sleep(Duration::from_micros(rng.below(between)));
        let (pool, role) = if rng.below(2) == 0 {
            producer_kills += 1;
            (&mut producers, role!(role_chaos_producer))
        } else {
            consumer_kills += 1;
            (&mut consumers, role!(role_chaos_consumer))
        };
        let i = rng.below(pool.len() as u64) as usize;
        let _ = pool[i].kill();
        let _ = pool[i].wait();
        pool[i] = spawn(role);
        kills += 1;
    }
    // Stop producing; let the consumers drain, then close and collect them.
    for p in &mut producers {
        let _ = p.kill();
        let _ = p.wait();
    }
    let drained = multiproc_testkit::eventually(Duration::from_secs(60), || q.is_empty());
    assert!(
        drained,
        "survivors did not drain the queue: {} left",
        q.qsize()
    );
    q.close();
    for c in &mut consumers {
        finish(c);
    }
    // The queue still works after all that.
    let after = make_message(CHAOS_MAX_INCARNATIONS as u32 - 1, 0, 10);
    assert!(q.put_bytes(&after).unwrap_err().is_closed());

    let word = |off| book.word(off).load(Ordering::SeqCst);
    assert_eq!(
        word(C_CORRUPT),
        0,
        "a consumer received a torn or corrupt message"
    );
    assert_eq!(word(C_DUPLICATE), 0, "a message was delivered twice");
    let (acked_total, acked_lost) = book.acknowledged_and_lost();
    eprintln!(
        "    chaos: {kills} kills ({producer_kills} producers, {consumer_kills} consumers), \
         {acked_total} acknowledged puts, {} received, {acked_lost} lost with killed consumers, {:?}",
        word(C_RECEIVED),
        start.elapsed()
    );
    // Each killed consumer can take at most its own message in flight with it.
    assert!(
        acked_lost <= consumer_kills as u64,
        "{acked_lost} acknowledged messages lost, but only {consumer_kills} consumers were killed"
    );
    assert!(acked_total > 0);
}

/// A number from the environment, or `default`.
fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        })
        .unwrap_or(default)
}

/// The process a kernel thread id belongs to (`Tgid:` of its status).
fn process_of_thread(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()
}

fn pid_of(child: &Child) -> rustix::process::Pid {
    rustix::process::Pid::from_raw(child.id() as i32).expect("a child's pid")
}

/// The owner-word and token offsets of a lock, and the owner word seen
/// while its token said REVOKING.
type Revoking = ((usize, usize), u64);

/// The owner word of the lock at `(owner, token)` offsets of a queue
/// segment, if it names a thread (not free, not biased) and the token says
/// REVOKING.
fn revoking(seg: &Segment, (owner, token): (usize, usize)) -> Option<u64> {
    let word = seg.view::<AtomicU64>(owner).unwrap().load(Ordering::SeqCst);
    let token = seg.view::<AtomicU32>(token).unwrap().load(Ordering::SeqCst);
    (word != 0 && word != BIASED && token & REVOKING != 0).then_some(word)
}

/// One child of a forced-bias chaos run.
struct Kid {
    child: Child,
    consumer: bool,
    threads: u64,
    /// While stopped (SIGSTOP): when to let it go on.
    resume_at: Option<Instant>,
}

/// The children of a forced-bias chaos run. Dropping it (also when the
/// run fails) continues the stopped ones, then kills and reaps them all.
struct Party<'a> {
    fds: [std::os::fd::BorrowedFd<'a>; 2],
    kids: Vec<Kid>,
    rng: Rng,
    seed: u64,
}

impl<'a> Party<'a> {
    fn new(fds: [std::os::fd::BorrowedFd<'a>; 2], seed: u64) -> Self {
        let mut party = Self {
            fds,
            kids: Vec::new(),
            rng: Rng::new(seed),
            seed,
        };
        for consumer in [false, false, false, true, true, true] {
            let kid = party.spawn(consumer);
            party.kids.push(kid);
        }
        party
    }

    /// A new producer or consumer process with 1–4 threads, every lock
    /// take of which earns a bias.
    fn spawn(&mut self, consumer: bool) -> Kid {
        let threads = 1 + self.rng.below(4);
        let seed = self.rng.next().to_string();
        let role = if consumer {
            role!(role_forced_consumer)
        } else {
            role!(role_forced_producer)
        };
        let child = multiproc_testkit::command(role, &[&threads.to_string(), &seed], &self.fds)
            .env("MULTIPROC_BIAS_AFTER", "1")
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Kid {
            child,
            consumer,
            threads,
            resume_at: None,
        }
    }

    /// Fails the run if child `i` ended on its own with a failure (a panic
    /// in a child is a failed check there).
    fn check_alive(&mut self, i: usize) {
        let seed = self.seed;
        let kid = &mut self.kids[i];
        if let Some(status) = kid.child.try_wait().unwrap() {
            assert!(
                status.success(),
                "a {} child failed: {status:?} (seed {seed})",
                if kid.consumer { "consumer" } else { "producer" }
            );
        }
    }

    /// SIGKILLs child `i` and starts another in its place; returns
    /// (whether it was a consumer, its thread count).
    fn kill(&mut self, i: usize) -> (bool, u64) {
        self.check_alive(i);
        let kid = &mut self.kids[i];
        let _ = kid.child.kill();
        let _ = kid.child.wait();
        let (consumer, threads) = (kid.consumer, kid.threads);
        self.kids[i] = self.spawn(consumer);
        (consumer, threads)
    }

    /// SIGSTOPs child `i` until `resume_at` (a stopped one stays stopped
    /// until the later of the two times).
    fn stop(&mut self, i: usize, resume_at: Instant) {
        use rustix::process::{Signal, kill_process};
        let kid = &mut self.kids[i];
        // Not reaped yet, so its pid names it and nothing else.
        let _ = kill_process(pid_of(&kid.child), Signal::STOP);
        kid.resume_at = Some(kid.resume_at.map_or(resume_at, |t| t.max(resume_at)));
    }

    /// SIGCONTs the stopped children whose time came (all with `all`).
    fn resume(&mut self, all: bool) {
        use rustix::process::{Signal, kill_process};
        let now = Instant::now();
        for kid in &mut self.kids {
            if kid.resume_at.is_some_and(|t| all || t <= now) {
                let _ = kill_process(pid_of(&kid.child), Signal::CONT);
                kid.resume_at = None;
            }
        }
    }

    /// Sleeps `d`, continuing stopped children on time meanwhile.
    fn pause(&mut self, d: Duration) {
        let until = Instant::now() + d;
        loop {
            self.resume(false);
            let now = Instant::now();
            if now >= until {
                return;
            }
            let next = self
                .kids
                .iter()
                .filter_map(|k| k.resume_at)
                .fold(until, Instant::min);
            std::thread::sleep(
                next.saturating_duration_since(now)
                    .max(Duration::from_micros(50)),
            );
        }
    }

    /// Polls `q`'s two lock words for up to `window` for a thread that
    /// holds an owner word while the side's token says REVOKING (it waits
    /// for a biased thread to step out, or is about to); returns the child
    /// that thread belongs to, the side's offsets and the owner word seen.
    fn find_revoker(&mut self, q: &Queue<()>, window: Duration) -> Option<(usize, Revoking)> {
        let seg = q.segment();
        let until = Instant::now() + window;
        while Instant::now() < until {
            self.resume(false);
            for side in [
                (PRODUCER_OWNER, PRODUCER_TOKEN),
                (CONSUMER_OWNER, CONSUMER_TOKEN),
            ] {
                let Some(word) = revoking(seg, side) else {
                    continue;
                };
                let Some(pid) = process_of_thread((word & ID_MASK) as u32) else {
                    continue;
                };
                let Some(i) = self.kids.iter().position(|k| k.child.id() == pid) else {
                    continue;
                };
                // Still the same holder, still revoking.
                if revoking(seg, side) == Some(word) {
                    return Some((i, (side, word)));
                }
            }
            std::hint::spin_loop();
        }
        None
    }
}

impl Drop for Party<'_> {
    fn drop(&mut self) {
        self.resume(true);
        for kid in &mut self.kids {
            let _ = kid.child.kill();
            let _ = kid.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "    forced chaos run failed with seed {0} \
                 (MULTIPROC_CHAOS_SEED={0} repeats its choices)",
                self.seed
            );
        }
    }
}

fn chaos_forced_bias_with_kills_stops_and_killed_revokers() {
    let runs = env_number("MULTIPROC_CHAOS_RUNS", 1);
    let actions = env_number("MULTIPROC_CHAOS_ACTIONS", if full() { 1500 } else { 200 });
    let first = env_number("MULTIPROC_CHAOS_SEED", seed());
    for run in 0..runs {
        forced_chaos_run(run + 1, runs, actions, first.wrapping_add(run));
    }
}

/// One run: 3 producer and 3 consumer processes of 1–4 threads, all locks
/// biased after every take, and `actions` of: SIGKILL a child (and start
/// another), SIGSTOP one for 0–20 ms, or SIGKILL a child whose thread is
/// caught revoking a bias.
fn forced_chaos_run(run: u64, runs: u64, actions: u64, seed: u64) {
    let q: Queue<()> = Queue::builder().ring_bytes(256 * 1024).build().unwrap();
    let book = Book(Segment::anonymous(CHAOS_SEGMENT).unwrap());
    let start = Instant::now();
    // Only a guard against a hang: a loaded 2-CPU machine is slow.
    let limit = Duration::from_secs(60) + Duration::from_millis(100) * actions as u32;
    let mut party = Party::new([q.as_fd(), book.0.as_fd()], seed);
    let (mut kills, mut stops) = (0u64, 0u64);
    // Revokers caught and killed; of those, the ones whose owner word and
    // REVOKING token were still in place after the kill (they surely died
    // mid-revocation); hunts that saw none and killed at random instead.
    let (mut revoker_kills, mut mid_revocation, mut missed_revokers) = (0u64, 0u64, 0u64);
    let mut consumer_threads_killed = 0u64;
    for _ in 0..actions {
        assert!(
            start.elapsed() < limit,
            "forced chaos run overran its time budget of {limit:?} (seed {seed})"
        );
        let wait = Duration::from_micros(party.rng.below(8000));
        party.pause(wait);
        let n = party.kids.len() as u64;
        let victim = match party.rng.below(20) {
            0..=7 => Some(party.rng.below(n) as usize),
            8..=14 => {
                let i = party.rng.below(n) as usize;
                party.check_alive(i);
                let resume_at = Instant::now() + Duration::from_micros(party.rng.below(20_001));
                party.stop(i, resume_at);
                stops += 1;
                None
            }
            _ => {
                let window = Duration::from_micros(1000 + party.rng.below(4001));
                match party.find_revoker(&q, window) {
                    Some((i, (side, word))) => {
                        let (consumer, threads) = party.kill(i);
                        kills += 1;
                        revoker_kills += 1;
                        if consumer {
                            consumer_threads_killed += threads;
                        }
                        if revoking(q.segment(), side) == Some(word) {
                            mid_revocation += 1;
                        }
                        None
                    }
                    None => {
                        missed_revokers += 1;
                        Some(party.rng.below(n) as usize)
                    }
                }
            }
        };
        if let Some(i) = victim {
            let (consumer, threads) = party.kill(i);
            kills += 1;
            if consumer {
                consumer_threads_killed += threads;
            }
        }
    }

    // Let everyone go on, stop producing, let the consumers drain.
    party.resume(true);
    for i in 0..party.kids.len() {
        party.check_alive(i);
        if !party.kids[i].consumer {
            let _ = party.kids[i].child.kill();
            let _ = party.kids[i].child.wait();
        }
    }
    let drained = multiproc_testkit::eventually(Duration::from_secs(60), || q.is_empty());
    assert!(
        drained,
        "survivors did not drain the queue: {} left (seed {seed})",
        q.qsize()
    );
    // Both locks still work after all that: a put of our own (taking the
    // producer lock from whatever dead thread it was biased to) reaches a
    // consumer.
    let marker = make_message(MARKER_ID, 0, 10);
    q.put_bytes_timeout(&marker, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("the queue is unusable after the run: {e} (seed {seed})"));
    let delivered =
        multiproc_testkit::eventually(Duration::from_secs(30), || book.received(MARKER_ID, 0));
    assert!(
        delivered,
        "a put after the run was not delivered (seed {seed})"
    );
    q.close();
    for i in 0..party.kids.len() {
        if party.kids[i].consumer {
            finish(&mut party.kids[i].child);
        }
    }
    assert!(q.put_bytes(&marker).unwrap_err().is_closed());
    assert!(q.try_get_bytes().unwrap_err().is_closed());
    assert!(q.is_empty());

    let word = |off| book.word(off).load(Ordering::SeqCst);
    let (acked_total, acked_lost) = book.acknowledged_and_lost();
    let incarnations = word(C_NEXT_ID);
    eprintln!(
        "    forced chaos run {run}/{runs} (seed {seed}): {actions} actions: {kills} kills \
         ({revoker_kills} of revokers caught revoking, {mid_revocation} surely mid-revocation, \
         {missed_revokers} fallbacks when none was seen), {stops} stops; \
         {acked_total} acknowledged, {} received ({} torn, {} duplicates), {acked_lost} lost \
         with {consumer_threads_killed} killed consumer threads; {} puts and {} gets gave up, \
         {} guards held; {incarnations} producer threads; {:.2?}",
        word(C_RECEIVED),
        word(C_CORRUPT),
        word(C_DUPLICATE),
        word(C_PUT_GAVE_UP),
        word(C_GET_GAVE_UP),
        word(C_GUARDS_HELD),
        start.elapsed()
    );
    assert_eq!(
        word(C_CHILD_PANICS),
        0,
        "a child thread panicked (seed {seed})"
    );
    assert_eq!(
        word(C_CORRUPT),
        0,
        "a consumer received a torn or corrupt message (seed {seed})"
    );
    assert_eq!(
        word(C_DUPLICATE),
        0,
        "a message was delivered twice (seed {seed})"
    );
    // Each killed consumer thread can take at most its own message in
    // flight with it.
    assert!(
        acked_lost <= consumer_threads_killed,
        "{acked_lost} acknowledged messages lost, but only {consumer_threads_killed} \
         consumer threads were killed (seed {seed})"
    );
    assert!(acked_total > 0, "nothing was acknowledged (seed {seed})");
}

fn queue_keeps_working_after_a_producer_dies_mid_fragment() {
    // A child puts a 4 MiB message through a 64 KiB ring while nobody reads,
    // so it blocks after its first fragments; we kill it there. The next put
    // and get must work and never see the partial message.
    let q: Queue<()> = Queue::builder().ring_bytes(64 * 1024).build().unwrap();
    let mut child = spawn(
        role!(role_big_producer_bytes_only),
        &[&(4 << 20).to_string()],
        &[q.as_fd()],
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    // The ring is full of the dead producer's fragments: a reader drains
    // them, notices the writer is dead and drops the partial message.
    let err = q.get_bytes_timeout(Duration::from_millis(300)).unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    q.put_bytes(b"after").unwrap();
    assert_eq!(
        q.get_bytes_timeout(Duration::from_secs(10)).unwrap(),
        b"after"
    );
    assert!(q.try_get_bytes().unwrap_err().is_empty());
}

fn role_big_producer_bytes_only(args: &[String]) {
    let q: Queue<()> = attach(inherited_fds().remove(0));
    let len: usize = arg(args, 0);
    q.put_bytes(&pattern(len, 1)).unwrap();
}

fn consumer_dying_mid_fragment_loses_only_that_message() {
    // A child reads a 32 MiB message fragment by fragment through a 64 KiB
    // ring. We stop its producer (SIGSTOP) half way, so the reader sits
    // between fragments, kill the reader, and let the producer go on. The
    // rest of that message must be skipped (or, had the stop come before or
    // after the message, the message is whole), and the next message
    // delivered intact.
    use rustix::process::{Pid, Signal, kill_process};
    let q: Queue<()> = Queue::builder().ring_bytes(64 * 1024).build().unwrap();
    let results: Queue<Stats> = Queue::new().unwrap();
    let mut consumer = spawn(
        role!(role_bytes_consumer),
        &["1"],
        &[q.as_fd(), results.as_fd()],
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let ready: Queue<()> = Queue::new().unwrap();
    let mut producer = spawn(
        role!(role_two_messages),
        &[&(32 << 20).to_string()],
        &[q.as_fd(), ready.as_fd()],
    )
    .unwrap();
    let pid = Pid::from_raw(producer.id() as i32).unwrap();
    ready.get_timeout(CHILD_LIMIT).unwrap();
    std::thread::sleep(Duration::from_millis(3));
    kill_process(pid, Signal::STOP).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    consumer.kill().unwrap();
    consumer.wait().unwrap();
    kill_process(pid, Signal::CONT).unwrap();
    let mut seen = Vec::new();
    loop {
        let m = q.get_bytes_timeout(Duration::from_secs(20)).unwrap();
        let (_, seq) = check_message(&m).expect("a partial or torn message was delivered");
        seen.push(seq);
        if seq == 1 {
            break;
        }
    }
    finish(&mut producer);
    assert!(seen == [1] || seen == [0, 1], "{seen:?}");
    eprintln!("    received {seen:?} after the kill");
}

/// Puts a checked message of args[0] bytes, then a small one.
fn role_two_messages(args: &[String]) {
    let mut fds = inherited_fds();
    let q: Queue<()> = attach(fds.remove(0));
    let ready: Queue<()> = attach(fds.remove(0));
    let big = make_message(0, 0, arg(args, 0));
    ready.put(()).unwrap();
    q.put_bytes(&big).unwrap();
    q.put_bytes(&make_message(0, 1, 10)).unwrap();
}

/// Takes the queues a parent passed with `multiproc_queue::inherit`,
/// doubles every job into the results, then checks that the key cannot be
/// taken twice and that its own child, which sees the variable but not the
/// descriptors, is refused.
fn role_inherit_doubler(_: &[String]) {
    use multiproc_queue::inherit::{self, InheritError};
    let jobs: Queue<u64> = inherit::take("jobs").unwrap();
    let results: Queue<u64> = inherit::take("results").unwrap();
    while let Ok(n) = jobs.get() {
        results.put(2 * n).unwrap();
    }
    assert!(matches!(
        inherit::take::<Queue<u64>>("jobs"),
        Err(InheritError::AlreadyTaken)
    ));
    let mut grandchild = multiproc_testkit::spawn(role!(role_inherit_stale), &[], &[]).unwrap();
    assert!(multiproc_testkit::wait_timeout(&mut grandchild, CHILD_LIMIT).success());
}

/// Started by [`role_inherit_doubler`] without `pass`: the variable is in
/// its environment, the descriptors are not.
fn role_inherit_stale(_: &[String]) {
    use multiproc_queue::inherit::{self, InheritError};
    let err = inherit::take::<Queue<u64>>("jobs").unwrap_err();
    assert!(matches!(err, InheritError::NotInherited), "{err:?}");
}

fn queue_shared_with_a_command_child_through_inherit() {
    // The recipe of the crate docs ("Using this crate alone"): only
    // `multiproc_queue` names, a child started by `std::process::Command`.
    use multiproc_queue::inherit;
    let jobs: Queue<u64> = Queue::new().unwrap();
    let results: Queue<u64> = Queue::new().unwrap();
    let mut cmd = multiproc_testkit::command(role!(role_inherit_doubler), &[], &[]);
    inherit::pass(&mut cmd, "jobs", &jobs).unwrap();
    inherit::pass(&mut cmd, "results", &results).unwrap();
    let mut child = cmd.stdin(std::process::Stdio::null()).spawn().unwrap();
    drop(cmd);
    for n in 0..100 {
        jobs.put(n).unwrap();
    }
    for n in 0..100 {
        assert_eq!(results.get_timeout(CHILD_LIMIT).unwrap(), 2 * n);
    }
    jobs.close();
    finish(&mut child);
}

fn main() {
    let roles: &[Role] = &[
        role!(role_inherit_doubler),
        role!(role_inherit_stale),
        role!(role_typed_producer),
        role!(role_bytes_producer),
        role!(role_bytes_consumer),
        role!(role_wait_closed),
        role!(role_put_until_closed),
        role!(role_put_later),
        role!(role_hold_producer_lock),
        role!(role_close),
        role!(role_join_worker),
        role!(role_simple_echo),
        role!(role_big_producer),
        role!(role_big_producer_bytes_only),
        role!(role_put_with),
        role!(role_two_messages),
        role!(role_echo),
        role!(role_socket_receiver),
        role!(role_blocked_cpu),
        role!(role_chaos_producer),
        role!(role_chaos_consumer),
        role!(role_forced_producer),
        role!(role_forced_consumer),
    ];
    run(
        roles,
        tests![
            queue_shared_with_a_command_child_through_inherit,
            typed_smoke_and_fifo_from_a_child,
            mpmc_4x4_exactly_once_with_fifo_per_producer,
            get_timeout_is_woken_by_another_process,
            close_wakes_a_blocked_getter_in_another_process,
            close_wakes_a_blocked_putter_in_another_process,
            close_after_puts_drains_in_another_process,
            a_close_left_unsealed_by_a_killed_closer_behind_a_dead_producer_still_ends_gets,
            joinable_join_waits_for_task_done_across_processes,
            simple_queue_across_processes,
            oversized_64_mib_through_a_1_mib_ring_typed_and_bytes,
            zero_copy_put_with_and_get_in_place_at_the_edges,
            a_queue_travels_over_a_unix_socket,
            blocked_getters_and_putters_use_no_cpu,
            nothing_of_ours_appears_in_dev_shm,
            dropping_the_last_handle_frees_the_memory,
            wakeups_work_with_and_without_membarrier_on_either_side,
            chaos_kills_never_tear_duplicate_or_hang,
            chaos_with_biases_changing_hands_all_the_time,
            chaos_with_large_records_going_back_to_the_start,
            chaos_with_large_records_taking_each_others_place,
            chaos_with_large_records_taking_each_others_place_and_biases_changing_hands,
            chaos_with_large_records_and_biases_changing_hands,
            chaos_forced_bias_with_kills_stops_and_killed_revokers,
            queue_keeps_working_after_a_producer_dies_mid_fragment,
            consumer_dying_mid_fragment_loses_only_that_message,
        ],
    );
}
