//! In-process tests of bad input and size edges; the cross-process suite is
//! `tests/cross_process.rs`.

use crate::layout::{MAGIC, RING_OFFSET, VERSION, pack};
use crate::{JoinableQueue, Queue, QueueError, SimpleQueue};
use multiproc_core::{Header, Segment, SegmentError};
use multiproc_testkit::pattern;
use std::time::Duration;

const TAIL: usize = 384;
const HEAD: usize = 640;
const CACHED_TAIL: usize = 520;
const CACHED_HEAD: usize = 264;
const TAIL_COPY: usize = 280;
const RING_LEN: usize = 128;
const KIND: usize = 128 + 24;
const FLAGS: usize = 128 + 28;

fn small() -> Queue<()> {
    Queue::builder().ring_bytes(8192).build().unwrap()
}

fn write_u64(q: &Queue<()>, off: usize, v: u64) {
    q.segment().write_at(off, &v.to_ne_bytes()).unwrap();
}

fn write_u32(q: &Queue<()>, off: usize, v: u32) {
    q.segment().write_at(off, &v.to_ne_bytes()).unwrap();
}

fn is_corrupt_get(q: &Queue<()>) -> bool {
    matches!(
        q.get_bytes_timeout(Duration::from_millis(20)),
        Err(crate::GetTimeoutError::Failed(QueueError::Corrupt(_)))
    )
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Queue<String>>();
    check::<SimpleQueue<String>>();
    check::<JoinableQueue<String>>();
}

#[test]
fn attach_rejects_foreign_and_corrupt_segments() {
    // Zeroed: no header.
    let zero = Segment::anonymous(RING_OFFSET + 8192).unwrap();
    assert!(matches!(
        Queue::<u8>::attach(zero),
        Err(QueueError::Segment(SegmentError::Header(_)))
    ));
    // Wrong magic and wrong version.
    for (magic, version) in [(*b"NOTAQUE\0", VERSION), (MAGIC, VERSION + 1)] {
        let s = Segment::anonymous(RING_OFFSET + 8192).unwrap();
        s.publish_header(0, &Header::new(magic, version, s.len() as u64))
            .unwrap();
        assert!(Queue::<u8>::attach(s).is_err());
    }
    // A good header over a nonsense configuration.
    let s = Segment::anonymous(RING_OFFSET + 8192).unwrap();
    s.publish_header(0, &Header::new(MAGIC, VERSION, s.len() as u64))
        .unwrap();
    assert!(matches!(
        Queue::<u8>::attach(s),
        Err(QueueError::Corrupt("ring length"))
    ));
    // A real queue with a corrupted ring length or kind.
    for (off, value) in [(RING_LEN, 12345u64), (RING_LEN, u64::MAX), (KIND, 77)] {
        let q = small();
        write_u64(&q, off, value);
        let fd = q.segment().as_fd_dup();
        let err = Queue::<()>::attach(Segment::from_fd(fd).unwrap()).unwrap_err();
        assert!(matches!(err, QueueError::Corrupt(_)), "{err:?}");
    }
    // Flag bits nobody defined.
    let q = small();
    write_u32(&q, FLAGS, 2);
    let fd = q.segment().as_fd_dup();
    assert!(matches!(
        Queue::<()>::attach(Segment::from_fd(fd).unwrap()),
        Err(QueueError::Corrupt("queue flags"))
    ));
    // Kinds are checked.
    let simple = SimpleQueue::<u8>::new().unwrap();
    let fd = simple.segment().as_fd_dup();
    assert!(matches!(
        Queue::<u8>::attach(Segment::from_fd(fd).unwrap()),
        Err(QueueError::WrongKind { .. })
    ));
}

trait DupFd {
    fn as_fd_dup(&self) -> std::os::fd::OwnedFd;
}

impl DupFd for Segment {
    fn as_fd_dup(&self) -> std::os::fd::OwnedFd {
        use std::os::fd::AsFd;
        self.as_fd().try_clone_to_owned().unwrap()
    }
}

#[test]
fn corrupt_indices_are_errors_not_ub_or_hangs() {
    // Head and tail offsets out of range or misaligned.
    for (off, value) in [
        (HEAD, pack(0, 8192)),
        (HEAD, pack(0, 7)),
        (TAIL, pack(0, 1 << 31)),
        (TAIL, pack(0, 33)),
    ] {
        let q = small();
        q.put_bytes(b"x").unwrap();
        write_u64(&q, CACHED_TAIL, 0);
        write_u64(&q, off, value);
        assert!(is_corrupt_get(&q), "get with {off}={value:#x}");
        // A producer that needs a fresh head sees the corruption too.
        if off == HEAD {
            assert!(q.try_put_bytes(&[0; 5000]).unwrap_err().is_failed());
        }
    }
    // A corrupt cached head, or producers' copy of tail, is caught too.
    for (off, value) in [(CACHED_HEAD, pack(0, 9)), (TAIL_COPY, pack(0, 8192 + 16))] {
        let q = small();
        write_u64(&q, off, value);
        assert!(q.try_put_bytes(b"y").unwrap_err().is_failed(), "{off}");
    }
}

