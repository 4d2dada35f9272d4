//! The scenario matrix shared by `benches/queue_vs_pipe.rs` (criterion) and
//! `examples/compare.rs` (short timing loops): every transport behind one
//! small trait, partners in forked processes, and timed runs.
//!
//! A [`Peer`] makes a [`Link`]: a one-way message channel whose value is
//! created in the bench process and then forked, so every child holds a copy
//! of both ends and uses the one its role needs. A [`Flow`] forks `procs`
//! producers and `procs` consumers around one link and times how long the
//! consumers take to receive a batch; a [`RoundTrip`] forks one echo process
//! around two links. The bench process itself only starts rounds and waits,
//! sleeping, so it does not compete for the two CPUs.
//!
//! Cells a peer cannot fill (a single-producer ring at 2→2, …) are left out,
//! and [`Peer::skip`] says why.

// Each target that includes this module uses a different part of it.
#![allow(dead_code)]

use multiproc::os::futex;
use multiproc::{Connection, Pipe, Queue, Segment};
use std::fs::File;
use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Payload sizes of the throughput cases.
pub const SIZES: [usize; 5] = [8, 64, 1024, 64 * 1024, 1 << 20];
/// Payload of the round-trip case.
pub const RTT_SIZE: usize = 8;
/// Largest write a pipe performs atomically (POSIX `PIPE_BUF` on Linux).
const PIPE_BUF: usize = 4096;

/// One cell row of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Case {
    /// `procs` producer processes and `procs` consumer processes moving
    /// `size`-byte messages through one channel.
    Flow {
        /// Payload bytes per message.
        size: usize,
        /// Producers (= consumers).
        procs: usize,
    },
    /// Ping-pong of an 8-byte message between two processes.
    RoundTrip,
}

impl Case {
    /// Every case: 1→1 for each size, 2→2 for each size, the round trip.
    pub fn all() -> Vec<Case> {
        let mut cases = Vec::new();
        for procs in [1, 2] {
            for size in SIZES {
                cases.push(Case::Flow { size, procs });
            }
        }
        cases.push(Case::RoundTrip);
        cases
    }

    /// `1to1/64KiB`, `rtt/8B`: for criterion ids and machine-readable output.
    pub fn key(self) -> String {
        match self {
            Case::Flow { size, procs } => format!("{procs}to{procs}/{}", size_name(size)),
            Case::RoundTrip => format!("rtt/{}", size_name(RTT_SIZE)),
        }
    }

    /// `1→1 64 KiB`, `round trip 8 B`: for people.
    pub fn label(self) -> String {
        match self {
            Case::Flow { size, procs } => format!("{procs}→{procs} {}", size_label(size)),
            Case::RoundTrip => format!("round trip {}", size_label(RTT_SIZE)),
        }
    }
}

/// `8B`, `64KiB`, `1MiB`.
pub fn size_name(size: usize) -> String {
    size_label(size).replace(' ', "")
}

/// `8 B`, `64 KiB`, `1 MiB`.
pub fn size_label(size: usize) -> String {
    if size >= 1 << 20 && size.is_multiple_of(1 << 20) {
        format!("{} MiB", size >> 20)
    } else if size >= 1024 && size.is_multiple_of(1024) {
        format!("{} KiB", size >> 10)
    } else {
        format!("{size} B")
    }
}

/// A one-way channel of messages of one known size. Both ends live in one
/// value; after `fork` each process uses the end its role needs.
pub trait Link {
    /// Sends `msg` (blocking while the channel is full).
    fn send(&mut self, msg: &[u8]);
    /// Receives one message of `buf.len()` bytes. Implementations that hand
    /// out a fresh buffer (like Python's `recv_bytes`) may ignore `buf`.
    fn recv(&mut self, buf: &mut [u8]);
}

/// A transport under test: ours, a peer crate, or an OS floor.
pub trait Peer {
    /// Short machine name (`queue`, `raw_pipe`, …): criterion id, JSON key.
    fn key(&self) -> &'static str;
    /// Column heading.
    fn label(&self) -> &'static str;
    /// `None` if the peer has a cell for `case`, else the reason it has none.
    fn skip(&self, case: Case) -> Option<&'static str>;
    /// A fresh channel for `size`-byte messages.
    fn link(&self, size: usize) -> Box<dyn Link>;
}

