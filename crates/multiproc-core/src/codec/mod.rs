//! The typed codec: serde values to bytes and back, under a size limit, with
//! typed errors.
//!
//! # Wire form
//!
//! bincode 2's `standard()` configuration, byte for byte: integers wider
//! than a byte as variable-length integers (below 251 one byte; otherwise a
//! tag 251, 252, 253 or 254 and a little-endian `u16`, `u32`, `u64` or
//! `u128`; signed values zigzagged first), `u8`, `i8` and `bool` as one
//! byte, floats little-endian, `char` as its UTF-8 bytes, strings, byte
//! strings, sequences and maps as a length then their contents, `Option` as
//! a 0 or 1 byte then the value, enum variants as their index, structs and
//! tuples as their fields in order. The crate's tests check the encoding
//! against bincode's own.
//!
//! The serializer and deserializer are the crate's own so that a sequence
//! of plain elements (`Vec<u8>`, `Vec<f32>`, `Vec<f64>`, `&[u8]`, … at any
//! depth in a value) moves with one copy instead of one call per element.
//!
//! Decoding is defensive: a length is checked against the input before
//! anything is allocated for it, bytes left over after the value are an
//! error, nesting is bounded by [`MAX_DEPTH`], a length alone cannot make
//! it loop ([`MAX_EMPTY_ELEMENTS`]), and nothing panics whatever the input.
//!
//! ```
//! use multiproc_core::codec::{self, Codec};
//!
//! let bytes = codec::encode(&(7u32, "seven".to_string()))?;
//! let back: (u32, String) = codec::decode(&bytes)?;
//! assert_eq!(back, (7, "seven".to_string()));
//!
//! // The wire form: 7 is one byte, the string a length and its bytes.
//! assert_eq!(bytes, b"\x07\x05seven");
//!
//! // Garbage is a typed error.
//! assert!(codec::decode::<(u32, String)>(&[0xff; 3]).is_err());
//!
//! // So is a value over the limit.
//! let small = Codec::new().with_max_size(4);
//! assert!(small.encode(&[0u8; 16]).unwrap_err().is_too_large());
//! # Ok::<(), codec::CodecError>(())
//! ```

mod de;
mod error;
mod plain;
mod ser;
mod sink;
mod utf8;
mod varint;

pub use de::{MAX_DEPTH, MAX_EMPTY_ELEMENTS};
pub use error::{DecodeError, EncodeError};

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::os::fd::OwnedFd;

use crate::handle::{self, HandleError};
use error::SerError;
use sink::{CountSink, Sink, SliceSink, SpillSink, VecSink};

/// Default limit on an encoded value: 1 GiB. Large enough for any message a
/// queue or pipe is expected to move, small enough that a runaway value fails
/// instead of exhausting memory.
pub const DEFAULT_MAX_SIZE: usize = 1 << 30;

/// Why encoding or decoding failed.
///
/// # Examples
///
/// ```
/// use multiproc_core::codec::{self, Codec, CodecError};
///
/// let err = Codec::new().with_max_size(2).encode(&"too long").unwrap_err();
/// assert!(matches!(err, CodecError::TooLarge { max: 2 }));
///
/// let err = codec::decode::<u8>(&[1, 2]).unwrap_err();
/// assert!(matches!(err, CodecError::TrailingBytes { used: 1, len: 2 }));
///
/// let err = codec::decode::<bool>(&[7]).unwrap_err();
/// assert!(matches!(err, CodecError::Decode(codec::DecodeError::InvalidBool(7))));
///
/// let (a, _b) = multiproc_core::scm::stream_pair()?;
/// let err = codec::encode(&multiproc_core::SharedFd::from(a)).unwrap_err();
/// assert!(matches!(err, CodecError::DescriptorsUnsupported));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum CodecError {
    /// The encoded value is larger than the limit (or than the buffer given
    /// to [`Codec::encode_into_slice`]).
    TooLarge {
        /// The limit that was hit.
        max: usize,
    },
    /// The value contains a handle (a descriptor) and the transport cannot
    /// carry descriptors.
    DescriptorsUnsupported,
    /// A descriptor reference in the message is invalid.
    Handle(HandleError),
    /// The value's `Serialize` failed.
    Encode(EncodeError),
    /// The bytes are not a valid encoding of the type.
    Decode(DecodeError),
    /// The value ended before the bytes did.
    TrailingBytes {
        /// Bytes the value used.
        used: usize,
        /// Bytes there were.
        len: usize,
    },
}