#[test]
fn a_blocked_put_takes_the_first_room_freed_even_when_a_batch_is_not() {
    // Fill a 4 KiB ring with 240-byte messages (256-byte records, so one
    // freed record makes room for the next at tail); then free one record,
    // far less than the batch a spinning producer waits for. The blocked
    // put must still go through once it sleeps.
    let q: Queue<()> = Queue::builder().ring_bytes(4096).build().unwrap();
    let mut queued = 0;
    while q.try_put_bytes(&[1; 240]).is_ok() {
        queued += 1;
    }
    let consumer = {
        let q = q.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            q.get_bytes().unwrap()
        })
    };
    let start = std::time::Instant::now();
    q.put_bytes_timeout(&[2; 240], Duration::from_secs(5))
        .unwrap();
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(40), "{waited:?}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    assert_eq!(consumer.join().unwrap(), vec![1; 240]);
    assert_eq!(q.qsize(), queued);
}

#[test]
fn corrupt_records_are_errors() {
    // Record length beyond the ring, beyond the published bytes, unknown kind.
    for (word, value) in [(0usize, u32::MAX), (0, 4000), (1, 0xdead_beef)] {
        let q = small();
        q.put_bytes(b"hello").unwrap();
        write_u32(&q, RING_OFFSET + 4 * word, value);
        assert!(is_corrupt_get(&q), "record word {word} = {value:#x}");
        // Still an error, still no hang, on the next try.
        assert!(is_corrupt_get(&q));
    }
}

