//! The lane: large payloads between the two ends of a
//! [`Pipe::new`](crate::Pipe::new) pair go through shared memory, and only
//! a [`Token`] saying where they lie goes through the socket.
//!
//! # Why
//!
//! A socket copies every payload twice, into pages it allocates for the
//! purpose and out again. With the two processes on two CPUs, 70 % of a
//! 64 KiB sender's time went into the first copy (`_copy_from_iter`):
//! those pages were last touched on the other CPU. The lane copies into a
//! ring that stays mapped and is reused from its start whenever the
//! receiver has caught up, so the same few pages carry message after
//! message, and no page is allocated or freed per message. The socket still
//! carries every message's place in the order and every wake-up, so
//! messages sent through the lane and through the socket arrive in the
//! order they were sent, and waiting (blocking, `poll`, an event loop) is
//! what it was. Messages too small for the ring skip the socket only
//! while their receiver spins for them: see the `mailbox` module.
//!
//! # Layout
//!
//! One anonymous (memfd) segment per pair: a [`Header`] page, then for each
//! direction a control page, a ring of [`RING`] bytes and a mailbox of
//! [`MAILBOX`] bytes (see `mailbox`). Direction 0
//! carries what the first end of the pair sends, direction 1 the second's.
//! A control page holds three words, on cache lines of their own:
//!
//! - `head`: the ring position up to which senders have reserved space;
//! - `tail`: the position up to which the receiver has copied out;
//! - `reader`: whether tokens may be sent — [`NO_READER`] until a
//!   connection that reads them starts receiving, [`READING`] from then
//!   on, [`GONE`] for good once the receiving end left the lane.
//!
//! Positions count bytes since the pair was made and never wrap (2^64
//! bytes); a position's place in the ring is the position modulo [`RING`].
//!
//! # Protocol
//!
//! A sender reserves `[start, end)` by moving `head` from its old value to
//! `end` (compare-and-swap, so sending processes that share an end never
//! get the same bytes), copies the payload in, and writes the token frame
//! `(end, len)` to the socket. Space is free when the receiver's `tail` is
//! past it (read with `Acquire`). When the ring is empty (`tail == head`)
//! the payload goes to the ring's start, and the sender moves `tail` over
//! the bytes it skipped (compare-and-swap from the value it read: nothing
//! there is waiting to be taken). A payload that does not fit goes through
//! the socket as usual ([`Refused::NoRoom`]); a blocking send first waits
//! for room for as long as a blocking receive spins (see `spin.rs`: at
//! most 50 µs, yielding so that a receiver on the same CPU can take what
//! the ring holds, and less after waits that ran out). Nothing ever waits
//! on the ring for longer.
//!
//! A typed send does not know its payload's length before it has encoded
//! it, and encodes it once (a `Serialize` impl may have side effects). So
//! it reserves a span as long as its previous payload and an eighth, and
//! encodes into it: when the payload fits, [`Lane::seal`] moves `head`
//! back from the span's end to the payload's (compare-and-swap: unless
//! another sender reserved past the span, when the rest stays a gap that
//! the next token taken frees, as a dead sender's reservation does); when
//! it outgrows the span, the encoding goes on in a buffer, and
//! [`Lane::abandon`] gives the whole span back the same way.
//!
//! The receiver reads tokens from the socket in order, checks that the
//! bytes they name lie in the ring, copies them out, and stores `tail :=
//! end` with `Release`, which hands that space back.
//!
//! # Pieces
//!
//! A byte string of [`PIECES_FROM`] bytes or more goes in pieces of at
//! most [`PIECE`] bytes, each reserved, filled and named by a piece frame
//! on its own (see the `frame` module), the last by a token; the receiver
//! copies each piece out as its frame arrives. While the receiver shares
//! the sender's CPU (the sender's waits for room gave the CPU away before
//! room came), the sender keeps at most [`SHARED_WINDOW`] bytes in flight:
//! it then waits for room after every two pieces, the receiver runs and
//! copies them out while they are still in the cache, and the ring's start
//! is used again. The window only ever makes a blocking send yield a few
//! times: room the ring has is taken after that whatever the window says
//! (and the window is off until a wait for room finds the receiver on
//! this CPU again); a non-blocking send ignores it. Pinned to one CPU
//! (2-vCPU Intel guest, 2 MiB of L2 per core; the compare demo's Pipe
//! table), 1 MiB messages went from 5.7–6.5 GB/s (the whole payload in,
//! then the whole payload out of a ring four payloads long: three
//! payload-sized buffers do not fit the L2) to 8.7–10.3 GB/s, against the
//! socketpair's 5.9–7.1, and 64 KiB messages from 6.8–7.8 to 11.5–13.8
//! GB/s. On two CPUs the pieces cost nothing measurable, and a window
//! there would cost a third (a throwaway build that always capped: 11.0
//! against 15.9 GB/s at 256 KiB), so it is only used
//! while the CPU is shared. A piece that finds no room after
//! the usual wait ends the run: the rest of the message goes through the
//! socket as its last part, an ordinary frame, so a stalled receiver holds
//! up nothing that a socket would not. A sender killed between pieces
//! leaves a message without its last part: the receiver reports it
//! truncated at the end of the stream, and its pieces' space was handed
//! back as they were copied out.
//!
//! # Death
//!
//! - A sender that dies before its token is written leaves a reservation
//!   no token names: the next token's `end` moves `tail` past it, and
//!   until then it only takes room. Nothing is delivered from it, so
//!   nothing torn.
//! - A sender stopped (`SIGSTOP`) holds nothing others wait for.
//! - A receiver that dies or stops leaves `tail` where it was: the ring
//!   fills, and later payloads go through the socket after that short
//!   wait, which blocks the sender as it always did.
//! - A peer that writes nonsense into the control words or sends tokens
//!   that point anywhere gets at most garbage in its own messages: every
//!   copy stays inside the ring ([`RecvError::BadLaneToken`] for a token
//!   that does not), and a sender that reads a `tail` that makes no sense
//!   sends through the socket.
//!
//! The model in `tests/loom_lane.rs` checks this hand-over with a party
//! that stops for ever at any step.
//!
//! # Who reads tokens
//!
//! A descriptor may be read by a program that knows nothing of tokens
//! (Python, or a [`Connection::from_fd`](crate::Connection::from_fd) in a
//! child that inherited it). So tokens go to a direction only once a
//! connection with the lane started receiving on it ([`Lane::reading`]),
//! and no more once its descriptor was taken out with
//! [`Connection::into_fd`](crate::Connection::into_fd) ([`Lane::leave`]).
//! A sender checks the word after reserving, and `leave` checks `head`
//! after setting it (both behind `SeqCst` fences): either the sender sees
//! the reader gone and sends through the socket, or `leave` sees the
//! reservation and reports that a token may be on its way.

