//! Worker mode: take tasks from the pool's queue, run them, put their
//! results in their callers' reply queues, then acknowledge the tasks.
//!
//! A worker takes one task at a time, and doubles that (up to
//! `prefetch`) while its batches run within [`GIVE_BACK_AFTER`]: short
//! tasks then cost a few round trips per batch instead of per task. Once
//! a task has run that long, the heartbeat thread gives the batch's
//! waiting tasks back to the group for idle workers, and the next batch
//! is one task again, so a long task holds up only itself.
//!
//! The order makes a worker's death safe at every step: killed before the
//! reply is put, the task is still pending and another worker takes it
//! over after `min_idle`; killed between the reply and the
//! acknowledgement, the task runs again and its second reply is dropped by
//! the caller. While a task runs, a heartbeat thread resets its idle time
//! every quarter of `min_idle`, so a long task is not taken for a dead
//! worker's; a worker that is stopped (SIGSTOP) stops its heartbeat too,
//! and its task moves on.

use super::wire::{self, Refusal, ReplyMsg, TaskMsg};
use crate::{
    GetTimeoutError, PutError, RemoteError, RemoteJoinableQueue, RemoteQueue, RemoteQueueBuilder,
};
use multiproc_core::Codec;
use multiproc_core::fnref::BuildId;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Why [`RemotePoolBuilder::serve`](crate::RemotePoolBuilder::serve)
/// stopped.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServeError {
    /// A task came from another build: this worker ran nothing of it,
    /// answered the caller with [`RemoteTaskError::OtherBuild`](crate::RemoteTaskError::OtherBuild), and
    /// stops serving the pool (its build cannot run the pool's tasks).
    OtherBuild {
        /// The caller's build.
        caller: BuildId,
        /// This worker's.
        worker: BuildId,
    },
    /// The executable could not be read to tell this worker's build.
    Build(std::io::Error),
    /// A setting is out of range, or the server refused a command.
    Failed(RemoteError),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::OtherBuild { caller, worker } => write!(
                f,
                "this worker (build {worker}) was sent a task of build {caller}"
            ),
            Self::Build(e) => write!(f, "reading this program's build failed: {e}"),
            Self::Failed(e) => write!(f, "the pool's server failed: {e}"),
        }
    }
}

impl std::error::Error for ServeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Build(e) => Some(e),
            Self::Failed(e) => Some(e),
            Self::OtherBuild { .. } => None,
        }
    }
}

impl From<RemoteError> for ServeError {
    fn from(e: RemoteError) -> Self {
        Self::Failed(e)
    }
}

/// Reply queues a worker keeps open at most (one per caller seen lately).
const MAX_REPLY_QUEUES: usize = 64;
/// The longest pause between tries while the server is out of reach.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How long a task may run before the worker gives back the tasks it
/// took with it and has not started, for idle workers to take.
const GIVE_BACK_AFTER: Duration = Duration::from_millis(10);

/// The batch a worker runs, shared with its heartbeat thread.
#[derive(Default)]
struct Batch {
    /// Tasks taken and not started, oldest first.
    waiting: VecDeque<Vec<u8>>,
    /// When the running task started.
    running_since: Option<Instant>,
    /// The worker is stopping.
    done: bool,
}

/// The heartbeat thread's side: resets the idle time of the held tasks
/// every quarter of `min_idle` while one runs, and gives back the waiting
/// ones once a task has run for [`GIVE_BACK_AFTER`].
struct Heartbeat {
    batch: Mutex<Batch>,
    changed: Condvar,
}

impl Heartbeat {
    fn lock(&self) -> MutexGuard<'_, Batch> {
        self.batch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the next waiting task, if any.
    fn start_next(&self) -> Option<Vec<u8>> {
        let mut batch = self.lock();
        let next = batch.waiting.pop_front();
        batch.running_since = next.as_ref().map(|_| Instant::now());
        self.changed.notify_all();
        next
    }

