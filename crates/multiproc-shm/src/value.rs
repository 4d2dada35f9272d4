//! [`Value`] and [`Array`] (with a process-shared lock), [`RawValue`] and
//! [`RawArray`] (without): plain data in an anonymous shared segment, like
//! Python's `multiprocessing.Value`/`Array`/`RawValue`/`RawArray`.
//!
//! # Layout
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 32 | object header: magic `MPVALUE\0`, version, size |
//! | 32 | 8 | element size in bytes |
//! | 40 | 8 | element count (1 for a value) |
//! | 64 | `RLock::MEMORY_SIZE` | the lock (unused by the raw types) |
//! | [`DATA`] | size × count | the elements, 64-byte aligned |
//!
//! Attaching checks the header, the element size against `T` and the count
//! against the segment, so a handle of the wrong type or a corrupt segment is
//! an error, never a misread.
#![allow(unsafe_code)]

use multiproc_core::segment::SharedSafe;
use multiproc_core::{Header, Segment};
use multiproc_sync::{OwnerDied, RLock, RLockGuard};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU32, AtomicU64};

use crate::ShmError;

/// Plain data: any bit pattern is a valid value, and a copy of its bytes is
/// a copy of the value (a `bytemuck::Pod`-style bound).
///
/// # Safety
///
/// Implementers guarantee that the type is `Copy`, has no padding bytes that
/// matter, no pointers or references (they mean nothing in another process)
/// and no invalid bit patterns (so `bool`, `char` and enums are not `Plain`),
/// and an alignment of at most 64.
///
/// # Examples
///
/// ```
/// use multiproc_shm::{Plain, Value};
///
/// #[derive(Clone, Copy, Debug, PartialEq)]
/// #[repr(C)]
/// struct Point {
///     x: f64,
///     y: f64,
/// }
/// // SAFETY: two `f64`s: no padding, no pointers, every bit pattern valid,
/// // alignment 8.
/// unsafe impl Plain for Point {}
///
/// let p = Value::new(Point { x: 1.0, y: 2.0 })?;
/// p.set(Point { x: 3.0, y: 4.0 })?;
/// assert_eq!(p.get()?, Point { x: 3.0, y: 4.0 });
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub unsafe trait Plain: Copy + Send + Sync + 'static {}

macro_rules! plain {
    ($($t:ty),*) => {$(
        // SAFETY: primitive numbers: every bit pattern is valid, no pointers.
        unsafe impl Plain for $t {}
    )*};
}
plain!(
    u8, u16, u32, u64, u128, i8, i16, i32, i64, i128, usize, isize, f32, f64
);
// SAFETY: arrays of plain elements are plain (no padding between elements).
unsafe impl<T: Plain, const N: usize> Plain for [T; N] {}

/// Plain types with an atomic twin that can be used in place, for lock-free
/// counters in a [`RawValue`] or [`RawArray`].
///
/// # Examples
///
/// ```
/// use multiproc_shm::{Atomic, RawValue};
/// use std::sync::atomic::Ordering;
///
/// fn bump<T: Atomic<Atomic = std::sync::atomic::AtomicI64>>(v: &RawValue<T>) -> i64 {
///     v.atomic().fetch_add(1, Ordering::AcqRel) + 1
/// }
///
/// let v = RawValue::new(41i64)?;
/// assert_eq!(bump(&v), 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Atomic: Plain {
    /// The atomic type of the same size and layout.
    type Atomic: SharedSafe;
}
impl Atomic for u32 {
    type Atomic = AtomicU32;
}
impl Atomic for u64 {
    type Atomic = AtomicU64;
}
impl Atomic for i32 {
    type Atomic = AtomicI32;
}
impl Atomic for i64 {
    type Atomic = AtomicI64;
}

const MAGIC: [u8; 8] = *b"MPVALUE\0";
/// 2: the lock is an `RLock` (it was a `Lock`). 3: the lock carries the
/// doorbell table of async waiters (1152 bytes), which moves [`DATA`].
const VERSION: u32 = 3;
const META: usize = 32;
const LOCK: usize = 64;
/// Offset of the first element.
pub const DATA: usize = {
    let end = LOCK + RLock::MEMORY_SIZE;
    end.div_ceil(64) * 64
};

