//! What the wire layer reports when a value cannot be written or read.

use std::fmt;

/// Why a value could not be encoded (besides its size or its handles, which
/// [`CodecError`](super::CodecError) reports on its own).
///
/// # Examples
///
/// ```
/// use multiproc_core::codec::{self, CodecError, EncodeError};
///
/// // A sequence must say its length up front: the wire form starts with it.
/// struct Unsized;
/// impl serde::Serialize for Unsized {
///     fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
///         use serde::ser::SerializeSeq;
///         s.serialize_seq(None)?.end()
///     }
/// }
/// let err = codec::encode(&Unsized).unwrap_err();
/// assert!(matches!(err, CodecError::Encode(EncodeError::SequenceMustHaveLength)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// A sequence or map did not give its length before its elements.
    SequenceMustHaveLength,
    /// The value's `Serialize` implementation failed with this message.
    Custom(String),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SequenceMustHaveLength => f.write_str("a sequence or map has no length"),
            Self::Custom(msg) => write!(f, "serialize failed: {msg}"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// Why bytes are not a valid encoding of the type asked for.
///
/// # Examples
///
/// ```
/// use multiproc_core::codec::{self, CodecError, DecodeError};
///
/// let err = codec::decode::<bool>(&[2]).unwrap_err();
/// assert!(matches!(err, CodecError::Decode(DecodeError::InvalidBool(2))));
///
/// // A length that promises more bytes than there are.
/// let err = codec::decode::<String>(&[200, b'a']).unwrap_err();
/// assert!(matches!(err, CodecError::Decode(DecodeError::UnexpectedEnd)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended inside a value.
    UnexpectedEnd,
    /// A `bool` byte other than 0 or 1.
    InvalidBool(u8),
    /// An `Option` tag other than 0 or 1.
    InvalidOptionTag(u8),
    /// A `char` that is not one UTF-8 encoded scalar value.
    InvalidChar,
    /// A string that is not UTF-8.
    InvalidUtf8,
    /// An integer's first byte announces a width the type cannot hold (or
    /// is the reserved 255).
    InvalidIntegerTag(u8),
    /// A length that does not fit in `usize`.
    LengthOutOfRange(u64),
    /// Values nest deeper than [`MAX_DEPTH`](super::MAX_DEPTH).
    TooDeep,
    /// More elements that take no bytes than
    /// [`MAX_EMPTY_ELEMENTS`](super::MAX_EMPTY_ELEMENTS): a length prefix
    /// alone cannot make the decoder loop for ever.
    TooManyEmptyElements,
    /// The type asks for something the format does not record (e.g.
    /// `deserialize_any`: the bytes do not describe themselves).
    Unsupported(&'static str),
    /// The type's `Deserialize` implementation failed with this message.
    Custom(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnexpectedEnd => f.write_str("input ended inside a value"),
            Self::InvalidBool(b) => write!(f, "invalid bool byte {b}"),
            Self::InvalidOptionTag(b) => write!(f, "invalid option tag {b}"),
            Self::InvalidChar => f.write_str("invalid char encoding"),
            Self::InvalidUtf8 => f.write_str("string is not UTF-8"),
            Self::InvalidIntegerTag(b) => write!(f, "integer tag {b} too wide for the type"),
            Self::LengthOutOfRange(len) => write!(f, "length {len} does not fit in usize"),
            Self::TooDeep => f.write_str("values nest too deep"),
            Self::TooManyEmptyElements => f.write_str("too many elements that take no bytes"),
            Self::Unsupported(what) => write!(f, "{what} is not supported by the format"),
            Self::Custom(msg) => write!(f, "deserialize failed: {msg}"),
        }
    }
}

impl std::error::Error for DecodeError {}

impl serde::de::Error for DecodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::Custom(msg.to_string())
    }
}

/// An encode stops for a reason of the format or because the output is full
/// (which [`CodecError::TooLarge`](super::CodecError::TooLarge) reports).
#[derive(Debug)]
pub(super) enum SerError {
    Full,
    Wire(EncodeError),
}

impl fmt::Display for SerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full => f.write_str("output full"),
            Self::Wire(err) => err.fmt(f),
        }
    }
}

impl std::error::Error for SerError {}

impl serde::ser::Error for SerError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::Wire(EncodeError::Custom(msg.to_string()))
    }
}
