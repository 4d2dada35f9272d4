//! The mailbox: small messages that skip the socket while their receiver
//! spins for them.
//!
//! # Why
//!
//! A socket costs every message a buffer the kernel allocates and frees,
//! two locks and the lines of the peer's socket, whatever the payload
//! (about 1.2 µs for 8 bytes between two CPUs of a virtual machine, where
//! a raw socketpair is no faster; > 85 % of it in the kernel). A receiver
//! that is spinning for its next message reads memory anyway, so a small
//! message can simply be left there.
//!
//! # Layout
//!
//! Each direction of the lane has a mailbox of [`MAILBOX`] bytes after its
//! ring, and four more words in its control page: `mail_tail` (where the
//! senders have written up to), `mail_head` (where the receiver has taken
//! up to), `listening` and `mail_lock`. A message is a record: its frame
//! exactly as the socket would carry it (a 4-byte big-endian length, the
//! payload), padded to 8 bytes. A record never wraps: a `WRAP` word in its
//! place sends the reader to the mailbox's start. Positions count bytes
//! and never wrap, as the ring's do.
//!
//! # Protocol
//!
//! The receiver sets `listening` while a blocking receive spins for a
//! frame (between frames only, never within one), and clears it before it
//! reads the socket, sleeps, or reports that nothing is there. A sender
//! posts a message of at most [`MAIL_MAX`] bytes without descriptors only
//! when
//!
//! 1. `listening` is set,
//! 2. it holds `mail_lock` (one poster at a time; a busy lock sends
//!    through the socket),
//! 3. the peer has read every byte written to the socket through this end,
//!    by anyone (`SIOCOUTQ` is zero), and `listening` is still set after
//!    that, and
//! 4. the mailbox has room;
//!
//! it then copies the record in, stores `mail_tail` (`Release`), and, if
//! `listening` was cleared meanwhile, rings: it writes a doorbell (a
//! 4-byte frame the receiver skips, see the `frame` module) to the socket.
//! Otherwise it sends through the socket as always.
//!
//! Order. The receiver takes mail before each frame it starts, and after
//! each read of the socket between frames it puts the mail it finds
//! *before* the bytes just read. That is the right order because of 3.: a
//! record found after the read was posted either before those bytes were
//! written, or while they were being written (concurrent sends, any order),
//! never after: a post after them needs the socket drained, so needs this
//! read done, and the receiver cleared `listening` before the read (a
//! `SeqCst` fence on each side: the poster's after the `ioctl`, the
//! receiver's before the system call).
//!
//! Wake-ups. The receiver clears `listening`, passes a `SeqCst` fence and
//! looks at `mail_tail` before it sleeps on the socket; the poster stores
//! `mail_tail`, passes a `SeqCst` fence and looks at `listening`. One of
//! the two sees the other: the receiver takes the record, or the poster
//! rings the doorbell, which wakes it.
//!
//! # Death
//!
//! - A poster killed before its `mail_tail` store leaves nothing behind
//!   but a held `mail_lock`: its record was never published, and later
//!   messages go through the socket. After the store, the record is
//!   delivered; if it dies before ringing, a receiver asleep on the socket
//!   finds it with the next byte written there, or at the end of the
//!   stream (the message was never acknowledged: its `send` had not
//!   returned).
//! - A receiver that dies or stops leaves the mailbox full at worst;
//!   senders then use the socket, which blocks them as it always did.
//! - A peer that writes nonsense into the words or records gets an error
//!   for them ([`RecvError::BadLaneToken`]), once: the receiver drops what
//!   the mailbox holds; every copy stays inside the mailbox.
//!
//! The model in `tests/loom_mailbox.rs` checks this with a poster that may
//! stop for ever at any step.

use super::{Lane, MIN_PAYLOAD, PAGE, RING};
use crate::error::RecvError;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

/// Bytes of each direction's mailbox.
pub(crate) const MAILBOX: usize = 64 * 1024;

/// Largest payload posted: anything from [`MIN_PAYLOAD`] on goes through
/// the ring with a token.
pub(crate) const MAIL_MAX: usize = MIN_PAYLOAD - 1;

/// Offsets of the mailbox's words in a direction's control page (the
/// ring's are at 0, 128 and 256).
const MAIL_TAIL: usize = 384;
const MAIL_HEAD: usize = 512;
const LISTENING: usize = 640;
const MAIL_LOCK: usize = 768;

