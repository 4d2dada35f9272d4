//! The serde `Deserializer` of the wire form, reading from a byte slice.
//!
//! Defensive by construction: a length is checked against the bytes left
//! before anything is allocated for it (and a collection's size hint never
//! exceeds the bytes left), nesting is bounded by [`MAX_DEPTH`], and a
//! length prefix alone cannot make it loop: elements that take no bytes are
//! bounded by [`MAX_EMPTY_ELEMENTS`].

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::error::DecodeError;
use super::plain;
use super::varint::{self, Width};

/// How deep values may nest (an `Option` in a `Vec` in a struct is three
/// levels): a recursive type read from hostile bytes must not overflow the
/// stack.
pub const MAX_DEPTH: u32 = 256;

/// How many sequence or map elements that take no bytes (e.g. `()`) one
/// decode may read: without a bound, a `Vec<()>` of length 2^60 is eight
/// bytes of input and a very long loop.
pub const MAX_EMPTY_ELEMENTS: usize = 1 << 20;

/// Decodes a `T` from the front of `bytes`; returns it and the bytes used.
pub(super) fn decode<'de, T: de::Deserialize<'de>>(
    bytes: &'de [u8],
) -> Result<(T, usize), DecodeError> {
    let mut decoder = Decoder {
        input: bytes,
        depth: 0,
        empty_elements: 0,
    };
    let value = T::deserialize(&mut decoder)?;
    Ok((value, bytes.len() - decoder.input.len()))
}

struct Decoder<'de> {
    input: &'de [u8],
    depth: u32,
    empty_elements: usize,
}

impl<'de> Decoder<'de> {
    #[inline]
    fn byte(&mut self) -> Result<u8, DecodeError> {
        varint::take::<1>(&mut self.input).map(|[b]| b)
    }

    #[inline]
    fn varint(&mut self, width: Width) -> Result<u64, DecodeError> {
        varint::decode_u64(&mut self.input, width)
    }

    #[inline]
    fn len(&mut self) -> Result<usize, DecodeError> {
        let len = self.varint(Width::U64)?;
        usize::try_from(len).map_err(|_| DecodeError::LengthOutOfRange(len))
    }

    /// `len` bytes, borrowed from the input; checked before any allocation.
    #[inline]
    fn bytes(&mut self) -> Result<&'de [u8], DecodeError> {
        let len = self.len()?;
        let (bytes, rest) = self
            .input
            .split_at_checked(len)
            .ok_or(DecodeError::UnexpectedEnd)?;
        self.input = rest;
        Ok(bytes)
    }

    /// [`bytes`](Self::bytes), copied into a vector of their own.
    #[inline]
    fn owned_bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let bytes = self.bytes()?;
        let mut owned = Vec::with_capacity(bytes.len());
        crate::copy::extend(&mut owned, bytes);
        Ok(owned)
    }

    #[inline]
    fn str(&mut self) -> Result<&'de str, DecodeError> {
        super::utf8::to_str(self.bytes()?).map_err(|_| DecodeError::InvalidUtf8)
    }

    /// Runs `f` one nesting level down.
    #[inline]
    fn nested<R>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<R, DecodeError>,
    ) -> Result<R, DecodeError> {
        if self.depth >= MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }

    /// Reads one element with `seed`, counting it if it took no bytes.
    #[inline]
    fn element<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, DecodeError> {
        let before = self.input.len();
        let value = seed.deserialize(&mut *self)?;
        if self.input.len() == before {
            self.empty_elements += 1;
            if self.empty_elements > MAX_EMPTY_ELEMENTS {
                return Err(DecodeError::TooManyEmptyElements);
            }
        }
        Ok(value)
    }
}

