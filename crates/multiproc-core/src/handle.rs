//! Descriptors that ride through serde: the out-of-band descriptor table.
//!
//! A value that owns an OS resource (a [`Segment`](crate::Segment), a queue, a
//! connection) cannot put its descriptor *number* into a byte stream: the
//! number means nothing in another process. Instead, while a value is being
//! encoded, [`SharedFd`]'s `Serialize` duplicates the descriptor into a
//! thread-local table and writes only its index; the transport ships the
//! table beside the bytes (`SCM_RIGHTS`, see [`scm`](crate::scm)); decoding
//! installs the received descriptors as the table and `Deserialize` takes
//! each out by its index.
//!
//! The table exists only inside [`codec::encode_with_fds`] and
//! [`codec::decode_with_fds`]; it is cleared when they return, on error and on
//! panic alike, and descriptors nobody took are closed. Encoding a handle with
//! no table installed (a transport that cannot carry descriptors) fails with
//! [`CodecError::DescriptorsUnsupported`]; a bad or reused index fails with
//! [`HandleError`]. Neither panics.
//!
//! A resource-owning type implements serde through a wire struct that holds a
//! [`SharedFd`]:
//!
//! ```
//! use multiproc_core::{codec, SharedFd};
//! use serde::{Deserialize, Serialize};
//! use std::os::fd::OwnedFd;
//!
//! #[derive(Serialize, Deserialize)]
//! struct MyHandle {
//!     fd: SharedFd,
//!     label: String,
//! }
//!
//! let (a, _b) = multiproc_core::scm::stream_pair()?;
//! let handle = MyHandle { fd: SharedFd::from(a), label: "socket".into() };
//! let (bytes, fds) = codec::encode_with_fds(&handle)?;
//! assert_eq!(fds.len(), 1);
//! let back: MyHandle = codec::decode_with_fds(&bytes, fds)?;
//! let _fd: OwnedFd = back.fd.into_inner();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`codec::encode_with_fds`]: crate::codec::encode_with_fds
//! [`codec::decode_with_fds`]: crate::codec::decode_with_fds
//! [`CodecError::DescriptorsUnsupported`]: crate::CodecError::DescriptorsUnsupported

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cell::RefCell;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// Why a descriptor could not go into or come out of the table.
///
/// # Examples
///
/// ```
/// use multiproc_core::{codec, CodecError, SharedFd};
/// use multiproc_core::handle::HandleError;
///
/// let (a, b) = multiproc_core::scm::stream_pair()?;
/// let (bytes, _fds) = codec::encode_with_fds(&SharedFd::from(a))?;
/// // The message names descriptor 0, but none arrived with it.
/// let err = codec::decode_with_fds::<SharedFd>(&bytes, Vec::new()).unwrap_err();
/// assert!(matches!(
///     err,
///     CodecError::Handle(HandleError::BadIndex { index: 0, received: 0 })
/// ));
///
/// // The same descriptor claimed twice.
/// let (bytes, fds) = codec::encode_with_fds(&SharedFd::from(b))?;
/// let twice = [bytes.clone(), bytes].concat();
/// let err = codec::decode_with_fds::<(SharedFd, SharedFd)>(&twice, fds).unwrap_err();
/// assert!(matches!(err, CodecError::Handle(HandleError::IndexReused(0))));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum HandleError {
    /// A handle was encoded where no descriptor table is installed: the
    /// transport cannot carry descriptors.
    NoTransport,
    /// The message refers to a descriptor index the table does not have.
    BadIndex {
        /// The index in the message.
        index: u32,
        /// How many descriptors arrived.
        received: usize,
    },
    /// The message refers to the same descriptor twice.
    IndexReused(u32),
    /// Duplicating a descriptor for the table failed.
    Dup(io::Error),
}

impl fmt::Display for HandleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoTransport => f.write_str("this transport cannot carry file descriptors"),
            Self::BadIndex { index, received } => write!(
                f,
                "descriptor index {index} out of range ({received} descriptors received)"
            ),
            Self::IndexReused(index) => write!(f, "descriptor index {index} used twice"),
            Self::Dup(_) => f.write_str("duplicating a descriptor failed"),
        }
    }
}

impl std::error::Error for HandleError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Dup(err) => Some(err),
            _ => None,
        }
    }
}

enum Table {
    Encode(Vec<OwnedFd>),
    Decode(Vec<Option<OwnedFd>>),
}

/// What the encode or decode running on this thread has to work with.
struct State {
    /// Its descriptor table, if it has one.
    table: Option<Table>,
    /// Its first handle failure: serde errors are strings, so the typed
    /// error waits here for the codec to pick up.
    failure: Option<HandleError>,
}