#[test]
fn a_huge_announced_total_does_not_allocate() {
    let q: Queue<()> = Queue::builder().ring_bytes(8192).build().unwrap();
    // Produce a real FIRST record: a message larger than half the ring, with
    // room for only its first fragment (a thread keeps writing the rest).
    let writer = {
        let q = q.clone();
        std::thread::spawn(move || {
            let _ = q.put_bytes_timeout(&pattern(20_000, 0), Duration::from_secs(1));
        })
    };
    // Wait until the first fragment is published (tail moved).
    let start = std::time::Instant::now();
    loop {
        let mut tail = [0u8; 8];
        q.segment().read_at(TAIL, &mut tail).unwrap();
        if u64::from_ne_bytes(tail) != 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "writer never wrote"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // Rewrite FIRST's total (header bytes 8..16) to 2^60.
    q.segment()
        .write_at(RING_OFFSET + 8, &(1u64 << 60).to_ne_bytes())
        .unwrap();
    assert!(is_corrupt_get(&q));
    writer.join().unwrap();
}

#[test]
fn sizes_at_the_edges_round_trip_typed_and_bytes() {
    let q: Queue<Vec<u8>> = Queue::builder().ring_bytes(16 * 1024).build().unwrap();
    let ring = q.ring_bytes();
    let max = q.max_in_place();
    let sizes = [
        0,
        1,
        15,
        16,
        17,
        max - 1,
        max,
        max + 1,
        ring - 1,
        ring,
        ring + 1,
        5 * ring + 3,
    ];
    let producer = {
        let q = q.clone();
        std::thread::spawn(move || {
            for &len in &sizes {
                q.put_bytes(&pattern(len, 0)).unwrap();
                q.put(pattern(len, 0)).unwrap();
            }
        })
    };
    for &len in &sizes {
        let raw = q.get_bytes_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(raw.len(), len);
        assert!(raw == pattern(len, 0), "bytes of size {len}");
        let typed = q.get_timeout(Duration::from_secs(10)).unwrap();
        assert!(typed == pattern(len, 0), "typed of size {len}");
    }
    producer.join().unwrap();
    assert!(q.is_empty());
}

#[test]
fn too_large_is_refused_and_hands_the_value_back() {
    let q: Queue<Vec<u8>> = Queue::builder().max_message(100).build().unwrap();
    let err = q.put_bytes(&[0; 101]).unwrap_err();
    assert!(matches!(
        err.failure(),
        Some(QueueError::TooLarge { len: 101, max: 100 })
    ));
    q.put_bytes(&[0; 100]).unwrap();
    let err = q.try_put(vec![1; 200]).unwrap_err();
    assert!(err.is_failed());
    assert_eq!(err.into_inner().len(), 200);
    let with = q.put_with(1000, |_| unreachable!()).unwrap_err();
    assert!(with.is_failed());
}

#[test]
fn a_value_that_does_not_decode_is_an_error_and_the_queue_goes_on() {
    let q: Queue<String> = Queue::new().unwrap();
    q.put_bytes(&[0xff, 0xff, 0xff]).unwrap();
    q.put("next".to_string()).unwrap();
    let err = q.get().unwrap_err();
    assert!(err.is_failed());
    assert!(std::error::Error::source(&err).is_some());
    assert_eq!(q.get().unwrap(), "next");
}

#[test]
fn a_value_holding_descriptors_is_refused() {
    let q: Queue<Segment> = Queue::new().unwrap();
    let seg = Segment::anonymous(4096).unwrap();
    let err = q.put(seg).unwrap_err();
    match err.failure() {
        Some(QueueError::Codec(c)) => assert!(c.is_descriptors_unsupported()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn put_with_panicking_publishes_nothing() {
    let q = small();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = q.put_with(10, |_| panic!("boom"));
    }));
    assert!(result.is_err());
    assert!(q.try_get_bytes().unwrap_err().is_empty());
    q.put_bytes(b"ok").unwrap();
    assert_eq!(q.get_bytes().unwrap(), b"ok");
}

#[test]
fn errors_display_lowercase_and_debug_without_the_value() {
    let q = Queue::with_capacity(1).unwrap();
    q.put(1u8).unwrap();
    let err = q.try_put(2).unwrap_err();
    assert_eq!(err.to_string(), "putting into a full queue");
    assert_eq!(format!("{err:?}"), "Full(..)");
    let e = Queue::<u8>::new().unwrap().try_get().unwrap_err();
    assert_eq!(e.to_string(), "getting from an empty queue");
    assert!(format!("{q:?}").starts_with("Queue { fd: "));
}

#[test]
fn ring_wraps_many_times_with_mixed_sizes() {
    let q: Queue<()> = Queue::builder().ring_bytes(4096).build().unwrap();
    let producer = {
        let q = q.clone();
        std::thread::spawn(move || {
            for i in 0..20_000usize {
                q.put_bytes(&pattern(i % 700, 0)).unwrap();
            }
        })
    };
    for i in 0..20_000usize {
        let m = q.get_bytes().unwrap();
        assert!(m == pattern(i % 700, 0), "message {i}");
    }
    producer.join().unwrap();
}

#[test]
fn many_threads_mpmc_in_process() {
    let q: Queue<(u32, u32)> = Queue::with_capacity(64).unwrap();
    let producers: Vec<_> = (0..3)
        .map(|p| {
            let q = q.clone();
            std::thread::spawn(move || {
                for i in 0..5000 {
                    q.put((p, i)).unwrap();
                }
            })
        })
        .collect();
    let consumers: Vec<_> = (0..3)
        .map(|_| {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Ok(v) = q.get() {
                    got.push(v);
                }
                got
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    q.close();
    let mut all: Vec<(u32, u32)> = consumers
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    all.sort_unstable();
    let want: Vec<(u32, u32)> = (0..3)
        .flat_map(|p| (0..5000).map(move |i| (p, i)))
        .collect();
    assert_eq!(all, want);
}

/// Its encoding grows by 100 bytes each time it is serialized.
struct Growing {
    calls: std::cell::Cell<usize>,
    len: usize,
}

impl serde::Serialize for Growing {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = self.len + 100 * self.calls.get();
        self.calls.set(self.calls.get() + 1);
        s.serialize_bytes(&pattern(n, 0))
    }
}

impl<'de> serde::Deserialize<'de> for Growing {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = <Vec<u8>>::deserialize(d)?;
        Ok(Growing {
            calls: std::cell::Cell::new(0),
            len: bytes.len(),
        })
    }
}

#[test]
fn a_value_that_grows_after_it_was_measured_is_put_whole_once() {
    // Past the direct limit and within one record: measured, then encoded
    // in place into exactly the measured room, which it outgrows; nothing
    // is published, and the value goes through a buffer instead.
    let q: Queue<Growing> = Queue::builder().ring_bytes(1 << 20).build().unwrap();
    let len = crate::ring::producer::DIRECT_ENCODE_MAX_FOR_TESTS + 1000;
    let value = Growing {
        calls: std::cell::Cell::new(0),
        len,
    };
    q.put_ref(&value).unwrap_or_else(|_| panic!("put"));
    // In place (did not fit), measured, exact (outgrown), then buffered.
    assert_eq!(value.calls.get(), 4);
    assert_eq!(q.get().unwrap().len, len + 300);
    match q.try_get() {
        Err(err) => assert!(err.is_empty(), "{err}"),
        Ok(_) => panic!("one message, not two"),
    }
}

#[test]
fn typed_values_around_the_direct_encoding_limit() {
    let q: Queue<Vec<u8>> = Queue::builder().ring_bytes(1 << 20).build().unwrap();
    let limit = crate::ring::producer::DIRECT_ENCODE_MAX_FOR_TESTS;
    for len in [
        0,
        1,
        63,
        64,
        65,
        limit - 20,
        limit - 16,
        limit,
        limit + 1,
        3 * limit,
    ] {
        q.put(pattern(len, 0)).unwrap();
        assert!(
            q.get().unwrap() == pattern(len, 0),
            "typed value of {len} bytes"
        );
    }
    // A full ring: the direct attempt finds no room, the fallback waits.
    let small: Queue<Vec<u8>> = Queue::builder().ring_bytes(4096).build().unwrap();
    small.put(pattern(1500, 0)).unwrap();
    small.put(pattern(1500, 0)).unwrap();
    assert!(small.try_put(pattern(1500, 0)).unwrap_err().is_full());
    assert_eq!(small.get().unwrap(), pattern(1500, 0));
    // The free bytes are split by the end of the ring now (1056 + 1504):
    // a value that fits one part goes in place after the wrap.
    small.put(pattern(1000, 0)).unwrap();
    assert_eq!(small.get().unwrap(), pattern(1500, 0));
    assert_eq!(small.get().unwrap(), pattern(1000, 0));
}

/// Runs `f` with a `put` that puts from a thread of its own (and waits
/// until it has), so that the producer lock is biased to that thread and
/// not to the caller's.
fn with_producer_thread(q: &Queue<()>, f: impl FnOnce(&dyn Fn(&[u8]))) {
    std::thread::scope(|s| {
        let (to_put, puts) = std::sync::mpsc::channel::<Vec<u8>>();
        let (ack, acks) = std::sync::mpsc::channel::<()>();
        s.spawn(move || {
            for msg in puts {
                q.put_bytes(&msg).unwrap();
                ack.send(()).unwrap();
            }
        });
        let put = |msg: &[u8]| {
            to_put.send(msg.to_vec()).unwrap();
            acks.recv().unwrap();
        };
        f(&put);
        drop(to_put);
    });
}

#[test]
fn only_a_lone_consumer_outpaced_by_its_producer_paces_when_it_catches_up() {
    crate::prepare_process();
    let q = small();
    with_producer_thread(&q, |put| lone_consumer_paces(&q, put));
}

fn lone_consumer_paces(q: &Queue<()>, put: &dyn Fn(&[u8])) {
    // One message at a time, as in a ping-pong: every look finds one message
    // or none; at the end of each of the ring's laps, a pad and the record
    // after it (48-byte records do not tile 8 KiB). Long enough for the
    // consumer lock to be biased to this thread, the producer lock to the
    // producer's.
    for i in 0..1000u32 {
        let msg = [i.to_le_bytes(); 5].concat();
        put(&msg);
        assert_eq!(q.get_bytes().unwrap(), msg);
        assert!(!q.paces_next_get(), "message {i}");
    }
    if !crate::fence::asymmetric() {
        // No membarrier: no bias, so no consumer is known to be alone.
        put(&[1]);
        put(&[2]);
        assert_eq!(q.get_bytes().unwrap(), [1]);
        assert_eq!(q.get_bytes().unwrap(), [2]);
        assert!(!q.paces_next_get());
        eprintln!("    no membarrier here: no bias, so no pacing");
        return;
    }
    // A look that finds two messages: outpaced, but pacing waits until the
    // consumer has caught up with the tail it saw.
    put(&[1]);
    put(&[2]);
    assert_eq!(q.get_bytes().unwrap(), [1]);
    assert!(!q.paces_next_get());
    assert_eq!(q.get_bytes().unwrap(), [2]);
    assert!(q.paces_next_get());
    // Only the thread the consumer side is biased to.
    std::thread::scope(|s| {
        s.spawn(|| assert!(!q.paces_next_get()));
    });
    // A non-blocking get looks at once, and its look (one message) turns
    // pacing off.
    put(&[3]);
    assert_eq!(q.try_get_bytes().unwrap(), [3]);
    assert!(!q.paces_next_get());
    // A paced get still returns what was put before and meanwhile.
    for i in 4..7u8 {
        put(&[i]);
    }
    for i in 4..7u8 {
        assert_eq!(q.get_bytes().unwrap(), [i]);
    }
    assert!(q.paces_next_get());
    put(&[7]);
    assert_eq!(q.get_bytes().unwrap(), [7]);
    // The paced get's look found one message: back to looking at once.
    assert!(!q.paces_next_get());
    // An empty look turns it off too.
    put(&[8]);
    put(&[9]);
    assert_eq!(q.get_bytes().unwrap(), [8]);
    assert_eq!(q.get_bytes().unwrap(), [9]);
    assert!(q.paces_next_get());
    assert!(q.try_get_bytes().is_err());
    assert!(!q.paces_next_get());

    // Built without pacing, for this handle and one attached to it.
    let q: Queue<()> = Queue::builder()
        .ring_bytes(8192)
        .pacing(false)
        .build()
        .unwrap();
    let other = Queue::<()>::attach(Segment::from_fd(q.segment().as_fd_dup()).unwrap()).unwrap();
    assert!(small().pacing());
    assert!(!q.pacing() && !other.pacing());
    for h in [&q, &other] {
        for i in 0..200u8 {
            q.put_bytes(&[i]).unwrap();
            assert_eq!(h.get_bytes().unwrap(), [i]);
        }
        q.put_bytes(&[1]).unwrap();
        q.put_bytes(&[2]).unwrap();
        assert_eq!(h.get_bytes().unwrap(), [1]);
        assert_eq!(h.get_bytes().unwrap(), [2]);
        assert!(!h.paces_next_get());
    }
}

#[test]
fn a_thread_that_puts_and_gets_does_not_pace() {
    crate::prepare_process();
    let q = small();
    // Both locks biased to this thread.
    for i in 0..1000u32 {
        q.put_bytes(&i.to_le_bytes()).unwrap();
        assert_eq!(q.get_bytes().unwrap(), i.to_le_bytes());
    }
    if !crate::fence::asymmetric() {
        // No membarrier: no bias, so nothing here could pace anyway.
        eprintln!("    no membarrier here: no bias, so no pacing to check");
        return;
    }
    // Bursts: each first look finds several messages. Pacing would wait
    // for a producer to run ahead, and the producer is this thread.
    for burst in 0..10u8 {
        for i in 0..4 {
            q.put_bytes(&[burst, i]).unwrap();
        }
        for i in 0..4 {
            assert_eq!(q.get_bytes().unwrap(), [burst, i]);
        }
        assert!(!q.paces_next_get(), "burst {burst}");
    }
}

/// A queue whose 64 KiB ring holds as many 1000-byte messages as fit.
fn full_small_ring() -> Queue<()> {
    let q: Queue<()> = Queue::builder().ring_bytes(64 * 1024).build().unwrap();
    while q.try_put_bytes(&[7; 1000]).is_ok() {}
    q
}

#[test]
fn a_large_put_with_that_cannot_start_hands_fill_back_uncalled() {
    // Larger than a record can be: it goes through a buffer in fragments.
    // `fill` must not run unless the put will go through, or a timeout
    // would be reported as success with nothing published.
    let q = full_small_ring();
    let len = 200_000;
    assert!(len > q.max_in_place());
    let before = q.qsize();
    let err = q
        .put_with_timeout(len, |_| panic!("fill ran"), Duration::from_millis(20))
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    let err = q.try_put_with(len, |_| panic!("fill ran")).unwrap_err();
    assert!(err.is_full(), "{err:?}");
    q.close();
    let err = q.put_with(len, |_| panic!("fill ran")).unwrap_err();
    assert!(err.is_closed(), "{err:?}");
    assert_eq!(q.qsize(), before);
}

#[test]
fn a_large_put_with_once_started_is_delivered_whole_even_across_a_close() {
    // The first fragment has room, so `fill` runs and the put is
    // committed: the rest waits for a consumer, and a close meanwhile
    // does not cut it short.
    let q: Queue<()> = Queue::builder().ring_bytes(64 * 1024).build().unwrap();
    let len = 200_000;
    let body = |j: usize| (j % 251) as u8;
    std::thread::scope(|s| {
        let producer = s.spawn(|| {
            q.put_with_timeout(
                len,
                |buf| buf.iter_mut().enumerate().for_each(|(j, b)| *b = body(j)),
                Duration::from_millis(20),
            )
            .map_err(|e| e.to_string())
        });
        // Long enough for the producer to fill the ring with the first
        // fragments, and for its 20 ms to run out.
        std::thread::sleep(Duration::from_millis(100));
        q.close();
        let m = q.get_bytes().unwrap();
        assert_eq!(producer.join().unwrap(), Ok(()));
        assert_eq!(m.len(), len);
        assert!(m.iter().enumerate().all(|(j, &b)| b == body(j)));
    });
    assert!(q.get_bytes().unwrap_err().is_closed());
}

/// A notifier killed between clearing the data word's "someone sleeps" bit
/// (its CAS) and its wake leaves a sleeping consumer with nobody to wake it:
/// later puts see the bit clear and wake nobody either. The consumer must
/// look again by itself within `futex::RECHECK`.
#[test]
fn a_notifier_killed_before_its_wake_strands_no_consumer() {
    use std::sync::atomic::Ordering;
    use std::sync::mpsc;

    let q: Queue<u32> = Queue::new().unwrap();
    let consumer = q.clone();
    let (got, received) = mpsc::channel();
    std::thread::spawn(move || got.send(consumer.get().unwrap()).unwrap());
    let data = &q.ring.ctl().wait.data;
    // The consumer announced itself (bit 0) and sleeps.
    while data.load(Ordering::SeqCst) & 1 == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50));
    // The dead notifier's CAS: bit 0 cleared, sequence bumped, no wake.
    let v = data.load(Ordering::SeqCst);
    data.compare_exchange(v, v.wrapping_add(1), Ordering::SeqCst, Ordering::SeqCst)
        .unwrap();
    // Its item (and any later put) finds nobody announced.
    q.put(7).unwrap();
    assert_eq!(
        received.recv_timeout(multiproc_core::futex::RECHECK + Duration::from_secs(2)),
        Ok(7),
        "the consumer slept on with an item in the queue"
    );
}