/// Every peer, in table order.
pub fn peers() -> Vec<Box<dyn Peer>> {
    vec![
        Box::new(QueueBytes),
        Box::new(QueueTyped),
        Box::new(QueueZeroCopy),
        Box::new(PipeConn),
        Box::new(RawPipe),
        Box::new(RawSocketpair),
        Box::new(SpscRing),
        Box::new(IpcChannel),
        Box::new(ShmRawSync),
    ]
}

/// Ring size for a queue-like peer carrying `size`-byte messages: room for
/// eight messages, at least 1 MiB (the same for every shared-memory peer).
pub fn ring_bytes(size: usize) -> usize {
    (8 * size).max(1 << 20)
}

// ---------------------------------------------------------------- multiproc

/// `Queue::put_bytes` / `get_bytes`: one copy in, one copy out into a fresh
/// `Vec` (what Python's `Queue.get` hands out).
pub struct QueueBytes;

struct QueueBytesLink(Queue<()>);

impl Link for QueueBytesLink {
    fn send(&mut self, msg: &[u8]) {
        self.0.put_bytes(msg).expect("put_bytes");
    }
    fn recv(&mut self, _buf: &mut [u8]) {
        black_box(self.0.get_bytes().expect("get_bytes"));
    }
}

impl Peer for QueueBytes {
    fn key(&self) -> &'static str {
        "queue"
    }
    fn label(&self) -> &'static str {
        "multiproc Queue"
    }
    fn skip(&self, _case: Case) -> Option<&'static str> {
        None
    }
    fn link(&self, size: usize) -> Box<dyn Link> {
        let q = Queue::builder()
            .ring_bytes(ring_bytes(size))
            .build()
            .expect("queue");
        Box::new(QueueBytesLink(q))
    }
}

/// Typed `put`/`get`: a `u64` for 8 B, a `Vec<u8>` otherwise, through the
/// bincode codec.
pub struct QueueTyped;

enum QueueTypedLink {
    Word(Queue<u64>),
    Vec(Queue<Vec<u8>>),
}

impl Link for QueueTypedLink {
    fn send(&mut self, msg: &[u8]) {
        match self {
            Self::Word(q) => {
                let word = u64::from_le_bytes(msg.try_into().expect("8-byte message"));
                q.put(word).expect("put");
            }
            Self::Vec(q) => q.put(msg.to_vec()).expect("put"),
        }
    }
    fn recv(&mut self, _buf: &mut [u8]) {
        match self {
            Self::Word(q) => {
                black_box(q.get().expect("get"));
            }
            Self::Vec(q) => {
                black_box(q.get().expect("get"));
            }
        }
    }
}

impl Peer for QueueTyped {
    fn key(&self) -> &'static str {
        "queue_typed"
    }
    fn label(&self) -> &'static str {
        "Queue typed"
    }
    fn skip(&self, case: Case) -> Option<&'static str> {
        match case {
            Case::Flow { size, .. } if size > 1024 => {
                Some("typed path measured for small messages; large payloads use the bytes path")
            }
            _ => None,
        }
    }
    fn link(&self, size: usize) -> Box<dyn Link> {
        let builder = Queue::builder().ring_bytes(ring_bytes(size));
        Box::new(if size == 8 {
            QueueTypedLink::Word(builder.build().expect("queue"))
        } else {
            QueueTypedLink::Vec(builder.build().expect("queue"))
        })
    }
}

/// `put_with` (the producer writes straight into the ring) and
/// `get_in_place` (the consumer reads the message where it lies and touches
/// its last byte): one copy in total.
pub struct QueueZeroCopy;

struct QueueZeroCopyLink(Queue<()>);

impl Link for QueueZeroCopyLink {
    fn send(&mut self, msg: &[u8]) {
        self.0
            .put_with(msg.len(), |slot| slot.copy_from_slice(msg))
            .map_err(|_| "put_with")
            .expect("put_with");
    }
    fn recv(&mut self, _buf: &mut [u8]) {
        let m = self.0.get_in_place().expect("get_in_place");
        black_box(m[m.len() - 1]);
    }
}