thread_local! {
    /// One thread-local for both, so a scope costs one lookup to open and
    /// one to close (every queue message opens one).
    static STATE: RefCell<State> = const {
        RefCell::new(State {
            table: None,
            failure: None,
        })
    };
}

/// Installs a table for the length of one encode or decode, and restores
/// the previous state (allowing nesting) when dropped, panics included.
struct Scope {
    previous: Option<Table>,
    previous_failure: Option<HandleError>,
}

impl Scope {
    fn install(table: Option<Table>) -> Self {
        STATE.with(|state| {
            let mut state = state.borrow_mut();
            Self {
                previous: std::mem::replace(&mut state.table, table),
                previous_failure: state.failure.take(),
            }
        })
    }

    /// Puts the previous state back; returns the scope's own.
    fn restore(&mut self) -> (Option<Table>, Option<HandleError>) {
        STATE.with(|state| {
            let mut state = state.borrow_mut();
            (
                std::mem::replace(&mut state.table, self.previous.take()),
                std::mem::replace(&mut state.failure, self.previous_failure.take()),
            )
        })
    }

    /// Ends the scope, returning its table and its first failure.
    fn finish(mut self) -> (Option<Table>, Option<HandleError>) {
        let own = self.restore();
        std::mem::forget(self);
        own
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        // Unwinding: drop (close) whatever the table holds.
        let _ = self.restore();
    }
}

/// A scope with no table on a thread that has no table and no failure
/// either (the usual case: a message of a type without handles, not nested
/// in another encode): nothing to install or restore, only a failure
/// recorded meanwhile to take, panics included.
struct BareScope;

impl BareScope {
    /// `Some` when a table-less scope needs nothing installed now.
    #[inline]
    fn open() -> Option<Self> {
        STATE
            .with(|state| {
                let state = state.borrow();
                state.table.is_none() && state.failure.is_none()
            })
            .then_some(Self)
    }

    #[inline]
    fn finish(self) -> Option<HandleError> {
        std::mem::forget(self);
        take_failure()
    }
}

impl Drop for BareScope {
    fn drop(&mut self) {
        // Unwinding: the failure belonged to the encode or decode that
        // panicked.
        let _ = take_failure();
    }
}

#[inline]
fn take_failure() -> Option<HandleError> {
    STATE.with(|state| {
        // Read first: there is nearly never one to take.
        if state.borrow().failure.is_none() {
            None
        } else {
            state.borrow_mut().failure.take()
        }
    })
}

/// Runs `f` (an encode) with no descriptor table (a handle met fails with
/// [`HandleError::NoTransport`]); returns its result and the first handle
/// failure. [`encode_scope_collecting`] is the one with a table.
///
/// Inlined: the pair returned through memory is read back with loads
/// wider than some of the stores that wrote it, and such a load waits for
/// the store buffer to drain (a failed store-to-load forward). With the
/// same fix in the queue's unlock, `cargo bench -p multiproc-queue --bench
/// queue -- one_thread` went from 1.16 to 0.84 µs per 16 typed `u64` puts
/// and gets (2-vCPU AMD EPYC). The scope with a table to install, rarely
/// taken, is not.
#[inline(always)]
pub(crate) fn encode_scope<R>(f: impl FnOnce() -> R) -> (R, Option<HandleError>) {
    if let Some(bare) = BareScope::open() {
        let result = f();
        return (result, bare.finish());
    }
    encode_scope_installed(f)
}

#[inline(never)]
fn encode_scope_installed<R>(f: impl FnOnce() -> R) -> (R, Option<HandleError>) {
    let scope = Scope::install(None);
    let result = f();
    let (_, failure) = scope.finish();
    (result, failure)
}

/// Runs `f` (an encode) with a fresh descriptor table; returns its result,
/// the descriptors it collected and the first handle failure.
pub(crate) fn encode_scope_collecting<R>(
    f: impl FnOnce() -> R,
) -> (R, Vec<OwnedFd>, Option<HandleError>) {
    let scope = Scope::install(Some(Table::Encode(Vec::new())));
    let result = f();
    let (table, failure) = scope.finish();
    let fds = match table {
        Some(Table::Encode(fds)) => fds,
        _ => Vec::new(),
    };
    (result, fds, failure)
}

/// Runs `f` (a decode) with `fds` as the table, or with none when `fds` is
/// `None`; descriptors `f` does not take are closed when this returns.
///
/// Inlined, as [`encode_scope`] is, but for the scope with a table.
#[inline(always)]
pub(crate) fn decode_scope<R>(
    fds: Option<Vec<OwnedFd>>,
    f: impl FnOnce() -> R,
) -> (R, Option<HandleError>) {
    if fds.is_none()
        && let Some(bare) = BareScope::open()
    {
        let result = f();
        return (result, bare.finish());
    }
    decode_scope_installed(fds, f)
}

