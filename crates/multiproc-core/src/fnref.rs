//! Naming a function so that another process running the same build can
//! call it.
//!
//! A function pointer is an address, and addresses differ between processes
//! (ASLR). The distance from a fixed function of this crate to the target
//! is the same in every process that runs the same executable, so that
//! distance is what travels ([`offset_of`]); the receiving side turns it
//! back into an address ([`addr_at`]) only once it knows that it runs the
//! sender's very build: the same file ([`multiproc-process`] compares
//! device and inode, for children of one machine) or the same bytes
//! ([`BuildId`], for processes on other machines).
//!
//! ```
//! use multiproc_core::fnref::{addr_at, offset_of, BuildId};
//!
//! fn square(x: u64) -> u64 { x * x }
//!
//! let offset = offset_of(square as fn(u64) -> u64 as usize);
//! // In a process whose `BuildId::current()` equals the sender's, the
//! // offset names the same function.
//! assert_eq!(addr_at(offset), square as fn(u64) -> u64 as usize);
//! assert_eq!(BuildId::current()?, BuildId::current()?);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! [`multiproc-process`]: https://docs.rs/multiproc-process

use serde::{Deserialize, Serialize};
use std::io::Read;
use std::sync::OnceLock;

/// The fixed point distances are measured from. Never inlined, so it has an
/// address of its own.
#[inline(never)]
fn anchor() {
    std::hint::black_box(());
}

fn anchor_addr() -> usize {
    anchor as fn() as usize
}

/// Distance of `addr` (a function's address) from this crate's anchor.
#[must_use]
pub fn offset_of(addr: usize) -> i64 {
    (addr as i64).wrapping_sub(anchor_addr() as i64)
}

/// The address at `offset` from this crate's anchor in this process: the
/// function [`offset_of`] named, when this process runs the same build.
/// Calling what it points to is the caller's `unsafe` promise.
#[must_use]
pub fn addr_at(offset: i64) -> usize {
    (anchor_addr() as i64).wrapping_add(offset) as usize
}

/// What a panic caught around a named function's call said: its message
/// when it is a string, else a fixed text.
///
/// ```
/// use multiproc_core::fnref::panic_message;
///
/// let caught = std::panic::catch_unwind(|| panic!("at {}", 3)).unwrap_err();
/// assert_eq!(panic_message(&*caught), "at 3");
/// ```
#[must_use]
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// Identity of the running executable's contents: a 64-bit hash of every
/// byte of `/proc/self/exe` and its length. Two processes with the same
/// `BuildId` run the same bytes, wherever the file lies, so a function
/// offset from one is valid in the other; a rebuilt binary (any change)
/// gets another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BuildId(u64);

impl BuildId {
    /// This process's build, hashed once per process (the file a running
    /// process executes cannot change; hashing it reads the whole file,
    /// a few milliseconds for a few tens of megabytes).
    ///
    /// # Errors
    ///
    /// When `/proc/self/exe` cannot be read.
    pub fn current() -> std::io::Result<Self> {
        static CACHED: OnceLock<BuildId> = OnceLock::new();
        if let Some(id) = CACHED.get() {
            return Ok(*id);
        }
        let id = Self::of_reader(std::fs::File::open("/proc/self/exe")?)?;
        Ok(*CACHED.get_or_init(|| id))
    }

    /// The hash of everything `reader` yields.
    fn of_reader(mut reader: impl Read) -> std::io::Result<Self> {
        let mut hash = WordHash::default();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hash.feed(&buf[..n]);
        }
        Ok(Self(hash.finish()))
    }

    /// The hash as a number (for display and logs).
    #[must_use]
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for BuildId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A hash over 8-byte words: each step (rotate, xor with the word,
/// multiply by an odd constant) is a bijection of the state for a fixed
/// word, so two inputs differing in one word always hash differently.
/// Bytes are fed in any split; a partial word waits for the next feed.
#[derive(Default)]
struct WordHash {
    state: u64,
    len: u64,
    pending: [u8; 8],
    pending_len: usize,
}

impl WordHash {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;

    fn word(&mut self, w: u64) {
        self.state = (self.state.rotate_left(23) ^ w).wrapping_mul(Self::K);
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if self.pending_len > 0 {
            let take = (8 - self.pending_len).min(bytes.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&bytes[..take]);
            self.pending_len += take;
            bytes = &bytes[take..];
            if self.pending_len < 8 {
                return;
            }
            self.word(u64::from_le_bytes(self.pending));
            self.pending_len = 0;
        }
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.word(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    fn finish(mut self) -> u64 {
        let mut last = [0u8; 8];
        last[..self.pending_len].copy_from_slice(&self.pending[..self.pending_len]);
        self.word(u64::from_le_bytes(last));
        self.word(self.len);
        // Final avalanche (splitmix64's).
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(bytes: &[u8]) -> BuildId {
        BuildId::of_reader(bytes).unwrap()
    }

    #[test]
    fn any_change_gives_another_build() {
        let base: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let mut changed = base.clone();
        changed[5_000] ^= 1;
        let mut longer = base.clone();
        longer.push(0);
        assert_eq!(id(&base), id(&base.clone()));
        assert_ne!(id(&base), id(&changed));
        assert_ne!(id(&base), id(&longer), "a trailing zero counts");
        assert_ne!(id(b""), id(b"\0"));
    }

    #[test]
    fn the_split_of_the_reads_does_not_matter() {
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 13) as u8).collect();
        let mut h = WordHash::default();
        for piece in bytes.chunks(3) {
            h.feed(piece);
        }
        assert_eq!(BuildId(h.finish()), id(&bytes));
    }

    #[test]
    fn offsets_round_trip() {
        fn f(x: u32) -> u32 {
            x + 1
        }
        let addr = f as fn(u32) -> u32 as usize;
        assert_eq!(addr_at(offset_of(addr)), addr);
    }
}