    fn run(&self, tasks: &RemoteJoinableQueue<()>, every: Duration) {
        let mut batch = self.lock();
        let mut touched = Instant::now();
        while !batch.done {
            let tick = if batch.running_since.is_some() && !batch.waiting.is_empty() {
                GIVE_BACK_AFTER / 2
            } else {
                every
            };
            batch = self
                .changed
                .wait_timeout(batch, tick)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            let Some(since) = batch.running_since else {
                continue;
            };
            if !batch.waiting.is_empty() && since.elapsed() >= GIVE_BACK_AFTER {
                // The newest held tasks are the waiting ones: the running
                // task and those done are older.
                let k = batch.waiting.len();
                batch.waiting.clear();
                drop(batch);
                // Not given back (server out of reach): they are held by
                // nobody running them and move on after `min_idle`.
                let _ = tasks.give_back_newest(k);
                batch = self.lock();
            }
            if touched.elapsed() >= every {
                // Without the lock: the task's end may not wait on a
                // network call. Out of reach: the task may move on; its
                // reply is then a duplicate, dropped by the caller.
                drop(batch);
                let _ = tasks.touch_held();
                touched = Instant::now();
                batch = self.lock();
            }
        }
    }
}

pub(crate) fn serve(tasks_builder: RemoteQueueBuilder, prefetch: usize) -> Result<(), ServeError> {
    let own = BuildId::current().map_err(ServeError::Build)?;
    let (_, min_idle, _) = tasks_builder.waits();
    // One handle for both threads: a clone would be another consumer,
    // holding none of this one's tasks.
    let tasks: Arc<RemoteJoinableQueue<()>> = Arc::new(tasks_builder.clone().build_joinable()?);
    let heartbeat = Arc::new(Heartbeat {
        batch: Mutex::new(Batch::default()),
        changed: Condvar::new(),
    });
    let beat = {
        let heartbeat = Arc::clone(&heartbeat);
        let tasks = Arc::clone(&tasks);
        std::thread::Builder::new()
            .name("pool-heartbeat".into())
            .spawn(move || heartbeat.run(&tasks, min_idle / 4))
            .map_err(ServeError::Build)?
    };
    let mut worker = Worker {
        tasks,
        prefetch,
        builder: tasks_builder,
        own,
        codec: Codec::new(),
        replies: HashMap::new(),
        heartbeat: Arc::clone(&heartbeat),
    };
    let served = worker.serve();
    heartbeat.lock().done = true;
    heartbeat.changed.notify_all();
    let _ = beat.join();
    served
}

struct Worker {
    tasks: Arc<RemoteJoinableQueue<()>>,
    /// The most tasks taken at a time.
    prefetch: usize,
    builder: RemoteQueueBuilder,
    own: BuildId,
    codec: Codec,
    replies: HashMap<String, RemoteQueue<()>>,
    heartbeat: Arc<Heartbeat>,
}

