//! The caller's side of a remote pool: submitting tasks, and the one
//! thread per pool that collects their replies.
//!
//! Exactly one result per task reaches the caller: a reply settles the
//! task's sink and removes it, so a second reply for the same task (it
//! ran twice: its first worker stalled or died after running it) finds
//! no sink and is dropped and counted.
//!
//! The collector also settles tasks whose reply can never come:
//! - **poisoned**: the task queue moved the task to its dead-letter
//!   stream after `max_deliveries` deliveries; the collector reads the
//!   dead letters after its cursor and settles (and removes) its own;
//! - **lost**: every submission adds its number of tasks to a counter on
//!   the server in the same atomic step as the adds; when the counter is
//!   behind this caller's own count, the server lost writes (a restart
//!   without the data), and every task outstanding then is settled as
//!   [`RemoteTaskError::Lost`];
//! - **out of reach**: when the server stays unreachable longer than
//!   `retry_for`, every outstanding task fails with the error.

use super::result::RemoteTaskError;
use super::wire::{Refusal, ReplyMsg, TaskMsg};
use crate::queue::{SendFail, Wait};
use crate::{GetTimeoutError, RemoteError, RemoteJoinableQueue, RemoteQueue};
use multiproc_core::Codec;
use multiproc_core::fnref::BuildId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where a task's outcome goes: the encoded `Vec<Result<R, String>>` of
/// its chunk, or why there is none.
pub(crate) type Sink = Box<dyn FnOnce(Result<Vec<u8>, RemoteTaskError>) + Send>;

/// Replies taken per read.
const REPLY_BATCH: usize = 256;
/// Dead letters read per look.
const DEAD_BATCH: usize = 64;

/// Bookkeeping under one lock.
struct Book {
    next_task: u64,
    /// Outstanding tasks.
    sinks: HashMap<u64, Sink>,
    /// What the server's counter should read: the tasks this caller put,
    /// less what the server lost before (set from the counter whenever it
    /// is read; a put whose reply never came shows up as a counter ahead).
    expected: u64,
    /// Where the next look at the dead letters starts.
    dead_cursor: String,
}

/// One pool handle's caller side.
pub(crate) struct Caller {
    pub(crate) tasks: RemoteJoinableQueue<()>,
    replies: RemoteQueue<()>,
    counter_key: String,
    pub(crate) build: BuildId,
    pub(crate) codec: Codec,
    book: Mutex<Book>,
    /// Held across a submission, so that a look at the counter never sees
    /// one half done.
    submitting: Mutex<()>,
    stop: AtomicBool,
    duplicates: AtomicU64,
    poll: Duration,
    retry_for: Duration,
}

