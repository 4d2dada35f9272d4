//! The consumer side of the ring: taking the consumer lock and repairing
//! what a dead holder left, the get paths (a whole record read in place,
//! a message assembled from fragments), waiting for data, and pacing.
//!
//! # Consumer state machine (`cons.state`, under the consumer lock)
//!
//! | state | meaning | entered by | on recovery from a dead holder |
//! |---|---|---|---|
//! | `C_IDLE` | between messages | init, `LAST`/`WHOLE`/`ABORT` consumed | nothing to do |
//! | `C_ASSEMBLING` | fragments of a message were consumed into private memory | before moving head past `FIRST` | those bytes died with the holder: go to `C_SKIPPING` |
//! | `C_SKIPPING` | drop `CONT`/`LAST` until the message ends | recovery | kept across unlocks until `LAST`, `ABORT`, `WHOLE` or `FIRST` |
//! | `C_GUARD` | the record at `guard_pos` is lent out in place | before handing out the guard | if head still is `guard_pos`, the dead holder saw it: skip it |
//!
//! A consumer killed while copying a `WHOLE` record has not moved head: the
//! record stays for the next reader, and the dead process never returned it
//! to anybody. So a crash loses at most the dead process's own message in
//! flight, and nobody ever sees a torn or repeated message.
#![allow(unsafe_code)]

use multiproc_core::copy;
use multiproc_core::futex::{self, SpinWait, WaitOutcome};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::{
    ABORT, Block, CLOSING, CONT, Consumer, FIRST, FIRST_PREFIX, LAST, PAD, POLL_EVERY, Rec, Ring,
    SEALED, Stop, WHOLE, WRAP_EARLY_FROM, corrupt, rec_len, ring_used, wrap,
};
use crate::error::QueueError;
use crate::layout::{Control, REC_ALIGN, pack, unpack};
use crate::owner::{LIVENESS_SLICE, me, owner_alive, thread_id};
use crate::wake::{self, bell};

const C_IDLE: u32 = 0;
const C_ASSEMBLING: u32 = 1;
const C_SKIPPING: u32 = 2;
const C_GUARD: u32 = 3;

/// How long a blocking get lets the producers run ahead, before it looks at
/// tail, when it has caught up and its last look at tail found more than
/// one message waiting.
///
/// Such a consumer is keeping up with a producer that publishes faster than
/// the consumer looks. Looking at once makes it read right behind the
/// producer: every look pulls tail's line, and every record's line, away
/// from a producer still writing there, so both sides pay a cache-line
/// transfer per message, and the pair settles at about a third of the rate
/// either side reaches alone (`get_bytes_into`, 8 B: 18–22 instead of
/// 50–60 M msg/s, `cargo bench -p multiproc-queue --bench queue --
/// queue_1to1/bytes_into/8` without and with this wait). Waiting lets the
/// producer get a few hundred bytes ahead, after which the consumer reads
/// lines the producer is done with. Shorter waits measured less in the same
/// bench case: 300 ns gave 42–44 M msg/s, 150 ns 26 M, and so did looking
/// at tail during the wait to end it early.
///
/// A look that finds one message or none turns this off, so a ping-pong
/// never waits. Only a consumer alone on its side waits: the thread the consumer
/// lock is biased to (`bias.rs`), unless the producer lock is biased to it
/// too (it would wait for itself), and only until head moves. Where
/// consumers take turns, the others drain while one would wait, and it
/// measured slower. What it costs is latency at the end of a burst: a
/// message published during the wait is read up to `PACE` later.
const PACE: Duration = Duration::from_nanos(600);

/// A reader assembling a large message reserves at most this much ahead;
/// beyond it the buffer grows with the data actually received, so a corrupt
/// total cannot make it allocate.
const MAX_RESERVE: u64 = 64 << 20;

