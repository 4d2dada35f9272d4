//! A pool whose workers are processes on any machines that reach one
//! Redis server: [`RemotePool`].
//!
//! See the [crate docs](crate#remote-pool) for how it works and what it
//! promises.

mod collector;
#[cfg(test)]
mod model;
mod result;
mod wire;
mod worker;

pub use result::{RemoteAsyncResult, RemoteTaskError, TaskTimeoutError};
pub use worker::ServeError;

use crate::queue::generated_consumer_name;
use crate::{RemoteError, RemoteQueue, RemoteQueueBuilder};
use collector::{Caller, Sink};
use multiproc_core::fnref::BuildId;
use result::Slot;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// [`RemotePoolBuilder::prefetch`]'s default.
const DEFAULT_PREFETCH: usize = 64;

/// Settings of a [`RemotePool`], for callers ([`build`](Self::build)) and
/// workers ([`serve`](Self::serve)) alike: both sides of one pool use the
/// same name, prefix and `min_idle`.
///
/// ```no_run
/// use multiproc_redis::RemotePool;
/// use std::time::Duration;
///
/// let pool = RemotePool::builder("redis://127.0.0.1:6379/0", "squares")
///     .min_idle(Duration::from_secs(10))
///     .max_deliveries(3)
///     .build()?;
/// # Ok::<(), multiproc_redis::RemoteError>(())
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct RemotePoolBuilder {
    tasks: RemoteQueueBuilder,
    prefetch: usize,
}