impl CodecError {
    /// Whether this is [`CodecError::TooLarge`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Codec;
    ///
    /// let tiny = Codec::new().with_max_size(1);
    /// assert!(tiny.encode(&1000u64).unwrap_err().is_too_large());
    /// assert!(tiny.encode(&1u8).is_ok());
    /// ```
    #[must_use]
    pub fn is_too_large(&self) -> bool {
        matches!(self, Self::TooLarge { .. })
    }

    /// Whether this is [`CodecError::DescriptorsUnsupported`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::{codec, Segment};
    ///
    /// let segment = Segment::anonymous(64)?;
    /// // Plain `encode` has nowhere to put the descriptor.
    /// assert!(codec::encode(&segment).unwrap_err().is_descriptors_unsupported());
    /// assert!(codec::encode_with_fds(&segment).is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn is_descriptors_unsupported(&self) -> bool {
        matches!(self, Self::DescriptorsUnsupported)
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { max } => write!(f, "encoded value exceeds {max} bytes"),
            Self::DescriptorsUnsupported => {
                f.write_str("value holds file descriptors but the transport cannot carry them")
            }
            Self::Handle(_) => f.write_str("invalid descriptor reference in message"),
            Self::Encode(_) => f.write_str("encoding failed"),
            Self::Decode(_) => f.write_str("decoding failed"),
            Self::TrailingBytes { used, len } => {
                write!(f, "value used {used} of {len} bytes")
            }
        }
    }
}

impl std::error::Error for CodecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Handle(err) => Some(err),
            Self::Encode(err) => Some(err),
            Self::Decode(err) => Some(err),
            _ => None,
        }
    }
}

impl From<CodecError> for std::io::Error {
    fn from(err: CodecError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, err)
    }
}

/// A codec with a size limit; the free functions use [`Codec::new`].
///
/// # Examples
///
/// ```
/// use multiproc_core::Codec;
///
/// let codec = Codec::new().with_max_size(64);
/// let bytes = codec.encode(&vec![1u16, 2, 3])?;
/// assert_eq!(codec.decode::<Vec<u16>>(&bytes)?, vec![1, 2, 3]);
/// assert_eq!(Codec::default(), Codec::new());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Codec {
    max_size: usize,
}

impl Default for Codec {
    fn default() -> Self {
        Self::new()
    }
}

impl Codec {
    /// A codec with the [`DEFAULT_MAX_SIZE`] limit.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::codec::{Codec, DEFAULT_MAX_SIZE};
    ///
    /// const CODEC: Codec = Codec::new(); // usable in constants
    /// assert_eq!(CODEC.max_size(), DEFAULT_MAX_SIZE);
    /// ```
    #[must_use]
    pub const fn new() -> Self {
        Self {
            max_size: DEFAULT_MAX_SIZE,
        }
    }

    /// The same codec with another limit on encoded and decoded sizes.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Codec;
    ///
    /// let small = Codec::new().with_max_size(8);
    /// assert!(small.encode(&[0u8; 4]).is_ok());
    /// assert!(small.encode(&[0u8; 9]).is_err());
    /// assert!(small.decode::<Vec<u8>>(&[0u8; 9]).is_err()); // input over the limit
    /// ```
    #[must_use]
    pub const fn with_max_size(self, max_size: usize) -> Self {
        Self { max_size }
    }

    /// The limit on encoded sizes.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Codec;
    ///
    /// assert_eq!(Codec::new().with_max_size(4096).max_size(), 4096);
    /// ```
    #[must_use]
    pub const fn max_size(&self) -> usize {
        self.max_size
    }

