//! [`ShareableList`]: Python's `multiprocessing.shared_memory.ShareableList`,
//! byte for byte.
//!
//! # Layout (CPython's, native byte order)
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 8 | item count `N` (i64) |
//! | 8 | 8 (N + 1) | offset of each item's slot from the data start; the last is the data size |
//! | 8 (N + 2) | data size | the items, each in an 8-aligned slot |
//! | after the data | 8 N | each item's `struct` format, NUL-padded to 8 bytes |
//! | after the formats | N | each item's back-transform code (0 number/bool, 1 str, 2 bytes, 3 None) |
//!
//! Item formats: `q` (int, i64), `d` (float), `xxxxxxx?` (bool in byte 7),
//! `xxxxxx?x` (None), `{n}s` (str as UTF-8 or bytes, NUL-padded; a `str` or
//! `bytes` item gets a slot of `8 * (len / 8 + 1)` bytes). Python strips
//! trailing NULs from `str` and `bytes` items on reading; so does this crate.
//!
//! An item is written in several stores (format, code, value), with no lock,
//! as in Python: readers that race with a writer of the same item may see a
//! mix. Guard concurrent use with a lock.

use std::fmt;

use crate::{SharedMemory, ShmError};

/// One item of a [`ShareableList`]: the types Python's `ShareableList` holds.
///
/// # Examples
///
/// ```
/// use multiproc_shm::ShareableValue as V;
///
/// assert_eq!(V::from(3i64), V::Int(3));
/// assert_eq!(V::from(0.25), V::Float(0.25));
/// assert_eq!(V::from(true), V::Bool(true));
/// assert_eq!(V::from("text"), V::Str("text".to_owned()));
/// assert_eq!(V::from(&b"raw"[..]), V::Bytes(b"raw".to_vec()));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum ShareableValue {
    /// Python `int` (64-bit signed).
    Int(i64),
    /// Python `float`.
    Float(f64),
    /// Python `bool`.
    Bool(bool),
    /// Python `str` (trailing NULs are not kept, as in Python).
    Str(String),
    /// Python `bytes` (trailing NULs are not kept, as in Python).
    Bytes(Vec<u8>),
    /// Python `None`.
    None,
}

impl From<i64> for ShareableValue {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}
impl From<f64> for ShareableValue {
    fn from(v: f64) -> Self {
        Self::Float(v)
    }
}
impl From<bool> for ShareableValue {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}
impl From<&str> for ShareableValue {
    fn from(v: &str) -> Self {
        Self::Str(v.to_owned())
    }
}
impl From<&[u8]> for ShareableValue {
    fn from(v: &[u8]) -> Self {
        Self::Bytes(v.to_vec())
    }
}

const SLOT_ALIGN: usize = 8;
const FORMAT_LEN: usize = 8;

const CODE_PLAIN: u8 = 0;
const CODE_STR: u8 = 1;
const CODE_BYTES: u8 = 2;
const CODE_NONE: u8 = 3;

impl ShareableValue {
    /// The slot a new list gives this value.
    fn slot_len(&self) -> usize {
        match self {
            Self::Str(s) => SLOT_ALIGN * (s.len() / SLOT_ALIGN + 1),
            Self::Bytes(b) => SLOT_ALIGN * (b.len() / SLOT_ALIGN + 1),
            _ => SLOT_ALIGN,
        }
    }

    fn code(&self) -> u8 {
        match self {
            Self::Str(_) => CODE_STR,
            Self::Bytes(_) => CODE_BYTES,
            Self::None => CODE_NONE,
            _ => CODE_PLAIN,
        }
    }
}

/// What an item's format says it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Int,
    Float,
    Bool,
    None,
    Bytes(usize),
}

impl Format {
    fn parse(raw: &[u8; FORMAT_LEN]) -> Option<Self> {
        let end = raw.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        match &raw[..end] {
            b"q" => Some(Self::Int),
            b"d" => Some(Self::Float),
            b"xxxxxxx?" => Some(Self::Bool),
            b"xxxxxx?x" => Some(Self::None),
            [digits @ .., b's'] if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) => {
                std::str::from_utf8(digits)
                    .ok()?
                    .parse()
                    .ok()
                    .map(Self::Bytes)
            }
            _ => None,
        }
    }

    fn render(self) -> [u8; FORMAT_LEN] {
        let text = match self {
            Self::Int => "q".to_owned(),
            Self::Float => "d".to_owned(),
            Self::Bool => "xxxxxxx?".to_owned(),
            Self::None => "xxxxxx?x".to_owned(),
            Self::Bytes(n) => format!("{n}s"),
        };
        let mut out = [0u8; FORMAT_LEN];
        out[..text.len()].copy_from_slice(text.as_bytes());
        out
    }

    fn size(self) -> usize {
        match self {
            Self::Bytes(n) => n,
            _ => 8,
        }
    }
}

