//! The `shared_memory` + `raw_sync` peer: the naive mutex-and-condvar byte
//! ring a user would write with those two crates.

use super::{Case, Link, Peer, ring_bytes};
use std::hint::black_box;
use std::time::Duration;

/// The queue a user would write with `shared_memory` + `raw_sync`: a byte
/// ring of length-prefixed messages in a named segment, guarded by one
/// process-shared pthread mutex, with two auto-reset events (pthread
/// condition variables) for "not empty" and "not full".
pub struct ShmRawSync;

/// Layout of the naive queue's segment.
const SHM_LOCK: usize = 0;
const SHM_NOT_EMPTY: usize = 512;
const SHM_NOT_FULL: usize = 1024;
/// Head and tail byte counters (`u64`), guarded by the mutex.
const SHM_COUNTERS: usize = 1536;
const SHM_DATA: usize = 2048;
/// How long a waiter sleeps on an event before it looks again (a safety
/// net; every put and get signals).
const SHM_RECHECK: Duration = Duration::from_millis(10);

struct ShmLink {
    // Field order = drop order: the lock objects point into the mapping.
    lock: Box<dyn raw_sync::locks::LockImpl>,
    not_empty: Box<dyn raw_sync::events::EventImpl>,
    not_full: Box<dyn raw_sync::events::EventImpl>,
    data: *mut u8,
    cap: usize,
    _shm: shared_memory::Shmem,
}

impl ShmLink {
    fn new(cap: usize) -> Self {
        use raw_sync::events::{Event, EventInit};
        use raw_sync::locks::{LockInit, Mutex};
        let shm = shared_memory::ShmemConf::new()
            .size(SHM_DATA + cap)
            .create()
            .expect("shared_memory segment");
        let base = shm.as_ptr();
        assert!(Mutex::size_of(None) <= SHM_NOT_EMPTY - SHM_LOCK);
        assert!(Event::size_of(None) + 8 <= SHM_NOT_FULL - SHM_NOT_EMPTY);
        // SAFETY: every offset lies inside the fresh mapping of
        // `SHM_DATA + cap` bytes (sizes asserted above), which `_shm` keeps
        // alive as long as the lock objects; nobody else uses it yet.
        let (lock, not_empty, not_full, data) = unsafe {
            let (lock, _) = Mutex::new(base.add(SHM_LOCK), base.add(SHM_COUNTERS)).expect("mutex");
            let (not_empty, _) = Event::new(base.add(SHM_NOT_EMPTY), true).expect("event");
            let (not_full, _) = Event::new(base.add(SHM_NOT_FULL), true).expect("event");
            (lock, not_empty, not_full, base.add(SHM_DATA))
        };
        Self {
            lock,
            not_empty,
            not_full,
            data,
            cap,
            _shm: shm,
        }
    }

    /// Copies `src` into the ring at byte counter `at`, wrapping around.
    ///
    /// # Safety
    ///
    /// The mutex is held and `src.len() <= cap`.
    unsafe fn write_wrapped(&self, at: u64, src: &[u8]) {
        let pos = (at % self.cap as u64) as usize;
        let first = src.len().min(self.cap - pos);
        // SAFETY: `pos + first <= cap` and `src.len() - first <= cap`: both
        // ranges lie in the data area; the caller holds the mutex.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.data.add(pos), first);
            std::ptr::copy_nonoverlapping(src.as_ptr().add(first), self.data, src.len() - first);
        }
    }

    /// Copies `dst.len()` bytes out of the ring at byte counter `at`.
    ///
    /// # Safety
    ///
    /// As for [`write_wrapped`](Self::write_wrapped).
    unsafe fn read_wrapped(&self, at: u64, dst: &mut [u8]) {
        let pos = (at % self.cap as u64) as usize;
        let first = dst.len().min(self.cap - pos);
        // SAFETY: as in `write_wrapped`.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data.add(pos), dst.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(
                self.data,
                dst.as_mut_ptr().add(first),
                dst.len() - first,
            );
        }
    }
}

impl Link for ShmLink {
    fn send(&mut self, msg: &[u8]) {
        use raw_sync::events::EventState;
        let need = 4 + msg.len();
        assert!(need <= self.cap, "message larger than the ring");
        loop {
            let guard = self.lock.lock().expect("lock");
            let counters = (*guard).cast::<u64>();
            // SAFETY: the counters are two `u64` at an 8-aligned offset of
            // the mapping, only touched with the mutex held (it is); the
            // copies stay in the ring (`need <= cap`, free space checked).
            let done = unsafe {
                let head = *counters;
                let tail = *counters.add(1);
                if self.cap - (tail - head) as usize >= need {
                    self.write_wrapped(tail, &(msg.len() as u32).to_le_bytes());
                    self.write_wrapped(tail + 4, msg);
                    *counters.add(1) = tail + need as u64;
                    true
                } else {
                    false
                }
            };
            drop(guard);
            if done {
                self.not_empty.set(EventState::Signaled).expect("set");
                return;
            }
            // Timing out only means "look again".
            let _ = self.not_full.wait(raw_sync::Timeout::Val(SHM_RECHECK));
        }
    }

    fn recv(&mut self, buf: &mut [u8]) {
        use raw_sync::events::EventState;
        loop {
            let guard = self.lock.lock().expect("lock");
            let counters = (*guard).cast::<u64>();
            // SAFETY: as in `send`; a stored length never exceeds the ring.
            let done = unsafe {
                let head = *counters;
                let tail = *counters.add(1);
                if tail > head {
                    let mut len = [0u8; 4];
                    self.read_wrapped(head, &mut len);
                    let len = u32::from_le_bytes(len) as usize;
                    assert_eq!(len, buf.len(), "message size");
                    self.read_wrapped(head + 4, buf);
                    *counters = head + 4 + len as u64;
                    true
                } else {
                    false
                }
            };
            drop(guard);
            if done {
                black_box(&buf);
                self.not_full.set(EventState::Signaled).expect("set");
                return;
            }
            let _ = self.not_empty.wait(raw_sync::Timeout::Val(SHM_RECHECK));
        }
    }
}

impl Peer for ShmRawSync {
    fn key(&self) -> &'static str {
        "shm_raw_sync"
    }
    fn label(&self) -> &'static str {
        "shared_memory+raw_sync"
    }
    fn skip(&self, _case: Case) -> Option<&'static str> {
        None
    }
    fn link(&self, size: usize) -> Box<dyn Link> {
        Box::new(ShmLink::new(ring_bytes(size)))
    }
}
