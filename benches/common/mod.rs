//! The scenario matrix shared by `benches/queue_vs_pipe.rs` (criterion) and
//! `examples/compare.rs` (short timing loops): every transport behind one
//! small trait, partners in forked processes, and timed runs. This file only
//! declares the parts and re-exports them:
//!
//! - `runner`: what is run, in which order, and the names it is shown under
//!   ([`Case`], [`peers`]);
//! - `peers`: the transports under test, each behind [`Peer`]/[`Link`];
//! - `harness`: forking the partners and timing them ([`Flow`],
//!   [`RoundTrip`], [`measure`]);
//! - `batch`: how many operations make a timed batch ([`calibrate`]).
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

mod batch;
mod harness;
mod peers;
mod runner;

// As above: each target uses only some of these.
#[allow(unused_imports)]
pub use batch::calibrate;
#[allow(unused_imports)]
pub use harness::{
    Flow, ForkedChild, Placement, RoundTrip, first_batch, first_count, fork_child, kill_children,
    measure, median,
};
#[allow(unused_imports)]
pub use peers::{
    FramedSocketpair, IpcChannel, Link, Peer, PipeConn, QueueBytes, QueueTyped, QueueZeroCopy,
    RawPipe, RawSocketpair, ShmRawSync, SpscRing, TypedRow, memcpy_run,
    remove_stale_iceoryx2_nodes, ring_bytes, typed_rows,
};
#[allow(unused_imports)]
pub use runner::{Case, RTT_SIZE, SIZES, peers, size_label, size_name};
