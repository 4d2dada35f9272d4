//! The [`Queue`] handle: puts and gets of typed values, raw bytes and
//! in-place messages, each in its blocking, `try_` and timed form, and the
//! handle's serialized form (its segment).

use multiproc_core::{Codec, CodecError, Segment, copy};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use multiproc_core::time::deadline_after;

use crate::builder::QueueBuilder;
use crate::error::{
    GetError, GetTimeoutError, PutError, PutTimeoutError, QueueError, TryGetError, TryPutError,
};
use crate::in_place::{InPlace, Lent};
use crate::ready::Readiness;
use crate::ring::consumer::Next;
use crate::ring::producer::Encoded;
use crate::ring::{Block, Kind, Ring, Stop};

/// A multi-producer multi-consumer queue between processes, in shared
/// memory. See the [crate docs](crate) for a tour.
///
/// A `Queue` is a handle: clones in one process share the mapping, and the
/// handle serializes (with its descriptor) to travel to another process.
/// The memory goes when the last handle in the last process is dropped.
///
/// # Examples
///
/// ```
/// use multiproc_queue::Queue;
///
/// let q = Queue::with_capacity(1)?;
/// q.put("hello".to_string())?;
/// assert!(q.try_put("world".to_string()).unwrap_err().is_full());
/// assert_eq!(q.get()?, "hello");
/// assert!(q.try_get().unwrap_err().is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Queue<T> {
    pub(crate) ring: Arc<Ring>,
    _marker: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Self {
            ring: Arc::clone(&self.ring),
            _marker: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::os::fd::AsRawFd;
        f.debug_struct("Queue")
            .field("fd", &self.ring.segment().as_fd().as_raw_fd())
            .field("kind", &self.ring.kind().name())
            .field("ring_bytes", &self.ring.ring_bytes())
            .field("capacity", &self.capacity())
            .field("qsize", &self.qsize())
            .finish()
    }
}

impl<T> AsFd for Queue<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ring.segment().as_fd()
    }
}

thread_local! {
    /// Encoding buffer reused across puts (released when a huge value grew it).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Scratch buffers larger than this are freed after use.
const SCRATCH_KEEP: usize = 1 << 20;

fn with_encoded<T: Serialize, R>(
    codec: Codec,
    value: &T,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R, CodecError> {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            codec.encode_into(value, &mut buf)?;
            let out = f(&buf);
            if buf.capacity() > SCRATCH_KEEP {
                *buf = Vec::new();
            }
            Ok(out)
        }
        // Re-entered (a `Serialize` impl that puts): use a fresh buffer.
        Err(_) => Ok(f(&codec.encode(value)?)),
    })
}

fn put_error<V>(value: V, stop: Stop) -> PutError<V> {
    match stop {
        Stop::Closed => PutError::Closed(value),
        Stop::Failed(e) => PutError::Failed(value, e),
        Stop::WouldBlock | Stop::Timeout => {
            PutError::Failed(value, QueueError::Corrupt("unbounded wait timed out"))
        }
    }
}

fn try_put_error<V>(value: V, stop: Stop) -> TryPutError<V> {
    match stop {
        Stop::WouldBlock | Stop::Timeout => TryPutError::Full(value),
        Stop::Closed => TryPutError::Closed(value),
        Stop::Failed(e) => TryPutError::Failed(value, e),
    }
}

fn put_timeout_error<V>(value: V, stop: Stop) -> PutTimeoutError<V> {
    match stop {
        Stop::WouldBlock | Stop::Timeout => PutTimeoutError::Timeout(value),
        Stop::Closed => PutTimeoutError::Closed(value),
        Stop::Failed(e) => PutTimeoutError::Failed(value, e),
    }
}

fn get_error(stop: Stop) -> GetError {
    match stop {
        Stop::Closed => GetError::Closed,
        Stop::Failed(e) => GetError::Failed(e),
        Stop::WouldBlock | Stop::Timeout => {
            GetError::Failed(QueueError::Corrupt("unbounded wait timed out"))
        }
    }
}

