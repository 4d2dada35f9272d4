//! Strings out of decoded bytes, checked as `str::from_utf8` checks them,
//! faster on ASCII.
//!
//! `<[u8]>::is_ascii` runs about twice as fast as `str::from_utf8` on ASCII
//! (113 against 52 GB/s on an AMD EPYC, from the first-level cache). So a
//! string is taken in blocks: the blocks before the first that is not all
//! ASCII are checked that way, and the rest by `str::from_utf8`. A prefix
//! of ASCII ends on a character boundary, and ASCII is UTF-8, so the whole
//! is valid exactly when that rest is.
//!
//! An owned string is copied block by block, each block checked right
//! after its copy, while it is still in the first-level cache: one pass
//! over the source instead of a copy and then a check.
#![allow(unsafe_code)]

use std::str::Utf8Error;

/// Bytes checked (and copied) at a time: well inside a first-level cache.
const BLOCK: usize = 8 * 1024;

/// How many of `bytes`' first bytes are known ASCII: the whole blocks up to
/// the first that is not all ASCII (all of `bytes` if it is ASCII).
#[inline]
fn ascii_prefix(bytes: &[u8]) -> usize {
    bytes
        .chunks(BLOCK)
        .take_while(|block| block.is_ascii())
        .map(<[u8]>::len)
        .sum()
}

/// `bytes` as a `str`, if they are UTF-8: [`std::str::from_utf8`], faster
/// on ASCII.
///
/// # Errors
///
/// The standard library's, for the part after the ASCII prefix.
#[inline]
pub(crate) fn to_str(bytes: &[u8]) -> Result<&str, Utf8Error> {
    let ascii = ascii_prefix(bytes);
    std::str::from_utf8(&bytes[ascii..])?;
    // SAFETY: `bytes[..ascii]` is ASCII (checked by `ascii_prefix`), hence
    // UTF-8, and ends on a character boundary; `bytes[ascii..]` was just
    // checked; so all of `bytes` is UTF-8. `bytes` is a shared borrow: it
    // cannot change between the check and now.
    Ok(unsafe { std::str::from_utf8_unchecked(bytes) })
}

/// A copy of `src` as a `String`, if it is UTF-8, checked as it is copied.
///
/// # Errors
///
/// As [`to_str`].
pub(crate) fn copy_to_string(src: &[u8]) -> Result<String, Utf8Error> {
    let mut owned = Vec::with_capacity(src.len());
    // `owned[..ascii]` is checked ASCII; the checking stops at the first
    // block that is not all ASCII, and `str::from_utf8` takes the rest.
    let mut ascii = 0;
    for block in src.chunks(BLOCK) {
        let start = owned.len();
        crate::copy::extend(&mut owned, block);
        // The copy is checked, not the source: the string's validity rests
        // only on bytes that are ours.
        if ascii == start && owned[start..].is_ascii() {
            ascii = owned.len();
        }
    }
    std::str::from_utf8(&owned[ascii..])?;
    // SAFETY: as in `to_str`: `owned[..ascii]` is ASCII, ends on a
    // character boundary, and `owned[ascii..]` was just checked; `owned` is
    // this function's own vector, unchanged since.
    Ok(unsafe { String::from_utf8_unchecked(owned) })
}

#[cfg(test)]
mod tests {
    use super::{BLOCK, copy_to_string, to_str};
    use proptest::prelude::*;

    /// Both functions agree with the standard library on `bytes`.
    fn agrees(bytes: &[u8]) {
        let expected = std::str::from_utf8(bytes).ok();
        assert_eq!(to_str(bytes).ok(), expected, "to_str on {bytes:?}");
        assert_eq!(
            copy_to_string(bytes).ok().as_deref(),
            expected,
            "copy_to_string on {bytes:?}"
        );
    }

    #[test]
    fn multibyte_characters_across_chunk_and_block_edges_are_whole_or_refused() {
        for edge in [64, BLOCK, 3 * BLOCK] {
            for shift in 0..4 {
                let at = edge - shift;
                for c in ["é", "€", "😀"] {
                    let mut s = "a".repeat(at);
                    s.push_str(c);
                    s.push_str(&"b".repeat(70));
                    agrees(s.as_bytes());
                    // The same with the character cut short at each of
                    // its bytes, and a lone continuation byte in the ASCII.
                    for cut in 1..c.len() {
                        let mut bytes = "a".repeat(at).into_bytes();
                        bytes.extend_from_slice(&c.as_bytes()[..cut]);
                        bytes.extend_from_slice(&[b'b'; 70]);
                        agrees(&bytes);
                    }
                    let mut bytes = "a".repeat(at + 70).into_bytes();
                    bytes[at] = 0x80;
                    agrees(&bytes);
                }
            }
        }
    }

    #[test]
    fn empty_and_short_inputs() {
        agrees(b"");
        agrees(b"a");
        agrees(&[0xff]);
        agrees("ü".as_bytes());
        agrees(&"x".repeat(BLOCK - 1).into_bytes());
    }

    proptest! {
        #[test]
        fn any_bytes_are_judged_as_the_standard_library_judges_them(
            prefix in 0usize..(2 * BLOCK),
            tail in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut bytes = vec![b'q'; prefix];
            bytes.extend_from_slice(&tail);
            agrees(&bytes);
        }

        #[test]
        fn any_string_comes_back_whole(s in ".{0,400}", pad in 0usize..200) {
            let s = format!("{}{s}", "p".repeat(pad));
            prop_assert_eq!(to_str(s.as_bytes()).unwrap(), s.as_str());
            prop_assert_eq!(copy_to_string(s.as_bytes()).unwrap(), s);
        }
    }
}