/// The shared part of every type here: segment, element count, lock.
struct Store<T> {
    segment: Arc<Segment>,
    len: usize,
    lock: Option<RLock>,
    _type: PhantomData<T>,
}

impl<T> Clone for Store<T> {
    fn clone(&self) -> Self {
        Self {
            segment: Arc::clone(&self.segment),
            len: self.len,
            lock: self.lock.clone(),
            _type: PhantomData,
        }
    }
}

impl<T: Plain> Store<T> {
    fn create(values: &[T], locked: bool) -> Result<Self, ShmError> {
        let bytes = size_of_val(values);
        let size = DATA + bytes.max(1);
        let segment = Arc::new(Segment::anonymous(size)?);
        segment.write_at(META, &(size_of::<T>() as u64).to_ne_bytes())?;
        segment.write_at(META + 8, &(values.len() as u64).to_ne_bytes())?;
        // SAFETY: `T: Plain` has no padding or pointers: its bytes are a
        // faithful copy; the slice covers exactly `values`.
        let raw = unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), bytes) };
        segment.write_at(DATA, raw)?;
        let lock = if locked {
            Some(RLock::create_in(Arc::clone(&segment), LOCK).map_err(ShmError::LockCreate)?)
        } else {
            None
        };
        segment.publish_header(0, &Header::new(MAGIC, VERSION, size as u64))?;
        Ok(Self {
            segment,
            len: values.len(),
            lock,
            _type: PhantomData,
        })
    }

    fn attach(segment: Segment, locked: bool) -> Result<Self, ShmError> {
        let header = segment.read_header(0, MAGIC, VERSION)?;
        let mut word = [0u8; 8];
        segment.read_at(META, &mut word)?;
        if u64::from_ne_bytes(word) != size_of::<T>() as u64 {
            return Err(ShmError::WrongType);
        }
        segment.read_at(META + 8, &mut word)?;
        let len = usize::try_from(u64::from_ne_bytes(word)).map_err(|_| ShmError::WrongType)?;
        let need = len
            .checked_mul(size_of::<T>())
            .and_then(|b| b.checked_add(DATA))
            .ok_or(ShmError::WrongType)?;
        if need as u64 > header.size() {
            return Err(ShmError::TooSmall {
                need,
                have: header.size() as usize,
            });
        }
        let segment = Arc::new(segment);
        let lock = if locked {
            Some(RLock::attach(Arc::clone(&segment), LOCK).map_err(ShmError::LockAttach)?)
        } else {
            None
        };
        Ok(Self {
            segment,
            len,
            lock,
            _type: PhantomData,
        })
    }

    fn offset(&self, index: usize) -> Result<usize, ShmError> {
        if index < self.len {
            Ok(DATA + index * size_of::<T>())
        } else {
            Err(ShmError::IndexOutOfRange {
                index,
                len: self.len,
            })
        }
    }

    fn read(&self, index: usize) -> Result<T, ShmError> {
        let offset = self.offset(index)?;
        // SAFETY: in bounds (checked by `offset` against a length validated
        // on attach), and `T: Plain` is valid for any bytes; an unaligned
        // read does not require alignment.
        Ok(unsafe {
            self.segment
                .as_ptr()
                .add(offset)
                .cast::<T>()
                .read_volatile()
        })
    }

    fn write(&self, index: usize, value: T) -> Result<(), ShmError> {
        let offset = self.offset(index)?;
        // SAFETY: as in `read`; the data area starts 64-aligned and elements
        // are packed, so the address is aligned for `T`.
        unsafe {
            self.segment
                .as_ptr()
                .add(offset)
                .cast::<T>()
                .write_volatile(value)
        };
        Ok(())
    }

    /// Every element, in one bulk copy.
    fn to_vec(&self) -> Vec<T> {
        let mut out = Vec::<T>::with_capacity(self.len);
        // SAFETY: the data area holds `len` elements (validated on attach)
        // and `out` has room for them; the copy initialises every byte of
        // the first `len` elements, and `T: Plain` is valid for any bytes,
        // so setting the length afterwards exposes only initialised values.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.segment.as_ptr().add(DATA),
                out.as_mut_ptr().cast::<u8>(),
                self.len * size_of::<T>(),
            );
            out.set_len(self.len);
        }
        out
    }

    fn write_from(&self, start: usize, values: &[T]) -> Result<(), ShmError> {
        self.check_range(start, values.len())?;
        // SAFETY: as in `read_into`.
        let raw = unsafe {
            std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), size_of_val(values))
        };
        Ok(self.segment.write_at(DATA + start * size_of::<T>(), raw)?)
    }

    fn check_range(&self, start: usize, count: usize) -> Result<(), ShmError> {
        match start.checked_add(count) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(ShmError::IndexOutOfRange {
                index: start.saturating_add(count),
                len: self.len,
            }),
        }
    }

    fn atomic(&self, index: usize) -> Result<&T::Atomic, ShmError>
    where
        T: Atomic,
    {
        Ok(self.segment.view::<T::Atomic>(self.offset(index)?)?)
    }

    fn lock(&self) -> &RLock {
        self.lock.as_ref().expect("locked types always have a lock")
    }

    /// Runs `access` under the lock. When a process died holding it,
    /// `access` is not run: the lock is released (and works again) and
    /// [`ShmError::OwnerDied`] says the data may be half-changed.
    fn locked<R>(&self, access: impl FnOnce(&Self) -> Result<R, ShmError>) -> Result<R, ShmError> {
        let _held = self.lock().acquire().map_err(|_| ShmError::OwnerDied)?;
        access(self)
    }
}

