//! The machine's bounds: raw `write`/`read` on a pipe and on a socketpair
//! (floors), a minimal spinning SPSC ring in shared memory (ceiling), and
//! single-thread `memcpy` (the bandwidth every copy is bounded by).

use super::{Case, Link, Peer, ring_bytes};
use multiproc::Segment;
use multiproc::os::futex::{self, SpinWait};
use multiproc::os::scm;
use std::fs::File;
use std::hint::black_box;
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Largest write a pipe performs atomically (POSIX `PIPE_BUF` on Linux).
const PIPE_BUF: usize = 4096;

/// Raw descriptors: one `write` per message, `read` until its bytes are in.
struct RawLink {
    tx: File,
    rx: File,
}

impl Link for RawLink {
    fn send(&mut self, msg: &[u8]) {
        self.tx.write_all(msg).expect("write");
    }
    fn recv(&mut self, buf: &mut [u8]) {
        self.rx.read_exact(buf).expect("read");
    }
}

/// `write`/`read` on a pipe (default 64 KiB pipe buffer): the floor.
pub struct RawPipe;

impl Peer for RawPipe {
    fn key(&self) -> &'static str {
        "raw_pipe"
    }
    fn label(&self) -> &'static str {
        "raw pipe"
    }
    fn skip(&self, case: Case) -> Option<&'static str> {
        match case {
            Case::Flow { size, procs: 2 } if size > PIPE_BUF => {
                Some("writes above PIPE_BUF (4 KiB) are not atomic: two writers would interleave")
            }
            _ => None,
        }
    }
    fn link(&self, _size: usize) -> Box<dyn Link> {
        let (rx, tx) = rustix::pipe::pipe().expect("pipe");
        Box::new(RawLink {
            tx: tx.into(),
            rx: rx.into(),
        })
    }
}

/// `write`/`read` on an `AF_UNIX` stream socketpair: the floor of `Pipe`.
pub struct RawSocketpair;

impl Peer for RawSocketpair {
    fn key(&self) -> &'static str {
        "socketpair"
    }
    fn label(&self) -> &'static str {
        "socketpair"
    }
    fn skip(&self, case: Case) -> Option<&'static str> {
        match case {
            Case::Flow { procs: 2, .. } => {
                Some("a stream socket gives no atomicity to concurrent writers or readers")
            }
            _ => None,
        }
    }
    fn link(&self, _size: usize) -> Box<dyn Link> {
        let (tx, rx) = multiproc::os::scm::stream_pair().expect("socketpair");
        Box::new(RawLink {
            tx: tx.into(),
            rx: rx.into(),
        })
    }
}

/// The floor of any framed stream that carries descriptors: one `sendmsg`
/// of a 4-byte length header and the payload, and `recvmsg` (with room for
/// descriptors) of the header and the payload into one reused buffer.
/// `Pipe` frames its messages so (Python's wire form); what it costs over
/// plain `write`/`read` is the framing's share, not the library's.
pub struct FramedSocketpair;

struct FramedLink {
    tx: std::os::fd::OwnedFd,
    rx: std::os::fd::OwnedFd,
}

impl Link for FramedLink {
    fn send(&mut self, msg: &[u8]) {
        let header = (msg.len() as u32).to_be_bytes();
        let mut parts = [IoSlice::new(&header), IoSlice::new(msg)];
        scm::send_all_vectored(&self.tx, &mut parts, &[]).expect("sendmsg");
    }
    fn recv(&mut self, buf: &mut [u8]) {
        let mut header = [0u8; 4];
        let mut got = 0;
        while got < 4 + buf.len() {
            let mut parts = if got < 4 {
                [IoSliceMut::new(&mut header[got..]), IoSliceMut::new(buf)]
            } else {
                [
                    IoSliceMut::new(&mut []),
                    IoSliceMut::new(&mut buf[got - 4..]),
                ]
            };
            let n = scm::recv_vectored(&self.rx, &mut parts, scm::MAX_FDS)
                .expect("recvmsg")
                .len;
            assert!(n > 0, "the sender left");
            got += n;
        }
        assert_eq!(u32::from_be_bytes(header) as usize, buf.len(), "framing");
        black_box(&buf);
    }
}

impl Peer for FramedSocketpair {
    fn key(&self) -> &'static str {
        "framed_socketpair"
    }
    fn label(&self) -> &'static str {
        "framed socketpair"
    }
    fn skip(&self, case: Case) -> Option<&'static str> {
        RawSocketpair.skip(case)
    }
    fn link(&self, _size: usize) -> Box<dyn Link> {
        let (tx, rx) = scm::stream_pair().expect("socketpair");
        Box::new(FramedLink { tx, rx })
    }
}

/// The ceiling: a minimal spinning single-producer single-consumer ring of
/// fixed `size`-byte slots in shared memory, with cached indices. The
/// consumer copies each message out into a reused buffer.
pub struct SpscRing;

const RING_HEAD: usize = 0;
const RING_TAIL: usize = 128;
const RING_DATA: usize = 256;

struct SpscRingLink {
    seg: Segment,
    size: usize,
    slots: u64,
    /// Producer's copy of the consumer's position.
    cached_head: u64,
    /// Consumer's copy of the producer's position.
    cached_tail: u64,
    /// This process's own position (tail as producer, head as consumer).
    pos: u64,
}

