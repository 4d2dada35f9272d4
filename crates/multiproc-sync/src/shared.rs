//! [`Shared<T>`]: a typed, validated place in a [`Segment`] that every
//! primitive is built on, and the wire form that lets it travel.
//!
//! # Safety
//!
//! `Shared<T>` caches a pointer to its object so that hot paths skip the
//! bounds checks of [`Segment::view`]. The pointer is computed once, by
//! `view` (bounds and alignment checked), and stays valid because the same
//! struct holds an `Arc` of the segment, which keeps the mapping alive; the
//! mapping is never moved or resized (memfd segments are sealed). `T` is
//! [`SharedSafe`], so a shared reference to it is sound while other
//! processes write the same bytes.
#![allow(unsafe_code)]

use multiproc_core::segment::SharedSafe;
use multiproc_core::{Header, HeaderError, Segment, SegmentError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::error::{AttachError, CreateError};
use crate::layout::LAYOUT_VERSION;

/// A validated object of type `T` at `offset` in `segment`.
pub(crate) struct Shared<T> {
    segment: Arc<Segment>,
    offset: usize,
    ptr: NonNull<T>,
}

// SAFETY: the pointer targets shared memory whose `T: SharedSafe` (hence
// `Sync`) is sound to reach from any thread; the `Arc<Segment>` is itself
// Send + Sync and keeps the mapping alive wherever the handle goes.
unsafe impl<T: SharedSafe> Send for Shared<T> {}
// SAFETY: as for `Send`: `&Shared<T>` only hands out `&T`, and `T: Sync`.
unsafe impl<T: SharedSafe> Sync for Shared<T> {}

impl<T: SharedSafe> Shared<T> {
    /// Bytes an object of type `T` occupies, header included.
    pub(crate) const SIZE: usize = size_of::<T>();

    /// A new anonymous segment holding one `T`, initialised by `init` and
    /// then published under `magic`.
    pub(crate) fn create(magic: [u8; 8], init: impl FnOnce(&T)) -> Result<Self, CreateError> {
        let segment = Arc::new(Segment::anonymous(Self::SIZE)?);
        Self::create_in(segment, 0, magic, init)
    }

    /// Initialises a `T` at `offset` in `segment` and publishes its header.
    ///
    /// Phase one writes every field (`init` sees a view whose fields it must
    /// all set); phase two publishes the header with `Release`, so an
    /// attacher that validates the header sees the initialised fields.
    pub(crate) fn create_in(
        segment: Arc<Segment>,
        offset: usize,
        magic: [u8; 8],
        init: impl FnOnce(&T),
    ) -> Result<Self, CreateError> {
        let object = segment.view::<T>(offset)?;
        init(object);
        // SYNC: the Release store of the ready word inside `publish_header`
        // pairs with the Acquire load in `read_header` (in `attach`).
        segment.publish_header(
            offset,
            &Header::new(magic, LAYOUT_VERSION, Self::SIZE as u64),
        )?;
        let ptr = NonNull::from(object);
        Ok(Self {
            segment,
            offset,
            ptr,
        })
    }

    /// Attaches to the `T` at `offset`: the header must carry `magic`, this
    /// crate's layout version and exactly `T`'s size, and `validate` must
    /// accept the object's state.
    pub(crate) fn attach(
        segment: Arc<Segment>,
        offset: usize,
        magic: [u8; 8],
        validate: impl FnOnce(&T) -> Result<(), &'static str>,
    ) -> Result<Self, AttachError> {
        let header = segment.read_header(offset, magic, LAYOUT_VERSION)?;
        if header.size() != Self::SIZE as u64 {
            return Err(SegmentError::Header(HeaderError::BadSize {
                declared: header.size(),
                available: Self::SIZE as u64,
            })
            .into());
        }
        let object = segment.view::<T>(offset)?;
        validate(object).map_err(AttachError::Corrupt)?;
        let ptr = NonNull::from(object);
        Ok(Self {
            segment,
            offset,
            ptr,
        })
    }

    /// The object.
    #[inline]
    pub(crate) fn get(&self) -> &T {
        // SAFETY: see the module docs: the pointer came from `Segment::view`
        // (in bounds, aligned), the `Arc` keeps the mapping alive for as long
        // as `self`, and `T: SharedSafe` makes `&T` sound under concurrent
        // writes from other processes.
        unsafe { self.ptr.as_ref() }
    }

    /// The segment holding the object.
    pub(crate) fn segment(&self) -> &Arc<Segment> {
        &self.segment
    }

    /// Where the object starts in its segment.
    pub(crate) fn offset(&self) -> usize {
        self.offset
    }

    /// Whether `other` is the same object in the same mapping.
    pub(crate) fn same_as(&self, other: &Self) -> bool {
        self.ptr == other.ptr
    }

    /// Deserializes the wire form and attaches, mapping attach failures to
    /// a serde error.
    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        deserializer: D,
        magic: [u8; 8],
        validate: impl FnOnce(&T) -> Result<(), &'static str>,
    ) -> Result<Self, D::Error> {
        Wire::deserialize(deserializer)?
            .attach(magic, validate)
            .map_err(serde::de::Error::custom)
    }
}

