//! The codec's wire form is bincode 2's `standard()` form, byte for byte:
//! every value encodes as bincode encodes it, bincode's bytes decode to the
//! same value, and garbage is refused or accepted by both alike. Also the
//! decoder's own bounds: nesting, empty elements and lengths.

use bincode::config::standard;
use multiproc_core::codec::{self, CodecError, DecodeError};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Shape {
    Unit,
    New(i32),
    Tuple(u16, char),
    Struct { a: i64, b: Option<bool> },
}

/// Plain runs (bytes, floats, signed bytes, flags) beside everything that
/// goes element by element.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Rich {
    bytes: Vec<u8>,
    text: String,
    doubles: Vec<f64>,
    singles: Vec<f32>,
    signed: Vec<i8>,
    flags: Vec<bool>,
    wide: (u128, i128),
    ints: Vec<u64>,
    small: (u16, i16, u32, i32, i64),
    shapes: Vec<Shape>,
    map: BTreeMap<u16, String>,
    nested: Option<Vec<Vec<u8>>>,
    ch: char,
    unit: (),
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::Unit),
        any::<i32>().prop_map(Shape::New),
        (any::<u16>(), any::<char>()).prop_map(|(a, b)| Shape::Tuple(a, b)),
        (any::<i64>(), any::<Option<bool>>()).prop_map(|(a, b)| Shape::Struct { a, b }),
    ]
}

fn rich() -> impl Strategy<Value = Rich> {
    use proptest::collection::{btree_map, vec};
    (
        (
            vec(any::<u8>(), 0..300),
            ".{0,40}",
            vec(any::<f64>(), 0..40),
            vec(any::<f32>(), 0..40),
            vec(any::<i8>(), 0..40),
            vec(any::<bool>(), 0..40),
        ),
        (
            (any::<u128>(), any::<i128>()),
            vec(
                prop_oneof![any::<u64>(), 0u64..300, 60_000u64..70_000],
                0..20,
            ),
            any::<(u16, i16, u32, i32, i64)>(),
            vec(shape(), 0..6),
            btree_map(any::<u16>(), ".{0,8}", 0..5),
            proptest::option::of(vec(vec(any::<u8>(), 0..8), 0..4)),
            any::<char>(),
        ),
    )
        .prop_map(|((bytes, text, doubles, singles, signed, flags), rest)| {
            let (wide, ints, small, shapes, map, nested, ch) = rest;
            Rich {
                bytes,
                text,
                doubles,
                singles,
                signed,
                flags,
                wide,
                ints,
                small,
                shapes,
                map,
                nested,
                ch,
                unit: (),
            }
        })
}

fn bincode_encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, standard()).unwrap()
}

/// bincode's decode, with a limit: without one it allocates whatever a length
/// prefix claims. A valid input claims at most 16 times its length (a `u128`
/// in one byte), far below the limit for the inputs here.
fn bincode_decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    assert!(bytes.len() <= 4096);
    let config = standard().with_limit::<{ 1 << 16 }>();
    match bincode::serde::decode_from_slice::<T, _>(bytes, config) {
        Ok((value, used)) if used == bytes.len() => Some(value),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn values_encode_as_bincode_encodes_them(value in rich()) {
        let ours = codec::encode(&value).unwrap();
        prop_assert_eq!(&ours, &bincode_encode(&value));
        prop_assert_eq!(codec::Codec::new().encoded_len(&value).unwrap(), ours.len());
        let mut slot = vec![0u8; ours.len()];
        prop_assert_eq!(codec::Codec::new().encode_into_slice(&value, &mut slot).unwrap(), ours.len());
        prop_assert_eq!(&slot, &ours);
        // Floats compare by bits (NaN), so compare re-encodings.
        let back: Rich = codec::decode(&ours).unwrap();
        prop_assert_eq!(codec::encode(&back).unwrap(), ours);
    }

    #[test]
    fn garbage_is_refused_or_accepted_as_bincode_does(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        fn agree<T: Serialize + serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<(), TestCaseError> {
            let ours = codec::decode::<T>(bytes).ok().map(|v| bincode_encode(&v));
            let theirs = bincode_decode::<T>(bytes).map(|v| bincode_encode(&v));
            prop_assert_eq!(ours, theirs);
            Ok(())
        }
        agree::<Vec<u8>>(&bytes)?;
        agree::<Vec<f64>>(&bytes)?;
        agree::<Vec<f32>>(&bytes)?;
        agree::<Vec<i8>>(&bytes)?;
        agree::<String>(&bytes)?;
        agree::<(u16, i32, char, Option<bool>)>(&bytes)?;
        agree::<Vec<Shape>>(&bytes)?;
        agree::<(u128, i128, i16)>(&bytes)?;
        agree::<BTreeMap<u32, Vec<u8>>>(&bytes)?;
    }

    #[test]
    fn a_cut_short_value_is_an_error(value in rich(), cut in any::<prop::sample::Index>()) {
        let bytes = codec::encode(&value).unwrap();
        let at = cut.index(bytes.len());
        prop_assert!(codec::decode::<Rich>(&bytes[..at]).is_err());
    }
}

