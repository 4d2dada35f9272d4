//! Biased locks between real processes and threads: a thread that took a
//! lock often enough in a row keeps it between operations, and whoever comes
//! next must take it back, also from a holder that was killed, that forked,
//! or that is inside an operation right now.
//!
//! The tests look at the lock's owner word in the segment to check that the
//! bias was really granted (the layout is in `src/layout.rs`); where the
//! kernel offers no `membarrier`, no bias is ever granted and they say so.

use multiproc_core::Segment;
use multiproc_queue::Queue;
use multiproc_testkit::{Role, fork_child, inherited_fds, role, run, spawn, tests};
use std::os::fd::AsFd;
use std::process::Child;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Offsets of the producer and consumer lock owner words (`layout.rs`).
const PRODUCER_OWNER: usize = 256;
const CONSUMER_OWNER: usize = 512;
/// Offsets of the producer and consumer bias tokens (`layout.rs`: the
/// `Bias` after the side's hot words, its four 16-byte slots, then the
/// token). The tests check the token is 1 once the first bias is granted.
const PRODUCER_TOKEN: usize = 352;
const CONSUMER_TOKEN: usize = 600;
/// The owner word of a biased lock (`owner.rs`).
const BIASED: u64 = u64::MAX;
/// The bits of an owner word that hold the owner's thread id.
const ID_MASK: u64 = (1 << 22) - 1;
/// Enough operations in a row to earn a bias (64 are needed at first).
const EARN: u64 = 200;

const CHILD_LIMIT: Duration = Duration::from_secs(60);

fn bias_possible() -> bool {
    use rustix::thread::{MembarrierCommand, membarrier_query};
    let usable = membarrier_query().contains_command(MembarrierCommand::RegisterGlobalExpedited);
    if !usable {
        eprintln!("    no membarrier here: no bias is granted, the scenario runs unbiased");
    }
    usable
}

/// The owner word at `offset` of `q`'s segment, through a mapping of our own.
fn owner_word<T>(q: &Queue<T>, offset: usize) -> u64 {
    let seg = Segment::from_fd(q.as_fd().try_clone_to_owned().unwrap()).unwrap();
    seg.view::<AtomicU64>(offset)
        .unwrap()
        .load(Ordering::SeqCst)
}

/// The 32-bit word at `offset` of `q`'s segment.
fn word32<T>(q: &Queue<T>, offset: usize) -> u32 {
    let seg = Segment::from_fd(q.as_fd().try_clone_to_owned().unwrap()).unwrap();
    seg.view::<AtomicU32>(offset)
        .unwrap()
        .load(Ordering::SeqCst)
}

fn attach(fd: std::os::fd::OwnedFd) -> Queue<()> {
    Queue::attach(Segment::from_fd(fd).unwrap()).unwrap()
}

/// Producer id and sequence number, then a body that depends on both.
fn message(producer: u32, seq: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(28);
    m.extend_from_slice(&producer.to_le_bytes());
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend((0..16).map(|i| (seq as u8).wrapping_mul(31) ^ (producer as u8) ^ i));
    m
}

/// Checks a [`message`]; returns (producer, seq).
fn check(m: &[u8]) -> (u32, u64) {
    assert_eq!(m.len(), 28, "torn message: {m:?}");
    let producer = u32::from_le_bytes(m[..4].try_into().unwrap());
    let seq = u64::from_le_bytes(m[4..12].try_into().unwrap());
    assert_eq!(m, message(producer, seq), "torn message");
    (producer, seq)
}

fn get(q: &Queue<()>) -> (u32, u64) {
    check(&q.get_bytes_timeout(Duration::from_secs(10)).unwrap())
}

/// Gets `total` messages from producers 0 and 1, each producer's in
/// order from 0; returns how many came from each.
fn take_in_order(q: &Queue<()>, total: u64) -> [u64; 2] {
    let mut next = [0u64; 2];
    for _ in 0..total {
        let (producer, seq) = get(q);
        assert_eq!(
            seq, next[producer as usize],
            "producer {producer} out of order"
        );
        next[producer as usize] += 1;
    }
    next
}

