//! [`Segment`]: memory shared between processes, and the [`Header`] that
//! every object placed in one starts with.
//!
//! # Flavors
//!
//! | flavor | made by | name | freed |
//! |---|---|---|---|
//! | anonymous (default) | [`Segment::anonymous`] | none | by the kernel, when the last descriptor and mapping go |
//! | named | [`Segment::create_named`], [`Segment::open_named`] | a POSIX shm name (`/dev/shm/NAME`) | when [`Segment::unlink`] is called *and* the last mapping goes |
//!
//! Anonymous segments are memfds whose size is sealed (`F_SEAL_SHRINK`,
//! `F_SEAL_GROW`, then `F_SEAL_SEAL`): nobody who receives the descriptor can
//! truncate the file under a mapping and turn the others' next access into
//! `SIGBUS`. Attaching to a memfd that lacks those seals is refused.
//!
//! Named segments follow Python's `multiprocessing.shared_memory` rules, so
//! the two interoperate: a name is given without its leading `/`, created
//! with `O_CREAT | O_EXCL` and mode `0600`, and attached with its size taken
//! from `fstat`. A named object cannot be sealed; whoever can open it can also
//! truncate it, which is the trust model of POSIX shm.
//!
//! # Generated names
//!
//! A named segment created without a name ([`Segment::create_named`] with
//! `None`, and every `SharedMemory::create`, which makes its block under a
//! generated name first) gets the process's *name prefix* followed by 24
//! random hex digits: `mp_` by default, or the value of the environment
//! variable `MULTIPROC_SHM_PREFIX` ([`NAME_PREFIX_ENV`]). A prefix lets a
//! program, a test run or a CI job tell its own names in `/dev/shm` from
//! those of every other program on the machine, and clean up or check
//! exactly those.
//!
//! - The variable is read once per process, on the first generated name, and
//!   kept: changing it later has no effect on that process. Children inherit
//!   it with the rest of the environment (a forked child also inherits the
//!   value already read).
//! - Unset or empty means `mp_`. Otherwise it must be 1 to
//!   [`MAX_NAME_PREFIX_LEN`] bytes of `A-Z a-z 0-9 _ . -` (see
//!   [`validate_name_prefix`]). An invalid value is not replaced by the
//!   default, which would put names outside the set the caller watches:
//!   every generated name fails with [`SegmentError::InvalidNamePrefix`].
//! - Names given explicitly are used as they are; the prefix applies only to
//!   generated ones.
//!
//! ```
//! use multiproc_core::segment::{name_prefix, Segment};
//!
//! let segment = Segment::create_named(None, 64)?;
//! // "mp_…" unless MULTIPROC_SHM_PREFIX says otherwise.
//! assert!(segment.name().unwrap().starts_with(name_prefix()?));
//! segment.unlink()?;
//! # Ok::<(), multiproc_core::SegmentError>(())
//! ```
//!
//! # Access rules
//!
//! Other processes write to the same bytes at any moment, so a `Segment`
//! never hands out `&[u8]` or `&mut [u8]`. It offers
//! - [`read_at`](Segment::read_at) / [`write_at`](Segment::write_at): copies in and out;
//! - [`view`](Segment::view): a shared reference to a [`SharedSafe`] type
//!   (atomics and arrays of them), which is sound under concurrent change;
//! - [`as_ptr`](Segment::as_ptr) for crates that build their own layouts with
//!   `unsafe` code and say why it is sound.
//!
//! # Why not the `shared_memory` crate
//!
//! It covers named segments only, unlinks on drop by default (a surprise for
//! processes that attach), and has no memfd flavor; the named flavor here is a
//! few calls to `shm_open`, so it is done directly.
#![allow(unsafe_code)]

use rustix::fs::{Mode, SealFlags};
use rustix::shm;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{
    AtomicI32, AtomicI64, AtomicPtr, AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering,
};

use crate::handle::SharedFd;

/// Where Linux (glibc's `shm_open`, and rustix's) keeps POSIX shared memory.
const SHM_DIR: &str = "/dev/shm";

/// Longest name, without the leading `/`, that Linux accepts (`NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;

/// The environment variable whose value replaces [`DEFAULT_NAME_PREFIX`]
/// in generated names (see [Generated names](self#generated-names)).
///
/// # Examples
///
/// ```no_run
/// // In a shell: MULTIPROC_SHM_PREFIX=mp_job42_ ./my-program
/// // Then every name the program generates is "mp_job42_" + 24 hex digits.
/// assert_eq!(multiproc_core::segment::NAME_PREFIX_ENV, "MULTIPROC_SHM_PREFIX");
/// ```
pub const NAME_PREFIX_ENV: &str = "MULTIPROC_SHM_PREFIX";

/// Prefix of generated names when [`NAME_PREFIX_ENV`] is unset or empty.
/// Random hex follows; 96 bits of it make names unguessable, so nobody can
/// squat the name a creator is about to use.
///
/// # Examples
///
/// ```
/// use multiproc_core::segment::{validate_name_prefix, DEFAULT_NAME_PREFIX};
///
/// assert!(validate_name_prefix(DEFAULT_NAME_PREFIX).is_ok());
/// ```
pub const DEFAULT_NAME_PREFIX: &str = "mp_";

/// Longest prefix [`NAME_PREFIX_ENV`] may set, in bytes. With the 24 hex
/// digits of a generated name it stays well within [`MAX_NAME_LEN`], and
/// leaves room for names that callers build on the prefix themselves.
///
/// # Examples
///
/// ```
/// use multiproc_core::segment::{validate_name_prefix, MAX_NAME_PREFIX_LEN};
///
/// assert!(validate_name_prefix(&"p".repeat(MAX_NAME_PREFIX_LEN)).is_ok());
/// assert!(validate_name_prefix(&"p".repeat(MAX_NAME_PREFIX_LEN + 1)).is_err());
/// ```
pub const MAX_NAME_PREFIX_LEN: usize = 128;

/// Hex digits after the prefix in a generated name (12 random bytes).
const GENERATED_DIGITS: usize = 24;

const _: () = assert!(MAX_NAME_PREFIX_LEN + GENERATED_DIGITS <= MAX_NAME_LEN);