/// The offset half of the tail word: where the next record goes.
fn tail_offset(segment: &Segment) -> usize {
    let mut word = [0u8; 8];
    segment.read_at(TAIL, &mut word).unwrap();
    (u64::from_ne_bytes(word) & u64::from(u32::MAX)) as usize
}

/// The record bytes of a `len`-byte message (16-byte header, payload
/// padded to 16).
fn record_len(len: usize) -> usize {
    16 + len.next_multiple_of(16)
}

#[test]
fn a_large_record_goes_back_to_the_start_while_its_reader_keeps_up() {
    // A reader one message behind: the records take turns in the first
    // three slots of the ring (the start is free again once the record
    // after it is read) instead of walking all of it.
    let q: Queue<()> = Queue::builder().ring_bytes(4 << 20).build().unwrap();
    let len = 300_000;
    for i in 0..20 {
        q.put_with(len, |buf| buf.copy_from_slice(&pattern(len, i)))
            .map_err(|_| "put_with")
            .unwrap();
        let tail = tail_offset(q.segment());
        assert!(tail <= 3 * record_len(len), "put {i}: tail at {tail}");
        if i > 0 {
            let m = q.get_in_place().unwrap();
            assert!(*m == pattern(len, i - 1), "message {}", i - 1);
        }
    }
    assert_eq!(q.get_bytes().unwrap(), pattern(len, 19));
    assert!(q.is_empty());
}

