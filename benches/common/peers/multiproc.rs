//! multiproc's own subjects: `Queue` as bytes, typed and zero-copy, and the
//! `Pipe` `Connection`.

use super::{Case, Link, Peer, ring_bytes};
use multiproc::{Connection, Pipe, Queue};
use std::hint::black_box;

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
        super::zero_copy_skip(case)
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
