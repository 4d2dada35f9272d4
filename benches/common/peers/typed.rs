//! Typed messages against the bytes path: `Queue<T>::put`/`get` and
//! `Connection::send`/`recv` for the payloads users send (`Vec<u8>`,
//! `String`, `Vec<f32>`, a struct holding a `Vec<f64>`, a `u64`), each
//! `size` bytes of data, beside `put_bytes`/`get_bytes` and
//! `send_bytes`/`recv_bytes` of the same size.
//!
//! The value is built once, before the fork, and sent by reference
//! (`Queue::put_ref`, `Connection::send`), as the bytes path sends a slice.
//! Every receive decodes into a fresh value, as `get_bytes` and
//! `recv_bytes` return a fresh `Vec`.

use super::{Case, Link, Peer, ring_bytes};
use multiproc::{Connection, Pipe, Queue};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::hint::black_box;
use std::marker::PhantomData;

/// A payload kind: a type and how to make a `size`-byte value of it.
pub trait Payload: Serialize + DeserializeOwned + Clone + 'static {
    /// Row heading.
    const LABEL: &'static str;
    /// A value holding `size` bytes of data.
    fn build(size: usize) -> Self;
}

impl Payload for Vec<u8> {
    const LABEL: &'static str = "Vec<u8>";
    fn build(size: usize) -> Self {
        (0..size).map(|i| i as u8).collect()
    }
}

impl Payload for String {
    const LABEL: &'static str = "String";
    fn build(size: usize) -> Self {
        (0..size)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect()
    }
}

impl Payload for Vec<f32> {
    const LABEL: &'static str = "Vec<f32>";
    fn build(size: usize) -> Self {
        (0..size / 4).map(|i| i as f32 * 0.5).collect()
    }
}

/// A struct with a `Vec<f64>` field (and a header), as a sampled signal.
#[derive(Serialize, Deserialize, Clone)]
pub struct Frame {
    id: u64,
    rate_hz: u32,
    samples: Vec<f64>,
}

impl Payload for Frame {
    const LABEL: &'static str = "struct { Vec<f64> }";
    fn build(size: usize) -> Self {
        Frame {
            id: 7,
            rate_hz: 48_000,
            samples: (0..size / 8).map(|i| i as f64 * 0.25).collect(),
        }
    }
}

impl Payload for u64 {
    const LABEL: &'static str = "u64";
    fn build(_size: usize) -> Self {
        0x0102_0304_0506_0708
    }
}

/// `Queue<T>::put_ref(&value)` / `get()`.
pub struct TypedQueue<T>(PhantomData<T>);

/// `Connection::send(&value)` / `recv::<T>()`.
pub struct TypedPipe<T>(PhantomData<T>);

impl<T> TypedQueue<T> {
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T> TypedPipe<T> {
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

struct QueueLink<T> {
    queue: Queue<T>,
    value: T,
}

impl<T: Payload> Link for QueueLink<T> {
    fn send(&mut self, _msg: &[u8]) {
        self.queue.put_ref(&self.value).expect("put_ref");
    }
    fn recv(&mut self, _buf: &mut [u8]) {
        black_box(self.queue.get().expect("get"));
    }
}

struct PipeLink<T> {
    tx: Connection,
    rx: Connection,
    value: T,
}

impl<T: Payload> Link for PipeLink<T> {
    fn send(&mut self, _msg: &[u8]) {
        self.tx.send(&self.value).expect("send");
    }
    fn recv(&mut self, _buf: &mut [u8]) {
        black_box(self.rx.recv::<T>().expect("recv"));
    }
}

impl<T: Payload> Peer for TypedQueue<T> {
    fn key(&self) -> &'static str {
        "queue_typed"
    }
    fn label(&self) -> &'static str {
        T::LABEL
    }
    fn skip(&self, _case: Case) -> Option<&'static str> {
        None
    }
    fn link(&self, size: usize) -> Box<dyn Link> {
        let queue = Queue::builder()
            .ring_bytes(ring_bytes(size))
            .build()
            .expect("queue");
        Box::new(QueueLink {
            queue,
            value: T::build(size),
        })
    }
}

impl<T: Payload> Peer for TypedPipe<T> {
    fn key(&self) -> &'static str {
        "pipe_typed"
    }
    fn label(&self) -> &'static str {
        T::LABEL
    }
    fn skip(&self, _case: Case) -> Option<&'static str> {
        None
    }
    fn link(&self, size: usize) -> Box<dyn Link> {
        let (tx, rx) = Pipe::new().expect("pipe");
        Box::new(PipeLink {
            tx,
            rx,
            value: T::build(size),
        })
    }
}

/// One row of the typed table: a payload kind at a size, with its queue
/// and pipe peers.
pub struct TypedRow {
    pub label: &'static str,
    pub size: usize,
    pub queue: Box<dyn Peer>,
    pub pipe: Box<dyn Peer>,
}

fn row<T: Payload>(size: usize) -> TypedRow {
    TypedRow {
        label: T::LABEL,
        size,
        queue: Box::new(TypedQueue::<T>::new()),
        pipe: Box::new(TypedPipe::<T>::new()),
    }
}

/// Every row: a `u64` at 8 B, then each data payload at 1 KiB, 64 KiB and
/// 1 MiB.
pub fn typed_rows() -> Vec<TypedRow> {
    let mut rows = vec![row::<u64>(8)];
    for size in [1024, 64 * 1024, 1 << 20] {
        rows.push(row::<Vec<u8>>(size));
        rows.push(row::<String>(size));
        rows.push(row::<Vec<f32>>(size));
        rows.push(row::<Frame>(size));
    }
    rows
}
