//! One copy for sequences of plain elements.
//!
//! serde hands a `Vec<u8>` to a serializer one element at a time, and reads
//! one back one element at a time: at 1 KiB that is a thousand calls each
//! way, 20 times the cost of moving the bytes. For elements whose wire form
//! is their memory (`u8`, `i8` and `bool` are one byte; `f32` and `f64` are
//! little-endian, as memory is on a little-endian machine), this module
//! recognises the slice behind the iterator on the way out and serde's own
//! `Vec` visitor on the way in, and copies the whole run at once. The bytes
//! on the wire are the same either way.
//!
//! The recognition is by type identity (lifetimes aside), so it applies
//! exactly to serde's implementations, never to a user's type that merely
//! looks like a sequence.
#![allow(unsafe_code)]

use serde::de::{self, Deserialize, Visitor};
use std::any::TypeId;
use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::sync::OnceLock;

use super::error::DecodeError;

/// An element type whose wire form is its memory on this machine.
trait Plain: Copy + 'static {
    /// Whether the copy is the wire form here (byte order).
    const IS_WIRE: bool;
}

impl Plain for u8 {
    const IS_WIRE: bool = true;
}
impl Plain for i8 {
    const IS_WIRE: bool = true;
}
impl Plain for bool {
    const IS_WIRE: bool = true;
}
impl Plain for f32 {
    const IS_WIRE: bool = cfg!(target_endian = "little");
}
impl Plain for f64 {
    const IS_WIRE: bool = cfg!(target_endian = "little");
}

/// If `It` is a slice iterator over plain elements: their count and bytes.
#[inline]
pub(super) fn slice_bytes<It>(iter: &It) -> Option<(usize, &[u8])> {
    let id = typeid::of::<It>();
    if id == typeid::of::<std::slice::Iter<'static, u8>>() {
        return view::<It, u8>(iter);
    }
    if id == typeid::of::<std::slice::Iter<'static, f64>>() {
        return view::<It, f64>(iter);
    }
    if id == typeid::of::<std::slice::Iter<'static, f32>>() {
        return view::<It, f32>(iter);
    }
    if id == typeid::of::<std::slice::Iter<'static, i8>>() {
        return view::<It, i8>(iter);
    }
    if id == typeid::of::<std::slice::Iter<'static, bool>>() {
        return view::<It, bool>(iter);
    }
    None
}

/// The remaining elements of `iter`, which is a `slice::Iter<'_, P>`, as
/// bytes.
#[inline]
fn view<It, P: Plain>(iter: &It) -> Option<(usize, &[u8])> {
    if !P::IS_WIRE {
        return None;
    }
    assert_eq!(
        typeid::of::<It>(),
        typeid::of::<std::slice::Iter<'static, P>>()
    );
    // SAFETY: `It` is `slice::Iter<'a, P>` for some `'a` (the assertion:
    // type identity up to lifetimes), and `&It` borrows it, so `'a` outlives
    // the borrow; reading it as `slice::Iter<'_, P>` for that borrow is
    // reading it as its own type.
    let iter = unsafe { &*std::ptr::from_ref(iter).cast::<std::slice::Iter<'_, P>>() };
    let elements = iter.as_slice();
    // SAFETY: `P` is a primitive without padding (`Plain` is sealed to
    // u8, i8, bool, f32, f64), so all `size_of_val` bytes of the slice are
    // initialised, and the byte view lives as long as the slice.
    let bytes = unsafe {
        std::slice::from_raw_parts(elements.as_ptr().cast::<u8>(), size_of_val(elements))
    };
    Some((elements.len(), bytes))
}

/// If `V` is serde's visitor for `Vec<u8>`, `Vec<i8>`, `Vec<f32>` or
/// `Vec<f64>`: the vector of `len` elements read from the front of `input`
/// in one copy, as `V::Value`. `None` for any other visitor.
#[inline]
pub(super) fn read_vec<'de, V: Visitor<'de>>(
    len: usize,
    input: &mut &'de [u8],
) -> Option<Result<V::Value, DecodeError>> {
    // Cheap first: the value's type is known at compile time.
    let value = typeid::of::<V::Value>();
    let index = [
        TypeId::of::<Vec<u8>>(),
        TypeId::of::<Vec<i8>>(),
        TypeId::of::<Vec<f32>>(),
        TypeId::of::<Vec<f64>>(),
    ]
    .iter()
    .position(|&id| id == value)?;
    if typeid::of::<V>() != vec_visitors()[index] {
        return None;
    }
    Some(match index {
        0 => read::<V, u8>(len, input),
        1 => read::<V, i8>(len, input),
        2 if f32::IS_WIRE => read::<V, f32>(len, input),
        3 if f64::IS_WIRE => read::<V, f64>(len, input),
        _ => return None,
    })
}

/// Reads `len` elements `P` and returns them as `V::Value` (= `Vec<P>`).
fn read<'de, V: Visitor<'de>, P: Plain>(
    len: usize,
    input: &mut &'de [u8],
) -> Result<V::Value, DecodeError> {
    debug_assert!(P::IS_WIRE);
    let size = len
        .checked_mul(size_of::<P>())
        .ok_or(DecodeError::UnexpectedEnd)?;
    // The length is checked against the input before anything is allocated.
    let (bytes, rest) = input
        .split_at_checked(size)
        .ok_or(DecodeError::UnexpectedEnd)?;
    *input = rest;
    let mut out = Vec::<P>::with_capacity(len);
    // SAFETY: `out` has room for `len` elements, which is `size` bytes, all
    // of them its spare capacity; `MaybeUninit<u8>` may view any memory.
    let room = unsafe {
        std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<std::mem::MaybeUninit<u8>>(), size)
    };
    crate::copy::copy_to_uninit(room, bytes);
    // SAFETY: the first `size` bytes, `len` elements, were written just
    // above; every bit pattern is a valid `P` for u8, i8, f32 and f64
    // (`read_vec` never passes `bool`), and the bytes are in the machine's
    // order (`IS_WIRE`).
    unsafe { out.set_len(len) };
    assert_eq!(typeid::of::<V::Value>(), TypeId::of::<Vec<P>>());
    let out = ManuallyDrop::new(out);
    // SAFETY: `V::Value` is `Vec<P>` (the assertion above; `Vec<P>` has no
    // lifetimes, so identity up to lifetimes is identity), so this moves
    // the vector out under its own type; `ManuallyDrop` keeps it from being
    // dropped twice.
    Ok(unsafe { std::ptr::read(std::ptr::from_ref(&*out).cast::<V::Value>()) })
}

