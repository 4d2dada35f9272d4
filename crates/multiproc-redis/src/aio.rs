//! [`AsyncRemoteQueue`] and [`AsyncRemoteJoinableQueue`]: the remote queues
//! with `async` operations, on tokio (feature `tokio`) or smol (feature
//! `smol`), over redis's async connections. No thread per waiter and no
//! blocking call: every wait is a future on the runtime's reactor and
//! timers.
//!
//! They are the same queues as [`RemoteQueue`](crate::RemoteQueue) and
//! [`RemoteJoinableQueue`](crate::RemoteJoinableQueue): the same keys,
//! stream entries, Lua scripts, consumer group and error types, so blocking
//! and async handles of one queue, in any processes, deliver to each other.
//! They are built from the same [`RemoteQueueBuilder`], with its settings
//! (`prefix`, `maxsize`, `min_idle`, `max_deliveries`, `block`, the
//! timeouts, `retry_for`, `max_message`, `read_ahead`, `consumer_name`):
//! [`build_async`](RemoteQueueBuilder::build_async) and
//! [`build_async_joinable`](RemoteQueueBuilder::build_async_joinable).
//!
//! # Runtimes
//!
//! With only one of the features on, that runtime is used. With both, the
//! runtime is chosen where each connection is made and each timer set: a
//! tokio runtime if one is current
//! (`tokio::runtime::Handle::try_current()`), else smol's (async-io) —
//! the rule the redis client itself follows. On tokio, the runtime needs
//! its I/O and time drivers (`enable_all`).
//!
//! On tokio:
//!
//! ```no_run
//! # #[cfg(feature = "tokio")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use multiproc_redis::{AsyncRemoteQueue, RemoteQueue};
//! use std::time::Duration;
//!
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! rt.block_on(async {
//!     let q: AsyncRemoteQueue<String> = RemoteQueue::builder("redis://127.0.0.1:6379/0", "greetings")
//!         .build_async()
//!         .await?;
//!     q.put("hello".to_string()).await?;
//!     assert_eq!(q.get_timeout(Duration::from_secs(5)).await?, "hello");
//!     Ok(())
//! })
//! # }
//! # #[cfg(not(feature = "tokio"))]
//! # fn main() {}
//! ```
//!
//! On smol:
//!
//! ```no_run
//! # #[cfg(feature = "smol")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use multiproc_redis::{AsyncRemoteJoinableQueue, RemoteQueue};
//!
//! smol::block_on(async {
//!     let jobs: AsyncRemoteJoinableQueue<u64> = RemoteQueue::builder("redis://127.0.0.1:6379/0", "jobs")
//!         .build_async_joinable()
//!         .await?;
//!     jobs.put(7).await?;
//!     let n = jobs.get().await?;
//!     let _ = n * n; // the work
//!     jobs.task_done().await?;
//!     Ok(())
//! })
//! # }
//! # #[cfg(not(feature = "smol"))]
//! # fn main() {}
//! ```
//!
//! # Connections and bounds
//!
//! A handle has two multiplexed connections, made when first needed: one
//! for puts and bookkeeping, one for gets (a get waits on the server with
//! `XREADGROUP … BLOCK`, which holds up every other command on its
//! connection). Every network wait is bounded as for the blocking queue:
//! connecting by `connect_timeout`, each reply by `io_timeout` (cut to the
//! operation's deadline, not below 50 ms), a server-side wait by `block`;
//! a timed operation fails with [`RemoteError::Unavailable`] by its
//! deadline (plus at most 50 ms) when the server is away, a blocking one
//! after `retry_for`, and the handle reconnects, with back-off, once the
//! server answers again.
//!
//! # Cancellation
//!
//! Dropping a get's future (a `select!`, a timeout around it) loses no
//! message. A get does not wait for anything once it has its message: a
//! message the get had already taken from the server stays in the handle,
//! and the handle's next get returns it; one it had read on the server
//! without seeing the reply stays pending in the group and is delivered
//! again after [`min_idle`](RemoteQueueBuilder::min_idle) — at least once,
//! as for a consumer that dies. A connection whose command was cut short
//! is dropped and made again. A put whose future is dropped may or may not
//! have added its message.
//!
//! For that, a plain queue's get acknowledges the message it returns with
//! the handle's next operation (any of them, before its own command), not
//! before returning it: a get that returned has nothing left to do. A
//! handle that does nothing more after a get (or is dropped) leaves that
//! message pending, and it is delivered again after `min_idle`.
//!
//! # Dropping a handle
//!
//! A dropped async handle sends nothing (there is no runtime to run on in
//! `drop`): messages it read ahead and did not hand out, and those its
//! gets returned since its last operation, are delivered to another
//! consumer after `min_idle`, and its consumer name stays in the group.

use crate::error::{
    GetError, GetTimeoutError, JoinTimeoutError, PutError, PutTimeoutError, RemoteError,
    TaskDoneError, TryGetError,
};
use crate::link::{FIRST_PAUSE, GiveUp, IDLE_CHECK, MAX_PAUSE, MIN_IO_WAIT};
use crate::parse::{self, Entry, PutReply, TakeReply};
use crate::queue::{
    FIRST_POLL, MAX_POLL, RecvFail, SendFail, Shared, Wait, generated_consumer_name, group_created,
    is_nogroup_error,
};
use crate::{DeadReason, RemoteQueueBuilder};
use async_lock::Mutex;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisResult, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

// ---- the runtime's timers ----

/// Waits `d` on the runtime's timer: tokio's if a tokio runtime is current
/// (or only tokio is enabled), else async-io's.
pub(crate) async fn sleep(d: Duration) {
    #[cfg(all(feature = "tokio", feature = "smol"))]
    {
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::time::sleep(d).await;
        } else {
            async_io::Timer::after(d).await;
        }
    }
    #[cfg(all(feature = "tokio", not(feature = "smol")))]
    tokio::time::sleep(d).await;
    #[cfg(all(feature = "smol", not(feature = "tokio")))]
    {
        async_io::Timer::after(d).await;
    }
}

/// `f`'s output, or `None` if it did not finish within `d` (`f` is
/// dropped then).
pub(crate) async fn timeout<F: Future>(d: Duration, f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut timer = std::pin::pin!(sleep(d));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = f.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

fn timed_out() -> RemoteError {
    RemoteError::from_redis(redis::RedisError::from(std::io::Error::from(
        std::io::ErrorKind::TimedOut,
    )))
}

// ---- one async connection ----

/// One multiplexed connection, made when first needed and made again after
/// it broke or a command on it timed out or was cancelled.
struct AsyncLink {
    con: Option<MultiplexedConnection>,
    /// A command is on its way: still set at the next call, its future was
    /// dropped midway, and the connection is dropped (a cut-short
    /// `XREADGROUP BLOCK` would hold up the next command).
    in_flight: bool,
    /// When the connection last carried a command: one idle for
    /// [`IDLE_CHECK`] is asked a `PING` first, as the blocking queue's are.
    used_at: Instant,
}

impl AsyncLink {
    fn new() -> Self {
        Self {
            con: None,
            in_flight: false,
            used_at: Instant::now(),
        }
    }

    /// Whether a connection is up (and no command was cut short on it).
    fn is_connected(&self) -> bool {
        self.con.is_some() && !self.in_flight
    }

    async fn connect(
        &mut self,
        s: &Shared,
        give_up: GiveUp,
    ) -> Result<MultiplexedConnection, RemoteError> {
        let mut pause = FIRST_PAUSE;
        loop {
            let limit = match give_up {
                GiveUp::Once => s.connect_timeout,
                GiveUp::At(t) => s
                    .connect_timeout
                    .min(t.saturating_duration_since(Instant::now()))
                    .max(Duration::from_millis(1)),
            };
            // Replies are timed by `call`, per command.
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(limit))
                .set_response_timeout(None);
            let attempt = timeout(
                limit + MIN_IO_WAIT,
                s.client
                    .get_multiplexed_async_connection_with_config(&config),
            )
            .await
            .map_or_else(|| Err(timed_out()), |r| r.map_err(RemoteError::from_redis));
            match attempt {
                Ok(con) => {
                    self.con = Some(con.clone());
                    return Ok(con);
                }
                Err(e) => {
                    let retry = match give_up {
                        GiveUp::Once => false,
                        GiveUp::At(t) => e.is_unavailable() && Instant::now() + pause < t,
                    };
                    if !retry {
                        return Err(e);
                    }
                    sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            }
        }
    }

    /// Runs `f` on the connection (connecting first if there is none),
    /// waiting at most `read_timeout` for it. An error that leaves the
    /// connection in doubt (I/O, timeout, a reply not understood) drops it.
    async fn call<R, F, Fut>(
        &mut self,
        s: &Shared,
        give_up: GiveUp,
        read_timeout: Duration,
        f: F,
    ) -> Result<R, RemoteError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<R>>,
    {
        if std::mem::take(&mut self.in_flight) {
            self.con = None;
        }
        if self.used_at.elapsed() >= IDLE_CHECK {
            self.check(read_timeout).await?;
        }
        self.used_at = Instant::now();
        let con = match &self.con {
            Some(con) => con.clone(),
            None => self.connect(s, give_up).await?,
        };
        self.in_flight = true;
        let outcome = timeout(read_timeout, f(con)).await;
        self.in_flight = false;
        let e = match outcome {
            Some(Ok(v)) => return Ok(v),
            Some(Err(e)) => RemoteError::from_redis(e),
            None => timed_out(),
        };
        if e.is_unavailable() || e.is_protocol() {
            self.con = None;
        }
        Err(e)
    }

    /// Asks the idle connection a `PING`: drops it when the server closed
    /// it (the call connects again); fails when the server does not
    /// answer within `read_timeout` (a stalled server).
    async fn check(&mut self, read_timeout: Duration) -> Result<(), RemoteError> {
        let Some(mut con) = self.con.clone() else {
            return Ok(());
        };
        self.in_flight = true;
        let ping = timeout(read_timeout, redis::cmd("PING").query_async::<()>(&mut con)).await;
        self.in_flight = false;
        match ping {
            Some(Ok(())) => Ok(()),
            None => {
                self.con = None;
                Err(timed_out())
            }
            Some(Err(_)) => {
                self.con = None;
                Ok(())
            }
        }
    }

    /// [`call`](Self::call) for a command that needs the consumer group,
    /// creating the group once if the server lost it.
    async fn with_group<R, F, Fut>(
        &mut self,
        s: &Shared,
        give_up: GiveUp,
        read_timeout: Duration,
        f: F,
    ) -> Result<R, RemoteError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<R>>,
    {
        match self.call(s, give_up, read_timeout, &f).await {
            Err(e) if is_nogroup_error(&e) => {
                self.create_group(s, give_up).await?;
                self.call(s, give_up, read_timeout, &f).await
            }
            other => other,
        }
    }

    async fn create_group(&mut self, s: &Shared, give_up: GiveUp) -> Result<(), RemoteError> {
        let created = self
            .call(s, give_up, s.io_timeout, |mut con| async move {
                s.create_group_cmd().query_async::<()>(&mut con).await
            })
            .await;
        group_created(created)
    }
}

// ---- handles ----

/// A message taken from the stream, waiting in the handle to be handed out.
struct Delivery {
    id: String,
    deliveries: u64,
    payload: Vec<u8>,
    read_at: Instant,
}

struct Getter {
    link: AsyncLink,
    cursor: String,
    /// Messages taken and not handed out yet, oldest first.
    ahead: VecDeque<Delivery>,
    /// Plain queue: ids of messages handed out and not yet acknowledged
    /// (the handle's next operation does it).
    to_ack: Vec<String>,
    scanned_at: Option<Instant>,
}

enum Taken {
    Some,
    Closed,
    Empty,
}

/// An async [`RemoteQueue`](crate::RemoteQueue): the same queue (keys,
/// entries, scripts, errors), with `async` puts and gets on tokio or smol.
/// Built by [`RemoteQueueBuilder::build_async`]; see the
/// [module docs](crate::aio) for the runtimes, the bounds on every wait
/// and cancellation.
///
/// A handle is one consumer in the queue's group, with two connections
/// (puts and bookkeeping; gets). Gets on one handle take turns; give each
/// task that gets concurrently its own handle (a clone is a new consumer).
pub struct AsyncRemoteQueue<T> {
    shared: Arc<Shared>,
    consumer: String,
    link: Mutex<AsyncLink>,
    getter: Mutex<Getter>,
    /// Ids and delivery counts of messages got and not finished (joinable
    /// queues only), oldest first.
    outstanding: std::sync::Mutex<VecDeque<(String, u64)>>,
    _marker: PhantomData<fn(T) -> T>,
}

impl<T> Clone for AsyncRemoteQueue<T> {
    fn clone(&self) -> Self {
        Self::with_shared(Arc::clone(&self.shared), None)
    }
}

impl<T> fmt::Debug for AsyncRemoteQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncRemoteQueue")
            .field("stream", &self.shared.stream)
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

impl RemoteQueueBuilder {
    /// As [`build`](Self::build), for an [`AsyncRemoteQueue`]: connects
    /// (on the current runtime), creates the stream and its group if they
    /// do not exist, and returns the handle.
    ///
    /// # Errors
    ///
    /// As for [`build`](Self::build).
    pub async fn build_async<T>(self) -> Result<AsyncRemoteQueue<T>, RemoteError> {
        self.build_async_with(true).await
    }

    /// As [`build_joinable`](Self::build_joinable), for an
    /// [`AsyncRemoteJoinableQueue`].
    ///
    /// # Errors
    ///
    /// As for [`build`](Self::build).
    pub async fn build_async_joinable<T>(self) -> Result<AsyncRemoteJoinableQueue<T>, RemoteError> {
        Ok(AsyncRemoteJoinableQueue {
            queue: self.build_async_with(false).await?,
        })
    }

    async fn build_async_with<T>(
        self,
        ack_on_get: bool,
    ) -> Result<AsyncRemoteQueue<T>, RemoteError> {
        let (shared, consumer) = self.into_shared(ack_on_get)?;
        let queue = AsyncRemoteQueue::with_shared(shared, consumer);
        let s = &*queue.shared;
        let give_up = GiveUp::At(Instant::now() + s.retry_for);
        queue.link.lock().await.create_group(s, give_up).await?;
        Ok(queue)
    }
}

impl<T> AsyncRemoteQueue<T> {
    /// The queue named `name` on the server at `url`, with the default
    /// settings (unbounded).
    ///
    /// # Errors
    ///
    /// As for [`RemoteQueueBuilder::build`].
    pub async fn open(url: &str, name: &str) -> Result<Self, RemoteError> {
        crate::RemoteQueue::builder(url, name).build_async().await
    }

    fn with_shared(shared: Arc<Shared>, consumer: Option<String>) -> Self {
        Self {
            shared,
            consumer: consumer.unwrap_or_else(generated_consumer_name),
            link: Mutex::new(AsyncLink::new()),
            getter: Mutex::new(Getter {
                link: AsyncLink::new(),
                cursor: "0-0".to_owned(),
                ahead: VecDeque::new(),
                to_ack: Vec::new(),
                scanned_at: None,
            }),
            outstanding: std::sync::Mutex::new(VecDeque::new()),
            _marker: PhantomData,
        }
    }

    fn outstanding(&self) -> std::sync::MutexGuard<'_, VecDeque<(String, u64)>> {
        self.outstanding
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The queue's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The key of the queue's stream.
    #[must_use]
    pub fn stream_key(&self) -> &str {
        &self.shared.stream
    }

    /// This handle's consumer name in the group.
    #[must_use]
    pub fn consumer_name(&self) -> &str {
        &self.consumer
    }

    /// The bound on messages not yet acknowledged, if any.
    #[must_use]
    pub fn maxsize(&self) -> Option<usize> {
        (self.shared.maxsize > 0)
            .then(|| usize::try_from(self.shared.maxsize).unwrap_or(usize::MAX))
    }

    /// Runs one bookkeeping command on the put connection.
    async fn control<R, F, Fut>(&self, f: F) -> Result<R, RemoteError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<R>>,
    {
        let s = &*self.shared;
        self.ack_before_other(None).await;
        let mut link = self.link.lock().await;
        link.with_group(s, s.give_up(None), s.io_timeout, f).await
    }

    /// Messages in the stream not yet acknowledged, as
    /// [`RemoteQueue::qsize`](crate::RemoteQueue::qsize).
    ///
    /// # Errors
    ///
    /// When the server cannot be asked.
    pub async fn qsize(&self) -> Result<usize, RemoteError> {
        let s = &*self.shared;
        let n: u64 = self
            .control(|mut con| async move {
                redis::cmd("XLEN")
                    .arg(&s.stream)
                    .query_async(&mut con)
                    .await
            })
            .await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Closes the queue for every handle everywhere, blocking and async,
    /// as [`RemoteQueue::close`](crate::RemoteQueue::close).
    ///
    /// # Errors
    ///
    /// When the server cannot be reached.
    pub async fn close(&self) -> Result<(), RemoteError> {
        let s = &*self.shared;
        self.control(|mut con| async move {
            redis::cmd("SET")
                .arg(&s.closed)
                .arg(1)
                .query_async::<()>(&mut con)
                .await
        })
        .await
    }

    // ---- puts ----

    /// Puts every payload or none (one script call), polling with back-off
    /// while the queue is full.
    async fn send<B: AsRef<[u8]> + Sync>(
        &self,
        payloads: &[B],
        wait: Wait,
    ) -> Result<(), SendFail> {
        let s = &*self.shared;
        if !s.check_batch(payloads)? {
            return Ok(());
        }
        let deadline = wait.deadline();
        let mut pause = FIRST_POLL;
        self.ack_before_other(deadline).await;
        loop {
            let put = {
                let mut link = self.link.lock().await;
                link.call(
                    s,
                    s.give_up(deadline),
                    s.io_wait(deadline),
                    |mut con| async move {
                        s.put_script(payloads, None)
                            .invoke_async::<i64>(&mut con)
                            .await
                    },
                )
                .await
            };
            match put
                .and_then(|n| parse::put_reply(n, false))
                .map_err(SendFail::Failed)?
            {
                PutReply::Added(_) => return Ok(()),
                PutReply::Closed => return Err(SendFail::Closed),
                PutReply::Full => {}
            }
            let pause_now = match wait {
                Wait::Never => return Err(SendFail::Full),
                Wait::Forever => pause,
                Wait::Until(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(SendFail::Timeout);
                    }
                    pause.min(left)
                }
            };
            sleep(pause_now).await;
            pause = (pause * 2).min(MAX_POLL);
        }
    }

    /// Puts raw bytes, waiting while the queue is full.
    ///
    /// # Errors
    ///
    /// As for [`RemoteQueue::put_bytes`](crate::RemoteQueue::put_bytes).
    pub async fn put_bytes<'a>(&self, data: &'a [u8]) -> Result<(), PutError<&'a [u8]>> {
        self.send(&[data], Wait::Forever)
            .await
            .map_err(|e| e.into_put(data))
    }

    /// Puts raw bytes, waiting at most `timeout` for room and for the
    /// server.
    ///
    /// # Errors
    ///
    /// `Timeout`, `Closed`, or `Failed`.
    pub async fn put_bytes_timeout<'a>(
        &self,
        data: &'a [u8],
        timeout: Duration,
    ) -> Result<(), PutTimeoutError<&'a [u8]>> {
        self.send(&[data], Wait::after(timeout))
            .await
            .map_err(|e| e.into_put_timeout(data))
    }

    // ---- gets ----

    /// Makes sure a message waits in the handle: takes from the server
    /// (up to `read_ahead`) unless one does already.
    async fn fill(&self, g: &mut Getter, wait: Wait) -> Result<(), RecvFail> {
        let s = &*self.shared;
        if self.fresh_ahead(g).await {
            return Ok(());
        }
        let deadline = wait.deadline();
        let want = s.read_ahead;
        let mut failing_since: Option<Instant> = None;
        loop {
            let give_up = match (wait, failing_since) {
                (Wait::Never, _) => GiveUp::Once,
                (_, None) => s.give_up(deadline),
                (_, Some(t)) => {
                    let budget = t + s.retry_for;
                    GiveUp::At(deadline.map_or(budget, |d| d.min(budget)))
                }
            };
            let fast = g.scanned_at.is_some_and(|t| t.elapsed() < s.scan_every());
            if fast {
                match self.read_new(g, give_up, None, deadline, want).await {
                    Ok(true) => return Ok(()),
                    Ok(false) => g.scanned_at = None,
                    Err(e) if e.is_unavailable() => g.scanned_at = None,
                    Err(e) => return Err(RecvFail::Failed(e)),
                }
            }
            let step = self.take_step(g, give_up, deadline, want).await;
            let outcome = match (step, give_up) {
                (Err(e), GiveUp::At(limit)) if e.is_unavailable() => {
                    failing_since.get_or_insert_with(Instant::now);
                    if Instant::now() >= limit {
                        return Err(RecvFail::Failed(e));
                    }
                    sleep(FIRST_PAUSE).await;
                    continue;
                }
                (other, _) => other.map_err(RecvFail::Failed)?,
            };
            failing_since = None;
            match outcome {
                Taken::Some => return Ok(()),
                Taken::Closed => return Err(RecvFail::Closed),
                Taken::Empty => {}
            }
            let block = match wait {
                Wait::Never => return Err(RecvFail::Empty),
                Wait::Forever => s.block,
                Wait::Until(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left < Duration::from_millis(1) {
                        return Err(RecvFail::Empty);
                    }
                    s.block.min(left)
                }
            };
            match self.read_new(g, give_up, Some(block), deadline, want).await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) if e.is_unavailable() => {
                    failing_since.get_or_insert_with(Instant::now);
                }
                Err(e) => return Err(RecvFail::Failed(e)),
            }
        }
    }

    /// Whether a message waits in the handle to be handed out. Unhanded
    /// messages read half `min_idle` ago or longer could soon be taken over
    /// by another consumer: those are given back to the group instead
    /// (best effort).
    async fn fresh_ahead(&self, g: &mut Getter) -> bool {
        let s = &*self.shared;
        let Some(front) = g.ahead.front() else {
            return false;
        };
        if front.read_at.elapsed() < s.min_idle / 2 {
            return true;
        }
        let stale: Vec<(String, u64)> = g.ahead.drain(..).map(|d| (d.id, d.deliveries)).collect();
        let consumer = &self.consumer;
        let stale = &stale;
        let _ = g
            .link
            .call(s, GiveUp::Once, s.io_timeout, |mut con| async move {
                s.release_script(consumer, stale.iter().map(|(id, n)| (id.as_str(), *n)))
                    .invoke_async::<i64>(&mut con)
                    .await
            })
            .await;
        false
    }

    async fn take_step(
        &self,
        g: &mut Getter,
        give_up: GiveUp,
        deadline: Option<Instant>,
        want: usize,
    ) -> Result<Taken, RemoteError> {
        let s = &*self.shared;
        let read_at = Instant::now();
        g.scanned_at = Some(read_at);
        let (consumer, cursor) = (&self.consumer, &g.cursor.clone());
        let reply: Value = g
            .link
            .with_group(s, give_up, s.io_wait(deadline), |mut con| async move {
                s.take_script(consumer, cursor, want)
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        let (cursor, found) = parse::take_reply(reply, want)?;
        g.cursor = cursor;
        match found {
            TakeReply::Closed => Ok(Taken::Closed),
            TakeReply::Empty => Ok(Taken::Empty),
            TakeReply::Some(taken) => self
                .accept_all(g, taken, read_at)
                .await
                .map(|()| Taken::Some),
        }
    }

    async fn read_new(
        &self,
        g: &mut Getter,
        give_up: GiveUp,
        block: Option<Duration>,
        deadline: Option<Instant>,
        want: usize,
    ) -> Result<bool, RemoteError> {
        let s = &*self.shared;
        let read_timeout = block.unwrap_or(Duration::ZERO) + s.io_wait(deadline);
        let read_at = Instant::now();
        let consumer = &self.consumer;
        let reply: Value = g
            .link
            .with_group(s, give_up, read_timeout, |mut con| async move {
                s.read_cmd(consumer, want, block)
                    .query_async(&mut con)
                    .await
            })
            .await?;
        match parse::read_reply(reply, want)? {
            None => Ok(false),
            Some(taken) => self.accept_all(g, taken, read_at).await.map(|()| true),
        }
    }

    /// Keeps the good entries in the handle; moves the others to the dead
    /// letters. Fails with the first one's error only when none was good.
    async fn accept_all(
        &self,
        g: &mut Getter,
        taken: Vec<Entry>,
        read_at: Instant,
    ) -> Result<(), RemoteError> {
        let mut bad = Vec::new();
        for (id, deliveries, fields) in taken {
            match self.shared.check_payload(fields) {
                Ok(payload) => g.ahead.push_back(Delivery {
                    id,
                    deliveries,
                    payload,
                    read_at,
                }),
                Err((reason, e)) => bad.push((id, deliveries, reason, e)),
            }
        }
        let none_good = g.ahead.is_empty();
        let mut first_error = None;
        for (id, deliveries, reason, e) in bad {
            self.dead_letter(&mut g.link, &id, deliveries, reason).await;
            first_error.get_or_insert(e);
        }
        match first_error {
            Some(e) if none_good => Err(e),
            _ => Ok(()),
        }
    }

    /// Moves a message this handle holds to the dead letters; best effort.
    async fn dead_letter(
        &self,
        link: &mut AsyncLink,
        id: &str,
        deliveries: u64,
        reason: DeadReason,
    ) {
        let s = &*self.shared;
        let _ = link
            .call(s, GiveUp::Once, s.io_timeout, |mut con| async move {
                s.dead_script(id, deliveries, reason)
                    .invoke_async::<i64>(&mut con)
                    .await
            })
            .await;
    }

    /// Acknowledges and deletes `ids` on `link`, waiting for the reply.
    async fn ack(
        &self,
        link: &mut AsyncLink,
        ids: &[&str],
        deadline: Option<Instant>,
    ) -> Result<(), RemoteError> {
        let s = &*self.shared;
        link.call(
            s,
            s.give_up(deadline),
            s.io_wait(deadline),
            |mut con| async move { s.ack_script(ids).invoke_async::<i64>(&mut con).await },
        )
        .await
        .map(drop)
    }

    /// Acknowledges the messages the plain queue's gets handed out since
    /// the last time, within `deadline`, over the gets' connection if it
    /// is up (best effort: one whose acknowledgement fails, is cut short or
    /// waits for a connection is delivered again after `min_idle`, unless
    /// a later operation acknowledges it first).
    async fn ack_handed_out(&self, g: &mut Getter, deadline: Option<Instant>) {
        if g.to_ack.is_empty() || !g.link.is_connected() {
            return;
        }
        let s = &*self.shared;
        let ids: Vec<&str> = g.to_ack.iter().map(String::as_str).collect();
        let ids = &ids;
        let acked = g
            .link
            .call(s, GiveUp::Once, s.io_wait(deadline), |mut con| async move {
                s.ack_script(ids).invoke_async::<i64>(&mut con).await
            })
            .await;
        if acked.is_ok() {
            g.to_ack.clear();
        }
    }

    /// [`ack_handed_out`](Self::ack_handed_out) before an operation on the
    /// other connection, unless a get of this handle runs now (it does it).
    async fn ack_before_other(&self, deadline: Option<Instant>) {
        if let Some(mut g) = self.getter.try_lock() {
            self.ack_handed_out(&mut g, deadline).await;
        }
    }

    /// Hands out the oldest message waiting in the handle, after checking
    /// it with `check` (a typed get decodes it; a message that fails moves
    /// to the dead letters). Nothing is awaited once the message is taken
    /// from the handle: the plain queue's acknowledgement is left to the
    /// handle's next operation, so a dropped future never loses it.
    async fn hand_out<R>(
        &self,
        g: &mut Getter,
        check: impl FnOnce(&[u8]) -> Result<R, RemoteError>,
    ) -> Result<R, RecvFail> {
        let front = g.ahead.front().expect("a filled getter holds a message");
        let value = match check(&front.payload) {
            Ok(v) => v,
            Err(e) => {
                // Cut short, the message stays pending: it comes again.
                let (id, deliveries) = (front.id.clone(), front.deliveries);
                self.dead_letter(&mut g.link, &id, deliveries, DeadReason::Undecodable)
                    .await;
                g.ahead.pop_front();
                return Err(RecvFail::Failed(e));
            }
        };
        let d = g.ahead.pop_front().expect("just seen");
        if self.shared.ack_on_get {
            g.to_ack.push(d.id);
        } else {
            self.outstanding().push_back((d.id, d.deliveries));
        }
        Ok(value)
    }

    async fn get_with<R>(
        &self,
        wait: Wait,
        check: impl FnOnce(&[u8]) -> Result<R, RemoteError>,
    ) -> Result<R, RecvFail> {
        let mut g = self.getter.lock().await;
        self.ack_handed_out(&mut g, wait.deadline()).await;
        self.fill(&mut g, wait).await?;
        self.hand_out(&mut g, check).await
    }

    /// Gets raw bytes, waiting for a message.
    ///
    /// # Errors
    ///
    /// As for [`RemoteQueue::get_bytes`](crate::RemoteQueue::get_bytes).
    pub async fn get_bytes(&self) -> Result<Vec<u8>, GetError> {
        self.get_with(Wait::Forever, |p| Ok(p.to_vec()))
            .await
            .map_err(RecvFail::into_get)
    }

    /// Gets raw bytes, waiting at most `timeout` (for a message, and for
    /// the server).
    ///
    /// # Errors
    ///
    /// `Timeout`, `Closed` or `Failed`.
    pub async fn get_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>, GetTimeoutError> {
        self.get_with(Wait::after(timeout), |p| Ok(p.to_vec()))
            .await
            .map_err(RecvFail::into_get_timeout)
    }
}

impl<T: Serialize + DeserializeOwned> AsyncRemoteQueue<T> {
    fn decoder(&self) -> impl FnOnce(&[u8]) -> Result<T, RemoteError> + '_ {
        |p| self.shared.codec.decode::<T>(p).map_err(RemoteError::Codec)
    }

    /// Puts `item`, waiting while the queue is full (polling with back-off
    /// from 1 ms to 50 ms on the runtime's timer).
    ///
    /// # Errors
    ///
    /// `Closed`, or `Failed` (codec, size, server); the item is handed back.
    pub async fn put(&self, item: T) -> Result<(), PutError<T>> {
        let bytes = match self.shared.encode(&item) {
            Ok(b) => b,
            Err(e) => return Err(PutError::Failed(item, e)),
        };
        self.send(&[bytes], Wait::Forever)
            .await
            .map_err(|e| e.into_put(item))
    }

    /// Puts `item`, waiting at most `timeout` for room and for the server.
    ///
    /// # Errors
    ///
    /// `Timeout`, `Closed` or `Failed`; the item is handed back.
    pub async fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutTimeoutError<T>> {
        let bytes = match self.shared.encode(&item) {
            Ok(b) => b,
            Err(e) => return Err(PutTimeoutError::Failed(item, e)),
        };
        self.send(&[bytes], Wait::after(timeout))
            .await
            .map_err(|e| e.into_put_timeout(item))
    }

    /// Gets an item, waiting for one.
    ///
    /// # Errors
    ///
    /// `Closed` once the queue is closed and drained; `Failed` when the
    /// server stays out of reach for [`retry_for`](RemoteQueueBuilder::retry_for),
    /// or the message does not decode (it moves to the dead letters).
    pub async fn get(&self) -> Result<T, GetError> {
        self.get_with(Wait::Forever, self.decoder())
            .await
            .map_err(RecvFail::into_get)
    }

    /// Gets an item if one is there now (one round trip at most).
    ///
    /// # Errors
    ///
    /// `Empty`, `Closed` or `Failed`.
    #[doc(alias = "get_nowait")]
    pub async fn try_get(&self) -> Result<T, TryGetError> {
        self.get_with(Wait::Never, self.decoder())
            .await
            .map_err(RecvFail::into_try_get)
    }

    /// Gets an item, waiting at most `timeout` (for an item, and for the
    /// server).
    ///
    /// # Errors
    ///
    /// `Timeout`, `Closed` or `Failed`.
    pub async fn get_timeout(&self, timeout: Duration) -> Result<T, GetTimeoutError> {
        self.get_with(Wait::after(timeout), self.decoder())
            .await
            .map_err(RecvFail::into_get_timeout)
    }
}