impl SpscRingLink {
    fn word(&self, offset: usize) -> &AtomicU64 {
        self.seg.view(offset).expect("ring word")
    }
}

impl Link for SpscRingLink {
    fn send(&mut self, msg: &[u8]) {
        let mut spins = 0u32;
        while self.pos - self.cached_head >= self.slots {
            self.cached_head = self.word(RING_HEAD).load(Ordering::Acquire);
            spin(&mut spins);
        }
        let slot = RING_DATA + (self.pos % self.slots) as usize * self.size;
        self.seg.write_at(slot, msg).expect("slot");
        self.pos += 1;
        self.word(RING_TAIL).store(self.pos, Ordering::Release);
    }
    fn recv(&mut self, buf: &mut [u8]) {
        let mut spins = 0u32;
        while self.pos == self.cached_tail {
            self.cached_tail = self.word(RING_TAIL).load(Ordering::Acquire);
            spin(&mut spins);
        }
        let slot = RING_DATA + (self.pos % self.slots) as usize * self.size;
        self.seg.read_at(slot, buf).expect("slot");
        black_box(&buf);
        self.pos += 1;
        self.word(RING_HEAD).store(self.pos, Ordering::Release);
    }
}

/// The hand-off floor of a shared-memory queue's round trip: one message
/// slot and a counter word in shared memory; the receiver spins
/// ([`SpinWait`]'s budget, as multiproc's own waits do) and then sleeps on
/// the word (futex), the sender stores the count and wakes it. One
/// message in flight at a time, so it has the round trip only.
pub struct FutexSlot;

struct FutexSlotLink {
    seg: Segment,
    /// Messages this end has sent (sender) or seen (receiver).
    count: u32,
}

impl FutexSlotLink {
    fn word(&self) -> &std::sync::atomic::AtomicU32 {
        self.seg.atomic_u32(0).expect("word")
    }
}

impl Link for FutexSlotLink {
    fn send(&mut self, msg: &[u8]) {
        self.seg.write_at(64, msg).expect("slot");
        self.count = self.count.wrapping_add(1);
        self.word().store(self.count, Ordering::Release);
        futex::wake_one(self.word());
    }
    fn recv(&mut self, buf: &mut [u8]) {
        let seen = self.count;
        self.count = futex::wait_until_with(self.word(), None, SpinWait::new(), |v| v != seen)
            .expect("no deadline");
        self.seg.read_at(64, buf).expect("slot");
        black_box(&buf);
    }
}

impl Peer for FutexSlot {
    fn key(&self) -> &'static str {
        "futex"
    }
    fn label(&self) -> &'static str {
        "spin-then-futex"
    }
    fn skip(&self, case: Case) -> Option<&'static str> {
        match case {
            Case::RoundTrip => None,
            Case::Flow { .. } => Some("one message slot: a hand-off floor for the round trip only"),
        }
    }
    fn link(&self, size: usize) -> Box<dyn Link> {
        Box::new(FutexSlotLink {
            seg: Segment::anonymous(4096.max(64 + size)).expect("segment"),
            count: 0,
        })
    }
}

/// One pause; every 64th a `sched_yield` (the policy of multiproc's own
/// `SpinWait`), so that when both partners land on one CPU, or the machine
/// has more runnable processes than CPUs, a spinner does not burn the time
/// slice its partner needs. With a CPU each, the yield returns at once.
fn spin(spins: &mut u32) {
    *spins = spins.wrapping_add(1);
    if spins.is_multiple_of(64) {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

impl Peer for SpscRing {
    fn key(&self) -> &'static str {
        "spsc_ring"
    }
    fn label(&self) -> &'static str {
        "SPSC ring"
    }
    fn skip(&self, case: Case) -> Option<&'static str> {
        match case {
            Case::Flow { procs: 2, .. } => {
                Some("single producer, single consumer by construction: no 2→2")
            }
            _ => None,
        }
    }
    fn link(&self, size: usize) -> Box<dyn Link> {
        let slots = (ring_bytes(size) / size).clamp(4, 4096);
        let seg = Segment::anonymous(RING_DATA + slots * size).expect("segment");
        Box::new(SpscRingLink {
            seg,
            size,
            slots: slots as u64,
            cached_head: 0,
            cached_tail: 0,
            pos: 0,
        })
    }
}

/// Single-thread `copy_from_slice` of `src`, `n` times, into the
/// `src`-sized parts of `dst` in turn: the memory bandwidth every copy path
/// is bounded by. With one part (`dst` as long as `src`) the destination
/// stays in the caches; with two, it alternates as a producer's must while
/// its consumer still holds the last message.
pub fn memcpy_run(src: &[u8], dst: &mut [u8], n: u64) -> Duration {
    let parts = (dst.len() / src.len().max(1)).max(1);
    let start = Instant::now();
    for i in 0..n {
        let at = (i % parts as u64) as usize * src.len();
        let part = &mut dst[at..at + src.len()];
        part.copy_from_slice(black_box(src));
        black_box(part);
    }
    start.elapsed()
}