/// Serializes as the segment (its descriptor goes out of band) and the
/// offset.
impl<T> Serialize for Shared<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WireRef {
            segment: &self.segment,
            offset: self.offset as u64,
        }
        .serialize(serializer)
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Self {
            segment: Arc::clone(&self.segment),
            offset: self.offset,
            ptr: self.ptr,
        }
    }
}

impl<T> fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::os::fd::{AsFd, AsRawFd};
        f.debug_struct("Shared")
            .field("fd", &self.segment.as_fd().as_raw_fd())
            .field("offset", &self.offset)
            .finish()
    }
}

/// The wire form of every primitive: the segment (descriptor out of band)
/// and the object's offset in it.
#[derive(Serialize)]
struct WireRef<'a> {
    segment: &'a Segment,
    offset: u64,
}

/// The received wire form, not yet attached.
#[derive(Deserialize)]
pub(crate) struct Wire {
    segment: Segment,
    offset: u64,
}

impl Wire {
    /// Attaches to the object the wire form names.
    pub(crate) fn attach<T: SharedSafe>(
        self,
        magic: [u8; 8],
        validate: impl FnOnce(&T) -> Result<(), &'static str>,
    ) -> Result<Shared<T>, AttachError> {
        let offset = usize::try_from(self.offset)
            .map_err(|_| AttachError::Corrupt("object offset out of range"))?;
        Shared::attach(Arc::new(self.segment), offset, magic, validate)
    }
}

/// The placement half of a handle type whose whole state is
/// `shared: Shared<$layout>`, set up by the calling module's `init` and
/// checked by `$validate`, with the module's `MAGIC`: `MEMORY_SIZE`, `new`,
/// `create_in`, `attach`, `segment`, and serde. `$what` names a new one in
/// the docs ("unlocked lock").
macro_rules! shared_handle {
    ($ty:ident, $layout:ty, $what:literal, $validate:expr) => {
        impl $ty {
            #[doc = concat!("Bytes a `", stringify!($ty), "` occupies in a segment (see [`create_in`](Self::create_in)).")]
            pub const MEMORY_SIZE: usize = $crate::shared::Shared::<$layout>::SIZE;

            #[doc = concat!("A new ", $what, " in its own anonymous shared-memory segment.")]
            ///
            /// # Errors
            ///
            /// [`CreateError::Segment`](crate::CreateError::Segment) when the
            /// segment cannot be made.
            pub fn new() -> Result<Self, $crate::CreateError> {
                Ok(Self {
                    shared: $crate::shared::Shared::create(MAGIC, init)?,
                })
            }

            #[doc = concat!("A new ", $what, " at `offset` in `segment` (64-byte aligned,")]
            /// [`MEMORY_SIZE`](Self::MEMORY_SIZE) bytes), for types that keep
            /// it beside their data. Whatever was there is overwritten;
            /// nobody may be using those bytes.
            ///
            /// # Errors
            ///
            /// [`CreateError::Segment`](crate::CreateError::Segment) when the
            /// range is out of bounds or misaligned.
            pub fn create_in(
                segment: std::sync::Arc<multiproc_core::Segment>,
                offset: usize,
            ) -> Result<Self, $crate::CreateError> {
                Ok(Self {
                    shared: $crate::shared::Shared::create_in(segment, offset, MAGIC, init)?,
                })
            }

            #[doc = concat!("Attaches to the `", stringify!($ty), "` at `offset` in `segment`, checking its header.")]
            ///
            /// # Errors
            ///
            #[doc = concat!("[`AttachError`](crate::AttachError) when there is no `", stringify!($ty), "` there")]
            /// (another object, another layout version, garbage) or it does
            /// not fit.
            pub fn attach(
                segment: std::sync::Arc<multiproc_core::Segment>,
                offset: usize,
            ) -> Result<Self, $crate::AttachError> {
                Ok(Self {
                    shared: $crate::shared::Shared::attach(segment, offset, MAGIC, $validate)?,
                })
            }

            /// The segment it lives in.
            #[must_use]
            pub fn segment(&self) -> &std::sync::Arc<multiproc_core::Segment> {
                self.shared.segment()
            }
        }

        $crate::shared::handle_serde!($ty, $validate);
    };
}
pub(crate) use shared_handle;

/// `Serialize` and `Deserialize` for a handle type whose whole state is
/// `shared: Shared<_>`: attaching checks the calling module's `MAGIC` and
/// the given state validator.
macro_rules! handle_serde {
    ($ty:ty, $validate:expr) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                self.shared.serialize(serializer)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                Ok(Self {
                    shared: $crate::shared::Shared::deserialize(deserializer, MAGIC, $validate)?,
                })
            }
        }
    };
}
pub(crate) use handle_serde;