// Writing and reading ring bytes in place (`span_bytes`, `borrow`), under
// the protocol's ownership rules.
#![allow(unsafe_code)]

mod mailbox;

pub(crate) use mailbox::{MAIL_MAX, MAILBOX, Posted};

use crate::error::RecvError;
use crate::frame::Token;
use multiproc_core::{Header, Segment};
use serde::{Deserialize, Serialize};
use std::io;
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

/// Bytes of each direction's ring: room for a few 1 MiB payloads in
/// flight. Pages are committed as they are first written, and a receiver
/// that keeps up keeps the sender at the ring's start.
pub(crate) const RING: usize = 4 << 20;

/// Smallest payload sent through the lane. Measured with the two
/// processes on one CPU, on two, and placed by the kernel (a throwaway
/// flow program on the bench harness, this threshold against 2 KiB,
/// alternated): at 4 KiB the lane moved 2.0–2.1 GB/s against 1.5–1.75
/// through the socket, at 8 KiB 3.3–4.5 against 2.5–2.8; at 2 KiB the two
/// were within 5 % of each other, so below 4 KiB the socket keeps them.
pub(crate) const MIN_PAYLOAD: usize = 4 * 1024;

/// Largest payload sent through the lane: half the ring, so that two are
/// in flight.
pub(crate) const MAX_PAYLOAD: usize = RING / 2;

