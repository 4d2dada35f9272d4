//! [`InPlace`]: the guard of a message read in place, which leaves the
//! queue when the guard drops.

use std::fmt;
use std::ops::Deref;

use crate::ring::{Consumer, Rec};

pub(crate) enum Lent<'q> {
    Ring(Consumer<'q>, Rec),
    Owned(Vec<u8>),
}

/// A message read in place; see
/// [`Queue::get_in_place`](crate::Queue::get_in_place). Derefs to the
/// message bytes; the message leaves the queue when this drops.
#[must_use = "the message leaves the queue when the guard drops"]
#[clippy::has_significant_drop]
pub struct InPlace<'q> {
    pub(crate) inner: Lent<'q>,
}

impl InPlace<'_> {
    /// Whether the bytes are borrowed from the ring (`false` for a message
    /// assembled from fragments).
    #[must_use]
    pub fn is_borrowed(this: &Self) -> bool {
        matches!(this.inner, Lent::Ring(..))
    }
}

impl Deref for InPlace<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.inner {
            Lent::Ring(c, rec) => c.bytes(rec),
            Lent::Owned(buf) => buf,
        }
    }
}

impl AsRef<[u8]> for InPlace<'_> {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for InPlace<'_> {
    fn drop(&mut self) {
        if let Lent::Ring(c, rec) = &self.inner {
            c.finish(rec);
        }
    }
}

impl fmt::Debug for InPlace<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InPlace")
            .field("len", &self.len())
            .field("borrowed", &Self::is_borrowed(self))
            .finish()
    }
}
