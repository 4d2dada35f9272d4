//! Byte copies that stay fast whatever the two addresses are.
//!
//! `memcpy` copies mid-sized runs (from a few KiB to about a MiB) with the
//! CPU's string instruction (`rep movsb`). On some CPUs (seen on AMD EPYC)
//! that instruction slows down twentyfold when the destination lies a few
//! bytes past the source modulo 4 KiB: every store then looks, to the part
//! of the CPU that orders loads after stores, like it overlaps the next
//! loads. Which addresses two buffers get is up to the allocator and to
//! where a message lies in a ring, so a transport meets that case by
//! chance, on one message size and not the next. [`copy`] avoids it by
//! copying such runs with vector moves, 64 bytes at a time (as fast as
//! `memcpy` otherwise), and calls `memcpy` in every other case.
//!
//! ```
//! let src: Vec<u8> = (0..=255).cycle().take(10_000).collect();
//! let mut dst = vec![0u8; 10_000];
//! multiproc_core::copy::copy(&mut dst, &src);
//! assert_eq!(dst, src);
//!
//! let mut out = b"head".to_vec();
//! multiproc_core::copy::extend(&mut out, &src);
//! assert_eq!(&out[4..], &src[..]);
//! ```
#![allow(unsafe_code)]

use std::mem::MaybeUninit;

/// Runs shorter than this are left to `memcpy` (which does not use the
/// string instruction for them).
const CHUNKED_FROM: usize = 4096;

/// Whether `memcpy` from `src` to `dst` risks the slow case.
#[inline]
fn aliased(dst: *const u8, src: *const u8, len: usize) -> bool {
    let gap = (dst as usize).wrapping_sub(src as usize) % 4096;
    len >= CHUNKED_FROM && (1..64).contains(&gap)
}

/// Copies `src` into `dst`, which must be as long.
///
/// # Panics
///
/// When the lengths differ, as `<[u8]>::copy_from_slice` does.
#[inline]
pub fn copy(dst: &mut [u8], src: &[u8]) {
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and `copy_into`
    // writes only initialised bytes (copies of `src`) through the view, so
    // `dst` stays initialised.
    let dst = unsafe { &mut *(std::ptr::from_mut(dst) as *mut [MaybeUninit<u8>]) };
    copy_into(dst, src);
}

/// Copies `src` into the uninitialised `dst`, which must be as long;
/// returns `dst`, now initialised.
///
/// # Panics
///
/// When the lengths differ.
#[inline]
pub fn copy_to_uninit<'a>(dst: &'a mut [MaybeUninit<u8>], src: &[u8]) -> &'a mut [u8] {
    copy_into(dst, src);
    // SAFETY: `copy_into` wrote every byte of `dst` (the lengths are
    // equal), and `MaybeUninit<u8>` has the layout of `u8`.
    unsafe { &mut *(std::ptr::from_mut(dst) as *mut [u8]) }
}

/// Appends `src` to `out`.
#[inline]
pub fn extend(out: &mut Vec<u8>, src: &[u8]) {
    if src.len() < CHUNKED_FROM {
        out.extend_from_slice(src);
        return;
    }
    out.reserve(src.len());
    let len = out.len();
    copy_into(&mut out.spare_capacity_mut()[..src.len()], src);
    // SAFETY: the first `src.len()` bytes of the spare capacity were
    // initialised just above.
    unsafe { out.set_len(len + src.len()) };
}

/// Copies `len` bytes from `src` to `dst` as [`copy`] does, for memory that
/// is reached through raw pointers only (a mapping other processes write
/// to, where no Rust reference may be formed).
///
/// # Safety
///
/// As for [`std::ptr::copy_nonoverlapping`]: `src` valid for reads and
/// `dst` for writes of `len` bytes, the two ranges not overlapping. A
/// racing write by another process may tear the copy (every byte value is
/// valid), which the caller must allow for.
#[inline]
pub unsafe fn copy_raw(dst: *mut u8, src: *const u8, len: usize) {
    if aliased(dst, src, len) {
        let mut done = 0;
        while done + 64 <= len {
            // SAFETY: `done + 64 <= len`, inside both ranges (the caller's
            // contract); unaligned reads and writes of a plain byte array.
            unsafe {
                let chunk = src.add(done).cast::<[u8; 64]>().read_unaligned();
                dst.add(done).cast::<[u8; 64]>().write_unaligned(chunk);
            }
            done += 64;
        }
        // SAFETY: the rest of both ranges, as above.
        unsafe { std::ptr::copy_nonoverlapping(src.add(done), dst.add(done), len - done) };
    } else {
        // SAFETY: the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
    }
}