#[inline(never)]
fn decode_scope_installed<R>(
    fds: Option<Vec<OwnedFd>>,
    f: impl FnOnce() -> R,
) -> (R, Option<HandleError>) {
    let table = fds.map(|fds| Table::Decode(fds.into_iter().map(Some).collect()));
    let scope = Scope::install(table);
    let result = f();
    let (_unclaimed, failure) = scope.finish();
    (result, failure)
}

fn record(err: HandleError) -> String {
    let text = err.to_string();
    STATE.with(|state| {
        state.borrow_mut().failure.get_or_insert(err);
    });
    text
}

/// An owned descriptor that serializes through the descriptor table; see the
/// [module docs](self).
///
/// Serializing duplicates the descriptor (the original stays with its owner);
/// deserializing yields the received descriptor.
///
/// # Examples
///
/// ```
/// use multiproc_core::{codec, SharedFd};
///
/// let (a, _b) = multiproc_core::scm::stream_pair()?;
/// let fd = SharedFd::from(a);
/// let (bytes, fds) = codec::encode_with_fds(&fd)?; // `fd` stays valid here
/// let received: SharedFd = codec::decode_with_fds(&bytes, fds)?;
/// assert_ne!(format!("{received:?}"), format!("{fd:?}")); // another descriptor
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SharedFd(OwnedFd);

impl SharedFd {
    /// `fcntl(F_DUPFD_CLOEXEC)`: a `SharedFd` holding a duplicate of `fd`.
    ///
    /// # Errors
    ///
    /// The kernel's error (e.g. `EMFILE`).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::SharedFd;
    /// use std::io::{Read, Write};
    /// use std::os::unix::net::UnixStream;
    ///
    /// let (a, b) = multiproc_core::scm::stream_pair()?;
    /// let dup = SharedFd::duplicate(&a)?; // `a` stays open and usable
    /// UnixStream::from(dup.into_inner()).write_all(b"x")?;
    /// let mut byte = [0u8; 1];
    /// UnixStream::from(b).read_exact(&mut byte)?;
    /// assert_eq!(&byte, b"x");
    /// drop(a);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn duplicate(fd: impl AsFd) -> io::Result<Self> {
        Ok(Self(rustix::io::fcntl_dupfd_cloexec(fd, 0)?))
    }

    /// The descriptor.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::SharedFd;
    /// use std::os::fd::{AsRawFd, OwnedFd};
    ///
    /// let (a, _b) = multiproc_core::scm::stream_pair()?;
    /// let raw = a.as_raw_fd();
    /// let fd: OwnedFd = SharedFd::from(a).into_inner();
    /// assert_eq!(fd.as_raw_fd(), raw); // the same descriptor, no duplicate
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn into_inner(self) -> OwnedFd {
        self.0
    }
}

impl From<OwnedFd> for SharedFd {
    fn from(fd: OwnedFd) -> Self {
        Self(fd)
    }
}

impl AsFd for SharedFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl fmt::Debug for SharedFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedFd")
            .field(&self.0.as_raw_fd())
            .finish()
    }
}

impl Serialize for SharedFd {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let pushed = STATE.with(|state| -> Result<u32, HandleError> {
            let mut state = state.borrow_mut();
            let Some(Table::Encode(fds)) = state.table.as_mut() else {
                return Err(HandleError::NoTransport);
            };
            let dup = rustix::io::fcntl_dupfd_cloexec(&self.0, 0)
                .map_err(|e| HandleError::Dup(e.into()))?;
            let index = u32::try_from(fds.len()).map_err(|_| {
                HandleError::Dup(io::Error::other("too many descriptors in one message"))
            })?;
            fds.push(dup);
            Ok(index)
        });
        match pushed {
            Ok(index) => serializer.serialize_u32(index),
            Err(err) => Err(serde::ser::Error::custom(record(err))),
        }
    }
}

impl<'de> Deserialize<'de> for SharedFd {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let index = u32::deserialize(deserializer)?;
        let taken = STATE.with(|state| -> Result<OwnedFd, HandleError> {
            let mut state = state.borrow_mut();
            let Some(Table::Decode(slots)) = state.table.as_mut() else {
                return Err(HandleError::NoTransport);
            };
            let received = slots.len();
            let slot = usize::try_from(index)
                .ok()
                .and_then(|i| slots.get_mut(i))
                .ok_or(HandleError::BadIndex { index, received })?;
            slot.take().ok_or(HandleError::IndexReused(index))
        });
        match taken {
            Ok(fd) => Ok(Self(fd)),
            Err(err) => Err(serde::de::Error::custom(record(err))),
        }
    }
}