/// The guard of a [`Value`] or [`Array`] lock: reads and writes under it are
/// one critical section (Python's `with v.get_lock(): v.value += 1`).
///
/// # Examples
///
/// ```
/// use multiproc_shm::Array;
///
/// let totals = Array::from_slice(&[10i64, 0])?;
/// {
///     // Move 4 from one slot to the other as one critical section.
///     let guard = totals.lock().unwrap();
///     guard.set(0, guard.get(0)? - 4)?;
///     guard.set(1, guard.get(1)? + 4)?;
/// }
/// assert_eq!(totals.to_vec()?, vec![6, 4]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "the lock is released when the guard is dropped"]
pub struct DataGuard<'a, T> {
    store: &'a Store<T>,
    _guard: RLockGuard<'a>,
}

impl<T: Plain> DataGuard<'_, T> {
    /// Element `index` (0 for a value).
    ///
    /// # Errors
    ///
    /// [`ShmError::IndexOutOfRange`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::Array;
    ///
    /// let a = Array::from_slice(&[5u32, 6])?;
    /// let guard = a.lock().unwrap();
    /// assert_eq!(guard.get(1)?, 6);
    /// assert!(guard.get(2).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self, index: usize) -> Result<T, ShmError> {
        self.store.read(index)
    }

    /// Replaces element `index`.
    ///
    /// # Errors
    ///
    /// [`ShmError::IndexOutOfRange`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::Value;
    ///
    /// let v = Value::new(1u8)?;
    /// {
    ///     let guard = v.lock().unwrap();
    ///     guard.set(0, 9)?;
    ///     assert_eq!(guard.get(0)?, 9);
    /// }
    /// assert_eq!(v.get()?, 9);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set(&self, index: usize, value: T) -> Result<(), ShmError> {
        self.store.write(index, value)
    }
}

fn guard<'a, T: Plain>(
    store: &'a Store<T>,
) -> Result<DataGuard<'a, T>, OwnerDied<DataGuard<'a, T>>> {
    match store.lock().acquire() {
        Ok(g) => Ok(DataGuard { store, _guard: g }),
        Err(died) => Err(OwnerDied::new(DataGuard {
            store,
            _guard: died.into_inner(),
        })),
    }
}

