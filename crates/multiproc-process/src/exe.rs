//! [`ExeId`]: which executable file a process runs, so that a child can
//! tell that it runs its parent's.

use serde::{Deserialize, Serialize};
use std::os::unix::fs::MetadataExt;

/// Identity of an executable file: device, inode, size and modification
/// time of `/proc/self/exe`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExeId {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl ExeId {
    /// [`current`](Self::current), read once per process (the file a
    /// running process executes cannot change).
    pub(crate) fn current_cached() -> std::io::Result<Self> {
        static CACHED: std::sync::OnceLock<ExeId> = std::sync::OnceLock::new();
        if let Some(id) = CACHED.get() {
            return Ok(*id);
        }
        let id = Self::current()?;
        Ok(*CACHED.get_or_init(|| id))
    }

    fn current() -> std::io::Result<Self> {
        let meta = std::fs::metadata("/proc/self/exe")?;
        Ok(Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        })
    }
}
