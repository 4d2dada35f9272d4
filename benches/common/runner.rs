//! What is run, in which order, and under which names: the cases of the
//! matrix ([`Case::all`]: 1→1 then 2→2 over [`SIZES`], then the round trip),
//! their keys and labels for output, and the peers in table order
//! ([`peers`]).

use super::peers::{
    FutexSlot, Iceoryx2, Iceoryx2Blocking, Iceoryx2ZeroCopy, IpcChannel, Peer, PipeConn,
    QueueBytes, QueueTyped, QueueZeroCopy, RawPipe, RawSocketpair, ShmRawSync, SpscRing,
};

/// Payload sizes of the throughput cases.
pub const SIZES: [usize; 5] = [8, 64, 1024, 64 * 1024, 1 << 20];
/// Payload of the round-trip case.
pub const RTT_SIZE: usize = 8;

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
        Box::new(FutexSlot),
        Box::new(IpcChannel),
        Box::new(Iceoryx2),
        Box::new(Iceoryx2Blocking),
        Box::new(Iceoryx2ZeroCopy),
        Box::new(ShmRawSync),
    ]
}
