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
//!
//! # Tokens
//!
//! Between the two ends of a [`Pipe::new`](crate::Pipe::new) pair (and
//! nowhere else), a large payload may travel through shared memory (see
//! the `lane` module); the stream then carries a *token* in its place:
//!
//! | bytes | content |
//! |---|---|
//! | 4 | `FF FF FF FE` (-2 as `!i`) |
//! | 8 | big-endian: the ring position just past the payload |
//! | 8 | big-endian: the payload length |
//!
//! A connection without a ring reads the -2 as the malformed length it is.
//!
//! A payload sent in pieces (see the `lane` module, "Pieces") is a run of
//! *piece* frames, laid out as tokens but marked `FF FF FF FD` (-3), each
//! naming one piece, and then the message's last part: a token, or an
//! ordinary frame when the ring had no room for it. The message is the
//! pieces and the last part, in order; nothing else comes between them.
//!
//! A *doorbell* is the 4 bytes `FF FF FF FC` (-4) alone: no message, only
//! a wake-up for a receiver that may sleep while a small message waits in
//! its mailbox (see the `lane` module's `mailbox`). Where tokens are read
//! it is skipped; elsewhere it is the malformed length it is.

use crate::error::RecvError;

/// Largest payload the 4-byte header can describe; longer payloads use the
/// 12-byte form.
pub const SHORT_MAX: usize = 0x7fff_ffff;

/// Longest header: -1 marker plus the 8-byte length.
pub(crate) const MAX_HEADER: usize = 12;

/// The short length that starts a token.
const TOKEN_MARKER: i32 = -2;

/// The short length that starts a piece: a token whose message goes on
/// in the next frame.
const PIECE_MARKER: i32 = -3;

/// The short length that is a doorbell.
const DOORBELL_MARKER: i32 = -4;

/// A doorbell frame.
pub(crate) const DOORBELL: [u8; 4] = DOORBELL_MARKER.to_be_bytes();

/// Bytes of a token frame: marker, end position, length.
pub(crate) const TOKEN_FRAME: usize = 20;

/// A payload placed in shared memory: it is the `len` bytes of the ring
/// that end at position `end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) end: u64,
    pub(crate) len: usize,
}

impl Token {
    /// The token frame.
    pub(crate) fn encode(self) -> [u8; TOKEN_FRAME] {
        self.encode_marked(TOKEN_MARKER)
    }

    /// The piece frame: this token, the message going on in the next
    /// frame.
    pub(crate) fn encode_piece(self) -> [u8; TOKEN_FRAME] {
        self.encode_marked(PIECE_MARKER)
    }

    fn encode_marked(self, marker: i32) -> [u8; TOKEN_FRAME] {
        let mut out = [0u8; TOKEN_FRAME];
        out[..4].copy_from_slice(&marker.to_be_bytes());
        out[4..12].copy_from_slice(&self.end.to_be_bytes());
        out[12..].copy_from_slice(&(self.len as u64).to_be_bytes());
        out
    }
}

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
    /// A whole token frame ([`TOKEN_FRAME`] bytes), its length checked
    /// against the limit.
    Token(Token),
    /// A whole piece frame, as a token; the message goes on in the next
    /// frame.
    Piece(Token),
    /// A doorbell: skip its 4 bytes.
    Doorbell,
    /// The buffer holds only part of a header; this many bytes are needed.
    Need(usize),
}