impl<'de> de::Deserializer<'de> for &mut Decoder<'de> {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, DecodeError> {
        Err(DecodeError::Unsupported("deserialize_any"))
    }
    #[inline]
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.byte()? {
            0 => visitor.visit_bool(false),
            1 => visitor.visit_bool(true),
            b => Err(DecodeError::InvalidBool(b)),
        }
    }
    #[inline]
    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_i8(self.byte()? as i8)
    }
    #[inline]
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        let v = varint::unzigzag(self.varint(Width::U16)?);
        visitor.visit_i16(v as i16)
    }
    #[inline]
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        let v = varint::unzigzag(self.varint(Width::U32)?);
        visitor.visit_i32(v as i32)
    }
    #[inline]
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_i64(varint::unzigzag(self.varint(Width::U64)?))
    }
    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_i128(varint::unzigzag128(varint::decode_u128(&mut self.input)?))
    }
    #[inline]
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_u8(self.byte()?)
    }
    #[inline]
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_u16(self.varint(Width::U16)? as u16)
    }
    #[inline]
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_u32(self.varint(Width::U32)? as u32)
    }
    #[inline]
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_u64(self.varint(Width::U64)?)
    }
    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_u128(varint::decode_u128(&mut self.input)?)
    }
    #[inline]
    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_f32(f32::from_le_bytes(varint::take(&mut self.input)?))
    }
    #[inline]
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_f64(f64::from_le_bytes(varint::take(&mut self.input)?))
    }
    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        let first = *self.input.first().ok_or(DecodeError::UnexpectedEnd)?;
        let width = match first {
            0x00..=0x7f => 1,
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => return Err(DecodeError::InvalidChar),
        };
        let (bytes, rest) = self
            .input
            .split_at_checked(width)
            .ok_or(DecodeError::UnexpectedEnd)?;
        self.input = rest;
        let c = std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.chars().next())
            .ok_or(DecodeError::InvalidChar)?;
        visitor.visit_char(c)
    }
    #[inline]
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_borrowed_str(self.str()?)
    }
    /// An owned string is copied here, with [`copy`](crate::copy), and
    /// handed over: the visitor's own copy could take the CPU's slow path.
    /// It is checked as it is copied (see [`utf8`](super::utf8)).
    #[inline]
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        let owned =
            super::utf8::copy_to_string(self.bytes()?).map_err(|_| DecodeError::InvalidUtf8)?;
        visitor.visit_string(owned)
    }
    #[inline]
    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_borrowed_bytes(self.bytes()?)
    }
    #[inline]
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_byte_buf(self.owned_bytes()?)
    }
    #[inline]
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        match self.byte()? {
            0 => visitor.visit_none(),
            1 => self.nested(|de| visitor.visit_some(de)),
            tag => Err(DecodeError::InvalidOptionTag(tag)),
        }
    }
    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        visitor.visit_unit()
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        visitor.visit_unit()
    }
    #[inline]
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        self.nested(|de| visitor.visit_newtype_struct(de))
    }
    #[inline]
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        let len = self.len()?;
        if let Some(value) = plain::read_vec::<V>(len, &mut self.input) {
            return value;
        }
        self.deserialize_tuple(len, visitor)
    }
    #[inline]
    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        self.nested(|de| visitor.visit_seq(Elements { de, left: len }))
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        self.deserialize_tuple(len, visitor)
    }
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DecodeError> {
        let len = self.len()?;
        self.nested(|de| visitor.visit_map(Elements { de, left: len }))
    }
    #[inline]
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        self.deserialize_tuple(fields.len(), visitor)
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        self.nested(|de| visitor.visit_enum(de))
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, DecodeError> {
        Err(DecodeError::Unsupported("deserialize_identifier"))
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(
        self,
        _visitor: V,
    ) -> Result<V::Value, DecodeError> {
        Err(DecodeError::Unsupported("deserialize_ignored_any"))
    }
    fn is_human_readable(&self) -> bool {
        false
    }
}

/// The elements of a sequence, tuple or struct, or the entries of a map.
struct Elements<'a, 'de> {
    de: &'a mut Decoder<'de>,
    left: usize,
}

impl Elements<'_, '_> {
    /// At most the bytes left: every element but an empty one takes one.
    fn size_hint(&self) -> Option<usize> {
        Some(self.left.min(self.de.input.len()))
    }
}

impl<'de> de::SeqAccess<'de> for Elements<'_, 'de> {
    type Error = DecodeError;

    #[inline]
    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, DecodeError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        self.de.element(seed).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Elements::size_hint(self)
    }
}

impl<'de> de::MapAccess<'de> for Elements<'_, 'de> {
    type Error = DecodeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DecodeError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        self.de.element(seed).map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<S::Value, DecodeError> {
        seed.deserialize(&mut *self.de)
    }

    fn size_hint(&self) -> Option<usize> {
        Elements::size_hint(self)
    }
}

impl<'de> de::EnumAccess<'de> for &mut Decoder<'de> {
    type Error = DecodeError;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self), DecodeError> {
        let index = self.varint(Width::U32)? as u32;
        let value = seed.deserialize(index.into_deserializer())?;
        Ok((value, self))
    }
}

impl<'de> de::VariantAccess<'de> for &mut Decoder<'de> {
    type Error = DecodeError;

    fn unit_variant(self) -> Result<(), DecodeError> {
        Ok(())
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<S::Value, DecodeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        de::Deserializer::deserialize_tuple(self, len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DecodeError> {
        de::Deserializer::deserialize_tuple(self, fields.len(), visitor)
    }
}