fn finish(child: &mut Child) {
    multiproc_testkit::finish(child, CHILD_LIMIT);
}

// ---- child roles -------------------------------------------------------

/// Puts [`EARN`] messages as producer 1, says so, then waits to be killed:
/// outside a put (`idle`) or inside one (`inside`).
fn role_biased_producer(args: &[String]) {
    let mut fds = inherited_fds();
    let q = attach(fds.remove(0));
    let ready = attach(fds.remove(0));
    for seq in 0..EARN {
        q.put_bytes(&message(1, seq)).unwrap();
    }
    match args[0].as_str() {
        "idle" => ready.put(()).unwrap(),
        "inside" => {
            let _ = q.put_with(28, |buf| {
                buf.fill(0xEE);
                ready.put(()).unwrap();
                std::thread::sleep(CHILD_LIMIT);
            });
        }
        _ => {
            // "hold": inside until told to go on, then finish the put and
            // say it was acknowledged.
            let go = attach(fds.remove(0));
            q.put_with(28, |buf| {
                ready.put(()).unwrap();
                go.get_timeout(CHILD_LIMIT).unwrap();
                buf.copy_from_slice(&message(1, EARN));
            })
            .unwrap();
            ready.put(()).unwrap();
            return;
        }
    }
    std::thread::sleep(CHILD_LIMIT);
}

/// Gets [`EARN`] messages, checks them, then holds the next one in place
/// until killed, or (`hold`) until told to go on, then lets it go and says
/// so.
fn role_biased_consumer(args: &[String]) {
    let mut fds = inherited_fds();
    let q = attach(fds.remove(0));
    let ready = attach(fds.remove(0));
    for seq in 0..EARN {
        assert_eq!(get(&q), (0, seq));
    }
    let held = q.get_in_place().unwrap();
    assert_eq!(check(&held), (0, EARN));
    ready.put(()).unwrap();
    if args.first().is_some_and(|a| a == "hold") {
        let go = attach(fds.remove(0));
        go.get_timeout(CHILD_LIMIT).unwrap();
        assert_eq!(check(&held), (0, EARN));
        drop(held);
        ready.put(()).unwrap();
        return;
    }
    std::thread::sleep(CHILD_LIMIT);
    drop(held);
}

/// One blocking put (as producer 2) or get: a process that must revoke a
/// bias held by a thread that is inside, and is killed while it waits.
fn role_revoker(args: &[String]) {
    let q = attach(inherited_fds().remove(0));
    if args[0] == "put" {
        q.put_bytes(&message(2, 0)).unwrap();
    } else {
        check(&q.get_bytes().unwrap());
    }
}

/// A worker thread puts [`EARN`] messages as producer 1 (earning the bias
/// when `args[0]` is `biased`), then one more from inside which it says
/// it is and waits to be told to go on; meanwhile the main thread exits
/// alone (`exit(2)`, not `exit_group`), as a C host's `pthread_exit` does,
/// leaving a zombie main thread and a live process. The worker says when
/// its last put returned, then ends the process.
#[allow(unsafe_code)]
fn role_put_after_main_exits(args: &[String]) {
    let mut fds = inherited_fds();
    let q = attach(fds.remove(0));
    let ready = attach(fds.remove(0));
    let go = attach(fds.remove(0));
    let count = if args[0] == "biased" { EARN } else { 0 };
    std::thread::spawn(move || {
        for seq in 0..count {
            q.put_bytes(&message(1, seq)).unwrap();
        }
        q.put_with(28, |buf| {
            ready.put(()).unwrap();
            go.get_timeout(CHILD_LIMIT).unwrap();
            buf.copy_from_slice(&message(1, count));
        })
        .unwrap();
        ready.put(()).unwrap();
        std::process::exit(0);
    });
    // (libc: neither std nor rustix can end one thread without unwinding;
    // the raw `exit` system call does.)
    // SAFETY: `exit(2)` ends only this thread, without unwinding or running
    // anything of ours; the worker thread owns everything it uses.
    unsafe { libc::syscall(libc::SYS_exit, 0) };
    unreachable!("exit(2) returned");
}