fn lock<G>(m: &Mutex<G>) -> MutexGuard<'_, G> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Caller {
    pub(crate) fn new(
        tasks: RemoteJoinableQueue<()>,
        replies: RemoteQueue<()>,
        build: BuildId,
        poll: Duration,
        retry_for: Duration,
    ) -> Self {
        let counter_key = tasks.key(&format!("sent:{}", replies.name()));
        Self {
            tasks,
            replies,
            counter_key,
            build,
            codec: Codec::new(),
            book: Mutex::new(Book {
                next_task: 1,
                sinks: HashMap::new(),
                expected: 0,
                dead_cursor: "0-0".to_owned(),
            }),
            submitting: Mutex::new(()),
            stop: AtomicBool::new(false),
            duplicates: AtomicU64::new(0),
            poll,
            retry_for,
        }
    }

    /// This caller's reply queue's name (tasks carry it).
    pub(crate) fn reply_name(&self) -> &str {
        self.replies.name()
    }

    /// Replies dropped because their task already had its result.
    pub(crate) fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::SeqCst)
    }

    /// Submits one task per `(args, sink)`: registers the sinks, puts the
    /// tasks (in batches, each all or nothing), and settles the sinks of
    /// a batch that could not be put with the error.
    pub(crate) fn submit(&self, runner: i64, target: i64, chunks: Vec<(Vec<u8>, Sink)>) {
        const PUT_BATCH: usize = 256;
        let _one_at_a_time = lock(&self.submitting);
        let mut chunks = chunks.into_iter().peekable();
        while chunks.peek().is_some() {
            let batch: Vec<(Vec<u8>, Sink)> = chunks.by_ref().take(PUT_BATCH).collect();
            let mut ids = Vec::with_capacity(batch.len());
            let mut payloads = Vec::with_capacity(batch.len());
            let mut failed = None;
            {
                let mut book = lock(&self.book);
                for (args, sink) in batch {
                    let task = book.next_task;
                    book.next_task += 1;
                    let msg = TaskMsg {
                        build: self.build,
                        reply: self.reply_name().to_owned(),
                        task,
                        runner,
                        target,
                        args,
                    };
                    match self.codec.encode(&msg) {
                        Ok(bytes) => {
                            payloads.push(bytes);
                            ids.push(task);
                            book.sinks.insert(task, sink);
                        }
                        Err(e) => sink(Err(RemoteTaskError::Codec(e.to_string()))),
                    }
                }
            }
            if payloads.is_empty() {
                continue;
            }
            let put = self
                .tasks
                .send_counted(&payloads, Some(&self.counter_key), Wait::Forever);
            let mut book = lock(&self.book);
            let n = payloads.len() as u64;
            match put {
                Ok(counter) => {
                    book.expected += n;
                    if counter < book.expected {
                        // The server lost earlier submissions: every task
                        // outstanding from before this batch is gone.
                        let first = ids[0];
                        let lost: Vec<u64> =
                            book.sinks.keys().copied().filter(|&t| t < first).collect();
                        let sinks: Vec<Sink> = lost
                            .into_iter()
                            .filter_map(|t| book.sinks.remove(&t))
                            .collect();
                        book.expected = counter;
                        drop(book);
                        for sink in sinks {
                            sink(Err(RemoteTaskError::Lost));
                        }
                        book = lock(&self.book);
                    } else {
                        // Above: an earlier put whose reply never came did
                        // add its tasks.
                        book.expected = counter;
                    }
                }
                Err(fail) => {
                    let error = match fail {
                        SendFail::Closed => RemoteTaskError::Closed,
                        // The put may have reached the server: if so, the
                        // counter is ahead, which the next read absorbs.
                        SendFail::Failed(e) => RemoteTaskError::Failed(Arc::new(e)),
                        SendFail::Full | SendFail::Timeout => {
                            unreachable!("a put without a deadline waits for room")
                        }
                    };
                    let sinks: Vec<Sink> =
                        ids.iter().filter_map(|t| book.sinks.remove(t)).collect();
                    drop(book);
                    for sink in sinks {
                        sink(Err(error.clone()));
                    }
                    // The other batches are not tried: the caller sees the
                    // failure in every task that follows too.
                    failed = Some(error);
                }
            }
            if let Some(error) = failed {
                for (_, sink) in chunks.by_ref() {
                    sink(Err(error.clone()));
                }
            }
        }
    }

    /// Settles `task` with `outcome`, or counts a duplicate.
    fn settle(&self, task: u64, outcome: Result<Vec<u8>, RemoteTaskError>) {
        let sink = lock(&self.book).sinks.remove(&task);
        match sink {
            Some(sink) => sink(outcome),
            None => {
                self.duplicates.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// Settles every outstanding task with `error`.
    fn settle_all(&self, error: &RemoteTaskError) {
        let sinks: Vec<Sink> = lock(&self.book).sinks.drain().map(|(_, s)| s).collect();
        for sink in sinks {
            sink(Err(error.clone()));
        }
    }

    fn outstanding(&self) -> usize {
        lock(&self.book).sinks.len()
    }

    fn take_reply(&self, bytes: &[u8]) {
        let Ok(reply) = self.codec.decode::<ReplyMsg>(bytes) else {
            // Not a reply this crate wrote: nothing to settle.
            return;
        };
        let outcome = reply.outcome.map_err(|refusal| match refusal {
            Refusal::OtherBuild { worker } => RemoteTaskError::OtherBuild {
                caller: self.build,
                worker,
            },
            Refusal::Undecodable(m) => RemoteTaskError::Codec(m),
        });
        self.settle(reply.task, outcome);
    }

    /// Settles this caller's tasks among the dead letters (and removes
    /// those letters); leaves other callers' letters.
    fn look_at_dead_letters(&self) -> Result<(), RemoteError> {
        loop {
            let cursor = lock(&self.book).dead_cursor.clone();
            let letters = self.tasks.dead_letters_after(&cursor, DEAD_BATCH)?;
            let Some((last, _)) = letters.last() else {
                return Ok(());
            };
            let last = last.clone();
            let full = letters.len() == DEAD_BATCH;
            for (entry, letter) in letters {
                // Another program's entry, or another payload: not ours.
                let Ok(letter) = letter else {
                    continue;
                };
                let Ok(task) = self.codec.decode::<TaskMsg>(letter.payload()) else {
                    continue;
                };
                if task.reply != self.reply_name() {
                    continue;
                }
                self.tasks.remove_dead_letter(&entry)?;
                let error = match letter.reason() {
                    crate::DeadReason::TooManyDeliveries => RemoteTaskError::Poisoned {
                        deliveries: letter.deliveries(),
                    },
                    other => RemoteTaskError::Codec(format!("the task is a dead letter: {other}")),
                };
                self.settle(task.task, Err(error));
            }
            lock(&self.book).dead_cursor = last;
            if !full {
                return Ok(());
            }
        }
    }

    /// Settles every outstanding task as lost when the server's counter
    /// is behind what this caller put. Skipped while a submission runs.
    fn look_for_loss(&self) -> Result<(), RemoteError> {
        let Ok(_no_submission) = self.submitting.try_lock() else {
            return Ok(());
        };
        let counter: Option<u64> = self
            .tasks
            .control(|con| redis::cmd("GET").arg(&self.counter_key).query(con))?;
        let counter = counter.unwrap_or(0);
        let mut book = lock(&self.book);
        if counter < book.expected {
            book.expected = counter;
            drop(book);
            self.settle_all(&RemoteTaskError::Lost);
        } else {
            book.expected = counter;
        }
        Ok(())
    }

    /// Asks the collector to stop once nothing is outstanding.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// The collector thread's loop.
    pub(crate) fn collect(self: Arc<Self>) {
        let mut down_since: Option<Instant> = None;
        let mut looked_at = Instant::now();
        let mut stopped_at: Option<Instant> = None;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                let since = *stopped_at.get_or_insert_with(Instant::now);
                if self.outstanding() == 0 {
                    break;
                }
                if since.elapsed() > self.retry_for {
                    self.settle_all(&RemoteTaskError::Abandoned);
                    break;
                }
            }
            let got = self.replies.get_many_bytes(REPLY_BATCH, self.poll);
            let mut failure = match got {
                Ok(replies) => {
                    for r in &replies {
                        self.take_reply(r);
                    }
                    None
                }
                Err(GetTimeoutError::Timeout | GetTimeoutError::Closed) => None,
                Err(GetTimeoutError::Failed(e)) => Some(e),
            };
            if failure.is_none() && looked_at.elapsed() >= self.poll && self.outstanding() > 0 {
                looked_at = Instant::now();
                failure = self
                    .look_at_dead_letters()
                    .and_then(|()| self.look_for_loss())
                    .err();
            }
            match failure {
                None => down_since = None,
                Some(e) if e.is_unavailable() => {
                    let since = *down_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > self.retry_for {
                        self.settle_all(&RemoteTaskError::Failed(Arc::new(e)));
                    }
                    std::thread::sleep(self.poll.min(Duration::from_millis(100)));
                }
                Some(e) => {
                    // A server error or a malformed reply: report once per
                    // kind of trouble is the queue's business; here, wait a
                    // little and go on.
                    eprintln!("multiproc-redis: a pool's collector: {e}");
                    std::thread::sleep(self.poll);
                }
            }
        }
        // Best effort: the reply queue and counter go; the closed flag
        // (kept for an hour) turns late replies away.
        let _ = self.replies.destroy();
        let closed = self.replies.key("closed");
        let _ = self.tasks.control(|con| {
            redis::pipe()
                .cmd("DEL")
                .arg(&self.counter_key)
                .ignore()
                .cmd("SET")
                .arg(&closed)
                .arg(1)
                .arg("EX")
                .arg(3600)
                .ignore()
                .query::<()>(con)
        });
    }
}
