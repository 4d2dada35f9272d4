//! bincode's variable-length integers: below 251 a value is its own byte;
//! otherwise a tag byte (251, 252, 253, 254) says a little-endian `u16`,
//! `u32`, `u64` or `u128` follows. Signed values are zigzagged first, so
//! small magnitudes of either sign stay one byte.

use super::error::DecodeError;

pub(super) const U16_TAG: u8 = 251;
pub(super) const U32_TAG: u8 = 252;
pub(super) const U64_TAG: u8 = 253;
const U128_TAG: u8 = 254;

/// The `u128` form: the tag and the value's 16 bytes (for values that do
/// not fit in a `u64`; smaller ones take the `u64` forms).
pub(super) fn encode_u128(value: u128) -> [u8; 17] {
    let mut buf = [U128_TAG; 17];
    buf[1..].copy_from_slice(&value.to_le_bytes());
    buf
}

/// Zigzag: 0, -1, 1, -2, … become 0, 1, 2, 3, ….
#[inline]
pub(super) fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// Zigzag for `i128`.
pub(super) fn zigzag128(value: i128) -> u128 {
    ((value << 1) ^ (value >> 127)) as u128
}

/// Reverses [`zigzag`].
#[inline]
pub(super) fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// Reverses [`zigzag128`].
pub(super) fn unzigzag128(value: u128) -> i128 {
    ((value >> 1) as i128) ^ -((value & 1) as i128)
}

/// The widest form a type may be read from: bincode refuses a `u16` written
/// with the `u32` tag, even when the value would fit.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Width {
    U16,
    U32,
    U64,
}

/// Reads a varint of at most `width` from the front of `input`.
#[inline]
pub(super) fn decode_u64(input: &mut &[u8], width: Width) -> Result<u64, DecodeError> {
    let (&tag, rest) = input.split_first().ok_or(DecodeError::UnexpectedEnd)?;
    *input = rest;
    if tag < U16_TAG {
        return Ok(u64::from(tag));
    }
    let allowed = match tag {
        U16_TAG => true,
        U32_TAG => width >= Width::U32,
        U64_TAG => width >= Width::U64,
        _ => false,
    };
    if !allowed {
        return Err(DecodeError::InvalidIntegerTag(tag));
    }
    match tag {
        U16_TAG => Ok(u64::from(u16::from_le_bytes(take(input)?))),
        U32_TAG => Ok(u64::from(u32::from_le_bytes(take(input)?))),
        _ => Ok(u64::from_le_bytes(take(input)?)),
    }
}

/// Reads a varint of any width, `u128` included.
pub(super) fn decode_u128(input: &mut &[u8]) -> Result<u128, DecodeError> {
    if input.first() == Some(&U128_TAG) {
        *input = &input[1..];
        return Ok(u128::from_le_bytes(take(input)?));
    }
    decode_u64(input, Width::U64).map(u128::from)
}

/// Takes `N` bytes from the front of `input`.
#[inline]
pub(super) fn take<const N: usize>(input: &mut &[u8]) -> Result<[u8; N], DecodeError> {
    let (head, rest) = input
        .split_first_chunk::<N>()
        .ok_or(DecodeError::UnexpectedEnd)?;
    *input = rest;
    Ok(*head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_round_trips_at_the_edges() {
        for v in [0, 1, -1, 2, -2, i64::MAX, i64::MIN, 125, -126] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
        for v in [0, -1, i128::MAX, i128::MIN] {
            assert_eq!(unzigzag128(zigzag128(v)), v);
        }
    }

    #[test]
    fn a_narrow_type_refuses_a_wide_tag() {
        let mut input: &[u8] = &[U32_TAG, 1, 0, 0, 0];
        assert_eq!(
            decode_u64(&mut input, Width::U16),
            Err(DecodeError::InvalidIntegerTag(U32_TAG))
        );
        let mut input: &[u8] = &[U32_TAG, 1, 0, 0, 0];
        assert_eq!(decode_u64(&mut input, Width::U32), Ok(1));
        assert!(input.is_empty());
    }
}