/// Parses the header at the start of `buf` and checks the payload length
/// against `max`; a token is a header only where `tokens` says so. Never
/// allocates and never panics.
///
/// # Errors
///
/// [`RecvError::BadMessageLength`] for a negative length other than the -1
/// marker (and the token marker, where tokens are read), or a length over
/// `max`.
pub(crate) fn parse_header(buf: &[u8], max: usize, tokens: bool) -> Result<Parsed, RecvError> {
    let Some(short) = buf.first_chunk::<4>() else {
        return Ok(Parsed::Need(4));
    };
    let short = i32::from_be_bytes(*short);
    if tokens && short == DOORBELL_MARKER {
        return Ok(Parsed::Doorbell);
    }
    if tokens && (short == TOKEN_MARKER || short == PIECE_MARKER) {
        let Some(body) = buf.get(4..TOKEN_FRAME) else {
            return Ok(Parsed::Need(TOKEN_FRAME));
        };
        let word = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&body[at..at + 8]);
            u64::from_be_bytes(bytes)
        };
        return match usize::try_from(word(8)) {
            Ok(len) if len <= max => {
                let token = Token { end: word(0), len };
                Ok(if short == PIECE_MARKER {
                    Parsed::Piece(token)
                } else {
                    Parsed::Token(token)
                })
            }
            _ => Err(RecvError::BadMessageLength {
                claimed: i128::from(word(8)),
                max,
            }),
        };
    }
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
    fn a_doorbell_is_skipped_where_tokens_are_read_and_refused_elsewhere() {
        assert_eq!(
            parse_header(&DOORBELL, usize::MAX, true).unwrap(),
            Parsed::Doorbell
        );
        assert!(matches!(
            parse_header(&DOORBELL, usize::MAX, false),
            Err(RecvError::BadMessageLength { claimed: -4, .. })
        ));
    }

    #[test]
    fn short_and_long_headers_round_trip() {
        let mut out = [0u8; MAX_HEADER];
        for len in [0usize, 1, 255, 65536, SHORT_MAX] {
            let n = encode_header(len, &mut out);
            assert_eq!(n, 4);
            assert_eq!(
                parse_header(&out[..n], usize::MAX, false).unwrap(),
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
            parse_header(&out, usize::MAX, false).unwrap(),
            Parsed::Frame {
                header_len: 12,
                payload_len: SHORT_MAX + 1
            }
        );
    }

    #[test]
    fn partial_headers_ask_for_more() {
        assert_eq!(parse_header(&[], 10, false).unwrap(), Parsed::Need(4));
        assert_eq!(parse_header(&[0, 0], 10, false).unwrap(), Parsed::Need(4));
        assert_eq!(
            parse_header(&[0xff; 7], 10, false).unwrap(),
            Parsed::Need(12)
        );
    }

    #[test]
    fn bad_lengths_are_errors() {
        assert!(matches!(
            parse_header(&[0, 0, 0, 11], 10, false),
            Err(RecvError::BadMessageLength {
                claimed: 11,
                max: 10
            })
        ));
        assert!(matches!(
            parse_header(&(-2i32).to_be_bytes(), 10, false),
            Err(RecvError::BadMessageLength { claimed: -2, .. })
        ));
        assert!(matches!(
            parse_header(&[0xff; 12], 1 << 40, false),
            Err(RecvError::BadMessageLength { claimed, .. }) if claimed == i128::from(u64::MAX)
        ));
    }

    #[test]
    fn tokens_are_headers_only_where_they_are_read() {
        let token = Token {
            end: 5 << 20,
            len: 70_000,
        };
        let frame = token.encode();
        assert_eq!(
            parse_header(&frame, usize::MAX, true).unwrap(),
            Parsed::Token(token)
        );
        for cut in 4..TOKEN_FRAME {
            assert_eq!(
                parse_header(&frame[..cut], usize::MAX, true).unwrap(),
                Parsed::Need(TOKEN_FRAME)
            );
        }
        assert!(matches!(
            parse_header(&frame, 69_999, true),
            Err(RecvError::BadMessageLength {
                claimed: 70_000,
                max: 69_999
            })
        ));
        assert!(matches!(
            parse_header(&frame, usize::MAX, false),
            Err(RecvError::BadMessageLength { claimed: -2, .. })
        ));
    }

    #[test]
    fn pieces_are_tokens_marked_to_go_on() {
        let token = Token {
            end: 1 << 20,
            len: 256 << 10,
        };
        let frame = token.encode_piece();
        assert_eq!(&frame[..4], &(-3i32).to_be_bytes());
        assert_eq!(&frame[4..], &token.encode()[4..]);
        assert_eq!(
            parse_header(&frame, usize::MAX, true).unwrap(),
            Parsed::Piece(token)
        );
        assert_eq!(
            parse_header(&frame[..10], usize::MAX, true).unwrap(),
            Parsed::Need(TOKEN_FRAME)
        );
        assert!(matches!(
            parse_header(&frame, 1000, true),
            Err(RecvError::BadMessageLength { .. })
        ));
        assert!(matches!(
            parse_header(&frame, usize::MAX, false),
            Err(RecvError::BadMessageLength { claimed: -3, .. })
        ));
    }
}
