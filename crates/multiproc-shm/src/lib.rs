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
//! [`SharedMemory::create_untracked`] (Python 3.13's `track=False`) starts
//! and tells no tracker, for hosts that want no helper process; its names
//! are then theirs to reclaim after a crash. [`Value`], [`Array`] and the
//! other anonymous objects have no name and need no tracker.
//!
//! What is promised, and the test (in `tests/cross_process.rs`, between
//! real processes) that shows it:
//!
//! | when | what happens | test |
//! |---|---|---|
//! | the creator is `SIGKILL`ed | the tracker unlinks its names | `sigkilled_creator_is_reclaimed` |
//! | the creator is killed inside `create`, at any instant | no name is left: the block is made under a generated name the tracker knows before it exists, and an asked-for name is given by one `renameat2(RENAME_NOREPLACE)` the tracker also knows of | `a_creator_killed_inside_create_leaves_no_name` |
//! | the tracker is killed | the next `create` starts a new one and registers every name still owned; a write to a dead tracker never raises `SIGPIPE` | `a_dead_tracker_is_replaced_and_still_reclaims_every_name` |
//! | a process dies holding a [`Value`]'s or [`Array`]'s lock | the next user learns it ([`ShmError::OwnerDied`], or [`OwnerDied`](multiproc_sync::OwnerDied) with the guard) and the object works on | `value_lock_holder_killed_reports_owner_died` |
//! | a block holds garbage, or a handle names another type | a typed error, never a panic or a misread | `garbage_blocks_never_panic`, `bad_input_is_a_typed_error`, `wrong_element_type_is_refused` |
//!
//! # Why not the `shared_memory` crate
//!
//! It wraps the same `shm_open` calls, but unlinks on drop in whichever
//! process holds the handle, has no crash-time reclamation, and does not
//! follow Python's naming rules; the few calls needed go through
//! `multiproc-core`'s `Segment` instead.
//!
//! # Using this crate alone
//!
//! A program that depends on `multiproc-shm` only (no `multiproc-core`, no
//! `libc`, no `unsafe`) hands a value, an array or a block to a child it starts with
//! [`std::process::Command`] through [`inherit`] (re-exported from
//! `multiproc-core`): [`inherit::pass`] puts the handle and its descriptors
//! into the command, [`inherit::take`] in the child gets the same object
//! back. [`Segment`], which [`SharedMemory::segment`] lends, is
//! re-exported too. A child made by `fork` (no `exec`) needs nothing: the
//! handles it inherited with the parent's memory work as they are.
//!
//! ```
//! use multiproc_shm::{inherit, Value};
//! use std::process::Command;
//!
//! // Parent: make the object, give it to the child under a key, spawn.
//! let counter = Value::new(41u64)?;
//! let mut cmd = Command::new("true"); // the worker program
//! inherit::pass(&mut cmd, "shared", &counter)?;
//! let mut child = cmd.spawn()?;
//! drop(cmd); // the parent's spare copies of the descriptors close here
//! assert!(child.wait()?.success());
//!
//! // The worker's `main`:
//! fn worker() -> Result<(), Box<dyn std::error::Error>> {
//!     let counter: Value<u64> = inherit::take("shared")?;
//!     counter.set(counter.get()? + 1)?;
//!     Ok(())
//! }
//! # let _ = worker;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `tests/cross_process.rs` runs this recipe with a real child
//! (`shm_shared_with_a_command_child_through_inherit`).
#![warn(missing_docs)]

mod error;
pub mod shareable_list;
mod shared_memory;
mod tracker;
pub mod value;

pub use error::ShmError;
/// The shared-memory segment objects of this crate live in.
pub use multiproc_core::Segment;
/// Handing objects to children started with `std::process::Command`:
/// see [Using this crate alone](crate#using-this-crate-alone).
pub use multiproc_core::inherit;
pub use shareable_list::{ShareableList, ShareableValue};
pub use shared_memory::SharedMemory;
pub use value::{Array, Atomic, DataGuard, Plain, RawArray, RawValue, Value};