/// The type identities of serde's visitors for `Vec<u8>`, `Vec<i8>`,
/// `Vec<f32>` and `Vec<f64>`, learnt once by letting each `Deserialize`
/// show its visitor to a probe (the visitor types are private to serde).
fn vec_visitors() -> &'static [TypeId; 4] {
    static IDS: OnceLock<[TypeId; 4]> = OnceLock::new();
    IDS.get_or_init(|| {
        [
            visitor_of::<Vec<u8>>(),
            visitor_of::<Vec<i8>>(),
            visitor_of::<Vec<f32>>(),
            visitor_of::<Vec<f64>>(),
        ]
    })
}

fn visitor_of<T: for<'de> Deserialize<'de>>() -> TypeId {
    let mut seen = None;
    let _ = T::deserialize(Probe(&mut seen, PhantomData));
    // A probe that saw no sequence matches no visitor.
    seen.unwrap_or_else(TypeId::of::<Probe<'static, 'static>>)
}

/// A deserializer that records the visitor a sequence is read with, and
/// reads nothing.
struct Probe<'a, 'de>(&'a mut Option<TypeId>, PhantomData<&'de ()>);

#[derive(Debug)]
struct Probed;

impl fmt::Display for Probed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("probe")
    }
}

impl std::error::Error for Probed {}

impl de::Error for Probed {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        Self
    }
}

impl<'de> de::Deserializer<'de> for Probe<'_, 'de> {
    type Error = Probed;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Probed> {
        Err(Probed)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Probed> {
        *self.0 = Some(typeid::of::<V>());
        Err(Probed)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_tells_the_vec_visitors_apart() {
        let ids = vec_visitors();
        for (i, a) in ids.iter().enumerate() {
            assert_ne!(*a, TypeId::of::<Probe<'static, 'static>>());
            for b in &ids[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn only_slice_iterators_of_plain_elements_are_viewed() {
        let v = [1.5f64, -2.0];
        let iter = v.iter();
        let (len, bytes) = slice_bytes(&iter).unwrap();
        assert_eq!(len, 2);
        assert_eq!(&bytes[..8], &1.5f64.to_le_bytes());
        assert!(slice_bytes(&[1u16, 2].iter()).is_none());
        let deque = std::collections::VecDeque::from(vec![1u8]);
        assert!(slice_bytes(&deque.iter()).is_none());
        // A partly consumed iterator shows what is left.
        let mut it = b"abc".iter();
        it.next();
        assert_eq!(slice_bytes(&it), Some((2, &b"bc"[..])));
    }
}