/// One `T` in shared memory with a process-shared, recursive lock (an
/// [`RLock`], as Python's `Value(typecode, v)` has).
///
/// [`get`](Self::get) and [`set`](Self::set) each take the lock; a
/// read-modify-write holds it across both, either with
/// [`lock`](Self::lock) or, as in Python, with
/// [`get_lock`](Self::get_lock) (the lock is recursive, so `get` and `set`
/// inside work). If a process dies holding the lock, the next user learns
/// it: `lock` reports [`OwnerDied`] (with the guard), `get` and `set`
/// [`ShmError::OwnerDied`] (without doing their work); the value keeps
/// working.
///
/// # Examples
///
/// Python's `with counter.get_lock(): counter.value += 5`:
///
/// ```
/// use multiproc_shm::Value;
///
/// let counter = Value::new(0u64)?;
/// {
///     let _held = counter.get_lock().acquire().unwrap();
///     counter.set(counter.get()? + 5)?;
/// }
/// assert_eq!(counter.get()?, 5);
/// # Ok::<(), multiproc_shm::ShmError>(())
/// ```
///
/// The same with the guard's own accessors:
///
/// ```
/// use multiproc_shm::Value;
///
/// let counter = Value::new(0u64)?;
/// {
///     let guard = counter.lock().unwrap();
///     guard.set(0, guard.get(0)? + 5)?;
/// }
/// assert_eq!(counter.get()?, 5);
/// # Ok::<(), multiproc_shm::ShmError>(())
/// ```
pub struct Value<T> {
    store: Store<T>,
}

impl<T: Plain> Value<T> {
    /// A new value in its own anonymous segment.
    ///
    /// # Errors
    ///
    /// [`ShmError::Segment`] when the segment cannot be made.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::Value;
    ///
    /// let ratio = Value::new(0.5f64)?;
    /// assert_eq!(ratio.get()?, 0.5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(value: T) -> Result<Self, ShmError> {
        Ok(Self {
            store: Store::create(&[value], true)?,
        })
    }

    /// A copy of the value, read under the lock (Python's `v.value`).
    ///
    /// # Errors
    ///
    /// [`ShmError::OwnerDied`] when a process died holding the lock: the
    /// value may be half-written; nothing was read, and the next call reads.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::Value;
    ///
    /// let v = Value::new(-3i32)?;
    /// let other = v.clone(); // another handle to the same value
    /// assert_eq!(other.get()?, -3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self) -> Result<T, ShmError> {
        self.store.locked(|store| store.read(0))
    }

    /// Replaces the value under the lock (Python's `v.value = x`).
    ///
    /// # Errors
    ///
    /// [`ShmError::OwnerDied`] when a process died holding the lock: nothing
    /// was written, and the next call writes.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::Value;
    ///
    /// let v = Value::new(0u16)?;
    /// let other = v.clone();
    /// other.set(512)?;
    /// assert_eq!(v.get()?, 512);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set(&self, value: T) -> Result<(), ShmError> {
        self.store.locked(|store| store.write(0, value))
    }

    /// Takes the lock for a read-modify-write.
    ///
    /// # Errors
    ///
    /// [`OwnerDied`] (holding the guard) when the previous holder died
    /// holding the lock.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::Value;
    ///
    /// let balance = Value::new(100i64)?;
    /// match balance.lock() {
    ///     Ok(guard) => guard.set(0, guard.get(0)? - 30)?,
    ///     // A holder died: the guard is still handed over; the data may be
    ///     // half-changed, so a real program would check it here.
    ///     Err(died) => drop(died),
    /// }
    /// assert_eq!(balance.get()?, 70);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock(&self) -> Result<DataGuard<'_, T>, OwnerDied<DataGuard<'_, T>>> {
        guard(&self.store)
    }

    /// The lock (Python's `get_lock()`): recursive, so the value's own
    /// accessors work while the calling thread holds it.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::Value;
    ///
    /// let v = Value::new(1u32)?;
    /// let _held = v.get_lock().acquire().unwrap();
    /// v.set(v.get()? * 10)?; // recursive: `get` and `set` take it again
    /// assert_eq!(v.get()?, 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn get_lock(&self) -> &RLock {
        self.store.lock()
    }
}

/// `N` `T`s in shared memory with a process-shared, recursive lock (an
/// [`RLock`], as Python's `Array(typecode, n)` has). Locking and the death
/// of a holder work as for [`Value`].
///
/// # Examples
///
/// ```
/// use multiproc_shm::Array;
///
/// let array = Array::from_slice(&[1.0f64, 2.0, 3.0])?;
/// array.set(1, 20.0)?;
/// assert_eq!(array.to_vec()?, vec![1.0, 20.0, 3.0]);
/// assert!(array.get(3).is_err());
/// {
///     // Python's `with array.get_lock(): array[0] += 1`.
///     let _held = array.get_lock().acquire().unwrap();
///     array.set(0, array.get(0)? + 1.0)?;
/// }
/// assert_eq!(array.get(0)?, 2.0);
/// # Ok::<(), multiproc_shm::ShmError>(())
/// ```
pub struct Array<T> {
    store: Store<T>,
}

