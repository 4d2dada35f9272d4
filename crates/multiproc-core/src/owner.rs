//! Who a process is, and whether it still lives.
//!
//! A pid alone names a process only while it lives: after it dies the kernel
//! hands the number to the next process. [`ProcessIdentity`] adds the start
//! time (`/proc/PID/stat`, field 22, clock ticks since boot), which no later
//! process with the same pid can share, so a lock or a ring slot can record
//! its owner and survivors can later tell "dead" from "alive" without being
//! fooled by pid reuse.
//!
//! ```
//! use multiproc_core::ProcessIdentity;
//!
//! let me = ProcessIdentity::current();
//! assert_eq!(me.pid(), std::process::id());
//! assert!(me.is_alive());
//! assert_eq!(ProcessIdentity::from_u64(me.to_u64()), Some(me));
//! ```

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bits of a packed identity that hold the pid: Linux pids are below
/// `PID_MAX_LIMIT`, 2²² on 64-bit kernels.
const PID_BITS: u32 = 22;
const PID_MASK: u64 = (1 << PID_BITS) - 1;

/// A process's pid plus start time: unique for the life of the system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProcessIdentity {
    pid: u32,
    start_time: u64,
}

/// The current process's identity packed, with the pid it was read for
/// (a forked child has a new pid and must read its own).
static CURRENT: AtomicU64 = AtomicU64::new(0);

impl ProcessIdentity {
    /// The calling process. Cached after the first call (and re-read after a
    /// fork).
    ///
    /// # Panics
    ///
    /// If `/proc` is not mounted: multiproc needs it.
    #[must_use]
    pub fn current() -> Self {
        let pid = std::process::id();
        if let Some(cached) = Self::from_u64(CURRENT.load(Ordering::Relaxed))
            && cached.pid == pid
        {
            return cached;
        }
        let me = Self::of(pid).expect("/proc/self/stat is readable");
        CURRENT.store(me.to_u64(), Ordering::Relaxed);
        me
    }

    /// The process `pid` as it is now.
    ///
    /// # Errors
    ///
    /// `NotFound` when no such process exists; `InvalidData` when its stat
    /// line cannot be parsed.
    pub fn of(pid: u32) -> io::Result<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let (_, start_time) = parse_stat(&stat)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc stat"))?;
        Ok(Self { pid, start_time })
    }

    /// The pid.
    #[must_use]
    pub const fn pid(&self) -> u32 {
        self.pid
    }

    /// Start time in clock ticks after boot.
    #[must_use]
    pub const fn start_time(&self) -> u64 {
        self.start_time
    }

    /// Whether this process still runs: it exists, has the same start time
    /// (the pid was not reused) and is not a zombie (a zombie holds nothing
    /// and runs no code, so for every owner record it is dead).
    #[must_use]
    pub fn is_alive(&self) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return false;
        };
        match parse_stat(&stat) {
            Some((state, start)) => start == self.start_time && state != 'Z' && state != 'X',
            None => false,
        }
    }

    /// Packs into one word for an `AtomicU64` in shared memory; never 0, so
    /// 0 can mean "no owner".
    #[must_use]
    pub const fn to_u64(&self) -> u64 {
        (self.start_time << PID_BITS) | (self.pid as u64 & PID_MASK)
    }

    /// Unpacks [`to_u64`](Self::to_u64); `None` for 0 or a pid of 0.
    #[must_use]
    pub const fn from_u64(packed: u64) -> Option<Self> {
        let pid = (packed & PID_MASK) as u32;
        if pid == 0 {
            return None;
        }
        Some(Self {
            pid,
            start_time: packed >> PID_BITS,
        })
    }
}

/// State letter and start time from a `/proc/PID/stat` line. The command
/// name (field 2) is in parentheses and may itself hold spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // Fields 4..=21 lie between state (3) and starttime (22).
    let start_time = fields.nth(22 - 4)?.parse().ok()?;
    Some((state, start_time))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let line = "123 (a) b (c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 999 rest";
        assert_eq!(parse_stat(line), Some(('S', 999)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) R 1 2"), None);
    }

    #[test]
    fn a_reused_pid_is_not_alive() {
        let me = ProcessIdentity::current();
        let impostor = ProcessIdentity {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        assert!(!impostor.is_alive());
    }
}