/// A byte string from this long on goes in pieces (see "Pieces" above).
pub(crate) const PIECES_FROM: usize = 512 * 1024;

/// The longest piece.
pub(crate) const PIECE: usize = 256 * 1024;

/// Bytes a sender keeps in flight while its receiver shares its CPU (see
/// "Pieces" above); otherwise the whole ring.
pub(crate) const SHARED_WINDOW: usize = 512 * 1024;

const PAGE: usize = 4096;
const MAGIC: [u8; 8] = *b"MPLANE\0\0";
const VERSION: u32 = 2;
/// One direction: its control page, its ring, its mailbox.
const DIRECTION: usize = PAGE + RING + MAILBOX;
const SIZE: usize = PAGE + 2 * DIRECTION;

/// Offsets of the control words inside a control page.
const HEAD: usize = 0;
const TAIL: usize = 128;
const READER: usize = 256;

/// Values of the `reader` word.
const NO_READER: u32 = 0;
const READING: u32 = 1;
const GONE: u32 = 2;

/// Why [`Lane::reserve`] sent a payload back to the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The ring has no room for it until the receiver takes what it holds.
    NoRoom,
    /// Not for the lane: outside its sizes, or nobody reads tokens.
    NotHere,
}

/// Ring space reserved by [`Lane::reserve`]: positions `start..end`.
pub(crate) struct Span {
    start: u64,
    end: u64,
}

impl Span {
    /// The token for all of it.
    fn token(&self) -> Token {
        Token {
            end: self.end,
            len: (self.end - self.start) as usize,
        }
    }
}

/// A payload read where it lies in the ring ([`Lane::borrow`]); dropping
/// the loan hands its space back to the sender.
pub(crate) struct Loan<'a> {
    lane: &'a Lane,
    token: Token,
    bytes: &'a [u8],
}

impl std::ops::Deref for Loan<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.bytes
    }
}

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        self.lane.hand_back(self.token);
    }
}

/// One end's share of a pair's lane: it sends on one direction and
/// receives on the other.
#[derive(Clone)]
pub(crate) struct Lane {
    segment: Arc<Segment>,
    /// The direction this end sends on (0 or 1).
    sends: u8,
    /// The receiver's `mail_head` as this process last read it (see
    /// `mailbox`): heads only grow, so a stale one only hides room.
    mail_head_seen: Arc<AtomicU64>,
}

/// A lane inside a message: its segment (the descriptor goes out of band)
/// and the direction the receiving end sends on.
#[derive(Serialize, Deserialize)]
pub(crate) struct LaneWire {
    segment: Segment,
    sends: u8,
}

impl Lane {
    /// A new lane for a pair: the first end sends on direction 0.
    pub(crate) fn pair() -> io::Result<(Self, Self)> {
        let segment = Segment::anonymous(SIZE)?;
        segment.publish_header(0, &Header::new(MAGIC, VERSION, SIZE as u64))?;
        let segment = Arc::new(segment);
        Ok((
            Self {
                segment: Arc::clone(&segment),
                sends: 0,
                mail_head_seen: Arc::default(),
            },
            Self {
                segment,
                sends: 1,
                mail_head_seen: Arc::default(),
            },
        ))
    }

    /// This end's lane as it travels in a message.
    pub(crate) fn to_wire(&self) -> io::Result<LaneWire> {
        Ok(LaneWire {
            segment: self.segment.try_clone()?,
            sends: self.sends,
        })
    }

