//! Taking over before `main`: a process its parent re-executed as a
//! spawned child or as the fork server becomes that, and never runs
//! `main`; any other process goes on as usual.
#![allow(unsafe_code)]

use crate::bootstrap::{Birth, SERVER_ENV, SPAWN_ENV, child_main, take_marker};
use crate::forkserver;

/// Runs before `main` in every executable that links this crate: turns a
/// re-executed process into the spawned child or the fork server when the
/// environment says so; otherwise does nothing.
///
/// # Safety
///
/// Called once by the C runtime before `main`; it only reads the
/// environment, and acts only when a marker is present.
#[cfg(feature = "auto-init")]
#[ctor::ctor]
unsafe fn before_main() {
    take_over_if_marked();
}

/// See [`crate::init`].
pub(crate) fn take_over_if_marked() {
    if let Some(fd) = take_marker(SPAWN_ENV) {
        child_main(fd, Birth::Spawned, None);
    }
    if let Some(fd) = take_marker(SERVER_ENV) {
        forkserver::serve(fd);
    }
}
