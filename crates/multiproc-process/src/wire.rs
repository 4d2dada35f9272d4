//! What travels between a parent and its child over the bootstrap
//! [`Connection`]: the [`Header`] and the arguments ([`Payload`]) one way,
//! the [`Outcome`] the other, and [`ByteBuf`], the byte string they are
//! made of.

use multiproc_core::SharedFd;
use multiproc_pipe::Connection;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::os::fd::OwnedFd;

use crate::exe::ExeId;

/// Exit code of a child that could not start its target (wrong executable,
/// undecodable arguments, parent gone).
pub(crate) const EXIT_BOOTSTRAP: i32 = 121;

/// What the parent tells the child before the arguments.
#[derive(Serialize, Deserialize)]
pub(crate) struct Header {
    pub(crate) exe: ExeId,
    pub(crate) trampoline: i64,
    pub(crate) target: i64,
    pub(crate) name: String,
    pub(crate) daemon: bool,
    /// A daemon started from the parent's main thread, whose exit is the
    /// process's: the kernel's parent-death signal serves it. (Not looked
    /// up for other children.)
    pub(crate) from_main_thread: bool,
    pub(crate) parent: u64,
    pub(crate) parent_name: String,
}

/// Encoded bytes plus the descriptors that belong to them.
#[derive(Serialize, Deserialize)]
pub(crate) struct Payload {
    bytes: ByteBuf,
    fds: Vec<SharedFd>,
}

impl Payload {
    pub(crate) fn new(bytes: Vec<u8>, fds: Vec<OwnedFd>) -> Self {
        Self {
            bytes: ByteBuf(bytes),
            fds: fds.into_iter().map(SharedFd::from).collect(),
        }
    }

    /// Whether descriptors travel with the value.
    pub(crate) fn has_fds(&self) -> bool {
        !self.fds.is_empty()
    }

    /// Encoded length of the value (descriptors aside).
    pub(crate) fn len(&self) -> usize {
        self.bytes.0.len()
    }

    pub(crate) fn into_parts(self) -> (Vec<u8>, Vec<OwnedFd>) {
        (
            self.bytes.0,
            self.fds.into_iter().map(SharedFd::into_inner).collect(),
        )
    }
}

/// How the target ended, as the child reports it.
#[derive(Serialize, Deserialize)]
pub(crate) enum Outcome {
    Returned(Payload),
    Panicked(String),
    Bootstrap(String),
}

/// [`Outcome::Returned`] with borrowed, descriptor-free bytes: encodes to
/// the same bytes (a test checks), without owning a heap buffer.
#[derive(Serialize)]
enum ReturnedRef<'a> {
    Returned {
        bytes: BytesRef<'a>,
        fds: &'a [SharedFd],
    },
}

/// `&[u8]` as one serde byte string, as [`ByteBuf`] encodes.
struct BytesRef<'a>(&'a [u8]);

impl Serialize for BytesRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// Room on the stack for a small result and its report.
const SMALL_RESULT: usize = 240;

/// Sends [`Outcome::Returned`] for `value`. A small value without
/// descriptors is encoded on the stack: in a freshly forked child the first
/// heap allocations cost several copy-on-write faults, more than the whole
/// rest of a small report.
pub(crate) fn send_returned<R: Serialize>(conn: &Connection, value: &R) -> i32 {
    let codec = multiproc_core::Codec::new();
    let mut value_buf = [0u8; SMALL_RESULT];
    let mut frame_buf = [0u8; SMALL_RESULT + 16];
    if let Ok(len) = codec.encode_into_slice(value, &mut value_buf) {
        let report = ReturnedRef::Returned {
            bytes: BytesRef(&value_buf[..len]),
            fds: &[],
        };
        if let Ok(len) = codec.encode_into_slice(&report, &mut frame_buf) {
            let _ = conn.send_bytes(&frame_buf[..len]);
            return 0;
        }
    }
    let outcome = match codec.encode_with_fds(value) {
        Ok((bytes, fds)) => Outcome::Returned(Payload::new(bytes, fds)),
        Err(err) => Outcome::Bootstrap(format!("encoding the result failed: {err}")),
    };
    let _ = conn.send(&outcome);
    outcome.exit_code()
}

impl Outcome {
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            Self::Returned(_) => 0,
            Self::Panicked(_) => 1,
            Self::Bootstrap(_) => EXIT_BOOTSTRAP,
        }
    }
}

/// `Vec<u8>` as one serde byte string (a plain `Vec<u8>` is a sequence of
/// single bytes: much slower for large values).
pub(crate) struct ByteBuf(pub(crate) Vec<u8>);

impl Serialize for ByteBuf {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl Visitor<'_> for Bytes {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            // Bytes the decoder owns are kept, not copied.
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
        }
        deserializer.deserialize_bytes(Bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_report_encodes_as_the_owned_one() {
        let codec = multiproc_core::Codec::new();
        for value in [vec![], vec![1u8, 2, 3], vec![7u8; 200]] {
            let owned = codec
                .encode(&Outcome::Returned(Payload::new(value.clone(), Vec::new())))
                .unwrap();
            let borrowed = codec
                .encode(&ReturnedRef::Returned {
                    bytes: BytesRef(&value),
                    fds: &[],
                })
                .unwrap();
            assert_eq!(owned, borrowed);
            // And the receiver reads it back.
            match codec.decode::<Outcome>(&borrowed).unwrap() {
                Outcome::Returned(payload) => assert_eq!(payload.into_parts().0, value),
                _ => panic!("wrong variant"),
            }
        }
    }
}