/// Errors from creating, attaching to or accessing a [`Segment`].
///
/// # Examples
///
/// ```
/// use multiproc_core::{Segment, SegmentError};
/// use std::io::ErrorKind;
///
/// assert!(matches!(Segment::anonymous(0), Err(SegmentError::InvalidSize(0))));
/// assert!(matches!(
///     Segment::create_named(Some("a/b"), 8),
///     Err(SegmentError::InvalidName { .. })
/// ));
///
/// let segment = Segment::anonymous(8)?;
/// assert!(matches!(
///     segment.write_at(4, &[0; 8]),
///     Err(SegmentError::OutOfBounds { offset: 4, len: 8, size: 8 })
/// ));
/// assert!(matches!(segment.unlink(), Err(SegmentError::NotNamed)));
///
/// let err = Segment::open_named("surely_not_a_segment_here").unwrap_err();
/// assert!(matches!(err, SegmentError::Io { .. }));
/// assert_eq!(err.io_kind(), Some(ErrorKind::NotFound));
/// # Ok::<(), SegmentError>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum SegmentError {
    /// A system call failed.
    Io {
        /// What was being done.
        op: &'static str,
        /// The error the kernel returned.
        source: io::Error,
    },
    /// The name breaks the naming rules (empty, too long, a `/` inside, …).
    InvalidName {
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The prefix for generated names, set in [`NAME_PREFIX_ENV`], breaks
    /// the rules of [`validate_name_prefix`]; no name is generated with it,
    /// and none with the default either.
    InvalidNamePrefix {
        /// The rejected prefix (lossily decoded when it is not UTF-8).
        prefix: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A segment cannot have this size (zero, or larger than the address space).
    InvalidSize(u64),
    /// An access reaches outside the segment.
    OutOfBounds {
        /// Start of the access.
        offset: usize,
        /// Length of the access.
        len: usize,
        /// Size of the segment.
        size: usize,
    },
    /// An offset is not aligned for the type read there.
    Misaligned {
        /// The offset.
        offset: usize,
        /// The alignment required.
        align: usize,
    },
    /// A memfd received for attaching is not sealed against shrinking.
    NotSealed,
    /// The operation needs a named segment.
    NotNamed,
    /// The object header at the start of the segment did not validate.
    Header(HeaderError),
}

impl SegmentError {
    fn io(op: &'static str, source: impl Into<io::Error>) -> Self {
        Self::Io {
            op,
            source: source.into(),
        }
    }

    /// The `io::ErrorKind` for I/O failures (`AlreadyExists`, `NotFound`, …).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Segment;
    /// use std::io::ErrorKind;
    ///
    /// let first = Segment::create_named(None, 8)?;
    /// let name = first.name().unwrap();
    /// let err = Segment::create_named(Some(name), 8).unwrap_err();
    /// assert_eq!(err.io_kind(), Some(ErrorKind::AlreadyExists));
    /// assert_eq!(Segment::anonymous(0).unwrap_err().io_kind(), None); // not an I/O error
    /// first.unlink()?;
    /// # Ok::<(), multiproc_core::SegmentError>(())
    /// ```
    #[must_use]
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Self::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

impl fmt::Display for SegmentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { op, .. } => write!(f, "shared-memory segment: {op} failed"),
            Self::InvalidName { name, reason } => {
                write!(f, "invalid shared-memory name {name:?}: {reason}")
            }
            Self::InvalidNamePrefix { prefix, reason } => write!(
                f,
                "invalid shared-memory name prefix {prefix:?} (from {NAME_PREFIX_ENV}): {reason}"
            ),
            Self::InvalidSize(size) => write!(f, "invalid shared-memory size {size}"),
            Self::OutOfBounds { offset, len, size } => write!(
                f,
                "access of {len} bytes at offset {offset} is outside a segment of {size} bytes"
            ),
            Self::Misaligned { offset, align } => {
                write!(f, "offset {offset} is not aligned to {align} bytes")
            }
            Self::NotSealed => f.write_str("memfd is not sealed against shrinking"),
            Self::NotNamed => f.write_str("segment has no name"),
            Self::Header(_) => f.write_str("segment header is invalid"),
        }
    }
}

impl std::error::Error for SegmentError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Header(err) => Some(err),
            _ => None,
        }
    }
}

impl From<HeaderError> for SegmentError {
    fn from(err: HeaderError) -> Self {
        Self::Header(err)
    }
}

