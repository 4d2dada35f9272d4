//! One small error type per operation.
//!
//! | operation | error |
//! |---|---|
//! | `Lock::acquire`, `RLock::acquire`, `Condition::wait`, `Condition::wait_for` | [`OwnerDied<G>`] (carries the guard) |
//! | `Condition::wait_timeout`, `Condition::wait_for_timeout` | [`WaitTimeoutError<G>`]: `Timeout` or `OwnerDied`, the guard inside either way |
//! | `try_acquire` on a lock | [`TryAcquireError<G>`]: `WouldBlock` or `OwnerDied` |
//! | `acquire_timeout` on a lock | [`AcquireTimeoutError<G>`]: `Timeout` or `OwnerDied` |
//! | `try_acquire` / `acquire_timeout` on a semaphore | [`WouldBlock`] / [`Timeout`] |
//! | `Event::wait_timeout` | [`Timeout`] |
//! | `release` on a lock | [`NotOwner`] |
//! | `release` on a semaphore | [`ReleaseError`] |
//! | `Barrier::wait`, `Barrier::wait_timeout` | [`BrokenBarrier`] |
//! | creating an object | [`CreateError`] |
//! | attaching to an object (also inside `Deserialize`) | [`AttachError`] |
//!
//! Errors that leave the caller holding something carry it and give it back
//! with `into_inner()`; their `Debug` never needs `G: Debug`.

use multiproc_core::SegmentError;
use std::fmt;

/// The previous owner of a `Lock` or `RLock` died while holding it; the
/// lock is now held by the caller, whose guard is inside.
///
/// Like [`std::sync::PoisonError`]: the data the lock protects may be
/// half-updated. Repair it, then carry on with [`into_inner`](Self::into_inner);
/// the lock itself is healthy again and later acquirers see no error.
///
/// # Examples
///
/// ```
/// use multiproc_sync::{Lock, OwnerDied};
///
/// let lock = Lock::new()?;
/// // What `acquire` returns after a holder died (built by hand here):
/// let err = OwnerDied::new(lock.acquire().unwrap());
/// assert_eq!(err.to_string(), "the previous owner died while holding the lock");
/// let guard = err.into_inner(); // repair shared state, then go on
/// drop(guard);
/// assert!(lock.try_acquire().is_ok());
/// # Ok::<(), multiproc_sync::CreateError>(())
/// ```
pub struct OwnerDied<G> {
    guard: G,
}

impl<G> OwnerDied<G> {
    /// Wraps `guard` (for code that builds its own results, and tests).
    #[must_use]
    pub fn new(guard: G) -> Self {
        Self { guard }
    }

    /// The guard: the lock is held.
    #[must_use]
    pub fn into_inner(self) -> G {
        self.guard
    }

    /// A reference to the guard.
    #[must_use]
    pub fn get_ref(&self) -> &G {
        &self.guard
    }

    /// A mutable reference to the guard.
    #[must_use]
    pub fn get_mut(&mut self) -> &mut G {
        &mut self.guard
    }
}

impl<G> fmt::Debug for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OwnerDied { .. }")
    }
}

impl<G> fmt::Display for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the previous owner died while holding the lock")
    }
}

impl<G> std::error::Error for OwnerDied<G> {}

/// Returned by `try_acquire` on a semaphore: no unit is free right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WouldBlock;

impl fmt::Display for WouldBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("acquiring would block")
    }
}

impl std::error::Error for WouldBlock {}

pub use multiproc_core::time::Timeout;

/// The impls shared by the two "not acquired, or acquired from a dead
/// owner" errors: `$busy` is both the unit variant and the unit error type
/// it stands for.
macro_rules! busy_or_owner_died {
    ($ty:ident, $busy:ident, $is_busy:ident, $is_busy_doc:literal) => {
        impl<G> $ty<G> {
            #[doc = $is_busy_doc]
            #[must_use]
            pub fn $is_busy(&self) -> bool {
                matches!(self, Self::$busy)
            }

            /// Whether the lock was acquired from a dead owner.
            #[must_use]
            pub fn is_owner_died(&self) -> bool {
                matches!(self, Self::OwnerDied(_))
            }

            /// The guard, when the lock was acquired (from a dead owner).
            #[must_use]
            pub fn into_inner(self) -> Option<G> {
                match self {
                    Self::$busy => None,
                    Self::OwnerDied(died) => Some(died.into_inner()),
                }
            }
        }

        impl<G> From<OwnerDied<G>> for $ty<G> {
            fn from(died: OwnerDied<G>) -> Self {
                Self::OwnerDied(died)
            }
        }

        impl<G> From<$busy> for $ty<G> {
            fn from(_: $busy) -> Self {
                Self::$busy
            }
        }

        impl<G> fmt::Debug for $ty<G> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    Self::$busy => f.write_str(stringify!($busy)),
                    Self::OwnerDied(_) => f.write_str("OwnerDied(..)"),
                }
            }
        }

        impl<G> fmt::Display for $ty<G> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    Self::$busy => $busy.fmt(f),
                    Self::OwnerDied(died) => died.fmt(f),
                }
            }
        }

        impl<G> std::error::Error for $ty<G> {}
    };
}

