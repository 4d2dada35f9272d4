//! The typed codec: serde values to bytes and back with bincode 2, under a
//! size limit, with typed errors.
//!
//! `bincode` is pinned to `=2.0.1`: the 3.0.0 release on the registry is an
//! empty stub that does not compile. The wire form is bincode's `standard()`
//! configuration (little-endian, variable-length integers).
//!
//! Decoding is defensive: the input length bounds what is allocated (a
//! corrupt length prefix cannot make the decoder reserve more than 128 times
//! the input), bytes
//! left over after the value are an error, and nothing panics whatever the
//! input.
//!
//! ```
//! use multiproc_core::codec::{self, Codec};
//!
//! let bytes = codec::encode(&(7u32, "seven".to_string()))?;
//! let back: (u32, String) = codec::decode(&bytes)?;
//! assert_eq!(back, (7, "seven".to_string()));
//!
//! // Garbage is a typed error.
//! assert!(codec::decode::<(u32, String)>(&[0xff; 3]).is_err());
//!
//! // So is a value over the limit.
//! let small = Codec::new().with_max_size(4);
//! assert!(small.encode(&[0u8; 16]).unwrap_err().is_too_large());
//! # Ok::<(), codec::CodecError>(())
//! ```

use bincode::config::{Configuration, standard};
use bincode::enc::write::Writer;
use bincode::error::{DecodeError, EncodeError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::os::fd::OwnedFd;

use crate::handle::{self, HandleError};

/// Default limit on an encoded value: 1 GiB. Large enough for any message a
/// queue or pipe is expected to move, small enough that a runaway value fails
/// instead of exhausting memory.
pub const DEFAULT_MAX_SIZE: usize = 1 << 30;

const CONFIG: Configuration = standard();

/// Why encoding or decoding failed.
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
    #[must_use]
    pub fn is_too_large(&self) -> bool {
        matches!(self, Self::TooLarge { .. })
    }

    /// Whether this is [`CodecError::DescriptorsUnsupported`].
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
    #[must_use]
    pub const fn new() -> Self {
        Self {
            max_size: DEFAULT_MAX_SIZE,
        }
    }

    /// The same codec with another limit on encoded and decoded sizes.
    #[must_use]
    pub const fn with_max_size(self, max_size: usize) -> Self {
        Self { max_size }
    }

    /// The limit on encoded sizes.
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
    pub fn encode_into<T: Serialize + ?Sized>(
        &self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<usize, CodecError> {
        let start = out.len();
        encode_to(value, VecOrSlice::Vec(out), self.max_size).inspect_err(|_| out.truncate(start))
    }

    /// Encodes `value` into `buf` (for writing in place, e.g. into a ring
    /// slot); returns the length used.
    ///
    /// # Errors
    ///
    /// [`CodecError::TooLarge`] when `buf` (or the limit) is too small, and as
    /// for [`encode`](Self::encode).
    pub fn encode_into_slice<T: Serialize + ?Sized>(
        &self,
        value: &T,
        buf: &mut [u8],
    ) -> Result<usize, CodecError> {
        let max = self.max_size.min(buf.len());
        encode_to(value, VecOrSlice::Slice(buf), max)
    }

    /// The length [`encode`](Self::encode) would produce, without allocating.
    ///
    /// # Errors
    ///
    /// As for [`encode`](Self::encode).
    pub fn encoded_len<T: Serialize + ?Sized>(&self, value: &T) -> Result<usize, CodecError> {
        encode_to(value, VecOrSlice::Count, self.max_size)
    }

    /// Encodes `value` and collects the descriptors of the handles in it, for
    /// a transport that ships them beside the bytes.
    ///
    /// # Errors
    ///
    /// [`CodecError::TooLarge`], [`CodecError::Handle`], [`CodecError::Encode`].
    pub fn encode_with_fds<T: Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> Result<(Vec<u8>, Vec<OwnedFd>), CodecError> {
        let mut out = Vec::new();
        let mut writer = Limited {
            out: VecOrSlice::Vec(&mut out),
            written: 0,
            max: self.max_size,
        };
        let (result, fds, failure) = handle::encode_scope_collecting(|| {
            bincode::serde::encode_into_writer(value, &mut writer, CONFIG)
        });
        let written = writer.written;
        finish_encode(result, failure, written, self.max_size)?;
        Ok((out, fds))
    }

    /// Decodes a `T` that must use all of `bytes`; a value holding handles is
    /// refused.
    ///
    /// # Errors
    ///
    /// [`CodecError::TooLarge`] for input over the limit,
    /// [`CodecError::Decode`], [`CodecError::TrailingBytes`],
    /// [`CodecError::DescriptorsUnsupported`].
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
    pub fn decode_with_fds<T: DeserializeOwned>(
        &self,
        bytes: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<T, CodecError> {
        self.decode_inner(bytes, Some(fds))
    }

    fn decode_inner<T: DeserializeOwned>(
        &self,
        bytes: &[u8],
        fds: Option<Vec<OwnedFd>>,
    ) -> Result<T, CodecError> {
        if bytes.len() > self.max_size {
            return Err(CodecError::TooLarge { max: self.max_size });
        }
        let (result, failure) = handle::decode_scope(fds, || decode_bounded::<T>(bytes));
        match (result, failure) {
            (Ok((value, used)), None) if used == bytes.len() => Ok(value),
            (Ok((_, used)), None) => Err(CodecError::TrailingBytes {
                used,
                len: bytes.len(),
            }),
            (_, Some(HandleError::NoTransport)) => Err(CodecError::DescriptorsUnsupported),
            (_, Some(err)) => Err(CodecError::Handle(err)),
            (Err(err), None) => Err(CodecError::Decode(err)),
        }
    }
}

// Inlined: passed through memory, the result's halves were written by the
// caller with narrower stores than they are read with here, a stall on
// every encode.
#[inline]
fn finish_encode(
    result: Result<(), EncodeError>,
    failure: Option<HandleError>,
    written: usize,
    max: usize,
) -> Result<usize, CodecError> {
    match (result, failure) {
        (Ok(()), _) => Ok(written),
        (Err(_), Some(HandleError::NoTransport)) => Err(CodecError::DescriptorsUnsupported),
        (Err(_), Some(err)) => Err(CodecError::Handle(err)),
        (Err(EncodeError::UnexpectedEnd), None) => Err(CodecError::TooLarge { max }),
        (Err(err), None) => Err(CodecError::Encode(err)),
    }
}

/// Encodes `value` into `out`, at most `max` bytes, with no descriptor
/// table; returns the length written.
fn encode_to<T: Serialize + ?Sized>(
    value: &T,
    out: VecOrSlice<'_>,
    max: usize,
) -> Result<usize, CodecError> {
    let mut writer = Limited {
        out,
        written: 0,
        max,
    };
    let (result, failure) =
        handle::encode_scope(|| bincode::serde::encode_into_writer(value, &mut writer, CONFIG));
    finish_encode(result, failure, writer.written, max)
}

/// Decodes with a bincode byte limit that keeps a corrupt length prefix from
/// allocating more than 128 times the input.
///
/// bincode allocates a string or byte buffer as soon as it has read the
/// length prefix, before it knows the input holds that many bytes; its limit
/// is what stops a prefix from asking for terabytes. The limit counts the
/// in-memory size of every primitive (a `u128` in one varint byte claims 16),
/// so a valid input claims at most 16 times its length: each tier's limit is
/// 16 times its largest input and no tier rejects valid input. The limit is a
/// type parameter, hence the tiers (8 apart).
fn decode_bounded<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), DecodeError> {
    use bincode::serde::decode_from_slice as from;
    const K: usize = 1 << 10;
    const M: usize = 1 << 20;
    const G: usize = 1 << 30;
    match bytes.len() {
        0..=4096 => from(bytes, CONFIG.with_limit::<{ 16 * 4 * K }>()),
        4097..=32768 => from(bytes, CONFIG.with_limit::<{ 16 * 32 * K }>()),
        32769..=262_144 => from(bytes, CONFIG.with_limit::<{ 16 * 256 * K }>()),
        262_145..=2_097_152 => from(bytes, CONFIG.with_limit::<{ 16 * 2 * M }>()),
        2_097_153..=16_777_216 => from(bytes, CONFIG.with_limit::<{ 16 * 16 * M }>()),
        16_777_217..=134_217_728 => from(bytes, CONFIG.with_limit::<{ 16 * 128 * M }>()),
        134_217_729..=1_073_741_824 => from(bytes, CONFIG.with_limit::<{ 16 * G }>()),
        _ => from(bytes, CONFIG.with_limit::<{ usize::MAX }>()),
    }
}

enum VecOrSlice<'a> {
    Vec(&'a mut Vec<u8>),
    Slice(&'a mut [u8]),
    Count,
}

/// Capacity of an encoding buffer at its first byte: most messages fit, so
/// they cost one allocation instead of a chain of small reallocations (and
/// an empty encoding costs none).
const FIRST_CAPACITY: usize = 64;

/// A bincode writer that stops at `max` bytes, so an oversized value fails
/// early instead of growing a buffer without bound.
struct Limited<'a> {
    out: VecOrSlice<'a>,
    written: usize,
    max: usize,
}

impl Writer for Limited<'_> {
    // Inlined: serde hands a `Vec<u8>` over one byte at a time, each a call.
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let end = self
            .written
            .checked_add(bytes.len())
            .filter(|&end| end <= self.max)
            .ok_or(EncodeError::UnexpectedEnd)?;
        match &mut self.out {
            VecOrSlice::Vec(out) => {
                if out.capacity() == 0 {
                    out.reserve(bytes.len().max(FIRST_CAPACITY));
                }
                out.extend_from_slice(bytes);
            }
            VecOrSlice::Slice(out) => out[self.written..end].copy_from_slice(bytes),
            VecOrSlice::Count => {}
        }
        self.written = end;
        Ok(())
    }
}

/// Encodes with the default [`Codec`].
///
/// # Errors
///
/// See [`Codec::encode`].
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Codec::new().encode(value)
}

/// Decodes with the default [`Codec`].
///
/// # Errors
///
/// See [`Codec::decode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Codec::new().decode(bytes)
}

/// Encodes with descriptors, with the default [`Codec`].
///
/// # Errors
///
/// See [`Codec::encode_with_fds`].
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
pub fn decode_with_fds<T: DeserializeOwned>(
    bytes: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<T, CodecError> {
    Codec::new().decode_with_fds(bytes, fds)
}