impl From<SegmentError> for io::Error {
    fn from(err: SegmentError) -> Self {
        match err {
            SegmentError::Io { source, .. } => source,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// Types that may be viewed in place in a segment through a shared reference
/// while other processes change the same bytes.
///
/// # Safety
///
/// Implementers guarantee that the type
/// - is `#[repr(C)]` (or a primitive or array) with a layout fixed across
///   processes and builds;
/// - is valid for *every* bit pattern, including all zeros (another process,
///   or a corrupt segment, may have written anything);
/// - mutates only through atomics (or an `UnsafeCell` protocol it documents),
///   so `&Self` stays sound while others write concurrently;
/// - holds no pointers, references or descriptors: they mean nothing in
///   another process;
/// - has an alignment of at most 4096 (segments are page-aligned);
/// - has no `Drop` glue that matters (values in a segment are never dropped).
///
/// # Examples
///
/// ```
/// use multiproc_core::segment::{Segment, SharedSafe};
/// use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
///
/// #[repr(C)]
/// struct Stats {
///     hits: AtomicU64,
///     misses: AtomicU64,
///     flags: AtomicU32,
/// }
/// // SAFETY: `repr(C)` atomics only: valid for every bit pattern, mutated only
/// // through atomics, no pointers, alignment 8, no drop glue.
/// unsafe impl SharedSafe for Stats {}
///
/// let segment = Segment::anonymous(4096)?;
/// let stats = segment.view::<Stats>(0)?;
/// stats.hits.fetch_add(1, Ordering::Relaxed);
/// let again = segment.try_clone()?; // as another process would map it
/// assert_eq!(again.view::<Stats>(0)?.hits.load(Ordering::Relaxed), 1);
/// # Ok::<(), multiproc_core::SegmentError>(())
/// ```
pub unsafe trait SharedSafe: Sync {}

// SAFETY: atomics of integers are valid for every bit pattern, mutate only
// atomically, hold no pointers and are plain `repr(C)`-compatible primitives.
unsafe impl SharedSafe for AtomicU8 {}
// SAFETY: as for `AtomicU8`.
unsafe impl SharedSafe for AtomicU16 {}
// SAFETY: as for `AtomicU8`.
unsafe impl SharedSafe for AtomicU32 {}
// SAFETY: as for `AtomicU8`.
unsafe impl SharedSafe for AtomicU64 {}
// SAFETY: as for `AtomicU8`.
unsafe impl SharedSafe for AtomicI32 {}
// SAFETY: as for `AtomicU8`.
unsafe impl SharedSafe for AtomicI64 {}
// SAFETY: an array of `SharedSafe` elements has their properties: no padding
// between elements, every bit pattern valid element-wise.
unsafe impl<T: SharedSafe, const N: usize> SharedSafe for [T; N] {}

#[derive(Debug)]
enum Flavor {
    Anonymous,
    Named { name: String },
}

/// A shared mapping that several processes see; see the [module docs](self).
///
/// # Examples
///
/// ```
/// use multiproc_core::Segment;
///
/// let segment = Segment::anonymous(100)?;
/// assert_eq!(segment.len(), 100);
/// segment.write_at(10, &[1, 2, 3])?;
/// let mut out = [0u8; 3];
/// segment.read_at(10, &mut out)?;
/// assert_eq!(out, [1, 2, 3]);
/// assert!(segment.write_at(99, &[1, 2]).is_err()); // out of bounds
/// # Ok::<(), multiproc_core::SegmentError>(())
/// ```
pub struct Segment {
    map: memmap2::MmapRaw,
    fd: OwnedFd,
    flavor: Flavor,
}

impl Segment {
    /// `memfd_create` + `ftruncate` + seals + `mmap`: an anonymous segment of
    /// `size` bytes, zero-filled, with no name in any namespace.
    ///
    /// Pages are committed when first touched, so a large segment costs
    /// little until it is used.
    ///
    /// # Errors
    ///
    /// [`SegmentError::InvalidSize`] for 0 or a size beyond `isize::MAX`;
    /// [`SegmentError::Io`] when the kernel refuses (e.g. out of memory).
    ///
    /// # References
    ///  - [memfd_create(2)](https://man7.org/linux/man-pages/man2/memfd_create.2.html)
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Segment;
    ///
    /// let segment = Segment::anonymous(1 << 20)?; // 1 MiB, committed as touched
    /// assert_eq!(segment.len(), 1 << 20);
    /// assert_eq!(segment.name(), None);
    /// let mut first = [1u8; 4];
    /// segment.read_at(0, &mut first)?;
    /// assert_eq!(first, [0; 4]); // zero-filled
    /// # Ok::<(), multiproc_core::SegmentError>(())
    /// ```
    pub fn anonymous(size: usize) -> Result<Self, SegmentError> {
        let len = checked_size(size as u64)?;
        let fd = rustix::fs::memfd_create(
            "multiproc",
            rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
        )
        .map_err(|e| SegmentError::io("memfd_create", e))?;
        rustix::fs::ftruncate(&fd, len as u64).map_err(|e| SegmentError::io("ftruncate", e))?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .map_err(|e| SegmentError::io("fcntl(F_ADD_SEALS)", e))?;
        Self::map(fd, len, Flavor::Anonymous)
    }

    /// `shm_open(O_CREAT | O_EXCL, 0600)` + `ftruncate` + `mmap`: a new named
    /// segment. With `name = None` an unguessable name is generated (see
    /// [`generate_name`]).
    ///
    /// The segment stays in `/dev/shm` until [`unlink`](Self::unlink) is
    /// called, even after every process has closed it.
    ///
    /// # Errors
    ///
    /// [`SegmentError::InvalidName`], [`SegmentError::InvalidSize`], or
    /// [`SegmentError::Io`] with kind `AlreadyExists` when the name is taken;
    /// with `name = None`, [`SegmentError::InvalidNamePrefix`] when
    /// [`NAME_PREFIX_ENV`] holds an invalid prefix.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Segment;
    ///
    /// let created = Segment::create_named(None, 4096)?;
    /// let name = created.name().unwrap().to_owned();
    /// let attached = Segment::open_named(&name)?;
    /// created.write_at(0, b"hi")?;
    /// let mut buf = [0u8; 2];
    /// attached.read_at(0, &mut buf)?;
    /// assert_eq!(&buf, b"hi");
    /// created.unlink()?;
    /// assert!(Segment::open_named(&name).is_err());
    /// # Ok::<(), multiproc_core::SegmentError>(())
    /// ```
    ///
    /// # References
    ///  - [shm_open(3)](https://man7.org/linux/man-pages/man3/shm_open.3.html)
    pub fn create_named(name: Option<&str>, size: usize) -> Result<Self, SegmentError> {
        let len = checked_size(size as u64)?;
        let flags = shm::OFlags::CREATE | shm::OFlags::EXCL | shm::OFlags::RDWR;
        let mode = Mode::RUSR | Mode::WUSR;
        let (name, fd) = match name {
            Some(name) => {
                let name = validate_name(name)?;
                let fd = shm::open(format!("/{name}").as_str(), flags, mode)
                    .map_err(|e| SegmentError::io("shm_open", e))?;
                (name.to_owned(), fd)
            }
            None => loop {
                let name = generate_name()?;
                match shm::open(format!("/{name}").as_str(), flags, mode) {
                    Ok(fd) => break (name, fd),
                    Err(rustix::io::Errno::EXIST) => continue,
                    Err(e) => return Err(SegmentError::io("shm_open", e)),
                }
            },
        };
        if let Err(e) = rustix::fs::ftruncate(&fd, len as u64) {
            // Do not leave a zero-sized object behind under our name.
            let _ = shm::unlink(format!("/{name}").as_str());
            return Err(SegmentError::io("ftruncate", e));
        }
        let path = format!("/{name}");
        Self::map(fd, len, Flavor::Named { name }).inspect_err(|_| {
            let _ = shm::unlink(path.as_str());
        })
    }

    /// `shm_open(O_RDWR)` + `fstat` + `mmap`: attaches to an existing named
    /// segment, with the size it has now.
    ///
    /// # Errors
    ///
    /// [`SegmentError::InvalidName`], [`SegmentError::Io`] with kind
    /// `NotFound` when no such segment exists, [`SegmentError::InvalidSize`]
    /// when it is empty.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Segment;
    ///
    /// let created = Segment::create_named(None, 128)?;
    /// let attached = Segment::open_named(created.name().unwrap())?;
    /// assert_eq!(attached.len(), 128); // the size comes from the object
    /// assert_eq!(attached.name(), created.name());
    /// created.unlink()?;
    /// # Ok::<(), multiproc_core::SegmentError>(())
    /// ```
    pub fn open_named(name: &str) -> Result<Self, SegmentError> {
        let name = validate_name(name)?;
        let fd = shm::open(
            format!("/{name}").as_str(),
            shm::OFlags::RDWR,
            Mode::empty(),
        )
        .map_err(|e| SegmentError::io("shm_open", e))?;
        let len = file_size(&fd)?;
        Self::map(
            fd,
            len,
            Flavor::Named {
                name: name.to_owned(),
            },
        )
    }

    /// Attaches to a segment whose descriptor arrived from elsewhere (for
    /// example over a socket). The size is taken from `fstat`.
    ///
    /// The descriptor must be a memfd sealed against shrinking (see the
    /// [module docs](self)); named segments travel with their name instead.
    ///
    /// # Errors
    ///
    /// [`SegmentError::NotSealed`], [`SegmentError::InvalidSize`] for an
    /// empty file, [`SegmentError::Io`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::{Segment, SegmentError, SharedFd};
    ///
    /// let segment = Segment::anonymous(64)?;
    /// segment.write_at(0, b"sealed")?;
    /// // As a receiver gets it: a descriptor that arrived over a socket.
    /// let fd = SharedFd::duplicate(&segment).map_err(|e| SegmentError::Io { op: "dup", source: e })?;
    /// let attached = Segment::from_fd(fd.into_inner())?;
    /// let mut buf = [0u8; 6];
    /// attached.read_at(0, &mut buf)?;
    /// assert_eq!(&buf, b"sealed");
    ///
    /// // A memfd without the seals is refused.
    /// let unsealed = rustix::fs::memfd_create("plain", rustix::fs::MemfdFlags::CLOEXEC)
    ///     .map_err(|e| SegmentError::Io { op: "memfd_create", source: e.into() })?;
    /// rustix::fs::ftruncate(&unsealed, 64)
    ///     .map_err(|e| SegmentError::Io { op: "ftruncate", source: e.into() })?;
    /// assert!(matches!(Segment::from_fd(unsealed), Err(SegmentError::NotSealed)));
    /// # Ok::<(), SegmentError>(())
    /// ```
    pub fn from_fd(fd: OwnedFd) -> Result<Self, SegmentError> {
        Self::from_fd_named(fd, None)
    }

    /// Another mapping of the same memory, with its own descriptor (as a
    /// receiving process would get).
    ///
    /// # Errors
    ///
    /// [`SegmentError::Io`] when the descriptor cannot be duplicated or
    /// mapped.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Segment;
    /// use std::sync::atomic::{AtomicU32, Ordering};
    ///
    /// let segment = Segment::anonymous(64)?;
    /// let other = segment.try_clone()?;
    /// other.atomic_u32(0)?.store(9, Ordering::Release);
    /// assert_eq!(segment.atomic_u32(0)?.load(Ordering::Acquire), 9);
    /// assert_ne!(other.as_ptr(), segment.as_ptr()); // a mapping of its own
    /// # Ok::<(), multiproc_core::SegmentError>(())
    /// ```
    pub fn try_clone(&self) -> Result<Self, SegmentError> {
        let fd = rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)
            .map_err(|e| SegmentError::io("fcntl(F_DUPFD_CLOEXEC)", e))?;
        Self::from_fd_named(fd, self.name().map(str::to_owned))
    }

    fn from_fd_named(fd: OwnedFd, name: Option<String>) -> Result<Self, SegmentError> {
        // A named shm object cannot be sealed (its seals read as F_SEAL_SEAL
        // alone): it is trusted like any POSIX shm name. An anonymous
        // segment must be a memfd sealed against shrinking.
        if name.is_none() {
            match rustix::fs::fcntl_get_seals(&fd) {
                Ok(seals) if seals.contains(SealFlags::SHRINK) => {}
                Ok(_) | Err(rustix::io::Errno::INVAL) => return Err(SegmentError::NotSealed),
                Err(e) => return Err(SegmentError::io("fcntl(F_GET_SEALS)", e)),
            }
        }
        let len = file_size(&fd)?;
        let flavor = match name {
            Some(name) => Flavor::Named { name },
            None => Flavor::Anonymous,
        };
        Self::map(fd, len, flavor)
    }

    fn map(fd: OwnedFd, len: usize, flavor: Flavor) -> Result<Self, SegmentError> {
        let map = memmap2::MmapOptions::new()
            .len(len)
            .map_raw(&fd)
            .map_err(|e| SegmentError::io("mmap", e))?;
        Ok(Self { map, fd, flavor })
    }

    /// `shm_unlink`: removes a named segment's name. Mappings stay valid
    /// until they are dropped; nobody can open the name afterwards.
    ///
    /// # Errors
    ///
    /// [`SegmentError::NotNamed`] for an anonymous segment, `NotFound` when
    /// the name is already gone.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Segment;
    ///
    /// let segment = Segment::create_named(None, 16)?;
    /// segment.unlink()?;
    /// assert!(Segment::open_named(segment.name().unwrap()).is_err());
    /// segment.write_at(0, b"mapped still")?; // the mapping outlives the name
    /// assert!(segment.unlink().is_err()); // already gone
    /// # Ok::<(), multiproc_core::SegmentError>(())
    /// ```
    pub fn unlink(&self) -> Result<(), SegmentError> {
        match &self.flavor {
            Flavor::Named { name } => Self::unlink_name(name),
            Flavor::Anonymous => Err(SegmentError::NotNamed),
        }
    }

    /// `shm_unlink` of a name, without attaching to it.
    ///
    /// # Errors
    ///
    /// [`SegmentError::InvalidName`] or [`SegmentError::Io`] (`NotFound`).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Segment;
    ///
    /// let name = Segment::create_named(None, 16)?.name().unwrap().to_owned();
    /// // The handle is gone, the name is not: named segments persist.
    /// Segment::unlink_name(&name)?;
    /// assert!(Segment::open_named(&name).is_err());
    /// # Ok::<(), multiproc_core::SegmentError>(())
    /// ```
    pub fn unlink_name(name: &str) -> Result<(), SegmentError> {
        let name = validate_name(name)?;
        shm::unlink(format!("/{name}").as_str()).map_err(|e| SegmentError::io("shm_unlink", e))
    }

    /// `fstat`: the inode of the object behind the segment, which tells it
    /// apart from a later object under the same name.
    ///
    /// # Errors
    ///
    /// [`SegmentError::Io`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Segment;
    ///
    /// let a = Segment::create_named(None, 16)?;
    /// let b = Segment::open_named(a.name().unwrap())?;
    /// let c = Segment::anonymous(16)?;
    /// assert_eq!(a.inode()?, b.inode()?); // the same object
    /// assert_ne!(a.inode()?, c.inode()?);
    /// a.unlink()?;
    /// # Ok::<(), multiproc_core::SegmentError>(())
    /// ```
    pub fn inode(&self) -> Result<u64, SegmentError> {
        Ok(rustix::fs::fstat(&self.fd)
            .map_err(|e| SegmentError::io("fstat", e))?
            .st_ino)
    }

    /// Gives a named segment the name `to`, if no segment has it:
    /// `renameat2(RENAME_NOREPLACE)` in `/dev/shm`, where Linux keeps POSIX
    /// shared memory. A creator can so make a segment under a name only it
    /// knows and publish it under the one asked for in one step.
    ///
    /// # Errors
    ///
    /// [`SegmentError::NotNamed`], [`SegmentError::InvalidName`],
    /// [`SegmentError::Io`] with kind `AlreadyExists` when `to` is taken.
    ///
    /// # References
    ///  - [rename(2)](https://man7.org/linux/man-pages/man2/rename.2.html)
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Segment;
    ///
    /// let mut segment = Segment::create_named(None, 16)?;
    /// let wanted = format!("{}_published", segment.name().unwrap());
    /// segment.rename(&wanted)?;
    /// assert_eq!(segment.name(), Some(wanted.as_str()));
    /// assert_eq!(Segment::open_named(&wanted)?.len(), 16);
    ///
    /// // A name that is taken is not replaced.
    /// let mut other = Segment::create_named(None, 16)?;
    /// assert!(other.rename(&wanted).is_err());
    /// segment.unlink()?;
    /// other.unlink()?;
    /// # Ok::<(), multiproc_core::SegmentError>(())
    /// ```
    pub fn rename(&mut self, to: &str) -> Result<(), SegmentError> {
        let to = validate_name(to)?.to_owned();
        let Flavor::Named { name } = &mut self.flavor else {
            return Err(SegmentError::NotNamed);
        };
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            format!("{SHM_DIR}/{name}").as_str(),
            rustix::fs::CWD,
            format!("{SHM_DIR}/{to}").as_str(),
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .map_err(|e| SegmentError::io("renameat2", e))?;
        *name = to;
        Ok(())
    }

    /// `shm_unlink` of `name` if it still names the object with inode
    /// `inode` (see [`inode`](Self::inode)); whether it did. Between the look
    /// and the unlink another process could put a new object under the
    /// name: callers use it for names only they publish.
    ///
    /// # Errors
    ///
    /// [`SegmentError::InvalidName`], [`SegmentError::Io`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Segment;
    ///
    /// let segment = Segment::create_named(None, 16)?;
    /// let name = segment.name().unwrap();
    /// let stale = Segment::anonymous(16)?.inode()?; // another object's inode
    /// assert!(!Segment::unlink_name_if_inode(name, stale)?); // left alone
    /// assert!(Segment::unlink_name_if_inode(name, segment.inode()?)?);
    /// assert!(Segment::open_named(name).is_err());
    /// # Ok::<(), multiproc_core::SegmentError>(())
    /// ```
    pub fn unlink_name_if_inode(name: &str, inode: u64) -> Result<bool, SegmentError> {
        let name = validate_name(name)?;
        match rustix::fs::stat(format!("{SHM_DIR}/{name}").as_str()) {
            Ok(st) if st.st_ino == inode => Self::unlink_name(name).map(|()| true),
            Ok(_) | Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(SegmentError::io("stat", e)),
        }
    }

    /// The name, without its leading `/`, for a named segment.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Segment;
    ///
    /// let wanted = multiproc_core::segment::generate_name()?; // or any free name
    /// let named = Segment::create_named(Some(&wanted), 8)?;
    /// assert_eq!(named.name(), Some(wanted.as_str())); // no leading `/`
    /// assert_eq!(Segment::anonymous(8)?.name(), None);
    /// named.unlink()?;
    /// # Ok::<(), multiproc_core::SegmentError>(())
    /// ```
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        match &self.flavor {
            Flavor::Named { name } => Some(name),
            Flavor::Anonymous => None,
        }
    }

    /// Size in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Segment;
    ///
    /// assert_eq!(Segment::anonymous(4097)?.len(), 4097); // not rounded to pages
    /// # Ok::<(), multiproc_core::SegmentError>(())
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Always `false`: segments have a size of at least one byte.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Segment;
    ///
    /// assert!(!Segment::anonymous(1)?.is_empty());
    /// # Ok::<(), multiproc_core::SegmentError>(())
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Start of the mapping in this process. Writing through it is the
    /// caller's `unsafe` business; see the [module docs](self).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Segment;
    ///
    /// let segment = Segment::anonymous(16)?;
    /// let ptr = segment.as_ptr();
    /// // SAFETY: the segment was just made here and no other process has its
    /// // descriptor, so nobody else writes these bytes; offset 3 is in bounds.
    /// unsafe { ptr.add(3).write(0xAB) };
    /// let mut byte = [0u8; 1];
    /// segment.read_at(3, &mut byte)?;
    /// assert_eq!(byte, [0xAB]);
    /// # Ok::<(), multiproc_core::SegmentError>(())
    /// ```
    #[must_use]
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    fn check_range(&self, offset: usize, len: usize) -> Result<(), SegmentError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len() => Ok(()),
            _ => Err(SegmentError::OutOfBounds {
                offset,
                len,
                size: self.len(),
            }),
        }
    }

    /// Copies `buf.len()` bytes out of the segment, starting at `offset`.
    ///
    /// The copy is not atomic: bytes another process changes meanwhile may
    /// show either value. Protect the region with a lock or a sequence word.
    ///
    /// # Errors
    ///
    /// [`SegmentError::OutOfBounds`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Segment;
    ///
    /// let segment = Segment::anonymous(8)?;
    /// segment.write_at(0, &42u64.to_le_bytes())?;
    /// let mut word = [0u8; 8];
    /// segment.read_at(0, &mut word)?;
    /// assert_eq!(u64::from_le_bytes(word), 42);
    /// assert!(segment.read_at(1, &mut word).is_err()); // one byte too far
    /// # Ok::<(), multiproc_core::SegmentError>(())
    /// ```
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<(), SegmentError> {
        self.check_range(offset, buf.len())?;
        // SAFETY: the range was checked to lie inside the mapping, which lives
        // as long as `self`; `buf` is a distinct Rust allocation, so the two
        // do not overlap. Another process may write these bytes meanwhile
        // (the race the docs above admit): the mapping is only ever reached
        // through raw pointers, never a Rust reference, and every value is
        // valid for a byte, so a racing write can tear the copy — a mix of
        // old and new bytes — but never make an invalid value.
        unsafe { crate::copy::copy_raw(buf.as_mut_ptr(), self.as_ptr().add(offset), buf.len()) };
        Ok(())
    }

    /// [`read_at`](Self::read_at) into uninitialised memory (a vector's
    /// spare capacity, say); returns `buf`, now initialised.
    ///
    /// # Errors
    ///
    /// [`SegmentError::OutOfBounds`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Segment;
    ///
    /// let segment = Segment::anonymous(16)?;
    /// segment.write_at(4, b"abc")?;
    /// let mut out = Vec::with_capacity(3);
    /// let got = segment.read_at_uninit(4, &mut out.spare_capacity_mut()[..3])?;
    /// assert_eq!(got, b"abc");
    /// # Ok::<(), multiproc_core::SegmentError>(())
    /// ```
    pub fn read_at_uninit<'a>(
        &self,
        offset: usize,
        buf: &'a mut [std::mem::MaybeUninit<u8>],
    ) -> Result<&'a mut [u8], SegmentError> {
        self.check_range(offset, buf.len())?;
        // SAFETY: as in `read_at`; the copy writes every byte of `buf`.
        unsafe {
            crate::copy::copy_raw(
                buf.as_mut_ptr().cast(),
                self.as_ptr().add(offset),
                buf.len(),
            );
        }
        // SAFETY: every byte of `buf` was written just above, and
        // `MaybeUninit<u8>` has the layout of `u8`.
        Ok(unsafe { &mut *(std::ptr::from_mut(buf) as *mut [u8]) })
    }

    /// The `len` bytes at `offset`, borrowed where they lie: for reading a
    /// region that a protocol hands to this process (a ring's consumer
    /// reads what a producer published and no producer may write until
    /// the consumer hands it back), without copying it out first.
    ///
    /// # Safety
    ///
    /// No process writes these bytes while the slice lives.
    ///
    /// # Errors
    ///
    /// [`SegmentError::OutOfBounds`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Segment;
    ///
    /// let segment = Segment::anonymous(16)?;
    /// segment.write_at(4, b"abc")?;
    /// // SAFETY: the segment is anonymous and this process does not share
    /// // it, so nobody writes it while `bytes` lives.
    /// let bytes = unsafe { segment.bytes(4, 3)? };
    /// assert_eq!(bytes, b"abc");
    /// assert!(unsafe { segment.bytes(15, 2) }.is_err()); // one byte too far
    /// # Ok::<(), multiproc_core::SegmentError>(())
    /// ```
    pub unsafe fn bytes(&self, offset: usize, len: usize) -> Result<&[u8], SegmentError> {
        self.check_range(offset, len)?;
        // SAFETY: in bounds (checked) of a mapping that lives as long as
        // `self`; nobody writes the range meanwhile (the caller's contract),
        // and every bit pattern is a valid `u8`.
        Ok(unsafe { std::slice::from_raw_parts(self.as_ptr().add(offset), len) })
    }

    /// The `len` bytes at `offset`, borrowed for writing in place: for
    /// filling a region that a protocol reserved for this process (a ring
    /// span that a sender encodes a value into) without a copy.
    ///
    /// # Safety
    ///
    /// No process reads or writes these bytes while the slice lives, this
    /// one through another borrow included.
    ///
    /// # Errors
    ///
    /// [`SegmentError::OutOfBounds`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Segment;
    ///
    /// let segment = Segment::anonymous(16)?;
    /// // SAFETY: the segment is not shared, and this is its only borrow.
    /// unsafe { segment.bytes_mut(2, 2)? }.copy_from_slice(b"ok");
    /// let mut all = [0u8; 4];
    /// segment.read_at(0, &mut all)?;
    /// assert_eq!(&all, b"\0\0ok");
    /// assert!(unsafe { segment.bytes_mut(15, 2) }.is_err()); // one byte too far
    /// # Ok::<(), multiproc_core::SegmentError>(())
    /// ```
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn bytes_mut(&self, offset: usize, len: usize) -> Result<&mut [u8], SegmentError> {
        self.check_range(offset, len)?;
        // SAFETY: in bounds (checked) of a writable mapping (PROT_WRITE,
        // MAP_SHARED) that lives as long as `self`; nobody else reads or
        // writes the range while the slice lives (the caller's contract).
        Ok(unsafe { std::slice::from_raw_parts_mut(self.as_ptr().add(offset), len) })
    }

    /// Copies `data` into the segment at `offset`; see [`read_at`](Self::read_at).
    ///
    /// # Errors
    ///
    /// [`SegmentError::OutOfBounds`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Segment;
    ///
    /// let segment = Segment::anonymous(4)?;
    /// segment.write_at(2, b"ok")?;
    /// let mut all = [0u8; 4];
    /// segment.read_at(0, &mut all)?;
    /// assert_eq!(&all, b"\0\0ok");
    /// assert!(segment.write_at(usize::MAX, b"x").is_err()); // no overflow, an error
    /// # Ok::<(), multiproc_core::SegmentError>(())
    /// ```
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<(), SegmentError> {
        self.check_range(offset, data.len())?;
        // SAFETY: as in `read_at`, racing readers and writers in other
        // processes included (they may see a torn mix, never an invalid
        // value); the mapping is writable (PROT_WRITE, MAP_SHARED), and
        // borrowed as a slice only where nobody else writes it (the
        // contracts of `bytes` and `bytes_mut`).
        unsafe { crate::copy::copy_raw(self.as_ptr().add(offset), data.as_ptr(), data.len()) };
        Ok(())
    }

    /// A shared reference to the `T` at `offset`, checked for bounds and
    /// alignment.
    ///
    /// # Errors
    ///
    /// [`SegmentError::OutOfBounds`], [`SegmentError::Misaligned`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Segment;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    ///
    /// let segment = Segment::anonymous(64)?;
    /// let counters = segment.view::<[AtomicU64; 4]>(32)?;
    /// counters[3].fetch_add(2, Ordering::Relaxed);
    /// assert_eq!(counters[3].load(Ordering::Relaxed), 2);
    /// assert!(segment.view::<AtomicU64>(4).is_err()); // misaligned
    /// # Ok::<(), multiproc_core::SegmentError>(())
    /// ```
    pub fn view<T: SharedSafe>(&self, offset: usize) -> Result<&T, SegmentError> {
        self.check_range(offset, size_of::<T>())?;
        let align = align_of::<T>();
        // The mapping is page-aligned, so alignment of the offset is
        // alignment of the address (SharedSafe types align to <= 4096).
        if !offset.is_multiple_of(align) {
            return Err(SegmentError::Misaligned { offset, align });
        }
        // SAFETY: in bounds and aligned (checked above); other processes may
        // write these bytes at any time, which `T: SharedSafe` allows: it is
        // valid for every bit pattern and changes only through atomic
        // operations (a plain write by a foreign process at worst gives
        // another valid value); the reference borrows `self`, which keeps
        // the mapping alive.
        Ok(unsafe { &*self.as_ptr().add(offset).cast::<T>() })
    }

    /// The [`AtomicU32`] at `offset`; shorthand for [`view`](Self::view).
    ///
    /// # Errors
    ///
    /// As for [`view`](Self::view).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Segment;
    /// use std::sync::atomic::Ordering;
    ///
    /// let segment = Segment::anonymous(64)?;
    /// let word = segment.atomic_u32(8)?;
    /// assert_eq!(word.fetch_add(5, Ordering::AcqRel), 0);
    /// assert_eq!(segment.atomic_u32(8)?.load(Ordering::Acquire), 5);
    /// assert!(segment.atomic_u32(6).is_err()); // misaligned
    /// # Ok::<(), multiproc_core::SegmentError>(())
    /// ```
    pub fn atomic_u32(&self, offset: usize) -> Result<&AtomicU32, SegmentError> {
        self.view(offset)
    }

    /// Writes `header` at `offset` and publishes it: the fields first, then
    /// the ready word with `Release`, so an attacher that sees it ready sees
    /// the whole header (and everything the creator initialised before).
    ///
    /// # Errors
    ///
    /// [`SegmentError::OutOfBounds`], [`SegmentError::Misaligned`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::{Header, Segment};
    ///
    /// const MAGIC: [u8; 8] = *b"MYQUEUE\0";
    /// let segment = Segment::anonymous(4096)?;
    /// // Initialise the object first; publishing the header comes last.
    /// segment.write_at(Header::SIZE, &[1, 2, 3])?;
    /// segment.publish_header(0, &Header::new(MAGIC, 3, 4096))?;
    ///
    /// // An attacher (normally in another process) checks it.
    /// let header = segment.read_header(0, MAGIC, 3)?;
    /// assert_eq!(header.version(), 3);
    /// # Ok::<(), multiproc_core::SegmentError>(())
    /// ```
    pub fn publish_header(&self, offset: usize, header: &Header) -> Result<(), SegmentError> {
        let raw = self.view::<RawHeader>(offset)?;
        for (word, value) in raw.magic.iter().zip(header.magic_words()) {
            word.store(value, Ordering::Relaxed);
        }
        raw.version.store(header.version, Ordering::Relaxed);
        raw.size.store(header.size, Ordering::Relaxed);
        raw.pid_namespace.store(
            crate::owner::pid_namespace().unwrap_or(0),
            Ordering::Relaxed,
        );
        // SYNC: pairs with the Acquire load in `read_header`.
        raw.ready.store(READY, Ordering::Release);
        Ok(())
    }

    /// Reads the header at `offset` and checks it against `magic` and
    /// `version`, and that the size it declares fits in the segment.
    ///
    /// # Errors
    ///
    /// [`SegmentError::Header`] with the reason, or bounds errors.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::{Header, HeaderError, Segment, SegmentError};
    ///
    /// let segment = Segment::anonymous(4096)?;
    /// assert!(matches!(
    ///     segment.read_header(0, *b"EXAMPLE\0", 1),
    ///     Err(SegmentError::Header(HeaderError::NotReady))
    /// ));
    /// segment.publish_header(0, &Header::new(*b"EXAMPLE\0", 1, 4096))?;
    /// assert_eq!(segment.read_header(0, *b"EXAMPLE\0", 1)?.size(), 4096);
    /// assert!(segment.read_header(0, *b"EXAMPLE\0", 2).is_err()); // wrong version
    /// # Ok::<(), SegmentError>(())
    /// ```
    pub fn read_header(
        &self,
        offset: usize,
        magic: [u8; 8],
        version: u32,
    ) -> Result<Header, SegmentError> {
        let have = self.len().saturating_sub(offset);
        if have < Header::SIZE {
            return Err(HeaderError::Truncated {
                need: Header::SIZE,
                have,
            }
            .into());
        }
        let raw = self.view::<RawHeader>(offset)?;
        // SYNC: pairs with the Release store in `publish_header`.
        if raw.ready.load(Ordering::Acquire) != READY {
            return Err(HeaderError::NotReady.into());
        }
        let mut bytes = [0u8; Header::SIZE];
        self.read_at(offset, &mut bytes)?;
        let header = Header::parse(&bytes)?;
        header.expect(magic, version, have as u64)?;
        // The object records thread ids; in another pid namespace they name
        // other tasks, and a live owner would look dead (or a dead one
        // alive). 0 on either side: not known, nothing to compare.
        let theirs = raw.pid_namespace.load(Ordering::Relaxed);
        if let Some(ours) = crate::owner::pid_namespace()
            && theirs != 0
            && theirs != ours
        {
            return Err(HeaderError::ForeignPidNamespace { ours, theirs }.into());
        }
        Ok(header)
    }
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::os::fd::AsRawFd;
        f.debug_struct("Segment")
            .field("fd", &self.fd.as_raw_fd())
            .field("name", &self.name())
            .field("len", &self.len())
            .finish()
    }
}