impl<T: Plain> Array<T> {
    /// An array holding a copy of `values`.
    ///
    /// # Errors
    ///
    /// [`ShmError::Segment`] when the segment cannot be made.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::Array;
    ///
    /// let a = Array::from_slice(&[1u8, 2, 3])?;
    /// assert_eq!(a.len(), 3);
    /// assert_eq!(a.to_vec()?, vec![1, 2, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_slice(values: &[T]) -> Result<Self, ShmError> {
        Ok(Self {
            store: Store::create(values, true)?,
        })
    }

    /// An array of `len` copies of `value`.
    ///
    /// # Errors
    ///
    /// [`ShmError::Segment`] when the segment cannot be made.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::Array;
    ///
    /// let a = Array::filled(-1i32, 4)?;
    /// assert_eq!(a.to_vec()?, vec![-1; 4]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn filled(value: T, len: usize) -> Result<Self, ShmError> {
        Self::from_slice(&vec![value; len])
    }

    /// Number of elements.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::Array;
    ///
    /// assert_eq!(Array::filled(0u64, 10)?.len(), 10);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.store.len
    }

    /// Whether the array has no elements.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::Array;
    ///
    /// assert!(Array::<u8>::from_slice(&[])?.is_empty());
    /// assert!(!Array::from_slice(&[0u8])?.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.store.len == 0
    }

    /// Element `index`, read under the lock.
    ///
    /// # Errors
    ///
    /// [`ShmError::IndexOutOfRange`]; [`ShmError::OwnerDied`] as for
    /// [`Value::get`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::Array;
    ///
    /// let a = Array::from_slice(&[1.5f32, 2.5])?;
    /// assert_eq!(a.get(1)?, 2.5);
    /// assert!(a.get(2).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self, index: usize) -> Result<T, ShmError> {
        self.store.locked(|store| store.read(index))
    }

    /// Replaces element `index` under the lock.
    ///
    /// # Errors
    ///
    /// [`ShmError::IndexOutOfRange`]; [`ShmError::OwnerDied`] as for
    /// [`Value::set`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::Array;
    ///
    /// let a = Array::filled(0u8, 2)?;
    /// a.set(1, 42)?;
    /// assert_eq!(a.to_vec()?, vec![0, 42]);
    /// assert!(a.set(2, 1).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set(&self, index: usize, value: T) -> Result<(), ShmError> {
        self.store.locked(|store| store.write(index, value))
    }

    /// A copy of every element, taken under the lock (one bulk copy).
    ///
    /// # Errors
    ///
    /// [`ShmError::OwnerDied`] as for [`Value::get`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::Array;
    ///
    /// let a = Array::from_slice(&[[1u8, 2], [3, 4]])?; // arrays are `Plain` too
    /// assert_eq!(a.to_vec()?, vec![[1, 2], [3, 4]]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_vec(&self) -> Result<Vec<T>, ShmError> {
        self.store.locked(|store| Ok(store.to_vec()))
    }

    /// Copies `values` in from `start`, under the lock (one bulk copy).
    ///
    /// # Errors
    ///
    /// [`ShmError::IndexOutOfRange`] when the slice does not fit;
    /// [`ShmError::OwnerDied`] as for [`Value::set`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::Array;
    ///
    /// let a = Array::filled(0u32, 5)?;
    /// a.write_slice(1, &[7, 8, 9])?;
    /// assert_eq!(a.to_vec()?, vec![0, 7, 8, 9, 0]);
    /// assert!(a.write_slice(4, &[1, 2]).is_err()); // does not fit
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_slice(&self, start: usize, values: &[T]) -> Result<(), ShmError> {
        self.store.locked(|store| store.write_from(start, values))
    }

    /// Takes the lock for several reads and writes.
    ///
    /// # Errors
    ///
    /// [`OwnerDied`] (holding the guard) when the previous holder died.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::Array;
    ///
    /// let a = Array::from_slice(&[1u64, 2, 3])?;
    /// {
    ///     let guard = a.lock().unwrap();
    ///     let sum = guard.get(0)? + guard.get(1)? + guard.get(2)?;
    ///     guard.set(0, sum)?;
    /// }
    /// assert_eq!(a.get(0)?, 6);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock(&self) -> Result<DataGuard<'_, T>, OwnerDied<DataGuard<'_, T>>> {
        guard(&self.store)
    }

    /// The lock (Python's `get_lock()`): recursive, so the value's own
    /// accessors work while the calling thread holds it.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::Array;
    ///
    /// let a = Array::from_slice(&[1i32, 2])?;
    /// {
    ///     let _held = a.get_lock().acquire().unwrap();
    ///     let (x, y) = (a.get(0)?, a.get(1)?);
    ///     a.write_slice(0, &[y, x])?; // swapped as one critical section
    /// }
    /// assert_eq!(a.to_vec()?, vec![2, 1]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn get_lock(&self) -> &RLock {
        self.store.lock()
    }
}

