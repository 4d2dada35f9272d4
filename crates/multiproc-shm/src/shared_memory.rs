//! [`SharedMemory`]: Python's `multiprocessing.shared_memory.SharedMemory`.
#![allow(unsafe_code)]

use multiproc_core::segment::{generate_name, validate_name};
use multiproc_core::{Segment, SegmentError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::{ShmError, tracker};

/// A named block of shared memory that Python's `SharedMemory(name)` opens
/// too, with the same bytes.
///
/// # Ownership
///
/// The process that [`create`](Self::create)s a block owns its name: when
/// the owning handle is dropped (or [`close`](Self::close)d) the name is
/// unlinked, and if the owner dies without doing so (even by `SIGKILL`) a
/// small tracker process unlinks it shortly after. Handles made by
/// [`open`](Self::open), or received from another process, never unlink by
/// themselves; anyone may still call [`unlink`](Self::unlink) explicitly, as
/// in Python. Mappings stay valid after the name is gone.
///
/// # Aliasing
///
/// Other processes may write the bytes at any moment, so safe access copies
/// ([`read_at`](Self::read_at), [`write_at`](Self::write_at),
/// [`to_vec`](Self::to_vec)) or goes through atomics
/// ([`segment`](Self::segment)`.view::<AtomicU64>(..)`). The raw slices
/// [`buf`](Self::buf) and [`buf_mut`](Self::buf_mut) are `unsafe`: the caller
/// promises that nobody writes the block while the slice lives.
///
/// # Examples
///
/// ```
/// use multiproc_shm::SharedMemory;
///
/// let owner = SharedMemory::create(None, 64)?;
/// owner.write_at(0, b"hello")?;
///
/// let other = SharedMemory::open(owner.name())?; // e.g. in another process
/// let mut buf = [0u8; 5];
/// other.read_at(0, &mut buf)?;
/// assert_eq!(&buf, b"hello");
/// assert!(!other.is_owner());
///
/// let name = owner.name().to_owned();
/// drop(owner); // the owner unlinks the name
/// assert!(SharedMemory::open(&name).is_err());
/// # Ok::<(), multiproc_shm::ShmError>(())
/// ```
pub struct SharedMemory {
    segment: Segment,
    name: String,
    owner: bool,
    /// Whether the tracker knows the name (an owner made by `create`).
    tracked: bool,
    unlinked: AtomicBool,
}

/// A tracker failure as the segment error `create` reports.
fn tracked(result: io::Result<()>) -> Result<(), SegmentError> {
    result.map_err(|source| SegmentError::Io {
        op: "tell the shared-memory tracker",
        source,
    })
}

/// Whether `create` failed because the name is taken.
fn is_taken(e: &SegmentError) -> bool {
    matches!(e, SegmentError::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists)
}

impl SharedMemory {
    /// A new block of `size` bytes, zero-filled, mode `0600`; with
    /// `name = None` an unguessable name is chosen: the process's name
    /// prefix (`mp_`, or the value of `MULTIPROC_SHM_PREFIX`; see
    /// [`multiproc_core::segment`]) and 24 hex digits. The caller owns the
    /// name.
    ///
    /// # Errors
    ///
    /// [`ShmError::Segment`] for a bad name (empty, over 255 bytes, a `/`
    /// inside), a size of 0, or a name already taken (`AlreadyExists`);
    /// with [`SegmentError::InvalidNamePrefix`] when `MULTIPROC_SHM_PREFIX`
    /// holds an invalid prefix, also for a name given explicitly (the block
    /// is made under a generated name first, see below).
    ///
    /// A creator killed at any instant inside `create` leaves no name
    /// behind: the segment is made under a generated name that the tracker
    /// knows *before* it exists (nobody else can have it), and a name asked
    /// for is given to it afterwards in one rename, which the tracker knows
    /// of before too (and undoes only for that very object).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::SharedMemory;
    ///
    /// let block = SharedMemory::create(None, 4096)?;
    /// assert_eq!(block.size(), 4096);
    /// assert!(block.is_owner());
    /// assert_eq!(block.to_vec(), vec![0u8; 4096]); // zero-filled
    ///
    /// // A taken name is refused.
    /// assert!(SharedMemory::create(Some(block.name()), 16).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn create(name: Option<&str>, size: usize) -> Result<Self, ShmError> {
        if let Some(name) = name {
            validate_name(name)?;
        }
        let (mut segment, made) = loop {
            let made = generate_name()?;
            tracked(tracker::register(&made))?;
            match Segment::create_named(Some(&made), size) {
                Ok(segment) => break (segment, made),
                // A generated name already taken: astronomically rare.
                Err(e) => {
                    let _ = tracker::unregister(&made);
                    if !is_taken(&e) {
                        return Err(e.into());
                    }
                }
            }
        };
        if let Some(wanted) = name {
            let published = segment
                .inode()
                .and_then(|inode| tracked(tracker::register_published(wanted, inode)))
                .and_then(|()| segment.rename(wanted));
            if let Err(e) = published {
                let _ = segment.unlink();
                let _ = tracker::unregister(wanted);
                let _ = tracker::unregister(&made);
                return Err(e.into());
            }
            let _ = tracker::unregister(&made);
        }
        let name = segment.name().unwrap_or_default().to_owned();
        Ok(Self {
            segment,
            name,
            owner: true,
            tracked: true,
            unlinked: AtomicBool::new(false),
        })
    }

    /// [`create`](Self::create) without the tracker (Python 3.13's
    /// `track=False`): no tracker process is started or told about the
    /// name. The handle still owns the name and unlinks it when dropped or
    /// [`close`](Self::close)d, but a creator that dies first (`SIGKILL`, a
    /// crash, `_exit`) leaves it in `/dev/shm` until somebody
    /// [`unlink`](Self::unlink)s it. For hosts that want no helper process,
    /// or reclaim names themselves.
    ///
    /// # Errors
    ///
    /// As [`create`](Self::create).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::SharedMemory;
    ///
    /// let block = SharedMemory::create_untracked(None, 64)?;
    /// assert!(block.is_owner());
    /// let name = block.name().to_owned();
    /// drop(block); // still unlinked by its owner
    /// assert!(SharedMemory::open(&name).is_err());
    /// # Ok::<(), multiproc_shm::ShmError>(())
    /// ```
    pub fn create_untracked(name: Option<&str>, size: usize) -> Result<Self, ShmError> {
        let segment = match name {
            Some(name) => {
                validate_name(name)?;
                Segment::create_named(Some(name), size)?
            }
            None => loop {
                let made = generate_name()?;
                match Segment::create_named(Some(&made), size) {
                    Ok(segment) => break segment,
                    // A generated name already taken: astronomically rare.
                    Err(e) if is_taken(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            },
        };
        let name = segment.name().unwrap_or_default().to_owned();
        Ok(Self {
            segment,
            name,
            owner: true,
            tracked: false,
            unlinked: AtomicBool::new(false),
        })
    }

    /// Attaches to the block called `name` (with or without Python's leading
    /// `/`), whoever created it.
    ///
    /// # Errors
    ///
    /// [`ShmError::Segment`] for a bad name or none by that name (`NotFound`).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::SharedMemory;
    ///
    /// let block = SharedMemory::create(None, 8)?;
    /// block.write_at(0, b"py")?;
    /// // Python's `SharedMemory("/name")` spelling works as well.
    /// let same = SharedMemory::open(&format!("/{}", block.name()))?;
    /// assert_eq!(&same.to_vec()[..2], b"py");
    /// assert!(!same.is_owner());
    /// assert!(SharedMemory::open("no_such_block_here").is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(name: &str) -> Result<Self, ShmError> {
        let segment = Segment::open_named(name)?;
        let name = segment.name().unwrap_or_default().to_owned();
        Ok(Self {
            segment,
            name,
            owner: false,
            tracked: false,
            unlinked: AtomicBool::new(false),
        })
    }

    /// Another handle to the same block that does not own it (what a
    /// receiving process gets), e.g. to pass to a child.
    ///
    /// # Errors
    ///
    /// [`ShmError::Segment`] when the descriptor cannot be duplicated.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::SharedMemory;
    ///
    /// let block = SharedMemory::create(None, 8)?;
    /// let other = block.try_clone()?;
    /// other.write_at(0, &[7])?;
    /// assert_eq!(block.to_vec()[0], 7);
    /// assert_eq!(other.name(), block.name());
    /// assert!(!other.is_owner());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_clone(&self) -> Result<Self, ShmError> {
        Ok(Self {
            segment: self.segment.try_clone()?,
            name: self.name.clone(),
            owner: false,
            tracked: false,
            unlinked: AtomicBool::new(false),
        })
    }

    /// The name, without the leading `/` (as Python's `.name`).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::SharedMemory;
    ///
    /// let block = SharedMemory::create(None, 8)?;
    /// assert!(!block.name().starts_with('/'));
    /// assert_eq!(SharedMemory::open(block.name())?.name(), block.name());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Size in bytes (as Python's `.size`).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::SharedMemory;
    ///
    /// let block = SharedMemory::create(None, 100)?;
    /// assert_eq!(block.size(), 100);
    /// assert_eq!(SharedMemory::open(block.name())?.size(), 100);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn size(&self) -> usize {
        self.segment.len()
    }

    /// Whether this handle created the block and will unlink it.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::SharedMemory;
    ///
    /// let owner = SharedMemory::create(None, 8)?;
    /// let attached = SharedMemory::open(owner.name())?;
    /// assert!(owner.is_owner());
    /// assert!(!attached.is_owner());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn is_owner(&self) -> bool {
        self.owner
    }

    /// The underlying segment, for atomic views ([`Segment::view`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::SharedMemory;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    ///
    /// let block = SharedMemory::create(None, 64)?;
    /// let counter = block.segment().view::<AtomicU64>(8)?;
    /// counter.fetch_add(2, Ordering::SeqCst);
    ///
    /// let other = SharedMemory::open(block.name())?;
    /// assert_eq!(other.segment().view::<AtomicU64>(8)?.load(Ordering::SeqCst), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn segment(&self) -> &Segment {
        &self.segment
    }

    /// Copies bytes out, starting at `offset`.
    ///
    /// # Errors
    ///
    /// [`ShmError::Segment`] when the range is outside the block.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::SharedMemory;
    ///
    /// let block = SharedMemory::create(None, 16)?;
    /// block.write_at(4, b"abcd")?;
    /// let mut buf = [0u8; 2];
    /// block.read_at(5, &mut buf)?;
    /// assert_eq!(&buf, b"bc");
    /// assert!(block.read_at(15, &mut buf).is_err()); // past the end
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<(), ShmError> {
        Ok(self.segment.read_at(offset, buf)?)
    }

    /// Copies `data` in, starting at `offset`.
    ///
    /// # Errors
    ///
    /// [`ShmError::Segment`] when the range is outside the block.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::SharedMemory;
    ///
    /// let block = SharedMemory::create(None, 4)?;
    /// block.write_at(1, b"xyz")?;
    /// assert_eq!(block.to_vec(), b"\0xyz");
    /// assert!(block.write_at(2, b"xyz").is_err()); // would run past the end
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<(), ShmError> {
        Ok(self.segment.write_at(offset, data)?)
    }

    /// A copy of the whole block.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::SharedMemory;
    ///
    /// let block = SharedMemory::create(None, 3)?;
    /// block.write_at(0, &[1, 2, 3])?;
    /// assert_eq!(block.to_vec(), vec![1, 2, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.size()];
        self.segment
            .read_at(0, &mut out)
            .expect("the whole block is in bounds");
        out
    }

    /// The block as a byte slice (Python's `.buf`).
    ///
    /// # Safety
    ///
    /// No process may write the block while the slice lives (for example:
    /// every writer is done and synchronised with this process by a lock,
    /// an event or a join).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::SharedMemory;
    ///
    /// let block = SharedMemory::create(None, 4)?;
    /// block.write_at(0, b"data")?;
    /// // SAFETY: the block was just created by this process and no other handle
    /// // to it exists, so nobody writes it while `bytes` lives.
    /// let bytes = unsafe { block.buf() };
    /// assert_eq!(bytes, b"data");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub unsafe fn buf(&self) -> &[u8] {
        // SAFETY: the mapping is `size()` bytes and lives as long as `self`;
        // the caller guarantees nobody writes it meanwhile.
        unsafe { std::slice::from_raw_parts(self.segment.as_ptr(), self.size()) }
    }

    /// The block as a mutable byte slice.
    ///
    /// # Safety
    ///
    /// No other process (and no other handle in this one) may read or write
    /// the block while the slice lives.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::SharedMemory;
    ///
    /// let mut block = SharedMemory::create(None, 4)?;
    /// // SAFETY: the block was just created by this process and no other handle
    /// // to it exists, so nothing else reads or writes it while `bytes` lives.
    /// let bytes = unsafe { block.buf_mut() };
    /// bytes.copy_from_slice(b"fill");
    /// assert_eq!(block.to_vec(), b"fill");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub unsafe fn buf_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `buf`, and the caller guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.segment.as_ptr(), self.size()) }
    }

    /// Removes the name (Python's `unlink()`); the mappings stay valid.
    ///
    /// # Errors
    ///
    /// [`ShmError::Segment`] with `NotFound` when the name is already gone.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::SharedMemory;
    ///
    /// let block = SharedMemory::create(None, 8)?;
    /// let attached = SharedMemory::open(block.name())?;
    /// attached.unlink()?;
    /// assert!(SharedMemory::open(block.name()).is_err()); // the name is gone
    /// attached.write_at(0, b"still ok")?; // the mappings are not
    /// assert_eq!(block.to_vec(), b"still ok");
    /// assert!(block.unlink().is_err()); // nothing left to unlink
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unlink(&self) -> Result<(), ShmError> {
        self.unlinked.store(true, Ordering::Relaxed);
        let result = self.segment.unlink();
        if self.tracked {
            let _ = tracker::unregister(&self.name);
        }
        Ok(result?)
    }

    /// Unmaps the block (Python's `close()`); an owner also unlinks it.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::SharedMemory;
    ///
    /// let block = SharedMemory::create(None, 8)?;
    /// let name = block.name().to_owned();
    /// block.close();
    /// assert!(SharedMemory::open(&name).is_err()); // the owner unlinked it
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(self) {}

    /// Gives up ownership: the name survives this handle and this process,
    /// until somebody unlinks it. Returns the name.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::SharedMemory;
    ///
    /// let block = SharedMemory::create(None, 8)?;
    /// block.write_at(0, b"kept")?;
    /// let name = block.into_persistent();
    ///
    /// let later = SharedMemory::open(&name)?; // still there
    /// assert_eq!(&later.to_vec()[..4], b"kept");
    /// later.unlink()?; // somebody has to remove it in the end
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use = "the name is the only way to find the block again"]
    pub fn into_persistent(mut self) -> String {
        if self.tracked {
            let _ = tracker::unregister(&self.name);
        }
        self.owner = false;
        self.tracked = false;
        std::mem::take(&mut self.name)
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        if self.owner && !self.unlinked.load(Ordering::Relaxed) {
            let _ = self.segment.unlink();
            if self.tracked {
                let _ = tracker::unregister(&self.name);
            }
        }
    }
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("name", &self.name)
            .field("size", &self.size())
            .field("owner", &self.owner)
            .finish()
    }
}

/// A `SharedMemory` in a message: the segment (descriptor out of band) —
/// the receiver attaches and never owns.
impl Serialize for SharedMemory {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.segment.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SharedMemory {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let segment = Segment::deserialize(deserializer)?;
        let name = segment
            .name()
            .ok_or_else(|| serde::de::Error::custom("SharedMemory without a name"))?
            .to_owned();
        Ok(Self {
            segment,
            name,
            owner: false,
            tracked: false,
            unlinked: AtomicBool::new(false),
        })
    }
}