impl AsFd for Segment {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// What a [`Segment`] looks like inside a serialized message: its descriptor
/// (shipped out of band) and its name.
#[derive(Serialize, Deserialize)]
struct SegmentWire {
    fd: SharedFd,
    name: Option<String>,
}

impl Serialize for Segment {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fd = SharedFd::duplicate(self).map_err(serde::ser::Error::custom)?;
        SegmentWire {
            fd,
            name: self.name().map(str::to_owned),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Segment {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = SegmentWire::deserialize(deserializer)?;
        Self::from_fd_named(wire.fd.into_inner(), wire.name).map_err(serde::de::Error::custom)
    }
}

fn checked_size(size: u64) -> Result<usize, SegmentError> {
    match usize::try_from(size) {
        Ok(len) if len > 0 && len <= isize::MAX as usize => Ok(len),
        _ => Err(SegmentError::InvalidSize(size)),
    }
}

fn file_size(fd: &OwnedFd) -> Result<usize, SegmentError> {
    let stat = rustix::fs::fstat(fd).map_err(|e| SegmentError::io("fstat", e))?;
    checked_size(u64::try_from(stat.st_size).unwrap_or(0))
}

/// Checks a segment name against the rules shared with Python's
/// `shared_memory` and returns it without its optional leading `/`.
///
/// # Errors
///
/// [`SegmentError::InvalidName`] for an empty name, one over
/// [`MAX_NAME_LEN`] bytes, one with a `/` after the first character or a NUL,
/// and `.`/`..`.
///
/// # Examples
///
/// ```
/// use multiproc_core::segment::validate_name;
///
/// assert_eq!(validate_name("/psm_1234abcd")?, "psm_1234abcd");
/// assert!(validate_name("").is_err());
/// assert!(validate_name("a/b").is_err());
/// assert!(validate_name(&"x".repeat(256)).is_err());
/// # Ok::<(), multiproc_core::SegmentError>(())
/// ```
pub fn validate_name(name: &str) -> Result<&str, SegmentError> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    let reason = if bare.is_empty() {
        Some("empty")
    } else if bare.len() > MAX_NAME_LEN {
        Some("longer than 255 bytes")
    } else if bare.contains('/') {
        Some("contains '/'")
    } else if bare.contains('\0') {
        Some("contains NUL")
    } else if bare == "." || bare == ".." {
        Some("is '.' or '..'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(SegmentError::InvalidName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(bare),
    }
}

/// An unguessable name with this process's prefix (see
/// [Generated names](self#generated-names): `mp_` unless
/// [`NAME_PREFIX_ENV`] sets another) and 24 hex digits, for a named
/// segment: nobody else can have it or guess it, so a creator may tell
/// others (a tracker, say) about it before it creates the segment.
///
/// # Errors
///
/// [`SegmentError::InvalidNamePrefix`] when [`NAME_PREFIX_ENV`] holds an
/// invalid prefix; [`SegmentError::Io`] when the system's random source
/// fails.
///
/// # Examples
///
/// ```
/// use multiproc_core::segment::{generate_name, name_prefix};
///
/// let name = generate_name()?;
/// let prefix = name_prefix()?;
/// assert!(name.starts_with(prefix) && name.len() == prefix.len() + 24);
/// # Ok::<(), multiproc_core::SegmentError>(())
/// ```
pub fn generate_name() -> Result<String, SegmentError> {
    let prefix = name_prefix()?;
    let mut bytes = [0u8; GENERATED_DIGITS / 2];
    getrandom::fill(&mut bytes)
        .map_err(|e| SegmentError::io("getrandom", io::Error::other(e.to_string())))?;
    let mut name = String::with_capacity(prefix.len() + GENERATED_DIGITS);
    name.push_str(prefix);
    for b in bytes {
        name.push_str(&format!("{b:02x}"));
    }
    Ok(name)
}

/// The prefix of this process's generated names: the value of
/// [`NAME_PREFIX_ENV`] as read on the first call, or
/// [`DEFAULT_NAME_PREFIX`] when it is unset or empty.
///
/// # Errors
///
/// [`SegmentError::InvalidNamePrefix`] when the variable holds a value
/// [`validate_name_prefix`] refuses (or one that is not UTF-8); every later
/// call gives the same error.
///
/// # Examples
///
/// ```
/// use multiproc_core::segment::{name_prefix, NAME_PREFIX_ENV};
///
/// let prefix = name_prefix()?;
/// match std::env::var(NAME_PREFIX_ENV) {
///     Ok(set) if !set.is_empty() => assert_eq!(prefix, set),
///     _ => assert_eq!(prefix, "mp_"),
/// }
/// # Ok::<(), multiproc_core::SegmentError>(())
/// ```
pub fn name_prefix() -> Result<&'static str, SegmentError> {
    match name_prefix_setting() {
        Ok(prefix) => Ok(prefix),
        Err((prefix, reason)) => Err(SegmentError::InvalidNamePrefix {
            prefix: prefix.clone(),
            reason,
        }),
    }
}

/// Checks a prefix for generated names: 1 to [`MAX_NAME_PREFIX_LEN`] bytes,
/// each an ASCII letter, digit, `_`, `.` or `-`. That keeps every generated
/// name a valid name (no `/`, no NUL, never `.` or `..`) and one a shell
/// pattern such as `find /dev/shm -name "$PREFIX*"` matches literally.
///
/// # Errors
///
/// [`SegmentError::InvalidNamePrefix`] with the rule broken.
///
/// # Examples
///
/// ```
/// use multiproc_core::segment::validate_name_prefix;
///
/// assert_eq!(validate_name_prefix("mp_ci4242_")?, "mp_ci4242_");
/// assert!(validate_name_prefix("").is_err());
/// assert!(validate_name_prefix("a/b").is_err());
/// assert!(validate_name_prefix("mp*").is_err());
/// # Ok::<(), multiproc_core::SegmentError>(())
/// ```
pub fn validate_name_prefix(prefix: &str) -> Result<&str, SegmentError> {
    match name_prefix_problem(prefix) {
        Some(reason) => Err(SegmentError::InvalidNamePrefix {
            prefix: prefix.to_owned(),
            reason,
        }),
        None => Ok(prefix),
    }
}

fn name_prefix_problem(prefix: &str) -> Option<&'static str> {
    if prefix.is_empty() {
        Some("empty")
    } else if prefix.len() > MAX_NAME_PREFIX_LEN {
        const _: () = assert!(MAX_NAME_PREFIX_LEN == 128, "the message below names it");
        Some("longer than 128 bytes")
    } else if !prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        Some("holds a byte other than A-Z, a-z, 0-9, '_', '.' and '-'")
    } else {
        None
    }
}