impl RemotePoolBuilder {
    /// The key namespace, as [`RemoteQueueBuilder::prefix`].
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.tasks = self.tasks.prefix(prefix);
        self
    }

    /// How long a task may go without its worker's heartbeat before
    /// another worker takes it over (default 30 s). A worker beats every
    /// quarter of it while a task runs, so tasks may run longer; a worker
    /// killed or stopped mid-task loses its task after this long.
    pub fn min_idle(mut self, min_idle: Duration) -> Self {
        self.tasks = self.tasks.min_idle(min_idle);
        self
    }

    /// Deliveries after which a task whose workers keep dying fails with
    /// [`RemoteTaskError::Poisoned`] (default 5).
    pub fn max_deliveries(mut self, max: u32) -> Self {
        self.tasks = self.tasks.max_deliveries(max);
        self
    }

    /// The longest single wait on the server (default 1 s): how soon a
    /// worker notices a closed pool, and how often the caller looks for
    /// poisoned and lost tasks.
    pub fn block(mut self, block: Duration) -> Self {
        self.tasks = self.tasks.block(block);
        self
    }

    /// As [`RemoteQueueBuilder::connect_timeout`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.tasks = self.tasks.connect_timeout(timeout);
        self
    }

    /// As [`RemoteQueueBuilder::io_timeout`].
    pub fn io_timeout(mut self, timeout: Duration) -> Self {
        self.tasks = self.tasks.io_timeout(timeout);
        self
    }

    /// How long the server may stay out of reach (default 5 s): a
    /// submission fails after it, and so does every outstanding task of a
    /// caller that cannot reach the server for longer. Workers wait for
    /// the server as long as it takes.
    pub fn retry_for(mut self, retry_for: Duration) -> Self {
        self.tasks = self.tasks.retry_for(retry_for);
        self
    }

    /// Bound on tasks submitted and not finished (default: none);
    /// submitting waits for room.
    pub fn maxsize(mut self, maxsize: usize) -> Self {
        self.tasks = self.tasks.maxsize(maxsize);
        self
    }

    /// Worker side: the most tasks a worker takes at a time (default 64,
    /// at most [`MAX_BATCH`](crate::MAX_BATCH); 1 turns batches off). A
    /// worker starts with one task at a time and doubles that while its
    /// batches run within 10 ms, replying and acknowledging each batch
    /// together: short tasks then cost a few round trips per batch, not
    /// per task. Once a task has run 10 ms, the tasks waiting behind it in
    /// its batch are given back to the pool at once (an idle worker takes
    /// them at its next look, within [`block`](Self::block)) and the next
    /// batch is one task again.
    pub fn prefetch(mut self, tasks: usize) -> Self {
        self.prefetch = tasks;
        self
    }

    /// A caller's handle: submits tasks and collects their results on one
    /// thread of its own.
    ///
    /// # Errors
    ///
    /// A setting out of range, or the server out of reach for
    /// `retry_for`.
    pub fn build(self) -> Result<RemotePool, RemoteError> {
        let build = BuildId::current()
            .map_err(|_| RemoteError::InvalidConfig("this program's executable cannot be read"))?;
        let (block, _, retry_for) = self.tasks.waits();
        let reply_name = format!(
            "{}.reply.{}",
            self.tasks.queue_name(),
            generated_consumer_name()
        );
        let replies: RemoteQueue<()> = self.tasks.clone().renamed(&reply_name).build()?;
        let tasks = self.tasks.build_joinable()?;
        let caller = Arc::new(Caller::new(tasks, replies, build, block, retry_for));
        let collecting = Arc::clone(&caller);
        std::thread::Builder::new()
            .name("remote-pool-results".into())
            .spawn(move || collecting.collect())
            .map_err(|_| RemoteError::InvalidConfig("no thread for the pool's results"))?;
        Ok(RemotePool { caller })
    }

    /// Worker mode: runs the pool's tasks in this process until the pool
    /// is [closed](RemotePool::close) and drained. Call it from `main` of
    /// the same program the callers run (same build), e.g. when started
    /// with a `--worker` argument; start as many such processes, on as
    /// many machines, as you want workers.
    ///
    /// Tasks run one at a time, in batches of up to
    /// [`prefetch`](Self::prefetch); a heartbeat thread keeps a long task
    /// from being taken for a dead worker's. While the server is out of reach the
    /// worker waits for it (saying so once on stderr) and goes on when it
    /// is back.
    ///
    /// ```no_run
    /// use multiproc_redis::RemotePool;
    ///
    /// fn square(x: u64) -> u64 { x * x }
    ///
    /// fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     let url = "redis://127.0.0.1:6379/0";
    ///     if std::env::args().any(|a| a == "--worker") {
    ///         RemotePool::builder(url, "squares").serve()?;
    ///         return Ok(());
    ///     }
    ///     let pool = RemotePool::open(url, "squares")?;
    ///     assert_eq!(pool.map(square, 1..=4, None)?, vec![1, 4, 9, 16]);
    ///     pool.close()?;
    ///     Ok(())
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ServeError::OtherBuild`] when a task came from another build (it
    /// ran nothing of it); `Failed` for a setting out of range or a server
    /// that refuses the commands.
    pub fn serve(self) -> Result<(), ServeError> {
        if self.prefetch == 0 || self.prefetch > crate::MAX_BATCH {
            return Err(ServeError::Failed(RemoteError::InvalidConfig(
                "prefetch must be between 1 and MAX_BATCH",
            )));
        }
        worker::serve(self.tasks, self.prefetch)
    }
}

/// Python's `multiprocessing.Pool` over Redis Streams: `apply`,
/// `apply_async`, `map`, `imap_unordered`, whose tasks run in worker
/// processes ([`RemotePoolBuilder::serve`]) on any machines. See the
/// [crate docs](crate#remote-pool).
///
/// A function travels as its offset within the program, with the
/// program's build ([`BuildId`]): workers must run the caller's build,
/// and refuse a task of another one ([`RemoteTaskError::OtherBuild`]).
pub struct RemotePool {
    caller: Arc<Caller>,
}

impl fmt::Debug for RemotePool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemotePool")
            .field("tasks", &self.caller.tasks.name())
            .field("replies", &self.caller.reply_name())
            .finish_non_exhaustive()
    }
}

impl RemotePool {
    /// Settings for the pool named `name` on the server at `url`.
    pub fn builder(url: &str, name: &str) -> RemotePoolBuilder {
        RemotePoolBuilder {
            tasks: RemoteQueue::builder(url, name),
            prefetch: DEFAULT_PREFETCH,
        }
    }

    /// A caller's handle on the pool `name` with the default settings.
    ///
    /// # Errors
    ///
    /// As for [`RemotePoolBuilder::build`].
    pub fn open(url: &str, name: &str) -> Result<Self, RemoteError> {
        Self::builder(url, name).build()
    }

    /// Submits `f` over `items` in chunks of `chunksize`; each item's
    /// outcome goes to `deliver(index, outcome)`.
    fn submit<A, R>(
        &self,
        f: fn(A) -> R,
        items: Vec<A>,
        chunksize: usize,
        deliver: Arc<dyn Fn(usize, Result<R, RemoteTaskError>) + Send + Sync>,
    ) where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let (runner, target) = wire::name_of(f);
        let chunksize = chunksize.max(1);
        let mut chunks = Vec::with_capacity(items.len().div_ceil(chunksize));
        let mut items = items.into_iter();
        let mut start = 0;
        loop {
            let chunk: Vec<A> = items.by_ref().take(chunksize).collect();
            if chunk.is_empty() {
                break;
            }
            let len = chunk.len();
            let deliver = Arc::clone(&deliver);
            let codec = self.caller.codec;
            let sink: Sink = Box::new(move |outcome| {
                let values = outcome.and_then(|bytes| {
                    codec
                        .decode::<Vec<Result<R, String>>>(&bytes)
                        .map_err(|e| RemoteTaskError::Codec(e.to_string()))
                });
                match values {
                    Ok(values) if values.len() == len => {
                        for (i, v) in values.into_iter().enumerate() {
                            deliver(start + i, v.map_err(RemoteTaskError::Panicked));
                        }
                    }
                    Ok(values) => {
                        let e = RemoteTaskError::Codec(format!(
                            "a chunk of {len} items returned {} results",
                            values.len()
                        ));
                        (0..len).for_each(|i| deliver(start + i, Err(e.clone())));
                    }
                    Err(e) => (0..len).for_each(|i| deliver(start + i, Err(e.clone()))),
                }
            });
            match self.caller.codec.encode(&chunk) {
                Ok(args) => chunks.push((args, sink)),
                Err(e) => sink(Err(RemoteTaskError::Codec(e.to_string()))),
            }
            start += len;
        }
        self.caller.submit(runner, target, chunks);
    }

    /// Runs `f(args)` in a worker and waits for the value.
    ///
    /// # Errors
    ///
    /// The task's [`RemoteTaskError`].
    pub fn apply<A, R>(&self, f: fn(A) -> R, args: A) -> Result<R, RemoteTaskError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.apply_async(f, args).get()
    }

    /// Submits `f(args)`; the value comes through the result.
    pub fn apply_async<A, R>(&self, f: fn(A) -> R, args: A) -> RemoteAsyncResult<R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let slot = Slot::new();
        let setting = Arc::clone(&slot);
        self.submit(f, vec![args], 1, Arc::new(move |_, v| setting.set(v)));
        RemoteAsyncResult::new(slot)
    }

    /// `f` over every item, in order. `chunksize` `None` is 1; larger
    /// chunks make fewer round trips (a chunk is one task: it runs, fails
    /// or is re-delivered as a whole).
    ///
    /// # Errors
    ///
    /// The first failed item's [`RemoteTaskError`] (in input order).
    pub fn map<A, R, I>(
        &self,
        f: fn(A) -> R,
        items: I,
        chunksize: Option<usize>,
    ) -> Result<Vec<R>, RemoteTaskError>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let results = self.imap_unordered_indexed(f, items, chunksize);
        let mut values: Vec<Option<Result<R, RemoteTaskError>>> =
            (0..results.len).map(|_| None).collect();
        for (i, v) in results {
            values[i] = Some(v);
        }
        values
            .into_iter()
            .map(|v| v.unwrap_or(Err(RemoteTaskError::Abandoned)))
            .collect()
    }

    /// `f` over every item, results in the order they come. The items are
    /// submitted at once.
    pub fn imap_unordered<A, R, I>(
        &self,
        f: fn(A) -> R,
        items: I,
        chunksize: Option<usize>,
    ) -> impl Iterator<Item = Result<R, RemoteTaskError>> + use<A, R, I>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.imap_unordered_indexed(f, items, chunksize)
            .map(|(_, v)| v)
    }

    fn imap_unordered_indexed<A, R, I>(
        &self,
        f: fn(A) -> R,
        items: I,
        chunksize: Option<usize>,
    ) -> Unordered<R>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let items: Vec<A> = items.into_iter().collect();
        let len = items.len();
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        self.submit(
            f,
            items,
            chunksize.unwrap_or(1),
            Arc::new(move |i, v| {
                let _ = tx.lock().unwrap_or_else(|p| p.into_inner()).send((i, v));
            }),
        );
        Unordered { rx, len, left: len }
    }

    /// Closes the pool for every caller and worker: submissions fail with
    /// [`RemoteTaskError::Closed`], workers finish what was submitted and
    /// then [`serve`](RemotePoolBuilder::serve) returns.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached.
    pub fn close(&self) -> Result<(), RemoteError> {
        self.caller.tasks.close()
    }

    /// Replies dropped because their task already had its result: tasks
    /// that ran more than once (a worker stalled or died after running
    /// one, and another ran it again). Each task's result reaches the
    /// caller once all the same.
    #[must_use]
    pub fn duplicate_replies(&self) -> u64 {
        self.caller.duplicates()
    }

    /// Deletes the pool's keys on the server (tasks, dead letters, closed
    /// flag). Outstanding tasks then fail as [`RemoteTaskError::Lost`].
    ///
    /// # Errors
    ///
    /// When the server cannot be reached.
    pub fn destroy(&self) -> Result<(), RemoteError> {
        self.caller.tasks.destroy()
    }
}

impl Drop for RemotePool {
    /// The result thread goes on until the outstanding tasks are settled
    /// (at most the pool's `retry_for` more), then removes this caller's
    /// reply queue.
    fn drop(&mut self) {
        self.caller.stop();
    }
}

/// Results as they come, with their input index.
struct Unordered<R> {
    rx: mpsc::Receiver<(usize, Result<R, RemoteTaskError>)>,
    len: usize,
    left: usize,
}

impl<R> Iterator for Unordered<R> {
    type Item = (usize, Result<R, RemoteTaskError>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        // Every sink is called exactly once (by a reply, a dead letter, a
        // loss, a failure or the collector's end), so the channel yields
        // every index before its senders go.
        let got = self.rx.recv().ok()?;
        self.left -= 1;
        Some(got)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}