/// One `T` in shared memory with no lock (Python's `RawValue`). Reads and
/// writes are single volatile copies: atomic for aligned types up to 8
/// bytes on x86-64, torn otherwise when they race. For lock-free counters use
/// [`atomic`](Self::atomic).
///
/// # Examples
///
/// ```
/// use multiproc_shm::RawValue;
/// use std::sync::atomic::Ordering;
///
/// let hits = RawValue::new(0u64)?;
/// hits.atomic().fetch_add(3, Ordering::Relaxed);
/// assert_eq!(hits.get(), 3);
/// # Ok::<(), multiproc_shm::ShmError>(())
/// ```
pub struct RawValue<T> {
    store: Store<T>,
}

impl<T: Plain> RawValue<T> {
    /// A new value in its own anonymous segment.
    ///
    /// # Errors
    ///
    /// [`ShmError::Segment`] when the segment cannot be made.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::RawValue;
    ///
    /// let flag = RawValue::new(0u8)?;
    /// assert_eq!(flag.get(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(value: T) -> Result<Self, ShmError> {
        Ok(Self {
            store: Store::create(&[value], false)?,
        })
    }

    /// A copy of the value.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::RawValue;
    ///
    /// let v = RawValue::new(2.5f64)?;
    /// assert_eq!(v.clone().get(), 2.5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn get(&self) -> T {
        self.store.read(0).expect("a value has element 0")
    }

    /// Replaces the value.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::RawValue;
    ///
    /// let v = RawValue::new(0i16)?;
    /// let other = v.clone();
    /// other.set(-7);
    /// assert_eq!(v.get(), -7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set(&self, value: T) {
        self.store.write(0, value).expect("a value has element 0");
    }

    /// The value as its atomic twin, in place.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::RawValue;
    /// use std::sync::atomic::Ordering;
    ///
    /// let done = RawValue::new(0u32)?;
    /// let worker = done.clone(); // e.g. sent to another process
    /// std::thread::spawn(move || worker.atomic().store(1, Ordering::Release)).join().unwrap();
    /// assert_eq!(done.atomic().load(Ordering::Acquire), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn atomic(&self) -> &T::Atomic
    where
        T: Atomic,
    {
        self.store.atomic(0).expect("a value has element 0")
    }
}

/// `N` `T`s in shared memory with no lock (Python's `RawArray`).
///
/// # Examples
///
/// ```
/// use multiproc_shm::RawArray;
/// use std::sync::atomic::Ordering;
///
/// let slots = RawArray::from_slice(&[0u32; 4])?;
/// slots.atomic(2)?.fetch_add(1, Ordering::Relaxed);
/// assert_eq!(slots.to_vec(), vec![0, 0, 1, 0]);
/// # Ok::<(), multiproc_shm::ShmError>(())
/// ```
pub struct RawArray<T> {
    store: Store<T>,
}

