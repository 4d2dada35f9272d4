//! Where an encode writes: a growing buffer, a fixed slice (a ring slot) or
//! nowhere (to measure). Each stops at a byte limit.

use super::error::SerError;

/// An output with a byte limit.
pub(super) trait Sink {
    /// Appends `bytes`, or fails with [`SerError::Full`] past the limit.
    fn put(&mut self, bytes: &[u8]) -> Result<(), SerError>;

    /// Bytes written so far.
    fn written(&self) -> usize;
}

/// Capacity of an encoding buffer at its first byte: most messages fit, so
/// they cost one allocation instead of a chain of small reallocations (and
/// an empty encoding costs none).
const FIRST_CAPACITY: usize = 64;

/// Appends to a `Vec`, at most `max` bytes past where it started.
pub(super) struct VecSink<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
    end: usize,
}

impl<'a> VecSink<'a> {
    pub(super) fn new(out: &'a mut Vec<u8>, max: usize) -> Self {
        let start = out.len();
        Self {
            out,
            start,
            end: start.saturating_add(max),
        }
    }
}

impl Sink for VecSink<'_> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) -> Result<(), SerError> {
        if bytes.len() > self.end - self.out.len() {
            return Err(SerError::Full);
        }
        if self.out.capacity() == 0 {
            self.out.reserve(bytes.len().max(FIRST_CAPACITY));
        }
        crate::copy::extend(self.out, bytes);
        Ok(())
    }

    fn written(&self) -> usize {
        self.out.len() - self.start
    }
}

/// Fills a slice from its start.
pub(super) struct SliceSink<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> SliceSink<'a> {
    /// At most `max` bytes of `buf`.
    pub(super) fn new(buf: &'a mut [u8], max: usize) -> Self {
        let len = buf.len().min(max);
        Self {
            buf: &mut buf[..len],
            pos: 0,
        }
    }
}

impl Sink for SliceSink<'_> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) -> Result<(), SerError> {
        let dst = self
            .buf
            .get_mut(self.pos..self.pos + bytes.len())
            .ok_or(SerError::Full)?;
        crate::copy::copy(dst, bytes);
        self.pos += bytes.len();
        Ok(())
    }

    fn written(&self) -> usize {
        self.pos
    }
}

/// Counts, up to `max`.
pub(super) struct CountSink {
    count: usize,
    max: usize,
}

impl CountSink {
    pub(super) fn new(max: usize) -> Self {
        Self { count: 0, max }
    }
}

impl Sink for CountSink {
    #[inline]
    fn put(&mut self, bytes: &[u8]) -> Result<(), SerError> {
        if bytes.len() > self.max - self.count {
            return Err(SerError::Full);
        }
        self.count += bytes.len();
        Ok(())
    }

    fn written(&self) -> usize {
        self.count
    }
}