/// An async [`RemoteJoinableQueue`](crate::RemoteJoinableQueue): gets do
/// not acknowledge, [`task_done`](Self::task_done) does. It dereferences
/// to [`AsyncRemoteQueue`] for puts, gets and the rest. Built by
/// [`RemoteQueueBuilder::build_async_joinable`].
pub struct AsyncRemoteJoinableQueue<T> {
    queue: AsyncRemoteQueue<T>,
}

crate::queue::joinable_wrapper!(AsyncRemoteJoinableQueue, AsyncRemoteQueue);

impl<T> AsyncRemoteJoinableQueue<T> {
    /// The joinable queue named `name` on the server at `url`, with the
    /// default settings.
    ///
    /// # Errors
    ///
    /// As for [`RemoteQueueBuilder::build`].
    pub async fn open(url: &str, name: &str) -> Result<Self, RemoteError> {
        crate::RemoteQueue::builder(url, name)
            .build_async_joinable()
            .await
    }

    /// Marks the oldest item this handle got and has not finished as done:
    /// acknowledges and deletes its message.
    ///
    /// # Errors
    ///
    /// [`TaskDoneError::Unmatched`] when this handle holds no unfinished
    /// item; [`TaskDoneError::Failed`] when the server cannot be reached
    /// (the item stays unfinished).
    pub async fn task_done(&self) -> Result<(), TaskDoneError> {
        let Some((id, _)) = self.queue.outstanding().front().cloned() else {
            return Err(TaskDoneError::Unmatched);
        };
        {
            let mut link = self.queue.link.lock().await;
            self.queue
                .ack(&mut link, &[&id], None)
                .await
                .map_err(TaskDoneError::Failed)?;
        }
        let mut outstanding = self.queue.outstanding();
        if let Some(at) = outstanding.iter().position(|(held, _)| *held == id) {
            outstanding.remove(at);
        }
        Ok(())
    }