/// The copy itself, into memory that may be uninitialised.
#[inline]
fn copy_into(dst: &mut [MaybeUninit<u8>], src: &[u8]) {
    assert_eq!(
        dst.len(),
        src.len(),
        "copy between slices of different lengths"
    );
    // SAFETY: initialised bytes are valid `MaybeUninit<u8>`s, with the same
    // layout, and the view is only read.
    let src = unsafe { &*(std::ptr::from_ref(src) as *const [MaybeUninit<u8>]) };
    if aliased(dst.as_ptr().cast(), src.as_ptr().cast(), src.len()) {
        chunked(dst, src);
    } else {
        dst.copy_from_slice(src);
    }
}

/// 64 bytes at a time: fixed-size copies through a temporary that compile
/// to vector moves, never to the string instruction.
#[inline(never)]
fn chunked(dst: &mut [MaybeUninit<u8>], src: &[MaybeUninit<u8>]) {
    let mut to = dst.chunks_exact_mut(64);
    let mut from = src.chunks_exact(64);
    for (d, s) in (&mut to).zip(&mut from) {
        let chunk: [MaybeUninit<u8>; 64] = s.try_into().expect("64-byte chunk");
        d.copy_from_slice(&chunk);
    }
    to.into_remainder().copy_from_slice(from.remainder());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_at_every_offset_and_length_around_the_chunk_size() {
        let src: Vec<u8> = (0..20_000u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut buf = vec![0u8; 20_200];
        for len in [0, 1, 63, 64, 65, 4095, 4096, 4097, 10_001] {
            for shift in [0, 1, 5, 63, 64, 100] {
                let dst = &mut buf[shift..shift + len];
                copy(dst, &src[..len]);
                assert_eq!(dst, &src[..len]);
            }
        }
        let mut out = vec![9u8; 3];
        extend(&mut out, &src[..5000]);
        assert_eq!(&out[3..], &src[..5000]);
    }

    #[test]
    fn raw_copies_match_at_every_offset_and_length() {
        let src: Vec<u8> = (0..20_000u32).map(|i| (i * 11 + 1) as u8).collect();
        let mut buf = vec![0u8; 20_200];
        for len in [0, 1, 63, 64, 65, 4095, 4096, 4097, 10_001] {
            for shift in [0, 1, 5, 63, 64, 100] {
                let dst = &mut buf[shift..shift + len];
                // SAFETY: both ranges are `len` bytes of distinct vectors.
                unsafe { copy_raw(dst.as_mut_ptr(), src.as_ptr(), len) };
                assert_eq!(dst, &src[..len]);
            }
        }
    }

    #[test]
    fn the_chunked_path_is_taken_only_when_the_destination_trails_closely() {
        let p = 0x10_000 as *const u8;
        assert!(aliased(p.wrapping_add(5), p, 8192));
        assert!(aliased(p.wrapping_add(4096 + 5), p, 8192));
        assert!(!aliased(p, p.wrapping_add(5), 8192));
        assert!(!aliased(p.wrapping_add(5), p, 100));
        assert!(!aliased(p, p, 8192));
    }

    #[test]
    fn chunked_copies_exactly() {
        let src: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut dst = vec![MaybeUninit::new(0u8); 1000];
        let view: Vec<MaybeUninit<u8>> = src.iter().copied().map(MaybeUninit::new).collect();
        chunked(&mut dst, &view);
        // SAFETY: every element was initialised (and then overwritten).
        let back: Vec<u8> = dst.iter().map(|b| unsafe { b.assume_init() }).collect();
        assert_eq!(back, src);
    }
}
