//! The receive side of a connection: a read-ahead buffer that cuts the byte
//! stream into frames and hands each frame the descriptors that came with it.
//!
//! # One read per small message
//!
//! The buffer reads as much as the kernel has ([`READ_BUF`] at most), so a
//! small frame — header and payload — usually arrives in one `read`, and a
//! burst of small frames in one `read` for all of them. A payload too large
//! for the buffer is read straight into its destination after the part that
//! was already buffered, so large messages are not copied twice.
//!
//! # Which frame owns received descriptors
//!
//! On a Unix stream socket, descriptors sent with `SCM_RIGHTS` ride with the
//! first byte of the `sendmsg` that carried them, and a `recvmsg` that
//! receives them stops at the end of that `sendmsg`'s first segment
//! ([unix(7)](https://man7.org/linux/man-pages/man7/unix.7.html): "the
//! ancillary data is received with the first byte of the segment"). Our
//! sender starts every descriptor-carrying `sendmsg` with a frame header, so
//! the descriptors from a read that covered stream bytes `[a, b)` belong to the
//! last frame that *starts* in `[a, b)`. Each batch is kept with its range;
//! a frame claims the batches it owns, and batches no frame claimed (a peer
//! that attached descriptors mid-frame, or a frame read with `recv_bytes`)
//! are closed once the stream has moved past them. Nothing leaks and nothing
//! lands on the wrong message. A read whose descriptors the kernel dropped
//! (`MSG_CTRUNC`: this process could not take them) makes a batch too,
//! possibly empty, so that the frame owning it learns it lost some.
//!
//! # Safety
//!
//! One `unsafe` call: `Vec::set_len` after the OS has filled that many bytes
//! of the vector's spare capacity (large payloads are read into
//! uninitialised memory, see `RecvBuf::payload_rest`).
//!
//! # Non-blocking descriptors
//!
//! A read that fails with `WouldBlock` (a descriptor with `O_NONBLOCK`)
//! loses nothing: header bytes and small frames stay in the read-ahead
//! buffer, and a large payload read so far is kept as a [`Partial`] frame.
//! The error is [`RecvError::WouldBlock`], and the next receive continues
//! the same frame.
//!
//! # Memory follows the data, not the header
//!
//! A header is only the peer's word. A large payload's vector starts at
//! [`GROW_STEP`] (or the size of the previous frame, which did arrive) and
//! doubles as bytes actually arrive, so a peer that announces a huge but
//! permitted length and then stalls or hangs up costs about what it sent.
//! A vector that cannot grow is [`RecvError::Io`] with
//! `ErrorKind::OutOfMemory`, not an abort.
#![allow(unsafe_code)]