#[test]
fn a_large_record_follows_a_backlog_and_small_ones_never_wrap_early() {
    let q: Queue<()> = Queue::builder().ring_bytes(4 << 20).build().unwrap();
    let len = 300_000;
    for i in 0..3 {
        q.put_bytes(&pattern(len, i)).unwrap();
    }
    assert_eq!(q.get_bytes().unwrap(), pattern(len, 0));
    // Two records still unread: the next goes after them, not to the
    // start that the first freed.
    q.put_bytes(&pattern(len, 3)).unwrap();
    assert_eq!(tail_offset(q.segment()), 4 * record_len(len));
    for i in 1..4 {
        assert_eq!(q.get_bytes().unwrap(), pattern(len, i));
    }
    // Below the threshold a record goes after the last one, read or not.
    let small = 100_000;
    let start = tail_offset(q.segment());
    q.put_bytes(&pattern(small, 9)).unwrap();
    assert_eq!(tail_offset(q.segment()), start + record_len(small));
    assert_eq!(q.get_bytes().unwrap(), pattern(small, 9));
}

#[test]
fn a_large_record_takes_the_place_of_the_last_one_in_an_empty_ring() {
    let q: Queue<()> = Queue::builder().ring_bytes(4 << 20).build().unwrap();
    let len = 300_000;
    let rec = record_len(len);
    q.put_bytes(&pattern(len, 0)).unwrap();
    assert_eq!(q.get_bytes().unwrap(), pattern(len, 0));
    // Empty, head and tail at the end of the first record: the next of the
    // same size fills the ring exactly, from offset 0 up to head.
    q.put_bytes(&pattern(len, 1)).unwrap();
    assert_eq!(tail_offset(q.segment()), rec, "not over the last one");
    // Full, and not mistaken for empty.
    assert_eq!(q.qsize(), 1);
    assert!(!q.is_empty());
    assert!(q.try_put_bytes(b"x").is_err(), "a full ring took more");
    let got = q.get_bytes_timeout(Duration::from_secs(5));
    assert_eq!(got.expect("a full ring looked empty"), pattern(len, 1));
    assert!(q.is_empty());
    // Room again: small records go after it, as usual.
    q.put_bytes(b"small").unwrap();
    assert_eq!(tail_offset(q.segment()), rec + record_len(5));
    assert_eq!(q.get_bytes().unwrap(), b"small");
}