/// The prefix as first read, or the invalid value and why.
type PrefixSetting = Result<String, (String, &'static str)>;

/// [`NAME_PREFIX_ENV`] as read once per process; null until then.
///
/// An `AtomicPtr` to a leaked box rather than a `OnceLock`: a child forked
/// while another thread was inside a `OnceLock`'s initialisation would
/// wait for that thread for ever (fork copies only the forking thread),
/// and forked children create segments. Here two threads that race both
/// read the variable and the first to publish wins; nobody waits.
static NAME_PREFIX: AtomicPtr<PrefixSetting> = AtomicPtr::new(std::ptr::null_mut());

/// The setting of this process, read from the environment on first use.
fn name_prefix_setting() -> &'static PrefixSetting {
    // SYNC: Acquire pairs with the AcqRel exchange below that published it.
    let mut published = NAME_PREFIX.load(Ordering::Acquire);
    if published.is_null() {
        let fresh = Box::into_raw(Box::new(prefix_from_env()));
        // SYNC: AcqRel: publishes the box (Release) and, on losing the race,
        // sees the winner's (Acquire).
        published = match NAME_PREFIX.compare_exchange(
            std::ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => fresh,
            Err(winner) => {
                // SAFETY: `fresh` came from `Box::into_raw` just above and
                // was never published, so this is its only owner.
                drop(unsafe { Box::from_raw(fresh) });
                winner
            }
        };
    }
    // SAFETY: a non-null pointer in NAME_PREFIX comes from `Box::into_raw`
    // and is never freed or written again, so it is valid and immutable for
    // the rest of the process (and of its forked children, which copy it).
    unsafe { &*published }
}

