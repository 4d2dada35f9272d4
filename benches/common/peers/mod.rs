//! The transports under test, each behind [`Peer`] (names, the cells it
//! fills) and [`Link`] (send and receive one message), one file per group:
//! multiproc's own `Queue` and `Pipe`, the OS floors and the ring ceiling,
//! `ipc-channel`, iceoryx2's publish/subscribe, a `shared_memory` + `raw_sync` queue, and typed messages
//! against the bytes path.

mod floors;
mod iceoryx;
mod ipc_channel;
mod multiproc;
mod shm_raw_sync;
mod typed;

pub use floors::{FramedSocketpair, FutexSlot, RawPipe, RawSocketpair, SpscRing, memcpy_run};
pub use iceoryx::{Iceoryx2, Iceoryx2Blocking, Iceoryx2ZeroCopy, remove_stale_iceoryx2_nodes};
pub use ipc_channel::IpcChannel;
pub use multiproc::{PipeConn, QueueBytes, QueueTyped, QueueZeroCopy};
pub use shm_raw_sync::ShmRawSync;
pub use typed::{TypedRow, typed_rows};

use super::runner::Case;

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

/// Ring size for a queue-like peer carrying `size`-byte messages: room for
/// eight messages, at least 1 MiB (the same for every shared-memory peer).
pub fn ring_bytes(size: usize) -> usize {
    (8 * size).max(1 << 20)
}

/// Where a zero-copy peer has cells: large payloads, 1→1 (kept out
/// elsewhere to keep the run short).
pub(super) fn zero_copy_skip(case: Case) -> Option<&'static str> {
    match case {
        Case::Flow { size, procs: 1 } if size >= 64 * 1024 => None,
        _ => Some("zero-copy path shown for large payloads 1→1 only, to keep the run short"),
    }
}