#[test]
fn a_full_ring_is_read_by_every_way_of_reading() {
    // The same exact fill, read typed, in place, into a buffer and by a
    // non-blocking get; each time the ring is full, then empty.
    let q: Queue<Vec<u8>> = Queue::builder().ring_bytes(4 << 20).build().unwrap();
    let value = pattern(300_000, 7);
    let encoded = multiproc_core::codec::encode(&value).unwrap();
    let rec = record_len(encoded.len());
    let mut buf = Vec::new();
    for round in 0..8 {
        q.put_ref(&value).unwrap();
        if round > 0 {
            assert_eq!(tail_offset(q.segment()), rec, "round {round}");
        }
        assert_eq!(q.qsize(), 1, "round {round}");
        match round % 4 {
            0 => assert_eq!(q.get().unwrap(), value),
            1 => assert!(*q.get_in_place().unwrap() == encoded[..]),
            2 => {
                q.get_bytes_into(&mut buf).unwrap();
                assert_eq!(buf, encoded);
            }
            _ => assert_eq!(q.try_get_bytes().unwrap(), encoded),
        }
        assert!(q.is_empty(), "round {round}");
        assert!(q.try_get_bytes().is_err(), "round {round}: read twice");
    }
}

#[test]
fn a_producer_waits_a_moment_for_the_reader_of_the_last_large_record() {
    let q: Queue<()> = Queue::builder().ring_bytes(4 << 20).build().unwrap();
    let len = 300_000;
    q.put_bytes(&pattern(len, 0)).unwrap();
    let reader = q.clone();
    let (took, taken) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let m = reader.get_in_place().unwrap();
        took.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(*m == pattern(len, 0));
    });
    taken.recv().unwrap();
    // As if the last large write took 4 s: the wait may last 500 ms, and
    // the reader lets go after 50. The reader ran on another CPU, so the
    // wait spins (on this CPU it yields, and ends with its spin budget).
    reader_ran_elsewhere(&q);
    q.ring.set_large_write_for_tests(Duration::from_secs(4));
    let start = std::time::Instant::now();
    q.put_bytes(&pattern(len, 1)).unwrap();
    assert!(start.elapsed() >= Duration::from_millis(30), "did not wait");
    assert_eq!(
        tail_offset(q.segment()),
        record_len(len),
        "not over the record the reader let go of"
    );
    holder.join().unwrap();
    assert_eq!(q.get_bytes().unwrap(), pattern(len, 1));
}