fn prefix_from_env() -> PrefixSetting {
    prefix_setting(std::env::var_os(NAME_PREFIX_ENV).as_deref())
}

/// The setting a value of [`NAME_PREFIX_ENV`] (`None`: unset) makes.
fn prefix_setting(value: Option<&std::ffi::OsStr>) -> PrefixSetting {
    let value = match value {
        None => return Ok(DEFAULT_NAME_PREFIX.to_owned()),
        Some(value) if value.is_empty() => return Ok(DEFAULT_NAME_PREFIX.to_owned()),
        Some(value) => value,
    };
    let Some(text) = value.to_str() else {
        return Err((value.to_string_lossy().into_owned(), "not UTF-8"));
    };
    match name_prefix_problem(text) {
        Some(reason) => Err((text.to_owned(), reason)),
        None => Ok(text.to_owned()),
    }
}

/// `READY` in the header's ready word: the header and the object behind it
/// are initialised. Any other value (zero in a fresh segment) means not yet.
const READY: u32 = 0x5244_5952; // "RYDR"

/// The header in shared memory.
///
/// | offset | size | field | writer |
/// |---|---|---|---|
/// | 0 | 8 | magic (bytes, as two u32 words) | creator, before `ready` |
/// | 8 | 4 | layout version | creator, before `ready` |
/// | 12 | 4 | ready word | creator, last, `Release` |
/// | 16 | 8 | size of the object in bytes, header included | creator, before `ready` |
/// | 24 | 8 | creator's pid namespace ([`pid_namespace`](crate::owner::pid_namespace)), 0 = unknown | creator, before `ready` |
#[repr(C)]
struct RawHeader {
    magic: [AtomicU32; 2],
    version: AtomicU32,
    ready: AtomicU32,
    size: AtomicU64,
    pid_namespace: AtomicU64,
}

