//! Shared data between processes, interoperable with Python:
//! [`SharedMemory`] and [`ShareableList`] open the very blocks Python's
//! `multiprocessing.shared_memory` creates, and the other way round.
//!
//! # Hello, shared memory
//!
//! ```
//! use multiproc_shm::SharedMemory;
//!
//! let block = SharedMemory::create(None, 1024)?;
//! block.write_at(0, b"shared")?;
//! // Another process — Rust or Python — opens it by name:
//! let same = SharedMemory::open(block.name())?;
//! let mut buf = [0u8; 6];
//! same.read_at(0, &mut buf)?;
//! assert_eq!(&buf, b"shared");
//! # Ok::<(), multiproc_shm::ShmError>(())
//! ```
//!
//! In Python: `SharedMemory(name)` with the same name (`.name` has no leading
//! `/`, exactly as here).
//!
//! # Lists
//!
//! ```
//! use multiproc_shm::{ShareableList, ShareableValue as V};
//!
//! let list = ShareableList::create(None, &[V::Int(1), V::from("two"), V::Bool(true)])?;
//! assert_eq!(list.to_vec()?, vec![V::Int(1), V::Str("two".into()), V::Bool(true)]);
//! # Ok::<(), multiproc_shm::ShmError>(())
//! ```
//!
//! # Nothing leaks
//!
//! The creating handle owns the name and unlinks it when dropped; a creator
//! that dies first (even by `SIGKILL`) has its names unlinked by a small
//! tracker process (see [`SharedMemory`]). Python's resource tracker, by
//! contrast, unlinks blocks that *attaching* processes still use, and warns
//! about "leaked" blocks it does not own; neither happens here.
//!
//! # Why not the `shared_memory` crate
//!
//! It wraps the same `shm_open` calls, but unlinks on drop in whichever
//! process holds the handle, has no crash-time reclamation, and does not
//! follow Python's naming rules; the few calls needed go through
//! `multiproc-core`'s `Segment` instead.
#![warn(missing_docs)]

mod error;
pub mod shareable_list;
mod shared_memory;
mod tracker;
pub mod value;

pub use error::ShmError;
pub use shareable_list::{ShareableList, ShareableValue};
pub use shared_memory::SharedMemory;
pub use value::{Array, Atomic, DataGuard, Plain, RawArray, RawValue, Value};