/// Sets the consumer's CPU hint beside head to a CPU no thread runs on.
fn reader_ran_elsewhere<T>(q: &Queue<T>) {
    q.segment()
        .write_at(HEAD + 8, &u32::MAX.to_ne_bytes())
        .unwrap();
}

#[test]
fn a_reader_that_holds_on_past_the_wait_gets_the_next_records_elsewhere() {
    let q: Queue<()> = Queue::builder().ring_bytes(4 << 20).build().unwrap();
    let len = 300_000;
    let rec = record_len(len);
    q.put_bytes(&pattern(len, 0)).unwrap();
    let m = q.get_in_place().unwrap();
    // A wait of at most 5 ms, for a reader that holds on.
    reader_ran_elsewhere(&q);
    q.ring.set_large_write_for_tests(Duration::from_millis(40));
    q.put_bytes(&pattern(len, 1)).unwrap();
    assert_eq!(tail_offset(q.segment()), 2 * rec, "after the held record");
    assert!(
        q.ring.reuse_skips_for_tests() > 0,
        "the next ones still wait"
    );
    drop(m);
    assert_eq!(q.get_bytes().unwrap(), pattern(len, 1));
    // Back to the start, as ever (it fits with 16 bytes to spare).
    q.put_bytes(&pattern(len, 2)).unwrap();
    assert_eq!(tail_offset(q.segment()), rec);
    assert_eq!(q.get_bytes().unwrap(), pattern(len, 2));
    // Empty, head and tail at the end of the first record: without the
    // miss the next would fill the ring from offset 0 up to head; now it
    // goes after the last, leaving room to run ahead.
    q.put_bytes(&pattern(len, 3)).unwrap();
    assert_eq!(tail_offset(q.segment()), 2 * rec, "filled the ring");
    assert_eq!(q.get_bytes().unwrap(), pattern(len, 3));
}

#[test]
fn a_put_with_a_timeout_waits_for_the_reader_no_longer_than_that() {
    let q: Queue<()> = Queue::builder().ring_bytes(4 << 20).build().unwrap();
    let len = 300_000;
    q.put_bytes(&pattern(len, 0)).unwrap();
    let m = q.get_in_place().unwrap();
    // The wait for the reader could last 500 ms; the put allows 20.
    reader_ran_elsewhere(&q);
    q.ring.set_large_write_for_tests(Duration::from_secs(4));
    let start = std::time::Instant::now();
    q.put_bytes_timeout(&pattern(len, 1), Duration::from_millis(20))
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_millis(300),
        "waited past the timeout"
    );
    assert_eq!(tail_offset(q.segment()), 2 * record_len(len));
    drop(m);
    assert_eq!(q.get_bytes().unwrap(), pattern(len, 1));
}