    /// Encodes `value`; a value holding descriptors is refused.
    ///
    /// # Errors
    ///
    /// [`CodecError::TooLarge`], [`CodecError::DescriptorsUnsupported`],
    /// [`CodecError::Encode`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Codec;
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize, Debug, PartialEq)]
    /// struct Job {
    ///     id: u32,
    ///     args: Vec<String>,
    /// }
    ///
    /// let codec = Codec::new();
    /// let job = Job { id: 7, args: vec!["-v".into()] };
    /// let bytes = codec.encode(&job)?;
    /// assert_eq!(codec.decode::<Job>(&bytes)?, job);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::new();
        self.encode_into(value, &mut out)?;
        Ok(out)
    }

    /// Appends the encoding of `value` to `out`; returns its length. On error
    /// `out` is left as it was.
    ///
    /// # Errors
    ///
    /// As for [`encode`](Self::encode).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Codec;
    ///
    /// let codec = Codec::new().with_max_size(4);
    /// let mut out = b"hdr".to_vec();
    /// let n = codec.encode_into(&300u32, &mut out)?;
    /// assert_eq!(out.len(), 3 + n);
    /// assert_eq!(codec.decode::<u32>(&out[3..])?, 300);
    ///
    /// // A failed encode leaves `out` untouched.
    /// assert!(codec.encode_into(&[0u8; 10], &mut out).is_err());
    /// assert_eq!(out.len(), 3 + n);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn encode_into<T: Serialize + ?Sized>(
        &self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<usize, CodecError> {
        let start = out.len();
        encode_to(value, &mut VecSink::new(out, self.max_size), self.max_size)
            .inspect_err(|_| out.truncate(start))
    }

    /// Encodes `value` into `buf` (for writing in place, e.g. into a ring
    /// slot); returns the length used.
    ///
    /// # Errors
    ///
    /// [`CodecError::TooLarge`] when `buf` (or the limit) is too small, and as
    /// for [`encode`](Self::encode).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Codec;
    ///
    /// let codec = Codec::new();
    /// let mut slot = [0u8; 16];
    /// let n = codec.encode_into_slice(&("id", 5u8), &mut slot)?;
    /// assert_eq!(codec.decode::<(String, u8)>(&slot[..n])?, ("id".to_string(), 5));
    /// assert!(codec.encode_into_slice(&[1u8; 32], &mut slot).unwrap_err().is_too_large());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn encode_into_slice<T: Serialize + ?Sized>(
        &self,
        value: &T,
        buf: &mut [u8],
    ) -> Result<usize, CodecError> {
        let max = self.max_size.min(buf.len());
        encode_to(value, &mut SliceSink::new(buf, max), max)
    }

    /// The length [`encode`](Self::encode) would produce, without allocating.
    ///
    /// # Errors
    ///
    /// As for [`encode`](Self::encode).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Codec;
    ///
    /// let codec = Codec::new();
    /// let value = vec![10u64, 20, 30];
    /// assert_eq!(codec.encoded_len(&value)?, codec.encode(&value)?.len());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn encoded_len<T: Serialize + ?Sized>(&self, value: &T) -> Result<usize, CodecError> {
        encode_to(value, &mut CountSink::new(self.max_size), self.max_size)
    }

    /// Encodes `value` and collects the descriptors of the handles in it, for
    /// a transport that ships them beside the bytes.
    ///
    /// # Errors
    ///
    /// [`CodecError::TooLarge`], [`CodecError::Handle`], [`CodecError::Encode`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::{Codec, Segment};
    ///
    /// let codec = Codec::new();
    /// let segments = vec![Segment::anonymous(16)?, Segment::anonymous(16)?];
    /// let (bytes, fds) = codec.encode_with_fds(&segments)?;
    /// assert_eq!(fds.len(), 2); // one descriptor per segment, beside the bytes
    /// let back: Vec<Segment> = codec.decode_with_fds(&bytes, fds)?;
    /// assert_eq!(back.len(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn encode_with_fds<T: Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> Result<(Vec<u8>, Vec<OwnedFd>), CodecError> {
        let mut out = Vec::new();
        let (_, fds) = self.encode_with_fds_into(value, &mut out)?;
        Ok((out, fds))
    }

    /// [`encode_with_fds`](Self::encode_with_fds), appending to `out` (a
    /// buffer kept between messages); returns the encoding's length and
    /// the descriptors. On error `out` is left as it was.
    ///
    /// # Errors
    ///
    /// As for [`encode_with_fds`](Self::encode_with_fds).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::{Codec, Segment};
    ///
    /// let codec = Codec::new();
    /// let mut frame = b"header".to_vec();
    /// let (len, fds) = codec.encode_with_fds_into(&Segment::anonymous(16)?, &mut frame)?;
    /// assert_eq!(frame.len(), 6 + len);
    /// assert_eq!(fds.len(), 1);
    /// let _copy: Segment = codec.decode_with_fds(&frame[6..], fds)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn encode_with_fds_into<T: Serialize + ?Sized>(
        &self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(usize, Vec<OwnedFd>), CodecError> {
        let start = out.len();
        let mut sink = VecSink::new(out, self.max_size);
        let (result, fds, failure) =
            handle::encode_scope_collecting(|| ser::encode(value, &mut sink));
        let written = sink.written();
        match finish_encode(result, failure, written, self.max_size) {
            Ok(len) => Ok((len, fds)),
            Err(err) => {
                out.truncate(start);
                Err(err)
            }
        }
    }

    /// [`encode_with_fds_into`](Self::encode_with_fds_into) into `first`
    /// (a reserved ring span, say) when the encoding fits there, else
    /// appended to `spill`, what was written into `first` copied over
    /// first: the value is serialized once either way, which matters to a
    /// `Serialize` impl with side effects. Returns where it went and its
    /// length, and the descriptors. On error `spill` is left as it was.
    ///
    /// # Errors
    ///
    /// As for [`encode_with_fds`](Self::encode_with_fds).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::codec::{Codec, Encoded};
    ///
    /// let codec = Codec::new();
    /// let mut slot = [0u8; 16];
    /// let mut spill = Vec::new();
    /// let (at, fds) = codec.encode_with_fds_spilling(&7u32, &mut slot, &mut spill)?;
    /// assert_eq!((at, fds.len(), spill.len()), (Encoded::InPlace(1), 0, 0));
    ///
    /// let long = vec![9u8; 100];
    /// let (at, _) = codec.encode_with_fds_spilling(&long, &mut slot, &mut spill)?;
    /// assert_eq!(at, Encoded::Spilled(spill.len()));
    /// assert_eq!(codec.decode::<Vec<u8>>(&spill)?, long);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn encode_with_fds_spilling<T: Serialize + ?Sized>(
        &self,
        value: &T,
        first: &mut [u8],
        spill: &mut Vec<u8>,
    ) -> Result<(Encoded, Vec<OwnedFd>), CodecError> {
        let start = spill.len();
        let mut sink = SpillSink::new(first, spill, self.max_size);
        let (result, fds, failure) =
            handle::encode_scope_collecting(|| ser::encode(value, &mut sink));
        let written = sink.written();
        let spilled = sink.spilled();
        match finish_encode(result, failure, written, self.max_size) {
            Ok(len) if spilled => Ok((Encoded::Spilled(len), fds)),
            Ok(len) => Ok((Encoded::InPlace(len), fds)),
            Err(err) => {
                spill.truncate(start);
                Err(err)
            }
        }
    }

    /// Decodes a `T` that must use all of `bytes`; a value holding handles is
    /// refused.
    ///
    /// # Errors
    ///
    /// [`CodecError::TooLarge`] for input over the limit,
    /// [`CodecError::Decode`], [`CodecError::TrailingBytes`],
    /// [`CodecError::DescriptorsUnsupported`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Codec;
    ///
    /// let codec = Codec::new();
    /// let bytes = codec.encode(&Some(-5i64))?;
    /// assert_eq!(codec.decode::<Option<i64>>(&bytes)?, Some(-5));
    /// assert!(codec.decode::<Option<i64>>(&bytes[..1]).is_err()); // cut short
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        self.decode_inner(bytes, None)
    }

    /// Decodes a `T` whose handles take their descriptors from `fds`.
    /// Descriptors the value does not claim are closed.
    ///
    /// # Errors
    ///
    /// As for [`decode`](Self::decode), and [`CodecError::Handle`] for a bad
    /// descriptor index.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::{Codec, Segment};
    ///
    /// let codec = Codec::new();
    /// let segment = Segment::anonymous(8)?;
    /// segment.write_at(0, b"via fd")?;
    /// let (bytes, fds) = codec.encode_with_fds(&segment)?;
    /// let copy: Segment = codec.decode_with_fds(&bytes, fds)?;
    /// let mut buf = [0u8; 6];
    /// copy.read_at(0, &mut buf)?;
    /// assert_eq!(&buf, b"via fd");
    ///
    /// // Without its descriptor the message is refused.
    /// assert!(codec.decode_with_fds::<Segment>(&bytes, Vec::new()).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn decode_with_fds<T: DeserializeOwned>(
        &self,
        bytes: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<T, CodecError> {
        self.decode_inner(bytes, Some(fds))
    }

    #[inline]
    fn decode_inner<T: DeserializeOwned>(
        &self,
        bytes: &[u8],
        fds: Option<Vec<OwnedFd>>,
    ) -> Result<T, CodecError> {
        if bytes.len() > self.max_size {
            return Err(CodecError::TooLarge { max: self.max_size });
        }
        let (result, failure) = handle::decode_scope(fds, || de::decode::<T>(bytes));
        match (result, failure) {
            (Ok((value, used)), None) if used == bytes.len() => Ok(value),
            (Ok((_, used)), None) => Err(CodecError::TrailingBytes {
                used,
                len: bytes.len(),
            }),
            (_, Some(err)) => Err(handle_error(err)),
            (Err(err), None) => Err(CodecError::Decode(err)),
        }
    }
}

