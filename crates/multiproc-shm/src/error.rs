//! The crate's error type.

use multiproc_core::SegmentError;
use std::fmt;

/// Why a shared-data operation failed.
///
/// # Examples
///
/// ```
/// use multiproc_shm::{Array, SharedMemory, ShareableList, ShareableValue, ShmError};
///
/// let err = SharedMemory::create(None, 0).unwrap_err();
/// assert!(matches!(err, ShmError::Segment(_)));
///
/// let array = Array::from_slice(&[1u8, 2])?;
/// let err = array.get(5).unwrap_err();
/// assert!(matches!(err, ShmError::IndexOutOfRange { index: 5, len: 2 }));
/// assert_eq!(err.to_string(), "index 5 out of range for length 2");
///
/// let list = ShareableList::create(None, &[ShareableValue::from("ab")])?;
/// let err = list.set(0, ShareableValue::from("a string longer than eight")).unwrap_err();
/// assert!(matches!(err, ShmError::ValueTooLong { .. }));
///
/// let block = SharedMemory::create(None, 64)?;
/// block.write_at(0, &i64::MAX.to_ne_bytes())?; // an absurd item count
/// let err = ShareableList::open(block.name()).unwrap_err();
/// assert!(matches!(err, ShmError::NotAShareableList(_)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum ShmError {
    /// Creating, opening or unlinking the segment failed: a bad name (empty,
    /// too long, a `/` inside), size 0, a name taken or missing, or the
    /// kernel's refusal. The [`SegmentError`] says which.
    Segment(SegmentError),
    /// The segment is smaller than the data placed in it needs.
    TooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes the segment has.
        have: usize,
    },
    /// The segment does not hold a valid `ShareableList` (or is corrupt).
    NotAShareableList(&'static str),
    /// An index past the end.
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// The length.
        len: usize,
    },
    /// A handle names an object of another element type or layout.
    WrongType,
    /// The object's lock could not be made.
    LockCreate(multiproc_sync::CreateError),
    /// The object's lock could not be attached (its words are corrupt).
    LockAttach(multiproc_sync::AttachError),
    /// A process died holding the object's lock, perhaps half-way through
    /// changing the data. The operation that reports it did nothing; the
    /// lock works again, and the next operation proceeds. (Python's `Value`
    /// has no such check.)
    OwnerDied,
    /// A `str` or `bytes` value longer than the room its slot was created
    /// with (Python raises `ValueError` here too).
    ValueTooLong {
        /// Bytes the value needs.
        len: usize,
        /// Bytes the slot has.
        capacity: usize,
    },
}

impl ShmError {
    /// Whether this is [`ShmError::OwnerDied`].
    ///
    /// ```
    /// assert!(multiproc_shm::ShmError::OwnerDied.is_owner_died());
    /// ```
    #[must_use]
    pub fn is_owner_died(&self) -> bool {
        matches!(self, Self::OwnerDied)
    }
}

impl fmt::Display for ShmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Segment(_) => f.write_str("shared-memory segment error"),
            Self::TooSmall { need, have } => {
                write!(f, "segment of {have} bytes is too small: {need} needed")
            }
            Self::NotAShareableList(why) => write!(f, "not a ShareableList: {why}"),
            Self::IndexOutOfRange { index, len } => {
                write!(f, "index {index} out of range for length {len}")
            }
            Self::WrongType => f.write_str("shared object holds another element type"),
            Self::LockCreate(_) => f.write_str("creating the shared object's lock failed"),
            Self::LockAttach(_) => f.write_str("attaching the shared object's lock failed"),
            Self::OwnerDied => f.write_str(
                "a process died holding the shared object's lock; the data may be half-changed",
            ),
            Self::ValueTooLong { len, capacity } => {
                write!(
                    f,
                    "value of {len} bytes exceeds the slot's {capacity} bytes"
                )
            }
        }
    }
}

impl std::error::Error for ShmError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Segment(err) => Some(err),
            Self::LockCreate(err) => Some(err),
            Self::LockAttach(err) => Some(err),
            _ => None,
        }
    }
}

impl From<SegmentError> for ShmError {
    fn from(err: SegmentError) -> Self {
        Self::Segment(err)
    }
}