/// Earns the producer bias as producer 0, then forks. A first child puts
/// one message as producer 1 while this process is idle: it must take the
/// lock back, not enter by the bias it inherited. Then a second child puts
/// `count - 1` more as producer 1 while this process puts `count` more as
/// producer 0.
fn role_fork_after_bias(args: &[String]) {
    let q = attach(inherited_fds().remove(0));
    let count: u64 = args[0].parse().unwrap();
    for seq in 0..EARN {
        q.put_bytes(&message(0, seq)).unwrap();
    }
    let biased = bias_possible();
    if biased {
        assert_eq!(owner_word(&q, PRODUCER_OWNER), BIASED, "bias not granted");
    }
    fork_child(|| q.put_bytes(&message(1, 0)).unwrap()).join();
    if biased {
        assert_ne!(
            owner_word(&q, PRODUCER_OWNER),
            BIASED,
            "the child entered by its parent's bias"
        );
    }
    let child = fork_child(|| {
        for seq in 1..count {
            q.put_bytes(&message(1, seq)).unwrap();
        }
    });
    for seq in EARN..EARN + count {
        q.put_bytes(&message(0, seq)).unwrap();
    }
    child.join();
}

/// Puts messages 0..`args[0]` as producer 1; run with
/// `MULTIPROC_NO_MEMBARRIER` set, so its revocations fall back to waiting.
fn role_put_without_membarrier(args: &[String]) {
    let q = attach(inherited_fds().remove(0));
    let count: u64 = args[0].parse().unwrap();
    for seq in 0..count {
        q.put_bytes(&message(1, seq)).unwrap();
    }
}

// ---- tests ---------------------------------------------------------------

/// Starts `role` on `q` and waits until it says it has earned the lock's
/// bias (checked through the owner word at `owner`).
fn start_biased(role: Role, args: &[&str], q: &Queue<()>, owner: usize) -> Child {
    let ready: Queue<()> = Queue::new().unwrap();
    let child = spawn(role, args, &[q.as_fd(), ready.as_fd()]).unwrap();
    ready.get_timeout(CHILD_LIMIT).unwrap();
    if bias_possible() {
        assert_eq!(owner_word(q, owner), BIASED, "bias not granted");
    }
    child
}