/// Values of the `listening` word: not receiving, or about to sleep;
/// spinning for a frame; reading the socket between frames, and listening
/// again right after.
const DEAF: u32 = 0;
const LISTENS: u32 = 1;
const READS: u32 = 2;

/// Looks a poster takes at a receiver that [`READS`], for it to listen
/// again (a read of the socket takes about a microsecond), before it
/// yields once (the receiver may share its CPU) and then sends through the
/// socket.
const READ_WAIT: u32 = 64;

/// The length word that sends the reader to the mailbox's start.
const WRAP: u32 = u32::MAX;

/// Records start at multiples of this.
const RECORD_ALIGN: u64 = 8;

/// What [`Lane::post`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Posted {
    /// Not posted: send it through the socket.
    No,
    /// Posted, and the receiver is spinning for it.
    Quiet,
    /// Posted, and the receiver may be asleep: write a doorbell.
    RingBell,
}

/// Bytes of the record that holds a payload of `len` bytes.
fn record_len(len: usize) -> u64 {
    (4 + len as u64).next_multiple_of(RECORD_ALIGN)
}

/// Where a record of `rec` bytes goes, given the words `head` and `tail`:
/// its start, and the position of the `WRAP` word written before it when
/// it goes to the mailbox's start. `None` when there is no room (or the
/// words make no sense).
pub(crate) fn place_record(head: u64, tail: u64, rec: u64) -> Option<(u64, Option<u64>)> {
    let size = MAILBOX as u64;
    tail.checked_sub(head).filter(|&used| used <= size)?;
    if !tail.is_multiple_of(RECORD_ALIGN) {
        return None;
    }
    let (start, wrap) = if tail % size + rec > size {
        (tail.checked_next_multiple_of(size)?, Some(tail))
    } else {
        (tail, None)
    };
    let end = start.checked_add(rec)?;
    (end - head <= size).then_some((start, wrap))
}

impl Lane {
    fn mailbox_offset(&self, direction: u8, position: u64) -> usize {
        self.control(direction) + PAGE + RING + (position % MAILBOX as u64) as usize
    }

    fn mail_word(&self, direction: u8, at: usize) -> &AtomicU64 {
        self.word(direction, at)
    }

    fn flag(&self, direction: u8, at: usize) -> &AtomicU32 {
        self.segment
            .atomic_u32(self.control(direction) + at)
            .expect("control words lie in the segment")
    }