/// The codec's error for a handle that failed to encode or decode.
#[cold]
fn handle_error(err: HandleError) -> CodecError {
    match err {
        HandleError::NoTransport => CodecError::DescriptorsUnsupported,
        err => CodecError::Handle(err),
    }
}

// Inlined: passed through memory, the result's halves were written by the
// caller with narrower stores than they are read with here, a stall on
// every encode.
#[inline]
fn finish_encode(
    result: Result<(), SerError>,
    failure: Option<HandleError>,
    written: usize,
    max: usize,
) -> Result<usize, CodecError> {
    match (result, failure) {
        (Ok(()), _) => Ok(written),
        (Err(_), Some(err)) => Err(handle_error(err)),
        (Err(SerError::Full), None) => Err(CodecError::TooLarge { max }),
        (Err(SerError::Wire(err)), None) => Err(CodecError::Encode(err)),
    }
}

/// Encodes `value` into `sink` (which stops at `max` bytes), with no
/// descriptor table; returns the length written.
#[inline]
fn encode_to<T: Serialize + ?Sized, S: Sink>(
    value: &T,
    sink: &mut S,
    max: usize,
) -> Result<usize, CodecError> {
    let (result, failure) = handle::encode_scope(|| ser::encode(value, sink));
    finish_encode(result, failure, sink.written(), max)
}

