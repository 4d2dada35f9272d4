//! What workers report to the pool, and the queue it travels on.
//!
//! A report is written straight into the queue's ring: the payload, then a
//! 16-byte trailer. The trailer comes last so that the payload, a chunk's
//! encoded results, is the received buffer with the trailer cut off: no
//! decoding and no second copy on the pool's result thread, its busiest.
//!
//! | bytes from the end | field |
//! |---|---|
//! | 16..8 | task id, little endian (0 for `InitFailed`) |
//! | 8..4 | worker pid, little endian |
//! | 4..0 | kind: `DONE`, `FAILED` (payload: UTF-8 message), `INIT_FAILED` (payload: UTF-8 message), `READY` (no payload) |

use multiproc_queue::{GetTimeoutError, Queue, QueueError};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::time::Duration;

use super::task::field;

const TRAILER: usize = 16;
const DONE: u32 = 1;
const FAILED: u32 = 2;
const INIT_FAILED: u32 = 3;
const READY: u32 = 4;

/// What a worker reports, borrowing its payload from the worker's buffer
/// or from the pool's [`Inbox`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Report<'a> {
    /// Task `id` finished: an encoded `Vec<Result<R, String>>`, one entry
    /// per call, or why the chunk could not run at all.
    Done {
        id: u64,
        worker: u32,
        result: Result<&'a [u8], Cow<'a, str>>,
    },
    /// The initializer of `worker` failed; it exits.
    InitFailed { worker: u32, message: Cow<'a, str> },
    /// The initializer of `worker` returned; it takes tasks now.
    Ready { worker: u32 },
}

impl<'a> Report<'a> {
    /// Payload, id, worker and kind.
    fn parts(&self) -> (&[u8], u64, u32, u32) {
        match self {
            Self::Done {
                id,
                worker,
                result: Ok(bytes),
            } => (bytes, *id, *worker, DONE),
            Self::Done {
                id,
                worker,
                result: Err(message),
            } => (message.as_bytes(), *id, *worker, FAILED),
            Self::InitFailed { worker, message } => (message.as_bytes(), 0, *worker, INIT_FAILED),
            Self::Ready { worker } => (&[], 0, *worker, READY),
        }
    }

    fn encoded_len(&self) -> usize {
        self.parts().0.len() + TRAILER
    }

    /// Writes the report into `buf`, exactly [`encoded_len`](Self::encoded_len) bytes.
    fn write(&self, buf: &mut [u8]) {
        let (payload, id, worker, kind) = self.parts();
        let (head, trailer) = buf.split_at_mut(payload.len());
        head.copy_from_slice(payload);
        trailer[..8].copy_from_slice(&id.to_le_bytes());
        trailer[8..12].copy_from_slice(&worker.to_le_bytes());
        trailer[12..].copy_from_slice(&kind.to_le_bytes());
    }

    /// Reads a report; `None` for a message no worker wrote.
    fn read(message: &'a [u8]) -> Option<Self> {
        let at = message.len().checked_sub(TRAILER)?;
        let (payload, trailer) = message.split_at(at);
        let id = u64::from_le_bytes(field(trailer, 0));
        let worker = u32::from_le_bytes(field(trailer, 8));
        let kind = u32::from_le_bytes(field(trailer, 12));
        Some(match kind {
            DONE => Self::Done {
                id,
                worker,
                result: Ok(payload),
            },
            FAILED => Self::Done {
                id,
                worker,
                result: Err(String::from_utf8_lossy(payload)),
            },
            INIT_FAILED => Self::InitFailed {
                worker,
                message: String::from_utf8_lossy(payload),
            },
            READY => Self::Ready { worker },
            _ => return None,
        })
    }
}

/// Marks the queue's messages as reports (bytes, see the module docs).
enum ReportMessage {}

/// The report queue: every worker puts, the pool's result thread gets.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Reports(Queue<ReportMessage>);

impl Reports {
    /// A queue over a ring of `ring_bytes`.
    pub(crate) fn new(ring_bytes: usize) -> Result<Self, QueueError> {
        Queue::builder().ring_bytes(ring_bytes).build().map(Self)
    }