impl<T: Plain> RawArray<T> {
    /// An array holding a copy of `values`.
    ///
    /// # Errors
    ///
    /// [`ShmError::Segment`] when the segment cannot be made.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::RawArray;
    ///
    /// let a = RawArray::from_slice(&[3u16, 4])?;
    /// assert_eq!(a.to_vec(), vec![3, 4]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_slice(values: &[T]) -> Result<Self, ShmError> {
        Ok(Self {
            store: Store::create(values, false)?,
        })
    }

    /// Number of elements.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::RawArray;
    ///
    /// assert_eq!(RawArray::from_slice(&[0u8; 16])?.len(), 16);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.store.len
    }

    /// Whether the array has no elements.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::RawArray;
    ///
    /// assert!(RawArray::<u64>::from_slice(&[])?.is_empty());
    /// assert!(!RawArray::from_slice(&[1u64])?.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.store.len == 0
    }

    /// Element `index`.
    ///
    /// # Errors
    ///
    /// [`ShmError::IndexOutOfRange`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::RawArray;
    ///
    /// let a = RawArray::from_slice(&[10i8, 20])?;
    /// assert_eq!(a.get(0)?, 10);
    /// assert!(a.get(2).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self, index: usize) -> Result<T, ShmError> {
        self.store.read(index)
    }

    /// Replaces element `index`.
    ///
    /// # Errors
    ///
    /// [`ShmError::IndexOutOfRange`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::RawArray;
    ///
    /// let a = RawArray::from_slice(&[0u32; 3])?;
    /// a.set(2, 5)?;
    /// assert_eq!(a.to_vec(), vec![0, 0, 5]);
    /// assert!(a.set(3, 5).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set(&self, index: usize, value: T) -> Result<(), ShmError> {
        self.store.write(index, value)
    }

    /// A copy of every element (one bulk copy, not atomic as a whole).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::RawArray;
    ///
    /// let a = RawArray::from_slice(&[1.0f64, 2.0])?;
    /// let copy = a.to_vec();
    /// a.set(0, 9.0)?;
    /// assert_eq!(copy, vec![1.0, 2.0]); // a copy, not a view
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn to_vec(&self) -> Vec<T> {
        self.store.to_vec()
    }

    /// Copies `values` in from `start` (one bulk copy).
    ///
    /// # Errors
    ///
    /// [`ShmError::IndexOutOfRange`] when the slice does not fit.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::RawArray;
    ///
    /// let a = RawArray::from_slice(&[0u8; 4])?;
    /// a.write_slice(2, &[1, 2])?;
    /// assert_eq!(a.to_vec(), vec![0, 0, 1, 2]);
    /// assert!(a.write_slice(3, &[1, 2]).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_slice(&self, start: usize, values: &[T]) -> Result<(), ShmError> {
        self.store.write_from(start, values)
    }

    /// Element `index` as its atomic twin, in place.
    ///
    /// # Errors
    ///
    /// [`ShmError::IndexOutOfRange`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::RawArray;
    /// use std::sync::atomic::Ordering;
    ///
    /// let hist = RawArray::from_slice(&[0u64; 4])?;
    /// for sample in [1usize, 3, 3] {
    ///     hist.atomic(sample)?.fetch_add(1, Ordering::Relaxed);
    /// }
    /// assert_eq!(hist.to_vec(), vec![0, 1, 0, 2]);
    /// assert!(hist.atomic(4).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn atomic(&self, index: usize) -> Result<&T::Atomic, ShmError>
    where
        T: Atomic,
    {
        self.store.atomic(index)
    }
}

macro_rules! handle {
    ($name:ident, $locked:expr) => {
        impl<T: Plain> Serialize for $name<T> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                self.store.segment.serialize(serializer)
            }
        }

        impl<'de, T: Plain> Deserialize<'de> for $name<T> {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let segment = Segment::deserialize(deserializer)?;
                Ok(Self {
                    store: Store::attach(segment, $locked).map_err(serde::de::Error::custom)?,
                })
            }
        }

        /// Another handle to the same shared object.
        impl<T> Clone for $name<T> {
            fn clone(&self) -> Self {
                Self {
                    store: self.store.clone(),
                }
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("type", &std::any::type_name::<T>())
                    .field("len", &self.store.len)
                    .finish()
            }
        }
    };
}

handle!(Value, true);
handle!(Array, true);
handle!(RawValue, false);
handle!(RawArray, false);
