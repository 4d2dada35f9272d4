//! Processes and pools: `Process` with the fork, spawn and forkserver start methods, `current_process` and friends, `Pool` and `AsyncResult`.
//!
//! **Status: not implemented yet.** The crate exists so the workspace layout
//! and the dependency graph are fixed; its API lands with its own change and
//! is described in the project's design document.