    /// Posts `payload` to the receiver's mailbox if the protocol allows it
    /// now (see the module docs); `drained` says whether the peer has read
    /// everything written to the socket through this end.
    pub(crate) fn post(&self, payload: &[u8], drained: impl FnOnce() -> bool) -> Posted {
        let dir = self.sends;
        if payload.len() > MAIL_MAX || !self.listens_soon(dir) {
            return Posted::No;
        }
        let lock = self.flag(dir, MAIL_LOCK);
        // SYNC: Acquire/Release on the lock order one poster's record
        // after the last one's.
        if lock
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Posted::No;
        }
        let posted = drained() && self.place_mail(dir, payload);
        lock.store(0, Ordering::Release);
        if !posted {
            return Posted::No;
        }
        // SYNC: pairs with the fence in `stop_listening`: either the
        // receiver sees the record, or this load sees it stopped.
        fence(Ordering::SeqCst);
        if self.flag(dir, LISTENING).load(Ordering::Relaxed) == DEAF {
            Posted::RingBell
        } else {
            // Spinning, or reading and then taking the mail.
            Posted::Quiet
        }
    }

    /// Whether the receiver listens, after waiting a little for one that
    /// is reading the socket between frames.
    fn listens_soon(&self, dir: u8) -> bool {
        let flag = self.flag(dir, LISTENING);
        for look in 0..=READ_WAIT {
            match flag.load(Ordering::Relaxed) {
                LISTENS => return true,
                READS if look < READ_WAIT => std::hint::spin_loop(),
                READS => std::thread::yield_now(),
                _ => return false,
            }
        }
        flag.load(Ordering::Relaxed) == LISTENS
    }

    /// Writes the record of `payload` and publishes it, if the receiver
    /// still listens and there is room. The caller holds `mail_lock` and
    /// found the socket drained.
    fn place_mail(&self, dir: u8, payload: &[u8]) -> bool {
        // SYNC: after the `ioctl` that found the socket drained: a receiver
        // that read the last of it cleared `listening` before (see "Order").
        fence(Ordering::SeqCst);
        if self.flag(dir, LISTENING).load(Ordering::Relaxed) != LISTENS {
            return false;
        }
        let tail_word = self.mail_word(dir, MAIL_TAIL);
        let tail = tail_word.load(Ordering::Relaxed);
        let rec = record_len(payload.len());
        // The head seen last first: the receiver's line is read only when
        // that shows no room.
        let seen = self.mail_head_seen.load(Ordering::Relaxed);
        let placed = place_record(seen, tail, rec).or_else(|| {
            // SYNC: Acquire pairs with the receiver's Release of
            // `mail_head` in `take_mail`: its copies out happen before our
            // writes (also into space a later post finds by `seen`).
            let head = self.mail_word(dir, MAIL_HEAD).load(Ordering::Acquire);
            self.mail_head_seen.store(head, Ordering::Relaxed);
            place_record(head, tail, rec)
        });
        let Some((start, wrap)) = placed else {
            return false;
        };
        if let Some(at) = wrap {
            self.segment
                .write_at(self.mailbox_offset(dir, at), &WRAP.to_be_bytes())
                .expect("a placed record lies in the mailbox");
        }
        let at = self.mailbox_offset(dir, start);
        let header = (payload.len() as u32).to_be_bytes();
        self.segment
            .write_at(at, &header)
            .and_then(|()| self.segment.write_at(at + 4, payload))
            .expect("a placed record lies in the mailbox");
        // SYNC: Release pairs with the Acquire in `take_mail`.
        tail_word.store(start + rec, Ordering::Release);
        true
    }

    /// Whether mail waits in this end's mailbox.
    pub(crate) fn has_mail(&self) -> bool {
        let dir = 1 - self.sends;
        self.mail_word(dir, MAIL_TAIL).load(Ordering::Acquire)
            != self.mail_word(dir, MAIL_HEAD).load(Ordering::Relaxed)
    }

    /// A blocking receive starts spinning for a frame: senders may post.
    pub(crate) fn listen(&self) {
        self.flag(1 - self.sends, LISTENING)
            .store(LISTENS, Ordering::Relaxed);
    }

    /// Before this end, spinning, reads the socket between frames: senders
    /// wait a little rather than post (see "Order"), and [`listen`](Self::listen)
    /// goes on once the read's mail was taken.
    pub(crate) fn pause_listening(&self) {
        self.flag(1 - self.sends, LISTENING)
            .store(READS, Ordering::Relaxed);
        // SYNC: as in `stop_listening`, before the read.
        fence(Ordering::SeqCst);
    }

    /// Before this end reads the socket, sleeps, or says nothing is there:
    /// senders stop posting without a doorbell. Returns whether mail waits
    /// (a record posted before the senders could see it).
    pub(crate) fn stop_listening(&self) -> bool {
        let flag = self.flag(1 - self.sends, LISTENING);
        if flag.load(Ordering::Relaxed) != DEAF {
            flag.store(DEAF, Ordering::Relaxed);
            // SYNC: pairs with the fences in `post` and `place_mail`.
            fence(Ordering::SeqCst);
        }
        self.has_mail()
    }

    /// Copies the frames of the whole records waiting in this end's
    /// mailbox, as many as fit, into `dst`, and hands their space back;
    /// returns the bytes copied (0: none waits, or the first does not fit,
    /// which `4 + MAIL_MAX` bytes of room rule out).
    ///
    /// # Errors
    ///
    /// [`RecvError::BadLaneToken`] when the words or a record make no
    /// sense; the mailbox is emptied.
    pub(crate) fn take_mail(&self, dst: &mut [u8]) -> Result<usize, RecvError> {
        let dir = 1 - self.sends;
        let head_word = self.mail_word(dir, MAIL_HEAD);
        let head = head_word.load(Ordering::Relaxed);
        // SYNC: pairs with the Release store in `place_mail`: the record's
        // bytes are written before we read them.
        let tail = self.mail_word(dir, MAIL_TAIL).load(Ordering::Acquire);
        if tail == head {
            return Ok(0);
        }
        let size = MAILBOX as u64;
        let corrupt = |at: u64, len: u64| {
            head_word.store(tail, Ordering::Release);
            RecvError::BadLaneToken { end: at, len }
        };
        if tail < head || tail - head > size || !head.is_multiple_of(RECORD_ALIGN) {
            return Err(corrupt(tail, tail.wrapping_sub(head)));
        }
        let (mut pos, mut copied) = (head, 0);
        while pos < tail {
            let at = self.mailbox_offset(dir, pos);
            let mut word = [0u8; 4];
            self.segment
                .read_at(at, &mut word)
                .expect("a position lies in the mailbox");
            let len = u32::from_be_bytes(word);
            if len == WRAP && !pos.is_multiple_of(size) {
                pos = pos.next_multiple_of(size);
                continue;
            }
            let rec = record_len(len as usize);
            if len as usize > MAIL_MAX || pos % size + rec > size || pos + rec > tail {
                return Err(corrupt(pos, u64::from(len)));
            }
            let frame = 4 + len as usize;
            let Some(into) = dst.get_mut(copied..copied + frame) else {
                break;
            };
            self.segment
                .read_at(at, into)
                .expect("a checked record lies in the mailbox");
            copied += frame;
            pos += rec;
        }
        if pos > tail {
            return Err(corrupt(pos, 0));
        }
        // SYNC: Release pairs with the Acquire in `place_mail`: our copies
        // happen before the space is written again. A compare-and-swap, so
        // that two processes reading one end (which Python forbids too)
        // never both deliver a record.
        if pos == head
            || head_word
                .compare_exchange(head, pos, Ordering::Release, Ordering::Relaxed)
                .is_err()
        {
            return Ok(0);
        }
        Ok(copied)
    }

    /// After `dst[..n]` was read from the socket between frames: moves the
    /// mail that waits (as much as fits in the rest of `dst`) in front of
    /// those bytes (see "Order"), and returns its length.
    ///
    /// # Errors
    ///
    /// As for [`take_mail`](Self::take_mail).
    pub(crate) fn take_mail_before(&self, dst: &mut [u8], n: usize) -> Result<usize, RecvError> {
        let k = self.take_mail(&mut dst[n..])?;
        if k > 0 {
            dst[..n + k].rotate_right(k);
        }
        Ok(k)
    }

    /// Bytes of records this end has posted so far.
    #[cfg(test)]
    pub(crate) fn mail_posted(&self) -> u64 {
        self.mail_word(self.sends, MAIL_TAIL)
            .load(Ordering::Relaxed)
    }

    /// This end leaves the lane: senders stop posting to it.
    pub(crate) fn deafen(&self) {
        self.flag(1 - self.sends, LISTENING)
            .store(DEAF, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_follow_each_other_and_wrap_to_the_start() {
        let size = MAILBOX as u64;
        assert_eq!(place_record(0, 0, 16), Some((0, None)));
        assert_eq!(place_record(0, 16, 16), Some((16, None)));
        // Past the end: a WRAP word at the tail, the record at the start.
        assert_eq!(
            place_record(size - 8, size - 8, 16),
            Some((size, Some(size - 8)))
        );
        // Full, or no room at the start yet.
        assert_eq!(place_record(0, size - 8, 16), None);
        assert_eq!(place_record(8, size - 8, 16), None);
        assert_eq!(place_record(16, size - 8, 16), Some((size, Some(size - 8))));
        // Nonsense words.
        assert_eq!(place_record(9, 8, 8), None);
        assert_eq!(place_record(0, 2 * size, 8), None);
        assert_eq!(place_record(0, 3, 8), None);
        assert_eq!(place_record(u64::MAX - 8, u64::MAX - 8, 16), None);
    }

    #[test]
    fn every_record_lies_in_the_mailbox_clear_of_untaken_ones() {
        let size = MAILBOX as u64;
        let mut next = super::super::xorshift(0x2545_f491_4f6c_dd1d);
        for _ in 0..100_000 {
            let head = (next() % (4 * size)).next_multiple_of(RECORD_ALIGN);
            let tail = head + (next() % (size + 1)) / RECORD_ALIGN * RECORD_ALIGN;
            let rec = record_len((next() % (MAIL_MAX as u64 + 1)) as usize);
            if let Some((start, wrap)) = place_record(head, tail, rec) {
                assert!(start >= tail, "before what is published");
                assert!(start % size + rec <= size, "runs past the end");
                assert!(start + rec - head <= size, "over untaken records");
                assert_eq!(wrap.is_some(), start != tail);
            }
        }
    }

    fn listening_pair() -> (Lane, Lane) {
        let (a, b) = Lane::pair().unwrap();
        b.listen();
        (a, b)
    }

    #[test]
    fn posts_need_a_listener_and_a_drained_socket() {
        let (a, b) = Lane::pair().unwrap();
        assert_eq!(a.post(b"x", || true), Posted::No, "nobody listens");
        b.listen();
        assert_eq!(a.post(b"x", || false), Posted::No, "bytes on the socket");
        assert_eq!(a.post(&[0; MAIL_MAX + 1], || true), Posted::No, "too long");
        assert_eq!(a.post(b"x", || true), Posted::Quiet);
        assert!(b.stop_listening(), "the record waits");
        assert_eq!(a.post(b"y", || true), Posted::No, "stopped");
        let mut dst = [0u8; 64];
        assert_eq!(b.take_mail(&mut dst).unwrap(), 5);
        assert_eq!(&dst[..5], b"\0\0\0\x01x");
        assert!(!b.has_mail());
    }

    #[test]
    fn a_receiver_that_stops_while_the_socket_is_looked_at_gets_no_post() {
        let (a, b) = listening_pair();
        let posted = a.post(b"late", || {
            // The receiver read the last socket bytes meanwhile.
            b.stop_listening();
            true
        });
        assert_eq!(posted, Posted::No);
        assert!(!b.has_mail());
    }

    #[test]
    fn frames_come_out_whole_in_order_across_the_wrap_and_when_room_is_short() {
        let (a, b) = listening_pair();
        let mut expect = Vec::new();
        let mut got = Vec::new();
        let mut dst = vec![0u8; 4 + MAIL_MAX + 100];
        for i in 0..5000u32 {
            let len = (i as usize * 37) % (MAIL_MAX + 1);
            let payload: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
            while a.post(&payload, || true) == Posted::No {
                let n = b.take_mail(&mut dst).unwrap();
                assert!(n > 0, "a full mailbox empties");
                got.extend_from_slice(&dst[..n]);
            }
            expect.extend_from_slice(&(len as u32).to_be_bytes());
            expect.extend_from_slice(&payload);
        }
        loop {
            let n = b.take_mail(&mut dst).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&dst[..n]);
        }
        assert_eq!(got.len(), expect.len());
        assert!(got == expect);
    }

    #[test]
    fn mail_goes_in_front_of_bytes_read_from_the_socket() {
        let (a, b) = listening_pair();
        assert_eq!(a.post(b"first", || true), Posted::Quiet);
        let mut dst = vec![0u8; 100];
        dst[..6].copy_from_slice(b"socket");
        let k = b.take_mail_before(&mut dst, 6).unwrap();
        assert_eq!(k, 9);
        assert_eq!(&dst[..15], b"\0\0\0\x05firstsocket");
        assert_eq!(b.take_mail_before(&mut dst, 15).unwrap(), 0);
    }

    #[test]
    fn nonsense_in_the_words_or_records_is_an_error_once() {
        let (a, b) = listening_pair();
        assert_eq!(a.post(b"ok", || true), Posted::Quiet);
        // A length word out of range, written by a peer.
        a.segment
            .write_at(a.mailbox_offset(0, 0), &(MAIL_MAX as u32 + 1).to_be_bytes())
            .unwrap();
        let mut dst = [0u8; 64];
        assert!(matches!(
            b.take_mail(&mut dst),
            Err(RecvError::BadLaneToken { .. })
        ));
        assert_eq!(b.take_mail(&mut dst).unwrap(), 0);
        // A tail far past the head.
        a.mail_word(0, MAIL_TAIL).store(1 << 40, Ordering::Relaxed);
        assert!(b.take_mail(&mut dst).is_err());
        assert_eq!(b.take_mail(&mut dst).unwrap(), 0);
        assert!(!b.has_mail());
    }
}