/// Where [`Codec::encode_with_fds_spilling`] put a value, and its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoded {
    /// At the start of the slice.
    InPlace(usize),
    /// At the end of the vector (the slice was too short).
    Spilled(usize),
}

/// Encodes with the default [`Codec`].
///
/// # Errors
///
/// See [`Codec::encode`].
///
/// # Examples
///
/// ```
/// let bytes = multiproc_core::codec::encode(&[1u8, 2, 3])?;
/// assert_eq!(multiproc_core::codec::decode::<[u8; 3]>(&bytes)?, [1, 2, 3]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Codec::new().encode(value)
}

/// Decodes with the default [`Codec`].
///
/// # Errors
///
/// See [`Codec::decode`].
///
/// # Examples
///
/// ```
/// use multiproc_core::codec;
///
/// let bytes = codec::encode(&("key", 1.5f64))?;
/// let (key, value): (String, f64) = codec::decode(&bytes)?;
/// assert_eq!((key.as_str(), value), ("key", 1.5));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Codec::new().decode(bytes)
}

/// Encodes with descriptors, with the default [`Codec`].
///
/// # Errors
///
/// See [`Codec::encode_with_fds`].
///
/// # Examples
///
/// ```
/// use multiproc_core::{codec, SharedFd};
///
/// let (a, _b) = multiproc_core::scm::stream_pair()?;
/// let (bytes, fds) = codec::encode_with_fds(&SharedFd::from(a))?;
/// assert_eq!(fds.len(), 1);
/// assert!(!bytes.is_empty()); // the descriptor's index, not its number
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn encode_with_fds<T: Serialize + ?Sized>(
    value: &T,
) -> Result<(Vec<u8>, Vec<OwnedFd>), CodecError> {
    Codec::new().encode_with_fds(value)
}

/// Decodes with descriptors, with the default [`Codec`].
///
/// # Errors
///
/// See [`Codec::decode_with_fds`].
///
/// # Examples
///
/// ```
/// use multiproc_core::{codec, SharedFd};
/// use std::io::{Read, Write};
/// use std::os::unix::net::UnixStream;
///
/// let (a, b) = multiproc_core::scm::stream_pair()?;
/// let (bytes, fds) = codec::encode_with_fds(&(SharedFd::from(a), "end a"))?;
/// let (fd, label): (SharedFd, String) = codec::decode_with_fds(&bytes, fds)?;
/// assert_eq!(label, "end a");
///
/// // The decoded descriptor is a working end of the pair.
/// UnixStream::from(fd.into_inner()).write_all(b"hi")?;
/// let mut buf = [0u8; 2];
/// UnixStream::from(b).read_exact(&mut buf)?;
/// assert_eq!(&buf, b"hi");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn decode_with_fds<T: DeserializeOwned>(
    bytes: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<T, CodecError> {
    Codec::new().decode_with_fds(bytes, fds)
}
