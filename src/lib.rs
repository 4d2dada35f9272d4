//! Python's `multiprocessing`, done right in Rust: processes, queues, pipes,
//! locks, pools and shared data that work between real OS processes, fast,
//! and keep working when a process crashes.
//!
//! This is the facade crate: it re-exports the member crates, so one
//! dependency gives everything. Each member crate is usable on its own too.
//!
//! | crate | what |
//! |---|---|
//! | [`multiproc_core`] (re-exported as [`os`]) | shared-memory segments, futexes, descriptor passing, handles, codec |
//!
//! The other crates (synchronisation, queues, pipes, shared data, processes)
//! are re-exported here as they land.
//!
//! # Python → multiproc
//!
//! | Python | multiproc |
//! |---|---|
//! | `shared_memory.SharedMemory(name, create=True, size)` (the OS part) | [`Segment::create_named`], [`Segment::open_named`], [`Segment::unlink`]; [`Segment::anonymous`] for a segment with no name |
//! | pickling a resource to send it to another process (`reduction`) | [`SharedFd`] and [`codec::encode_with_fds`]: descriptors travel out of band |
//!
//! # Example
//!
//! ```
//! use multiproc::{codec, Segment};
//!
//! let segment = Segment::anonymous(4096)?;
//! segment.write_at(0, b"shared")?;
//! let (bytes, fds) = codec::encode_with_fds(&segment)?;
//! let same: Segment = codec::decode_with_fds(&bytes, fds)?;
//! let mut buf = [0u8; 6];
//! same.read_at(0, &mut buf)?;
//! assert_eq!(&buf, b"shared");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub use multiproc_core as os;
pub use multiproc_core::{
    Codec, CodecError, Header, HeaderError, ProcessIdentity, Segment, SegmentError, SharedFd,
    SpinWait, codec, futex, scm,
};