/// Why `try_acquire` on a `Lock` or `RLock` did not simply succeed.
///
/// # Examples
///
/// ```
/// use multiproc_sync::Lock;
///
/// let lock = Lock::new()?;
/// let held = lock.acquire().unwrap();
/// let err = std::thread::scope(|s| {
///     s.spawn(|| lock.try_acquire().map(drop).map_err(|e| e.is_would_block()))
///         .join()
///         .unwrap()
/// });
/// assert_eq!(err, Err(true));
/// assert_eq!(multiproc_sync::WouldBlock.to_string(), "acquiring would block");
/// drop(held);
/// # Ok::<(), multiproc_sync::CreateError>(())
/// ```
pub enum TryAcquireError<G> {
    /// Another thread or process holds the lock.
    WouldBlock,
    /// Acquired, but the previous owner had died holding it.
    OwnerDied(OwnerDied<G>),
}

busy_or_owner_died!(
    TryAcquireError,
    WouldBlock,
    is_would_block,
    "Whether the lock was busy."
);

/// Why `acquire_timeout` on a `Lock` or `RLock` did not simply succeed.
///
/// # Examples
///
/// ```
/// use multiproc_sync::Lock;
/// use std::time::Duration;
///
/// let lock = Lock::new()?;
/// let held = lock.acquire().unwrap();
/// let err = std::thread::scope(|s| {
///     s.spawn(|| {
///         let err = lock.acquire_timeout(Duration::from_millis(5)).unwrap_err();
///         (err.is_timeout(), err.to_string())
///     })
///     .join()
///     .unwrap()
/// });
/// assert_eq!(err, (true, "timed out".to_string()));
/// drop(held);
/// # Ok::<(), multiproc_sync::CreateError>(())
/// ```
pub enum AcquireTimeoutError<G> {
    /// The deadline passed while another thread or process held the lock.
    Timeout,
    /// Acquired, but the previous owner had died holding it.
    OwnerDied(OwnerDied<G>),
}

busy_or_owner_died!(
    AcquireTimeoutError,
    Timeout,
    is_timeout,
    "Whether the deadline passed."
);

/// Why a timed wait on a `Condition` did not simply end notified (or with
/// its condition true). Either way the caller holds the lock again, and the
/// guard is inside: [`into_inner`](Self::into_inner).
///
/// # Examples
///
/// ```
/// use multiproc_sync::Condition;
/// use std::time::Duration;
///
/// let cond = Condition::new()?;
/// let guard = cond.acquire().unwrap();
/// let err = cond.wait_timeout(guard, Duration::from_millis(1)).unwrap_err();
/// assert!(err.is_timeout() && !err.is_owner_died());
/// assert_eq!(err.to_string(), "timed out");
/// let _guard = err.into_inner(); // the lock is held again
/// assert!(cond.get_lock().is_owned());
/// # Ok::<(), multiproc_sync::CreateError>(())
/// ```
pub enum WaitTimeoutError<G> {
    /// The deadline passed first.
    Timeout(G),
    /// The lock was taken back from an owner that died holding it.
    OwnerDied(OwnerDied<G>),
}

impl<G> WaitTimeoutError<G> {
    /// Whether the deadline passed first.
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }

    /// Whether the lock was taken back from a dead owner.
    #[must_use]
    pub fn is_owner_died(&self) -> bool {
        matches!(self, Self::OwnerDied(_))
    }

    /// The guard: the lock is held again in both cases.
    #[must_use]
    pub fn into_inner(self) -> G {
        match self {
            Self::Timeout(guard) => guard,
            Self::OwnerDied(died) => died.into_inner(),
        }
    }
}

impl<G> From<OwnerDied<G>> for WaitTimeoutError<G> {
    fn from(died: OwnerDied<G>) -> Self {
        Self::OwnerDied(died)
    }
}

impl<G> fmt::Debug for WaitTimeoutError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout(_) => f.write_str("Timeout(..)"),
            Self::OwnerDied(_) => f.write_str("OwnerDied(..)"),
        }
    }
}

impl<G> fmt::Display for WaitTimeoutError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout(_) => Timeout.fmt(f),
            Self::OwnerDied(died) => died.fmt(f),
        }
    }
}

impl<G> std::error::Error for WaitTimeoutError<G> {}

/// `release` was called on a `Lock` or `RLock` by a thread that does not
/// hold it. Nothing changed.
///
/// # Examples
///
/// ```
/// use multiproc_sync::{Lock, NotOwner};
///
/// let lock = Lock::new()?;
/// assert_eq!(lock.release(), Err(NotOwner));
/// assert_eq!(NotOwner.to_string(), "lock released by a thread that does not hold it");
/// # Ok::<(), multiproc_sync::CreateError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotOwner;

impl fmt::Display for NotOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("lock released by a thread that does not hold it")
    }
}

impl std::error::Error for NotOwner {}

