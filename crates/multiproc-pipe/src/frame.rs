//! The frame format of Python's `multiprocessing.connection` on POSIX.
//!
//! A frame is a length header followed by that many payload bytes:
//!
//! | payload length `n` | header |
//! |---|---|
//! | `n <= 0x7fff_ffff` | 4 bytes, big-endian signed (`struct` format `!i`) |
//! | larger | `FF FF FF FF` (-1 as `!i`), then 8 bytes big-endian unsigned (`!Q`) |
//!
//! CPython writes the long form only above `0x7fff_ffff`, but reads a long
//! header for any length, so [`parse_header`] accepts both for every size.
//! A negative short length other than -1 is malformed; CPython would read it
//! as an empty message, this crate refuses it (see
//! `reference/python-wire.md`, "Connection framing").

use crate::error::RecvError;

/// Largest payload the 4-byte header can describe; longer payloads use the
/// 12-byte form.
pub const SHORT_MAX: usize = 0x7fff_ffff;

/// Longest header: -1 marker plus the 8-byte length.
pub(crate) const MAX_HEADER: usize = 12;

/// Writes the header for a payload of `len` bytes into `out`; returns how many
/// of its bytes are the header (4 or 12).
pub(crate) fn encode_header(len: usize, out: &mut [u8; MAX_HEADER]) -> usize {
    if len <= SHORT_MAX {
        // Fits in `!i`: the cast cannot truncate.
        out[..4].copy_from_slice(&(len as u32).to_be_bytes());
        4
    } else {
        out[..4].copy_from_slice(&(-1i32).to_be_bytes());
        out[4..].copy_from_slice(&(len as u64).to_be_bytes());
        MAX_HEADER
    }
}

/// What [`parse_header`] found at the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// A complete header: its length and the payload length it announces,
    /// already checked against the limit.
    Frame {
        header_len: usize,
        payload_len: usize,
    },
    /// The buffer holds only part of a header; this many bytes are needed.
    Need(usize),
}

/// Parses the header at the start of `buf` and checks the payload length
/// against `max`. Never allocates and never panics.
///
/// # Errors
///
/// [`RecvError::BadMessageLength`] for a negative length other than the -1
/// marker, or a length over `max`.
pub(crate) fn parse_header(buf: &[u8], max: usize) -> Result<Parsed, RecvError> {
    let Some(short) = buf.first_chunk::<4>() else {
        return Ok(Parsed::Need(4));
    };
    let short = i32::from_be_bytes(*short);
    let (header_len, claimed) = if short == -1 {
        let Some(long) = buf.get(4..MAX_HEADER) else {
            return Ok(Parsed::Need(MAX_HEADER));
        };
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(long);
        (MAX_HEADER, i128::from(u64::from_be_bytes(bytes)))
    } else {
        (4, i128::from(short))
    };
    match usize::try_from(claimed) {
        Ok(payload_len) if payload_len <= max => Ok(Parsed::Frame {
            header_len,
            payload_len,
        }),
        _ => Err(RecvError::BadMessageLength { claimed, max }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_headers_round_trip() {
        let mut out = [0u8; MAX_HEADER];
        for len in [0usize, 1, 255, 65536, SHORT_MAX] {
            let n = encode_header(len, &mut out);
            assert_eq!(n, 4);
            assert_eq!(
                parse_header(&out[..n], usize::MAX).unwrap(),
                Parsed::Frame {
                    header_len: 4,
                    payload_len: len
                }
            );
        }
        let n = encode_header(SHORT_MAX + 1, &mut out);
        assert_eq!(n, 12);
        assert_eq!(&out[..4], &[0xff; 4]);
        assert_eq!(
            parse_header(&out, usize::MAX).unwrap(),
            Parsed::Frame {
                header_len: 12,
                payload_len: SHORT_MAX + 1
            }
        );
    }

    #[test]
    fn partial_headers_ask_for_more() {
        assert_eq!(parse_header(&[], 10).unwrap(), Parsed::Need(4));
        assert_eq!(parse_header(&[0, 0], 10).unwrap(), Parsed::Need(4));
        assert_eq!(parse_header(&[0xff; 7], 10).unwrap(), Parsed::Need(12));
    }

    #[test]
    fn bad_lengths_are_errors() {
        assert!(matches!(
            parse_header(&[0, 0, 0, 11], 10),
            Err(RecvError::BadMessageLength {
                claimed: 11,
                max: 10
            })
        ));
        assert!(matches!(
            parse_header(&(-2i32).to_be_bytes(), 10),
            Err(RecvError::BadMessageLength { claimed: -2, .. })
        ));
        assert!(matches!(
            parse_header(&[0xff; 12], 1 << 40),
            Err(RecvError::BadMessageLength { claimed, .. }) if claimed == i128::from(u64::MAX)
        ));
    }
}