use crate::error::RecvError;
use crate::frame::{DOORBELL, Parsed, TOKEN_FRAME, Token, parse_header};
use crate::lane::{Lane, Loan, MAILBOX, MAX_PAYLOAD};
use std::collections::VecDeque;
use std::io::{self, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;

/// Largest size of the read-ahead buffer. 64 KiB holds hundreds of small
/// frames; larger payloads bypass it.
pub(crate) const READ_BUF: usize = 64 * 1024;

/// Size of the read-ahead buffer between frames of a connection with a
/// lane: a read of [`READ_BUF`] bytes, and room for the whole mailbox in
/// front of them.
const WITH_MAILBOX: usize = READ_BUF + MAILBOX;

/// Size of the read-ahead buffer at the first receive. It doubles (up to
/// [`READ_BUF`]) whenever a read fills it or a frame does not fit. Starting
/// small matters for short-lived connections: every page a process writes
/// right after `fork` is a copy-on-write fault (one process bootstrap
/// receives only a few small frames).
const FIRST_READ_BUF: usize = 2 * 1024;

/// After a frame with a payload above this size, the next frame is read
/// speculatively (see [`RecvBuf::speculate`]).
const SPECULATE_FROM: usize = READ_BUF / 2;

/// Most memory a large payload gets before any of its bytes arrive (more
/// only when the previous frame was at least that large); beyond it, the
/// vector doubles with the bytes received.
const GROW_STEP: usize = 1024 * 1024;

/// A connection keeps a buffer it encoded a value into, or a large payload
/// a typed receive has decoded, for the next message if it holds at most
/// this much: one that moves 1 MiB values then reuses one buffer each way
/// instead of allocating (and, past the allocator's trim threshold,
/// faulting in) fresh ones per message.
pub(crate) const KEEP_BUFFER: usize = 4 * 1024 * 1024;

/// One read from the OS: bytes placed in the buffer and descriptors received.
pub(crate) type ReadResult = io::Result<(usize, Vec<OwnedFd>)>;

/// What a read between frames got ([`Source::read_between_frames`]): the
/// mailbox's bytes, then the descriptor's read, when one was made.
pub(crate) type BetweenFrames = io::Result<(usize, Option<(usize, Vec<OwnedFd>)>)>;

/// Where a connection's bytes come from.
pub(crate) trait Source {
    /// One scatter read, with the descriptors that came along.
    fn read(&mut self, bufs: &mut [IoSliceMut<'_>]) -> ReadResult;

    /// Whether the kernel dropped descriptors sent with the bytes of the
    /// last [`read`](Self::read) (`MSG_CTRUNC`; with room for
    /// [`MAX_FDS`](multiproc_core::scm::MAX_FDS), that means this process
    /// could not take them: `EMFILE`). Asked after every read, so it is a
    /// flag, not part of the read's result: the common read stays as
    /// cheap as it was.
    fn fds_dropped(&self) -> bool {
        false
    }

    /// One read into `head` and then the uninitialised `tail`, with the
    /// descriptors that came along: after `Ok((n, _))`, the first
    /// `n.saturating_sub(head.len())` bytes of `tail` are initialised. A
    /// source that cannot scatter into uninitialised memory reads `head`
    /// alone (the default).
    fn read_split(&mut self, head: &mut [u8], tail: &mut [MaybeUninit<u8>]) -> ReadResult {
        let _ = tail;
        self.read(&mut [IoSliceMut::new(head)])
    }

    /// One read between two frames (nothing buffered, no frame begun)
    /// into `dst`: first the frames of whole messages that skipped the
    /// descriptor (a lane's mailbox), then, when none did, the descriptor's
    /// bytes and descriptors (`None`: not read). Returns the mailbox's
    /// bytes, which come first in `dst`, and the read.
    fn read_between_frames(&mut self, dst: &mut [u8]) -> BetweenFrames {
        Ok((0, Some(self.read(&mut [IoSliceMut::new(dst)])?)))
    }

    /// One plain read into uninitialised memory; returns the bytes read.
    /// Descriptors arriving with these bytes are dropped (the kernel
    /// closes them), so this is only for bytes inside a frame whose start
    /// was already read with [`read`](Self::read).
    fn read_uninit(&mut self, dst: &mut [MaybeUninit<u8>]) -> io::Result<usize>;
}

/// Any scatter-read closure is a source; its uninitialised reads go
/// through a zeroed scratch buffer (tests use this).
impl<F: FnMut(&mut [IoSliceMut<'_>]) -> ReadResult> Source for F {
    fn read(&mut self, bufs: &mut [IoSliceMut<'_>]) -> ReadResult {
        self(bufs)
    }

    fn read_split(&mut self, head: &mut [u8], tail: &mut [MaybeUninit<u8>]) -> ReadResult {
        let mut scratch = vec![0u8; tail.len()];
        let (n, fds) = self(&mut [IoSliceMut::new(head), IoSliceMut::new(&mut scratch)])?;
        let spilled = n.saturating_sub(head.len());
        for (slot, byte) in tail.iter_mut().zip(&scratch[..spilled]) {
            slot.write(*byte);
        }
        Ok((n, fds))
    }

    fn read_uninit(&mut self, dst: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        let mut scratch = vec![0u8; dst.len()];
        let (n, _fds) = self(&mut [IoSliceMut::new(&mut scratch)])?;
        for (slot, byte) in dst.iter_mut().zip(&scratch[..n]) {
            slot.write(*byte);
        }
        Ok(n)
    }
}

struct FdBatch {
    /// Stream offset of the first byte of the read that brought them.
    from: u64,
    /// Stream offset just past the last byte of that read.
    to: u64,
    fds: Vec<OwnedFd>,
    /// The kernel dropped some that came with that read.
    dropped: bool,
}

/// A received frame's payload: borrowed from the read-ahead buffer when it
/// was there whole, or from the lane when asked for
/// ([`RecvBuf::frame_in_place`]), otherwise owned.
pub(crate) enum Payload<'a> {
    Buffered(&'a [u8]),
    Lane(Loan<'a>),
    Owned(Vec<u8>),
}

impl Payload<'_> {
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Self::Buffered(bytes) => bytes,
            Self::Lane(loan) => loan,
            Self::Owned(bytes) => bytes,
        }
    }

    /// The vector of an owned payload; a borrowed one is let go (one in
    /// the lane goes back to its sender).
    pub(crate) fn into_owned(self) -> Option<Vec<u8>> {
        match self {
            Self::Owned(bytes) => Some(bytes),
            Self::Buffered(_) | Self::Lane(_) => None,
        }
    }

    pub(crate) fn into_vec(self) -> Vec<u8> {
        match self {
            Self::Buffered(bytes) => bytes.to_vec(),
            Self::Lane(loan) => loan.to_vec(),
            Self::Owned(bytes) => bytes,
        }
    }
}

/// A header [`RecvBuf::header`] found.
enum Head {
    /// An ordinary frame: header and payload lengths.
    Inline(usize, usize),
    /// A token: the payload is in the lane.
    Token(Token),
    /// A piece: part of the payload is in the lane, and the message goes
    /// on in the next frame.
    Piece(Token),
}

/// A frame's payload and descriptors, both owned.
type OwnedFrame = (Vec<u8>, Vec<OwnedFd>);

/// A large frame whose header was consumed and whose payload has not
/// arrived whole: the read that would have brought more said `WouldBlock`.
struct Partial {
    /// The payload bytes received so far.
    out: Vec<u8>,
    /// The payload length the header announced (with `prefix`).
    len: usize,
    header_len: usize,
    /// Stream offset of the frame's first header byte.
    frame_start: u64,
    /// Bytes of `out` that came before this frame: the pieces of a
    /// message whose last part this frame is (0 for a frame of its own).
    prefix: usize,
    /// The descriptors that came with those pieces.
    fds: Vec<OwnedFd>,
}

impl Partial {
    /// A frame of its own: no pieces before it.
    fn frame(out: Vec<u8>, len: usize, header_len: usize, frame_start: u64) -> Self {
        Self {
            out,
            len,
            header_len,
            frame_start,
            prefix: 0,
            fds: Vec::new(),
        }
    }
}

/// The pieces of a message received so far (see the `lane` module,
/// "Pieces"), kept across a receive that said `WouldBlock`.
struct Pieces {
    out: Vec<u8>,
    fds: Vec<OwnedFd>,
}

/// Whether `err` is a read refused by a non-blocking descriptor.
fn is_would_block(err: &RecvError) -> bool {
    matches!(err, RecvError::Io(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// Reports a read refused by a non-blocking descriptor as
/// [`RecvError::WouldBlock`].
fn typed(err: RecvError) -> RecvError {
    if is_would_block(&err) {
        RecvError::WouldBlock
    } else {
        err
    }
}

/// The read-ahead buffer and the descriptor batches of one connection.
#[derive(Default)]
pub(crate) struct RecvBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Stream offset of `buf[end]`: bytes read from the OS so far.
    read_total: u64,
    batches: VecDeque<FdBatch>,
    /// The peer has closed its end (a read returned 0).
    eof: bool,
    /// Payload length of the last frame received: the guess for the next
    /// one (see [`speculate`](Self::speculate)).
    last_len: usize,
    /// A large frame interrupted by `WouldBlock`, continued by the next
    /// receive.
    partial: Option<Partial>,
    /// The kernel dropped descriptors that belonged to the frame last
    /// received (see [`fds_dropped`](Self::fds_dropped)).
    fds_dropped: bool,
    /// A payload buffer handed back by [`recycle`](Self::recycle), for the
    /// next large frame.
    spare: Vec<u8>,
    /// The shared-memory lane tokens name payloads in (a `Pipe::new`
    /// pair's); without one, a token is a malformed header.
    lane: Option<Lane>,
    /// Whether a receive told the lane that tokens are read here.
    announced: bool,
    /// A message in pieces begun and not finished: a receive that said
    /// `WouldBlock` left it here.
    pieces: Option<Pieces>,
    /// Length of the last message that came in pieces: the capacity to
    /// give the next one.
    last_pieced: usize,
}

impl Drop for RecvBuf {
    /// Senders stop posting to this end's mailbox: nothing will take it.
    fn drop(&mut self) {
        if let Some(lane) = &self.lane {
            lane.deafen();
        }
    }
}

impl RecvBuf {
    /// A buffer that reads tokens with `lane` (see the `lane` module).
    pub(crate) fn with_lane(lane: Option<Lane>) -> Self {
        let mut buf = Self::default();
        buf.lane = lane;
        buf
    }

    /// Parses the buffered header (tokens too, with a lane).
    fn parse(&self, max: usize) -> Result<Parsed, RecvError> {
        parse_header(&self.buf[self.start..self.end], max, self.lane.is_some())
    }

    /// Whether the kernel dropped descriptors that belonged to the frame
    /// last received (so a value in it may miss some).
    pub(crate) fn fds_dropped(&self) -> bool {
        self.fds_dropped
    }

    /// Takes back the payload of a large frame that was decoded (and is
    /// no longer needed), to receive the next large frame into.
    pub(crate) fn recycle(&mut self, mut payload: Vec<u8>) {
        if payload.capacity() <= KEEP_BUFFER && payload.capacity() > self.spare.capacity() {
            payload.clear();
            self.spare = payload;
        }
    }

    /// An empty vector for a large payload, with room for at least `first`
    /// bytes: the recycled one when there is one.
    fn payload_vec(&mut self, first: usize) -> Result<Vec<u8>, RecvError> {
        let mut out = std::mem::take(&mut self.spare);
        if out.capacity() < first {
            reserve(&mut out, first)?;
        }
        Ok(out)
    }

    /// Bytes read ahead and not yet handed out.
    pub(crate) fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Whether a receive with limit `max` finishes without reading: a whole
    /// frame is buffered, or the buffered header is refused, or the end of
    /// file was seen with nothing left.
    pub(crate) fn has_message(&self, max: usize) -> bool {
        if self.partial.is_some() {
            return false;
        }
        // The pieces of a message are whole once its last part is.
        let mut at = self.start;
        loop {
            let found = parse_header(&self.buf[at..self.end], max, self.lane.is_some());
            return match found {
                Ok(Parsed::Piece(_)) => {
                    at += TOKEN_FRAME;
                    continue;
                }
                Ok(Parsed::Doorbell) => {
                    at += DOORBELL.len();
                    continue;
                }
                Ok(Parsed::Frame {
                    header_len,
                    payload_len,
                }) => header_len.saturating_add(payload_len) <= self.end - at,
                Ok(Parsed::Token(_)) => true,
                Ok(Parsed::Need(_)) => self.eof,
                Err(_) => true,
            };
        }
    }

    /// Stream offset of `buf[start]`.
    fn position(&self) -> u64 {
        self.read_total - self.buffered() as u64
    }

    /// One read from the OS into `dst`, recording any descriptors with the
    /// stream range they came with.
    fn read_into(
        read_total: &mut u64,
        batches: &mut VecDeque<FdBatch>,
        dst: &mut [u8],
        read: &mut impl Source,
    ) -> io::Result<usize> {
        Self::read_vectored(read_total, batches, &mut [IoSliceMut::new(dst)], read)
    }

    /// [`read_into`](Self::read_into) with a scatter list.
    fn read_vectored(
        read_total: &mut u64,
        batches: &mut VecDeque<FdBatch>,
        bufs: &mut [IoSliceMut<'_>],
        read: &mut impl Source,
    ) -> io::Result<usize> {
        let got = read.read(bufs)?;
        Ok(Self::record(read_total, batches, got, read.fds_dropped()))
    }

    /// Counts a read of `n` bytes that brought `fds` (and `dropped` says
    /// whether the kernel dropped some) in the stream; returns `n`.
    fn record(
        read_total: &mut u64,
        batches: &mut VecDeque<FdBatch>,
        (n, fds): (usize, Vec<OwnedFd>),
        dropped: bool,
    ) -> usize {
        let from = *read_total;
        *read_total += n as u64;
        if !fds.is_empty() || dropped {
            batches.push_back(FdBatch {
                from,
                to: *read_total,
                fds,
                dropped,
            });
        }
        n
    }

    /// Doubles the read-ahead buffer, up to [`READ_BUF`]; never shrinks
    /// one that [`put_back`](Self::put_back) grew past it (it may hold
    /// that much).
    fn grow(&mut self) {
        let len = (self.buf.len() * 2)
            .clamp(FIRST_READ_BUF, READ_BUF)
            .max(self.buf.len());
        self.buf.resize(len, 0);
    }

    /// Resets the (drained) buffer; one that [`put_back`](Self::put_back)
    /// grew past [`READ_BUF`] shrinks back to it.
    fn empty(&mut self) {
        debug_assert_eq!(self.start, self.end);
        self.start = 0;
        self.end = 0;
        let keep = if self.lane.is_some() {
            WITH_MAILBOX
        } else {
            READ_BUF
        };
        if self.buf.len() > keep {
            self.buf.truncate(keep);
            self.buf.shrink_to_fit();
        }
    }

    /// Reads more into the buffer, making room at the end first; returns the
    /// bytes read (0 at end of file).
    fn fill(&mut self, read: &mut impl Source) -> io::Result<usize> {
        if self.eof {
            return Ok(0);
        }
        if self.buf.is_empty() {
            self.buf = vec![0; FIRST_READ_BUF];
        }
        if self.start == self.end {
            self.empty();
        } else if self.end == self.buf.len() || self.start > self.buf.len() / 2 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // Full of one unfinished frame: make room for the rest.
            self.grow();
        }
        if self.between_frames() && self.lane.is_some() {
            return self.fill_between_frames(read);
        }
        let room = self.buf.len() - self.end;
        let n = Self::read_into(
            &mut self.read_total,
            &mut self.batches,
            &mut self.buf[self.end..],
            read,
        )?;
        self.end += n;
        if n == room {
            // The kernel may hold more: read more at a time from now on.
            self.grow();
        }
        if n == 0 {
            self.eof = true;
        }
        Ok(n)
    }

    /// Whether nothing is buffered and no message begun: the next bytes
    /// start a frame, and a message from the lane's mailbox may go first.
    pub(crate) fn between_frames(&self) -> bool {
        self.start == self.end && self.partial.is_none() && self.pieces.is_none()
    }

    /// [`fill`](Self::fill) between frames of a connection with a lane:
    /// [`Source::read_between_frames`] into a buffer with room for the
    /// whole mailbox besides the read (see the lane's `mailbox`).
    fn fill_between_frames(&mut self, read: &mut impl Source) -> io::Result<usize> {
        self.empty();
        if self.buf.len() < WITH_MAILBOX {
            self.buf.resize(WITH_MAILBOX, 0);
        }
        let (mail, got) = read.read_between_frames(&mut self.buf)?;
        self.read_total += mail as u64;
        let mut n = mail;
        if let Some(got) = got {
            let read_now = Self::record(
                &mut self.read_total,
                &mut self.batches,
                got,
                read.fds_dropped(),
            );
            self.eof |= read_now == 0;
            n += read_now;
        }
        self.end = n;
        Ok(n)
    }

    /// Makes sure a whole header (or token) is buffered and checks it;
    /// consumes nothing. Returns the header and payload lengths, or the
    /// token.
    fn header(&mut self, max: usize, read: &mut impl Source) -> Result<Head, RecvError> {
        loop {
            match self.parse(max)? {
                Parsed::Frame {
                    header_len,
                    payload_len,
                } => return Ok(Head::Inline(header_len, payload_len)),
                Parsed::Token(token) => return Ok(Head::Token(token)),
                Parsed::Piece(token) => return Ok(Head::Piece(token)),
                Parsed::Doorbell => self.start += DOORBELL.len(),
                Parsed::Need(need) => {
                    if self.fill(read)? == 0 {
                        return Err(if self.buffered() == 0 {
                            RecvError::Eof
                        } else {
                            RecvError::Truncated {
                                expected: need as u64,
                                received: self.buffered() as u64,
                            }
                        });
                    }
                }
            }
        }
    }

    /// Hands out the descriptor batches owned by the frame that starts at
    /// stream offset `frame_start` and is `frame_len` bytes long (see the
    /// module docs), closing stale ones.
    fn claim_fds(&mut self, frame_start: u64, frame_len: u64) -> Vec<OwnedFd> {
        let frame_end = frame_start.saturating_add(frame_len);
        let mut fds = Vec::new();
        self.fds_dropped = false;
        while let Some(batch) = self.batches.front() {
            if batch.to <= frame_start {
                // Before this frame and unclaimed: close.
                self.batches.pop_front();
            } else if batch.from <= frame_start && batch.to <= frame_end {
                let batch = self.batches.pop_front().expect("front exists");
                fds.extend(batch.fds);
                self.fds_dropped |= batch.dropped;
            } else {
                break;
            }
        }
        fds
    }

    /// Completes the payload `dst` (the whole payload of the frame that
    /// starts at stream offset `frame_start`) of which the first `done`
    /// bytes are there: first from the buffer, then straight from the OS.
    /// When the OS says `WouldBlock`, what arrived is kept as the
    /// [`Partial`] frame for the next receive.
    fn payload_into(
        &mut self,
        dst: &mut [u8],
        mut done: usize,
        header_len: usize,
        frame_start: u64,
        read: &mut impl Source,
    ) -> Result<(), RecvError> {
        let from_buf = self.buffered().min(dst.len() - done);
        dst[done..done + from_buf].copy_from_slice(&self.buf[self.start..self.start + from_buf]);
        self.start += from_buf;
        done += from_buf;
        while done < dst.len() {
            let n = if self.eof {
                0
            } else {
                match Self::read_into(
                    &mut self.read_total,
                    &mut self.batches,
                    &mut dst[done..],
                    read,
                ) {
                    Ok(n) => n,
                    Err(err) => {
                        let err = RecvError::Io(err);
                        if is_would_block(&err) {
                            let mut out = Vec::new();
                            reserve(&mut out, done)?;
                            out.extend_from_slice(&dst[..done]);
                            self.partial =
                                Some(Partial::frame(out, dst.len(), header_len, frame_start));
                        }
                        return Err(err);
                    }
                }
            };
            if n == 0 {
                self.eof = true;
                return Err(RecvError::Truncated {
                    expected: (header_len + dst.len()) as u64,
                    received: (header_len + done) as u64,
                });
            }
            done += n;
        }
        Ok(())
    }

    /// Completes the large frame `partial` (see [`payload_rest`](Self::payload_rest));
    /// on `WouldBlock` it stays the partial frame for the next receive.
    fn finish_large(
        &mut self,
        mut partial: Partial,
        read: &mut impl Source,
    ) -> Result<OwnedFrame, RecvError> {
        match self.payload_rest(&mut partial.out, partial.len, partial.header_len, read) {
            Ok(()) => {
                let frame_len = (partial.header_len + partial.len - partial.prefix) as u64;
                let mut fds = std::mem::take(&mut partial.fds);
                fds.extend(self.claim_fds(partial.frame_start, frame_len));
                self.last_len = partial.len;
                Ok((partial.out, fds))
            }
            Err(err) => {
                if is_would_block(&err) {
                    self.partial = Some(partial);
                }
                Err(err)
            }
        }
    }

    /// The capacity to give a payload of `len` bytes before its bytes
    /// arrive: at most [`GROW_STEP`], or the previous frame's size (which
    /// arrived whole).
    fn first_capacity(&self, len: usize) -> usize {
        len.min(GROW_STEP.max(self.last_len))
    }

    /// Completes a payload of `len` bytes of which `out` holds the first
    /// `out.len()`: first from the read-ahead buffer, then straight from the
    /// OS into `out`'s spare capacity (no zeroing, no extra copy). When the
    /// spare capacity is used up, the vector doubles (up to `len`): memory
    /// grows with the bytes that actually arrived, never on the header's
    /// word alone. `header_len` is for the error report.
    fn payload_rest(
        &mut self,
        out: &mut Vec<u8>,
        len: usize,
        header_len: usize,
        read: &mut impl Source,
    ) -> Result<(), RecvError> {
        debug_assert!(out.len() <= len);
        let from_buf = self.buffered().min(len - out.len());
        if from_buf > out.capacity() - out.len() {
            reserve(out, from_buf)?;
        }
        out.extend_from_slice(&self.buf[self.start..self.start + from_buf]);
        self.start += from_buf;
        while out.len() < len {
            let done = out.len();
            if out.capacity() == done {
                // Double what arrived (at least one step), never past `len`.
                reserve(out, (len - done).min(done.max(GROW_STEP)))?;
            }
            let room = (len - done).min(out.capacity() - done);
            let n = if self.eof {
                0
            } else {
                read.read_uninit(&mut out.spare_capacity_mut()[..room])?
            };
            if n == 0 {
                self.eof = true;
                return Err(RecvError::Truncated {
                    expected: (header_len + len) as u64,
                    received: (header_len + done) as u64,
                });
            }
            debug_assert!(n <= room);
            // SAFETY: `read_uninit` initialised the first `n` bytes of the
            // spare capacity, and `done + n <= done + room <= capacity`.
            unsafe { out.set_len(done + n) };
            self.read_total += n as u64;
        }
        Ok(())
    }

    /// Receives one frame of at most `max` payload bytes, with the
    /// descriptors that came with it.
    pub(crate) fn frame(
        &mut self,
        max: usize,
        read: &mut impl Source,
    ) -> Result<(Payload<'_>, Vec<OwnedFd>), RecvError> {
        self.announce();
        self.frame_inner(max, false, read).map_err(typed)
    }

    /// [`frame`](Self::frame), with a payload that came through the lane
    /// left where it lies ([`Payload::Lane`]): for a caller that only reads
    /// it (a decoder), one copy fewer. Its space goes back to the sender
    /// when the payload is dropped.
    pub(crate) fn frame_in_place(
        &mut self,
        max: usize,
        read: &mut impl Source,
    ) -> Result<(Payload<'_>, Vec<OwnedFd>), RecvError> {
        self.announce();
        self.frame_inner(max, true, read).map_err(typed)
    }

    /// [`frame`](Self::frame) (or [`frame_in_place`](Self::frame_in_place)
    /// with `in_place`), with a refused read still `RecvError::Io`.
    fn frame_inner(
        &mut self,
        max: usize,
        in_place: bool,
        read: &mut impl Source,
    ) -> Result<(Payload<'_>, Vec<OwnedFd>), RecvError> {
        if let Some(partial) = self.partial.take() {
            let (payload, fds) = self.finish_large(partial, read)?;
            return Ok((Payload::Owned(payload), fds));
        }
        if self.pieces.is_some() {
            let (payload, fds) = self.rest_of_pieces(max, read)?;
            return Ok((Payload::Owned(payload), fds));
        }
        // Not with a lane: its mailbox's messages go before the bytes of
        // any read between frames (see `fill_between_frames`), which the
        // speculative read cannot place.
        if self.buffered() == 0
            && !self.eof
            && self.lane.is_none()
            && self.last_len > SPECULATE_FROM
            && self.last_len <= max
            && let Some((payload, fds)) = self.speculate(max, read)?
        {
            self.last_len = payload.len();
            return Ok((Payload::Owned(payload), fds));
        }
        let (header_len, len) = match self.header(max, read)? {
            Head::Inline(header_len, len) => (header_len, len),
            Head::Token(token) => {
                let (token, fds) = self.consume_token(token)?;
                let lane = self.lane.as_ref().expect("tokens are parsed with a lane");
                if in_place {
                    return Ok((Payload::Lane(lane.borrow(token)?), fds));
                }
                let mut out = std::mem::take(&mut self.spare);
                out.clear();
                reserve(&mut out, token.len)?;
                let len = lane.take(token, out.spare_capacity_mut())?.len();
                // SAFETY: `take` initialised the first `len` bytes of the
                // spare capacity of `out`, which was empty.
                unsafe { out.set_len(len) };
                return Ok((Payload::Owned(out), fds));
            }
            Head::Piece(token) => {
                let (token, fds) = self.consume_token(token)?;
                let first = self.last_pieced.clamp(token.len, max.min(MAX_PAYLOAD));
                let mut out = self.payload_vec(first)?;
                out.clear();
                self.pieces = Some(Pieces { out, fds });
                self.take_piece(token, max)?;
                let (payload, fds) = self.rest_of_pieces(max, read)?;
                return Ok((Payload::Owned(payload), fds));
            }
        };
        let frame_start = self.position();
        let frame_len = (header_len + len) as u64;
        let total = header_len + len;
        if total <= READ_BUF {
            // Small frame: complete it in the buffer.
            while self.buffered() < total {
                if self.fill(read)? == 0 {
                    return Err(self.truncated_in_buffer(total));
                }
            }
            let fds = self.claim_fds(frame_start, frame_len);
            let payload_start = self.start + header_len;
            self.start += total;
            self.last_len = len;
            return Ok((
                Payload::Buffered(&self.buf[payload_start..payload_start + len]),
                fds,
            ));
        }
        self.start += header_len;
        let partial = Partial::frame(self.payload_vec(0)?, len, header_len, frame_start);
        let (payload, fds) = self.finish_large(partial, read)?;
        Ok((Payload::Owned(payload), fds))
    }

    /// The large-message path, taken after a large frame: one read brings
    /// the next header into the (empty) buffer and what follows straight
    /// into a new vector as large as the last payload. A large payload
    /// then costs neither a copy out of the read-ahead buffer, nor the
    /// zeroing of its vector, nor a read of its header alone.
    ///
    /// Returns `None` (with what was read in the buffer) when the ordinary
    /// path should continue.
    fn speculate(
        &mut self,
        max: usize,
        read: &mut impl Source,
    ) -> Result<Option<OwnedFrame>, RecvError> {
        if self.buf.is_empty() {
            self.buf = vec![0; READ_BUF];
        }
        self.empty();
        let frame_start = self.read_total;
        let mut out = self.payload_vec(self.first_capacity(self.last_len))?;
        // With `recvmsg`: the frame's descriptors (if any) arrive with its
        // first byte.
        let got = read.read_split(&mut self.buf[..4], out.spare_capacity_mut())?;
        let n = Self::record(
            &mut self.read_total,
            &mut self.batches,
            got,
            read.fds_dropped(),
        );
        let head = n.min(4);
        debug_assert!(n - head <= out.capacity());
        // SAFETY: the read initialised the first `n - head` bytes of the
        // spare capacity of `out`, which was empty.
        unsafe { out.set_len(n - head) };
        self.end = head;
        if n == 0 {
            self.eof = true;
            return Err(RecvError::Eof);
        }
        while self.end < 4 {
            // The rest of a header that came in pieces (nothing followed
            // it into `out`).
            let n = Self::read_into(
                &mut self.read_total,
                &mut self.batches,
                &mut self.buf[self.end..4],
                read,
            )?;
            if n == 0 {
                self.eof = true;
                return Err(RecvError::Truncated {
                    expected: 4,
                    received: self.end as u64,
                });
            }
            self.end += n;
        }
        let Ok(Parsed::Frame {
            header_len: 4,
            payload_len: len,
        }) = parse_header(&self.buf[..4], max, false)
        else {
            // Long form or bad length: the ordinary path takes it from the
            // buffer.
            self.put_back(&out);
            self.recycle(out);
            return Ok(None);
        };
        self.start = 0;
        self.end = 0;
        if out.len() > len {
            // Smaller than the last: what follows belongs to the next frames.
            self.put_back(&out[len..]);
            out.truncate(len);
        }
        if len < out.capacity() / 2 {
            // Far smaller: the caller gets a vector of its own size (`len`
            // is below a size that arrived), and the large one waits for
            // the next large frame.
            let mut own = Vec::new();
            reserve(&mut own, len)?;
            own.extend_from_slice(&out);
            self.recycle(std::mem::replace(&mut out, own));
        }
        let partial = Partial::frame(out, len, 4, frame_start);
        self.finish_large(partial, read).map(Some)
    }

    /// One scatter read of a short header into the (empty) buffer and what
    /// follows into `dst`. On success the header is consumed, `dst` holds
    /// the first `got` payload bytes (`got <= len`), and any bytes past the
    /// frame were moved to the buffer. Returns `(len, got, frame_start)`,
    /// or `None` after handing everything read to the ordinary path
    /// (partial, long-form or bad header).
    fn speculative_read(
        &mut self,
        dst: &mut [u8],
        max: usize,
        read: &mut impl Source,
    ) -> Result<Option<(usize, usize, u64)>, RecvError> {
        if self.buf.is_empty() {
            self.buf = vec![0; READ_BUF];
        }
        self.empty();
        let frame_start = self.read_total;
        let n = Self::read_vectored(
            &mut self.read_total,
            &mut self.batches,
            &mut [IoSliceMut::new(&mut self.buf[..4]), IoSliceMut::new(dst)],
            read,
        )?;
        if n == 0 {
            self.eof = true;
            return Err(RecvError::Eof);
        }
        let head = n.min(4);
        let spilled = n - head;
        self.end = head;
        let Ok(Parsed::Frame {
            header_len: 4,
            payload_len: len,
        }) = parse_header(&self.buf[..head], max, false)
        else {
            self.put_back(&dst[..spilled]);
            return Ok(None);
        };
        self.start = 0;
        self.end = 0;
        if spilled > len {
            // What follows the payload belongs to the next frames.
            self.put_back(&dst[len..spilled]);
            return Ok(Some((len, len, frame_start)));
        }
        Ok(Some((len, spilled, frame_start)))
    }

    /// Appends `bytes` (read from the OS into another buffer) to the
    /// read-ahead buffer, growing it if it must.
    fn put_back(&mut self, bytes: &[u8]) {
        if self.end + bytes.len() > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end + bytes.len() > self.buf.len() {
                self.buf.resize(self.end + bytes.len(), 0);
            }
        }
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// Receives one frame into `dst`; a frame larger than `dst` is returned
    /// whole in [`RecvError::BufferTooShort`].
    pub(crate) fn frame_into(
        &mut self,
        dst: &mut [u8],
        max: usize,
        read: &mut impl Source,
    ) -> Result<usize, RecvError> {
        self.announce();
        self.frame_into_inner(dst, max, read).map_err(typed)
    }

    /// On the first receive with a lane: tells the senders that tokens
    /// are read here (see the `lane` module, "Who reads tokens").
    #[inline]
    fn announce(&mut self) {
        if !self.announced {
            self.announced = true;
            if let Some(lane) = &self.lane {
                lane.reading();
            }
        }
    }

    /// [`frame_into`](Self::frame_into), with a refused read still
    /// `RecvError::Io`.
    fn frame_into_inner(
        &mut self,
        dst: &mut [u8],
        max: usize,
        read: &mut impl Source,
    ) -> Result<usize, RecvError> {
        if let Some(partial) = self.partial.take() {
            let (message, fds) = self.finish_large(partial, read)?;
            drop(fds);
            if message.len() > dst.len() {
                return Err(RecvError::BufferTooShort(message));
            }
            dst[..message.len()].copy_from_slice(&message);
            return Ok(message.len());
        }
        if self.pieces.is_some() {
            return self.pieces_into(dst, max, read);
        }
        if self.buffered() == 0
            && !self.eof
            && self.lane.is_none()
            && self.last_len > SPECULATE_FROM
            && dst.len() > SPECULATE_FROM
            && let Some((len, got, frame_start)) = self.speculative_read(dst, max, read)?
        {
            let frame_len = 4 + len as u64;
            if len > dst.len() {
                // The rest of a message too long for `dst` grows with the
                // bytes that arrive, like any large payload.
                let mut message = Vec::new();
                reserve(&mut message, self.first_capacity(len).max(got))?;
                message.extend_from_slice(&dst[..got]);
                let partial = Partial::frame(message, len, 4, frame_start);
                let (message, fds) = self.finish_large(partial, read)?;
                drop(fds);
                return Err(RecvError::BufferTooShort(message));
            }
            self.payload_into(&mut dst[..len], got, 4, frame_start, read)?;
            drop(self.claim_fds(frame_start, frame_len));
            self.last_len = len;
            return Ok(len);
        }
        let (header_len, len) = match self.header(max, read)? {
            Head::Inline(header_len, len) => (header_len, len),
            Head::Token(token) if token.len <= dst.len() => {
                let (token, _fds) = self.consume_token(token)?;
                let lane = self.lane.as_ref().expect("tokens are parsed with a lane");
                lane.take_into(token, dst)?;
                return Ok(token.len);
            }
            Head::Token(_) => (TOKEN_FRAME, usize::MAX),
            Head::Piece(_) => return self.pieces_into(dst, max, read),
        };
        if len > dst.len() {
            let (payload, _fds) = self.frame_inner(max, false, read)?;
            return Err(RecvError::BufferTooShort(payload.into_vec()));
        }
        let frame_start = self.position();
        let frame_len = (header_len + len) as u64;
        let total = header_len + len;
        if total <= self.buffered() {
            dst[..len].copy_from_slice(&self.buf[self.start + header_len..self.start + total]);
            self.start += total;
        } else {
            self.start += header_len;
            self.payload_into(&mut dst[..len], 0, header_len, frame_start, read)?;
        }
        drop(self.claim_fds(frame_start, frame_len));
        self.last_len = len;
        Ok(len)
    }

    /// Consumes the buffered token frame of `token`: returns it, checked
    /// against the lane (nothing is allocated for a token that failed),
    /// and the descriptors that came with it.
    fn consume_token(&mut self, token: Token) -> Result<(Token, Vec<OwnedFd>), RecvError> {
        let frame_start = self.position();
        self.start += TOKEN_FRAME;
        let fds = self.claim_fds(frame_start, TOKEN_FRAME as u64);
        // Nothing to guess from a payload that came through the lane.
        self.last_len = 0;
        let lane = self.lane.as_ref().expect("tokens are parsed with a lane");
        lane.check(token)?;
        Ok((token, fds))
    }

    /// [`frame_into`](Self::frame_into) for a message in pieces: put
    /// together, then copied into `dst`.
    fn pieces_into(
        &mut self,
        dst: &mut [u8],
        max: usize,
        read: &mut impl Source,
    ) -> Result<usize, RecvError> {
        let (payload, _fds) = self.frame_inner(max, false, read)?;
        let message = payload.into_vec();
        if message.len() > dst.len() {
            return Err(RecvError::BufferTooShort(message));
        }
        dst[..message.len()].copy_from_slice(&message);
        Ok(message.len())
    }

    /// Appends the piece `token` (its frame consumed and checked, its length
    /// within what is left of `max` and of what the lane carries) to the
    /// message in [`pieces`](Self::pieces).
    fn take_piece(&mut self, token: Token, max: usize) -> Result<(), RecvError> {
        let lane = self.lane.as_ref().expect("tokens are parsed with a lane");
        let pieces = self.pieces.as_mut().expect("a message in pieces");
        let have = pieces.out.len();
        // The header was parsed with what is left of the limit (the first
        // piece's with the limit itself), and the lane checked the token.
        debug_assert!(token.len <= max.min(MAX_PAYLOAD) - have);
        if pieces.out.capacity() - have < token.len {
            pieces
                .out
                .try_reserve(token.len)
                .map_err(|_| RecvError::Io(io::ErrorKind::OutOfMemory.into()))?;
        }
        let got = lane
            .take(token, &mut pieces.out.spare_capacity_mut()[..token.len])?
            .len();
        // SAFETY: `take` initialised the first `got` bytes of the spare
        // capacity of `out`, which held `have` bytes.
        unsafe { pieces.out.set_len(have + got) };
        Ok(())
    }

    /// Receives the rest of the message in [`pieces`](Self::pieces): more
    /// pieces, then its last part, a token or an ordinary frame. A
    /// `WouldBlock` keeps what came so far for the next receive; the end
    /// of the stream before the last part is a truncated message.
    fn rest_of_pieces(
        &mut self,
        max: usize,
        read: &mut impl Source,
    ) -> Result<OwnedFrame, RecvError> {
        let limit = max.min(MAX_PAYLOAD);
        loop {
            let have = self.pieces.as_ref().expect("a message in pieces").out.len();
            let head = match self.header(limit - have, read) {
                Ok(head) => head,
                Err(err) => {
                    if !is_would_block(&err) {
                        self.pieces = None;
                    }
                    return Err(match err {
                        RecvError::Eof => RecvError::Truncated {
                            expected: have as u64 + 1,
                            received: have as u64,
                        },
                        other => other,
                    });
                }
            };
            match head {
                Head::Piece(token) | Head::Token(token) => {
                    let consumed = self.consume_token(token);
                    let (token, fds) = match consumed {
                        Ok(consumed) => consumed,
                        Err(err) => {
                            self.pieces = None;
                            return Err(err);
                        }
                    };
                    self.pieces
                        .as_mut()
                        .expect("a message in pieces")
                        .fds
                        .extend(fds);
                    self.take_piece(token, max)?;
                    if matches!(head, Head::Token(_)) {
                        let Pieces { out, fds } = self.pieces.take().expect("a message in pieces");
                        self.last_pieced = out.len();
                        return Ok((out, fds));
                    }
                }
                Head::Inline(header_len, len) => {
                    let Pieces { out, fds } = self.pieces.take().expect("a message in pieces");
                    let frame_start = self.position();
                    self.start += header_len;
                    let partial = Partial {
                        len: have + len,
                        out,
                        header_len,
                        frame_start,
                        prefix: have,
                        fds,
                    };
                    let (out, fds) = self.finish_large(partial, read)?;
                    self.last_pieced = out.len();
                    return Ok((out, fds));
                }
            }
        }
    }

    fn truncated_in_buffer(&mut self, total: usize) -> RecvError {
        let received = self.buffered() as u64;
        // The partial frame can never complete; drop it.
        self.start = self.end;
        RecvError::Truncated {
            expected: total as u64,
            received,
        }
    }
}

/// Makes room for `additional` more bytes in `out`, exactly; an allocation
/// the process cannot make is an error, not an abort.
fn reserve(out: &mut Vec<u8>, additional: usize) -> Result<(), RecvError> {
    out.try_reserve_exact(additional)
        .map_err(|_| RecvError::Io(io::ErrorKind::OutOfMemory.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{MAX_HEADER, encode_header};

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            let mut header = [0u8; MAX_HEADER];
            let n = encode_header(p.len(), &mut header);
            out.extend_from_slice(&header[..n]);
            out.extend_from_slice(p);
        }
        out
    }

    /// A reader over `data` that returns at most `chunk` bytes per read.
    fn reader(data: Vec<u8>, chunk: usize) -> impl Source {
        let mut pos = 0;
        move |bufs: &mut [IoSliceMut<'_>]| Ok((serve(&data, &mut pos, chunk, bufs), Vec::new()))
    }

    /// Copies up to `chunk` bytes of `data` from `pos` into `bufs`, in order.
    pub(super) fn serve(
        data: &[u8],
        pos: &mut usize,
        chunk: usize,
        bufs: &mut [IoSliceMut<'_>],
    ) -> usize {
        let mut left = chunk.min(data.len() - *pos);
        let mut total = 0;
        for buf in bufs.iter_mut() {
            let n = buf.len().min(left);
            buf[..n].copy_from_slice(&data[*pos..*pos + n]);
            *pos += n;
            left -= n;
            total += n;
        }
        total
    }

    /// A source that scatters a header and a payload in one read, or (as
    /// a plain `read` of a pipe must) reads the header alone.
    struct Either<S> {
        inner: S,
        head_only: bool,
    }

    impl<S: Source> Either<S> {
        fn new(inner: S, head_only: bool) -> Self {
            Self { inner, head_only }
        }
    }

    impl<S: Source> Source for Either<S> {
        fn read(&mut self, bufs: &mut [IoSliceMut<'_>]) -> ReadResult {
            self.inner.read(bufs)
        }

        fn read_split(&mut self, head: &mut [u8], tail: &mut [MaybeUninit<u8>]) -> ReadResult {
            if self.head_only {
                self.inner.read(&mut [IoSliceMut::new(head)])
            } else {
                self.inner.read_split(head, tail)
            }
        }

        fn read_uninit(&mut self, dst: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
            self.inner.read_uninit(dst)
        }
    }

    #[test]
    fn small_frames_read_with_a_large_one_leave_the_buffer_its_usual_size() {
        let mut sizes = vec![100_000usize];
        sizes.extend([30; 3000]);
        let payloads = patterned(&sizes);
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let mut rx = RecvBuf::default();
        let mut read = reader(framed(&refs), usize::MAX);
        assert!(rx.frame(usize::MAX, &mut read).unwrap().0.as_slice() == payloads[0].as_slice());
        // Read speculatively into a vector as large as the first payload,
        // but handed out in one of its own size.
        match rx.frame(usize::MAX, &mut read).unwrap().0 {
            Payload::Owned(second) => {
                assert!(second == payloads[1]);
                assert!(second.capacity() < 1000, "{} bytes", second.capacity());
            }
            Payload::Buffered(_) | Payload::Lane(_) => {
                panic!("the second frame came through the speculative read")
            }
        }
        // The speculative read of the second frame brought all the rest.
        assert!(rx.buf.len() > READ_BUF);
        for p in &payloads[2..] {
            assert!(rx.frame(usize::MAX, &mut read).unwrap().0.as_slice() == p.as_slice());
        }
        assert!(rx.frame(usize::MAX, &mut read).err().unwrap().is_eof());
        assert!(rx.buf.len() <= READ_BUF, "{} bytes", rx.buf.len());
    }

    #[test]
    fn a_speculative_read_that_brings_many_frames_keeps_them_all() {
        // A large frame read alone, then a read that brings the next large
        // frame and far more than the read-ahead buffer holds of small
        // frames after it, into a large destination: the buffer grows to
        // keep them, and reads that fill it again must not cut it back.
        let mut sizes = vec![40_000usize, 40_000];
        sizes.extend([30; 25_000]);
        let payloads = patterned(&sizes);
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let stream = framed(&refs);
        for into in [None, Some(300_000)] {
            let mut read = Dropping {
                data: stream.clone(),
                pos: 0,
                starts: vec![40_004],
                dropping: Vec::new(),
                dropped: false,
            };
            let mut rx = RecvBuf::default();
            let mut dst = vec![0u8; into.unwrap_or(0)];
            for (k, p) in payloads.iter().enumerate() {
                let got = match into {
                    None => rx.frame(usize::MAX, &mut read).unwrap().0.into_vec(),
                    Some(_) => {
                        let n = rx.frame_into(&mut dst, usize::MAX, &mut read).unwrap();
                        dst[..n].to_vec()
                    }
                };
                assert!(got == *p, "frame {k}, into {into:?}");
            }
            assert!(rx.frame(usize::MAX, &mut read).err().unwrap().is_eof());
        }
    }

    /// Like [`reader`], but every other read is refused with `WouldBlock`
    /// (a non-blocking descriptor between a writer's pieces).
    fn stalling_reader(data: Vec<u8>, chunk: usize) -> impl Source {
        let mut pos = 0;
        let mut stall = false;
        move |bufs: &mut [IoSliceMut<'_>]| {
            stall = !stall;
            if stall {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok((serve(&data, &mut pos, chunk, bufs), Vec::new()))
        }
    }

    /// One payload per size, the `k`-th holding `(i + k) % 251` at `i`.
    fn patterned(sizes: &[usize]) -> Vec<Vec<u8>> {
        sizes
            .iter()
            .enumerate()
            .map(|(k, &n)| (0..n).map(|i| ((i + k) % 251) as u8).collect())
            .collect()
    }

    /// Serves `data` up to the next of `starts` per read, as a `recvmsg`
    /// stops before bytes that carry descriptors; reads that begin at one
    /// of `dropping` report dropped descriptors.
    struct Dropping {
        data: Vec<u8>,
        pos: usize,
        starts: Vec<usize>,
        dropping: Vec<usize>,
        dropped: bool,
    }

    impl Source for Dropping {
        fn read(&mut self, bufs: &mut [IoSliceMut<'_>]) -> ReadResult {
            let at = self.pos;
            let next = self.starts.iter().copied().find(|&s| s > at);
            let n = serve(
                &self.data,
                &mut self.pos,
                next.unwrap_or(usize::MAX) - at,
                bufs,
            );
            self.dropped = self.dropping.contains(&at);
            Ok((n, Vec::new()))
        }

        fn fds_dropped(&self) -> bool {
            self.dropped
        }

        fn read_uninit(&mut self, dst: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
            let mut scratch = vec![0u8; dst.len()];
            let (n, _) = self.read(&mut [IoSliceMut::new(&mut scratch)])?;
            for (slot, byte) in dst.iter_mut().zip(&scratch[..n]) {
                slot.write(*byte);
            }
            Ok(n)
        }
    }

    #[test]
    fn dropped_descriptors_are_reported_to_the_frame_they_came_with() {
        let large = vec![9u8; READ_BUF * 2];
        let payloads: [&[u8]; 5] = [b"before", b"lost some", &large, b"after", b"last"];
        let starts: Vec<usize> = payloads
            .iter()
            .scan(0, |at, p| {
                let start = *at;
                *at += framed(&[p]).len();
                Some(start)
            })
            .collect();
        let mut read = Dropping {
            data: framed(&payloads),
            pos: 0,
            dropping: vec![starts[1], starts[2]],
            starts,
            dropped: false,
        };
        let mut rx = RecvBuf::default();
        for (payload, dropped) in payloads[..4].iter().zip([false, true, true, false]) {
            let (got, fds) = rx.frame(usize::MAX, &mut read).unwrap();
            assert_eq!(got.as_slice(), *payload);
            assert!(fds.is_empty());
            drop(got);
            assert_eq!(
                rx.fds_dropped(),
                dropped,
                "payload of {} bytes",
                payload.len()
            );
        }
        let mut buf = [0u8; 8];
        assert_eq!(rx.frame_into(&mut buf, usize::MAX, &mut read).unwrap(), 4);
        assert!(!rx.fds_dropped());
    }

    #[test]
    fn would_block_keeps_partial_frames() {
        let sizes = [3usize, 40_000, 32_764, 70_000, 0, 100_000, 5, 40_000];
        let payloads = patterned(&sizes);
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let stream = framed(&refs);
        for chunk in [1, 3, 1000, 40_004, usize::MAX] {
            for into in [None, Some(50_000), Some(200_000)] {
                let got = receive_stalling(RecvBuf::default(), &stream, chunk, into);
                assert!(got == payloads, "chunk {chunk}, into {into:?}");
            }
        }
    }

    /// Every message of `stream`, read `chunk` bytes at a time with every
    /// other read refused (`WouldBlock`), by `frame`, or with `into` by
    /// `frame_into` into a buffer that long (a message too long for it
    /// comes back in `BufferTooShort`).
    fn receive_stalling(
        mut rx: RecvBuf,
        stream: &[u8],
        chunk: usize,
        into: Option<usize>,
    ) -> Vec<Vec<u8>> {
        let mut read = stalling_reader(stream.to_vec(), chunk);
        let mut dst = vec![0u8; into.unwrap_or(0)];
        let mut got = Vec::new();
        loop {
            let result = match into {
                None => rx.frame(usize::MAX, &mut read).map(|(p, _)| p.into_vec()),
                Some(_) => match rx.frame_into(&mut dst, usize::MAX, &mut read) {
                    Ok(n) => Ok(dst[..n].to_vec()),
                    Err(RecvError::BufferTooShort(m)) => Ok(m),
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(p) => got.push(p),
                Err(RecvError::WouldBlock) => {}
                Err(RecvError::Eof) => return got,
                Err(e) => panic!("chunk {chunk}, into {into:?}: {e:?}"),
            }
        }
    }

    /// Messages in pieces (see the lane's "Pieces"): three pieces; a piece
    /// and an ordinary frame as the last part; between them a whole token
    /// and an ordinary frame. Each comes out whole, whatever the chunks and
    /// stalls of the stream, by `frame` and by `frame_into`.
    #[test]
    fn messages_in_pieces_come_out_whole_through_stalls_and_any_chunking() {
        let (tx, rx) = Lane::pair().unwrap();
        rx.reading();
        let big = patterned(&[300_000, 200_000, 100_000, 50_000, 9_000]);
        let mut stream = Vec::new();
        let mut put = |payload: &[u8], more: bool| {
            let token = tx.put(payload).unwrap();
            stream.extend_from_slice(&if more {
                token.encode_piece()
            } else {
                token.encode()
            });
        };
        put(&big[0], true);
        put(&big[1], true);
        put(&big[2], false);
        put(&big[4], false);
        put(&big[3], true);
        stream.extend_from_slice(&framed(&[b"the last part"]));
        stream.extend_from_slice(&framed(&[b"small"]));
        let mut first = [&big[0][..], &big[1], &big[2]].concat();
        let mut second = big[3].clone();
        second.extend_from_slice(b"the last part");
        let expected = vec![
            std::mem::take(&mut first),
            big[4].clone(),
            second,
            b"small".to_vec(),
        ];
        for chunk in [1, 7, 20, 1000, usize::MAX] {
            for into in [None, Some(100), Some(1 << 20)] {
                let buf = RecvBuf::with_lane(Some(rx.clone()));
                let got = receive_stalling(buf, &stream, chunk, into);
                assert!(got == expected, "chunk {chunk}, into {into:?}");
            }
        }
    }

    /// `has_message` (what `poll` and `wait` ask first) counts a message in
    /// pieces only once its last part is buffered whole.
    #[test]
    fn a_message_in_pieces_is_there_once_its_last_part_is() {
        let (tx, rx) = Lane::pair().unwrap();
        rx.reading();
        let piece = tx.put(&[1u8; 5000]).unwrap().encode_piece().to_vec();
        let last = tx.put(&[2u8; 5000]).unwrap().encode().to_vec();
        let inline = framed(&[b"abc"]);
        let cases = [
            (piece.clone(), false),
            ([&piece[..], &piece].concat(), false),
            ([&piece[..], &last].concat(), true),
            ([&piece[..], &piece, &last].concat(), true),
            ([&piece[..], &inline].concat(), true),
            ([&piece[..], &inline[..5]].concat(), false),
        ];
        for (i, (stream, whole)) in cases.into_iter().enumerate() {
            let mut buf = RecvBuf::with_lane(Some(rx.clone()));
            let mut read = reader(stream, usize::MAX);
            buf.fill(&mut read).unwrap();
            assert_eq!(buf.has_message(usize::MAX), whole, "case {i}");
        }
    }

    #[test]
    fn frames_come_out_whole_for_any_chunking() {
        let big = vec![7u8; READ_BUF * 2 + 3];
        let stream = framed(&[b"", b"a", b"hello", &big, b"tail"]);
        for chunk in [1, 3, 4, 5, 4096, usize::MAX] {
            let mut rx = RecvBuf::default();
            let mut read = reader(stream.clone(), chunk);
            let mut got = Vec::new();
            loop {
                match rx.frame(usize::MAX, &mut read) {
                    Ok((p, _)) => got.push(p.into_vec()),
                    Err(RecvError::Eof) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(got.len(), 5, "chunk {chunk}");
            assert_eq!(got[2], b"hello");
            assert_eq!(got[3], big);
            assert_eq!(got[4], b"tail");
        }
    }

    #[test]
    fn large_frames_of_changing_sizes_survive_speculation() {
        let sizes = [
            40_000usize,
            40_000,
            10,
            50_000,
            70_000,
            40_000,
            0,
            100_000,
            33_000,
            5,
        ];
        let mut payloads = patterned(&sizes);
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let mut stream = framed(&refs);
        // A long-form header after a large frame, then a short frame.
        let long = patterned(&[45_000, 7]);
        stream.extend_from_slice(&[0xff; 4]);
        stream.extend_from_slice(&(long[0].len() as u64).to_be_bytes());
        stream.extend_from_slice(&long[0]);
        stream.extend_from_slice(&framed(&[&long[1]]));
        payloads.extend(long);
        for chunk in [3, 4, 5, 1000, 40_004, 65_536, usize::MAX] {
            for head_only in [false, true] {
                let mut rx = RecvBuf::default();
                let scatter = reader(stream.clone(), chunk);
                let mut read = Either::new(scatter, head_only);
                for (k, p) in payloads.iter().enumerate() {
                    let (got, _) = rx.frame(usize::MAX, &mut read).unwrap();
                    assert!(
                        got.as_slice() == p.as_slice(),
                        "frame {k}, chunk {chunk}, head only: {head_only}"
                    );
                }
                assert!(rx.frame(usize::MAX, &mut read).err().unwrap().is_eof());
            }
        }
        // A truncated large frame after a large one.
        let mut cut = framed(&[&payloads[0], &payloads[1]]);
        cut.truncate(cut.len() - 7);
        let mut rx = RecvBuf::default();
        let mut read = reader(cut, 20_000);
        rx.frame(usize::MAX, &mut read).unwrap();
        assert!(matches!(
            rx.frame(usize::MAX, &mut read),
            Err(RecvError::Truncated {
                expected: 40_004,
                received: 39_997
            })
        ));
    }

    #[test]
    fn frame_into_speculates_and_still_reports_short_buffers() {
        let sizes = [
            40_000usize,
            40_000,
            50_000,
            39_000,
            7,
            40_000,
            45_000,
            41_000,
        ];
        let payloads: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(k, &n)| (0..n).map(|i| ((i * 3 + k) % 251) as u8).collect())
            .collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let stream = framed(&refs);
        for chunk in [2, 4, 6, 33_000, 40_004, 45_000, usize::MAX] {
            let mut rx = RecvBuf::default();
            let mut read = reader(stream.clone(), chunk);
            let mut dst = vec![0u8; 44_000];
            for (k, p) in payloads.iter().enumerate() {
                match rx.frame_into(&mut dst, usize::MAX, &mut read) {
                    Ok(n) => assert!(dst[..n] == p[..], "frame {k}, chunk {chunk}"),
                    Err(RecvError::BufferTooShort(m)) => {
                        assert!(p.len() > dst.len() && m == *p, "frame {k}, chunk {chunk}")
                    }
                    Err(e) => panic!("frame {k}, chunk {chunk}: {e}"),
                }
            }
            assert!(
                rx.frame_into(&mut dst, usize::MAX, &mut read)
                    .unwrap_err()
                    .is_eof()
            );
        }
    }

    #[test]
    fn truncated_frames_are_typed() {
        let mut stream = framed(&[b"hello"]);
        stream.pop();
        let mut rx = RecvBuf::default();
        let err = rx.frame(100, &mut reader(stream, 2)).err().unwrap();
        assert!(matches!(
            err,
            RecvError::Truncated {
                expected: 9,
                received: 8
            }
        ));
        let mut rx = RecvBuf::default();
        let err = rx.frame(100, &mut reader(vec![0, 0], 2)).err().unwrap();
        assert!(matches!(err, RecvError::Truncated { .. }));
    }

    #[test]
    fn too_long_header_is_kept_for_a_retry() {
        let stream = framed(&[b"0123456789"]);
        let mut rx = RecvBuf::default();
        let mut read = reader(stream, 100);
        assert!(
            rx.frame(5, &mut read)
                .err()
                .unwrap()
                .is_bad_message_length()
        );
        let (payload, _) = rx.frame(10, &mut read).unwrap();
        assert_eq!(payload.as_slice(), b"0123456789");
    }

    #[test]
    fn frame_into_reports_short_buffers_with_the_message() {
        let stream = framed(&[b"0123456789", b"ok"]);
        let mut rx = RecvBuf::default();
        let mut read = reader(stream, 3);
        let mut small = [0u8; 4];
        let err = rx.frame_into(&mut small, 100, &mut read).unwrap_err();
        assert_eq!(err.into_message().unwrap(), b"0123456789");
        assert_eq!(rx.frame_into(&mut small, 100, &mut read).unwrap(), 2);
        assert_eq!(&small[..2], b"ok");
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use crate::frame::{MAX_HEADER, encode_header};
    use proptest::prelude::*;

    /// Drives the real decoder over `data`, served in reads of the given
    /// sizes (cycled); returns the payloads and how it ended.
    fn decode_all(data: &[u8], chunks: &[usize], max: usize) -> (Vec<Vec<u8>>, RecvError) {
        decode_all_with(data, chunks, max, None)
    }

    /// [`decode_all`] through `frame_into` a buffer of `into` bytes when
    /// given (a too-short buffer's message counts as the frame).
    fn decode_all_with(
        data: &[u8],
        chunks: &[usize],
        max: usize,
        into: Option<usize>,
    ) -> (Vec<Vec<u8>>, RecvError) {
        let mut pos = 0;
        let mut turn = 0;
        let mut read = |bufs: &mut [IoSliceMut<'_>]| -> ReadResult {
            let chunk = chunks[turn % chunks.len()].max(1);
            turn += 1;
            Ok((super::tests::serve(data, &mut pos, chunk, bufs), Vec::new()))
        };
        let mut rx = RecvBuf::default();
        let mut out = Vec::new();
        let mut dst = vec![0u8; into.unwrap_or(0)];
        loop {
            let got = match into {
                None => rx.frame(max, &mut read).map(|(p, _)| p.into_vec()),
                Some(_) => match rx.frame_into(&mut dst, max, &mut read) {
                    Ok(n) => Ok(dst[..n].to_vec()),
                    Err(RecvError::BufferTooShort(message)) => Ok(message),
                    Err(err) => Err(err),
                },
            };
            match got {
                Ok(payload) => out.push(payload),
                Err(err) => return (out, err),
            }
            assert!(
                out.len() <= data.len() / 4 + 1,
                "more frames than headers fit"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        /// Arbitrary bytes never panic the decoder; it ends in a typed error
        /// and never returns more payload bytes than it read.
        #[test]
        fn arbitrary_streams_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..200),
            chunks in proptest::collection::vec(1usize..40, 1..4),
            max in prop_oneof![Just(usize::MAX), 0usize..64],
        ) {
            let (frames, end) = decode_all(&data, &chunks, max);
            let total: usize = frames.iter().map(Vec::len).sum();
            prop_assert!(total + 4 * frames.len() <= data.len());
            let typed_end = matches!(
                end,
                RecvError::Eof | RecvError::Truncated { .. } | RecvError::BadMessageLength { .. }
            );
            prop_assert!(typed_end, "unexpected end: {:?}", end);
        }

        /// Large frames of changing sizes (which take the speculative path)
        /// come back whole too.
        #[test]
        fn large_framed_payloads_round_trip(
            sizes in proptest::collection::vec(
                prop_oneof![Just(0usize), 1usize..100, 32_000usize..33_000, 60_000usize..70_000],
                1..6,
            ),
            chunks in proptest::collection::vec(1usize..80_000, 1..4),
            into in prop_oneof![Just(None), (0usize..70_000).prop_map(Some)],
        ) {
            let payloads: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![n as u8; n]).collect();
            let mut data = Vec::new();
            for p in &payloads {
                data.extend_from_slice(&(p.len() as u32).to_be_bytes());
                data.extend_from_slice(p);
            }
            let (frames, end) = decode_all_with(&data, &chunks, usize::MAX, into);
            prop_assert!(frames == payloads);
            prop_assert!(end.is_eof());
        }

        /// Framed payloads come back whole and in order, whatever the read
        /// sizes and whichever header form is used.
        #[test]
        fn framed_payloads_round_trip(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            long_form in proptest::collection::vec(any::<bool>(), 8),
            chunks in proptest::collection::vec(1usize..500, 1..4),
        ) {
            let mut data = Vec::new();
            for (i, p) in payloads.iter().enumerate() {
                if long_form[i] {
                    data.extend_from_slice(&[0xff; 4]);
                    data.extend_from_slice(&(p.len() as u64).to_be_bytes());
                } else {
                    let mut header = [0u8; MAX_HEADER];
                    let n = encode_header(p.len(), &mut header);
                    data.extend_from_slice(&header[..n]);
                }
                data.extend_from_slice(p);
            }
            let (frames, end) = decode_all(&data, &chunks, usize::MAX);
            prop_assert_eq!(frames, payloads);
            prop_assert!(end.is_eof());
        }
    }
}