// SAFETY: repr(C) struct of atomics: valid for every bit pattern, no pointers.
unsafe impl SharedSafe for RawHeader {}

const _: () = assert!(size_of::<RawHeader>() == Header::SIZE);
const _: () = assert!(align_of::<RawHeader>() == 8);

/// The first bytes of every object placed in a segment: magic, layout
/// version and size, validated on attach (see [`Segment::read_header`]).
///
/// # Examples
///
/// ```
/// use multiproc_core::{Header, Segment};
///
/// let segment = Segment::anonymous(256)?;
/// segment.publish_header(0, &Header::new(*b"COUNTER\0", 1, 256))?;
/// let header = segment.read_header(0, *b"COUNTER\0", 1)?;
/// assert_eq!(header, Header::new(*b"COUNTER\0", 1, 256));
/// # Ok::<(), multiproc_core::SegmentError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    magic: [u8; 8],
    version: u32,
    size: u64,
}

impl Header {
    /// Bytes a header occupies (its alignment is 8).
    pub const SIZE: usize = 32;

    /// A header for an object of `size` bytes (header included).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Header;
    ///
    /// const HEADER: Header = Header::new(*b"MYTABLE\0", 2, 1024);
    /// assert_eq!(HEADER.size(), 1024);
    /// ```
    #[must_use]
    pub const fn new(magic: [u8; 8], version: u32, size: u64) -> Self {
        Self {
            magic,
            version,
            size,
        }
    }

    /// The magic bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Header;
    ///
    /// assert_eq!(Header::new(*b"MAGICAL\0", 1, 64).magic(), *b"MAGICAL\0");
    /// ```
    #[must_use]
    pub const fn magic(&self) -> [u8; 8] {
        self.magic
    }

    /// The layout version.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Header;
    ///
    /// assert_eq!(Header::new(*b"MAGICAL\0", 7, 64).version(), 7);
    /// ```
    #[must_use]
    pub const fn version(&self) -> u32 {
        self.version
    }

    /// The object size the header declares, itself included.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Header;
    ///
    /// assert_eq!(Header::new(*b"MAGICAL\0", 1, 64).size(), 64);
    /// ```
    #[must_use]
    pub const fn size(&self) -> u64 {
        self.size
    }

    fn magic_words(&self) -> [u32; 2] {
        let [a, b, c, d, e, f, g, h] = self.magic;
        [
            u32::from_ne_bytes([a, b, c, d]),
            u32::from_ne_bytes([e, f, g, h]),
        ]
    }

