//! Shared-memory queues: `Queue`, `SimpleQueue` and `JoinableQueue`, multi-producer multi-consumer across processes over a crash-safe ring in a [`multiproc_core::Segment`].
//!
//! **Status: not implemented yet.** The crate exists so the workspace layout
//! and the dependency graph are fixed; its API lands with its own change and
//! is described in the project's design document.