impl Peer for QueueZeroCopy {
    fn key(&self) -> &'static str {
        "queue_zero_copy"
    }
    fn label(&self) -> &'static str {
        "Queue zero-copy"
    }
    fn skip(&self, case: Case) -> Option<&'static str> {
        match case {
            Case::Flow { size, procs: 1 } if size >= 64 * 1024 => None,
            _ => Some("zero-copy path shown for large payloads 1→1 only, to keep the run short"),
        }
    }
    fn link(&self, size: usize) -> Box<dyn Link> {
        let q = Queue::builder()
            .ring_bytes(ring_bytes(size))
            .build()
            .expect("queue");
        Box::new(QueueZeroCopyLink(q))
    }
}

/// `Connection::send_bytes` / `recv_bytes` on a duplex `Pipe` (a
/// socketpair), Python's framing; `recv_bytes` returns a fresh `Vec`.
pub struct PipeConn;

struct PipeConnLink {
    tx: Connection,
    rx: Connection,
}

impl Link for PipeConnLink {
    fn send(&mut self, msg: &[u8]) {
        self.tx.send_bytes(msg).expect("send_bytes");
    }
    fn recv(&mut self, _buf: &mut [u8]) {
        black_box(self.rx.recv_bytes().expect("recv_bytes"));
    }
}

impl Peer for PipeConn {
    fn key(&self) -> &'static str {
        "pipe"
    }
    fn label(&self) -> &'static str {
        "multiproc Pipe"
    }
    fn skip(&self, case: Case) -> Option<&'static str> {
        match case {
            Case::Flow { procs: 2, .. } => Some(
                "a Connection is point-to-point, one writer and one reader as in Python; \
                 sharing one between processes needs an outside lock, which is what Queue is",
            ),
            _ => None,
        }
    }
    fn link(&self, _size: usize) -> Box<dyn Link> {
        let (tx, rx) = Pipe::new().expect("pipe");
        Box::new(PipeConnLink { tx, rx })
    }
}

// ---------------------------------------------------------------- OS floors

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

/// Single-thread `copy_from_slice` of `size` bytes, `n` times: the memory
/// bandwidth every copy path is bounded by.
pub fn memcpy_run(src: &[u8], dst: &mut [u8], n: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        dst.copy_from_slice(black_box(src));
        black_box(&mut *dst);
    }
    start.elapsed()
}

// ---------------------------------------------------------------- peer crates

/// Servo's `ipc-channel`: `IpcBytesSender`/`IpcBytesReceiver` (a
/// `SOCK_SEQPACKET` socket per channel; large messages are fragmented).
pub struct IpcChannel;

struct IpcLink {
    tx: ipc_channel::ipc::IpcBytesSender,
    rx: ipc_channel::ipc::IpcBytesReceiver,
}

impl Link for IpcLink {
    fn send(&mut self, msg: &[u8]) {
        self.tx.send(msg).expect("ipc send");
    }
    fn recv(&mut self, _buf: &mut [u8]) {
        black_box(self.rx.recv().expect("ipc recv"));
    }
}

impl Peer for IpcChannel {
    fn key(&self) -> &'static str {
        "ipc_channel"
    }
    fn label(&self) -> &'static str {
        "ipc-channel"
    }
    fn skip(&self, case: Case) -> Option<&'static str> {
        match case {
            Case::Flow { procs: 2, .. } => Some(
                "a receiver has one consumer; two processes reading one socket \
                 would split fragmented messages",
            ),
            _ => None,
        }
    }
    fn link(&self, _size: usize) -> Box<dyn Link> {
        let (tx, rx) = ipc_channel::ipc::bytes_channel().expect("ipc channel");
        Box::new(IpcLink { tx, rx })
    }
}

/// The queue a user would write with `shared_memory` + `raw_sync`: a byte
/// ring of length-prefixed messages in a named segment, guarded by one
/// process-shared pthread mutex, with two auto-reset events (pthread
/// condition variables) for "not empty" and "not full".
pub struct ShmRawSync;

/// Layout of the naive queue's segment.
const SHM_LOCK: usize = 0;
const SHM_NOT_EMPTY: usize = 512;
const SHM_NOT_FULL: usize = 1024;
/// Head and tail byte counters (`u64`), guarded by the mutex.
const SHM_COUNTERS: usize = 1536;
const SHM_DATA: usize = 2048;
/// How long a waiter sleeps on an event before it looks again (a safety
/// net; every put and get signals).
const SHM_RECHECK: Duration = Duration::from_millis(10);

