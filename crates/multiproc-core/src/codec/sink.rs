//! Where an encode writes: a growing buffer, a fixed slice (a ring slot), a
//! slice that spills into a buffer when it is full, or nowhere (to
//! measure). Each stops at a byte limit.

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

/// Fills a slice from its start until a write would not fit, then copies
/// what it holds to the end of a `Vec` and goes on there: a value of
/// unknown length is encoded in place when it fits, and once either way.
/// At most `max` bytes in all.
pub(super) struct SpillSink<'a> {
    first: &'a mut [u8],
    /// Bytes in `first`, until it spilled.
    pos: usize,
    spill: &'a mut Vec<u8>,
    /// Where this encoding starts in `spill`.
    start: usize,
    spilled: bool,
    max: usize,
}

impl<'a> SpillSink<'a> {
    pub(super) fn new(first: &'a mut [u8], spill: &'a mut Vec<u8>, max: usize) -> Self {
        let start = spill.len();
        Self {
            first,
            pos: 0,
            spill,
            start,
            spilled: false,
            max,
        }
    }

    /// Whether the encoding went on in the `Vec`.
    pub(super) fn spilled(&self) -> bool {
        self.spilled
    }
}

impl Sink for SpillSink<'_> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) -> Result<(), SerError> {
        if bytes.len() > self.max - self.written() {
            return Err(SerError::Full);
        }
        if !self.spilled {
            if let Some(dst) = self.first.get_mut(self.pos..self.pos + bytes.len()) {
                crate::copy::copy(dst, bytes);
                self.pos += bytes.len();
                return Ok(());
            }
            self.spilled = true;
            self.spill.reserve(self.pos + bytes.len());
            crate::copy::extend(self.spill, &self.first[..self.pos]);
        }
        crate::copy::extend(self.spill, bytes);
        Ok(())
    }

    fn written(&self) -> usize {
        if self.spilled {
            self.spill.len() - self.start
        } else {
            self.pos
        }
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
