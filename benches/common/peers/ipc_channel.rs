//! The `ipc-channel` peer: Servo's byte channel over `SOCK_SEQPACKET`.

use super::{Case, Link, Peer};
use std::hint::black_box;

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