fn try_get_error(stop: Stop) -> TryGetError {
    match stop {
        Stop::WouldBlock | Stop::Timeout => TryGetError::Empty,
        Stop::Closed => TryGetError::Closed,
        Stop::Failed(e) => TryGetError::Failed(e),
    }
}

fn get_timeout_error(stop: Stop) -> GetTimeoutError {
    match stop {
        Stop::WouldBlock | Stop::Timeout => GetTimeoutError::Timeout,
        Stop::Closed => GetTimeoutError::Closed,
        Stop::Failed(e) => GetTimeoutError::Failed(e),
    }
}

pub(crate) fn until(timeout: Duration) -> Block {
    Block::Until(deadline_after(timeout))
}

pub(crate) const FOREVER: Block = Block::Until(None);

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// A queue with no item bound over a
    /// [`DEFAULT_RING_BYTES`](crate::DEFAULT_RING_BYTES) ring (Python's
    /// `Queue()`). Only the pages that messages touch are committed.
    ///
    /// # Errors
    ///
    /// [`QueueError::Segment`] when the shared memory cannot be created.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_queue::Queue;
    ///
    /// let q = Queue::new()?;
    /// for i in 0..1000u32 {
    ///     q.put(i)?;
    /// }
    /// assert_eq!(q.qsize(), 1000);
    /// assert_eq!(q.capacity(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new() -> Result<Self, QueueError> {
        QueueBuilder::new().build()
    }

    /// A queue holding at most `maxsize` messages (Python's `Queue(maxsize)`).
    ///
    /// # Errors
    ///
    /// [`QueueError::InvalidConfig`] for 0 or more than
    /// [`MAX_CAPACITY`](crate::MAX_CAPACITY);
    /// [`QueueError::Segment`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_queue::Queue;
    ///
    /// let q = Queue::with_capacity(2)?;
    /// q.put(1u8)?;
    /// q.put(2u8)?;
    /// assert!(q.is_full());
    /// assert_eq!(q.try_put(3u8).unwrap_err().into_inner(), 3);
    /// assert!(Queue::<u8>::with_capacity(0).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_capacity(maxsize: usize) -> Result<Self, QueueError> {
        QueueBuilder::new().capacity(maxsize).build()
    }
}

impl Queue<()> {
    /// A [`QueueBuilder`] for other sizes; the element type is chosen by
    /// [`build`](QueueBuilder::build).
    pub const fn builder() -> QueueBuilder {
        QueueBuilder::new()
    }
}

impl<T> Queue<T> {
    pub(crate) fn from_ring(ring: Ring) -> Self {
        Self {
            ring: Arc::new(ring),
            _marker: PhantomData,
        }
    }

