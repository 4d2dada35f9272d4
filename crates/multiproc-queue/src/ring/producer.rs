//! The producer side of the ring: taking the producer lock, the put
//! paths (a whole record, a value encoded in place, a message in
//! fragments), the `ABORT` a dead or timed-out producer owes, and close.
//!
//! # Producer state machine (`prod.state`, under the producer lock)
//!
//! | state | meaning | entered by | left by |
//! |---|---|---|---|
//! | `P_IDLE` | between messages | init, `LAST` or `ABORT` published | writing a `FIRST` |
//! | `P_FRAGMENTING` | a message's `FIRST` is out, its `LAST` is not | before publishing `FIRST` | publishing `LAST`; or `ABORT` |
//!
//! A producer killed while `P_FRAGMENTING` (or a live one whose timeout ran
//! out between fragments) leaves the state set; whoever next holds the lock
//! publishes an `ABORT` record before anything else, so readers drop the
//! partial message. A producer killed before its tail store published
//! nothing: the bytes it wrote lie beyond the tail and are overwritten.
#![allow(unsafe_code)]

use multiproc_core::futex::{self, SpinWait, WaitOutcome};
use multiproc_core::{CodecError, copy};
use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{
    ABORT, Block, CLOSING, CONT, FIRST, FIRST_PREFIX, LAST, PAD, POLL_EVERY, Producer, Ring,
    SEALED, Stop, WHOLE, WRAP_EARLY_FROM, corrupt, rec_len, ring_used, wrap,
};
use crate::error::QueueError;
use crate::layout::{Control, REC_ALIGN, pack, unpack};
use crate::owner::{LIVENESS_SLICE, Locked, me};
use crate::wake::{self, bell};

const P_IDLE: u32 = 0;
const P_FRAGMENTING: u32 = 1;

/// A fragment smaller than this (or than what is left) is not worth a
/// record: producers wait for this much room before writing one.
const MIN_FRAGMENT: u32 = 64 * 1024;

/// Typed puts encode straight into the ring when the value fits in this
/// many bytes of free room; larger values are encoded outside the lock into
/// a buffer first (a failed attempt costs at most this much encoding).
const DIRECT_ENCODE_MAX: u32 = 64 * 1024;

#[cfg(test)]
pub(crate) const DIRECT_ENCODE_MAX_FOR_TESTS: usize = DIRECT_ENCODE_MAX as usize;

/// Typed puts encode in place only with at least this much room (the first
/// write of a value reserves 64 bytes).
const MIN_ENCODING_ROOM: u32 = 64;

/// A producer about to write a large record while its reader still holds
/// the one before waits for it at most this fraction (1 / n) of the time
/// its last large record took to write (see
/// [`Producer::let_reader_finish`]).
const REUSE_WAIT_SHARE: u32 = 8;

/// After a wait for the reader that ran out, this many large records are
/// placed without waiting.
const REUSE_SKIPS_AFTER_MISS: u32 = 16;

/// What [`Ring::put_encoded`] did with a value (an encoder that fails for
/// another reason than room stops the put with a [`Stop::Failed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoded {
    /// Encoded in place and published.
    Published,
    /// Larger than the room there was: nothing was published. Encode it
    /// elsewhere and put the bytes with [`put_slice`](Ring::put_slice).
    DidNotFit,
}