impl Ring {
    /// Takes the consumer lock and repairs what a dead holder left.
    /// Inlined, as [`producer`](Self::producer).
    #[inline(always)]
    pub(crate) fn consumer(&self, block: Block) -> Result<Consumer<'_>, Stop> {
        let (_, hold) = self
            .cons_lock()
            .lock(me(), block.sleeps(), block.deadline())
            .map_err(|()| block.expired())?;
        let c = Consumer { ring: self, hold };
        c.repair()?;
        Ok(c)
    }

    /// The next message: in place (the consumer lock still held, head not
    /// moved) or assembled from fragments.
    pub(crate) fn next_message(&self, block: Block) -> Result<Next<'_>, Stop> {
        if block.sleeps() && self.caught_up_outpaced() {
            self.pace();
        }
        loop {
            let c = self.consumer(block)?;
            let mut asm = None;
            loop {
                match c.step(&mut asm)? {
                    Step::Whole(rec) => return Ok(Next::Whole(c, rec)),
                    Step::Complete(buf) => return Ok(Next::Owned(buf)),
                    Step::Empty if asm.is_some() => c.wait_more(&mut asm),
                    Step::Empty => break,
                }
            }
            if self.closed() & SEALED != 0 {
                // SYNC: sealing happened after the last publish (both under
                // the producer lock); one more look at tail sees it.
                if c.peek()?.is_none() {
                    return Err(Stop::Closed);
                }
                continue;
            }
            let seen = self.ctl().cons.cached_tail.load(Ordering::Relaxed);
            drop(c);
            self.wait_data(seen, block)?;
        }
    }

    /// Whether this thread is the consumer lock's biased holder, has caught
    /// up with the tail it last saw, and that look found it outpaced (see
    /// [`PACE`]), and is not the producer lock's biased holder as well (a
    /// thread that puts and gets would wait for itself). Reads only the
    /// consumer side's own lines and this process's, without the lock: a
    /// hint.
    #[inline]
    pub(crate) fn caught_up_outpaced(&self) -> bool {
        let ctl = self.ctl();
        let me = thread_id();
        self.pacing
            && self.outpaced.load(Ordering::Relaxed)
            && ctl.head.word.load(Ordering::Relaxed) == ctl.cons.cached_tail.load(Ordering::Relaxed)
            && (self.cons_mine.load(Ordering::Relaxed) >> 32) as u32 == me
            && (self.prod_mine.load(Ordering::Relaxed) >> 32) as u32 != me
    }

    /// Records what a look at tail found; stores only a change, since
    /// every thread of the process reads this line.
    #[inline]
    fn note_outpaced(&self, outpaced: bool) {
        if self.outpaced.load(Ordering::Relaxed) != outpaced {
            self.outpaced.store(outpaced, Ordering::Relaxed);
        }
    }

    /// Records whether the last record read whole was a large one (see
    /// `wait_data`); stores only a change, as `note_outpaced`.
    #[inline]
    fn note_large_read(&self, large: bool) {
        if self.large_reads.load(Ordering::Relaxed) != large {
            self.large_reads.store(large, Ordering::Relaxed);
        }
        if large {
            wake::note_cpu(&self.ctl().head.cpu);
        }
    }

    /// Lets the producers run ahead for [`PACE`], without looking at tail.
    #[cold]
    fn pace(&self) {
        self.outpaced.store(false, Ordering::Relaxed);
        let head = &self.ctl().head.word;
        let seen = head.load(Ordering::Relaxed);
        let until = Instant::now() + PACE;
        // Head moving means another consumer is reading: the producers
        // are not ahead of us alone, and waiting only idles this CPU.
        while Instant::now() < until && head.load(Ordering::Relaxed) == seen {
            std::hint::spin_loop();
        }
    }

    /// Waits (without any lock) until tail moves away from `seen`, the queue
    /// is sealed, or the deadline passes.
    fn wait_data(&self, seen: u64, block: Block) -> Result<(), Stop> {
        let Block::Until(deadline) = block else {
            return Err(Stop::WouldBlock);
        };
        let ctl = self.ctl();
        let mut spin = SpinWait::new();
        let mut polls = 0u32;
        while spin.spin() {
            // Look at tail only every POLL_EVERY pauses: each look pulls
            // the line away from the producer, whose next publish then
            // waits for it; polling less lets it publish several messages
            // per transfer.
            polls += 1;
            if polls.is_multiple_of(POLL_EVERY) || spin.yielded() {
                // SYNC: pairs with the Release tail store in `emit`.
                if ctl.tail.word.load(Ordering::Acquire) != seen {
                    return Ok(());
                }
            }
        }
        // SYNC: Acquire, as above. (A close that is not sealed yet waits
        // for the loop below, which seals it should the closer have died.)
        let ready = || ctl.tail.word.load(Ordering::Acquire) != seen || self.closed() & SEALED != 0;
        // A producer holding its lock is writing a message now.
        let writing = || self.prod_lock().in_use();
        // A reader of large records whose producer runs on another CPU
        // answers the end of a large write at once: the producer may be
        // waiting for it to let go of the last record (see
        // `Producer::let_reader_finish`), which a nap would answer late.
        if self.large_reads.load(Ordering::Relaxed)
            && wake::partner_elsewhere(&ctl.tail.cpu)
            && wake::spin_while(deadline, ready, writing)
        {
            return Ok(());
        }
        if wake::nap(&ctl.wait.data, deadline, ready, writing) {
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Stop::Timeout);
        }
        loop {
            let v = wake::prepare_sleep(&ctl.wait.data);
            // SYNC: re-check after `prepare_sleep`; pairs with the tail
            // store + `notify` in `emit`.
            if ctl.tail.word.load(Ordering::SeqCst) != seen {
                return Ok(());
            }
            let closed = self.closed();
            if closed & SEALED != 0 {
                return Ok(());
            }
            if closed & CLOSING != 0 {
                // The closer may have died before sealing: seal ourselves.
                let slice = Instant::now() + LIVENESS_SLICE;
                match self.producer(Block::Until(Some(slice))) {
                    Ok(_) | Err(Stop::Timeout) => {}
                    Err(other) => return Err(other),
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(Stop::Timeout);
                }
                continue;
            }
            if futex::wait(&ctl.wait.data, v, wake::sleep_until(deadline)) == WaitOutcome::TimedOut
                && deadline.is_some_and(|d| Instant::now() >= d)
            {
                if ctl.tail.word.load(Ordering::SeqCst) != seen {
                    return Ok(());
                }
                return Err(Stop::Timeout);
            }
        }
    }
}