#[test]
fn plain_runs_at_any_depth_use_the_same_bytes() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Frame {
        id: u32,
        samples: Vec<f64>,
        raw: Option<Vec<u8>>,
    }
    let frame = Frame {
        id: 300,
        samples: vec![0.5, -1.25, f64::INFINITY],
        raw: Some(b"abc".to_vec()),
    };
    let bytes = codec::encode(&frame).unwrap();
    assert_eq!(bytes, bincode_encode(&frame));
    assert_eq!(codec::decode::<Frame>(&bytes).unwrap(), frame);
    // A slice encodes like the Vec it came from, and a boxed slice decodes.
    let data: &[f32] = &[1.0, 2.0];
    assert_eq!(
        codec::encode(data).unwrap(),
        codec::encode(&data.to_vec()).unwrap()
    );
    let boxed: Box<[f32]> = codec::decode(&codec::encode(data).unwrap()).unwrap();
    assert_eq!(&*boxed, data);
}

#[test]
fn a_plain_run_longer_than_its_input_is_refused_before_allocating() {
    // 2^40 doubles claimed, 3 bytes given.
    let mut bytes = vec![0xFD];
    bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());
    bytes.extend_from_slice(&[1, 2, 3]);
    for err in [
        codec::decode::<Vec<f64>>(&bytes).unwrap_err(),
        codec::decode::<Vec<u8>>(&bytes).unwrap_err(),
    ] {
        assert!(
            matches!(err, CodecError::Decode(DecodeError::UnexpectedEnd)),
            "{err:?}"
        );
    }
    // A length times the element size that overflows is the same error.
    let mut bytes = vec![0xFD];
    bytes.extend_from_slice(&(u64::MAX / 4).to_le_bytes());
    assert!(codec::decode::<Vec<f64>>(&bytes).is_err());
}

#[test]
fn nesting_deeper_than_the_bound_is_an_error_not_a_stack_overflow() {
    #[derive(Serialize, Deserialize, Debug)]
    enum List {
        Nil,
        Cons(Box<List>),
    }
    // A million `Cons` tags: each level is one byte.
    let mut bytes = vec![1u8; 1_000_000];
    bytes.push(0);
    let err = codec::decode::<List>(&bytes).unwrap_err();
    assert!(
        matches!(err, CodecError::Decode(DecodeError::TooDeep)),
        "{err:?}"
    );
    // Within the bound it decodes.
    let shallow = [1, 1, 1, 0];
    assert!(codec::decode::<List>(&shallow).is_ok());
}

#[test]
fn a_long_run_of_empty_elements_ends_with_an_error() {
    // Nine bytes of input claim 2^60 units.
    let mut bytes = vec![0xFD];
    bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
    let err = codec::decode::<Vec<()>>(&bytes).unwrap_err();
    assert!(
        matches!(err, CodecError::Decode(DecodeError::TooManyEmptyElements)),
        "{err:?}"
    );
    // A modest one is fine, and is what bincode reads too.
    let bytes = codec::encode(&vec![(); 1000]).unwrap();
    assert_eq!(codec::decode::<Vec<()>>(&bytes).unwrap().len(), 1000);
    assert_eq!(bincode_decode::<Vec<()>>(&bytes).unwrap().len(), 1000);
}
