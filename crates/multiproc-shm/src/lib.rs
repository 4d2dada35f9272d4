//! Shared data: `Value`, `Array`, `SharedMemory` and `ShareableList`, interoperable with Python's `multiprocessing.shared_memory`.
//!
//! **Status: not implemented yet.** The crate exists so the workspace layout
//! and the dependency graph are fixed; its API lands with its own change and
//! is described in the project's design document.
