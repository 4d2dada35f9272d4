//! The OS layer of [multiproc]: everything the other crates need from Linux,
//! wrapped once and safely.
//!
//! | module | what it gives |
//! |---|---|
//! | [`segment`] | [`Segment`]: a shared mapping backed by a sealed memfd or a named POSIX shm object, and the [`Header`] every object in a segment starts with |
//! | [`doorbell`] | a descriptor an event loop waits on, rung by other processes, and the table of them in shared memory: readiness for async waiters |
//! | [`futex`] | wait/wake on an [`AtomicU32`](std::sync::atomic::AtomicU32) shared between processes, and [`SpinWait`] for spin-then-sleep |
//! | [`scm`] | bytes plus descriptors over a Unix socket (`SCM_RIGHTS`) |
//! | [`handle`] | descriptors riding through serde in an out-of-band table, so resource-owning types are `Serialize` |
//! | [`codec`] | serde values in bincode's wire form, runs of plain elements copied whole, with a size limit and typed errors |
//! | [`copy`] | byte copies that avoid the CPU's slow case for some address pairs |
//! | [`owner`] | who a thread or process is (id + start time), whether it still lives, and the pid namespace: the one liveness rule |
//! | [`inherit`] | handing any handle to a child started with `std::process::Command` ([`inherit::pass`]) and taking it there ([`inherit::take`]), safely |
//! | [`process`] | `fork` with its safety contract, `_exit`, `atexit`, `pthread_atfork` and the `SIGPIPE` disposition: the process-wide calls rustix lacks |
//! | [`time`] | deadlines on the monotonic clock that saturate instead of overflowing |
//!
//! # Hello, shared memory
//!
//! A [`Segment`] is a region of memory that other processes can map too.
//! The anonymous flavor (the default) is a memfd: it has no name anywhere and
//! the kernel frees it when the last process closes it.
//!
//! ```
//! use multiproc_core::Segment;
//! use std::sync::atomic::Ordering;
//!
//! let segment = Segment::anonymous(4096)?;
//! let word = segment.atomic_u32(0)?;
//! word.store(7, Ordering::Release);
//! assert_eq!(segment.atomic_u32(0)?.load(Ordering::Acquire), 7);
//! # Ok::<(), multiproc_core::SegmentError>(())
//! ```
//!
//! # Handles travel with their descriptors
//!
//! Types that own descriptors (a [`Segment`] here, queues and connections in
//! the other crates) serialize their descriptors into an out-of-band table
//! that a Unix-socket transport ships with `SCM_RIGHTS`:
//!
//! ```
//! use multiproc_core::{codec, Segment};
//!
//! let segment = Segment::anonymous(4096)?;
//! segment.write_at(0, b"hello")?;
//! let (bytes, fds) = codec::encode_with_fds(&segment)?;
//! // ... bytes and fds cross a socket with multiproc_core::scm ...
//! let copy: Segment = codec::decode_with_fds(&bytes, fds)?;
//! let mut buf = [0u8; 5];
//! copy.read_at(0, &mut buf)?;
//! assert_eq!(&buf, b"hello");
//!
//! // A transport without descriptor passing refuses such a value.
//! assert!(codec::encode(&segment).unwrap_err().is_descriptors_unsupported());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Platform
//!
//! Linux only: memfd, futexes, pidfds and `SCM_RIGHTS` are what the crate is
//! built on.
//!
//! [multiproc]: https://docs.rs/multiproc
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod codec;
pub mod copy;
pub mod doorbell;
pub mod fnref;
pub mod futex;
pub mod handle;
pub mod inherit;
pub mod owner;
pub mod process;
pub mod scm;
pub mod segment;
pub mod time;
mod value_error;

pub use codec::{Codec, CodecError};
pub use futex::SpinWait;
pub use handle::SharedFd;
pub use owner::{ProcessIdentity, ThreadIdentity};
pub use segment::{Header, HeaderError, Segment, SegmentError};