    /// The lane of an end that arrived in a message, checked: a segment
    /// that is not a lane is an error, never undefined behaviour.
    pub(crate) fn from_wire(wire: LaneWire) -> io::Result<Self> {
        if wire.sends > 1 || wire.segment.len() != SIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a connection's shared-memory lane",
            ));
        }
        wire.segment.read_header(0, MAGIC, VERSION)?;
        Ok(Self {
            segment: Arc::new(wire.segment),
            sends: wire.sends,
            mail_head_seen: Arc::default(),
        })
    }

    fn control(&self, direction: u8) -> usize {
        PAGE + usize::from(direction) * DIRECTION
    }

    fn word(&self, direction: u8, at: usize) -> &AtomicU64 {
        self.segment
            .view(self.control(direction) + at)
            .expect("control words lie in the segment")
    }

    fn reader(&self, direction: u8) -> &AtomicU32 {
        self.segment
            .atomic_u32(self.control(direction) + READER)
            .expect("control words lie in the segment")
    }

    /// Offset in the segment of ring `position` of `direction`.
    fn ring_offset(&self, direction: u8, position: u64) -> usize {
        self.control(direction) + PAGE + (position % RING as u64) as usize
    }

    /// [`reserve`](Self::reserve) and [`fill`](Self::fill) in one: places
    /// `payload` and returns its token (the connection reserves and fills
    /// apart, to wait for room in between).
    ///
    /// # Errors
    ///
    /// As for [`reserve`](Self::reserve).
    #[cfg(test)]
    pub(crate) fn put(&self, payload: &[u8]) -> Result<Token, Refused> {
        Ok(self.fill(self.reserve(payload.len(), RING)?, payload))
    }

    /// Copies `payload`, as long as `span`, into it and returns its token.
    pub(crate) fn fill(&self, span: Span, payload: &[u8]) -> Token {
        debug_assert_eq!(span.end - span.start, payload.len() as u64);
        self.segment
            .write_at(self.ring_offset(self.sends, span.start), payload)
            .expect("a placed payload lies in the ring");
        span.token()
    }

    /// Reserves `len` bytes of the ring this end sends on, for a payload of
    /// at most that length written in place ([`span_bytes`](Self::span_bytes))
    /// and then named with [`seal`](Self::seal), or given up with
    /// [`abandon`](Self::abandon); or for exactly `len` bytes copied in
    /// with [`fill`](Self::fill).
    ///
    /// # Errors
    ///
    /// [`Refused::NoRoom`] when the ring is too full for it now, or it
    /// would put more than `window` bytes in flight (unless the ring is
    /// empty);
    /// [`Refused::NotHere`] when it is outside the lane's sizes or nobody
    /// reads tokens (yet, or any more): the payload should go through the
    /// socket.
    pub(crate) fn reserve(&self, len: usize, window: usize) -> Result<Span, Refused> {
        let dir = self.sends;
        if !(MIN_PAYLOAD..=MAX_PAYLOAD).contains(&len)
            || self.reader(dir).load(Ordering::Relaxed) != READING
        {
            return Err(Refused::NotHere);
        }
        let head = self.word(dir, HEAD);
        let (start, end) = loop {
            let from = head.load(Ordering::Relaxed);
            // SYNC: Acquire pairs with the receiver's Release store of
            // `tail` in `take`: its copies out of the space it hands back
            // happen before our writes into it.
            let tail = self.word(dir, TAIL).load(Ordering::Acquire);
            let (start, end) = place(from, tail, len, window).ok_or(Refused::NoRoom)?;
            if head
                .compare_exchange_weak(from, end, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                if from == tail && start != from {
                    // The ring was empty and this payload starts a lap:
                    // the bytes skipped hold nothing to take, so they are
                    // free at once. (The receiver stores `tail` only after
                    // taking a token, and none ends past `from` but ours.)
                    // SYNC: AcqRel keeps the release sequence of the
                    // receiver's store that this replaces.
                    let _ = self.word(dir, TAIL).compare_exchange(
                        tail,
                        start,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    );
                }
                break (start, end);
            }
        };
        // SYNC: pairs with the fence in `leave`: either this load sees the
        // reader gone, or `leave`'s load of `head` sees the reservation.
        fence(Ordering::SeqCst);
        if self.reader(dir).load(Ordering::Relaxed) != READING {
            return Err(Refused::NotHere);
        }
        Ok(Span { start, end })
    }

    /// The bytes of `span`, to write a payload into.
    pub(crate) fn span_bytes<'a>(&'a self, span: &'a mut Span) -> &'a mut [u8] {
        let len = (span.end - span.start) as usize;
        // SAFETY: `reserve` made `span` this sender's alone: other senders
        // reserve past it, the receiver reads it only once a token names
        // it (written after `seal`), and `place` kept it inside the ring,
        // clear of what the receiver has not handed back. `span` is
        // borrowed mutably for as long as the slice lives, and `seal` and
        // `abandon` take it by value, so the slice is gone before its
        // bytes are named or given up.
        unsafe {
            self.segment
                .bytes_mut(self.ring_offset(self.sends, span.start), len)
        }
        .expect("a placed span lies in the ring")
    }

    /// The token for the first `len` bytes of `span`, written; the rest
    /// goes back to the senders when nobody reserved past it meanwhile,
    /// else it stays a gap that the next token taken frees.
    pub(crate) fn seal(&self, span: Span, len: usize) -> Token {
        let end = span.start + len as u64;
        debug_assert!(end <= span.end);
        self.shrink(&span, end);
        Token { end, len }
    }

    /// Gives `span` up (its payload went elsewhere), as [`seal`](Self::seal)
    /// gives up what it did not use.
    pub(crate) fn abandon(&self, span: Span) {
        self.shrink(&span, span.start);
    }

    /// Moves `head` back from the end of `span` to `to`, unless another
    /// sender reserved past it.
    fn shrink(&self, span: &Span, to: u64) {
        if to < span.end {
            let _ = self.word(self.sends, HEAD).compare_exchange(
                span.end,
                to,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Checks that `token` (received on this end) names bytes of the ring
    /// this end receives on, and returns their offset in the segment.
    /// Nothing should be allocated for a token before it passed: its
    /// length is then at most [`MAX_PAYLOAD`].
    ///
    /// # Errors
    ///
    /// [`RecvError::BadLaneToken`].
    pub(crate) fn check(&self, token: Token) -> Result<usize, RecvError> {
        let ring = RING as u64;
        token
            .end
            .checked_sub(token.len as u64)
            .filter(|start| token.len <= MAX_PAYLOAD && start % ring + token.len as u64 <= ring)
            .map(|start| self.ring_offset(1 - self.sends, start))
            .ok_or(RecvError::BadLaneToken {
                end: token.end,
                len: token.len as u64,
            })
    }

    /// Copies the payload `token` names into `dst` (uninitialised, as long
    /// as the payload) and hands its space back to the sender; returns
    /// `dst`, now initialised.
    ///
    /// # Errors
    ///
    /// [`RecvError::BadLaneToken`].
    pub(crate) fn take<'a>(
        &self,
        token: Token,
        dst: &'a mut [MaybeUninit<u8>],
    ) -> Result<&'a mut [u8], RecvError> {
        let at = self.check(token)?;
        let bytes = self
            .segment
            .read_at_uninit(at, &mut dst[..token.len])
            .expect("a checked token lies in the ring");
        self.hand_back(token);
        Ok(bytes)
    }

    /// [`take`](Self::take) into initialised memory.
    ///
    /// # Errors
    ///
    /// [`RecvError::BadLaneToken`].
    pub(crate) fn take_into(&self, token: Token, dst: &mut [u8]) -> Result<(), RecvError> {
        let at = self.check(token)?;
        self.segment
            .read_at(at, &mut dst[..token.len])
            .expect("a checked token lies in the ring");
        self.hand_back(token);
        Ok(())
    }

    /// The payload `token` names, read where it lies; its space goes back
    /// to the sender when the loan is dropped.
    ///
    /// # Errors
    ///
    /// [`RecvError::BadLaneToken`].
    pub(crate) fn borrow(&self, token: Token) -> Result<Loan<'_>, RecvError> {
        let at = self.check(token)?;
        // SAFETY: `check` kept the range inside the ring this end receives
        // on. The sender that reserved it wrote it before its token, and no
        // sender writes it again before `tail` passes `token.end`, which
        // only this loan's drop does (`place` keeps reservations clear of
        // what was not handed back; the ring's processes cooperate, as in
        // the queue's ring).
        let bytes =
            unsafe { self.segment.bytes(at, token.len) }.expect("a checked token lies in the ring");
        Ok(Loan {
            lane: self,
            token,
            bytes,
        })
    }

    /// Gives the space of a payload taken out back to the sender.
    fn hand_back(&self, token: Token) {
        // SYNC: Release pairs with the sender's Acquire load of `tail` in
        // `reserve`: the reads of the payload (a copy out, or a decoder's)
        // happen before the space is written again.
        self.word(1 - self.sends, TAIL)
            .store(token.end, Ordering::Release);
    }

    /// This end starts receiving: tokens may come from now on (unless an
    /// end left the lane before).
    pub(crate) fn reading(&self) {
        let _ = self.reader(1 - self.sends).compare_exchange(
            NO_READER,
            READING,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// This end stops reading tokens, for good: later sends to it go
    /// through the socket. Returns whether a token may still be on its way
    /// (a payload was placed and not yet taken).
    pub(crate) fn leave(&self) -> bool {
        self.deafen();
        let dir = 1 - self.sends;
        self.reader(dir).store(GONE, Ordering::Relaxed);
        // SYNC: pairs with the fence in `put`.
        fence(Ordering::SeqCst);
        self.word(dir, HEAD).load(Ordering::Relaxed) != self.word(dir, TAIL).load(Ordering::Relaxed)
    }
}

/// Where a payload of `len` bytes goes in a ring whose senders reserved up
/// to `head` and whose receiver took up to `tail`: `(start, end)`, or
/// `None` when it does not fit now (or the words make no sense), or when
/// it would put more than `window` bytes in flight and the ring is not
/// empty.
///
/// An empty ring takes it at its start (the pages just used, still
/// committed and cached); otherwise it follows `head`, or goes to the
/// ring's start when it would run past the ring's end, as long as it
/// stays clear of the bytes not yet taken.
pub(crate) fn place(head: u64, tail: u64, len: usize, window: usize) -> Option<(u64, u64)> {
    let ring = RING as u64;
    let len = len as u64;
    let used = head.checked_sub(tail).filter(|&used| used <= ring)?;
    let next_lap = head.checked_next_multiple_of(ring)?;
    let start = if used == 0 || head % ring + len > ring {
        next_lap
    } else {
        head
    };
    let end = start.checked_add(len)?;
    let window = (window as u64).min(ring);
    (used == 0 || end - tail <= window).then_some((start, end))
}

/// A xorshift generator for the tests: the words that follow `state`.
#[cfg(test)]
fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_ring_takes_a_payload_at_its_start() {
        let ring = RING as u64;
        assert_eq!(place(0, 0, 100, RING), Some((0, 100)));
        assert_eq!(place(100, 100, 100, RING), Some((ring, ring + 100)));
        assert_eq!(place(ring, ring, 100, RING), Some((ring, ring + 100)));
    }

    #[test]
    fn a_payload_follows_the_last_or_wraps_and_never_overlaps_untaken_bytes() {
        let ring = RING as u64;
        let half = MAX_PAYLOAD;
        assert_eq!(place(100, 0, half, RING), Some((100, 100 + half as u64)));
        // Would run past the end: to the next lap, clear of [tail, head).
        let head = ring - 10;
        assert_eq!(
            place(head, ring - half as u64, 100, RING),
            Some((ring, ring + 100))
        );
        assert_eq!(place(head, 50, 100, RING), None);
        // Full.
        assert_eq!(place(ring, 1, 2, RING), None);
        // Nonsense words: a tail past the head, or too far behind it.
        assert_eq!(place(5, 6, 1, RING), None);
        assert_eq!(place(3 * ring, ring - 1, 1, RING), None);
        assert_eq!(place(u64::MAX - 3, u64::MAX - 4, 100, RING), None);
    }

    #[test]
    fn a_window_caps_the_bytes_in_flight_but_never_an_empty_ring() {
        let (piece, window) = (PIECE as u64, SHARED_WINDOW);
        assert_eq!(place(0, 0, 3 * PIECE, window), Some((0, 3 * piece)));
        assert_eq!(place(piece, 0, PIECE, window), Some((piece, 2 * piece)));
        assert_eq!(place(2 * piece, 0, PIECE, window), None);
        assert_eq!(
            place(2 * piece, piece, PIECE, window),
            Some((2 * piece, 3 * piece))
        );
        assert_eq!(
            place(2 * piece, 0, PIECE, RING),
            Some((2 * piece, 3 * piece))
        );
    }

    #[test]
    fn every_placement_lies_in_the_ring_clear_of_untaken_bytes() {
        let ring = RING as u64;
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..100_000 {
            let tail = next() % (8 * ring);
            let head = tail + next() % (ring + 2);
            let len = MIN_PAYLOAD + (next() % (MAX_PAYLOAD - MIN_PAYLOAD + 1) as u64) as usize;
            if let Some((start, end)) = place(head, tail, len, RING) {
                assert_eq!(end - start, len as u64);
                assert!(start >= head, "before what is reserved");
                assert!(start % ring + len as u64 <= ring, "runs past the ring");
                assert!(head == tail || end - tail <= ring, "overlaps untaken bytes");
            }
        }
    }

    fn take_vec(lane: &Lane, token: Token) -> Result<Vec<u8>, RecvError> {
        let mut buf = vec![MaybeUninit::uninit(); token.len];
        lane.take(token, &mut buf).map(|bytes| bytes.to_vec())
    }

    #[test]
    fn payloads_go_through_the_ring_and_back() {
        let (a, b) = Lane::pair().unwrap();
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        assert_eq!(
            a.put(&payload),
            Err(Refused::NotHere),
            "nobody reads tokens yet"
        );
        b.reading();
        let token = a.put(&payload).unwrap();
        let got = take_vec(&b, token).unwrap();
        assert!(got == payload);
        // Other sizes go through the socket.
        assert_eq!(a.put(&payload[..MIN_PAYLOAD - 1]), Err(Refused::NotHere));
        assert_eq!(a.put(&vec![0; MAX_PAYLOAD + 1]), Err(Refused::NotHere));
        // A token outside the ring is refused.
        let bad = Token {
            end: RING as u64 + 10,
            len: 20,
        };
        assert!(matches!(
            take_vec(&b, bad),
            Err(RecvError::BadLaneToken { .. })
        ));
        assert!(matches!(
            take_vec(&b, Token { end: 5, len: 10 }),
            Err(RecvError::BadLaneToken { .. })
        ));
    }

    #[test]
    fn a_ring_emptied_mid_lap_holds_as_much_from_its_start() {
        let (a, b) = Lane::pair().unwrap();
        b.reading();
        let odd = vec![1u8; 300_000];
        let token = a.put(&odd).unwrap();
        let mut buf = vec![MaybeUninit::uninit(); odd.len()];
        b.take(token, &mut buf).unwrap();
        // Empty again, with its last payload ending mid-lap: four payloads
        // of a quarter ring fit from the ring's start.
        let quarter = vec![2u8; RING / 4];
        for _ in 0..4 {
            assert!(a.put(&quarter).is_ok());
        }
        assert_eq!(a.put(&quarter), Err(Refused::NoRoom), "full");
    }

    #[test]
    fn a_reader_that_left_gets_no_more_tokens() {
        let (a, b) = Lane::pair().unwrap();
        let payload = vec![3u8; MIN_PAYLOAD];
        b.reading();
        a.reading();
        assert!(a.put(&payload).is_ok());
        assert!(b.leave(), "a token is on its way");
        assert_eq!(a.put(&payload), Err(Refused::NotHere));
        b.reading();
        assert_eq!(a.put(&payload), Err(Refused::NotHere), "gone for good");
        // The other direction is untouched.
        assert!(b.put(&payload).is_ok());
        let (c, d) = Lane::pair().unwrap();
        assert!(!d.leave());
        assert_eq!(c.put(&payload), Err(Refused::NotHere));
    }
}