fn kill(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Puts message `seq` as producer 0 after a [`role_biased_producer`] died; then
/// the queue must hold the dead producer's messages and ours, whole and in
/// order, and nothing else.
fn put_and_drain_after_the_dead(q: &Queue<()>, seq: u64) {
    q.put_bytes_timeout(&message(0, seq), Duration::from_secs(10))
        .unwrap();
    for dead in 0..EARN {
        assert_eq!(get(q), (1, dead));
    }
    assert_eq!(get(q), (0, seq));
    assert!(q.try_get_bytes().unwrap_err().is_empty());
}

fn a_biased_producer_killed_between_puts_is_taken_over() {
    let q: Queue<()> = Queue::new().unwrap();
    kill(start_biased(
        role!(role_biased_producer),
        &["idle"],
        &q,
        PRODUCER_OWNER,
    ));
    put_and_drain_after_the_dead(&q, 0);
}

fn a_biased_producer_killed_inside_a_put_loses_only_that_put() {
    let q: Queue<()> = Queue::new().unwrap();
    let child = start_biased(role!(role_biased_producer), &["inside"], &q, PRODUCER_OWNER);
    // Inside: a put with a short deadline gives up and leaves the bias.
    let first = message(0, 0);
    let err = q
        .put_bytes_timeout(&first, Duration::from_millis(30))
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    kill(child);
    // Never the dead put's half-written message.
    put_and_drain_after_the_dead(&q, 1);
}

fn a_biased_producer_killed_inside_is_found_by_puts_shorter_than_a_liveness_slice() {
    // Each put gives up before a liveness slice (20 ms) has passed; at its
    // deadline it must still ask whether the thread inside lives, or no
    // put short enough (nor `close`, which waits in slices) ever gets in.
    let q: Queue<()> = Queue::new().unwrap();
    kill(start_biased(
        role!(role_biased_producer),
        &["inside"],
        &q,
        PRODUCER_OWNER,
    ));
    let put = (0..200).any(|_| {
        q.put_bytes_timeout(&message(0, 0), Duration::from_millis(15))
            .is_ok()
    });
    assert!(put, "200 puts of 15 ms each timed out on a dead thread");
    for dead in 0..EARN {
        assert_eq!(get(&q), (1, dead));
    }
    assert_eq!(get(&q), (0, 0));
    q.close();
    assert!(q.try_get_bytes().unwrap_err().is_closed());
}

fn a_biased_consumer_killed_holding_a_message_loses_only_that_message() {
    let q: Queue<()> = Queue::new().unwrap();
    for seq in 0..EARN + 10 {
        q.put_bytes(&message(0, seq)).unwrap();
    }
    let child = start_biased(role!(role_biased_consumer), &[], &q, CONSUMER_OWNER);
    // Inside: a get that may not wait gives up at once.
    assert!(q.try_get_bytes().is_err());
    kill(child);
    // The message the dead consumer held is gone with it; the rest follow.
    for seq in EARN + 1..EARN + 10 {
        assert_eq!(get(&q), (0, seq));
    }
    assert!(q.try_get_bytes().unwrap_err().is_empty());
}

fn a_forked_child_does_not_enter_by_its_parents_bias() {
    const COUNT: u64 = 20_000;
    let q: Queue<()> = Queue::builder().ring_bytes(64 * 1024).build().unwrap();
    let mut child = spawn(
        role!(role_fork_after_bias),
        &[&COUNT.to_string()],
        &[q.as_fd()],
    )
    .unwrap();
    let next = take_in_order(&q, EARN + 2 * COUNT);
    finish(&mut child);
    assert_eq!(next, [EARN + COUNT, COUNT]);
    assert!(q.try_get_bytes().unwrap_err().is_empty());
}

fn threads_taking_turns_in_bursts_move_every_message_once() {
    // Four producer threads put in bursts long enough to earn the bias, so
    // biases are granted and revoked between threads of one process; two
    // consumer threads do the same on the other side.
    const BURST: u64 = 300;
    const BURSTS: u64 = 20;
    let q: Queue<()> = Queue::builder().ring_bytes(64 * 1024).build().unwrap();
    let producers: Vec<_> = (0..4u32)
        .map(|p| {
            let q = q.clone();
            std::thread::spawn(move || {
                for b in 0..BURSTS {
                    for i in 0..BURST {
                        q.put_bytes(&message(p, b * BURST + i)).unwrap();
                    }
                    std::thread::yield_now();
                }
            })
        })
        .collect();
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while let Ok(m) = q.get_bytes_timeout(Duration::from_millis(500)) {
                    seen.push(check(&m));
                }
                seen
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    let mut all: Vec<(u32, u64)> = Vec::new();
    for c in consumers {
        let seen = c.join().unwrap();
        // Each consumer sees each producer's messages in order.
        for p in 0..4 {
            let mine: Vec<u64> = seen.iter().filter(|m| m.0 == p).map(|m| m.1).collect();
            assert!(mine.is_sorted(), "producer {p} out of order");
        }
        all.extend(seen);
    }
    all.sort_unstable();
    let expected: Vec<(u32, u64)> = (0..4u32)
        .flat_map(|p| (0..BURST * BURSTS).map(move |s| (p, s)))
        .collect();
    assert!(all == expected, "lost or duplicated messages");
}

fn a_process_without_membarrier_takes_a_bias_back_by_waiting() {
    // A process that may not issue membarrier revokes by waiting out a
    // grace period instead; it and a biased thread here put in turns.
    const COUNT: u64 = 2_000;
    let q: Queue<()> = Queue::builder().ring_bytes(64 * 1024).build().unwrap();
    for seq in 0..EARN {
        q.put_bytes(&message(0, seq)).unwrap();
    }
    if bias_possible() {
        assert_eq!(owner_word(&q, PRODUCER_OWNER), BIASED);
    }
    let mut child = multiproc_testkit::command(
        role!(role_put_without_membarrier),
        &[&COUNT.to_string()],
        &[q.as_fd()],
    )
    .env("MULTIPROC_NO_MEMBARRIER", "1")
    .stdin(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let consumer = std::thread::spawn({
        let q = q.clone();
        move || take_in_order(&q, EARN + 2 * COUNT)
    });
    for seq in EARN..EARN + COUNT {
        q.put_bytes(&message(0, seq)).unwrap();
    }
    finish(&mut child);
    assert_eq!(consumer.join().unwrap(), [EARN + COUNT, COUNT]);
}

fn a_try_or_timed_get_gives_a_busy_bias_back() {
    // One thread earns the consumer bias and holds a message in place.
    // Others must not block: a try gives up at once, a timed get at its
    // deadline, and both leave the lock as they found it.
    let q: Queue<()> = Queue::new().unwrap();
    for seq in 0..EARN + 3 {
        q.put_bytes(&message(0, seq)).unwrap();
    }
    for seq in 0..EARN {
        assert_eq!(get(&q), (0, seq));
    }
    let held = q.get_in_place().unwrap();
    if bias_possible() {
        assert_eq!(owner_word(&q, CONSUMER_OWNER), BIASED);
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            // Two messages wait behind the one held: only the busy lock
            // can make these fail.
            assert!(q.try_get_bytes().is_err());
            let start = Instant::now();
            let err = q.get_bytes_timeout(Duration::from_millis(50)).unwrap_err();
            assert!(err.is_timeout(), "{err:?}");
            assert!(start.elapsed() >= Duration::from_millis(50));
        })
        .join()
        .unwrap();
    });
    assert_eq!(check(&held), (0, EARN));
    drop(held);
    // The holder goes on by its bias; another thread then takes it back.
    assert_eq!(get(&q), (0, EARN + 1));
    std::thread::scope(|s| {
        s.spawn(|| assert_eq!(get(&q), (0, EARN + 2)));
    });
    assert!(q.try_get_bytes().unwrap_err().is_empty());
}