    /// Puts `report`, waiting for room; `false` once the queue is closed.
    pub(crate) fn put(&self, report: &Report<'_>) -> bool {
        self.0
            .put_with(report.encoded_len(), |buf| report.write(buf))
            .is_ok()
    }

    /// Puts `report` if there is room now.
    pub(crate) fn try_put(&self, report: &Report<'_>) -> bool {
        self.0
            .try_put_with(report.encoded_len(), |buf| report.write(buf))
            .is_ok()
    }

    /// Closes the queue (see [`Queue::close`]).
    pub(crate) fn close(&self) {
        self.0.close();
    }
}

/// The reports the result thread has taken and not yet delivered, each in
/// a buffer of its own that the next batch reuses: no allocation per
/// report, and a chunk's results reach its sink as a slice of the buffer,
/// never copied again.
#[derive(Default)]
pub(crate) struct Inbox {
    buffers: Vec<Vec<u8>>,
    len: usize,
}

/// A report's place in the [`Inbox`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Kept(usize);

impl Inbox {
    /// Forgets the reports taken so far, keeping their buffers.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    /// Takes the next report from `reports`, waiting at most `timeout`.
    /// Messages that are not reports are dropped: only workers and the pool
    /// put there.
    pub(crate) fn take_timeout(
        &mut self,
        reports: &Reports,
        timeout: Duration,
    ) -> Result<Kept, GetTimeoutError> {
        loop {
            let buffer = self.spare();
            reports.0.get_bytes_into_timeout(buffer, timeout)?;
            if let Some(received) = self.keep() {
                return Ok(received);
            }
        }
    }

    /// Takes the next report from `reports` if one is there now.
    pub(crate) fn try_take(&mut self, reports: &Reports) -> Option<Kept> {
        loop {
            let buffer = self.spare();
            reports.0.try_get_bytes_into(buffer).ok()?;
            if let Some(received) = self.keep() {
                return Some(received);
            }
        }
    }

    /// The report at `at` (always one: only reports are kept).
    pub(crate) fn report(&self, at: Kept) -> Option<Report<'_>> {
        Report::read(&self.buffers[at.0])
    }

    /// The payload of a `Done` report: the chunk's encoded results.
    pub(crate) fn payload(&self, at: Kept) -> &[u8] {
        let buffer = &self.buffers[at.0];
        &buffer[..buffer.len().saturating_sub(TRAILER)]
    }

    /// The first buffer not holding a report.
    fn spare(&mut self) -> &mut Vec<u8> {
        if self.buffers.len() == self.len {
            self.buffers.push(Vec::new());
        }
        &mut self.buffers[self.len]
    }

    /// Keeps the spare buffer's message if it is a report.
    fn keep(&mut self) -> Option<Kept> {
        Report::read(&self.buffers[self.len])?;
        self.len += 1;
        Some(Kept(self.len - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<'a>(report: &Report<'_>, buf: &'a mut Vec<u8>) -> Option<Report<'a>> {
        buf.resize(report.encoded_len(), 0);
        report.write(buf);
        Report::read(buf)
    }

    #[test]
    fn every_kind_reads_back_as_written() {
        for report in [
            Report::Done {
                id: u64::MAX - 3,
                worker: 4242,
                result: Ok(&[1, 2, 3]),
            },
            Report::Done {
                id: 7,
                worker: 1,
                result: Ok(&[]),
            },
            Report::Done {
                id: 8,
                worker: 2,
                result: Err("task panicked: ü".into()),
            },
            Report::InitFailed {
                worker: 3,
                message: "cannot initialise".into(),
            },
            Report::Ready { worker: 5 },
        ] {
            let mut buf = Vec::new();
            assert_eq!(round_trip(&report, &mut buf).as_ref(), Some(&report));
        }
    }

    #[test]
    fn short_or_unknown_messages_are_not_reports() {
        assert_eq!(Report::read(&[0; TRAILER - 1]), None);
        let mut unknown = vec![0u8; TRAILER];
        unknown[12..].copy_from_slice(&99u32.to_le_bytes());
        assert_eq!(Report::read(&unknown), None);
    }
}