impl Ring {
    /// Takes the producer lock (and seals a half-done close).
    ///
    /// Inlined: the guard returned through memory would be read back with
    /// wider loads than the stores that wrote it, and such a load waits for
    /// the store buffer to drain (see [`Hold`](crate::bias::Hold)).
    #[inline(always)]
    pub(crate) fn producer(&self, block: Block) -> Result<Producer<'_>, Stop> {
        let (locked, hold) = self
            .prod_lock()
            .lock(me(), block.sleeps(), block.deadline())
            .map_err(|()| block.expired())?;
        let p = Producer {
            ring: self,
            hold,
            patient: Cell::new(false),
        };
        if locked == Locked::Recovered || self.closed() & CLOSING != 0 {
            self.after_recovery_or_close(locked);
        }
        Ok(p)
    }

    /// What a new producer-lock holder does after a dead holder or during
    /// a close.
    #[cold]
    fn after_recovery_or_close(&self, locked: Locked) {
        if locked == Locked::Recovered {
            // The dead holder may have stored tail but not its copy, or
            // died in a committed put.
            let ctl = self.ctl();
            ctl.prod
                .tail
                .store(ctl.tail.word.load(Ordering::Relaxed), Ordering::Relaxed);
            ctl.prod.committed.store(0, Ordering::SeqCst);
        }
        let closed = self.closed();
        if closed & CLOSING != 0 && closed & SEALED == 0 {
            // We hold the producer lock: every put that will ever publish has
            // published. SYNC: SeqCst, read by consumers before they report
            // `Closed` after a last look at tail.
            self.ctl().wait.closed.fetch_or(SEALED, Ordering::SeqCst);
            let w = &self.ctl().wait;
            wake::notify_all(self.ctl().word(&w.data, bell::DATA));
            wake::notify_all(self.ctl().word(&w.space, bell::SPACE));
        }
    }

    /// Puts `data` as one message (one record, or fragments).
    pub(crate) fn put_slice(&self, data: &[u8], block: Block) -> Result<(), Stop> {
        self.check_len(data.len())?;
        let mut p = self.producer(block)?;
        p.put_slice(data, block)
    }

    /// Puts a message of `len` bytes written in place by `fill`.
    ///
    /// `fill` runs only once nothing can stop the put (but a segment found
    /// corrupt): the caller's closure is gone then, so the caller could not
    /// be handed it back with an error. In place, that is once the record
    /// has room. A larger message goes through a buffer in fragments:
    /// `fill` runs once the first fragment has room, and from then on the
    /// put is committed — it waits for room for the rest as long as it
    /// must, and a close does not interrupt it (it was accepted before the
    /// close; consumers drain until the producer lock is let go).
    pub(crate) fn put_with(
        &self,
        len: usize,
        block: Block,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), Stop> {
        self.check_len(len)?;
        let mut p = self.producer(block)?;
        p.settle(block)?;
        if len <= self.max_inline() {
            p.put_whole(len as u32, block, fill)
        } else {
            p.put_filled(len, block, fill)
        }
    }

    /// Puts a message that `encode` writes straight into the ring, if it
    /// fits in [`DIRECT_ENCODE_MAX`] bytes of the room there is now; see
    /// [`Encoded`] for what came of it.
    pub(crate) fn put_encoded(
        &self,
        block: Block,
        encode: impl FnOnce(&mut [u8]) -> Result<usize, CodecError>,
    ) -> Result<Encoded, Stop> {
        self.encode_in_place(None, block, encode)
    }

    /// Puts a message whose encoding is known to take `len` bytes (at most
    /// [`max_inline`](Self::max_inline)), written by `encode` straight into
    /// a record of that size once there is room for it. An encoder that
    /// turns out to need more (a value that changed since it was measured)
    /// publishes nothing: [`Encoded::DidNotFit`].
    pub(crate) fn put_encoded_exact(
        &self,
        len: usize,
        block: Block,
        encode: impl FnOnce(&mut [u8]) -> Result<usize, CodecError>,
    ) -> Result<Encoded, Stop> {
        self.check_len(len)?;
        debug_assert!(len <= self.max_inline());
        self.encode_in_place(Some(len as u32), block, encode)
    }

    /// [`put_encoded`](Self::put_encoded) (room for at least a small value,
    /// at most [`DIRECT_ENCODE_MAX`]) or, with `exact`, a record of exactly
    /// that many bytes.
    #[inline]
    fn encode_in_place(
        &self,
        exact: Option<u32>,
        block: Block,
        encode: impl FnOnce(&mut [u8]) -> Result<usize, CodecError>,
    ) -> Result<Encoded, Stop> {
        let p = self.producer(block)?;
        p.settle(block)?;
        let want = match exact {
            Some(len) => rec_len(len),
            None => rec_len(MIN_ENCODING_ROOM).min(self.max_record),
        };
        if exact.is_some() {
            p.let_reader_finish(want, block)?;
        }
        // The placement the wait found stays good: we hold the producer lock
        // (tail stays), and head only frees more.
        let mut placed = (0, 0);
        p.wait_space(block, |p| {
            Ok(p.items_ok() && {
                placed = p.room_for_encoding(exact.map(|_| want))?;
                placed.1 >= want
            })
        })?;
        let (start, room) = placed;
        let room = match exact {
            Some(_) => want,
            None => room.min(DIRECT_ENCODE_MAX),
        };
        // SAFETY: we hold the producer lock and `room_for_encoding` placed
        // `start..start + room` in the free part of the ring.
        let buf = unsafe { self.bytes_mut(start + REC_ALIGN, room - REC_ALIGN) };
        let large = self.large_write_begins(room);
        let encoded = encode(buf);
        // The size hint is for values of unknown size.
        if exact.is_none() {
            let hint = match &encoded {
                Ok(len) => *len as u32,
                Err(_) => room,
            };
            // Written only on a change: threads of one process share this
            // `Ring`, and its line holds what every operation reads.
            if self.last_encoding.load(Ordering::Relaxed) != hint {
                self.last_encoding.store(hint, Ordering::Relaxed);
            }
        }
        match encoded {
            Ok(len) => {
                // The payload is in place; `emit` adds the header (and the
                // pad, which lies outside `buf`) and publishes.
                p.emit(WHOLE, start, len as u32, 0, true, |_| {});
                self.large_write_ends(large);
                Ok(Encoded::Published)
            }
            Err(e) if e.is_too_large() => Ok(Encoded::DidNotFit),
            Err(e) => Err(Stop::Failed(QueueError::Codec(e))),
        }
    }

    /// Before writing a record of `rec` bytes: when it is a large one, says
    /// on which CPU (for the reader's `partner_elsewhere`) and when its
    /// writing begins, for [`large_write_ends`](Self::large_write_ends).
    #[inline]
    fn large_write_begins(&self, rec: u32) -> Option<Instant> {
        (rec >= WRAP_EARLY_FROM).then(|| {
            wake::note_cpu(&self.ctl().tail.cpu);
            Instant::now()
        })
    }

    /// Records how long the large record whose writing began at `started`
    /// took (see [`Producer::let_reader_finish`]).
    #[inline]
    fn large_write_ends(&self, started: Option<Instant>) {
        if let Some(started) = started {
            let ns = u32::try_from(started.elapsed().as_nanos()).unwrap_or(u32::MAX);
            self.large_write_ns.store(ns, Ordering::Relaxed);
        }
    }

    /// Sets what the last large write took, as if measured.
    #[cfg(test)]
    pub(crate) fn set_large_write_for_tests(&self, took: Duration) {
        let ns = u32::try_from(took.as_nanos()).unwrap_or(u32::MAX);
        self.large_write_ns.store(ns, Ordering::Relaxed);
    }

    /// Large records still to place without waiting for the reader.
    #[cfg(test)]
    pub(crate) fn reuse_skips_for_tests(&self) -> u32 {
        self.reuse_skips.load(Ordering::Relaxed)
    }

    fn check_len(&self, len: usize) -> Result<(), Stop> {
        if len as u64 > self.max_message {
            return Err(Stop::Failed(QueueError::TooLarge {
                len: len as u64,
                max: self.max_message,
            }));
        }
        Ok(())
    }

    /// Starts `close`: no put succeeds from now on; consumers drain what is
    /// left and then see `Closed`.
    pub(crate) fn close(&self) {
        let w = &self.ctl().wait;
        // SYNC: SeqCst, read by producers in `wait_space` (under their lock).
        w.closed.fetch_or(CLOSING, Ordering::SeqCst);
        wake::notify_all(self.ctl().word(&w.space, bell::SPACE));
        wake::notify_all(self.ctl().word(&w.data, bell::DATA));
        // Taking the producer lock waits for the put in progress, then
        // seals. A holder that dies is taken over, so this cannot hang for
        // good. A committed put (see `put_with`) is not waited for: it goes
        // on until consumers have taken it, the closer may be the consumer
        // it waits for, and it seals the close itself when done (or, should
        // it die, a consumer that finds the close unsealed does).
        loop {
            let slice = Instant::now() + LIVENESS_SLICE;
            if self.producer(Block::Until(Some(slice))).is_ok()
                // SYNC: SeqCst, against the clear + `closing` load at the
                // end of `put_filled`: either it sees our CLOSING and seals,
                // or we see it is done and take the lock.
                || self.ctl().prod.committed.load(Ordering::SeqCst) != 0
            {
                return;
            }
        }
    }
}