/// Starts a [`role_revoker`] child doing `op` on `q` while a biased thread is
/// inside, and SIGKILLs it while it waits for that thread to step out: it
/// holds the owner word at `owner` and the token at `token` is no longer
/// the biased thread's.
fn kill_a_revoker_while_it_waits(q: &Queue<()>, op: &str, owner: usize, token: usize) {
    let biased = bias_possible();
    if biased {
        assert_eq!(owner_word(q, owner), BIASED, "bias not granted");
        assert_eq!(word32(q, token), 1, "the first grant names slot 1");
    }
    let mut revoker = spawn(role!(role_revoker), &[op], &[q.as_fd()]).unwrap();
    let pid = u64::from(revoker.id());
    if biased {
        let waiting = multiproc_testkit::eventually(CHILD_LIMIT, || {
            owner_word(q, owner) & ID_MASK == pid && word32(q, token) != 1
        });
        assert!(waiting, "the revoker never started revoking");
    }
    // Well inside its wait (it spins briefly, then sleeps).
    std::thread::sleep(Duration::from_millis(50));
    revoker.kill().unwrap();
    revoker.wait().unwrap();
}

/// Long enough for a taker to find a dead revoker (a liveness slice is
/// 20 ms) and, were the handover broken, to enter beside the holder.
const TAKEOVER_WINDOW: Duration = Duration::from_millis(300);