/// `release` on a semaphore would raise its value above its bound (the
/// initial value of a `BoundedSemaphore`, or [`Semaphore::MAX_VALUE`](crate::Semaphore::MAX_VALUE)).
/// The value is unchanged.
///
/// # Examples
///
/// ```
/// use multiproc_sync::BoundedSemaphore;
///
/// let sem = BoundedSemaphore::new(1)?;
/// let err = sem.release().unwrap_err();
/// assert_eq!(err.bound(), 1);
/// assert_eq!(err.to_string(), "semaphore released too many times");
/// # Ok::<(), multiproc_sync::CreateError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReleaseError {
    pub(crate) bound: u32,
}

impl ReleaseError {
    /// The value the semaphore may not exceed.
    #[must_use]
    pub fn bound(&self) -> u32 {
        self.bound
    }
}

impl fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("semaphore released too many times")
    }
}

impl std::error::Error for ReleaseError {}

/// The barrier is broken (aborted, timed out, reset while waiting, or a
/// party died inside it); every waiter gets this, until `reset`.
/// [`is_timeout`](Self::is_timeout) and [`is_party_died`](Self::is_party_died)
/// tell two of the reasons apart.
///
/// # Examples
///
/// ```
/// use multiproc_sync::Barrier;
///
/// let barrier = Barrier::new(2)?;
/// barrier.abort();
/// let err = barrier.wait().unwrap_err();
/// assert!(!err.is_timeout());
/// assert!(!err.is_party_died());
/// assert_eq!(err.to_string(), "barrier is broken");
/// # Ok::<(), multiproc_sync::CreateError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BrokenBarrier {
    pub(crate) timed_out: bool,
    pub(crate) party_died: bool,
}

impl BrokenBarrier {
    /// Whether it was this caller's own timeout that broke the barrier.
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        self.timed_out
    }

    /// Whether the barrier broke because a party died inside it: a process
    /// killed while waiting in `wait`, or one that died in the middle of
    /// another barrier operation. Every caller that finds the barrier broken
    /// for this reason gets it set, until `reset`; the message then reads
    /// "barrier is broken because a party died inside it".
    #[must_use]
    pub fn is_party_died(&self) -> bool {
        self.party_died
    }
}

impl fmt::Display for BrokenBarrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.party_died {
            f.write_str("barrier is broken because a party died inside it")
        } else {
            f.write_str("barrier is broken")
        }
    }
}

impl std::error::Error for BrokenBarrier {}

/// Creating a primitive failed.
///
/// # Examples
///
/// ```
/// use multiproc_sync::{Barrier, CreateError};
///
/// assert!(matches!(Barrier::new(0), Err(CreateError::InvalidArgument(_))));
/// assert_eq!(
///     Barrier::new(0).unwrap_err().to_string(),
///     "invalid argument: a barrier needs at least one party"
/// );
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum CreateError {
    /// Allocating or accessing the shared segment failed.
    Segment(SegmentError),
    /// A parameter is out of range.
    InvalidArgument(&'static str),
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Segment(_) => f.write_str("creating the shared segment failed"),
            Self::InvalidArgument(why) => write!(f, "invalid argument: {why}"),
        }
    }
}

impl std::error::Error for CreateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Segment(err) => Some(err),
            Self::InvalidArgument(_) => None,
        }
    }
}

impl From<SegmentError> for CreateError {
    fn from(err: SegmentError) -> Self {
        Self::Segment(err)
    }
}

impl From<CreateError> for std::io::Error {
    fn from(err: CreateError) -> Self {
        match err {
            CreateError::Segment(err) => err.into(),
            other => std::io::Error::new(std::io::ErrorKind::InvalidInput, other),
        }
    }
}

/// Attaching to a primitive in a segment failed: wrong object, wrong layout
/// version, corrupt, or out of bounds.
///
/// # Examples
///
/// ```
/// use multiproc_sync::{AttachError, Event, Lock};
/// use std::sync::Arc;
///
/// let event = Event::new()?;
/// // An Event's segment does not hold a Lock.
/// let segment = Arc::clone(event.segment());
/// let err = Lock::attach(segment, 0).unwrap_err();
/// assert!(matches!(err, AttachError::Segment(_)));
/// assert_eq!(err.to_string(), "shared object header does not validate");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum AttachError {
    /// The header is missing, of another type or version, or the object
    /// does not fit in the segment.
    Segment(SegmentError),
    /// The header is right but the object's state is impossible.
    Corrupt(&'static str),
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Segment(_) => f.write_str("shared object header does not validate"),
            Self::Corrupt(why) => write!(f, "shared object is corrupt: {why}"),
        }
    }
}

impl std::error::Error for AttachError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Segment(err) => Some(err),
            Self::Corrupt(_) => None,
        }
    }
}

impl From<SegmentError> for AttachError {
    fn from(err: SegmentError) -> Self {
        Self::Segment(err)
    }
}

impl From<AttachError> for std::io::Error {
    fn from(err: AttachError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, err)
    }
}
