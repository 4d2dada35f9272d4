//! Garbage in, typed error out: the codec and the segment header validator
//! never panic and never allocate by a corrupt length.

use multiproc_core::{Header, Segment, codec};
use proptest::prelude::*;
use std::collections::BTreeMap;

type Message = (u64, String, Vec<u8>, Option<BTreeMap<u16, Vec<String>>>);

fn message() -> impl Strategy<Value = Message> {
    (
        any::<u64>(),
        ".{0,24}",
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::option::of(proptest::collection::btree_map(
            any::<u16>(),
            proptest::collection::vec(".{0,8}", 0..4),
            0..6,
        )),
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn codec_decode_of_garbage_is_an_error_or_a_value(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = codec::decode::<Message>(&bytes);
        let _ = codec::decode::<Vec<String>>(&bytes);
        let _ = codec::decode::<Segment>(&bytes);
        let _ = codec::decode_with_fds::<(Segment, Segment)>(&bytes, Vec::new());
    }

    #[test]
    fn codec_round_trips(value in message()) {
        let bytes = codec::encode(&value).unwrap();
        prop_assert_eq!(codec::decode::<Message>(&bytes).unwrap(), value);
        // One byte short is an error, never a panic.
        if !bytes.is_empty() {
            prop_assert!(codec::decode::<Message>(&bytes[..bytes.len() - 1]).is_err());
        }
    }

    #[test]
    fn huge_length_prefixes_do_not_allocate(len in (1u64 << 32)..u64::MAX, tail in proptest::collection::vec(any::<u8>(), 0..16)) {
        // bincode varint: 0xFD introduces a u64 length.
        let mut bytes = vec![0xFD];
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(&tail);
        prop_assert!(codec::decode::<String>(&bytes).is_err());
        prop_assert!(codec::decode::<Vec<u8>>(&bytes).is_err());
        prop_assert!(codec::decode::<Vec<Vec<u64>>>(&bytes).is_err());
    }

    #[test]
    fn header_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), version in any::<u32>(), avail in any::<u64>()) {
        if let Ok(header) = Header::parse(&bytes) {
            let _ = header.expect(*b"ANYTHING", version, avail);
        }
    }

    #[test]
    fn segment_header_validation_of_garbage(bytes in proptest::collection::vec(any::<u8>(), 32..96), offset in 0usize..128) {
        let segment = Segment::anonymous(128).unwrap();
        segment.write_at(0, &bytes).unwrap();
        if let Ok(header) = segment.read_header(offset, *b"GARBAGE\0", 1) {
            prop_assert_eq!(header.magic(), *b"GARBAGE\0");
            prop_assert!(header.size() as usize <= 128 - offset);
        }
    }
}