/// `holder` is inside a put of message `last` as producer 1, which it
/// finishes when told on `go` and then says so on `ready`. Puts message 0
/// as producer 0 from a thread of ours meanwhile, lets the holder finish
/// after [`TAKEOVER_WINDOW`], and checks that the queue holds every
/// acknowledged message whole and once: producer 1's `0..=last`, then ours.
fn put_beside_a_holder(
    q: &Queue<()>,
    ready: &Queue<()>,
    go: &Queue<()>,
    holder: &mut Child,
    last: u64,
) {
    let taker = std::thread::spawn({
        let q = q.clone();
        move || {
            q.put_bytes_timeout(&message(0, 0), CHILD_LIMIT)
                .map_err(|e| e.to_string())
        }
    });
    std::thread::sleep(TAKEOVER_WINDOW);
    go.put(()).unwrap();
    // The holder's put returned: its message is acknowledged.
    ready.get_timeout(CHILD_LIMIT).unwrap();
    finish(holder);
    taker.join().unwrap().unwrap();
    for seq in 0..=last {
        assert_eq!(get(q), (1, seq));
    }
    assert_eq!(get(q), (0, 0));
    assert!(q.try_get_bytes().unwrap_err().is_empty());
}

fn killed_revoker_on_the_producer_side_never_lets_a_second_producer_in() {
    let q: Queue<()> = Queue::new().unwrap();
    let (ready, go): (Queue<()>, Queue<()>) = (Queue::new().unwrap(), Queue::new().unwrap());
    let mut holder = spawn(
        role!(role_biased_producer),
        &["hold"],
        &[q.as_fd(), ready.as_fd(), go.as_fd()],
    )
    .unwrap();
    ready.get_timeout(CHILD_LIMIT).unwrap();
    kill_a_revoker_while_it_waits(&q, "put", PRODUCER_OWNER, PRODUCER_TOKEN);
    put_beside_a_holder(&q, &ready, &go, &mut holder, EARN);
}

fn killed_revoker_on_the_consumer_side_never_lets_a_second_consumer_in() {
    const MORE: u64 = 6;
    let q: Queue<()> = Queue::new().unwrap();
    for seq in 0..=EARN + MORE {
        q.put_bytes(&message(0, seq)).unwrap();
    }
    let (ready, go): (Queue<()>, Queue<()>) = (Queue::new().unwrap(), Queue::new().unwrap());
    let mut holder = spawn(
        role!(role_biased_consumer),
        &["hold"],
        &[q.as_fd(), ready.as_fd(), go.as_fd()],
    )
    .unwrap();
    // It holds message EARN in place, inside the lock by its bias.
    ready.get_timeout(CHILD_LIMIT).unwrap();
    kill_a_revoker_while_it_waits(&q, "get", CONSUMER_OWNER, CONSUMER_TOKEN);
    let taker = std::thread::spawn({
        let q = q.clone();
        move || check(&q.get_bytes_timeout(CHILD_LIMIT).unwrap())
    });
    std::thread::sleep(TAKEOVER_WINDOW);
    go.put(()).unwrap();
    ready.get_timeout(CHILD_LIMIT).unwrap();
    finish(&mut holder);
    // The next message after the held one, and then each of the rest once.
    assert_eq!(taker.join().unwrap(), (0, EARN + 1));
    for seq in EARN + 2..=EARN + MORE {
        assert_eq!(get(&q), (0, seq));
    }
    assert!(q.try_get_bytes().unwrap_err().is_empty());
}

/// State letter of `/proc/PID/stat`.
fn task_state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rfind(')')
        .and_then(|at| stat[at + 1..].trim_start().chars().next())
        .unwrap_or('?')
}