impl Producer<'_> {
    fn ctl(&self) -> &Control {
        self.ring.ctl()
    }

    /// `(count, offset)` of tail, from the producers' copy. Only lock
    /// holders write either.
    #[inline]
    fn tail(&self) -> (u32, u32) {
        unpack(self.ctl().prod.tail.load(Ordering::Relaxed))
    }

    /// `(count, offset)` of head: the cached copy, or a fresh one.
    #[inline]
    fn head(&self, fresh: bool) -> Result<(u32, u32), Stop> {
        let prod = &self.ctl().prod;
        let word = if fresh {
            // SYNC: pairs with the Release head store in
            // `Consumer::advance`: the reader is done with those bytes. Also
            // the re-check after `prepare_sleep` in `wait_space`.
            let w = self.ctl().head.word.load(Ordering::SeqCst);
            prod.cached_head.store(w, Ordering::Relaxed);
            w
        } else {
            prod.cached_head.load(Ordering::Relaxed)
        };
        let (count, off) = unpack(word);
        if off >= self.ring.cap || !off.is_multiple_of(REC_ALIGN) {
            return Err(corrupt("head offset"));
        }
        Ok((count, off))
    }

    /// Bytes between head and tail: from the cached head, or a fresh one.
    #[inline]
    fn used(&self, fresh: bool) -> Result<u32, Stop> {
        let cap = self.ring.cap;
        let (tc, t) = self.tail();
        if t >= cap || !t.is_multiple_of(REC_ALIGN) {
            return Err(corrupt("tail offset"));
        }
        let (hc, h) = self.head(fresh)?;
        Ok(ring_used(t, tc, h, hc, cap))
    }

    /// Record bytes placeable now: `(a, b)` where `a` is contiguous at the
    /// tail and `b` at offset 0 (after padding the end), both at most the
    /// record limit, leaving 16 bytes before head free (see
    /// [`wrap_early`](Self::wrap_early) for the one exception).
    #[inline]
    fn rooms(&self, fresh: bool) -> Result<(u32, u32), Stop> {
        let cap = self.ring.cap;
        let used = self.used(fresh)?;
        let (_, t) = self.tail();
        let free = (cap - used).saturating_sub(REC_ALIGN);
        let end = cap - t;
        let a = free.min(end);
        let b = if t != 0 && free > end { free - end } else { 0 };
        if fresh && self.patient.get() && free < self.ring.resume_room {
            // Taking room for a record or two at once would make every
            // following put look at head again: one transfer of head's line
            // per message, each stalling the consumer's next store. The
            // head just seen is cached: the next look takes its room.
            return Ok((0, 0));
        }
        let max = self.ring.max_record;
        Ok((a.min(max), b.min(max)))
    }

    /// Where a record of `rec` bytes can start now, if anywhere. (Only
    /// `WHOLE` records are large enough to go back to the start early.)
    #[inline]
    fn fits(&self, rec: u32) -> Result<Option<u32>, Stop> {
        if rec >= WRAP_EARLY_FROM && self.wrap_early(rec)?.is_some() {
            return Ok(Some(0));
        }
        for fresh in [false, true] {
            let (a, b) = self.rooms(fresh)?;
            if rec <= a {
                return Ok(Some(self.tail().1));
            }
            if rec <= b {
                return Ok(Some(0));
            }
        }
        Ok(None)
    }

    /// The larger placement for a value encoded in place, from the cached
    /// head unless that leaves less than the last value put this way took
    /// (and at least [`MIN_ENCODING_ROOM`]), or than `exact` record bytes
    /// when the value's size is known.
    #[inline(always)]
    fn room_for_encoding(&self, exact: Option<u32>) -> Result<(u32, u32), Stop> {
        if let Some(rec) = exact
            && rec >= WRAP_EARLY_FROM
            && let Some(b) = self.wrap_early(rec)?
        {
            return Ok((0, b));
        }
        let (a, b) = self.rooms(false)?;
        let need = match exact {
            Some(rec) => rec,
            None => {
                let hint = self.ring.last_encoding.load(Ordering::Relaxed);
                rec_len(hint.clamp(MIN_ENCODING_ROOM, DIRECT_ENCODE_MAX))
            }
        };
        let (a, b) = if a.max(b) < need.min(self.ring.max_record) {
            self.rooms(true)?
        } else {
            (a, b)
        };
        Ok(if a >= b { (self.tail().1, a) } else { (0, b) })
    }

    /// The room at offset 0, when a large record of `rec` bytes should go
    /// there rather than at the tail: it fits, and what is still unread is
    /// at most one such record (the reader keeps up).
    ///
    /// Why: records placed one after the other walk the whole ring, and a
    /// ring larger than the caches makes every large copy into it write to
    /// lines that have left them. A reader that keeps up frees the start of
    /// the ring again and again; going back there keeps the copies on the
    /// same few lines, still in the caches from the time before. The cost,
    /// a `PAD` record over the end, is a header, nothing beside a copy this
    /// large; and with a backlog the ring fills as usual, from the tail.
    /// Head is looked at afresh: next to such a copy, one look costs
    /// nothing.
    #[inline(never)]
    fn wrap_early(&self, rec: u32) -> Result<Option<u32>, Stop> {
        let (_, b) = self.rooms(true)?;
        let unread = self.used(false)?;
        if rec <= b && unread <= rec {
            return Ok(Some(b));
        }
        // An empty ring: the record may end where the last one read ended
        // (head), filling the ring to the last byte, which the counts in
        // head and tail tell from empty (see `ring_used`). Without this a
        // record of the same size as the last could never take its place.
        // It leaves no room to run ahead until the reader takes the
        // record, so only while readers answer quickly.
        let (_, t) = self.tail();
        let quick = self.ring.reuse_skips.load(Ordering::Relaxed) == 0;
        Ok((unread == 0 && rec <= t && quick).then_some(t))
    }

    /// The larger placement for a fragment: `(start, record bytes)`.
    fn best_room(&self) -> Result<(u32, u32), Stop> {
        let (a, b) = self.rooms(true)?;
        Ok(if a >= b { (self.tail().1, a) } else { (0, b) })
    }

    /// Whether the item bound allows one more message.
    #[inline]
    fn items_ok(&self) -> bool {
        let max = self.ring.maxsize;
        max == 0 || {
            let (tc, _) = self.tail();
            let below = |head: u64| tc.wrapping_sub(unpack(head).0) < max;
            let prod = &self.ctl().prod;
            // The cached head is never ahead of the real one: if it allows
            // the message, so does head.
            below(prod.cached_head.load(Ordering::Relaxed)) || {
                // SYNC: SeqCst, as in `head(true)`.
                let word = self.ctl().head.word.load(Ordering::SeqCst);
                prod.cached_head.store(word, Ordering::Relaxed);
                below(word)
            }
        }
    }

    fn closing(&self) -> bool {
        self.ring.closed() & CLOSING != 0
    }

    /// Waits until `ready` holds (re-checked after every change of head),
    /// the queue closes, or the deadline passes. While it may spin, a
    /// blocking wait is patient (see [`RESUME_ROOM`](super::RESUME_ROOM)).
    #[inline(always)]
    fn wait_space(
        &self,
        block: Block,
        mut ready: impl FnMut(&Self) -> Result<bool, Stop>,
    ) -> Result<(), Stop> {
        if self.closing() && block.stops_at_close() {
            return Err(Stop::Closed);
        }
        self.patient.set(block.sleeps());
        let done = match ready(self) {
            Ok(true) => Ok(()),
            Ok(false) => self.wait_space_slow(block, &mut ready),
            Err(e) => Err(e),
        };
        self.patient.set(false);
        done
    }

    #[cold]
    fn wait_space_slow(
        &self,
        block: Block,
        ready: &mut dyn FnMut(&Self) -> Result<bool, Stop>,
    ) -> Result<(), Stop> {
        if !block.sleeps() {
            return Err(Stop::WouldBlock);
        }
        let deadline = block.deadline();
        let closing = || block.stops_at_close() && self.closing();
        let mut spin = SpinWait::new();
        let mut polls = 0u32;
        while spin.spin() {
            // As the consumer polls tail: look at head only every
            // POLL_EVERY pauses. Each look pulls head's line away from the
            // consumer, whose next store then waits for it.
            polls += 1;
            if !polls.is_multiple_of(POLL_EVERY) && !spin.yielded() {
                continue;
            }
            if closing() {
                return Err(Stop::Closed);
            }
            if ready(self)? {
                return Ok(());
            }
        }
        // The readers did not free room while we spun: they are busy or
        // away, and a large record that filled the ring would have to wait
        // for them again (see `wrap_early`).
        self.ring
            .reuse_skips
            .store(REUSE_SKIPS_AFTER_MISS, Ordering::Relaxed);
        // A sleeper takes any room: a consumer wakes it on every record it
        // frees, and sleeping again each time would cost more. So does a
        // napper, which looks only now and then.
        self.patient.set(false);
        let space = &self.ctl().wait.space;
        // A consumer holding its lock is taking a message out: room is on
        // its way. (An error of `ready` ends the nap, to be met below.)
        let reading = || self.ring.cons_lock().in_use();
        if wake::nap(
            space,
            deadline,
            || closing() || ready(self).unwrap_or(true),
            reading,
        ) {
            if closing() {
                return Err(Stop::Closed);
            }
            if ready(self)? {
                return Ok(());
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return if ready(self)? {
                Ok(())
            } else {
                Err(Stop::Timeout)
            };
        }
        loop {
            let v = wake::prepare_sleep(space);
            if closing() {
                return Err(Stop::Closed);
            }
            if ready(self)? {
                return Ok(());
            }
            if futex::wait(space, v, wake::sleep_until(deadline)) == WaitOutcome::TimedOut
                && deadline.is_some_and(|d| Instant::now() >= d)
            {
                if closing() {
                    return Err(Stop::Closed);
                }
                return if ready(self)? {
                    Ok(())
                } else {
                    Err(Stop::Timeout)
                };
            }
        }
    }

    /// Writes and publishes one record at `start` (padding the end first
    /// when `start` is 0 and tail is not). Space was checked by the caller.
    #[inline(always)]
    fn emit(
        &self,
        kind: u32,
        start: u32,
        len: u32,
        extra: u64,
        ends: bool,
        fill: impl FnOnce(&mut [u8]),
    ) {
        let ring = self.ring;
        let (count, t) = self.tail();
        if start != t {
            debug_assert_eq!(start, 0);
            ring.write_header(t, ring.cap - t - REC_ALIGN, PAD, 0);
        }
        ring.write_header(start, len, kind, extra);
        // SAFETY: we hold the producer lock and `fits`/`best_room` placed
        // `start..start + rec_len(len)` in the free part of the ring.
        fill(unsafe { ring.bytes_mut(start + REC_ALIGN, len) });
        let next = wrap(start + rec_len(len), ring.cap);
        let word = pack(count.wrapping_add(u32::from(ends)), next);
        // SYNC: Release publishes the record (and pad): pairs with the
        // Acquire tail loads of consumers (`peek`, `wait_data`,
        // `wait_more`). `notify` then is the fast half of the pair with
        // `prepare_sleep` in `wait_data`/`wait_more`.
        self.ctl().tail.word.store(word, Ordering::Release);
        self.ctl().prod.tail.store(word, Ordering::Relaxed);
        wake::notify(self.ctl().word(&self.ctl().wait.data, bell::DATA));
        // The line holding `next` may be read right now by a consumer that
        // keeps up; the lines after it are not.
        ring.prefetch(next, true);
    }

    /// Publishes the `ABORT` a dead or timed-out producer owes, if any.
    #[inline]
    fn settle(&self, block: Block) -> Result<(), Stop> {
        if self.ctl().prod.state.load(Ordering::Relaxed) == P_IDLE {
            return Ok(());
        }
        self.settle_slow(block)
    }

    #[cold]
    fn settle_slow(&self, block: Block) -> Result<(), Stop> {
        let mut at = 0;
        self.wait_space(block, |p| {
            Ok(p.fits(REC_ALIGN)?.inspect(|&s| at = s).is_some())
        })?;
        self.emit(ABORT, at, 0, 0, false, |_| {});
        self.ctl().prod.state.store(P_IDLE, Ordering::Relaxed);
        Ok(())
    }

    #[inline]
    fn put_slice(&mut self, data: &[u8], block: Block) -> Result<(), Stop> {
        self.settle(block)?;
        if data.len() <= self.ring.max_inline() {
            self.put_whole(data.len() as u32, block, |buf| copy::copy(buf, data))
        } else {
            self.put_fragments(data, block)
        }
    }

    /// One `WHOLE` record of `len` (at most `max_inline`) bytes.
    fn put_whole(&self, len: u32, block: Block, fill: impl FnOnce(&mut [u8])) -> Result<(), Stop> {
        let rec = rec_len(len);
        self.let_reader_finish(rec, block)?;
        let mut at = 0;
        self.wait_space(block, |p| {
            Ok(p.items_ok() && p.fits(rec)?.inspect(|&s| at = s).is_some())
        })?;
        let large = self.ring.large_write_begins(rec);
        self.emit(WHOLE, at, len, 0, true, fill);
        self.ring.large_write_ends(large);
        Ok(())
    }

    /// Before a large record of `rec` bytes, when exactly one message is
    /// unread (the reader is about to take it, or holds it) and the record
    /// cannot go to offset 0 now: waits a moment for the ring to empty, so
    /// that the record goes to offset 0 over the bytes the last one took
    /// (see [`wrap_early`](Self::wrap_early)).
    ///
    /// Why: a reader that keeps up frees each record soon after it is
    /// published, while the producer already writes the next one, so
    /// records of the same size would take turns in two or three places.
    /// Several megabytes of destinations leave the caches where one does
    /// not: a 1 MiB copy into one destination ran at about 22 GB/s, into
    /// two in turn at 17 (the compare demo's `memcpy` columns). The wait
    /// is bounded by a share ([`REUSE_WAIT_SHARE`]) of what the last large
    /// write took, about what writing into the caches saves, and by the
    /// put's deadline; a wait that runs out (a reader that holds its
    /// messages, copies them out, or sleeps) stops the waits, and the
    /// records that fill the ring, for [`REUSE_SKIPS_AFTER_MISS`] records.
    /// Only blocking puts wait.
    #[inline]
    fn let_reader_finish(&self, rec: u32, block: Block) -> Result<(), Stop> {
        if rec < WRAP_EARLY_FROM || !block.sleeps() {
            return Ok(());
        }
        self.let_reader_finish_slow(rec, block.deadline())
    }

    #[inline(never)]
    fn let_reader_finish_slow(&self, rec: u32, deadline: Option<Instant>) -> Result<(), Stop> {
        let ring = self.ring;
        let skips = ring.reuse_skips.load(Ordering::Relaxed);
        if skips > 0 {
            ring.reuse_skips.store(skips - 1, Ordering::Relaxed);
            return Ok(());
        }
        let unread = self.used(true)?;
        let messages = self.tail().0.wrapping_sub(self.head(false)?.0);
        if unread == 0 || messages != 1 || self.wrap_early(rec)?.is_some() {
            return Ok(());
        }
        let budget = Duration::from_nanos(u64::from(
            ring.large_write_ns.load(Ordering::Relaxed) / REUSE_WAIT_SHARE,
        ));
        // On another CPU the reader finishes while we spin; on this one it
        // needs the CPU, so the spin yields it now and then.
        let elsewhere = wake::partner_elsewhere(&self.ctl().head.cpu);
        let end = Instant::now() + budget;
        let end = deadline.map_or(end, |d| d.min(end));
        let mut spin = SpinWait::new();
        while Instant::now() < end {
            if self.used(true)? == 0 {
                return Ok(());
            }
            if elsewhere {
                std::hint::spin_loop();
            } else if !spin.spin() {
                break;
            }
        }
        ring.reuse_skips
            .store(REUSE_SKIPS_AFTER_MISS, Ordering::Relaxed);
        Ok(())
    }

    /// Record bytes the next fragment needs room for, with `remaining`
    /// bytes of the message still to go.
    fn fragment_room(&self, remaining: usize) -> u32 {
        let whole = rec_len((remaining.min(self.ring.max_inline())) as u32);
        whole.min(MIN_FRAGMENT.min(self.ring.max_record))
    }

    /// Waits (as `block` allows) until the first fragment of a message of
    /// `total` bytes has room.
    fn wait_first_fragment(&self, total: usize, block: Block) -> Result<(), Stop> {
        self.wait_space(block, |p| {
            Ok(p.items_ok() && p.best_room()?.1 >= p.fragment_room(total + FIRST_PREFIX as usize))
        })
    }

    /// A message too large for one record, written by `fill` into a buffer
    /// once its first fragment has room, then committed (see
    /// [`Ring::put_with`]).
    fn put_filled(
        &mut self,
        len: usize,
        block: Block,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), Stop> {
        self.wait_first_fragment(len, block)?;
        let mut buf = vec![0u8; len];
        fill(&mut buf);
        let committed = &self.ctl().prod.committed;
        committed.store(1, Ordering::SeqCst);
        // Room only grows while we hold the producer lock: the first
        // fragment's wait ends at once.
        let done = self.put_fragments(&buf, Block::Committed);
        // SYNC: SeqCst, against the CLOSING store + `committed` load in
        // `close`.
        committed.store(0, Ordering::SeqCst);
        if self.closing() {
            self.ring.after_recovery_or_close(Locked::Clean);
        }
        done
    }

    /// A message too large for one record: `FIRST`, `CONT`…, `LAST`, all
    /// under this one hold of the producer lock.
    fn put_fragments(&self, data: &[u8], block: Block) -> Result<(), Stop> {
        let total = data.len();
        self.wait_first_fragment(total, block)?;
        let (start, room) = self.best_room()?;
        let chunk = ((room - REC_ALIGN - FIRST_PREFIX) as usize).min(total);
        self.ctl()
            .prod
            .state
            .store(P_FRAGMENTING, Ordering::Relaxed);
        let owner = me();
        self.emit(
            FIRST,
            start,
            FIRST_PREFIX + chunk as u32,
            total as u64,
            false,
            |buf| {
                buf[..8].copy_from_slice(&owner.to_le_bytes());
                copy::copy(&mut buf[8..], &data[..chunk]);
            },
        );
        let mut sent = chunk;
        while sent < total {
            let remaining = total - sent;
            if let Err(stop) =
                self.wait_space(
                    block,
                    |p| Ok(p.best_room()?.1 >= p.fragment_room(remaining)),
                )
            {
                self.abandon();
                return Err(stop);
            }
            let (start, room) = self.best_room()?;
            let chunk = ((room - REC_ALIGN) as usize).min(remaining);
            let last = chunk == remaining;
            let kind = if last { LAST } else { CONT };
            self.emit(kind, start, chunk as u32, 0, last, |buf| {
                copy::copy(buf, &data[sent..sent + chunk]);
            });
            sent += chunk;
        }
        self.ctl().prod.state.store(P_IDLE, Ordering::Relaxed);
        Ok(())
    }

    /// Gives up a fragmented message half way: publishes `ABORT` if there
    /// is room now, else leaves the debt to the next producer (`settle`).
    fn abandon(&self) {
        if let Ok(Some(at)) = self.fits(REC_ALIGN) {
            self.emit(ABORT, at, 0, 0, false, |_| {});
            self.ctl().prod.state.store(P_IDLE, Ordering::Relaxed);
        }
    }
}
