//! [`QueueBuilder`]: the settings a queue is created with, and their
//! validation. Each handle's file adds the method that builds it
//! ([`build`](QueueBuilder::build),
//! [`build_simple`](QueueBuilder::build_simple),
//! [`build_joinable`](QueueBuilder::build_joinable)).

use crate::error::QueueError;
use crate::layout::{MAX_RING, MIN_RING, REC_ALIGN};
use crate::limits::{DEFAULT_MAX_MESSAGE, DEFAULT_RING_BYTES, MAX_CAPACITY, MAX_MESSAGE_LIMIT};
use crate::ring::{Kind, Options};

/// Builds a queue with non-default sizes.
///
/// | setting | default | meaning |
/// |---|---|---|
/// | [`capacity`](Self::capacity) | none | item bound (Python's `maxsize`) |
/// | [`ring_bytes`](Self::ring_bytes) | [`DEFAULT_RING_BYTES`] | bytes of shared memory for messages in flight; pages are committed when first used |
/// | [`max_message`](Self::max_message) | [`DEFAULT_MAX_MESSAGE`] | largest message, encoded |
/// | [`pacing`](Self::pacing) | on | a consumer alone on its side lets faster producers get ahead before it reads on (throughput at 8 B ×2–3 in `cargo bench -p multiproc-queue --bench queue -- queue_1to1/bytes_into/8`, up to 600 ns more latency at the end of a burst) |
///
/// # Examples
///
/// ```
/// use multiproc_queue::Queue;
///
/// let q: Queue<u32> = Queue::builder().capacity(2).ring_bytes(64 * 1024).build()?;
/// assert_eq!(q.capacity(), Some(2));
/// assert_eq!(q.ring_bytes(), 64 * 1024);
/// assert!(Queue::builder().ring_bytes(10).build::<u32>().is_err()); // below one page
/// # Ok::<(), multiproc_queue::QueueError>(())
/// ```
#[derive(Clone, Copy, Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct QueueBuilder {
    capacity: Option<usize>,
    ring_bytes: usize,
    max_message: u64,
    pacing: bool,
}

impl Default for QueueBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl QueueBuilder {
    /// The defaults: unbounded item count, [`DEFAULT_RING_BYTES`] of ring.
    pub const fn new() -> Self {
        Self {
            capacity: None,
            ring_bytes: DEFAULT_RING_BYTES,
            max_message: DEFAULT_MAX_MESSAGE,
            pacing: true,
        }
    }

    /// At most `maxsize` messages in the queue (1..=[`MAX_CAPACITY`]).
    pub const fn capacity(mut self, maxsize: usize) -> Self {
        self.capacity = Some(maxsize);
        self
    }

    /// Shared memory for messages in flight, rounded up to 16 bytes
    /// (4 KiB..=2 GiB). Messages up to half of it travel as one record
    /// (and can be read and written in place); larger ones in fragments.
    pub const fn ring_bytes(mut self, bytes: usize) -> Self {
        self.ring_bytes = bytes;
        self
    }

    /// The largest message accepted, in bytes (up to 1 TiB).
    pub const fn max_message(mut self, bytes: u64) -> Self {
        self.max_message = bytes;
        self
    }

    /// Whether a consumer alone on its side, whose last look found the
    /// producers more than one message ahead, waits up to 600 ns once it
    /// has caught up, so they get ahead again before it reads on (on by
    /// default; for every process using the queue).
    ///
    /// Reading right behind a faster producer makes both sides trade cache
    /// lines on every message, which at 8 B costs two thirds of the rate.
    /// Turn it off where the last message of a burst must not wait: a
    /// ping-pong never waits either way.
    ///
    /// ```
    /// use multiproc_queue::Queue;
    ///
    /// let q: Queue<u64> = Queue::builder().pacing(false).build()?;
    /// q.put(7)?;
    /// assert_eq!(q.get()?, 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub const fn pacing(mut self, on: bool) -> Self {
        self.pacing = on;
        self
    }

    /// The validated settings for a queue of `kind`. A `SimpleQueue` has no
    /// item bound: a capacity set for one is ignored.
    pub(crate) fn options(self, kind: Kind) -> Result<Options, QueueError> {
        let capacity = if kind == Kind::Simple {
            None
        } else {
            self.capacity
        };
        let maxsize = match capacity {
            None => 0,
            Some(0) => return Err(QueueError::InvalidConfig("capacity must be at least 1")),
            Some(n) if n > MAX_CAPACITY as usize => {
                return Err(QueueError::InvalidConfig("capacity too large"));
            }
            Some(n) => n as u32,
        };
        let ring_bytes = self
            .ring_bytes
            .checked_next_multiple_of(REC_ALIGN as usize)
            .filter(|n| (MIN_RING..=MAX_RING).contains(n))
            .ok_or(QueueError::InvalidConfig(
                "ring_bytes outside 4 KiB..=2 GiB",
            ))?;
        if self.max_message == 0 || self.max_message > MAX_MESSAGE_LIMIT {
            return Err(QueueError::InvalidConfig("max_message outside 1..=1 TiB"));
        }
        Ok(Options {
            ring_bytes,
            maxsize,
            max_message: self.max_message,
            kind,
            pacing: self.pacing,
        })
    }
}