    /// Items this handle got and has not called `task_done` for.
    #[must_use]
    pub fn held_tasks(&self) -> usize {
        self.queue.outstanding().len()
    }

    /// Waits at most `timeout` until every task put into the queue is done
    /// (polling `XLEN` with back-off from 1 ms to 50 ms).
    ///
    /// # Errors
    ///
    /// `Timeout` with tasks still unfinished; `Failed` when the server
    /// cannot be asked.
    pub async fn join_timeout(&self, timeout: Duration) -> Result<(), JoinTimeoutError> {
        let deadline = Instant::now().checked_add(timeout);
        let mut pause = FIRST_POLL;
        loop {
            if self.queue.qsize().await? == 0 {
                return Ok(());
            }
            let pause_now = match deadline {
                None => pause,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(JoinTimeoutError::Timeout);
                    }
                    pause.min(left)
                }
            };
            sleep(pause_now).await;
            pause = (pause * 2).min(MAX_POLL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_and_their_futures_are_send() {
        fn check<Q: Send + Sync>() {}
        fn send<F: Send>(_: &F) {}
        check::<AsyncRemoteQueue<Vec<u8>>>();
        check::<AsyncRemoteJoinableQueue<String>>();
        let b = crate::RemoteQueue::builder("redis://127.0.0.1:1/0", "q");
        let f = b.build_async::<u8>();
        send(&f);
        drop(f);
    }

    #[test]
    fn settings_are_checked_before_any_network() {
        let e = smol::block_on(
            crate::RemoteQueue::builder("redis://127.0.0.1:1/0", "a b").build_async::<u8>(),
        )
        .unwrap_err();
        assert!(e.is_invalid_config(), "{e:?}");
    }

    #[test]
    fn an_unreachable_server_is_unavailable_on_both_runtimes() {
        let build = || {
            crate::RemoteQueue::builder("redis://127.0.0.1:1/0", "q")
                .retry_for(Duration::from_millis(50))
                .build_async::<u8>()
        };
        let e = smol::block_on(build()).unwrap_err();
        assert!(e.is_unavailable(), "{e:?}");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let e = rt.block_on(build()).unwrap_err();
        assert!(e.is_unavailable(), "{e:?}");
    }
}
