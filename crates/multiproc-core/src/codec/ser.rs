//! The serde `Serializer` of the wire form (bincode 2's `standard()`:
//! little-endian, variable-length integers, lengths before sequences).
//!
//! Sequences of plain elements (`u8`, `i8`, `bool`, `f32`, `f64`) held in a
//! slice are written with one copy instead of one call per element; see
//! [`plain`](super::plain).

use serde::ser::{self, Serialize};

use super::error::{EncodeError, SerError};
use super::plain;
use super::sink::Sink;
use super::varint;

/// Encodes `value` into `sink`.
#[inline]
pub(super) fn encode<T: Serialize + ?Sized, S: Sink>(
    value: &T,
    sink: &mut S,
) -> Result<(), SerError> {
    value.serialize(&mut Encoder { sink })
}

pub(super) struct Encoder<'s, S> {
    sink: &'s mut S,
}

impl<S: Sink> Encoder<'_, S> {
    /// One branch per width, each a put of a fixed size: inlined, it is a
    /// store or two instead of a call to `memcpy`.
    #[inline]
    fn varint(&mut self, value: u64) -> Result<(), SerError> {
        if value < u64::from(varint::U16_TAG) {
            return self.sink.put(&[value as u8]);
        }
        if let Ok(v) = u16::try_from(value) {
            let [a, b] = v.to_le_bytes();
            return self.sink.put(&[varint::U16_TAG, a, b]);
        }
        if let Ok(v) = u32::try_from(value) {
            let [a, b, c, d] = v.to_le_bytes();
            return self.sink.put(&[varint::U32_TAG, a, b, c, d]);
        }
        let [a, b, c, d, e, f, g, h] = value.to_le_bytes();
        self.sink.put(&[varint::U64_TAG, a, b, c, d, e, f, g, h])
    }

    /// A variant with fields starts with its index; the fields follow.
    fn variant(&mut self, index: u32) -> Result<&mut Self, SerError> {
        self.varint(index.into())?;
        Ok(self)
    }

    #[inline]
    fn len(&mut self, len: Option<usize>) -> Result<(), SerError> {
        let len = len.ok_or(SerError::Wire(EncodeError::SequenceMustHaveLength))?;
        self.varint(len as u64)
    }
}

impl<S: Sink> ser::Serializer for &mut Encoder<'_, S> {
    type Ok = ();
    type Error = SerError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    #[inline]
    fn serialize_bool(self, v: bool) -> Result<(), SerError> {
        self.sink.put(&[u8::from(v)])
    }
    #[inline]
    fn serialize_i8(self, v: i8) -> Result<(), SerError> {
        self.sink.put(&v.to_le_bytes())
    }
    #[inline]
    fn serialize_i16(self, v: i16) -> Result<(), SerError> {
        self.varint(varint::zigzag(v.into()))
    }
    #[inline]
    fn serialize_i32(self, v: i32) -> Result<(), SerError> {
        self.varint(varint::zigzag(v.into()))
    }
    #[inline]
    fn serialize_i64(self, v: i64) -> Result<(), SerError> {
        self.varint(varint::zigzag(v))
    }
    fn serialize_i128(self, v: i128) -> Result<(), SerError> {
        self.serialize_u128(varint::zigzag128(v))
    }
    #[inline]
    fn serialize_u8(self, v: u8) -> Result<(), SerError> {
        self.sink.put(&[v])
    }
    #[inline]
    fn serialize_u16(self, v: u16) -> Result<(), SerError> {
        self.varint(v.into())
    }
    #[inline]
    fn serialize_u32(self, v: u32) -> Result<(), SerError> {
        self.varint(v.into())
    }
    #[inline]
    fn serialize_u64(self, v: u64) -> Result<(), SerError> {
        self.varint(v)
    }
    fn serialize_u128(self, v: u128) -> Result<(), SerError> {
        match u64::try_from(v) {
            Ok(v) => self.varint(v),
            Err(_) => self.sink.put(&varint::encode_u128(v)),
        }
    }
    #[inline]
    fn serialize_f32(self, v: f32) -> Result<(), SerError> {
        self.sink.put(&v.to_le_bytes())
    }
    #[inline]
    fn serialize_f64(self, v: f64) -> Result<(), SerError> {
        self.sink.put(&v.to_le_bytes())
    }
    fn serialize_char(self, v: char) -> Result<(), SerError> {
        self.sink.put(v.encode_utf8(&mut [0; 4]).as_bytes())
    }
    #[inline]
    fn serialize_str(self, v: &str) -> Result<(), SerError> {
        self.serialize_bytes(v.as_bytes())
    }
    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> Result<(), SerError> {
        self.varint(v.len() as u64)?;
        self.sink.put(v)
    }
    #[inline]
    fn serialize_none(self) -> Result<(), SerError> {
        self.sink.put(&[0])
    }
    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), SerError> {
        self.sink.put(&[1])?;
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), SerError> {
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), SerError> {
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
    ) -> Result<(), SerError> {
        self.varint(index.into())
    }
    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), SerError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        value: &T,
    ) -> Result<(), SerError> {
        self.varint(index.into())?;
        value.serialize(self)
    }
    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Self, SerError> {
        self.len(len)?;
        Ok(self)
    }
    #[inline]
    fn serialize_tuple(self, _len: usize) -> Result<Self, SerError> {
        Ok(self)
    }
    #[inline]
    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<Self, SerError> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self, SerError> {
        self.variant(index)
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Self, SerError> {
        self.len(len)?;
        Ok(self)
    }
    #[inline]
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self, SerError> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self, SerError> {
        self.variant(index)
    }

    /// `Vec<T>`, `[T]` and the other sequences come here with their
    /// iterator: a slice of plain elements is written with one copy.
    #[inline]
    fn collect_seq<I>(self, iter: I) -> Result<(), SerError>
    where
        I: IntoIterator,
        I::Item: Serialize,
    {
        let iter = iter.into_iter();
        if let Some((len, bytes)) = plain::slice_bytes(&iter) {
            self.varint(len as u64)?;
            return self.sink.put(bytes);
        }
        let (low, high) = iter.size_hint();
        self.len((Some(low) == high).then_some(low))?;
        for item in iter {
            item.serialize(&mut *self)?;
        }
        Ok(())
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

/// One implementation for every compound: elements follow each other with
/// nothing between them.
macro_rules! compound {
    ($($trait:ident :: $method:ident ( $($key:ident : $key_ty:ty),* );)*) => {$(
        impl<S: Sink> ser::$trait for &mut Encoder<'_, S> {
            type Ok = ();
            type Error = SerError;

            #[inline]
            fn $method<T: Serialize + ?Sized>(&mut self, $($key: $key_ty,)* value: &T) -> Result<(), SerError> {
                value.serialize(&mut **self)
            }

            #[inline]
            fn end(self) -> Result<(), SerError> {
                Ok(())
            }
        }
    )*};
}

compound! {
    SerializeSeq::serialize_element();
    SerializeTuple::serialize_element();
    SerializeTupleStruct::serialize_field();
    SerializeTupleVariant::serialize_field();
    SerializeStruct::serialize_field(_key: &'static str);
    SerializeStructVariant::serialize_field(_key: &'static str);
}

impl<S: Sink> ser::SerializeMap for &mut Encoder<'_, S> {
    type Ok = ();
    type Error = SerError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), SerError> {
        key.serialize(&mut **self)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), SerError> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), SerError> {
        Ok(())
    }
}
