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
use std::time::Duration;

use super::task::field;

const TRAILER: usize = 16;
const DONE: u32 = 1;
const FAILED: u32 = 2;
const INIT_FAILED: u32 = 3;
const READY: u32 = 4;

/// What a worker reports.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Report {
    /// Task `id` finished: an encoded `Vec<Result<R, String>>`, one entry
    /// per call, or why the chunk could not run at all.
    Done {
        id: u64,
        worker: u32,
        result: Result<Vec<u8>, String>,
    },
    /// The initializer of `worker` failed; it exits.
    InitFailed { worker: u32, message: String },
    /// The initializer of `worker` returned; it takes tasks now.
    Ready { worker: u32 },
}

impl Report {
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
    fn read(mut message: Vec<u8>) -> Option<Self> {
        let at = message.len().checked_sub(TRAILER)?;
        let mut trailer = [0u8; TRAILER];
        trailer.copy_from_slice(&message[at..]);
        message.truncate(at);
        let id = u64::from_le_bytes(field(&trailer, 0));
        let worker = u32::from_le_bytes(field(&trailer, 8));
        let kind = u32::from_le_bytes(field(&trailer, 12));
        let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
        Some(match kind {
            DONE => Self::Done {
                id,
                worker,
                result: Ok(message),
            },
            FAILED => Self::Done {
                id,
                worker,
                result: Err(text(message)),
            },
            INIT_FAILED => Self::InitFailed {
                worker,
                message: text(message),
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
    pub(crate) fn put(&self, report: &Report) -> bool {
        self.0
            .put_with(report.encoded_len(), |buf| report.write(buf))
            .is_ok()
    }

    /// Puts `report` if there is room now.
    pub(crate) fn try_put(&self, report: &Report) -> bool {
        self.0
            .try_put_with(report.encoded_len(), |buf| report.write(buf))
            .is_ok()
    }

    /// The next report, waiting at most `timeout`. Messages that are not
    /// reports are dropped: only workers and the pool put here.
    pub(crate) fn get_timeout(&self, timeout: Duration) -> Result<Report, GetTimeoutError> {
        loop {
            if let Some(report) = Report::read(self.0.get_bytes_timeout(timeout)?) {
                return Ok(report);
            }
        }
    }

    /// The next report, if one is there now.
    pub(crate) fn try_get(&self) -> Option<Report> {
        while let Ok(message) = self.0.try_get_bytes() {
            if let Some(report) = Report::read(message) {
                return Some(report);
            }
        }
        None
    }

    /// Closes the queue (see [`Queue::close`]).
    pub(crate) fn close(&self) {
        self.0.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(report: &Report) -> Option<Report> {
        let mut buf = vec![0u8; report.encoded_len()];
        report.write(&mut buf);
        Report::read(buf)
    }

    #[test]
    fn every_kind_reads_back_as_written() {
        for report in [
            Report::Done {
                id: u64::MAX - 3,
                worker: 4242,
                result: Ok(vec![1, 2, 3]),
            },
            Report::Done {
                id: 7,
                worker: 1,
                result: Ok(Vec::new()),
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
            assert_eq!(round_trip(&report).as_ref(), Some(&report));
        }
    }

    #[test]
    fn short_or_unknown_messages_are_not_reports() {
        assert_eq!(Report::read(vec![0; TRAILER - 1]), None);
        let mut unknown = vec![0u8; TRAILER];
        unknown[12..].copy_from_slice(&99u32.to_le_bytes());
        assert_eq!(Report::read(unknown), None);
    }
}