/// A worker thread is inside a put while its process's main thread has
/// exited: the process lives, so its lock must not be taken from it.
fn a_put_by_a_thread_whose_main_thread_exited(mode: &str) {
    let q: Queue<()> = Queue::new().unwrap();
    let (ready, go): (Queue<()>, Queue<()>) = (Queue::new().unwrap(), Queue::new().unwrap());
    let mut child = spawn(
        role!(role_put_after_main_exits),
        &[mode],
        &[q.as_fd(), ready.as_fd(), go.as_fd()],
    )
    .unwrap();
    ready.get_timeout(CHILD_LIMIT).unwrap();
    let zombie_main = multiproc_testkit::eventually(CHILD_LIMIT, || task_state(child.id()) == 'Z');
    assert!(zombie_main, "the child's main thread did not exit");
    let last = if mode == "biased" { EARN } else { 0 };
    put_beside_a_holder(&q, &ready, &go, &mut child, last);
}

fn a_thread_putting_after_its_main_thread_exited_keeps_its_lock() {
    a_put_by_a_thread_whose_main_thread_exited("plain");
}

fn a_biased_thread_putting_after_its_main_thread_exited_keeps_its_bias() {
    a_put_by_a_thread_whose_main_thread_exited("biased");
}

/// Attaches the inherited queue from another pid namespace: refused, with
/// the typed reason.
fn role_attach_from_another_namespace(_: &[String]) {
    use multiproc_core::{HeaderError, SegmentError};
    use multiproc_queue::QueueError;
    let segment = Segment::from_fd(inherited_fds().remove(0)).unwrap();
    match Queue::<()>::attach(segment) {
        Err(QueueError::Segment(SegmentError::Header(HeaderError::ForeignPidNamespace {
            ..
        }))) => {}
        Err(e) => panic!("refused for another reason: {e:?}"),
        Ok(_) => panic!("a queue from another pid namespace was attached"),
    }
}

fn a_queue_from_another_pid_namespace_is_refused_on_attach() {
    // Its owner words hold thread ids of our namespace: there they would
    // name other tasks, and a live holder could be judged dead.
    let q: Queue<()> = Queue::new().unwrap();
    let Some(mut cmd) = multiproc_testkit::command_in_new_pid_namespace(
        role!(role_attach_from_another_namespace),
        &[],
        &[q.as_fd()],
    ) else {
        return;
    };
    let status = cmd.stdin(std::process::Stdio::null()).status().unwrap();
    assert!(status.success(), "{status:?}");
}

fn main() {
    // Registered with membarrier before the test threads start: a process
    // that first uses a queue with threads running registers in the
    // background, and grants no bias until that is done.
    multiproc_queue::prepare_process();
    let roles: &[Role] = &[
        role!(role_biased_producer),
        role!(role_biased_consumer),
        role!(role_fork_after_bias),
        role!(role_put_without_membarrier),
        role!(role_revoker),
        role!(role_put_after_main_exits),
        role!(role_attach_from_another_namespace),
    ];
    run(
        roles,
        tests![
            a_biased_producer_killed_between_puts_is_taken_over,
            a_biased_producer_killed_inside_a_put_loses_only_that_put,
            a_biased_producer_killed_inside_is_found_by_puts_shorter_than_a_liveness_slice,
            a_biased_consumer_killed_holding_a_message_loses_only_that_message,
            a_forked_child_does_not_enter_by_its_parents_bias,
            a_process_without_membarrier_takes_a_bias_back_by_waiting,
            threads_taking_turns_in_bursts_move_every_message_once,
            a_try_or_timed_get_gives_a_busy_bias_back,
            killed_revoker_on_the_producer_side_never_lets_a_second_producer_in,
            killed_revoker_on_the_consumer_side_never_lets_a_second_consumer_in,
            a_thread_putting_after_its_main_thread_exited_keeps_its_lock,
            a_biased_thread_putting_after_its_main_thread_exited_keeps_its_bias,
            a_queue_from_another_pid_namespace_is_refused_on_attach,
        ],
    );
}