/// What `Consumer::step` found.
pub(crate) enum Step {
    Whole(Rec),
    Complete(Vec<u8>),
    Empty,
}

/// The next message for a reader.
pub(crate) enum Next<'r> {
    /// In place: the consumer lock is held and head still points at it.
    Whole(Consumer<'r>, Rec),
    /// Assembled from fragments (already consumed).
    Owned(Vec<u8>),
}

/// A message being assembled from fragments.
pub(crate) struct Assembly {
    owner: u64,
    total: u64,
    buf: Vec<u8>,
}

impl Consumer<'_> {
    fn ctl(&self) -> &Control {
        self.ring.ctl()
    }

    fn state(&self) -> &AtomicU32 {
        &self.ctl().cons.state
    }

    /// Fixes up what a dead holder left (see the module docs). Cheap when
    /// there is nothing to do: one load.
    #[inline]
    fn repair(&self) -> Result<(), Stop> {
        match self.state().load(Ordering::Relaxed) {
            C_IDLE | C_SKIPPING => Ok(()),
            _ => self.repair_slow(),
        }
    }

    #[cold]
    fn repair_slow(&self) -> Result<(), Stop> {
        let cons = &self.ctl().cons;
        match cons.state.load(Ordering::Relaxed) {
            C_ASSEMBLING => cons.state.store(C_SKIPPING, Ordering::Relaxed),
            C_GUARD => {
                let pos = cons.guard_pos.load(Ordering::Relaxed);
                if let Some(rec) = self.peek()?
                    && rec.off == pos
                    && rec.kind == WHOLE
                {
                    self.advance(rec.count.wrapping_add(1), rec.next);
                }
                cons.state.store(C_IDLE, Ordering::Relaxed);
            }
            _ => cons.state.store(C_IDLE, Ordering::Relaxed),
        }
        Ok(())
    }

    /// The validated record at head, or `None` when the ring is empty.
    fn peek(&self) -> Result<Option<Rec>, Stop> {
        let ring = self.ring;
        let cap = ring.cap;
        let ctl = self.ctl();
        let (count, h) = unpack(ctl.head.word.load(Ordering::Relaxed));
        if h >= cap || !h.is_multiple_of(REC_ALIGN) {
            return Err(corrupt("head offset"));
        }
        let mut tail = ctl.cons.cached_tail.load(Ordering::Relaxed);
        let (_, t) = unpack(tail);
        if t == h || t >= cap || !t.is_multiple_of(REC_ALIGN) {
            // SYNC: Acquire pairs with the Release tail store in `emit`: every
            // record before this tail is completely written.
            tail = ctl.tail.word.load(Ordering::Acquire);
            ctl.cons.cached_tail.store(tail, Ordering::Relaxed);
            let (tc, t) = unpack(tail);
            if t >= cap || !t.is_multiple_of(REC_ALIGN) {
                return Err(corrupt("tail offset"));
            }
            let waiting = tc.wrapping_sub(count);
            if t == h && waiting == 0 {
                ring.note_outpaced(false);
                return Ok(None);
            }
            // Counted in whole messages (the counts in head and tail), so a
            // pad before a record, or a message in fragments, is one.
            ring.note_outpaced(waiting > 1);
        }
        let (tc, t) = unpack(tail);
        let used = ring_used(t, tc, h, count, cap);
        let (len, kind, extra) = ring.read_header(h);
        if len > cap {
            return Err(corrupt("record length"));
        }
        let rec = rec_len(len);
        if rec > used || h + rec > cap {
            return Err(corrupt("record length"));
        }
        let next = match kind {
            PAD if h + rec == cap => 0,
            WHOLE | FIRST | CONT | LAST | ABORT => wrap(h + rec, cap),
            _ => return Err(corrupt("record kind")),
        };
        if wrap(t + cap - next, cap) >= 256 {
            // Those lines are published: fetching them cannot pull a line
            // away from a producer still writing it.
            ring.prefetch(next, false);
        }
        Ok(Some(Rec {
            off: h,
            count,
            len,
            kind,
            extra,
            next,
        }))
    }

    /// Frees a record: moves head to `next` with message count `count`.
    #[inline]
    pub(crate) fn advance(&self, count: u32, next: u32) {
        let ctl = self.ctl();
        // SYNC: Release: our reads of the record are done before a producer
        // that loads this head (Acquire, in `Producer::head`) reuses the
        // bytes. `notify` then is the fast half of the pair with
        // `prepare_sleep` in `wait_space`.
        ctl.head.word.store(pack(count, next), Ordering::Release);
        wake::notify(ctl.word(&ctl.wait.space, bell::SPACE));
    }

    #[inline]
    fn payload(&self, rec: &Rec) -> &[u8] {
        // SAFETY: we hold the consumer lock and `rec` was validated by
        // `peek` to lie between head and tail; the slice borrows `self`, so
        // it ends before we can move head.
        unsafe { self.ring.bytes(rec.off + REC_ALIGN, rec.len) }
    }

    /// Consumes records until a message is ready or the ring is empty.
    fn step(&self, asm: &mut Option<Assembly>) -> Result<Step, Stop> {
        loop {
            let Some(r) = self.peek()? else {
                return Ok(Step::Empty);
            };
            let state = self.state();
            match r.kind {
                PAD => self.advance(r.count, 0),
                WHOLE => {
                    self.ring.note_large_read(rec_len(r.len) >= WRAP_EARLY_FROM);
                    if asm.take().is_some() || state.load(Ordering::Relaxed) != C_IDLE {
                        state.store(C_IDLE, Ordering::Relaxed);
                    }
                    return Ok(Step::Whole(r));
                }
                FIRST => {
                    let total = r.extra;
                    let data_len = u64::from(r.len.saturating_sub(FIRST_PREFIX));
                    if r.len < FIRST_PREFIX || total > self.ring.max_message || total < data_len {
                        return Err(corrupt("first fragment"));
                    }
                    let payload = self.payload(&r);
                    let mut owner = [0u8; 8];
                    owner.copy_from_slice(&payload[..8]);
                    let mut buf = Vec::new();
                    buf.try_reserve_exact(total.min(MAX_RESERVE) as usize)
                        .map_err(|_| {
                            Stop::Failed(QueueError::TooLarge {
                                len: total,
                                max: self.ring.max_message,
                            })
                        })?;
                    copy::extend(&mut buf, &payload[8..]);
                    *asm = Some(Assembly {
                        owner: u64::from_le_bytes(owner),
                        total,
                        buf,
                    });
                    // Before head moves past FIRST: a crash from here on
                    // loses this message, and the next holder must skip it.
                    state.store(C_ASSEMBLING, Ordering::Relaxed);
                    self.advance(r.count, r.next);
                }
                CONT | LAST => match asm {
                    Some(a) => {
                        if a.buf.len() as u64 + u64::from(r.len) > a.total {
                            return Err(corrupt("fragment beyond message length"));
                        }
                        copy::extend(&mut a.buf, self.payload(&r));
                        if r.kind == LAST {
                            if a.buf.len() as u64 != a.total {
                                return Err(corrupt("message shorter than announced"));
                            }
                            let buf = std::mem::take(&mut a.buf);
                            *asm = None;
                            self.advance(r.count.wrapping_add(1), r.next);
                            state.store(C_IDLE, Ordering::Relaxed);
                            return Ok(Step::Complete(buf));
                        }
                        self.advance(r.count, r.next);
                    }
                    None => {
                        // The rest of a message whose start died with a
                        // reader: drop it. Its LAST still counts as a
                        // message leaving the queue, and as a task done
                        // (nobody alive received it).
                        if r.kind == LAST {
                            self.advance(r.count.wrapping_add(1), r.next);
                            if state.load(Ordering::Relaxed) == C_SKIPPING {
                                self.ctl().join.done.fetch_add(1, Ordering::SeqCst);
                                wake::notify(self.ctl().word(&self.ctl().join.join, bell::JOIN));
                            }
                            state.store(C_IDLE, Ordering::Relaxed);
                        } else {
                            self.advance(r.count, r.next);
                        }
                    }
                },
                ABORT => {
                    *asm = None;
                    state.store(C_IDLE, Ordering::Relaxed);
                    self.advance(r.count, r.next);
                }
                _ => return Err(corrupt("record kind")),
            }
        }
    }

    /// Waits, holding the consumer lock, for the next fragment of `asm`;
    /// drops the partial message when its producer died or gave up.
    ///
    /// The caller's deadline does not apply here: the message has started
    /// and its producer is alive and holding the producer lock.
    fn wait_more(&self, asm: &mut Option<Assembly>) {
        let Some(a) = asm else { return };
        let owner = a.owner;
        let ctl = self.ctl();
        let seen = ctl.cons.cached_tail.load(Ordering::Relaxed);
        let mut spin = SpinWait::new();
        while spin.spin() {
            if ctl.tail.word.load(Ordering::Acquire) != seen {
                return;
            }
        }
        let mut drop_partial = || {
            *asm = None;
            self.state().store(C_IDLE, Ordering::Relaxed);
        };
        loop {
            let v = wake::prepare_sleep(&ctl.wait.data);
            if ctl.tail.word.load(Ordering::SeqCst) != seen {
                return;
            }
            // SYNC: the producer stores tail (Release) before it releases
            // its lock or leaves by its bias (Release); seeing it out
            // (Acquire) and then the same tail means no fragment will
            // follow.
            if !self.ring.prod_lock().held_by(owner) {
                if ctl.tail.word.load(Ordering::SeqCst) == seen {
                    drop_partial();
                }
                return;
            }
            let slice = Instant::now() + LIVENESS_SLICE;
            if futex::wait(&ctl.wait.data, v, Some(slice)) == WaitOutcome::TimedOut
                && !owner_alive(owner)
            {
                if ctl.tail.word.load(Ordering::SeqCst) == seen {
                    drop_partial();
                }
                return;
            }
        }
    }

    /// Marks the record at head as lent out in place (see `C_GUARD`).
    #[inline]
    pub(crate) fn lend(&self, rec: &Rec) {
        let cons = &self.ctl().cons;
        cons.guard_pos.store(rec.off, Ordering::Relaxed);
        cons.state.store(C_GUARD, Ordering::Relaxed);
    }

    /// Consumes a record returned in [`Next::Whole`].
    #[inline]
    pub(crate) fn consume(&self, rec: &Rec) {
        self.advance(rec.count.wrapping_add(1), rec.next);
    }

    /// Ends a loan: consumes the record.
    #[inline]
    pub(crate) fn finish(&self, rec: &Rec) {
        self.advance(rec.count.wrapping_add(1), rec.next);
        self.state().store(C_IDLE, Ordering::Relaxed);
    }

    /// The payload of `rec`, borrowed from the ring.
    #[inline]
    pub(crate) fn bytes(&self, rec: &Rec) -> &[u8] {
        self.payload(rec)
    }
}