    /// Attaches to a queue whose segment arrived another way (an inherited
    /// descriptor turned into a [`Segment`] with [`Segment::from_fd`]).
    /// Serde (with the descriptor table of `multiproc_core::codec`) does
    /// this for you.
    ///
    /// # Errors
    ///
    /// [`QueueError::Segment`] for a missing or wrong header,
    /// [`QueueError::Corrupt`] for an inconsistent configuration,
    /// [`QueueError::WrongKind`] for a `SimpleQueue` or `JoinableQueue`
    /// segment.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_core::Segment;
    /// use multiproc_queue::Queue;
    /// use std::os::fd::AsFd;
    ///
    /// let q = Queue::new()?;
    /// q.put(5u16)?;
    /// let fd = q.as_fd().try_clone_to_owned()?;
    /// let other: Queue<u16> = Queue::attach(Segment::from_fd(fd)?)?;
    /// assert_eq!(other.get()?, 5);
    ///
    /// let garbage = Segment::anonymous(8192)?;
    /// assert!(Queue::<u16>::attach(garbage).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn attach(segment: Segment) -> Result<Self, QueueError> {
        Ok(Self::from_ring(Ring::attach(segment, Some(Kind::Queue))?))
    }

    pub(crate) fn attach_kind(segment: Segment, kind: Kind) -> Result<Self, QueueError> {
        Ok(Self::from_ring(Ring::attach(segment, Some(kind))?))
    }

    /// The shared-memory segment (for descriptor passing by hand).
    #[must_use]
    pub fn segment(&self) -> &Segment {
        self.ring.segment()
    }

    /// A doorbell for this process's async waiters on the queue: the
    /// runtime-neutral base of the async adapters (see [`Readiness`] for
    /// the protocol). Each one takes one of the queue's
    /// [`BELL_SLOTS`](multiproc_core::doorbell::BELL_SLOTS) slots until it
    /// drops; share one among the tasks of a process.
    ///
    /// # Errors
    ///
    /// [`QueueError::Doorbell`] when the doorbell's socket cannot be made,
    /// [`QueueError::NoDoorbellSlot`] when live processes hold every slot.
    ///
    /// ```
    /// use multiproc_queue::Queue;
    ///
    /// let q: Queue<u8> = Queue::new()?;
    /// let ready = q.readiness()?;
    /// // Register `ready` (it is `AsFd`) with an event loop for readability.
    /// # drop(ready);
    /// # Ok::<(), multiproc_queue::QueueError>(())
    /// ```
    pub fn readiness(&self) -> Result<Readiness, QueueError> {
        Readiness::new(Arc::clone(&self.ring))
    }

    /// Whether this handle's next blocking get waits for the producers
    /// before it looks at tail (see `PACE` in `ring/consumer.rs`).
    #[cfg(test)]
    pub(crate) fn paces_next_get(&self) -> bool {
        self.ring.caught_up_outpaced()
    }

    fn codec(&self) -> Codec {
        Codec::new().with_max_size(usize::try_from(self.ring.max_message()).unwrap_or(usize::MAX))
    }

    /// Messages in the queue now (Python's `qsize()`); a snapshot that other
    /// processes may change at once. A message still being written in
    /// fragments does not count yet.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_queue::Queue;
    ///
    /// let q = Queue::new()?;
    /// assert_eq!(q.qsize(), 0);
    /// q.put(())?;
    /// assert_eq!(q.qsize(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn qsize(&self) -> usize {
        self.ring.qsize() as usize
    }

    /// Whether no message is in the queue (Python's `empty()`); a snapshot.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_queue::Queue;
    ///
    /// let q = Queue::new()?;
    /// assert!(q.is_empty());
    /// q.put(1u8)?;
    /// assert!(!q.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "empty")]
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.qsize() == 0
    }

    /// Whether the item bound is reached (Python's `full()`); always `false`
    /// without one. A snapshot. (A put can still wait for ring bytes.)
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_queue::Queue;
    ///
    /// let q = Queue::with_capacity(1)?;
    /// assert!(!q.is_full());
    /// q.put(1u8)?;
    /// assert!(q.is_full());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "full")]
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.capacity().is_some_and(|max| self.qsize() >= max)
    }

    /// Whether the queue was built with [pacing](QueueBuilder::pacing).
    #[must_use]
    pub fn pacing(&self) -> bool {
        self.ring.pacing()
    }

    /// The item bound, if any.
    #[must_use]
    pub fn capacity(&self) -> Option<usize> {
        match self.ring.maxsize() {
            0 => None,
            n => Some(n as usize),
        }
    }

    /// Bytes of ring (shared memory for messages in flight).
    #[must_use]
    pub fn ring_bytes(&self) -> usize {
        self.ring.ring_bytes()
    }

    /// The largest payload that travels as one record and so can be written
    /// and read in place ([`put_with`](Self::put_with),
    /// [`get_in_place`](Self::get_in_place)): half the ring, less 16 bytes.
    #[must_use]
    pub fn max_in_place(&self) -> usize {
        self.ring.max_inline()
    }

    /// Closes the queue for every process (Python's `close()` plus the
    /// guarantee it lacks): puts fail with `Closed` from now on, a put
    /// already in progress finishes first, blocked producers are woken with
    /// `Closed`, and consumers drain what is left and then get `Closed`.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_queue::Queue;
    ///
    /// let q = Queue::new()?;
    /// q.put(1u8)?;
    /// q.close();
    /// assert!(q.put(2u8).unwrap_err().is_closed());
    /// assert_eq!(q.get()?, 1);                // drained first
    /// assert!(q.get().unwrap_err().is_closed());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(&self) {
        self.ring.close();
    }

    /// Whether [`close`](Self::close) was called by any process.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.ring.is_closed()
    }

    // ---- bytes ----------------------------------------------------------

    /// Puts raw bytes as one message, bypassing the codec; blocks while the
    /// queue is full.
    ///
    /// # Errors
    ///
    /// [`PutError::Closed`]; [`PutError::Failed`] with
    /// [`QueueError::TooLarge`] above the message limit.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_queue::Queue;
    ///
    /// let q = Queue::<()>::new()?;
    /// q.put_bytes(b"raw")?;
    /// assert_eq!(q.get_bytes()?, b"raw");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_bytes<'a>(&self, data: &'a [u8]) -> Result<(), PutError<&'a [u8]>> {
        self.ring
            .put_slice(data, FOREVER)
            .map_err(|s| put_error(data, s))
    }

    /// [`put_bytes`](Self::put_bytes) without waiting.
    ///
    /// # Errors
    ///
    /// [`TryPutError::Full`], [`TryPutError::Closed`], [`TryPutError::Failed`].
    pub fn try_put_bytes<'a>(&self, data: &'a [u8]) -> Result<(), TryPutError<&'a [u8]>> {
        self.ring
            .put_slice(data, Block::Try)
            .map_err(|s| try_put_error(data, s))
    }

    /// [`put_bytes`](Self::put_bytes) waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`PutTimeoutError::Timeout`], [`PutTimeoutError::Closed`],
    /// [`PutTimeoutError::Failed`].
    pub fn put_bytes_timeout<'a>(
        &self,
        data: &'a [u8],
        timeout: Duration,
    ) -> Result<(), PutTimeoutError<&'a [u8]>> {
        self.ring
            .put_slice(data, until(timeout))
            .map_err(|s| put_timeout_error(data, s))
    }

    /// Takes the next message as raw bytes; blocks while the queue is empty.
    ///
    /// # Errors
    ///
    /// [`GetError::Closed`] once closed and drained; [`GetError::Failed`]
    /// for a corrupt segment.
    pub fn get_bytes(&self) -> Result<Vec<u8>, GetError> {
        self.get_bytes_inner(FOREVER).map_err(get_error)
    }

    /// [`get_bytes`](Self::get_bytes) without waiting.
    ///
    /// # Errors
    ///
    /// [`TryGetError::Empty`], [`TryGetError::Closed`], [`TryGetError::Failed`].
    pub fn try_get_bytes(&self) -> Result<Vec<u8>, TryGetError> {
        self.get_bytes_inner(Block::Try).map_err(try_get_error)
    }

    /// [`get_bytes`](Self::get_bytes) waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`GetTimeoutError::Timeout`], [`GetTimeoutError::Closed`],
    /// [`GetTimeoutError::Failed`].
    pub fn get_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>, GetTimeoutError> {
        self.get_bytes_inner(until(timeout))
            .map_err(get_timeout_error)
    }

    /// Takes the next message into `buf` (cleared first, its allocation
    /// reused); returns the length. Like Python's `recv_bytes_into`.
    ///
    /// # Errors
    ///
    /// As for [`get_bytes`](Self::get_bytes).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_queue::Queue;
    ///
    /// let q = Queue::<()>::new()?;
    /// let mut buf = Vec::with_capacity(64);
    /// q.put_bytes(b"one")?;
    /// q.put_bytes(b"two!")?;
    /// assert_eq!(q.get_bytes_into(&mut buf)?, 3);
    /// assert_eq!(buf, b"one");
    /// assert_eq!(q.get_bytes_into(&mut buf)?, 4);
    /// assert_eq!(buf, b"two!");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_bytes_into(&self, buf: &mut Vec<u8>) -> Result<usize, GetError> {
        self.get_bytes_into_inner(buf, FOREVER).map_err(get_error)
    }

    /// [`get_bytes_into`](Self::get_bytes_into) without waiting.
    ///
    /// # Errors
    ///
    /// [`TryGetError::Empty`], [`TryGetError::Closed`], [`TryGetError::Failed`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_queue::Queue;
    ///
    /// let q = Queue::<()>::new()?;
    /// let mut buf = Vec::new();
    /// assert!(q.try_get_bytes_into(&mut buf).unwrap_err().is_empty());
    /// q.put_bytes(b"now")?;
    /// assert_eq!(q.try_get_bytes_into(&mut buf)?, 3);
    /// assert_eq!(buf, b"now");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_get_bytes_into(&self, buf: &mut Vec<u8>) -> Result<usize, TryGetError> {
        self.get_bytes_into_inner(buf, Block::Try)
            .map_err(try_get_error)
    }

    /// [`get_bytes_into`](Self::get_bytes_into) waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`GetTimeoutError::Timeout`], [`GetTimeoutError::Closed`],
    /// [`GetTimeoutError::Failed`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_queue::Queue;
    /// use std::time::Duration;
    ///
    /// let q = Queue::<()>::new()?;
    /// let mut buf = Vec::new();
    /// let wait = Duration::from_millis(1);
    /// assert!(q.get_bytes_into_timeout(&mut buf, wait).unwrap_err().is_timeout());
    /// q.put_bytes(b"soon")?;
    /// assert_eq!(q.get_bytes_into_timeout(&mut buf, wait)?, 4);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_bytes_into_timeout(
        &self,
        buf: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<usize, GetTimeoutError> {
        self.get_bytes_into_inner(buf, until(timeout))
            .map_err(get_timeout_error)
    }

    fn get_bytes_into_inner(&self, buf: &mut Vec<u8>, block: Block) -> Result<usize, Stop> {
        buf.clear();
        match self.ring.next_message(block)? {
            Next::Whole(c, rec) => {
                copy::extend(buf, c.bytes(&rec));
                c.consume(&rec);
            }
            Next::Owned(owned) => *buf = owned,
        }
        Ok(buf.len())
    }

    fn get_bytes_inner(&self, block: Block) -> Result<Vec<u8>, Stop> {
        Ok(match self.ring.next_message(block)? {
            Next::Whole(c, rec) => {
                let mut out = Vec::new();
                copy::extend(&mut out, c.bytes(&rec));
                c.consume(&rec);
                out
            }
            Next::Owned(buf) => buf,
        })
    }

    // ---- zero copy ------------------------------------------------------

    /// Puts a message of `len` bytes that `fill` writes in place, in the
    /// ring: no copy. `fill` runs while this process holds the producer
    /// side, so keep it short; if it panics nothing is published. `fill`
    /// runs only once the put is sure to go through, so an error always
    /// hands it back uncalled.
    ///
    /// Messages over [`max_in_place`](Self::max_in_place) are filled into a
    /// temporary buffer and sent in fragments. For them, `fill` runs once
    /// the first fragment has room, and from then on the put is committed:
    /// it waits for consumers to make room for the rest however long that
    /// takes, past the timeout of [`put_with_timeout`](Self::put_with_timeout)
    /// or the "no wait" of [`try_put_with`](Self::try_put_with), and a
    /// [`close`](Self::close) meanwhile does not cut it short.
    ///
    /// # Errors
    ///
    /// As for [`put_bytes`](Self::put_bytes); the error hands `fill` back
    /// (it was not called).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_queue::Queue;
    ///
    /// let q = Queue::<()>::new()?;
    /// q.put_with(4, |buf| buf.copy_from_slice(&7u32.to_le_bytes())).map_err(|_| "closed")?;
    /// let msg = q.get_in_place()?;
    /// assert_eq!(*msg, 7u32.to_le_bytes());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_with<F: FnOnce(&mut [u8])>(&self, len: usize, fill: F) -> Result<(), PutError<F>> {
        self.put_with_inner(len, fill, FOREVER, put_error)
    }

    /// [`put_with`](Self::put_with) without waiting.
    ///
    /// # Errors
    ///
    /// As for [`try_put_bytes`](Self::try_put_bytes), handing `fill` back.
    pub fn try_put_with<F: FnOnce(&mut [u8])>(
        &self,
        len: usize,
        fill: F,
    ) -> Result<(), TryPutError<F>> {
        self.put_with_inner(len, fill, Block::Try, try_put_error)
    }

    /// [`put_with`](Self::put_with) waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As for [`put_bytes_timeout`](Self::put_bytes_timeout), handing `fill`
    /// back.
    pub fn put_with_timeout<F: FnOnce(&mut [u8])>(
        &self,
        len: usize,
        fill: F,
        timeout: Duration,
    ) -> Result<(), PutTimeoutError<F>> {
        self.put_with_inner(len, fill, until(timeout), put_timeout_error)
    }

    fn put_with_inner<F: FnOnce(&mut [u8]), E>(
        &self,
        len: usize,
        fill: F,
        block: Block,
        err: fn(F, Stop) -> E,
    ) -> Result<(), E> {
        let mut slot = Some(fill);
        let result = self.ring.put_with(len, block, |buf| {
            if let Some(fill) = slot.take() {
                fill(buf);
            }
        });
        match (result, slot) {
            (Ok(()), _) => Ok(()),
            (Err(stop), Some(fill)) => Err(err(fill, stop)),
            // `fill` runs only once nothing can stop the put (see
            // `Ring::put_with`) but a segment found corrupt meanwhile. Then
            // the message is abandoned and the next operation reports the
            // corruption: there is no closure left to hand back with an
            // error here.
            (Err(_), None) => Ok(()),
        }
    }

    /// Takes the next message and lends it in place: the returned guard
    /// derefs to the bytes in the ring, and the message leaves the queue
    /// when the guard drops. Other consumers wait meanwhile; do not get
    /// from this queue in this thread while holding it. Messages too large
    /// for one record are assembled into an owned buffer instead.
    ///
    /// If the process dies while holding the guard, the message is dropped
    /// (it was delivered), never given to another consumer.
    ///
    /// Large messages (256 KiB and more) are written over the bytes of the
    /// last one when its reader lets go of it quickly, so that the copies
    /// stay in the caches: a blocking put that finds this guard the only
    /// message left waits for it up to an eighth of what its last large
    /// write took, then writes elsewhere, and waits no more for the next
    /// 16 large messages. Dropping the guard of a large message as soon as
    /// it is read is what keeps this path fast.
    ///
    /// # Errors
    ///
    /// As for [`get_bytes`](Self::get_bytes).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_queue::{InPlace, Queue};
    ///
    /// let q = Queue::<()>::new()?;
    /// q.put_bytes(&[1, 2, 3])?;
    /// let msg = q.get_in_place()?;
    /// assert!(InPlace::is_borrowed(&msg));
    /// assert_eq!(msg.iter().sum::<u8>(), 6);
    /// drop(msg);
    /// assert!(q.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_in_place(&self) -> Result<InPlace<'_>, GetError> {
        self.get_in_place_inner(FOREVER).map_err(get_error)
    }

    /// [`get_in_place`](Self::get_in_place) without waiting.
    ///
    /// # Errors
    ///
    /// As for [`try_get_bytes`](Self::try_get_bytes).
    pub fn try_get_in_place(&self) -> Result<InPlace<'_>, TryGetError> {
        self.get_in_place_inner(Block::Try).map_err(try_get_error)
    }

    /// [`get_in_place`](Self::get_in_place) waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As for [`get_bytes_timeout`](Self::get_bytes_timeout).
    pub fn get_in_place_timeout(&self, timeout: Duration) -> Result<InPlace<'_>, GetTimeoutError> {
        self.get_in_place_inner(until(timeout))
            .map_err(get_timeout_error)
    }

    fn get_in_place_inner(&self, block: Block) -> Result<InPlace<'_>, Stop> {
        Ok(match self.ring.next_message(block)? {
            Next::Whole(c, rec) => {
                c.lend(&rec);
                InPlace {
                    inner: Lent::Ring(c, rec),
                }
            }
            Next::Owned(buf) => InPlace {
                inner: Lent::Owned(buf),
            },
        })
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    fn put_inner(&self, item: &T, block: Block) -> Result<(), Stop> {
        let codec = self.codec();
        match self
            .ring
            .put_encoded(block, |buf| codec.encode_into_slice(item, buf))?
        {
            Encoded::Published => return Ok(()),
            Encoded::DidNotFit => {}
        }
        // Too large for the room at hand. Measured first (cheap: runs of
        // plain elements are counted, not copied), a value that fits in one
        // record is encoded in place once there is room for it: no buffer,
        // and one copy fewer. A larger one is encoded outside the lock, then
        // copied in fragments.
        let len = codec
            .encoded_len(item)
            .map_err(|e| Stop::Failed(QueueError::Codec(e)))?;
        if len <= self.ring.max_inline() {
            let encode = |buf: &mut [u8]| codec.encode_into_slice(item, &mut buf[..len]);
            match self.ring.put_encoded_exact(len, block, encode)? {
                Encoded::Published => return Ok(()),
                // It grew since it was measured: through a buffer.
                Encoded::DidNotFit => {}
            }
        }
        match with_encoded(codec, item, |bytes| self.ring.put_slice(bytes, block)) {
            Ok(result) => result,
            Err(e) => Err(Stop::Failed(QueueError::Codec(e))),
        }
    }

    fn get_inner(&self, block: Block) -> Result<T, Stop> {
        let decoded = match self.ring.next_message(block)? {
            Next::Whole(c, rec) => {
                let value = self.codec().decode(c.bytes(&rec));
                c.consume(&rec);
                value
            }
            Next::Owned(buf) => self.codec().decode(&buf),
        };
        decoded.map_err(|e| Stop::Failed(QueueError::Codec(e)))
    }

    /// Puts `item`, waiting while the queue is full. The value is encoded
    /// here, in the caller, so an encoding error is returned (with the
    /// value), not lost in a feeder thread as in Python.
    ///
    /// # Errors
    ///
    /// [`PutError::Closed`]; [`PutError::Failed`] with
    /// [`QueueError::Codec`] (for example a value holding descriptors,
    /// which shared memory cannot carry) or [`QueueError::TooLarge`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_queue::Queue;
    ///
    /// let q = Queue::new()?;
    /// q.put((1u8, "one".to_string()))?;
    /// assert_eq!(q.get()?, (1, "one".to_string()));
    ///
    /// let small: Queue<Vec<u8>> = Queue::builder().max_message(8).build()?;
    /// let err = small.put(vec![0; 100]).unwrap_err();
    /// assert!(err.is_failed());
    /// assert_eq!(err.into_inner().len(), 100); // the value comes back
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.put_inner(&item, FOREVER)
            .map_err(|s| put_error(item, s))
    }

    /// Puts a copy of `item`, which the caller keeps, waiting while the
    /// queue is full: the value is encoded straight from the reference, as
    /// Python's `put` pickles an object it does not take.
    ///
    /// # Errors
    ///
    /// As for [`put`](Self::put); each hands the reference back.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_queue::Queue;
    ///
    /// let q = Queue::new()?;
    /// let samples = vec![0.5f64; 1024];
    /// // (The error borrows `samples`: handle it here, `?` would need it
    /// // to outlive the function.)
    /// q.put_ref(&samples).expect("an open queue with room");
    /// q.put_ref(&samples).expect("an open queue with room"); // still ours
    /// assert_eq!(q.get()?, samples);
    /// assert_eq!(q.get()?.len(), 1024);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_ref<'a>(&self, item: &'a T) -> Result<(), PutError<&'a T>> {
        self.put_inner(item, FOREVER)
            .map_err(|s| put_error(item, s))
    }

    /// Puts `item` if there is room now.
    ///
    /// # Errors
    ///
    /// [`TryPutError::Full`], [`TryPutError::Closed`], [`TryPutError::Failed`];
    /// each hands the value back.
    #[doc(alias = "put_nowait")]
    pub fn try_put(&self, item: T) -> Result<(), TryPutError<T>> {
        self.put_inner(&item, Block::Try)
            .map_err(|s| try_put_error(item, s))
    }

    /// Puts `item`, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// [`PutTimeoutError::Timeout`], [`PutTimeoutError::Closed`],
    /// [`PutTimeoutError::Failed`]; each hands the value back.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_queue::Queue;
    /// use std::time::Duration;
    ///
    /// let q = Queue::with_capacity(1)?;
    /// q.put_timeout('a', Duration::from_millis(10))?;
    /// let err = q.put_timeout('b', Duration::from_millis(10)).unwrap_err();
    /// assert!(err.is_timeout());
    /// assert_eq!(err.to_string(), "timed out putting into a full queue");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutTimeoutError<T>> {
        self.put_inner(&item, until(timeout))
            .map_err(|s| put_timeout_error(item, s))
    }

    /// Takes the next message, waiting while the queue is empty.
    ///
    /// # Errors
    ///
    /// [`GetError::Closed`] once closed and drained; [`GetError::Failed`]
    /// with [`QueueError::Codec`] when the message does not decode as `T`
    /// (it is consumed), or [`QueueError::Corrupt`].
    pub fn get(&self) -> Result<T, GetError> {
        self.get_inner(FOREVER).map_err(get_error)
    }

    /// Takes the next message if there is one now.
    ///
    /// A message whose first fragments are already in the ring is finished
    /// even if that means waiting for its producer to write the rest.
    ///
    /// # Errors
    ///
    /// [`TryGetError::Empty`], [`TryGetError::Closed`], [`TryGetError::Failed`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_queue::Queue;
    ///
    /// let q = Queue::new()?;
    /// assert!(q.try_get().unwrap_err().is_empty());
    /// q.put(9i64)?;
    /// assert_eq!(q.try_get()?, 9);
    /// q.close();
    /// assert!(q.try_get().unwrap_err().is_closed());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "get_nowait")]
    pub fn try_get(&self) -> Result<T, TryGetError> {
        self.get_inner(Block::Try).map_err(try_get_error)
    }

    /// Takes the next message, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`GetTimeoutError::Timeout`], [`GetTimeoutError::Closed`],
    /// [`GetTimeoutError::Failed`].
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc_queue::Queue;
    /// use std::time::{Duration, Instant};
    ///
    /// let q = Queue::<u8>::new()?;
    /// let start = Instant::now();
    /// assert!(q.get_timeout(Duration::from_millis(20)).unwrap_err().is_timeout());
    /// assert!(start.elapsed() >= Duration::from_millis(20));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, GetTimeoutError> {
        self.get_inner(until(timeout)).map_err(get_timeout_error)
    }
}

impl QueueBuilder {
    /// Creates a [`Queue`].
    ///
    /// # Errors
    ///
    /// [`QueueError::InvalidConfig`] for out-of-range settings,
    /// [`QueueError::Segment`] when the memory cannot be created.
    pub fn build<T>(self) -> Result<Queue<T>, QueueError> {
        Ok(Queue::from_ring(Ring::create(self.options(Kind::Queue)?)?))
    }
}

/// What a queue handle looks like inside a serialized message: its segment
/// (whose descriptor travels out of band).
#[derive(Serialize)]
struct WireRef<'a> {
    segment: &'a Segment,
}

#[derive(Deserialize)]
struct Wire {
    segment: Segment,
}

impl<T> Serialize for Queue<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WireRef {
            segment: self.ring.segment(),
        }
        .serialize(serializer)
    }
}

pub(crate) fn deserialize_kind<'de, D: serde::Deserializer<'de>, T>(
    deserializer: D,
    kind: Kind,
) -> Result<Queue<T>, D::Error> {
    let wire = Wire::deserialize(deserializer)?;
    Queue::attach_kind(wire.segment, kind).map_err(serde::de::Error::custom)
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_kind(deserializer, Kind::Queue)
    }
}
