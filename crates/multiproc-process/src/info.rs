//! Who this process is: [`current_process`], [`parent_process`],
//! [`cpu_count`].
//!
//! # Safety
//!
//! The record of this process is published through an `AtomicPtr`, not a
//! lock: a child forked while another thread of the parent held a lock
//! would find it held for ever (fork copies only the forking thread), and
//! the child reads and replaces this record before its target runs. Every
//! pointer ever stored comes from `Box::leak` and is never freed, so a
//! loaded pointer stays valid for the rest of the process (and of its
//! forked children, which copy the memory); that is the one `unsafe` here.
#![allow(unsafe_code)]

use multiproc_core::ProcessIdentity;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// The name, pid and daemon flag of a process (Python's
/// `current_process()` attributes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Name: `MainProcess` for the main process, the child's name otherwise.
    pub name: String,
    /// Process id.
    pub pid: u32,
    /// Whether this process was started as a daemon.
    pub daemon: bool,
}

struct Me {
    name: String,
    daemon: bool,
    parent: Option<(ProcessIdentity, String)>,
}

/// This process's record; null in the main process. Set once per process
/// (by `become_child`), before the target runs.
static ME: AtomicPtr<Me> = AtomicPtr::new(std::ptr::null_mut());

/// The record, if this process is a child.
fn me() -> Option<&'static Me> {
    // SYNC: Acquire pairs with the Release store in `become_child`.
    let ptr = ME.load(Ordering::Acquire);
    // SAFETY: null or a pointer from `Box::leak` that is never freed (see
    // the module docs), so valid and immutable for `'static`.
    unsafe { ptr.as_ref() }
}

/// Children started so far, for `Process-N` names.
static STARTED: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn become_child(
    name: String,
    daemon: bool,
    parent: Option<ProcessIdentity>,
    parent_name: String,
) {
    STARTED.store(0, Ordering::Relaxed);
    let me: &'static mut Me = Box::leak(Box::new(Me {
        name,
        daemon,
        parent: parent.map(|p| (p, parent_name)),
    }));
    // What this process inherited about itself is its parent's: left as it
    // is, never freed (readers may hold it; and freeing would write to pages
    // shared with the parent, each a copy-on-write fault).
    // SYNC: Release pairs with the Acquire load in `me`.
    ME.store(me, Ordering::Release);
}

/// The next default child name: `Process-N` from the main process,
/// `PARENT:N` from a child, as Python numbers them.
pub(crate) fn next_child_name() -> String {
    let n = STARTED.fetch_add(1, Ordering::Relaxed) + 1;
    match me() {
        Some(me) => format!("{}:{n}", me.name),
        None => format!("Process-{n}"),
    }
}

/// This process (Python's `current_process()`).
///
/// # Examples
///
/// ```
/// let me = multiproc_process::current_process();
/// assert_eq!(me.name, "MainProcess");
/// assert_eq!(me.pid, std::process::id());
/// assert!(!me.daemon);
/// ```
#[must_use]
pub fn current_process() -> ProcessInfo {
    let me = me();
    ProcessInfo {
        name: me.map_or_else(|| "MainProcess".to_owned(), |m| m.name.clone()),
        pid: std::process::id(),
        daemon: me.is_some_and(|m| m.daemon),
    }
}

/// The process that started this one, or `None` in the main process
/// (Python's `parent_process()`).
#[must_use]
pub fn parent_process() -> Option<ProcessInfo> {
    let (parent, name) = me()?.parent.as_ref()?;
    Some(ProcessInfo {
        name: name.clone(),
        pid: parent.pid(),
        daemon: false,
    })
}

/// CPUs this process may use: its affinity mask, further limited by a
/// cgroup v2 CPU quota (`cpu.max`), at least 1.
///
/// # Examples
///
/// ```
/// let n = multiproc_process::cpu_count();
/// assert!(n >= 1);
/// assert!(n <= std::thread::available_parallelism().map_or(usize::MAX, |p| p.get()).max(n));
/// ```
#[must_use]
pub fn cpu_count() -> usize {
    let affinity = rustix::thread::sched_getaffinity(None)
        .map(|set| set.count() as usize)
        .unwrap_or(1);
    let quota = cgroup_cpu_limit().unwrap_or(usize::MAX);
    affinity.min(quota).max(1)
}

/// `ceil(quota / period)` from `/sys/fs/cgroup/<own cgroup>/cpu.max`.
fn cgroup_cpu_limit() -> Option<usize> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    let max = std::fs::read_to_string(format!("/sys/fs/cgroup{path}/cpu.max"))
        .or_else(|_| std::fs::read_to_string("/sys/fs/cgroup/cpu.max"))
        .ok()?;
    let mut fields = max.split_whitespace();
    let quota: u64 = fields.next()?.parse().ok()?; // "max" fails to parse: no limit
    let period: u64 = fields.next()?.parse().ok()?;
    (period > 0).then(|| quota.div_ceil(period) as usize)
}