/// A fixed-length list of ints, floats, bools, strs, bytes and Nones in
/// shared memory, readable and writable by Python's
/// `ShareableList(name=…)`; see the [module docs](self) for the layout.
///
/// # Examples
///
/// ```
/// use multiproc_shm::{ShareableList, ShareableValue as V};
///
/// let list = ShareableList::create(None, &[V::Int(7), V::from("seven"), V::None])?;
/// let same = ShareableList::open(list.shm().name())?;
/// assert_eq!(same.get(1)?, V::Str("seven".into()));
/// same.set(0, V::Float(7.5))?;
/// assert_eq!(list.get(0)?, V::Float(7.5));
/// assert!(list.set(1, V::from("far too long for the slot")).is_err());
/// # Ok::<(), multiproc_shm::ShmError>(())
/// ```
pub struct ShareableList {
    shm: SharedMemory,
    /// Slot offsets from the data start, `len + 1` of them; read once and
    /// validated, never changed afterwards (Python neither).
    offsets: Vec<usize>,
}

impl ShareableList {
    /// Creates a list holding `items` in a new block (named `name`, or an
    /// unguessable name); this process owns it (see [`SharedMemory`]).
    ///
    /// # Errors
    ///
    /// As for [`SharedMemory::create`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::{ShareableList, ShareableValue as V};
    ///
    /// let list = ShareableList::create(None, &[V::Int(1), V::None, V::from(&b"ab"[..])])?;
    /// assert_eq!(list.len(), 3);
    /// assert!(list.shm().is_owner());
    /// assert_eq!(list.get(2)?, V::Bytes(b"ab".to_vec()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn create(name: Option<&str>, items: &[ShareableValue]) -> Result<Self, ShmError> {
        let n = items.len();
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0usize);
        for item in items {
            offsets.push(offsets.last().copied().unwrap_or(0) + item.slot_len());
        }
        let data = offsets[n];
        let size = (n + 2) * 8 + data + n * FORMAT_LEN + n;
        let shm = SharedMemory::create(name, size)?;
        shm.write_at(0, &(n as i64).to_ne_bytes())?;
        for (i, offset) in offsets.iter().enumerate() {
            shm.write_at(8 * (i + 1), &(*offset as i64).to_ne_bytes())?;
        }
        let list = Self { shm, offsets };
        for (i, item) in items.iter().enumerate() {
            list.store(i, item, initial_format(item))?;
        }
        Ok(list)
    }

    /// Attaches to the list in the block called `name` (created here or by
    /// Python), validating its layout.
    ///
    /// # Errors
    ///
    /// [`ShmError::Segment`] when the block cannot be opened;
    /// [`ShmError::NotAShareableList`] when its bytes are not a valid list.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::{ShareableList, ShareableValue as V};
    ///
    /// let list = ShareableList::create(None, &[V::Float(1.5)])?;
    /// // In Python: `ShareableList(name=list.shm.name)`.
    /// let same = ShareableList::open(list.shm().name())?;
    /// assert_eq!(same.to_vec()?, vec![V::Float(1.5)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(name: &str) -> Result<Self, ShmError> {
        Self::from_shared_memory(SharedMemory::open(name)?)
    }

    /// Validates the list layout in `shm` and wraps it.
    ///
    /// # Errors
    ///
    /// [`ShmError::NotAShareableList`] with the first problem found.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::{ShareableList, ShareableValue as V, SharedMemory};
    ///
    /// let list = ShareableList::create(None, &[V::Bool(false)])?;
    /// let block = SharedMemory::open(list.shm().name())?;
    /// let same = ShareableList::from_shared_memory(block)?;
    /// assert_eq!(same.get(0)?, V::Bool(false));
    ///
    /// let zeros = SharedMemory::create(None, 8)?;
    /// zeros.write_at(0, &(-1i64).to_ne_bytes())?; // a negative item count
    /// assert!(ShareableList::from_shared_memory(zeros).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_shared_memory(shm: SharedMemory) -> Result<Self, ShmError> {
        let size = shm.size();
        let bad = ShmError::NotAShareableList;
        let n = read_i64(&shm, 0).ok_or(bad("shorter than its item count"))?;
        let n = usize::try_from(n).map_err(|_| bad("negative item count"))?;
        // Every item needs 8 offset bytes, 8 format bytes, 1 code byte: bound
        // the count by the size before allocating anything for it.
        if n > size / 17 {
            return Err(bad("item count larger than the block can hold"));
        }
        let mut offsets = Vec::with_capacity(n + 1);
        for i in 0..=n {
            let raw = read_i64(&shm, 8 * (i + 1)).ok_or(bad("offsets truncated"))?;
            let offset = usize::try_from(raw).map_err(|_| bad("negative offset"))?;
            if offsets.last().is_some_and(|&prev| offset < prev) || (i == 0 && offset != 0) {
                return Err(bad("offsets out of order"));
            }
            offsets.push(offset);
        }
        let end = ((n + 2) * 8)
            .checked_add(offsets[n])
            .and_then(|e| e.checked_add(n * (FORMAT_LEN + 1)))
            .ok_or(bad("offsets overflow"))?;
        if end > size {
            return Err(bad("data extends past the block"));
        }
        let list = Self { shm, offsets };
        for i in 0..n {
            list.get(i)?;
        }
        Ok(list)
    }

    /// The block the list lives in.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::{ShareableList, ShareableValue as V};
    ///
    /// let list = ShareableList::create(None, &[V::Int(0)])?;
    /// let name = list.shm().name().to_owned(); // what Python needs to open it
    /// assert!(!name.is_empty());
    /// assert!(list.shm().size() >= 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn shm(&self) -> &SharedMemory {
        &self.shm
    }

    /// Number of items (fixed at creation).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::{ShareableList, ShareableValue as V};
    ///
    /// let list = ShareableList::create(None, &[V::None, V::None])?;
    /// assert_eq!(list.len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Whether the list has no items.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::{ShareableList, ShareableValue as V};
    ///
    /// assert!(ShareableList::create(None, &[])?.is_empty());
    /// assert!(!ShareableList::create(None, &[V::Int(1)])?.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn data_start(&self) -> usize {
        (self.len() + 2) * 8
    }

    fn formats_start(&self) -> usize {
        self.data_start() + self.offsets[self.len()]
    }

    fn codes_start(&self) -> usize {
        self.formats_start() + self.len() * FORMAT_LEN
    }

    fn check_index(&self, index: usize) -> Result<(), ShmError> {
        if index < self.len() {
            Ok(())
        } else {
            Err(ShmError::IndexOutOfRange {
                index,
                len: self.len(),
            })
        }
    }

    /// Item `index` (a copy).
    ///
    /// # Errors
    ///
    /// [`ShmError::IndexOutOfRange`]; [`ShmError::NotAShareableList`] when
    /// the item's format or code is corrupt.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::{ShareableList, ShareableValue as V};
    ///
    /// let list = ShareableList::create(None, &[V::from("a\0\0")])?;
    /// assert_eq!(list.get(0)?, V::from("a")); // trailing NULs dropped, as in Python
    /// assert!(list.get(1).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get(&self, index: usize) -> Result<ShareableValue, ShmError> {
        self.check_index(index)?;
        let bad = ShmError::NotAShareableList;
        let mut raw = [0u8; FORMAT_LEN];
        self.shm
            .read_at(self.formats_start() + index * FORMAT_LEN, &mut raw)?;
        let format = Format::parse(&raw).ok_or(bad("unknown item format"))?;
        let slot = self.offsets[index + 1] - self.offsets[index];
        if format.size() > slot {
            return Err(bad("item format larger than its slot"));
        }
        let mut code = [0u8; 1];
        self.shm.read_at(self.codes_start() + index, &mut code)?;
        let mut value = vec![0u8; format.size()];
        self.shm
            .read_at(self.data_start() + self.offsets[index], &mut value)?;
        let word = || <[u8; 8]>::try_from(&value[..8]).expect("8-byte format");
        Ok(match (format, code[0]) {
            (Format::Int, CODE_PLAIN) => ShareableValue::Int(i64::from_ne_bytes(word())),
            (Format::Float, CODE_PLAIN) => ShareableValue::Float(f64::from_ne_bytes(word())),
            (Format::Bool, CODE_PLAIN) => ShareableValue::Bool(value[7] != 0),
            (Format::None, CODE_NONE) => ShareableValue::None,
            (Format::Bytes(_), CODE_STR) => {
                let text =
                    String::from_utf8(trim_nul(value)).map_err(|_| bad("str item is not UTF-8"))?;
                ShareableValue::Str(text)
            }
            (Format::Bytes(_), CODE_BYTES) => ShareableValue::Bytes(trim_nul(value)),
            _ => return Err(bad("item format and code disagree")),
        })
    }

    /// All items (copies).
    ///
    /// # Errors
    ///
    /// As for [`get`](Self::get).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::{ShareableList, ShareableValue as V};
    ///
    /// let items = [V::Int(-1), V::Float(2.0), V::from("x")];
    /// let list = ShareableList::create(None, &items)?;
    /// assert_eq!(list.to_vec()?, items);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_vec(&self) -> Result<Vec<ShareableValue>, ShmError> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }

    /// Replaces item `index`, with Python's rules: any type may replace any
    /// other, but a `str` or `bytes` value must fit the slot's room.
    ///
    /// # Errors
    ///
    /// [`ShmError::IndexOutOfRange`], [`ShmError::ValueTooLong`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_shm::{ShareableList, ShareableValue as V};
    ///
    /// let list = ShareableList::create(None, &[V::Int(0), V::from("12345")])?;
    /// list.set(0, V::from("yes"))?; // any type may replace any other...
    /// assert_eq!(list.get(0)?, V::from("yes"));
    /// // ...but a str needs room: "12345" got a slot of 8 bytes.
    /// list.set(1, V::from("12345678"))?;
    /// assert!(list.set(1, V::from("123456789")).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set(&self, index: usize, value: ShareableValue) -> Result<(), ShmError> {
        self.check_index(index)?;
        let slot = self.offsets[index + 1] - self.offsets[index];
        let format = match &value {
            ShareableValue::Str(s) if s.len() > slot => {
                return Err(ShmError::ValueTooLong {
                    len: s.len(),
                    capacity: slot,
                });
            }
            ShareableValue::Bytes(b) if b.len() > slot => {
                return Err(ShmError::ValueTooLong {
                    len: b.len(),
                    capacity: slot,
                });
            }
            ShareableValue::Str(_) | ShareableValue::Bytes(_) => {
                // Keep an existing string format (Python does), else use the
                // whole slot.
                let mut raw = [0u8; FORMAT_LEN];
                self.shm
                    .read_at(self.formats_start() + index * FORMAT_LEN, &mut raw)?;
                match Format::parse(&raw) {
                    Some(Format::Bytes(n)) if n <= slot => Format::Bytes(n),
                    _ => Format::Bytes(slot),
                }
            }
            other => initial_format(other),
        };
        self.store(index, &value, format)
    }

    fn store(&self, index: usize, value: &ShareableValue, format: Format) -> Result<(), ShmError> {
        self.shm
            .write_at(self.formats_start() + index * FORMAT_LEN, &format.render())?;
        self.shm
            .write_at(self.codes_start() + index, &[value.code()])?;
        let mut bytes = vec![0u8; format.size()];
        match value {
            ShareableValue::Int(v) => bytes.copy_from_slice(&v.to_ne_bytes()),
            ShareableValue::Float(v) => bytes.copy_from_slice(&v.to_ne_bytes()),
            ShareableValue::Bool(v) => bytes[7] = u8::from(*v),
            ShareableValue::None => {}
            ShareableValue::Str(s) => bytes[..s.len()].copy_from_slice(s.as_bytes()),
            ShareableValue::Bytes(b) => bytes[..b.len()].copy_from_slice(b),
        }
        self.shm
            .write_at(self.data_start() + self.offsets[index], &bytes)?;
        Ok(())
    }
}

impl fmt::Debug for ShareableList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShareableList")
            .field("name", &self.shm.name())
            .field("len", &self.len())
            .finish()
    }
}

fn initial_format(value: &ShareableValue) -> Format {
    match value {
        ShareableValue::Int(_) => Format::Int,
        ShareableValue::Float(_) => Format::Float,
        ShareableValue::Bool(_) => Format::Bool,
        ShareableValue::None => Format::None,
        ShareableValue::Str(_) | ShareableValue::Bytes(_) => Format::Bytes(value.slot_len()),
    }
}

fn read_i64(shm: &SharedMemory, offset: usize) -> Option<i64> {
    let mut raw = [0u8; 8];
    shm.read_at(offset, &mut raw).ok()?;
    Some(i64::from_ne_bytes(raw))
}

fn trim_nul(mut bytes: Vec<u8>) -> Vec<u8> {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    bytes.truncate(end);
    bytes
}