struct ShmLink {
    // Field order = drop order: the lock objects point into the mapping.
    lock: Box<dyn raw_sync::locks::LockImpl>,
    not_empty: Box<dyn raw_sync::events::EventImpl>,
    not_full: Box<dyn raw_sync::events::EventImpl>,
    data: *mut u8,
    cap: usize,
    _shm: shared_memory::Shmem,
}

impl ShmLink {
    fn new(cap: usize) -> Self {
        use raw_sync::events::{Event, EventInit};
        use raw_sync::locks::{LockInit, Mutex};
        let shm = shared_memory::ShmemConf::new()
            .size(SHM_DATA + cap)
            .create()
            .expect("shared_memory segment");
        let base = shm.as_ptr();
        assert!(Mutex::size_of(None) <= SHM_NOT_EMPTY - SHM_LOCK);
        assert!(Event::size_of(None) + 8 <= SHM_NOT_FULL - SHM_NOT_EMPTY);
        // SAFETY: every offset lies inside the fresh mapping of
        // `SHM_DATA + cap` bytes (sizes asserted above), which `_shm` keeps
        // alive as long as the lock objects; nobody else uses it yet.
        let (lock, not_empty, not_full, data) = unsafe {
            let (lock, _) = Mutex::new(base.add(SHM_LOCK), base.add(SHM_COUNTERS)).expect("mutex");
            let (not_empty, _) = Event::new(base.add(SHM_NOT_EMPTY), true).expect("event");
            let (not_full, _) = Event::new(base.add(SHM_NOT_FULL), true).expect("event");
            (lock, not_empty, not_full, base.add(SHM_DATA))
        };
        Self {
            lock,
            not_empty,
            not_full,
            data,
            cap,
            _shm: shm,
        }
    }

    /// Copies `src` into the ring at byte counter `at`, wrapping around.
    ///
    /// # Safety
    ///
    /// The mutex is held and `src.len() <= cap`.
    unsafe fn write_wrapped(&self, at: u64, src: &[u8]) {
        let pos = (at % self.cap as u64) as usize;
        let first = src.len().min(self.cap - pos);
        // SAFETY: `pos + first <= cap` and `src.len() - first <= cap`: both
        // ranges lie in the data area; the caller holds the mutex.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.data.add(pos), first);
            std::ptr::copy_nonoverlapping(src.as_ptr().add(first), self.data, src.len() - first);
        }
    }

    /// Copies `dst.len()` bytes out of the ring at byte counter `at`.
    ///
    /// # Safety
    ///
    /// As for [`write_wrapped`](Self::write_wrapped).
    unsafe fn read_wrapped(&self, at: u64, dst: &mut [u8]) {
        let pos = (at % self.cap as u64) as usize;
        let first = dst.len().min(self.cap - pos);
        // SAFETY: as in `write_wrapped`.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data.add(pos), dst.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(
                self.data,
                dst.as_mut_ptr().add(first),
                dst.len() - first,
            );
        }
    }
}

impl Link for ShmLink {
    fn send(&mut self, msg: &[u8]) {
        use raw_sync::events::EventState;
        let need = 4 + msg.len();
        assert!(need <= self.cap, "message larger than the ring");
        loop {
            let guard = self.lock.lock().expect("lock");
            let counters = (*guard).cast::<u64>();
            // SAFETY: the counters are two `u64` at an 8-aligned offset of
            // the mapping, only touched with the mutex held (it is); the
            // copies stay in the ring (`need <= cap`, free space checked).
            let done = unsafe {
                let head = *counters;
                let tail = *counters.add(1);
                if self.cap - (tail - head) as usize >= need {
                    self.write_wrapped(tail, &(msg.len() as u32).to_le_bytes());
                    self.write_wrapped(tail + 4, msg);
                    *counters.add(1) = tail + need as u64;
                    true
                } else {
                    false
                }
            };
            drop(guard);
            if done {
                self.not_empty.set(EventState::Signaled).expect("set");
                return;
            }
            // Timing out only means "look again".
            let _ = self.not_full.wait(raw_sync::Timeout::Val(SHM_RECHECK));
        }
    }