#[test]
fn a_large_typed_value_of_known_size_goes_back_to_the_start_too() {
    let q: Queue<Vec<u8>> = Queue::builder().ring_bytes(4 << 20).build().unwrap();
    let value = pattern(300_000, 1);
    let len = multiproc_core::codec::encode(&value).unwrap().len();
    for i in 0..20 {
        q.put_ref(&value).unwrap();
        let tail = tail_offset(q.segment());
        assert!(tail <= 3 * record_len(len), "put {i}: tail at {tail}");
        if i > 0 {
            assert_eq!(q.get().unwrap(), value);
        }
    }
    assert_eq!(q.get().unwrap(), value);
}

/// A message of [`ring_model`]: its number, then that number's low byte
/// over and over.
fn numbered(seq: u64, len: usize) -> Vec<u8> {
    let mut m = vec![seq as u8; len.max(8)];
    m[..8].copy_from_slice(&seq.to_le_bytes());
    m
}

fn is_numbered(m: &[u8], seq: u64, len: usize) -> bool {
    m.len() == len.max(8) && m[..8] == seq.to_le_bytes() && m[8..].iter().all(|&b| b == seq as u8)
}

#[derive(Clone, Debug)]
enum RingOp {
    /// Put a message of this size, blocking (for at most a moment) or not.
    Put(usize, bool),
    Get,
    /// Take a message in place, put these while holding it, let it go.
    Hold(Vec<usize>),
}

fn ring_op() -> impl proptest::strategy::Strategy<Value = RingOp> {
    use proptest::prelude::*;
    // Large sizes repeat, so that records take one another's place and
    // fill the ring to the last byte; the largest is the record limit.
    let size = prop_oneof![
        1usize..200,
        Just(300_000usize),
        Just(300_000usize),
        262_200usize..400_000,
        Just(MODEL_RING / 2 - 16),
    ];
    prop_oneof![
        3 => (size.clone(), any::<bool>()).prop_map(|(len, block)| RingOp::Put(len, block)),
        3 => Just(RingOp::Get),
        2 => proptest::collection::vec(size, 0..4).prop_map(RingOp::Hold),
    ]
}

const MODEL_RING: usize = 1 << 20;

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Any mix of small and large records, read and held in place: every
    /// message comes out once, whole and in order; a held record never
    /// changes; a full ring is never taken for an empty one, nor an empty
    /// one for full; and the count of messages is right after each step.
    #[test]
    fn ring_model(ops in proptest::collection::vec(ring_op(), 1..40)) {
        let q: Queue<()> = Queue::builder().ring_bytes(MODEL_RING).build().unwrap();
        let mut queued = std::collections::VecDeque::new();
        let mut next = 0u64;
        let mut put = |q: &Queue<()>, queued: &mut std::collections::VecDeque<(u64, usize)>, len: usize, block: bool| {
            let m = numbered(next, len);
            let done = if block {
                q.put_bytes_timeout(&m, Duration::from_millis(1)).is_ok()
            } else {
                q.try_put_bytes(&m).is_ok()
            };
            if done {
                queued.push_back((next, len));
                next += 1;
            } else {
                assert!(!queued.is_empty(), "an empty ring refused {len} bytes");
            }
        };
        for op in ops {
            match op {
                RingOp::Put(len, block) => put(&q, &mut queued, len, block),
                RingOp::Get => match q.try_get_bytes() {
                    Ok(m) => {
                        let (seq, len) = queued.pop_front().expect("a message out of an empty queue");
                        assert!(is_numbered(&m, seq, len), "message {seq} torn or out of order");
                    }
                    Err(_) => assert!(queued.is_empty(), "{} messages not found", queued.len()),
                },
                RingOp::Hold(lens) => {
                    let Some(&(seq, len)) = queued.front() else {
                        assert!(q.try_get_bytes().is_err());
                        continue;
                    };
                    let m = q.get_in_place_timeout(Duration::ZERO).expect("a queued message");
                    assert!(is_numbered(&m, seq, len), "message {seq} torn or out of order");
                    for len in lens {
                        put(&q, &mut queued, len, false);
                    }
                    assert!(is_numbered(&m, seq, len), "held message {seq} overwritten");
                    drop(m);
                    queued.pop_front();
                }
            }
            assert_eq!(q.qsize(), queued.len());
        }
        while let Some((seq, len)) = queued.pop_front() {
            let m = q.try_get_bytes().expect("a queued message");
            assert!(is_numbered(&m, seq, len), "message {seq} torn or out of order");
        }
        assert!(q.try_get_bytes().is_err());
    }
}
