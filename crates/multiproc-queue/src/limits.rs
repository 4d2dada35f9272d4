//! The public size limits: the defaults a queue is built with and the
//! largest settings it accepts.

/// Ring size of [`Queue::new`](crate::Queue::new): 64 MiB of address space,
/// committed page by page as messages first touch it.
pub const DEFAULT_RING_BYTES: usize = 64 << 20;

/// Default limit on one message: the codec's (1 GiB).
pub const DEFAULT_MAX_MESSAGE: u64 = multiproc_core::codec::DEFAULT_MAX_SIZE as u64;

/// Largest item bound.
pub const MAX_CAPACITY: u32 = 1 << 30;

/// Largest message limit a queue can be configured with (1 TiB).
pub const MAX_MESSAGE_LIMIT: u64 = 1 << 40;