    fn recv(&mut self, buf: &mut [u8]) {
        use raw_sync::events::EventState;
        loop {
            let guard = self.lock.lock().expect("lock");
            let counters = (*guard).cast::<u64>();
            // SAFETY: as in `send`; a stored length never exceeds the ring.
            let done = unsafe {
                let head = *counters;
                let tail = *counters.add(1);
                if tail > head {
                    let mut len = [0u8; 4];
                    self.read_wrapped(head, &mut len);
                    let len = u32::from_le_bytes(len) as usize;
                    assert_eq!(len, buf.len(), "message size");
                    self.read_wrapped(head + 4, buf);
                    *counters = head + 4 + len as u64;
                    true
                } else {
                    false
                }
            };
            drop(guard);
            if done {
                black_box(&buf);
                self.not_full.set(EventState::Signaled).expect("set");
                return;
            }
            let _ = self.not_empty.wait(raw_sync::Timeout::Val(SHM_RECHECK));
        }
    }
}

impl Peer for ShmRawSync {
    fn key(&self) -> &'static str {
        "shm_raw_sync"
    }
    fn label(&self) -> &'static str {
        "shared_memory+raw_sync"
    }
    fn skip(&self, _case: Case) -> Option<&'static str> {
        None
    }
    fn link(&self, size: usize) -> Box<dyn Link> {
        Box::new(ShmLink::new(ring_bytes(size)))
    }
}

// ---------------------------------------------------------------- processes

pub use multiproc_testkit::{Pid, fork_child, kill_children};

/// Whether a child has exited (a crashed partner must not hang the run);
/// reaps it if so.
fn any_exited(pids: &[Pid]) -> bool {
    pids.iter().any(|&pid| {
        matches!(
            rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::NOHANG),
            Ok(Some(_))
        )
    })
}

/// Control words shared with the forked partners: 0 round number (futex
/// word), 8 messages per producer this round, 64 (with one consumer) the
/// count at which the round ends, 72 bumped by that consumer when it gets
/// there (futex word), 128 + 128·i messages consumer i received so far.
struct Control(Segment);

impl Control {
    fn new() -> Self {
        Self(Segment::anonymous(4096).expect("segment"))
    }
    fn round(&self) -> &AtomicU32 {
        self.0.atomic_u32(0).expect("word")
    }
    fn count(&self) -> &AtomicU64 {
        self.0.view(8).expect("word")
    }
    fn goal(&self) -> &AtomicU64 {
        self.0.view(64).expect("word")
    }
    fn finished(&self) -> &AtomicU32 {
        self.0.atomic_u32(72).expect("word")
    }
    fn consumed(&self, i: usize) -> &AtomicU64 {
        self.0.view(128 + 128 * i).expect("word")
    }
}

/// `procs` producers and `procs` consumers forked around one link.
pub struct Flow {
    pids: Vec<Pid>,
    ctl: Control,
    procs: usize,
    target: u64,
    what: String,
    // Dropped after the children are killed (see `Drop`).
    _link: Box<dyn Link>,
}

impl Flow {
    /// Forks the partners for `peer` with `size`-byte messages.
    pub fn start(peer: &dyn Peer, size: usize, procs: usize) -> Self {
        let ctl = Control::new();
        let mut link = peer.link(size);
        let mut pids = Vec::new();
        for i in 0..procs {
            let (ctl, link) = (&ctl, &mut link);
            pids.push(fork_child(move || {
                let mut buf = vec![0u8; size];
                let (done, goal, finished) = (ctl.consumed(i), ctl.goal(), ctl.finished());
                let mut n = 0u64;
                loop {
                    link.recv(&mut buf);
                    n += 1;
                    done.store(n, Ordering::Release);
                    if n == goal.load(Ordering::Relaxed) {
                        finished.fetch_add(1, Ordering::Release);
                        futex::wake_all(finished);
                    }
                }
            }));
        }
        for _ in 0..procs {
            let (ctl, link) = (&ctl, &mut link);
            pids.push(fork_child(move || {
                let payload = vec![7u8; size];
                let mut seen = 0;
                loop {
                    seen = futex::wait_until(ctl.round(), None, |v| v != seen).expect("wait");
                    let count = ctl.count().load(Ordering::Acquire);
                    for _ in 0..count {
                        link.send(&payload);
                    }
                }
            }));
        }
        Self {
            pids,
            ctl,
            procs,
            target: 0,
            what: format!("{} {procs}→{procs} {}", peer.key(), size_label(size)),
            _link: link,
        }
    }