    /// Parses a header from raw bytes (as copied out of a segment).
    ///
    /// Never panics, whatever the input.
    ///
    /// # Errors
    ///
    /// [`HeaderError::Truncated`] for fewer than [`Header::SIZE`] bytes,
    /// [`HeaderError::NotReady`] when the ready word is not set.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::{Header, HeaderError, Segment};
    ///
    /// let segment = Segment::anonymous(64)?;
    /// let mut raw = [0u8; Header::SIZE];
    /// segment.read_at(0, &mut raw)?;
    /// assert_eq!(Header::parse(&raw), Err(HeaderError::NotReady)); // nothing published
    ///
    /// segment.publish_header(0, &Header::new(*b"PARSEME\0", 1, 64))?;
    /// segment.read_at(0, &mut raw)?;
    /// assert_eq!(Header::parse(&raw)?.magic(), *b"PARSEME\0");
    /// assert!(matches!(Header::parse(&raw[..8]), Err(HeaderError::Truncated { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn parse(bytes: &[u8]) -> Result<Self, HeaderError> {
        let Some(bytes) = bytes.first_chunk::<{ Header::SIZE }>() else {
            return Err(HeaderError::Truncated {
                need: Self::SIZE,
                have: bytes.len(),
            });
        };
        let word = |at: usize| {
            u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        if word(12) != READY {
            return Err(HeaderError::NotReady);
        }
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&bytes[..8]);
        let mut size = [0u8; 8];
        size.copy_from_slice(&bytes[16..24]);
        Ok(Self {
            magic,
            version: word(8),
            size: u64::from_ne_bytes(size),
        })
    }

    /// Checks magic and version, and that the declared size is at least a
    /// header and at most `available` bytes.
    ///
    /// # Errors
    ///
    /// [`HeaderError::BadMagic`], [`HeaderError::BadVersion`],
    /// [`HeaderError::BadSize`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::{Header, HeaderError};
    ///
    /// let header = Header::new(*b"EXPECT1\0", 2, 128);
    /// assert_eq!(header.expect(*b"EXPECT1\0", 2, 4096), Ok(()));
    /// assert!(matches!(header.expect(*b"OTHER12\0", 2, 4096), Err(HeaderError::BadMagic { .. })));
    /// assert_eq!(
    ///     header.expect(*b"EXPECT1\0", 3, 4096),
    ///     Err(HeaderError::BadVersion { expected: 3, found: 2 })
    /// );
    /// assert_eq!(
    ///     header.expect(*b"EXPECT1\0", 2, 64), // declares more than there is
    ///     Err(HeaderError::BadSize { declared: 128, available: 64 })
    /// );
    /// ```
    pub fn expect(&self, magic: [u8; 8], version: u32, available: u64) -> Result<(), HeaderError> {
        if self.magic != magic {
            return Err(HeaderError::BadMagic {
                expected: magic,
                found: self.magic,
            });
        }
        if self.version != version {
            return Err(HeaderError::BadVersion {
                expected: version,
                found: self.version,
            });
        }
        if self.size < Self::SIZE as u64 || self.size > available {
            return Err(HeaderError::BadSize {
                declared: self.size,
                available,
            });
        }
        Ok(())
    }
}

/// Why an object header did not validate.
///
/// # Examples
///
/// ```
/// use multiproc_core::{Header, HeaderError, Segment, SegmentError};
///
/// let segment = Segment::anonymous(4096)?;
/// segment.publish_header(0, &Header::new(*b"KIND_A1\0", 1, 4096))?;
///
/// let err = segment.read_header(0, *b"KIND_B1\0", 1).unwrap_err();
/// assert!(matches!(err, SegmentError::Header(HeaderError::BadMagic { .. })));
/// let err = segment.read_header(0, *b"KIND_A1\0", 2).unwrap_err();
/// assert!(matches!(
///     err,
///     SegmentError::Header(HeaderError::BadVersion { expected: 2, found: 1 })
/// ));
/// assert_eq!(
///     Header::parse(&[0u8; 4]),
///     Err(HeaderError::Truncated { need: Header::SIZE, have: 4 })
/// );
/// # Ok::<(), SegmentError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer bytes than a header needs.
    Truncated {
        /// Bytes a header needs.
        need: usize,
        /// Bytes there were.
        have: usize,
    },
    /// The creator has not published the object (or this is not one).
    NotReady,
    /// The magic belongs to another kind of object.
    BadMagic {
        /// The magic looked for.
        expected: [u8; 8],
        /// The magic found.
        found: [u8; 8],
    },
    /// Same kind of object, another layout version.
    BadVersion {
        /// The version looked for.
        expected: u32,
        /// The version found.
        found: u32,
    },
    /// The declared size is smaller than a header or larger than the segment.
    BadSize {
        /// The size the header declares.
        declared: u64,
        /// The bytes available from the header on.
        available: u64,
    },
    /// The object was made in another pid namespace: the thread ids it
    /// records (lock owners, waiting parties) name other tasks here, so
    /// sharing it would mistake live owners for dead ones. Refused on
    /// attach instead.
    ForeignPidNamespace {
        /// This process's pid namespace (inode of `/proc/self/ns/pid`).
        ours: u64,
        /// The creator's.
        theirs: u64,
    },
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { need, have } => {
                write!(f, "segment too small for a header: {have} of {need} bytes")
            }
            Self::NotReady => f.write_str("object in segment is not initialised"),
            Self::BadMagic { expected, found } => write!(
                f,
                "wrong object magic: expected {:?}, found {:?}",
                String::from_utf8_lossy(expected),
                String::from_utf8_lossy(found)
            ),
            Self::BadVersion { expected, found } => {
                write!(
                    f,
                    "wrong layout version: expected {expected}, found {found}"
                )
            }
            Self::BadSize {
                declared,
                available,
            } => write!(
                f,
                "object declares {declared} bytes but {available} are available"
            ),
            Self::ForeignPidNamespace { ours, theirs } => write!(
                f,
                "object was made in another pid namespace ({theirs}, ours is {ours})"
            ),
        }
    }
}

impl std::error::Error for HeaderError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn unset_or_empty_prefix_is_the_default() {
        assert_eq!(prefix_setting(None), Ok("mp_".to_owned()));
        assert_eq!(prefix_setting(Some(OsStr::new(""))), Ok("mp_".to_owned()));
    }

    #[test]
    fn a_valid_prefix_is_taken_as_it_is() {
        for prefix in [
            "mp_t123_ab_",
            "x",
            "A.b-C_9",
            &"p".repeat(MAX_NAME_PREFIX_LEN),
        ] {
            assert_eq!(
                prefix_setting(Some(OsStr::new(prefix))),
                Ok(prefix.to_owned())
            );
        }
    }

    #[test]
    fn an_invalid_prefix_is_refused_with_the_rule_it_breaks() {
        let long = "p".repeat(MAX_NAME_PREFIX_LEN + 1);
        for (prefix, rule) in [
            ("a/b", "byte other"),
            ("mp*", "byte other"),
            ("sp ace", "byte other"),
            ("nul\0", "byte other"),
            ("é", "byte other"),
            (long.as_str(), "longer"),
        ] {
            match prefix_setting(Some(OsStr::new(prefix))) {
                Err((value, reason)) => {
                    assert_eq!(value, prefix);
                    assert!(reason.contains(rule), "{prefix:?}: {reason}");
                }
                Ok(taken) => panic!("{prefix:?} was taken as {taken:?}"),
            }
            assert!(matches!(
                validate_name_prefix(prefix),
                Err(SegmentError::InvalidNamePrefix { .. })
            ));
        }
        let not_utf8 = OsStr::from_bytes(b"mp_\xff_");
        assert!(matches!(
            prefix_setting(Some(not_utf8)),
            Err((_, "not UTF-8"))
        ));
    }

    #[test]
    fn every_generated_name_under_a_valid_prefix_is_a_valid_name() {
        let longest = "p".repeat(MAX_NAME_PREFIX_LEN);
        for prefix in [".", "..", "-", longest.as_str()] {
            let name = format!("{prefix}{}", "0".repeat(GENERATED_DIGITS));
            assert!(validate_name_prefix(prefix).is_ok());
            assert_eq!(validate_name(&name).unwrap(), name);
        }
    }

    #[test]
    fn the_error_names_the_variable_and_the_value() {
        let err = validate_name_prefix("a/b").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("MULTIPROC_SHM_PREFIX") && text.contains("\"a/b\""),
            "{text}"
        );
    }
}