impl Worker {
    fn serve(&mut self) -> Result<(), ServeError> {
        let mut backoff = Backoff::default();
        let (block, _, _) = self.builder.waits();
        // Tasks to take next: doubles while batches run within
        // GIVE_BACK_AFTER, back to 1 after one that did not.
        let mut want = 1;
        loop {
            let batch = match self.tasks.get_many_bytes(want, block) {
                Ok(batch) => batch,
                Err(GetTimeoutError::Timeout) => continue,
                Err(GetTimeoutError::Closed) => return Ok(()),
                Err(GetTimeoutError::Failed(e)) if e.is_unavailable() => {
                    backoff.wait(&e);
                    continue;
                }
                // A malformed entry (dead-lettered by the get): go on.
                Err(GetTimeoutError::Failed(e)) if e.is_protocol() => continue,
                Err(GetTimeoutError::Failed(e)) => return Err(e.into()),
            };
            backoff = Backoff::default();
            let taken = batch.len();
            let started = Instant::now();
            self.heartbeat.lock().waiting = batch.into();
            let mut ran = 0;
            let mut refused = None;
            // Replies per caller, in task order.
            let mut replies: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
            while let Some(bytes) = self.heartbeat.start_next() {
                ran += 1;
                let Ok(task) = self.codec.decode::<TaskMsg>(&bytes) else {
                    // Not a task this crate wrote: nobody waits for it.
                    eprintln!(
                        "multiproc-redis: a pool worker dropped a message that is not a task \
                         ({} bytes)",
                        bytes.len()
                    );
                    continue;
                };
                let outcome = if refused.is_some() {
                    Err(Refusal::OtherBuild { worker: self.own })
                } else {
                    wire::run(&task, self.own, &self.codec)
                };
                if let Err(Refusal::OtherBuild { worker }) = &outcome {
                    refused.get_or_insert(ServeError::OtherBuild {
                        caller: task.build,
                        worker: *worker,
                    });
                }
                let reply = ReplyMsg {
                    task: task.task,
                    outcome,
                };
                let bytes = self
                    .codec
                    .encode(&reply)
                    .map_err(|e| ServeError::Failed(RemoteError::Codec(e)))?;
                match replies.iter_mut().find(|(to, _)| *to == task.reply) {
                    Some((_, group)) => group.push(bytes),
                    None => replies.push((task.reply, vec![bytes])),
                }
            }
            for (to, group) in &replies {
                self.reply(to, group)?;
            }
            self.finish(ran)?;
            if let Some(refused) = refused {
                return Err(refused);
            }
            want = if ran == taken && started.elapsed() < GIVE_BACK_AFTER {
                (want * 2).min(self.prefetch)
            } else {
                1
            };
        }
    }

    /// Puts replies to one caller (all or none), retrying while the server
    /// is out of reach (the tasks stay pending meanwhile). A caller that is
    /// gone (its reply queue closed) gets nothing.
    fn reply(&mut self, to: &str, replies: &[Vec<u8>]) -> Result<(), ServeError> {
        let mut backoff = Backoff::default();
        loop {
            if !self.replies.contains_key(to) {
                if self.replies.len() >= MAX_REPLY_QUEUES {
                    self.replies.clear();
                }
                match self.builder.clone().renamed(to).build::<()>() {
                    Ok(q) => {
                        self.replies.insert(to.to_owned(), q);
                    }
                    Err(e) if e.is_unavailable() => {
                        backoff.wait(&e);
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            match self.replies[to].put_many_bytes(replies) {
                Ok(()) | Err(PutError::Closed(_)) => return Ok(()),
                Err(PutError::Failed(_, e)) if e.is_unavailable() => backoff.wait(&e),
                Err(PutError::Failed(_, e)) => return Err(e.into()),
            }
        }
    }

    /// Acknowledges the `n` tasks in hand, retrying while the server is
    /// out of reach.
    fn finish(&self, n: usize) -> Result<(), ServeError> {
        let mut backoff = Backoff::default();
        loop {
            match self.tasks.task_done_many(n) {
                Ok(()) | Err(crate::TaskDoneError::Unmatched) => return Ok(()),
                Err(crate::TaskDoneError::Failed(e)) if e.is_unavailable() => backoff.wait(&e),
                Err(crate::TaskDoneError::Failed(e)) => return Err(e.into()),
            }
        }
    }
}

/// Pauses from 10 ms doubling to [`MAX_BACKOFF`], saying once on stderr
/// that the server is out of reach.
#[derive(Default)]
struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    fn wait(&mut self, e: &RemoteError) {
        let pause = match self.next {
            None => {
                eprintln!("multiproc-redis: a pool worker waits for its server: {e}");
                Duration::from_millis(10)
            }
            Some(p) => p,
        };
        std::thread::sleep(pause);
        self.next = Some((pause * 2).min(MAX_BACKOFF));
    }
}