    /// Moves about `messages` messages (rounded up to a multiple of the
    /// producer count) and returns the time from the start signal until the
    /// consumers have all of them, with the message count.
    pub fn run_counted(&mut self, messages: u64) -> (Duration, u64) {
        let per = messages.div_ceil(self.procs as u64).max(1);
        let total = per * self.procs as u64;
        self.target += total;
        // With one consumer, the consumer wakes us at the end of the round,
        // and we look at the counters only once a second. A bench process
        // that looks every 50 µs keeps preempting a partner on a machine
        // with no more CPUs than partners, which decides which side runs
        // ahead (measured: the queue's 8 B figure moved by a factor of 2–3
        // with it). With two consumers we still look every 50 µs.
        let quiet = self.procs == 1;
        if quiet {
            self.ctl.goal().store(self.target, Ordering::Relaxed);
        }
        let start = Instant::now();
        self.ctl.count().store(per, Ordering::Release);
        self.ctl.round().fetch_add(1, Ordering::Release);
        futex::wake_all(self.ctl.round());
        let mut last = (0, Instant::now());
        loop {
            if quiet {
                let consumed = self.ctl.consumed(0);
                let slice = Some(Instant::now() + Duration::from_secs(1));
                let _ = futex::wait_until(self.ctl.finished(), slice, |_| {
                    consumed.load(Ordering::Acquire) >= self.target
                });
            }
            let got: u64 = (0..self.procs)
                .map(|i| self.ctl.consumed(i).load(Ordering::Acquire))
                .sum();
            if got >= self.target {
                return (start.elapsed(), total);
            }
            if got != last.0 {
                last = (got, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(2) && any_exited(&self.pids) {
                panic!("{}: a partner process died", self.what);
            } else if last.1.elapsed() > Duration::from_secs(60) {
                panic!("{}: no progress for a minute", self.what);
            }
            if !quiet {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    /// [`run_counted`](Self::run_counted) for criterion's `iter_custom`
    /// (the count is `messages` whenever it divides by the producer count).
    pub fn run(&mut self, messages: u64) -> Duration {
        self.run_counted(messages).0
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        kill_children(&self.pids);
    }
}

/// An echo process forked around two links: `ping` there, `pong` back.
pub struct RoundTrip {
    pid: Pid,
    ping: Box<dyn Link>,
    pong: Box<dyn Link>,
    msg: Vec<u8>,
    buf: Vec<u8>,
}

impl RoundTrip {
    /// Forks the echo partner for `peer`.
    pub fn start(peer: &dyn Peer) -> Self {
        let mut ping = peer.link(RTT_SIZE);
        let mut pong = peer.link(RTT_SIZE);
        let pid = fork_child(|| {
            let mut buf = vec![0u8; RTT_SIZE];
            loop {
                ping.recv(&mut buf);
                pong.send(&buf);
            }
        });
        Self {
            pid,
            ping,
            pong,
            msg: vec![1u8; RTT_SIZE],
            buf: vec![0u8; RTT_SIZE],
        }
    }

    /// `n` round trips, blocking API; returns the total time.
    pub fn run(&mut self, n: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..n {
            self.ping.send(&self.msg);
            self.pong.recv(&mut self.buf);
        }
        start.elapsed()
    }
}

impl Drop for RoundTrip {
    fn drop(&mut self) {
        kill_children(&[self.pid]);
    }
}

/// Operations per second of a timed run: calibrates a batch to about
/// `batch` of wall time starting from `first` operations, then runs
/// `rounds` batches and returns the median rate.
pub fn measure(
    mut run: impl FnMut(u64) -> (Duration, u64),
    first: u64,
    batch: Duration,
    rounds: usize,
) -> f64 {
    let mut n = first.max(1);
    // Calibration doubles as warm-up.
    loop {
        let (took, _) = run(n);
        if took >= batch / 4 || n >= 1 << 40 {
            let scale = batch.as_secs_f64() / took.as_secs_f64().max(1e-9);
            n = ((n as f64 * scale) as u64).max(1);
            break;
        }
        n = n.saturating_mul(4);
    }
    let mut rates: Vec<f64> = (0..rounds.max(1))
        .map(|_| {
            let (took, done) = run(n);
            done as f64 / took.as_secs_f64().max(1e-9)
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

/// A reasonable first batch for `size`-byte messages (about 1 MB moved).
pub fn first_batch(size: usize) -> u64 {
    ((1usize << 20) / size).clamp(4, 100_000) as u64
}
