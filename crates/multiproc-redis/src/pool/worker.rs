//! Worker mode: take tasks from the pool's queue (up to `prefetch` at a
//! time), run them, put their results in their callers' reply queues,
//! then acknowledge the tasks.
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
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

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

/// Resets the idle time of the held task every quarter of `min_idle`
/// while `busy`.
struct Heartbeat {
    busy: Mutex<bool>,
    changed: Condvar,
    done: AtomicBool,
}

impl Heartbeat {
    fn set_busy(&self, busy: bool) {
        *self.busy.lock().unwrap_or_else(|p| p.into_inner()) = busy;
        self.changed.notify_all();
    }

    fn run(&self, tasks: &RemoteJoinableQueue<()>, every: Duration) {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        while !self.done.load(Ordering::SeqCst) {
            busy = self
                .changed
                .wait_timeout(busy, every)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            if *busy {
                // Without the lock: the task's end may not wait on a
                // network call.
                drop(busy);
                // Out of reach: the task may move on; its reply is then
                // a duplicate, dropped by the caller.
                let _ = tasks.touch_held();
                busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
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
        busy: Mutex::new(false),
        changed: Condvar::new(),
        done: AtomicBool::new(false),
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
    heartbeat.done.store(true, Ordering::SeqCst);
    heartbeat.set_busy(false);
    let _ = beat.join();
    served
}

struct Worker {
    tasks: Arc<RemoteJoinableQueue<()>>,
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
        loop {
            let batch = match self.tasks.get_many_bytes(self.prefetch, block) {
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
            let mut refused = None;
            // Replies per caller, in task order.
            let mut replies: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
            for bytes in &batch {
                let Ok(task) = self.codec.decode::<TaskMsg>(bytes) else {
                    // Not a task this crate wrote: nobody waits for it.
                    continue;
                };
                let outcome = if refused.is_some() {
                    Err(Refusal::OtherBuild { worker: self.own })
                } else {
                    self.heartbeat.set_busy(true);
                    let outcome = wire::run(&task, self.own, &self.codec);
                    self.heartbeat.set_busy(false);
                    outcome
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
            self.finish(batch.len())?;
            if let Some(refused) = refused {
                return Err(refused);
            }
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
